//! The latency scenario: one-way latency p50, p99 and p99.9 at fractions (default 10%, 50%,
//! 90%) of the maximum loss-free rate, per backend.
//!
//! It uses the shared rig ([`crate::rig`], as `throughput` does): one room, one sender and
//! one receiver, 1200-byte SRTP_80 from the AF_XDP generator, and every relayed packet
//! captured through the clients' XDP program and verified with the receiver's keys. Each
//! packet carries its number; the pacer notes when it handed each one to the generator, and
//! the capture when it took each frame off the receivers' ring. Both are one process's clock,
//! so the difference is true one-way latency through the generator's transmit, the veth pair,
//! relayd and both kernels, recorded in an hdrhistogram (µs, 3 significant digits).
//!
//! The maximum loss-free rate is `--max-pps` if given, else found per backend with the
//! throughput scenario's search ([`crate::load::search`], ≤ 0.1% loss, 2-second probes) in
//! its own rig. Every measurement then runs in a fresh rig (fresh namespaces and relayd).
//! The XDP backend's per-source packet limit is off (one sender streams far above its
//! 20,000 pkt/s default).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use relay::config::Backend;

use crate::load::{self, Outcome, SearchArgs};
use crate::procs::{self, Cpus};
use crate::progress::Progress;
use crate::relayd;
use crate::report::{self, LatencyRow, LatencyRun};
use crate::rig::{self, Rig};
use crate::stats::{latency_histogram, Stat, LATENCY_MAX_US};

/// `relay-bench latency` options.
#[derive(clap::Args)]
pub struct Args {
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "socket,xdp")]
    backends: Vec<Backend>,
    /// The maximum loss-free rate to take fractions of (default: search for it per backend).
    #[arg(long)]
    max_pps: Option<f64>,
    /// Where the search starts.
    #[arg(long, default_value_t = 16_000.0)]
    start_pps: f64,
    /// Fractions of the maximum rate to measure at.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,0.9")]
    fractions: Vec<f64>,
    /// RTP packet size before the SRTP tag.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Length of each measurement, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Runs per backend and fraction (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    relayd: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The latency CDF of all runs together: (quantile, µs) at 1% steps and the 99.9/99.99% tail.
fn cdf(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    (1..=99)
        .map(|i| f64::from(i) / 100.0)
        .chain([0.995, 0.999, 0.9999, 1.0])
        .map(|q| (q, h.value_at_quantile(q)))
        .collect()
}

/// Runs the scenario and prints a table.
pub fn run(a: Args) -> Result<()> {
    if a.runs == 0 || a.seconds < 1.5 || a.fractions.iter().any(|f| !(0.0..=1.0).contains(f) || *f == 0.0) {
        bail!("--runs must be at least 1, --seconds at least 1.5, and every fraction in (0, 1]");
    }
    if !(rig::MIN_SIZE..=rig::MAX_SIZE).contains(&a.size) {
        bail!("--size must be between {} and {} bytes", rig::MIN_SIZE, rig::MAX_SIZE);
    }
    let relayd = relayd::relayd_path(&a.relayd)?;
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    let search =
        SearchArgs { start_pps: a.start_pps, max_pps: 1_000_000.0, probe_secs: 2.0, precision: 0.05, max_loss: 0.001 };
    let measure = SearchArgs { probe_secs: a.seconds, ..search };
    let mut rows = Vec::new();
    let progress = Progress::new((a.backends.len() * a.fractions.len() * a.runs) as u64, "latency");
    for &backend in &a.backends {
        let name = format!("{backend:?}").to_lowercase();
        let (max, limited) = match a.max_pps {
            Some(m) => (m, false),
            None => {
                progress.step(format!("searching {name}'s maximum loss-free rate"));
                let mut rig = Rig::fan_out_one(&relayd, cpus, backend, a.size)?;
                let found = load::search(&search, |rate| rig.probe(rate, &search, &mut Vec::new()))
                    .context("searching the maximum loss-free rate")?;
                let best =
                    found.best.with_context(|| format!("{name}: no rate from {} pkt/s down passed", a.start_pps))?;
                (best.offered_pps, found.stopped_by == "generator_limited")
            }
        };
        progress.out(&format!(
            "{name}: maximum loss-free rate {max:.0} pkt/s{}",
            if limited { " (a floor: the generator could not go faster)" } else { "" }
        ));
        for &f in &a.fractions {
            let rate = max * f;
            let mut merged = latency_histogram(LATENCY_MAX_US)?;
            let mut runs = Vec::new();
            for i in 0..a.runs {
                procs::check_interrupted()?;
                progress.step(format!("{backend:?} at {:.0}%, run {}", f * 100.0, i + 1));
                let mut rig = Rig::fan_out_one(&relayd, cpus, backend, a.size)?;
                let p = rig.probe(rate, &measure, &mut Vec::new())?;
                let h = rig.latency();
                if h.is_empty() {
                    bail!("{name} at {rate:.0} pkt/s: no packet's latency was measured ({} verified)", p.received);
                }
                merged.add(h).context("merging latency histograms")?;
                let q = [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64);
                runs.push((p, q, h.len()));
                progress.inc();
            }
            let stat = |v: Vec<f64>| Stat::of(&v).expect("--runs is at least 1, and every run's figures are finite");
            let q = |i: usize| stat(runs.iter().map(|r| r.1[i]).collect());
            let (p50, p99, p999) = (q(0), q(1), q(2));
            let l = stat(runs.iter().map(|r| r.0.loss).collect());
            progress.out(&format!(
                "{name:<7} {:>3.0}% ({rate:>7.0} pkt/s): p50 {:.0} µs [{:.0}–{:.0}], p99 {:.0} µs [{:.0}–{:.0}], p99.9 {:.0} µs [{:.0}–{:.0}], loss {:.3}%, {} runs",
                f * 100.0, p50.median, p50.min, p50.max, p99.median, p99.min, p99.max, p999.median, p999.min, p999.max, l.median * 100.0, a.runs
            ));
            rows.push(LatencyRow {
                backend: name.clone(),
                max_loss_free_pps: max,
                max_generator_limited: limited,
                fraction: f,
                rate_pps: rate,
                size: a.size,
                seconds: a.seconds,
                runs: a.runs,
                p50_us: p50.to_array(),
                p99_us: p99.to_array(),
                p999_us: p999.to_array(),
                loss_median: l.median,
                cdf_us: cdf(&merged),
                runs_detail: runs
                    .iter()
                    .map(|(p, q, n)| LatencyRun {
                        sent: p.sent,
                        verified: p.received,
                        latency_measured: *n,
                        p50_p99_p999_us: *q,
                        auth_failed: p.auth_failed,
                        duplicates: p.duplicates,
                        other_srtp_errors: p.other_errors,
                        generator_kept_up: p.outcome != Outcome::GeneratorLimited,
                    })
                    .collect(),
            });
        }
    }
    if let Some(p) = &a.json {
        report::write(p, &rows)?;
    }
    Ok(())
}
