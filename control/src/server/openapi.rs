//! The OpenAPI 3.0.3 document served at `/v1/openapi.json`, written by hand.
//!
//! It is the contract the API is fuzzed against, so it must be exact: every status and body
//! a route can return is declared, request schemas have `additionalProperties: false`, and
//! every bound equals the one `routes.rs` enforces (the constants are shared). Text fields are
//! printable ASCII (`pattern`), so a length in characters equals the length in bytes the
//! server checks. Optional request fields are `nullable` because `null` reads as absent.
//!
//! The bodies themselves are the types of [`crate::api`]; a unit test
//! (`schemas_match_the_api_types`) serializes a fully populated sample of every request and
//! response type and fails when a field is undocumented, a documented field is missing from
//! the type, a value has another JSON type than documented (or is outside a documented
//! `enum`), or a request schema's `required` list differs from what the type needs.

use serde_json::{json, Map, Value};

use relay::limits::{MAX_QUOTA, MAX_RATE, MIN_MEMBERS_PER_ROOM};

use crate::api::{
    DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT, MAX_AUDIT_TIME, MAX_BLOCK_REASON_LEN, MAX_BLOCK_TTL_SECS, MAX_CIDR_LEN,
    MAX_LABEL_LEN, MAX_NUM_ROOM, MAX_OVERLAP_SECS, MAX_PRIVILEGES, MAX_SDKAPPID, MAX_STR_ROOM_LEN, MAX_USERSIG_SECS,
    MAX_USER_IDS, MAX_USER_ID_LEN, TRTC_VERSION,
};

const ASCII_NO_SPACE: &str = "^[!-~]*$";
const ASCII: &str = "^[ -~]*$";
const REGION: &str = "^[A-Za-z0-9._-]*$";
const IPV4: &str = r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const IPV6: &str = concat!(
    "(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|",
    "([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|",
    "([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|",
    "([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|",
    ":((:[0-9a-fA-F]{1,4}){1,7}|:))"
);

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn int(min: u64, max: u64) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max})
}

fn text(min: usize, max: usize, pattern: &str) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max, "pattern": pattern})
}

fn nullable(mut v: Value) -> Value {
    if v.get("$ref").is_some() {
        v = json!({"allOf": [v]});
    }
    v["nullable"] = Value::Bool(true);
    v
}

fn object(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": props})
}

fn response_object(props: Value) -> Value {
    let required: Vec<&String> = props.as_object().map(|m| m.keys().collect()).unwrap_or_default();
    json!({"type": "object", "required": required, "properties": props})
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn ok(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}},
           "content": {"application/json": {"schema": schema}}})
}

fn no_content() -> Value {
    json!({"description": "Done.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}})
}

fn err(status: u16) -> (String, Value) {
    (status.to_string(), json!({"$ref": format!("#/components/responses/E{status}")}))
}

/// One operation. `errors` are the statuses besides the always-possible 400, 401, 413, 429.
fn op(summary: &str, id: &str, params: Value, req: Option<Value>, success: (u16, Value), errors: &[u16]) -> Value {
    let mut responses = Map::new();
    responses.insert(success.0.to_string(), success.1);
    for s in [400, 401, 413, 429].iter().chain(errors) {
        let (k, v) = err(*s);
        responses.insert(k, v);
    }
    let mut o = json!({"summary": summary, "operationId": id, "parameters": params, "responses": responses});
    if let Some(b) = req {
        o["requestBody"] = b;
    }
    o
}

fn path_param(name: &str, schema: Value, desc: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": desc, "schema": schema})
}

fn query_param(name: &str, schema: Value, desc: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": desc, "schema": schema})
}

fn sdkappid_param() -> Value {
    path_param("sdkappid", int(1, MAX_SDKAPPID), "The app's SdkAppId.")
}

fn schemas() -> Value {
    let mut quotas = object(
        &["max_rooms", "max_members_per_room"],
        json!({"max_rooms": int(1, MAX_QUOTA.into()),
               "max_members_per_room": int(MIN_MEMBERS_PER_ROOM.into(), MAX_QUOTA.into()),
               "max_sessions": int(1, MAX_QUOTA.into())}),
    );
    quotas["description"] = json!(format!(
        "Replaces the app's quotas as a whole; max_sessions is {} when absent. Answers always carry all three.",
        relay::limits::Quotas::DEFAULT.max_sessions
    ));
    let rate = int(0, MAX_RATE.into());
    let limits = object(
        &["pps_rate_per_sec", "pps_burst", "join_rate_per_sec", "join_burst", "port_min", "port_max"],
        json!({"pps_rate_per_sec": rate, "pps_burst": rate, "join_rate_per_sec": rate, "join_burst": rate,
               "port_min": int(1, 65535), "port_max": int(1, 65535)}),
    );
    let secret_view = response_object(json!({
        "created_at": {"type": "integer"}, "expires_at": {"type": "integer", "nullable": true}}));
    let app_props = json!({
        "sdkappid": {"type": "integer"}, "quotas": r("Quotas"),
        "require_private_map_key": {"type": "boolean"}, "allow_v1_joins": {"type": "boolean"},
        "secrets": {"type": "array", "items": secret_view}});
    let mut app_secret_props = app_props.clone();
    app_secret_props["secret"] = json!({"type": "string", "description": "The new secret; shown only here."});
    let cidr_pattern = format!("^({IPV4}(/(3[0-2]|[12]?[0-9]))?|{IPV6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$");
    let pmk = json!({
        "type": "object", "additionalProperties": false, "required": ["privileges"],
        "description": "Exactly one of room_id and str_room_id.",
        "properties": {
            "room_id": int(1, MAX_NUM_ROOM),
            "str_room_id": text(1, MAX_STR_ROOM_LEN, ASCII_NO_SPACE),
            "privileges": int(0, MAX_PRIVILEGES)},
        "oneOf": [{"required": ["room_id"], "not": {"required": ["str_room_id"]}},
                  {"required": ["str_room_id"], "not": {"required": ["room_id"]}}]});
    let ban_secs = json!({"type": "integer", "minimum": 0, "maximum": crate::api::MAX_BAN_SECS,
        "description": "edgerelay: also ban the users from the room for this many seconds."});
    let user_ids = json!({"type": "array", "minItems": 1, "maxItems": MAX_USER_IDS, "items": text(1, MAX_USER_ID_LEN, ASCII_NO_SPACE)});
    let t_app = int(1, MAX_SDKAPPID);
    let t_num_room = int(1, MAX_NUM_ROOM);
    let t_str_room = text(1, MAX_STR_ROOM_LEN, ASCII_NO_SPACE);
    json!({
        "Error": {"type": "object", "required": ["code", "message", "request_id"], "additionalProperties": false,
                  "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}},
        "Quotas": quotas,
        "Limits": limits,
        "App": response_object(app_props),
        "AppWithSecret": response_object(app_secret_props),
        "CreateApp": object(&["sdkappid"], json!({
            "sdkappid": int(1, MAX_SDKAPPID), "quotas": nullable(r("Quotas")),
            "require_private_map_key": {"type": "boolean", "nullable": true},
            "allow_v1_joins": {"type": "boolean", "nullable": true}})),
        "PatchApp": object(&[], json!({
            "quotas": nullable(r("Quotas")), "require_private_map_key": {"type": "boolean", "nullable": true},
            "allow_v1_joins": {"type": "boolean", "nullable": true}})),
        "Overlap": object(&["overlap_secs"], json!({"overlap_secs": int(0, MAX_OVERLAP_SECS)})),
        "MintUserSig": object(&["user_id", "expire_secs"], json!({
            "user_id": text(1, MAX_USER_ID_LEN, ASCII_NO_SPACE),
            "expire_secs": int(1, MAX_USERSIG_SECS),
            "private_map_key": nullable(pmk),
            "room_id": nullable(int(1, MAX_NUM_ROOM)),
            "str_room_id": nullable(text(1, MAX_STR_ROOM_LEN, ASCII_NO_SPACE)),
            "region": nullable(text(1, 64, REGION))})),
        "ClusterStatus": {"type": "object", "required": ["node_id", "redis_reachable", "applied", "nodes", "legs"], "properties": {
            "node_id": {"type": "string"}, "redis_reachable": {"type": "boolean"},
            "redis_error": {"type": "string"}, "applied": {"type": "string"},
            "nodes": {"type": "array", "items": response_object(json!({
                "node_id": {"type": "string"}, "region": {"type": "string"},
                "relays": {"type": "array", "items": r("RelayEndpoint")},
                "load": response_object(json!({
                    "sessions": {"type": "integer"}, "rooms": {"type": "integer"},
                    "pps": {"type": "integer"}, "cpu_percent": {"type": "number"}})),
                "relayd_reachable": {"type": "boolean"}, "applied": {"type": "string"},
                "lag_ms": {"type": "integer"}, "version": {"type": "string"},
                "heartbeat_at_ms": {"type": "integer"}}))},
            "legs": {"type": "array", "description": "This node's cascade legs, as its relayd listed them at the last refresh (about 1 s).",
                "items": r("ClusterLeg")},
            "legs_error": {"type": "string", "description": "Why the legs are unknown (relayd unreachable, or it refused `legs`)."}}},
        "ClusterLeg": {"type": "object", "required": ["sdkappid", "room", "peer", "role", "state", "streams_in", "streams_out", "age_ms"],
            "properties": {
                "sdkappid": {"type": "integer"}, "room": {"type": "string"},
                "peer": {"type": "string", "description": "The peer node's id."},
                "role": {"type": "string", "enum": ["initiator", "responder"]},
                "state": {"type": "string", "description": "`connecting` or `up`."},
                "streams_in": {"type": "integer"}, "streams_out": {"type": "integer"},
                "age_ms": {"type": "integer"}, "last_error": {"type": "string"}}},
        "NodeSelection": response_object(json!({
            "nodes": {"type": "array", "items": {"type": "string"}},
            "relays": {"type": "array", "items": r("RelayEndpoint")}})),
        "RelayEndpoint": response_object(json!({
            "endpoint": {"type": "string", "description": "UDP address (host:port)."},
            "public_key": {"type": "string", "description": "The relay's X25519 public key, base64."}})),
        "UserSig": {"type": "object", "required": ["usersig", "relays"], "properties": {
            "usersig": {"type": "string"}, "private_map_key": {"type": "string"},
            "relays": {"type": "array", "description": "Where to join, best first, with the key join v2 is encrypted to.",
                "items": r("RelayEndpoint")}}},
        "Room": response_object(json!({
            "sdkappid": {"type": "integer"}, "room": {"type": "string"},
            "members": {"type": "array", "items": response_object(json!({
                "user": {"type": "string"}, "addr": {"type": "string"},
                "send": {"type": "boolean"}, "recv": {"type": "boolean"}}))}})),
        "BlockEntry": {"type": "object", "required": ["cidr", "ttl_secs", "reason", "source"], "properties": {
            "cidr": {"type": "string"}, "ttl_secs": {"type": "integer"},
            "expires_at": {"type": "integer", "nullable": true}, "reason": {"type": "string"},
            "source": {"type": "string", "enum": ["api", "auto"],
                       "description": "api: added through the API; auto: added by the flood detector ([autoblock]), released at its TTL."}}},
        "AddBlock": object(&["cidr", "ttl_secs"], json!({
            "cidr": {"type": "string", "minLength": 1, "maxLength": MAX_CIDR_LEN, "pattern": cidr_pattern,
                     "description": "Address with optional /prefix_len; host bits are cleared."},
            "ttl_secs": int(0, MAX_BLOCK_TTL_SECS),
            "reason": nullable(text(0, MAX_BLOCK_REASON_LEN, ASCII))})),
        "Key": response_object(json!({
            "secret_id": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "operator", "auditor"]},
            "label": {"type": "string"}, "state": {"type": "string", "enum": ["active", "rotated", "revoked"]},
            "created_at": {"type": "integer"}})),
        "NewKey": response_object(json!({
            "secret_id": {"type": "string"}, "secret_key": {"type": "string"},
            "role": {"type": "string", "enum": ["admin", "operator", "auditor"]}, "label": {"type": "string"}})),
        "CreateKey": object(&["role", "label"], json!({
            "role": {"type": "string", "enum": ["admin", "operator", "auditor"]},
            "label": text(0, MAX_LABEL_LEN, ASCII)})),
        "AuditEntry": response_object(json!({
            "time": {"type": "integer"}, "who": {"type": "string"}, "what": {"type": "string"},
            "source_ip": {"type": "string"}, "outcome": {"type": "string"}})),
        "Node": response_object(json!({
            "control": response_object(json!({
                "version": {"type": "string"}, "uptime_secs": {"type": "integer"},
                "cert_sha256": {"type": "string"}, "cert_not_after": {"type": "integer"}})),
            "relayd": {"type": "object", "required": ["reachable"], "properties": {
                "reachable": {"type": "boolean"},
                "key": {"type": "object", "required": ["public_key", "fingerprint"], "properties": {
                    "public_key": {"type": "string"}, "fingerprint": {"type": "string"},
                    "previous_key": {"type": "string"}, "previous_until": {"type": "integer"},
                    "listen": {"type": "string"}}},
                "stats": {"type": "object", "description": "relayd's counters (relay::stats::Snapshot)."}}}})),
        "Health": response_object(json!({
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "checks": {"type": "array", "items": response_object(json!({
                "name": {"type": "string"}, "ok": {"type": "boolean"}, "detail": {"type": "string"}}))}})),
        "TDismissRoom": object(&["SdkAppId", "RoomId"], json!({"SdkAppId": t_app, "RoomId": t_num_room})),
        "TDismissRoomByStrRoomId": object(&["SdkAppId", "RoomId"], json!({"SdkAppId": t_app, "RoomId": t_str_room})),
        "TRemoveUser": object(&["SdkAppId", "RoomId", "UserIds"],
            json!({"SdkAppId": t_app, "RoomId": t_num_room, "UserIds": user_ids, "BanSeconds": ban_secs})),
        "TRemoveUserByStrRoomId": object(&["SdkAppId", "RoomId", "UserIds"],
            json!({"SdkAppId": t_app, "RoomId": t_str_room, "UserIds": user_ids, "BanSeconds": ban_secs})),
        "TEnvelope": {"type": "object", "required": ["Response"], "additionalProperties": false, "properties": {
            "Response": {"type": "object", "required": ["RequestId"], "additionalProperties": false, "properties": {
                "RequestId": {"type": "string"},
                "Error": {"type": "object", "required": ["Code", "Message"], "additionalProperties": false,
                          "properties": {"Code": {"type": "string"}, "Message": {"type": "string"}}}}}}},
    })
}

fn error_responses() -> Value {
    let mut m = Map::new();
    for (status, desc) in [
        (400, "InvalidParameter, MissingParameter or MalformedJson; the message names the field and bound."),
        (401, "AuthFailure.<Reason>: TC3-HMAC-SHA256 verification failed."),
        (403, "UnauthorizedOperation: the key's role does not allow this."),
        (404, "ResourceNotFound."),
        (409, "ResourceInUse: conflicts with the current state."),
        (413, "RequestSizeLimitExceeded: body larger than 64 KiB."),
        (415, "UnsupportedMediaType: the body must be application/json."),
        (429, "RequestLimitExceeded: rate limit; see Retry-After."),
        (503, "ResourceUnavailable.Relayd: relayd is not reachable."),
    ] {
        let mut headers = json!({"X-Request-Id": {"$ref": "#/components/headers/RequestId"}});
        if status == 429 {
            headers["Retry-After"] =
                json!({"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 1}});
        }
        m.insert(
            format!("E{status}"),
            json!({"description": desc, "headers": headers,
                   "content": {"application/json": {"schema": r("Error")}}}),
        );
    }
    Value::Object(m)
}

/// The document.
pub fn document() -> Value {
    let none = json!([]);
    let list = |item: &str, key: &str| response_object(json!({key: {"type": "array", "items": r(item)}}));
    let room = path_param(
        "room",
        text(1, 66, ASCII_NO_SPACE),
        "Digits for a numeric room (1..=4294967294), otherwise a string room; prefix s: to force a string room.",
    );
    let user = path_param("user", text(1, 32, ASCII_NO_SPACE), "The user id.");
    let secret_id = path_param(
        "secret_id",
        json!({"type": "string", "pattern": "^AKID[0-9A-Za-z]{32}$", "minLength": 36, "maxLength": 36}),
        "The key's SecretId.",
    );
    let ip = path_param(
        "ip",
        json!({"type": "string", "minLength": 2, "maxLength": 45, "pattern": format!("^({IPV4}|{IPV6})$")}),
        "The prefix's address.",
    );
    let prefix_len = path_param("prefix_len", int(0, 128), "The prefix length (at most 32 for IPv4).");
    let app = sdkappid_param();
    json!({
        "openapi": "3.0.3",
        "info": {"title": "edgerelay relay-control", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Management API of an edgerelay node. Every request is signed with TC3-HMAC-SHA256 (Tencent Cloud API v3); content-type and host must be signed."},
        "servers": [{"url": "/"}],
        "security": [{"tc3": []}],
        "paths": {
            "/": {"post": {
                "summary": "Tencent TRTC-style actions (DismissRoom, RemoveUser, ...by StrRoomId).",
                "operationId": "tencentAction",
                "parameters": [
                    {"name": "X-TC-Action", "in": "header", "required": true, "schema": {"type": "string",
                     "enum": ["DismissRoom", "RemoveUser", "DismissRoomByStrRoomId", "RemoveUserByStrRoomId"]}},
                    {"name": "X-TC-Version", "in": "header", "required": true,
                     "schema": {"type": "string", "enum": [TRTC_VERSION]}},
                    {"name": "X-TC-Region", "in": "header", "required": false,
                     "schema": {"type": "string", "maxLength": 64}}],
                "requestBody": body(json!({"oneOf": [r("TDismissRoom"), r("TRemoveUser"),
                    r("TDismissRoomByStrRoomId"), r("TRemoveUserByStrRoomId")]})),
                "responses": {"200": ok("Tencent envelope: success, or Response.Error for every failure (HTTP 200 as Tencent Cloud answers).", r("TEnvelope"))}}},
            "/v1/openapi.json": {"get": op("This document.", "getOpenApi", none.clone(), None,
                (200, ok("OpenAPI 3.0.3.", json!({"type": "object"}))), &[])},
            "/v1/node": {"get": op("Node status.", "getNode", none.clone(), None, (200, ok("Status.", r("Node"))), &[])},
            "/v1/node/health": {"get": op("Health checks.", "getHealth", none.clone(), None,
                (200, ok("Checks.", r("Health"))), &[])},
            "/v1/apps": {
                "get": op("List apps.", "listApps", none.clone(), None, (200, ok("Apps.", list("App", "apps"))), &[]),
                "post": op("Create an app; its secret is shown once.", "createApp", none.clone(), Some(body(r("CreateApp"))),
                    (201, ok("Created.", r("AppWithSecret"))), &[403, 409, 415])},
            "/v1/apps/{sdkappid}": {
                "get": op("Get an app.", "getApp", json!([app]), None, (200, ok("The app.", r("App"))), &[404]),
                "patch": op("Change quotas or the PrivateMapKey requirement.", "patchApp", json!([app]),
                    Some(body(r("PatchApp"))), (200, ok("The app.", r("App"))), &[403, 404, 415]),
                "delete": op("Delete an app; its sessions end.", "deleteApp", json!([app]), None,
                    (204, no_content()), &[403, 404])},
            "/v1/apps/{sdkappid}/rotate-secret": {"post": op("Rotate the app secret; the old one stays usable for overlap_secs.",
                "rotateAppSecret", json!([app]), Some(body(r("Overlap"))), (200, ok("The app and its new secret.", r("AppWithSecret"))),
                &[403, 404, 415])},
            "/v1/apps/{sdkappid}/usersig": {"post": op("Mint a UserSig (and optionally a PrivateMapKey).", "mintUserSig",
                json!([app]), Some(body(r("MintUserSig"))), (200, ok("Tokens.", r("UserSig"))), &[403, 404, 409, 415])},
            "/v1/apps/{sdkappid}/nodes": {"get": op(
                "Node selection: where a client of this room should join, best first (nodes hosting the room, then the client's region, then the least loaded). A single node answers itself.",
                "selectNodes", json!([app,
                    query_param("room_id", int(1, MAX_NUM_ROOM), "The numeric room (or str_room_id)."),
                    query_param("str_room_id", text(1, MAX_STR_ROOM_LEN, ASCII_NO_SPACE), "The string room."),
                    query_param("region", text(1, 64, REGION), "The client's region.")]),
                None, (200, ok("Nodes and their endpoints.", r("NodeSelection"))), &[404])},
            "/v1/cluster": {"get": op("The edge cluster as this node sees it: Redis reachability, every live node, and this node's cascade legs. 404 on a node without [cluster].",
                "getCluster", none.clone(), None, (200, ok("Cluster status.", r("ClusterStatus"))), &[404])},
            "/v1/apps/{sdkappid}/rooms/{room}": {"delete": op("Dismiss a room: every member's session ends.", "dismissRoom",
                json!([app, room]), None, (204, no_content()), &[403, 404, 503])},
            "/v1/apps/{sdkappid}/rooms/{room}/users/{user}": {"delete": op(
                "Remove a user from a room; with ban_secs, the user cannot rejoin it until then.", "removeUser",
                json!([app, room, user, query_param("ban_secs", int(0, crate::api::MAX_BAN_SECS),
                    "Ban the user from the room for this many seconds (0 = no ban).")]),
                None, (204, no_content()), &[403, 404, 503])},
            "/v1/rooms": {"get": op("Live rooms and members, from relayd.", "listRooms", json!([
                    query_param("sdkappid", int(1, MAX_SDKAPPID), "Only this app's rooms."),
                    query_param("limit", int(1, relay::mgmt::ROOMS_MAX_LIMIT.into()), "At most this many rooms (default 1000).")]),
                None, (200, ok("Rooms.", list("Room", "rooms"))), &[503])},
            "/v1/blocklist": {
                "get": op("Live blocklist entries.", "listBlocklist", none.clone(), None,
                    (200, ok("Entries.", list("BlockEntry", "entries"))), &[]),
                "post": op("Block a source prefix (ttl_secs 0 = until removed); replaces an entry for the same prefix.",
                    "addBlock", none.clone(), Some(body(r("AddBlock"))), (201, ok("The entry.", r("BlockEntry"))), &[403, 409, 415])},
            "/v1/blocklist/{ip}/{prefix_len}": {"delete": op("Remove a blocklist entry.", "removeBlock",
                json!([ip, prefix_len]), None, (204, no_content()), &[403, 404])},
            "/v1/limits": {
                "get": op("Per-source limits and relay port range.", "getLimits", none.clone(), None,
                    (200, ok("Limits.", r("Limits"))), &[503]),
                "put": op("Replace the limits (relayd must accept them when reachable).", "putLimits", none.clone(),
                    Some(body(r("Limits"))), (200, ok("Limits.", r("Limits"))), &[403, 415])},
            "/v1/keys": {
                "get": op("List API keys (never their secrets).", "listKeys", none.clone(), None,
                    (200, ok("Keys.", list("Key", "keys"))), &[]),
                "post": op("Create an API key (admin only); its SecretKey is shown once.", "createKey", none.clone(),
                    Some(body(r("CreateKey"))), (201, ok("The key.", r("NewKey"))), &[403, 409, 415])},
            "/v1/keys/{secret_id}": {"delete": op("Revoke a key at once (admin only).", "revokeKey", json!([secret_id]),
                None, (204, no_content()), &[403, 404, 409])},
            "/v1/keys/{secret_id}/rotate": {"post": op("Rotate a key (admin only); the old one stays usable for overlap_secs.",
                "rotateKey", json!([secret_id]), Some(body(r("Overlap"))), (201, ok("The new key.", r("NewKey"))), &[403, 404, 409, 415])},
            "/v1/audit": {"get": op("Audit log, oldest first.", "getAudit", json!([
                    query_param("since", int(0, MAX_AUDIT_TIME), "From this Unix time (inclusive)."),
                    query_param("until", int(0, MAX_AUDIT_TIME), "Up to this Unix time (inclusive)."),
                    query_param("limit", int(1, MAX_AUDIT_LIMIT), &format!("At most this many entries (default {DEFAULT_AUDIT_LIMIT})."))]),
                None, (200, ok("Entries.", list("AuditEntry", "entries"))), &[])},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text format 0.0.4).", "operationId": "getMetrics",
                "description": "relayd's counters from the monitor's latest poll (every 500 ms; omitted while relayd is unreachable, see edgerelay_relayd_up): packets and bytes, drops by layer and reason, XDP verdicts, joins by result, sessions, rooms, worker lag. Then relay-control's own: alerts firing and events, webhook deliveries, autoblock actions, relayd polls, API responses by status and authentication failures by reason.",
                "security": [{"tc3": []}, {"metricsToken": []}],
                "responses": {
                    "200": {"description": "Metrics.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}},
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "400": {"$ref": "#/components/responses/E400"}, "401": {"$ref": "#/components/responses/E401"},
                    "413": {"$ref": "#/components/responses/E413"}, "429": {"$ref": "#/components/responses/E429"}}}},
        },
        "components": {
            "securitySchemes": {
                "tc3": {"type": "apiKey", "in": "header", "name": "Authorization",
                        "description": "TC3-HMAC-SHA256 with X-TC-Timestamp; signed headers must include content-type and host."},
                "metricsToken": {"type": "http", "scheme": "bearer"}},
            "headers": {"RequestId": {"description": "Unique id of this request.", "schema": {"type": "string"}}},
            "responses": error_responses(),
            "schemas": schemas(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(s)) = m.get("$ref") {
                    out.push(s.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use crate::api::{self, BlockSource, Limits, Quotas, Role};

    /// Follows `$ref` and a single-element `allOf` (how `nullable` wraps a reference).
    fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let target = doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling {r}"));
            return resolve(doc, target);
        }
        match s.get("allOf").and_then(Value::as_array) {
            Some(all) if all.len() == 1 => resolve(doc, &all[0]),
            _ => s,
        }
    }

    /// Checks `value` against `schema` both ways: every field of the value is documented
    /// with its JSON type, and every documented property is present in the value (samples
    /// populate every optional field). An object schema without `properties` (relayd's
    /// counters) takes any object.
    fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
        let nullable = schema.get("nullable") == Some(&Value::Bool(true));
        let s = resolve(doc, schema);
        if value.is_null() {
            if !nullable && s.get("nullable") != Some(&Value::Bool(true)) {
                errs.push(format!("{at}: null but not nullable"));
            }
            return;
        }
        let ty = s.get("type").and_then(Value::as_str);
        let ok = match ty {
            Some("integer") => value.is_u64() || value.is_i64(),
            Some("number") => value.is_number(),
            Some("string") => value.is_string(),
            Some("boolean") => value.is_boolean(),
            Some("array") => value.is_array(),
            Some("object") => value.is_object(),
            other => {
                errs.push(format!("{at}: schema without a type ({other:?})"));
                return;
            }
        };
        if !ok {
            errs.push(format!("{at}: {value} is not {}", ty.unwrap_or("?")));
            return;
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                errs.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        match value {
            Value::Array(items) => {
                let item_schema = s.get("items").unwrap_or_else(|| panic!("{at}: array without items"));
                if items.is_empty() {
                    errs.push(format!("{at}: the sample's array is empty, so its items go unchecked"));
                }
                for (i, v) in items.iter().enumerate() {
                    conforms(doc, item_schema, v, &format!("{at}[{i}]"), errs);
                }
            }
            Value::Object(fields) => {
                let Some(props) = s.get("properties").and_then(Value::as_object) else { return };
                for (k, v) in fields {
                    match props.get(k) {
                        Some(p) => conforms(doc, p, v, &format!("{at}.{k}"), errs),
                        None => errs.push(format!("{at}.{k}: not in the document")),
                    }
                }
                for k in props.keys().filter(|k| !fields.contains_key(*k)) {
                    errs.push(format!("{at}.{k}: documented but not in the type"));
                }
            }
            _ => {}
        }
    }

    fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
        doc.pointer(&format!("/components/schemas/{name}")).unwrap_or_else(|| panic!("no schema {name}"))
    }

    /// A response type: `sample` must conform to the schema.
    fn answer<T: Serialize>(doc: &Value, schema: &Value, name: &str, sample: &T, errs: &mut Vec<String>) {
        let v = serde_json::to_value(sample).expect("serializes");
        conforms(doc, schema, &v, name, errs);
    }

    /// A request type: `sample` conforms, and the schema's `required` list is exactly the
    /// set of fields the type cannot do without.
    fn request<T: Serialize + DeserializeOwned>(doc: &Value, name: &str, sample: &T, errs: &mut Vec<String>) {
        let s = resolve(doc, schema(doc, name));
        answer(doc, s, name, sample, errs);
        let full = serde_json::to_value(sample).expect("serializes");
        let full = full.as_object().expect("an object");
        let required: Vec<&str> =
            s["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
        let only: serde_json::Map<String, Value> =
            full.iter().filter(|(k, _)| required.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Err(e) = serde_json::from_value::<T>(Value::Object(only.clone())) {
            errs.push(format!("{name}: the required fields alone do not parse: {e}"));
        }
        for k in &required {
            let mut less = only.clone();
            less.remove(*k);
            if serde_json::from_value::<T>(Value::Object(less)).is_ok() {
                errs.push(format!("{name}.{k}: documented as required, but the type does without it"));
            }
        }
    }

    #[test]
    fn schemas_match_the_api_types() {
        let doc = document();
        let mut errs = Vec::new();
        let errs = &mut errs;
        let quotas = Quotas { max_rooms: 10, max_members_per_room: 4, max_sessions: 40 };
        let limits = Limits {
            pps_rate_per_sec: 1000,
            pps_burst: 2000,
            join_rate_per_sec: 5,
            join_burst: 10,
            port_min: 7000,
            port_max: 7100,
        };
        let app = api::App {
            sdkappid: 1_400_000_001,
            quotas,
            require_private_map_key: true,
            allow_v1_joins: false,
            secrets: vec![
                api::SecretInfo { created_at: 1, expires_at: None },
                api::SecretInfo { created_at: 0, expires_at: Some(60) },
            ],
        };
        let with_secret = api::AppWithSecret { app: app.clone(), secret: "s".into() };
        let room = api::Room {
            sdkappid: 1,
            room: "42".into(),
            members: vec![api::Member { user: "alice".into(), addr: "192.0.2.1:5000".into(), send: true, recv: true }],
        };
        let block = api::BlockEntry {
            cidr: "198.18.5.0/24".into(),
            ttl_secs: 60,
            expires_at: Some(160),
            reason: "flood".into(),
            source: BlockSource::Auto,
        };
        let key = api::Key {
            secret_id: "AKID".into(),
            role: Role::Auditor,
            label: "l".into(),
            state: api::KeyStatus::Rotated,
            created_at: 3,
        };
        let new_key =
            api::NewKey { secret_id: "AKID".into(), secret_key: "k".into(), role: Role::Admin, label: "l".into() };
        let audit = api::AuditEntry {
            time: 1,
            who: "AKID".into(),
            what: "POST /v1/apps create_app 1".into(),
            source_ip: "127.0.0.1".parse().expect("addr"),
            outcome: "success".into(),
        };
        let node = api::Node {
            control: api::ControlStatus {
                version: "1".into(),
                uptime_secs: 2,
                cert_sha256: "sha256:AB".into(),
                cert_not_after: 3,
            },
            relayd: api::RelaydStatus {
                reachable: true,
                key: Some(relay::mgmt::KeyInfo {
                    public_key: relay::identity::RelayKey([7; 32]),
                    fingerprint: "0011223344556677".into(),
                    previous_key: Some(relay::identity::RelayKey([8; 32])),
                    previous_until: Some(1),
                    listen: Some("198.18.0.1:7000".parse().unwrap()),
                }),
                stats: Some(relay::stats::Snapshot::default()),
            },
        };
        let health = api::Health {
            status: api::HealthStatus::Degraded,
            checks: vec![api::Check { name: "store".into(), ok: false, detail: "d".into() }],
        };
        let envelope = api::TEnvelope {
            response: api::TResponse {
                error: Some(api::TError { code: "InvalidParameter".into(), message: "m".into() }),
                request_id: "r".into(),
            },
        };
        let error = api::ErrorBody { code: "c".into(), message: "m".into(), request_id: "r".into() };
        let relay =
            api::RelayEndpoint { endpoint: "198.18.0.1:7000".into(), public_key: relay::identity::RelayKey([7; 32]) };
        let cluster = api::ClusterStatus {
            node_id: "edge-1".into(),
            redis_reachable: false,
            redis_error: Some("refused".into()),
            applied: "1-0".into(),
            nodes: vec![api::ClusterNode {
                node_id: "edge-1".into(),
                region: "eu-west".into(),
                relays: vec![relay.clone()],
                load: api::NodeLoad { sessions: 1, rooms: 1, pps: 10, cpu_percent: 1.5 },
                relayd_reachable: true,
                applied: "1-0".into(),
                lag_ms: 2,
                version: "1".into(),
                heartbeat_at_ms: 3,
            }],
            legs: vec![api::ClusterLeg {
                sdkappid: 1,
                room: "42".into(),
                peer: "edge-2".into(),
                role: "initiator".into(),
                state: "connecting".into(),
                streams_in: 1,
                streams_out: 2,
                age_ms: 30,
                last_error: Some("timeout".into()),
            }],
            legs_error: Some("relayd unreachable".into()),
        };
        let selection = api::NodeSelection { nodes: vec!["edge-1".into()], relays: vec![relay] };
        for (name, v) in [
            ("Error", serde_json::to_value(&error)),
            ("Quotas", serde_json::to_value(quotas)),
            ("Limits", serde_json::to_value(limits)),
            ("App", serde_json::to_value(&app)),
            ("AppWithSecret", serde_json::to_value(&with_secret)),
            (
                "UserSig",
                serde_json::to_value(api::UserSig {
                    usersig: "u".into(),
                    private_map_key: Some("p".into()),
                    relays: vec![api::RelayEndpoint {
                        endpoint: "198.18.0.1:7000".into(),
                        public_key: relay::identity::RelayKey([7; 32]),
                    }],
                }),
            ),
            ("Room", serde_json::to_value(&room)),
            ("BlockEntry", serde_json::to_value(&block)),
            ("Key", serde_json::to_value(&key)),
            ("NewKey", serde_json::to_value(&new_key)),
            ("AuditEntry", serde_json::to_value(&audit)),
            ("Node", serde_json::to_value(&node)),
            ("Health", serde_json::to_value(&health)),
            ("TEnvelope", serde_json::to_value(&envelope)),
            ("ClusterStatus", serde_json::to_value(&cluster)),
            ("NodeSelection", serde_json::to_value(&selection)),
        ] {
            conforms(&doc, schema(&doc, name), &v.expect("serializes"), name, errs);
        }
        // The list answers, through their paths' 200 schemas.
        let ok = |path: &str, method: &str| {
            let p =
                format!("/paths/{}/{method}/responses/200/content/application~1json/schema", path.replace('/', "~1"));
            doc.pointer(&p).unwrap_or_else(|| panic!("no 200 schema at {p}")).clone()
        };
        answer(&doc, &ok("/v1/apps", "get"), "Apps", &api::Apps { apps: vec![app] }, errs);
        answer(&doc, &ok("/v1/rooms", "get"), "Rooms", &api::Rooms { rooms: vec![room] }, errs);
        answer(&doc, &ok("/v1/blocklist", "get"), "Blocklist", &api::Blocklist { entries: vec![block] }, errs);
        answer(&doc, &ok("/v1/keys", "get"), "Keys", &api::Keys { keys: vec![key] }, errs);
        answer(&doc, &ok("/v1/audit", "get"), "AuditLog", &api::AuditLog { entries: vec![audit] }, errs);
        // Requests.
        let create = api::CreateApp {
            sdkappid: 1,
            quotas: Some(quotas),
            require_private_map_key: Some(true),
            allow_v1_joins: Some(true),
        };
        request(&doc, "CreateApp", &create, errs);
        let patch =
            api::PatchApp { quotas: Some(quotas), require_private_map_key: Some(false), allow_v1_joins: Some(false) };
        request(&doc, "PatchApp", &patch, errs);
        request(&doc, "Quotas", &quotas, errs);
        request(&doc, "Limits", &limits, errs);
        request(&doc, "Overlap", &api::Overlap { overlap_secs: 60 }, errs);
        let pmk = api::PrivateMapKeyRequest { room_id: Some(42), str_room_id: Some("lobby".into()), privileges: 255 };
        let mint = api::MintUserSig {
            user_id: "alice".into(),
            expire_secs: 600,
            private_map_key: Some(pmk),
            room_id: Some(42),
            str_room_id: Some("lobby".into()),
            region: Some("eu-west".into()),
        };
        request(&doc, "MintUserSig", &mint, errs);
        let add = api::AddBlock { cidr: "198.18.5.0/24".into(), ttl_secs: 0, reason: Some("r".into()) };
        request(&doc, "AddBlock", &add, errs);
        request(&doc, "CreateKey", &api::CreateKey { role: Role::Operator, label: "l".into() }, errs);
        request(&doc, "TDismissRoom", &api::TDismissRoom { sdkappid: 1, room_id: 2 }, errs);
        let str_room = api::TDismissStrRoom { sdkappid: 1, room_id: "lobby".into() };
        request(&doc, "TDismissRoomByStrRoomId", &str_room, errs);
        let remove = api::TRemoveUser { sdkappid: 1, room_id: 2, user_ids: vec!["u".into()], ban_secs: 60 };
        request(&doc, "TRemoveUser", &remove, errs);
        let remove =
            api::TRemoveStrRoomUser { sdkappid: 1, room_id: "lobby".into(), user_ids: vec!["u".into()], ban_secs: 30 };
        request(&doc, "TRemoveUserByStrRoomId", &remove, errs);
        assert!(errs.is_empty(), "the OpenAPI document and control::api differ:\n{}", errs.join("\n"));
    }

    #[test]
    fn the_check_catches_a_difference() {
        let doc = document();
        let mut errs = Vec::new();
        let typo = json!({"max_rooms": 1, "max_members_per_rom": 2, "max_sessions": 3});
        conforms(&doc, schema(&doc, "Quotas"), &typo, "Quotas", &mut errs);
        assert!(errs.iter().any(|e| e.contains("max_members_per_rom: not in the document")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("max_members_per_room: documented but not in the type")), "{errs:?}");
        let mut errs = Vec::new();
        conforms(&doc, schema(&doc, "Key"), &json!({"secret_id": 1}), "Key", &mut errs);
        assert!(errs.iter().any(|e| e.contains("is not string")), "{errs:?}");
    }

    #[test]
    fn every_reference_resolves_and_request_schemas_are_closed() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50);
        for r in all {
            let ptr = r.trim_start_matches('#');
            assert!(doc.pointer(ptr).is_some(), "dangling {r}");
        }
        for name in
            ["CreateApp", "PatchApp", "Overlap", "MintUserSig", "AddBlock", "Limits", "CreateKey", "TRemoveUser"]
        {
            assert_eq!(doc["components"]["schemas"][name]["additionalProperties"], false, "{name}");
        }
        let ops = doc["paths"].as_object().unwrap().values().flat_map(|p| p.as_object().unwrap().values());
        for o in ops {
            assert!(o["responses"].as_object().is_some_and(|r| !r.is_empty()), "{o}");
        }
    }
}
