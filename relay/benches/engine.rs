//! Microbenchmark: the engine's per-packet cost against the raw cost of the same crypto.
//!
//! For 1200-byte RTP, fan-out 1 and 4, and both mandatory profiles, it times
//! `Engine::handle` (session lookup, replay check, verify+decrypt, and per receiver: copy,
//! encrypt+tag) and, in the same run over the same bytes, the bare primitive calls that
//! any SRTP relay must make (one verify+decrypt, then one encrypt+tag per receiver): RustCrypto
//! for AES-CM + HMAC-SHA1, `ring` for AES-GCM, the libraries `relay::srtp` uses.
//! Each figure is the median of RUNS runs of BATCH packets.
//!
//! Run: `cargo bench -p relay --bench engine` (add `-- --json` for JSON).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use relay::client::{write_rtp_header, Client, ClientConfig, Event};
use relay::config::Config;
use relay::engine::{TxSink, Verdict};
use relay::ids::{RoomId, Ssrc};
use relay::node::Node;
use relay::proto::{DeclaredSsrc, StreamKind};
use relay::registry::Now;
use relay::srtp::Profile;
use sha1::Sha1;

const RUNS: usize = 7;
const BATCH: usize = 4096;
const RTP_LEN: usize = 1200;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const APP: u32 = 1_400_000_001;

struct Sink {
    bufs: Vec<[u8; 2048]>,
    used: usize,
    last_len: usize,
}

impl TxSink for Sink {
    type Dest = SocketAddr;
    fn buffer(&mut self) -> Option<&mut [u8]> {
        self.bufs.get_mut(self.used).map(|b| &mut b[..])
    }
    fn commit(&mut self, _dst: &mut SocketAddr, len: usize) -> bool {
        self.used += 1;
        self.last_len = len;
        true
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

struct Setup {
    node: Node,
    sender: Client,
    sender_addr: SocketAddr,
    seq: u16,
    now: Now,
}

fn setup(profile: Profile, fanout: usize) -> Setup {
    let cfg =
        Config::parse(&format!("listen = \"127.0.0.1:7000\"\n[[app]]\nsdkappid = {APP}\nsecret = \"{SECRET}\"\n"))
            .unwrap()
            .validate(None)
            .unwrap();
    let mut node = Node::from_config(&cfg);
    let now = Now { mono_ms: 0, unix_secs: relay_now() };
    let relay_key = node.registry.relay_key();
    let mut join = |user: &str, port: u16, ssrcs: Vec<DeclaredSsrc>| {
        let sig = relay::usersig::mint(SECRET.as_bytes(), APP.into(), user, 86400, now.unix_secs, None);
        let mut c = Client::new(ClientConfig {
            sdkappid: APP,
            room: RoomId::Num(1),
            usersig: sig,
            private_map_key: None,
            profile,
            ssrcs,
            nodes: vec![relay::client::Node::new("127.0.0.1:7000".parse().unwrap(), Some(relay_key))],
            failover_after_ms: None,
        })
        .unwrap();
        let addr: SocketAddr = format!("198.18.0.2:{port}").parse().unwrap();
        let mut buf = [0u8; 2048];
        let n = c.join_at(now.unix_secs * 1000, &mut buf).unwrap();
        let mut sink = Sink { bufs: vec![[0u8; 2048]; 1], used: 0, last_len: 0 };
        node.handle(now, addr, &mut buf[..n], &mut sink);
        let mut reply = sink.bufs[0];
        assert!(matches!(c.handle(&mut reply[..sink.last_len]), Event::Joined { .. }));
        (c, addr)
    };
    let (sender, sender_addr) =
        join("sender", 1, vec![DeclaredSsrc { ssrc: Ssrc::new(0x5eed).unwrap(), kind: StreamKind::Video }]);
    for i in 0..fanout {
        join(&format!("r{i}"), 100 + i as u16, vec![]);
    }
    Setup { node, sender, sender_addr, seq: 0, now }
}

fn relay_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn packets(s: &mut Setup) -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|_| {
            let mut buf = [0u8; 2048];
            let h = write_rtp_header(&mut buf, 96, s.seq, 0, 0x5eed);
            s.seq = s.seq.wrapping_add(1);
            buf[h..RTP_LEN].fill(0xab);
            let n = s.sender.protect_rtp(&mut buf, RTP_LEN).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

fn time_engine(s: &mut Setup, fanout: usize) -> f64 {
    let pkts = packets(s);
    let mut sink = Sink { bufs: vec![[0u8; 2048]; fanout], used: 0, last_len: 0 };
    let mut work = [0u8; 2048];
    let t = Instant::now();
    for p in &pkts {
        work[..p.len()].copy_from_slice(p);
        sink.used = 0;
        let v = s.node.engine.handle(s.now.mono_ms, s.sender_addr, &mut work[..p.len()], &mut sink);
        debug_assert_eq!(v, Verdict::Forwarded(fanout));
        black_box(&sink.bufs);
    }
    let ns = t.elapsed().as_nanos() as f64 / BATCH as f64;
    assert_eq!(s.node.engine.counters().media_accepted.load(std::sync::atomic::Ordering::Relaxed) % BATCH as u64, 0);
    ns
}

type Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The bare primitives: HMAC-SHA1-80 verify + AES-128-CTR decrypt, then per receiver a copy,
/// AES-128-CTR encrypt and HMAC-SHA1-80 tag. Same byte counts as SRTP.
fn time_raw_cm(pkts: &[Vec<u8>], fanout: usize) -> f64 {
    let key = [7u8; 16];
    let iv = [9u8; 16];
    let mac = <Hmac<Sha1> as Mac>::new_from_slice(&[3u8; 20]).unwrap();
    let mut work = [0u8; 2048];
    let mut outs = vec![[0u8; 2048]; fanout];
    let t = Instant::now();
    for p in pkts {
        let n = p.len() - 10;
        work[..p.len()].copy_from_slice(p);
        let mut m = mac.clone();
        m.update(&work[..n]);
        m.update(&[0, 0, 0, 0]);
        black_box(m.finalize().into_bytes());
        Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut work[12..n]);
        for o in outs.iter_mut() {
            o[..n].copy_from_slice(&work[..n]);
            Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut o[12..n]);
            let mut m = mac.clone();
            m.update(&o[..n]);
            m.update(&[0, 0, 0, 0]);
            let tag = m.finalize().into_bytes();
            o[n..n + 10].copy_from_slice(&tag[..10]);
        }
        black_box(&outs);
    }
    t.elapsed().as_nanos() as f64 / pkts.len() as f64
}

/// The bare primitives for AES-128-GCM (`ring`): one open, then per receiver a copy and a seal.
fn time_raw_gcm(pkts: &[Vec<u8>], fanout: usize) -> f64 {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let aead = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).unwrap());
    let nonce = || Nonce::assume_unique_for_key([1u8; 12]);
    // Make a valid ciphertext of the same size so the open succeeds.
    let n = pkts[0].len() - 16;
    let mut sealed = pkts[0][..n].to_vec();
    let (aad, body) = sealed.split_at_mut(12);
    let tag = aead.seal_in_place_separate_tag(nonce(), Aad::from(&*aad), body).unwrap();
    let mut work = [0u8; 2048];
    let mut outs = vec![[0u8; 2048]; fanout];
    let t = Instant::now();
    for p in pkts {
        work[..p.len()].copy_from_slice(p);
        work[..n].copy_from_slice(&sealed);
        let (hdr, body) = work[..n].split_at_mut(12);
        aead.open_in_place_separate_tag(nonce(), Aad::from(&*hdr), tag, body, 0..).unwrap();
        for o in outs.iter_mut() {
            o[..n].copy_from_slice(&work[..n]);
            let (hdr, body) = o[..n].split_at_mut(12);
            let t = aead.seal_in_place_separate_tag(nonce(), Aad::from(&*hdr), body).unwrap();
            o[n..n + 16].copy_from_slice(t.as_ref());
        }
        black_box(&outs);
    }
    t.elapsed().as_nanos() as f64 / pkts.len() as f64
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let mut rows = Vec::new();
    for profile in [Profile::AesCm128HmacSha1_80, Profile::AeadAes128Gcm] {
        for fanout in [1usize, 4] {
            let mut s = setup(profile, fanout);
            let (mut eng, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                eng.push(time_engine(&mut s, fanout));
                let pkts = packets(&mut s);
                raw.push(match profile {
                    Profile::AeadAes128Gcm => time_raw_gcm(&pkts, fanout),
                    _ => time_raw_cm(&pkts, fanout),
                });
                // The engine never sees the raw run's packets: its replay window just moves
                // ahead by one batch (well inside RFC 3711's ROC-estimation range).
            }
            let (e, emin, emax) = median(eng);
            let (r, rmin, rmax) = median(raw);
            rows.push(serde_json::json!({
                "profile": profile.name(), "fanout": fanout, "rtp_bytes": RTP_LEN, "runs": RUNS, "batch": BATCH,
                "engine_ns": e, "engine_min": emin, "engine_max": emax,
                "raw_ns": r, "raw_min": rmin, "raw_max": rmax,
                "overhead_pct": (e / r - 1.0) * 100.0,
                "engine_kpps": 1e6 / e,
            }));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
    println!("engine per-packet cost vs raw crypto, {RTP_LEN}-byte RTP, median of {RUNS} runs x {BATCH} packets");
    println!(
        "{:<26} {:>6} {:>22} {:>22} {:>9}",
        "profile", "fanout", "engine ns [min-max]", "raw ns [min-max]", "overhead"
    );
    for r in &rows {
        println!(
            "{:<26} {:>6} {:>8.0} [{:>5.0}-{:>5.0}] {:>8.0} [{:>5.0}-{:>5.0}] {:>8.1}%",
            r["profile"].as_str().unwrap(),
            r["fanout"],
            r["engine_ns"].as_f64().unwrap(),
            r["engine_min"].as_f64().unwrap(),
            r["engine_max"].as_f64().unwrap(),
            r["raw_ns"].as_f64().unwrap(),
            r["raw_min"].as_f64().unwrap(),
            r["raw_max"].as_f64().unwrap(),
            r["overhead_pct"].as_f64().unwrap(),
        );
    }
}
