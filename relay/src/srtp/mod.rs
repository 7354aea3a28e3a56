//! SRTP and SRTCP packet protection (RFC 3711) for the three DTLS-SRTP profiles the relay
//! negotiates: `AES_CM_128_HMAC_SHA1_80`, `AES_CM_128_HMAC_SHA1_32` (RFC 5764 §4.1.2) and
//! `AEAD_AES_128_GCM` (RFC 7714).
//!
//! This is the per-packet path of the relay, so the split is: [`SessionKeys`] is immutable key
//! material (derived once, shared behind an `Arc`), and the per-stream state — [`RtpReceiver`],
//! [`RtcpReceiver`], [`RtpSender`] — is small `Copy` data owned by the caller. Packets are
//! transformed in place in caller-owned buffers.
//!
//! # Invariants
//!
//! - `protect_*` / `unprotect_*` never allocate, never lock and never panic, whatever the bytes.
//!   The AES key schedules, the keyed HMAC-SHA1 state and the AES-GCM key (`ring`) are built
//!   once in [`SessionKeys::new`]; a packet only clones the keyed HMAC state (a stack copy).
//! - `unprotect_*` leaves the buffer byte-for-byte unchanged unless the packet authenticated, and
//!   touches the receiver state only after authentication and decryption succeeded. The replay
//!   window is consulted *before* authenticating, as a cheap reject (RFC 3711 §3.3.2).
//! - The RTP header (fixed part, CSRCs, extension) is never encrypted (RFC 3711 §3.1). For AES-CM
//!   the tag covers header ‖ encrypted payload ‖ ROC (RFC 3711 §4.2); for GCM the header is the
//!   AEAD associated data (RFC 7714 §8.2).
//! - One replay-window type ([`ReplayWindow`]) and one ROC estimator ([`estimate_index`],
//!   RFC 3711 Appendix A); everything else calls them.
//! - Tags are compared in constant time (`subtle`, or AES-GCM's own tag check).
//! - Headers are read through the zero-copy views [`RtpPacket`] and [`RtcpPacket`] (and a
//!   decrypted compound RTCP packet through [`rtcp::Compound`]); sequence
//!   numbers, ROCs and indexes are the newtypes [`SeqNum`], [`Roc`], [`SrtpIndex`] and
//!   [`SrtcpIndex`], converted by their methods, never by shifts and casts.
//!
//! # Scope and decisions
//!
//! - Key derivation rate is 0 (the only value DTLS-SRTP uses), so session keys never change for
//!   the life of a [`SessionKeys`]; no MKI; no RFC 6904 header-extension encryption; no cryptex.
//! - SRTCP is always sent encrypted (E = 1). On receive an authenticated SRTCP packet with E = 0
//!   (RFC 3711 §3.4 allows it) is **accepted** and returned as-is: the E flag is covered by the
//!   tag, so an attacker cannot strip encryption, and rejecting it would only break peers that
//!   legitimately send authenticated-only SRTCP.
//! - SRTCP indexes are 31 bits; [`SessionKeys::protect_rtcp`] refuses an index ≥ 2^31
//!   ([`Error::IndexExhausted`]): the caller must rekey (RFC 3711 §3.3.1).
#![forbid(unsafe_code)]

mod header;
mod index;
mod replay;
pub mod rtcp;
mod session;

pub use header::{fuzz_views, RtcpPacket, RtpPacket, RTCP_HEADER_LEN, RTP_HEADER_LEN};
pub use index::{Roc, SeqNum, SrtcpIndex, SrtpIndex};
pub use replay::{estimate_index, ReplayWindow, RtcpReceiver, RtpReceiver, RtpSender};
pub use session::{fuzz_unprotect, SessionKeys, Unprotected};

use std::fmt;
use std::str::FromStr;

/// Largest SRTCP index (31 bits, RFC 3711 §3.4): [`SrtcpIndex::MAX`] as a `u32`.
pub const SRTCP_INDEX_MAX: u32 = SrtcpIndex::MAX.get();
/// Largest SRTP packet index (48 bits: ROC ‖ SEQ, RFC 3711 §3.3.1): [`SrtpIndex::MAX`] as a
/// `u64`.
pub const SRTP_INDEX_MAX: u64 = SrtpIndex::MAX.get();

/// Why a packet could not be protected or unprotected.
///
/// Small and `Copy`: it doubles as the per-packet drop reason and metric label ([`Error::label`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The packet is shorter than its fixed header, CSRC list, header extension, or the SRTP/SRTCP
    /// trailer (tag, E flag and SRTCP index) require.
    #[error("packet too short")]
    TooShort,
    /// The RTP/RTCP version field is not 2 (RFC 3550 §5.1, §6.4.1).
    #[error("RTP/RTCP version is not 2")]
    BadVersion,
    /// The caller's buffer cannot hold the protected packet (plaintext plus tag, plus the SRTCP
    /// index), or the given plaintext length exceeds the buffer.
    #[error("buffer too small for the protected packet")]
    BufferTooSmall,
    /// The payload exceeds what the cipher may protect in one packet (AES-CM keystream of 2^16
    /// blocks, RFC 3711 §4.1.1; for AES-GCM 64 KiB, the size of the stack copy that keeps a
    /// rejected packet unchanged). Unreachable for UDP datagrams.
    #[error("payload too long for one SRTP packet")]
    TooLong,
    /// The master key or master salt length does not match the profile (RFC 3711 §8.2,
    /// RFC 7714 §12).
    #[error("master key or salt has the wrong length for the profile")]
    BadKeyLength,
    /// A profile name or DTLS-SRTP protection profile id that this module does not implement.
    #[error("unknown SRTP protection profile")]
    UnknownProfile,
    /// The authentication tag did not verify: wrong key, wrong ROC estimate, or tampering. The
    /// buffer is unchanged.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// The packet index was already received (replay, RFC 3711 §3.3.2).
    #[error("replayed packet")]
    Replayed,
    /// The packet index is further behind the highest received index than the replay window
    /// reaches, so it cannot be told apart from a replay (RFC 3711 §3.3.2).
    #[error("packet older than the replay window")]
    TooOld,
    /// The index is out of range: an SRTCP index ≥ 2^31 or an SRTP index ≥ 2^48. The key must be
    /// replaced (RFC 3711 §3.3.1, §9.2).
    #[error("SRTP/SRTCP index exhausted; rekey")]
    IndexExhausted,
    /// [`SessionKeys::unprotect_rtp_at`] was given an index whose low 16 bits are not the
    /// packet's sequence number.
    #[error("packet index does not match the RTP sequence number")]
    IndexMismatch,
}

impl Error {
    /// Stable snake_case name, for metric labels and structured logs.
    pub const fn label(self) -> &'static str {
        match self {
            Error::TooShort => "too_short",
            Error::BadVersion => "bad_version",
            Error::BufferTooSmall => "buffer_too_small",
            Error::TooLong => "too_long",
            Error::BadKeyLength => "bad_key_length",
            Error::UnknownProfile => "unknown_profile",
            Error::AuthFailed => "auth_failed",
            Error::Replayed => "replayed",
            Error::TooOld => "too_old",
            Error::IndexExhausted => "index_exhausted",
            Error::IndexMismatch => "index_mismatch",
        }
    }
}

/// An SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// AES-128 counter mode, HMAC-SHA1 truncated to 80 bits (RTP and RTCP).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 truncated to 32 bits for RTP and 80 bits for RTCP
    /// (RFC 5764 §4.1.2; libsrtp does the same).
    AesCm128HmacSha1_32,
    /// AEAD_AES_128_GCM with a 128-bit tag (RFC 7714).
    AeadAes128Gcm,
}

impl Profile {
    /// Every supported profile, in DTLS-SRTP id order.
    pub const ALL: [Profile; 3] = [Profile::AesCm128HmacSha1_80, Profile::AesCm128HmacSha1_32, Profile::AeadAes128Gcm];

    /// Master key length in bytes.
    pub const fn master_key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes: 112 bits for AES-CM (RFC 3711 §8.2), 96 bits for GCM
    /// (RFC 7714 §12).
    pub const fn master_salt_len(self) -> usize {
        match self {
            Profile::AesCm128HmacSha1_80 | Profile::AesCm128HmacSha1_32 => 14,
            Profile::AeadAes128Gcm => 12,
        }
    }

    /// SRTP authentication tag length in bytes.
    pub const fn rtp_tag_len(self) -> usize {
        match self {
            Profile::AesCm128HmacSha1_80 => 10,
            Profile::AesCm128HmacSha1_32 => 4,
            Profile::AeadAes128Gcm => 16,
        }
    }

    /// SRTCP authentication tag length in bytes. `SHA1_32` still uses an 80-bit SRTCP tag
    /// (RFC 5764 §4.1.2).
    pub const fn rtcp_tag_len(self) -> usize {
        match self {
            Profile::AesCm128HmacSha1_80 | Profile::AesCm128HmacSha1_32 => 10,
            Profile::AeadAes128Gcm => 16,
        }
    }

    /// Bytes SRTP adds to an RTP packet (the tag; no MKI).
    pub const fn rtp_overhead(self) -> usize {
        self.rtp_tag_len()
    }

    /// Bytes SRTCP adds to an RTCP packet: the tag plus the 32-bit E flag ‖ SRTCP index.
    pub const fn rtcp_overhead(self) -> usize {
        self.rtcp_tag_len() + 4
    }

    /// DTLS-SRTP protection profile id (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub const fn id(self) -> u16 {
        match self {
            Profile::AesCm128HmacSha1_80 => 0x0001,
            Profile::AesCm128HmacSha1_32 => 0x0002,
            Profile::AeadAes128Gcm => 0x0007,
        }
    }

    /// The profile with DTLS-SRTP id `id`, if supported.
    pub const fn from_id(id: u16) -> Option<Profile> {
        match id {
            0x0001 => Some(Profile::AesCm128HmacSha1_80),
            0x0002 => Some(Profile::AesCm128HmacSha1_32),
            0x0007 => Some(Profile::AeadAes128Gcm),
            _ => None,
        }
    }

    /// The SDES crypto-suite name (RFC 4568 §6.2, RFC 7714 §14.1).
    pub const fn name(self) -> &'static str {
        match self {
            Profile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Profile::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Profile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    /// Parses the exact names returned by [`Profile::name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL.into_iter().find(|p| p.name() == s).ok_or(Error::UnknownProfile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_parameters() {
        use Profile::*;
        assert_eq!(Profile::ALL.map(|p| (p.master_key_len(), p.master_salt_len())), [(16, 14), (16, 14), (16, 12)]);
        assert_eq!(Profile::ALL.map(Profile::rtp_tag_len), [10, 4, 16]);
        assert_eq!(Profile::ALL.map(Profile::rtcp_tag_len), [10, 10, 16]);
        assert_eq!(Profile::ALL.map(Profile::rtp_overhead), [10, 4, 16]);
        assert_eq!(Profile::ALL.map(Profile::rtcp_overhead), [14, 14, 20]);
        assert_eq!(Profile::ALL.map(Profile::id), [1, 2, 7]);
        for p in Profile::ALL {
            assert_eq!(Profile::from_id(p.id()), Some(p));
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!(Profile::from_id(0x0008), None);
        assert_eq!("aes_cm_128_hmac_sha1_80".parse::<Profile>(), Err(Error::UnknownProfile));
        assert_eq!(AeadAes128Gcm.name(), "AEAD_AES_128_GCM");
        assert_eq!(AesCm128HmacSha1_32.name(), "AES_CM_128_HMAC_SHA1_32");
    }

    #[test]
    fn error_labels_are_distinct() {
        let all = [
            Error::TooShort,
            Error::BadVersion,
            Error::BufferTooSmall,
            Error::TooLong,
            Error::BadKeyLength,
            Error::UnknownProfile,
            Error::AuthFailed,
            Error::Replayed,
            Error::TooOld,
            Error::IndexExhausted,
            Error::IndexMismatch,
        ];
        let mut labels: Vec<_> = all.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }
}
