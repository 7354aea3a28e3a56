//! The command-line tools as a user runs them.

use std::process::Command;

use edgerelay_tests::*;

#[test]
fn relay_client_streams_and_reports_loss_and_auth_failures() {
    let relayd = Relayd::start(&two_app_config(30, ""));
    let common = |user: &str| {
        let mut c = Command::new(bin("relay-client"));
        c.args(["run", "--relay", &relayd.addr.to_string(), "--sdkappid", &APP_A.to_string()])
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
        .args(["--secret", "wrong-secret-wrong-secret", "--user", "eve", "--room", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_signature"), "{}", String::from_utf8_lossy(&out.stderr));
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
