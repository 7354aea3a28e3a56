//! The throughput scenario: relayd's maximum loss-free rate, found by search, per backend and
//! configuration, with every relayed packet verified at its receiver.
//!
//! Every run gets a fresh [`Rig`] (namespaces, relayd, members; see [`crate::rig`] for the
//! probe and its verification); then [`load::search`] probes rates. `--size`, `--profile`,
//! `--rooms`, `--fanout` and `--generator` take lists, and every combination is a
//! configuration. The backends' runs are interleaved (run 1 of each, then run 2, …), so a
//! noisy minute on the shared machine hits them alike; each figure is the median of the
//! runs with min and max, and the ratio against the socket backend is taken per run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use relay::config::Backend;
use relay::srtp::Profile;

use crate::load::{self, SearchArgs};
use crate::procs::{check_interrupted, Cpus};
use crate::progress::Progress;
use crate::relayd;
use crate::report::{self, ThroughputRow, ThroughputRun};
use crate::rig::generator;
use crate::rig::napi::Napi;
use crate::rig::{Rig, Shape, MAX_SIZE, MIN_SIZE};
use crate::stats::Stat;

/// `relay-bench throughput` options.
#[derive(clap::Args)]
pub struct Args {
    /// Backends to compare.
    #[arg(long, value_delimiter = ',', default_value = "socket,xdp")]
    backends: Vec<Backend>,
    /// Receivers per room.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    fanout: Vec<usize>,
    /// Rooms, each with one sender and `fanout` receivers; the packets of all senders are
    /// interleaved (more than one room needs the AF_XDP generator).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    rooms: Vec<usize>,
    /// RTP packet sizes before the SRTP tag.
    #[arg(long, value_delimiter = ',', default_value = "1200")]
    size: Vec<usize>,
    /// SRTP profiles.
    #[arg(long, value_delimiter = ',', default_value = "AES_CM_128_HMAC_SHA1_80")]
    profile: Vec<Profile>,
    /// Runs per configuration (the median is reported); the backends' runs are interleaved.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Traffic generator: AF_XDP frames on the clients' veth (`auto` falls back to the UDP
    /// socket if AF_XDP is unavailable) or a UDP socket with sendmmsg.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    generator: Vec<generator::Kind>,
    /// Where the veths' receive work runs (see `threaded_napi`): `softirq` (veth's default:
    /// on the transmitting CPU, so relayd's input is processed on the load CPU and its
    /// receivers' input on the relay CPU), `threaded` (NAPI threads pinned per side: relayd's
    /// on the relay CPU, the receivers' on the load CPU) or `threaded-rt` (the same, SCHED_FIFO).
    #[arg(long, value_enum, default_value = "softirq")]
    napi: Napi,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    relayd: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    search: SearchArgs,
}

/// One backend's runs of one shape.
#[derive(Default)]
struct Runs {
    /// Loss-free input rate per run (`None`: the search found no passing rate).
    in_pps: Vec<Option<f64>>,
    cpu_us: Vec<f64>,
    stopped_by: Vec<&'static str>,
    details: Vec<ThroughputRun>,
}

/// Runs the scenario and prints a table.
pub fn run(a: Args) -> Result<()> {
    let relayd = relayd::relayd_path(&a.relayd)?;
    // Before pinning: the CPU count follows this thread's affinity.
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    if a.rooms.contains(&0) || a.fanout.contains(&0) || a.runs == 0 || a.backends.is_empty() {
        bail!("--rooms, --fanout and --runs must be at least 1, and --backends not empty");
    }
    if a.rooms.iter().any(|&r| r > 1) && a.generator.contains(&generator::Kind::Socket) {
        bail!("more than one room needs the AF_XDP generator (--generator afxdp or auto)");
    }
    if a.size.iter().any(|&s| !(MIN_SIZE..=MAX_SIZE).contains(&s)) {
        bail!("--size must be between {MIN_SIZE} and {MAX_SIZE} bytes");
    }
    if !(a.search.probe_secs > 0.0 && a.search.start_pps >= 1.0 && a.search.max_pps >= a.search.start_pps) {
        bail!("--probe-secs must be positive and --start-pps at least 1 and at most --max-pps");
    }
    let mut shapes = Vec::new();
    for &kind in &a.generator {
        for &profile in &a.profile {
            for &size in &a.size {
                for &rooms in &a.rooms {
                    for &fanout in &a.fanout {
                        shapes.push(Shape { kind, profile, size, rooms, fanout });
                    }
                }
            }
        }
    }
    let progress = Progress::new((shapes.len() * a.backends.len() * a.runs) as u64, "throughput");
    let mut rows = Vec::new();
    for shape in shapes {
        rows.extend(configuration(&a, &relayd, cpus, shape, &progress)?);
    }
    if let Some(p) = &a.json {
        report::write(p, &rows)?;
    }
    Ok(())
}

/// `runs` searches of one shape per backend, the backends' runs interleaved (run 1 of each,
/// then run 2, …), each in a fresh topology with a fresh relayd; prints the medians and
/// returns one report row per backend.
fn configuration(a: &Args, relayd: &Path, cpus: Cpus, shape: Shape, progress: &Progress) -> Result<Vec<ThroughputRow>> {
    let Shape { kind, profile, size, rooms, fanout } = shape;
    let mut runs: Vec<Runs> = a.backends.iter().map(|_| Runs::default()).collect();
    let mut gen_name = "";
    for i in 0..a.runs {
        for (b, &backend) in a.backends.iter().enumerate() {
            check_interrupted()?;
            progress.step(format!(
                "{backend:?} {} {size} B, {rooms} room(s) × fan-out {fanout}, {kind:?} generator, run {}",
                profile.name(),
                i + 1
            ));
            let mut rig = Rig::start(relayd, cpus, shape, backend, a.napi)?;
            gen_name = rig.generator_name();
            let mut details = Vec::new();
            let found = load::search(&a.search, |rate| rig.probe(rate, &a.search, &mut details))?;
            drop(rig);
            let r = &mut runs[b];
            let best = found.best.as_ref();
            r.in_pps.push(best.map(|p| p.offered_pps));
            r.cpu_us.push(best.and_then(|p| p.cpu_us_per_pkt).unwrap_or(f64::NAN));
            r.stopped_by.push(found.stopped_by);
            progress.inc();
            progress.note(&format!(
                "  {backend:?} run {}: loss-free {} pkt/s in, stopped by {}",
                i + 1,
                best.map_or("-".into(), |p| format!("{:.0}", p.offered_pps)),
                found.stopped_by
            ));
            r.details.push(ThroughputRun { found, probe_details: details });
        }
    }
    let socket = a.backends.iter().position(|&b| b == Backend::Socket);
    let mut rows = Vec::new();
    for (b, &backend) in a.backends.iter().enumerate() {
        let runs_detail = std::mem::take(&mut runs[b].details);
        let r = &runs[b];
        let name = format!("{backend:?}").to_lowercase();
        let found: Vec<f64> = r.in_pps.iter().flatten().copied().collect();
        let pps = Stat::of(&found);
        let cpu = Stat::of(&r.cpu_us);
        // Per-run ratios against the socket backend's run of the same index.
        let ratio = socket.filter(|&s| s != b).and_then(|s| {
            let v: Vec<f64> = r.in_pps.iter().zip(&runs[s].in_pps).filter_map(|(x, y)| Some((*x)? / (*y)?)).collect();
            Stat::of(&v)
        });
        let fmt = Stat::fmt_or_dash;
        progress.out(&format!(
            "{name:<7} {} {size} B rooms {rooms} fanout {fanout} gen {gen_name:<6}: loss-free {} pkt/s in ({} out), relayd {} µs/pkt{}, {} of {} runs found a rate",
            profile.name(),
            fmt(pps, 0),
            pps.map_or("-".into(), |s| format!("{:.0}", s.median * fanout as f64)),
            fmt(cpu, 2),
            ratio.map_or(String::new(), |s| format!(", ÷ socket {}", fmt(Some(s), 2))),
            found.len(),
            a.runs
        ));
        let row = ThroughputRow {
            backend: name,
            generator: gen_name.into(),
            rooms,
            fanout,
            size,
            profile: profile.name().into(),
            runs: a.runs,
            valid_runs: found.len(),
            max_loss: a.search.max_loss,
            probe_secs: a.search.probe_secs,
            napi: clap::ValueEnum::to_possible_value(&a.napi).map(|v| v.get_name().to_owned()),
            stopped_by: r.stopped_by.iter().map(|&s| s.to_owned()).collect(),
            runs_detail,
            in_pps_median: pps.map(|s| s.median),
            in_pps_min: pps.map(|s| s.min),
            in_pps_max: pps.map(|s| s.max),
            out_pps_median: pps.map(|s| s.median * fanout as f64),
            relayd_cpu_us_per_pkt_median: cpu.map(|s| s.median),
            relayd_cpu_us_per_pkt_min: cpu.map(|s| s.min),
            relayd_cpu_us_per_pkt_max: cpu.map(|s| s.max),
            ratio_vs_socket: ratio,
        };
        rows.push(row);
    }
    Ok(rows)
}
