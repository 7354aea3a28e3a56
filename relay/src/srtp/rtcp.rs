//! Zero-copy views of compound RTCP (RFC 3550 §6.1, §6.4–§6.6; RFC 4585 §6.1–§6.3;
//! RFC 5104 §4.3.1; REMB, draft-alvestrand-rmcat-remb-03; transport-cc,
//! draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1), and the per-destination rebuild
//! the engine routes SRTCP with.
//!
//! [`Compound`] and [`Packet`] wrap a buffer in the style of [`super::RtcpPacket`]: a
//! `mod field` of byte offsets, `new_unchecked` / `new_checked` / `check_len`, accessors that
//! read the bytes in place. Nothing here allocates or casts bytes to a struct.
//!
//! # Invariants
//!
//! - After [`Compound::check_len`] (or [`Packet::check_len`]) succeeds no accessor panics,
//!   nor does any accessor of the packets [`Compound::packets`] yields.
//! - A checked compound is one or more packets that exactly fill the buffer, each of version 2
//!   and as long as its length field says, each at least as long as its type's structure needs
//!   (report blocks, feedback header and FCI, SDES chunks, BYE list), and the first one an SR,
//!   RR or feedback message, whose bytes 4..8 are the sender SSRC SRTCP keys on (RFC 3550
//!   A.2; a feedback message first is RFC 5506 reduced-size RTCP).
//! - Padding (P) is accepted on any packet whose padding count is 1 or more and leaves the
//!   4-byte header. RFC 3550 §6.4.1 puts it only on the last packet, but libwebrtc pads
//!   transport-cc feedback wherever it sits in a compound; the length field delimits each
//!   packet either way, so this never changes where a packet ends.
//! - [`Compound::write_for`] writes a compound that is never longer than the input, passes
//!   [`Compound::check_len`], and starts with a packet whose bytes 4..8 are the input's
//!   [`Compound::sender_ssrc`]: every destination's copy keys SRTCP on the same SSRC.
//!
//! # What goes where
//!
//! An [`Audience`] answers two questions for one destination. `sends(s)`: the destination is
//! the sender of stream `s` and may be told about it by this compound's sender. `receives(s)`:
//! the destination may receive the compound sender's own stream `s`. Then, per packet:
//!
//! - SR: the whole SR (sender info) if it `receives` the SR's SSRC, with only the report blocks
//!   about streams it `sends`; else, if some block is about a stream it sends, an RR from the
//!   same SSRC with those blocks.
//! - RR: an RR with only the report blocks about streams it `sends`.
//! - NACK, PLI, transport-cc and any other feedback: the whole packet if it `sends` the media
//!   source SSRC. FIR: only the FCI entries for streams it `sends`; REMB: only the SSRCs it
//!   `sends` (the bitrate is passed through unchanged).
//! - BYE: only the SSRCs it `receives`. SDES: only the chunks of SSRCs it `receives`. Both also
//!   keep the compound's own SSRC, which the destination sees anyway as the first packet's.
//!   SDES only rides along: SDES alone sends a destination nothing. A BYE addresses its
//!   receivers.
//! - APP, XR and unknown types go nowhere, nor do SR/RR profile-specific extensions.
//!
//! A destination gets a compound only if something in it is addressed to it and it may see
//! the compound's sender SSRC (it `receives` it, or a packet from that SSRC is addressed to
//! it). The first packet is always written, as an RR without blocks when none of it is for the
//! destination, so the copy keys SRTCP on the same SSRC.
#![forbid(unsafe_code)]

use thiserror::Error;

/// The RTCP version (RFC 3550 §6.4.1).
pub const VERSION: u8 = 2;
/// Sender report (RFC 3550 §6.4.1).
pub const SR: u8 = 200;
/// Receiver report (RFC 3550 §6.4.2).
pub const RR: u8 = 201;
/// Source description (RFC 3550 §6.5).
pub const SDES: u8 = 202;
/// Goodbye (RFC 3550 §6.6).
pub const BYE: u8 = 203;
/// Application-defined (RFC 3550 §6.7).
pub const APP: u8 = 204;
/// Transport-layer feedback (RFC 4585 §6.1).
pub const RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585 §6.1).
pub const PSFB: u8 = 206;
/// Extended report (RFC 3611).
pub const XR: u8 = 207;

/// Length of one report block (RFC 3550 §6.4.1).
pub const REPORT_BLOCK_LEN: usize = 24;

mod field {
    /// Version (2 bits), padding, count or FMT (5 bits).
    pub const V_P_COUNT: usize = 0;
    pub const PT: usize = 1;
    /// Length in 32-bit words minus one.
    pub const LENGTH: usize = 2;
    pub const HEADER_LEN: usize = 4;
    /// Sender SSRC (SR, RR, APP, XR, feedback), first SDES chunk or first BYE SSRC.
    pub const SSRC: usize = 4;
    /// SR sender info: NTP timestamp, RTP timestamp, packet count, octet count.
    pub const SENDER_INFO: usize = 8;
    pub const SENDER_INFO_LEN: usize = 20;
    pub const SR_BLOCKS: usize = SENDER_INFO + SENDER_INFO_LEN;
    pub const RR_BLOCKS: usize = 8;
    /// Feedback: media source SSRC, then the FCI (RFC 4585 §6.1).
    pub const MEDIA_SSRC: usize = 8;
    pub const FCI: usize = 12;
    /// APP: SSRC and a 4-byte name (RFC 3550 §6.7).
    pub const APP_MIN: usize = 12;

    /// Inside a report block.
    pub mod block {
        pub const SSRC: usize = 0;
        pub const FRACTION_LOST: usize = 4;
        pub const CUMULATIVE_LOST: usize = 5;
        pub const HIGHEST_SEQ: usize = 8;
        pub const JITTER: usize = 12;
        pub const LSR: usize = 16;
        pub const DLSR: usize = 20;
    }

    /// Inside a FIR FCI entry (RFC 5104 §4.3.1.1): SSRC, sequence number, 3 reserved bytes.
    pub const FIR_ENTRY_LEN: usize = 8;
    /// Inside a REMB FCI: "REMB" (4 bytes), SSRC count, exponent (6 bits) and mantissa (18
    /// bits), SSRCs.
    pub const REMB_COUNT: usize = 4;
    pub const REMB_BITRATE: usize = 5;
    pub const REMB_SSRCS: usize = 8;
    /// Transport-cc FCI: base sequence, status count, reference time, feedback count.
    pub const TCC_MIN_FCI: usize = 8;
}

const FLAG_PADDING: u8 = 0x20;
const MASK_COUNT: u8 = 0x1f;
/// Feedback message types (the count field of RTPFB and PSFB packets).
const FMT_NACK: u8 = 1;
const FMT_TCC: u8 = 15;
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;
const FMT_AFB: u8 = 15;
const REMB_ID: &[u8; 4] = b"REMB";

/// Why a compound RTCP packet does not parse, or could not be rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum Error {
    /// The buffer ends inside a packet's header or before the end its length field gives, or
    /// is empty.
    #[error("RTCP packet truncated")]
    TooShort,
    /// A packet's version is not 2.
    #[error("RTCP version is not 2")]
    BadVersion,
    /// A padding count of 0, or one that reaches into the packet's 4-byte header.
    #[error("bad RTCP padding")]
    BadPadding,
    /// The packet is shorter than its type requires: report blocks, the feedback header, an
    /// FCI (NACK, FIR, REMB, transport-cc), SDES chunks or the BYE list and reason.
    #[error("RTCP packet too short for its type")]
    BadLength,
    /// The first packet of the compound is not an SR, RR or feedback message.
    #[error("compound RTCP does not start with SR, RR or feedback")]
    BadFirstPacket,
    /// The output buffer cannot hold the rebuilt compound.
    #[error("buffer too small for the rebuilt RTCP")]
    BufferTooSmall,
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// The `u32` at `at`, if the slice holds it.
fn get_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// What kind of feedback message a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// Generic NACK (RTPFB, FMT 1; RFC 4585 §6.2.1).
    Nack,
    /// Transport-wide congestion control feedback (RTPFB, FMT 15).
    TransportCc,
    /// Picture loss indication (PSFB, FMT 1; RFC 4585 §6.3.1).
    Pli,
    /// Full intra request (PSFB, FMT 4; RFC 5104 §4.3.1).
    Fir,
    /// Receiver estimated maximum bitrate (PSFB, FMT 15, FCI starting "REMB").
    Remb,
    /// Any other RTPFB or PSFB message: routed by its media source SSRC.
    Other,
}

/// A zero-copy view of one RTCP packet of a compound: its common header (RFC 3550 §6.4.1) and
/// its body, as long as its length field says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer that starts with one RTCP packet and calls [`Self::check_len`]. Bytes
    /// after [`Self::packet_len`] are not part of the view.
    ///
    /// # Errors
    ///
    /// Those of [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the version, that the buffer holds [`Self::packet_len`] bytes, the padding
    /// count, and the structure the packet type needs (see [`Error::BadLength`]).
    ///
    /// After this succeeds no accessor panics.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`], [`Error::BadVersion`], [`Error::BadPadding`] or
    /// [`Error::BadLength`].
    pub fn check_len(&self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        if buf.len() < field::HEADER_LEN {
            return Err(Error::TooShort);
        }
        if self.version() != VERSION {
            return Err(Error::BadVersion);
        }
        let len = self.packet_len();
        if buf.len() < len {
            return Err(Error::TooShort);
        }
        if self.padding() {
            let pad = usize::from(buf[len - 1]);
            if pad == 0 || pad > len - field::HEADER_LEN {
                return Err(Error::BadPadding);
            }
        }
        let body = self.body_len();
        let count = usize::from(self.count());
        let ok = match self.packet_type() {
            SR => body >= field::SR_BLOCKS + REPORT_BLOCK_LEN * count,
            RR => body >= field::RR_BLOCKS + REPORT_BLOCK_LEN * count,
            SDES => sdes_chunks_end(self.body(), count) == Some(body),
            BYE => bye_ok(self.body(), count),
            APP => body >= field::APP_MIN,
            XR => body >= field::RR_BLOCKS,
            RTPFB | PSFB => body >= field::FCI && self.fci_ok(),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::BadLength)
        }
    }

    fn fci_ok(&self) -> bool {
        let fci = self.fci();
        match self.feedback() {
            Some(Feedback::Nack) => !fci.is_empty() && fci.len().is_multiple_of(4),
            Some(Feedback::TransportCc) => fci.len() >= field::TCC_MIN_FCI,
            Some(Feedback::Fir) => !fci.is_empty() && fci.len().is_multiple_of(field::FIR_ENTRY_LEN),
            Some(Feedback::Remb) => {
                let n = usize::from(fci[field::REMB_COUNT]);
                fci.len() >= field::REMB_SSRCS + 4 * n
            }
            // "REMB" too short for its count and bitrate.
            Some(Feedback::Other) => {
                !(self.packet_type() == PSFB && self.count() == FMT_AFB && fci.starts_with(REMB_ID))
            }
            Some(Feedback::Pli) | None => true,
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (2).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::V_P_COUNT] >> 6
    }

    /// The padding flag (P).
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[field::V_P_COUNT] & FLAG_PADDING != 0
    }

    /// The 5-bit count field: report count (SR, RR), source count (SDES, BYE), subtype (APP) or
    /// feedback message type (RTPFB, PSFB).
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::V_P_COUNT] & MASK_COUNT
    }

    /// The packet type (RFC 3550 §12.1, RFC 4585 §6.1).
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::PT]
    }

    /// The length field: 32-bit words minus one.
    pub fn length(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// This packet's length in bytes, `4 · (length + 1)`, padding included.
    pub fn packet_len(&self) -> usize {
        4 * (usize::from(self.length()) + 1)
    }

    /// The packet's bytes, padding included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.packet_len()]
    }

    /// The packet's length without its padding.
    pub fn body_len(&self) -> usize {
        let len = self.packet_len();
        if self.padding() {
            len.saturating_sub(usize::from(self.buffer.as_ref()[len - 1]))
        } else {
            len
        }
    }

    /// The packet without its padding, header included (so field offsets apply).
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.body_len()]
    }

    /// Bytes 4..8: the sender SSRC of an SR, RR, APP, XR or feedback message, the first SDES
    /// chunk's or the first BYE SSRC; `None` if the packet is 4 bytes long.
    pub fn sender_ssrc(&self) -> Option<u32> {
        get_u32(self.body(), field::SSRC)
    }

    /// The SR sender info (NTP and RTP timestamps, packet and octet counts), for an SR.
    pub fn sender_info(&self) -> Option<&[u8]> {
        let range = field::SENDER_INFO..field::SR_BLOCKS;
        (self.packet_type() == SR).then(|| self.body().get(range)).flatten()
    }

    /// The report blocks of an SR or RR (none for other types).
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock<&[u8]>> + '_ {
        let start = match self.packet_type() {
            SR => field::SR_BLOCKS,
            RR => field::RR_BLOCKS,
            _ => usize::MAX,
        };
        let blocks = self.body().get(start..).unwrap_or_default();
        blocks.chunks_exact(REPORT_BLOCK_LEN).take(usize::from(self.count())).map(ReportBlock::new_unchecked)
    }

    /// What feedback message this is, for RTPFB and PSFB packets.
    pub fn feedback(&self) -> Option<Feedback> {
        let fmt = self.count();
        match self.packet_type() {
            RTPFB => Some(match fmt {
                FMT_NACK => Feedback::Nack,
                FMT_TCC => Feedback::TransportCc,
                _ => Feedback::Other,
            }),
            PSFB => Some(match fmt {
                FMT_PLI => Feedback::Pli,
                FMT_FIR => Feedback::Fir,
                FMT_AFB if self.fci().get(..4) == Some(REMB_ID) && self.fci().len() >= field::REMB_SSRCS => {
                    Feedback::Remb
                }
                _ => Feedback::Other,
            }),
            _ => None,
        }
    }

    /// The media source SSRC of a feedback message (0 for FIR and REMB, which name theirs in
    /// the FCI).
    pub fn media_ssrc(&self) -> Option<u32> {
        matches!(self.packet_type(), RTPFB | PSFB).then(|| get_u32(self.body(), field::MEDIA_SSRC)).flatten()
    }

    /// The feedback control information of a feedback message (empty for other types).
    pub fn fci(&self) -> &[u8] {
        let fb = matches!(self.packet_type(), RTPFB | PSFB);
        self.body().get(field::FCI..).filter(|_| fb).unwrap_or_default()
    }

    /// A NACK's (packet id, bitmask of following lost packets) pairs (RFC 4585 §6.2.1).
    pub fn nack_items(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        let fci = if self.feedback() == Some(Feedback::Nack) { self.fci() } else { &[] };
        fci.chunks_exact(4).map(|c| (read_u16(c, 0), read_u16(c, 2)))
    }

    /// A FIR's (SSRC, command sequence number) entries (RFC 5104 §4.3.1.1).
    pub fn fir_entries(&self) -> impl Iterator<Item = (u32, u8)> + '_ {
        let fci = if self.feedback() == Some(Feedback::Fir) { self.fci() } else { &[] };
        fci.chunks_exact(field::FIR_ENTRY_LEN).map(|c| (read_u32(c, 0), c[4]))
    }

    /// A REMB's bitrate in bits per second, `mantissa · 2^exp`.
    pub fn remb_bitrate(&self) -> Option<u64> {
        let fci = self.fci();
        (self.feedback() == Some(Feedback::Remb)).then(|| {
            let b = &fci[field::REMB_BITRATE..field::REMB_SSRCS];
            let mantissa = u64::from(b[0] & 0x03) << 16 | u64::from(b[1]) << 8 | u64::from(b[2]);
            mantissa << (b[0] >> 2)
        })
    }

    /// The SSRCs a REMB applies to.
    pub fn remb_ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        let (n, ssrcs) = match self.feedback() {
            Some(Feedback::Remb) => {
                let fci = self.fci();
                (usize::from(fci[field::REMB_COUNT]), &fci[field::REMB_SSRCS..])
            }
            _ => (0, &[][..]),
        };
        ssrcs.chunks_exact(4).take(n).map(|c| read_u32(c, 0))
    }

    /// The SDES chunks (none for other types).
    pub fn sdes_chunks(&self) -> SdesChunks<'_> {
        let sdes = self.packet_type() == SDES;
        let body = self.body();
        SdesChunks { buf: if sdes { body } else { &[] }, at: field::HEADER_LEN, left: self.count() }
    }

    /// The SSRCs a BYE lists (none for other types).
    pub fn bye_ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        let list = if self.packet_type() == BYE { self.body().get(field::SSRC..) } else { None };
        list.unwrap_or_default().chunks_exact(4).take(usize::from(self.count())).map(|c| read_u32(c, 0))
    }

    /// A BYE's reason for leaving, if it gives one.
    pub fn bye_reason(&self) -> Option<&[u8]> {
        if self.packet_type() != BYE {
            return None;
        }
        let at = field::SSRC + 4 * usize::from(self.count());
        let body = self.body();
        let len = usize::from(*body.get(at)?);
        body.get(at + 1..at + 1 + len)
    }
}

/// Where the `count` SDES chunks starting after the header end, if they fit in `body`: each is
/// an SSRC, items (type, length, text), and a null type octet padded to the next 32-bit
/// boundary (RFC 3550 §6.5).
fn sdes_chunks_end(body: &[u8], count: usize) -> Option<usize> {
    let mut at = field::HEADER_LEN;
    for _ in 0..count {
        at = sdes_chunk_end(body, at)?;
    }
    Some(at)
}

/// Where the SDES chunk at `at` ends, if it fits.
fn sdes_chunk_end(body: &[u8], at: usize) -> Option<usize> {
    let mut i = at.checked_add(4)?;
    get_u32(body, at)?;
    loop {
        match *body.get(i)? {
            0 => break,
            _ => i += 2 + usize::from(*body.get(i + 1)?),
        }
    }
    // The null octet, then up to the next multiple of four.
    let end = (i + 4) & !3;
    (end <= body.len()).then_some(end)
}

fn bye_ok(body: &[u8], count: usize) -> bool {
    let list_end = field::SSRC + 4 * count;
    match body.len().checked_sub(list_end) {
        None => false,
        Some(0) => true,
        // The reason's length octet and text.
        Some(rest) => usize::from(body[list_end]) < rest,
    }
}

/// The SDES chunks of a packet: `(SSRC, chunk bytes including the SSRC and the null
/// padding)`.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    buf: &'a [u8],
    at: usize,
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.left == 0 {
            return None;
        }
        let end = sdes_chunk_end(self.buf, self.at)?;
        let chunk = &self.buf[self.at..end];
        self.at = end;
        self.left -= 1;
        Some(SdesChunk { bytes: chunk })
    }
}

/// One SDES chunk (RFC 3550 §6.5): an SSRC and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    bytes: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// The SSRC or CSRC the chunk describes.
    pub fn ssrc(&self) -> u32 {
        read_u32(self.bytes, 0)
    }

    /// The chunk's bytes: SSRC, items, null octets.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The items as (type, text), up to the null item.
    pub fn items(&self) -> impl Iterator<Item = (u8, &'a [u8])> {
        let bytes = self.bytes;
        let mut at = 4;
        std::iter::from_fn(move || {
            let ty = *bytes.get(at).filter(|&&t| t != 0)?;
            let len = usize::from(*bytes.get(at + 1)?);
            let text = bytes.get(at + 2..at + 2 + len)?;
            at += 2 + len;
            Some((ty, text))
        })
    }
}

/// A zero-copy view of one report block (RFC 3550 §6.4.1), exactly 24 bytes long once
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportBlock<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReportBlock<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        ReportBlock { buffer }
    }

    /// Wraps a buffer and calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if it is shorter than a report block.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = Self::new_unchecked(buffer);
        b.check_len()?;
        Ok(b)
    }

    /// Checks that the buffer holds 24 bytes. After this succeeds no accessor panics.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if it does not.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < REPORT_BLOCK_LEN {
            return Err(Error::TooShort);
        }
        Ok(())
    }

    /// The SSRC of the source the block reports on.
    pub fn ssrc(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::block::SSRC)
    }

    /// Fraction lost since the last report, in 1/256.
    pub fn fraction_lost(&self) -> u8 {
        self.buffer.as_ref()[field::block::FRACTION_LOST]
    }

    /// Cumulative packets lost (24-bit signed).
    pub fn cumulative_lost(&self) -> i32 {
        let b = &self.buffer.as_ref()[field::block::CUMULATIVE_LOST..field::block::HIGHEST_SEQ];
        // Sign-extend the 24-bit value.
        i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8
    }

    /// Extended highest sequence number received.
    pub fn highest_seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::block::HIGHEST_SEQ)
    }

    /// Interarrival jitter, in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::block::JITTER)
    }

    /// Middle 32 bits of the last SR's NTP timestamp (LSR).
    pub fn last_sr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::block::LSR)
    }

    /// Delay since the last SR, in 1/65536 s (DLSR).
    pub fn delay_since_last_sr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::block::DLSR)
    }

    /// The block's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..REPORT_BLOCK_LEN]
    }
}

/// The packets of a compound, in order. Stops at the first packet that does not fit.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Packets<'a> {
    type Item = Packet<&'a [u8]>;

    fn next(&mut self) -> Option<Packet<&'a [u8]>> {
        let len_field = self.buf.get(field::LENGTH..field::HEADER_LEN)?;
        let len = 4 * (usize::from(read_u16(len_field, 0)) + 1);
        if len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let (p, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(Packet::new_unchecked(p))
    }
}

/// One destination's view of the SSRCs a compound names; see the module docs. The engine
/// answers from its replica; tests and the fuzz target answer from sets.
pub trait Audience {
    /// Whether the destination sends stream `ssrc` and may be told about it by this compound's
    /// sender: report blocks, feedback and FCI entries about `ssrc` go to it.
    fn sends(&self, ssrc: u32) -> bool;
    /// Whether the destination may receive the compound sender's own stream `ssrc`: that SR's
    /// sender info, and the SDES chunk and BYE of `ssrc`, go to it.
    fn receives(&self, ssrc: u32) -> bool;
}

/// Whom a part of a compound is for; see [`Compound::for_each_addressee`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressee {
    /// The sender of this stream ([`Audience::sends`]).
    SenderOf(u32),
    /// The receivers of this stream of the compound's sender ([`Audience::receives`]).
    ReceiversOf(u32),
}

/// A zero-copy view of a compound RTCP packet (RFC 3550 §6.1): one or more RTCP packets,
/// back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compound<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Compound<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Compound { buffer }
    }

    /// Wraps a buffer and calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// Those of [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let c = Self::new_unchecked(buffer);
        c.check_len()?;
        Ok(c)
    }

    /// Checks every packet ([`Packet::check_len`]), that they fill the buffer exactly, and
    /// that the first is an SR, RR or feedback message with its sender SSRC (RFC 3550 A.2,
    /// RFC 5506).
    ///
    /// After this succeeds no accessor of the compound or of the packets it yields panics.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] for an empty buffer or a packet cut short, the errors of
    /// [`Packet::check_len`], or [`Error::BadFirstPacket`].
    pub fn check_len(&self) -> Result<(), Error> {
        let mut rest = self.buffer.as_ref();
        if rest.is_empty() {
            return Err(Error::TooShort);
        }
        let mut first = true;
        while !rest.is_empty() {
            let p = Packet::new_checked(rest)?;
            if first && (!matches!(p.packet_type(), SR | RR | RTPFB | PSFB) || p.sender_ssrc().is_none()) {
                return Err(Error::BadFirstPacket);
            }
            first = false;
            rest = &rest[p.packet_len()..];
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The packets, in order.
    pub fn packets(&self) -> Packets<'_> {
        Packets { buf: self.buffer.as_ref() }
    }

    /// The first packet's sender SSRC: what SRTCP keys on (RFC 3711 §3.4).
    pub fn sender_ssrc(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SSRC)
    }

    /// Whether `ok` holds for every SSRC the compound speaks for: the sender SSRC of each SR,
    /// RR and feedback message, each SDES chunk's SSRC and each SSRC a BYE lists. The engine
    /// refuses a compound that speaks for an SSRC its sender did not declare.
    pub fn all_speakers(&self, mut ok: impl FnMut(u32) -> bool) -> bool {
        self.packets().all(|p| {
            let own = matches!(p.packet_type(), SR | RR | RTPFB | PSFB).then(|| p.sender_ssrc()).flatten();
            own.is_none_or(&mut ok) && p.sdes_chunks().all(|c| ok(c.ssrc())) && p.bye_ssrcs().all(&mut ok)
        })
    }

    /// Calls `f` with every SSRC a part of the compound is addressed by: the streams whose
    /// senders a report block, feedback message or FCI entry is about
    /// ([`Addressee::SenderOf`]), and the compound sender's own streams whose receivers an SR
    /// or a BYE is for ([`Addressee::ReceiversOf`]). Every destination [`Self::is_for`] holds
    /// for is one of these; the engine uses it to skip the others without asking.
    pub fn for_each_addressee(&self, mut f: impl FnMut(Addressee)) {
        for p in self.packets() {
            match p.packet_type() {
                SR | RR => {
                    if let Some(s) = p.sender_ssrc().filter(|_| p.packet_type() == SR) {
                        f(Addressee::ReceiversOf(s));
                    }
                    p.report_blocks().for_each(|b| f(Addressee::SenderOf(b.ssrc())));
                }
                RTPFB | PSFB => match p.feedback() {
                    Some(Feedback::Fir) => p.fir_entries().for_each(|(s, _)| f(Addressee::SenderOf(s))),
                    Some(Feedback::Remb) => p.remb_ssrcs().for_each(|s| f(Addressee::SenderOf(s))),
                    _ => {
                        if let Some(s) = p.media_ssrc() {
                            f(Addressee::SenderOf(s));
                        }
                    }
                },
                BYE => p.bye_ssrcs().for_each(|s| f(Addressee::ReceiversOf(s))),
                _ => {}
            }
        }
    }

    /// Whether anything in the compound is for `who`, and `who` may see the compound's sender
    /// SSRC (see the module docs). [`Self::write_for`] then writes its copy.
    pub fn is_for(&self, who: &impl Audience) -> bool {
        let s0 = self.sender_ssrc();
        let mut shown = who.receives(s0);
        let mut addressed = false;
        for p in self.packets() {
            let here = match p.packet_type() {
                SR => {
                    p.sender_ssrc().is_some_and(|s| who.receives(s)) || p.report_blocks().any(|b| who.sends(b.ssrc()))
                }
                RR => p.report_blocks().any(|b| who.sends(b.ssrc())),
                RTPFB | PSFB => feedback_is_for(&p, who),
                BYE => {
                    addressed |= p.bye_ssrcs().any(|s| who.receives(s));
                    false
                }
                _ => false,
            };
            if here {
                addressed = true;
                shown |= p.sender_ssrc() == Some(s0);
            }
            if addressed && shown {
                return true;
            }
        }
        false
    }

    /// Writes `who`'s copy of the compound to `out` and returns its length: the first packet
    /// (as an RR without blocks if none of it is for `who`), then only the parts for `who`, in
    /// order (see the module docs). Call it when [`Self::is_for`] holds; otherwise the copy
    /// may be that first RR alone.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`] if `out` is shorter than the copy (an `out` as long as the
    /// compound always suffices).
    pub fn write_for(&self, who: &impl Audience, out: &mut [u8]) -> Result<usize, Error> {
        let s0 = self.sender_ssrc();
        let mut w = Writer { out, len: 0 };
        for (i, p) in self.packets().enumerate() {
            let first = i == 0;
            let Some(ssrc) = p.sender_ssrc() else {
                continue;
            };
            match p.packet_type() {
                SR | RR => {
                    let blocks = || p.report_blocks().filter(|b| who.sends(b.ssrc()));
                    if p.packet_type() == SR && who.receives(ssrc) {
                        let at = w.open(SR)?;
                        w.put(&ssrc.to_be_bytes())?;
                        w.put(p.sender_info().unwrap_or_default())?;
                        let n = w.put_all(blocks())?;
                        w.close(at, n)?;
                    } else if first || blocks().next().is_some() {
                        let at = w.open(RR)?;
                        w.put(&ssrc.to_be_bytes())?;
                        let n = w.put_all(blocks())?;
                        w.close(at, n)?;
                    }
                }
                RTPFB | PSFB if feedback_is_for(&p, who) => w.feedback(&p, who)?,
                RTPFB | PSFB if first => {
                    let at = w.open(RR)?;
                    w.put(&s0.to_be_bytes())?;
                    w.close(at, 0)?;
                }
                SDES => {
                    let mine = |c: &SdesChunk<'_>| c.ssrc() == s0 || who.receives(c.ssrc());
                    if p.sdes_chunks().any(|c| mine(&c)) {
                        let at = w.open(SDES)?;
                        let mut n = 0;
                        for c in p.sdes_chunks().filter(mine) {
                            w.put(c.as_bytes())?;
                            n += 1;
                        }
                        w.close(at, n)?;
                    }
                }
                BYE => {
                    let mine = |s: &u32| *s == s0 || who.receives(*s);
                    if p.bye_ssrcs().any(|s| mine(&s)) {
                        let at = w.open(BYE)?;
                        let mut n = 0;
                        for s in p.bye_ssrcs().filter(mine) {
                            w.put(&s.to_be_bytes())?;
                            n += 1;
                        }
                        if let Some(reason) = p.bye_reason() {
                            // The reason's length octet and text, zero-padded to 32 bits.
                            w.put(&[reason.len() as u8])?;
                            w.put(reason)?;
                            w.align()?;
                        }
                        w.close(at, n)?;
                    }
                }
                _ => {}
            }
        }
        Ok(w.len)
    }

    /// [`Self::is_for`], then [`Self::write_for`]; 0 when nothing is for `who`.
    ///
    /// # Errors
    ///
    /// Those of [`Self::write_for`].
    pub fn rebuild_for(&self, who: &impl Audience, out: &mut [u8]) -> Result<usize, Error> {
        if self.is_for(who) {
            self.write_for(who, out)
        } else {
            Ok(0)
        }
    }
}

fn feedback_is_for(p: &Packet<&[u8]>, who: &impl Audience) -> bool {
    match p.feedback() {
        Some(Feedback::Fir) => p.fir_entries().any(|(s, _)| who.sends(s)),
        Some(Feedback::Remb) => p.remb_ssrcs().any(|s| who.sends(s)),
        Some(_) => p.media_ssrc().is_some_and(|s| who.sends(s)),
        None => false,
    }
}

/// Writes packets into an output buffer, fixing counts and lengths as it closes each.
struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.len + bytes.len();
        self.out.get_mut(self.len..end).ok_or(Error::BufferTooSmall)?.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Puts each report block; returns how many.
    fn put_all<'b>(&mut self, blocks: impl Iterator<Item = ReportBlock<&'b [u8]>>) -> Result<u8, Error> {
        let mut n = 0;
        for b in blocks {
            self.put(b.as_bytes())?;
            n += 1;
        }
        Ok(n)
    }

    /// Zero bytes up to the next 32-bit boundary.
    fn align(&mut self) -> Result<(), Error> {
        let pad = self.len.next_multiple_of(4) - self.len;
        self.put(&[0; 3][..pad])
    }

    /// Starts a packet of type `pt`; returns where it starts, for [`Self::close`].
    fn open(&mut self, pt: u8) -> Result<usize, Error> {
        let at = self.len;
        self.put(&[VERSION << 6, pt, 0, 0])?;
        Ok(at)
    }

    /// Ends the packet started at `at`: V = 2, P = 0, this count field, and its length.
    fn close(&mut self, at: usize, count: u8) -> Result<(), Error> {
        let words = u16::try_from((self.len - at) / 4 - 1).map_err(|_| Error::BufferTooSmall)?;
        self.out[at] = VERSION << 6 | (count & MASK_COUNT);
        self.out[at + field::LENGTH..at + field::HEADER_LEN].copy_from_slice(&words.to_be_bytes());
        Ok(())
    }

    /// A feedback message for `who`: FIR and REMB with only the SSRCs it sends, others whole.
    fn feedback(&mut self, p: &Packet<&[u8]>, who: &impl Audience) -> Result<(), Error> {
        let fb = p.feedback();
        if !matches!(fb, Some(Feedback::Fir | Feedback::Remb)) {
            return self.put(p.as_bytes());
        }
        let at = self.open(p.packet_type())?;
        self.put(&p.body()[field::SSRC..field::FCI])?;
        if fb == Some(Feedback::Fir) {
            let fci = p.fci();
            for e in fci.chunks_exact(field::FIR_ENTRY_LEN).filter(|e| who.sends(read_u32(e, 0))) {
                self.put(e)?;
            }
        } else {
            let n = p.remb_ssrcs().filter(|&s| who.sends(s)).count() as u8;
            self.put(REMB_ID)?;
            self.put(&[n])?;
            self.put(&p.fci()[field::REMB_BITRATE..field::REMB_SSRCS])?;
            for s in p.remb_ssrcs().filter(|&s| who.sends(s)) {
                self.put(&s.to_be_bytes())?;
            }
        }
        self.close(at, p.count())
    }
}

/// An [`Audience`] drawn from a seed: each SSRC is sent or received as its mixed bits say.
struct SeededAudience(u32);

impl SeededAudience {
    fn bits(&self, ssrc: u32) -> u32 {
        let x = (ssrc ^ self.0).wrapping_mul(0x9e37_79b9);
        x ^ (x >> 16)
    }
}

impl Audience for SeededAudience {
    fn sends(&self, ssrc: u32) -> bool {
        self.bits(ssrc) & 1 != 0
    }
    fn receives(&self, ssrc: u32) -> bool {
        self.bits(ssrc) & 2 != 0
    }
}

/// Panics unless `copy` holds only what [`Compound::write_for`] may give `who` of a compound
/// whose sender SSRC is `s0`.
fn assert_only_for(copy: &Compound<&[u8]>, who: &impl Audience, s0: u32) {
    assert_eq!(copy.sender_ssrc(), s0, "a copy keys SRTCP on the sender's SSRC");
    for (i, p) in copy.packets().enumerate() {
        let ssrc = p.sender_ssrc().expect("every packet written names an SSRC");
        assert!(!p.padding() || matches!(p.packet_type(), RTPFB | PSFB), "only whole feedback keeps padding");
        match p.packet_type() {
            SR => assert!(who.receives(ssrc), "an SR only to its stream's receivers"),
            RR => assert!(i == 0 || p.count() > 0, "an RR without blocks only heads the copy"),
            RTPFB | PSFB => {
                assert!(feedback_is_for(&p, who), "feedback only to the sender it names");
                assert!(p.fir_entries().all(|(s, _)| who.sends(s)) && p.remb_ssrcs().all(|s| who.sends(s)));
            }
            SDES => assert!(p.sdes_chunks().all(|c| c.ssrc() == s0 || who.receives(c.ssrc()))),
            BYE => assert!(p.bye_ssrcs().all(|s| s == s0 || who.receives(s))),
            t => panic!("packet type {t} is never forwarded"),
        }
        assert!(p.report_blocks().all(|b| who.sends(b.ssrc())), "report blocks only to the stream's sender");
    }
}

/// Fuzz entry point (cargo-fuzz target body): parses `data` as a compound and, when it
/// parses, reads every field and rebuilds it for a few seeded audiences.
///
/// Never panics on any input; it panics only if an invariant is broken: an accessor that
/// panicked after `check_len`, or a rebuilt copy that is longer than the input, does not
/// parse, keys on another SSRC, holds anything not for its destination, or changes when
/// rebuilt again for the same destination.
pub fn fuzz_compound(data: &[u8]) {
    let Ok(c) = Compound::new_checked(data) else {
        return;
    };
    let s0 = c.sender_ssrc();
    assert_eq!(c.packets().map(|p| p.packet_len()).sum::<usize>(), data.len());
    for p in c.packets() {
        assert!(p.body_len() <= p.packet_len() && p.body_len() >= 4);
        let _ = (p.version(), p.padding(), p.count(), p.sender_ssrc(), p.sender_info(), p.feedback());
        let _ = (p.media_ssrc(), p.fci(), p.remb_bitrate(), p.bye_reason());
        for b in p.report_blocks() {
            let _ = (b.ssrc(), b.fraction_lost(), b.cumulative_lost(), b.highest_seq(), b.jitter());
            let _ = (b.last_sr(), b.delay_since_last_sr(), b.as_bytes());
        }
        assert_eq!(p.sdes_chunks().count(), if p.packet_type() == SDES { usize::from(p.count()) } else { 0 });
        for chunk in p.sdes_chunks() {
            let _ = (chunk.ssrc(), chunk.items().count());
        }
        let _ = (p.nack_items().count(), p.fir_entries().count(), p.remb_ssrcs().count(), p.bye_ssrcs().count());
    }
    let _ = c.all_speakers(|s| s != 0);
    for seed in [0, 0x5555_5555, 0xdead_beef, u32::MAX] {
        let who = SeededAudience(seed);
        let mut out = vec![0; data.len()];
        let n = c.write_for(&who, &mut out).expect("an output as long as the compound suffices");
        let copy = Compound::new_checked(&out[..n]).expect("a rebuilt compound parses");
        assert_only_for(&copy, &who, s0);
        let mut again = vec![0; n];
        let m = copy.write_for(&who, &mut again).expect("the copy fits its own length");
        assert_eq!(&again[..m], &out[..n], "rebuilding a copy for its destination changes nothing");
        if c.is_for(&who) {
            let mut named = false;
            c.for_each_addressee(|a| {
                named |= match a {
                    Addressee::SenderOf(s) => who.sends(s),
                    Addressee::ReceiversOf(s) => who.receives(s),
                }
            });
            assert!(named, "a destination the compound is for is one of its addressees");
        } else {
            assert_eq!(c.rebuild_for(&who, &mut out), Ok(0));
        }
        if n > 0 {
            assert_eq!(c.write_for(&who, &mut out[..n - 1]), Err(Error::BufferTooSmall));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // SSRCs: A's audio and video, B's video, C's (receive-only) RTCP SSRC.
    const A_AUDIO: u32 = 0xaaaa_0001;
    const A_VIDEO: u32 = 0xaaaa_0002;
    const B_VIDEO: u32 = 0xbbbb_0001;
    const C_RTCP: u32 = 0xcccc_0001;

    /// A's video SR: sender info, then blocks about B's video and an unknown source.
    const SR_A: &str = "82c80012 aaaa0002 e5d1a3b2 4bc6a7ef 0001e240 00000064 00003e80
                        bbbb0001 05000003 00010203 00000010 a3b24bc6 00000800
                        12345678 00fffffe 0000ffff 00000020 00000000 00000000";
    /// C's RR about A's audio, A's video and B's video.
    const RR_C: &str = "83c90013 cccc0001
                        aaaa0001 00000000 00000c1f 00000004 00000000 00000000
                        aaaa0002 0a000002 00015b3a 0000001c a3b24bc6 00000800
                        bbbb0001 00000000 000004d2 00000002 00000000 00000000";
    /// C's SDES: CNAME "viewer@edge".
    const SDES_C: &str = "81ca0005 cccc0001 010b7669 65776572 40656467 65000000";
    /// C's BYE, reason "bye".
    const BYE_C: &str = "81cb0002 cccc0001 03627965";
    /// C's PLI for B's video.
    const PLI_B: &str = "81ce0002 cccc0001 bbbb0001";
    /// C's FIR: B's video (seq 7), A's video (seq 9).
    const FIR_AB: &str = "84ce0006 cccc0001 00000000 bbbb0001 07000000 aaaa0002 09000000";
    /// C's NACK for A's video: packet 1234 and the bitmask 0x0005.
    const NACK_A: &str = "81cd0003 cccc0001 aaaa0002 04d20005";
    /// C's REMB, 577,880 bit/s, for A's video and B's video.
    const REMB_AB: &str = "8fce0006 cccc0001 00000000 52454d42 020d1a2b aaaa0002 bbbb0001";
    /// C's transport-cc naming A's video: base seq 1, 3 packets, one run-length chunk, three
    /// 1-byte deltas, padded with P set (as libwebrtc does).
    const TCC_A: &str = "afcd0006 cccc0001 aaaa0002 00010003 00001005 20030a0b 0c000003";

    const ALL: [&str; 9] = [SR_A, RR_C, SDES_C, BYE_C, PLI_B, FIR_AB, NACK_A, REMB_AB, TCC_A];

    struct Set<'a> {
        sends: &'a [u32],
        receives: &'a [u32],
    }

    impl Audience for Set<'_> {
        fn sends(&self, ssrc: u32) -> bool {
            self.sends.contains(&ssrc)
        }
        fn receives(&self, ssrc: u32) -> bool {
            self.receives.contains(&ssrc)
        }
    }

    fn compound(parts: &[&str]) -> Vec<u8> {
        parts.iter().flat_map(|p| h(p)).collect()
    }

    fn rebuild(c: &[u8], who: &Set<'_>) -> Vec<u8> {
        let c = Compound::new_checked(c).unwrap();
        let mut out = vec![0; c.buffer.len()];
        let n = c.rebuild_for(who, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn sender_report_fields() {
        let b = h(SR_A);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.padding(), p.count(), p.packet_type(), p.packet_len()), (2, false, 2, SR, 76));
        assert_eq!(p.sender_ssrc(), Some(A_VIDEO));
        assert_eq!(p.sender_info(), Some(&b[8..28]));
        let blocks: Vec<_> = p.report_blocks().collect();
        assert_eq!(blocks.len(), 2);
        let r = &blocks[0];
        assert_eq!((r.ssrc(), r.fraction_lost(), r.cumulative_lost(), r.highest_seq()), (B_VIDEO, 5, 3, 0x10203));
        assert_eq!((r.jitter(), r.last_sr(), r.delay_since_last_sr()), (16, 0xa3b24bc6, 0x800));
        assert_eq!((blocks[1].ssrc(), blocks[1].cumulative_lost()), (0x1234_5678, -2));
        assert_eq!(ReportBlock::new_checked(&b[28..51]), Err(Error::TooShort));
        assert_eq!(p.feedback(), None);
        assert_eq!((p.media_ssrc(), p.fci(), p.bye_reason()), (None, &[][..], None));
    }

    #[test]
    fn receiver_report_sdes_and_bye_fields() {
        let b = h(RR_C);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.packet_type(), p.count(), p.sender_ssrc(), p.sender_info()), (RR, 3, Some(C_RTCP), None));
        assert_eq!(p.report_blocks().map(|b| b.ssrc()).collect::<Vec<_>>(), [A_AUDIO, A_VIDEO, B_VIDEO]);

        let b = h(SDES_C);
        let p = Packet::new_checked(&b[..]).unwrap();
        let chunks: Vec<_> = p.sdes_chunks().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].ssrc(), C_RTCP);
        assert_eq!(chunks[0].items().collect::<Vec<_>>(), [(1, &b"viewer@edge"[..])]);
        assert_eq!(chunks[0].as_bytes(), &b[4..]);

        let b = h(BYE_C);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.bye_ssrcs().collect::<Vec<_>>(), [C_RTCP]);
        assert_eq!(p.bye_reason(), Some(&b"bye"[..]));
        // A BYE without a reason, and one of no SSRC at all (4 bytes).
        let p = h("81cb0001 cccc0001");
        assert_eq!(Packet::new_checked(&p[..]).unwrap().bye_reason(), None);
        let p = h("80cb0000");
        assert_eq!(Packet::new_checked(&p[..]).unwrap().sender_ssrc(), None);
    }

    #[test]
    fn feedback_fields() {
        let b = h(PLI_B);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.feedback(), p.sender_ssrc(), p.media_ssrc(), p.fci()),
            (Some(Feedback::Pli), Some(C_RTCP), Some(B_VIDEO), &[][..])
        );

        let b = h(FIR_AB);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.feedback(), p.media_ssrc()), (Some(Feedback::Fir), Some(0)));
        assert_eq!(p.fir_entries().collect::<Vec<_>>(), [(B_VIDEO, 7), (A_VIDEO, 9)]);

        let b = h(NACK_A);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.feedback(), p.media_ssrc()), (Some(Feedback::Nack), Some(A_VIDEO)));
        assert_eq!(p.nack_items().collect::<Vec<_>>(), [(1234, 5)]);

        let b = h(REMB_AB);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.feedback(), p.remb_bitrate()), (Some(Feedback::Remb), Some(577_880)));
        assert_eq!(p.remb_ssrcs().collect::<Vec<_>>(), [A_VIDEO, B_VIDEO]);

        let b = h(TCC_A);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.feedback(), p.media_ssrc(), p.padding()), (Some(Feedback::TransportCc), Some(A_VIDEO), true));
        assert_eq!((p.packet_len(), p.body_len(), p.fci().len()), (28, 25, 13));
        // Other feedback: routed by media SSRC.
        let b = h("85cd0002 cccc0001 bbbb0001");
        assert_eq!(Packet::new_checked(&b[..]).unwrap().feedback(), Some(Feedback::Other));
        let b = h("8fce0003 cccc0001 bbbb0001 41424344");
        assert_eq!(Packet::new_checked(&b[..]).unwrap().feedback(), Some(Feedback::Other));
    }

    #[test]
    fn every_truncation_of_every_packet_fails() {
        for s in ALL {
            let b = h(s);
            assert!(Packet::new_checked(&b[..]).is_ok(), "{s}");
            assert!(Compound::new_checked(&b[..]).is_ok() != matches!(b[1], SDES | BYE), "{s}");
            for len in 0..b.len() {
                assert!(Packet::new_checked(&b[..len]).is_err(), "{s} cut to {len}");
                assert!(Compound::new_checked(&b[..len]).is_err(), "{s} cut to {len}");
            }
        }
        // A compound cut anywhere but between packets fails too.
        let c = compound(&ALL[1..]);
        let boundaries: Vec<usize> = ALL[1..]
            .iter()
            .scan(0, |end, p| {
                *end += h(p).len();
                Some(*end)
            })
            .collect();
        for len in 0..=c.len() {
            assert_eq!(Compound::new_checked(&c[..len]).is_ok(), boundaries.contains(&len), "cut to {len}");
        }
    }

    #[test]
    fn malformed_compounds_are_rejected() {
        let ok = compound(&[RR_C, SDES_C]);
        assert!(Compound::new_checked(&ok[..]).is_ok());
        let cases: [(&str, Error); 18] = [
            ("", Error::TooShort),
            // The second packet of version 1.
            ("80c90001 cccc0001 41ca0001 cccc0001", Error::BadVersion),
            ("41c90001 cccc0001", Error::BadVersion),
            // Length runs past the end; trailing bytes after the last packet.
            ("81c90002 cccc0001", Error::TooShort),
            ("80c90001 cccc0001 000000", Error::TooShort),
            // Padding count 0, and one reaching into the header.
            ("a0c90001 cccc0000", Error::BadPadding),
            ("a0c90001 cccc0008", Error::BadPadding),
            // An SR and an RR whose report count needs more than their length.
            ("81c80006 aaaa0002 00000000 00000000 00000000 00000000 00000000", Error::BadLength),
            ("81c90001 cccc0001", Error::BadLength),
            // Starting with SDES, BYE or APP.
            (SDES_C, Error::BadFirstPacket),
            ("80cb0000", Error::BadFirstPacket),
            ("80cc0002 cccc0001 41424344", Error::BadFirstPacket),
            // Feedback without the media SSRC; NACK without FCI; FIR entry cut in half.
            ("81cd0001 cccc0001", Error::BadLength),
            ("81cd0002 cccc0001 aaaa0002", Error::BadLength),
            ("84ce0003 cccc0001 00000000 bbbb0001", Error::BadLength),
            // REMB listing 3 SSRCs with room for 2; "REMB" without count and bitrate.
            ("8fce0006 cccc0001 00000000 52454d42 030d1a2b aaaa0002 bbbb0001", Error::BadLength),
            ("8fce0003 cccc0001 00000000 52454d42", Error::BadLength),
            // Transport-cc shorter than its fixed FCI.
            ("8fcd0003 cccc0001 aaaa0002 00010003", Error::BadLength),
        ];
        for (s, e) in cases {
            assert_eq!(Compound::new_checked(&h(s)[..]), Err(e), "{s}");
        }
        let more: [(&str, Error); 4] = [
            // An SDES chunk without its null octet, and one running past the packet.
            ("81ca0002 cccc0001 01027878", Error::BadLength),
            ("81ca0002 cccc0001 01057878", Error::BadLength),
            // A BYE listing 2 SSRCs in room for 1; a reason longer than the packet.
            ("82cb0001 cccc0001", Error::BadLength),
            ("81cb0002 cccc0001 09627965", Error::BadLength),
        ];
        for (s, e) in more {
            let c = [h(RR_C), h(s)].concat();
            assert_eq!(Compound::new_checked(&c[..]), Err(e), "{s}");
        }
    }

    #[test]
    fn a_receivers_compound_is_split_per_sender() {
        let c = compound(&[RR_C, SDES_C, PLI_B, FIR_AB, NACK_A, REMB_AB, TCC_A]);
        let a = Set { sends: &[A_AUDIO, A_VIDEO], receives: &[C_RTCP] };
        let b = Set { sends: &[B_VIDEO], receives: &[C_RTCP] };
        let to_a = rebuild(&c, &a);
        let expect_a = compound(&[
            "82c9000d cccc0001",
            "aaaa0001 00000000 00000c1f 00000004 00000000 00000000",
            "aaaa0002 0a000002 00015b3a 0000001c a3b24bc6 00000800",
            SDES_C,
            "84ce0004 cccc0001 00000000 aaaa0002 09000000",
            NACK_A,
            "8fce0005 cccc0001 00000000 52454d42 010d1a2b aaaa0002",
            TCC_A,
        ]);
        assert_eq!(to_a, expect_a);
        let to_b = rebuild(&c, &b);
        let expect_b = compound(&[
            "81c90007 cccc0001 bbbb0001 00000000 000004d2 00000002 00000000 00000000",
            SDES_C,
            PLI_B,
            "84ce0004 cccc0001 00000000 bbbb0001 07000000",
            "8fce0005 cccc0001 00000000 52454d42 010d1a2b bbbb0001",
        ]);
        assert_eq!(to_b, expect_b);
        // A member that sends nothing gets nothing, even though it may see C.
        assert!(rebuild(&c, &Set { sends: &[], receives: &[C_RTCP] }).is_empty());
    }

    #[test]
    fn a_senders_report_goes_to_its_receivers_and_its_blocks_to_their_senders() {
        let c = compound(&[SR_A, "81ca0002 aaaa0002 00000000"]);
        // A receiver of A's video that sends nothing: the SR without blocks, and the SDES.
        let viewer = Set { sends: &[], receives: &[A_VIDEO] };
        assert_eq!(
            rebuild(&c, &viewer),
            compound(&["80c80006 aaaa0002 e5d1a3b2 4bc6a7ef 0001e240 00000064 00003e80", "81ca0002 aaaa0002 00000000"])
        );
        // B receives A's video and sends the stream one block is about.
        let b = Set { sends: &[B_VIDEO], receives: &[A_VIDEO] };
        let expect = compound(&[
            "81c8000c aaaa0002 e5d1a3b2 4bc6a7ef 0001e240 00000064 00003e80",
            "bbbb0001 05000003 00010203 00000010 a3b24bc6 00000800",
            "81ca0002 aaaa0002 00000000",
        ]);
        assert_eq!(rebuild(&c, &b), expect);
        // Without the privilege to receive A's video, B gets only its block, as an RR without
        // the sender info. It sees A's SSRC as the reporter, so A's SDES rides along.
        let b = Set { sends: &[B_VIDEO], receives: &[] };
        let expect = compound(&[
            "81c90007 aaaa0002 bbbb0001 05000003 00010203 00000010 a3b24bc6 00000800",
            "81ca0002 aaaa0002 00000000",
        ]);
        assert_eq!(rebuild(&c, &b), expect);
        // A member without the privilege that sends nothing gets nothing.
        assert!(rebuild(&c, &Set { sends: &[], receives: &[] }).is_empty());
    }

    #[test]
    fn the_first_packet_always_heads_the_copy() {
        // Reduced-size RTCP: the PLI is for B, the NACK for A. A's copy starts with an empty RR
        // from the same SSRC.
        let c = compound(&[PLI_B, NACK_A]);
        let a = Set { sends: &[A_VIDEO], receives: &[C_RTCP] };
        assert_eq!(rebuild(&c, &a), compound(&["80c90001 cccc0001", NACK_A]));
        let b = Set { sends: &[B_VIDEO], receives: &[C_RTCP] };
        assert_eq!(rebuild(&c, &b), h(PLI_B));
        // A's compound with SRs for audio, then video: a member that may receive only video
        // never sees the audio SSRC, so it gets nothing.
        let c = compound(&["80c80006 aaaa0001 00000000 00000000 00000000 00000000 00000000", SR_A]);
        let video_only = Set { sends: &[], receives: &[A_VIDEO] };
        assert!(!Compound::new_checked(&c[..]).unwrap().is_for(&video_only));
        assert!(rebuild(&c, &video_only).is_empty());
        // Nor does a report block in the video SR make it see the audio SSRC...
        let b = Set { sends: &[B_VIDEO], receives: &[A_VIDEO] };
        assert!(rebuild(&c, &b).is_empty());
        // ...but a block in the audio SR does: the audio SSRC reports to it, as an RR.
        let c = compound(&[
            "81c8000c aaaa0001 00000000 00000000 00000000 00000000 00000000",
            "bbbb0001 00000000 00000001 00000000 00000000 00000000",
            SR_A,
        ]);
        let to_b = rebuild(&c, &b);
        let expect = compound(&[
            "81c90007 aaaa0001 bbbb0001 00000000 00000001 00000000 00000000 00000000",
            "81c8000c aaaa0002 e5d1a3b2 4bc6a7ef 0001e240 00000064 00003e80",
            "bbbb0001 05000003 00010203 00000010 a3b24bc6 00000800",
        ]);
        assert_eq!(to_b, expect);
    }

    #[test]
    fn bye_filters_ssrcs_and_keeps_the_reason() {
        // A leaves: RR, then BYE for its audio and video, reason "gone!".
        let c = compound(&["80c90001 aaaa0001", "82cb0004 aaaa0001 aaaa0002 05676f6e 65210000"]);
        let video_only = Set { sends: &[], receives: &[A_VIDEO] };
        assert!(rebuild(&c, &video_only).is_empty(), "the first SSRC is audio, which it may not see");
        let audio_only = Set { sends: &[], receives: &[A_AUDIO] };
        assert_eq!(rebuild(&c, &audio_only), compound(&["80c90001 aaaa0001", "81cb0003 aaaa0001 05676f6e 65210000"]));
        let both = Set { sends: &[], receives: &[A_AUDIO, A_VIDEO] };
        assert_eq!(rebuild(&c, &both), c);
        // APP and XR go nowhere.
        let c = compound(&[NACK_A, "80cc0002 cccc0001 41424344", "80cf0001 cccc0001"]);
        assert_eq!(rebuild(&c, &Set { sends: &[A_VIDEO], receives: &[] }), h(NACK_A));
    }

    #[test]
    fn speakers_are_every_claimed_ssrc() {
        let c = compound(&[RR_C, SDES_C, PLI_B, BYE_C]);
        let c = Compound::new_checked(&c[..]).unwrap();
        assert!(c.all_speakers(|s| s == C_RTCP));
        let mut seen = Vec::new();
        c.all_speakers(|s| {
            seen.push(s);
            true
        });
        assert_eq!(seen, [C_RTCP; 4]);
        // The blocks' and the PLI's media SSRCs are not speakers; a BYE for someone else is.
        let c = compound(&[RR_C, "81cb0001 bbbb0001"]);
        assert!(!Compound::new_checked(&c[..]).unwrap().all_speakers(|s| s == C_RTCP));
        let c = compound(&[PLI_B, "81ca0002 aaaa0001 00000000"]);
        assert!(!Compound::new_checked(&c[..]).unwrap().all_speakers(|s| s == C_RTCP));
    }

    #[test]
    fn addressees_are_the_ssrcs_parts_are_for() {
        let c = compound(&[SR_A, PLI_B, FIR_AB, REMB_AB, "81cb0001 aaaa0002", "80cc0002 aaaa0002 41424344"]);
        let mut seen = Vec::new();
        Compound::new_checked(&c[..]).unwrap().for_each_addressee(|a| seen.push(a));
        use Addressee::{ReceiversOf as R, SenderOf as S};
        let expect = [R(A_VIDEO), S(B_VIDEO), S(0x1234_5678), S(B_VIDEO), S(B_VIDEO), S(A_VIDEO)];
        assert_eq!(seen, [&expect[..], &[S(A_VIDEO), S(B_VIDEO), R(A_VIDEO)]].concat());
    }

    #[test]
    fn too_small_an_output_is_an_error() {
        let c = h(RR_C);
        let c = Compound::new_checked(&c[..]).unwrap();
        let a = Set { sends: &[A_VIDEO], receives: &[] };
        let mut out = [0u8; 32];
        assert_eq!(c.write_for(&a, &mut out), Ok(32));
        assert_eq!(c.write_for(&a, &mut out[..31]), Err(Error::BufferTooSmall));
        assert_eq!(c.write_for(&a, &mut out[..4]), Err(Error::BufferTooSmall));
    }

    #[test]
    fn fuzz_compound_inputs() {
        let seeds = [compound(&ALL[1..]), compound(&[SR_A, SDES_C, BYE_C]), compound(&[TCC_A, TCC_A, PLI_B]), h(SR_A)];
        fuzz_compound(&[]);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for seed in &seeds {
            fuzz_compound(seed);
            for len in 0..seed.len() {
                fuzz_compound(&seed[..len]);
            }
            // Seeded byte flips: mostly rejected, sometimes a different valid compound.
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut b = seed.clone();
                let at = (x % b.len() as u64) as usize;
                b[at] ^= (x >> 32) as u8 | 1;
                fuzz_compound(&b);
            }
        }
    }
}
