//! The XDP part of `relay-bench cluster` (`--xdp`, root): per run a fresh three-node cluster
//! in network namespaces ([`EdgeCluster`]), relayd on the XDP backend on every node.
//!
//! Each run first checks the cluster works as a product: an app created through node 1, a
//! UserSig minted on node 2 and on node 3 (the client joins the endpoint and key the
//! answer's `relays` gives for that node), a publisher and a receiver joined at node 2 and a
//! receiver at node 3, and media from the publisher counted at both receivers. The room spans
//! nodes 2 and 3, so relay-control opens a cascade leg between them: the run waits (at most
//! 15 s) until both relayds list it up, records how long that took from the last join
//! (`leg_up_ms`), and fails unless both receivers get every packet.
//!
//! Then it measures, each time an upper bound by one poll of relayd's management socket
//! (every poll asks all three kernels, about a tenth of a millisecond each):
//! - **operator entry**: from just before `POST /v1/blocklist` on node 1 until the entry is
//!   in the kernel blocklist of every node (the slowest node per entry; `--entries` entries,
//!   the run's median and max);
//! - **autoblock**: an attacker floods node 3 ([`media::Flood`], [`FLOOD_PPS`], ten times
//!   `[autoblock] pps_threshold`); from the flood's start until node 3's kernel holds the
//!   `auto` entry, and from there until all three kernels do.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::api::{self, AddBlock, BlockSource};
use control::client::{Call, Method};
use relay::client::{write_rtp_header, Event};
use relay::mgmt;
use serde::Serialize;

use crate::cluster_net::{relay_addr, EdgeCluster, ATTACKER_IP};
use crate::cluster_proc::percentile;
use crate::demo::edge::kernel_blocks;
use crate::demo::media::{self, Member};
use crate::procs::check_interrupted;
use crate::stats::Stat;

const NODES: usize = 3;
/// Kernel drops per second from one source above which relay-control blocks it.
const AUTOBLOCK_PPS: u64 = 1_000;
/// The attacker's rate: ten times the threshold, which one thread sends on a shared machine.
const FLOOD_PPS: u64 = 10_000;
const APP: u32 = 1_400_000_101;
const ROOM: u32 = 4242;
const PUBLISHER_SSRC: u32 = 0xc1_0002;
/// Media packets the node-2 publisher sends.
const MEDIA_PACKETS: u64 = 50;
/// How long a poll for a kernel entry may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A client joined at a node, through a UserSig minted on that node.
#[derive(Debug, Clone, Serialize)]
pub struct Join {
    /// The node (from 1).
    pub node: usize,
    /// The user.
    pub user: String,
    /// Whether relayd admitted the join.
    pub joined: bool,
    /// From the app's creation on node 1 to the join's admission (refusals while the app or
    /// the node's share of its quota is on its way are retried), ms.
    pub since_app_ms: f64,
    /// The endpoint joined (the UserSig answer's entry for this node).
    pub endpoint: String,
    /// The first endpoint the UserSig answer listed.
    pub first_listed: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Media from the node-2 publisher as one receiver counted it.
#[derive(Debug, Clone, Serialize)]
pub struct Media {
    /// The receiver's node.
    pub node: usize,
    /// Packets sent.
    pub sent: u64,
    /// Packets the receiver authenticated.
    pub received: u64,
}

/// One run's figures, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Network, Redis, three relayd and three relay-control up, every node registered.
    pub setup_ms: f64,
    /// The product check's joins (node 2: publisher and receiver; node 3: receiver).
    pub joins: Vec<Join>,
    /// The publisher's media at the node-2 and the node-3 receiver.
    pub media: Vec<Media>,
    /// From the node-3 receiver's join until the room's leg is up on nodes 2 and 3.
    pub leg_up_ms: f64,
    /// Operator entry on node 1 to every node's kernel: the median over the entries.
    pub operator_ms: f64,
    /// The slowest entry.
    pub operator_max_ms: f64,
    /// Flood start to the `auto` entry in node 3's kernel.
    pub autoblock_origin_ms: f64,
    /// From node 3's kernel to all three kernels.
    pub autoblock_spread_ms: f64,
    /// Flood start to all three kernels.
    pub autoblock_total_ms: f64,
    /// Flood start to the `auto` entry in each node's kernel, node 1 first.
    pub autoblock_nodes_ms: Vec<f64>,
    /// Datagrams the attacker sent.
    pub flood_sent: u64,
}

/// The XDP part's report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// How cross-node media is checked.
    pub cross_node_media: &'static str,
    /// The product check's leg formation time (from the last join).
    pub leg_up_ms: Option<Stat>,
    /// The autoblock threshold and the flood's rate, packets per second.
    pub autoblock_pps: u64,
    /// The flood's rate.
    pub flood_pps: u64,
    /// Every run.
    pub runs: Vec<Run>,
    /// Cluster start-up.
    pub setup_ms: Option<Stat>,
    /// Operator entry in every kernel, the runs' medians.
    pub operator_ms: Option<Stat>,
    /// Operator entry in every kernel, the runs' slowest.
    pub operator_max_ms: Option<Stat>,
    /// Flood to node 3's kernel.
    pub autoblock_origin_ms: Option<Stat>,
    /// Node 3's kernel to all three (autoblock time across nodes).
    pub autoblock_spread_ms: Option<Stat>,
    /// Flood to all three kernels.
    pub autoblock_total_ms: Option<Stat>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Polls every node's kernel blocklist until each holds `cidr`; returns when each was
/// first seen holding it, measured from `start`.
fn first_seen(cl: &EdgeCluster, mgmt: &mut [mgmt::Client], cidr: &str, start: Instant) -> Result<Vec<Duration>> {
    let mut seen = vec![None; mgmt.len()];
    while seen.iter().any(Option::is_none) {
        check_interrupted()?;
        for (m, s) in mgmt.iter_mut().zip(seen.iter_mut()) {
            if s.is_none() && kernel_blocks(m, cidr)? {
                *s = Some(start.elapsed());
            }
        }
        if start.elapsed() > PATIENCE {
            bail!("{cidr} not in every kernel within {PATIENCE:?} (seen: {seen:?}){}", cl.logs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(seen.into_iter().flatten().collect())
}

/// Mints a UserSig for `user` on node `i` and joins node `i` from the client namespace,
/// declaring `ssrc` if given.
fn join_at(cl: &EdgeCluster, i: usize, user: &str, ssrc: Option<u32>, app_at: Instant) -> (Join, Option<Member>) {
    let mut j = Join {
        node: i,
        user: user.into(),
        joined: false,
        since_app_ms: f64::NAN,
        endpoint: String::new(),
        first_listed: String::new(),
        error: None,
    };
    let r = (|| -> Result<Member> {
        let mint = api::MintUserSig {
            user_id: user.into(),
            expire_secs: 3600,
            private_map_key: None,
            room_id: Some(ROOM.into()),
            str_room_id: None,
            region: None,
        };
        let minted: api::UserSig =
            cl.node(i).api_ok(&Call::json(Method::Post, &["v1", "apps", &APP.to_string(), "usersig"], &mint))?;
        j.first_listed = minted.relays.first().map(|r| r.endpoint.clone()).unwrap_or_default();
        let own = relay_addr(i).to_string();
        let relay = minted
            .relays
            .iter()
            .find(|r| r.endpoint == own)
            .with_context(|| format!("the UserSig answer of edge-{i} does not list {own}: {:?}", minted.relays))?;
        j.endpoint.clone_from(&relay.endpoint);
        if relay.public_key != cl.node(i).relay_key {
            bail!("edge-{i}'s UserSig answer hands out another key than its relayd's");
        }
        let (cfg, endpoint) = crate::demo::client_config(APP, ROOM, minted.usersig.clone(), ssrc, relay)?;
        media::join(cl.client_socket(i)?, endpoint, cfg)
    })();
    match r {
        Ok(m) => {
            j.joined = true;
            j.since_app_ms = ms(app_at.elapsed());
            (j, Some(m))
        }
        Err(e) => {
            j.error = Some(format!("{e:#}"));
            (j, None)
        }
    }
}

/// Sends [`MEDIA_PACKETS`] from `publisher`, 2 ms apart, then counts what each receiver
/// authenticated until 300 ms pass with nothing new.
fn media_check(publisher: &mut Member, receivers: &mut [(usize, Member)]) -> Result<Vec<Media>> {
    let mut buf = [0u8; 2048];
    for seq in 0..MEDIA_PACKETS as u16 {
        let h = write_rtp_header(&mut buf, 96, seq, u32::from(seq) * 3000, PUBLISHER_SSRC);
        buf[h..h + 200].fill(0x42);
        let n = publisher.client.protect_rtp(&mut buf, h + 200)?;
        publisher.sock.send(&buf[..n])?;
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut out = Vec::new();
    for (node, m) in receivers {
        m.sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut received = 0;
        while let Ok(n) = m.sock.recv(&mut buf) {
            if let Event::Media { ssrc: PUBLISHER_SSRC, rtcp: false, .. } = m.client.handle(&mut buf[..n]) {
                received += 1;
            }
        }
        out.push(Media { node: *node, sent: MEDIA_PACKETS, received });
    }
    Ok(out)
}

/// What the XDP part takes from `relay-bench cluster`'s options.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Runs.
    pub runs: usize,
    /// Operator entries timed per run.
    pub entries: usize,
}

fn one_run(relayd: &Path, control: &Path, a: &Opts) -> Result<Run> {
    let t0 = Instant::now();
    let sections = format!("[autoblock]\npps_threshold = {AUTOBLOCK_PPS}\nttl_secs = 600\n");
    let cl = EdgeCluster::start(relayd, control, NODES, &sections)?;
    let setup_ms = ms(t0.elapsed());

    // The product check.
    let create =
        api::CreateApp { sdkappid: APP.into(), quotas: None, require_private_map_key: None, allow_v1_joins: None };
    cl.node(1).api_ok::<serde::de::IgnoredAny>(&Call::json(Method::Post, &["v1", "apps"], &create))?;
    let app_at = Instant::now();
    let (j_pub, publisher) = join_at(&cl, 2, "pub-2", Some(PUBLISHER_SSRC), app_at);
    let (j_sub2, sub2) = join_at(&cl, 2, "sub-2", None, app_at);
    let (j_sub3, sub3) = join_at(&cl, 3, "sub-3", None, app_at);
    let joins = vec![j_pub, j_sub2, j_sub3];
    let joined = Instant::now();
    let mut mgmt = cl.nodes.iter().map(|n| n.mgmt()).collect::<Result<Vec<_>>>()?;
    let leg_deadline = joined + Duration::from_secs(15);
    loop {
        let up = |m: &mut mgmt::Client| -> Result<bool> {
            Ok(m.legs()?.iter().any(|l| l.state == "up" && l.room == ROOM.to_string()))
        };
        if up(&mut mgmt[1])? && up(&mut mgmt[2])? {
            break;
        }
        if Instant::now() > leg_deadline {
            let mut why = String::new();
            for (i, m) in mgmt.iter_mut().enumerate() {
                let legs = m.legs().map(|l| format!("{l:?}")).unwrap_or_else(|e| e.to_string());
                let counts = m
                    .stats()
                    .map(|s| format!("{:?}; drops {:?}; xdp {:?}", s.legs, s.drops, s.xdp))
                    .unwrap_or_else(|e| e.to_string());
                why.push_str(&format!("\n  edge-{}: legs {legs}; counters {counts}", i + 1));
            }
            bail!("the room's cascade leg between edge-2 and edge-3 is not up 15 s after the joins:{why}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let leg_up_ms = ms(joined.elapsed());
    let media = match (publisher, sub2, sub3) {
        (Some(mut p), Some(s2), Some(s3)) => media_check(&mut p, &mut [(2, s2), (3, s3)])?,
        _ => bail!("a product-check join failed: {joins:?}"),
    };
    for m in &media {
        if m.received != m.sent {
            bail!("edge-{}'s receiver authenticated {} of {} packets", m.node, m.received, m.sent);
        }
    }

    // Operator entries through node 1, in every kernel.
    let mut per_entry = Vec::with_capacity(a.entries);
    for k in 1..=a.entries {
        let cidr = format!("198.18.200.{k}/32");
        let add = AddBlock { cidr: cidr.clone(), ttl_secs: 0, reason: Some("relay-bench".into()) };
        let start = Instant::now();
        cl.node(1).api_ok::<serde::de::IgnoredAny>(&Call::json(Method::Post, &["v1", "blocklist"], &add))?;
        let seen = first_seen(&cl, &mut mgmt, &cidr, start)?;
        per_entry.push(ms(seen.into_iter().max().unwrap_or_default()));
    }
    per_entry.sort_by(f64::total_cmp);

    // A flood at node 3, auto-blocked there, then in every kernel.
    let auto_cidr = format!("{ATTACKER_IP}/32");
    for (i, m) in mgmt.iter_mut().enumerate() {
        if kernel_blocks(m, &auto_cidr)? {
            bail!("the attacker is in edge-{}'s kernel blocklist before it floods", i + 1);
        }
    }
    let sockets = (0..16).map(|_| cl.attacker_socket()).collect::<Result<Vec<_>>>()?;
    let mut flood = media::Flood::start(sockets, relay_addr(3), FLOOD_PPS);
    let seen = first_seen(&cl, &mut mgmt, &auto_cidr, flood.started);
    flood.stop();
    let seen = seen?;
    let origin = seen[NODES - 1];
    let total = seen.iter().copied().max().unwrap_or_default();
    let list: api::Blocklist = cl.node(3).api_ok(&Call::new(Method::Get, &["v1", "blocklist"]))?;
    let entry = list.entries.iter().find(|e| e.cidr == auto_cidr);
    if entry.map(|e| e.source) != Some(BlockSource::Auto) {
        bail!("edge-3's entry for the attacker is not the detector's: {entry:?}");
    }
    Ok(Run {
        setup_ms,
        joins,
        media,
        leg_up_ms,
        operator_ms: percentile(&per_entry, 0.5),
        operator_max_ms: per_entry.last().copied().unwrap_or(f64::NAN),
        autoblock_origin_ms: ms(origin),
        autoblock_spread_ms: ms(total.saturating_sub(origin)),
        autoblock_total_ms: ms(total),
        autoblock_nodes_ms: seen.iter().copied().map(ms).collect(),
        flood_sent: flood.sent(),
    })
}

/// Runs the XDP part: `--runs` runs, each printed, then the summary.
pub fn run(control: &Path, relayd: &Path, a: &Opts) -> Result<Report> {
    if !(1..=250).contains(&a.entries) {
        bail!("--entries must be 1 to 250");
    }
    let mut runs = Vec::new();
    for r in 0..a.runs {
        let run = one_run(relayd, control, a).with_context(|| format!("XDP run {}", r + 1))?;
        let joins: Vec<String> = run
            .joins
            .iter()
            .map(|j| match j.joined {
                true => format!("{}@edge-{} ok ({:.0} ms after the app)", j.user, j.node, j.since_app_ms),
                false => format!("{}@edge-{} FAILED", j.user, j.node),
            })
            .collect();
        let media: Vec<String> =
            run.media.iter().map(|m| format!("edge-{} {}/{}", m.node, m.received, m.sent)).collect();
        println!(
            "xdp run {}: up {:.0} ms; joins {}; leg up {:.0} ms after the joins; media from pub-2 at {}; operator entry to every kernel {:.1} ms \
             (max {:.1}); autoblock: flood to edge-3's kernel {:.0} ms, then all kernels +{:.1} ms (per node {:?})",
            r + 1,
            run.setup_ms,
            joins.join(", "),
            run.leg_up_ms,
            if media.is_empty() { "-".into() } else { media.join(", ") },
            run.operator_ms,
            run.operator_max_ms,
            run.autoblock_origin_ms,
            run.autoblock_spread_ms,
            run.autoblock_nodes_ms.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>(),
        );
        for j in run.joins.iter().filter(|j| !j.joined) {
            println!("  {}@edge-{}: {}", j.user, j.node, j.error.as_deref().unwrap_or("?"));
        }
        runs.push(run);
    }
    let col = |f: &dyn Fn(&Run) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
    let report = Report {
        cross_node_media: "the room spans edge-2 and edge-3 over a cascade leg: both receivers must get every packet",
        leg_up_ms: col(&|r| r.leg_up_ms),
        autoblock_pps: AUTOBLOCK_PPS,
        flood_pps: FLOOD_PPS,
        setup_ms: col(&|r| r.setup_ms),
        operator_ms: col(&|r| r.operator_ms),
        operator_max_ms: col(&|r| r.operator_max_ms),
        autoblock_origin_ms: col(&|r| r.autoblock_origin_ms),
        autoblock_spread_ms: col(&|r| r.autoblock_spread_ms),
        autoblock_total_ms: col(&|r| r.autoblock_total_ms),
        runs,
    };
    let f = |s: Option<Stat>| Stat::fmt_or_dash(s, 1);
    let joined = report.runs.iter().filter(|r| r.joins.iter().all(|j| j.joined)).count();
    println!(
        "\ncluster on XDP, {NODES} nodes in network namespaces, {} runs (median [min–max], ms)",
        report.runs.len()
    );
    println!("  cluster up, every node registered          {}", f(report.setup_ms));
    println!("  joins at edge-2 and edge-3 ok               {joined} of {} runs", report.runs.len());
    println!(
        "  operator entry (edge-1) in every kernel     {} (per run: median of {} entries)",
        f(report.operator_ms),
        a.entries
    );
    println!("    slowest entry of the run                  {}", f(report.operator_max_ms));
    println!(
        "  flood at edge-3 to auto block in its kernel {} ({FLOOD_PPS} pps, threshold {AUTOBLOCK_PPS}/s)",
        f(report.autoblock_origin_ms)
    );
    println!("  autoblock across nodes (edge-3 to all 3)    {}", f(report.autoblock_spread_ms));
    println!("  flood start to blocked in all 3 kernels     {}", f(report.autoblock_total_ms));
    Ok(report)
}
