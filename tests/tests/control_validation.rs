//! Strict validation of relay-control's API: malformed bodies, queries and paths across the
//! routes, each answered 400/413/415 (or, on the TRTC action route, Tencent's error
//! envelope) with a message naming the problem, and never a 5xx.
//!
//! Requests are correctly signed (control::client), so what is tested is the validation
//! behind authentication, not the authentication itself.

use control::client::{Call, Method, Response, JSON};
use edgerelay_tests::control_plane::RelayControl;
use serde_json::{json, Value};

const APP: &str = "1400000001";

/// One malformed request and what the answer must say.
struct Case {
    name: &'static str,
    call: Call,
    /// Accepted statuses.
    status: &'static [u16],
    /// Each must occur (case-insensitively) in the error message.
    mentions: &'static [&'static str],
}

fn body(method: Method, path: &[&str], v: Value) -> Call {
    Call::json(method, path, &v)
}

fn raw(method: Method, path: &[&str], bytes: &[u8], content_type: &str) -> Call {
    Call::new(method, path).raw_body(bytes.to_vec(), content_type)
}

fn usersig(v: Value) -> Call {
    body(Method::Post, &["v1", "apps", APP, "usersig"], v)
}

fn pmk(p: Value) -> Call {
    usersig(json!({"user_id": "alice", "expire_secs": 600, "private_map_key": p}))
}

fn limits(overrides: Value) -> Call {
    let mut l = json!({"pps_rate_per_sec": 1000, "pps_burst": 2000, "join_rate_per_sec": 10, "join_burst": 20,
                       "port_min": 7000, "port_max": 7100});
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            l.as_object_mut().unwrap().remove(k);
        } else {
            l[k] = v.clone();
        }
    }
    body(Method::Put, &["v1", "limits"], l)
}

fn cases() -> Vec<Case> {
    const BAD: &[u16] = &[400];
    let apps = ["v1", "apps"];
    let app = ["v1", "apps", APP];
    let big = format!("{{\"sdkappid\": 1400000009, \"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let c = |name, call, status, mentions| Case { name, call, status, mentions };
    vec![
        c("unknown field", body(Method::Post, &apps, json!({"sdkappid": 1400000002, "bogus": 1})), BAD, &["bogus"]),
        c("wrong type", body(Method::Post, &apps, json!({"sdkappid": "many"})), BAD, &["sdkappid"]),
        c("sdkappid zero", body(Method::Post, &apps, json!({"sdkappid": 0})), BAD, &["sdkappid"]),
        c("sdkappid above u32", body(Method::Post, &apps, json!({"sdkappid": 4_294_967_296u64})), BAD, &["sdkappid"]),
        c("sdkappid negative", body(Method::Post, &apps, json!({"sdkappid": -1})), BAD, &["sdkappid"]),
        c("missing sdkappid", body(Method::Post, &apps, json!({})), BAD, &["sdkappid"]),
        c("bad JSON", raw(Method::Post, &apps, b"{\"sdkappid\": ", JSON), BAD, &["json"]),
        c("wrong content-type", raw(Method::Post, &apps, b"sdkappid=1400000002", "text/plain"), &[415], &["json"]),
        c("body over 64 KiB", raw(Method::Post, &apps, big.as_bytes(), JSON), &[413], &["64 KiB"]),
        c(
            "quota wrong type",
            body(Method::Patch, &app, json!({"quotas": {"max_rooms": "lots", "max_members_per_room": 5}})),
            BAD,
            &["max_rooms"],
        ),
        c("patch unknown field", body(Method::Patch, &app, json!({"secret": "x"})), BAD, &["secret"]),
        c(
            "overlap too long",
            body(Method::Post, &["v1", "apps", APP, "rotate-secret"], json!({"overlap_secs": 604_801})),
            BAD,
            &["overlap_secs"],
        ),
        c("empty user_id", usersig(json!({"user_id": "", "expire_secs": 600})), BAD, &["user_id"]),
        c("user_id too long", usersig(json!({"user_id": "u".repeat(65), "expire_secs": 600})), BAD, &["user_id"]),
        c("expire_secs zero", usersig(json!({"user_id": "alice", "expire_secs": 0})), BAD, &["expire_secs"]),
        c(
            "expire_secs too long",
            usersig(json!({"user_id": "alice", "expire_secs": 31_536_001})),
            BAD,
            &["expire_secs"],
        ),
        c(
            "both room_id and str_room_id",
            pmk(json!({"room_id": 42, "str_room_id": "lobby", "privileges": 255})),
            BAD,
            &["room_id", "str_room_id"],
        ),
        c("neither room", pmk(json!({"privileges": 255})), BAD, &["room_id"]),
        c("privileges above 255", pmk(json!({"room_id": 42, "privileges": 256})), BAD, &["privileges"]),
        c("room_id above u32", pmk(json!({"room_id": 4_294_967_296u64, "privileges": 1})), BAD, &["room_id"]),
        c("str_room_id too long", pmk(json!({"str_room_id": "r".repeat(65), "privileges": 1})), BAD, &["str_room_id"]),
        c(
            "bad CIDR prefix",
            body(Method::Post, &["v1", "blocklist"], json!({"cidr": "198.18.5.0/33", "ttl_secs": 0})),
            BAD,
            &["prefix_len", "33"],
        ),
        c(
            "CIDR not an address",
            body(Method::Post, &["v1", "blocklist"], json!({"cidr": "relay.example/24", "ttl_secs": 0})),
            BAD,
            &["cidr"],
        ),
        c(
            "ttl missing",
            body(Method::Post, &["v1", "blocklist"], json!({"cidr": "198.18.5.0/24"})),
            BAD,
            &["ttl_secs"],
        ),
        c(
            "ttl too long",
            body(Method::Post, &["v1", "blocklist"], json!({"cidr": "198.18.5.0/24", "ttl_secs": 2_592_001})),
            BAD,
            &["ttl_secs"],
        ),
        c(
            "reason too long",
            body(
                Method::Post,
                &["v1", "blocklist"],
                json!({"cidr": "198.18.5.0/24", "ttl_secs": 0, "reason": "r".repeat(129)}),
            ),
            BAD,
            &["reason"],
        ),
        c("limits field missing", limits(json!({"join_burst": null})), BAD, &["join_burst"]),
        c("limits port_min > port_max", limits(json!({"port_min": 7200, "port_max": 7100})), BAD, &["port_min"]),
        c("limits port above u16", limits(json!({"port_max": 70000})), BAD, &["port_max"]),
        c("limits negative", limits(json!({"pps_rate_per_sec": -5})), BAD, &["pps_rate_per_sec"]),
        c("unknown role", body(Method::Post, &["v1", "keys"], json!({"role": "root", "label": "x"})), BAD, &["role"]),
        c(
            "label too long",
            body(Method::Post, &["v1", "keys"], json!({"role": "auditor", "label": "l".repeat(10_000)})),
            BAD,
            &["label"],
        ),
        c("sdkappid path not a number", Call::new(Method::Get, &["v1", "apps", "abc"]), BAD, &["sdkappid"]),
        c("sdkappid path zero", Call::new(Method::Get, &["v1", "apps", "0"]), BAD, &["sdkappid"]),
        c("unblock bad address", Call::new(Method::Delete, &["v1", "blocklist", "nope", "24"]), BAD, &["ip"]),
        c(
            "unblock bad prefix",
            Call::new(Method::Delete, &["v1", "blocklist", "198.18.5.0", "99"]),
            BAD,
            &["prefix_len"],
        ),
        c(
            "room name too long",
            Call::new(Method::Delete, &["v1", "apps", APP, "rooms", &"r".repeat(65)]),
            BAD,
            &["room"],
        ),
        c("audit limit not a number", Call::new(Method::Get, &["v1", "audit"]).query("limit", "abc"), BAD, &["limit"]),
        c("audit unknown query", Call::new(Method::Get, &["v1", "audit"]).query("bogus", "1"), BAD, &["bogus"]),
        c(
            "rooms sdkappid not a number",
            Call::new(Method::Get, &["v1", "rooms"]).query("sdkappid", "x"),
            BAD,
            &["sdkappid"],
        ),
    ]
}

/// Checks one answer; `Err` says what is wrong with it.
fn check_error(resp: &Response, name: &str, status: &[u16], mentions: &[&str]) -> Result<(), String> {
    let text = resp.text();
    if resp.status >= 500 {
        return Err(format!("{name}: server error {}: {text}", resp.status));
    }
    if !status.contains(&resp.status) {
        return Err(format!("{name}: status {} (want {status:?}): {text}", resp.status));
    }
    let header_id = resp.request_id.clone().ok_or_else(|| format!("{name}: no X-Request-Id header"))?;
    let e = resp.api_error().ok_or_else(|| format!("{name}: not an error"))?;
    if e.code.starts_with("HTTP ") {
        return Err(format!("{name}: error body is not {{code, message, request_id}}: {text}"));
    }
    if e.request_id != header_id {
        return Err(format!("{name}: request_id {} differs from X-Request-Id {header_id}", e.request_id));
    }
    let message = e.message.to_lowercase();
    for m in mentions {
        if !message.contains(&m.to_lowercase()) {
            return Err(format!("{name}: message {:?} does not name {m:?}", e.message));
        }
    }
    Ok(())
}

/// High enough that the table is never rate limited.
const NO_RATE_LIMIT: &str =
    "[rate_limits]\nper_ip_per_sec = 10000\nper_ip_burst = 10000\nper_key_per_sec = 10000\nper_key_burst = 10000\n";

#[test]
fn malformed_requests_are_refused_with_a_clear_message() {
    let rc = RelayControl::start(NO_RATE_LIMIT);
    let client = rc.client();
    let created =
        client.send(&Call::json(Method::Post, &["v1", "apps"], &json!({"sdkappid": 1_400_000_001u64}))).unwrap();
    assert_eq!(created.status, 201, "{}", created.text());

    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &cases {
        let resp = client.send(&case.call).unwrap();
        if let Err(e) = check_error(&resp, case.name, case.status, case.mentions) {
            failures.push(e);
        }
    }
    // The app is untouched by the refused PATCH and rotation.
    let app: Value = client.send(&Call::new(Method::Get, &["v1", "apps", APP])).unwrap().json().unwrap();
    assert_eq!(app["secrets"].as_array().map(Vec::len), Some(1), "{app}");
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The TRTC action route answers parameter errors the Tencent way: HTTP 200 and an
/// `{"Response":{"Error":{Code, Message},"RequestId"}}` envelope.
#[test]
fn trtc_actions_refuse_bad_parameters_in_the_envelope() {
    let rc = RelayControl::start(NO_RATE_LIMIT);
    let client = rc.client();
    let eleven: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("empty UserIds", "RemoveUser", json!({"SdkAppId": 1400000001, "RoomId": 42, "UserIds": []}), "UserIds"),
        ("11 UserIds", "RemoveUser", json!({"SdkAppId": 1400000001, "RoomId": 42, "UserIds": eleven}), "UserIds"),
        ("RoomId string for numeric", "DismissRoom", json!({"SdkAppId": 1400000001, "RoomId": "x"}), "RoomId"),
        ("unknown field", "DismissRoom", json!({"SdkAppId": 1400000001, "RoomId": 1, "Extra": 1}), "Extra"),
        ("SdkAppId missing", "DismissRoomByStrRoomId", json!({"RoomId": "lobby"}), "SdkAppId"),
        ("unknown action", "DescribeEverything", json!({}), "DescribeEverything"),
    ];
    let mut failures = Vec::new();
    for (name, action, body, mention) in cases {
        let call =
            Call::json(Method::Post, &[""], &body).header("X-TC-Action", action).header("X-TC-Version", "2019-07-22");
        let resp = client.send(&call).unwrap();
        let v: Value = resp.json().unwrap_or(Value::Null);
        let err = v.pointer("/Response/Error/Message").and_then(Value::as_str).unwrap_or("");
        let ok = resp.status == 200
            && v.pointer("/Response/RequestId").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
            && v.pointer("/Response/Error/Code")
                .and_then(Value::as_str)
                .is_some_and(|c| c.starts_with("Invalid") || c.starts_with("Missing") || c.starts_with("Unsupported"))
            && err.contains(mention);
        if !ok {
            failures.push(format!("{name}: {} {}", resp.status, resp.text()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// SERVER DEVIATION (reported to the lead, not fixed here): a JSON array is accepted where
/// an object is required. serde deserializes a struct from a sequence of its fields in
/// order, so `POST /v1/apps` with `[1400000002]` creates app 1400000002 (201). The contract
/// says bodies are strict JSON objects; the fix is in the daemon's body extractor (refuse
/// anything but an object before deserializing).
#[test]
fn array_bodies_are_refused() {
    let rc = RelayControl::start(NO_RATE_LIMIT);
    let client = rc.client();
    let resp = client.send(&body(Method::Post, &["v1", "apps"], json!([1400000002]))).unwrap();
    check_error(&resp, "array body", &[400], &["object"]).unwrap();
    let resp = client.send(&body(Method::Put, &["v1", "limits"], json!([1000, 2000, 10, 20, 7000, 7100]))).unwrap();
    check_error(&resp, "array limits", &[400], &["object"]).unwrap();
}
