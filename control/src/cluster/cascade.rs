//! Cascade legs, the decisions: which rooms this node hosts, and which legs it opens.
//!
//! Sans-IO: the driver ([`super::legs`]) feeds relayd's room events and listings into
//! [`LocalRooms`], and what Redis says about a room's hosts into [`plan`]; both answer what
//! to do, and neither reads a clock (`now_ms` is a parameter).
//!
//! Invariants, and why:
//! - **One opener per pair.** Of two nodes hosting a room, only the one whose id sorts lower
//!   opens the leg ([`plan`]'s `open`); the other only hints it ([`plan`]'s `hint`). relayd
//!   accepts a leg from any peer in its peer set, so a leg opened twice would be two legs.
//! - **Only live hosts count**: a host must be in the node registry *and* have refreshed its
//!   presence within the node TTL. A node whose registry key expired gets no leg even while
//!   its presence entry is still fresh.
//! - **Diffs, not event replay.** [`LocalRooms`] reports what changed between two states of
//!   the room set, so a room gained and lost within one poll yields nothing, and a resync
//!   (a full listing) yields exactly the rooms that appeared or went.

use std::collections::BTreeSet;

/// A room of an app, as relayd's management socket names it ([`relay::mgmt::room_text`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomRef {
    /// The app.
    pub sdkappid: u64,
    /// The room text.
    pub room: String,
}

impl RoomRef {
    /// Its name in Redis keys: the same as in `node-rooms` sets ([`super::nodes::room_key`]).
    pub fn key(&self) -> String {
        super::nodes::room_key(self.sdkappid, &self.room)
    }
}

/// A change in the set of rooms with local members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The room has local members now: publish presence, open or hint legs.
    Gained(RoomRef),
    /// The room has no local member any more: withdraw presence (relayd closes its legs).
    Lost(RoomRef),
}

/// The rooms that have local members on this node, followed from relayd's `room_events`.
#[derive(Debug, Default)]
pub struct LocalRooms {
    rooms: BTreeSet<RoomRef>,
    /// The `next` of the last answer applied; `None` until a full listing was applied (after
    /// start, and after every new connection to relayd).
    cursor: Option<u64>,
}

/// A full listing (`rooms`) must be applied next, then events followed from `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsListing {
    /// Where to follow from once the listing is applied.
    pub next: u64,
}

impl LocalRooms {
    /// The rooms with local members.
    pub fn rooms(&self) -> &BTreeSet<RoomRef> {
        &self.rooms
    }

    /// The cursor to poll from (0 before the first answer).
    pub fn after(&self) -> u64 {
        self.cursor.unwrap_or(0)
    }

    /// Forgets the cursor (a new connection to relayd): the next answer is followed by a
    /// full listing, whatever its `resync` says.
    pub fn reset(&mut self) {
        self.cursor = None;
    }

    /// Applies one `room_events` answer. `Err(NeedsListing)` when a full listing must come
    /// first (relayd forgot events, or this is the first answer on a connection); the
    /// answer's events are then superseded by the listing.
    pub fn apply_events(&mut self, ev: &relay::mgmt::RoomEvents) -> Result<Vec<Step>, NeedsListing> {
        if ev.resync || self.cursor.is_none() {
            return Err(NeedsListing { next: ev.next });
        }
        let before = self.rooms.clone();
        for e in &ev.events {
            let r = RoomRef { sdkappid: e.sdkappid, room: e.room.clone() };
            if e.local {
                self.rooms.insert(r);
            } else {
                self.rooms.remove(&r);
            }
        }
        self.cursor = Some(ev.next);
        Ok(diff(&before, &self.rooms))
    }

    /// Replaces the set with a full listing, following from `next` afterwards.
    pub fn apply_listing(&mut self, rooms: BTreeSet<RoomRef>, next: u64) -> Vec<Step> {
        let steps = diff(&self.rooms, &rooms);
        self.rooms = rooms;
        self.cursor = Some(next);
        steps
    }
}

fn diff(before: &BTreeSet<RoomRef>, after: &BTreeSet<RoomRef>) -> Vec<Step> {
    let lost = before.difference(after).cloned().map(Step::Lost);
    let gained = after.difference(before).cloned().map(Step::Gained);
    lost.chain(gained).collect()
}

/// What to do about one room's other hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Live hosts with a higher id: this node opens the leg to each.
    pub open: Vec<String>,
    /// Live hosts with a lower id: they open the leg; a node that just gained the room wakes
    /// each up with a hint.
    pub hint: Vec<String>,
}

/// The plan for a room hosted, by Redis's presence set, by `hosts` (node id, last refresh in
/// Unix ms), as seen by node `me` at `now_ms`. Hosts not in `live` (the registry), or whose
/// refresh is older than `ttl_ms`, are ignored.
pub fn plan(me: &str, hosts: &[(String, u64)], live: &BTreeSet<String>, now_ms: u64, ttl_ms: u64) -> Plan {
    let mut p = Plan::default();
    for (node, at) in hosts {
        if node == me || !live.contains(node) || at.saturating_add(ttl_ms) < now_ms {
            continue;
        }
        match me < node.as_str() {
            true => p.open.push(node.clone()),
            false => p.hint.push(node.clone()),
        }
    }
    p.open.sort();
    p.hint.sort();
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay::mgmt::{RoomEvent, RoomEvents};

    fn r(app: u64, room: &str) -> RoomRef {
        RoomRef { sdkappid: app, room: room.into() }
    }

    fn ev(app: u64, room: &str, local: bool) -> RoomEvent {
        RoomEvent { sdkappid: app, room: room.into(), local }
    }

    #[test]
    fn events_follow_a_listing_and_report_diffs() {
        let mut l = LocalRooms::default();
        // The first answer on a connection always asks for a listing.
        let first = RoomEvents { next: 7, resync: false, events: vec![ev(1, "42", true)] };
        assert_eq!(l.apply_events(&first), Err(NeedsListing { next: 7 }));
        let steps = l.apply_listing([r(1, "42"), r(1, "lobby")].into(), 7);
        assert_eq!(steps, [Step::Gained(r(1, "42")), Step::Gained(r(1, "lobby"))]);
        assert_eq!(l.after(), 7);
        // Gained and lost within one answer: nothing to do.
        let batch = RoomEvents {
            next: 10,
            resync: false,
            events: vec![ev(2, "x", true), ev(2, "x", false), ev(1, "lobby", false), ev(1, "42", true)],
        };
        assert_eq!(l.apply_events(&batch), Ok(vec![Step::Lost(r(1, "lobby"))]));
        assert_eq!(l.after(), 10);
        // relayd forgot events: a listing replaces the set.
        let gap = RoomEvents { next: 3, resync: true, events: vec![] };
        assert_eq!(l.apply_events(&gap), Err(NeedsListing { next: 3 }));
        assert_eq!(l.apply_listing([r(3, "y")].into(), 3), [Step::Lost(r(1, "42")), Step::Gained(r(3, "y"))]);
        // A new connection: listing again, and an unchanged set means no steps.
        l.reset();
        let again = RoomEvents { next: 4, resync: false, events: vec![] };
        assert_eq!(l.apply_events(&again), Err(NeedsListing { next: 4 }));
        assert_eq!(l.apply_listing([r(3, "y")].into(), 4), []);
    }

    #[test]
    fn the_lower_id_opens_and_only_live_fresh_hosts_count() {
        let live: BTreeSet<String> = ["edge-1", "edge-2", "edge-3"].map(String::from).into();
        let hosts = vec![
            ("edge-1".to_owned(), 10_000),
            ("edge-2".to_owned(), 10_000),
            ("edge-3".to_owned(), 9_000),
            ("edge-4".to_owned(), 10_000), // fresh, but not in the registry
        ];
        let p = plan("edge-2", &hosts, &live, 10_500, 2_000);
        assert_eq!(p, Plan { open: vec!["edge-3".into()], hint: vec!["edge-1".into()] });
        assert_eq!(plan("edge-1", &hosts, &live, 10_500, 2_000).open, ["edge-2", "edge-3"]);
        // edge-3's refresh is older than the TTL.
        assert_eq!(plan("edge-1", &hosts, &live, 11_500, 2_000).open, ["edge-2"]);
        // Alone in a room: nothing.
        assert_eq!(plan("edge-1", &hosts[..1], &live, 10_500, 2_000), Plan::default());
        // Every pair has exactly one opener.
        for a in ["edge-1", "edge-2", "edge-3"] {
            for b in ["edge-1", "edge-2", "edge-3"] {
                let fresh: Vec<_> = hosts[..3].iter().map(|(n, _)| (n.clone(), 10_000)).collect();
                let a_opens = plan(a, &fresh, &live, 10_000, 2_000).open.contains(&b.to_owned());
                let b_opens = plan(b, &fresh, &live, 10_000, 2_000).open.contains(&a.to_owned());
                assert_eq!(u8::from(a_opens) + u8::from(b_opens), u8::from(a != b), "{a} {b}");
            }
        }
    }
}
