//! The monitor: polls relayd, evaluates alerts, detects floods, publishes the latest view.
//!
//! Two layers, so the logic is testable without a runtime or a clock:
//! - [`MonitorCore::step`] is sans-IO: given the time and one poll's results it returns the
//!   [`Latest`] view (for `/metrics`), the alert events and the autoblock decisions;
//! - [`spawn`] runs the loop on tokio: every `interval` (500 ms) it asks a [`RelaydLink`] for
//!   stats and then offenders, each under `poll_timeout`, feeds the core, publishes `Latest`
//!   on a `watch` channel, queues alert events for the webhook task ([`crate::webhook::run`])
//!   and autoblock decisions for the daemon.
//!
//! The loop never waits on its consumers: both queues are bounded and a full queue drops the
//! item and counts it (`alerts_dropped`, `autoblock_decisions_dropped` in
//! [`ControlCounters`]). A slow or hung relayd costs at most `poll_timeout` per poll and is
//! reported as unreachable. The task ends when the daemon drops the decision receiver.
//!
//! The daemon's link over relayd's management socket is `control::server::monitoring::MgmtLink`.

use relay::time::unix_now;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::stats::Snapshot;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::alerts::{AlertsConfig, AlertsConfigError, Evaluator};
use crate::autoblock::{AutoblockConfig, AutoblockError, Decision, Detector, Offender};
use crate::observe::{AlertEvent, AlertStatus, ControlCounters, Latest, Observation};
use crate::webhook::{self, WebhookError, WebhookSender};

/// Why a poll of relayd failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection to relayd's management socket (not running, no permission, ...).
    #[error("relayd unreachable: {0}")]
    Unreachable(String),
    /// relayd answered with an error.
    #[error("relayd refused: {0}")]
    Refused(String),
    /// No answer within the poll timeout.
    #[error("relayd did not answer within {0:?}")]
    Timeout(Duration),
}

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// `[alerts]` is invalid.
    #[error(transparent)]
    Alerts(#[from] AlertsConfigError),
    /// `[autoblock]` is invalid.
    #[error(transparent)]
    Autoblock(#[from] AutoblockError),
    /// The webhook's HTTP client could not be built.
    #[error("alerts.webhook: {0}")]
    Webhook(#[from] WebhookError),
    /// A monitor setting is out of range.
    #[error("monitor: {0}")]
    Settings(&'static str),
}

/// relayd's management socket as the monitor needs it. Implementations may block inside
/// (wrapping a blocking client in `spawn_blocking`) or be async; the monitor drops a call's
/// future when `poll_timeout` passes, so an implementation holding a connection should
/// reconnect after a call that did not complete.
pub trait RelaydLink: Send + 'static {
    /// The `stats` op.
    fn stats(&mut self) -> impl Future<Output = Result<Snapshot, LinkError>> + Send;
    /// The `offenders` op with this `limit`.
    fn offenders(&mut self, limit: u32) -> impl Future<Output = Result<Vec<Offender>, LinkError>> + Send;
}

/// Timing and queue sizes of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// Time between polls (100 ms..=60 s; 500 ms by default).
    pub interval: Duration,
    /// Longest wait for one op (10 ms..=60 s; 1 s by default).
    pub poll_timeout: Duration,
    /// How many offenders to ask for (1..=10000; 256 by default).
    pub offenders_limit: u32,
    /// Alert events queued for the webhook before new ones are dropped (default 256).
    pub alert_queue: usize,
    /// Autoblock decisions queued for the daemon before new ones are dropped (default 1024).
    pub decision_queue: usize,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            poll_timeout: Duration::from_secs(1),
            offenders_limit: 256,
            alert_queue: 256,
            decision_queue: 1024,
        }
    }
}

impl MonitorSettings {
    fn validate(&self) -> Result<(), MonitorError> {
        let ms = |lo, hi| Duration::from_millis(lo)..=Duration::from_millis(hi);
        if !ms(100, 60_000).contains(&self.interval) {
            return Err(MonitorError::Settings("interval must be 100 ms..=60 s"));
        }
        if !ms(10, 60_000).contains(&self.poll_timeout) {
            return Err(MonitorError::Settings("poll_timeout must be 10 ms..=60 s"));
        }
        if !(1..=10_000).contains(&self.offenders_limit) {
            return Err(MonitorError::Settings("offenders_limit must be 1..=10000"));
        }
        if !(1..=1 << 20).contains(&self.alert_queue) || !(1..=1 << 20).contains(&self.decision_queue) {
            return Err(MonitorError::Settings("queue sizes must be 1..=1048576"));
        }
        Ok(())
    }
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutput {
    /// The view to publish.
    pub latest: Latest,
    /// Alert events, in order.
    pub alerts: Vec<AlertEvent>,
    /// Autoblock decisions, unblocks before blocks.
    pub decisions: Vec<Decision>,
}

/// The sans-IO core of the monitor.
#[derive(Debug)]
pub struct MonitorCore {
    evaluator: Evaluator,
    detector: Detector,
    counters: Arc<ControlCounters>,
    offenders_limit: u32,
    /// In a cluster: Redis reachability, for the `cluster_unreachable` rule.
    pub cluster: Option<Arc<crate::cluster::Health>>,
}

impl MonitorCore {
    /// A core for validated configs; `now` starts the `relayd_unreachable` clock.
    pub fn new(
        alerts: AlertsConfig,
        autoblock: AutoblockConfig,
        counters: Arc<ControlCounters>,
        offenders_limit: u32,
        now: Instant,
    ) -> Self {
        Self {
            evaluator: Evaluator::new(alerts, now),
            detector: Detector::new(autoblock),
            counters,
            offenders_limit,
            cluster: None,
        }
    }

    /// One poll: `stats` and `offenders` are `None` when their op failed.
    pub fn step(
        &mut self,
        now: Instant,
        unix_secs: u64,
        stats: Option<Snapshot>,
        offenders: Option<Vec<Offender>>,
        cert_not_after: Option<u64>,
    ) -> StepOutput {
        let counter = if stats.is_some() { &self.counters.relayd_polls_ok } else { &self.counters.relayd_polls_failed };
        counter.fetch_add(1, Relaxed);
        // A misbehaving relayd could answer more than asked: the detector's memory is capped
        // anyway, but the completeness heuristic needs the bound.
        let offenders = offenders.filter(|_| stats.is_some()).map(|mut list| {
            list.truncate(self.offenders_limit as usize);
            list
        });
        let decisions = match &offenders {
            Some(list) => {
                let complete = list.len() < self.offenders_limit as usize;
                self.detector.observe(now, list, complete)
            }
            None => {
                self.detector.poll_failed();
                self.detector.expire(now)
            }
        };
        let mut new_blocks = 0;
        for d in &decisions {
            match d {
                Decision::Block { .. } => {
                    new_blocks += 1;
                    self.counters.autoblock_blocks.fetch_add(1, Relaxed);
                }
                Decision::Unblock { .. } => {
                    self.counters.autoblock_unblocks.fetch_add(1, Relaxed);
                }
            }
        }
        let cluster_reachable = self.cluster.as_ref().map(|h| h.is_reachable());
        let observation =
            Observation { stats, offenders: offenders.unwrap_or_default(), cert_not_after, cluster_reachable };
        let alerts = self.evaluator.evaluate(now, unix_secs, &observation, new_blocks);
        for a in &alerts {
            let counter = match a.status {
                AlertStatus::Firing => &self.counters.alerts_fired,
                AlertStatus::Resolved => &self.counters.alerts_resolved,
            };
            counter.fetch_add(1, Relaxed);
        }
        let latest =
            Latest { observation, firing: self.evaluator.firing(), active_autoblocks: self.detector.active_blocks() };
        StepOutput { latest, alerts, decisions }
    }
}

/// The running monitor, as the daemon holds it.
#[derive(Debug)]
pub struct MonitorHandle {
    /// The latest view (`None` until the first poll completes); render it with
    /// [`crate::metrics::render`].
    pub latest: watch::Receiver<Option<Arc<Latest>>>,
    /// Autoblock decisions to apply to the store and relayd. Dropping it stops the monitor.
    pub decisions: mpsc::Receiver<Decision>,
    /// The poll loop.
    pub task: JoinHandle<()>,
    /// The alert delivery task (logs and webhook); ends after the poll loop.
    pub alerts_task: JoinHandle<()>,
}

/// Validates the configs and starts the poll loop and the alert delivery task on the current
/// tokio runtime. `cert_not_after` carries the TLS certificate's expiry (Unix seconds); the
/// daemon updates it when it reloads the certificate.
pub fn spawn<L: RelaydLink>(
    mut link: L,
    settings: MonitorSettings,
    alerts: AlertsConfig,
    autoblock: AutoblockConfig,
    counters: Arc<ControlCounters>,
    cert_not_after: watch::Receiver<Option<u64>>,
    cluster: Option<Arc<crate::cluster::Health>>,
) -> Result<MonitorHandle, MonitorError> {
    settings.validate()?;
    alerts.validate()?;
    autoblock.validate()?;
    let sender = alerts.webhook.clone().map(|w| WebhookSender::new(w, counters.clone())).transpose()?;
    let mut core = MonitorCore::new(alerts, autoblock, counters.clone(), settings.offenders_limit, Instant::now());
    core.cluster = cluster;
    let (alert_tx, alert_rx) = mpsc::channel(settings.alert_queue);
    let (decision_tx, decisions) = mpsc::channel(settings.decision_queue);
    let (latest_tx, latest) = watch::channel(None);
    let alerts_task = tokio::spawn(webhook::run(sender, alert_rx));
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while !decision_tx.is_closed() {
            tick.tick().await;
            let stats = match tokio::time::timeout(settings.poll_timeout, link.stats()).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "relayd stats poll failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(error = %LinkError::Timeout(settings.poll_timeout), "relayd stats poll failed");
                    None
                }
            };
            let offenders = if stats.is_some() {
                match tokio::time::timeout(settings.poll_timeout, link.offenders(settings.offenders_limit)).await {
                    Ok(Ok(o)) => Some(o),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "relayd offenders poll failed");
                        None
                    }
                    Err(_) => None,
                }
            } else {
                None
            };
            let cert = *cert_not_after.borrow();
            let out = core.step(Instant::now(), unix_now(), stats, offenders, cert);
            for d in out.decisions {
                match &d {
                    Decision::Block { cidr, drops_per_sec, ttl_secs, .. } => {
                        tracing::warn!(%cidr, drops_per_sec, ttl_secs, "autoblock: blocking a flooding source");
                    }
                    Decision::Unblock { cidr } => tracing::info!(%cidr, "autoblock: block expired"),
                }
                if decision_tx.try_send(d).is_err() {
                    counters.autoblock_decisions_dropped.fetch_add(1, Relaxed);
                    tracing::error!("autoblock decision dropped: the daemon's queue is full");
                }
            }
            for a in out.alerts {
                if alert_tx.try_send(a).is_err() {
                    counters.alerts_dropped.fetch_add(1, Relaxed);
                    tracing::error!("alert event dropped: the webhook queue is full");
                }
            }
            latest_tx.send_replace(Some(Arc::new(out.latest)));
        }
    });
    Ok(MonitorHandle { latest, decisions, task, alerts_task })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::observe::Rule;
    use relay::prefix::Prefix;

    fn stats(xdp_drops: u64, lags: Vec<u64>) -> Snapshot {
        let mut s = Snapshot { worker_lag_ms: lags, ..Snapshot::default() };
        s.xdp.insert("rate_limited".into(), xdp_drops);
        s
    }

    fn core() -> (MonitorCore, Arc<ControlCounters>, Instant) {
        let mut alerts = AlertsConfig::default();
        alerts.flood.xdp_drops_per_sec = 1000;
        alerts.flood.autoblock_hold_secs = 0;
        alerts.relayd_unreachable.after_secs = 2;
        alerts.drop_rate.enabled = false;
        let autoblock = AutoblockConfig { pps_threshold: 500, ttl_secs: 3, ..AutoblockConfig::default() };
        let counters = Arc::new(ControlCounters::default());
        let start = Instant::now();
        (MonitorCore::new(alerts, autoblock, counters.clone(), 4, start), counters, start)
    }

    #[test]
    fn a_flood_is_blocked_alerted_and_resolved_in_virtual_time() {
        let (mut core, counters, start) = core();
        let attacker: IpAddr = "198.18.9.9".parse().expect("addr");
        let poll = |core: &mut MonitorCore, ms: u64, drops: u64| {
            let offenders = if drops > 0 { vec![Offender { ip: attacker, dropped_packets: drops }] } else { vec![] };
            core.step(
                start + Duration::from_millis(ms),
                1_700_000_000 + ms / 1000,
                Some(stats(drops, vec![1])),
                Some(offenders),
                None,
            )
        };
        let quiet = poll(&mut core, 500, 0);
        assert!(quiet.alerts.is_empty() && quiet.decisions.is_empty());
        // 10k drops/s from 500 ms on: the first poll that sees it blocks and fires.
        let out = poll(&mut core, 1000, 5000);
        assert_eq!(
            out.decisions,
            [Decision::Block { cidr: Prefix::host(attacker), ttl_secs: 3, drops_per_sec: 10_000, threshold: 500 }]
        );
        assert_eq!(out.alerts.len(), 1);
        assert_eq!((out.alerts[0].rule, out.alerts[0].status), (Rule::Flood, AlertStatus::Firing));
        assert_eq!(out.latest.firing, [Rule::Flood]);
        assert_eq!(out.latest.active_autoblocks, 1);
        // Continues (now blocklisted drops): no repeats.
        let out = poll(&mut core, 1500, 10_000);
        assert!(out.alerts.is_empty() && out.decisions.is_empty());
        // Stops: the flood alert resolves; later the TTL releases the block.
        let out = poll(&mut core, 2000, 10_000);
        assert_eq!(out.alerts.len(), 1);
        assert_eq!(out.alerts[0].status, AlertStatus::Resolved);
        let out = poll(&mut core, 4000, 10_000);
        assert_eq!(out.decisions, [Decision::Unblock { cidr: Prefix::host(attacker) }]);
        assert_eq!(out.latest.active_autoblocks, 0);
        assert_eq!(counters.autoblock_blocks.load(Relaxed), 1);
        assert_eq!(counters.autoblock_unblocks.load(Relaxed), 1);
        assert_eq!(counters.alerts_fired.load(Relaxed), 1);
        assert_eq!(counters.alerts_resolved.load(Relaxed), 1);
    }

    #[test]
    fn an_unreachable_relayd_fires_and_blocks_still_expire() {
        let (mut core, counters, start) = core();
        let attacker: IpAddr = "2001:db8::9".parse().expect("addr");
        let at = |ms| start + Duration::from_millis(ms);
        core.step(at(500), 0, Some(stats(0, vec![])), Some(vec![]), None);
        let out = core.step(
            at(1000),
            1,
            Some(stats(0, vec![])),
            Some(vec![Offender { ip: attacker, dropped_packets: 9000 }]),
            None,
        );
        assert_eq!(out.decisions.len(), 1);
        // relayd goes away.
        let mut events = Vec::new();
        let mut decisions = Vec::new();
        for i in 0..10 {
            let out = core.step(at(1500 + i * 500), 2, None, None, None);
            assert!(!out.latest.observation.relayd_reachable());
            events.extend(out.alerts);
            decisions.extend(out.decisions);
        }
        // Flood fired on the block poll and, without a rate, keeps its state; relayd_unreachable
        // fires 2 s after the last answer.
        let got: Vec<_> = events.iter().map(|e| (e.rule, e.status)).collect();
        assert_eq!(got, [(Rule::RelaydUnreachable, AlertStatus::Firing)]);
        assert_eq!(core.evaluator.firing(), [Rule::Flood, Rule::RelaydUnreachable]);
        assert_eq!(decisions, [Decision::Unblock { cidr: Prefix::host(attacker) }], "the TTL runs without relayd");
        assert_eq!(counters.relayd_polls_failed.load(Relaxed), 10);
        assert_eq!(counters.relayd_polls_ok.load(Relaxed), 2);
    }

    #[test]
    fn an_oversized_offender_list_is_cut_to_the_limit() {
        let (mut core, _, start) = core();
        let list: Vec<Offender> = (0..10u8)
            .map(|i| Offender { ip: IpAddr::from([198, 18, 0, i]), dropped_packets: 100 - u64::from(i) })
            .collect();
        let out = core.step(start, 0, Some(stats(0, vec![])), Some(list), None);
        assert_eq!(out.latest.observation.offenders.len(), 4);
        assert_eq!(out.latest.observation.offenders[0].dropped_packets, 100);
    }

    #[test]
    fn settings_are_validated() {
        assert!(MonitorSettings::default().validate().is_ok());
        let fast = MonitorSettings { interval: Duration::from_millis(10), ..MonitorSettings::default() };
        assert!(matches!(fast.validate(), Err(MonitorError::Settings(_))));
        let none = MonitorSettings { offenders_limit: 0, ..MonitorSettings::default() };
        assert!(matches!(none.validate(), Err(MonitorError::Settings(_))));
    }
}
