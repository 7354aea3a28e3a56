//! The throughput scenario: relayd's maximum loss-free rate, found by search, with every
//! relayed packet verified at its receiver.
//!
//! Topology (fresh for every run): relayd (one worker, pinned to the relay CPU) in one
//! namespace, the clients in another, joined by a veth pair. `rooms` rooms of one sender and
//! `fanout` receivers join once per run; then [`load::search`] probes rates. A probe sends
//! `rate × probe_secs` pre-protected SRTP packets, paced, from the generator
//! ([`crate::generator`], on the load CPU), the senders' packets interleaved round-robin.
//!
//! The receiving end: the edgerelay XDP program on the clients' veth, with every receiver's
//! 5-tuple in its sessions map, redirects relayd's output into an AF_XDP socket (the
//! generator's own when that is the AF_XDP one). While a probe runs, the load thread only
//! copies each frame into a preallocated capture arena; after it, every frame is checked:
//! UDP checksum, destination receiver, then the SRTP tag and replay check with that
//! receiver's keys. So receiving costs one copy per packet during the measurement, and loss,
//! duplicates and authentication failures are counted exactly.
//!
//! Every packet carries its number in its payload; the pacer notes when it hands each one to
//! the generator and the capture when it takes each frame off the ring (a clock read per
//! burst and per batch), so each verified packet also yields a one-way latency ([`Rig::latency`],
//! used by [`crate::latency`]).
//!
//! A probe passes when the verified packets are at least `1 - max_loss` of those owed (sent ×
//! fan-out) and the generator kept the rate. A packet that fails its receiver's SRTP check
//! stops the run with an error: relayd must never forward one.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use relay::client::{write_rtp_header, Event};
use relay::config::Backend;
use relay::io::afxdp::XskPort;
use relay::io::netns::{NetNs, VethPair};
use relay::io::xdp::{FilterConfig, Reason, XdpFilter};
use relay::srtp::Profile;
use serde_json::{json, Value};

use crate::baseline::Stat;
use crate::edgerelay::{self, Member, Relayd};
use crate::generator::{self, Generator};
use crate::load::{self, Outcome, Probe, SearchArgs};
use crate::procs::{self, check_interrupted, Cpus};
use crate::progress::Progress;

pub(crate) const RELAY_IP: &str = "198.18.0.1";
pub(crate) const CLIENT_IP: &str = "198.18.0.2";
pub(crate) const PORT: u16 = 7000;
/// Packet sizes the scenario accepts: an RTP header plus a little, up to a 1500-byte MTU's
/// room once the SRTP tag and the IP/UDP headers are added.
pub(crate) const MIN_SIZE: usize = 20;
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
/// The most memory the capture arena may take.
const CAPTURE_MAX_BYTES: usize = 8 << 30;

/// `relay-bench throughput` options.
#[derive(clap::Args)]
pub struct Args {
    /// Backends to compare.
    #[arg(long, value_delimiter = ',', default_value = "socket,xdp")]
    backends: Vec<Backend>,
    /// Receivers per room.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    fanout: Vec<usize>,
    /// Rooms, each with one sender and `fanout` receivers; the packets of all senders are
    /// interleaved (more than one room needs the AF_XDP generator).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    rooms: Vec<usize>,
    /// RTP packet sizes before the SRTP tag.
    #[arg(long, value_delimiter = ',', default_value = "1200")]
    size: Vec<usize>,
    /// SRTP profiles.
    #[arg(long, value_delimiter = ',', default_value = "AES_CM_128_HMAC_SHA1_80")]
    profile: Vec<Profile>,
    /// Runs per configuration (the median is reported); the backends' runs are interleaved.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Traffic generator: AF_XDP frames on the clients' veth (`auto` falls back to the UDP
    /// socket if AF_XDP is unavailable) or a UDP socket with sendmmsg.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    generator: Vec<generator::Kind>,
    /// Where the veths' receive work runs (see `threaded_napi`): `softirq` (veth's default:
    /// on the transmitting CPU, so relayd's input is processed on the load CPU and its
    /// receivers' input on the relay CPU), `threaded` (NAPI threads pinned per side: relayd's
    /// on the relay CPU, the receivers' on the load CPU) or `threaded-rt` (the same, SCHED_FIFO).
    #[arg(long, value_enum, default_value = "softirq")]
    napi: Napi,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    relayd: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    search: SearchArgs,
}

/// Where the veths' receive work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Napi {
    /// In softirq on the CPU that transmitted (veth's default).
    Softirq,
    /// In NAPI threads pinned per side.
    Threaded,
    /// In NAPI threads pinned per side, real-time (SCHED_FIFO 50) like a softirq.
    ThreadedRt,
}

/// The namespace topology: relayd's namespace and the clients', joined by a veth pair, with
/// the edgerelay XDP program on the clients' end as the sink.
pub(crate) struct Topology {
    // Field order is drop order: the sink detaches before the veth and namespaces go.
    pub(crate) sink: XdpFilter,
    pub(crate) veth: VethPair,
    pub(crate) client_ns: NetNs,
    pub(crate) relay_ns: NetNs,
}

pub(crate) fn topology() -> Result<Topology> {
    topology_with_queues(1)
}

/// [`topology`] over a veth pair with `queues` queues per end (one relayd worker each).
pub(crate) fn topology_with_queues(queues: u32) -> Result<Topology> {
    let relay_ns = NetNs::new("rly").context("creating the relay namespace (root needed)")?;
    let client_ns = NetNs::new("cli")?;
    let veth = VethPair::with_queues(
        &relay_ns,
        &[&format!("{RELAY_IP}/24")],
        &client_ns,
        &[&format!("{CLIENT_IP}/24")],
        queues,
    )?;
    // The receivers' side runs the edgerelay program as the sink: media towards the clients'
    // ports (1024-65535) is redirected to an AF_XDP socket if its 5-tuple is in the sink's
    // sessions map and a socket is registered, else dropped and counted (`unknown_session`),
    // so no receiver socket work competes with relayd for the two cores; control replies
    // (join-ok) pass to the sockets while no AF_XDP socket is registered. For the XDP backend
    // it is also the XDP program the peer of a veth needs for redirect and TX to work.
    let sink = {
        let _g = client_ns.enter()?;
        let cfg = FilterConfig { port_lo: 1024, port_hi: 65535, ..FilterConfig::default() };
        let mut f = XdpFilter::load(&veth.name_b, None, cfg)?;
        f.attach()?;
        f
    };
    Ok(Topology { relay_ns, client_ns, veth, sink })
}

/// Moves the receive path of `dev` (in namespace `ns`) into NAPI kernel threads pinned to
/// `cpu`, and returns their pids.
///
/// veth otherwise runs a receiver's NAPI (its XDP program, the copy into an AF_XDP socket,
/// the UDP stack) in softirq on whichever CPU transmitted: relayd's output would be received
/// on relayd's CPU, and its input processed on the generator's. Threaded NAPI puts each
/// side's receive work where a NIC's would run: relayd's on the relay CPU, the receivers' on
/// the load CPU. A veth without an XDP program has no NAPI unless GRO is on (`gro`), which
/// needs `ethtool`.
pub(crate) fn threaded_napi(ns: &NetNs, dev: &str, cpu: usize, gro: bool, rt: bool) -> Result<Vec<u32>> {
    // /sys/class/net shows the namespace sysfs was mounted in; `ip netns exec` remounts it.
    let exec = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("ip").args(["netns", "exec", ns.name()]).args(args).output()?;
        if !out.status.success() {
            bail!("`{}` in {}: {}", args.join(" "), ns.name(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    if gro {
        procs::require("ethtool", "ethtool", false)?;
        exec(&["ethtool", "-K", dev, "gro", "on"])?;
    }
    // The threads are named `napi/DEV-ID`, cut to 15 bytes: the ones that appear with the
    // switch (and match the cut name) are this device's.
    let prefix: String = format!("napi/{dev}-").chars().take(15).collect();
    let napi_threads = || -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end().starts_with(&prefix)) {
                pids.push(pid);
            }
        }
        Ok(pids)
    };
    let before = napi_threads()?;
    exec(&["sh", "-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")])
        .with_context(|| format!("threaded NAPI on {dev}"))?;
    let pids: Vec<u32> = napi_threads()?.into_iter().filter(|p| !before.contains(p)).collect();
    if pids.is_empty() {
        bail!("no NAPI thread for {dev} after enabling threaded NAPI");
    }
    // Pinned, and with `rt` real-time like the softirq it replaces, so it preempts the busy
    // threads on its CPU (relayd's worker, the pacer) as soon as frames are waiting.
    for pid in &pids {
        let pid = pid.to_string();
        let cpu = cpu.to_string();
        let pin = ("taskset", &["-pc", &cpu, &pid][..]);
        let fifo = ("chrt", &["-f", "-p", "50", &pid][..]);
        for (tool, args) in std::iter::once(pin).chain(rt.then_some(fifo)) {
            let out = std::process::Command::new(tool).args(args).output()?;
            if !out.status.success() {
                bail!("`{tool} {}` for {prefix}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
        }
    }
    Ok(pids)
}

/// Media packets the sink counted as `unknown_session` (relayd's output to clients whose
/// 5-tuple is not in the sink's sessions map).
pub(crate) fn sunk(topo: &Topology) -> Result<u64> {
    Ok(topo.sink.counters()?.iter().find(|c| c.reason == Reason::UnknownSession).map_or(0, |c| c.packets))
}

fn join(topo: &Topology, room: u32, user: &str, ssrc: Option<u32>, profile: Profile) -> Result<Member> {
    let sock = {
        let _g = topo.client_ns.enter()?;
        UdpSocket::bind(format!("{CLIENT_IP}:0"))?
    };
    let m = edgerelay::join(sock, format!("{RELAY_IP}:{PORT}").parse()?, room, user, ssrc, profile)?;
    m.sock.set_nonblocking(true)?;
    Ok(m)
}

/// One configuration of the scenario, without the backend.
#[derive(Clone, Copy)]
struct Shape {
    kind: generator::Kind,
    profile: Profile,
    size: usize,
    rooms: usize,
    fanout: usize,
}

/// Each room's sender SSRC.
fn sender_ssrc(room: usize) -> u32 {
    0x5eed + room as u32
}

/// Relayed frames, copied in as they arrive and checked after the probe.
#[derive(Default)]
struct Capture {
    /// Preallocated (and touched) before the probe, so receiving never allocates.
    arena: Vec<u8>,
    used: usize,
    /// (offset, length) of each frame in arrival order.
    frames: Vec<(usize, usize)>,
    /// When each frame was taken off the receiving ring (one clock read per batch).
    arrived: Vec<Instant>,
    /// Frames that did not fit (not checked; counted as lost).
    overflow: u64,
}

impl Capture {
    /// Makes room for `frames` frames of at most `frame_len` bytes and forgets the last probe.
    fn prepare(&mut self, frames: usize, frame_len: usize) -> Result<()> {
        let bytes = frames.saturating_mul(frame_len);
        if bytes > CAPTURE_MAX_BYTES {
            bail!(
                "a probe would capture {} MiB (more than {} MiB): lower --max-pps or --probe-secs",
                bytes >> 20,
                CAPTURE_MAX_BYTES >> 20
            );
        }
        if self.arena.len() < bytes {
            self.arena.resize(bytes, 0);
        }
        self.used = 0;
        self.frames.clear();
        self.frames.reserve(frames);
        self.arrived.clear();
        self.arrived.reserve(frames);
        self.overflow = 0;
        Ok(())
    }

    fn push(&mut self, frame: &[u8], at: Instant) {
        let end = self.used + frame.len();
        match self.arena.get_mut(self.used..end) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                self.frames.push((self.used, frame.len()));
                self.arrived.push(at);
                self.used = end;
            }
            None => self.overflow += 1,
        }
    }
}

/// What the receivers' check found in one probe's capture.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Authentic, first-seen media for its receiver.
    ok: u64,
    /// Failed the receiver's SRTP tag check.
    auth_failed: u64,
    /// Refused by the receiver's replay check as already received.
    duplicates: u64,
    /// Other SRTP errors (too old, malformed RTP).
    other_srtp: u64,
    /// Not a valid UDP frame (bad checksum included), or not media for a receiver.
    stray: u64,
    /// The largest jump in SRTP packet index between two packets one receiver verified: more
    /// than 2^15 lost in a row is where RFC 3711's index estimate (Appendix A) can go wrong.
    max_index_gap: u64,
}

/// How the pacer finished.
struct Paced {
    /// Items the generator took (queued or sent), refused ones included.
    taken: usize,
    /// Datagrams the sender's socket refused.
    refused: usize,
    /// From the first packet to the last one handed over.
    send_secs: f64,
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
    /// The number of this probe's first packet.
    probe_first_id: u64,
    /// When each of this probe's packets was handed to the generator, by number.
    sent_at: Vec<Option<Instant>>,
    /// One-way latency of this probe's verified packets, µs: from the hand-over to the
    /// generator to the frame being taken off the receivers' ring.
    latency: Histogram<u64>,
    receivers: Vec<Member>,
    /// Receiver index by its UDP port.
    by_port: HashMap<u16, usize>,
    /// Per receiver, the SRTP index of the last packet it verified.
    last_index: Vec<Option<u64>>,
    /// The last probe's drain ended at [`DRAIN_MAX`] with relayd still busy.
    backlog: bool,
    capture: Capture,
    /// NAPI threads doing relayd's receive work, charged to it with its own CPU time.
    relay_napi: Vec<u32>,
    topo: Topology,
    shape: Shape,
}

impl Rig {
    /// A rig of one room with one sender and one receiver, AF_XDP generator if available,
    /// SRTP_80 packets of `size` bytes, receive work in softirq: `compare`'s edgerelay XDP row.
    pub(crate) fn fan_out_one(bin: &Path, cpus: Cpus, backend: Backend, size: usize) -> Result<Self> {
        let shape =
            Shape { kind: generator::Kind::Auto, profile: Profile::AesCm128HmacSha1_80, size, rooms: 1, fanout: 1 };
        Self::start(bin, cpus, shape, backend, Napi::Softirq)
    }

    fn start(bin: &Path, cpus: Cpus, shape: Shape, backend: Backend, napi: Napi) -> Result<Self> {
        let mut topo = topology()?;
        let relayd = edgerelay::start(bin, Some(&topo), backend, Some(cpus))?;
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
            senders.push(join(&topo, id, &format!("s{room}"), Some(sender_ssrc(room)), shape.profile)?);
            for r in 0..shape.fanout {
                receivers.push(join(&topo, id, &format!("r{room}-{r}"), None, shape.profile)?);
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
        let relay_addr: SocketAddr = format!("{RELAY_IP}:{PORT}").parse()?;
        let mut by_port = HashMap::new();
        for (i, r) in receivers.iter().enumerate() {
            let local = r.sock.local_addr()?;
            topo.sink.add_session(relay_addr, local, i as u64).context("adding a receiver to the sink")?;
            by_port.insert(local.port(), i);
        }
        let seqs = vec![0; senders.len()];
        let last_index = vec![None; receivers.len()];
        Ok(Self {
            relayd,
            gen,
            rx_port,
            senders,
            seqs,
            next_id: 0,
            probe_first_id: 0,
            sent_at: Vec::new(),
            latency: crate::flood::new_hist()?,
            receivers,
            by_port,
            last_index,
            backlog: false,
            capture: Capture::default(),
            relay_napi,
            topo,
            shape,
        })
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
        self.probe_first_id = self.next_id;
        for (room, s) in self.senders.iter_mut().enumerate() {
            let n = total / rooms + usize::from(room < total % rooms);
            let mut payloads = Vec::with_capacity(n);
            for j in 0..n {
                let seq = &mut self.seqs[room];
                let h = write_rtp_header(&mut buf, 96, *seq, 0, sender_ssrc(room));
                *seq = seq.wrapping_add(1);
                buf[h..self.shape.size].fill(0x42);
                // The round-robin below puts sender `room`'s j-th packet at j · rooms + room.
                let id = self.probe_first_id + (j * rooms + room) as u64;
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
        self.sent_at.clear();
        self.sent_at.resize(total, None);
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
        let (mut next, mut refused) = (0usize, 0usize);
        while next < frames.len() {
            check_interrupted()?;
            let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(frames.len());
            if due > next {
                let now = Instant::now();
                let offer = self.gen.try_send(&sock, &frames[next..due.min(next + BURST)])?;
                for t in self.sent_at.iter_mut().skip(next).take(offer.taken) {
                    *t = Some(now);
                }
                next += offer.taken;
                refused += offer.refused;
            }
            self.drain();
        }
        Ok(Paced { taken: next, refused, send_secs: start.elapsed().as_secs_f64() })
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
        let mut t = Tally::default();
        let Self { capture, receivers, by_port, last_index, latency, sent_at, probe_first_id, .. } = self;
        latency.reset();
        for (&(off, len), &arrived) in capture.frames.iter().zip(&capture.arrived) {
            let frame = &mut capture.arena[off..off + len];
            let Ok(meta) = relay::wire::parse_udp(frame) else {
                t.stray += 1;
                continue;
            };
            let Some(&i) = by_port.get(&meta.dst.port()) else {
                t.stray += 1;
                continue;
            };
            let rtp = &mut frame[meta.payload];
            match receivers[i].client.handle(rtp) {
                Event::Media { index, len, .. } => {
                    t.ok += 1;
                    // The packet's number, after the RTP header, locates its send time; a
                    // packet of an earlier probe has none here.
                    let plain = &rtp[..len];
                    let id = relay::srtp::RtpPacket::new_checked(plain)
                        .ok()
                        .and_then(|p| plain.get(p.header_len()..p.header_len() + 8))
                        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
                    let sent = id
                        .and_then(|id| id.checked_sub(*probe_first_id))
                        .and_then(|k| sent_at.get(usize::try_from(k).ok()?).copied().flatten());
                    if let Some(sent) = sent {
                        let us = arrived.saturating_duration_since(sent).as_micros();
                        latency.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                    }
                    if let Some(last) = last_index[i].replace(index) {
                        t.max_index_gap = t.max_index_gap.max(index.saturating_sub(last));
                    }
                }
                Event::MediaError(relay::srtp::Error::AuthFailed) => t.auth_failed += 1,
                Event::MediaError(relay::srtp::Error::Replayed) => t.duplicates += 1,
                Event::MediaError(_) => t.other_srtp += 1,
                _ => t.stray += 1,
            }
        }
        t
    }

    /// One probe at `rate` for `a.probe_secs`; `details` gets what the [`Probe`] has no
    /// field for.
    pub(crate) fn probe(&mut self, rate: f64, a: &SearchArgs, details: &mut Vec<Value>) -> Result<Probe> {
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
        let tx0 = self.tx_completed();
        let (sunk0, ring0) = (sunk(&self.topo)?, self.rx_ring_drops()?);
        let paced = self.pace(rate, &frames)?;
        self.backlog = !self.settle()?;
        let cpu1 = self.relay_cpu()?;
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
        let relay_drops: BTreeMap<String, u64> = snap1
            .drops
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(snap0.drops.get(k).copied().unwrap_or(0))))
            .filter(|(_, v)| *v > 0)
            .collect();
        details.push(json!({
            "target_pps": rate, "verified": t.ok, "duplicates": t.duplicates, "other_srtp_errors": t.other_srtp,
            "stray_frames": t.stray, "max_index_gap": t.max_index_gap, "capture_overflow": self.capture.overflow, "relayd_accepted": accepted,
            "relayd_drops": relay_drops, "receiver_ring_drops": ring1 - ring0, "relayd_busy_after_drain": self.backlog,
            "latency_us": {"measured": self.latency.len(), "p50": self.latency.value_at_quantile(0.5),
                "p99": self.latency.value_at_quantile(0.99), "p999": self.latency.value_at_quantile(0.999)},
            "to_no_receiver": sunk1 - sunk0,
        }));
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

/// One backend's runs of one shape.
#[derive(Default)]
struct Runs {
    /// Loss-free input rate per run (`None`: the search found no passing rate).
    in_pps: Vec<Option<f64>>,
    cpu_us: Vec<f64>,
    stopped_by: Vec<&'static str>,
    details: Vec<Value>,
}

/// Runs the scenario and prints a table.
pub fn run(a: Args) -> Result<()> {
    let relayd = edgerelay::relayd_path(&a.relayd)?;
    // Before pinning: the CPU count follows this thread's affinity.
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    if a.rooms.contains(&0) || a.fanout.contains(&0) || a.runs == 0 || a.backends.is_empty() {
        bail!("--rooms, --fanout and --runs must be at least 1, and --backends not empty");
    }
    if a.rooms.iter().any(|&r| r > 1) && a.generator.contains(&generator::Kind::Socket) {
        bail!("more than one room needs the AF_XDP generator (--generator afxdp or auto)");
    }
    if a.size.iter().any(|&s| !(MIN_SIZE..=MAX_SIZE).contains(&s)) {
        bail!("--size must be between {MIN_SIZE} and {MAX_SIZE} bytes");
    }
    if !(a.search.probe_secs > 0.0 && a.search.start_pps >= 1.0 && a.search.max_pps >= a.search.start_pps) {
        bail!("--probe-secs must be positive and --start-pps at least 1 and at most --max-pps");
    }
    let mut shapes = Vec::new();
    for &kind in &a.generator {
        for &profile in &a.profile {
            for &size in &a.size {
                for &rooms in &a.rooms {
                    for &fanout in &a.fanout {
                        shapes.push(Shape { kind, profile, size, rooms, fanout });
                    }
                }
            }
        }
    }
    let progress = Progress::new((shapes.len() * a.backends.len() * a.runs) as u64, "throughput");
    let mut rows = Vec::new();
    for shape in shapes {
        rows.extend(configuration(&a, &relayd, cpus, shape, &progress)?);
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

/// `runs` searches of one shape per backend, the backends' runs interleaved (run 1 of each,
/// then run 2, …), each in a fresh topology with a fresh relayd; prints the medians and
/// returns one JSON row per backend.
fn configuration(a: &Args, relayd: &Path, cpus: Cpus, shape: Shape, progress: &Progress) -> Result<Vec<Value>> {
    let Shape { kind, profile, size, rooms, fanout } = shape;
    let mut runs: Vec<Runs> = a.backends.iter().map(|_| Runs::default()).collect();
    let mut gen_name = "";
    for i in 0..a.runs {
        for (b, &backend) in a.backends.iter().enumerate() {
            check_interrupted()?;
            progress.step(format!(
                "{backend:?} {} {size} B, {rooms} room(s) × fan-out {fanout}, {kind:?} generator, run {}",
                profile.name(),
                i + 1
            ));
            let mut rig = Rig::start(relayd, cpus, shape, backend, a.napi)?;
            gen_name = rig.gen.name();
            let mut details = Vec::new();
            let found = load::search(&a.search, |rate| rig.probe(rate, &a.search, &mut details))?;
            drop(rig);
            let r = &mut runs[b];
            let best = found.best.as_ref();
            r.in_pps.push(best.map(|p| p.offered_pps));
            r.cpu_us.push(best.and_then(|p| p.cpu_us_per_pkt).unwrap_or(f64::NAN));
            r.stopped_by.push(found.stopped_by);
            progress.inc();
            progress.note(&format!(
                "  {backend:?} run {}: loss-free {} pkt/s in, stopped by {}",
                i + 1,
                best.map_or("-".into(), |p| format!("{:.0}", p.offered_pps)),
                found.stopped_by
            ));
            r.details.push(json!({"best": best, "stopped_by": found.stopped_by, "probes": found.probes,
                "probe_details": details}));
        }
    }
    let socket = a.backends.iter().position(|&b| b == Backend::Socket);
    let mut rows = Vec::new();
    for (b, &backend) in a.backends.iter().enumerate() {
        let r = &runs[b];
        let name = format!("{backend:?}").to_lowercase();
        let found: Vec<f64> = r.in_pps.iter().flatten().copied().collect();
        let pps = Stat::of(&found);
        let cpu = Stat::of(&r.cpu_us);
        // Per-run ratios against the socket backend's run of the same index.
        let ratio = socket.filter(|&s| s != b).and_then(|s| {
            let v: Vec<f64> = r.in_pps.iter().zip(&runs[s].in_pps).filter_map(|(x, y)| Some((*x)? / (*y)?)).collect();
            Stat::of(&v)
        });
        let fmt = |s: Option<Stat>, d: usize| {
            s.map_or("-".into(), |s| format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = d))
        };
        progress.out(&format!(
            "{name:<7} {} {size} B rooms {rooms} fanout {fanout} gen {gen_name:<6}: loss-free {} pkt/s in ({} out), relayd {} µs/pkt{}, {} of {} runs found a rate",
            profile.name(),
            fmt(pps, 0),
            pps.map_or("-".into(), |s| format!("{:.0}", s.median * fanout as f64)),
            fmt(cpu, 2),
            ratio.map_or(String::new(), |s| format!(", ÷ socket {}", fmt(Some(s), 2))),
            found.len(),
            a.runs
        ));
        let mut row = json!({
            "backend": name, "generator": gen_name, "rooms": rooms, "fanout": fanout, "size": size,
            "profile": profile.name(), "runs": a.runs, "valid_runs": found.len(), "max_loss": a.search.max_loss,
            "probe_secs": a.search.probe_secs, "napi": clap::ValueEnum::to_possible_value(&a.napi).map(|v| v.get_name().to_owned()), "stopped_by": r.stopped_by, "runs_detail": r.details,
        });
        if let Some(s) = pps {
            row["in_pps_median"] = json!(s.median);
            row["in_pps_min"] = json!(s.min);
            row["in_pps_max"] = json!(s.max);
            row["out_pps_median"] = json!(s.median * fanout as f64);
        }
        if let Some(s) = cpu {
            row["relayd_cpu_us_per_pkt_median"] = json!(s.median);
            row["relayd_cpu_us_per_pkt_min"] = json!(s.min);
            row["relayd_cpu_us_per_pkt_max"] = json!(s.max);
        }
        if let Some(s) = ratio {
            row["ratio_vs_socket"] = json!(s);
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_frames_in_order_and_counts_what_does_not_fit() {
        let mut c = Capture::default();
        c.prepare(2, 4).unwrap();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_micros(5);
        c.push(&[1, 2, 3], t0);
        c.push(&[4, 5, 6, 7], t1);
        c.push(&[8, 9], t1);
        assert_eq!(c.frames, [(0, 3), (3, 4)]);
        assert_eq!(c.arrived, [t0, t1], "an arrival time per kept frame");
        assert_eq!(&c.arena[..7], &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.overflow, 1, "the third frame does not fit in 2 × 4 bytes");
        // The next probe starts empty and reuses the arena.
        c.prepare(1, 4).unwrap();
        assert!(c.frames.is_empty() && c.arrived.is_empty() && c.overflow == 0 && c.arena.len() == 8);
        assert!(c.prepare(CAPTURE_MAX_BYTES, 2).is_err(), "a capture over the limit is refused");
    }
}
