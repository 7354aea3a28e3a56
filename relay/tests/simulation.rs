//! Deterministic simulations of the whole relay (registry + engine) with fake clients, a
//! virtual clock and seeded keys: no sockets, no threads, no wall time.

use std::net::SocketAddr;

use relay::client::{write_rtcp_rr, write_rtp_header, Client, ClientConfig, Event};
use relay::config::{Config, Validated};
use relay::engine::{TxSink, Verdict};
use relay::handshake::KeyPair;
use relay::ids::{RoomId, Ssrc};
use relay::node::{Node, NodeResult};
use relay::proto::{DeclaredSsrc, ErrorCode, StreamKind};
use relay::registry::{Now, Outcome, Registry};
use relay::srtp::Profile;
use relay::stats::DropReason;
use relay::usersig;

const APP: u32 = 1_400_000_001;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const T0: u64 = 1_700_000_000;

#[derive(Default)]
struct VecSink {
    scratch: Vec<u8>,
    out: Vec<(SocketAddr, Vec<u8>)>,
}

impl TxSink for VecSink {
    type Dest = SocketAddr;
    fn buffer(&mut self) -> Option<&mut [u8]> {
        self.scratch.resize(2048, 0);
        Some(&mut self.scratch)
    }
    fn commit(&mut self, dst: &mut SocketAddr, len: usize) -> bool {
        self.out.push((*dst, self.scratch[..len].to_vec()));
        true
    }
}

/// Datagrams the relay emitted: destination and bytes.
type Emitted = Vec<(SocketAddr, Vec<u8>)>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn key(&mut self) -> KeyPair {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        KeyPair::from_bytes(b)
    }
}

fn config(extra: &str) -> Validated {
    Config::parse(&format!(
        r#"listen = "127.0.0.1:7000"
workers = 1
[timeouts]
keepalive_secs = 5
session_secs = 30
[[app]]
sdkappid = {APP}
secret = "{SECRET}"
{extra}"#
    ))
    .unwrap()
    .validate(None)
    .unwrap()
}

struct Sim {
    node: Node,
    now: Now,
    rng: Rng,
}

struct Fake {
    addr: SocketAddr,
    client: Client,
    seq: u16,
}

impl Sim {
    fn new(cfg: &Validated, seed: u64) -> Self {
        let mut relay_rng = Rng(seed ^ 0xdead_beef);
        let reg = Registry::with_rng(cfg, Box::new(move || relay_rng.key()));
        Self { node: Node::new(reg), now: Now { mono_ms: 0, unix_secs: T0 }, rng: Rng(seed) }
    }

    fn advance(&mut self, ms: u64) {
        self.now.mono_ms += ms;
        self.now.unix_secs = T0 + self.now.mono_ms / 1000;
    }

    fn fake(&mut self, port: u16, user: &str, room: RoomId, ssrcs: &[(u32, StreamKind)], profile: Profile) -> Fake {
        let cfg = ClientConfig {
            sdkappid: APP,
            room,
            usersig: usersig::mint(SECRET.as_bytes(), APP.into(), user, 86400, T0, None),
            private_map_key: None,
            profile,
            ssrcs: ssrcs.iter().map(|&(s, kind)| DeclaredSsrc { ssrc: Ssrc::new(s).unwrap(), kind }).collect(),
        };
        Fake {
            addr: format!("198.18.0.1:{port}").parse().unwrap(),
            client: Client::with_key(cfg, self.rng.key()).unwrap(),
            seq: 65_530,
        }
    }

    /// Sends a datagram from `from`; returns the result and what the relay emitted.
    fn send(&mut self, from: SocketAddr, bytes: &[u8]) -> (NodeResult, Emitted) {
        let mut buf = bytes.to_vec();
        let mut sink = VecSink::default();
        let r = self.node.handle(self.now, from, &mut buf, &mut sink);
        (r, sink.out)
    }

    fn join(&mut self, f: &mut Fake) -> Result<u64, ErrorCode> {
        let mut buf = [0u8; 1500];
        let n = f.client.join(&mut buf).unwrap();
        let (r, out) = self.send(f.addr, &buf[..n]);
        assert_eq!(out.len(), 1, "a join is always answered");
        assert!(out[0].1.len() <= n, "no amplification");
        let mut reply = out[0].1.clone();
        match f.client.handle(&mut reply) {
            Event::Joined { session } => {
                assert_eq!(r, NodeResult::Control(Outcome::Joined(relay::ids::SessionId(session))));
                Ok(session)
            }
            Event::Refused { code, .. } => Err(code.unwrap()),
            e => panic!("unexpected {e:?}"),
        }
    }

    fn rtp(&mut self, f: &mut Fake, ssrc: u32, payload: &[u8]) -> (NodeResult, Emitted, Vec<u8>) {
        let mut buf = [0u8; 2048];
        let h = write_rtp_header(&mut buf, 96, f.seq, 0, ssrc);
        f.seq = f.seq.wrapping_add(1);
        buf[h..h + payload.len()].copy_from_slice(payload);
        let n = f.client.protect_rtp(&mut buf, h + payload.len()).unwrap();
        let (r, out) = self.send(f.addr, &buf[..n]);
        (r, out, buf[..n].to_vec())
    }
}

/// Bytes from spaced hex (RTCP packets in tests).
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn deliver(f: &mut Fake, out: &[(SocketAddr, Vec<u8>)]) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|(dst, _)| *dst == f.addr)
        .map(|(_, b)| {
            let mut b = b.clone();
            match f.client.handle(&mut b) {
                Event::Media { len, .. } => b[..len].to_vec(),
                e => panic!("receiver could not decrypt: {e:?}"),
            }
        })
        .collect()
}

#[test]
fn fan_out_reencrypts_per_receiver_across_roc_wrap_for_every_profile() {
    for profile in Profile::ALL {
        let cfg = config("");
        let mut sim = Sim::new(&cfg, 7);
        let mut a = sim.fake(1, "a", RoomId::Num(1), &[(11, StreamKind::Audio)], profile);
        let mut b = sim.fake(2, "b", RoomId::Num(1), &[(22, StreamKind::Video)], profile);
        let mut c = sim.fake(3, "c", RoomId::Num(1), &[], profile);
        for f in [&mut a, &mut b, &mut c] {
            sim.join(f).unwrap();
        }
        // 20 packets starting at seq 65530: the ROC wraps on the way.
        for i in 0..20u8 {
            let (r, out, wire) = sim.rtp(&mut a, 11, &[i; 100]);
            assert_eq!(r, NodeResult::Media(Verdict::Forwarded(2)), "{profile:?}");
            let to_b = deliver(&mut b, &out);
            let to_c = deliver(&mut c, &out);
            assert_eq!(to_b.len(), 1);
            assert_eq!(to_b, to_c, "same plaintext to both");
            assert_eq!(&to_b[0][12..], &[i; 100]);
            // Different keys per receiver: the ciphertexts differ.
            assert_ne!(out[0].1, out[1].1);
            assert_ne!(out[0].1, wire);
        }
    }
}

#[test]
fn srtcp_is_relayed_and_reencrypted() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 8);
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[(11, StreamKind::Rtcp)], Profile::AesCm128HmacSha1_80);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[(22, StreamKind::Video)], Profile::AesCm128HmacSha1_80);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    // An RR without report blocks is about no stream: it goes nowhere.
    let mut buf = [0u8; 256];
    let n = write_rtcp_rr(&mut buf, 11);
    let n = a.client.protect_rtcp(&mut buf, n).unwrap();
    let (r, out) = sim.send(a.addr, &buf[..n]);
    assert_eq!(r, NodeResult::Media(Verdict::Dropped(DropReason::NoReceivers)));
    assert!(out.is_empty());
    // One with a block about b's stream goes to b, re-encrypted.
    let rr = hex("81c90007 0000000b 00000016 01000002 00000100 00000003 00000000 00000000");
    buf[..rr.len()].copy_from_slice(&rr);
    let n = a.client.protect_rtcp(&mut buf, rr.len()).unwrap();
    let wire = buf[..n].to_vec();
    let (r, out) = sim.send(a.addr, &wire);
    assert_eq!(r, NodeResult::Media(Verdict::Forwarded(1)));
    assert_ne!(out[0].1, wire);
    let mut pkt = out[0].1.clone();
    match b.client.handle(&mut pkt) {
        Event::Media { ssrc: 11, rtcp: true, len: 32, index: 1 } => assert_eq!(pkt[..32], rr[..]),
        e => panic!("{e:?}"),
    }
    // An RTCP-only SSRC may not carry RTP.
    let (r, _, _) = sim.rtp(&mut a, 11, b"no");
    assert_eq!(r, NodeResult::Media(Verdict::Dropped(DropReason::UnknownSsrc)));
    // SRTCP replay is caught too.
    let (r, _) = sim.send(a.addr, &wire);
    assert_eq!(r, NodeResult::Media(Verdict::Dropped(DropReason::Replayed)));
}

#[test]
fn quotas_are_enforced_with_distinct_codes() {
    let cfg = config("[app.quotas]\nmax_rooms = 2\nmax_members_per_room = 2\nmax_sessions = 5\n");
    let mut sim = Sim::new(&cfg, 9);
    let p = Profile::AesCm128HmacSha1_80;
    let mut port = 100;
    let mut next = |sim: &mut Sim, user: &str, room: u32| {
        port += 1;
        sim.fake(port, user, RoomId::Num(room), &[], p)
    };
    for (u, r) in [("a", 1), ("b", 1), ("c", 2), ("d", 2)] {
        let mut f = next(&mut sim, u, r);
        sim.join(&mut f).unwrap();
    }
    let mut f = next(&mut sim, "e", 3);
    assert_eq!(sim.join(&mut f), Err(ErrorCode::RoomQuota));
    let mut f = next(&mut sim, "e", 1);
    assert_eq!(sim.join(&mut f), Err(ErrorCode::MemberQuota));

    // A re-join of an existing member is not a new member.
    let mut f = next(&mut sim, "a", 1);
    sim.join(&mut f).unwrap();
    assert_eq!(sim.node.registry.session_count(), 4);

    let cfg = config("[app.quotas]\nmax_rooms = 1\nmax_members_per_room = 10\nmax_sessions = 10\n");
    let mut sim = Sim::new(&cfg, 14);
    let mut alone = sim.fake(500, "solo", RoomId::Num(1), &[], p);
    sim.join(&mut alone).unwrap();
    let mut moved = sim.fake(500, "solo", RoomId::Num(2), &[], p);
    sim.join(&mut moved).unwrap();
    assert_eq!(sim.node.registry.room_count(), 1);
    let mut other = sim.fake(501, "other", RoomId::Num(3), &[], p);
    assert_eq!(sim.join(&mut other), Err(ErrorCode::RoomQuota));

    let cfg = config("[app.quotas]\nmax_rooms = 10\nmax_members_per_room = 10\nmax_sessions = 2\n");
    let mut sim = Sim::new(&cfg, 10);
    for (u, r) in [("a", 1), ("b", 2)] {
        let mut f = next(&mut sim, u, r);
        sim.join(&mut f).unwrap();
    }
    let mut f = next(&mut sim, "c", 3);
    assert_eq!(sim.join(&mut f), Err(ErrorCode::SessionQuota));
}

#[test]
fn profile_and_ssrc_rules() {
    let cfg = config("profiles = [\"AEAD_AES_128_GCM\"]\n");
    let mut sim = Sim::new(&cfg, 11);
    let mut f = sim.fake(1, "a", RoomId::Num(1), &[], Profile::AesCm128HmacSha1_80);
    assert_eq!(sim.join(&mut f), Err(ErrorCode::UnsupportedProfile));
    let mut a = sim.fake(2, "a", RoomId::Num(1), &[(5, StreamKind::Video)], Profile::AeadAes128Gcm);
    sim.join(&mut a).unwrap();
    let mut b = sim.fake(3, "b", RoomId::Num(1), &[(5, StreamKind::Audio)], Profile::AeadAes128Gcm);
    assert_eq!(sim.join(&mut b), Err(ErrorCode::SsrcConflict));
    // The same SSRC in another room is fine.
    let mut c = sim.fake(4, "c", RoomId::Num(2), &[(5, StreamKind::Audio)], Profile::AeadAes128Gcm);
    sim.join(&mut c).unwrap();
}

#[test]
fn virtual_clock_expiry_and_keepalive_counter_replay() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 12);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[(1, StreamKind::Video)], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    let mut ka = [0u8; 64];
    for _ in 0..10 {
        sim.advance(5_000);
        sim.rtp(&mut a, 1, b"media keeps a alive");
        let n = b.client.keepalive(&mut ka).unwrap();
        let (r, out) = sim.send(b.addr, &ka[..n]);
        assert!(matches!(r, NodeResult::Control(Outcome::KeptAlive(_))));
        let mut ack = out[0].1.clone();
        assert_eq!(b.client.handle(&mut ack), Event::KeepaliveAck);
        assert_eq!(sim.node.expire(sim.now), 0);
    }
    // A replayed keepalive is ignored and does not refresh the session.
    let n = b.client.keepalive(&mut ka).unwrap();
    let replay = ka[..n].to_vec();
    sim.send(b.addr, &replay);
    sim.advance(20_000);
    let (r, out) = sim.send(b.addr, &replay);
    assert_eq!(r, NodeResult::Control(Outcome::Ignored));
    assert!(out.is_empty());
    sim.advance(11_000);
    sim.rtp(&mut a, 1, b"a still talks");
    assert_eq!(sim.node.expire(sim.now), 1, "b was silent for 31 s");
    assert_eq!(sim.node.registry.session_count(), 1);
    assert_eq!(sim.node.engine.session_count(), 1);
    // b's next keepalive learns its session is gone.
    let n = b.client.keepalive(&mut ka).unwrap();
    let (_, out) = sim.send(b.addr, &ka[..n]);
    let mut e = out[0].1.clone();
    assert!(matches!(b.client.handle(&mut e), Event::Refused { code: Some(ErrorCode::UnknownSession), .. }));
    sim.advance(31_000);
    assert_eq!(sim.node.expire(sim.now), 1);
    assert_eq!(sim.node.registry.room_count(), 0);
    assert_eq!(sim.node.engine.room_count(), 0);
}

#[test]
fn seeded_random_traffic_never_crosses_rooms() {
    let cfg = config("[app.quotas]\nmax_rooms = 10\nmax_members_per_room = 10\nmax_sessions = 100\n");
    let mut sim = Sim::new(&cfg, 13);
    let p = Profile::AesCm128HmacSha1_80;
    let mut fakes = Vec::new();
    for i in 0..12u32 {
        let room = i % 3 + 1;
        let mut f = sim.fake(1000 + i as u16, &format!("u{i}"), RoomId::Num(room), &[(100 + i, StreamKind::Video)], p);
        sim.join(&mut f).unwrap();
        fakes.push((room, 100 + i, f));
    }
    let mut rng = Rng(99);
    for _ in 0..500 {
        let k = (rng.next() % fakes.len() as u64) as usize;
        let (room, ssrc, _) = (fakes[k].0, fakes[k].1, ());
        let (r, out, _) = {
            let f = &mut fakes[k].2;
            let mut buf = [0u8; 2048];
            let h = write_rtp_header(&mut buf, 96, f.seq, 0, ssrc);
            f.seq = f.seq.wrapping_add(1);
            let n = f.client.protect_rtp(&mut buf, h + 50).unwrap();
            let bytes = buf[..n].to_vec();
            let (r, out) = sim.send(f.addr, &bytes);
            (r, out, bytes)
        };
        assert_eq!(r, NodeResult::Media(Verdict::Forwarded(3)));
        for (dst, _) in &out {
            let (rr, _, _) = fakes.iter().find(|(_, _, f)| f.addr == *dst).unwrap();
            assert_eq!(*rr, room, "a packet left its room");
        }
        for (_, _, f) in fakes.iter_mut().filter(|(r, s, _)| *r == room && *s != ssrc) {
            assert_eq!(deliver(f, &out).len(), 1);
        }
    }
}

#[test]
fn an_address_cannot_be_taken_over_by_another_user() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 21);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    // Another user's join from the same (spoofable) address is refused...
    let mut b = sim.fake(1, "b", RoomId::Num(1), &[], p);
    assert_eq!(sim.join(&mut b), Err(ErrorCode::AddressInUse));
    assert_eq!(sim.node.registry.session_count(), 1);
    // ...while the same user may move rooms from it.
    let mut a2 = sim.fake(1, "a", RoomId::Num(2), &[], p);
    sim.join(&mut a2).unwrap();
    assert_eq!(sim.node.registry.session_count(), 1);
    assert_eq!(sim.node.registry.room_count(), 1);
}

#[test]
fn one_user_cannot_exhaust_a_rooms_ssrc_history() {
    let cfg = config("[app.quotas]\nmax_rooms = 10\nmax_members_per_room = 10\nmax_sessions = 100\n");
    let mut sim = Sim::new(&cfg, 22);
    let p = Profile::AesCm128HmacSha1_80;
    // A member who stays keeps the room (and its SSRC history) alive; an emptied room
    // forgets its history, which is safe because no receiver key outlives it.
    let mut keeper = sim.fake(1999, "keeper", RoomId::Num(1), &[], p);
    sim.join(&mut keeper).unwrap();
    let mut ssrc = 1000;
    let mut joins: u16 = 0;
    loop {
        assert!(joins < 100, "the per-user SSRC cap never applied");
        let ssrcs: Vec<(u32, StreamKind)> = (0..8).map(|i| (ssrc + i, StreamKind::Video)).collect();
        ssrc += 8;
        let mut f = sim.fake(2000 + joins, "rejoiner", RoomId::Num(1), &ssrcs, p);
        match sim.join(&mut f) {
            Ok(_) => joins += 1,
            Err(e) => {
                assert_eq!(e, ErrorCode::SsrcConflict);
                break;
            }
        }
    }
    assert_eq!(u32::from(joins) * 8, relay::registry::MAX_USER_SSRCS);
    // Others can still join with streams.
    let mut other = sim.fake(3000, "other", RoomId::Num(1), &[(1, StreamKind::Audio)], p);
    sim.join(&mut other).unwrap();
}

/// A sink with no transmit buffers at all.
struct FullSink;

impl TxSink for FullSink {
    type Dest = SocketAddr;
    fn buffer(&mut self) -> Option<&mut [u8]> {
        None
    }
    fn commit(&mut self, _dst: &mut SocketAddr, _len: usize) -> bool {
        false
    }
}

#[test]
fn tx_full_is_counted_once_per_skipped_receiver_and_rejected_tickets_are_counted() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 23);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[(7, StreamKind::Video)], p);
    sim.join(&mut a).unwrap();
    for (port, user) in [(2, "b"), (3, "c"), (4, "d")] {
        let mut f = sim.fake(port, user, RoomId::Num(1), &[], p);
        sim.join(&mut f).unwrap();
    }
    let mut buf = [0u8; 2048];
    let h = write_rtp_header(&mut buf, 96, 1, 0, 7);
    let n = a.client.protect_rtp(&mut buf, h + 100).unwrap();
    let r = sim.node.handle(sim.now, a.addr, &mut buf[..n], &mut FullSink);
    assert_eq!(r, NodeResult::Media(Verdict::Forwarded(0)));
    let c = sim.node.engine.counters();
    assert_eq!(c.drops(DropReason::TxFull), 3);
    assert_eq!(c.drops(DropReason::NoReceivers), 0);
    // A keepalive with a bad MAC is dropped and counted.
    let mut ka = [0u8; 64];
    let n = a.client.keepalive(&mut ka).unwrap();
    ka[n - 1] ^= 1;
    let (r, out) = sim.send(a.addr, &ka[..n]);
    assert_eq!(r, NodeResult::Control(Outcome::Ignored));
    assert!(out.is_empty());
    assert_eq!(sim.node.engine.counters().drops(DropReason::ControlRejected), 1);
}

#[test]
fn rooms_are_listed_sorted_filtered_and_limited() {
    use relay::ids::SdkAppId;
    let cfg = config("[app.quotas]\nmax_rooms = 10\nmax_members_per_room = 10\nmax_sessions = 100\n");
    let mut sim = Sim::new(&cfg, 21);
    let p = Profile::AesCm128HmacSha1_80;
    for (i, (user, room)) in
        [("c", RoomId::Num(9)), ("a", RoomId::Str("lobby".into())), ("b", RoomId::Num(2)), ("d", RoomId::Num(9))]
            .into_iter()
            .enumerate()
    {
        let mut f = sim.fake(2000 + i as u16, user, room, &[(500 + i as u32, StreamKind::Audio)], p);
        sim.join(&mut f).unwrap();
    }
    let reg = &sim.node.registry;
    let all = reg.list_rooms(None, 100);
    let listed: Vec<(String, Vec<(&str, u16)>)> = all
        .iter()
        .map(|(k, m)| (k.room.to_string(), m.iter().map(|s| (s.user.as_str(), s.addr.port())).collect()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("2".to_owned(), vec![("b", 2002)]),
            ("9".to_owned(), vec![("c", 2000), ("d", 2003)]),
            ("s:lobby".to_owned(), vec![("a", 2001)]),
        ]
    );
    let app = SdkAppId::new(APP.into()).unwrap();
    assert_eq!(reg.list_rooms(Some(app), 100).len(), 3);
    assert_eq!(reg.list_rooms(Some(SdkAppId::new(7).unwrap()), 100).len(), 0);
    let first = reg.list_rooms(Some(app), 2);
    assert_eq!(first.iter().map(|(k, _)| k.room.to_string()).collect::<Vec<_>>(), ["2", "9"]);
}
