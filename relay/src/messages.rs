//! In-room messages: the sans-IO state both ends keep, beside the wire formats of
//! [`crate::proto::msg`]. The registry routes messages with it on the control thread; the
//! client uses the same pieces, so sender and relay follow one set of rules.
//!
//! - [`Limit`]: a sender's budget, [`MESSAGES_PER_SEC`] messages and [`BYTES_PER_SEC`] bytes of
//!   data a second (token buckets, integer math, `now` a parameter). Over it a message is
//!   dropped and counted, and not acknowledged: a reliable one is retransmitted later. A
//!   retransmission counts as a message.
//! - [`Retransmits`]: reliable messages awaiting an ack, sent again every [`RETRANSMIT_MS`]
//!   up to [`MAX_TRIES`] transmissions in all, at most [`MAX_PENDING`] at a time; then given up
//!   and counted.
//! - [`Reorder`]: one ordered stream. Reliable and ordered: a message that arrives early is
//!   held (at most [`REORDER_CAP`]) until the gap before it fills; a gap that stays open for
//!   [`GAP_MS`], longer than a retransmission can take, is skipped. Ordered but unreliable
//!   ("sequenced"): nothing is held, and a message older than one already delivered is
//!   dropped.
//! - [`Outbox`]: the datagrams one control event produced. One message makes one copy per
//!   receiver, so the caller passes a reusable outbox instead of a single reply buffer.
//!
//! Each of the four flag combinations ([`Flags`]) is a stream with its own numbering. A
//! sender numbers its messages per stream from 1; the relay keeps the sender's order (and
//! holds, dedups and acks by the sender's numbers), then numbers what it delivers per
//! receiver and stream from 1, so a receiver's ordered streams have no gaps but the relay's
//! give-ups, whoever sent.
//!
//! Replay: senders use each counter once per session and direction, counting up
//! ([`crate::proto::msg`]); receivers keep the SRTP replay window ([`ReplayWindow`], 128
//! counters wide) over them, checked before decryption and updated after it, so a
//! replayed datagram is dropped unread while datagrams the network reordered still count
//! (an ordered stream is reordered by number anyway). Retransmissions carry fresh counters,
//! so a message seen twice is recognised by its stream and number: ordered streams by
//! [`Reorder`], the reliable unordered stream by a [`ReplayWindow`] over the numbers. A
//! duplicate of a reliable message is acknowledged again (its ack was lost) and not
//! delivered again.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::guard::Bucket;
use crate::proto::msg::Flags;
use crate::srtp::ReplayWindow;

/// A sender's message budget per second.
pub const MESSAGES_PER_SEC: u64 = 30;
/// A sender's data budget per second, in bytes.
pub const BYTES_PER_SEC: u64 = 8 * 1024;
/// Time between transmissions of an unacknowledged reliable message.
pub const RETRANSMIT_MS: u64 = 200;
/// Transmissions of a reliable message, the first included, before it is given up.
pub const MAX_TRIES: u8 = 10;
/// Reliable messages one side may have unacknowledged toward one peer.
pub const MAX_PENDING: usize = 32;
/// Early messages an ordered, reliable stream holds.
pub const REORDER_CAP: usize = 16;
/// How long a gap in an ordered, reliable stream is waited for: past the last
/// retransmission that could fill it.
pub const GAP_MS: u64 = RETRANSMIT_MS * (MAX_TRIES as u64 + 2);
/// How often the relay's control thread runs retransmissions and gap expiry.
pub const TICK_MS: u64 = 50;

/// What happened to messages, by name: the relay's `messages` counters (also the metric
/// labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Count {
    /// A new message accepted from a sender (authenticated, in budget, not a duplicate).
    Received = 0,
    /// A copy sent to a receiver (first transmissions).
    Delivered,
    /// A copy sent again to a receiver that had not acknowledged it.
    Retransmitted,
    /// Acks sent to senders of reliable messages.
    AcksSent,
    /// Receivers' acks that cleared a pending copy.
    AcksReceived,
    /// A reliable message received again (its ack was lost): acknowledged, not delivered.
    Duplicates,
    /// Over the sender's budget: dropped, not acknowledged.
    RateLimited,
    /// A counter already accepted for the session, or behind its replay window: dropped
    /// unread.
    Replayed,
    /// Did not decrypt under the session's message key (or the session has none: v1).
    BadAuth,
    /// A frame or body that does not parse.
    Malformed,
    /// Names no live session.
    UnknownSession,
    /// From another address than the session's.
    WrongSource,
    /// An ordered, unreliable message older than one already delivered.
    Late,
    /// An ordered, reliable message that arrived early with the reorder buffer full: not
    /// acknowledged, so the sender retransmits it.
    ReorderFull,
    /// Messages skipped because a gap in an ordered stream stayed open for [`GAP_MS`].
    GapsSkipped,
    /// Copies given up: not acknowledged after [`MAX_TRIES`], or the receiver already had
    /// [`MAX_PENDING`] unacknowledged.
    GivenUp,
}

impl Count {
    /// Every counter, in index order.
    pub const ALL: [Count; 16] = [
        Self::Received,
        Self::Delivered,
        Self::Retransmitted,
        Self::AcksSent,
        Self::AcksReceived,
        Self::Duplicates,
        Self::RateLimited,
        Self::Replayed,
        Self::BadAuth,
        Self::Malformed,
        Self::UnknownSession,
        Self::WrongSource,
        Self::Late,
        Self::ReorderFull,
        Self::GapsSkipped,
        Self::GivenUp,
    ];

    /// The counter's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Delivered => "delivered",
            Self::Retransmitted => "retransmitted",
            Self::AcksSent => "acks_sent",
            Self::AcksReceived => "acks_received",
            Self::Duplicates => "duplicates",
            Self::RateLimited => "rate_limited",
            Self::Replayed => "replayed",
            Self::BadAuth => "bad_auth",
            Self::Malformed => "malformed",
            Self::UnknownSession => "unknown_session",
            Self::WrongSource => "wrong_source",
            Self::Late => "late",
            Self::ReorderFull => "reorder_full",
            Self::GapsSkipped => "gaps_skipped",
            Self::GivenUp => "given_up",
        }
    }
}

/// Counters by [`Count`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts([u64; Count::ALL.len()]);

impl Counts {
    /// Adds `n` to `c`.
    pub fn add(&mut self, c: Count, n: u64) {
        self.0[c as usize] += n;
    }
    /// One counter.
    pub fn get(&self, c: Count) -> u64 {
        self.0[c as usize]
    }
    /// Every counter by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Count::ALL.iter().map(|c| (c.name(), self.get(*c)))
    }
}

/// A sender's budget: [`MESSAGES_PER_SEC`] and [`BYTES_PER_SEC`], each with a burst of one
/// second's worth.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    messages: Bucket,
    bytes: Bucket,
}

impl Limit {
    /// A full budget.
    pub fn new(now_ms: u64) -> Self {
        Self { messages: Bucket::full(MESSAGES_PER_SEC, now_ms), bytes: Bucket::full(BYTES_PER_SEC, now_ms) }
    }

    /// Charges one message of `data_len` bytes if both buckets allow it (neither is charged
    /// otherwise).
    pub fn allow(&mut self, data_len: usize, now_ms: u64) -> bool {
        let n = data_len as u64;
        let ok = self.messages.has(1, MESSAGES_PER_SEC, MESSAGES_PER_SEC, now_ms)
            & self.bytes.has(n, BYTES_PER_SEC, BYTES_PER_SEC, now_ms);
        ok && self.messages.take_n(1, MESSAGES_PER_SEC, MESSAGES_PER_SEC, now_ms)
            && self.bytes.take_n(n, BYTES_PER_SEC, BYTES_PER_SEC, now_ms)
    }
}

/// A reliable message awaiting its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its stream.
    pub flags: Flags,
    /// Its number in the stream (what the ack names).
    pub seq: u32,
    /// The plaintext body, sealed again under a fresh counter for each transmission.
    pub body: Vec<u8>,
    /// Transmissions so far.
    pub tries: u8,
    /// When the next one is due.
    pub due_ms: u64,
}

/// Reliable messages awaiting acks toward one peer, at most [`MAX_PENDING`].
#[derive(Debug, Clone, Default)]
pub struct Retransmits {
    items: Vec<Outgoing>,
}

/// What [`Retransmits::poll`] says to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Due<'a> {
    /// Send this one again (its try is counted).
    Resend(&'a Outgoing),
    /// Sent [`MAX_TRIES`] times without an ack: removed.
    GaveUp(Outgoing),
}

impl Retransmits {
    /// Unacknowledged messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none awaits an ack.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether another may be added.
    pub fn is_full(&self) -> bool {
        self.items.len() >= MAX_PENDING
    }

    /// Records a message just sent for the first time; `false` (and nothing recorded) when
    /// full.
    pub fn push(&mut self, flags: Flags, seq: u32, body: Vec<u8>, now_ms: u64) -> bool {
        if self.is_full() {
            return false;
        }
        self.items.push(Outgoing { flags, seq, body, tries: 1, due_ms: now_ms + RETRANSMIT_MS });
        true
    }

    /// An ack arrived; returns whether it cleared a pending message.
    pub fn ack(&mut self, flags: Flags, seq: u32) -> bool {
        let before = self.items.len();
        self.items.retain(|o| (o.flags, o.seq) != (flags, seq));
        self.items.len() < before
    }

    /// The next message due at `now_ms`, if any. Call until `None`: a resent message is
    /// next due [`RETRANSMIT_MS`] later, so each comes up at most once per call time.
    pub fn poll(&mut self, now_ms: u64) -> Option<Due<'_>> {
        let i = self.items.iter().position(|o| o.due_ms <= now_ms)?;
        if self.items[i].tries >= MAX_TRIES {
            return Some(Due::GaveUp(self.items.remove(i)));
        }
        let o = &mut self.items[i];
        o.tries += 1;
        o.due_ms = now_ms + RETRANSMIT_MS;
        Some(Due::Resend(o))
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<u64> {
        self.items.iter().map(|o| o.due_ms).min()
    }
}

struct Held<T> {
    seq: u32,
    since_ms: u64,
    item: T,
}

/// One ordered stream: delivers in sequence order, numbers from 1.
pub struct Reorder<T> {
    next: u32,
    held: VecDeque<Held<T>>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Self { next: 1, held: VecDeque::new() }
    }
}

/// What [`Reorder::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Delivered, with any held messages it unblocked.
    Ready,
    /// Early: held until the gap before it fills or times out.
    Held,
    /// Already delivered, skipped or held (a reliable stream's duplicate), or older than a
    /// delivered one (a sequenced stream's late message).
    Stale,
    /// Early, and the buffer is full: dropped.
    Full,
}

impl<T> Reorder<T> {
    /// Takes message `seq`. `wait` (a reliable stream) holds early messages; without it
    /// (sequenced) an early message is delivered at once and skips the gap. Delivered
    /// messages go to `out` in order.
    pub fn push(&mut self, seq: u32, item: T, wait: bool, now_ms: u64, mut out: impl FnMut(T)) -> Pushed {
        if seq < self.next {
            return Pushed::Stale;
        }
        if seq == self.next || !wait {
            out(item);
            self.next = seq.saturating_add(1);
            self.release(&mut out);
            return Pushed::Ready;
        }
        let at = self.held.partition_point(|h| h.seq < seq);
        if self.held.get(at).is_some_and(|h| h.seq == seq) {
            return Pushed::Stale;
        }
        if self.held.len() >= REORDER_CAP {
            return Pushed::Full;
        }
        self.held.insert(at, Held { seq, since_ms: now_ms, item });
        Pushed::Held
    }

    /// Skips each gap whose first held message has waited [`GAP_MS`]; returns how many
    /// numbers were skipped. Unblocked messages go to `out` in order.
    pub fn expire(&mut self, now_ms: u64, mut out: impl FnMut(T)) -> u64 {
        let mut skipped = 0;
        while let Some(h) = self.held.front() {
            if now_ms.saturating_sub(h.since_ms) < GAP_MS {
                break;
            }
            skipped += u64::from(h.seq - self.next);
            self.next = h.seq;
            self.release(&mut out);
        }
        skipped
    }

    fn release(&mut self, out: &mut impl FnMut(T)) {
        while self.held.front().is_some_and(|h| h.seq <= self.next) {
            let h = self.held.pop_front().expect("checked above");
            if h.seq == self.next {
                out(h.item);
                self.next = h.seq.saturating_add(1);
            }
        }
    }

    /// When [`expire`](Self::expire) would next skip a gap.
    pub fn deadline(&self) -> Option<u64> {
        self.held.front().map(|h| h.since_ms + GAP_MS)
    }

    /// Whether messages are held.
    pub fn is_waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// The number the stream waits for next.
    pub fn next(&self) -> u32 {
        self.next
    }
}

/// Duplicate detection for a reliable, unordered stream: a [`ReplayWindow`] over its
/// numbers. `true` for a number not seen before (and now recorded). A number more than
/// [`ReplayWindow::WIDTH`] behind the newest counts as seen: with at most [`MAX_PENDING`]
/// in flight it is a late duplicate.
pub fn first_sight(window: &mut ReplayWindow, seq: u32) -> bool {
    let fresh = window.check(u64::from(seq)).is_ok();
    if fresh {
        window.update(u64::from(seq));
    }
    fresh
}

/// Datagrams to send, each with its destination, in one reusable buffer (cleared, not
/// freed, between uses).
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every datagram, keeping the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues a datagram for `dst` that `write` puts into a buffer of `max` bytes and
    /// returns the length of; nothing is queued when it returns `None`.
    pub fn push(&mut self, dst: SocketAddr, max: usize, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let start = self.bytes.len();
        self.bytes.resize(start + max, 0);
        match write(&mut self.bytes[start..]) {
            Some(n) if n <= max => {
                self.bytes.truncate(start + n);
                self.items.push((dst, start, n));
                true
            }
            _ => {
                self.bytes.truncate(start);
                false
            }
        }
    }

    /// The queued datagrams in order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.items.iter().map(|&(dst, at, n)| (dst, &self.bytes[at..at + n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_thirty_messages_and_eight_kilobytes_a_second() {
        let mut l = Limit::new(0);
        assert_eq!((0..100).filter(|_| l.allow(10, 0)).count(), 30);
        assert!(!l.allow(0, 33));
        assert!(l.allow(0, 34), "one message's worth refills in 34 ms");
        assert!(!l.allow(0, 34));
        let mut l = Limit::new(0);
        assert_eq!((0..100).filter(|_| l.allow(1024, 0)).count(), 8);
        assert!(!l.allow(1024, 0));
    }

    #[test]
    fn a_refused_message_charges_neither_bucket() {
        let mut l = Limit::new(0);
        for _ in 0..8 {
            assert!(l.allow(1024, 0));
        }
        // The byte bucket is empty: 22 tiny messages still fit the message bucket.
        assert!(!l.allow(1, 0));
        assert_eq!((0..30).filter(|_| l.allow(0, 0)).count(), 22);
    }

    #[test]
    fn reliable_streams_hold_early_messages_and_skip_gaps_that_stay_open() {
        let mut r = Reorder::default();
        let mut got = Vec::new();
        assert_eq!(r.push(2, 'b', true, 0, |x| got.push(x)), Pushed::Held);
        assert_eq!(r.push(3, 'c', true, 0, |x| got.push(x)), Pushed::Held);
        assert_eq!(r.push(3, 'c', true, 0, |x| got.push(x)), Pushed::Stale, "held twice");
        assert!(got.is_empty());
        assert_eq!(r.push(1, 'a', true, 10, |x| got.push(x)), Pushed::Ready);
        assert_eq!(got, ['a', 'b', 'c']);
        assert_eq!(r.push(2, 'b', true, 10, |x| got.push(x)), Pushed::Stale, "a retransmission");
        // 4 never comes: 5 waits GAP_MS, then the gap is skipped.
        assert_eq!(r.push(5, 'e', true, 100, |x| got.push(x)), Pushed::Held);
        assert_eq!(r.expire(100 + GAP_MS - 1, |x| got.push(x)), 0);
        assert_eq!(r.expire(100 + GAP_MS, |x| got.push(x)), 1);
        assert_eq!(got, ['a', 'b', 'c', 'e']);
        assert_eq!(r.push(4, 'd', true, 0, |x| got.push(x)), Pushed::Stale, "too late once skipped");
        assert!(!r.is_waiting());
        for s in 0..REORDER_CAP as u32 {
            assert_eq!(r.push(10 + s, 'x', true, 0, |_| ()), Pushed::Held);
        }
        assert_eq!(r.push(100, 'x', true, 0, |_| ()), Pushed::Full);
    }

    #[test]
    fn sequenced_streams_never_deliver_out_of_order_and_never_wait() {
        let mut r = Reorder::default();
        let mut got = Vec::new();
        for (seq, x) in [(1, 'a'), (3, 'c'), (2, 'b'), (4, 'd')] {
            r.push(seq, x, false, 0, |x| got.push(x));
        }
        assert_eq!(got, ['a', 'c', 'd'], "2 came after 3: dropped");
    }

    #[test]
    fn retransmissions_run_every_200_ms_ten_times_then_give_up() {
        let mut p = Retransmits::default();
        assert!(p.push(Flags::new(true, false), 1, b"m".to_vec(), 0));
        assert!(p.poll(RETRANSMIT_MS - 1).is_none());
        let mut sends = 1;
        let mut t = 0;
        loop {
            t += RETRANSMIT_MS;
            match p.poll(t) {
                Some(Due::Resend(o)) => {
                    sends += 1;
                    assert_eq!(o.tries, sends);
                    assert!(p.poll(t).is_none(), "once per due time");
                }
                Some(Due::GaveUp(o)) => {
                    assert_eq!(o.seq, 1);
                    break;
                }
                None => panic!("due at {t}"),
            }
        }
        assert_eq!((sends, t), (MAX_TRIES, u64::from(MAX_TRIES) * RETRANSMIT_MS));
        assert!(p.is_empty());
        assert!(t < GAP_MS, "a gap is waited for longer than a retransmission can take");
        for s in 0..MAX_PENDING as u32 {
            assert!(p.push(Flags::new(true, true), s, vec![], 0));
        }
        assert!(!p.push(Flags::new(true, true), 99, vec![], 0));
        assert!(p.ack(Flags::new(true, true), 3));
        assert!(!p.ack(Flags::new(true, true), 3));
        assert!(!p.ack(Flags::new(true, false), 4), "another stream's number");
        assert_eq!(p.len(), MAX_PENDING - 1);
    }

    #[test]
    fn duplicates_of_unordered_reliable_messages_are_recognised() {
        let mut w = ReplayWindow::new();
        assert!(first_sight(&mut w, 2));
        assert!(first_sight(&mut w, 1));
        assert!(!first_sight(&mut w, 2));
        assert!(first_sight(&mut w, 500));
        assert!(!first_sight(&mut w, 3), "far behind: taken as seen");
    }

    #[test]
    fn the_outbox_keeps_datagrams_in_order_and_reuses_its_memory() {
        let mut o = Outbox::new();
        let a: SocketAddr = "198.18.0.1:1".parse().unwrap();
        assert!(o.push(a, 10, |b| {
            b[..3].copy_from_slice(b"one");
            Some(3)
        }));
        assert!(!o.push(a, 10, |_| None));
        assert!(!o.push(a, 10, |_| Some(11)), "longer than its buffer");
        assert!(o.push(a, 4, |b| {
            b.copy_from_slice(b"four");
            Some(4)
        }));
        assert_eq!(o.iter().map(|(_, b)| b.to_vec()).collect::<Vec<_>>(), [b"one".to_vec(), b"four".to_vec()]);
        o.clear();
        assert!(o.is_empty() && o.bytes.capacity() >= 7);
    }
}
