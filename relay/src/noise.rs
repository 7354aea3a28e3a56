//! The Noise handshakes, `Noise_NK_25519_AESGCM_SHA256` (client joins) and
//! `Noise_IK_25519_AESGCM_SHA256` (relay-to-relay cascade legs) (Noise Protocol Framework,
//! revision 34), built on the project's own primitives: aws-lc's X25519, SHA-256/HMAC from
//! RustCrypto and ring's AES-256-GCM.
//!
//! ```text
//! NK:                      IK:
//!   <- s                     <- s
//!   ...                      ...
//!   -> e, es                 -> e, es, s, ss
//!   <- e, ee                 <- e, ee, se
//! ```
//!
//! In both the initiator knows the responder's static key in advance. The first message is
//! encrypted to that key, so everything in its payload is confidential against an on-path
//! observer, and only the holder of the static secret can read it. The second message is
//! encrypted under a key that mixes `es` and `ee`, so a valid answer proves possession of the
//! static secret, and the transport keys are forward-secret: they depend on both ephemeral
//! keys, which are discarded after the handshake.
//!
//! NK ([`Initiator`], [`Responder`]) leaves the initiator anonymous: a client proves who it
//! is with its UserSig inside the payload. IK ([`IkInitiator`], [`IkResponder`]) also
//! authenticates the initiator by its static key: the first message carries it encrypted
//! (`s`), and its payload is encrypted under a key that mixes `ss`, so it decrypts only if
//! the sender holds that key's secret; the answer mixes `se`, so the initiator knows the
//! responder accepted exactly that key. Both nodes of a leg are thereby authenticated with
//! one round trip. IK's first message is `e ‖ AEAD(s) ‖ AEAD(payload)`, 96 bytes plus the
//! payload; its answer `e ‖ AEAD(payload)`, 48 bytes plus the payload, as NK's.
//!
//! Every peer key enters a Diffie-Hellman that refuses an all-zero result, so low-order keys
//! (an ephemeral, a static key, in either message) are [`Error::LowOrder`].
//!
//! Only the two handshake messages are implemented, plus `split`; the session's keys are
//! derived from the split by the caller ([`crate::handshake`]). Every buffer is the
//! caller's; nothing allocates. Tested against the cacophony test vectors for both protocol
//! names.
#![forbid(unsafe_code)]

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};

/// The protocol name, which is also the initial handshake hash (§5.2: it fits in 32 bytes,
/// so it is zero-padded).
pub const PROTOCOL_NAME: &[u8] = b"Noise_NK_25519_AESGCM_SHA256";
/// The IK protocol name (the cascade legs' handshake); like [`PROTOCOL_NAME`], zero-padded
/// to become the initial handshake hash.
pub const IK_PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_AESGCM_SHA256";
/// Where the payload starts in an IK first message: after `e` and the encrypted `s`.
pub const IK_PAYLOAD_OFFSET: usize = DH_LEN + DH_LEN + TAG_LEN;
/// X25519 public key length (DHLEN).
pub const DH_LEN: usize = 32;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Hash length (HASHLEN).
pub const HASH_LEN: usize = 32;

/// Handshake errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A message is shorter than its fixed parts.
    #[error("Noise message truncated")]
    Truncated,
    /// The output buffer cannot hold the message or payload.
    #[error("buffer too small for the Noise message")]
    BufferTooSmall,
    /// AEAD decryption failed: wrong static key, tampering, or a different prologue.
    #[error("Noise message does not decrypt (wrong key or tampered)")]
    Decrypt,
    /// A peer's public key is of low order (the DH output would be all zero).
    #[error("X25519 key of low order")]
    LowOrder,
    /// A handshake step was called twice or before the step it follows (an
    /// [`IkInitiator`] writes its first message once, and reads an answer only after it).
    #[error("Noise handshake step out of order")]
    OutOfOrder,
}

/// The keys `Split()` returns (§5.2), and the final handshake hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Split {
    /// Initiator → responder cipher key.
    pub initiator_to_responder: [u8; 32],
    /// Responder → initiator cipher key.
    pub responder_to_initiator: [u8; 32],
    /// The handshake hash `h`: a channel binding, unique per handshake (not a secret).
    pub handshake_hash: [u8; HASH_LEN],
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Split(..)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// `HKDF(chaining_key, input_key_material, 2)` of §4.3.
fn hkdf2(ck: &[u8; HASH_LEN], ikm: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let temp = hmac(ck, &[ikm]);
    let out1 = hmac(&temp, &[&[1]]);
    let out2 = hmac(&temp, &[&out1, &[2]]);
    (out1, out2)
}

/// AESGCM's nonce (§12.3): 32 bits of zeros, then the 64-bit counter big-endian.
fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

fn aead_key(k: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).expect("32 bytes is an AES-256 key"))
}

/// Encrypts `buf[..len]` in place and appends the tag; returns `len + TAG_LEN`.
pub fn seal(k: &[u8; 32], n: u64, ad: &[u8], buf: &mut [u8], len: usize) -> Result<usize, Error> {
    if buf.len() < len + TAG_LEN {
        return Err(Error::BufferTooSmall);
    }
    let (msg, rest) = buf.split_at_mut(len);
    let tag =
        aead_key(k).seal_in_place_separate_tag(nonce(n), Aad::from(ad), msg).map_err(|_| Error::BufferTooSmall)?;
    rest[..TAG_LEN].copy_from_slice(tag.as_ref());
    Ok(len + TAG_LEN)
}

/// Decrypts `buf` (ciphertext‖tag) in place; returns the plaintext length.
pub fn open(k: &[u8; 32], n: u64, ad: &[u8], buf: &mut [u8]) -> Result<usize, Error> {
    if buf.len() < TAG_LEN {
        return Err(Error::Truncated);
    }
    aead_key(k).open_in_place(nonce(n), Aad::from(ad), buf).map(|p| p.len()).map_err(|_| Error::Decrypt)
}

/// `SymmetricState` (§5.2) with its `CipherState` folded in. In NK and IK everything
/// encrypted is sent after a `MixKey`, so `k` is always set when it is encrypted.
#[derive(Clone)]
struct Symmetric {
    ck: [u8; HASH_LEN],
    h: [u8; HASH_LEN],
    k: Option<[u8; 32]>,
    n: u64,
}

impl Symmetric {
    /// `InitializeSymmetric(name)`, `MixHash(prologue)`, then the pre-message `<- s` that NK
    /// and IK share.
    fn new(name: &[u8], prologue: &[u8], responder_static: &[u8; DH_LEN]) -> Self {
        let mut h = [0u8; HASH_LEN];
        h[..name.len()].copy_from_slice(name);
        let mut s = Self { ck: h, h, k: None, n: 0 };
        s.mix_hash(prologue);
        s.mix_hash(responder_static);
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut d = Sha256::new();
        d.update(self.h);
        d.update(data);
        self.h = d.finalize().into();
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
    }

    /// `EncryptAndHash` of `buf[..len]` in place.
    fn encrypt_and_hash(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let k = self.k.expect("NK and IK encrypt only after MixKey");
        let n = seal(&k, self.n, &self.h, buf, len)?;
        self.n += 1;
        self.mix_hash(&buf[..n]);
        Ok(n)
    }

    /// `DecryptAndHash` of `buf` in place; returns the plaintext length.
    fn decrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let k = self.k.expect("NK and IK decrypt only after MixKey");
        let mut ct = [0u8; HASH_LEN];
        let mut d = Sha256::new();
        d.update(self.h);
        d.update(&*buf);
        ct.copy_from_slice(&d.finalize());
        let n = open(&k, self.n, &self.h, buf)?;
        self.n += 1;
        self.h = ct;
        Ok(n)
    }

    fn split(&self) -> Split {
        let (a, b) = hkdf2(&self.ck, &[]);
        Split { initiator_to_responder: a, responder_to_initiator: b, handshake_hash: self.h }
    }
}

/// An X25519 secret with its public half, ready for Diffie-Hellman (RFC 7748 §5).
///
/// X25519 is aws-lc's: s2n-bignum's formally verified x86-64 and AArch64 code. A v2 join
/// costs the relay two Diffie-Hellmans and one key generation, which is most of its CPU, and
/// this implementation does each in about 60% of the time of curve25519-dalek's fastest form
/// on the same machine (`docs/benchmarks/join-storm.md`). It clamps the secret as the RFC
/// says, accepts any 32-byte public key, and refuses an all-zero result. A clone shares the
/// key (an [`Arc`](std::sync::Arc)): an [`IkInitiator`] keeps the node's static key for its
/// answer without copying the secret.
#[derive(Clone)]
pub struct DhSecret {
    key: std::sync::Arc<PrivateKey>,
    public: [u8; DH_LEN],
}

impl DhSecret {
    /// From 32 secret bytes; computes the public key (one base-point multiplication).
    pub fn new(bytes: [u8; 32]) -> Self {
        let key = PrivateKey::from_private_key(&X25519, &bytes).expect("any 32 bytes are an X25519 secret");
        let public = key
            .compute_public_key()
            .expect("an X25519 secret has a public key")
            .as_ref()
            .try_into()
            .expect("an X25519 public key is 32 bytes");
        Self { key: std::sync::Arc::new(key), public }
    }

    /// The public key.
    pub fn public(&self) -> &[u8; DH_LEN] {
        &self.public
    }

    /// X25519 of this secret and `peer`, refusing an all-zero result (a peer key of low
    /// order).
    pub fn dh(&self, peer: &[u8; DH_LEN]) -> Result<[u8; 32], Error> {
        let mut shared = [0u8; 32];
        agreement::agree(&self.key, UnparsedPublicKey::new(&X25519, peer), Error::LowOrder, |k| {
            shared.copy_from_slice(k);
            Ok(())
        })?;
        Ok(shared)
    }
}

impl std::fmt::Debug for DhSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DhSecret(public {:02x?})", &self.public[..4])
    }
}

/// The client's side, between its first message and the relay's answer.
pub struct Initiator {
    sym: Symmetric,
    e: std::sync::Arc<DhSecret>,
}

/// An ephemeral key prepared for one responder: its public half and `es` computed once.
/// Every handshake that uses it shares the ephemeral key, which gives up forward secrecy
/// between those handshakes: it exists for load generators, which must not spend their
/// CPU on key generation. Clients use [`Initiator::write_first`] with a fresh key.
pub struct SharedEphemeral {
    e: std::sync::Arc<DhSecret>,
    es: [u8; 32],
    rs: [u8; DH_LEN],
}

impl SharedEphemeral {
    /// Prepares `e` for the responder `responder_static`.
    pub fn new(e: [u8; 32], responder_static: &[u8; DH_LEN]) -> Result<Self, Error> {
        let e = DhSecret::new(e);
        let es = e.dh(responder_static)?;
        Ok(Self { e: std::sync::Arc::new(e), es, rs: *responder_static })
    }
}

impl Initiator {
    /// [`write_first`](Self::write_first) with a [`SharedEphemeral`]: no public-key work.
    pub fn write_first_shared(
        prologue: &[u8],
        shared: &SharedEphemeral,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(Self, usize), Error> {
        let total = DH_LEN + payload.len() + TAG_LEN;
        if out.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let mut sym = Symmetric::new(PROTOCOL_NAME, prologue, &shared.rs);
        out[..DH_LEN].copy_from_slice(shared.e.public());
        sym.mix_hash(shared.e.public());
        sym.mix_key(&shared.es);
        out[DH_LEN..DH_LEN + payload.len()].copy_from_slice(payload);
        let n = sym.encrypt_and_hash(&mut out[DH_LEN..total], payload.len())?;
        Ok((Self { sym, e: shared.e.clone() }, DH_LEN + n))
    }

    /// Writes `-> e, es` with `payload` into `out`: `e.public ‖ AEAD(payload)`. `e` is the
    /// ephemeral secret (fresh from the OS RNG in production). Returns the initiator state
    /// and the message length, `DH_LEN + payload.len() + TAG_LEN`.
    pub fn write_first(
        prologue: &[u8],
        responder_static: &[u8; DH_LEN],
        e: [u8; 32],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(Self, usize), Error> {
        Self::write_first_shared(prologue, &SharedEphemeral::new(e, responder_static)?, payload, out)
    }

    /// The handshake hash after the first message (unique per join; the relay's replay
    /// cache and the client agree on it).
    pub fn hash(&self) -> [u8; HASH_LEN] {
        self.sym.h
    }

    /// Reads `<- e, ee` in place: `msg` is `e.public ‖ AEAD(payload)`; on success the
    /// payload is `msg[DH_LEN..DH_LEN + len]`. Success proves the responder holds the static
    /// secret. The state is not consumed, so a forged answer leaves it usable for the real one.
    pub fn read_second(&self, msg: &mut [u8]) -> Result<(usize, Split), Error> {
        if msg.len() < DH_LEN + TAG_LEN {
            return Err(Error::Truncated);
        }
        let mut sym = self.sym.clone();
        let (re, body) = msg.split_at_mut(DH_LEN);
        let re: [u8; DH_LEN] = (&*re).try_into().expect("split at DH_LEN");
        sym.mix_hash(&re);
        sym.mix_key(&self.e.dh(&re)?);
        let n = sym.decrypt_and_hash(body)?;
        Ok((n, sym.split()))
    }
}

/// The relay's side, between reading the first message and answering it.
#[derive(Clone)]
pub struct Responder {
    sym: Symmetric,
    re: [u8; DH_LEN],
}

impl Responder {
    /// Reads `-> e, es` in place with the static key `s`. On success the payload is
    /// `msg[DH_LEN..DH_LEN + len]`. Costs one X25519.
    pub fn read_first(prologue: &[u8], s: &DhSecret, msg: &mut [u8]) -> Result<(Self, usize), Error> {
        if msg.len() < DH_LEN + TAG_LEN {
            return Err(Error::Truncated);
        }
        let mut sym = Symmetric::new(PROTOCOL_NAME, prologue, s.public());
        let (re, body) = msg.split_at_mut(DH_LEN);
        let re: [u8; DH_LEN] = (&*re).try_into().expect("split at DH_LEN");
        sym.mix_hash(&re);
        sym.mix_key(&s.dh(&re)?);
        let n = sym.decrypt_and_hash(body)?;
        Ok((Self { sym, re }, n))
    }

    /// The handshake hash after the first message (what the replay cache remembers).
    pub fn hash(&self) -> [u8; HASH_LEN] {
        self.sym.h
    }

    /// Writes `<- e, ee` with `payload` into `out` and splits. `e` is the ephemeral secret.
    /// Costs one X25519 plus one base-point multiplication (the key generation).
    pub fn write_second(mut self, e: [u8; 32], payload: &[u8], out: &mut [u8]) -> Result<(usize, Split), Error> {
        let total = DH_LEN + payload.len() + TAG_LEN;
        if out.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let e = DhSecret::new(e);
        out[..DH_LEN].copy_from_slice(e.public());
        self.sym.mix_hash(e.public());
        self.sym.mix_key(&e.dh(&self.re)?);
        out[DH_LEN..DH_LEN + payload.len()].copy_from_slice(payload);
        let n = self.sym.encrypt_and_hash(&mut out[DH_LEN..total], payload.len())?;
        Ok((DH_LEN + n, self.sym.split()))
    }
}

/// The initiator of `Noise_IK_25519_AESGCM_SHA256`: a node opening a cascade leg to a node
/// whose static key it knows, authenticating with its own.
///
/// [`new`](Self::new) does the two Diffie-Hellmans that need only the keys (`es`, `ss`);
/// [`write_first`](Self::write_first) writes `-> e, es, s, ss` once;
/// [`read_second`](Self::read_second) reads `<- e, ee, se` and splits.
pub struct IkInitiator {
    e: DhSecret,
    s: DhSecret,
    rs: [u8; DH_LEN],
    es: [u8; 32],
    ss: [u8; 32],
    /// Set by `write_first`: the state after the first message.
    sym: Option<Symmetric>,
}

impl IkInitiator {
    /// Prepares a handshake from the static key `s` to `responder_static`, with the ephemeral
    /// secret `e` (fresh from the OS RNG in production). Costs three X25519s (the ephemeral's
    /// public key, `es`, `ss`); a low-order `responder_static` is refused here.
    pub fn new(e: [u8; 32], s: &DhSecret, responder_static: &[u8; DH_LEN]) -> Result<Self, Error> {
        let e = DhSecret::new(e);
        let es = e.dh(responder_static)?;
        let ss = s.dh(responder_static)?;
        Ok(Self { e, s: s.clone(), rs: *responder_static, es, ss, sym: None })
    }

    /// Writes `-> e, es, s, ss` with `payload` into `out`: `e.public ‖ AEAD(s.public) ‖
    /// AEAD(payload)`, returning its length, `IK_PAYLOAD_OFFSET + payload.len() + TAG_LEN`.
    /// Only once: a second call is [`Error::OutOfOrder`] (it would encrypt another payload
    /// under the same key and nonce).
    pub fn write_first(&mut self, prologue: &[u8], payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        if self.sym.is_some() {
            return Err(Error::OutOfOrder);
        }
        let total = IK_PAYLOAD_OFFSET + payload.len() + TAG_LEN;
        if out.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let mut sym = Symmetric::new(IK_PROTOCOL_NAME, prologue, &self.rs);
        out[..DH_LEN].copy_from_slice(self.e.public());
        sym.mix_hash(self.e.public());
        sym.mix_key(&self.es);
        out[DH_LEN..2 * DH_LEN].copy_from_slice(self.s.public());
        sym.encrypt_and_hash(&mut out[DH_LEN..IK_PAYLOAD_OFFSET], DH_LEN)?;
        sym.mix_key(&self.ss);
        out[IK_PAYLOAD_OFFSET..IK_PAYLOAD_OFFSET + payload.len()].copy_from_slice(payload);
        sym.encrypt_and_hash(&mut out[IK_PAYLOAD_OFFSET..total], payload.len())?;
        self.sym = Some(sym);
        Ok(total)
    }

    /// The handshake hash after the first message ([`Error::OutOfOrder`] before it).
    pub fn hash(&self) -> Result<[u8; HASH_LEN], Error> {
        self.sym.as_ref().map(|s| s.h).ok_or(Error::OutOfOrder)
    }

    /// Reads `<- e, ee, se` in place: `msg` is `e.public ‖ AEAD(payload)`; on success the
    /// payload is `msg[DH_LEN..DH_LEN + len]`, as in NK. Success proves the responder holds
    /// the static secret the first message was written to, and that it accepted this
    /// initiator's static key. The state is not consumed, so a forged answer leaves it
    /// usable for the real one.
    pub fn read_second(&self, msg: &mut [u8]) -> Result<(usize, Split), Error> {
        let mut sym = self.sym.clone().ok_or(Error::OutOfOrder)?;
        if msg.len() < DH_LEN + TAG_LEN {
            return Err(Error::Truncated);
        }
        let (re, body) = msg.split_at_mut(DH_LEN);
        let re: [u8; DH_LEN] = (&*re).try_into().expect("split at DH_LEN");
        sym.mix_hash(&re);
        sym.mix_key(&self.e.dh(&re)?);
        sym.mix_key(&self.s.dh(&re)?);
        let n = sym.decrypt_and_hash(body)?;
        Ok((n, sym.split()))
    }
}

impl std::fmt::Debug for IkInitiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkInitiator").field("s", &self.s).field("written", &self.sym.is_some()).finish()
    }
}

/// The responder of `Noise_IK_25519_AESGCM_SHA256`, between reading the first message and
/// answering it. It keeps the initiator's static public key, not its own secret: the answer
/// needs only the responder's fresh ephemeral.
#[derive(Clone)]
pub struct IkResponder {
    sym: Symmetric,
    re: [u8; DH_LEN],
    rs: [u8; DH_LEN],
}

impl IkResponder {
    /// Reads `-> e, es, s, ss` in place with the static key `s`. On success returns the
    /// state, the initiator's static public key (authenticated by `ss` once the payload
    /// decrypts; whether that key may open a leg is the caller's decision), and the payload
    /// length: the payload is `msg[IK_PAYLOAD_OFFSET..IK_PAYLOAD_OFFSET + len]`. Costs two
    /// X25519s; a low-order ephemeral or static key is [`Error::LowOrder`].
    pub fn read_first(prologue: &[u8], s: &DhSecret, msg: &mut [u8]) -> Result<(Self, [u8; DH_LEN], usize), Error> {
        if msg.len() < IK_PAYLOAD_OFFSET + TAG_LEN {
            return Err(Error::Truncated);
        }
        let mut sym = Symmetric::new(IK_PROTOCOL_NAME, prologue, s.public());
        let (re, rest) = msg.split_at_mut(DH_LEN);
        let re: [u8; DH_LEN] = (&*re).try_into().expect("split at DH_LEN");
        sym.mix_hash(&re);
        sym.mix_key(&s.dh(&re)?);
        let (enc_s, body) = rest.split_at_mut(DH_LEN + TAG_LEN);
        sym.decrypt_and_hash(enc_s)?;
        let rs: [u8; DH_LEN] = enc_s[..DH_LEN].try_into().expect("a decrypted static key is DH_LEN bytes");
        sym.mix_key(&s.dh(&rs)?);
        let n = sym.decrypt_and_hash(body)?;
        Ok((Self { sym, re, rs }, rs, n))
    }

    /// The handshake hash after the first message (what a replay cache remembers).
    pub fn hash(&self) -> [u8; HASH_LEN] {
        self.sym.h
    }

    /// Writes `<- e, ee, se` with `payload` into `out` and splits. `e` is the ephemeral
    /// secret. Returns the length, `DH_LEN + payload.len() + TAG_LEN`. Costs two X25519s plus
    /// the key generation.
    pub fn write_second(mut self, e: [u8; 32], payload: &[u8], out: &mut [u8]) -> Result<(usize, Split), Error> {
        let total = DH_LEN + payload.len() + TAG_LEN;
        if out.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let e = DhSecret::new(e);
        out[..DH_LEN].copy_from_slice(e.public());
        self.sym.mix_hash(e.public());
        self.sym.mix_key(&e.dh(&self.re)?);
        self.sym.mix_key(&e.dh(&self.rs)?);
        out[DH_LEN..DH_LEN + payload.len()].copy_from_slice(payload);
        let n = self.sym.encrypt_and_hash(&mut out[DH_LEN..total], payload.len())?;
        Ok((DH_LEN + n, self.sym.split()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x25519_dalek::{PublicKey, StaticSecret};

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The cacophony vector for `Noise_NK_25519_AESGCM_SHA256`: both handshake messages,
    /// the handshake hash, and four transport messages under the split keys.
    #[test]
    fn cacophony_vector() {
        let prologue = hex::decode("4a6f686e2047616c74").unwrap();
        let init_e: [u8; 32] = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a");
        let resp_s: [u8; 32] = h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893");
        let resp_e: [u8; 32] = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b");
        let rs: [u8; 32] = h("31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62");
        let s = DhSecret::new(resp_s);
        assert_eq!(s.public(), &rs);

        let p0 = hex::decode("4c756477696720766f6e204d69736573").unwrap();
        let c0 = hex::decode("ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c794475ab4d66d222457dd414bc5f296bc7b4078cc7d72af5192628b68bca7d28844b").unwrap();
        let mut out = [0u8; 256];
        let (init, n) = Initiator::write_first(&prologue, &rs, init_e, &p0, &mut out).unwrap();
        assert_eq!(&out[..n], &c0[..]);

        let mut msg = c0.clone();
        let (resp, len) = Responder::read_first(&prologue, &s, &mut msg).unwrap();
        assert_eq!(&msg[DH_LEN..DH_LEN + len], &p0[..]);
        assert_eq!(resp.hash(), init.hash());

        let p1 = hex::decode("4d757272617920526f746862617264").unwrap();
        let c1 = hex::decode("95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884303c7d89310502baa8299520ba451624c3c0492e2698f8d457c32400b91fd8a").unwrap();
        let (n, rsplit) = resp.write_second(resp_e, &p1, &mut out).unwrap();
        assert_eq!(&out[..n], &c1[..]);
        let mut msg = c1.clone();
        let (len, isplit) = init.read_second(&mut msg).unwrap();
        assert_eq!(&msg[DH_LEN..DH_LEN + len], &p1[..]);
        assert_eq!(isplit, rsplit);
        assert_eq!(isplit.handshake_hash, h::<32>("f8a87aa8add4fea6e33365b89637486c2f6564546ce29d1df9ce9abf78c507d7"));

        // Transport messages alternate initiator → responder (c1) and back (c2), each
        // direction counting its nonce from 0; the associated data is empty.
        let transport = [
            ("462e20412e20486179656b", "304f70c37c93573099228016d54cb15213af94eb598d1b17df1153"),
            ("4361726c204d656e676572", "a1bf6c954529f29b31d8ae9f67d2c18dbd332aa1a0918690c6d80b"),
            (
                "4a65616e2d426170746973746520536179",
                "2e8f3e51888360b2b2d83a64dde9943c7dd3c5e84ac7c4b4e2d5cfc025b6c854d3",
            ),
            (
                "457567656e2042f6686d20766f6e2042617765726b",
                "8498bf41212a8b87c9eeb408274c75b3558fd0530865b5a7932d4b3af812d85b3df27e6f33",
            ),
        ];
        for (i, (p, c)) in transport.iter().enumerate() {
            let (p, c) = (hex::decode(p).unwrap(), hex::decode(c).unwrap());
            let k = if i % 2 == 0 { &isplit.initiator_to_responder } else { &isplit.responder_to_initiator };
            let nonce = (i / 2) as u64;
            let mut buf = p.clone();
            buf.resize(p.len() + TAG_LEN, 0);
            assert_eq!(seal(k, nonce, &[], &mut buf, p.len()).unwrap(), c.len());
            assert_eq!(buf, c, "transport message {i}");
            assert_eq!(open(k, nonce, &[], &mut buf).unwrap(), p.len());
            assert_eq!(&buf[..p.len()], &p[..]);
        }
    }

    #[test]
    fn wrong_static_key_or_tampering_fails_and_answers_are_checked() {
        let s = DhSecret::new([9u8; 32]);
        let s_pub = *s.public();
        let other = *DhSecret::new([8u8; 32]).public();
        let mut out = [0u8; 128];
        // Encrypted to another relay's key: this relay cannot read it.
        let (_, n) = Initiator::write_first(b"p", &other, [1; 32], b"secret", &mut out).unwrap();
        assert_eq!(Responder::read_first(b"p", &s, &mut out[..n].to_vec()).err(), Some(Error::Decrypt));
        // A different prologue fails too.
        let (init, n) = Initiator::write_first(b"p", &s_pub, [1; 32], b"secret", &mut out).unwrap();
        assert_eq!(Responder::read_first(b"q", &s, &mut out[..n].to_vec()).err(), Some(Error::Decrypt));
        // Every flipped bit of the first message fails.
        for bit in 0..n * 8 {
            let mut m = out[..n].to_vec();
            m[bit / 8] ^= 1 << (bit % 8);
            assert!(Responder::read_first(b"p", &s, &mut m).is_err(), "bit {bit}");
        }
        // Every truncation fails.
        for cut in 0..n {
            assert!(Responder::read_first(b"p", &s, &mut out[..cut].to_vec()).is_err());
        }
        let (resp, _) = Responder::read_first(b"p", &s, &mut out[..n].to_vec()).unwrap();
        let mut ans = [0u8; 128];
        let (m, _) = resp.write_second([2; 32], b"ok", &mut ans).unwrap();
        // An answer from someone without the static secret: an impostor reading the client's
        // ephemeral key can only answer with its own "first message" keys.
        let (impostor, _) = Responder::read_first(b"p", &DhSecret::new([8u8; 32]), &mut out[..n].to_vec())
            .map_or((None, 0), |(r, n)| (Some(r), n));
        assert!(impostor.is_none(), "an impostor cannot even read the join");
        let mut forged = ans[..m].to_vec();
        forged[40] ^= 1;
        assert_eq!(init.read_second(&mut forged).err(), Some(Error::Decrypt));
        // The real answer still works after a forged one.
        let (len, _) = init.read_second(&mut ans[..m]).unwrap();
        assert_eq!(&ans[DH_LEN..DH_LEN + len], b"ok");
    }

    #[test]
    fn a_shared_ephemeral_writes_the_same_first_message() {
        let rs = *DhSecret::new([9u8; 32]).public();
        let shared = SharedEphemeral::new([3; 32], &rs).unwrap();
        let (mut a, mut b) = ([0u8; 128], [0u8; 128]);
        let (_, n) = Initiator::write_first(b"p", &rs, [3; 32], b"payload", &mut a).unwrap();
        let (_, m) = Initiator::write_first_shared(b"p", &shared, b"payload", &mut b).unwrap();
        assert_eq!(&a[..n], &b[..m]);
    }

    /// aws-lc's X25519 gives RFC 7748's result (the §5.2 vector) and curve25519-dalek's
    /// ladder's for random keys, on the curve and on the twist.
    #[test]
    fn dh_matches_x25519() {
        let k: [u8; 32] = h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u: [u8; 32] = h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let want: [u8; 32] = h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        assert_eq!(DhSecret::new(k).dh(&u).unwrap(), want);
        assert_eq!(DhSecret::new(k).public(), PublicKey::from(&StaticSecret::from(k)).as_bytes());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand32 = || {
            let mut b = [0u8; 32];
            for c in b.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            b
        };
        let (mut on_curve, mut on_twist) = (0, 0);
        for _ in 0..300 {
            let k = rand32();
            let (s, ours) = (StaticSecret::from(k), DhSecret::new(k));
            // Random u-coordinates: about half are on the twist.
            let mut u = rand32();
            u[31] &= 0x7f;
            let ladder = s.diffie_hellman(&PublicKey::from(u)).to_bytes();
            match curve25519_dalek::montgomery::MontgomeryPoint(u).to_edwards(0) {
                Some(_) => on_curve += 1,
                None => on_twist += 1,
            }
            if ladder == [0; 32] {
                assert_eq!(ours.dh(&u), Err(Error::LowOrder));
            } else {
                assert_eq!(ours.dh(&u).unwrap(), ladder);
            }
        }
        assert!(on_curve > 50 && on_twist > 50, "{on_curve} on the curve, {on_twist} on the twist");
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let s = DhSecret::new([9u8; 32]);
        let mut m = [0u8; DH_LEN + TAG_LEN + 4];
        assert_eq!(Responder::read_first(b"p", &s, &mut m).err(), Some(Error::LowOrder));
    }

    /// The cacophony vector for `Noise_IK_25519_AESGCM_SHA256`: both handshake messages,
    /// the static key the responder learns, the handshake hash, and four transport messages.
    #[test]
    fn ik_cacophony_vector() {
        let prologue = hex::decode("4a6f686e2047616c74").unwrap();
        let init_s = DhSecret::new(h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"));
        let init_e: [u8; 32] = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a");
        let resp_s = DhSecret::new(h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"));
        let resp_e: [u8; 32] = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b");
        let rs: [u8; 32] = h("31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62");
        assert_eq!(resp_s.public(), &rs);

        let p0 = hex::decode("4c756477696720766f6e204d69736573").unwrap();
        let c0 = hex::decode("ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444e417bc55c7a8166c993356c1be41ef67818a292426f301556c7f26b21d25ddb097153891a9a956cff47b83e63ad8d701c1342c209cff1ca5ecd43402762ac249e3bd3a4c0a145fe07cb5dae28ea13a3").unwrap();
        let mut out = [0u8; 256];
        let mut init = IkInitiator::new(init_e, &init_s, &rs).unwrap();
        let n = init.write_first(&prologue, &p0, &mut out).unwrap();
        assert_eq!(n, DH_LEN + DH_LEN + TAG_LEN + p0.len() + TAG_LEN);
        assert_eq!(&out[..n], &c0[..]);

        let mut msg = c0.clone();
        let (resp, their_static, len) = IkResponder::read_first(&prologue, &resp_s, &mut msg).unwrap();
        assert_eq!(&their_static, init_s.public());
        assert_eq!(&msg[IK_PAYLOAD_OFFSET..IK_PAYLOAD_OFFSET + len], &p0[..]);
        assert_eq!(resp.hash(), init.hash().unwrap());

        let p1 = hex::decode("4d757272617920526f746862617264").unwrap();
        let c1 = hex::decode("95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843af2ccf9972e22afc67aeafcd25162f7f98c363b7762e3e4cb7d272e39f27a5").unwrap();
        let (n, rsplit) = resp.write_second(resp_e, &p1, &mut out).unwrap();
        assert_eq!(&out[..n], &c1[..]);
        let mut msg = c1.clone();
        let (len, isplit) = init.read_second(&mut msg).unwrap();
        assert_eq!(&msg[DH_LEN..DH_LEN + len], &p1[..]);
        assert_eq!(isplit, rsplit);
        assert_eq!(isplit.handshake_hash, h::<32>("669c8640d9e42a3cda2f232f78597ceefb01daa6e3df81181ccce6fc6b5026bf"));

        let transport = [
            ("462e20412e20486179656b", "66acfc92e3197de166809e6d4d5d003dcc819a84bc3522ca53c9d9"),
            ("4361726c204d656e676572", "71f89aa6533a6de70b0826864dd75f60806ee40170c16290189eb3"),
            (
                "4a65616e2d426170746973746520536179",
                "4795a3423550c8bf00386bd496a3e2c76c10669d2a75ab8f79b5094c5412a25705",
            ),
            (
                "457567656e2042f6686d20766f6e2042617765726b",
                "aa0bb39097555c918e40be82abc2b909eb79d9eb87adb07e268fc37323a6cf904fd01fb391",
            ),
        ];
        for (i, (p, c)) in transport.iter().enumerate() {
            let (p, c) = (hex::decode(p).unwrap(), hex::decode(c).unwrap());
            let k = if i % 2 == 0 { &isplit.initiator_to_responder } else { &isplit.responder_to_initiator };
            let mut buf = p.clone();
            buf.resize(p.len() + TAG_LEN, 0);
            seal(k, (i / 2) as u64, &[], &mut buf, p.len()).unwrap();
            assert_eq!(buf, c, "transport message {i}");
        }
    }

    /// One IK first message from `[1; 32]` to `[9; 32]`'s key, with the prologue `p`.
    fn ik_first(e: u8, payload: &[u8]) -> (IkInitiator, Vec<u8>) {
        let s = DhSecret::new([1; 32]);
        let rs = *DhSecret::new([9; 32]).public();
        let mut init = IkInitiator::new([e; 32], &s, &rs).unwrap();
        let mut out = [0u8; 256];
        let n = init.write_first(b"p", payload, &mut out).unwrap();
        (init, out[..n].to_vec())
    }

    #[test]
    fn ik_wrong_responder_key_or_tampering_fails() {
        let s = DhSecret::new([9; 32]);
        let (init, first) = ik_first(2, b"leg");
        // Another node cannot read it, nor can this one under another prologue.
        let other = DhSecret::new([8; 32]);
        assert_eq!(IkResponder::read_first(b"p", &other, &mut first.clone()).err(), Some(Error::Decrypt));
        assert_eq!(IkResponder::read_first(b"q", &s, &mut first.clone()).err(), Some(Error::Decrypt));
        for bit in 0..first.len() * 8 {
            let mut m = first.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            assert!(IkResponder::read_first(b"p", &s, &mut m).is_err(), "bit {bit}");
        }
        for cut in 0..first.len() {
            assert!(IkResponder::read_first(b"p", &s, &mut first[..cut].to_vec()).is_err(), "cut {cut}");
        }
        let (resp, _, _) = IkResponder::read_first(b"p", &s, &mut first.clone()).unwrap();
        let mut ans = [0u8; 128];
        let (m, rsplit) = resp.write_second([3; 32], b"ok", &mut ans).unwrap();
        for bit in 0..m * 8 {
            let mut a = ans[..m].to_vec();
            a[bit / 8] ^= 1 << (bit % 8);
            assert!(init.read_second(&mut a).is_err(), "answer bit {bit}");
        }
        // The answer of a responder that read the join but answers for another initiator
        // static key (the `se` term) does not decrypt either.
        let (resp, _, _) = IkResponder::read_first(b"p", &s, &mut first.clone()).unwrap();
        let mut wrong = resp.clone();
        wrong.rs = *DhSecret::new([7; 32]).public();
        let (w, _) = wrong.write_second([3; 32], b"ok", &mut ans).unwrap();
        assert_eq!(init.read_second(&mut ans[..w]).err(), Some(Error::Decrypt));
        // The real answer still works after forged ones.
        let (m, _) = resp.write_second([3; 32], b"ok", &mut ans).unwrap();
        let (len, isplit) = init.read_second(&mut ans[..m]).unwrap();
        assert_eq!(&ans[DH_LEN..DH_LEN + len], b"ok");
        assert_eq!(isplit, rsplit);
    }

    #[test]
    fn ik_responder_learns_exactly_the_initiators_static_key() {
        let s = DhSecret::new([9; 32]);
        let rs = *s.public();
        for k in 1..=4u8 {
            let init_s = DhSecret::new([k; 32]);
            let mut init = IkInitiator::new([k + 100; 32], &init_s, &rs).unwrap();
            let mut out = [0u8; 128];
            let n = init.write_first(b"p", b"", &mut out).unwrap();
            assert_eq!(n, IK_PAYLOAD_OFFSET + TAG_LEN);
            let (_, theirs, len) = IkResponder::read_first(b"p", &s, &mut out[..n]).unwrap();
            assert_eq!((&theirs, len), (init_s.public(), 0));
        }
        // Another initiator's static key (same ephemeral, so `es` and the encrypted key
        // check) in front of a payload written under the first one's `ss` fails: the key
        // is authenticated, not merely carried.
        let (_, a) = ik_first(2, b"x");
        let mut b = {
            let s7 = DhSecret::new([7; 32]);
            let mut i = IkInitiator::new([2; 32], &s7, &rs).unwrap();
            let mut out = [0u8; 128];
            let n = i.write_first(b"p", b"x", &mut out).unwrap();
            out[..n].to_vec()
        };
        b[IK_PAYLOAD_OFFSET..].copy_from_slice(&a[IK_PAYLOAD_OFFSET..]);
        assert_eq!(IkResponder::read_first(b"p", &s, &mut b).err(), Some(Error::Decrypt));
    }

    #[test]
    fn ik_steps_in_order_only() {
        let s = DhSecret::new([1; 32]);
        let rs = *DhSecret::new([9; 32]).public();
        let mut init = IkInitiator::new([2; 32], &s, &rs).unwrap();
        assert_eq!(init.hash().err(), Some(Error::OutOfOrder));
        assert_eq!(init.read_second(&mut [0u8; 64]).err(), Some(Error::OutOfOrder));
        let mut out = [0u8; 128];
        assert_eq!(init.write_first(b"p", b"x", &mut out[..IK_PAYLOAD_OFFSET + 16]).err(), Some(Error::BufferTooSmall));
        init.write_first(b"p", b"x", &mut out).unwrap();
        // A second first message would reuse the key and nonce for another payload.
        assert_eq!(init.write_first(b"p", b"y", &mut out).err(), Some(Error::OutOfOrder));
    }

    /// The eight-element subgroup's points (RFC 7748 §6.1: refuse the all-zero output), one
    /// in each place a peer's key enters an IK handshake.
    #[test]
    fn ik_low_order_keys_are_refused() {
        let low: [u8; 32] = h("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
        assert_eq!(DhSecret::new([5; 32]).dh(&low).err(), Some(Error::LowOrder));
        let s = DhSecret::new([9; 32]);
        // A low-order responder static key.
        assert_eq!(IkInitiator::new([2; 32], &DhSecret::new([1; 32]), &low).err(), Some(Error::LowOrder));
        assert_eq!(IkInitiator::new([2; 32], &DhSecret::new([1; 32]), &[0; 32]).err(), Some(Error::LowOrder));
        // A low-order ephemeral in the first message.
        let (init, mut first) = ik_first(2, b"x");
        first[..DH_LEN].copy_from_slice(&low);
        assert_eq!(IkResponder::read_first(b"p", &s, &mut first).err(), Some(Error::LowOrder));
        // A low-order static key, properly encrypted (as only a hand-built message can be).
        let e = DhSecret::new([2; 32]);
        let mut sym = Symmetric::new(IK_PROTOCOL_NAME, b"p", s.public());
        let mut m = [0u8; IK_PAYLOAD_OFFSET + TAG_LEN];
        m[..DH_LEN].copy_from_slice(e.public());
        sym.mix_hash(e.public());
        sym.mix_key(&e.dh(s.public()).unwrap());
        m[DH_LEN..2 * DH_LEN].copy_from_slice(&low);
        sym.encrypt_and_hash(&mut m[DH_LEN..IK_PAYLOAD_OFFSET], DH_LEN).unwrap();
        assert_eq!(IkResponder::read_first(b"p", &s, &mut m).err(), Some(Error::LowOrder));
        // A low-order ephemeral in the answer.
        let mut ans = [0u8; DH_LEN + TAG_LEN];
        ans[..DH_LEN].copy_from_slice(&low);
        assert_eq!(init.read_second(&mut ans).err(), Some(Error::LowOrder));
    }
}
