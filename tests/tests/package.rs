//! The Debian package, installed and run as a service: `scripts/build-deb` packs the
//! workspace's binaries, `scripts/systemd-sandbox` boots systemd as PID 1 in fresh
//! namespaces on a throw-away overlay of the host's root, and there the package is installed
//! with dpkg, configured the way README's "Install as a service" says, and its units are
//! started. Clients join through the unit's relayd with UserSigs minted through the unit's
//! relay-control, and each unit's process shows the hardening its unit asks for; then the
//! same again with relayd on the XDP backend through the packaged drop-in.
//!
//! Everything happens inside the sandbox (its own loopback, its own files); dropping the
//! [`Sandbox`] kills its PID 1, which takes every process in it along, and removes its cgroup.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgerelay_tests::*;
use serde_json::Value;

/// The repository's scripts directory.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(name)
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<&'static str> {
    if !relay::io::sys::is_root() {
        return Some("needs root (namespaces, mounts, dpkg in the sandbox)");
    }
    if !Path::new("/usr/lib/systemd/systemd").exists() {
        return Some("needs systemd installed (/usr/lib/systemd/systemd) to boot the sandbox");
    }
    for tool in ["dpkg-deb", "unshare", "nsenter", "setpriv", "strip"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Some("needs dpkg-deb, util-linux (unshare, nsenter, setpriv) and binutils (strip)");
        }
    }
    None
}

/// `out` as text, or a panic naming `what` with its stderr.
fn ok_stdout(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// systemd as PID 1 in its own namespaces (`scripts/systemd-sandbox boot`); killed on drop.
struct Sandbox {
    /// The `unshare` process, parent of the sandbox's PID 1.
    boot: Child,
    /// The sandbox's PID 1 (systemd), as the host sees it.
    init: u32,
    dir: TempDir,
}

impl Sandbox {
    /// Boots the sandbox and waits until systemd has finished starting up.
    fn boot() -> Self {
        let dir = TempDir::new("sandbox").expect("temp dir");
        let log = std::fs::File::create(dir.join("console.log")).expect("console log");
        let root = dir.join("boot");
        std::fs::create_dir(&root).expect("boot dir");
        let boot = Command::new(script("systemd-sandbox"))
            .arg("boot")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn scripts/systemd-sandbox");
        let mut sandbox = Sandbox { boot, init: 0, dir };
        // `unshare --fork` makes the sandbox's PID 1 its only child.
        let children = format!("/proc/{0}/task/{0}/children", sandbox.boot.id());
        sandbox.init = wait_for(Duration::from_secs(10), "the sandbox's PID 1", || {
            std::fs::read_to_string(&children).ok()?.split_whitespace().next()?.parse().ok()
        });
        let state = wait_for(Duration::from_secs(30), "systemd in the sandbox to finish booting", || {
            let out = sandbox.command("systemctl", &["is-system-running"]).output().ok()?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            matches!(state.as_str(), "running" | "degraded").then_some(state)
        });
        if state == "degraded" {
            let failed = sandbox.run("systemctl", &["--failed", "--no-pager"]);
            eprintln!("sandbox booted degraded (units the host enabled need what the sandbox lacks):\n{failed}");
        }
        sandbox
    }

    /// `program ARGS` inside the sandbox (all its namespaces).
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string(), "-a", "--", program]).args(args).stdin(Stdio::null());
        c
    }

    /// Runs `program ARGS` inside the sandbox; panics unless it succeeds; returns stdout.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program, args).output().expect("nsenter");
        ok_stdout(&format!("{program} {args:?} in the sandbox"), out)
    }

    /// Runs a shell script inside the sandbox.
    fn sh(&self, script: &str) -> String {
        self.run("sh", &["-euc", script])
    }

    /// The sandbox's `path`, seen from the host.
    fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.init))
    }

    /// The journal of `unit`, for failure messages.
    fn journal(&self, unit: &str) -> String {
        self.command("journalctl", &["--no-pager", "-o", "cat", "-u", unit])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `/proc/PID/status` of `unit`'s main process.
    fn main_status(&self, unit: &str) -> String {
        let pid = self.run("systemctl", &["show", "-p", "MainPID", "--value", unit]);
        self.run("cat", &[&format!("/proc/{}/status", pid.trim())])
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.init != 0 {
            let _ = Command::new("kill").args(["-KILL", &self.init.to_string()]).status();
        }
        let _ = self.boot.kill();
        let _ = self.boot.wait();
        let clean = Command::new(script("systemd-sandbox")).arg("clean").arg(self.dir.join("boot")).output();
        if let Ok(out) = clean {
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

/// Polls `check` every 50 ms until it answers, or panics after `within`.
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `field` (e.g. `CapEff:`) in a `/proc/PID/status` text.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(field)).map(str::trim).unwrap_or_default()
}

/// relayctl's environment inside the sandbox: the bootstrap admin key, and the generated
/// certificate as the CA to trust.
const RELAYCTL_ENV: &str = "export EDGERELAY_ENDPOINT=https://127.0.0.1:8443 \
    EDGERELAY_SECRET_ID=$(sed -n 's/^SecretId: //p' /root/admin) \
    EDGERELAY_SECRET_KEY=$(sed -n 's/^SecretKey: //p' /root/admin) \
    EDGERELAY_CA_CERT=/var/lib/edgerelay-control/tls-cert.pem";

/// No capability at all (`/proc/PID/status` hex).
const NO_CAPS: &str = "0000000000000000";
/// CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_PERFMON (38), CAP_BPF (39): relayd-xdp.conf.
const XDP_CAPS: &str = "000000c000003000";

/// Asserts that `unit`'s main process runs as `user` with exactly `caps` (inheritable,
/// permitted, effective, bounding, ambient), no new privileges and a seccomp filter.
fn assert_hardened(sandbox: &Sandbox, unit: &str, user: &str, caps: &str) {
    let status = sandbox.main_status(unit);
    let uid = sandbox.run("id", &["-u", user]);
    let uids = status_field(&status, "Uid:");
    assert!(uids.split_whitespace().all(|u| u == uid.trim()), "{unit} runs as {user} (uid {uid}): Uid {uids}");
    // (Ambient capabilities are inheritable ones too.)
    for field in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&status, field), caps, "{unit} {field}\n{status}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{unit}");
    assert_eq!(status_field(&status, "Seccomp:"), "2", "{unit}: SystemCallFilter in effect");
}

/// Two members of room 42: alice sends, bob receives.
struct Room<'a> {
    key: &'a str,
    alice: &'a str,
    bob: &'a str,
}

impl Room<'_> {
    /// Runs bob (receiving, 4 s) and alice (50 pps, 2 s) inside the sandbox, each prefixed
    /// by `wrap` (e.g. `ip netns exec NS`), against `relay`; returns their `--json` reports.
    fn run(&self, sandbox: &Sandbox, wrap: &[&str], relay: &str) -> (Value, Value) {
        let client = |user: &str, usersig: &str, extra: &[&str]| {
            let app = APP_A.to_string();
            let mut args: Vec<&str> = wrap.iter().skip(1).copied().collect();
            if !wrap.is_empty() {
                args.push("relay-client");
            }
            args.extend(["run", "--relay", relay, "--relay-key", self.key, "--sdkappid", &app]);
            args.extend(["--user", user, "--usersig", usersig, "--room", "42", "--json"]);
            args.extend(extra);
            let program = wrap.first().copied().unwrap_or("relay-client");
            sandbox
                .command(program, &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn relay-client")
        };
        let bob = client("bob", self.bob, &["--recv-only", "--duration", "4"]);
        let alice = client("alice", self.alice, &["--send-pps", "50", "--duration", "2"]);
        let report = |c: Child| -> Value {
            let out = c.wait_with_output().expect("relay-client");
            let text = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str(text.lines().last().unwrap_or_default())
                .unwrap_or_else(|_| Value::String(format!("{text}{}", String::from_utf8_lossy(&out.stderr))))
        };
        (report(alice), report(bob))
    }
}

/// Whether both joined and bob got alice's media, all of it authentic.
fn room_worked(alice: &Value, bob: &Value) -> bool {
    alice["joined"] == Value::Bool(true)
        && bob["joined"] == Value::Bool(true)
        && alice["sent"].as_u64() > Some(0)
        && bob["received"].as_u64() > Some(0)
        && bob["auth_failures"].as_u64() == Some(0)
}

#[test]
fn the_package_installs_its_units_start_hardened_and_a_client_joins() {
    if let Some(why) = missing_prerequisite() {
        if skip_or_fail(why) {
            return;
        }
    }
    let started = Instant::now();
    let out_dir = TempDir::new("deb").expect("temp dir");
    let bin_dir = bin("relayd").parent().expect("target dir").to_owned();
    let built = Command::new(script("build-deb"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out_dir.path())
        .args(["--compress", "none"])
        .output()
        .expect("run scripts/build-deb");
    let deb = PathBuf::from(ok_stdout("scripts/build-deb", built).trim());
    let packed = started.elapsed();

    let sandbox = Sandbox::boot();
    let booted = started.elapsed();
    // The sandbox sees the host's files: start from none of edgerelay's (the host keeps them).
    sandbox
        .sh("rm -rf /etc/edgerelay /var/lib/edgerelay /var/lib/edgerelay-control /etc/systemd/system/relayd.service.d");
    std::fs::copy(&deb, sandbox.path("/root/edgerelay.deb")).expect("copy the package into the sandbox");
    // (The path includes undo a slim image's dpkg excludes, which drop docs and man pages.)
    let keep = ["--path-include=/usr/share/doc/edgerelay/*", "--path-include=/usr/share/man/man1/*"];
    sandbox.run("dpkg", &[keep[0], keep[1], "-i", "/root/edgerelay.deb"]);
    for path in [
        "/usr/bin/relayd",
        "/usr/bin/relay-client",
        "/usr/bin/relay-control",
        "/usr/bin/relayctl",
        "/usr/share/man/man1/relayd.1.gz",
        "/usr/share/man/man1/relay-client.1.gz",
        "/usr/share/man/man1/relay-control.1.gz",
        "/usr/share/man/man1/relayctl.1.gz",
        "/usr/share/doc/edgerelay/examples/relayd-xdp.conf",
    ] {
        assert!(sandbox.path(path).exists(), "the package installs {path}");
    }
    // The units as systemd reads them: no unknown keys, no missing binaries.
    sandbox.run("systemd-analyze", &["verify", "relayd.service", "relay-control.service"]);
    let installed = started.elapsed();

    // README "Install as a service": the example configs (relayd's with an app secret of our
    // own), the first admin key before relay-control's first start.
    sandbox.sh(&format!(
        "cd /usr/share/doc/edgerelay/examples
        sed 's/^secret = .*/secret = \"{SECRET_A}\"/' relayd.toml > /root/relayd.toml
        install -m 0640 -g edgerelay /root/relayd.toml /etc/edgerelay/relayd.toml
        install -m 0640 -g edgerelay-control control.toml /etc/edgerelay/control.toml
        relay-control bootstrap-admin --config /etc/edgerelay/control.toml > /root/admin
        systemctl start relayd.service relay-control.service"
    ));
    // Up or on its way up; a unit that has failed even once (Restart= hides it) ends the test.
    let assert_active = |unit: &str| {
        let props = sandbox.run("systemctl", &["show", "-p", "ActiveState", "-p", "SubState", "-p", "NRestarts", unit]);
        let prop = |name: &str| props.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default();
        let up = prop("ActiveState=") == "active" || prop("SubState=") == "start";
        assert!(up && prop("NRestarts=") == "0", "{unit} is not coming up ({props}):\n{}", sandbox.journal(unit));
    };
    let key = wait_for(Duration::from_secs(15), "relayd's control socket", || {
        assert_active("relayd.service");
        let mut show = sandbox.command("relayd", &["key", "show", "--socket", "/run/edgerelay/relayd.sock", "--json"]);
        let out = show.output().ok().filter(|o| o.status.success())?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v["public_key"].as_str()?.to_owned())
    });
    // relay-control answers, and reaches relayd through the socket as edgerelay-control.
    let status = wait_for(Duration::from_secs(15), "relay-control to reach relayd", || {
        assert_active("relay-control.service");
        let out =
            sandbox.command("sh", &["-c", &format!("{RELAYCTL_ENV}; relayctl --json node status")]).output().ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["relayd"]["reachable"] == Value::Bool(true)).then_some(v)
    });
    assert_eq!(status["relayd"]["key"]["public_key"], Value::String(key.clone()), "{status}");
    let started_units = started.elapsed();

    // The app, created through relay-control (which pushes it to relayd), and two UserSigs.
    let minted = sandbox.sh(&format!(
        "{RELAYCTL_ENV}
        relayctl --json apps create --sdkappid {APP_A} > /dev/null
        relayctl --json usersig mint --sdkappid {APP_A} --user alice
        relayctl --json usersig mint --sdkappid {APP_A} --user bob"
    ));
    let sigs: Vec<String> = minted
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("usersig JSON")["usersig"].as_str().expect("usersig").to_owned()
        })
        .collect();
    assert_eq!(sigs.len(), 2, "{minted}");
    let room = Room { key: &key, alice: &sigs[0], bob: &sigs[1] };
    let (alice, bob) = room.run(&sandbox, &[], "127.0.0.1:7000");
    assert!(room_worked(&alice, &bob), "a client joins: alice {alice}\nbob {bob}\n{}", sandbox.journal("relayd"));

    // The hardening holds: each unit's own user, no capability at all (not even in the
    // bounding set), no new privileges, a seccomp filter.
    assert_hardened(&sandbox, "relayd.service", "edgerelay", NO_CAPS);
    assert_hardened(&sandbox, "relay-control.service", "edgerelay-control", NO_CAPS);
    let socket_backend = started.elapsed();

    // The XDP backend through the packaged drop-in: relayd on one end of a veth pair (inside
    // the sandbox), the clients in a namespace at the other end.
    sandbox.sh(
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
        ip netns add cli
        ip link add er0 type veth peer name er1 netns cli
        ip addr add 198.18.0.1/24 dev er0
        ip link set er0 up
        ip -n cli addr add 198.18.0.2/24 dev er1
        ip -n cli link set er1 up
        install -D -m 0644 /usr/share/doc/edgerelay/examples/relayd-xdp.conf /etc/systemd/system/relayd.service.d/xdp.conf
        { echo 'backend = \"xdp\"'
          sed 's/^listen = .*/listen = \"198.18.0.1:7000\"/' /root/relayd.toml
          printf '[xdp]\niface = \"er0\"\nmode = \"copy\"\n'; } > /root/relayd-xdp.toml
        install -m 0640 -g edgerelay /root/relayd-xdp.toml /etc/edgerelay/relayd.toml
        systemctl daemon-reload
        systemctl restart relayd.service",
    );
    // relay-control pushes the app again once it sees the new relayd; until then the
    // UserSigs it minted do not verify, so this waits for a room that works.
    wait_for(Duration::from_secs(30), "a room on relayd's XDP backend", || {
        let (alice, bob) = room.run(&sandbox, &["ip", "netns", "exec", "cli"], "198.18.0.1:7000");
        room_worked(&alice, &bob).then_some(())
    });
    let links = sandbox.run("ip", &["-d", "link", "show", "dev", "er0"]);
    assert!(links.contains("prog/xdp"), "relayd attached its program: {links}");
    assert_hardened(&sandbox, "relayd.service", "edgerelay", XDP_CAPS);

    // Stopping is clean: both units end on SIGTERM.
    sandbox.run("systemctl", &["stop", "relay-control.service", "relayd.service"]);
    for unit in ["relayd.service", "relay-control.service"] {
        let state = sandbox.command("systemctl", &["is-failed", unit]).output().expect("systemctl");
        assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "inactive", "{unit} stopped cleanly");
    }
    eprintln!(
        "package test: packed {packed:.1?}, booted {booted:.1?}, installed {installed:.1?}, \
         units up {started_units:.1?}, socket backend checked {socket_backend:.1?}, done {:.1?}",
        started.elapsed()
    );
}
