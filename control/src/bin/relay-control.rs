//! `relay-control`: the edgerelay management daemon (HTTPS API, push to relayd, metrics,
//! alerts, autoblock).
//!
//! Thin: parses the command line, loads the config (every section, `[alerts]` and
//! `[autoblock]` included, is checked before anything binds), binds, drops privileges, opens
//! the store and the certificate, then hands over to `control::server`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use control::cluster::leases::Leases;
use control::cluster::legs::{self, Timings};
use control::cluster::peers::Peers;
use control::cluster::Cluster;
use control::keys::{ApiKey, Role};
use control::server::{config::Config, push::Link, tls, unix_now, Server};
use control::state::Mutation;
use control::store::{Actor, Store};

#[derive(Parser)]
#[command(
    name = "relay-control",
    version,
    about = "edgerelay management daemon: HTTPS API, push to relayd, metrics, alerts, autoblock"
)]
struct Cli {
    /// Log lines as `text` or `json` (default: the config's `log_format`, else text).
    #[arg(long, global = true)]
    log_format: Option<relay::logging::LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HTTPS API.
    Serve {
        /// The config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Create the first admin API key and print it once (refuses if an admin key exists).
    /// Run it while the daemon is stopped: a running daemon holds the store's lock.
    BootstrapAdmin {
        /// The config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// A note on whose key this is.
        #[arg(long, default_value = "bootstrap admin")]
        label: String,
    },
    /// Print a commented example config.
    ExampleConfig,
    /// Write a new random cluster key (64 hex digits, mode 0600) for `[cluster] key_file`.
    /// Every node of a cluster needs the same file; it never goes into Redis.
    ClusterKey {
        /// Where to write it (refused if the file exists).
        #[arg(long)]
        out: PathBuf,
    },
}

fn state_dir(cfg: &Config) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)
        .with_context(|| format!("creating state_dir {}", cfg.state_dir.display()))
}

/// Gives `state_dir` and the files in it (store, generated certificate and key, possibly
/// created by a root `bootstrap-admin`) to `user`, so the daemon can still open them once it
/// runs as that user. Files stay 0600 and the directory 0700.
fn hand_state_dir_to(cfg: &Config, user: &str) -> anyhow::Result<()> {
    let (uid, gid) = relay::privileges::lookup_user(user)
        .with_context(|| format!("looking up user {user}"))?
        .with_context(|| format!("no such user {user:?} (config key `user`)"))?;
    state_dir(cfg)?;
    std::os::unix::fs::chown(&cfg.state_dir, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to {user}", cfg.state_dir.display()))?;
    for entry in std::fs::read_dir(&cfg.state_dir)? {
        let path = entry?.path();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to {user}", path.display()))?;
    }
    Ok(())
}

fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    state_dir(cfg)?;
    Store::open(cfg.store_path()).with_context(|| format!("opening the store {}", cfg.store_path().display()))
}

fn bootstrap(config: &Path, label: &str) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let store = Arc::new(open_store(&cfg)?);
    let cluster = start_cluster(&cfg, &store, &Link::disabled(), Arc::default())?;
    if let Some(c) = &cluster {
        wait_synced(c, std::time::Duration::from_secs(10))?;
    }
    let now = unix_now();
    if control::server::auth::has_admin(&store, now)? {
        bail!("an admin key exists already; create further keys through the API");
    }
    let key = ApiKey::generate(Role::Admin, label, now)?;
    let actor = Actor { who: "bootstrap", source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), now, via: "bootstrap-admin" };
    let insert = Mutation::InsertKey(key.clone());
    match &cluster {
        Some(c) => drop(c.mutate(&insert, &actor)?),
        None => drop(store.mutate(&insert, &actor)?),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "SecretId: {}", key.secret_id)?;
    writeln!(out, "SecretKey: {}", key.secret_key.expose())?;
    writeln!(out, "# The SecretKey is shown only now. Keep it secret.")?;
    Ok(())
}

fn serve(config: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let listener = std::net::TcpListener::bind(cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    if let Some(user) = &cfg.user {
        if relay::privileges::is_root() {
            hand_state_dir_to(&cfg, user)?;
            relay::privileges::drop_privileges(user).with_context(|| format!("switching to user {user}"))?;
            tracing::info!(user, "dropped privileges");
        } else {
            tracing::warn!(user, "not started as root; `user` ignored");
        }
    }
    let store = Arc::new(open_store(&cfg)?);
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let (c, k, fresh) = tls::ensure_self_signed(&cfg.state_dir, bound, unix_now())?;
            if fresh {
                tracing::info!(cert = %c.display(), "generated a self-signed certificate");
            }
            (c, k)
        }
    };
    let certs = Arc::new(tls::CertStore::open(cert, key)?);
    let leases = cfg.cluster.is_some().then(|| Arc::new(Leases::default()));
    let peers = cfg.cluster.is_some().then(|| Arc::new(Peers::default()));
    let link = match &cfg.relayd_socket {
        Some(p) => Link::spawn(p.clone(), store.clone(), leases.clone(), peers.clone())?,
        None => Link::disabled(),
    };
    let cluster = start_cluster(&cfg, &store, &link, leases.unwrap_or_default())?;
    // Cascade legs: only with a relayd to drive.
    let leg_agent = match (&cluster, peers, &cfg.relayd_socket) {
        (Some(c), Some(p), Some(sock)) => {
            let t = Timings::for_ttl(c.cfg.node_ttl_ms);
            Some(legs::spawn(c.clone(), link.clone(), p, sock.clone(), t)?)
        }
        _ => None,
    };
    let agent = cluster.clone();
    let info = certs.info();
    tracing::info!(fingerprint = %info.sha256, listen = %bound, "relay-control starting");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "relay-control: certificate {}", info.sha256)?;
        writeln!(out, "relay-control: listening on https://{bound}")?;
        out.flush()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let server = Server::start(cfg, store, agent, link, certs)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
        };
        control::server::serve(server, listener, shutdown).await?;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(leg_agent);
    if let Some(c) = cluster {
        match c.leave() {
            Ok(()) => tracing::info!("left the cluster registry"),
            Err(e) => tracing::warn!(error = %e, "could not leave the cluster registry; it expires by itself"),
        }
    }
    Ok(())
}

/// The cluster agent and its follower, when `[cluster]` is configured.
fn start_cluster(
    cfg: &Config,
    store: &Arc<Store>,
    link: &Link,
    leases: Arc<Leases>,
) -> anyhow::Result<Option<Arc<Cluster>>> {
    let Some(cc) = cfg.cluster.clone() else { return Ok(None) };
    let node = cc.node_id.clone();
    let cluster = Cluster::new(cc, store.clone(), link.clone(), leases)?;
    control::cluster::follow::spawn(cluster.clone())?;
    tracing::info!(node, "cluster agent started");
    Ok(Some(cluster))
}

/// Waits until the cluster follower has synced this node's copy with Redis.
fn wait_synced(cluster: &Cluster, within: std::time::Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + within;
    while cluster.applied().epoch.is_empty() {
        if std::time::Instant::now() >= deadline {
            let why = cluster.health.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            bail!("could not sync with the cluster's Redis: {}", why.unwrap_or_else(|| "no answer".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

fn cluster_key(path: &Path) -> anyhow::Result<()> {
    control::cluster::seal::ClusterKey::generate(path)?;
    println!("wrote a new cluster key to {} (mode 0600); copy it to every node of the cluster", path.display());
    Ok(())
}

/// Sets up the log: `--log-format`, else the config's `log_format` (when there is a config).
fn init_log(flag: Option<relay::logging::LogFormat>, config: Option<&Path>) -> anyhow::Result<()> {
    let format = match (flag, config) {
        (Some(f), _) => f,
        (None, Some(c)) => Config::load(c)?.log_format,
        (None, None) => relay::logging::LogFormat::Text,
    };
    relay::logging::init(format, None)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { config } => {
            init_log(cli.log_format, Some(&config))?;
            serve(&config)
        }
        Cmd::BootstrapAdmin { config, label } => {
            init_log(cli.log_format, Some(&config))?;
            bootstrap(&config, &label)
        }
        Cmd::ExampleConfig => {
            print!("{}", control::server::config::EXAMPLE);
            Ok(())
        }
        Cmd::ClusterKey { out } => {
            init_log(cli.log_format, None)?;
            cluster_key(&out)
        }
    }
}
