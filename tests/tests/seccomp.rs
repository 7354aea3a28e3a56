//! relayd's worker seccomp filter (`[security] worker_seccomp`): every worker thread, and
//! only the workers, run in filter mode on both backends; they relay, switch user and exit
//! cleanly under it; `off` leaves every thread unfiltered.

use std::time::Duration;

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::ids::RoomId;

/// Each thread's name and `Seccomp:` mode (0 none, 2 filter), from `/proc/<pid>/task`.
fn thread_modes(pid: u32) -> Vec<(String, u8)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("relayd's tasks") {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_owned();
        let mode = relay::io::sys::seccomp_mode_of(&dir.join("status")).expect("a Seccomp line");
        out.push((name, mode));
    }
    out
}

/// Relays one packet between two members, so the packet path ran under the filter.
fn relays(net: &Net, relayd: &Relayd, ssrc: u32) {
    let mut a = net.peer(relayd, APP_A, SECRET_A, "a", RoomId::Num(1), Some(ssrc));
    let mut b = net.peer(relayd, APP_A, SECRET_A, "b", RoomId::Num(1), None);
    a.join().unwrap();
    b.join().unwrap();
    a.send_rtp(ssrc, b"under seccomp");
    assert_eq!(b.drain(Duration::from_millis(300)).len(), 1, "relayed under the filter: {}", relayd.log());
}

/// Workers (`worker_prefix`) are filtered, every other thread is not, and stats count them.
fn check_filtered(relayd: &Relayd, worker_prefix: &str, workers: u64) {
    let s = relayd.wait_for(5, "every worker under seccomp", |s| s.seccomp_workers == workers);
    assert_eq!(s.seccomp_workers, workers);
    let modes = thread_modes(relayd.pid());
    let filtered: Vec<_> = modes.iter().filter(|(n, _)| n.starts_with(worker_prefix)).collect();
    assert_eq!(filtered.len() as u64, workers, "{modes:?}");
    for (name, mode) in &modes {
        let want = if name.starts_with(worker_prefix) { 2 } else { 0 };
        assert_eq!(*mode, want, "thread {name}: {modes:?}");
    }
    assert!(relayd.log().contains("worker seccomp filter installed"), "{}", relayd.log());
}

#[test]
fn socket_workers_run_under_the_filter_and_exit_cleanly() {
    let net = Net::loopback();
    let relayd = net.relayd(&two_app_config(30, ""));
    relays(&net, &relayd, 1);
    check_filtered(&relayd, "relay-worker-", 2);
    assert!(relayd.terminate(), "relayd exits 0 on SIGTERM, its workers' exit path allowed");
}

#[test]
fn off_installs_no_filter() {
    let net = Net::loopback();
    let relayd = net.relayd(&format!("{}\n[security]\nworker_seccomp = \"off\"\n", two_app_config(30, "")));
    relays(&net, &relayd, 2);
    assert_eq!(relayd.stats().seccomp_workers, 0);
    let modes = thread_modes(relayd.pid());
    assert!(modes.iter().all(|(_, m)| *m == 0), "{modes:?}");
    assert!(relayd.terminate());
}

#[test]
fn xdp_workers_run_under_the_filter_switch_user_and_exit_cleanly() {
    let Some(net) = Net::xdp(2) else { return };
    // `user`: relayd drops root after its workers installed their filters, so every worker
    // repeats the switch (glibc's SIGSETXID) under its filter.
    let relayd = net.relayd(&format!("user = \"nobody\"\n{}", two_app_config(30, "")));
    relays(&net, &relayd, 3);
    check_filtered(&relayd, "relay-xdp-q", 2);
    assert!(relayd.terminate(), "relayd exits 0 on SIGTERM, its workers' exit path allowed");
}

#[test]
fn socket_workers_switch_user_under_the_filter() {
    if !relay::io::sys::is_root() {
        skip_or_fail("switching user needs root");
        return;
    }
    let net = Net::loopback();
    let relayd = net.relayd(&format!("user = \"nobody\"\n{}", two_app_config(30, "")));
    relays(&net, &relayd, 4);
    check_filtered(&relayd, "relay-worker-", 2);
    assert!(relayd.terminate());
}
