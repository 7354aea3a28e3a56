//! The daemon's side of monitoring: the link [`crate::monitor`] polls relayd over, and the
//! application of autoblock decisions to the store and relayd.
//!
//! Invariants, and why:
//! - **Its own connection.** [`MgmtLink`] holds a management connection of its own rather
//!   than sharing the push link's, so a poll never queues behind a full sync or a slow API
//!   call (the 2 s autoblock budget depends on polls being on time). A call that fails or
//!   times out drops the connection and the next poll reconnects: a late answer on the old
//!   connection could otherwise be read as the answer to the next request.
//! - **Store first, then relayd**, as for every change: a `Block` commits an `auto` entry and
//!   then tells the push link, which also carries it in every full sync. A source that a live
//!   entry already covers (an operator's prefix, an earlier block) is left alone, in the same
//!   transaction as the check, so an automatic block never replaces an operator's entry.
//! - **The detector releases only what it added.** An `Unblock` removes the prefix only when
//!   its entry is `auto`; an operator's entry for the same prefix stays, in the store and in
//!   relayd.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(test)]
use relay::mgmt::Response;
use relay::mgmt::{self, Answer, Request};
use relay::stats::Snapshot;
use tokio::sync::{mpsc, watch};

use super::config::Config;
use super::push::Change;
use super::Server;
use crate::autoblock::{Decision, Offender};
use crate::cluster::ClusterError;
use crate::monitor::{self, LinkError, MonitorError, MonitorHandle, MonitorSettings, RelaydLink};
use crate::observe::ControlCounters;
use crate::state::{Mutation, Output};
use crate::store::{Actor, BlockEntry, BlockSource, StoreError};

/// The audit log's `who` for automatic blocks.
pub const AUTOBLOCK_ACTOR: &str = "autoblock";

/// relayd's management socket as the monitor polls it: one blocking [`mgmt::Client`], used
/// from tokio's blocking pool, reconnected after any failed or abandoned call.
#[derive(Default)]
pub struct MgmtLink {
    path: Option<PathBuf>,
    timeout: Duration,
    conn: Option<mgmt::Client>,
}

impl std::fmt::Debug for MgmtLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MgmtLink").field("path", &self.path).field("connected", &self.conn.is_some()).finish()
    }
}

impl MgmtLink {
    /// A link to relayd's socket at `path` (`None`: not configured, every poll fails);
    /// `timeout` bounds each read and write.
    pub fn new(path: Option<PathBuf>, timeout: Duration) -> Self {
        Self { path, timeout, conn: None }
    }

    /// One request. The connection is taken out for the call and put back only when the
    /// call completes cleanly, so a call whose future is dropped (the monitor's timeout)
    /// leaves no connection behind and the next call reconnects.
    async fn call(&mut self, req: Request) -> Result<Answer, LinkError> {
        let Some(path) = self.path.clone() else {
            return Err(LinkError::Unreachable("relayd_socket not configured".into()));
        };
        let (conn, timeout) = (self.conn.take(), self.timeout);
        let (conn, answer) = tokio::task::spawn_blocking(move || {
            let mut c = match conn {
                Some(c) => c,
                None => match mgmt::Client::connect(&path, timeout) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(LinkError::Unreachable(format!("{}: {e}", path.display())))),
                },
            };
            match c.request(&req) {
                Ok(r) => (Some(c), Ok(r)),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    (None, Err(LinkError::Timeout(timeout)))
                }
                Err(e) => (None, Err(LinkError::Unreachable(format!("{}: {e}", path.display())))),
            }
        })
        .await
        .map_err(|e| LinkError::Unreachable(format!("poll task failed: {e}")))?;
        self.conn = conn;
        answer?.into_result().map_err(|r| LinkError::Refused(r.message))
    }
}

impl RelaydLink for MgmtLink {
    async fn stats(&mut self) -> Result<Snapshot, LinkError> {
        match self.call(Request::Stats {}).await? {
            Answer::Stats(s) => Ok(*s),
            _ => Err(LinkError::Refused("stats answer without stats".into())),
        }
    }

    async fn offenders(&mut self, limit: u32) -> Result<Vec<Offender>, LinkError> {
        match self.call(Request::Offenders { limit: Some(limit) }).await? {
            Answer::Offenders(o) => Ok(o),
            _ => Err(LinkError::Refused("offenders answer without offenders".into())),
        }
    }
}

/// Starts the monitor for `cfg` on the current tokio runtime, polling relayd's
/// `relayd_socket` (or reporting it unreachable when there is none).
pub fn start(
    cfg: &Config,
    counters: Arc<ControlCounters>,
    cert_not_after: watch::Receiver<Option<u64>>,
    cluster: Option<Arc<crate::cluster::Health>>,
) -> Result<MonitorHandle, MonitorError> {
    let settings = MonitorSettings::default();
    let link = MgmtLink::new(cfg.relayd_socket.clone(), settings.poll_timeout);
    monitor::spawn(link, settings, cfg.alerts.clone(), cfg.autoblock.clone(), counters, cert_not_after, cluster)
}

/// What applying one decision did to the store, and what relayd must hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// An `auto` entry was stored: push it.
    Blocked(BlockEntry),
    /// A live entry already covers the source: nothing changed.
    Covered(BlockEntry),
    /// The `auto` entry was removed (or had already expired): push the unblock.
    Unblocked(IpAddr, u8),
    /// Another source's entry holds the prefix: it stays.
    Kept(BlockEntry),
}

/// Applies one autoblock decision to the store at `now` (Unix seconds).
/// `write` makes a change ([`Server::write`]).
pub fn apply_decision(
    write: impl Fn(&Mutation, &Actor<'_>) -> Result<Output, ClusterError>,
    decision: &Decision,
    now: u64,
) -> Result<Applied, ClusterError> {
    let actor = Actor { who: AUTOBLOCK_ACTOR, source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), now, via: "" };
    match decision {
        Decision::Block { cidr, ttl_secs, .. } => {
            let entry = BlockEntry {
                ip: cidr.addr(),
                prefix_len: cidr.len(),
                created_at: now,
                expires_at: Some(now.saturating_add(*ttl_secs)),
                reason: decision.reason().unwrap_or_default(),
                source: BlockSource::Auto,
            };
            Ok(match write(&Mutation::AddBlockUnlessCovered(entry.clone()), &actor)? {
                Output::Covered(Some(covering)) => Applied::Covered(covering),
                _ => Applied::Blocked(entry),
            })
        }
        Decision::Unblock { cidr } => {
            let (ip, len) = (cidr.addr(), cidr.len());
            match write(&Mutation::RemoveBlockFrom { ip, prefix_len: len, source: BlockSource::Auto }, &actor) {
                Ok(Output::RemovedFrom(held, false)) => Ok(Applied::Kept(held)),
                Ok(_) => Ok(Applied::Unblocked(ip, len)),
                Err(ClusterError::Store(StoreError::BlockNotFound)) => Ok(Applied::Unblocked(ip, len)),
                Err(e) => Err(e),
            }
        }
    }
}

/// Applies the monitor's decisions as they come, until the monitor stops. Dropping the
/// receiver (when this task ends) stops the monitor.
pub async fn apply_decisions(st: Arc<Server>, mut decisions: mpsc::Receiver<Decision>) {
    while let Some(d) = decisions.recv().await {
        let st2 = st.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let r = apply_decision(|m, a| st2.write(m, a), &d, super::unix_now());
            (d, r)
        })
        .await;
        match applied {
            Ok((_, Ok(Applied::Blocked(e)))) => {
                tracing::info!(cidr = %e.cidr(), reason = %e.reason, "autoblock: source blocklisted");
                st.link.changed(Change::Block(e));
            }
            Ok((_, Ok(Applied::Unblocked(ip, len)))) => {
                tracing::info!(cidr = %format!("{ip}/{len}"), "autoblock: block released");
                st.link.changed(Change::Unblock(ip, len));
            }
            Ok((d, Ok(Applied::Covered(c)))) => {
                tracing::info!(decision = ?d, covering = %c.cidr(), "autoblock: source already covered by a live entry");
            }
            Ok((_, Ok(Applied::Kept(e)))) => {
                tracing::info!(cidr = %e.cidr(), "autoblock: TTL over, but an operator's entry holds the prefix");
            }
            Ok((d, Err(e))) => tracing::error!(decision = ?d, error = %e, "autoblock: could not apply a decision"),
            Err(e) => tracing::error!(error = %e, "autoblock: decision task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use relay::tempdir::TempDir;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::store::Store;
    use relay::prefix::Prefix;

    fn block(ip: &str) -> Decision {
        let ip: IpAddr = ip.parse().expect("addr");
        Decision::Block { cidr: Prefix::host(ip), ttl_secs: 60, drops_per_sec: 9000, threshold: 500 }
    }

    fn unblock(ip: &str) -> Decision {
        Decision::Unblock { cidr: Prefix::host(ip.parse().expect("addr")) }
    }

    #[test]
    fn decisions_become_auto_entries_and_leave_operator_entries_alone() {
        let dir = TempDir::new("control-decisions").expect("temp dir");
        let store = Store::open(dir.join("control.redb")).expect("store");
        let Applied::Blocked(e) =
            apply_decision(|m, a| Ok(store.mutate(m, a)?), &block("198.18.7.7"), 1000).expect("apply")
        else {
            panic!("not blocked")
        };
        assert_eq!((e.cidr().as_str(), e.source, e.expires_at), ("198.18.7.7/32", BlockSource::Auto, Some(1060)));
        assert_eq!(e.reason, "autoblock: 9000 drops/s over 500/s");
        assert_eq!(store.list_blocks(1001).expect("list"), std::slice::from_ref(&e));
        let audit = store.audit_range(0, u64::MAX, 10).expect("audit");
        assert_eq!((audit[0].who.as_str(), audit[0].what.as_str()), (AUTOBLOCK_ACTOR, "block 198.18.7.7/32 ttl=60"));
        // Blocked again while live: covered by its own entry, nothing written.
        assert_eq!(
            apply_decision(|m, a| Ok(store.mutate(m, a)?), &block("198.18.7.7"), 1002).expect("apply"),
            Applied::Covered(e)
        );
        // Released at its TTL.
        let ip: IpAddr = "198.18.7.7".parse().expect("addr");
        assert_eq!(
            apply_decision(|m, a| Ok(store.mutate(m, a)?), &unblock("198.18.7.7"), 1059).expect("apply"),
            Applied::Unblocked(ip, 32)
        );
        assert!(store.list_blocks(1059).expect("list").is_empty());
        // Already gone (expired, or removed by an operator): relayd hears the unblock anyway.
        assert_eq!(
            apply_decision(|m, a| Ok(store.mutate(m, a)?), &unblock("198.18.7.7"), 1100).expect("apply"),
            Applied::Unblocked(ip, 32)
        );

        // An operator's /24 covers a flooder: no automatic entry.
        let op = BlockEntry {
            ip: "198.18.8.0".parse().expect("addr"),
            prefix_len: 24,
            created_at: 1000,
            expires_at: None,
            reason: "operator".into(),
            source: BlockSource::Api,
        };
        let actor = Actor { who: "AKIDx", source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), now: 1000, via: "" };
        store.add_block(&op, &actor).expect("add");
        assert_eq!(
            apply_decision(|m, a| Ok(store.mutate(m, a)?), &block("198.18.8.9"), 1000).expect("apply"),
            Applied::Covered(op.clone())
        );
        // An operator's /32 for the address the detector releases stays.
        let op32 = BlockEntry { ip: "198.18.9.9".parse().expect("addr"), prefix_len: 32, ..op.clone() };
        store.add_block(&op32, &actor).expect("add");
        assert_eq!(
            apply_decision(|m, a| Ok(store.mutate(m, a)?), &unblock("198.18.9.9"), 1200).expect("apply"),
            Applied::Kept(op32.clone())
        );
        assert_eq!(store.list_blocks(1200).expect("list"), [op, op32]);
    }

    /// A fake relayd whose first connection reads a request and never answers; later
    /// connections answer `stats` properly.
    fn silent_then_answering(path: PathBuf) -> std::thread::JoinHandle<usize> {
        let listener = UnixListener::bind(&path).expect("bind");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (i, conn) in listener.incoming().enumerate() {
                let conn = conn.expect("accept");
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                if i == 0 {
                    held.push(conn); // never answered
                    continue;
                }
                let mut w = conn;
                let snap = Snapshot { sessions: 7, ..Snapshot::default() };
                let resp = Response::Ok(Answer::Stats(Box::new(snap)));
                let mut text = serde_json::to_string(&resp).expect("json");
                text.push('\n');
                w.write_all(text.as_bytes()).expect("write");
                return i + 1;
            }
            0
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_poll_reconnects_and_the_next_one_answers() {
        let dir = TempDir::new("control-mgmtlink").expect("temp dir");
        let path = dir.join("relayd.sock");
        let server = silent_then_answering(path.clone());
        let mut link = MgmtLink::new(Some(path), Duration::from_millis(200));
        // The monitor abandons the first call at its own timeout.
        let first = tokio::time::timeout(Duration::from_millis(100), link.stats()).await;
        assert!(first.is_err(), "the silent relayd cannot have answered");
        assert!(link.conn.is_none(), "an abandoned call leaves no connection to reuse");
        let second = link.stats().await.expect("the second connection answers");
        assert_eq!(second.sessions, 7);
        assert!(link.conn.is_some(), "a clean call keeps its connection");
        assert_eq!(server.join().expect("server thread"), 2, "two connections were made");
        let mut none = MgmtLink::new(None, Duration::from_millis(100));
        assert!(matches!(none.offenders(4).await, Err(LinkError::Unreachable(m)) if m.contains("not configured")));
    }
}
