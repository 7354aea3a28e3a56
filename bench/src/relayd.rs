//! relayd as a child process of the bench: its config (one app, quotas, the backend), its
//! start on loopback or in the rig's relay namespace (pinned to the relay CPU), its counters,
//! and joining it with real keys.
//!
//! Invariants: relayd runs under a [`Guard`] with its config, control socket and log in a
//! [`TempDir`], both gone when [`Relayd`] drops (the process first). A member joins with a
//! UserSig minted for the bench app, so every probe's keys come from a real join handshake
//! ([`relay::client`]).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay::client::{Client, ClientConfig, Event};
use relay::config::Backend;
use relay::identity::{Identity, RelayKey, StaticKey};
use relay::ids::{RoomId, Ssrc};
use relay::proto::{DeclaredSsrc, StreamKind};
use relay::srtp::Profile;

use crate::procs::{Cpus, Guard};
use crate::rig::topology::{self, Topology, CLIENT_IP};
use relay::tempdir::TempDir;

const APP: u32 = 1_400_000_001;
const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// A running relayd, killed on drop.
pub struct Relayd {
    // Field order is drop order: the process goes before its directory.
    guard: Guard,
    stats: PathBuf,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its static public key (members join v2 to it).
    pub key: RelayKey,
    dir: TempDir,
}

impl Relayd {
    /// Its counters.
    pub fn snapshot(&self) -> Result<relay::stats::Snapshot> {
        relay::mgmt::read_stats(&self.stats).context("reading relayd stats")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Fails, with relayd's log, if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Err(e) = self.guard.check_alive() {
            bail!("{e}: {}", self.log());
        }
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relayd.log")).unwrap_or_default()
    }
}

/// The default relayd: next to this binary.
pub fn default_relayd() -> Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("relayd"))
}

/// `--relayd` if given, else [`default_relayd`].
pub fn relayd_path(given: &Option<PathBuf>) -> Result<PathBuf> {
    given.clone().map_or_else(default_relayd, Ok)
}

/// relayd's size: workers and the bench app's quotas.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Worker threads.
    pub workers: usize,
    /// The app's `max_rooms`.
    pub max_rooms: u32,
    /// The app's `max_members_per_room`.
    pub max_members_per_room: u32,
    /// The app's `max_sessions`.
    pub max_sessions: u32,
    /// XDP backend: keep relayd's default per-source join and packet limits (as shipped)
    /// instead of turning them off.
    pub default_limits: bool,
}

impl Default for Size {
    /// One worker; quotas for the probes of the baselines.
    fn default() -> Self {
        Self { workers: 1, max_rooms: 10_000, max_members_per_room: 64, max_sessions: 100_000, default_limits: false }
    }
}

/// The bench app's SdkAppId and secret.
pub fn app() -> (u32, &'static str) {
    (APP, SECRET)
}

/// Starts relayd with one worker: on loopback (`topo` `None`, socket backend only) or in the
/// relay namespace of `topo`; pinned to the relay CPU when `cpus` is given.
pub fn start(bin: &Path, topo: Option<&Topology>, backend: Backend, cpus: Option<Cpus>) -> Result<Relayd> {
    start_sized(bin, topo, backend, cpus, Size::default())
}

/// [`start`], and with `default_limits` the XDP backend keeps relayd's default per-source
/// join and packet limits (as shipped) instead of turning them off for raw throughput.
pub fn start_with(
    bin: &Path,
    topo: Option<&Topology>,
    backend: Backend,
    cpus: Option<Cpus>,
    default_limits: bool,
) -> Result<Relayd> {
    start_sized(bin, topo, backend, cpus, Size { default_limits, ..Size::default() })
}

/// Extra lines for relayd's `[xdp]` table from `RELAY_BENCH_XDP` (newline- or
/// `;`-separated `key = value`), for tuning experiments such as `ring_size = 4096`; empty
/// when unset. relayd validates them like any config.
fn xdp_extra() -> String {
    std::env::var("RELAY_BENCH_XDP")
        .map_or(String::new(), |v| v.split(';').map(|l| format!("{}\n", l.trim())).collect())
}

/// relayd's `[security]` table from `RELAY_BENCH_SECCOMP` (`kill`, `log` or `off`: the
/// workers' seccomp filter, for measuring its cost A/B); empty, relayd's default, when unset.
fn security_extra() -> String {
    std::env::var("RELAY_BENCH_SECCOMP").map_or(String::new(), |v| format!("[security]\nworker_seccomp = \"{v}\"\n"))
}

/// [`start`] with a given [`Size`].
pub fn start_sized(
    bin: &Path,
    topo: Option<&Topology>,
    backend: Backend,
    cpus: Option<Cpus>,
    size: Size,
) -> Result<Relayd> {
    if !bin.is_file() {
        bail!("relayd not found at {} (build it: cargo build --release -p relay, or pass --relayd)", bin.display());
    }
    let dir = TempDir::new("relayd")?;
    let stats = dir.join("relayd.sock");
    let addr: SocketAddr = match topo {
        Some(_) => topology::relay_addr(),
        None => UdpSocket::bind("127.0.0.1:0")?.local_addr()?,
    };
    // `pin_workers = false`: taskset alone pins relayd (relayd releases before the affinity
    // fix moved worker 0 to core 0, onto the load CPU).
    // `session_secs = 3600`: bench members send no keepalives, and receivers send nothing at
    // all; preparing a million packets in a debug build took longer than the default 30 s,
    // and the sender's session expired before the blast (every packet `unknown_session`).
    let Size { workers, max_rooms, max_members_per_room, max_sessions, default_limits } = size;
    let mut cfg = format!(
        "listen = \"{addr}\"\nworkers = {workers}\npin_workers = false\ncontrol_socket = \"{}\"\nbackend = \"{}\"\n\
         [timeouts]\nkeepalive_secs = 5\nsession_secs = 3600\n\
         [[app]]\nsdkappid = {APP}\nsecret = \"{SECRET}\"\n\
         [app.quotas]\nmax_rooms = {max_rooms}\nmax_members_per_room = {max_members_per_room}\n\
         max_sessions = {max_sessions}\n",
        stats.display(),
        if backend == Backend::Xdp { "xdp" } else { "socket" }
    );
    if backend == Backend::Xdp {
        let topo = topo.context("the XDP backend runs in the namespace topology")?;
        cfg += &format!(
            "[xdp]\niface = \"{}\"\nmode = \"copy\"\npin_maps = false\n{}{}",
            topo.veth.name_a,
            if default_limits { "" } else { "pps_rate_per_sec = 0\njoin_rate_per_sec = 0\n" },
            xdp_extra()
        );
    }
    // A fresh key per run, written before the start so its public half is known here.
    let key_file = dir.join("relay.key");
    let identity = Identity::new(StaticKey::generate());
    identity.save(&key_file)?;
    cfg += &format!("[identity]\nkey_file = \"{}\"\n", key_file.display());
    cfg += &security_extra();
    let path = dir.join("relayd.toml");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join("relayd.log"))?;
    let cpus = cpus.unwrap_or(Cpus { relay: 0, load: 0, pinned: false });
    let mut cmd = match topo {
        // `ip netns exec` execs relayd, so the pid stays relayd's.
        Some(t) => {
            let mut c = cpus.command(cpus.relay, Path::new("ip"));
            c.args(["netns", "exec", t.relay_ns.name()]).arg(bin);
            c
        }
        None => cpus.command(cpus.relay, bin),
    };
    cmd.args(["run", "--config"]).arg(&path).stdout(Stdio::null()).stderr(log);
    let mut r = Relayd { guard: Guard::spawn(cmd, "relayd")?, stats, addr, key: identity.current.public(), dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.snapshot().is_err() {
        if r.guard.check_alive().is_err() || Instant::now() > deadline {
            bail!("relayd did not start: {}", r.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(r)
}

/// A joined client and its socket.
pub struct Member {
    /// The socket, connected to relayd.
    pub sock: UdpSocket,
    /// The client.
    pub client: Client,
}

/// Joins `room` as `user` over `sock`, declaring `ssrc` (video) if given.
pub fn join(
    sock: UdpSocket,
    relay: SocketAddr,
    key: RelayKey,
    room: u32,
    user: &str,
    ssrc: Option<u32>,
    profile: Profile,
) -> Result<Member> {
    sock.connect(relay)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mut client = Client::new(ClientConfig {
        sdkappid: APP,
        room: RoomId::Num(room),
        usersig: relay::usersig::mint(SECRET.as_bytes(), APP.into(), user, 3600, now, None),
        private_map_key: None,
        profile,
        ssrcs: ssrc
            .and_then(|s| Ssrc::new(s).ok())
            .map(|s| DeclaredSsrc { ssrc: s, kind: StreamKind::Video })
            .into_iter()
            .collect(),
        nodes: vec![relay::client::Node::new(relay, Some(key))],
        failover_after_ms: None,
    })?;
    let mut buf = [0u8; 2048];
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    for _ in 0..50 {
        // Every attempt is a fresh v2 handshake (the relay refuses a copy as a replay).
        let n = client.join(&mut buf)?;
        sock.send(&buf[..n])?;
        while let Ok(n) = sock.recv(&mut buf) {
            match client.handle(&mut buf[..n]) {
                Event::Joined { .. } => return Ok(Member { sock, client }),
                Event::Refused { code, detail } => bail!("join refused: {code:?} {detail}"),
                Event::Cookie => {
                    let n = client.join(&mut buf)?;
                    sock.send(&buf[..n])?;
                }
                _ => {}
            }
        }
    }
    bail!("relayd did not answer the join")
}

/// Joins `room` as `user` from a socket bound to `port` (0: any) on the clients' address in
/// `topo`'s clients' namespace, towards relayd in the relay namespace.
pub fn join_from(
    topo: &Topology,
    key: RelayKey,
    port: u16,
    room: u32,
    user: &str,
    ssrc: Option<u32>,
    profile: Profile,
) -> Result<Member> {
    let sock = {
        let _g = topo.client_ns.enter()?;
        UdpSocket::bind((CLIENT_IP.parse::<std::net::Ipv4Addr>()?, port))?
    };
    join(sock, topology::relay_addr(), key, room, user, ssrc, profile)
}
