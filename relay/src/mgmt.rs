//! relayd's management protocol: the typed requests and answers of its local management
//! socket, and the blocking [`Client`] that `relayd ctl`, relay-control and relay-bench use.
//! The socket's server side (connections on the control thread's poll) is
//! `io::mgmt_server`; this module has no I/O but the client's, so relay-control can use it
//! without linking the data plane.
//!
//! The wire format is JSON lines on the Unix socket named by `control_socket`: a client sends
//! one [`Request`] per line and gets one [`Response`] line per request, in order, on the same
//! connection for as long as it likes (relay-control keeps one open: a full sync on connect,
//! then incremental updates).
//!
//! A response is `{"ok":true, ...}` with the one field its request answers (an [`Answer`]),
//! or `{"ok":false,"code":"...","error":"..."}` (a [`Refusal`], whose [`RefusalCode`] says
//! what kind of refusal it is, so callers branch on the code, never on the text).
//!
//! Invariants, and why:
//! - **Strict parsing**: requests are tagged by `op`, snake_case, with unknown fields refused.
//!   Responses are parsed leniently by [`Client`], so an older client reads a newer relayd
//!   (unknown fields and unknown codes are tolerated).
//! - **Bounds**: a request line is at most [`MAX_REQUEST`] bytes; [`Client`] reads at most
//!   [`MAX_RESPONSE`] bytes of an answer.
#![forbid(unsafe_code)]

use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::ids::RoomId;
pub use crate::limits::Limits;
use crate::stats::Snapshot;

/// Largest request line accepted, in bytes (without the newline).
pub const MAX_REQUEST: usize = 1 << 20;
/// Most management connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Rooms listed when a `rooms` request gives no `limit`.
pub const ROOMS_DEFAULT_LIMIT: u32 = 1000;
/// Largest `limit` a `rooms` request may give.
pub const ROOMS_MAX_LIMIT: u32 = 10_000;
/// Offenders listed when an `offenders` request gives no `limit`.
pub const OFFENDERS_DEFAULT_LIMIT: u32 = 256;
/// Largest response line [`Client`] reads (a full room or blocklist listing fits).
pub const MAX_RESPONSE: usize = 256 << 20;

/// A management request: `{"op": "<name>", ...fields}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Counters.
    Stats {},
    /// End every session of a room (TRTC `DismissRoom`).
    DismissRoom {
        /// The app.
        sdkappid: u64,
        /// The room: digits for a numeric room, `s:NAME` or other text for a string room.
        room: String,
    },
    /// End one user's session in a room (TRTC `RemoveUser`).
    RemoveUser {
        /// The app.
        sdkappid: u64,
        /// The room, as in `DismissRoom`.
        room: String,
        /// The user id.
        user: String,
        /// Also ban the user from the room for this many seconds: the same UserSig (or any
        /// other) cannot rejoin it before then. 0 = no ban.
        #[serde(default, skip_serializing_if = "is_zero")]
        ban_secs: u64,
    },
    /// The relay's static public key(s) (answer: `key`).
    Key {},
    /// Make a fresh static key current; the old one stays valid for `overlap_secs` (answer:
    /// `key`). relayd saves both to its key file before answering.
    RotateKey {
        /// How long joins to the old key are still accepted.
        overlap_secs: u64,
    },
    /// Replace the app set (relay-control's push). Sessions of apps that remain keep
    /// running (a secret rotation keeps live sessions); sessions of removed apps end.
    SetApps {
        /// Every app relayd should serve.
        apps: Vec<AppSpec>,
    },
    /// Drop a source prefix in the kernel (XDP backend) for `ttl_secs` (0 = until removed).
    Block {
        /// The address (bits past the prefix are ignored).
        ip: IpAddr,
        /// The prefix length: at most 32 for IPv4, 128 for IPv6.
        prefix_len: u32,
        /// Lifetime in seconds.
        ttl_secs: u64,
    },
    /// Remove a blocklist entry (XDP backend). Answers `removed`: 1, or 0 if there was none.
    Unblock {
        /// The address, as given to `Block`.
        ip: IpAddr,
        /// The prefix length, as given to `Block`.
        prefix_len: u32,
    },
    /// The live blocklist entries (answer: `blocks`; empty on the socket backend).
    Blocklist {},
    /// Rooms and their members, sorted by app and room (answer: `rooms`).
    Rooms {
        /// Only this app's rooms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdkappid: Option<u64>,
        /// At most this many rooms: default [`ROOMS_DEFAULT_LIMIT`], at most [`ROOMS_MAX_LIMIT`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The per-source limits and relay port range (answer: `limits`).
    GetLimits {},
    /// Replace the per-source limits and port range in the kernel at run time (XDP backend).
    /// The range must contain relayd's listen port.
    SetLimits(Limits),
    /// Sources the kernel dropped most packets from, highest first (answer: `offenders`;
    /// empty on the socket backend).
    Offenders {
        /// At most this many: default [`OFFENDERS_DEFAULT_LIMIT`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Re-read `relayd.toml` and apply what can change live, as SIGHUP does (answer:
    /// `reloaded`). An invalid file changes nothing and is refused `invalid` with the
    /// reason.
    Reload {},
    /// The cluster's other relays, from its node registry (relay-control pushes it): the only
    /// nodes this relay opens cascade legs to or accepts them from. Replaces the set; legs of
    /// a node no longer in it close (answer: `removed`, the legs closed).
    SetPeers {
        /// This node's own id in the registry (named in the legs it opens).
        node: String,
        /// Every other node, with its relay endpoint and key.
        peers: Vec<PeerSpec>,
    },
    /// Open the cascade leg of a room to a peer, unless the room already has one to it
    /// (answer: `done`). The leg forms in the background and is retried until it is up or the
    /// room has no local member left; `legs` shows it. Refused `not_found` when the room has
    /// no local member or the peer is not in `set_peers`.
    OpenLeg {
        /// The app.
        sdkappid: u64,
        /// The room, as in `dismiss_room`.
        room: String,
        /// The peer's node id, as in `set_peers`.
        peer: String,
    },
    /// The cascade legs (answer: `legs`).
    Legs {},
    /// Rooms that gained their first local member or lost their last one since `after`
    /// (answer: `room_events`): how relay-control learns, within one poll, which rooms this
    /// node hosts.
    RoomEvents {
        /// The `next` of the previous answer; 0 for everything still remembered.
        after: u64,
    },
}

/// A peer relay in a [`Request::SetPeers`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Its node id.
    pub node: String,
    /// Its relayd's UDP endpoint (where legs are sent and come from).
    pub endpoint: std::net::SocketAddr,
    /// Its relay public key (base64): the static key its legs authenticate with.
    pub public_key: crate::identity::RelayKey,
}

/// A cascade leg in a `legs` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegInfo {
    /// The app.
    pub sdkappid: u64,
    /// The room, as in [`RoomInfo`].
    pub room: String,
    /// The peer's node id.
    pub peer: String,
    /// Which side opened it: `initiator` (this relay) or `responder`.
    pub role: String,
    /// `connecting` (handshake sent, no answer yet) or `up`.
    pub state: String,
    /// Streams the peer announced and this relay accepted (its local members' SSRCs).
    pub streams_in: u32,
    /// Streams this relay announces to the peer (its own local members' SSRCs).
    pub streams_out: u32,
    /// Milliseconds since the leg was opened (or last reopened).
    pub age_ms: u64,
    /// The last handshake refusal or failure, while connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A room that gained its first local member (`local`) or lost its last one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomEvent {
    /// The app.
    pub sdkappid: u64,
    /// The room, as in [`RoomInfo`].
    pub room: String,
    /// It has local members now (true), or none any more (false).
    pub local: bool,
}

/// A `room_events` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomEvents {
    /// The cursor for the next request.
    pub next: u64,
    /// Events between `after` and `next` were forgotten (the caller is too far behind, or
    /// relayd restarted): list `rooms` in full, then follow from `next`.
    pub resync: bool,
    /// The events, oldest first.
    pub events: Vec<RoomEvent>,
}

/// What a reload did, in a `reloaded` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// The config keys whose new values are now in force (`app`, `timeouts`, `join`,
    /// `log_level`, `control_users`, `xdp.<rate>`). Empty when the file did not change them.
    pub applied: Vec<String>,
    /// Keys that changed in the file but take effect only when relayd restarts (`listen`,
    /// `workers`, `backend`, `xdp.iface`, ...). They keep their running values.
    pub needs_restart: Vec<String>,
    /// Changed keys that were not applied, each with why (e.g. apps that relay-control
    /// pushes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
    /// Sessions ended because their app is no longer configured.
    pub sessions_ended: u64,
}

/// One app in a [`Request::SetApps`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The SdkAppId.
    pub sdkappid: u64,
    /// UserSig secrets, newest first (two during a rotation's overlap).
    pub secrets: Vec<String>,
    /// Refuse joins without a PrivateMapKey.
    #[serde(default)]
    pub require_private_map_key: bool,
    /// Accept v1 (cleartext) joins during a migration (default: refused).
    #[serde(default)]
    pub allow_v1_joins: bool,
    /// Allowed SRTP profiles (default: all).
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
    /// Quotas.
    #[serde(default)]
    pub quotas: crate::limits::Quotas,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The relay's static keys, in a `key` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyInfo {
    /// The key clients should join to (base64).
    pub public_key: crate::identity::RelayKey,
    /// Its fingerprint (first 8 bytes of SHA-256, hex), for logs and eyes.
    pub fingerprint: String,
    /// During a rotation's overlap: the previous key, still accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<crate::identity::RelayKey>,
    /// When the previous key stops being accepted (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<u64>,
    /// relayd's bound UDP address (what clients send joins and media to, unless a NAT or
    /// a wildcard bind means they use another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
}

impl KeyInfo {
    /// The key info of an identity.
    pub fn of(id: &crate::identity::Identity) -> Self {
        let public_key = id.current.public();
        Self {
            public_key,
            fingerprint: public_key.fingerprint(),
            previous_key: id.previous.as_ref().map(|(k, _)| k.public()),
            previous_until: id.previous.as_ref().map(|(_, u)| *u),
            listen: None,
        }
    }
}

/// A room in a `rooms` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomInfo {
    /// The app.
    pub sdkappid: u64,
    /// The room in the form `dismiss_room` takes: digits for a numeric room; a string room
    /// by its name, prefixed with `s:` only when the name alone would read as a number or
    /// starts with `s:`.
    pub room: String,
    /// The members, by user id.
    pub members: Vec<MemberInfo>,
}

/// A member in a [`RoomInfo`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    /// The user id.
    pub user: String,
    /// The client's address as relayd sees it (`SocketAddr` text).
    pub addr: String,
    /// The member may publish (holds a send privilege: audio or video).
    pub send: bool,
    /// The member may receive (holds a receive privilege: audio or video).
    pub recv: bool,
}

/// A blocklist entry in a `blocklist` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockInfo {
    /// The prefix's address (bits past the prefix are zero).
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix_len: u32,
    /// Seconds until the entry expires (rounded up); `None` = until removed.
    pub expires_in_secs: Option<u64>,
}

/// A source in an `offenders` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offender {
    /// The source address.
    pub ip: IpAddr,
    /// Packets from it the kernel dropped (any drop reason), since it entered the table.
    pub dropped_packets: u64,
}

/// What a successful request answers: one variant per kind of answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done; nothing to report (`block`).
    Done,
    /// Sessions ended (`dismiss_room`, `remove_user`, `set_apps`), or blocklist entries
    /// removed (`unblock`: 1 or 0).
    Removed(u64),
    /// Counters (`stats`).
    Stats(Box<Snapshot>),
    /// Rooms (`rooms`).
    Rooms(Vec<RoomInfo>),
    /// Blocklist entries (`blocklist`).
    Blocks(Vec<BlockInfo>),
    /// The limits in force (`get_limits`, `set_limits`).
    Limits(Limits),
    /// Offenders (`offenders`).
    Offenders(Vec<Offender>),
    /// The relay's keys (`key`, `rotate_key`).
    Key(KeyInfo),
    /// What a reload applied (`reload`).
    Reloaded(ReloadReport),
    /// Cascade legs (`legs`).
    Legs(Vec<LegInfo>),
    /// Room changes (`room_events`).
    RoomEvents(RoomEvents),
}

/// What kind of refusal a [`Refusal`] is. Snake-case on the wire; a code this version does
/// not know reads as [`RefusalCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The line is not a request this relayd knows (bad JSON, unknown op or field).
    BadRequest,
    /// A field's value is refused (a room or user id, a limit, a prefix, an app set).
    Invalid,
    /// What the request names does not exist (an app).
    NotFound,
    /// The request needs the XDP backend.
    NeedsXdp,
    /// The peer's uid may not manage relayd (`SO_PEERCRED`).
    PermissionDenied,
    /// Every connection slot is taken.
    TooManyConnections,
    /// The request line is longer than [`MAX_REQUEST`].
    TooLarge,
    /// The kernel or a map refused the change.
    Failed,
    /// A code from a newer relayd.
    #[serde(other)]
    Other,
}

/// A refused request: its code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The kind of refusal.
    pub code: RefusalCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A management response: an answer or a refusal. On the wire it is one JSON object (see
/// the module doc).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub enum Response {
    /// The request succeeded.
    Ok(Answer),
    /// The request was refused; nothing changed.
    Refused(Refusal),
}

impl Response {
    /// A refusal.
    pub fn refused(code: RefusalCode, message: impl Into<String>) -> Self {
        Self::Refused(Refusal::new(code, message))
    }

    /// The answer, or the refusal as an error.
    pub fn into_result(self) -> Result<Answer, Refusal> {
        match self {
            Self::Ok(a) => Ok(a),
            Self::Refused(r) => Err(r),
        }
    }

    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok(_))
    }

    /// The refusal's message, if refused.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Refused(r) => Some(&r.message),
            Self::Ok(_) => None,
        }
    }

    /// The refusal's code, if refused.
    pub fn code(&self) -> Option<RefusalCode> {
        match self {
            Self::Refused(r) => Some(r.code),
            Self::Ok(_) => None,
        }
    }

    /// The counters of an [`Answer::Stats`].
    pub fn stats(&self) -> Option<&Snapshot> {
        match self {
            Self::Ok(Answer::Stats(s)) => Some(s),
            _ => None,
        }
    }

    /// The rooms of an [`Answer::Rooms`].
    pub fn rooms(&self) -> Option<&[RoomInfo]> {
        match self {
            Self::Ok(Answer::Rooms(r)) => Some(r),
            _ => None,
        }
    }

    /// The entries of an [`Answer::Blocks`].
    pub fn blocks(&self) -> Option<&[BlockInfo]> {
        match self {
            Self::Ok(Answer::Blocks(b)) => Some(b),
            _ => None,
        }
    }

    /// The limits of an [`Answer::Limits`].
    pub fn limits(&self) -> Option<Limits> {
        match self {
            Self::Ok(Answer::Limits(l)) => Some(*l),
            _ => None,
        }
    }

    /// The sources of an [`Answer::Offenders`].
    pub fn offenders(&self) -> Option<&[Offender]> {
        match self {
            Self::Ok(Answer::Offenders(o)) => Some(o),
            _ => None,
        }
    }

    /// The keys of an [`Answer::Key`].
    pub fn key(&self) -> Option<&KeyInfo> {
        match self {
            Self::Ok(Answer::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The count of an [`Answer::Removed`].
    pub fn removed(&self) -> Option<u64> {
        match self {
            Self::Ok(Answer::Removed(n)) => Some(*n),
            _ => None,
        }
    }
}

impl From<Result<Answer, Refusal>> for Response {
    fn from(r: Result<Answer, Refusal>) -> Self {
        r.map_or_else(Self::Refused, Self::Ok)
    }
}

/// The wire form of a [`Response`]: `ok`, then either `code` and `error`, or the one field
/// the answer has.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Wire {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<RefusalCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stats: Option<Box<Snapshot>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rooms: Option<Vec<RoomInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blocks: Option<Vec<BlockInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offenders: Option<Vec<Offender>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<KeyInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reloaded: Option<ReloadReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    legs: Option<Vec<LegInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room_events: Option<RoomEvents>,
}

impl From<Response> for Wire {
    fn from(r: Response) -> Self {
        let ok = Self { ok: true, ..Self::default() };
        match r {
            Response::Refused(Refusal { code, message }) => {
                Self { code: Some(code), error: Some(message), ..Self::default() }
            }
            Response::Ok(Answer::Done) => ok,
            Response::Ok(Answer::Removed(n)) => Self { removed: Some(n), ..ok },
            Response::Ok(Answer::Stats(s)) => Self { stats: Some(s), ..ok },
            Response::Ok(Answer::Rooms(r)) => Self { rooms: Some(r), ..ok },
            Response::Ok(Answer::Blocks(b)) => Self { blocks: Some(b), ..ok },
            Response::Ok(Answer::Limits(l)) => Self { limits: Some(l), ..ok },
            Response::Ok(Answer::Offenders(o)) => Self { offenders: Some(o), ..ok },
            Response::Ok(Answer::Key(k)) => Self { key: Some(k), ..ok },
            Response::Ok(Answer::Reloaded(r)) => Self { reloaded: Some(r), ..ok },
            Response::Ok(Answer::Legs(l)) => Self { legs: Some(l), ..ok },
            Response::Ok(Answer::RoomEvents(e)) => Self { room_events: Some(e), ..ok },
        }
    }
}

impl From<Wire> for Response {
    fn from(w: Wire) -> Self {
        if !w.ok {
            return Self::refused(w.code.unwrap_or(RefusalCode::Other), w.error.unwrap_or_default());
        }
        Self::Ok(if let Some(n) = w.removed {
            Answer::Removed(n)
        } else if let Some(s) = w.stats {
            Answer::Stats(s)
        } else if let Some(r) = w.rooms {
            Answer::Rooms(r)
        } else if let Some(b) = w.blocks {
            Answer::Blocks(b)
        } else if let Some(l) = w.limits {
            Answer::Limits(l)
        } else if let Some(o) = w.offenders {
            Answer::Offenders(o)
        } else if let Some(k) = w.key {
            Answer::Key(k)
        } else if let Some(r) = w.reloaded {
            Answer::Reloaded(r)
        } else if let Some(l) = w.legs {
            Answer::Legs(l)
        } else if let Some(e) = w.room_events {
            Answer::RoomEvents(e)
        } else {
            Answer::Done
        })
    }
}

/// Why a [`Client`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed, timed out, or relayd answered something unreadable.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// relayd refused the request.
    #[error("relayd refused: {0}")]
    Refused(Refusal),
    /// relayd answered with a different kind of answer than the request asks for.
    #[error("relayd answered {got} to a {op} request")]
    Unexpected {
        /// The request's op.
        op: &'static str,
        /// What came back.
        got: &'static str,
    },
}

impl Answer {
    fn kind(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Removed(_) => "removed",
            Self::Stats(_) => "stats",
            Self::Rooms(_) => "rooms",
            Self::Blocks(_) => "blocks",
            Self::Limits(_) => "limits",
            Self::Offenders(_) => "offenders",
            Self::Key(_) => "key",
            Self::Reloaded(_) => "reloaded",
            Self::Legs(_) => "legs",
            Self::RoomEvents(_) => "room_events",
        }
    }
}

/// A blocking client on one persistent connection: requests are answered in order.
pub struct Client {
    reader: io::BufReader<UnixStream>,
    writer: UnixStream,
    line: Vec<u8>,
}

impl Client {
    /// Connects; `timeout` bounds every later read and write.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Self> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let writer = s.try_clone()?;
        Ok(Self { reader: io::BufReader::new(s), writer, line: Vec::new() })
    }

    /// Sends one request and reads its answer. An error leaves the connection unusable
    /// (a late answer could be read as the next one's): reconnect.
    pub fn request(&mut self, req: &Request) -> io::Result<Response> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, req).map_err(io::Error::other)?;
        self.line.push(b'\n');
        let sent = self.writer.write_all(&self.line);
        self.line.clear();
        let read = (&mut self.reader).take(MAX_RESPONSE as u64 + 1).read_until(b'\n', &mut self.line);
        // A refused connection (permission, too many clients) is closed after one error
        // line, maybe before the request went out: that line is the answer.
        let n = match (sent, read) {
            (_, Ok(n)) if n > 0 => n,
            (Err(e), _) => return Err(e),
            (Ok(()), r) => r?,
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "relayd closed the management connection"));
        }
        if self.line.last() != Some(&b'\n') {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated or oversized answer from relayd"));
        }
        serde_json::from_slice(&self.line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl Client {
    /// Sends `req`; its answer, or the refusal as an error.
    pub fn call(&mut self, req: &Request) -> Result<Answer, ClientError> {
        self.request(req)?.into_result().map_err(ClientError::Refused)
    }

    /// `legs`.
    pub fn legs(&mut self) -> Result<Vec<LegInfo>, ClientError> {
        match self.call(&Request::Legs {})? {
            Answer::Legs(l) => Ok(l),
            a => Err(ClientError::Unexpected { op: "legs", got: a.kind() }),
        }
    }

    /// `room_events` after the cursor `after`.
    pub fn room_events(&mut self, after: u64) -> Result<RoomEvents, ClientError> {
        match self.call(&Request::RoomEvents { after })? {
            Answer::RoomEvents(e) => Ok(e),
            a => Err(ClientError::Unexpected { op: "room_events", got: a.kind() }),
        }
    }

    /// `stats`.
    pub fn stats(&mut self) -> Result<Snapshot, ClientError> {
        match self.call(&Request::Stats {})? {
            Answer::Stats(s) => Ok(*s),
            a => Err(ClientError::Unexpected { op: "stats", got: a.kind() }),
        }
    }

    /// `rooms`.
    pub fn rooms(&mut self, sdkappid: Option<u64>, limit: Option<u32>) -> Result<Vec<RoomInfo>, ClientError> {
        match self.call(&Request::Rooms { sdkappid, limit })? {
            Answer::Rooms(r) => Ok(r),
            a => Err(ClientError::Unexpected { op: "rooms", got: a.kind() }),
        }
    }

    /// A request answered with `removed` (`dismiss_room`, `remove_user`, `set_apps`,
    /// `unblock`): the count.
    pub fn removed(&mut self, req: &Request) -> Result<u64, ClientError> {
        match self.call(req)? {
            Answer::Removed(n) => Ok(n),
            a => Err(ClientError::Unexpected { op: req.op(), got: a.kind() }),
        }
    }

    /// `blocklist`.
    pub fn blocklist(&mut self) -> Result<Vec<BlockInfo>, ClientError> {
        match self.call(&Request::Blocklist {})? {
            Answer::Blocks(b) => Ok(b),
            a => Err(ClientError::Unexpected { op: "blocklist", got: a.kind() }),
        }
    }

    /// `get_limits`, or `set_limits` when `set` is given: the limits in force.
    pub fn limits(&mut self, set: Option<Limits>) -> Result<Limits, ClientError> {
        let req = set.map_or(Request::GetLimits {}, Request::SetLimits);
        match self.call(&req)? {
            Answer::Limits(l) => Ok(l),
            a => Err(ClientError::Unexpected { op: req.op(), got: a.kind() }),
        }
    }

    /// `key`, or `rotate_key` when `rotate_overlap_secs` is given: the relay's keys.
    pub fn key(&mut self, rotate_overlap_secs: Option<u64>) -> Result<KeyInfo, ClientError> {
        let req = rotate_overlap_secs.map_or(Request::Key {}, |overlap_secs| Request::RotateKey { overlap_secs });
        match self.call(&req)? {
            Answer::Key(k) => Ok(k),
            a => Err(ClientError::Unexpected { op: req.op(), got: a.kind() }),
        }
    }

    /// `reload`: what the reload applied; an invalid file is a [`ClientError::Refused`]
    /// with code [`RefusalCode::Invalid`].
    pub fn reload(&mut self) -> Result<ReloadReport, ClientError> {
        match self.call(&Request::Reload {})? {
            Answer::Reloaded(r) => Ok(r),
            a => Err(ClientError::Unexpected { op: "reload", got: a.kind() }),
        }
    }

    /// `offenders`.
    pub fn offenders(&mut self, limit: Option<u32>) -> Result<Vec<Offender>, ClientError> {
        match self.call(&Request::Offenders { limit })? {
            Answer::Offenders(o) => Ok(o),
            a => Err(ClientError::Unexpected { op: "offenders", got: a.kind() }),
        }
    }
}

impl Request {
    /// The request's `op` on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Stats {} => "stats",
            Self::DismissRoom { .. } => "dismiss_room",
            Self::RemoveUser { .. } => "remove_user",
            Self::SetApps { .. } => "set_apps",
            Self::Block { .. } => "block",
            Self::Unblock { .. } => "unblock",
            Self::Blocklist {} => "blocklist",
            Self::Rooms { .. } => "rooms",
            Self::GetLimits {} => "get_limits",
            Self::SetLimits(_) => "set_limits",
            Self::Offenders { .. } => "offenders",
            Self::Key {} => "key",
            Self::RotateKey { .. } => "rotate_key",
            Self::Reload {} => "reload",
            Self::SetPeers { .. } => "set_peers",
            Self::OpenLeg { .. } => "open_leg",
            Self::Legs {} => "legs",
            Self::RoomEvents { .. } => "room_events",
        }
    }
}

/// Reads a counters snapshot from a running relayd's management socket.
pub fn read_stats(path: &Path) -> Result<Snapshot, ClientError> {
    Client::connect(path, Duration::from_secs(5))?.stats()
}

/// Sends one request to a running relayd on a new connection and reads its answer.
pub fn request(path: &Path, req: &Request) -> io::Result<Response> {
    Client::connect(path, Duration::from_secs(5))?.request(req)
}

/// The text form of a room in [`RoomInfo::room`]: what [`RoomId::parse`] (and so
/// `dismiss_room`) reads back as the same room.
pub fn room_text(room: &RoomId) -> String {
    match room {
        RoomId::Num(n) => n.to_string(),
        RoomId::Str(s) if s.starts_with("s:") || s.parse::<u64>().is_ok() => format!("s:{s}"),
        RoomId::Str(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoomId;

    fn round_trip(r: &Request, json: &str) {
        assert_eq!(serde_json::to_string(r).unwrap(), json);
        assert_eq!(&serde_json::from_str::<Request>(json).unwrap(), r);
    }

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        round_trip(
            &Request::RemoveUser { sdkappid: 1, room: "s:a".into(), user: "u".into(), ban_secs: 0 },
            r#"{"op":"remove_user","sdkappid":1,"room":"s:a","user":"u"}"#,
        );
        round_trip(&Request::Rooms { sdkappid: None, limit: None }, r#"{"op":"rooms"}"#);
        round_trip(&Request::Rooms { sdkappid: Some(7), limit: Some(3) }, r#"{"op":"rooms","sdkappid":7,"limit":3}"#);
        round_trip(
            &Request::Unblock { ip: "198.18.0.0".parse().unwrap(), prefix_len: 15 },
            r#"{"op":"unblock","ip":"198.18.0.0","prefix_len":15}"#,
        );
        round_trip(&Request::Blocklist {}, r#"{"op":"blocklist"}"#);
        round_trip(&Request::GetLimits {}, r#"{"op":"get_limits"}"#);
        round_trip(&Request::Offenders { limit: None }, r#"{"op":"offenders"}"#);
        round_trip(&Request::Legs {}, r#"{"op":"legs"}"#);
        round_trip(&Request::RoomEvents { after: 5 }, r#"{"op":"room_events","after":5}"#);
        round_trip(
            &Request::OpenLeg { sdkappid: 1, room: "42".into(), peer: "n2".into() },
            r#"{"op":"open_leg","sdkappid":1,"room":"42","peer":"n2"}"#,
        );
        let key = crate::identity::RelayKey([7; 32]);
        let peers = vec![PeerSpec { node: "n2".into(), endpoint: "198.18.0.2:7000".parse().unwrap(), public_key: key }];
        let set = Request::SetPeers { node: "n1".into(), peers };
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), set);
        assert!(serde_json::from_str::<Request>(r#"{"op":"set_peers","node":"n1","peers":[{"node":"n2","endpoint":"198.18.0.2:7000","public_key":"x","extra":1}]}"#).is_err());
        round_trip(&Request::Offenders { limit: Some(10) }, r#"{"op":"offenders","limit":10}"#);
        round_trip(&Request::Reload {}, r#"{"op":"reload"}"#);
        let limits = Limits {
            pps_rate_per_sec: 100,
            pps_burst: 200,
            join_rate_per_sec: 5,
            join_burst: 10,
            port_min: 7000,
            port_max: 7001,
        };
        round_trip(
            &Request::SetLimits(limits),
            r#"{"op":"set_limits","pps_rate_per_sec":100,"pps_burst":200,"join_rate_per_sec":5,"join_burst":10,"port_min":7000,"port_max":7001}"#,
        );
        for bad in [
            r#"{"op":"stats","x":1}"#,
            r#"{"op":"reboot"}"#,
            r#"{"op":"rooms","sdkappid":1,"extra":true}"#,
            r#"{"op":"blocklist","all":true}"#,
            r#"{"op":"unblock","ip":"198.18.0.1"}"#,
            r#"{"op":"unblock","ip":"not an ip","prefix_len":32}"#,
            // set_limits: every field required, none unknown, each within its type.
            r#"{"op":"set_limits","pps_rate_per_sec":1,"pps_burst":1,"join_rate_per_sec":1,"join_burst":1,"port_min":1}"#,
            r#"{"op":"set_limits","pps_rate_per_sec":1,"pps_burst":1,"join_rate_per_sec":1,"join_burst":1,"port_min":1,"port_max":2,"x":0}"#,
            r#"{"op":"set_limits","pps_rate_per_sec":1,"pps_burst":1,"join_rate_per_sec":1,"join_burst":1,"port_min":1,"port_max":70000}"#,
            r#"{"op":"rooms","limit":-1}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn responses_round_trip_and_omit_what_is_absent() {
        assert_eq!(serde_json::to_string(&Response::Ok(Answer::Done)).unwrap(), r#"{"ok":true}"#);
        let rooms = Response::Ok(Answer::Rooms(vec![RoomInfo {
            sdkappid: 1_400_000_001,
            room: "lobby".into(),
            members: vec![MemberInfo { user: "u".into(), addr: "198.18.0.2:4000".into(), send: true, recv: false }],
        }]));
        let blocks = Response::Ok(Answer::Blocks(vec![BlockInfo {
            ip: "2001:2::".parse().unwrap(),
            prefix_len: 48,
            expires_in_secs: None,
        }]));
        let limits = Response::Ok(Answer::Limits(Limits {
            pps_rate_per_sec: 1,
            pps_burst: 2,
            join_rate_per_sec: 3,
            join_burst: 4,
            port_min: 5,
            port_max: 6,
        }));
        let offenders =
            Response::Ok(Answer::Offenders(vec![Offender { ip: "198.19.0.2".parse().unwrap(), dropped_packets: 9 }]));
        let mut all = String::new();
        let reloaded = Response::Ok(Answer::Reloaded(ReloadReport {
            applied: vec!["app".into()],
            needs_restart: vec!["listen".into()],
            not_applied: Vec::new(),
            sessions_ended: 0,
        }));
        for r in [&rooms, &blocks, &limits, &offenders, &reloaded, &Response::Ok(Answer::Removed(3))] {
            let j = serde_json::to_string(r).unwrap();
            assert_eq!(&serde_json::from_str::<Response>(&j).unwrap(), r);
            all.push_str(&j);
        }
        let j = all;
        assert!(j.contains(r#""members":[{"user":"u","addr":"198.18.0.2:4000","send":true,"recv":false}]"#), "{j}");
        assert!(j.contains(r#""blocks":[{"ip":"2001:2::","prefix_len":48,"expires_in_secs":null}]"#), "{j}");
        assert!(j.contains(r#""offenders":[{"ip":"198.19.0.2","dropped_packets":9}]"#), "{j}");
        assert!(j.contains(r#"{"ok":true,"removed":3}"#), "{j}");
        assert!(j.contains(r#""reloaded":{"applied":["app"],"needs_restart":["listen"],"sessions_ended":0}"#), "{j}");
        // A refusal carries its code beside the message.
        let refused = Response::refused(RefusalCode::NeedsXdp, "blocking needs the XDP backend");
        let rj = serde_json::to_string(&refused).unwrap();
        assert_eq!(rj, r#"{"ok":false,"code":"needs_xdp","error":"blocking needs the XDP backend"}"#);
        assert_eq!(serde_json::from_str::<Response>(&rj).unwrap(), refused);
        // A newer relayd's extra fields (and codes) do not break an older client, nor does an
        // older relayd's refusal without a code.
        let newer: Response = serde_json::from_str(r#"{"ok":false,"error":"x","future":[1]}"#).unwrap();
        assert_eq!(newer, Response::refused(RefusalCode::Other, "x"));
        let newer: Response = serde_json::from_str(r#"{"ok":false,"code":"warp_core","error":"x"}"#).unwrap();
        assert_eq!(newer, Response::refused(RefusalCode::Other, "x"));
    }

    #[test]
    fn room_text_reads_back_as_the_same_room() {
        for (room, text) in [
            (RoomId::Num(42), "42"),
            (RoomId::Str("lobby".into()), "lobby"),
            (RoomId::Str("42".into()), "s:42"),
            (RoomId::Str("s:x".into()), "s:s:x"),
        ] {
            assert_eq!(room_text(&room), text);
            assert_eq!(RoomId::parse(text).unwrap(), room);
        }
    }
}
