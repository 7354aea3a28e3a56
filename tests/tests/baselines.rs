//! Short runs of `relay-bench baseline rtpengine` and `baseline coturn` (a few seconds each)
//! against the real Debian packages: the figures must be sane and non-zero, and rtpengine must
//! have passed the recrypt check on every probe that received packets.
//!
//! The packages are installed with apt-get when we are root and they are missing; without
//! them the test skips on a laptop and fails under `CI=true`. Everything runs on loopback.

use std::process::Command;

use edgerelay_tests::{bin, relay_bench_json, skip_or_fail, TempDir};
use serde_json::Value;

fn have(program: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().any(|d| std::path::Path::new(d).join(program).is_file())
}

/// `true` if `program` is available, installing `package` first when root.
fn ensure(program: &str, package: &str) -> bool {
    if have(program) {
        return true;
    }
    if !relay::io::sys::is_root() {
        return !skip_or_fail(&format!("{program} is missing and installing {package} needs root"));
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !have(program) {
        return !skip_or_fail(&format!("apt-get install {package} failed"));
    }
    true
}

fn system<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["systems"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn rtpengine_recrypts_and_relayd_runs_beside_it() {
    if !ensure("rtpengine", "rtpengine-daemon") {
        return;
    }
    let dir = TempDir::new("baseline-rtpengine").expect("create a temp dir");
    let json = dir.join("r.json");
    let relayd = bin("relayd");
    // Two probes each (200 and 400 pps, 1 s): well under either relay's limit, and within
    // what a debug build's sender makes.
    let v = relay_bench_json(
        &[
            "baseline",
            "rtpengine",
            "--backends",
            "socket",
            "--probe-secs",
            "1",
            "--start-pps",
            "200",
            "--max-pps",
            "400",
            "--relayd",
            relayd.to_str().unwrap(),
        ],
        &json,
    );
    for name in ["rtpengine", "edgerelay-socket"] {
        let s = system(&v, name);
        assert!(s["error"].is_null(), "{name}: {}", s["error"]);
        let pps = s["pps"][0].as_f64().unwrap();
        let cpu = s["cpu_us"][0].as_f64().unwrap();
        assert!(pps > 300.0 && pps < 500.0, "{name}: {pps} pps");
        assert!(cpu > 0.1 && cpu < 1000.0, "{name}: {cpu} µs per packet");
        for p in s["searches"][0]["probes"].as_array().unwrap() {
            assert_eq!(p["auth_failed"], 0, "{name}: {p}");
        }
    }
    // Every rtpengine probe that got packets checked that they were re-encrypted with
    // rtpengine's B key and not forwarded under A's.
    let probes = system(&v, "rtpengine")["searches"][0]["probes"].as_array().unwrap().clone();
    assert!(!probes.is_empty());
    for p in &probes {
        if p["received"].as_u64().unwrap() > 0 {
            assert_eq!(p["recrypt_checked"], true, "{p}");
        }
    }
}

#[test]
fn rtpengine_passthrough_is_seen_as_forwarding() {
    if !ensure("rtpengine", "rtpengine-daemon") {
        return;
    }
    let dir = TempDir::new("baseline-passthrough").expect("create a temp dir");
    let json = dir.join("p.json");
    // The same suite on both legs: rtpengine forwards A's ciphertext, and the check must say so.
    let v = relay_bench_json(
        &[
            "baseline",
            "rtpengine",
            "--rtpengine-mode",
            "passthrough",
            "--baseline-only",
            "--probe-secs",
            "1",
            "--start-pps",
            "200",
            "--max-pps",
            "200",
        ],
        &json,
    );
    let s = system(&v, "rtpengine-passthrough");
    assert!(s["error"].is_null(), "{}", s["error"]);
    let probes = s["searches"][0]["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 1);
    assert!(probes[0]["received"].as_u64().unwrap() > 150, "{}", probes[0]);
    assert_eq!(probes[0]["recrypt_checked"], false, "{}", probes[0]);
}

#[test]
fn coturn_relays_through_an_allocation() {
    if !ensure("turnserver", "coturn") || !ensure("turnutils_uclient", "coturn") {
        return;
    }
    let dir = TempDir::new("baseline-coturn").expect("create a temp dir");
    let json = dir.join("c.json");
    let v = relay_bench_json(&["baseline", "coturn", "--messages", "30000"], &json);
    let s = system(&v, "coturn");
    assert!(s["error"].is_null(), "{}", s["error"]);
    let pps = s["pps"][0].as_f64().unwrap();
    let cpu = s["cpu_us"][0].as_f64().unwrap();
    assert!(pps > 1000.0, "{pps} relayed pps");
    assert!(cpu > 0.1 && cpu < 1000.0, "{cpu} µs per packet");
    assert!(s["note"].as_str().unwrap().contains("NO re-encryption"));
}
