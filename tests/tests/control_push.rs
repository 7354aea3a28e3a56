//! relay-control pushing to a real relayd (socket backend on loopback): an app created
//! through the API serves joins with UserSigs minted through the API; a secret rotation
//! keeps live sessions and refuses the old secret for new joins; dismissing a room through
//! the REST route and the Tencent action ends its sessions.
//!
//! Run `cargo build --workspace --bins` first.

use std::time::{Duration, Instant};

use edgerelay_tests::control::{Call, ControlDaemon};
use edgerelay_tests::{two_app_config, unix_now, Peer, Relayd};
use relay::ids::RoomId;
use relay::proto::ErrorCode;
use serde_json::{json, Value};

const APP: u32 = 1_400_000_500;

fn peer(relayd: &Relayd, usersig: &str, room: u32, ssrc: Option<u32>) -> Peer {
    // A config for this relay, with the API-minted UserSig instead of a local one.
    let mut cfg = relayd.client_config(APP, "unused-secret-unused", "unused", RoomId::num(room.into()).unwrap(), ssrc);
    cfg.usersig = usersig.to_owned();
    Peer::with_config(relayd.addr, cfg)
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn delivered(tx: &mut Peer, rx: &mut Peer, n: usize) -> usize {
    for i in 0..n {
        tx.send_rtp(1111, format!("frame {i}").as_bytes());
    }
    rx.drain(Duration::from_millis(300)).len()
}

#[test]
fn apps_usersigs_rotation_and_dismiss_through_the_api() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let d = ControlDaemon::start(&format!(
        "relayd_socket = \"{}\"\n[rate_limits]\nper_key_per_sec = 200\nper_key_burst = 200\n",
        relayd.stats_socket.display()
    ));
    let c = d.admin_client();
    wait_until(10, "relayd link up", || c.get_ok("/v1/node")["relayd"]["reachable"] == true);
    assert_eq!(c.get_ok("/v1/node/health")["status"], "ok");
    // Node status shows relayd's key and where it listens.
    let node = c.get_ok("/v1/node");
    assert_eq!(node["relayd"]["key"]["public_key"], relayd.key.to_string(), "{node}");
    assert_eq!(node["relayd"]["key"]["listen"], relayd.addr.to_string());

    let created =
        c.call("POST", "/v1/apps", &json!({"sdkappid": APP, "quotas": {"max_rooms": 5, "max_members_per_room": 5}}));
    assert_eq!(created.status, 201);
    let old_secret = created.json()["secret"].as_str().unwrap().to_owned();
    let mint = |user: &str| {
        let r = c.call("POST", &format!("/v1/apps/{APP}/usersig"), &json!({"user_id": user, "expire_secs": 3600}));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        // Beside the token: where to join, and the key to join to (what a back end hands out).
        let relays = &r.json()["relays"];
        assert_eq!(relays[0]["endpoint"], relayd.addr.to_string(), "{relays}");
        assert_eq!(relays[0]["public_key"], relayd.key.to_string());
        r.json()["usersig"].as_str().unwrap().to_owned()
    };

    // The push is asynchronous: the first join may race it. The probe declares no SSRC: its
    // leave may reach relayd after alice's join (another worker), which must not collide.
    let alice_sig = mint("alice");
    let mut alice = peer(&relayd, &alice_sig, 42, Some(1111));
    wait_until(5, "app pushed to relayd", || {
        let mut probe = peer(&relayd, &alice_sig, 42, None);
        probe.join().is_ok_and(|_| {
            probe.leave();
            true
        })
    });
    alice.join().expect("alice joins with an API-minted UserSig");
    let mut bob = peer(&relayd, &mint("bob"), 42, None);
    bob.join().expect("bob joins");
    assert!(delivered(&mut alice, &mut bob, 5) >= 4);

    let rooms = c.get_ok(&format!("/v1/rooms?sdkappid={APP}"));
    let room = &rooms["rooms"][0];
    assert_eq!((room["sdkappid"].as_u64(), room["room"].as_str()), (Some(u64::from(APP)), Some("42")), "{rooms}");
    let mut users: Vec<&str> =
        room["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);

    // Rotate with no overlap: live sessions go on, the old secret no longer admits anyone.
    let rotated = c.call("POST", &format!("/v1/apps/{APP}/rotate-secret"), &json!({"overlap_secs": 0}));
    assert_eq!(rotated.status, 200);
    assert_ne!(rotated.json()["secret"].as_str().unwrap(), old_secret);
    let stale = relay::usersig::mint(old_secret.as_bytes(), APP.into(), "carol", 3600, unix_now(), None);
    wait_until(5, "rotation pushed", || {
        matches!(peer(&relayd, &stale, 42, None).join(), Err((Some(ErrorCode::BadSignature), _)))
    });
    alice.keepalive();
    bob.keepalive();
    assert!(delivered(&mut alice, &mut bob, 5) >= 4, "live session ended by the rotation");
    let mut carol = peer(&relayd, &mint("carol"), 42, None);
    carol.join().expect("a UserSig from the new secret admits");

    // RemoveUser with a ban: the same UserSig cannot rejoin the room, and the TRTC action
    // takes BanSeconds too.
    let carol_sig = mint("carol-banned");
    let mut cb = peer(&relayd, &carol_sig, 42, None);
    cb.join().expect("joins before the ban");
    let r = c.call("DELETE", &format!("/v1/apps/{APP}/rooms/42/users/carol-banned?ban_secs=600"), &Value::Null);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    relayd.wait_for(5, "carol-banned removed", |s| s.sessions == 3);
    let again = peer(&relayd, &carol_sig, 42, None).join();
    assert!(matches!(again, Err((Some(ErrorCode::Banned), _))), "{again:?}");
    let mut call =
        Call::json("POST", "/", &json!({"SdkAppId": APP, "RoomId": 42, "UserIds": ["bob"], "BanSeconds": 600}));
    call.headers = vec![("X-TC-Action".into(), "RemoveUser".into()), ("X-TC-Version".into(), "2019-07-22".into())];
    assert_eq!(c.send(&call).response.status, 200);
    let bob_again = peer(&relayd, &mint("bob"), 42, None).join();
    assert!(matches!(bob_again, Err((Some(ErrorCode::Banned), _))), "{bob_again:?}");
    // bob's session ended: rejoin him (unbanned elsewhere) for the rest of the test.
    relayd.wait_for(5, "bob removed", |s| s.sessions == 2);
    let bad = c.call("DELETE", &format!("/v1/apps/{APP}/rooms/42/users/x?ban_secs=99999999"), &Value::Null);
    assert_eq!(bad.status, 400, "a ban beyond 30 days is refused");

    // Dismiss through REST: every session of the room ends.
    let before = relayd.stats().sessions;
    assert_eq!(before, 2);
    let r = c.call("DELETE", &format!("/v1/apps/{APP}/rooms/42"), &Value::Null);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    relayd.wait_for(5, "room dismissed", |s| s.sessions == 0);
    assert_eq!(delivered(&mut alice, &mut carol, 3), 0);
    let r = c.call("DELETE", &format!("/v1/apps/{APP}/rooms/42"), &Value::Null);
    assert_eq!(r.status, 404);

    // Dismiss through the Tencent action.
    let mut dave = peer(&relayd, &mint("dave"), 43, None);
    dave.join().expect("dave joins");
    let mut call = Call::json("POST", "/", &json!({"SdkAppId": APP, "RoomId": 43}));
    call.headers = vec![("X-TC-Action".into(), "DismissRoom".into()), ("X-TC-Version".into(), "2019-07-22".into())];
    let r = c.send(&call).response;
    let j = r.json();
    assert_eq!(r.status, 200);
    assert_eq!(j, json!({"Response": {"RequestId": r.header("x-request-id").unwrap()}}));
    relayd.wait_for(5, "room 43 dismissed", |s| s.sessions == 0);

    // v1 joins: refused until the app opens a migration window through the API.
    let v1 = |user: &str| {
        let mut p = peer(&relayd, &mint(user), 45, None);
        let mut cfg = p.client.config().clone();
        cfg.nodes[0].key = None;
        p.client = relay::client::Client::new(cfg).unwrap();
        p.join()
    };
    assert!(matches!(v1("v1-early"), Err((Some(ErrorCode::V1NotAllowed), _))));
    let r = c.call("PATCH", &format!("/v1/apps/{APP}"), &json!({"allow_v1_joins": true}));
    assert_eq!((r.status, r.json()["allow_v1_joins"].as_bool()), (200, Some(true)));
    wait_until(5, "the v1 window pushed", || v1("v1-late").is_ok());
    assert!(relayd.stats().handshake.get("v1_joins").is_some_and(|&n| n >= 2), "v1 joins are counted");

    // Deleting the app removes it from relayd.
    assert_eq!(c.call("DELETE", &format!("/v1/apps/{APP}"), &Value::Null).status, 204);
    let fresh = mint_local_after_delete(&rotated.json()["secret"]);
    wait_until(5, "app removal pushed", || {
        matches!(peer(&relayd, &fresh, 44, None).join(), Err((Some(ErrorCode::UnknownApp), _)))
    });
}

fn mint_local_after_delete(secret: &Value) -> String {
    relay::usersig::mint(secret.as_str().unwrap().as_bytes(), APP.into(), "erin", 3600, unix_now(), None)
}

#[test]
fn changes_made_while_relayd_is_down_reach_it_on_reconnect() {
    let dir = edgerelay_tests::TempDir::new("control-push").expect("create a temp dir");
    let socket = dir.join("not-yet.sock");
    let d = ControlDaemon::start(&format!(
        "relayd_socket = \"{}\"\n[rate_limits]\nper_key_per_sec = 200\nper_key_burst = 200\n",
        socket.display()
    ));
    let c = d.admin_client();
    assert_eq!(c.get_ok("/v1/node")["relayd"]["reachable"], false);
    assert_eq!(c.get_ok("/v1/node/health")["status"], "degraded");
    // Commits while relayd is unreachable.
    let created = c.call("POST", "/v1/apps", &json!({"sdkappid": APP}));
    assert_eq!(created.status, 201);
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let r = c.call("DELETE", &format!("/v1/apps/{APP}/rooms/1"), &Value::Null);
    assert_eq!((r.status, r.code().as_str()), (503, "ResourceUnavailable.Relayd"));
    // relayd comes up at the configured socket path: the link connects and syncs.
    let relayd = Relayd::start(&two_app_config(30, ""));
    std::os::unix::fs::symlink(&relayd.stats_socket, &socket).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get_ok("/v1/node")["relayd"]["reachable"] != true {
        assert!(Instant::now() < deadline, "link never came up: {}\n{}", c.get_ok("/v1/node/health"), d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let sig = relay::usersig::mint(secret.as_bytes(), APP.into(), "frank", 3600, unix_now(), None);
    peer(&relayd, &sig, 7, None).join().expect("the app created while relayd was down serves joins");
}
