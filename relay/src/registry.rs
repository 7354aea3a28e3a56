//! The authoritative session and room registry: joins, leaves, keepalives, expiry, quotas.
//!
//! Sans-IO: every call takes `now` and returns what to send and which [`Update`]s the data
//! plane must apply. `relayd` runs it on its one control thread; the workers hold replicas
//! ([`crate::engine::Engine`]) fed by the updates, so the per-packet path never touches
//! this structure or a lock.
//!
//! Invariants:
//! - a source address holds at most one session, and a user at most one session per room
//!   (a re-join replaces the old one: that is how NAT rebinding is handled);
//! - an SSRC is declared at most once in a room's lifetime. Downlink SRTP reuses the
//!   sender's packet index under the receiver's key, so a second sender (or a restarted
//!   one) with the same SSRC could make the relay encrypt two payloads under one
//!   (key, SSRC, index). Refusing re-declared SSRCs rules that out without per-receiver
//!   state on the fast path. The history dies with the room, which is safe: every
//!   receiver key dies with its session, so none outlives the room. One user may use up at
//!   most [`MAX_USER_SSRCS`] of a room's history;
//! - a join may take over a source address only from the same user of the same app, so a
//!   spoofed join cannot end someone else's session;
//! - a join is refused before any HMAC when the refusal needs none (unknown app, wrong
//!   app, missing privilege bits, quota, SSRC conflict); the UserSig HMAC runs once, and
//!   the PrivateMapKey HMAC only after it succeeds.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{App, CookieMode, JoinSettings, Timeouts, Validated};
use crate::guard::{CookieJar, Replay, ReplayCache, ReplyKind, ReplyLimiter, REPLAY_CAPACITY};
use crate::handshake::{KeyPair, SessionSecrets};
use crate::identity::{Identity, RelayKey, StaticKey};
use crate::ids::{RoomId, RoomKey, SdkAppId, SessionId, UserId};
use crate::messages::{Counts, Outbox};
use crate::noise::{Responder, DH_LEN};
use crate::proto::v2::{self, AnswerPayload};
use crate::proto::{self, DeclaredSsrc, ErrorCode, Join, JoinError, JoinOk, MsgType, StreamKind, Ticket, MAX_SSRCS};
use crate::srtp::{Profile, SessionKeys};
use crate::usersig::{self, PrivilegeMap};

mod legs;
mod messaging;

pub use legs::Peer;

/// Most SSRCs a room remembers (see the module invariants).
pub const MAX_ROOM_SSRCS: usize = 4096;
/// Most SSRCs one user may use up in one room's history, so that no single member can
/// exhaust [`MAX_ROOM_SSRCS`] by re-joining.
pub const MAX_USER_SSRCS: u32 = 64;

/// The time, as the registry needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (timeouts).
    pub mono_ms: u64,
    /// Unix seconds (credential expiry).
    pub unix_secs: u64,
}

/// What the data plane knows about a session. Immutable except for `last_seen_ms`, which
/// the worker that receives the session's media stores into.
#[derive(Debug)]
pub struct SessionInfo {
    /// The id.
    pub id: SessionId,
    /// The room.
    pub room: RoomKey,
    /// The user.
    pub user: UserId,
    /// Where media comes from and goes to.
    pub addr: SocketAddr,
    /// Granted privileges.
    pub privileges: PrivilegeMap,
    /// Declared streams. For a cascade leg: the streams its peer announced (the peer's local
    /// members' SSRCs), which change while the leg is up ([`Update::Streams`]).
    pub ssrcs: Vec<DeclaredSsrc>,
    /// A cascade leg to another relay, not a client: what arrives on it goes to local members
    /// only (split horizon), and its address, the peer relay's, is shared by the peer's legs
    /// of other rooms, so its streams are found by (address, SSRC).
    pub leg: bool,
    /// Client → relay SRTP keys.
    pub uplink: SessionKeys,
    /// Relay → client SRTP keys.
    pub downlink: SessionKeys,
    /// Last accepted media packet or keepalive, in `Now::mono_ms`. On a cache line of its
    /// own: the receiving worker stores to it per packet while other workers read the keys
    /// and address above.
    pub last_seen_ms: CacheLine<AtomicU64>,
}

/// A value alone on its 64-byte cache line (no false sharing with its neighbours).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct CacheLine<T>(pub T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl SessionInfo {
    /// Whether this member may receive a stream of `kind`.
    pub fn may_receive(&self, kind: StreamKind) -> bool {
        match kind {
            StreamKind::Audio => self.privileges.contains(PrivilegeMap::RECV_AUDIO),
            StreamKind::Video => self.privileges.contains(PrivilegeMap::RECV_VIDEO),
            StreamKind::Rtcp => true,
        }
    }

    /// Whether this member may receive in-room messages: it holds any receive privilege.
    pub fn may_receive_messages(&self) -> bool {
        [PrivilegeMap::RECV_AUDIO, PrivilegeMap::RECV_VIDEO, PrivilegeMap::RECV_SUB_VIDEO]
            .iter()
            .any(|p| self.privileges.contains(*p))
    }
}

/// A change the data plane must apply, in order.
#[derive(Debug, Clone)]
pub enum Update {
    /// A session joined (or replaced an older one, whose `Down` came first).
    Up(Arc<SessionInfo>),
    /// A session ended.
    Down(Arc<SessionInfo>),
    /// A cascade leg's streams changed (the same session id, a new set of SSRCs): the
    /// replica keeps the receive state of the SSRCs that stay.
    Streams(Arc<SessionInfo>),
}

/// What a control message produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A join succeeded; the reply is join-ok.
    Joined(SessionId),
    /// A join was refused with this code.
    Refused(ErrorCode),
    /// A keepalive was accepted.
    KeptAlive(SessionId),
    /// A leave was accepted.
    Left(SessionId),
    /// A v2 join without a valid cookie while relayd is under load: the reply is a cookie.
    CookieSent,
    /// A v2 keepalive from another address than its session's: the reply tells the client
    /// to join again from there.
    AddressChanged(SessionId),
    /// An in-room message or message-ack from this session was accepted; what it produced
    /// is in the outbox.
    Message(SessionId),
    /// The message was dropped without an answer (bad MAC, replayed counter, a type the
    /// relay never receives).
    Ignored,
}

/// A v2 join's verified UserSig.
struct Verified {
    /// The decoded UserSig, so admission does not inflate and parse it again.
    sig: usersig::UserSig,
    secret: Vec<u8>,
    expires_unix: u64,
}

struct AppState {
    cfg: App,
    rooms: u32,
    sessions: u32,
}

#[derive(Default)]
struct RoomState {
    members: Vec<SessionId>,
    /// SSRCs cascade legs brought into the room, each with the node it came from (it stays
    /// that node's for the room's lifetime; see `registry::legs`).
    remote_ssrcs: HashMap<u32, String>,
    ssrcs_used: HashSet<u32>,
    ssrcs_by_user: HashMap<UserId, u32>,
}

struct Entry {
    info: Arc<SessionInfo>,
    secrets: SessionSecrets,
    last_counter: u64,
    last_ctrl_ms: u64,
    msgs: messaging::MessageState,
}

/// The registry.
pub struct Registry {
    apps: HashMap<SdkAppId, AppState>,
    rooms: HashMap<RoomKey, RoomState>,
    sessions: HashMap<SessionId, Entry>,
    by_addr: HashMap<SocketAddr, SessionId>,
    by_user: HashMap<(RoomKey, UserId), SessionId>,
    bans: HashMap<(RoomKey, UserId), u64>,
    next_id: u64,
    timeouts: Timeouts,
    rng: Box<dyn FnMut() -> KeyPair + Send>,
    /// Fresh secrets for v2: the relay's ephemeral keys and cookie nonces (the OS RNG in
    /// relayd; a bare 32 bytes, so no key generation is wasted on a key pair).
    secrets: Box<dyn FnMut() -> [u8; 32] + Send>,
    joins: HashMap<&'static str, u64>,
    handshake: HashMap<&'static str, u64>,
    identity: Identity,
    keys: Vec<RelayKeyState>,
    join_cfg: JoinSettings,
    replay: ReplayCache,
    cookies: CookieJar,
    limiter: ReplyLimiter,
    under_load: bool,
    /// Answers ran over their budget: cookies are required until then.
    load_until_ms: u64,
    pending: Option<Pending>,
    msg_counts: Counts,
    /// Sessions with message copies awaiting acks or messages held for order.
    msg_active: HashSet<SessionId>,
    msg_scratch: Vec<SessionId>,
    msg_members: Vec<SessionId>,
    /// Decodes UserSigs and PrivateMapKeys without allocating an inflater per token.
    tokens: usersig::Decoder,
    /// The app and room of the join [`Registry::handle`] last handled, once known.
    last_join: Option<JoinSubject>,
    /// Sessions an operator ended, with why and until when (mono ms) a keepalive for one is
    /// answered with that reason instead of `unknown_session`. At most [`ENDED_MAX`].
    ended: HashMap<SessionId, (ErrorCode, u64)>,
    /// Cascade legs to other relays, and the room events relay-control follows.
    cascade: legs::Cascade,
}

/// Sessions remembered as dismissed at most; beyond it the oldest reasons are forgotten
/// (those clients are told `unknown_session`, as before).
pub const ENDED_MAX: usize = 65_536;

/// How long a dismissed session's reason is remembered past the session timeout: enough
/// for its client's next keepalives to learn it.
const ENDED_KEEP_MS: u64 = 60_000;

/// The app and room a join asked for, for the log line of its outcome. Never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinSubject {
    /// The SdkAppId the join named (not necessarily a configured app).
    pub sdkappid: u32,
    /// The room it asked for.
    pub room: RoomId,
}

/// One static key the relay accepts joins for, with its derived mac1 key.
struct RelayKeyState {
    key: StaticKey,
    mac1: [u8; 32],
}

/// What the last join's answer needs to be rewritten as a refusal (the control thread
/// takes a join back when the kernel cannot install it).
enum Pending {
    V1 { max_len: usize },
    V2 { responder: Responder, max_len: usize },
}

struct Refusal(ErrorCode, &'static str);

/// A join's request, from a v1 join or a decrypted v2 payload.
struct Request<'a> {
    sdkappid: u32,
    profile: u16,
    room: &'a RoomId,
    ssrcs: &'a [Option<DeclaredSsrc>; MAX_SSRCS],
    usersig: &'a str,
    private_map_key: Option<&'a str>,
}

impl Request<'_> {
    fn declared(&self) -> impl Iterator<Item = DeclaredSsrc> + '_ {
        self.ssrcs.iter().flatten().copied()
    }
}

/// A join that passed every check, ready to install.
struct Admission {
    app: SdkAppId,
    room: RoomKey,
    user: UserId,
    privileges: PrivilegeMap,
    profile: Profile,
    freed: [Option<SessionId>; 2],
    ssrcs: Vec<DeclaredSsrc>,
}

impl Registry {
    /// A registry for the configured apps with a random relay identity, drawing key shares
    /// from the OS RNG.
    pub fn new(cfg: &Validated) -> Self {
        Self::with_identity(cfg, Identity::new(StaticKey::generate()), Box::new(KeyPair::generate))
    }

    /// Same, with a caller-chosen key source (deterministic simulations); the identity is
    /// drawn from it too.
    pub fn with_rng(cfg: &Validated, mut rng: Box<dyn FnMut() -> KeyPair + Send>) -> Self {
        let identity = Identity::new(StaticKey::from_secret(rng().secret_bytes()));
        let seed = rng().secret_bytes();
        let mut r = Self::with_identity(cfg, identity, rng);
        r.secrets = seeded(seed);
        r
    }

    /// A registry with the relay's static identity (relayd loads it from its key file).
    pub fn with_identity(cfg: &Validated, identity: Identity, mut rng: Box<dyn FnMut() -> KeyPair + Send>) -> Self {
        let apps = cfg.apps.iter().map(|a| (a.sdkappid, AppState { cfg: a.clone(), rooms: 0, sessions: 0 })).collect();
        let seed = rng().secret_bytes();
        let cookie_rng = seeded(seed);
        let mut r = Self {
            apps,
            rooms: HashMap::new(),
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            by_user: HashMap::new(),
            bans: HashMap::new(),
            next_id: first_session_id(&seed),
            timeouts: cfg.timeouts,
            rng,
            secrets: Box::new(|| {
                let mut b = [0u8; 32];
                getrandom::getrandom(&mut b).expect("the OS RNG is available");
                b
            }),
            joins: HashMap::new(),
            handshake: HashMap::new(),
            identity,
            keys: Vec::new(),
            join_cfg: cfg.join,
            replay: ReplayCache::new(REPLAY_CAPACITY),
            cookies: CookieJar::new(cookie_rng, 0),
            limiter: ReplyLimiter::with_cookies(
                cfg.join.replies_per_sec,
                cfg.join.cookies_per_sec,
                cfg.join.replies_per_source_per_sec,
                0,
            ),
            under_load: false,
            load_until_ms: 0,
            tokens: usersig::Decoder::new(),
            pending: None,
            msg_counts: Counts::default(),
            msg_active: HashSet::new(),
            msg_scratch: Vec::new(),
            msg_members: Vec::new(),
            last_join: None,
            ended: HashMap::new(),
            cascade: legs::Cascade::default(),
        };
        // Room event numbers start somewhere new in every process, like session ids, so a
        // cursor from an earlier relayd reads as one to resync.
        r.cascade.next_event = first_session_id(&(r.secrets)());
        r.refresh_keys(0);
        r
    }

    /// The relay's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The public key clients should join to.
    pub fn relay_key(&self) -> RelayKey {
        self.identity.current.public()
    }

    /// Replaces the identity (a rotation). Joins to any key valid at `unix_secs` are
    /// accepted; live sessions are not affected.
    pub fn set_identity(&mut self, identity: Identity, unix_secs: u64) {
        self.identity = identity;
        self.refresh_keys(unix_secs);
    }

    /// Drops a previous key whose overlap has ended; returns whether one was dropped.
    pub fn retire_keys(&mut self, unix_secs: u64) -> bool {
        let changed = self.identity.retire_expired(unix_secs);
        if changed {
            self.refresh_keys(unix_secs);
        }
        changed
    }

    fn refresh_keys(&mut self, unix_secs: u64) {
        self.keys = self
            .identity
            .valid_keys(unix_secs)
            .map(|k| RelayKeyState { key: k.clone(), mac1: v2::mac1_key(&k.public()) })
            .collect();
    }

    /// New session timing (a reload): joins from now on are told the new keepalive
    /// interval, and expiry uses the new timeout for every session.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// New join-path settings (a reload): cookie mode, timestamp window and reply budgets,
    /// whose buckets start full.
    pub fn set_join_settings(&mut self, join: JoinSettings, now_ms: u64) {
        self.join_cfg = join;
        self.limiter.set_rates(join.replies_per_sec, join.cookies_per_sec, join.replies_per_source_per_sec, now_ms);
    }

    /// The app and room of the join the last [`handle`](Self::handle) call processed, if it
    /// was a join whose request could be read (a v2 join: once decrypted).
    pub fn last_join(&self) -> Option<&JoinSubject> {
        self.last_join.as_ref()
    }

    /// Tells the join path whether relayd is under load (its control queue backing up):
    /// while it is, v2 joins need a cookie.
    pub fn set_under_load(&mut self, on: bool) {
        self.under_load = on;
    }

    /// Handshake and join-path counters by name: `v1_joins`, `v2_joins`, `mac1_failed`,
    /// `cookies_sent`, `dh`, `decrypt_failed`, `replayed`, `replies` (replies sent to
    /// control datagrams), `replies_limited` (replies the budget withheld),
    /// `sessions_map_full` (joins taken back: the kernel's `sessions` map was full).
    pub fn handshake_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.handshake.iter().map(|(k, v)| (*k, *v)).chain(std::iter::once(("replies_limited", self.limiter.limited)))
    }

    /// Counts a join-path event by name (see [`handshake_counts`](Self::handshake_counts)).
    pub(crate) fn count(&mut self, name: &'static str) {
        *self.handshake.entry(name).or_default() += 1;
    }

    /// Bans `user` from the room until `until_unix` (with an operator's removal): joins
    /// are refused `banned` until then.
    pub fn ban(&mut self, key: &RoomKey, user: &UserId, until_unix: u64) {
        self.bans.insert((key.clone(), user.clone()), until_unix);
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Live rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Join results so far, by `ok` or error-code name.
    pub fn join_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.joins.iter().map(|(k, v)| (*k, *v))
    }

    /// Up to `limit` rooms (of `app` only, if given) sorted by key, each with its members'
    /// sessions in join order. Only the listed rooms are cloned.
    pub fn list_rooms(&self, app: Option<SdkAppId>, limit: usize) -> Vec<(&RoomKey, Vec<&SessionInfo>)> {
        let mut keys: Vec<&RoomKey> = self.rooms.keys().filter(|k| app.is_none_or(|a| k.app == a)).collect();
        keys.sort_unstable();
        keys.truncate(limit);
        keys.into_iter()
            .map(|k| (k, self.rooms[k].members.iter().map(|id| &*self.sessions[id].info).collect()))
            .collect()
    }

    /// Handles one control datagram from `src`. A reply, if any, is written to `reply` and
    /// its length returned with the outcome; data-plane changes are appended to `updates`.
    /// Malformed datagrams get no reply, and every reply is rate-limited per source and in
    /// total ([`ReplyLimiter`]). An in-room message ([`proto::msg`]) gets no reply: the
    /// copies for the room and the ack to its sender are appended to `outbox` (see
    /// `registry::messaging` for their bounds).
    pub fn handle(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        reply: &mut [u8],
        updates: &mut Vec<Update>,
        outbox: &mut Outbox,
    ) -> (Outcome, Option<usize>) {
        self.pending = None;
        self.last_join = None;
        let (version, ty) = match proto::parse_any_header(datagram) {
            Ok((v, ty, _)) => (v, ty),
            Err(proto::Error::Version(_)) if proto::parse_header_len_ok(datagram) => {
                // A well-formed header of a version this relay does not speak: say so (a
                // newer client can fall back), within the reply budget.
                let r =
                    self.refuse(Refusal(ErrorCode::UnsupportedVersion, "unsupported version"), datagram.len(), reply);
                let (o, n) = self.charge(r, src, now);
                if n.is_some() {
                    self.count("replies");
                }
                return (o, n);
            }
            Err(_) => {
                *self.joins.entry(ErrorCode::Malformed.name()).or_default() += 1;
                return (Outcome::Refused(ErrorCode::Malformed), None);
            }
        };
        let (outcome, n) = match (version, ty) {
            // Charged inside, before its public-key work.
            (proto::VERSION_2, MsgType::Join) => self.join_v2(now, src, datagram, reply, updates),
            (proto::VERSION_2, MsgType::Message | MsgType::MessageAck) => {
                return (self.message(now, src, datagram, outbox), None)
            }
            (proto::VERSION_2, MsgType::LegJoin) => self.leg_join(now, src, datagram, reply, updates),
            (proto::VERSION_2, MsgType::LegAnswer) => return (self.leg_answer(now, src, datagram, updates), None),
            (proto::VERSION_2, MsgType::LegStreams) => return (self.leg_streams(now, src, datagram, updates), None),
            (_, MsgType::Join) => {
                let r = self.join(now, src, datagram, reply, updates);
                self.charge(r, src, now)
            }
            (_, MsgType::Keepalive | MsgType::Leave | MsgType::Hold) => {
                let r = self.ticket(now, src, datagram, reply, updates);
                // A keepalive-ack answers a MAC-verified keepalive with a fresh counter, once,
                // no longer than it: no reflection, so it is not charged to the reply budgets,
                // which would otherwise make clients' failover probes (every 300 ms when a
                // session is quiet) look like a dead relay once thousands probe at once.
                // Refusals (unknown session) are unauthenticated and stay charged.
                if matches!(r.0, Outcome::KeptAlive(_)) {
                    r
                } else {
                    self.charge(r, src, now)
                }
            }
            _ => (Outcome::Ignored, None),
        };
        if n.is_some() {
            self.count("replies");
        }
        (outcome, n)
    }

    /// Drops the reply if the reply budget for `src` is spent.
    fn charge(&mut self, r: (Outcome, Option<usize>), src: SocketAddr, now: Now) -> (Outcome, Option<usize>) {
        (r.0, r.1.filter(|_| self.limiter.allow(src, now.mono_ms)))
    }

    fn refuse(&mut self, r: Refusal, max_len: usize, reply: &mut [u8]) -> (Outcome, Option<usize>) {
        *self.joins.entry(r.0.name()).or_default() += 1;
        (Outcome::Refused(r.0), JoinError::write(r.0, r.1, reply, max_len))
    }

    /// Rewrites the answer to the join [`handle`](Self::handle) just accepted as a refusal
    /// (relayd takes the join back when the kernel cannot install its session). Returns the
    /// new reply's length.
    pub fn refuse_last_join(&mut self, code: ErrorCode, detail: &str, reply: &mut [u8]) -> Option<usize> {
        let pending = self.pending.take()?;
        // It was counted as accepted: it is refused after all.
        if let Some(ok) = self.joins.get_mut("ok") {
            *ok = ok.saturating_sub(1);
        }
        *self.joins.entry(code.name()).or_default() += 1;
        match pending {
            Pending::V1 { max_len } => JoinError::write(code, detail, reply, max_len),
            Pending::V2 { responder, max_len } => {
                let e = (self.secrets)();
                let a = AnswerPayload::Refused { code: code as u16, detail };
                v2::write_answer(responder, e, &a, reply, max_len).ok().map(|(n, _)| n)
            }
        }
    }

    fn join(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        reply: &mut [u8],
        updates: &mut Vec<Update>,
    ) -> (Outcome, Option<usize>) {
        self.count("v1_joins");
        let j = match Join::parse(datagram) {
            Ok(j) => j,
            Err(e) => {
                // No reply: a malformed join may come from a spoofed source.
                *self.joins.entry(e.code().name()).or_default() += 1;
                return (Outcome::Refused(e.code()), None);
            }
        };
        match self.try_join(now, src, &j, datagram, updates) {
            Ok((id, ok)) => {
                *self.joins.entry("ok").or_default() += 1;
                self.pending = Some(Pending::V1 { max_len: datagram.len() });
                (Outcome::Joined(id), ok.write(reply).ok())
            }
            Err(r) => self.refuse(r, datagram.len(), reply),
        }
    }

    fn try_join(
        &mut self,
        now: Now,
        src: SocketAddr,
        j: &Join<'_>,
        datagram: &[u8],
        updates: &mut Vec<Update>,
    ) -> Result<(SessionId, JoinOk), Refusal> {
        self.last_join = Some(JoinSubject { sdkappid: j.sdkappid, room: j.room.clone() });
        let req = Request {
            sdkappid: j.sdkappid,
            profile: j.profile,
            room: &j.room,
            ssrcs: &j.ssrcs,
            usersig: j.usersig,
            private_map_key: j.private_map_key,
        };
        let app_id = self.app_of(&req)?;
        if !self.apps[&app_id].cfg.allow_v1_joins {
            return Err(Refusal(ErrorCode::V1NotAllowed, "this app accepts only join v2: update the client"));
        }
        let adm = self.admit(now, src, &req, None)?;
        let relay = (self.rng)();
        let secrets = relay
            .agree(&j.key_share, datagram, &relay.public, adm.profile)
            .map_err(|_| Refusal(ErrorCode::BadKeyShare, "X25519 key share is of low order"))?;
        let id = SessionId(self.next_id);
        let ok = JoinOk {
            session: id.0,
            key_share: relay.public,
            keepalive_secs: self.timeouts.keepalive_secs,
            timeout_secs: self.timeouts.session_secs,
            confirm: secrets.confirm(id.0),
        };
        let installed = self.install(now, src, adm, secrets, updates);
        debug_assert_eq!(installed, id);
        Ok((id, ok))
    }

    /// A v2 join: mac1, the reply budget, a cookie under load, then the Noise handshake,
    /// the UserSig, the timestamp window and the replay cache, then the same admission as
    /// v1. Nothing before the handshake is answered except with a cookie; every answer
    /// after it is encrypted.
    fn join_v2(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        reply: &mut [u8],
        updates: &mut Vec<Update>,
    ) -> (Outcome, Option<usize>) {
        let Ok(frame) = v2::JoinFrame::new_checked(datagram) else {
            *self.joins.entry(ErrorCode::Malformed.name()).or_default() += 1;
            return (Outcome::Refused(ErrorCode::Malformed), None);
        };
        let Some(ki) = self.keys.iter().position(|k| frame.mac1_ok(&k.mac1)) else {
            self.count("mac1_failed");
            return (Outcome::Ignored, None);
        };
        self.count("v2_joins");
        // What follows is answered, so the reply budget is charged first: a join over it
        // costs no Diffie-Hellman. A join that echoes a valid cookie has proven its address
        // and is charged to its source only; any other one needs a cookie while relayd is
        // under load (the control queue backs up, or answers ran over their budget).
        let proven = self.cookies.verify(src, now.mono_ms, |c| frame.mac2_ok(c));
        let mut need_cookie =
            self.join_cfg.cookies == CookieMode::Always || self.under_load || now.mono_ms < self.load_until_ms;
        if !proven && !need_cookie && !self.limiter.allow(src, now.mono_ms) {
            // Answers are over budget: from now on (for a second), cookies first.
            self.load_until_ms = now.mono_ms + 1000;
            need_cookie = true;
        }
        if proven && !self.limiter.allow_kind(src, ReplyKind::Proven, now.mono_ms) {
            return (Outcome::Ignored, None);
        }
        if !proven && need_cookie {
            if !self.limiter.allow_kind(src, ReplyKind::Cookie, now.mono_ms) {
                return (Outcome::Ignored, None);
            }
            let cookie = self.cookies.cookie(src, now.mono_ms);
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&(self.secrets)()[..12]);
            self.count("cookies_sent");
            let n = v2::write_cookie(&self.keys[ki].key.public(), nonce, &cookie, &frame.mac1(), reply).ok();
            return (Outcome::CookieSent, n);
        }
        self.count("dh");
        let mut msg = [0u8; proto::MAX_LEN];
        let range = frame.noise_range();
        let msg = &mut msg[..range.len()];
        msg.copy_from_slice(&datagram[range]);
        let key = &self.keys[ki].key;
        let (responder, len) = match Responder::read_first(v2::PROLOGUE, key.secret(), msg) {
            Ok(r) => r,
            Err(_) => {
                self.count("decrypt_failed");
                return (Outcome::Ignored, None);
            }
        };
        let max_len = datagram.len();
        let payload = match v2::JoinPayload::parse(&msg[DH_LEN..DH_LEN + len]) {
            Ok(p) => p,
            Err(e) => return self.answer(responder, Err(Refusal(e.code(), "malformed join")), max_len, reply),
        };
        self.last_join = Some(JoinSubject { sdkappid: payload.sdkappid, room: payload.room.clone() });
        let req = Request {
            sdkappid: payload.sdkappid,
            profile: payload.profile,
            room: &payload.room,
            ssrcs: &payload.ssrcs,
            usersig: payload.usersig,
            private_map_key: payload.private_map_key,
        };
        let verified = match self.authenticate(now, &req) {
            Ok(v) => v,
            Err(r) => return self.answer(responder, Err(r), max_len, reply),
        };
        // Authentic: remember it until it can no longer pass the timestamp check (or its
        // UserSig expires), whatever the outcome below. A join refused for a quota now, or
        // for a clock ahead of the relay's, must not succeed when replayed later. `unix_secs`
        // is whole seconds: the window gets one more second each way.
        let window_ms = u64::from(self.join_cfg.timestamp_window_secs) * 1000 + 1000;
        let now_unix_ms = now.unix_secs * 1000;
        let valid_for_ms = (payload.timestamp_ms + window_ms)
            .saturating_sub(now_unix_ms)
            .min(verified.expires_unix.saturating_sub(now.unix_secs).saturating_mul(1000));
        let seen = match valid_for_ms {
            0 => Replay::Fresh,
            ms => self.replay.check(&responder.hash(), now.mono_ms, now.mono_ms + ms),
        };
        match seen {
            Replay::Fresh => {}
            Replay::Replayed => {
                // No answer: whoever replays it could not read one, and it costs a DH.
                self.count("replayed");
                *self.joins.entry(ErrorCode::Replayed.name()).or_default() += 1;
                return (Outcome::Refused(ErrorCode::Replayed), None);
            }
            Replay::Full => {
                return self.answer(
                    responder,
                    Err(Refusal(ErrorCode::Overloaded, "relay is busy; retry")),
                    max_len,
                    reply,
                )
            }
        }
        if payload.timestamp_ms + window_ms < now_unix_ms || payload.timestamp_ms > now_unix_ms + window_ms {
            let r = Refusal(ErrorCode::ClockSkew, "join timestamp is outside the relay's window: check the clock");
            return self.answer(responder, Err(r), max_len, reply);
        }
        let adm = self.admit(now, src, &req, Some(verified));
        self.answer(responder, adm.map(|a| (a, now, src, updates)), max_len, reply)
    }

    /// Writes a v2 answer: installs the session if admitted, or encrypts the refusal.
    fn answer(
        &mut self,
        responder: Responder,
        admitted: Result<(Admission, Now, SocketAddr, &mut Vec<Update>), Refusal>,
        max_len: usize,
        reply: &mut [u8],
    ) -> (Outcome, Option<usize>) {
        let e = (self.secrets)();
        match admitted {
            Ok((adm, now, src, updates)) => {
                let id = SessionId(self.next_id);
                let ok = AnswerPayload::Joined {
                    session: id.0,
                    keepalive_secs: self.timeouts.keepalive_secs,
                    timeout_secs: self.timeouts.session_secs,
                };
                let pending = responder.clone();
                let Ok((n, split)) = v2::write_answer(responder, e, &ok, reply, max_len) else {
                    return (Outcome::Ignored, None);
                };
                let secrets = SessionSecrets::from_split(&split, adm.profile);
                let installed = self.install(now, src, adm, secrets, updates);
                debug_assert_eq!(installed, id);
                *self.joins.entry("ok").or_default() += 1;
                self.pending = Some(Pending::V2 { responder: pending, max_len });
                (Outcome::Joined(id), Some(n))
            }
            Err(r) => {
                *self.joins.entry(r.0.name()).or_default() += 1;
                let a = AnswerPayload::Refused { code: r.0 as u16, detail: r.1 };
                (Outcome::Refused(r.0), v2::write_answer(responder, e, &a, reply, max_len).ok().map(|(n, _)| n))
            }
        }
    }

    fn app_of(&self, req: &Request<'_>) -> Result<SdkAppId, Refusal> {
        let app_id = SdkAppId::new(req.sdkappid.into()).map_err(|_| Refusal(ErrorCode::UnknownApp, "unknown app"))?;
        if !self.apps.contains_key(&app_id) {
            return Err(Refusal(ErrorCode::UnknownApp, "unknown app"));
        }
        Ok(app_id)
    }

    /// v2: the UserSig's HMAC first (the Diffie-Hellman already cost far more), then the
    /// join's timestamp against the window.
    fn authenticate(&mut self, now: Now, req: &Request<'_>) -> Result<Verified, Refusal> {
        let app_id = self.app_of(req)?;
        let sig =
            self.tokens.decode(req.usersig).map_err(|_| Refusal(ErrorCode::BadSignature, "UserSig does not decode"))?;
        if sig.sdkappid != u64::from(req.sdkappid) {
            return Err(Refusal(ErrorCode::WrongApp, "UserSig is for another SdkAppId"));
        }
        let app = &self.apps[&app_id];
        let secret =
            verify_with_any(&app.cfg.secrets, |k| sig.verify(k, now.unix_secs)).map_err(credential_refusal)?.to_vec();
        let expires_unix = sig.time.saturating_add(sig.expire);
        Ok(Verified { sig, secret, expires_unix })
    }

    /// Every check of a join but the key agreement. `verified` is the UserSig already
    /// decoded and verified (v2), with the app secret that verified it; without it (v1)
    /// the UserSig's HMAC runs last, after every check that needs none.
    fn admit(
        &mut self,
        now: Now,
        src: SocketAddr,
        j: &Request<'_>,
        verified: Option<Verified>,
    ) -> Result<Admission, Refusal> {
        let app_id = self.app_of(j)?;
        let app = &self.apps[&app_id];
        let profile = Profile::from_id(j.profile)
            .filter(|p| app.cfg.profiles.contains(p))
            .ok_or(Refusal(ErrorCode::UnsupportedProfile, "SRTP profile not enabled for this app"))?;

        // Structure first, no HMAC yet.
        let (sig, verified) = match verified {
            Some(v) => (v.sig, Some(v.secret)),
            None => (
                self.tokens
                    .decode(j.usersig)
                    .map_err(|_| Refusal(ErrorCode::BadSignature, "UserSig does not decode"))?,
                None,
            ),
        };
        if sig.sdkappid != u64::from(j.sdkappid) {
            return Err(Refusal(ErrorCode::WrongApp, "UserSig is for another SdkAppId"));
        }
        let user = UserId::new(&sig.identifier).map_err(|_| Refusal(ErrorCode::Malformed, "bad user id"))?;
        let room = RoomKey { app: app_id, room: j.room.clone() };
        if let Some(&until) = self.bans.get(&(room.clone(), user.clone())) {
            if now.unix_secs < until {
                return Err(Refusal(ErrorCode::Banned, "this user is banned from this room for now"));
            }
            self.bans.remove(&(room.clone(), user.clone()));
        }
        let app = &self.apps[&app_id];
        let room_exists = self.rooms.contains_key(&room);
        let pmk = match j.private_map_key {
            None if app.cfg.require_private_map_key => {
                return Err(Refusal(ErrorCode::PrivateMapKeyRequired, "this app requires a PrivateMapKey"));
            }
            None => None,
            Some(t) => {
                let p = self
                    .tokens
                    .decode(t)
                    .map_err(|_| Refusal(ErrorCode::BadSignature, "PrivateMapKey does not decode"))?;
                if p.sdkappid != sig.sdkappid {
                    return Err(Refusal(ErrorCode::WrongApp, "PrivateMapKey is for another SdkAppId"));
                }
                if p.identifier != sig.identifier {
                    return Err(Refusal(ErrorCode::WrongRoom, "PrivateMapKey is for another user"));
                }
                let buf =
                    p.userbuf.as_deref().ok_or(Refusal(ErrorCode::BadSignature, "PrivateMapKey carries no userbuf"))?;
                let ub = usersig::decode_userbuf(buf)
                    .map_err(|_| Refusal(ErrorCode::BadSignature, "PrivateMapKey userbuf is malformed"))?;
                let same_room = match (j.room, &ub.room_str) {
                    (RoomId::Str(s), Some(r)) => **s == **r,
                    (RoomId::Num(n), None) => *n == ub.room_num,
                    _ => false,
                };
                if !same_room || ub.sdkappid != j.sdkappid || ub.account != sig.identifier {
                    return Err(Refusal(ErrorCode::WrongRoom, "PrivateMapKey is for another room"));
                }
                if u64::from(ub.expire_at) <= now.unix_secs {
                    return Err(Refusal(ErrorCode::Expired, "PrivateMapKey has expired"));
                }
                Some((p, ub.privileges))
            }
        };
        let privileges = pmk.as_ref().map_or(PrivilegeMap::ALL, |(_, p)| *p);
        if !privileges.contains(PrivilegeMap::ENTER) {
            return Err(Refusal(ErrorCode::NoPrivilege, "no enter-room privilege"));
        }
        if !room_exists && !privileges.contains(PrivilegeMap::CREATE) {
            return Err(Refusal(ErrorCode::NoPrivilege, "no create-room privilege and the room does not exist"));
        }
        for d in j.declared() {
            let needed = match d.kind {
                StreamKind::Audio => PrivilegeMap::SEND_AUDIO,
                StreamKind::Video => PrivilegeMap::SEND_VIDEO,
                StreamKind::Rtcp => continue,
            };
            if !privileges.contains(needed) {
                return Err(Refusal(ErrorCode::NoPrivilege, "no send privilege for a declared stream"));
            }
        }

        // Quotas and SSRCs: a re-join by the same user, or from the same address, frees its
        // old session first, so count as if it were gone.
        let replaced_user = self.by_user.get(&(room.clone(), user.clone())).copied();
        let replaced_addr = self.by_addr.get(&src).copied().filter(|id| Some(*id) != replaced_user);
        // A join may take over an address only from the same user of the same app (moving
        // rooms); otherwise anyone able to spoof a source address could end another
        // client's session.
        if let Some(other) = replaced_addr {
            let o = &self.sessions[&other].info;
            if o.room.app != app_id || o.user != user {
                return Err(Refusal(ErrorCode::AddressInUse, "this address holds another user's session"));
            }
        }
        let freed = [replaced_user, replaced_addr];
        let freed_in_app = freed.iter().flatten().filter(|id| self.sessions[id].info.room.app == app_id).count();
        let room_state = self.rooms.get(&room);
        let members_after = room_state.map_or(0, |r| r.members.iter().filter(|m| !freed.contains(&Some(**m))).count());
        if app.sessions as usize - freed_in_app >= app.cfg.quotas.max_sessions as usize {
            return Err(Refusal(ErrorCode::SessionQuota, "app session quota reached"));
        }
        // Rooms of this app that the freed sessions leave empty (a user moving rooms).
        let rooms_freed = freed
            .iter()
            .flatten()
            .filter(|id| {
                let r = &self.sessions[id].info.room;
                r.app == app_id && *r != room && self.rooms.get(r).is_some_and(|st| st.members.len() == 1)
            })
            .count() as u32;
        if room_state.is_none() && app.rooms - rooms_freed >= app.cfg.quotas.max_rooms {
            return Err(Refusal(ErrorCode::RoomQuota, "app room quota reached"));
        }
        if members_after >= app.cfg.quotas.max_members_per_room as usize {
            return Err(Refusal(ErrorCode::MemberQuota, "room member quota reached"));
        }
        if let Some(r) = room_state {
            if j.declared().any(|d| r.ssrcs_used.contains(&d.ssrc.get()) || r.remote_ssrcs.contains_key(&d.ssrc.get()))
            {
                return Err(Refusal(ErrorCode::SsrcConflict, "SSRC already used in this room; pick fresh SSRCs"));
            }
            if r.ssrcs_used.len() + j.declared().count() > MAX_ROOM_SSRCS {
                return Err(Refusal(ErrorCode::SsrcConflict, "room SSRC history is full"));
            }
            let used = r.ssrcs_by_user.get(&user).copied().unwrap_or(0);
            if used + j.declared().count() as u32 > MAX_USER_SSRCS {
                return Err(Refusal(ErrorCode::SsrcConflict, "this user has used too many SSRCs in this room"));
            }
        }

        // Now the MACs: the UserSig once (unless v2 already did), then the PrivateMapKey.
        // One HMAC with the current secret; during a rotation, one more with the previous.
        let secret = match verified {
            Some(s) => s,
            None => verify_with_any(&app.cfg.secrets, |k| sig.verify(k, now.unix_secs))
                .map_err(credential_refusal)?
                .to_vec(),
        };
        if let Some((p, _)) = &pmk {
            p.verify(&secret, now.unix_secs).map_err(credential_refusal)?;
        }
        Ok(Admission { app: app_id, room, user, privileges, profile, freed, ssrcs: j.declared().collect() })
    }

    /// Installs an admitted join with its keys; returns the new session's id.
    fn install(
        &mut self,
        now: Now,
        src: SocketAddr,
        adm: Admission,
        secrets: SessionSecrets,
        updates: &mut Vec<Update>,
    ) -> SessionId {
        for id in adm.freed.into_iter().flatten() {
            self.remove(id, updates);
        }
        let id = SessionId(self.next_id);
        self.next_id += 1;
        let Admission { app: app_id, room, user, privileges, ssrcs, .. } = adm;
        let n_ssrcs = ssrcs.len() as u32;
        let info = Arc::new(SessionInfo {
            id,
            room: room.clone(),
            user: user.clone(),
            addr: src,
            privileges,
            uplink: secrets.c2r.session_keys(),
            downlink: secrets.r2c.session_keys(),
            last_seen_ms: CacheLine(AtomicU64::new(now.mono_ms)),
            ssrcs,
            leg: false,
        });
        let app = self.apps.get_mut(&app_id).expect("admitted joins are for configured apps");
        app.sessions += 1;
        let gained = !self.rooms.contains_key(&room);
        let r = self.rooms.entry(room.clone()).or_insert_with(|| {
            app.rooms += 1;
            RoomState::default()
        });
        r.members.push(id);
        r.ssrcs_used.extend(info.ssrcs.iter().map(|d| d.ssrc.get()));
        *r.ssrcs_by_user.entry(user.clone()).or_default() += n_ssrcs;
        self.by_addr.insert(src, id);
        let room_key = room.clone();
        self.by_user.insert((room, user), id);
        self.sessions.insert(
            id,
            Entry {
                info: info.clone(),
                secrets,
                last_counter: 0,
                last_ctrl_ms: now.mono_ms,
                msgs: messaging::MessageState::new(now.mono_ms),
            },
        );
        updates.push(Update::Up(info));
        if gained {
            self.room_changed(&room_key, true, updates);
        }
        id
    }

    fn ticket(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        reply: &mut [u8],
        updates: &mut Vec<Update>,
    ) -> (Outcome, Option<usize>) {
        let Ok(t) = Ticket::parse(datagram) else {
            return (Outcome::Ignored, None);
        };
        let id = SessionId(t.session);
        let Some(e) = self.sessions.get_mut(&id) else {
            let (code, detail) = match self.ended.get(&id) {
                Some((ErrorCode::RoomDismissed, until)) if now.mono_ms < *until => {
                    (ErrorCode::RoomDismissed, "the room was dismissed by the operator")
                }
                _ => (ErrorCode::UnknownSession, "unknown session: join again"),
            };
            let n = JoinError::write(code, detail, reply, datagram.len());
            return (Outcome::Refused(code), n);
        };
        if !e.secrets.verify_ticket(&t) || t.counter <= e.last_counter {
            return (Outcome::Ignored, None);
        }
        e.last_counter = t.counter;
        if t.ty == MsgType::Leave {
            self.remove(id, updates);
            return (Outcome::Left(id), None);
        }
        // A hold keeps the session alive from wherever its key holder is (`relay-client
        // attach` beside an external tool that owns the session's address).
        if e.secrets.version == proto::VERSION_2 && src != e.info.addr && t.ty != MsgType::Hold {
            // A NAT rebinding (or a copy of the keepalive sent from elsewhere): the session
            // stays where it is, and the client, which proves it holds the session's key
            // by the MAC, is told to join again from its new address.
            let moved = e.secrets.ticket(MsgType::AddressChanged, t.session, t.counter);
            return (Outcome::AddressChanged(id), moved.write(reply).ok());
        }
        e.last_ctrl_ms = now.mono_ms;
        let ack = e.secrets.ticket(MsgType::KeepaliveAck, t.session, t.counter);
        (Outcome::KeptAlive(id), ack.write(reply).ok())
    }

    /// Expires sessions silent for longer than the session timeout.
    pub fn expire(&mut self, now: Now, updates: &mut Vec<Update>) -> usize {
        let limit = u64::from(self.timeouts.session_secs) * 1000;
        let dead: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|e| {
                let last = e.info.last_seen_ms.load(Relaxed).max(e.last_ctrl_ms);
                now.mono_ms.saturating_sub(last) > limit
            })
            .map(|e| e.info.id)
            .collect();
        for id in &dead {
            self.remove(*id, updates);
        }
        self.ended.retain(|_, (_, until)| now.mono_ms < *until);
        dead.len()
    }

    /// Replaces the app set (a push from relay-control). Live sessions of apps that remain
    /// keep running whatever changed (a secret rotation does not end them); sessions of
    /// apps that are gone end. Quotas apply to new joins. Returns the sessions ended.
    pub fn set_apps(&mut self, apps: Vec<App>, updates: &mut Vec<Update>) -> usize {
        let keep: HashSet<SdkAppId> = apps.iter().map(|a| a.sdkappid).collect();
        let gone: Vec<SessionId> =
            self.sessions.values().filter(|e| !keep.contains(&e.info.room.app)).map(|e| e.info.id).collect();
        for id in &gone {
            self.remove(*id, updates);
        }
        let mut next = HashMap::new();
        for cfg in apps {
            let (rooms, sessions) = self.apps.get(&cfg.sdkappid).map_or((0, 0), |a| (a.rooms, a.sessions));
            next.insert(cfg.sdkappid, AppState { cfg, rooms, sessions });
        }
        self.apps = next;
        gone.len()
    }

    /// Ends every session of a room (an operator's dismissal, TRTC `DismissRoom`); returns
    /// how many. For a while after, a keepalive from one of them is answered
    /// `room_dismissed`, so its client can say why the session ended.
    pub fn dismiss_room(&mut self, now: Now, key: &RoomKey, updates: &mut Vec<Update>) -> usize {
        let ids = self.rooms.get(key).map(|r| r.members.clone()).unwrap_or_default();
        let until = now.mono_ms + u64::from(self.timeouts.session_secs) * 1000 + ENDED_KEEP_MS;
        for id in &ids {
            self.remove(*id, updates);
            if self.ended.len() >= ENDED_MAX {
                // Bounded: forget the reasons that expire first.
                let oldest = self.ended.iter().min_by_key(|(_, (_, u))| *u).map(|(id, _)| *id);
                if let Some(o) = oldest {
                    self.ended.remove(&o);
                }
            }
            self.ended.insert(*id, (ErrorCode::RoomDismissed, until));
        }
        ids.len()
    }

    /// Ends one user's session in a room; returns whether there was one.
    pub fn remove_user(&mut self, key: &RoomKey, user: &UserId, updates: &mut Vec<Update>) -> bool {
        match self.by_user.get(&(key.clone(), user.clone())).copied() {
            Some(id) => self.remove(id, updates),
            None => false,
        }
    }

    /// Ends a session (leave, expiry, replacement, or an operator's removal).
    pub fn remove(&mut self, id: SessionId, updates: &mut Vec<Update>) -> bool {
        let Some(e) = self.sessions.remove(&id) else {
            return self.remove_leg(id, updates);
        };
        let info = e.info;
        self.by_addr.remove(&info.addr);
        self.by_user.remove(&(info.room.clone(), info.user.clone()));
        let app = self.apps.get_mut(&info.room.app).expect("sessions belong to configured apps");
        app.sessions -= 1;
        if let Some(r) = self.rooms.get_mut(&info.room) {
            r.members.retain(|m| *m != id);
            if r.members.is_empty() {
                self.rooms.remove(&info.room);
                app.rooms -= 1;
                updates.push(Update::Down(info.clone()));
                self.room_changed(&info.room, false, updates);
                return true;
            }
        }
        updates.push(Update::Down(info));
        true
    }
}

/// 32-byte secrets from SHA-256(seed ‖ counter): the cookie secrets (they protect no
/// traffic, only say which address a cookie was sent to) and deterministic simulations.
/// Where this registry's session ids start: a random 48-bit number (never 0), so ids do not
/// repeat across relayd restarts. A client of an earlier process keeps sending keepalives
/// for its old id; if a new session had that id, the keepalive would fail its MAC and go
/// unanswered (the client would wait out its no-answer deadline) instead of being told
/// `unknown_session` at once. 48 bits leave room for 2^64 - 2^48 ids after the start.
fn first_session_id(seed: &[u8; 32]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"edgerelay session ids");
    h.update(seed);
    let d: [u8; 32] = h.finalize().into();
    (u64::from_be_bytes([0, 0, d[0], d[1], d[2], d[3], d[4], d[5]])).max(1)
}

fn seeded(seed: [u8; 32]) -> Box<dyn FnMut() -> [u8; 32] + Send> {
    let mut counter = 0u64;
    Box::new(move || {
        counter += 1;
        let mut h = Sha256::new();
        h.update(seed);
        h.update(counter.to_be_bytes());
        h.finalize().into()
    })
}

/// Verifies with each secret in turn (newest first) and returns the one that matched; any
/// error other than a bad signature (expiry) stops the search.
fn verify_with_any(
    secrets: &[Vec<u8>],
    verify: impl Fn(&[u8]) -> Result<(), usersig::Error>,
) -> Result<&[u8], usersig::Error> {
    let mut last = usersig::Error::BadSignature;
    for k in secrets {
        match verify(k) {
            Ok(()) => return Ok(k),
            Err(usersig::Error::BadSignature) => last = usersig::Error::BadSignature,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn credential_refusal(e: usersig::Error) -> Refusal {
    match e {
        usersig::Error::Expired => Refusal(ErrorCode::Expired, "credential has expired"),
        usersig::Error::NotYetValid => Refusal(ErrorCode::Expired, "credential is not valid yet: check the clock"),
        _ => Refusal(ErrorCode::BadSignature, "credential signature does not verify"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_start_somewhere_else_after_each_start() {
        let starts: HashSet<u64> = (0u8..64).map(|i| first_session_id(&[i; 32])).collect();
        assert_eq!(starts.len(), 64, "distinct seeds, distinct first ids");
        assert!(starts.iter().all(|id| (1..1 << 48).contains(id)));
    }
}
