//! The rig the namespace scenarios share: relayd (one worker, pinned to the relay CPU) in
//! one namespace, the clients in another ([`topology`]), a generator on the load CPU
//! ([`generator`]), where the veths' receive work runs ([`napi`]), and every relayed packet
//! captured and verified at its receiver ([`capture`]).
//!
//! A [`Rig`] is one run: `rooms` rooms of one sender and `fanout` receivers join once, then
//! [`Rig::probe`] sends `rate × probe_secs` pre-protected SRTP packets, paced, the senders'
//! packets interleaved round-robin. The edgerelay XDP program on the clients' veth, with
//! every receiver's 5-tuple in its sessions map, redirects relayd's output into an AF_XDP
//! socket (the generator's own when that is the AF_XDP one). While a probe runs, the load
//! thread only copies each frame into the capture arena; after it, every frame is checked.
//! So receiving costs one copy per packet during the measurement, and loss, duplicates and
//! authentication failures are counted exactly.
//!
//! Every packet carries its number in its payload; the pacer notes when it hands each one to
//! the generator and the capture when it takes each frame off the ring (a clock read per
//! burst and per batch), so each verified packet also yields a one-way latency
//! ([`Rig::latency`]).
//!
//! A probe passes when the verified packets are at least `1 - max_loss` of those owed (sent ×
//! fan-out) and the generator kept the rate. A packet that fails its receiver's SRTP check
//! stops the run with an error: relayd must never forward one.
//!
//! Used by `throughput`, `latency` and `compare` (relayd's XDP row); `flood` and `scale`
//! use the topology and the generator alone.

pub(crate) mod capture;
pub(crate) mod generator;
pub(crate) mod napi;
pub(crate) mod topology;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use relay::client::write_rtp_header;
use relay::config::Backend;
use relay::io::afxdp::XskPort;
use relay::srtp::Profile;

use crate::load::{Outcome, Probe, SearchArgs};
use crate::procs::{self, check_interrupted, Cpus};
use crate::relayd::{self, Member, Relayd};
use crate::report::{ProbeDetail, ProbeLatency};
use crate::rig::capture::{Capture, Receivers, SendTimes, Tally};
use crate::rig::generator::{Generator, Kind};
use crate::rig::napi::{threaded_napi, Napi};
use crate::rig::topology::{sunk, topology, Topology};
use crate::stats::{latency_histogram, LATENCY_MAX_US};

/// The smallest packet size the rig takes: an RTP header plus a little.
pub(crate) const MIN_SIZE: usize = 20;
/// The largest: a 1500-byte MTU's room once the SRTP tag and the IP/UDP headers are added.
pub(crate) const MAX_SIZE: usize = 1400;
/// Most frames the pacer hands the generator at once when it is behind.
const BURST: usize = 64;
/// A probe has drained when nothing arrived and relayd sent nothing for this long (at most
/// [`DRAIN_MAX`]).
const QUIET: Duration = Duration::from_millis(200);
/// A debug relayd past its rate can need seconds to work off its input rings.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// How often [`Rig::settle`] asks relayd for its transmit count.
const RELAYD_POLL: Duration = Duration::from_millis(20);

/// One configuration of a rig, without the backend.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    /// The generator.
    pub(crate) kind: Kind,
    /// The rooms' SRTP profile.
    pub(crate) profile: Profile,
    /// RTP packet size before the SRTP tag ([`MIN_SIZE`]..=[`MAX_SIZE`]).
    pub(crate) size: usize,
    /// Rooms, one sender each.
    pub(crate) rooms: usize,
    /// Receivers per room.
    pub(crate) fanout: usize,
}

/// Each room's sender SSRC.
fn sender_ssrc(room: usize) -> u32 {
    0x5eed + room as u32
}

/// How the pacer finished.
struct Paced {
    /// Items the generator took (queued or sent), refused ones included.
    taken: usize,
    /// Datagrams the sender's socket refused.
    refused: usize,
    /// From the first packet to the last one handed over.
    send_secs: f64,
    /// The most packets that were due and not yet handed over at one time: how far the
    /// pacer fell behind, which it then makes up in back-to-back bursts of [`BURST`].
    max_backlog: usize,
}

/// One run's relayd with its members, generator and receiving socket.
pub(crate) struct Rig {
    // Field order is drop order: relayd first, the topology last.
    relayd: Relayd,
    gen: Generator,
    /// The receivers' AF_XDP socket when the generator is not the AF_XDP one.
    rx_port: Option<Box<XskPort>>,
    senders: Vec<Member>,
    seqs: Vec<u16>,
    /// The number the next generated packet carries in its payload (bytes 0..8), counted
    /// across probes in the order the generator gets them.
    next_id: u64,
    /// When each of this probe's packets was handed to the generator.
    sent: SendTimes,
    /// One-way latency of this probe's verified packets, µs: from the hand-over to the
    /// generator to the frame being taken off the receivers' ring.
    latency: Histogram<u64>,
    receivers: Receivers,
    /// The last probe's drain ended at [`DRAIN_MAX`] with relayd still busy.
    backlog: bool,
    capture: Capture,
    /// NAPI threads doing relayd's receive work, charged to it with its own CPU time.
    relay_napi: Vec<u32>,
    topo: Topology,
    shape: Shape,
    cpus: Cpus,
}

impl Rig {
    /// A rig of one room with one sender and one receiver, AF_XDP generator if available,
    /// SRTP_80 packets of `size` bytes, receive work in softirq: `compare`'s edgerelay XDP row.
    pub(crate) fn fan_out_one(bin: &Path, cpus: Cpus, backend: Backend, size: usize) -> Result<Self> {
        let shape = Shape { kind: Kind::Auto, profile: Profile::AesCm128HmacSha1_80, size, rooms: 1, fanout: 1 };
        Self::start(bin, cpus, shape, backend, Napi::Softirq)
    }

    /// A fresh topology with a fresh relayd on `backend`, and `shape`'s members joined.
    pub(crate) fn start(bin: &Path, cpus: Cpus, shape: Shape, backend: Backend, napi: Napi) -> Result<Self> {
        let mut topo = topology()?;
        let relayd = relayd::start(bin, Some(&topo), backend, Some(cpus))?;
        let mut relay_napi = Vec::new();
        if napi != Napi::Softirq && cpus.pinned {
            let rt = napi == Napi::ThreadedRt;
            // After relayd's start: its XDP program gives the relay end a NAPI to thread.
            let (a, b) = (&topo.veth.name_a, &topo.veth.name_b);
            relay_napi = threaded_napi(&topo.relay_ns, a, cpus.relay, backend == Backend::Socket, rt)?;
            threaded_napi(&topo.client_ns, b, cpus.load, false, rt)?;
        }
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        for room in 0..shape.rooms {
            let id = room as u32 + 1;
            senders.push(join(&topo, relayd.key, id, &format!("s{room}"), Some(sender_ssrc(room)), shape.profile)?);
            for r in 0..shape.fanout {
                receivers.push(join(&topo, relayd.key, id, &format!("r{room}-{r}"), None, shape.profile)?);
            }
        }
        let mut gen = Generator::open(shape.kind, &topo)?;
        if shape.rooms > 1 && gen.macs().is_none() {
            bail!("more than one room needs the AF_XDP generator, which is unavailable here");
        }
        let rx_port = match gen.port_mut() {
            Some(_) => None,
            None => Some(Box::new(generator::open_port(&topo).context("opening the receivers' AF_XDP socket")?)),
        };
        // From here on, everything towards the receivers goes to the AF_XDP socket: the joins
        // (whose answers must reach the members' own sockets) are done.
        let fd = match (gen.port_mut(), rx_port.as_deref()) {
            (Some(p), _) => p.fd(),
            (None, Some(p)) => p.fd(),
            (None, None) => unreachable!("rx_port is opened when the generator has no port"),
        };
        topo.sink.register_socket(0, fd).context("registering the receivers' AF_XDP socket")?;
        let relay_addr: SocketAddr = topology::relay_addr();
        for (i, r) in receivers.iter().enumerate() {
            let local = r.sock.local_addr()?;
            topo.sink.add_session(relay_addr, local, i as u64).context("adding a receiver to the sink")?;
        }
        let receivers = Receivers::new(receivers)?;
        let seqs = vec![0; senders.len()];
        Ok(Self {
            relayd,
            gen,
            rx_port,
            senders,
            seqs,
            next_id: 0,
            sent: SendTimes::default(),
            latency: latency_histogram(LATENCY_MAX_US)?,
            receivers,
            backlog: false,
            capture: Capture::default(),
            relay_napi,
            topo,
            shape,
            cpus,
        })
    }

    /// `afxdp` or `socket`: the generator this rig got.
    pub(crate) fn generator_name(&self) -> &'static str {
        self.gen.name()
    }

    /// The one-way latency of the last probe's verified packets, µs (see `latency`).
    pub(crate) fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// `total` packets, the senders' interleaved round-robin, ready for the generator; each
    /// carries its number (see `next_id`).
    fn frames(&mut self, total: usize) -> Result<Vec<Vec<u8>>> {
        let rooms = self.senders.len();
        let mut per_sender = Vec::with_capacity(rooms);
        let mut buf = [0u8; 2048];
        self.sent.first_id = self.next_id;
        for (room, s) in self.senders.iter_mut().enumerate() {
            let n = total / rooms + usize::from(room < total % rooms);
            let mut payloads = Vec::with_capacity(n);
            for j in 0..n {
                let seq = &mut self.seqs[room];
                let h = write_rtp_header(&mut buf, 96, *seq, 0, sender_ssrc(room));
                *seq = seq.wrapping_add(1);
                buf[h..self.shape.size].fill(0x42);
                // The round-robin below puts sender `room`'s j-th packet at j · rooms + room.
                let id = self.sent.first_id + (j * rooms + room) as u64;
                buf[h..h + 8].copy_from_slice(&id.to_be_bytes());
                let len = s.client.protect_rtp(&mut buf, self.shape.size)?;
                payloads.push(buf[..len].to_vec());
            }
            per_sender.push(self.gen.prepare(&s.sock, payloads)?.into_iter());
        }
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            for it in &mut per_sender {
                out.extend(it.next());
            }
        }
        self.next_id += total as u64;
        self.sent.at.clear();
        self.sent.at.resize(total, None);
        Ok(out)
    }

    /// Copies what has arrived into the capture; returns the frame count.
    fn drain(&mut self) -> usize {
        let port = match (self.gen.port_mut(), self.rx_port.as_deref_mut()) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => return 0,
        };
        let capture = &mut self.capture;
        let mut n = 0;
        // Bounded, so the pacer gets its turn even under a steady stream.
        for _ in 0..64 {
            let now = Instant::now();
            let k = port.rx_batch(|frame, _| capture.push(frame, now));
            n += k;
            if k == 0 {
                break;
            }
        }
        n
    }

    /// Hands `frames` to the generator at `rate`, receiving as it goes.
    fn pace(&mut self, rate: f64, frames: &[Vec<u8>]) -> Result<Paced> {
        let sock = self.senders[0].sock.try_clone()?;
        let start = Instant::now();
        let (mut next, mut refused, mut max_backlog) = (0usize, 0usize, 0usize);
        while next < frames.len() {
            check_interrupted()?;
            let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(frames.len());
            max_backlog = max_backlog.max(due.saturating_sub(next));
            if due > next {
                let now = Instant::now();
                let offer = self.gen.try_send(&sock, &frames[next..due.min(next + BURST)])?;
                for t in self.sent.at.iter_mut().skip(next).take(offer.taken) {
                    *t = Some(now);
                }
                next += offer.taken;
                refused += offer.refused;
            }
            self.drain();
        }
        Ok(Paced { taken: next, refused, send_secs: start.elapsed().as_secs_f64(), max_backlog })
    }

    /// Receives until nothing arrives and relayd's transmit count stays the same for
    /// [`QUIET`], and the generator has nothing in flight: a probe's packets still queued at
    /// relayd must neither count for the next probe nor be missed by this one. Whether it
    /// got quiet before [`DRAIN_MAX`].
    fn settle(&mut self) -> Result<bool> {
        let deadline = Instant::now() + DRAIN_MAX;
        let mut last = Instant::now();
        let mut relayd_tx = self.relayd.snapshot()?.tx_packets;
        let mut asked = Instant::now();
        while Instant::now() < deadline {
            if asked.elapsed() >= RELAYD_POLL {
                asked = Instant::now();
                let tx = self.relayd.snapshot()?.tx_packets;
                if tx != relayd_tx {
                    relayd_tx = tx;
                    last = Instant::now();
                }
            }
            let in_flight = match self.gen.port_mut() {
                Some(p) => {
                    p.kick().context("AF_XDP TX wake-up")?;
                    let a = p.accounting();
                    a.in_tx + a.in_completion > 0
                }
                None => false,
            };
            if self.drain() > 0 || in_flight {
                last = Instant::now();
            } else if last.elapsed() >= QUIET {
                return Ok(true);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(false)
    }

    /// Frames the kernel could not put on the receiving socket's RX ring (it was full, or
    /// the fill ring was empty): loss on the receivers' side, not relayd's.
    fn rx_ring_drops(&mut self) -> Result<u64> {
        let port = match (self.gen.port_mut(), self.rx_port.as_deref()) {
            (Some(p), _) => &*p,
            (None, Some(p)) => p,
            (None, None) => return Ok(0),
        };
        let k = port.kernel_stats()?;
        Ok(k.rx_dropped + k.rx_ring_full + k.rx_fill_ring_empty_descs)
    }

    /// CPU seconds of relayd and of the NAPI threads doing its receive work.
    fn relay_cpu(&self) -> Result<f64> {
        let mut t = procs::cpu_seconds(self.relayd.pid())?;
        for &pid in &self.relay_napi {
            t += procs::cpu_seconds(pid)?;
        }
        Ok(t)
    }

    fn tx_completed(&mut self) -> u64 {
        self.gen.port_mut().map_or(0, |p| p.counters().tx_completed)
    }

    /// Checks every captured frame with its receiver's keys, in arrival order.
    fn verify(&mut self) -> Tally {
        self.receivers.verify(&mut self.capture, &self.sent, &mut self.latency)
    }

    /// One probe at `rate` for `a.probe_secs`; `details` gets what the [`Probe`] has no
    /// field for.
    pub(crate) fn probe(&mut self, rate: f64, a: &SearchArgs, details: &mut Vec<ProbeDetail>) -> Result<Probe> {
        let Shape { fanout, rooms, size, .. } = self.shape;
        let total = ((rate * a.probe_secs).round() as usize).max(rooms);
        let frames = self.frames(total)?;
        // Ethernet, IPv4 and UDP headers, and the longest tag (GCM's 16 bytes).
        let frame_len = 14 + 20 + 8 + size + 16;
        // Whatever the last probe left at relayd (past DRAIN_MAX) is received and discarded.
        if self.backlog {
            self.backlog = !self.settle()?;
        }
        self.capture.prepare(total * fanout + total / 100 + 1024, frame_len)?;
        let snap0 = self.relayd.snapshot()?;
        let cpu0 = self.relay_cpu()?;
        let ticks0 = procs::cpu_ticks()?;
        let tx0 = self.tx_completed();
        let (sunk0, ring0) = (sunk(&self.topo)?, self.rx_ring_drops()?);
        let paced = self.pace(rate, &frames)?;
        self.backlog = !self.settle()?;
        let cpu1 = self.relay_cpu()?;
        let ticks1 = procs::cpu_ticks()?;
        let snap1 = self.relayd.snapshot()?;
        let sent = match self.gen.port_mut() {
            Some(_) => (self.tx_completed() - tx0) as usize,
            None => paced.taken - paced.refused,
        };
        let (sunk1, ring1) = (sunk(&self.topo)?, self.rx_ring_drops()?);
        let t = self.verify();
        if t.auth_failed > 0 {
            bail!("{} packets relayd sent failed the receivers' SRTP check (a relay bug)", t.auth_failed);
        }
        let owed = (sent * fanout) as u64;
        let loss = if owed == 0 { 1.0 } else { 1.0 - t.ok.min(owed) as f64 / owed as f64 };
        let accepted = snap1.media_accepted.saturating_sub(snap0.media_accepted);
        let generator_limited =
            paced.send_secs > a.probe_secs * 1.03 || paced.refused as f64 > a.max_loss * total as f64;
        let outcome = if generator_limited {
            Outcome::GeneratorLimited
        } else if loss > a.max_loss {
            Outcome::Loss
        } else {
            Outcome::Pass
        };
        let delta = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
            b.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(a.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        let relay_drops = delta(&snap0.drops, &snap1.drops);
        let cpu_busy = procs::cpu_busy(&ticks0, &ticks1);
        let relayd_xsk = delta(&snap0.xsk, &snap1.xsk);
        let busy = |c: usize| cpu_busy.get(c).map_or("-".into(), |b| format!("{:.0}%", b * 100.0));
        eprintln!(
            "      CPU busy: relay {} load {}; pacer backlog max {}; relayd AF_XDP {:?}; relayd drops {:?}; receivers' ring drops {}",
            busy(self.cpus.relay),
            busy(self.cpus.load),
            paced.max_backlog,
            relayd_xsk,
            relay_drops,
            ring1 - ring0
        );
        details.push(ProbeDetail {
            target_pps: rate,
            verified: t.ok,
            duplicates: t.duplicates,
            other_srtp_errors: t.other_srtp,
            stray_frames: t.stray,
            max_index_gap: t.max_index_gap,
            capture_overflow: self.capture.overflow,
            relayd_accepted: accepted,
            relayd_drops: relay_drops,
            receiver_ring_drops: ring1 - ring0,
            relayd_busy_after_drain: self.backlog,
            latency_us: Some(ProbeLatency {
                measured: self.latency.len(),
                p50: self.latency.value_at_quantile(0.5),
                p99: self.latency.value_at_quantile(0.99),
                p999: self.latency.value_at_quantile(0.999),
            }),
            to_no_receiver: sunk1 - sunk0,
            cpu_busy,
            relayd_xsk,
            pacer_max_backlog: paced.max_backlog as u64,
        });
        Ok(Probe {
            target_pps: rate,
            offered_pps: sent as f64 / paced.send_secs,
            sent: sent as u64,
            send_dropped: paced.refused as u64,
            received: t.ok,
            auth_failed: t.auth_failed,
            duplicates: t.duplicates,
            other_errors: t.other_srtp,
            loss,
            relayed_pps: t.ok as f64 / paced.send_secs,
            cpu_us_per_pkt: (accepted > 0).then(|| (cpu1 - cpu0) * 1e6 / accepted as f64),
            outcome,
            relay_sent: Some(snap1.tx_packets.saturating_sub(snap0.tx_packets)),
            recrypt_checked: None,
            first_packet: None,
        })
    }
}

/// Joins `room` from the clients' namespace, the member's socket non-blocking.
fn join(
    topo: &Topology,
    key: relay::identity::RelayKey,
    room: u32,
    user: &str,
    ssrc: Option<u32>,
    profile: Profile,
) -> Result<Member> {
    let m = relayd::join_from(topo, key, 0, room, user, ssrc, profile)?;
    m.sock.set_nonblocking(true)?;
    Ok(m)
}
