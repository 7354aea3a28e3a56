//! Alert rules: their configuration and a sans-IO evaluator.
//!
//! The monitor calls [`Evaluator::evaluate`] once per poll with the time (`now` for
//! durations, `unix_secs` for timestamps and the certificate's expiry) and the poll's
//! [`Observation`]. The evaluator returns the [`AlertEvent`]s to deliver.
//!
//! Each rule is a small state machine, idle → pending → firing → idle:
//! - its condition must hold continuously for the rule's `for_secs` before it fires; it fires
//!   exactly once;
//! - while it keeps holding, nothing more is emitted (de-duplicated firing);
//! - when it stops holding, exactly one resolve is emitted, carrying the firing's labels and
//!   start time so receivers can pair the two;
//! - a condition that cannot be computed on a poll (relayd down, so no counters; a counter
//!   reset) changes nothing: a firing alert neither resolves nor repeats on missing data.
//!
//! Rules: `drop_rate` (engine + XDP drops per second), `flood` (XDP drops per second, or an
//! autoblock within `autoblock_hold_secs`), `relayd_unreachable` (no successful poll for
//! `after_secs`), `worker_stalled` (a worker's loop lag over `lag_ms`), `cert_expiry` (the
//! TLS certificate expires within `within_days`). Rates use integer math on counter deltas
//! between polls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::observe::{xdp_verdict_is_drop, AlertEvent, AlertStatus, Observation, Rule};
use crate::webhook::{WebhookConfig, WebhookConfigError};

/// Most extra labels in [`AlertsConfig::labels`].
pub const MAX_EXTRA_LABELS: usize = 16;
/// Longest key or value in [`AlertsConfig::labels`].
pub const MAX_EXTRA_LABEL_LEN: usize = 128;
/// Longest `for_secs` of any rule (one day).
pub const MAX_FOR_SECS: u64 = 86_400;

/// Why an alerts configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlertsConfigError {
    /// A number is outside its allowed range.
    #[error("alerts.{field} = {value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The key, as written in the config (`drop_rate.per_sec`).
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// `alerts.labels` has too many entries, or a key or value that is empty, too long or
    /// not printable.
    #[error(
        "alerts.labels: at most {MAX_EXTRA_LABELS} entries, keys [a-zA-Z_][a-zA-Z0-9_]* and values of 1..={MAX_EXTRA_LABEL_LEN} printable characters ({0})"
    )]
    BadLabel(String),
    /// `alerts.webhook` is invalid.
    #[error("alerts.webhook: {0}")]
    Webhook(#[from] WebhookConfigError),
}

/// `[alerts]`: the rules, extra labels and the optional webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where to POST alert events; without it events are only logged.
    pub webhook: Option<WebhookConfig>,
    /// Labels added to every event (for example `node = "edge-fra-1"`).
    pub labels: BTreeMap<String, String>,
    /// Rule `drop_rate`.
    pub drop_rate: DropRateRule,
    /// Rule `flood`.
    pub flood: FloodRule,
    /// Rule `relayd_unreachable`.
    pub relayd_unreachable: UnreachableRule,
    /// Rule `worker_stalled`.
    pub worker_stalled: WorkerStalledRule,
    /// Rule `cert_expiry`.
    pub cert_expiry: CertExpiryRule,
    /// Rule `cluster_unreachable` (cluster nodes only).
    pub cluster_unreachable: ClusterUnreachableRule,
}

/// `[alerts.cluster_unreachable]`: a cluster node has not reached Redis for `after_secs`
/// (writes answer 503 meanwhile; forwarding and joins go on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterUnreachableRule {
    /// Whether the rule is evaluated.
    pub enabled: bool,
    /// Seconds without reaching Redis (1..=86400).
    pub after_secs: u64,
}

impl Default for ClusterUnreachableRule {
    fn default() -> Self {
        Self { enabled: true, after_secs: 3 }
    }
}

/// `[alerts.drop_rate]`: engine plus XDP drops per second over `per_sec` for `for_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropRateRule {
    /// Whether the rule is evaluated.
    pub enabled: bool,
    /// Threshold, drops per second (1..=10^9).
    pub per_sec: u64,
    /// How long the rate must stay above the threshold (0..=86400 s).
    pub for_secs: u64,
}

impl Default for DropRateRule {
    fn default() -> Self {
        Self { enabled: true, per_sec: 5_000, for_secs: 60 }
    }
}

/// `[alerts.flood]`: XDP drops per second over `xdp_drops_per_sec`, or an autoblock in the
/// last `autoblock_hold_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodRule {
    /// Whether the rule is evaluated.
    pub enabled: bool,
    /// Threshold, XDP drops per second (1..=10^9).
    pub xdp_drops_per_sec: u64,
    /// How long after an autoblock the condition keeps holding (0..=86400 s); keeps a single
    /// block from firing and resolving within one poll.
    pub autoblock_hold_secs: u64,
    /// How long the condition must hold (0..=86400 s).
    pub for_secs: u64,
}

impl Default for FloodRule {
    fn default() -> Self {
        Self { enabled: true, xdp_drops_per_sec: 20_000, autoblock_hold_secs: 30, for_secs: 0 }
    }
}

/// `[alerts.relayd_unreachable]`: no successful poll of relayd for `after_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnreachableRule {
    /// Whether the rule is evaluated.
    pub enabled: bool,
    /// Seconds without a successful poll (1..=86400).
    pub after_secs: u64,
}

impl Default for UnreachableRule {
    fn default() -> Self {
        Self { enabled: true, after_secs: 10 }
    }
}

/// `[alerts.worker_stalled]`: a worker's lag over `lag_ms` for `for_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerStalledRule {
    /// Whether the rule is evaluated.
    pub enabled: bool,
    /// Lag threshold in ms (200..=3600000; idle workers wake every 100 ms).
    pub lag_ms: u64,
    /// How long a lag must stay over the threshold (0..=86400 s).
    pub for_secs: u64,
}

impl Default for WorkerStalledRule {
    fn default() -> Self {
        Self { enabled: true, lag_ms: 1_000, for_secs: 5 }
    }
}

/// `[alerts.cert_expiry]`: relay-control's TLS certificate expires within `within_days`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertExpiryRule {
    /// Whether the rule is evaluated.
    pub enabled: bool,
    /// Days before expiry at which the alert fires (1..=365).
    pub within_days: u64,
}

impl Default for CertExpiryRule {
    fn default() -> Self {
        Self { enabled: true, within_days: 14 }
    }
}

fn check(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), AlertsConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(AlertsConfigError::OutOfRange { field, value, min, max })
    }
}

fn label_key_ok(k: &str) -> bool {
    let mut chars = k.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && k.len() <= MAX_EXTRA_LABEL_LEN
}

impl AlertsConfig {
    /// Checks every bound; the first violation is returned, naming its key.
    pub fn validate(&self) -> Result<(), AlertsConfigError> {
        if let Some(w) = &self.webhook {
            w.validate()?;
        }
        if self.labels.len() > MAX_EXTRA_LABELS {
            return Err(AlertsConfigError::BadLabel(format!("{} entries", self.labels.len())));
        }
        for (k, v) in &self.labels {
            let v_ok = !v.is_empty() && v.len() <= MAX_EXTRA_LABEL_LEN && !v.chars().any(char::is_control);
            if !label_key_ok(k) || !v_ok {
                return Err(AlertsConfigError::BadLabel(format!("key {k:?}")));
            }
        }
        check("drop_rate.per_sec", self.drop_rate.per_sec, 1, 1_000_000_000)?;
        check("drop_rate.for_secs", self.drop_rate.for_secs, 0, MAX_FOR_SECS)?;
        check("flood.xdp_drops_per_sec", self.flood.xdp_drops_per_sec, 1, 1_000_000_000)?;
        check("flood.autoblock_hold_secs", self.flood.autoblock_hold_secs, 0, MAX_FOR_SECS)?;
        check("flood.for_secs", self.flood.for_secs, 0, MAX_FOR_SECS)?;
        check("relayd_unreachable.after_secs", self.relayd_unreachable.after_secs, 1, MAX_FOR_SECS)?;
        check("worker_stalled.lag_ms", self.worker_stalled.lag_ms, 200, 3_600_000)?;
        check("worker_stalled.for_secs", self.worker_stalled.for_secs, 0, MAX_FOR_SECS)?;
        check("cert_expiry.within_days", self.cert_expiry.within_days, 1, 365)?;
        check("cluster_unreachable.after_secs", self.cluster_unreachable.after_secs, 1, MAX_FOR_SECS)?;
        Ok(())
    }
}

/// One rule's verdict on one poll.
struct Verdict {
    holds: bool,
    summary: String,
    labels: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Pending { since: Instant },
    Firing { started_at: u64, labels: BTreeMap<String, String> },
}

/// Counter totals of the previous poll, for rates.
#[derive(Debug, Clone, Copy)]
struct Totals {
    at: Instant,
    all_drops: u64,
    xdp_drops: u64,
}

/// The sans-IO evaluator of every rule.
#[derive(Debug)]
pub struct Evaluator {
    cfg: AlertsConfig,
    states: BTreeMap<Rule, State>,
    prev: Option<Totals>,
    last_ok: Instant,
    last_cluster_ok: Instant,
    last_autoblock: Option<Instant>,
}

/// Per-second rate of `delta` over `dt`, integer math; `None` when `dt` is zero.
fn per_sec(delta: u64, dt: Duration) -> Option<u64> {
    let ms = dt.as_millis();
    (ms > 0).then(|| u64::try_from(u128::from(delta) * 1000 / ms).unwrap_or(u64::MAX))
}

impl Evaluator {
    /// A new evaluator; `now` starts the `relayd_unreachable` clock, so a relayd that never
    /// answers fires after `after_secs`. `cfg` must have passed [`AlertsConfig::validate`].
    pub fn new(cfg: AlertsConfig, now: Instant) -> Self {
        let states = Rule::ALL.iter().map(|r| (*r, State::Idle)).collect();
        Self { cfg, states, prev: None, last_ok: now, last_cluster_ok: now, last_autoblock: None }
    }

    /// The rules currently firing.
    pub fn firing(&self) -> Vec<Rule> {
        self.states.iter().filter(|(_, s)| matches!(s, State::Firing { .. })).map(|(r, _)| *r).collect()
    }

    /// Evaluates every enabled rule on one poll. `new_autoblocks` is how many sources the
    /// autoblock detector blocked on this poll.
    pub fn evaluate(
        &mut self,
        now: Instant,
        unix_secs: u64,
        obs: &Observation,
        new_autoblocks: usize,
    ) -> Vec<AlertEvent> {
        if new_autoblocks > 0 {
            self.last_autoblock = Some(now);
        }
        let (all_rate, xdp_rate) = self.rates(now, obs);
        let verdicts = [
            (Rule::DropRate, self.cfg.drop_rate.enabled, self.cfg.drop_rate.for_secs, self.drop_rate(all_rate)),
            (Rule::Flood, self.cfg.flood.enabled, self.cfg.flood.for_secs, self.flood(now, xdp_rate, new_autoblocks)),
            (Rule::RelaydUnreachable, self.cfg.relayd_unreachable.enabled, 0, self.unreachable(now, obs)),
            (
                Rule::WorkerStalled,
                self.cfg.worker_stalled.enabled,
                self.cfg.worker_stalled.for_secs,
                self.worker_stalled(obs),
            ),
            (Rule::CertExpiry, self.cfg.cert_expiry.enabled, 0, self.cert_expiry(unix_secs, obs)),
            (Rule::ClusterUnreachable, self.cfg.cluster_unreachable.enabled, 0, self.cluster_unreachable(now, obs)),
        ];
        let mut events = Vec::new();
        for (rule, enabled, for_secs, verdict) in verdicts {
            if let (true, Some(v)) = (enabled, verdict) {
                self.step(rule, Duration::from_secs(for_secs), v, now, unix_secs, &mut events);
            }
        }
        events
    }

    /// Drops per second (engine + XDP, and XDP alone) since the previous poll with counters.
    fn rates(&mut self, now: Instant, obs: &Observation) -> (Option<u64>, Option<u64>) {
        let Some(s) = &obs.stats else { return (None, None) };
        let xdp_drops =
            s.xdp.iter().filter(|(r, _)| xdp_verdict_is_drop(r)).map(|(_, v)| *v).fold(0u64, u64::saturating_add);
        let engine_drops = s.drops.values().fold(0u64, |a, v| a.saturating_add(*v));
        let cur = Totals { at: now, all_drops: engine_drops.saturating_add(xdp_drops), xdp_drops };
        match self.prev.replace(cur) {
            // A decrease means relayd restarted: no rate on this poll, the next one has a base.
            Some(p) if cur.all_drops >= p.all_drops && cur.xdp_drops >= p.xdp_drops => {
                let dt = now.saturating_duration_since(p.at);
                (per_sec(cur.all_drops - p.all_drops, dt), per_sec(cur.xdp_drops - p.xdp_drops, dt))
            }
            _ => (None, None),
        }
    }

    fn drop_rate(&self, rate: Option<u64>) -> Option<Verdict> {
        let rate = rate?;
        let max = self.cfg.drop_rate.per_sec;
        Some(Verdict {
            holds: rate > max,
            summary: format!("packet drops (engine + XDP) at {rate}/s, threshold {max}/s"),
            labels: vec![("drops_per_sec", rate.to_string()), ("threshold_per_sec", max.to_string())],
        })
    }

    fn flood(&self, now: Instant, xdp_rate: Option<u64>, new_autoblocks: usize) -> Option<Verdict> {
        let max = self.cfg.flood.xdp_drops_per_sec;
        let hold = Duration::from_secs(self.cfg.flood.autoblock_hold_secs);
        let recent_block = self.last_autoblock.is_some_and(|t| now.saturating_duration_since(t) <= hold);
        let over = xdp_rate.is_some_and(|r| r > max);
        // Without a rate (relayd down or restarted) only a fresh autoblock is evidence.
        if xdp_rate.is_none() && !recent_block {
            return None;
        }
        let rate = xdp_rate.map_or_else(|| "unknown".to_owned(), |r| r.to_string());
        let summary = if new_autoblocks > 0 {
            format!("flood: {new_autoblocks} source(s) autoblocked; XDP drops at {rate}/s, threshold {max}/s")
        } else {
            format!("flood: XDP drops at {rate}/s, threshold {max}/s")
        };
        Some(Verdict {
            holds: over || recent_block,
            summary,
            labels: vec![("xdp_drops_per_sec", rate), ("threshold_per_sec", max.to_string())],
        })
    }

    fn unreachable(&mut self, now: Instant, obs: &Observation) -> Option<Verdict> {
        let after = self.cfg.relayd_unreachable.after_secs;
        if obs.stats.is_some() {
            self.last_ok = now;
        }
        let silent = now.saturating_duration_since(self.last_ok);
        Some(Verdict {
            holds: silent >= Duration::from_secs(after),
            summary: format!("relayd has not answered a poll for {} s (threshold {after} s)", silent.as_secs()),
            labels: vec![("after_secs", after.to_string())],
        })
    }

    fn cluster_unreachable(&mut self, now: Instant, obs: &Observation) -> Option<Verdict> {
        let reachable = obs.cluster_reachable?;
        if reachable {
            self.last_cluster_ok = now;
        }
        let after = self.cfg.cluster_unreachable.after_secs;
        let silent = now.saturating_duration_since(self.last_cluster_ok);
        Some(Verdict {
            holds: silent >= Duration::from_secs(after),
            summary: format!(
                "Redis unreachable for {} s: API writes answer 503, relayd keeps its config",
                silent.as_secs()
            ),
            labels: vec![("after_secs", after.to_string())],
        })
    }

    fn worker_stalled(&self, obs: &Observation) -> Option<Verdict> {
        let lags = &obs.stats.as_ref()?.worker_lag_ms;
        let max = self.cfg.worker_stalled.lag_ms;
        let stalled: Vec<String> =
            lags.iter().enumerate().filter(|(_, l)| **l > max).map(|(i, _)| i.to_string()).collect();
        let worst = lags.iter().max().copied().unwrap_or(0);
        Some(Verdict {
            holds: !stalled.is_empty(),
            summary: format!("relayd worker(s) [{}] lagging, worst {worst} ms, threshold {max} ms", stalled.join(",")),
            labels: vec![("workers", stalled.join(",")), ("threshold_ms", max.to_string())],
        })
    }

    fn cert_expiry(&self, unix_secs: u64, obs: &Observation) -> Option<Verdict> {
        let not_after = obs.cert_not_after?;
        let within = self.cfg.cert_expiry.within_days.saturating_mul(86_400);
        let left = not_after.saturating_sub(unix_secs);
        let summary = if left == 0 {
            format!("relay-control's TLS certificate expired (not_after {not_after})")
        } else {
            format!("relay-control's TLS certificate expires in {} day(s) (not_after {not_after})", left / 86_400)
        };
        Some(Verdict { holds: left < within, summary, labels: vec![("not_after", not_after.to_string())] })
    }

    fn step(&mut self, rule: Rule, for_: Duration, v: Verdict, now: Instant, unix: u64, out: &mut Vec<AlertEvent>) {
        let state = self.states.get_mut(&rule).expect("every rule has a state");
        let next = match (&*state, v.holds) {
            (State::Idle, false) | (State::Pending { .. }, false) => State::Idle,
            (State::Firing { .. }, true) => return,
            (State::Idle, true) => State::Pending { since: now },
            (State::Pending { since }, true) => State::Pending { since: *since },
            (State::Firing { started_at, labels }, false) => {
                out.push(AlertEvent {
                    status: AlertStatus::Resolved,
                    rule,
                    summary: format!("resolved: {}", v.summary),
                    labels: labels.clone(),
                    started_at: *started_at,
                    resolved_at: Some(unix),
                });
                State::Idle
            }
        };
        *state = match next {
            State::Pending { since } if now.saturating_duration_since(since) >= for_ => {
                let mut labels = self.cfg.labels.clone();
                labels.extend(v.labels.into_iter().map(|(k, v)| (k.to_owned(), v)));
                out.push(AlertEvent {
                    status: AlertStatus::Firing,
                    rule,
                    summary: v.summary,
                    labels: labels.clone(),
                    started_at: unix,
                    resolved_at: None,
                });
                State::Firing { started_at: unix, labels }
            }
            other => other,
        };
    }
}

#[cfg(test)]
mod tests {
    use relay::stats::Snapshot;

    use super::*;

    const T0: u64 = 1_700_000_000;

    /// Parses and validates `[alerts]` as the daemon's config loader will.
    fn parse(text: &str) -> Result<AlertsConfig, String> {
        let cfg: AlertsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// A virtual clock plus cumulative counters that the test advances.
    struct Sim {
        ev: Evaluator,
        start: Instant,
        t: Duration,
        engine: u64,
        xdp: u64,
        lags: Vec<u64>,
        up: bool,
        cert: Option<u64>,
        cluster: Option<bool>,
    }

    impl Sim {
        fn new(cfg: AlertsConfig) -> Self {
            cfg.validate().expect("test config is valid");
            let start = Instant::now();
            Self {
                ev: Evaluator::new(cfg, start),
                start,
                t: Duration::ZERO,
                engine: 0,
                xdp: 0,
                lags: vec![0, 0],
                up: true,
                cluster: None,
                cert: None,
            }
        }

        /// Advances 500 ms, adding `engine_pps`/`xdp_pps` worth of drops, and evaluates.
        fn poll(&mut self, engine_pps: u64, xdp_pps: u64, blocks: usize) -> Vec<AlertEvent> {
            self.t += Duration::from_millis(500);
            self.engine += engine_pps / 2;
            self.xdp += xdp_pps / 2;
            let mut s = Snapshot { worker_lag_ms: self.lags.clone(), ..Snapshot::default() };
            s.drops.insert("auth_failed".into(), self.engine);
            s.xdp.insert("rate_limited".into(), self.xdp);
            s.xdp.insert("redirect_media".into(), self.t.as_millis() as u64 * 1000);
            let obs = Observation {
                stats: self.up.then_some(s),
                offenders: Vec::new(),
                cert_not_after: self.cert,
                cluster_reachable: self.cluster,
            };
            self.ev.evaluate(self.start + self.t, T0 + self.t.as_secs(), &obs, blocks)
        }

        /// Polls `n` times with the same input and returns every event.
        fn polls(&mut self, n: usize, engine_pps: u64, xdp_pps: u64) -> Vec<AlertEvent> {
            (0..n).flat_map(|_| self.poll(engine_pps, xdp_pps, 0)).collect()
        }
    }

    fn only(rule: Rule) -> AlertsConfig {
        let mut c = AlertsConfig::default();
        c.drop_rate.enabled = rule == Rule::DropRate;
        c.flood.enabled = rule == Rule::Flood;
        c.relayd_unreachable.enabled = rule == Rule::RelaydUnreachable;
        c.worker_stalled.enabled = rule == Rule::WorkerStalled;
        c.cert_expiry.enabled = rule == Rule::CertExpiry;
        c.cluster_unreachable.enabled = rule == Rule::ClusterUnreachable;
        c
    }

    fn statuses(events: &[AlertEvent]) -> Vec<(Rule, AlertStatus)> {
        events.iter().map(|e| (e.rule, e.status)).collect()
    }

    #[test]
    fn drop_rate_fires_after_its_duration_once_and_resolves_once() {
        let mut c = only(Rule::DropRate);
        c.drop_rate.per_sec = 1000;
        c.drop_rate.for_secs = 10;
        c.labels.insert("node".into(), "edge-1".into());
        let mut sim = Sim::new(c);
        assert!(sim.polls(10, 400, 400).is_empty(), "800/s is under 1000/s");
        // Over the threshold (engine + XDP together) for 9.5 s: pending, not firing.
        assert!(sim.polls(19, 600, 600).is_empty());
        // A dip resets the pending timer.
        assert!(sim.polls(1, 0, 0).is_empty());
        assert!(sim.polls(20, 600, 600).is_empty());
        let fired = sim.polls(1, 600, 600);
        assert_eq!(statuses(&fired), [(Rule::DropRate, AlertStatus::Firing)]);
        assert_eq!(fired[0].labels["drops_per_sec"], "1200");
        assert_eq!(fired[0].labels["node"], "edge-1");
        assert_eq!(sim.ev.firing(), [Rule::DropRate]);
        // No repeat while it keeps firing, even much longer.
        assert!(sim.polls(100, 5000, 5000).is_empty());
        let resolved = sim.polls(5, 0, 0);
        assert_eq!(statuses(&resolved), [(Rule::DropRate, AlertStatus::Resolved)]);
        assert_eq!(resolved[0].started_at, fired[0].started_at);
        assert_eq!(resolved[0].labels, fired[0].labels);
        assert!(resolved[0].resolved_at.is_some_and(|r| r > fired[0].started_at));
        assert!(sim.ev.firing().is_empty());
    }

    #[test]
    fn counter_reset_and_missing_stats_change_nothing() {
        let mut c = only(Rule::DropRate);
        c.drop_rate.per_sec = 100;
        c.drop_rate.for_secs = 0;
        let mut sim = Sim::new(c);
        sim.polls(1, 0, 0);
        assert_eq!(statuses(&sim.polls(1, 1000, 0)), [(Rule::DropRate, AlertStatus::Firing)]);
        // relayd goes away: no data, no resolve.
        sim.up = false;
        assert!(sim.polls(10, 0, 0).is_empty());
        // It restarts with counters from zero: the first poll after has no rate...
        sim.up = true;
        sim.engine = 0;
        sim.xdp = 0;
        assert!(sim.polls(1, 0, 0).is_empty());
        // ...and the next one sees a quiet relay.
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::DropRate, AlertStatus::Resolved)]);
    }

    #[test]
    fn flood_fires_on_xdp_rate_or_autoblock_and_holds_after_a_block() {
        let mut c = only(Rule::Flood);
        c.flood.xdp_drops_per_sec = 10_000;
        c.flood.autoblock_hold_secs = 2;
        let mut sim = Sim::new(c);
        sim.polls(1, 0, 0);
        // Engine drops do not count for flood.
        assert!(sim.polls(4, 50_000, 0).is_empty());
        assert_eq!(statuses(&sim.polls(1, 0, 20_000)), [(Rule::Flood, AlertStatus::Firing)]);
        assert!(sim.polls(4, 0, 20_000).is_empty());
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::Flood, AlertStatus::Resolved)]);
        // An autoblock alone fires it; it holds for autoblock_hold_secs, then resolves once.
        let fired = sim.poll(0, 200, 1);
        assert_eq!(statuses(&fired), [(Rule::Flood, AlertStatus::Firing)]);
        assert!(fired[0].summary.contains("1 source(s) autoblocked"), "{}", fired[0].summary);
        assert!(sim.polls(4, 0, 0).is_empty(), "held for 2 s after the block");
        assert_eq!(statuses(&sim.polls(4, 0, 0)), [(Rule::Flood, AlertStatus::Resolved)]);
    }

    #[test]
    fn relayd_unreachable_counts_from_the_last_success() {
        let mut c = only(Rule::RelaydUnreachable);
        c.relayd_unreachable.after_secs = 3;
        let mut sim = Sim::new(c);
        sim.up = false;
        // Never reachable since start: fires at 3 s.
        assert!(sim.polls(5, 0, 0).is_empty());
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::RelaydUnreachable, AlertStatus::Firing)]);
        assert!(sim.polls(20, 0, 0).is_empty());
        sim.up = true;
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::RelaydUnreachable, AlertStatus::Resolved)]);
        // A short outage under the threshold never fires.
        sim.up = false;
        assert!(sim.polls(5, 0, 0).is_empty());
        sim.up = true;
        assert!(sim.polls(10, 0, 0).is_empty());
    }

    #[test]
    fn cluster_unreachable_fires_and_resolves_only_in_a_cluster() {
        let mut c = only(Rule::ClusterUnreachable);
        c.cluster_unreachable.after_secs = 2;
        let mut sim = Sim::new(c);
        // Not a cluster node: never evaluated.
        assert!(sim.polls(20, 0, 0).is_empty());
        sim.cluster = Some(true);
        assert!(sim.polls(2, 0, 0).is_empty());
        sim.cluster = Some(false);
        assert!(sim.polls(3, 0, 0).is_empty());
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::ClusterUnreachable, AlertStatus::Firing)]);
        assert!(sim.polls(10, 0, 0).is_empty());
        sim.cluster = Some(true);
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::ClusterUnreachable, AlertStatus::Resolved)]);
    }

    #[test]
    fn worker_stalled_names_the_workers() {
        let mut c = only(Rule::WorkerStalled);
        c.worker_stalled.lag_ms = 500;
        c.worker_stalled.for_secs = 1;
        let mut sim = Sim::new(c);
        sim.lags = vec![10, 900, 20, 700];
        assert!(sim.polls(2, 0, 0).is_empty());
        let fired = sim.polls(1, 0, 0);
        assert_eq!(statuses(&fired), [(Rule::WorkerStalled, AlertStatus::Firing)]);
        assert_eq!(fired[0].labels["workers"], "1,3");
        // Unknown while relayd is down: stays firing.
        sim.up = false;
        assert!(sim.polls(4, 0, 0).is_empty());
        sim.up = true;
        sim.lags = vec![10, 10, 10, 10];
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::WorkerStalled, AlertStatus::Resolved)]);
    }

    #[test]
    fn cert_expiry_fires_within_the_window() {
        let mut c = only(Rule::CertExpiry);
        c.cert_expiry.within_days = 7;
        let mut sim = Sim::new(c);
        sim.cert = Some(T0 + 8 * 86_400);
        assert!(sim.polls(3, 0, 0).is_empty());
        sim.cert = Some(T0 + 6 * 86_400);
        let fired = sim.polls(3, 0, 0);
        assert_eq!(statuses(&fired), [(Rule::CertExpiry, AlertStatus::Firing)]);
        assert!(fired[0].summary.contains("expires in 5 day(s)"), "{}", fired[0].summary);
        // A renewed certificate (SIGHUP reload) resolves it.
        sim.cert = Some(T0 + 90 * 86_400);
        assert_eq!(statuses(&sim.polls(1, 0, 0)), [(Rule::CertExpiry, AlertStatus::Resolved)]);
    }

    #[test]
    fn disabled_rules_never_fire() {
        let mut c = AlertsConfig::default();
        c.relayd_unreachable.enabled = false;
        let mut sim = Sim::new(c);
        sim.up = false;
        assert!(sim.polls(100, 0, 0).is_empty());
    }

    #[test]
    fn config_is_strict_and_validated() {
        let cfg = parse(
            "labels = { node = \"edge-1\" }\n[drop_rate]\nper_sec = 10\nfor_secs = 5\n[webhook]\nurl = \"http://127.0.0.1:9/hook\"\n",
        )
        .expect("valid config");
        assert_eq!(cfg.drop_rate.per_sec, 10);
        assert!(cfg.flood.enabled, "unset rules keep their defaults");
        let unknown = parse("[flood]\nxdp_drop_per_sec = 5\n").unwrap_err();
        assert!(unknown.contains("unknown field"), "{unknown}");
        let range = parse("[worker_stalled]\nlag_ms = 50\n").unwrap_err();
        assert_eq!(range, "alerts.worker_stalled.lag_ms = 50 is out of range (200..=3600000)");
        let zero = AlertsConfig { drop_rate: DropRateRule { per_sec: 0, ..Default::default() }, ..Default::default() };
        assert!(matches!(zero.validate(), Err(AlertsConfigError::OutOfRange { field: "drop_rate.per_sec", .. })));
        let mut bad_label = AlertsConfig::default();
        bad_label.labels.insert("no-dash".into(), "x".into());
        assert!(matches!(bad_label.validate(), Err(AlertsConfigError::BadLabel(_))));
        let hook = parse("[webhook]\nurl = \"ftp://x/\"\n").unwrap_err();
        assert!(hook.starts_with("alerts.webhook: "), "{hook}");
    }

    #[test]
    fn event_json_has_the_documented_shape() {
        let ev = AlertEvent {
            status: AlertStatus::Firing,
            rule: Rule::Flood,
            summary: "s".into(),
            labels: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
            started_at: 5,
            resolved_at: None,
        };
        assert_eq!(
            serde_json::to_string(&ev).expect("serializes"),
            r#"{"status":"firing","rule":"flood","summary":"s","labels":{"a":"b"},"started_at":5}"#
        );
        let resolved = AlertEvent { status: AlertStatus::Resolved, resolved_at: Some(9), ..ev };
        let v: serde_json::Value = serde_json::to_value(&resolved).expect("serializes");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["resolved_at"], 9);
    }
}
