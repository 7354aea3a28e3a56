//! The few RTP/RTCP header fields SRTP needs, read straight from the packet bytes
//! (RFC 3550 §5.1, §5.3.1, §6.4.1).
//!
//! Every accessor bounds-checks against the slice it is given and returns an [`Error`] instead of
//! panicking; none of them allocates or copies the packet.
#![forbid(unsafe_code)]

use super::Error;

/// Length of the fixed RTP header (RFC 3550 §5.1).
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the RTCP header plus sender SSRC: the prefix SRTCP never encrypts (RFC 3711 §3.4).
pub const RTCP_HEADER_LEN: usize = 8;

/// Big-endian `u16` at `off`, if the slice is long enough.
fn be_u16(pkt: &[u8], off: usize) -> Option<u16> {
    pkt.get(off..)?.first_chunk().map(|b| u16::from_be_bytes(*b))
}

/// Big-endian `u32` at `off`, if the slice is long enough.
fn be_u32(pkt: &[u8], off: usize) -> Option<u32> {
    pkt.get(off..)?.first_chunk().map(|b| u32::from_be_bytes(*b))
}

/// Checks the RTP version and minimum length shared by every accessor.
fn check_rtp(pkt: &[u8]) -> Result<(), Error> {
    let first = *pkt.first().ok_or(Error::TooShort)?;
    if first >> 6 != 2 {
        return Err(Error::BadVersion);
    }
    if pkt.len() < RTP_HEADER_LEN {
        return Err(Error::TooShort);
    }
    Ok(())
}

/// Length of the RTP header including the CSRC list and the header extension
/// (RFC 3550 §5.1, §5.3.1). This is the part SRTP leaves in clear.
pub fn rtp_header_len(pkt: &[u8]) -> Result<usize, Error> {
    check_rtp(pkt)?;
    let first = pkt[0];
    let csrc_count = usize::from(first & 0x0f);
    let mut len = RTP_HEADER_LEN + 4 * csrc_count;
    if first & 0x10 != 0 {
        // 16-bit profile-defined id, then the extension length in 32-bit words.
        let words = be_u16(pkt, len + 2).ok_or(Error::TooShort)?;
        len += 4 + 4 * usize::from(words);
    }
    if len > pkt.len() {
        return Err(Error::TooShort);
    }
    Ok(len)
}

/// RTP sequence number.
pub fn rtp_seq(pkt: &[u8]) -> Result<u16, Error> {
    check_rtp(pkt)?;
    be_u16(pkt, 2).ok_or(Error::TooShort)
}

/// RTP synchronization source.
pub fn rtp_ssrc(pkt: &[u8]) -> Result<u32, Error> {
    check_rtp(pkt)?;
    be_u32(pkt, 8).ok_or(Error::TooShort)
}

/// SSRC of the sender of the first packet of a compound RTCP packet (RFC 3550 §6.4.1); SRTCP
/// uses it for the IV (RFC 3711 §4.1.1, RFC 7714 §9.1).
pub fn rtcp_sender_ssrc(pkt: &[u8]) -> Result<u32, Error> {
    let first = *pkt.first().ok_or(Error::TooShort)?;
    if first >> 6 != 2 {
        return Err(Error::BadVersion);
    }
    be_u32(pkt, 4).ok_or(Error::TooShort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).expect("valid hex")
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
}
