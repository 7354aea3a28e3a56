//! The AF_XDP layer: one UMEM and one `AF_XDP` socket per NIC queue, over the pure-Rust
//! `xdp` crate.
//!
//! An [`XskPort`] owns the UMEM (`frames` chunks of `frame_size` bytes), the socket and its
//! four rings. The XDP program redirects the relay's traffic of queue q into the socket
//! bound to q (`xsks[rx_queue_index]`); the worker that owns the port then:
//!
//! 1. [`XskPort::rx_batch`]: takes up to [`RX_BATCH`] frames off the RX ring and hands each
//!    whole Ethernet frame, mutable in place, to a callback together with an [`XskTx`]
//!    (the engine's [`TxSink`]); then returns the RX frames to the free pool and tops the
//!    fill ring up to its size, so the kernel never runs out of fill descriptors while
//!    frames are free.
//! 2. [`XskPort::kick`]: submits staged TX descriptors, wakes the kernel with `sendto`
//!    (copy mode transmits only inside that call, at most a kernel budget per call;
//!    `EAGAIN`/`EBUSY`/`ENOBUFS` are back-pressure, not errors), and reaps the completion
//!    ring into the free pool.
//!
//! **Frame accounting.** Every frame is in exactly one place: the free pool (the crate's
//! preallocated free list), given to the kernel for receive (`in_fill`: fill ring, kernel,
//! or RX ring not yet read), held by userspace during a batch (`in_rx`), staged for
//! transmit (`in_tx`), or submitted for transmit and not yet reaped (`in_completion`).
//! [`XskPort::accounting`] reports these; their sum is always `total`, and at quiescence
//! (after a final [`kick`](XskPort::kick) once the kernel has completed) `in_rx`, `in_tx`
//! and `in_completion` are 0.
//!
//! **TX frame layout.** A TX chunk starts with the kernel's 256-byte `XDP_PACKET_HEADROOM`
//! (the crate reserves it in every chunk), then [`HEADROOM`] bytes for headers, then the
//! UDP payload the engine writes. `commit` writes Ethernet/IP/UDP right in front of the
//! payload and points the descriptor at the Ethernet header: no copy.
//!
//! The per-packet path ([`rx_batch`](XskPort::rx_batch)'s loop, [`XskTx`]) allocates
//! nothing, takes no lock and logs nothing; drops are counted.
//!
//! `unsafe` here is the `xdp` crate's contract: a `Packet` is a raw view into the UMEM, and
//! must not outlive it. Every `Packet` this module creates is returned to the UMEM, the
//! rings or the kernel before the port (which owns the UMEM) is dropped, and the UMEM is
//! the port's last field, so it is unmapped after the socket and rings.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use xdp::slab::{Slab, StackSlab};
use xdp::socket::{XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{CompletionRing, FillRing, Packet, RingConfigBuilder, RxRing, TxRing, Umem, WakableFillRing, WakableTxRing};

use super::netlink::NeighborCache;
use crate::engine::TxSink;
use crate::stats::{DropReason, WorkerCounters};
use crate::wire::{self, EthernetAddress};

/// Bytes reserved in front of every TX payload: Ethernet (14) + one 802.1Q tag (4) + IPv6
/// (40) + UDP (8) = 66, rounded up to 128 so the payload starts cache-line aligned.
pub const HEADROOM: usize = 128;
/// Frames taken off the RX ring per [`XskPort::rx_batch`].
pub const RX_BATCH: usize = 64;
/// TX descriptors staged in userspace before they are submitted to the TX ring.
pub const TX_BATCH: usize = 64;
/// What the crate reserves at the start of every chunk (`XDP_PACKET_HEADROOM`).
const KERNEL_HEADROOM: usize = 256;

/// How the socket binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XskMode {
    /// Zero-copy if the driver supports it, else copy.
    #[default]
    Auto,
    /// Copy mode (`XDP_COPY`): works on every driver, including veth.
    Copy,
    /// Zero-copy (`XDP_ZEROCOPY`): fails if the driver cannot.
    ZeroCopy,
}

/// Sizes and mode of one [`XskPort`]. Ring sizes must be powers of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// UMEM chunk size: 2048 or 4096.
    pub frame_size: u32,
    /// UMEM chunks. Must exceed `fill_size` so transmit always has frames.
    pub frames: u32,
    /// RX ring entries.
    pub rx_size: u32,
    /// TX ring entries.
    pub tx_size: u32,
    /// Fill ring entries; the port keeps this many frames given to the kernel for receive.
    /// Make it larger than `rx_size` (the default is twice): then a full RX ring, not an
    /// empty fill ring, is what stops the kernel when the worker falls behind, and
    /// `rx_fill_ring_empty_descs` stays 0.
    pub fill_size: u32,
    /// Completion ring entries.
    pub completion_size: u32,
    /// Bind mode.
    pub mode: XskMode,
    /// Bind with `XDP_USE_NEED_WAKEUP`.
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            frame_size: 2048,
            frames: 4096,
            rx_size: 1024,
            tx_size: 1024,
            fill_size: 2048,
            completion_size: 2048,
            mode: XskMode::Auto,
            need_wakeup: true,
        }
    }
}

impl XskConfig {
    fn validate(&self) -> io::Result<FrameSize> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("XskConfig: {what}"));
        let fs = match self.frame_size {
            2048 => FrameSize::TwoK,
            4096 => FrameSize::FourK,
            _ => return Err(bad("frame_size must be 2048 or 4096")),
        };
        for (name, v) in [
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
            ("fill_size", self.fill_size),
            ("completion_size", self.completion_size),
        ] {
            if !v.is_power_of_two() {
                return Err(bad(&format!("{name} must be a power of two")));
            }
        }
        if self.frames <= self.fill_size + TX_BATCH as u32 {
            return Err(bad("frames must exceed fill_size + TX_BATCH"));
        }
        Ok(fs)
    }
}

/// The relay's own addresses on the port's interface: the source of every frame it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalEndpoint {
    /// The interface's MAC.
    pub mac: EthernetAddress,
    /// The IPv4 address and UDP port, if the relay serves IPv4.
    pub v4: Option<SocketAddr>,
    /// The IPv6 address and UDP port, if the relay serves IPv6.
    pub v6: Option<SocketAddr>,
}

/// Where the port's frames are. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    /// In the free pool.
    pub free: usize,
    /// Given to the kernel for receive (fill ring, in the kernel, or unread on the RX ring).
    pub in_fill: usize,
    /// Received and held by userspace (non-zero only inside a batch).
    pub in_rx: usize,
    /// Taken for transmit and not yet on the TX ring.
    pub in_tx: usize,
    /// On the TX ring or in the kernel, not yet reaped from the completion ring.
    pub in_completion: usize,
    /// UMEM frames.
    pub total: usize,
}

impl Accounting {
    /// Whether every frame is accounted for exactly once.
    pub fn balanced(&self) -> bool {
        self.free + self.in_fill + self.in_rx + self.in_tx + self.in_completion == self.total
    }

    /// Whether every frame is back in the free pool or the fill ring.
    pub fn quiescent(&self) -> bool {
        self.balanced() && self.in_rx == 0 && self.in_tx == 0 && self.in_completion == 0
    }
}

/// The port's own counters (single writer, plain integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskCounters {
    /// Frames read from the RX ring.
    pub rx_frames: u64,
    /// Descriptors submitted to the TX ring.
    pub tx_submitted: u64,
    /// Descriptors reaped from the completion ring.
    pub tx_completed: u64,
    /// Frames dropped because the next hop's MAC (or a local address) was unknown.
    pub no_route: u64,
    /// `buffer()` calls that found no free frame or no TX ring space.
    pub tx_full: u64,
    /// TX wake-up `sendto` calls.
    pub wakeups: u64,
    /// Wake-ups answered with `EAGAIN`, `EBUSY` or `ENOBUFS`.
    pub backpressure: u64,
    /// Batches after which the fill ring could not be topped up fully (no free frames).
    pub fill_short: u64,
}

/// The kernel's per-socket statistics (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelStats {
    /// Dropped for other reasons.
    pub rx_dropped: u64,
    /// RX descriptors the kernel found invalid.
    pub rx_invalid_descs: u64,
    /// TX descriptors the kernel found invalid.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty.
    pub tx_ring_empty_descs: u64,
}

enum Fill {
    Plain(FillRing),
    Wakable(WakableFillRing),
}

impl Fill {
    fn enqueue(&mut self, umem: &mut Umem, n: usize) -> usize {
        match self {
            // SAFETY: the UMEM is owned by the same port and outlives the socket (module doc).
            Self::Plain(r) => unsafe { r.enqueue(umem, n) },
            // SAFETY: as above. Without a wake-up the call makes no syscall and cannot fail.
            Self::Wakable(r) => unsafe { r.enqueue(umem, n, false) }.unwrap_or(0),
        }
    }
}

enum Tx {
    Plain(TxRing),
    Wakable(WakableTxRing),
}

impl Tx {
    fn send(&mut self, batch: &mut StackSlab<TX_BATCH>) -> usize {
        match self {
            // SAFETY: the packets point into the port's UMEM, which outlives the socket.
            Self::Plain(r) => unsafe { r.send(batch) },
            // SAFETY: as above. Without a wake-up the call makes no syscall and cannot fail.
            Self::Wakable(r) => unsafe { r.send(batch, false) }.unwrap_or(0),
        }
    }
}

/// The transmit half of a port: TX and completion rings, the staged batch.
struct TxState {
    ring: Tx,
    completion: CompletionRing,
    batch: StackSlab<TX_BATCH>,
    /// The frame the last `buffer()` lent, until `commit`.
    pending: Option<Packet>,
    /// `pending` plus `batch.len()`.
    staged: usize,
    /// Submitted to the TX ring and not yet reaped.
    in_flight: usize,
    /// Descriptors were submitted that the kernel may not have sent yet.
    dirty: bool,
    max_wakeups: usize,
    fd: RawFd,
    counters: XskCounters,
}

impl TxState {
    /// Moves the staged batch onto the TX ring if it fits (the ring takes all or nothing).
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.ring.send(&mut self.batch);
        if n > 0 {
            self.staged -= n;
            self.in_flight += n;
            self.counters.tx_submitted += n as u64;
            self.dirty = true;
        }
    }

    /// Moves completed frames back to the free pool.
    fn reap(&mut self, umem: &mut Umem) {
        if self.in_flight == 0 {
            return;
        }
        let n = self.completion.dequeue(umem, self.in_flight);
        self.in_flight -= n.min(self.in_flight);
        self.counters.tx_completed += n as u64;
    }

    /// One `sendto(MSG_DONTWAIT)`. `Ok(true)`: the kernel took everything; `Ok(false)`:
    /// back-pressure.
    fn wake(&mut self) -> io::Result<bool> {
        self.counters.wakeups += 1;
        // SAFETY: the fd is the port's open AF_XDP socket; a zero-length send with no
        // buffer and no address is the documented TX wake-up.
        let r = unsafe { libc::sendto(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if r >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => {
                self.counters.backpressure += 1;
                Ok(false)
            }
            _ => Err(e),
        }
    }

    fn kick(&mut self, umem: &mut Umem) -> io::Result<()> {
        self.flush();
        self.reap(umem);
        // Copy mode sends a bounded budget per call and says EAGAIN when it stopped
        // early; keep going while that is the only reason, within a bound.
        let mut calls = 0;
        while self.dirty && calls < self.max_wakeups {
            calls += 1;
            let done = self.wake()?;
            self.reap(umem);
            self.flush();
            if done && self.batch.is_empty() {
                self.dirty = false;
            }
        }
        Ok(())
    }
}

/// One AF_XDP socket with its own UMEM, bound to one queue of one interface.
pub struct XskPort {
    rx: RxRing,
    rx_batch: StackSlab<RX_BATCH>,
    fill: Fill,
    tx: TxState,
    socket: XdpSocket,
    mode: XskMode,
    cfg: XskConfig,
    in_fill: usize,
    in_rx: usize,
    local: LocalEndpoint,
    neighbors: NeighborCache,
    stats: Arc<WorkerCounters>,
    /// Last: unmapped after the socket and rings are gone.
    umem: Umem,
}

// SAFETY: the only non-`Send` parts are `Packet`s (raw pointers into the UMEM) held in the
// port's own slabs; they point into memory this port owns and maps at a fixed address, so
// moving the whole port to another thread moves them together with what they point to.
unsafe impl Send for XskPort {}

fn other<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> io::Error {
    move |e| io::Error::other(format!("{what}: {e}"))
}

impl XskPort {
    /// Maps a UMEM, creates the socket and rings, and binds to `queue` of `ifindex`. With
    /// [`XskMode::Auto`] it tries zero-copy first and falls back to copy mode; see
    /// [`mode`](Self::mode). Then fills the fill ring.
    pub fn open(ifindex: u32, queue: u32, cfg: XskConfig) -> io::Result<Self> {
        let frame_size = cfg.validate()?;
        let umem_cfg = UmemCfgBuilder { frame_size, head_room: 0, frame_count: cfg.frames, ..Default::default() }
            .build()
            .map_err(other("UMEM config"))?;
        let umem = Umem::map(umem_cfg)?;
        let attempts: &[XskMode] = match cfg.mode {
            XskMode::Auto => &[XskMode::ZeroCopy, XskMode::Copy],
            XskMode::Copy => &[XskMode::Copy],
            XskMode::ZeroCopy => &[XskMode::ZeroCopy],
        };
        let mut last = None;
        for &mode in attempts {
            match Self::bind(&umem, ifindex, queue, &cfg, mode) {
                Ok((socket, rx, fill, tx, completion)) => {
                    let fd = socket.as_raw_fd();
                    let mut port = Self {
                        rx,
                        rx_batch: StackSlab::new(),
                        fill,
                        tx: TxState {
                            ring: tx,
                            completion,
                            batch: StackSlab::new(),
                            pending: None,
                            staged: 0,
                            in_flight: 0,
                            dirty: false,
                            // Copy mode sends at most 32 frames per call by default.
                            max_wakeups: cfg.tx_size as usize / 32 + 2,
                            fd,
                            counters: XskCounters::default(),
                        },
                        socket,
                        mode,
                        cfg,
                        in_fill: 0,
                        in_rx: 0,
                        local: LocalEndpoint::default(),
                        neighbors: NeighborCache::new(ifindex),
                        stats: Arc::new(WorkerCounters::default()),
                        umem,
                    };
                    port.refill();
                    return Ok(port);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one bind mode is tried"))
    }

    fn bind(
        umem: &Umem,
        ifindex: u32,
        queue: u32,
        cfg: &XskConfig,
        mode: XskMode,
    ) -> io::Result<(XdpSocket, RxRing, Fill, Tx, CompletionRing)> {
        let rings = RingConfigBuilder {
            rx_count: cfg.rx_size,
            tx_count: cfg.tx_size,
            fill_count: cfg.fill_size,
            completion_count: cfg.completion_size,
        }
        .build()
        .map_err(other("ring config"))?;
        let mut b = XdpSocketBuilder::new().map_err(other("AF_XDP socket"))?;
        let nic = xdp::nic::NicIndex(ifindex);
        let missing = || io::Error::other("the crate built no RX or TX ring");
        let (rx, fill, tx, completion, mut flags) = if cfg.need_wakeup {
            let (r, flags) = b.build_wakable_rings(umem, rings).map_err(other("AF_XDP rings"))?;
            let (rx, tx) = (r.rx_ring.ok_or_else(missing)?, r.tx_ring.ok_or_else(missing)?);
            (rx, Fill::Wakable(r.fill_ring), Tx::Wakable(tx), r.completion_ring, flags)
        } else {
            let (r, flags) = b.build_rings(umem, rings).map_err(other("AF_XDP rings"))?;
            let (rx, tx) = (r.rx_ring.ok_or_else(missing)?, r.tx_ring.ok_or_else(missing)?);
            (rx, Fill::Plain(r.fill_ring), Tx::Plain(tx), r.completion_ring, flags)
        };
        match mode {
            XskMode::ZeroCopy => flags.force_zerocopy(),
            _ => flags.force_copy(),
        }
        let socket = b.bind(nic, queue, flags).map_err(|e| {
            let kind = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .map_or(io::ErrorKind::Other, io::Error::kind);
            io::Error::new(kind, format!("bind AF_XDP socket to ifindex {ifindex} queue {queue} ({mode:?}): {e}"))
        })?;
        Ok((socket, rx, fill, tx, completion))
    }

    /// The mode the socket bound with: [`XskMode::Copy`] or [`XskMode::ZeroCopy`].
    pub fn mode(&self) -> XskMode {
        self.mode
    }

    /// The socket's fd: for the XSKMAP entry and for poll/mio registration (readable: RX
    /// frames; polling also wakes a zero-copy driver that waits for fill descriptors).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &XskConfig {
        &self.cfg
    }

    /// Sets the source MAC and addresses of every frame sent.
    pub fn set_local(&mut self, local: LocalEndpoint) {
        self.local = local;
    }

    /// The source MAC and addresses.
    pub fn local(&self) -> &LocalEndpoint {
        &self.local
    }

    /// Counts engine-vocabulary drops (`no_route`, `tx_full`, `too_big`) and sent packets
    /// into `c` instead of the port's own instance.
    pub fn set_worker_counters(&mut self, c: Arc<WorkerCounters>) {
        self.stats = c;
    }

    /// The worker counters the port counts into.
    pub fn worker_counters(&self) -> &Arc<WorkerCounters> {
        &self.stats
    }

    /// The destination-MAC cache the transmit path uses.
    pub fn neighbors(&self) -> &NeighborCache {
        &self.neighbors
    }

    /// The destination-MAC cache, to refresh between batches.
    pub fn neighbors_mut(&mut self) -> &mut NeighborCache {
        &mut self.neighbors
    }

    /// The port's counters.
    pub fn counters(&self) -> XskCounters {
        self.tx.counters
    }

    /// Where the frames are. See the module doc.
    pub fn accounting(&self) -> Accounting {
        Accounting {
            free: self.umem.allocatable(),
            in_fill: self.in_fill,
            in_rx: self.in_rx,
            in_tx: self.tx.staged,
            in_completion: self.tx.in_flight,
            total: self.cfg.frames as usize,
        }
    }

    /// The kernel's statistics for the socket (`XDP_STATISTICS`).
    pub fn kernel_stats(&self) -> io::Result<KernelStats> {
        let s = self.socket.statistics().map_err(other("XDP_STATISTICS"))?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Gives free frames to the kernel until `fill_size` frames are out for receive.
    fn refill(&mut self) {
        let want = (self.cfg.fill_size as usize).saturating_sub(self.in_fill);
        if want == 0 {
            return;
        }
        let n = self.fill.enqueue(&mut self.umem, want);
        self.in_fill += n;
        if n < want {
            self.tx.counters.fill_short += 1;
        }
    }

    /// Receives up to [`RX_BATCH`] frames. For each, `f` gets the whole Ethernet frame
    /// (mutable in place, e.g. to decrypt) and the transmit sink. Afterwards the RX frames
    /// go back to the free pool and the fill ring is topped up. Returns the frame count.
    /// Call [`kick`](Self::kick) after a batch that transmitted.
    pub fn rx_batch(&mut self, mut f: impl FnMut(&mut [u8], &mut XskTx<'_>)) -> usize {
        // SAFETY: the packets point into `self.umem`, which outlives them: each is freed
        // back to it in the loop below.
        let n = unsafe { self.rx.recv(&self.umem, &mut self.rx_batch) };
        self.in_fill -= n.min(self.in_fill);
        self.in_rx += n;
        self.tx.counters.rx_frames += n as u64;
        while let Some(mut p) = self.rx_batch.pop_back() {
            let mut tx = XskTx {
                st: &mut self.tx,
                umem: &mut self.umem,
                neighbors: &self.neighbors,
                local: &self.local,
                stats: &self.stats,
            };
            f(&mut p, &mut tx);
            self.umem.free_packet(p);
            self.in_rx -= 1;
        }
        self.refill();
        n
    }

    /// A transmit sink outside a receive batch (control replies, tests).
    pub fn tx(&mut self) -> XskTx<'_> {
        XskTx {
            st: &mut self.tx,
            umem: &mut self.umem,
            neighbors: &self.neighbors,
            local: &self.local,
            stats: &self.stats,
        }
    }

    /// Queues one UDP datagram with `payload` to `dst` through the same path as media.
    /// Returns whether it was queued (else it was counted as `tx_full`, `too_big` or
    /// `no_route`). Needs a [`kick`](Self::kick) to go out.
    pub fn send_to(&mut self, dst: SocketAddr, payload: &[u8]) -> bool {
        let mut tx = self.tx();
        let Some(buf) = tx.buffer() else {
            tx.stats.count_drop(DropReason::TxFull);
            return false;
        };
        let Some(dst_buf) = buf.get_mut(..payload.len()) else {
            tx.stats.count_drop(DropReason::TooBig);
            return false;
        };
        dst_buf.copy_from_slice(payload);
        tx.commit_frame(&mut XskDest::from(dst), payload.len())
    }

    /// Queues a complete Ethernet frame as given (diagnostics and tests: nothing is
    /// checked or rewritten). Returns whether it was queued.
    pub fn send_raw_frame(&mut self, frame: &[u8]) -> bool {
        let mut tx = self.tx();
        if !tx.make_room() {
            return false;
        }
        // SAFETY: the packet points into the port's UMEM, which outlives it: it goes back
        // to the UMEM via the TX ring and completion ring, or is freed below.
        let Some(mut p) = (unsafe { tx.umem.alloc() }) else {
            return false;
        };
        let ok = p.adjust_tail(frame.len() as i32).is_ok() && frame.len() <= p.capacity();
        if !ok {
            tx.umem.free_packet(p);
            return false;
        }
        p.copy_from_slice(frame);
        tx.st.staged += 1;
        tx.push(p)
    }

    /// Submits staged frames, wakes the kernel for TX (back-pressure is not an error; the
    /// rest goes on the next kick), reaps completions into the free pool and tops up the
    /// fill ring. A buffer lent by `buffer()` and never committed is returned to the pool.
    ///
    /// # Errors
    ///
    /// Only a wake-up failure other than back-pressure (e.g. the interface went away).
    pub fn kick(&mut self) -> io::Result<()> {
        if let Some(p) = self.tx.pending.take() {
            self.umem.free_packet(p);
            self.tx.staged -= 1;
        }
        let r = self.tx.kick(&mut self.umem);
        self.refill();
        r
    }
}

/// A receiver's destination on the AF_XDP backend: its address and the next hop's MAC,
/// resolved against the port's [`NeighborCache`] once, and again only after the cache's
/// content changed (its [`generation`](NeighborCache::generation)), so a relayed copy
/// does no neighbour or route lookup.
#[derive(Debug, Clone, Copy)]
pub struct XskDest {
    addr: SocketAddr,
    mac: Option<EthernetAddress>,
    /// The cache generation `mac` was resolved at; 0 = never.
    generation: u64,
}

impl From<SocketAddr> for XskDest {
    fn from(addr: SocketAddr) -> Self {
        Self { addr, mac: None, generation: 0 }
    }
}

impl XskDest {
    /// The receiver's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next hop's MAC, resolved against `cache` if it changed since the last time.
    #[inline]
    fn mac(&mut self, cache: &NeighborCache) -> Option<EthernetAddress> {
        if self.generation != cache.generation() {
            self.mac = cache.lookup(self.addr.ip());
            self.generation = cache.generation();
        }
        self.mac
    }
}

/// The engine's [`TxSink`] over a port: frames from the free pool, headers written in
/// front of the payload, descriptors staged for the TX ring.
pub struct XskTx<'a> {
    st: &'a mut TxState,
    umem: &'a mut Umem,
    neighbors: &'a NeighborCache,
    local: &'a LocalEndpoint,
    stats: &'a WorkerCounters,
}

impl XskTx<'_> {
    /// Makes sure the staged batch has room for one more descriptor, submitting (and if
    /// need be waking the kernel) to get it.
    fn make_room(&mut self) -> bool {
        if self.st.batch.available() > 0 {
            return true;
        }
        self.st.flush();
        if self.st.batch.available() == 0 {
            // The TX ring is full: let the kernel drain some, once.
            if self.st.wake().is_err() {
                return false;
            }
            self.st.reap(self.umem);
            self.st.flush();
        }
        if self.st.batch.available() == 0 {
            self.st.counters.tx_full += 1;
            return false;
        }
        true
    }

    /// Stages a frame that was counted in `staged`. Frees it if the batch is full.
    fn push(&mut self, p: Packet) -> bool {
        match self.st.batch.push_front(p) {
            None => true,
            Some(p) => {
                self.umem.free_packet(p);
                self.st.staged -= 1;
                self.st.counters.tx_full += 1;
                false
            }
        }
    }

    /// Returns a lent frame to the pool and counts why. Always `false` (not staged).
    fn drop_pending(&mut self, p: Packet, reason: DropReason) -> bool {
        self.umem.free_packet(p);
        self.st.staged -= 1;
        self.stats.count_drop(reason);
        if reason == DropReason::NoRoute {
            self.st.counters.no_route += 1;
        }
        false
    }
}

impl TxSink for XskTx<'_> {
    type Dest = XskDest;
    fn buffer(&mut self) -> Option<&mut [u8]> {
        if self.st.pending.is_none() {
            if !self.make_room() {
                return None;
            }
            // SAFETY: the packet points into the port's UMEM, which outlives it: it goes
            // back via the TX and completion rings, or is freed on commit failure or kick.
            let Some(mut p) = (unsafe { self.umem.alloc() }) else {
                self.st.counters.tx_full += 1;
                return None;
            };
            let cap = p.capacity();
            if p.adjust_tail(cap as i32).is_err() {
                self.umem.free_packet(p);
                return None;
            }
            self.st.staged += 1;
            self.st.pending = Some(p);
        }
        self.st.pending.as_mut().and_then(|p| p.get_mut(HEADROOM..))
    }

    fn commit(&mut self, dst: &mut XskDest, len: usize) -> bool {
        self.commit_frame(dst, len)
    }
}

impl XskTx<'_> {
    /// [`TxSink::commit`], returning whether the frame was staged.
    fn commit_frame(&mut self, dest: &mut XskDest, len: usize) -> bool {
        let Some(mut p) = self.st.pending.take() else {
            return false;
        };
        let dst = dest.addr;
        let src = if dst.is_ipv4() { self.local.v4 } else { self.local.v6 };
        let (Some(src), Some(dst_mac)) = (src, dest.mac(self.neighbors)) else {
            return self.drop_pending(p, DropReason::NoRoute);
        };
        let start = HEADROOM - wire::headers_len(true, dst.is_ipv4());
        let Some(frame) = p.get_mut(start..) else {
            return self.drop_pending(p, DropReason::TooBig);
        };
        if wire::write_udp_headers(frame, Some((self.local.mac, dst_mac)), src, dst, len).is_err() {
            return self.drop_pending(p, DropReason::TooBig);
        }
        // Shrink the packet to [start, HEADROOM + len): the descriptor covers exactly it.
        let tail_cut = p.len() - (HEADROOM + len);
        let trimmed = p.adjust_tail(-(tail_cut as i32)).is_ok() && p.adjust_head(start as i32).is_ok();
        if !trimmed {
            return self.drop_pending(p, DropReason::TooBig);
        }
        let staged = self.push(p);
        if staged {
            self.stats.tx(len);
        }
        staged
    }
}

/// The usable bytes of a chunk for a frame of `frame_size`, after the kernel headroom.
pub const fn frame_capacity(frame_size: u32) -> usize {
    frame_size as usize - KERNEL_HEADROOM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_fits_the_largest_headers() {
        let vlan_v6 = wire::ethernet::VLAN_HEADER_LEN + wire::ipv6::HEADER_LEN + wire::udp::HEADER_LEN;
        assert!(HEADROOM >= vlan_v6);
        assert!(HEADROOM >= wire::headers_len(true, false));
        assert!(frame_capacity(2048) - HEADROOM >= 1500, "an MTU-sized payload fits a 2 KiB frame");
    }

    #[test]
    fn config_validation() {
        assert!(XskConfig::default().validate().is_ok());
        assert!(XskConfig { frame_size: 3000, ..Default::default() }.validate().is_err());
        assert!(XskConfig { rx_size: 1000, ..Default::default() }.validate().is_err());
        assert!(XskConfig { frames: 2048, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn accounting_balance() {
        let a = Accounting { free: 10, in_fill: 5, in_rx: 0, in_tx: 1, in_completion: 0, total: 16 };
        assert!(a.balanced() && !a.quiescent());
        let q = Accounting { in_tx: 0, free: 11, ..a };
        assert!(q.quiescent());
    }
}
