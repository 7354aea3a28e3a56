//! The demo's virtual edge node: network namespaces, relayd on the XDP backend, and
//! relay-control linked to it, plus the signed API client the demo drives it with.
//!
//! ```text
//!  relay ns  198.18.0.1 ── 198.18.0.2  net ns (a router: "the internet")
//!  relayd (XDP), relay-control          198.18.1.1 ── 198.18.1.2  app A's clients ns
//!                                       198.18.2.1 ── 198.18.2.2  app B's clients ns
//!                                       198.19.0.1 ── 198.19.0.2  attacker ns
//! ```
//!
//! Invariants, and why:
//! - Every address is in 198.18.0.0/15 (RFC 2544's benchmarking range), in namespaces the demo
//!   created: nothing touches the host's network.
//! - relayd attaches to the relay end of the first pair. The router's end of that pair runs the
//!   edgerelay XDP program with an empty config (it passes everything), because frames relayd
//!   transmits to a veth are dropped unless the peer runs an XDP program too.
//! - Clients and the attacker reach relayd only through the router, as on a real edge: relayd
//!   sees each source address as it would on the internet, and the autoblock acts per source.
//! - relayd and relay-control run at nice -10: the simulated clients and attacker share the
//!   CPUs with them here, as other machines would not on a real edge.
//! - [`Edge`] owns everything; its fields drop in reverse order of creation (processes, the
//!   pass program, veth pairs, namespaces, the temporary directory), so an error or Ctrl-C at
//!   any point tears down all of it.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::client::{Call, Client, Response};
use relay::io::netns::{NetNs, VethPair};
use relay::io::xdp::{FilterConfig, XdpFilter};
use relay::mgmt;

use crate::control_proc;
use crate::procs::{check_interrupted, Guard};
use relay::tempdir::TempDir;

/// relayd's media and control port.
pub const RELAY_PORT: u16 = 7000;
/// relayd's address, in the relay namespace.
pub const RELAY_IP: &str = "198.18.0.1";
/// The attacker's address.
pub const ATTACKER_IP: &str = "198.19.0.2";
/// Kernel drops per second from one source above which relay-control blocks it.
pub const AUTOBLOCK_PPS: u64 = 2000;

/// The namespaces, links and processes of the demo.
pub struct Edge {
    // Field order is drop order.
    control: Guard,
    relayd: Guard,
    _pass: XdpFilter,
    _links: Vec<VethPair>,
    apps: Vec<NetNs>,
    attacker: NetNs,
    _router: NetNs,
    relay: NetNs,
    dir: TempDir,
    /// relayd's management socket.
    pub relayd_socket: PathBuf,
    /// relayd's UDP address.
    pub relay_addr: SocketAddr,
    /// relayd's static public key (members join v2 to it).
    pub relay_key: relay::identity::RelayKey,
    api: Client,
}

/// The client namespace address of app `i` (0-based).
fn app_ip(i: usize) -> String {
    format!("198.18.{}.2", i + 1)
}

impl Edge {
    /// Builds the namespaces for `apps` client namespaces, starts relayd (XDP backend) and
    /// relay-control, bootstraps an admin key and waits until relay-control reaches relayd.
    pub fn build(relayd_bin: &Path, control_bin: &Path, apps: usize) -> Result<Self> {
        let dir = TempDir::new("demo")?;
        let relay = NetNs::new("rly").context("creating the relay namespace")?;
        let router = NetNs::new("net")?;
        let mut links = Vec::new();
        links.push(VethPair::new(&relay, &[&format!("{RELAY_IP}/24")], &router, &["198.18.0.2/24"])?);
        relay.ip(&["route", "add", "default", "via", "198.18.0.2"])?;
        let mut app_ns = Vec::new();
        for i in 0..apps {
            let ns = NetNs::new("app")?;
            let gw = format!("198.18.{}.1", i + 1);
            links.push(VethPair::new(&router, &[&format!("{gw}/24")], &ns, &[&format!("{}/24", app_ip(i))])?);
            ns.ip(&["route", "add", "default", "via", &gw])?;
            app_ns.push(ns);
        }
        let attacker = NetNs::new("atk")?;
        links.push(VethPair::new(&router, &["198.19.0.1/24"], &attacker, &[&format!("{ATTACKER_IP}/24")])?);
        attacker.ip(&["route", "add", "default", "via", "198.19.0.1"])?;
        let pass = {
            // /proc/sys/net and interface names follow the calling thread's namespace.
            let _g = router.enter()?;
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling forwarding in the router")?;
            let mut f = XdpFilter::load(&links[0].name_b, None, FilterConfig::default())
                .context("loading the pass program on the router's end of relayd's link")?;
            f.attach()?;
            f
        };

        let relayd_socket = dir.join("relayd.sock");
        let relay_addr: SocketAddr = format!("{RELAY_IP}:{RELAY_PORT}").parse()?;
        let (relayd, relay_key) = start_relayd(relayd_bin, &dir, &relay, &links[0].name_a, relay_addr, &relayd_socket)?;
        let (control, api) = start_control(control_bin, &dir, &relay, &relayd_socket)?;
        let edge = Self {
            control,
            relayd,
            _pass: pass,
            _links: links,
            apps: app_ns,
            attacker,
            _router: router,
            relay,
            dir,
            relayd_socket,
            relay_addr,
            relay_key,
            api,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            check_interrupted()?;
            let node = edge.api(&Call::new(control::client::Method::Get, &["v1", "node"]));
            if node.ok().and_then(|r| r.parse::<control::api::Node>().ok()).is_some_and(|n| n.relayd.reachable) {
                return Ok(edge);
            }
            if Instant::now() > deadline {
                bail!("relay-control did not reach relayd within 15 s\n{}", edge.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signed API call to relay-control (which listens on loopback in the relay
    /// namespace; the connection is made from there).
    pub fn api(&self, call: &Call) -> Result<Response> {
        control_proc::send_in(self.relay.name(), &self.api, call)
    }

    /// As [`api`](Self::api), failing unless the answer is 2xx; returns the body as the
    /// [`control::api`] type `T`.
    pub fn api_ok<T: serde::de::DeserializeOwned>(&self, call: &Call) -> Result<T> {
        control_proc::send_in_ok(self.relay.name(), &self.api, call)
    }

    /// A persistent connection to relayd's management socket.
    pub fn mgmt(&self) -> Result<mgmt::Client> {
        mgmt::Client::connect(&self.relayd_socket, Duration::from_secs(5)).context("connecting to relayd's socket")
    }

    /// A UDP socket for a client of app `i`, bound in that app's namespace.
    pub fn app_socket(&self, i: usize) -> Result<UdpSocket> {
        let _g = self.apps[i].enter()?;
        Ok(relay::io::sys::bind_reuseport(format!("{}:0", app_ip(i)).parse()?, 1 << 20)?)
    }

    /// A UDP socket bound in the attacker's namespace.
    pub fn attacker_socket(&self) -> Result<UdpSocket> {
        let _g = self.attacker.enter()?;
        Ok(UdpSocket::bind(format!("{ATTACKER_IP}:0"))?)
    }

    /// Fails if relayd or relay-control has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.relayd.check_alive()?;
        self.control.check_alive()
    }

    /// The last lines of both daemons' logs, for error messages.
    pub fn logs(&self) -> String {
        let tail = |name: &str| crate::procs::log_tail(&self.dir.join(name), 15);
        format!(
            "--- relayd.log (tail) ---\n{}\n--- control.log (tail) ---\n{}",
            tail("relayd.log"),
            tail("control.log")
        )
    }

    /// `bin` in the relay namespace (`ip netns exec`), at nice -10. On a real edge node the
    /// clients and the attacker are other machines; here they share this machine's CPUs with
    /// relayd, and the node's daemons get the priority they would have there (`nice` and
    /// `ip netns exec` both exec, so the pid is the daemon's).
    pub(crate) fn in_relay_ns(relay: &NetNs, bin: &Path) -> Command {
        let mut c = Command::new("nice");
        c.args(["-n", "-10", "ip", "netns", "exec", relay.name()]).arg(bin);
        c
    }
}

/// Is relayd's kernel blocklist holding `cidr`?
pub fn kernel_blocks(mgmt: &mut mgmt::Client, cidr: &str) -> Result<bool> {
    let blocks = mgmt.blocklist()?;
    Ok(blocks.iter().any(|b| format!("{}/{}", b.ip, b.prefix_len) == cidr))
}

/// A random hex secret (the placeholder app's, never used by a client).
fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0; bytes];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Starts relayd on the XDP backend on `iface` in `relay`'s namespace (at nice -10), its
/// config, key and log in `dir`; returns it once its management socket answers, with its key.
pub(crate) fn start_relayd(
    bin: &Path,
    dir: &TempDir,
    relay: &NetNs,
    iface: &str,
    addr: SocketAddr,
    socket: &Path,
) -> Result<(Guard, relay::identity::RelayKey)> {
    // relayd needs one app to start; relay-control's first sync replaces the app set with the
    // apps in its store (none yet), so this placeholder never admits anyone.
    // The kernel's per-source limits are relayd's defaults; the attacker's join flood meets
    // the join bucket, its SRTP the session check.
    let cfg = format!(
        "listen = \"{addr}\"\ncontrol_socket = \"{}\"\nbackend = \"xdp\"\n\
         [timeouts]\nkeepalive_secs = 2\nsession_secs = 10\n\
         [[app]]\nsdkappid = 1399999999\nsecret = \"{}\"\n\
         [xdp]\niface = \"{iface}\"\nmode = \"copy\"\npin_maps = false\n\
         pps_rate_per_sec = 20000\npps_burst = 40000\njoin_rate_per_sec = 20\njoin_burst = 40\n\
         [identity]\nkey_file = \"{}\"\n",
        socket.display(),
        random_hex(16)?,
        dir.join("relay.key").display()
    );
    let path = dir.join("relayd.toml");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join("relayd.log"))?;
    let mut cmd = Edge::in_relay_ns(relay, bin);
    cmd.args(["run", "--config"]).arg(&path).stdout(Stdio::null()).stderr(log);
    let mut guard = Guard::spawn(cmd, "relayd")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(key) = mgmt::Client::connect(socket, Duration::from_secs(2))
            .and_then(|mut c| c.key(None).map_err(|e| std::io::Error::other(e.to_string())))
        {
            return Ok((guard, key.public_key));
        }
        check_interrupted()?;
        if guard.check_alive().is_err() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("relayd.log")).unwrap_or_default();
            bail!("relayd did not start on the XDP backend:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bootstraps an admin key, starts `relay-control serve` in the relay namespace, reads its
/// address and certificate fingerprint, and returns a client pinned to that certificate.
fn start_control(bin: &Path, dir: &TempDir, relay: &NetNs, relayd_socket: &Path) -> Result<(Guard, Client)> {
    // The API is used a few times a second by the dashboard and to mint a dozen UserSigs at
    // start, above the default per-key limit (10/s, burst 20).
    let cfg = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nrelayd_socket = \"{}\"\n\
         [rate_limits]\nper_ip_per_sec = 200\nper_ip_burst = 400\nper_key_per_sec = 100\nper_key_burst = 200\n\
         [autoblock]\npps_threshold = {AUTOBLOCK_PPS}\nttl_secs = 600\n",
        dir.join("control-state").display(),
        relayd_socket.display()
    );
    let config = dir.join("control.toml");
    std::fs::write(&config, cfg)?;
    let admin = control_proc::bootstrap(bin, &config)?;
    control_proc::serve(Edge::in_relay_ns(relay, bin), &config, &dir.join("control.log"), &admin)
}
