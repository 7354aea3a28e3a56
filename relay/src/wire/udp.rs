//! UDP headers (RFC 768) and their checksums over the IPv4 and IPv6 pseudo-headers.
//!
//! [`UdpPacket`] is a zero-copy view whose end comes from the UDP length field. Checksum rules:
//! - IPv4 (RFC 768): a zero checksum field means "not computed" and verifies OK.
//! - IPv6 (RFC 8200 §8.1): a zero checksum field is invalid.
//! - Both: a computed checksum of zero is transmitted as `0xffff`.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{checksum, read_u16, write_u16, Error, IP_PROTOCOL_UDP};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use std::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    /// Header plus payload length.
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A zero-copy view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// Those of [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length field against the header size and the buffer.
    ///
    /// After this succeeds, no accessor panics, as long as the length field is not changed
    /// afterwards. Bytes after the length are allowed and ignored.
    ///
    /// # Errors
    ///
    /// - [`Error::Truncated`] if the buffer is shorter than 8 bytes or than the length field.
    /// - [`Error::BadLength`] if the length field is below 8.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if len < field_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length field: header plus payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Whether the payload is empty (the length field is 8 or less).
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The payload: from the end of the header to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// The datagram as the length field delimits it.
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// Verifies the checksum over the IPv4 pseudo-header (RFC 768). A zero field means the
    /// sender computed none, and verifies OK.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let pseudo = checksum::pseudo_header_v4(src, dst, IP_PROTOCOL_UDP, self.len());
        checksum::combine(&[pseudo, checksum::sum(self.datagram())]) == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header (RFC 8200 §8.1). A zero field is
    /// invalid in IPv6.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let pseudo = checksum::pseudo_header_v6(src, dst, IP_PROTOCOL_UDP, u32::from(self.len()));
        checksum::combine(&[pseudo, checksum::sum(self.datagram())]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes the checksum over `pseudo` and the datagram, and writes it; a computed zero is
    /// written as `0xffff` (RFC 768, RFC 8200 §8.1).
    fn fill_checksum_with(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let sum = checksum::combine(&[pseudo, checksum::sum(self.datagram())]);
        let value = match !sum {
            0 => 0xffff,
            v => v,
        };
        self.set_checksum(value);
    }

    /// Computes and writes the checksum over the IPv4 pseudo-header and the datagram
    /// (header plus [`Self::payload`]).
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill_checksum_with(checksum::pseudo_header_v4(src, dst, IP_PROTOCOL_UDP, self.len()));
    }

    /// Computes and writes the checksum over the IPv6 pseudo-header and the datagram.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let pseudo = checksum::pseudo_header_v6(src, dst, IP_PROTOCOL_UDP, u32::from(self.len()));
        self.fill_checksum_with(pseudo);
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const V4_DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);
    /// UDP part of scapy's Ether/IP(192.168.0.1 -> 192.168.0.199)/UDP(5000 -> 3478)
    /// /"hello edgerelay"; checksum f405.
    const V4_UDP: &str = "13880d960017f40568656c6c6f206564676572656c6179";

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    /// UDP part of scapy's IPv6(2001:db8::1 -> 2001:db8::2)/UDP(5000 -> 3478)
    /// /"hello edgerelay v6"; checksum a44d.
    const V6_UDP: &str = "13880d96001aa44d68656c6c6f206564676572656c6179207636";

    /// scapy, 10.0.0.1 -> 10.0.0.2 and 2001:db8::1 -> 2001:db8::2, UDP 1000 -> 2000, payload
    /// chosen so the computed checksum is 0: both carry 0xffff.
    const V4_ZERO_SUM: &str = "03e807d0000cffff65a17a7a";
    const V6_ZERO_SUM: &str = "03e807d0000cffff1e2f7a7a";

    #[test]
    fn v4_fields_and_checksum() {
        let bytes = hex::decode(V4_UDP).unwrap();
        let p = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (5000, 3478, 23));
        assert_eq!(p.checksum(), 0xf405);
        assert_eq!(p.payload(), b"hello edgerelay");
        assert!(p.verify_checksum_v4(V4_SRC, V4_DST));
        assert!(!p.verify_checksum_v4(V4_DST, V4_DST));

        let mut copy = bytes.clone();
        let mut p = UdpPacket::new_unchecked(&mut copy[..]);
        p.set_checksum(0x1234);
        assert!(!p.verify_checksum_v4(V4_SRC, V4_DST));
        p.fill_checksum_v4(V4_SRC, V4_DST);
        assert_eq!(copy, bytes);
    }

    #[test]
    fn v6_fields_and_checksum() {
        let bytes = hex::decode(V6_UDP).unwrap();
        let (src, dst) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let p = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.checksum(), 0xa44d);
        assert!(p.verify_checksum_v6(src, dst));
        assert!(!p.verify_checksum_v6(src, v6("2001:db8::3")));

        let mut copy = bytes.clone();
        let mut p = UdpPacket::new_unchecked(&mut copy[..]);
        p.payload_mut()[0] ^= 0x20;
        assert!(!p.verify_checksum_v6(src, dst));
        p.payload_mut()[0] ^= 0x20;
        p.set_checksum(0);
        p.fill_checksum_v6(src, dst);
        assert_eq!(copy, bytes);
    }

    #[test]
    fn zero_checksum_semantics() {
        // A zero field: "none" in IPv4, invalid in IPv6.
        let mut bytes = hex::decode(V4_UDP).unwrap();
        bytes[6..8].fill(0);
        let p = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(p.verify_checksum_v4(V4_SRC, V4_DST));
        assert!(!p.verify_checksum_v6(v6("2001:db8::1"), v6("2001:db8::2")));

        // A computed zero is sent as 0xffff, which verifies.
        let bytes = hex::decode(V4_ZERO_SUM).unwrap();
        let (s4, d4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert!(UdpPacket::new_checked(&bytes[..]).unwrap().verify_checksum_v4(s4, d4));
        let mut copy = bytes.clone();
        UdpPacket::new_unchecked(&mut copy[..]).fill_checksum_v4(s4, d4);
        assert_eq!(copy, bytes);

        let bytes = hex::decode(V6_ZERO_SUM).unwrap();
        let (s6, d6) = (v6("2001:db8::1"), v6("2001:db8::2"));
        assert!(UdpPacket::new_checked(&bytes[..]).unwrap().verify_checksum_v6(s6, d6));
        let mut copy = bytes.clone();
        UdpPacket::new_unchecked(&mut copy[..]).fill_checksum_v6(s6, d6);
        assert_eq!(copy, bytes);
    }

    #[test]
    fn length_field_against_buffer() {
        let bytes = hex::decode(V4_UDP).unwrap();
        for len in 0..bytes.len() {
            let err = UdpPacket::new_checked(&bytes[..len]).unwrap_err();
            assert_eq!(err, Error::Truncated, "len {len}");
        }
        for bad in 0..8u16 {
            let mut b = bytes.clone();
            b[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(UdpPacket::new_checked(&b[..]).unwrap_err(), Error::BadLength);
        }
        // A shorter length field ends the payload early; the checksum then fails.
        let mut b = bytes.clone();
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.payload(), b"");
        assert!(!p.verify_checksum_v4(V4_SRC, V4_DST));
    }
}
