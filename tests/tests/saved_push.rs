//! relayd's saved push (the state file): what the management socket pushed is restored
//! when relayd starts again, wins over the TOML file, and a damaged file leaves relayd on
//! its TOML file with an error it says; on the XDP backend the blocklist and limits come
//! back into BPF maps created anew (as after a reboot).
//!
//! Run `cargo build --workspace --bins` first.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::ids::RoomId;
use relay::limits::Limits;
use relay::mgmt::{AppSpec, Request};
use relay::proto::ErrorCode;

const APP_C: u32 = 1_400_000_003;
const SECRET_C: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

fn push(relayd: &Relayd, req: Request) {
    let r = relayd.mgmt(&req);
    assert!(r.is_ok(), "{req:?}: {r:?}");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn join(relayd: &Relayd, app: u32, secret: &str) -> Result<u64, Option<ErrorCode>> {
    Peer::new(relayd, app, secret, "someone", RoomId::Num(1), None).join().map_err(|e| e.0)
}

#[test]
fn the_saved_push_is_restored_and_a_damaged_file_falls_back_to_the_toml() {
    let mut relayd = Relayd::start(&two_app_config(30, ""));
    assert_eq!(relayd.stats().config_origin.as_deref(), Some("file"));
    let spec = AppSpec {
        sdkappid: APP_C.into(),
        secrets: vec![SECRET_C.into()],
        require_private_map_key: false,
        allow_v1_joins: false,
        profiles: None,
        quotas: relay::limits::Quotas::default(),
    };
    push(&relayd, Request::SetApps { apps: vec![spec] });
    let file = relayd.state_file();
    wait_until("the push saved", || matches!(relay::pushed::load(&file), Ok(Some(c)) if c.apps.is_some()));
    // It holds an app secret: private to relayd.
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().contains(SECRET_C));
    assert_eq!(relayd.stats().state.get("saved").copied().map(|n| n >= 1), Some(true));

    // Restarted without relay-control: the pushed app set, not the TOML file's.
    assert!(relayd.sigterm());
    relayd.respawn();
    let s = relayd.stats();
    assert_eq!(s.config_origin.as_deref(), Some("saved"), "{s:?}");
    assert_eq!(s.state.get("loaded"), Some(&1));
    assert!(relayd.log().contains("starting from the config pushed last"), "{}", relayd.log());
    assert!(join(&relayd, APP_C, SECRET_C).is_ok());
    assert_eq!(join(&relayd, APP_A, SECRET_A), Err(Some(ErrorCode::UnknownApp)));
    let table = relayd.stats_table();
    assert!(table.contains("config from") && table.contains("the saved push"), "{table}");
    // The restored set is a push: a reload leaves it alone and says the file's apps were not
    // applied, and app C still serves.
    relayd.rewrite_config(&two_app_config(30, "require_private_map_key = true"));
    let report = match relayd.mgmt(&Request::Reload {}) {
        relay::mgmt::Response::Ok(relay::mgmt::Answer::Reloaded(r)) => r,
        other => panic!("reload answers: {other:?}"),
    };
    assert!(report.not_applied.iter().any(|n| n.starts_with("app")), "{report:?}");
    assert!(!report.applied.iter().any(|a| a == "app"), "{report:?}");
    assert!(join(&relayd, APP_C, SECRET_C).is_ok(), "the restored app outlives a reload");
    assert_eq!(join(&relayd, APP_A, SECRET_A), Err(Some(ErrorCode::UnknownApp)));
    relayd.rewrite_config(&two_app_config(30, ""));

    // A damaged file: an error naming it, a counter, and the TOML file's apps.
    for damage in ["{\"version\": 1, \"apps\": [tru", "\u{0}\u{0}\u{0}", "{\"version\": 7}"] {
        assert!(relayd.sigterm());
        std::fs::write(&file, damage).unwrap();
        relayd.respawn();
        let s = relayd.stats();
        assert_eq!(s.config_origin.as_deref(), Some("file"), "{damage:?}: {s:?}");
        assert_eq!(s.state.get("load_failed"), Some(&1));
        assert_eq!(s.state.get("loaded"), Some(&0));
        let log = relayd.log();
        assert!(log.contains("cannot use the saved push") && log.contains(&file.display().to_string()), "{log}");
        assert!(join(&relayd, APP_A, SECRET_A).is_ok(), "the TOML app serves");
        assert_eq!(join(&relayd, APP_C, SECRET_C), Err(Some(ErrorCode::UnknownApp)));
    }
    // The next push replaces the damaged file.
    push(&relayd, Request::RemoveUser { sdkappid: APP_A.into(), room: "1".into(), user: "eve".into(), ban_secs: 60 });
    wait_until("the file replaced", || matches!(relay::pushed::load(&file), Ok(Some(c)) if c.bans.len() == 1));
    assert_eq!(relayd.stats().config_origin.as_deref(), Some("pushed"));
}

/// Whether joins from client address `n` are dropped in the kernel as `blocklisted` (and
/// go unanswered).
fn blocked(net: &Net, relayd: &Relayd, n: usize) -> bool {
    let before = relayd.stats().xdp.get("blocklisted").copied().unwrap_or(0);
    let cfg = relayd.client_config(APP_A, SECRET_A, "blocked", RoomId::Num(1), None);
    let mut c = relay::client::Client::new(cfg).unwrap();
    let sock = net.client_socket(n);
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let len = c.join(&mut buf).unwrap();
        sock.send_to(&buf[..len], relayd.addr).unwrap();
        if sock.recv(&mut buf).is_ok() {
            return false;
        }
        if relayd.stats().xdp.get("blocklisted").copied().unwrap_or(0) > before {
            return true;
        }
    }
    false
}

/// The XDP tests start relayd with `ip netns exec`, which gives it a mount namespace of its
/// own with a fresh `/sys`: relayd mounts a bpffs there, so its pins die with the process
/// and every start creates the maps anew, exactly what a reboot does to `/sys/fs/bpf`.
/// (That the kernel's stats start from zero after each start proves the maps are new.)
#[test]
fn the_blocklist_and_limits_come_back_into_maps_created_anew() {
    let Some(net) = Net::xdp(1) else { return };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let pin_dir = format!("/sys/fs/bpf/edgerelay-test-{}-{nanos}", std::process::id());
    let mut relayd =
        net.relayd_with_limits(&two_app_config(30, ""), &format!("pin_maps = true\npin_dir = \"{pin_dir}\"\n"));
    // Client address 2 (198.18.0.4) is blocked for 10 minutes, a /24 elsewhere for good.
    push(&relayd, Request::Block { ip: "198.18.0.4".parse().unwrap(), prefix_len: 32, ttl_secs: 600 });
    push(&relayd, Request::Block { ip: "203.0.113.0".parse().unwrap(), prefix_len: 24, ttl_secs: 0 });
    let limits = Limits {
        pps_rate_per_sec: 12_345,
        pps_burst: 23_456,
        join_rate_per_sec: 300,
        join_burst: 600,
        port_min: 7000,
        port_max: 7001,
    };
    push(&relayd, Request::SetLimits(limits));
    let file = relayd.state_file();
    wait_until(
        "the push saved",
        || matches!(relay::pushed::load(&file), Ok(Some(c)) if c.blocks.len() == 2 && c.limits == Some(limits)),
    );
    assert!(blocked(&net, &relayd, 2), "the blocked address is dropped in the kernel");

    let check = |relayd: &Relayd, what: &str| {
        let fresh = relayd.stats();
        assert_eq!(fresh.xdp.get("blocklisted"), Some(&0), "{what}: the maps are new (their counters start at 0)");
        assert_eq!(fresh.config_origin.as_deref(), Some("saved"));
        assert_eq!(fresh.state.get("restore_refused"), Some(&0));
        let list = relayd.mgmt(&Request::Blocklist {});
        let blocks = list.blocks().expect("a blocklist");
        let find = |ip: &str| {
            blocks.iter().find(|b| b.ip.to_string() == ip).unwrap_or_else(|| panic!("{what}: {ip} in {blocks:?}"))
        };
        let b4 = find("198.18.0.4");
        assert_eq!(b4.prefix_len, 32);
        let left = b4.expires_in_secs.expect("a deadline");
        assert!((500..=600).contains(&left), "{what}: {left} s left");
        assert_eq!(find("203.0.113.0").expires_in_secs, None, "{what}: until removed");
        assert_eq!(
            relayd.mgmt(&Request::GetLimits {}).limits(),
            Some(limits),
            "{what}: the pushed limits in the kernel"
        );
        assert!(blocked(&net, relayd, 2), "{what}: the blocked address is dropped in the kernel again");
        let mut ok = net.peer(relayd, APP_A, SECRET_A, "ok", RoomId::Num(1), None);
        ok.join().unwrap_or_else(|e| panic!("{what}: an unblocked client joins: {e:?}"));
    };
    relayd.kill();
    relayd.respawn();
    check(&relayd, "after kill -9");
    assert!(relayd.sigterm());
    relayd.respawn();
    check(&relayd, "after SIGTERM");
    assert!(relayd.sigterm());
}

/// Removes a pin directory under `/sys/fs/bpf` on drop (pins outlive relayd by design).
struct PinDir(String);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The other restart: relayd shares the host's mounts, so its maps stay pinned across a
/// `kill -9`. With the state file deleted before the restart, only the pinned blocklist
/// can bring the block back, and the kernel's counters carry on (the same maps).
#[test]
fn the_blocklist_survives_a_restart_in_its_pinned_maps_alone() {
    let Some(net) = Net::xdp(1) else { return };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let pins = PinDir(format!("/sys/fs/bpf/edgerelay-test-{}-{nanos}", std::process::id()));
    let limits = format!("pin_maps = true\npin_dir = \"{}\"\n", pins.0);
    let mut relayd = net.relayd_mounting(&two_app_config(30, ""), &limits, true);
    push(&relayd, Request::Block { ip: "198.18.0.4".parse().unwrap(), prefix_len: 32, ttl_secs: 600 });
    assert!(blocked(&net, &relayd, 2), "the blocked address is dropped in the kernel");
    let counted = relayd.stats().xdp.get("blocklisted").copied().unwrap_or(0);
    assert!(std::path::Path::new(&pins.0).join("blocklist_v4").exists(), "the blocklist is pinned in {}", pins.0);

    relayd.kill();
    let file = relayd.state_file();
    wait_until("the state file written", || file.exists());
    std::fs::remove_file(&file).unwrap();
    relayd.respawn();
    let s = relayd.stats();
    assert_eq!(s.config_origin.as_deref(), Some("file"), "no saved push this time: {s:?}");
    assert!(
        s.xdp.get("blocklisted").copied().unwrap_or(0) >= counted,
        "the same pinned maps: the kernel's counters carry on ({counted} before)"
    );
    let list = relayd.mgmt(&Request::Blocklist {});
    let b = list.blocks().expect("a blocklist").iter().find(|b| b.ip.to_string() == "198.18.0.4").cloned();
    let b = b.unwrap_or_else(|| panic!("the pinned entry is listed: {list:?}"));
    assert!(b.expires_in_secs.is_some_and(|left| (500..=600).contains(&left)), "its deadline kept: {b:?}");
    assert!(blocked(&net, &relayd, 2), "the blocked address is dropped again, from the pinned map");
    let mut ok = net.peer(&relayd, APP_A, SECRET_A, "ok", RoomId::Num(1), None);
    ok.join().expect("an unblocked client joins");
    assert!(relayd.sigterm());
}
