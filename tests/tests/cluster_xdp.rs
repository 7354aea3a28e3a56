//! The edge cluster's blocklist reaching the kernel on every node: three nodes, each in a
//! network namespace of its own with relayd on the XDP backend and relay-control in cluster
//! mode, Redis in another namespace, clients and an attacker in theirs
//! ([`edgerelay_tests::cluster_net`]). Root; skipped on a laptop, required under `CI=true`.
//!
//! 1. Operator entries added through node 1's API (`POST /v1/blocklist`) are in the kernel
//!    blocklist of relayd on nodes 2 and 3 within 1 s each (10 entries; min/median/max
//!    printed). Each time runs from just before the POST to the management answer that
//!    shows the entry: an upper bound.
//! 2. An attacker floods node 3 with SRTP-shaped datagrams from unknown 5-tuples above
//!    `[autoblock] pps_threshold`: node 3's detector blocks the source, and the `auto` entry
//!    is in the kernels of nodes 1 and 2 within 1 s of its appearing in node 3's; node 3's
//!    kernel then drops the attacker as `blocklisted`. The times and the total from the
//!    flood's start are printed.
//!
//! Run `cargo build --workspace --bins` first.

use std::time::{Duration, Instant};

use control::api::{AddBlock, BlockSource, Blocklist, ClusterStatus};
use edgerelay_tests::cluster::wait_until;
use edgerelay_tests::cluster_net::{relay_addr, EdgeCluster, EdgeNode, ATTACKER_IP};
use edgerelay_tests::flood::Flood;

const NODES: usize = 3;
const ENTRIES: u8 = 10;
/// The propagation budget, per node and entry.
const BUDGET: Duration = Duration::from_secs(1);
const AUTOBLOCK_PPS: u64 = 1_000;
/// Ten times the threshold.
const FLOOD_PPS: u64 = 10_000;

/// Polling loops would trip the default per-key rate limit; the detector's threshold is low
/// so a flood one thread can send on a shared machine crosses it tenfold.
fn control_extra() -> String {
    format!(
        "[rate_limits]\nper_ip_per_sec = 100000\nper_ip_burst = 100000\nper_key_per_sec = 100000\n\
         per_key_burst = 100000\n[autoblock]\npps_threshold = {AUTOBLOCK_PPS}\nttl_secs = 600\n"
    )
}

/// Polls every node's kernel blocklist until each holds `cidr` or `within` passes; returns
/// when each was first seen holding it, measured from `start`.
fn first_seen(nodes: &[EdgeNode], cidr: &str, start: Instant, within: Duration) -> Vec<Option<Duration>> {
    let mut seen = vec![None; nodes.len()];
    while seen.iter().any(Option::is_none) && start.elapsed() < within {
        for (n, s) in nodes.iter().zip(seen.iter_mut()) {
            if s.is_none() && n.kernel_blocks().iter().any(|b| b == cidr) {
                *s = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    seen
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn summary(times: &mut [Duration]) -> String {
    times.sort_unstable();
    format!("min {}, median {}, max {}", ms(times[0]), ms(times[times.len() / 2]), ms(times[times.len() - 1]))
}

#[test]
fn blocklist_entries_reach_every_nodes_kernel_within_a_second() {
    let setup = Instant::now();
    let Some(cl) = EdgeCluster::start(NODES, &control_extra()) else { return };
    // Every node registered, each with its relayd reachable: the push links are up.
    wait_until(Duration::from_secs(15), "three nodes registered with relayd reachable", || {
        let status: ClusterStatus =
            serde_json::from_value(cl.node(1).api(|c| c.get_ok("/v1/cluster"))).expect("GET /v1/cluster");
        status.nodes.len() == NODES && status.nodes.iter().all(|n| n.relayd_reachable)
    });
    eprintln!("cluster of {NODES} up in {}", ms(setup.elapsed()));

    // 1. Operator entries through node 1, in every kernel.
    let mut per_node: Vec<Vec<Duration>> = vec![Vec::new(); NODES];
    for k in 1..=ENTRIES {
        let cidr = format!("198.18.200.{k}/32");
        let start = Instant::now();
        let add = AddBlock { cidr: cidr.clone(), ttl_secs: 0, reason: Some("cluster_xdp".into()) };
        let body = serde_json::to_value(&add).expect("serialize");
        let r = cl.node(1).api(|c| c.call("POST", "/v1/blocklist", &body));
        assert_eq!(r.status, 201, "POST /v1/blocklist {cidr}: {}", String::from_utf8_lossy(&r.body));
        let seen = first_seen(&cl.nodes, &cidr, start, BUDGET * 3);
        for (i, s) in seen.iter().enumerate() {
            let t = s
                .unwrap_or_else(|| panic!("{cidr} not in edge-{}'s kernel after {:?}{}", i + 1, BUDGET * 3, cl.logs()));
            per_node[i].push(t);
        }
    }
    for (i, times) in per_node.iter_mut().enumerate() {
        let role = if i == 0 { "origin" } else { "follower" };
        eprintln!(
            "operator entry, POST on edge-1 to edge-{}'s kernel ({role}, {ENTRIES} entries): {}",
            i + 1,
            summary(times)
        );
    }
    for (i, times) in per_node.iter().enumerate().skip(1) {
        let worst = times.iter().max().expect("entries");
        assert!(*worst <= BUDGET, "an entry took {} to reach edge-{}'s kernel", ms(*worst), i + 1);
    }

    // 2. A flood at node 3, auto-blocked there, in every kernel within 1 s of node 3's.
    let auto_cidr = format!("{ATTACKER_IP}/32");
    assert!(
        cl.nodes.iter().all(|n| !n.kernel_blocks().contains(&auto_cidr)),
        "the attacker is blocked before it floods"
    );
    let flood_start = Instant::now();
    let mut flood = Flood::start((0..4).map(|_| cl.attacker_socket()).collect(), relay_addr(3), FLOOD_PPS);
    let seen = first_seen(&cl.nodes, &auto_cidr, flood_start, Duration::from_secs(6));
    let at_origin = seen[2].unwrap_or_else(|| {
        panic!("the flood was not auto-blocked in edge-3's kernel within 6 s (sent {}){}", flood.sent(), cl.logs())
    });
    eprintln!(
        "autoblock: flood ({FLOOD_PPS} pps, threshold {AUTOBLOCK_PPS}/s) to edge-3's kernel blocklist in {}",
        ms(at_origin)
    );
    for (i, s) in seen.iter().enumerate().take(2) {
        let t = s.unwrap_or_else(|| panic!("the auto entry never reached edge-{}'s kernel{}", i + 1, cl.logs()));
        let after = t.saturating_sub(at_origin);
        eprintln!(
            "autoblock: in edge-{}'s kernel {} after edge-3's ({} from the flood's start)",
            i + 1,
            ms(after),
            ms(t)
        );
        assert!(after <= BUDGET, "the auto entry reached edge-{}'s kernel {} after edge-3's", i + 1, ms(after));
    }
    let total = seen.iter().flatten().max().copied().expect("three times");
    eprintln!("autoblock: from the flood's start to the block in all {NODES} kernels: {}", ms(total));

    // The entry is the detector's, as every node's API shows it.
    for i in 1..=NODES {
        let list: Blocklist =
            serde_json::from_value(cl.node(i).api(|c| c.get_ok("/v1/blocklist"))).expect("GET /v1/blocklist");
        let entry = list.entries.iter().find(|e| e.cidr == auto_cidr);
        assert_eq!(entry.map(|e| e.source), Some(BlockSource::Auto), "edge-{i}'s entry for the attacker: {entry:?}");
    }
    // And node 3's kernel now drops the attacker before the session lookup.
    let blocked0 = cl.node(3).xdp("blocklisted");
    wait_until(Duration::from_secs(2), "the attacker's datagrams counted as blocklisted on edge-3", || {
        cl.node(3).xdp("blocklisted") >= blocked0 + 1_000
    });
    flood.stop();
    eprintln!("attacker sent {} datagrams; test ran {}", flood.sent(), ms(setup.elapsed()));
}
