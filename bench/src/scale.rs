//! The join scenarios of issue 5:
//!
//! - **scale**: `--sessions` members in `--rooms` rooms, joined with a window of joins in
//!   flight ([`crate::joins`]), against relayd's socket backend on loopback or (`--backend
//!   xdp`) its XDP backend in a namespace across a veth pair, the joins coming from the
//!   clients' namespace. Reports the join time and rate, relayd's memory before and after
//!   (`VmRSS`, `VmHWM`, `RssAnon` from `/proc/PID/status`, and on XDP the kernel memory of
//!   relayd's BPF maps, from the `memlock` of their descriptors in `/proc/PID/fdinfo`) and
//!   per session, and checks the goal of at most 512 MiB at 100k sessions (user memory plus
//!   BPF maps). A run fails, with the reason, unless every
//!   join succeeded and relayd's own counts (`sessions`, `rooms` from its management socket)
//!   equal what was asked.
//! - **join-storm**: open-loop stages of paced joins at a rising rate against a fresh relayd;
//!   each stage is drained before the next. The storm stops at the first stage with a
//!   refusal or a timeout, and reports the rate sustained until then and what stopped it: a
//!   refusal's code (a configured quota is named as such), or for a timeout where the joins
//!   were lost (relayd's bounded control queue, its socket's receive buffer, or a late
//!   answer). Socket backend only: it has no join rate limit of its own; the XDP backend's
//!   per-source join token bucket is not exercised here.
//!
//! Each run starts its own relayd, so runs share no state. Figures are medians over the
//! runs with min and max ([`Stat`]). relayd is not pinned: the bench's client side is cheap
//! (see [`crate::joins`]) and runs on the same two CPUs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay::config::Backend;
use relay::proto::ErrorCode;
use serde::Serialize;
use serde_json::{json, Value};

use crate::joins::{ips_needed, Answer, Done, Joiner, Retry};
use crate::machine;
use crate::procs;
use crate::relayd::{self, Relayd, Size};
use crate::rig::topology::{self, Topology};
use crate::stats::Stat;

const MIB: f64 = 1024.0 * 1024.0;

/// `relay-bench scale` options.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct ScaleArgs {
    /// Sessions to hold at once.
    #[arg(long, default_value_t = 100_000)]
    pub sessions: u32,
    /// Rooms they are spread over (round-robin: `sessions / rooms` members each).
    #[arg(long, default_value_t = 25_000)]
    pub rooms: u32,
    /// Runs, each with a fresh relayd; each figure is the median with min and max.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// relayd worker threads (each holds a replica of the sessions).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// SSRCs each member declares (audio, then video).
    #[arg(long, default_value_t = 2)]
    pub ssrcs: usize,
    /// relayd's data plane: `socket` on loopback, or `xdp` (root) in a namespace with one
    /// veth queue per worker; its per-source join limit is off, as the joins come from a few
    /// source IPs.
    #[arg(long, value_enum, default_value = "socket")]
    #[serde(skip)]
    pub backend: Backend,
    /// The memory goal, MiB of relayd RSS (plus its BPF maps on XDP) with all sessions joined.
    #[arg(long, default_value_t = 512.0)]
    pub goal_mib: f64,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    #[serde(skip)]
    pub relayd: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// Write the report as Markdown here.
    #[arg(long)]
    #[serde(skip)]
    pub md: Option<PathBuf>,
}

/// `relay-bench join-storm` options.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct StormArgs {
    /// Runs, each with a fresh relayd.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Join rate of the first stage, joins/s.
    #[arg(long, default_value_t = 1000.0)]
    pub start_rate: f64,
    /// Each stage's rate over the previous one's.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Stop (as `max_rate`) once the rate would pass this.
    #[arg(long, default_value_t = 200_000.0)]
    pub max_rate: f64,
    /// Seconds of paced joins per stage.
    #[arg(long, default_value_t = 2.0)]
    pub stage_secs: f64,
    /// A join unanswered after this long has timed out (no retransmission).
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Members per room.
    #[arg(long, default_value_t = 4)]
    pub per_room: u32,
    /// relayd worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The app's session quota in relayd (reaching it stops the storm as `configured_limit`).
    #[arg(long, default_value_t = 4_000_000)]
    pub max_sessions: u32,
    /// Most joins in flight (capped below this process's open-files limit).
    #[arg(long, default_value_t = 16_384)]
    pub window: usize,
    /// SSRCs each member declares.
    #[arg(long, default_value_t = 2)]
    pub ssrcs: usize,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    #[serde(skip)]
    pub relayd: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// Write the report as Markdown here.
    #[arg(long)]
    #[serde(skip)]
    pub md: Option<PathBuf>,
}

/// Memory figures of a process, bytes, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss: u64,
    /// `VmHWM` (peak RSS).
    pub hwm: u64,
    /// `RssAnon` (heap and stacks, without the mapped binary).
    pub anon: u64,
}

/// Parses `VmRSS`, `VmHWM` and `RssAnon` (kB) from the text of `/proc/PID/status`.
pub fn parse_status_memory(status: &str) -> Result<Memory> {
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} line"))?;
        let kb: u64 = line[name.len()..]
            .trim_start_matches(':')
            .split_whitespace()
            .next()
            .with_context(|| format!("{name} has no value"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))?;
        Ok(kb * 1024)
    };
    Ok(Memory { rss: field("VmRSS")?, hwm: field("VmHWM")?, anon: field("RssAnon")? })
}

fn memory(pid: u32) -> Result<Memory> {
    parse_status_memory(&std::fs::read_to_string(format!("/proc/{pid}/status"))?)
}

/// The `memlock` (bytes) of a BPF map descriptor's `/proc/PID/fdinfo/FD` text; `None` for
/// any other descriptor. Since Linux 6.4 it is the map's actual memory use.
pub fn parse_fdinfo_map_memlock(fdinfo: &str) -> Option<u64> {
    if !fdinfo.lines().any(|l| l.starts_with("map_type:")) {
        return None;
    }
    fdinfo.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok())
}

/// Kernel memory of the BPF maps `pid` holds open, bytes.
fn bpf_maps_memory(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut total = 0;
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // A descriptor closed since the listing is simply gone.
        if let Ok(text) = std::fs::read_to_string(e?.path()) {
            total += parse_fdinfo_map_memlock(&text).unwrap_or(0);
        }
    }
    Ok(total)
}

/// First source IP of the members on the XDP backend; [`ips_needed`] addresses from it are
/// added to the clients' end of the veth.
const XDP_FIRST_SOURCE: [u8; 4] = [198, 18, 0, 100];

/// The namespaces for a scale run on the XDP backend: a veth with a queue per worker, and
/// the members' source addresses on the clients' end (inside its /24, so relayd reaches
/// them without a route).
fn xdp_topology(a: &ScaleArgs) -> Result<Topology> {
    let ips = ips_needed(a.sessions);
    if ips > 150 {
        bail!("--sessions {} needs {ips} source IPs; the XDP scale run has 150", a.sessions);
    }
    let topo = topology::topology_with_queues(a.workers as u32)?;
    let first = u32::from_be_bytes(XDP_FIRST_SOURCE);
    for k in 0..ips {
        let ip = std::net::Ipv4Addr::from(first + k);
        topo.client_ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", &topo.veth.name_b])?;
    }
    Ok(topo)
}

/// Sum of the `drops` column of `/proc/net/udp` over the sockets bound to local `port`:
/// datagrams the kernel dropped because a socket's receive buffer was full.
pub fn parse_udp_drops(table: &str, port: u16) -> u64 {
    let want = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            (local_port == want).then(|| f.last()?.parse::<u64>().ok()).flatten()
        })
        .sum()
}

fn udp_drops(port: u16) -> u64 {
    std::fs::read_to_string("/proc/net/udp").map_or(0, |t| parse_udp_drops(&t, port))
}

fn percentile(sorted_ms: &[f64], p: f64) -> Option<f64> {
    if sorted_ms.is_empty() {
        return None;
    }
    let i = ((sorted_ms.len() - 1) as f64 * p).round() as usize;
    Some(sorted_ms[i])
}

fn latencies_ms(done: &[&Done]) -> Vec<f64> {
    let mut v: Vec<f64> = done.iter().map(|d| d.latency.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn refusal_name(code: Option<ErrorCode>, raw: u16) -> String {
    code.map_or(format!("code {raw}"), |c| c.name().to_owned())
}

/// The machine, for the reports.
fn environment() -> Value {
    json!({
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": machine::cpu_model(),
        "kernel": machine::first_line("uname", &["-r"]),
        "date_utc": machine::first_line("date", &["-u", "+%Y-%m-%d %H:%M"]),
        "loadavg_at_start": machine::loadavg(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    })
}

fn write_reports(report: &Value, md: &str, json_out: Option<&Path>, md_out: Option<&Path>) -> Result<()> {
    if let Some(p) = json_out {
        std::fs::write(p, serde_json::to_string_pretty(report)?).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = md_out {
        std::fs::write(p, md).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{md}");
    Ok(())
}

fn fmt_stat(s: Option<Stat>, digits: usize) -> String {
    s.map_or("-".into(), |s| format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits))
}

// ---------------------------------------------------------------------------------------
// scale

/// One scale run.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleRun {
    /// From the first join sent to the last answer, seconds.
    pub join_secs: f64,
    /// Sessions over `join_secs`.
    pub joins_per_sec: f64,
    /// relayd after start-up, before any join.
    pub before: Memory,
    /// relayd with every session joined (after a one-second settle).
    pub after: Memory,
    /// Kernel memory of relayd's BPF maps after start-up, bytes (0 on the socket backend).
    pub bpf_maps_before: u64,
    /// The same with every session joined (the XDP `sessions` map holds one entry each).
    pub bpf_maps_after: u64,
    /// (after − before) VmRSS over the sessions, bytes.
    pub rss_bytes_per_session: f64,
    /// relayd's CPU time during the joins over the sessions, µs.
    pub relayd_cpu_us_per_join: f64,
    /// Join latency percentiles, ms (first send to answer).
    pub latency_ms_p50: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// Joins answered with join-ok.
    pub ok: u64,
    /// Joins refused, by code.
    pub refused: BTreeMap<String, u64>,
    /// Joins never answered.
    pub timed_out: u64,
    /// Retransmitted joins.
    pub retransmits: u64,
    /// Key confirmations checked.
    pub verified: u64,
    /// Source addresses skipped because another program held them.
    pub address_skips: u64,
    /// relayd's own count of sessions and rooms afterwards.
    pub relayd_sessions: u64,
    /// See `relayd_sessions`.
    pub relayd_rooms: u64,
}

/// Joins `a.sessions` members into `a.rooms` rooms of a fresh relayd and measures it.
pub fn scale_run(a: &ScaleArgs, bin: &Path) -> Result<ScaleRun> {
    if a.rooms == 0 || a.sessions < a.rooms {
        bail!("--sessions must be at least --rooms (and --rooms at least 1)");
    }
    let per_room = a.sessions.div_ceil(a.rooms);
    let size = Size {
        workers: a.workers,
        max_rooms: a.rooms,
        max_members_per_room: per_room.max(2),
        max_sessions: a.sessions,
        // XDP: the per-source join limit is off (every member comes from one of a few IPs).
        default_limits: false,
    };
    let topo = match a.backend {
        Backend::Xdp => Some(xdp_topology(a)?),
        Backend::Socket => None,
    };
    let mut relayd = relayd::start_sized(bin, topo.as_ref(), a.backend, None, size)?;
    let pid = relayd.pid();
    std::thread::sleep(Duration::from_millis(300));
    let before = memory(pid)?;
    let bpf_maps_before = bpf_maps_memory(pid)?;
    let cpu0 = procs::cpu_seconds(pid)?;
    let (app, secret) = relayd::app();
    let retry = Retry { every: Duration::from_millis(1000), tries: 3 };
    let mut joiner = Joiner::new(relayd.addr, relayd.key, app, secret, a.ssrcs, a.window, retry)?;
    if topo.is_some() {
        joiner = joiner.sources_from(XDP_FIRST_SOURCE.into());
    }
    let mut done: Vec<Done> = Vec::with_capacity(a.sessions as usize);
    // The members' sockets are made in the clients' namespace.
    let in_clients = topo.as_ref().map(|t| t.client_ns.enter()).transpose()?;
    let t0 = Instant::now();
    let mut next = 0u32;
    let mut last_check = t0;
    while next < a.sessions || joiner.in_flight() > 0 {
        while next < a.sessions && joiner.has_room() {
            // Round-robin over rooms: room r gets members r, r + rooms, … as users 0, 1, …
            joiner.start(next % a.rooms + 1, next / a.rooms)?;
            next += 1;
        }
        joiner.poll(Duration::from_millis(20), &mut done)?;
        if last_check.elapsed() > Duration::from_millis(500) {
            last_check = Instant::now();
            procs::check_interrupted()?;
            relayd.check_alive()?;
        }
    }
    drop(in_clients);
    let end = done.iter().map(|d| d.at).max().unwrap_or(t0);
    let cpu1 = procs::cpu_seconds(pid)?;
    // Let the workers apply the last updates and the allocator settle.
    std::thread::sleep(Duration::from_secs(1));
    let after = memory(pid)?;
    let bpf_maps_after = bpf_maps_memory(pid)?;
    let snap = relayd.snapshot()?;

    let ok: Vec<&Done> = done.iter().filter(|d| d.answer == Answer::Ok).collect();
    let mut refused = BTreeMap::new();
    let mut first_refusal = None;
    for d in &done {
        if let Answer::Refused { code, raw, detail } = &d.answer {
            *refused.entry(refusal_name(*code, *raw)).or_default() += 1;
            first_refusal.get_or_insert_with(|| format!("{} ({detail})", refusal_name(*code, *raw)));
        }
    }
    let timed_out = done.iter().filter(|d| d.answer == Answer::TimedOut).count() as u64;
    let rooms_joined = ok.iter().map(|d| d.room).collect::<std::collections::HashSet<_>>().len();
    let join_secs = (end - t0).as_secs_f64();
    let lat = latencies_ms(&ok);
    let run = ScaleRun {
        join_secs,
        joins_per_sec: a.sessions as f64 / join_secs,
        before,
        after,
        bpf_maps_before,
        bpf_maps_after,
        rss_bytes_per_session: (after.rss as f64 - before.rss as f64) / f64::from(a.sessions),
        relayd_cpu_us_per_join: (cpu1 - cpu0) * 1e6 / f64::from(a.sessions),
        latency_ms_p50: percentile(&lat, 0.5).unwrap_or(f64::NAN),
        latency_ms_p99: percentile(&lat, 0.99).unwrap_or(f64::NAN),
        ok: ok.len() as u64,
        refused,
        timed_out,
        retransmits: done.iter().map(|d| u64::from(d.sends - 1)).sum(),
        verified: joiner.verified,
        address_skips: joiner.bind_skips,
        relayd_sessions: snap.sessions,
        relayd_rooms: snap.rooms,
    };
    if let Some(r) = first_refusal {
        bail!("{} of {} joins were refused, the first: {r}", done.len() - ok.len() - timed_out as usize, a.sessions);
    }
    if timed_out > 0 {
        bail!("{timed_out} of {} joins timed out after {} tries each", a.sessions, retry.tries);
    }
    if rooms_joined != a.rooms as usize {
        bail!("join-ok came from {rooms_joined} rooms, not the {} asked", a.rooms);
    }
    if run.relayd_sessions != u64::from(a.sessions) || run.relayd_rooms != u64::from(a.rooms) {
        bail!(
            "relayd counts {} sessions in {} rooms; the bench joined {} in {} (all answered join-ok)",
            run.relayd_sessions,
            run.relayd_rooms,
            a.sessions,
            a.rooms
        );
    }
    if joiner.verified == 0 {
        bail!("no join-ok key confirmation was checked");
    }
    Ok(run)
}

/// `relay-bench scale`.
pub fn run_scale(a: ScaleArgs) -> Result<()> {
    let bin = relayd::relayd_path(&a.relayd)?;
    let env = environment();
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut runs = Vec::new();
    for i in 0..a.runs {
        procs::check_interrupted()?;
        let r = scale_run(&a, &bin).with_context(|| format!("scale run {}", i + 1))?;
        eprintln!(
            "run {}: {} sessions in {:.1} s ({:.0} joins/s), relayd VmRSS {:.1} → {:.1} MiB ({:.0} B/session)",
            i + 1,
            r.ok,
            r.join_secs,
            r.joins_per_sec,
            r.before.rss as f64 / MIB,
            r.after.rss as f64 / MIB,
            r.rss_bytes_per_session
        );
        runs.push(r);
    }
    let stat = |f: &dyn Fn(&ScaleRun) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
    let rss_after = stat(&|r| r.after.rss as f64 / MIB);
    let total_after = stat(&|r| (r.after.rss + r.bpf_maps_after) as f64 / MIB);
    let worst = total_after.map_or(f64::NAN, |s| s.max);
    let xdp = a.backend == Backend::Xdp;
    let mut rows: Vec<Row> = vec![
        ("join time, s", "join_secs", stat(&|r| r.join_secs), 2),
        ("joins/s", "joins_per_sec", stat(&|r| r.joins_per_sec), 0),
        ("relayd VmRSS before joins, MiB", "rss_before_mib", stat(&|r| r.before.rss as f64 / MIB), 1),
        ("relayd VmRSS with all sessions, MiB", "rss_after_mib", rss_after, 1),
        ("relayd VmHWM (peak), MiB", "hwm_after_mib", stat(&|r| r.after.hwm as f64 / MIB), 1),
        ("relayd RssAnon with all sessions, MiB", "anon_after_mib", stat(&|r| r.after.anon as f64 / MIB), 1),
        ("VmRSS per session, bytes", "rss_bytes_per_session", stat(&|r| r.rss_bytes_per_session), 0),
        ("relayd CPU per join, µs", "relayd_cpu_us_per_join", stat(&|r| r.relayd_cpu_us_per_join), 1),
        ("join latency p50, ms", "latency_ms_p50", stat(&|r| r.latency_ms_p50), 2),
        ("join latency p99, ms", "latency_ms_p99", stat(&|r| r.latency_ms_p99), 2),
        ("retransmitted joins", "retransmits", stat(&|r| r.retransmits as f64), 0),
    ];
    if xdp {
        // After the VmRSS rows.
        let maps: [Row; 3] = [
            (
                "relayd's BPF maps before joins (kernel), MiB",
                "bpf_maps_before_mib",
                stat(&|r| r.bpf_maps_before as f64 / MIB),
                1,
            ),
            (
                "relayd's BPF maps with all sessions (kernel), MiB",
                "bpf_maps_after_mib",
                stat(&|r| r.bpf_maps_after as f64 / MIB),
                1,
            ),
            ("VmRSS + BPF maps with all sessions, MiB", "total_after_mib", total_after, 1),
        ];
        let at = rows.iter().position(|r| r.1 == "anon_after_mib").map_or(rows.len(), |p| p + 1);
        rows.splice(at..at, maps);
    }
    let report = json!({
        "scenario": "scale",
        "backend": if xdp { "xdp" } else { "socket" },
        "args": a,
        "environment": env,
        "loadavg_at_end": machine::loadavg(),
        "goal": {
            "what": format!(
                "relayd {} with {} sessions joined ≤ {} MiB (checked against the largest run)",
                if xdp { "VmRSS plus its BPF maps" } else { "VmRSS" },
                a.sessions,
                a.goal_mib
            ),
            "target_mib": a.goal_mib,
            "worst_mib": worst,
            "met": worst <= a.goal_mib,
        },
        "summary": summary_json(&rows),
        "runs": runs,
    });
    let md = scale_markdown(&report, &rows, &runs, &a);
    write_reports(&report, &md, a.json.as_deref(), a.md.as_deref())
}

/// A summary row: label, JSON key, figure, decimals.
type Row = (&'static str, &'static str, Option<Stat>, usize);

fn summary_json(rows: &[Row]) -> Value {
    Value::Object(rows.iter().map(|(_, k, s, _)| ((*k).to_owned(), json!(s))).collect())
}

fn summary_markdown(rows: &[Row]) -> String {
    let mut md = String::from("| figure | median [min–max] |\n|---|---|\n");
    for (label, _, s, d) in rows {
        md += &format!("| {label} | {} |\n", fmt_stat(*s, *d));
    }
    md
}

/// A report's title, command and machine lines, from its `environment`.
fn report_header(report: &Value, title: &str) -> String {
    let env = &report["environment"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    format!(
        "# relay-bench {title}\n\nCommand: `{}`\n\nMachine: {} × {}, kernel {}, {} UTC; load average at start `{}`, at end `{}`.\n\n",
        text(&env["command"]),
        env["cpus"],
        text(&env["cpu_model"]),
        text(&env["kernel"]),
        text(&env["date_utc"]),
        text(&env["loadavg_at_start"]),
        text(&report["loadavg_at_end"]),
    )
}

fn scale_markdown(report: &Value, rows: &[Row], runs: &[ScaleRun], a: &ScaleArgs) -> String {
    let mut md = report_header(report, "scale");
    md += &match a.backend {
        Backend::Socket => "relayd socket backend on loopback, ".to_owned(),
        Backend::Xdp => format!(
            "relayd XDP backend (AF_XDP copy mode) in its own namespace across a veth pair with {} queue(s), the \
             members in the clients' namespace, the per-source join limit off; ",
            a.workers
        ),
    };
    md += &format!(
        "{} workers (each holds a replica of every session), quotas set to \
         the load. {} sessions in {} rooms ({} per room), each from its own source address, each declaring {} \
         SSRCs; {} joins in flight. Every join was answered join-ok and relayd's own counts matched in every run. \
         {} runs, each with a fresh relayd; each figure is median [min–max].\n\n",
        a.workers,
        a.sessions,
        a.rooms,
        a.sessions.div_ceil(a.rooms),
        a.ssrcs,
        a.window,
        runs.len()
    );
    let goal = &report["goal"];
    md += &format!(
        "**Goal** {}: **{}** (largest {:.1} MiB).\n\n",
        goal["what"].as_str().unwrap_or_default(),
        if goal["met"].as_bool() == Some(true) { "met" } else { "NOT met" },
        goal["worst_mib"].as_f64().unwrap_or(f64::NAN)
    );
    md += &summary_markdown(rows);
    md += "\nPer run: sessions/rooms as counted by relayd, refused, timed out, key confirmations checked.\n\n";
    md += "| run | relayd sessions | relayd rooms | refused | timed out | verified |\n|---|---|---|---|---|---|\n";
    for (i, r) in runs.iter().enumerate() {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            r.relayd_sessions,
            r.relayd_rooms,
            r.refused.values().sum::<u64>(),
            r.timed_out,
            r.verified
        );
    }
    md
}

// ---------------------------------------------------------------------------------------
// join-storm

/// One stage of a storm.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// The paced rate asked for, joins/s.
    pub target_rate: f64,
    /// Joins sent over the time it took to send them.
    pub offered_rate: f64,
    /// Joins sent.
    pub sent: u64,
    /// join-ok answers.
    pub ok: u64,
    /// join-ok answers over the time from the first send to the last answer.
    pub achieved_rate: f64,
    /// Refusals by code.
    pub refused: BTreeMap<String, u64>,
    /// The first refusal's code and relayd's detail text.
    pub first_refusal: Option<String>,
    /// Whether that refusal is a configured limit (app quota).
    pub refusal_is_configured_limit: bool,
    /// Joins unanswered within the timeout.
    pub timed_out: u64,
    /// Join latency percentiles of the answered joins, ms.
    pub latency_ms_p50: Option<f64>,
    /// 99th percentile.
    pub latency_ms_p99: Option<f64>,
    /// relayd's CPU use over the stage, in CPUs (1.0 = one core busy).
    pub relayd_cpus: f64,
    /// relayd CPU µs per join-ok.
    pub relayd_cpu_us_per_join: f64,
    /// Joins relayd's workers dropped because the control queue was full.
    pub control_queue_full: u64,
    /// Datagrams relayd's socket(s) dropped because the receive buffer was full.
    pub socket_drops: u64,
    /// Control datagrams relayd's workers handed to the control thread.
    pub control_in: u64,
    /// Whether the bench could not keep the paced rate (window full or too slow).
    pub generator_limited: bool,
}

/// One storm run.
#[derive(Clone, Debug, Serialize)]
pub struct StormRun {
    /// Every stage, in order.
    pub stages: Vec<Stage>,
    /// The achieved rate of the last stage without refusals or timeouts (0 if none).
    pub sustained_rate: f64,
    /// The target rate of that stage.
    pub sustained_target: f64,
    /// `refusal`, `configured_limit`, `timeout`, `generator_limited` or `max_rate`.
    pub stopped_by: String,
    /// What exactly stopped it.
    pub stop_detail: String,
    /// Sessions relayd held at the end.
    pub relayd_sessions: u64,
}

fn is_configured_limit(code: Option<ErrorCode>) -> bool {
    matches!(code, Some(ErrorCode::SessionQuota | ErrorCode::RoomQuota | ErrorCode::MemberQuota))
}

/// Runs one stage: `n` joins paced at `rate`, then drained.
fn stage(
    joiner: &mut Joiner,
    relayd: &mut Relayd,
    rate: f64,
    n: u64,
    next_member: &mut u64,
    per_room: u32,
) -> Result<Stage> {
    let pid = relayd.pid();
    let port = relayd.addr.port();
    let snap0 = relayd.snapshot()?;
    let drops0 = udp_drops(port);
    let cpu0 = procs::cpu_seconds(pid)?;
    let mut done = Vec::new();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut last_send = t0;
    let mut generator_limited = false;
    while sent < n {
        let now = Instant::now();
        let due = ((now - t0).as_secs_f64() * rate).floor() as u64 + 1;
        while sent < due.min(n) {
            if !joiner.has_room() {
                generator_limited = true;
                break;
            }
            let m = *next_member;
            *next_member += 1;
            let room = u32::try_from(m / u64::from(per_room) + 1).context("room numbers exhausted")?;
            joiner.start(room, (m % u64::from(per_room)) as u32)?;
            sent += 1;
            last_send = Instant::now();
        }
        let next_due = t0 + Duration::from_secs_f64((sent as f64) / rate);
        joiner.poll(next_due.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)), &mut done)?;
        procs::check_interrupted()?;
    }
    joiner.drain(&mut done)?;
    let cpu1 = procs::cpu_seconds(pid)?;
    relayd.check_alive()?;
    let snap1 = relayd.snapshot()?;
    let elapsed = t0.elapsed().as_secs_f64();
    let ok: Vec<&Done> = done.iter().filter(|d| d.answer == Answer::Ok).collect();
    let last_ok = ok.iter().map(|d| d.at).max().unwrap_or(t0);
    let mut refused = BTreeMap::new();
    let mut first_refusal = None;
    let mut configured = false;
    for d in &done {
        if let Answer::Refused { code, raw, detail } = &d.answer {
            *refused.entry(refusal_name(*code, *raw)).or_default() += 1;
            if first_refusal.is_none() {
                first_refusal = Some(format!("{} ({detail})", refusal_name(*code, *raw)));
                configured = is_configured_limit(*code);
            }
        }
    }
    let lat = latencies_ms(&ok);
    let offered_secs = (last_send - t0).as_secs_f64();
    let offered_rate = if offered_secs > 0.0 { sent as f64 / offered_secs } else { f64::NAN };
    Ok(Stage {
        target_rate: rate,
        offered_rate,
        sent,
        ok: ok.len() as u64,
        achieved_rate: ok.len() as f64 / (last_ok - t0).as_secs_f64().max(1e-3),
        refused,
        first_refusal,
        refusal_is_configured_limit: configured,
        timed_out: done.iter().filter(|d| d.answer == Answer::TimedOut).count() as u64,
        latency_ms_p50: percentile(&lat, 0.5),
        latency_ms_p99: percentile(&lat, 0.99),
        relayd_cpus: (cpu1 - cpu0) / elapsed,
        relayd_cpu_us_per_join: (cpu1 - cpu0) * 1e6 / (ok.len() as f64).max(1.0),
        control_queue_full: snap1
            .drop_count(relay::stats::DropReason::ControlQueueFull)
            .saturating_sub(snap0.drop_count(relay::stats::DropReason::ControlQueueFull)),
        socket_drops: udp_drops(port).saturating_sub(drops0),
        control_in: snap1.control_in.saturating_sub(snap0.control_in),
        // Below 90% of the asked rate (with a stage long enough to tell) counts as limited.
        generator_limited: generator_limited || (n >= 100 && offered_rate < 0.9 * rate),
    })
}

/// Why a stage ended the storm, if it did: (`stopped_by`, detail).
fn stage_stop(s: &Stage, timeout_ms: u64) -> Option<(String, String)> {
    if let Some(r) = &s.first_refusal {
        let kind = if s.refusal_is_configured_limit { "configured_limit" } else { "refusal" };
        let what = if s.refusal_is_configured_limit { "a configured app quota" } else { "relayd refused" };
        return Some((
            kind.into(),
            format!("{what}: {r}; {} refused at {:.0} joins/s", s.refused.values().sum::<u64>(), s.target_rate),
        ));
    }
    if s.timed_out > 0 {
        let mut why = Vec::new();
        if s.control_queue_full > 0 {
            why.push(format!(
                "relayd's workers dropped {} joins because the control queue (CONTROL_QUEUE = {}) was full",
                s.control_queue_full,
                relay::io::worker::CONTROL_QUEUE
            ));
        }
        if s.socket_drops > 0 {
            why.push(format!("relayd's socket dropped {} datagrams (receive buffer full)", s.socket_drops));
        }
        if why.is_empty() {
            why.push(format!("no drop counted: relayd answered later than {timeout_ms} ms"));
        }
        return Some((
            "timeout".into(),
            format!(
                "{} of {} joins unanswered within {timeout_ms} ms at {:.0} joins/s: {}",
                s.timed_out,
                s.sent,
                s.target_rate,
                why.join("; ")
            ),
        ));
    }
    if s.generator_limited {
        return Some((
            "generator_limited".into(),
            format!(
                "the bench offered {:.0} of {:.0} joins/s (window full or too slow)",
                s.offered_rate, s.target_rate
            ),
        ));
    }
    None
}

/// One storm against a fresh relayd.
pub fn storm_run(a: &StormArgs, bin: &Path, window: usize) -> Result<StormRun> {
    if a.start_rate <= 0.0 || a.factor <= 1.0 || a.stage_secs <= 0.0 || a.per_room < 1 {
        bail!("--start-rate and --stage-secs must be positive, --factor above 1, --per-room at least 1");
    }
    let size = Size {
        workers: a.workers,
        max_rooms: 1_000_000,
        max_members_per_room: a.per_room.max(2),
        max_sessions: a.max_sessions,
        default_limits: false,
    };
    let mut relayd = relayd::start_sized(bin, None, Backend::Socket, None, size)?;
    let (app, secret) = relayd::app();
    let retry = Retry { every: Duration::from_millis(a.timeout_ms), tries: 1 };
    let mut joiner = Joiner::new(relayd.addr, relayd.key, app, secret, a.ssrcs, window, retry)?;
    let mut stages: Vec<Stage> = Vec::new();
    let mut next_member = 0u64;
    let mut rate = a.start_rate;
    let (stopped_by, stop_detail) = loop {
        if rate > a.max_rate {
            break ("max_rate".into(), format!("the next rate, {rate:.0} joins/s, is above --max-rate"));
        }
        let n = ((rate * a.stage_secs).ceil() as u64).max(1);
        let s = stage(&mut joiner, &mut relayd, rate, n, &mut next_member, a.per_room)?;
        eprintln!(
            "  {:>7.0} joins/s asked: {:>7.0} offered, {:>7.0} achieved, {} ok, {} refused, {} timed out, relayd {:.2} CPUs",
            s.target_rate,
            s.offered_rate,
            s.achieved_rate,
            s.ok,
            s.refused.values().sum::<u64>(),
            s.timed_out,
            s.relayd_cpus
        );
        let stop = stage_stop(&s, a.timeout_ms);
        stages.push(s);
        if let Some(stop) = stop {
            break stop;
        }
        rate *= a.factor;
    };
    let clean = stages.iter().rev().find(|s| stage_stop(s, a.timeout_ms).is_none());
    if joiner.verified == 0 && stages.iter().any(|s| s.ok > 0) {
        bail!("no join-ok key confirmation was checked");
    }
    Ok(StormRun {
        sustained_rate: clean.map_or(0.0, |s| s.achieved_rate),
        sustained_target: clean.map_or(0.0, |s| s.target_rate),
        stopped_by,
        stop_detail,
        relayd_sessions: relayd.snapshot()?.sessions,
        stages,
    })
}

/// `relay-bench join-storm`.
pub fn run_storm(a: StormArgs) -> Result<()> {
    let bin = relayd::relayd_path(&a.relayd)?;
    let env = environment();
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // One descriptor per join in flight; keep a margin for relayd's pipes and the rest.
    let limit = crate::joins::open_files_limit()?;
    let window = a.window.min(usize::try_from(limit.saturating_sub(256)).unwrap_or(usize::MAX)).max(1);
    if window < a.window {
        eprintln!("note: window capped at {window} joins in flight by the open-files limit ({limit})");
    }
    let mut runs = Vec::new();
    for i in 0..a.runs {
        procs::check_interrupted()?;
        eprintln!("storm run {}:", i + 1);
        let r = storm_run(&a, &bin, window).with_context(|| format!("join-storm run {}", i + 1))?;
        eprintln!("  sustained {:.0} joins/s; stopped by {}: {}", r.sustained_rate, r.stopped_by, r.stop_detail);
        runs.push(r);
    }
    let last_clean = |r: &StormRun| r.stages.iter().rev().find(|s| stage_stop(s, a.timeout_ms).is_none()).cloned();
    let stat = |f: &dyn Fn(&StormRun) -> Option<f64>| Stat::of(&runs.iter().filter_map(f).collect::<Vec<_>>());
    let mut stopped: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *stopped.entry(r.stopped_by.clone()).or_default() += 1;
    }
    let rows: Vec<Row> = vec![
        ("sustained joins/s", "sustained_joins_per_sec", stat(&|r| Some(r.sustained_rate)), 0),
        ("paced rate of that stage, joins/s", "sustained_target_joins_per_sec", stat(&|r| Some(r.sustained_target)), 0),
        (
            "relayd CPUs busy in that stage",
            "relayd_cpus_at_sustained",
            stat(&|r| last_clean(r).map(|s| s.relayd_cpus)),
            2,
        ),
        (
            "relayd CPU per join in that stage, µs",
            "relayd_cpu_us_per_join_at_sustained",
            stat(&|r| last_clean(r).map(|s| s.relayd_cpu_us_per_join)),
            1,
        ),
        (
            "join latency p99 in that stage, ms",
            "latency_ms_p99_at_sustained",
            stat(&|r| last_clean(r).and_then(|s| s.latency_ms_p99)),
            2,
        ),
    ];
    let report = json!({
        "scenario": "join-storm",
        "backend": "socket",
        "args": a,
        "window": window,
        "environment": env,
        "loadavg_at_end": machine::loadavg(),
        "limits": {
            "socket_backend": format!(
                "no join rate limit; joins queue in each worker socket's receive buffer (8 MiB asked, capped by \
                 net.core.rmem_max), then in the bounded worker → control queue (CONTROL_QUEUE = {}), dropped and \
                 counted when it is full; one control thread answers every join",
                relay::io::worker::CONTROL_QUEUE
            ),
            "quotas": format!("max_sessions {}, max_rooms 1000000: reaching one stops the storm as configured_limit", a.max_sessions),
        },
        "summary": summary_json(&rows),
        "stopped_by": stopped,
        "runs": runs,
    });
    let md = storm_markdown(&report, &rows, &runs, &a);
    write_reports(&report, &md, a.json.as_deref(), a.md.as_deref())
}

fn storm_markdown(report: &Value, rows: &[Row], runs: &[StormRun], a: &StormArgs) -> String {
    let mut md = report_header(report, "join-storm");
    md += &format!(
        "relayd socket backend on loopback, {} workers, fresh per run. Stages of {} s of paced joins (each from \
         its own source address, {} per room, {} SSRCs each), starting at {:.0} joins/s and ×{} per stage; each \
         stage is drained before the next. A join unanswered after {} ms has timed out (no retransmission). The \
         storm stops at the first stage with a refusal or a timeout. Sustained = join-ok answers over the time \
         from the stage's first send to its last answer, in the last stage without either. {} runs; median \
         [min–max].\n\n",
        a.workers,
        a.stage_secs,
        a.per_room,
        a.ssrcs,
        a.start_rate,
        a.factor,
        a.timeout_ms,
        runs.len()
    );
    md += &format!("Limits on this path: {}.\n\n", report["limits"]["socket_backend"].as_str().unwrap_or_default());
    md += &summary_markdown(rows);
    md += "\n| run | sustained joins/s | stopped by | detail |\n|---|---|---|---|\n";
    for (i, r) in runs.iter().enumerate() {
        md += &format!("| {} | {:.0} | {} | {} |\n", i + 1, r.sustained_rate, r.stopped_by, r.stop_detail);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_proc_status() {
        let status = "Name:\trelayd\nVmPeak:\t  200000 kB\nVmHWM:\t    9000 kB\nVmRSS:\t    8000 kB\n\
                      RssAnon:\t    5000 kB\nRssFile:\t    3000 kB\n";
        assert_eq!(
            parse_status_memory(status).unwrap(),
            Memory { rss: 8000 * 1024, hwm: 9000 * 1024, anon: 5000 * 1024 }
        );
        assert!(parse_status_memory("Name:\trelayd\nVmRSS:\t 1 kB\n").is_err(), "VmHWM missing");
        assert!(parse_status_memory("VmRSS:\tx kB\nVmHWM:\t1 kB\nRssAnon:\t1 kB\n").is_err());
        let own = memory(std::process::id()).unwrap();
        assert!(own.rss > 0 && own.hwm >= own.rss, "{own:?}");
    }

    #[test]
    fn bpf_map_memory_from_fdinfo() {
        // A hash map's fdinfo (Linux 6.18), then a program's and a plain file's.
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\nkey_size:\t40\n\
                   value_size:\t16\nmax_entries:\t262144\nmap_flags:\t0x1\nmap_extra:\t0x0\n\
                   memlock:\t25231488\nmap_id:\t412\nfrozen:\t0\n";
        assert_eq!(parse_fdinfo_map_memlock(map), Some(25_231_488));
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t6\nprog_jited:\t1\nmemlock:\t4096\nprog_id:\t77\n";
        assert_eq!(parse_fdinfo_map_memlock(prog), None, "a program is not a map");
        assert_eq!(parse_fdinfo_map_memlock("pos:\t0\nflags:\t02\nmnt_id:\t20\n"), None);
        assert_eq!(parse_fdinfo_map_memlock("map_type:\t1\nmemlock:\tlots\n"), None, "unparsable");
    }

    #[test]
    fn udp_drops_of_one_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 12: 0100007F:1B58 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5\n\
            \x20 13: 0100007F:1B58 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 7\n\
            \x20 14: 0100007F:1B59 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 100\n";
        assert_eq!(parse_udp_drops(table, 7000), 12, "both reuseport sockets of port 7000 (0x1B58)");
        assert_eq!(parse_udp_drops(table, 7002), 0);
    }

    fn stage_with(refused: Option<Option<ErrorCode>>, timed_out: u64, queue_full: u64) -> Stage {
        Stage {
            target_rate: 1000.0,
            offered_rate: 1000.0,
            sent: 2000,
            ok: 2000 - timed_out,
            achieved_rate: 990.0,
            refused: refused.map(|c| [(refusal_name(c, 0), 1)].into()).unwrap_or_default(),
            first_refusal: refused.map(|c| format!("{} (detail)", refusal_name(c, 0))),
            refusal_is_configured_limit: refused.is_some_and(is_configured_limit),
            timed_out,
            latency_ms_p50: Some(1.0),
            latency_ms_p99: Some(2.0),
            relayd_cpus: 0.5,
            relayd_cpu_us_per_join: 100.0,
            control_queue_full: queue_full,
            socket_drops: 0,
            control_in: 2000,
            generator_limited: false,
        }
    }

    #[test]
    fn stop_reasons_are_named_honestly() {
        assert_eq!(stage_stop(&stage_with(None, 0, 0), 1000), None);
        let (k, d) = stage_stop(&stage_with(Some(Some(ErrorCode::SessionQuota)), 0, 0), 1000).unwrap();
        assert_eq!(k, "configured_limit");
        assert!(d.contains("configured app quota") && d.contains("session_quota"), "{d}");
        let (k, _) = stage_stop(&stage_with(Some(Some(ErrorCode::Overloaded)), 0, 0), 1000).unwrap();
        assert_eq!(k, "refusal");
        let (k, d) = stage_stop(&stage_with(None, 3, 3), 1000).unwrap();
        assert_eq!(k, "timeout");
        assert!(d.contains("control queue") && d.contains("3 of 2000"), "{d}");
        let (_, d) = stage_stop(&stage_with(None, 3, 0), 1000).unwrap();
        assert!(d.contains("later than 1000 ms"), "{d}");
    }

    #[test]
    fn percentiles_pick_from_sorted_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(51.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
