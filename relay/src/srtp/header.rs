//! Zero-copy views of the RTP and RTCP headers SRTP reads (RFC 3550 §5.1, §5.3.1, §6.4.1).
//!
//! [`RtpPacket`] and [`RtcpPacket`] wrap a buffer in the style of `crate::wire`: a `mod field`
//! of byte ranges, `new_unchecked` / `new_checked` / `check_len`, accessors that read the bytes
//! in place and setters only where the buffer is mutable. Nothing here copies the packet or casts
//! bytes to a struct.
//!
//! # Invariant
//!
//! After [`RtpPacket::check_len`] or [`RtcpPacket::check_len`] succeeds, no accessor of that view
//! panics, as long as the fields the check read (RTP: CC, X and the extension length; none for
//! RTCP) are not changed through a setter afterwards.
#![forbid(unsafe_code)]

use crate::ids::Ssrc;

use super::index::SeqNum;
use super::Error;

/// Length of the fixed RTP header (RFC 3550 §5.1).
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the RTCP header plus sender SSRC: the prefix SRTCP never encrypts (RFC 3711 §3.4).
pub const RTCP_HEADER_LEN: usize = 8;
/// The RTP and RTCP version this module reads (RFC 3550 §5.1, §6.4.1).
pub const VERSION: u8 = 2;

mod field {
    use std::ops::Range;

    /// Version (2 bits), padding, extension, CSRC count (4 bits).
    pub const V_P_X_CC: usize = 0;
    /// RTP: marker and payload type (7 bits). RTCP: the packet type.
    pub const M_PT: usize = 1;
    /// RTP sequence number; RTCP length in 32-bit words minus one.
    pub const SEQ: Range<usize> = 2..4;
    pub const TIMESTAMP: Range<usize> = 4..8;
    pub const SSRC: Range<usize> = 8..12;
    /// The RTCP sender SSRC.
    pub const RTCP_SSRC: Range<usize> = 4..8;
    /// The CSRC list starts after the fixed header.
    pub const CSRC: usize = 12;
    /// Inside the header extension (RFC 3550 §5.3.1): the profile-defined 16 bits, then the
    /// length in 32-bit words of the data after this 4-byte extension header.
    pub const EXT_PROFILE: Range<usize> = 0..2;
    pub const EXT_LENGTH: Range<usize> = 2..4;
    pub const EXT_HEADER_LEN: usize = 4;
}

const FLAG_PADDING: u8 = 0x20;
const FLAG_EXTENSION: u8 = 0x10;
const MASK_CC: u8 = 0x0f;
const MASK_RC: u8 = 0x1f;
const FLAG_MARKER: u8 = 0x80;
const MASK_PT: u8 = 0x7f;

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn write_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn write_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Sets or clears `flag` in `byte`.
fn set_flag(byte: &mut u8, flag: u8, on: bool) {
    *byte = if on { *byte | flag } else { *byte & !flag };
}

/// A zero-copy view of an RTP packet (RFC 3550 §5.1): fixed header, CSRC list, optional header
/// extension (§5.3.1), then the payload. With SRTP the payload is ciphertext and may be followed
/// by the tag; the view does not know, so [`RtpPacket::payload`] runs to the end of the buffer
/// (padding included, as SRTP encrypts it, RFC 3711 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        RtpPacket { buffer }
    }

    /// Wraps a buffer, checks that the version is 2, then calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if the buffer is empty, [`Error::BadVersion`] if the version is not 2
    /// (checked before the lengths, whose meaning depends on it), then those of
    /// [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        let first = *packet.buffer.as_ref().first().ok_or(Error::TooShort)?;
        if first >> 6 != VERSION {
            return Err(Error::BadVersion);
        }
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header, the CSRC list and the whole header
    /// extension.
    ///
    /// After this succeeds no accessor panics (see the module docs). The version is not checked
    /// here.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if the buffer is shorter than 12 bytes or than
    /// [`Self::header_len`].
    pub fn check_len(&self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        if buf.len() < RTP_HEADER_LEN {
            return Err(Error::TooShort);
        }
        // The extension length field must be there before `header_len` reads it.
        if self.extension() && buf.len() < self.extension_at() + field::EXT_HEADER_LEN {
            return Err(Error::TooShort);
        }
        if buf.len() < self.header_len() {
            return Err(Error::TooShort);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (2 for RTP).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::V_P_X_CC] >> 6
    }

    /// The padding flag (P): the payload ends with padding whose last byte counts it.
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[field::V_P_X_CC] & FLAG_PADDING != 0
    }

    /// The extension flag (X): one header extension follows the CSRC list (RFC 3550 §5.3.1).
    pub fn extension(&self) -> bool {
        self.buffer.as_ref()[field::V_P_X_CC] & FLAG_EXTENSION != 0
    }

    /// The CSRC count (CC), 0–15.
    pub fn csrc_count(&self) -> u8 {
        self.buffer.as_ref()[field::V_P_X_CC] & MASK_CC
    }

    /// The marker bit (M).
    pub fn marker(&self) -> bool {
        self.buffer.as_ref()[field::M_PT] & FLAG_MARKER != 0
    }

    /// The payload type (PT), 0–127.
    pub fn payload_type(&self) -> u8 {
        self.buffer.as_ref()[field::M_PT] & MASK_PT
    }

    /// The sequence number.
    pub fn seq(&self) -> SeqNum {
        SeqNum::new(read_u16(self.buffer.as_ref(), field::SEQ.start))
    }

    /// The RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TIMESTAMP.start)
    }

    /// The SSRC field as sent, 0 included: what the SRTP IV takes (RFC 3711 §4.1.1,
    /// RFC 7714 §8.1).
    pub fn ssrc_value(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SSRC.start)
    }

    /// The SSRC as a stream identifier; `None` for SSRC 0, which [`Ssrc`] reserves.
    pub fn ssrc(&self) -> Option<Ssrc> {
        Ssrc::new(self.ssrc_value()).ok()
    }

    /// CSRC number `i` (0-based), if `i` is below the CSRC count.
    pub fn csrc(&self, i: usize) -> Option<u32> {
        (i < usize::from(self.csrc_count())).then(|| read_u32(self.buffer.as_ref(), field::CSRC + 4 * i))
    }

    /// Where the header extension starts (or would): after the CSRC list.
    fn extension_at(&self) -> usize {
        field::CSRC + 4 * usize::from(self.csrc_count())
    }

    /// The profile-defined 16 bits of the header extension (0xBEDE for RFC 8285 one-byte
    /// elements), if X is set.
    pub fn extension_profile(&self) -> Option<u16> {
        let at = self.extension_at() + field::EXT_PROFILE.start;
        self.extension().then(|| read_u16(self.buffer.as_ref(), at))
    }

    /// The header extension's data, after its 4-byte header, if X is set.
    pub fn extension_data(&self) -> Option<&[u8]> {
        let start = self.extension_at() + field::EXT_HEADER_LEN;
        self.extension().then(|| &self.buffer.as_ref()[start..self.header_len()])
    }

    /// Length of the header including the CSRC list and the header extension
    /// (RFC 3550 §5.1, §5.3.1): the part SRTP leaves in clear.
    pub fn header_len(&self) -> usize {
        let at = self.extension_at();
        if self.extension() {
            let words = read_u16(self.buffer.as_ref(), at + field::EXT_LENGTH.start);
            at + field::EXT_HEADER_LEN + 4 * usize::from(words)
        } else {
            at
        }
    }

    /// The header, [`Self::header_len`] bytes.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Everything after the header, to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    /// Sets the version field (low 2 bits used).
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::V_P_X_CC];
        *b = (*b & 0x3f) | ((version & 0x03) << 6);
    }

    /// Sets or clears the padding flag.
    pub fn set_padding(&mut self, on: bool) {
        set_flag(&mut self.buffer.as_mut()[field::V_P_X_CC], FLAG_PADDING, on);
    }

    /// Sets or clears the extension flag. Changes [`Self::header_len`]: check again after.
    pub fn set_extension(&mut self, on: bool) {
        set_flag(&mut self.buffer.as_mut()[field::V_P_X_CC], FLAG_EXTENSION, on);
    }

    /// Sets the CSRC count (low 4 bits used). Changes [`Self::header_len`]: check again after.
    pub fn set_csrc_count(&mut self, count: u8) {
        let b = &mut self.buffer.as_mut()[field::V_P_X_CC];
        *b = (*b & !MASK_CC) | (count & MASK_CC);
    }

    /// Sets or clears the marker bit.
    pub fn set_marker(&mut self, on: bool) {
        set_flag(&mut self.buffer.as_mut()[field::M_PT], FLAG_MARKER, on);
    }

    /// Sets the payload type (low 7 bits used).
    pub fn set_payload_type(&mut self, pt: u8) {
        let b = &mut self.buffer.as_mut()[field::M_PT];
        *b = (*b & FLAG_MARKER) | (pt & MASK_PT);
    }

    /// Sets the sequence number.
    pub fn set_seq(&mut self, seq: SeqNum) {
        write_u16(self.buffer.as_mut(), field::SEQ.start, seq.get());
    }

    /// Sets the timestamp.
    pub fn set_timestamp(&mut self, ts: u32) {
        write_u32(self.buffer.as_mut(), field::TIMESTAMP.start, ts);
    }

    /// Sets the SSRC field.
    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        write_u32(self.buffer.as_mut(), field::SSRC.start, ssrc.get());
    }

    /// The header and the payload, mutably and apart: what SRTP authenticates and what it
    /// encrypts.
    pub fn header_payload_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let len = self.header_len();
        self.buffer.as_mut().split_at_mut(len)
    }

    /// Everything after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.header_payload_mut().1
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for RtpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A zero-copy view of the first packet of a compound RTCP packet (RFC 3550 §6.4.1): its
/// common header and the sender SSRC, the 8 bytes SRTCP leaves in clear (RFC 3711 §3.4). The
/// rest of the compound packet is not parsed: SRTCP encrypts it as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtcpPacket<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        RtcpPacket { buffer }
    }

    /// Wraps a buffer, checks that the version is 2, then calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if the buffer is empty, [`Error::BadVersion`] if the version is not
    /// 2, then those of [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        let first = *packet.buffer.as_ref().first().ok_or(Error::TooShort)?;
        if first >> 6 != VERSION {
            return Err(Error::BadVersion);
        }
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and the sender SSRC ([`RTCP_HEADER_LEN`] bytes).
    /// The length field is not checked against the buffer: see [`Self::packet_len`].
    ///
    /// After this succeeds no accessor panics.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if the buffer is shorter than 8 bytes.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < RTCP_HEADER_LEN {
            return Err(Error::TooShort);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (2 for RTCP).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::V_P_X_CC] >> 6
    }

    /// The padding flag (P).
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[field::V_P_X_CC] & FLAG_PADDING != 0
    }

    /// The 5-bit count field: reception report count, source count or feedback type,
    /// depending on the packet type.
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::V_P_X_CC] & MASK_RC
    }

    /// The packet type (200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP, ...; RFC 3550 §12.1).
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::M_PT]
    }

    /// The length field: this packet's length in 32-bit words minus one.
    pub fn length(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SEQ.start)
    }

    /// This packet's length in bytes from the length field, `4 · (length + 1)`. It may exceed
    /// the buffer; it is the caller's to compare.
    pub fn packet_len(&self) -> usize {
        4 * (usize::from(self.length()) + 1)
    }

    /// The sender SSRC as sent, 0 included: what the SRTCP IV takes (RFC 3711 §4.1.1,
    /// RFC 7714 §9.1).
    pub fn sender_ssrc_value(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::RTCP_SSRC.start)
    }

    /// The sender SSRC as a stream identifier; `None` for SSRC 0, which [`Ssrc`] reserves.
    pub fn sender_ssrc(&self) -> Option<Ssrc> {
        Ssrc::new(self.sender_ssrc_value()).ok()
    }

    /// The clear prefix: header and sender SSRC.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..RTCP_HEADER_LEN]
    }

    /// Everything after the sender SSRC, to the end of the buffer: what SRTCP encrypts.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[RTCP_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtcpPacket<T> {
    /// Sets the version field (low 2 bits used).
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::V_P_X_CC];
        *b = (*b & 0x3f) | ((version & 0x03) << 6);
    }

    /// Sets or clears the padding flag.
    pub fn set_padding(&mut self, on: bool) {
        set_flag(&mut self.buffer.as_mut()[field::V_P_X_CC], FLAG_PADDING, on);
    }

    /// Sets the count field (low 5 bits used).
    pub fn set_count(&mut self, count: u8) {
        let b = &mut self.buffer.as_mut()[field::V_P_X_CC];
        *b = (*b & !MASK_RC) | (count & MASK_RC);
    }

    /// Sets the packet type.
    pub fn set_packet_type(&mut self, pt: u8) {
        self.buffer.as_mut()[field::M_PT] = pt;
    }

    /// Sets the length field (32-bit words minus one).
    pub fn set_length(&mut self, words_minus_one: u16) {
        write_u16(self.buffer.as_mut(), field::SEQ.start, words_minus_one);
    }

    /// Sets the sender SSRC.
    pub fn set_sender_ssrc(&mut self, ssrc: Ssrc) {
        write_u32(self.buffer.as_mut(), field::RTCP_SSRC.start, ssrc.get());
    }

    /// The clear prefix and the rest, mutably and apart.
    pub fn header_payload_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        self.buffer.as_mut().split_at_mut(RTCP_HEADER_LEN)
    }

    /// Everything after the sender SSRC, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.header_payload_mut().1
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for RtcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Fuzz entry point (cargo-fuzz target `srtp_views`): parses `data` as RTP and as RTCP,
/// reads every field of each view that checks, and writes every field back on a copy.
///
/// Never panics on any input; it panics only if an invariant is broken: an accessor that
/// panicked after `check_len`, a header longer than the buffer, or a setter that did not round
/// trip or that changed another field.
pub fn fuzz_views(data: &[u8]) {
    if let Ok(p) = RtpPacket::new_checked(data) {
        assert_eq!(p.version(), VERSION);
        let hdr = p.header_len();
        assert!(hdr >= RTP_HEADER_LEN && hdr <= data.len());
        assert_eq!(p.header().len() + p.payload().len(), data.len());
        assert_eq!(p.ssrc().map(Ssrc::get), Some(p.ssrc_value()).filter(|&v| v != 0));
        for i in 0..16 {
            assert_eq!(p.csrc(i).is_some(), i < usize::from(p.csrc_count()));
        }
        assert_eq!(p.extension_data().is_some(), p.extension());
        assert_eq!(p.extension_profile().is_some(), p.extension());

        let mut copy = data.to_vec();
        let mut q = RtpPacket::new_unchecked(&mut copy[..]);
        q.set_marker(!p.marker());
        q.set_payload_type(p.payload_type() ^ 0x55);
        q.set_seq(SeqNum::new(p.seq().get().wrapping_add(1)));
        q.set_timestamp(!p.timestamp());
        q.set_padding(!p.padding());
        assert!(q.check_len().is_ok(), "setters of fields check_len ignores keep it passing");
        assert_eq!((q.marker(), q.payload_type()), (!p.marker(), p.payload_type() ^ 0x55));
        assert_eq!((q.seq().get(), q.timestamp()), (p.seq().get().wrapping_add(1), !p.timestamp()));
        assert_eq!((q.version(), q.csrc_count(), q.extension()), (p.version(), p.csrc_count(), p.extension()));
        assert_eq!((q.header_len(), q.ssrc_value()), (hdr, p.ssrc_value()));
        let (h, pl) = q.header_payload_mut();
        assert_eq!((h.len(), pl.len()), (hdr, data.len() - hdr));
    }
    if let Ok(p) = RtcpPacket::new_checked(data) {
        assert_eq!(p.version(), VERSION);
        assert_eq!(p.header().len() + p.payload().len(), data.len());
        assert_eq!(p.packet_len(), 4 * (usize::from(p.length()) + 1));
        assert_eq!(p.sender_ssrc().map(Ssrc::get), Some(p.sender_ssrc_value()).filter(|&v| v != 0));
        let mut copy = data.to_vec();
        let mut q = RtcpPacket::new_unchecked(&mut copy[..]);
        q.set_count(p.count() ^ 0x1f);
        q.set_packet_type(!p.packet_type());
        q.set_length(!p.length());
        assert_eq!((q.count(), q.packet_type(), q.length()), (p.count() ^ 0x1f, !p.packet_type(), !p.length()));
        assert_eq!(
            (q.version(), q.padding(), q.sender_ssrc_value()),
            (p.version(), p.padding(), p.sender_ssrc_value())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).expect("valid hex")
    }

    // The views replaced four free functions; these adapters keep the tests written against
    // them (and their assertions) verbatim.
    fn rtp_header_len(pkt: &[u8]) -> Result<usize, Error> {
        RtpPacket::new_checked(pkt).map(|p| p.header_len())
    }

    fn rtp_seq(pkt: &[u8]) -> Result<u16, Error> {
        // The old accessor needed only the fixed header, not the CSRCs or the extension.
        RtpPacket::new_checked(pkt.get(..RTP_HEADER_LEN).unwrap_or(pkt)).map(|p| p.seq().get())
    }

    fn rtp_ssrc(pkt: &[u8]) -> Result<u32, Error> {
        RtpPacket::new_checked(pkt.get(..RTP_HEADER_LEN).unwrap_or(pkt)).map(|p| p.ssrc_value())
    }

    fn rtcp_sender_ssrc(pkt: &[u8]) -> Result<u32, Error> {
        RtcpPacket::new_checked(pkt).map(|p| p.sender_ssrc_value())
    }

    #[test]
    fn plain_header() {
        let pkt = h("800f1234 decafbad cafebabe abababab");
        assert_eq!(rtp_header_len(&pkt), Ok(12));
        assert_eq!(rtp_seq(&pkt), Ok(0x1234));
        assert_eq!(rtp_ssrc(&pkt), Ok(0xcafebabe));
    }

    #[test]
    fn csrcs_and_extension() {
        // CC = 2, X = 1, one-byte-header extension (0xBEDE) of 1 word, then payload.
        let pkt = h("9200 0001 00000000 11111111 22222222 33333333 bede0001 10ff0000 aa");
        assert_eq!(rtp_header_len(&pkt), Ok(12 + 8 + 4 + 4));
        // RFC 6904 Appendix A packet: X = 1, extension of 6 words.
        let pkt = h("900f1234 decafbad cafebabe bede0006 17414273 a4752627 48220000 c8308e46 \
                     55996386 b395fb00 abab");
        assert_eq!(rtp_header_len(&pkt), Ok(40));
    }

    #[test]
    fn truncated_and_malformed() {
        let pkt = h("9200 0001 00000000 11111111 22222222 33333333 bede0001 10ff0000");
        assert_eq!(rtp_header_len(&pkt), Ok(pkt.len()));
        for len in 0..pkt.len() {
            assert!(rtp_header_len(&pkt[..len]).is_err(), "len {len}");
        }
        assert_eq!(rtp_header_len(&[]), Err(Error::TooShort));
        assert_eq!(rtp_header_len(&h("400f1234 decafbad cafebabe")), Err(Error::BadVersion));
        assert_eq!(rtp_seq(&h("800f12")), Err(Error::TooShort));
        assert_eq!(rtp_ssrc(&h("c00f1234 decafbad cafebabe")), Err(Error::BadVersion));
        // Extension length pointing past the end.
        assert_eq!(rtp_header_len(&h("900f1234 decafbad cafebabe bedeffff")), Err(Error::TooShort));
        // Maximum CSRC count with a short packet.
        assert_eq!(rtp_header_len(&h("8f0f1234 decafbad cafebabe")), Err(Error::TooShort));
    }

    #[test]
    fn rtcp_sender() {
        let pkt = h("81c8000b cafebabe abababab");
        assert_eq!(rtcp_sender_ssrc(&pkt), Ok(0xcafebabe));
        assert_eq!(rtcp_sender_ssrc(&pkt[..7]), Err(Error::TooShort));
        assert_eq!(rtcp_sender_ssrc(&[]), Err(Error::TooShort));
        assert_eq!(rtcp_sender_ssrc(&h("01c8000b cafebabe")), Err(Error::BadVersion));
    }

    /// RFC 7714 §16.1.1's RTP packet: every field, header and payload.
    #[test]
    fn rfc7714_rtp_fields() {
        let pkt = h("8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973");
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding() && !p.extension() && !p.marker());
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.payload_type(), 0x40);
        assert_eq!(p.seq(), SeqNum::new(0xf17b));
        assert_eq!(p.timestamp(), 0x8041f8d3);
        assert_eq!(p.ssrc_value(), 0x5501a0b2);
        assert_eq!(p.ssrc(), Ssrc::new(0x5501a0b2).ok());
        assert_eq!(p.header(), &pkt[..12]);
        assert_eq!(p.payload(), b"Gallia est omnis");
        assert_eq!((p.csrc(0), p.extension_profile(), p.extension_data()), (None, None, None));
    }

    /// A packet laid out as WebRTC video is (marker set, PT 100, one-byte-header extension of two
    /// words), then the CSRC packet of `csrcs_and_extension`.
    #[test]
    fn extension_and_csrc_fields() {
        let pkt = h("90e40d6b 2bd9e6f0 6f25a3c1 bede0002 3223fa5e 51000d00 10ff");
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert!(p.marker() && p.extension() && !p.padding());
        assert_eq!((p.payload_type(), p.seq().get(), p.timestamp()), (100, 0x0d6b, 0x2bd9e6f0));
        assert_eq!(p.extension_profile(), Some(0xbede));
        assert_eq!(p.extension_data(), Some(&pkt[16..24]));
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload(), &[0x10, 0xff]);

        let pkt = h("9200 0001 00000000 11111111 22222222 33333333 bede0001 10ff0000 aa");
        let p = RtpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!((p.csrc_count(), p.csrc(0), p.csrc(1), p.csrc(2)), (2, Some(0x22222222), Some(0x33333333), None));
        // SSRC 0 is a valid field value but not a stream identifier.
        assert_eq!((p.ssrc_value(), p.ssrc()), (0x11111111, Ssrc::new(0x11111111).ok()));
        let mut zero = pkt.clone();
        zero[8..12].fill(0);
        assert_eq!(RtpPacket::new_checked(&zero[..]).unwrap().ssrc(), None);
    }

    /// After `check_len` succeeds, every accessor runs on every prefix and every first byte.
    #[test]
    fn accessors_never_panic_after_check_len() {
        let pkt = h("9f00 0001 00000000 11111111 22222222 33333333 bede0001 10ff0000 aa");
        for first in 0..=255u8 {
            let mut b = pkt.clone();
            b[0] = first;
            for len in 0..=b.len() {
                let p = RtpPacket::new_unchecked(&b[..len]);
                if p.check_len().is_ok() {
                    let _ = (p.version(), p.padding(), p.marker(), p.payload_type(), p.seq(), p.timestamp());
                    let _ = (p.ssrc(), p.csrc(15), p.extension_profile(), p.extension_data(), p.header(), p.payload());
                    assert!(p.header_len() <= len);
                }
                let r = RtcpPacket::new_unchecked(&b[..len]);
                if r.check_len().is_ok() {
                    let _ = (r.version(), r.padding(), r.count(), r.packet_type(), r.packet_len());
                    let _ = (r.sender_ssrc(), r.header(), r.payload());
                }
            }
        }
    }

    #[test]
    fn rtp_setters_round_trip() {
        let mut buf = [0u8; 16];
        let mut p = RtpPacket::new_unchecked(&mut buf[..]);
        p.set_version(2);
        p.set_padding(true);
        p.set_padding(false);
        p.set_marker(true);
        p.set_payload_type(111);
        p.set_seq(SeqNum::new(0xf17b));
        p.set_timestamp(0x8041f8d3);
        p.set_ssrc(Ssrc::new(0x5501a0b2).unwrap());
        p.set_csrc_count(1);
        p.payload_mut().copy_from_slice(&[]);
        assert_eq!(buf, *h("81ef f17b 8041f8d3 5501a0b2 00000000").as_slice());
        let mut p = RtpPacket::new_unchecked(&mut buf[..]);
        p.set_csrc_count(0);
        p.set_extension(true);
        assert_eq!(p.header_len(), 16);
        let (hdr, payload) = p.header_payload_mut();
        assert_eq!((hdr.len(), payload.len()), (16, 0));
        p.set_extension(false);
        p.payload_mut().copy_from_slice(b"abcd");
        let p = RtpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!((p.payload(), p.marker(), p.payload_type()), (&b"abcd"[..], true, 111));
    }

    /// libsrtp's SRTCP test packet (an SR) and RFC 7714 §17.1's.
    #[test]
    fn rtcp_fields_and_setters() {
        let pkt = h("81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61");
        let p = RtcpPacket::new_checked(&pkt[..]).unwrap();
        assert_eq!((p.version(), p.padding(), p.count(), p.packet_type()), (2, false, 1, 200));
        assert_eq!((p.length(), p.packet_len()), (13, 56));
        assert_eq!(p.sender_ssrc_value(), 0x4d617273);
        assert_eq!(p.sender_ssrc(), Ssrc::new(0x4d617273).ok());
        assert_eq!(p.header(), &pkt[..8]);
        assert_eq!(p.payload(), &pkt[8..]);

        let mut buf = [0u8; 12];
        let mut p = RtcpPacket::new_unchecked(&mut buf[..]);
        p.set_version(2);
        p.set_padding(true);
        p.set_count(1);
        p.set_packet_type(201);
        p.set_length(2);
        p.set_sender_ssrc(Ssrc::new(0xcafebabe).unwrap());
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(buf, *h("a1c90002 cafebabe 01020304").as_slice());
        assert_eq!(RtcpPacket::new_checked(&buf[..7]), Err(Error::TooShort));
    }

    #[test]
    fn fuzz_views_inputs() {
        let seeds = [
            h("8040f17b 8041f8d3 5501a0b2 47616c6c 69612065"),
            h("9200 0001 00000000 11111111 22222222 33333333 bede0001 10ff0000 aa"),
            h("81c8000d 4d617273 4e545031"),
            h("900f1234 decafbad cafebabe bedeffff"),
            h("8f0f1234 decafbad cafebabe"),
        ];
        fuzz_views(&[]);
        for seed in &seeds {
            for len in 0..=seed.len() {
                for first in [seed[0], 0x80, 0x9f, 0xbf, 0x40, 0xff] {
                    let mut b = seed[..len].to_vec();
                    if let Some(f) = b.first_mut() {
                        *f = first;
                    }
                    fuzz_views(&b);
                }
            }
        }
    }
}
