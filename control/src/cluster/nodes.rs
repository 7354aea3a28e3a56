//! The node registry and node selection.
//!
//! Each node writes its record ([`ClusterNode`], sealed) under `node:<id>` with a TTL of
//! `node_ttl_ms`, every `heartbeat_ms`, and keeps its id in the `nodes` set. A node whose
//! heartbeats stop is gone from every listing as soon as its key expires (at most
//! `node_ttl_ms`, 2 s by default), whatever state its id's set entry is in; listings drop
//! such ids from the set. The rooms a node hosts are a set under `node-rooms:<id>` with the
//! same TTL, rewritten when they change.
//!
//! Selection ([`select`]) orders live nodes: first those already hosting the room (so a room
//! stays on as few nodes as possible), then those in the client's region, then by load
//! (sessions, then CPU); ties by node id, so every node answers the same.

use super::{Cluster, ClusterError};
use crate::api::{ClusterNode, NodeSelection};

/// The key a room has in `node-rooms` sets: the app, and the room as relayd's `rooms`
/// answer writes it.
pub fn room_key(sdkappid: u64, room: &str) -> String {
    format!("{sdkappid}/{room}")
}

/// The form relayd's `rooms` answer gives a string room (see `relay::mgmt::RoomInfo`).
pub fn str_room(name: &str) -> String {
    if name.parse::<u64>().is_ok() || name.starts_with("s:") {
        format!("s:{name}")
    } else {
        name.to_owned()
    }
}

impl Cluster {
    fn node_slot(&self, id: &str) -> Vec<u8> {
        format!("{}|node|{id}", self.cfg.key_prefix).into_bytes()
    }

    /// Publishes this node's record, and its hosted rooms when `rooms` is given.
    pub fn beat(&self, node: &ClusterNode, rooms: Option<&[String]>) -> Result<(), ClusterError> {
        let id = &self.cfg.node_id;
        let sealed =
            self.seal(&self.node_slot(id), &serde_json::to_vec(node).map_err(crate::store::StoreError::from)?)?;
        let ttl = self.cfg.node_ttl_ms;
        let result = self.with_conn(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("SET").arg(self.keys.node(id)).arg(&sealed).arg("PX").arg(ttl).ignore();
            pipe.sadd(self.keys.nodes(), id).ignore();
            let rooms_key = self.keys.node_rooms(id);
            if let Some(rooms) = rooms {
                pipe.del(&rooms_key).ignore();
                if !rooms.is_empty() {
                    pipe.sadd(&rooms_key, rooms).ignore();
                }
            }
            pipe.cmd("PEXPIRE").arg(&rooms_key).arg(ttl).ignore();
            pipe.query::<()>(c)
        });
        if result.is_err() {
            self.health.heartbeat_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// Removes this node from the registry at once (a clean shutdown).
    pub fn leave(&self) -> Result<(), ClusterError> {
        let id = &self.cfg.node_id;
        self.with_conn(|c| {
            redis::pipe()
                .atomic()
                .del(self.keys.node(id))
                .del(self.keys.node_rooms(id))
                .srem(self.keys.nodes(), id)
                .query::<()>(c)
        })
    }

    /// The live nodes, by id. Ids whose record expired are removed from the set.
    pub fn nodes(&self) -> Result<Vec<ClusterNode>, ClusterError> {
        let ids: Vec<String> = self.with_conn(|c| redis::cmd("SMEMBERS").arg(self.keys.nodes()).query(c))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| self.keys.node(i)).collect();
        let values: Vec<Option<Vec<u8>>> = self.with_conn(|c| redis::cmd("MGET").arg(&keys).query(c))?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, v) in ids.into_iter().zip(values) {
            let node = v
                .and_then(|s| self.open(&self.node_slot(&id), &s))
                .and_then(|p| serde_json::from_slice::<ClusterNode>(&p).ok())
                .filter(|n| n.node_id == id);
            match node {
                Some(n) => out.push(n),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Harmless if a node came back meanwhile: its next heartbeat adds it again.
            let _ = self.with_conn(|c| redis::cmd("SREM").arg(self.keys.nodes()).arg(&gone).query::<()>(c));
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        self.health.nodes_seen.store(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Which live nodes host `room` (a [`room_key`]).
    fn hosting(&self, nodes: &[ClusterNode], room: &str) -> Result<Vec<bool>, ClusterError> {
        self.with_conn(|c| {
            let mut pipe = redis::pipe();
            for n in nodes {
                pipe.sismember(self.keys.node_rooms(&n.node_id), room);
            }
            pipe.query(c)
        })
    }

    /// Node selection for a client of `room` (a [`room_key`], if known) in `region` (if
    /// known). Nodes without a usable endpoint are left out.
    pub fn select(&self, room: Option<&str>, region: Option<&str>) -> Result<NodeSelection, ClusterError> {
        let nodes: Vec<ClusterNode> = self.nodes()?.into_iter().filter(|n| !n.relays.is_empty()).collect();
        let hosting = match room {
            Some(r) if !nodes.is_empty() => self.hosting(&nodes, r)?,
            _ => vec![false; nodes.len()],
        };
        Ok(order(nodes, &hosting, region))
    }
}

/// Orders `nodes` for selection (see the module comment); `hosting[i]` says whether node `i`
/// hosts the room.
pub fn order(nodes: Vec<ClusterNode>, hosting: &[bool], region: Option<&str>) -> NodeSelection {
    let mut ranked: Vec<(bool, bool, u64, u64, ClusterNode)> = nodes
        .into_iter()
        .zip(hosting.iter().copied().chain(std::iter::repeat(false)))
        .map(|(n, host)| {
            let near = region.is_some_and(|r| r == n.region);
            (!host, !near, n.load.sessions, (n.load.cpu_percent * 100.0) as u64, n)
        })
        .collect();
    ranked.sort_by(|a, b| (a.0, a.1, a.2, a.3, &a.4.node_id).cmp(&(b.0, b.1, b.2, b.3, &b.4.node_id)));
    let mut sel = NodeSelection { nodes: Vec::new(), relays: Vec::new() };
    for (.., n) in ranked {
        sel.nodes.push(n.node_id);
        sel.relays.extend(n.relays);
    }
    sel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NodeLoad, RelayEndpoint};

    fn node(id: &str, region: &str, sessions: u64) -> ClusterNode {
        ClusterNode {
            node_id: id.into(),
            region: region.into(),
            relays: vec![RelayEndpoint {
                endpoint: format!("198.18.1.{}:7000", id.len()),
                public_key: relay::identity::RelayKey([id.len() as u8; 32]),
            }],
            load: NodeLoad { sessions, rooms: 0, pps: 0, cpu_percent: 1.0 },
            relayd_reachable: true,
            applied: "0-0".into(),
            lag_ms: 0,
            version: "t".into(),
            heartbeat_at_ms: 0,
        }
    }

    #[test]
    fn hosting_beats_region_beats_load() {
        let nodes = vec![node("a", "eu", 5), node("b", "us", 1), node("c", "eu", 9), node("d", "ap", 0)];
        // c hosts the room; the client is in eu.
        let sel = order(nodes.clone(), &[false, false, true, false], Some("eu"));
        assert_eq!(sel.nodes, ["c", "a", "d", "b"]);
        assert_eq!(sel.relays.len(), 4);
        // No room, no region: least loaded first.
        let sel = order(nodes, &[], None);
        assert_eq!(sel.nodes, ["d", "b", "a", "c"]);
    }

    #[test]
    fn string_rooms_are_keyed_as_relayd_writes_them() {
        assert_eq!(room_key(1400000001, "42"), "1400000001/42");
        assert_eq!(room_key(1, &str_room("lobby")), "1/lobby");
        assert_eq!(room_key(1, &str_room("42")), "1/s:42");
        assert_eq!(room_key(1, &str_room("s:x")), "1/s:s:x");
    }
}
