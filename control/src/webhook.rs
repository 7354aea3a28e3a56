//! Delivery of alert events: one log line each, and a JSON POST to the configured webhook.
//!
//! [`run`] drains the monitor's bounded event queue in order, so a resolve is never posted
//! before its firing. Each event is logged with `tracing` (firing at `warn`, resolved at
//! `info`) whether or not a webhook is configured. Redirects are not followed (the configured
//! URL is the only destination). A POST has a timeout and a bounded number
//! of retries with exponential backoff; connection errors, timeouts, 408, 429 and 5xx are
//! retried, any other status is final. A delivery that still fails counts in
//! `ControlCounters::webhook_failures` and is logged; the queue moves on, so one dead receiver
//! delays events by at most `timeout × (retries + 1)` plus the backoff and never blocks the
//! monitor (whose sends to the queue never wait).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::observe::{AlertEvent, AlertStatus, ControlCounters};

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest wait between two attempts, whatever the backoff says.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a webhook configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookConfigError {
    /// The URL does not parse, is longer than [`MAX_URL_LEN`], or is not `http`/`https` with
    /// a host.
    #[error("url must be an http:// or https:// URL with a host, at most {MAX_URL_LEN} bytes ({0})")]
    BadUrl(String),
    /// A number is outside its allowed range.
    #[error("{field} = {value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The key.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
}

/// Why one delivery failed (after its retries).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The configuration was refused (see [`WebhookConfig::validate`]).
    #[error("webhook config: {0}")]
    Config(#[from] WebhookConfigError),
    /// The request failed: connection, TLS, or timeout.
    #[error("request failed: {0}")]
    Request(String),
    /// The receiver answered with a status other than 2xx.
    #[error("receiver answered HTTP {0}")]
    Status(u16),
}

/// `[alerts.webhook]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http://` or `https://`; https is verified against the
    /// Mozilla roots shipped in the binary).
    pub url: String,
    /// Timeout of one attempt, ms (100..=60000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after a failed attempt (0..=10).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Wait before the first retry, ms (0..=60000); doubles per retry, capped at 30 s.
    #[serde(default = "default_backoff_ms")]
    pub retry_backoff_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}
fn default_max_retries() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    500
}

impl WebhookConfig {
    /// A config for `url` with the default timeout and retries.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout_ms: default_timeout_ms(),
            max_retries: default_max_retries(),
            retry_backoff_ms: default_backoff_ms(),
        }
    }

    /// Checks the URL and every bound.
    pub fn validate(&self) -> Result<(), WebhookConfigError> {
        if self.url.len() > MAX_URL_LEN {
            return Err(WebhookConfigError::BadUrl(format!("{} bytes", self.url.len())));
        }
        let url = url::Url::parse(&self.url).map_err(|e| WebhookConfigError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(WebhookConfigError::BadUrl(format!("scheme {:?}", url.scheme())));
        }
        let range = |field, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(WebhookConfigError::OutOfRange { field, value, min, max })
            }
        };
        range("timeout_ms", self.timeout_ms, 100, 60_000)?;
        range("max_retries", u64::from(self.max_retries), 0, 10)?;
        range("retry_backoff_ms", self.retry_backoff_ms, 0, 60_000)
    }
}

/// POSTs events to one webhook.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    cfg: WebhookConfig,
    agent: ureq::Agent,
    counters: Arc<ControlCounters>,
}

impl WebhookSender {
    /// A sender for `cfg`, which is validated first.
    pub fn new(cfg: WebhookConfig, counters: Arc<ControlCounters>) -> Result<Self, WebhookError> {
        cfg.validate()?;
        // The same blocking client as relayctl (ureq on rustls), run on tokio's blocking pool.
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            // The configured URL is the only destination: a redirect could point anywhere.
            .redirects(0)
            .user_agent(concat!("edgerelay-relay-control/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self { cfg, agent, counters })
    }

    /// One POST; `Ok(status)` for any HTTP answer.
    async fn post(&self, body: Arc<Vec<u8>>) -> Result<u16, WebhookError> {
        let (agent, url) = (self.agent.clone(), self.cfg.url.clone());
        let r = tokio::task::spawn_blocking(move || {
            match agent.post(&url).set("Content-Type", "application/json").send_bytes(&body) {
                Ok(resp) => Ok(resp.status()),
                Err(ureq::Error::Status(code, _)) => Ok(code),
                Err(e) => Err(WebhookError::Request(e.to_string())),
            }
        })
        .await;
        r.map_err(|e| WebhookError::Request(format!("delivery task: {e}")))?
    }

    /// Delivers one event with retries; counts the outcome.
    pub async fn deliver(&self, ev: &AlertEvent) -> Result<(), WebhookError> {
        let body = Arc::new(serde_json::to_vec(ev).map_err(|e| WebhookError::Request(format!("encoding: {e}")))?);
        let mut backoff = Duration::from_millis(self.cfg.retry_backoff_ms);
        let mut attempt = 0;
        loop {
            let (err, retryable) = match self.post(body.clone()).await {
                Ok(s) if (200..300).contains(&s) => {
                    self.counters.webhook_sent.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Ok(s) => ((WebhookError::Status(s)), s >= 500 || s == 408 || s == 429),
                Err(e) => (e, true),
            };
            if !retryable || attempt >= self.cfg.max_retries {
                self.counters.webhook_failures.fetch_add(1, Relaxed);
                return Err(err);
            }
            tracing::debug!(rule = %ev.rule, attempt, error = %err, "alert webhook attempt failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }
}

/// Logs one event (firing at `warn`, resolved at `info`).
pub fn log_event(ev: &AlertEvent) {
    match ev.status {
        AlertStatus::Firing => {
            tracing::warn!(rule = %ev.rule, started_at = ev.started_at, labels = ?ev.labels, "alert firing: {}", ev.summary);
        }
        AlertStatus::Resolved => tracing::info!(
            rule = %ev.rule,
            started_at = ev.started_at,
            resolved_at = ev.resolved_at,
            labels = ?ev.labels,
            "alert resolved: {}",
            ev.summary
        ),
    }
}

/// Logs and delivers every event from `events`, in order, until the channel closes.
pub async fn run(sender: Option<WebhookSender>, mut events: mpsc::Receiver<AlertEvent>) {
    while let Some(ev) = events.recv().await {
        log_event(&ev);
        if let Some(s) = &sender {
            if let Err(e) = s.deliver(&ev).await {
                tracing::error!(rule = %ev.rule, status = ev.status.name(), error = %e, "alert webhook delivery failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::observe::Rule;

    /// A loopback HTTP/1.1 receiver answering each request with the next scripted status
    /// (`None` = never answer); returns its URL and the bodies it received.
    async fn receiver(script: Vec<Option<u16>>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}/hook", listener.local_addr().expect("local addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let got = bodies.clone();
        tokio::spawn(async move {
            for answer in script {
                let (conn, _) = listener.accept().await.expect("accept");
                // Each connection on its own task, so a silent answer does not stall the next.
                tokio::spawn(answer_one(conn, answer, got.clone()));
            }
        });
        (url, bodies)
    }

    async fn answer_one(mut conn: tokio::net::TcpStream, answer: Option<u16>, got: Arc<Mutex<Vec<String>>>) {
        let mut buf = Vec::new();
        let body_start = loop {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.expect("read request");
            assert!(n > 0, "client closed before the end of the headers");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("content-length header")
            .trim()
            .parse()
            .expect("numeric content-length");
        while buf.len() < body_start + len {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "client closed before the end of the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        got.lock().expect("lock").push(String::from_utf8_lossy(&buf[body_start..]).into_owned());
        match answer {
            Some(status) => {
                let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                conn.write_all(resp.as_bytes()).await.expect("write response");
            }
            None => tokio::time::sleep(Duration::from_secs(30)).await,
        }
    }

    fn event() -> AlertEvent {
        AlertEvent {
            status: AlertStatus::Firing,
            rule: Rule::Flood,
            summary: "flood".into(),
            labels: BTreeMap::new(),
            started_at: 1,
            resolved_at: None,
        }
    }

    fn sender(url: String, retries: u32) -> (WebhookSender, Arc<ControlCounters>) {
        let cfg = WebhookConfig { url, timeout_ms: 300, max_retries: retries, retry_backoff_ms: 10 };
        cfg.validate().expect("valid");
        let counters = Arc::new(ControlCounters::default());
        (WebhookSender::new(cfg, counters.clone()).expect("client"), counters)
    }

    #[tokio::test]
    async fn retries_server_errors_then_succeeds() {
        let (url, bodies) = receiver(vec![Some(500), Some(503), Some(204)]).await;
        let (s, c) = sender(url, 3);
        s.deliver(&event()).await.expect("third attempt succeeds");
        let bodies = bodies.lock().expect("lock").clone();
        assert_eq!(bodies.len(), 3);
        let v: serde_json::Value = serde_json::from_str(&bodies[2]).expect("JSON body");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["rule"], "flood");
        assert_eq!(c.webhook_sent.load(Relaxed), 1);
        assert_eq!(c.webhook_failures.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn client_errors_are_final_and_counted() {
        let (url, bodies) = receiver(vec![Some(400), Some(200)]).await;
        let (s, c) = sender(url, 3);
        let err = s.deliver(&event()).await.expect_err("400 is final");
        assert!(matches!(err, WebhookError::Status(400)), "{err}");
        assert_eq!(bodies.lock().expect("lock").len(), 1);
        assert_eq!(c.webhook_failures.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_timeouts_count() {
        let (url, bodies) = receiver(vec![None, None, None, None]).await;
        let (s, c) = sender(url, 2);
        let started = std::time::Instant::now();
        let err = s.deliver(&event()).await.expect_err("every attempt times out");
        assert!(matches!(err, WebhookError::Request(_)), "{err}");
        assert_eq!(bodies.lock().expect("lock").len(), 3, "one attempt plus two retries");
        assert!(started.elapsed() < Duration::from_secs(5), "timeouts bound the delivery");
        assert_eq!(c.webhook_failures.load(Relaxed), 1);
    }

    #[test]
    fn config_validation() {
        let ok: WebhookConfig = toml::from_str("url = \"https://hooks.example/x\"").expect("parses");
        assert_eq!(ok, WebhookConfig::new("https://hooks.example/x"));
        assert!(ok.validate().is_ok());
        assert!(toml::from_str::<WebhookConfig>("url = \"http://a/\"\ntimeout = 1").is_err(), "unknown key");
        for bad in ["ftp://a/", "not a url", "https://", "unix:/run/x"] {
            let e = WebhookConfig::new(bad).validate().expect_err(bad);
            assert!(matches!(e, WebhookConfigError::BadUrl(_)), "{bad}: {e}");
        }
        let long = WebhookConfig::new(format!("http://a/{}", "x".repeat(MAX_URL_LEN)));
        assert!(matches!(long.validate(), Err(WebhookConfigError::BadUrl(_))));
        let slow = WebhookConfig { timeout_ms: 10, ..WebhookConfig::new("http://a/") };
        assert_eq!(
            slow.validate().expect_err("too short").to_string(),
            "timeout_ms = 10 is out of range (100..=60000)"
        );
        let many = WebhookConfig { max_retries: 11, ..WebhookConfig::new("http://a/") };
        assert!(matches!(many.validate(), Err(WebhookConfigError::OutOfRange { field: "max_retries", .. })));
    }
}
