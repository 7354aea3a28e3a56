//! Cluster quotas: an app's `max_sessions` and `max_rooms` hold across all nodes.
//!
//! relayd admits joins on its own, without asking anyone, so each node enforces a *lease*: a
//! share of each app's quota granted by Redis, pushed to its relayd in place of the app's
//! quota. One Lua script ([`LEASE_SCRIPT`]) grants leases atomically: a node gets at most
//! what the app's quota minus every other node's unexpired lease leaves. So at every moment
//! the leases sum to at most the quota, and no combination of joins on any nodes exceeds it.
//!
//! Policy, every heartbeat: a node asks for what its relayd uses plus a share of the quota
//! (`ceil(quota / live nodes)`, at least 1), capped at the quota. A lease that grows is
//! granted in Redis first and pushed to relayd after; a lease that shrinks is pushed to relayd
//! first (and acknowledged) and released in Redis after, so relayd never holds more than
//! Redis granted. A lease expires after `node_ttl_ms` without renewal, so a dead node's share
//! returns to the others.
//!
//! With Redis unreachable a node cannot renew. Once its lease has expired it falls back to
//! its local share, `floor(quota / nodes last seen)` (at least 1), or to its lease if that
//! is smaller, and counts every heartbeat it spends so (`quota_fallbacks`). When every node
//! lost Redis the shares sum to at most the quota; a node cut off while the others still
//! reach Redis may exceed it by its own share until it reaches Redis again.

use super::leases::Lease;
use super::{Cluster, ClusterError};
use crate::store::Quotas;

/// The lease script. KEYS[1]: the app's lease hash. ARGV: node, wanted sessions, quota
/// sessions, wanted rooms, quota rooms, lease TTL (ms). Returns `{sessions, rooms}` granted.
pub const LEASE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local others_s, others_r = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  if f ~= ARGV[1] then
    local s, r, exp = string.match(v, '^(%d+) (%d+) (%d+)$')
    if s and tonumber(exp) > now then
      others_s = others_s + tonumber(s)
      others_r = others_r + tonumber(r)
    else
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
local gs = math.max(0, math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - others_s))
local gr = math.max(0, math.min(tonumber(ARGV[4]), tonumber(ARGV[5]) - others_r))
local ttl = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], ARGV[1], gs .. ' ' .. gr .. ' ' .. (now + ttl))
redis.call('PEXPIRE', KEYS[1], ttl * 10)
return {gs, gr}
"#;

/// What a node asks for: its use plus a share, capped at the quota.
pub fn wanted(used: u32, quota: u32, live_nodes: u32) -> u32 {
    let share = quota.div_ceil(live_nodes.max(1)).max(1);
    used.saturating_add(share).min(quota)
}

/// The Redis-less share of `quota` among `nodes` nodes.
pub fn fallback_share(quota: u32, nodes: u32) -> u32 {
    (quota / nodes.max(1)).max(1)
}

impl Cluster {
    /// Asks Redis for `want` (sessions, rooms) of `sdkappid`'s `quotas` for this node.
    pub fn lease(&self, sdkappid: u32, want: (u32, u32), quotas: Quotas) -> Result<Lease, ClusterError> {
        let key = format!("{}quota:{sdkappid}", self.cfg.key_prefix);
        let script = redis::Script::new(LEASE_SCRIPT);
        let (s, r): (u32, u32) = self.with_conn(|c| {
            script
                .key(&key)
                .arg(&self.cfg.node_id)
                .arg(want.0)
                .arg(quotas.max_sessions)
                .arg(want.1)
                .arg(quotas.max_rooms)
                .arg(self.cfg.node_ttl_ms)
                .invoke(c)
        })?;
        Ok(Lease { sessions: s, rooms: r, fallback: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::leases::Leases;

    #[test]
    fn wants_and_shares() {
        assert_eq!(wanted(0, 10, 3), 4);
        assert_eq!(wanted(8, 10, 3), 10);
        assert_eq!(wanted(0, 1, 3), 1);
        assert_eq!(wanted(0, 10, 0), 10);
        assert_eq!(fallback_share(10, 3), 3);
        assert_eq!(fallback_share(2, 3), 1);
    }

    #[test]
    fn a_node_without_a_lease_admits_nothing() {
        let leases = Leases::default();
        let q = Quotas { max_rooms: 5, max_members_per_room: 4, max_sessions: 9 };
        assert_eq!(leases.apply(1, q), Quotas { max_rooms: 0, max_sessions: 0, ..q });
        leases.set(1, Lease { sessions: 20, rooms: 2, fallback: false });
        assert_eq!(leases.apply(1, q), Quotas { max_rooms: 2, max_sessions: 9, ..q });
    }
}
