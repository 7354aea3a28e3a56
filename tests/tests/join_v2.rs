//! Join v2 on the wire, against a real relayd on the XDP backend: what an on-path observer
//! records, and what replaying it achieves.

use std::time::Duration;

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::ids::RoomId;
use relay::usersig::{self, PrivilegeMap, RoomRef};

/// Whether `hay` contains any `n`-byte window of `needle` (or all of it, if shorter).
fn leaks(hay: &[u8], needle: &[u8], n: usize) -> bool {
    let n = n.min(needle.len());
    needle.windows(n).any(|w| hay.windows(n).any(|h| h == w))
}

#[test]
fn a_captured_join_shows_no_credential_and_replaying_it_achieves_nothing() {
    let Some(net) = Net::xdp(1) else { return };
    let relayd = net.relayd(&two_app_config(30, ""));
    let capture = net.capture();
    let user = "capture-user-7f3a91";
    let pmk = usersig::mint_private_map_key(
        SECRET_A.as_bytes(),
        APP_A,
        user,
        86400,
        unix_now(),
        RoomRef::Num(77),
        PrivilegeMap::ALL,
    );
    let mut cfg = relayd.client_config(APP_A, SECRET_A, user, RoomId::Num(77), Some(0x7700));
    cfg.private_map_key = Some(pmk.clone());
    let sig = cfg.usersig.clone();
    let mut peer = net.peer_with_config(&relayd, cfg);
    let session = peer.join().expect("join");
    peer.send_rtp(0x7700, b"some media");

    let is_join = |p: &[u8]| p.len() > 4 && p[0] == relay::proto::VERSION_2 && p[1] == 1;
    let wire = capture.wait_for("v2 join", is_join);
    let joins: Vec<&Vec<u8>> = wire.iter().filter(|p| is_join(p)).collect();
    for p in &wire {
        assert!(!leaks(p, sig.as_bytes(), 16), "a 16-byte piece of the UserSig is on the wire");
        assert!(!leaks(p, pmk.as_bytes(), 16), "a 16-byte piece of the PrivateMapKey is on the wire");
        assert!(!leaks(p, user.as_bytes(), user.len()), "the user id is on the wire");
    }
    // The room number and the declared SSRC travel encrypted too.
    for p in &joins {
        assert!(!leaks(p, &0x7700u32.to_be_bytes(), 4), "the declared SSRC is visible");
    }

    // Replays of the captured join, from the client's own address and from another one.
    let captured = joins.last().unwrap().to_vec();
    let other = net.client_socket(1);
    other.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    peer.send_raw(&captured);
    other.send_to(&captured, relayd.addr).unwrap();
    let s = relayd.wait_for(5, "two replays counted", |s| s.handshake.get("replayed") == Some(&2));
    assert_eq!(s.sessions, 1, "no session created");
    let mut buf = [0u8; 1500];
    assert!(other.recv(&mut buf).is_err(), "a replay is not answered");
    let rooms = relayd.mgmt(&relay::mgmt::Request::Rooms { sdkappid: None, limit: None });
    let members = &rooms.rooms().unwrap()[0].members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].addr, peer.sock.local_addr().unwrap().to_string(), "the session was not displaced");
    // And the original session still works.
    peer.keepalive();
    let mut got_ack = false;
    peer.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    for _ in 0..25 {
        if let Ok(n) = peer.sock.recv(&mut buf) {
            if peer.client.handle(&mut buf[..n]) == relay::client::Event::KeepaliveAck {
                got_ack = true;
                break;
            }
        }
    }
    assert!(got_ack, "session {session} still answers keepalives");
}
