//! The records of the control state (apps, their secrets, blocklist entries) and the one
//! error type of reading and changing them. Pure data: the embedded store ([`crate::store`])
//! and the change decisions ([`crate::state`]) both build on it.

use std::net::IpAddr;

use relay::limits::LimitsError;
use relay::prefix::Prefix;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, SecretKey};
use relay::limits::Quotas;

/// Most secrets an app holds: the current one and one still inside its overlap window.
pub const MAX_APP_SECRETS: usize = 2;
/// Longest `who` or `what` of an audit entry, in bytes.
pub const MAX_AUDIT_FIELD_LEN: usize = 256;
/// Longest reason of a blocklist entry, in bytes.
pub const MAX_BLOCK_REASON_LEN: usize = 128;
/// Most blocklist entries held (live ones; expired entries are pruned on every change).
pub const MAX_BLOCKS: usize = 65_536;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption, transaction or table error). Boxed: it is large.
    #[error("database: {0}")]
    Db(Box<redb::Error>),
    /// Creating or securing the store file failed.
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be encoded or decoded.
    #[error("record encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// An app with this SdkAppId exists.
    #[error("app {0} already exists")]
    AppExists(u32),
    /// No app has this SdkAppId.
    #[error("app {0} not found")]
    AppNotFound(u32),
    /// An API key with this SecretId exists.
    #[error("api key already exists")]
    KeyExists,
    /// No API key has this SecretId.
    #[error("api key not found")]
    KeyNotFound,
    /// The key operation was refused (revoked, already rotated, ...).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A quota is outside relayd's bounds ([`Quotas::check`]).
    #[error("invalid quotas: {0}")]
    InvalidQuotas(LimitsError),
    /// An app secret is empty, longer than 128 bytes or not printable ASCII.
    #[error("invalid app secret")]
    InvalidAppSecret,
    /// An audit `who` or `what` is longer than [`MAX_AUDIT_FIELD_LEN`] bytes.
    #[error("audit field too long")]
    AuditFieldTooLong,
    /// A blocklist prefix is longer than its address family allows, has host bits set, or
    /// its reason is too long or has control characters.
    #[error("invalid blocklist entry: {0}")]
    InvalidBlock(&'static str),
    /// No live blocklist entry has this prefix.
    #[error("blocklist entry not found")]
    BlockNotFound,
    /// Revoking this key would leave no usable admin key, locking every operator out.
    #[error("this is the last usable admin key; create another admin key before revoking it")]
    LastAdmin,
    /// The blocklist holds [`MAX_BLOCKS`] live entries.
    #[error("blocklist full ({MAX_BLOCKS} entries)")]
    BlocklistFull,
    /// A rate or burst is too large, a port is 0, or `port_min > port_max` ([`Limits::check`]).
    #[error("invalid limits: {0}")]
    InvalidLimits(LimitsError),
    /// A stored record's own id is not the field it is stored under (moved or tampered).
    #[error("record under {0} is not that record")]
    MisplacedRecord(String),
}

macro_rules! redb_error {
    ($($t:ident),*) => {$(
        impl From<redb::$t> for StoreError {
            fn from(e: redb::$t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
redb_error!(Error, DatabaseError, TransactionError, TableError, StorageError, CommitError);

/// One secret of an app, used to mint and verify its UserSigs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSecret {
    /// The key, as given to TLSSigAPIv2.
    pub key: SecretKey,
    /// When it was created.
    pub created_at: u64,
    /// When it stops being accepted (exclusive); `None` for the current secret.
    pub expires_at: Option<u64>,
}

/// An app: an SdkAppId, its secrets and its quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The app's identifier.
    pub sdkappid: u32,
    /// Newest first; at most [`MAX_APP_SECRETS`]. The first has no expiry.
    pub secrets: Vec<AppSecret>,
    /// Its quotas (records written before `max_sessions` existed read relayd's default).
    pub quotas: Quotas,
    /// When it was created.
    pub created_at: u64,
    /// Whether relayd refuses joins without a PrivateMapKey.
    #[serde(default)]
    pub require_private_map_key: bool,
    /// Whether relayd also accepts cleartext v1 joins (a client migration window).
    #[serde(default)]
    pub allow_v1_joins: bool,
}

pub(crate) fn check_app_secret(secret: &SecretKey) -> Result<(), StoreError> {
    let s = secret.expose();
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(StoreError::InvalidAppSecret);
    }
    Ok(())
}

impl App {
    /// A new app with one secret.
    pub fn new(sdkappid: u32, secret: SecretKey, quotas: Quotas, now: u64) -> Self {
        App {
            sdkappid,
            secrets: vec![AppSecret { key: secret, created_at: now, expires_at: None }],
            quotas,
            created_at: now,
            require_private_map_key: false,
            allow_v1_joins: false,
        }
    }

    /// Secrets accepted at `now`, newest first.
    pub fn usable_secrets(&self, now: u64) -> impl Iterator<Item = &SecretKey> {
        self.secrets.iter().filter(move |s| s.expires_at.is_none_or(|e| now < e)).map(|s| &s.key)
    }

    /// Makes `secret` current; the previous one stays usable for `overlap` seconds. Expired
    /// secrets are dropped, and so is the oldest when more than [`MAX_APP_SECRETS`] remain.
    pub fn rotate_secret(&mut self, secret: SecretKey, now: u64, overlap: u64) {
        for s in &mut self.secrets {
            let until = now.saturating_add(overlap);
            s.expires_at = Some(s.expires_at.map_or(until, |e| e.min(until)));
        }
        self.secrets.retain(|s| s.expires_at.is_none_or(|e| now < e));
        self.secrets.insert(0, AppSecret { key: secret, created_at: now, expires_at: None });
        self.secrets.truncate(MAX_APP_SECRETS);
    }
}

/// Where a blocklist entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockSource {
    /// An operator, through the API.
    Api,
    /// The automatic flood detector.
    Auto,
}

/// One blocked source prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockEntry {
    /// The network address (host bits zero).
    pub ip: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix_len: u8,
    /// When it was added.
    pub created_at: u64,
    /// When it stops applying (exclusive); `None` until removed.
    pub expires_at: Option<u64>,
    /// Why (operator text, or the detector's summary).
    pub reason: String,
    /// Who added it.
    pub source: BlockSource,
}

impl BlockEntry {
    /// The prefix in `ip/len` form, also the entry's key.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }

    /// Whether the entry applies at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    /// Whether the entry's prefix contains the whole prefix `ip/prefix_len` (same family,
    /// same or shorter prefix).
    pub fn covers(&self, ip: IpAddr, prefix_len: u8) -> bool {
        let mine = Prefix::truncating(self.ip, self.prefix_len);
        self.ip.is_ipv4() == ip.is_ipv4() && self.prefix_len <= prefix_len && mine.is_ok_and(|p| p.contains(ip))
    }

    /// Seconds left at `now` (0 for an entry without expiry), as relayd's `block` takes it.
    pub fn ttl_at(&self, now: u64) -> u64 {
        self.expires_at.map_or(0, |e| e.saturating_sub(now).max(1))
    }

    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.prefix_len > relay::prefix::width(self.ip) {
            return Err(StoreError::InvalidBlock("prefix length longer than the address"));
        }
        if Prefix::new(self.ip, self.prefix_len).is_err() {
            return Err(StoreError::InvalidBlock("host bits set after the prefix"));
        }
        if self.reason.len() > MAX_BLOCK_REASON_LEN || self.reason.chars().any(char::is_control) {
            return Err(StoreError::InvalidBlock("reason too long or has control characters"));
        }
        Ok(())
    }
}
