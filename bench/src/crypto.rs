//! The raw crypto ceiling: what decrypting and re-encrypting one packet costs with the
//! primitives alone, against what edgerelay's SRTP code and OpenSSL take for the same work.
//!
//! Three measurements per packet size, all on this thread (pinned to the load CPU by the
//! caller), timed by the thread's own CPU clock (`/proc/thread-self/schedstat`, in ns) so
//! other load on the machine does not inflate them:
//! - `raw`: RustCrypto AES-128-CTR + HMAC-SHA1 (80-bit tag) verify, decrypt, encrypt, tag;
//!   and AES-128-GCM decrypt + encrypt. Keys are scheduled once, as a relay would.
//! - `edgerelay`: [`relay::srtp::SessionKeys`] unprotect + protect, the engine's own path
//!   (AES-CM + HMAC-SHA1 on RustCrypto, AES-GCM on `ring`; docs/benchmarks/crypto-gcm.md).
//! - `openssl`: `openssl speed -mr` at the same block size for AES-128-CTR, AES-128-GCM and
//!   HMAC(SHA1); a decrypt + re-encrypt is counted as two CTR and two HMAC passes, or two GCM
//!   passes.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aes::Aes128;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::Aes128Gcm;
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use relay::client::write_rtp_header;
use relay::srtp::{Profile, SessionKeys};
use serde::Serialize;
use sha1::Sha1;

type AesCtr<'a> = ctr::CtrCore<&'a Aes128, ctr::flavors::Ctr128BE>;
const HEADER: usize = 12;

/// One crypto figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// `raw`, `edgerelay` or `openssl`.
    pub source: &'static str,
    /// What was timed.
    pub what: &'static str,
    /// RTP packet size (before the tag).
    pub size: usize,
    /// Microseconds per packet for a decrypt + re-encrypt.
    pub us_per_pkt: f64,
}

/// This thread's CPU time in seconds (`/proc/thread-self/schedstat`), or the wall clock if
/// the kernel lacks schedstat.
fn thread_cpu(wall: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_ascii_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| wall.elapsed().as_secs_f64(), |ns| ns as f64 / 1e9)
}

/// Runs `f` repeatedly for about `secs` of this thread's CPU time; µs per call.
fn time_per_call(secs: f64, mut f: impl FnMut()) -> f64 {
    let wall = Instant::now();
    for _ in 0..100 {
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

fn rtp(size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size + 16];
    write_rtp_header(&mut p, 96, 1, 0, 0x1234);
    p[HEADER..size].fill(0x42);
    p
}

/// Raw RustCrypto AES-128-CTR + HMAC-SHA1-80: verify, decrypt, encrypt, tag.
fn raw_cm(size: usize, secs: f64) -> f64 {
    let (k1, k2) = (Aes128::new(&[1u8; 16].into()), Aes128::new(&[2u8; 16].into()));
    let m1 = <Hmac<Sha1> as KeyInit>::new_from_slice(&[3u8; 20]).expect("any HMAC key length");
    let m2 = <Hmac<Sha1> as KeyInit>::new_from_slice(&[4u8; 20]).expect("any HMAC key length");
    let mut pkt = rtp(size);
    let iv = [7u8; 16];
    let tag = |m: &Hmac<Sha1>, body: &[u8]| {
        let mut m = m.clone();
        m.update(body);
        m.update(&0u32.to_be_bytes());
        m.finalize().into_bytes()
    };
    let t = tag(&m1, &pkt[..size]);
    pkt[size..size + 10].copy_from_slice(&t[..10]);
    let template = pkt.clone();
    time_per_call(secs, || {
        pkt.copy_from_slice(&template);
        let (body, trailer) = pkt.split_at_mut(size);
        let ok = tag(&m1, body)[..10] == trailer[..10];
        StreamCipherCoreWrapper::from_core(AesCtr::inner_iv_init(&k1, &iv.into())).apply_keystream(&mut body[HEADER..]);
        StreamCipherCoreWrapper::from_core(AesCtr::inner_iv_init(&k2, &iv.into())).apply_keystream(&mut body[HEADER..]);
        let t = tag(&m2, body);
        trailer[..10].copy_from_slice(&t[..10]);
        black_box((ok, &pkt));
    })
}

/// Raw RustCrypto AES-128-GCM: decrypt (with tag check), then encrypt with another key.
fn raw_gcm(size: usize, secs: f64) -> f64 {
    let (g1, g2) = (Aes128Gcm::new(&[1u8; 16].into()), Aes128Gcm::new(&[2u8; 16].into()));
    let nonce = [9u8; 12];
    let mut pkt = rtp(size);
    let (hdr, payload) = pkt[..size].split_at_mut(HEADER);
    let tag = g1.encrypt_in_place_detached(&nonce.into(), hdr, payload).expect("GCM encrypts a small packet");
    pkt[size..size + 16].copy_from_slice(&tag);
    let template = pkt.clone();
    time_per_call(secs, || {
        pkt.copy_from_slice(&template);
        let (body, trailer) = pkt.split_at_mut(size);
        let (hdr, payload) = body.split_at_mut(HEADER);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&trailer[..16]);
        let ok = g1.decrypt_in_place_detached(&nonce.into(), hdr, payload, &tag.into()).is_ok();
        if let Ok(t) = g2.encrypt_in_place_detached(&nonce.into(), hdr, payload) {
            trailer[..16].copy_from_slice(&t);
        }
        black_box((ok, &pkt));
    })
}

/// edgerelay's SRTP: unprotect with one session's keys, protect with another's.
fn engine(profile: Profile, size: usize, secs: f64) -> Result<f64> {
    let salt = vec![5u8; profile.master_salt_len()];
    let up = SessionKeys::new(profile, &[1u8; 16], &salt)?;
    let down = SessionKeys::new(profile, &[2u8; 16], &salt)?;
    let mut pkt = rtp(size);
    let n = up.protect_rtp(&mut pkt, size, 0)?;
    let template = pkt[..n].to_vec();
    let mut buf = vec![0u8; n];
    let mut failed = false;
    let us = time_per_call(secs, || {
        buf.copy_from_slice(&template);
        match up.unprotect_rtp_at(&mut buf, 1) {
            Ok(len) => failed |= down.protect_rtp(&mut buf, len, 0).is_err(),
            Err(_) => failed = true,
        }
        black_box(&buf);
    });
    if failed {
        bail!("edgerelay SRTP round trip failed at {size} bytes");
    }
    Ok(us)
}

/// The `+R:COUNT:NAME:SECONDS` line of `openssl speed -mr` (SECONDS is user CPU time unless
/// `-elapsed`): microseconds per operation.
pub fn parse_openssl_mr(out: &str) -> Result<f64> {
    let line = out.lines().find(|l| l.starts_with("+R:")).context("openssl speed printed no +R: line")?;
    let f: Vec<&str> = line.split(':').collect();
    let [_, count, _, secs] = f[..] else { bail!("unexpected openssl line {line:?}") };
    let count: f64 = count.parse().with_context(|| format!("bad count in {line:?}"))?;
    let secs: f64 = secs.trim().parse().with_context(|| format!("bad seconds in {line:?}"))?;
    if count <= 0.0 {
        bail!("openssl ran no operations: {line:?}");
    }
    Ok(secs * 1e6 / count)
}

/// `openssl speed -mr` for one algorithm (`-evp aes-128-ctr`, `-hmac sha1`, ...) at `size`
/// bytes; microseconds per block.
fn openssl_speed(openssl: &Path, alg: &[&str], size: usize, secs: u32) -> Result<f64> {
    let out = Command::new(openssl)
        .args(["speed", "-mr", "-seconds", &secs.to_string(), "-bytes", &size.to_string()])
        .args(alg)
        .output()
        .context("running openssl speed")?;
    if !out.status.success() {
        bail!("openssl speed {} failed: {}", alg.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    // `+R:` goes to stderr, `+H:`/`+F:` to stdout.
    parse_openssl_mr(&format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout)))
}

/// `openssl version`, first line.
pub fn openssl_version(openssl: &Path) -> Result<String> {
    let out = Command::new(openssl).arg("version").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Every figure at every size. `openssl` `None` skips the OpenSSL runs.
pub fn measure(sizes: &[usize], secs: f64, openssl: Option<&Path>) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for &size in sizes {
        if !(HEADER..=1400).contains(&size) {
            bail!("packet size {size} is outside {HEADER}..=1400");
        }
        let fig = |source, what, us| Figure { source, what, size, us_per_pkt: us };
        out.push(fig("raw", "AES-128-CTR + HMAC-SHA1-80", raw_cm(size, secs)));
        out.push(fig("raw", "AES-128-GCM", raw_gcm(size, secs)));
        out.push(fig("edgerelay", "AES-128-CTR + HMAC-SHA1-80", engine(Profile::AesCm128HmacSha1_80, size, secs)?));
        out.push(fig("edgerelay", "AES-128-GCM", engine(Profile::AeadAes128Gcm, size, secs)?));
        if let Some(o) = openssl {
            let s = secs.ceil().max(1.0) as u32;
            let ctr = openssl_speed(o, &["-evp", "aes-128-ctr"], size, s)?;
            let hmac = openssl_speed(o, &["-hmac", "sha1"], size, s)?;
            let gcm = openssl_speed(o, &["-evp", "aes-128-gcm"], size, s)?;
            out.push(fig("openssl", "AES-128-CTR + HMAC-SHA1-80", 2.0 * (ctr + hmac)));
            out.push(fig("openssl", "AES-128-GCM", 2.0 * gcm));
        }
    }
    Ok(out)
}

/// The figure for `source` and `what` at `size`.
pub fn find<'a>(figs: &'a [Figure], source: &str, what: &str, size: usize) -> Option<&'a Figure> {
    figs.iter().find(|f| f.source == source && f.what == what && f.size == size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_machine_readable_output() {
        // Captured from OpenSSL 3.0.19 on this kind of machine.
        let ctr = parse_openssl_mr(include_str!("../testdata/openssl_mr_aes128ctr_1200.txt")).unwrap();
        assert!((ctr - 0.99e6 / 5_079_760.0).abs() < 1e-9, "{ctr}");
        let hmac = parse_openssl_mr(include_str!("../testdata/openssl_mr_hmacsha1_200.txt")).unwrap();
        assert!((hmac - 1e6 / 2_339_076.0).abs() < 1e-9, "{hmac}");
        let gcm = parse_openssl_mr(include_str!("../testdata/openssl_mr_aes128gcm_1200.txt")).unwrap();
        assert!((gcm - 1e6 / 733_975.0).abs() < 1e-9, "{gcm}");
        // The human-readable form has no +R: line.
        assert!(parse_openssl_mr(include_str!("../testdata/openssl_aes128ctr_1200.txt")).is_err());
        assert!(parse_openssl_mr("+R:0:x:1.0").is_err());
        assert!(parse_openssl_mr("+R:a:x:1.0").is_err());
        assert!(parse_openssl_mr("+R:1:x").is_err());
    }

    #[test]
    fn every_measurement_is_positive_and_bigger_packets_cost_more() {
        let figs = measure(&[200, 1200], 0.02, None).unwrap();
        assert_eq!(figs.len(), 8);
        for f in &figs {
            assert!(f.us_per_pkt > 0.0 && f.us_per_pkt < 1000.0, "{f:?}");
        }
        let raw = |s| find(&figs, "raw", "AES-128-CTR + HMAC-SHA1-80", s).unwrap().us_per_pkt;
        assert!(raw(1200) > raw(200), "{figs:?}");
        assert!(measure(&[4], 0.01, None).is_err());
    }
}
