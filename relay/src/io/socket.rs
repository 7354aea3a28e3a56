//! The socket backend: `relayd`'s threads around the sans-IO core.
//!
//! - **Workers** (one per `SO_REUSEPORT` socket, pinned to a core) receive batches with
//!   `recvmmsg`, run media through their [`Engine`] replica, and send with `sendmmsg`.
//!   Control datagrams (first byte 0–3) are copied into a bounded, preallocated channel to
//!   the control thread; when it is full they are dropped and counted, never queued
//!   without bound.
//! - **The control thread** owns the [`Registry`]: it answers joins, keepalives and leaves,
//!   expires idle sessions, and fans [`Update`]s out to every worker. A reply goes back
//!   through the worker that received the request, after the updates, so by the time a
//!   client reads join-ok the worker that will see its media already knows the session.
//!   It also serves the optional management socket ([`super::mgmt`]: counters, rooms,
//!   operator actions, the XDP blocklist and limits), non-blocking on the same poll.
//!
//! Liveness: every worker wakes at least every 100 ms and stores a heartbeat
//! ([`WorkerCounters::mark_loop`]) after each loop iteration and each RX batch; the control
//! thread reports the age of each as `worker_lag_ms`.
//!
//! Shutdown: a signal sets a flag; every loop polls with a short timeout and exits.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};

use super::afxdp::{LocalEndpoint, XskConfig, XskMode, XskPort};
use super::mgmt;
use super::netlink::{Neighbor, Route, RouteSocket};
use super::sys::{self, RecvBatch, SendBatch};
use super::xdp::{FilterConfig, XdpFilter};
use super::xdp_worker::XdpWorker;
use crate::config::{Backend, Validated, XdpSettings, XskMode as CfgXskMode};
use crate::engine::{Engine, TxSink};
use crate::ids::{RoomId, RoomKey, SdkAppId, SessionId, UserId};
use crate::proto::{self, Demux};
use crate::proto::{ErrorCode, JoinError};
use crate::registry::{Now, Outcome, Registry, Update};
use crate::stats::{DropReason, Snapshot, WorkerCounters};

const SOCK: Token = Token(0);
const WAKE: Token = Token(1);
/// The management listener; its connections use tokens from [`MGMT_CONNS`] on.
const MGMT: Token = Token(2);
const MGMT_CONNS: usize = 16;
/// Datagrams per `recvmmsg`.
pub const RX_BATCH: usize = 32;
/// Outgoing datagrams buffered per `sendmmsg`; flushed after every RX batch (or when full).
pub const TX_BATCH: usize = 128;
/// Capacity of the worker → control queue.
pub const CONTROL_QUEUE: usize = 1024;
/// Workers wait at most this long for traffic, so their heartbeat stays fresh.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often the control thread deletes expired blocklist entries.
const BLOCKLIST_PURGE_MS: u64 = 60_000;
const REPLY_MAX: usize = 96;

pub(super) struct ControlIn {
    pub worker: usize,
    pub src: SocketAddr,
    pub len: usize,
    pub data: [u8; proto::MAX_LEN],
}

pub(super) enum WorkerMsg {
    Update(Update),
    Reply {
        dst: SocketAddr,
        len: usize,
        data: [u8; REPLY_MAX],
    },
    /// The kernel's neighbour and route tables, dumped by the control thread (XDP backend),
    /// so workers never block on netlink.
    Neighbors(Arc<(Vec<Neighbor>, Vec<Route>)>),
}

/// Monotonic milliseconds since `epoch`, the clock every thread shares.
pub(super) fn mono_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

fn now(epoch: Instant) -> Now {
    let unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Now { mono_ms: mono_ms(epoch), unix_secs }
}

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
}

impl Relay {
    /// Binds the sockets (or attaches XDP and opens AF_XDP sockets) and starts the threads.
    /// `shutdown` is polled by every loop.
    pub fn start(cfg: &Validated, registry: Registry, shutdown: &'static AtomicBool) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (ctl_tx, ctl_rx) = crossbeam_channel::bounded::<ControlIn>(CONTROL_QUEUE);
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
                poll,
                msgs: rx,
                to_control: ctl_tx.clone(),
                control_waker: ctl_waker.clone(),
                engine: Engine::new(c),
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
                        let w = Worker { core, sock: sock.take().expect("one worker per socket") };
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
                        port.set_worker_counters(core.engine.counters().clone());
                        let w = XdpWorker { core, port, learned: std::collections::HashMap::new() };
                        Box::new(move || w.run())
                    })?;
                }
                (cfg.listen, Some((filter, cfg.listen)))
            }
        };

        let mgmt = match &cfg.control_socket {
            Some(p) => Some(mgmt::Server::bind(p, cfg.control_uids.clone(), ctl_poll.registry(), MGMT, MGMT_CONNS)?),
            None => None,
        };
        let workers = counters.len();
        let own = Arc::new(WorkerCounters::default());
        counters.push(own.clone());
        let ctl = Control {
            own,
            route: None,
            registry,
            poll: ctl_poll,
            rx: ctl_rx,
            workers: links,
            counters: counters.clone(),
            mgmt,
            filter,
            limits: initial_limits(cfg),
            listen_port: local_addr.port(),
            epoch,
            stop: stop.clone(),
            shutdown,
        };
        threads.push(std::thread::Builder::new().name("relay-control".into()).spawn(move || ctl.run())?);
        Ok(Self { threads, counters, workers, epoch, local_addr, stop, control_socket: cfg.control_socket.clone() })
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

/// Sums `counters` (the first `workers` are the workers') and reads each worker's lag.
fn sum_counters(counters: &[Arc<WorkerCounters>], workers: usize, now_ms: u64) -> Snapshot {
    let mut s = Snapshot::default();
    for c in counters {
        s.add_worker(c);
    }
    s.worker_lag_ms = counters[..workers].iter().map(|c| c.lag_ms(now_ms)).collect();
    s
}

/// The limits relayd starts with: the `[xdp]` settings, or (socket backend without them)
/// no per-source limits, which is what the socket backend enforces.
fn initial_limits(cfg: &Validated) -> mgmt::Limits {
    let port = cfg.listen.port();
    let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    match &cfg.xdp {
        Some(x) => mgmt::Limits {
            pps_rate_per_sec: u32_of(x.pps_rate_per_sec),
            pps_burst: u32_of(x.pps_burst),
            join_rate_per_sec: u32_of(x.join_rate_per_sec),
            join_burst: u32_of(x.join_burst),
            port_min: port,
            port_max: port,
        },
        None => mgmt::Limits {
            pps_rate_per_sec: 0,
            pps_burst: 0,
            join_rate_per_sec: 0,
            join_burst: 0,
            port_min: port,
            port_max: port,
        },
    }
}

/// What every worker has, whatever its backend.
pub(super) struct WorkerCore {
    pub index: usize,
    pub pin: bool,
    pub poll: Poll,
    pub msgs: Receiver<WorkerMsg>,
    pub to_control: Sender<ControlIn>,
    pub control_waker: Arc<Waker>,
    pub engine: Engine,
    pub epoch: Instant,
    pub stop: Arc<AtomicBool>,
    pub shutdown: &'static AtomicBool,
}

impl WorkerCore {
    /// Pins the thread if configured (call first thing on the worker's thread).
    pub fn pin(&self) {
        if self.pin {
            pin_worker(self.index);
        }
    }

    /// Until stop or a shutdown signal.
    pub fn running(&self) -> bool {
        !self.stop.load(Relaxed) && !self.shutdown.load(Relaxed)
    }
}

struct Worker {
    core: WorkerCore,
    sock: UdpSocket,
}

/// The engine's [`TxSink`] over a `sendmmsg` batch: when the batch fills, it is flushed.
struct SocketSink<'a> {
    batch: &'a mut SendBatch,
    sock: &'a UdpSocket,
    counters: &'a WorkerCounters,
}

impl SocketSink<'_> {
    fn flush(&mut self) {
        let f = self.batch.flush(self.sock);
        self.counters.tx_packets.fetch_add(f.sent as u64, Relaxed);
        self.counters.tx_bytes.fetch_add(f.bytes as u64, Relaxed);
        self.counters.drops[DropReason::TxFull as usize].fetch_add(f.dropped as u64, Relaxed);
    }
}

impl TxSink for SocketSink<'_> {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        if self.batch.is_full() {
            self.flush();
        }
        self.batch.next_buffer()
    }
    fn commit(&mut self, dst: SocketAddr, len: usize) -> bool {
        self.batch.push(dst, len);
        true
    }
}

impl Worker {
    fn run(mut self) {
        self.core.pin();
        let fd = {
            use std::os::fd::AsRawFd;
            self.sock.as_raw_fd()
        };
        if let Err(e) = self.core.poll.registry().register(&mut mio::unix::SourceFd(&fd), SOCK, Interest::READABLE) {
            tracing::error!(worker = self.core.index, error = %e, "cannot register socket");
            return;
        }
        let mut events = Events::with_capacity(8);
        let mut rx = RecvBatch::new(RX_BATCH);
        let mut tx = SendBatch::new(TX_BATCH);
        while self.core.running() {
            if let Err(e) = self.core.poll.poll(&mut events, Some(POLL_TIMEOUT)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.core.index, error = %e, "poll failed");
                    return;
                }
            }
            self.drain_messages(&mut tx);
            let counters = self.core.engine.counters().clone();
            // Edge-triggered: read until the socket would block.
            loop {
                match rx.recv(&self.sock) {
                    Ok(n) => {
                        self.process(&mut rx, n, &mut tx);
                        // Send what this batch produced before reading the next one: under a
                        // sustained backlog the socket never runs dry, and holding output
                        // until the TX batch fills would delay it by up to TX_BATCH packets'
                        // worth of work (and, at a slow rate, indefinitely).
                        SocketSink { batch: &mut tx, sock: &self.sock, counters: &counters }.flush();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(worker = self.core.index, error = %e, "recvmmsg failed");
                        break;
                    }
                }
                // Apply control updates between batches so joins take effect promptly.
                self.drain_messages(&mut tx);
            }
            SocketSink { batch: &mut tx, sock: &self.sock, counters: &counters }.flush();
            counters.mark_loop(mono_ms(self.core.epoch));
        }
    }

    fn drain_messages(&mut self, tx: &mut SendBatch) {
        while let Ok(m) = self.core.msgs.try_recv() {
            match m {
                WorkerMsg::Neighbors(_) => {}
                WorkerMsg::Update(u) => self.core.engine.apply(&u),
                WorkerMsg::Reply { dst, len, data } => {
                    let counters = self.core.engine.counters().clone();
                    let mut sink = SocketSink { batch: tx, sock: &self.sock, counters: &counters };
                    if let Some(b) = sink.buffer() {
                        b[..len].copy_from_slice(&data[..len]);
                        sink.commit(dst, len);
                    }
                }
            }
        }
    }

    fn process(&mut self, rx: &mut RecvBatch, n: usize, tx: &mut SendBatch) {
        let now_ms = mono_ms(self.core.epoch);
        let counters = self.core.engine.counters().clone();
        let mut wake_control = false;
        for i in 0..n {
            let Some((src, data)) = rx.get(i) else {
                counters.count_drop(DropReason::Malformed);
                continue;
            };
            counters.rx(data.len());
            match proto::demux(data) {
                Demux::Media => {
                    let mut sink = SocketSink { batch: tx, sock: &self.sock, counters: &counters };
                    self.core.engine.handle(now_ms, src, data, &mut sink);
                }
                Demux::Control => {
                    wake_control |= enqueue_control(&self.core.to_control, self.core.index, src, data, &counters)
                }
                Demux::Other => counters.count_drop(DropReason::NotRelayed),
            }
        }
        if wake_control {
            let _ = self.core.control_waker.wake();
        }
        counters.mark_loop(now_ms);
    }
}

struct Control {
    registry: Registry,
    poll: Poll,
    rx: Receiver<ControlIn>,
    workers: Vec<(Sender<WorkerMsg>, Arc<Waker>)>,
    counters: Vec<Arc<WorkerCounters>>,
    /// The management socket (if `control_socket` is set).
    mgmt: Option<mgmt::Server>,
    /// The XDP filter and the relay address sessions are keyed with (XDP backend only).
    filter: Option<(XdpFilter, SocketAddr)>,
    /// The limits in force (written to the filter's `config` map on the XDP backend).
    limits: mgmt::Limits,
    /// The UDP port relayd listens on: every port range must contain it.
    listen_port: u16,
    /// The control thread's own counters (rejected control messages); part of `counters`.
    own: Arc<WorkerCounters>,
    /// Netlink socket for the neighbour dumps (XDP backend), opened on first use.
    route: Option<RouteSocket>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    shutdown: &'static AtomicBool,
}

impl Control {
    fn run(mut self) {
        let mut events = Events::with_capacity(32);
        let mut updates = Vec::new();
        let mut last_expiry = 0;
        let mut last_purge = 0;
        // A second handle to the poll's registry, so connections can be (de)registered
        // while requests borrow `self` mutably.
        let mgmt_registry = match self.poll.registry().try_clone() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "cannot clone the poll registry: the management socket is not served");
                None
            }
        };
        // Which workers got messages this round (reused: the control loop allocates only
        // what the registry needs).
        let mut wake = vec![false; self.workers.len()];
        self.push_neighbors(&mut wake);
        self.wake_workers(&mut wake);
        while !self.stop.load(Relaxed) && !self.shutdown.load(Relaxed) {
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(250))) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "control poll failed");
                    return;
                }
            }
            while let Ok(m) = self.rx.try_recv() {
                let now = now(self.epoch);
                let mut reply = [0u8; REPLY_MAX];
                let (outcome, mut n) = self.registry.handle(now, m.src, &m.data[..m.len], &mut reply, &mut updates);
                log_outcome(m.src, outcome);
                if outcome == Outcome::Ignored {
                    self.own.count_drop(DropReason::ControlRejected);
                }
                let failed = self.broadcast(&mut updates, &mut wake);
                if !failed.is_empty() {
                    // The kernel would drop this session's media: take the join back.
                    for id in &failed {
                        self.registry.remove(*id, &mut updates);
                    }
                    self.broadcast(&mut updates, &mut wake);
                    if matches!(outcome, Outcome::Joined(id) if failed.contains(&id)) {
                        n = JoinError::write(
                            ErrorCode::Overloaded,
                            "cannot install the session now; retry",
                            &mut reply,
                            m.len,
                        );
                    }
                }
                if let Some(len) = n {
                    let _ = self.workers[m.worker].0.send(WorkerMsg::Reply { dst: m.src, len, data: reply });
                    wake[m.worker] = true;
                }
            }
            let now = now(self.epoch);
            if now.mono_ms >= last_expiry + 1000 {
                last_expiry = now.mono_ms;
                self.push_neighbors(&mut wake);
                let n = self.registry.expire(now, &mut updates);
                if n > 0 {
                    tracing::info!(expired = n, "expired idle sessions");
                }
                self.broadcast_all(&mut updates, &mut wake);
            }
            if now.mono_ms >= last_purge + BLOCKLIST_PURGE_MS {
                last_purge = now.mono_ms;
                if let Some((f, _)) = self.filter.as_mut() {
                    if let Err(e) = f.blocklist(xdp_prog::boot_time_ns()) {
                        tracing::warn!(error = %e, "cannot sweep expired blocklist entries");
                    }
                }
            }
            self.wake_workers(&mut wake);
            if let (Some(reg), Some(mut server)) = (mgmt_registry.as_ref(), self.mgmt.take()) {
                for e in &events {
                    if server.owns(e.token()) {
                        server.handle(reg, e.token(), &mut |req| self.execute(req, &mut wake));
                    }
                }
                self.mgmt = Some(server);
                self.wake_workers(&mut wake);
            }
        }
    }

    /// Sends updates to every worker, after opening or closing the session's 5-tuple in the
    /// kernel filter, so the first media packet after join-ok is already let through.
    /// Returns the sessions whose 5-tuple could not be installed in the kernel filter
    /// (map full): they were not sent to the workers and must be removed.
    fn broadcast(&mut self, updates: &mut Vec<Update>, wake: &mut [bool]) -> Vec<SessionId> {
        let mut failed = Vec::new();
        for u in updates.drain(..) {
            if let Some((f, local)) = self.filter.as_mut() {
                let r = match &u {
                    Update::Up(info) => f.add_session(info.addr, *local, info.id.0),
                    Update::Down(info) => f.remove_session(info.addr, *local),
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot update the XDP sessions map");
                    if let Update::Up(info) = &u {
                        failed.push(info.id);
                        continue;
                    }
                }
            }
            for (i, (tx, _)) in self.workers.iter().enumerate() {
                let _ = tx.send(WorkerMsg::Update(u.clone()));
                wake[i] = true;
            }
        }
        failed
    }

    /// Wakes the workers marked in `wake` and clears the marks.
    fn wake_workers(&self, wake: &mut [bool]) {
        for (i, w) in wake.iter_mut().enumerate() {
            if std::mem::take(w) {
                let _ = self.workers[i].1.wake();
            }
        }
    }

    /// XDP backend: dumps the kernel's neighbour and route tables and sends them to every
    /// worker (once a second, from here, so the workers never wait on netlink).
    fn push_neighbors(&mut self, wake: &mut [bool]) {
        if self.filter.is_none() {
            return;
        }
        if self.route.is_none() {
            match RouteSocket::open() {
                Ok(r) => self.route = Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "no netlink socket: next hops only from learned MACs");
                    return;
                }
            }
        }
        let r = self.route.as_mut().expect("opened above");
        match r.neighbors().and_then(|n| Ok((n, r.routes()?))) {
            Ok(tables) => {
                let tables = Arc::new(tables);
                for (i, (tx, _)) in self.workers.iter().enumerate() {
                    let _ = tx.send(WorkerMsg::Neighbors(tables.clone()));
                    wake[i] = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "neighbour table dump failed"),
        }
    }

    /// Broadcasts, and takes back any session the kernel filter refused (expiry and removal
    /// paths, where no reply needs rewriting).
    fn broadcast_all(&mut self, updates: &mut Vec<Update>, wake: &mut [bool]) {
        let mut failed = self.broadcast(updates, wake);
        while !failed.is_empty() {
            for id in failed.drain(..) {
                self.registry.remove(id, updates);
            }
            failed = self.broadcast(updates, wake);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = sum_counters(&self.counters, self.workers.len(), mono_ms(self.epoch));
        for (k, v) in self.registry.join_counts() {
            s.joins.insert(k.to_owned(), v);
        }
        s.sessions = self.registry.session_count() as u64;
        s.rooms = self.registry.room_count() as u64;
        if let Some((f, _)) = &self.filter {
            match f.counters() {
                Ok(c) => {
                    for r in c {
                        s.xdp.insert(r.reason.name().to_owned(), r.packets);
                        s.xdp_bytes.insert(r.reason.name().to_owned(), r.bytes);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read XDP counters"),
            }
        }
        s
    }

    fn execute(&mut self, req: mgmt::Request, wake: &mut [bool]) -> mgmt::Response {
        use mgmt::{Request, Response};
        let room_key = |sdkappid: u64, room: &str| -> Result<RoomKey, String> {
            let app = SdkAppId::new(sdkappid).map_err(|e| format!("sdkappid {sdkappid}: {e}"))?;
            let room = RoomId::parse(room).map_err(|e| format!("room {room:?}: {e}"))?;
            Ok(RoomKey { app, room })
        };
        let mut updates = Vec::new();
        let resp = match req {
            Request::Stats {} => Response { ok: true, stats: Some(self.snapshot()), ..Response::default() },
            Request::DismissRoom { sdkappid, room } => match room_key(sdkappid, &room) {
                Ok(k) => {
                    let n = self.registry.dismiss_room(&k, &mut updates);
                    tracing::info!(room = %k, sessions = n, "room dismissed by the operator");
                    Response { ok: true, removed: Some(n as u64), ..Response::default() }
                }
                Err(e) => Response::error(e),
            },
            Request::RemoveUser { sdkappid, room, user } => match (room_key(sdkappid, &room), UserId::new(&user)) {
                (Ok(k), Ok(u)) => {
                    let n = u64::from(self.registry.remove_user(&k, &u, &mut updates));
                    tracing::info!(room = %k, user = %u, removed = n, "user removed by the operator");
                    Response { ok: true, removed: Some(n), ..Response::default() }
                }
                (Err(e), _) => Response::error(e),
                (_, Err(e)) => Response::error(format!("user {user:?}: {e}")),
            },
            Request::SetApps { apps } => {
                let mut valid = Vec::with_capacity(apps.len());
                let mut err = None;
                for a in apps {
                    match SdkAppId::new(a.sdkappid).map_err(|e| format!("sdkappid {}: {e}", a.sdkappid)).and_then(
                        |id| {
                            crate::config::App::new(id, a.secrets, a.require_private_map_key, a.profiles, a.quotas)
                                .map_err(|e| e.to_string())
                        },
                    ) {
                        Ok(app) if valid.iter().any(|v: &crate::config::App| v.sdkappid == app.sdkappid) => {
                            err = Some(format!("app {} given twice", app.sdkappid));
                            break;
                        }
                        Ok(app) => valid.push(app),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                match err {
                    // All or nothing: a bad push leaves the running config as it was.
                    Some(e) => Response::error(e),
                    None => {
                        let n = self.registry.set_apps(valid, &mut updates);
                        tracing::info!(ended = n, "apps replaced by a push");
                        Response { ok: true, removed: Some(n as u64), ..Response::default() }
                    }
                }
            }
            Request::Block { ip, prefix_len, ttl_secs } => match self.filter.as_mut() {
                None => Response::error("blocking needs the XDP backend"),
                Some((f, _)) => {
                    let expires = match ttl_secs {
                        0 => 0,
                        t => xdp_prog::boot_time_ns().saturating_add(t.saturating_mul(1_000_000_000)),
                    };
                    match f.block(ip, prefix_len, expires) {
                        Ok(()) => {
                            tracing::info!(%ip, prefix_len, ttl_secs, "source blocked by the operator");
                            Response::ok()
                        }
                        Err(e) => Response::error(e.to_string()),
                    }
                }
            },
            Request::Unblock { ip, prefix_len } => match self.filter.as_mut() {
                None => Response::error("unblocking needs the XDP backend"),
                Some((f, _)) => match f.unblock(ip, prefix_len) {
                    Ok(found) => {
                        tracing::info!(%ip, prefix_len, found, "source unblocked by the operator");
                        Response { removed: Some(u64::from(found)), ..Response::ok() }
                    }
                    Err(e) => Response::error(e.to_string()),
                },
            },
            Request::Blocklist {} => match self.filter.as_mut() {
                None => Response { blocks: Some(Vec::new()), ..Response::ok() },
                Some((f, _)) => {
                    let now = xdp_prog::boot_time_ns();
                    match f.blocklist(now) {
                        Ok(list) => {
                            let blocks = list
                                .into_iter()
                                .map(|b| mgmt::BlockInfo {
                                    ip: b.ip,
                                    prefix_len: b.prefix_len,
                                    expires_in_secs: (b.expires_ns != 0)
                                        .then(|| (b.expires_ns.saturating_sub(now)).div_ceil(1_000_000_000)),
                                })
                                .collect();
                            Response { blocks: Some(blocks), ..Response::ok() }
                        }
                        Err(e) => Response::error(e.to_string()),
                    }
                }
            },
            Request::Rooms { sdkappid, limit } => self.rooms(sdkappid, limit),
            Request::GetLimits {} => Response { limits: Some(self.current_limits()), ..Response::ok() },
            Request::SetLimits(l) => self.set_limits(l),
            Request::Offenders { limit } => match &self.filter {
                None => Response { offenders: Some(Vec::new()), ..Response::ok() },
                Some((f, _)) => match f.offenders(limit.unwrap_or(mgmt::OFFENDERS_DEFAULT_LIMIT) as usize) {
                    Ok(list) => {
                        let offenders = list
                            .into_iter()
                            .map(|(ip, dropped_packets)| mgmt::Offender { ip, dropped_packets })
                            .collect();
                        Response { offenders: Some(offenders), ..Response::ok() }
                    }
                    Err(e) => Response::error(e.to_string()),
                },
            },
        };
        self.broadcast_all(&mut updates, wake);
        resp
    }
}

impl Control {
    fn rooms(&self, sdkappid: Option<u64>, limit: Option<u32>) -> mgmt::Response {
        use crate::usersig::PrivilegeMap as P;
        use mgmt::{MemberInfo, Response, RoomInfo};
        let limit = limit.unwrap_or(mgmt::ROOMS_DEFAULT_LIMIT);
        if limit > mgmt::ROOMS_MAX_LIMIT {
            return Response::error(format!("limit {limit}: at most {}", mgmt::ROOMS_MAX_LIMIT));
        }
        let app = match sdkappid.map(SdkAppId::new).transpose() {
            Ok(a) => a,
            Err(e) => return Response::error(format!("sdkappid {}: {e}", sdkappid.unwrap_or_default())),
        };
        let rooms = self
            .registry
            .list_rooms(app, limit as usize)
            .into_iter()
            .map(|(key, members)| RoomInfo {
                sdkappid: key.app.get().into(),
                room: mgmt::room_text(&key.room),
                members: members
                    .into_iter()
                    .map(|m| MemberInfo {
                        user: m.user.as_str().to_owned(),
                        addr: m.addr.to_string(),
                        send: m.privileges.contains(P::SEND_AUDIO) || m.privileges.contains(P::SEND_VIDEO),
                        recv: m.privileges.contains(P::RECV_AUDIO) || m.privileges.contains(P::RECV_VIDEO),
                    })
                    .collect(),
            })
            .collect();
        Response { rooms: Some(rooms), ..Response::ok() }
    }

    /// The limits in force: read back from the kernel on the XDP backend.
    fn current_limits(&self) -> mgmt::Limits {
        let Some((f, _)) = &self.filter else { return self.limits };
        match f.config() {
            Ok(c) => {
                let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
                mgmt::Limits {
                    pps_rate_per_sec: u32_of(c.pps_rate_per_sec),
                    pps_burst: u32_of(c.pps_burst),
                    join_rate_per_sec: u32_of(c.join_rate_per_sec),
                    join_burst: u32_of(c.join_burst),
                    port_min: c.port_lo,
                    port_max: c.port_hi,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the XDP config map");
                self.limits
            }
        }
    }

    fn set_limits(&mut self, l: mgmt::Limits) -> mgmt::Response {
        use mgmt::Response;
        let Some((f, _)) = self.filter.as_mut() else {
            return Response::error(
                "per-source limits need the xdp backend: this relayd runs the socket backend, which has none",
            );
        };
        if let Err(e) = l.check(self.listen_port) {
            return Response::error(e);
        }
        let fc = FilterConfig {
            port_lo: l.port_min,
            port_hi: l.port_max,
            flags: 0,
            join_rate_per_sec: l.join_rate_per_sec.into(),
            join_burst: l.join_burst.into(),
            pps_rate_per_sec: l.pps_rate_per_sec.into(),
            pps_burst: l.pps_burst.into(),
        };
        match f.set_config(fc) {
            Ok(()) => {
                self.limits = l;
                tracing::info!(limits = ?l, "limits changed");
                Response { limits: Some(l), ..Response::ok() }
            }
            Err(e) => Response::error(e.to_string()),
        }
    }
}

fn log_outcome(src: SocketAddr, o: Outcome) {
    match o {
        Outcome::Joined(id) => tracing::info!(%src, session = %id, "join accepted"),
        Outcome::Left(id) => tracing::info!(%src, session = %id, "session left"),
        Outcome::Refused(code) => tracing::debug!(%src, code = code.name(), "join refused"),
        Outcome::KeptAlive(_) | Outcome::Ignored => {}
    }
}

/// Pins worker `index` to core `index mod cores`, warning if the kernel refuses.
pub(super) fn pin_worker(index: usize) {
    // The i-th CPU of the allowed set, not core i: under `taskset -c 1` worker 0 must stay on
    // CPU 1 instead of moving to core 0.
    let allowed = sys::allowed_cpus().unwrap_or_else(|e| {
        tracing::warn!(worker = index, error = %e, "cannot read the CPU affinity mask");
        Vec::new()
    });
    let core = worker_core(index, &allowed);
    if let Err(e) = sys::pin_to_core(core) {
        tracing::warn!(worker = index, core, error = %e, "cannot pin worker to a core");
    }
}

/// The core for worker `index`: the `index`-th of the `allowed` CPUs, round robin (`index`
/// itself when the mask is unknown).
fn worker_core(index: usize, allowed: &[usize]) -> usize {
    if allowed.is_empty() {
        index
    } else {
        allowed[index % allowed.len()]
    }
}

/// Copies a control datagram into the bounded queue to the control thread. Returns whether
/// it was queued (the caller then wakes the control thread once per batch); oversize
/// datagrams and a full queue are counted drops.
pub(super) fn enqueue_control(
    to_control: &Sender<ControlIn>,
    worker: usize,
    src: SocketAddr,
    data: &[u8],
    counters: &WorkerCounters,
) -> bool {
    if data.len() > proto::MAX_LEN {
        counters.count_drop(DropReason::Malformed);
        return false;
    }
    let mut m = ControlIn { worker, src, len: data.len(), data: [0; proto::MAX_LEN] };
    m.data[..data.len()].copy_from_slice(data);
    match to_control.try_send(m) {
        Ok(()) => {
            counters.control_in.fetch_add(1, Relaxed);
            true
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            counters.count_drop(DropReason::ControlQueueFull);
            false
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Attaches the XDP program to the interface and opens one AF_XDP socket per RX queue.
fn open_xdp(cfg: &Validated, x: &XdpSettings) -> io::Result<(XdpFilter, Vec<XskPort>)> {
    let ifindex = super::netns::ifindex(&x.iface).map_err(|e| io_err(format!("interface {}: {e}", x.iface)))?;
    let queues = x.queues.unwrap_or_else(|| rx_queues(&x.iface));
    let pin = if x.pin_maps {
        sys::ensure_bpffs("/sys/fs/bpf").map_err(|e| io_err(format!("mounting bpffs at /sys/fs/bpf: {e}")))?;
        Some(xdp_prog::PIN_DIR)
    } else {
        None
    };
    let port = cfg.listen.port();
    let fc = FilterConfig {
        port_lo: port,
        port_hi: port,
        flags: 0,
        join_rate_per_sec: x.join_rate_per_sec,
        join_burst: x.join_burst,
        pps_rate_per_sec: x.pps_rate_per_sec,
        pps_burst: x.pps_burst,
    };
    let mut filter = XdpFilter::load_sized(&x.iface, pin, fc, x.max_sessions).map_err(io_err)?;
    let mac = RouteSocket::open()?
        .link_mac(ifindex)
        .map_err(io_err)?
        .ok_or_else(|| io_err(format!("interface {} has no MAC address", x.iface)))?;
    let local = LocalEndpoint {
        mac,
        v4: cfg.listen.is_ipv4().then_some(cfg.listen),
        v6: cfg.listen.is_ipv6().then_some(cfg.listen),
    };
    let mode = match x.mode {
        CfgXskMode::Auto => XskMode::Auto,
        CfgXskMode::Copy => XskMode::Copy,
        CfgXskMode::Zerocopy => XskMode::ZeroCopy,
    };
    let mut ports = Vec::new();
    for q in 0..queues {
        let mut p = XskPort::open(ifindex, q, XskConfig { mode, ..XskConfig::default() })
            .map_err(|e| io_err(format!("AF_XDP socket on {} queue {q}: {e}", x.iface)))?;
        p.set_local(local);
        if let Some(gw) = x.gateway {
            p.neighbors_mut().set_gateway(gw);
        }
        filter.register_socket(q, p.fd()).map_err(io_err)?;
        tracing::info!(iface = %x.iface, queue = q, mode = ?p.mode(), "AF_XDP socket open");
        ports.push(p);
    }
    // Attach last: until now nothing was redirected to sockets that did not exist yet.
    let how = filter.attach().map_err(io_err)?;
    tracing::info!(iface = %x.iface, attached = ?how, queues, "XDP program attached");
    Ok((filter, ports))
}

/// The interface's RX queue count from sysfs (1 if unknown).
fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
        .unwrap_or(1)
        .max(1)
}

/// Reads a counters snapshot from a running relayd's management socket.
pub fn read_stats(path: &Path) -> io::Result<Snapshot> {
    let r = mgmt::request(path, &mgmt::Request::Stats {})?;
    r.stats.ok_or_else(|| io::Error::other(r.error.unwrap_or_else(|| "no stats in the answer".into())))
}

#[cfg(test)]
mod tests {
    use super::worker_core;

    #[test]
    fn workers_take_the_allowed_cpus_in_turn() {
        // Under `taskset -c 1`: the only worker stays on CPU 1.
        assert_eq!(worker_core(0, &[1]), 1);
        assert_eq!(worker_core(1, &[1]), 1);
        assert_eq!(worker_core(3, &[2, 5]), 5);
        assert_eq!(worker_core(2, &[2, 5]), 2);
        assert_eq!(worker_core(4, &[]), 4);
    }
}
