//! Operations: JSON logs from both daemons, refusals logged with structured fields and no
//! secrets, oversized datagrams counted, and relay-client's warnings and reasons.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use edgerelay_tests::control::{Call, ControlDaemon, Credentials};
use edgerelay_tests::*;
use relay::ids::RoomId;
use relay::proto::ErrorCode;
use relay::stats::DropReason;
use serde_json::{json, Value};

/// The log's lines, each parsed as JSON (panics on a line that is not).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect()
}

#[test]
fn a_refused_join_is_logged_with_app_room_code_and_source_and_no_token() {
    let relayd = Relayd::start(&format!("log_format = \"json\"\n{}", two_app_config(30, "")));
    let room = RoomId::Str("lobby-7".into());
    let mut eve = Peer::new(&relayd, APP_A, "wrong-secret-wrong-secret", "eve", room.clone(), None);
    let token = eve.client.config().usersig.clone();
    assert!(matches!(eve.join(), Err((Some(ErrorCode::BadSignature), _))));
    let mut ghost = Peer::new(&relayd, 1_400_000_099, SECRET_A, "ghost", RoomId::Num(42), None);
    let ghost_token = ghost.client.config().usersig.clone();
    assert!(matches!(ghost.join(), Err((Some(ErrorCode::UnknownApp), _))));

    let line = relayd.wait_log_line(0, 5, &["join refused", "bad_signature"]);
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["app"], json!(APP_A), "{v}");
    assert_eq!(v["room"], json!("lobby-7"), "{v}");
    assert_eq!(v["code"], json!("bad_signature"), "{v}");
    assert_eq!(v["source"], json!(eve.sock.local_addr().unwrap().to_string()), "{v}");
    let line = relayd.wait_log_line(0, 5, &["join refused", "unknown_app"]);
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!((v["app"].clone(), v["room"].clone()), (json!(1_400_000_099u32), json!("42")), "{v}");
    assert_eq!(v["source"], json!(ghost.sock.local_addr().unwrap().to_string()), "{v}");

    let log = relayd.log();
    for l in json_lines(&log) {
        assert!(l["level"].is_string() && l["timestamp"].is_string() && l["message"].is_string(), "{l}");
    }
    for secret in [token.as_str(), ghost_token.as_str(), SECRET_A, "wrong-secret-wrong-secret"] {
        assert!(!log.contains(secret), "the log holds a secret or a token: {secret}");
    }
}

#[test]
fn a_refused_api_call_is_logged_with_app_room_code_and_source_and_no_secret() {
    let d = ControlDaemon::start("log_format = \"json\"");
    let wrong = Credentials { secret_id: d.admin.secret_id.clone(), secret_key: "not-the-secret-key-at-all".into() };
    let mut call = Call::json("POST", "/", &json!({"SdkAppId": 1400000400u32, "RoomId": 42}));
    call.headers = vec![("X-TC-Action".into(), "DismissRoom".into()), ("X-TC-Version".into(), "2019-07-22".into())];
    let sent = d.client(&wrong).send(&call);
    assert_eq!(sent.response.json()["Response"]["Error"]["Code"], json!("AuthFailure.SignatureFailure"));
    let authorization = sent.authorization.expect("the call was signed");
    // A REST call refused after authentication: the app and room come from the path.
    let r = d.admin_client().call("DELETE", "/v1/apps/1400000401/rooms/s:lobby", &Value::Null);
    assert!(r.status >= 400, "{}", r.status);

    let deadline = Instant::now() + Duration::from_secs(5);
    let refusals = loop {
        let lines: Vec<Value> =
            json_lines(&d.log()).into_iter().filter(|l| l["message"] == json!("API call refused")).collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(Instant::now() < deadline, "two refusals logged: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let auth = refusals.iter().find(|l| l["code"] == json!("AuthFailure.SignatureFailure")).expect("auth refusal");
    assert_eq!((auth["app"].clone(), auth["room"].clone()), (json!("1400000400"), json!("42")), "{auth}");
    assert_eq!(auth["source"], json!("127.0.0.1"), "{auth}");
    assert_eq!(auth["status"], json!(401), "{auth}");
    let rest = refusals.iter().find(|l| l["via"] == json!("DELETE /v1/apps/1400000401/rooms/s:lobby")).expect("REST");
    assert_eq!((rest["app"].clone(), rest["room"].clone()), (json!("1400000401"), json!("s:lobby")), "{rest}");
    assert!(rest["code"].is_string() && rest["source"] == json!("127.0.0.1"), "{rest}");
    let log = d.log();
    let signature = authorization.rsplit_once("Signature=").map(|(_, s)| s).unwrap_or(&authorization);
    for secret in [d.admin.secret_key.as_str(), wrong.secret_key.as_str(), signature] {
        assert!(!log.contains(secret), "the log holds a secret or a signature: {secret}");
    }
}

#[test]
fn oversized_datagrams_are_received_and_dropped_under_their_own_reason() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let before = relayd.stats();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        sock.send_to(&[0x80; 3000], relayd.addr).unwrap();
    }
    let after = relayd.wait_for(5, "3 oversized drops", |s| {
        s.drop_count(DropReason::Oversized) == before.drop_count(DropReason::Oversized) + 3
    });
    assert_eq!(after.rx_packets, before.rx_packets + 3, "counted as received");
    assert_eq!(after.rx_bytes, before.rx_bytes + 9000, "at their real length");
    assert_eq!(after.drop_count(DropReason::Malformed), before.drop_count(DropReason::Malformed));
    let table = relayd.stats_table();
    assert!(table.lines().any(|l| l.trim_start().starts_with("oversized") && l.trim_end().ends_with('3')), "{table}");
}

#[test]
fn relay_client_warns_when_user_disagrees_with_the_usersig() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let token = usersig(SECRET_A, APP_A, "alice");
    let run = |user: &str| {
        Command::new(bin("relay-client"))
            .args(["run", "--relay", &relayd.addr.to_string(), "--sdkappid", &APP_A.to_string()])
            .args(["--relay-key", &relayd.key.to_string(), "--usersig", &token, "--room", "5"])
            .args(["--recv-only", "--duration", "0.2", "--user", user])
            .output()
            .unwrap()
    };
    let out = run("bob");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains("\"bob\"") && err.contains("\"alice\""), "{err}");
    let out = run("alice");
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn relay_client_reports_a_dismissed_room() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let mut client = Command::new(bin("relay-client"))
        .args(["run", "--relay", &relayd.addr.to_string(), "--sdkappid", &APP_A.to_string()])
        .args(["--relay-key", &relayd.key.to_string(), "--secret", SECRET_A, "--user", "bob"])
        .args(["--room", "s:townhall", "--recv-only", "--duration", "20", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    relayd.wait_for(5, "bob's session", |s| s.sessions == 1);
    let r = relayd.mgmt(&relay::mgmt::Request::DismissRoom { sdkappid: APP_A.into(), room: "townhall".into() });
    assert_eq!(r.removed(), Some(1), "{r:?}");
    // Bob's next keepalive (every second) learns why; the run ends early.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            panic!("relay-client did not end after its room was dismissed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = client.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ended = report["ended"].as_str().unwrap_or_default();
    assert!(ended.starts_with("room_dismissed"), "{report}");
}
