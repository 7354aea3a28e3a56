//! Cascade legs, the registry's side: a room with local members on several nodes of a
//! cluster is carried between each pair of them by one leg ([`crate::proto::leg`]), a
//! relay-to-relay session the replicas treat as one more member of the room with
//! [`SessionInfo::leg`] set.
//!
//! - **Who may have a leg**: only the relays relay-control pushed as peers (the cluster's
//!   node registry). A leg join must come from a peer's endpoint and authenticate with that
//!   peer's static key (Noise IK), or it gets no answer at all; its timestamp must be within
//!   the join window and its handshake hash new to the replay cache, so a captured leg join
//!   replayed opens nothing.
//! - **What it carries**: each side announces its local members' streams (every declared
//!   SSRC, RTCP-only ones included, so feedback from remote receivers passes the "speak only
//!   for yourself" check), the whole set each time, every [`ANNOUNCE_MS`] and at once when it
//!   changes. The announcements are the leg's keepalive: a leg that hears none for
//!   [`DEAD_MS`] goes down, and its initiator tries again every [`RETRY_MS`] while the room
//!   has local members.
//! - **SSRCs**: an announced SSRC is accepted only if no local member ever declared it in the
//!   room's lifetime, no other leg of the room carries it, no other leg from the same peer
//!   address carries it (the replicas find a leg's streams by (address, SSRC)), and, once
//!   accepted from one peer, it stays that peer's for the room's lifetime. A local join
//!   declaring an SSRC a leg brought is refused `ssrc_conflict`. So every (receiver key,
//!   SSRC, index) still encrypts one payload. What is refused is counted
//!   (`leg_ssrc_conflicts`) and simply not relayed from that leg.
//! - **Lifetime**: a room that loses its last local member closes its legs (a closing
//!   announcement, then `Down`); a leg join for a room without local members is refused
//!   `not_hosted`. Legs count toward no quota: they are not users.
//! - **Room events**: every room that gains its first local member or loses its last one is
//!   numbered, so relay-control learns within one poll which rooms this node hosts.
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use super::{
    proto, Arc, AtomicU64, CacheLine, DeclaredSsrc, ErrorCode, HashMap, Now, Outcome, Registry, RoomKey, SessionId,
    SessionInfo, SocketAddr, Update, UserId,
};
use crate::handshake::SessionSecrets;
use crate::identity::RelayKey;
use crate::ids::SdkAppId;
use crate::messages::Outbox;
use crate::mgmt;
use crate::noise::IkInitiator;
use crate::proto::leg::{self, AnswerPayload, JoinPayload, Streams, MAX_LEG_STREAMS};
use crate::srtp::Profile;
use crate::usersig::PrivilegeMap;

/// How often each side of an up leg announces its streams (its keepalive).
pub const ANNOUNCE_MS: u64 = 500;
/// Silence after which a leg is down: five announcements missed.
pub const DEAD_MS: u64 = 2_500;
/// How often a connecting leg's initiator sends a fresh handshake, at most.
pub const RETRY_MS: u64 = 1_000;

/// The wait before a connecting leg's next handshake: 250 ms, 500 ms, then [`RETRY_MS`]. The
/// first join to a peer is often lost while the next hop's MAC is learned (the XDP backend
/// asks the kernel to resolve it on the first miss), so the second comes soon.
fn retry_after_ms(attempts: u32) -> u64 {
    (250u64 << attempts.saturating_sub(1).min(2)).min(RETRY_MS)
}
/// Room events remembered for `room_events`; a caller further behind resyncs.
pub const ROOM_EVENTS_MAX: usize = 4096;
/// Legs' SRTP profile: AES-128-GCM, the faster of the two mandatory ones on this path.
const LEG_PROFILE: Profile = Profile::AeadAes128Gcm;

/// A relay legs may go to or come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub node: String,
    /// Its relayd's UDP endpoint.
    pub endpoint: SocketAddr,
    /// Its static key.
    pub key: RelayKey,
}

/// The cascade's state in the registry.
#[derive(Default)]
pub(super) struct Cascade {
    node: Option<String>,
    peers: Vec<Peer>,
    legs: HashMap<SessionId, Leg>,
    by_room: HashMap<RoomKey, Vec<SessionId>>,
    events: VecDeque<(u64, RoomKey, bool)>,
    pub(super) next_event: u64,
    counts: HashMap<&'static str, u64>,
    /// Datagrams the legs send outside of a request (announcements, closings, retries).
    out: Outbox,
}

struct Leg {
    room: RoomKey,
    peer: String,
    addr: SocketAddr,
    initiator: bool,
    opened_ms: u64,
    last_error: Option<String>,
    state: State,
}

enum State {
    /// `attempts` handshakes sent so far: the next one is due `retry_after_ms` later.
    Connecting {
        ik: IkInitiator,
        sent_ms: u64,
        attempts: u32,
    },
    Up(Box<UpLeg>),
    /// Its `Down` is out already (the peer closed it, or it timed out): closing it sends and
    /// pushes nothing more.
    Down,
}

struct UpLeg {
    info: Arc<SessionInfo>,
    secrets: SessionSecrets,
    peer_leg: u64,
    send_key: [u8; 32],
    recv_key: [u8; 32],
    counter_out: u64,
    counter_in: u64,
    out_version: u32,
    announced: Vec<DeclaredSsrc>,
    last_sent_ms: u64,
    in_version: Option<u32>,
    last_heard_ms: u64,
}

impl Cascade {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn peer_at(&self, src: SocketAddr) -> Option<&Peer> {
        self.peers.iter().find(|p| p.endpoint == src)
    }
}

impl Registry {
    /// The cascade's counters (`legs` in `stats`).
    pub fn leg_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.cascade.counts.iter().map(|(k, v)| (*k, *v))
    }

    /// Whether any leg exists (the control thread ticks the legs while one does).
    pub fn has_legs(&self) -> bool {
        !self.cascade.legs.is_empty()
    }

    /// What the legs want to send outside of a request; the control thread sends and clears it.
    pub fn leg_datagrams(&mut self) -> &mut Outbox {
        &mut self.cascade.out
    }

    /// Replaces this node's id and its peers (relay-control's `set_peers`). Legs to a node no
    /// longer a peer, or whose endpoint or key changed, close. Returns how many closed.
    pub fn set_peers(&mut self, node: String, peers: Vec<Peer>, updates: &mut Vec<Update>) -> usize {
        let gone: Vec<SessionId> = self
            .cascade
            .legs
            .iter()
            .filter(|(_, l)| !peers.iter().any(|p| p.node == l.peer && p.endpoint == l.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.close_leg(*id, updates);
        }
        self.cascade.node = Some(node);
        self.cascade.peers = peers;
        gone.len()
    }

    /// Opens the leg of `room` to `peer` unless one exists (connecting or up).
    pub fn open_leg(&mut self, now: Now, room: &RoomKey, peer: &str) -> Result<(), String> {
        if !self.rooms.contains_key(room) {
            return Err(format!("room {room} has no local member here"));
        }
        let Some(p) = self.cascade.peers.iter().find(|p| p.node == peer).cloned() else {
            return Err(format!("node {peer:?} is not a peer (set_peers)"));
        };
        let exists =
            self.cascade.by_room.get(room).is_some_and(|ids| ids.iter().any(|id| self.cascade.legs[id].peer == peer));
        if exists {
            return Ok(());
        }
        let id = SessionId(self.next_id);
        self.next_id += 1;
        let ik = match self.leg_handshake(now, id, room, &p) {
            Ok(ik) => ik,
            Err(e) => return Err(format!("cannot write the leg join: {e}")),
        };
        self.cascade.count("opened");
        self.cascade.legs.insert(
            id,
            Leg {
                room: room.clone(),
                peer: p.node.clone(),
                addr: p.endpoint,
                initiator: true,
                opened_ms: now.mono_ms,
                last_error: None,
                state: State::Connecting { ik, sent_ms: now.mono_ms, attempts: 1 },
            },
        );
        self.cascade.by_room.entry(room.clone()).or_default().push(id);
        Ok(())
    }

    /// Queues a fresh leg join for leg `id` to `p`; returns its handshake state.
    fn leg_handshake(
        &mut self,
        now: Now,
        id: SessionId,
        room: &RoomKey,
        p: &Peer,
    ) -> Result<IkInitiator, proto::Error> {
        let node = self.cascade.node.clone().unwrap_or_default();
        let payload = JoinPayload {
            timestamp_ms: now.unix_secs * 1000,
            leg: id.0,
            sdkappid: room.app.get(),
            room: room.room.clone(),
            node: &node,
        };
        let e = (self.secrets)();
        let s = self.identity.current.secret();
        let mut written = Err(proto::Error::BufferTooSmall);
        self.cascade.out.push(p.endpoint, proto::MAX_LEN, |out| {
            written = leg::write_join(s, p.key.bytes(), e, &payload, out);
            written.as_ref().ok().map(|(_, n)| *n)
        });
        self.cascade.count("joins_sent");
        written.map(|(ik, _)| ik)
    }

    /// The legs, for `legs`.
    pub fn legs(&self, now_ms: u64) -> Vec<mgmt::LegInfo> {
        let mut v: Vec<mgmt::LegInfo> = self
            .cascade
            .legs
            .values()
            .map(|l| {
                let (state, streams_in, streams_out) = match &l.state {
                    State::Connecting { .. } | State::Down => ("connecting", 0, 0),
                    State::Up(u) => ("up", u.info.ssrcs.len() as u32, u.announced.len() as u32),
                };
                mgmt::LegInfo {
                    sdkappid: l.room.app.get().into(),
                    room: mgmt::room_text(&l.room.room),
                    peer: l.peer.clone(),
                    role: if l.initiator { "initiator" } else { "responder" }.into(),
                    state: state.into(),
                    streams_in,
                    streams_out,
                    age_ms: now_ms.saturating_sub(l.opened_ms),
                    last_error: l.last_error.clone(),
                }
            })
            .collect();
        v.sort_by(|a, b| (a.sdkappid, &a.room, &a.peer).cmp(&(b.sdkappid, &b.room, &b.peer)));
        v
    }

    /// Room events from `after` on (see [`mgmt::RoomEvents`]).
    pub fn room_events(&self, after: u64) -> mgmt::RoomEvents {
        let next = self.cascade.next_event;
        let oldest = self.cascade.events.front().map_or(next, |e| e.0);
        let resync = after < oldest || after > next;
        let from = if resync { oldest } else { after };
        let events = self
            .cascade
            .events
            .iter()
            .filter(|e| e.0 >= from)
            .map(|(_, k, local)| mgmt::RoomEvent {
                sdkappid: k.app.get().into(),
                room: mgmt::room_text(&k.room),
                local: *local,
            })
            .collect();
        mgmt::RoomEvents { next, resync, events }
    }

    /// Records that `room` gained its first local member (`local`) or lost its last one; a
    /// room that lost it closes its legs.
    pub(super) fn room_changed(&mut self, room: &RoomKey, local: bool, updates: &mut Vec<Update>) {
        if self.cascade.events.len() >= ROOM_EVENTS_MAX {
            self.cascade.events.pop_front();
        }
        let seq = self.cascade.next_event;
        self.cascade.next_event += 1;
        self.cascade.events.push_back((seq, room.clone(), local));
        if !local {
            let ids = self.cascade.by_room.get(room).cloned().unwrap_or_default();
            for id in ids {
                self.close_leg(id, updates);
            }
        }
    }

    /// Ends a leg: a closing announcement to the peer if it is up, then `Down`.
    fn close_leg(&mut self, id: SessionId, updates: &mut Vec<Update>) {
        let Some(mut l) = self.cascade.legs.remove(&id) else {
            return;
        };
        if let Some(ids) = self.cascade.by_room.get_mut(&l.room) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.cascade.by_room.remove(&l.room);
            }
        }
        self.cascade.count("closed");
        if let State::Up(u) = &mut l.state {
            u.counter_out += 1;
            let s = Streams { closing: true, version: u.out_version.wrapping_add(1), ssrcs: Vec::new() };
            let (key, peer_leg, counter) = (u.send_key, u.peer_leg, u.counter_out);
            self.cascade
                .out
                .push(l.addr, proto::MAX_LEN, |out| leg::write_streams(&key, peer_leg, counter, &s, out).ok());
            updates.push(Update::Down(u.info.clone()));
        }
    }

    /// Takes back leg `id` if it is one (the kernel could not install its address); true if
    /// it was.
    pub(super) fn remove_leg(&mut self, id: SessionId, updates: &mut Vec<Update>) -> bool {
        if !self.cascade.legs.contains_key(&id) {
            return false;
        }
        self.close_leg(id, updates);
        true
    }

    /// A leg join (this relay responds).
    pub(super) fn leg_join(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        reply: &mut [u8],
        updates: &mut Vec<Update>,
    ) -> (Outcome, Option<usize>) {
        let Some(peer) = self.cascade.peer_at(src).cloned() else {
            self.cascade.count("unknown_source");
            return (Outcome::Ignored, None);
        };
        // Answered, so charged first: a peer over its budget costs no Diffie-Hellman.
        if !self.limiter.allow(src, now.mono_ms) {
            self.cascade.count("rate_limited");
            return (Outcome::Ignored, None);
        }
        let mut scratch = [0u8; proto::MAX_LEN];
        let s = self.identity.current.secret();
        let (responder, initiator_static, payload) = match leg::read_join(s, datagram, &mut scratch) {
            Ok(r) => r,
            Err(_) => {
                self.cascade.count("join_failed");
                return (Outcome::Ignored, None);
            }
        };
        if &initiator_static != peer.key.bytes() || payload.node != peer.node {
            // Not the key (or node) the registry has for that endpoint: no answer.
            self.cascade.count("wrong_peer_key");
            return (Outcome::Ignored, None);
        }
        let window_ms = u64::from(self.join_cfg.timestamp_window_secs) * 1000 + 1000;
        let now_unix_ms = now.unix_secs * 1000;
        if payload.timestamp_ms + window_ms < now_unix_ms || payload.timestamp_ms > now_unix_ms + window_ms {
            self.cascade.count("clock_skew");
            return (Outcome::Ignored, None);
        }
        let until = now.mono_ms + (payload.timestamp_ms + window_ms).saturating_sub(now_unix_ms);
        match self.replay.check(&responder.hash(), now.mono_ms, until) {
            crate::guard::Replay::Fresh => {}
            _ => {
                self.cascade.count("replayed");
                return (Outcome::Ignored, None);
            }
        }
        let initiator_leg = payload.leg;
        let room = match SdkAppId::new(payload.sdkappid.into()) {
            Ok(app) if self.apps.contains_key(&app) => RoomKey { app, room: payload.room.clone() },
            _ => return self.refuse_leg(responder, initiator_leg, "app not served here", reply),
        };
        if !self.rooms.contains_key(&room) {
            return self.refuse_leg(responder, initiator_leg, "no local member in the room", reply);
        }
        // One leg per room and peer: a new join from the peer replaces its old leg (it
        // restarted, or lost the answer).
        let old: Vec<SessionId> = self
            .cascade
            .by_room
            .get(&room)
            .map(|ids| ids.iter().filter(|id| self.cascade.legs[id].peer == peer.node).copied().collect())
            .unwrap_or_default();
        for id in old {
            self.cascade.count("replaced");
            self.close_leg(id, updates);
        }
        let id = SessionId(self.next_id);
        self.next_id += 1;
        let e = (self.secrets)();
        let Ok((n, split)) = leg::write_answer(responder, initiator_leg, e, &AnswerPayload::Up { leg: id.0 }, reply)
        else {
            return (Outcome::Ignored, None);
        };
        let secrets = SessionSecrets::from_split(&split, LEG_PROFILE);
        self.cascade.count("accepted");
        self.leg_up(now, id, room, peer, false, initiator_leg, secrets, updates);
        (Outcome::Joined(id), Some(n))
    }

    fn refuse_leg(
        &mut self,
        responder: crate::noise::IkResponder,
        initiator_leg: u64,
        detail: &str,
        reply: &mut [u8],
    ) -> (Outcome, Option<usize>) {
        self.cascade.count("refused");
        let e = (self.secrets)();
        let a = AnswerPayload::Refused { code: ErrorCode::NotHosted as u16, detail };
        let n = leg::write_answer(responder, initiator_leg, e, &a, reply).ok().map(|(n, _)| n);
        (Outcome::Refused(ErrorCode::NotHosted), n)
    }

    /// Installs an up leg and queues its first announcement.
    #[expect(clippy::too_many_arguments, reason = "one call site per role, each naming every part of the leg")]
    fn leg_up(
        &mut self,
        now: Now,
        id: SessionId,
        room: RoomKey,
        peer: Peer,
        initiator: bool,
        peer_leg: u64,
        secrets: SessionSecrets,
        updates: &mut Vec<Update>,
    ) {
        // The initiator sends on the "client to relay" direction, the responder on the other.
        let (uplink, downlink) = if initiator {
            (secrets.r2c.session_keys(), secrets.c2r.session_keys())
        } else {
            (secrets.c2r.session_keys(), secrets.r2c.session_keys())
        };
        let msg = secrets.msg.as_ref().expect("v2 secrets have message keys");
        let (send_key, recv_key) = if initiator { (msg.c2r, msg.r2c) } else { (msg.r2c, msg.c2r) };
        let user = UserId::new(&format!("leg:{}", peer.node)).unwrap_or_else(|_| UserId::new("leg").expect("valid"));
        let info = Arc::new(SessionInfo {
            id,
            room: room.clone(),
            user,
            addr: peer.endpoint,
            privileges: PrivilegeMap::ALL,
            ssrcs: Vec::new(),
            leg: true,
            uplink,
            downlink,
            last_seen_ms: CacheLine(AtomicU64::new(now.mono_ms)),
        });
        updates.push(Update::Up(info.clone()));
        let up = UpLeg {
            info,
            secrets,
            peer_leg,
            send_key,
            recv_key,
            counter_out: 0,
            counter_in: 0,
            out_version: 0,
            announced: Vec::new(),
            last_sent_ms: 0,
            in_version: None,
            last_heard_ms: now.mono_ms,
        };
        let existing = self.cascade.legs.get(&id).map(|l| l.opened_ms);
        self.cascade.legs.insert(
            id,
            Leg {
                room: room.clone(),
                peer: peer.node,
                addr: peer.endpoint,
                initiator,
                opened_ms: existing.unwrap_or(now.mono_ms),
                last_error: None,
                state: State::Up(Box::new(up)),
            },
        );
        let ids = self.cascade.by_room.entry(room).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
        self.announce(id, now, true);
    }

    /// A leg answer (this relay initiated).
    pub(super) fn leg_answer(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        updates: &mut Vec<Update>,
    ) -> Outcome {
        let Ok(leg_id) = leg::answer_leg(datagram) else {
            return Outcome::Ignored;
        };
        let id = SessionId(leg_id);
        let Some(l) = self.cascade.legs.get_mut(&id).filter(|l| l.addr == src) else {
            self.cascade.count("stray_answers");
            return Outcome::Ignored;
        };
        let State::Connecting { ik, .. } = &l.state else {
            return Outcome::Ignored;
        };
        let mut buf = [0u8; proto::MAX_LEN];
        let buf = &mut buf[..datagram.len()];
        buf.copy_from_slice(datagram);
        let (answer, split) = match leg::read_answer(ik, self.identity.current.secret(), buf) {
            Ok(a) => a,
            Err(_) => {
                self.cascade.count("answer_failed");
                return Outcome::Ignored;
            }
        };
        match answer {
            AnswerPayload::Refused { detail, .. } => {
                l.last_error = Some(format!("refused: {detail}"));
                self.cascade.count("refused_by_peer");
                Outcome::Refused(ErrorCode::NotHosted)
            }
            AnswerPayload::Up { leg: peer_leg } => {
                let (room, node) = (l.room.clone(), l.peer.clone());
                let Some(peer) = self.cascade.peers.iter().find(|p| p.node == node).cloned() else {
                    return Outcome::Ignored;
                };
                let secrets = SessionSecrets::from_split(&split, LEG_PROFILE);
                self.cascade.count("up");
                self.leg_up(now, id, room, peer, true, peer_leg, secrets, updates);
                Outcome::Joined(id)
            }
        }
    }

    /// A streams message on an up leg.
    pub(super) fn leg_streams(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        updates: &mut Vec<Update>,
    ) -> Outcome {
        let Ok((leg_id, counter)) = leg::streams_ids(datagram) else {
            return Outcome::Ignored;
        };
        let id = SessionId(leg_id);
        let Some(l) = self.cascade.legs.get_mut(&id).filter(|l| l.addr == src) else {
            self.cascade.count("stray_streams");
            return Outcome::Ignored;
        };
        let State::Up(u) = &mut l.state else {
            return Outcome::Ignored;
        };
        if counter <= u.counter_in {
            self.cascade.count("streams_replayed");
            return Outcome::Ignored;
        }
        let mut buf = [0u8; proto::MAX_LEN];
        let buf = &mut buf[..datagram.len()];
        buf.copy_from_slice(datagram);
        let Ok(s) = leg::read_streams(&u.recv_key, buf) else {
            self.cascade.count("streams_bad_auth");
            return Outcome::Ignored;
        };
        u.counter_in = counter;
        u.last_heard_ms = now.mono_ms;
        if s.closing {
            self.cascade.count("closed_by_peer");
            self.close_leg_silently(id, updates);
            return Outcome::Left(id);
        }
        if u.in_version == Some(s.version) {
            return Outcome::KeptAlive(id);
        }
        u.in_version = Some(s.version);
        let (room, peer, addr) = (l.room.clone(), l.peer.clone(), l.addr);
        let accepted = self.accept_streams(id, &room, &peer, addr, s.ssrcs);
        let l = self.cascade.legs.get_mut(&id).expect("looked up above");
        let State::Up(u) = &mut l.state else { unreachable!("checked above") };
        if accepted == u.info.ssrcs {
            return Outcome::KeptAlive(id);
        }
        let keys = if l.initiator {
            (u.secrets.r2c.session_keys(), u.secrets.c2r.session_keys())
        } else {
            (u.secrets.c2r.session_keys(), u.secrets.r2c.session_keys())
        };
        let old = &u.info;
        let info = Arc::new(SessionInfo {
            id: old.id,
            room: old.room.clone(),
            user: old.user.clone(),
            addr: old.addr,
            privileges: old.privileges,
            ssrcs: accepted,
            leg: true,
            uplink: keys.0,
            downlink: keys.1,
            last_seen_ms: CacheLine(AtomicU64::new(now.mono_ms)),
        });
        u.info = info.clone();
        updates.push(Update::Streams(info));
        Outcome::KeptAlive(id)
    }

    /// Removes a leg the peer closed (no closing announcement back).
    fn close_leg_silently(&mut self, id: SessionId, updates: &mut Vec<Update>) {
        if let Some(l) = self.cascade.legs.get_mut(&id) {
            if let State::Up(u) = &l.state {
                updates.push(Update::Down(u.info.clone()));
            }
            l.state = State::Down;
        }
        self.close_leg(id, updates);
    }

    /// The subset of `announced` leg `id` may carry into `room` (module doc, "SSRCs").
    fn accept_streams(
        &mut self,
        id: SessionId,
        room: &RoomKey,
        peer: &str,
        addr: SocketAddr,
        announced: Vec<DeclaredSsrc>,
    ) -> Vec<DeclaredSsrc> {
        let mut accepted = Vec::with_capacity(announced.len().min(MAX_LEG_STREAMS));
        let mut conflicts = 0;
        for d in announced.into_iter().take(MAX_LEG_STREAMS) {
            let s = d.ssrc.get();
            let Some(r) = self.rooms.get(room) else { break };
            let local = r.ssrcs_used.contains(&s);
            let foreign = r.remote_ssrcs.get(&s).is_some_and(|n| n != peer);
            let other_leg = self.cascade.legs.iter().any(|(other, l)| {
                *other != id
                    && (l.addr == addr || l.room == *room)
                    && matches!(&l.state, State::Up(u) if u.info.ssrcs.iter().any(|x| x.ssrc.get() == s))
            });
            if local || foreign || other_leg {
                conflicts += 1;
                continue;
            }
            accepted.push(d);
        }
        if let Some(r) = self.rooms.get_mut(room) {
            for d in &accepted {
                r.remote_ssrcs.entry(d.ssrc.get()).or_insert_with(|| peer.to_owned());
            }
        }
        *self.cascade.counts.entry("ssrc_conflicts").or_default() += conflicts;
        accepted
    }

    /// Queues leg `id`'s announcement if its set changed, or if `force`d or due.
    fn announce(&mut self, id: SessionId, now: Now, force: bool) {
        let Some(l) = self.cascade.legs.get(&id) else { return };
        let local: Vec<DeclaredSsrc> = match self.rooms.get(&l.room) {
            Some(r) => r.members.iter().flat_map(|m| self.sessions[m].info.ssrcs.iter().copied()).collect(),
            None => Vec::new(),
        };
        let l = self.cascade.legs.get_mut(&id).expect("looked up above");
        let State::Up(u) = &mut l.state else { return };
        let mut local = local;
        if local.len() > MAX_LEG_STREAMS {
            local.truncate(MAX_LEG_STREAMS);
            *self.cascade.counts.entry("streams_truncated").or_default() += 1;
        }
        let changed = local != u.announced;
        if !changed && !force && now.mono_ms < u.last_sent_ms + ANNOUNCE_MS {
            return;
        }
        if changed {
            u.out_version = u.out_version.wrapping_add(1);
            u.announced = local;
        }
        u.counter_out += 1;
        u.last_sent_ms = now.mono_ms;
        let s = Streams { closing: false, version: u.out_version, ssrcs: u.announced.clone() };
        let (key, peer_leg, counter, addr) = (u.send_key, u.peer_leg, u.counter_out, l.addr);
        self.cascade.out.push(addr, proto::MAX_LEN, |out| leg::write_streams(&key, peer_leg, counter, &s, out).ok());
    }

    /// Announcements due or changed, dead legs down (an initiator tries again), connecting
    /// legs' retries. Run by the control thread every [`crate::messages::TICK_MS`]-ish.
    pub fn leg_tick(&mut self, now: Now, updates: &mut Vec<Update>) {
        let ids: Vec<SessionId> = self.cascade.legs.keys().copied().collect();
        for id in ids {
            let Some(l) = self.cascade.legs.get(&id) else { continue };
            match &l.state {
                State::Up(u) if now.mono_ms.saturating_sub(u.last_heard_ms) > DEAD_MS => {
                    let (initiator, room, peer) = (l.initiator, l.room.clone(), l.peer.clone());
                    let info = u.info.clone();
                    self.cascade.count("timed_out");
                    updates.push(Update::Down(info));
                    if initiator && self.rooms.contains_key(&room) {
                        // Keep the leg id and try again: the peer may be back (a healed
                        // partition) before relay-control would ask.
                        self.retry_leg(id, now, &room, &peer, Some("the peer went silent".into()), 1);
                    } else {
                        let l = self.cascade.legs.get_mut(&id).expect("looked up above");
                        l.state = State::Down;
                        self.close_leg(id, updates);
                    }
                }
                State::Up(_) => self.announce(id, now, false),
                State::Connecting { sent_ms, attempts, .. } if now.mono_ms >= sent_ms + retry_after_ms(*attempts) => {
                    let (room, peer) = (l.room.clone(), l.peer.clone());
                    if !self.rooms.contains_key(&room) {
                        self.close_leg(id, updates);
                        continue;
                    }
                    let attempts = *attempts;
                    self.retry_leg(id, now, &room, &peer, None, attempts + 1);
                }
                State::Connecting { .. } | State::Down => {}
            }
        }
    }

    fn retry_leg(&mut self, id: SessionId, now: Now, room: &RoomKey, peer: &str, why: Option<String>, attempts: u32) {
        let Some(p) = self.cascade.peers.iter().find(|p| p.node == peer).cloned() else {
            let mut none = Vec::new();
            self.close_leg(id, &mut none);
            return;
        };
        self.cascade.count("retries");
        match self.leg_handshake(now, id, room, &p) {
            Ok(ik) => {
                let l = self.cascade.legs.get_mut(&id).expect("retried legs exist");
                if why.is_some() {
                    l.last_error = why;
                }
                l.state = State::Connecting { ik, sent_ms: now.mono_ms, attempts };
            }
            Err(e) => {
                let l = self.cascade.legs.get_mut(&id).expect("retried legs exist");
                l.last_error = Some(format!("cannot write the leg join: {e}"));
            }
        }
    }
}
