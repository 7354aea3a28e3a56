//! Counters shared by the data plane and whoever reads them.
//!
//! [`DropReason`] is the one vocabulary for why a packet was not forwarded: the engine
//! counts under it, `relayd stats` prints it, and later the XDP program and `/metrics` use
//! the same names. Counters are `AtomicU64` with `Relaxed` increments: each worker owns its
//! own [`WorkerCounters`], so increments never contend and readers only sum.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a datagram was dropped. `Copy`, and its [`name`](DropReason::name) is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Too short, bad RTP/RTCP header, or a control message that does not parse.
    Malformed = 0,
    /// First byte outside the RFC 7983 ranges the relay serves (0–3 and 128–191).
    NotRelayed,
    /// SRTP/SRTCP from a source address that holds no session.
    UnknownSession,
    /// An SSRC the session did not declare in its join.
    UnknownSsrc,
    /// The SRTP/SRTCP authentication tag did not verify.
    AuthFailed,
    /// The packet index was already seen, or is older than the replay window.
    Replayed,
    /// Authenticated, but no other member of the room may receive it.
    NoReceivers,
    /// A receiver was skipped because no transmit buffer was free.
    TxFull,
    /// The packet would not fit the transmit buffer once protected.
    TooBig,
    /// The control-message queue to the control thread was full.
    ControlQueueFull,
    /// A control message failed authentication, or names an unknown session.
    ControlRejected,
    /// The SRTCP index space is exhausted (2^31 packets); the session must re-join.
    IndexExhausted,
    /// AF_XDP transmit: the next hop's MAC (or a local address of the family) is unknown.
    NoRoute,
    /// An authenticated, decrypted compound RTCP packet that does not parse (RFC 3550 §6.1
    /// and A.2: version, lengths, padding, the first packet's type, each type's structure).
    /// Dropped whole: nothing of it is routed.
    RtcpMalformed,
    /// A datagram longer than any the relay serves (the socket backend's 2048-byte receive
    /// buffer: the kernel reported it truncated). Counted as received, at its real length.
    Oversized,
}

impl DropReason {
    /// Every reason, in counter-index order.
    pub const ALL: [DropReason; 15] = [
        Self::Malformed,
        Self::NotRelayed,
        Self::UnknownSession,
        Self::UnknownSsrc,
        Self::AuthFailed,
        Self::Replayed,
        Self::NoReceivers,
        Self::TxFull,
        Self::TooBig,
        Self::ControlQueueFull,
        Self::ControlRejected,
        Self::IndexExhausted,
        Self::NoRoute,
        Self::RtcpMalformed,
        Self::Oversized,
    ];

    /// The metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotRelayed => "not_relayed",
            Self::UnknownSession => "unknown_session",
            Self::UnknownSsrc => "unknown_ssrc",
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::NoReceivers => "no_receivers",
            Self::TxFull => "tx_full",
            Self::TooBig => "too_big",
            Self::ControlQueueFull => "control_queue_full",
            Self::ControlRejected => "control_rejected",
            Self::IndexExhausted => "index_exhausted",
            Self::NoRoute => "no_route",
            Self::RtcpMalformed => "rtcp_malformed",
            Self::Oversized => "oversized",
        }
    }
}

/// One worker's counters. Only that worker increments them.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Datagrams received.
    pub rx_packets: AtomicU64,
    /// Bytes received (UDP payload).
    pub rx_bytes: AtomicU64,
    /// Datagrams sent (media and control replies).
    pub tx_packets: AtomicU64,
    /// Bytes sent (UDP payload).
    pub tx_bytes: AtomicU64,
    /// Media packets accepted (authenticated and replay-checked).
    pub media_accepted: AtomicU64,
    /// Control datagrams handed to the control thread.
    pub control_in: AtomicU64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [AtomicU64; DropReason::ALL.len()],
    /// Heartbeat: the relay's monotonic milliseconds when the worker last finished a loop
    /// iteration (or an RX batch). Workers wake at least every 100 ms, so a mark older
    /// than that means the worker is stuck.
    pub loop_mark_ms: AtomicU64,
    /// The worker's AF_XDP socket statistics (XDP backend only).
    pub xsk: XskCounters,
    /// 1 once the worker installed its seccomp filter (`relay::io::seccomp`), else 0.
    pub seccomp: AtomicU64,
}

/// The kernel's statistics of one AF_XDP socket (`XDP_STATISTICS`), as its worker last
/// sampled them: absolute values, stored (not added) every 100 ms off the packet path.
/// They say where frames were lost before relayd's engine saw them.
#[derive(Debug, Default)]
pub struct XskCounters {
    /// Frames dropped for other reasons (e.g. a frame longer than the UMEM chunk).
    pub rx_dropped: AtomicU64,
    /// Frames dropped because the RX ring was full: the worker fell behind.
    pub rx_ring_full: AtomicU64,
    /// Times the kernel found the fill ring empty: no free frame to receive into.
    pub rx_fill_ring_empty_descs: AtomicU64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: AtomicU64,
    /// RX and TX descriptors the kernel found invalid (a relayd bug if ever non-zero).
    pub invalid_descs: AtomicU64,
    /// Samples taken; 0 on the socket backend, which has no AF_XDP socket.
    pub samples: AtomicU64,
}

impl XskCounters {
    /// The counters by name, as `stats` reports them; `None` if never sampled.
    pub fn named(&self) -> Option<[(&'static str, u64); 5]> {
        if self.samples.load(Relaxed) == 0 {
            return None;
        }
        Some([
            ("rx_dropped", self.rx_dropped.load(Relaxed)),
            ("rx_ring_full", self.rx_ring_full.load(Relaxed)),
            ("rx_fill_ring_empty_descs", self.rx_fill_ring_empty_descs.load(Relaxed)),
            ("tx_ring_empty_descs", self.tx_ring_empty_descs.load(Relaxed)),
            ("invalid_descs", self.invalid_descs.load(Relaxed)),
        ])
    }
}

impl WorkerCounters {
    /// Counts one drop.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }
    /// Reads one drop counter.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }
    /// Counts a received datagram.
    #[inline]
    pub fn rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }
    /// Records that the worker finished a loop iteration at `now_ms`.
    #[inline]
    pub fn mark_loop(&self, now_ms: u64) {
        self.loop_mark_ms.store(now_ms, Relaxed);
    }
    /// Milliseconds since the last [`mark_loop`](Self::mark_loop), as of `now_ms`.
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.loop_mark_ms.load(Relaxed))
    }
    /// Counts a sent datagram.
    #[inline]
    pub fn tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }
}

/// A point-in-time sum over counters, for printing and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// See [`WorkerCounters::rx_packets`].
    pub rx_packets: u64,
    /// See [`WorkerCounters::rx_bytes`].
    pub rx_bytes: u64,
    /// See [`WorkerCounters::tx_packets`].
    pub tx_packets: u64,
    /// See [`WorkerCounters::tx_bytes`].
    pub tx_bytes: u64,
    /// See [`WorkerCounters::media_accepted`].
    pub media_accepted: u64,
    /// See [`WorkerCounters::control_in`].
    pub control_in: u64,
    /// Drops by [`DropReason::name`].
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Join results by code name (`ok` or a [`crate::proto::ErrorCode`] name).
    pub joins: std::collections::BTreeMap<String, u64>,
    /// The join path's handshake counters (`v1_joins`, `v2_joins`, `mac1_failed`, `dh`,
    /// `cookies_sent`, `decrypt_failed`, `replayed`, `replies_limited`; see
    /// [`crate::registry::Registry::handshake_counts`]).
    #[serde(default)]
    pub handshake: std::collections::BTreeMap<String, u64>,
    /// In-room message counters by name (`received`, `delivered`, `rate_limited`,
    /// `replayed`, `bad_auth`, `given_up`, ...; see [`crate::messages::Count`]).
    #[serde(default)]
    pub messages: std::collections::BTreeMap<String, u64>,
    /// Cascade leg counters by name (`opened`, `up`, `accepted`, `closed`, `timed_out`,
    /// `wrong_peer_key`, `ssrc_conflicts`, ...; see `registry::legs`).
    #[serde(default)]
    pub legs: std::collections::BTreeMap<String, u64>,
    /// The relay's current public key (base64), as clients need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_key: Option<String>,
    /// Live sessions.
    pub sessions: u64,
    /// Live rooms.
    pub rooms: u64,
    /// XDP verdicts by reason, in packets (XDP backend only).
    #[serde(default)]
    pub xdp: std::collections::BTreeMap<String, u64>,
    /// XDP verdicts by reason, in bytes of whole frames (XDP backend only).
    #[serde(default)]
    pub xdp_bytes: std::collections::BTreeMap<String, u64>,
    /// Per worker, milliseconds since it last finished a loop iteration (see
    /// [`WorkerCounters::loop_mark_ms`]); idle workers stay near or below 100.
    #[serde(default)]
    pub worker_lag_ms: Vec<u64>,
    /// Workers running under their seccomp filter (see [`WorkerCounters::seccomp`]).
    #[serde(default)]
    pub seccomp_workers: u64,
    /// The AF_XDP sockets' kernel statistics summed over workers ([`XskCounters`]; XDP
    /// backend only, empty otherwise).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub xsk: std::collections::BTreeMap<String, u64>,
    /// Where the pushed part of the running config (apps, limits, blocklist, bans) comes
    /// from: `file` (the TOML file alone: nothing saved or pushed), `saved` (the config
    /// last pushed, restored from the state file at start; nothing pushed since), or
    /// `pushed` (pushed over the management socket since start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_origin: Option<String>,
    /// The state file's counters (`loaded`, `load_failed`, `restore_refused`, `saved`,
    /// `save_failed`; see `relay::io::persist::StateCounters`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub state: std::collections::BTreeMap<String, u64>,
}

impl Snapshot {
    /// Adds one worker's counters.
    pub fn add_worker(&mut self, w: &WorkerCounters) {
        self.rx_packets += w.rx_packets.load(Relaxed);
        self.rx_bytes += w.rx_bytes.load(Relaxed);
        self.tx_packets += w.tx_packets.load(Relaxed);
        self.tx_bytes += w.tx_bytes.load(Relaxed);
        self.media_accepted += w.media_accepted.load(Relaxed);
        self.control_in += w.control_in.load(Relaxed);
        self.seccomp_workers += w.seccomp.load(Relaxed);
        for r in DropReason::ALL {
            *self.drops.entry(r.name().to_owned()).or_default() += w.drops(r);
        }
        for (k, v) in w.xsk.named().into_iter().flatten() {
            *self.xsk.entry(k.to_owned()).or_default() += v;
        }
    }
    /// One drop counter by reason.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops.get(r.name()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_names_are_unique() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn snapshot_sums_workers() {
        let a = WorkerCounters::default();
        let b = WorkerCounters::default();
        a.rx(100);
        b.rx(50);
        a.count_drop(DropReason::Replayed);
        b.count_drop(DropReason::Replayed);
        let mut s = Snapshot::default();
        s.add_worker(&a);
        s.add_worker(&b);
        assert_eq!(s.rx_packets, 2);
        assert_eq!(s.rx_bytes, 150);
        assert_eq!(s.drop_count(DropReason::Replayed), 2);
    }

    #[test]
    fn lag_is_time_since_the_last_mark() {
        let w = WorkerCounters::default();
        w.mark_loop(1_000);
        assert_eq!(w.lag_ms(1_250), 250);
        // A mark stored after the reader took `now` is no lag, not an underflow.
        assert_eq!(w.lag_ms(900), 0);
    }

    #[test]
    fn snapshots_from_older_relayds_still_parse() {
        let s: Snapshot = serde_json::from_str(
            r#"{"rx_packets":1,"rx_bytes":2,"tx_packets":3,"tx_bytes":4,"media_accepted":5,"control_in":6,
                "drops":{},"joins":{},"sessions":0,"rooms":0}"#,
        )
        .unwrap();
        assert!(s.worker_lag_ms.is_empty() && s.xdp_bytes.is_empty());
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
