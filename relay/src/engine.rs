//! The per-worker media engine: authenticate, replay-check, decrypt, and re-encrypt per
//! receiver.
//!
//! Sans-IO: `handle(now, src, datagram, tx)` reads one SRTP/SRTCP datagram from a caller
//! buffer and writes one protected copy per receiver into buffers the [`TxSink`] lends
//! (which keep the sink's own headroom for Ethernet/IP/UDP headers). Nothing here
//! allocates, locks or logs on the per-packet path; every drop is counted under a
//! [`DropReason`].
//!
//! SRTCP is routed like an SFU routes it ([`srtp::rtcp`] has the rules): feedback and
//! reception reports go to the sender of the stream they name, sender reports to that
//! stream's receivers, and each destination gets a copy rebuilt with only the parts for it.
//! The replica keeps which member sends each SSRC of a room (`owners`), so routing needs no
//! search of the room.
//!
//! Each worker holds a replica of sessions and rooms, built from the registry's
//! [`Update`]s between batches. A session's uplink receive state (ROC, replay windows)
//! lives in the replica of the worker its source address hashes to, which is the only
//! worker that ever sees its media. Downlink protection keeps the sender's packet index
//! (RFC 3711 §3.3.1: SSRC, ROC and SEQ pass through unchanged), so it needs no mutable
//! per-receiver state; the registry guarantees an SSRC is declared once per room, so no
//! (receiver key, SSRC, index) is ever used for two payloads.
//!
//! Where a copy goes is resolved per session, not per packet: each member's destination is
//! a [`TxSink::Dest`] (the socket backend's prepared `sockaddr`, the AF_XDP backend's
//! next-hop MAC), created when the session enters the replica and kept beside it. The sink
//! refreshes it in place when its own tables change (the kernel's neighbour table), so
//! the per-copy cost is a buffer, a copy, the encryption and a commit.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::ids::{RoomKey, SessionId, Ssrc};
use crate::proto::{self, StreamKind, MAX_SSRCS};
use crate::registry::{SessionInfo, Update};
use crate::srtp::rtcp::{self, Addressee, Compound};
use crate::srtp::{self, RtcpPacket, RtcpReceiver, RtpPacket, RtpReceiver, Unprotected};
use crate::stats::{DropReason, WorkerCounters};

/// Where the engine writes outgoing datagrams.
pub trait TxSink {
    /// A receiver's destination in the form this sink sends to, made once per session from
    /// its address (`From<SocketAddr>`) and kept in the worker's replica. The sink may
    /// update it in place in [`commit`](Self::commit), e.g. when its next-hop table changed.
    type Dest: From<SocketAddr>;
    /// A buffer for one UDP payload (the sink keeps any header headroom in front of it),
    /// or `None` when no transmit buffer is free.
    fn buffer(&mut self) -> Option<&mut [u8]>;
    /// Queues the first `len` bytes of the last buffer for `dst`. Returns false when the
    /// sink dropped it (and counted why, e.g. no route to `dst`).
    fn commit(&mut self, dst: &mut Self::Dest, len: usize) -> bool;
}

/// What happened to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and handed to the sink for this many receivers; 0 when every
    /// receiver was skipped for lack of transmit buffers (counted as `tx_full` per receiver).
    Forwarded(usize),
    /// Dropped, and counted under this reason.
    Dropped(DropReason),
}

struct Stream {
    ssrc: u32,
    kind: StreamKind,
    rtp: RtpReceiver,
    rtcp: RtcpReceiver,
}

/// One session in a replica. Every worker holds one per session, so it stays small: the
/// streams are only the declared ones (a fixed `[Option<Stream>; MAX_SSRCS]` cost 640 bytes
/// per session per worker, about 1.3 KB of relayd's 6 KB per session with two workers).
struct Member {
    info: Arc<SessionInfo>,
    room: usize,
    streams: Box<[Stream]>,
}

/// Which member of a room declared an SSRC, and as what.
#[derive(Debug, Clone, Copy)]
struct Owner {
    member: usize,
    kind: StreamKind,
}

/// One worker's replica and per-packet logic, for a sink whose destinations are `D`
/// ([`TxSink::Dest`]).
pub struct Engine<D = SocketAddr> {
    /// Members by source address, cascade legs excepted.
    by_addr: HashMap<SocketAddr, usize>,
    /// Cascade legs by (peer relay's address, SSRC): a peer's legs of several rooms share its
    /// address, and the registry lets an SSRC ride at most one leg per peer address.
    leg_streams: HashMap<(SocketAddr, u32), usize>,
    /// Legs per peer address (an address here holds sessions: its control is served first).
    leg_peers: HashMap<SocketAddr, u32>,
    by_id: HashMap<SessionId, usize>,
    members: Vec<Option<Member>>,
    /// Each member's resolved destination, by member index (beside `members`, so the
    /// fan-out loop reads them in order and a [`Member`] stays small).
    dests: Vec<D>,
    free_members: Vec<usize>,
    room_index: HashMap<RoomKey, usize>,
    rooms: Vec<Vec<usize>>,
    free_rooms: Vec<usize>,
    /// Who declared each audio or video SSRC, by (room index, SSRC): where RTCP about a stream
    /// goes. The registry lets an SSRC be declared once per room, so the key is unique. RTCP-only
    /// SSRCs carry no stream to report on, so nothing is routed to them.
    owners: HashMap<(usize, u32), Owner>,
    /// Per member index, the number of the last RTCP packet that named one of its streams
    /// (`rtcp_seen`): marks the candidate destinations without clearing anything per packet.
    rtcp_marks: Vec<u64>,
    rtcp_seen: u64,
    counters: Arc<WorkerCounters>,
}

impl<D: From<SocketAddr>> Engine<D> {
    /// An empty engine counting into `counters`.
    pub fn new(counters: Arc<WorkerCounters>) -> Self {
        Self {
            by_addr: HashMap::new(),
            leg_streams: HashMap::new(),
            leg_peers: HashMap::new(),
            by_id: HashMap::new(),
            members: Vec::new(),
            dests: Vec::new(),
            free_members: Vec::new(),
            room_index: HashMap::new(),
            rooms: Vec::new(),
            free_rooms: Vec::new(),
            owners: HashMap::new(),
            rtcp_marks: Vec::new(),
            rtcp_seen: 0,
            counters,
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// Sessions in this replica.
    pub fn session_count(&self) -> usize {
        self.by_id.len()
    }

    /// Whether a session in this replica has the address `addr` (its control goes to the
    /// control thread's session queue). Not on the media path.
    pub fn has_session_at(&self, addr: SocketAddr) -> bool {
        self.by_addr.contains_key(&addr) || self.leg_peers.contains_key(&addr)
    }

    /// Rooms in this replica.
    pub fn room_count(&self) -> usize {
        self.room_index.len()
    }

    /// Applies one registry update. Not on the per-packet path: may allocate.
    pub fn apply(&mut self, u: &Update) {
        match u {
            Update::Up(info) => self.add(info.clone()),
            Update::Down(info) => self.remove(info.id),
            Update::Streams(info) => self.restream(info.clone()),
        }
    }

    /// The streams a member receives on: its declared ones (a client declares at most
    /// [`MAX_SSRCS`]; a leg carries what its peer announced, bounded by the registry).
    fn streams_of(info: &SessionInfo) -> impl Iterator<Item = &crate::proto::DeclaredSsrc> {
        info.ssrcs.iter().take(if info.leg { usize::MAX } else { MAX_SSRCS })
    }

    fn add(&mut self, info: Arc<SessionInfo>) {
        if self.by_id.contains_key(&info.id) {
            return;
        }
        if info.leg {
            // The peer's address is shared by its legs of other rooms: it replaces nothing.
        } else if let Some(&old) = self.by_addr.get(&info.addr) {
            let old_id = self.members[old].as_ref().expect("indexed members exist").info.id;
            self.remove(old_id);
        }
        let room = match self.room_index.get(&info.room) {
            Some(&r) => r,
            None => {
                let r = match self.free_rooms.pop() {
                    Some(r) => r,
                    None => {
                        self.rooms.push(Vec::new());
                        self.rooms.len() - 1
                    }
                };
                self.room_index.insert(info.room.clone(), r);
                r
            }
        };
        let streams = Self::streams_of(&info)
            .map(|d| Stream { ssrc: d.ssrc.get(), kind: d.kind, rtp: RtpReceiver::new(), rtcp: RtcpReceiver::new() })
            .collect();
        let m = Member { info: info.clone(), room, streams };
        let dest = D::from(info.addr);
        let idx = match self.free_members.pop() {
            Some(i) => {
                self.members[i] = Some(m);
                self.dests[i] = dest;
                self.rtcp_marks[i] = 0;
                i
            }
            None => {
                self.members.push(Some(m));
                self.dests.push(dest);
                self.rtcp_marks.push(0);
                self.members.len() - 1
            }
        };
        self.index_streams(idx, room, &info);
        self.rooms[room].push(idx);
        if info.leg {
            *self.leg_peers.entry(info.addr).or_default() += 1;
        } else {
            self.by_addr.insert(info.addr, idx);
        }
        self.by_id.insert(info.id, idx);
    }

    /// Indexes member `idx`'s streams: who sends each media SSRC of the room, and for a leg,
    /// which leg each SSRC from its peer's address belongs to.
    fn index_streams(&mut self, idx: usize, room: usize, info: &SessionInfo) {
        for d in Self::streams_of(info) {
            if d.kind != StreamKind::Rtcp {
                self.owners.insert((room, d.ssrc.get()), Owner { member: idx, kind: d.kind });
            }
            if info.leg {
                self.leg_streams.insert((info.addr, d.ssrc.get()), idx);
            }
        }
    }

    /// Forgets member `idx`'s stream indexes (the entries that are still its own).
    fn unindex_streams(&mut self, idx: usize) {
        let m = self.members[idx].as_ref().expect("indexed members exist");
        for s in m.streams.iter() {
            if self.owners.get(&(m.room, s.ssrc)).is_some_and(|o| o.member == idx) {
                self.owners.remove(&(m.room, s.ssrc));
            }
            if m.info.leg && self.leg_streams.get(&(m.info.addr, s.ssrc)) == Some(&idx) {
                self.leg_streams.remove(&(m.info.addr, s.ssrc));
            }
        }
    }

    /// A leg's new stream set: SSRCs that stay keep their ROC and replay windows (the peer
    /// goes on with the same packet indexes), new ones start fresh, gone ones are forgotten.
    fn restream(&mut self, info: Arc<SessionInfo>) {
        let Some(&idx) = self.by_id.get(&info.id) else {
            return;
        };
        self.unindex_streams(idx);
        let m = self.members[idx].as_mut().expect("indexed members exist");
        let mut old: Vec<Stream> = std::mem::take(&mut m.streams).into_vec();
        let streams = Self::streams_of(&info)
            .map(|d| match old.iter().position(|s| s.ssrc == d.ssrc.get()) {
                Some(i) => Stream { kind: d.kind, ..old.swap_remove(i) },
                None => Stream { ssrc: d.ssrc.get(), kind: d.kind, rtp: RtpReceiver::new(), rtcp: RtcpReceiver::new() },
            })
            .collect();
        m.streams = streams;
        m.info = info.clone();
        let room = m.room;
        self.index_streams(idx, room, &info);
    }

    fn remove(&mut self, id: SessionId) {
        let Some(idx) = self.by_id.remove(&id) else {
            return;
        };
        self.unindex_streams(idx);
        let m = self.members[idx].take().expect("indexed members exist");
        self.free_members.push(idx);
        if m.info.leg {
            if let Some(n) = self.leg_peers.get_mut(&m.info.addr) {
                *n -= 1;
                if *n == 0 {
                    self.leg_peers.remove(&m.info.addr);
                }
            }
        } else if self.by_addr.get(&m.info.addr) == Some(&idx) {
            self.by_addr.remove(&m.info.addr);
        }
        let room = &mut self.rooms[m.room];
        room.retain(|&i| i != idx);
        if room.is_empty() {
            self.room_index.remove(&m.info.room);
            self.free_rooms.push(m.room);
        }
    }

    /// Handles one SRTP or SRTCP datagram `buf` from `src` (decrypted in place). Every
    /// outcome is counted.
    pub fn handle(&mut self, now_ms: u64, src: SocketAddr, buf: &mut [u8], tx: &mut impl TxSink<Dest = D>) -> Verdict {
        let v = self.handle_inner(now_ms, src, buf, tx);
        if let Verdict::Dropped(r) = v {
            self.counters.count_drop(r);
        }
        v
    }

    fn handle_inner(
        &mut self,
        now_ms: u64,
        src: SocketAddr,
        buf: &mut [u8],
        tx: &mut impl TxSink<Dest = D>,
    ) -> Verdict {
        use Verdict::Dropped;
        if proto::demux(buf) != proto::Demux::Media {
            return Dropped(DropReason::NotRelayed);
        }
        let member = self.by_addr.get(&src).copied();
        if member.is_none() && !self.leg_peers.contains_key(&src) {
            return Dropped(DropReason::UnknownSession);
        }
        let rtcp = proto::is_rtcp(buf);
        let ssrc = if rtcp {
            RtcpPacket::new_checked(&*buf).map(|p| p.sender_ssrc())
        } else {
            RtpPacket::new_checked(&*buf).map(|p| p.ssrc())
        };
        let Ok(ssrc) = ssrc else {
            return Dropped(DropReason::Malformed);
        };
        // SSRC 0 is never declared (`Ssrc` refuses it).
        let Some(ssrc) = ssrc.map(Ssrc::get) else {
            return Dropped(DropReason::UnknownSsrc);
        };
        let idx = match member {
            Some(i) => i,
            None => match self.leg_streams.get(&(src, ssrc)) {
                Some(&i) => i,
                None => return Dropped(DropReason::UnknownSsrc),
            },
        };
        let sender = self.members[idx].as_mut().expect("indexed members exist");
        let Some(stream) = sender.streams.iter_mut().find(|s| s.ssrc == ssrc) else {
            return Dropped(DropReason::UnknownSsrc);
        };
        if !rtcp && stream.kind == StreamKind::Rtcp {
            return Dropped(DropReason::UnknownSsrc);
        }
        let kind = stream.kind;
        let keys = &sender.info.uplink;
        let res =
            if rtcp { keys.unprotect_rtcp(&mut stream.rtcp, buf) } else { keys.unprotect_rtp(&mut stream.rtp, buf) };
        let plain = match res {
            Ok(u) => u,
            Err(e) => return Dropped(drop_reason(e)),
        };
        sender.info.last_seen_ms.store(now_ms, Relaxed);
        let room = sender.room;
        self.counters.media_accepted.fetch_add(1, Relaxed);
        if rtcp {
            return self.relay_rtcp(idx, room, plain, &buf[..plain.len], tx);
        }

        let payload = &buf[..plain.len];
        let mut sent = 0;
        let mut not_sent = None;
        let members = &self.rooms[room];
        // Split horizon: what came over a leg goes to local members only, never onto
        // another leg, so a full mesh of legs has no loops and delivers each packet once.
        let from_leg = self.members[idx].as_ref().expect("indexed members exist").info.leg;
        let receives = |recv: &SessionInfo| recv.may_receive(kind) && !(from_leg && recv.leg);
        for (i, &r) in members.iter().enumerate() {
            if r == idx {
                continue;
            }
            let recv = &self.members[r].as_ref().expect("room members exist").info;
            if !receives(recv) {
                continue;
            }
            let Some(out) = tx.buffer() else {
                // Every receiver from here on is skipped: count each.
                let skipped = members[i..]
                    .iter()
                    .filter(|&&m| m != idx && self.members[m].as_ref().is_some_and(|x| receives(&x.info)))
                    .count() as u64;
                self.counters.drops[DropReason::TxFull as usize].fetch_add(skipped, Relaxed);
                not_sent = Some(DropReason::TxFull);
                break;
            };
            let Some(dst) = out.get_mut(..plain.len) else {
                // Same size for every receiver: none of them fits.
                not_sent = Some(DropReason::TooBig);
                break;
            };
            dst.copy_from_slice(payload);
            match recv.downlink.protect_rtp(out, plain.len, plain.roc()) {
                Ok(n) => {
                    if tx.commit(&mut self.dests[r], n) {
                        sent += 1;
                    }
                }
                Err(e) => self.counters.count_drop(drop_reason(e)),
            }
        }
        match (sent, not_sent) {
            (0, Some(DropReason::TxFull)) => {
                // Already counted per skipped receiver; do not count the packet again.
                Verdict::Forwarded(0)
            }
            (0, Some(r)) => Dropped(r),
            (0, None) => Dropped(DropReason::NoReceivers),
            (n, Some(DropReason::TooBig)) => {
                self.counters.count_drop(DropReason::TooBig);
                Verdict::Forwarded(n)
            }
            (n, _) => Verdict::Forwarded(n),
        }
    }

    /// Routes the authenticated, decrypted compound RTCP packet `plain` (`plain.len` bytes)
    /// from member `idx` of `room`: every other member the compound has a part for gets its own
    /// copy ([`Compound::write_for`]), protected with its downlink keys under the sender's
    /// SRTCP index.
    fn relay_rtcp(
        &mut self,
        idx: usize,
        room: usize,
        plain: Unprotected,
        plain_buf: &[u8],
        tx: &mut impl TxSink<Dest = D>,
    ) -> Verdict {
        use Verdict::Dropped;
        let Ok(compound) = Compound::new_checked(plain_buf) else {
            return Dropped(DropReason::RtcpMalformed);
        };
        let Ok(index) = plain.srtcp_index() else {
            return Dropped(DropReason::IndexExhausted);
        };
        let Self { members, dests, rooms, owners, rtcp_marks, rtcp_seen, counters, .. } = self;
        let sender = members[idx].as_ref().expect("indexed members exist");
        // A compound speaks only for its sender's own SSRCs. Reports or feedback under another
        // member's SSRC would pass as that member's, and a copy headed by it would encrypt
        // under an (SSRC, index) pair whose index space belongs to another stream.
        if !compound.all_speakers(|s| sender.streams.iter().any(|st| st.ssrc == s)) {
            return Dropped(DropReason::UnknownSsrc);
        }
        // Candidates: the senders of the streams it names (marked), and the receivers of the
        // kinds of its sender's streams it has an SR or a BYE for. Nobody else can have a part.
        *rtcp_seen += 1;
        let seen = *rtcp_seen;
        let mut kinds = [false; 3];
        compound.for_each_addressee(|a| match a {
            Addressee::SenderOf(ssrc) => {
                if let Some(o) = owners.get(&(room, ssrc)) {
                    rtcp_marks[o.member] = seen;
                }
            }
            Addressee::ReceiversOf(ssrc) => {
                if let Some(s) = sender.streams.iter().find(|s| s.ssrc == ssrc) {
                    kinds[s.kind as usize] = true;
                }
            }
        });
        let audience = |r: usize| -> Option<RtcpAudience<'_>> {
            if r == idx {
                return None;
            }
            let info = &members[r].as_ref().expect("room members exist").info;
            if sender.info.leg && info.leg {
                // Split horizon, as for media.
                return None;
            }
            let kind_receiver = [StreamKind::Audio, StreamKind::Video, StreamKind::Rtcp]
                .into_iter()
                .any(|k| kinds[k as usize] && info.may_receive(k));
            (rtcp_marks[r] == seen || kind_receiver).then_some(RtcpAudience {
                owners,
                room,
                dest: r,
                dest_info: info,
                sender,
            })
        };

        // Each destination gets exactly one copy of this SRTCP packet, and every copy starts
        // with the sender's first SSRC (`write_for` keeps the first packet's). That SSRC's
        // uplink replay window admits each index once, and only this sender may declare it in
        // the room, so each (receiver key, SSRC, SRTCP index) encrypts one payload only.
        let mut sent = 0;
        let mut not_sent = None;
        let members_of_room = &rooms[room];
        for (i, &r) in members_of_room.iter().enumerate() {
            let Some(who) = audience(r).filter(|a| compound.is_for(a)) else {
                continue;
            };
            let Some(out) = tx.buffer() else {
                // Every destination from here on is skipped: count each.
                let skipped =
                    members_of_room[i..].iter().filter(|&&m| audience(m).is_some_and(|a| compound.is_for(&a))).count()
                        as u64;
                counters.drops[DropReason::TxFull as usize].fetch_add(skipped, Relaxed);
                not_sent = Some(DropReason::TxFull);
                break;
            };
            let Ok(len) = compound.write_for(&who, out) else {
                not_sent = Some(DropReason::TooBig);
                continue;
            };
            match who.dest_info.downlink.protect_rtcp(out, len, index.get()) {
                Ok(n) => {
                    if tx.commit(&mut dests[r], n) {
                        sent += 1;
                    }
                }
                Err(e) => counters.count_drop(drop_reason(e)),
            }
        }
        match (sent, not_sent) {
            (0, Some(DropReason::TxFull)) => Verdict::Forwarded(0),
            (0, Some(r)) => Dropped(r),
            (0, None) => Dropped(DropReason::NoReceivers),
            (n, Some(DropReason::TooBig)) => {
                counters.count_drop(DropReason::TooBig);
                Verdict::Forwarded(n)
            }
            (n, _) => Verdict::Forwarded(n),
        }
    }
}

/// One destination of a compound RTCP packet, answering from the replica
/// ([`rtcp::Audience`]).
struct RtcpAudience<'a> {
    owners: &'a HashMap<(usize, u32), Owner>,
    room: usize,
    dest: usize,
    dest_info: &'a SessionInfo,
    sender: &'a Member,
}

impl rtcp::Audience for RtcpAudience<'_> {
    /// The destination declared the audio or video stream `ssrc`, and the compound's sender
    /// may receive that kind: a member cannot report on, or ask keyframes of, a stream it may
    /// not receive.
    fn sends(&self, ssrc: u32) -> bool {
        self.owners
            .get(&(self.room, ssrc))
            .is_some_and(|o| o.member == self.dest && self.sender.info.may_receive(o.kind))
    }

    /// The compound's sender declared `ssrc`, and the destination may receive that kind.
    fn receives(&self, ssrc: u32) -> bool {
        self.sender.streams.iter().find(|s| s.ssrc == ssrc).is_some_and(|s| self.dest_info.may_receive(s.kind))
    }
}

fn drop_reason(e: srtp::Error) -> DropReason {
    match e {
        srtp::Error::AuthFailed => DropReason::AuthFailed,
        srtp::Error::Replayed | srtp::Error::TooOld => DropReason::Replayed,
        srtp::Error::BufferTooSmall => DropReason::TooBig,
        srtp::Error::IndexExhausted => DropReason::IndexExhausted,
        _ => DropReason::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RoomId, SdkAppId, UserId};
    use crate::proto::DeclaredSsrc;
    use crate::registry::CacheLine;
    use crate::srtp::{Profile, SessionKeys};
    use crate::usersig::PrivilegeMap;
    use std::sync::atomic::AtomicU64;

    fn session(id: u64, room: u32, port: u16, ssrcs: &[(u32, StreamKind)]) -> Arc<SessionInfo> {
        let keys = || SessionKeys::new(Profile::AesCm128HmacSha1_80, &[1; 16], &[2; 14]).unwrap();
        Arc::new(SessionInfo {
            id: SessionId(id),
            room: RoomKey { app: SdkAppId::new(1_400_000_001).unwrap(), room: RoomId::Num(room) },
            user: UserId::new(&format!("u{id}")).unwrap(),
            addr: SocketAddr::from(([198, 18, 0, 1], port)),
            privileges: PrivilegeMap::ALL,
            ssrcs: ssrcs.iter().map(|&(s, kind)| DeclaredSsrc { ssrc: Ssrc::new(s).unwrap(), kind }).collect(),
            uplink: keys(),
            downlink: keys(),
            last_seen_ms: CacheLine(AtomicU64::new(0)),
            leg: false,
        })
    }

    /// The SSRC -> member map follows joins and leaves, per room, and holds only media SSRCs.
    #[test]
    fn owners_follow_the_replica() {
        let mut e: Engine = Engine::new(Arc::default());
        let a = session(1, 1, 1, &[(10, StreamKind::Audio), (11, StreamKind::Video), (12, StreamKind::Rtcp)]);
        let b = session(2, 2, 2, &[(10, StreamKind::Video)]);
        e.apply(&Update::Up(a.clone()));
        e.apply(&Update::Up(b.clone()));
        let owner = |e: &Engine, room: usize, ssrc: u32| e.owners.get(&(room, ssrc)).map(|o| (o.member, o.kind));
        let (ra, rb) = (e.room_index[&a.room], e.room_index[&b.room]);
        assert_ne!(ra, rb);
        assert_eq!(owner(&e, ra, 10), Some((0, StreamKind::Audio)));
        assert_eq!(owner(&e, ra, 11), Some((0, StreamKind::Video)));
        assert_eq!(owner(&e, ra, 12), None, "an RTCP-only SSRC sends no stream");
        assert_eq!(owner(&e, rb, 10), Some((1, StreamKind::Video)), "the same SSRC in another room");
        e.apply(&Update::Down(a.clone()));
        assert_eq!(e.owners.len(), 1);
        // The freed member and room slots are reused by a newcomer in a new room.
        let c = session(3, 3, 3, &[(11, StreamKind::Audio)]);
        e.apply(&Update::Up(c.clone()));
        assert_eq!(owner(&e, e.room_index[&c.room], 11), Some((0, StreamKind::Audio)));
        e.apply(&Update::Down(b));
        e.apply(&Update::Down(c));
        assert!(e.owners.is_empty());
        assert_eq!((e.session_count(), e.room_count()), (0, 0));
    }

    /// Every worker holds a [`Member`] per session: it must not grow with [`MAX_SSRCS`]
    /// (issue 5's memory goal, 100k sessions in 512 MiB, is counted per worker replica).
    #[test]
    fn a_replica_member_is_small() {
        assert!(std::mem::size_of::<Member>() <= 40, "Member is {} bytes", std::mem::size_of::<Member>());
        assert!(std::mem::size_of::<Option<Member>>() <= 40);
    }
}
