//! `relay-bench cluster` in a small form (one run, few changes and calls) with the debug
//! binaries, on a real Redis on loopback: the report must hold every figure, each plausible
//! (a change visible everywhere within a second, a killed node gone within 3 s).

use edgerelay_tests::cluster::Redis;
use edgerelay_tests::{bin, relay_bench_json, TempDir};

#[test]
fn cluster_scenario_reports_propagation_registry_and_api_latency() {
    if !Redis::available() {
        return;
    }
    let dir = TempDir::new("bench-cluster").expect("create a temp dir");
    let json = dir.join("cluster.json");
    let control = bin("relay-control").display().to_string();
    let r = relay_bench_json(
        &["cluster", "--runs", "1", "--changes", "10", "--calls", "30", "--relay-control", &control],
        &json,
    );
    let med = |k: &str| r[k]["median"].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
    let prop = med("propagation_ms");
    assert!(prop > 0.0 && prop < 1000.0, "propagation {prop} ms");
    let dead = med("dead_node_ms");
    assert!(dead > 0.0 && dead <= 3000.0, "dead node left after {dead} ms");
    for k in ["write_p50_ms", "write_p99_ms", "read_p50_ms", "read_p99_ms"] {
        for (i, mode) in ["cluster", "single"].iter().enumerate() {
            let v = r[k][i]["median"].as_f64().unwrap_or_else(|| panic!("{k} {mode} missing: {r}"));
            assert!(v > 0.0 && v < 2000.0, "{k} {mode} = {v} ms");
        }
    }
}
