//! Prometheus text exposition (format 0.0.4) of relayd's counters and relay-control's own.
//!
//! [`render`] turns the monitor's latest view ([`Latest`]) and the daemon's
//! [`ControlCounters`] into the body of `GET /metrics`. It is pure: the same inputs give the
//! same text.
//!
//! Invariants of the output, each checked by the tests:
//! - every family is written once, `# HELP` then `# TYPE` then its samples, so no series is
//!   ever duplicated and no sample precedes its type;
//! - every name starts with `edgerelay_`, and every counter ends in `_total`;
//! - label values are escaped (`\\`, `\"`, `\n`), because some of them (drop reasons, join
//!   results) are map keys that relayd sends and control does not choose.
//!
//! relayd's families are left out entirely while relayd is unreachable rather than repeating
//! stale numbers; `edgerelay_relayd_up` says which case applies.
//!
//! [`ControlCounters`] and [`Latest`] are defined in [`crate::observe`].

use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering::Relaxed;

use crate::observe::{xdp_verdict_is_drop, AlertStatus, ControlCounters, Latest, Rule};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Writes families in order; each call to [`Writer::family`] opens a new family.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(name.starts_with("edgerelay_"));
        debug_assert_eq!(matches!(kind, Kind::Counter), name.ends_with("_total"));
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        Family { out: &mut self.out, name: name.to_owned() }
    }
}

struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(&self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A duration in milliseconds as seconds, formatted without float noise (`0.25`, `12`).
fn ms_as_secs(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        s.to_string()
    } else {
        format!("{s}.{frac:03}").trim_end_matches('0').to_owned()
    }
}

/// The cluster families of `/metrics` (a cluster node only), appended to [`render`]'s.
pub fn render_cluster(h: &crate::cluster::Health) -> String {
    let mut w = Writer { out: String::with_capacity(1024) };
    let gauges = [
        ("edgerelay_cluster_redis_up", "1 when this node's last Redis command succeeded.", u64::from(h.is_reachable())),
        (
            "edgerelay_cluster_log_lag_ms",
            "How late this node applied its latest change-log entries, in milliseconds.",
            h.lag_ms.load(Relaxed),
        ),
        ("edgerelay_cluster_nodes", "Live nodes in the registry at the last listing.", h.nodes_seen.load(Relaxed)),
    ];
    for (name, help, v) in gauges {
        w.family(name, Kind::Gauge, help).sample(&[], v);
    }
    let counters = [
        ("edgerelay_cluster_log_applied_total", "Change-log entries applied to this node's copy.", &h.applied),
        ("edgerelay_cluster_resyncs_total", "Full resyncs from Redis (after a gap or a new epoch).", &h.resyncs),
        ("edgerelay_cluster_seeds_total", "Times this node seeded an empty Redis from its copy.", &h.seeds),
        (
            "edgerelay_cluster_writes_unavailable_total",
            "API changes refused because Redis was unreachable.",
            &h.writes_unavailable,
        ),
        (
            "edgerelay_cluster_write_conflicts_total",
            "Changes decided again after a concurrent change.",
            &h.write_conflicts,
        ),
        (
            "edgerelay_cluster_replay_local_only_total",
            "TC3 replay checks made against this node's cache alone (Redis unreachable).",
            &h.replay_local_only,
        ),
        ("edgerelay_cluster_heartbeat_failures_total", "Registry heartbeats that failed.", &h.heartbeat_failures),
        (
            "edgerelay_cluster_quota_fallbacks_total",
            "App heartbeats spent on the Redis-less fallback share of a quota.",
            &h.quota_fallbacks,
        ),
        ("edgerelay_cluster_lease_changes_total", "Quota lease changes pushed to relayd.", &h.lease_changes),
    ];
    for (name, help, v) in counters {
        w.family(name, Kind::Counter, help).sample(&[], v.load(Relaxed));
    }
    w.out
}

/// The leg agent's families of `/metrics` (a cluster node only): relayd's legs by state
/// (omitted while relayd did not answer `legs`), then the agent's own counters.
pub fn render_legs(l: &crate::cluster::legs::LegStats) -> String {
    use crate::cluster::legs::Reason;
    let mut w = Writer { out: String::with_capacity(2048) };
    if let Some(legs) = l.seen().legs {
        let mut f =
            w.family("edgerelay_cluster_legs", Kind::Gauge, "relayd's cascade legs at the last refresh, by state.");
        // relayd's state names are not trusted as label values: anything else is `other`.
        for state in ["connecting", "up", "other"] {
            let n = legs
                .iter()
                .filter(|g| match state {
                    "other" => g.state != "connecting" && g.state != "up",
                    s => g.state == s,
                })
                .count();
            f.sample(&[("state", state)], n);
        }
    }
    let gauges = [
        ("edgerelay_cluster_local_rooms", "Rooms with local members, as the leg agent follows them.", &l.local_rooms),
        ("edgerelay_cluster_peers", "Peers in the set pushed to relayd (set_peers).", &l.peers),
    ];
    for (name, help, v) in gauges {
        w.family(name, Kind::Gauge, help).sample(&[], v.load(Relaxed));
    }
    let mut f = w.family(
        "edgerelay_cluster_leg_opens_total",
        Kind::Counter,
        "open_leg calls relayd accepted, by why they were sent.",
    );
    for r in [Reason::Gain, Reason::Hint, Reason::Reconcile] {
        f.sample(&[("reason", r.label())], l.opened(r));
    }
    let counters = [
        ("edgerelay_cluster_leg_open_refusals_total", "open_leg calls relayd refused.", &l.open_refusals),
        ("edgerelay_cluster_leg_hints_sent_total", "Leg hints published to a lower-id peer.", &l.hints_sent),
        ("edgerelay_cluster_leg_hints_received_total", "Leg hints heard on this node's channel.", &l.hints_received),
        (
            "edgerelay_cluster_leg_reconciles_total",
            "Leg reconciles run (presence refreshes that reached Redis).",
            &l.reconciles,
        ),
        ("edgerelay_cluster_leg_redis_errors_total", "Redis commands of the leg agent that failed.", &l.redis_errors),
        (
            "edgerelay_cluster_leg_relayd_errors_total",
            "relayd requests of the leg agent that failed or were refused.",
            &l.relayd_errors,
        ),
        (
            "edgerelay_cluster_room_listings_total",
            "Full listings of relayd's rooms (start, resync, new connection).",
            &l.room_listings,
        ),
        ("edgerelay_cluster_peer_changes_total", "Changes of the peer set given to the relayd link.", &l.peer_changes),
    ];
    for (name, help, v) in counters {
        w.family(name, Kind::Counter, help).sample(&[], v.load(Relaxed));
    }
    w.out
}

/// Renders the `/metrics` body. `latest` is `None` before the monitor's first poll.
pub fn render(latest: Option<&Latest>, counters: &ControlCounters) -> String {
    let mut w = Writer { out: String::with_capacity(8192) };
    let obs = latest.map(|l| &l.observation);
    let up = obs.is_some_and(|o| o.stats.is_some());
    w.family("edgerelay_relayd_up", Kind::Gauge, "1 when the last poll of relayd succeeded.").sample(&[], u8::from(up));

    if let Some(s) = obs.and_then(|o| o.stats.as_ref()) {
        for (name, help, v) in [
            ("edgerelay_rx_packets_total", "Datagrams received by relayd's workers.", s.rx_packets),
            ("edgerelay_rx_bytes_total", "UDP payload bytes received by relayd's workers.", s.rx_bytes),
            ("edgerelay_tx_packets_total", "Datagrams sent by relayd's workers.", s.tx_packets),
            ("edgerelay_tx_bytes_total", "UDP payload bytes sent by relayd's workers.", s.tx_bytes),
            ("edgerelay_media_accepted_total", "Media packets authenticated and replay-checked.", s.media_accepted),
            ("edgerelay_control_in_total", "Control datagrams handed to relayd's control thread.", s.control_in),
        ] {
            w.family(name, Kind::Counter, help).sample(&[], v);
        }
        let mut f = w.family(
            "edgerelay_drops_total",
            Kind::Counter,
            "Packets not forwarded, by layer (engine: relayd's workers, xdp: the kernel) and reason.",
        );
        for (reason, v) in &s.drops {
            f.sample(&[("layer", "engine"), ("reason", reason)], v);
        }
        for (reason, v) in s.xdp.iter().filter(|(r, _)| xdp_verdict_is_drop(r)) {
            f.sample(&[("layer", "xdp"), ("reason", reason)], v);
        }
        if !s.xdp.is_empty() {
            let mut f =
                w.family("edgerelay_xdp_packets_total", Kind::Counter, "Packets seen by the XDP program, by verdict.");
            for (verdict, v) in &s.xdp {
                f.sample(&[("verdict", verdict)], v);
            }
        }
        if !s.xdp_bytes.is_empty() {
            let mut f =
                w.family("edgerelay_xdp_bytes_total", Kind::Counter, "Bytes seen by the XDP program, by verdict.");
            for (verdict, v) in &s.xdp_bytes {
                f.sample(&[("verdict", verdict)], v);
            }
        }
        let mut f = w.family("edgerelay_joins_total", Kind::Counter, "Join requests by result (ok or error code).");
        for (result, v) in &s.joins {
            f.sample(&[("result", result)], v);
        }
        if !s.messages.is_empty() {
            let mut f = w.family(
                "edgerelay_messages_total",
                Kind::Counter,
                "In-room messages by event (received, delivered, acks, duplicates, drops by reason, given up).",
            );
            for (event, v) in &s.messages {
                f.sample(&[("event", event)], v);
            }
        }
        if !s.handshake.is_empty() {
            let mut f = w.family(
                "edgerelay_join_path_total",
                Kind::Counter,
                "relayd's join-path events (v1_joins, v2_joins, mac1_failed, cookies_sent, dh, decrypt_failed, \
                 replayed, replies, replies_limited, sessions_map_full).",
            );
            for (event, v) in &s.handshake {
                f.sample(&[("event", event)], v);
            }
        }
        if !s.state.is_empty() {
            let mut f = w.family(
                "edgerelay_saved_push_total",
                Kind::Counter,
                "relayd's saved push (state file): loaded, load_failed, restore_refused, saved, save_failed.",
            );
            for (event, v) in &s.state {
                f.sample(&[("event", event)], v);
            }
        }
        if let Some(origin) = &s.config_origin {
            w.family(
                "edgerelay_config_origin",
                Kind::Gauge,
                "1 for where relayd's pushed config comes from: file, saved (the state file) or pushed.",
            )
            .sample(&[("origin", origin)], 1u8);
        }
        w.family("edgerelay_sessions", Kind::Gauge, "Live sessions.").sample(&[], s.sessions);
        w.family("edgerelay_rooms", Kind::Gauge, "Live rooms.").sample(&[], s.rooms);
        let mut f = w.family(
            "edgerelay_worker_lag_seconds",
            Kind::Gauge,
            "Time since each relayd worker last finished a loop iteration.",
        );
        for (i, lag) in s.worker_lag_ms.iter().enumerate() {
            f.sample(&[("worker", &i.to_string())], ms_as_secs(*lag));
        }
    }

    if let Some(not_after) = obs.and_then(|o| o.cert_not_after) {
        w.family(
            "edgerelay_control_cert_not_after_seconds",
            Kind::Gauge,
            "Expiry of relay-control's TLS certificate, Unix seconds.",
        )
        .sample(&[], not_after);
    }

    let mut f = w.family("edgerelay_alerts_firing", Kind::Gauge, "1 while an alert rule is firing.");
    for rule in Rule::ALL {
        let firing = latest.is_some_and(|l| l.firing.contains(&rule));
        f.sample(&[("rule", rule.name())], u8::from(firing));
    }
    let mut f = w.family("edgerelay_alert_events_total", Kind::Counter, "Alert events emitted, by status.");
    f.sample(&[("status", AlertStatus::Firing.name())], counters.alerts_fired.load(Relaxed));
    f.sample(&[("status", AlertStatus::Resolved.name())], counters.alerts_resolved.load(Relaxed));
    for (name, help, v) in [
        (
            "edgerelay_alert_events_dropped_total",
            "Alert events lost because the webhook queue was full.",
            &counters.alerts_dropped,
        ),
        ("edgerelay_alert_webhook_sent_total", "Alert webhook deliveries that succeeded.", &counters.webhook_sent),
        (
            "edgerelay_alert_webhook_failures_total",
            "Alert webhook deliveries that failed after all retries.",
            &counters.webhook_failures,
        ),
    ] {
        w.family(name, Kind::Counter, help).sample(&[], v.load(Relaxed));
    }

    let mut f = w.family("edgerelay_autoblock_actions_total", Kind::Counter, "Autoblock decisions, by action.");
    f.sample(&[("action", "block")], counters.autoblock_blocks.load(Relaxed));
    f.sample(&[("action", "unblock")], counters.autoblock_unblocks.load(Relaxed));
    w.family(
        "edgerelay_autoblock_decisions_dropped_total",
        Kind::Counter,
        "Autoblock decisions lost because the daemon did not take them in time.",
    )
    .sample(&[], counters.autoblock_decisions_dropped.load(Relaxed));
    w.family("edgerelay_autoblock_active", Kind::Gauge, "Sources currently blocked by autoblock.")
        .sample(&[], latest.map_or(0, |l| l.active_autoblocks));

    let mut f =
        w.family("edgerelay_relayd_polls_total", Kind::Counter, "Polls of relayd's management socket, by result.");
    f.sample(&[("result", "ok")], counters.relayd_polls_ok.load(Relaxed));
    f.sample(&[("result", "error")], counters.relayd_polls_failed.load(Relaxed));

    let mut f = w.family(
        "edgerelay_control_requests_total",
        Kind::Counter,
        "HTTPS API responses of relay-control, by status code.",
    );
    for (status, v) in counters.requests.snapshot() {
        f.sample(&[("status", &status)], v);
    }
    let mut f = w.family(
        "edgerelay_control_auth_failures_total",
        Kind::Counter,
        "HTTPS API authentication failures, by reason.",
    );
    for (reason, v) in counters.auth_failures.snapshot() {
        f.sample(&[("reason", &reason)], v);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use relay::stats::Snapshot;

    use super::*;
    use crate::observe::Observation;

    /// A strict reader of the 0.0.4 text format: returns the samples as
    /// (family, series text, value) and panics on any grammar violation.
    fn parse_exposition(text: &str) -> Vec<(String, String, String)> {
        let mut families: BTreeMap<String, &str> = BTreeMap::new();
        let mut helped: BTreeSet<String> = BTreeSet::new();
        let mut series: BTreeSet<String> = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut samples = Vec::new();
        assert!(text.ends_with('\n'), "the body ends with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _help) = rest.split_once(' ').expect("HELP has a name and a text");
                assert!(helped.insert(name.to_owned()), "second HELP for {name}");
                assert!(!families.contains_key(name), "HELP after TYPE for {name}");
                current = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a kind");
                assert_eq!(current.as_deref(), Some(name), "TYPE {name} directly after its HELP");
                let kind = match kind {
                    "counter" => "counter",
                    "gauge" => "gauge",
                    other => panic!("unexpected type {other}"),
                };
                assert!(families.insert(name.to_owned(), kind).is_none(), "second TYPE for {name}");
                assert!(name.starts_with("edgerelay_"), "{name} lacks the prefix");
                assert_eq!(
                    kind == "counter",
                    name.ends_with("_total"),
                    "{name}: counters and only counters end in _total"
                );
                assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name} is a valid metric name");
            } else {
                assert!(!line.starts_with('#'), "unknown comment line {line}");
                let (series_text, value) = line.rsplit_once(' ').expect("sample has a value");
                let name = series_text.split('{').next().expect("split yields one item");
                assert_eq!(current.as_deref(), Some(name), "sample {line} outside its family");
                assert!(families.contains_key(name), "sample {line} before its TYPE");
                if let Some(labels) = series_text.strip_prefix(name) {
                    if !labels.is_empty() {
                        check_labels(labels);
                    }
                }
                assert!(value.parse::<f64>().is_ok_and(f64::is_finite), "value {value} is a finite number");
                assert!(series.insert(series_text.to_owned()), "duplicate series {series_text}");
                samples.push((name.to_owned(), series_text.to_owned(), value.to_owned()));
            }
        }
        samples
    }

    /// `{k="v",...}` with valid names and only the three escapes in values.
    fn check_labels(labels: &str) {
        let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).expect("labels in braces");
        let mut chars = inner.chars().peekable();
        let mut names = BTreeSet::new();
        while chars.peek().is_some() {
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {name}"
            );
            assert!(names.insert(name.clone()), "label {name} twice");
            assert_eq!(chars.next(), Some('"'), "label value opens with a quote");
            loop {
                match chars.next().expect("label value closes") {
                    '\\' => assert!(matches!(chars.next(), Some('\\' | '"' | 'n')), "only \\\\, \\\" and \\n escapes"),
                    '"' => break,
                    '\n' => panic!("raw newline in a label value"),
                    _ => {}
                }
            }
            match chars.next() {
                None => break,
                Some(',') => {}
                Some(c) => panic!("unexpected {c} after a label value"),
            }
        }
    }

    fn latest_with(stats: Option<Snapshot>) -> Latest {
        Latest {
            observation: Observation {
                stats,
                offenders: Vec::new(),
                cert_not_after: Some(1_900_000_000),
                cluster_reachable: None,
            },
            firing: vec![Rule::Flood],
            active_autoblocks: 2,
        }
    }

    fn full_stats() -> Snapshot {
        let mut s = Snapshot {
            rx_packets: 10,
            rx_bytes: 1000,
            sessions: 3,
            rooms: 1,
            worker_lag_ms: vec![3, 1250],
            xdp_bytes: BTreeMap::from([("redirect_media".to_owned(), 700)]),
            ..Snapshot::default()
        };
        s.drops.insert("replayed".into(), 4);
        s.drops.insert("auth_failed".into(), 1);
        s.xdp.insert("redirect_media".into(), 7);
        s.xdp.insert("pass_not_ours".into(), 9);
        s.xdp.insert("replayed".into(), 2);
        s.xdp.insert("rate_limited".into(), 5);
        s.joins.insert("ok".into(), 2);
        s.joins.insert("bad \"sig\"\\\nx".into(), 1);
        s.messages.insert("delivered".into(), 6);
        s.messages.insert("given_up".into(), 1);
        s.handshake.insert("sessions_map_full".into(), 3);
        s.state.insert("loaded".into(), 1);
        s.config_origin = Some("saved".into());
        s
    }

    #[test]
    fn exposition_is_well_formed_with_relayd_up() {
        let c = ControlCounters::default();
        c.count_request(200);
        c.count_request(200);
        c.count_request(401);
        c.count_auth_failure("SignatureFailure");
        c.autoblock_blocks.fetch_add(3, Relaxed);
        let text = render(Some(&latest_with(Some(full_stats()))), &c);
        let samples = parse_exposition(&text);
        let value = |series: &str| {
            samples
                .iter()
                .find(|s| s.1 == series)
                .map(|s| s.2.clone())
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        };
        assert_eq!(value("edgerelay_relayd_up"), "1");
        assert_eq!(value("edgerelay_rx_bytes_total"), "1000");
        assert_eq!(value(r#"edgerelay_drops_total{layer="engine",reason="replayed"}"#), "4");
        assert_eq!(value(r#"edgerelay_drops_total{layer="xdp",reason="rate_limited"}"#), "5");
        assert_eq!(value(r#"edgerelay_drops_total{layer="xdp",reason="replayed"}"#), "2");
        assert_eq!(value(r#"edgerelay_xdp_packets_total{verdict="pass_not_ours"}"#), "9");
        assert_eq!(value(r#"edgerelay_xdp_bytes_total{verdict="redirect_media"}"#), "700");
        assert_eq!(value(r#"edgerelay_joins_total{result="bad \"sig\"\\\nx"}"#), "1");
        assert_eq!(value(r#"edgerelay_messages_total{event="delivered"}"#), "6");
        assert_eq!(value(r#"edgerelay_messages_total{event="given_up"}"#), "1");
        assert_eq!(value(r#"edgerelay_join_path_total{event="sessions_map_full"}"#), "3");
        assert_eq!(value(r#"edgerelay_saved_push_total{event="loaded"}"#), "1");
        assert_eq!(value(r#"edgerelay_config_origin{origin="saved"}"#), "1");
        assert_eq!(value(r#"edgerelay_worker_lag_seconds{worker="0"}"#), "0.003");
        assert_eq!(value(r#"edgerelay_worker_lag_seconds{worker="1"}"#), "1.25");
        assert_eq!(value(r#"edgerelay_alerts_firing{rule="flood"}"#), "1");
        assert_eq!(value(r#"edgerelay_alerts_firing{rule="drop_rate"}"#), "0");
        assert_eq!(value(r#"edgerelay_control_requests_total{status="200"}"#), "2");
        assert_eq!(value(r#"edgerelay_control_auth_failures_total{reason="SignatureFailure"}"#), "1");
        assert_eq!(value(r#"edgerelay_autoblock_actions_total{action="block"}"#), "3");
        assert_eq!(value("edgerelay_autoblock_active"), "2");
        assert_eq!(value("edgerelay_control_cert_not_after_seconds"), "1900000000");
        // Passes and redirects are not drops.
        assert!(!text.contains(r#"layer="xdp",reason="pass_not_ours""#));
        assert!(!text.contains(r#"layer="xdp",reason="redirect_media""#));
    }

    #[test]
    fn relayd_families_are_absent_while_unreachable_and_before_the_first_poll() {
        let c = ControlCounters::default();
        for latest in [Some(latest_with(None)), None] {
            let text = render(latest.as_ref(), &c);
            let samples = parse_exposition(&text);
            assert!(samples.iter().any(|s| s.1 == "edgerelay_relayd_up" && s.2 == "0"));
            assert!(!text.contains("edgerelay_rx_packets_total"));
            assert!(!text.contains("edgerelay_drops_total"));
            assert!(!text.contains("edgerelay_worker_lag_seconds"));
        }
    }

    #[test]
    fn leg_families_count_states_and_reasons() {
        use crate::cluster::legs::{LegStats, LegsSeen, Reason};
        let l = LegStats::default();
        let text = render_legs(&l);
        parse_exposition(&text);
        assert!(!text.contains("edgerelay_cluster_legs{"), "no leg states before relayd answered legs");
        let leg = |state: &str| relay::mgmt::LegInfo {
            sdkappid: 1,
            room: "r".into(),
            peer: "edge-2".into(),
            role: "initiator".into(),
            state: state.into(),
            streams_in: 0,
            streams_out: 0,
            age_ms: 0,
            last_error: None,
        };
        l.set_seen(LegsSeen { legs: Some(vec![leg("up"), leg("up"), leg("connecting"), leg("w\"eird")]), error: None });
        l.opens[Reason::Hint as usize].fetch_add(3, Relaxed);
        l.hints_received.fetch_add(4, Relaxed);
        let samples = parse_exposition(&render_legs(&l));
        let get = |series: &str| samples.iter().find(|s| s.1 == series).map(|s| s.2.clone());
        assert_eq!(get("edgerelay_cluster_legs{state=\"up\"}").as_deref(), Some("2"));
        assert_eq!(get("edgerelay_cluster_legs{state=\"connecting\"}").as_deref(), Some("1"));
        assert_eq!(get("edgerelay_cluster_legs{state=\"other\"}").as_deref(), Some("1"));
        assert_eq!(get("edgerelay_cluster_leg_opens_total{reason=\"hint\"}").as_deref(), Some("3"));
        assert_eq!(get("edgerelay_cluster_leg_opens_total{reason=\"reconcile\"}").as_deref(), Some("0"));
        assert_eq!(get("edgerelay_cluster_leg_hints_received_total").as_deref(), Some("4"));
    }

    #[test]
    fn escaping_and_number_formatting() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(ms_as_secs(0), "0");
        assert_eq!(ms_as_secs(1500), "1.5");
        assert_eq!(ms_as_secs(20), "0.02");
        assert_eq!(ms_as_secs(7000), "7");
        assert!(xdp_verdict_is_drop("blocklisted"));
        assert!(!xdp_verdict_is_drop("no_socket"));
        assert!(!xdp_verdict_is_drop("pass_fragment"));
        assert!(!xdp_verdict_is_drop("redirect_control"));
    }
}
