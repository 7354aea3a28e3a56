//! AF_XDP in network namespaces: an `XskPort` on the relay end of a veth pair receives UDP
//! redirected by a test XDP program, echoes it back through `XskTx` (headers rewritten,
//! next hop from the kernel's neighbour table), and a normal socket in the peer namespace
//! receives the echoes, which proves the UDP checksums (the kernel drops bad ones; a
//! deliberately corrupted frame shows it does); and transmit under back-pressure delivers
//! every frame intact and at most once. Needs root and clang.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use relay::engine::TxSink;
use relay::io::afxdp::{LocalEndpoint, XskConfig, XskMode, XskPort, XskTx};
use relay::io::netlink::RouteSocket;
use relay::stats::DropReason;
use relay::wire::{self, parse_udp};

/// Echoes one received UDP datagram back to its source.
fn echo(frame: &mut [u8], tx: &mut XskTx<'_>) {
    let Ok(meta) = parse_udp(frame) else { return };
    let payload = &frame[meta.payload.clone()];
    if let Some(buf) = tx.buffer() {
        buf[..payload.len()].copy_from_slice(payload);
        tx.commit(&mut meta.src.into(), payload.len());
    }
}

/// Runs the port until it has received `n` more frames or `timeout` passes.
fn pump(port: &mut XskPort, n: u64, timeout: Duration) {
    let target = port.counters().rx_frames + n;
    let deadline = Instant::now() + timeout;
    while port.counters().rx_frames < target && Instant::now() < deadline {
        port.rx_batch(echo);
        port.kick().expect("kick");
    }
    for _ in 0..10 {
        port.kick().expect("kick");
    }
}

#[test]
fn echo_through_xsk_port_with_neighbour_resolution() {
    if !can_run("echo_through_xsk_port_with_neighbour_resolution") {
        return;
    }
    let mut topo = Topology::new();
    let relay_addr = SocketAddr::new(IpAddr::V4(RELAY_IP), RELAY_PORT);

    let (mut port, mut rs) = {
        let _g = topo.relay_ns.enter().unwrap();
        let zc = XskPort::open(topo.relay_if, 0, XskConfig { mode: XskMode::ZeroCopy, ..Default::default() });
        let err = zc.err().expect("veth has no zero-copy AF_XDP");
        eprintln!("zero-copy refused as expected: {err}");
        let cfg = XskConfig { frames: 4096, mode: XskMode::Auto, ..Default::default() };
        let port = XskPort::open(topo.relay_if, 0, cfg).expect("open XskPort on queue 0");
        (port, RouteSocket::open().unwrap())
    };
    eprintln!("bound in {:?} mode", port.mode());
    assert_eq!(port.mode(), XskMode::Copy, "veth is copy-mode only, so Auto must fall back to copy");
    topo.insert_xsk(0, port.fd());
    port.set_local(LocalEndpoint { mac: topo.relay_mac, v4: Some(relay_addr), v6: None });
    let a = port.accounting();
    assert!(a.quiescent() && a.in_fill == 2048 && a.free == 4096 - 2048, "{a:?}");

    // Unknown, on-link destination: dropped as no_route, the frame goes back to the pool.
    let stranger = SocketAddr::new("198.18.1.77".parse().unwrap(), 9999);
    assert!(!port.send_to(stranger, b"nobody"));
    assert_eq!(port.worker_counters().drops(DropReason::NoRoute), 1);
    assert!(port.accounting().quiescent());

    // The kernel resolves the peer's MAC for us.
    let mac = {
        let _g = topo.relay_ns.enter().unwrap();
        port.neighbors_mut().resolve(&mut rs, peer_ip(), Duration::from_secs(3)).expect("netlink")
    };
    assert_eq!(mac, Some(topo.peer_mac), "resolved MAC is the peer veth's");

    let (peer, csum_before) = {
        let _g = topo.peer_ns.enter().unwrap();
        let s = UdpSocket::bind((PEER_IP, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        (s, udp_in_csum_errors())
    };

    let mut buf = [0u8; 2048];
    for i in 0..200u32 {
        let len = 1 + (i as usize * 7) % 1400;
        let msg: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        peer.send_to(&msg, relay_addr).unwrap();
        pump(&mut port, 1, Duration::from_secs(2));
        let (n, from) = peer.recv_from(&mut buf).unwrap_or_else(|e| panic!("echo {i} (len {len}) not received: {e}"));
        assert_eq!(from, relay_addr);
        assert_eq!(&buf[..n], &msg[..], "echo {i}");
    }

    // A frame with a corrupted UDP checksum is dropped by the peer's kernel and counted,
    // so the echoes above really passed the checksum check.
    let payload = b"bad checksum";
    let dst = peer.local_addr().unwrap();
    let hdr = wire::headers_len(true, true);
    let mut frame = vec![0u8; hdr + payload.len()];
    frame[hdr..].copy_from_slice(payload);
    wire::write_udp_headers(&mut frame, Some((topo.relay_mac, topo.peer_mac)), relay_addr, dst, payload.len()).unwrap();
    frame[hdr - 2] ^= 0x55;
    assert!(port.send_raw_frame(&frame));
    port.kick().unwrap();
    assert!(peer.recv_from(&mut buf).is_err(), "a bad checksum must not be delivered");
    let csum_after = {
        let _g = topo.peer_ns.enter().unwrap();
        udp_in_csum_errors()
    };
    assert_eq!(csum_after, csum_before + 1, "the peer's kernel counted exactly the corrupted frame");

    // Everything went back where it belongs.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !port.accounting().quiescent() && Instant::now() < deadline {
        port.kick().unwrap();
    }
    let a = port.accounting();
    assert!(a.quiescent(), "{a:?}");
    assert_eq!(a.in_fill, 2048);
    let c = port.counters();
    eprintln!("counters: {c:?}; kernel: {:?}", port.kernel_stats().unwrap());
    assert_eq!(c.tx_completed, c.tx_submitted);
    assert!(c.rx_frames >= 200);
}

/// Transmit integrity under back-pressure: the port blasts distinct frames (a sequence
/// number and a checksum in each payload) as fast as the TX ring takes them, to a UDP socket
/// in the peer namespace that reads slowly, so the veth and the socket queue overflow. The
/// receiver may miss packets, but every packet it gets must be intact and new: a frame
/// reused while the kernel still reads it would arrive damaged or twice.
#[test]
fn tx_under_backpressure_sends_every_frame_intact_and_once() {
    if !can_run("tx_under_backpressure_sends_every_frame_intact_and_once") {
        return;
    }
    let topo = Topology::new();
    let relay_addr = SocketAddr::new(IpAddr::V4(RELAY_IP), RELAY_PORT);
    let mut port = {
        let _g = topo.relay_ns.enter().unwrap();
        XskPort::open(topo.relay_if, 0, XskConfig { mode: XskMode::Copy, ..Default::default() }).expect("open")
    };
    let peer = {
        let _g = topo.peer_ns.enter().unwrap();
        let s = UdpSocket::bind((PEER_IP, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s
    };
    let dst = peer.local_addr().unwrap();
    const N: u32 = 400_000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut seen, mut dup, mut bad, mut got) = (vec![false; N as usize], 0u64, 0u64, 0u64);
            let mut buf = [0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(n) = peer.recv(&mut buf) else { continue };
                got += 1;
                // A slow reader: the socket queue fills while it sleeps.
                if got % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(500));
                }
                let p = &buf[..n];
                let seq = u32::from_be_bytes(p[..4].try_into().unwrap());
                let sum = p[8..].iter().fold(0u32, |a, &b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
                if n < 8 || seq >= N || u32::from_be_bytes(p[4..8].try_into().unwrap()) != sum {
                    bad += 1;
                } else if std::mem::replace(&mut seen[seq as usize], true) {
                    dup += 1;
                }
            }
            (got, dup, bad)
        })
    };
    let hdr = wire::headers_len(true, true);
    let mut frame = vec![0u8; hdr + 200];
    let mut sent = 0u32;
    let start = Instant::now();
    while sent < N && start.elapsed() < Duration::from_secs(20) {
        let p = &mut frame[hdr..];
        p[..4].copy_from_slice(&sent.to_be_bytes());
        for (j, b) in p[8..].iter_mut().enumerate() {
            *b = (sent as usize).wrapping_mul(7).wrapping_add(j) as u8;
        }
        let sum = p[8..].iter().fold(0u32, |a, &b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        p[4..8].copy_from_slice(&sum.to_be_bytes());
        wire::write_udp_headers(&mut frame, Some((topo.relay_mac, topo.peer_mac)), relay_addr, dst, 200).unwrap();
        if port.send_raw_frame(&frame) {
            sent += 1;
        } else {
            port.kick().unwrap();
        }
    }
    for _ in 0..100 {
        port.kick().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (got, dup, bad) = reader.join().unwrap();
    let c = port.counters();
    eprintln!(
        "sent {sent}, received {got}, duplicates {dup}, damaged {bad}; port {c:?}; kernel {:?}",
        port.kernel_stats()
    );
    assert!(got > 1000, "the receiver got almost nothing ({got})");
    assert_eq!((dup, bad), (0, 0), "frames arrived twice or damaged");
}
