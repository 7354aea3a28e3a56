//! Saving the pushed config ([`crate::pushed`]) off the control thread.
//!
//! A relay-control full sync is one request per blocklist entry, each answered before the
//! next is sent; an fsync per request on the control thread would stall joins for as long.
//! So the control thread hands the encoded config to one writer thread ([`Saver::save`],
//! which never waits on the disk) and the writer writes the newest one it holds: saves
//! that come faster than the disk are coalesced, and the file is always some complete
//! config the control thread produced, the last one once the writer catches up.
//!
//! Shutdown: [`Saver::finish`] (after the control thread stopped) writes what is pending
//! and ends the thread, so a SIGTERM loses nothing. A SIGKILL loses at most the saves the
//! writer had not finished; relay-control's full sync on reconnect restores them.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::pushed;

/// The saved push's counters, as `stats` reports them under `state`.
#[derive(Debug, Default)]
pub struct StateCounters {
    /// Saved configs restored at start-up (0 or 1).
    pub loaded: AtomicU64,
    /// Saved configs that could not be read or parsed at start-up (0 or 1): relayd then
    /// started from its TOML file alone.
    pub load_failed: AtomicU64,
    /// Saved requests relayd refused when restoring them (a saved app its validation now
    /// refuses, limits for another backend or port).
    pub restore_refused: AtomicU64,
    /// Files written.
    pub saved: AtomicU64,
    /// Writes that failed (the previous file stays).
    pub save_failed: AtomicU64,
}

impl StateCounters {
    /// The counters by name.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("loaded", self.loaded.load(Relaxed)),
            ("load_failed", self.load_failed.load(Relaxed)),
            ("restore_refused", self.restore_refused.load(Relaxed)),
            ("saved", self.saved.load(Relaxed)),
            ("save_failed", self.save_failed.load(Relaxed)),
        ]
    }
}

#[derive(Default)]
struct Slot {
    /// The newest encoded config not written yet.
    pending: Option<Vec<u8>>,
    /// Set by [`Saver::finish`]: write what is pending, then end.
    finish: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
}

/// The handle the control thread saves through.
pub struct Saver {
    shared: Arc<Shared>,
}

/// The writer thread, joined by [`Saver::finish`].
pub struct Writer {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

impl Saver {
    /// Starts the writer thread for `path`.
    pub fn spawn(path: PathBuf, counters: Arc<StateCounters>) -> std::io::Result<(Self, Writer)> {
        let shared = Arc::new(Shared { slot: Mutex::new(Slot::default()), wake: Condvar::new() });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("relay-state".into()).spawn(move || run(&s, &path, &counters))?;
        Ok((Self { shared: shared.clone() }, Writer { shared, thread }))
    }

    /// Queues `bytes` to replace the file; a save still pending is superseded.
    pub fn save(&self, bytes: Vec<u8>) {
        self.shared.slot.lock().unwrap_or_else(|p| p.into_inner()).pending = Some(bytes);
        self.shared.wake.notify_one();
    }
}

impl Writer {
    /// Writes what is pending and ends the writer.
    pub fn finish(self) {
        self.shared.slot.lock().unwrap_or_else(|p| p.into_inner()).finish = true;
        self.shared.wake.notify_one();
        let _ = self.thread.join();
    }
}

fn run(shared: &Shared, path: &std::path::Path, counters: &StateCounters) {
    loop {
        let (bytes, finish) = {
            let mut slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
            while slot.pending.is_none() && !slot.finish {
                slot = shared.wake.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
            (slot.pending.take(), slot.finish)
        };
        if let Some(b) = bytes {
            match pushed::write_atomic(path, &b) {
                Ok(()) => {
                    counters.saved.fetch_add(1, Relaxed);
                    tracing::debug!(path = %path.display(), bytes = b.len(), "saved the pushed config");
                }
                Err(e) => {
                    counters.save_failed.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, "cannot save the pushed config; the previous file stays");
                }
            }
        }
        if finish && shared.slot.lock().unwrap_or_else(|p| p.into_inner()).pending.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_save_is_on_disk_once_finished() {
        let dir = crate::tempdir::TempDir::new("persist").unwrap();
        let path = dir.join("pushed.json");
        let counters = Arc::new(StateCounters::default());
        let (saver, writer) = Saver::spawn(path.clone(), counters.clone()).unwrap();
        for i in 0..100 {
            saver.save(format!("{i}\n").into_bytes());
        }
        writer.finish();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "99\n");
        let saved = counters.saved.load(Relaxed);
        assert!((1..=100).contains(&saved), "{saved} writes");
        assert_eq!(counters.save_failed.load(Relaxed), 0);
    }

    #[test]
    fn a_failed_write_is_counted() {
        let dir = crate::tempdir::TempDir::new("persist").unwrap();
        // The "directory" is a file: nothing can be written under it.
        std::fs::write(dir.join("f"), b"").unwrap();
        let counters = Arc::new(StateCounters::default());
        let (saver, writer) = Saver::spawn(dir.join("f/pushed.json"), counters.clone()).unwrap();
        saver.save(b"{}".to_vec());
        writer.finish();
        assert_eq!(counters.save_failed.load(Relaxed), 1);
        assert_eq!(counters.saved.load(Relaxed), 0);
    }
}
