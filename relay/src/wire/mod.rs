//! Zero-copy views of Ethernet, IPv4, IPv6 and UDP headers, and the two helpers the data path
//! needs: [`parse_udp`] for AF_XDP receive and [`write_udp_headers`] for transmit.
//!
//! Each view (`EthernetFrame<T>`, `Ipv4Packet<T>`, `Ipv6Packet<T>`, `UdpPacket<T>`) wraps a
//! caller-owned buffer `T: AsRef<[u8]>` and reads fields in place; setters exist only where
//! `T: AsMut<[u8]>`. `new_unchecked` does no checks; `new_checked` calls `check_len`, after which
//! no accessor panics. Bytes are never cast to structs, and nothing here allocates.
//!
//! Untrusted input never panics: [`fuzz_parse`] drives every parser and accessor on arbitrary
//! bytes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

pub use ethernet::{EthernetAddress, EthernetFrame};
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use udp::UdpPacket;

/// IP protocol number / IPv6 next header of UDP.
pub const IP_PROTOCOL_UDP: u8 = 17;

/// Why a packet could not be parsed or built.
///
/// `Copy` and small so it can double as a per-packet drop reason; [`Error::as_str`] gives a
/// stable metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer ends before a header, or before the length a header announces.
    #[error("packet truncated")]
    Truncated,
    /// The IP version field does not match the header being parsed.
    #[error("bad IP version")]
    BadVersion,
    /// The IPv4 IHL is below 5 (a header shorter than 20 bytes).
    #[error("bad IPv4 header length")]
    BadHeaderLen,
    /// A length field is smaller than the header it covers.
    #[error("bad length field")]
    BadLength,
    /// The IPv4 header checksum does not verify.
    #[error("bad checksum")]
    BadChecksum,
    /// The packet is an IPv4 fragment or carries an IPv6 Fragment header.
    #[error("fragmented packet")]
    Fragment,
    /// The EtherType is neither IPv4 nor IPv6 (after at most one 802.1Q tag).
    #[error("unsupported EtherType")]
    UnsupportedEtherType,
    /// The IP payload is not UDP (for IPv6: the fixed header's next header is not UDP).
    #[error("not UDP")]
    NotUdp,
    /// Source and destination addresses are of different IP families.
    #[error("address family mismatch")]
    AddressFamilyMismatch,
    /// The output buffer cannot hold the headers plus the payload.
    #[error("buffer too small")]
    BufferTooSmall,
    /// The payload does not fit in the 16-bit length fields of UDP and IP.
    #[error("payload too large")]
    PayloadTooLarge,
}

impl Error {
    /// A stable snake_case label, for metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadVersion => "bad_version",
            Self::BadHeaderLen => "bad_header_len",
            Self::BadLength => "bad_length",
            Self::BadChecksum => "bad_checksum",
            Self::Fragment => "fragment",
            Self::UnsupportedEtherType => "unsupported_ethertype",
            Self::NotUdp => "not_udp",
            Self::AddressFamilyMismatch => "address_family_mismatch",
            Self::BufferTooSmall => "buffer_too_small",
            Self::PayloadTooLarge => "payload_too_large",
        }
    }
}

/// Reads `N` bytes at `at`. Panics if out of bounds, which each view's `check_len` rules out.
fn read_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// Reads a big-endian `u16` at `at`.
fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(read_array(buf, at))
}

/// Writes a big-endian `u16` at `at`.
fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// TTL / hop limit of packets we originate.
const DEFAULT_HOP_LIMIT: u8 = 64;

/// Length of the headers [`write_udp_headers`] writes: untagged Ethernet if `ethernet`, then
/// IPv4 (20 bytes, no options) or IPv6 (40 bytes), then UDP (8 bytes).
#[must_use]
pub const fn headers_len(ethernet: bool, ipv4: bool) -> usize {
    let eth = if ethernet { ethernet::HEADER_LEN } else { 0 };
    let ip = if ipv4 { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
    eth + ip + udp::HEADER_LEN
}

/// Writes Ethernet (if `eth` is given, as `(src, dst)`), IPv4 or IPv6, and UDP headers in front
/// of a payload already at `buf[hdr_len..hdr_len + payload_len]`, where
/// `hdr_len = headers_len(eth.is_some(), dst.is_ipv4())`. Returns `hdr_len`.
///
/// IPv4: IHL 5, DSCP/ECN 0, identification 0 with DF set (RFC 6864 §4.1), TTL 64, header
/// checksum filled. IPv6: traffic class and flow label 0, hop limit 64. The UDP checksum is
/// computed over the pseudo-header and the payload (a computed 0 is sent as `0xffff`). Bytes
/// after the payload are not touched.
///
/// # Errors
///
/// - [`Error::AddressFamilyMismatch`] if `src` and `dst` are of different families.
/// - [`Error::PayloadTooLarge`] if the UDP length or IPv4 total length exceeds 65535.
/// - [`Error::BufferTooSmall`] if `buf` is shorter than `hdr_len + payload_len`.
pub fn write_udp_headers(
    buf: &mut [u8],
    eth: Option<(EthernetAddress, EthernetAddress)>,
    src: SocketAddr,
    dst: SocketAddr,
    payload_len: usize,
) -> Result<usize, Error> {
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(Error::AddressFamilyMismatch);
    }
    let hdr_len = headers_len(eth.is_some(), dst.is_ipv4());
    let eth_len = if eth.is_some() { ethernet::HEADER_LEN } else { 0 };
    let udp_len = udp::HEADER_LEN.checked_add(payload_len).ok_or(Error::PayloadTooLarge)?;
    let ip_len = (hdr_len - eth_len).checked_add(payload_len).ok_or(Error::PayloadTooLarge)?;
    // The IPv6 payload length is the UDP length; the IPv4 total length includes its header.
    let ip_len_field = if dst.is_ipv4() { ip_len } else { udp_len };
    let udp_len = u16::try_from(udp_len).map_err(|_| Error::PayloadTooLarge)?;
    let ip_len_field = u16::try_from(ip_len_field).map_err(|_| Error::PayloadTooLarge)?;
    let frame = buf.get_mut(..eth_len + ip_len).ok_or(Error::BufferTooSmall)?;

    let (eth_buf, ip_buf) = frame.split_at_mut(eth_len);
    if let Some((src_mac, dst_mac)) = eth {
        let mut f = EthernetFrame::new_unchecked(eth_buf);
        f.set_dst_addr(dst_mac);
        f.set_src_addr(src_mac);
        f.set_outer_ethertype(if dst.is_ipv4() { ethernet::ETHERTYPE_IPV4 } else { ethernet::ETHERTYPE_IPV6 });
    }

    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (ip_hdr, udp_buf) = ip_buf.split_at_mut(ipv4::HEADER_LEN);
            let mut ip = Ipv4Packet::new_unchecked(ip_hdr);
            ip.set_version(4);
            ip.set_ihl(5);
            ip.set_dscp(0);
            ip.set_ecn(0);
            ip.set_total_len(ip_len_field);
            ip.set_ident(0);
            ip.clear_flags_offset();
            ip.set_dont_frag(true);
            ip.set_ttl(DEFAULT_HOP_LIMIT);
            ip.set_protocol(IP_PROTOCOL_UDP);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            ip.fill_checksum();
            let mut udp = write_udp_header(udp_buf, src.port(), dst.port(), udp_len);
            udp.fill_checksum_v4(s, d);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let (ip_hdr, udp_buf) = ip_buf.split_at_mut(ipv6::HEADER_LEN);
            let mut ip = Ipv6Packet::new_unchecked(ip_hdr);
            ip.set_version(6);
            ip.set_traffic_class(0);
            ip.set_flow_label(0);
            ip.set_payload_len(ip_len_field);
            ip.set_next_header(IP_PROTOCOL_UDP);
            ip.set_hop_limit(DEFAULT_HOP_LIMIT);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            let mut udp = write_udp_header(udp_buf, src.port(), dst.port(), udp_len);
            udp.fill_checksum_v6(s, d);
        }
        _ => unreachable!("address families were checked equal above"),
    }
    Ok(hdr_len)
}

/// Writes the UDP header fields except the checksum; `buf` holds exactly the datagram.
fn write_udp_header(buf: &mut [u8], src_port: u16, dst_port: u16, len: u16) -> UdpPacket<&mut [u8]> {
    let mut udp = UdpPacket::new_unchecked(buf);
    udp.set_src_port(src_port);
    udp.set_dst_port(dst_port);
    udp.set_len(len);
    udp
}

/// What [`parse_udp`] found in a frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdpMeta {
    /// Source IP address and UDP port.
    pub src: SocketAddr,
    /// Destination IP address and UDP port.
    pub dst: SocketAddr,
    /// Where the UDP payload lies in the frame; always within it.
    pub payload: Range<usize>,
    /// The VLAN identifier if the frame carried an 802.1Q tag.
    pub vlan: Option<u16>,
    /// Source MAC address.
    pub src_mac: EthernetAddress,
    /// Destination MAC address.
    pub dst_mac: EthernetAddress,
}

/// Parses an Ethernet frame (with at most one 802.1Q tag) carrying IPv4 or IPv6 and UDP.
///
/// Checks every length field against the buffer and against the enclosing length, verifies the
/// IPv4 header checksum, and rejects IPv4 fragments and IPv6 packets whose next header is a
/// Fragment header. IPv6 extension headers are not walked: anything but UDP right after the
/// fixed header is [`Error::NotUdp`]. Ethernet padding after the IP packet, and IP payload bytes
/// after the UDP length, are ignored.
///
/// The UDP checksum is *not* verified here; callers that want it use
/// [`UdpPacket::verify_checksum_v4`] / [`UdpPacket::verify_checksum_v6`].
///
/// # Errors
///
/// The view errors ([`Error::Truncated`], [`Error::BadVersion`], [`Error::BadHeaderLen`],
/// [`Error::BadLength`]), then [`Error::BadChecksum`], [`Error::Fragment`],
/// [`Error::UnsupportedEtherType`] and [`Error::NotUdp`].
pub fn parse_udp(frame: &[u8]) -> Result<UdpMeta, Error> {
    let eth = EthernetFrame::new_checked(frame)?;
    let ip_start = eth.header_len();
    let ip_buf = &frame[ip_start..];
    // `udp_range` is the IP payload, relative to `ip_buf`.
    let (src_ip, dst_ip, udp_range): (IpAddr, IpAddr, Range<usize>) = match eth.ethertype() {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(ip_buf)?;
            if !ip.verify_checksum() {
                return Err(Error::BadChecksum);
            }
            if ip.is_fragment() {
                return Err(Error::Fragment);
            }
            if ip.protocol() != IP_PROTOCOL_UDP {
                return Err(Error::NotUdp);
            }
            let range = ip.header_len()..usize::from(ip.total_len());
            (ip.src_addr().into(), ip.dst_addr().into(), range)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(ip_buf)?;
            match ip.next_header() {
                IP_PROTOCOL_UDP => {}
                ipv6::NEXT_HEADER_FRAGMENT => return Err(Error::Fragment),
                _ => return Err(Error::NotUdp),
            }
            let range = ipv6::HEADER_LEN..ip.total_len();
            (ip.src_addr().into(), ip.dst_addr().into(), range)
        }
        _ => return Err(Error::UnsupportedEtherType),
    };
    let udp_start = ip_start + udp_range.start;
    let udp = UdpPacket::new_checked(&ip_buf[udp_range])?;
    Ok(UdpMeta {
        src: SocketAddr::new(src_ip, udp.src_port()),
        dst: SocketAddr::new(dst_ip, udp.dst_port()),
        payload: udp_start + udp::HEADER_LEN..udp_start + usize::from(udp.len()),
        vlan: eth.vlan(),
        src_mac: eth.src_addr(),
        dst_mac: eth.dst_addr(),
    })
}

/// Runs every checked constructor, accessor, checksum verification and [`parse_udp`] on
/// arbitrary bytes, for fuzzers and tests. It must never panic; the only panics are its own
/// assertions of this module's invariants (checksums it fills verify, what [`parse_udp`] finds
/// survives a [`write_udp_headers`] round trip). It allocates; it is not for the data path.
///
/// # Panics
///
/// Only if one of those invariants is broken, which is a bug in this module.
pub fn fuzz_parse(data: &[u8]) {
    use std::hint::black_box;

    let _ = black_box(checksum::sum(data));
    fuzz_udp(data, None);
    for offset in [0, ethernet::HEADER_LEN, ethernet::VLAN_HEADER_LEN] {
        if let Some(rest) = data.get(offset..) {
            fuzz_ipv4(rest);
            fuzz_ipv6(rest);
        }
    }
    if let Ok(f) = EthernetFrame::new_checked(data) {
        black_box((f.dst_addr(), f.src_addr(), f.outer_ethertype(), f.is_vlan_tagged()));
        black_box((f.vlan_tci(), f.vlan(), f.ethertype(), f.header_len(), f.payload()));
        black_box((f.dst_addr().is_unicast(), f.src_addr().to_string()));
    }

    let Ok(meta) = parse_udp(data) else { return };
    let payload = data.get(meta.payload.clone()).expect("parse_udp returns a range inside the frame");
    let eth = Some((meta.src_mac, meta.dst_mac));
    let hdr_len = headers_len(true, meta.dst.is_ipv4());
    let mut out = vec![0; hdr_len + payload.len()];
    out[hdr_len..].copy_from_slice(payload);
    let written = write_udp_headers(&mut out, eth, meta.src, meta.dst, payload.len())
        .expect("a parsed datagram fits its own length fields");
    assert_eq!(written, hdr_len);
    let again = parse_udp(&out).expect("written headers parse");
    assert_eq!((again.src, again.dst), (meta.src, meta.dst));
    assert_eq!(&out[again.payload], payload);
}

/// [`fuzz_parse`] for an IPv4 view, and UDP inside it.
fn fuzz_ipv4(data: &[u8]) {
    use std::hint::black_box;

    let Ok(ip) = Ipv4Packet::new_checked(data) else {
        return;
    };
    black_box((ip.version(), ip.ihl(), ip.header_len(), ip.dscp(), ip.ecn(), ip.total_len()));
    black_box((ip.ident(), ip.dont_frag(), ip.more_frags(), ip.frag_offset(), ip.is_fragment()));
    black_box((ip.ttl(), ip.protocol(), ip.checksum(), ip.verify_checksum(), ip.options()));
    fuzz_udp(ip.payload(), Some((ip.src_addr().into(), ip.dst_addr().into())));

    let mut copy = data.to_vec();
    let mut ip = Ipv4Packet::new_unchecked(&mut copy[..]);
    ip.fill_checksum();
    assert!(ip.verify_checksum(), "a filled IPv4 checksum verifies");
    black_box((ip.options_mut().len(), ip.payload_mut().len()));
}

/// [`fuzz_parse`] for an IPv6 view, and UDP inside it.
fn fuzz_ipv6(data: &[u8]) {
    use std::hint::black_box;

    let Ok(ip) = Ipv6Packet::new_checked(data) else {
        return;
    };
    black_box((ip.version(), ip.traffic_class(), ip.flow_label(), ip.payload_len()));
    black_box((ip.total_len(), ip.next_header(), ip.hop_limit(), ip.payload()));
    fuzz_udp(ip.payload(), Some((ip.src_addr().into(), ip.dst_addr().into())));
}

/// [`fuzz_parse`] for a UDP view, with the enclosing addresses if known.
fn fuzz_udp(data: &[u8], addrs: Option<(IpAddr, IpAddr)>) {
    use std::hint::black_box;
    use std::net::{Ipv4Addr, Ipv6Addr};

    let Ok(udp) = UdpPacket::new_checked(data) else {
        return;
    };
    black_box((udp.src_port(), udp.dst_port(), udp.len(), udp.is_empty(), udp.checksum()));
    black_box(udp.payload());
    let mut copy = data.to_vec();
    let mut udp = UdpPacket::new_unchecked(&mut copy[..]);
    match addrs.unwrap_or((Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into())) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            black_box(udp.verify_checksum_v4(s, d));
            udp.fill_checksum_v4(s, d);
            assert!(udp.verify_checksum_v4(s, d), "a filled UDP/IPv4 checksum verifies");
            assert_ne!(udp.checksum(), 0);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            black_box(udp.verify_checksum_v6(s, d));
            udp.fill_checksum_v6(s, d);
            assert!(udp.verify_checksum_v6(s, d), "a filled UDP/IPv6 checksum verifies");
        }
        (IpAddr::V4(s), IpAddr::V6(d)) | (IpAddr::V6(d), IpAddr::V4(s)) => {
            black_box((udp.verify_checksum_v4(s, s), udp.verify_checksum_v6(d, d)));
        }
    }
    black_box(udp.payload_mut().len());
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const MAC1: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const MAC2: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
    /// Ethernet header 02:..:01 -> 02:..:02 without the EtherType.
    const ETH_ADDRS: &str = "020000000002020000000001";

    /// scapy: Ether/IP(192.168.0.1 -> 192.168.0.199, id=0x1234, DF)/UDP(5000 -> 3478)
    /// /"hello edgerelay"; IPv4 checksum a675, UDP checksum f405.
    const ETH_V4_UDP: &str = "02000000000202000000000108004500002b123440004011a675c0a80001c0a800c7\
                              13880d960017f40568656c6c6f206564676572656c6179";
    /// scapy: Ether/IPv6(2001:db8::1 -> 2001:db8::2, tc=0xb8, fl=0x12345)/UDP(5000 -> 3478)
    /// /"hello edgerelay v6"; UDP checksum a44d.
    const ETH_V6_UDP: &str = "02000000000202000000000186dd6b812345001a114020010db80000000000000000000000012001\
         0db800000000000000000000000213880d96001aa44d68656c6c6f206564676572656c6179207636";
    /// scapy: Ether/Dot1Q(vlan=100, prio=5)/IP(id=1)/UDP(5000 -> 3478)/"vlan".
    const ETH_VLAN_V4_UDP: &str = "0200000000020200000000018100a064080045000020000100004011f8b3c0a80001c0a800c71388\
         0d96000c84c4766c616e";
    /// scapy: IP(10.0.0.1 -> 10.0.0.2, ttl=32, Router Alert option)/UDP(1234 -> 5678)/"opts".
    const V4_OPTIONS_UDP: &str = "46000024000700002011f1bb0a0000010a0000029404000004d2162e000cecef\
                                  6f707473";
    /// scapy: IP(id=9, flags=MF)/UDP(1 -> 2)/"frag0000".
    const V4_FIRST_FRAGMENT: &str = "4500002400092000401146be0a0000010a000002000100020010c38e6672616730303030";
    /// scapy: IP(10.0.0.1 -> 10.0.0.2, id=0, DF, ttl=64)/UDP(1000 -> 2000)/65a17a7a: exactly
    /// what `write_udp_headers` emits; the UDP checksum computes to 0 and is sent as ffff.
    const V4_AS_WRITTEN: &str = "4500002000004000401126cb0a0000010a00000203e807d0000cffff65a17a7a";
    /// scapy: IPv6(2001:db8::1 -> 2001:db8::2, hlim=64)/UDP(1000 -> 2000)/1e2f7a7a, likewise.
    const V6_AS_WRITTEN: &str = "60000000000c114020010db800000000000000000000000120010db8000000000000000000000002\
         03e807d0000cffff1e2f7a7a";

    fn bytes(hex_str: &str) -> Vec<u8> {
        hex::decode(hex_str).unwrap()
    }

    fn with_ethernet(ethertype: u16, packet: &[u8]) -> Vec<u8> {
        let mut frame = bytes(ETH_ADDRS);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(packet);
        frame
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Every test vector as a full Ethernet frame.
    fn frames() -> Vec<Vec<u8>> {
        vec![
            bytes(ETH_V4_UDP),
            bytes(ETH_V6_UDP),
            bytes(ETH_VLAN_V4_UDP),
            with_ethernet(ethernet::ETHERTYPE_IPV4, &bytes(V4_OPTIONS_UDP)),
            with_ethernet(ethernet::ETHERTYPE_IPV4, &bytes(V4_FIRST_FRAGMENT)),
            with_ethernet(ethernet::ETHERTYPE_IPV4, &bytes(V4_AS_WRITTEN)),
            with_ethernet(ethernet::ETHERTYPE_IPV6, &bytes(V6_AS_WRITTEN)),
        ]
    }

    #[test]
    fn parse_ipv4() {
        let frame = bytes(ETH_V4_UDP);
        let meta = parse_udp(&frame).unwrap();
        assert_eq!(meta.src, sa("192.168.0.1:5000"));
        assert_eq!(meta.dst, sa("192.168.0.199:3478"));
        assert_eq!(&frame[meta.payload.clone()], b"hello edgerelay");
        assert_eq!(meta.payload, 42..57);
        assert_eq!(meta.vlan, None);
        assert_eq!((meta.src_mac, meta.dst_mac), (MAC1, MAC2));
    }

    #[test]
    fn parse_ipv6() {
        let frame = bytes(ETH_V6_UDP);
        let meta = parse_udp(&frame).unwrap();
        assert_eq!(meta.src, sa("[2001:db8::1]:5000"));
        assert_eq!(meta.dst, sa("[2001:db8::2]:3478"));
        assert_eq!(&frame[meta.payload], b"hello edgerelay v6");
    }

    #[test]
    fn parse_vlan_tagged_with_ethernet_padding() {
        let mut frame = bytes(ETH_VLAN_V4_UDP);
        frame.resize(60, 0); // minimum Ethernet frame size without FCS
        let meta = parse_udp(&frame).unwrap();
        assert_eq!(meta.vlan, Some(100));
        assert_eq!(meta.dst, sa("192.168.0.199:3478"));
        assert_eq!(&frame[meta.payload], b"vlan");
    }

    #[test]
    fn parse_ipv4_with_options() {
        let frame = with_ethernet(ethernet::ETHERTYPE_IPV4, &bytes(V4_OPTIONS_UDP));
        let meta = parse_udp(&frame).unwrap();
        assert_eq!(meta.src, sa("10.0.0.1:1234"));
        assert_eq!(meta.dst, sa("10.0.0.2:5678"));
        assert_eq!(meta.payload, 14 + 24 + 8..14 + 36);
        assert_eq!(&frame[meta.payload], b"opts");
    }

    #[test]
    fn parse_rejects() {
        let frag = with_ethernet(ethernet::ETHERTYPE_IPV4, &bytes(V4_FIRST_FRAGMENT));
        assert_eq!(parse_udp(&frag), Err(Error::Fragment));

        let mut bad_sum = bytes(ETH_V4_UDP);
        bad_sum[14 + 8] -= 1; // TTL
        assert_eq!(parse_udp(&bad_sum), Err(Error::BadChecksum));

        let mut tcp = bytes(ETH_V4_UDP);
        let mut ip = Ipv4Packet::new_unchecked(&mut tcp[14..]);
        ip.set_protocol(6);
        ip.fill_checksum();
        assert_eq!(parse_udp(&tcp), Err(Error::NotUdp));

        let mut v6_frag = bytes(ETH_V6_UDP);
        v6_frag[14 + 6] = ipv6::NEXT_HEADER_FRAGMENT;
        assert_eq!(parse_udp(&v6_frag), Err(Error::Fragment));
        v6_frag[14 + 6] = 0; // Hop-by-Hop options
        assert_eq!(parse_udp(&v6_frag), Err(Error::NotUdp));

        let mut arp = bytes(ETH_V4_UDP);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_udp(&arp), Err(Error::UnsupportedEtherType));

        let mut v6_in_v4 = bytes(ETH_V6_UDP);
        v6_in_v4[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(parse_udp(&v6_in_v4), Err(Error::BadVersion));

        let mut udp_too_long = bytes(ETH_V4_UDP);
        udp_too_long[14 + 20 + 5] += 1; // UDP length one past the IP payload
        assert_eq!(parse_udp(&udp_too_long), Err(Error::Truncated));
    }

    #[test]
    fn truncation_at_every_length_is_an_error() {
        for frame in frames() {
            for len in 0..frame.len() {
                assert_eq!(parse_udp(&frame[..len]), Err(Error::Truncated), "len {len}");
            }
        }
    }

    #[test]
    fn write_matches_independent_bytes_v4_and_v6() {
        for (packet, src, dst) in [
            (V4_AS_WRITTEN, "10.0.0.1:1000", "10.0.0.2:2000"),
            (V6_AS_WRITTEN, "[2001:db8::1]:1000", "[2001:db8::2]:2000"),
        ] {
            let expected = bytes(packet);
            let hdr_len = headers_len(false, sa(dst).is_ipv4());
            let mut buf = vec![0xee; expected.len() + 3];
            buf[hdr_len..expected.len()].copy_from_slice(&expected[hdr_len..]);
            let n = write_udp_headers(&mut buf, None, sa(src), sa(dst), 4).unwrap();
            assert_eq!(n, hdr_len);
            assert_eq!(&buf[..expected.len()], &expected[..]);
            assert_eq!(&buf[expected.len()..], &[0xee; 3], "bytes after the payload untouched");

            let ethertype = if sa(dst).is_ipv4() { ethernet::ETHERTYPE_IPV4 } else { ethernet::ETHERTYPE_IPV6 };
            let expected = with_ethernet(ethertype, &expected);
            let hdr_len = headers_len(true, sa(dst).is_ipv4());
            let mut buf = vec![0; expected.len()];
            buf[hdr_len..].copy_from_slice(&expected[hdr_len..]);
            let n = write_udp_headers(&mut buf, Some((MAC1, MAC2)), sa(src), sa(dst), 4).unwrap();
            assert_eq!(n, hdr_len);
            assert_eq!(buf, expected);
        }
    }

    #[test]
    fn write_then_parse_round_trip() {
        let payload = b"\x80\x60 an RTP-ish payload of odd length";
        for (src, dst) in
            [("192.0.2.10:40000", "198.51.100.7:8000"), ("[2001:db8::10]:40000", "[2001:db8:ffff::7]:8000")]
        {
            let (src, dst) = (sa(src), sa(dst));
            for eth in [None, Some((MAC1, MAC2))] {
                let hdr_len = headers_len(eth.is_some(), dst.is_ipv4());
                let mut buf = vec![0; hdr_len + payload.len()];
                buf[hdr_len..].copy_from_slice(payload);
                assert_eq!(write_udp_headers(&mut buf, eth, src, dst, payload.len()), Ok(hdr_len));

                let ip_buf = if eth.is_some() {
                    let meta = parse_udp(&buf).unwrap();
                    assert_eq!((meta.src, meta.dst, meta.vlan), (src, dst, None));
                    assert_eq!((meta.src_mac, meta.dst_mac), (MAC1, MAC2));
                    assert_eq!(&buf[meta.payload], payload);
                    &buf[ethernet::HEADER_LEN..]
                } else {
                    &buf[..]
                };
                match (src.ip(), dst.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        let ip = Ipv4Packet::new_checked(ip_buf).unwrap();
                        assert!(ip.verify_checksum() && ip.dont_frag() && !ip.is_fragment());
                        assert_eq!((ip.ttl(), ip.src_addr(), ip.dst_addr()), (64, s, d));
                        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                        assert!(udp.verify_checksum_v4(s, d));
                        assert_eq!(udp.payload(), payload);
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        let ip = Ipv6Packet::new_checked(ip_buf).unwrap();
                        assert_eq!((ip.hop_limit(), ip.src_addr(), ip.dst_addr()), (64, s, d));
                        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                        assert!(udp.verify_checksum_v6(s, d));
                        assert_eq!(udp.payload(), payload);
                    }
                    _ => unreachable!(),
                }
            }
        }
    }

    #[test]
    fn write_errors() {
        let mut buf = [0u8; 128];
        assert_eq!(
            write_udp_headers(&mut buf, None, sa("10.0.0.1:1"), sa("[::1]:2"), 0),
            Err(Error::AddressFamilyMismatch)
        );
        for eth in [None, Some((MAC1, MAC2))] {
            for (src, dst) in [("10.0.0.1:1", "10.0.0.2:2"), ("[::1]:1", "[::2]:2")] {
                let need = headers_len(eth.is_some(), sa(dst).is_ipv4()) + 5;
                for len in 0..need {
                    assert_eq!(
                        write_udp_headers(&mut buf[..len], eth, sa(src), sa(dst), 5),
                        Err(Error::BufferTooSmall)
                    );
                }
                assert!(write_udp_headers(&mut buf[..need], eth, sa(src), sa(dst), 5).is_ok());
            }
        }
        let mut big = vec![0u8; 70_000];
        let (s4, d4) = (sa("10.0.0.1:1"), sa("10.0.0.2:2"));
        assert!(write_udp_headers(&mut big, None, s4, d4, 65_535 - 28).is_ok());
        assert_eq!(write_udp_headers(&mut big, None, s4, d4, 65_535 - 28 + 1), Err(Error::PayloadTooLarge));
        let (s6, d6) = (sa("[::1]:1"), sa("[::2]:2"));
        assert!(write_udp_headers(&mut big, None, s6, d6, 65_535 - 8).is_ok());
        let meta_len = Ipv6Packet::new_checked(&big[..]).unwrap().payload_len();
        assert_eq!(meta_len, 65_535);
        assert_eq!(write_udp_headers(&mut big, None, s6, d6, 65_535 - 8 + 1), Err(Error::PayloadTooLarge));
        assert_eq!(write_udp_headers(&mut big, None, s6, d6, usize::MAX), Err(Error::PayloadTooLarge));
    }

    #[test]
    fn error_labels_are_distinct() {
        let all = [
            Error::Truncated,
            Error::BadVersion,
            Error::BadHeaderLen,
            Error::BadLength,
            Error::BadChecksum,
            Error::Fragment,
            Error::UnsupportedEtherType,
            Error::NotUdp,
            Error::AddressFamilyMismatch,
            Error::BufferTooSmall,
            Error::PayloadTooLarge,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|e| e.as_str()).collect();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn constants() {
        assert_eq!(headers_len(true, true), 42);
        assert_eq!(headers_len(false, true), 28);
        assert_eq!(headers_len(true, false), 62);
        assert_eq!(headers_len(false, false), 48);
        assert_eq!(Ipv4Addr::from([0; 4]), Ipv4Addr::UNSPECIFIED);
        assert_eq!(Ipv6Addr::from([0; 16]), Ipv6Addr::UNSPECIFIED);
    }

    /// xorshift64*, so the "random" inputs are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    #[test]
    fn fuzz_parse_on_vectors_truncations_and_mutations() {
        let mut inputs: Vec<Vec<u8>> = frames();
        inputs.push(bytes(V4_OPTIONS_UDP));
        inputs.push(bytes(V6_AS_WRITTEN));
        inputs.extend([vec![], vec![0xff; 100], vec![0; 100]]);
        for input in &inputs {
            for len in 0..=input.len() {
                fuzz_parse(&input[..len]);
            }
            for i in 0..input.len() {
                for v in [0x00, 0x01, 0x05, 0x0f, 0x45, 0x60, 0x7f, 0x80, 0xff] {
                    let mut m = input.clone();
                    m[i] = v;
                    fuzz_parse(&m);
                }
            }
        }
    }

    #[test]
    fn fuzz_parse_on_seeded_random_inputs() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let seeds = frames();
        for _ in 0..20_000 {
            let mut m = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            let len = rng.below(m.len() + 1);
            fuzz_parse(&m[..len]);
            fuzz_parse(&m);
        }
        for _ in 0..2_000 {
            let len = rng.below(128);
            let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            fuzz_parse(&random);
        }
    }
}
