//! The HTTPS API's one set of types: every request and response body of relay-control, and
//! the bounds the server enforces on them. The server (`server::routes`) parses requests
//! into and renders answers from these types, [`crate::client`] and `relayctl` build
//! requests and read answers through them, and the OpenAPI document (`server::openapi`) is
//! checked against them by a unit test, so the contract is written once.
//!
//! Invariants, and why:
//! - **Requests are strict**: `deny_unknown_fields`, so a typo in a field is a 400 naming it
//!   rather than a silently ignored setting. Optional request fields are `Option`, and
//!   `null` reads as absent (as the OpenAPI document's `nullable` says).
//! - **Answers are lenient**: no `deny_unknown_fields`, so an older client reads a newer
//!   server's answer.
//! - **Numbers a client sends are `u64`** where the server range-checks them by hand, so the
//!   400 names the field and its bound (`sdkappid must be in 1..=4294967295, got 0`) rather
//!   than serde's integer-width message. Quotas and limits are relay's own [`Quotas`] and
//!   [`Limits`], checked with their `check()`, so what the API accepts relayd accepts.
//! - **Text a client sends stays text** where the server normalizes it: a blocklist `cidr`
//!   may have host bits set (they are cleared), so it is parsed by the server with
//!   [`relay::prefix::Prefix::parse_truncating`], not by serde.
//!
//! The quota object carries `max_sessions` (relayd enforces it; its default, 10000, applies
//! when a request leaves it out and to apps stored before it existed). A quota object in a
//! request replaces the app's quotas as a whole.

use std::net::IpAddr;

pub use relay::limits::{Limits, Quotas};
use relay::stats::Snapshot;
use serde::{Deserialize, Serialize};

pub use crate::keys::Role;
pub use crate::store::BlockSource;

/// Largest SdkAppId.
pub const MAX_SDKAPPID: u64 = u32::MAX as u64;
/// Longest rotation overlap, seconds (7 days).
pub const MAX_OVERLAP_SECS: u64 = 604_800;
/// Longest ban a removal may give, seconds (30 days).
pub const MAX_BAN_SECS: u64 = 30 * 86_400;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Longest UserSig lifetime, seconds (365 days).
pub const MAX_USERSIG_SECS: u64 = 31_536_000;
/// Longest user id a UserSig is minted for: relayd refuses longer ones at join.
pub const MAX_USER_ID_LEN: usize = relay::ids::UserId::MAX_LEN;
/// Longest string room id (the `str_room_id` of a PrivateMapKey, a TRTC `RoomId`).
pub const MAX_STR_ROOM_LEN: usize = relay::ids::RoomId::MAX_STR_LEN;
/// Largest numeric room id.
pub const MAX_NUM_ROOM: u64 = u32::MAX as u64 - 1;
/// Largest PrivateMapKey privilege bitmap.
pub const MAX_PRIVILEGES: u64 = 255;
/// Longest blocklist TTL, seconds (30 days).
pub const MAX_BLOCK_TTL_SECS: u64 = 2_592_000;
/// Longest `cidr` text of a blocklist entry.
pub const MAX_CIDR_LEN: usize = 49;
/// Longest reason of a blocklist entry, in bytes.
pub const MAX_BLOCK_REASON_LEN: usize = crate::store::MAX_BLOCK_REASON_LEN;
/// Longest API key label, in bytes.
pub const MAX_LABEL_LEN: usize = crate::keys::MAX_LABEL_LEN;
/// Most user ids in one Tencent `RemoveUser`.
pub const MAX_USER_IDS: usize = 10;
/// Most audit entries in one answer.
pub const MAX_AUDIT_LIMIT: u64 = 1000;
/// Audit entries in one answer when the query gives no `limit`.
pub const DEFAULT_AUDIT_LIMIT: u64 = 100;
/// Largest `since`/`until` accepted (10 digits of Unix seconds).
pub const MAX_AUDIT_TIME: u64 = 9_999_999_999;
/// The Tencent API version `POST /` accepts.
pub const TRTC_VERSION: &str = "2019-07-22";

/// Every non-2xx REST answer: `{code, message, request_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error code, e.g. `InvalidParameter` or `AuthFailure.SignatureFailure`.
    pub code: String,
    /// What went wrong; names the field and the bound for parameter errors.
    pub message: String,
    /// The request's id, also sent as `X-Request-Id`.
    pub request_id: String,
}

// ---------------------------------------------------------------------------------------
// Apps

/// `POST /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    /// The SdkAppId, 1..=[`MAX_SDKAPPID`].
    pub sdkappid: u64,
    /// The app's quotas; [`Quotas::DEFAULT`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// Refuse joins without a PrivateMapKey; `false` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_private_map_key: Option<bool>,
    /// Also accept cleartext v1 joins while clients migrate; `false` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_v1_joins: Option<bool>,
}

/// `PATCH /v1/apps/{sdkappid}`: each field given replaces the app's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchApp {
    /// New quotas (all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// New PrivateMapKey requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_private_map_key: Option<bool>,
    /// Open or close the v1 migration window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_v1_joins: Option<bool>,
}

/// `POST /v1/apps/{sdkappid}/rotate-secret` and `POST /v1/keys/{secret_id}/rotate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlap {
    /// Seconds the old secret stays usable, 0..=[`MAX_OVERLAP_SECS`].
    pub overlap_secs: u64,
}

/// One secret of an app, without the secret itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// When it was created, Unix seconds.
    pub created_at: u64,
    /// When it stops being accepted; `None` for the current secret.
    pub expires_at: Option<u64>,
}

/// An app as the API shows it: secrets are listed by their times only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// The SdkAppId.
    pub sdkappid: u32,
    /// Its quotas.
    pub quotas: Quotas,
    /// Whether relayd refuses joins without a PrivateMapKey.
    pub require_private_map_key: bool,
    /// Whether relayd also accepts cleartext v1 joins.
    pub allow_v1_joins: bool,
    /// Its usable secrets, newest first.
    pub secrets: Vec<SecretInfo>,
}

/// An app and its new secret (creation, rotation): the only answers that show a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppWithSecret {
    /// The app.
    #[serde(flatten)]
    pub app: App,
    /// The new secret; shown only here.
    pub secret: String,
}

/// `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Apps {
    /// Every app, by SdkAppId.
    pub apps: Vec<App>,
}

/// The PrivateMapKey part of a [`MintUserSig`]: exactly one of `room_id` and `str_room_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateMapKeyRequest {
    /// A numeric room, 1..=[`MAX_NUM_ROOM`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<u64>,
    /// A string room, 1 to [`MAX_STR_ROOM_LEN`] printable ASCII characters without spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub str_room_id: Option<String>,
    /// The privilege bitmap, 0..=[`MAX_PRIVILEGES`].
    pub privileges: u64,
}

/// `POST /v1/apps/{sdkappid}/usersig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintUserSig {
    /// The user, 1 to [`MAX_USER_ID_LEN`] printable ASCII characters without spaces.
    pub user_id: String,
    /// Lifetime, 1..=[`MAX_USERSIG_SECS`] seconds.
    pub expire_secs: u64,
    /// Also mint a PrivateMapKey for this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_map_key: Option<PrivateMapKeyRequest>,
    /// In a cluster: the numeric room the client will join, so that `relays` lists the
    /// nodes hosting it first (default: the PrivateMapKey's room, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<u64>,
    /// In a cluster: the string room the client will join (instead of `room_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub str_room_id: Option<String>,
    /// In a cluster: the client's region, so that `relays` lists nodes there next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The answer to [`MintUserSig`]: what an app back end hands its client, as TRTC hands
/// out server lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSig {
    /// The UserSig.
    pub usersig: String,
    /// The PrivateMapKey, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_map_key: Option<String>,
    /// Where to join, in order of preference, each with the key its join v2 is encrypted
    /// to. Empty when this node's relayd cannot be asked, or has no usable endpoint (set
    /// `public_endpoint`).
    pub relays: Vec<RelayEndpoint>,
}

// ---------------------------------------------------------------------------------------
// Cluster

/// A node's load, as published in its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Live sessions on its relayd.
    pub sessions: u64,
    /// Live rooms on its relayd.
    pub rooms: u64,
    /// Packets per second its relayd received, over the last heartbeat interval.
    pub pps: u64,
    /// Busy share of the host's CPUs over the last heartbeat interval, 0–100.
    pub cpu_percent: f64,
}

/// One node of the cluster registry (`GET /v1/cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its id (`[cluster] node_id`).
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Where clients join it, with its relay key. Empty while its relayd is unreachable.
    pub relays: Vec<RelayEndpoint>,
    /// Its load.
    pub load: NodeLoad,
    /// Whether its relayd answered its last poll.
    pub relayd_reachable: bool,
    /// The last change-log entry its working copy applied.
    pub applied: String,
    /// How late it applied its latest change-log entries, in milliseconds.
    pub lag_ms: u64,
    /// Its relay-control version.
    pub version: String,
    /// When it last beat (Unix milliseconds).
    pub heartbeat_at_ms: u64,
}

/// `GET /v1/cluster`: the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: String,
    /// Whether this node reaches Redis.
    pub redis_reachable: bool,
    /// The last Redis error this node saw, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_error: Option<String>,
    /// The last change-log entry this node applied.
    pub applied: String,
    /// Live nodes in the registry, by id (empty while Redis is unreachable).
    pub nodes: Vec<ClusterNode>,
    /// This node's cascade legs, as its relayd listed them at the leg agent's last refresh
    /// (about a second old at most).
    #[serde(default)]
    pub legs: Vec<ClusterLeg>,
    /// Why relayd's legs are unknown (relayd unreachable, or it refused `legs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legs_error: Option<String>,
}

/// A cascade leg of this node, in [`ClusterStatus`]: a relay-to-relay session for one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLeg {
    /// The app.
    pub sdkappid: u64,
    /// The room, as relayd names it (digits, or a string room's name).
    pub room: String,
    /// The peer node's id.
    pub peer: String,
    /// `initiator` (this node opened it: its id is the lower) or `responder`.
    pub role: String,
    /// `connecting` or `up`.
    pub state: String,
    /// Streams the peer announced and this node accepted.
    pub streams_in: u32,
    /// Streams this node announces to the peer.
    pub streams_out: u32,
    /// Milliseconds since it was opened (or last reopened).
    pub age_ms: u64,
    /// The last handshake failure, while connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl From<relay::mgmt::LegInfo> for ClusterLeg {
    fn from(l: relay::mgmt::LegInfo) -> Self {
        ClusterLeg {
            sdkappid: l.sdkappid,
            room: l.room,
            peer: l.peer,
            role: l.role,
            state: l.state,
            streams_in: l.streams_in,
            streams_out: l.streams_out,
            age_ms: l.age_ms,
            last_error: l.last_error,
        }
    }
}

/// The answer to node selection (`GET /v1/apps/{sdkappid}/nodes`): where a client of this
/// room should join, best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSelection {
    /// The nodes, best first: those already hosting the room, then those in the client's
    /// region, then the least loaded.
    pub nodes: Vec<String>,
    /// Their endpoints and keys, in the same order (a node may have several endpoints).
    pub relays: Vec<RelayEndpoint>,
}

/// A relay a client may join, in a [`UserSig`] answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEndpoint {
    /// The UDP address for joins and media.
    pub endpoint: String,
    /// The relay's static public key (base64), for `--relay-key` / `ClientConfig::relay_key`.
    pub public_key: relay::identity::RelayKey,
}

// ---------------------------------------------------------------------------------------
// Rooms

/// A member of a [`Room`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user id.
    pub user: String,
    /// The client's address as relayd sees it.
    pub addr: String,
    /// The member may publish.
    pub send: bool,
    /// The member may receive.
    pub recv: bool,
}

/// A live room on relayd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// The app.
    pub sdkappid: u64,
    /// The room, in the form the dismiss route takes (digits, or a string room's name).
    pub room: String,
    /// Its members.
    pub members: Vec<Member>,
}

impl From<&relay::mgmt::RoomInfo> for Room {
    fn from(r: &relay::mgmt::RoomInfo) -> Self {
        let members = r
            .members
            .iter()
            .map(|m| Member { user: m.user.clone(), addr: m.addr.clone(), send: m.send, recv: m.recv })
            .collect();
        Room { sdkappid: r.sdkappid, room: r.room.clone(), members }
    }
}

/// `GET /v1/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rooms {
    /// Rooms, by app and room.
    pub rooms: Vec<Room>,
}

// ---------------------------------------------------------------------------------------
// Blocklist

/// `POST /v1/blocklist`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBlock {
    /// `ADDRESS[/PREFIX_LEN]`, at most [`MAX_CIDR_LEN`] characters; host bits are cleared.
    pub cidr: String,
    /// Lifetime, 0..=[`MAX_BLOCK_TTL_SECS`] seconds; 0 = until removed.
    pub ttl_secs: u64,
    /// Why; at most [`MAX_BLOCK_REASON_LEN`] printable ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A live blocklist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// The prefix, `ADDRESS/PREFIX_LEN` with host bits zero.
    pub cidr: String,
    /// Seconds left (0 for an entry without expiry).
    pub ttl_secs: u64,
    /// When it expires, Unix seconds; `None` = until removed.
    pub expires_at: Option<u64>,
    /// Why it was added.
    pub reason: String,
    /// Who added it.
    pub source: BlockSource,
}

/// `GET /v1/blocklist`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocklist {
    /// Live entries, by prefix text.
    pub entries: Vec<BlockEntry>,
}

// ---------------------------------------------------------------------------------------
// API keys

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The key's role.
    pub role: Role,
    /// A label, at most [`MAX_LABEL_LEN`] printable ASCII characters.
    pub label: String,
}

/// The state of an API key, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Replaced by a successor; usable until its overlap ends.
    Rotated,
    /// Refused.
    Revoked,
}

/// An API key, without its SecretKey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The SecretId.
    pub secret_id: String,
    /// Its role.
    pub role: Role,
    /// Its label.
    pub label: String,
    /// Its state.
    pub state: KeyStatus,
    /// When it was created, Unix seconds.
    pub created_at: u64,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    /// Every key, by SecretId.
    pub keys: Vec<Key>,
}

/// A new API key (creation, rotation): the only answers that show a SecretKey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    /// The SecretId.
    pub secret_id: String,
    /// The SecretKey; shown only here.
    pub secret_key: String,
    /// Its role.
    pub role: Role,
    /// Its label.
    pub label: String,
}

// ---------------------------------------------------------------------------------------
// Audit

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, Unix seconds.
    pub time: u64,
    /// Who: a SecretId, `bootstrap`, `autoblock` or `anonymous`.
    pub who: String,
    /// What: the call and its target.
    pub what: String,
    /// From where.
    pub source_ip: IpAddr,
    /// `success`, or `failure: <reason>`.
    pub outcome: String,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    /// Entries, oldest first.
    pub entries: Vec<AuditEntry>,
}

// ---------------------------------------------------------------------------------------
// Node

/// The control daemon's part of [`Node`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// relay-control's version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// The served certificate's SHA-256 fingerprint (`sha256:AB:...`).
    pub cert_sha256: String,
    /// When the served certificate expires, Unix seconds.
    pub cert_not_after: u64,
}

/// relayd's part of [`Node`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaydStatus {
    /// Whether the push link is connected and synced and relayd answered `stats`.
    pub reachable: bool,
    /// relayd's static keys and listen address, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<relay::mgmt::KeyInfo>,
    /// relayd's counters, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Snapshot>,
}

/// `GET /v1/node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The control daemon.
    pub control: ControlStatus,
    /// relayd.
    pub relayd: RelaydStatus,
}

/// The overall verdict of [`Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every check passed.
    Ok,
    /// At least one check failed.
    Degraded,
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `store`, `relayd` or `certificate`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// A human-readable detail.
    pub detail: String,
}

/// `GET /v1/node/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// Every check.
    pub checks: Vec<Check>,
}

// ---------------------------------------------------------------------------------------
// Tencent Cloud API style actions (POST /)

/// `DismissRoom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TDismissRoom {
    /// The app.
    #[serde(rename = "SdkAppId")]
    pub sdkappid: u64,
    /// The numeric room.
    #[serde(rename = "RoomId")]
    pub room_id: u64,
}

/// `DismissRoomByStrRoomId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TDismissStrRoom {
    /// The app.
    #[serde(rename = "SdkAppId")]
    pub sdkappid: u64,
    /// The string room.
    #[serde(rename = "RoomId")]
    pub room_id: String,
}

/// `RemoveUser`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TRemoveUser {
    /// The app.
    #[serde(rename = "SdkAppId")]
    pub sdkappid: u64,
    /// The numeric room.
    #[serde(rename = "RoomId")]
    pub room_id: u64,
    /// 1 to [`MAX_USER_IDS`] users.
    #[serde(rename = "UserIds")]
    pub user_ids: Vec<String>,
    /// Also ban the users from the room for this many seconds (0 = no ban; at most
    /// [`MAX_BAN_SECS`]). An edgerelay extension: Tencent's action has no such field.
    #[serde(rename = "BanSeconds", default, skip_serializing_if = "is_zero")]
    pub ban_secs: u64,
}

/// `RemoveUserByStrRoomId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TRemoveStrRoomUser {
    /// The app.
    #[serde(rename = "SdkAppId")]
    pub sdkappid: u64,
    /// The string room.
    #[serde(rename = "RoomId")]
    pub room_id: String,
    /// 1 to [`MAX_USER_IDS`] users.
    #[serde(rename = "UserIds")]
    pub user_ids: Vec<String>,
    /// Also ban the users from the room for this many seconds (0 = no ban; at most
    /// [`MAX_BAN_SECS`]). An edgerelay extension: Tencent's action has no such field.
    #[serde(rename = "BanSeconds", default, skip_serializing_if = "is_zero")]
    pub ban_secs: u64,
}

/// The error inside a [`TResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TError {
    /// The error code.
    #[serde(rename = "Code")]
    pub code: String,
    /// What went wrong.
    #[serde(rename = "Message")]
    pub message: String,
}

/// The `Response` object of a [`TEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TResponse {
    /// Set when the action failed.
    #[serde(rename = "Error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TError>,
    /// The request's id.
    #[serde(rename = "RequestId")]
    pub request_id: String,
}

/// Every answer of `POST /` (HTTP 200, success or not), as Tencent Cloud answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TEnvelope {
    /// The response.
    #[serde(rename = "Response")]
    pub response: TResponse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_without_max_sessions_read_as_the_default() {
        let c: CreateApp = serde_json::from_str(r#"{"sdkappid":5,"quotas":{"max_rooms":3,"max_members_per_room":4}}"#)
            .expect("parses");
        assert_eq!(c.quotas.map(|q| q.max_sessions), Some(Quotas::DEFAULT.max_sessions));
        let p: PatchApp = serde_json::from_str(r#"{"quotas":null,"require_private_map_key":null}"#).expect("nulls");
        assert_eq!(p, PatchApp::default());
    }

    #[test]
    fn wire_names_are_the_documented_ones() {
        let app = App {
            sdkappid: 7,
            quotas: Quotas::DEFAULT,
            require_private_map_key: false,
            allow_v1_joins: false,
            secrets: vec![SecretInfo { created_at: 1, expires_at: None }],
        };
        let v = serde_json::to_value(AppWithSecret { app, secret: "s".into() }).expect("serializes");
        assert_eq!(v["secret"], "s");
        assert_eq!(v["quotas"]["max_rooms"], 1000);
        assert!(v["secrets"][0]["expires_at"].is_null(), "an absent expiry is null, not left out: {v}");
        let t = TEnvelope { response: TResponse { error: None, request_id: "r".into() } };
        assert_eq!(serde_json::to_string(&t).expect("serializes"), r#"{"Response":{"RequestId":"r"}}"#);
        assert_eq!(serde_json::to_value(KeyStatus::Rotated).expect("serializes"), "rotated");
        assert_eq!(serde_json::to_value(Role::Auditor).expect("serializes"), "auditor");
        assert_eq!(serde_json::to_value(BlockSource::Auto).expect("serializes"), "auto");
        assert_eq!(serde_json::to_value(HealthStatus::Degraded).expect("serializes"), "degraded");
    }
}
