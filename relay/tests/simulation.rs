//! Deterministic simulations of the whole relay (registry + engine) with fake clients, a
//! virtual clock and seeded keys: no sockets, no threads, no wall time.

use std::net::SocketAddr;

use relay::client::{write_rtcp_rr, write_rtp_header, Client, ClientConfig, Event, Node as ClientNode, Transmit};
use relay::config::{Config, Validated};
use relay::engine::{TxSink, Verdict};
use relay::handshake::KeyPair;
use relay::ids::{RoomId, Ssrc};
use relay::node::{Node, NodeResult};
use relay::proto::{DeclaredSsrc, ErrorCode, StreamKind};
use relay::registry::{Now, Outcome, Registry};
use relay::srtp::rtcp::{Compound, Feedback};
use relay::srtp::Profile;
use relay::stats::DropReason;
use relay::usersig::{self, PrivilegeMap, RoomRef};

const APP: u32 = 1_400_000_001;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const T0: u64 = 1_700_000_000;
/// A second app, for the isolation checks.
const APP2: u32 = 1_400_000_002;
const SECRET2: &str = "fedcba9876543210fedcba9876543210";

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

    /// The relay as its clients know it: the config's listen address and the relay's key.
    fn nodes(&self) -> Vec<ClientNode> {
        vec![ClientNode::new("127.0.0.1:7000".parse().unwrap(), Some(self.node.registry.relay_key()))]
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
            nodes: self.nodes(),
            failover_after_ms: None,
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
        let n = f.client.join_at(self.now.unix_secs * 1000, &mut buf).unwrap();
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

    fn fake_with(&mut self, port: u16, cfg: ClientConfig) -> Fake {
        Fake {
            addr: format!("198.18.0.1:{port}").parse().unwrap(),
            client: Client::with_key(cfg, self.rng.key()).unwrap(),
            seq: 65_530,
        }
    }

    /// A member of `APP`'s room 1 whose PrivateMapKey grants `privileges`.
    fn fake_privileged(
        &mut self,
        port: u16,
        user: &str,
        ssrcs: &[(u32, StreamKind)],
        privileges: PrivilegeMap,
    ) -> Fake {
        let mut f = self.fake(port, user, RoomId::Num(1), ssrcs, Profile::AesCm128HmacSha1_80);
        let mut cfg = f.client.config().clone();
        cfg.private_map_key =
            Some(usersig::mint_private_map_key(SECRET.as_bytes(), APP, user, 86400, T0, RoomRef::Num(1), privileges));
        f.client = Client::with_key(cfg, self.rng.key()).unwrap();
        f
    }

    /// Protects the compound RTCP packet `plain` as `f` and sends it.
    fn rtcp(&mut self, f: &mut Fake, plain: &[u8]) -> (NodeResult, Emitted) {
        let mut buf = [0u8; 2048];
        buf[..plain.len()].copy_from_slice(plain);
        let n = f.client.protect_rtcp(&mut buf, plain.len()).unwrap();
        self.send(f.addr, &buf[..n])
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

/// Like [`deliver`], with each copy's SRTCP (or SRTP) index.
fn deliver_indexed(f: &mut Fake, out: &[(SocketAddr, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    out.iter()
        .filter(|(dst, _)| *dst == f.addr)
        .map(|(_, b)| {
            let mut b = b.clone();
            match f.client.handle(&mut b) {
                Event::Media { len, index, .. } => (index, b[..len].to_vec()),
                e => panic!("receiver could not decrypt: {e:?}"),
            }
        })
        .collect()
}

const A_AUDIO: u32 = 0x0a0a_0001;
const A_VIDEO: u32 = 0x0a0a_0002;
const B_VIDEO: u32 = 0x0b0b_0001;
const C_RTCP: u32 = 0x0c0c_0001;
const D_RTCP: u32 = 0x0d0d_0001;

/// Report blocks (RFC 3550 §6.4.1) about A's audio, A's video and B's video.
const BLOCK_A_AUDIO: &str = "0a0a0001 00000000 00000c1f 00000004 00000000 00000000";
const BLOCK_A_VIDEO: &str = "0a0a0002 0a000002 00015b3a 0000001c a3b24bc6 00000800";
const BLOCK_B_VIDEO: &str = "0b0b0001 05000003 00010203 00000010 a3b24bc6 00000800";
/// C's SDES, CNAME "c".
const SDES_C: &str = "81ca0002 0c0c0001 01016300";
/// An SR's sender info: NTP and RTP timestamps, packet and octet counts.
const SENDER_INFO: &str = "e5d1a3b2 4bc6a7ef 0001e240 00000064 00003e80";

/// Room 1 of `APP`: A sends audio and video, B sends video, C is receive-only with the
/// privilege to receive video, D receive-only without it (audio only). E, in room 2, and X,
/// in `APP2`'s room 1, declare the same SSRCs as B and A.
struct SfuRoom {
    sim: Sim,
    a: Fake,
    b: Fake,
    c: Fake,
    d: Fake,
    e: Fake,
    x: Fake,
}

fn sfu_room(seed: u64) -> SfuRoom {
    let cfg = config(&format!("[[app]]\nsdkappid = {APP2}\nsecret = \"{SECRET2}\"\n"));
    let mut sim = Sim::new(&cfg, seed);
    let p = Profile::AesCm128HmacSha1_80;
    let recv_av = PrivilegeMap(PrivilegeMap::ENTER.0 | PrivilegeMap::RECV_AUDIO.0 | PrivilegeMap::RECV_VIDEO.0);
    let recv_audio = PrivilegeMap(PrivilegeMap::ENTER.0 | PrivilegeMap::RECV_AUDIO.0);
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[(A_AUDIO, StreamKind::Audio), (A_VIDEO, StreamKind::Video)], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[(B_VIDEO, StreamKind::Video)], p);
    let mut c = sim.fake_privileged(3, "c", &[(C_RTCP, StreamKind::Rtcp)], recv_av);
    let mut d = sim.fake_privileged(4, "d", &[(D_RTCP, StreamKind::Rtcp)], recv_audio);
    let mut e = sim.fake(5, "e", RoomId::Num(2), &[(B_VIDEO, StreamKind::Video), (C_RTCP, StreamKind::Rtcp)], p);
    let x_cfg = ClientConfig {
        sdkappid: APP2,
        room: RoomId::Num(1),
        usersig: usersig::mint(SECRET2.as_bytes(), APP2.into(), "x", 86400, T0, None),
        private_map_key: None,
        profile: p,
        ssrcs: [(A_VIDEO, StreamKind::Video), (C_RTCP, StreamKind::Rtcp)]
            .map(|(s, kind)| DeclaredSsrc { ssrc: Ssrc::new(s).unwrap(), kind })
            .to_vec(),
        nodes: sim.nodes(),
        failover_after_ms: None,
    };
    let mut x = sim.fake_with(6, x_cfg);
    for f in [&mut a, &mut b, &mut c, &mut d, &mut e, &mut x] {
        sim.join(f).unwrap();
    }
    SfuRoom { sim, a, b, c, d, e, x }
}

impl SfuRoom {
    /// Each member's decrypted copies in `out`, in the order a, b, c, d, e, x, after checking
    /// that nothing went anywhere else.
    fn received(&mut self, out: &Emitted) -> [Vec<Vec<u8>>; 6] {
        let addrs = [self.a.addr, self.b.addr, self.c.addr, self.d.addr, self.e.addr, self.x.addr];
        assert!(out.iter().all(|(dst, _)| addrs.contains(dst)), "a copy to a stranger");
        [&mut self.a, &mut self.b, &mut self.c, &mut self.d, &mut self.e, &mut self.x].map(|f| deliver(f, out))
    }
}

fn packets(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| hex(p)).collect()
}

#[test]
fn rtcp_feedback_goes_only_to_the_sender_of_the_ssrc_it_names() {
    let mut r = sfu_room(31);
    let none: Vec<Vec<u8>> = Vec::new();

    // C's RR about A's audio, A's video and B's video: A gets the blocks about its streams, B
    // the one about its stream, each with C's SDES, under C's SRTCP index.
    let rr = packets(&["83c90013 0c0c0001", BLOCK_A_AUDIO, BLOCK_A_VIDEO, BLOCK_B_VIDEO, SDES_C]);
    let (v, out) = r.sim.rtcp(&mut r.c, &rr);
    assert_eq!(v, NodeResult::Media(Verdict::Forwarded(2)));
    let to_a = deliver_indexed(&mut r.a, &out);
    let to_b = deliver_indexed(&mut r.b, &out);
    assert_eq!(to_a, [(0, packets(&["82c9000d 0c0c0001", BLOCK_A_AUDIO, BLOCK_A_VIDEO, SDES_C]))]);
    assert_eq!(to_b, [(0, packets(&["81c90007 0c0c0001", BLOCK_B_VIDEO, SDES_C]))]);
    assert_eq!(out.len(), 2);

    // Reduced-size feedback, one message per compound: (packet, [A's copy, B's copy]).
    let cases: [(&str, [Option<&str>; 2]); 5] = [
        // PLI for B's video.
        ("81ce0002 0c0c0001 0b0b0001", [None, Some("81ce0002 0c0c0001 0b0b0001")]),
        // NACK for A's video.
        ("81cd0003 0c0c0001 0a0a0002 04d20005", [Some("81cd0003 0c0c0001 0a0a0002 04d20005"), None]),
        // FIR for B's video (seq 7) and A's video (seq 9): each gets its own entry.
        (
            "84ce0006 0c0c0001 00000000 0b0b0001 07000000 0a0a0002 09000000",
            [
                Some("84ce0004 0c0c0001 00000000 0a0a0002 09000000"),
                Some("84ce0004 0c0c0001 00000000 0b0b0001 07000000"),
            ],
        ),
        // REMB for both videos: each gets only its SSRC, with the same bitrate.
        (
            "8fce0006 0c0c0001 00000000 52454d42 020d1a2b 0a0a0002 0b0b0001",
            [
                Some("8fce0005 0c0c0001 00000000 52454d42 010d1a2b 0a0a0002"),
                Some("8fce0005 0c0c0001 00000000 52454d42 010d1a2b 0b0b0001"),
            ],
        ),
        // Transport-cc naming A's video, padded as libwebrtc pads it.
        (
            "afcd0006 0c0c0001 0a0a0002 00010003 00001005 20030a0b 0c000003",
            [Some("afcd0006 0c0c0001 0a0a0002 00010003 00001005 20030a0b 0c000003"), None],
        ),
    ];
    for (pkt, [want_a, want_b]) in cases {
        let (v, out) = r.sim.rtcp(&mut r.c, &hex(pkt));
        let want = [want_a, want_b].iter().flatten().count();
        assert_eq!(v, NodeResult::Media(Verdict::Forwarded(want)), "{pkt}");
        let [a, b, c, d, e, x] = r.received(&out);
        assert_eq!(a, want_a.map(hex).into_iter().collect::<Vec<_>>(), "{pkt}");
        assert_eq!(b, want_b.map(hex).into_iter().collect::<Vec<_>>(), "{pkt}");
        // C never hears itself; D, E and X are named by nothing (E and X reuse the SSRCs in
        // another room and another app).
        assert_eq!([c, d, e, x], [none.clone(), none.clone(), none.clone(), none.clone()], "{pkt}");
    }

    // The same feedback from E, in room 2, reaches only E's room: there it names nobody.
    let (v, out) = r.sim.rtcp(&mut r.e, &hex("81ce0002 0c0c0001 0a0a0002"));
    assert_eq!(v, NodeResult::Media(Verdict::Dropped(DropReason::NoReceivers)));
    assert!(out.is_empty());
}

#[test]
fn sender_reports_go_to_the_streams_receivers_only() {
    let mut r = sfu_room(32);
    let none: Vec<Vec<u8>> = Vec::new();

    // A's video SR with a block about B's video, and A's CNAME. B receives A's video and sends
    // the stream the block is about: it gets it all. C receives video: the SR without the block.
    // D may not receive video: nothing.
    let sdes_a = "81ca0002 0a0a0002 01016100";
    let sr = packets(&["81c8000c 0a0a0002", SENDER_INFO, BLOCK_B_VIDEO, sdes_a]);
    let (v, out) = r.sim.rtcp(&mut r.a, &sr);
    assert_eq!(v, NodeResult::Media(Verdict::Forwarded(2)));
    let [a, b, c, d, e, x] = r.received(&out);
    assert_eq!(b, [sr]);
    assert_eq!(c, [packets(&["80c80006 0a0a0002", SENDER_INFO, sdes_a])]);
    assert_eq!([a, d, e, x], [none.clone(), none.clone(), none.clone(), none.clone()]);

    // A's audio SR: every member that may receive audio gets it, D included.
    let sr = packets(&["80c80006 0a0a0001", SENDER_INFO]);
    let (v, out) = r.sim.rtcp(&mut r.a, &sr);
    assert_eq!(v, NodeResult::Media(Verdict::Forwarded(3)));
    let [a, b, c, d, e, x] = r.received(&out);
    for got in [b, c, d] {
        assert_eq!(got, std::slice::from_ref(&sr));
    }
    assert_eq!([a, e, x], [none.clone(), none.clone(), none.clone()]);

    // D's report on A's audio reaches A; D may not receive video, so its PLI or report about
    // B's video goes nowhere.
    let rr = packets(&["81c90007 0d0d0001", BLOCK_A_AUDIO]);
    let (v, out) = r.sim.rtcp(&mut r.d, &rr);
    assert_eq!(v, NodeResult::Media(Verdict::Forwarded(1)));
    assert_eq!(deliver(&mut r.a, &out), [rr]);
    for pkt in [packets(&["81c90007 0d0d0001", BLOCK_B_VIDEO]), hex("81ce0002 0d0d0001 0b0b0001")] {
        let (v, out) = r.sim.rtcp(&mut r.d, &pkt);
        assert_eq!(v, NodeResult::Media(Verdict::Dropped(DropReason::NoReceivers)));
        assert!(out.is_empty());
    }

    // A's BYE for both streams: each receiver gets the SSRCs it may receive, D only audio.
    let bye = packets(&["80c90001 0a0a0001", "82cb0002 0a0a0001 0a0a0002"]);
    let (v, out) = r.sim.rtcp(&mut r.a, &bye);
    assert_eq!(v, NodeResult::Media(Verdict::Forwarded(3)));
    let [_, b, c, d, _, _] = r.received(&out);
    for got in [b, c] {
        assert_eq!(got, std::slice::from_ref(&bye));
    }
    assert_eq!(d, [packets(&["80c90001 0a0a0001", "81cb0001 0a0a0001"])]);
}

#[test]
fn malformed_or_spoofed_rtcp_is_dropped_and_counted() {
    let mut r = sfu_room(33);
    let malformed = [
        // The second packet's version is 1.
        "80c90001 0c0c0001 41ca0001 0c0c0001",
        // An RR whose length runs past the datagram.
        "81c90007 0c0c0001 0b0b0001 00000000",
        // A compound starting with SDES.
        SDES_C,
        // A FIR entry cut in half.
        "84ce0003 0c0c0001 00000000 0b0b0001",
    ];
    for (i, pkt) in malformed.into_iter().enumerate() {
        let (v, out) = r.sim.rtcp(&mut r.c, &hex(pkt));
        assert_eq!(v, NodeResult::Media(Verdict::Dropped(DropReason::RtcpMalformed)), "{pkt}");
        assert!(out.is_empty());
        assert_eq!(r.sim.node.engine.counters().drops(DropReason::RtcpMalformed), i as u64 + 1);
    }
    // C speaking for A's or B's SSRCs: an SR, an SDES chunk, a BYE, a feedback sender.
    let spoofed = [
        packets(&["80c90001 0c0c0001", "80c80006 0a0a0002", SENDER_INFO]),
        packets(&["80c90001 0c0c0001", "81ca0002 0a0a0001 01016100"]),
        packets(&["80c90001 0c0c0001", "81cb0001 0b0b0001"]),
        packets(&["80c90001 0c0c0001", "81ce0002 0a0a0002 0b0b0001"]),
    ];
    for pkt in &spoofed {
        let (v, out) = r.sim.rtcp(&mut r.c, pkt);
        assert_eq!(v, NodeResult::Media(Verdict::Dropped(DropReason::UnknownSsrc)));
        assert!(out.is_empty());
    }
    assert_eq!(r.sim.node.engine.counters().drops(DropReason::UnknownSsrc), spoofed.len() as u64);

    // With no transmit buffer, each destination with a part is counted once.
    let mut buf = [0u8; 256];
    let remb = hex("8fce0006 0c0c0001 00000000 52454d42 020d1a2b 0a0a0002 0b0b0001");
    buf[..remb.len()].copy_from_slice(&remb);
    let n = r.c.client.protect_rtcp(&mut buf, remb.len()).unwrap();
    let v = r.sim.node.handle(r.sim.now, r.c.addr, &mut buf[..n], &mut FullSink);
    assert_eq!(v, NodeResult::Media(Verdict::Forwarded(0)));
    assert_eq!(r.sim.node.engine.counters().drops(DropReason::TxFull), 2);

    // C's next, well-formed feedback still flows.
    let (v, out) = r.sim.rtcp(&mut r.c, &hex("81ce0002 0c0c0001 0b0b0001"));
    assert_eq!(v, NodeResult::Media(Verdict::Forwarded(1)));
    assert_eq!(deliver(&mut r.b, &out).len(), 1);
}

/// One member of the seeded population below.
struct Member {
    fake: Fake,
    scope: (u32, u32),
    rtcp_ssrc: u32,
    streams: Vec<(u32, StreamKind)>,
    recv_video: bool,
}

#[test]
fn seeded_rtcp_reaches_exactly_the_named_senders_and_never_crosses_rooms_or_apps() {
    let cfg = config(&format!("[[app]]\nsdkappid = {APP2}\nsecret = \"{SECRET2}\"\n"));
    let mut sim = Sim::new(&cfg, 34);
    let p = Profile::AesCm128HmacSha1_80;
    // Three rooms, four members each. Member i of every room declares the same SSRCs, so
    // every SSRC exists in all three rooms; every third member may not receive video.
    let mut members = Vec::new();
    for (app, secret, room) in [(APP, SECRET, 1), (APP, SECRET, 2), (APP2, SECRET2, 1)] {
        for i in 0..4u32 {
            let user = format!("u{i}");
            let rtcp_ssrc = 0x100 * (i + 1) + 1;
            let streams = match i {
                0 => vec![(rtcp_ssrc + 1, StreamKind::Audio), (rtcp_ssrc + 2, StreamKind::Video)],
                1 | 3 => vec![(rtcp_ssrc + 2, StreamKind::Video)],
                _ => vec![],
            };
            let recv_video = i != 2;
            let mut privileges = PrivilegeMap::ALL;
            if !recv_video {
                privileges = PrivilegeMap(PrivilegeMap::ENTER.0 | PrivilegeMap::RECV_AUDIO.0);
            }
            let ssrcs: Vec<_> = [(rtcp_ssrc, StreamKind::Rtcp)]
                .iter()
                .chain(&streams)
                .map(|&(s, kind)| DeclaredSsrc { ssrc: Ssrc::new(s).unwrap(), kind })
                .collect();
            let pmk =
                usersig::mint_private_map_key(secret.as_bytes(), app, &user, 86400, T0, RoomRef::Num(room), privileges);
            let cfg = ClientConfig {
                sdkappid: app,
                room: RoomId::Num(room),
                usersig: usersig::mint(secret.as_bytes(), app.into(), &user, 86400, T0, None),
                private_map_key: Some(pmk),
                profile: p,
                ssrcs,
                nodes: sim.nodes(),
                failover_after_ms: None,
            };
            let port = 2000 + members.len() as u16;
            let mut fake = sim.fake_with(port, cfg);
            sim.join(&mut fake).unwrap();
            members.push(Member { fake, scope: (app, room), rtcp_ssrc, streams, recv_video });
        }
    }
    // Every SSRC named anywhere, and one nobody declared.
    let mut pool: Vec<u32> = members.iter().flat_map(|m| m.streams.iter().map(|s| s.0)).collect();
    pool.extend([members[2].rtcp_ssrc, 0x7777_7777]);
    pool.sort_unstable();
    pool.dedup();

    let mut rng = Rng(35);
    let mut forwarded = 0;
    for _ in 0..400 {
        let k = (rng.next() % members.len() as u64) as usize;
        let me = members[k].rtcp_ssrc;
        let pick = |rng: &mut Rng| pool[(rng.next() % pool.len() as u64) as usize];
        // An RR with up to three blocks, then up to three feedback messages.
        let mut named = Vec::new();
        let blocks = (rng.next() % 4) as usize;
        let mut c = vec![0x80 | blocks as u8, 201];
        c.extend_from_slice(&(1 + 6 * blocks as u16).to_be_bytes());
        c.extend_from_slice(&me.to_be_bytes());
        for _ in 0..blocks {
            let s = pick(&mut rng);
            named.push(s);
            c.extend_from_slice(&s.to_be_bytes());
            c.extend_from_slice(&[0; 20]);
        }
        for _ in 0..rng.next() % 4 {
            let (s1, s2) = (pick(&mut rng), pick(&mut rng));
            let fb = match rng.next() % 5 {
                0 => format!("81ce0002 {me:08x} {s1:08x}"),
                1 => format!("81cd0003 {me:08x} {s1:08x} 00070001"),
                2 => format!("8fcd0004 {me:08x} {s1:08x} 00010001 00001001"),
                3 => format!("84ce0006 {me:08x} 00000000 {s1:08x} 01000000 {s2:08x} 02000000"),
                _ => format!("8fce0006 {me:08x} 00000000 52454d42 020d1a2b {s1:08x} {s2:08x}"),
            };
            named.push(s1);
            if fb.starts_with("84") || fb.starts_with("8fce") {
                named.push(s2);
            }
            c.extend(hex(&fb));
        }
        let (scope, recv_video) = (members[k].scope, members[k].recv_video);
        // The model: the members of the sender's room that declared a named stream the sender
        // may receive.
        let may_receive = |kind: StreamKind| kind != StreamKind::Video || recv_video;
        let mut expect: Vec<usize> = (0..members.len())
            .filter(|&j| j != k && members[j].scope == scope)
            .filter(|&j| members[j].streams.iter().any(|&(s, kind)| named.contains(&s) && may_receive(kind)))
            .collect();
        expect.sort_unstable();

        let (v, out) = sim.rtcp(&mut members[k].fake, &c);
        if expect.is_empty() {
            assert_eq!(v, NodeResult::Media(Verdict::Dropped(DropReason::NoReceivers)));
        } else {
            assert_eq!(v, NodeResult::Media(Verdict::Forwarded(expect.len())));
        }
        let mut got: Vec<usize> =
            out.iter().map(|(dst, _)| members.iter().position(|m| m.fake.addr == *dst).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, expect, "one copy to each named sender in the room, none elsewhere");
        forwarded += got.len();

        for j in got {
            let dst = &mut members[j];
            let copies = deliver(&mut dst.fake, &out);
            let copy = Compound::new_checked(&copies[0][..]).expect("a copy is a valid compound");
            assert_eq!(copy.sender_ssrc(), me);
            let mine = |s: u32| dst.streams.iter().any(|&(d, kind)| d == s && may_receive(kind));
            for p in copy.packets() {
                assert!(p.report_blocks().all(|b| mine(b.ssrc())), "a block about another's stream");
                assert!(p.fir_entries().all(|(s, _)| mine(s)) && p.remb_ssrcs().all(mine));
                if !matches!(p.feedback(), None | Some(Feedback::Fir | Feedback::Remb)) {
                    assert!(mine(p.media_ssrc().unwrap()), "feedback about another's stream");
                }
            }
        }
    }
    assert!(forwarded > 100, "the seed exercises routing ({forwarded} copies)");
}

/// Handshake counters by name.
fn handshake(sim: &Sim, name: &str) -> u64 {
    sim.node.registry.handshake_counts().find(|(k, _)| *k == name).map_or(0, |(_, v)| v)
}

impl Sim {
    /// A v2 join datagram from `f`, stamped with the virtual clock.
    fn join_bytes(&mut self, f: &mut Fake) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let n = f.client.join_at(self.now.unix_secs * 1000, &mut buf).unwrap();
        buf[..n].to_vec()
    }
}

#[test]
fn a_captured_join_replayed_later_or_elsewhere_creates_and_displaces_nothing() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 20);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "alice", RoomId::Num(1), &[(5, StreamKind::Video)], p);
    let captured = sim.join_bytes(&mut a);
    let (r, out) = sim.send(a.addr, &captured);
    let NodeResult::Control(Outcome::Joined(id)) = r else { panic!("{r:?}") };
    let mut answer = out[0].1.clone();
    assert_eq!(a.client.handle(&mut answer), Event::Joined { session: id.0 });
    let dh = handshake(&sim, "dh");
    // The same bytes again: from alice's address, from another one, a second later and
    // at the edge of the window. None is answered, none creates or replaces a session.
    for (from, wait_ms) in [(a.addr, 0), ("198.18.9.9:4000".parse().unwrap(), 1_000), (a.addr, 29_000)] {
        sim.advance(wait_ms);
        let (r, out) = sim.send(from, &captured);
        assert_eq!(r, NodeResult::Control(Outcome::Refused(ErrorCode::Replayed)), "from {from}");
        assert!(out.is_empty(), "a replay gets no answer");
        assert_eq!(sim.node.registry.session_count(), 1);
    }
    assert_eq!(handshake(&sim, "replayed"), 3);
    // Long after: the cache forgot it, and the timestamp refuses it.
    sim.advance(120_000);
    let (r, out) = sim.send("198.18.9.9:4000".parse().unwrap(), &captured);
    assert_eq!(r, NodeResult::Control(Outcome::Refused(ErrorCode::ClockSkew)));
    assert_eq!(out.len(), 1, "refused with an answer only the client could read");
    assert_eq!(handshake(&sim, "dh"), dh + 4, "each replay cost one DH, no more");
    // A join stamped ahead of the relay's clock (a client clock off by 40 s) is refused,
    // and remembered: replayed once the relay's clock has caught up, it still gets nothing.
    let mut c = sim.fake(3, "carol", RoomId::Num(1), &[], p);
    let mut buf = [0u8; 1500];
    let n = c.client.join_at((sim.now.unix_secs + 40) * 1000, &mut buf).unwrap();
    let early = buf[..n].to_vec();
    let (r, _) = sim.send(c.addr, &early);
    assert_eq!(r, NodeResult::Control(Outcome::Refused(ErrorCode::ClockSkew)));
    sim.advance(20_000);
    let (r, out) = sim.send(c.addr, &early);
    assert_eq!((r, out.len()), (NodeResult::Control(Outcome::Refused(ErrorCode::Replayed)), 0));
    // Alice's own session was never touched: her media still flows to a new member.
    let mut b = sim.fake(2, "bob", RoomId::Num(1), &[], p);
    sim.join(&mut b).unwrap();
    let (r, out, _) = sim.rtp(&mut a, 5, b"still alice");
    assert_eq!(r, NodeResult::Media(Verdict::Forwarded(1)));
    assert_eq!(deliver(&mut b, &out).len(), 1);
}

#[test]
fn a_client_with_another_relay_key_gets_nothing_and_no_dh_runs() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 21);
    let mut f = sim.fake(1, "a", RoomId::Num(1), &[], Profile::AeadAes128Gcm);
    let mut cfg2 = f.client.config().clone();
    cfg2.nodes[0].key = Some(relay::identity::StaticKey::from_secret([42; 32]).public());
    f.client = Client::with_key(cfg2, sim.rng.key()).unwrap();
    let join = sim.join_bytes(&mut f);
    let (r, out) = sim.send(f.addr, &join);
    assert_eq!(r, NodeResult::Control(Outcome::Ignored));
    assert!(out.is_empty());
    assert_eq!((handshake(&sim, "mac1_failed"), handshake(&sim, "dh")), (1, 0));
    // An impostor relay's answer does not decrypt under the key the client holds.
    let mut other = Sim::new(&cfg, 99);
    let mut g = other.fake(1, "a", RoomId::Num(1), &[], Profile::AeadAes128Gcm);
    let j = other.join_bytes(&mut g);
    let (_, out) = other.send(g.addr, &j);
    let mut forged = out[0].1.clone();
    assert_eq!(f.client.handle(&mut forged), Event::Unverified);
    assert!(f.client.session().is_none());
}

#[test]
fn v1_joins_are_refused_unless_the_app_allows_them_and_are_counted() {
    let v1 = |extra: &str| {
        let cfg = config(extra);
        let mut sim = Sim::new(&cfg, 22);
        let mut f = sim.fake(1, "a", RoomId::Num(1), &[], Profile::AesCm128HmacSha1_80);
        let mut c = f.client.config().clone();
        c.nodes[0].key = None;
        f.client = Client::with_key(c, sim.rng.key()).unwrap();
        let r = sim.join(&mut f);
        (r, handshake(&sim, "v1_joins"))
    };
    assert_eq!(v1(""), (Err(ErrorCode::V1NotAllowed), 1));
    let (r, n) = v1("allow_v1_joins = true");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(n, 1);
}

#[test]
fn under_load_a_join_needs_a_cookie_for_its_address_and_costs_no_dh_without_one() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 23);
    sim.node.registry.set_under_load(true);
    let mut f = sim.fake(1, "a", RoomId::Num(1), &[], Profile::AesCm128HmacSha1_80);
    let join = sim.join_bytes(&mut f);
    let (r, out) = sim.send(f.addr, &join);
    assert_eq!(r, NodeResult::Control(Outcome::CookieSent));
    assert!(out[0].1.len() < join.len());
    assert_eq!(handshake(&sim, "dh"), 0);
    // A cookie reply to someone else's join (another mac1) is not taken.
    let mut g = sim.fake(2, "g", RoomId::Num(1), &[], Profile::AesCm128HmacSha1_80);
    let gj = sim.join_bytes(&mut g);
    let (_, other) = sim.send(g.addr, &gj);
    let mut wrong = other[0].1.clone();
    assert_eq!(f.client.handle(&mut wrong), Event::Ignored, "a cookie for another join's mac1");
    let mut cookie = out[0].1.clone();
    assert_eq!(f.client.handle(&mut cookie), Event::Cookie);
    // The cookie is for f's address: the same join from elsewhere gets another cookie.
    let with_cookie = sim.join_bytes(&mut f);
    let (_, out) = sim.send("198.18.7.7:1".parse().unwrap(), &with_cookie);
    assert_eq!(relay::proto::parse_any_header(&out[0].1).unwrap().1, relay::proto::MsgType::Cookie);
    let (r, out) = sim.send(f.addr, &with_cookie);
    assert!(matches!(r, NodeResult::Control(Outcome::Joined(_))), "{r:?}");
    let mut answer = out[0].1.clone();
    assert!(matches!(f.client.handle(&mut answer), Event::Joined { .. }));
    assert_eq!((handshake(&sim, "cookies_sent"), handshake(&sim, "dh")), (3, 1));
    // Off load, no cookie is needed.
    sim.node.registry.set_under_load(false);
    let mut h = sim.fake(3, "h", RoomId::Num(1), &[], Profile::AesCm128HmacSha1_80);
    assert!(sim.join(&mut h).is_ok());
}

#[test]
fn replies_are_limited_per_source_and_malformed_datagrams_get_none() {
    let cfg = config("[join]\nreplies_per_source_per_sec = 5\n");
    let mut sim = Sim::new(&cfg, 24);
    let from: SocketAddr = "198.18.3.3:3000".parse().unwrap();
    let mut replies = 0;
    for i in 0..40 {
        let mut f = sim.fake(3000, &format!("u{i}"), RoomId::Num(9), &[], Profile::AesCm128HmacSha1_80);
        f.addr = from;
        let j = sim.join_bytes(&mut f);
        replies += sim.send(from, &j).1.len();
    }
    assert_eq!(replies, 10, "two seconds' worth of burst, then nothing");
    assert!(handshake(&sim, "replies_limited") >= 30);
    // Junk of every control shape: never answered.
    let other: SocketAddr = "198.18.3.4:3000".parse().unwrap();
    for junk in [&[1u8, 1, 0, 3, 9, 9, 9][..], &[2, 1, 0, 1, 7], &[1, 9, 9, 9], &[2, 1, 0, 200]] {
        let (_, out) = sim.send(other, junk);
        assert!(out.is_empty(), "{junk:?} was answered");
    }
    let mut j = [0u8; 300];
    j[..4].copy_from_slice(&[2, 1, 1, 40]);
    let (r, out) = sim.send(other, &j);
    assert_eq!(r, NodeResult::Control(Outcome::Ignored));
    assert!(out.is_empty());
}

#[test]
fn a_nat_rebinding_is_told_to_rejoin_and_the_new_join_replaces_the_old_session() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 25);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[(7, StreamKind::Audio)], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    let mut ka = [0u8; 64];
    let n = a.client.keepalive(&mut ka).unwrap();
    let new_addr: SocketAddr = "198.18.0.99:1".parse().unwrap();
    let (r, out) = sim.send(new_addr, &ka[..n]);
    assert!(matches!(r, NodeResult::Control(Outcome::AddressChanged(_))), "{r:?}");
    let mut moved = out[0].1.clone();
    assert_eq!(a.client.handle(&mut moved), Event::AddressChanged);
    // A fresh join from the new address, with a fresh SSRC (SSRCs are never reused in a
    // room), replaces the old session.
    let mut a2 = sim.fake(99, "a", RoomId::Num(1), &[(8, StreamKind::Audio)], p);
    a2.addr = new_addr;
    sim.join(&mut a2).unwrap();
    assert_eq!(sim.node.registry.session_count(), 2);
    let (r, out, _) = sim.rtp(&mut a2, 8, b"from the new address");
    assert_eq!(r, NodeResult::Media(Verdict::Forwarded(1)));
    assert_eq!(deliver(&mut b, &out).len(), 1);
    let (r, _, _) = sim.rtp(&mut a, 7, b"old address");
    assert_eq!(r, NodeResult::Media(Verdict::Dropped(DropReason::UnknownSession)));
}

#[test]
fn a_ban_refuses_the_same_usersig_until_it_ends() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 26);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    let room = relay::ids::RoomKey { app: relay::ids::SdkAppId::new(APP.into()).unwrap(), room: RoomId::Num(1) };
    let user = relay::ids::UserId::new("a").unwrap();
    sim.node.registry.ban(&room, &user, T0 + 60);
    let mut updates = Vec::new();
    assert!(sim.node.registry.remove_user(&room, &user, &mut updates));
    assert_eq!(sim.join(&mut a), Err(ErrorCode::Banned));
    let mut elsewhere = sim.fake(1, "a", RoomId::Num(2), &[], p);
    assert!(sim.join(&mut elsewhere).is_ok(), "the ban is for that room only");
    sim.advance(60_000);
    assert!(sim.join(&mut a).is_ok());
}

#[test]
fn a_dismissed_members_keepalive_learns_why_until_the_reason_expires() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 28);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    let mut other = sim.fake(2, "o", RoomId::Num(2), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut other).unwrap();
    let room = relay::ids::RoomKey { app: relay::ids::SdkAppId::new(APP.into()).unwrap(), room: RoomId::Num(1) };
    // A keepalive of a's session, written while it lasts, for the relay's answer later.
    let mut late = [0u8; 64];
    let late_len = a.client.keepalive(&mut late).unwrap();
    let mut updates = Vec::new();
    assert_eq!(sim.node.registry.dismiss_room(sim.now, &room, &mut updates), 1);
    let answer = |sim: &mut Sim, f: &mut Fake, ka: &[u8]| {
        let (_, mut out) = sim.send(f.addr, ka);
        let mut reply = out.pop().expect("a keepalive is answered").1;
        f.client.handle(&mut reply)
    };
    let keepalive = |sim: &mut Sim, f: &mut Fake| {
        let mut ka = [0u8; 64];
        let n = f.client.keepalive(&mut ka).unwrap();
        answer(sim, f, &ka[..n])
    };
    assert!(
        matches!(keepalive(&mut sim, &mut a), Event::Refused { code: Some(ErrorCode::RoomDismissed), .. }),
        "the dismissed member is told why"
    );
    assert!(a.client.session().is_none(), "and its client forgets the session");
    assert_eq!(keepalive(&mut sim, &mut other), Event::KeepaliveAck, "another room is untouched");
    // Remembered for the session timeout plus a minute, then forgotten at an expiry pass.
    let session_ms = u64::from(cfg.timeouts.session_secs) * 1000;
    sim.advance(session_ms + 60_000);
    sim.node.registry.expire(sim.now, &mut updates);
    let ev = answer(&mut sim, &mut a, &late[..late_len]);
    assert!(matches!(ev, Event::Refused { code: Some(ErrorCode::UnknownSession), .. }), "{ev:?}");
}

#[test]
fn a_rotated_key_stays_valid_for_its_overlap_only() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 27);
    let old = sim.node.registry.relay_key();
    let mut id = sim.node.registry.identity().clone();
    id.rotate(T0, 60);
    sim.node.registry.set_identity(id, T0);
    assert_ne!(sim.node.registry.relay_key(), old);
    let mut f = sim.fake(1, "a", RoomId::Num(1), &[], Profile::AesCm128HmacSha1_80);
    let mut c = f.client.config().clone();
    c.nodes[0].key = Some(old);
    f.client = Client::with_key(c, sim.rng.key()).unwrap();
    assert!(sim.join(&mut f).is_ok(), "the old key during the overlap");
    sim.advance(60_000);
    assert!(sim.node.registry.retire_keys(sim.now.unix_secs));
    let j = sim.join_bytes(&mut f);
    let (r, out) = sim.send(f.addr, &j);
    assert_eq!((r, out.len()), (NodeResult::Control(Outcome::Ignored), 0), "after it: not even answered");
    assert_eq!(sim.node.registry.session_count(), 1, "the session joined with the old key lives on");
}

#[test]
fn private_map_key_receive_bits_decide_what_a_member_gets() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 28);
    let p = Profile::AesCm128HmacSha1_80;
    let mut tx = sim.fake(1, "tx", RoomId::Num(1), &[(10, StreamKind::Audio), (20, StreamKind::Video)], p);
    sim.join(&mut tx).unwrap();
    let enter = PrivilegeMap::ENTER.0 | PrivilegeMap::CREATE.0;
    let mut audio_only = sim.fake_privileged(2, "audio-only", &[], PrivilegeMap(enter | PrivilegeMap::RECV_AUDIO.0));
    let mut video_only = sim.fake_privileged(3, "video-only", &[], PrivilegeMap(enter | PrivilegeMap::RECV_VIDEO.0));
    let mut nothing = sim.fake_privileged(4, "no-recv", &[], PrivilegeMap(enter));
    for f in [&mut audio_only, &mut video_only, &mut nothing] {
        sim.join(f).unwrap();
    }
    for i in 0..5u8 {
        let (r, out, _) = sim.rtp(&mut tx, 10, &[i; 40]);
        assert_eq!(r, NodeResult::Media(Verdict::Forwarded(1)), "audio to the audio receiver only");
        assert_eq!(deliver(&mut audio_only, &out).len(), 1);
        assert!(out.iter().all(|(dst, _)| *dst == audio_only.addr));
        let (r, out, _) = sim.rtp(&mut tx, 20, &[i; 40]);
        assert_eq!(r, NodeResult::Media(Verdict::Forwarded(1)), "video to the video receiver only");
        assert_eq!(deliver(&mut video_only, &out).len(), 1);
        assert!(out.iter().all(|(dst, _)| *dst == video_only.addr));
    }
}

// In-room messages.

use relay::client::ReceivedMessage;

/// Message counters by name.
fn msgs(sim: &Sim, name: &str) -> u64 {
    sim.node.registry.message_counts().find(|(k, _)| *k == name).map_or(0, |(_, v)| v)
}

impl Sim {
    /// Runs the relay's retransmission tick; returns what it emitted.
    fn tick(&mut self) -> Emitted {
        let mut sink = VecSink::default();
        self.node.tick(self.now, &mut sink);
        sink.out
    }

    /// `f` seals a message; returns the datagram (not sent yet).
    fn message_bytes(&mut self, f: &mut Fake, cmd: u8, data: &[u8], reliable: bool, ordered: bool) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let s = f.client.send_message(self.now.mono_ms, cmd, data, reliable, ordered, &mut buf).unwrap();
        buf[..s.len].to_vec()
    }

    /// `f` sends a message; returns the result and what the relay emitted.
    fn message(&mut self, f: &mut Fake, cmd: u8, data: &[u8], reliable: bool, ordered: bool) -> (NodeResult, Emitted) {
        let m = self.message_bytes(f, cmd, data, reliable, ordered);
        self.send(f.addr, &m)
    }

    /// Gives `f` what the relay emitted for it, sends back what `f` queued in reply (acks),
    /// and returns the messages `f` now has, in order.
    fn receive(&mut self, f: &mut Fake, out: &[(SocketAddr, Vec<u8>)]) -> Vec<ReceivedMessage> {
        for (dst, b) in out {
            if *dst == f.addr {
                let mut b = b.clone();
                f.client.handle_at(self.now.mono_ms, &mut b);
            }
        }
        self.flush(f);
        std::iter::from_fn(|| f.client.next_message()).collect()
    }

    /// Sends what `f` queued (acks, retransmissions) to the relay; returns what it emitted.
    fn flush(&mut self, f: &mut Fake) -> Emitted {
        let mut emitted = Vec::new();
        let mut buf = [0u8; 1500];
        while let Some(n) = f.client.poll_transmit(&mut buf) {
            emitted.extend(self.send(f.addr, &buf[..n]).1);
        }
        emitted
    }
}

fn to(out: &[(SocketAddr, Vec<u8>)], f: &Fake) -> usize {
    out.iter().filter(|(d, _)| *d == f.addr).count()
}

#[test]
fn messages_reach_every_other_member_in_every_mode_and_never_cross_rooms_or_apps() {
    let cfg = config(&format!("[[app]]\nsdkappid = {APP2}\nsecret = \"{SECRET2}\"\n"));
    let mut sim = Sim::new(&cfg, 40);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "alice", RoomId::Num(1), &[], p);
    let mut b = sim.fake(2, "bob", RoomId::Num(1), &[], p);
    let mut c = sim.fake(3, "carol", RoomId::Num(1), &[], p);
    let mut d = sim.fake(4, "dave", RoomId::Num(2), &[], p);
    let mut e = sim.fake_with(
        5,
        ClientConfig {
            sdkappid: APP2,
            room: RoomId::Num(1),
            usersig: usersig::mint(SECRET2.as_bytes(), APP2.into(), "eve", 86400, T0, None),
            private_map_key: None,
            profile: p,
            ssrcs: vec![],
            nodes: sim.nodes(),
            failover_after_ms: None,
        },
    );
    for f in [&mut a, &mut b, &mut c, &mut d, &mut e] {
        sim.join(f).unwrap();
    }
    for (i, (reliable, ordered)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate()
    {
        let text = format!("mode {i}");
        let (r, out) = sim.message(&mut a, 3, text.as_bytes(), reliable, ordered);
        assert!(matches!(r, NodeResult::Control(Outcome::Message(_))), "{r:?}");
        // One copy each to bob and carol, an ack to alice for a reliable one, nothing else.
        assert_eq!(out.len(), 2 + usize::from(reliable), "mode {i}: {out:?}");
        assert_eq!((to(&out, &b), to(&out, &c), to(&out, &a)), (1, 1, usize::from(reliable)));
        for f in [&mut b, &mut c] {
            let got = sim.receive(f, &out);
            assert_eq!(got.len(), 1);
            let m = &got[0];
            assert_eq!((m.from_user.as_str(), m.cmd, &m.data[..]), ("alice", 3, text.as_bytes()));
            assert_eq!((m.reliable, m.ordered, m.seq), (reliable, ordered, 1), "each stream counts from 1");
        }
        // The copies differ per receiver (their own keys), and neither is alice's datagram.
        assert_ne!(out[0].1, out[1].1);
        if reliable {
            let ack = out.iter().find(|(dst, _)| *dst == a.addr).unwrap();
            let mut ack = ack.1.clone();
            assert_eq!(a.client.handle(&mut ack), Event::MessageAcked { seq: 1, ordered });
            assert_eq!(a.client.pending_messages(), 0);
        }
    }
    // The other room and the other app heard nothing; a copy for bob does not open for dave.
    let (_, out) = sim.message(&mut d, 1, b"alone in room 2", false, false);
    assert!(out.is_empty(), "dave is alone in his room");
    let (_, out) = sim.message(&mut b, 1, b"from bob", true, false);
    let mut for_c = out.iter().find(|(dst, _)| *dst == c.addr).unwrap().1.clone();
    assert_eq!(d.client.handle(&mut for_c.clone()), Event::Ignored, "another session's copy");
    assert_eq!(e.client.handle(&mut for_c), Event::Ignored);
    assert!(d.client.next_message().is_none() && e.client.next_message().is_none());
    assert_eq!((msgs(&sim, "received"), msgs(&sim, "delivered"), msgs(&sim, "acks_sent")), (6, 10, 3));
}

#[test]
fn a_lost_copy_is_retransmitted_until_acknowledged_and_a_lost_ack_costs_no_second_delivery() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 41);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    // The first copy to b is lost on the way.
    let (_, out) = sim.message(&mut a, 2, b"must arrive", true, false);
    assert_eq!(to(&out, &b), 1);
    sim.receive(&mut a, &out);
    assert_eq!(a.client.pending_messages(), 0, "the relay acknowledged it");
    sim.advance(100);
    assert!(sim.tick().is_empty(), "not due before 200 ms");
    sim.advance(100);
    let again = sim.tick();
    assert_eq!(to(&again, &b), 1, "retransmitted after 200 ms");
    assert_ne!(again[0].1, out.iter().find(|(d, _)| *d == b.addr).unwrap().1, "under a fresh counter");
    let got = sim.receive(&mut b, &again);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"must arrive");
    assert_eq!(msgs(&sim, "acks_received"), 1, "b's ack reached the relay");
    sim.advance(1000);
    assert!(sim.tick().is_empty(), "acknowledged: no more retransmissions");
    assert!(!sim.node.registry.has_message_work());
    assert_eq!(msgs(&sim, "retransmitted"), 1);

    // Now the relay's ack to a is lost: a retransmits, the relay acks again and b gets no
    // second copy.
    let (_, out) = sim.message(&mut a, 2, b"once", true, false);
    assert_eq!(sim.receive(&mut b, &out).len(), 1);
    sim.advance(200);
    a.client.poll_timeouts(sim.now.mono_ms);
    let resent = sim.flush(&mut a);
    assert_eq!((to(&resent, &a), to(&resent, &b)), (1, 0), "{resent:?}");
    assert_eq!(msgs(&sim, "duplicates"), 1);
    let mut ack = resent[0].1.clone();
    assert_eq!(a.client.handle(&mut ack), Event::MessageAcked { seq: 2, ordered: false });
    assert_eq!(a.client.message_stats().retransmitted, 1);
    // And a copy b sees twice (its ack lost) is acknowledged twice, delivered once.
    let (_, out) = sim.message(&mut a, 2, b"twice", true, false);
    let copy = out.iter().find(|(d, _)| *d == b.addr).unwrap().1.clone();
    let mut first = copy.clone();
    b.client.handle_at(sim.now.mono_ms, &mut first);
    let mut ackbuf = [0u8; 128];
    assert!(b.client.poll_transmit(&mut ackbuf).is_some(), "b's ack, lost");
    sim.advance(200);
    let again = sim.tick();
    assert_eq!(sim.receive(&mut b, &again).len(), 1, "the first copy's message");
    assert_eq!(b.client.message_stats().duplicates, 1);
    assert_eq!(b.client.message_stats().received, 3);
}

#[test]
fn ordered_messages_are_delivered_in_the_senders_order_despite_reordering_both_ways() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 42);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    // Reliable and ordered: a's datagrams reach the relay as 2, 1, 4, 3, 5.
    let sent: Vec<Vec<u8>> = (1..=5).map(|i| sim.message_bytes(&mut a, 4, &[i], true, true)).collect();
    let mut copies = Vec::new();
    for i in [1, 0, 3, 2, 4] {
        let (r, out) = sim.send(a.addr, &sent[i]);
        assert!(matches!(r, NodeResult::Control(Outcome::Message(_))));
        assert_eq!(to(&out, &a), 1, "held or delivered, each is acknowledged");
        copies.extend(out.into_iter().filter(|(d, _)| *d == b.addr));
    }
    assert_eq!(copies.len(), 5);
    // The relay kept a's order; now its copies reach b as 5, 3, 1, 4, 2.
    let order = [4, 2, 0, 3, 1];
    let shuffled: Vec<_> = order.iter().map(|&i| copies[i].clone()).collect();
    let got = sim.receive(&mut b, &shuffled);
    assert_eq!(got.iter().map(|m| m.data[0]).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);

    // Ordered but unreliable: a late one is dropped, never delivered out of order.
    let sent: Vec<Vec<u8>> = (1..=3).map(|i| sim.message_bytes(&mut a, 4, &[i], false, true)).collect();
    let mut delivered = Vec::new();
    for i in [0, 2, 1] {
        let (_, out) = sim.send(a.addr, &sent[i]);
        assert_eq!(to(&out, &a), 0, "unreliable: no ack");
        delivered.extend(sim.receive(&mut b, &out));
    }
    assert_eq!(delivered.iter().map(|m| m.data[0]).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(msgs(&sim, "late"), 1);

    // A gap that never fills (the sender gave up on 2) is skipped after GAP_MS.
    let sent: Vec<Vec<u8>> = (6..=8).map(|i| sim.message_bytes(&mut a, 4, &[i], true, true)).collect();
    let (_, out) = sim.send(a.addr, &sent[0]);
    assert_eq!(sim.receive(&mut b, &out).len(), 1);
    let (_, out) = sim.send(a.addr, &sent[2]);
    assert_eq!(to(&out, &b), 0, "8 waits for 7");
    sim.advance(relay::messages::GAP_MS);
    let out = sim.tick();
    let got = sim.receive(&mut b, &out);
    assert_eq!(got.iter().map(|m| m.data[0]).collect::<Vec<_>>(), [8]);
    assert_eq!(msgs(&sim, "gaps_skipped"), 1);
}

#[test]
fn the_per_sender_budget_is_thirty_messages_and_eight_kilobytes_a_second() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 43);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    let mut c = sim.fake(3, "c", RoomId::Num(1), &[], p);
    for f in [&mut a, &mut b, &mut c] {
        sim.join(f).unwrap();
    }
    let mut copies = 0;
    for i in 0..40u8 {
        copies += to(&sim.message(&mut a, 1, &[i; 10], false, false).1, &b);
    }
    assert_eq!((copies, msgs(&sim, "rate_limited")), (30, 10));
    // Another sender has a budget of its own.
    assert_eq!(to(&sim.message(&mut c, 1, b"c's own budget", false, false).1, &b), 1);
    sim.advance(1000);
    let mut copies = 0;
    for _ in 0..9 {
        copies += to(&sim.message(&mut a, 1, &[7; 1024], false, false).1, &b);
    }
    assert_eq!((copies, msgs(&sim, "rate_limited")), (8, 11), "8 KB a second");
    // A reliable message over the budget is not acknowledged: the client sends it again.
    let (_, out) = sim.message(&mut a, 1, b"over", true, false);
    assert!(out.is_empty());
    sim.advance(200);
    a.client.poll_timeouts(sim.now.mono_ms);
    let out = sim.flush(&mut a);
    assert_eq!((to(&out, &a), to(&out, &b)), (1, 1), "the retransmission is in budget");
}

#[test]
fn a_member_without_any_receive_privilege_gets_no_messages() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 44);
    let mut a = sim.fake_privileged(1, "a", &[], PrivilegeMap::ALL);
    let mut deaf =
        sim.fake_privileged(2, "deaf", &[], PrivilegeMap(PrivilegeMap::ENTER.0 | PrivilegeMap::SEND_AUDIO.0));
    let mut audio_only =
        sim.fake_privileged(3, "ears", &[], PrivilegeMap(PrivilegeMap::ENTER.0 | PrivilegeMap::RECV_AUDIO.0));
    for f in [&mut a, &mut deaf, &mut audio_only] {
        sim.join(f).unwrap();
    }
    let (_, out) = sim.message(&mut a, 5, b"who hears this", true, false);
    assert_eq!((to(&out, &deaf), to(&out, &audio_only)), (0, 1));
    // The deaf member may still send.
    let (_, out) = sim.message(&mut deaf, 5, b"I can talk", false, false);
    assert_eq!((to(&out, &a), to(&out, &audio_only)), (1, 1));
}

#[test]
fn replayed_tampered_and_misaddressed_message_datagrams_are_dropped_and_counted() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 45);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    let wire = sim.message_bytes(&mut a, 1, b"once only", false, false);
    let (_, out) = sim.send(a.addr, &wire);
    assert_eq!(to(&out, &b), 1);
    let (r, out) = sim.send(a.addr, &wire);
    assert_eq!((r, out.len()), (NodeResult::Control(Outcome::Ignored), 0));
    assert_eq!(msgs(&sim, "replayed"), 1);
    // Reordered on the way (a later counter first) both count; a replay of either does not.
    let (w1, w2) = (sim.message_bytes(&mut a, 1, b"1", false, false), sim.message_bytes(&mut a, 1, b"2", false, false));
    for w in [&w2, &w1] {
        assert_eq!(to(&sim.send(a.addr, w).1, &b), 1);
    }
    for w in [&w1, &w2] {
        assert!(sim.send(a.addr, w).1.is_empty());
    }
    assert_eq!(msgs(&sim, "replayed"), 3);
    // A fresh one from another address, a tampered one, one naming another session.
    let wire = sim.message_bytes(&mut a, 1, b"x", false, false);
    assert!(sim.send("198.18.9.9:1".parse().unwrap(), &wire).1.is_empty());
    let mut bad = wire.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(sim.send(a.addr, &bad).1.is_empty());
    let mut other = wire.clone();
    other[11] ^= 0x40;
    assert!(sim.send(a.addr, &other).1.is_empty());
    assert_eq!((msgs(&sim, "wrong_source"), msgs(&sim, "bad_auth"), msgs(&sim, "unknown_session")), (1, 1, 1));
    // None of these burnt the counter: the genuine datagram still goes through.
    assert_eq!(to(&sim.send(a.addr, &wire).1, &b), 1);
    assert_eq!(msgs(&sim, "received"), 4);
    // A copy replayed to the receiver is dropped there too.
    let (_, out) = sim.message(&mut a, 1, b"y", false, false);
    assert_eq!(sim.receive(&mut b, &out).len(), 1);
    assert!(sim.receive(&mut b, &out).is_empty());
    assert_eq!(b.client.message_stats().rejected, 1);
}

#[test]
fn copies_never_acknowledged_are_given_up_after_ten_tries_and_pending_is_bounded() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 46);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    let (_, out) = sim.message(&mut a, 1, b"into the void", true, false);
    sim.receive(&mut a, &out);
    let mut sends = to(&out, &b);
    for _ in 0..20 {
        sim.advance(200);
        sends += to(&sim.tick(), &b);
    }
    assert_eq!(sends, 10, "ten transmissions in all");
    assert_eq!((msgs(&sim, "retransmitted"), msgs(&sim, "given_up")), (9, 1));
    assert!(!sim.node.registry.has_message_work());
    // b acknowledges nothing: at most 32 copies wait for it, the rest are given up at once.
    for i in 0..30u8 {
        let (_, out) = sim.message(&mut a, 1, &[i], true, false);
        sim.receive(&mut a, &out);
    }
    sim.advance(1000);
    for i in 0..5u8 {
        let (_, out) = sim.message(&mut a, 1, &[i], true, false);
        sim.receive(&mut a, &out);
    }
    assert_eq!(msgs(&sim, "given_up"), 1 + 3);
    // The sender's own client gives up too when the relay never answers.
    let mut c = sim.fake(3, "c", RoomId::Num(1), &[], p);
    sim.join(&mut c).unwrap();
    let mut buf = [0u8; 1500];
    c.client.send_message(sim.now.mono_ms, 1, b"lost", true, false, &mut buf).unwrap();
    for _ in 0..12 {
        sim.advance(200);
        c.client.poll_timeouts(sim.now.mono_ms);
        while c.client.poll_transmit(&mut buf).is_some() {}
    }
    let s = c.client.message_stats();
    assert_eq!((s.sent, s.retransmitted, s.given_up, c.client.pending_messages()), (1, 9, 1, 0));
}

#[test]
fn a_hold_from_another_address_keeps_the_session_alive_where_it_is() {
    let cfg = config("");
    let mut sim = Sim::new(&cfg, 47);
    let p = Profile::AesCm128HmacSha1_80;
    let mut a = sim.fake(1, "a", RoomId::Num(1), &[(9, StreamKind::Video)], p);
    let mut b = sim.fake(2, "b", RoomId::Num(1), &[], p);
    sim.join(&mut a).unwrap();
    sim.join(&mut b).unwrap();
    // `relay-client attach`: holds from another port while a tool owns a's address.
    let sidecar: SocketAddr = "198.18.0.1:9999".parse().unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..8 {
        sim.advance(5_000);
        let n = a.client.hold(&mut buf).unwrap();
        let (r, out) = sim.send(sidecar, &buf[..n]);
        assert!(matches!(r, NodeResult::Control(Outcome::KeptAlive(_))), "{r:?}");
        assert_eq!(out[0].0, sidecar, "answered where the hold came from");
        let mut ack = out[0].1.clone();
        assert_eq!(a.client.handle(&mut ack), Event::KeepaliveAck);
        let n = b.client.keepalive(&mut buf).unwrap();
        sim.send(b.addr, &buf[..n]);
        assert_eq!(sim.node.expire(sim.now), 0);
    }
    // 40 s on, past the 30 s timeout: a's session lives, still at a's address.
    let (r, out, _) = sim.rtp(&mut a, 9, b"media from the tool");
    assert_eq!(r, NodeResult::Media(Verdict::Forwarded(1)));
    assert_eq!(deliver(&mut b, &out).len(), 1);
    // A keepalive (not a hold) from the sidecar is told the address changed, as before.
    let n = a.client.keepalive(&mut buf).unwrap();
    let (r, _) = sim.send(sidecar, &buf[..n]);
    assert!(matches!(r, NodeResult::Control(Outcome::AddressChanged(_))));
    // A replayed hold is ignored; after the holds stop, the session expires.
    let n = a.client.hold(&mut buf).unwrap();
    let hold = buf[..n].to_vec();
    sim.send(sidecar, &hold);
    assert_eq!(sim.send(sidecar, &hold).0, NodeResult::Control(Outcome::Ignored));
    sim.advance(31_000);
    let n = b.client.keepalive(&mut buf).unwrap();
    sim.send(b.addr, &buf[..n]);
    assert_eq!(sim.node.expire(sim.now), 1);
    assert_eq!(sim.node.registry.session_count(), 1);
}

/// What [`RestartSim`] recorded for the receiver.
#[derive(Debug, Default)]
struct Deliveries {
    /// (virtual ms, publisher's packet number) of every packet the receiver verified.
    got: Vec<(u64, u64)>,
    rejoined: u64,
}

/// One publisher and one receiver, both driven by [`Client::poll_session`] on a 10 ms
/// virtual tick, through a relay that can be restarted (a fresh registry with the same
/// relay key: what relayd does with its key file) or silenced.
struct RestartSim {
    sim: Sim,
    cfg: Validated,
    publisher: Fake,
    receiver: Fake,
    /// The publisher's packet number, carried in the payload (bytes 0..8).
    sent: u64,
    /// While true the relay receives and answers nothing (down).
    down: bool,
    seen: Deliveries,
}

impl RestartSim {
    fn new(seed: u64) -> Self {
        let cfg = Config::parse(&format!(
            "listen = \"127.0.0.1:7000\"\nworkers = 1\n[timeouts]\nkeepalive_secs = 1\nsession_secs = 5\n\
             [[app]]\nsdkappid = {APP}\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap()
        .validate(None)
        .unwrap();
        let mut sim = Sim::new(&cfg, seed);
        let p = Profile::AesCm128HmacSha1_80;
        let mut publisher = sim.fake(1, "pub", RoomId::Num(1), &[(0x1111, StreamKind::Video)], p);
        let mut receiver = sim.fake(2, "sub", RoomId::Num(1), &[], p);
        sim.join(&mut publisher).unwrap();
        sim.join(&mut receiver).unwrap();
        Self { sim, cfg, publisher, receiver, sent: 0, down: false, seen: Deliveries::default() }
    }

    fn restart(&mut self) {
        let identity = self.sim.node.registry.identity().clone();
        let mut rng = Rng(self.sim.rng.next());
        let reg = Registry::with_identity(&self.cfg, identity, Box::new(move || rng.key()));
        self.sim.node = Node::new(reg);
    }

    fn publisher_ssrc(&self) -> u32 {
        self.publisher.client.config().ssrcs[0].ssrc.get()
    }

    /// Delivers what the relay emitted to the two clients.
    fn deliver(&mut self, out: Emitted) {
        let now = self.sim.now.mono_ms;
        for (dst, mut bytes) in out {
            let is_receiver = dst == self.receiver.addr;
            let f = if is_receiver { &mut self.receiver } else { &mut self.publisher };
            match f.client.handle_at(now, &mut bytes) {
                Event::Media { len, .. } if is_receiver => {
                    assert!(len >= 12 + 8);
                    let n = u64::from_be_bytes(bytes[12..20].try_into().unwrap());
                    self.seen.got.push((now, n));
                }
                Event::Media { .. } => panic!("the publisher got media"),
                Event::MediaError(e) => panic!("media failed its checks at {now} ms: {e:?}"),
                Event::Rejoined { .. } if is_receiver => self.seen.rejoined += 1,
                _ => {}
            }
        }
    }

    /// Runs `ms` of virtual time: the publisher sends every 10 ms while joined, both poll.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.sim.advance(10);
            let now = self.sim.now;
            let mut buf = [0u8; 1500];
            for who in [0, 1] {
                let f = if who == 0 { &mut self.publisher } else { &mut self.receiver };
                if let Some(t) = f.client.poll_session(now.mono_ms, now.unix_secs * 1000, &mut buf).unwrap() {
                    let (Transmit::Keepalive(n) | Transmit::Join(n)) = t;
                    let from = f.addr;
                    if !self.down {
                        let (_, out) = self.sim.send(from, &buf[..n]);
                        self.deliver(out);
                    }
                }
            }
            if self.publisher.client.session().is_some() {
                let ssrc = self.publisher_ssrc();
                self.sent += 1;
                let payload = self.sent.to_be_bytes();
                let (_, out, _) = self.sim.rtp(&mut self.publisher, ssrc, &payload);
                if !self.down {
                    self.deliver(out);
                }
            }
            if !self.down {
                self.sim.node.expire(now);
            }
        }
    }

    /// Virtual ms from `since` to the receiver's first packet after it.
    fn recovered_after(&self, since: u64) -> u64 {
        let first = self.seen.got.iter().find(|(t, _)| *t > since).expect("media resumed").0;
        first - since
    }

    /// No packet number twice, and every number the publisher sent while both were joined.
    fn assert_no_duplicates(&self) {
        let mut ns: Vec<u64> = self.seen.got.iter().map(|(_, n)| *n).collect();
        let total = ns.len();
        ns.sort_unstable();
        ns.dedup();
        assert_eq!(ns.len(), total, "a packet was delivered twice");
    }
}

#[test]
fn after_a_relay_restart_clients_are_told_unknown_session_and_rejoin_with_fresh_ssrcs() {
    use relay::client::Loss;
    let mut s = RestartSim::new(41);
    s.run(2_500);
    let before = s.seen.got.len();
    assert!(before > 200, "media flows: {before}");
    let old_ssrc = s.publisher_ssrc();
    // A forged unknown_session while no keepalive awaits an answer changes nothing.
    let mut forged = [0u8; 64];
    let n = relay::proto::JoinError::write(ErrorCode::UnknownSession, "forged", &mut forged, 64).unwrap();
    let ev = s.receiver.client.handle_at(s.sim.now.mono_ms, &mut forged[..n]);
    assert!(matches!(ev, Event::Refused { .. }), "{ev:?}");
    assert!(!s.receiver.client.is_rejoining());

    s.restart();
    let restarted_at = s.sim.now.mono_ms;
    s.run(3_000);
    // Each client learns at its next keepalive (within 1 s) and joins again at once.
    let took = s.recovered_after(restarted_at);
    assert!(took <= 1_000 + 30, "media resumed {took} ms after the restart");
    assert_eq!(s.publisher.client.losses(Loss::UnknownSession), 1);
    assert_eq!(s.receiver.client.losses(Loss::UnknownSession), 1);
    assert_eq!(s.publisher.client.losses(Loss::NoAnswer), 0);
    assert_eq!(s.seen.rejoined, 1);
    assert_ne!(s.publisher_ssrc(), old_ssrc, "a rejoin declares fresh SSRCs");
    assert!(s.publisher.client.next_session_timeout().is_some());
    s.assert_no_duplicates();
}

#[test]
fn a_relay_that_stops_answering_is_left_at_the_deadline_and_rejoined_within_a_second_of_its_return() {
    use relay::client::liveness::{no_answer_deadline_ms, REJOIN_MAX_MS};
    use relay::client::Loss;
    let mut s = RestartSim::new(42);
    s.run(2_000);
    let old_ssrc = s.publisher_ssrc();
    s.down = true;
    // 1 s keepalives, 5 s timeout: the deadline is 3 s after the last answer.
    assert_eq!(no_answer_deadline_ms(1, 5), 3_000);
    // The receiver was answered (its media) until the relay went down: it waits the whole
    // deadline. The publisher's last answer, a keepalive-ack, may be a second older.
    s.run(2_900);
    assert!(!s.receiver.client.is_rejoining(), "not before the deadline");
    s.run(1_200);
    assert!(s.publisher.client.is_rejoining() && s.receiver.client.is_rejoining(), "lost at the deadline");
    // Down for longer: the joins back off to one a second.
    s.run(5_000);
    s.restart();
    s.down = false;
    let back_at = s.sim.now.mono_ms;
    s.run(3_000);
    let took = s.recovered_after(back_at);
    assert!(took <= REJOIN_MAX_MS + 20, "media resumed {took} ms after the relay came back");
    assert_eq!(s.publisher.client.losses(Loss::NoAnswer), 1);
    assert_eq!(s.receiver.client.losses(Loss::NoAnswer), 1);
    assert_eq!(s.publisher.client.losses(Loss::UnknownSession), 0);
    assert_ne!(s.publisher_ssrc(), old_ssrc);
    s.assert_no_duplicates();
}

#[test]
fn a_dismissed_room_ends_its_members_sessions_for_good_and_they_never_join_again() {
    let mut s = RestartSim::new(43);
    s.run(2_000);
    assert!(s.seen.got.len() > 150, "media flows");
    let room = relay::ids::RoomKey { app: relay::ids::SdkAppId::new(APP.into()).unwrap(), room: RoomId::Num(1) };
    let mut updates = Vec::new();
    assert_eq!(s.sim.node.registry.dismiss_room(s.sim.now, &room, &mut updates), 2);
    let dismissed_at = s.sim.now.mono_ms;
    // Each member hears room_dismissed at its next keepalive, then stays gone: no rejoin at
    // the no-answer deadline, nor later.
    s.run(15_000);
    for f in [&s.publisher, &s.receiver] {
        assert!(f.client.session().is_none(), "the session is over");
        assert!(!f.client.is_rejoining(), "a dismissed member never joins again");
        assert_eq!(f.client.next_session_timeout(), None);
    }
    assert!(s.seen.got.iter().all(|(t, _)| *t <= dismissed_at + 10), "no media after the dismissal");
    assert_eq!(s.seen.rejoined, 0);
    assert_eq!(s.sim.node.registry.session_count(), 0, "nobody joined again");
}

/// Two relays (each a [`Node`] with its own key) on one virtual clock, and a publisher and a
/// receiver whose node list is `[A, B]`, driven by [`Client::poll_session`] on a 10 ms tick.
/// Killing a node stops delivering to it and from it (`kill -9`); nothing else changes.
struct FailoverSim {
    cfg: Validated,
    nodes: [Node; 2],
    addrs: [SocketAddr; 2],
    alive: [bool; 2],
    now: Now,
    rng: Rng,
    publisher: Fake,
    receiver: Fake,
    /// The publisher's packet number, carried in the payload (bytes 0..8).
    sent: u64,
    /// (virtual ms, packet number) of every packet the receiver verified.
    got: Vec<(u64, u64)>,
    /// Failovers and rejoins each client reported: (0 publisher / 1 receiver, event).
    events: Vec<(usize, Event)>,
    /// Keepalives each client sent.
    keepalives: [u64; 2],
}

impl FailoverSim {
    fn new(seed: u64) -> Self {
        let cfg = Config::parse(&format!(
            "listen = \"127.0.0.1:7000\"\nworkers = 1\n[timeouts]\nkeepalive_secs = 1\nsession_secs = 5\n\
             [[app]]\nsdkappid = {APP}\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap()
        .validate(None)
        .unwrap();
        let node = |seed: u64| {
            let mut rng = Rng(seed);
            Node::new(Registry::with_rng(&cfg, Box::new(move || rng.key())))
        };
        let nodes = [node(seed ^ 0xa), node(seed ^ 0xb)];
        assert_ne!(nodes[0].registry.relay_key(), nodes[1].registry.relay_key());
        let addrs: [SocketAddr; 2] = ["203.0.113.1:7000".parse().unwrap(), "203.0.113.2:7000".parse().unwrap()];
        let list: Vec<ClientNode> =
            (0..2).map(|i| ClientNode::new(addrs[i], Some(nodes[i].registry.relay_key()))).collect();
        let mut rng = Rng(seed);
        let mut fake = |port: u16, user: &str, ssrcs: &[u32]| {
            let cfg = ClientConfig {
                sdkappid: APP,
                room: RoomId::Num(1),
                usersig: usersig::mint(SECRET.as_bytes(), APP.into(), user, 86400, T0, None),
                private_map_key: None,
                profile: Profile::AesCm128HmacSha1_80,
                ssrcs: ssrcs
                    .iter()
                    .map(|&s| DeclaredSsrc { ssrc: Ssrc::new(s).unwrap(), kind: StreamKind::Video })
                    .collect(),
                nodes: list.clone(),
                failover_after_ms: None,
            };
            Fake {
                addr: format!("198.18.0.1:{port}").parse().unwrap(),
                client: Client::with_key(cfg, rng.key()).unwrap(),
                seq: 0,
            }
        };
        let (publisher, receiver) = (fake(1, "pub", &[0x1111]), fake(2, "sub", &[]));
        let mut s = Self {
            cfg,
            nodes,
            addrs,
            alive: [true; 2],
            now: Now { mono_ms: 0, unix_secs: T0 },
            rng,
            publisher,
            receiver,
            sent: 0,
            got: Vec::new(),
            events: Vec::new(),
            keepalives: [0; 2],
        };
        for who in [0, 1] {
            let mut buf = [0u8; 1500];
            let f = s.fake(who);
            let n = f.client.join_at(T0 * 1000, &mut buf).unwrap();
            let (from, to) = (f.addr, f.client.relay_addr());
            assert_eq!(to, s.addrs[0], "the first node is joined first");
            s.send(from, to, &buf[..n]);
            assert!(s.fake(who).client.session().is_some(), "joined");
        }
        s
    }

    fn fake(&mut self, who: usize) -> &mut Fake {
        if who == 0 {
            &mut self.publisher
        } else {
            &mut self.receiver
        }
    }

    fn publisher_ssrc(&self) -> u32 {
        self.publisher.client.config().ssrcs[0].ssrc.get()
    }

    /// Sends `bytes` from `from` to the node at `to` and delivers what it emits, unless that
    /// node is dead.
    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let i = self.addrs.iter().position(|a| *a == to).expect("a known node");
        if !self.alive[i] {
            return;
        }
        let mut buf = bytes.to_vec();
        let mut sink = VecSink::default();
        self.nodes[i].handle(self.now, from, &mut buf, &mut sink);
        let now = self.now.mono_ms;
        for (dst, mut bytes) in sink.out {
            let who = if dst == self.receiver.addr { 1 } else { 0 };
            match self.fake(who).client.handle_at(now, &mut bytes) {
                Event::Media { len, .. } if who == 1 => {
                    assert!(len >= 12 + 8);
                    self.got.push((now, u64::from_be_bytes(bytes[12..20].try_into().unwrap())));
                }
                Event::Media { .. } => panic!("the publisher got media"),
                Event::MediaError(e) => panic!("media failed its checks at {now} ms: {e:?}"),
                ev @ (Event::FailedOver { .. } | Event::Rejoined { .. }) => self.events.push((who, ev)),
                _ => {}
            }
        }
    }

    /// A node restarts: a fresh registry with the same key (relayd with its key file).
    fn restart(&mut self, i: usize) {
        let identity = self.nodes[i].registry.identity().clone();
        let mut rng = Rng(self.rng.next());
        self.nodes[i] = Node::new(Registry::with_identity(&self.cfg, identity, Box::new(move || rng.key())));
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.now.mono_ms += 10;
            self.now.unix_secs = T0 + self.now.mono_ms / 1000;
            let now = self.now;
            let mut buf = [0u8; 1500];
            for who in [0, 1] {
                let f = self.fake(who);
                if let Some(t) = f.client.poll_session(now.mono_ms, now.unix_secs * 1000, &mut buf).unwrap() {
                    let n = match t {
                        Transmit::Keepalive(n) => {
                            self.keepalives[who] += 1;
                            n
                        }
                        Transmit::Join(n) => n,
                    };
                    let f = self.fake(who);
                    let (from, to) = (f.addr, f.client.relay_addr());
                    self.send(from, to, &buf[..n]);
                }
            }
            if self.publisher.client.session().is_some() {
                let ssrc = self.publisher_ssrc();
                self.sent += 1;
                let h = write_rtp_header(&mut buf, 96, self.publisher.seq, 0, ssrc);
                self.publisher.seq = self.publisher.seq.wrapping_add(1);
                buf[h..h + 8].copy_from_slice(&self.sent.to_be_bytes());
                let n = self.publisher.client.protect_rtp(&mut buf, h + 8).unwrap();
                let (from, to) = (self.publisher.addr, self.publisher.client.relay_addr());
                self.send(from, to, &buf[..n]);
            }
            for i in 0..2 {
                if self.alive[i] {
                    self.nodes[i].expire(now);
                }
            }
        }
    }

    /// Virtual ms from `since` to the receiver's first packet after it.
    fn recovered_after(&self, since: u64) -> u64 {
        self.got.iter().find(|(t, _)| *t > since).expect("media resumed").0 - since
    }

    fn assert_no_duplicates(&self) {
        let mut ns: Vec<u64> = self.got.iter().map(|(_, n)| *n).collect();
        let total = ns.len();
        ns.sort_unstable();
        ns.dedup();
        assert_eq!(ns.len(), total, "a packet was delivered twice");
    }
}

#[test]
fn the_clients_of_a_killed_node_fail_over_to_the_next_within_the_deadline_with_fresh_ssrcs() {
    use relay::client::liveness::DEFAULT_FAILOVER_MS;
    use relay::client::Loss;
    let mut s = FailoverSim::new(51);
    s.run(2_000);
    assert!(s.got.len() > 150, "media flows: {}", s.got.len());
    // The receiver hears media, which answers for the relay: only the 1 s keepalives. The
    // publisher hears nothing else, so it probes every quarter of the deadline.
    assert!(s.keepalives[1] <= 2, "receiver keepalives: {}", s.keepalives[1]);
    assert!(s.keepalives[0] >= 6, "publisher keepalives: {}", s.keepalives[0]);
    let old_ssrc = s.publisher_ssrc();
    s.alive[0] = false;
    let killed_at = s.now.mono_ms;
    s.run(1_100);
    assert!(!s.receiver.client.is_rejoining(), "not before the deadline");
    s.run(2_000);
    let took = s.recovered_after(killed_at);
    // The receiver's last answer is the kill's last packet: it waits the whole deadline, and
    // joins the second node at once; the publisher, probed every 300 ms, got there first.
    assert!(took <= DEFAULT_FAILOVER_MS + 30, "media resumed {took} ms after the kill");
    let (a, b) = (s.addrs[0], s.addrs[1]);
    for (who, f) in [(0, &s.publisher), (1, &s.receiver)] {
        assert_eq!(f.client.relay_addr(), b);
        assert_eq!(f.client.failovers(), 1);
        assert_eq!(f.client.losses(Loss::NoAnswer), 1);
        assert_eq!(f.client.losses(Loss::UnknownSession), 0);
        let evs: Vec<&Event> = s.events.iter().filter(|(w, _)| *w == who).map(|(_, e)| e).collect();
        assert!(
            matches!(evs[..], [Event::FailedOver { from, to, lost_ms, .. }]
                if *from == a && *to == b && *lost_ms > killed_at && *lost_ms <= killed_at + DEFAULT_FAILOVER_MS + 10),
            "{who}: {evs:?}"
        );
    }
    assert_ne!(s.publisher_ssrc(), old_ssrc, "fresh SSRCs at the next node");
    assert_eq!(s.nodes[1].registry.session_count(), 2);
    // Nothing was lost but what was sent while the publisher had no session: every packet
    // sent after it joined the second node arrived, once.
    s.assert_no_duplicates();
    let after: Vec<u64> = s.got.iter().filter(|(t, _)| *t > killed_at).map(|(_, n)| *n).collect();
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gaps, once");
    assert_eq!(after.last(), Some(&s.sent));
}

#[test]
fn a_restarted_node_is_rejoined_in_place_on_unknown_session_and_nobody_fails_over() {
    use relay::client::Loss;
    let mut s = FailoverSim::new(52);
    s.run(2_000);
    let old_ssrc = s.publisher_ssrc();
    s.restart(0);
    let restarted_at = s.now.mono_ms;
    s.run(3_000);
    // The publisher's next probe (≤ 300 ms) hears unknown_session; the receiver, whose media
    // stopped, probes 300 ms later and hears it too.
    let took = s.recovered_after(restarted_at);
    assert!(took <= 700, "media resumed {took} ms after the restart");
    for f in [&s.publisher, &s.receiver] {
        assert_eq!(f.client.relay_addr(), s.addrs[0], "still the first node");
        assert_eq!(f.client.failovers(), 0);
        assert_eq!(f.client.losses(Loss::UnknownSession), 1);
        assert_eq!(f.client.losses(Loss::NoAnswer), 0);
    }
    assert!(s.events.iter().all(|(_, e)| matches!(e, Event::Rejoined { .. })), "{:?}", s.events);
    assert_eq!(s.events.len(), 2);
    assert_ne!(s.publisher_ssrc(), old_ssrc);
    assert_eq!(s.nodes[1].registry.session_count(), 0, "the second node was never joined");
    s.assert_no_duplicates();
}

#[test]
fn a_dismissed_room_ends_the_sessions_and_no_other_node_is_tried() {
    let mut s = FailoverSim::new(53);
    s.run(2_000);
    let room = relay::ids::RoomKey { app: relay::ids::SdkAppId::new(APP.into()).unwrap(), room: RoomId::Num(1) };
    assert_eq!(s.nodes[0].registry.dismiss_room(s.now, &room, &mut Vec::new()), 2);
    let dismissed_at = s.now.mono_ms;
    s.run(15_000);
    for f in [&s.publisher, &s.receiver] {
        assert!(f.client.session().is_none(), "the session is over");
        assert!(!f.client.is_rejoining(), "a dismissed member never joins again, anywhere");
        assert_eq!(f.client.next_session_timeout(), None);
        assert_eq!(f.client.failovers(), 0);
    }
    assert!(s.got.iter().all(|(t, _)| *t <= dismissed_at + 10), "no media after the dismissal");
    assert!(s.events.is_empty(), "{:?}", s.events);
    assert_eq!(s.nodes[1].registry.session_count(), 0, "the second node was never joined");
}

#[test]
fn joins_that_go_unanswered_move_on_along_the_list_and_wrap_around() {
    use relay::client::liveness::DEFAULT_FAILOVER_MS;
    let mut s = FailoverSim::new(54);
    s.run(1_000);
    // Both nodes die; the clients try the second, then the first again, and so on.
    s.alive = [false, false];
    let killed_at = s.now.mono_ms;
    s.run(DEFAULT_FAILOVER_MS + 50);
    assert_eq!(s.receiver.client.relay_addr(), s.addrs[1], "moved on at the deadline");
    s.run(DEFAULT_FAILOVER_MS);
    assert_eq!(s.receiver.client.relay_addr(), s.addrs[0], "wrapped around: no answer from the second");
    // The first node comes back (restarted): the clients are on it, or get back to it.
    s.restart(0);
    s.alive[0] = true;
    let back_at = s.now.mono_ms;
    s.run(4_000);
    assert!(s.recovered_after(back_at) <= 2 * DEFAULT_FAILOVER_MS + 100, "rejoined the node that came back");
    assert!(s.got.iter().any(|(t, _)| *t > killed_at));
    for f in [&s.publisher, &s.receiver] {
        assert_eq!(f.client.relay_addr(), s.addrs[0]);
        assert_eq!(f.client.failovers(), 0, "joined where the session was lost: a rejoin");
    }
    s.assert_no_duplicates();
}

/// Keepalive-acks answer MAC-verified keepalives and are not charged to the reply budgets, so
/// clients probing a quiet session (failover) cannot exhaust them; refusals still are.
#[test]
fn keepalive_acks_are_not_charged_to_the_reply_budget() {
    let cfg = config("[join]\nreplies_per_sec = 1\nreplies_per_source_per_sec = 1\n");
    let mut sim = Sim::new(&cfg, 31);
    let mut a = sim.fake(1000, "alice", RoomId::Num(1), &[(0x11, StreamKind::Audio)], Profile::AesCm128HmacSha1_80);
    sim.join(&mut a).unwrap();
    for i in 0..20 {
        let mut buf = [0u8; 256];
        let n = a.client.keepalive(&mut buf).unwrap();
        let (r, out) = sim.send(a.addr, &buf[..n]);
        assert!(matches!(r, NodeResult::Control(Outcome::KeptAlive(_))), "keepalive {i}: {r:?}");
        assert_eq!(out.len(), 1, "keepalive {i} answered");
    }
    // A keepalive for a session that does not exist is refused within the budget only.
    let mut bogus = [0u8; 256];
    let n = a.client.keepalive(&mut bogus).unwrap();
    bogus[4..12].copy_from_slice(&0xdead_u64.to_be_bytes());
    let answered = (0..5).filter(|_| !sim.send("198.18.0.9:1".parse().unwrap(), &bogus[..n]).1.is_empty()).count();
    assert!(answered <= 1, "{answered} refusals answered with a budget of 1/s");
}
