//! The join path under floods from random spoofed sources (issue 13, part 10), against a
//! real relayd on the XDP backend, with hping3 in an attacker namespace.
//!
//! Two floods, one after the other, while legitimate clients keep joining:
//! 1. join-shaped junk (first byte 0x01, and v2-shaped 0x02 0x01, 200 bytes): it fails the
//!    v1 parse or mac1, so it costs no Diffie-Hellman and gets no reply;
//! 2. one real v2 join, replayed from random sources: it passes mac1 (mac1 does not cover
//!    the source), so it costs at most one DH each until the control queue backs up and
//!    relayd asks for cookies, and every reply draws from the reply budget.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use edgerelay_tests::net::{Attacker, Net};
use edgerelay_tests::*;
use relay::client::Client;
use relay::ids::RoomId;

const FLOOD_SECS: u64 = 4;
const REPLIES_PER_SEC: u64 = 300;
const COOKIES_PER_SEC: u64 = 4000;

/// A flooding hping3, killed on drop (a failing assertion must not leave it running).
struct Flood(Child);

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hping(attacker: &Attacker, target: &str, payload: &std::path::Path, len: usize) -> Flood {
    let child = attacker
        .command("hping3")
        .args(["--udp", "-p", "7000", "--rand-source", "--flood", "-q", "-d", &len.to_string(), "-E"])
        .arg(payload)
        .arg(target)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hping3 (apt-get install hping3)");
    Flood(child)
}

/// Legitimate joins, one fresh user after another, until `until`; returns their latencies.
fn legit_joins(net: &Net, relayd: &Relayd, tag: &str, until: Instant) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let cfg = relayd.client_config(APP_A, SECRET_A, &format!("{tag}-{i}"), RoomId::Num(5), None);
        let mut p = net.peer_with_config(relayd, cfg);
        let t = Instant::now();
        p.join_within(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("legitimate join {i} during the {tag} flood refused: {e:?}"));
        latencies.push(t.elapsed());
        let mut b = [0u8; 64];
        let n = p.client.leave(&mut b).unwrap();
        p.send_raw(&b[..n]);
    }
    latencies
}

fn summary(l: &mut [Duration]) -> String {
    l.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("{} joins, median {:.1} ms, max {:.1} ms", l.len(), ms(l[l.len() / 2]), ms(l[l.len() - 1]))
}

#[test]
fn legitimate_joins_succeed_while_spoofed_floods_cost_no_dh_and_get_bounded_replies() {
    let Some(net) = Net::xdp(1) else { return };
    if std::process::Command::new("hping3").arg("--version").output().is_err() {
        skip_or_fail("hping3 is not installed");
        return;
    }
    // relayd's default kernel limits (per-source join buckets, the control budget), and a
    // small total reply budgets so their bound is tight.
    let relayd = net.relayd_with_limits(
        &format!(
            "{}\n[join]\nreplies_per_sec = {REPLIES_PER_SEC}\ncookies_per_sec = {COOKIES_PER_SEC}\n",
            two_app_config(30, "")
        ),
        "",
    );
    let attacker = net.attacker();
    let dir = TempDir::new("join-flood").unwrap();
    let target = relayd.addr.ip().to_string();

    // 1. Junk, both version bytes.
    let mut v1 = vec![0x5a; 200];
    v1[0] = 1;
    let mut v2 = vec![0xa5; 200];
    v2[..4].copy_from_slice(&[2, 1, 0, 196]);
    let (j1, j2) = (dir.join("v1.bin"), dir.join("v2.bin"));
    std::fs::write(&j1, &v1).unwrap();
    std::fs::write(&j2, &v2).unwrap();
    let before = relayd.stats();
    let floods = [hping(&attacker, &target, &j1, 200), hping(&attacker, &target, &j2, 200)];
    let mut junk_latency = legit_joins(&net, &relayd, "junk", Instant::now() + Duration::from_secs(FLOOD_SECS));
    drop(floods);
    let s = relayd.wait_for(5, "the junk drained", |s| s.control_in == relayd.stats().control_in);
    let h = |s: &relay::stats::Snapshot, k: &str| s.handshake.get(k).copied().unwrap_or(0);
    let x = |s: &relay::stats::Snapshot, k: &str| s.xdp.get(k).copied().unwrap_or(0);
    let reached = s.control_in - before.control_in;
    let legit = junk_latency.len() as u64;
    eprintln!(
        "junk flood: kernel {:?}; reached relayd {reached}; handshake {:?}; joins {:?}; tx {}",
        s.xdp,
        s.handshake,
        s.joins,
        s.tx_packets - before.tx_packets
    );
    eprintln!("legitimate joins during the junk flood: {}", summary(&mut junk_latency));
    let flood_seen = x(&s, "redirect_control") + x(&s, "control_budget") + x(&s, "join_rate_limited");
    assert!(flood_seen > 20_000, "the flood reached the relay's interface: {flood_seen}");
    assert!(
        x(&s, "control_budget") > 0 || reached < 20_000 * (FLOOD_SECS + 1),
        "the budget bounds what reaches relayd"
    );
    assert!(h(&s, "mac1_failed") > 1000, "v2-shaped junk fails mac1");
    let d = |k: &str| h(&s, k) - h(&before, k);
    assert_eq!(d("dh"), d("v2_joins") - d("cookies_sent"), "a DH only for joins that passed mac1 (and a cookie check)");
    assert!(h(&s, "dh") - h(&before, "dh") <= legit * 3, "DH only for legitimate joins");
    // Replies: only to the legitimate joins (answers, cookies) and their leaves.
    let replies = h(&s, "replies") - h(&before, "replies");
    assert!(replies <= legit * 3, "{replies} replies for {legit} legitimate joins: junk was answered");

    // 2. A real join (to this relay's key), answered, then replayed from random sources.
    let mut c = Client::new(relayd.client_config(APP_A, SECRET_A, "replayed", RoomId::Num(6), None)).unwrap();
    let sock = net.client_socket(2);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    let n = c.join(&mut buf).unwrap();
    sock.send_to(&buf[..n], relayd.addr).unwrap();
    let mut answer = [0u8; 1500];
    let m = sock.recv(&mut answer).expect("the original join is answered");
    assert!(matches!(c.handle(&mut answer[..m]), relay::client::Event::Joined { .. }));
    let valid = dir.join("join.bin");
    std::fs::write(&valid, &buf[..n]).unwrap();
    let before = relayd.stats();
    let t0 = Instant::now();
    let flood = hping(&attacker, &target, &valid, n);
    let mut replay_latency = legit_joins(&net, &relayd, "replay", Instant::now() + Duration::from_secs(FLOOD_SECS));
    drop(flood);
    let s = relayd.wait_for(5, "the replays drained", |s| s.control_in == relayd.stats().control_in);
    let secs = t0.elapsed().as_secs() + 2;
    let legit = replay_latency.len() as u64;
    eprintln!("replay flood: handshake {:?}; joins {:?}; kernel {:?}", s.handshake, s.joins, s.xdp);
    eprintln!("legitimate joins during the replay flood: {}", summary(&mut replay_latency));
    let replies = h(&s, "replies") - h(&before, "replies");
    let dh = h(&s, "dh") - h(&before, "dh");
    eprintln!(
        "replay flood: {} passed mac1, {dh} DH, {} cookies, {replies} replies (bound {})",
        h(&s, "v2_joins") - h(&before, "v2_joins"),
        h(&s, "cookies_sent") - h(&before, "cookies_sent"),
        (REPLIES_PER_SEC + COOKIES_PER_SEC) * secs + legit * 3
    );
    // The bound: the answer and cookie budgets over the flood, plus the legitimate joins
    // (whose cookie-proven answers count only against their own address).
    assert!(
        replies <= (REPLIES_PER_SEC + COOKIES_PER_SEC) * secs + legit * 3,
        "{replies} replies over {secs} s break the total reply budgets"
    );
    assert!(h(&s, "replayed") - h(&before, "replayed") > 0, "the replays were recognised");
    let rooms = relayd.mgmt(&relay::mgmt::Request::Rooms { sdkappid: None, limit: None });
    let replayed: Vec<String> = rooms
        .rooms()
        .unwrap()
        .iter()
        .flat_map(|r| r.members.iter().filter(|m| m.user == "replayed").map(|m| m.addr.clone()))
        .collect();
    let original = sock.local_addr().unwrap().to_string();
    assert_eq!(replayed, [original], "replays created or displaced a session");
    // (A legitimate member's leave is one datagram, which the flood may drop on the wire:
    // such a session is left to expire, so the session count is not asserted.)
    // Every DH the flood cost was for a join that passed mac1 within the reply budget.
    assert!(dh <= REPLIES_PER_SEC * secs + legit * 3, "{dh} DH");
}
