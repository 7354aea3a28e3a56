//! Clients fail over along their node list: two relayd processes on loopback, the first
//! killed with SIGKILL under a running publisher and receiver (`relay-client run`).

use std::process::{Command, Stdio};

use edgerelay_tests::*;

#[test]
fn relay_client_fails_over_to_the_second_relay_when_the_first_is_killed() {
    let mut first = Relayd::start(&two_app_config(5, ""));
    let second = Relayd::start(&two_app_config(5, ""));
    let relays = [format!("{}={}", first.addr, first.key), format!("{}={}", second.addr, second.key)];
    let client = |user: &str| {
        let mut c = Command::new(bin("relay-client"));
        c.args(["run", "--relay", &relays[0], "--relay", &relays[1], "--sdkappid", &APP_A.to_string()])
            .args(["--secret", SECRET_A, "--user", user, "--room", "s:failover", "--json", "--duration", "6"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let recv = client("bob").arg("--recv-only").spawn().unwrap();
    let send = client("alice").args(["--ssrc", "4242", "--send-pps", "100"]).spawn().unwrap();
    first.wait_for(5, "both clients joined the first relay", |s| s.sessions == 2);
    first.kill();
    let (send, recv) = (send.wait_with_output().unwrap(), recv.wait_with_output().unwrap());
    assert!(send.status.success(), "{}", String::from_utf8_lossy(&send.stderr));
    assert!(recv.status.success(), "{}", String::from_utf8_lossy(&recv.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&send.stdout).unwrap();
    let got: serde_json::Value = serde_json::from_slice(&recv.stdout).unwrap();
    for r in [&sent, &got] {
        assert_eq!(r["relay"], second.addr.to_string(), "{r}");
        assert_eq!(r["failover_count"], 1, "{r}");
        let f = &r["failovers"][0];
        assert_eq!((&f["from"], &f["to"]), (&first.addr.to_string().into(), &second.addr.to_string().into()));
        assert!(f["joined_ms"].as_u64().unwrap() - f["lost_ms"].as_u64().unwrap() < 500, "{r}");
        assert_eq!(r["lost_unknown_session"], 0, "{r}");
    }
    eprintln!("publisher {}; receiver {}", sent["failovers"], got["failovers"]);
    // The publisher joined the second relay with a fresh SSRC, and the receiver got it there.
    let ssrcs = sent["sent_ssrcs"].as_array().unwrap();
    assert_eq!(ssrcs.len(), 2, "{sent}");
    assert_eq!(ssrcs[0], 4242);
    let fresh = &got["streams"][ssrcs[1].to_string()];
    assert!(fresh["received"].as_u64().unwrap() > 100, "{got}");
    assert_eq!(fresh["duplicates"], 0);
    assert_eq!(got["auth_failures"], 0);
    assert_eq!(got["replays"], 0);
}
