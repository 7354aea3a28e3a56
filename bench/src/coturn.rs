//! The coturn baseline: turnserver relaying through a TURN allocation on loopback, loaded by
//! coturn's own `turnutils_uclient` against `turnutils_peer` (which echoes).
//!
//! coturn does no re-encryption: it forwards payloads as they are. The figures say so.
//!
//! The rate comes from the client's one-line-a-second progress counters, not from its "Total
//! transmit time" (which counts setup and loss timeouts): the window runs from the first line
//! that shows traffic to the last line before the client finished sending, so it holds only
//! whole seconds of full-rate sending. Every message is echoed, so relayed packets are
//! sent + received. turnserver's CPU time is sampled as each progress line arrives.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::procs::{check_interrupted, cpu_seconds, Cpus, Guard};
use relay::tempdir::TempDir;

const SECRET: &str = "benchsecret";

/// One progress line of `turnutils_uclient`:
/// `N: : start_mclient: msz=M, tot_send_msgs=S, tot_recv_msgs=R, ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Seconds since the client started (its own count).
    pub second: u64,
    /// Messages sent so far, all clients.
    pub sent: u64,
    /// Echoes received so far, all clients.
    pub received: u64,
}

/// Parses a progress line; `None` for any other line (including the final summary, which
/// lacks `msz=`).
pub fn parse_progress(line: &str) -> Option<Progress> {
    let (second, rest) = line.split_once(':')?;
    let rest = rest.trim_start().strip_prefix(": start_mclient: msz=")?;
    let field = |name: &str| -> Option<u64> {
        let v = rest.split(", ").find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
        v.trim().parse().ok()
    };
    Some(Progress {
        second: second.trim().parse().ok()?,
        sent: field("tot_send_msgs")?,
        received: field("tot_recv_msgs")?,
    })
}

/// A progress line with the time it arrived and turnserver's CPU seconds then.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Arrival, in seconds from the first sample.
    pub at: f64,
    /// turnserver's CPU seconds at arrival.
    pub cpu: f64,
    /// The counters.
    pub progress: Progress,
}

/// One coturn run's result.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Relayed packets (sent + echoed) per second over the window.
    pub relayed_pps: f64,
    /// turnserver CPU time per relayed packet over the window, in microseconds.
    pub cpu_us_per_pkt: f64,
    /// Seconds in the window.
    pub window_secs: f64,
    /// `1 - received / sent` over the whole run.
    pub loss: f64,
    /// Per-second relayed-packet deltas over the window.
    pub per_second: Vec<u64>,
}

/// Computes a run's figures from its samples; `total` is the messages each client was told
/// to send, times the clients.
pub fn window(samples: &[Sample], total: u64) -> Result<Run> {
    let first = samples.iter().position(|s| s.progress.sent > 0).context("the client never sent")?;
    let last = samples.iter().rposition(|s| s.progress.sent > 0 && s.progress.sent < total).unwrap_or(first);
    // Fewer than two whole seconds at full rate: take the window to the end of sending.
    let last = if last < first + 2 {
        samples.iter().position(|s| s.progress.sent >= total).unwrap_or(samples.len() - 1)
    } else {
        last
    };
    if last <= first {
        bail!("too short a coturn run to measure (raise --messages)");
    }
    let (a, b) = (&samples[first], &samples[last]);
    let relayed = |s: &Sample| s.progress.sent + s.progress.received;
    let n = relayed(b) - relayed(a);
    let secs = b.at - a.at;
    if n == 0 || secs <= 0.0 {
        bail!("no relayed packets in the coturn window");
    }
    let end = samples.last().context("no samples")?.progress;
    Ok(Run {
        relayed_pps: n as f64 / secs,
        cpu_us_per_pkt: (b.cpu - a.cpu) * 1e6 / n as f64,
        window_secs: secs,
        loss: if end.sent == 0 { 1.0 } else { 1.0 - end.received.min(end.sent) as f64 / end.sent as f64 },
        per_second: samples[first..=last].windows(2).map(|w| relayed(&w[1]) - relayed(&w[0])).collect(),
    })
}

/// The coturn programs.
pub struct Bins<'a> {
    /// turnserver.
    pub server: &'a Path,
    /// turnutils_peer.
    pub peer: &'a Path,
    /// turnutils_uclient.
    pub uclient: &'a Path,
}

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One run: a fresh turnserver (pinned to the relay CPU) and peer, and the client sending
/// `messages` messages of `size` bytes from each of `clients` clients.
pub fn run(bins: &Bins<'_>, cpus: Cpus, messages: u64, size: usize, clients: u32) -> Result<Run> {
    let dir = TempDir::new("coturn")?;
    let (turn_port, peer_port) = (free_port()?, free_port()?);
    let relay_min = 30_000 + (std::process::id() % 27) * 100;
    let mut server = cpus.command(cpus.relay, bins.server);
    server
        .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={turn_port}"))
        .args(["--use-auth-secret", &format!("--static-auth-secret={SECRET}"), "--realm=bench"])
        .args(["--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls"])
        .arg(format!("--min-port={relay_min}"))
        .arg(format!("--max-port={}", relay_min + 99))
        .arg(format!("--log-file={}", dir.join("turn.log").display()))
        .args(["--simple-log", "--no-stdout-log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = Guard::spawn(server, "turnserver")?;
    // Always -L: without it turnutils_peer listens on every address.
    let mut peer = cpus.command(cpus.load, bins.peer);
    peer.args(["-L", "127.0.0.1", "-p", &peer_port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut peer = Guard::spawn(peer, "turnutils_peer")?;
    std::thread::sleep(Duration::from_millis(300));
    server.check_alive()?;
    peer.check_alive()?;
    let total = messages * u64::from(clients);
    let mut samples = drive_client(bins, cpus, &server, (turn_port, peer_port), (messages, size, clients))?;
    // turnserver logs no "ready" line; a client started before it listens gives up without
    // sending. That is the start-up race, not coturn's throughput: retry once.
    if !samples.iter().any(|s| s.progress.sent > 0) {
        eprintln!("note: turnutils_uclient sent nothing (turnserver not listening yet?); retrying once");
        std::thread::sleep(Duration::from_secs(1));
        server.check_alive()?;
        samples = drive_client(bins, cpus, &server, (turn_port, peer_port), (messages, size, clients))?;
    }
    server.check_alive()?;
    window(&samples, total)
}

/// Runs turnutils_uclient against `server` and collects its progress lines until it has
/// sent everything and the echoes stop (or it goes quiet for 10 s).
fn drive_client(
    bins: &Bins<'_>,
    cpus: Cpus,
    server: &Guard,
    (turn_port, peer_port): (u16, u16),
    (messages, size, clients): (u64, usize, u32),
) -> Result<Vec<Sample>> {
    let mut client = cpus.command(cpus.load, bins.uclient);
    client
        .args(["-L", "127.0.0.1", "-e", "127.0.0.1", "-r", &peer_port.to_string(), "-p", &turn_port.to_string()])
        .args(["-W", SECRET, "-u", "benchuser", "-X", "-c"])
        .args([
            "-n",
            &messages.to_string(),
            "-l",
            &size.to_string(),
            "-m",
            &clients.to_string(),
            "-z",
            "0",
            "127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut client = Guard::spawn(client, "turnutils_uclient")?;
    let stdout = client.child_mut().stdout.take().context("uclient stdout")?;
    let (tx, rx) = mpsc::channel();
    let server_pid = server.pid();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let cpu = cpu_seconds(server_pid);
            if tx.send((Instant::now(), cpu, line)).is_err() {
                break;
            }
        }
    });
    let total = messages * u64::from(clients);
    let mut samples = Vec::new();
    let mut t0 = None;
    let deadline = Instant::now() + Duration::from_secs(30 + total / 1000);
    loop {
        check_interrupted()?;
        let Ok((at, cpu, line)) = rx.recv_timeout(Duration::from_secs(10)) else { break };
        let Some(progress) = parse_progress(&line) else { continue };
        let t0 = *t0.get_or_insert(at);
        samples.push(Sample { at: (at - t0).as_secs_f64(), cpu: cpu?, progress });
        // Done: everything sent and no echo arrived for a second (the client would otherwise
        // wait out its loss timeout).
        if let [.., p, q] = samples.as_slice() {
            if q.progress.sent >= total && q.progress.received == p.progress.received && p.progress.sent >= total {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("turnutils_uclient ran past its deadline");
        }
    }
    drop(client);
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured: `turnutils_uclient ... -n 60000 -l 1200 -m 1 -z 0` against coturn 4.6.1.
    const UCLIENT: &str = include_str!("../testdata/uclient_m1.txt");

    #[test]
    fn progress_lines_of_a_real_run() {
        let p: Vec<Progress> = UCLIENT.lines().filter_map(parse_progress).collect();
        assert_eq!(p.len(), 21, "one line a second, not the summary lines");
        assert_eq!(p[6], Progress { second: 7, sent: 4500, received: 4450 });
        assert_eq!(p[11], Progress { second: 12, sent: 60000, received: 59492 });
        assert_eq!(parse_progress("21: : start_mclient: tot_send_msgs=60000, tot_recv_msgs=59492"), None);
        assert_eq!(parse_progress("x: : start_mclient: msz=1, tot_send_msgs=1, tot_recv_msgs=1"), None);
        assert_eq!(parse_progress("1: : start_mclient: msz=1, tot_send_msgs=-1, tot_recv_msgs=1"), None);
    }

    #[test]
    fn window_holds_only_full_rate_seconds() {
        let samples: Vec<Sample> = UCLIENT
            .lines()
            .filter_map(parse_progress)
            .map(|p| Sample { at: p.second as f64, cpu: p.second as f64 * 0.2, progress: p })
            .collect();
        let r = window(&samples, 60000).unwrap();
        // From second 7 (4500 + 4450) to second 11 (54350 + 53792): four whole seconds.
        assert_eq!(r.window_secs, 4.0);
        assert_eq!(r.per_second, vec![24562, 24829, 24911, 24890]);
        assert!((r.relayed_pps - 99192.0 / 4.0).abs() < 1e-6);
        assert!((r.cpu_us_per_pkt - 0.8e6 / 99192.0).abs() < 1e-6);
        assert!((r.loss - 508.0 / 60000.0).abs() < 1e-9);
    }

    #[test]
    fn window_of_nothing_is_an_error() {
        let idle = Sample { at: 0.0, cpu: 0.0, progress: Progress { second: 0, sent: 0, received: 0 } };
        assert!(window(&[idle, idle], 10).is_err());
        assert!(window(&[], 10).is_err());
    }
}
