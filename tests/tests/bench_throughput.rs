//! A short `relay-bench throughput` run with the AF_XDP generator, over both backends, with
//! one room and with three (the senders' packets interleaved): the
//! generator's frames must reach relayd (it accepts them, so they parsed and authenticated)
//! and relayd's output must reach the counting sink.
//!
//! Needs root (namespaces, XDP, AF_XDP); without it, or without AF_XDP in the kernel, the
//! test skips on a laptop and fails under `CI=true`. All traffic stays in the namespaces the
//! bench creates, with addresses in 198.18.0.0/15.

use edgerelay_tests::{read_json, relay_bench, relayd_arg, skip_or_fail, TempDir};

#[test]
fn afxdp_generator_drives_relayd_on_both_backends() {
    if !relay::io::sys::is_root() && skip_or_fail("relay-bench throughput needs root") {
        return;
    }
    let dir = TempDir::new("bench-throughput");
    let json = dir.0.join("throughput.json");
    let relayd = relayd_arg();
    let shape = ["throughput", "--generator", "afxdp", "--backends", "socket,xdp", "--fanout", "1", "--rooms", "1,3"];
    let out = relay_bench(&[&shape[..], &["--runs", "1", "--packets", "20000", "--relayd", &relayd]].concat(), &json);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && stderr.contains("opening the AF_XDP generator socket")
        && skip_or_fail(&format!("AF_XDP is unavailable: {stderr}"))
    {
        return;
    }
    assert!(out.status.success(), "relay-bench failed:\n{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    let rows = read_json(&json);
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (backend, rooms) in [("socket", 1), ("xdp", 1), ("socket", 3), ("xdp", 3)] {
        let r = rows
            .iter()
            .find(|r| r["backend"] == backend && r["rooms"] == rooms)
            .unwrap_or_else(|| panic!("no {backend} row with {rooms} rooms: {rows:?}"));
        assert_eq!(r["generator"], "afxdp", "{r}");
        let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {r}"));
        assert!(num("offered_pps_median") > 0.0, "the generator sent nothing: {r}");
        assert!(num("in_pps_median") > 0.0, "relayd accepted none of the generator's packets: {r}");
        assert!(num("received_per_receiver_pps_median") > 0.0, "the sink counted nothing: {r}");
        assert!(num("in_pps_median") <= num("offered_pps_median") * 1.05, "relayd accepted more than was offered: {r}");
        let cpu = num("relayd_cpu_us_per_pkt_median");
        assert!(cpu > 0.0 && cpu < 10_000.0, "implausible relayd CPU per packet: {r}");
    }
}
