//! IPv6 fixed headers (RFC 8200 §3).
//!
//! [`Ipv6Packet`] is a zero-copy view of the 40-byte fixed header. Extension headers are not
//! walked: [`Ipv6Packet::next_header`] is exposed as is and [`Ipv6Packet::payload`] starts right
//! after the fixed header. Jumbograms (RFC 2675, payload length 0 plus a Hop-by-Hop option) are
//! not supported: a zero payload length means an empty payload.
#![forbid(unsafe_code)]

use std::net::Ipv6Addr;

use super::{read_array, read_u16, write_u16, Error};

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = 40;
/// Next-header value of the IPv6 Fragment extension header (RFC 8200 §4.5).
pub const NEXT_HEADER_FRAGMENT: u8 = 44;

mod field {
    use std::ops::Range;

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// A zero-copy view of an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without any check; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checks that the version is 6, then calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer cannot hold the fixed header, [`Error::BadVersion`] if
    /// the version is not 6. Then [`Error::Truncated`] from [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        // Before the length checks: other versions' length fields mean something else.
        if packet.version() != 6 {
            return Err(Error::BadVersion);
        }
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header and the payload length it announces.
    ///
    /// After this succeeds, no accessor panics, as long as the payload-length field is not
    /// changed afterwards. The version is not checked here.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than 40 bytes plus the payload length.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.total_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        u32::from_be_bytes(read_array(self.buffer.as_ref(), field::VER_TC_FLOW.start))
    }

    /// The version field (6 for IPv6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP in the high 6 bits, ECN in the low 2).
    pub fn traffic_class(&self) -> u8 {
        // Bits 20..28 of the first word fit in a u8.
        ((self.ver_tc_flow() >> 20) & 0xff) as u8
    }

    /// The 20-bit flow label (RFC 6437).
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// Payload length: bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Fixed header plus payload length, in bytes.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Next header: the first extension header or the upper-layer protocol (17 for UDP).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::SRC_ADDR.start))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::DST_ADDR.start))
    }

    /// The payload: `payload_len` bytes after the fixed header, padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_ver_tc_flow(&mut self, value: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the version field (low 4 bits used).
    pub fn set_version(&mut self, version: u8) {
        let v = self.ver_tc_flow() & 0x0fff_ffff;
        self.set_ver_tc_flow(v | (u32::from(version & 0x0f) << 28));
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let v = self.ver_tc_flow() & 0xf00f_ffff;
        self.set_ver_tc_flow(v | (u32::from(tc) << 20));
    }

    /// Sets the flow label (low 20 bits used).
    pub fn set_flow_label(&mut self, label: u32) {
        let v = self.ver_tc_flow() & 0xfff0_0000;
        self.set_ver_tc_flow(v | (label & 0x000f_ffff));
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = next_header;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scapy: IPv6(2001:db8::1 -> 2001:db8::2, tc=0xb8, fl=0x12345, hlim=64)/UDP(5000 -> 3478)
    /// /"hello edgerelay v6".
    const V6_UDP: &str = "6b812345001a114020010db800000000000000000000000120010db80000000000000000\
                          0000000213880d96001aa44d68656c6c6f206564676572656c6179207636";

    #[test]
    fn fields() {
        let bytes = hex::decode(V6_UDP).unwrap();
        let p = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 26);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &bytes[40..]);
    }

    #[test]
    fn setters_reproduce_the_header() {
        let bytes = hex::decode(V6_UDP).unwrap();
        let mut buf = vec![0u8; bytes.len()];
        buf[40..].copy_from_slice(&bytes[40..]);
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_flow_label(0x12345);
        p.set_traffic_class(0xb8);
        p.set_version(6);
        p.set_payload_len(26);
        p.set_next_header(17);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8::2".parse().unwrap());
        assert_eq!(p.payload_mut().len(), 26);
        assert_eq!(buf, bytes);
    }

    #[test]
    fn truncation_at_every_length_and_padding() {
        let bytes = hex::decode(V6_UDP).unwrap();
        for len in 0..bytes.len() {
            let err = Ipv6Packet::new_checked(&bytes[..len]).unwrap_err();
            assert_eq!(err, Error::Truncated, "len {len}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(Ipv6Packet::new_checked(&padded[..]).unwrap().payload().len(), 26);
    }

    #[test]
    fn wrong_version() {
        let mut bytes = hex::decode(V6_UDP).unwrap();
        bytes[0] = 0x4b;
        assert_eq!(Ipv6Packet::new_checked(&bytes[..]).unwrap_err(), Error::BadVersion);
    }
}
