//! The command-line tools as a user runs them.

use std::process::Command;

use edgerelay_tests::*;

#[test]
fn relay_client_streams_and_reports_loss_and_auth_failures() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let common = |user: &str| {
        let mut c = Command::new(bin("relay-client"));
        c.args(["run", "--relay", &relayd.addr.to_string(), "--sdkappid", &APP_A.to_string()])
            .args(["--relay-key", &relayd.key.to_string()])
            .args(["--secret", SECRET_A, "--user", user, "--room", "s:cli", "--json"]);
        c
    };
    let recv = common("bob").args(["--recv-only", "--duration", "3"]).spawn_piped();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let send = common("alice")
        .args(["--ssrc", "777", "--send-pps", "200", "--duration", "1.5", "--seq", "65500"])
        .output()
        .unwrap();
    assert!(send.status.success(), "{}", String::from_utf8_lossy(&send.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&send.stdout).unwrap();
    let out = recv.wait_with_output().unwrap();
    assert!(out.status.success());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = sent["sent"].as_u64().unwrap();
    assert!(n >= 250, "sent {n}");
    let s = &got["streams"]["777"];
    assert_eq!(s["received"].as_u64(), Some(n), "{got}");
    assert_eq!(s["lost"].as_u64(), Some(0));
    assert_eq!(got["auth_failures"].as_u64(), Some(0));
}

#[test]
fn relay_client_reports_a_refusal_with_its_code() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let out = Command::new(bin("relay-client"))
        .args(["run", "--relay", &relayd.addr.to_string(), "--sdkappid", &APP_A.to_string()])
        .args(["--relay-key", &relayd.key.to_string()])
        .args(["--secret", "wrong-secret-wrong-secret", "--user", "eve", "--room", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_signature"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn relay_client_needs_the_relay_key_and_says_why_a_wrong_one_fails() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let run = |extra: &[&str]| {
        Command::new(bin("relay-client"))
            .args(["run", "--relay", &relayd.addr.to_string(), "--sdkappid", &APP_A.to_string()])
            .args(["--secret", SECRET_A, "--user", "eve", "--room", "1", "--duration", "0.2"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--relay-key") && err.contains("relayd key show"), "{err}");

    let other = relay::identity::StaticKey::from_secret([3; 32]).public().to_string();
    let out = run(&["--relay-key", &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&other) && err.contains("its key"), "{err}");
    let s = relayd.stats();
    assert!(s.handshake.get("mac1_failed").is_some_and(|&n| n >= 1), "{:?}", s.handshake);
    assert_eq!(s.handshake.get("dh"), None, "no DH for joins to another key: {:?}", s.handshake);

    // v1 is refused by default, with its code.
    let out = run(&["--v1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("v1_not_allowed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The JSON an app back end gets: relays[0] gives endpoint and key.
    let dir = TempDir::new("relay-info").unwrap();
    let info = dir.join("token.json");
    let body = serde_json::json!({
        "usersig": usersig(SECRET_A, APP_A, "frank"),
        "relays": [{"endpoint": relayd.addr.to_string(), "public_key": relayd.key.to_string()}],
    });
    std::fs::write(&info, body.to_string()).unwrap();
    let out = Command::new(bin("relay-client"))
        .args(["run", "--relay-info"])
        .arg(&info)
        .args(["--sdkappid", &APP_A.to_string(), "--room", "1", "--duration", "0.2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["joined"], true);
}

#[test]
fn relayd_shows_and_rotates_its_key() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let socket = relayd.stats_socket.display().to_string();
    let show = |args: &[&str]| {
        let out = Command::new(bin("relayd")).args(["key", "show", "--json"]).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let live = show(&["--socket", &socket]);
    assert_eq!(live["public_key"], relayd.key.to_string());
    let out = Command::new(bin("relayd"))
        .args(["ctl", "--socket", &socket, "--json", "rotate-key", "--overlap-secs", "600"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotated = show(&["--socket", &socket]);
    assert_ne!(rotated["public_key"], live["public_key"]);
    assert_eq!(rotated["previous_key"], live["public_key"]);
    // Both keys admit joins during the overlap.
    for key in [&rotated["public_key"], &live["public_key"]] {
        let mut cfg = relayd.client_config(APP_A, SECRET_A, "u", relay::ids::RoomId::Num(3), None);
        cfg.nodes[0].key = Some(key.as_str().unwrap().parse().unwrap());
        Peer::with_config(relayd.addr, cfg).join().expect("a join to either key");
    }
    // A fresh key file: generated 0600, never overwritten.
    let dir = TempDir::new("keygen").unwrap();
    let path = dir.join("k");
    let out = Command::new(bin("relayd")).args(["key", "generate", "--out"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(relay::identity::Identity::load(&path).unwrap().current.public().to_string(), printed);
    let again = Command::new(bin("relayd")).args(["key", "generate", "--out"]).arg(&path).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn usersig_subcommand_mints_verifiable_tokens() {
    let out = Command::new(bin("relay-client"))
        .args(["usersig", "--sdkappid", "1400000001", "--secret", SECRET_A, "--user", "alice"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tok = String::from_utf8(out.stdout).unwrap();
    let sig = relay::usersig::decode(tok.trim()).unwrap();
    assert_eq!(sig.identifier, "alice");
    sig.verify(SECRET_A.as_bytes(), unix_now()).unwrap();

    let out = Command::new(bin("relay-client"))
        .args(["usersig", "--sdkappid", "1400000001", "--secret", SECRET_A, "--user", "bob"])
        .args(["--room", "42", "--privileges", "enter,recv-video"])
        .output()
        .unwrap();
    let pmk = relay::usersig::decode(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let ub = relay::usersig::decode_userbuf(pmk.userbuf.as_deref().unwrap()).unwrap();
    assert_eq!(ub.room_num, 42);
    assert_eq!(ub.privileges.0, 2 | 32);
}

#[test]
fn relayd_check_explains_bad_configs() {
    let dir = TempDir::new("cli").expect("create a temp dir");
    let p = dir.join("bad.toml");
    std::fs::write(&p, "listen = \"127.0.0.1:7000\"\nwrokers = 2\n").unwrap();
    let out = Command::new(bin("relayd")).args(["check", "--config"]).arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `wrokers`"), "{err}");

    let out = Command::new(bin("relayd")).arg("example-config").output().unwrap();
    std::fs::write(&p, &out.stdout).unwrap();
    let out = Command::new(bin("relayd")).args(["check", "--config"]).arg(&p).output().unwrap();
    assert!(out.status.success(), "the example config is valid: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));

    let help = Command::new(bin("relayd")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Examples:") && help.contains("relayd run --config"), "{help}");
}

trait SpawnPiped {
    fn spawn_piped(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn spawn_piped(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }
}
