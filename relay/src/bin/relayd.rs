//! `relayd`: the edgerelay data-plane daemon.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use relay::config::Config;
use relay::identity::Identity;
use relay::io::runtime::Relay;
use relay::io::sys;
use relay::mgmt::read_stats;
use relay::prefix::Prefix;
use relay::registry::Registry;
use relay::stats::Snapshot;

/// The example config; `{WHO}`, `{SOCKET}` and `{KEY}` are filled in for the user who asks
/// ([`example_config`]).
const EXAMPLE_CONFIG: &str = r#"# relayd.toml ({WHO})
listen = "0.0.0.0:7000"        # UDP port for media (SRTP) and control (join/keepalive)
workers = 2                    # one SO_REUSEPORT socket + pinned thread each; default: cores
control_socket = "{SOCKET}"   # for `relayd stats`, `relayd ctl`, relay-control; relative = next to this file
# control_users = ["edgerelay-control"]         # may use the socket besides root and relayd's user
# backend = "xdp"              # XDP filter + AF_XDP (root); listen must be the interface's address
# user = "nobody"              # drop to this user after setup (no capabilities kept)
# log_level = "info"           # or e.g. "relay=debug,info"; RUST_LOG wins at start; changes on reload
# log_format = "text"          # or "json": one object per line (restart to change)
# state_file = "/var/lib/edgerelay/pushed.json" # what relay-control pushed last (apps, secrets, limits,
#                              # blocklist, bans; 0600); relayd starts from it when relay-control is
#                              # absent. Default: pushed.json next to [identity] key_file

[identity]
key_file = "{KEY}"   # X25519 key, created (0600) on first start; `relayd key show`

[join]                         # defences of the join path
cookies = "auto"               # auto: joins echo an address cookie while the control queue backs up; always
timestamp_window_secs = 30     # a join's clock may differ this much; seen joins are remembered 2x as long
replies_per_sec = 20000        # replies to control messages, in total (malformed ones get none)
replies_per_source_per_sec = 10

[timeouts]
keepalive_secs = 5             # told to clients in join-ok
session_secs = 30              # silent sessions expire after this

[[app]]
sdkappid = 1400000001
secret = "0123456789abcdef0123456789abcdef"   # or: secret_file = "app1.key"
require_private_map_key = false
allow_v1_joins = false         # true: also accept cleartext v1 joins while clients migrate (counted)
profiles = ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"]
[app.quotas]
max_rooms = 1000
max_members_per_room = 50
max_sessions = 10000

[security]
worker_seccomp = "kill"        # seccomp allow-list per worker thread: kill (default) | log (audit only) | off; restart to change

# [xdp]                        # with backend = "xdp"
# iface = "eth0"
# mode = "auto"                # auto | copy | zerocopy
# join_rate_per_sec = 20       # per source address, in the kernel
# pps_rate_per_sec = 20000
# max_sessions = 262144        # kernel sessions map: concurrent sessions admitted (~100 B each)
# ring_size = 1024             # AF_XDP RX/TX ring descriptors per queue (UMEM: 4x as many 2 KiB frames)
# pin_maps = true              # pin the maps so the blocklist and limits outlive relayd
# pin_dir = "/sys/fs/bpf/edgerelay"   # where (one directory per relayd on a host)
"#;

#[derive(Parser)]
#[command(
    name = "relayd",
    version,
    about = "edgerelay media relay: UserSig-authenticated rooms, SRTP re-encrypted per receiver",
    long_about = "relayd relays SRTP between the members of a room. Clients join with a Tencent \
TRTC UserSig (optionally a PrivateMapKey) in a Noise NK handshake to the relay's static key \
(`relayd key show`): the join is encrypted, the answer proves the relay's identity, and the \
per-session SRTP keys are forward-secret. Every packet a member sends is authenticated, \
replay-checked and re-encrypted with each other member's own keys.\n\n\
What relay-control pushes over the management socket (apps and their secrets, limits, the \
blocklist, bans) wins over the TOML file and is saved in `state_file` (default: pushed.json \
next to the key file, mode 0600), so a restarted relayd serves it again before relay-control \
reconnects, or without it; on the XDP backend the saved blocklist is put back into the kernel \
before the program is attached, also into freshly created maps (after a reboot). A damaged \
state file is reported (log, `relayd stats` state counters) and relayd starts from the TOML \
file alone. Delete the file to go back to the TOML file's apps.",
    after_help = "Examples:\n  relayd run --config relayd.toml\n  relayd check --config relayd.toml\n  \
relayd stats --socket /run/edgerelay/relayd.sock\n  relayd ctl dismiss-room --sdkappid 1400000001 --room 42\n  \
relayd ctl rooms --sdkappid 1400000001\n  relayd ctl offenders --limit 20\n  \
relayd ctl set-limits --pps-rate 5000 --pps-burst 10000 --join-rate 20 --join-burst 40\n  \
relayd example-config > relayd.toml\n  \
relayd key show --config relayd.toml          # the public key clients join to (--relay-key)\n  \
relayd ctl rotate-key --overlap-secs 86400    # new key; the old one is accepted for a day\n  \
relayd run --config relayd.toml --backend xdp --iface eth0     # kernel-bypass data plane (root)\n  \
relayd ctl --config relayd.toml reload       # or: kill -HUP <pid>; re-reads the file, applies what can change live\n\n\
Logging: log_level in relayd.toml (or RUST_LOG, which wins at start) = \"relay=debug\" shows refused \
joins, each with app, room, code and source; log_format = \"json\" (or --log-format json) writes JSON lines."
)]
struct Cli {
    /// Log lines as `text` or `json` (default: `log_format` from the config, else text).
    #[arg(long, global = true)]
    log_format: Option<relay::logging::LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where `stats` and `ctl` find relayd's management socket.
#[derive(clap::Args)]
struct SocketArgs {
    /// The control socket path (default: `control_socket` of --config, else
    /// /run/edgerelay/relayd.sock).
    #[arg(short, long)]
    socket: Option<PathBuf>,
    /// Read the socket path from this config's `control_socket`.
    #[arg(short, long, conflicts_with = "socket")]
    config: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> Result<PathBuf> {
        match (&self.socket, &self.config) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(c)) => Config::load(c)
                .with_context(|| format!("loading {}", c.display()))?
                .control_socket
                .with_context(|| format!("{} sets no control_socket", c.display())),
            (None, None) => Ok(PathBuf::from(DEFAULT_SOCKET)),
        }
    }
}

/// The management socket of a root relayd started with the example config.
const DEFAULT_SOCKET: &str = "/run/edgerelay/relayd.sock";

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay until SIGINT or SIGTERM.
    Run {
        /// The TOML config (see `relayd example-config`).
        #[arg(short, long)]
        config: PathBuf,
        /// Override `listen` from the config, e.g. 127.0.0.1:7000.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override `workers` from the config (socket backend).
        #[arg(long)]
        workers: Option<usize>,
        /// Override `backend`: `socket` (UDP sockets) or `xdp` (XDP filter + AF_XDP).
        #[arg(long)]
        backend: Option<relay::config::Backend>,
        /// With the XDP backend: the interface to attach to (sets `[xdp] iface`).
        #[arg(long)]
        iface: Option<String>,
    },
    /// Validate a config file, check that this user could start it (the control socket and
    /// key file can be created), and print what it would run.
    Check {
        /// The TOML config.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print a running relayd's counters (from its `control_socket`).
    Stats {
        #[command(flatten)]
        socket: SocketArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Act on a running relayd through its management socket (root, relayd's user, or a
    /// `control_users` member).
    Ctl {
        #[command(flatten)]
        socket: SocketArgs,
        /// Print relayd's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Show or create the relay's static key (clients join v2 to its public key).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print an annotated example config. Run as root, its control socket and key file are
    /// under /run/edgerelay and /var/lib/edgerelay; run as another user, next to the config
    /// file, so `relayd run` works as that user too.
    ExampleConfig,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print the public key clients need: from the key file of `--config`, or from a
    /// running relayd's `--socket` (which also shows a rotation in progress).
    Show {
        /// The TOML config whose `[identity] key_file` to read.
        #[arg(short, long, conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// A running relayd's control socket.
        #[arg(short, long)]
        socket: Option<PathBuf>,
        /// Print JSON (`public_key`, `fingerprint`, `previous_key`, `previous_until`).
        #[arg(long)]
        json: bool,
    },
    /// Create a key file with a fresh key (mode 0600); refuses to overwrite one.
    Generate {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// End every session in a room.
    DismissRoom {
        /// The app.
        #[arg(long)]
        sdkappid: u64,
        /// The room: digits for a numeric room, `s:NAME` for a string room.
        #[arg(long)]
        room: String,
    },
    /// End one user's session in a room.
    RemoveUser {
        /// The app.
        #[arg(long)]
        sdkappid: u64,
        /// The room.
        #[arg(long)]
        room: String,
        /// The user id.
        #[arg(long)]
        user: String,
        /// Also ban the user from the room for this many seconds (0 = no ban).
        #[arg(long, default_value_t = 0)]
        ban_secs: u64,
    },
    /// Rotate the relay's static key: a fresh key becomes current and the old one is still
    /// accepted for `--overlap-secs` (give clients' back ends time to hand out the new one).
    RotateKey {
        /// How long joins to the old key are still accepted.
        #[arg(long, default_value_t = 86_400)]
        overlap_secs: u64,
    },
    /// Drop a source prefix in the kernel (XDP backend), e.g. `--cidr 198.51.100.0/24 --ttl 600`.
    Block {
        /// Address/prefix length.
        #[arg(long)]
        cidr: String,
        /// Seconds until the entry expires (0 = never).
        #[arg(long, default_value_t = 600)]
        ttl: u64,
    },
    /// Remove a blocklist entry (XDP backend), e.g. `--cidr 198.51.100.0/24`.
    Unblock {
        /// Address/prefix length, exactly as blocked.
        #[arg(long)]
        cidr: String,
    },
    /// List the live blocklist entries.
    Blocklist,
    /// List rooms and their members.
    Rooms {
        /// Only this app's rooms.
        #[arg(long)]
        sdkappid: Option<u64>,
        /// At most this many rooms (default 1000, at most 10000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Print the per-source limits and relay port range in force.
    Limits,
    /// Change the per-source limits in the kernel at run time (XDP backend). Unset options
    /// keep their current values; the port range must contain relayd's listen port.
    SetLimits {
        /// SRTP packets per second per source (0 = unlimited).
        #[arg(long)]
        pps_rate: Option<u32>,
        /// Packet bucket size.
        #[arg(long)]
        pps_burst: Option<u32>,
        /// Joins per second per source (0 = unlimited).
        #[arg(long)]
        join_rate: Option<u32>,
        /// Join bucket size.
        #[arg(long)]
        join_burst: Option<u32>,
        /// Lowest relay UDP port.
        #[arg(long)]
        port_min: Option<u16>,
        /// Highest relay UDP port.
        #[arg(long)]
        port_max: Option<u16>,
    },
    /// Re-read relayd.toml and apply what can change live (apps, quotas, timeouts, [join],
    /// log_level, control_users, [xdp] rates), as SIGHUP does; live sessions keep flowing.
    /// Prints what was applied and what needs a restart; an invalid file changes nothing.
    Reload,
    /// List the sources the kernel dropped most packets from (XDP backend).
    Offenders {
        /// At most this many (default 256).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// List the cascade legs to other nodes of the cluster (relay-control opens them for rooms
    /// with members on several nodes): room, peer, role, state and streams each way.
    Legs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Run { config, listen, workers, backend, iface } = cli.cmd {
        let overrides = Overrides { listen, workers, backend, iface };
        return run(config, overrides, cli.log_format);
    }
    relay::logging::init(cli.log_format.unwrap_or_default(), None)?;
    match cli.cmd {
        Cmd::Run { .. } => unreachable!("handled above"),
        Cmd::Check { config } => {
            let v = load(&config)?;
            let problems = relay::io::runtime::preflight(&v);
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("error: {p}");
                }
                anyhow::bail!("{} cannot start as this user (uid {}): {}", config.display(), sys::euid(), problems[0]);
            }
            println!("config OK: listen {} with {} worker(s)", v.listen, v.workers);
            match relay::pushed::load(&v.state_file) {
                Ok(Some(p)) => {
                    let n = p.summary();
                    println!(
                        "  saved push {} (saved at {}: {} app(s), {} block(s), {} ban(s), limits {}): relayd starts \
                         from it; pushed apps replace the apps below",
                        v.state_file.display(),
                        p.saved_at,
                        n["apps"],
                        n["blocks"],
                        n["bans"],
                        if n["limits"] > 0 { "yes" } else { "no" }
                    );
                }
                Ok(None) => println!("  no saved push at {}", v.state_file.display()),
                Err(e) => println!("  {e}: relayd would start from this file alone"),
            }
            for a in &v.apps {
                let profiles: Vec<_> = a.profiles.iter().map(|p| p.name()).collect();
                println!(
                    "  app {}: profiles [{}], quotas rooms={} members/room={} sessions={}{}",
                    a.sdkappid,
                    profiles.join(", "),
                    a.quotas.max_rooms,
                    a.quotas.max_members_per_room,
                    a.quotas.max_sessions,
                    if a.require_private_map_key { ", PrivateMapKey required" } else { "" }
                );
            }
            Ok(())
        }
        Cmd::Stats { socket, json } => {
            let socket = socket.path()?;
            let s = read_stats(&socket).with_context(|| {
                format!("cannot read stats from {} (is relayd running with control_socket set?)", socket.display())
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_table(&s);
            }
            Ok(())
        }
        Cmd::Ctl { socket, json, action } => ctl(&socket.path()?, json, action),
        Cmd::Key { action } => key(action),
        Cmd::ExampleConfig => {
            print!("{}", example_config(sys::is_root()));
            Ok(())
        }
    }
}

/// The example config for root (system paths) or another user (paths next to the file).
fn example_config(root: bool) -> String {
    let (who, socket, key) = if root {
        ("for root", DEFAULT_SOCKET, relay::config::DEFAULT_KEY_FILE)
    } else {
        ("for an unprivileged user: socket and key next to this file", "relayd.sock", "relay.key")
    };
    EXAMPLE_CONFIG.replace("{WHO}", who).replace("{SOCKET}", socket).replace("{KEY}", key)
}

fn key(action: KeyAction) -> Result<()> {
    use relay::mgmt::KeyInfo;
    match action {
        KeyAction::Show { config, socket, json } => {
            let info = match (config, socket) {
                (Some(c), None) => {
                    let v = Config::load(&c).with_context(|| format!("loading {}", c.display()))?;
                    let id = Identity::load(&v.key_file).with_context(|| {
                        format!("no key yet? relayd creates {} on its first start", v.key_file.display())
                    })?;
                    KeyInfo::of(&id)
                }
                (None, socket) => {
                    let socket = socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
                    relay::mgmt::Client::connect(&socket, std::time::Duration::from_secs(5))
                        .with_context(|| format!("connecting to relayd at {}", socket.display()))?
                        .key(None)
                        .with_context(|| format!("talking to relayd at {}", socket.display()))?
                }
                (Some(_), Some(_)) => unreachable!("clap refuses --config with --socket"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                let mut t = String::new();
                print_key(&mut t, &info);
                print!("{t}");
            }
            Ok(())
        }
        KeyAction::Generate { out } => {
            anyhow::ensure!(!out.exists(), "{} exists: refusing to overwrite a relay key", out.display());
            let id = Identity::new(relay::identity::StaticKey::generate());
            id.save(&out)?;
            println!("{}", id.current.public());
            Ok(())
        }
    }
}

fn print_key(t: &mut String, k: &relay::mgmt::KeyInfo) {
    use std::fmt::Write as _;
    let _ = writeln!(t, "public_key   {}\nfingerprint  {}", k.public_key, k.fingerprint);
    if let (Some(p), Some(u)) = (k.previous_key, k.previous_until) {
        let left = u.saturating_sub(relay::time::unix_now());
        let _ = writeln!(t, "previous_key {p} (accepted for {left} s more)");
    }
}

/// Loads and validates `path`, and resolves `control_users` in the system's user database.
fn load(path: &std::path::Path) -> Result<relay::config::Validated> {
    let mut v = Config::load(path)?;
    v.resolve_control_users(|name| Ok(sys::lookup_user(name)?.map(|(uid, _gid)| uid)))?;
    Ok(v)
}

/// `--cidr address[/len]`; without a length, the whole address. Host bits are cleared.
fn parse_cidr(cidr: &str) -> Result<Prefix> {
    Prefix::parse_truncating(cidr).with_context(|| format!("--cidr {cidr}"))
}

fn ctl(socket: &std::path::Path, json: bool, action: CtlAction) -> Result<()> {
    use relay::mgmt::{Answer, Client, Request, Response};
    let mut client = Client::connect(socket, std::time::Duration::from_secs(10))
        .with_context(|| format!("connecting to relayd at {} (is control_socket set?)", socket.display()))?;
    let talking = || format!("talking to relayd at {}", socket.display());
    let req = match action {
        CtlAction::DismissRoom { sdkappid, room } => Request::DismissRoom { sdkappid, room },
        CtlAction::RemoveUser { sdkappid, room, user, ban_secs } => {
            Request::RemoveUser { sdkappid, room, user, ban_secs }
        }
        CtlAction::RotateKey { overlap_secs } => Request::RotateKey { overlap_secs },
        CtlAction::Block { cidr, ttl } => {
            let p = parse_cidr(&cidr)?;
            Request::Block { ip: p.addr(), prefix_len: p.len().into(), ttl_secs: ttl }
        }
        CtlAction::Unblock { cidr } => {
            let p = parse_cidr(&cidr)?;
            Request::Unblock { ip: p.addr(), prefix_len: p.len().into() }
        }
        CtlAction::Blocklist => Request::Blocklist {},
        CtlAction::Rooms { sdkappid, limit } => Request::Rooms { sdkappid, limit },
        CtlAction::Limits => Request::GetLimits {},
        CtlAction::SetLimits { pps_rate, pps_burst, join_rate, join_burst, port_min, port_max } => {
            let cur = client.limits(None).with_context(talking)?;
            Request::SetLimits(relay::limits::Limits {
                pps_rate_per_sec: pps_rate.unwrap_or(cur.pps_rate_per_sec),
                pps_burst: pps_burst.unwrap_or(cur.pps_burst),
                join_rate_per_sec: join_rate.unwrap_or(cur.join_rate_per_sec),
                join_burst: join_burst.unwrap_or(cur.join_burst),
                port_min: port_min.unwrap_or(cur.port_min),
                port_max: port_max.unwrap_or(cur.port_max),
            })
        }
        CtlAction::Offenders { limit } => Request::Offenders { limit },
        CtlAction::Reload => Request::Reload {},
        CtlAction::Legs => Request::Legs {},
    };
    let answer = client.call(&req).with_context(talking)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&Response::Ok(answer))?);
        return Ok(());
    }
    use std::fmt::Write as _;
    let mut t = String::new();
    match answer {
        Answer::Rooms(rooms) => {
            for room in &rooms {
                let _ = writeln!(t, "app {} room {} ({} member(s))", room.sdkappid, room.room, room.members.len());
                for m in &room.members {
                    let dir = match (m.send, m.recv) {
                        (true, true) => "send+recv",
                        (true, false) => "send",
                        (false, true) => "recv",
                        (false, false) => "-",
                    };
                    let _ = writeln!(t, "  {:<32} {:<46} {dir}", m.user, m.addr);
                }
            }
            let _ = writeln!(t, "{} room(s)", rooms.len());
        }
        Answer::Blocks(blocks) => {
            for b in &blocks {
                let ttl = b.expires_in_secs.map_or("until removed".to_owned(), |s| format!("{s} s left"));
                let _ = writeln!(t, "{:<44} {ttl}", format!("{}/{}", b.ip, b.prefix_len));
            }
            let _ = writeln!(t, "{} entr{}", blocks.len(), if blocks.len() == 1 { "y" } else { "ies" });
        }
        Answer::Limits(l) => {
            let _ = writeln!(t, "pps_rate_per_sec  {}\npps_burst         {}", l.pps_rate_per_sec, l.pps_burst);
            let _ = writeln!(t, "join_rate_per_sec {}\njoin_burst        {}", l.join_rate_per_sec, l.join_burst);
            let _ = writeln!(t, "ports             {}..={}", l.port_min, l.port_max);
        }
        Answer::Offenders(offenders) => {
            for o in &offenders {
                let _ = writeln!(t, "{:<40} {:>14}", o.ip, o.dropped_packets);
            }
            let _ = writeln!(t, "{} source(s)", offenders.len());
        }
        Answer::Removed(n) => match req {
            Request::Unblock { .. } if n == 0 => {
                let _ = writeln!(t, "ok: there was no such entry");
            }
            Request::Unblock { .. } => {
                let _ = writeln!(t, "ok: entry removed");
            }
            _ => {
                let _ = writeln!(t, "ok: {n} session(s) ended");
            }
        },
        Answer::Key(k) => print_key(&mut t, &k),
        Answer::Reloaded(r) => {
            let list = |v: &[String]| if v.is_empty() { "nothing".to_owned() } else { v.join(", ") };
            let _ = writeln!(t, "reloaded: applied {}", list(&r.applied));
            if !r.needs_restart.is_empty() {
                let _ = writeln!(t, "needs restart (running values kept): {}", r.needs_restart.join(", "));
            }
            for n in &r.not_applied {
                let _ = writeln!(t, "not applied: {n}");
            }
            if r.sessions_ended > 0 {
                let _ = writeln!(t, "{} session(s) of removed apps ended", r.sessions_ended);
            }
        }
        Answer::Legs(legs) => {
            for l in &legs {
                let _ = write!(
                    t,
                    "app {} room {} peer {} {} {}: {} stream(s) in, {} out, {} ms",
                    l.sdkappid, l.room, l.peer, l.role, l.state, l.streams_in, l.streams_out, l.age_ms
                );
                if let Some(e) = &l.last_error {
                    let _ = write!(t, " (last error: {e})");
                }
                t.push('\n');
            }
            let _ = writeln!(t, "{} leg(s)", legs.len());
        }
        Answer::RoomEvents(e) => {
            for ev in &e.events {
                let _ =
                    writeln!(t, "app {} room {} {}", ev.sdkappid, ev.room, if ev.local { "gained" } else { "lost" });
            }
            let _ = writeln!(t, "next {}{}", e.next, if e.resync { " (resync)" } else { "" });
        }
        Answer::Done | Answer::Stats(_) => {
            let _ = writeln!(t, "ok");
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), t.as_bytes());
    Ok(())
}

/// `relayd run`'s command-line overrides of the config, applied at start and at every
/// reload (so a reload never reports them as changes).
#[derive(Clone)]
struct Overrides {
    listen: Option<std::net::SocketAddr>,
    workers: Option<usize>,
    backend: Option<relay::config::Backend>,
    iface: Option<String>,
}

/// Loads `config` and applies `o`.
fn load_with(config: &std::path::Path, o: &Overrides) -> Result<relay::config::Validated> {
    let mut cfg = load(config).with_context(|| format!("loading {}", config.display()))?;
    if let Some(l) = o.listen {
        cfg.listen = l;
    }
    if let Some(w) = o.workers {
        anyhow::ensure!((1..=relay::config::MAX_WORKERS).contains(&w), "--workers must be 1..=256");
        cfg.workers = w;
    }
    if let Some(b) = o.backend {
        cfg.backend = b;
    }
    if let Some(i) = &o.iface {
        match cfg.xdp.as_mut() {
            Some(x) => x.iface.clone_from(i),
            None => {
                cfg.xdp = Some(toml::from_str(&format!("iface = {i:?}")).context("--iface")?);
            }
        }
    }
    cfg.check_backend()?;
    Ok(cfg)
}

fn run(config: PathBuf, overrides: Overrides, log_format: Option<relay::logging::LogFormat>) -> Result<()> {
    let cfg = load_with(&config, &overrides)?;
    let log = relay::logging::init(log_format.unwrap_or(cfg.log_format), Some(&cfg.log_level))?;
    if log.level_from_env() {
        tracing::info!(rust_log = ?std::env::var("RUST_LOG").ok(), "RUST_LOG sets the log level (log_level applies on reload)");
    }
    // The start-up failures a user can fix, named before anything is bound.
    if let Some(p) = relay::io::runtime::preflight(&cfg).into_iter().next() {
        anyhow::bail!("{p}");
    }
    let (identity, created) =
        Identity::load_or_generate(&cfg.key_file).context("loading the relay's static key ([identity] key_file)")?;
    if created {
        tracing::info!(path = %cfg.key_file.display(), key = %identity.current.public(), "generated a new relay key");
    }
    tracing::info!(key = %identity.current.public(), previous = ?identity.previous.as_ref().map(|(k, _)| k.public()), "relay key");
    let shutdown = sys::shutdown_flag().context("installing signal handlers")?;
    let reloader = relay::io::runtime::Reloader {
        signal: sys::reload_flag().context("installing the SIGHUP handler")?,
        load: Box::new(move || load_with(&config, &overrides).map_err(|e| format!("{e:#}"))),
        set_log_level: Box::new(move |level| log.set_level(level).map_err(|e| e.to_string())),
    };
    let registry = Registry::with_identity(&cfg, identity, Box::new(relay::handshake::KeyPair::generate));
    let relay = Relay::start(&cfg, registry, shutdown, Some(reloader))
        .with_context(|| format!("starting relay on {}", cfg.listen))?;
    if let Some(user) = &cfg.user {
        sys::drop_privileges(user).with_context(|| format!("switching to user {user}"))?;
        tracing::info!(
            user,
            capabilities = format!("{:#x}", sys::effective_capabilities().unwrap_or(u64::MAX)),
            "dropped privileges"
        );
    }
    tracing::info!(listen = %relay.local_addr(), backend = ?cfg.backend, apps = cfg.apps.len(), "relayd ready");
    relay.wait(shutdown);
    tracing::info!("relayd stopped");
    Ok(())
}

fn print_table(s: &Snapshot) {
    use std::fmt::Write as _;
    let mut t = String::new();
    for (k, v) in [
        ("sessions", s.sessions),
        ("rooms", s.rooms),
        ("rx packets", s.rx_packets),
        ("rx bytes", s.rx_bytes),
        ("tx packets", s.tx_packets),
        ("tx bytes", s.tx_bytes),
        ("media accepted", s.media_accepted),
        ("control messages", s.control_in),
    ] {
        let _ = writeln!(t, "{k:<28} {v:>14}");
    }
    let _ = writeln!(t, "drops by reason:");
    for (k, v) in &s.drops {
        let _ = writeln!(t, "  {k:<26} {v:>14}");
    }
    let _ = writeln!(t, "joins by result:");
    for (k, v) in &s.joins {
        let _ = writeln!(t, "  {k:<26} {v:>14}");
    }
    let _ = writeln!(t, "join path:");
    for (k, v) in &s.handshake {
        let _ = writeln!(t, "  {k:<26} {v:>14}");
    }
    let _ = writeln!(t, "in-room messages:");
    for (k, v) in &s.messages {
        let _ = writeln!(t, "  {k:<26} {v:>14}");
    }
    if !s.legs.is_empty() {
        let _ = writeln!(t, "cascade legs:");
        for (k, v) in &s.legs {
            let _ = writeln!(t, "  {k:<26} {v:>14}");
        }
    }
    let _ = writeln!(t, "workers under seccomp        {}", s.seccomp_workers);
    if let Some(k) = &s.relay_key {
        let _ = writeln!(t, "relay key                    {k}");
    }
    if let Some(o) = &s.config_origin {
        let what = match o.as_str() {
            "file" => "the TOML file (nothing pushed or saved)",
            "saved" => "the saved push (state_file), nothing pushed since start",
            "pushed" => "pushed since start (and saved)",
            other => other,
        };
        let _ = writeln!(t, "config from                  {what}");
    }
    if !s.state.is_empty() {
        let _ = writeln!(t, "state file:");
        for (k, v) in &s.state {
            let _ = writeln!(t, "  {k:<26} {v:>14}");
        }
    }
    if !s.xdp.is_empty() {
        let _ = writeln!(t, "XDP verdicts (packets, in the kernel):");
        for (k, v) in &s.xdp {
            let _ = writeln!(t, "  {k:<26} {v:>14}");
        }
    }
    if !s.xsk.is_empty() {
        let _ = writeln!(t, "AF_XDP sockets (kernel statistics, all workers):");
        for (k, v) in &s.xsk {
            let _ = writeln!(t, "  {k:<26} {v:>14}");
        }
    }
    // A closed pipe (`relayd stats | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), t.as_bytes());
}
