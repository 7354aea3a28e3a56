//! relayd's XDP lifecycle: attach, drop privileges, detach on shutdown, and recovery after a
//! crash.

use std::time::Duration;

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::ids::RoomId;

fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("relayd status");
    s.lines().find_map(|l| l.strip_prefix(field)).map(|v| v.trim().to_owned()).unwrap_or_default()
}

#[test]
fn xdp_attach_drop_privileges_detach_and_survive_a_crash() {
    let Some(net) = Net::xdp(1) else { return };
    let body = format!("user = \"nobody\"\n{}", two_app_config(30, ""));
    let relayd = net.relayd(&body);
    assert!(net.relay_link().contains("prog/xdp"), "program attached: {}", net.relay_link());
    // After setup relayd runs as nobody with no capabilities.
    let uid = status_field(relayd.pid(), "Uid:");
    assert!(!uid.starts_with("0\t") && !uid.is_empty(), "relayd still root: Uid {uid}");
    assert_eq!(status_field(relayd.pid(), "CapEff:"), "0000000000000000");
    // And still relays (maps, AF_XDP socket and link were opened before the drop).
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(1), Some(1));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "b", RoomId::Num(1), None);
    a.join().unwrap();
    b.join().unwrap();
    a.send_rtp(1, b"as nobody");
    assert_eq!(b.drain(Duration::from_millis(300)).len(), 1);
    // `relayd stats` shows the kernel's verdicts.
    let table = relayd.stats_table();
    assert!(table.contains("XDP verdicts") && table.contains("redirect_media"), "{table}");

    // A crash (SIGKILL) leaves no program behind: the BPF link dies with the process.
    relayd.crash();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!net.relay_link().contains("prog/xdp"), "stale program after a crash: {}", net.relay_link());

    // A program attached the legacy way (as an older or foreign tool would) is replaced.
    let obj = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../xdp-prog/bpf/edgerelay.bpf.o");
    net.relay_ip(&["link", "set", "dev", net.relay_iface(), "xdpgeneric", "obj", obj.to_str().unwrap(), "sec", "xdp"])
        .expect("attach a legacy program");
    assert!(net.relay_link().contains("xdpgeneric"));
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(1), Some(2));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "b", RoomId::Num(1), None);
    a.join().unwrap();
    b.join().unwrap();
    a.send_rtp(2, b"after the crash");
    assert_eq!(b.drain(Duration::from_millis(300)).len(), 1);

    // SIGTERM: a clean exit, and the interface is left without a program.
    assert!(relayd.terminate(), "relayd exits 0 on SIGTERM");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!net.relay_link().contains("prog/xdp"), "program left attached: {}", net.relay_link());
}

/// The kernel's `sessions` map takes the configured size (`xdp.max_sessions`, default
/// 262,144), so the XDP backend admits more than the 65,536 concurrent sessions the object
/// declares: 100k sessions (issue 5's scale scenario) fit, and the map refuses only past
/// its size.
#[test]
fn the_sessions_map_takes_its_configured_size() {
    use relay::config::DEFAULT_XDP_MAX_SESSIONS as DEFAULT_MAX_SESSIONS;
    use relay::io::xdp::{FilterConfig, XdpFilter};
    if !relay::io::sys::is_root() && skip_or_fail("loading the XDP program needs root") {
        return;
    }
    let f = XdpFilter::load("lo", None, FilterConfig::default()).expect("load the XDP program");
    assert_eq!(f.sessions_capacity(), DEFAULT_MAX_SESSIONS);
    drop(f);

    let size = 100_500;
    let mut f = XdpFilter::load_sized("lo", None, FilterConfig::default(), size).expect("load the XDP program");
    assert_eq!(f.sessions_capacity(), size);
    let relay_addr: std::net::SocketAddr = "198.18.0.1:7000".parse().unwrap();
    let src = |i: u32| std::net::SocketAddr::from(([198, 18, 128 + (i >> 16) as u8, (i >> 8) as u8], i as u16));
    for i in 0..size {
        f.add_session(src(i), relay_addr, u64::from(i)).unwrap_or_else(|e| panic!("session {i}: {e}"));
    }
    assert!(f.add_session(src(size), relay_addr, 0).is_err(), "a full sessions map must refuse");
}
