//! The throughput scenario: relayd (one worker, pinned to the relay CPU) in one namespace,
//! the clients in another, a sender streaming pre-protected SRTP into a room of `fanout`
//! receivers as fast as the generator ([`crate::generator`], pinned to the load CPU) can, and
//! an XDP sink on the clients' veth counting what relayd sends. Rates are taken over the
//! window after a warm-up tenth; relayd's CPU time over the same window gives its cost per
//! accepted packet.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use relay::client::write_rtp_header;
use relay::config::Backend;
use relay::io::netns::{NetNs, VethPair};
use relay::io::xdp::{FilterConfig, Reason, XdpFilter};
use relay::srtp::Profile;

use crate::edgerelay::{self, Member, Relayd};
use crate::generator::{self, Generator};
use crate::procs::{self, Cpus};
use crate::progress::Progress;
pub(crate) const RELAY_IP: &str = "198.18.0.1";
pub(crate) const CLIENT_IP: &str = "198.18.0.2";
pub(crate) const PORT: u16 = 7000;
/// Packet sizes the scenario accepts: an RTP header plus a little, up to a 1500-byte MTU's
/// room once the SRTP tag and the IP/UDP headers are added.
const MIN_SIZE: usize = 20;
const MAX_SIZE: usize = 1400;

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
    /// Runs per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Packets the sender blasts per run (pre-protected; the first tenth is warm-up).
    #[arg(long, default_value_t = 1_000_000)]
    packets: usize,
    /// Traffic generator: AF_XDP frames on the clients' veth (`auto` falls back to the UDP
    /// socket if AF_XDP is unavailable) or a UDP socket with sendmmsg.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    generator: Vec<generator::Kind>,
    /// Path of relayd (default: next to this binary).
    #[arg(long)]
    relayd: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The namespace topology: relayd's namespace and the clients', joined by a veth pair, with
/// the counting sink on the clients' end.
pub(crate) struct Topology {
    // Field order is drop order: the sink detaches before the veth and namespaces go.
    pub(crate) sink: XdpFilter,
    pub(crate) veth: VethPair,
    pub(crate) client_ns: NetNs,
    pub(crate) relay_ns: NetNs,
}

pub(crate) fn topology() -> Result<Topology> {
    let relay_ns = NetNs::new("rly").context("creating the relay namespace (root needed)")?;
    let client_ns = NetNs::new("cli")?;
    let veth = VethPair::new(&relay_ns, &[&format!("{RELAY_IP}/24")], &client_ns, &[&format!("{CLIENT_IP}/24")])?;
    // The receivers' side runs the edgerelay program as a counting sink: media towards the
    // clients' ports (1024-65535) matches no session there and is dropped and counted in
    // XDP, so no receiver socket work competes with relayd for the two cores; control
    // replies (join-ok) still pass to the sockets. For the XDP backend it is also the XDP
    // program the peer of a veth needs for redirect and TX to work.
    let sink = {
        let _g = client_ns.enter()?;
        let cfg = FilterConfig { port_lo: 1024, port_hi: 65535, ..FilterConfig::default() };
        let mut f = XdpFilter::load(&veth.name_b, None, cfg)?;
        f.attach()?;
        f
    };
    Ok(Topology { relay_ns, client_ns, veth, sink })
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

fn packets(m: &mut Member, ssrc: u32, seq: &mut u16, n: usize, size: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        let h = write_rtp_header(&mut buf, 96, *seq, 0, ssrc);
        *seq = seq.wrapping_add(1);
        buf[h..size].fill(0x42);
        let len = m.client.protect_rtp(&mut buf, size)?;
        out.push(buf[..len].to_vec());
    }
    Ok(out)
}

/// Media packets the sink counted (dropped as `unknown_session` on the clients' side).
pub(crate) fn sunk(topo: &Topology) -> Result<u64> {
    Ok(topo.sink.counters()?.iter().find(|c| c.reason == Reason::UnknownSession).map_or(0, |c| c.packets))
}

/// Packets the veth pair dropped so far: the clients' end's TX drops (veth counts a full
/// peer ring there) plus the relay end's RX drops, from `ip -s -j link`.
fn veth_drops(topo: &Topology) -> Result<u64> {
    let stat = |ns: &str, dev: &str, dir: &str| -> Result<u64> {
        let out = std::process::Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", dev]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing ip -s -j link")?;
        v[0]["stats64"][dir]["dropped"].as_u64().with_context(|| format!("no {dir} drop counter for {dev}"))
    };
    Ok(stat(topo.client_ns.name(), &topo.veth.name_b, "tx")? + stat(topo.relay_ns.name(), &topo.veth.name_a, "rx")?)
}

/// Per-CPU jiffies from `/proc/stat`: (busy, softirq), where busy is everything but idle
/// and iowait. Softirq time (the veth receive paths) is charged to no process, so this is
/// where it shows.
fn cpu_jiffies() -> Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut out = Vec::new();
    for line in stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")) {
        let f: Vec<u64> = line.split_ascii_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
        let (total, idle) = (f.iter().sum::<u64>(), f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0));
        out.push((total - idle, f.get(6).copied().unwrap_or(0)));
    }
    Ok(out)
}

/// One measurement: send every packet in `pkts` (prepared by `gen`) as fast as the generator
/// takes them while the sink counts; rates are taken after a warm-up (the first tenth) until
/// the generator is done.
fn blast(topo: &Topology, relayd: &Relayd, gen: &mut Generator, sender: &UdpSocket, pkts: &[Vec<u8>]) -> Result<Rates> {
    let warmup = pkts.len() / 10;
    let mut mark = None;
    let mut sent = 0u64;
    for chunk in pkts.chunks(64) {
        sent = gen.send(sender, chunk, sent)?;
        if mark.is_none() && sent as usize >= warmup {
            mark = Some((
                sent,
                sunk(topo)?,
                relayd.snapshot()?,
                procs::cpu_seconds(relayd.pid())?,
                cpu_jiffies()?,
                Instant::now(),
            ));
        }
    }
    let sent = gen.finish(sent)?;
    let (s0, r0, snap0, cpu0, jiffies0, t0) = mark.context("no packets sent")?;
    let jiffies1 = cpu_jiffies()?;
    let veth_dropped = veth_drops(topo)?;
    let snap1 = relayd.snapshot()?;
    let cpu1 = procs::cpu_seconds(relayd.pid())?;
    let r1 = sunk(topo)?;
    let dt = t0.elapsed().as_secs_f64();
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt;
    let accepted = snap1.media_accepted.saturating_sub(snap0.media_accepted);
    let hz = procs::clock_ticks_per_sec() as f64 * dt;
    let cpu_load = jiffies0
        .iter()
        .zip(&jiffies1)
        .map(|(a, b)| (b.0.saturating_sub(a.0) as f64 / hz, b.1.saturating_sub(a.1) as f64 / hz))
        .collect();
    Ok(Rates {
        offered: rate(s0, sent),
        accepted: rate(snap0.media_accepted, snap1.media_accepted),
        relay_tx: rate(snap0.tx_packets, snap1.tx_packets),
        received: rate(r0, r1),
        relay_rx: rate(snap0.rx_packets, snap1.rx_packets),
        veth_dropped,
        relay_drops: snap1
            .drops
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(snap0.drops.get(k).copied().unwrap_or(0))))
            .filter(|(_, v)| *v > 0)
            .collect(),
        cpu_load,
        cpu_us_per_pkt: if accepted == 0 { f64::NAN } else { (cpu1 - cpu0) * 1e6 / accepted as f64 },
    })
}

/// Packets per second over the measured window.
struct Rates {
    /// What the generator's socket took.
    offered: f64,
    /// What relayd authenticated (its input rate).
    accepted: f64,
    /// What relayd transmitted.
    relay_tx: f64,
    /// What the receivers counted.
    received: f64,
    /// What relayd's worker received.
    relay_rx: f64,
    /// Packets the veth pair dropped in the whole run (warm-up included).
    veth_dropped: u64,
    /// Per CPU over the window: (busy, softirq) as fractions of the window.
    cpu_load: Vec<(f64, f64)>,
    /// relayd's drops by reason over the window.
    relay_drops: Vec<(String, u64)>,
    /// relayd's CPU time (user + system, in its process) per accepted packet, in µs. Softirq
    /// work the kernel charges to whichever task it interrupts is not in it.
    cpu_us_per_pkt: f64,
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs the scenario and prints a table.
pub fn run(a: Args) -> Result<()> {
    let relayd = edgerelay::relayd_path(&a.relayd)?;
    // Before pinning: the CPU count follows this thread's affinity.
    let cpus = Cpus::detect();
    cpus.pin_load_thread();
    let mut rows = Vec::new();
    if a.rooms.contains(&0) || a.fanout.contains(&0) || a.runs == 0 {
        bail!("--rooms, --fanout and --runs must be at least 1");
    }
    if a.rooms.iter().any(|&r| r > 1) && a.generator.contains(&generator::Kind::Socket) {
        bail!("more than one room needs the AF_XDP generator (--generator afxdp or auto)");
    }
    if a.rooms.iter().any(|&r| r > a.packets) {
        bail!("--packets must be at least the number of rooms");
    }
    if a.size.iter().any(|&s| !(MIN_SIZE..=MAX_SIZE).contains(&s)) {
        bail!("--size must be between {MIN_SIZE} and {MAX_SIZE} bytes");
    }
    let total =
        a.generator.len() * a.profile.len() * a.size.len() * a.rooms.len() * a.fanout.len() * a.backends.len() * a.runs;
    let progress = Progress::new(total as u64, "throughput");
    let mut shapes = Vec::new();
    for &kind in &a.generator {
        for &profile in &a.profile {
            for &size in &a.size {
                for &rooms in &a.rooms {
                    for &fanout in &a.fanout {
                        for &backend in &a.backends {
                            shapes.push(Shape { kind, profile, size, rooms, fanout, backend });
                        }
                    }
                }
            }
        }
    }
    for shape in shapes {
        rows.push(configuration(&a, &relayd, cpus, shape, &progress)?);
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

/// `runs` runs of one configuration, each in a fresh topology with a fresh relayd; prints the
/// medians and returns them as a JSON row.
/// One configuration of the scenario.
#[derive(Clone, Copy)]
struct Shape {
    kind: generator::Kind,
    profile: Profile,
    size: usize,
    rooms: usize,
    fanout: usize,
    backend: Backend,
}

/// Each room's sender SSRC.
fn sender_ssrc(room: usize) -> u32 {
    0x5eed + room as u32
}

fn configuration(
    a: &Args,
    relayd: &std::path::Path,
    cpus: Cpus,
    shape: Shape,
    progress: &Progress,
) -> Result<serde_json::Value> {
    let Shape { kind, profile, size, rooms, fanout, backend } = shape;
    let (mut offered, mut forwarded, mut received, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut gen_name = "";
    let mut details = Vec::new();
    let mut invalid = 0usize;
    for i in 0..a.runs {
        procs::check_interrupted()?;
        progress.step(format!("{backend:?} {rooms} room(s) × fan-out {fanout}, {kind:?} generator, run {}", i + 1));
        let topo = topology()?;
        let relayd_proc = edgerelay::start(relayd, Some(&topo), backend, Some(cpus))?;
        let mut senders = Vec::with_capacity(rooms);
        let mut receivers: Vec<Member> = Vec::with_capacity(rooms * fanout);
        for room in 0..rooms {
            let id = room as u32 + 1;
            senders.push(join(&topo, id, &format!("s{room}"), Some(sender_ssrc(room)), profile)?);
            for r in 0..fanout {
                receivers.push(join(&topo, id, &format!("r{room}-{r}"), None, profile)?);
            }
        }
        let mut gen = Generator::open(kind, &topo)?;
        gen_name = gen.name();
        if rooms > 1 && gen.macs().is_none() {
            bail!("more than one room needs the AF_XDP generator, which is unavailable here");
        }
        // Each sender's share, prepared per sender and interleaved round-robin, so every
        // room's stream is spread over the whole blast.
        let mut per_sender = Vec::with_capacity(rooms);
        for (room, s) in senders.iter_mut().enumerate() {
            let mut seq = 0;
            let n = a.packets / rooms + usize::from(room < a.packets % rooms);
            let payloads = packets(s, sender_ssrc(room), &mut seq, n, size)?;
            per_sender.push(gen.prepare(&s.sock, payloads)?.into_iter());
        }
        let mut pkts = Vec::with_capacity(a.packets);
        while pkts.len() < a.packets {
            for it in &mut per_sender {
                pkts.extend(it.next());
            }
        }
        let r = blast(&topo, &relayd_proc, &mut gen, &senders[0].sock, &pkts)?;
        // The generator's socket goes before the topology it is bound in.
        drop(gen);
        drop(receivers);
        drop(senders);
        // Every packet the generator sends is authentic and sent once; relayd refusing any
        // as forged or replayed means the input was damaged on the way (seen with the
        // AF_XDP generator into the socket backend's deep socket backlog at fan-out 16,
        // never with the socket generator). Such a run measures the damage, not relayd:
        // it is reported and left out of the medians.
        let damaged: u64 =
            r.relay_drops.iter().filter(|(k, _)| k == "auth_failed" || k == "replayed").map(|(_, v)| v).sum();
        let valid = damaged == 0;
        if valid {
            offered.push(r.offered);
            forwarded.push(r.accepted);
            received.push(r.received / (fanout * rooms) as f64);
            cpu.push(r.cpu_us_per_pkt);
        } else {
            invalid += 1;
            progress.note(&format!(
                "  run left out: relayd refused {damaged} packets as forged or replayed (damaged input)"
            ));
        }
        progress.inc();
        progress.note(&format!(
            "  run: offered {:.0}, relay received {:.0}, accepted {:.0} and sent {:.0}, the sink counted {:.0} pkt/s; relayd {:.2} µs CPU per accepted packet; veth drops {} (whole run), relayd drops {:?}; CPUs busy (softirq) {}",
            r.offered,
            r.relay_rx,
            r.accepted,
            r.relay_tx,
            r.received,
            r.cpu_us_per_pkt,
            r.veth_dropped,
            r.relay_drops,
            r.cpu_load.iter().map(|(b, s)| format!("{:.0}% ({:.0}%)", b * 100.0, s * 100.0)).collect::<Vec<_>>().join(", ")
        ));
        details.push(
            serde_json::json!({"offered_pps": r.offered, "relay_rx_pps": r.relay_rx, "accepted_pps": r.accepted,
            "relay_tx_pps": r.relay_tx, "sink_pps": r.received, "relayd_cpu_us_per_pkt": r.cpu_us_per_pkt,
            "veth_dropped": r.veth_dropped, "cpu_busy_softirq": r.cpu_load, "valid": valid,
            "relayd_drops": r.relay_drops.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()}),
        );
    }
    let backend_name = format!("{backend:?}").to_lowercase();
    if forwarded.is_empty() {
        progress.out(&format!(
            "{backend_name:<7} {} {size} B rooms {rooms} fanout {fanout}: every run's input was damaged; no figure",
            profile.name()
        ));
        return Ok(
            serde_json::json!({"backend": backend_name, "generator": gen_name, "rooms": rooms, "fanout": fanout,
            "size": size, "profile": profile.name(), "runs": a.runs, "valid_runs": 0, "runs_detail": details}),
        );
    }
    let (m, lo, hi) = median(forwarded);
    let (om, olo, ohi) = median(offered);
    let (rm, _, _) = median(received);
    let (cm, clo, chi) = median(cpu);
    progress.out(&format!(
        "{backend_name:<7} {} {size} B rooms {rooms} fanout {fanout} gen {gen_name:<6}: {m:>9.0} pkt/s in [{lo:.0}-{hi:.0}] ({:>9.0} out), offered {om:.0} [{olo:.0}-{ohi:.0}], received per receiver {rm:.0}, relayd {cm:.2} µs/pkt [{clo:.2}-{chi:.2}], {} of {} runs",
        profile.name(),
        m * fanout as f64,
        a.runs - invalid,
        a.runs
    ));
    Ok(
        serde_json::json!({"backend": backend_name, "generator": gen_name, "rooms": rooms, "fanout": fanout, "size": size,
        "profile": profile.name(), "runs": a.runs, "valid_runs": a.runs - invalid, "in_pps_median": m, "in_pps_min": lo, "in_pps_max": hi,
        "offered_pps_median": om, "offered_pps_min": olo, "offered_pps_max": ohi, "received_per_receiver_pps_median": rm,
        "relayd_cpu_us_per_pkt_median": cm, "relayd_cpu_us_per_pkt_min": clo, "relayd_cpu_us_per_pkt_max": chi, "runs_detail": details}),
    )
}
