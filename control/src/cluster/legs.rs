//! The leg agent: the thread that makes this node's relayd open the cascade legs its rooms
//! need, and the thread that hears leg hints.
//!
//! The agent thread owns a management connection of its own (not the push link's, so a
//! 100 ms poll never queues behind a full sync) and loops:
//! - every [`Timings::poll`] (100 ms): `room_events` from its cursor ([`LocalRooms`]); a
//!   resync, or a new connection, lists `rooms` in full. A room gained is published in Redis
//!   with its hosts read in the same transaction ([`Cluster::gain_room`]): to each live host
//!   with a higher id this node sends `open_leg`; each live host with a lower id gets a hint
//!   on its channel, so it opens the leg at once. A room lost is withdrawn.
//! - every [`Timings::refresh`] (1 s, at most half the node TTL): the registry is listed and
//!   the peer set pushed when it changed ([`Peers`], through the relayd link); the legs are
//!   read from relayd; every local room's presence is refreshed in one pipeline, and the
//!   reconcile opens every leg this node should have opened and relayd does not have. This
//!   covers lost hints, a Redis that restarted empty, a relayd that restarted, and healed
//!   partitions.
//! - a hint from a node with a higher id, for a room that is local here, opens the leg to it
//!   at once.
//!
//! With Redis unreachable nothing is withdrawn: the peer set stays as pushed, relayd keeps
//! its legs, and errors are counted; the next refresh that reaches Redis publishes every
//! local room again. A registry listing that lacks this node itself means Redis lost its
//! data; for one node TTL after it, peers are only added to the set, never removed, so the
//! nodes' next heartbeats fill the registry again before anything is closed. With relayd unreachable, the agent reconnects on its next poll.
//! If relayd refuses `room_events` (an older relayd), the room set is listed in full on
//! every refresh instead.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use relay::mgmt::{self, Answer, LegInfo, Request, ROOMS_MAX_LIMIT};

use super::cascade::{plan, LocalRooms, NeedsListing, RoomRef, Step};
use super::peers::{of_registry, Peers};
use super::presence::Hint;
use super::Cluster;
use crate::server::push::{Change, Link};

/// How long relayd may take to answer one of the agent's requests.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before retrying the hint subscription after a Redis error.
pub const RETRY: Duration = Duration::from_millis(200);

/// The agent's periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often relayd's room events are polled.
    pub poll: Duration,
    /// How often presence is refreshed, the registry listed and legs reconciled.
    pub refresh: Duration,
}

impl Timings {
    /// 100 ms polls; refreshes every second, or every half node TTL if that is shorter (an
    /// entry must be refreshed before it counts as stale).
    pub fn for_ttl(node_ttl_ms: u64) -> Timings {
        Timings { poll: Duration::from_millis(100), refresh: Duration::from_millis((node_ttl_ms / 2).min(1_000)) }
    }
}

/// Why `open_leg` was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This node gained the room and saw the peer hosting it.
    Gain,
    /// The peer gained the room and hinted this node.
    Hint,
    /// The periodic reconcile found the leg missing.
    Reconcile,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Gain => "gain",
            Reason::Hint => "hint",
            Reason::Reconcile => "reconcile",
        }
    }
}

/// The agent's counters and its last view of relayd's legs, for `/metrics` and
/// `GET /v1/cluster`.
#[derive(Debug, Default)]
pub struct LegStats {
    /// Hints published.
    pub hints_sent: AtomicU64,
    /// Hints heard.
    pub hints_received: AtomicU64,
    /// `open_leg` accepted, by [`Reason`]: gain, hint, reconcile.
    pub opens: [AtomicU64; 3],
    /// `open_leg` refused by relayd (no local member, peer not in its set, or unsupported).
    pub open_refusals: AtomicU64,
    /// Reconcile runs: refreshes with no local room, and refreshes whose presence update
    /// reached Redis.
    pub reconciles: AtomicU64,
    /// Redis commands of the agent that failed.
    pub redis_errors: AtomicU64,
    /// relayd requests of the agent that failed or were refused (opens excepted).
    pub relayd_errors: AtomicU64,
    /// Full listings of relayd's rooms.
    pub room_listings: AtomicU64,
    /// Rooms with local members.
    pub local_rooms: AtomicU64,
    /// Peers in the set last given to the link.
    pub peers: AtomicU64,
    /// Peer-set changes given to the link.
    pub peer_changes: AtomicU64,
    seen: Mutex<LegsSeen>,
}

/// relayd's legs at the last refresh.
#[derive(Debug, Clone, Default)]
pub struct LegsSeen {
    /// The legs; `None` before the first answer, or when relayd did not answer the last time.
    pub legs: Option<Vec<LegInfo>>,
    /// Why the last `legs` request failed.
    pub error: Option<String>,
}

impl LegStats {
    /// relayd's legs at the last refresh.
    pub fn seen(&self) -> LegsSeen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records relayd's legs (the agent, at each refresh).
    pub fn set_seen(&self, s: LegsSeen) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// `open_leg` calls accepted for `reason`.
    pub fn opened(&self, reason: Reason) -> u64 {
        self.opens[reason as usize].load(Relaxed)
    }
}

/// The running agent; [`Agent::stop`] ends its threads.
#[derive(Debug)]
pub struct Agent {
    stop: Arc<AtomicBool>,
}

impl Agent {
    /// Stops both threads (within one poll or hint wait).
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the agent of `cluster` for the relayd at `relayd`: `peers` is the table the relayd
/// `link` pushes, told through the link when it changes.
pub fn spawn(
    cluster: Arc<Cluster>,
    link: Link,
    peers: Arc<Peers>,
    relayd: PathBuf,
    timings: Timings,
) -> std::io::Result<Agent> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (cl, flag) = (cluster.clone(), stop.clone());
    std::thread::Builder::new().name("cluster-hints".into()).spawn(move || {
        let wake = timings.poll.max(Duration::from_millis(100));
        while !flag.load(Relaxed) {
            let result = cl.follow_hints(wake, &|| flag.load(Relaxed), &mut |h| {
                cl.legs.hints_received.fetch_add(1, Relaxed);
                let _ = tx.send(h);
            });
            if result.is_err() {
                cl.legs.redis_errors.fetch_add(1, Relaxed);
                std::thread::sleep(RETRY);
            }
        }
    })?;
    let me = cluster.cfg.node_id.clone();
    let driver = Driver {
        cl: cluster,
        me,
        link,
        peers,
        path: relayd,
        conn: None,
        rooms: LocalRooms::default(),
        live: BTreeSet::new(),
        listed_at: None,
        hold_until: None,
        events_refused: false,
        legs: None,
    };
    let flag = stop.clone();
    std::thread::Builder::new().name("cluster-legs".into()).spawn(move || driver.run(rx, timings, &flag))?;
    Ok(Agent { stop })
}

enum CallError {
    Down,
    Refused(String),
}

struct Driver {
    cl: Arc<Cluster>,
    me: String,
    link: Link,
    peers: Arc<Peers>,
    path: PathBuf,
    conn: Option<mgmt::Client>,
    rooms: LocalRooms,
    /// Node ids in the registry at the last listing.
    live: BTreeSet<String>,
    listed_at: Option<Instant>,
    /// Until then, peers are added to the set but not removed (see `list_registry`).
    hold_until: Option<Instant>,
    events_refused: bool,
    /// relayd's legs at the last refresh, as (app, room, peer).
    legs: Option<BTreeSet<(u64, String, String)>>,
}

impl Driver {
    fn run(mut self, hints: mpsc::Receiver<Hint>, t: Timings, stop: &AtomicBool) {
        let mut next_poll = Instant::now();
        let mut next_refresh = Instant::now();
        while !stop.load(Relaxed) {
            let wait = next_poll.min(next_refresh).saturating_duration_since(Instant::now());
            match hints.recv_timeout(wait) {
                Ok(h) => self.on_hint(h),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
            if Instant::now() >= next_poll {
                self.poll();
                next_poll = Instant::now() + t.poll;
            }
            if Instant::now() >= next_refresh {
                self.refresh();
                next_refresh = Instant::now() + t.refresh;
            }
        }
    }

    fn call(&mut self, req: &Request) -> Result<Answer, CallError> {
        if self.conn.is_none() {
            match mgmt::Client::connect(&self.path, CALL_TIMEOUT) {
                Ok(c) => {
                    self.conn = Some(c);
                    self.rooms.reset();
                    self.events_refused = false;
                }
                Err(_) => return Err(CallError::Down),
            }
        }
        let conn = self.conn.as_mut().expect("connected just above");
        match conn.request(req) {
            Ok(resp) => resp.into_result().map_err(|r| CallError::Refused(r.message)),
            Err(e) => {
                tracing::debug!(error = %e, "leg agent: relayd connection lost");
                self.conn = None;
                Err(CallError::Down)
            }
        }
    }

    fn relayd_error(&self) {
        self.cl.legs.relayd_errors.fetch_add(1, Relaxed);
    }

    fn redis_error(&self, e: &super::ClusterError) {
        self.cl.legs.redis_errors.fetch_add(1, Relaxed);
        tracing::debug!(error = %e, "leg agent: Redis failed");
    }

    fn poll(&mut self) {
        if self.events_refused {
            return; // listed on every refresh instead
        }
        let req = Request::RoomEvents { after: self.rooms.after() };
        match self.call(&req) {
            Ok(Answer::RoomEvents(ev)) => match self.rooms.apply_events(&ev) {
                Ok(steps) => self.apply(steps),
                Err(NeedsListing { next }) => self.list_rooms(next),
            },
            Ok(_) => self.relayd_error(),
            Err(CallError::Refused(why)) => {
                tracing::info!(error = %why, "relayd refuses room_events; listing its rooms on every refresh instead");
                self.events_refused = true;
                self.relayd_error();
            }
            Err(CallError::Down) => self.relayd_error(),
        }
    }

    fn list_rooms(&mut self, next: u64) {
        let req = Request::Rooms { sdkappid: None, limit: Some(ROOMS_MAX_LIMIT) };
        match self.call(&req) {
            Ok(Answer::Rooms(list)) => {
                self.cl.legs.room_listings.fetch_add(1, Relaxed);
                let set = list
                    .into_iter()
                    .filter(|r| !r.members.is_empty())
                    .map(|r| RoomRef { sdkappid: r.sdkappid, room: r.room })
                    .collect();
                let steps = self.rooms.apply_listing(set, next);
                self.apply(steps);
            }
            _ => {
                self.rooms.reset();
                self.relayd_error();
            }
        }
    }

    fn apply(&mut self, steps: Vec<Step>) {
        self.cl.legs.local_rooms.store(self.rooms.rooms().len() as u64, Relaxed);
        for step in steps {
            match step {
                Step::Gained(room) => self.gained(&room),
                Step::Lost(room) => {
                    if self.cl.health.failing_fast() {
                        continue; // the entry goes stale by itself
                    }
                    if let Err(e) = self.cl.leave_room(&room) {
                        self.redis_error(&e);
                    }
                }
            }
        }
    }

    fn gained(&mut self, room: &RoomRef) {
        if self.cl.health.failing_fast() {
            return; // the next refresh that reaches Redis publishes it
        }
        let now = relay::time::unix_now_ms();
        let hosts = match self.cl.gain_room(room, now) {
            Ok(h) => h,
            Err(e) => return self.redis_error(&e),
        };
        if hosts.iter().any(|(n, _)| n != &self.me && !self.live.contains(n)) {
            self.list_registry(true); // a node that registered since the last refresh
        }
        let p = plan(&self.me, &hosts, &self.live, now, self.cl.cfg.node_ttl_ms);
        for peer in &p.open {
            self.open(room, peer, Reason::Gain);
        }
        let hint = Hint { sdkappid: room.sdkappid, room: room.room.clone(), from: self.me.clone() };
        for peer in &p.hint {
            match self.cl.send_hint(peer, &hint) {
                Ok(()) => drop(self.cl.legs.hints_sent.fetch_add(1, Relaxed)),
                Err(e) => self.redis_error(&e),
            }
        }
    }

    fn on_hint(&mut self, h: Hint) {
        let room = RoomRef { sdkappid: h.sdkappid, room: h.room };
        if h.from.as_str() <= self.me.as_str() || !self.rooms.rooms().contains(&room) {
            return; // not this node's leg to open, or not (yet) a local room: the reconcile decides
        }
        if !self.live.contains(&h.from) {
            self.list_registry(true);
        }
        if self.live.contains(&h.from) {
            self.open(&room, &h.from, Reason::Hint);
        }
    }

    /// `open_leg`, unless relayd listed that leg at the last refresh (or accepted it since).
    fn open(&mut self, room: &RoomRef, peer: &str, reason: Reason) {
        let id = (room.sdkappid, room.room.clone(), peer.to_owned());
        if self.legs.as_ref().is_some_and(|l| l.contains(&id)) {
            return;
        }
        let req = Request::OpenLeg { sdkappid: room.sdkappid, room: room.room.clone(), peer: peer.to_owned() };
        match self.call(&req) {
            Ok(_) => {
                self.cl.legs.opens[reason as usize].fetch_add(1, Relaxed);
                if let Some(l) = &mut self.legs {
                    l.insert(id);
                }
            }
            Err(CallError::Refused(why)) => {
                self.cl.legs.open_refusals.fetch_add(1, Relaxed);
                tracing::debug!(sdkappid = room.sdkappid, room = %room.room, peer, error = %why, "relayd refused open_leg");
            }
            Err(CallError::Down) => self.relayd_error(),
        }
    }

    /// Lists the registry and gives the link the peer set when it changed. With `soon`, at
    /// most once per 100 ms (a burst of gains or hints naming a new node lists it once).
    fn list_registry(&mut self, soon: bool) {
        if soon && self.listed_at.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.listed_at = Some(Instant::now());
        let nodes = match self.cl.nodes() {
            Ok(n) => n,
            Err(e) => return self.redis_error(&e), // keep the last set: nothing is closed
        };
        // A listing without this node is a registry Redis lost (a restart without data, a
        // wipe): every node is missing until its next heartbeat. For one node TTL nodes are
        // added but none removed, so a wipe closes no leg.
        let now = Instant::now();
        if !nodes.iter().any(|n| n.node_id == self.me) {
            self.hold_until = Some(now + Duration::from_millis(self.cl.cfg.node_ttl_ms));
        }
        let holding = self.hold_until.is_some_and(|t| now < t);
        let mut live: BTreeSet<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
        let mut specs = of_registry(&self.me, &nodes);
        if holding {
            live.extend(self.live.iter().cloned());
            for old in self.peers.current() {
                if !specs.iter().any(|s| s.node == old.node) {
                    specs.push(old);
                }
            }
        }
        self.live = live;
        self.cl.legs.peers.store(specs.len() as u64, Relaxed);
        if self.peers.set(&self.me, specs) {
            self.cl.legs.peer_changes.fetch_add(1, Relaxed);
            self.link.changed(Change::Peers);
        }
    }

    fn refresh(&mut self) {
        self.list_registry(false);
        if self.events_refused {
            let next = self.rooms.after();
            self.list_rooms(next);
        }
        self.legs = match self.call(&Request::Legs {}) {
            Ok(Answer::Legs(l)) => {
                let set = l.iter().map(|g| (g.sdkappid, g.room.clone(), g.peer.clone())).collect();
                self.cl.legs.set_seen(LegsSeen { legs: Some(l), error: None });
                Some(set)
            }
            other => {
                let error = match other {
                    Err(CallError::Refused(why)) => why,
                    Err(CallError::Down) => "relayd unreachable".into(),
                    Ok(_) => "unexpected answer".into(),
                };
                self.cl.legs.set_seen(LegsSeen { legs: None, error: Some(error) });
                self.relayd_error();
                None
            }
        };
        let rooms: Vec<RoomRef> = self.rooms.rooms().iter().cloned().collect();
        if rooms.is_empty() {
            self.cl.legs.reconciles.fetch_add(1, Relaxed);
            return;
        }
        let now = relay::time::unix_now_ms();
        let hosts = match self.cl.refresh_rooms(&rooms, now) {
            Ok(h) => h,
            Err(e) => return self.redis_error(&e),
        };
        self.cl.legs.reconciles.fetch_add(1, Relaxed);
        for (room, hosts) in rooms.iter().zip(hosts) {
            for peer in plan(&self.me, &hosts, &self.live, now, self.cl.cfg.node_ttl_ms).open {
                self.open(room, &peer, Reason::Reconcile);
            }
        }
    }
}
