//! In-room messages through a real relayd: between peers on both backends (loopback with
//! the socket backend; network namespaces with the XDP backend, root only, skipped on a
//! laptop and required under CI), and between `relay-client` processes.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::client::{Event, ReceivedMessage};
use relay::ids::RoomId;

const QUIET: Duration = Duration::from_millis(400);

/// The clients' clock: monotonic milliseconds since the first call.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn send(p: &mut Peer, cmd: u8, text: &str, reliable: bool, ordered: bool) {
    let mut buf = [0u8; 1500];
    let m = p.client.send_message(now_ms(), cmd, text.as_bytes(), reliable, ordered, &mut buf).expect("seal message");
    p.send_raw(&buf[..m.len]);
}

/// Receives until `quiet` passes with nothing new, answering with what the client queues
/// (acks, retransmissions); returns the messages and how many of our messages were acked.
fn receive(p: &mut Peer, quiet: Duration) -> (Vec<ReceivedMessage>, usize) {
    let (mut got, mut acked) = (Vec::new(), 0);
    let mut buf = [0u8; 2048];
    p.sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Ok(n) = p.sock.recv(&mut buf) {
            match p.client.handle_at(now_ms(), &mut buf[..n]) {
                Event::Messages { .. } => {
                    got.extend(std::iter::from_fn(|| p.client.next_message()));
                    last = Instant::now();
                }
                Event::MessageAcked { .. } => {
                    acked += 1;
                    last = Instant::now();
                }
                _ => {}
            }
        }
        p.client.poll_timeouts(now_ms());
        while let Some(n) = p.client.poll_transmit(&mut buf) {
            p.send_raw(&buf[..n]);
        }
    }
    (got, acked)
}

fn a_message_reaches_the_other_members_of_its_room_and_no_one_else(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(1), None);
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "bob", RoomId::Num(1), None);
    let mut other_room = net.peer(&relayd, APP_A, SECRET_A, "carol", RoomId::Num(2), None);
    // The same room number in another app is another room.
    let mut other_app = net.peer(&relayd, APP_B, SECRET_B, "dave", RoomId::Num(1), None);
    for p in [&mut a, &mut b, &mut other_room, &mut other_app] {
        p.join().expect("join");
    }
    relayd.wait_for(5, "4 sessions", |s| s.sessions == 4);
    for (i, (reliable, ordered)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate()
    {
        let text = format!("hello {i}");
        send(&mut a, 3, &text, reliable, ordered);
        let (got, _) = receive(&mut b, QUIET);
        assert_eq!(got.len(), 1, "mode {i}: {got:?}");
        assert_eq!((got[0].from_user.as_str(), got[0].cmd, got[0].data.as_slice()), ("alice", 3, text.as_bytes()));
        assert_eq!((got[0].reliable, got[0].ordered), (reliable, ordered));
        let (echo, acked) = receive(&mut a, Duration::from_millis(100));
        assert!(echo.is_empty(), "a sender does not hear itself");
        assert_eq!(acked, usize::from(reliable), "mode {i}: reliable messages are acknowledged");
    }
    // bob answers with five ordered, reliable messages: alice gets them in order.
    for i in 0..5 {
        send(&mut b, 7, &format!("{i}"), true, true);
    }
    let (got, _) = receive(&mut a, QUIET);
    assert_eq!(
        got.iter().map(|m| String::from_utf8_lossy(&m.data).into_owned()).collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4"]
    );
    // bob's ack of a reliable copy is lost: relayd's control thread sends the copy again
    // (200 ms later) until bob acknowledges, and bob does not deliver it twice.
    assert_eq!(receive(&mut b, Duration::from_millis(100)).1, 5, "bob's five were acknowledged");
    send(&mut a, 4, "again", true, false);
    let mut buf = [0u8; 2048];
    b.sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let n = b.sock.recv(&mut buf).expect("the first copy");
    assert_eq!(b.client.handle_at(now_ms(), &mut buf[..n]), Event::Messages { ready: 1 });
    assert_eq!(b.client.next_message().unwrap().data, b"again");
    while b.client.poll_transmit(&mut buf).is_some() {} // the ack, dropped
    let (got, _) = receive(&mut b, QUIET);
    assert!(got.is_empty(), "the retransmission is acknowledged, not delivered again: {got:?}");
    assert_eq!(b.client.message_stats().duplicates, 1);
    assert_eq!(receive(&mut a, Duration::from_millis(100)).1, 1, "alice's message was acknowledged");
    for p in [&mut other_room, &mut other_app] {
        assert!(receive(p, Duration::from_millis(100)).0.is_empty(), "nothing crosses rooms or apps");
    }
    let s = relayd.wait_for(3, "the acks reached the relay", |s| s.messages.get("acks_received") == Some(&8));
    let m = |k: &str| s.messages.get(k).copied().unwrap_or(0);
    // Senders that read their acks late retransmitted: each duplicate is acked again.
    assert_eq!((m("received"), m("delivered")), (10, 10), "{:?}", s.messages);
    assert_eq!(m("acks_sent"), 8 + m("duplicates"), "{:?}", s.messages);
    assert!(m("retransmitted") >= 1, "{:?}", s.messages);
    assert_eq!((m("bad_auth"), m("replayed"), m("given_up")), (0, 0, 0));
}

/// Runs each scenario on loopback (socket backend) and in namespaces (XDP backend).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod socket_backend {
            $(#[test] fn $name() { super::$name(&super::Net::loopback()) })*
        }
        mod xdp_backend {
            $(#[test] fn $name() { if let Some(n) = super::Net::xdp(1) { super::$name(&n) } })*
        }
    };
}

on_both_backends!(a_message_reaches_the_other_members_of_its_room_and_no_one_else);

fn relay_client(relayd: &Relayd, user: &str, room: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("relay-client"));
    c.args(["run", "--relay", &relayd.addr.to_string(), "--relay-key", &relayd.key.to_string()])
        .args(["--sdkappid", &APP_A.to_string(), "--secret", SECRET_A, "--user", user, "--room", room])
        .args(["--recv-only", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn report(out: std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "relay-client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("relay-client --json report")
}

#[test]
fn relay_client_sends_messages_that_only_its_room_receives() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let listener = relay_client(&relayd, "listener", "5", &["--duration", "5"]).spawn().unwrap();
    let elsewhere = relay_client(&relayd, "elsewhere", "6", &["--duration", "5"]).spawn().unwrap();
    relayd.wait_for(5, "both listeners joined", |s| s.sessions == 2);
    let sender = relay_client(&relayd, "talker", "5", &["--duration", "1", "--reliable", "--ordered"])
        .args(["--send-message", "1:hello", "--send-message", "2:world"])
        .output()
        .unwrap();
    let sender = report(sender);
    assert_eq!(sender["message_stats"]["sent"], 2);
    assert_eq!(sender["message_stats"]["acked"], 2, "{sender}");
    let got = report(listener.wait_with_output().unwrap());
    let msgs = got["messages"].as_array().expect("a messages array");
    let seen: Vec<(String, u64, String)> = msgs
        .iter()
        .map(|m| {
            (m["from"].as_str().unwrap().to_owned(), m["cmd"].as_u64().unwrap(), m["text"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(seen, [("talker".into(), 1, "hello".into()), ("talker".into(), 2, "world".into())]);
    assert!(msgs.iter().all(|m| m["reliable"] == true && m["ordered"] == true));
    let other = report(elsewhere.wait_with_output().unwrap());
    assert_eq!(other["messages"].as_array().map(Vec::len), Some(0), "room 6 heard nothing: {other}");
}
