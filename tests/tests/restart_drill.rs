//! The restart drill: relayd killed under load (`kill -9`, then SIGTERM; five times each) and
//! started again,
//! with no relay-control anywhere. The apps the clients use exist only in the config pushed
//! over the management socket (the TOML file has another app), so every join after a
//! restart proves the saved push was restored.
//!
//! Load: four rooms over two apps (two apps' room 1 included). Three rooms have an
//! in-process publisher (`relay::client`, 200 pps) and two receivers; the fourth a
//! `relay-client run` publisher, one in-process receiver and one `relay-client` receiver.
//! Every client stays joined through `Client::poll_session` alone: after the kill the
//! drill waits until every in-process client has noticed the silence (the no-answer
//! deadline) before starting relayd again; after the SIGTERM it starts relayd at once,
//! and the clients learn from an `unknown_session` answer to a keepalive.
//!
//! Receivers check every packet: SRTP auth and replay (the client), the room's tag in the
//! payload, the sender's SSRC against the SSRCs its room's publisher declared, and the
//! publisher's packet number, which must never arrive twice. Per receiver and restart the
//! drill prints the time from relayd answering on its management socket (it binds its UDP
//! sockets before) to the first packet of the new session, and asserts it is at most 2 s.
//!
//! Socket backend on loopback. Run `cargo build --workspace --bins` first.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgerelay_tests::drill::*;
use edgerelay_tests::*;
use relay::ids::RoomId;
use relay::mgmt::{AppSpec, Request};
use relay::proto::ErrorCode;

/// A third app, pushed with app A; the TOML file has only app B.
const APP_C: u32 = 1_400_000_003;
const SECRET_C: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
/// Packets per second of each in-process publisher.
const PPS: u64 = 200;
/// How many times the drill kills relayd (and then stops it with SIGTERM).
const ROUNDS: usize = 5;
/// The bound the drill asserts on each receiver's recovery.
const RECOVERY_BOUND: Duration = Duration::from_secs(2);

/// relayd's TOML: 1 s keepalives and a 5 s session timeout (a 3 s no-answer deadline),
/// and only app B, which the push replaces.
fn toml() -> String {
    format!(
        "workers = 2\n[timeouts]\nkeepalive_secs = 1\nsession_secs = 5\n\
         [[app]]\nsdkappid = {APP_B}\nsecret = \"{SECRET_B}\"\n"
    )
}

fn app(sdkappid: u32, secret: &str) -> AppSpec {
    AppSpec {
        sdkappid: sdkappid.into(),
        secrets: vec![secret.into()],
        require_private_map_key: false,
        allow_v1_joins: false,
        profiles: None,
        quotas: relay::limits::Quotas::default(),
    }
}

/// A `relay-client run` process, SIGTERMed (it then reports) or killed on drop.
struct RelayClient(Option<Child>);

impl RelayClient {
    fn start(relay: &Relayd, room: u32, user: &str, extra: &[&str]) -> Self {
        let child = Command::new(bin("relay-client"))
            .args(["run", "--relay", &relay.addr.to_string(), "--relay-key", &relay.key.to_string()])
            .args(["--sdkappid", &APP_A.to_string(), "--secret", SECRET_A, "--user", user])
            .args(["--room", &room.to_string(), "--duration", "120", "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay-client");
        Self(Some(child))
    }

    /// Stops it with SIGTERM and returns its JSON report and its stderr.
    fn finish(mut self) -> (serde_json::Value, String) {
        let child = self.0.take().expect("running");
        let _ = relay::io::sys::terminate(child.id());
        let out = child.wait_with_output().expect("relay-client exits");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "relay-client failed: {stderr}");
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report: {e}: {stderr}"));
        (report, stderr)
    }
}

impl Drop for RelayClient {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Prints and checks the recovery of every receiver after a restart.
fn report(
    what: &str,
    clients: &[ClientThread],
    rooms: &[Room],
    spawned: Instant,
    serving: Instant,
    firsts: &[Instant],
) -> Vec<Duration> {
    let receivers: Vec<_> = clients.iter().filter(|c| c.seen.is_some()).collect();
    let startup = serving - spawned;
    println!("{what}: relayd answered {} ms after it was spawned", startup.as_millis());
    let mut worst = Duration::ZERO;
    let mut all = Vec::new();
    for (c, first) in receivers.iter().zip(firsts) {
        let r = &rooms[c.room];
        let took = first.saturating_duration_since(serving);
        worst = worst.max(took);
        all.push(took);
        println!(
            "  receiver in app {} room {}: media again {:>4} ms after relayd listened ({:>4} ms after the restart began)",
            r.app,
            r.room,
            took.as_millis(),
            first.saturating_duration_since(spawned).as_millis()
        );
        assert!(took <= RECOVERY_BOUND, "{what}: a receiver in room {} recovered in {took:?}", r.room);
    }
    println!("  worst {} ms", worst.as_millis());
    all
}

#[test]
fn kill_9_and_sigterm_under_load_lose_nothing_and_media_resumes_within_2_s() {
    let mut relayd = Relayd::start(&toml());
    // What relay-control would push: two apps (replacing the TOML's app B) and a ban.
    let push = |relayd: &Relayd, req: Request| {
        let r = relayd.mgmt(&req);
        assert!(r.is_ok(), "{req:?}: {r:?}");
    };
    push(&relayd, Request::SetApps { apps: vec![app(APP_A, SECRET_A), app(APP_C, SECRET_C)] });
    let ban = Request::RemoveUser { sdkappid: APP_A.into(), room: "1".into(), user: "eve".into(), ban_secs: 600 };
    push(&relayd, ban);
    wait_until(
        "the push saved",
        Duration::from_secs(5),
        || matches!(relay::pushed::load(&relayd.state_file()), Ok(Some(c)) if c.apps.as_ref().is_some_and(|a| a.len() == 2) && c.bans.len() == 1),
    );
    assert_eq!(relayd.stats().config_origin.as_deref(), Some("pushed"));

    let rooms: Arc<Vec<Room>> = Arc::new(
        [(APP_A, SECRET_A, 1, 0xa1), (APP_A, SECRET_A, 2, 0xa2), (APP_C, SECRET_C, 1, 0xc1), (APP_A, SECRET_A, 3, 0)]
            .into_iter()
            .map(|(app, secret, room, tag)| Room { app, secret, room, tag, ssrcs: Mutex::new(Vec::new()) })
            .collect(),
    );
    let shared = Arc::new(Shared { stop: AtomicBool::new(false) });
    let mut clients = Vec::new();
    for room in 0..3 {
        clients.push(spawn_publisher(&relayd, loopback(), &rooms, room, PPS, &shared));
        clients.push(spawn_receiver(&relayd, loopback(), &rooms, room, "receiver-1", &shared));
        clients.push(spawn_receiver(&relayd, loopback(), &rooms, room, "receiver-2", &shared));
    }
    clients.push(spawn_receiver(&relayd, loopback(), &rooms, 3, "receiver-1", &shared));
    let rc_pub = RelayClient::start(&relayd, 3, "rc-publisher", &["--send-pps", "100", "--size", "200"]);
    let rc_rx = RelayClient::start(&relayd, 3, "rc-receiver", &["--recv-only"]);
    // Everyone streams: 100 packets at every in-process receiver.
    let _ = wait_resumed(&clients, &[0; 7], 100);

    // Each kind of restart ROUNDS times; the note reports the median.
    let mut kill_worst = Vec::new();
    let mut kill_all = Vec::new();
    let mut term_worst = Vec::new();
    let mut term_all = Vec::new();
    for round in 1..=ROUNDS {
        // kill -9, then wait until every in-process client has given the session up (its
        // no-answer deadline, 3 s) and is joining again, then start relayd.
        let next = next_generations(&clients);
        relayd.kill();
        let killed = Instant::now();
        wait_until("every client to notice the relay is gone", Duration::from_secs(10), || {
            clients.iter().all(|c| c.rejoining.load(Relaxed))
        });
        println!(
            "kill -9 #{round}: every client gave its session up {} ms after the kill",
            killed.elapsed().as_millis()
        );
        let (spawned, serving) = relayd.respawn();
        let firsts = wait_resumed(&clients, &next, 50);
        let took = report(&format!("kill -9 #{round}"), &clients, &rooms, spawned, serving, &firsts);
        kill_worst.push(*took.iter().max().expect("receivers"));
        kill_all.extend(took);

        // The saved push is what runs: the pushed apps and the ban, not the TOML's app B.
        let s = relayd.stats();
        assert_eq!(s.config_origin.as_deref(), Some("saved"));
        assert_eq!(s.state.get("loaded"), Some(&1));
        assert_eq!(s.state.get("load_failed"), Some(&0));
        let mut eve = Peer::new(&relayd, APP_A, SECRET_A, "eve", RoomId::Num(1), None);
        assert_eq!(eve.join().map_err(|e| e.0), Err(Some(ErrorCode::Banned)), "the ban survives the crash");
        let mut b = Peer::new(&relayd, APP_B, SECRET_B, "b", RoomId::Num(1), None);
        assert_eq!(b.join().map_err(|e| e.0), Err(Some(ErrorCode::UnknownApp)), "the push wins over the TOML file");

        // SIGTERM, and relayd started again at once: the clients learn from unknown_session.
        let next = next_generations(&clients);
        assert!(relayd.sigterm(), "relayd exits 0 on SIGTERM");
        let (spawned, serving) = relayd.respawn();
        let firsts = wait_resumed(&clients, &next, 50);
        let took = report(&format!("SIGTERM #{round}"), &clients, &rooms, spawned, serving, &firsts);
        term_worst.push(*took.iter().max().expect("receivers"));
        term_all.extend(took);
    }
    println!(
        "kill -9: slowest receiver per restart {}; every receiver {}",
        summary(&mut kill_worst),
        summary(&mut kill_all)
    );
    println!(
        "SIGTERM: slowest receiver per restart {}; every receiver {}",
        summary(&mut term_worst),
        summary(&mut term_all)
    );

    shared.stop.store(true, Relaxed);
    let (pub_report, pub_err) = rc_pub.finish();
    let (rx_report, rx_err) = rc_rx.finish();
    let mut receivers = Vec::new();
    for c in clients {
        c.handle.join().expect("client thread");
        if let Some(s) = c.seen {
            receivers.push((c.room, Arc::try_unwrap(s).ok().expect("thread done").into_inner().unwrap()));
        }
    }

    // relay-client joined again by itself after both restarts, with fresh SSRCs.
    println!("relay-client publisher: {pub_report}");
    let restarts = 2 * ROUNDS as u64;
    assert!(pub_report["rejoins"].as_u64() >= Some(restarts), "{pub_report}\n{pub_err}");
    let rc_ssrcs: Vec<u32> =
        pub_report["sent_ssrcs"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(rc_ssrcs.len(), pub_report["rejoins"].as_u64().unwrap() as usize + 1);
    rooms[3].ssrcs.lock().unwrap().extend(&rc_ssrcs);
    assert!(rx_report["rejoins"].as_u64() >= Some(restarts), "{rx_report}\n{rx_err}");
    assert!(rx_report["received"].as_u64() > Some(100), "{rx_report}");
    assert_eq!(rx_report["auth_failures"], 0, "{rx_report}");
    assert_eq!(rx_report["replays"], 0, "{rx_report}");
    for (ssrc, s) in rx_report["streams"].as_object().unwrap() {
        assert!(rc_ssrcs.contains(&ssrc.parse().unwrap()), "relay-client received a foreign SSRC {ssrc}");
        assert_eq!(s["duplicates"], 0, "{rx_report}");
    }

    // Every packet verified, none twice, none from another room; each publisher's fresh
    // SSRCs reached its receivers.
    for (room, s) in &receivers {
        let r = &rooms[*room];
        let declared = r.ssrcs.lock().unwrap();
        println!(
            "receiver in app {} room {}: {} packets from SSRCs {:x?} (room's: {:x?}), {} duplicates, {} foreign, \
             {} auth failures, {} replays, {} other errors, {} rejoins",
            r.app,
            r.room,
            s.arrivals.len(),
            s.ssrcs,
            *declared,
            s.duplicates,
            s.foreign,
            s.auth_failed,
            s.replayed,
            s.other_errors,
            s.generation
        );
        s.assert_clean(&declared, &format!("receiver in room {}", r.room));
        assert!(s.ssrcs.len() as u64 > restarts, "media from the first SSRC and from each rejoin's fresh one");
        assert_eq!(s.generation, restarts, "one rejoin per restart");
    }
}
