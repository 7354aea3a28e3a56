//! The daemons' log set-up, shared by relayd and relay-control: one format switch (text or
//! JSON lines) and a level filter that can be replaced while running (relayd's reload).
//!
//! Logs go to stderr. The level is an `EnvFilter` directive (`info`, `relay=debug,warn`):
//! `RUST_LOG`, when set, wins over the configured level at start-up; [`LogHandle::set_level`]
//! replaces it later. JSON lines put every event's fields at the top level beside
//! `timestamp`, `level`, `target` and `message`, so a log shipper can index `app`, `room`,
//! `code` or `source` without parsing text.
#![forbid(unsafe_code)]

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Errors setting up or changing the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The level is not a valid filter directive.
    #[error("log level {level:?}: {reason}")]
    Level {
        /// The directive as given.
        level: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A global subscriber was installed already (a second `init` in one process).
    #[error("the log was set up already: {0}")]
    AlreadySet(String),
    /// The running subscriber is gone, so its filter cannot be replaced.
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// The level when neither the config nor `RUST_LOG` gives one.
pub const DEFAULT_LEVEL: &str = "info";

/// Parses a level directive, so a config can be refused at load rather than at use.
pub fn parse_level(level: &str) -> Result<EnvFilter, Error> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .map_err(|e| Error::Level { level: level.to_owned(), reason: e.to_string() })
}

/// Replaces the level of the log [`init`] set up.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start-up (and so chose the first level).
    from_env: bool,
}

impl LogHandle {
    /// Makes `level` the filter from now on.
    pub fn set_level(&self, level: &str) -> Result<(), Error> {
        let f = parse_level(level)?;
        self.filter.reload(f).map_err(|e| Error::Reload(e.to_string()))
    }

    /// Whether `RUST_LOG` chose the level at start-up.
    pub fn level_from_env(&self) -> bool {
        self.from_env
    }
}

/// Installs the process's subscriber on stderr: `format`, at `RUST_LOG` if set, else at
/// `level` (else [`DEFAULT_LEVEL`]).
pub fn init(format: LogFormat, level: Option<&str>) -> Result<LogHandle, Error> {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let from_env = env.is_some();
    let chosen = env.as_deref().or(level).unwrap_or(DEFAULT_LEVEL);
    // A bad RUST_LOG falls back to the configured level rather than stopping a daemon.
    let filter = parse_level(chosen).or_else(|e| match (from_env, level) {
        (true, l) => parse_level(l.unwrap_or(DEFAULT_LEVEL)),
        (false, _) => Err(e),
    })?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let done = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    done.map_err(|e| Error::AlreadySet(e.to_string()))?;
    Ok(LogHandle { filter: handle, from_env })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_or_say_why() {
        assert!(parse_level("info").is_ok());
        assert!(parse_level("relay=debug,warn").is_ok());
        let e = parse_level("relay=loud").unwrap_err().to_string();
        assert!(e.contains("relay=loud"), "{e}");
    }

    #[test]
    fn formats_read_from_toml() {
        #[derive(serde::Deserialize)]
        struct T {
            f: LogFormat,
        }
        assert_eq!(toml::from_str::<T>("f = \"json\"").unwrap().f, LogFormat::Json);
        assert_eq!(toml::from_str::<T>("f = \"text\"").unwrap().f, LogFormat::Text);
        assert!(toml::from_str::<T>("f = \"xml\"").is_err());
    }
}
