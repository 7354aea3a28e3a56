//! The README's quick start, as root and as an unprivileged user: `relayd example-config`,
//! `relayd check`, `relayd run`, `relayd stats --config`. A start-up failure names its real
//! cause (the control socket or the key file it cannot create), and `relayd check` finds it
//! first.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgerelay_tests::*;

/// `relayd ARGS` as `nobody` (setpriv), in `dir`.
fn as_nobody(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin("relayd"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG");
    c
}

/// Runs `c` to its end, or kills it after `secs` and panics.
fn finish_within(mut c: Command, secs: u64) -> Output {
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Whether this test can switch to `nobody` (root and setpriv), else why not.
fn can_be_nobody() -> Result<(), &'static str> {
    if !relay::io::sys::is_root() {
        return Err("needs root to run relayd as nobody");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Err("needs setpriv (util-linux)");
    }
    // The binary must be reachable for nobody.
    let ok = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin("relayd"))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Err("nobody cannot execute the relayd binary (target directory permissions)");
    }
    Ok(())
}

fn nobody_dir() -> TempDir {
    let dir = TempDir::new("startup").expect("temp dir");
    let (uid, gid) = relay::io::sys::lookup_user("nobody").unwrap().expect("a nobody user");
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("give the dir to nobody");
    dir
}

#[test]
fn roots_example_config_fails_for_a_user_naming_the_socket_and_check_finds_it_first() {
    if let Err(why) = can_be_nobody() {
        if skip_or_fail(why) {
            return;
        }
    }
    let dir = nobody_dir();
    // The config root's `example-config` writes (system paths).
    let example = Command::new(bin("relayd")).arg("example-config").output().unwrap();
    assert!(example.status.success());
    let text = String::from_utf8(example.stdout).unwrap();
    assert!(text.contains("control_socket = \"/run/edgerelay/relayd.sock\""), "{text}");
    let cfg = dir.join("relayd.toml");
    std::fs::write(&cfg, &text).unwrap();

    // As root, `check` passes (nothing is created).
    let out = Command::new(bin("relayd")).args(["check", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));

    // As nobody: `check` names the socket and the fix; `run` fails the same way, not with
    // "starting relay on 0.0.0.0:7000: Permission denied".
    let out = finish_within(as_nobody(dir.path(), &["check", "--config", "relayd.toml"]), 10);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check must fail for nobody: {err}");
    assert!(err.contains("control_socket /run/edgerelay/relayd.sock") && err.contains("may not create it"), "{err}");
    assert!(err.contains("control_socket = \"relayd.sock\""), "the error names the fix: {err}");
    let port = free_udp_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = finish_within(as_nobody(dir.path(), &["run", "--config", "relayd.toml", "--listen", &listen]), 10);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("control_socket /run/edgerelay/relayd.sock"), "run names the socket: {err}");
    assert!(!err.contains("starting relay on"), "{err}");
}

#[test]
fn the_quick_start_works_as_written_for_an_unprivileged_user() {
    if let Err(why) = can_be_nobody() {
        if skip_or_fail(why) {
            return;
        }
    }
    let dir = nobody_dir();
    // `relayd example-config > relayd.toml`, as the user.
    let example = finish_within(as_nobody(dir.path(), &["example-config"]), 10);
    assert!(example.status.success());
    let text = String::from_utf8(example.stdout).unwrap();
    assert!(text.contains("control_socket = \"relayd.sock\"") && text.contains("key_file = \"relay.key\""), "{text}");
    std::fs::write(dir.join("relayd.toml"), &text).unwrap();
    let (uid, gid) = relay::io::sys::lookup_user("nobody").unwrap().expect("nobody");
    std::os::unix::fs::chown(dir.join("relayd.toml"), Some(uid), Some(gid)).unwrap();

    let out = finish_within(as_nobody(dir.path(), &["check", "--config", "relayd.toml"]), 10);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));

    // `relayd run --config relayd.toml &` (on a free port rather than 7000 on a shared machine).
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let mut relayd = as_nobody(dir.path(), &["run", "--config", "relayd.toml", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relayd as nobody");
    // `relayd stats --config relayd.toml` finds the socket next to the config.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let out = finish_within(as_nobody(dir.path(), &["stats", "--config", "relayd.toml", "--json"]), 10);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("stats JSON");
        }
        if let Some(st) = relayd.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(relayd.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("relayd as nobody exited with {st}: {err}");
        }
        assert!(Instant::now() < deadline, "relayd as nobody did not come up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stats["sessions"], serde_json::json!(0), "{stats}");
    assert!(dir.join("relayd.sock").exists() && dir.join("relay.key").exists());
    // `relayd key show --config relayd.toml` reads the key the user's relayd created.
    let out = finish_within(as_nobody(dir.path(), &["key", "show", "--config", "relayd.toml", "--json"]), 10);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = relay::io::sys::terminate(relayd.id());
    let _ = relayd.wait();
}
