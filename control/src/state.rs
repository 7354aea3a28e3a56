//! The control state's changes as data: what a change reads, what it decides, what it writes.
//!
//! Every change to apps, API keys, the blocklist and the limits is a [`Mutation`]. Applying
//! one is a pure function ([`Mutation::apply`]) from a [`View`] of the records it declared it
//! reads ([`Mutation::reads`]) to the records it writes, an audit description and a result.
//! The embedded store ([`crate::store::Store`]) runs it inside one redb write transaction; the
//! cluster ([`crate::cluster`]) runs it inside one Redis optimistic transaction (WATCH, read,
//! MULTI, write plus change-log entry, EXEC). One implementation of every rule (the last admin
//! key cannot be revoked, an automatic block never replaces an operator's entry, ...) serves
//! both, and a change either writes everything it decided or nothing.
//!
//! Writes are whole records ([`Write`]), never deltas, so replaying a write is harmless: a
//! node following the change log converges on the same state however often it re-applies an
//! entry.

use std::collections::BTreeMap;
use std::net::IpAddr;

use relay::prefix::Prefix;
use serde::{Deserialize, Serialize};

use crate::keys::{ApiKey, Role, SecretKey};
use crate::records::{check_app_secret, App, BlockEntry, BlockSource, StoreError, MAX_BLOCKS};
use relay::limits::{Limits, Quotas};

/// The identity of one record of the control state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordId {
    /// An app, by SdkAppId.
    App(u32),
    /// An API key, by SecretId.
    Key(String),
    /// A blocklist entry, by its `ip/len` text.
    Block(String),
    /// The data-plane limits (one record).
    Limits,
    /// A ban of a user from a room ([`Ban::field`]).
    Ban(String),
}

/// The kinds of record, each one table of the store and one hash in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Apps.
    App,
    /// API keys.
    Key,
    /// Blocklist entries.
    Block,
    /// Settings (the limits).
    Settings,
    /// Bans.
    Ban,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 5] = [Kind::App, Kind::Key, Kind::Block, Kind::Settings, Kind::Ban];

    /// The kind's name, as written in the change log and used in Redis key names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::App => "apps",
            Kind::Key => "keys",
            Kind::Block => "blocks",
            Kind::Settings => "settings",
            Kind::Ban => "bans",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The field name of the limits record in the settings table.
pub const LIMITS_FIELD: &str = "limits";

impl RecordId {
    /// The block entry id of `ip/prefix_len`.
    pub fn block(ip: IpAddr, prefix_len: u8) -> RecordId {
        RecordId::Block(format!("{ip}/{prefix_len}"))
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            RecordId::App(_) => Kind::App,
            RecordId::Key(_) => Kind::Key,
            RecordId::Block(_) => Kind::Block,
            RecordId::Limits => Kind::Settings,
            RecordId::Ban(_) => Kind::Ban,
        }
    }

    /// Its field within its kind's table.
    pub fn field(&self) -> String {
        match self {
            RecordId::App(id) => id.to_string(),
            RecordId::Key(id) | RecordId::Block(id) | RecordId::Ban(id) => id.clone(),
            RecordId::Limits => LIMITS_FIELD.to_owned(),
        }
    }

    /// The id of `field` in `kind`'s table; `None` for a field no record can have.
    pub fn parse(kind: Kind, field: &str) -> Option<RecordId> {
        match kind {
            Kind::App => field.parse().ok().map(RecordId::App),
            Kind::Key => Some(RecordId::Key(field.to_owned())),
            Kind::Block => Some(RecordId::Block(field.to_owned())),
            Kind::Settings => (field == LIMITS_FIELD).then_some(RecordId::Limits),
            Kind::Ban => Some(RecordId::Ban(field.to_owned())),
        }
    }
}

/// One record of the control state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// An app.
    App(App),
    /// An API key.
    Key(ApiKey),
    /// A blocklist entry.
    Block(BlockEntry),
    /// The limits.
    Limits(Limits),
    /// A ban.
    Ban(Ban),
}

/// A user banned from a room until a time: RemoveUser with `ban_secs`, held cluster-wide and
/// pushed to relayd again after a restart while it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// The app.
    pub sdkappid: u32,
    /// The room, as relayd's `remove_user` takes it.
    pub room: String,
    /// The user.
    pub user: String,
    /// When it ends (Unix seconds, exclusive). A ban that ends when it is made is a kick:
    /// every node removes the user once.
    pub until: u64,
}

impl Ban {
    /// Its field: unambiguous whatever characters the room and user hold.
    pub fn field(&self) -> String {
        format!("{}:{}:{}:{}", self.sdkappid, self.room.len(), self.room, self.user)
    }

    /// Seconds left at `now`.
    pub fn secs_left(&self, now: u64) -> u64 {
        self.until.saturating_sub(now)
    }
}

impl Record {
    /// Its id.
    pub fn id(&self) -> RecordId {
        match self {
            Record::App(a) => RecordId::App(a.sdkappid),
            Record::Key(k) => RecordId::Key(k.secret_id.clone()),
            Record::Block(b) => RecordId::block(b.ip, b.prefix_len),
            Record::Limits(_) => RecordId::Limits,
            Record::Ban(b) => RecordId::Ban(b.field()),
        }
    }

    /// The record's value alone (the JSON stored in its table), for `kind`'s table.
    pub fn encode_value(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Record::App(a) => serde_json::to_vec(a),
            Record::Key(k) => serde_json::to_vec(k),
            Record::Block(b) => serde_json::to_vec(b),
            Record::Limits(l) => serde_json::to_vec(l),
            Record::Ban(b) => serde_json::to_vec(b),
        }
    }

    /// The record stored as `bytes` under `id`. A value whose own id is not `id` is refused:
    /// a record moved to another field is not that field's record.
    pub fn decode_value(id: &RecordId, bytes: &[u8]) -> Result<Record, StoreError> {
        let rec = match id.kind() {
            Kind::App => Record::App(serde_json::from_slice(bytes)?),
            Kind::Key => Record::Key(serde_json::from_slice(bytes)?),
            Kind::Block => Record::Block(serde_json::from_slice(bytes)?),
            Kind::Settings => Record::Limits(serde_json::from_slice(bytes)?),
            Kind::Ban => Record::Ban(serde_json::from_slice(bytes)?),
        };
        if &rec.id() != id {
            return Err(StoreError::MisplacedRecord(id.field()));
        }
        Ok(rec)
    }
}

/// One write: the record's new value, or `None` to delete it.
pub type Write = (RecordId, Option<Record>);

/// What a mutation reads before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// One record.
    One(RecordId),
    /// Every record of a kind.
    All(Kind),
    /// The number of blocklist entries (live or not yet pruned).
    BlockCount,
}

/// The records a mutation reads, as loaded by its runner. A record that was read and is
/// absent is present here as `None`; a record that was not read is not here at all.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Records read, by id.
    pub records: BTreeMap<RecordId, Option<Record>>,
    /// The blocklist's size, when [`Read::BlockCount`] was read.
    pub block_count: u64,
}

impl View {
    fn app(&self, sdkappid: u32) -> Option<App> {
        match self.records.get(&RecordId::App(sdkappid)) {
            Some(Some(Record::App(a))) => Some(a.clone()),
            _ => None,
        }
    }

    fn key(&self, secret_id: &str) -> Option<ApiKey> {
        match self.records.get(&RecordId::Key(secret_id.to_owned())) {
            Some(Some(Record::Key(k))) => Some(k.clone()),
            _ => None,
        }
    }

    fn keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.records.values().filter_map(|r| match r {
            Some(Record::Key(k)) => Some(k),
            _ => None,
        })
    }

    fn blocks(&self) -> impl Iterator<Item = &BlockEntry> {
        self.records.values().filter_map(|r| match r {
            Some(Record::Block(b)) => Some(b),
            _ => None,
        })
    }

    fn bans(&self) -> impl Iterator<Item = &Ban> {
        self.records.values().filter_map(|r| match r {
            Some(Record::Ban(b)) => Some(b),
            _ => None,
        })
    }

    fn block(&self, id: &RecordId) -> Option<BlockEntry> {
        match self.records.get(id) {
            Some(Some(Record::Block(b))) => Some(b.clone()),
            _ => None,
        }
    }
}

/// One change to the control state.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Create an app; refused if its SdkAppId exists.
    CreateApp(App),
    /// Change an app's quotas, PrivateMapKey requirement and/or v1 migration window.
    UpdateApp {
        /// The app.
        sdkappid: u32,
        /// New quotas.
        quotas: Option<Quotas>,
        /// New PrivateMapKey requirement.
        require_private_map_key: Option<bool>,
        /// New v1 migration window.
        allow_v1_joins: Option<bool>,
    },
    /// Make `secret` the app's current secret; see [`App::rotate_secret`].
    RotateAppSecret {
        /// The app.
        sdkappid: u32,
        /// The new secret.
        secret: SecretKey,
        /// Seconds the previous secret stays usable.
        overlap: u64,
    },
    /// Delete an app.
    DeleteApp(u32),
    /// Store a new API key; refused if its SecretId exists.
    InsertKey(ApiKey),
    /// Rotate an API key: it stays usable for `overlap` seconds, and its successor (the
    /// result) is stored.
    RotateKey {
        /// The key.
        secret_id: String,
        /// Seconds it stays usable.
        overlap: u64,
    },
    /// Revoke an API key at once; refused for the last usable admin key.
    RevokeKey(String),
    /// Add a blocklist entry, replacing one for the same prefix.
    AddBlock(BlockEntry),
    /// Add a blocklist entry unless a live entry already covers its prefix (the result).
    AddBlockUnlessCovered(BlockEntry),
    /// Remove the live entry for a prefix.
    RemoveBlock {
        /// Network address.
        ip: IpAddr,
        /// Prefix length.
        prefix_len: u8,
    },
    /// Remove the live entry for a prefix only if `source` added it.
    RemoveBlockFrom {
        /// Network address.
        ip: IpAddr,
        /// Prefix length.
        prefix_len: u8,
        /// Who must have added it.
        source: BlockSource,
    },
    /// Delete blocklist entries and bans that ended (housekeeping; not audited).
    Prune,
    /// Ban (or, with `until` now, kick) a user from a room on every node.
    Ban(Ban),
    /// Store the data-plane limits.
    SetLimits(Limits),
}

/// What a mutation returns to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Nothing beyond success.
    Done,
    /// The changed app.
    App(App),
    /// The successor key of a rotation.
    Key(ApiKey),
    /// The removed blocklist entry.
    Removed(BlockEntry),
    /// For [`Mutation::AddBlockUnlessCovered`]: the live entry covering the prefix, in which
    /// case nothing was written.
    Covered(Option<BlockEntry>),
    /// For [`Mutation::RemoveBlockFrom`]: the entry, and whether it was removed.
    RemovedFrom(BlockEntry, bool),
}

/// The decision of one mutation.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The audit description; `None` when nothing is written and nothing is audited.
    pub what: Option<String>,
    /// The records to write.
    pub writes: Vec<Write>,
    /// The caller's result.
    pub out: Output,
}

impl Applied {
    fn change(what: String, writes: Vec<Write>, out: Output) -> Applied {
        Applied { what: Some(what), writes, out }
    }

    fn nothing(out: Output) -> Applied {
        Applied { what: None, writes: Vec::new(), out }
    }
}

fn put(r: Record) -> Write {
    (r.id(), Some(r))
}

/// Every prefix (of the same family) that could cover `ip/prefix_len`: the entry ids
/// [`Mutation::AddBlockUnlessCovered`] has to read.
fn covering_ids(ip: IpAddr, prefix_len: u8) -> Vec<RecordId> {
    (0..=prefix_len)
        .filter_map(|len| Prefix::truncating(ip, len).ok().map(|p| RecordId::block(p.addr(), len)))
        .collect()
}

impl Mutation {
    /// The records this mutation reads.
    pub fn reads(&self) -> Vec<Read> {
        use Mutation as M;
        match self {
            M::CreateApp(a) => vec![Read::One(RecordId::App(a.sdkappid))],
            M::UpdateApp { sdkappid, .. } | M::RotateAppSecret { sdkappid, .. } | M::DeleteApp(sdkappid) => {
                vec![Read::One(RecordId::App(*sdkappid))]
            }
            M::InsertKey(k) => vec![Read::One(RecordId::Key(k.secret_id.clone()))],
            M::RotateKey { .. } | M::RevokeKey(_) => vec![Read::All(Kind::Key)],
            M::AddBlock(e) => vec![Read::One(RecordId::block(e.ip, e.prefix_len)), Read::BlockCount],
            M::AddBlockUnlessCovered(e) => {
                let mut reads: Vec<Read> = covering_ids(e.ip, e.prefix_len).into_iter().map(Read::One).collect();
                reads.push(Read::BlockCount);
                reads
            }
            M::RemoveBlock { ip, prefix_len } | M::RemoveBlockFrom { ip, prefix_len, .. } => {
                vec![Read::One(RecordId::block(*ip, *prefix_len))]
            }
            M::Prune => vec![Read::All(Kind::Block), Read::All(Kind::Ban)],
            M::Ban(b) => vec![Read::One(RecordId::Ban(b.field()))],
            M::SetLimits(_) => vec![Read::One(RecordId::Limits)],
        }
    }

    /// The kinds this mutation reads or writes (what an optimistic transaction watches).
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self
            .reads()
            .iter()
            .map(|r| match r {
                Read::One(id) => id.kind(),
                Read::All(k) => *k,
                Read::BlockCount => Kind::Block,
            })
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Whether it touches the blocklist (the embedded store prunes expired entries first).
    pub fn touches_blocks(&self) -> bool {
        self.kinds().contains(&Kind::Block)
    }

    /// Decides the mutation on `view` (which holds at least [`Mutation::reads`]) at `now`.
    /// Nothing is written when this fails.
    pub fn apply(&self, view: &View, now: u64) -> Result<Applied, StoreError> {
        use Mutation as M;
        Ok(match self {
            M::CreateApp(app) => {
                app.quotas.check().map_err(StoreError::InvalidQuotas)?;
                app.secrets.iter().try_for_each(|s| check_app_secret(&s.key))?;
                if view.app(app.sdkappid).is_some() {
                    return Err(StoreError::AppExists(app.sdkappid));
                }
                Applied::change(
                    format!("create_app {}", app.sdkappid),
                    vec![put(Record::App(app.clone()))],
                    Output::Done,
                )
            }
            M::UpdateApp { sdkappid, quotas, require_private_map_key, allow_v1_joins } => {
                if let Some(q) = quotas {
                    q.check().map_err(StoreError::InvalidQuotas)?;
                }
                let mut app = view.app(*sdkappid).ok_or(StoreError::AppNotFound(*sdkappid))?;
                if let Some(q) = quotas {
                    app.quotas = *q;
                }
                if let Some(r) = require_private_map_key {
                    app.require_private_map_key = *r;
                }
                if let Some(v) = allow_v1_joins {
                    app.allow_v1_joins = *v;
                }
                let verb = match (require_private_map_key, allow_v1_joins) {
                    (None, None) => "update_quotas",
                    _ => "update_app",
                };
                Applied::change(format!("{verb} {sdkappid}"), vec![put(Record::App(app.clone()))], Output::App(app))
            }
            M::RotateAppSecret { sdkappid, secret, overlap } => {
                check_app_secret(secret)?;
                let mut app = view.app(*sdkappid).ok_or(StoreError::AppNotFound(*sdkappid))?;
                app.rotate_secret(secret.clone(), now, *overlap);
                let what = format!("rotate_app_secret {sdkappid}");
                Applied::change(what, vec![put(Record::App(app.clone()))], Output::App(app))
            }
            M::DeleteApp(sdkappid) => {
                view.app(*sdkappid).ok_or(StoreError::AppNotFound(*sdkappid))?;
                Applied::change(format!("delete_app {sdkappid}"), vec![(RecordId::App(*sdkappid), None)], Output::Done)
            }
            M::InsertKey(key) => {
                if view.key(&key.secret_id).is_some() {
                    return Err(StoreError::KeyExists);
                }
                let what = format!("create_key {} {:?}", key.secret_id, key.role);
                Applied::change(what, vec![put(Record::Key(key.clone()))], Output::Done)
            }
            M::RotateKey { secret_id, overlap } => {
                let mut key = view.key(secret_id).ok_or(StoreError::KeyNotFound)?;
                let next = key.rotate(now, *overlap)?;
                if view.key(&next.secret_id).is_some() {
                    return Err(StoreError::KeyExists);
                }
                let writes = vec![put(Record::Key(key)), put(Record::Key(next.clone()))];
                Applied::change(format!("rotate_key {secret_id}"), writes, Output::Key(next))
            }
            M::RevokeKey(secret_id) => {
                let mut key = view.key(secret_id).ok_or(StoreError::KeyNotFound)?;
                if key.role == Role::Admin && key.is_usable(now) {
                    let other_admin =
                        view.keys().any(|k| &k.secret_id != secret_id && k.role == Role::Admin && k.is_usable(now));
                    if !other_admin {
                        return Err(StoreError::LastAdmin);
                    }
                }
                key.revoke(now)?;
                Applied::change(format!("revoke_key {secret_id}"), vec![put(Record::Key(key))], Output::Done)
            }
            M::AddBlock(entry) => {
                entry.check()?;
                let id = RecordId::block(entry.ip, entry.prefix_len);
                if view.block(&id).is_none() && view.block_count >= MAX_BLOCKS as u64 {
                    return Err(StoreError::BlocklistFull);
                }
                let what = format!("block {} ttl={}", entry.cidr(), entry.ttl_at(now));
                Applied::change(what, vec![put(Record::Block(entry.clone()))], Output::Done)
            }
            M::AddBlockUnlessCovered(entry) => {
                entry.check()?;
                if let Some(c) = view.blocks().find(|e| e.is_live(now) && e.covers(entry.ip, entry.prefix_len)) {
                    return Ok(Applied::nothing(Output::Covered(Some(c.clone()))));
                }
                let id = RecordId::block(entry.ip, entry.prefix_len);
                if view.block(&id).is_none() && view.block_count >= MAX_BLOCKS as u64 {
                    return Err(StoreError::BlocklistFull);
                }
                let what = format!("block {} ttl={}", entry.cidr(), entry.ttl_at(now));
                Applied::change(what, vec![put(Record::Block(entry.clone()))], Output::Covered(None))
            }
            M::RemoveBlock { ip, prefix_len } => {
                let id = RecordId::block(*ip, *prefix_len);
                let found = view.block(&id).filter(|e| e.is_live(now)).ok_or(StoreError::BlockNotFound)?;
                Applied::change(format!("unblock {}", id.field()), vec![(id, None)], Output::Removed(found))
            }
            M::RemoveBlockFrom { ip, prefix_len, source } => {
                let id = RecordId::block(*ip, *prefix_len);
                let found = view.block(&id).filter(|e| e.is_live(now)).ok_or(StoreError::BlockNotFound)?;
                if found.source != *source {
                    return Ok(Applied::nothing(Output::RemovedFrom(found, false)));
                }
                Applied::change(format!("unblock {}", id.field()), vec![(id, None)], Output::RemovedFrom(found, true))
            }
            M::Prune => {
                let mut writes: Vec<Write> = view
                    .blocks()
                    .filter(|e| !e.is_live(now))
                    .map(|e| (RecordId::block(e.ip, e.prefix_len), None))
                    .collect();
                writes.extend(view.bans().filter(|b| b.until <= now).map(|b| (RecordId::Ban(b.field()), None)));
                Applied { what: None, writes, out: Output::Done }
            }
            M::Ban(b) => {
                let what = format!("ban {} {} {} secs={}", b.sdkappid, b.room, b.user, b.secs_left(now));
                Applied::change(what, vec![put(Record::Ban(b.clone()))], Output::Done)
            }
            M::SetLimits(limits) => {
                limits.check().map_err(StoreError::InvalidLimits)?;
                let what = format!(
                    "set_limits pps={}/{} join={}/{} ports={}-{}",
                    limits.pps_rate_per_sec,
                    limits.pps_burst,
                    limits.join_rate_per_sec,
                    limits.join_burst,
                    limits.port_min,
                    limits.port_max
                );
                Applied::change(what, vec![put(Record::Limits(*limits))], Output::Done)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, len: u8, source: BlockSource, expires_at: Option<u64>) -> BlockEntry {
        BlockEntry { ip: ip.parse().unwrap(), prefix_len: len, created_at: 1, expires_at, reason: "t".into(), source }
    }

    #[test]
    fn covering_candidates_are_every_shorter_prefix() {
        let ids = covering_ids("198.18.5.7".parse().unwrap(), 32);
        assert_eq!(ids.len(), 33);
        assert_eq!(ids[0], RecordId::Block("0.0.0.0/0".into()));
        assert_eq!(ids[24], RecordId::Block("198.18.5.0/24".into()));
        assert_eq!(ids[32], RecordId::Block("198.18.5.7/32".into()));
    }

    #[test]
    fn automatic_block_under_an_operator_prefix_writes_nothing() {
        let op = entry("198.18.0.0", 16, BlockSource::Api, None);
        let auto = entry("198.18.5.7", 32, BlockSource::Auto, Some(100));
        let m = Mutation::AddBlockUnlessCovered(auto.clone());
        let mut view = View::default();
        for r in m.reads() {
            if let Read::One(id) = r {
                view.records.insert(id, None);
            }
        }
        view.records.insert(RecordId::block(op.ip, 16), Some(Record::Block(op.clone())));
        let applied = m.apply(&view, 10).unwrap();
        assert_eq!(applied.out, Output::Covered(Some(op.clone())));
        assert!(applied.writes.is_empty() && applied.what.is_none());
        // Once the operator's entry is gone the automatic one is written.
        view.records.insert(RecordId::block(op.ip, 16), None);
        let applied = m.apply(&view, 10).unwrap();
        assert_eq!(applied.writes, vec![(RecordId::block(auto.ip, 32), Some(Record::Block(auto)))]);
    }

    #[test]
    fn a_record_under_another_id_is_refused() {
        let e = entry("198.18.0.1", 32, BlockSource::Api, None);
        let bytes = Record::Block(e).encode_value().unwrap();
        assert!(Record::decode_value(&RecordId::Block("198.18.0.1/32".into()), &bytes).is_ok());
        let moved = Record::decode_value(&RecordId::Block("198.18.0.2/32".into()), &bytes);
        assert!(matches!(moved, Err(StoreError::MisplacedRecord(_))));
    }

    #[test]
    fn prune_deletes_only_expired_entries() {
        let live = entry("198.18.0.1", 32, BlockSource::Api, None);
        let dead = entry("198.18.0.2", 32, BlockSource::Auto, Some(5));
        let mut view = View::default();
        for e in [&live, &dead] {
            view.records.insert(RecordId::block(e.ip, 32), Some(Record::Block(e.clone())));
        }
        let applied = Mutation::Prune.apply(&view, 10).unwrap();
        assert_eq!(applied.writes, vec![(RecordId::block(dead.ip, 32), None)]);
        assert!(applied.what.is_none());
    }
}
