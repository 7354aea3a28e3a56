//! The quota leases this node enforces ([`super::quota`] grants them), read by the relayd
//! link on every push. Kept apart from the granting, so the link depends on this table and
//! not on the cluster agent.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::Quotas;

/// A node's share of one app's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// Sessions it may hold.
    pub sessions: u32,
    /// Rooms it may hold.
    pub rooms: u32,
    /// Whether this is the Redis-less fallback share.
    pub fallback: bool,
}

/// The leases this node enforces, by SdkAppId: read by the relayd link on every push.
#[derive(Debug, Default)]
pub struct Leases {
    map: Mutex<HashMap<u32, Lease>>,
}

impl Leases {
    /// The lease of `sdkappid`, if any.
    pub fn get(&self, sdkappid: u32) -> Option<Lease> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&sdkappid).copied()
    }

    /// Records `lease` for `sdkappid`.
    pub fn set(&self, sdkappid: u32, lease: Lease) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(sdkappid, lease);
    }

    /// Forgets apps not in `keep`.
    pub fn retain(&self, keep: &[u32]) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| keep.contains(k));
    }

    /// `quotas` as this node enforces them: its lease in place of the app's session and room
    /// quotas. No lease yet means nothing may be admitted until the first grant.
    pub fn apply(&self, sdkappid: u32, quotas: Quotas) -> Quotas {
        let l = self.get(sdkappid).unwrap_or_default();
        Quotas { max_sessions: l.sessions.min(quotas.max_sessions), max_rooms: l.rooms.min(quotas.max_rooms), ..quotas }
    }
}
