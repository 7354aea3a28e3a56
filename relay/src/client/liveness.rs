//! When a client's session is lost, and when to join again: the timers behind
//! [`super::Client::poll_session`], sans-IO (every method takes `now_ms`, a monotonic
//! millisecond clock of the caller's).
//!
//! A session is **lost** when the relay answers a keepalive with `unknown_session` (it
//! restarted, or expired the session), or when nothing authenticated came from the relay
//! for the [no-answer deadline](no_answer_deadline_ms). Then the client joins again, with
//! fresh SSRCs, on the [`Backoff`] schedule.
//!
//! Why the deadline is `min(2 × keepalive + 1 s, timeout)`: keepalives go out every
//! `keepalive_secs`, so an answer is normally at most one interval plus a round trip old.
//! Two intervals tolerate one lost keepalive or ack (UDP loses some), and the extra second
//! covers round trips and scheduling. Waiting longer than the relay's own `timeout_secs`
//! is pointless: by then a relay that heard nothing has expired the session anyway, and a
//! relay that did hear us but cannot answer is no use either.
//!
//! **Failover** (a client with several nodes, [`Timers::failover`]): the deadline is the
//! client's own, [`DEFAULT_FAILOVER_MS`] unless configured, because a dead node must be
//! noticed in about a second for its clients to decode again within 3 s of its death (the
//! rest of that budget is the join at the next node and the cross-node leg). Keepalives
//! alone at the answer's interval (whole seconds, at least 1) cannot do that, so the client
//! also *probes*: once nothing authenticated has come for a quarter of the deadline, it
//! sends a keepalive every quarter deadline (300 ms at the default) until something does.
//! Four probe periods per deadline tolerate two lost probes or acks in a row, and leave a
//! period for the round trip and scheduling. A client that receives media (under the
//! session's keys, which counts as an answer) never probes, so the extra keepalives cost
//! only clients that hear nothing else, and the relay still sees the answer's interval
//! from everyone else.
#![forbid(unsafe_code)]

/// Grace beyond two keepalive intervals before a silent relay counts as gone.
pub const ANSWER_GRACE_MS: u64 = 1000;
/// The first join attempt after a loss is sent at once; the next after this long.
pub const REJOIN_FIRST_MS: u64 = 250;
/// Join attempts after a loss are at most this far apart: a restarted relay is joined
/// within a second of listening again, and a relay that stays down gets one join a
/// second from each of its clients.
pub const REJOIN_MAX_MS: u64 = 1000;

/// The no-answer deadline for a session with these timers (see the module doc).
pub fn no_answer_deadline_ms(keepalive_secs: u16, timeout_secs: u16) -> u64 {
    let k = u64::from(keepalive_secs.max(1)) * 1000;
    let t = u64::from(timeout_secs.max(1)) * 1000;
    (2 * k + ANSWER_GRACE_MS).min(t)
}

/// A client with several nodes moves to the next one after this long without an
/// authenticated answer, unless configured otherwise (see the module doc for why).
pub const DEFAULT_FAILOVER_MS: u64 = 1200;
/// The shortest failover deadline a client takes: below it, probes (a quarter of it) would
/// come faster than every 50 ms and a few lost datagrams would move the client.
pub const MIN_FAILOVER_MS: u64 = 200;

/// The failover deadline for a configured value (`None`: [`DEFAULT_FAILOVER_MS`]), clamped
/// to [`MIN_FAILOVER_MS`].
pub fn failover_deadline_ms(configured: Option<u64>) -> u64 {
    configured.unwrap_or(DEFAULT_FAILOVER_MS).max(MIN_FAILOVER_MS)
}

/// When a session counts as lost, and how often it is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Keepalives at least this often (the join answer's `keepalive_secs`).
    pub interval_ms: u64,
    /// Keepalives this often while nothing authenticated arrives (at most `interval_ms`).
    pub probe_ms: u64,
    /// Lost after this long without an authenticated answer.
    pub deadline_ms: u64,
}

impl Timers {
    /// One node: the answer's interval and [`no_answer_deadline_ms`], no probes.
    pub fn single(keepalive_secs: u16, timeout_secs: u16) -> Self {
        let interval_ms = u64::from(keepalive_secs.max(1)) * 1000;
        Self { interval_ms, probe_ms: interval_ms, deadline_ms: no_answer_deadline_ms(keepalive_secs, timeout_secs) }
    }

    /// Several nodes: the failover deadline `failover_ms` (never past the relay's timeout),
    /// probes at a quarter of it.
    pub fn failover(keepalive_secs: u16, timeout_secs: u16, failover_ms: u64) -> Self {
        let interval_ms = u64::from(keepalive_secs.max(1)) * 1000;
        let deadline_ms = failover_ms.min(u64::from(timeout_secs.max(1)) * 1000);
        Self { interval_ms, probe_ms: (deadline_ms / 4).clamp(1, interval_ms), deadline_ms }
    }
}

/// A joined session's keepalive schedule and answer deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    timers: Timers,
    next_keepalive_ms: u64,
    last_sent_ms: u64,
    last_answer_ms: u64,
    outstanding: bool,
}

impl Liveness {
    /// A session with `timers` that was answered at `now_ms` (joined, or first polled).
    pub fn new(now_ms: u64, timers: Timers) -> Self {
        Self {
            timers,
            next_keepalive_ms: now_ms + timers.interval_ms,
            last_sent_ms: now_ms,
            last_answer_ms: now_ms,
            outstanding: false,
        }
    }

    /// The timers.
    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// When the next probe is due: a probe period after both the last answer and the last
    /// keepalive.
    fn next_probe_ms(&self) -> u64 {
        self.last_answer_ms.max(self.last_sent_ms) + self.timers.probe_ms
    }

    /// Whether a keepalive is due at `now_ms`: the interval passed, or a probe is due.
    pub fn keepalive_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_keepalive_ms.min(self.next_probe_ms())
    }

    /// A keepalive went out at `now_ms`.
    pub fn sent_keepalive(&mut self, now_ms: u64) {
        self.next_keepalive_ms = now_ms + self.timers.interval_ms;
        self.last_sent_ms = now_ms;
        self.outstanding = true;
    }

    /// Something authenticated came from the relay at `now_ms`: media under this
    /// session's keys, or (`ack`) the keepalive-ack that answers the keepalive sent.
    pub fn answered(&mut self, now_ms: u64, ack: bool) {
        self.last_answer_ms = self.last_answer_ms.max(now_ms);
        if ack {
            self.outstanding = false;
        }
    }

    /// Whether a keepalive is unanswered: only then is an (unauthenticated)
    /// `unknown_session` refusal taken as the answer to it.
    pub fn awaiting_answer(&self) -> bool {
        self.outstanding
    }

    /// Whether the relay has been silent past the deadline at `now_ms`.
    pub fn lost(&self, now_ms: u64) -> bool {
        now_ms >= self.last_answer_ms + self.timers.deadline_ms
    }

    /// The next time something is due: a keepalive, a probe, or the deadline.
    pub fn next_due_ms(&self) -> u64 {
        self.next_keepalive_ms.min(self.next_probe_ms()).min(self.last_answer_ms + self.timers.deadline_ms)
    }
}

/// The join attempts after a loss: at once, then 250 ms later, doubling up to
/// [`REJOIN_MAX_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next_ms: u64,
    gap_ms: u64,
}

impl Backoff {
    /// Attempts starting at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self { next_ms: now_ms, gap_ms: REJOIN_FIRST_MS }
    }

    /// Whether an attempt is due at `now_ms`; if so, it is taken and the next one scheduled.
    pub fn take(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_ms {
            return false;
        }
        self.next_ms = now_ms + self.gap_ms;
        self.gap_ms = (self.gap_ms * 2).min(REJOIN_MAX_MS);
        true
    }

    /// When the next attempt is due.
    pub fn next_ms(&self) -> u64 {
        self.next_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_tolerates_one_lost_keepalive_and_never_outlasts_the_timeout() {
        assert_eq!(no_answer_deadline_ms(5, 30), 11_000);
        assert_eq!(no_answer_deadline_ms(1, 5), 3_000);
        assert_eq!(no_answer_deadline_ms(5, 6), 6_000);
        let mut l = Liveness::new(0, Timers::single(1, 5));
        assert!(!l.keepalive_due(999) && l.keepalive_due(1000));
        l.sent_keepalive(1000);
        assert!(l.awaiting_answer());
        l.answered(1005, false);
        assert!(l.awaiting_answer(), "media does not answer a keepalive");
        l.answered(1010, true);
        assert!(!l.awaiting_answer());
        assert_eq!(l.next_due_ms(), 2000);
        assert!(!l.lost(4009) && l.lost(4010));
    }

    #[test]
    fn with_failover_a_silent_relay_is_probed_and_left_at_the_failover_deadline() {
        assert_eq!(failover_deadline_ms(None), 1200);
        assert_eq!(failover_deadline_ms(Some(10)), MIN_FAILOVER_MS);
        let t = Timers::failover(1, 5, 1200);
        assert_eq!((t.interval_ms, t.probe_ms, t.deadline_ms), (1000, 300, 1200));
        // Never past the relay's timeout, and probes never rarer than keepalives.
        assert_eq!(Timers::failover(1, 1, 1200).deadline_ms, 1000);
        assert_eq!(Timers::failover(1, 30, 8000).probe_ms, 1000);
        let mut l = Liveness::new(0, t);
        // Media every 20 ms: no probes, only the interval's keepalives.
        let mut sent = Vec::new();
        for now in (0..3000).step_by(10) {
            if now % 20 == 0 {
                l.answered(now, false);
            }
            if l.keepalive_due(now) {
                l.sent_keepalive(now);
                sent.push(now);
            }
        }
        assert_eq!(sent, [1000, 2000]);
        assert!(!l.lost(3000));
        // Then silence after the last answer (2980): the interval's keepalive at 3000, probes
        // every 300 ms after it, lost 1200 ms after that answer.
        sent.clear();
        for now in (3000..5000).step_by(10) {
            if l.lost(now) {
                sent.push(u64::MAX - now);
                break;
            }
            if l.keepalive_due(now) {
                l.sent_keepalive(now);
                sent.push(now);
            }
        }
        assert_eq!(sent, [3000, 3300, 3600, 3900, u64::MAX - 4180]);
    }

    #[test]
    fn attempts_back_off_to_a_second() {
        let mut b = Backoff::new(100);
        let mut at = Vec::new();
        for t in (100..6000).step_by(10) {
            if b.take(t) {
                at.push(t);
            }
        }
        assert_eq!(at, [100, 350, 850, 1850, 2850, 3850, 4850, 5850]);
    }
}
