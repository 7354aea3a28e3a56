//! relay-control's HTTPS API against the real daemon binary on loopback (no relayd):
//! TLS and the printed fingerprint, TC3 authentication failures, roles, rate limits, the
//! audit log, strict bodies, persistence across restart and SIGKILL, certificate reload on
//! SIGHUP, the Tencent envelope, and the absence of any plaintext listener.
//!
//! Run `cargo build -p relay-control --bins` first (the README's test command builds all).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use edgerelay_tests::control::{ApiClient, Call, ControlDaemon, Credentials, Signing};
use edgerelay_tests::unix_now;
use serde_json::{json, Value};

fn new_key(admin: &ApiClient, role: &str) -> Credentials {
    let r = admin.call("POST", "/v1/keys", &json!({"role": role, "label": format!("{role} key")}));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    Credentials::from_json(&r.json())
}

fn audit(c: &ApiClient) -> Vec<Value> {
    c.get_ok("/v1/audit?limit=1000")["entries"].as_array().unwrap().clone()
}

#[test]
fn signed_request_over_tls_with_the_printed_certificate() {
    // The Tencent example vector, through the same signing code the client uses.
    let headers = [("content-type", "application/json; charset=utf-8"), ("host", "cvm.tencentcloudapi.com")];
    let body = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    let req =
        control::tc3::Request { method: "POST", uri: "/", query: "", headers: &headers, payload: body.as_bytes() };
    let scope = control::tc3::Scope { timestamp: 1_551_113_065, service: "cvm" };
    let s =
        control::tc3::sign("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", b"Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", &scope, &req)
            .unwrap();
    assert_eq!(s.signature, "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168");

    let d = ControlDaemon::start("");
    assert!(d.fingerprint.starts_with("sha256:") && d.fingerprint.len() == 7 + 95, "{}", d.fingerprint);
    let c = d.admin_client();
    let r = c.call("GET", "/v1/apps", &Value::Null);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"apps": []}));
    assert_eq!(r.cert_sha256, d.fingerprint, "served certificate differs from the printed fingerprint");
    assert_eq!(r.header("x-request-id").map(str::len), Some(36));
    let node = c.get_ok("/v1/node");
    assert_eq!(node["control"]["cert_sha256"], d.fingerprint.as_str());
    assert_eq!(node["relayd"]["reachable"], false);
    let health = c.get_ok("/v1/node/health");
    assert_eq!(health["status"], "degraded", "no relayd configured: {health}");
    let doc = c.get_ok("/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.0.3");
    // A client pinned to another fingerprint refuses the connection.
    let wrong = ApiClient::new(d.addr, Some("sha256:00".into()), d.admin.clone());
    assert!(wrong.exchange(b"GET /v1/apps HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
}

#[test]
fn authentication_failures_are_401_and_audited() {
    let d = ControlDaemon::start("");
    let c = d.admin_client();
    let create = |signing: Signing| {
        let mut call = Call::json("POST", "/v1/apps", &json!({"sdkappid": 1400000100u32}));
        call.signing = signing;
        c.send(&call).response
    };
    let expect = |r: &edgerelay_tests::control::ApiResponse, code: &str| {
        assert_eq!((r.status, r.code().as_str()), (401, code), "{}", String::from_utf8_lossy(&r.body));
        assert!(r.header("x-request-id").is_some());
    };
    expect(&create(Signing::None), "AuthFailure.InvalidAuthorization");
    expect(&create(Signing::At(unix_now() - 400)), "AuthFailure.SignatureExpire");
    expect(&create(Signing::At(unix_now() + 400)), "AuthFailure.SignatureExpire");
    // A valid signature for one request does not cover another body.
    let good = c.send(&Call::json("POST", "/v1/apps", &json!({"sdkappid": 1400000101u32})));
    assert_eq!(good.response.status, 201);
    let (auth, ts) = (good.authorization.clone().unwrap(), good.timestamp.unwrap());
    expect(&create(Signing::Raw(auth.clone(), ts)), "AuthFailure.SignatureFailure");
    // The very same request again is a replay.
    let mut again = Call::json("POST", "/v1/apps", &json!({"sdkappid": 1400000101u32}));
    again.signing = Signing::Raw(auth.clone(), ts);
    again.nonce = Some(good.nonce.clone());
    expect(&c.send(&again).response, "AuthFailure.Replayed");
    // A flipped signature digit.
    let last = auth.chars().last().unwrap();
    let flipped = format!("{}{}", &auth[..auth.len() - 1], if last == '0' { '1' } else { '0' });
    expect(&create(Signing::Raw(flipped, ts)), "AuthFailure.SignatureFailure");
    // host not signed.
    let unsigned = auth.replace("SignedHeaders=content-type;host;", "SignedHeaders=content-type;");
    expect(&create(Signing::Raw(unsigned, ts)), "AuthFailure.InvalidAuthorization");
    // Wrong service in the scope.
    let mut other = d.admin_client();
    other.service = "cvm".into();
    let mut call = Call::json("GET", "/v1/apps", &Value::Null);
    call.signing = Signing::Now;
    expect(&other.send(&call).response, "AuthFailure.InvalidScope");
    // Unknown key.
    let stranger =
        d.client(&Credentials { secret_id: "AKIDaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(), secret_key: "x".repeat(32) });
    expect(&stranger.call("GET", "/v1/apps", &Value::Null), "AuthFailure.SecretIdNotFound");
    // A revoked key stops working on the next request.
    let op = new_key(&c, "operator");
    let opc = d.client(&op);
    assert_eq!(opc.call("GET", "/v1/apps", &Value::Null).status, 200);
    assert_eq!(c.call("DELETE", &format!("/v1/keys/{}", op.secret_id), &Value::Null).status, 204);
    expect(&opc.call("GET", "/v1/apps", &Value::Null), "AuthFailure.SecretIdNotFound");
    expect(&opc.call("POST", "/v1/apps", &json!({"sdkappid": 5})), "AuthFailure.SecretIdNotFound");
    // The only admin key cannot revoke itself: that would lock every operator out.
    let own = c.call("DELETE", &format!("/v1/keys/{}", d.admin.secret_id), &Value::Null);
    assert_eq!(own.status, 409, "revoking the last admin key: {}", String::from_utf8_lossy(&own.body));
    assert_eq!(c.call("GET", "/v1/apps", &Value::Null).status, 200);

    let entries = audit(&c);
    let refused: Vec<&Value> = entries
        .iter()
        .filter(|e| e["who"] == "anonymous" && e["what"].as_str().unwrap().starts_with("POST /v1/apps AuthFailure."))
        .collect();
    // None, two skews, two bad signatures, replay, unsigned host, revoked key: 8.
    assert_eq!(refused.len(), 8, "{entries:#?}");
    assert!(refused
        .iter()
        .all(|e| e["source_ip"] == "127.0.0.1" && e["outcome"].as_str().unwrap().starts_with("failure")));
    // Reads are not audited.
    assert!(!entries.iter().any(|e| e["what"].as_str().unwrap().starts_with("GET ")));
}

#[test]
fn roles_limit_what_a_key_may_do() {
    let d = ControlDaemon::start("");
    let admin = d.admin_client();
    let auditor = d.client(&new_key(&admin, "auditor"));
    let operator = d.client(&new_key(&admin, "operator"));
    assert_eq!(auditor.call("GET", "/v1/apps", &Value::Null).status, 200);
    assert_eq!(auditor.call("GET", "/v1/audit", &Value::Null).status, 200);
    let r = auditor.call("POST", "/v1/apps", &json!({"sdkappid": 7}));
    assert_eq!((r.status, r.code().as_str()), (403, "UnauthorizedOperation"));
    let r = auditor.call("POST", "/v1/blocklist", &json!({"cidr": "198.18.9.0/24", "ttl_secs": 0}));
    assert_eq!(r.status, 403);
    assert_eq!(operator.call("POST", "/v1/apps", &json!({"sdkappid": 7})).status, 201);
    let r = operator.call("POST", "/v1/keys", &json!({"role": "admin", "label": "escalate"}));
    assert_eq!((r.status, r.code().as_str()), (403, "UnauthorizedOperation"));
    assert_eq!(operator.call("GET", "/v1/keys", &Value::Null).status, 200);
    let r = auditor.call("DELETE", "/v1/apps/7", &Value::Null);
    assert_eq!(r.status, 403);
    assert_eq!(admin.call("GET", "/v1/apps/7", &Value::Null).status, 200);
    let entries = audit(&admin);
    let denied = entries.iter().filter(|e| e["what"].as_str().unwrap().contains("UnauthorizedOperation")).count();
    assert_eq!(denied, 4, "{entries:#?}");
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let d = ControlDaemon::start("[rate_limits]\nper_key_per_sec = 1\nper_key_burst = 3\n");
    let c = d.admin_client();
    let statuses: Vec<u16> = (0..5).map(|_| c.call("GET", "/v1/apps", &Value::Null).status).collect();
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    let r = c.call("GET", "/v1/apps", &Value::Null);
    assert_eq!((r.status, r.code().as_str()), (429, "RequestLimitExceeded"));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    std::thread::sleep(Duration::from_secs(retry + 1));
    assert_eq!(c.call("GET", "/v1/apps", &Value::Null).status, 200);
}

#[test]
fn per_source_rate_limit_applies_before_authentication() {
    let d = ControlDaemon::start("[rate_limits]\nper_ip_per_sec = 1\nper_ip_burst = 2\n");
    let mut call = Call::json("GET", "/v1/apps", &Value::Null);
    call.signing = Signing::None;
    let c = d.admin_client();
    let statuses: Vec<u16> = (0..3).map(|_| c.send(&call).response.status).collect();
    assert_eq!(statuses, [401, 401, 429]);
}

#[test]
fn mutations_are_audited_and_queryable() {
    let d = ControlDaemon::start("");
    let c = d.admin_client();
    let start = unix_now();
    assert_eq!(c.call("POST", "/v1/apps", &json!({"sdkappid": 1400000200u32})).status, 201);
    assert_eq!(c.call("PATCH", "/v1/apps/1400000200", &json!({"require_private_map_key": true})).status, 200);
    assert_eq!(c.call("POST", "/v1/apps/1400000200/rotate-secret", &json!({"overlap_secs": 60})).status, 200);
    let r = c.call("POST", "/v1/apps/1400000200/usersig", &json!({"user_id": "alice", "expire_secs": 600}));
    assert_eq!(r.status, 200);
    assert_eq!(c.call("POST", "/v1/blocklist", &json!({"cidr": "198.18.7.9/24", "ttl_secs": 0})).status, 201);
    assert_eq!(c.call("DELETE", "/v1/blocklist/198.18.7.0/24", &Value::Null).status, 204);
    assert_eq!(c.call("DELETE", "/v1/apps/1400000999", &Value::Null).status, 404);
    assert_eq!(c.call("DELETE", "/v1/apps/1400000200", &Value::Null).status, 204);
    let entries = c.get_ok(&format!("/v1/audit?since={start}&limit=100"))["entries"].as_array().unwrap().clone();
    let entries: Vec<Value> =
        entries.into_iter().filter(|e| !e["what"].as_str().unwrap().starts_with("bootstrap-admin")).collect();
    let whats: Vec<&str> = entries.iter().map(|e| e["what"].as_str().unwrap()).collect();
    assert_eq!(
        whats,
        [
            "POST /v1/apps create_app 1400000200",
            "PATCH /v1/apps/1400000200 update_app 1400000200",
            "POST /v1/apps/1400000200/rotate-secret rotate_app_secret 1400000200",
            "POST /v1/apps/1400000200/usersig usersig 1400000200 alice pmk=false",
            "POST /v1/blocklist block 198.18.7.0/24 ttl=0",
            "DELETE /v1/blocklist/198.18.7.0/24 unblock 198.18.7.0/24",
            "DELETE /v1/apps/1400000999 ResourceNotFound",
            "DELETE /v1/apps/1400000200 delete_app 1400000200",
        ]
    );
    assert!(entries.iter().all(|e| e["who"] == d.admin.secret_id.as_str()));
    assert_eq!(entries[6]["outcome"], "failure: app 1400000999 not found");
    let limited = c.get_ok(&format!("/v1/audit?since={start}&limit=2"));
    assert_eq!(limited["entries"].as_array().unwrap().len(), 2);
    let future = c.get_ok(&format!("/v1/audit?since={}", start + 3600));
    assert_eq!(future["entries"], json!([]));
    let r = c.call("GET", "/v1/audit?limit=0", &Value::Null);
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidParameter"));
    let r = c.call("GET", "/v1/audit?bogus=1", &Value::Null);
    assert_eq!(r.status, 400);
}

#[test]
fn bodies_are_strict_and_errors_have_one_shape() {
    let d = ControlDaemon::start("[rate_limits]\nper_key_per_sec = 100\nper_key_burst = 100\n");
    let c = d.admin_client();
    let check = |r: edgerelay_tests::control::ApiResponse, status: u16, code: &str, needle: &str| {
        let j = r.json();
        assert_eq!((r.status, j["code"].as_str().unwrap()), (status, code), "{j}");
        assert!(j["message"].as_str().unwrap().contains(needle), "{j}");
        assert_eq!(j["request_id"].as_str(), r.header("x-request-id"));
    };
    let mut raw = Call::json("POST", "/v1/apps", &Value::Null);
    raw.body = b"{\"sdkappid\": ".to_vec();
    check(c.send(&raw).response, 400, "MalformedJson", "not valid JSON");
    check(c.call("POST", "/v1/apps", &json!({})), 400, "MissingParameter", "sdkappid");
    check(
        c.call("POST", "/v1/apps", &json!({"sdkappid": 0})),
        400,
        "InvalidParameter",
        "sdkappid must be in 1..=4294967295",
    );
    check(c.call("POST", "/v1/apps", &json!({"sdkappid": 4294967296u64})), 400, "InvalidParameter", "sdkappid");
    check(c.call("POST", "/v1/apps", &json!({"sdkappid": 5, "secret": "x"})), 400, "InvalidParameter", "secret");
    check(
        c.call("POST", "/v1/apps", &json!({"sdkappid": 5, "quotas": {"max_rooms": 0, "max_members_per_room": 1}})),
        400,
        "InvalidParameter",
        "quotas.max_rooms must be in 1..=1000000",
    );
    let mut text = Call::json("POST", "/v1/apps", &json!({"sdkappid": 5}));
    text.content_type = "text/plain".into();
    check(c.send(&text).response, 415, "UnsupportedMediaType", "application/json");
    let mut big = Call::json("POST", "/v1/apps", &Value::Null);
    big.body = vec![b' '; 70 * 1024];
    check(c.send(&big).response, 413, "RequestSizeLimitExceeded", "64 KiB");
    check(c.call("GET", "/v1/apps/99", &Value::Null), 404, "ResourceNotFound", "app 99");
    check(c.call("GET", "/v1/apps/abc", &Value::Null), 400, "InvalidParameter", "sdkappid");
    check(c.call("GET", "/v1/nothing", &Value::Null), 404, "ResourceNotFound", "no such");
    check(c.call("PUT", "/v1/apps", &json!({})), 405, "UnsupportedOperation", "method");
    assert_eq!(c.call("POST", "/v1/apps", &json!({"sdkappid": 5})).status, 201);
    check(c.call("POST", "/v1/apps", &json!({"sdkappid": 5})), 409, "ResourceInUse", "exists");
    check(
        c.call("POST", "/v1/apps/5/usersig", &json!({"user_id": "a b", "expire_secs": 60})),
        400,
        "InvalidParameter",
        "user_id",
    );
    check(
        c.call(
            "POST",
            "/v1/apps/5/usersig",
            &json!({"user_id": "a", "expire_secs": 60, "private_map_key": {"room_id": 1, "str_room_id": "x", "privileges": 3}}),
        ),
        400,
        "InvalidParameter",
        "exactly one",
    );
    let r = c.call(
        "POST",
        "/v1/apps/5/usersig",
        &json!({"user_id": "alice", "expire_secs": 60, "private_map_key": {"str_room_id": "lobby", "privileges": 255}}),
    );
    assert_eq!(r.status, 200);
    let j = r.json();
    let sig = relay::usersig::decode(j["usersig"].as_str().unwrap()).unwrap();
    sig.check_identity(5, "alice").unwrap();
    assert!(j["private_map_key"].as_str().is_some());
    check(
        c.call("POST", "/v1/blocklist", &json!({"cidr": "198.18.0.0/33", "ttl_secs": 1})),
        400,
        "InvalidParameter",
        "prefix_len",
    );
    check(
        c.call("POST", "/v1/blocklist", &json!({"cidr": "198.18.0.0/16", "ttl_secs": 2592001})),
        400,
        "InvalidParameter",
        "ttl_secs must be in 0..=2592000",
    );
    check(
        c.call(
            "PUT",
            "/v1/limits",
            &json!({"pps_rate_per_sec": 1, "pps_burst": 1, "join_rate_per_sec": 1, "join_burst": 1, "port_min": 9000, "port_max": 8000}),
        ),
        400,
        "InvalidParameter",
        "port_min",
    );
    // Without relayd, limits set through the API are stored (pushed on connect).
    let limits = json!({"pps_rate_per_sec": 100, "pps_burst": 200, "join_rate_per_sec": 5, "join_burst": 10, "port_min": 7000, "port_max": 7100});
    assert_eq!(c.call("PUT", "/v1/limits", &limits).status, 200);
    assert_eq!(c.get_ok("/v1/limits"), limits);
    check(c.call("GET", "/v1/rooms", &Value::Null), 503, "ResourceUnavailable.Relayd", "relayd");
}

#[test]
fn state_survives_restart_and_sigkill() {
    let d = ControlDaemon::start("");
    let c = d.admin_client();
    let created = c.call("POST", "/v1/apps", &json!({"sdkappid": 1400000300u32})).json();
    assert_eq!(
        c.call("POST", "/v1/blocklist", &json!({"cidr": "198.18.3.0/24", "ttl_secs": 0, "reason": "test"})).status,
        201
    );
    let op = new_key(&c, "operator");
    let d = d.restart();
    let c = d.admin_client();
    let apps = c.get_ok("/v1/apps");
    assert_eq!(apps["apps"][0]["sdkappid"], 1400000300u32);
    assert_eq!(apps["apps"][0]["secrets"], created["secrets"]);
    assert_eq!(c.get_ok("/v1/blocklist")["entries"][0]["cidr"], "198.18.3.0/24");
    assert_eq!(d.client(&op).call("GET", "/v1/apps", &Value::Null).status, 200);
    // kill -9 right after a 2xx: the change is there after the restart.
    assert_eq!(c.call("POST", "/v1/apps", &json!({"sdkappid": 1400000301u32})).status, 201);
    assert_eq!(c.call("POST", "/v1/blocklist", &json!({"cidr": "198.18.4.1", "ttl_secs": 600})).status, 201);
    let d = d.crash_and_restart();
    let c = d.admin_client();
    let ids: Vec<u64> =
        c.get_ok("/v1/apps")["apps"].as_array().unwrap().iter().map(|a| a["sdkappid"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1400000300, 1400000301]);
    let cidrs: Vec<String> = c.get_ok("/v1/blocklist")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cidr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cidrs, ["198.18.3.0/24", "198.18.4.1/32"]);
    // The generated certificate is kept across restarts.
    assert_eq!(c.call("GET", "/v1/node", &Value::Null).cert_sha256, d.fingerprint);
}

fn write_cert(dir: &std::path::Path, cn: &str) -> String {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    // Write the key first: the daemon may poll between the two writes, and a mismatch is
    // refused (the old certificate stays) until both are in place.
    std::fs::write(dir.join("key.pem.tmp"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem.tmp"), cert.pem()).unwrap();
    std::fs::rename(dir.join("key.pem.tmp"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.pem.tmp"), dir.join("cert.pem")).unwrap();
    control::server::tls::fingerprint(cert.der())
}

#[test]
fn sighup_reloads_the_certificate_without_restart() {
    let certs = edgerelay_tests::TempDir::new("control-certs").expect("create a temp dir");
    let first = write_cert(certs.path(), "first");
    let cfg = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        certs.join("cert.pem").display(),
        certs.join("key.pem").display()
    );
    let mut d = ControlDaemon::start(&cfg);
    assert_eq!(d.fingerprint, first);
    let any = ApiClient::new(d.addr, None, d.admin.clone());
    assert_eq!(any.call("GET", "/v1/apps", &Value::Null).cert_sha256, first);
    let pid = d.pid();
    let second = write_cert(certs.path(), "second");
    let hup = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = any.call("GET", "/v1/node", &Value::Null);
        if r.cert_sha256 == second {
            assert_eq!(r.json()["control"]["cert_sha256"], second.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "still serving {} after SIGHUP", r.cert_sha256);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.pid(), pid, "no restart");
    let line = d.next_stdout_line(Duration::from_secs(5)).expect("reload announced on stdout");
    assert_eq!(line, format!("relay-control: certificate {second}"));
}

#[test]
fn tencent_actions_answer_in_the_envelope() {
    let d = ControlDaemon::start("");
    let c = d.admin_client();
    assert_eq!(c.call("POST", "/v1/apps", &json!({"sdkappid": 1400000400u32})).status, 201);
    let action = |name: &str, version: &str, body: Value| {
        let mut call = Call::json("POST", "/", &body);
        call.headers = vec![("X-TC-Action".into(), name.into()), ("X-TC-Version".into(), version.into())];
        c.send(&call).response
    };
    let error = |r: &edgerelay_tests::control::ApiResponse| -> (u16, String) {
        let j = r.json();
        assert_eq!(j["Response"]["RequestId"].as_str(), r.header("x-request-id"), "{j}");
        (r.status, j["Response"]["Error"]["Code"].as_str().unwrap_or("").to_owned())
    };
    let r = action("DismissRoom", "2019-07-22", json!({"SdkAppId": 1400000400u32, "RoomId": 42}));
    assert_eq!(error(&r), (200, "ResourceUnavailable.Relayd".into()));
    let r = action("DismissRoom", "2020-01-01", json!({"SdkAppId": 1400000400u32, "RoomId": 42}));
    assert_eq!(error(&r), (200, "NoSuchVersion".into()));
    let r = action("Reboot", "2019-07-22", json!({}));
    assert_eq!(error(&r), (200, "InvalidAction".into()));
    let r = action("DismissRoom", "2019-07-22", json!({"SdkAppId": 1400000400u32, "RoomId": 0}));
    assert_eq!(error(&r), (200, "InvalidParameter".into()));
    let r = action("RemoveUser", "2019-07-22", json!({"SdkAppId": 1400000400u32, "RoomId": 1, "UserIds": []}));
    assert_eq!(error(&r), (200, "InvalidParameter".into()));
    let r = action("DismissRoomByStrRoomId", "2019-07-22", json!({"SdkAppId": 1400000401u32, "RoomId": "x"}));
    assert_eq!(error(&r), (200, "ResourceNotFound".into()));
    let r = action("DismissRoom", "2019-07-22", json!({"SdkAppId": 1400000400u32, "RoomId": 1, "Extra": 1}));
    assert_eq!(error(&r), (200, "InvalidParameter".into()));
    let mut unsigned = Call::json("POST", "/", &json!({}));
    unsigned.signing = Signing::None;
    let r = c.send(&unsigned).response;
    assert_eq!(error(&r), (200, "AuthFailure.InvalidAuthorization".into()));
    let r = c.call("GET", "/", &Value::Null);
    assert_eq!((r.status, r.code().as_str()), (405, "UnsupportedOperation"));
}

#[test]
fn there_is_no_plaintext_listener() {
    let d = ControlDaemon::start("");
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /v1/apps HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/"), "plaintext HTTP answered: {}", String::from_utf8_lossy(&buf));
    // The TLS port still serves TLS afterwards.
    assert_eq!(d.admin_client().call("GET", "/v1/apps", &Value::Null).status, 200);
}

#[test]
fn metrics_take_the_bearer_token_or_a_signature() {
    let d = ControlDaemon::start("metrics_token = \"0123456789abcdef-token\"\n");
    let c = d.admin_client();
    let r = c.call("GET", "/metrics", &Value::Null);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("edgerelay_relayd_up 0"), "{text}");
    assert!(text.contains("# TYPE edgerelay_control_requests_total counter"), "{text}");
    let mut bearer = Call::json("GET", "/metrics", &Value::Null);
    bearer.signing = Signing::None;
    bearer.headers = vec![("Authorization".into(), "Bearer 0123456789abcdef-token".into())];
    assert_eq!(c.send(&bearer).response.status, 200);
    bearer.headers = vec![("Authorization".into(), "Bearer wrong-token-0123456789".into())];
    let r = c.send(&bearer).response;
    assert_eq!((r.status, r.code().as_str()), (401, "AuthFailure.InvalidToken"));
    // The token opens /metrics only.
    let mut elsewhere = bearer.clone();
    elsewhere.path = "/v1/apps".into();
    elsewhere.headers = vec![("Authorization".into(), "Bearer 0123456789abcdef-token".into())];
    assert_eq!(c.send(&elsewhere).response.status, 401);
}

#[test]
fn serves_as_the_configured_unprivileged_user() {
    if !relay::io::sys::is_root() && edgerelay_tests::skip_or_fail("dropping privileges needs root") {
        return;
    }
    let (uid, _) = relay::io::sys::lookup_user("nobody").unwrap().expect("user nobody exists");
    // bootstrap-admin runs as root and creates the store; serve hands the state dir to `nobody`.
    let d = ControlDaemon::start("user = \"nobody\"");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(uids, vec![uid; 4], "real, effective, saved and fs uid");
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    assert_eq!(u64::from_str_radix(caps, 16).unwrap(), 0, "no capabilities left");
    // The store is still readable and writable.
    let c = d.admin_client();
    assert_eq!(c.call("POST", "/v1/apps", &json!({"sdkappid": 1400000201u32})).status, 201);
    assert_eq!(c.call("GET", "/v1/apps/1400000201", &Value::Null).status, 200);
}
