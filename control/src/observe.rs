//! The vocabulary the monitoring modules share: what one poll of relayd observed
//! ([`Observation`], [`Latest`]), relay-control's own counters ([`ControlCounters`]), and
//! the alert events the evaluator emits and the webhook delivers ([`Rule`], [`AlertStatus`],
//! [`AlertEvent`]).
//!
//! It sits below its users so the import order is one-way:
//! `monitor -> {alerts -> webhook, metrics, autoblock} -> observe`. Nothing here does I/O.
//!
//! [`ControlCounters`] are `AtomicU64` counters with `Relaxed` increments, plus two small
//! label-keyed maps (HTTP status, auth failure reason) whose number of distinct labels is
//! capped so a caller cannot grow them without bound.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use relay::stats::Snapshot;
use serde::{Deserialize, Serialize};

use crate::autoblock::Offender;

/// The result of one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// relayd's counters; `None` when the poll failed (relayd unreachable).
    pub stats: Option<Snapshot>,
    /// Cumulative per-source kernel drops, highest first (empty when the poll failed).
    pub offenders: Vec<Offender>,
    /// Expiry of relay-control's TLS certificate, Unix seconds, when known.
    pub cert_not_after: Option<u64>,
    /// In a cluster: whether this node reached Redis last time; `None` outside a cluster.
    pub cluster_reachable: Option<bool>,
}

impl Observation {
    /// Whether relayd answered this poll.
    pub fn relayd_reachable(&self) -> bool {
        self.stats.is_some()
    }
}

/// The monitor's latest view, published after every poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latest {
    /// The poll.
    pub observation: Observation,
    /// Alert rules firing after this poll.
    pub firing: Vec<Rule>,
    /// Live autoblocks.
    pub active_autoblocks: usize,
}

/// Most distinct labels one [`LabelCounters`] keeps; further labels count under `other`.
pub const MAX_LABELS: usize = 64;
/// Longest label kept verbatim by [`LabelCounters`]; longer labels count under `other`.
pub const MAX_LABEL_LEN: usize = 64;

/// Counters keyed by a label value chosen by the caller, bounded to [`MAX_LABELS`] labels.
///
/// Used off the packet path (HTTP requests, auth failures), where a short lock is cheap.
#[derive(Debug, Default)]
pub struct LabelCounters {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl LabelCounters {
    /// Adds one to `label` (or to `other` when the label is new and the map is full, or the
    /// label is longer than [`MAX_LABEL_LEN`]).
    pub fn inc(&self, label: &str) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = m.get_mut(label) {
            *v += 1;
            return;
        }
        let key = if label.len() <= MAX_LABEL_LEN && m.len() < MAX_LABELS - 1 { label } else { "other" };
        *m.entry(key.to_owned()).or_default() += 1;
    }

    /// The current counts.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// relay-control's own counters, shared (in an `Arc`) by the HTTPS server, the monitor and
/// the webhook sender.
#[derive(Debug, Default)]
pub struct ControlCounters {
    /// HTTP responses by status code (`"200"`, `"401"`, ...).
    pub requests: LabelCounters,
    /// Authentication failures by reason (the `AuthFailure.<Reason>` suffix).
    pub auth_failures: LabelCounters,
    /// Autoblock decisions that blocked a source.
    pub autoblock_blocks: AtomicU64,
    /// Autoblock decisions that released a source after its TTL.
    pub autoblock_unblocks: AtomicU64,
    /// Autoblock decisions lost because the daemon's channel was full.
    pub autoblock_decisions_dropped: AtomicU64,
    /// Alert events that fired.
    pub alerts_fired: AtomicU64,
    /// Alert events that resolved.
    pub alerts_resolved: AtomicU64,
    /// Alert events lost because the webhook queue was full.
    pub alerts_dropped: AtomicU64,
    /// Webhook deliveries that succeeded.
    pub webhook_sent: AtomicU64,
    /// Webhook deliveries that failed after all retries.
    pub webhook_failures: AtomicU64,
    /// Polls of relayd that succeeded.
    pub relayd_polls_ok: AtomicU64,
    /// Polls of relayd that failed (unreachable, error answer or timeout).
    pub relayd_polls_failed: AtomicU64,
}

impl ControlCounters {
    /// Counts one HTTP response.
    pub fn count_request(&self, status: u16) {
        self.requests.inc(&status.to_string());
    }
    /// Counts one authentication failure.
    pub fn count_auth_failure(&self, reason: &str) {
        self.auth_failures.inc(reason);
    }
}

/// Whether an XDP verdict name (`xdp_prog::REASON_NAMES`) is a drop. The passes
/// (`pass_*`, `no_socket`) and redirects (`redirect_*`) are not; everything else is
/// `XDP_DROP`. Matching by name keeps control independent of the XDP crate and lets a new
/// drop reason appear without a change here.
pub fn xdp_verdict_is_drop(verdict: &str) -> bool {
    !(verdict.starts_with("pass_") || verdict.starts_with("redirect_") || verdict == "no_socket")
}

/// An alert rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Engine plus XDP drops per second over the threshold.
    DropRate,
    /// XDP drops per second over the threshold, or a source was autoblocked.
    Flood,
    /// No successful poll of relayd for a while.
    RelaydUnreachable,
    /// A relayd worker has not finished a loop iteration for too long.
    WorkerStalled,
    /// relay-control's TLS certificate expires soon.
    CertExpiry,
    /// In a cluster: this node has not reached Redis for a while.
    ClusterUnreachable,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 6] = [
        Self::DropRate,
        Self::Flood,
        Self::RelaydUnreachable,
        Self::WorkerStalled,
        Self::CertExpiry,
        Self::ClusterUnreachable,
    ];

    /// The name used in events, logs and the `rule` metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DropRate => "drop_rate",
            Self::Flood => "flood",
            Self::RelaydUnreachable => "relayd_unreachable",
            Self::WorkerStalled => "worker_stalled",
            Self::CertExpiry => "cert_expiry",
            Self::ClusterUnreachable => "cluster_unreachable",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether an event opens or closes an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition held for the rule's duration.
    Firing,
    /// The condition stopped holding.
    Resolved,
}

impl AlertStatus {
    /// `"firing"` or `"resolved"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert event: the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Which rule.
    pub rule: Rule,
    /// One human-readable line.
    pub summary: String,
    /// The rule's details plus the configured extra labels; a resolve repeats its firing's.
    pub labels: BTreeMap<String, String>,
    /// When the alert fired, Unix seconds.
    pub started_at: u64,
    /// When it resolved, Unix seconds (resolve events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_counters_are_bounded() {
        let l = LabelCounters::default();
        for i in 0..200 {
            l.inc(&format!("r{i}"));
        }
        l.inc(&"x".repeat(MAX_LABEL_LEN + 1));
        l.inc("r0");
        let snap = l.snapshot();
        assert_eq!(snap.len(), MAX_LABELS);
        assert_eq!(snap["r0"], 2);
        assert_eq!(snap["other"], 200 - (MAX_LABELS as u64 - 1) + 1);
    }
}
