//! The peer set this node's relayd may open cascade legs to and accept them from: the other
//! live nodes of the registry, with their relay endpoint and key. The leg agent
//! ([`super::legs`]) sets it from the registry; the relayd link reads it, pushing
//! `set_peers` in every full sync and whenever it changes. Kept apart from the agent, as
//! [`super::leases`] is, so the link depends on this table and not on the agent.

use std::sync::Mutex;

use relay::mgmt::{PeerSpec, Request};

use crate::api::ClusterNode;

/// The `set_peers` request the link pushes; `None` until the agent first listed the
/// registry (so a link that connects earlier does not push an empty set and close legs).
#[derive(Debug, Default)]
pub struct Peers {
    current: Mutex<Option<(String, Vec<PeerSpec>)>>,
}

impl Peers {
    /// Sets this node's id and its peers; whether that changed anything.
    pub fn set(&self, node: &str, mut peers: Vec<PeerSpec>) -> bool {
        peers.sort_by(|a, b| a.node.cmp(&b.node));
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let next = Some((node.to_owned(), peers));
        if *cur == next {
            return false;
        }
        *cur = next;
        true
    }

    /// The peers' node ids.
    pub fn ids(&self) -> Vec<String> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|(_, p)| p.iter().map(|s| s.node.clone()).collect()).unwrap_or_default()
    }

    /// The peers in the set.
    pub fn current(&self) -> Vec<PeerSpec> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|(_, p)| p.clone()).unwrap_or_default()
    }

    /// The `set_peers` request to push, once the registry was listed.
    pub fn request(&self) -> Option<Request> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|(node, peers)| Request::SetPeers { node: node.clone(), peers: peers.clone() })
    }
}

/// The peers of node `me` among the live `nodes`: every other node with an endpoint that
/// parses (its first), with that endpoint's relay key.
pub fn of_registry(me: &str, nodes: &[ClusterNode]) -> Vec<PeerSpec> {
    nodes
        .iter()
        .filter(|n| n.node_id != me)
        .filter_map(|n| {
            let r = n.relays.iter().find(|r| r.endpoint.parse::<std::net::SocketAddr>().is_ok())?;
            Some(PeerSpec { node: n.node_id.clone(), endpoint: r.endpoint.parse().ok()?, public_key: r.public_key })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NodeLoad, RelayEndpoint};

    fn node(id: &str, endpoint: &str) -> ClusterNode {
        ClusterNode {
            node_id: id.into(),
            region: "eu".into(),
            relays: vec![RelayEndpoint { endpoint: endpoint.into(), public_key: relay::identity::RelayKey([1; 32]) }],
            load: NodeLoad::default(),
            relayd_reachable: true,
            applied: "0-0".into(),
            lag_ms: 0,
            version: "t".into(),
            heartbeat_at_ms: 0,
        }
    }

    #[test]
    fn peers_are_the_other_nodes_with_endpoints_and_changes_are_noticed() {
        let nodes = [node("a", "198.18.0.1:7000"), node("b", "198.18.0.2:7000"), node("c", "not an address")];
        let peers = of_registry("a", &nodes);
        assert_eq!(peers.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["b"]);
        let t = Peers::default();
        assert_eq!(t.request(), None, "nothing is pushed before the registry was listed");
        assert!(t.set("a", peers.clone()));
        assert!(!t.set("a", peers.clone()), "the same set is no change");
        assert_eq!(t.ids(), ["b"]);
        assert!(t.set("a", Vec::new()));
        assert_eq!(t.request(), Some(Request::SetPeers { node: "a".into(), peers: Vec::new() }));
    }
}
