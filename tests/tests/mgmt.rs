//! The management socket against a real `relayd`: room listings, the XDP blocklist, limits
//! and offenders changed and read at run time, persistent connections, access control and
//! worker liveness. Scenarios that make sense on both backends run on both (`xdp_*` need
//! root: skipped on a laptop, required under CI).

use std::time::{Duration, Instant};

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::client::ClientConfig;
use relay::ids::RoomId;
use relay::mgmt::{Client, Limits, MemberInfo, Request, Response};
use relay::srtp::Profile;
use relay::usersig::{self, PrivilegeMap, RoomRef};

const QUIET: Duration = Duration::from_millis(300);

fn member(p: &Peer, user: &str, send: bool, recv: bool) -> MemberInfo {
    MemberInfo { user: user.into(), addr: p.sock.local_addr().unwrap().to_string(), send, recv }
}

fn rooms_list_members_of_two_apps(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(1), Some(11));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "bob", RoomId::Num(1), None);
    let mut c = net.peer(&relayd, APP_A, SECRET_A, "carol", RoomId::Str("lobby".into()), None);
    // Same room number in app B: a different room.
    let mut x = net.peer(&relayd, APP_B, SECRET_B, "xavier", RoomId::Num(1), Some(21));
    for p in [&mut a, &mut b, &mut c, &mut x] {
        p.join().unwrap();
    }
    // A receive-only member (PrivateMapKey without send bits).
    let recv_only = PrivilegeMap(PrivilegeMap::ENTER.0 | PrivilegeMap::RECV_AUDIO.0 | PrivilegeMap::RECV_VIDEO.0);
    let pmk = usersig::mint_private_map_key(
        SECRET_A.as_bytes(),
        APP_A,
        "viewer",
        86400,
        unix_now(),
        RoomRef::Num(1),
        recv_only,
    );
    let cfg = ClientConfig {
        sdkappid: APP_A,
        room: RoomId::Num(1),
        usersig: usersig(SECRET_A, APP_A, "viewer"),
        private_map_key: Some(pmk),
        profile: Profile::AesCm128HmacSha1_80,
        ssrcs: vec![],
        nodes: vec![relay::client::Node::new(relayd.addr, Some(relayd.key))],
        failover_after_ms: None,
    };
    let mut v = net.peer_with_config(&relayd, cfg);
    v.join().unwrap();

    let r = relayd.mgmt(&Request::Rooms { sdkappid: None, limit: None });
    assert!(r.is_ok(), "{r:?}");
    let rooms = r.rooms().unwrap().to_vec();
    let listed: Vec<(u64, &str, &[MemberInfo])> =
        rooms.iter().map(|r| (r.sdkappid, r.room.as_str(), r.members.as_slice())).collect();
    assert_eq!(
        listed,
        vec![
            (
                u64::from(APP_A),
                "1",
                &[member(&a, "alice", true, true), member(&b, "bob", true, true), member(&v, "viewer", false, true)][..]
            ),
            (u64::from(APP_A), "lobby", &[member(&c, "carol", true, true)][..]),
            (u64::from(APP_B), "1", &[member(&x, "xavier", true, true)][..]),
        ]
    );
    // Filtered by app, and limited.
    let only_b = relayd.mgmt(&Request::Rooms { sdkappid: Some(APP_B.into()), limit: None }).rooms().unwrap().to_vec();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].members[0].user, "xavier");
    let first = relayd.mgmt(&Request::Rooms { sdkappid: None, limit: Some(1) }).rooms().unwrap().to_vec();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].room, "1");
    // The listed room text is what dismiss_room takes.
    let r = relayd.mgmt(&Request::DismissRoom { sdkappid: APP_A.into(), room: rooms[1].room.clone() });
    assert_eq!(r.removed(), Some(1), "{r:?}");
    // Bad parameters get a clear error.
    let r = relayd.mgmt(&Request::Rooms { sdkappid: None, limit: Some(10_001) });
    assert!(!r.is_ok() && r.error().unwrap().contains("at most 10000"), "{r:?}");
    let r = relayd.mgmt(&Request::Rooms { sdkappid: Some(0), limit: None });
    assert!(!r.is_ok() && r.error().unwrap().contains("sdkappid 0"), "{r:?}");
    // Members that leave disappear from the listing.
    x.leave();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !relayd.mgmt(&Request::Rooms { sdkappid: Some(APP_B.into()), limit: None }).rooms().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "app B's room is still listed after its last member left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one_connection_answers_many_requests_in_order(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(3), None);
    a.join().unwrap();
    let mut c1 = Client::connect(&relayd.stats_socket, Duration::from_secs(5)).unwrap();
    let mut c2 = Client::connect(&relayd.stats_socket, Duration::from_secs(5)).unwrap();
    let requests = [
        Request::Stats {},
        Request::Rooms { sdkappid: None, limit: None },
        Request::GetLimits {},
        Request::DismissRoom { sdkappid: APP_B.into(), room: "99".into() },
        Request::RemoveUser { sdkappid: APP_A.into(), room: "3".into(), user: "nobody-here".into(), ban_secs: 0 },
        Request::Blocklist {},
        Request::Offenders { limit: Some(5) },
        Request::Rooms { sdkappid: None, limit: Some(50_000) },
    ];
    let check = |i: usize, r: &Response| match i % requests.len() {
        0 => assert!(r.stats().is_some_and(|s| s.sessions == 1), "{i}: {r:?}"),
        1 => assert!(r.rooms().is_some_and(|v| v.len() == 1 && v[0].room == "3"), "{i}: {r:?}"),
        2 => assert!(r.limits().is_some_and(|l| l.port_min == relayd.addr.port()), "{i}: {r:?}"),
        3 | 4 => assert_eq!(r.removed(), Some(0), "{i}: {r:?}"),
        5 => assert!(r.blocks().is_some(), "{i}: {r:?}"),
        6 => assert!(r.offenders().is_some(), "{i}: {r:?}"),
        _ => assert!(!r.is_ok() && r.error().unwrap().contains("at most 10000"), "{i}: {r:?}"),
    };
    // Two persistent connections, interleaved: each gets its own answers, in order.
    for i in 0..400 {
        let c = if i % 3 == 0 { &mut c2 } else { &mut c1 };
        let r = c.request(&requests[i % requests.len()]).unwrap();
        check(i, &r);
    }
    // The connection survives a bad request and keeps serving.
    assert!(!c1.request(&Request::DismissRoom { sdkappid: 0, room: "1".into() }).unwrap().is_ok());
    assert!(c1.request(&Request::Stats {}).unwrap().is_ok());
}

fn limits_on_the_socket_backend_are_read_only(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let l = relayd.mgmt(&Request::GetLimits {}).limits().expect("get_limits answers on every backend");
    let port = relayd.addr.port();
    assert_eq!((l.port_min, l.port_max), (port, port));
    assert_eq!((l.pps_rate_per_sec, l.join_rate_per_sec), (0, 0), "the socket backend limits nothing");
    let r = relayd.mgmt(&Request::SetLimits(Limits { pps_rate_per_sec: 10, ..l }));
    assert!(!r.is_ok() && r.error().unwrap().contains("need the xdp backend"), "{r:?}");
    let r = relayd.mgmt(&Request::Unblock { ip: "198.18.0.2".parse().unwrap(), prefix_len: 32 });
    assert!(!r.is_ok() && r.error().unwrap().contains("XDP backend"), "{r:?}");
    assert_eq!(relayd.mgmt(&Request::Blocklist {}).blocks(), Some(&[][..]));
    assert_eq!(relayd.mgmt(&Request::Offenders { limit: None }).offenders(), Some(&[][..]));
}

#[test]
fn socket_backend_rooms_list_members_of_two_apps() {
    rooms_list_members_of_two_apps(&Net::loopback());
}

#[test]
fn xdp_backend_rooms_list_members_of_two_apps() {
    if let Some(net) = Net::xdp(1) {
        rooms_list_members_of_two_apps(&net);
    }
}

#[test]
fn socket_backend_one_connection_answers_many_requests_in_order() {
    one_connection_answers_many_requests_in_order(&Net::loopback());
}

#[test]
fn xdp_backend_one_connection_answers_many_requests_in_order() {
    if let Some(net) = Net::xdp(1) {
        one_connection_answers_many_requests_in_order(&net);
    }
}

#[test]
fn socket_backend_limits_are_read_only_and_nothing_is_blocked() {
    limits_on_the_socket_backend_are_read_only(&Net::loopback());
}

/// Sends `n` packets from `tx` and returns how many `rx` received.
fn relayed(tx: &mut Peer, ssrc: u32, rx: &mut Peer, n: usize) -> usize {
    for i in 0..n {
        tx.send_rtp(ssrc, format!("packet {i}").as_bytes());
    }
    rx.drain(QUIET).len()
}

#[test]
fn xdp_unblock_after_block_restores_traffic() {
    let Some(net) = Net::xdp(1) else { return };
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(1), Some(1));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "b", RoomId::Num(1), None);
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(relayed(&mut a, 1, &mut b, 5), 5);
    let src = a.sock.local_addr().unwrap().ip();

    // A host bit past the prefix is ignored: the entry is the /24.
    let r = relayd.mgmt(&Request::Block { ip: "198.18.0.77".parse().unwrap(), prefix_len: 24, ttl_secs: 600 });
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(relayed(&mut a, 1, &mut b, 5), 0, "a blocked source is dropped in the kernel");
    let blocks = relayd.mgmt(&Request::Blocklist {}).blocks().unwrap().to_vec();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!((blocks[0].ip, blocks[0].prefix_len), ("198.18.0.0".parse().unwrap(), 24));
    let left = blocks[0].expires_in_secs.expect("a TTL was given");
    assert!((595..=600).contains(&left), "expires in {left} s");
    // Its drops show up as offences of the source.
    let offenders = relayd.mgmt(&Request::Offenders { limit: None }).offenders().unwrap().to_vec();
    assert!(offenders.iter().any(|o| o.ip == src && o.dropped_packets >= 5), "{offenders:?}");

    let r = relayd.mgmt(&Request::Unblock { ip: "198.18.0.0".parse().unwrap(), prefix_len: 24 });
    assert_eq!((r.is_ok(), r.removed()), (true, Some(1)), "{r:?}");
    assert_eq!(relayed(&mut a, 1, &mut b, 5), 5, "unblocking restores the traffic");
    assert_eq!(relayd.mgmt(&Request::Blocklist {}).blocks(), Some(&[][..]));
    // Unblocking what is not there is not an error; a prefix longer than the address is.
    let r = relayd.mgmt(&Request::Unblock { ip: "198.18.0.0".parse().unwrap(), prefix_len: 24 });
    assert_eq!((r.is_ok(), r.removed()), (true, Some(0)), "{r:?}");
    let r = relayd.mgmt(&Request::Unblock { ip: "198.18.0.0".parse().unwrap(), prefix_len: 33 });
    assert!(!r.is_ok() && r.error().unwrap().contains("at most 32"), "{r:?}");
    // An entry without TTL is listed as such.
    assert!(relayd.mgmt(&Request::Block { ip: "2001:2::".parse().unwrap(), prefix_len: 64, ttl_secs: 0 }).is_ok());
    let blocks = relayd.mgmt(&Request::Blocklist {}).blocks().unwrap().to_vec();
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].prefix_len, blocks[0].expires_in_secs), (64, None));
}

#[test]
fn xdp_set_limits_changes_the_kernel_rate_limit_at_run_time() {
    let Some(net) = Net::xdp(1) else { return };
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(1), Some(1));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "b", RoomId::Num(1), None);
    a.join().unwrap();
    b.join().unwrap();
    let port = relayd.addr.port();
    let before = relayd.mgmt(&Request::GetLimits {}).limits().unwrap();
    assert_eq!((before.pps_rate_per_sec, before.port_min, before.port_max), (0, port, port), "{before:?}");
    assert_eq!(relayed(&mut a, 1, &mut b, 20), 20, "no limit yet");

    let low = Limits { pps_rate_per_sec: 1, pps_burst: 3, ..before };
    let r = relayd.mgmt(&Request::SetLimits(low));
    assert_eq!((r.is_ok(), r.limits()), (true, Some(low)), "{r:?}");
    assert_eq!(relayd.mgmt(&Request::GetLimits {}).limits(), Some(low), "read back from the kernel");
    let limited_before = relayd.stats().xdp.get("rate_limited").copied().unwrap_or(0);
    let got = relayed(&mut a, 1, &mut b, 20);
    assert!((3..=4).contains(&got), "a source limited to 1 pps with burst 3 got {got} of 20 through");
    let s = relayd.stats();
    let limited = s.xdp.get("rate_limited").copied().unwrap_or(0) - limited_before;
    assert!(limited >= 16, "rate_limited drops: {limited}");

    // A port range that leaves out the listen port is refused, and changes nothing.
    let r = relayd.mgmt(&Request::SetLimits(Limits { port_min: port + 1, port_max: port + 10, ..low }));
    assert!(!r.is_ok() && r.error().unwrap().contains(&format!("listen port {port}")), "{r:?}");
    let r = relayd.mgmt(&Request::SetLimits(Limits { port_min: port, port_max: port - 1, ..low }));
    assert!(!r.is_ok() && r.error().unwrap().contains("invalid"), "{r:?}");
    assert_eq!(relayd.mgmt(&Request::GetLimits {}).limits(), Some(low));
    // Lifting the limit again lets everything through.
    assert!(relayd.mgmt(&Request::SetLimits(before)).is_ok());
    assert_eq!(relayed(&mut a, 1, &mut b, 20), 20);
}

#[test]
fn xdp_offenders_list_an_attacker_with_its_count() {
    let Some(net) = Net::xdp(1) else { return };
    let relayd = net.relayd(&two_app_config(30, ""));
    // A legitimate member, whose traffic is no offence.
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(1), Some(1));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "b", RoomId::Num(1), None);
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(relayed(&mut a, 1, &mut b, 10), 10);
    // The attacker floods SRTP-looking packets from unknown 5-tuples.
    let attacker = net.attacker();
    let socks: Vec<_> = (0..4).map(|_| attacker.socket()).collect();
    const SENT: u64 = 2000;
    let mut srtp = [0x5au8; 100];
    srtp[0] = 0x80;
    for i in 0..SENT {
        socks[i as usize % socks.len()].send_to(&srtp, relayd.addr).unwrap();
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let s = relayd.wait_for(5, "the flood counted in the kernel", |s| {
        s.xdp.get("unknown_session").copied().unwrap_or(0) >= SENT * 95 / 100
    });
    let unknown = s.xdp["unknown_session"];
    let r = relayd.mgmt(&Request::Offenders { limit: Some(10) });
    assert!(r.offenders().is_some_and(|o| !o.is_empty()), "{r:?}");
    let offenders = r.offenders().unwrap().to_vec();
    assert_eq!(offenders[0].ip, "198.19.0.2".parse::<std::net::IpAddr>().unwrap(), "{offenders:?}");
    assert_eq!(offenders[0].dropped_packets, unknown, "every unknown-session drop is the attacker's");
    assert!(offenders.iter().all(|o| o.ip != a.sock.local_addr().unwrap().ip()), "{offenders:?}");
    assert!(offenders.windows(2).all(|w| w[0].dropped_packets >= w[1].dropped_packets), "highest first");
    let one = relayd.mgmt(&Request::Offenders { limit: Some(1) }).offenders().unwrap().to_vec();
    assert_eq!(one.len(), 1);
    // And the operator sees it on the command line.
    let out = std::process::Command::new(bin("relayd"))
        .args(["ctl", "--socket"])
        .arg(&relayd.stats_socket)
        .args(["offenders", "--limit", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("198.19.0.2"), "{text}");
}

/// Runs `relayd ARGS` as the user `nobody`.
fn relayd_as_nobody(args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;
    let (uid, gid) = relay::io::sys::lookup_user("nobody").unwrap().expect("a nobody user");
    std::process::Command::new(bin("relayd")).args(args).uid(uid).gid(gid).output().expect("run relayd as nobody")
}

#[test]
fn only_allowed_users_may_manage_relayd() {
    if !relay::io::sys::is_root() {
        skip_or_fail("switching a client to the user nobody needs root");
        return;
    }
    let relayd = Relayd::start(&two_app_config(30, ""));
    let socket = relayd.stats_socket.to_str().unwrap().to_owned();
    let mut a = Peer::new(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(5), Some(5));
    a.join().unwrap();
    // The socket is world-connectable; SO_PEERCRED is what refuses nobody.
    let out = relayd_as_nobody(&["ctl", "--socket", &socket, "rooms"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("permission denied"), "{err}");
    let out = relayd_as_nobody(&["stats", "--socket", &socket]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    // Root still may.
    let out = std::process::Command::new(bin("relayd")).args(["ctl", "--socket", &socket, "rooms"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
    drop(relayd);

    // Named in control_users, nobody may.
    let relayd = Relayd::start(&format!("control_users = [\"nobody\"]\n{}", two_app_config(30, "")));
    let socket = relayd.stats_socket.to_str().unwrap().to_owned();
    let mut a = Peer::new(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(5), Some(5));
    a.join().unwrap();
    let out = relayd_as_nobody(&["ctl", "--socket", &socket, "rooms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("app 1400000001 room 5 (1 member(s))") && text.contains("alice"), "{text}");
    let out = relayd_as_nobody(&["ctl", "--socket", &socket, "--json", "limits"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["limits"]["port_min"].as_u64(), Some(u64::from(relayd.addr.port())));
}

#[test]
fn an_unknown_control_user_is_a_config_error() {
    let dir = TempDir::new("cfg").expect("create a temp dir");
    let path = dir.join("relayd.toml");
    let body = format!("listen = \"127.0.0.1:7000\"\ncontrol_users = [\"no-such-user-x\"]\n{}", two_app_config(30, ""));
    std::fs::write(&path, body).unwrap();
    let out = std::process::Command::new(bin("relayd")).args(["check", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("control_users: no such user \"no-such-user-x\""));
}

fn idle_workers_do_not_lag(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = 0;
    for _ in 0..20 {
        let s = relayd.stats();
        assert!(!s.worker_lag_ms.is_empty(), "one lag per worker: {s:?}");
        worst = worst.max(*s.worker_lag_ms.iter().max().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("worst idle worker lag: {worst} ms");
    // Workers wake every 100 ms at most; leave room for a busy test machine.
    assert!(worst < 600, "an idle worker lags {worst} ms");
}

#[test]
fn socket_backend_idle_workers_do_not_lag() {
    let net = Net::loopback();
    idle_workers_do_not_lag(&net);
    let relayd = net.relayd(&two_app_config(30, ""));
    assert_eq!(relayd.stats().worker_lag_ms.len(), 2, "workers = 2");
}

#[test]
fn xdp_backend_idle_workers_do_not_lag() {
    if let Some(net) = Net::xdp(2) {
        idle_workers_do_not_lag(&net);
        let s = net.relayd(&two_app_config(30, "")).stats();
        assert_eq!(s.worker_lag_ms.len(), 2, "one worker per queue");
        assert!(s.xdp_bytes.contains_key("redirect_media"), "xdp_bytes has every reason: {s:?}");
    }
}
