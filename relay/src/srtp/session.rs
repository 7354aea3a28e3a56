//! Session keys and the packet transforms: SRTP/SRTCP with AES-CM + HMAC-SHA1 (RFC 3711) and
//! with AEAD_AES_128_GCM (RFC 7714).
//!
//! # Invariants
//!
//! - [`SessionKeys`] is immutable after [`SessionKeys::new`]; for SRTP it holds the expanded
//!   AES key schedule, the pre-keyed HMAC-SHA1 state or the AES-GCM instance, so an SRTP packet
//!   costs no key setup and no allocation (the keyed HMAC is cloned on the stack; the CTR
//!   keystream borrows the key schedule).
//! - SRTCP keys are derived on the stack for each SRTCP packet from the master key and salt
//!   it keeps instead (with kdr = 0 they never change, RFC 3711 §4.3.1). This trades about
//!   0.3 µs per SRTCP packet (protecting 100 bytes took 571 instead of 275 ns with AES-CM, 487
//!   instead of 259 ns with GCM), on a few percent of a stream's packets (RFC 3550 §6.2), for
//!   memory: a held SRTCP transform is 880 bytes (the `aes` crate's key schedule reserves 704
//!   bytes for its software fallback even where AES-NI runs), and a session holds two
//!   directions. A forged SRTCP packet also costs the derivation before its tag fails; it can
//!   only come from a session's own 5-tuple (the XDP filter and the engine drop every other
//!   source first), and on the XDP backend within that source's packet limit.
//! - Every length is checked before any byte is written; all slicing below happens after those
//!   checks, so no input can make these functions panic.
//! - A rejected packet leaves the buffer unchanged. AES-CM authenticates before it decrypts and
//!   returns early on failure; GCM (`ring`) decrypts while it authenticates, so the ciphertext is
//!   saved on the stack first and put back on failure (`GcmKeys::open`). The one place that must
//!   rearrange bytes to authenticate (GCM SRTCP with E = 0) puts them back before returning.
#![forbid(unsafe_code)]

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aes::Aes128;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::header::{RtcpPacket, RtpPacket, RTCP_HEADER_LEN};
use super::index::{Roc, SeqNum, SrtcpIndex, SrtpIndex};
use super::replay::{RtcpReceiver, RtpReceiver};
use super::{Error, Profile};

type HmacSha1 = Hmac<Sha1>;
/// AES-128 in counter mode over a borrowed key schedule: no per-packet key expansion.
type AesCtrCore<'a> = ctr::CtrCore<&'a Aes128, ctr::flavors::Ctr128BE>;

/// The E flag of the SRTCP trailer word (RFC 3711 §3.4).
const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// An AES-CM keystream may not exceed 2^16 blocks per packet (RFC 3711 §4.1.1).
const AES_CM_MAX_PAYLOAD: usize = (1 << 16) * 16;
/// AES-GCM tag length (RFC 7714 §7).
const GCM_TAG_LEN: usize = 16;
/// The largest GCM payload (plaintext or ciphertext) per packet: a UDP datagram's worth. Above
/// it [`Error::TooLong`]; see [`GcmKeys::open`] for why there is a limit.
const GCM_MAX_PAYLOAD: usize = 1 << 16;
/// Payloads up to this size are saved on a small stack buffer while [`GcmKeys::open`] runs;
/// larger ones (jumbo frames, reassembled datagrams) on a [`GCM_MAX_PAYLOAD`] one.
const GCM_SMALL_PAYLOAD: usize = 2048;

/// Key derivation labels (RFC 3711 §4.3.2): the SRTCP labels are the SRTP ones plus 3.
const LABEL_RTP: u8 = 0x00;
const LABEL_RTCP: u8 = 0x03;
const LABEL_OFFSET_AUTH: u8 = 1;
const LABEL_OFFSET_SALT: u8 = 2;

/// Result of a successful unprotect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unprotected {
    /// Length of the plaintext packet at the start of the buffer.
    pub len: usize,
    /// The 48-bit SRTP packet index (ROC ‖ SEQ), or the 31-bit SRTCP index.
    pub index: u64,
}

impl Unprotected {
    /// The rollover counter of an SRTP index.
    pub fn roc(&self) -> u32 {
        SrtpIndex::new_truncating(self.index).roc().get()
    }

    /// The index of an unprotected SRTP packet.
    ///
    /// # Errors
    ///
    /// [`Error::IndexExhausted`] if `index` is not below 2^48 (never, for a result of
    /// [`SessionKeys::unprotect_rtp`]).
    pub fn srtp_index(&self) -> Result<SrtpIndex, Error> {
        SrtpIndex::new(self.index)
    }

    /// The index of an unprotected SRTCP packet.
    ///
    /// # Errors
    ///
    /// [`Error::IndexExhausted`] if `index` is not below 2^31 (never, for a result of
    /// [`SessionKeys::unprotect_rtcp`]).
    pub fn srtcp_index(&self) -> Result<SrtcpIndex, Error> {
        SrtcpIndex::try_from(self.index)
    }
}

/// AES-CM + HMAC-SHA1 session keys for one direction (SRTP or SRTCP).
#[derive(Clone)]
struct CmKeys {
    aes: Aes128,
    salt: [u8; 14],
    mac: HmacSha1,
}

impl CmKeys {
    /// XORs the AES-CM keystream for (`ssrc`, `index`) into `data` (RFC 3711 §4.1.1):
    /// IV = (k_s · 2^16) ⊕ (SSRC · 2^64) ⊕ (i · 2^16).
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        xor_into(&mut iv[4..8], &ssrc.to_be_bytes());
        xor_into(&mut iv[8..14], &index.to_be_bytes()[2..]);
        aes_cm(&self.aes, &iv, data);
    }

    /// Full HMAC-SHA1 over `parts` (RFC 3711 §4.2.1).
    fn tag(&self, parts: [&[u8]; 2]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a truncated tag.
    fn verify(&self, parts: [&[u8]; 2], tag: &[u8]) -> Result<(), Error> {
        let full = self.tag(parts);
        let expected = full.get(..tag.len()).ok_or(Error::AuthFailed)?;
        if bool::from(expected.ct_eq(tag)) {
            Ok(())
        } else {
            Err(Error::AuthFailed)
        }
    }
}

/// AEAD_AES_128_GCM session keys for one direction (SRTP or SRTCP).
///
/// The AEAD is `ring`'s: its AES-GCM uses VAES and VPCLMULQDQ where the CPU has them (chosen at
/// run time): a 1,200-byte decrypt + re-encrypt takes 0.45 µs against 1.87 µs with RustCrypto's
/// `aes-gcm` 0.10 on the relay's Xeons (docs/benchmarks/crypto-gcm.md), and its key is 544
/// bytes held inline, no heap.
#[derive(Clone)]
struct GcmKeys {
    aead: LessSafeKey,
    salt: [u8; 12],
}

impl GcmKeys {
    /// Keys for the session key `key` and session salt `salt` (RFC 7714 §12).
    fn new(key: &[u8; 16], salt: [u8; 12]) -> Result<Self, Error> {
        let key = UnboundKey::new(&AES_128_GCM, key).map_err(|_| Error::BadKeyLength)?;
        Ok(GcmKeys { aead: LessSafeKey::new(key), salt })
    }

    /// Encrypts `payload` in place and returns the tag (RFC 7714 §7.1).
    fn seal(&self, nonce: [u8; 12], aad: &[u8], payload: &mut [u8]) -> Result<[u8; GCM_TAG_LEN], Error> {
        if payload.len() > GCM_MAX_PAYLOAD {
            return Err(Error::TooLong);
        }
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), payload)
            .map_err(|_| Error::TooLong)?;
        let mut out = [0u8; GCM_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Verifies `tag` (in constant time, inside `ring`) and decrypts `payload` in place
    /// (RFC 7714 §7.2). On failure `payload` is unchanged.
    ///
    /// `ring` decrypts while it authenticates and zeroes the output when the tag does not
    /// match, so the ciphertext is saved on the stack first and put back on failure: a copy of
    /// the payload per packet (tens of ns at 1,200 bytes), for the module's guarantee that a
    /// rejected packet leaves the buffer as it was. That stack copy is what bounds the payload
    /// to [`GCM_MAX_PAYLOAD`], which no UDP datagram exceeds.
    fn open(&self, nonce: [u8; 12], aad: &[u8], payload: &mut [u8], tag: [u8; GCM_TAG_LEN]) -> Result<(), Error> {
        if payload.len() <= GCM_SMALL_PAYLOAD {
            self.open_saving::<GCM_SMALL_PAYLOAD>(nonce, aad, payload, tag)
        } else if payload.len() <= GCM_MAX_PAYLOAD {
            self.open_large(nonce, aad, payload, tag)
        } else {
            Err(Error::TooLong)
        }
    }

    /// [`Self::open`] for payloads above [`GCM_SMALL_PAYLOAD`]: kept out of line so that the
    /// common path's stack frame stays small.
    #[inline(never)]
    fn open_large(&self, nonce: [u8; 12], aad: &[u8], payload: &mut [u8], tag: [u8; GCM_TAG_LEN]) -> Result<(), Error> {
        self.open_saving::<GCM_MAX_PAYLOAD>(nonce, aad, payload, tag)
    }

    /// [`Self::open`] with an `N`-byte save buffer; `payload` must fit in it.
    fn open_saving<const N: usize>(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        payload: &mut [u8],
        tag: [u8; GCM_TAG_LEN],
    ) -> Result<(), Error> {
        let mut saved = [0u8; N];
        let saved = saved.get_mut(..payload.len()).ok_or(Error::TooLong)?;
        saved.copy_from_slice(payload);
        let nonce = Nonce::assume_unique_for_key(nonce);
        match self.aead.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(tag), payload, 0..) {
            Ok(_) => Ok(()),
            Err(_) => {
                payload.copy_from_slice(saved);
                Err(Error::AuthFailed)
            }
        }
    }

    /// SRTP IV (RFC 7714 §8.1): (0x0000 ‖ SSRC ‖ ROC ‖ SEQ) ⊕ salt.
    fn rtp_iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = self.salt;
        xor_into(&mut iv[2..6], &ssrc.to_be_bytes());
        xor_into(&mut iv[6..12], &index.to_be_bytes()[2..]);
        iv
    }

    /// SRTCP IV (RFC 7714 §9.1): (0x0000 ‖ SSRC ‖ 0x0000 ‖ 0 ‖ SRTCP index) ⊕ salt.
    fn rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; 12] {
        let mut iv = self.salt;
        xor_into(&mut iv[2..6], &ssrc.to_be_bytes());
        xor_into(&mut iv[8..12], &index.to_be_bytes());
        iv
    }
}

/// The transform of one direction.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "boxing AES-CM would allocate for every SRTCP packet (its transform is derived per packet) and \
              save nothing: a session's SRTP transform is one or the other"
)]
enum Transform {
    AesCm(CmKeys),
    Gcm(GcmKeys),
}

impl Transform {
    /// Derives the session keys of one direction from the master key (`prf`) and salt;
    /// `label` is [`LABEL_RTP`] or [`LABEL_RTCP`].
    fn derive(profile: Profile, prf: &Aes128, master_salt: &[u8], label: u8) -> Result<Self, Error> {
        let mut key = [0u8; 16];
        kdf(prf, master_salt, label, &mut key);
        Ok(match profile {
            Profile::AesCm128HmacSha1_80 | Profile::AesCm128HmacSha1_32 => {
                let mut auth = [0u8; 20];
                kdf(prf, master_salt, label + LABEL_OFFSET_AUTH, &mut auth);
                let mut salt = [0u8; 14];
                kdf(prf, master_salt, label + LABEL_OFFSET_SALT, &mut salt);
                Transform::AesCm(CmKeys {
                    aes: Aes128::new(&key.into()),
                    salt,
                    mac: <HmacSha1 as KeyInit>::new_from_slice(&auth).map_err(|_| Error::BadKeyLength)?,
                })
            }
            Profile::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                kdf(prf, master_salt, label + LABEL_OFFSET_SALT, &mut salt);
                Transform::Gcm(GcmKeys::new(&key, salt)?)
            }
        })
    }
}

/// XORs `src` into `dst` (equal lengths by construction at every call site).
fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// AES-128 counter mode with the 128-bit big-endian counter starting at `iv`.
fn aes_cm(aes: &Aes128, iv: &[u8; 16], data: &mut [u8]) {
    // `Ctr128BE` (the wrapper) has no `InnerIvInit`; the core does.
    let mut ctr = StreamCipherCoreWrapper::from_core(AesCtrCore::inner_iv_init(aes, &(*iv).into()));
    ctr.apply_keystream(data);
}

/// The AES-CM PRF of RFC 3711 §4.3.1/§4.3.3 with key derivation rate 0 (so r = 0):
/// x = (label ‖ 0^48) ⊕ master_salt, output = AES-CM keystream at IV = x · 2^16.
///
/// The salt occupies the leading bytes of the 112-bit x. For the 96-bit GCM salt this zero-pads
/// it on the right (RFC 7714 §12, as libsrtp does), which the libsrtp GCM vector below checks.
fn kdf(prf: &Aes128, master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    for (d, s) in iv[..14].iter_mut().zip(master_salt) {
        *d = *s;
    }
    iv[7] ^= label;
    out.fill(0);
    aes_cm(prf, &iv, out);
}

/// Where the SRTCP transform comes from.
#[cfg_attr(test, expect(clippy::large_enum_variant, reason = "the large variant exists only in unit tests"))]
enum RtcpKeys {
    /// Derived per packet from the master key and salt (see the module docs).
    Master {
        /// The master key.
        key: [u8; 16],
        /// The master salt, `salt_len` bytes of it (14 for AES-CM, 12 for GCM).
        salt: [u8; 14],
        /// See `salt`.
        salt_len: u8,
    },
    /// Session keys given directly (the RFC 7714 vectors give no master key).
    #[cfg(test)]
    Session(Transform),
}

/// Derived SRTP session keys and the SRTCP master key for one master key (one direction of
/// one DTLS-SRTP association). Immutable, `Send + Sync`; share it behind an `Arc`.
pub struct SessionKeys {
    profile: Profile,
    rtp: Transform,
    rtcp: RtcpKeys,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys").field("profile", &self.profile).finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Derives the session keys (RFC 3711 §4.3, kdr = 0, labels 0x00–0x05; for GCM the same KDF
    /// with a 96-bit salt, RFC 7714 §12).
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Self, Error> {
        if master_key.len() != profile.master_key_len() || master_salt.len() != profile.master_salt_len() {
            return Err(Error::BadKeyLength);
        }
        let master_key: [u8; 16] = master_key.try_into().map_err(|_| Error::BadKeyLength)?;
        let mut salt = [0u8; 14];
        salt.get_mut(..master_salt.len()).ok_or(Error::BadKeyLength)?.copy_from_slice(master_salt);
        let prf = Aes128::new(&master_key.into());
        let rtp = Transform::derive(profile, &prf, master_salt, LABEL_RTP)?;
        // Fail at setup, not on the first SRTCP packet, should the SRTCP keys not derive.
        Transform::derive(profile, &prf, master_salt, LABEL_RTCP)?;
        Ok(SessionKeys {
            profile,
            rtp,
            rtcp: RtcpKeys::Master { key: master_key, salt, salt_len: master_salt.len() as u8 },
        })
    }

    /// The SRTCP transform, derived on the stack (see the module docs).
    fn rtcp(&self) -> Result<Transform, Error> {
        match &self.rtcp {
            RtcpKeys::Master { key, salt, salt_len } => {
                let prf = Aes128::new(&(*key).into());
                Transform::derive(self.profile, &prf, &salt[..usize::from(*salt_len)], LABEL_RTCP)
            }
            #[cfg(test)]
            RtcpKeys::Session(t) => Ok(t.clone()),
        }
    }

    /// The protection profile these keys were derived for.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Protects the RTP packet in `buf[..len]` in place with rollover counter `roc`
    /// (index = ROC · 2^16 + SEQ, RFC 3711 §3.3.1) and appends the tag. Returns the SRTP length
    /// `len + tag`; `buf` must be at least that long.
    pub fn protect_rtp(&self, buf: &mut [u8], len: usize, roc: u32) -> Result<usize, Error> {
        let tag_len = self.profile.rtp_tag_len();
        let pkt = RtpPacket::new_checked(buf.get(..len).ok_or(Error::BufferTooSmall)?)?;
        let hdr_len = pkt.header_len();
        let ssrc = pkt.ssrc_value();
        let index = SrtpIndex::from_parts(Roc::new(roc), pkt.seq());
        let out_len = len.checked_add(tag_len).ok_or(Error::BufferTooSmall)?;
        if buf.len() < out_len {
            return Err(Error::BufferTooSmall);
        }
        let (body, trailer) = buf[..out_len].split_at_mut(len);
        match &self.rtp {
            // RFC 3711 §3.1: encrypt the payload, then tag header ‖ payload ‖ ROC (§4.2).
            Transform::AesCm(k) => {
                let payload = &mut body[hdr_len..];
                if payload.len() > AES_CM_MAX_PAYLOAD {
                    return Err(Error::TooLong);
                }
                k.apply_keystream(ssrc, index.get(), payload);
                let tag = k.tag([body, &roc.to_be_bytes()]);
                trailer.copy_from_slice(&tag[..tag_len]);
            }
            // RFC 7714 §8: header as AAD, payload encrypted, 16-byte tag appended.
            Transform::Gcm(k) => {
                let nonce = k.rtp_iv(ssrc, index.get());
                let (hdr, payload) = body.split_at_mut(hdr_len);
                let tag = k.seal(nonce, hdr, payload)?;
                trailer.copy_from_slice(&tag);
            }
        }
        Ok(out_len)
    }

    /// Unprotects the SRTP packet `buf` in place using the receiver state `rx`.
    ///
    /// Estimates the index (RFC 3711 Appendix A), rejects replays and too-old packets before
    /// authenticating, verifies the tag in constant time, decrypts, and only then records the
    /// index in `rx`. On success the plaintext RTP packet is `buf[..len]`.
    pub fn unprotect_rtp(&self, rx: &mut RtpReceiver, buf: &mut [u8]) -> Result<Unprotected, Error> {
        let seq = RtpPacket::new_checked(&*buf)?.seq();
        let index = SrtpIndex::new_truncating(rx.estimate_index(seq.get()));
        rx.window().check(index.get())?;
        let len = self.unprotect_rtp_inner(buf, index)?;
        rx.window_mut().update(index.get());
        Ok(Unprotected { len, index: index.get() })
    }

    /// Unprotects the SRTP packet `buf` in place at an explicit 48-bit `index`, with no replay
    /// state. The low 16 bits of `index` must equal the packet's sequence number. Returns the
    /// plaintext length.
    pub fn unprotect_rtp_at(&self, buf: &mut [u8], index: u64) -> Result<usize, Error> {
        let index = SrtpIndex::new(index)?;
        if RtpPacket::new_checked(&*buf)?.seq() != index.seq() {
            return Err(Error::IndexMismatch);
        }
        self.unprotect_rtp_inner(buf, index)
    }

    fn unprotect_rtp_inner(&self, buf: &mut [u8], index: SrtpIndex) -> Result<usize, Error> {
        let tag_len = self.profile.rtp_tag_len();
        let body_len = buf.len().checked_sub(tag_len).ok_or(Error::TooShort)?;
        let (body, tag) = buf.split_at_mut(body_len);
        // The header must fit before the tag.
        let pkt = RtpPacket::new_checked(&*body)?;
        let hdr_len = pkt.header_len();
        let ssrc = pkt.ssrc_value();
        let roc = index.roc().get();
        match &self.rtp {
            Transform::AesCm(k) => {
                if body_len - hdr_len > AES_CM_MAX_PAYLOAD {
                    return Err(Error::TooLong);
                }
                k.verify([body, &roc.to_be_bytes()], tag)?;
                k.apply_keystream(ssrc, index.get(), &mut body[hdr_len..]);
            }
            Transform::Gcm(k) => {
                let nonce = k.rtp_iv(ssrc, index.get());
                let tag: [u8; GCM_TAG_LEN] = (&*tag).try_into().map_err(|_| Error::TooShort)?;
                let (hdr, payload) = body.split_at_mut(hdr_len);
                // Leaves `payload` unchanged on failure.
                k.open(nonce, hdr, payload, tag)?;
            }
        }
        Ok(body_len)
    }

    /// Protects the compound RTCP packet in `buf[..len]` in place as SRTCP with the 31-bit SRTCP
    /// `index`, always encrypted (E = 1). Layout (RFC 3711 §3.4):
    /// `header ‖ E|index ‖ tag` with the packet after the first 8 bytes encrypted; for GCM
    /// (RFC 7714 §9) `header ‖ ciphertext ‖ tag ‖ E|index`. Returns the SRTCP length
    /// `len + rtcp_overhead`.
    pub fn protect_rtcp(&self, buf: &mut [u8], len: usize, index: u32) -> Result<usize, Error> {
        let index = SrtcpIndex::new(index)?;
        let ssrc = RtcpPacket::new_checked(buf.get(..len).ok_or(Error::BufferTooSmall)?)?.sender_ssrc_value();
        let out_len = len.checked_add(self.profile.rtcp_overhead()).ok_or(Error::BufferTooSmall)?;
        if buf.len() < out_len {
            return Err(Error::BufferTooSmall);
        }
        let e_index = (SRTCP_E_FLAG | index.get()).to_be_bytes();
        let (body, trailer) = buf[..out_len].split_at_mut(len);
        match &self.rtcp()? {
            Transform::AesCm(k) => {
                let payload = &mut body[RTCP_HEADER_LEN..];
                if payload.len() > AES_CM_MAX_PAYLOAD {
                    return Err(Error::TooLong);
                }
                k.apply_keystream(ssrc, u64::from(index), payload);
                let (e_index_out, tag_out) = trailer.split_at_mut(4);
                e_index_out.copy_from_slice(&e_index);
                let tag = k.tag([body, &e_index]);
                tag_out.copy_from_slice(&tag[..tag_out.len()]);
            }
            Transform::Gcm(k) => {
                // RFC 7714 §9.2: AAD = first 8 octets ‖ E|index.
                let mut aad = [0u8; RTCP_HEADER_LEN + 4];
                let (hdr, payload) = body.split_at_mut(RTCP_HEADER_LEN);
                aad[..RTCP_HEADER_LEN].copy_from_slice(hdr);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&e_index);
                let nonce = k.rtcp_iv(ssrc, index.get());
                let tag = k.seal(nonce, &aad, payload)?;
                let (tag_out, e_index_out) = trailer.split_at_mut(GCM_TAG_LEN);
                tag_out.copy_from_slice(&tag);
                e_index_out.copy_from_slice(&e_index);
            }
        }
        Ok(out_len)
    }

    /// Unprotects the SRTCP packet `buf` in place, replay-checked against `rx` before
    /// authentication and recorded in `rx` after. Authenticated packets with E = 0 are accepted
    /// unchanged (see the module docs). On success the plaintext RTCP packet is `buf[..len]` and
    /// `index` is the SRTCP index.
    pub fn unprotect_rtcp(&self, rx: &mut RtcpReceiver, buf: &mut [u8]) -> Result<Unprotected, Error> {
        let n = buf.len();
        let body_len = n.checked_sub(self.profile.rtcp_overhead()).ok_or(Error::TooShort)?;
        // Also checks that the clear prefix fits before the trailer.
        let ssrc = RtcpPacket::new_checked(&buf[..body_len])?.sender_ssrc_value();
        let e_index_at = match self.profile {
            Profile::AesCm128HmacSha1_80 | Profile::AesCm128HmacSha1_32 => body_len,
            Profile::AeadAes128Gcm => n - 4,
        };
        let e_index: [u8; 4] = buf[e_index_at..e_index_at + 4].try_into().map_err(|_| Error::TooShort)?;
        let word = u32::from_be_bytes(e_index);
        let encrypted = word & SRTCP_E_FLAG != 0;
        let index = SrtcpIndex::from_trailer_word(word);
        rx.window().check(u64::from(index))?;

        match &self.rtcp()? {
            Transform::AesCm(k) => {
                let (authed, tag) = buf.split_at_mut(body_len + 4);
                k.verify([authed, &[]], tag)?;
                if encrypted {
                    let payload = &mut authed[RTCP_HEADER_LEN..body_len];
                    if payload.len() > AES_CM_MAX_PAYLOAD {
                        return Err(Error::TooLong);
                    }
                    k.apply_keystream(ssrc, u64::from(index), payload);
                }
            }
            Transform::Gcm(k) => {
                let nonce = k.rtcp_iv(ssrc, index.get());
                let tag: [u8; GCM_TAG_LEN] =
                    buf[body_len..body_len + GCM_TAG_LEN].try_into().map_err(|_| Error::TooShort)?;
                if encrypted {
                    let mut aad = [0u8; RTCP_HEADER_LEN + 4];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&e_index);
                    let payload = &mut buf[RTCP_HEADER_LEN..body_len];
                    k.open(nonce, &aad, payload, tag)?;
                } else {
                    // RFC 7714 §9.2, E = 0: AAD = whole RTCP packet ‖ E|index, no ciphertext.
                    // The tag sits between the two; rotate E|index in front of it so the AAD is
                    // contiguous, and rotate back whatever the outcome.
                    buf[body_len..].rotate_right(4);
                    let result = k.open(nonce, &buf[..body_len + 4], &mut [], tag);
                    buf[body_len..].rotate_left(4);
                    result?;
                }
            }
        }
        rx.window_mut().update(u64::from(index));
        Ok(Unprotected { len: body_len, index: u64::from(index) })
    }
}

/// Fuzz entry point (cargo-fuzz target body): runs every unprotect path of every profile over
/// `data`, and every protect path with `data` as the plaintext.
///
/// Never panics on any input; it panics only if an invariant is broken — a rejected packet that
/// was modified, or a protected packet that does not unprotect back to its plaintext.
pub fn fuzz_unprotect(data: &[u8]) {
    const MASTER_KEY: [u8; 16] = [0x42; 16];
    const MASTER_SALT: [u8; 14] = [0x24; 14];
    for profile in Profile::ALL {
        let keys = SessionKeys::new(profile, &MASTER_KEY, &MASTER_SALT[..profile.master_salt_len()])
            .expect("fixed key and salt lengths match every profile");

        let mut buf = data.to_vec();
        let mut rx = RtpReceiver::new();
        if keys.unprotect_rtp(&mut rx, &mut buf).is_err() {
            assert_eq!(buf, data, "{profile}: rejected SRTP packet was modified");
            assert_eq!(rx, RtpReceiver::new(), "{profile}: rejected SRTP packet changed state");
        }
        let mut buf = data.to_vec();
        let seq = RtpPacket::new_checked(data).map_or(SeqNum::new(0), |p| p.seq());
        let index = SrtpIndex::from_parts(Roc::new(0x1234), seq).get();
        if keys.unprotect_rtp_at(&mut buf, index).is_err() {
            assert_eq!(buf, data, "{profile}: rejected SRTP packet was modified");
        }
        let mut buf = data.to_vec();
        let mut rx = RtcpReceiver::new();
        if keys.unprotect_rtcp(&mut rx, &mut buf).is_err() {
            assert_eq!(buf, data, "{profile}: rejected SRTCP packet was modified");
            assert_eq!(rx, RtcpReceiver::new(), "{profile}: rejected SRTCP packet changed state");
        }

        let mut buf = data.to_vec();
        buf.resize(data.len() + profile.rtp_overhead(), 0);
        let roc = 0x0102_0304;
        if let Ok(n) = keys.protect_rtp(&mut buf, data.len(), roc) {
            buf.truncate(n);
            let mut rx = RtpReceiver::new();
            let index = SrtpIndex::from_parts(Roc::new(roc), seq).get();
            let len = keys.unprotect_rtp_at(&mut buf, index).expect("protected SRTP unprotects");
            assert_eq!(&buf[..len], data);
            // Without the ROC the receiver guesses ROC 0 and must fail cleanly. (Only asserted
            // for tags of 80+ bits: a 32-bit tag collides often enough for a fuzzer to find.)
            let guessed = keys.unprotect_rtp(&mut rx, &mut buf[..n]);
            if profile.rtp_tag_len() >= 10 {
                assert_eq!(guessed, Err(Error::AuthFailed));
            }
        }
        let mut buf = data.to_vec();
        buf.resize(data.len() + profile.rtcp_overhead(), 0);
        if let Ok(n) = keys.protect_rtcp(&mut buf, data.len(), 0x7654_3210) {
            let mut rx = RtcpReceiver::new();
            let out = keys.unprotect_rtcp(&mut rx, &mut buf[..n]).expect("protected SRTCP unprotects");
            assert_eq!(&buf[..out.len], data);
            assert_eq!(out.index, 0x7654_3210);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{estimate_index, ReplayWindow, RtpSender, SRTCP_INDEX_MAX};
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).expect("valid hex")
    }

    /// Builds keys straight from session keys, bypassing the KDF (RFC 7714 §16/§17 vectors
    /// give session keys, not master keys). Same keys for SRTP and SRTCP.
    fn gcm_from_session(key: &[u8], salt: &[u8]) -> SessionKeys {
        let key: [u8; 16] = key.try_into().unwrap();
        let salt: [u8; 12] = salt.try_into().unwrap();
        let t = || Transform::Gcm(GcmKeys::new(&key, salt).unwrap());
        SessionKeys { profile: Profile::AeadAes128Gcm, rtp: t(), rtcp: RtcpKeys::Session(t()) }
    }

    /// libsrtp `srtp_validate` master key ‖ salt (also RFC 3711 B.3's master key and salt).
    const LIBSRTP_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6";

    fn libsrtp_keys(profile: Profile) -> SessionKeys {
        let km = h(LIBSRTP_KEY);
        SessionKeys::new(profile, &km[..16], &km[16..16 + profile.master_salt_len()]).unwrap()
    }

    /// 800f1234 decafbad cafebabe + 16 × ab: seq 0x1234, SSRC 0xcafebabe.
    fn libsrtp_rtp() -> Vec<u8> {
        h(&format!("800f1234decafbadcafebabe{}", "ab".repeat(16)))
    }

    /// 81c8000b cafebabe + 16 × ab: an SR from SSRC 0xcafebabe.
    fn libsrtp_rtcp() -> Vec<u8> {
        h(&format!("81c8000bcafebabe{}", "ab".repeat(16)))
    }

    fn protect_rtp_vec(keys: &SessionKeys, pkt: &[u8], roc: u32) -> Vec<u8> {
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len() + keys.profile().rtp_overhead(), 0);
        let n = keys.protect_rtp(&mut buf, pkt.len(), roc).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    fn protect_rtcp_vec(keys: &SessionKeys, pkt: &[u8], index: u32) -> Vec<u8> {
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len() + keys.profile().rtcp_overhead(), 0);
        let n = keys.protect_rtcp(&mut buf, pkt.len(), index).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    /// An RTP packet with the given seq, a 4-byte CSRC and a 100-byte payload.
    fn rtp_packet(seq: u16) -> Vec<u8> {
        let mut p = h("8160 0000 00000e10 11223344 55667788");
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend((0..100u8).map(|i| i.wrapping_mul(7)));
        p
    }

    #[test]
    fn session_keys_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<SessionKeys>();
        assert!(format!("{:?}", libsrtp_keys(Profile::AeadAes128Gcm)).contains("AeadAes128Gcm"));
    }

    /// Per-session memory (issue 5: 100k sessions in 512 MiB). `ring`'s GCM key is 544 bytes
    /// inline; RustCrypto's `aes-gcm` 0.10 `Aes128Gcm` it replaced was 736.
    #[test]
    fn gcm_state_size() {
        use std::mem::size_of;
        println!(
            "size_of: GcmKeys {}, CmKeys {}, Transform {}, SessionKeys {}",
            size_of::<GcmKeys>(),
            size_of::<CmKeys>(),
            size_of::<Transform>(),
            size_of::<SessionKeys>()
        );
        assert!(size_of::<GcmKeys>() <= 560, "GcmKeys is {} bytes", size_of::<GcmKeys>());
        // The SRTP transform is sized by its larger AES-CM variant; GCM must not grow it.
        assert!(size_of::<GcmKeys>() <= size_of::<CmKeys>());
    }

    /// GCM payloads past the stack save buffer take the large path, and past a datagram's
    /// size are refused, both ways, leaving the buffer unchanged.
    #[test]
    fn gcm_large_payloads() {
        let keys = libsrtp_keys(Profile::AeadAes128Gcm);
        for size in [GCM_SMALL_PAYLOAD + 12, GCM_MAX_PAYLOAD + 12] {
            let mut plain = rtp_packet(1);
            plain.resize(size, 0x33);
            let srtp = protect_rtp_vec(&keys, &plain, 0);
            let mut bad = srtp.clone();
            bad[size - 1] ^= 1;
            let copy = bad.clone();
            assert_eq!(keys.unprotect_rtp(&mut RtpReceiver::new(), &mut bad), Err(Error::AuthFailed));
            assert_eq!(bad, copy);
            let mut buf = srtp;
            assert_eq!(keys.unprotect_rtp(&mut RtpReceiver::new(), &mut buf).map(|u| u.len), Ok(size));
            assert_eq!(buf[..size], plain[..]);
        }
        let mut plain = rtp_packet(1);
        plain.resize(GCM_MAX_PAYLOAD + 17, 0x33);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        assert_eq!(keys.protect_rtp(&mut buf, plain.len(), 0), Err(Error::TooLong));
        assert_eq!(buf[..plain.len()], plain[..]);
        let copy = buf.clone();
        assert_eq!(keys.unprotect_rtp_at(&mut buf, 1), Err(Error::TooLong));
        assert_eq!(buf, copy);
    }

    /// RFC 3711 Appendix B.2: AES-CM keystream, session key 2B7E…, salt F0…FD, SSRC 0, index 0.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let k = CmKeys {
            aes: Aes128::new(&<[u8; 16]>::try_from(h("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap().into()),
            salt: h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap(),
            mac: <HmacSha1 as KeyInit>::new_from_slice(&[0; 20]).unwrap(),
        };
        // 1044512 octets = 65282 blocks: counters ...0000 through ...FF01.
        let mut ks = vec![0u8; 1_044_512];
        k.apply_keystream(0, 0, &mut ks);
        assert_eq!(
            ks[..48],
            h("E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
               41E95B3BB0A2E8DD477901E4FCA894C0")
        );
        assert_eq!(
            ks[ks.len() - 48..],
            h("EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
               6A2CC3787889374FBEB4C81B17BA6C44")
        );
    }

    /// RFC 3711 Appendix B.3: key derivation (labels 0, 2, 1).
    #[test]
    fn rfc3711_b3_key_derivation() {
        let prf = Aes128::new(&<[u8; 16]>::try_from(h("E1F97A0D3E018BE0D64FA32C06DE4139")).unwrap().into());
        let salt = h("0EC675AD498AFEEBB6960B3AABE6");
        let mut cipher_key = [0u8; 16];
        kdf(&prf, &salt, 0x00, &mut cipher_key);
        assert_eq!(cipher_key[..], h("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut cipher_salt = [0u8; 14];
        kdf(&prf, &salt, 0x02, &mut cipher_salt);
        assert_eq!(cipher_salt[..], h("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth_key = [0u8; 20];
        kdf(&prf, &salt, 0x01, &mut auth_key);
        assert_eq!(auth_key[..], h("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
        // The longer auth-key keystream the RFC lists continues the same way.
        let mut long = [0u8; 32];
        kdf(&prf, &salt, 0x01, &mut long);
        assert_eq!(long[..], h("CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE"));
    }

    /// libsrtp `srtp_validate`: AES_CM_128_HMAC_SHA1_80, ROC 0, SRTP and SRTCP (index 1).
    #[test]
    fn libsrtp_aes_cm_sha1_80_vector() {
        let keys = libsrtp_keys(Profile::AesCm128HmacSha1_80);
        let plain = libsrtp_rtp();
        let srtp = protect_rtp_vec(&keys, &plain, 0);
        assert_eq!(srtp, h("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"));
        let mut rx = RtpReceiver::new();
        let mut buf = srtp.clone();
        let out = keys.unprotect_rtp(&mut rx, &mut buf).unwrap();
        assert_eq!(out, Unprotected { len: plain.len(), index: 0x1234 });
        assert_eq!(out.roc(), 0);
        assert_eq!(buf[..out.len], plain);

        let srtcp = protect_rtcp_vec(&keys, &libsrtp_rtcp(), 1);
        assert_eq!(srtcp, h("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798"));
        let mut rx = RtcpReceiver::new();
        let mut buf = srtcp;
        let out = keys.unprotect_rtcp(&mut rx, &mut buf).unwrap();
        assert_eq!(out, Unprotected { len: 24, index: 1 });
        assert_eq!(buf[..24], libsrtp_rtcp());
    }

    /// libsrtp `srtp_validate_gcm`: AEAD_AES_128_GCM through the KDF with a 96-bit salt — checks
    /// the salt alignment of RFC 7714 §12.
    #[test]
    fn libsrtp_gcm_vector() {
        let km = h("000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab");
        let keys = SessionKeys::new(Profile::AeadAes128Gcm, &km[..16], &km[16..]).unwrap();
        let plain = libsrtp_rtp();
        let srtp = protect_rtp_vec(&keys, &plain, 0);
        assert_eq!(
            srtp,
            h("800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e
               d2976826f796b201df3131a127e8a392")
        );
        let mut buf = srtp;
        let out = keys.unprotect_rtp(&mut RtpReceiver::new(), &mut buf).unwrap();
        assert_eq!(buf[..out.len], plain);

        let srtcp = protect_rtcp_vec(&keys, &libsrtp_rtcp(), 1);
        assert_eq!(
            srtcp,
            h("81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025 c52c6fbea2b3b446ea31123ba88ce61e
               80000001")
        );
        let mut buf = srtcp;
        let out = keys.unprotect_rtcp(&mut RtcpReceiver::new(), &mut buf).unwrap();
        assert_eq!(out, Unprotected { len: 24, index: 1 });
        assert_eq!(buf[..24], libsrtp_rtcp());
    }

    const RFC7714_KEY: &str = "000102030405060708090a0b0c0d0e0f";
    const RFC7714_SALT: &str = "517569642070726f2071756f";
    const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                               20646976 69736120 696e2070 61727465 73207472 6573";
    const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                                4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

    /// RFC 7714 §16.1.1: AEAD_AES_128_GCM SRTP, SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b.
    #[test]
    fn rfc7714_16_srtp_gcm() {
        let keys = gcm_from_session(&h(RFC7714_KEY), &h(RFC7714_SALT));
        let Transform::Gcm(k) = &keys.rtp else { unreachable!() };
        assert_eq!(k.rtp_iv(0x5501a0b2, 0xf17b)[..], h("51753c6580c2726f20718414"));
        let plain = h(RFC7714_RTP);
        let srtp = protect_rtp_vec(&keys, &plain, 0);
        assert_eq!(
            srtp,
            h("8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
               0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce")
        );
        let mut buf = srtp.clone();
        assert_eq!(keys.unprotect_rtp_at(&mut buf, 0xf17b), Ok(plain.len()));
        assert_eq!(buf[..plain.len()], plain);
        let mut buf = srtp;
        assert_eq!(keys.unprotect_rtp_at(&mut buf, 0xf17c), Err(Error::IndexMismatch));
        assert_eq!(keys.unprotect_rtp_at(&mut buf, 0x1_f17b), Err(Error::AuthFailed));
        assert_eq!(keys.unprotect_rtp_at(&mut buf, 1 << 48), Err(Error::IndexExhausted));
    }

    /// RFC 7714 §17.1: AEAD_AES_128_GCM SRTCP, SSRC "Mars", SRTCP index 0x5d4, encrypted and
    /// authenticated-only (E = 0).
    #[test]
    fn rfc7714_17_srtcp_gcm() {
        let keys = gcm_from_session(&h(RFC7714_KEY), &h(RFC7714_SALT));
        let Ok(Transform::Gcm(k)) = &keys.rtcp() else { unreachable!() };
        assert_eq!(k.rtcp_iv(0x4d617273, 0x5d4)[..], h("517524055203726f207170bb"));
        let plain = h(RFC7714_RTCP);
        let srtcp = protect_rtcp_vec(&keys, &plain, 0x5d4);
        assert_eq!(
            srtcp,
            h("81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
               c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
               45d9eade 800005d4")
        );
        let mut rx = RtcpReceiver::new();
        let mut buf = srtcp;
        let out = keys.unprotect_rtcp(&mut rx, &mut buf).unwrap();
        assert_eq!(out, Unprotected { len: plain.len(), index: 0x5d4 });
        assert_eq!(buf[..out.len], plain);

        // E = 0: accepted after authentication, returned unchanged.
        let authed = h("81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968
                        3dd78ec9 2ae58790 125f62b3 000005d4");
        let mut rx = RtcpReceiver::new();
        let mut buf = authed.clone();
        let out = keys.unprotect_rtcp(&mut rx, &mut buf).unwrap();
        assert_eq!(out, Unprotected { len: plain.len(), index: 0x5d4 });
        assert_eq!(buf[..out.len], plain);
        // ... and a tampered one is rejected with the buffer restored.
        let mut bad = authed.clone();
        bad[20] ^= 1;
        let copy = bad.clone();
        assert_eq!(keys.unprotect_rtcp(&mut RtcpReceiver::new(), &mut bad), Err(Error::AuthFailed));
        assert_eq!(bad, copy);
        // Flipping E to 1 breaks authentication (E is in the AAD).
        let mut flipped = authed;
        let n = flipped.len();
        flipped[n - 4] |= 0x80;
        assert_eq!(keys.unprotect_rtcp(&mut RtcpReceiver::new(), &mut flipped), Err(Error::AuthFailed));
    }

    /// AES-CM SRTCP with E = 0 (authenticated only) is accepted; flipping E is detected.
    #[test]
    fn aes_cm_srtcp_unencrypted() {
        let keys = libsrtp_keys(Profile::AesCm128HmacSha1_80);
        let Ok(Transform::AesCm(k)) = &keys.rtcp() else { unreachable!() };
        let plain = libsrtp_rtcp();
        let mut pkt = plain.clone();
        pkt.extend_from_slice(&7u32.to_be_bytes());
        let tag = k.tag([&pkt, &[]]);
        pkt.extend_from_slice(&tag[..10]);
        let mut buf = pkt.clone();
        let out = keys.unprotect_rtcp(&mut RtcpReceiver::new(), &mut buf).unwrap();
        assert_eq!(out, Unprotected { len: plain.len(), index: 7 });
        assert_eq!(buf[..out.len], plain);
        let mut flipped = pkt;
        flipped[plain.len()] |= 0x80;
        let copy = flipped.clone();
        assert_eq!(keys.unprotect_rtcp(&mut RtcpReceiver::new(), &mut flipped), Err(Error::AuthFailed));
        assert_eq!(flipped, copy);
    }

    #[test]
    fn round_trip_every_profile() {
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let mut rx = RtpReceiver::new();
            for seq in [100u16, 101, 102] {
                let plain = rtp_packet(seq);
                let mut buf = protect_rtp_vec(&keys, &plain, 0);
                assert_eq!(buf.len(), plain.len() + profile.rtp_tag_len());
                assert_eq!(buf[..16], plain[..16], "{profile}: header stays clear");
                assert_ne!(buf[16..plain.len()], plain[16..], "{profile}: payload encrypted");
                let out = keys.unprotect_rtp(&mut rx, &mut buf).unwrap();
                assert_eq!(out, Unprotected { len: plain.len(), index: u64::from(seq) });
                assert_eq!(buf[..out.len], plain[..], "{profile}");
            }
        }
    }

    #[test]
    fn sha1_32_uses_short_rtp_tag_and_long_rtcp_tag() {
        let keys = libsrtp_keys(Profile::AesCm128HmacSha1_32);
        let plain = libsrtp_rtp();
        let srtp = protect_rtp_vec(&keys, &plain, 0);
        assert_eq!(srtp.len(), plain.len() + 4);
        // Same keys and keystream as SHA1_80; the tag is the 80-bit tag's first 4 bytes.
        let long = protect_rtp_vec(&libsrtp_keys(Profile::AesCm128HmacSha1_80), &plain, 0);
        assert_eq!(srtp[..], long[..plain.len() + 4]);
        let mut buf = srtp;
        let out = keys.unprotect_rtp(&mut RtpReceiver::new(), &mut buf).unwrap();
        assert_eq!(buf[..out.len], plain);

        let srtcp = protect_rtcp_vec(&keys, &libsrtp_rtcp(), 1);
        assert_eq!(srtcp, h("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798"));
    }

    #[test]
    fn srtcp_round_trip_and_replay_every_profile() {
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let mut rx = RtcpReceiver::new();
            let plain = h("80c90001 11223344 81ca0003 11223344 0105616c69636500");
            for index in [1u32, 3, 2, SRTCP_INDEX_MAX] {
                let srtcp = protect_rtcp_vec(&keys, &plain, index);
                assert_eq!(srtcp.len(), plain.len() + profile.rtcp_overhead());
                assert_eq!(srtcp[..8], plain[..8]);
                let mut buf = srtcp.clone();
                let out = keys.unprotect_rtcp(&mut rx, &mut buf).unwrap();
                assert_eq!(out, Unprotected { len: plain.len(), index: u64::from(index) });
                assert_eq!(buf[..out.len], plain[..], "{profile}");
                let mut again = srtcp;
                assert_eq!(keys.unprotect_rtcp(&mut rx, &mut again), Err(Error::Replayed));
            }
            // SRTCP_INDEX_MAX moved the window: index 1 is now far too old.
            let mut old = protect_rtcp_vec(&keys, &plain, 5);
            assert_eq!(keys.unprotect_rtcp(&mut rx, &mut old), Err(Error::TooOld));
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtcp_overhead(), 0);
            assert_eq!(keys.protect_rtcp(&mut buf, plain.len(), SRTCP_INDEX_MAX + 1), Err(Error::IndexExhausted));
        }
    }

    #[test]
    fn roc_wrap_through_sender_and_receiver() {
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let mut tx = RtpSender::new();
            let mut rx = RtpReceiver::new();
            let seqs = (65530..=65535).chain(0..=5);
            for (n, seq) in seqs.enumerate() {
                let roc = tx.next_roc(seq);
                assert_eq!(roc, u32::from(n >= 6));
                let plain = rtp_packet(seq);
                let mut buf = protect_rtp_vec(&keys, &plain, roc);
                let out = keys.unprotect_rtp(&mut rx, &mut buf).unwrap();
                assert_eq!(out.roc(), roc, "{profile} seq {seq}");
                assert_eq!(out.index, (u64::from(roc) << 16) | u64::from(seq));
                assert_eq!(buf[..out.len], plain[..]);
            }
            assert_eq!(rx.roc(), 1);
            // A late pre-wrap packet still decrypts with ROC 0.
            let mut late = protect_rtp_vec(&keys, &rtp_packet(65529), 0);
            assert_eq!(keys.unprotect_rtp(&mut rx, &mut late).unwrap().index, 65529);
        }
    }

    #[test]
    fn replay_too_old_and_reordering() {
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let mut rx = RtpReceiver::new();
            let packets: Vec<_> = (0..300u16).map(|s| protect_rtp_vec(&keys, &rtp_packet(s), 0)).collect();
            // In order up to 200, skipping 150..160.
            for (s, p) in packets.iter().enumerate().take(201) {
                if (150..160).contains(&s) {
                    continue;
                }
                keys.unprotect_rtp(&mut rx, &mut p.clone()).unwrap();
            }
            // Same packet twice.
            let mut dup = packets[200].clone();
            assert_eq!(keys.unprotect_rtp(&mut rx, &mut dup), Err(Error::Replayed));
            assert_eq!(dup, packets[200], "rejected before touching the buffer");
            // Out of order within the window: accepted once.
            for s in (150..160).rev() {
                keys.unprotect_rtp(&mut rx, &mut packets[s].clone()).unwrap();
                assert_eq!(keys.unprotect_rtp(&mut rx, &mut packets[s].clone()), Err(Error::Replayed));
            }
            // More than the window behind.
            let behind = 200 - ReplayWindow::WIDTH as usize;
            assert_eq!(keys.unprotect_rtp(&mut rx, &mut packets[behind].clone()), Err(Error::TooOld));
            assert_eq!(rx.highest(), Some(200));
        }
    }

    #[test]
    fn wrong_key_fails_and_leaves_buffer_and_state_alone() {
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let other = SessionKeys::new(profile, &[7; 16], &[9; 14][..profile.master_salt_len()]).unwrap();
            let srtp = protect_rtp_vec(&keys, &rtp_packet(9), 0);
            let mut rx = RtpReceiver::new();
            let mut buf = srtp.clone();
            assert_eq!(other.unprotect_rtp(&mut rx, &mut buf), Err(Error::AuthFailed));
            assert_eq!(buf, srtp);
            assert_eq!(rx, RtpReceiver::new());

            let srtcp = protect_rtcp_vec(&keys, &libsrtp_rtcp(), 9);
            let mut rx = RtcpReceiver::new();
            let mut buf = srtcp.clone();
            assert_eq!(other.unprotect_rtcp(&mut rx, &mut buf), Err(Error::AuthFailed));
            assert_eq!(buf, srtcp);
            assert_eq!(rx, RtcpReceiver::new());
        }
    }

    #[test]
    fn every_tampered_byte_fails_auth() {
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let srtp = protect_rtp_vec(&keys, &rtp_packet(77), 0);
            for i in 0..srtp.len() {
                let mut buf = srtp.clone();
                buf[i] ^= 0x01;
                let copy = buf.clone();
                let r = keys.unprotect_rtp(&mut RtpReceiver::new(), &mut buf);
                // Byte 2..4 is the seq: a changed seq is a different index, still unauthentic.
                assert_eq!(r, Err(Error::AuthFailed), "{profile} byte {i}");
                assert_eq!(buf, copy, "{profile} byte {i}");
            }
            let srtcp = protect_rtcp_vec(&keys, &libsrtp_rtcp(), 3);
            for i in 0..srtcp.len() {
                let mut buf = srtcp.clone();
                buf[i] ^= 0x01;
                let copy = buf.clone();
                let r = keys.unprotect_rtcp(&mut RtcpReceiver::new(), &mut buf);
                assert_eq!(r, Err(Error::AuthFailed), "{profile} byte {i}");
                assert_eq!(buf, copy, "{profile} byte {i}");
            }
        }
    }

    #[test]
    fn truncated_packets_error_without_panicking() {
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let srtp = protect_rtp_vec(&keys, &rtp_packet(5), 0);
            for len in 0..srtp.len() {
                let mut buf = srtp[..len].to_vec();
                assert!(keys.unprotect_rtp(&mut RtpReceiver::new(), &mut buf).is_err(), "{len}");
                assert_eq!(buf, srtp[..len]);
                assert!(keys.unprotect_rtp_at(&mut buf, 5).is_err(), "{len}");
            }
            let srtcp = protect_rtcp_vec(&keys, &libsrtp_rtcp(), 3);
            for len in 0..srtcp.len() {
                let mut buf = srtcp[..len].to_vec();
                assert!(keys.unprotect_rtcp(&mut RtcpReceiver::new(), &mut buf).is_err(), "{len}");
                assert_eq!(buf, srtcp[..len]);
            }
            // Plaintext truncations on protect: never panic either.
            let plain = rtp_packet(5);
            for len in 0..plain.len() {
                let mut buf = plain.clone();
                buf.resize(plain.len() + 20, 0);
                let r = keys.protect_rtp(&mut buf, len, 0);
                assert_eq!(r.is_ok(), len >= 16, "{len}");
                let r = keys.protect_rtcp(&mut buf, len, 0);
                assert!(r.is_ok() || len < 8, "{len}");
            }
        }
    }

    #[test]
    fn protect_checks_buffer_and_header() {
        let keys = libsrtp_keys(Profile::AesCm128HmacSha1_80);
        let plain = libsrtp_rtp();
        let mut exact = plain.clone();
        assert_eq!(keys.protect_rtp(&mut exact, plain.len(), 0), Err(Error::BufferTooSmall));
        assert_eq!(exact, plain);
        assert_eq!(keys.protect_rtp(&mut exact, plain.len() + 1, 0), Err(Error::BufferTooSmall));
        assert_eq!(keys.protect_rtcp(&mut exact, plain.len(), 0), Err(Error::BufferTooSmall));
        let mut bad = plain.clone();
        bad[0] = 0x40;
        bad.resize(plain.len() + 10, 0);
        assert_eq!(keys.protect_rtp(&mut bad, plain.len(), 0), Err(Error::BadVersion));
        // A larger-than-needed buffer is fine; bytes past the result are not touched.
        let mut big = plain.clone();
        big.resize(100, 0xee);
        assert_eq!(keys.protect_rtp(&mut big, plain.len(), 0), Ok(plain.len() + 10));
        assert!(big[plain.len() + 10..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn key_lengths_are_checked() {
        for profile in Profile::ALL {
            let salt = vec![0u8; profile.master_salt_len()];
            assert!(SessionKeys::new(profile, &[0; 16], &salt).is_ok());
            assert_eq!(SessionKeys::new(profile, &[0; 15], &salt).unwrap_err(), Error::BadKeyLength);
            assert_eq!(SessionKeys::new(profile, &[0; 32], &salt).unwrap_err(), Error::BadKeyLength);
            assert_eq!(SessionKeys::new(profile, &[0; 16], &salt[1..]).unwrap_err(), Error::BadKeyLength);
        }
    }

    #[test]
    fn receiver_estimation_matches_free_function() {
        let mut rx = RtpReceiver::new();
        rx.window_mut().update(0x3_fff0);
        for seq in [0u16, 5, 0x7fff, 0x8000, 0xfff0, 0xffff] {
            assert_eq!(rx.estimate_index(seq), estimate_index(Some(0x3_fff0), seq));
        }
    }

    #[test]
    fn fuzz_inputs() {
        // Deterministic xorshift inputs plus hand-picked edge cases around real packets.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        fuzz_unprotect(&[]);
        fuzz_unprotect(&[0x80]);
        for seed in [libsrtp_rtp(), libsrtp_rtcp(), rtp_packet(3), h(RFC7714_RTCP)] {
            fuzz_unprotect(&seed);
            for _ in 0..64 {
                let mut m = seed.clone();
                let r = next();
                m[(r as usize) % seed.len()] ^= (r >> 32) as u8;
                m.truncate(seed.len() - (r >> 40) as usize % 4);
                fuzz_unprotect(&m);
            }
        }
        for len in 0..200usize {
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = data.first_mut() {
                // Half of the inputs look like RTP/RTCP v2, with random X/CC bits.
                if len % 2 == 0 {
                    *b = 0x80 | (*b & 0x3f);
                }
            }
            fuzz_unprotect(&data);
        }
        // Header extension length far past the end, and maximal CSRC count.
        fuzz_unprotect(&h("900f1234 decafbad cafebabe bedeffff 00000000 00000000 00000000"));
        fuzz_unprotect(&h("8f0f1234 decafbad cafebabe 00000000 00000000 00000000 00000000"));
    }

    /// Throughput of protect + unprotect on 1200-byte packets. Run with
    /// `cargo test --release -- --nocapture bench`.
    #[test]
    fn bench_throughput() {
        let iters: u32 = if cfg!(debug_assertions) { 2_000 } else { 200_000 };
        let mut plain = rtp_packet(0);
        plain.resize(1200, 0x5a);
        for profile in Profile::ALL {
            let keys = libsrtp_keys(profile);
            let mut buf = vec![0u8; 1200 + profile.rtp_overhead()];

            let start = std::time::Instant::now();
            for i in 0..iters {
                buf[..1200].copy_from_slice(&plain);
                buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                std::hint::black_box(keys.protect_rtp(&mut buf, 1200, i >> 16).unwrap());
            }
            let protect = start.elapsed();

            let mut tx = RtpSender::new();
            let mut rx = RtpReceiver::new();
            let start = std::time::Instant::now();
            for i in 0..iters {
                buf[..1200].copy_from_slice(&plain);
                let seq = i as u16;
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                let roc = tx.next_roc(seq);
                let n = keys.protect_rtp(&mut buf, 1200, roc).unwrap();
                let out = keys.unprotect_rtp(&mut rx, &mut buf[..n]).unwrap();
                std::hint::black_box(out);
            }
            let both = start.elapsed();
            assert_eq!(buf[4..1200], plain[4..]);
            let per = |d: std::time::Duration| d.as_nanos() as f64 / f64::from(iters);
            println!(
                "bench {:<24} 1200 B: protect {:>7.0} ns, unprotect {:>7.0} ns, \
                 protect+unprotect {:>7.0} ns/packet ({:.2} Gbit/s per direction)",
                profile.name(),
                per(protect),
                per(both) - per(protect),
                per(both),
                1200.0 * 8.0 / per(protect),
            );
        }
    }
}
