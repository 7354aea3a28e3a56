//! The relay-core scenarios against a real `relayd` process, each run twice: on loopback
//! with the socket backend, and in network namespaces with the XDP backend (`xdp_*`,
//! root only; skipped on a laptop, required under CI).

use std::collections::BTreeMap;
use std::time::Duration;

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::client::ClientConfig;
use relay::ids::{RoomId, Ssrc};
use relay::proto::{DeclaredSsrc, ErrorCode, StreamKind};
use relay::srtp::Profile;
use relay::stats::DropReason;
use relay::usersig::{self, PrivilegeMap, RoomRef};

const QUIET: Duration = Duration::from_millis(300);

fn two_apps_three_rooms_four_members_each_receive_exactly_their_room(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut peers = Vec::new();
    for (app, secret) in [(APP_A, SECRET_A), (APP_B, SECRET_B)] {
        // Both apps use the same room numbers: isolation is per (SdkAppId, RoomId).
        for room in 1..=3u32 {
            for m in 0..4u32 {
                let ssrc = app % 1000 * 100_000 + room * 100 + m + 1;
                let user = format!("u{room}-{m}");
                let mut p = net.peer(&relayd, app, secret, &user, RoomId::Num(room), Some(ssrc));
                p.join().expect("join");
                peers.push((app, room, ssrc, p));
            }
        }
    }
    let s = relayd.wait_for(5, "24 sessions", |s| s.sessions == 24);
    assert_eq!(s.rooms, 6);
    const N: usize = 20;
    for i in 0..N {
        for (_, _, ssrc, p) in peers.iter_mut() {
            p.send_rtp(*ssrc, format!("pkt {i} from {ssrc}").as_bytes());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for (app, room, ssrc, p) in peers.iter_mut() {
        let got = p.drain(QUIET);
        let mut by_ssrc: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for r in &got {
            let text = String::from_utf8_lossy(&r.packet[12..]).to_string();
            assert!(text.ends_with(&format!("from {}", r.ssrc)), "payload intact: {text}");
            by_ssrc.entry(r.ssrc).or_default().push(r.index);
        }
        let expected: Vec<u32> =
            (0..4u32).map(|m| *app % 1000 * 100_000 + *room * 100 + m + 1).filter(|s| s != ssrc).collect();
        assert_eq!(
            by_ssrc.keys().copied().collect::<Vec<_>>(),
            expected,
            "app {app} room {room}: only own room's senders"
        );
        for (from, idx) in &by_ssrc {
            let mut dedup = idx.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(idx.len(), N, "{ssrc} got {} packets from {from}", idx.len());
            assert_eq!(dedup.len(), N, "no duplicates");
        }
        assert_eq!(p.media_errors, 0, "every forwarded packet decrypts with the receiver's own keys");
    }
    let s = relayd.stats();
    assert_eq!(s.media_accepted, 24 * N as u64);
    assert_eq!(s.drop_count(DropReason::AuthFailed), 0);
    assert!(relayd.terminate(), "relayd exits cleanly on SIGTERM");
}

fn refusal(p: &mut Peer) -> ErrorCode {
    match p.join() {
        Ok(_) => panic!("join was accepted"),
        Err((code, detail)) => {
            assert!(!detail.is_empty());
            code.expect("known code")
        }
    }
}

fn cfg_with(
    relayd: &Relayd,
    usersig: String,
    pmk: Option<String>,
    app: u32,
    room: RoomId,
    ssrcs: Vec<DeclaredSsrc>,
) -> ClientConfig {
    ClientConfig {
        sdkappid: app,
        room,
        usersig,
        private_map_key: pmk,
        profile: Profile::AesCm128HmacSha1_80,
        ssrcs,
        nodes: vec![relay::client::Node::new(relayd.addr, Some(relayd.key))],
        failover_after_ms: None,
    }
}

fn bad_credentials_are_refused_with_the_right_code(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let now = unix_now();
    let room = RoomId::Num(7);
    let video = vec![DeclaredSsrc { ssrc: Ssrc::new(77).unwrap(), kind: StreamKind::Video }];

    let expired = usersig::mint(SECRET_A.as_bytes(), APP_A.into(), "old", 60, now - 3600, None);
    let mut p = net.peer_with_config(&relayd, cfg_with(&relayd, expired, None, APP_A, room.clone(), video.clone()));
    assert_eq!(refusal(&mut p), ErrorCode::Expired);

    let forged = usersig::mint(b"not-the-app-secret-at-all-000000", APP_A.into(), "mallory", 86400, now, None);
    let mut p = net.peer_with_config(&relayd, cfg_with(&relayd, forged, None, APP_A, room.clone(), video.clone()));
    assert_eq!(refusal(&mut p), ErrorCode::BadSignature);

    // A valid UserSig of app B presented to app A.
    let wrong_app = usersig(SECRET_B, APP_B, "bob");
    let mut p = net.peer_with_config(&relayd, cfg_with(&relayd, wrong_app, None, APP_A, room.clone(), video.clone()));
    assert_eq!(refusal(&mut p), ErrorCode::WrongApp);

    // A PrivateMapKey for room 8 used to enter room 7.
    let pmk = usersig::mint_private_map_key(
        SECRET_A.as_bytes(),
        APP_A,
        "carol",
        86400,
        now,
        RoomRef::Num(8),
        PrivilegeMap::ALL,
    );
    let mut p = net.peer_with_config(
        &relayd,
        cfg_with(&relayd, usersig(SECRET_A, APP_A, "carol"), Some(pmk), APP_A, room.clone(), video.clone()),
    );
    assert_eq!(refusal(&mut p), ErrorCode::WrongRoom);

    let mut p = net.peer_with_config(
        &relayd,
        cfg_with(&relayd, usersig(SECRET_A, 1_400_000_999, "dave"), None, 1_400_000_999, room.clone(), video.clone()),
    );
    assert_eq!(refusal(&mut p), ErrorCode::UnknownApp);

    // Malformed: a truncated join is counted and never answered (it may come from a
    // spoofed source). The next datagram on the same socket is a valid join: its answer,
    // sent through the same worker after anything the malformed one caused, is the first
    // thing to arrive.
    let probe = net.client_socket(0);
    probe.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for junk in [&[1u8, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], &[2, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]] {
        probe.send_to(junk, relayd.addr).unwrap();
    }
    let mut p = Peer::with_socket(
        probe,
        relayd.addr,
        cfg_with(&relayd, usersig(SECRET_A, APP_A, "erin"), None, APP_A, room.clone(), vec![]),
    );
    p.join().expect("the valid join after the junk is answered first");
    let mut p_leave = [0u8; 64];
    let n = p.client.leave(&mut p_leave).unwrap();
    p.send_raw(&p_leave[..n]);
    relayd.wait_for(3, "erin left", |s| s.sessions == 0);

    let s = relayd.stats();
    for code in ["expired", "bad_signature", "wrong_app", "wrong_room", "unknown_app"] {
        assert_eq!(s.joins.get(code), Some(&1), "joins[{code}] in {:?}", s.joins);
    }
    assert_eq!(s.joins.get("malformed"), Some(&2), "joins[malformed] in {:?}", s.joins);
    assert_eq!(s.sessions, 0);
}

fn receive_only_private_map_key_cannot_publish(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let now = unix_now();
    let room = RoomId::Str("webinar".into());
    let recv_only = PrivilegeMap(PrivilegeMap::ENTER.0 | PrivilegeMap::RECV_AUDIO.0 | PrivilegeMap::RECV_VIDEO.0);
    let pmk = || {
        usersig::mint_private_map_key(
            SECRET_A.as_bytes(),
            APP_A,
            "viewer",
            86400,
            now,
            RoomRef::Str("webinar"),
            recv_only,
        )
    };
    // The host creates the room and publishes.
    let mut host = net.peer(&relayd, APP_A, SECRET_A, "host", room.clone(), Some(1));
    host.join().unwrap();
    // The viewer may not declare a stream to publish.
    let video = vec![DeclaredSsrc { ssrc: Ssrc::new(2).unwrap(), kind: StreamKind::Video }];
    let mut v = net.peer_with_config(
        &relayd,
        cfg_with(&relayd, usersig(SECRET_A, APP_A, "viewer"), Some(pmk()), APP_A, room.clone(), video),
    );
    assert_eq!(refusal(&mut v), ErrorCode::NoPrivilege);
    // Without streams it joins and receives.
    let mut v = net.peer_with_config(
        &relayd,
        cfg_with(&relayd, usersig(SECRET_A, APP_A, "viewer"), Some(pmk()), APP_A, room.clone(), vec![]),
    );
    v.join().unwrap();
    host.send_rtp(1, b"hello viewers");
    let got = v.drain(QUIET);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].packet[12..], b"hello viewers");
    // Media it sends anyway, from any SSRC, is dropped and counted.
    let before = relayd.stats().drop_count(DropReason::UnknownSsrc);
    let mut raw = host.send_rtp(1, b"x"); // a valid packet of host's, replayed from the viewer's address
    raw[8..12].copy_from_slice(&2u32.to_be_bytes());
    v.send_raw(&raw);
    relayd.wait_for(3, "unknown_ssrc drop", |s| s.drop_count(DropReason::UnknownSsrc) == before + 1);
    assert!(host.drain(QUIET).is_empty(), "nothing reached the host from the viewer");
    // And the viewer does not get a room of its own without the create bit.
    let pmk_other = usersig::mint_private_map_key(
        SECRET_A.as_bytes(),
        APP_A,
        "viewer",
        86400,
        now,
        RoomRef::Str("empty"),
        recv_only,
    );
    let mut v2 = net.peer_with_config(
        &relayd,
        cfg_with(
            &relayd,
            usersig(SECRET_A, APP_A, "viewer"),
            Some(pmk_other),
            APP_A,
            RoomId::Str("empty".into()),
            vec![],
        ),
    );
    assert_eq!(refusal(&mut v2), ErrorCode::NoPrivilege);
}

fn replayed_and_tampered_packets_are_dropped_and_counted(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(1), Some(10));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "bob", RoomId::Num(1), Some(20));
    a.join().unwrap();
    b.join().unwrap();
    let pkt = a.send_rtp(10, b"original");
    assert_eq!(b.drain(QUIET).len(), 1);
    a.send_raw(&pkt);
    a.send_raw(&pkt);
    let mut tampered = a.send_rtp(10, b"second").to_vec();
    assert_eq!(b.drain(QUIET).len(), 1);
    let last = tampered.len() - 11;
    tampered[last] ^= 1; // a payload bit of a fresh-looking packet
    tampered[3] = tampered[3].wrapping_add(1); // and a new sequence number, so it is not a replay
    a.send_raw(&tampered);
    let s = relayd.wait_for(3, "replay and tamper drops", |s| {
        s.drop_count(DropReason::Replayed) == 2 && s.drop_count(DropReason::AuthFailed) == 1
    });
    assert_eq!(s.media_accepted, 2);
    assert!(b.drain(QUIET).is_empty());
    assert_eq!(b.media_errors, 0);
}

fn room_disappears_after_last_member_leaves(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(5), Some(1));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "bob", RoomId::Num(5), Some(2));
    a.join().unwrap();
    b.join().unwrap();
    relayd.wait_for(3, "one room, two sessions", |s| s.rooms == 1 && s.sessions == 2);
    a.leave();
    relayd.wait_for(3, "one session left", |s| s.rooms == 1 && s.sessions == 1);
    b.leave();
    relayd.wait_for(3, "room destroyed", |s| s.rooms == 0 && s.sessions == 0);
    // After the room is gone, its sessions' packets are unknown: with XDP the kernel drops
    // them and userspace never sees them. (Workers apply the removal between batches.)
    std::thread::sleep(Duration::from_millis(100));
    a.send_raw(&[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    if net.is_xdp() {
        let s = relayd.wait_for(3, "kernel unknown_session drop", |s| s.xdp.get("unknown_session") >= Some(&1));
        assert_eq!(s.drop_count(DropReason::UnknownSession), 0);
    } else {
        relayd.wait_for(3, "unknown_session drop", |s| s.drop_count(DropReason::UnknownSession) >= 1);
    }
}

fn silent_sessions_expire_and_keepalives_hold_them(net: &Net) {
    let relayd = net.relayd(&two_app_config(2, ""));
    let mut quiet = net.peer(&relayd, APP_A, SECRET_A, "quiet", RoomId::Num(3), Some(1));
    let mut chatty = net.peer(&relayd, APP_A, SECRET_A, "chatty", RoomId::Num(3), Some(2));
    quiet.join().unwrap();
    chatty.join().unwrap();
    relayd.wait_for(3, "two sessions", |s| s.sessions == 2);
    for _ in 0..8 {
        chatty.keepalive();
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = relayd.stats();
    assert_eq!(s.sessions, 1, "the silent session expired after 2 s, the one sending keepalives did not");
    assert_eq!(s.rooms, 1);
}

fn nat_rebinding_rejoin_moves_the_session(net: &Net) {
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(9), Some(100));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "bob", RoomId::Num(9), Some(200));
    a.join().unwrap();
    b.join().unwrap();
    a.send_rtp(100, b"before");
    assert_eq!(b.drain(QUIET).len(), 1);
    // Alice's NAT rebinds: same credentials, new source address and port. She re-joins with
    // a fresh SSRC.
    let mut a2 = net.peer(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(9), Some(101));
    a2.sock = net.client_socket(1);
    a2.join().unwrap();
    let s = relayd.wait_for(3, "session replaced", |s| s.sessions == 2);
    assert_eq!(s.rooms, 1);
    a2.send_rtp(101, b"after");
    let got = b.drain(QUIET);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].packet[12..], b"after");
    b.send_rtp(200, b"to the new address");
    assert_eq!(a2.drain(QUIET).len(), 1);
    assert!(a.drain(QUIET).is_empty(), "the old address gets nothing");
    // Re-declaring the old SSRC is refused: it was used in this room.
    let mut a3 = net.peer(&relayd, APP_A, SECRET_A, "alice", RoomId::Num(9), Some(100));
    assert_eq!(refusal(&mut a3), ErrorCode::SsrcConflict);
}

fn operator_dismisses_rooms_and_removes_users(net: &Net) {
    use relay::mgmt::{request, Request};
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(4), Some(1));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "b", RoomId::Num(4), Some(2));
    let mut c = net.peer(&relayd, APP_A, SECRET_A, "c", RoomId::Str("other".into()), Some(3));
    let mut d = net.peer(&relayd, APP_A, SECRET_A, "d", RoomId::Str("other".into()), None);
    for p in [&mut a, &mut b, &mut c, &mut d] {
        p.join().unwrap();
    }
    relayd.wait_for(3, "four sessions", |s| s.sessions == 4);
    let r = request(
        &relayd.stats_socket,
        &Request::RemoveUser { sdkappid: APP_A.into(), room: "4".into(), user: "b".into(), ban_secs: 0 },
    )
    .unwrap();
    assert_eq!((r.is_ok(), r.removed()), (true, Some(1)));
    // Workers apply removals between batches: give them a moment (the answer comes from
    // the registry, which is already updated).
    std::thread::sleep(Duration::from_millis(100));
    a.send_rtp(1, b"b is gone");
    assert!(b.drain(QUIET).is_empty(), "a removed user receives nothing");
    let r = request(&relayd.stats_socket, &Request::DismissRoom { sdkappid: APP_A.into(), room: "s:other".into() })
        .unwrap();
    assert_eq!((r.is_ok(), r.removed()), (true, Some(2)));
    std::thread::sleep(Duration::from_millis(100));
    c.send_rtp(3, b"dismissed");
    assert!(d.drain(QUIET).is_empty(), "a dismissed room relays nothing");
    let s = relayd.wait_for(3, "one session left", |s| s.sessions == 1 && s.rooms == 1);
    assert_eq!(s.joins.get("ok"), Some(&4));
    // Bad requests get a clear error, not a crash.
    let r = request(&relayd.stats_socket, &Request::DismissRoom { sdkappid: 0, room: "4".into() }).unwrap();
    assert!(!r.is_ok() && r.error().unwrap().contains("sdkappid 0"));
    let r = request(
        &relayd.stats_socket,
        &Request::Block { ip: "198.19.0.0".parse().unwrap(), prefix_len: 24, ttl_secs: 60 },
    )
    .unwrap();
    assert_eq!(r.is_ok(), net.is_xdp(), "blocking needs the XDP backend: {r:?}");
}

fn pushed_app_changes_keep_live_sessions(net: &Net) {
    use relay::mgmt::{request, AppSpec, Request};
    const NEW_SECRET: &str = "rotated-secret-0123456789abcdef";
    let relayd = net.relayd(&two_app_config(30, ""));
    let mut a = net.peer(&relayd, APP_A, SECRET_A, "a", RoomId::Num(6), Some(61));
    let mut b = net.peer(&relayd, APP_A, SECRET_A, "b", RoomId::Num(6), None);
    let mut other = net.peer(&relayd, APP_B, SECRET_B, "x", RoomId::Num(6), None);
    for p in [&mut a, &mut b, &mut other] {
        p.join().unwrap();
    }
    let spec = |secrets: &[&str]| AppSpec {
        sdkappid: APP_A.into(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        require_private_map_key: false,
        allow_v1_joins: false,
        profiles: None,
        quotas: Default::default(),
    };
    let app_b = AppSpec { sdkappid: APP_B.into(), secrets: vec![SECRET_B.into()], ..spec(&[]) };
    let push = |apps: Vec<AppSpec>| request(&relayd.stats_socket, &Request::SetApps { apps }).unwrap();
    // Rotation with overlap: both secrets admit joins.
    let r = push(vec![spec(&[NEW_SECRET, SECRET_A]), app_b.clone()]);
    assert_eq!((r.is_ok(), r.removed()), (true, Some(0)), "{r:?}");
    net.peer(&relayd, APP_A, SECRET_A, "c", RoomId::Num(7), None).join().unwrap();
    net.peer(&relayd, APP_A, NEW_SECRET, "d", RoomId::Num(7), None).join().unwrap();
    // Overlap over: the old secret is refused, live sessions carry on.
    assert!(push(vec![spec(&[NEW_SECRET]), app_b.clone()]).is_ok());
    let mut late = net.peer(&relayd, APP_A, SECRET_A, "e", RoomId::Num(7), None);
    assert_eq!(late.join().unwrap_err().0, Some(ErrorCode::BadSignature));
    a.send_rtp(61, b"still here");
    assert_eq!(b.drain(QUIET).len(), 1, "a rotation keeps live sessions");
    // A bad push changes nothing.
    let r = push(vec![spec(&["short"])]);
    assert!(!r.is_ok() && r.error().unwrap().contains("at least 16"));
    assert_eq!(relayd.stats().sessions, 5);
    // Removing app B ends its sessions only.
    let r = push(vec![spec(&[NEW_SECRET])]);
    assert_eq!((r.is_ok(), r.removed()), (true, Some(1)));
    let s = relayd.wait_for(3, "app B's session gone", |s| s.sessions == 4);
    assert_eq!(s.rooms, 2);
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

on_both_backends!(
    operator_dismisses_rooms_and_removes_users,
    pushed_app_changes_keep_live_sessions,
    two_apps_three_rooms_four_members_each_receive_exactly_their_room,
    bad_credentials_are_refused_with_the_right_code,
    receive_only_private_map_key_cannot_publish,
    replayed_and_tampered_packets_are_dropped_and_counted,
    room_disappears_after_last_member_leaves,
    silent_sessions_expire_and_keepalives_hold_them,
    nat_rebinding_rejoin_moves_the_session
);

#[test]
fn xdp_backend_ipv6() {
    if let Some(n) = Net::xdp_v6() {
        two_apps_three_rooms_four_members_each_receive_exactly_their_room(&n);
        nat_rebinding_rejoin_moves_the_session(&n);
    }
}

#[test]
fn xdp_backend_two_queues_two_workers() {
    if let Some(n) = Net::xdp(2) {
        two_apps_three_rooms_four_members_each_receive_exactly_their_room(&n);
    }
}
