//! A short `relay-bench throughput` search with the AF_XDP generator, over both backends, with
//! one room and with three (the senders' packets interleaved): every relayed packet is
//! captured on the clients' veth and verified with its receiver's keys, and the search must
//! find a loss-free rate for each.
//!
//! Needs root (namespaces, XDP, AF_XDP); without it, or without AF_XDP in the kernel, the
//! test skips on a laptop and fails under `CI=true`. All traffic stays in the namespaces the
//! bench creates, with addresses in 198.18.0.0/15.

use edgerelay_tests::{read_json, relay_bench, relayd_arg, skip_or_fail, TempDir};
use serde_json::Value;

/// One search at a time: each pins relayd and its load to the same two CPUs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs a short search of `shape`; `None` if it skipped.
fn search(shape: &[&str], tag: &str) -> Option<Vec<Value>> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new(tag).expect("create a temp dir");
    let json = dir.join("throughput.json");
    let relayd = relayd_arg();
    let short = ["--runs", "1", "--probe-secs", "0.5", "--start-pps", "4000", "--max-pps", "8000"];
    let out = relay_bench(&[shape, &short[..], &["--relayd", &relayd]].concat(), &json);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && stderr.contains("AF_XDP")
        && stderr.contains("opening the")
        && skip_or_fail(&format!("AF_XDP is unavailable: {stderr}"))
    {
        return None;
    }
    assert!(out.status.success(), "relay-bench failed:\n{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    Some(read_json(&json).as_array().expect("an array of rows").clone())
}

/// The row's search found a loss-free rate from packets its receivers verified.
fn check_row(r: &Value) {
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    assert_eq!(r["generator"], "afxdp", "{r}");
    assert_eq!(r["valid_runs"], 1, "the search found no loss-free rate: {r}");
    let run = &r["runs_detail"][0];
    let best = &run["best"];
    let fanout = num(r, "fanout");
    assert!(num(r, "in_pps_median") >= 1000.0, "implausibly low loss-free rate: {r}");
    assert_eq!(num(r, "in_pps_median"), num(best, "offered_pps"), "{r}");
    // The passing probe: its receivers verified at least 99.9% of what they were owed.
    let (sent, received) = (num(best, "sent"), num(best, "received"));
    assert!(sent > 0.0 && received >= sent * fanout * 0.999, "{best}");
    assert!(received <= sent * fanout, "more verified packets than were owed: {best}");
    for p in run["probes"].as_array().expect("probes") {
        assert_eq!(p["auth_failed"], 0, "a relayed packet failed its receiver's check: {p}");
    }
    let cpu = num(r, "relayd_cpu_us_per_pkt_median");
    assert!(cpu > 0.0 && cpu < 10_000.0, "implausible relayd CPU per packet: {r}");
}

#[test]
fn loss_free_search_verifies_every_packet_on_both_backends() {
    if !relay::io::sys::is_root() && skip_or_fail("relay-bench throughput needs root") {
        return;
    }
    let shape = ["throughput", "--generator", "afxdp", "--backends", "socket,xdp", "--fanout", "1", "--rooms", "1,3"];
    let Some(rows) = search(&shape, "bench-throughput") else { return };
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (backend, rooms) in [("socket", 1), ("xdp", 1), ("socket", 3), ("xdp", 3)] {
        let r = rows
            .iter()
            .find(|r| r["backend"] == backend && r["rooms"] == rooms)
            .unwrap_or_else(|| panic!("no {backend} row with {rooms} rooms: {rows:?}"));
        check_row(r);
    }
    let xdp = rows.iter().find(|r| r["backend"] == "xdp" && r["rooms"] == 1).expect("xdp row");
    assert!(xdp["ratio_vs_socket"]["median"].as_f64().is_some_and(|x| x > 0.0), "no ratio: {xdp}");
}

#[test]
fn threaded_napi_fan_out_is_verified() {
    if !relay::io::sys::is_root() && skip_or_fail("relay-bench throughput needs root") {
        return;
    }
    // Receive work in pinned real-time NAPI threads, and a fan-out of 4: each input packet
    // is owed to four receivers with their own keys.
    let shape = ["throughput", "--generator", "afxdp", "--backends", "xdp", "--fanout", "4", "--napi", "threaded-rt"];
    let Some(rows) = search(&shape, "bench-throughput-napi") else { return };
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["napi"], "threaded-rt", "{:?}", rows[0]);
    check_row(&rows[0]);
}
