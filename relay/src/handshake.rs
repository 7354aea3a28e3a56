//! Session keys for a join.
//!
//! **v2** ([`SessionSecrets::from_split`]): the keys come from the Noise NK handshake
//! ([`crate::noise`], [`crate::proto::v2`]). Each direction's cipher key from `Split()` is
//! the input keying material of an HKDF-SHA256 salted with the handshake hash, which
//! expands to that direction's SRTP master key‖salt and its in-room message key (AES-256-GCM,
//! [`crate::proto::msg`]); the control MAC key comes from both.
//! The keys are forward-secret: they depend on both sides' ephemeral keys.
//!
//! **v1** (kept for apps that allow v1 joins during a migration): the client sends an ephemeral X25519 key share in its join; the relay answers with its
//! own in join-ok. Both compute the shared secret and run HKDF-SHA256 (RFC 5869) over it,
//! salted with a hash of the transcript (the exact join datagram and the relay's share), so
//! the keys are bound to everything the join said: app, room, profile, SSRCs and
//! credentials. From one PRK come three keys:
//!
//! - `c2r`: SRTP master key‖salt for client → relay (the uplink);
//! - `r2c`: SRTP master key‖salt for relay → client (the downlink);
//! - `ctrl`: an HMAC-SHA256 key for key confirmation, keepalives and leaves.
//!
//! Media keys never cross the wire. Join-ok carries `confirm`, a MAC under `ctrl` that
//! proves the relay derived the same keys. A low-order client share (all-zero shared
//! secret) is refused.
#![forbid(unsafe_code)]

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::noise::Split;
use crate::proto::{self, MsgType, Ticket, KEY_LEN, MAC_LEN};
use crate::srtp::Profile;

/// Longest SRTP master key‖salt (16 + 14).
pub const MAX_MASTER_LEN: usize = 30;

/// Errors of the key agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer's key share is of low order: the shared secret would be all zero.
    #[error("X25519 key share is of low order")]
    LowOrderShare,
    /// The key-confirmation MAC in join-ok does not verify.
    #[error("relay key confirmation failed")]
    BadConfirm,
}

/// SRTP master key‖salt for one direction.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    bytes: [u8; MAX_MASTER_LEN],
    profile: Profile,
}

impl MasterKey {
    /// The master key.
    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.profile.master_key_len()]
    }
    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        let k = self.profile.master_key_len();
        &self.bytes[k..k + self.profile.master_salt_len()]
    }
    /// Key‖salt, as ffmpeg's `-srtp_out_params` and SDES `inline:` want it (before base64).
    pub fn key_salt(&self) -> &[u8] {
        &self.bytes[..self.profile.master_key_len() + self.profile.master_salt_len()]
    }
    /// The profile these are for.
    pub fn profile(&self) -> Profile {
        self.profile
    }
    /// Derives the SRTP session keys.
    pub fn session_keys(&self) -> crate::srtp::SessionKeys {
        crate::srtp::SessionKeys::new(self.profile, self.key(), self.salt())
            .expect("master key and salt lengths come from the profile")
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Everything a session needs, on either side.
#[derive(Clone)]
pub struct SessionSecrets {
    /// The protocol version of the join that made them ([`proto::VERSION`] or
    /// [`proto::VERSION_2`]); tickets carry it and are MAC'd with it.
    pub version: u8,
    /// Client → relay SRTP master.
    pub c2r: MasterKey,
    /// Relay → client SRTP master.
    pub r2c: MasterKey,
    /// Control MAC key.
    pub ctrl: [u8; 32],
    /// In-room message keys (v2 sessions only; v1 sessions cannot send or receive messages).
    pub msg: Option<MessageKeys>,
}

/// A v2 session's AES-256-GCM keys for in-room messages ([`crate::proto::msg`]), one per
/// direction.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageKeys {
    /// Client → relay.
    pub c2r: [u8; 32],
    /// Relay → client.
    pub r2c: [u8; 32],
}

impl std::fmt::Debug for MessageKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKeys(..)")
    }
}

impl std::fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecrets(..)")
    }
}

/// An ephemeral key pair. The secret is filled from the OS RNG, or from given bytes in
/// deterministic tests.
pub struct KeyPair {
    secret: StaticSecret,
    /// The public share.
    pub public: [u8; KEY_LEN],
}

impl KeyPair {
    /// From 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// From the OS RNG.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).expect("the OS RNG is available");
        Self::from_bytes(b)
    }

    /// Runs the agreement against the peer's share and derives the session secrets.
    /// `join` is the exact join datagram; `relay_share` the relay's public share.
    pub fn agree(
        &self,
        peer: &[u8; KEY_LEN],
        join: &[u8],
        relay_share: &[u8; KEY_LEN],
        profile: Profile,
    ) -> Result<SessionSecrets, Error> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(Error::LowOrderShare);
        }
        let mut th = Sha256::new();
        th.update(b"edgerelay/v1 transcript");
        th.update((join.len() as u32).to_be_bytes());
        th.update(join);
        th.update(relay_share);
        let transcript = th.finalize();
        let hk = Hkdf::<Sha256>::new(Some(&transcript), shared.as_bytes());
        let master = |label: &[u8]| {
            let mut bytes = [0u8; MAX_MASTER_LEN];
            let n = profile.master_key_len() + profile.master_salt_len();
            hk.expand(label, &mut bytes[..n]).expect("n is far below 255 × 32");
            MasterKey { bytes, profile }
        };
        let mut ctrl = [0u8; 32];
        hk.expand(b"edgerelay/v1 ctrl", &mut ctrl).expect("32 bytes is a valid HKDF length");
        Ok(SessionSecrets {
            version: proto::VERSION,
            c2r: master(b"edgerelay/v1 c2r srtp"),
            r2c: master(b"edgerelay/v1 r2c srtp"),
            ctrl,
            msg: None,
        })
    }

    /// The 32 secret bytes (deterministic tests derive further keys from them).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }
}

/// A 32-byte secret derived from `seed` and a counter (SHA-256): fresh per-attempt
/// ephemeral keys for a client built from one seeded key.
pub fn derive_secret(seed: &[u8; 32], counter: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"edgerelay/v2 ephemeral");
    h.update(seed);
    h.update(counter.to_be_bytes());
    h.finalize().into()
}

/// HMAC-SHA256 over `parts` under `key`, truncated to [`MAC_LEN`].
pub(crate) fn mac16(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    let full = m.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// Constant-time equality.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

impl SessionSecrets {
    /// A v2 session's keys from the Noise split.
    pub fn from_split(split: &Split, profile: Profile) -> Self {
        let n = profile.master_key_len() + profile.master_salt_len();
        let master = |ikm: &[u8; 32], label: &[u8]| {
            let mut bytes = [0u8; MAX_MASTER_LEN];
            Hkdf::<Sha256>::new(Some(&split.handshake_hash), ikm)
                .expand(label, &mut bytes[..n])
                .expect("n is far below 255 × 32");
            MasterKey { bytes, profile }
        };
        let mut both = [0u8; 64];
        both[..32].copy_from_slice(&split.initiator_to_responder);
        both[32..].copy_from_slice(&split.responder_to_initiator);
        let mut ctrl = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&split.handshake_hash), &both)
            .expand(b"edgerelay/v2 ctrl", &mut ctrl)
            .expect("32 bytes is a valid HKDF length");
        let aead = |ikm: &[u8; 32], label: &[u8]| {
            let mut k = [0u8; 32];
            Hkdf::<Sha256>::new(Some(&split.handshake_hash), ikm)
                .expand(label, &mut k)
                .expect("32 bytes is a valid HKDF length");
            k
        };
        Self {
            version: proto::VERSION_2,
            c2r: master(&split.initiator_to_responder, b"edgerelay/v2 c2r srtp"),
            r2c: master(&split.responder_to_initiator, b"edgerelay/v2 r2c srtp"),
            ctrl,
            msg: Some(MessageKeys {
                c2r: aead(&split.initiator_to_responder, b"edgerelay/v2 c2r msg"),
                r2c: aead(&split.responder_to_initiator, b"edgerelay/v2 r2c msg"),
            }),
        }
    }

    /// The join-ok key confirmation for `session`.
    pub fn confirm(&self, session: u64) -> [u8; MAC_LEN] {
        mac16(&self.ctrl, &[b"edgerelay/v1 join-ok", &session.to_be_bytes()])
    }

    /// Checks a join-ok key confirmation (constant time).
    pub fn verify_confirm(&self, session: u64, tag: &[u8; MAC_LEN]) -> Result<(), Error> {
        if ct_eq(&self.confirm(session), tag) {
            Ok(())
        } else {
            Err(Error::BadConfirm)
        }
    }

    /// Builds an authenticated ticket (keepalive, keepalive-ack, leave, address-changed) of
    /// this session's protocol version.
    pub fn ticket(&self, ty: MsgType, session: u64, counter: u64) -> Ticket {
        let mac = mac16(&self.ctrl, &[&Ticket::mac_input(self.version, ty, session, counter)]);
        Ticket { version: self.version, ty, session, counter, mac }
    }

    /// Checks a ticket's version and MAC (constant time). The caller checks the counter.
    pub fn verify_ticket(&self, t: &Ticket) -> bool {
        t.version == self.version
            && ct_eq(&mac16(&self.ctrl, &[&Ticket::mac_input(t.version, t.ty, t.session, t.counter)]), &t.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_directions_differ() {
        let client = KeyPair::from_bytes([1; 32]);
        let relay = KeyPair::from_bytes([2; 32]);
        let join = b"join bytes";
        for profile in Profile::ALL {
            let c = client.agree(&relay.public, join, &relay.public, profile).unwrap();
            let r = relay.agree(&client.public, join, &relay.public, profile).unwrap();
            assert_eq!(c.c2r, r.c2r);
            assert_eq!(c.r2c, r.r2c);
            assert_eq!(c.ctrl, r.ctrl);
            assert_ne!(c.c2r.key_salt(), c.r2c.key_salt());
            assert_eq!(c.c2r.key_salt().len(), profile.master_key_len() + profile.master_salt_len());
            r.verify_confirm(7, &c.confirm(7)).unwrap();
            assert_eq!(r.verify_confirm(8, &c.confirm(7)), Err(Error::BadConfirm));
        }
    }

    #[test]
    fn keys_are_bound_to_the_transcript() {
        let client = KeyPair::from_bytes([1; 32]);
        let relay = KeyPair::from_bytes([2; 32]);
        let p = Profile::AesCm128HmacSha1_80;
        let a = client.agree(&relay.public, b"join A", &relay.public, p).unwrap();
        let b = client.agree(&relay.public, b"join B", &relay.public, p).unwrap();
        assert_ne!(a.c2r, b.c2r);
        assert_ne!(a.ctrl, b.ctrl);
    }

    #[test]
    fn v2_keys_differ_per_direction_and_tickets_carry_the_version() {
        let split = Split { initiator_to_responder: [1; 32], responder_to_initiator: [2; 32], handshake_hash: [3; 32] };
        let s = SessionSecrets::from_split(&split, Profile::AesCm128HmacSha1_80);
        assert_ne!(s.c2r.key_salt(), s.r2c.key_salt());
        let other = SessionSecrets::from_split(&Split { handshake_hash: [4; 32], ..split.clone() }, s.c2r.profile());
        assert_ne!(other.c2r, s.c2r, "keys are bound to the handshake hash");
        let (m, o) = (s.msg.clone().unwrap(), other.msg.unwrap());
        assert_ne!(m.c2r, m.r2c, "message keys differ per direction");
        assert_ne!(m.c2r, o.c2r, "message keys are bound to the handshake hash");
        assert_ne!(m.c2r, split.initiator_to_responder, "message keys are not the Noise transport keys");
        assert_ne!(&m.c2r[..16], s.c2r.key(), "nor the SRTP master");
        let t = s.ticket(MsgType::Keepalive, 5, 1);
        assert_eq!(t.version, proto::VERSION_2);
        assert!(s.verify_ticket(&t));
        let mut v1 = t;
        v1.version = proto::VERSION;
        assert!(!s.verify_ticket(&v1), "a v1 ticket does not verify for a v2 session");
    }

    #[test]
    fn low_order_share_is_refused() {
        let relay = KeyPair::from_bytes([2; 32]);
        let zero = [0u8; 32];
        assert_eq!(relay.agree(&zero, b"j", &relay.public, Profile::AeadAes128Gcm).unwrap_err(), Error::LowOrderShare);
    }

    #[test]
    fn tickets_verify_and_detect_tampering() {
        let client = KeyPair::from_bytes([1; 32]);
        let relay = KeyPair::from_bytes([2; 32]);
        let s = client.agree(&relay.public, b"j", &relay.public, Profile::AeadAes128Gcm).unwrap();
        let t = s.ticket(MsgType::Keepalive, 5, 1);
        assert!(s.verify_ticket(&t));
        let mut bad = t;
        bad.counter = 2;
        assert!(!s.verify_ticket(&bad));
        let mut bad = t;
        bad.ty = MsgType::Leave;
        assert!(!s.verify_ticket(&bad));
    }
}
