//! The `relay-control` config file (TOML), validated at load.
//!
//! Unknown keys are errors at every level, including `[alerts]` and `[autoblock]`, whose
//! structs and bounds belong to the monitoring modules ([`AlertsConfig`], [`AutoblockConfig`])
//! and are checked here at load, so a bad threshold or webhook URL stops the daemon before
//! it binds anything, with a message naming the key.
//! Config is separate from live state: nothing here changes after load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alerts::{AlertsConfig, AlertsConfigError};
use crate::autoblock::{AutoblockConfig, AutoblockError};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of its documented range.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// `[alerts]` (or `[alerts.*]`) holds a value out of range or a bad webhook URL. The
    /// message is the whole story (not a `source`, so reports do not repeat it).
    #[error("invalid config: {0}")]
    Alerts(AlertsConfigError),
    /// `[autoblock]` holds a value out of range.
    #[error("invalid config: {0}")]
    Autoblock(AutoblockError),
}

impl From<AlertsConfigError> for ConfigError {
    fn from(e: AlertsConfigError) -> Self {
        ConfigError::Alerts(e)
    }
}

impl From<AutoblockError> for ConfigError {
    fn from(e: AutoblockError) -> Self {
        ConfigError::Autoblock(e)
    }
}

/// Request rate limits, per source address and per SecretId (token buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per second from one source address (before authentication).
    #[serde(default = "default_per_ip_per_sec")]
    pub per_ip_per_sec: u32,
    /// Burst for one source address.
    #[serde(default = "default_per_ip_burst")]
    pub per_ip_burst: u32,
    /// Requests per second for one SecretId (after authentication).
    #[serde(default = "default_per_key_per_sec")]
    pub per_key_per_sec: u32,
    /// Burst for one SecretId.
    #[serde(default = "default_per_key_burst")]
    pub per_key_burst: u32,
}

fn default_per_ip_per_sec() -> u32 {
    20
}
fn default_per_ip_burst() -> u32 {
    40
}
fn default_per_key_per_sec() -> u32 {
    10
}
fn default_per_key_burst() -> u32 {
    20
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_ip_per_sec: default_per_ip_per_sec(),
            per_ip_burst: default_per_ip_burst(),
            per_key_per_sec: default_per_key_per_sec(),
            per_key_burst: default_per_key_burst(),
        }
    }
}

/// The daemon's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory of the store (`control.redb`) and the generated certificate.
    pub state_dir: PathBuf,
    /// PEM certificate chain; with `tls_key`. Without both, a self-signed certificate is
    /// generated in `state_dir` on first start.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// relayd's `control_socket`. Without it the daemon runs and reports relayd unreachable.
    #[serde(default)]
    pub relayd_socket: Option<PathBuf>,
    /// The UDP address clients reach this node's relayd at, handed out with every UserSig
    /// (`relays[].endpoint`). Default: relayd's listen address, when it is a specific one
    /// (a wildcard bind such as 0.0.0.0 names no address clients can use).
    #[serde(default)]
    pub public_endpoint: Option<SocketAddr>,
    /// Switch to this user after binding the listener, when started as root.
    #[serde(default)]
    pub user: Option<String>,
    /// TC3 service name in the credential scope.
    #[serde(default = "default_service")]
    pub service: String,
    /// Request rate limits.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Bearer token that `/metrics` also accepts (for Prometheus scrapers).
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// Alert rules and the webhook (`control::alerts`).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Automatic blocking of flooding sources (`control::autoblock`).
    #[serde(default)]
    pub autoblock: AutoblockConfig,
    /// The edge cluster (`control::cluster`): shared state in Redis. Without it this node
    /// runs alone on its embedded store, and nothing needs Redis.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `"text"` (default) or `"json"`: one JSON object per log line (`--log-format`
    /// overrides it). The level is `RUST_LOG` (default `info`).
    #[serde(default)]
    pub log_format: relay::logging::LogFormat,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_service() -> String {
    "trtc".into()
}

/// Shortest accepted `metrics_token`.
pub const MIN_METRICS_TOKEN_LEN: usize = 16;

impl Config {
    /// Reads, parses and validates `path`. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.to_owned(), source },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let cluster = cfg.cluster.as_mut();
        let (key_file, pw, ca) = match cluster {
            Some(c) => (Some(&mut c.key_file), c.redis_password_file.as_mut(), c.redis_ca_file.as_mut()),
            None => (None, None, None),
        };
        for p in [Some(&mut cfg.state_dir), cfg.tls_cert.as_mut(), cfg.tls_key.as_mut(), cfg.relayd_socket.as_mut()]
            .into_iter()
            .chain([key_file, pw, ca])
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    /// Parses and validates config text (paths are left as written).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<text>"), source: Box::new(e) })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert and tls_key go together");
        }
        let s = &self.service;
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return invalid("service must be 1-64 characters of a-z, 0-9 and -");
        }
        let r = &self.rate_limits;
        if [r.per_ip_per_sec, r.per_ip_burst, r.per_key_per_sec, r.per_key_burst].contains(&0) {
            return invalid("rate_limits values must be at least 1");
        }
        if let Some(t) = &self.metrics_token {
            if t.len() < MIN_METRICS_TOKEN_LEN || !t.bytes().all(|c| c.is_ascii_graphic()) {
                return invalid("metrics_token must be at least 16 printable ASCII characters");
            }
        }
        if self.user.as_deref().is_some_and(str::is_empty) {
            return invalid("user must not be empty");
        }
        self.alerts.validate()?;
        self.autoblock.validate()?;
        if let Some(c) = &self.cluster {
            c.check().map_err(ConfigError::Invalid)?;
            if c.endpoints.is_empty() && self.public_endpoint.is_none() {
                return invalid(
                    "[cluster] needs endpoints (or public_endpoint): the addresses clients join this node at",
                );
            }
        }
        Ok(())
    }

    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("control.redb")
    }
}

/// A commented example config, printed by `relay-control example-config`.
pub const EXAMPLE: &str = r#"# relay-control config. Unknown keys are errors.

# HTTPS only; there is no plaintext listener.
listen = "127.0.0.1:8443"
# Store (control.redb, mode 0600) and, without tls_cert/tls_key, the generated certificate.
state_dir = "/var/lib/edgerelay-control"
# tls_cert = "/etc/edgerelay/control.crt"   # PEM chain; reloaded on SIGHUP and when changed
# tls_key = "/etc/edgerelay/control.key"
# relayd's control_socket; without it the API runs and reports relayd unreachable.
relayd_socket = "/run/edgerelay/relayd.sock"
# When started as root: switch to this user after binding the listener.
# user = "edgerelay"
# TC3-HMAC-SHA256 credential scope service.
service = "trtc"
# Optional bearer token Prometheus can use for /metrics (>= 16 characters).
# metrics_token = "change-me-to-a-long-random-token"
# Log lines: "text" or "json" (one object per line; --log-format overrides). Level: RUST_LOG.
# log_format = "text"

[rate_limits]
per_ip_per_sec = 20
per_ip_burst = 40
per_key_per_sec = 10
per_key_burst = 20

# Alert rules, evaluated on every poll of relayd (every 500 ms). Each rule fires once when
# its condition has held for for_secs, and sends one resolve when it stops holding. Events
# are logged; with [alerts.webhook] each is also POSTed as JSON
# {status, rule, summary, labels, started_at, resolved_at?}.
[alerts]
# labels = { node = "edge-1" }   # added to every event (at most 16)

# [alerts.webhook]
# url = "https://alerts.example.net/edgerelay"   # http:// or https://, no redirects followed
# timeout_ms = 5000        # per attempt, 100..=60000
# max_retries = 3          # 0..=10; on connection errors, timeouts, 408, 429 and 5xx
# retry_backoff_ms = 500   # 0..=60000, doubles per retry, at most 30 s

[alerts.drop_rate]         # engine + XDP drops per second
enabled = true
per_sec = 5000             # 1..=1000000000
for_secs = 60              # 0..=86400

[alerts.flood]             # XDP drops per second, or an autoblock in the last autoblock_hold_secs
enabled = true
xdp_drops_per_sec = 20000  # 1..=1000000000
autoblock_hold_secs = 30   # 0..=86400
for_secs = 0               # 0..=86400

[alerts.relayd_unreachable]
enabled = true
after_secs = 10            # no successful poll for this long, 1..=86400

[alerts.worker_stalled]
enabled = true
lag_ms = 1000              # a relayd worker loop this late, 200..=3600000
for_secs = 5               # 0..=86400

[alerts.cert_expiry]
enabled = true
within_days = 14           # 1..=365

[alerts.cluster_unreachable]   # cluster nodes only: Redis unreachable (writes answer 503)
enabled = true
after_secs = 3             # 1..=86400

# Automatic blocking: a source whose kernel drops (any reason: unknown session, rate
# limited, junk, ...) exceed pps_threshold per second is blocklisted (/32 or /128, source
# "auto") for ttl_secs, then released. A live entry that already covers it is left alone.
[autoblock]
enabled = true
pps_threshold = 1000       # drops per second, 1..=1000000000
ttl_secs = 600             # 1..=2592000
max_tracked = 4096         # sources tracked, 16..=1048576
max_blocks = 1024          # live autoblocks, 1..=1048576
exempt = []                # CIDRs never blocked, e.g. ["198.51.100.0/24"] (at most 1024)

# Edge cluster: uncomment to share apps, keys, the blocklist and limits with other nodes
# through Redis 7 (or Valkey). Without it this node runs alone on its embedded store.
# [cluster]
# redis_url = "rediss://edgerelay@redis.internal:6380/0"   # redis:// or rediss:// (TLS)
# redis_password_file = "/etc/edgerelay/redis.password"    # the ACL user's password
# redis_ca_file = "/etc/edgerelay/redis-ca.pem"            # CA of Redis's certificate
# node_id = "edge-1"                                        # unique: A-Z a-z 0-9 . _ -
# region = "eu-west"
# endpoints = ["203.0.113.10:7000"]                         # where clients join this node
# key_file = "/etc/edgerelay/cluster.key"                   # same on every node; mode 0600
# key_prefix = "edgerelay:"
# log_max_len = 100000        # change-log entries kept; a node further behind resyncs
# heartbeat_ms = 500          # 100..=1000
# node_ttl_ms = 2000          # a silent node leaves the registry after this, <= 3000
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_with_defaults() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.service, "trtc");
        assert_eq!(c.rate_limits, RateLimits::default());
        assert_eq!(c.alerts, AlertsConfig::default(), "the example documents the defaults");
        assert_eq!(c.autoblock, AutoblockConfig::default(), "the example documents the defaults");
        let minimal = Config::parse("state_dir = \"/tmp/x\"").unwrap();
        assert_eq!(minimal.listen.port(), 8443);
        assert_eq!(minimal.log_format, relay::logging::LogFormat::Text);
        let json = Config::parse("state_dir = \"/tmp/x\"\nlog_format = \"json\"").unwrap();
        assert_eq!(json.log_format, relay::logging::LogFormat::Json);
        assert!(minimal.relayd_socket.is_none() && minimal.tls_cert.is_none());
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(err("state_dir = \"/x\"\nbogus = 1").contains("unknown field"));
        assert!(err("state_dir = \"/x\"\nlog_format = \"xml\"").contains("unknown variant `xml`"));
        assert!(err("state_dir = \"/x\"\n[rate_limits]\nper_ip = 1").contains("unknown field"));
        assert!(err("state_dir = \"/x\"\ntls_cert = \"/c\"").contains("go together"));
        assert!(err("state_dir = \"/x\"\nservice = \"TRTC\"").contains("service"));
        assert!(err("state_dir = \"/x\"\nmetrics_token = \"short\"").contains("metrics_token"));
        assert!(err("state_dir = \"/x\"\n[rate_limits]\nper_key_burst = 0").contains("at least 1"));
        assert!(err("listen = \"127.0.0.1:8443\"").contains("state_dir"));
    }

    #[test]
    fn monitoring_sections_are_parsed_strictly_at_load() {
        let c = Config::parse(
            "state_dir = \"/x\"\n[alerts.webhook]\nurl = \"http://127.0.0.1:9/a\"\n[alerts.flood]\nfor_secs = 2\n\
             [autoblock]\npps_threshold = 50\nexempt = [\"198.18.0.0/15\"]",
        )
        .unwrap();
        assert_eq!(c.alerts.webhook.unwrap().url, "http://127.0.0.1:9/a");
        assert_eq!(c.alerts.flood.for_secs, 2);
        assert_eq!(c.autoblock.pps_threshold, 50);
        assert!(c.autoblock.exempt[0].contains("198.19.1.1".parse().unwrap()));
        let err = |t: &str| Config::parse(&format!("state_dir = \"/x\"\n{t}")).unwrap_err().to_string();
        assert!(err("[alerts]\nwebhook = \"https://h/\"").contains("invalid type"));
        assert!(err("[alerts.flood]\nbogus = 1").contains("unknown field"));
        assert!(err("[autoblock]\npps = 5").contains("unknown field"));
        assert!(err("[autoblock]\nexempt = [\"198.18.0.1/15\"]").contains("host bits"));
        let e = err("[autoblock]\npps_threshold = 0");
        assert!(e.contains("autoblock.pps_threshold = 0 is out of range"), "{e}");
        let e = err("[alerts.worker_stalled]\nlag_ms = 10");
        assert!(e.contains("alerts.worker_stalled.lag_ms = 10 is out of range"), "{e}");
        let e = err("[alerts.webhook]\nurl = \"ftp://h/\"");
        assert!(e.contains("alerts.webhook") && e.contains("http://"), "{e}");
    }
}
