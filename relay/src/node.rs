//! A whole relay in one thread: the registry plus one engine, with no I/O.
//!
//! `relayd` splits these across threads (control thread and workers); a `Node` wires them
//! together directly so that deterministic simulations (virtual clock, fake clients) and
//! microbenchmarks exercise exactly the code `relayd` runs.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Validated;
use crate::engine::{Engine, TxSink, Verdict};
use crate::messages::Outbox;
use crate::proto::{self, Demux};
use crate::registry::{Now, Outcome, Registry, Update};
use crate::stats::{DropReason, WorkerCounters};

/// What one datagram did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeResult {
    /// A control message and its outcome.
    Control(Outcome),
    /// A media packet and its verdict.
    Media(Verdict),
    /// Neither: not relayed.
    Dropped(DropReason),
}

/// Registry + engine.
pub struct Node {
    /// The registry.
    pub registry: Registry,
    /// The engine.
    pub engine: Engine,
    updates: Vec<Update>,
    outbox: Outbox,
}

impl Node {
    /// A node for a validated config.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            engine: Engine::new(Arc::new(WorkerCounters::default())),
            updates: Vec::new(),
            outbox: Outbox::new(),
        }
    }

    /// Convenience: a node with the OS RNG.
    pub fn from_config(cfg: &Validated) -> Self {
        Self::new(Registry::new(cfg))
    }

    /// Handles one datagram; replies and forwarded media go to `tx`.
    pub fn handle(
        &mut self,
        now: Now,
        src: SocketAddr,
        buf: &mut [u8],
        tx: &mut impl TxSink<Dest = SocketAddr>,
    ) -> NodeResult {
        self.engine.counters().rx(buf.len());
        match proto::demux(buf) {
            Demux::Media => NodeResult::Media(self.engine.handle(now.mono_ms, src, buf, tx)),
            Demux::Control => {
                let Some(out) = tx.buffer() else {
                    self.engine.counters().count_drop(DropReason::TxFull);
                    return NodeResult::Dropped(DropReason::TxFull);
                };
                let (outcome, reply) = self.registry.handle(now, src, buf, out, &mut self.updates, &mut self.outbox);
                if outcome == Outcome::Ignored {
                    self.engine.counters().count_drop(DropReason::ControlRejected);
                }
                if let Some(n) = reply {
                    tx.commit(&mut { src }, n);
                }
                self.flush();
                self.send_outbox(tx);
                self.send_leg_datagrams(tx);
                NodeResult::Control(outcome)
            }
            Demux::Other => {
                self.engine.counters().count_drop(DropReason::NotRelayed);
                NodeResult::Dropped(DropReason::NotRelayed)
            }
        }
    }

    /// Runs session expiry.
    pub fn expire(&mut self, now: Now) -> usize {
        let n = self.registry.expire(now, &mut self.updates);
        self.flush();
        n
    }

    /// Runs message retransmissions and gap expiry ([`Registry::tick`]); datagrams go to `tx`.
    pub fn tick(&mut self, now: Now, tx: &mut impl TxSink<Dest = SocketAddr>) {
        self.registry.tick(now, &mut self.outbox);
        self.send_outbox(tx);
    }

    /// Runs the cascade legs' timers ([`Registry::leg_tick`]); their datagrams go to `tx`.
    pub fn leg_tick(&mut self, now: Now, tx: &mut impl TxSink<Dest = SocketAddr>) {
        self.registry.leg_tick(now, &mut self.updates);
        self.flush();
        self.send_leg_datagrams(tx);
    }

    /// Applies a management-style change made on [`Node::registry`] directly (its updates),
    /// and sends what the legs queued (an opened leg's join, a closing).
    pub fn after_change(&mut self, updates: Vec<Update>, tx: &mut impl TxSink<Dest = SocketAddr>) {
        self.updates.extend(updates);
        self.flush();
        self.send_leg_datagrams(tx);
    }

    fn send_leg_datagrams(&mut self, tx: &mut impl TxSink<Dest = SocketAddr>) {
        std::mem::swap(&mut self.outbox, self.registry.leg_datagrams());
        self.send_outbox(tx);
        std::mem::swap(&mut self.outbox, self.registry.leg_datagrams());
    }

    fn send_outbox(&mut self, tx: &mut impl TxSink<Dest = SocketAddr>) {
        for (dst, bytes) in self.outbox.iter() {
            match tx.buffer() {
                Some(b) if b.len() >= bytes.len() => {
                    b[..bytes.len()].copy_from_slice(bytes);
                    tx.commit(&mut { dst }, bytes.len());
                }
                _ => self.engine.counters().count_drop(DropReason::TxFull),
            }
        }
        self.outbox.clear();
    }

    fn flush(&mut self) {
        for u in self.updates.drain(..) {
            self.engine.apply(&u);
        }
    }
}
