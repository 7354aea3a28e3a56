//! relayd's runtime: [`Relay::start`] opens the backend (sockets, or the XDP program and
//! its AF_XDP sockets), spawns one pinned worker per socket or RX queue and the control
//! thread, and [`Relay::stop`] ends them. No async runtime: plain threads, each with its
//! own mio poll.
//!
//! Top of the `io` module order: it imports the workers ([`super::socket`],
//! [`super::xdp_worker`]), the control thread ([`super::control`]) and XDP setup
//! ([`super::xdp`]); none of them imports it.
//!
//! Start-up order: the backend's sockets (or the XDP program, loaded, with its AF_XDP
//! sockets in `xsks`), the workers, then the control thread's state, into which the saved
//! push ([`crate::pushed`], the state file) is restored; only then is the XDP program
//! attached, so a blocklist that must be rebuilt (its maps recreated) is in the kernel
//! before the first packet is filtered.
//!
//! Shutdown: a signal sets a flag; every loop polls with a short timeout and exits; the
//! state file's writer finishes last, so a save the control thread queued is written.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};

pub use super::control::Reloader;
use super::control::{ConfigOrigin, Control};
use super::mgmt_server::Server as MgmtServer;
use super::persist::{Saver, StateCounters, Writer};
use super::socket::Worker;
use super::sys;
use super::worker::{
    mono_ms, sum_counters, ControlIn, ControlQueues, WorkerCore, WorkerMsg, CONTROL_QUEUE, SESSION_CONTROL_QUEUE, WAKE,
};
use super::xdp::open_xdp;
use super::xdp_worker::XdpWorker;
use crate::config::{Backend, Validated};
use crate::engine::Engine;
use crate::limits::Limits;
use crate::pushed::{self, PushedConfig};
use crate::registry::Registry;
use crate::stats::{Snapshot, WorkerCounters};

/// The management listener; its connections use tokens from [`MGMT_CONNS`] on.
const MGMT: Token = Token(2);
const MGMT_CONNS: usize = 16;

/// A running relay.
pub struct Relay {
    threads: Vec<JoinHandle<()>>,
    /// The workers' counters, then the control thread's.
    counters: Vec<Arc<WorkerCounters>>,
    workers: usize,
    epoch: Instant,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    control_socket: Option<PathBuf>,
    /// The state file's writer, finished after the other threads.
    writer: Writer,
}

impl Relay {
    /// Binds the sockets (or attaches XDP and opens AF_XDP sockets) and starts the threads.
    /// `shutdown` is polled by every loop; `reloader`, if given, lets SIGHUP and the
    /// `reload` request re-read the config.
    pub fn start(
        cfg: &Validated,
        registry: Registry,
        shutdown: &'static AtomicBool,
        reloader: Option<Reloader>,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (ctl_tx, ctl_rx) = crossbeam_channel::bounded::<ControlIn>(CONTROL_QUEUE);
        let (ctl_session_tx, ctl_session_rx) = crossbeam_channel::bounded::<ControlIn>(SESSION_CONTROL_QUEUE);
        let queues = ControlQueues { joins: ctl_tx, sessions: ctl_session_tx };
        let ctl_poll = Poll::new()?;
        let ctl_waker = Arc::new(Waker::new(ctl_poll.registry(), WAKE)?);
        let mut threads = Vec::new();
        let mut counters = Vec::new();
        let mut links = Vec::new();
        // `spawn` builds what every worker shares (a `WorkerCore`: its channel, poll, engine
        // and counters), and `make` wraps it into a backend's worker.
        let mut spawn = |index: usize, name: String, make: &mut dyn FnMut(WorkerCore) -> Box<dyn FnOnce() + Send>| {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (tx, rx) = crossbeam_channel::unbounded::<WorkerMsg>();
            let c = Arc::new(WorkerCounters::default());
            counters.push(c.clone());
            links.push((tx, waker));
            let run = make(WorkerCore {
                index,
                pin: cfg.pin_workers,
                seccomp: cfg.security.worker_seccomp,
                poll,
                msgs: rx,
                to_control: queues.clone(),
                control_waker: ctl_waker.clone(),
                counters: c,
                epoch,
                stop: stop.clone(),
                shutdown,
            });
            threads.push(std::thread::Builder::new().name(name).spawn(run)?);
            io::Result::Ok(())
        };

        let (local_addr, filter) = match cfg.backend {
            Backend::Socket => {
                let first = sys::bind_reuseport(cfg.listen, 8 << 20)?;
                let local_addr = first.local_addr()?;
                let mut sockets = vec![first];
                for _ in 1..cfg.workers {
                    sockets.push(sys::bind_reuseport(local_addr, 8 << 20)?);
                }
                for (i, sock) in sockets.into_iter().enumerate() {
                    let mut sock = Some(sock);
                    spawn(i, format!("relay-worker-{i}"), &mut |core| {
                        let engine = Engine::new(core.counters.clone());
                        let w = Worker { core, sock: sock.take().expect("one worker per socket"), engine };
                        Box::new(move || w.run())
                    })?;
                }
                (local_addr, None)
            }
            Backend::Xdp => {
                let x = cfg.xdp.as_ref().expect("validated: backend xdp has [xdp]");
                let (filter, ports) = open_xdp(cfg, x)?;
                for (q, port) in ports.into_iter().enumerate() {
                    let mut port = Some(port);
                    spawn(q, format!("relay-xdp-q{q}"), &mut |core| {
                        let mut port = port.take().expect("one worker per queue");
                        port.set_worker_counters(core.counters.clone());
                        let engine = Engine::new(core.counters.clone());
                        let w = XdpWorker { core, port, engine, learned: std::collections::HashMap::new() };
                        Box::new(move || w.run())
                    })?;
                }
                (cfg.listen, Some((filter, cfg.listen)))
            }
        };

        let state = Arc::new(StateCounters::default());
        let saved = match pushed::load(&cfg.state_file) {
            Ok(s) => s,
            Err(e) => {
                state.load_failed.fetch_add(1, Relaxed);
                tracing::error!(
                    error = %e,
                    "cannot use the saved push: starting from the TOML file alone (the next push replaces the file)"
                );
                None
            }
        };
        let (saver, writer) = Saver::spawn(cfg.state_file.clone(), state.clone())?;
        let mgmt = match &cfg.control_socket {
            Some(p) => Some(MgmtServer::bind(p, cfg.control_uids.clone(), ctl_poll.registry(), MGMT, MGMT_CONNS)?),
            None => None,
        };
        let workers = counters.len();
        let own = Arc::new(WorkerCounters::default());
        counters.push(own.clone());
        let mut ctl = Control {
            pushed: PushedConfig::new(),
            saver,
            state,
            origin: ConfigOrigin::File,
            own,
            route: None,
            registry,
            poll: ctl_poll,
            rx: ctl_rx,
            rx_sessions: ctl_session_rx,
            workers: links,
            counters: counters.clone(),
            mgmt,
            filter,
            limits: initial_limits(cfg),
            local_addr,
            key_file: Some(cfg.key_file.clone()),
            epoch,
            stop: stop.clone(),
            shutdown,
            running: cfg.clone(),
            reloader,
            apps_pushed: false,
            new_allowed: None,
            leg_addrs: std::collections::HashMap::new(),
        };
        match &saved {
            Some(saved) => {
                ctl.restore(saved);
                let s = ctl.pushed.summary();
                tracing::info!(
                    path = %cfg.state_file.display(),
                    saved_at = saved.saved_at,
                    apps = s["apps"],
                    limits = s["limits"],
                    blocks = s["blocks"],
                    bans = s["bans"],
                    refused = ctl.state.restore_refused.load(Relaxed),
                    "starting from the config pushed last (saved): it wins over the TOML file until relay-control pushes again"
                );
            }
            None => tracing::info!(
                path = %cfg.state_file.display(),
                "no saved push: starting from the TOML file alone"
            ),
        }
        let stop_all = |threads: Vec<JoinHandle<()>>, writer: Writer| {
            stop.store(true, Relaxed);
            for t in threads {
                let _ = t.join();
            }
            writer.finish();
        };
        if let Some((f, _)) = ctl.filter.as_mut() {
            // Attached last: the AF_XDP sockets are in `xsks` and the blocklist is restored.
            match f.attach() {
                Ok(how) => tracing::info!(attached = ?how, "XDP program attached"),
                Err(e) => {
                    drop(ctl);
                    stop_all(threads, writer);
                    return Err(io::Error::other(e.to_string()));
                }
            }
        }
        let started = std::thread::Builder::new().name("relay-control".into()).spawn(move || ctl.run());
        match started {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop_all(threads, writer);
                return Err(e);
            }
        }
        Ok(Self {
            threads,
            counters,
            workers,
            epoch,
            local_addr,
            stop,
            control_socket: cfg.control_socket.clone(),
            writer,
        })
    }

    /// The bound address (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sum of the workers' counters, and each worker's lag.
    pub fn snapshot(&self) -> Snapshot {
        sum_counters(&self.counters, self.workers, mono_ms(self.epoch))
    }

    /// Stops every thread and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.writer.finish();
        if let Some(p) = &self.control_socket {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Waits until a shutdown signal, then stops.
    pub fn wait(self, shutdown: &AtomicBool) {
        while !shutdown.load(Relaxed) && !self.threads.iter().any(|t| t.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
    }
}

/// What would stop relayd from starting with `cfg` as the current user, found without
/// creating or binding anything (`relayd check`, and `relayd run` before it starts): the
/// management socket's directory and the key file must be creatable (or the key file
/// readable). Each problem names the config key, the path and the fix.
pub fn preflight(cfg: &Validated) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(p) = &cfg.control_socket {
        if let Err(e) = may_create("control_socket", p, super::mgmt_server::SOCKET_HINT) {
            problems.push(e);
        }
    }
    let key_hint = "; run relayd as root, or set [identity] key_file to a path this user may create \
(a relative path is relative to the config file, e.g. key_file = \"relay.key\")";
    if cfg.key_file.exists() {
        if let Err(e) = std::fs::File::open(&cfg.key_file) {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied { key_hint } else { "" };
            problems.push(format!("[identity] key_file {}: cannot read it: {e}{hint}", cfg.key_file.display()));
        }
    } else if let Err(e) = may_create("[identity] key_file", &cfg.key_file, key_hint) {
        problems.push(e);
    }
    problems
}

/// Checks that the current user may create `path`: the nearest existing ancestor of its
/// directory must be a directory this user may write (the directories in between are
/// created at start).
fn may_create(key: &str, path: &std::path::Path, hint: &str) -> Result<(), String> {
    use std::path::Path;
    let parent = |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_owned);
    let mut existing = parent(path).unwrap_or_else(|| PathBuf::from("."));
    while !existing.exists() {
        existing = parent(&existing).unwrap_or_else(|| PathBuf::from("."));
    }
    if !existing.is_dir() {
        return Err(format!("{key} {}: {} is not a directory", path.display(), existing.display()));
    }
    match sys::may_create_in(&existing) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{key} {}: uid {} may not create it ({} is not writable for this user){hint}",
            path.display(),
            sys::euid(),
            existing.display()
        )),
        Err(e) => Err(format!("{key} {}: checking {}: {e}", path.display(), existing.display())),
    }
}

/// The limits relayd starts with: the `[xdp]` settings, or (socket backend without them)
/// no per-source limits, which is what the socket backend enforces.
fn initial_limits(cfg: &Validated) -> Limits {
    let port = cfg.listen.port();
    let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    match &cfg.xdp {
        Some(x) => Limits {
            pps_rate_per_sec: u32_of(x.pps_rate_per_sec),
            pps_burst: u32_of(x.pps_burst),
            join_rate_per_sec: u32_of(x.join_rate_per_sec),
            join_burst: u32_of(x.join_burst),
            port_min: port,
            port_max: port,
        },
        None => Limits {
            pps_rate_per_sec: 0,
            pps_burst: 0,
            join_rate_per_sec: 0,
            join_burst: 0,
            port_min: port,
            port_max: port,
        },
    }
}
