//! The small part of SDP (RFC 8866) and SDES (RFC 4568) the rtpengine baseline needs: build a
//! one-stream audio offer or answer, and read back the media port and the `a=crypto` lines of
//! rtpengine's replies.
//!
//! Input comes from another program, so every parser returns an error instead of panicking;
//! a key is accepted only when it has exactly the length its suite needs.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use relay::srtp::Profile;

/// One `a=crypto` line (RFC 4568 §9.1): `a=crypto:TAG SUITE inline:KEY||SALT[|lifetime][|mki]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    /// The tag.
    pub tag: u32,
    /// The crypto-suite name as written.
    pub suite: String,
    /// Master key ‖ master salt, decoded.
    pub key_salt: Vec<u8>,
    /// The line as it appeared (without `a=`), to echo it in an answer.
    pub line: String,
}

impl Crypto {
    /// Master key and master salt for `profile`; fails unless the lengths match exactly.
    pub fn key_and_salt(&self, profile: Profile) -> Result<(&[u8], &[u8])> {
        let (k, s) = (profile.master_key_len(), profile.master_salt_len());
        if self.key_salt.len() != k + s {
            bail!("{} key is {} bytes, {} needs {}", self.suite, self.key_salt.len(), profile.name(), k + s);
        }
        Ok(self.key_salt.split_at(k))
    }
}

/// Parses the value of an `a=crypto:` attribute (everything after `crypto:`).
pub fn parse_crypto(value: &str) -> Result<Crypto> {
    let mut parts = value.split_ascii_whitespace();
    let tag = parts.next().context("crypto line without a tag")?.parse().context("crypto tag is not a number")?;
    let suite = parts.next().context("crypto line without a suite")?.to_string();
    let params = parts.next().context("crypto line without key parameters")?;
    // Only the first key parameter matters here; further ones (`;inline:...`) are MKI keys.
    let inline = params.split(';').next().unwrap_or_default();
    let b64 = inline.strip_prefix("inline:").context("crypto key method is not inline")?;
    let b64 = b64.split('|').next().unwrap_or_default();
    let key_salt = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .context("crypto key is not base64")?;
    Ok(Crypto { tag, suite, key_salt, line: format!("crypto:{value}") })
}

/// What the baseline reads from an SDP body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// Port of the first `m=` line.
    pub port: u16,
    /// Every `a=crypto` line of that media section, in order.
    pub crypto: Vec<Crypto>,
}

impl Media {
    /// The crypto line with suite `suite`.
    pub fn suite(&self, suite: &str) -> Result<&Crypto> {
        self.crypto.iter().find(|c| c.suite == suite).with_context(|| format!("no {suite} crypto line in the SDP"))
    }
}

/// Parses the first media section of `sdp`.
pub fn parse(sdp: &str) -> Result<Media> {
    let mut port = None;
    let mut crypto = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break;
            }
            let p = m.split_ascii_whitespace().nth(1).context("m= line without a port")?;
            port = Some(p.parse::<u16>().with_context(|| format!("bad media port {p:?}"))?);
        } else if let Some(c) = line.strip_prefix("a=crypto:") {
            if port.is_some() {
                crypto.push(parse_crypto(c)?);
            }
        }
    }
    Ok(Media { port: port.context("SDP has no m= line")?, crypto })
}

/// A one-stream SRTP audio SDP on 127.0.0.1 `port` with the given crypto line (the attribute
/// value after `a=`, e.g. `crypto:1 AES_CM_128_HMAC_SHA1_80 inline:...`).
pub fn build(session_id: u64, port: u16, crypto_line: &str) -> String {
    format!(
        "v=0\r\no=- {session_id} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na={crypto_line}\r\na=sendrecv\r\n"
    )
}

/// The crypto line offering `key ‖ salt` for `profile` with tag 1.
pub fn offer_line(profile: Profile, key_salt: &[u8]) -> String {
    format!("crypto:1 {} inline:{}", profile.name(), base64::engine::general_purpose::STANDARD.encode(key_salt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ng;

    fn reply_sdp(raw: &[u8], cookie: &str) -> String {
        ng::parse_reply(raw, cookie).unwrap().get("sdp").and_then(ng::Value::as_str).unwrap()
    }

    #[test]
    fn rtpengine_offer_for_b() {
        let sdp = reply_sdp(include_bytes!("../testdata/ng_offer_reply.bin"), "o1");
        let m = parse(&sdp).unwrap();
        assert_eq!(m.port, 30036);
        assert_eq!(m.crypto.len(), 12);
        // The first line copies A's key (same suite); the SHA1_32 line is rtpengine's own.
        let c80 = m.suite("AES_CM_128_HMAC_SHA1_80").unwrap();
        assert_eq!(c80.tag, 1);
        let (k, s) = c80.key_and_salt(Profile::AesCm128HmacSha1_80).unwrap();
        assert_eq!((k.len(), s.len()), (16, 14));
        assert_eq!(&k[..4], b"YS__");
        let c32 = m.suite("AES_CM_128_HMAC_SHA1_32").unwrap();
        assert_eq!(c32.tag, 8);
        assert!(c32.line.starts_with("crypto:8 AES_CM_128_HMAC_SHA1_32 inline:igVX"));
        // A 256-bit suite does not fit a 128-bit profile.
        assert!(m.suite("AES_256_CM_HMAC_SHA1_80").unwrap().key_and_salt(Profile::AesCm128HmacSha1_80).is_err());
        assert!(m.suite("AEAD_AES_128_GCM").unwrap().key_and_salt(Profile::AeadAes128Gcm).is_ok());
    }

    #[test]
    fn rtpengine_answer_for_a() {
        let m = parse(&reply_sdp(include_bytes!("../testdata/ng_answer_reply.bin"), "a1")).unwrap();
        assert_eq!(m.port, 30054);
        assert_eq!(m.crypto.len(), 1);
        assert_eq!(m.crypto[0].key_salt.len(), 30);
    }

    #[test]
    fn crypto_line_variants() {
        let c =
            parse_crypto("2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4").unwrap();
        assert_eq!((c.tag, c.key_salt.len()), (2, 30));
        for bad in ["", "x AES inline:AAAA", "1 AES", "1 AES uri:x", "1 AES inline:!!!!"] {
            assert!(parse_crypto(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn built_sdp_parses_back() {
        let key: Vec<u8> = (0..30).collect();
        let sdp = build(7, 40000, &offer_line(Profile::AesCm128HmacSha1_80, &key));
        let m = parse(&sdp).unwrap();
        assert_eq!((m.port, m.crypto[0].key_salt.clone()), (40000, key));
        assert!(parse("v=0\r\n").is_err());
        assert!(parse("m=audio x RTP/SAVP 0\r\n").is_err());
    }
}
