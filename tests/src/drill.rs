//! Clients for drills: in-process publishers and receivers (`relay::client`) that keep their
//! sessions alive with [`Client::poll_session`] alone, so they join again by themselves after
//! a relay restart, and receivers that check every packet: SRTP auth and replay (the client),
//! the room's tag in the payload, the publisher's packet number (never twice), and the
//! session generation it arrived in. Used by the restart drill and the chaos drill.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay::client::{write_rtp_header, Client, ClientConfig, Event, Transmit};
use relay::ids::RoomId;
use relay::srtp;

use crate::Relayd;

/// A room and what its receivers check against.
pub struct Room {
    pub app: u32,
    pub secret: &'static str,
    pub room: u32,
    /// Carried in every payload of the in-process publisher (payload bytes 0..4).
    pub tag: u32,
    /// The SSRCs its publisher declared (each rejoin adds one).
    pub ssrcs: Mutex<Vec<u32>>,
}

/// What one receiver saw.
#[derive(Default)]
pub struct Seen {
    /// Arrival of each verified packet, with the receiver's session generation (0 for
    /// the first session, +1 per rejoin).
    pub arrivals: Vec<(Instant, u64)>,
    pub generation: u64,
    /// SSRCs media came from.
    pub ssrcs: HashSet<u32>,
    /// The publisher's packet numbers seen.
    pub numbers: HashSet<u64>,
    pub duplicates: u64,
    pub foreign: u64,
    pub auth_failed: u64,
    pub replayed: u64,
    pub other_errors: u64,
}

impl Seen {
    /// Panics unless every packet passed its checks (no duplicate, foreign, unauthentic or
    /// replayed packet, no other error) and came from an SSRC its room declared.
    pub fn assert_clean(&self, declared: &[u32], what: &str) {
        let bad = (self.duplicates, self.foreign, self.auth_failed, self.replayed, self.other_errors);
        assert_eq!(bad, (0, 0, 0, 0, 0), "{what}: (duplicates, foreign, auth failed, replayed, other errors)");
        assert!(self.ssrcs.iter().all(|x| declared.contains(x)), "{what}: media from an SSRC not of this room");
    }

    /// The longest time between two verified packets (or from `from` to the first, or from
    /// the last to `to`) within `from..to`.
    pub fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut worst = Duration::ZERO;
        for (t, _) in self.arrivals.iter().filter(|(t, _)| *t >= from && *t <= to) {
            worst = worst.max(t.saturating_duration_since(last));
            last = *t;
        }
        worst.max(to.saturating_duration_since(last))
    }
}

/// What every client thread shares with the drill.
pub struct Shared {
    pub stop: AtomicBool,
}

pub struct ClientThread {
    pub rejoining: Arc<AtomicBool>,
    pub seen: Option<Arc<Mutex<Seen>>>,
    pub room: usize,
    pub handle: std::thread::JoinHandle<()>,
}

pub fn config(relay: &Relayd, r: &Room, user: &str, ssrc: Option<u32>) -> ClientConfig {
    relay.client_config(r.app, r.secret, user, RoomId::Num(r.room), ssrc)
}

/// Joins (the first time) from `sock`: a fresh join every 250 ms for up to 10 s.
pub fn first_join(c: &mut Client, sock: &UdpSocket, epoch: Instant) {
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    sock.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    while Instant::now() < deadline {
        let n = c.join(&mut buf).unwrap();
        sock.send(&buf[..n]).unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            match c.handle_at(ms(epoch), &mut buf[..n]) {
                Event::Joined { .. } => return,
                Event::Refused { code, detail } => panic!("join refused: {code:?} {detail}"),
                Event::Cookie => {
                    let n = c.join(&mut buf).unwrap();
                    sock.send(&buf[..n]).unwrap();
                }
                _ => {}
            }
        }
    }
    panic!("no answer to the first join");
}

pub fn ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Keepalives and rejoins: sends what [`Client::poll_session`] wants sent.
pub fn poll(c: &mut Client, sock: &UdpSocket, epoch: Instant, buf: &mut [u8]) {
    if let Some(Transmit::Keepalive(n) | Transmit::Join(n)) =
        c.poll_session(ms(epoch), relay::time::unix_now_ms(), buf).unwrap()
    {
        let _ = sock.send(&buf[..n]);
    }
}

/// An in-process publisher in `rooms[room]` on `sock`, sending `pps` tagged packets a second
/// and joining again by itself whenever its session is lost.
pub fn spawn_publisher(
    relay: &Relayd,
    sock: UdpSocket,
    rooms: &Arc<Vec<Room>>,
    room: usize,
    pps: u64,
    shared: &Arc<Shared>,
) -> ClientThread {
    let r = &rooms[room];
    let ssrc = 0x1000 * (room as u32 + 1) + 1;
    r.ssrcs.lock().unwrap().push(ssrc);
    let mut c = Client::new(config(relay, r, "publisher", Some(ssrc))).unwrap();
    sock.connect(relay.addr).unwrap();
    let (rooms, shared) = (rooms.clone(), shared.clone());
    let rejoining = Arc::new(AtomicBool::new(false));
    let flag = rejoining.clone();
    let handle = std::thread::spawn(move || {
        let epoch = Instant::now();
        first_join(&mut c, &sock, epoch);
        let r = &rooms[room];
        let mut buf = [0u8; 2048];
        let mut number = 0u64;
        let mut seq = 0u16;
        let every = Duration::from_micros(1_000_000 / pps);
        let mut next = Instant::now();
        while !shared.stop.load(Relaxed) {
            poll(&mut c, &sock, epoch, &mut buf);
            flag.store(c.is_rejoining(), Relaxed);
            let now = Instant::now();
            match (c.session(), c.config().ssrcs.first().map(|d| d.ssrc.get())) {
                (Some(_), Some(ssrc)) if now >= next => {
                    let h = write_rtp_header(&mut buf, 96, seq, u32::from(seq) * 3000, ssrc);
                    buf[h..h + 4].copy_from_slice(&r.tag.to_be_bytes());
                    buf[h + 4..h + 12].copy_from_slice(&number.to_be_bytes());
                    buf[h + 12..h + 100].fill(0x33);
                    let n = c.protect_rtp(&mut buf, h + 100).unwrap();
                    let _ = sock.send(&buf[..n]);
                    number += 1;
                    seq = seq.wrapping_add(1);
                    next += every;
                }
                (Some(_), _) => {}
                // Lost: nothing is sent, and no backlog builds up.
                (None, _) => next = now,
            }
            let wait = next.saturating_duration_since(Instant::now()).clamp(Duration::from_micros(200), every);
            sock.set_read_timeout(Some(wait)).unwrap();
            while let Ok(n) = sock.recv(&mut buf) {
                match c.handle_at(ms(epoch), &mut buf[..n]) {
                    Event::Rejoined { .. } => {
                        // Receivers learn the fresh SSRC before its first packet is sent.
                        let ssrc = c.config().ssrcs[0].ssrc.get();
                        r.ssrcs.lock().unwrap().push(ssrc);
                    }
                    Event::Cookie if c.is_rejoining() => {
                        let n = c.join(&mut buf).unwrap();
                        let _ = sock.send(&buf[..n]);
                    }
                    _ => {}
                }
                sock.set_read_timeout(Some(Duration::from_micros(200))).unwrap();
            }
        }
    });
    ClientThread { rejoining, seen: None, room, handle }
}

/// An in-process receiver in `rooms[room]` on `sock`, checking every packet (see [`Seen`])
/// and joining again by itself whenever its session is lost.
pub fn spawn_receiver(
    relay: &Relayd,
    sock: UdpSocket,
    rooms: &Arc<Vec<Room>>,
    room: usize,
    user: &str,
    shared: &Arc<Shared>,
) -> ClientThread {
    let mut c = Client::new(config(relay, &rooms[room], user, None)).unwrap();
    sock.connect(relay.addr).unwrap();
    let (rooms, shared) = (rooms.clone(), shared.clone());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let rejoining = Arc::new(AtomicBool::new(false));
    let (log, flag) = (seen.clone(), rejoining.clone());
    let handle = std::thread::spawn(move || {
        let epoch = Instant::now();
        first_join(&mut c, &sock, epoch);
        let r = &rooms[room];
        let mut buf = [0u8; 2048];
        let mut out = [0u8; 2048];
        sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        while !shared.stop.load(Relaxed) {
            poll(&mut c, &sock, epoch, &mut out);
            flag.store(c.is_rejoining(), Relaxed);
            let Ok(n) = sock.recv(&mut buf) else { continue };
            let ev = c.handle_at(ms(epoch), &mut buf[..n]);
            let at = Instant::now();
            let mut s = log.lock().unwrap();
            match ev {
                Event::Media { ssrc, rtcp: false, len, .. } => {
                    let g = s.generation;
                    s.arrivals.push((at, g));
                    s.ssrcs.insert(ssrc);
                    let p = &buf[12..len];
                    // In-process publishers tag their payloads; relay-client's payload is
                    // a timestamp (0..8), its packet number (8..12) and 0x5a filler.
                    let number = if r.tag != 0 {
                        if p.len() < 12 || p[..4] != r.tag.to_be_bytes() {
                            s.foreign += 1;
                            continue;
                        }
                        u64::from_be_bytes(p[4..12].try_into().unwrap())
                    } else {
                        if p.len() < 13 || p[12..].iter().any(|&b| b != 0x5a) {
                            s.foreign += 1;
                            continue;
                        }
                        u64::from(u32::from_be_bytes(p[8..12].try_into().unwrap()))
                    };
                    if !s.numbers.insert(number) {
                        s.duplicates += 1;
                    }
                }
                Event::MediaError(srtp::Error::AuthFailed) => s.auth_failed += 1,
                Event::MediaError(srtp::Error::Replayed | srtp::Error::TooOld) => s.replayed += 1,
                Event::MediaError(_) => s.other_errors += 1,
                Event::Rejoined { .. } => s.generation += 1,
                Event::Cookie if c.is_rejoining() => {
                    drop(s);
                    let n = c.join(&mut out).unwrap();
                    let _ = sock.send(&out[..n]);
                }
                _ => {}
            }
        }
    });
    ClientThread { rejoining, seen: Some(seen), room, handle }
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Each receiver's next session generation (the one a rejoin will start).
pub fn next_generations(clients: &[ClientThread]) -> Vec<u64> {
    clients.iter().filter_map(|c| c.seen.as_ref()).map(|s| s.lock().unwrap().generation + 1).collect()
}

/// Waits until every receiver got `n` packets of its session `from[i]` or a later one;
/// returns, per receiver, the arrival of the first of them.
pub fn wait_resumed(clients: &[ClientThread], from: &[u64], n: usize) -> Vec<Instant> {
    let receivers: Vec<_> = clients.iter().filter_map(|c| c.seen.as_ref()).collect();
    let mut first = vec![None; receivers.len()];
    wait_until(&format!("{n} packets of a new session at every receiver"), Duration::from_secs(15), || {
        receivers.iter().zip(from).zip(&mut first).all(|((s, &from), f)| {
            let s = s.lock().unwrap();
            let new: Vec<_> = s.arrivals.iter().filter(|(_, g)| *g >= from).collect();
            *f = new.first().map(|(t, _)| *t);
            new.len() >= n
        })
    });
    first.into_iter().map(|f| f.expect("resumed")).collect()
}

/// `median [min–max] ms (n = ...)` of `v` (sorted in place).
pub fn summary(v: &mut [Duration]) -> String {
    v.sort_unstable();
    let ms = |d: Duration| d.as_millis();
    format!("{} [{}–{}] ms (n = {})", ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]), v.len())
}
