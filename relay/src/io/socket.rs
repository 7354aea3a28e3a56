//! The socket backend's worker: one per `SO_REUSEPORT` UDP socket, pinned to a core.
//!
//! It receives batches with `recvmmsg`, runs media (first byte 128–191) through its
//! [`Engine`](crate::engine::Engine) replica and sends the output with `sendmmsg`. Control
//! datagrams (first byte 0–3) are copied into the bounded, preallocated queue to the
//! control thread ([`enqueue_control`]); when it is full they are dropped and counted,
//! never queued without bound. Replies and session updates come back on the worker's
//! channel ([`WorkerMsg`]).
//!
//! Liveness: the worker wakes at least every [`POLL_TIMEOUT`] and stores a heartbeat
//! ([`WorkerCounters::mark_loop`]) after each loop iteration and each RX batch; the control
//! thread reports the age of each as `worker_lag_ms`.
#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use mio::{Events, Interest, Token};

use super::seccomp::install_worker_filter;
use super::sys::{Received, RecvBatch, SendBatch, SockAddr};
use super::worker::{enqueue_control, mono_ms, WorkerCore, WorkerMsg};
use crate::config::Backend;
use crate::engine::{Engine, TxSink};
use crate::proto::{self, Demux};
use crate::stats::{DropReason, WorkerCounters};

const SOCK: Token = Token(0);
/// Datagrams per `recvmmsg`.
pub const RX_BATCH: usize = 32;
/// Outgoing datagrams buffered per `sendmmsg`; flushed after every RX batch (or when full).
pub const TX_BATCH: usize = 128;
/// Workers wait at most this long for traffic, so their heartbeat stays fresh.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// A socket worker: its core and its socket.
pub struct Worker {
    /// What every worker has.
    pub core: WorkerCore,
    /// Its `SO_REUSEPORT` socket.
    pub sock: UdpSocket,
    /// Its replica, whose destinations are prepared `sockaddr`s.
    pub engine: Engine<SockAddr>,
}

/// The engine's [`TxSink`] over a `sendmmsg` batch: when the batch fills, it is flushed.
struct SocketSink<'a> {
    batch: &'a mut SendBatch,
    sock: &'a UdpSocket,
    counters: &'a WorkerCounters,
}

impl SocketSink<'_> {
    fn flush(&mut self) {
        let f = self.batch.flush(self.sock);
        self.counters.tx_packets.fetch_add(f.sent as u64, Relaxed);
        self.counters.tx_bytes.fetch_add(f.bytes as u64, Relaxed);
        self.counters.drops[DropReason::TxFull as usize].fetch_add(f.dropped as u64, Relaxed);
    }
}

impl TxSink for SocketSink<'_> {
    type Dest = SockAddr;
    fn buffer(&mut self) -> Option<&mut [u8]> {
        if self.batch.is_full() {
            self.flush();
        }
        self.batch.next_buffer()
    }
    fn commit(&mut self, dst: &mut SockAddr, len: usize) -> bool {
        self.batch.push_to(dst, len);
        true
    }
}

impl Worker {
    /// The worker's loop, until stop or a shutdown signal.
    pub fn run(mut self) {
        self.core.pin();
        let fd = {
            use std::os::fd::AsRawFd;
            self.sock.as_raw_fd()
        };
        if let Err(e) = self.core.poll.registry().register(&mut mio::unix::SourceFd(&fd), SOCK, Interest::READABLE) {
            tracing::error!(worker = self.core.index, error = %e, "cannot register socket");
            return;
        }
        let mut events = Events::with_capacity(8);
        let mut rx = RecvBatch::new(RX_BATCH);
        let mut tx = SendBatch::new(TX_BATCH);
        // Last, once everything is open and allocated: from here on, only the loop's syscalls.
        install_worker_filter(self.core.index, Backend::Socket, self.core.seccomp, &self.core.counters);
        while self.core.running() {
            if let Err(e) = self.core.poll.poll(&mut events, Some(POLL_TIMEOUT)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.core.index, error = %e, "poll failed");
                    return;
                }
            }
            self.drain_messages(&mut tx);
            let counters = self.core.counters.clone();
            // Edge-triggered: read until the socket would block.
            loop {
                match rx.recv(&self.sock) {
                    Ok(n) => {
                        self.process(&mut rx, n, &mut tx);
                        // Send what this batch produced before reading the next one: under a
                        // sustained backlog the socket never runs dry, and holding output
                        // until the TX batch fills would delay it by up to TX_BATCH packets'
                        // worth of work (and, at a slow rate, indefinitely).
                        SocketSink { batch: &mut tx, sock: &self.sock, counters: &counters }.flush();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(worker = self.core.index, error = %e, "recvmmsg failed");
                        break;
                    }
                }
                // Apply control updates between batches so joins take effect promptly.
                self.drain_messages(&mut tx);
            }
            SocketSink { batch: &mut tx, sock: &self.sock, counters: &counters }.flush();
            counters.mark_loop(mono_ms(self.core.epoch));
        }
    }

    fn drain_messages(&mut self, tx: &mut SendBatch) {
        while let Ok(m) = self.core.msgs.try_recv() {
            match m {
                WorkerMsg::Neighbors(_) => {}
                WorkerMsg::Update(u) => self.engine.apply(&u),
                WorkerMsg::Reply { dst, len, data } => self.send_control(tx, dst, &data[..len]),
                WorkerMsg::Datagram { dst, data } => self.send_control(tx, dst, &data),
            }
        }
    }

    fn send_control(&self, tx: &mut SendBatch, dst: SocketAddr, bytes: &[u8]) {
        let counters = self.core.counters.clone();
        let mut sink = SocketSink { batch: tx, sock: &self.sock, counters: &counters };
        match sink.buffer() {
            Some(b) if b.len() >= bytes.len() => {
                b[..bytes.len()].copy_from_slice(bytes);
                sink.commit(&mut SockAddr::from(dst), bytes.len());
            }
            _ => counters.count_drop(DropReason::TxFull),
        }
    }

    fn process(&mut self, rx: &mut RecvBatch, n: usize, tx: &mut SendBatch) {
        let now_ms = mono_ms(self.core.epoch);
        let counters = self.core.counters.clone();
        let mut wake_control = false;
        for i in 0..n {
            let (src, data) = match rx.get(i) {
                Some(Received::Datagram(src, data)) => (src, data),
                // Received, so counted as received (at its real length), then dropped.
                Some(Received::Oversized { len }) => {
                    counters.rx(len);
                    counters.count_drop(DropReason::Oversized);
                    continue;
                }
                Some(Received::UnknownFamily { len }) => {
                    counters.rx(len);
                    counters.count_drop(DropReason::Malformed);
                    continue;
                }
                None => continue,
            };
            counters.rx(data.len());
            match proto::demux(data) {
                Demux::Media => {
                    let mut sink = SocketSink { batch: tx, sock: &self.sock, counters: &counters };
                    self.engine.handle(now_ms, src, data, &mut sink);
                }
                Demux::Control => {
                    let q = self.core.to_control.for_source(self.engine.has_session_at(src));
                    wake_control |= enqueue_control(q, self.core.index, src, data, &counters)
                }
                Demux::Other => counters.count_drop(DropReason::NotRelayed),
            }
        }
        if wake_control {
            let _ = self.core.control_waker.wake();
        }
        counters.mark_loop(now_ms);
    }
}
