//! The edge cluster: many nodes (relayd plus relay-control each) sharing one control state in
//! Redis. relay-control is each node's only cluster agent; relayd never talks to Redis.
//!
//! State and change log (keys under `key_prefix`, default `edgerelay:`):
//! - `state:apps`, `state:keys`, `state:blocks`, `state:settings`: hashes of records, one
//!   field per record ([`crate::state::RecordId::field`]), every value sealed
//!   ([`seal`]).
//! - `log`: a Redis Stream. Every change is one optimistic transaction: WATCH the hashes it
//!   reads, read, decide ([`crate::state::Mutation::apply`], the same code the embedded store
//!   runs), then MULTI, the record writes plus one `XADD` of the same writes, EXEC. A change
//!   and its log entry land together or not at all; a conflicting concurrent change makes
//!   EXEC fail and the change is decided again on fresh data.
//! - `epoch`: a random id of this Redis dataset. A node whose recorded epoch differs (Redis
//!   was wiped and re-seeded) resyncs in full.
//! - `room-nodes:<sdkappid>/<room>` and the channels `legs:<node>`: which nodes host a room,
//!   and leg hints ([`presence`]); the leg agent ([`legs`]) drives relayd's cascade legs.
//!
//! Each node keeps its embedded store (redb) as its working copy: every read of the API and
//! every push to relayd comes from it, so Redis being down stops no read and no join. The
//! follower ([`follow`]) applies log entries to it in order, from the position recorded in
//! the store itself (atomically with the records), so a restart or a disconnect resumes
//! exactly where it stopped and nothing is applied twice out of order. When the log was
//! trimmed past that position (`XINFO STREAM`'s `max-deleted-entry-id`), or the epoch
//! changed, the node resyncs in full from one MULTI snapshot of the hashes. The follower uses
//! no pub/sub: `XREAD BLOCK` wakes it as soon as an entry is added.
//!
//! A change made through this node returns once the node's own follower has applied it
//! (read-your-writes), so a client that writes and then reads through one node sees its
//! write. While Redis is unreachable, writes fail with [`ClusterError::Unavailable`] (the
//! API answers 503) and reads are served from the working copy, marked as possibly stale.
//!
//! If Redis loses its data (no persistence, a wipe), the first node to notice seeds it again
//! from its working copy under a fresh epoch, and every other node resyncs from that. Run
//! Redis with `appendonly yes` and `appendfsync always` so that an acknowledged change is
//! never lost with it.

pub mod cascade;
pub mod follow;
pub mod leases;
pub mod legs;
pub mod nodes;
pub mod peers;
pub mod presence;
pub mod quota;
pub mod seal;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::server::push::Link;
use crate::state::{Applied, Kind, Mutation, Output, Read, Record, RecordId, View, Write};
use crate::store::{Actor, Outcome, Store, StoreError};
use seal::{ClusterKey, SealError};

/// How long one Redis command may take before the connection is dropped as dead.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Most times one change is decided again after concurrent changes conflicted with it.
pub const MAX_ATTEMPTS: usize = 32;
/// How long a change waits for this node's follower to apply it before answering anyway.
pub const APPLY_WAIT: Duration = Duration::from_secs(3);
/// After a Redis failure, API calls fail fast (no connection attempt) for this long, so an
/// unreachable Redis (a partition: connects that time out) does not add a connect timeout
/// to every request. The follower keeps trying on its own and clears the failure.
pub const FAIL_FAST: Duration = Duration::from_millis(500);

/// `[cluster]` in `control.toml`. Without it relay-control runs as a single node on its
/// embedded store, and nothing needs Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user@]host:port[/db]`, or `rediss://` for TLS. A password may be in the URL,
    /// but `redis_password_file` keeps it out of the config.
    pub redis_url: String,
    /// File holding the Redis ACL user's password (one line).
    #[serde(default)]
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) that sign the Redis server's certificate, for `rediss://`.
    /// Default: the system's trust store.
    #[serde(default)]
    pub redis_ca_file: Option<PathBuf>,
    /// This node's id: 1–64 of `[A-Za-z0-9._-]`, unique in the cluster.
    pub node_id: String,
    /// This node's region (same characters), used to pick nodes near a client.
    pub region: String,
    /// The UDP endpoints clients reach this node's relayd at. Default: `public_endpoint`.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// The 32-byte cluster key (64 hex digits, mode 0600), the same file on every node;
    /// create it with `relay-control cluster-key generate`.
    pub key_file: PathBuf,
    /// Prefix of every Redis key (several clusters can share one Redis).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Entries the change log keeps (approximately); a node further behind resyncs in full.
    #[serde(default = "default_log_max_len")]
    pub log_max_len: u64,
    /// Node heartbeat interval, in milliseconds (100–1000).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a node stays in the registry after its last heartbeat, in milliseconds
    /// (at least twice `heartbeat_ms`, at most 3000).
    #[serde(default = "default_node_ttl_ms")]
    pub node_ttl_ms: u64,
}

fn default_prefix() -> String {
    "edgerelay:".into()
}
fn default_log_max_len() -> u64 {
    100_000
}
fn default_heartbeat_ms() -> u64 {
    500
}
fn default_node_ttl_ms() -> u64 {
    2_000
}

/// Whether `s` is a valid node id or region.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

impl ClusterConfig {
    /// Checks the ranges; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return Err("cluster.redis_url must start with redis:// or rediss://".into());
        }
        if !valid_name(&self.node_id) {
            return Err(format!("cluster.node_id {:?} must be 1-64 of A-Z a-z 0-9 . _ -", self.node_id));
        }
        if !valid_name(&self.region) {
            return Err(format!("cluster.region {:?} must be 1-64 of A-Z a-z 0-9 . _ -", self.region));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !self.key_prefix.bytes().all(|c| c.is_ascii_graphic())
        {
            return Err("cluster.key_prefix must be 1-64 printable ASCII characters without spaces".into());
        }
        if !(1_000..=10_000_000).contains(&self.log_max_len) {
            return Err(format!("cluster.log_max_len must be in 1000..=10000000, got {}", self.log_max_len));
        }
        if !(100..=1_000).contains(&self.heartbeat_ms) {
            return Err(format!("cluster.heartbeat_ms must be in 100..=1000, got {}", self.heartbeat_ms));
        }
        if self.node_ttl_ms < 2 * self.heartbeat_ms || self.node_ttl_ms > 3_000 {
            return Err(format!(
                "cluster.node_ttl_ms must be in {}..=3000 (twice heartbeat_ms at least), got {}",
                2 * self.heartbeat_ms,
                self.node_ttl_ms
            ));
        }
        Ok(())
    }
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis is unreachable or failed; the change was not made.
    #[error("cluster state unavailable (Redis: {0}); try again when Redis is back")]
    Unavailable(String),
    /// The change itself was refused (unknown app, last admin key, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Concurrent changes kept conflicting with this one.
    #[error("too many concurrent changes to the same records; try again")]
    Contended,
    /// A value in Redis does not open under the cluster key.
    #[error("record {0} in Redis does not open under the cluster key (tampered, or another cluster's key)")]
    Sealed(String),
    /// Setting up the cluster agent failed.
    #[error("cluster setup: {0}")]
    Setup(String),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        ClusterError::Unavailable(e.to_string())
    }
}

/// A change-log position: a Redis Stream entry id (`ms-seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct LogId(pub u64, pub u64);

impl LogId {
    /// Parses `ms-seq`.
    pub fn parse(s: &str) -> Option<LogId> {
        let (a, b) = s.split_once('-')?;
        Some(LogId(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Where a node's working copy stands: which dataset, and the last entry applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// The Redis dataset's epoch.
    pub epoch: String,
    /// The last log entry applied.
    pub last: LogId,
}

impl Cursor {
    /// Its form in the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a cursor always encodes")
    }

    /// The cursor stored as `bytes`; `None` if unreadable (then the node resyncs).
    pub fn decode(bytes: &[u8]) -> Option<Cursor> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The cluster's health as this node sees it, for `/metrics`, `/v1/cluster` and alerts.
#[derive(Debug, Default)]
pub struct Health {
    /// The last Redis command succeeded.
    pub reachable: AtomicBool,
    /// Full resyncs done.
    pub resyncs: AtomicU64,
    /// Times this node seeded an empty Redis from its working copy.
    pub seeds: AtomicU64,
    /// Log entries applied by the follower.
    pub applied: AtomicU64,
    /// Milliseconds between the newest log entry and the last one applied (0: caught up).
    pub lag_ms: AtomicU64,
    /// Changes refused because Redis was unreachable.
    pub writes_unavailable: AtomicU64,
    /// Changes decided again after a conflict.
    pub write_conflicts: AtomicU64,
    /// TC3 replay checks done against this node's cache alone because Redis was unreachable.
    pub replay_local_only: AtomicU64,
    /// Nodes in the registry at the last heartbeat.
    pub nodes_seen: AtomicU64,
    /// Heartbeats that failed.
    pub heartbeat_failures: AtomicU64,
    /// App-heartbeats spent on the Redis-less fallback share of a quota.
    pub quota_fallbacks: AtomicU64,
    /// Lease changes pushed to relayd.
    pub lease_changes: AtomicU64,
    /// The last Redis error.
    pub last_error: Mutex<Option<String>>,
    /// When the last Redis failure happened.
    last_failure: Mutex<Option<Instant>>,
}

impl Health {
    fn ok(&self) {
        self.reachable.store(true, Ordering::Relaxed);
    }

    fn failed(&self, e: &str) {
        self.reachable.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_owned());
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether callers should fail fast: Redis failed less than [`FAIL_FAST`] ago and has
    /// not answered since.
    fn failing_fast(&self) -> bool {
        !self.is_reachable()
            && self.last_failure.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < FAIL_FAST)
    }

    /// Whether Redis answered last time.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }
}

/// Redis key names of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The hash of `kind`.
    pub fn hash(&self, kind: Kind) -> String {
        format!("{}state:{}", self.prefix, kind.name())
    }
    /// The change log.
    pub fn log(&self) -> String {
        format!("{}log", self.prefix)
    }
    /// The dataset's epoch.
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }
    /// The TC3 replay marker of a signature.
    pub fn replay(&self, signature: &str) -> String {
        format!("{}tc3:{signature}", self.prefix)
    }
    /// A node's registry record.
    pub fn node(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }
    /// The set of registered node ids.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    /// The rooms a node hosts.
    pub fn node_rooms(&self, id: &str) -> String {
        format!("{}node-rooms:{id}", self.prefix)
    }
    /// The presence set of a room (a [`nodes::room_key`]): its hosts, scored by their last
    /// refresh in Unix milliseconds ([`presence`]).
    pub fn room_nodes(&self, room: &str) -> String {
        format!("{}room-nodes:{room}", self.prefix)
    }
    /// The pub/sub channel on which a node hears leg hints ([`presence`]).
    pub fn leg_hints(&self, node: &str) -> String {
        format!("{}legs:{node}", self.prefix)
    }
    /// The sealing slot of a record.
    pub fn slot(&self, kind: Kind, field: &str) -> Vec<u8> {
        format!("{}|{}|{field}", self.prefix, kind.name()).into_bytes()
    }
}

/// The cluster agent of this node.
pub struct Cluster {
    /// The `[cluster]` config.
    pub cfg: ClusterConfig,
    client: redis::Client,
    key: ClusterKey,
    /// Key names.
    pub keys: Keys,
    pool: Mutex<Vec<redis::Connection>>,
    /// Health counters.
    pub health: Arc<Health>,
    store: Arc<Store>,
    link: Link,
    /// This node's quota leases, which the relayd link pushes in place of app quotas.
    pub leases: Arc<leases::Leases>,
    /// The leg agent's counters and its view of relayd's legs ([`legs`]).
    pub legs: Arc<legs::LegStats>,
    /// Woken when the follower applies an app change, so the heartbeat leases its quota at
    /// once.
    pub apps_changed: tokio::sync::Notify,
    applied: Mutex<Cursor>,
    applied_cv: Condvar,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_id", &self.cfg.node_id).finish_non_exhaustive()
    }
}

impl Cluster {
    /// The agent for `cfg`, on `store` (the working copy) and `link` (relayd). Connects
    /// lazily: Redis may be down at start.
    pub fn new(
        cfg: ClusterConfig,
        store: Arc<Store>,
        link: Link,
        leases: Arc<leases::Leases>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        cfg.check().map_err(ClusterError::Setup)?;
        let key = ClusterKey::load(&cfg.key_file).map_err(|e| ClusterError::Setup(e.to_string()))?;
        let client = redis_client(&cfg)?;
        let cursor = store.cursor()?.and_then(|b| Cursor::decode(&b)).unwrap_or_default();
        let keys = Keys { prefix: cfg.key_prefix.clone() };
        Ok(Arc::new(Cluster {
            cfg,
            client,
            key,
            keys,
            pool: Mutex::new(Vec::new()),
            health: Arc::new(Health::default()),
            store,
            link,
            leases,
            legs: Arc::default(),
            apps_changed: tokio::sync::Notify::new(),
            applied: Mutex::new(cursor),
            applied_cv: Condvar::new(),
        }))
    }

    /// A connection from the pool, or a new one; fails at once while failing fast.
    /// `fresh` says whether it was just made (a pooled one may have died with its server).
    fn conn(&self) -> Result<(redis::Connection, bool), ClusterError> {
        if self.health.failing_fast() {
            let why = self.health.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(ClusterError::Unavailable(why.unwrap_or_else(|| "unreachable".into())));
        }
        if let Some(c) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok((c, false));
        }
        Ok((self.connect(COMMAND_TIMEOUT)?, true))
    }

    /// Runs `f` on a connection; when a pooled connection fails, the pool is emptied (its
    /// connections went to the same server) and `f` runs once more on a fresh one, so a
    /// Redis restart costs no request.
    fn on_conn<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> Result<T, ClusterError>,
    ) -> Result<(T, redis::Connection), ClusterError> {
        let (mut c, fresh) = self.conn()?;
        match f(&mut c) {
            Err(ClusterError::Unavailable(_)) if !fresh => {
                self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let mut c = self.connect(COMMAND_TIMEOUT)?;
                let v = f(&mut c)?;
                Ok((v, c))
            }
            Err(e) => {
                if matches!(e, ClusterError::Unavailable(_)) {
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
                Err(e)
            }
            Ok(v) => Ok((v, c)),
        }
    }

    /// A new connection whose commands time out after `timeout`.
    fn connect(&self, timeout: Duration) -> Result<redis::Connection, ClusterError> {
        let result = self.client.get_connection_with_timeout(CONNECT_TIMEOUT).and_then(|c| {
            c.set_read_timeout(Some(timeout))?;
            c.set_write_timeout(Some(COMMAND_TIMEOUT))?;
            Ok(c)
        });
        result.map_err(|e| self.down(e))
    }

    fn put_back(&self, c: redis::Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(c);
        }
    }

    /// Records a Redis failure and turns it into [`ClusterError::Unavailable`].
    fn down(&self, e: redis::RedisError) -> ClusterError {
        let msg = e.to_string();
        self.health.failed(&msg);
        ClusterError::Unavailable(msg)
    }

    /// Runs `f` on a pooled connection (once more on a fresh one if the pooled one had died);
    /// a failed connection is dropped.
    /// A call refused because Redis is failing fast does not extend the fail-fast window, so
    /// frequent callers cannot keep it closed after Redis is back.
    pub fn with_conn<T>(&self, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, ClusterError> {
        let fast = self.health.failing_fast();
        let result = self.on_conn(|c| f(c).map_err(ClusterError::from));
        match result {
            Ok((v, c)) => {
                self.health.ok();
                self.put_back(c);
                Ok(v)
            }
            Err(ClusterError::Unavailable(e)) => {
                if !fast {
                    self.health.failed(&e);
                }
                Err(ClusterError::Unavailable(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Seals a record's value for its slot.
    fn seal_record(&self, id: &RecordId, rec: &Record) -> Result<Vec<u8>, ClusterError> {
        let plain = rec.encode_value().map_err(StoreError::from)?;
        self.key.seal(&self.keys.slot(id.kind(), &id.field()), &plain).map_err(|e| ClusterError::Setup(e.to_string()))
    }

    /// Opens the value stored for `id`.
    fn open_record(&self, id: &RecordId, sealed: &[u8]) -> Result<Record, ClusterError> {
        let plain = self
            .key
            .open(&self.keys.slot(id.kind(), &id.field()), sealed)
            .map_err(|_: SealError| ClusterError::Sealed(format!("{}/{}", id.kind().name(), id.field())))?;
        Ok(Record::decode_value(id, &plain)?)
    }

    /// Seals arbitrary bytes for `slot` (node records).
    pub fn seal(&self, slot: &[u8], plain: &[u8]) -> Result<Vec<u8>, ClusterError> {
        self.key.seal(slot, plain).map_err(|e| ClusterError::Setup(e.to_string()))
    }

    /// Opens bytes sealed for `slot`.
    pub fn open(&self, slot: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.key.open(slot, sealed).ok()
    }

    /// Makes change `m` cluster-wide, as `actor`, and audits it in this node's log once this
    /// node's working copy has it.
    pub fn mutate(&self, m: &Mutation, actor: &Actor<'_>) -> Result<Output, ClusterError> {
        let result = self.decide_and_commit(m, actor.now);
        if let Err(ClusterError::Unavailable(_)) = &result {
            self.health.writes_unavailable.fetch_add(1, Ordering::Relaxed);
        }
        let (applied, at) = result?;
        if let Some(at) = at {
            self.wait_applied(at);
        }
        if let Some(what) = &applied.what {
            self.store.append_audit(actor, what, Outcome::Success)?;
        }
        Ok(applied.out)
    }

    fn decide_and_commit(&self, m: &Mutation, now: u64) -> Result<(Applied, Option<LogId>), ClusterError> {
        for _ in 0..MAX_ATTEMPTS {
            // A refusal is an answer: the connection is fine (and UNWATCHed by `attempt`'s
            // caller below); only Unavailable means the connection or Redis failed.
            let mut refusal = None;
            let result = self.on_conn(|c| match self.attempt(c, m, now) {
                Err(ClusterError::Unavailable(e)) => Err(ClusterError::Unavailable(e)),
                Err(e) => {
                    refusal = Some(e);
                    Ok(None)
                }
                Ok(done) => Ok(done),
            });
            match result {
                Ok((_, mut c)) if refusal.is_some() => {
                    let _ = redis::cmd("UNWATCH").query::<()>(&mut c);
                    self.put_back(c);
                    return Err(refusal.take().expect("checked just above"));
                }
                Ok((Some(done), c)) => {
                    self.health.ok();
                    self.put_back(c);
                    return Ok(done);
                }
                Ok((None, c)) => {
                    self.health.write_conflicts.fetch_add(1, Ordering::Relaxed);
                    self.put_back(c);
                }
                Err(ClusterError::Unavailable(e)) => {
                    self.health.failed(&e);
                    return Err(ClusterError::Unavailable(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClusterError::Contended)
    }

    /// One optimistic attempt: `None` when a concurrent change aborted it.
    fn attempt(
        &self,
        c: &mut redis::Connection,
        m: &Mutation,
        now: u64,
    ) -> Result<Option<(Applied, Option<LogId>)>, ClusterError> {
        let mut watched: Vec<String> = m.kinds().into_iter().map(|k| self.keys.hash(k)).collect();
        watched.push(self.keys.epoch());
        redis::cmd("WATCH").arg(&watched).query::<()>(c)?;
        let epoch: Option<String> = redis::cmd("GET").arg(self.keys.epoch()).query(c)?;
        let Some(epoch) = epoch else {
            return Err(ClusterError::Unavailable(
                "the cluster state is not seeded yet (a node seeds it on start)".into(),
            ));
        };
        let view = self.load(c, &m.reads())?;
        let applied = m.apply(&view, now)?;
        if applied.writes.is_empty() {
            redis::cmd("UNWATCH").query::<()>(c)?;
            return Ok(Some((applied, None)));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut entry: Vec<(String, Vec<u8>)> = vec![
            ("origin".into(), self.cfg.node_id.clone().into_bytes()),
            ("epoch".into(), epoch.into_bytes()),
            ("n".into(), applied.writes.len().to_string().into_bytes()),
        ];
        for (i, (id, rec)) in applied.writes.iter().enumerate() {
            let hash = self.keys.hash(id.kind());
            let field = id.field();
            let value = match rec {
                Some(r) => {
                    let sealed = self.seal_record(id, r)?;
                    pipe.hset(&hash, &field, &sealed).ignore();
                    sealed
                }
                None => {
                    pipe.hdel(&hash, &field).ignore();
                    Vec::new()
                }
            };
            entry.push((format!("k{i}"), id.kind().name().as_bytes().to_vec()));
            entry.push((format!("f{i}"), field.into_bytes()));
            entry.push((format!("v{i}"), value));
        }
        pipe.cmd("XADD").arg(self.keys.log()).arg("MAXLEN").arg("~").arg(self.cfg.log_max_len).arg("*");
        for (f, v) in &entry {
            pipe.arg(f).arg(v);
        }
        let committed: Option<(String,)> = pipe.query(c)?;
        let Some((id,)) = committed else { return Ok(None) };
        let at = LogId::parse(&id).ok_or_else(|| ClusterError::Unavailable(format!("XADD answered {id:?}")))?;
        Ok(Some((applied, Some(at))))
    }

    /// Loads `reads` from Redis into a view.
    fn load(&self, c: &mut redis::Connection, reads: &[Read]) -> Result<View, ClusterError> {
        let mut view = View::default();
        let mut ones: HashMap<Kind, Vec<RecordId>> = HashMap::new();
        for r in reads {
            match r {
                Read::One(id) => ones.entry(id.kind()).or_default().push(id.clone()),
                Read::All(kind) => {
                    let all: HashMap<String, Vec<u8>> = redis::cmd("HGETALL").arg(self.keys.hash(*kind)).query(c)?;
                    for (field, sealed) in all {
                        let Some(id) = RecordId::parse(*kind, &field) else { continue };
                        let rec = self.open_record(&id, &sealed)?;
                        view.records.insert(id, Some(rec));
                    }
                }
                Read::BlockCount => {
                    view.block_count = redis::cmd("HLEN").arg(self.keys.hash(Kind::Block)).query(c)?;
                }
            }
        }
        for (kind, ids) in ones {
            let fields: Vec<String> = ids.iter().map(RecordId::field).collect();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET").arg(self.keys.hash(kind)).arg(&fields).query(c)?;
            for (id, v) in ids.into_iter().zip(values) {
                let rec = v.map(|s| self.open_record(&id, &s)).transpose()?;
                view.records.insert(id, rec);
            }
        }
        Ok(view)
    }

    /// Decodes one change-log entry into its epoch and writes.
    fn decode_entry(&self, fields: &HashMap<String, redis::Value>) -> Result<(String, Vec<Write>), ClusterError> {
        let bytes = |name: &str| -> Result<Vec<u8>, ClusterError> {
            match fields.get(name) {
                Some(v) => redis::from_redis_value_ref(v).map_err(|e| ClusterError::Unavailable(e.to_string())),
                None => Err(ClusterError::Sealed(format!("log entry without {name}"))),
            }
        };
        let text = |name: &str| -> Result<String, ClusterError> {
            String::from_utf8(bytes(name)?).map_err(|_| ClusterError::Sealed(format!("log entry field {name}")))
        };
        let epoch = text("epoch")?;
        let n: usize = text("n")?.parse().map_err(|_| ClusterError::Sealed("log entry count".into()))?;
        if n > 1024 {
            return Err(ClusterError::Sealed("log entry too large".into()));
        }
        let mut writes = Vec::with_capacity(n);
        for i in 0..n {
            let kind = Kind::from_name(&text(&format!("k{i}"))?)
                .ok_or_else(|| ClusterError::Sealed("log entry kind".into()))?;
            let field = text(&format!("f{i}"))?;
            let id = RecordId::parse(kind, &field)
                .ok_or_else(|| ClusterError::Sealed(format!("log entry field {field}")))?;
            let value = bytes(&format!("v{i}"))?;
            let rec = if value.is_empty() { None } else { Some(self.open_record(&id, &value)?) };
            writes.push((id, rec));
        }
        Ok((epoch, writes))
    }

    /// Blocks until this node's working copy has applied `at` (or resynced past it), at most
    /// [`APPLY_WAIT`].
    fn wait_applied(&self, at: LogId) {
        let deadline = Instant::now() + APPLY_WAIT;
        let mut cur = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        while cur.last < at {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(%at, applied = %cur.last, "change committed in Redis but not yet applied here");
                return;
            }
            cur = self.applied_cv.wait_timeout(cur, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn set_applied(&self, cursor: Cursor) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = cursor;
        self.applied_cv.notify_all();
    }

    /// The working copy's position.
    pub fn applied(&self) -> Cursor {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks a TC3 signature as used cluster-wide until `ttl_secs` from now. `Ok(false)` when
    /// some node used it already (a replay).
    pub fn claim_signature(&self, signature: &str, ttl_secs: u64) -> Result<bool, ClusterError> {
        let key = self.keys.replay(signature);
        self.with_conn(|c| {
            let set: Option<String> =
                redis::cmd("SET").arg(&key).arg(1).arg("NX").arg("EX").arg(ttl_secs.max(1)).query(c)?;
            Ok(set.is_some())
        })
    }
}

/// The Redis client for `cfg`: its URL, plus the password file and CA file when given.
fn redis_client(cfg: &ClusterConfig) -> Result<redis::Client, ClusterError> {
    use redis::IntoConnectionInfo;
    let mut info = cfg
        .redis_url
        .as_str()
        .into_connection_info()
        .map_err(|e| ClusterError::Setup(format!("cluster.redis_url: {e}")))?;
    if let Some(path) = &cfg.redis_password_file {
        let pw = std::fs::read_to_string(path)
            .map_err(|e| ClusterError::Setup(format!("cluster.redis_password_file {}: {e}", path.display())))?;
        let settings = info.redis_settings().clone().set_password(pw.trim_end_matches(['\r', '\n']));
        info = info.set_redis_settings(settings);
    }
    match &cfg.redis_ca_file {
        Some(ca) => {
            let root = std::fs::read(ca)
                .map_err(|e| ClusterError::Setup(format!("cluster.redis_ca_file {}: {e}", ca.display())))?;
            redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(root) })
                .map_err(|e| ClusterError::Setup(format!("Redis TLS: {e}")))
        }
        None => redis::Client::open(info).map_err(|e| ClusterError::Setup(format!("cluster.redis_url: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_order_numerically() {
        let a = LogId::parse("1700000000000-9").unwrap();
        let b = LogId::parse("1700000000000-10").unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1700000000000-10");
        assert_eq!(LogId::parse("0-0"), Some(LogId(0, 0)));
        assert_eq!(LogId::parse("x-1"), None);
        assert_eq!(LogId::parse("17"), None);
    }

    #[test]
    fn names_and_ranges_are_checked() {
        let mut cfg: ClusterConfig = toml::from_str(
            "redis_url = \"redis://198.18.0.1:6379\"\nnode_id = \"edge-1\"\nregion = \"eu-west\"\nkey_file = \"/k\"\n",
        )
        .unwrap();
        assert_eq!(cfg.check(), Ok(()));
        assert_eq!((cfg.heartbeat_ms, cfg.node_ttl_ms, cfg.key_prefix.as_str()), (500, 2000, "edgerelay:"));
        cfg.node_id = "edge 1".into();
        assert!(cfg.check().unwrap_err().contains("cluster.node_id"));
        cfg.node_id = "edge-1".into();
        cfg.node_ttl_ms = 5_000;
        assert!(cfg.check().unwrap_err().contains("cluster.node_ttl_ms"));
        cfg.node_ttl_ms = 2_000;
        cfg.redis_url = "http://x".into();
        assert!(cfg.check().unwrap_err().contains("redis://"));
    }
}
