//! Shared setup of the AF_XDP tests: root check, the test XDP object compiled with clang,
//! and a two-namespace veth topology with the programs attached.
//!
//! Everything is torn down by `Drop` in reverse order of creation (programs detach with
//! the `Ebpf` object, the veth pair is deleted, then the namespaces), failure included.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use relay::io::netlink::RouteSocket;
use relay::io::netns::{ifindex, NetNs, VethPair};
use relay::wire::EthernetAddress;

/// The UDP port the test program redirects into the AF_XDP socket.
pub const RELAY_PORT: u16 = 40000;
/// The UDP port the peer's program counts and drops.
pub const SINK_PORT: u16 = 40001;
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether a root-only test can run. Skips with a one-line reason on a developer machine;
/// panics under `CI=true`, where a skip would hide a missing prerequisite.
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = if !root {
        Some("needs root (network namespaces, XDP, AF_XDP)".to_owned())
    } else if clang().is_none() {
        Some("needs clang (apt-get install clang-19 libbpf-dev) to build the test XDP program".to_owned())
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if ci() => panic!("{test}: {why}, and CI=true forbids skipping"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn clang() -> Option<String> {
    let candidates = std::env::var("CLANG").into_iter().chain(["clang".into(), "clang-19".into()]);
    candidates.into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Compiles `tests/bpf/xsk_test.c` into a temporary directory and returns the object.
pub fn compile_bpf() -> Vec<u8> {
    let clang = clang().expect("can_run checked for clang");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/xsk_test.c");
    let dir = std::env::temp_dir().join(format!(
        "edgerelay-bpf-{}-{}",
        std::process::id(),
        relay::io::netns::unique_name("b")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("xsk_test.o");
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let o = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-I", &arch_include])
        .arg(format!("-DRELAY_PORT={RELAY_PORT}"))
        .arg(format!("-DSINK_PORT={SINK_PORT}"))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run clang");
    assert!(o.status.success(), "clang failed: {}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// Two namespaces joined by a veth pair: relay 198.18.1.1/24, peer 198.18.1.2/24.
/// `redirect_udp` is attached to the relay end, `sink` to the peer end.
pub struct Topology {
    /// Dropped first: detaches the programs.
    pub bpf: Ebpf,
    pub veth: VethPair,
    pub relay_if: u32,
    pub peer_if: u32,
    pub relay_mac: EthernetAddress,
    pub peer_mac: EthernetAddress,
    pub peer_ns: NetNs,
    pub relay_ns: NetNs,
}

impl Topology {
    pub fn new() -> Self {
        let relay_ns = NetNs::new("er").expect("create the relay namespace");
        let peer_ns = NetNs::new("ep").expect("create the peer namespace");
        let veth = VethPair::new(&relay_ns, &["198.18.1.1/24"], &peer_ns, &["198.18.1.2/24"]).expect("create veth");
        let mut bpf = Ebpf::load(&compile_bpf()).expect("load the test XDP object");
        let (relay_if, relay_mac) = {
            let _g = relay_ns.enter().unwrap();
            let i = ifindex(&veth.name_a).unwrap();
            let p: &mut Xdp = bpf.program_mut("redirect_udp").unwrap().try_into().unwrap();
            p.load().expect("load redirect_udp");
            p.attach_to_if_index(i, XdpMode::Driver).expect("attach redirect_udp (native) to the relay veth");
            (i, RouteSocket::open().unwrap().link_mac(i).unwrap().expect("relay veth has a MAC"))
        };
        let (peer_if, peer_mac) = {
            let _g = peer_ns.enter().unwrap();
            let i = ifindex(&veth.name_b).unwrap();
            let p: &mut Xdp = bpf.program_mut("sink").unwrap().try_into().unwrap();
            p.load().expect("load sink");
            p.attach_to_if_index(i, XdpMode::Driver).expect("attach sink (native) to the peer veth");
            (i, RouteSocket::open().unwrap().link_mac(i).unwrap().expect("peer veth has a MAC"))
        };
        Self { bpf, veth, relay_if, peer_if, relay_mac, peer_mac, peer_ns, relay_ns }
    }

    /// Puts the socket `fd` into `xsks[queue]`.
    pub fn insert_xsk(&mut self, queue: u32, fd: i32) {
        let mut m: aya::maps::XskMap<_> = self.bpf.map_mut("xsks").unwrap().try_into().unwrap();
        m.set(queue, fd, 0).expect("insert into xsks");
    }

    /// Frames the peer's `sink` program counted and dropped.
    pub fn sunk(&self) -> u64 {
        let m: aya::maps::Array<_, u64> = self.bpf.map("sunk").unwrap().try_into().unwrap();
        m.get(&0, 0).unwrap()
    }
}

pub fn peer_ip() -> IpAddr {
    IpAddr::V4(PEER_IP)
}

/// `Udp: InCsumErrors` of the calling thread's namespace (/proc/net/snmp).
pub fn udp_in_csum_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let i = names.split_whitespace().position(|n| n == "InCsumErrors").unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}
