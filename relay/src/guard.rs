//! The join path's defences, in the order a v2 join meets them (WireGuard's and QUIC's
//! answers to the same problem):
//!
//! 1. [`ReplyLimiter`]: every reply the relay sends to a control datagram draws from a
//!    per-source and a total token bucket, so relayd cannot be aimed at a spoofed address
//!    as a reflector. Malformed datagrams get no reply at all (the registry's rule).
//! 2. mac1 ([`crate::proto::v2`]): one HMAC, before any public-key work.
//! 3. [`CookieJar`]: under load, a join must echo a cookie bound to its source address and
//!    a secret that changes every two minutes; the cookie costs the relay one HMAC and no
//!    state.
//! 4. [`ReplayCache`]: after the Diffie-Hellman, a join's handshake hash is remembered for
//!    twice the timestamp window, so a captured join, replayed from any address at any
//!    later time, is refused: inside the window by the cache, after it by the timestamp.
//!
//! Everything takes `now` as a parameter and uses integer math (firecracker's rate limiter,
//! without its clock call).
#![forbid(unsafe_code)]

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::proto::v2::COOKIE_LEN;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: u64, now_ms: u64) -> Self {
        Self { tokens_milli: burst * 1000, last_ms: now_ms }
    }

    /// Takes one token if there is one, after refilling for the time since the last call.
    pub fn take(&mut self, rate: u64, burst: u64, now_ms: u64) -> bool {
        self.take_n(1, rate, burst, now_ms)
    }

    /// Takes `n` tokens if there are that many (none otherwise), after refilling.
    pub fn take_n(&mut self, n: u64, rate: u64, burst: u64, now_ms: u64) -> bool {
        if self.has(n, rate, burst, now_ms) {
            self.tokens_milli -= n.saturating_mul(1000);
            true
        } else {
            false
        }
    }

    /// Refills for the time since the last call; returns whether `n` tokens are there now
    /// (taking none: two buckets charged together check both, then take from both).
    pub fn has(&mut self, n: u64, rate: u64, burst: u64, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens_milli = (self.tokens_milli + elapsed.saturating_mul(rate)).min(burst * 1000);
        self.tokens_milli >= n.saturating_mul(1000)
    }
}

/// Slots of the per-source reply buckets. Sources hash into slots with a per-process random
/// key, so an attacker cannot aim collisions at a victim; two sources sharing a slot share
/// its budget. Fixed size: no allocation per source, no eviction policy to game.
pub const REPLY_SLOTS: usize = 4096;

/// What a reply is, for the budget it draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Anything that costs the relay work or tells something: answers, errors, acks.
    Answer,
    /// A cookie: 52 bytes, smaller than the join it answers (no amplification), sent
    /// without any public-key work.
    Cookie,
    /// The answer to a join that echoed a valid cookie: its source address is proven, so
    /// it cannot aim the reply at a victim; only the per-source bucket applies.
    Proven,
}

/// Rate limits on replies to control datagrams: one token bucket per source (hashed into
/// [`REPLY_SLOTS`]), and a total per [`ReplyKind`].
pub struct ReplyLimiter {
    total: Bucket,
    total_rate: u64,
    cookies: Bucket,
    cookie_rate: u64,
    per_source: Box<[Bucket]>,
    source_rate: u64,
    hasher: std::collections::hash_map::RandomState,
    /// Replies not sent because a bucket was empty.
    pub limited: u64,
}

impl ReplyLimiter {
    /// `total_rate` replies per second in all (burst: one second's worth), and
    /// `source_rate` per source (burst: two seconds' worth).
    pub fn new(total_rate: u32, source_rate: u32, now_ms: u64) -> Self {
        Self::with_cookies(total_rate, total_rate, source_rate, now_ms)
    }

    /// As [`new`](Self::new), with `cookie_rate` cookies per second in all besides.
    pub fn with_cookies(total_rate: u32, cookie_rate: u32, source_rate: u32, now_ms: u64) -> Self {
        let (total_rate, source_rate, cookie_rate) =
            (u64::from(total_rate), u64::from(source_rate), u64::from(cookie_rate));
        Self {
            total: Bucket::full(total_rate, now_ms),
            total_rate,
            cookies: Bucket::full(cookie_rate, now_ms),
            cookie_rate,
            per_source: vec![Bucket::full(2 * source_rate, now_ms); REPLY_SLOTS].into_boxed_slice(),
            source_rate,
            hasher: std::collections::hash_map::RandomState::new(),
            limited: 0,
        }
    }

    /// New rates (a config reload): the buckets start full again; the `limited` count and
    /// the source hashing are kept.
    pub fn set_rates(&mut self, total_rate: u32, cookie_rate: u32, source_rate: u32, now_ms: u64) {
        let limited = self.limited;
        let hasher = std::mem::take(&mut self.hasher);
        *self = Self { hasher, limited, ..Self::with_cookies(total_rate, cookie_rate, source_rate, now_ms) };
    }

    /// Whether an answer to `dst` may be sent now (and if so, charges for it).
    pub fn allow(&mut self, dst: SocketAddr, now_ms: u64) -> bool {
        self.allow_kind(dst, ReplyKind::Answer, now_ms)
    }

    /// Whether a reply of `kind` to `dst` may be sent now (and if so, charges for it).
    pub fn allow_kind(&mut self, dst: SocketAddr, kind: ReplyKind, now_ms: u64) -> bool {
        let slot = (self.hasher.hash_one(dst) as usize) % REPLY_SLOTS;
        let ok = self.per_source[slot].take(self.source_rate, 2 * self.source_rate, now_ms)
            && match kind {
                ReplyKind::Answer => self.total.take(self.total_rate, self.total_rate, now_ms),
                ReplyKind::Cookie => self.cookies.take(self.cookie_rate, self.cookie_rate, now_ms),
                ReplyKind::Proven => true,
            };
        if !ok {
            self.limited += 1;
        }
        ok
    }
}

/// How long one cookie secret is used for; a cookie made with the previous one is still
/// accepted, so a cookie lives between one and two periods.
pub const COOKIE_PERIOD_MS: u64 = 120_000;

/// Stateless cookies: `HMAC(secret, source address)`, truncated.
pub struct CookieJar {
    current: [u8; 32],
    previous: [u8; 32],
    since_ms: u64,
    rng: Box<dyn FnMut() -> [u8; 32] + Send>,
}

impl CookieJar {
    /// A jar drawing secrets from `rng`.
    pub fn new(mut rng: Box<dyn FnMut() -> [u8; 32] + Send>, now_ms: u64) -> Self {
        let current = rng();
        let previous = rng();
        Self { current, previous, since_ms: now_ms, rng }
    }

    fn rotate(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.since_ms) >= COOKIE_PERIOD_MS {
            self.previous = std::mem::replace(&mut self.current, (self.rng)());
            self.since_ms = now_ms;
        }
    }

    fn make(secret: &[u8; 32], src: SocketAddr) -> [u8; COOKIE_LEN] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
        match src {
            SocketAddr::V4(a) => m.update(&a.ip().octets()),
            SocketAddr::V6(a) => m.update(&a.ip().octets()),
        }
        m.update(&src.port().to_be_bytes());
        let full = m.finalize().into_bytes();
        full[..COOKIE_LEN].try_into().expect("COOKIE_LEN bytes")
    }

    /// The cookie for `src` now.
    pub fn cookie(&mut self, src: SocketAddr, now_ms: u64) -> [u8; COOKIE_LEN] {
        self.rotate(now_ms);
        Self::make(&self.current, src)
    }

    /// Whether `check(cookie)` holds for `src`'s current or previous cookie.
    pub fn verify(&mut self, src: SocketAddr, now_ms: u64, check: impl Fn(&[u8; COOKIE_LEN]) -> bool) -> bool {
        self.rotate(now_ms);
        check(&Self::make(&self.current, src)) || check(&Self::make(&self.previous, src))
    }
}

/// Most handshakes the replay cache holds. At 10,000 joins a second and a 30 s window it
/// needs 600,000; a full cache refuses joins (`overloaded`) rather than forget one.
pub const REPLAY_CAPACITY: usize = 1 << 20;

/// Handshake hashes seen, until they can no longer pass the timestamp check.
pub struct ReplayCache {
    seen: HashSet<[u8; 16]>,
    order: VecDeque<(u64, [u8; 16])>,
    capacity: usize,
}

/// What the cache said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// First sight: remembered.
    Fresh,
    /// Seen before.
    Replayed,
    /// The cache is full (every entry is still needed).
    Full,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity`.
    pub fn new(capacity: usize) -> Self {
        Self { seen: HashSet::new(), order: VecDeque::new(), capacity }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks and remembers `hash` until `forget_at_ms`. Expiry is a queue in insertion
    /// order: an entry whose deadline comes before that of an older entry is kept until the
    /// older one goes (longer than asked, never shorter), so the cache never forgets a hash
    /// early; the capacity bounds what that costs.
    pub fn check(&mut self, hash: &[u8; 32], now_ms: u64, forget_at_ms: u64) -> Replay {
        while let Some(&(t, h)) = self.order.front() {
            if t > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&h);
        }
        // 128 bits of the hash: collisions are as unlikely as guessing a key.
        let key: [u8; 16] = hash[..16].try_into().expect("16 bytes");
        if self.seen.contains(&key) {
            return Replay::Replayed;
        }
        if self.seen.len() >= self.capacity {
            return Replay::Full;
        }
        self.seen.insert(key);
        self.order.push_back((forget_at_ms, key));
        Replay::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_with_time_and_cap_at_the_burst() {
        let mut b = Bucket::full(2, 0);
        assert!(b.take(1, 2, 0) && b.take(1, 2, 0));
        assert!(!b.take(1, 2, 0));
        assert!(!b.take(1, 2, 999));
        assert!(b.take(1, 2, 1000));
        assert!(b.take(1, 2, 60_000) && b.take(1, 2, 60_000) && !b.take(1, 2, 60_000));
        // A clock that steps back neither refills nor underflows.
        assert!(!b.take(1, 2, 10));
        // Byte buckets: n tokens at once, or none.
        let mut b = Bucket::full(100, 0);
        assert!(b.take_n(60, 100, 100, 0));
        assert!(!b.take_n(60, 100, 100, 0), "40 left: nothing taken");
        assert!(b.take_n(40, 100, 100, 0));
        assert!(b.has(50, 100, 100, 500) && !b.has(51, 100, 100, 500));
    }

    #[test]
    fn replies_are_limited_per_source_and_in_total() {
        let mut l = ReplyLimiter::new(100, 5, 0);
        let a: SocketAddr = "198.18.0.1:1000".parse().unwrap();
        let sent = (0..50).filter(|_| l.allow(a, 0)).count();
        assert_eq!(sent, 10, "per-source burst is two seconds' worth");
        let mut total = 0;
        for i in 0..1000u32 {
            let src = SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 2000));
            total += usize::from(l.allow(src, 0));
        }
        assert!(total <= 100 - 10, "total budget: {total}");
        assert!(l.limited >= 40 + 900);
        // A second later the total refills.
        assert!(l.allow("198.19.0.1:1".parse().unwrap(), 1000));
        // Cookies have a budget of their own, and proven sources only their own bucket.
        let mut l = ReplyLimiter::with_cookies(1, 2, 100, 0);
        let src = |i: u8| SocketAddr::from(([198, 18, 1, i], 1));
        assert!(l.allow(src(1), 0) && !l.allow(src(2), 0));
        assert!(l.allow_kind(src(3), ReplyKind::Cookie, 0) && l.allow_kind(src(4), ReplyKind::Cookie, 0));
        assert!(!l.allow_kind(src(5), ReplyKind::Cookie, 0));
        assert!((0..50).all(|i| l.allow_kind(src(6 + i), ReplyKind::Proven, 0)));
    }

    #[test]
    fn cookies_bind_to_the_address_and_survive_one_rotation() {
        let mut n = 0u8;
        let mut jar = CookieJar::new(
            Box::new(move || {
                n += 1;
                [n; 32]
            }),
            0,
        );
        let a: SocketAddr = "198.18.0.1:1000".parse().unwrap();
        let b: SocketAddr = "198.18.0.1:1001".parse().unwrap();
        let c = jar.cookie(a, 0);
        assert!(jar.verify(a, 1, |x| *x == c));
        assert!(!jar.verify(b, 1, |x| *x == c));
        assert!(jar.verify(a, COOKIE_PERIOD_MS, |x| *x == c), "previous secret still accepted");
        assert!(!jar.verify(a, 2 * COOKIE_PERIOD_MS, |x| *x == c), "two rotations later it is not");
    }

    #[test]
    fn replays_are_caught_until_forgotten_and_a_full_cache_fails_closed() {
        let mut c = ReplayCache::new(2);
        assert_eq!(c.check(&[1; 32], 0, 100), Replay::Fresh);
        assert_eq!(c.check(&[1; 32], 50, 150), Replay::Replayed);
        assert_eq!(c.check(&[2; 32], 50, 150), Replay::Fresh);
        assert_eq!(c.check(&[3; 32], 60, 160), Replay::Full);
        assert_eq!(c.check(&[3; 32], 100, 200), Replay::Fresh, "the first entry expired at 100");
        assert_eq!(c.len(), 2);
    }
}
