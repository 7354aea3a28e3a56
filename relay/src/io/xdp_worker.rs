//! The XDP backend's worker: one per RX queue, pinned, owning one [`XskPort`].
//!
//! Same contract as the socket worker (`super::socket`): media goes through the
//! worker's [`Engine`] replica, control datagrams to the control thread, replies and
//! updates come back on the worker's channel. The differences are the frames: the XDP
//! program has already dropped unknown sources and floods, so what arrives here is parsed
//! with [`wire::parse_udp`], decrypted in place in the UMEM frame, and re-encrypted into TX
//! frames whose Ethernet/IP/UDP headers [`XskTx`](super::afxdp::XskTx) writes in front.
//!
//! Next-hop MACs come from the kernel's neighbour and route tables, which the control thread
//! dumps once a second and sends here (so a worker never waits on netlink), plus what the worker learns from the source MAC of control
//! frames (a client's first frame is its join, so its reply never waits for ARP).
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Token};

use super::afxdp::{XskDest, XskPort};
use super::seccomp::install_worker_filter;
use super::worker::{enqueue_control, mono_ms, WorkerCore, WorkerMsg};
use crate::config::Backend;
use crate::engine::Engine;
use crate::proto::{self, Demux};
use crate::stats::DropReason;
use crate::wire::{self, EthernetAddress};

const PORT: Token = Token(0);
/// How often the worker copies its socket's kernel statistics into its counters.
const XSK_SAMPLE: Duration = Duration::from_millis(100);
/// Source MACs learned per batch at most (from control frames only).
const LEARN_MAX: usize = 16;

pub(super) struct XdpWorker {
    pub core: WorkerCore,
    pub port: XskPort,
    /// The worker's replica, whose destinations carry their resolved next-hop MAC.
    pub engine: Engine<XskDest>,
    /// MACs learned from control frames, with when. They only fill gaps in the kernel's
    /// table (the kernel wins), are re-applied after each refresh (which replaces the
    /// cache) and are forgotten after [`LEARNED_TTL`]. Bounded by [`LEARNED_MAX`].
    pub learned: std::collections::HashMap<IpAddr, (EthernetAddress, Instant)>,
}

/// How long a learned MAC is used without being seen again.
const LEARNED_TTL: Duration = Duration::from_secs(60);

/// Learned MACs kept at most; beyond it the table starts over (the kernel's table and
/// new control frames refill it).
const LEARNED_MAX: usize = 65_536;

impl XdpWorker {
    pub fn run(mut self) {
        self.core.pin();
        let fd = self.port.fd();
        if let Err(e) = self.core.poll.registry().register(&mut mio::unix::SourceFd(&fd), PORT, Interest::READABLE) {
            tracing::error!(worker = self.core.index, error = %e, "cannot register the AF_XDP socket");
            return;
        }
        let mut last_warn: Option<Instant> = None;
        let mut last_sample: Option<Instant> = None;
        let mut events = Events::with_capacity(8);
        // Last, once everything is open and allocated: from here on, only the loop's syscalls.
        install_worker_filter(self.core.index, Backend::Xdp, self.core.seccomp, &self.core.counters);
        while self.core.running() {
            if let Err(e) = self.core.poll.poll(&mut events, Some(Duration::from_millis(10))) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.core.index, error = %e, "poll failed");
                    return;
                }
            }
            self.drain_messages();
            loop {
                let n = self.batch();
                if let Err(e) = self.port.kick() {
                    // At most one warning a second: a vanished interface fails every kick.
                    if last_warn.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(worker = self.core.index, error = %e, "AF_XDP kick failed");
                        last_warn = Some(Instant::now());
                    }
                }
                if n == 0 {
                    break;
                }
                self.drain_messages();
            }
            self.core.counters.mark_loop(mono_ms(self.core.epoch));
            if last_sample.is_none_or(|t| t.elapsed() >= XSK_SAMPLE) {
                last_sample = Some(Instant::now());
                self.sample_kernel_stats();
            }
        }
    }

    /// Copies the socket's `XDP_STATISTICS` into the worker's counters (one syscall).
    fn sample_kernel_stats(&self) {
        let Ok(k) = self.port.kernel_stats() else { return };
        let x = &self.core.counters.xsk;
        x.rx_dropped.store(k.rx_dropped, Relaxed);
        x.rx_ring_full.store(k.rx_ring_full, Relaxed);
        x.rx_fill_ring_empty_descs.store(k.rx_fill_ring_empty_descs, Relaxed);
        x.tx_ring_empty_descs.store(k.tx_ring_empty_descs, Relaxed);
        x.invalid_descs.store(k.rx_invalid_descs + k.tx_invalid_descs, Relaxed);
        x.samples.fetch_add(1, Relaxed);
    }

    fn drain_messages(&mut self) {
        let mut sent = false;
        while let Ok(m) = self.core.msgs.try_recv() {
            match m {
                WorkerMsg::Update(u) => self.engine.apply(&u),
                WorkerMsg::Neighbors(tables) => {
                    let (neighbors, routes) = &*tables;
                    self.port.neighbors_mut().apply(neighbors, routes);
                    let now = Instant::now();
                    self.learned.retain(|_, (_, at)| now.duration_since(*at) < LEARNED_TTL);
                    for (ip, (mac, _)) in &self.learned {
                        if self.port.neighbors().lookup(*ip).is_none() {
                            self.port.neighbors_mut().insert(*ip, *mac);
                        }
                    }
                }
                WorkerMsg::Reply { dst, len, data } => {
                    self.port.send_to(dst, &data[..len]);
                    sent = true;
                }
                WorkerMsg::Datagram { dst, data } => {
                    self.port.send_to(dst, &data);
                    sent = true;
                }
            }
        }
        if sent {
            let _ = self.port.kick();
        }
    }

    /// One RX batch. Returns the number of frames.
    fn batch(&mut self) -> usize {
        let now_ms = mono_ms(self.core.epoch);
        let Self { core, port, engine, learned: known } = self;
        let counters = core.counters.clone();
        let WorkerCore { index, to_control, control_waker, .. } = core;
        let mut wake = false;
        let mut learned: [Option<(IpAddr, EthernetAddress)>; LEARN_MAX] = [None; LEARN_MAX];
        let mut n_learned = 0;
        let n = port.rx_batch(|frame, tx| {
            let Ok(meta) = wire::parse_udp(frame) else {
                counters.count_drop(DropReason::Malformed);
                return;
            };
            let Some(payload) = frame.get_mut(meta.payload.clone()) else {
                counters.count_drop(DropReason::Malformed);
                return;
            };
            counters.rx(payload.len());
            match proto::demux(payload) {
                Demux::Media => {
                    engine.handle(now_ms, meta.src, payload, tx);
                }
                Demux::Control => {
                    let q = to_control.for_source(engine.has_session_at(meta.src));
                    if enqueue_control(q, *index, meta.src, payload, &counters) {
                        wake = true;
                        if n_learned < LEARN_MAX {
                            learned[n_learned] = Some((meta.src.ip(), meta.src_mac));
                            n_learned += 1;
                        }
                    }
                }
                Demux::Other => counters.count_drop(DropReason::NotRelayed),
            }
        });
        if n_learned > 0 {
            let now = Instant::now();
            for (ip, mac) in learned.iter().flatten() {
                if known.len() >= LEARNED_MAX {
                    known.clear();
                }
                known.insert(*ip, (*mac, now));
                if port.neighbors().lookup(*ip).is_none() {
                    port.neighbors_mut().insert(*ip, *mac);
                }
            }
        }
        if wake {
            let _ = control_waker.wake();
        }
        counters.mark_loop(now_ms);
        n
    }
}
