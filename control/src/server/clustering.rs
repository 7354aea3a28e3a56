//! The node's side of the cluster that needs the running server: the heartbeat, which
//! publishes this node's endpoints, relay key and load ([`crate::cluster::nodes`]), and
//! the periodic pruning of expired blocklist entries from the shared state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::mgmt::{Answer, Request as Mgmt, ROOMS_MAX_LIMIT};

use super::Server;
use crate::api::{ClusterNode, NodeLoad, RelayEndpoint};
use crate::cluster::nodes::{heartbeat_now, room_key};
use crate::state::Mutation;
use crate::store::Actor;

/// Hosted rooms are re-read from relayd every this many heartbeats.
pub const ROOMS_EVERY: u32 = 4;
/// How often expired blocklist entries are pruned from the shared state.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

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
    let mut last_prune = Instant::now();
    loop {
        tick.tick().await;
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
            heartbeat_at_ms: heartbeat_now(),
        };
        let rooms = match beats.is_multiple_of(ROOMS_EVERY) && st.link.reachable() {
            true => match st.link.call(Mgmt::Rooms { sdkappid: None, limit: Some(ROOMS_MAX_LIMIT) }).await {
                Ok(Answer::Rooms(r)) => Some(r.iter().map(|r| room_key(r.sdkappid, &r.room)).collect::<Vec<_>>()),
                _ => None,
            },
            false => None,
        };
        beats = beats.wrapping_add(1);
        let c = cluster.clone();
        let beat = tokio::task::spawn_blocking(move || c.beat(&node, rooms.as_deref())).await;
        if let Ok(Err(e)) = beat {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        if last_prune.elapsed() >= PRUNE_EVERY && cluster.health.is_reachable() {
            last_prune = Instant::now();
            let st2 = st.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let actor = Actor {
                    who: "cluster",
                    source_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    now: super::unix_now(),
                    via: "",
                };
                st2.write(&Mutation::PruneBlocks, &actor)
            })
            .await;
        }
    }
}
