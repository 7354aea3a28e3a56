//! What every worker has, whatever its backend, and what workers and the control thread
//! exchange: [`WorkerCore`] (poll, channels, engine replica, stop flags), [`WorkerMsg`]
//! (control thread → worker), [`ControlIn`] (worker → control thread), the shared
//! monotonic clock, core pinning, and the bounded hand-off of control datagrams.
//!
//! Below the backends ([`super::socket`], [`super::xdp_worker`]) and the control thread
//! ([`super::control`]) in the module order; it imports none of them.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Poll, Token, Waker};

use super::netlink::{Neighbor, Route};
use super::sys;
use crate::config::WorkerSeccomp;
use crate::proto;
use crate::registry::{Now, Update};
use crate::stats::{DropReason, Snapshot, WorkerCounters};

/// The token of every worker's (and the control thread's) waker.
pub const WAKE: Token = Token(1);
/// Capacity of the worker → control queue.
pub const CONTROL_QUEUE: usize = 1024;
/// Largest control reply (join-ok, join-error, keepalive-ack) a worker sends for the
/// control thread.
pub const REPLY_MAX: usize = 96;

/// A control datagram, copied off a worker's socket or ring for the control thread.
pub struct ControlIn {
    /// The worker that received it (its reply goes back through the same one).
    pub worker: usize,
    /// Its source.
    pub src: SocketAddr,
    /// Bytes used in `data`.
    pub len: usize,
    /// The datagram.
    pub data: [u8; proto::MAX_LEN],
}

/// What the control thread sends a worker.
pub enum WorkerMsg {
    /// A session came or went: apply it to the engine replica.
    Update(Update),
    /// A control reply to send to `dst`.
    Reply {
        /// Where.
        dst: SocketAddr,
        /// Bytes used in `data`.
        len: usize,
        /// The reply.
        data: [u8; REPLY_MAX],
    },
    /// The kernel's neighbour and route tables, dumped by the control thread (XDP backend),
    /// so workers never block on netlink.
    Neighbors(Arc<(Vec<Neighbor>, Vec<Route>)>),
    /// A datagram of any control size for `dst`: an in-room message's copy, ack or
    /// retransmission (one incoming message can make many; see
    /// [`crate::messages::Outbox`]).
    Datagram {
        /// Where.
        dst: SocketAddr,
        /// The bytes.
        data: Box<[u8]>,
    },
}

/// Monotonic milliseconds since `epoch`, the clock every thread shares.
pub fn mono_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// The registry's clock: monotonic milliseconds since `epoch` and the Unix time.
pub fn now(epoch: Instant) -> Now {
    Now { mono_ms: mono_ms(epoch), unix_secs: crate::time::unix_now() }
}

/// Sums `counters` (the first `workers` are the workers') and reads each worker's lag.
pub fn sum_counters(counters: &[Arc<WorkerCounters>], workers: usize, now_ms: u64) -> Snapshot {
    let mut s = Snapshot::default();
    for c in counters {
        s.add_worker(c);
    }
    s.worker_lag_ms = counters[..workers].iter().map(|c| c.lag_ms(now_ms)).collect();
    s
}

/// What every worker has, whatever its backend.
pub struct WorkerCore {
    /// The worker's index (its queue on the XDP backend).
    pub index: usize,
    /// Pin the thread to a core.
    pub pin: bool,
    /// The seccomp filter it installs before its loop.
    pub seccomp: WorkerSeccomp,
    /// The worker's poll (its socket or ring, and the waker).
    pub poll: Poll,
    /// Messages from the control thread.
    pub msgs: Receiver<WorkerMsg>,
    /// The bounded queues to the control thread.
    pub to_control: ControlQueues,
    /// Wakes the control thread.
    pub control_waker: Arc<Waker>,
    /// The worker's counters (its engine counts into the same ones).
    pub counters: Arc<WorkerCounters>,
    /// The clock's origin, shared by every thread.
    pub epoch: Instant,
    /// Set by [`super::runtime::Relay::stop`].
    pub stop: Arc<AtomicBool>,
    /// Set by a signal.
    pub shutdown: &'static AtomicBool,
}

impl WorkerCore {
    /// Pins the thread if configured (call first thing on the worker's thread).
    pub fn pin(&self) {
        if self.pin {
            pin_worker(self.index);
        }
    }

    /// Until stop or a shutdown signal.
    pub fn running(&self) -> bool {
        !self.stop.load(Relaxed) && !self.shutdown.load(Relaxed)
    }
}

/// Pins worker `index` to core `index mod cores`, warning if the kernel refuses.
pub fn pin_worker(index: usize) {
    // The i-th CPU of the allowed set, not core i: under `taskset -c 1` worker 0 must stay on
    // CPU 1 instead of moving to core 0.
    let allowed = sys::allowed_cpus().unwrap_or_else(|e| {
        tracing::warn!(worker = index, error = %e, "cannot read the CPU affinity mask");
        Vec::new()
    });
    let core = worker_core(index, &allowed);
    if let Err(e) = sys::pin_to_core(core) {
        tracing::warn!(worker = index, core, error = %e, "cannot pin worker to a core");
    }
}

/// The core for worker `index`: the `index`-th of the `allowed` CPUs, round robin (`index`
/// itself when the mask is unknown).
fn worker_core(index: usize, allowed: &[usize]) -> usize {
    if allowed.is_empty() {
        index
    } else {
        allowed[index % allowed.len()]
    }
}

/// Copies a control datagram into the bounded queue to the control thread. Returns whether
/// it was queued (the caller then wakes the control thread once per batch); oversize
/// datagrams and a full queue are counted drops.
/// The two queues from a worker to the control thread. Control from a source that holds a
/// session (keepalives, leaves, messages) has a queue of its own, which the control thread
/// drains first, so a join flood filling the other one cannot starve live sessions.
#[derive(Clone)]
pub struct ControlQueues {
    /// Joins and anything else from sources without a session.
    pub joins: Sender<ControlIn>,
    /// Control from the address of a known session.
    pub sessions: Sender<ControlIn>,
}

impl ControlQueues {
    /// The queue for a datagram from a source that does (`known`) or does not hold a
    /// session in the worker's replica.
    pub fn for_source(&self, known: bool) -> &Sender<ControlIn> {
        if known {
            &self.sessions
        } else {
            &self.joins
        }
    }
}

/// Capacity of the queue for known sessions' control.
pub const SESSION_CONTROL_QUEUE: usize = 256;

/// Queues a control datagram for the control thread; false (counted) when it is full.
pub fn enqueue_control(
    to_control: &Sender<ControlIn>,
    worker: usize,
    src: SocketAddr,
    data: &[u8],
    counters: &WorkerCounters,
) -> bool {
    if data.len() > proto::MAX_LEN {
        counters.count_drop(DropReason::Malformed);
        return false;
    }
    let mut m = ControlIn { worker, src, len: data.len(), data: [0; proto::MAX_LEN] };
    m.data[..data.len()].copy_from_slice(data);
    match to_control.try_send(m) {
        Ok(()) => {
            counters.control_in.fetch_add(1, Relaxed);
            true
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            counters.count_drop(DropReason::ControlQueueFull);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_core;

    #[test]
    fn workers_take_the_allowed_cpus_in_turn() {
        // Under `taskset -c 1`: the only worker stays on CPU 1.
        assert_eq!(worker_core(0, &[1]), 1);
        assert_eq!(worker_core(1, &[1]), 1);
        assert_eq!(worker_core(3, &[2, 5]), 5);
        assert_eq!(worker_core(2, &[2, 5]), 2);
        assert_eq!(worker_core(4, &[]), 4);
    }
}
