//! AES-128-GCM candidates for edgerelay's `AEAD_AES_128_GCM` SRTP transform, timed side by
//! side on the same work as `relay-bench baseline crypto`'s `raw` GCM figure: decrypt (tag
//! checked) one RTP packet of `size` bytes (12-byte header as AAD, the rest ciphertext, 16-byte
//! tag after it) with one key, then re-encrypt it in place with another key.
//!
//! Timing is this thread's CPU time from `/proc/thread-self/schedstat`, as in
//! `bench/src/crypto.rs`, so other load on the machine inflates the numbers less.
//!
//! Usage:
//! - `gcm-candidates run [--secs S] [--size N] [--label L]`: one repetition of every
//!   candidate, in an order rotated by `--rep`; prints `label/name us_per_packet` lines.
//! - `gcm-candidates sizes`: `size_of` of each candidate's per-key state.
//! - `gcm-candidates summarize FILE`: median [min–max] and run count per candidate.
//!
//! `run.sh` beside this file interleaves repetitions of this binary built with and without
//! `-C target-cpu=native` and `openssl speed`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Instant;

const HEADER: usize = 12;
const TAG: usize = 16;
const NONCE: [u8; 12] = [9; 12];
const K1: [u8; 16] = [1; 16];
const K2: [u8; 16] = [2; 16];

/// This thread's CPU time in seconds (`/proc/thread-self/schedstat`), or the wall clock.
fn thread_cpu(wall: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_ascii_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| wall.elapsed().as_secs_f64(), |ns| ns as f64 / 1e9)
}

/// Runs `f` for about `secs` of this thread's CPU time; µs per call.
fn time_per_call(secs: f64, mut f: impl FnMut()) -> f64 {
    let wall = Instant::now();
    for _ in 0..1000 {
        f();
    }
    let start = thread_cpu(wall);
    let mut n = 0u64;
    loop {
        for _ in 0..256 {
            f();
        }
        n += 256;
        let used = thread_cpu(wall) - start;
        if used >= secs {
            return used * 1e6 / n as f64;
        }
    }
}

/// An RTP-like packet: 12 header bytes, payload up to `size`, then room for the tag.
fn packet(size: usize) -> Vec<u8> {
    let mut p = vec![0x42u8; size + TAG];
    p[..HEADER].copy_from_slice(&[0x80, 0x60, 0x12, 0x34, 0, 0, 0, 1, 0xca, 0xfe, 0xba, 0xbe]);
    p
}

/// A candidate: builds its keys and returns the per-packet closure, which must report
/// whether the decrypt authenticated.
type Bench = Box<dyn FnMut() -> bool>;

fn rustcrypto_010(size: usize) -> Bench {
    use aes_gcm_010::aead::AeadInPlace;
    use aes_gcm_010::{Aes128Gcm, KeyInit};
    let (g1, g2) = (Aes128Gcm::new(&K1.into()), Aes128Gcm::new(&K2.into()));
    let mut pkt = packet(size);
    let (hdr, payload) = pkt[..size].split_at_mut(HEADER);
    let tag = g1.encrypt_in_place_detached(&NONCE.into(), hdr, payload).expect("small packet");
    pkt[size..].copy_from_slice(&tag);
    let template = pkt.clone();
    Box::new(move || {
        pkt.copy_from_slice(&template);
        let (body, trailer) = pkt.split_at_mut(size);
        let (hdr, payload) = body.split_at_mut(HEADER);
        let tag: [u8; TAG] = (&*trailer).try_into().expect("16 bytes");
        let ok = g1.decrypt_in_place_detached(&NONCE.into(), hdr, payload, &tag.into()).is_ok();
        if let Ok(t) = g2.encrypt_in_place_detached(&NONCE.into(), hdr, payload) {
            trailer.copy_from_slice(&t);
        }
        black_box(&pkt);
        ok
    })
}

fn rustcrypto_011(size: usize) -> Bench {
    use aes_gcm_011::aead::AeadInOut;
    use aes_gcm_011::{Aes128Gcm, KeyInit};
    let (g1, g2) = (Aes128Gcm::new(&K1.into()), Aes128Gcm::new(&K2.into()));
    let mut pkt = packet(size);
    let (hdr, payload) = pkt[..size].split_at_mut(HEADER);
    let tag = g1.encrypt_inout_detached(&NONCE.into(), hdr, payload.into()).expect("small packet");
    pkt[size..].copy_from_slice(&tag);
    let template = pkt.clone();
    Box::new(move || {
        pkt.copy_from_slice(&template);
        let (body, trailer) = pkt.split_at_mut(size);
        let (hdr, payload) = body.split_at_mut(HEADER);
        let tag: [u8; TAG] = (&*trailer).try_into().expect("16 bytes");
        let ok = g1.decrypt_inout_detached(&NONCE.into(), hdr, (&mut *payload).into(), &tag.into()).is_ok();
        if let Ok(t) = g2.encrypt_inout_detached(&NONCE.into(), hdr, payload.into()) {
            trailer.copy_from_slice(&t);
        }
        black_box(&pkt);
        ok
    })
}

fn ring(size: usize) -> Bench {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let key = |k: &[u8; 16]| LessSafeKey::new(UnboundKey::new(&AES_128_GCM, k).expect("16-byte key"));
    let (g1, g2) = (key(&K1), key(&K2));
    let mut pkt = packet(size);
    let (hdr, payload) = pkt[..size].split_at_mut(HEADER);
    let tag = g1
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(NONCE), Aad::from(&*hdr), payload)
        .expect("small packet");
    pkt[size..].copy_from_slice(tag.as_ref());
    let template = pkt.clone();
    Box::new(move || {
        pkt.copy_from_slice(&template);
        let (hdr, rest) = pkt.split_at_mut(HEADER);
        // In place: ciphertext ‖ tag in, plaintext out.
        let ok = g1.open_in_place(Nonce::assume_unique_for_key(NONCE), Aad::from(&*hdr), rest).is_ok();
        let (payload, trailer) = rest.split_at_mut(size - HEADER);
        if let Ok(t) = g2.seal_in_place_separate_tag(Nonce::assume_unique_for_key(NONCE), Aad::from(&*hdr), payload) {
            trailer.copy_from_slice(t.as_ref());
        }
        black_box(&pkt);
        ok
    })
}

#[cfg(feature = "aws-lc")]
fn aws_lc(size: usize) -> Bench {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let key = |k: &[u8; 16]| LessSafeKey::new(UnboundKey::new(&AES_128_GCM, k).expect("16-byte key"));
    let (g1, g2) = (key(&K1), key(&K2));
    let mut pkt = packet(size);
    let (hdr, payload) = pkt[..size].split_at_mut(HEADER);
    let tag = g1
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(NONCE), Aad::from(&*hdr), payload)
        .expect("small packet");
    pkt[size..].copy_from_slice(tag.as_ref());
    let template = pkt.clone();
    Box::new(move || {
        pkt.copy_from_slice(&template);
        let (hdr, rest) = pkt.split_at_mut(HEADER);
        let ok = g1.open_in_place(Nonce::assume_unique_for_key(NONCE), Aad::from(&*hdr), rest).is_ok();
        let (payload, trailer) = rest.split_at_mut(size - HEADER);
        if let Ok(t) = g2.seal_in_place_separate_tag(Nonce::assume_unique_for_key(NONCE), Aad::from(&*hdr), payload) {
            trailer.copy_from_slice(t.as_ref());
        }
        black_box(&pkt);
        ok
    })
}

/// Every candidate compiled in, by name.
fn candidates() -> Vec<(&'static str, fn(usize) -> Bench)> {
    let mut v: Vec<(&'static str, fn(usize) -> Bench)> =
        vec![("aes-gcm-0.10.3", rustcrypto_010), ("aes-gcm-0.11.1", rustcrypto_011), ("ring-0.17.14", ring)];
    #[cfg(feature = "aws-lc")]
    v.push(("aws-lc-rs-1", aws_lc));
    v
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

fn run(args: &[String]) {
    let secs: f64 = arg(args, "--secs", 0.3);
    let size: usize = arg(args, "--size", 1200);
    let rep: usize = arg(args, "--rep", 0);
    let label: String = arg(args, "--label", "default".to_string());
    let mut all = candidates();
    let n = all.len();
    all.rotate_left(rep % n);
    for (name, make) in all {
        let mut f = make(size);
        assert!(f(), "{name}: the packet did not authenticate");
        let mut ok = true;
        let us = time_per_call(secs, || ok &= f());
        assert!(ok, "{name}: a packet failed to authenticate while timed");
        println!("{label}/{name} {us:.4}");
    }
}

fn sizes() {
    println!("aes-gcm 0.10.3 Aes128Gcm: {} bytes", std::mem::size_of::<aes_gcm_010::Aes128Gcm>());
    println!("aes-gcm 0.11.1 Aes128Gcm: {} bytes", std::mem::size_of::<aes_gcm_011::Aes128Gcm>());
    println!("ring 0.17.14 LessSafeKey: {} bytes", std::mem::size_of::<ring::aead::LessSafeKey>());
    #[cfg(feature = "aws-lc")]
    println!("aws-lc-rs LessSafeKey: {} bytes (plus AWS-LC's heap-allocated EVP_AEAD_CTX)", std::mem::size_of::<aws_lc_rs::aead::LessSafeKey>());
}

fn summarize(path: &str) {
    let text = std::fs::read_to_string(path).expect("readable results file");
    let mut by: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(name), Some(us)) = (it.next(), it.next().and_then(|u| u.parse::<f64>().ok())) {
            by.entry(name).or_default().push(us);
        }
    }
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by(|a, b| median(&a.1).total_cmp(&median(&b.1)));
    println!("| candidate | µs per 1,200-byte decrypt + re-encrypt, median [min–max] | runs |");
    println!("|---|---|---|");
    for (name, v) in rows {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        println!("| {name} | {:.3} [{min:.3}–{max:.3}] | {} |", median(&v), v.len());
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&args),
        Some("sizes") => sizes(),
        Some("summarize") => summarize(args.get(1).map_or("results.txt", String::as_str)),
        _ => eprintln!("usage: gcm-candidates run [--secs S] [--size N] [--rep R] [--label L] | sizes | summarize FILE"),
    }
}
