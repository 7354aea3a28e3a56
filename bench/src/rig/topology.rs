//! The rig's namespace topology: relayd's namespace and the clients', joined by a veth pair
//! with addresses from 198.18.0.0/15 (RFC 2544's benchmarking range), and the edgerelay XDP
//! program on the clients' end as the sink.
//!
//! Invariants: the topology is fresh for every run and torn down on drop (the sink detaches
//! before the veth and the namespaces go). Until an AF_XDP socket is registered in the sink,
//! control replies (join-ok) pass to the members' sockets; relayd's media towards the
//! clients' ports (1024–65535) is redirected or counted, never handed to the UDP stack.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use relay::io::netns::{NetNs, VethPair};
use relay::io::xdp::{FilterConfig, Reason, XdpFilter};

/// relayd's address on its end of the veth.
pub(crate) const RELAY_IP: &str = "198.18.0.1";
/// The clients' address on theirs.
pub(crate) const CLIENT_IP: &str = "198.18.0.2";
/// relayd's UDP port.
pub(crate) const PORT: u16 = 7000;

/// relayd's UDP address in the topology.
pub(crate) fn relay_addr() -> SocketAddr {
    SocketAddr::new(RELAY_IP.parse().expect("RELAY_IP is an IPv4 address"), PORT)
}

/// The namespace topology: relayd's namespace and the clients', joined by a veth pair, with
/// the edgerelay XDP program on the clients' end as the sink.
pub(crate) struct Topology {
    // Field order is drop order: the sink detaches before the veth and namespaces go.
    /// The edgerelay XDP program on the clients' end (`veth.name_b`).
    pub(crate) sink: XdpFilter,
    /// relayd's end (`name_a`, in `relay_ns`) and the clients' (`name_b`, in `client_ns`).
    pub(crate) veth: VethPair,
    /// The clients' namespace.
    pub(crate) client_ns: NetNs,
    /// relayd's namespace.
    pub(crate) relay_ns: NetNs,
}

/// [`topology_with_queues`] with one queue per end (one relayd worker).
pub(crate) fn topology() -> Result<Topology> {
    topology_with_queues(1)
}

/// [`topology`] over a veth pair with `queues` queues per end (one relayd worker each).
pub(crate) fn topology_with_queues(queues: u32) -> Result<Topology> {
    let relay_ns = NetNs::new("rly").context("creating the relay namespace (root needed)")?;
    let client_ns = NetNs::new("cli")?;
    let veth = VethPair::with_queues(
        &relay_ns,
        &[&format!("{RELAY_IP}/24")],
        &client_ns,
        &[&format!("{CLIENT_IP}/24")],
        queues,
    )?;
    // The receivers' side runs the edgerelay program as the sink: media towards the clients'
    // ports (1024-65535) is redirected to an AF_XDP socket if its 5-tuple is in the sink's
    // sessions map and a socket is registered, else dropped and counted (`unknown_session`),
    // so no receiver socket work competes with relayd for the two cores; control replies
    // (join-ok) pass to the sockets while no AF_XDP socket is registered. For the XDP backend
    // it is also the XDP program the peer of a veth needs for redirect and TX to work.
    let sink = {
        let _g = client_ns.enter()?;
        let cfg = FilterConfig { port_lo: 1024, port_hi: 65535, ..FilterConfig::default() };
        let mut f = XdpFilter::load(&veth.name_b, None, cfg)?;
        f.attach()?;
        f
    };
    Ok(Topology { relay_ns, client_ns, veth, sink })
}

/// Media packets the sink counted as `unknown_session` (relayd's output to clients whose
/// 5-tuple is not in the sink's sessions map).
pub(crate) fn sunk(topo: &Topology) -> Result<u64> {
    Ok(topo.sink.counters()?.iter().find(|c| c.reason == Reason::UnknownSession).map_or(0, |c| c.packets))
}
