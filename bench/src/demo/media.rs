//! The demo's traffic: publishers sending paced SRTP, receivers verifying every packet, and the
//! attacker's flood.
//!
//! Invariants, and why:
//! - Every media packet carries its room's tag (app index, room index) and its send time in
//!   microseconds since the demo's epoch (one `Instant` shared by all threads of this process,
//!   so one-way latency needs no clock sync). A receiver counts a packet as its room's only if
//!   the SSRC is its publisher's and the tag matches; anything else that decrypts is counted
//!   as `foreign`: a delivery across rooms or apps, which must never happen.
//! - Receivers authenticate every packet with their own downlink keys ([`relay::client`]); an
//!   authentication failure is counted, never ignored.
//! - The per-packet loops reuse one buffer per thread and allocate nothing.
//! - [`Clients`] and [`Flood`] stop and join their threads on drop, so an error anywhere ends
//!   all traffic before the namespaces go.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use relay::client::{write_rtp_header, Client, ClientConfig, Event};
use relay::io::sys::SendBatch;
use relay::proto::ErrorCode;

/// RTP packet size before the SRTP tag (a video-ish packet).
const RTP_LEN: usize = 600;
/// Bytes of the RTP header `write_rtp_header` writes.
const RTP_HEADER: usize = 12;

/// A joined client and its socket (connected to relayd).
pub struct Member {
    /// The socket.
    pub sock: UdpSocket,
    /// The client session.
    pub client: Client,
}

/// Joins with `cfg` over `sock`. A refusal with `unknown_app` or `session_quota` is retried
/// for up to 10 s (relay-control pushes a new app to relayd just after the API answers; a
/// cluster node gets its share of the app's quota at its next heartbeat); any other refusal
/// is an error.
pub fn join(sock: UdpSocket, relay: SocketAddr, cfg: ClientConfig) -> Result<Member> {
    sock.connect(relay)?;
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut client = Client::new(cfg)?;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n = client.join(&mut buf)?;
        sock.send(&buf[..n])?;
        let Ok(n) = sock.recv(&mut buf) else { continue };
        match client.handle(&mut buf[..n]) {
            Event::Joined { .. } => return Ok(Member { sock, client }),
            Event::Refused { code: Some(ErrorCode::UnknownApp | ErrorCode::SessionQuota), .. } => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Event::Refused { code, detail } => bail!("join refused: {code:?} {detail}"),
            _ => {}
        }
    }
    bail!("relayd did not admit the join within 10 s")
}

/// What one receiver counted.
#[derive(Default)]
pub struct RxStats {
    /// Packets of its room's publisher that authenticated.
    pub received: AtomicU64,
    /// Packets that failed SRTP authentication.
    pub auth_failed: AtomicU64,
    /// Packets rejected for another SRTP reason (replayed, malformed, too old).
    pub other_errors: AtomicU64,
    /// Authenticated media that was not its room's: a delivery across rooms or apps.
    pub foreign: AtomicU64,
}

/// One room's counters.
pub struct RoomStats {
    /// Packets its publisher sent.
    pub sent: AtomicU64,
    /// One entry per receiver.
    pub receivers: Vec<RxStats>,
    /// One-way latency of every received packet, in microseconds.
    pub latency: Mutex<Histogram<u64>>,
}

impl RoomStats {
    /// Counters for a room with `receivers` receivers.
    pub fn new(receivers: usize) -> Result<Self> {
        Ok(Self {
            sent: AtomicU64::new(0),
            receivers: (0..receivers).map(|_| RxStats::default()).collect(),
            latency: Mutex::new(crate::stats::latency_histogram(60_000_000)?),
        })
    }
}

/// A room's identity on the wire: the tag in every payload and the publisher's SSRC.
#[derive(Clone, Copy)]
pub struct RoomTag {
    /// App index and room index.
    pub tag: [u8; 2],
    /// The publisher's SSRC.
    pub ssrc: u32,
}

/// Microseconds since `epoch`.
fn micros(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Client threads: publishers stop first (so receivers can drain), then receivers.
pub struct Clients {
    stop_publishers: Arc<AtomicBool>,
    stop_receivers: Arc<AtomicBool>,
    publishers: Vec<JoinHandle<Result<()>>>,
    receivers: Vec<JoinHandle<Result<()>>>,
}

impl Clients {
    /// No threads yet.
    pub fn new() -> Self {
        Self {
            stop_publishers: Arc::default(),
            stop_receivers: Arc::default(),
            publishers: Vec::new(),
            receivers: Vec::new(),
        }
    }

    /// Starts a publisher sending `pps` packets per second for `room`.
    pub fn publish(&mut self, m: Member, room: RoomTag, pps: u64, epoch: Instant, stats: Arc<RoomStats>) {
        let stop = self.stop_publishers.clone();
        self.publishers.push(std::thread::spawn(move || publisher(m, room, pps, epoch, &stats, &stop)));
    }

    /// Starts receiver `idx` of `room`.
    pub fn receive(&mut self, m: Member, room: RoomTag, idx: usize, epoch: Instant, stats: Arc<RoomStats>) {
        let stop = self.stop_receivers.clone();
        self.receivers.push(std::thread::spawn(move || receiver(m, room, idx, epoch, &stats, &stop)));
    }

    /// Stops the publishers, then waits until `drained()` says the receivers have everything,
    /// or nothing more arrived for `quiet` (`progress()` is the total received so far), or
    /// `max` passed; then stops the receivers. The first error of any thread.
    pub fn finish(
        mut self,
        drained: impl Fn() -> bool,
        progress: impl Fn() -> u64,
        quiet: Duration,
        max: Duration,
    ) -> Result<()> {
        self.stop_publishers.store(true, Relaxed);
        let mut result = Ok(());
        for t in self.publishers.drain(..) {
            let r = t.join().map_err(|_| anyhow::anyhow!("a publisher thread panicked")).and_then(|r| r);
            result = result.and(r.context("publisher"));
        }
        // A loaded relayd may still be working through a queue: wait for it, within bounds.
        let start = Instant::now();
        let (mut last, mut last_change) = (progress(), Instant::now());
        while !drained() && last_change.elapsed() < quiet && start.elapsed() < max {
            std::thread::sleep(Duration::from_millis(50));
            let now = progress();
            if now != last {
                (last, last_change) = (now, Instant::now());
            }
        }
        self.stop_receivers.store(true, Relaxed);
        for t in self.receivers.drain(..) {
            let r = t.join().map_err(|_| anyhow::anyhow!("a receiver thread panicked")).and_then(|r| r);
            result = result.and(r.context("receiver"));
        }
        result
    }

    /// Whether every thread is still running (a thread returns early only on an error).
    pub fn all_running(&self) -> bool {
        self.publishers.iter().chain(&self.receivers).all(|t| !t.is_finished())
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop_publishers.store(true, Relaxed);
        self.stop_receivers.store(true, Relaxed);
        for t in self.publishers.drain(..).chain(self.receivers.drain(..)) {
            let _ = t.join();
        }
    }
}

fn publisher(
    mut m: Member,
    room: RoomTag,
    pps: u64,
    epoch: Instant,
    stats: &RoomStats,
    stop: &AtomicBool,
) -> Result<()> {
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        let seq = n as u16;
        let ts = (n * 90_000 / pps.max(1)) as u32;
        let h = write_rtp_header(&mut buf, 96, seq, ts, room.ssrc);
        buf[h..h + 2].copy_from_slice(&room.tag);
        buf[h + 2..h + 10].copy_from_slice(&micros(epoch).to_be_bytes());
        buf[h + 10..RTP_LEN].fill(0x5a);
        let len = m.client.protect_rtp(&mut buf, RTP_LEN)?;
        m.sock.send(&buf[..len]).context("sending media")?;
        stats.sent.fetch_add(1, Relaxed);
        n += 1;
        let next = start + Duration::from_micros(n * 1_000_000 / pps.max(1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let n = m.client.leave(&mut buf)?;
    m.sock.send(&buf[..n])?;
    Ok(())
}

fn receiver(
    mut m: Member,
    room: RoomTag,
    idx: usize,
    epoch: Instant,
    stats: &RoomStats,
    stop: &AtomicBool,
) -> Result<()> {
    let rx = &stats.receivers[idx];
    m.sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    // A receiver sends no media, so it keeps its session alive with keepalives.
    let every = Duration::from_secs(u64::from(m.client.timers().map_or(2, |(k, _)| k.max(1))));
    let mut next_keepalive = Instant::now() + every;
    let mut buf = [0u8; 2048];
    while !stop.load(Relaxed) {
        if Instant::now() >= next_keepalive {
            let n = m.client.keepalive(&mut buf)?;
            m.sock.send(&buf[..n])?;
            next_keepalive += every;
        }
        let n = match m.sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e).context("receiving media"),
        };
        match m.client.handle(&mut buf[..n]) {
            Event::Media { ssrc, rtcp: false, len, .. } => {
                let payload = buf.get(RTP_HEADER..len).unwrap_or_default();
                if ssrc != room.ssrc || payload.get(..2) != Some(&room.tag[..]) || payload.len() < 10 {
                    rx.foreign.fetch_add(1, Relaxed);
                    continue;
                }
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&payload[2..10]);
                let latency = micros(epoch).saturating_sub(u64::from_be_bytes(sent));
                if let Ok(mut h) = stats.latency.lock() {
                    h.saturating_record(latency.max(1));
                }
                rx.received.fetch_add(1, Relaxed);
            }
            // Nobody sends RTCP in the demo: it can only have come from elsewhere.
            Event::Media { rtcp: true, .. } => {
                rx.foreign.fetch_add(1, Relaxed);
            }
            Event::MediaError(relay::srtp::Error::AuthFailed) => {
                rx.auth_failed.fetch_add(1, Relaxed);
            }
            Event::MediaError(_) => {
                rx.other_errors.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
    let n = m.client.leave(&mut buf)?;
    m.sock.send(&buf[..n])?;
    Ok(())
}

/// The attacker: one thread sending, as fast as it can (or at `pps` when non-zero), a mix of
/// SRTP from 5-tuples with no session, junk (a first byte relayd never relays) and joins with
/// garbage credentials, from many source ports of one address.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    /// When it started.
    pub started: Instant,
}

impl Flood {
    /// Starts flooding `target` from `sockets`.
    pub fn start(sockets: Vec<UdpSocket>, target: SocketAddr, pps: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), sent.clone());
        const BATCH: usize = 64;
        let thread = std::thread::spawn(move || {
            let mut batch = SendBatch::new(BATCH);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let start = Instant::now();
            let mut k = 0u64;
            while !flag.load(Relaxed) {
                for i in 0..BATCH {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let Some(b) = batch.next_buffer() else { break };
                    let len = 40 + (x % 160) as usize;
                    for (j, byte) in b[..len].iter_mut().enumerate() {
                        *byte = (x >> (j % 8 * 8)) as u8;
                    }
                    match i % 3 {
                        0 => b[0] = 0x80,                                         // SRTP from a 5-tuple with no session
                        1 => b[0] = 0x40 | (b[0] & 0x3f),                         // junk
                        _ => b[..4].copy_from_slice(&[1, 1, 0, (len - 4) as u8]), // a join
                    }
                    batch.push(target, len);
                }
                let f = batch.flush(&sockets[k as usize % sockets.len()]);
                count.fetch_add(f.sent as u64, Relaxed);
                k += 1;
                if let Some(us) = (k * BATCH as u64 * 1_000_000).checked_div(pps) {
                    let next = start + Duration::from_micros(us);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }
        });
        Self { stop, sent, thread: Some(thread), started: Instant::now() }
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Stops the flood.
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}
