//! `relay-bench baseline …` and `relay-bench compare`: edgerelay against what its users would
//! run instead, on the same machine, in the same run.
//!
//! Every system is measured `--runs` times; the runs of different systems are interleaved
//! (run 1 of each, then run 2 of each, …) so a noisy minute on the shared machine hits all of
//! them alike. Each figure is reported as median, min and max over the runs. Ratios are taken
//! per run (run i of edgerelay over run i of the baseline) and summarised the same way.
//!
//! Beside packets per second, every relay's CPU time per relayed packet is reported: the load
//! tools share the machine's CPUs with the relay, so pps alone mixes the relay's cost with the
//! tools' cost, while CPU µs per packet compares fairly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use relay::config::Backend;
use serde::Serialize;

use crate::coturn;
use crate::crypto;
use crate::edgerelay::Target;
use crate::load::{self, Found, SearchArgs};
use crate::machine;
use crate::procs::{self, Cpus};
use crate::report::{
    self, CompareReport, CryptoFigure, Environment, Goal, Measured, Ratio, SingleRatio, System, SystemSummary, Systems,
    VersusRatio,
};
use crate::rtpengine::{Mode, Rtpengine};
use crate::stats::{ratio, Stat};

/// Options shared by the SRTP relay baselines.
#[derive(Clone, Debug, clap::Args)]
pub struct RelayArgs {
    /// Runs per system; each figure is the median, with min and max [default: 1 for
    /// `baseline`, 5 for `compare`].
    #[arg(long)]
    pub runs: Option<usize>,
    /// RTP packet size in bytes, before the SRTP tag.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// edgerelay backends to measure beside the baseline, fan-out 1. The XDP backend runs in
    /// network namespaces the bench creates (198.18.0.0/15).
    #[arg(long, value_delimiter = ',', default_value = "socket,xdp")]
    pub backends: Vec<Backend>,
    /// Measure the baseline alone, without relayd.
    #[arg(long)]
    pub baseline_only: bool,
    /// rtpengine mode: `recrypt` (the comparison) or `passthrough` (same suite on both legs,
    /// forwarded untouched; verified as such).
    #[arg(long, value_enum, default_value = "recrypt")]
    pub rtpengine_mode: Mode,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    pub relayd: Option<PathBuf>,
    /// Install missing Debian packages with apt-get (needs root).
    #[arg(long)]
    pub install: bool,
    #[command(flatten)]
    pub search: SearchArgs,
}

/// `baseline coturn` options.
#[derive(Clone, Debug, clap::Args)]
pub struct CoturnArgs {
    /// Runs (each figure is the median, with min and max).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// Messages each client sends (`turnutils_uclient -n`).
    #[arg(long, default_value_t = 60_000)]
    pub messages: u64,
    /// Clients (`turnutils_uclient -m`).
    #[arg(long, default_value_t = 1)]
    pub clients: u32,
    /// Install coturn with apt-get if it is missing (needs root).
    #[arg(long)]
    pub install: bool,
}

/// `baseline crypto` options.
#[derive(Clone, Debug, clap::Args)]
pub struct CryptoArgs {
    /// Runs (each figure is the median, with min and max).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Packet sizes.
    #[arg(long, value_delimiter = ',', default_value = "200,1200")]
    pub sizes: Vec<usize>,
    /// CPU seconds per in-process measurement (OpenSSL runs whole seconds, at least 1).
    #[arg(long, default_value_t = 0.5)]
    pub secs: f64,
    /// Skip `openssl speed`.
    #[arg(long)]
    pub no_openssl: bool,
}

impl System {
    fn new(name: &str, note: &str) -> Self {
        Self {
            name: name.into(),
            note: note.into(),
            pps: vec![],
            cpu_us: vec![],
            stopped_by: vec![],
            searches: vec![],
            error: None,
        }
    }

    fn record(&mut self, found: Result<Found>) {
        match found {
            Ok(f) => {
                if let Some(b) = &f.best {
                    self.pps.push(b.relayed_pps);
                    self.cpu_us.push(b.cpu_us_per_pkt.unwrap_or(f64::NAN));
                } else {
                    self.pps.push(0.0);
                    self.cpu_us.push(f64::NAN);
                }
                self.stopped_by.push(f.stopped_by.into());
                self.searches.push(f);
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: anyhow::Error) {
        eprintln!("  {} failed: {e:#}", self.name);
        self.error.get_or_insert(format!("{e:#}"));
    }

    fn summary(&self) -> SystemSummary {
        SystemSummary {
            name: self.name.clone(),
            note: self.note.clone(),
            pps: Stat::of(&self.pps),
            cpu_us_per_pkt: Stat::of(&self.cpu_us),
            stopped_by: self.stopped_by.clone(),
            error: self.error.clone(),
        }
    }
}

const RTPENGINE_NOTE: &str = "userspace (--table=-1), SRTP AES_CM_128_HMAC_SHA1_80 in, AES_CM_128_HMAC_SHA1_32 out: \
    real decrypt + re-encrypt, checked at the receiver; fresh call per probe";

const RTPENGINE_PASSTHROUGH_NOTE: &str = "userspace (--table=-1), AES_CM_128_HMAC_SHA1_80 on both legs: A's key \
    copied to B, ciphertext forwarded untouched (checked at the receiver), NO re-encryption; fresh call per probe";

fn edgerelay_note(b: Backend) -> String {
    match b {
        Backend::Xdp => "relayd XDP backend (AF_XDP copy mode, veth in namespaces), 1 worker, fan-out 1, SRTP_80 \
            decrypt + re-encrypt, pre-protected packets from an AF_XDP generator, every packet captured and verified \
            at the receiver"
            .into(),
        _ => "relayd socket backend on loopback, 1 worker, fan-out 1, SRTP_80 decrypt + re-encrypt, every packet \
            verified at the receiver"
            .into(),
    }
}

fn backend_name(b: Backend) -> String {
    format!("edgerelay-{}", format!("{b:?}").to_lowercase())
}

/// Runs rtpengine and the edgerelay backends side by side: `runs` interleaved rounds of a
/// max-loss-free-rate search each.
pub fn srtp_relays(a: &RelayArgs, runs: usize, cpus: Cpus) -> Result<Vec<System>> {
    let rtpengine = procs::require("rtpengine", "rtpengine-daemon", a.install)?;
    let relayd = crate::relayd::relayd_path(&a.relayd)?;
    let backends: &[Backend] = if a.baseline_only { &[] } else { &a.backends };
    let (name, note) = match a.rtpengine_mode {
        Mode::Recrypt => ("rtpengine", RTPENGINE_NOTE),
        Mode::Passthrough => ("rtpengine-passthrough", RTPENGINE_PASSTHROUGH_NOTE),
    };
    let mut systems = vec![System::new(name, note)];
    systems.extend(backends.iter().map(|&b| System::new(&backend_name(b), &edgerelay_note(b))));
    for run in 1..=runs {
        procs::check_interrupted()?;
        eprintln!("run {run}/{runs}: {name}");
        let found = Rtpengine::start(&rtpengine, cpus, a.rtpengine_mode)
            .and_then(|mut r| load::search(&a.search, |rate| r.probe(rate, a.size, &a.search, cpus)));
        systems[0].record(found);
        for (i, &b) in backends.iter().enumerate() {
            procs::check_interrupted()?;
            eprintln!("run {run}/{runs}: {}", backend_name(b));
            let found = Target::start(&relayd, b, cpus, a.size)
                .and_then(|mut t| load::search(&a.search, |rate| t.probe(rate, a.size, &a.search, cpus)));
            systems[i + 1].record(found);
        }
    }
    Ok(systems)
}

/// Runs coturn `runs` times.
pub fn coturn_runs(a: &CoturnArgs, cpus: Cpus) -> Result<System> {
    let server = procs::require("turnserver", "coturn", a.install)?;
    let peer = procs::require("turnutils_peer", "coturn", a.install)?;
    let uclient = procs::require("turnutils_uclient", "coturn", a.install)?;
    let bins = coturn::Bins { server: &server, peer: &peer, uclient: &uclient };
    let mut sys = System::new(
        "coturn",
        "TURN relay (turnutils_uclient through an allocation to turnutils_peer, echoed): NO re-encryption, \
         payload forwarded as is; pps limited by the load client on the shared CPUs",
    );
    for run in 1..=a.runs {
        procs::check_interrupted()?;
        eprintln!("run {run}/{}: coturn", a.runs);
        match coturn::run(&bins, cpus, a.messages, a.size, a.clients) {
            Ok(r) => {
                eprintln!(
                    "    relayed {:.0} pps over {:.1} s, turnserver {:.2} µs/pkt, loss {:.2}%",
                    r.relayed_pps,
                    r.window_secs,
                    r.cpu_us_per_pkt,
                    r.loss * 100.0
                );
                sys.pps.push(r.relayed_pps);
                sys.cpu_us.push(r.cpu_us_per_pkt);
            }
            Err(e) => sys.fail(e),
        }
    }
    Ok(sys)
}

/// Crypto figures over `runs` runs, keyed by (source, what, size).
pub fn crypto_runs(a: &CryptoArgs) -> Result<Vec<(crypto::Figure, Stat)>> {
    let openssl = if a.no_openssl {
        None
    } else {
        Some(procs::find_program("openssl").ok_or_else(|| {
            anyhow::anyhow!("openssl is missing: {} (or pass --no-openssl)", procs::install_command("openssl"))
        })?)
    };
    let mut all: Vec<Vec<crypto::Figure>> = Vec::new();
    for run in 1..=a.runs {
        procs::check_interrupted()?;
        eprintln!("run {run}/{}: crypto", a.runs);
        all.push(crypto::measure(&a.sizes, a.secs, openssl.as_deref())?);
    }
    let first = all.first().cloned().unwrap_or_default();
    Ok(first
        .into_iter()
        .filter_map(|f| {
            let v: Vec<f64> =
                all.iter().filter_map(|r| crypto::find(r, f.source, f.what, f.size)).map(|x| x.us_per_pkt).collect();
            Stat::of(&v).map(|s| (f, s))
        })
        .collect())
}

fn print_systems(systems: &[System]) {
    println!("{:<18} {:>32} {:>30}  note", "system", "relayed pps median [min–max]", "CPU µs/pkt median [min–max]");
    for s in systems {
        let pps = Stat::fmt_or_dash(Stat::of(&s.pps), 0);
        let cpu = Stat::fmt_or_dash(Stat::of(&s.cpu_us), 2);
        println!(
            "{:<18} {:>32} {:>30}  {}",
            s.name,
            pps,
            cpu,
            s.error.as_deref().map_or(s.note.clone(), |e| format!("FAILED: {e}"))
        );
    }
}

fn print_ratios(systems: &[System], base: &str) {
    let Some(b) = systems.iter().find(|s| s.name == base) else { return };
    for s in systems.iter().filter(|s| s.name.starts_with("edgerelay")) {
        if let (Some(p), Some(c)) = (ratio(&s.pps, &b.pps), ratio(&b.cpu_us, &s.cpu_us)) {
            println!("{} / {base}: {} × the pps, {} × less CPU per packet", s.name, p.fmt(2), c.fmt(2));
        }
    }
}

fn write_json<T: Serialize>(path: Option<&Path>, report: &T) -> Result<()> {
    match path {
        Some(p) => report::write(p, report),
        None => Ok(()),
    }
}

fn check(systems: &[System]) -> Result<()> {
    match systems.iter().find(|s| s.error.is_some()) {
        Some(s) => bail!("{} failed: {}", s.name, s.error.as_deref().unwrap_or_default()),
        None => Ok(()),
    }
}

/// `baseline rtpengine`.
pub fn run_rtpengine(a: RelayArgs, json_out: Option<PathBuf>) -> Result<()> {
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    let systems = srtp_relays(&a, a.runs.unwrap_or(1), cpus)?;
    print_systems(&systems);
    print_ratios(&systems, &systems[0].name);
    let systems = Systems { systems };
    write_json(json_out.as_deref(), &systems)?;
    check(&systems.systems)
}

/// `baseline coturn`.
pub fn run_coturn(a: CoturnArgs, json_out: Option<PathBuf>) -> Result<()> {
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    let sys = coturn_runs(&a, cpus)?;
    print_systems(std::slice::from_ref(&sys));
    let systems = Systems { systems: vec![sys] };
    write_json(json_out.as_deref(), &systems)?;
    check(&systems.systems)
}

/// `baseline crypto`.
pub fn run_crypto(a: CryptoArgs, json_out: Option<PathBuf>) -> Result<()> {
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    let figs = crypto_runs(&a)?;
    println!("{:<10} {:<28} {:>5}  µs per decrypt + re-encrypt, median [min–max]", "source", "primitives", "size");
    for (f, s) in &figs {
        println!("{:<10} {:<28} {:>5}  {}", f.source, f.what, f.size, s.fmt(3));
    }
    write_json(json_out.as_deref(), &crypto_json(&figs))
}

fn crypto_json(figs: &[(crypto::Figure, Stat)]) -> Vec<CryptoFigure> {
    figs.iter()
        .map(|(f, s)| CryptoFigure { source: f.source.into(), what: f.what.into(), size: f.size, us_per_pkt: *s })
        .collect()
}

/// `compare` options.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Messages per coturn client per run.
    #[arg(long, default_value_t = 60_000)]
    pub coturn_messages: u64,
    /// coturn load clients.
    #[arg(long, default_value_t = 1)]
    pub coturn_clients: u32,
    /// Crypto packet sizes.
    #[arg(long, value_delimiter = ',', default_value = "200,1200")]
    pub crypto_sizes: Vec<usize>,
    /// Output directory for report.json and report.md.
    #[arg(long, default_value = "target/bench-report")]
    pub out: PathBuf,
}

/// The machine and versions, for the report.
fn environment() -> Environment {
    let cpus = Cpus::detect();
    Environment {
        cpus: cpus.relay + 1,
        relay_cpu: cpus.relay,
        load_cpu: cpus.load,
        cpu_model: machine::cpu_model(),
        kernel: machine::first_line("uname", &["-r"]),
        loadavg_at_start: machine::loadavg(),
        rtpengine: procs::find_program("rtpengine").map(|p| machine::first_line(&p.to_string_lossy(), &["--version"])),
        coturn: procs::find_program("turnserver").map(|p| machine::first_line(&p.to_string_lossy(), &["--version"])),
        openssl: procs::find_program("openssl").and_then(|p| crypto::openssl_version(&p).ok()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    }
}

/// `compare`: every baseline side by side; JSON and Markdown in `--out`.
pub fn run_compare(a: CompareArgs) -> Result<()> {
    // Before pinning: the CPU count follows this thread's affinity.
    let cpus = Cpus::detect();
    let env = environment();
    cpus.pin_load_thread();
    let runs = a.relay.runs.unwrap_or(5);
    if runs < 5 {
        eprintln!("note: {runs} runs; the report's medians need at least 5 to mean much");
    }
    let mut systems = srtp_relays(&a.relay, runs, cpus)?;
    let coturn_args = CoturnArgs {
        runs,
        size: a.relay.size,
        messages: a.coturn_messages,
        clients: a.coturn_clients,
        install: a.relay.install,
    };
    systems.push(coturn_runs(&coturn_args, cpus)?);
    let crypto = crypto_runs(&CryptoArgs { runs, sizes: a.crypto_sizes.clone(), secs: 0.5, no_openssl: false })?;
    let loadavg_end = machine::loadavg();

    let get = |n: &str| systems.iter().find(|s| s.name == n);
    let mut ratios = Vec::new();
    for er in systems.iter().filter(|s| s.name.starts_with("edgerelay")) {
        for base in ["rtpengine", "coturn"] {
            if let Some(b) = get(base) {
                ratios.push(Ratio::Versus(VersusRatio {
                    what: format!("{} / {base}", er.name),
                    pps_ratio: ratio(&er.pps, &b.pps),
                    cpu_per_pkt_ratio_base_over_edgerelay: ratio(&b.cpu_us, &er.cpu_us),
                }));
            }
        }
        // The crypto ceiling: the raw primitives' cost over relayd's whole per-packet cost.
        let raw = crypto
            .iter()
            .find(|(f, _)| f.source == "raw" && f.what.starts_with("AES-128-CTR") && f.size == a.relay.size);
        if let Some((_, raw)) = raw {
            let raw_runs = vec![raw.median; er.cpu_us.len()];
            ratios.push(Ratio::Single(SingleRatio {
                what: format!("raw crypto / {} CPU per packet (share of the packet cost that is crypto)", er.name),
                ratio: ratio(&raw_runs, &er.cpu_us).map(Measured::Runs),
            }));
        }
    }
    for what in ["AES-128-CTR + HMAC-SHA1-80", "AES-128-GCM"] {
        for &size in &a.crypto_sizes {
            let f = |src: &str| {
                crypto.iter().find(|(f, _)| f.source == src && f.what == what && f.size == size).map(|(_, s)| s.median)
            };
            if let (Some(raw), Some(eng)) = (f("raw"), f("edgerelay")) {
                ratios.push(Ratio::Single(SingleRatio {
                    what: format!("raw / edgerelay SRTP code, {what}, {size} B (engine efficiency)"),
                    ratio: Some(Measured::Value(raw / eng)),
                }));
            }
        }
    }

    // Issue 5's goals, measured here: pps ratios per run against the target.
    let mut goals = Vec::new();
    let floor = |s: &System| s.stopped_by.iter().any(|w| w == "generator_limited" || w == "max_pps");
    for (num, den, target, what) in [
        ("edgerelay-xdp", "edgerelay-socket", 2.0, "XDP backend vs socket backend, loss-free pkt/s"),
        ("edgerelay-xdp", "rtpengine", 4.0, "edgerelay (XDP) vs rtpengine userspace recrypt, fan-out 1, pkt/s"),
        ("edgerelay-xdp", "coturn", 2.0, "edgerelay (XDP) vs coturn relay, pkt/s"),
    ] {
        if let (Some(n), Some(d)) = (get(num), get(den)) {
            let r = ratio(&n.pps, &d.pps);
            goals.push(Goal {
                goal: what.into(),
                target,
                ratio: r.map(Measured::Runs),
                met: r.map(|r| r.median >= target),
                floor: floor(n),
            });
        }
    }
    let size = a.relay.size;
    let srtp = |src: &str| {
        crypto
            .iter()
            .find(|(f, _)| f.source == src && f.what.starts_with("AES-128-CTR") && f.size == size)
            .map(|(_, s)| s.median)
    };
    if let (Some(raw), Some(eng)) = (srtp("raw"), srtp("edgerelay")) {
        goals.push(Goal {
            goal: format!("engine vs raw crypto cost (raw ÷ edgerelay SRTP code, AES-CM + HMAC-SHA1-80, {size} B)"),
            target: 0.85,
            ratio: Some(Measured::Value(raw / eng)),
            met: Some(raw / eng >= 0.85),
            floor: false,
        });
    }

    let report = CompareReport {
        goals,
        environment: env,
        loadavg_at_end: loadavg_end,
        size: a.relay.size,
        search: a.relay.search,
        systems: systems.iter().map(System::summary).collect(),
        ratios,
        crypto: crypto_json(&crypto),
        runs_detail: systems,
    };
    std::fs::create_dir_all(&a.out)?;
    report::write(&a.out.join("report.json"), &report)?;
    let md = markdown(&report);
    std::fs::write(a.out.join("report.md"), &md)?;
    println!("{md}");
    eprintln!("wrote {} and {}", a.out.join("report.json").display(), a.out.join("report.md").display());
    check(&report.runs_detail)
}

fn markdown(report: &CompareReport) -> String {
    let env = &report.environment;
    let mut md = String::from("# edgerelay vs baselines\n\n");
    md += &format!("Command: `{}`\n\n", env.command);
    md += &format!(
        "Machine: {} × {}, kernel {}; load average at start `{}`, at end `{}`. rtpengine {}, coturn {}, {}.\n\n",
        env.cpus,
        env.cpu_model,
        env.kernel,
        env.loadavg_at_start,
        report.loadavg_at_end,
        env.rtpengine.as_deref().unwrap_or("-"),
        env.coturn.as_deref().unwrap_or("-"),
        env.openssl.as_deref().unwrap_or("-"),
    );
    md += &format!(
        "RTP packets of {} bytes. Each figure: median [min–max] over the runs. SRTP relays: maximum loss-free rate \
         (≤ {}% loss) found by search; relay pinned to one CPU, load tools on the other.\n\n",
        report.size,
        report.search.max_loss * 100.0
    );
    md += "| system | relayed pkt/s | relay CPU µs per packet | search stopped by | what it does |\n|---|---|---|---|---|\n";
    for s in &report.runs_detail {
        let pps = Stat::fmt_or_dash(Stat::of(&s.pps), 0);
        let cpu = Stat::fmt_or_dash(Stat::of(&s.cpu_us), 2);
        let mut stops = s.stopped_by.clone();
        stops.sort();
        stops.dedup();
        if stops.is_empty() {
            stops.push("n/a".into());
        }
        let note = s.error.as_deref().map_or(s.note.clone(), |e| format!("**FAILED**: {e}"));
        md += &format!("| {} | {pps} | {cpu} | {} | {note} |\n", s.name, stops.join(", "));
    }
    md += "\n## Ratios\n\n| ratio | median [min–max] |\n|---|---|\n";
    let fmt = |v: Option<Measured>| -> String {
        match v {
            Some(Measured::Runs(s)) => s.fmt(2),
            Some(Measured::Value(x)) => format!("{x:.2}"),
            None => "-".into(),
        }
    };
    for r in &report.ratios {
        match r {
            Ratio::Versus(r) => {
                let what = &r.what;
                md += &format!("| {what}: pkt/s | {} |\n", fmt(r.pps_ratio.map(Measured::Runs)));
                md += &format!(
                    "| {what}: CPU per packet, baseline ÷ edgerelay | {} |\n",
                    fmt(r.cpu_per_pkt_ratio_base_over_edgerelay.map(Measured::Runs))
                );
            }
            Ratio::Single(r) => md += &format!("| {} | {} |\n", r.what, fmt(r.ratio)),
        }
    }
    md += "\n## Goals (issue 5)\n\n| goal | target | measured | met |\n|---|---|---|---|\n";
    for g in &report.goals {
        let measured = match g.ratio {
            Some(Measured::Runs(s)) => format!("{:.2}× [{:.2}–{:.2}]", s.median, s.min, s.max),
            Some(Measured::Value(x)) => format!("{:.0}%", x * 100.0),
            None => "-".into(),
        };
        let met = match (g.met, g.floor) {
            (Some(true), _) => "yes",
            (Some(false), true) => "no (a floor: the generator or --max-pps limited edgerelay)",
            (Some(false), false) => "no",
            (None, _) => "-",
        };
        let target = g.target;
        let target = if target < 1.0 { format!("≥ {:.0}%", target * 100.0) } else { format!("≥ {target}×") };
        md += &format!("| {} | {target} | {measured} | {met} |\n", g.goal);
    }
    md += "\n## Crypto per packet (decrypt + re-encrypt)\n\n| source | primitives | size | µs per packet |\n|---|---|---|---|\n";
    for f in &report.crypto {
        md += &format!("| {} | {} | {} | {} |\n", f.source, f.what, f.size, f.us_per_pkt.fmt(3));
    }
    md += "\nCPU per packet is the relay process's own `utime + stime`. On loopback and veth the kernel's receive \
           path up to the relay's socket (or AF_XDP ring) runs in the sender's context and is charged to the load \
           tools, for every system alike. A `generator_limited` search stopped because the sender could not keep \
           the rate: that figure is a floor, not the relay's limit.\n";
    md += "\ncoturn does no re-encryption: its figures are a forwarding cost, not an SRTP relay cost. \
           `openssl` rows are two AES-128-CTR plus two HMAC-SHA1 passes (or two AES-128-GCM passes) over the whole \
           packet from `openssl speed -mr -bytes N`.\n";
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_of_the_committed_report_is_the_committed_markdown() {
        // The committed file is the generated Markdown after a hand-written preamble.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks");
        let report: CompareReport = report::read(&dir.join("baselines.json")).unwrap().expect("baselines.json");
        let md = std::fs::read_to_string(dir.join("baselines.md")).unwrap();
        let generated = markdown(&report);
        assert!(generated.starts_with("# edgerelay vs baselines\n") && md.ends_with(&generated), "{generated}");
    }
}
