//! An attacker's flood: SRTP-shaped datagrams (RTP version 2, 120 bytes) from 5-tuples with
//! no session, at a fixed rate, sent in batches from a thread of its own until stopped
//! (or dropped).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relay::io::sys::SendBatch;

/// Datagrams per `sendmmsg`.
const BATCH: u64 = 50;

/// A running flood; stops on drop.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    /// Floods `target` at `pps` datagrams per second, round-robin over `sockets` (each a
    /// source port of its own).
    pub fn start(sockets: Vec<UdpSocket>, target: SocketAddr, pps: u64) -> Self {
        assert!(!sockets.is_empty() && pps > 0, "a flood needs a socket and a rate");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut batch = SendBatch::new(BATCH as usize);
            let start = Instant::now();
            let mut n = 0u64;
            while !flag.load(Relaxed) {
                for i in 0..BATCH {
                    let b = batch.next_buffer().expect("a buffer per packet");
                    b[..120].fill(0x5a);
                    b[0] = 0x80; // RTP version 2: SRTP from a 5-tuple with no session
                    b[2..4].copy_from_slice(&((n * BATCH + i) as u16).to_be_bytes());
                    batch.push(target, 120);
                }
                let f = batch.flush(&sockets[n as usize % sockets.len()]);
                count.fetch_add(f.sent as u64, Relaxed);
                n += 1;
                let next = start + Duration::from_micros(n * BATCH * 1_000_000 / pps);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Self { stop, sent, thread: Some(thread) }
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Stops the flood and waits for its thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("flood thread");
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}
