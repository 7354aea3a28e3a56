//! Sealing of everything relay-control writes to Redis, under the cluster key.
//!
//! Threat model. Redis is shared infrastructure: its dumps, its AOF, its replicas and anyone
//! holding a Redis password with read access see every value. App secrets and API SecretKeys
//! must not be learned from there, and no record may be forged there (a forged API key or
//! app would be a way in; a forged node record would steer clients). So every value is
//! AES-256-GCM sealed with a 32-byte cluster key that lives in a file on each node (mode
//! 0600, never in Redis), and its associated data names the slot it belongs to
//! (`prefix|kind|field`), so a sealed record moved to another slot does not open.
//!
//! What sealing does not stop: someone who can write to Redis can delete records, replay an
//! older sealed value into its own slot (roll a record back), or fill the change log; they
//! cannot read or create values. Key names (SdkAppIds, SecretIds, blocked prefixes, node ids)
//! are visible. Redis ACLs and TLS (see the README) are the defence against writers.
//!
//! Format: `"s1"` ‖ 12-byte random nonce ‖ ciphertext ‖ 16-byte tag. A random 96-bit nonce
//! keeps the collision risk negligible far beyond 2^32 seals per key (NIST SP 800-38D
//! §8.3); rotate the cluster key long before that.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

const TAG: &[u8; 2] = b"s1";
const NONCE_LEN: usize = 12;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = TAG.len() + NONCE_LEN + 16;

/// Why the cluster key could not be loaded or a value not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or written.
    #[error("cluster key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is readable by group or others.
    #[error("cluster key file {0} is readable by group or others; chmod 600 it")]
    Permissions(String),
    /// The key file does not hold 64 hex digits.
    #[error("cluster key file {0} must hold the 32-byte key as 64 hex digits")]
    Format(String),
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// A value is not sealed, was sealed under another key, belongs to another slot, or was
    /// changed.
    #[error("sealed value does not open under the cluster key")]
    Open,
}

/// The cluster key.
pub struct ClusterKey {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key of 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        ClusterKey { aead: Aes256Gcm::new(key.into()) }
    }

    /// Loads the key from `path` (64 hex digits, surrounding whitespace ignored). The file
    /// must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let name = path.display().to_string();
        let io = |source| SealError::Io { path: name.clone(), source };
        let meta = fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SealError::Permissions(name));
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let bytes = hex::decode(text.trim()).map_err(|_| SealError::Format(name.clone()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SealError::Format(name))?;
        Ok(ClusterKey::new(&key))
    }

    /// Writes a fresh random key to `path` (mode 0600; refused if the file exists).
    pub fn generate(path: &Path) -> Result<(), SealError> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
        let name = path.display().to_string();
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| SealError::Io { path: name.clone(), source })?;
        std::io::Write::write_all(&mut f, format!("{}\n", hex::encode(key)).as_bytes())
            .map_err(|source| SealError::Io { path: name, source })
    }

    /// Seals `plaintext` for the slot `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let ct = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| SealError::Open)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(TAG);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a value sealed for the slot `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD || &sealed[..TAG.len()] != TAG {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed[TAG.len()..].split_at(NONCE_LEN);
        self.aead.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad }).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_in_its_slot_under_its_key() {
        let k = ClusterKey::new(&[7; 32]);
        let sealed = k.seal(b"edgerelay:|apps|1400000001", b"{\"secret\":\"x\"}").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 14);
        assert!(!sealed.windows(6).any(|w| w == b"secret"), "plaintext visible in the sealed value");
        assert_eq!(k.open(b"edgerelay:|apps|1400000001", &sealed).unwrap(), b"{\"secret\":\"x\"}");
        assert!(matches!(k.open(b"edgerelay:|apps|1400000002", &sealed), Err(SealError::Open)));
        assert!(matches!(ClusterKey::new(&[8; 32]).open(b"edgerelay:|apps|1400000001", &sealed), Err(SealError::Open)));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(k.open(b"edgerelay:|apps|1400000001", &flipped), Err(SealError::Open)));
        assert!(matches!(k.open(b"x", b"s1short"), Err(SealError::Open)));
        assert!(matches!(k.open(b"x", b"{\"plain\":1}"), Err(SealError::Open)));
    }

    #[test]
    fn key_file_is_private_and_hex() {
        let dir = relay::tempdir::TempDir::new("seal").unwrap();
        let path = dir.path().join("cluster.key");
        ClusterKey::generate(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(ClusterKey::generate(&path).is_err(), "an existing key is never overwritten");
        let a = ClusterKey::load(&path).unwrap();
        let sealed = a.seal(b"s", b"v").unwrap();
        assert_eq!(ClusterKey::load(&path).unwrap().open(b"s", &sealed).unwrap(), b"v");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(ClusterKey::load(&path), Err(SealError::Permissions(_))));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "abcd\n").unwrap();
        assert!(matches!(ClusterKey::load(&path), Err(SealError::Format(_))));
    }
}
