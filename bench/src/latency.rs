//! The latency scenario: one-way latency p50, p99 and p99.9 at fractions (default 10%, 50%,
//! 90%) of the maximum loss-free rate, per backend.
//!
//! It runs the [`crate::flood`] stream without the flood: in the throughput topology, one
//! paced sender stamps its send time into every packet and one receiver verifies each
//! packet's SRTP tag and records the latency in an hdrhistogram (µs, 3 significant digits).
//! Sender and receiver share a clock (one process), so the figure is true one-way latency
//! through relayd, the veth pair and both kernels.
//!
//! The maximum loss-free rate is `--max-pps` if given, else found per backend by a search
//! over short probes: double from `--start-pps` while a probe passes (loss ≤ 0.1% and the
//! sender kept at least 97% of the rate), then bisect four times. A search that stops
//! because the sender could not keep up says so: the rate is then the load generator's, and
//! the latencies are measured below it all the same. The XDP backend's per-source packet
//! limit is off here (one sender streams far above its 20,000 pkt/s default).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use relay::config::Backend;

use crate::edgerelay;
use crate::flood::{median, new_hist, run_once, Params, Run};
use crate::procs::{self, Cpus};
use crate::progress::Progress;

/// Highest loss counted as loss-free.
const MAX_LOSS: f64 = 0.001;
/// The sender must send at least this share of the asked rate for a probe to count.
const KEPT_UP: f64 = 0.97;
/// Probe length, in seconds.
const PROBE_SECS: f64 = 1.5;

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
    #[arg(long, default_value_t = 5_000.0)]
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

fn loss(r: &Run) -> f64 {
    if r.total_sent == 0 {
        1.0
    } else {
        1.0 - r.total_ok.min(r.total_sent) as f64 / r.total_sent as f64
    }
}

/// Whether a probe at `rate` passed, and whether the sender kept up.
fn probe(
    a: &Args,
    relayd: &std::path::Path,
    cpus: Cpus,
    backend: Backend,
    rate: f64,
    progress: &Progress,
) -> Result<(bool, bool)> {
    progress.step(format!("searching {backend:?}: {rate:.0} pkt/s"));
    let p = Params { rate, size: a.size, seconds: PROBE_SECS, flood: false, kernel_limits: false };
    let r = run_once(&p, relayd, cpus, backend)?;
    let kept_up = r.total_sent as f64 >= KEPT_UP * rate * PROBE_SECS;
    let pass = kept_up && loss(&r) <= MAX_LOSS;
    progress.note(&format!(
        "  search {backend:?} {rate:.0} pkt/s: sent {}, verified {}, loss {:.3}%{}",
        r.total_sent,
        r.total_ok,
        loss(&r) * 100.0,
        if kept_up { "" } else { " (the sender fell behind)" }
    ));
    Ok((pass, kept_up))
}

/// The highest passing rate, and whether the sender was what stopped the search.
fn search(
    a: &Args,
    relayd: &std::path::Path,
    cpus: Cpus,
    backend: Backend,
    progress: &Progress,
) -> Result<(f64, bool)> {
    let (mut lo, mut hi) = (0.0, a.start_pps);
    let mut generator_limited = loop {
        procs::check_interrupted()?;
        let (pass, kept_up) = probe(a, relayd, cpus, backend, hi, progress)?;
        if !pass {
            break !kept_up;
        }
        lo = hi;
        hi *= 2.0;
        if hi > 10_000_000.0 {
            bail!("the search passed 10M pkt/s: the receiver is not counting what it should");
        }
    };
    for _ in 0..4 {
        let mid = (lo + hi) / 2.0;
        let (pass, kept_up) = probe(a, relayd, cpus, backend, mid, progress)?;
        if pass {
            lo = mid;
        } else {
            // What stopped the search is what failed at the lowest failing rate.
            hi = mid;
            generator_limited = !kept_up;
        }
    }
    if lo == 0.0 {
        bail!("{backend:?}: no rate from {} pkt/s down passed", a.start_pps);
    }
    Ok((lo, generator_limited))
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
    let relayd = edgerelay::relayd_path(&a.relayd)?;
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    let mut rows = Vec::new();
    let progress = Progress::new((a.backends.len() * a.fractions.len() * a.runs) as u64, "latency");
    for &backend in &a.backends {
        let (max, limited) = match a.max_pps {
            Some(m) => (m, false),
            None => search(&a, &relayd, cpus, backend, &progress).context("searching the maximum loss-free rate")?,
        };
        let name = format!("{backend:?}").to_lowercase();
        progress.out(&format!(
            "{name}: maximum loss-free rate {max:.0} pkt/s{}",
            if limited { " (a floor: the sender could not go faster)" } else { "" }
        ));
        for &f in &a.fractions {
            let rate = max * f;
            let mut runs = Vec::new();
            for i in 0..a.runs {
                procs::check_interrupted()?;
                progress.step(format!("{backend:?} at {:.0}%, run {}", f * 100.0, i + 1));
                let p = Params { rate, size: a.size, seconds: a.seconds, flood: false, kernel_limits: false };
                runs.push(run_once(&p, &relayd, cpus, backend)?);
                progress.inc();
            }
            let q = |i: usize| median(runs.iter().map(|r| r.latency_all_us[i]).collect());
            let (p50, p99, p999) = (q(0), q(1), q(2));
            let l = median(runs.iter().map(loss).collect());
            let mut merged = new_hist()?;
            for r in &runs {
                merged.add(&r.latency_all).context("merging latency histograms")?;
            }
            progress.out(&format!(
                "{name:<7} {:>3.0}% ({rate:>7.0} pkt/s): p50 {:.0} µs [{:.0}–{:.0}], p99 {:.0} µs [{:.0}–{:.0}], p99.9 {:.0} µs [{:.0}–{:.0}], loss {:.3}%, {} runs",
                f * 100.0, p50.0, p50.1, p50.2, p99.0, p99.1, p99.2, p999.0, p999.1, p999.2, l.0 * 100.0, a.runs
            ));
            rows.push(serde_json::json!({
                "backend": name, "max_loss_free_pps": max, "max_generator_limited": limited, "fraction": f,
                "rate_pps": rate, "size": a.size, "seconds": a.seconds, "runs": a.runs,
                "p50_us": [p50.0, p50.1, p50.2], "p99_us": [p99.0, p99.1, p99.2], "p999_us": [p999.0, p999.1, p999.2],
                "loss_median": l.0,
                "cdf_us": cdf(&merged),
                "runs_detail": runs.iter().map(|r| serde_json::json!({
                    "sent": r.total_sent, "verified": r.total_ok, "p50_p99_p999_us": r.latency_all_us,
                    "auth_failed": r.auth_failed, "other_srtp_errors": r.other_errors,
                })).collect::<Vec<_>>(),
            }));
        }
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
