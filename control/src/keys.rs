//! API keys of the management API: roles, credential generation, rotation and revocation.
//!
//! Pure data: no clock and no store. Times are Unix seconds passed in by the caller.
//!
//! - A SecretId is `AKID` followed by 32 base62 characters, a SecretKey is 32 base62
//!   characters (about 190 bits), both from the OS RNG via `getrandom`, without modulo bias.
//! - Rotation mints a new key with the same role and label; the old key keeps working until
//!   the end of the overlap window, so clients can switch without downtime.
//! - Revocation takes effect at once: a revoked key is never usable again.
//! - Roles: `Admin` may read, mutate and manage keys; `Operator` may read and mutate;
//!   `Auditor` may only read.

use std::fmt;

use serde::{Deserialize, Serialize};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Prefix of every SecretId, as in Tencent Cloud.
pub const SECRET_ID_PREFIX: &str = "AKID";
/// Random base62 characters after the prefix of a SecretId.
pub const SECRET_ID_RANDOM_LEN: usize = 32;
/// Length of a SecretKey in base62 characters.
pub const SECRET_KEY_LEN: usize = 32;
/// Longest label accepted for a key.
pub const MAX_LABEL_LEN: usize = 128;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(getrandom::Error),
    /// The key was already revoked.
    #[error("key already revoked")]
    Revoked,
    /// The key was already rotated; rotate its successor instead.
    #[error("key already rotated")]
    AlreadyRotated,
    /// The label is longer than [`MAX_LABEL_LEN`] bytes or has control characters.
    #[error("invalid label")]
    InvalidLabel,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including creating, rotating and revoking API keys.
    Admin,
    /// Reads and mutations of apps, rooms, blocklists and limits; no key management.
    Operator,
    /// Read-only access, including the audit log.
    Auditor,
}

/// The kind of an API call, for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A call that changes nothing.
    Read,
    /// A call that changes state (and is audited).
    Mutate,
}

impl Role {
    /// Whether this role may perform `action`.
    pub fn may(self, action: Action) -> bool {
        match (self, action) {
            (_, Action::Read) => true,
            (Role::Admin | Role::Operator, Action::Mutate) => true,
            (Role::Auditor, Action::Mutate) => false,
        }
    }

    /// Whether this role may create, rotate and revoke API keys.
    pub fn manages_keys(self) -> bool {
        self == Role::Admin
    }
}

/// `len` uniformly random base62 characters.
fn random_base62(len: usize) -> Result<String, KeyError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf).map_err(KeyError::Rng)?;
        // 248 = 4 * 62: rejecting larger bytes keeps every character equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(BASE62[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

/// A SecretKey. Its `Debug` output is redacted so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretKey(String);

impl SecretKey {
    /// A fresh random SecretKey.
    pub fn generate() -> Result<Self, KeyError> {
        random_base62(SECRET_KEY_LEN).map(SecretKey)
    }

    /// A fresh random app secret for TLSSigAPIv2: 64 lowercase hex digits (256 bits), the
    /// shape of the keys Tencent's console issues.
    pub fn generate_app_secret() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(KeyError::Rng)?;
        Ok(SecretKey(hex::encode(bytes)))
    }

    /// Wraps an existing secret, e.g. an app secret imported from Tencent's console.
    pub fn from_exposed(secret: String) -> Self {
        SecretKey(secret)
    }

    /// The key's characters, to sign or verify with, or to show once at creation.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A fresh random SecretId: `AKID` and 32 base62 characters.
pub fn generate_secret_id() -> Result<String, KeyError> {
    Ok(format!("{SECRET_ID_PREFIX}{}", random_base62(SECRET_ID_RANDOM_LEN)?))
}

/// Whether `id` has the shape of a generated SecretId.
pub fn is_secret_id(id: &str) -> bool {
    id.strip_prefix(SECRET_ID_PREFIX)
        .is_some_and(|r| r.len() == SECRET_ID_RANDOM_LEN && r.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Replaced by `successor`; usable until `until` (exclusive).
    Rotated {
        /// End of the overlap window.
        until: u64,
    },
    /// Not usable since `at`.
    Revoked {
        /// When it was revoked.
        at: u64,
    },
}

/// An API key and everything verification and authorization need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Public identifier, sent in every signed request.
    pub secret_id: String,
    /// The HMAC key. Verification needs it in clear (see the `store` module docs).
    pub secret_key: SecretKey,
    /// What the key may do.
    pub role: Role,
    /// A human note: whose key this is.
    pub label: String,
    /// When it was created.
    pub created_at: u64,
    /// Where it is in its life.
    pub state: KeyState,
    /// The SecretId that replaced it, once rotated.
    pub successor: Option<String>,
}

fn check_label(label: &str) -> Result<(), KeyError> {
    if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
        return Err(KeyError::InvalidLabel);
    }
    Ok(())
}

impl ApiKey {
    /// A new active key with fresh random credentials.
    pub fn generate(role: Role, label: &str, now: u64) -> Result<Self, KeyError> {
        check_label(label)?;
        Ok(ApiKey {
            secret_id: generate_secret_id()?,
            secret_key: SecretKey::generate()?,
            role,
            label: label.to_owned(),
            created_at: now,
            state: KeyState::Active,
            successor: None,
        })
    }

    /// Whether a request signed with this key at `now` is accepted.
    pub fn is_usable(&self, now: u64) -> bool {
        match self.state {
            KeyState::Active => true,
            KeyState::Rotated { until } => now < until,
            KeyState::Revoked { .. } => false,
        }
    }

    /// Replaces this key: returns its successor (same role and label, new credentials), and
    /// keeps this one usable for `overlap` seconds. An overlap of 0 retires it at once.
    pub fn rotate(&mut self, now: u64, overlap: u64) -> Result<ApiKey, KeyError> {
        match self.state {
            KeyState::Revoked { .. } => return Err(KeyError::Revoked),
            KeyState::Rotated { .. } => return Err(KeyError::AlreadyRotated),
            KeyState::Active => {}
        }
        let next = ApiKey::generate(self.role, &self.label, now)?;
        self.state = KeyState::Rotated { until: now.saturating_add(overlap) };
        self.successor = Some(next.secret_id.clone());
        Ok(next)
    }

    /// Revokes this key at once. A rotated key can be revoked, cutting its overlap short.
    pub fn revoke(&mut self, now: u64) -> Result<(), KeyError> {
        if let KeyState::Revoked { .. } = self.state {
            return Err(KeyError::Revoked);
        }
        self.state = KeyState::Revoked { at: now };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert!(Role::Admin.may(Action::Read) && Role::Admin.may(Action::Mutate));
        assert!(Role::Operator.may(Action::Read) && Role::Operator.may(Action::Mutate));
        assert!(Role::Auditor.may(Action::Read) && !Role::Auditor.may(Action::Mutate));
        assert!(Role::Admin.manages_keys());
        assert!(!Role::Operator.manages_keys() && !Role::Auditor.manages_keys());
    }

    #[test]
    fn generated_credentials_have_the_documented_shape() {
        let a = ApiKey::generate(Role::Operator, "ops", 10).unwrap();
        let b = ApiKey::generate(Role::Operator, "ops", 10).unwrap();
        assert!(is_secret_id(&a.secret_id), "{}", a.secret_id);
        assert_eq!(a.secret_id.len(), 36);
        assert_eq!(a.secret_key.expose().len(), SECRET_KEY_LEN);
        assert!(a.secret_key.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.secret_id, b.secret_id);
        assert_ne!(a.secret_key, b.secret_key);
        let app = SecretKey::generate_app_secret().unwrap();
        assert_eq!(app.expose().len(), 64);
        assert!(app.expose().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(!format!("{a:?}").contains(a.secret_key.expose()));
        assert!(!is_secret_id("AKID") && !is_secret_id(&format!("AKIE{}", &a.secret_id[4..])));
    }

    #[test]
    fn base62_uses_the_whole_alphabet() {
        let s = random_base62(4000).unwrap();
        assert!(BASE62.iter().all(|c| s.as_bytes().contains(c)));
    }

    #[test]
    fn rotation_overlap() {
        let mut old = ApiKey::generate(Role::Admin, "root", 100).unwrap();
        let new = old.rotate(200, 60).unwrap();
        assert_eq!((new.role, new.label.as_str(), new.created_at), (Role::Admin, "root", 200));
        assert_eq!(old.successor.as_deref(), Some(new.secret_id.as_str()));
        assert!(old.is_usable(259) && !old.is_usable(260));
        assert!(new.is_usable(260));
        assert!(matches!(old.rotate(210, 60), Err(KeyError::AlreadyRotated)));
        let mut immediate = ApiKey::generate(Role::Admin, "x", 0).unwrap();
        immediate.rotate(5, 0).unwrap();
        assert!(!immediate.is_usable(5));
    }

    #[test]
    fn revocation_is_immediate_and_final() {
        let mut k = ApiKey::generate(Role::Operator, "leaver", 0).unwrap();
        k.revoke(50).unwrap();
        assert!(!k.is_usable(50));
        assert!(matches!(k.revoke(51), Err(KeyError::Revoked)));
        assert!(matches!(k.rotate(51, 10), Err(KeyError::Revoked)));
        let mut rotated = ApiKey::generate(Role::Operator, "x", 0).unwrap();
        rotated.rotate(10, 1000).unwrap();
        rotated.revoke(20).unwrap();
        assert!(!rotated.is_usable(21));
    }

    #[test]
    fn labels_are_bounded() {
        assert!(matches!(ApiKey::generate(Role::Admin, &"x".repeat(129), 0), Err(KeyError::InvalidLabel)));
        assert!(matches!(ApiKey::generate(Role::Admin, "a\nb", 0), Err(KeyError::InvalidLabel)));
    }

    #[test]
    fn serde_round_trip() {
        let k = ApiKey::generate(Role::Auditor, "audit", 7).unwrap();
        let json = serde_json::to_string(&k).unwrap();
        assert!(json.contains("\"auditor\""));
        assert_eq!(serde_json::from_str::<ApiKey>(&json).unwrap(), k);
    }
}
