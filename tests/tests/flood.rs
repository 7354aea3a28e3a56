//! Flood: while two rooms stream, an attacker floods unknown-source SRTP, junk and joins.
//! With the XDP backend the kernel drops the flood, legitimate media keeps flowing, and
//! relayd's userspace never sees a media packet from an unknown source.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgerelay_tests::net::Net;
use edgerelay_tests::*;
use relay::ids::RoomId;
use relay::io::sys::SendBatch;
use relay::stats::DropReason;

const LEGIT_PPS: u64 = 200;
const SECONDS: u64 = 3;

#[test]
fn xdp_drops_the_flood_in_the_kernel_and_media_keeps_flowing() {
    let Some(net) = Net::xdp(1) else { return };
    let relayd = net.relayd_with_limits(
        &two_app_config(30, ""),
        "join_rate_per_sec = 20\njoin_burst = 40\npps_rate_per_sec = 5000\npps_burst = 10000\n",
    );
    let mut rooms = Vec::new();
    for (room, (app, secret)) in [(1u32, (APP_A, SECRET_A)), (2, (APP_B, SECRET_B))] {
        let mut tx = net.peer(&relayd, app, secret, "speaker", RoomId::Num(room), Some(room * 10));
        let mut rx = net.peer(&relayd, app, secret, "listener", RoomId::Num(room), None);
        tx.join().unwrap();
        rx.join().unwrap();
        rooms.push((room * 10, tx, rx));
    }

    // The attacker: its own namespace, routed to the relay through the clients' namespace;
    // many source ports (all unknown 5-tuples), three kinds of packets, as fast as one
    // thread can send them.
    let attacker = net.attacker();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..16).map(|_| attacker.socket()).collect();
    let target = relayd.addr;
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut batch = SendBatch::new(64);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut k = 0usize;
            while !stop.load(Relaxed) {
                for i in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let b = batch.next_buffer().expect("64 buffers");
                    let len = 40 + (x % 160) as usize;
                    for (j, byte) in b[..len].iter_mut().enumerate() {
                        *byte = (x >> (j % 8 * 8)) as u8;
                    }
                    match i % 3 {
                        0 => b[0] = 0x80,                                         // SRTP from an unknown source
                        1 => b[0] = 0x40 | (b[0] & 0x3f),                         // junk: not a relayed first byte
                        _ => b[..4].copy_from_slice(&[1, 1, 0, (len - 4) as u8]), // a join
                    }
                    batch.push(target, len);
                }
                let f = batch.flush(&attackers[k % attackers.len()]);
                sent.fetch_add(f.sent as u64, Relaxed);
                k += 1;
            }
        })
    };

    let start = Instant::now();
    let mut n = 0u64;
    let mut received = vec![Vec::new(); rooms.len()];
    while start.elapsed() < Duration::from_secs(SECONDS) {
        for (i, (ssrc, tx, rx)) in rooms.iter_mut().enumerate() {
            tx.send_rtp(*ssrc, &[0x5a; 800]);
            received[i].extend(rx.poll());
        }
        n += 1;
        let next = start + Duration::from_micros(n * 1_000_000 / LEGIT_PPS);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Relaxed);
    flood.join().unwrap();
    let flood_sent = sent.load(Relaxed);

    for ((ssrc, _, rx), mut got) in rooms.iter_mut().zip(received) {
        got.extend(rx.drain(Duration::from_millis(500)));
        assert!(got.iter().all(|r| r.ssrc == *ssrc));
        let loss = 1.0 - got.len() as f64 / n as f64;
        eprintln!("room of SSRC {ssrc}: {}/{n} packets, loss {:.2}%", got.len(), loss * 100.0);
        assert!(loss <= 0.01, "legit loss {:.2}% > 1%", loss * 100.0);
        assert_eq!(rx.media_errors, 0);
    }
    let s = relayd.stats();
    let k = |r: &str| s.xdp.get(r).copied().unwrap_or(0);
    eprintln!(
        "flood sent {flood_sent}; kernel verdicts {:?}; engine drops {:?}; control_in {}",
        s.xdp, s.drops, s.control_in
    );
    assert!(flood_sent > 10_000, "the attacker sent {flood_sent}");
    // The kernel accounts for the flood: every SRTP-looking packet is an unknown session,
    // junk is not relayed, and joins beyond the per-source bucket are rate limited.
    let dropped = k("unknown_session") + k("not_relayed") + k("join_rate_limited") + k("control_budget");
    let admitted_joins = k("redirect_control");
    assert!(
        dropped + admitted_joins >= flood_sent * 99 / 100,
        "kernel accounted for {dropped} dropped + {admitted_joins} joins of {flood_sent} flood packets"
    );
    assert!(k("unknown_session") >= flood_sent / 3 * 9 / 10);
    assert!(k("join_rate_limited") > 0);
    // Userspace saw no media from unknown sources and no junk, and only the joins the
    // bucket let through (burst 40 + 20/s, plus the 4 legitimate joins).
    assert_eq!(s.drop_count(DropReason::UnknownSession), 0);
    assert_eq!(s.drop_count(DropReason::NotRelayed), 0);
    assert!(s.control_in <= 4 + 40 + 20 * (SECONDS + 2) + 16, "control messages reaching userspace: {}", s.control_in);
}
