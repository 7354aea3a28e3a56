//! The chaos drill (issue 17): one edge node (relayd on the XDP backend in a namespace,
//! relay-control managing it) serving rooms under load, put through four kinds of trouble in
//! turn, five rounds of each:
//!
//! 1. **relayd killed** (`kill -9`) and started again at once, as a service manager would:
//!    every receiver gets media again (its clients join again by themselves), relay-control's
//!    link reconnects, and the node runs the pushed config (restored from its saved push,
//!    then resynced), the operator's blocklist entry included;
//! 2. **relay-control killed** and started again: media never stops (fail-static), and the
//!    API serves again with its apps and blocklist;
//! 3. **the kernel's `sessions` map filled** by joins that then go silent (an attacker with a
//!    valid UserSig): the rooms keep flowing, a new join is refused `overloaded` (counted as
//!    `sessions_map_full`), and once the silent sessions expire new members join again;
//! 4. **a burst of malformed packets and API requests**: junk of every first-byte class from
//!    an attacker's namespace, and unsigned, badly signed, unparsable and oversized HTTPS
//!    requests: media never stops, relayd and relay-control stay up (same pids), and the API
//!    answers a good request again.
//!
//! After each, the node must serve every room again; the drill prints each recovery and the
//! median [min–max] of the five per kind. At the end every receiver's packets are checked:
//! each authenticated and replay-checked, from its own room, none twice.
//!
//! Root (namespaces, XDP); skipped on a laptop with one line, a failure under `CI=true`.
//! Run `cargo build --workspace --bins` first.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgerelay_tests::control::{ApiClient, ControlDaemon};
use edgerelay_tests::drill::*;
use edgerelay_tests::net::Net;
use edgerelay_tests::{Peer, Relayd, APP_B, SECRET_B};
use relay::ids::RoomId;
use relay::mgmt::Request;
use relay::proto::ErrorCode;
use serde_json::{json, Value};

/// The app relay-control creates; the TOML file has only app B.
const APP: u32 = 1_400_000_900;
/// Rounds of each kind of trouble.
const ROUNDS: usize = 5;
/// Packets per second of each publisher.
const PPS: u64 = 100;
/// Rooms with a publisher and two receivers each.
const ROOMS: u32 = 3;
/// The kernel's `sessions` map (the smallest relayd accepts).
const MAP_SIZE: usize = 1024;
/// relayd's session timeout: silent sessions are gone this long after their last packet.
const SESSION_SECS: u64 = 4;
/// The longest media gap a receiver may see while relayd itself keeps running.
const GAP_BOUND: Duration = Duration::from_millis(500);
/// The operator's blocklist entry, which must survive everything.
const BLOCKED: &str = "198.18.0.200/32";

fn relayd_body() -> String {
    format!(
        "workers = 1\n[timeouts]\nkeepalive_secs = 1\nsession_secs = {SESSION_SECS}\n\
         [[app]]\nsdkappid = {APP_B}\nsecret = \"{SECRET_B}\"\n"
    )
}

fn control_config(relayd: &Relayd) -> String {
    format!(
        "relayd_socket = \"{}\"\n[rate_limits]\nper_ip_per_sec = 50\nper_ip_burst = 100\n\
         per_key_per_sec = 50\nper_key_burst = 100\n\
         [autoblock]\nexempt = [\"198.18.0.0/15\"]\n",
        relayd.stats_socket.display()
    )
}

/// Whether relay-control serves: a signed call answers 200 and relayd's link is up.
fn api_serves(c: &ApiClient) -> bool {
    let r = c.call("GET", "/v1/node", &Value::Null);
    r.status == 200 && r.json()["relayd"]["reachable"] == true
}

/// Waits (up to 10 s) until [`api_serves`], asking every 50 ms (the drill's own calls must
/// not drain the per-IP budget they measure); returns how long it took.
fn api_wait(what: &str, c: &ApiClient) -> Duration {
    let start = Instant::now();
    while !api_serves(c) {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The kernel's blocklist, as `ip/len` strings.
fn kernel_blocks(relayd: &Relayd) -> Vec<String> {
    match relayd.mgmt(&Request::Blocklist {}).blocks() {
        Some(b) => b.iter().map(|b| format!("{}/{}", b.ip, b.prefix_len)).collect(),
        None => Vec::new(),
    }
}

/// Waits until `f` holds, checking every 5 ms; returns how long it took.
fn time_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    wait_until(what, limit, &mut f);
    start.elapsed()
}

/// The longest media gap any receiver saw within `from..to`.
fn worst_gap(clients: &[ClientThread], from: Instant, to: Instant) -> Duration {
    clients.iter().filter_map(|c| c.seen.as_ref()).map(|s| s.lock().unwrap().max_gap(from, to)).max().unwrap()
}

/// Waits until every receiver got a packet after `since`; returns when the last one did.
fn every_receiver_after(clients: &[ClientThread], since: Instant) -> Instant {
    let mut last = since;
    wait_until("media at every receiver", Duration::from_secs(10), || {
        let firsts: Option<Vec<Instant>> = clients
            .iter()
            .filter_map(|c| c.seen.as_ref())
            .map(|s| s.lock().unwrap().arrivals.iter().map(|(t, _)| *t).find(|t| *t > since))
            .collect();
        match firsts {
            Some(f) => {
                last = f.into_iter().max().unwrap_or(since);
                true
            }
            None => false,
        }
    });
    last
}

/// One datagram of junk: every first-byte class RFC 7983 names, and lengths from 1 byte to
/// a full MTU.
fn junk(i: usize, buf: &mut [u8; 1400]) -> usize {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    buf[0] = [0x00, 0x01, 0x03, 0x14, 0x3f, 0x40, 0x80, 0x90, 0xbf, 0xff][i % 10];
    [1, 4, 12, 20, 64, 200, 1400][i % 7]
}

/// Malformed API traffic: raw bytes that are not a valid signed request, each on its own
/// TLS connection (or a bare TCP one for the non-TLS junk). Returns how many were answered
/// with a 4xx status.
fn malformed_api(c: &ApiClient, addr: SocketAddr, n: usize) -> usize {
    let mut refused = 0;
    for i in 0..n {
        let raw: Vec<u8> = match i % 6 {
            0 => b"GET /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), // unsigned
            1 => b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
                   Authorization: TC3-HMAC-SHA256 Credential=AKIDnope/2026-12-07/relay/tc3_request, \
                   SignedHeaders=content-type;host, Signature=00\r\nX-TC-Timestamp: 1\r\n\
                   Content-Length: 2\r\n\r\n{}"
                .to_vec(), // badly signed, stale
            2 => b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"sdkap\x00"
                .to_vec(), // unparsable body
            3 => {
                let mut r = b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n"
                    .to_vec();
                r.extend(std::iter::repeat_n(b'[', 1_000));
                r // oversized
            }
            4 => b"\x16\x03\x01garbage that is no HTTP at all\r\n\r\n".to_vec(),
            _ => b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        };
        if i % 6 == 4 {
            // Not even TLS: bytes straight onto the TCP port.
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(&raw);
            }
            continue;
        }
        if let Ok(r) = c.exchange(&raw) {
            if (400..500).contains(&r.status) {
                refused += 1;
            }
        }
    }
    refused
}

#[test]
fn the_node_recovers_from_kills_a_full_sessions_map_and_malformed_bursts_losing_nothing() {
    let Some(net) = Net::xdp(1) else { return };
    let limits = format!("join_rate_per_sec = 0\npps_rate_per_sec = 0\nmax_sessions = {MAP_SIZE}\n");
    let mut relayd = net.relayd_with_limits(&relayd_body(), &limits);
    let mut control = Some(ControlDaemon::start(&control_config(&relayd)));
    let c = control.as_ref().unwrap().admin_client();
    api_wait("relayd link up", &c);
    let created = c.call("POST", "/v1/apps", &json!({"sdkappid": APP}));
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let secret: &'static str = created.json()["secret"].as_str().expect("secret").to_owned().leak();
    let r = c.call("POST", "/v1/blocklist", &json!({"cidr": BLOCKED, "ttl_secs": 0, "reason": "chaos drill"}));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    wait_until("the entry in the kernel", Duration::from_secs(5), || kernel_blocks(&relayd).contains(&BLOCKED.into()));
    let probe = |relayd: &Relayd, n: usize, room: u32| {
        let cfg = relayd.client_config(APP, secret, &format!("probe-{n}"), RoomId::Num(room), None);
        Peer::with_socket(net.client_socket(n), relayd.addr, cfg)
    };
    // Fillers bind ports of their own, never reused in the drill, so no silent session's
    // 5-tuple is ever taken over by a later one.
    let filler = |relayd: &Relayd, n: usize, room: u32| {
        let cfg = relayd.client_config(APP, secret, &format!("filler-{n}"), RoomId::Num(room), None);
        Peer::with_socket(net.client_socket_on(n, 10_000 + (n / 3) as u16), relayd.addr, cfg)
    };
    wait_until("the app pushed to relayd", Duration::from_secs(5), || probe(&relayd, 0, 999).join().is_ok());

    let rooms: Arc<Vec<Room>> = Arc::new(
        (1..=ROOMS)
            .map(|room| Room { app: APP, secret, room, tag: 0xc0 + room, ssrcs: Mutex::new(Vec::new()) })
            .collect(),
    );
    let shared = Arc::new(Shared { stop: AtomicBool::new(false) });
    let mut clients = Vec::new();
    for room in 0..ROOMS as usize {
        clients.push(spawn_publisher(&relayd, net.client_socket(3 * room), &rooms, room, PPS, &shared));
        for r in 1..=2 {
            let sock = net.client_socket(3 * room + r);
            clients.push(spawn_receiver(&relayd, sock, &rooms, room, &format!("receiver-{r}"), &shared));
        }
    }
    let receivers = clients.iter().filter(|c| c.seen.is_some()).count();
    let _ = wait_resumed(&clients, &vec![0; receivers], 50);

    let attacker = net.attacker();
    let socks: Vec<UdpSocket> = (0..4).map(|_| attacker.socket()).collect();
    let (mut relayd_rec, mut link_rec, mut control_rec, mut map_rec, mut junk_rec) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut control_gaps, mut map_gaps, mut junk_gaps) = (vec![], vec![], vec![]);
    let mut fill_port_base = 0usize;
    for round in 1..=ROUNDS {
        // 1. relayd killed, and started again at once.
        let next = next_generations(&clients);
        relayd.kill();
        let (_, serving) = relayd.respawn();
        let firsts = wait_resumed(&clients, &next, 20);
        let media = firsts.iter().max().unwrap().saturating_duration_since(serving);
        let c = control.as_ref().unwrap().admin_client();
        api_wait("relay-control's link back", &c);
        let linked = serving.elapsed();
        assert!(kernel_blocks(&relayd).contains(&BLOCKED.into()), "the blocklist entry is back in the kernel");
        println!(
            "round {round}: relayd kill -9: media at every receiver {} ms after relayd listened; relay-control's \
             link up within {} ms",
            media.as_millis(),
            linked.as_millis()
        );
        relayd_rec.push(media);
        link_rec.push(linked);

        // 2. relay-control killed, and started again.
        let d = control.take().unwrap();
        let (dir, config, admin) = (d.dir.clone(), d.config.clone(), d.admin.clone());
        let gone = Instant::now();
        drop(d); // SIGKILL, reaped
        let d = ControlDaemon::serve(dir, config, admin);
        let c = d.admin_client();
        let spawned = Instant::now();
        let took = api_wait("relay-control serving again", &c);
        let apps = c.get_ok("/v1/apps");
        assert!(apps.to_string().contains(&APP.to_string()), "the app survives: {apps}");
        let blocks = c.get_ok("/v1/blocklist");
        assert!(blocks.to_string().contains(BLOCKED), "the blocklist survives: {blocks}");
        let gap = worst_gap(&clients, gone, Instant::now());
        println!(
            "round {round}: relay-control kill -9: API serving {} ms after the restart ({} ms after the kill); worst media gap {} ms",
            took.as_millis(),
            (spawned - gone + took).as_millis(),
            gap.as_millis()
        );
        assert!(gap <= GAP_BOUND, "media stopped for {gap:?} while relay-control was down");
        control_rec.push(spawned - gone + took);
        control_gaps.push(gap);
        control = Some(d);

        // 3. The sessions map filled by joins that then go silent.
        let fill_start = Instant::now();
        let mut filled = 0;
        let refused = loop {
            let mut p = filler(&relayd, fill_port_base, 100 + (filled / 40) as u32);
            fill_port_base += 1;
            match p.join() {
                Ok(_) => filled += 1,
                Err((Some(ErrorCode::Overloaded), _)) => break true,
                Err(e) => panic!("a filler join was refused: {e:?}"),
            }
            assert!(filled <= MAP_SIZE, "{filled} sessions and the map is not full");
        };
        assert!(refused);
        let full_at = Instant::now();
        let stats = relayd.stats();
        // (relayd's counters start again with each relayd, killed in step 1.)
        assert!(stats.handshake.get("sessions_map_full").copied().unwrap_or(0) >= 1, "{:?}", stats.handshake);
        assert!(stats.joins.get("overloaded").copied().unwrap_or(0) >= 1, "{:?}", stats.joins);
        // Recovery: a new member joins once the silent sessions have expired.
        let took = time_until("a new join accepted", Duration::from_secs(SESSION_SECS * 3), || {
            let mut p = filler(&relayd, fill_port_base, 998);
            fill_port_base += 1;
            p.join().is_ok()
        });
        let gap = worst_gap(&clients, fill_start, Instant::now());
        println!(
            "round {round}: sessions map filled ({filled} silent sessions + the rooms' in {} ms): new joins accepted \
             again {} ms after it was full (session timeout {SESSION_SECS} s); worst media gap {} ms",
            (full_at - fill_start).as_millis(),
            took.as_millis(),
            gap.as_millis()
        );
        assert!(gap <= GAP_BOUND, "media stopped for {gap:?} while the map was full");
        map_rec.push(took);
        map_gaps.push(gap);

        // 4. Malformed packets and API requests.
        let (pid_relayd, pid_control) = (relayd.pid(), control.as_ref().unwrap().pid());
        let before = relayd.stats();
        let burst_start = Instant::now();
        let mut buf = [0u8; 1400];
        for i in 0..20_000 {
            let n = junk(i, &mut buf);
            let _ = socks[i % socks.len()].send_to(&buf[..n], relayd.addr);
        }
        // Seen and judged: every datagram got a kernel verdict (media-class junk from an
        // unknown source and the other classes are dropped there), and the control-class
        // junk reached relayd's parser and was refused as malformed.
        let judged = |s: &relay::stats::Snapshot| {
            ["malformed", "unknown_session", "not_relayed", "redirect_control", "blocklisted"]
                .iter()
                .map(|v| s.xdp.get(*v).copied().unwrap_or(0))
                .sum::<u64>()
        };
        wait_until("a kernel verdict for every junk datagram", Duration::from_secs(5), || {
            judged(&relayd.stats()) >= judged(&before) + 20_000
        });
        let after = relayd.stats();
        let malformed = |s: &relay::stats::Snapshot| s.joins.get("malformed").copied().unwrap_or(0);
        let parsed = malformed(&after) - malformed(&before);
        // 6,000 of the datagrams are control-class junk (first byte 0..=3): each refused by
        // the parser, or counted where it was dropped on the way (a full AF_XDP ring, a full
        // control queue). Nothing unaccounted for.
        let delta = |m: fn(&relay::stats::Snapshot) -> Option<&u64>| {
            m(&after).copied().unwrap_or(0) - m(&before).copied().unwrap_or(0)
        };
        let on_the_way = delta(|s| s.xsk.get("rx_ring_full"))
            + delta(|s| s.xsk.get("rx_dropped"))
            + delta(|s| s.drops.get("control_queue_full"));
        assert!(
            parsed + on_the_way >= 6_000 && parsed >= 3_000,
            "of 6,000 control-class junk datagrams {parsed} were refused as malformed and {on_the_way} counted as dropped"
        );
        assert_eq!(after.xdp.get("blocklisted"), before.xdp.get("blocklisted"), "the attacker is exempt: not blocked");
        let c = control.as_ref().unwrap().admin_client();
        let refused = malformed_api(&c, control.as_ref().unwrap().addr, 300);
        let burst_end = Instant::now();
        let took = api_wait("the API answers a good request", &c);
        let media = every_receiver_after(&clients, burst_end).saturating_duration_since(burst_end);
        let gap = worst_gap(&clients, burst_start, Instant::now());
        assert_eq!((relayd.pid(), control.as_ref().unwrap().pid()), (pid_relayd, pid_control), "nothing crashed");
        assert!(refused >= 200, "only {refused} of the 250 malformed requests over TLS were answered with a 4xx");
        println!(
            "round {round}: malformed burst (20,000 datagrams in {} ms, {parsed} refused by the join parser; 300 API \
             requests, {refused} answered 4xx): \
             API serving {} ms after it, media at every receiver {} ms after it; worst media gap {} ms",
            (burst_end - burst_start).as_millis(),
            took.as_millis(),
            media.as_millis(),
            gap.as_millis()
        );
        assert!(gap <= GAP_BOUND, "media stopped for {gap:?} during the burst");
        junk_rec.push(took.max(media));
        junk_gaps.push(gap);
    }

    println!("chaos drill, {ROUNDS} rounds, recovery median [min–max]:");
    println!("  relayd kill -9:      {} (relay-control's link {})", summary(&mut relayd_rec), summary(&mut link_rec));
    println!("  relay-control kill:  {}; worst media gap {}", summary(&mut control_rec), summary(&mut control_gaps));
    println!("  sessions map full:   {}; worst media gap {}", summary(&mut map_rec), summary(&mut map_gaps));
    println!("  malformed burst:     {}; worst media gap {}", summary(&mut junk_rec), summary(&mut junk_gaps));

    // Nothing lost on the way: every packet verified, none twice, none from another room.
    let stats = relayd.stats();
    println!("relayd drops: {:?}; kernel verdicts: {:?}", stats.drops, stats.xdp);
    shared.stop.store(true, Relaxed);
    for c in clients {
        let room = c.room;
        c.handle.join().expect("client thread");
        let Some(s) = c.seen else { continue };
        let s = Arc::try_unwrap(s).ok().expect("thread done").into_inner().unwrap();
        let declared = rooms[room].ssrcs.lock().unwrap();
        println!(
            "receiver in room {}: {} packets, {} SSRCs, {} duplicates, {} foreign, {} auth failures, {} replays, {} rejoins",
            rooms[room].room,
            s.arrivals.len(),
            s.ssrcs.len(),
            s.duplicates,
            s.foreign,
            s.auth_failed,
            s.replayed,
            s.generation
        );
        s.assert_clean(&declared, &format!("receiver in room {}", rooms[room].room));
        assert_eq!(s.generation, ROUNDS as u64, "one rejoin per relayd kill, none otherwise");
    }
}
