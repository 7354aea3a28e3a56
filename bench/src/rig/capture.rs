//! The receiving end of the rig: relayed frames copied into a preallocated arena while a
//! probe runs, and every frame checked after it with its receiver's keys.
//!
//! Invariants: while a probe runs, receiving is one copy per frame and never allocates (the
//! arena is sized and touched before the probe; a frame that does not fit is counted, not
//! checked, and so counts as lost). The check runs in arrival order, so each receiver's
//! replay window sees the packets as they arrived: UDP checksums ([`relay::wire::parse_udp`]),
//! destination port to receiver, then that receiver's SRTP tag and replay check.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use relay::client::Event;

use crate::relayd::Member;

/// The most memory the capture arena may take.
pub(super) const CAPTURE_MAX_BYTES: usize = 8 << 30;

/// Relayed frames, copied in as they arrive and checked after the probe.
#[derive(Default)]
pub(super) struct Capture {
    /// Preallocated (and touched) before the probe, so receiving never allocates.
    arena: Vec<u8>,
    used: usize,
    /// (offset, length) of each frame in arrival order.
    frames: Vec<(usize, usize)>,
    /// When each frame was taken off the receiving ring (one clock read per batch).
    arrived: Vec<Instant>,
    /// Frames that did not fit (not checked; counted as lost).
    pub(super) overflow: u64,
}

impl Capture {
    /// Makes room for `frames` frames of at most `frame_len` bytes and forgets the last probe.
    pub(super) fn prepare(&mut self, frames: usize, frame_len: usize) -> Result<()> {
        let bytes = frames.saturating_mul(frame_len);
        if bytes > CAPTURE_MAX_BYTES {
            bail!(
                "a probe would capture {} MiB (more than {} MiB): lower --max-pps or --probe-secs",
                bytes >> 20,
                CAPTURE_MAX_BYTES >> 20
            );
        }
        if self.arena.len() < bytes {
            self.arena.resize(bytes, 0);
        }
        self.used = 0;
        self.frames.clear();
        self.frames.reserve(frames);
        self.arrived.clear();
        self.arrived.reserve(frames);
        self.overflow = 0;
        Ok(())
    }

    /// Copies `frame`, taken off the ring at `at`, into the arena (or counts it as overflow).
    pub(super) fn push(&mut self, frame: &[u8], at: Instant) {
        let end = self.used + frame.len();
        match self.arena.get_mut(self.used..end) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                self.frames.push((self.used, frame.len()));
                self.arrived.push(at);
                self.used = end;
            }
            None => self.overflow += 1,
        }
    }
}

/// What the receivers' check found in one probe's capture.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tally {
    /// Authentic, first-seen media for its receiver.
    pub(super) ok: u64,
    /// Failed the receiver's SRTP tag check.
    pub(super) auth_failed: u64,
    /// Refused by the receiver's replay check as already received.
    pub(super) duplicates: u64,
    /// Other SRTP errors (too old, malformed RTP).
    pub(super) other_srtp: u64,
    /// Not a valid UDP frame (bad checksum included), or not media for a receiver.
    pub(super) stray: u64,
    /// The largest jump in SRTP packet index between two packets one receiver verified: more
    /// than 2^15 lost in a row is where RFC 3711's index estimate (Appendix A) can go wrong.
    pub(super) max_index_gap: u64,
}

/// When each of a probe's packets was handed to the generator, by the number it carries in
/// its payload (bytes 0..8 after the RTP header).
#[derive(Default)]
pub(super) struct SendTimes {
    /// The number of this probe's first packet.
    pub(super) first_id: u64,
    /// Hand-over times, from `first_id` on; `None` for one not handed over yet.
    pub(super) at: Vec<Option<Instant>>,
}

impl SendTimes {
    /// When packet number `id` was handed over; `None` for one of an earlier probe.
    fn of(&self, id: u64) -> Option<Instant> {
        let k = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.at.get(k).copied().flatten()
    }
}

/// The rig's receivers, found by their UDP port, and the last SRTP index each verified.
pub(super) struct Receivers {
    members: Vec<Member>,
    by_port: HashMap<u16, usize>,
    last_index: Vec<Option<u64>>,
}

impl Receivers {
    /// The receivers `members`, each found by its socket's local port.
    pub(super) fn new(members: Vec<Member>) -> Result<Self> {
        let mut by_port = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            by_port.insert(m.sock.local_addr()?.port(), i);
        }
        let last_index = vec![None; members.len()];
        Ok(Self { members, by_port, last_index })
    }

    /// Checks every frame of `capture` with its receiver's keys, in arrival order, and
    /// records each verified packet's one-way latency (µs, from its hand-over in `sent`) into
    /// `latency`, which is reset first.
    pub(super) fn verify(&mut self, capture: &mut Capture, sent: &SendTimes, latency: &mut Histogram<u64>) -> Tally {
        let mut t = Tally::default();
        latency.reset();
        for (&(off, len), &arrived) in capture.frames.iter().zip(&capture.arrived) {
            let frame = &mut capture.arena[off..off + len];
            let Ok(meta) = relay::wire::parse_udp(frame) else {
                t.stray += 1;
                continue;
            };
            let Some(&i) = self.by_port.get(&meta.dst.port()) else {
                t.stray += 1;
                continue;
            };
            let rtp = &mut frame[meta.payload];
            match self.members[i].client.handle(rtp) {
                Event::Media { index, len, .. } => {
                    t.ok += 1;
                    // The packet's number, after the RTP header, locates its send time; a
                    // packet of an earlier probe has none here.
                    let plain = &rtp[..len];
                    let id = relay::srtp::RtpPacket::new_checked(plain)
                        .ok()
                        .and_then(|p| plain.get(p.header_len()..p.header_len() + 8))
                        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
                    if let Some(sent) = id.and_then(|id| sent.of(id)) {
                        let us = arrived.saturating_duration_since(sent).as_micros();
                        latency.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                    }
                    if let Some(last) = self.last_index[i].replace(index) {
                        t.max_index_gap = t.max_index_gap.max(index.saturating_sub(last));
                    }
                }
                Event::MediaError(relay::srtp::Error::AuthFailed) => t.auth_failed += 1,
                Event::MediaError(relay::srtp::Error::Replayed) => t.duplicates += 1,
                Event::MediaError(_) => t.other_srtp += 1,
                _ => t.stray += 1,
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn capture_keeps_frames_in_order_and_counts_what_does_not_fit() {
        let mut c = Capture::default();
        c.prepare(2, 4).unwrap();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_micros(5);
        c.push(&[1, 2, 3], t0);
        c.push(&[4, 5, 6, 7], t1);
        c.push(&[8, 9], t1);
        assert_eq!(c.frames, [(0, 3), (3, 4)]);
        assert_eq!(c.arrived, [t0, t1], "an arrival time per kept frame");
        assert_eq!(&c.arena[..7], &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.overflow, 1, "the third frame does not fit in 2 × 4 bytes");
        // The next probe starts empty and reuses the arena.
        c.prepare(1, 4).unwrap();
        assert!(c.frames.is_empty() && c.arrived.is_empty() && c.overflow == 0 && c.arena.len() == 8);
        assert!(c.prepare(CAPTURE_MAX_BYTES, 2).is_err(), "a capture over the limit is refused");
    }

    #[test]
    fn send_times_know_only_this_probes_packets() {
        let t0 = Instant::now();
        let sent = SendTimes { first_id: 100, at: vec![Some(t0), None] };
        assert_eq!(sent.of(100), Some(t0));
        assert_eq!(sent.of(101), None, "not handed over yet");
        assert_eq!(sent.of(99), None, "a packet of an earlier probe");
        assert_eq!(sent.of(102), None, "beyond this probe");
    }
}
