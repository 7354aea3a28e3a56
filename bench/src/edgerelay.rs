//! edgerelay itself under the baseline load: relayd with one worker, pinned to the relay CPU,
//! on loopback (socket backend) or in the namespace topology of [`crate::throughput`] (XDP
//! backend), fan-out 1, driven by the same pacer and search as rtpengine.
//!
//! Every probe joins a fresh sender and receiver into a fresh room with real keys from the
//! join handshake ([`relay::client`]), so no probe inherits state from an earlier one. On
//! loopback the receiver verifies every packet with its downlink key; in the namespace
//! topology the clients' XDP counting sink counts the relayed packets instead (no receiver
//! socket work on the shared CPUs).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay::client::{write_rtp_header, Client, ClientConfig, Event};
use relay::config::Backend;
use relay::ids::{RoomId, Ssrc};
use relay::proto::{DeclaredSsrc, StreamKind};
use relay::srtp::Profile;

use crate::load::{self, MakePacket, Probe, SearchArgs, Sink, Traffic, Verify};
use crate::procs::{Cpus, Guard};
use crate::throughput::{self, Topology};

const APP: u32 = 1_400_000_001;
const SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const SSRC: u32 = 0x5eed;

/// A private temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `relay-bench-{tag}-{pid}-{nanos}` under the temp dir.
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("relay-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running relayd, killed on drop.
pub struct Relayd {
    // Field order is drop order: the process goes before its directory.
    guard: Guard,
    stats: PathBuf,
    /// Its UDP address.
    pub addr: SocketAddr,
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
        std::fs::read_to_string(self.dir.0.join("relayd.log")).unwrap_or_default()
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
    let stats = dir.0.join("relayd.sock");
    let addr: SocketAddr = match topo {
        Some(_) => format!("{}:{}", throughput::RELAY_IP, throughput::PORT).parse()?,
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
            "[xdp]\niface = \"{}\"\nmode = \"copy\"\npin_maps = false\n{}",
            topo.veth.name_a,
            if default_limits { "" } else { "pps_rate_per_sec = 0\njoin_rate_per_sec = 0\n" }
        );
    }
    let path = dir.0.join("relayd.toml");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.0.join("relayd.log"))?;
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
    let mut r = Relayd { guard: Guard::spawn(cmd, "relayd")?, stats, addr, dir };
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
    })?;
    let mut buf = [0u8; 2048];
    let n = client.join(&mut buf)?;
    let join = buf[..n].to_vec();
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    for _ in 0..50 {
        sock.send(&join)?;
        while let Ok(n) = sock.recv(&mut buf) {
            match client.handle(&mut buf[..n]) {
                Event::Joined { .. } => return Ok(Member { sock, client }),
                Event::Refused { code, detail } => bail!("join refused: {code:?} {detail}"),
                _ => {}
            }
        }
    }
    bail!("relayd did not answer the join")
}

/// A packet maker for `member`: RTP of `size` bytes from [`SSRC`], protected with its keys.
pub fn maker(member: Member, size: usize) -> MakePacket {
    let Member { mut client, .. } = member;
    let mut seq = 1u16;
    Box::new(move |buf| {
        let h = write_rtp_header(buf, 96, seq, u32::from(seq).wrapping_mul(3000), SSRC);
        seq = seq.wrapping_add(1);
        buf.get_mut(h..size).context("packet size below the RTP header")?.fill(0x42);
        Ok(client.protect_rtp(buf, size)?)
    })
}

/// A receiver check for `client`: only downlink media that authenticates passes.
pub fn verifier(mut client: Client) -> Verify {
    Box::new(move |buf| match client.handle(buf) {
        Event::Media { .. } => Ok(()),
        Event::MediaError(e) => Err(e),
        // Nothing but media is expected during a probe.
        _ => Err(relay::srtp::Error::TooShort),
    })
}

/// relayd under test, with its network: the socket backend on loopback, probed like the
/// baselines (a sender that makes each packet as it goes, a verifying socket receiver), or the
/// XDP backend in the throughput scenario's namespaces ([`throughput::Rig`]: pre-protected
/// packets from the AF_XDP generator, every relayed packet captured and verified).
pub enum Target {
    /// relayd on loopback.
    Loopback(Loopback),
    /// relayd in namespaces.
    Veth(Box<throughput::Rig>),
}

/// relayd on loopback and the state of its probes.
pub struct Loopback {
    relayd: Relayd,
    rooms: u32,
    /// Sockets of earlier probes' members, kept open for the target's life. Their sessions
    /// outlive the probe (no leave is sent), and relayd refuses a join from an address that
    /// holds another user's session (`address_in_use`), so their ports must not be reused.
    spent: Vec<UdpSocket>,
}

impl Target {
    /// Starts relayd on `backend`: socket on loopback, XDP in a fresh namespace topology.
    pub fn start(bin: &Path, backend: Backend, cpus: Cpus, size: usize) -> Result<Self> {
        match backend {
            Backend::Xdp => Ok(Self::Veth(Box::new(throughput::Rig::fan_out_one(bin, cpus, backend, size)?))),
            _ => Ok(Self::Loopback(Loopback {
                relayd: start(bin, None, backend, Some(cpus))?,
                rooms: 0,
                spent: Vec::new(),
            })),
        }
    }

    /// One probe at `rate` (see [`Loopback::probe`] and [`throughput::Rig::probe`]).
    pub fn probe(&mut self, rate: f64, size: usize, search: &SearchArgs, cpus: Cpus) -> Result<Probe> {
        match self {
            Self::Loopback(l) => l.probe(rate, size, search, cpus),
            Self::Veth(rig) => rig.probe(rate, search, &mut Vec::new()),
        }
    }
}

impl Loopback {
    /// One probe at `rate`: a fresh room with one sender and one receiver.
    pub fn probe(&mut self, rate: f64, size: usize, search: &SearchArgs, cpus: Cpus) -> Result<Probe> {
        self.rooms += 1;
        let profile = Profile::AesCm128HmacSha1_80;
        let socket = || relay::io::sys::bind_reuseport("127.0.0.1:0".parse().expect("an address"), 4 << 20);
        let sender = join(socket()?, self.relayd.addr, self.rooms, "sender", Some(SSRC), profile)?;
        let receiver = join(socket()?, self.relayd.addr, self.rooms, "receiver", None, profile)?;
        self.spent.push(sender.sock.try_clone()?);
        self.spent.push(receiver.sock.try_clone()?);
        let tx = sender.sock.try_clone()?;
        let Member { sock, client } = receiver;
        let sink = Sink { sock, verify: verifier(client) };
        let traffic = Traffic { tx, dst: self.relayd.addr, make: maker(sender, size), sink };
        let before = self.relayd.snapshot()?.tx_packets;
        let mut p = load::probe(traffic, rate, search.probe_secs, self.relayd.pid(), cpus, search.max_loss)?;
        p.relay_sent = Some(self.relayd.snapshot()?.tx_packets - before);
        if p.auth_failed > 0 {
            bail!("{} packets relayed by relayd (socket backend) failed the receiver's SRTP check", p.auth_failed);
        }
        Ok(p)
    }
}
