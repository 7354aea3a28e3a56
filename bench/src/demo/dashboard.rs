//! The demo's live view: one [`Frame`] a second, drawn in place with plain ANSI escapes on a
//! terminal, or as one compact line when stdout is not a terminal (CI logs, pipes).
//!
//! Rates are counter deltas between two relayd snapshots over the monotonic time between them.
//! An XDP verdict counts as a kernel drop unless it is `pass_*`, `redirect_*` or `no_socket`,
//! the rule relay-control's `/metrics` uses too.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use relay::stats::Snapshot;

/// Whether an XDP verdict name is a drop.
pub fn is_kernel_drop(verdict: &str) -> bool {
    !(verdict.starts_with("pass_") || verdict.starts_with("redirect_") || verdict == "no_socket")
}

/// `(name, per second, total)` for every counter of `now` that is non-zero, from the deltas to
/// `before` over `secs`.
fn rates(
    now: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
    secs: f64,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, f64, u64)> {
    now.iter()
        .filter(|(k, v)| **v > 0 && keep(k))
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0)) as f64 / secs, *v))
        .collect()
}

/// One room's delivery so far.
pub struct RoomLine {
    /// e.g. `app 1400000101 room 1`.
    pub name: String,
    /// Packets its publisher sent.
    pub sent: u64,
    /// The worst receiver's count.
    pub worst_received: u64,
    /// Receivers in the room.
    pub receivers: usize,
    /// Authentication failures plus foreign packets, all receivers.
    pub bad: u64,
}

/// Everything one redraw shows.
pub struct Frame {
    /// Seconds of media so far.
    pub elapsed: f64,
    /// The planned run.
    pub total: u64,
    /// Packets per second hitting relayd's interface (every XDP verdict).
    pub kernel_in: f64,
    /// Packets per second reaching relayd's userspace.
    pub relayd_in: f64,
    /// Packets per second relayd sent.
    pub relayd_out: f64,
    /// Kernel drops by reason: per second, total.
    pub kernel_drops: Vec<(String, f64, u64)>,
    /// Engine drops by reason: per second, total.
    pub engine_drops: Vec<(String, f64, u64)>,
    /// Live sessions and rooms (relayd's).
    pub sessions: u64,
    /// Live rooms.
    pub rooms: u64,
    /// Latency percentiles so far, in ms, over every room.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Per room.
    pub room_lines: Vec<RoomLine>,
    /// The attacker's state, in words.
    pub attacker: String,
    /// relay-control's blocklist entries, in words.
    pub blocklist: Vec<String>,
}

impl Frame {
    /// A frame from two relayd snapshots `secs` apart; the other fields are left empty.
    pub fn from_snapshots(now: &Snapshot, before: &Snapshot, secs: f64) -> Self {
        let secs = secs.max(1e-3);
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        let kernel = |s: &Snapshot| s.xdp.values().sum::<u64>();
        Self {
            elapsed: 0.0,
            total: 0,
            kernel_in: d(kernel(now), kernel(before)),
            relayd_in: d(now.rx_packets, before.rx_packets),
            relayd_out: d(now.tx_packets, before.tx_packets),
            kernel_drops: rates(&now.xdp, &before.xdp, secs, is_kernel_drop),
            engine_drops: rates(&now.drops, &before.drops, secs, |_| true),
            sessions: now.sessions,
            rooms: now.rooms,
            p50_ms: None,
            p99_ms: None,
            room_lines: Vec::new(),
            attacker: String::new(),
            blocklist: Vec::new(),
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"))
}

fn drops(list: &[(String, f64, u64)]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter().map(|(k, r, t)| format!("{k} {r:.0}/s ({t})")).collect::<Vec<_>>().join(", ")
}

/// The full-screen view: cursor home, each line cleared to its end, the rest of the screen
/// cleared.
pub fn render_screen(f: &Frame) -> String {
    let mut s = String::from("\x1b[H");
    let mut line = |text: String| {
        let _ = writeln!(s, "{text}\x1b[K");
    };
    line(format!("edgerelay demo: virtual edge, relayd on the XDP backend   t = {:.0}/{} s", f.elapsed, f.total));
    line(String::new());
    line(format!(
        "packets in   {:>10.0} pps at the interface (XDP)   {:>8.0} pps reach relayd",
        f.kernel_in, f.relayd_in
    ));
    line(format!("packets out  {:>10.0} pps", f.relayd_out));
    line(format!("drops kernel {}", drops(&f.kernel_drops)));
    line(format!("drops engine {}", drops(&f.engine_drops)));
    line(format!("sessions {}   rooms {}   latency p50 {}   p99 {}", f.sessions, f.rooms, ms(f.p50_ms), ms(f.p99_ms)));
    line(String::new());
    for r in &f.room_lines {
        let pct = if r.sent == 0 { 100.0 } else { r.worst_received as f64 * 100.0 / r.sent as f64 };
        line(format!(
            "  {:<28} sent {:>7}   worst of {} receivers {:>7} ({pct:>6.2}%)   bad {}",
            r.name, r.sent, r.receivers, r.worst_received, r.bad
        ));
    }
    line(String::new());
    line(format!("attacker     {}", f.attacker));
    if f.blocklist.is_empty() {
        line("blocklist    (empty)".into());
    }
    for (i, b) in f.blocklist.iter().enumerate() {
        line(format!("{} {b}", if i == 0 { "blocklist   " } else { "            " }));
    }
    s.push_str("\x1b[J");
    s
}

/// One compact line.
pub fn render_line(f: &Frame) -> String {
    // A fold from 0.0: `sum` of no floats is -0.0, which prints as "-0".
    let kernel_drops = f.kernel_drops.iter().fold(0.0, |a, (_, r, _)| a + r);
    let engine_drops = f.engine_drops.iter().fold(0.0, |a, (_, r, _)| a + r);
    format!(
        "t={:>3.0}s in {:.0} pps (xdp) {:.0} pps (relayd) out {:.0} pps | drops kernel {kernel_drops:.0}/s engine {engine_drops:.0}/s | sessions {} rooms {} | p50 {} p99 {} | attacker: {} | blocklist: {}",
        f.elapsed,
        f.kernel_in,
        f.relayd_in,
        f.relayd_out,
        f.sessions,
        f.rooms,
        ms(f.p50_ms),
        ms(f.p99_ms),
        f.attacker,
        if f.blocklist.is_empty() { "empty".into() } else { f.blocklist.join("; ") }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(rx: u64, xdp: &[(&str, u64)], drops: &[(&str, u64)]) -> Snapshot {
        Snapshot {
            rx_packets: rx,
            xdp: xdp.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            drops: drops.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn rates_are_deltas_and_pass_verdicts_are_not_drops() {
        let before = snap(100, &[("redirect_media", 100), ("unknown_session", 0)], &[("replayed", 1)]);
        let now =
            snap(300, &[("redirect_media", 300), ("unknown_session", 1000), ("pass_not_ours", 7)], &[("replayed", 1)]);
        let f = Frame::from_snapshots(&now, &before, 2.0);
        assert_eq!(f.relayd_in, 100.0);
        assert_eq!(f.kernel_in, (1307.0 - 100.0) / 2.0);
        assert_eq!(f.kernel_drops, vec![("unknown_session".to_owned(), 500.0, 1000)]);
        assert_eq!(f.engine_drops, vec![("replayed".to_owned(), 0.0, 1)]);
        assert!(render_line(&f).contains("drops kernel 500/s engine 0/s"), "{}", render_line(&f));
        assert!(render_screen(&f).contains("unknown_session 500/s (1000)"));
    }
}
