//! Automatic blocking of flooding sources, sans-IO.
//!
//! Each poll the monitor feeds [`Detector::observe`] relayd's offenders (cumulative kernel
//! drop counts per source address, highest first) with `now`. The detector turns counter
//! deltas between polls into per-source drop rates and returns [`Decision`]s: `Block` a
//! source (/32 or /128) whose rate exceeds `pps_threshold`, and `Unblock` it when its TTL
//! has passed. The daemon applies decisions to its store and to relayd.
//!
//! Invariants and why:
//! - **Fast**: a new source is blocked on the first poll that sees it when the previous poll's
//!   list was complete (shorter than the requested limit): it was then absent from the
//!   kernel's table, so its whole count accrued since that poll and `count / interval` is a
//!   lower bound of its rate. With a 500 ms poll a flood is blocked within about one
//!   interval of crossing the threshold, well inside 2 s. If the previous list was truncated
//!   the first sighting only sets a baseline and the next poll decides.
//! - **Never over-estimated**: every rate is a lower bound. A source missing from some polls
//!   is measured over the whole time since it was last seen; a counter that went down
//!   (relayd restarted, or the kernel's LRU evicted and re-created the entry) is taken as
//!   having restarted from zero after the last sighting.
//! - **Once per block**: a blocked source is not re-emitted while its block lives; its counter
//!   keeps being tracked, so if it still floods when the TTL ends it is unblocked and blocked
//!   again on the same poll (the daemon sees the pair and can merge it).
//! - **Bounded**: at most `max_tracked` sources are tracked (the least recently seen are
//!   forgotten first) and at most `max_blocks` blocks are live; a flooder beyond that is
//!   counted in `skipped_full`, never silently dropped.
//! - **Exempt**: an address inside an `exempt` CIDR is never blocked (addresses are compared
//!   in canonical form, so `::ffff:192.0.2.1` matches `192.0.2.0/24`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use relay::prefix::Prefix;
use serde::{Deserialize, Serialize};

/// Largest `max_tracked`.
pub const MAX_TRACKED_LIMIT: usize = 1 << 20;
/// Most entries in `exempt`.
pub const MAX_EXEMPT: usize = 1024;

/// Why an autoblock configuration was refused (a bad `exempt` prefix is refused by
/// [`Prefix`]'s parser, with a [`relay::prefix::PrefixError`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AutoblockError {
    /// A number is outside its allowed range.
    #[error("autoblock.{field} = {value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The key.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
}

/// `[autoblock]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoblockConfig {
    /// Whether sources are blocked at all (the detector still tracks rates when off).
    pub enabled: bool,
    /// Kernel drops per second from one source above which it is blocked (1..=10^9).
    pub pps_threshold: u64,
    /// How long a block lasts, seconds (1..=2592000).
    pub ttl_secs: u64,
    /// Most sources whose counters are tracked (16..=1048576).
    pub max_tracked: usize,
    /// Most live blocks (1..=1048576).
    pub max_blocks: usize,
    /// Prefixes never blocked (at most 1024), e.g. monitoring probes, peers, the office.
    pub exempt: Vec<Prefix>,
}

impl Default for AutoblockConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pps_threshold: 1_000,
            ttl_secs: 600,
            max_tracked: 4096,
            max_blocks: 1024,
            exempt: Vec::new(),
        }
    }
}

impl AutoblockConfig {
    /// Checks every bound; the first violation is returned, naming its key.
    pub fn validate(&self) -> Result<(), AutoblockError> {
        let check = |field, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(AutoblockError::OutOfRange { field, value, min, max })
            }
        };
        check("pps_threshold", self.pps_threshold, 1, 1_000_000_000)?;
        check("ttl_secs", self.ttl_secs, 1, 2_592_000)?;
        check("max_tracked", self.max_tracked as u64, 16, MAX_TRACKED_LIMIT as u64)?;
        check("max_blocks", self.max_blocks as u64, 1, MAX_TRACKED_LIMIT as u64)?;
        check("exempt", self.exempt.len() as u64, 0, MAX_EXEMPT as u64)
    }
}

/// One source's cumulative kernel drop count: relayd's `offenders` op answers these.
pub use relay::mgmt::Offender;

/// What the daemon should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Block `cidr` (a single address) for `ttl_secs`.
    Block {
        /// The source, /32 or /128.
        cidr: Prefix,
        /// Lifetime of the block.
        ttl_secs: u64,
        /// The measured drop rate that triggered it (a lower bound).
        drops_per_sec: u64,
        /// The threshold it crossed (`pps_threshold`).
        threshold: u64,
    },
    /// The block of `cidr` reached its TTL: remove it.
    Unblock {
        /// The source.
        cidr: Prefix,
    },
}

impl Decision {
    /// The blocklist reason text for a block (at most 128 bytes).
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Block { drops_per_sec, threshold, .. } => {
                Some(format!("autoblock: {drops_per_sec} drops/s over {threshold}/s"))
            }
            Self::Unblock { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Track {
    count: u64,
    seen: Instant,
}

/// Counters of the detector itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Sources over the threshold not blocked because `max_blocks` blocks are live.
    pub skipped_full: u64,
    /// Sources over the threshold not blocked because they are exempt.
    pub skipped_exempt: u64,
    /// Counter decreases seen (relayd restarts or kernel LRU evictions).
    pub counter_resets: u64,
}

/// The sans-IO detector.
#[derive(Debug)]
pub struct Detector {
    cfg: AutoblockConfig,
    tracked: HashMap<IpAddr, Track>,
    blocked: HashMap<IpAddr, Instant>,
    prev_poll: Option<(Instant, bool)>,
    stats: DetectorStats,
}

impl Detector {
    /// A detector for a validated config.
    pub fn new(cfg: AutoblockConfig) -> Self {
        Self { cfg, tracked: HashMap::new(), blocked: HashMap::new(), prev_poll: None, stats: DetectorStats::default() }
    }

    /// The config.
    pub fn config(&self) -> &AutoblockConfig {
        &self.cfg
    }

    /// Live blocks.
    pub fn active_blocks(&self) -> usize {
        self.blocked.len()
    }

    /// Sources tracked.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// The detector's own counters.
    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    /// Feeds one poll's offenders. `complete` says the list holds every source relayd knows
    /// (it was shorter than the limit asked for). Returns unblocks first, then blocks.
    pub fn observe(&mut self, now: Instant, offenders: &[Offender], complete: bool) -> Vec<Decision> {
        let mut out = self.expire(now);
        let ttl = Duration::from_secs(self.cfg.ttl_secs);
        // A new source may be measured from the previous poll only if that poll saw everything.
        let prev_complete_at = self.prev_poll.and_then(|(t, c)| c.then_some(t));
        for o in offenders {
            let ip = o.ip.to_canonical();
            let prev = self.tracked.get(&ip).copied();
            self.tracked.insert(ip, Track { count: o.dropped_packets, seen: now });
            let (base, since) = match prev {
                Some(p) if o.dropped_packets >= p.count => (p.count, p.seen),
                Some(p) => {
                    self.stats.counter_resets += 1;
                    (0, p.seen)
                }
                None => match prev_complete_at {
                    Some(t) => (0, t),
                    None => continue,
                },
            };
            let ms = now.saturating_duration_since(since).as_millis();
            if ms == 0 {
                continue;
            }
            let delta = o.dropped_packets - base;
            let rate = u64::try_from(u128::from(delta) * 1000 / ms).unwrap_or(u64::MAX);
            // Integer comparison of delta/dt > threshold, exact: delta·1000 > threshold·ms.
            let over = u128::from(delta) * 1000 > u128::from(self.cfg.pps_threshold) * ms;
            if !over || !self.cfg.enabled || self.blocked.contains_key(&ip) {
                continue;
            }
            if self.cfg.exempt.iter().any(|c| c.contains(ip)) {
                self.stats.skipped_exempt += 1;
                continue;
            }
            if self.blocked.len() >= self.cfg.max_blocks {
                self.stats.skipped_full += 1;
                continue;
            }
            self.blocked.insert(ip, now + ttl);
            out.push(Decision::Block {
                cidr: Prefix::host(ip),
                ttl_secs: self.cfg.ttl_secs,
                drops_per_sec: rate,
                threshold: self.cfg.pps_threshold,
            });
        }
        if self.tracked.len() > self.cfg.max_tracked {
            let mut by_age: Vec<(Instant, IpAddr)> = self.tracked.iter().map(|(ip, t)| (t.seen, *ip)).collect();
            by_age.sort_unstable();
            let excess = self.tracked.len() - self.cfg.max_tracked;
            for (_, ip) in by_age.into_iter().take(excess) {
                self.tracked.remove(&ip);
            }
        }
        self.prev_poll = Some((now, complete));
        out
    }

    /// Releases the blocks whose TTL has passed (also called by [`observe`](Self::observe));
    /// the monitor calls it alone on polls where relayd did not answer.
    pub fn expire(&mut self, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        self.blocked.retain(|ip, expires| {
            let live = *expires > now;
            if !live {
                out.push(Decision::Unblock { cidr: Prefix::host(*ip) });
            }
            live
        });
        out
    }

    /// Notes that the poll failed (relayd unreachable): the next list cannot be compared with
    /// a complete previous one.
    pub fn poll_failed(&mut self) {
        self.prev_poll = None;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const POLL: Duration = Duration::from_millis(500);

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// A virtual clock and a fake kernel table of cumulative drop counts.
    struct Sim {
        det: Detector,
        start: Instant,
        t: Duration,
        counts: HashMap<IpAddr, u64>,
        limit: usize,
    }

    impl Sim {
        fn new(cfg: AutoblockConfig) -> Self {
            cfg.validate().expect("valid test config");
            Self {
                det: Detector::new(cfg),
                start: Instant::now(),
                t: Duration::ZERO,
                counts: HashMap::new(),
                limit: 256,
            }
        }

        /// Advances one poll with `pps` drops per second for each listed source.
        fn poll(&mut self, rates: &[(&str, u64)]) -> Vec<Decision> {
            self.t += POLL;
            for (a, pps) in rates {
                *self.counts.entry(ip(a)).or_default() += pps / 2;
            }
            let mut list: Vec<Offender> =
                self.counts.iter().map(|(ip, c)| Offender { ip: *ip, dropped_packets: *c }).collect();
            list.sort_by_key(|o| std::cmp::Reverse(o.dropped_packets));
            let complete = list.len() < self.limit;
            list.truncate(self.limit);
            self.det.observe(self.start + self.t, &list, complete)
        }
    }

    fn cfg(threshold: u64, ttl: u64) -> AutoblockConfig {
        AutoblockConfig { pps_threshold: threshold, ttl_secs: ttl, ..AutoblockConfig::default() }
    }

    fn blocked(d: &[Decision]) -> Vec<String> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Block { cidr, .. } => Some(cidr.to_string()),
                Decision::Unblock { .. } => None,
            })
            .collect()
    }

    fn unblocked(d: &[Decision]) -> Vec<String> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Unblock { cidr } => Some(cidr.to_string()),
                Decision::Block { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_new_flooder_is_blocked_on_the_first_poll_that_sees_it() {
        let mut sim = Sim::new(cfg(1000, 60));
        assert!(sim.poll(&[("198.18.0.1", 10)]).is_empty(), "first poll: baseline only");
        let d = sim.poll(&[("198.18.0.1", 10), ("198.18.0.9", 5000)]);
        assert_eq!(blocked(&d), ["198.18.0.9/32"]);
        let Decision::Block { ttl_secs, drops_per_sec, .. } = d[0] else { panic!("a block") };
        assert_eq!((ttl_secs, drops_per_sec), (60, 5000));
        assert_eq!(d[0].reason().as_deref(), Some("autoblock: 5000 drops/s over 1000/s"));
        // Not re-emitted while the block lives, though drops (now blocklisted) continue.
        for _ in 0..50 {
            assert!(sim.poll(&[("198.18.0.9", 5000)]).is_empty());
        }
        assert_eq!(sim.det.active_blocks(), 1);
    }

    #[test]
    fn a_truncated_previous_list_delays_the_decision_by_one_poll() {
        let mut sim = Sim::new(cfg(1000, 60));
        sim.limit = 2;
        sim.poll(&[("198.18.0.1", 10), ("198.18.0.2", 10), ("198.18.0.3", 10)]);
        // The flooder tops the list, but the previous list was truncated: baseline.
        assert!(sim.poll(&[("198.18.0.9", 50_000)]).is_empty());
        assert_eq!(blocked(&sim.poll(&[("198.18.0.9", 50_000)])), ["198.18.0.9/32"]);
    }

    #[test]
    fn rates_at_or_under_the_threshold_are_not_blocked() {
        let mut sim = Sim::new(cfg(1000, 60));
        sim.poll(&[]);
        for _ in 0..20 {
            assert!(sim.poll(&[("198.18.0.1", 1000), ("198.18.0.2", 998)]).is_empty());
        }
        assert_eq!(blocked(&sim.poll(&[("198.18.0.1", 1002)])), ["198.18.0.1/32"]);
    }

    #[test]
    fn ttl_releases_and_a_continuing_flood_is_blocked_again() {
        let mut sim = Sim::new(cfg(1000, 2));
        sim.poll(&[]);
        assert_eq!(blocked(&sim.poll(&[("2001:db8::7", 4000)])), ["2001:db8::7/128"]);
        for _ in 0..3 {
            assert!(sim.poll(&[("2001:db8::7", 4000)]).is_empty());
        }
        // TTL reached while still flooding: release and re-block on the same poll.
        let d = sim.poll(&[("2001:db8::7", 4000)]);
        assert_eq!(unblocked(&d), ["2001:db8::7/128"]);
        assert_eq!(blocked(&d), ["2001:db8::7/128"]);
        // Flood stops: after the TTL it is released and stays released.
        let mut all = Vec::new();
        for _ in 0..10 {
            all.extend(sim.poll(&[]));
        }
        assert_eq!(unblocked(&all), ["2001:db8::7/128"]);
        assert!(blocked(&all).is_empty());
        assert_eq!(sim.det.active_blocks(), 0);
    }

    #[test]
    fn counter_resets_are_not_floods() {
        let mut sim = Sim::new(cfg(1000, 60));
        sim.poll(&[("198.18.0.5", 100)]);
        for _ in 0..4 {
            sim.poll(&[("198.18.0.5", 100)]);
        }
        // relayd restarted: the count falls from 250 to 20 (quiet since).
        sim.counts.insert(ip("198.18.0.5"), 20);
        assert!(sim.poll(&[]).is_empty());
        assert_eq!(sim.det.stats().counter_resets, 1);
        // And a relayd restart followed by a flood is still caught.
        sim.counts.insert(ip("198.18.0.5"), 0);
        let d = sim.poll(&[("198.18.0.5", 3000)]);
        assert_eq!(blocked(&d), ["198.18.0.5/32"]);
    }

    #[test]
    fn exempt_prefixes_are_never_blocked() {
        let mut c = cfg(100, 60);
        c.exempt = vec!["198.18.0.0/24".parse().expect("cidr"), "2001:db8::/32".parse().expect("cidr")];
        let mut sim = Sim::new(c);
        sim.poll(&[]);
        let d = sim.poll(&[
            ("198.18.0.7", 10_000),
            ("::ffff:198.18.0.8", 10_000),
            ("2001:db8::1", 10_000),
            ("198.18.1.1", 10_000),
        ]);
        assert_eq!(blocked(&d), ["198.18.1.1/32"]);
        assert_eq!(sim.det.stats().skipped_exempt, 3);
    }

    #[test]
    fn memory_and_blocks_are_bounded() {
        let mut c = cfg(100, 60);
        c.max_tracked = 16;
        c.max_blocks = 3;
        let mut sim = Sim::new(c);
        sim.poll(&[]);
        let sources: Vec<String> = (0..40).map(|i| format!("198.18.2.{i}")).collect();
        let rates: Vec<(&str, u64)> = sources.iter().map(|s| (s.as_str(), 1000)).collect();
        let d = sim.poll(&rates);
        assert_eq!(blocked(&d).len(), 3);
        assert_eq!(sim.det.stats().skipped_full, 37);
        assert!(sim.det.tracked() <= 16);
        // The least recently seen go first (the kernel's LRU forgot the 40 meanwhile).
        sim.counts.clear();
        sim.poll(&[("198.18.3.1", 1)]);
        assert!(sim.det.tracked.contains_key(&ip("198.18.3.1")));
        assert_eq!(sim.det.tracked(), 16);
    }

    #[test]
    fn disabled_detector_never_blocks() {
        let mut c = cfg(100, 60);
        c.enabled = false;
        let mut sim = Sim::new(c);
        sim.poll(&[]);
        assert!(sim.poll(&[("198.18.0.1", 100_000)]).is_empty());
    }

    #[test]
    fn a_failed_poll_forgets_completeness() {
        let mut sim = Sim::new(cfg(1000, 60));
        sim.poll(&[]);
        sim.det.poll_failed();
        assert!(sim.poll(&[("198.18.0.1", 5000)]).is_empty(), "baseline after an outage");
        assert_eq!(blocked(&sim.poll(&[("198.18.0.1", 5000)])), ["198.18.0.1/32"]);
    }

    #[test]
    fn cidr_parsing_and_matching() {
        use relay::prefix::PrefixError;
        let c: Prefix = "198.18.0.0/15".parse().expect("valid");
        assert!(c.contains(IpAddr::V4(Ipv4Addr::new(198, 19, 255, 255))));
        assert!(!c.contains(IpAddr::V4(Ipv4Addr::new(198, 20, 0, 0))));
        assert!(c.contains(ip("::ffff:198.18.3.4")));
        assert!(!c.contains(ip("2001:db8::1")));
        assert_eq!(c.to_string(), "198.18.0.0/15");
        assert_eq!("192.0.2.1".parse::<Prefix>().expect("bare").to_string(), "192.0.2.1/32");
        assert_eq!("::ffff:192.0.2.1".parse::<Prefix>().expect("mapped").to_string(), "192.0.2.1/32");
        let all6: Prefix = "::/0".parse().expect("valid");
        assert!(all6.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!all6.contains(ip("127.0.0.1")));
        assert!(matches!("10.0.0.1/8".parse::<Prefix>(), Err(PrefixError::HostBits(_))));
        assert!(matches!("10.0.0.0/33".parse::<Prefix>(), Err(PrefixError::TooLong(_))));
        assert!(matches!("10.0.0.0/999".parse::<Prefix>(), Err(PrefixError::TooLong(_))));
        for bad in ["10.0.0.0/", "10.0.0.0/+8", "10.0.0/8", "host/8", ""] {
            assert!(matches!(bad.parse::<Prefix>(), Err(PrefixError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn config_is_strict_and_validated() {
        let c: AutoblockConfig =
            toml::from_str("pps_threshold = 500\nexempt = [\"10.0.0.0/8\", \"::1\"]\n").expect("valid");
        assert_eq!(c.pps_threshold, 500);
        assert_eq!(c.exempt.len(), 2);
        assert!(c.validate().is_ok());
        let unknown = toml::from_str::<AutoblockConfig>("pps = 5").expect_err("unknown key");
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
        let bad_cidr = toml::from_str::<AutoblockConfig>("exempt = [\"10.0.0.1/8\"]").expect_err("host bits");
        assert!(bad_cidr.to_string().contains("host bits set"), "{bad_cidr}");
        let zero = AutoblockConfig { ttl_secs: 0, ..AutoblockConfig::default() };
        assert_eq!(
            zero.validate().expect_err("ttl 0").to_string(),
            "autoblock.ttl_secs = 0 is out of range (1..=2592000)"
        );
    }
}
