//! The Internet checksum (RFC 1071) and the UDP pseudo-headers.
//!
//! [`sum`] returns the folded 16-bit one's-complement sum, *not* its complement, so partial sums
//! (pseudo-header, header, payload) can be [`combine`]d before the final `!`. A checksum field
//! is valid when the sum over the covered bytes, field included, is `0xffff`.
//!
//! Speed: RFC 1071 §2(B) lets us add wider words and fold at the end, because
//! `2^16 ≡ 1 (mod 0xffff)`. We add big-endian `u32` words into a `u64`, which cannot overflow
//! below 16 GiB of input, and fold the carries once.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide accumulator into a 16-bit one's-complement sum (end-around carry).
const fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves `acc <= 0xffff`.
    acc as u16
}

/// Adds `data` as big-endian 16-bit words (an odd trailing byte is padded with zero) into a
/// wide, unfolded accumulator.
fn accumulate(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [] => {}
        [a] => acc += u64::from(a) << 8,
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        _ => unreachable!("chunks_exact(4) leaves at most 3 bytes"),
    }
    acc
}

/// The one's-complement sum of `data` as 16-bit big-endian words (RFC 1071), folded but not
/// complemented. An odd trailing byte is padded with a zero byte.
///
/// An odd-length slice may only be the *last* part of a combined sum.
#[must_use]
pub fn sum(data: &[u8]) -> u16 {
    fold(accumulate(data))
}

/// One's-complement sum of several partial [`sum`]s.
#[must_use]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv4 pseudo-header (RFC 768): source, destination, zero, protocol, length.
#[must_use]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let mut acc = accumulate(&src.octets()) + accumulate(&dst.octets());
    acc += u64::from(protocol) + u64::from(length);
    fold(acc)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, 32-bit upper-layer
/// length, three zero bytes, next header.
#[must_use]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let mut acc = accumulate(&src.octets()) + accumulate(&dst.octets());
    acc += u64::from(length) + u64::from(next_header);
    fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward 16-bit-at-a-time RFC 1071 reference.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_section_3_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let data = hex::decode("0001f203f4f5f6f7").unwrap();
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(!sum(&data), 0x220d);
    }

    #[test]
    fn classic_ipv4_header_checksum() {
        // The Wikipedia "IPv4 header checksum" example; the field holds b861.
        let hdr = hex::decode("450000730000400040110000c0a80001c0a800c7").unwrap();
        assert_eq!(!sum(&hdr), 0xb861);
        let with_field = hex::decode("45000073000040004011b861c0a80001c0a800c7").unwrap();
        assert_eq!(sum(&with_field), 0xffff);
    }

    #[test]
    fn matches_reference_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(181) ^ 0xa5) as u8).collect();
        for start in 0..4 {
            for end in start..data.len() {
                assert_eq!(sum(&data[start..end]), reference(&data[start..end]));
            }
        }
        assert_eq!(sum(&[0xff; 1500]), reference(&[0xff; 1500]));
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn combine_equals_contiguous_sum_at_even_split() {
        let data: Vec<u8> = (0..=255u8).collect();
        for split in (0..data.len()).step_by(2) {
            let parts = [sum(&data[..split]), sum(&data[split..])];
            assert_eq!(combine(&parts), sum(&data));
        }
    }

    #[test]
    fn pseudo_headers_match_their_byte_layout() {
        let (s4, d4) = (Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 199));
        let v4 = hex::decode("c0a80001c0a800c700110017").unwrap();
        assert_eq!(pseudo_header_v4(s4, d4, 17, 0x17), sum(&v4));

        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut v6 = Vec::new();
        v6.extend_from_slice(&s6.octets());
        v6.extend_from_slice(&d6.octets());
        v6.extend_from_slice(&0x0001_001au32.to_be_bytes());
        v6.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(pseudo_header_v6(s6, d6, 17, 0x0001_001a), sum(&v6));
    }
}
