//! The edge cluster on the XDP backend, through `relay-bench cluster --xdp` in a small form
//! (one run, with the debug binaries): three nodes, each in a network namespace of its own
//! with relayd on XDP and relay-control in cluster mode. The report must show the joins at
//! nodes 2 and 3 admitted, every operator blocklist entry in every node's kernel within 1 s,
//! and the flood's `auto` entry in all three kernels within 1 s of node 3's. Root; skipped on
//! a laptop, required under `CI=true`.
//!
//! Run `cargo build --workspace --bins` first.

use edgerelay_tests::cluster::Redis;
use edgerelay_tests::{bin, relay_bench_json, relayd_arg, skip_or_fail, TempDir};

/// The propagation budget, per entry and per node.
const BUDGET_MS: f64 = 1000.0;

#[test]
fn blocklist_entries_and_autoblock_reach_every_nodes_kernel_within_a_second() {
    if !relay::io::sys::is_root() && skip_or_fail("relay-bench cluster --xdp needs root (namespaces, BPF, AF_XDP)") {
        return;
    }
    if !Redis::available() {
        return;
    }
    let dir = TempDir::new("bench-cluster-xdp").expect("create a temp dir");
    let json = dir.join("cluster.json");
    let control = bin("relay-control").display().to_string();
    let relayd = relayd_arg();
    let args = [
        "cluster",
        "--xdp",
        "--runs",
        "1",
        "--changes",
        "5",
        "--calls",
        "10",
        "--relay-control",
        &control,
        "--relayd",
        &relayd,
    ];
    let r = relay_bench_json(&args, &json);
    let run = &r["xdp"]["runs"][0];
    let joins = run["joins"].as_array().unwrap_or_else(|| panic!("no joins in {r}"));
    for node in [2, 3] {
        assert!(
            joins.iter().any(|j| j["node"] == node && j["joined"] == true),
            "no client joined at edge-{node}: {joins:?}"
        );
    }
    assert!(joins.iter().all(|j| j["joined"] == true), "a join failed: {joins:?}");
    let num = |k: &str| run[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {run}"));
    let slowest = num("operator_max_ms");
    assert!(slowest > 0.0 && slowest <= BUDGET_MS, "an operator entry took {slowest} ms to reach every kernel");
    let spread = num("autoblock_spread_ms");
    assert!(spread <= BUDGET_MS, "the auto entry reached every kernel {spread} ms after edge-3's");
    let lo = r["runs"][0]["propagation_max_ms"].as_f64().unwrap_or_else(|| panic!("loopback run missing: {r}"));
    assert!(lo <= BUDGET_MS, "a change took {lo} ms to reach every node's API (loopback part)");
}
