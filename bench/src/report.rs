//! The JSON reports the scenarios write and `relay-bench plot` reads: one set of serde types
//! for both sides, so the writer and the reader cannot drift apart.
//!
//! The field names and shapes are the reports' contract: the committed reports under
//! `docs/benchmarks/` and the integration tests (`tests/tests/bench_*.rs`, `baselines.rs`)
//! read them, so a field is only ever added. A field that reports written before it existed
//! lack is `#[serde(default)]` or an `Option`. [`write`] goes through [`serde_json::Value`]
//! so the keys come out sorted, as they always have.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::load::{Found, SearchArgs};
use crate::stats::Stat;

/// Writes `report` as pretty JSON to `path`, keys sorted.
pub fn write<T: Serialize>(path: &Path, report: &T) -> Result<()> {
    let v = serde_json::to_value(report).context("serialising the report")?;
    std::fs::write(path, serde_json::to_string_pretty(&v)?).with_context(|| format!("writing {}", path.display()))
}

/// Reads the report at `path`; `None` if there is no such file.
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
}

// ---- throughput.json: `relay-bench throughput --json`, a list of rows ----

/// One configuration and backend of `throughput`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// `socket` or `xdp`.
    pub backend: String,
    /// `afxdp` or `socket`: the generator the runs got.
    pub generator: String,
    /// Rooms, one sender each.
    pub rooms: usize,
    /// Receivers per room.
    pub fanout: usize,
    /// RTP packet size before the SRTP tag.
    pub size: usize,
    /// The SRTP profile's name.
    pub profile: String,
    /// Runs asked for.
    pub runs: usize,
    /// Runs whose search found a loss-free rate.
    pub valid_runs: usize,
    /// The search's loss bound.
    pub max_loss: f64,
    /// Seconds per probe.
    pub probe_secs: f64,
    /// Where the veths' receive work ran (`softirq`, `threaded`, `threaded-rt`).
    #[serde(default)]
    pub napi: Option<String>,
    /// Why each run's search stopped.
    pub stopped_by: Vec<String>,
    /// Every run's search and probe details.
    pub runs_detail: Vec<ThroughputRun>,
    /// Loss-free input rate, median over the valid runs (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_pps_median: Option<f64>,
    /// Its min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_pps_min: Option<f64>,
    /// Its max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_pps_max: Option<f64>,
    /// relayd's output rate at the median: `in_pps_median × fanout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_pps_median: Option<f64>,
    /// relayd's CPU µs per accepted packet at each run's best rate, median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayd_cpu_us_per_pkt_median: Option<f64>,
    /// Its min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayd_cpu_us_per_pkt_min: Option<f64>,
    /// Its max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayd_cpu_us_per_pkt_max: Option<f64>,
    /// Per-run ratios of this backend's loss-free rate over the socket backend's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_vs_socket: Option<Stat>,
}

/// One run of a `throughput` configuration: its search, and what each probe's
/// [`crate::load::Probe`] has no field for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThroughputRun {
    /// The search (`best`, `stopped_by`, `probes`).
    #[serde(flatten)]
    pub found: Found,
    /// Per probe, in the order of `probes`.
    pub probe_details: Vec<ProbeDetail>,
}

/// What the rig saw in one probe beside its [`crate::load::Probe`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeDetail {
    /// The rate asked of the pacer.
    pub target_pps: f64,
    /// Authentic, first-seen media at its receiver.
    pub verified: u64,
    /// Refused by a receiver's replay check.
    pub duplicates: u64,
    /// Other SRTP errors at the receivers.
    pub other_srtp_errors: u64,
    /// Captured frames that were not media for a receiver.
    pub stray_frames: u64,
    /// The largest SRTP index jump one receiver saw.
    #[serde(default)]
    pub max_index_gap: u64,
    /// Frames that did not fit in the capture arena.
    pub capture_overflow: u64,
    /// Media relayd accepted.
    pub relayd_accepted: u64,
    /// relayd's drops over the probe, by reason (non-zero ones).
    #[serde(default)]
    pub relayd_drops: BTreeMap<String, u64>,
    /// Frames the receiving AF_XDP socket's kernel side dropped.
    pub receiver_ring_drops: u64,
    /// The drain ended with relayd still sending.
    #[serde(default)]
    pub relayd_busy_after_drain: bool,
    /// One-way latency of the verified packets.
    #[serde(default)]
    pub latency_us: Option<ProbeLatency>,
    /// relayd's output the sink counted as towards no receiver.
    pub to_no_receiver: u64,
    /// Each CPU's busy fraction over the probe (`/proc/stat`: user, system, irq and softirq
    /// of every process), in CPU order.
    #[serde(default)]
    pub cpu_busy: Vec<f64>,
    /// relayd's AF_XDP sockets' kernel statistics over the probe (XDP backend; non-zero
    /// ones): where frames were lost before relayd's engine.
    #[serde(default)]
    pub relayd_xsk: BTreeMap<String, u64>,
    /// The most packets due and not yet handed to the generator at one time during the
    /// probe: how far the pacer fell behind (it catches up in back-to-back bursts).
    #[serde(default)]
    pub pacer_max_backlog: u64,
}

/// One probe's one-way latency quantiles, µs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ProbeLatency {
    /// Packets with a latency.
    pub measured: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

// ---- latency.json: `relay-bench latency --json`, a list of rows ----

/// One backend and load fraction of `latency`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyRow {
    /// `socket` or `xdp`.
    pub backend: String,
    /// The maximum loss-free rate the fractions are of.
    pub max_loss_free_pps: f64,
    /// The search for it was stopped by the generator: the maximum is a floor.
    pub max_generator_limited: bool,
    /// The fraction of the maximum measured at.
    pub fraction: f64,
    /// The rate measured at.
    pub rate_pps: f64,
    /// RTP packet size before the SRTP tag.
    pub size: usize,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Runs.
    pub runs: usize,
    /// p50 latency, µs: `[median, min, max]` over the runs.
    pub p50_us: [f64; 3],
    /// p99, likewise.
    pub p99_us: [f64; 3],
    /// p99.9, likewise.
    pub p999_us: [f64; 3],
    /// Loss, median over the runs.
    pub loss_median: f64,
    /// (quantile, µs) of all runs together; empty in reports from before it was kept.
    #[serde(default)]
    pub cdf_us: Vec<(f64, u64)>,
    /// Per run.
    pub runs_detail: Vec<LatencyRun>,
}

/// One `latency` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyRun {
    /// Packets sent.
    pub sent: u64,
    /// Packets verified at the receiver.
    pub verified: u64,
    /// Verified packets with a latency.
    pub latency_measured: u64,
    /// p50, p99 and p99.9, µs.
    pub p50_p99_p999_us: [f64; 3],
    /// Packets that failed the receiver's SRTP check.
    pub auth_failed: u64,
    /// Packets the receiver's replay check refused.
    pub duplicates: u64,
    /// Other SRTP errors.
    pub other_srtp_errors: u64,
    /// The generator kept the rate.
    pub generator_kept_up: bool,
}

// ---- flood.json: `relay-bench flood --json`, a list of rows ----

/// One backend of `flood`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloodRow {
    /// `socket` or `xdp`.
    pub backend: String,
    /// relayd kept its default XDP per-source limits (absent in reports from before the
    /// `--no-limits` flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_limits: Option<bool>,
    /// Legitimate packets per second.
    pub legit_pps: f64,
    /// RTP packet size before the SRTP tag.
    pub size: usize,
    /// The whole run, seconds (quiet, flood and quiet thirds).
    pub seconds: f64,
    /// Runs.
    pub runs: usize,
    /// Flood goodput over first-quiet goodput: median.
    pub goodput_ratio_median: f64,
    /// Its min.
    pub goodput_ratio_min: f64,
    /// Its max.
    pub goodput_ratio_max: f64,
    /// Flood frames per second, median.
    pub flood_pps_median: f64,
    /// p99 latency under flood, µs, median.
    pub flood_p99_us_median: f64,
    /// Per run.
    pub runs_detail: Vec<FloodRun>,
}

/// One `flood` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloodRun {
    /// Verified packets per second: quiet, flood, quiet again.
    pub goodput_pps: [f64; 3],
    /// Packets the sender sent per second, per phase.
    pub sent_pps: [f64; 3],
    /// Flood frames per second of flood.
    pub flood_pps: f64,
    /// (p50, p99) latency, µs, in the quiet phases.
    pub latency_us_p50_p99_quiet: (f64, f64),
    /// (p50, p99) latency, µs, under flood.
    pub latency_us_p50_p99_flood: (f64, f64),
    /// Packets that failed the receiver's SRTP check.
    pub auth_failed: u64,
    /// Packets the receiver refused for another SRTP reason.
    #[serde(default)]
    pub other_srtp_errors: u64,
    /// relayd's userspace drops over the flood phase, by reason.
    pub engine_drops_during_flood: BTreeMap<String, u64>,
    /// The XDP verdicts over the flood phase, by verdict.
    pub xdp_verdicts_during_flood: BTreeMap<String, u64>,
    /// The timeline's tick.
    pub timeline_tick_ms: u64,
    /// Verified packets per tick.
    pub timeline_verified: Vec<u64>,
}

// ---- baselines: `baseline … --json` and `compare` (report.json, docs' baselines.json) ----

/// One system's runs of a baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct System {
    /// Short name, e.g. `rtpengine`, `edgerelay-socket`.
    pub name: String,
    /// What it does to each packet, and caveats.
    pub note: String,
    /// Relayed packets per second per run (max loss-free rate for SRTP relays).
    pub pps: Vec<f64>,
    /// Relay CPU µs per relayed packet per run.
    pub cpu_us: Vec<f64>,
    /// Why each search stopped (SRTP relays).
    pub stopped_by: Vec<String>,
    /// Every probe of every run (SRTP relays).
    pub searches: Vec<Found>,
    /// The first error, if a run failed.
    pub error: Option<String>,
}

/// `baseline rtpengine --json` and `baseline coturn --json`: every system's runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Systems {
    /// The systems measured.
    pub systems: Vec<System>,
}

/// A [`System`] summarised over its runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SystemSummary {
    /// As in [`System`].
    pub name: String,
    /// As in [`System`].
    pub note: String,
    /// Relayed pkt/s over the runs.
    pub pps: Option<Stat>,
    /// CPU µs per packet over the runs.
    pub cpu_us_per_pkt: Option<Stat>,
    /// Why each search stopped.
    pub stopped_by: Vec<String>,
    /// The first error, if a run failed.
    pub error: Option<String>,
}

/// One crypto figure over the runs (`baseline crypto --json` is a list of these).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CryptoFigure {
    /// `raw`, `edgerelay` or `openssl`.
    pub source: String,
    /// The primitives timed.
    pub what: String,
    /// RTP packet size.
    pub size: usize,
    /// µs per decrypt + re-encrypt.
    pub us_per_pkt: Stat,
}

/// A figure measured as a summary over runs, or as one number.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Measured {
    /// Median, min and max over the runs.
    Runs(Stat),
    /// One number (from medians).
    Value(f64),
}

/// A ratio in the `compare` report.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ratio {
    /// edgerelay against a baseline, in pkt/s and CPU per packet.
    Versus(VersusRatio),
    /// Any other ratio.
    Single(SingleRatio),
}

/// edgerelay against a baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersusRatio {
    /// `edgerelay-… / baseline`.
    pub what: String,
    /// edgerelay's pkt/s over the baseline's, per run.
    pub pps_ratio: Option<Stat>,
    /// The baseline's CPU per packet over edgerelay's, per run.
    pub cpu_per_pkt_ratio_base_over_edgerelay: Option<Stat>,
}

/// A ratio of one kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SingleRatio {
    /// What is over what.
    pub what: String,
    /// The ratio.
    pub ratio: Option<Measured>,
}

/// One of issue 5's goals, measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Goal {
    /// What is compared.
    pub goal: String,
    /// The ratio to reach.
    pub target: f64,
    /// The ratio measured.
    pub ratio: Option<Measured>,
    /// Whether the median reached the target.
    pub met: Option<bool>,
    /// edgerelay's figure is a floor (the generator or `--max-pps` stopped its search).
    pub floor: bool,
}

/// The machine and the versions a `compare` report was measured with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    /// CPUs the bench may use.
    pub cpus: usize,
    /// The relay under test's CPU.
    pub relay_cpu: usize,
    /// The load tools' CPU.
    pub load_cpu: usize,
    /// `/proc/cpuinfo`'s model name.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// `/proc/loadavg` at the start.
    pub loadavg_at_start: String,
    /// `rtpengine --version`, if installed.
    pub rtpengine: Option<String>,
    /// `turnserver --version`, if installed.
    pub coturn: Option<String>,
    /// The OpenSSL version, if installed.
    pub openssl: Option<String>,
    /// The bench's command line.
    pub command: String,
}

/// `compare`'s report.json (and docs/benchmarks/baselines.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareReport {
    /// Issue 5's goals.
    pub goals: Vec<Goal>,
    /// The machine.
    pub environment: Environment,
    /// `/proc/loadavg` at the end.
    pub loadavg_at_end: String,
    /// RTP packet size.
    pub size: usize,
    /// The SRTP relays' search.
    pub search: SearchArgs,
    /// Every system, summarised.
    pub systems: Vec<SystemSummary>,
    /// Ratios between the systems.
    pub ratios: Vec<Ratio>,
    /// The crypto figures.
    pub crypto: Vec<CryptoFigure>,
    /// Every system's runs.
    pub runs_detail: Vec<System>,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn committed(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks").join(name)
    }

    /// Re-serialises what `path` holds through `T` and checks nothing was lost or renamed:
    /// every key and value of the file is still there (fields added since may be extra).
    fn round_trips<T: Serialize + for<'de> Deserialize<'de>>(name: &str) {
        let path = committed(name);
        let typed: T = read(&path).unwrap().unwrap_or_else(|| panic!("{name} is committed"));
        let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let again = serde_json::to_value(&typed).unwrap();
        fn contains(big: &serde_json::Value, small: &serde_json::Value, at: &str) {
            use serde_json::Value::*;
            match (big, small) {
                (Object(b), Object(s)) => {
                    for (k, v) in s {
                        let b = b.get(k).unwrap_or_else(|| panic!("{at}/{k} is lost"));
                        contains(b, v, &format!("{at}/{k}"));
                    }
                }
                (Array(b), Array(s)) => {
                    assert_eq!(b.len(), s.len(), "{at}");
                    for (i, (b, s)) in b.iter().zip(s).enumerate() {
                        contains(b, s, &format!("{at}/{i}"));
                    }
                }
                (Number(b), Number(s)) => assert_eq!(b.as_f64(), s.as_f64(), "{at}"),
                _ => assert_eq!(big, small, "{at}"),
            }
        }
        contains(&again, &original, name);
    }

    #[test]
    fn committed_reports_read_back_whole() {
        round_trips::<Vec<ThroughputRow>>("throughput.json");
        round_trips::<Vec<LatencyRow>>("latency.json");
        round_trips::<Vec<FloodRow>>("flood.json");
        round_trips::<Vec<FloodRow>>("flood-no-limits.json");
        round_trips::<CompareReport>("baselines.json");
    }

    #[test]
    fn ratios_and_goals_keep_their_two_shapes() {
        let s = Stat { median: 2.0, min: 1.0, max: 3.0, n: 3 };
        let versus = Ratio::Versus(VersusRatio {
            what: "a / b".into(),
            pps_ratio: Some(s),
            cpu_per_pkt_ratio_base_over_edgerelay: None,
        });
        let v = serde_json::to_value(&versus).unwrap();
        assert_eq!(v["pps_ratio"]["median"], 2.0);
        assert!(v["cpu_per_pkt_ratio_base_over_edgerelay"].is_null() && v.get("ratio").is_none());
        let back: Ratio = serde_json::from_value(v).unwrap();
        assert!(matches!(back, Ratio::Versus(_)));
        let single: Ratio = serde_json::from_value(serde_json::json!({"what": "x", "ratio": 0.5})).unwrap();
        assert!(matches!(single, Ratio::Single(SingleRatio { ratio: Some(Measured::Value(x)), .. }) if x == 0.5));
        let none: Ratio = serde_json::from_value(serde_json::json!({"what": "x", "ratio": null})).unwrap();
        assert!(matches!(none, Ratio::Single(SingleRatio { ratio: None, .. })));
    }

    #[test]
    fn written_keys_are_sorted_like_before() {
        let d = relay::tempdir::TempDir::new("report").unwrap();
        let p = d.join("r.json");
        let s = Stat { median: 2.0, min: 1.0, max: 3.0, n: 3 };
        write(&p, &s).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let keys: Vec<usize> = ["\"max\"", "\"median\"", "\"min\"", "\"n\""].map(|k| text.find(k).unwrap()).to_vec();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(read::<Stat>(&p).unwrap(), Some(s));
        assert!(read::<Stat>(&d.join("none.json")).unwrap().is_none());
    }
}
