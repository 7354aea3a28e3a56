//! Deterministic simulations of cascade legs: several whole relays (registry + engine each)
//! on a simulated network with a virtual clock, fake clients on every node, legs opened the
//! way relay-control opens them (the lower node id of each pair), every packet checked at
//! the receiver.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use relay::client::{self as rc, write_rtcp_rr, write_rtp_header, Client, ClientConfig, Event};
use relay::config::{Config, Validated};
use relay::engine::TxSink;
use relay::handshake::KeyPair;
use relay::ids::{RoomId, RoomKey, SdkAppId, Ssrc};
use relay::node::Node;
use relay::proto::{DeclaredSsrc, StreamKind};
use relay::registry::{Now, Peer, Registry};
use relay::srtp::Profile;
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

fn config() -> Validated {
    Config::parse(&format!(
        r#"listen = "127.0.0.1:7000"
workers = 1
[timeouts]
keepalive_secs = 5
session_secs = 30
[[app]]
sdkappid = {APP}
secret = "{SECRET}"
"#
    ))
    .unwrap()
    .validate(None)
    .unwrap()
}

struct Fake {
    addr: SocketAddr,
    node: usize,
    client: Client,
    seq: u16,
    /// (SSRC, packet number) of every RTP packet received, in order.
    got: Vec<(u32, u32)>,
    /// Sender SSRCs of the RTCP received.
    rtcp: Vec<u32>,
}

/// The simulated cluster: nodes by address, clients by address, datagrams in flight.
struct Net {
    nodes: Vec<(String, SocketAddr, Node)>,
    fakes: Vec<Fake>,
    now: Now,
    rng: Rng,
    queue: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Node pairs whose link is cut (both ways).
    cut: HashSet<(usize, usize)>,
}

impl Net {
    fn new(n: usize, seed: u64) -> Self {
        let cfg = config();
        let mut rng = Rng(seed);
        let nodes: Vec<_> = (0..n)
            .map(|i| {
                let mut r = Rng(seed ^ (0x1000 + i as u64));
                let reg = Registry::with_rng(&cfg, Box::new(move || r.key()));
                (format!("n{}", i + 1), SocketAddr::from(([198, 18, 1, i as u8 + 1], 7000)), Node::new(reg))
            })
            .collect();
        let _ = rng.next();
        let mut net = Self {
            nodes,
            fakes: Vec::new(),
            now: Now { mono_ms: 1, unix_secs: T0 },
            rng,
            queue: VecDeque::new(),
            cut: HashSet::new(),
        };
        net.set_peers();
        net
    }

    fn set_peers(&mut self) {
        let all: Vec<Peer> = self
            .nodes
            .iter()
            .map(|(id, addr, node)| Peer { node: id.clone(), endpoint: *addr, key: node.registry.relay_key() })
            .collect();
        for (id, _, node) in &mut self.nodes {
            let peers = all.iter().filter(|p| p.node != *id).cloned().collect();
            let mut updates = Vec::new();
            node.registry.set_peers(id.clone(), peers, &mut updates);
            let mut sink = VecSink::default();
            node.after_change(updates, &mut sink);
        }
    }

    fn room(n: u64) -> RoomKey {
        RoomKey { app: SdkAppId::new(APP.into()).unwrap(), room: RoomId::Num(n as u32) }
    }

    /// A client of `node` in room `room` sending `ssrcs` (an RTCP-only SSRC when empty).
    fn join(&mut self, node: usize, port: u16, user: &str, room: u64, ssrcs: &[(u32, StreamKind)]) -> usize {
        let ssrcs: Vec<DeclaredSsrc> =
            ssrcs.iter().map(|&(s, kind)| DeclaredSsrc { ssrc: Ssrc::new(s).unwrap(), kind }).collect();
        let cfg = ClientConfig {
            sdkappid: APP,
            room: RoomId::Num(room as u32),
            usersig: usersig::mint(SECRET.as_bytes(), APP.into(), user, 86400, T0, None),
            private_map_key: None,
            profile: Profile::AesCm128HmacSha1_80,
            ssrcs,
            nodes: vec![rc::Node { addr: self.nodes[node].1, key: Some(self.nodes[node].2.registry.relay_key()) }],
            failover_after_ms: None,
        };
        let addr = SocketAddr::from(([198, 18, 2, node as u8 + 1], port));
        let mut client = Client::with_key(cfg, self.rng.key()).unwrap();
        let mut buf = [0u8; 1500];
        let n = client.join_at(self.now.unix_secs * 1000, &mut buf).unwrap();
        self.fakes.push(Fake { addr, node, client, seq: 1, got: Vec::new(), rtcp: Vec::new() });
        self.queue.push_back((addr, self.nodes[node].1, buf[..n].to_vec()));
        self.pump();
        let f = self.fakes.len() - 1;
        assert!(self.fakes[f].client.session().is_some(), "{user} joined node {node}");
        f
    }

    fn node_at(&self, a: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.1 == a)
    }

    /// Delivers everything in flight, and what that makes, until nothing is.
    fn pump(&mut self) {
        let mut steps = 0;
        while let Some((src, dst, bytes)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "the network does not settle");
            if let Some(n) = self.node_at(dst) {
                if let Some(m) = self.node_at(src) {
                    if self.cut.contains(&(m.min(n), m.max(n))) {
                        continue;
                    }
                }
                let mut buf = bytes;
                let mut sink = VecSink::default();
                let now = self.now;
                self.nodes[n].2.handle(now, src, &mut buf, &mut sink);
                for (to, b) in sink.out {
                    self.queue.push_back((dst, to, b));
                }
            } else if let Some(f) = self.fakes.iter_mut().find(|f| f.addr == dst) {
                let mut b = bytes;
                match f.client.handle(&mut b) {
                    Event::Media { ssrc, rtcp: false, len, .. } => {
                        let n = u32::from_be_bytes(b[12..16].try_into().unwrap());
                        assert!(len >= 16);
                        f.got.push((ssrc, n));
                    }
                    Event::Media { ssrc, rtcp: true, .. } => f.rtcp.push(ssrc),
                    Event::Joined { .. } => {}
                    e => panic!("client at {dst} got {e:?}"),
                }
            }
        }
    }

    /// Advances the clock in 100 ms steps, running every node's leg timers.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 100 {
            self.now.mono_ms += 100;
            self.now.unix_secs = T0 + self.now.mono_ms / 1000;
            for n in 0..self.nodes.len() {
                let mut sink = VecSink::default();
                let now = self.now;
                self.nodes[n].2.leg_tick(now, &mut sink);
                let from = self.nodes[n].1;
                for (to, b) in sink.out {
                    self.queue.push_back((from, to, b));
                }
            }
            self.pump();
        }
    }

    /// What relay-control does: for each pair of nodes hosting `room`, the lower id opens.
    fn open_legs(&mut self, room: u64, hosts: &[usize]) {
        let key = Self::room(room);
        for &a in hosts {
            for &b in hosts {
                if a < b {
                    let peer = self.nodes[b].0.clone();
                    let now = self.now;
                    self.nodes[a].2.registry.open_leg(now, &key, &peer).unwrap();
                    let mut sink = VecSink::default();
                    self.nodes[a].2.after_change(Vec::new(), &mut sink);
                    let from = self.nodes[a].1;
                    for (to, b) in sink.out {
                        self.queue.push_back((from, to, b));
                    }
                }
            }
        }
        self.pump();
    }

    fn legs_up(&self, node: usize) -> usize {
        self.nodes[node].2.registry.legs(0).iter().filter(|l| l.state == "up").count()
    }

    fn send_rtp(&mut self, f: usize, ssrc: u32, number: u32) {
        let fake = &mut self.fakes[f];
        let mut buf = [0u8; 256];
        let h = write_rtp_header(&mut buf, 96, fake.seq, 0, ssrc);
        fake.seq = fake.seq.wrapping_add(1);
        buf[h..h + 4].copy_from_slice(&number.to_be_bytes());
        let n = fake.client.protect_rtp(&mut buf, h + 4).unwrap();
        let dst = self.nodes[fake.node].1;
        self.queue.push_back((fake.addr, dst, buf[..n].to_vec()));
        self.pump();
    }

    fn count(&self, f: usize, ssrc: u32) -> usize {
        self.fakes[f].got.iter().filter(|g| g.0 == ssrc).count()
    }

    fn assert_exactly_once(&self, f: usize, ssrc: u32, n: u32) {
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for g in self.fakes[f].got.iter().filter(|g| g.0 == ssrc) {
            *seen.entry(g.1).or_default() += 1;
        }
        for i in 0..n {
            assert_eq!(seen.get(&i), Some(&1), "receiver {f}: packet {i} of SSRC {ssrc} once");
        }
        assert_eq!(seen.len(), n as usize, "receiver {f}: nothing else from SSRC {ssrc}");
    }
}

const A: StreamKind = StreamKind::Audio;
const V: StreamKind = StreamKind::Video;
const R: StreamKind = StreamKind::Rtcp;

/// A room on three nodes forms a full mesh of three legs; every receiver gets every
/// publisher's packets exactly once, from local and remote publishers alike, and another
/// room's traffic never reaches it.
#[test]
fn a_room_on_three_nodes_is_a_full_mesh_and_delivers_each_packet_once() {
    let mut net = Net::new(3, 7);
    let p1 = net.join(0, 1000, "p1", 1, &[(0x1001, A), (0x1002, V)]);
    let r1 = net.join(0, 1001, "r1", 1, &[(0x1101, R)]);
    let r2 = net.join(1, 1000, "r2", 1, &[(0x1201, R)]);
    let p3 = net.join(2, 1000, "p3", 1, &[(0x1301, V)]);
    let r3 = net.join(2, 1001, "r3", 1, &[(0x1302, R)]);
    // Room 2 on nodes 1 and 2 only.
    let q1 = net.join(0, 2000, "q1", 2, &[(0x2001, V)]);
    let s2 = net.join(1, 2000, "s2", 2, &[(0x2101, R)]);
    net.open_legs(1, &[0, 1, 2]);
    net.open_legs(2, &[0, 1]);
    net.run(200);
    assert_eq!([net.legs_up(0), net.legs_up(1), net.legs_up(2)], [3, 3, 2], "room 1: a mesh of 3; room 2: one leg");
    for i in 0..50 {
        net.send_rtp(p1, 0x1001, i);
        net.send_rtp(p1, 0x1002, i);
        net.send_rtp(p3, 0x1301, i);
        net.send_rtp(q1, 0x2001, i);
    }
    for r in [r1, r2, r3] {
        net.assert_exactly_once(r, 0x1001, 50);
        net.assert_exactly_once(r, 0x1002, 50);
    }
    for r in [r1, r2] {
        net.assert_exactly_once(r, 0x1301, 50);
    }
    net.assert_exactly_once(p1, 0x1301, 50);
    net.assert_exactly_once(s2, 0x2001, 50);
    for r in [r1, r2, r3, p1, p3] {
        assert_eq!(net.count(r, 0x2001), 0, "room 2 never reaches room 1");
    }
    assert_eq!(net.count(p3, 0x1301), 0, "nobody gets its own stream back");
    let legs = net.nodes[1].2.registry.legs(0);
    let l = legs.iter().find(|l| l.room == "1" && l.peer == "n1").unwrap();
    assert_eq!((l.role.as_str(), l.streams_in, l.streams_out), ("responder", 3, 1), "{l:?}");
}

/// Feedback crosses legs to the sender of the SSRC it names, and only there.
#[test]
fn rtcp_feedback_crosses_a_leg_to_the_named_sender() {
    let mut net = Net::new(2, 11);
    let p1 = net.join(0, 1000, "p1", 1, &[(0x1001, V)]);
    let other = net.join(0, 1001, "o1", 1, &[(0x1002, V)]);
    let r2 = net.join(1, 1000, "r2", 1, &[(0x1201, R)]);
    net.open_legs(1, &[0, 1]);
    net.run(200);
    net.send_rtp(p1, 0x1001, 0);
    // A receiver report from node 2's receiver about p1's stream.
    let f = &mut net.fakes[r2];
    let mut buf = [0u8; 256];
    let n = write_rtcp_rr(&mut buf, 0x1201);
    // Turn the empty RR into one with a report block about 0x1001.
    buf[0] = 0x81;
    buf[3] = 7;
    buf[8..12].copy_from_slice(&0x1001u32.to_be_bytes());
    let len = n.max(32);
    let n = f.client.protect_rtcp(&mut buf, len).unwrap();
    let dst = net.nodes[1].1;
    net.queue.push_back((f.addr, dst, buf[..n].to_vec()));
    net.pump();
    assert_eq!(net.fakes[p1].rtcp, vec![0x1201], "the report reached the stream's sender across the leg");
    assert!(net.fakes[other].rtcp.is_empty(), "and nobody else");
}

/// A cut link stops media only between that pair; the leg goes down, and its initiator
/// forms it again once the link heals.
#[test]
fn a_partition_stops_one_pair_and_the_leg_comes_back_when_it_heals() {
    let mut net = Net::new(3, 13);
    let p1 = net.join(0, 1000, "p1", 1, &[(0x1001, A)]);
    let r2 = net.join(1, 1000, "r2", 1, &[(0x1201, R)]);
    let r3 = net.join(2, 1000, "r3", 1, &[(0x1301, R)]);
    net.open_legs(1, &[0, 1, 2]);
    net.run(200);
    net.cut.insert((0, 1));
    net.run(3000);
    for i in 0..10 {
        net.send_rtp(p1, 0x1001, i);
    }
    assert_eq!(net.count(r2, 0x1001), 0, "cut off");
    net.assert_exactly_once(r3, 0x1001, 10);
    assert_eq!(net.legs_up(0), 1, "only the leg to node 3 is up on node 1");
    net.cut.clear();
    net.run(1500);
    assert_eq!(net.legs_up(0), 2, "the initiator formed the leg again");
    for i in 10..20 {
        net.send_rtp(p1, 0x1001, i);
    }
    let got: Vec<u32> = net.fakes[r2].got.iter().map(|g| g.1).collect();
    assert_eq!(got, (10..20).collect::<Vec<_>>(), "node 2's receiver is back, nothing twice");
    assert_eq!(net.count(r3, 0x1001), 20);
}

/// A room that loses its last local member closes its legs on both sides; a leg join for a
/// room a node does not host is refused, and one from an unregistered key gets no answer.
#[test]
fn legs_close_with_the_room_and_need_a_registered_peer_and_a_hosted_room() {
    let mut net = Net::new(2, 17);
    let p1 = net.join(0, 1000, "p1", 1, &[(0x1001, A)]);
    let _r2 = net.join(1, 1000, "r2", 1, &[(0x1201, R)]);
    net.open_legs(1, &[0, 1]);
    net.run(200);
    assert_eq!((net.legs_up(0), net.legs_up(1)), (1, 1));
    // p1 leaves: node 1 hosts nothing, and its leg closes at both ends at once.
    let f = &mut net.fakes[p1];
    let mut buf = [0u8; 256];
    let n = f.client.leave(&mut buf).unwrap();
    let dst = net.nodes[0].1;
    net.queue.push_back((f.addr, dst, buf[..n].to_vec()));
    net.pump();
    assert!(net.nodes[0].2.registry.legs(0).is_empty() && net.nodes[1].2.registry.legs(0).is_empty());
    // Node 2 opens a leg for room 1 to node 1, which hosts no member of it now.
    let now = net.now;
    net.nodes[1].2.registry.open_leg(now, &Net::room(1), "n1").unwrap();
    let mut sink = VecSink::default();
    net.nodes[1].2.after_change(Vec::new(), &mut sink);
    for (to, b) in sink.out {
        let src = net.nodes[1].1;
        net.queue.push_back((src, to, b));
    }
    net.pump();
    let l = &net.nodes[1].2.registry.legs(0)[0];
    assert_eq!(l.state, "connecting");
    assert!(l.last_error.as_deref().unwrap_or("").contains("no local member"), "{l:?}");
    // A third relay nobody registered: its joins go unanswered.
    let stranger = Net::new(1, 99);
    let counts: HashMap<_, _> = net.nodes[0].2.registry.leg_counts().collect();
    let refused_before = counts.get("unknown_source").copied().unwrap_or(0);
    let mut buf = [0u8; 1500];
    let payload = relay::proto::leg::JoinPayload {
        timestamp_ms: net.now.unix_secs * 1000,
        leg: 5,
        sdkappid: APP,
        room: RoomId::Num(1),
        node: "n2",
    };
    let key = stranger.nodes[0].2.registry.identity().current.secret();
    let (_, n) =
        relay::proto::leg::write_join(key, net.nodes[0].2.registry.relay_key().bytes(), [7; 32], &payload, &mut buf)
            .unwrap();
    // From node 2's own address, but under a key that is not node 2's.
    let mut sink = VecSink::default();
    let now = net.now;
    let from = net.nodes[1].1;
    net.nodes[0].2.handle(now, from, &mut buf[..n], &mut sink);
    assert!(sink.out.is_empty(), "no answer to a key the registry does not have");
    let counts: HashMap<_, _> = net.nodes[0].2.registry.leg_counts().collect();
    assert_eq!(counts.get("wrong_peer_key"), Some(&1));
    // From an address that is no peer's.
    let stray: SocketAddr = "198.18.9.9:7000".parse().unwrap();
    net.nodes[0].2.handle(now, stray, &mut buf[..n], &mut sink);
    assert!(sink.out.is_empty());
    let counts: HashMap<_, _> = net.nodes[0].2.registry.leg_counts().collect();
    assert_eq!(counts.get("unknown_source").copied().unwrap_or(0), refused_before + 1);
}

/// A captured leg join replayed opens nothing.
#[test]
fn a_replayed_leg_join_opens_nothing() {
    let mut net = Net::new(2, 19);
    net.join(0, 1000, "p1", 1, &[(0x1001, A)]);
    net.join(1, 1000, "r2", 1, &[(0x1201, R)]);
    let now = net.now;
    net.nodes[0].2.registry.open_leg(now, &Net::room(1), "n2").unwrap();
    let mut sink = VecSink::default();
    net.nodes[0].2.after_change(Vec::new(), &mut sink);
    let join = sink.out[0].1.clone();
    let (from, to) = (net.nodes[0].1, net.nodes[1].1);
    net.queue.push_back((from, to, join.clone()));
    net.pump();
    net.run(200);
    assert_eq!(net.legs_up(1), 1);
    let mut sink = VecSink::default();
    net.nodes[1].2.handle(now, from, &mut join.clone(), &mut sink);
    assert!(sink.out.is_empty(), "a replay gets no answer");
    assert_eq!(net.legs_up(1), 1, "and replaces nothing");
    let counts: HashMap<_, _> = net.nodes[1].2.registry.leg_counts().collect();
    assert_eq!(counts.get("replayed"), Some(&1));
}

/// An SSRC a leg brings cannot be declared by a local joiner, and a remote SSRC that a local
/// member already used is not relayed from the leg (counted).
#[test]
fn ssrcs_stay_unique_across_legs() {
    let mut net = Net::new(2, 23);
    let p1 = net.join(0, 1000, "p1", 1, &[(0x1001, A)]);
    let r2 = net.join(1, 1000, "r2", 1, &[(0x1201, R)]);
    net.open_legs(1, &[0, 1]);
    net.run(200);
    // A local joiner on node 2 declaring node 1's SSRC is refused.
    let cfg = ClientConfig {
        sdkappid: APP,
        room: RoomId::Num(1),
        usersig: usersig::mint(SECRET.as_bytes(), APP.into(), "dup", 86400, T0, None),
        private_map_key: None,
        profile: Profile::AesCm128HmacSha1_80,
        ssrcs: vec![DeclaredSsrc { ssrc: Ssrc::new(0x1001).unwrap(), kind: A }],
        nodes: vec![rc::Node { addr: net.nodes[1].1, key: Some(net.nodes[1].2.registry.relay_key()) }],
        failover_after_ms: None,
    };
    let mut c = Client::with_key(cfg, net.rng.key()).unwrap();
    let mut buf = [0u8; 1500];
    let n = c.join_at(net.now.unix_secs * 1000, &mut buf).unwrap();
    let mut sink = VecSink::default();
    let now = net.now;
    net.nodes[1].2.handle(now, "198.18.2.2:3000".parse().unwrap(), &mut buf[..n], &mut sink);
    let mut reply = sink.out[0].1.clone();
    match c.handle(&mut reply) {
        Event::Refused { code, .. } => assert_eq!(code, Some(relay::proto::ErrorCode::SsrcConflict)),
        e => panic!("{e:?}"),
    }
    // Node 1 also refuses node 2's receiver's RTCP SSRC, which the leg announced.
    let cfg =
        ClientConfig { ssrcs: vec![DeclaredSsrc { ssrc: Ssrc::new(0x1201).unwrap(), kind: V }], ..c.config().clone() };
    let mut c = Client::with_key(
        ClientConfig {
            nodes: vec![rc::Node { addr: net.nodes[0].1, key: Some(net.nodes[0].2.registry.relay_key()) }],
            ..cfg
        },
        net.rng.key(),
    )
    .unwrap();
    let n = c.join_at(net.now.unix_secs * 1000, &mut buf).unwrap();
    let mut sink = VecSink::default();
    net.nodes[0].2.handle(now, "198.18.2.1:3000".parse().unwrap(), &mut buf[..n], &mut sink);
    let mut reply = sink.out[0].1.clone();
    assert!(matches!(c.handle(&mut reply), Event::Refused { code: Some(relay::proto::ErrorCode::SsrcConflict), .. }));
    assert_eq!(net.count(r2, 0x1001), 0);
    net.send_rtp(p1, 0x1001, 0);
    assert_eq!(net.count(r2, 0x1001), 1);

    // Two nodes admitted the same SSRC before their room's leg existed: neither takes the
    // other's from the leg, so each receiver gets only its own node's stream.
    let a = net.join(0, 3000, "a", 3, &[(0x3001, V)]);
    let c1 = net.join(0, 3001, "c1", 3, &[(0x3101, R)]);
    let b = net.join(1, 3000, "b", 3, &[(0x3001, V)]);
    let c2 = net.join(1, 3001, "c2", 3, &[(0x3201, R)]);
    net.open_legs(3, &[0, 1]);
    net.run(600);
    net.send_rtp(a, 0x3001, 1);
    net.send_rtp(b, 0x3001, 2);
    assert_eq!(net.fakes[c1].got, vec![(0x3001, 1)]);
    assert_eq!(net.fakes[c2].got, vec![(0x3001, 2)]);
    for node in 0..2 {
        let counts: HashMap<_, _> = net.nodes[node].2.registry.leg_counts().collect();
        assert!(counts.get("ssrc_conflicts").copied().unwrap_or(0) >= 1, "node {node}: {counts:?}");
    }
}

/// Room events: a cursor sees each gain and loss once; an old or foreign cursor resyncs.
#[test]
fn room_events_follow_local_rooms() {
    let mut net = Net::new(1, 29);
    let first = net.nodes[0].2.registry.room_events(0);
    assert!(first.resync && first.events.is_empty());
    let p = net.join(0, 1000, "p1", 4, &[(0x1001, A)]);
    let e = net.nodes[0].2.registry.room_events(first.next);
    assert!(!e.resync);
    assert_eq!(e.events.len(), 1);
    assert!(e.events[0].local && e.events[0].room == "4");
    net.join(0, 1001, "p2", 4, &[(0x1002, A)]);
    assert!(net.nodes[0].2.registry.room_events(e.next).events.is_empty(), "a second member is no event");
    let f = &mut net.fakes[p];
    let mut buf = [0u8; 256];
    let n = f.client.leave(&mut buf).unwrap();
    let dst = net.nodes[0].1;
    net.queue.push_back((f.addr, dst, buf[..n].to_vec()));
    net.pump();
    assert!(net.nodes[0].2.registry.room_events(e.next).events.is_empty(), "the room still has p2");
    assert!(net.nodes[0].2.registry.room_events(e.next + 1000).resync, "a cursor from another process");
}
