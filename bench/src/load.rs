//! The load every SRTP relay baseline gets: a paced sender, a verifying receiver, one probe at
//! a given rate, and the search for the maximum loss-free rate.
//!
//! Invariants:
//! - The sender makes every packet just before sending it (real SRTP with increasing sequence
//!   numbers, so relays with a replay check accept it), and sends packet `i` no earlier than
//!   `start + i / rate`; when it falls behind it sends at most [`BURST`] at once.
//! - The receiver checks the SRTP tag of every packet it gets; a packet that fails is counted,
//!   never silently dropped.
//! - A probe passes only if loss is at most `max_loss`, the sender kept up with the rate (else
//!   the search stops there: the figure is then a floor set by the generator, and says so),
//!   and the relay's own failure check (rtpengine's wedge) found nothing.
//! - The relay's CPU time per packet is the `utime + stime` delta of its process from just
//!   before the first packet to the end of the drain, over the packets received.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use relay::io::sys::{RecvBatch, SendBatch};
use serde::{Deserialize, Deserializer, Serialize};

use crate::procs::{check_interrupted, cpu_seconds, Cpus, Threads};

/// Most packets the pacer sends in one go when it is behind.
const BURST: usize = 32;
/// The receiver counts the run as drained after this long without a packet.
const QUIET: Duration = Duration::from_millis(200);

/// Makes the next SRTP packet into the buffer; returns its length.
pub type MakePacket = Box<dyn FnMut(&mut [u8]) -> Result<usize> + Send>;
/// Checks (unprotects) a received packet in place.
pub type Verify = Box<dyn FnMut(&mut [u8]) -> Result<(), relay::srtp::Error> + Send>;

/// The verifying receiver: a UDP socket read by a thread that checks each packet.
pub struct Sink {
    /// The receiving socket.
    pub sock: UdpSocket,
    /// The SRTP check.
    pub verify: Verify,
}

/// One probe's traffic.
pub struct Traffic {
    /// The sending socket.
    pub tx: UdpSocket,
    /// Where to send.
    pub dst: SocketAddr,
    /// The packet maker.
    pub make: MakePacket,
    /// The receiving side.
    pub sink: Sink,
}

/// Why a probe did not pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Loss within the bound.
    Pass,
    /// More loss than the bound.
    Loss,
    /// The sender could not keep the rate: the result is bounded by the load generator.
    GeneratorLimited,
    /// The relay reported a failure (e.g. rtpengine stopped reading a socket).
    RelayFailed(String),
}

/// One probe's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    /// The rate asked of the pacer.
    pub target_pps: f64,
    /// The rate the sender achieved.
    pub offered_pps: f64,
    /// Packets the kernel took from the sender.
    pub sent: u64,
    /// Packets the sender's socket refused (would block).
    pub send_dropped: u64,
    /// Packets the receiver counted (verified ones, or the counter's delta).
    pub received: u64,
    /// Packets that failed the SRTP tag check at the receiver.
    pub auth_failed: u64,
    /// Packets received twice (the receiver's replay check refused them as replayed).
    pub duplicates: u64,
    /// Packets rejected for another SRTP reason (too old, malformed).
    pub other_errors: u64,
    /// `1 - received / sent`.
    pub loss: f64,
    /// Received packets per second of sending.
    pub relayed_pps: f64,
    /// The relay's CPU time per received packet, in microseconds.
    pub cpu_us_per_pkt: Option<f64>,
    /// The verdict.
    pub outcome: Outcome,
    /// Packets the relay says it sent, where it can say (relayd's counters): tells loss in
    /// the relay from loss at the receiver.
    pub relay_sent: Option<u64>,
    /// Whether the recrypt check ran on a received packet and passed (rtpengine).
    pub recrypt_checked: Option<bool>,
    /// The first packet the socket receiver got, as it arrived (for recrypt checks).
    #[serde(skip)]
    pub first_packet: Option<Vec<u8>>,
}

/// Receiver thread state.
#[derive(Default)]
struct RxCounts {
    ok: AtomicU64,
    auth_failed: AtomicU64,
    duplicates: AtomicU64,
    other: AtomicU64,
    first: Mutex<Option<Vec<u8>>>,
}

fn receive(sock: UdpSocket, mut verify: Verify, counts: Arc<RxCounts>, stop: Arc<AtomicBool>, cpus: Cpus) {
    cpus.pin_load_thread();
    if sock.set_nonblocking(false).is_err() || sock.set_read_timeout(Some(Duration::from_millis(20))).is_err() {
        return;
    }
    let mut one = [0u8; 2048];
    let mut batch = RecvBatch::new(64);
    let mut on_packet = |buf: &mut [u8], counts: &RxCounts| {
        if counts.ok.load(Ordering::Relaxed) == 0 && counts.auth_failed.load(Ordering::Relaxed) == 0 {
            if let Ok(mut f) = counts.first.lock() {
                f.get_or_insert_with(|| buf.to_vec());
            }
        }
        match verify(buf) {
            Ok(()) => counts.ok.fetch_add(1, Ordering::Relaxed),
            Err(relay::srtp::Error::AuthFailed) => counts.auth_failed.fetch_add(1, Ordering::Relaxed),
            Err(relay::srtp::Error::Replayed) => counts.duplicates.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.other.fetch_add(1, Ordering::Relaxed),
        };
    };
    while !stop.load(Ordering::Relaxed) {
        // Block (briefly) for one datagram, then drain what is queued in batches.
        let Ok(n) = sock.recv(&mut one) else { continue };
        on_packet(&mut one[..n], &counts);
        while let Ok(k) = batch.recv(&sock) {
            for i in 0..k {
                if let Some(relay::io::sys::Received::Datagram(_, buf)) = batch.get(i) {
                    on_packet(buf, &counts);
                }
            }
            if k < 64 {
                break;
            }
        }
    }
}

/// Sends `traffic` at `rate` packets per second for `secs` seconds while counting what
/// arrives; `relay_pid` is the process whose CPU time is charged to the packets.
pub fn probe(traffic: Traffic, rate: f64, secs: f64, relay_pid: u32, cpus: Cpus, max_loss: f64) -> Result<Probe> {
    let Traffic { tx, dst, mut make, sink: Sink { sock, verify } } = traffic;
    let counts = Arc::new(RxCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rx_thread = {
        let (c, s) = (counts.clone(), stop.clone());
        std::thread::spawn(move || receive(sock, verify, c, s, cpus))
    };
    // Stops and joins the receiver on every path out of this function.
    let rx_guard = Threads::new(vec![stop], vec![rx_thread]);
    let received_now = || -> Result<u64> {
        Ok(counts.ok.load(Ordering::Relaxed)
            + counts.auth_failed.load(Ordering::Relaxed)
            + counts.duplicates.load(Ordering::Relaxed)
            + counts.other.load(Ordering::Relaxed))
    };

    let total = (rate * secs).round().max(1.0) as u64;
    let mut batch = SendBatch::new(BURST);
    let (mut made, mut sent, mut dropped) = (0u64, 0u64, 0u64);
    let base = received_now()?;
    let cpu0 = cpu_seconds(relay_pid)?;
    let start = Instant::now();
    while made < total {
        check_interrupted()?;
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * rate) as u64 + 1).min(total);
        if due <= made {
            let next = Duration::from_secs_f64(made as f64 / rate);
            if let Some(wait) = next.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            continue;
        }
        let n = (due - made).min(BURST as u64);
        for _ in 0..n {
            let buf = batch.next_buffer().context("send batch full")?;
            let len = make(buf)?;
            batch.push(dst, len);
        }
        let f = batch.flush(&tx);
        sent += f.sent as u64;
        dropped += f.dropped as u64;
        made += n;
    }
    let send_secs = start.elapsed().as_secs_f64();
    // Drain: wait until nothing new arrives for QUIET (at most 3 s).
    let mut last = received_now()?;
    let mut last_change = Instant::now();
    let drain_deadline = Instant::now() + Duration::from_secs(3);
    while last_change.elapsed() < QUIET && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(10));
        let now = received_now()?;
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let cpu1 = cpu_seconds(relay_pid)?;
    let received = received_now()? - base;
    drop(rx_guard);

    let offered_pps = sent as f64 / send_secs;
    let loss = if sent == 0 { 1.0 } else { 1.0 - (received.min(sent) as f64 / sent as f64) };
    let generator_limited = send_secs > secs * 1.03 || dropped as f64 > max_loss * total as f64;
    let outcome = if generator_limited {
        Outcome::GeneratorLimited
    } else if loss > max_loss {
        Outcome::Loss
    } else {
        Outcome::Pass
    };
    let first_packet = counts.first.lock().ok().and_then(|mut f| f.take());
    Ok(Probe {
        target_pps: rate,
        offered_pps,
        sent,
        send_dropped: dropped,
        received,
        auth_failed: counts.auth_failed.load(Ordering::Relaxed),
        duplicates: counts.duplicates.load(Ordering::Relaxed),
        other_errors: counts.other.load(Ordering::Relaxed),
        loss,
        relayed_pps: received as f64 / send_secs,
        cpu_us_per_pkt: (received > 0).then(|| (cpu1 - cpu0) * 1e6 / received as f64),
        outcome,
        relay_sent: None,
        recrypt_checked: None,
        first_packet,
    })
}

/// How to search for the maximum loss-free rate.
#[derive(Clone, Copy, Debug, clap::Args, Serialize, Deserialize)]
pub struct SearchArgs {
    /// First offered rate (packets per second); the search doubles it until a probe fails.
    #[arg(long, default_value_t = 2000.0)]
    pub start_pps: f64,
    /// Highest rate to try.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_pps: f64,
    /// Seconds each probe sends for.
    #[arg(long, default_value_t = 2.0)]
    pub probe_secs: f64,
    /// Stop bisecting when the failing rate is within this fraction of the passing one.
    #[arg(long, default_value_t = 0.05)]
    pub precision: f64,
    /// Largest loss that still counts as loss-free.
    #[arg(long, default_value_t = 0.001)]
    pub max_loss: f64,
}

/// A search's result.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// The fastest passing probe.
    pub best: Option<Probe>,
    /// Why the search stopped climbing: one of [`STOP_REASONS`].
    pub stopped_by: &'static str,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
}

/// Why a search stops climbing: `loss`, `relay_failed`, `generator_limited` (the figure is
/// a floor) or `max_pps`.
pub const STOP_REASONS: [&str; 4] = ["loss", "relay_failed", "generator_limited", "max_pps"];

/// [`Found`] as a report holds it, read back: its `stopped_by` must be one of
/// [`STOP_REASONS`].
#[derive(Deserialize)]
struct FoundRecord {
    best: Option<Probe>,
    stopped_by: String,
    probes: Vec<Probe>,
}

impl<'de> Deserialize<'de> for Found {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = FoundRecord::deserialize(d)?;
        let stopped_by = STOP_REASONS
            .iter()
            .find(|s| **s == r.stopped_by)
            .copied()
            .ok_or_else(|| serde::de::Error::custom(format!("unknown stop reason {:?}", r.stopped_by)))?;
        Ok(Found { best: r.best, stopped_by, probes: r.probes })
    }
}

/// Finds the highest rate whose probe passes: doubles from `start_pps` until a probe fails,
/// then bisects between the last pass and the first failure.
pub fn search(args: &SearchArgs, mut probe: impl FnMut(f64) -> Result<Probe>) -> Result<Found> {
    let mut probes: Vec<Probe> = Vec::new();
    let mut best: Option<Probe> = None;
    let mut fail: Option<(f64, &'static str)> = None;
    let mut rate = args.start_pps.min(args.max_pps);
    let mut run = |rate: f64, probes: &mut Vec<Probe>| -> Result<Probe> {
        check_interrupted()?;
        let p = probe(rate)?;
        eprintln!(
            "    {:>9.0} pps offered: received {:>9.0} pps, loss {:.3}%{}, relay CPU {} µs/pkt: {:?}",
            p.offered_pps,
            p.relayed_pps,
            p.loss * 100.0,
            p.relay_sent.map_or(String::new(), |n| format!(" (relay sent {n} of {})", p.sent)),
            p.cpu_us_per_pkt.map_or("-".into(), |c| format!("{c:.2}")),
            p.outcome
        );
        probes.push(p.clone());
        Ok(p)
    };
    let verdict = |p: &Probe| match p.outcome {
        Outcome::Pass => None,
        Outcome::Loss => Some("loss"),
        Outcome::GeneratorLimited => Some("generator_limited"),
        Outcome::RelayFailed(_) => Some("relay_failed"),
    };
    // Climb.
    loop {
        let p = run(rate, &mut probes)?;
        match verdict(&p) {
            None => {
                best = Some(p);
                if rate >= args.max_pps {
                    break;
                }
                rate = (rate * 2.0).min(args.max_pps);
            }
            Some(why) => {
                fail = Some((rate, why));
                break;
            }
        }
    }
    // If even the first rate failed, come down until one passes.
    while best.is_none() && rate > 100.0 {
        rate /= 2.0;
        let p = run(rate, &mut probes)?;
        match verdict(&p) {
            None => best = Some(p),
            Some(why) => fail = Some((rate, why)),
        }
    }
    let stopped_by = fail.map_or("max_pps", |(_, why)| why);
    // Bisect.
    for _ in 0..8 {
        let (Some(lo), Some((hi, _))) = (best.as_ref(), fail) else { break };
        if hi <= lo.target_pps * (1.0 + args.precision) {
            break;
        }
        let mid = (lo.target_pps + hi) / 2.0;
        let p = run(mid, &mut probes)?;
        match verdict(&p) {
            None => best = Some(p),
            Some(why) => fail = Some((mid, why)),
        }
    }
    Ok(Found { best, stopped_by, probes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(rate: f64, limit: f64, gen_limit: f64) -> Probe {
        let outcome = if rate > gen_limit {
            Outcome::GeneratorLimited
        } else if rate > limit {
            Outcome::Loss
        } else {
            Outcome::Pass
        };
        Probe {
            target_pps: rate,
            offered_pps: rate,
            sent: rate as u64,
            send_dropped: 0,
            received: rate as u64,
            auth_failed: 0,
            duplicates: 0,
            other_errors: 0,
            loss: 0.0,
            relayed_pps: rate,
            cpu_us_per_pkt: None,
            outcome,
            relay_sent: None,
            recrypt_checked: None,
            first_packet: None,
        }
    }

    fn args() -> SearchArgs {
        SearchArgs { start_pps: 2000.0, max_pps: 1e6, probe_secs: 1.0, precision: 0.05, max_loss: 0.001 }
    }

    #[test]
    fn search_brackets_the_limit_within_the_precision() {
        let f = search(&args(), |r| Ok(fake(r, 11_000.0, f64::MAX))).unwrap();
        let best = f.best.unwrap().target_pps;
        assert!(best <= 11_000.0 && best > 11_000.0 / 1.06, "{best}");
        assert_eq!(f.stopped_by, "loss");
        assert!(f.probes.len() < 15);
    }

    #[test]
    fn search_reports_a_generator_ceiling() {
        let f = search(&args(), |r| Ok(fake(r, f64::MAX, 150_000.0))).unwrap();
        assert_eq!(f.stopped_by, "generator_limited");
        assert!(f.best.unwrap().target_pps > 140_000.0);
    }

    #[test]
    fn search_comes_down_when_the_first_rate_fails() {
        let f = search(&args(), |r| Ok(fake(r, 700.0, f64::MAX))).unwrap();
        let best = f.best.unwrap().target_pps;
        assert!(best <= 700.0 && best > 600.0, "{best}");
    }

    #[test]
    fn search_stops_at_max_and_propagates_errors() {
        let mut a = args();
        a.max_pps = 5000.0;
        let f = search(&a, |r| Ok(fake(r, f64::MAX, f64::MAX))).unwrap();
        assert_eq!((f.stopped_by, f.best.unwrap().target_pps), ("max_pps", 5000.0));
        assert!(search(&a, |_| anyhow::bail!("recrypt check failed")).is_err());
    }

    #[test]
    fn probe_over_loopback_counts_and_verifies() {
        // A relay-less loop: sender straight to the receiver, with a check that fails every
        // tenth packet, and this process standing in for the relay.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let mut i = 0u32;
        let make: MakePacket = Box::new(move |b| {
            b[..4].copy_from_slice(&i.to_be_bytes());
            i += 1;
            Ok(100)
        });
        let verify: Verify = Box::new(|b| {
            if u32::from_be_bytes(b[..4].try_into().unwrap()) % 10 == 9 {
                Err(relay::srtp::Error::AuthFailed)
            } else {
                Ok(())
            }
        });
        let cpus = Cpus { relay: 0, load: 0, pinned: false };
        let t = Traffic { tx, dst, make, sink: Sink { sock: rx, verify } };
        let p = probe(t, 2000.0, 0.5, std::process::id(), cpus, 0.001).unwrap();
        assert_eq!(p.sent, 1000);
        assert_eq!(p.received, 1000);
        assert_eq!(p.auth_failed, 100);
        assert_eq!(p.first_packet.unwrap()[..4], [0, 0, 0, 0]);
        assert!(p.offered_pps > 1800.0 && p.offered_pps < 2200.0, "{}", p.offered_pps);
    }
}
