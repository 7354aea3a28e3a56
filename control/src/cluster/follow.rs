//! The follower: one thread that keeps this node's working copy equal to the cluster state.
//!
//! Loop: make sure Redis holds a dataset (seed it from the working copy if its epoch is
//! missing), resync in full if the working copy's cursor is from another epoch or the log
//! was trimmed past it, then `XREAD BLOCK` from the cursor and apply each entry, in order, in
//! one store transaction together with the new cursor. Every applied write is also pushed to
//! relayd (blocklist entries reach the kernel map at once). On any Redis error the thread
//! marks the cluster unreachable, waits [`RETRY`] and starts over; the cursor in the store
//! makes that resume exactly where it stopped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamRangeReply, StreamReadReply};

use super::{Cluster, ClusterError, Cursor, LogId};
use crate::server::push::Change;
use crate::state::{Kind, Record, RecordId};

/// Pause before reconnecting after a Redis error.
pub const RETRY: Duration = Duration::from_millis(100);
/// How long one `XREAD` blocks waiting for entries, in milliseconds; also how often the epoch
/// is checked while idle.
pub const BLOCK_MS: u64 = 1_000;
/// Most entries applied per read.
pub const BATCH: usize = 256;

/// Starts the follower thread.
pub fn spawn(cluster: Arc<Cluster>) -> std::io::Result<()> {
    std::thread::Builder::new().name("cluster-follow".into()).spawn(move || {
        // Logged when it changes, not on every retry.
        let mut last_logged = String::new();
        loop {
            if let Err(e) = follow(&cluster) {
                let msg = match e {
                    ClusterError::Unavailable(m) => m,
                    other => other.to_string(),
                };
                if msg != last_logged {
                    tracing::warn!(error = %msg, "cluster: cannot follow Redis; serving the working copy, retrying");
                    last_logged = msg.clone();
                }
                cluster.health.failed(&msg);
                std::thread::sleep(RETRY);
            }
        }
    })?;
    Ok(())
}

/// One connection's worth of following; returns on any error.
fn follow(cl: &Cluster) -> Result<(), ClusterError> {
    let mut c = cl.connect(Duration::from_millis(BLOCK_MS + 2_000))?;
    let mut cursor = sync(cl, &mut c)?;
    cl.health.ok();
    loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(cl.keys.log())
            .arg(cursor.last.to_string())
            .query(&mut c)?;
        cl.health.ok();
        let entries = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>()).unwrap_or_default();
        if entries.is_empty() {
            // Idle: notice a re-seeded dataset.
            let epoch: Option<String> = redis::cmd("GET").arg(cl.keys.epoch()).query(&mut c)?;
            if epoch.as_deref() != Some(cursor.epoch.as_str()) {
                cursor = sync(cl, &mut c)?;
            }
            cl.health.lag_ms.store(0, Ordering::Relaxed);
            continue;
        }
        // Entries after the cursor trimmed away before this read: they are lost to this
        // node, so its copy is rebuilt from the hashes.
        if trimmed_past(cl, &mut c, cursor.last)? {
            tracing::warn!(cursor = %cursor.last, "change log trimmed past this node's position; resyncing");
            cursor = resync(cl, &mut c)?;
            continue;
        }
        for e in entries {
            let id = LogId::parse(&e.id).ok_or_else(|| ClusterError::Unavailable(format!("bad entry id {}", e.id)))?;
            let (epoch, writes) = match cl.decode_entry(&e.map) {
                Ok(w) => w,
                Err(ClusterError::Unavailable(x)) => return Err(ClusterError::Unavailable(x)),
                Err(err) => {
                    // A sealed value that does not open (tampering, a foreign key): skip the
                    // entry rather than wedge the node; the resync rebuilds from the hashes.
                    tracing::error!(entry = %id, error = %err, "change-log entry refused; resyncing");
                    cursor = resync(cl, &mut c)?;
                    break;
                }
            };
            if epoch != cursor.epoch {
                cursor = sync(cl, &mut c)?;
                break;
            }
            let next = Cursor { epoch, last: id };
            cl.store.apply_writes(&writes, &next.encode())?;
            for w in &writes {
                if let Some(change) = Change::of_write(w) {
                    cl.link.changed(change);
                }
            }
            if writes.iter().any(|(id, _)| matches!(id, RecordId::App(_))) {
                cl.apps_changed.notify_one();
            }
            cl.health.applied.fetch_add(1, Ordering::Relaxed);
            cl.set_applied(next.clone());
            cursor = next;
        }
        // How late the newest entry was applied here: the propagation delay of this batch.
        cl.health.lag_ms.store(relay::time::unix_now_ms().saturating_sub(cursor.last.0), Ordering::Relaxed);
    }
}

/// Whether entries after `last` were deleted from the log (Redis 7 `max-deleted-entry-id`).
fn trimmed_past(cl: &Cluster, c: &mut redis::Connection, last: LogId) -> Result<bool, ClusterError> {
    let info: redis::Value = redis::cmd("XINFO").arg("STREAM").arg(cl.keys.log()).query(c)?;
    let max_deleted = info_field(&info, "max-deleted-entry-id").and_then(|s| LogId::parse(&s)).unwrap_or_default();
    Ok(max_deleted > last)
}

/// A string field of an `XINFO STREAM` reply (RESP2 flat array or RESP3 map).
fn info_field(v: &redis::Value, name: &str) -> Option<String> {
    let pairs: Vec<(&redis::Value, &redis::Value)> = match v {
        redis::Value::Array(items) => items.chunks(2).filter_map(|p| Some((p.first()?, p.get(1)?))).collect(),
        redis::Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| {
        let k: String = redis::from_redis_value_ref(k).ok()?;
        (k == name).then(|| redis::from_redis_value_ref(v).ok()).flatten()
    })
}

/// Brings the working copy in line with Redis before following: seeds a missing dataset,
/// resyncs after an epoch change or a gap. Returns the cursor to follow from.
fn sync(cl: &Cluster, c: &mut redis::Connection) -> Result<Cursor, ClusterError> {
    let epoch: Option<String> = redis::cmd("GET").arg(cl.keys.epoch()).query(c)?;
    let Some(epoch) = epoch else { return seed(cl, c) };
    let mine = cl.store.cursor()?.and_then(|b| Cursor::decode(&b));
    match mine {
        Some(cur) if cur.epoch == epoch => {
            let exists: bool = redis::cmd("EXISTS").arg(cl.keys.log()).query(c)?;
            let last: Option<StreamRangeReply> = match exists {
                true => {
                    Some(redis::cmd("XREVRANGE").arg(cl.keys.log()).arg("+").arg("-").arg("COUNT").arg(1).query(c)?)
                }
                false => None,
            };
            let newest = last.and_then(|r| r.ids.first().and_then(|e| LogId::parse(&e.id))).unwrap_or_default();
            if newest < cur.last || (exists && trimmed_past(cl, c, cur.last)?) {
                return resync(cl, c);
            }
            cl.set_applied(cur.clone());
            Ok(cur)
        }
        _ => resync(cl, c),
    }
}

/// Replaces the working copy with one atomic snapshot of the hashes.
fn resync(cl: &Cluster, c: &mut redis::Connection) -> Result<Cursor, ClusterError> {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("GET").arg(cl.keys.epoch());
    for kind in Kind::ALL {
        pipe.cmd("HGETALL").arg(cl.keys.hash(kind));
    }
    pipe.cmd("XREVRANGE").arg(cl.keys.log()).arg("+").arg("-").arg("COUNT").arg(1);
    type Hash = HashMap<String, Vec<u8>>;
    type Snapshot = (Option<String>, Hash, Hash, Hash, Hash, Hash, StreamRangeReply);
    let (epoch, apps, keys, blocks, settings, bans, last): Snapshot = pipe.query(c)?;
    let Some(epoch) = epoch else { return seed(cl, c) };
    let mut records = Vec::new();
    let hashes =
        [(Kind::App, apps), (Kind::Key, keys), (Kind::Block, blocks), (Kind::Settings, settings), (Kind::Ban, bans)];
    for (kind, hash) in hashes {
        for (field, sealed) in hash {
            let Some(id) = RecordId::parse(kind, &field) else { continue };
            match cl.open_record(&id, &sealed) {
                Ok(r) => records.push(r),
                Err(e) => tracing::error!(kind = kind.name(), field, error = %e, "record refused in resync"),
            }
        }
    }
    let last = last.ids.first().and_then(|e| LogId::parse(&e.id)).unwrap_or_default();
    let cursor = Cursor { epoch, last };
    cl.store.replace_all(&records, &cursor.encode())?;
    cl.link.changed(Change::All);
    cl.apps_changed.notify_one();
    cl.health.resyncs.fetch_add(1, Ordering::Relaxed);
    tracing::info!(records = records.len(), cursor = %cursor.last, "cluster state resynced in full");
    cl.set_applied(cursor.clone());
    Ok(cursor)
}

/// Redis holds no dataset (first start of the cluster, or Redis lost its data): write this
/// node's working copy as the dataset under a fresh epoch. Only one node wins (WATCH on the
/// epoch); the others resync from its dataset.
fn seed(cl: &Cluster, c: &mut redis::Connection) -> Result<Cursor, ClusterError> {
    redis::cmd("WATCH").arg(cl.keys.epoch()).query::<()>(c)?;
    let epoch: Option<String> = redis::cmd("GET").arg(cl.keys.epoch()).query(c)?;
    if epoch.is_some() {
        redis::cmd("UNWATCH").query::<()>(c)?;
        return resync(cl, c);
    }
    let records: Vec<Record> = cl.store.all_records()?;
    let mut nonce = [0u8; 16];
    getrandom::getrandom(&mut nonce).map_err(|e| ClusterError::Setup(e.to_string()))?;
    let epoch = hex::encode(nonce);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for kind in Kind::ALL {
        pipe.del(cl.keys.hash(kind)).ignore();
    }
    pipe.del(cl.keys.log()).ignore();
    for r in &records {
        let id = r.id();
        pipe.hset(cl.keys.hash(id.kind()), id.field(), cl.seal_record(&id, r)?).ignore();
    }
    pipe.set(cl.keys.epoch(), &epoch).ignore();
    pipe.cmd("XADD")
        .arg(cl.keys.log())
        .arg("*")
        .arg("origin")
        .arg(&cl.cfg.node_id)
        .arg("epoch")
        .arg(&epoch)
        .arg("n")
        .arg(0);
    let done: Option<(String,)> = pipe.query(c)?;
    let Some((id,)) = done else { return resync(cl, c) };
    let last = LogId::parse(&id).unwrap_or_default();
    let cursor = Cursor { epoch, last };
    cl.store.apply_writes(&[], &cursor.encode())?;
    cl.health.seeds.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(records = records.len(), node = %cl.cfg.node_id, "Redis held no cluster state: seeded it from this node's copy");
    cl.set_applied(cursor.clone());
    Ok(cursor)
}
