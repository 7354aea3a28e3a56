//! `relayd` configuration: the TOML file, validated at load time.
//!
//! Config structs are separate from live state (firecracker's rule): [`Config`] is what the
//! operator wrote, checked once; the registry and workers are built from it. Unknown keys
//! are errors, so a typo never silently falls back to a default.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ids::SdkAppId;
use crate::limits::Quotas;
pub use crate::logging::LogFormat;
use crate::srtp::Profile;

/// Errors loading or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not match the schema (unknown keys included).
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value parsed but is not acceptable.
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Invalid(msg.into()))
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// UDP address for media and control, e.g. `0.0.0.0:7000`.
    pub listen: SocketAddr,
    /// Worker threads (one `SO_REUSEPORT` socket each). Default: one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Pin worker `i` to core `i mod cores`. Default true.
    #[serde(default = "yes")]
    pub pin_workers: bool,
    /// Unix management socket (`relayd stats`, `relayd ctl`, relay-control). Default: none.
    /// A relative path is relative to the config file.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Users, besides root and relayd's own user, that may use the management socket
    /// (checked with `SO_PEERCRED`). Resolved to uids at load time; an unknown name is an error.
    #[serde(default)]
    pub control_users: Vec<String>,
    /// Session timing.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The apps this relay serves.
    #[serde(rename = "app", default)]
    pub apps: Vec<AppConfig>,
    /// Data-plane backend.
    #[serde(default)]
    pub backend: Backend,
    /// XDP backend settings (required when `backend = "xdp"`).
    #[serde(default)]
    pub xdp: Option<XdpSettings>,
    /// After setup, switch from root to this user (e.g. `"nobody"`) and keep no capabilities.
    #[serde(default)]
    pub user: Option<String>,
    /// The relay's static key (join v2).
    #[serde(default)]
    pub identity: IdentitySettings,
    /// How joins are admitted under load.
    #[serde(default)]
    pub join: JoinSettings,
    /// The log level: an `EnvFilter` directive such as `"info"` or `"relay=debug,info"`
    /// (`RUST_LOG`, when set, wins at start-up). Default `"info"`. Changes on reload.
    #[serde(default)]
    pub log_level: Option<String>,
    /// `"text"` (default) or `"json"` (one object per line). Needs a restart to change.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where relayd keeps the config it was last pushed over its management socket (apps
    /// and secrets, limits, blocklist, bans: [`crate::pushed`]), so that it starts from it
    /// again when relay-control is absent. Mode 0600 (it holds app secrets). A relative
    /// path is relative to the config file. Default: `pushed.json` next to the key file
    /// (`/var/lib/edgerelay/pushed.json`).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// Hardening of relayd's threads.
    #[serde(default)]
    pub security: SecuritySettings,
}

/// The `[security]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// A seccomp allow-list on each worker thread (`relay::io::seccomp`). Needs a restart.
    #[serde(default)]
    pub worker_seccomp: WorkerSeccomp,
}

/// What a worker's seccomp filter does with a syscall not on its backend's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerSeccomp {
    /// Kill relayd (`SIGSYS`, an audit record and a core dump): a worker making an
    /// unlisted call is compromised or on a path nobody reviewed. The default.
    #[default]
    Kill,
    /// Allow it and write an audit record (`type=1326` in the kernel log): for trying the
    /// filter out on a new kernel or libc before enforcing it.
    Log,
    /// No filter.
    Off,
}

/// Where relayd keeps its static X25519 key ([`crate::identity`]).
pub const DEFAULT_KEY_FILE: &str = "/var/lib/edgerelay/relay.key";

/// The `[identity]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// The key file: created with a fresh key (mode 0600) on the first start, read after.
    /// A relative path is relative to the config file. Default [`DEFAULT_KEY_FILE`].
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
}

fn default_key_file() -> PathBuf {
    PathBuf::from(DEFAULT_KEY_FILE)
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self { key_file: default_key_file() }
    }
}

/// When v2 joins must echo a cookie (a round trip that proves the source address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieMode {
    /// Only while the control queue is backed up (a join flood).
    #[default]
    Auto,
    /// Always (every join costs one more round trip).
    Always,
}

/// The `[join]` table: the join path's defences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSettings {
    /// When to require cookies.
    #[serde(default)]
    pub cookies: CookieMode,
    /// A v2 join's timestamp may differ from the relay's clock by at most this much; the
    /// relay remembers every join it saw for twice as long, so none can be replayed.
    #[serde(default = "default_window")]
    pub timestamp_window_secs: u16,
    /// Replies (answers, cookies, errors, acks) per second in total; the rest are not sent.
    #[serde(default = "default_replies")]
    pub replies_per_sec: u32,
    /// Replies per second to any one source address (burst: twice as many).
    #[serde(default = "default_replies_per_source")]
    pub replies_per_source_per_sec: u32,
    /// Cookie replies per second in total (each smaller than the join it answers). While
    /// answers are over `replies_per_sec`, joins need cookies; answers to joins that
    /// echo a valid cookie count only against their source.
    #[serde(default = "default_replies")]
    pub cookies_per_sec: u32,
}

fn default_window() -> u16 {
    30
}
fn default_replies() -> u32 {
    20_000
}
fn default_replies_per_source() -> u32 {
    10
}

impl Default for JoinSettings {
    fn default() -> Self {
        Self {
            cookies: CookieMode::Auto,
            timestamp_window_secs: default_window(),
            replies_per_sec: default_replies(),
            replies_per_source_per_sec: default_replies_per_source(),
            cookies_per_sec: default_replies(),
        }
    }
}

fn default_control_budget() -> u64 {
    20_000
}
fn default_control_budget_burst() -> u64 {
    40_000
}

fn yes() -> bool {
    true
}

/// Which data plane carries the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Plain UDP sockets (`SO_REUSEPORT`, `recvmmsg`/`sendmmsg`): runs anywhere, unprivileged.
    #[default]
    Socket,
    /// XDP filter in the kernel plus AF_XDP sockets: needs root (or CAP_BPF + CAP_NET_ADMIN).
    Xdp,
}

/// AF_XDP socket mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XskMode {
    /// Zero-copy where the driver supports it, else copy.
    #[default]
    Auto,
    /// Always copy mode (veth supports only this).
    Copy,
    /// Zero-copy or fail.
    Zerocopy,
}

/// The `[xdp]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpSettings {
    /// The interface to attach to and open AF_XDP sockets on.
    pub iface: String,
    /// RX queues to serve (one worker each). Default: all of the interface's RX queues.
    #[serde(default)]
    pub queues: Option<u32>,
    /// AF_XDP mode.
    #[serde(default)]
    pub mode: XskMode,
    /// Next hop for destinations that are not on-link; default: the kernel's routes.
    #[serde(default)]
    pub gateway: Option<std::net::IpAddr>,
    /// Control messages (joins) per second per source address, in the kernel; 0 = unlimited.
    #[serde(default = "default_join_rate")]
    pub join_rate_per_sec: u64,
    /// Join bucket size.
    #[serde(default = "default_join_burst")]
    pub join_burst: u64,
    /// SRTP packets per second per source address, in the kernel; 0 = unlimited.
    #[serde(default = "default_pps_rate")]
    pub pps_rate_per_sec: u64,
    /// Packet bucket size.
    #[serde(default = "default_pps_burst")]
    pub pps_burst: u64,
    /// Control messages per second that reach relayd from all sources without a session
    /// together, after each source's join bucket: what a flood from random spoofed
    /// addresses (each with a fresh bucket) can cost at most. 0 = unlimited. Control from
    /// a known session (keepalives, leaves, messages) is not counted.
    #[serde(default = "default_control_budget")]
    pub control_budget_per_sec: u64,
    /// The control budget's bucket size.
    #[serde(default = "default_control_budget_burst")]
    pub control_budget_burst: u64,
    /// Pin maps under `pin_dir` so limits and the blocklist survive restarts.
    #[serde(default = "yes")]
    pub pin_maps: bool,
    /// Where maps are pinned (a directory on the BPF filesystem). Default
    /// [`DEFAULT_PIN_DIR`]. Two relayds on one host need two directories.
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// Entries of the kernel's `sessions` map: the most concurrent sessions the XDP backend
    /// admits (a join beyond it is refused `overloaded`). Kernel memory is about 100 bytes
    /// per entry, preallocated (the default, 262,144, is about 26 MiB).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// Descriptors in each AF_XDP socket's RX and TX rings (a power of two, 256..=16384).
    /// The fill and completion rings get twice as many and the UMEM four times as many
    /// 2 KiB frames (8 MiB per queue at the default): a deeper RX ring absorbs the moments
    /// the worker is not running (another task on its core) without dropping.
    #[serde(default = "default_ring_size")]
    pub ring_size: u32,
}

/// `xdp.pin_dir` when the file gives none (the XDP program's own `PIN_DIR`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/edgerelay";

/// `xdp.ring_size` when the file gives none.
pub const DEFAULT_XDP_RING_SIZE: u32 = 1024;
/// Smallest and largest `xdp.ring_size`.
pub const XDP_RING_SIZE_RANGE: std::ops::RangeInclusive<u32> = 256..=16_384;

fn default_ring_size() -> u32 {
    DEFAULT_XDP_RING_SIZE
}

/// Fewest and most `xdp.max_sessions` relayd accepts.
pub const XDP_MAX_SESSIONS_RANGE: std::ops::RangeInclusive<u32> = 1024..=16_777_216;

/// `xdp.max_sessions` when the file gives none.
pub const DEFAULT_XDP_MAX_SESSIONS: u32 = 262_144;

fn default_max_sessions() -> u32 {
    DEFAULT_XDP_MAX_SESSIONS
}

fn default_join_rate() -> u64 {
    20
}
fn default_join_burst() -> u64 {
    40
}
fn default_pps_rate() -> u64 {
    20_000
}
fn default_pps_burst() -> u64 {
    40_000
}

/// Session timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// How often idle clients should send a keepalive (told to them in join-ok).
    pub keepalive_secs: u16,
    /// A session that sends nothing (media or keepalive) for this long is expired.
    pub session_secs: u16,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { keepalive_secs: 5, session_secs: 30 }
    }
}

/// One app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The TRTC SdkAppId.
    pub sdkappid: u64,
    /// The app's secret key (the UserSig HMAC key, used as its ASCII bytes).
    #[serde(default)]
    pub secret: Option<String>,
    /// Read the secret from this file instead (first line, trimmed).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Refuse joins that carry no PrivateMapKey.
    #[serde(default)]
    pub require_private_map_key: bool,
    /// Accept v1 (cleartext) joins too, during a client migration; they are counted
    /// (`handshake.v1_joins`). Default false: v1 joins are refused `v1_not_allowed`.
    #[serde(default)]
    pub allow_v1_joins: bool,
    /// SRTP profiles clients may ask for. Default: all supported.
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
    /// Quotas.
    #[serde(default)]
    pub quotas: Quotas,
}

/// An app after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// The id.
    pub sdkappid: SdkAppId,
    /// The UserSig keys, newest first: during a rotation the previous key stays valid for
    /// an overlap window (pushed by relay-control; a TOML file has one).
    pub secrets: Vec<Vec<u8>>,
    /// See [`AppConfig::require_private_map_key`].
    pub require_private_map_key: bool,
    /// See [`AppConfig::allow_v1_joins`]; [`App::new`] sets it false.
    pub allow_v1_joins: bool,
    /// Allowed profiles.
    pub profiles: Vec<Profile>,
    /// Quotas.
    pub quotas: Quotas,
}

impl App {
    /// Validates one app's settings (from the TOML file or a push from relay-control).
    /// `secrets` are newest first; at most two (current and, during a rotation, previous).
    pub fn new(
        sdkappid: SdkAppId,
        secrets: Vec<String>,
        require_private_map_key: bool,
        profiles: Option<Vec<String>>,
        quotas: Quotas,
    ) -> Result<Self, Error> {
        let id = sdkappid;
        if secrets.is_empty() || secrets.len() > 2 {
            return invalid(format!("app {id}: give one secret, or two during a rotation (newest first)"));
        }
        if secrets.iter().any(|s| s.len() < 16) {
            return invalid(format!("app {id}: secret must be at least 16 characters"));
        }
        let profiles = match profiles {
            None => Profile::ALL.to_vec(),
            Some(names) => {
                let mut v = Vec::new();
                for n in names {
                    let p: Profile = n.parse().map_err(|_| {
                        Error::Invalid(format!(
                            "app {id}: unknown SRTP profile {n:?}; known: {}",
                            Profile::ALL.map(|p| p.name()).join(", ")
                        ))
                    })?;
                    v.push(p);
                }
                if v.is_empty() {
                    return invalid(format!("app {id}: profiles must not be empty"));
                }
                v
            }
        };
        // max_rooms or max_sessions 0 admits no new room or session for now: what a cluster
        // node pushes while its share of the app's quota is empty. The config file refuses 0
        // (see `Config::apps`).
        let q = quotas;
        if q.max_members_per_room < 2 {
            return invalid(format!("app {id}: quotas need max_members_per_room >= 2"));
        }
        Ok(Self {
            sdkappid,
            secrets: secrets.into_iter().map(String::into_bytes).collect(),
            require_private_map_key,
            allow_v1_joins: false,
            profiles,
            quotas: q,
        })
    }
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// Listen address.
    pub listen: SocketAddr,
    /// Worker count (resolved).
    pub workers: usize,
    /// Pin workers.
    pub pin_workers: bool,
    /// Management socket.
    pub control_socket: Option<PathBuf>,
    /// [`Config::control_users`], by name.
    pub control_users: Vec<String>,
    /// Their uids, once [`Validated::resolve_control_users`] ran (relayd does at start-up
    /// and in `relayd check`).
    pub control_uids: Vec<u32>,
    /// Timing.
    pub timeouts: Timeouts,
    /// Apps.
    pub apps: Vec<App>,
    /// Backend.
    pub backend: Backend,
    /// XDP settings (present when `backend` is `Xdp`).
    pub xdp: Option<XdpSettings>,
    /// User to switch to after setup.
    pub user: Option<String>,
    /// The key file (resolved against the config file's directory).
    pub key_file: PathBuf,
    /// The join path's defences.
    pub join: JoinSettings,
    /// The log level directive ([`Config::log_level`], checked).
    pub log_level: String,
    /// The log format.
    pub log_format: LogFormat,
    /// The saved push ([`Config::state_file`], resolved; its default next to `key_file`).
    pub state_file: PathBuf,
    /// The `[security]` table.
    pub security: SecuritySettings,
}

/// Most worker threads accepted.
pub const MAX_WORKERS: usize = 256;

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Validated, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Self::parse(&text)?.validate(path.parent())
    }

    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Self, Error> {
        Ok(toml::from_str(text)?)
    }

    /// Checks every value; `base` resolves relative `secret_file` paths.
    pub fn validate(self, base: Option<&Path>) -> Result<Validated, Error> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = self.workers.unwrap_or(cores);
        if workers == 0 || workers > MAX_WORKERS {
            return invalid(format!("workers = {workers}: must be 1..={MAX_WORKERS}"));
        }
        let t = self.timeouts;
        if t.keepalive_secs == 0 || t.session_secs == 0 {
            return invalid("timeouts.keepalive_secs and timeouts.session_secs must be at least 1");
        }
        if t.keepalive_secs >= t.session_secs {
            return invalid(format!(
                "timeouts.keepalive_secs ({}) must be below timeouts.session_secs ({}), or idle clients expire",
                t.keepalive_secs, t.session_secs
            ));
        }
        if self.apps.is_empty() {
            return invalid("no [[app]] configured: add at least one app with sdkappid and secret");
        }
        let mut seen = HashSet::new();
        let mut apps = Vec::with_capacity(self.apps.len());
        for a in self.apps {
            let id =
                SdkAppId::new(a.sdkappid).map_err(|e| Error::Invalid(format!("app sdkappid = {}: {e}", a.sdkappid)))?;
            if !seen.insert(id) {
                return invalid(format!("app {id} is configured twice"));
            }
            let secret = match (a.secret, a.secret_file) {
                (Some(s), None) => s,
                (None, Some(p)) => {
                    let p = match base {
                        Some(b) if p.is_relative() => b.join(p),
                        _ => p,
                    };
                    let s = std::fs::read_to_string(&p).map_err(|e| {
                        Error::Invalid(format!("app {id}: cannot read secret_file {}: {e}", p.display()))
                    })?;
                    s.lines().next().unwrap_or("").trim().to_owned()
                }
                (Some(_), Some(_)) => return invalid(format!("app {id}: set secret or secret_file, not both")),
                (None, None) => return invalid(format!("app {id}: secret or secret_file is required")),
            };
            if a.quotas.max_rooms == 0 || a.quotas.max_sessions == 0 {
                return invalid(format!(
                    "app {id}: quotas need max_rooms >= 1, max_members_per_room >= 2, max_sessions >= 1"
                ));
            }
            let mut app = App::new(id, vec![secret], a.require_private_map_key, a.profiles, a.quotas)?;
            app.allow_v1_joins = a.allow_v1_joins;
            apps.push(app);
        }
        let j = self.join;
        if j.timestamp_window_secs == 0 || j.timestamp_window_secs > 3600 {
            return invalid("join.timestamp_window_secs must be 1..=3600");
        }
        if j.replies_per_sec == 0 || j.replies_per_source_per_sec == 0 || j.cookies_per_sec == 0 {
            return invalid(
                "join.replies_per_sec, join.replies_per_source_per_sec and join.cookies_per_sec must be at least 1",
            );
        }
        let resolve = |p: PathBuf| match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        let key_file = resolve(self.identity.key_file);
        let log_level = self.log_level.unwrap_or_else(|| crate::logging::DEFAULT_LEVEL.to_owned());
        crate::logging::parse_level(&log_level).map_err(|e| Error::Invalid(e.to_string()))?;
        let state_file = match self.state_file {
            Some(p) if p.as_os_str().is_empty() => return invalid("state_file must not be empty"),
            Some(p) => resolve(p),
            None => key_file.parent().unwrap_or(Path::new(".")).join(crate::pushed::DEFAULT_FILE_NAME),
        };
        if state_file == key_file {
            return invalid(format!("state_file and [identity] key_file are both {}", key_file.display()));
        }
        let mut v = Validated {
            state_file,
            key_file,
            log_level,
            log_format: self.log_format,
            join: j,
            listen: self.listen,
            workers,
            pin_workers: self.pin_workers,
            control_socket: self.control_socket.map(resolve),
            control_users: self.control_users,
            control_uids: Vec::new(),
            timeouts: t,
            apps,
            backend: self.backend,
            xdp: self.xdp,
            user: self.user,
            security: self.security,
        };
        v.check_backend()?;
        Ok(v)
    }
}

/// What a reload found changed between the running config and the file, by config key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changed settings that apply to the running relay: `app` (apps, secrets, quotas),
    /// `timeouts`, `join`, `log_level`, `control_users` and the `[xdp]` rates.
    pub live: Vec<String>,
    /// Changed settings that take effect only at the next start (sockets, threads, the
    /// backend and its interface, the user, the key file, the log format, `[security]`).
    pub restart: Vec<String>,
}

impl Validated {
    /// What differs in `new` (the file as just re-read), split into what can change live
    /// and what needs a restart.
    pub fn changes_to(&self, new: &Validated) -> Changes {
        let mut c = Changes::default();
        let mut check = |changed: bool, key: &str, live: bool| {
            let list = if live { &mut c.live } else { &mut c.restart };
            if changed {
                list.push(key.to_owned());
            }
        };
        check(self.listen != new.listen, "listen", false);
        check(self.workers != new.workers, "workers", false);
        check(self.pin_workers != new.pin_workers, "pin_workers", false);
        check(self.control_socket != new.control_socket, "control_socket", false);
        check(self.backend != new.backend, "backend", false);
        check(self.user != new.user, "user", false);
        check(self.key_file != new.key_file, "identity.key_file", false);
        check(self.log_format != new.log_format, "log_format", false);
        check(self.state_file != new.state_file, "state_file", false);
        check(self.security != new.security, "security.worker_seccomp", false);
        check(self.apps != new.apps, "app", true);
        check(self.timeouts != new.timeouts, "timeouts", true);
        check(self.join != new.join, "join", true);
        check(self.log_level != new.log_level, "log_level", true);
        check(self.control_uids != new.control_uids, "control_users", true);
        match (&self.xdp, &new.xdp) {
            (Some(a), Some(b)) => {
                for (key, x, y) in [
                    ("join_rate_per_sec", a.join_rate_per_sec, b.join_rate_per_sec),
                    ("join_burst", a.join_burst, b.join_burst),
                    ("pps_rate_per_sec", a.pps_rate_per_sec, b.pps_rate_per_sec),
                    ("pps_burst", a.pps_burst, b.pps_burst),
                    ("control_budget_per_sec", a.control_budget_per_sec, b.control_budget_per_sec),
                    ("control_budget_burst", a.control_budget_burst, b.control_budget_burst),
                ] {
                    check(x != y, &format!("xdp.{key}"), true);
                }
                check(a.iface != b.iface, "xdp.iface", false);
                check(a.queues != b.queues, "xdp.queues", false);
                check(a.mode != b.mode, "xdp.mode", false);
                check(a.gateway != b.gateway, "xdp.gateway", false);
                check(a.pin_maps != b.pin_maps, "xdp.pin_maps", false);
                check(a.max_sessions != b.max_sessions, "xdp.max_sessions", false);
                check(a.ring_size != b.ring_size, "xdp.ring_size", false);
                check(a.pin_dir != b.pin_dir, "xdp.pin_dir", false);
            }
            (a, b) => check(a != b, "xdp", false),
        }
        c
    }

    /// This config with the settings of `new` that apply live (see [`Changes::live`]);
    /// everything that needs a restart stays as it runs.
    pub fn with_live_settings_of(&self, new: &Validated) -> Validated {
        let mut v = self.clone();
        v.apps = new.apps.clone();
        v.timeouts = new.timeouts;
        v.join = new.join;
        v.log_level = new.log_level.clone();
        v.control_users = new.control_users.clone();
        v.control_uids = new.control_uids.clone();
        if let (Some(x), Some(n)) = (v.xdp.as_mut(), new.xdp.as_ref()) {
            x.join_rate_per_sec = n.join_rate_per_sec;
            x.join_burst = n.join_burst;
            x.pps_rate_per_sec = n.pps_rate_per_sec;
            x.pps_burst = n.pps_burst;
            x.control_budget_per_sec = n.control_budget_per_sec;
            x.control_budget_burst = n.control_budget_burst;
        }
        v
    }

    /// Resolves [`Validated::control_users`] to uids with `lookup` (name to uid, `None` for
    /// no such user: relayd passes the system's user database), so an unknown name is a
    /// config error.
    pub fn resolve_control_users(
        &mut self,
        lookup: impl Fn(&str) -> std::io::Result<Option<u32>>,
    ) -> Result<(), Error> {
        let mut uids = Vec::with_capacity(self.control_users.len());
        for name in &self.control_users {
            match lookup(name) {
                Ok(Some(uid)) => uids.push(uid),
                Ok(None) => return invalid(format!("control_users: no such user {name:?}")),
                Err(e) => return invalid(format!("control_users: cannot look up {name:?}: {e}")),
            }
        }
        self.control_uids = uids;
        Ok(())
    }

    /// Checks the backend settings; call again after command-line overrides.
    pub fn check_backend(&mut self) -> Result<(), Error> {
        if let Some(u) = &self.user {
            if u.is_empty() || u.len() > 32 {
                return invalid(format!("user = {u:?}: must be a user name"));
            }
        }
        match self.backend {
            Backend::Socket => Ok(()),
            Backend::Xdp => {
                let Some(x) = &self.xdp else {
                    return invalid("backend = \"xdp\" needs an [xdp] table with at least iface = \"...\"");
                };
                if x.iface.is_empty() || x.iface.len() >= 16 {
                    return invalid(format!("xdp.iface = {:?}: not an interface name", x.iface));
                }
                if self.listen.ip().is_unspecified() || self.listen.port() == 0 {
                    return invalid(format!(
                        "listen = {}: the XDP backend builds frames itself, so it needs the interface's own address and a fixed port",
                        self.listen
                    ));
                }
                if x.queues == Some(0) {
                    return invalid("xdp.queues must be at least 1");
                }
                if let Some(d) = &x.pin_dir {
                    if !d.starts_with("/sys/fs/bpf") || d == Path::new("/sys/fs/bpf") {
                        return invalid(format!(
                            "xdp.pin_dir = {}: must be a directory under /sys/fs/bpf (the BPF filesystem)",
                            d.display()
                        ));
                    }
                }
                if !XDP_MAX_SESSIONS_RANGE.contains(&x.max_sessions) {
                    return invalid(format!(
                        "xdp.max_sessions = {}: must be between {} and {}",
                        x.max_sessions,
                        XDP_MAX_SESSIONS_RANGE.start(),
                        XDP_MAX_SESSIONS_RANGE.end()
                    ));
                }
                if !XDP_RING_SIZE_RANGE.contains(&x.ring_size) || !x.ring_size.is_power_of_two() {
                    return invalid(format!(
                        "xdp.ring_size = {}: must be a power of two between {} and {}",
                        x.ring_size,
                        XDP_RING_SIZE_RANGE.start(),
                        XDP_RING_SIZE_RANGE.end()
                    ));
                }
                for (key, v) in [
                    ("join_rate_per_sec", x.join_rate_per_sec),
                    ("join_burst", x.join_burst),
                    ("pps_rate_per_sec", x.pps_rate_per_sec),
                    ("pps_burst", x.pps_burst),
                ] {
                    if u32::try_from(v).is_err() {
                        return invalid(format!("xdp.{key} = {v}: at most {}", u32::MAX));
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:7000"
workers = 2
[timeouts]
keepalive_secs = 2
session_secs = 10
[[app]]
sdkappid = 1400000001
secret = "0123456789abcdef0123"
profiles = ["AES_CM_128_HMAC_SHA1_80"]
[app.quotas]
max_rooms = 3
max_members_per_room = 4
max_sessions = 10
"#;

    /// A user database with root alone.
    fn only_root(name: &str) -> std::io::Result<Option<u32>> {
        Ok((name == "root").then_some(0))
    }

    fn err(text: &str) -> String {
        let load = |text| -> Result<Validated, Error> {
            let mut v = Config::parse(text)?.validate(None)?;
            v.resolve_control_users(only_root)?;
            Ok(v)
        };
        match load(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_config_loads() {
        let v = Config::parse(GOOD).unwrap().validate(None).unwrap();
        assert_eq!(v.workers, 2);
        assert_eq!(v.apps[0].profiles, vec![Profile::AesCm128HmacSha1_80]);
        assert_eq!(v.apps[0].quotas.max_members_per_room, 4);
    }

    #[test]
    fn errors_are_clear() {
        assert!(err(&GOOD.replace("workers = 2", "wrokers = 2")).contains("unknown field `wrokers`"));
        assert!(err(&GOOD.replace("workers = 2", "workers = 0")).contains("workers = 0"));
        assert!(err(&GOOD.replace("keepalive_secs = 2", "keepalive_secs = 20")).contains("must be below"));
        assert!(err(&GOOD.replace("1400000001", "0")).contains("sdkappid = 0"));
        assert!(err(&GOOD.replace("0123456789abcdef0123", "short")).contains("at least 16"));
        assert!(err(&GOOD.replace("AES_CM_128_HMAC_SHA1_80", "ROT13")).contains("unknown SRTP profile"));
        assert!(err(&GOOD.replace("max_rooms = 3", "max_rooms = 0")).contains("quotas"));
        assert!(err(&format!("{GOOD}\n[[app]]\nsdkappid = 1400000001\nsecret = \"0123456789abcdef0123\"\n"))
            .contains("configured twice"));
        assert!(err("listen = \"127.0.0.1:7000\"\n").contains("no [[app]]"));
        assert!(err("listen = \"nope\"\n").contains("invalid socket address"));
        assert!(err(&format!("backend = \"xdp\"\n{GOOD}")).contains("[xdp] table"));
        assert!(err(&format!(
            "backend = \"xdp\"\n{}\n[xdp]\niface = \"eth0\"\n",
            GOOD.replace("127.0.0.1", "0.0.0.0")
        ))
        .contains("needs the interface's own address"));
        assert!(err(&format!("backend = \"ebpf\"\n{GOOD}")).contains("unknown variant `ebpf`"));
        assert!(err(&format!("control_users = [\"no-such-user-edgerelay\"]\n{GOOD}"))
            .contains("control_users: no such user \"no-such-user-edgerelay\""));
        assert!(err(&format!(
            "backend = \"xdp\"\n{}\n[xdp]\niface = \"eth0\"\npps_rate_per_sec = 5000000000\n",
            GOOD.replace("127.0.0.1", "192.0.2.1")
        ))
        .contains("xdp.pps_rate_per_sec = 5000000000: at most 4294967295"));
        let xdp = |extra: &str| {
            format!("backend = \"xdp\"\n{}\n[xdp]\niface = \"eth0\"\n{extra}", GOOD.replace("127.0.0.1", "192.0.2.1"))
        };
        assert!(err(&xdp("max_sessions = 100\n")).contains("xdp.max_sessions = 100: must be between 1024 and 16777216"));
        let v = Config::parse(&xdp("")).unwrap();
        assert_eq!(v.xdp.as_ref().map(|x| x.max_sessions), Some(262_144));
        assert!(err(&xdp("ring_size = 1000\n"))
            .contains("xdp.ring_size = 1000: must be a power of two between 256 and 16384"));
        assert!(err(&xdp("ring_size = 32768\n")).contains("xdp.ring_size = 32768"));
        let v = Config::parse(&xdp("ring_size = 4096\n")).unwrap().validate(None).unwrap();
        assert_eq!(v.xdp.as_ref().map(|x| x.ring_size), Some(4096));
        let v = Config::parse(&xdp("max_sessions = 200000\n")).unwrap().validate(None).unwrap();
        assert_eq!(v.xdp.as_ref().map(|x| x.max_sessions), Some(200_000));
    }

    #[test]
    fn changes_split_into_live_and_restart() {
        let old = Config::parse(GOOD).unwrap().validate(None).unwrap();
        assert_eq!(old.changes_to(&old), Changes::default());
        let edited = GOOD
            .replace("max_rooms = 3", "max_rooms = 5")
            .replace("session_secs = 10", "session_secs = 12")
            .replace("workers = 2", "workers = 3\nlog_level = \"relay=debug\"\nlog_format = \"json\"")
            .replace("127.0.0.1:7000", "127.0.0.1:7001");
        let new = Config::parse(&edited).unwrap().validate(None).unwrap();
        let c = old.changes_to(&new);
        assert_eq!(c.live, ["app", "timeouts", "log_level"]);
        assert_eq!(c.restart, ["listen", "workers", "log_format"]);
        // Applying the live part leaves only what needs a restart.
        let applied = old.with_live_settings_of(&new);
        assert_eq!(applied.apps[0].quotas.max_rooms, 5);
        assert_eq!(applied.listen, old.listen);
        let again = applied.changes_to(&new);
        assert!(again.live.is_empty(), "{again:?}");
        assert_eq!(again.restart, c.restart);
    }

    #[test]
    fn worker_seccomp_defaults_to_kill_and_needs_a_restart() {
        let with = |v: &str| Config::parse(&format!("{GOOD}\n[security]\nworker_seccomp = \"{v}\"\n"));
        let default = Config::parse(GOOD).unwrap().validate(None).unwrap();
        assert_eq!(default.security.worker_seccomp, WorkerSeccomp::Kill);
        let off = with("off").unwrap().validate(None).unwrap();
        assert_eq!(off.security.worker_seccomp, WorkerSeccomp::Off);
        assert_eq!(with("log").unwrap().security.worker_seccomp, WorkerSeccomp::Log);
        assert!(with("errno").unwrap_err().to_string().contains("unknown variant `errno`"));
        assert!(Config::parse(&format!("{GOOD}\n[security]\nseccomp = true\n")).is_err());
        let c = default.changes_to(&off);
        assert_eq!((c.live, c.restart), (vec![], vec!["security.worker_seccomp".to_owned()]));
    }

    #[test]
    fn xdp_rates_change_live_and_the_rest_of_xdp_does_not() {
        let xdp = |extra: &str| {
            let t = format!(
                "backend = \"xdp\"\n{}\n[xdp]\niface = \"eth0\"\n{extra}",
                GOOD.replace("127.0.0.1", "192.0.2.1")
            );
            Config::parse(&t).unwrap().validate(None).unwrap()
        };
        let c = xdp("").changes_to(&xdp("pps_rate_per_sec = 100\nring_size = 2048\n"));
        assert_eq!(c.live, ["xdp.pps_rate_per_sec"]);
        assert_eq!(c.restart, ["xdp.ring_size"]);
    }

    #[test]
    fn log_settings_are_checked_and_relative_sockets_resolve() {
        assert!(err(&format!("log_level = \"relay=loud\"\n{GOOD}")).contains("log level \"relay=loud\""));
        assert!(err(&format!("log_format = \"xml\"\n{GOOD}")).contains("unknown variant `xml`"));
        let v = Config::parse(&format!("control_socket = \"r.sock\"\n{GOOD}"))
            .unwrap()
            .validate(Some(Path::new("/etc/edgerelay")))
            .unwrap();
        assert_eq!(v.control_socket.as_deref(), Some(Path::new("/etc/edgerelay/r.sock")));
        assert_eq!(v.log_level, "info");
    }

    #[test]
    fn the_saved_push_lives_next_to_the_key_file_unless_told() {
        let v = Config::parse(GOOD).unwrap().validate(Some(Path::new("/etc/edgerelay"))).unwrap();
        assert_eq!(v.state_file, Path::new("/var/lib/edgerelay/pushed.json"));
        let text = format!("state_file = \"run/pushed.json\"\n{GOOD}\n[identity]\nkey_file = \"k/relay.key\"\n");
        let v = Config::parse(&text).unwrap().validate(Some(Path::new("/srv/relay"))).unwrap();
        assert_eq!(v.state_file, Path::new("/srv/relay/run/pushed.json"));
        assert_eq!(v.key_file, Path::new("/srv/relay/k/relay.key"));
        let text = format!("{GOOD}\n[identity]\nkey_file = \"k/relay.key\"\n");
        let v = Config::parse(&text).unwrap().validate(Some(Path::new("/srv/relay"))).unwrap();
        assert_eq!(v.state_file, Path::new("/srv/relay/k/pushed.json"));
        assert!(err(&format!("state_file = \"\"\n{GOOD}")).contains("state_file must not be empty"));
        assert!(err(&format!("state_file = \"/var/lib/edgerelay/relay.key\"\n{GOOD}")).contains("are both"));
        let xdp = |extra: &str| {
            format!("backend = \"xdp\"\n{}\n[xdp]\niface = \"eth0\"\n{extra}", GOOD.replace("127.0.0.1", "192.0.2.1"))
        };
        assert!(err(&xdp("pin_dir = \"/tmp/maps\"\n")).contains("must be a directory under /sys/fs/bpf"));
        let v = Config::parse(&xdp("pin_dir = \"/sys/fs/bpf/edgerelay-b\"\n")).unwrap().validate(None).unwrap();
        assert_eq!(v.xdp.unwrap().pin_dir.unwrap(), Path::new("/sys/fs/bpf/edgerelay-b"));
    }

    #[test]
    fn control_users_resolve_to_uids() {
        let mut v = Config::parse(&format!("control_users = [\"root\"]\n{GOOD}")).unwrap().validate(None).unwrap();
        v.resolve_control_users(only_root).unwrap();
        assert_eq!(v.control_uids, vec![0]);
    }
}
