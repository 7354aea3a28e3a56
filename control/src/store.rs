//! The embedded store of `relay-control`: apps, API keys, the source blocklist, the
//! data-plane limits and the append-only audit log, in one redb file.
//!
//! Invariants:
//! - Every change is one redb write transaction, and the audit entry of a successful change is
//!   written in that same transaction: a change and its audit record land together or not at
//!   all. redb commits with `Durability::Immediate` (fsync), so a committed change survives
//!   `kill -9` and power loss.
//! - A change that fails (unknown app, revoked key, ...) writes nothing; the caller records the
//!   refusal with [`Store::append_audit`], in its own transaction.
//! - The audit log is append-only: the store has no way to change or delete an entry. Entries
//!   are keyed by `(time, sequence)`, the sequence being a counter kept in the same file, so
//!   entries of the same second keep their order.
//!
//! Secrets at rest: HMAC verification (TC3 for API keys, TLSSigAPIv2 for UserSigs) needs the
//! shared secret itself, not a hash of it, so API SecretKeys and app secrets are stored in
//! clear. They are protected by the file's permissions: the store file is created with mode
//! 0600 (owner read/write only) before redb opens it, an existing file is tightened to 0600 at
//! open, and the daemon runs as its own unprivileged user. Backups of the file must be treated
//! as secrets. Records are JSON values inside redb tables.

use std::fs::{self, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
pub use relay::limits::{Limits, Quotas};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{ApiKey, SecretKey};
pub use crate::records::{
    App, AppSecret, BlockEntry, BlockSource, StoreError, MAX_APP_SECRETS, MAX_AUDIT_FIELD_LEN, MAX_BLOCKS,
    MAX_BLOCK_REASON_LEN,
};
use crate::state::{Ban, Kind, Mutation, Output, Read, Record, RecordId, View, Write};

const APPS: TableDefinition<u32, &[u8]> = TableDefinition::new("apps");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
const AUDIT: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("blocklist");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
const BANS: TableDefinition<&str, &[u8]> = TableDefinition::new("bans");
const AUDIT_SEQ: &str = "audit_seq";
const LIMITS_KEY: &str = crate::state::LIMITS_FIELD;
const CURSOR_KEY: &str = "cluster_cursor";

/// Mode of the store file: owner read and write only.
pub const STORE_FILE_MODE: u32 = 0o600;
/// Who makes a change, from where, and when.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The SecretId (or `bootstrap`) of the caller.
    pub who: &'a str,
    /// The caller's address.
    pub source_ip: IpAddr,
    /// Unix seconds.
    pub now: u64,
    /// The call that makes the change, e.g. `POST /v1/apps`; written before the store's own
    /// description in the audit entry's `what`. Empty outside the HTTP API.
    pub via: &'a str,
}

/// How an audited call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The change was made.
    Success,
    /// The call was refused or failed; nothing changed.
    Failure {
        /// Why.
        reason: String,
    },
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, strictly increasing.
    pub seq: u64,
    /// When (Unix seconds).
    pub at: u64,
    /// Who: a SecretId, or `bootstrap`.
    pub who: String,
    /// What: the call and its target, e.g. `create_app 1400000000`.
    pub what: String,
    /// From where.
    pub source_ip: IpAddr,
    /// The result.
    pub outcome: Outcome,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(value)?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(serde_json::from_slice(bytes)?)
}

fn append_in(
    txn: &WriteTransaction,
    actor: &Actor<'_>,
    what: &str,
    outcome: Outcome,
) -> Result<AuditEntry, StoreError> {
    let what = if actor.via.is_empty() { what.to_owned() } else { format!("{} {what}", actor.via) };
    if actor.who.len() > MAX_AUDIT_FIELD_LEN || what.len() > MAX_AUDIT_FIELD_LEN {
        return Err(StoreError::AuditFieldTooLong);
    }
    let mut meta = txn.open_table(META)?;
    let seq = meta.get(AUDIT_SEQ)?.map_or(0, |v| v.value()) + 1;
    meta.insert(AUDIT_SEQ, seq)?;
    let entry = AuditEntry { seq, at: actor.now, who: actor.who.to_owned(), what, source_ip: actor.source_ip, outcome };
    txn.open_table(AUDIT)?.insert((actor.now, seq), encode(&entry)?.as_slice())?;
    Ok(entry)
}

/// The store. Cheap to share behind an `Arc`; redb serializes writers.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens the store at `path`, creating it with mode 0600 if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(STORE_FILE_MODE).open(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(STORE_FILE_MODE))?;
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(APPS)?;
        txn.open_table(KEYS)?;
        txn.open_table(AUDIT)?;
        txn.open_table(META)?;
        txn.open_table(BLOCKS)?;
        txn.open_table(SETTINGS)?;
        txn.open_table(BANS)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// Appends an entry on its own, for refused or failed calls.
    pub fn append_audit(&self, actor: &Actor<'_>, what: &str, outcome: Outcome) -> Result<AuditEntry, StoreError> {
        let txn = self.db.begin_write()?;
        let entry = append_in(&txn, actor, what, outcome)?;
        txn.commit()?;
        Ok(entry)
    }

    /// Audit entries with `from <= at <= to`, oldest first, at most `limit`.
    pub fn audit_range(&self, from: u64, to: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let table = self.db.begin_read()?.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in table.range((from, 0)..=(to, u64::MAX))?.take(limit) {
            out.push(decode(row?.1.value())?);
        }
        Ok(out)
    }

    /// Runs `m` in one write transaction: loads what it reads, decides, writes what it decided
    /// together with its audit entry. Block mutations prune expired entries first.
    pub fn mutate(&self, m: &Mutation, actor: &Actor<'_>) -> Result<Output, StoreError> {
        let txn = self.db.begin_write()?;
        if m.touches_blocks() {
            prune_blocks(&mut txn.open_table(BLOCKS)?, actor.now)?;
        }
        let mut view = View::default();
        for read in m.reads() {
            load(&txn, &read, &mut view)?;
        }
        let applied = m.apply(&view, actor.now)?;
        if applied.what.is_none() && applied.writes.is_empty() {
            txn.abort()?;
            return Ok(applied.out);
        }
        for w in &applied.writes {
            write_record(&txn, w)?;
        }
        if let Some(what) = &applied.what {
            append_in(&txn, actor, what, Outcome::Success)?;
        }
        txn.commit()?;
        Ok(applied.out)
    }

    /// Applies writes decided elsewhere (a cluster change-log entry) and records `cursor` (the
    /// log position they came from), in one transaction. Not audited here: the node that made
    /// the change audited it.
    pub fn apply_writes(&self, writes: &[Write], cursor: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        for w in writes {
            write_record(&txn, w)?;
        }
        txn.open_table(SETTINGS)?.insert(CURSOR_KEY, cursor)?;
        txn.commit()?;
        Ok(())
    }

    /// Replaces every app, API key, blocklist entry and the limits with `records`, and records
    /// `cursor`, in one transaction (a cluster node's full resync).
    pub fn replace_all(&self, records: &[Record], cursor: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.delete_table(APPS)?;
        txn.delete_table(KEYS)?;
        txn.delete_table(BLOCKS)?;
        txn.delete_table(BANS)?;
        txn.open_table(SETTINGS)?.remove(LIMITS_KEY)?;
        txn.open_table(APPS)?;
        txn.open_table(KEYS)?;
        txn.open_table(BLOCKS)?;
        txn.open_table(BANS)?;
        for r in records {
            write_record(&txn, &(r.id(), Some(r.clone())))?;
        }
        txn.open_table(SETTINGS)?.insert(CURSOR_KEY, cursor)?;
        txn.commit()?;
        Ok(())
    }

    /// Every app, API key, blocklist entry (expired ones included) and the limits.
    pub fn all_records(&self) -> Result<Vec<Record>, StoreError> {
        let mut out: Vec<Record> = self.list_apps()?.into_iter().map(Record::App).collect();
        out.extend(self.list_keys()?.into_iter().map(Record::Key));
        let t = self.db.begin_read()?.open_table(BLOCKS)?;
        for row in t.iter()? {
            out.push(Record::Block(decode(row?.1.value())?));
        }
        out.extend(self.limits()?.map(Record::Limits));
        out.extend(self.list_bans()?.into_iter().map(Record::Ban));
        Ok(out)
    }

    /// Every stored ban, ended or not (pruned by housekeeping).
    pub fn list_bans(&self) -> Result<Vec<Ban>, StoreError> {
        let t = self.db.begin_read()?.open_table(BANS)?;
        t.iter()?.map(|row| decode(row?.1.value())).collect()
    }

    /// The cluster cursor last recorded by [`Store::apply_writes`] or [`Store::replace_all`].
    pub fn cursor(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.db.begin_read()?.open_table(SETTINGS)?;
        Ok(t.get(CURSOR_KEY)?.map(|v| v.value().to_vec()))
    }

    /// Creates an app.
    pub fn create_app(&self, app: &App, actor: &Actor<'_>) -> Result<(), StoreError> {
        self.mutate(&Mutation::CreateApp(app.clone()), actor).map(drop)
    }

    /// The app `sdkappid`, if any.
    pub fn get_app(&self, sdkappid: u32) -> Result<Option<App>, StoreError> {
        let t = self.db.begin_read()?.open_table(APPS)?;
        t.get(sdkappid)?.map(|v| decode(v.value())).transpose()
    }

    /// All apps, by SdkAppId.
    pub fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        let t = self.db.begin_read()?.open_table(APPS)?;
        t.iter()?.map(|row| decode(row?.1.value())).collect()
    }

    fn changed_app(&self, m: &Mutation, actor: &Actor<'_>) -> Result<App, StoreError> {
        match self.mutate(m, actor)? {
            Output::App(a) => Ok(a),
            other => unreachable!("app mutation returned {other:?}"),
        }
    }

    /// Replaces the quotas of an app.
    pub fn update_quotas(&self, sdkappid: u32, quotas: Quotas, actor: &Actor<'_>) -> Result<App, StoreError> {
        self.update_app_settings(sdkappid, Some(quotas), None, None, actor)
    }

    /// Changes an app's quotas, its PrivateMapKey requirement and/or its v1 migration
    /// window, in one change.
    pub fn update_app_settings(
        &self,
        sdkappid: u32,
        quotas: Option<Quotas>,
        require_private_map_key: Option<bool>,
        allow_v1_joins: Option<bool>,
        actor: &Actor<'_>,
    ) -> Result<App, StoreError> {
        self.changed_app(&Mutation::UpdateApp { sdkappid, quotas, require_private_map_key, allow_v1_joins }, actor)
    }

    /// Rotates an app's secret; see [`App::rotate_secret`].
    pub fn rotate_app_secret(
        &self,
        sdkappid: u32,
        secret: SecretKey,
        overlap: u64,
        actor: &Actor<'_>,
    ) -> Result<App, StoreError> {
        self.changed_app(&Mutation::RotateAppSecret { sdkappid, secret, overlap }, actor)
    }

    /// Deletes an app.
    pub fn delete_app(&self, sdkappid: u32, actor: &Actor<'_>) -> Result<(), StoreError> {
        self.mutate(&Mutation::DeleteApp(sdkappid), actor).map(drop)
    }

    /// Stores a new API key (e.g. from [`ApiKey::generate`]).
    pub fn insert_key(&self, key: &ApiKey, actor: &Actor<'_>) -> Result<(), StoreError> {
        self.mutate(&Mutation::InsertKey(key.clone()), actor).map(drop)
    }

    /// The API key `secret_id`, whatever its state.
    pub fn get_key(&self, secret_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let t = self.db.begin_read()?.open_table(KEYS)?;
        t.get(secret_id)?.map(|v| decode(v.value())).transpose()
    }

    /// All API keys, by SecretId.
    pub fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let t = self.db.begin_read()?.open_table(KEYS)?;
        t.iter()?.map(|row| decode(row?.1.value())).collect()
    }

    /// The key `secret_id` if it is usable at `now`: what TC3 verification looks up.
    pub fn usable_key(&self, secret_id: &str, now: u64) -> Result<Option<ApiKey>, StoreError> {
        Ok(self.get_key(secret_id)?.filter(|k| k.is_usable(now)))
    }

    /// Rotates an API key: stores its successor and returns it (to show its SecretKey once).
    pub fn rotate_key(&self, secret_id: &str, overlap: u64, actor: &Actor<'_>) -> Result<ApiKey, StoreError> {
        match self.mutate(&Mutation::RotateKey { secret_id: secret_id.to_owned(), overlap }, actor)? {
            Output::Key(k) => Ok(k),
            other => unreachable!("rotate_key returned {other:?}"),
        }
    }

    /// Revokes an API key at once.
    pub fn revoke_key(&self, secret_id: &str, actor: &Actor<'_>) -> Result<(), StoreError> {
        self.mutate(&Mutation::RevokeKey(secret_id.to_owned()), actor).map(drop)
    }

    /// Adds a blocklist entry, replacing a live entry for the same prefix (a new TTL and
    /// reason). Expired entries are pruned in the same transaction.
    pub fn add_block(&self, entry: &BlockEntry, actor: &Actor<'_>) -> Result<(), StoreError> {
        self.mutate(&Mutation::AddBlock(entry.clone()), actor).map(drop)
    }

    /// Removes the live blocklist entry for `ip/prefix_len`.
    pub fn remove_block(&self, ip: IpAddr, prefix_len: u8, actor: &Actor<'_>) -> Result<BlockEntry, StoreError> {
        match self.mutate(&Mutation::RemoveBlock { ip, prefix_len }, actor)? {
            Output::Removed(e) => Ok(e),
            other => unreachable!("remove_block returned {other:?}"),
        }
    }

    /// Adds `entry` unless a live entry already covers its prefix ([`BlockEntry::covers`]);
    /// then that entry is returned and nothing is written. The check and the insert are one
    /// transaction, so an automatic block never replaces an operator's entry added meanwhile.
    pub fn add_block_unless_covered(
        &self,
        entry: &BlockEntry,
        actor: &Actor<'_>,
    ) -> Result<Option<BlockEntry>, StoreError> {
        match self.mutate(&Mutation::AddBlockUnlessCovered(entry.clone()), actor)? {
            Output::Covered(c) => Ok(c),
            other => unreachable!("add_block_unless_covered returned {other:?}"),
        }
    }

    /// Removes the live entry for `ip/prefix_len` only if `source` added it, so the detector
    /// releasing its block never lifts an operator's entry for the same prefix. Returns the
    /// entry and whether it was removed (when another source holds the prefix nothing is
    /// written); `BlockNotFound` when no live entry has the prefix.
    pub fn remove_block_from(
        &self,
        ip: IpAddr,
        prefix_len: u8,
        source: BlockSource,
        actor: &Actor<'_>,
    ) -> Result<(BlockEntry, bool), StoreError> {
        match self.mutate(&Mutation::RemoveBlockFrom { ip, prefix_len, source }, actor)? {
            Output::RemovedFrom(e, removed) => Ok((e, removed)),
            other => unreachable!("remove_block_from returned {other:?}"),
        }
    }

    /// Blocklist entries live at `now`, by prefix text.
    pub fn list_blocks(&self, now: u64) -> Result<Vec<BlockEntry>, StoreError> {
        let t = self.db.begin_read()?.open_table(BLOCKS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let e: BlockEntry = decode(row?.1.value())?;
            if e.is_live(now) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Stores the data-plane limits to push to relayd.
    pub fn set_limits(&self, limits: &Limits, actor: &Actor<'_>) -> Result<(), StoreError> {
        self.mutate(&Mutation::SetLimits(*limits), actor).map(drop)
    }

    /// The stored limits, if an operator ever set them.
    pub fn limits(&self) -> Result<Option<Limits>, StoreError> {
        let t = self.db.begin_read()?.open_table(SETTINGS)?;
        t.get(LIMITS_KEY)?.map(|v| decode(v.value())).transpose()
    }
}

/// Loads what `read` names into `view`, inside `txn`.
fn load(txn: &WriteTransaction, read: &Read, view: &mut View) -> Result<(), StoreError> {
    match read {
        Read::One(id) => {
            let bytes = match id {
                RecordId::App(a) => txn.open_table(APPS)?.get(*a)?.map(|v| v.value().to_vec()),
                RecordId::Key(k) => txn.open_table(KEYS)?.get(k.as_str())?.map(|v| v.value().to_vec()),
                RecordId::Block(b) => txn.open_table(BLOCKS)?.get(b.as_str())?.map(|v| v.value().to_vec()),
                RecordId::Limits => txn.open_table(SETTINGS)?.get(LIMITS_KEY)?.map(|v| v.value().to_vec()),
                RecordId::Ban(b) => txn.open_table(BANS)?.get(b.as_str())?.map(|v| v.value().to_vec()),
            };
            let rec = bytes.map(|b| Record::decode_value(id, &b)).transpose()?;
            view.records.insert(id.clone(), rec);
        }
        Read::All(Kind::App) => {
            for row in txn.open_table(APPS)?.iter()? {
                let a: App = decode(row?.1.value())?;
                view.records.insert(RecordId::App(a.sdkappid), Some(Record::App(a)));
            }
        }
        Read::All(Kind::Key) => {
            for row in txn.open_table(KEYS)?.iter()? {
                let k: ApiKey = decode(row?.1.value())?;
                view.records.insert(RecordId::Key(k.secret_id.clone()), Some(Record::Key(k)));
            }
        }
        Read::All(Kind::Block) => {
            for row in txn.open_table(BLOCKS)?.iter()? {
                let b: BlockEntry = decode(row?.1.value())?;
                view.records.insert(RecordId::block(b.ip, b.prefix_len), Some(Record::Block(b)));
            }
        }
        Read::All(Kind::Settings) => load(txn, &Read::One(RecordId::Limits), view)?,
        Read::All(Kind::Ban) => {
            for row in txn.open_table(BANS)?.iter()? {
                let b: Ban = decode(row?.1.value())?;
                view.records.insert(RecordId::Ban(b.field()), Some(Record::Ban(b)));
            }
        }
        Read::BlockCount => view.block_count = txn.open_table(BLOCKS)?.len()?,
    }
    Ok(())
}

/// Writes (or deletes) one record inside `txn`.
fn write_record(txn: &WriteTransaction, (id, rec): &Write) -> Result<(), StoreError> {
    let bytes = rec.as_ref().map(Record::encode_value).transpose()?;
    match (id, bytes) {
        (RecordId::App(a), Some(b)) => drop(txn.open_table(APPS)?.insert(*a, b.as_slice())?),
        (RecordId::App(a), None) => drop(txn.open_table(APPS)?.remove(*a)?),
        (RecordId::Key(k), Some(b)) => drop(txn.open_table(KEYS)?.insert(k.as_str(), b.as_slice())?),
        (RecordId::Key(k), None) => drop(txn.open_table(KEYS)?.remove(k.as_str())?),
        (RecordId::Block(k), Some(b)) => drop(txn.open_table(BLOCKS)?.insert(k.as_str(), b.as_slice())?),
        (RecordId::Block(k), None) => drop(txn.open_table(BLOCKS)?.remove(k.as_str())?),
        (RecordId::Limits, Some(b)) => drop(txn.open_table(SETTINGS)?.insert(LIMITS_KEY, b.as_slice())?),
        (RecordId::Limits, None) => drop(txn.open_table(SETTINGS)?.remove(LIMITS_KEY)?),
        (RecordId::Ban(k), Some(b)) => drop(txn.open_table(BANS)?.insert(k.as_str(), b.as_slice())?),
        (RecordId::Ban(k), None) => drop(txn.open_table(BANS)?.remove(k.as_str())?),
    }
    Ok(())
}

fn prune_blocks(t: &mut redb::Table<'_, &'static str, &'static [u8]>, now: u64) -> Result<(), StoreError> {
    let mut expired = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        if !decode::<BlockEntry>(v.value())?.is_live(now) {
            expired.push(k.value().to_owned());
        }
    }
    for k in expired {
        t.remove(k.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    use relay::prefix::Prefix;
    use relay::tempdir::TempDir;

    use super::*;
    use crate::keys::KeyError;
    use crate::keys::Role;

    /// A fresh temp dir for one test's store; see [`store_file`].
    fn temp(name: &str) -> TempDir {
        TempDir::new(&format!("control-{name}")).expect("temp dir")
    }

    fn store_file(dir: &TempDir) -> PathBuf {
        dir.join("control.redb")
    }

    fn actor(now: u64) -> Actor<'static> {
        Actor { who: "AKIDtest", source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), now, via: "" }
    }

    fn secret(s: &str) -> SecretKey {
        SecretKey::from_exposed(s.to_owned())
    }

    const QUOTAS: Quotas = Quotas { max_rooms: 10, max_members_per_room: 50, max_sessions: 500 };

    #[test]
    fn file_is_private() {
        let dir = temp("mode");
        drop(Store::open(store_file(&dir)).unwrap());
        assert_eq!(fs::metadata(store_file(&dir)).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(store_file(&dir), fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(store_file(&dir)).unwrap());
        assert_eq!(fs::metadata(store_file(&dir)).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn apps_round_trip_and_persist() {
        let dir = temp("apps");
        let app = App::new(1_400_000_000, secret("s1"), QUOTAS, 100);
        {
            let store = Store::open(store_file(&dir)).unwrap();
            store.create_app(&app, &actor(100)).unwrap();
            assert!(matches!(store.create_app(&app, &actor(101)), Err(StoreError::AppExists(1_400_000_000))));
            assert_eq!(store.get_app(1_400_000_000).unwrap(), Some(app.clone()));
            let q = Quotas { max_rooms: 20, ..QUOTAS };
            assert_eq!(store.update_quotas(1_400_000_000, q, &actor(102)).unwrap().quotas, q);
            let bad = Quotas { max_rooms: 0, ..QUOTAS };
            assert!(matches!(store.update_quotas(1_400_000_000, bad, &actor(103)), Err(StoreError::InvalidQuotas(_))));
            assert!(matches!(store.update_quotas(7, q, &actor(103)), Err(StoreError::AppNotFound(7))));
            store.create_app(&App::new(1_400_000_001, secret("t"), QUOTAS, 104), &actor(104)).unwrap();
        }
        let store = Store::open(store_file(&dir)).unwrap();
        let apps = store.list_apps().unwrap();
        assert_eq!(apps.iter().map(|a| a.sdkappid).collect::<Vec<_>>(), [1_400_000_000, 1_400_000_001]);
        assert_eq!(apps[0].quotas.max_rooms, 20);
        store.delete_app(1_400_000_001, &actor(105)).unwrap();
        assert!(matches!(store.delete_app(1_400_000_001, &actor(106)), Err(StoreError::AppNotFound(_))));
        assert_eq!(store.get_app(1_400_000_001).unwrap(), None);
    }

    #[test]
    fn app_secret_rotation_overlap() {
        let dir = temp("rotate");
        let store = Store::open(store_file(&dir)).unwrap();
        store.create_app(&App::new(1, secret("old"), QUOTAS, 0), &actor(0)).unwrap();
        let app = store.rotate_app_secret(1, secret("new"), 60, &actor(100)).unwrap();
        let usable = |app: &App, now| app.usable_secrets(now).map(|s| s.expose().to_owned()).collect::<Vec<_>>();
        assert_eq!(usable(&app, 159), ["new", "old"]);
        assert_eq!(usable(&app, 160), ["new"]);
        // A second rotation inside the window keeps two secrets, newest first.
        let app = store.rotate_app_secret(1, secret("newer"), 60, &actor(120)).unwrap();
        assert_eq!(app.secrets.len(), MAX_APP_SECRETS);
        assert_eq!(usable(&app, 121), ["newer", "new"]);
        assert!(matches!(store.rotate_app_secret(1, secret(""), 60, &actor(130)), Err(StoreError::InvalidAppSecret)));
        assert!(matches!(
            store.rotate_app_secret(1, secret("a b"), 60, &actor(130)),
            Err(StoreError::InvalidAppSecret)
        ));
    }

    #[test]
    fn keys_round_trip_rotate_revoke_persist() {
        let dir = temp("keys");
        let key = ApiKey::generate(Role::Operator, "ops", 10).unwrap();
        let next;
        {
            let store = Store::open(store_file(&dir)).unwrap();
            store.insert_key(&key, &actor(10)).unwrap();
            assert!(matches!(store.insert_key(&key, &actor(11)), Err(StoreError::KeyExists)));
            assert_eq!(store.get_key(&key.secret_id).unwrap(), Some(key.clone()));
            next = store.rotate_key(&key.secret_id, 30, &actor(20)).unwrap();
            assert!(store.usable_key(&key.secret_id, 49).unwrap().is_some());
            assert!(store.usable_key(&key.secret_id, 50).unwrap().is_none());
            assert!(matches!(
                store.rotate_key(&key.secret_id, 30, &actor(21)),
                Err(StoreError::Key(KeyError::AlreadyRotated))
            ));
            assert!(matches!(store.revoke_key("AKIDnone", &actor(21)), Err(StoreError::KeyNotFound)));
        }
        let store = Store::open(store_file(&dir)).unwrap();
        assert_eq!(store.list_keys().unwrap().len(), 2);
        assert_eq!(store.usable_key(&next.secret_id, 1000).unwrap(), Some(next.clone()));
        store.revoke_key(&next.secret_id, &actor(1000)).unwrap();
        assert_eq!(store.usable_key(&next.secret_id, 1000).unwrap(), None);
        assert!(matches!(store.revoke_key(&next.secret_id, &actor(1001)), Err(StoreError::Key(KeyError::Revoked))));
    }

    #[test]
    fn audit_is_ordered_atomic_and_queryable() {
        let dir = temp("audit");
        {
            let store = Store::open(store_file(&dir)).unwrap();
            store.create_app(&App::new(5, secret("k"), QUOTAS, 200), &actor(200)).unwrap();
            // Failed changes write no audit entry of their own...
            assert!(store.create_app(&App::new(5, secret("k"), QUOTAS, 200), &actor(200)).is_err());
            // ...the caller records the refusal.
            let refused = Outcome::Failure { reason: "app exists".into() };
            store.append_audit(&actor(200), "create_app 5", refused.clone()).unwrap();
            store.update_quotas(5, QUOTAS, &actor(100)).unwrap(); // a clock that went back
            store.delete_app(5, &actor(300)).unwrap();
            assert!(matches!(
                store.append_audit(&actor(300), &"x".repeat(MAX_AUDIT_FIELD_LEN + 1), Outcome::Success),
                Err(StoreError::AuditFieldTooLong)
            ));
        }
        let store = Store::open(store_file(&dir)).unwrap();
        let all = store.audit_range(0, u64::MAX, 100).unwrap();
        let summary: Vec<_> = all.iter().map(|e| (e.seq, e.at, e.what.as_str())).collect();
        assert_eq!(
            summary,
            [(3, 100, "update_quotas 5"), (1, 200, "create_app 5"), (2, 200, "create_app 5"), (4, 300, "delete_app 5")]
        );
        assert_eq!(all[2].outcome, Outcome::Failure { reason: "app exists".into() });
        assert_eq!((all[0].who.as_str(), all[0].source_ip), ("AKIDtest", IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mid: Vec<_> = store.audit_range(150, 250, 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(mid, [1, 2]);
        assert_eq!(store.audit_range(0, u64::MAX, 1).unwrap().len(), 1);
        assert!(store.audit_range(250, 150, 100).unwrap().is_empty());
        let next = store.append_audit(&actor(400), "login", Outcome::Success).unwrap();
        assert_eq!(next.seq, 5);
    }

    #[test]
    fn blocklist_and_limits() {
        use std::net::Ipv6Addr;
        let dir = temp("blocks");
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let entry = |ip, len, expires_at| BlockEntry {
            ip,
            prefix_len: len,
            created_at: 100,
            expires_at,
            reason: "flood".into(),
            source: BlockSource::Api,
        };
        {
            let store = Store::open(store_file(&dir)).unwrap();
            store.add_block(&entry(v4(198, 18, 5, 0), 24, None), &actor(100)).unwrap();
            store.add_block(&entry(v4(198, 18, 6, 1), 32, Some(160)), &actor(100)).unwrap();
            let v6: IpAddr = "2001:db8::".parse().unwrap();
            store.add_block(&entry(v6, 32, Some(1000)), &actor(100)).unwrap();
            for (bad, why) in [
                (entry(v4(198, 18, 5, 1), 24, None), "host bits"),
                (entry(v4(198, 18, 5, 0), 33, None), "prefix length"),
                (entry(IpAddr::V6(Ipv6Addr::LOCALHOST), 129, None), "prefix length"),
                (BlockEntry { reason: "a\nb".into(), ..entry(v4(1, 2, 3, 4), 32, None) }, "reason"),
                (BlockEntry { reason: "r".repeat(129), ..entry(v4(1, 2, 3, 4), 32, None) }, "reason"),
            ] {
                let err = store.add_block(&bad, &actor(101)).unwrap_err();
                assert!(matches!(&err, StoreError::InvalidBlock(m) if m.contains(why)), "{err}");
            }
            let live: Vec<_> = store.list_blocks(159).unwrap().iter().map(BlockEntry::cidr).collect();
            assert_eq!(live, ["198.18.5.0/24", "198.18.6.1/32", "2001:db8::/32"]);
            assert_eq!(store.list_blocks(160).unwrap().len(), 2);
            assert!(matches!(store.remove_block(v4(198, 18, 6, 1), 32, &actor(170)), Err(StoreError::BlockNotFound)));
            let limits = Limits {
                pps_rate_per_sec: 100,
                pps_burst: 200,
                join_rate_per_sec: 5,
                join_burst: 10,
                port_min: 7000,
                port_max: 7100,
            };
            assert_eq!(store.limits().unwrap(), None);
            store.set_limits(&limits, &actor(180)).unwrap();
            let bad = Limits { port_min: 8000, ..limits };
            assert!(matches!(store.set_limits(&bad, &actor(181)), Err(StoreError::InvalidLimits(_))));
            assert!(matches!(
                store.set_limits(&Limits { pps_burst: relay::limits::MAX_RATE + 1, ..limits }, &actor(181)),
                Err(StoreError::InvalidLimits(_))
            ));
        }
        let store = Store::open(store_file(&dir)).unwrap();
        assert_eq!(store.limits().unwrap().map(|l| l.port_max), Some(7100));
        let removed = store.remove_block(v4(198, 18, 5, 0), 24, &actor(200)).unwrap();
        assert_eq!(removed.reason, "flood");
        assert_eq!(store.list_blocks(200).unwrap().len(), 1);
        let whats: Vec<_> = store.audit_range(0, u64::MAX, 100).unwrap().into_iter().map(|e| e.what).collect();
        assert_eq!(
            whats,
            [
                "block 198.18.5.0/24 ttl=0",
                "block 198.18.6.1/32 ttl=60",
                "block 2001:db8::/32 ttl=900",
                "set_limits pps=100/200 join=5/10 ports=7000-7100",
                "unblock 198.18.5.0/24"
            ]
        );
        let mask = |ip: IpAddr, len| Prefix::truncating(ip, len).unwrap().addr();
        assert_eq!(mask("2001:db8::1".parse().unwrap(), 64), "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(mask(v4(10, 1, 2, 3), 0), v4(0, 0, 0, 0));
    }

    #[test]
    fn automatic_blocks_respect_operator_entries() {
        let dir = temp("autoblocks");
        let store = Store::open(store_file(&dir)).unwrap();
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let entry = |ip, len, source| BlockEntry {
            ip,
            prefix_len: len,
            created_at: 100,
            expires_at: Some(700),
            reason: "r".into(),
            source,
        };
        let audits = |s: &Store| s.audit_range(0, u64::MAX, 1000).unwrap().len();
        // An operator's /24 covers the attacker: the automatic block is skipped, unwritten.
        store.add_block(&entry(v4(198, 18, 5, 0), 24, BlockSource::Api), &actor(100)).unwrap();
        let before = audits(&store);
        let covering =
            store.add_block_unless_covered(&entry(v4(198, 18, 5, 9), 32, BlockSource::Auto), &actor(101)).unwrap();
        assert_eq!(covering.map(|e| e.cidr()), Some("198.18.5.0/24".to_owned()));
        assert_eq!(audits(&store), before, "a skipped block writes no audit entry");
        // Outside it: added, audited.
        let auto = entry(v4(198, 18, 6, 9), 32, BlockSource::Auto);
        assert_eq!(store.add_block_unless_covered(&auto, &actor(102)).unwrap(), None);
        assert_eq!(audits(&store), before + 1);
        assert!(store.list_blocks(103).unwrap().contains(&auto));
        // Covered by itself (same prefix) or an IPv6 prefix never covers IPv4.
        assert!(store.add_block_unless_covered(&auto, &actor(103)).unwrap().is_some());
        assert!(!entry("::".parse().unwrap(), 0, BlockSource::Api).covers(v4(198, 18, 6, 9), 32));
        assert!(!entry(v4(198, 18, 6, 9), 32, BlockSource::Api).covers(v4(198, 18, 6, 0), 24));
        // The detector releases only its own entry.
        let removed = store.remove_block_from(auto.ip, 32, BlockSource::Auto, &actor(104)).unwrap();
        assert_eq!(removed, (auto.clone(), true));
        assert!(matches!(
            store.remove_block_from(auto.ip, 32, BlockSource::Auto, &actor(105)),
            Err(StoreError::BlockNotFound)
        ));
        let (held, removed) = store.remove_block_from(v4(198, 18, 5, 0), 24, BlockSource::Auto, &actor(106)).unwrap();
        assert!(!removed && held.source == BlockSource::Api, "an operator's entry stays");
        assert_eq!(audits(&store), before + 2, "only the removal was audited");
        assert_eq!(store.list_blocks(107).unwrap().len(), 1);
    }

    #[test]
    fn via_prefixes_the_audit_entry() {
        let dir = temp("via");
        let store = Store::open(store_file(&dir)).unwrap();
        let a = Actor { via: "POST /v1/apps", ..actor(5) };
        store.create_app(&App::new(9, secret("k"), QUOTAS, 5), &a).unwrap();
        let e = store.append_audit(&a, "refused", Outcome::Success).unwrap();
        assert_eq!(e.what, "POST /v1/apps refused");
        assert_eq!(store.audit_range(0, 10, 10).unwrap()[0].what, "POST /v1/apps create_app 9");
    }

    const KILL_CHILD_ENV: &str = "RELAY_CONTROL_KILL9_STORE";

    /// The child half of `committed_changes_survive_kill_9`: commits, says so, then waits to
    /// be killed (it fails if it is not). A no-op when run as an ordinary test.
    #[test]
    fn kill_9_child() {
        let Some(path) = std::env::var_os(KILL_CHILD_ENV) else { return };
        let store = Store::open(path).unwrap();
        for id in 1..=20 {
            store.create_app(&App::new(id, secret("k"), QUOTAS, u64::from(id)), &actor(u64::from(id))).unwrap();
        }
        // On a line of its own: libtest has already printed `test ... ` without a newline.
        println!("\ncommitted");
        // Bounded, so an orphaned child cannot outlive a crashed parent for long.
        std::thread::sleep(std::time::Duration::from_secs(60));
        panic!("not killed within 60 s");
    }

    #[test]
    fn committed_changes_survive_kill_9() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let dir = temp("kill9");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store::tests::kill_9_child", "--nocapture", "--test-threads=1"])
            .env(KILL_CHILD_ENV, store_file(&dir))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let committed = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l == "committed");
        child.kill().unwrap(); // SIGKILL: no destructor, no clean close.
        child.wait().unwrap();
        assert!(committed, "the child never reported its commits");
        let store = Store::open(store_file(&dir)).unwrap();
        assert_eq!(store.list_apps().unwrap().len(), 20);
        assert_eq!(store.audit_range(0, u64::MAX, 100).unwrap().len(), 20);
    }

    #[test]
    fn verification_lookup_through_the_store() {
        use crate::tc3::{sign, ReplayCache, Request, Scope, Verifier};
        let dir = temp("tc3");
        let store = Store::open(store_file(&dir)).unwrap();
        let key = ApiKey::generate(Role::Admin, "root", 0).unwrap();
        store.insert_key(&key, &actor(0)).unwrap();
        let headers = [("content-type", "application/json"), ("host", "control.local")];
        let req = Request { method: "POST", uri: "/", query: "", headers: &headers, payload: b"{}" };
        let now = 1_700_000_000;
        let scope = Scope { timestamp: now, service: "trtc" };
        let signed = sign(&key.secret_id, key.secret_key.expose().as_bytes(), &scope, &req).unwrap();
        let verify = |cache: &mut ReplayCache| {
            Verifier::new("trtc").verify(&signed.authorization, &now.to_string(), &req, now, cache, |id| {
                store.usable_key(id, now).ok().flatten().map(|k| k.secret_key.expose().to_owned())
            })
        };
        assert_eq!(verify(&mut ReplayCache::new(4)).unwrap().secret_id, key.secret_id);
        // The last admin key cannot be revoked; with a second admin key it can.
        assert!(matches!(store.revoke_key(&key.secret_id, &actor(now)), Err(StoreError::LastAdmin)));
        assert!(store.usable_key(&key.secret_id, now).unwrap().is_some());
        store.insert_key(&ApiKey::generate(Role::Admin, "second", now).unwrap(), &actor(now)).unwrap();
        store.revoke_key(&key.secret_id, &actor(now)).unwrap();
        assert_eq!(verify(&mut ReplayCache::new(4)), Err(crate::tc3::Tc3Error::UnknownSecretId));
    }
}
