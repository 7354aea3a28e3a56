//! The node's side of the cluster that needs the running server: the heartbeat, which
//! publishes this node's endpoints, relay key and load ([`crate::cluster::nodes`]), renews
//! its quota leases ([`crate::cluster::quota`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::mgmt::{Answer, Request as Mgmt, ROOMS_MAX_LIMIT};

use super::Server;
use crate::api::{ClusterNode, NodeLoad, RelayEndpoint};
use crate::cluster::leases::Lease;
use crate::cluster::nodes::room_key;
use crate::cluster::quota::{fallback_share, wanted};
use crate::cluster::Cluster;

/// Hosted rooms are re-read from relayd every this many heartbeats.
pub const ROOMS_EVERY: u32 = 4;

/// Host CPU busy and total jiffies, from `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// This node's endpoints: `[cluster] endpoints`, else `public_endpoint`, with relayd's key.
async fn endpoints(st: &Server) -> Vec<RelayEndpoint> {
    let Some(cluster) = &st.cluster else { return Vec::new() };
    let Some(key) = super::routes::relay_key(st).await else { return Vec::new() };
    let listed: Vec<_> = match cluster.cfg.endpoints.is_empty() {
        true => st.cfg.public_endpoint.into_iter().collect(),
        false => cluster.cfg.endpoints.clone(),
    };
    listed.into_iter().map(|e| RelayEndpoint { endpoint: e.to_string(), public_key: key.public_key }).collect()
}

/// One load sample: when, relayd's received packets, the host's CPU jiffies.
type Sample = (Instant, u64, Option<(u64, u64)>);

/// Beats every `heartbeat_ms` until the runtime stops.
pub async fn heartbeat(st: Arc<Server>) {
    let Some(cluster) = st.cluster.clone() else { return };
    let mut tick = tokio::time::interval(Duration::from_millis(cluster.cfg.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u32 = 0;
    let mut last: Option<Sample> = None;
    let mut live_nodes: u32 = 1;
    let mut granted_at: HashMap<u32, Instant> = HashMap::new();
    loop {
        // A new or changed app needs its quota lease now, not at the next beat: until then
        // this node admits none of its joins.
        tokio::select! {
            _ = tick.tick() => {}
            () = cluster.apps_changed.notified() => {}
        }
        let stats = st.latest.borrow().as_ref().and_then(|l| l.observation.stats.clone());
        let relays = endpoints(&st).await;
        let now = Instant::now();
        let cpu = cpu_jiffies();
        let rx = stats.as_ref().map_or(0, |s| s.rx_packets);
        let (pps, cpu_percent) = match last {
            Some((t, rx0, cpu0)) => {
                let secs = now.duration_since(t).as_secs_f64().max(0.001);
                let pps = (rx.saturating_sub(rx0) as f64 / secs) as u64;
                let cpu = match (cpu0, cpu) {
                    (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64,
                    _ => 0.0,
                };
                (pps, cpu)
            }
            None => (0, 0.0),
        };
        last = Some((now, rx, cpu));
        let applied = cluster.applied();
        let node = ClusterNode {
            node_id: cluster.cfg.node_id.clone(),
            region: cluster.cfg.region.clone(),
            relays,
            load: NodeLoad {
                sessions: stats.as_ref().map_or(0, |s| s.sessions),
                rooms: stats.as_ref().map_or(0, |s| s.rooms),
                pps,
                cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            },
            relayd_reachable: stats.is_some(),
            applied: applied.last.to_string(),
            lag_ms: cluster.health.lag_ms.load(std::sync::atomic::Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_at_ms: relay::time::unix_now_ms(),
        };
        let listed = match st.link.reachable() {
            true => match st.link.call(Mgmt::Rooms { sdkappid: None, limit: Some(ROOMS_MAX_LIMIT) }).await {
                Ok(Answer::Rooms(r)) => Some(r),
                _ => None,
            },
            false => None,
        };
        let usage = listed.as_ref().map(|rooms| {
            let mut per_app: HashMap<u32, (u32, u32)> = HashMap::new();
            for r in rooms {
                let e = per_app.entry(r.sdkappid as u32).or_default();
                e.0 += r.members.len() as u32;
                e.1 += 1;
            }
            per_app
        });
        let rooms = listed
            .as_ref()
            .filter(|_| beats.is_multiple_of(ROOMS_EVERY))
            .map(|r| r.iter().map(|r| room_key(r.sdkappid, &r.room)).collect::<Vec<_>>());
        beats = beats.wrapping_add(1);
        let c = cluster.clone();
        let beat = tokio::task::spawn_blocking(move || c.beat(&node, rooms.as_deref())).await;
        if let Ok(Err(e)) = beat {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        let c = cluster.clone();
        let live = tokio::task::spawn_blocking(move || c.nodes().map(|n| n.len() as u32)).await;
        if let Ok(Ok(n)) = live {
            live_nodes = n.max(1);
        }
        renew_leases(&st, &cluster, usage.as_ref(), live_nodes, &mut granted_at).await;
    }
}

/// Renews this node's quota lease of every app (see [`crate::cluster::quota`] for the
/// policy and why a shrink is pushed to relayd before Redis hears of it). `usage` is what
/// relayd holds per app (sessions, rooms), `None` when relayd did not answer: then each
/// lease is renewed as it is, since relayd keeps enforcing it.
async fn renew_leases(
    st: &Arc<Server>,
    cluster: &Arc<Cluster>,
    usage: Option<&HashMap<u32, (u32, u32)>>,
    live_nodes: u32,
    granted_at: &mut HashMap<u32, Instant>,
) {
    let Ok(apps) = st.store.list_apps() else { return };
    let leases = &cluster.leases;
    leases.retain(&apps.iter().map(|a| a.sdkappid).collect::<Vec<_>>());
    granted_at.retain(|k, _| apps.iter().any(|a| a.sdkappid == *k));
    let ttl = Duration::from_millis(cluster.cfg.node_ttl_ms);
    let mut changed = false;
    for app in &apps {
        let (id, q) = (app.sdkappid, app.quotas);
        let cur = leases.get(id);
        let want = match (usage, cur) {
            (Some(u), _) => {
                let (s, r) = u.get(&id).copied().unwrap_or((0, 0));
                (wanted(s, q.max_sessions, live_nodes), wanted(r, q.max_rooms, live_nodes))
            }
            (None, Some(c)) => (c.sessions, c.rooms),
            (None, None) => (0, 0),
        };
        if let Some(c) = cur.filter(|c| want.0 < c.sessions || want.1 < c.rooms) {
            // Shrink relayd first; Redis hears of it only once relayd enforces it.
            leases
                .set(id, Lease { sessions: want.0.min(c.sessions), rooms: want.1.min(c.rooms), fallback: c.fallback });
            let (req, _) = super::push::apps_request(&apps, super::unix_now(), Some(leases));
            if st.link.call(req).await.is_err() {
                leases.set(id, c);
                continue;
            }
        }
        let c2 = cluster.clone();
        let granted = tokio::task::spawn_blocking(move || c2.lease(id, want, q)).await;
        match granted {
            Ok(Ok(g)) => {
                granted_at.insert(id, Instant::now());
                if leases.get(id) != Some(g) {
                    leases.set(id, g);
                    changed = true;
                }
            }
            _ => {
                let expired = granted_at.get(&id).is_none_or(|t| t.elapsed() >= ttl);
                if expired {
                    let share = Lease {
                        sessions: fallback_share(q.max_sessions, live_nodes),
                        rooms: fallback_share(q.max_rooms, live_nodes),
                        fallback: true,
                    };
                    let l = match cur {
                        Some(c) if !c.fallback => Lease {
                            sessions: c.sessions.min(share.sessions),
                            rooms: c.rooms.min(share.rooms),
                            fallback: true,
                        },
                        Some(c) => c,
                        None => share,
                    };
                    cluster.health.quota_fallbacks.fetch_add(1, Ordering::Relaxed);
                    if leases.get(id) != Some(l) {
                        leases.set(id, l);
                        changed = true;
                    }
                }
            }
        }
    }
    if changed {
        cluster.health.lease_changes.fetch_add(1, Ordering::Relaxed);
        st.link.changed(super::push::Change::Apps);
    }
}
