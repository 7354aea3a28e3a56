//! The throughput scenario.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use relay::client::write_rtp_header;
use relay::config::Backend;
use relay::io::netns::{NetNs, VethPair};
use relay::io::sys::SendBatch;
use relay::io::xdp::{FilterConfig, Reason, XdpFilter};
use relay::srtp::Profile;

use crate::edgerelay::{self, Member, Relayd};
pub(crate) const RELAY_IP: &str = "198.18.0.1";
pub(crate) const CLIENT_IP: &str = "198.18.0.2";
pub(crate) const PORT: u16 = 7000;

/// `relay-bench throughput` options.
#[derive(clap::Args)]
pub struct Args {
    /// Backends to compare.
    #[arg(long, value_delimiter = ',', default_value = "socket,xdp")]
    backends: Vec<Backend>,
    /// Receivers per room.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    fanout: Vec<usize>,
    /// RTP packet size before the SRTP tag.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// SRTP profile.
    #[arg(long, default_value = "AES_CM_128_HMAC_SHA1_80")]
    profile: Profile,
    /// Runs per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Packets the sender blasts per run (pre-protected; the first tenth is warm-up).
    #[arg(long, default_value_t = 1_000_000)]
    packets: usize,
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

fn join(topo: &Topology, user: &str, ssrc: Option<u32>, profile: Profile) -> Result<Member> {
    let sock = {
        let _g = topo.client_ns.enter()?;
        UdpSocket::bind(format!("{CLIENT_IP}:0"))?
    };
    let m = edgerelay::join(sock, format!("{RELAY_IP}:{PORT}").parse()?, 1, user, ssrc, profile)?;
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

/// One measurement: send every packet in `pkts` as fast as the socket takes them while the
/// sink counts; rates are taken after a warm-up (the first tenth) until the sender is done.
fn blast(topo: &Topology, relayd: &Relayd, sender: &UdpSocket, pkts: &[Vec<u8>]) -> Result<Rates> {
    let dst = sender.peer_addr()?;
    let mut tx = SendBatch::new(64);
    let warmup = pkts.len() / 10;
    let mut mark = None;
    let mut sent = 0u64;
    for chunk in pkts.chunks(64) {
        for p in chunk {
            tx.next_buffer().expect("batch of 64")[..p.len()].copy_from_slice(p);
            tx.push(dst, p.len());
        }
        sent += tx.flush(sender).sent as u64;
        if mark.is_none() && sent as usize >= warmup {
            mark = Some((sent, sunk(topo)?, relayd.snapshot()?, Instant::now()));
        }
    }
    let (s0, r0, snap0, t0) = mark.context("no packets sent")?;
    let snap1 = relayd.snapshot()?;
    let r1 = sunk(topo)?;
    let dt = t0.elapsed().as_secs_f64();
    let rate = |a: u64, b: u64| (b - a) as f64 / dt;
    Ok(Rates {
        offered: rate(s0, sent),
        accepted: rate(snap0.media_accepted, snap1.media_accepted),
        relay_tx: rate(snap0.tx_packets, snap1.tx_packets),
        received: rate(r0, r1),
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
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs the scenario and prints a table.
pub fn run(a: Args) -> Result<()> {
    let relayd = match a.relayd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("relayd"),
    };
    let mut rows = Vec::new();
    for &fanout in &a.fanout {
        for &backend in &a.backends {
            let (mut offered, mut forwarded, mut received) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..a.runs {
                let topo = topology()?;
                let relayd_proc = edgerelay::start(&relayd, Some(&topo), backend, None)?;
                let mut sender = join(&topo, "sender", Some(0x5eed), a.profile)?;
                let receivers: Vec<Member> =
                    (0..fanout).map(|i| join(&topo, &format!("r{i}"), None, a.profile)).collect::<Result<_>>()?;
                let mut seq = 0;
                let pkts = packets(&mut sender, 0x5eed, &mut seq, a.packets, a.size)?;
                let r = blast(&topo, &relayd_proc, &sender.sock, &pkts)?;
                drop(receivers);
                offered.push(r.offered);
                forwarded.push(r.accepted);
                received.push(r.received / fanout as f64);
                eprintln!(
                    "  run: offered {:.0}, relay accepted {:.0} and sent {:.0}, the sink counted {:.0} pkt/s",
                    r.offered, r.accepted, r.relay_tx, r.received
                );
            }
            let (m, lo, hi) = median(forwarded);
            let (om, _, _) = median(offered);
            let (rm, _, _) = median(received);
            println!(
                "{:<7} fanout {fanout}: {:>9.0} pkt/s in [{:.0}-{:.0}] ({:>9.0} out), offered {:.0}, received per receiver {:.0}, {} runs",
                format!("{backend:?}").to_lowercase(),
                m,
                lo,
                hi,
                m * fanout as f64,
                om,
                rm,
                a.runs
            );
            rows.push(
                serde_json::json!({"backend": format!("{backend:?}").to_lowercase(), "fanout": fanout, "size": a.size,
                "profile": a.profile.name(), "runs": a.runs, "in_pps_median": m, "in_pps_min": lo, "in_pps_max": hi,
                "offered_pps_median": om}),
            );
        }
    }
    if let Some(p) = a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
