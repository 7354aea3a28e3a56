//! The per-worker media engine: authenticate, replay-check, decrypt, and re-encrypt per
//! receiver.
//!
//! Sans-IO: `handle(now, src, datagram, tx)` reads one SRTP/SRTCP datagram from a caller
//! buffer and writes one protected copy per receiver into buffers the [`TxSink`] lends
//! (which keep the sink's own headroom for Ethernet/IP/UDP headers). Nothing here
//! allocates, locks or logs on the per-packet path; every drop is counted under a
//! [`DropReason`].
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
use crate::srtp::{self, RtcpPacket, RtcpReceiver, RtpPacket, RtpReceiver};
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

/// One worker's replica and per-packet logic, for a sink whose destinations are `D`
/// ([`TxSink::Dest`]).
pub struct Engine<D = SocketAddr> {
    by_addr: HashMap<SocketAddr, usize>,
    by_id: HashMap<SessionId, usize>,
    members: Vec<Option<Member>>,
    /// Each member's resolved destination, by member index (beside `members`, so the
    /// fan-out loop reads them in order and a [`Member`] stays small).
    dests: Vec<D>,
    free_members: Vec<usize>,
    room_index: HashMap<RoomKey, usize>,
    rooms: Vec<Vec<usize>>,
    free_rooms: Vec<usize>,
    counters: Arc<WorkerCounters>,
}

impl<D: From<SocketAddr>> Engine<D> {
    /// An empty engine counting into `counters`.
    pub fn new(counters: Arc<WorkerCounters>) -> Self {
        Self {
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            members: Vec::new(),
            dests: Vec::new(),
            free_members: Vec::new(),
            room_index: HashMap::new(),
            rooms: Vec::new(),
            free_rooms: Vec::new(),
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

    /// Rooms in this replica.
    pub fn room_count(&self) -> usize {
        self.room_index.len()
    }

    /// Applies one registry update. Not on the per-packet path: may allocate.
    pub fn apply(&mut self, u: &Update) {
        match u {
            Update::Up(info) => self.add(info.clone()),
            Update::Down(info) => self.remove(info.id),
        }
    }

    fn add(&mut self, info: Arc<SessionInfo>) {
        if self.by_id.contains_key(&info.id) {
            return;
        }
        if let Some(&old) = self.by_addr.get(&info.addr) {
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
        let streams = info
            .ssrcs
            .iter()
            .take(MAX_SSRCS)
            .map(|d| Stream { ssrc: d.ssrc.get(), kind: d.kind, rtp: RtpReceiver::new(), rtcp: RtcpReceiver::new() })
            .collect();
        let m = Member { info: info.clone(), room, streams };
        let dest = D::from(info.addr);
        let idx = match self.free_members.pop() {
            Some(i) => {
                self.members[i] = Some(m);
                self.dests[i] = dest;
                i
            }
            None => {
                self.members.push(Some(m));
                self.dests.push(dest);
                self.members.len() - 1
            }
        };
        self.rooms[room].push(idx);
        self.by_addr.insert(info.addr, idx);
        self.by_id.insert(info.id, idx);
    }

    fn remove(&mut self, id: SessionId) {
        let Some(idx) = self.by_id.remove(&id) else {
            return;
        };
        let m = self.members[idx].take().expect("indexed members exist");
        self.free_members.push(idx);
        if self.by_addr.get(&m.info.addr) == Some(&idx) {
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
        let Some(&idx) = self.by_addr.get(&src) else {
            return Dropped(DropReason::UnknownSession);
        };
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
        let sender = self.members[idx].as_mut().expect("indexed members exist");
        let Some(stream) = sender.streams.iter_mut().find(|s| s.ssrc == ssrc) else {
            return Dropped(DropReason::UnknownSsrc);
        };
        if !rtcp && stream.kind == StreamKind::Rtcp {
            return Dropped(DropReason::UnknownSsrc);
        }
        let kind = if rtcp { StreamKind::Rtcp } else { stream.kind };
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

        let payload = &buf[..plain.len];
        let mut sent = 0;
        let mut not_sent = None;
        let members = &self.rooms[room];
        for (i, &r) in members.iter().enumerate() {
            if r == idx {
                continue;
            }
            let recv = &self.members[r].as_ref().expect("room members exist").info;
            if !recv.may_receive(kind) {
                continue;
            }
            let Some(out) = tx.buffer() else {
                // Every receiver from here on is skipped: count each.
                let skipped = members[i..]
                    .iter()
                    .filter(|&&m| m != idx && self.members[m].as_ref().is_some_and(|x| x.info.may_receive(kind)))
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
            let res = if rtcp {
                plain.srtcp_index().and_then(|i| recv.downlink.protect_rtcp(out, plain.len, i.get()))
            } else {
                recv.downlink.protect_rtp(out, plain.len, plain.roc())
            };
            match res {
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

    /// Every worker holds a [`Member`] per session: it must not grow with [`MAX_SSRCS`]
    /// (issue 5's memory goal, 100k sessions in 512 MiB, is counted per worker replica).
    #[test]
    fn a_replica_member_is_small() {
        assert!(std::mem::size_of::<Member>() <= 40, "Member is {} bytes", std::mem::size_of::<Member>());
        assert!(std::mem::size_of::<Option<Member>>() <= 40);
    }
}
