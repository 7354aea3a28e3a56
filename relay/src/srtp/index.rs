//! The numbers that name an SRTP or SRTCP packet: the RTP sequence number, the rollover counter,
//! the 48-bit SRTP packet index and the 31-bit SRTCP index (RFC 3711 §3.3.1, §3.4).
//!
//! Each is a newtype with a checked constructor, so an out-of-range index cannot be built, and
//! the conversions between them are methods ([`SrtpIndex::from_parts`], [`SrtpIndex::roc`],
//! [`SrtpIndex::seq`]) rather than shifts and `as` casts at every call site.
#![forbid(unsafe_code)]

use std::fmt;

use super::Error;

/// A 16-bit RTP sequence number (RFC 3550 §5.1). Every `u16` is one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNum(u16);

impl SeqNum {
    /// The sequence number `v`.
    pub const fn new(v: u16) -> Self {
        SeqNum(v)
    }

    /// The raw value.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl From<u16> for SeqNum {
    fn from(v: u16) -> Self {
        SeqNum(v)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A 32-bit SRTP rollover counter: how many times the sequence number wrapped (RFC 3711
/// §3.3.1). Every `u32` is one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Roc(u32);

impl Roc {
    /// The highest ROC; the stream must be rekeyed before the sequence number wraps here.
    pub const MAX: Roc = Roc(u32::MAX);

    /// The rollover counter `v`.
    pub const fn new(v: u32) -> Self {
        Roc(v)
    }

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The previous ROC, or ROC 0 at 0.
    pub const fn saturating_prev(self) -> Self {
        Roc(self.0.saturating_sub(1))
    }

    /// The next ROC, or [`Roc::MAX`] at the maximum.
    pub const fn saturating_next(self) -> Self {
        Roc(self.0.saturating_add(1))
    }
}

impl From<u32> for Roc {
    fn from(v: u32) -> Self {
        Roc(v)
    }
}

impl fmt::Display for Roc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A 48-bit SRTP packet index, `i = 2^16 · ROC + SEQ` (RFC 3711 §3.3.1). Always below 2^48.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrtpIndex(u64);

impl SrtpIndex {
    /// The largest index (ROC 2^32 − 1, SEQ 2^16 − 1).
    pub const MAX: SrtpIndex = SrtpIndex((1 << 48) - 1);

    /// The index `v`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexExhausted`] if `v` ≥ 2^48.
    pub const fn new(v: u64) -> Result<Self, Error> {
        if v > Self::MAX.0 {
            Err(Error::IndexExhausted)
        } else {
            Ok(SrtpIndex(v))
        }
    }

    /// The low 48 bits of `v` as an index. For values that are indexes by construction (a
    /// replay window's highest, an estimate); [`SrtpIndex::new`] checks instead.
    pub const fn new_truncating(v: u64) -> Self {
        SrtpIndex(v & Self::MAX.0)
    }

    /// The index of the packet with sequence number `seq` in rollover period `roc`.
    pub const fn from_parts(roc: Roc, seq: SeqNum) -> Self {
        // 32 + 16 bits: always below 2^48.
        SrtpIndex(((roc.0 as u64) << 16) | seq.0 as u64)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The rollover counter: the high 32 bits.
    pub const fn roc(self) -> Roc {
        Roc((self.0 >> 16) as u32)
    }

    /// The sequence number: the low 16 bits.
    pub const fn seq(self) -> SeqNum {
        SeqNum(self.0 as u16)
    }

    /// The 6 big-endian bytes of the index, as the AES-CM and GCM IVs take them
    /// (RFC 3711 §4.1.1, RFC 7714 §8.1).
    pub const fn to_be_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }
}

impl TryFrom<u64> for SrtpIndex {
    type Error = Error;

    fn try_from(v: u64) -> Result<Self, Error> {
        SrtpIndex::new(v)
    }
}

impl From<SrtpIndex> for u64 {
    fn from(i: SrtpIndex) -> u64 {
        i.0
    }
}

impl fmt::Display for SrtpIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A 31-bit SRTCP index (RFC 3711 §3.4). Always below 2^31.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrtcpIndex(u32);

impl SrtcpIndex {
    /// The largest index, 2^31 − 1.
    pub const MAX: SrtcpIndex = SrtcpIndex(0x7fff_ffff);

    /// The index `v`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexExhausted`] if `v` ≥ 2^31.
    pub const fn new(v: u32) -> Result<Self, Error> {
        if v > Self::MAX.0 {
            Err(Error::IndexExhausted)
        } else {
            Ok(SrtcpIndex(v))
        }
    }

    /// The index in the low 31 bits of the SRTCP trailer word `E ‖ index` (RFC 3711 §3.4); the
    /// E flag is ignored.
    pub const fn from_trailer_word(word: u32) -> Self {
        SrtcpIndex(word & Self::MAX.0)
    }

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for SrtcpIndex {
    type Error = Error;

    fn try_from(v: u32) -> Result<Self, Error> {
        SrtcpIndex::new(v)
    }
}

impl TryFrom<u64> for SrtcpIndex {
    type Error = Error;

    fn try_from(v: u64) -> Result<Self, Error> {
        u32::try_from(v).map_err(|_| Error::IndexExhausted).and_then(SrtcpIndex::new)
    }
}

impl From<SrtcpIndex> for u64 {
    fn from(i: SrtcpIndex) -> u64 {
        u64::from(i.0)
    }
}

impl fmt::Display for SrtcpIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtp_index_parts() {
        // RFC 7714 §16.1.1: ROC 0, SEQ 0xf17b.
        let i = SrtpIndex::from_parts(Roc::new(0), SeqNum::new(0xf17b));
        assert_eq!(i.get(), 0xf17b);
        assert_eq!(i.to_be_bytes(), [0, 0, 0, 0, 0xf1, 0x7b]);
        let i = SrtpIndex::new(0x1234_5678_9abc).unwrap();
        assert_eq!((i.roc(), i.seq()), (Roc::new(0x1234_5678), SeqNum::new(0x9abc)));
        assert_eq!(SrtpIndex::from_parts(i.roc(), i.seq()), i);
        assert_eq!(i.to_be_bytes(), [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
        let max = SrtpIndex::from_parts(Roc::MAX, SeqNum::new(u16::MAX));
        assert_eq!(max, SrtpIndex::MAX);
        assert_eq!(max.get(), (1 << 48) - 1);
        assert_eq!(SrtpIndex::new(1 << 48), Err(Error::IndexExhausted));
        assert_eq!(SrtpIndex::try_from(u64::MAX), Err(Error::IndexExhausted));
        assert_eq!(u64::from(max), (1 << 48) - 1);
        assert_eq!(SrtpIndex::new_truncating(u64::MAX), SrtpIndex::MAX);
        assert_eq!(SrtpIndex::new_truncating((1 << 48) | 5).get(), 5);
    }

    #[test]
    fn srtcp_index_range() {
        assert_eq!(SrtcpIndex::new(0x7fff_ffff).map(SrtcpIndex::get), Ok(0x7fff_ffff));
        assert_eq!(SrtcpIndex::new(0x8000_0000), Err(Error::IndexExhausted));
        assert_eq!(SrtcpIndex::try_from(1u64 << 32), Err(Error::IndexExhausted));
        assert_eq!(SrtcpIndex::try_from(0x5d4u64), Ok(SrtcpIndex::new(0x5d4).unwrap()));
        // RFC 7714 §17.1 trailer 0x800005d4: E = 1, index 0x5d4.
        assert_eq!(SrtcpIndex::from_trailer_word(0x8000_05d4).get(), 0x5d4);
        assert_eq!(u64::from(SrtcpIndex::MAX), 0x7fff_ffff);
    }

    #[test]
    fn roc_saturates() {
        assert_eq!(Roc::new(0).saturating_prev(), Roc::new(0));
        assert_eq!(Roc::MAX.saturating_next(), Roc::MAX);
        assert_eq!(Roc::new(7).saturating_next().saturating_prev(), Roc::new(7));
        assert_eq!(SeqNum::from(9).to_string(), "9");
    }
}
