//! An edge cluster in network namespaces, for `relay-bench cluster --xdp`: three nodes, each
//! a namespace of its own running relayd on the XDP backend and relay-control in cluster
//! mode; Redis in another namespace; the clients in a third, and an attacker behind them.
//! No bridge: every link is a veth pair with a /24 of its own, all in 198.18.0.0/15
//! (RFC 2544's benchmarking space), so nothing touches the host's network.
//!
//! For node `i` (from 1):
//! - Redis listens on [`REDIS_IP`] (its namespace's loopback). The Redis–node link is
//!   198.18.(10+i).0/24 (.1 Redis, .2 the node); the node routes [`REDIS_IP`] over it.
//! - The node–clients link is 198.18.(20+i).0/24: relayd listens on [`relay_addr`] (.1, XDP
//!   on that interface), the clients are .2. The client end runs the pass program, because a
//!   frame relayd transmits by XDP is dropped unless the veth's peer runs XDP too.
//! - The attacker ([`ATTACKER_IP`]) reaches the nodes through the client namespace, which
//!   forwards; every node routes 198.19.0.0/24 back through its client link, and the other
//!   nodes' relayds (cascade legs) by its default route, the same way.
//!
//! relayd is the demo's ([`edge::start_relayd`]); relay-control is started by
//! [`control_proc`] and listens on 127.0.0.1 inside its node's namespace, so
//! [`EdgeNode::api_ok`] enters that namespace on the calling thread for the call. [`EdgeCluster`]
//! owns everything; its fields drop processes first, then the XDP programs, the links and
//! the namespaces, so an error or Ctrl-C at any point tears all of it down.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::client::{Call, Client, Method};
use relay::identity::RelayKey;
use relay::io::netns::{NetNs, VethPair};
use relay::io::xdp::{FilterConfig, XdpFilter};
use relay::mgmt;
use relay::tempdir::TempDir;

use crate::cluster_proc::{self, Redis};
use crate::control_proc::{self, Admin};
use crate::demo::edge::{self, Edge};
use crate::procs::{check_interrupted, log_tail, Guard};

/// Where Redis listens, inside its namespace.
pub(crate) const REDIS_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The attacker's address.
pub(crate) const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// relayd's UDP port on every node.
const RELAY_PORT: u16 = 7000;

/// Where node `i`'s relayd listens.
pub(crate) fn relay_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, 20 + i as u8, 1], RELAY_PORT))
}

/// The client namespace's address on node `i`'s link.
fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 20 + i as u8, 2)
}

/// One node: relay-control and relayd in the node's namespace.
pub(crate) struct EdgeNode {
    // Field order is drop order: the processes before their directory.
    control: Guard,
    relayd: Guard,
    api: Client,
    /// relayd's management socket.
    pub(crate) relayd_socket: PathBuf,
    /// relayd's static public key.
    pub(crate) relay_key: RelayKey,
    ns: String,
    dir: TempDir,
}

impl EdgeNode {
    /// Sends a signed call to this node's relay-control, from inside the node's namespace;
    /// fails unless the answer is 2xx; the body as `T`.
    pub(crate) fn api_ok<T: serde::de::DeserializeOwned>(&self, call: &Call) -> Result<T> {
        control_proc::send_in_ok(&self.ns, &self.api, call)
    }

    /// A persistent connection to relayd's management socket.
    pub(crate) fn mgmt(&self) -> Result<mgmt::Client> {
        mgmt::Client::connect(&self.relayd_socket, Duration::from_secs(5)).context("connecting to relayd's socket")
    }

    fn check_alive(&mut self) -> Result<()> {
        self.relayd.check_alive()?;
        self.control.check_alive()
    }
}

/// The cluster and its network; torn down on drop.
pub(crate) struct EdgeCluster {
    // Field order is drop order: processes, XDP programs, links, namespaces, files.
    /// The nodes, node 1 first.
    pub(crate) nodes: Vec<EdgeNode>,
    _redis: Redis,
    _client_pass: Vec<XdpFilter>,
    _links: Vec<VethPair>,
    _node_ns: Vec<NetNs>,
    client_ns: NetNs,
    attacker_ns: NetNs,
    _redis_ns: NetNs,
    _dir: TempDir,
}

impl EdgeCluster {
    /// Builds the network and starts `n` nodes (`edge-1` … `edge-n`, 1..=9), with
    /// `sections` (whole tables) added to every relay-control config; returns once every
    /// node is registered with its relayd reachable.
    pub(crate) fn start(relayd_bin: &Path, control_bin: &Path, n: usize, sections: &str) -> Result<Self> {
        if !(1..=9).contains(&n) {
            bail!("a cluster of 1 to 9 nodes, not {n}");
        }
        let dir = TempDir::new("edge-cluster")?;
        let redis_ns = NetNs::new("rds").context("creating the Redis namespace (root needed)")?;
        let client_ns = NetNs::new("cli")?;
        let attacker_ns = NetNs::new("atk")?;
        redis_ns.ip(&["addr", "add", &format!("{REDIS_IP}/32"), "dev", "lo"])?;
        let (mut links, mut client_pass, mut node_ns, mut relay_ifaces) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 1..=n {
            let ns = NetNs::new("nd")?;
            let r = 10 + i;
            links.push(VethPair::new(&redis_ns, &[&format!("198.18.{r}.1/24")], &ns, &[&format!("198.18.{r}.2/24")])?);
            ns.ip(&["route", "add", &format!("{REDIS_IP}/32"), "via", &format!("198.18.{r}.1")])?;
            let to_clients = VethPair::new(
                &ns,
                &[&format!("{}/24", relay_addr(i).ip())],
                &client_ns,
                &[&format!("{}/24", client_ip(i))],
            )?;
            ns.ip(&["route", "add", "198.19.0.0/24", "via", &client_ip(i).to_string()])?;
            // The other nodes' relayds (cascade legs), through the clients' namespace too: a
            // default route, which relayd's XDP transmit path resolves (it reads on-link
            // prefixes and default gateways from the kernel).
            ns.ip(&["route", "add", "default", "via", &client_ip(i).to_string()])?;
            client_pass.push({
                // Interface names follow the calling thread's namespace.
                let _g = client_ns.enter()?;
                let mut f = XdpFilter::load(&to_clients.name_b, None, FilterConfig::default())
                    .context("loading the pass program on the clients' end of a relayd link")?;
                f.attach()?;
                f
            });
            relay_ifaces.push(to_clients.name_a.clone());
            links.push(to_clients);
            node_ns.push(ns);
        }
        links.push(VethPair::new(&client_ns, &["198.19.0.1/24"], &attacker_ns, &[&format!("{ATTACKER_IP}/24")])?);
        attacker_ns.ip(&["route", "add", "default", "via", "198.19.0.1"])?;
        {
            // /proc/sys/net follows the opening thread's network namespace.
            let _g = client_ns.enter()?;
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("forwarding in the client namespace")?;
        }

        let redis = Redis::start_at(dir.path(), SocketAddr::from((REDIS_IP, 6379)), Some(&redis_ns))?;
        let key = cluster_proc::cluster_key(control_bin, dir.path())?;
        let mut nodes: Vec<EdgeNode> = Vec::new();
        let mut admin: Option<Admin> = None;
        for (i, (ns, iface)) in node_ns.iter().zip(&relay_ifaces).enumerate().map(|(i, x)| (i + 1, x)) {
            check_interrupted()?;
            let name = format!("edge-{i}");
            let node_dir = TempDir::new("edge-node")?;
            let relayd_socket = node_dir.join("relayd.sock");
            let (relayd, relay_key) =
                edge::start_relayd(relayd_bin, &node_dir, ns, iface, relay_addr(i), &relayd_socket)?;
            let top = format!("relayd_socket = \"{}\"\n", relayd_socket.display());
            let config =
                cluster_proc::node_config(node_dir.path(), &name, Some((&redis, &key)), relay_addr(i), &top, sections)?;
            let admin = match &admin {
                Some(a) => a.clone(),
                None => {
                    // Bootstrapping writes the admin key to the cluster: from the node's namespace.
                    let _g = ns.enter()?;
                    admin.insert(control_proc::bootstrap(control_bin, &config)?).clone()
                }
            };
            let log = node_dir.join("control.log");
            let (control, api) = control_proc::serve(Edge::in_relay_ns(ns, control_bin), &config, &log, &admin)?;
            nodes.push(EdgeNode {
                control,
                relayd,
                api,
                relayd_socket,
                relay_key,
                ns: ns.name().to_owned(),
                dir: node_dir,
            });
        }
        let mut cluster = EdgeCluster {
            nodes,
            _redis: redis,
            _client_pass: client_pass,
            _links: links,
            _node_ns: node_ns,
            client_ns,
            attacker_ns,
            _redis_ns: redis_ns,
            _dir: dir,
        };
        cluster.wait_registered(n)?;
        Ok(cluster)
    }

    /// Waits until node 1 lists `n` nodes, each with its relayd reachable: the push links
    /// are up.
    fn wait_registered(&mut self, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            check_interrupted()?;
            let dead = self.nodes.iter_mut().enumerate().find_map(|(i, n)| n.check_alive().err().map(|e| (i, e)));
            if let Some((i, e)) = dead {
                bail!("edge-{}: {e}{}", i + 1, self.logs());
            }
            let status =
                self.nodes[0].api_ok::<control::api::ClusterStatus>(&Call::new(Method::Get, &["v1", "cluster"]));
            if status.is_ok_and(|s| s.nodes.len() == n && s.nodes.iter().all(|x| x.relayd_reachable)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{n} nodes did not register with relayd reachable within 20 s{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `i` (from 1).
    pub(crate) fn node(&self, i: usize) -> &EdgeNode {
        &self.nodes[i - 1]
    }

    /// A UDP socket in the client namespace, on node `i`'s link.
    pub(crate) fn client_socket(&self, i: usize) -> Result<UdpSocket> {
        let _g = self.client_ns.enter()?;
        Ok(UdpSocket::bind((client_ip(i), 0))?)
    }

    /// A UDP socket of the attacker.
    pub(crate) fn attacker_socket(&self) -> Result<UdpSocket> {
        let _g = self.attacker_ns.enter()?;
        Ok(UdpSocket::bind((ATTACKER_IP, 0))?)
    }

    /// The last lines of every node's relay-control and relayd logs, for an error message.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            out.push_str(&format!(
                "\n--- edge-{} relay-control ---\n{}\n--- edge-{} relayd ---\n{}",
                i + 1,
                log_tail(&n.dir.join("control.log"), 30),
                i + 1,
                log_tail(&n.dir.join("relayd.log"), 15)
            ));
        }
        out
    }
}
