//! An edge cluster in network namespaces: N nodes, each a namespace of its own running relayd
//! on the XDP backend and relay-control in cluster mode; Redis in another namespace; the
//! clients in a third, and an attacker behind them. No bridge: every link is a veth pair with
//! a /24 of its own, all in 198.18.0.0/15 (RFC 2544's benchmarking space).
//!
//! For node `i` (from 1):
//! - Redis listens on [`REDIS_IP`] (its namespace's loopback). The Redis–node link is
//!   198.18.(10+i).0/24 (.1 Redis, .2 the node); the node routes [`REDIS_IP`] over it.
//! - The node–clients link is 198.18.(20+i).0/24: relayd listens on [`relay_addr`] (.1, XDP
//!   on that interface), the clients are .2. The client end runs the pass program, because a
//!   frame relayd transmits by XDP is dropped unless the veth's peer runs XDP too.
//! - The attacker ([`ATTACKER_IP`]) reaches the nodes through the client namespace, which
//!   forwards; every node routes 198.19.0.0/24 back through its client link.
//!
//! relay-control listens on 127.0.0.1 inside its node's namespace, so [`EdgeNode::api`]
//! enters that namespace on the calling thread for the TCP connect. Everything is killed and
//! removed on `Drop`: the processes first, then the XDP programs, the links, the namespaces.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use relay::io::netns::{NetNs, NetNsGuard, VethPair};
use relay::io::xdp::XdpFilter;
use relay::mgmt::Request;

use crate::cluster::{cluster_key, cluster_toml, Redis};
use crate::control::{ApiClient, ControlDaemon};
use crate::net::{pass_program, xdp_relayd_body};
use crate::{skip_or_fail, two_app_config, Relayd, TempDir};

/// Where Redis listens, inside its namespace.
pub const REDIS_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The attacker's address.
pub const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// relayd's UDP port on every node.
pub const RELAY_PORT: u16 = 7000;

/// Where node `i`'s relayd listens.
pub fn relay_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, link(20, i), 1], RELAY_PORT))
}

/// The client namespace's address on node `i`'s link.
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, link(20, i), 2)
}

fn link(base: u8, i: usize) -> u8 {
    assert!((1..=9).contains(&i), "nodes are numbered 1..=9");
    base + i as u8
}

/// One node: relay-control and relayd in the node's namespace.
pub struct EdgeNode {
    /// relay-control (its HTTPS API on 127.0.0.1 inside the namespace).
    pub control: ControlDaemon,
    /// relayd on the XDP backend.
    pub relayd: Relayd,
    ns: String,
}

impl EdgeNode {
    /// Moves the calling thread into this node's namespace until the guard drops.
    pub fn enter(&self) -> NetNsGuard {
        NetNsGuard::enter(&format!("/run/netns/{}", self.ns)).expect("enter the node's namespace")
    }

    /// Runs `f` with an admin client of this node, the thread inside the node's namespace.
    pub fn api<R>(&self, f: impl FnOnce(&ApiClient) -> R) -> R {
        let _g = self.enter();
        f(&self.control.admin_client())
    }

    /// The kernel blocklist as relayd reports it, `ip/len` each.
    pub fn kernel_blocks(&self) -> Vec<String> {
        let answer = self.relayd.mgmt(&Request::Blocklist {});
        let blocks = answer.blocks().expect("relayd answers a blocklist");
        blocks.iter().map(|b| format!("{}/{}", b.ip, b.prefix_len)).collect()
    }

    /// An XDP verdict counter of relayd.
    pub fn xdp(&self, verdict: &str) -> u64 {
        self.relayd.stats().xdp.get(verdict).copied().unwrap_or(0)
    }
}

/// The cluster and its network; torn down on drop.
pub struct EdgeCluster {
    // Field order is drop order: processes, XDP programs, links, namespaces.
    /// The nodes, node 1 first.
    pub nodes: Vec<EdgeNode>,
    /// The shared Redis.
    pub redis: Redis,
    _client_pass: Vec<XdpFilter>,
    _links: Vec<VethPair>,
    node_ns: Vec<NetNs>,
    client_ns: NetNs,
    attacker_ns: NetNs,
    _redis_ns: NetNs,
    _dir: Arc<TempDir>,
}

impl EdgeCluster {
    /// Builds the network and starts `n` nodes (`edge-1` … `edge-n`). `control_extra` is
    /// added to every relay-control config after `[cluster]` (whole sections). `None`
    /// (skipped) when not root or without redis-server; a panic under `CI=true`.
    pub fn start(n: usize, control_extra: &str) -> Option<Self> {
        if !relay::io::sys::is_root() {
            skip_or_fail("the cluster XDP test needs root (network namespaces, BPF, AF_XDP)");
            return None;
        }
        if !Redis::available() {
            return None;
        }
        let redis_ns = NetNs::new("rds").expect("create the Redis namespace");
        let client_ns = NetNs::new("cli").expect("create the client namespace");
        let attacker_ns = NetNs::new("atk").expect("create the attacker namespace");
        redis_ns.ip(&["addr", "add", &format!("{REDIS_IP}/32"), "dev", "lo"]).expect("Redis address");
        let mut links = Vec::new();
        let mut client_pass = Vec::new();
        let mut node_ns = Vec::new();
        let mut relay_ifaces = Vec::new();
        for i in 1..=n {
            let ns = NetNs::new("nd").expect("create a node namespace");
            let r = link(10, i);
            let to_redis =
                VethPair::new(&redis_ns, &[&format!("198.18.{r}.1/24")], &ns, &[&format!("198.18.{r}.2/24")])
                    .expect("Redis link");
            ns.ip(&["route", "add", &format!("{REDIS_IP}/32"), "via", &format!("198.18.{r}.1")])
                .expect("route to Redis");
            let to_clients = VethPair::new(
                &ns,
                &[&format!("{}/24", relay_addr(i).ip())],
                &client_ns,
                &[&format!("{}/24", client_ip(i))],
            )
            .expect("client link");
            ns.ip(&["route", "add", "198.19.0.0/24", "via", &client_ip(i).to_string()]).expect("route to the attacker");
            client_pass.push(pass_program(&client_ns, &to_clients.name_b));
            relay_ifaces.push(to_clients.name_a.clone());
            links.extend([to_redis, to_clients]);
            node_ns.push(ns);
        }
        let attacker_link =
            VethPair::new(&client_ns, &["198.19.0.1/24"], &attacker_ns, &[&format!("{ATTACKER_IP}/24")])
                .expect("attacker link");
        links.push(attacker_link);
        attacker_ns.ip(&["route", "add", "default", "via", "198.19.0.1"]).expect("attacker route");
        {
            // /proc/sys/net follows the opening thread's network namespace.
            let _g = client_ns.enter().expect("enter the client namespace");
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding in the client namespace");
        }

        let redis = Redis::start(SocketAddr::from((REDIS_IP, 6379)), Some(redis_ns.name()));
        let dir = Arc::new(TempDir::new("edge-cluster").expect("temp dir"));
        let key = cluster_key(&dir);
        let mut nodes: Vec<EdgeNode> = Vec::new();
        for (i, (ns, iface)) in node_ns.iter().zip(&relay_ifaces).enumerate().map(|(i, x)| (i + 1, x)) {
            let body =
                xdp_relayd_body(&two_app_config(30, ""), iface, 1, "join_rate_per_sec = 0\npps_rate_per_sec = 0\n");
            let relayd = Relayd::start_with(relay_addr(i), &body, Some(ns.name()));
            let cfg = format!(
                "relayd_socket = \"{}\"\n{}\n{control_extra}",
                relayd.stats_socket.display(),
                cluster_toml(&redis, &key, &format!("edge-{i}"), "eu-west", relay_addr(i))
            );
            let control = {
                // relay-control inherits the spawning thread's namespace.
                let _g = ns.enter().expect("enter the node's namespace");
                match nodes.first() {
                    None => ControlDaemon::start(&cfg),
                    Some(first) => ControlDaemon::start_joining(&cfg, first.control.admin.clone()),
                }
            };
            nodes.push(EdgeNode { control, relayd, ns: ns.name().to_owned() });
        }
        Some(EdgeCluster {
            nodes,
            redis,
            _client_pass: client_pass,
            _links: links,
            node_ns,
            client_ns,
            attacker_ns,
            _redis_ns: redis_ns,
            _dir: dir,
        })
    }

    /// Node `i` (from 1).
    pub fn node(&self, i: usize) -> &EdgeNode {
        &self.nodes[i - 1]
    }

    /// The namespace of node `i` (from 1).
    pub fn node_ns(&self, i: usize) -> &NetNs {
        &self.node_ns[i - 1]
    }

    /// A UDP socket in the client namespace, on node `i`'s link.
    pub fn client_socket(&self, i: usize) -> UdpSocket {
        let _g = self.client_ns.enter().expect("enter the client namespace");
        UdpSocket::bind((client_ip(i), 0)).expect("bind a client socket")
    }

    /// A UDP socket of the attacker.
    pub fn attacker_socket(&self) -> UdpSocket {
        let _g = self.attacker_ns.enter().expect("enter the attacker namespace");
        UdpSocket::bind((ATTACKER_IP, 0)).expect("bind an attacker socket")
    }

    /// Every node's relay-control and relayd logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            out.push_str(&format!(
                "\n--- edge-{} relay-control ---\n{}\n--- edge-{} relayd ---\n{}",
                i + 1,
                tail(&n.control.log(), 40),
                i + 1,
                tail(&n.relayd.log(), 20)
            ));
        }
        out
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
