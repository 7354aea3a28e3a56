//! relayd's control thread: it owns the [`Registry`], answers joins, keepalives and leaves,
//! routes in-room messages (their copies, acks and retransmissions, from an [`Outbox`], go
//! out through the worker that received the message, or in turn for the retransmission
//! tick), expires idle sessions, and fans [`Update`]s out to every worker. A reply goes back
//! through the worker that received the request, after the updates, so by the time a
//! client reads join-ok the worker that will see its media already knows the session.
//!
//! On the XDP backend it also owns the [`XdpFilter`]: a session's 5-tuple enters the
//! kernel's `sessions` map before its join-ok is queued, and leaves it on `Down`. Once a
//! second it dumps the kernel's neighbour and route tables for the workers.
//!
//! It serves the optional management socket ([`MgmtServer`]) on the same poll, running
//! each request through [`super::commands`] between control datagrams. What a request
//! pushes (apps, limits, blocklist, bans) is recorded in a [`PushedConfig`] and saved to
//! the state file through [`Saver`]; at start-up [`Control::restore`] runs the saved
//! requests through the same commands, so a restarted relayd serves them again.
//!
//! **Reload** (SIGHUP, or the `reload` request): the [`Reloader`] re-reads the file; an
//! invalid one changes nothing and the reason is logged and answered. Otherwise the keys that
//! can change live (apps, quotas, timeouts, `[join]`, the log level, `control_users`, the
//! `[xdp]` rates) are applied between control datagrams, like any other registry change, so
//! live sessions keep flowing; changed keys that need a restart are reported, never
//! silently ignored. Once relay-control has pushed the app set, its pushes own the apps and
//! a reload reports the file's `[[app]]` changes as not applied.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Waker};

use super::commands::{self, Managed};
use super::mgmt_server::Server as MgmtServer;
use super::netlink::RouteSocket;
use super::persist::{Saver, StateCounters};
use super::worker::{mono_ms, now, sum_counters, ControlIn, WorkerMsg, REPLY_MAX};
use super::xdp::XdpFilter;
use crate::config::Validated;
use crate::ids::SessionId;
use crate::limits::Limits;
use crate::messages::{Outbox, TICK_MS};
use crate::mgmt::{Answer, RefusalCode, ReloadReport, Request, Response};
use crate::proto::ErrorCode;
use crate::pushed::PushedConfig;
use crate::registry::{JoinSubject, Outcome, Registry, Update};
use crate::stats::{DropReason, Snapshot, WorkerCounters};

/// How often the control thread deletes expired blocklist entries.
const BLOCKLIST_PURGE_MS: u64 = 60_000;

/// Reads and validates the config file again, or says why it cannot.
pub type LoadConfig = Box<dyn FnMut() -> Result<Validated, String> + Send>;

/// Makes a level directive the log's filter, or says why it cannot.
pub type SetLogLevel = Box<dyn FnMut(&str) -> Result<(), String> + Send>;

/// How the control thread reloads the config: on SIGHUP or a `reload` request.
pub struct Reloader {
    /// Set by SIGHUP ([`super::sys::reload_flag`]); the control thread clears it and reloads.
    pub signal: &'static AtomicBool,
    /// Reads and validates the file again, with the command line's overrides applied as at
    /// start-up, or says why it cannot.
    pub load: LoadConfig,
    /// Makes a level directive (validated by the config) the log's filter.
    pub set_log_level: SetLogLevel,
}

/// Where the pushed part of the running config (apps, limits, blocklist, bans) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// The TOML file alone: nothing was saved or pushed.
    File,
    /// The state file: restored at start, nothing pushed since.
    Saved,
    /// Pushed over the management socket since start.
    Pushed,
}

impl ConfigOrigin {
    /// The name `stats` reports (`config_origin`).
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Saved => "saved",
            Self::Pushed => "pushed",
        }
    }
}

/// The control thread's state.
pub struct Control {
    /// The sessions and rooms.
    pub registry: Registry,
    /// The control thread's poll: the waker and the management socket.
    pub poll: Poll,
    /// Control datagrams from the workers: joins and other sources without a session.
    pub rx: Receiver<ControlIn>,
    /// Control datagrams from known sessions' addresses, served first.
    pub rx_sessions: Receiver<ControlIn>,
    /// Each worker's channel and waker.
    pub workers: Vec<(Sender<WorkerMsg>, Arc<Waker>)>,
    /// The workers' counters, then this thread's own.
    pub counters: Vec<Arc<WorkerCounters>>,
    /// The management socket (if `control_socket` is set).
    pub mgmt: Option<MgmtServer>,
    /// The XDP filter and the relay address sessions are keyed with (XDP backend only).
    pub filter: Option<(XdpFilter, SocketAddr)>,
    /// The limits in force (written to the filter's `config` map on the XDP backend).
    pub limits: Limits,
    /// The UDP address relayd listens on: every port range must contain its port.
    pub local_addr: SocketAddr,
    /// The control thread's own counters (rejected control messages); part of `counters`.
    pub own: Arc<WorkerCounters>,
    /// Netlink socket for the neighbour dumps (XDP backend), opened on first use.
    pub route: Option<RouteSocket>,
    /// The clock's origin.
    pub epoch: Instant,
    /// The relay's key file (key rotations are saved to it).
    pub key_file: Option<std::path::PathBuf>,
    /// What was pushed (or restored) and is in force, as the state file holds it.
    pub pushed: PushedConfig,
    /// Writes `pushed` to the state file after each change.
    pub saver: Saver,
    /// The state file's counters.
    pub state: Arc<StateCounters>,
    /// Where the pushed part of the config comes from.
    pub origin: ConfigOrigin,
    /// Set by `Relay::stop`.
    pub stop: Arc<AtomicBool>,
    /// Set by a signal.
    pub shutdown: &'static AtomicBool,
    /// The config in force (what a reload compares the file with).
    pub running: Validated,
    /// Re-reads the config (relayd); `None` when there is no file to reload.
    pub reloader: Option<Reloader>,
    /// relay-control pushed the app set since start: its pushes own the apps from then on.
    pub apps_pushed: bool,
    /// New `control_users` uids from a reload, for the management server once it is back
    /// from handling the request that asked for it.
    pub new_allowed: Option<Vec<u32>>,
    /// Cascade legs per peer relay address: the peer's 5-tuple is in the kernel's `sessions`
    /// map while any of its legs is up (its legs of several rooms share it).
    pub leg_addrs: std::collections::HashMap<SocketAddr, u32>,
}

impl Control {
    /// The control loop, until stop or a shutdown signal.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(32);
        let mut updates = Vec::new();
        // What in-room messages make (copies, acks, retransmissions), reused.
        let mut outbox = Outbox::new();
        let mut last_tick = 0;
        let mut last_leg_tick = 0;
        let mut tick_worker = 0;
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
            // Wake for message retransmissions while any are pending.
            let timeout = if self.registry.has_message_work() || self.registry.has_legs() { TICK_MS } else { 250 };
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(timeout))) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "control poll failed");
                    return;
                }
            }
            while let Ok(m) = self.rx_sessions.try_recv().or_else(|_| self.rx.try_recv()) {
                let now = now(self.epoch);
                // Joins need cookies while the queue backs up (a flood): a quarter full.
                self.registry.set_under_load(self.rx.len() >= super::worker::CONTROL_QUEUE / 4);
                let mut reply = [0u8; REPLY_MAX];
                let (outcome, mut n) =
                    self.registry.handle(now, m.src, &m.data[..m.len], &mut reply, &mut updates, &mut outbox);
                log_outcome(m.src, outcome, self.registry.last_join());
                if outcome == Outcome::Ignored {
                    self.own.count_drop(DropReason::ControlRejected);
                }
                let failed = self.broadcast(&mut updates, &mut wake);
                if !failed.is_empty() {
                    // The kernel would drop this session's media: take the join back.
                    self.registry.count("sessions_map_full");
                    for id in &failed {
                        self.registry.remove(*id, &mut updates);
                    }
                    self.broadcast(&mut updates, &mut wake);
                    if matches!(outcome, Outcome::Joined(id) if failed.contains(&id)) {
                        n = self.registry.refuse_last_join(
                            ErrorCode::Overloaded,
                            "cannot install the session now; retry",
                            &mut reply,
                        );
                    }
                }
                if let Some(len) = n {
                    let _ = self.workers[m.worker].0.send(WorkerMsg::Reply { dst: m.src, len, data: reply });
                    wake[m.worker] = true;
                }
                self.send_outbox(&mut outbox, m.worker, &mut wake);
                self.send_leg_datagrams(m.worker, &mut wake);
            }
            let now = now(self.epoch);
            if now.mono_ms >= last_leg_tick + TICK_MS && self.registry.has_legs() {
                last_leg_tick = now.mono_ms;
                self.registry.leg_tick(now, &mut updates);
                self.broadcast_all(&mut updates, &mut wake);
                tick_worker = (tick_worker + 1) % self.workers.len();
                self.send_leg_datagrams(tick_worker, &mut wake);
            }
            if now.mono_ms >= last_tick + TICK_MS && self.registry.has_message_work() {
                last_tick = now.mono_ms;
                self.registry.tick(now, &mut outbox);
                // No worker received anything for these: take turns.
                tick_worker = (tick_worker + 1) % self.workers.len();
                self.send_outbox(&mut outbox, tick_worker, &mut wake);
            }
            if now.mono_ms >= last_expiry + 1000 {
                last_expiry = now.mono_ms;
                self.push_neighbors(&mut wake);
                if self.registry.retire_keys(now.unix_secs) {
                    tracing::info!("the previous relay key's overlap ended: joins to it are refused now");
                }
                let n = self.registry.expire(now, &mut updates);
                if n > 0 {
                    tracing::info!(expired = n, "expired idle sessions");
                }
                self.broadcast_all(&mut updates, &mut wake);
            }
            if self.reloader.as_ref().is_some_and(|r| r.signal.swap(false, Relaxed)) {
                match self.reload(&mut wake) {
                    Ok(r) => tracing::info!(
                        applied = ?r.applied, needs_restart = ?r.needs_restart, not_applied = ?r.not_applied,
                        sessions_ended = r.sessions_ended, "config reloaded (SIGHUP)"
                    ),
                    Err(e) => tracing::error!(error = %e, "config reload (SIGHUP) refused; nothing changed"),
                }
                self.apply_new_allowed();
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
                self.apply_new_allowed();
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
                    Update::Up(info) if info.leg => {
                        let n = self.leg_addrs.entry(info.addr).or_default();
                        *n += 1;
                        if *n == 1 {
                            f.add_peer_session(info.addr, *local, info.id.0)
                        } else {
                            Ok(())
                        }
                    }
                    Update::Down(info) if info.leg => match self.leg_addrs.get_mut(&info.addr) {
                        Some(n) if *n > 1 => {
                            *n -= 1;
                            Ok(())
                        }
                        _ => {
                            self.leg_addrs.remove(&info.addr);
                            f.remove_session(info.addr, *local)
                        }
                    },
                    Update::Up(info) => f.add_session(info.addr, *local, info.id.0),
                    Update::Down(info) => f.remove_session(info.addr, *local),
                    Update::Streams(_) => Ok(()),
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot update the XDP sessions map");
                    if let Update::Up(info) = &u {
                        if info.leg {
                            // Not counted as up: its Down, when the leg is taken back, must
                            // not take the entry of another leg of the same peer with it.
                            if let Some(n) = self.leg_addrs.get_mut(&info.addr) {
                                *n -= 1;
                                if *n == 0 {
                                    self.leg_addrs.remove(&info.addr);
                                }
                            }
                        }
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

    /// Hands what the outbox holds to `worker`, which sends it (any worker can send to any
    /// address), and clears it.
    fn send_outbox(&self, outbox: &mut Outbox, worker: usize, wake: &mut [bool]) {
        for (dst, bytes) in outbox.iter() {
            let _ = self.workers[worker].0.send(WorkerMsg::Datagram { dst, data: bytes.into() });
            wake[worker] = true;
        }
        outbox.clear();
    }

    /// Sends what the cascade legs queued (announcements, joins, closings) through `worker`.
    fn send_leg_datagrams(&mut self, worker: usize, wake: &mut [bool]) {
        let mut out = std::mem::take(self.registry.leg_datagrams());
        self.send_outbox(&mut out, worker, wake);
        *self.registry.leg_datagrams() = out;
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
        for (k, v) in self.registry.handshake_counts() {
            s.handshake.insert(k.to_owned(), v);
        }
        for (k, v) in self.registry.message_counts() {
            s.messages.insert(k.to_owned(), v);
        }
        for (k, v) in self.registry.leg_counts() {
            s.legs.insert(k.to_owned(), v);
        }
        s.relay_key = Some(self.registry.relay_key().to_string());
        s.config_origin = Some(self.origin.name().to_owned());
        for (k, v) in self.state.named() {
            s.state.insert(k.to_owned(), v);
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

    fn apply_new_allowed(&mut self) {
        if let (Some(uids), Some(server)) = (self.new_allowed.as_ref(), self.mgmt.as_mut()) {
            server.set_allowed(uids.clone());
            self.new_allowed = None;
        }
    }

    /// Re-reads the config and applies what can change live (module doc). An error means
    /// nothing changed.
    fn reload(&mut self, wake: &mut [bool]) -> Result<ReloadReport, String> {
        let Some(r) = self.reloader.as_mut() else {
            return Err("this relay was started without a config file: nothing to reload".into());
        };
        let new = (r.load)()?;
        let changes = self.running.changes_to(&new);
        let mut report = ReloadReport { needs_restart: changes.restart, ..ReloadReport::default() };
        let changed = |key: &str| changes.live.iter().any(|k| k == key);
        let xdp_changed = changes.live.iter().any(|k| k.starts_with("xdp."));
        // What can fail goes first, so a failure leaves everything as it was.
        if xdp_changed {
            if let (Some((f, _)), Some(x)) = (self.filter.as_mut(), new.xdp.as_ref()) {
                commands::apply_xdp_rates(f, x).map_err(|e| format!("cannot write the XDP rates: {e}"))?;
            }
        }
        let mut next = self.running.with_live_settings_of(&new);
        if changed("log_level") {
            match (r.set_log_level)(&new.log_level) {
                Ok(()) => report.applied.push("log_level".into()),
                Err(e) => {
                    report.not_applied.push(format!("log_level: {e}"));
                    next.log_level = self.running.log_level.clone();
                }
            }
        }
        let mut updates = Vec::new();
        if changed("app") {
            if self.apps_pushed {
                report.not_applied.push(
                    "app: the app set was pushed by relay-control (or restored from its saved push), and its pushes own the apps".into(),
                );
                next.apps = self.running.apps.clone();
            } else {
                report.sessions_ended = self.registry.set_apps(new.apps.clone(), &mut updates) as u64;
                report.applied.push("app".into());
            }
        }
        let now = now(self.epoch);
        if changed("timeouts") {
            self.registry.set_timeouts(new.timeouts);
            report.applied.push("timeouts".into());
        }
        if changed("join") {
            self.registry.set_join_settings(new.join, now.mono_ms);
            report.applied.push("join".into());
        }
        if changed("control_users") {
            self.new_allowed = Some(new.control_uids.clone());
            report.applied.push("control_users".into());
        }
        if xdp_changed {
            if let Some(x) = &new.xdp {
                let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
                self.limits.pps_rate_per_sec = u32_of(x.pps_rate_per_sec);
                self.limits.pps_burst = u32_of(x.pps_burst);
                self.limits.join_rate_per_sec = u32_of(x.join_rate_per_sec);
                self.limits.join_burst = u32_of(x.join_burst);
            }
            report.applied.extend(changes.live.iter().filter(|k| k.starts_with("xdp.")).cloned());
        }
        // Reported in the file's order of keys, whatever order they were applied in.
        report.applied.sort_by_key(|k| changes.live.iter().position(|l| l == k));
        self.running = next;
        self.broadcast_all(&mut updates, wake);
        Ok(report)
    }

    fn execute(&mut self, req: Request, wake: &mut [bool]) -> Response {
        match req {
            Request::Stats {} => return Response::Ok(Answer::Stats(Box::new(self.snapshot()))),
            Request::Reload {} => {
                return match self.reload(wake) {
                    Ok(r) => {
                        tracing::info!(
                            applied = ?r.applied, needs_restart = ?r.needs_restart, not_applied = ?r.not_applied,
                            sessions_ended = r.sessions_ended, "config reloaded (reload request)"
                        );
                        Response::Ok(Answer::Reloaded(r))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "config reload refused; nothing changed");
                        Response::refused(RefusalCode::Invalid, e)
                    }
                };
            }
            _ => {}
        }
        let resp = self.run_command(req.clone(), wake);
        if resp.is_ok() && self.pushed.record(&req, crate::time::unix_now()) {
            self.saver.save(self.pushed.encode());
            if self.origin != ConfigOrigin::Pushed {
                tracing::info!(
                    replaces = self.origin.name(),
                    "config pushed over the management socket: in force now, and saved for restarts"
                );
                self.origin = ConfigOrigin::Pushed;
            }
        }
        resp
    }

    /// Runs one management request through [`commands`]. A set of apps that was pushed (or
    /// restored from the state file, which is a push saved) owns the apps from then on: a
    /// reload reports the file's `[[app]]` changes as not applied.
    fn run_command(&mut self, req: Request, wake: &mut [bool]) -> Response {
        let pushes_apps = matches!(req, Request::SetApps { .. });
        let mut updates = Vec::new();
        let m = Managed {
            registry: &mut self.registry,
            filter: self.filter.as_mut().map(|(f, _)| f),
            limits: &mut self.limits,
            local_addr: self.local_addr,
            key_file: self.key_file.as_deref(),
            now: now(self.epoch),
        };
        let resp = commands::execute(req, m, &mut updates);
        if pushes_apps && resp.is_ok() {
            self.apps_pushed = true;
        }
        self.broadcast_all(&mut updates, wake);
        // An opened leg's join, a closed one's closing announcement.
        self.send_leg_datagrams(0, wake);
        resp
    }

    /// Puts back the config saved in the state file: its requests run through the same
    /// commands as a push (before the workers see traffic, and on XDP before the program
    /// is attached, so the blocklist is in the kernel from the first packet). A request
    /// refused now is logged and counted, and what the TOML file says stands for it.
    pub fn restore(&mut self, saved: &PushedConfig) {
        let now = crate::time::unix_now();
        let mut wake = vec![false; self.workers.len()];
        let mut kept = PushedConfig::new();
        for req in saved.requests(now) {
            match self.run_command(req.clone(), &mut wake) {
                Response::Ok(_) => {
                    kept.record(&req, now);
                }
                Response::Refused(r) => {
                    self.state.restore_refused.fetch_add(1, Relaxed);
                    tracing::warn!(
                        request = describe(&req),
                        code = ?r.code,
                        error = %r.message,
                        "a saved request is refused now; the TOML file's setting stands for it"
                    );
                }
            }
        }
        self.wake_workers(&mut wake);
        kept.saved_at = saved.saved_at;
        self.pushed = kept;
        self.origin = ConfigOrigin::Saved;
        self.state.loaded.fetch_add(1, Relaxed);
    }
}

/// A saved request for a log line (never its secrets).
fn describe(req: &Request) -> String {
    match req {
        Request::SetApps { apps } => format!("set_apps ({} apps)", apps.len()),
        Request::SetLimits(_) => "set_limits".into(),
        Request::Block { ip, prefix_len, .. } => format!("block {ip}/{prefix_len}"),
        Request::RemoveUser { sdkappid, room, user, .. } => format!("ban of {user:?} from app {sdkappid} room {room}"),
        _ => "another request".into(),
    }
}

/// One line per join outcome and session end. A refused join names its app, room, code and
/// source as fields (never the UserSig or PrivateMapKey); when the request could not be read
/// (malformed, or a keepalive for an unknown session) app and room are absent.
fn log_outcome(src: SocketAddr, o: Outcome, join: Option<&JoinSubject>) {
    let app = join.map(|j| j.sdkappid);
    let room = join.map(|j| crate::mgmt::room_text(&j.room));
    match o {
        Outcome::Joined(id) => {
            tracing::info!(source = %src, app, room = room.as_deref(), session = %id, "join accepted")
        }
        Outcome::Left(id) => tracing::info!(source = %src, session = %id, "session left"),
        Outcome::Refused(code) => {
            tracing::debug!(source = %src, app, room = room.as_deref(), code = code.name(), "join refused")
        }
        Outcome::AddressChanged(id) => tracing::info!(%src, session = %id, "keepalive from a new address"),
        Outcome::KeptAlive(_) | Outcome::CookieSent | Outcome::Message(_) | Outcome::Ignored => {}
    }
}
