//! In-room messages on the control thread: authenticate, budget, dedup, order, fan out,
//! acknowledge, retransmit ([`crate::messages`] has the rules, [`crate::proto::msg`] the
//! wire formats).
//!
//! A message from a sender is opened under the sender's client → relay message key, then
//! sealed again for every other member of the sender's room that holds any receive
//! privilege, each under that receiver's relay → client key, with the sender's user id
//! inside. Only the room's member list is consulted, so nothing crosses rooms or apps.
//!
//! Bounds: what one message makes is one copy per receiver and one ack, so the datagrams
//! sent are bounded by the sender's budget ([`crate::messages::Limit`]) times the room size;
//! retransmissions add at most [`crate::messages::MAX_TRIES`] per reliable copy, with at most
//! [`crate::messages::MAX_PENDING`] copies pending per receiver. Acks go only to the
//! session's own address, answer an authenticated datagram with a fresh counter and count
//! against its sender's budget, so unlike the join path's replies they cannot be aimed at a
//! third party, and the [`crate::guard::ReplyLimiter`] does not apply to them.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::{Now, Outcome, Registry};
use crate::ids::SessionId;
use crate::messages::{first_sight, Count, Due, Limit, Outbox, Pushed, Reorder, Retransmits};
use crate::proto::msg::{self, Ack, Flags, Frame, Message, ACK_LEN, MAX_BODY_LEN, MAX_FRAME_LEN};
use crate::proto::{MsgType, MAX_LEN};
use crate::srtp::ReplayWindow;

/// A message waiting in a sender's ordered stream.
pub(super) struct Stored {
    cmd: u8,
    data: Vec<u8>,
}

/// A session's message state, on both of its roles: sender (what it sent the relay) and
/// receiver (what the relay sends it).
pub(super) struct MessageState {
    /// Counters accepted from the client (messages and acks share them).
    rx: ReplayWindow,
    /// The last counter used toward the client.
    tx_counter: u64,
    limit: Limit,
    /// The sender's reliable, unordered numbers seen.
    seen: ReplayWindow,
    /// The sender's ordered streams: unreliable (sequenced), then reliable.
    ordered: [Reorder<Stored>; 2],
    /// The last number per stream delivered to this receiver.
    out_seq: [u32; 4],
    /// Reliable copies to this receiver awaiting its ack.
    pending: Retransmits,
}

impl MessageState {
    pub(super) fn new(now_ms: u64) -> Self {
        Self {
            rx: ReplayWindow::new(),
            tx_counter: 0,
            limit: Limit::new(now_ms),
            seen: ReplayWindow::new(),
            ordered: Default::default(),
            out_seq: [0; 4],
            pending: Retransmits::default(),
        }
    }

    fn idle(&self) -> bool {
        self.pending.is_empty() && !self.ordered.iter().any(Reorder::is_waiting)
    }
}

impl Registry {
    /// Message counters by name (see [`Count`]).
    pub fn message_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.msg_counts.iter()
    }

    /// Whether [`tick`](Self::tick) has work: copies awaiting acks or messages held.
    pub fn has_message_work(&self) -> bool {
        !self.msg_active.is_empty()
    }

    /// Retransmits copies whose ack is overdue (giving up after [`crate::messages::MAX_TRIES`]) and skips
    /// gaps in ordered streams that stayed open too long. Call every
    /// [`crate::messages::TICK_MS`] or so; datagrams go to `outbox`.
    pub fn tick(&mut self, now: Now, outbox: &mut Outbox) {
        let mut ids = std::mem::take(&mut self.msg_scratch);
        ids.clear();
        ids.extend(self.msg_active.iter().copied());
        let mut ready = Vec::new();
        for &id in &ids {
            let Some(e) = self.sessions.get_mut(&id) else {
                self.msg_active.remove(&id);
                continue;
            };
            let (addr, m) = (e.info.addr, &mut e.msgs);
            let key = e.secrets.msg.as_ref().map(|k| k.r2c).expect("only v2 sessions have message state in use");
            while let Some(due) = m.pending.poll(now.mono_ms) {
                match due {
                    Due::Resend(o) => {
                        m.tx_counter += 1;
                        let counter = m.tx_counter;
                        outbox.push(addr, MAX_FRAME_LEN, |out| {
                            msg::seal(MsgType::Message, id.0, counter, &key, &o.body, out).ok()
                        });
                        self.msg_counts.add(Count::Retransmitted, 1);
                    }
                    Due::GaveUp(_) => self.msg_counts.add(Count::GivenUp, 1),
                }
            }
            for (i, reliable) in [(0, false), (1, true)] {
                let flags = Flags::new(reliable, true);
                let skipped = m.ordered[i].expire(now.mono_ms, |s| ready.push((flags, s)));
                self.msg_counts.add(Count::GapsSkipped, skipped);
            }
            if m.idle() {
                self.msg_active.remove(&id);
            }
            for (flags, s) in ready.drain(..) {
                self.fan_out(now, id, flags, s.cmd, &s.data, outbox);
            }
        }
        self.msg_scratch = ids;
    }

    /// A message or message-ack from `src`. Dropped ones are counted and answered with
    /// nothing.
    pub(super) fn message(&mut self, now: Now, src: SocketAddr, datagram: &[u8], outbox: &mut Outbox) -> Outcome {
        let mut plain = [0u8; MAX_LEN];
        let (id, ty, body) = match self.open(now, src, datagram, &mut plain) {
            Ok(x) => x,
            Err(c) => {
                self.msg_counts.add(c, 1);
                return Outcome::Ignored;
            }
        };
        let done =
            if ty == MsgType::MessageAck { self.ack_in(id, body) } else { self.message_in(now, id, body, outbox) };
        match done {
            Ok(()) => Outcome::Message(id),
            Err(c) => {
                self.msg_counts.add(c, 1);
                Outcome::Ignored
            }
        }
    }

    /// Checks the frame, the session, the source, the counter and the tag, in that order
    /// (the cheap checks first); returns the session, the type and the plaintext body.
    fn open<'b>(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        plain: &'b mut [u8],
    ) -> Result<(SessionId, MsgType, &'b [u8]), Count> {
        let f = Frame::new_checked(datagram).map_err(|_| Count::Malformed)?;
        let id = SessionId(f.session());
        let e = self.sessions.get_mut(&id).ok_or(Count::UnknownSession)?;
        if e.info.addr != src {
            return Err(Count::WrongSource);
        }
        let key = e.secrets.msg.as_ref().ok_or(Count::BadAuth)?;
        if e.msgs.rx.check(f.counter()).is_err() {
            return Err(Count::Replayed);
        }
        let body = f.open(&key.c2r, plain).map_err(|_| Count::BadAuth)?;
        e.msgs.rx.update(f.counter());
        e.last_ctrl_ms = now.mono_ms;
        Ok((id, f.ty(), body))
    }

    fn ack_in(&mut self, id: SessionId, body: &[u8]) -> Result<(), Count> {
        let a = Ack::parse(body).map_err(|_| Count::Malformed)?;
        let e = self.sessions.get_mut(&id).expect("opened for a live session");
        if e.msgs.pending.ack(a.flags, a.seq) {
            self.msg_counts.add(Count::AcksReceived, 1);
        }
        Ok(())
    }

    fn message_in(&mut self, now: Now, id: SessionId, body: &[u8], outbox: &mut Outbox) -> Result<(), Count> {
        let m = Message::parse(body).map_err(|_| Count::Malformed)?;
        if m.from.is_some() {
            return Err(Count::Malformed);
        }
        let e = self.sessions.get_mut(&id).expect("opened for a live session");
        if !e.msgs.limit.allow(m.data.len(), now.mono_ms) {
            return Err(Count::RateLimited);
        }
        let (flags, reliable) = (m.flags, m.flags.reliable());
        if !flags.ordered() {
            if reliable && !first_sight(&mut e.msgs.seen, m.seq) {
                self.msg_counts.add(Count::Duplicates, 1);
                self.ack_out(id, flags, m.seq, outbox);
                return Ok(());
            }
            self.msg_counts.add(Count::Received, 1);
            if reliable {
                self.ack_out(id, flags, m.seq, outbox);
            }
            self.fan_out(now, id, flags, m.cmd, m.data, outbox);
            return Ok(());
        }
        let mut ready = Vec::new();
        let stored = Stored { cmd: m.cmd, data: m.data.to_vec() };
        let pushed =
            e.msgs.ordered[usize::from(reliable)].push(m.seq, stored, reliable, now.mono_ms, |s| ready.push(s));
        match pushed {
            Pushed::Ready | Pushed::Held => {
                if pushed == Pushed::Held {
                    self.msg_active.insert(id);
                }
                self.msg_counts.add(Count::Received, 1);
                if reliable {
                    self.ack_out(id, flags, m.seq, outbox);
                }
            }
            Pushed::Stale if reliable => {
                self.msg_counts.add(Count::Duplicates, 1);
                self.ack_out(id, flags, m.seq, outbox);
            }
            Pushed::Stale => return Err(Count::Late),
            Pushed::Full => return Err(Count::ReorderFull),
        }
        for s in ready {
            self.fan_out(now, id, flags, s.cmd, &s.data, outbox);
        }
        Ok(())
    }

    /// Acknowledges message `seq` of stream `flags` to its sender.
    fn ack_out(&mut self, id: SessionId, flags: Flags, seq: u32, outbox: &mut Outbox) {
        let e = self.sessions.get_mut(&id).expect("a live session");
        let key = e.secrets.msg.as_ref().expect("messages come from v2 sessions").r2c;
        e.msgs.tx_counter += 1;
        let counter = e.msgs.tx_counter;
        let body = Ack { flags, seq }.to_bytes();
        if outbox.push(e.info.addr, ACK_LEN, |out| msg::seal(MsgType::MessageAck, id.0, counter, &key, &body, out).ok())
        {
            self.msg_counts.add(Count::AcksSent, 1);
        }
    }

    /// Sends a copy of a message from `from` to every other member of its room that may
    /// receive, numbered in each receiver's stream and sealed under its key.
    fn fan_out(&mut self, now: Now, from: SessionId, flags: Flags, cmd: u8, data: &[u8], outbox: &mut Outbox) {
        let Some(sender) = self.sessions.get(&from) else { return };
        let user = sender.info.user.clone();
        let Some(room) = self.rooms.get(&sender.info.room) else { return };
        let mut members = std::mem::take(&mut self.msg_members);
        members.clear();
        members.extend(room.members.iter().copied().filter(|m| *m != from));
        let mut body = [0u8; MAX_BODY_LEN];
        for to in &members {
            let r = self.sessions.get_mut(to).expect("room members are live sessions");
            let Some(key) = r.secrets.msg.as_ref().map(|k| k.r2c) else { continue };
            if !r.info.may_receive_messages() {
                continue;
            }
            let s = &mut r.msgs;
            if flags.reliable() && s.pending.is_full() {
                self.msg_counts.add(Count::GivenUp, 1);
                continue;
            }
            let seq = s.out_seq[flags.stream()] + 1;
            let m = Message { cmd, flags, seq, from: Some(user.as_str()), data };
            let Ok(n) = m.write(&mut body) else { continue };
            s.tx_counter += 1;
            let counter = s.tx_counter;
            if !outbox.push(r.info.addr, MAX_FRAME_LEN, |out| {
                msg::seal(MsgType::Message, to.0, counter, &key, &body[..n], out).ok()
            }) {
                continue;
            }
            s.out_seq[flags.stream()] = seq;
            if flags.reliable() {
                s.pending.push(flags, seq, body[..n].to_vec(), now.mono_ms);
                self.msg_active.insert(*to);
            }
            self.msg_counts.add(Count::Delivered, 1);
        }
        self.msg_members = members;
    }
}
