//! Reloading relayd's config without a restart (SIGHUP and `reload`): apps and quotas change
//! live while a session keeps flowing, an invalid file changes nothing and says why, and
//! settings that need a restart are reported as such.

use std::time::{Duration, Instant};

use edgerelay_tests::*;
use relay::ids::RoomId;
use relay::mgmt::{Answer, RefusalCode, Request, Response};
use relay::proto::ErrorCode;

const APP_C: u32 = 1_400_000_003;
const SECRET_C: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

/// Two apps (A with `members` per room), app C when `with_c`, and `top` at the top level.
fn config(top: &str, members: u32, with_c: bool) -> String {
    let c = if with_c { format!("[[app]]\nsdkappid = {APP_C}\nsecret = \"{SECRET_C}\"\n") } else { String::new() };
    format!(
        r#"{top}
[timeouts]
keepalive_secs = 1
session_secs = 60
[[app]]
sdkappid = {APP_A}
secret = "{SECRET_A}"
[app.quotas]
max_rooms = 10
max_members_per_room = {members}
max_sessions = 40
[[app]]
sdkappid = {APP_B}
secret = "{SECRET_B}"
{c}"#
    )
}

/// Sends `n` packets from `from` (SSRC 1111) and waits until `to` has them all.
fn flows(from: &mut Peer, to: &mut Peer, n: usize, when: &str) {
    for i in 0..n {
        from.send_rtp(1111, &[i as u8; 160]);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got < n {
        got += to.drain(Duration::from_millis(100)).len();
        assert!(Instant::now() < deadline, "{when}: {got} of {n} packets arrived");
    }
    assert_eq!(to.media_errors, 0, "{when}");
}

#[test]
fn sighup_and_reload_apply_apps_and_quotas_live_and_refuse_an_invalid_file() {
    let relayd = Relayd::start(&config("workers = 2", 8, false));
    let room = RoomId::Num(7);
    let mut alice = Peer::new(&relayd, APP_A, SECRET_A, "alice", room.clone(), Some(1111));
    let mut bob = Peer::new(&relayd, APP_A, SECRET_A, "bob", room.clone(), None);
    alice.join().expect("alice joins");
    bob.join().expect("bob joins");
    flows(&mut alice, &mut bob, 20, "before the reload");
    let mut c1 = Peer::new(&relayd, APP_C, SECRET_C, "c1", RoomId::Num(1), None);
    assert!(matches!(c1.join(), Err((Some(ErrorCode::UnknownApp), _))), "app C is not configured yet");

    // A new app, a lower member quota, and a worker count (which needs a restart); SIGHUP.
    relayd.rewrite_config(&config("workers = 3", 2, true));
    let from = relayd.log().len();
    relay::io::sys::hangup(relayd.pid()).expect("SIGHUP relayd");
    let line = relayd.wait_log_line(from, 5, &["config reloaded (SIGHUP)"]);
    assert!(line.contains("\"app\"") && line.contains("\"workers\""), "{line}");
    let mut carol = Peer::new(&relayd, APP_A, SECRET_A, "carol", room.clone(), None);
    assert!(
        matches!(carol.join(), Err((Some(ErrorCode::MemberQuota), _))),
        "the new quota (2 per room) applies to new joins"
    );
    let mut c1 = Peer::new(&relayd, APP_C, SECRET_C, "c1", RoomId::Num(1), None);
    c1.join().expect("app C serves joins after the reload");
    flows(&mut alice, &mut bob, 20, "after the reload");
    assert_eq!(relayd.stats().worker_lag_ms.len(), 2, "workers need a restart: still 2");
    assert_eq!(relayd.stats().sessions, 3);

    // An invalid file: SIGHUP changes nothing and the log says why.
    relayd.rewrite_config(&config("workers = 2", 1, false));
    let from = relayd.log().len();
    relay::io::sys::hangup(relayd.pid()).expect("SIGHUP relayd");
    let line = relayd.wait_log_line(from, 5, &["config reload (SIGHUP) refused"]);
    assert!(line.contains("max_members_per_room"), "the log names the reason: {line}");
    let mut c2 = Peer::new(&relayd, APP_C, SECRET_C, "c2", RoomId::Num(1), None);
    c2.join().expect("app C is still configured: the invalid file changed nothing");
    assert!(matches!(carol.join(), Err((Some(ErrorCode::MemberQuota), _))), "the quota is still 2");
    // `reload` answers the same error.
    match relayd.mgmt(&Request::Reload {}) {
        Response::Refused(r) => {
            assert_eq!(r.code, RefusalCode::Invalid);
            assert!(r.message.contains("max_members_per_room"), "{}", r.message);
        }
        other => panic!("an invalid file is refused: {other:?}"),
    }
    flows(&mut alice, &mut bob, 20, "after the refused reload");

    // `reload` reports what it applied and what needs a restart; the log level changes live.
    assert!(relayd.log().contains("join accepted"), "info lines are logged before the change");
    relayd.rewrite_config(&config("workers = 3\nlog_level = \"relay=warn\"", 3, true));
    let report = match relayd.mgmt(&Request::Reload {}) {
        Response::Ok(Answer::Reloaded(r)) => r,
        other => panic!("reload answers what it did: {other:?}"),
    };
    assert_eq!(report.applied, ["app", "log_level"], "{report:?}");
    assert_eq!(report.needs_restart, ["workers"], "{report:?}");
    assert_eq!(report.sessions_ended, 0);
    let from = relayd.log().len();
    carol.join().expect("a third member fits the new quota of 3");
    let later = relayd.log()[from..].to_owned();
    assert!(!later.contains("join accepted"), "log_level relay=warn is in force: {later}");
    flows(&mut alice, &mut bob, 20, "after the second reload");

    // Removing an app ends its sessions and says how many.
    relayd.rewrite_config(&config("workers = 3\nlog_level = \"relay=warn\"", 3, false));
    let report = relayd.mgmt(&Request::Reload {});
    let Response::Ok(Answer::Reloaded(report)) = report else { panic!("{report:?}") };
    assert_eq!((report.applied.as_slice(), report.sessions_ended), (&["app".to_owned()][..], 2), "{report:?}");
    flows(&mut alice, &mut bob, 20, "app A's session outlives app C's removal");
}

#[test]
fn relayd_ctl_reload_prints_the_report_and_the_error() {
    let relayd = Relayd::start(&config("workers = 1", 8, false));
    let ctl = || {
        let mut c = std::process::Command::new(bin("relayd"));
        c.args(["ctl", "--socket"]).arg(&relayd.stats_socket).arg("reload");
        c.output().expect("run relayd ctl reload")
    };
    relayd.rewrite_config(&config("workers = 1", 4, true));
    let out = ctl();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("reloaded: applied app"), "{text}");
    relayd.rewrite_config(&config("workers = 0", 4, true));
    let out = ctl();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("invalid config") && err.contains("workers = 0"), "{err}");
    // `--config` finds the socket in the file.
    relayd.rewrite_config(&config("workers = 1", 4, true));
    let out = std::process::Command::new(bin("relayd"))
        .args(["ctl", "--config"])
        .arg(&relayd.config)
        .arg("reload")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("reloaded: applied nothing"), "{text}");
}
