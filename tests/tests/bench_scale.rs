//! `relay-bench scale` and `relay-bench join-storm` in a small form, with the debug binaries:
//! the scale run must hold exactly the sessions and rooms it asked for (relayd's own counts),
//! with no refusal or timeout, and plausible memory figures; the storm must report a
//! sustained rate and name what stopped it, including a configured quota as such.
//!
//! The socket backend's runs are on loopback only (127.0.0.1 for relayd, 127.100.0.0/16 for
//! the members) and need no root; the XDP backend's run needs root (namespaces, XDP, AF_XDP)
//! and keeps its traffic in the namespaces the bench creates, in 198.18.0.0/15.

use edgerelay_tests::{relay_bench_json, relayd_arg, skip_or_fail, TempDir};
use serde_json::Value;

fn run_bench(args: &[&str], json: &std::path::Path) -> Value {
    relay_bench_json(&[args, &["--relayd", &relayd_arg()]].concat(), json)
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64().unwrap_or_else(|| panic!("{path:?} missing or not a number in {v}"))
}

#[test]
fn scale_holds_exactly_the_sessions_asked_for() {
    let dir = TempDir::new("bench-scale").expect("create a temp dir");
    let json = dir.join("scale.json");
    let r = run_bench(&["scale", "--sessions", "2000", "--rooms", "500", "--runs", "1", "--window", "64"], &json);
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(num(run, &["relayd_sessions"]), 2000.0, "{run}");
    assert_eq!(num(run, &["relayd_rooms"]), 500.0, "{run}");
    assert_eq!(num(run, &["ok"]), 2000.0, "{run}");
    assert_eq!(num(run, &["timed_out"]), 0.0, "{run}");
    assert!(run["refused"].as_object().is_some_and(|m| m.is_empty()), "{run}");
    assert!(num(run, &["verified"]) >= 1.0, "no key confirmation checked: {run}");
    let (before, after) = (num(run, &["before", "rss"]), num(run, &["after", "rss"]));
    assert!(before > 1e6 && after > before, "relayd RSS before {before}, after {after}");
    // 2000 sessions cost kilobytes each: between 500 B and 64 KiB per session.
    let per = num(run, &["rss_bytes_per_session"]);
    assert!((500.0..65536.0).contains(&per), "implausible {per} B per session");
    assert!(num(run, &["after", "hwm"]) >= after);
    assert!(num(run, &["joins_per_sec"]) > 0.0 && num(run, &["join_secs"]) > 0.0);
    assert_eq!(r["goal"]["met"], Value::Bool(true), "2000 sessions fit in 512 MiB: {}", r["goal"]);
    assert_eq!(num(&r, &["summary", "rss_after_mib", "n"]), 1.0);
}

#[test]
fn scale_over_the_xdp_backend_counts_its_bpf_maps() {
    if !relay::io::sys::is_root() && skip_or_fail("relay-bench scale --backend xdp needs root") {
        return;
    }
    let dir = TempDir::new("bench-scale-xdp").expect("create a temp dir");
    let json = dir.join("scale.json");
    // 45k sessions: the members need two source IPs (40k ports each) in the clients' namespace.
    let args =
        ["scale", "--backend", "xdp", "--sessions", "45000", "--rooms", "15000", "--runs", "1", "--workers", "2"];
    let r = run_bench(&args, &json);
    assert_eq!(r["backend"], "xdp", "{r}");
    let run = &r["runs"][0];
    assert_eq!(num(run, &["relayd_sessions"]), 45000.0, "{run}");
    assert_eq!(num(run, &["relayd_rooms"]), 15000.0, "{run}");
    assert_eq!(num(run, &["ok"]), 45000.0, "{run}");
    assert_eq!(num(run, &["timed_out"]), 0.0, "{run}");
    // The sessions map alone is sized for 262,144 entries: megabytes of kernel memory.
    let maps = num(run, &["bpf_maps_after"]);
    assert!(maps > 1e6 && maps >= num(run, &["bpf_maps_before"]), "relayd's BPF maps: {run}");
    let total = num(&r, &["summary", "total_after_mib", "median"]);
    let rss = num(&r, &["summary", "rss_after_mib", "median"]);
    assert!((total - rss - maps / 1048576.0).abs() < 0.01, "total is VmRSS plus maps: {r}");
    assert_eq!(r["goal"]["met"], Value::Bool(true), "{}", r["goal"]);
}

#[test]
fn join_storm_names_what_stopped_it() {
    let dir = TempDir::new("bench-storm").expect("create a temp dir");
    // A session quota of 250 with stages of 100 and 200 joins: the second stage hits it.
    let json = dir.join("quota.json");
    let r = run_bench(
        &[
            "join-storm",
            "--runs",
            "1",
            "--start-rate",
            "200",
            "--factor",
            "2",
            "--stage-secs",
            "0.5",
            "--max-sessions",
            "250",
            "--timeout-ms",
            "3000",
        ],
        &json,
    );
    let run = &r["runs"][0];
    assert_eq!(run["stopped_by"], "configured_limit", "{run}");
    assert!(run["stop_detail"].as_str().unwrap().contains("session_quota"), "{run}");
    let stages = run["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{run}");
    assert_eq!(num(&stages[0], &["ok"]), 100.0, "{run}");
    assert_eq!(num(&stages[1], &["ok"]), 150.0, "the quota admits 150 more: {run}");
    assert_eq!(num(&stages[1], &["refused", "session_quota"]), 50.0, "{run}");
    assert_eq!(num(run, &["relayd_sessions"]), 250.0, "{run}");
    assert_eq!(num(run, &["sustained_target"]), 200.0, "{run}");
    let sustained = num(run, &["sustained_rate"]);
    assert!(sustained > 50.0 && sustained < 400.0, "first stage paced at 200/s, sustained {sustained}");
    assert!(num(&stages[0], &["relayd_cpus"]) > 0.0, "{run}");

    // Without a quota, a capped ramp ends at the cap or at relayd's limit, named either way.
    let json = dir.join("ramp.json");
    let r = run_bench(
        &[
            "join-storm",
            "--runs",
            "1",
            "--start-rate",
            "100",
            "--factor",
            "2",
            "--stage-secs",
            "0.5",
            "--max-rate",
            "400",
        ],
        &json,
    );
    let run = &r["runs"][0];
    let stopped = run["stopped_by"].as_str().unwrap();
    assert!(["max_rate", "timeout", "generator_limited"].contains(&stopped), "{run}");
    assert!(!run["stop_detail"].as_str().unwrap().is_empty());
    assert!(num(&r, &["summary", "sustained_joins_per_sec", "median"]) > 0.0, "{r}");
}
