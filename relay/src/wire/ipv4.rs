//! IPv4 headers (RFC 791), options included.
//!
//! [`Ipv4Packet`] is a zero-copy view. Its header length comes from the IHL field and its end
//! from the total-length field, so link-layer padding after the packet is never part of
//! [`Ipv4Packet::payload`]. Options are exposed as raw bytes and not interpreted.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use super::{checksum, read_array, read_u16, write_u16, Error};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Length of an IPv4 header with the maximum 40 bytes of options (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

mod field {
    use std::ops::Range;

    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP (high 6 bits) and ECN (low 2 bits), RFC 2474 / RFC 3168.
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (reserved, DF, MF) and the fragment offset in 8-byte units.
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checks that the version is 4, then calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer cannot hold the fixed header, [`Error::BadVersion`] if
    /// the version is not 4. Then those of [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        // Before the length checks: other versions' length fields mean something else.
        if packet.version() != 4 {
            return Err(Error::BadVersion);
        }
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length fields against each other and against the buffer.
    ///
    /// After this succeeds, no accessor panics, as long as the IHL and total-length fields are
    /// not changed afterwards. The version is not checked here.
    ///
    /// # Errors
    ///
    /// - [`Error::Truncated`] if the buffer is shorter than 20 bytes, than the IHL, or than the
    ///   total length.
    /// - [`Error::BadHeaderLen`] if the IHL is below 5.
    /// - [`Error::BadLength`] if the total length is below the header length.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if len < header_len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadLength);
        }
        if len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for IPv4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The IHL field: header length in 32-bit words.
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes, from the IHL field.
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Differentiated Services Code Point (RFC 2474).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit Congestion Notification codepoint (RFC 3168).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length of the packet, header included.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    fn flags_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) * 8
    }

    /// Whether this packet is a fragment: MF is set or the offset is non-zero.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.flags_offset() & OFFSET_MASK != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol number of the payload (17 for UDP).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::SRC_ADDR.start))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::DST_ADDR.start))
    }

    /// Whether the header checksum is correct (RFC 791 §3.1): the one's-complement sum over
    /// the whole header, options and checksum field included, is `0xffff`.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }

    /// The raw option bytes between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to the total length, padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version field.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the IHL field (header length in 32-bit words, low 4 bits used).
    pub fn set_ihl(&mut self, words: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | (words & 0x0f);
    }

    /// Sets the DSCP (low 6 bits used).
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN codepoint (low 2 bits used).
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, ident);
    }

    fn set_flags_offset(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, value);
    }

    /// Sets or clears Don't Fragment.
    pub fn set_dont_frag(&mut self, on: bool) {
        let v = self.flags_offset() & !FLAG_DF;
        self.set_flags_offset(if on { v | FLAG_DF } else { v });
    }

    /// Sets or clears More Fragments.
    pub fn set_more_frags(&mut self, on: bool) {
        let v = self.flags_offset() & !FLAG_MF;
        self.set_flags_offset(if on { v | FLAG_MF } else { v });
    }

    /// Sets the fragment offset in bytes; the low 3 bits are dropped (the field counts
    /// 8-byte units).
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let v = self.flags_offset() & !OFFSET_MASK;
        self.set_flags_offset(v | (bytes / 8));
    }

    /// Clears all flags and the fragment offset.
    pub fn clear_flags_offset(&mut self) {
        self.set_flags_offset(0);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol number.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and writes the header checksum over [`Self::header_len`] bytes (RFC 791 §3.1).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = self.header_len();
        let sum = checksum::sum(&self.buffer.as_ref()[..len]);
        self.set_checksum(!sum);
    }

    /// The raw option bytes, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let len = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Wikipedia "IPv4 header checksum" example header (no payload bytes present).
    const CLASSIC: &str = "45000073000040004011b861c0a80001c0a800c7";
    /// scapy: IP(10.0.0.1 -> 10.0.0.2, id=7, ttl=32, Router Alert option)/UDP/"opts".
    const WITH_OPTIONS: &str = "46000024000700002011f1bb0a0000010a0000029404000004d2162e000cecef\
                                6f707473";
    /// scapy: IP(id=9, flags=MF, frag=0)/UDP/"frag0000".
    const FIRST_FRAGMENT: &str = "4500002400092000401146be0a0000010a000002000100020010c38e66726167\
                                  30303030";
    /// scapy: IP(id=9, flags=0, frag=185)/"tail" (proto UDP, offset 1480 bytes).
    const LAST_FRAGMENT: &str = "45000018000900b9400066220a0000010a0000027461696c";

    #[test]
    fn classic_header_fields_and_checksum() {
        let bytes = hex::decode(CLASSIC).unwrap();
        // Total length 0x73 exceeds these 20 bytes: the header alone is truncated.
        assert_eq!(Ipv4Packet::new_checked(&bytes[..]).unwrap_err(), Error::Truncated);
        let p = Ipv4Packet::new_unchecked(&bytes[..]);
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 0x73);
        assert!(p.dont_frag());
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.checksum(), 0xb861);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.verify_checksum());

        let mut copy = bytes.clone();
        let mut p = Ipv4Packet::new_unchecked(&mut copy[..]);
        p.set_checksum(0);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(p.checksum(), 0xb861);
        assert_eq!(copy, bytes);
    }

    #[test]
    fn options_are_skipped_by_ihl() {
        let bytes = hex::decode(WITH_OPTIONS).unwrap();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.ihl(), 6);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.checksum(), 0xf1bb);
        assert!(p.verify_checksum());
        assert_eq!(p.ident(), 7);
        assert_eq!(p.ttl(), 32);
        assert_eq!(p.payload(), &bytes[24..]);
        assert_eq!(&p.payload()[..2], &1234u16.to_be_bytes());
    }

    #[test]
    fn fragments() {
        let bytes = hex::decode(FIRST_FRAGMENT).unwrap();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(p.is_fragment());

        let bytes = hex::decode(LAST_FRAGMENT).unwrap();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());

        let mut copy = bytes.clone();
        let mut p = Ipv4Packet::new_unchecked(&mut copy[..]);
        p.clear_flags_offset();
        p.set_frag_offset(1480);
        p.fill_checksum();
        assert_eq!(copy, bytes);
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        let bytes = hex::decode(WITH_OPTIONS).unwrap();
        for len in 0..bytes.len() {
            let err = Ipv4Packet::new_checked(&bytes[..len]).unwrap_err();
            assert_eq!(err, Error::Truncated, "len {len}");
        }
        // Trailing link-layer padding is allowed and excluded from the payload.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 10]);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 8 + 4);
    }

    #[test]
    fn malformed_lengths_and_version() {
        let good = hex::decode(WITH_OPTIONS).unwrap();

        let mut b = good.clone();
        b[0] = 0x44; // IHL 4
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadHeaderLen);

        let mut b = good.clone();
        b[0] = 0x4f; // IHL 15 = 60 bytes > 36-byte buffer
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);

        let mut b = good.clone();
        b[2..4].copy_from_slice(&23u16.to_be_bytes()); // total length < 24-byte header
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);

        let mut b = good.clone();
        b[2..4].copy_from_slice(&37u16.to_be_bytes()); // one more than the buffer
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);

        let mut b = good;
        b[0] = 0x66;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadVersion);
    }

    #[test]
    fn every_single_bit_flip_in_header_breaks_checksum() {
        let bytes = hex::decode(WITH_OPTIONS).unwrap();
        for bit in 0..24 * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let p = Ipv4Packet::new_unchecked(&b[..]);
            if p.check_len().is_ok() {
                assert!(!p.verify_checksum(), "bit {bit}");
            }
        }
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version(4);
        p.set_ihl(5);
        p.set_dscp(46);
        p.set_ecn(1);
        p.set_total_len(24);
        p.set_ident(0xbeef);
        p.set_dont_frag(true);
        p.set_more_frags(true);
        p.set_more_frags(false);
        p.set_ttl(64);
        p.set_protocol(17);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(b"abcd");
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.dscp(), p.ecn(), p.ident()), (46, 1, 0xbeef));
        assert!(p.dont_frag() && !p.is_fragment());
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), b"abcd");
    }
}
