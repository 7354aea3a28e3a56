//! A sans-IO client session: join, protect, unprotect, keepalive, leave.
//!
//! With the relay's public key ([`Node::key`]) the client joins with v2
//! ([`crate::proto::v2`]): every join attempt is a fresh Noise NK handshake (the relay's
//! replay cache refuses a retransmitted copy), a cookie reply makes the next attempt carry
//! mac2, and only an answer that decrypts under that key counts. Without it, the client
//! sends a v1 join, which relays refuse unless the app allows v1 joins.
//!
//! Used by `relay-client`, the benchmarks and the tests. The client keeps per-SSRC send
//! state (ROC) and per-SSRC receive state (replay windows) for the streams the relay
//! forwards to it. The client side may allocate: it is not the relay's per-packet path.
//!
//! In-room messages (v2 sessions, [`crate::messages`] has the rules): [`Client::send_message`]
//! seals one; an incoming one yields [`Event::Messages`] and waits in a bounded queue for
//! [`Client::next_message`]. Reliable messages in both directions need acks and
//! retransmissions, so the client queues datagrams of its own: call
//! [`Client::poll_timeouts`] at [`Client::next_timeout`] and send whatever
//! [`Client::poll_transmit`] returns after each call into the client. Ordered messages
//! reach the application in the relay's order, held (bounded) until a gap fills or times
//! out.
//!
//! Staying joined ([`liveness`] has the timers): [`Client::poll_session`] sends the
//! keepalives, notices a lost session (an `unknown_session` answer to a keepalive, after a
//! relay restart for example, or no answer within the no-answer deadline) and joins again
//! by itself, with fresh SSRCs, until it is back ([`Event::Rejoined`]). Fresh SSRCs because
//! the relay refuses an SSRC declared twice in a room's lifetime (a room that outlived the
//! session would refuse the old ones), and so that no receiver ever sees one SSRC's packet
//! indexes start over.
//!
//! Failing over ([`ClientConfig::nodes`], an ordered list as relay-control's node selection
//! gives it): the client joins the first node. An `unknown_session` answer is a restart of
//! that node, so it is joined again. Silence past the failover deadline (no keepalive-ack,
//! no media: [`liveness`] says why it is about a second, and how quiet clients probe) means
//! the node is gone: the client moves to the next node in the list (wrapping), with the
//! same credentials and fresh SSRCs, and moves on again whenever a node does not answer its
//! joins within that deadline. Once joined there it reports [`Event::FailedOver`] and
//! counts it ([`Client::failovers`]). The node changes, so the caller sends everything to
//! [`Client::relay_addr`].
#![forbid(unsafe_code)]

pub mod liveness;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::handshake::{KeyPair, MessageKeys, SessionSecrets};
use crate::identity::RelayKey;
use crate::ids::RoomId;
use crate::messages::{first_sight, Due, Pushed, Reorder, Retransmits, MAX_PENDING};
use crate::noise::Initiator;
use crate::proto::msg::{self, Ack, Flags, Frame, Message, ACK_LEN, MAX_BODY_LEN, MAX_FRAME_LEN};
use crate::proto::v2::{self, AnswerPayload, COOKIE_LEN};
use crate::proto::{self, DeclaredSsrc, ErrorCode, Join, JoinError, JoinOk, MsgType, Ticket, MAC_LEN, MAX_SSRCS};
use crate::srtp::{
    self, Profile, ReplayWindow, RtcpPacket, RtcpReceiver, RtpPacket, RtpReceiver, RtpSender, SessionKeys,
};
use liveness::{Backoff, Liveness, Timers};

/// Received messages the client keeps for [`Client::next_message`]; more are dropped.
pub const MAX_READY: usize = 1024;
/// Datagrams the client keeps for [`Client::poll_transmit`]; more are dropped.
pub const MAX_TRANSMIT: usize = 256;

/// Errors of the client API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operation needs a joined session.
    #[error("not joined")]
    NotJoined,
    /// The SSRC was not declared in the join.
    #[error("SSRC {0:#x} was not declared in the join")]
    UndeclaredSsrc(u32),
    /// Too many SSRCs declared.
    #[error("at most {MAX_SSRCS} SSRCs may be declared")]
    TooManySsrcs,
    /// [`ClientConfig::nodes`] is empty.
    #[error("no relay node to join")]
    NoNodes,
    /// In-room messages and holds need a v2 session; this one joined with v1.
    #[error("in-room messages and holds need a v2 session")]
    NeedsV2,
    /// [`MAX_PENDING`] reliable messages are unacknowledged already.
    #[error("{MAX_PENDING} reliable messages await acks; wait for some")]
    TooManyPending,
    /// Encoding the join failed.
    #[error(transparent)]
    Proto(#[from] proto::Error),
    /// SRTP failed.
    #[error(transparent)]
    Srtp(#[from] srtp::Error),
}

/// What to join with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The app.
    pub sdkappid: u32,
    /// The room.
    pub room: RoomId,
    /// The UserSig.
    pub usersig: String,
    /// An optional PrivateMapKey.
    pub private_map_key: Option<String>,
    /// The SRTP profile.
    pub profile: Profile,
    /// Streams this client will send.
    pub ssrcs: Vec<DeclaredSsrc>,
    /// The relays to join, in order of preference (relay-control's `relays`): the first is
    /// joined, the next after the current one stops answering. At least one.
    pub nodes: Vec<Node>,
    /// With several nodes, how long without an authenticated answer before the client moves
    /// to the next one; `None` is [`liveness::DEFAULT_FAILOVER_MS`]. Never longer than the
    /// relay's session timeout, never shorter than [`liveness::MIN_FAILOVER_MS`]. Ignored
    /// with one node, whose deadline is [`liveness::no_answer_deadline_ms`].
    pub failover_after_ms: Option<u64>,
}

/// A relay node a client may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Its UDP endpoint.
    pub addr: SocketAddr,
    /// Its static public key (`relayd key show`, or the minting API's answer): join v2 to
    /// it. `None` sends a v1 join.
    pub key: Option<RelayKey>,
}

impl Node {
    /// A node at `addr` with the static key `key` (`None`: v1 joins).
    pub fn new(addr: SocketAddr, key: Option<RelayKey>) -> Self {
        Self { addr, key }
    }
}

/// What a received datagram was.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Join-ok with a valid key confirmation.
    Joined {
        /// The session id.
        session: u64,
    },
    /// Joined again after the session was lost ([`Client::poll_session`]); the declared
    /// SSRCs are fresh ([`ClientConfig::ssrcs`] through [`Client::config`]).
    Rejoined {
        /// The new session id.
        session: u64,
    },
    /// Joined another node after the session's node stopped answering
    /// ([`Client::poll_session`]); the declared SSRCs are fresh, and everything goes to
    /// [`Client::relay_addr`] (`to`) now.
    FailedOver {
        /// The new session id.
        session: u64,
        /// The node that stopped answering.
        from: SocketAddr,
        /// The node joined.
        to: SocketAddr,
        /// When the session was given up (the `now_ms` of that [`Client::poll_session`]).
        lost_ms: u64,
    },
    /// The session is gone: the relay answered our keepalive with `unknown_session`.
    /// [`Client::poll_session`] joins again.
    SessionLost,
    /// Join-error (or an error answer to a keepalive).
    Refused {
        /// The code, `None` if unknown to this client.
        code: Option<ErrorCode>,
        /// The detail text.
        detail: String,
    },
    /// A keepalive was acknowledged.
    KeepaliveAck,
    /// The relay is under load and sent a cookie: send [`Client::join`] again now (the next
    /// join carries it).
    Cookie,
    /// The relay saw this session's keepalive from a new address (a NAT rebinding): join
    /// again from here.
    AddressChanged,
    /// A join answer that does not decrypt under the relay key this client holds: whoever
    /// sent it is not that relay. Ignored; the client keeps waiting for the real one.
    Unverified,
    /// A media packet, decrypted in place: `buf[..len]` is plaintext RTP or RTCP.
    Media {
        /// RTP SSRC or RTCP sender SSRC.
        ssrc: u32,
        /// RTCP rather than RTP.
        rtcp: bool,
        /// Plaintext length.
        len: usize,
        /// The SRTP/SRTCP packet index.
        index: u64,
    },
    /// Media that failed SRTP checks.
    MediaError(srtp::Error),
    /// In-room messages are ready for [`Client::next_message`] (`ready` in all; 0 for a
    /// duplicate or a message held for order). An ack may wait in
    /// [`Client::poll_transmit`].
    Messages {
        /// Messages waiting.
        ready: usize,
    },
    /// The relay acknowledged our reliable message `seq` (of the stream `reliable`,
    /// `ordered` says): it stops being retransmitted.
    MessageAcked {
        /// The number [`Client::send_message`] returned.
        seq: u32,
        /// Its stream was ordered.
        ordered: bool,
    },
    /// Anything else (bad join-ok confirmation, wrong session, junk).
    Ignored,
}

/// An in-room message from another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The sender's user id, as the relay vouches for it.
    pub from_user: String,
    /// The command id, 1–10.
    pub cmd: u8,
    /// The data.
    pub data: Vec<u8>,
    /// Its number in this client's stream of that kind (the relay numbers per receiver).
    pub seq: u32,
    /// Sent reliable.
    pub reliable: bool,
    /// Sent ordered.
    pub ordered: bool,
}

/// What a client did with in-room messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MessageStats {
    /// Messages sent (first transmissions).
    pub sent: u64,
    /// Retransmissions of our reliable messages.
    pub retransmitted: u64,
    /// Our reliable messages the relay acknowledged.
    pub acked: u64,
    /// Our reliable messages given up after [`crate::messages::MAX_TRIES`].
    pub given_up: u64,
    /// Messages received and queued for the application.
    pub received: u64,
    /// Reliable messages received again (re-acknowledged, not queued again).
    pub duplicates: u64,
    /// Ordered, unreliable messages older than one delivered: dropped.
    pub late: u64,
    /// Numbers skipped in an ordered stream after a gap timed out.
    pub gaps_skipped: u64,
    /// Message datagrams refused: replayed counter, bad tag, malformed, or a queue full.
    pub rejected: u64,
}

/// Message number a [`Client::send_message`] datagram carries, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentMessage {
    /// Its number in its stream (an [`Event::MessageAcked`] names it).
    pub seq: u32,
    /// The datagram's length.
    pub len: usize,
}

struct Messaging {
    keys: MessageKeys,
    tx_counter: u64,
    /// Counters accepted from the relay.
    rx: ReplayWindow,
    out_seq: [u32; 4],
    pending: Retransmits,
    /// The relay's reliable, unordered numbers seen.
    seen: ReplayWindow,
    /// Ordered streams from the relay: unreliable, then reliable.
    ordered: [Reorder<ReceivedMessage>; 2],
    ready: VecDeque<ReceivedMessage>,
    transmit: VecDeque<Vec<u8>>,
    stats: MessageStats,
}

impl Messaging {
    fn new(keys: MessageKeys) -> Self {
        Self {
            keys,
            tx_counter: 0,
            rx: ReplayWindow::new(),
            out_seq: [0; 4],
            pending: Retransmits::default(),
            seen: ReplayWindow::new(),
            ordered: Default::default(),
            ready: VecDeque::new(),
            transmit: VecDeque::new(),
            stats: MessageStats::default(),
        }
    }

    /// Seals `body` as the next datagram toward the relay.
    fn seal(&mut self, ty: MsgType, session: u64, body: &[u8], out: &mut [u8]) -> Result<usize, proto::Error> {
        self.tx_counter += 1;
        msg::seal(ty, session, self.tx_counter, &self.keys.c2r, body, out)
    }

    fn queue(&mut self, datagram: Vec<u8>) {
        if self.transmit.len() < MAX_TRANSMIT {
            self.transmit.push_back(datagram);
        } else {
            self.stats.rejected += 1;
        }
    }

    fn ack(&mut self, session: u64, flags: Flags, seq: u32) {
        let mut out = [0u8; ACK_LEN];
        if let Ok(n) = self.seal(MsgType::MessageAck, session, &Ack { flags, seq }.to_bytes(), &mut out) {
            self.queue(out[..n].to_vec());
        }
    }

    fn deliver(&mut self, m: ReceivedMessage) {
        if self.ready.len() < MAX_READY {
            self.stats.received += 1;
            self.ready.push_back(m);
        } else {
            self.stats.rejected += 1;
        }
    }
}

struct Joined {
    session: u64,
    secrets: SessionSecrets,
    up: SessionKeys,
    down: SessionKeys,
    senders: HashMap<u32, (RtpSender, u32)>,
    receivers: HashMap<u32, (RtpReceiver, RtcpReceiver)>,
    counter: u64,
    keepalive_secs: u16,
    timeout_secs: u16,
    msgs: Option<Messaging>,
}

/// What [`Client::poll_session`] wrote into its buffer: send it to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// A keepalive of `len` bytes.
    Keepalive(usize),
    /// A join (again, after a loss) of `len` bytes.
    Join(usize),
}

/// Why a session was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The relay answered a keepalive with `unknown_session`.
    UnknownSession,
    /// Nothing authenticated came from the relay within the no-answer deadline.
    NoAnswer,
}

/// A lost session being joined again.
struct Rejoining {
    attempts: Backoff,
    /// The node the session was lost at, and when.
    lost: (usize, u64),
    /// Since when the current node has not answered a join (moved on at the deadline).
    since_ms: u64,
}

/// A client session.
pub struct Client {
    cfg: ClientConfig,
    key: KeyPair,
    join: Vec<u8>,
    joined: Option<Joined>,
    /// v2: the handshake of the last join sent, and that join's mac1.
    initiator: Option<(Initiator, [u8; MAC_LEN])>,
    cookie: Option<[u8; COOKIE_LEN]>,
    attempts: u64,
    /// The last `now_ms` the caller gave ([`Client::handle`] uses it).
    now_ms: u64,
    /// The keepalive schedule of the joined session, from its first
    /// [`poll_session`](Client::poll_session).
    liveness: Option<Liveness>,
    /// Set while a lost session is being joined again.
    rejoining: Option<Rejoining>,
    /// Sessions lost, by reason: unknown session, no answer.
    losses: [u64; 2],
    /// The node in [`ClientConfig::nodes`] joined (or being joined).
    node: usize,
    /// Sessions joined at another node than the one lost.
    failovers: u64,
    /// Fresh SSRCs drawn so far (the derivation's counter).
    ssrc_draws: u64,
}

impl Client {
    /// A client with a fresh ephemeral key.
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        Self::with_key(cfg, KeyPair::generate())
    }

    /// A client with a given key (deterministic tests).
    pub fn with_key(cfg: ClientConfig, key: KeyPair) -> Result<Self, Error> {
        if cfg.ssrcs.len() > MAX_SSRCS {
            return Err(Error::TooManySsrcs);
        }
        if cfg.nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        Ok(Self {
            cfg,
            key,
            join: Vec::new(),
            joined: None,
            initiator: None,
            cookie: None,
            attempts: 0,
            now_ms: 0,
            liveness: None,
            rejoining: None,
            losses: [0; 2],
            node: 0,
            failovers: 0,
            ssrc_draws: 0,
        })
    }

    /// The node joined, or being joined: send everything to its address.
    pub fn node(&self) -> Node {
        self.cfg.nodes[self.node]
    }

    /// The address to send to ([`node`](Self::node)'s): it changes on a failover.
    pub fn relay_addr(&self) -> SocketAddr {
        self.node().addr
    }

    /// Before the first join is answered, moves to the next node (wrapping) and returns it,
    /// keeping the SSRCs (the caller's, which an external tool may be using): for callers
    /// that drive their first join themselves ([`join`](Self::join)) and give up on a node
    /// that does not answer. `None` (and no move) once joined or rejoining:
    /// [`poll_session`](Self::poll_session) moves then.
    pub fn try_next_node(&mut self) -> Option<Node> {
        if self.joined.is_some() || self.rejoining.is_some() {
            return None;
        }
        self.next_node();
        Some(self.node())
    }

    /// Sessions joined at another node than the one lost ([`Event::FailedOver`]).
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// The config.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Writes a join datagram stamped with the system clock; see [`join_at`](Self::join_at).
    pub fn join(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        self.join_at(crate::time::unix_now_ms(), out)
    }

    /// Writes a join datagram; send a fresh one (on timeout, or after [`Event::Cookie`])
    /// until [`Event::Joined`]. `now_unix_ms` stamps a v2 join for the relay's window.
    pub fn join_at(&mut self, now_unix_ms: u64, out: &mut [u8]) -> Result<usize, Error> {
        let mut ssrcs = [None; MAX_SSRCS];
        for (s, d) in ssrcs.iter_mut().zip(&self.cfg.ssrcs) {
            *s = Some(*d);
        }
        if let Some(relay) = self.node().key {
            let p = v2::JoinPayload {
                timestamp_ms: now_unix_ms,
                sdkappid: self.cfg.sdkappid,
                profile: self.cfg.profile.id(),
                room: self.cfg.room.clone(),
                ssrcs,
                usersig: &self.cfg.usersig,
                private_map_key: self.cfg.private_map_key.as_deref(),
            };
            // A fresh ephemeral key per attempt, derived from this client's key so that
            // deterministic tests stay deterministic.
            self.attempts += 1;
            let e = crate::handshake::derive_secret(&self.key.secret_bytes(), self.attempts);
            let (init, n) = v2::write_join(&relay, e, &p, self.cookie.as_ref(), out)?;
            let mac1 = v2::JoinFrame::new_checked(&out[..n])?.mac1();
            self.initiator = Some((init, mac1));
            self.join = out[..n].to_vec();
            return Ok(n);
        }
        let j = Join {
            sdkappid: self.cfg.sdkappid,
            profile: self.cfg.profile.id(),
            room: self.cfg.room.clone(),
            key_share: self.key.public,
            ssrcs,
            usersig: &self.cfg.usersig,
            private_map_key: self.cfg.private_map_key.as_deref(),
        };
        let n = j.write(out)?;
        self.join = out[..n].to_vec();
        Ok(n)
    }

    /// The session id once joined.
    pub fn session(&self) -> Option<u64> {
        self.joined.as_ref().map(|j| j.session)
    }

    /// The negotiated secrets once joined.
    pub fn secrets(&self) -> Option<&SessionSecrets> {
        self.joined.as_ref().map(|j| &j.secrets)
    }

    /// Keepalive interval and session timeout the relay announced.
    pub fn timers(&self) -> Option<(u16, u16)> {
        self.joined.as_ref().map(|j| (j.keepalive_secs, j.timeout_secs))
    }

    /// Handles a datagram from the relay at `now_ms` (monotonic milliseconds, the clock of
    /// [`poll_timeouts`](Self::poll_timeouts)); media is decrypted in place.
    pub fn handle_at(&mut self, now_ms: u64, buf: &mut [u8]) -> Event {
        self.now_ms = self.now_ms.max(now_ms);
        self.handle(buf)
    }

    /// Handles a datagram from the relay; media is decrypted in place. Messages held for
    /// order are stamped with the last time given to [`handle_at`](Self::handle_at),
    /// [`poll_timeouts`](Self::poll_timeouts) or [`send_message`](Self::send_message).
    pub fn handle(&mut self, buf: &mut [u8]) -> Event {
        let ev = match proto::demux(buf) {
            proto::Demux::Control => self.handle_control(buf),
            proto::Demux::Media => self.handle_media(buf),
            proto::Demux::Other => Event::Ignored,
        };
        self.track(ev)
    }

    /// Keeps the session's liveness in step with what arrived.
    fn track(&mut self, ev: Event) -> Event {
        let now = self.now_ms;
        let ack = ev == Event::KeepaliveAck;
        if ack || matches!(ev, Event::Media { .. }) {
            // Authenticated: this relay holds our session.
            if let Some(l) = self.liveness.as_mut() {
                l.answered(now, ack);
            }
            return ev;
        }
        if matches!(ev, Event::Refused { .. } | Event::Cookie) {
            // The node answers our joins: it is alive, so no moving on yet.
            if let Some(r) = self.rejoining.as_mut() {
                r.since_ms = now;
            }
        }
        let Event::Refused { code: Some(code), .. } = ev else {
            return match ev {
                Event::Joined { session } => match self.rejoining.take() {
                    Some(Rejoining { lost: (from, lost_ms), .. }) if from != self.node => {
                        self.failovers += 1;
                        Event::FailedOver { session, from: self.cfg.nodes[from].addr, to: self.relay_addr(), lost_ms }
                    }
                    Some(_) => Event::Rejoined { session },
                    None => ev,
                },
                ev => ev,
            };
        };
        // The refusal is not authenticated (the relay has no key for a session it does not
        // know): believed only as the answer to a keepalive we are waiting on.
        if code == ErrorCode::UnknownSession && self.liveness.is_some_and(|l| l.awaiting_answer()) {
            self.lose(now, Loss::UnknownSession);
            return Event::SessionLost;
        }
        // The operator ended the room (the answer to a keepalive): the session is over for
        // good, so it is forgotten and never joined again.
        if code == ErrorCode::RoomDismissed && self.rejoining.is_none() {
            self.joined = None;
            self.liveness = None;
            self.initiator = None;
            self.cookie = None;
            return ev;
        }
        if code == ErrorCode::SsrcConflict && self.rejoining.is_some() {
            self.fresh_ssrcs();
        }
        ev
    }

    /// Drives the session at `now_ms` (monotonic milliseconds; `now_unix_ms` stamps joins):
    /// writes into `out` the keepalive or join due now, if any. Call it at
    /// [`next_session_timeout`](Self::next_session_timeout) and after each
    /// [`handle_at`](Self::handle_at). Once joined, it sends keepalives at the interval the
    /// relay gave; when the session is lost ([`Event::SessionLost`], or no answer within
    /// [`liveness::no_answer_deadline_ms`], or with several nodes the failover deadline) it
    /// forgets it, draws fresh SSRCs and joins again: at once, then on
    /// [`liveness::Backoff`]'s schedule until joined ([`Event::Rejoined`]). After no answer,
    /// and whenever the node joined does not answer a join within the failover deadline, it
    /// moves to the next node first ([`Event::FailedOver`] once joined there). Before the
    /// first join it does nothing.
    pub fn poll_session(&mut self, now_ms: u64, now_unix_ms: u64, out: &mut [u8]) -> Result<Option<Transmit>, Error> {
        self.now_ms = self.now_ms.max(now_ms);
        if self.rejoining.is_none() {
            let Some((keepalive_secs, timeout_secs)) = self.timers() else { return Ok(None) };
            let timers = match self.failover_ms() {
                Some(f) => Timers::failover(keepalive_secs, timeout_secs, f),
                None => Timers::single(keepalive_secs, timeout_secs),
            };
            let l = *self.liveness.get_or_insert_with(|| Liveness::new(now_ms, timers));
            if l.lost(now_ms) {
                self.lose(now_ms, Loss::NoAnswer);
            } else if l.keepalive_due(now_ms) {
                let n = self.keepalive(out)?;
                if let Some(l) = self.liveness.as_mut() {
                    l.sent_keepalive(now_ms);
                }
                return Ok(Some(Transmit::Keepalive(n)));
            } else {
                return Ok(None);
            }
        }
        let failover_ms = self.failover_ms();
        let Some(r) = self.rejoining.as_mut() else { return Ok(None) };
        if failover_ms.is_some_and(|f| now_ms >= r.since_ms + f) {
            // This node does not answer our joins either: try the next.
            r.since_ms = now_ms;
            r.attempts = Backoff::new(now_ms);
            self.next_node();
            self.fresh_ssrcs();
        }
        let Some(r) = self.rejoining.as_mut() else { return Ok(None) };
        if !r.attempts.take(now_ms) {
            return Ok(None);
        }
        Ok(Some(Transmit::Join(self.join_at(now_unix_ms, out)?)))
    }

    /// The failover deadline, with more than one node.
    fn failover_ms(&self) -> Option<u64> {
        (self.cfg.nodes.len() > 1).then(|| liveness::failover_deadline_ms(self.cfg.failover_after_ms))
    }

    /// Moves to the next node (wrapping): the next join is a fresh handshake to its key.
    fn next_node(&mut self) {
        self.node = (self.node + 1) % self.cfg.nodes.len();
        self.initiator = None;
        self.cookie = None;
    }

    /// When [`poll_session`](Self::poll_session) next has something to do (`None` before
    /// the first join, or before the first poll after it: poll now).
    pub fn next_session_timeout(&self) -> Option<u64> {
        match (&self.rejoining, &self.liveness) {
            (Some(r), _) => {
                let move_on = self.failover_ms().map_or(u64::MAX, |f| r.since_ms + f);
                Some(r.attempts.next_ms().min(move_on))
            }
            (None, Some(l)) if self.joined.is_some() => Some(l.next_due_ms()),
            _ => None,
        }
    }

    /// Whether a lost session is being joined again.
    pub fn is_rejoining(&self) -> bool {
        self.rejoining.is_some()
    }

    /// Sessions lost so far, by reason.
    pub fn losses(&self, why: Loss) -> u64 {
        self.losses[why as usize]
    }

    /// Forgets the session and starts joining again with fresh SSRCs: the same node after
    /// `unknown_session` (it restarted), the next one after no answer.
    fn lose(&mut self, now_ms: u64, why: Loss) {
        self.losses[why as usize] += 1;
        self.joined = None;
        self.liveness = None;
        self.initiator = None;
        self.cookie = None;
        let lost = (self.node, now_ms);
        if why == Loss::NoAnswer {
            self.next_node();
        }
        self.fresh_ssrcs();
        self.rejoining = Some(Rejoining { attempts: Backoff::new(now_ms), lost, since_ms: now_ms });
    }

    /// Replaces every declared SSRC with a fresh one (derived from this client's key, so
    /// deterministic tests stay deterministic), keeping each stream's kind.
    fn fresh_ssrcs(&mut self) {
        let old: Vec<u32> = self.cfg.ssrcs.iter().map(|d| d.ssrc.get()).collect();
        for i in 0..self.cfg.ssrcs.len() {
            let ssrc = loop {
                self.ssrc_draws += 1;
                let v = fresh_ssrc(&self.key.secret_bytes(), self.ssrc_draws);
                let taken = old.contains(&v) || self.cfg.ssrcs[..i].iter().any(|d| d.ssrc.get() == v);
                if let (false, Ok(s)) = (taken, crate::ids::Ssrc::new(v)) {
                    break s;
                }
            };
            self.cfg.ssrcs[i].ssrc = ssrc;
        }
    }

    fn handle_control(&mut self, buf: &[u8]) -> Event {
        let Ok((version, ty, _)) = proto::parse_any_header(buf) else {
            return Event::Ignored;
        };
        if version == proto::VERSION_2 {
            return self.handle_v2(ty, buf);
        }
        match ty {
            MsgType::JoinOk => {
                let Ok(ok) = JoinOk::parse(buf) else { return Event::Ignored };
                if self.join.is_empty() {
                    return Event::Ignored;
                }
                let Ok(secrets) = self.key.agree(&ok.key_share, &self.join, &ok.key_share, self.cfg.profile) else {
                    return Event::Ignored;
                };
                if secrets.verify_confirm(ok.session, &ok.confirm).is_err() {
                    return Event::Ignored;
                }
                if self.joined.as_ref().is_some_and(|j| j.session == ok.session) {
                    return Event::Joined { session: ok.session };
                }
                self.install(ok.session, secrets, ok.keepalive_secs, ok.timeout_secs);
                Event::Joined { session: ok.session }
            }
            MsgType::JoinError => match JoinError::parse(buf) {
                Ok(e) => Event::Refused { code: e.code, detail: e.detail.to_owned() },
                Err(_) => Event::Ignored,
            },
            MsgType::KeepaliveAck => {
                let (Ok(t), Some(j)) = (Ticket::parse(buf), self.joined.as_ref()) else {
                    return Event::Ignored;
                };
                if t.session == j.session && j.secrets.verify_ticket(&t) {
                    Event::KeepaliveAck
                } else {
                    Event::Ignored
                }
            }
            _ => Event::Ignored,
        }
    }

    fn handle_v2(&mut self, ty: MsgType, buf: &[u8]) -> Event {
        match ty {
            MsgType::JoinOk => {
                let Some((init, _)) = self.initiator.as_ref() else { return Event::Ignored };
                let mut copy = [0u8; proto::MAX_LEN];
                let copy = &mut copy[..buf.len()];
                copy.copy_from_slice(buf);
                let Ok((answer, split)) = v2::read_answer(init, copy) else { return Event::Unverified };
                match answer {
                    AnswerPayload::Refused { code, detail } => {
                        Event::Refused { code: ErrorCode::from_u16(code), detail: detail.to_owned() }
                    }
                    AnswerPayload::Joined { session, keepalive_secs, timeout_secs } => {
                        let secrets = SessionSecrets::from_split(&split, self.cfg.profile);
                        self.initiator = None;
                        self.install(session, secrets, keepalive_secs, timeout_secs);
                        Event::Joined { session }
                    }
                }
            }
            MsgType::Cookie => {
                let (Some(relay), Some((_, mac1))) = (self.node().key, self.initiator.as_ref()) else {
                    return Event::Ignored;
                };
                match v2::read_cookie(&relay, mac1, buf) {
                    Ok(c) => {
                        self.cookie = Some(c);
                        Event::Cookie
                    }
                    Err(_) => Event::Ignored,
                }
            }
            MsgType::KeepaliveAck | MsgType::AddressChanged => {
                let (Ok(t), Some(j)) = (Ticket::parse(buf), self.joined.as_ref()) else {
                    return Event::Ignored;
                };
                if t.session != j.session || !j.secrets.verify_ticket(&t) {
                    return Event::Ignored;
                }
                if t.ty == MsgType::AddressChanged {
                    Event::AddressChanged
                } else {
                    Event::KeepaliveAck
                }
            }
            MsgType::Message | MsgType::MessageAck => self.handle_message(buf),
            // A v1-format refusal of a ticket (unknown session) is sent for v2 sessions too.
            _ => Event::Ignored,
        }
    }

    fn install(&mut self, session: u64, secrets: SessionSecrets, keepalive_secs: u16, timeout_secs: u16) {
        self.liveness = None;
        let senders = self.cfg.ssrcs.iter().map(|d| (d.ssrc.get(), (RtpSender::new(), 0))).collect();
        let msgs = secrets.msg.clone().map(Messaging::new);
        self.joined = Some(Joined {
            msgs,
            session,
            up: secrets.c2r.session_keys(),
            down: secrets.r2c.session_keys(),
            secrets,
            senders,
            receivers: HashMap::new(),
            counter: 0,
            keepalive_secs,
            timeout_secs,
        });
    }

    fn handle_media(&mut self, buf: &mut [u8]) -> Event {
        let Some(j) = self.joined.as_mut() else {
            return Event::Ignored;
        };
        let rtcp = proto::is_rtcp(buf);
        let ssrc = if rtcp {
            RtcpPacket::new_checked(&*buf).map(|p| p.sender_ssrc_value())
        } else {
            RtpPacket::new_checked(&*buf).map(|p| p.ssrc_value())
        };
        let ssrc = match ssrc {
            Ok(ssrc) => ssrc,
            Err(e) => return Event::MediaError(e),
        };
        // Receive state is created on first sight; bound it so junk cannot grow it.
        if !j.receivers.contains_key(&ssrc) && j.receivers.len() >= 4096 {
            return Event::Ignored;
        }
        let (rtp_rx, rtcp_rx) = j.receivers.entry(ssrc).or_insert_with(|| (RtpReceiver::new(), RtcpReceiver::new()));
        let res = if rtcp { j.down.unprotect_rtcp(rtcp_rx, buf) } else { j.down.unprotect_rtp(rtp_rx, buf) };
        match res {
            Ok(u) => Event::Media { ssrc, rtcp, len: u.len, index: u.index },
            Err(e) => Event::MediaError(e),
        }
    }

    /// Protects an RTP packet `buf[..len]` from a declared SSRC; returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        let pkt = RtpPacket::new_checked(buf.get(..len).ok_or(srtp::Error::BufferTooSmall)?)?;
        let ssrc = pkt.ssrc_value();
        let (sender, _) = j.senders.get_mut(&ssrc).ok_or(Error::UndeclaredSsrc(ssrc))?;
        let roc = sender.next_roc(pkt.seq().get());
        Ok(j.up.protect_rtp(buf, len, roc)?)
    }

    /// Protects an RTCP packet `buf[..len]` whose sender SSRC was declared.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        let ssrc = RtcpPacket::new_checked(buf.get(..len).ok_or(srtp::Error::BufferTooSmall)?)?.sender_ssrc_value();
        let (_, index) = j.senders.get_mut(&ssrc).ok_or(Error::UndeclaredSsrc(ssrc))?;
        let n = j.up.protect_rtcp(buf, len, *index)?;
        *index += 1;
        Ok(n)
    }

    fn handle_message(&mut self, buf: &[u8]) -> Event {
        let now_ms = self.now_ms;
        let Some(j) = self.joined.as_mut() else { return Event::Ignored };
        let (session, Some(m)) = (j.session, j.msgs.as_mut()) else { return Event::Ignored };
        let Ok(f) = Frame::new_checked(buf) else { return Event::Ignored };
        if f.session() != session {
            return Event::Ignored;
        }
        let mut plain = [0u8; proto::MAX_LEN];
        if m.rx.check(f.counter()).is_err() {
            m.stats.rejected += 1;
            return Event::Ignored;
        }
        let Ok(body) = f.open(&m.keys.r2c, &mut plain) else {
            m.stats.rejected += 1;
            return Event::Ignored;
        };
        m.rx.update(f.counter());
        if f.ty() == MsgType::MessageAck {
            let Ok(a) = Ack::parse(body) else { return Event::Ignored };
            if !m.pending.ack(a.flags, a.seq) {
                return Event::Ignored;
            }
            m.stats.acked += 1;
            return Event::MessageAcked { seq: a.seq, ordered: a.flags.ordered() };
        }
        let Ok(msg) = Message::parse(body) else {
            m.stats.rejected += 1;
            return Event::Ignored;
        };
        let Some(from) = msg.from else {
            m.stats.rejected += 1;
            return Event::Ignored;
        };
        let flags = msg.flags;
        let rm = ReceivedMessage {
            from_user: from.to_owned(),
            cmd: msg.cmd,
            data: msg.data.to_vec(),
            seq: msg.seq,
            reliable: flags.reliable(),
            ordered: flags.ordered(),
        };
        match (flags.reliable(), flags.ordered()) {
            (false, false) => m.deliver(rm),
            (true, false) => {
                m.ack(session, flags, msg.seq);
                if first_sight(&mut m.seen, msg.seq) {
                    m.deliver(rm);
                } else {
                    m.stats.duplicates += 1;
                }
            }
            (reliable, true) => {
                let mut ready = Vec::new();
                match m.ordered[usize::from(reliable)].push(msg.seq, rm, reliable, now_ms, |x| ready.push(x)) {
                    Pushed::Ready | Pushed::Held if reliable => m.ack(session, flags, msg.seq),
                    Pushed::Stale if reliable => {
                        m.stats.duplicates += 1;
                        m.ack(session, flags, msg.seq);
                    }
                    Pushed::Stale => m.stats.late += 1,
                    Pushed::Full => m.stats.rejected += 1,
                    _ => {}
                }
                for x in ready {
                    m.deliver(x);
                }
            }
        }
        Event::Messages { ready: m.ready.len() }
    }

    /// Seals an in-room message for the relay to deliver to the room: command id `cmd`
    /// (1–10), at most [`msg::MAX_DATA_LEN`] bytes of `data`. A reliable one is sent again
    /// from [`poll_timeouts`](Self::poll_timeouts) until the relay acknowledges it
    /// ([`Event::MessageAcked`]) or [`crate::messages::MAX_TRIES`] transmissions passed.
    pub fn send_message(
        &mut self,
        now_ms: u64,
        cmd: u8,
        data: &[u8],
        reliable: bool,
        ordered: bool,
        out: &mut [u8],
    ) -> Result<SentMessage, Error> {
        self.now_ms = self.now_ms.max(now_ms);
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        let m = j.msgs.as_mut().ok_or(Error::NeedsV2)?;
        let flags = Flags::new(reliable, ordered);
        if reliable && m.pending.is_full() {
            return Err(Error::TooManyPending);
        }
        let seq = m.out_seq[flags.stream()] + 1;
        let mut body = [0u8; MAX_BODY_LEN];
        let n = Message { cmd, flags, seq, from: None, data }.write(&mut body)?;
        let len = m.seal(MsgType::Message, j.session, &body[..n], out)?;
        m.out_seq[flags.stream()] = seq;
        if reliable {
            m.pending.push(flags, seq, body[..n].to_vec(), now_ms);
        }
        m.stats.sent += 1;
        Ok(SentMessage { seq, len })
    }

    /// Runs what is due at `now_ms`: retransmissions of our reliable messages (queued for
    /// [`poll_transmit`](Self::poll_transmit)), and gaps in ordered streams that timed out
    /// (their held messages become ready).
    pub fn poll_timeouts(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let Some(j) = self.joined.as_mut() else { return };
        let (session, Some(m)) = (j.session, j.msgs.as_mut()) else { return };
        let mut resend = Vec::new();
        while let Some(due) = m.pending.poll(now_ms) {
            match due {
                Due::Resend(o) => resend.push(o.body.clone()),
                Due::GaveUp(_) => m.stats.given_up += 1,
            }
        }
        for body in resend {
            let mut out = [0u8; MAX_FRAME_LEN];
            if let Ok(n) = m.seal(MsgType::Message, session, &body, &mut out) {
                m.stats.retransmitted += 1;
                m.queue(out[..n].to_vec());
            }
        }
        let mut ready = Vec::new();
        for r in &mut m.ordered {
            m.stats.gaps_skipped += r.expire(now_ms, |x| ready.push(x));
        }
        for x in ready {
            m.deliver(x);
        }
    }

    /// The next time [`poll_timeouts`](Self::poll_timeouts) has work.
    pub fn next_timeout(&self) -> Option<u64> {
        let m = self.joined.as_ref()?.msgs.as_ref()?;
        m.pending.next_due().into_iter().chain(m.ordered.iter().filter_map(Reorder::deadline)).min()
    }

    /// Writes the next datagram the client queued (acks, retransmissions) into `out`;
    /// returns its length, or `None` when nothing waits (or `out` is too small for it).
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        let m = self.joined.as_mut()?.msgs.as_mut()?;
        let d = m.transmit.pop_front()?;
        let dst = out.get_mut(..d.len())?;
        dst.copy_from_slice(&d);
        Some(d.len())
    }

    /// The next received message, in delivery order.
    pub fn next_message(&mut self) -> Option<ReceivedMessage> {
        self.joined.as_mut()?.msgs.as_mut()?.ready.pop_front()
    }

    /// Our reliable messages still awaiting the relay's ack.
    pub fn pending_messages(&self) -> usize {
        self.joined.as_ref().and_then(|j| j.msgs.as_ref()).map_or(0, |m| m.pending.len())
    }

    /// What the client did with messages so far (this session).
    pub fn message_stats(&self) -> MessageStats {
        self.joined.as_ref().and_then(|j| j.msgs.as_ref()).map_or_else(MessageStats::default, |m| m.stats)
    }

    fn ticket(&mut self, ty: MsgType, out: &mut [u8]) -> Result<usize, Error> {
        let j = self.joined.as_mut().ok_or(Error::NotJoined)?;
        j.counter += 1;
        Ok(j.secrets.ticket(ty, j.session, j.counter).write(out)?)
    }

    /// Writes an authenticated keepalive.
    pub fn keepalive(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        self.ticket(MsgType::Keepalive, out)
    }

    /// Writes an authenticated hold (v2): a keepalive that may come from another address
    /// than the session's, answered with a keepalive-ack there; the session stays where it
    /// is.
    pub fn hold(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        if self.joined.as_ref().is_some_and(|j| j.secrets.version != proto::VERSION_2) {
            return Err(Error::NeedsV2);
        }
        self.ticket(MsgType::Hold, out)
    }

    /// Writes an authenticated leave and forgets the session.
    pub fn leave(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        let n = self.ticket(MsgType::Leave, out)?;
        self.joined = None;
        self.liveness = None;
        Ok(n)
    }
}

/// The `n`th fresh SSRC of a client whose key is `seed` (SHA-256 under a label of its own,
/// so an SSRC in clear on the wire says nothing about the key's other uses).
fn fresh_ssrc(seed: &[u8; 32], n: u64) -> u32 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"edgerelay client ssrc");
    h.update(seed);
    h.update(n.to_be_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Writes a minimal RTP header (V=2, no CSRC, no extension) and returns its length (12).
pub fn write_rtp_header(buf: &mut [u8], payload_type: u8, seq: u16, timestamp: u32, ssrc: u32) -> usize {
    buf[0] = 0x80;
    buf[1] = payload_type & 0x7f;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    12
}

/// Writes a minimal RTCP receiver report header with no report blocks; returns 8.
pub fn write_rtcp_rr(buf: &mut [u8], ssrc: u32) -> usize {
    buf[0] = 0x80;
    buf[1] = 201;
    buf[2..4].copy_from_slice(&1u16.to_be_bytes());
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    8
}
