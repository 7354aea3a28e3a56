//! A short `relay-bench latency` run on the XDP backend at a fixed rate: every relayed packet
//! is verified and has its latency measured, and the quantiles are ordered and plausible.
//!
//! Needs root (namespaces, XDP, AF_XDP); without it the test skips on a laptop and fails
//! under `CI=true`. All traffic stays in the namespaces the bench creates (198.18.0.0/15).

use edgerelay_tests::{relay_bench_json, relayd_arg, skip_or_fail, TempDir};

#[test]
fn latency_quantiles_are_measured_on_verified_packets() {
    if !relay::io::sys::is_root() && skip_or_fail("relay-bench latency needs root") {
        return;
    }
    let dir = TempDir::new("bench-latency").expect("create a temp dir");
    let json = dir.join("latency.json");
    let relayd = relayd_arg();
    let args = ["latency", "--backends", "xdp", "--max-pps", "200", "--fractions", "0.5", "--runs", "1"];
    let rows = relay_bench_json(&[&args[..], &["--seconds", "1.5", "--relayd", &relayd]].concat(), &json);
    let row = &rows.as_array().expect("an array of rows")[0];
    assert_eq!(row["rate_pps"].as_f64(), Some(100.0), "{row}");
    let run = &row["runs_detail"][0];
    let (sent, verified) = (run["sent"].as_u64().unwrap(), run["verified"].as_u64().unwrap());
    assert!(sent >= 120, "the sender sent too little at 100 pkt/s for 1.5 s: {row}");
    assert!(verified * 100 >= sent * 98, "more than 2% lost at 100 pkt/s: {row}");
    assert_eq!(run["latency_measured"].as_u64(), Some(verified), "every verified packet has a latency: {row}");
    assert_eq!(run["auth_failed"].as_u64(), Some(0), "{row}");
    let q: Vec<f64> = run["p50_p99_p999_us"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(q[0] >= 1.0 && q[0] <= q[1] && q[1] <= q[2], "quantiles out of order: {q:?}");
    assert!(q[2] < 5_000_000.0, "p99.9 over 5 s is no latency measurement: {q:?}");
}
