//! `relayctl` as an operator runs it against a real relay-control: tables, `--json`, and the
//! exit code and stderr line of each failure class.

use std::process::Output;
use std::time::{Duration, Instant};

use edgerelay_tests::control_plane::RelayControl;
use edgerelay_tests::*;
use relay::ids::RoomId;
use serde_json::Value;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), stdout(&o), stderr(&o));
    stdout(&o)
}

fn fails(o: &Output, code: i32, stderr_has: &str) {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    assert!(stderr(o).contains(stderr_has), "stderr {:?} lacks {stderr_has:?}", stderr(o));
}

/// High enough that only the rate-limit test is ever limited.
const NO_RATE_LIMIT: &str =
    "[rate_limits]\nper_ip_per_sec = 10000\nper_ip_burst = 10000\nper_key_per_sec = 10000\nper_key_burst = 10000\n";

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything an operator does, against a relay-control linked to a real relayd (socket
/// backend on loopback).
#[test]
fn apps_rooms_keys_blocklist_limits_audit_round_trip() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let rc = RelayControl::start(&format!("relayd_socket = \"{}\"\n{NO_RATE_LIMIT}", relayd.stats_socket.display()));
    let run = |args: &[&str]| rc.relayctl().args(args).output().unwrap();
    wait_until(10, "relayd link up", || {
        ok(run(&["node", "status"])).lines().any(|l| l.starts_with("relayd reachable:") && l.ends_with(" yes"))
    });

    let created =
        ok(run(&["apps", "create", "--sdkappid", "1400000001", "--max-rooms", "10", "--max-members-per-room", "4"]));
    assert!(created.contains("secret (shown once):"), "{created}");
    let secret = created.lines().find_map(|l| l.strip_prefix("secret (shown once):")).unwrap().trim().to_owned();
    assert_eq!(secret.len(), 64, "{created}");

    let table = ok(run(&["apps", "list"]));
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("SDKAPPID") && header.contains("MAX_ROOMS"), "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["1400000001", "10", "4"], "{table}");
    assert!(!table.contains(&secret), "a list never shows secrets");

    let json: Value = serde_json::from_str(&ok(run(&["--json", "apps", "list"]))).unwrap();
    assert_eq!(json["apps"][0]["sdkappid"], 1_400_000_001u64, "{json}");

    // Update keeps the quota not given.
    let updated = ok(run(&["apps", "update", "1400000001", "--max-rooms", "20"]));
    assert!(updated.contains("max rooms:") && updated.contains("20"), "{updated}");
    assert!(updated.lines().any(|l| l.starts_with("max members per room:") && l.ends_with(" 4")), "{updated}");

    let sig = ok(run(&[
        "usersig",
        "mint",
        "--sdkappid",
        "1400000001",
        "--user",
        "alice",
        "--room-id",
        "42",
        "--privileges",
        "enter,recv-audio",
    ]));
    let usersig = sig.lines().find_map(|l| l.strip_prefix("usersig:")).unwrap().trim();
    let decoded = relay::usersig::decode(usersig).unwrap();
    assert_eq!(decoded.identifier, "alice");
    decoded.verify(secret.as_bytes(), unix_now()).unwrap();
    assert!(sig.contains("private_map_key:"), "{sig}");

    // Two members in room 42, listed, one removed, then the room dismissed.
    let room = RoomId::parse("42").unwrap();
    let join = |user: &str| {
        let mut p = Peer::new(&relayd, 1_400_000_001, &secret, user, room.clone(), None);
        p.join().map(|_| p)
    };
    let mut joined = None;
    wait_until(10, "the app pushed to relayd", || {
        joined = join("alice").ok();
        joined.is_some()
    });
    let _alice = joined.unwrap();
    let _bob = join("bob").expect("bob joins");
    let rooms = ok(run(&["rooms", "list", "--sdkappid", "1400000001"]));
    assert!(
        rooms.lines().next().unwrap().split_whitespace().eq(["SDKAPPID", "ROOM", "USER", "ADDR", "SEND", "RECV"]),
        "{rooms}"
    );
    for user in ["alice", "bob"] {
        assert!(
            rooms
                .lines()
                .any(|l| l.split_whitespace().take(3).eq(["1400000001", "42", user]) && l.contains("127.0.0.1:")),
            "{rooms}"
        );
    }
    assert!(rooms.trim_end().ends_with("1 rooms"), "{rooms}");
    let json: Value = serde_json::from_str(&ok(run(&["--json", "rooms", "list"]))).unwrap();
    assert_eq!(json["rooms"][0]["members"].as_array().map(Vec::len), Some(2), "{json}");
    ok(run(&["rooms", "remove-user", "1400000001", "42", "bob"]));
    relayd.wait_for(5, "bob removed", |s| s.sessions == 1);
    ok(run(&["rooms", "dismiss", "1400000001", "42"]));
    relayd.wait_for(5, "room dismissed", |s| s.sessions == 0);
    fails(&run(&["rooms", "dismiss", "1400000001", "42"]), 5, "ResourceNotFound");

    let xdp = ok(run(&["xdp", "status"]));
    assert!(xdp.contains("No XDP counters: relayd runs the socket backend"), "{xdp}");
    assert!(xdp.contains("Per-source limits:"), "{xdp}");

    ok(run(&["blocklist", "add", "198.18.5.0/24", "--ttl-secs", "600", "--reason", "lab flood"]));
    let list = ok(run(&["blocklist", "list"]));
    assert!(
        list.lines().any(|l| l.starts_with("198.18.5.0/24") && l.contains("api") && l.contains("lab flood")),
        "{list}"
    );
    ok(run(&["blocklist", "remove", "198.18.5.0/24"]));
    assert!(!ok(run(&["blocklist", "list"])).contains("198.18.5.0/24"));

    let show = ok(run(&["limits", "show"]));
    assert!(show.contains("pps_rate_per_sec:"), "{show}");
    // The socket backend has no per-source limits to set: relayd's error comes through.
    let o = run(&["limits", "set", "--pps-rate-per-sec", "500"]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stderr(&o).contains("xdp"), "{}", stderr(&o));

    let key = ok(run(&["keys", "create", "--role", "auditor", "--label", "grafana"]));
    let auditor_id = key.lines().find_map(|l| l.strip_prefix("secret_id:")).unwrap().trim().to_owned();
    let auditor_key = key.lines().find_map(|l| l.strip_prefix("secret_key (shown once):")).unwrap().trim().to_owned();
    let keys = ok(run(&["keys", "list"]));
    assert!(
        keys.lines().any(|l| l.starts_with(&auditor_id) && l.contains("auditor") && l.contains("grafana")),
        "{keys}"
    );

    // The auditor may read, not write: exit 3 with the server's code.
    let as_auditor = |args: &[&str]| {
        rc.relayctl()
            .env("EDGERELAY_SECRET_ID", &auditor_id)
            .env("EDGERELAY_SECRET_KEY", &auditor_key)
            .args(args)
            .output()
            .unwrap()
    };
    ok(as_auditor(&["apps", "list"]));
    fails(&as_auditor(&["apps", "delete", "1400000001"]), 3, "UnauthorizedOperation: ");

    let audit = ok(run(&["audit", "query", "--since", "1h"]));
    assert!(audit.starts_with("TIME"), "{audit}");
    assert!(audit.contains("POST /v1/apps"), "{audit}");
    assert!(audit.contains("POST /v1/blocklist"), "{audit}");
    assert!(audit.lines().any(|l| l.contains("DELETE /v1/apps/1400000001") && l.contains(&auditor_id)), "{audit}");

    ok(run(&["keys", "revoke", &auditor_id]));
    fails(&as_auditor(&["apps", "list"]), 3, "AuthFailure");

    ok(run(&["apps", "delete", "1400000001"]));
    fails(&run(&["apps", "show", "1400000001"]), 5, "ResourceNotFound: ");
}

#[test]
fn failure_classes_have_their_exit_codes() {
    let rc = RelayControl::start(NO_RATE_LIMIT);
    let run = |args: &[&str]| rc.relayctl().args(args).output().unwrap();

    // Validation: 4, the server's message naming the field, and the request id.
    let o = run(&["apps", "create", "--sdkappid", "0"]);
    fails(&o, 4, "InvalidParameter");
    assert!(stderr(&o).contains("sdkappid") && stderr(&o).trim_end().ends_with(')'), "{}", stderr(&o));

    // Not found: 5.
    fails(&run(&["apps", "show", "1400000099"]), 5, "ResourceNotFound: ");

    // A wrong SecretKey: 3.
    let o = rc.relayctl().env("EDGERELAY_SECRET_KEY", "not-the-key").args(["apps", "list"]).output().unwrap();
    fails(&o, 3, "AuthFailure.SignatureFailure: ");

    // Nobody listening: 7.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let o =
        rc.relayctl().env("EDGERELAY_ENDPOINT", format!("https://{closed}")).args(["node", "status"]).output().unwrap();
    fails(&o, 7, "unreachable");

    // Another certificate pinned: 7, and the fingerprint the server showed.
    let o = rc
        .relayctl()
        .env("EDGERELAY_CERT_SHA256", format!("sha256:{}", ["00"; 32].join(":")))
        .args(["node", "status"])
        .output()
        .unwrap();
    fails(&o, 7, &format!("server certificate {} does not match the pinned", rc.fingerprint));

    // No credentials at all: 2.
    let o = std::process::Command::new(bin("relayctl")).env_clear().args(["apps", "list"]).output().unwrap();
    fails(&o, 2, "no credentials");

    // TRTC envelope errors map by code: an 11-user RemoveUser is invalid (4).
    let mut args = vec!["trtc", "remove-user", "--sdkappid", "1400000001", "--room-id", "42"];
    let users: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
    for u in &users {
        args.extend(["--user-id", u.as_str()]);
    }
    fails(&run(&args), 4, "InvalidParameter");
}

#[test]
fn rate_limited_calls_exit_6_with_retry_after() {
    let rc = RelayControl::start("[rate_limits]\nper_key_per_sec = 1\nper_key_burst = 1\n");
    let mut codes = Vec::new();
    for _ in 0..4 {
        let o = rc.relayctl().args(["apps", "list"]).output().unwrap();
        if o.status.code() == Some(6) {
            assert!(stderr(&o).contains("RequestLimitExceeded: "), "{}", stderr(&o));
            assert!(stderr(&o).contains("retry after "), "{}", stderr(&o));
            return;
        }
        codes.push(o.status.code());
    }
    panic!("four calls in a row at 1/s were never limited: {codes:?}");
}

#[test]
fn node_openapi_metrics_and_xdp_status() {
    let rc = RelayControl::start(NO_RATE_LIMIT);
    let run = |args: &[&str]| rc.relayctl().args(args).output().unwrap();

    let status = ok(run(&["node", "status"]));
    assert!(status.contains("control version:"), "{status}");
    assert!(status.contains(&rc.fingerprint), "the node shows its own certificate: {status}");
    assert!(status.lines().any(|l| l.starts_with("relayd reachable:") && l.trim_end().ends_with("no")), "{status}");

    // Without relayd the node is degraded: exit 1, a failing check in the table.
    let health = run(&["node", "health"]);
    assert_eq!(health.status.code(), Some(1), "{}", stdout(&health));
    assert!(stdout(&health).contains("FAIL"), "{}", stdout(&health));

    let doc: Value = serde_json::from_str(&ok(run(&["openapi"]))).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/apps"].is_object(), "{doc}");

    let metrics = ok(run(&["metrics"]));
    assert!(metrics.contains("# TYPE edgerelay_"), "{metrics}");

    let xdp = ok(run(&["xdp", "status"]));
    assert!(xdp.starts_with("CURRENT EDGERELAY XDP STATUS:"), "{xdp}");
    assert!(xdp.contains("relayd is unreachable"), "{xdp}");
    assert!(xdp.contains("Blocked source prefixes:"), "{xdp}");
    let json: Value = serde_json::from_str(&ok(run(&["--json", "xdp", "status"]))).unwrap();
    assert_eq!(json["relayd_reachable"], false, "{json}");
}
