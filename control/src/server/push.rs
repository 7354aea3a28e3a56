//! The link to relayd: one persistent management connection, owned by a dedicated thread.
//!
//! The store is the source of truth; relayd holds a copy. Invariants, and why:
//! - **Commit first, push after.** A change is committed to the store before the link hears
//!   of it ([`Link::changed`]), so a change is never lost to an unreachable relayd.
//! - **Full sync on every (re)connect**: `set_apps` with every app (usable secrets newest
//!   first, quotas, PrivateMapKey requirement), `set_limits` if the store has limits, `block`
//!   for every live blocklist entry and `unblock` for any relayd entry the store does not
//!   have. A change made while relayd was unreachable therefore reaches it on reconnect, and
//!   pushing twice is harmless (every push is idempotent).
//! - **Reconnect every second** while relayd is unreachable; while connected, an idle link
//!   sends `stats` once a second, so a relayd restart is noticed and resynced within ~1 s.
//! - **Fail-static**: when the link is down relayd keeps its last config; nothing here asks
//!   it to drop anything.
//! - **Expiring secrets**: a rotated-out app secret stops being usable at the end of its
//!   overlap; the link pushes `set_apps` again at that moment, so relayd stops accepting it.
//! - **Cascade peers** (a cluster node): `set_peers` from [`Peers`] in every full sync (a
//!   restarted relayd knows no peer) and on each [`Change::Peers`]; a refusal is logged, not
//!   fatal to the link.
//! - Requests on the connection are answered in order and the thread is the only user, so
//!   API calls ([`Link::call`]) and pushes are serialized; a call waits at most
//!   [`CALL_TIMEOUT`] for relayd.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use relay::mgmt::{self, Answer, AppSpec, Request, Response};
use relay::time::unix_now;

use crate::cluster::leases::Leases;
use crate::cluster::peers::Peers;
use crate::store::{App, BlockEntry, Limits, Store};

/// How long relayd may take to answer one request.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect and heartbeat interval.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Most API calls and change notices queued for the link thread.
pub const QUEUE_DEPTH: usize = 1024;

/// Why a call to relayd failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No connection to relayd (not configured, not running, or it just went away).
    #[error("relayd unreachable: {0}")]
    Unreachable(String),
    /// relayd answered with an error.
    #[error("relayd refused: {0}")]
    Refused(String),
    /// The link thread is gone or its queue is full.
    #[error("relayd link busy or stopped")]
    Busy,
}

/// A committed change to push.
#[derive(Debug, Clone)]
pub enum Change {
    /// The app set changed (create, delete, rotate, quotas, ...).
    Apps,
    /// A blocklist entry was added or replaced.
    Block(BlockEntry),
    /// A blocklist entry was removed.
    Unblock(IpAddr, u8),
    /// The limits changed.
    Limits(Limits),
    /// Anything may have changed (a cluster node resynced its store): push everything.
    All,
    /// A user was banned from (or, with no time left, kicked out of) a room.
    Ban(crate::state::Ban),
    /// The cluster's peer set changed ([`Peers`]).
    Peers,
}

impl Change {
    /// What relayd must hear about a store write (API keys are not relayd's business).
    pub fn of_write((id, rec): &crate::state::Write) -> Option<Change> {
        use crate::state::{Record, RecordId};
        match (id, rec) {
            (RecordId::App(_), _) => Some(Change::Apps),
            (RecordId::Key(_), _) => None,
            (_, Some(Record::Block(e))) => Some(Change::Block(e.clone())),
            (RecordId::Block(cidr), None) => {
                let p = relay::prefix::Prefix::parse_truncating(cidr).ok()?;
                Some(Change::Unblock(p.addr(), p.len()))
            }
            (_, Some(Record::Limits(l))) => Some(Change::Limits(*l)),
            (_, Some(Record::Ban(b))) => Some(Change::Ban(b.clone())),
            _ => None,
        }
    }
}

enum Msg {
    Changed(Change),
    Call(Request, tokio::sync::oneshot::Sender<Result<Response, LinkError>>),
}

/// What the API reports about the link.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Connected and fully synced.
    pub reachable: AtomicBool,
    /// Completed full syncs since start.
    pub syncs: AtomicU64,
    /// The last connection or sync error, for `/v1/node/health`.
    pub last_error: Mutex<Option<String>>,
}

/// The handle the API holds. Cloning is cheap.
#[derive(Clone)]
pub struct Link {
    tx: Option<mpsc::SyncSender<Msg>>,
    /// Reachability, for health and metrics.
    pub status: Arc<LinkStatus>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("configured", &self.tx.is_some()).finish()
    }
}

impl Link {
    /// A link that has no relayd (no `relayd_socket` configured): every call is unreachable.
    pub fn disabled() -> Self {
        let status = Arc::new(LinkStatus::default());
        *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some("relayd_socket not configured".into());
        Link { tx: None, status }
    }

    /// Starts the link thread for relayd's socket at `path`.
    /// With `leases` (a cluster node), apps are pushed with this node's quota leases; with
    /// `peers`, the cascade's peer set.
    pub fn spawn(
        path: PathBuf,
        store: Arc<Store>,
        leases: Option<Arc<Leases>>,
        peers: Option<Arc<Peers>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let status = Arc::new(LinkStatus::default());
        let worker = Worker { path, store, leases, peers, status: status.clone(), conn: None, apps_due: None };
        std::thread::Builder::new().name("relayd-link".into()).spawn(move || worker.run(rx))?;
        Ok(Link { tx: Some(tx), status })
    }

    /// Whether the link is connected and synced.
    pub fn reachable(&self) -> bool {
        self.status.reachable.load(Ordering::Relaxed)
    }

    /// Tells the link about a committed change. Never blocks: if the queue is full or relayd
    /// unreachable, the next full sync carries the change.
    pub fn changed(&self, change: Change) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Msg::Changed(change)).is_err() {
                self.status.reachable.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Sends `req` to relayd and waits for its answer. A refusal is [`LinkError::Refused`].
    pub async fn call(&self, req: Request) -> Result<Answer, LinkError> {
        let Some(tx) = &self.tx else {
            return Err(LinkError::Unreachable("relayd_socket not configured".into()));
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.try_send(Msg::Call(req, reply)).map_err(|_| LinkError::Busy)?;
        let resp = answer.await.map_err(|_| LinkError::Busy)??;
        resp.into_result().map_err(|r| LinkError::Refused(r.message))
    }
}

struct Worker {
    leases: Option<Arc<Leases>>,
    peers: Option<Arc<Peers>>,
    path: PathBuf,
    store: Arc<Store>,
    status: Arc<LinkStatus>,
    conn: Option<mgmt::Client>,
    /// When `set_apps` must be pushed again because an overlapping secret expires.
    apps_due: Option<u64>,
}

/// The `set_apps` request for the apps in the store at `now`, and when it next changes
/// (the earliest expiry of an overlapping secret).
/// With `leases` (a cluster node), each app's session and room quotas are this node's
/// lease of them ([`crate::cluster::quota`]).
pub fn apps_request(apps: &[App], now: u64, leases: Option<&Leases>) -> (Request, Option<u64>) {
    let specs = apps
        .iter()
        .map(|a| AppSpec {
            sdkappid: u64::from(a.sdkappid),
            secrets: a.usable_secrets(now).map(|s| s.expose().to_owned()).collect(),
            require_private_map_key: a.require_private_map_key,
            allow_v1_joins: a.allow_v1_joins,
            profiles: None,
            quotas: leases.map_or(a.quotas, |l| l.apply(a.sdkappid, a.quotas)),
        })
        .collect();
    let due = apps.iter().flat_map(|a| a.secrets.iter().filter_map(|s| s.expires_at)).filter(|&e| e > now).min();
    (Request::SetApps { apps: specs }, due)
}

/// The `remove_user` request that enforces `ban` on relayd at `now`.
pub fn ban_request(ban: &crate::state::Ban, now: u64) -> Request {
    Request::RemoveUser {
        sdkappid: u64::from(ban.sdkappid),
        room: ban.room.clone(),
        user: ban.user.clone(),
        ban_secs: ban.secs_left(now),
    }
}

/// The `set_limits` request for stored limits.
pub fn limits_request(l: &Limits) -> Request {
    Request::SetLimits(*l)
}

/// The `block` request for an entry at `now`.
pub fn block_request(e: &BlockEntry, now: u64) -> Request {
    Request::Block { ip: e.ip, prefix_len: u32::from(e.prefix_len), ttl_secs: e.ttl_at(now) }
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut next_beat = Instant::now();
        loop {
            if self.conn.is_none() && Instant::now() >= next_beat {
                self.connect_and_sync();
                next_beat = Instant::now() + RETRY_INTERVAL;
            }
            let wait = next_beat.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
            match rx.recv_timeout(wait) {
                Ok(Msg::Changed(change)) => self.push(change),
                Ok(Msg::Call(req, reply)) => {
                    let answer = self.request(&req);
                    let _ = reply.send(answer);
                }
                // While disconnected, the top of the loop reconnects once `next_beat` passes.
                Err(mpsc::RecvTimeoutError::Timeout) if self.conn.is_some() => {
                    if self.apps_due.is_some_and(|due| unix_now() >= due) {
                        self.push(Change::Apps);
                    } else {
                        // Heartbeat: notices a restarted relayd.
                        let _ = self.request(&Request::Stats {});
                    }
                    next_beat = Instant::now() + RETRY_INTERVAL;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn set_error(&self, e: String) {
        *self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    fn down(&mut self, why: String) {
        if self.conn.take().is_some() {
            tracing::warn!(error = %why, "relayd link lost; relayd keeps its last config, retrying every second");
        }
        self.status.reachable.store(false, Ordering::Relaxed);
        self.set_error(why);
    }

    /// One request on the connection; an I/O error drops the connection.
    fn request(&mut self, req: &Request) -> Result<Response, LinkError> {
        let Some(conn) = self.conn.as_mut() else {
            let why = self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(LinkError::Unreachable(why.unwrap_or_else(|| "not connected".into())));
        };
        match conn.request(req) {
            Ok(r) => Ok(r),
            Err(e) => {
                let why = format!("{}: {e}", self.path.display());
                self.down(why.clone());
                Err(LinkError::Unreachable(why))
            }
        }
    }

    /// A push that must succeed for the link to count as synced: an I/O error or a refusal
    /// is logged; an I/O error also drops the connection (the next connect resyncs).
    fn push_request(&mut self, req: &Request, what: &str) -> bool {
        match self.request(req) {
            Ok(Response::Ok(_)) => true,
            Ok(Response::Refused(r)) => {
                let e = r.message;
                tracing::warn!(what, error = %e, "relayd refused a push");
                self.set_error(format!("relayd refused {what}: {e}"));
                false
            }
            Err(_) => false,
        }
    }

    fn push(&mut self, change: Change) {
        if self.conn.is_none() {
            return; // the next full sync carries it
        }
        let now = unix_now();
        match change {
            Change::Apps => match self.store.list_apps() {
                Ok(apps) => {
                    let (req, due) = apps_request(&apps, now, self.leases.as_deref());
                    self.apps_due = due;
                    self.push_request(&req, "set_apps");
                }
                Err(e) => self.set_error(format!("store: {e}")),
            },
            Change::Block(e) => {
                self.push_request(&block_request(&e, now), "block");
            }
            Change::Unblock(ip, prefix_len) => {
                self.push_request(&Request::Unblock { ip, prefix_len: u32::from(prefix_len) }, "unblock");
            }
            Change::Limits(l) => {
                self.push_request(&limits_request(&l), "set_limits");
            }
            Change::All => {
                if let Err(why) = self.full_sync() {
                    self.down(why);
                }
            }
            Change::Ban(b) => {
                self.push_request(&ban_request(&b, now), "remove_user");
            }
            Change::Peers => self.push_peers(),
        }
    }

    /// `set_peers`, once the registry was listed.
    fn push_peers(&mut self) {
        if let Some(req) = self.peers.as_ref().and_then(|p| p.request()) {
            self.push_request(&req, "set_peers");
        }
    }

    fn connect_and_sync(&mut self) {
        match mgmt::Client::connect(&self.path, CALL_TIMEOUT) {
            Ok(c) => self.conn = Some(c),
            Err(e) => {
                self.down(format!("{}: {e}", self.path.display()));
                return;
            }
        }
        match self.full_sync() {
            Ok(()) => {
                self.status.reachable.store(true, Ordering::Relaxed);
                self.status.syncs.fetch_add(1, Ordering::Relaxed);
                *self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(socket = %self.path.display(), "relayd link up, full sync done");
            }
            Err(why) => {
                // Keep the connection only if relayd is still there; retry the sync later.
                self.down(why);
            }
        }
    }

    fn full_sync(&mut self) -> Result<(), String> {
        let now = unix_now();
        let apps = self.store.list_apps().map_err(|e| format!("store: {e}"))?;
        let (req, due) = apps_request(&apps, now, self.leases.as_deref());
        self.apps_due = due;
        if !self.push_request(&req, "set_apps") {
            return Err("set_apps failed".into());
        }
        if let Some(l) = self.store.limits().map_err(|e| format!("store: {e}"))? {
            // The socket backend refuses set_limits; that does not make the link unusable.
            self.push_request(&limits_request(&l), "set_limits");
        }
        let blocks = self.store.list_blocks(now).map_err(|e| format!("store: {e}"))?;
        for b in &blocks {
            self.push_request(&block_request(b, now), "block");
        }
        // Entries relayd has that the store does not (removed while the link was down).
        if let Ok(Response::Ok(Answer::Blocks(have))) = self.request(&Request::Blocklist {}) {
            for h in have {
                let known = blocks.iter().any(|b| b.ip == h.ip && u32::from(b.prefix_len) == h.prefix_len);
                if !known {
                    self.push_request(&Request::Unblock { ip: h.ip, prefix_len: h.prefix_len }, "unblock");
                }
            }
        }
        // Bans that still run: a restarted relayd forgot them.
        let bans = self.store.list_bans().map_err(|e| format!("store: {e}"))?;
        for b in bans.iter().filter(|b| b.secs_left(now) > 0) {
            self.push_request(&ban_request(b, now), "remove_user");
        }
        self.push_peers();
        if self.conn.is_none() {
            return Err("connection lost during sync".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::store::{BlockSource, Quotas};

    #[test]
    fn apps_request_lists_usable_secrets_and_next_expiry() {
        let q = Quotas { max_rooms: 3, max_members_per_room: 4, max_sessions: 9 };
        let mut a = App::new(7, SecretKey::from_exposed("old-secret-0123456789".into()), q, 0);
        a.rotate_secret(SecretKey::from_exposed("new-secret-0123456789".into()), 100, 60);
        a.require_private_map_key = true;
        let b = App::new(8, SecretKey::from_exposed("b-secret-0123456789".into()), q, 0);
        let (req, due) = apps_request(&[a.clone(), b.clone()], 120, None);
        let Request::SetApps { apps } = req else { panic!("not set_apps") };
        assert_eq!(apps[0].secrets, ["new-secret-0123456789", "old-secret-0123456789"]);
        assert!(apps[0].require_private_map_key && !apps[1].require_private_map_key);
        assert_eq!((apps[0].quotas.max_rooms, apps[0].quotas.max_members_per_room), (3, 4));
        assert_eq!(apps[0].quotas.max_sessions, 9, "the app's own max_sessions is pushed");
        assert_eq!(due, Some(160));
        let (req, due) = apps_request(&[a, b], 160, None);
        let Request::SetApps { apps } = req else { panic!("not set_apps") };
        assert_eq!(apps[0].secrets, ["new-secret-0123456789"]);
        assert_eq!(due, None);
    }

    #[test]
    fn block_request_carries_the_remaining_ttl() {
        let e = BlockEntry {
            ip: "198.18.5.0".parse().unwrap(),
            prefix_len: 24,
            created_at: 100,
            expires_at: Some(700),
            reason: String::new(),
            source: BlockSource::Api,
        };
        assert_eq!(block_request(&e, 400), Request::Block { ip: e.ip, prefix_len: 24, ttl_secs: 300 });
        let forever = BlockEntry { expires_at: None, ..e };
        assert_eq!(block_request(&forever, 400), Request::Block { ip: forever.ip, prefix_len: 24, ttl_secs: 0 });
    }
}
