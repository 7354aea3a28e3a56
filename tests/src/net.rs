//! Where a scenario runs: loopback with the socket backend, or network namespaces joined by
//! a veth pair with relayd on the XDP backend. The same scenario code runs on both.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use relay::client::ClientConfig;
use relay::ids::RoomId;
use relay::io::netns::{NetNs, VethPair};
use relay::io::xdp::{FilterConfig, XdpFilter};

use crate::{free_udp_port, skip_or_fail, Peer, Relayd};

/// Relay side of the veth.
pub const RELAY_IP: &str = "198.18.0.1";
/// Client side of the veth (more client addresses: .3, .4, ...).
pub const CLIENT_IP: &str = "198.18.0.2";

/// A test network.
pub struct Net {
    xdp: Option<XdpNet>,
    v6: bool,
}

struct XdpNet {
    // Field order is drop order: the filter detaches before the namespaces go.
    _client_pass: XdpFilter,
    veth: VethPair,
    client_ns: NetNs,
    relay_ns: NetNs,
}

impl Net {
    /// Loopback, socket backend.
    pub fn loopback() -> Self {
        Self { xdp: None, v6: false }
    }

    /// Two namespaces and a veth pair with `queues` queues; relayd on the XDP backend with one
    /// worker per queue. `None` (skipped) when not root, and a panic under CI.
    pub fn xdp(queues: u32) -> Option<Self> {
        Self::xdp_family(queues, false)
    }

    /// As [`xdp`](Self::xdp), but clients and relay talk IPv6 (the benchmarking prefix
    /// 2001:2::/48 of RFC 5180).
    pub fn xdp_v6() -> Option<Self> {
        Self::xdp_family(1, true)
    }

    fn xdp_family(queues: u32, v6: bool) -> Option<Self> {
        if !relay::io::sys::is_root() {
            skip_or_fail("the XDP backend needs root (network namespaces, BPF, AF_XDP)");
            return None;
        }
        let relay_ns = NetNs::new("rly").expect("create relay namespace");
        let client_ns = NetNs::new("cli").expect("create client namespace");
        let veth = VethPair::with_queues(
            &relay_ns,
            &[&format!("{RELAY_IP}/24"), "2001:2::1/64"],
            &client_ns,
            &[
                &format!("{CLIENT_IP}/24"),
                "198.18.0.3/24",
                "198.18.0.4/24",
                "2001:2::2/64",
                "2001:2::3/64",
                "2001:2::4/64",
            ],
            queues,
        )
        .expect("create veth pair");
        let client_pass = pass_program(&client_ns, &veth.name_b);
        Some(Self { xdp: Some(XdpNet { _client_pass: client_pass, veth, client_ns, relay_ns }), v6 })
    }

    /// `ip -d link show` of the relay's interface (XDP only).
    pub fn relay_link(&self) -> String {
        let x = self.xdp.as_ref().expect("XDP network");
        let out = std::process::Command::new("ip")
            .args(["-n", x.relay_ns.name(), "-d", "link", "show", "dev", &x.veth.name_a])
            .output()
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `ip ARGS` in the relay namespace (XDP only).
    pub fn relay_ip(&self, args: &[&str]) -> std::io::Result<()> {
        self.xdp.as_ref().expect("XDP network").relay_ns.ip(args)
    }

    /// The relay's interface name (XDP only).
    pub fn relay_iface(&self) -> &str {
        &self.xdp.as_ref().expect("XDP network").veth.name_a
    }

    /// An attacker in a namespace of its own, routed to the relay through the client
    /// namespace (198.19.0.2 → 198.19.0.1 → the relay), and sockets for it. XDP only.
    pub fn attacker(&self) -> Attacker {
        let x = self.xdp.as_ref().expect("XDP network");
        let ns = NetNs::new("atk").expect("create attacker namespace");
        let veth = VethPair::new(&x.client_ns, &["198.19.0.1/24"], &ns, &["198.19.0.2/24"]).expect("attacker veth");
        ns.ip(&["route", "add", "default", "via", "198.19.0.1"]).expect("attacker route");
        x.relay_ns.ip(&["route", "add", "198.19.0.0/24", "via", CLIENT_IP]).expect("relay route to the attacker");
        {
            // /proc/sys/net follows the opening thread's network namespace.
            let _g = x.client_ns.enter().expect("enter client namespace");
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable forwarding in the client namespace");
        }
        Attacker { _veth: veth, ns }
    }

    /// Starts recording the wire between clients and relay (tcpdump on the client end of
    /// the veth, which sees exactly the frames the relay's interface does). XDP only.
    pub fn capture(&self) -> Capture {
        let x = self.xdp.as_ref().expect("XDP network");
        Capture::start(x.client_ns.name(), &x.veth.name_b)
    }

    /// Whether this is the XDP network.
    pub fn is_xdp(&self) -> bool {
        self.xdp.is_some()
    }

    /// Starts relayd with `body` (apps and timeouts; no `listen`, `control_socket`, backend).
    /// On XDP the kernel's rate limits are off.
    pub fn relayd(&self, body: &str) -> Relayd {
        self.relayd_with_limits(body, "join_rate_per_sec = 0\npps_rate_per_sec = 0\n")
    }

    /// As [`relayd`](Self::relayd), with `limits` as extra `[xdp]` keys.
    pub fn relayd_with_limits(&self, body: &str, limits: &str) -> Relayd {
        self.relayd_mounting(body, limits, false)
    }

    /// As [`relayd_with_limits`](Self::relayd_with_limits); with `share_mounts` relayd's
    /// BPF pins outlive it ([`Relayd::start_in`]). XDP only.
    pub fn relayd_mounting(&self, body: &str, limits: &str, share_mounts: bool) -> Relayd {
        match &self.xdp {
            None => Relayd::start(body),
            Some(x) => {
                let addr: SocketAddr = if self.v6 {
                    "[2001:2::1]:7000".parse().unwrap()
                } else {
                    format!("{RELAY_IP}:7000").parse().unwrap()
                };
                let body = xdp_relayd_body(body, &x.veth.name_a, x.veth.queues, limits);
                Relayd::start_in(addr, &body, Some(x.relay_ns.name()), share_mounts)
            }
        }
    }

    /// A UDP socket for a client: loopback, or client address `n` (0-based) in the client
    /// namespace.
    pub fn client_socket(&self, n: usize) -> UdpSocket {
        match &self.xdp {
            None => UdpSocket::bind("127.0.0.1:0").unwrap(),
            Some(x) => {
                let _g = x.client_ns.enter().expect("enter client namespace");
                let ip: IpAddr = if self.v6 {
                    format!("2001:2::{}", 2 + n % 3).parse().unwrap()
                } else {
                    format!("198.18.0.{}", 2 + n % 3).parse().unwrap()
                };
                UdpSocket::bind((ip, 0)).unwrap()
            }
        }
    }

    /// As [`client_socket`](Self::client_socket), bound to `port` (XDP only).
    pub fn client_socket_on(&self, n: usize, port: u16) -> UdpSocket {
        let x = self.xdp.as_ref().expect("XDP network");
        let _g = x.client_ns.enter().expect("enter client namespace");
        let ip: IpAddr = if self.v6 {
            format!("2001:2::{}", 2 + n % 3).parse().unwrap()
        } else {
            format!("198.18.0.{}", 2 + n % 3).parse().unwrap()
        };
        UdpSocket::bind((ip, port)).unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"))
    }

    /// A peer as [`Peer::new`], on this network.
    pub fn peer(&self, relayd: &Relayd, app: u32, secret: &str, user: &str, room: RoomId, ssrc: Option<u32>) -> Peer {
        let mut p = Peer::new(relayd, app, secret, user, room, ssrc);
        p.sock = self.client_socket(0);
        p
    }

    /// A peer as [`Peer::with_config`], on this network.
    pub fn peer_with_config(&self, relayd: &Relayd, cfg: ClientConfig) -> Peer {
        Peer::with_socket(self.client_socket(0), relayd.addr, cfg)
    }

    /// A port nobody uses on the client side (loopback only; namespaces are private).
    pub fn free_port(&self) -> u16 {
        free_udp_port()
    }
}

/// A relayd config body for the XDP backend on `iface` (copy mode, one worker per queue,
/// unpinned maps unless `limits` sets `pin_maps`) from `body` (apps and timeouts), with
/// `limits` as extra `[xdp]` keys.
pub fn xdp_relayd_body(body: &str, iface: &str, queues: u32, limits: &str) -> String {
    let unpinned = if limits.contains("pin_maps") { "" } else { "pin_maps = false\n" };
    format!(
        "backend = \"xdp\"\n{}\n[xdp]\niface = \"{iface}\"\nqueues = {queues}\nmode = \"copy\"\n{unpinned}{limits}",
        body.replace("workers = 2\n", ""),
    )
}

/// The edgerelay program with an empty config (it passes everything) on `iface` in `ns`.
/// Frames redirected or sent to a veth are dropped unless its peer runs XDP too, so the far
/// end of every link to an XDP relayd carries this.
pub fn pass_program(ns: &NetNs, iface: &str) -> XdpFilter {
    let _g = ns.enter().expect("enter the namespace");
    let mut f = XdpFilter::load(iface, None, FilterConfig::default()).expect("load pass program");
    f.attach().expect("attach pass program");
    f
}

/// An attacker namespace (see [`Net::attacker`]); torn down on drop.
pub struct Attacker {
    // Drop order: the veth before its namespace.
    _veth: VethPair,
    ns: NetNs,
}

impl Attacker {
    /// `program` run inside the attacker's namespace.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", self.ns.name(), program]);
        c
    }

    /// A UDP socket bound in the attacker's namespace.
    pub fn socket(&self) -> UdpSocket {
        let _g = self.ns.enter().expect("enter attacker namespace");
        UdpSocket::bind("198.19.0.2:0").unwrap()
    }
}

/// A tcpdump recording, killed on drop.
pub struct Capture {
    child: std::process::Child,
    dir: crate::TempDir,
}

impl Capture {
    fn start(ns: &str, iface: &str) -> Self {
        let dir = crate::TempDir::new("capture").expect("temp dir");
        let log = std::fs::File::create(dir.join("tcpdump.log")).unwrap();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", iface, "-U", "-n", "-s", "0", "-w"])
            .arg(dir.join("wire.pcap"))
            .arg("udp")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tcpdump (apt-get install tcpdump)");
        let c = Self { child, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !c.log().contains("listening on") {
            assert!(std::time::Instant::now() < deadline, "tcpdump did not start: {}", c.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tcpdump.log")).unwrap_or_default()
    }

    /// The UDP payloads recorded so far (IPv4 over Ethernet), in order.
    pub fn udp_payloads(&self) -> Vec<Vec<u8>> {
        let pcap = std::fs::read(self.dir.join("wire.pcap")).unwrap_or_default();
        let mut out = Vec::new();
        // pcap: a 24-byte file header, then 16-byte record headers (little-endian here:
        // tcpdump writes the host's order, and the magic says which).
        if pcap.len() < 24 || pcap[..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
            return out;
        }
        let mut at = 24;
        while at + 16 <= pcap.len() {
            let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
            let Some(frame) = pcap.get(at + 16..at + 16 + caplen) else { break };
            at += 16 + caplen;
            // Ethernet II, IPv4, UDP.
            if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
                continue;
            }
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            let udp = 14 + ihl;
            if let Some(p) = frame.get(udp + 8..) {
                out.push(p.to_vec());
            }
        }
        out
    }

    /// Waits until a recorded payload satisfies `pred` (tcpdump writes each packet as it
    /// comes, `-U`), and returns every payload.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let p = self.udp_payloads();
            if p.iter().any(|x| pred(x)) {
                return p;
            }
            assert!(std::time::Instant::now() < deadline, "no {what} in the capture: {}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
