//! A short `relay-bench flood` run over both backends: with the XDP backend the kernel drops
//! the spoofed flood (unknown-source SRTP never reaches relayd's userspace) and the receiver
//! keeps verifying media; with the socket backend the same flood lands in relayd's userspace
//! counters.
//!
//! Needs root (namespaces, XDP, AF_XDP); without it the test skips on a laptop and fails
//! under `CI=true`. All traffic stays in the namespaces the bench creates (198.18.0.0/15).

use edgerelay_tests::{relay_bench_json, relayd_arg, skip_or_fail, TempDir};
use serde_json::Value;

#[test]
fn flood_is_dropped_in_the_kernel_with_xdp_and_reaches_userspace_without() {
    if !relay::io::sys::is_root() && skip_or_fail("relay-bench flood needs root") {
        return;
    }
    let dir = TempDir::new("bench-flood").expect("create a temp dir");
    let json = dir.join("flood.json");
    let relayd = relayd_arg();
    let rows = relay_bench_json(
        &[
            "flood",
            "--backends",
            "socket,xdp",
            "--runs",
            "1",
            "--seconds",
            "3",
            "--legit-pps",
            "100",
            "--relayd",
            &relayd,
        ],
        &json,
    );
    let row = |backend: &str| {
        let rows = rows.as_array().expect("an array of rows");
        let r = rows.iter().find(|r| r["backend"] == backend).unwrap_or_else(|| panic!("no {backend} row: {rows:?}"));
        r["runs_detail"][0].clone()
    };
    let count = |r: &Value, map: &str, key: &str| r[map][key].as_u64().unwrap_or(0);

    let xdp = row("xdp");
    assert!(xdp["flood_pps"].as_f64().unwrap() > 1000.0, "the flood did not run: {xdp}");
    assert!(xdp["goodput_pps"][0].as_f64().unwrap() > 50.0, "no media before the flood: {xdp}");
    assert!(xdp["goodput_pps"][1].as_f64().unwrap() > 50.0, "no media during the flood: {xdp}");
    assert_eq!(xdp["auth_failed"], 0, "{xdp}");
    assert!(
        count(&xdp, "xdp_verdicts_during_flood", "unknown_session") > 1000,
        "the kernel did not drop the flood: {xdp}"
    );
    assert!(count(&xdp, "xdp_verdicts_during_flood", "not_relayed") > 1000, "the kernel did not drop the junk: {xdp}");
    assert_eq!(
        count(&xdp, "engine_drops_during_flood", "unknown_session"),
        0,
        "unknown-source media reached relayd's userspace through XDP: {xdp}"
    );

    let socket = row("socket");
    assert!(socket["flood_pps"].as_f64().unwrap() > 1000.0, "the flood did not run: {socket}");
    assert!(
        count(&socket, "engine_drops_during_flood", "unknown_session") > 100,
        "without XDP the flood should land in relayd's userspace: {socket}"
    );
}
