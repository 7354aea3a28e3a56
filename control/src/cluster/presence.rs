//! Room presence and leg hints in Redis: which nodes host a room, and the wake-up a node
//! sends the peer that must open a leg to it.
//!
//! Keys (under `key_prefix`):
//! - `room-nodes:<sdkappid>/<room>`: a sorted set of the room's hosts (node ids), each
//!   scored by its last refresh in Unix milliseconds. Hosts refresh every local room, in one
//!   pipeline; an entry older than `node_ttl_ms` is ignored by readers and trimmed by
//!   writers, and the key expires `node_ttl_ms` after its last refresh by anyone.
//! - channel `legs:<node>`: leg hints for that node, a JSON [`Hint`].
//!
//! A room gained is one MULTI/EXEC: trim, ZADD this node, PEXPIRE, ZRANGE. Of two nodes that
//! gain the same room at once, the one whose transaction runs second sees the first (Redis
//! runs transactions one after the other), so at least one of them acts on the pair.
//!
//! Hints are only hints: pub/sub does not replay, and a hint opens nothing the receiver's own
//! reconcile would not (a room it hosts, to a live peer in its relayd's peer set). So they
//! are not sealed; a forged one costs one reconcile of one room.

use serde::{Deserialize, Serialize};

use super::cascade::RoomRef;
use super::{Cluster, ClusterError};

/// Rooms refreshed per pipeline.
pub const REFRESH_CHUNK: usize = 500;

/// A room's hosts: node id and last refresh (Unix ms).
pub type Hosts = Vec<(String, u64)>;

/// A leg hint: `from` hosts the room too, and this node (the lower id) opens the leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hint {
    /// The app.
    pub sdkappid: u64,
    /// The room, as relayd names it.
    pub room: String,
    /// The node that gained the room.
    pub from: String,
}

fn hosts(raw: Vec<(String, f64)>) -> Hosts {
    raw.into_iter().map(|(n, s)| (n, s.max(0.0) as u64)).collect()
}

impl Cluster {
    /// Publishes that this node gained `room` at `now_ms`; the room's hosts, this node
    /// included, in the same transaction.
    pub fn gain_room(&self, room: &RoomRef, now_ms: u64) -> Result<Hosts, ClusterError> {
        let key = self.keys.room_nodes(&room.key());
        let ttl = self.cfg.node_ttl_ms;
        let me = &self.cfg.node_id;
        let (raw,): (Vec<(String, f64)>,) = self.with_conn(|c| {
            redis::pipe()
                .atomic()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({}", now_ms.saturating_sub(ttl)))
                .ignore()
                .zadd(&key, me, now_ms)
                .ignore()
                .pexpire(&key, ttl as i64)
                .ignore()
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)
        })?;
        Ok(hosts(raw))
    }

    /// Withdraws this node from `room`'s hosts.
    pub fn leave_room(&self, room: &RoomRef) -> Result<(), ClusterError> {
        let key = self.keys.room_nodes(&room.key());
        self.with_conn(|c| redis::cmd("ZREM").arg(&key).arg(&self.cfg.node_id).query::<()>(c))
    }

    /// Refreshes this node's presence in every room of `rooms` at `now_ms` (pipelined, in
    /// chunks of [`REFRESH_CHUNK`]); each room's hosts, in the same order.
    pub fn refresh_rooms(&self, rooms: &[RoomRef], now_ms: u64) -> Result<Vec<Hosts>, ClusterError> {
        let ttl = self.cfg.node_ttl_ms;
        let me = &self.cfg.node_id;
        let stale = format!("({}", now_ms.saturating_sub(ttl));
        let mut out = Vec::with_capacity(rooms.len());
        for chunk in rooms.chunks(REFRESH_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|r| self.keys.room_nodes(&r.key())).collect();
            let raw: Vec<Vec<(String, f64)>> = self.with_conn(|c| {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("ZREMRANGEBYSCORE").arg(key).arg("-inf").arg(&stale).ignore();
                    pipe.zadd(key, me, now_ms).ignore();
                    pipe.pexpire(key, ttl as i64).ignore();
                    pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES");
                }
                pipe.query(c)
            })?;
            out.extend(raw.into_iter().map(hosts));
        }
        Ok(out)
    }

    /// Publishes `hint` on node `to`'s channel.
    pub fn send_hint(&self, to: &str, hint: &Hint) -> Result<(), ClusterError> {
        let payload = serde_json::to_string(hint).expect("a hint always encodes");
        let channel = self.keys.leg_hints(to);
        self.with_conn(|c| redis::cmd("PUBLISH").arg(&channel).arg(&payload).query::<()>(c))
    }

    /// Subscribes to this node's hint channel and hands each readable hint to `on_hint`,
    /// until `stop` says so (checked at least every `wake`) or the connection fails.
    /// After [`SILENCE`] without a message it PINGs, so a connection that died silently (a
    /// partition) is noticed without resubscribing (which would lose the hints sent
    /// meanwhile).
    pub fn follow_hints(
        &self,
        wake: std::time::Duration,
        stop: &dyn Fn() -> bool,
        on_hint: &mut dyn FnMut(Hint),
    ) -> Result<(), ClusterError> {
        let mut c = self.connect(wake)?;
        let mut ps = c.as_pubsub();
        ps.subscribe(self.keys.leg_hints(&self.cfg.node_id)).map_err(|e| self.down(e))?;
        ps.set_read_timeout(Some(wake)).map_err(|e| self.down(e))?;
        let mut heard = std::time::Instant::now();
        while !stop() {
            match ps.get_message() {
                Ok(msg) => {
                    heard = std::time::Instant::now();
                    if let Ok(h) = serde_json::from_slice::<Hint>(msg.get_payload_bytes()) {
                        on_hint(h);
                    }
                }
                Err(e) if e.is_timeout() => {
                    if heard.elapsed() >= SILENCE {
                        // A partition leaves a subscription silent, not closed: ask.
                        ps.ping::<redis::Value>().map_err(|e| self.down(e))?;
                        heard = std::time::Instant::now();
                    }
                }
                Err(e) => return Err(self.down(e)),
            }
        }
        Ok(())
    }
}

/// A hint subscription silent this long is checked with a PING.
pub const SILENCE: std::time::Duration = std::time::Duration::from_secs(10);
