//! Many joins in flight against one relayd, each from its own UDP socket: the load of the
//! `scale` and `join-storm` scenarios ([`crate::scale`]).
//!
//! Every join comes from a source address of its own (relayd keys sessions by 5-tuple and
//! refuses a join from an address that holds another user's session). Addresses are handed
//! out in order from 127.100.0.0 upwards ([`Joiner::sources_from`] chooses another first IP,
//! e.g. in a namespace), [`PORTS_PER_IP`] ports each, so a run of 100k
//! sessions needs no ephemeral ports and never reuses an address. A socket lives only while
//! its join is in flight: relayd keeps the session after the socket closes (the bench sends
//! no media and relayd runs with a long session timeout), so open descriptors stay bounded
//! by the window, not by the session count.
//!
//! Joins are v2 (Noise NK to relayd's key). The client side is kept cheap so relayd, not
//! the bench, is what gets measured: one ephemeral key for the whole run with its `es`
//! computed once ([`relay::noise::SharedEphemeral`]; relayd still runs both of its
//! Diffie-Hellmans and a key generation per join), UserSigs minted once per user name (users
//! are named by their index in the room, so the same names recur across rooms), and an
//! answer is decrypted (one more DH) only when it is a refusal (a refusal never has the
//! length of a "joined" answer) or on a sample of joins ([`Joiner::verify_every`]), each
//! failure an error.
//!
//! Invariants: every join started ends as exactly one [`Done`] (answered, refused or timed
//! out); a retransmission is a fresh handshake from the same address (relayd refuses a
//! copy as a replay), so relayd sees the same (room, user, address) and at most replaces
//! the session with a new one. A cookie reply is answered at once with a join that carries
//! it.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use relay::handshake::KeyPair;
use relay::identity::RelayKey;
use relay::ids::{RoomId, Ssrc};
use relay::noise::{Initiator, SharedEphemeral};
use relay::proto::v2::{self, COOKIE_LEN};
use relay::proto::{DeclaredSsrc, ErrorCode, JoinError, MsgType, StreamKind, MAX_SSRCS};
use relay::srtp::Profile;

/// Ports used per source IP (20000..60000).
pub const PORTS_PER_IP: u32 = 40_000;
const FIRST_PORT: u32 = 20_000;
/// The first source IP: 127.100.0.0 (all of 127.0.0.0/8 is local on loopback).
const FIRST_IP: u32 = u32::from_be_bytes([127, 100, 0, 0]);

/// Source IPs a run of `joins` joins uses (if no address has to be skipped).
pub fn ips_needed(joins: u32) -> u32 {
    joins.div_ceil(PORTS_PER_IP).max(1)
}

/// How one join ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// join-ok.
    Ok,
    /// join-error with this code (`None`: a code this bench does not know) and detail.
    Refused {
        /// The code.
        code: Option<ErrorCode>,
        /// The raw code.
        raw: u16,
        /// relayd's detail text.
        detail: String,
    },
    /// No answer after every try.
    TimedOut,
}

/// One finished join.
#[derive(Debug, Clone)]
pub struct Done {
    /// The room it joined.
    pub room: u32,
    /// How it ended.
    pub answer: Answer,
    /// From the first send to the answer (or to giving up).
    pub latency: Duration,
    /// When it ended.
    pub at: Instant,
    /// Sends, retransmissions included.
    pub sends: u32,
}

/// Retransmission policy: send up to `tries` times, `every` apart; a join unanswered
/// `every` after its last send has timed out.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Interval between sends, and the wait after the last one.
    pub every: Duration,
    /// Sends in all (at least 1).
    pub tries: u32,
}

struct Pending {
    sock: UdpSocket,
    user: u32,
    /// The last join's handshake, and its mac1 (a cookie reply's associated data).
    init: Option<(Initiator, [u8; relay::proto::MAC_LEN])>,
    cookie: Option<[u8; COOKIE_LEN]>,
    room: u32,
    first: Instant,
    sends: u32,
    generation: u64,
    verify: bool,
}

/// The join pipeline of one run (one fresh relayd).
pub struct Joiner {
    relay: SocketAddr,
    relay_key: RelayKey,
    app: u32,
    secret: Vec<u8>,
    profile: Profile,
    ssrcs_per_member: usize,
    key: SharedEphemeral,
    usersigs: Vec<String>,
    poll: Poll,
    events: Events,
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
    /// (deadline, slot, generation) in send order; stale entries are skipped.
    deadlines: VecDeque<(Instant, usize, u64)>,
    generation: u64,
    first_ip: u32,
    next_addr: u32,
    started: u64,
    retry: Retry,
    /// Check the key confirmation of every n-th join (0: never).
    pub verify_every: u64,
    /// Key confirmations checked so far.
    pub verified: u64,
    /// Sockets that could not be bound (address taken by another program): skipped.
    pub bind_skips: u64,
    /// Cookie replies received (relayd was under load).
    pub cookies: u64,
}

impl Joiner {
    /// A pipeline of at most `window` joins in flight toward `relay`, for app `app` with its
    /// `secret`; every member declares `ssrcs_per_member` SSRCs (audio first, then video).
    pub fn new(
        relay: SocketAddr,
        relay_key: RelayKey,
        app: u32,
        secret: &str,
        ssrcs_per_member: usize,
        window: usize,
        retry: Retry,
    ) -> Result<Self> {
        if ssrcs_per_member > MAX_SSRCS {
            bail!("at most {MAX_SSRCS} SSRCs per member");
        }
        if window == 0 || retry.tries == 0 {
            bail!("the window and the tries must be at least 1");
        }
        Ok(Self {
            relay,
            relay_key,
            app,
            secret: secret.as_bytes().to_vec(),
            profile: Profile::AesCm128HmacSha1_80,
            ssrcs_per_member,
            key: SharedEphemeral::new(KeyPair::generate().secret_bytes(), relay_key.bytes())
                .context("relayd's key is of low order")?,
            usersigs: Vec::new(),
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            slots: (0..window).map(|_| None).collect(),
            free: (0..window).rev().collect(),
            deadlines: VecDeque::new(),
            generation: 0,
            first_ip: FIRST_IP,
            next_addr: 0,
            started: 0,
            retry,
            verify_every: 64,
            verified: 0,
            bind_skips: 0,
            cookies: 0,
        })
    }

    /// Hands out source addresses from `ip` upwards instead of 127.100.0.0; each of
    /// [`ips_needed`] addresses from it must be local.
    pub fn sources_from(mut self, ip: Ipv4Addr) -> Self {
        self.first_ip = ip.into();
        self
    }

    /// Joins in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether another join can start now.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    fn usersig(&mut self, user: u32) -> &str {
        while self.usersigs.len() <= user as usize {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let name = user_name(self.usersigs.len() as u32);
            self.usersigs.push(relay::usersig::mint(&self.secret, self.app.into(), &name, 86_400, now, None));
        }
        &self.usersigs[user as usize]
    }

    /// A socket on the next free source address.
    fn bind_next(&mut self) -> Result<UdpSocket> {
        for _ in 0..1000 {
            let i = self.next_addr;
            self.next_addr = self.next_addr.checked_add(1).context("source addresses exhausted")?;
            let ip = Ipv4Addr::from(self.first_ip + i / PORTS_PER_IP);
            let port = (FIRST_PORT + i % PORTS_PER_IP) as u16;
            match std::net::UdpSocket::bind(SocketAddrV4::new(ip, port)) {
                Ok(s) => {
                    s.set_nonblocking(true)?;
                    s.connect(self.relay)?;
                    return Ok(UdpSocket::from_std(s));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => self.bind_skips += 1,
                Err(e) => return Err(e).with_context(|| format!("binding {ip}:{port}")),
            }
        }
        bail!("1000 source addresses in a row are taken")
    }

    /// Starts the join of user number `user` into room `room`. Needs
    /// [`has_room`](Self::has_room).
    pub fn start(&mut self, room: u32, user: u32) -> Result<()> {
        let slot = self.free.pop().context("the join window is full")?;
        let mut sock = match self.bind_next() {
            Ok(s) => s,
            Err(e) => {
                self.free.push(slot);
                return Err(e);
            }
        };
        self.usersig(user);
        self.poll.registry().register(&mut sock, Token(slot), Interest::READABLE)?;
        let now = Instant::now();
        self.generation += 1;
        self.started += 1;
        let verify = self.verify_every > 0 && self.started % self.verify_every == 1;
        let p = Pending {
            sock,
            user,
            init: None,
            cookie: None,
            room,
            first: now,
            sends: 0,
            generation: self.generation,
            verify,
        };
        self.slots[slot] = Some(p);
        self.send(slot, now)
    }

    /// A fresh join of the slot's member (a new handshake each time), carrying its cookie.
    fn join_bytes(&mut self, slot: usize, out: &mut [u8]) -> Result<usize> {
        let p = self.slots[slot].as_ref().expect("a live slot");
        let (room, user, cookie) = (p.room, p.user, p.cookie);
        let mut ssrcs = [None; MAX_SSRCS];
        for (j, s) in ssrcs.iter_mut().take(self.ssrcs_per_member).enumerate() {
            // Unique in the room: user u owns u * n + 1 ..= u * n + n.
            let v = user * self.ssrcs_per_member as u32 + j as u32 + 1;
            let kind = if j == 0 { StreamKind::Audio } else { StreamKind::Video };
            *s = Some(DeclaredSsrc { ssrc: Ssrc::new(v)?, kind });
        }
        let payload = v2::JoinPayload {
            timestamp_ms: relay::time::unix_now_ms(),
            sdkappid: self.app,
            profile: self.profile.id(),
            room: RoomId::Num(room),
            ssrcs,
            usersig: &self.usersigs[user as usize],
            private_map_key: None,
        };
        let (init, n) = v2::write_join_shared(&self.relay_key, &self.key, &payload, cookie.as_ref(), out)?;
        let mac1 = v2::JoinFrame::new_checked(&out[..n])?.mac1();
        self.slots[slot].as_mut().expect("a live slot").init = Some((init, mac1));
        Ok(n)
    }

    fn send(&mut self, slot: usize, now: Instant) -> Result<()> {
        let mut buf = [0u8; relay::proto::MAX_LEN];
        let n = self.join_bytes(slot, &mut buf)?;
        let p = self.slots[slot].as_mut().expect("sending from a live slot");
        p.sends += 1;
        match p.sock.send(&buf[..n]) {
            Ok(_) => {}
            // A full socket buffer loses this send; the retry policy covers it like a loss.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // relayd's socket is gone (ICMP port unreachable): it died.
            Err(e) => return Err(e).context("sending a join (is relayd still running?)"),
        }
        self.deadlines.push_back((now + self.retry.every, slot, p.generation));
        Ok(())
    }

    fn finish(&mut self, slot: usize, answer: Answer, now: Instant, out: &mut Vec<Done>) -> Result<()> {
        let mut p = self.slots[slot].take().expect("finishing a live slot");
        self.poll.registry().deregister(&mut p.sock)?;
        self.free.push(slot);
        out.push(Done { room: p.room, answer, latency: now - p.first, at: now, sends: p.sends });
        Ok(())
    }

    /// Waits up to `timeout` for answers and handles retransmissions and timeouts; appends
    /// every join that ended to `out`.
    pub fn poll(&mut self, timeout: Duration, out: &mut Vec<Done>) -> Result<()> {
        let now = Instant::now();
        let wait = match self.deadlines.front() {
            Some(&(d, _, _)) => timeout.min(d.saturating_duration_since(now)),
            None => timeout,
        };
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        let mut buf = [0u8; 2048];
        for slot in ready {
            // Edge-triggered: read until empty; the first answer ends the join.
            while let Some(p) = self.slots[slot].as_mut() {
                let n = match p.sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ICMP errors from an earlier send; the retry policy handles the join.
                    Err(_) => continue,
                };
                let datagram = &mut buf[..n];
                let answer = match relay::proto::parse_any_header(datagram) {
                    Ok((relay::proto::VERSION_2, MsgType::Cookie, _)) => {
                        let Some((_, mac1)) = p.init.as_ref() else { continue };
                        let Ok(cookie) = v2::read_cookie(&self.relay_key, mac1, datagram) else { continue };
                        p.cookie = Some(cookie);
                        self.cookies += 1;
                        self.send(slot, Instant::now())?;
                        continue;
                    }
                    Ok((relay::proto::VERSION_2, MsgType::JoinOk, _)) => {
                        let Some((init, _)) = p.init.as_ref() else { continue };
                        if n == v2::ANSWER_OK_LEN && !p.verify {
                            Answer::Ok
                        } else {
                            // Only the answer to this slot's last join decrypts; one to an
                            // earlier attempt of the same join is as good (same member).
                            let Ok((a, _)) = v2::read_answer(init, datagram) else { continue };
                            if p.verify {
                                self.verified += 1;
                            }
                            match a {
                                v2::AnswerPayload::Joined { .. } => Answer::Ok,
                                v2::AnswerPayload::Refused { code, detail } => Answer::Refused {
                                    code: ErrorCode::from_u16(code),
                                    raw: code,
                                    detail: detail.to_owned(),
                                },
                            }
                        }
                    }
                    Ok((_, MsgType::JoinError, _)) => {
                        let e = JoinError::parse(datagram).context("relayd sent a malformed join-error")?;
                        Answer::Refused { code: e.code, raw: e.raw_code, detail: e.detail.to_owned() }
                    }
                    _ => continue,
                };
                self.finish(slot, answer, Instant::now(), out)?;
            }
        }
        let now = Instant::now();
        while let Some(&(deadline, slot, generation)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(p) = self.slots[slot].as_ref() else { continue };
            if p.generation != generation {
                continue;
            }
            if p.sends >= self.retry.tries {
                self.finish(slot, Answer::TimedOut, now, out)?;
            } else {
                self.send(slot, now)?;
            }
        }
        Ok(())
    }

    /// Polls until nothing is in flight.
    pub fn drain(&mut self, out: &mut Vec<Done>) -> Result<()> {
        while self.in_flight() > 0 {
            crate::procs::check_interrupted()?;
            self.poll(Duration::from_millis(50), out)?;
        }
        Ok(())
    }
}

/// The user id of user number `n` of a room.
pub fn user_name(n: u32) -> String {
    format!("bench-user-{n}")
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Result<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no 'Max open files' line")?;
    let soft = line.split_whitespace().nth(3).context("no soft limit")?;
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    soft.parse().with_context(|| format!("soft limit {soft:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             7823                 7823                 processes \n\
                    Max open files            20000                40000                files     \n";
        assert_eq!(parse_open_files_limit(text).unwrap(), 20_000);
        assert!(parse_open_files_limit("Max processes 1 1 processes\n").is_err());
        assert!(open_files_limit().unwrap() >= 16, "this process's own limit is readable");
    }

    /// A fake relay on loopback (with a static key of its own) answers each join once; the
    /// joiner must see every answer, one per join, including a refusal, and time out the one
    /// the fake ignores.
    #[test]
    fn every_join_ends_once() {
        let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = relay.local_addr().unwrap();
        let key = relay::identity::StaticKey::from_secret([4; 32]);
        let public = key.public();
        let fake = std::thread::spawn(move || {
            relay.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
            let mut buf = [0u8; 2048];
            let mut seen = 0;
            while let Ok((n, src)) = relay.recv_from(&mut buf) {
                let frame = v2::JoinFrame::new_checked(&buf[..n]).expect("a v2 join");
                assert!(frame.mac1_ok(&v2::mac1_key(&key.public())));
                let mut msg = buf[frame.noise_range()].to_vec();
                let (resp, len) = relay::noise::Responder::read_first(v2::PROLOGUE, key.secret(), &mut msg)
                    .expect("a join to this key");
                let payload = v2::JoinPayload::parse(&msg[relay::noise::DH_LEN..relay::noise::DH_LEN + len]).unwrap();
                seen += 1;
                let RoomId::Num(room) = payload.room else { panic!("numeric rooms") };
                let answer = match room {
                    1 => v2::AnswerPayload::Joined { session: 7, keepalive_secs: 5, timeout_secs: 30 },
                    2 => v2::AnswerPayload::Refused { code: ErrorCode::RoomQuota as u16, detail: "full" },
                    _ => continue,
                };
                let mut out = [0u8; 256];
                let (len, _) = v2::write_answer(resp, [8; 32], &answer, &mut out, n).unwrap();
                relay.send_to(&out[..len], src).unwrap();
            }
            seen
        });
        let retry = Retry { every: Duration::from_millis(200), tries: 2 };
        let mut j = Joiner::new(addr, public, 1_400_000_001, "0123456789abcdef0123", 2, 4, retry).unwrap();
        j.verify_every = 0;
        for room in 1..=3 {
            j.start(room, 0).unwrap();
        }
        let mut done = Vec::new();
        j.drain(&mut done).unwrap();
        assert_eq!(done.len(), 3);
        let by_tag = |t: u32| done.iter().find(|d| d.room == t).unwrap();
        assert_eq!(by_tag(1).answer, Answer::Ok);
        assert!(matches!(by_tag(2).answer, Answer::Refused { code: Some(ErrorCode::RoomQuota), .. }));
        assert_eq!(by_tag(3).answer, Answer::TimedOut);
        assert_eq!(by_tag(3).sends, 2, "the unanswered join was retransmitted once");
        assert_eq!(j.in_flight(), 0);
        assert_eq!(fake.join().unwrap(), 4, "three joins and one retransmission reached the fake");
    }
}
