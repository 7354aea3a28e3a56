//! `relayd`: the edgerelay data-plane daemon.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use relay::config::Config;
use relay::io::socket::{read_stats, Relay};
use relay::io::sys;
use relay::registry::Registry;
use relay::stats::Snapshot;

const EXAMPLE_CONFIG: &str = r#"# relayd.toml
listen = "0.0.0.0:7000"        # UDP port for media (SRTP) and control (join/keepalive)
workers = 2                    # one SO_REUSEPORT socket + pinned thread each; default: cores
control_socket = "/run/edgerelay/relayd.sock"   # for `relayd stats`
# backend = "xdp"              # XDP filter + AF_XDP (root); listen must be the interface's address
# user = "nobody"              # drop to this user after setup (no capabilities kept)

[timeouts]
keepalive_secs = 5             # told to clients in join-ok
session_secs = 30              # silent sessions expire after this

[[app]]
sdkappid = 1400000001
secret = "0123456789abcdef0123456789abcdef"   # or: secret_file = "app1.key"
require_private_map_key = false
profiles = ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"]
[app.quotas]
max_rooms = 1000
max_members_per_room = 50
max_sessions = 10000

# [xdp]                        # with backend = "xdp"
# iface = "eth0"
# mode = "auto"                # auto | copy | zerocopy
# join_rate_per_sec = 20       # per source address, in the kernel
# pps_rate_per_sec = 20000
"#;

#[derive(Parser)]
#[command(
    name = "relayd",
    version,
    about = "edgerelay media relay: UserSig-authenticated rooms, SRTP re-encrypted per receiver",
    long_about = "relayd relays SRTP between the members of a room. Clients join with a Tencent \
TRTC UserSig (optionally a PrivateMapKey), agree per-session keys with the relay over X25519, \
and every packet a member sends is authenticated, replay-checked and re-encrypted with each \
other member's own keys.",
    after_help = "Examples:\n  relayd run --config relayd.toml\n  relayd check --config relayd.toml\n  \
relayd stats --socket /run/edgerelay/relayd.sock\n  relayd ctl dismiss-room --sdkappid 1400000001 --room 42\n  \
relayd example-config > relayd.toml\n  \
relayd run --config relayd.toml --backend xdp --iface eth0     # kernel-bypass data plane (root)\n\n\
Logging: RUST_LOG=relay=debug shows refused joins."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

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
    /// Validate a config file and print what it would run.
    Check {
        /// The TOML config.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print a running relayd's counters (from its `control_socket`).
    Stats {
        /// The control socket path from the config.
        #[arg(short, long, default_value = "/run/edgerelay/relayd.sock")]
        socket: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Act on a running relayd through its management socket.
    Ctl {
        /// The control socket path from the config.
        #[arg(short, long, default_value = "/run/edgerelay/relayd.sock")]
        socket: PathBuf,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Print an annotated example config.
    ExampleConfig,
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
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().cmd {
        Cmd::Run { config, listen, workers, backend, iface } => run(config, listen, workers, backend, iface),
        Cmd::Check { config } => {
            let v = Config::load(&config)?;
            println!("config OK: listen {} with {} worker(s)", v.listen, v.workers);
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
        Cmd::Ctl { socket, action } => {
            use relay::io::mgmt::{request, Request};
            let req = match action {
                CtlAction::DismissRoom { sdkappid, room } => Request::DismissRoom { sdkappid, room },
                CtlAction::RemoveUser { sdkappid, room, user } => Request::RemoveUser { sdkappid, room, user },
                CtlAction::Block { cidr, ttl } => {
                    let (ip, len) = cidr.split_once('/').unwrap_or((&cidr, ""));
                    let ip: std::net::IpAddr = ip.parse().with_context(|| format!("--cidr {cidr}: bad address"))?;
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let prefix_len = if len.is_empty() {
                        max
                    } else {
                        len.parse().with_context(|| format!("--cidr {cidr}: bad prefix length"))?
                    };
                    anyhow::ensure!(prefix_len <= max, "--cidr {cidr}: prefix length above {max}");
                    Request::Block { ip, prefix_len, ttl_secs: ttl }
                }
            };
            let r = request(&socket, &req).with_context(|| format!("talking to relayd at {}", socket.display()))?;
            if !r.ok {
                anyhow::bail!("relayd refused: {}", r.error.unwrap_or_default());
            }
            match r.removed {
                Some(n) => println!("ok: {n} session(s) ended"),
                None => println!("ok"),
            }
            Ok(())
        }
        Cmd::ExampleConfig => {
            print!("{EXAMPLE_CONFIG}");
            Ok(())
        }
    }
}

fn run(
    config: PathBuf,
    listen: Option<std::net::SocketAddr>,
    workers: Option<usize>,
    backend: Option<relay::config::Backend>,
    iface: Option<String>,
) -> Result<()> {
    let mut cfg = Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(w) = workers {
        anyhow::ensure!((1..=relay::config::MAX_WORKERS).contains(&w), "--workers must be 1..=256");
        cfg.workers = w;
    }
    if let Some(b) = backend {
        cfg.backend = b;
    }
    if let Some(i) = iface {
        match cfg.xdp.as_mut() {
            Some(x) => x.iface = i,
            None => {
                cfg.xdp = Some(toml::from_str(&format!("iface = {i:?}")).context("--iface")?);
            }
        }
    }
    cfg.check_backend()?;
    let shutdown = sys::shutdown_flag().context("installing signal handlers")?;
    let relay = Relay::start(&cfg, Registry::new(&cfg), shutdown)
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
    if !s.xdp.is_empty() {
        let _ = writeln!(t, "XDP verdicts (packets, in the kernel):");
        for (k, v) in &s.xdp {
            let _ = writeln!(t, "  {k:<26} {v:>14}");
        }
    }
    // A closed pipe (`relayd stats | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), t.as_bytes());
}
