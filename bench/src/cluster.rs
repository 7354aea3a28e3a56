//! `relay-bench cluster`: the edge cluster's control-plane numbers, each the median [min–max]
//! of `--runs` runs, every run on a fresh Redis and three fresh relay-control nodes on
//! loopback (the shape of `tests/tests/cluster_state.rs`):
//!
//! - **propagation**: from sending a change (a blocklist entry) through one node until every
//!   node's API serves it; the other nodes are polled concurrently, so the figure is an upper
//!   bound by one poll (a poll is one HTTPS request, about a millisecond here);
//! - **dead node**: from `SIGKILL` of one node until another node's `/v1/cluster` lists
//!   only the survivors (defaults: 500 ms heartbeat, 2 s TTL);
//! - **API latency**, p50 and p99 of sequential signed calls, a write (`POST /v1/blocklist`)
//!   and a read (`GET /v1/apps`), on a cluster node and on a single node without `[cluster]`.
//!
//! Redis runs with an ACL user and `appendfsync always`, as the README asks of production:
//! every cluster write waits for Redis's fsync.
//!
//! With `--xdp` (root), the loopback runs are followed by `--runs` runs of the XDP part:
//! three nodes in network namespaces, each relayd on the XDP backend
//! ([`crate::cluster_net`], measured in [`crate::cluster_xdp`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::client::{Call, Client, Method};
use relay::tempdir::TempDir;
use serde::Serialize;
use serde_json::json;

use crate::cluster_proc::{cluster_key, node_config, percentile, send, Redis};
use crate::control_proc::{self, Admin};
use crate::procs::{check_interrupted, Guard};
use crate::stats::Stat;

/// `relay-bench cluster` options.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Runs, each on a fresh Redis and fresh nodes.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Changes timed for propagation per run.
    #[arg(long, default_value_t = 30)]
    pub changes: usize,
    /// Signed calls timed per kind (write, read) and mode (cluster, single) per run.
    #[arg(long, default_value_t = 200)]
    pub calls: usize,
    /// Path of relay-control (default: next to this binary).
    #[arg(long)]
    pub relay_control: Option<PathBuf>,
    /// Also run the XDP part (root): three nodes in network namespaces, each relayd on the
    /// XDP backend with relay-control in cluster mode (see `cluster_xdp.rs`).
    #[arg(long)]
    pub xdp: bool,
    /// XDP part: operator blocklist entries timed into every node's kernel per run.
    #[arg(long, default_value_t = 10)]
    pub entries: usize,
    /// Path of relayd, for the XDP part (default: next to this binary).
    #[arg(long)]
    pub relayd: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One run's figures, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Median propagation of the run's changes.
    pub propagation_ms: f64,
    /// Slowest propagation of the run.
    pub propagation_max_ms: f64,
    /// Dead node gone from the registry.
    pub dead_node_ms: f64,
    /// Cluster node: write p50, p99; read p50, p99.
    pub cluster_api_ms: [f64; 4],
    /// Single node: write p50, p99; read p50, p99.
    pub single_api_ms: [f64; 4],
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The options.
    pub args: Args,
    /// Every run.
    pub runs: Vec<Run>,
    /// Propagation to all nodes (median of the runs' medians).
    pub propagation_ms: Option<Stat>,
    /// Time until a dead node leaves the registry.
    pub dead_node_ms: Option<Stat>,
    /// API write p50 / p99, cluster and single node.
    pub write_p50_ms: [Option<Stat>; 2],
    /// API write p99, cluster and single node.
    pub write_p99_ms: [Option<Stat>; 2],
    /// API read p50, cluster and single node.
    pub read_p50_ms: [Option<Stat>; 2],
    /// API read p99, cluster and single node.
    pub read_p99_ms: [Option<Stat>; 2],
    /// The XDP part, with `--xdp`.
    pub xdp: Option<crate::cluster_xdp::Report>,
}

/// One relay-control node.
struct Node {
    guard: Option<Guard>,
    client: Client,
}

fn start_node(
    bin: &Path,
    dir: &Path,
    name: &str,
    cluster: Option<(&Redis, &Path)>,
    admin: Option<&Admin>,
) -> Result<(Node, Admin)> {
    let config = node_config(dir, name, cluster, SocketAddr::from(([198, 18, 0, 1], 7000)), "", "")?;
    let admin = match admin {
        Some(a) => a.clone(),
        None => control_proc::bootstrap(bin, &config)?,
    };
    let (guard, client) = control_proc::serve(Command::new(bin), &config, &dir.join(format!("{name}.log")), &admin)?;
    Ok((Node { guard: Some(guard), client }, admin))
}

fn blocklist_has(c: &Client, cidr: &str) -> Result<bool> {
    let r = send(c, &Call::new(Method::Get, &["v1", "blocklist"]))?;
    Ok(r.text().contains(&format!("\"{cidr}\"")))
}

/// Write then read latencies (ms) of `n` sequential calls each: p50, p99, p50, p99.
fn api_latency(c: &Client, n: usize, tag: u8) -> Result<[f64; 4]> {
    let mut writes = Vec::with_capacity(n);
    let mut reads = Vec::with_capacity(n);
    for i in 0..n {
        check_interrupted()?;
        let cidr = format!("198.19.{tag}.{}/32", i % 250);
        let t = Instant::now();
        send(c, &Call::json(Method::Post, &["v1", "blocklist"], &json!({"cidr": cidr, "ttl_secs": 600})))?;
        writes.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        send(c, &Call::new(Method::Get, &["v1", "apps"]))?;
        reads.push(t.elapsed().as_secs_f64() * 1e3);
    }
    writes.sort_by(f64::total_cmp);
    reads.sort_by(f64::total_cmp);
    Ok([percentile(&writes, 0.5), percentile(&writes, 0.99), percentile(&reads, 0.5), percentile(&reads, 0.99)])
}

fn one_run(bin: &Path, a: &Args, run: usize) -> Result<Run> {
    let dir = TempDir::new("bench-cluster")?;
    let redis = Redis::start(dir.path())?;
    let key = cluster_key(bin, dir.path())?;
    let (n1, admin) = start_node(bin, dir.path(), "edge-1", Some((&redis, &key)), None)?;
    let (n2, _) = start_node(bin, dir.path(), "edge-2", Some((&redis, &key)), Some(&admin))?;
    let (mut n3, _) = start_node(bin, dir.path(), "edge-3", Some((&redis, &key)), Some(&admin))?;
    let nodes = [&n1, &n2, &n3];
    let registered = |c: &Client| -> Result<usize> {
        let v: control::api::ClusterStatus = send(c, &Call::new(Method::Get, &["v1", "cluster"]))?.parse()?;
        Ok(v.nodes.len())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while registered(&n1.client)? < 3 {
        if Instant::now() > deadline {
            bail!("three nodes did not register within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Propagation.
    let mut prop = Vec::with_capacity(a.changes);
    for i in 0..a.changes {
        check_interrupted()?;
        let cidr = format!("198.18.{}.{}/32", 100 + run, i % 250);
        let (origin, others): (&Node, Vec<&Node>) =
            (nodes[i % 3], nodes.iter().enumerate().filter(|(k, _)| *k != i % 3).map(|(_, n)| *n).collect());
        let t0 = Instant::now();
        send(&origin.client, &Call::json(Method::Post, &["v1", "blocklist"], &json!({"cidr": cidr, "ttl_secs": 600})))?;
        let seen: Vec<Result<Duration>> = std::thread::scope(|s| {
            let handles: Vec<_> = others
                .iter()
                .map(|n| {
                    let cidr = cidr.clone();
                    s.spawn(move || -> Result<Duration> {
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while !blocklist_has(&n.client, &cidr)? {
                            if Instant::now() > deadline {
                                bail!("{cidr} not on a node within 5 s");
                            }
                        }
                        Ok(t0.elapsed())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("poller panicked")))).collect()
        });
        let mut worst = Duration::ZERO;
        for s in seen {
            worst = worst.max(s?);
        }
        prop.push(worst.as_secs_f64() * 1e3);
    }
    prop.sort_by(f64::total_cmp);

    // API latency, cluster node then a single node.
    let cluster_api_ms = api_latency(&n1.client, a.calls, 10 + run as u8)?;
    let single_dir = TempDir::new("bench-single")?;
    let (single, _) = start_node(bin, single_dir.path(), "single", None, None)?;
    let single_api_ms = api_latency(&single.client, a.calls, 20 + run as u8)?;
    drop(single);

    // Dead node.
    let t0 = Instant::now();
    drop(n3.guard.take()); // SIGKILL
    let deadline = Instant::now() + Duration::from_secs(10);
    while registered(&n1.client)? != 2 {
        if Instant::now() > deadline {
            bail!("the killed node stayed in the registry for 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let dead_node_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(Run {
        propagation_ms: percentile(&prop, 0.5),
        propagation_max_ms: prop.last().copied().unwrap_or(f64::NAN),
        dead_node_ms,
        cluster_api_ms,
        single_api_ms,
    })
}

/// Runs the scenario.
pub fn run(a: Args) -> Result<()> {
    crate::procs::catch_interrupts()?;
    let bin = match &a.relay_control {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("relay-control"),
    };
    if a.xdp && !relay::io::sys::is_root() {
        bail!("relay-bench cluster --xdp needs root (network namespaces, BPF, AF_XDP); run it with sudo");
    }
    let mut runs = Vec::new();
    for r in 0..a.runs {
        let run = one_run(&bin, &a, r).with_context(|| format!("run {}", r + 1))?;
        println!(
            "run {}: propagation {:.1} ms (max {:.1}), dead node gone {:.0} ms, write p50/p99 {:.1}/{:.1} ms \
             (single node {:.1}/{:.1}), read p50/p99 {:.1}/{:.1} ms (single node {:.1}/{:.1})",
            r + 1,
            run.propagation_ms,
            run.propagation_max_ms,
            run.dead_node_ms,
            run.cluster_api_ms[0],
            run.cluster_api_ms[1],
            run.single_api_ms[0],
            run.single_api_ms[1],
            run.cluster_api_ms[2],
            run.cluster_api_ms[3],
            run.single_api_ms[2],
            run.single_api_ms[3],
        );
        runs.push(run);
    }
    let col = |f: &dyn Fn(&Run) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
    let mut report = Report {
        propagation_ms: col(&|r| r.propagation_ms),
        dead_node_ms: col(&|r| r.dead_node_ms),
        write_p50_ms: [col(&|r| r.cluster_api_ms[0]), col(&|r| r.single_api_ms[0])],
        write_p99_ms: [col(&|r| r.cluster_api_ms[1]), col(&|r| r.single_api_ms[1])],
        read_p50_ms: [col(&|r| r.cluster_api_ms[2]), col(&|r| r.single_api_ms[2])],
        read_p99_ms: [col(&|r| r.cluster_api_ms[3]), col(&|r| r.single_api_ms[3])],
        args: a.clone(),
        runs,
        xdp: None,
    };
    let f = |s: Option<Stat>| Stat::fmt_or_dash(s, 1);
    println!("\ncluster control plane, {} runs (median [min–max], ms)", report.runs.len());
    println!("  change visible on every node  {}", f(report.propagation_ms));
    println!("  dead node out of the registry {}", f(report.dead_node_ms));
    println!("  API write p50  cluster {}  single node {}", f(report.write_p50_ms[0]), f(report.write_p50_ms[1]));
    println!("  API write p99  cluster {}  single node {}", f(report.write_p99_ms[0]), f(report.write_p99_ms[1]));
    println!("  API read p50   cluster {}  single node {}", f(report.read_p50_ms[0]), f(report.read_p50_ms[1]));
    println!("  API read p99   cluster {}  single node {}", f(report.read_p99_ms[0]), f(report.read_p99_ms[1]));
    if a.xdp {
        let relayd = crate::relayd::relayd_path(&a.relayd)?;
        let opts = crate::cluster_xdp::Opts { runs: a.runs, entries: a.entries };
        report.xdp = Some(crate::cluster_xdp::run(&bin, &relayd, &opts)?);
    }
    if let Some(p) = &a.json {
        crate::report::write(p, &report)?;
    }
    Ok(())
}
