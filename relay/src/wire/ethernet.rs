//! Ethernet II frames (IEEE 802.3) with at most one 802.1Q VLAN tag.
//!
//! [`EthernetFrame`] is a zero-copy view over a caller-owned buffer. Tagged frames keep the TPID
//! `0x8100` in the outer EtherType field; [`EthernetFrame::ethertype`] looks through one tag.
//! Double tagging (802.1ad QinQ) is not interpreted: its outer TPID `0x88a8` is just an
//! unsupported EtherType. The FCS is not part of the buffer (NICs strip it).
#![forbid(unsafe_code)]

use std::fmt;

use super::{read_array, read_u16, write_u16, Error};

/// EtherType of IPv4 (RFC 894).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6 (RFC 2464).
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Tag protocol identifier of an IEEE 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet header carrying one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// The six address bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether this is the broadcast address.
    #[must_use]
    pub const fn is_broadcast(&self) -> bool {
        matches!(self.0, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
    }

    /// Whether the group bit is set (multicast or broadcast).
    #[must_use]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address.
    #[must_use]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

mod field {
    use std::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    /// EtherType, or the TPID of a VLAN tag.
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Tag control information of an 802.1Q tag: PCP (3 bits), DEI (1), VID (12).
    pub const VLAN_TCI: Range<usize> = 14..16;
    /// EtherType behind an 802.1Q tag.
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
}

/// A zero-copy view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking its length; see [`Self::check_len`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and calls [`Self::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer cannot hold the header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the whole header, including a VLAN tag if the outer
    /// EtherType announces one.
    ///
    /// After this succeeds, no accessor panics, as long as the outer EtherType is not changed
    /// to [`ETHERTYPE_VLAN`] afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than the header.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress(read_array(self.buffer.as_ref(), field::DESTINATION.start))
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress(read_array(self.buffer.as_ref(), field::SOURCE.start))
    }

    /// The EtherType field at offset 12: the TPID [`ETHERTYPE_VLAN`] for a tagged frame.
    pub fn outer_ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// Whether the frame carries an 802.1Q tag.
    pub fn is_vlan_tagged(&self) -> bool {
        self.outer_ethertype() == ETHERTYPE_VLAN
    }

    /// The full tag control information (PCP, DEI, VID) of an 802.1Q tag, if present.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.is_vlan_tagged().then(|| read_u16(self.buffer.as_ref(), field::VLAN_TCI.start))
    }

    /// The 12-bit VLAN identifier of an 802.1Q tag, if present. A priority-tagged frame gives
    /// `Some(0)`.
    pub fn vlan(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// The EtherType of the payload, looking through one 802.1Q tag.
    pub fn ethertype(&self) -> u16 {
        if self.is_vlan_tagged() {
            read_u16(self.buffer.as_ref(), field::INNER_ETHERTYPE.start)
        } else {
            self.outer_ethertype()
        }
    }

    /// Header length: [`VLAN_HEADER_LEN`] for a tagged frame, else [`HEADER_LEN`].
    pub fn header_len(&self) -> usize {
        if self.is_vlan_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The bytes after the header. Includes any Ethernet padding: the network-layer length
    /// field says where the packet ends.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the raw EtherType field at offset 12 (the TPID of a tagged frame).
    pub fn set_outer_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, value);
    }

    /// Sets the EtherType of the payload: behind the tag of a tagged frame, else at offset 12.
    pub fn set_ethertype(&mut self, value: u16) {
        let at = self.header_len() - 2;
        write_u16(self.buffer.as_mut(), at, value);
    }

    /// Makes the frame tagged: writes the TPID [`ETHERTYPE_VLAN`] and the tag control
    /// information `tci`. Call [`Self::set_ethertype`] afterwards for the inner EtherType.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`VLAN_HEADER_LEN`].
    pub fn set_vlan_tci(&mut self, tci: u16) {
        let buf = self.buffer.as_mut();
        write_u16(buf, field::VLAN_TCI.start, tci);
        write_u16(buf, field::ETHERTYPE.start, ETHERTYPE_VLAN);
    }

    /// The bytes after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hdr = self.header_len();
        &mut self.buffer.as_mut()[hdr..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scapy: Ether(src=02:..:01, dst=02:..:02)/IP(192.168.0.1 -> 192.168.0.199)/UDP(5000 -> 3478).
    const UNTAGGED: &str = "02000000000202000000000108004500002b123440004011a675c0a80001c0a800c7\
                            13880d960017f40568656c6c6f206564676572656c6179";
    /// scapy: same addresses with Dot1Q(vlan=100, prio=5).
    const TAGGED: &str = "0200000000020200000000018100a064080045000020000100004011f8b3c0a80001\
                          c0a800c713880d96000c84c4766c616e";

    #[test]
    fn untagged_fields() {
        let bytes = hex::decode(UNTAGGED).unwrap();
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress([2, 0, 0, 0, 0, 2]));
        assert_eq!(frame.src_addr(), EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(frame.src_addr().to_string(), "02:00:00:00:00:01");
        assert_eq!(frame.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(frame.outer_ethertype(), ETHERTYPE_IPV4);
        assert_eq!(frame.vlan(), None);
        assert_eq!(frame.header_len(), HEADER_LEN);
        assert_eq!(frame.payload(), &bytes[14..]);
    }

    #[test]
    fn tagged_fields() {
        let bytes = hex::decode(TAGGED).unwrap();
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert!(frame.is_vlan_tagged());
        assert_eq!(frame.outer_ethertype(), ETHERTYPE_VLAN);
        assert_eq!(frame.vlan_tci(), Some(0xa064));
        assert_eq!(frame.vlan(), Some(100));
        assert_eq!(frame.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(frame.header_len(), VLAN_HEADER_LEN);
        assert_eq!(frame.payload()[0], 0x45);
    }

    #[test]
    fn truncation_at_every_length() {
        for full in [UNTAGGED, TAGGED] {
            let bytes = hex::decode(full).unwrap();
            let need = EthernetFrame::new_unchecked(&bytes[..]).header_len();
            for len in 0..=bytes.len() {
                match EthernetFrame::new_checked(&bytes[..len]) {
                    Ok(f) => {
                        assert!(len >= need);
                        let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan());
                        assert_eq!(f.payload().len(), len - need);
                    }
                    Err(e) => {
                        assert!(len < need);
                        assert_eq!(e, Error::Truncated);
                    }
                }
            }
        }
    }

    #[test]
    fn build_tagged_frame_with_setters() {
        let mut buf = [0u8; 20];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        frame.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 2]));
        frame.set_src_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
        frame.set_vlan_tci(0xa064);
        frame.set_ethertype(ETHERTYPE_IPV4);
        frame.payload_mut().copy_from_slice(&[0x45, 0x00]);
        let expected = hex::decode(TAGGED).unwrap();
        assert_eq!(&buf[..], &expected[..20]);
    }

    #[test]
    fn address_classes() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(EthernetAddress([2, 0, 0, 0, 0, 1]).is_unicast());
    }
}
