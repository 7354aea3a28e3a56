//! Per-stream SRTP state: the replay window, rollover-counter (ROC) estimation, and the small
//! receiver/sender state types built from them.
//!
//! # Invariants
//!
//! - [`ReplayWindow`] is the only replay-window implementation; [`estimate_index`] is the only
//!   ROC estimator (RFC 3711 Appendix A). Receivers and the sender helper delegate to them.
//! - All types here are `Copy`, heap-free and a few dozen bytes, so a caller can keep one per
//!   SSRC in a flat table and snapshot/restore them freely.
//! - Checking ([`ReplayWindow::check`]) never mutates; only [`ReplayWindow::update`] does, and
//!   `SessionKeys` calls it only after a packet authenticated.
#![forbid(unsafe_code)]

use super::index::{Roc, SeqNum, SrtpIndex};
use super::Error;

/// Sliding replay window over packet indexes (RFC 3711 §3.3.2), [`ReplayWindow::WIDTH`] packets
/// wide.
///
/// Bit `i` of the bitmap records whether index `highest - i` has been received. An index above
/// the highest is always acceptable (authentication is what stops forged jumps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    seen: u128,
}

impl ReplayWindow {
    /// How many indexes, counting the highest, the window remembers.
    pub const WIDTH: u64 = u128::BITS as u64;

    /// An empty window: every index is acceptable.
    pub const fn new() -> Self {
        ReplayWindow { highest: None, seen: 0 }
    }

    /// Whether `index` may be accepted: [`Error::Replayed`] if it was already recorded,
    /// [`Error::TooOld`] if it is [`Self::WIDTH`] or more behind the highest index.
    pub fn check(&self, index: u64) -> Result<(), Error> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        let behind = highest - index;
        if behind >= Self::WIDTH {
            return Err(Error::TooOld);
        }
        if self.seen & (1 << behind) != 0 {
            return Err(Error::Replayed);
        }
        Ok(())
    }

    /// Records `index` as received, sliding the window forward if it is a new highest. An index
    /// that is already too old is ignored.
    pub fn update(&mut self, index: u64) {
        match self.highest {
            None => {
                self.highest = Some(index);
                self.seen = 1;
            }
            Some(highest) if index > highest => {
                let ahead = index - highest;
                self.seen = if ahead >= Self::WIDTH { 0 } else { self.seen << ahead };
                self.seen |= 1;
                self.highest = Some(index);
            }
            Some(highest) => {
                let behind = highest - index;
                if behind < Self::WIDTH {
                    self.seen |= 1 << behind;
                }
            }
        }
    }

    /// The highest index recorded so far.
    pub const fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Estimates the 48-bit SRTP packet index of a packet with sequence number `seq`, given the
/// highest index received so far — RFC 3711 Appendix A, with `s_l` and `ROC` taken from
/// `highest`.
///
/// Before the first packet the index is `seq` with ROC 0 (RFC 3711 §3.3.1). The estimate never
/// leaves the 48-bit range: at ROC 0 the "previous ROC" case stays at ROC 0, and at ROC 2^32 − 1
/// the "next ROC" case stays at that ROC (the stream must be rekeyed long before either matters).
pub fn estimate_index(highest: Option<u64>, seq: u16) -> u64 {
    let seq = SeqNum::new(seq);
    let Some(highest) = highest else {
        return SrtpIndex::from_parts(Roc::new(0), seq).get();
    };
    let highest = SrtpIndex::new_truncating(highest);
    let roc = highest.roc();
    let s_l = i32::from(highest.seq().get());
    let seq_i = i32::from(seq.get());
    let v = if s_l < 0x8000 {
        if seq_i - s_l > 0x8000 {
            roc.saturating_prev()
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq_i {
        roc.saturating_next()
    } else {
        roc
    };
    SrtpIndex::from_parts(v, seq).get()
}

/// RTP receive state for one SSRC under one key: the highest index seen and the replay window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpReceiver {
    window: ReplayWindow,
}

impl RtpReceiver {
    /// State before the first packet.
    pub const fn new() -> Self {
        RtpReceiver { window: ReplayWindow::new() }
    }

    /// The index a packet with sequence number `seq` would get ([`estimate_index`]).
    pub fn estimate_index(&self, seq: u16) -> u64 {
        estimate_index(self.window.highest(), seq)
    }

    /// Highest index authenticated so far.
    pub const fn highest(&self) -> Option<u64> {
        self.window.highest()
    }

    /// The rollover counter of the highest index, 0 before the first packet.
    pub fn roc(&self) -> u32 {
        self.window.highest().map_or(0, |i| SrtpIndex::new_truncating(i).roc().get())
    }

    /// The replay window.
    pub const fn window(&self) -> &ReplayWindow {
        &self.window
    }

    pub(super) fn window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.window
    }
}

/// SRTCP receive state for one sender SSRC under one key: a replay window over the explicit
/// 31-bit SRTCP index (RFC 3711 §3.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpReceiver {
    window: ReplayWindow,
}

impl RtcpReceiver {
    /// State before the first packet.
    pub const fn new() -> Self {
        RtcpReceiver { window: ReplayWindow::new() }
    }

    /// Highest SRTCP index authenticated so far.
    pub const fn highest(&self) -> Option<u64> {
        self.window.highest()
    }

    /// The replay window.
    pub const fn window(&self) -> &ReplayWindow {
        &self.window
    }

    pub(super) fn window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.window
    }
}

/// Sender-side ROC tracking for a client that originates RTP: feed it each sequence number it
/// sends (in send order, retransmissions included) and it returns the ROC to protect with.
///
/// Uses the same [`estimate_index`] as the receiver, so both sides agree on wraps and on late
/// retransmissions of pre-wrap packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpSender {
    highest: Option<u64>,
}

impl RtpSender {
    /// A sender that has sent nothing yet (ROC 0).
    pub const fn new() -> Self {
        RtpSender { highest: None }
    }

    /// The ROC for the packet with sequence number `seq`, advancing the state.
    pub fn next_roc(&mut self, seq: u16) -> u32 {
        let index = estimate_index(self.highest, seq);
        if self.highest.is_none_or(|h| index > h) {
            self.highest = Some(index);
        }
        SrtpIndex::new_truncating(index).roc().get()
    }
}

#[cfg(test)]
mod tests {
    use super::super::SRTP_INDEX_MAX;
    use super::*;

    #[test]
    fn window_accepts_each_index_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        for i in [10u64, 12, 11, 13, 9] {
            assert_eq!(w.check(i), Ok(()), "{i}");
            w.update(i);
            assert_eq!(w.check(i), Err(Error::Replayed), "{i}");
        }
        assert_eq!(w.highest(), Some(13));
        assert_eq!(w.check(8), Ok(()));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new();
        w.update(1000);
        assert_eq!(w.check(1000 - (ReplayWindow::WIDTH - 1)), Ok(()));
        assert_eq!(w.check(1000 - ReplayWindow::WIDTH), Err(Error::TooOld));
        w.update(1000 - (ReplayWindow::WIDTH - 1));
        assert_eq!(w.check(1000 - (ReplayWindow::WIDTH - 1)), Err(Error::Replayed));
        // Sliding by one pushes the oldest entry out.
        w.update(1001);
        assert_eq!(w.check(1000 - (ReplayWindow::WIDTH - 1)), Err(Error::TooOld));
        assert_eq!(w.check(1000), Err(Error::Replayed));
        // A jump wider than the window clears the history.
        w.update(1001 + 500);
        assert_eq!(w.check(1001), Err(Error::TooOld));
        assert_eq!(w.check(1501 - 1), Ok(()));
        assert_eq!(w.check(1501), Err(Error::Replayed));
        // Too-old updates are ignored rather than corrupting the bitmap.
        let before = w;
        w.update(0);
        assert_eq!(w, before);
    }

    #[test]
    fn window_slide_exactly_width() {
        let mut w = ReplayWindow::new();
        w.update(0);
        w.update(ReplayWindow::WIDTH - 1);
        assert_eq!(w.check(0), Err(Error::Replayed));
        w.update(ReplayWindow::WIDTH);
        assert_eq!(w.check(0), Err(Error::TooOld));
        assert_eq!(w.check(1), Ok(()));
    }

    #[test]
    fn estimate_follows_rfc3711_appendix_a() {
        assert_eq!(estimate_index(None, 0xf17b), 0xf17b);
        // In order, no wrap.
        assert_eq!(estimate_index(Some(100), 101), 101);
        // Wrap forward: s_l ≥ 2^15 and seq far below.
        assert_eq!(estimate_index(Some(65530), 5), 0x1_0005);
        // Late packet from before the wrap: s_l < 2^15 and seq far above.
        assert_eq!(estimate_index(Some(0x1_0005), 65530), 65530);
        // ROC 0 cannot go back: the estimate stays at ROC 0.
        assert_eq!(estimate_index(Some(5), 65530), 65530);
        // Halfway points.
        assert_eq!(estimate_index(Some(0x2_0000), 0x8000), 0x2_8000);
        assert_eq!(estimate_index(Some(0x2_0000), 0x8001), 0x1_8001);
        assert_eq!(estimate_index(Some(0x2_8000), 0), 0x2_0000);
        assert_eq!(estimate_index(Some(0x2_8001), 0), 0x3_0000);
        // Never leaves 48 bits.
        assert_eq!(estimate_index(Some(SRTP_INDEX_MAX), 3), SRTP_INDEX_MAX - 0xffff + 3);
    }

    #[test]
    fn sender_and_receiver_agree_across_a_wrap() {
        let mut tx = RtpSender::new();
        let mut rx = RtpReceiver::new();
        let seqs = [65530u16, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5];
        for (n, seq) in seqs.into_iter().enumerate() {
            let roc = tx.next_roc(seq);
            assert_eq!(roc, u32::from(n >= 6), "seq {seq}");
            let index = rx.estimate_index(seq);
            assert_eq!(index, (u64::from(roc) << 16) | u64::from(seq));
            rx.window_mut().update(index);
        }
        assert_eq!(rx.roc(), 1);
        // A late retransmission of a pre-wrap packet keeps ROC 0 on both sides.
        assert_eq!(tx.next_roc(65534), 0);
        assert_eq!(rx.estimate_index(65534), 65534);
        assert_eq!(tx.next_roc(6), 1);
    }
}
