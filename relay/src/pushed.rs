//! The config relayd was last pushed over its management socket, kept in a file so that a
//! restarted relayd (a crash, an upgrade, a reboot) serves it again before relay-control
//! reconnects, or when relay-control is down: apps and their secrets, per-source limits,
//! the blocklist and running bans.
//!
//! Invariants, and why:
//! - **What is kept is what was accepted.** [`PushedConfig::record`] is called only for a
//!   request relayd carried out, and [`PushedConfig::requests`] turns the file back into
//!   the same requests, which relayd runs through the same command code at start-up. So a
//!   saved config is validated exactly like a push, and pushed things win over the TOML
//!   file exactly as a live push does (`set_apps` replaces the TOML apps).
//! - **Time is wall-clock.** Blocklist and ban deadlines are Unix seconds, not the kernel's
//!   boot-time clock, so they mean the same after a reboot; entries past their deadline
//!   are dropped when recorded, saved or restored.
//! - **Atomic, private writes.** [`write_atomic`] writes a temporary file (mode 0600: it
//!   holds app secrets), fsyncs it, renames it over the old one and fsyncs the directory,
//!   so a crash leaves the old file or the new one, never half of one.
//! - **Bad files are refused, never trusted in part.** A file that does not parse, has an
//!   unknown field or version, or is larger than [`MAX_FILE_LEN`] is an [`Error`]; relayd
//!   then starts from its TOML file alone.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::limits::Limits;
use crate::mgmt::{AppSpec, Request};
use crate::prefix::Prefix;

/// The file format's version.
pub const VERSION: u32 = 1;
/// The largest file [`load`] reads: a `set_apps` request is at most 1 MiB, and the
/// blocklist and bans at most a few hundred thousand short entries.
pub const MAX_FILE_LEN: u64 = 64 << 20;
/// The file's name when the config gives none: it sits next to the relay's key file.
pub const DEFAULT_FILE_NAME: &str = "pushed.json";

/// Errors reading or writing the saved config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read, written, synced or renamed.
    #[error("saved config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("saved config {path}: {len} bytes, more than the {MAX_FILE_LEN} allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The file is not a saved config: bad JSON, a missing or unknown field, a bad value.
    #[error("saved config {path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file was written by a relayd with another format version.
    #[error("saved config {path} has format version {found}; this relayd reads version {VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
}

/// A blocklist entry as saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedBlock {
    /// The prefix (host bits clear).
    pub prefix: Prefix,
    /// When it ends (Unix seconds); `None` = until removed.
    pub expires_at: Option<u64>,
}

/// A ban as saved: the user may not join the room before `until`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedBan {
    /// The app.
    pub sdkappid: u64,
    /// The room, in the management protocol's text form.
    pub room: String,
    /// The user id.
    pub user: String,
    /// When the ban ends (Unix seconds).
    pub until: u64,
}

/// Everything relayd was pushed and still holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushedConfig {
    /// [`VERSION`].
    pub version: u32,
    /// When it was last changed (Unix seconds).
    pub saved_at: u64,
    /// The last `set_apps`; `None` = never pushed (the TOML apps stand).
    pub apps: Option<Vec<AppSpec>>,
    /// The last `set_limits`; `None` = never pushed.
    pub limits: Option<Limits>,
    /// The blocklist entries added and not removed, by prefix.
    pub blocks: Vec<SavedBlock>,
    /// Running bans.
    pub bans: Vec<SavedBan>,
}

impl PushedConfig {
    /// An empty config (nothing pushed yet).
    pub fn new() -> Self {
        Self { version: VERSION, ..Self::default() }
    }

    /// Whether nothing was ever pushed.
    pub fn is_empty(&self) -> bool {
        self.apps.is_none() && self.limits.is_none() && self.blocks.is_empty() && self.bans.is_empty()
    }

    /// Takes in a request relayd carried out at `now` (Unix seconds); returns whether the
    /// saved config changed. Requests that push nothing (reads, dismissals, removals
    /// without a ban, key rotations, which have their own file) change nothing.
    pub fn record(&mut self, req: &Request, now: u64) -> bool {
        let before = self.clone();
        match req {
            Request::SetApps { apps } => self.apps = Some(apps.clone()),
            Request::SetLimits(l) => self.limits = Some(*l),
            Request::Block { ip, prefix_len, ttl_secs } => {
                let Some(prefix) = prefix_of(*ip, *prefix_len) else { return false };
                let entry = SavedBlock { prefix, expires_at: (*ttl_secs > 0).then(|| now.saturating_add(*ttl_secs)) };
                match self.blocks.iter_mut().find(|b| b.prefix == prefix) {
                    Some(b) => *b = entry,
                    None => self.blocks.push(entry),
                }
            }
            Request::Unblock { ip, prefix_len } => {
                let Some(prefix) = prefix_of(*ip, *prefix_len) else { return false };
                self.blocks.retain(|b| b.prefix != prefix);
            }
            Request::RemoveUser { sdkappid, room, user, ban_secs } if *ban_secs > 0 => {
                let until = now.saturating_add(*ban_secs);
                match self.bans.iter_mut().find(|b| b.sdkappid == *sdkappid && b.room == *room && b.user == *user) {
                    Some(b) => b.until = until,
                    None => {
                        self.bans.push(SavedBan { sdkappid: *sdkappid, room: room.clone(), user: user.clone(), until })
                    }
                }
            }
            _ => return false,
        }
        self.prune(now);
        let changed = *self != before;
        if changed {
            self.saved_at = now;
        }
        changed
    }

    /// Drops blocklist entries and bans whose deadline passed at `now`.
    pub fn prune(&mut self, now: u64) {
        self.blocks.retain(|b| b.expires_at.is_none_or(|e| e > now));
        self.bans.retain(|b| b.until > now);
    }

    /// The requests that put this config back at `now`: `set_apps`, `set_limits`, a `block`
    /// per live entry (with the time it has left) and a `remove_user` per running ban.
    pub fn requests(&self, now: u64) -> Vec<Request> {
        let mut out = Vec::new();
        if let Some(apps) = &self.apps {
            out.push(Request::SetApps { apps: apps.clone() });
        }
        if let Some(l) = self.limits {
            out.push(Request::SetLimits(l));
        }
        for b in &self.blocks {
            let ttl_secs = match b.expires_at {
                None => 0,
                Some(e) if e > now => e - now,
                Some(_) => continue,
            };
            out.push(Request::Block { ip: b.prefix.addr(), prefix_len: b.prefix.len().into(), ttl_secs });
        }
        for b in self.bans.iter().filter(|b| b.until > now) {
            out.push(Request::RemoveUser {
                sdkappid: b.sdkappid,
                room: b.room.clone(),
                user: b.user.clone(),
                ban_secs: b.until - now,
            });
        }
        out
    }

    /// What the config holds, for a log line.
    pub fn summary(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("apps", self.apps.as_ref().map_or(0, Vec::len)),
            ("limits", usize::from(self.limits.is_some())),
            ("blocks", self.blocks.len()),
            ("bans", self.bans.len()),
        ])
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("the saved config serializes");
        v.push(b'\n');
        v
    }
}

/// `ip/prefix_len` with host bits cleared, if the length fits the family.
fn prefix_of(ip: IpAddr, prefix_len: u32) -> Option<Prefix> {
    Prefix::truncating(ip, u8::try_from(prefix_len).ok()?).ok()
}

/// Reads the saved config at `path`: `Ok(None)` if there is no file (nothing was pushed
/// yet, or this is the first start).
pub fn load(path: &Path) -> Result<Option<PushedConfig>, Error> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if len > MAX_FILE_LEN {
        return Err(Error::TooLarge { path: path.to_owned(), len });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let corrupt = |reason: String| Error::Corrupt { path: path.to_owned(), reason };
    // The version first, so a file from another format says so rather than "unknown field".
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if v.version != VERSION {
        return Err(Error::Version { path: path.to_owned(), found: v.version });
    }
    let cfg: PushedConfig = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(cfg))
}

/// Replaces the file at `path` with `bytes` atomically: a temporary file beside it (mode
/// 0600), fsynced, renamed over `path`, then the directory fsynced so the rename is
/// durable. The directory is created (mode 0700) if missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let io = |source| Error::Io { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn app(id: u64) -> AppSpec {
        AppSpec {
            sdkappid: id,
            secrets: vec!["0123456789abcdef0123".into()],
            require_private_map_key: false,
            allow_v1_joins: false,
            profiles: None,
            quotas: crate::limits::Quotas::default(),
        }
    }

    fn block(ip: &str, len: u32, ttl: u64) -> Request {
        Request::Block { ip: ip.parse().unwrap(), prefix_len: len, ttl_secs: ttl }
    }

    #[test]
    fn records_what_was_pushed_and_gives_it_back_as_requests() {
        let mut c = PushedConfig::new();
        assert!(c.is_empty());
        assert!(c.record(&Request::SetApps { apps: vec![app(1_400_000_001)] }, 100));
        assert!(c.record(&block("198.18.7.9", 24, 0), 100));
        assert!(c.record(&block("198.19.0.2", 32, 60), 100));
        assert!(c.record(&block("2001:2::1", 64, 0), 100));
        let ban = Request::RemoveUser { sdkappid: 1_400_000_001, room: "7".into(), user: "eve".into(), ban_secs: 30 };
        assert!(c.record(&ban, 100));
        // Reads, plain removals and dismissals are not config.
        assert!(!c.record(&Request::Blocklist {}, 100));
        assert!(!c.record(&Request::DismissRoom { sdkappid: 1_400_000_001, room: "7".into() }, 100));
        let kick = Request::RemoveUser { sdkappid: 1_400_000_001, room: "7".into(), user: "bob".into(), ban_secs: 0 };
        assert!(!c.record(&kick, 100));
        // The same block again is no change; an unblock by any address in the prefix removes it.
        assert!(!c.record(&block("198.18.7.1", 24, 0), 100));
        assert!(c.record(&Request::Unblock { ip: "198.18.7.200".parse().unwrap(), prefix_len: 24 }, 101));
        assert_eq!(c.saved_at, 101);

        // 40 s later: the 60 s block has 20 s left, the ban 30 - 40 < 0 is over.
        let reqs = c.requests(140);
        assert_eq!(
            reqs,
            vec![
                Request::SetApps { apps: vec![app(1_400_000_001)] },
                block("198.19.0.2", 32, 20),
                block("2001:2::", 64, 0),
            ]
        );
        let reqs = c.requests(120);
        assert!(reqs.contains(&Request::RemoveUser {
            sdkappid: 1_400_000_001,
            room: "7".into(),
            user: "eve".into(),
            ban_secs: 10
        }));
        // Pruning drops what ended.
        c.prune(200);
        assert_eq!(c.blocks.len(), 1);
        assert!(c.bans.is_empty());
    }

    #[test]
    fn saves_atomically_privately_and_loads_back() {
        let dir = crate::tempdir::TempDir::new("pushed").unwrap();
        let path = dir.join("state/pushed.json");
        assert!(load(&path).unwrap().is_none(), "no file is no saved config");
        let mut c = PushedConfig::new();
        c.record(&Request::SetApps { apps: vec![app(1_400_000_001), app(1_400_000_002)] }, 5);
        c.record(
            &Request::SetLimits(Limits {
                pps_rate_per_sec: 1,
                pps_burst: 2,
                join_rate_per_sec: 3,
                join_burst: 4,
                port_min: 7000,
                port_max: 7000,
            }),
            5,
        );
        write_atomic(&path, &c.encode()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!dir.join("state/pushed.json.tmp").exists());
        assert_eq!(load(&path).unwrap(), Some(c.clone()));
        // A second save replaces the first.
        c.record(&block("198.18.0.0", 15, 0), 6);
        write_atomic(&path, &c.encode()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(c));
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = crate::tempdir::TempDir::new("pushed").unwrap();
        let path = dir.join("pushed.json");
        let good = String::from_utf8(PushedConfig::new().encode()).unwrap();
        let unknown_field = good.replace("\"bans\"", "\"bands\"");
        let other_version = good.replace("\"version\": 1", "\"version\": 9");
        let host_bits =
            good.replace("\"blocks\": []", "\"blocks\": [{\"prefix\": \"198.18.0.1/15\", \"expires_at\": null}]");
        for (text, needle) in [
            ("", "damaged"),
            ("{\"version\": 1, \"saved_at\": 1", "damaged"),
            ("\u{0}\u{1}garbage", "damaged"),
            ("[1,2,3]", "damaged"),
            (unknown_field.as_str(), "unknown field `bands`"),
            (other_version.as_str(), "format version 9"),
            (host_bits.as_str(), "host bits"),
        ] {
            assert_ne!(text, good, "the damage applied");
            std::fs::write(&path, text).unwrap();
            let e = load(&path).expect_err(text).to_string();
            assert!(e.contains(needle) && e.contains("pushed.json"), "{text:?}: {e}");
        }
        let big = std::fs::File::create(&path).unwrap();
        big.set_len(MAX_FILE_LEN + 1).unwrap();
        assert!(matches!(load(&path), Err(Error::TooLarge { .. })));
    }
}
