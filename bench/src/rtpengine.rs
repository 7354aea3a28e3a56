//! The rtpengine baseline: rtpengine in userspace only (`--table=-1`) on loopback, relaying
//! SRTP to SRTP with a real decrypt and re-encrypt, driven over its ng protocol.
//!
//! rtpengine 10.5 has no `recrypt` flag, and with the same suite on both legs it copies A's
//! key to B and forwards the ciphertext untouched. So B answers with rtpengine's own
//! `AES_CM_128_HMAC_SHA1_32` line: the legs then differ in suite and key, and every packet
//! must be decrypted and re-encrypted. Each probe checks that this really happened: the first
//! packet received at B must fail authentication with A's key (under either suite) and pass
//! with rtpengine's B key, and every packet at B is verified with that key. A probe that fails
//! the check fails the run.
//!
//! [`Mode::Passthrough`] answers with the same suite instead, so rtpengine forwards A's
//! ciphertext untouched; the same check then must find that packets at B authenticate with
//! A's key. It measures the cheaper forwarding mode, and shows the check is not vacuous.
//!
//! rtpengine stops reading a socket for good after its receive queue overflows five times
//! (log line `UDP receive queue exceeded`), so every probe gets a fresh call, and a probe
//! whose window logged that line has failed.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay::client::write_rtp_header;
use relay::srtp::{Profile, RtpPacket, RtpReceiver, RtpSender, SessionKeys};

use crate::load::{self, Outcome, Probe, SearchArgs, Sink, Traffic};
use crate::ng::{self, Value};
use crate::procs::{Cpus, Guard};
use crate::sdp;
use relay::tempdir::TempDir;

/// The log line rtpengine writes when it gives up reading a flooded socket.
pub const WEDGE_LINE: &str = "UDP receive queue exceeded";
const SSRC: u32 = 0x0bad_cafe;

/// What rtpengine is made to do with the SRTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Different suites on the two legs: decrypt and re-encrypt every packet.
    Recrypt,
    /// The same suite on both legs: rtpengine copies A's key to B and forwards the bytes.
    Passthrough,
}

impl Mode {
    fn suite_b(self) -> Profile {
        match self {
            Mode::Recrypt => Profile::AesCm128HmacSha1_32,
            Mode::Passthrough => Profile::AesCm128HmacSha1_80,
        }
    }
}

/// A running rtpengine, killed on drop.
pub struct Rtpengine {
    // Drop order: the process before its directory.
    guard: Guard,
    ng: ng::Client,
    log: PathBuf,
    calls: u64,
    mode: Mode,
    _dir: TempDir,
}

/// The keys and ports of one call.
struct Call {
    id: String,
    /// Where A sends (rtpengine's port for A).
    to_a_side: SocketAddr,
    a: UdpSocket,
    b: UdpSocket,
    key_a: Vec<u8>,
    key_b: Vec<u8>,
}

fn random_key_salt() -> Result<Vec<u8>> {
    let mut k = vec![0u8; 30];
    getrandom::getrandom(&mut k).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    Ok(k)
}

impl Rtpengine {
    /// Starts `bin` pinned to the relay CPU, listening for ng on a free loopback port, media
    /// ports in a 200-port range below the ephemeral range.
    pub fn start(bin: &Path, cpus: Cpus, mode: Mode) -> Result<Self> {
        let dir = TempDir::new("rtpengine")?;
        let ng_addr = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let cli = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let port_min = 20_000 + (std::process::id() % 48) * 200;
        let log = dir.join("rtpengine.log");
        let mut cmd = cpus.command(cpus.relay, bin);
        cmd.args(["--config-file=none", "--table=-1", "--interface=127.0.0.1"])
            .arg(format!("--listen-ng={ng_addr}"))
            .arg(format!("--listen-cli={cli}"))
            .arg(format!("--port-min={port_min}"))
            .arg(format!("--port-max={}", port_min + 199))
            .args(["--timeout=3600", "--silent-timeout=3600", "--final-timeout=0", "--offer-timeout=3600"])
            .args(["--num-threads=1", "--foreground", "--log-stderr", "--log-level=6"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let mut r = Self {
            guard: Guard::spawn(cmd, "rtpengine")?,
            ng: ng::Client::new(ng_addr)?,
            log,
            calls: 0,
            mode,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            r.guard.check_alive().with_context(|| r.log_text())?;
            if r.ng.request(&Value::dict([("command", Value::str("ping"))])).is_ok() {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!("rtpengine did not answer ping: {}", r.log_text());
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn offer_answer(&mut self) -> Result<Call> {
        self.calls += 1;
        let id = format!("relay-bench-{}-{}", std::process::id(), self.calls);
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let b = relay::io::sys::bind_reuseport("127.0.0.1:0".parse()?, 4 << 20)?;
        let key_a = random_key_salt()?;
        let offer_sdp = sdp::build(1, a.local_addr()?.port(), &sdp::offer_line(Profile::AesCm128HmacSha1_80, &key_a));
        let reply = self.ng.request(&Value::dict([
            ("command", Value::str("offer")),
            ("call-id", Value::str(&id)),
            ("from-tag", Value::str("a")),
            ("sdp", Value::str(&offer_sdp)),
            ("DTLS", Value::str("off")),
            ("ICE", Value::str("remove")),
        ]))?;
        let for_b = sdp::parse(&reply.get("sdp").and_then(Value::as_str).context("offer reply without sdp")?)?;
        // Recrypt: B takes rtpengine's own SHA1_32 line, and the different suite forces a
        // decrypt + re-encrypt. Passthrough: B takes the SHA1_80 line, which carries A's key.
        let line_b = for_b.suite(self.mode.suite_b().name())?;
        let key_b = line_b.key_salt.clone();
        line_b.key_and_salt(self.mode.suite_b())?;
        let answer_sdp = sdp::build(2, b.local_addr()?.port(), &line_b.line);
        let reply = self.ng.request(&Value::dict([
            ("command", Value::str("answer")),
            ("call-id", Value::str(&id)),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            ("sdp", Value::str(&answer_sdp)),
            ("DTLS", Value::str("off")),
            ("ICE", Value::str("remove")),
        ]))?;
        let for_a = sdp::parse(&reply.get("sdp").and_then(Value::as_str).context("answer reply without sdp")?)?;
        let to_a_side = SocketAddr::from(([127, 0, 0, 1], for_a.port));
        Ok(Call { id, to_a_side, a, b, key_a, key_b })
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        self.ng
            .request(&Value::dict([
                ("command", Value::str("delete")),
                ("call-id", Value::str(id)),
                ("from-tag", Value::str("a")),
            ]))
            .map(drop)
    }

    /// One probe at `rate` on a fresh call; fails if the recrypt check disagrees with the mode.
    pub fn probe(&mut self, rate: f64, size: usize, search: &SearchArgs, cpus: Cpus) -> Result<Probe> {
        let call = self.offer_answer()?;
        let log_from = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let keys = |profile: Profile, ks: &[u8]| SessionKeys::new(profile, &ks[..16], &ks[16..30]);
        let up = keys(Profile::AesCm128HmacSha1_80, &call.key_a)?;
        let down = keys(self.mode.suite_b(), &call.key_b)?;
        let (mut seq, mut sender) = (1u16, RtpSender::default());
        let make = Box::new(move |buf: &mut [u8]| -> Result<usize> {
            let h = write_rtp_header(buf, 0, seq, u32::from(seq).wrapping_mul(160), SSRC);
            buf.get_mut(h..size).context("packet size below the RTP header")?.fill(0x42);
            let roc = sender.next_roc(seq);
            seq = seq.wrapping_add(1);
            Ok(up.protect_rtp(buf, size, roc)?)
        });
        let down_rx = keys(self.mode.suite_b(), &call.key_b)?;
        let mut rx = RtpReceiver::new();
        let verify = Box::new(move |buf: &mut [u8]| down_rx.unprotect_rtp(&mut rx, buf).map(drop));
        let traffic = Traffic {
            tx: call.a.try_clone()?,
            dst: call.to_a_side,
            make,
            sink: Sink { sock: call.b.try_clone()?, verify },
        };
        let result = load::probe(traffic, rate, search.probe_secs, self.pid(), cpus, search.max_loss);
        let deleted = self.delete(&call.id);
        let mut p = result?;
        deleted?;
        self.guard.check_alive()?;
        if p.auth_failed > 0 {
            bail!("{} packets at B failed authentication with rtpengine's B key", p.auth_failed);
        }
        if let Some(first) = &p.first_packet {
            let recrypted = recrypted(first, &call.key_a, &down)?;
            if recrypted != (self.mode == Mode::Recrypt) {
                bail!(
                    "recrypt check failed in {:?} mode: a packet at B {} with A's key",
                    self.mode,
                    if recrypted { "does not authenticate" } else { "authenticates" }
                );
            }
            p.recrypt_checked = Some(recrypted);
        }
        let log = self.log_text();
        if log.get(log_from..).is_some_and(|l| l.contains(WEDGE_LINE)) {
            p.outcome = Outcome::RelayFailed(WEDGE_LINE.into());
        }
        Ok(p)
    }
}

/// The recrypt check on a packet received at B. It must authenticate with rtpengine's B key
/// (`down`), else this is an error. Then: `false` if it also authenticates with A's key under
/// either suite (forwarded as is), `true` if it does not (re-encrypted).
pub fn recrypted(packet: &[u8], key_a: &[u8], down: &SessionKeys) -> Result<bool> {
    let seq = RtpPacket::new_checked(packet)?.seq().get();
    down.unprotect_rtp_at(&mut packet.to_vec(), u64::from(seq))
        .context("recrypt check: a packet at B does not authenticate with rtpengine's B key")?;
    for profile in [Profile::AesCm128HmacSha1_80, Profile::AesCm128HmacSha1_32] {
        let a = SessionKeys::new(profile, &key_a[..16], &key_a[16..30])?;
        if a.unprotect_rtp_at(&mut packet.to_vec(), u64::from(seq)).is_ok() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(keys: &SessionKeys, seq: u16) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let h = write_rtp_header(&mut buf, 0, seq, 0, SSRC);
        buf[h..200].fill(7);
        let n = keys.protect_rtp(&mut buf, 200, 0).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn recrypt_check_tells_forwarding_from_re_encryption() {
        let key_a: Vec<u8> = (0..30).collect();
        let key_b: Vec<u8> = (100..130).collect();
        let a80 = SessionKeys::new(Profile::AesCm128HmacSha1_80, &key_a[..16], &key_a[16..]).unwrap();
        let a32 = SessionKeys::new(Profile::AesCm128HmacSha1_32, &key_a[..16], &key_a[16..]).unwrap();
        let b32 = SessionKeys::new(Profile::AesCm128HmacSha1_32, &key_b[..16], &key_b[16..]).unwrap();
        // Re-encrypted with B's key.
        assert!(recrypted(&packet(&b32, 5), &key_a, &b32).unwrap());
        // Forwarded byte for byte (B's key is A's, under either suite).
        assert!(!recrypted(&packet(&a80, 5), &key_a, &a80).unwrap());
        assert!(!recrypted(&packet(&a32, 5), &key_a, &a32).unwrap());
        // Not what rtpengine said it would send to B, or garbage: an error.
        assert!(recrypted(&packet(&a80, 5), &key_a, &b32).is_err());
        assert!(recrypted(&[0x80, 0, 0, 5], &key_a, &b32).is_err());
    }
}
