//! The relay's static identity: an X25519 key pair that clients know in advance (they get
//! it from the app back end, beside the UserSig) and that join v2 encrypts to.
//!
//! The key lives in one TOML file, mode 0600, written atomically (a temporary file, then a
//! rename), so a crash never leaves half a key:
//!
//! ```toml
//! # edgerelay relay identity: X25519 secret keys. Keep this file private.
//! current = "<base64 secret>"
//! previous = "<base64 secret>"   # optional: still valid during a rotation's overlap
//! previous_until = 1767225600     # unix seconds when `previous` stops being accepted
//! ```
//!
//! Rotation keeps two keys valid: the new `current`, and the old one as `previous` until
//! `previous_until`, so clients holding the old key keep joining while their back ends
//! learn the new one. Public keys are shown as standard base64 (44 characters), as
//! WireGuard shows its keys.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::noise::DhSecret;

/// Errors loading, creating or rotating an identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file could not be read or written.
    #[error("relay key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not parse.
    #[error("relay key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A public key given on a command line or in JSON is not 32 bytes of base64.
    #[error("relay key {0:?} is not a base64 X25519 public key (44 characters, as `relayd key show` prints)")]
    BadPublicKey(String),
}

/// A relay's public key, as clients hold it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayKey(pub [u8; 32]);

impl RelayKey {
    /// The bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short fingerprint for logs: the first 8 bytes of SHA-256, hex.
    pub fn fingerprint(&self) -> String {
        hex8(&Sha256::digest(self.0))
    }
}

fn hex8(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

impl fmt::Display for RelayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayKey({self})")
    }
}

impl FromStr for RelayKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| Error::BadPublicKey(s.to_owned()))?;
        let b: [u8; 32] = b.try_into().map_err(|_| Error::BadPublicKey(s.to_owned()))?;
        Ok(Self(b))
    }
}

impl Serialize for RelayKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RelayKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One static key pair.
#[derive(Clone)]
pub struct StaticKey {
    /// The secret as saved (x25519-dalek zeroes it on drop).
    secret: StaticSecret,
    /// The same secret loaded for the handshake's Diffie-Hellman.
    dh: Arc<DhSecret>,
    public: RelayKey,
}

impl StaticKey {
    /// From the 32 secret bytes.
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let dh = Arc::new(DhSecret::new(bytes));
        let public = RelayKey(*dh.public());
        debug_assert_eq!(public.0, PublicKey::from(&secret).to_bytes());
        Self { secret, dh, public }
    }

    /// A fresh key from the OS RNG.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).expect("the OS RNG is available");
        Self::from_secret(b)
    }

    /// The secret, for the handshake.
    pub fn secret(&self) -> &DhSecret {
        &self.dh
    }

    /// The public key.
    pub fn public(&self) -> RelayKey {
        self.public
    }
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticKey({})", self.public)
    }
}

/// The keys a relay accepts joins for: the current one, and during a rotation's overlap
/// the previous one until its deadline.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The key new clients get.
    pub current: StaticKey,
    /// The key being retired, and the unix second it stops being accepted.
    pub previous: Option<(StaticKey, u64)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_until: Option<u64>,
}

fn secret_b64(k: &StaticKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(k.secret.to_bytes())
}

impl Identity {
    /// An identity with one key.
    pub fn new(current: StaticKey) -> Self {
        Self { current, previous: None }
    }

    /// The keys valid at `unix_secs`, current first.
    pub fn valid_keys(&self, unix_secs: u64) -> impl Iterator<Item = &StaticKey> {
        let prev = self.previous.as_ref().filter(|(_, until)| unix_secs < *until).map(|(k, _)| k);
        std::iter::once(&self.current).chain(prev)
    }

    /// Drops the previous key once its overlap has ended; returns whether it did.
    pub fn retire_expired(&mut self, unix_secs: u64) -> bool {
        if self.previous.as_ref().is_some_and(|(_, until)| unix_secs >= *until) {
            self.previous = None;
            true
        } else {
            false
        }
    }

    /// Makes a fresh key current; the old one stays valid for `overlap_secs` more.
    pub fn rotate(&mut self, unix_secs: u64, overlap_secs: u64) {
        let old = std::mem::replace(&mut self.current, StaticKey::generate());
        self.previous = Some((old, unix_secs.saturating_add(overlap_secs)));
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        let invalid = |reason: String| Error::Invalid { path: path.to_owned(), reason };
        let text = std::fs::read_to_string(path).map_err(io)?;
        let f: KeyFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        let key = |s: &str, field: &str| -> Result<StaticKey, Error> {
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| invalid(format!("`{field}` is not base64")))?;
            let b: [u8; 32] = b.try_into().map_err(|_| invalid(format!("`{field}` is not 32 bytes")))?;
            Ok(StaticKey::from_secret(b))
        };
        let current = key(&f.current, "current")?;
        let previous = match (f.previous, f.previous_until) {
            (Some(p), Some(until)) => Some((key(&p, "previous")?, until)),
            (None, None) => None,
            _ => return Err(invalid("`previous` and `previous_until` go together".into())),
        };
        Ok(Self { current, previous })
    }

    /// Reads the key file, or creates it with a fresh key when it does not exist (the
    /// first start). Returns the identity and whether it was created.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), Error> {
        match std::fs::metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::new(StaticKey::generate());
                id.save(path)?;
                Ok((id, true))
            }
            Err(source) => Err(Error::Io { path: path.to_owned(), source }),
        }
    }

    /// Writes the key file atomically with mode 0600 (creating its directory, 0700, if
    /// needed).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        let f = KeyFile {
            current: secret_b64(&self.current),
            previous: self.previous.as_ref().map(|(k, _)| secret_b64(k)),
            previous_until: self.previous.as_ref().map(|(_, u)| *u),
        };
        let body = toml::to_string(&f).expect("the key file serializes");
        let text = format!("# edgerelay relay identity: X25519 secret keys. Keep this file private.\n{body}");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
            }
        }
        let tmp = path.with_extension("tmp");
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_refused() {
        let k = StaticKey::from_secret([7; 32]).public();
        let s = k.to_string();
        assert_eq!(s.len(), 44);
        assert_eq!(s.parse::<RelayKey>().unwrap(), k);
        for bad in ["", "abc", "AAAA", &s[..40], &format!("{s}AAAA")] {
            assert!(bad.parse::<RelayKey>().is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<RelayKey>(&json).unwrap(), k);
    }

    #[test]
    fn first_start_creates_a_private_file_and_later_starts_read_it() {
        let dir = crate::tempdir::TempDir::new("identity").unwrap();
        let path = dir.join("sub/relay.key");
        let (a, created) = Identity::load_or_generate(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (b, created) = Identity::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(a.current.public(), b.current.public());
    }

    #[test]
    fn rotation_keeps_both_keys_for_the_overlap_and_survives_a_reload() {
        let dir = crate::tempdir::TempDir::new("identity").unwrap();
        let path = dir.join("relay.key");
        let mut id = Identity::new(StaticKey::from_secret([1; 32]));
        let old = id.current.public();
        id.rotate(1000, 60);
        id.save(&path).unwrap();
        let id = Identity::load(&path).unwrap();
        assert_ne!(id.current.public(), old);
        let at = |t| id.valid_keys(t).map(|k| k.public()).collect::<Vec<_>>();
        assert_eq!(at(1059), vec![id.current.public(), old]);
        assert_eq!(at(1060), vec![id.current.public()]);
        let mut id2 = id.clone();
        assert!(!id2.retire_expired(1059));
        assert!(id2.retire_expired(1060));
        assert!(id2.previous.is_none());
    }

    #[test]
    fn damaged_key_files_are_refused_with_the_reason() {
        let dir = crate::tempdir::TempDir::new("identity").unwrap();
        let path = dir.join("relay.key");
        for (text, needle) in [
            ("current = \"!!\"\n", "not base64"),
            ("current = \"AAAA\"\n", "not 32 bytes"),
            ("curent = \"AAAA\"\n", "unknown field"),
            ("current = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nprevious_until = 5\n", "go together"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Identity::load(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
