//! Helpers for the integration tests: start a real `relayd`, drive real clients.
//!
//! The binaries come from the workspace target directory, so run
//! `cargo build --workspace --bins` first (the README's test command does). Every helper
//! cleans up on `Drop`, so a failing test leaks no process or file.

pub use relay::time::unix_now;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay::client::{write_rtp_header, Client, ClientConfig, Event};
pub use relay::identity::RelayKey;
use relay::ids::{RoomId, Ssrc};
use relay::proto::{DeclaredSsrc, ErrorCode, StreamKind};
use relay::srtp::Profile;
use relay::stats::Snapshot;

pub mod cluster;
pub mod control;
pub mod control_plane;
pub mod drill;
pub mod fake_relayd;
pub mod net;

/// Runs `relay-bench ARGS --json JSON` (the workspace's binary) and returns its output.
pub fn relay_bench(args: &[&str], json: &Path) -> std::process::Output {
    Command::new(bin("relay-bench")).args(args).arg("--json").arg(json).output().expect("run relay-bench")
}

/// The JSON report a `relay-bench` run wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("JSON written")).expect("valid JSON")
}

/// [`relay_bench`] that must succeed; returns the report it wrote.
pub fn relay_bench_json(args: &[&str], json: &Path) -> serde_json::Value {
    let out = relay_bench(args, json);
    assert!(
        out.status.success(),
        "relay-bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    read_json(json)
}

/// `relayd`'s path as a `relay-bench --relayd` argument.
pub fn relayd_arg() -> String {
    bin("relayd").display().to_string()
}

/// Whether we run under CI (`CI=true`): there a missing tool or kernel feature fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns true) on a laptop, panics under CI, with a one-line reason.
pub fn skip_or_fail(reason: &str) -> bool {
    if in_ci() {
        panic!("required under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    true
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let p = target.join(profile).join(name);
    assert!(p.exists(), "{} is missing: run `cargo build --workspace --bins` first", p.display());
    p
}

pub use relay::tempdir::TempDir;

/// A free UDP port on loopback (best effort: another process may take it).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two test apps.
pub const APP_A: u32 = 1_400_000_001;
/// The second app.
pub const APP_B: u32 = 1_400_000_002;
/// App A's secret.
pub const SECRET_A: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// App B's secret.
pub const SECRET_B: &str = "b0a1c2d3e4f5061728394a5b6c7d8e9fb0a1c2d3e4f5061728394a5b6c7d8e9f";

/// The default two-app config body (without `listen`/`control_socket`).
pub fn two_app_config(session_secs: u16, extra_a: &str) -> String {
    format!(
        r#"workers = 2
[timeouts]
keepalive_secs = 1
session_secs = {session_secs}
[[app]]
sdkappid = {APP_A}
secret = "{SECRET_A}"
{extra_a}
[app.quotas]
max_rooms = 10
max_members_per_room = 8
max_sessions = 40
[[app]]
sdkappid = {APP_B}
secret = "{SECRET_B}"
"#
    )
}

/// A running relayd, killed on drop.
pub struct Relayd {
    child: Child,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its static public key (clients join v2 to it), from the key file relayd created.
    pub key: RelayKey,
    /// Its stats socket.
    pub stats_socket: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// What [`Relayd::start_with`] wrote around the body (listen, socket; the key file).
    frame: (String, String),
    netns: Option<String>,
    share_mounts: bool,
    _dir: TempDir,
}

impl Relayd {
    /// Starts relayd on loopback with `body` (a config without `listen` and
    /// `control_socket`) and waits until it serves.
    pub fn start(body: &str) -> Self {
        // The port stays bound, with relayd's SO_REUSEADDR and SO_REUSEPORT, until relayd
        // listens on it too. A port only looked up and let go could be handed to another
        // test's relayd as well; both would bind it (SO_REUSEPORT), and the kernel would
        // spread one test's packets across the two. That is the likely cause of a CI
        // failure where a join got no answer for 5 s.
        let hold = relay::io::sys::bind_reuseport("127.0.0.1:0".parse().unwrap(), 0).expect("bind a loopback port");
        let addr = hold.local_addr().unwrap();
        let relayd = Self::start_with(addr, body, None);
        drop(hold);
        relayd
    }

    /// Starts relayd listening on `addr`, inside network namespace `netns` if given (with
    /// `ip netns exec`, which gives it a private mount namespace and a fresh `/sys`, so its
    /// BPF pins die with it).
    pub fn start_with(addr: SocketAddr, body: &str, netns: Option<&str>) -> Self {
        Self::start_in(addr, body, netns, false)
    }

    /// As [`start_with`](Self::start_with); with `share_mounts`, relayd enters only the
    /// network namespace (`nsenter --net`) and keeps this process's mounts, so pins under
    /// `/sys/fs/bpf` outlive it, as on a host where relayd restarts without a reboot.
    pub fn start_in(addr: SocketAddr, body: &str, netns: Option<&str>, share_mounts: bool) -> Self {
        let dir = TempDir::new("relayd").expect("create a temp dir");
        let stats_socket = dir.join("relayd.sock");
        let key_file = dir.join("relay.key");
        let identity = if body.contains("[identity]") {
            String::new()
        } else {
            format!("\n[identity]\nkey_file = \"{}\"\n", key_file.display())
        };
        let head = format!("listen = \"{addr}\"\ncontrol_socket = \"{}\"\n", stats_socket.display());
        let path = dir.join("relayd.toml");
        std::fs::write(&path, format!("{head}{body}{identity}")).unwrap();
        let child = spawn_relayd(&path, &dir.join("relayd.log"), netns, share_mounts);
        let mut r = Self {
            child,
            addr,
            key: RelayKey([0; 32]),
            stats_socket,
            config: path,
            frame: (head, identity),
            netns: netns.map(str::to_owned),
            share_mounts,
            _dir: dir,
        };
        let stats = r.wait_serving();
        r.key = stats.relay_key.as_deref().expect("relayd reports its key").parse().expect("a base64 key");
        r
    }

    /// Waits (up to 10 s) until relayd answers on its management socket, which it serves
    /// only after its UDP sockets are bound; returns its counters.
    fn wait_serving(&mut self) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = relay::mgmt::read_stats(&self.stats_socket) {
                return s;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("relayd exited with {st}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "relayd did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills relayd with SIGKILL and reaps it, keeping its files (config, key, state file)
    /// for [`respawn`](Self::respawn).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (up to 5 s) for the exit, keeping its files; returns whether
    /// it exited 0.
    pub fn sigterm(&mut self) -> bool {
        let _ = relay::io::sys::terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Starts relayd again with the same config, key and state file (after [`kill`] or
    /// [`sigterm`]); returns when it spawned and when it answered on its management socket
    /// (by then it listens). Its key must be the one it had.
    ///
    /// [`kill`]: Self::kill
    /// [`sigterm`]: Self::sigterm
    pub fn respawn(&mut self) -> (Instant, Instant) {
        assert!(matches!(self.child.try_wait(), Ok(Some(_))), "relayd is still running");
        let spawned = Instant::now();
        self.child =
            spawn_relayd(&self.config, &self._dir.join("relayd.log"), self.netns.as_deref(), self.share_mounts);
        let stats = self.wait_serving();
        let serving = Instant::now();
        assert_eq!(stats.relay_key.as_deref(), Some(self.key.to_string().as_str()), "the relay key survives");
        (spawned, serving)
    }

    /// The directory holding its config, key file, state file and log.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Its state file (the saved push): the default, next to the key file.
    pub fn state_file(&self) -> PathBuf {
        self._dir.join(relay::pushed::DEFAULT_FILE_NAME)
    }

    /// A client config for this relay (v2, to its key), joining `room` of `app` as `user`
    /// with a day-long UserSig, sending from `ssrc` (video) if set.
    pub fn client_config(&self, app: u32, secret: &str, user: &str, room: RoomId, ssrc: Option<u32>) -> ClientConfig {
        ClientConfig {
            sdkappid: app,
            room,
            usersig: usersig(secret, app, user),
            private_map_key: None,
            profile: Profile::AesCm128HmacSha1_80,
            ssrcs: ssrc
                .map(|s| DeclaredSsrc { ssrc: Ssrc::new(s).unwrap(), kind: StreamKind::Video })
                .into_iter()
                .collect(),
            nodes: vec![relay::client::Node::new(self.addr, Some(self.key))],
            failover_after_ms: None,
        }
    }

    /// `relayd stats --socket ...`: the table an operator reads.
    pub fn stats_table(&self) -> String {
        let out = Command::new(bin("relayd")).args(["stats", "--socket"]).arg(&self.stats_socket).output().unwrap();
        assert!(out.status.success(), "relayd stats: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The counters.
    pub fn stats(&self) -> Snapshot {
        relay::mgmt::read_stats(&self.stats_socket).expect("read relayd stats")
    }

    /// One management request on a fresh connection; panics if relayd cannot be reached.
    pub fn mgmt(&self, req: &relay::mgmt::Request) -> relay::mgmt::Response {
        relay::mgmt::request(&self.stats_socket, req).expect("relayd's management socket answers")
    }

    /// relayd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.join("relayd.log")).unwrap_or_default()
    }

    /// Rewrites the config file with a new `body` (the same listen address, socket and key
    /// file around it), for a reload; relayd itself is not told.
    pub fn rewrite_config(&self, body: &str) {
        let (head, tail) = &self.frame;
        std::fs::write(&self.config, format!("{head}{body}{tail}")).expect("rewrite relayd.toml");
    }

    /// Waits until relayd's log, past its first `from` bytes, has a line containing every
    /// one of `needles`; returns that line (or panics after `secs` with the log).
    pub fn wait_log_line(&self, from: usize, secs: u64, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.log();
            let found = log.get(from..).unwrap_or("").lines().find(|l| needles.iter().all(|n| l.contains(n)));
            if let Some(l) = found {
                return l.to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {needles:?} within {secs} s:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The relayd process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills relayd with SIGKILL (a crash) and reaps it.
    pub fn crash(mut self) {
        self.kill();
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status success.
    pub fn terminate(mut self) -> bool {
        self.sigterm()
    }

    /// Polls the counters until `pred` holds (or panics after `secs`).
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.stats();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relayd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `relayd run --config CONFIG` (in `netns` if given; see [`Relayd::start_in`] for
/// `share_mounts`), its stderr appended to `log`.
fn spawn_relayd(config: &Path, log: &Path, netns: Option<&str>, share_mounts: bool) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = match netns {
        Some(ns) if share_mounts => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(bin("relayd"));
            c
        }
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin("relayd"));
            c
        }
        None => Command::new(bin("relayd")),
    };
    cmd.args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "relay=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn relayd")
}

/// Mints a UserSig valid for a day.
pub fn usersig(secret: &str, app: u32, user: &str) -> String {
    relay::usersig::mint(secret.as_bytes(), app.into(), user, 86400, unix_now(), None)
}

/// A media packet a peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// RTP SSRC.
    pub ssrc: u32,
    /// Packet index.
    pub index: u64,
    /// Decrypted RTP packet.
    pub packet: Vec<u8>,
}

/// A test client over a real UDP socket.
pub struct Peer {
    /// The socket.
    pub sock: UdpSocket,
    /// The sans-IO client.
    pub client: Client,
    relay: SocketAddr,
    seq: u16,
    /// Media that failed SRTP checks at this peer.
    pub media_errors: u64,
}

impl Peer {
    /// A peer that will join `room` of `app` as `user` (v2, to the relay's key), sending
    /// from `ssrc` (video) if set.
    pub fn new(relay: &Relayd, app: u32, secret: &str, user: &str, room: RoomId, ssrc: Option<u32>) -> Self {
        Self::with_config(relay.addr, relay.client_config(app, secret, user, room, ssrc))
    }

    /// A peer with an explicit client config, on loopback.
    pub fn with_config(relay: SocketAddr, cfg: ClientConfig) -> Self {
        Self::with_socket(UdpSocket::bind("127.0.0.1:0").unwrap(), relay, cfg)
    }

    /// A peer on a given socket (e.g. one created inside a client namespace).
    pub fn with_socket(sock: UdpSocket, relay: SocketAddr, cfg: ClientConfig) -> Self {
        Self { sock, client: Client::new(cfg).unwrap(), relay, seq: 1000, media_errors: 0 }
    }

    /// Joins, retrying for up to 5 s (a fresh join per attempt, as v2 needs; a cookie
    /// reply is answered at once); returns the session or the refusal.
    pub fn join(&mut self) -> Result<u64, (Option<ErrorCode>, String)> {
        self.join_within(Duration::from_secs(5))
    }

    /// [`join`](Self::join), retrying for up to `patience` (a flood may hold joins back).
    pub fn join_within(&mut self, patience: Duration) -> Result<u64, (Option<ErrorCode>, String)> {
        let mut buf = [0u8; 2048];
        self.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let n = self.client.join(&mut buf).expect("encode join");
            self.sock.send_to(&buf[..n], self.relay).unwrap();
            while let Ok(n) = self.sock.recv(&mut buf) {
                match self.client.handle(&mut buf[..n]) {
                    Event::Joined { session } => return Ok(session),
                    Event::Refused { code, detail } => return Err((code, detail)),
                    Event::Cookie => {
                        let n = self.client.join(&mut buf).expect("encode join");
                        self.sock.send_to(&buf[..n], self.relay).unwrap();
                    }
                    _ => {}
                }
            }
        }
        panic!("no answer to join from {}", self.relay);
    }

    /// Protects and sends one RTP packet from `ssrc`; returns the SRTP bytes sent.
    pub fn send_rtp(&mut self, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let h = write_rtp_header(&mut buf, 96, self.seq, u32::from(self.seq) * 3000, ssrc);
        self.seq = self.seq.wrapping_add(1);
        buf[h..h + payload.len()].copy_from_slice(payload);
        let n = self.client.protect_rtp(&mut buf, h + payload.len()).expect("protect");
        self.sock.send_to(&buf[..n], self.relay).unwrap();
        buf[..n].to_vec()
    }

    /// Sends raw bytes to the relay.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.relay).unwrap();
    }

    /// Sends a keepalive.
    pub fn keepalive(&mut self) {
        let mut buf = [0u8; 128];
        let n = self.client.keepalive(&mut buf).unwrap();
        self.send_raw(&buf[..n]);
    }

    /// Sends a leave.
    pub fn leave(&mut self) {
        let mut buf = [0u8; 128];
        let n = self.client.leave(&mut buf).unwrap();
        self.send_raw(&buf[..n]);
    }

    /// Receives media until `quiet` passes with nothing new.
    pub fn drain(&mut self, quiet: Duration) -> Vec<Received> {
        self.sock.set_read_timeout(Some(quiet)).unwrap();
        self.receive_while_ready()
    }

    /// Receives whatever media is queued now, without waiting.
    pub fn poll(&mut self) -> Vec<Received> {
        self.sock.set_nonblocking(true).unwrap();
        let out = self.receive_while_ready();
        self.sock.set_nonblocking(false).unwrap();
        out
    }

    fn receive_while_ready(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.sock.recv(&mut buf) {
            match self.client.handle(&mut buf[..n]) {
                Event::Media { ssrc, rtcp: false, len, index } => {
                    out.push(Received { ssrc, index, packet: buf[..len].to_vec() })
                }
                Event::MediaError(_) => self.media_errors += 1,
                _ => {}
            }
        }
        out
    }
}
