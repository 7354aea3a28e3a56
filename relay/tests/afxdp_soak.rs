//! AF_XDP soak: at least 10 million packets (RX + TX) through one `XskPort` in copy mode
//! on veth, then every UMEM frame must be back in the free pool or the fill ring.
//!
//! A sender thread blasts small UDP datagrams with `sendmmsg` from the peer namespace; the
//! port echoes each one to the peer's sink port, where the peer's XDP program counts and
//! drops it. Bounded: fails if the target is not reached within `SOAK_DEADLINE`. Prints the
//! rates reached. Needs root and clang. A separate test binary, so it does not share the
//! two cores with the other namespace tests.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use relay::engine::TxSink;
use relay::io::afxdp::{LocalEndpoint, XskConfig, XskPort};
use relay::io::netlink::RouteSocket;
use relay::io::sys::{bind_reuseport, SendBatch};
use relay::wire::parse_udp;

const TARGET_PACKETS: u64 = 10_000_000;
const SOAK_DEADLINE: Duration = Duration::from_secs(240);
const PAYLOAD: usize = 18;

fn poll_readable(fd: i32, timeout_ms: i32) {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, timeout_ms) };
}

#[test]
fn soak_ten_million_packets_without_leaking_frames() {
    if !can_run("soak_ten_million_packets_without_leaking_frames") {
        return;
    }
    let mut topo = Topology::new();
    let relay_addr = SocketAddr::new(IpAddr::V4(RELAY_IP), RELAY_PORT);
    let cfg = XskConfig::default();
    let mut port = {
        let _g = topo.relay_ns.enter().unwrap();
        let mut port = XskPort::open(topo.relay_if, 0, cfg).expect("open XskPort");
        let mut rs = RouteSocket::open().unwrap();
        let mac = port.neighbors_mut().resolve(&mut rs, peer_ip(), Duration::from_secs(3)).unwrap();
        assert_eq!(mac, Some(topo.peer_mac));
        port
    };
    topo.insert_xsk(0, port.fd());
    port.set_local(LocalEndpoint { mac: topo.relay_mac, v4: Some(relay_addr), v6: None });

    let sock = {
        let _g = topo.peer_ns.enter().unwrap();
        bind_reuseport(SocketAddr::new(IpAddr::V4(PEER_IP), 0), 4 << 20).unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut batch = SendBatch::new(64);
            let mut seq = 0u64;
            let mut sent = 0u64;
            while !stop.load(Relaxed) {
                while let Some(b) = batch.next_buffer() {
                    b[..8].copy_from_slice(&seq.to_be_bytes());
                    b[8..PAYLOAD].fill(0xab);
                    seq += 1;
                    batch.push(relay_addr, PAYLOAD);
                }
                let f = batch.flush(&sock);
                sent += f.sent as u64;
                if f.sent == 0 {
                    std::thread::yield_now();
                }
            }
            sent
        })
    };

    let fd = port.fd();
    let start = Instant::now();
    let echo = |frame: &mut [u8], tx: &mut relay::io::afxdp::XskTx<'_>| {
        let Ok(meta) = parse_udp(frame) else { return };
        let payload = &frame[meta.payload.clone()];
        if let Some(buf) = tx.buffer() {
            buf[..payload.len()].copy_from_slice(payload);
            tx.commit(&mut SocketAddr::new(meta.src.ip(), SINK_PORT).into(), payload.len());
        }
    };
    let through = |p: &XskPort| p.counters().rx_frames + p.counters().tx_completed;
    while through(&port) < TARGET_PACKETS && start.elapsed() < SOAK_DEADLINE {
        if port.rx_batch(echo) == 0 {
            port.kick().expect("kick");
            poll_readable(fd, 1);
            continue;
        }
        port.kick().expect("kick");
        let a = port.accounting();
        assert!(a.balanced(), "accounting out of balance mid-run: {a:?}");
    }
    let elapsed = start.elapsed();
    stop.store(true, Relaxed);
    let sent = sender.join().unwrap();

    // Drain: no new frames for 200 ms, then wait for the kernel to complete every send.
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(200) {
        if port.rx_batch(echo) > 0 {
            quiet_since = Instant::now();
        }
        port.kick().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !port.accounting().quiescent() && Instant::now() < deadline {
        port.kick().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }

    let c = port.counters();
    let k = port.kernel_stats().unwrap();
    let a = port.accounting();
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "soak: {} RX + {} TX = {} packets in {secs:.1} s: {:.0} pps through the port ({:.0} RX pps); \
         sender sent {sent}; peer sink counted {}",
        c.rx_frames,
        c.tx_completed,
        c.rx_frames + c.tx_completed,
        (c.rx_frames + c.tx_completed) as f64 / secs,
        c.rx_frames as f64 / secs,
        topo.sunk(),
    );
    eprintln!("soak: mode {:?}; counters {c:?}; kernel {k:?}; accounting {a:?}", port.mode());

    assert!(
        c.rx_frames + c.tx_completed >= TARGET_PACKETS,
        "only {} packets in {SOAK_DEADLINE:?}",
        c.rx_frames + c.tx_completed
    );
    assert!(a.quiescent(), "frames leaked or stuck: {a:?}");
    assert_eq!(a.in_fill, cfg.fill_size as usize, "the fill ring is topped up");
    assert_eq!(a.free + a.in_fill, a.total);
    assert_eq!(c.tx_completed, c.tx_submitted, "every submitted frame completed");
    assert_eq!(c.no_route, 0);
    assert_eq!(k.rx_fill_ring_empty_descs, 0, "the fill ring never ran dry");
    assert!(topo.sunk() > 0 && topo.sunk() <= c.tx_completed, "the peer saw the echoes");
}
