//! Writes the seed corpus of every fuzz target, `<DIR>/<target>/<name>`, from the test
//! vectors of the parsers' unit tests (RFC 3711 / RFC 7714 / libsrtp packets, the scapy
//! frames, the official UserSig tokens and userbufs, Tencent's TC3 example) and from the
//! crate's own encoders (relay::proto, relay::srtp, relay::usersig, control::tc3), and the
//! API's documented request bodies.
//!
//! Run from the repository root, where `DIR` defaults to `fuzz/corpus`:
//! `cargo run --locked --manifest-path fuzz/Cargo.toml --example seeds [DIR]`.
//! Each target's directory is written anew. CI regenerates into a temporary directory and
//! fails if the committed seeds differ, so they follow the wire formats when those change.
//!
//! Everything here is deterministic: fixed keys, nonces and ephemeral secrets, no clock.
//! Seeds that must get past a target's authentication are made with the fixed keys that
//! target's fuzz entry point uses, so the fuzzer starts beyond the MAC check.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use relay::identity::{RelayKey, StaticKey};
use relay::ids::{RoomId, Ssrc};
use relay::noise::Responder;
use relay::proto::msg::{self, Ack, Flags, Message};
use relay::proto::v2::{self, AnswerPayload, JoinPayload};
use relay::proto::{DeclaredSsrc, ErrorCode, Join, JoinError, JoinOk, MsgType, StreamKind, Ticket, MAX_LEN, MAX_SSRCS};
use relay::srtp::rtcp::Compound;
use relay::srtp::{Profile, RtcpReceiver, RtpReceiver, SessionKeys};
use relay::usersig::{self, PrivilegeMap, RoomRef};
use relay::wire::{self, ethernet, EthernetAddress};

/// One target's seeds: file name and bytes.
type Seeds = Vec<(String, Vec<u8>)>;

fn main() -> io::Result<()> {
    let dir = std::env::args_os().nth(1).map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    let targets: [(&str, Seeds); 9] = [
        ("api", api_seeds()),
        ("msg", msg_seeds()),
        ("proto", proto_seeds()),
        ("rtcp", rtcp_seeds()),
        ("srtp", srtp_seeds()),
        ("srtp_views", srtp_views_seeds()),
        ("tc3", tc3_seeds()),
        ("usersig", usersig_seeds()),
        ("wire", wire_seeds()),
    ];
    for (target, seeds) in targets {
        write_target(&dir.join(target), &seeds)?;
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}

fn write_target(dir: &Path, seeds: &Seeds) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        assert!(!name.contains('/'), "seed name {name:?} is a file name");
        fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// Hex with any whitespace, as the unit tests write their vectors.
fn h(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits")).collect()
}

fn seed(name: &str, bytes: impl Into<Vec<u8>>) -> (String, Vec<u8>) {
    (name.to_owned(), bytes.into())
}

// --- SRTP and RTP/RTCP (relay/src/srtp/session.rs, header.rs, rtcp.rs tests) ---

/// libsrtp `srtp_validate` master key ‖ salt (also RFC 3711 B.3's).
const LIBSRTP_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6";
/// `srtp::fuzz_unprotect`'s fixed master key and salt.
const FUZZ_MASTER_KEY: [u8; 16] = [0x42; 16];
const FUZZ_MASTER_SALT: [u8; 14] = [0x24; 14];

/// libsrtp's RTP test packet: seq 0x1234, SSRC 0xcafebabe, 16 × ab.
fn libsrtp_rtp() -> Vec<u8> {
    h(&format!("800f1234decafbadcafebabe{}", "ab".repeat(16)))
}

/// libsrtp's RTCP test packet: an SR from 0xcafebabe, 16 × ab.
fn libsrtp_rtcp() -> Vec<u8> {
    h(&format!("81c8000bcafebabe{}", "ab".repeat(16)))
}

/// RFC 7714 §16.1.1's RTP plaintext.
const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                           20646976 69736120 696e2070 61727465 73207472 6573";
/// RFC 7714 §17.1's RTCP plaintext.
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                            4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

/// An RTP packet with a CSRC and a 100-byte payload (session.rs `rtp_packet`).
fn rtp_with_csrc() -> Vec<u8> {
    let mut p = h("8160 0001 00000e10 11223344 55667788");
    p.extend((0..100u8).map(|i| i.wrapping_mul(7)));
    p
}

fn keys(profile: Profile, key: &[u8], salt: &[u8]) -> SessionKeys {
    SessionKeys::new(profile, key, &salt[..profile.master_salt_len()]).expect("16-byte key, salt sliced to the profile")
}

fn protect_rtp(keys: &SessionKeys, plain: &[u8], roc: u32) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + keys.profile().rtp_overhead(), 0);
    let n = keys.protect_rtp(&mut buf, plain.len(), roc).expect("a test RTP packet protects");
    buf.truncate(n);
    buf
}

fn protect_rtcp(keys: &SessionKeys, plain: &[u8], index: u32) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + keys.profile().rtcp_overhead(), 0);
    let n = keys.protect_rtcp(&mut buf, plain.len(), index).expect("a test RTCP packet protects");
    buf.truncate(n);
    buf
}

fn profile_name(p: Profile) -> &'static str {
    match p {
        Profile::AesCm128HmacSha1_80 => "aes-cm-sha1-80",
        Profile::AesCm128HmacSha1_32 => "aes-cm-sha1-32",
        Profile::AeadAes128Gcm => "aead-aes-128-gcm",
    }
}

/// The plaintexts, the libsrtp vectors under the libsrtp key, and packets protected under
/// the target's own key for every profile: ROC 0 (what a fresh receiver guesses), ROC
/// 0x1234 (what `unprotect_rtp_at` is given) and SRTCP index 1.
fn srtp_seeds() -> Seeds {
    let mut s = vec![
        seed("libsrtp-rtp-plain", libsrtp_rtp()),
        seed("libsrtp-rtcp-plain", libsrtp_rtcp()),
        seed("rfc7714-rtp-plain", h(RFC7714_RTP)),
        seed("rfc7714-rtcp-plain", h(RFC7714_RTCP)),
    ];
    let libsrtp = h(LIBSRTP_KEY);
    let libsrtp = keys(Profile::AesCm128HmacSha1_80, &libsrtp[..16], &libsrtp[16..]);
    s.push(seed("libsrtp-validate-srtp", protect_rtp(&libsrtp, &libsrtp_rtp(), 0)));
    s.push(seed("libsrtp-validate-srtcp", protect_rtcp(&libsrtp, &libsrtp_rtcp(), 1)));
    for profile in Profile::ALL {
        let k = keys(profile, &FUZZ_MASTER_KEY, &FUZZ_MASTER_SALT);
        let p = profile_name(profile);
        let rtp = protect_rtp(&k, &libsrtp_rtp(), 0);
        let rtcp = protect_rtcp(&k, &libsrtp_rtcp(), 1);
        assert!(k.unprotect_rtp(&mut RtpReceiver::new(), &mut rtp.clone()).is_ok(), "{p}: a fresh receiver opens it");
        assert!(k.unprotect_rtcp(&mut RtcpReceiver::new(), &mut rtcp.clone()).is_ok(), "{p}: SRTCP opens");
        s.push(seed(&format!("{p}-rtp-roc0"), rtp));
        s.push(seed(&format!("{p}-rtp-roc1234"), protect_rtp(&k, &libsrtp_rtp(), 0x1234)));
        s.push(seed(&format!("{p}-rtp-csrc-roc0"), protect_rtp(&k, &rtp_with_csrc(), 0)));
        s.push(seed(&format!("{p}-rtcp-index1"), rtcp));
    }
    s
}

/// The header views' vectors (header.rs `fuzz_views_inputs` and the RFC packets).
fn srtp_views_seeds() -> Seeds {
    vec![
        seed("rfc7714-rtp", h(RFC7714_RTP)),
        seed("rtp-padding-csrc3-extension", h("9200 0001 00000000 11111111 22222222 33333333 bede0001 10ff0000 aa")),
        seed("rtp-extension-too-long", h("900f1234 decafbad cafebabe bedeffff")),
        seed("rtp-csrc15-truncated", h("8f0f1234 decafbad cafebabe")),
        seed("rtp-csrc", rtp_with_csrc()),
        seed("libsrtp-rtp", libsrtp_rtp()),
        seed("rfc7714-rtcp-sr", h(RFC7714_RTCP)),
        seed("rtcp-rr-padding", h("a1c90002 cafebabe 01020304")),
    ]
}

// RTCP packets of rtcp.rs's tests. SSRCs: A's audio aaaa0001 and video aaaa0002, B's video
// bbbb0001, C's (receive-only) RTCP SSRC cccc0001.
const SR_A: &str = "82c80012 aaaa0002 e5d1a3b2 4bc6a7ef 0001e240 00000064 00003e80
                    bbbb0001 05000003 00010203 00000010 a3b24bc6 00000800
                    12345678 00fffffe 0000ffff 00000020 00000000 00000000";
const RR_C: &str = "83c90013 cccc0001
                    aaaa0001 00000000 00000c1f 00000004 00000000 00000000
                    aaaa0002 0a000002 00015b3a 0000001c a3b24bc6 00000800
                    bbbb0001 00000000 000004d2 00000002 00000000 00000000";
const SDES_C: &str = "81ca0005 cccc0001 010b7669 65776572 40656467 65000000";
const BYE_C: &str = "81cb0002 cccc0001 03627965";
const PLI_B: &str = "81ce0002 cccc0001 bbbb0001";
const FIR_AB: &str = "84ce0006 cccc0001 00000000 bbbb0001 07000000 aaaa0002 09000000";
const NACK_A: &str = "81cd0003 cccc0001 aaaa0002 04d20005";
const REMB_AB: &str = "8fce0006 cccc0001 00000000 52454d42 020d1a2b aaaa0002 bbbb0001";
const TCC_A: &str = "afcd0006 cccc0001 aaaa0002 00010003 00001005 20030a0b 0c000003";
const APP_C: &str = "80cc0002 cccc0001 41424344";

fn compound(parts: &[&str]) -> Vec<u8> {
    let c: Vec<u8> = parts.iter().flat_map(|p| h(p)).collect();
    assert!(Compound::new_checked(&c[..]).is_ok(), "seed compound {parts:?} parses");
    c
}

/// Every packet of rtcp.rs's tests that starts a compound on its own, and the compounds
/// its routing tests build.
fn rtcp_seeds() -> Seeds {
    vec![
        seed("sr-a", compound(&[SR_A])),
        seed("rr-c", compound(&[RR_C])),
        seed("pli-b", compound(&[PLI_B])),
        seed("fir-ab", compound(&[FIR_AB])),
        seed("nack-a", compound(&[NACK_A])),
        seed("remb-ab", compound(&[REMB_AB])),
        seed("tcc-a", compound(&[TCC_A])),
        seed("rr-sdes-bye", compound(&[RR_C, SDES_C, BYE_C])),
        seed("rr-sdes-feedback", compound(&[RR_C, SDES_C, PLI_B, FIR_AB, NACK_A, REMB_AB, TCC_A])),
        seed("sr-sdes-bye", compound(&[SR_A, SDES_C, BYE_C])),
        seed("sr-feedback-bye-app", compound(&[SR_A, PLI_B, FIR_AB, REMB_AB, "81cb0001 aaaa0002", APP_C])),
        seed("tcc-tcc-pli", compound(&[TCC_A, TCC_A, PLI_B])),
        seed("nack-app-xr", compound(&[NACK_A, APP_C, "80cf0001 cccc0001"])),
        seed("rr-bye-two-ssrcs", compound(&["80c90001 aaaa0001", "82cb0004 aaaa0001 aaaa0002 05676f6e 65210000"])),
    ]
}

// --- Control messages (relay/src/proto tests), built with relay::proto's encoders ---

/// The UserSig of proto's `sample_join`.
const SAMPLE_USERSIG: &str = "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwoYmZhZWxsYGRhYGZiamZpZWJqamSFIFGYlmZpY1AMgBEtQ_";

fn ssrcs() -> [Option<DeclaredSsrc>; MAX_SSRCS] {
    let mut ssrcs = [None; MAX_SSRCS];
    ssrcs[0] = Some(DeclaredSsrc { ssrc: Ssrc::new(0x1234).expect("non-zero"), kind: StreamKind::Audio });
    ssrcs[1] = Some(DeclaredSsrc { ssrc: Ssrc::new(0x5678).expect("non-zero"), kind: StreamKind::Video });
    ssrcs
}

fn written(write: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut out = [0u8; MAX_LEN];
    let n = write(&mut out);
    out[..n].to_vec()
}

/// v1 joins, answers, refusals and tickets; v2 joins, answers and a cookie reply that
/// `v2::fuzz_parse` can open (relay key [9; 32], join mac1 zero); and the message frames.
fn proto_seeds() -> Seeds {
    let join = Join {
        sdkappid: 1_400_000_000,
        profile: 1,
        room: RoomId::Str("lobby".into()),
        key_share: [7; 32],
        ssrcs: ssrcs(),
        usersig: SAMPLE_USERSIG,
        private_map_key: None,
    };
    let join_pmk = Join { room: RoomId::Num(10_000), private_map_key: Some("a-private-map-key"), ..join.clone() };
    let ok = JoinOk { session: 42, key_share: [3; 32], keepalive_secs: 5, timeout_secs: 30, confirm: [1; 16] };
    let ticket = |version, ty| Ticket { version, ty, session: 42, counter: 7, mac: [0x5a; 16] };
    let mut s = vec![
        seed("v1-join", written(|o| join.write(o).expect("sample join fits"))),
        seed("v1-join-num-room-pmk", written(|o| join_pmk.write(o).expect("sample join fits"))),
        seed("v1-join-ok", written(|o| ok.write(o).expect("fits"))),
        seed(
            "v1-join-error",
            written(|o| JoinError::write(ErrorCode::BadSignature, "bad usersig", o, MAX_LEN).expect("fits")),
        ),
    ];
    for (name, version, ty) in [
        ("v1-keepalive", 1, MsgType::Keepalive),
        ("v1-keepalive-ack", 1, MsgType::KeepaliveAck),
        ("v1-leave", 1, MsgType::Leave),
        ("v2-address-changed", 2, MsgType::AddressChanged),
        ("v2-hold", 2, MsgType::Hold),
    ] {
        s.push(seed(name, written(|o| ticket(version, ty).write(o).expect("fits"))));
    }

    // v2 (proto/v2.rs tests): relay static key from secret [5; 32], ephemerals [1; 32], [2; 32].
    let relay = StaticKey::from_secret([5; 32]);
    let payload = JoinPayload {
        timestamp_ms: 1_767_225_600_000,
        sdkappid: 1_400_000_000,
        profile: 1,
        room: RoomId::Str("lobby".into()),
        ssrcs: ssrcs(),
        usersig: SAMPLE_USERSIG,
        private_map_key: Some("a-private-map-key"),
    };
    let mut join = [0u8; MAX_LEN];
    let (_, n) = v2::write_join(&relay.public(), [1; 32], &payload, Some(&[9; v2::COOKIE_LEN]), &mut join)
        .expect("sample v2 join fits");
    s.push(seed("v2-join", &join[..n]));
    s.push(seed("v2-join-payload", written(|o| payload.write(o).expect("fits"))));
    for (name, answer) in [
        ("v2-answer-joined", AnswerPayload::Joined { session: 42, keepalive_secs: 5, timeout_secs: 30 }),
        ("v2-answer-refused", AnswerPayload::Refused { code: 5, detail: "expired" }),
    ] {
        let mut noise =
            join[v2::JoinFrame::new_checked(&join[..n]).expect("written join checks").noise_range()].to_vec();
        let (responder, _) =
            Responder::read_first(v2::PROLOGUE, relay.secret(), &mut noise).expect("the relay reads its own join");
        s.push(seed(name, written(|o| v2::write_answer(responder, [2; 32], &answer, o, n).expect("fits").0)));
    }
    let cookie_key = RelayKey([9; 32]);
    let cookie = written(|o| v2::write_cookie(&cookie_key, [7; 12], &[9; v2::COOKIE_LEN], &[0; 16], o).expect("fits"));
    assert_eq!(v2::read_cookie(&cookie_key, &[0; 16], &cookie), Ok([9; v2::COOKIE_LEN]), "the target opens it");
    s.push(seed("v2-cookie", cookie));
    s.extend(msg_frames());
    s.extend(leg_frames());
    s
}

/// Cascade leg frames under `leg::fuzz_parse`'s fixed keys: the responder's static secret
/// [5; 32], streams under [9; 32].
fn leg_frames() -> Seeds {
    use relay::noise::DhSecret;
    use relay::proto::leg;
    let responder = DhSecret::new([5; 32]);
    let initiator = DhSecret::new([6; 32]);
    let payload = leg::JoinPayload {
        timestamp_ms: 1_767_225_600_000,
        leg: 7,
        sdkappid: 1_400_000_000,
        room: RoomId::Num(42),
        node: "node-1",
    };
    let mut join = [0u8; MAX_LEN];
    let (_, n) = leg::write_join(&initiator, responder.public(), [1; 32], &payload, &mut join).expect("fits");
    let mut scratch = [0u8; MAX_LEN];
    let (resp, _, _) = leg::read_join(&responder, &join[..n], &mut scratch).expect("the responder reads it");
    let answer =
        written(|o| leg::write_answer(resp, 7, [2; 32], &leg::AnswerPayload::Up { leg: 9 }, o).expect("fits").0);
    let streams = leg::Streams { closing: false, version: 1, ssrcs: ssrcs().iter().flatten().copied().collect() };
    let sealed = written(|o| leg::write_streams(&[9; 32], 9, 1, &streams, o).expect("fits"));
    vec![seed("leg-join", &join[..n]), seed("leg-answer", answer), seed("leg-streams", sealed)]
}

/// `msg::fuzz_parse`'s fixed session key.
const MSG_KEY: [u8; 32] = [0; 32];

fn messages() -> [(&'static str, Message<'static>); 3] {
    [
        ("message-unreliable", Message { cmd: 1, flags: Flags::new(false, false), seq: 1, from: None, data: b"hi" }),
        (
            "message-reliable-ordered-from",
            Message { cmd: 3, flags: Flags::new(true, true), seq: 77, from: Some("alice"), data: b"hello room" },
        ),
        (
            "message-reliable-empty",
            Message { cmd: 10, flags: Flags::new(true, false), seq: u32::MAX, from: None, data: b"" },
        ),
    ]
}

/// Message and ack frames sealed under [`MSG_KEY`] (proto/msg.rs tests).
fn msg_frames() -> Seeds {
    let mut s = Seeds::new();
    for (name, m) in messages() {
        let body = written(|o| m.write(o).expect("fits"));
        let frame = written(|o| msg::seal(MsgType::Message, 42, 9, &MSG_KEY, &body, o).expect("fits"));
        let mut out = [0u8; MAX_LEN];
        let opened = msg::Frame::new_checked(&frame).and_then(|f| f.open(&MSG_KEY, &mut out).map(<[u8]>::to_vec));
        assert_eq!(opened, Ok(body), "the target opens {name}");
        s.push(seed(&format!("frame-{name}"), frame));
    }
    let ack = Ack { flags: Flags::new(true, true), seq: 77 }.to_bytes();
    s.push(seed("frame-ack", written(|o| msg::seal(MsgType::MessageAck, 42, 10, &MSG_KEY, &ack, o).expect("fits"))));
    s
}

/// The sealed frames, and the bare bodies that `Message::parse` and `Ack::parse` see.
fn msg_seeds() -> Seeds {
    let mut s = msg_frames();
    for (name, m) in messages() {
        s.push(seed(&format!("body-{name}"), written(|o| m.write(o).expect("fits"))));
    }
    s.push(seed("body-ack", Ack { flags: Flags::new(true, false), seq: 5 }.to_bytes()));
    s
}

// --- UserSig (relay/src/usersig.rs tests) ---

/// The token CPython's official generator emits for (1400000000, "xiaojun", 1700000000, 86400).
const PY_TOKEN: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpQJlLMxM4IIlmbkgIUNzNMXFmekg44P93EzccsOcA0qT8yOKnfwLksLcjNPcnNNMzb0Ccg1Sq6IMs1LDPH1ywpJtlWoBk68y0A__";
/// A token from Tencent's client-side generator with the SDKAppID as a string.
const REAL_WORLD_TOKEN: &str = "eJwtjM0KgkAYRd9ltoXO5-yZ0CaiDCwINWipzkwMqehkoUXvnpjLe*4994OSKHZeyqIAeQ5GyykbqerOaDNhoiRAkUshSUGl4CudcQVCaF*zHBM6Ow95z5rGyNEAijETDEDMneobYxUKOKY*xn-WmWokwOm4JJyz*cXcxoPLgiehddtzFQ-hsbV9WZMyja7es3Pf6VZEG*WeLrDbD4c1*v4AXaU4QQ__";
/// Userbufs of the official `_gen_userbuf` layout, numeric and string room.
const PY_USERBUF_NUM: &str = "0000077869616f6a756e53724e000000271066413f00000000ff00000000";
const PY_USERBUF_STR: &str = "0100077869616f6a756e53724e000000000066413f00000000ff00000000000a31303030303030303430";

/// `usersig::fuzz_decode`'s fixed key.
const USERSIG_FUZZ_KEY: &[u8] = b"fuzz-key";
const T0: u64 = 1_700_000_000;

/// The official tokens and userbufs, and tokens minted under the target's key (so they
/// verify): plain, with a non-ASCII identifier, and PrivateMapKeys for both room kinds.
fn usersig_seeds() -> Seeds {
    let exp = (T0 + 86_400 * 180) as u32;
    let userbuf = usersig::encode_userbuf("xiaojun", 1_400_000_000, RoomRef::Str("1000000040"), exp, PrivilegeMap::ALL);
    assert_eq!(userbuf, h(PY_USERBUF_STR), "encode_userbuf matches the official layout");
    let pmk = |room| {
        usersig::mint_private_map_key(USERSIG_FUZZ_KEY, 1_400_000_000, "xiaojun", 86_400, T0, room, PrivilegeMap::ALL)
    };
    vec![
        seed("python-official-token", PY_TOKEN),
        seed("real-world-string-sdkappid", REAL_WORLD_TOKEN),
        seed("userbuf-num-room", h(PY_USERBUF_NUM)),
        seed("userbuf-str-room", userbuf),
        seed("minted", usersig::mint(USERSIG_FUZZ_KEY, 1_400_000_000, "xiaojun", 86_400, T0, None)),
        seed("minted-escaped-identifier", usersig::mint(USERSIG_FUZZ_KEY, 1_400_000_000, "用户\"x\\😀/", 60, T0, None)),
        seed("private-map-key-num-room", pmk(RoomRef::Num(10_000))),
        seed("private-map-key-str-room", pmk(RoomRef::Str("1000000040"))),
    ]
}

// --- The management API and socket (control/src/server/routes.rs, relay/src/mgmt.rs tests) ---

/// A well-formed input for each of `fuzz_targets/api.rs`'s parsers, behind its selector
/// byte: the JSON bodies written by the API's own types, so they follow the API.
fn api_seeds() -> Seeds {
    use control::api;
    let quotas = api::Quotas { max_rooms: 10, max_members_per_room: 8, max_sessions: 40 };
    let pmk = api::PrivateMapKeyRequest { room_id: Some(42), str_room_id: None, privileges: 0xff };
    let bodies: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "create-app",
            0,
            json(&api::CreateApp {
                sdkappid: 1_400_000_001,
                quotas: Some(quotas),
                require_private_map_key: Some(false),
                allow_v1_joins: None,
            }),
        ),
        (
            "patch-app",
            1,
            json(&api::PatchApp { quotas: Some(quotas), require_private_map_key: Some(true), allow_v1_joins: None }),
        ),
        ("overlap", 2, json(&api::Overlap { overlap_secs: 3600 })),
        (
            "mint-usersig",
            3,
            json(&api::MintUserSig {
                user_id: "alice".into(),
                expire_secs: 3600,
                private_map_key: Some(pmk.clone()),
                room_id: Some(42),
                str_room_id: None,
                region: Some("eu-west".into()),
            }),
        ),
        (
            "add-block",
            4,
            json(&api::AddBlock { cidr: "198.51.100.0/24".into(), ttl_secs: 600, reason: Some("flood".into()) }),
        ),
        (
            "limits",
            5,
            json(&api::Limits {
                pps_rate_per_sec: 5000,
                pps_burst: 10_000,
                join_rate_per_sec: 100,
                join_burst: 200,
                port_min: 7000,
                port_max: 7000,
            }),
        ),
        ("create-key", 6, json(&api::CreateKey { role: api::Role::Operator, label: "ops".into() })),
        (
            "t-remove-user",
            7,
            json(&api::TRemoveUser {
                sdkappid: 1_400_000_001,
                room_id: 42,
                user_ids: vec!["alice".into(), "bob".into()],
                ban_secs: 60,
            }),
        ),
        (
            "t-remove-str-room-user",
            8,
            json(&api::TRemoveStrRoomUser {
                sdkappid: 1_400_000_001,
                room_id: "lobby".into(),
                user_ids: vec!["alice".into()],
                ban_secs: 0,
            }),
        ),
        ("t-dismiss-str-room", 9, json(&api::TDismissStrRoom { sdkappid: 1_400_000_001, room_id: "lobby".into() })),
        ("private-map-key", 10, json(&pmk)),
        ("cidr-v4", 11, b"198.51.100.0/24".to_vec()),
        ("cidr-v6", 11, b"2001:db8::/32".to_vec()),
        ("path-sdkappid", 12, b"1400000001".to_vec()),
        ("path-str-room", 12, b"s:lobby".to_vec()),
        ("query", 13, b"sdkappid=1400000001&limit=100".to_vec()),
        ("tc3-timestamp", 14, b"1551113065".to_vec()),
        (
            "mgmt-block",
            15,
            json(&relay::mgmt::Request::Block {
                ip: "198.51.100.7".parse().expect("an address"),
                prefix_len: 32,
                ttl_secs: 600,
            }),
        ),
        ("mgmt-rooms", 15, json(&relay::mgmt::Request::Rooms { sdkappid: Some(1_400_000_001), limit: Some(10) })),
    ];
    bodies
        .into_iter()
        .map(|(name, which, body)| {
            let mut bytes = vec![which];
            bytes.extend_from_slice(&body);
            seed(name, bytes)
        })
        .collect()
}

/// A request type as the API's JSON, checked to parse back (so the seed starts past the
/// parser's refusals).
fn json<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> Vec<u8> {
    let bytes = serde_json::to_vec(v).expect("an API type serializes");
    if let Err(e) = control::server::routes::parse_body::<T>(&bytes) {
        panic!("seed {} does not parse: {e:?}", String::from_utf8_lossy(&bytes));
    }
    bytes
}

// --- TC3 (control/src/tc3.rs tests) ---

/// Tencent's published TC3-HMAC-SHA256 example (DescribeInstances on cvm, 2019-02-25), and
/// the same request signed with a nonce header.
fn tc3_seeds() -> Seeds {
    use control::tc3::{sign, sign_headers, Request, Scope};

    const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const BODY: &str = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    let headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Host", "cvm.tencentcloudapi.com"),
        ("X-TC-Nonce", "0123456789abcdef"),
    ];
    let req = Request { method: "POST", uri: "/", query: "", headers: &headers, payload: BODY.as_bytes() };
    let scope = Scope { timestamp: 1_551_113_065, service: "cvm" };
    let example = sign(ID, KEY.as_bytes(), &scope, &req).expect("both required headers");
    let nonce = sign_headers(ID, KEY.as_bytes(), &scope, &req, "content-type;host;x-tc-nonce").expect("well-formed");
    vec![seed("tencent-example", example.authorization), seed("signed-nonce-header", nonce.authorization)]
}

// --- Ethernet/IP/UDP (relay/src/wire/mod.rs tests) ---

/// scapy frames and packets of wire's tests.
const ETH_V4_UDP: &str = "02000000000202000000000108004500002b123440004011a675c0a80001c0a800c7
                          13880d960017f40568656c6c6f206564676572656c6179";
const ETH_V6_UDP: &str = "02000000000202000000000186dd6b812345001a114020010db80000000000000000000000012001
                          0db800000000000000000000000213880d96001aa44d68656c6c6f206564676572656c6179207636";
const ETH_VLAN_V4_UDP: &str = "0200000000020200000000018100a064080045000020000100004011f8b3c0a80001c0a800c71388
                               0d96000c84c4766c616e";
const V4_OPTIONS_UDP: &str = "46000024000700002011f1bb0a0000010a0000029404000004d2162e000cecef6f707473";
const V4_FIRST_FRAGMENT: &str = "4500002400092000401146be0a0000010a000002000100020010c38e6672616730303030";
const V4_AS_WRITTEN: &str = "4500002000004000401126cb0a0000010a00000203e807d0000cffff65a17a7a";
const V6_AS_WRITTEN: &str = "60000000000c114020010db800000000000000000000000120010db8000000000000000000000002
                             03e807d0000cffff1e2f7a7a";

fn with_ethernet(ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let mut frame = h("020000000002 020000000001");
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(packet);
    frame
}

/// An SRTP packet in a frame written by `write_udp_headers`.
fn written_frame(eth: bool, src: &str, dst: &str) -> Vec<u8> {
    let payload = libsrtp_rtp();
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().expect("address"), dst.parse().expect("address"));
    let macs = (EthernetAddress([2, 0, 0, 0, 0, 1]), EthernetAddress([2, 0, 0, 0, 0, 2]));
    let hdr = wire::headers_len(eth, dst.is_ipv4());
    let mut frame = vec![0; hdr + payload.len()];
    frame[hdr..].copy_from_slice(&payload);
    wire::write_udp_headers(&mut frame, eth.then_some(macs), src, dst, payload.len()).expect("frame fits");
    frame
}

fn wire_seeds() -> Seeds {
    vec![
        seed("eth-ipv4-udp", h(ETH_V4_UDP)),
        seed("eth-ipv6-udp", h(ETH_V6_UDP)),
        seed("eth-vlan-ipv4-udp", h(ETH_VLAN_V4_UDP)),
        seed("ipv4-options-udp", h(V4_OPTIONS_UDP)),
        seed("eth-ipv4-options-udp", with_ethernet(ethernet::ETHERTYPE_IPV4, &h(V4_OPTIONS_UDP))),
        seed("eth-ipv4-first-fragment", with_ethernet(ethernet::ETHERTYPE_IPV4, &h(V4_FIRST_FRAGMENT))),
        seed("eth-ipv4-as-written", with_ethernet(ethernet::ETHERTYPE_IPV4, &h(V4_AS_WRITTEN))),
        seed("ipv6-as-written", h(V6_AS_WRITTEN)),
        seed("eth-ipv6-as-written", with_ethernet(ethernet::ETHERTYPE_IPV6, &h(V6_AS_WRITTEN))),
        seed("written-eth-ipv4-srtp", written_frame(true, "192.0.2.1:5000", "198.51.100.7:3478")),
        seed("written-eth-ipv6-srtp", written_frame(true, "[2001:db8::1]:5000", "[2001:db8::2]:3478")),
        seed("written-ipv4-srtp", written_frame(false, "192.0.2.1:5000", "198.51.100.7:3478")),
    ]
}
