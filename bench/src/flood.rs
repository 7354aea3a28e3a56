//! The flood scenario: legitimate goodput and latency while a flood hits relayd.
//!
//! In the rig's topology ([`crate::rig::topology`]: relayd's namespace and the clients',
//! joined by a veth pair in 198.18.0.0/15), one sender streams paced SRTP (a send timestamp in every payload) to one
//! receiver that verifies every packet's SRTP tag and records its one-way latency in an
//! hdrhistogram. The run has three equal phases: quiet, flood, quiet again. During the flood
//! an AF_XDP generator on the clients' veth sends, as fast as it can, frames from spoofed
//! sources (198.18.0.10–250, random ports) of three kinds in turn: SRTP-looking packets from
//! unknown 5-tuples, junk (a first byte relayd never relays), and join-looking control
//! messages that do not authenticate.
//!
//! Invariants:
//! - Goodput counts only packets whose SRTP tag verified at the receiver; a failed check is
//!   counted, never dropped silently.
//! - Each phase's goodput is what the receiver verified between the phase's start and end,
//!   over the phase's length; the figure of merit is flood goodput ÷ first-quiet goodput.
//! - The receiver's socket is bound to a port below 1024, outside the counting sink's port
//!   range, so relayed media reaches it instead of the sink.
//! - With the socket backend, every flood packet that reaches relayd's socket shows in its
//!   userspace counters (`unknown_session`, `not_relayed`, rejected joins); with the XDP
//!   backend the kernel counts them and userspace should see none of the media flood.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use relay::client::{write_rtp_header, Client, Event};
use relay::config::Backend;
use relay::io::sys::SendBatch;
use relay::srtp::Profile;

use crate::procs::{self, Cpus, Threads};
use crate::progress::Progress;
use crate::relayd::{self, Member};
use crate::report::{self, FloodRow, FloodRun};
use crate::rig::generator::{self, Generator};
use crate::rig::topology::{self, topology};
use crate::stats::{latency_histogram, Stat, LATENCY_MAX_US};

/// The receiver's port: below the sink's range (1024–65535), so its media is not sunk.
const RECEIVER_PORT: u16 = 900;
/// The sender's SSRC.
const SSRC: u32 = 0xf100d;
/// Distinct flood frames prepared (cycled).
const FLOOD_FRAMES: usize = 4096;
/// Timeline resolution.
const TICK: Duration = Duration::from_millis(100);

/// `relay-bench flood` options.
#[derive(clap::Args)]
pub struct Args {
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "socket,xdp")]
    backends: Vec<Backend>,
    /// Legitimate packets per second (one sender, one receiver).
    #[arg(long, default_value_t = 10_000.0)]
    legit_pps: f64,
    /// RTP packet size before the SRTP tag.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Length of the whole run in seconds (a third quiet, a third flood, a third quiet).
    #[arg(long, default_value_t = 9.0)]
    seconds: f64,
    /// Runs per backend (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Turn off the XDP backend's per-source join and packet limits (default: relayd's
    /// defaults, 20 joins/s and 20,000 pkt/s per source, as shipped).
    #[arg(long)]
    no_limits: bool,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    relayd: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What the receiver counted, shared with the sampling loop.
#[derive(Default)]
struct Rx {
    ok: AtomicU64,
    auth_failed: AtomicU64,
    other: AtomicU64,
}

/// One run's settings; the flood runs in the middle phase.
struct Params {
    /// Packets per second the sender paces.
    rate: f64,
    /// RTP packet size before the SRTP tag.
    size: usize,
    /// The whole run, in seconds (three equal phases).
    seconds: f64,
    /// relayd's default XDP limits (else off).
    kernel_limits: bool,
}

/// One run's result.
struct Run {
    /// Verified packets per second: quiet, flood, quiet again.
    goodput: [f64; 3],
    /// Packets the sender sent per phase, per second.
    sent: [f64; 3],
    /// Flood frames the generator got onto the wire, per second of flood.
    flood_pps: f64,
    /// Latency (µs) p50 and p99, quiet and flood phases.
    latency_us: [(f64, f64); 2],
    /// Packets that failed the receiver's SRTP tag check.
    auth_failed: u64,
    /// Packets the receiver refused for another SRTP reason (replayed, malformed): relayd
    /// must never send a packet twice or damaged.
    other_errors: u64,
    /// relayd's drops (userspace) and XDP verdicts over the flood phase.
    engine_drops: Vec<(String, u64)>,
    xdp: Vec<(String, u64)>,
    /// Per tick: verified packets in that tick.
    timeline: Vec<u64>,
}

/// The flood: spoofed sources, three kinds of frames.
fn flood_frames(gen: &Generator) -> Result<Vec<Vec<u8>>> {
    let macs = gen.macs().context("the flood needs the AF_XDP generator")?;
    let dst = topology::relay_addr();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..FLOOD_FRAMES)
        .map(|i| {
            let r = next();
            let src =
                SocketAddr::from((Ipv4Addr::new(198, 18, 0, 10 + (r % 240) as u8), 1024 + (r >> 8) as u16 % 60000));
            let len = 40 + (r >> 24) as usize % 1160;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            match i % 3 {
                0 => payload[0] = 0x80,                       // SRTP from an unknown 5-tuple
                1 => payload[0] = 0x40 | (payload[0] & 0x3f), // junk
                _ => payload[0] %= 4,                         // a control message that will not verify
            }
            generator::frame(macs, src, dst, &payload)
        })
        .collect()
}

/// One run in a fresh topology with a fresh relayd.
fn run_once(a: &Params, relayd_bin: &std::path::Path, cpus: Cpus, backend: Backend) -> Result<Run> {
    let topo = topology()?;
    let relayd = relayd::start_with(relayd_bin, Some(&topo), backend, Some(cpus), a.kernel_limits)?;
    let profile = Profile::AesCm128HmacSha1_80;
    let sender = relayd::join_from(&topo, relayd.key, 0, 1, "sender", Some(SSRC), profile)?;
    let receiver = relayd::join_from(&topo, relayd.key, RECEIVER_PORT, 1, "receiver", None, profile)?;
    let mut gen = Generator::open(generator::Kind::Afxdp, &topo)?;
    let frames = flood_frames(&gen)?;

    let epoch = Instant::now();
    let rx = Arc::new(Rx::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_tx = Arc::new(AtomicBool::new(false));
    let flooding = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new([latency_histogram(LATENCY_MAX_US)?, latency_histogram(LATENCY_MAX_US)?]));
    let rx_thread = {
        let (rx, stop, flooding, hist) = (rx.clone(), stop.clone(), flooding.clone(), hist.clone());
        let Member { sock, client } = receiver;
        std::thread::spawn(move || receive(sock, client, epoch, &rx, &stop, &flooding, &hist, cpus))
    };
    let sent = Arc::new(AtomicU64::new(0));
    let tx_thread = {
        let (sent, stop) = (sent.clone(), stop_tx.clone());
        let (rate, size) = (a.rate, a.size);
        std::thread::spawn(move || pace(sender, rate, size, epoch, &sent, &stop, cpus))
    };
    // Stop and join both threads on every way out.
    let threads = Threads::new(vec![stop.clone(), stop_tx.clone()], vec![rx_thread, tx_thread]);

    let phase = Duration::from_secs_f64(a.seconds / 3.0);
    let mut timeline = Vec::new();
    let mut marks = Vec::new();
    let mut flood_sent = 0u64;
    let mut snaps = Vec::new();
    let dummy = UdpSocket::bind("127.0.0.1:0")?;
    let start = Instant::now();
    let mut next_tick = start + TICK;
    let mut last_ok = 0;
    let mut k = 0usize;
    for p in 0..3u32 {
        marks.push((rx.ok.load(Relaxed), sent.load(Relaxed)));
        let flood_now = p == 1;
        if flood_now {
            snaps.push(relayd.snapshot()?);
            flooding.store(true, Relaxed);
        }
        let end = start + phase * (p + 1);
        while Instant::now() < end {
            procs::check_interrupted()?;
            if flood_now {
                let chunk = &frames[k..k + 64];
                k = (k + 64) % FLOOD_FRAMES;
                flood_sent = gen.send(&dummy, chunk, flood_sent)?;
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
            if Instant::now() >= next_tick {
                let ok = rx.ok.load(Relaxed);
                timeline.push(ok - last_ok);
                last_ok = ok;
                next_tick += TICK;
            }
        }
        if p == 1 {
            if flood_now {
                flood_sent = gen.finish(flood_sent)?;
            }
            flooding.store(false, Relaxed);
            snaps.push(relayd.snapshot()?);
        }
    }
    marks.push((rx.ok.load(Relaxed), sent.load(Relaxed)));
    // The sender stops first; what is still in flight gets a moment to arrive.
    stop_tx.store(true, Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Relaxed);
    for r in threads.join()? {
        r?;
    }
    drop(gen);
    let secs = phase.as_secs_f64();
    let per = |i: usize, f: fn(&(u64, u64)) -> u64| (f(&marks[i + 1]) - f(&marks[i])) as f64 / secs;
    let h = hist.lock().map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?;
    let q = |h: &Histogram<u64>| (h.value_at_quantile(0.5) as f64, h.value_at_quantile(0.99) as f64);
    let diff = |a: &std::collections::BTreeMap<String, u64>, b: &std::collections::BTreeMap<String, u64>| {
        b.iter()
            .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect::<Vec<_>>()
    };
    let (s0, s1) = (&snaps[0], &snaps[1]);
    Ok(Run {
        goodput: [per(0, |m| m.0), per(1, |m| m.0), per(2, |m| m.0)],
        sent: [per(0, |m| m.1), per(1, |m| m.1), per(2, |m| m.1)],
        flood_pps: flood_sent as f64 / secs,
        latency_us: [q(&h[0]), q(&h[1])],
        auth_failed: rx.auth_failed.load(Relaxed),
        other_errors: rx.other.load(Relaxed),
        engine_drops: diff(&s0.drops, &s1.drops),
        xdp: diff(&s0.xdp, &s1.xdp),
        timeline,
    })
}

/// Sends paced SRTP with the send time (µs since `epoch`) in RTP payload bytes 0..8.
fn pace(
    sender: Member,
    rate: f64,
    size: usize,
    epoch: Instant,
    sent: &AtomicU64,
    stop: &AtomicBool,
    cpus: Cpus,
) -> Result<()> {
    cpus.pin_load_thread();
    let Member { sock, mut client } = sender;
    let dst = sock.peer_addr()?;
    let mut batch = SendBatch::new(16);
    let start = Instant::now();
    let mut made = 0u64;
    let mut seq = 1u16;
    while !stop.load(Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        if due <= made {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..(due - made).min(16) {
            let buf = batch.next_buffer().context("send batch full")?;
            let h = write_rtp_header(buf, 96, seq, u32::from(seq).wrapping_mul(90), SSRC);
            seq = seq.wrapping_add(1);
            buf[h..h + 8].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_be_bytes());
            buf[h + 8..size].fill(0x42);
            let len = client.protect_rtp(buf, size)?;
            batch.push(dst, len);
            made += 1;
        }
        sent.fetch_add(batch.flush(&sock).sent as u64, Relaxed);
    }
    Ok(())
}

/// Verifies every packet and records its one-way latency, in the histogram of the phase it
/// arrived in (0 = no flood, 1 = flood).
#[expect(clippy::too_many_arguments, reason = "one thread's whole state, passed once")]
fn receive(
    sock: UdpSocket,
    mut client: Client,
    epoch: Instant,
    rx: &Rx,
    stop: &AtomicBool,
    flooding: &AtomicBool,
    hist: &Mutex<[Histogram<u64>; 2]>,
    cpus: Cpus,
) -> Result<()> {
    cpus.pin_load_thread();
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut buf = [0u8; 2048];
    // Recorded locally and merged at the end: no lock per packet.
    let mut local = [latency_histogram(LATENCY_MAX_US)?, latency_histogram(LATENCY_MAX_US)?];
    while !stop.load(Relaxed) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        match client.handle(&mut buf[..n]) {
            Event::Media { len, .. } if len >= 20 => {
                let mut t = [0u8; 8];
                t.copy_from_slice(&buf[12..20]);
                let now = epoch.elapsed().as_micros() as u64;
                let lat = now.saturating_sub(u64::from_be_bytes(t)).max(1);
                let _ = local[usize::from(flooding.load(Relaxed))].record(lat);
                rx.ok.fetch_add(1, Relaxed);
            }
            Event::MediaError(relay::srtp::Error::AuthFailed) => {
                rx.auth_failed.fetch_add(1, Relaxed);
            }
            _ => {
                rx.other.fetch_add(1, Relaxed);
            }
        }
    }
    let mut h = hist.lock().map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?;
    for (into, from) in h.iter_mut().zip(&local) {
        into.add(from).context("merging latency histograms")?;
    }
    Ok(())
}

/// Runs the scenario for each backend and prints a table.
pub fn run(a: Args) -> Result<()> {
    if a.runs == 0 || a.seconds < 1.5 || a.legit_pps <= 0.0 {
        bail!("--runs must be at least 1, --seconds at least 1.5 and --legit-pps positive");
    }
    let relayd = relayd::relayd_path(&a.relayd)?;
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    let mut rows = Vec::new();
    let progress = Progress::new((a.backends.len() * a.runs) as u64, "flood");
    for &backend in &a.backends {
        let mut runs = Vec::new();
        for i in 0..a.runs {
            progress.step(format!("{backend:?} run {}", i + 1));
            let params = Params { rate: a.legit_pps, size: a.size, seconds: a.seconds, kernel_limits: !a.no_limits };
            let r = run_once(&params, &relayd, cpus, backend).with_context(|| format!("{backend:?} run {}", i + 1))?;
            progress.inc();
            progress.note(&format!(
                "  {backend:?} run {}: goodput {:.0} / {:.0} (flood) / {:.0} pkt/s (sent {:.0}/{:.0}/{:.0}); flood {:.0} pkt/s; latency p50/p99 {:.0}/{:.0} µs quiet, {:.0}/{:.0} µs flood; auth failures {}, other SRTP errors {}; engine drops {:?}; XDP {:?}",
                i + 1,
                r.goodput[0], r.goodput[1], r.goodput[2], r.sent[0], r.sent[1], r.sent[2], r.flood_pps,
                r.latency_us[0].0, r.latency_us[0].1, r.latency_us[1].0, r.latency_us[1].1,
                r.auth_failed, r.other_errors, r.engine_drops, r.xdp
            ));
            runs.push(r);
        }
        let stat = |v: Vec<f64>| Stat::of(&v).expect("--runs is at least 1, and every run's figures are finite");
        let ratio =
            stat(runs.iter().map(|r| if r.goodput[0] > 0.0 { r.goodput[1] / r.goodput[0] } else { 0.0 }).collect());
        let flood = stat(runs.iter().map(|r| r.flood_pps).collect());
        let p99 = stat(runs.iter().map(|r| r.latency_us[1].1).collect());
        let name = format!("{backend:?}").to_lowercase();
        progress.out(&format!(
            "{name:<7} goodput under flood {:.1}% [{:.1}–{:.1}] of quiet; flood {:.0} pkt/s [{:.0}–{:.0}]; p99 latency under flood {:.0} µs [{:.0}–{:.0}]; {} runs",
            ratio.median * 100.0, ratio.min * 100.0, ratio.max * 100.0, flood.median, flood.min, flood.max, p99.median, p99.min, p99.max, a.runs
        ));
        rows.push(FloodRow {
            backend: name,
            kernel_limits: Some(!a.no_limits),
            legit_pps: a.legit_pps,
            size: a.size,
            seconds: a.seconds,
            runs: a.runs,
            goodput_ratio_median: ratio.median,
            goodput_ratio_min: ratio.min,
            goodput_ratio_max: ratio.max,
            flood_pps_median: flood.median,
            flood_p99_us_median: p99.median,
            runs_detail: runs
                .into_iter()
                .map(|r| FloodRun {
                    goodput_pps: r.goodput,
                    sent_pps: r.sent,
                    flood_pps: r.flood_pps,
                    latency_us_p50_p99_quiet: r.latency_us[0],
                    latency_us_p50_p99_flood: r.latency_us[1],
                    auth_failed: r.auth_failed,
                    other_srtp_errors: r.other_errors,
                    engine_drops_during_flood: r.engine_drops.into_iter().collect(),
                    xdp_verdicts_during_flood: r.xdp.into_iter().collect(),
                    timeline_tick_ms: TICK.as_millis() as u64,
                    timeline_verified: r.timeline,
                })
                .collect(),
        });
    }
    if let Some(p) = &a.json {
        report::write(p, &rows)?;
    }
    Ok(())
}
