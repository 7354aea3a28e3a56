//! Tencent TLSSigAPIv2 `UserSig` and `PrivateMapKey` tokens: minting, decoding, verification.
//!
//! A TRTC client proves who it is with a `UserSig` and, optionally, which room it may
//! enter and what it may do there with a `PrivateMapKey`. Both are the same token shape,
//! produced by Tencent's official generator libraries (`tencentyun/tls-sig-api-v2-*`):
//!
//! ```text
//! token   = tencent_b64( zlib( json ) )         tencent_b64: std base64, '+'→'*' '/'→'-' '='→'_'
//! json    = {"TLS.ver":"2.0", "TLS.identifier":str, "TLS.sdkappid":int, "TLS.expire":int,
//!            "TLS.time":int, ["TLS.userbuf":b64(userbuf),] "TLS.sig":b64(mac)}
//! mac     = HMAC-SHA256(key = secret key string bytes,
//!             "TLS.identifier:{id}\nTLS.sdkappid:{app}\nTLS.time:{t}\nTLS.expire:{e}\n"
//!             ["TLS.userbuf:{b64(userbuf)}\n"])
//! ```
//!
//! The MAC covers the *values*, not the JSON text, so the official libraries disagree
//! freely on key order, spacing, number formatting of the JSON and zlib level (Go: level 0
//! plus a trailing newline; C++: level 1; Python/Node/Java/PHP: level 6). Decoding therefore
//! parses JSON by field name and re-derives the signed text canonically.
//!
//! A `PrivateMapKey` is a `UserSig` whose `TLS.userbuf` carries a big-endian binary
//! struct (see [`decode_userbuf`]) naming the account, SdkAppId, room, expiry time and
//! privilege bits.
//!
//! # Invariants
//!
//! - Untrusted input never panics and every allocation on the decode path is bounded:
//!   at most [`MAX_TOKEN_LEN`] base64 characters are accepted, inflation writes into one
//!   buffer of [`MAX_INFLATED_LEN`]` + 1` bytes and fails if it fills, and the JSON parsed
//!   is at most [`MAX_INFLATED_LEN`] bytes.
//! - A decoded [`UserSig`] always has a 32-byte MAC and `time + expire` fits in a `u64`,
//!   so [`UserSig::expires_at`] cannot overflow.
//! - [`UserSig::verify`] computes exactly one HMAC-SHA256 and compares it in constant
//!   time *before* looking at the clock, so a forged token learns nothing about expiry.
//! - The MAC covers identifier, sdkappid, time, expire and userbuf only. `TLS.ver` must be
//!   `"2.0"` but is not authenticated, as in the official libraries.
//! - No `unsafe`, no I/O, no clock: `now_unix` is always a parameter.

#![forbid(unsafe_code)]

use std::fmt::{self, Write as _};
use std::io::Write as _;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use flate2::{Compression, Decompress, FlushDecompress, Status};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Longest token text accepted by [`decode`], in characters.
///
/// Official tokens are 150–400 characters; a `PrivateMapKey` with a long string room
/// stays well under 1 KiB.
pub const MAX_TOKEN_LEN: usize = 2048;

/// Largest inflated JSON document accepted by [`decode`], in bytes (zip-bomb bound).
pub const MAX_INFLATED_LEN: usize = 4096;

/// How far `TLS.time` may lie ahead of the verifier's clock before [`UserSig::verify`]
/// rejects the token with [`Error::NotYetValid`].
///
/// The official verifiers do not check this. We do, because a token stamped in the
/// future stays valid for longer than its `expire` says; ten minutes absorbs clock skew
/// between the issuing server and the relay.
pub const MAX_FUTURE_SKEW_SECS: u64 = 600;

/// The only `TLS.ver` value the official v2 libraries emit.
const VERSION: &str = "2.0";

/// Length of an HMAC-SHA256 tag.
const SIG_LEN: usize = 32;

/// Fixed part of a userbuf: version (1) + account length (2) + five u32 fields (20).
const USERBUF_FIXED_LEN: usize = 1 + 2 + 20;

/// Errors from decoding or verifying a token or a userbuf.
///
/// Variants stay distinct so that a relay can map each one to its own join error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The token text is empty.
    #[error("token is empty")]
    Empty,
    /// The token text is longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} characters")]
    TooLong,
    /// The token is not Tencent-variant base64 (bad character, bad length or padding,
    /// non-zero trailing bits).
    #[error("token is not valid base64")]
    BadEncoding,
    /// The base64 payload is not one complete zlib stream (corrupt, truncated, preset
    /// dictionary, bad checksum, or trailing bytes after the stream).
    #[error("token payload is not a valid zlib stream")]
    Inflate,
    /// The inflated payload is larger than [`MAX_INFLATED_LEN`].
    #[error("inflated token larger than {MAX_INFLATED_LEN} bytes")]
    TooLarge,
    /// The inflated payload is not a UTF-8 JSON object, or repeats a known field.
    #[error("token payload is not a valid JSON object")]
    BadJson,
    /// A required `TLS.*` field is absent.
    #[error("token field {0} is missing")]
    MissingField(&'static str),
    /// A `TLS.*` field has the wrong type or an out-of-range or non-canonical value.
    #[error("token field {0} is malformed")]
    BadField(&'static str),
    /// The HMAC does not match: wrong key, or the token was altered.
    #[error("token signature does not match")]
    BadSignature,
    /// The token (or the `PrivateMapKey` userbuf) has expired.
    #[error("token has expired")]
    Expired,
    /// `TLS.time` lies more than [`MAX_FUTURE_SKEW_SECS`] after the verifier's clock.
    #[error("token issued in the future")]
    NotYetValid,
    /// The token's SdkAppId is not the one expected.
    #[error("token is for another SdkAppId")]
    SdkAppIdMismatch,
    /// The token's identifier is not the one expected.
    #[error("token is for another identifier")]
    IdentifierMismatch,
    /// A `PrivateMapKey` userbuf is malformed or does not match its token; the text
    /// says which check failed.
    #[error("bad PrivateMapKey userbuf: {0}")]
    BadUserBuf(&'static str),
}

/// A decoded, not yet verified, `UserSig` or `PrivateMapKey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSig {
    /// `TLS.sdkappid`: the application the token is for.
    pub sdkappid: u64,
    /// `TLS.identifier`: the user ID.
    pub identifier: String,
    /// `TLS.time`: issue time, Unix seconds.
    pub time: u64,
    /// `TLS.expire`: lifetime in seconds from `time`.
    pub expire: u64,
    /// `TLS.userbuf`, base64-decoded; `Some` for a `PrivateMapKey`.
    pub userbuf: Option<Vec<u8>>,
    sig: [u8; SIG_LEN],
}

impl UserSig {
    /// Checks the signature with `key`, then the validity window at `now_unix`.
    ///
    /// Exactly one HMAC-SHA256 is computed and compared in constant time. Then:
    /// `now_unix >= time + expire` → [`Error::Expired`] (one second stricter than the
    /// official verifiers, which accept `now == time + expire`), and
    /// `time > now_unix + MAX_FUTURE_SKEW_SECS` → [`Error::NotYetValid`].
    ///
    /// This does not check *whose* token it is; see [`UserSig::check_identity`].
    pub fn verify(&self, key: &[u8], now_unix: u64) -> Result<(), Error> {
        let expected = sign(key, &self.identifier, self.sdkappid, self.time, self.expire, self.userbuf.as_deref());
        if !bool::from(expected.ct_eq(&self.sig)) {
            return Err(Error::BadSignature);
        }
        if now_unix >= self.expires_at() {
            return Err(Error::Expired);
        }
        if self.time > now_unix.saturating_add(MAX_FUTURE_SKEW_SECS) {
            return Err(Error::NotYetValid);
        }
        Ok(())
    }

    /// Unix time at which the token stops being valid: `time + expire`.
    pub fn expires_at(&self) -> u64 {
        // `decode` rejects tokens where this overflows; saturate for hand-built values.
        self.time.saturating_add(self.expire)
    }

    /// Checks that the token names `sdkappid` and `identifier`.
    pub fn check_identity(&self, sdkappid: u64, identifier: &str) -> Result<(), Error> {
        if self.sdkappid != sdkappid {
            return Err(Error::SdkAppIdMismatch);
        }
        if self.identifier != identifier {
            return Err(Error::IdentifierMismatch);
        }
        Ok(())
    }

    /// Verifies the token as a `PrivateMapKey` and returns its decoded userbuf.
    ///
    /// On top of [`UserSig::verify`]: the userbuf must be present and well formed, name
    /// the token's identifier and SdkAppId, and `now_unix` must be before its
    /// `expire_at`.
    pub fn verify_private_map_key(&self, key: &[u8], now_unix: u64) -> Result<UserBuf, Error> {
        self.verify(key, now_unix)?;
        let raw = self.userbuf.as_deref().ok_or(Error::MissingField("TLS.userbuf"))?;
        let buf = decode_userbuf(raw)?;
        if buf.account != self.identifier {
            return Err(Error::BadUserBuf("account differs from TLS.identifier"));
        }
        if u64::from(buf.sdkappid) != self.sdkappid {
            return Err(Error::BadUserBuf("sdkappid differs from TLS.sdkappid"));
        }
        if now_unix >= u64::from(buf.expire_at) {
            return Err(Error::Expired);
        }
        Ok(buf)
    }
}

/// Mints a `UserSig` (or, with `userbuf`, a generic userbuf token).
///
/// The JSON text is byte-identical to what `tls-sig-api-v2-python` produces for the same
/// inputs and clock (key order, `", "`/`": "` separators, ASCII-only escaping). It is
/// compressed with zlib's default level 6, but by `flate2`'s Rust backend, whose deflate
/// stream differs from C zlib's; the token is therefore not byte-identical to any
/// official library's, only equivalent (the official libraries differ among themselves).
pub fn mint(
    key: &[u8],
    sdkappid: u64,
    identifier: &str,
    expire_secs: u64,
    now_unix: u64,
    userbuf: Option<&[u8]>,
) -> String {
    let json = mint_json(key, sdkappid, identifier, expire_secs, now_unix, userbuf);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(json.as_bytes()).expect("writing to a Vec cannot fail");
    let compressed = z.finish().expect("writing to a Vec cannot fail");
    STANDARD
        .encode(compressed)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// The JSON document [`mint`] compresses, in Python `json.dumps` format.
fn mint_json(
    key: &[u8],
    sdkappid: u64,
    identifier: &str,
    expire_secs: u64,
    now_unix: u64,
    userbuf: Option<&[u8]>,
) -> String {
    let sig = sign(key, identifier, sdkappid, now_unix, expire_secs, userbuf);
    let mut json = String::with_capacity(192 + identifier.len() * 6);
    json.push_str("{\"TLS.ver\": \"2.0\", \"TLS.identifier\": ");
    push_py_json_str(&mut json, identifier);
    // Writing to a String cannot fail.
    let _ = write!(json, ", \"TLS.sdkappid\": {sdkappid}, \"TLS.expire\": {expire_secs}, \"TLS.time\": {now_unix}");
    if let Some(buf) = userbuf {
        let _ = write!(json, ", \"TLS.userbuf\": \"{}\"", STANDARD.encode(buf));
    }
    let _ = write!(json, ", \"TLS.sig\": \"{}\"}}", STANDARD.encode(sig));
    json
}

/// Appends `s` as a JSON string the way Python's `json.dumps` (`ensure_ascii=True`) does.
fn push_py_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// HMAC-SHA256 over the official signed-content string, fed straight into the MAC.
fn sign(key: &[u8], identifier: &str, sdkappid: u64, time: u64, expire: u64, userbuf: Option<&[u8]>) -> [u8; SIG_LEN] {
    /// `fmt::Write` adapter so that numbers and base64 stream into the MAC unallocated.
    struct MacWriter(Hmac<Sha256>);
    impl fmt::Write for MacWriter {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    let mut w = MacWriter(mac);
    // MacWriter::write_str never fails.
    let _ = write!(w, "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n");
    if let Some(buf) = userbuf {
        let _ = writeln!(w, "TLS.userbuf:{}", base64::display::Base64Display::new(buf, &STANDARD));
    }
    w.0.finalize().into_bytes().into()
}

/// Standard alphabet, padding optional (Node's official decoder re-pads), zero trailing bits.
const TOKEN_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a token without verifying it: Tencent base64 → bounded inflate → JSON.
///
/// Accepts any key order, whitespace, zlib level and unknown extra fields. Known fields
/// must have the types the official libraries emit: strings for `TLS.ver` (`"2.0"`),
/// `TLS.identifier`, `TLS.sig` (base64 of 32 bytes) and `TLS.userbuf` (base64);
/// non-negative integers for `TLS.sdkappid`, `TLS.time`, `TLS.expire`. The integers are
/// also accepted as canonical decimal strings (no sign, no leading zero), because
/// Tencent's client-side generator `lib-generate-test-usersig` serialises whatever type
/// it is handed and such tokens exist in the wild (`"TLS.sdkappid":"1400575117"`); the
/// signed text is the same either way. A repeated known field is [`Error::BadJson`].
///
/// The token alphabet is Tencent's only (`A–Z a–z 0–9 * -` and `_` padding); standard
/// `+ / =`, whitespace and anything else is [`Error::BadEncoding`].
pub fn decode(token: &str) -> Result<UserSig, Error> {
    Decoder::new().decode(token)
}

/// [`decode`] with its working memory kept between tokens: the inflate state (about 43 KiB,
/// allocated and zeroed by every fresh inflater) and the three buffers. relayd decodes one
/// or two tokens per join, so its registry keeps one. The bounds are [`decode`]'s.
pub struct Decoder {
    z: Decompress,
    std_b64: Vec<u8>,
    compressed: Vec<u8>,
    out: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with its buffers at their bounds.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
            std_b64: Vec::with_capacity(MAX_TOKEN_LEN),
            compressed: Vec::with_capacity(MAX_TOKEN_LEN / 4 * 3 + 3),
            out: vec![0u8; MAX_INFLATED_LEN + 1],
        }
    }

    /// Decodes a token without verifying it: exactly [`decode`].
    pub fn decode(&mut self, token: &str) -> Result<UserSig, Error> {
        let json = self.inflate(token)?;
        parse_json(json)
    }

    /// Base64 and inflate steps of [`decode`]; returns the JSON bytes.
    fn inflate(&mut self, token: &str) -> Result<&[u8], Error> {
        if token.is_empty() {
            return Err(Error::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::TooLong);
        }
        self.std_b64.clear();
        for &b in token.as_bytes() {
            self.std_b64.push(match b {
                b'*' => b'+',
                b'-' => b'/',
                b'_' => b'=',
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => b,
                _ => return Err(Error::BadEncoding),
            });
        }
        self.compressed.clear();
        TOKEN_B64.decode_vec(&self.std_b64, &mut self.compressed).map_err(|_| Error::BadEncoding)?;

        self.z.reset(true);
        let status =
            self.z.decompress(&self.compressed, &mut self.out, FlushDecompress::Finish).map_err(|_| Error::Inflate);
        let produced = usize::try_from(self.z.total_out()).map_err(|_| Error::TooLarge)?;
        if produced > MAX_INFLATED_LEN {
            return Err(Error::TooLarge);
        }
        match status? {
            Status::StreamEnd => {}
            Status::Ok | Status::BufError => return Err(Error::Inflate),
        }
        if self.z.total_in() != self.compressed.len() as u64 {
            return Err(Error::Inflate);
        }
        Ok(&self.out[..produced])
    }
}

/// The known fields, each kept as a raw JSON value so that type errors name the field.
#[derive(Deserialize)]
struct RawSig {
    #[serde(rename = "TLS.ver", default)]
    ver: Field,
    #[serde(rename = "TLS.identifier", default)]
    identifier: Field,
    #[serde(rename = "TLS.sdkappid", default)]
    sdkappid: Field,
    #[serde(rename = "TLS.time", default)]
    time: Field,
    #[serde(rename = "TLS.expire", default)]
    expire: Field,
    #[serde(rename = "TLS.userbuf", default)]
    userbuf: Field,
    #[serde(rename = "TLS.sig", default)]
    sig: Field,
}

/// A field that is `None` only when absent (`Option<Value>` would also swallow `null`).
#[derive(Default)]
struct Field(Option<serde_json::Value>);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(|v| Self(Some(v)))
    }
}

fn parse_json(json: &[u8]) -> Result<UserSig, Error> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|_| Error::BadJson)?;
    if !value.is_object() {
        return Err(Error::BadJson);
    }
    // Re-parse into the field struct so that duplicate known keys are an error
    // (`Value` would silently keep the last one).
    let raw: RawSig = serde_json::from_slice(json).map_err(|_| Error::BadJson)?;

    const VER: &str = "TLS.ver";
    match raw.ver.0 {
        None => return Err(Error::MissingField(VER)),
        Some(serde_json::Value::String(v)) if v == VERSION => {}
        Some(_) => return Err(Error::BadField(VER)),
    }
    let identifier = match raw.identifier.0 {
        None => return Err(Error::MissingField("TLS.identifier")),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(Error::BadField("TLS.identifier")),
    };
    let sdkappid = json_u64(raw.sdkappid.0, "TLS.sdkappid")?;
    let time = json_u64(raw.time.0, "TLS.time")?;
    let expire = json_u64(raw.expire.0, "TLS.expire")?;
    if time.checked_add(expire).is_none() {
        return Err(Error::BadField("TLS.expire"));
    }
    let userbuf = match raw.userbuf.0 {
        None => None,
        Some(v) => Some(json_b64(v, "TLS.userbuf")?),
    };
    let sig_vec = match raw.sig.0 {
        None => return Err(Error::MissingField("TLS.sig")),
        Some(v) => json_b64(v, "TLS.sig")?,
    };
    let sig: [u8; SIG_LEN] = sig_vec.try_into().map_err(|_| Error::BadField("TLS.sig"))?;
    Ok(UserSig { sdkappid, identifier, time, expire, userbuf, sig })
}

/// A non-negative JSON integer, or a canonical decimal string of one.
fn json_u64(v: Option<serde_json::Value>, name: &'static str) -> Result<u64, Error> {
    match v {
        None => Err(Error::MissingField(name)),
        Some(serde_json::Value::Number(n)) => n.as_u64().ok_or(Error::BadField(name)),
        Some(serde_json::Value::String(s)) => {
            let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
            if !canonical {
                return Err(Error::BadField(name));
            }
            s.parse().map_err(|_| Error::BadField(name))
        }
        Some(_) => Err(Error::BadField(name)),
    }
}

/// A JSON string holding canonical standard base64 (padded, zero trailing bits).
fn json_b64(v: serde_json::Value, name: &'static str) -> Result<Vec<u8>, Error> {
    match v {
        serde_json::Value::String(s) => STANDARD.decode(s).map_err(|_| Error::BadField(name)),
        _ => Err(Error::BadField(name)),
    }
}

/// The room a `PrivateMapKey` grants access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRef<'a> {
    /// Numeric room ID (userbuf version 0).
    Num(u32),
    /// String room ID (userbuf version 1). An empty string encodes as numeric room 0,
    /// as the official libraries do.
    Str(&'a str),
}

/// `PrivateMapKey` privilege bits (`dwPrivilegeMap`), as documented in the official
/// libraries' `genPrivateMapKey` comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PrivilegeMap(pub u32);

impl PrivilegeMap {
    /// Bit 1: may create the room.
    pub const CREATE: Self = Self(1);
    /// Bit 2: may enter the room.
    pub const ENTER: Self = Self(2);
    /// Bit 3: may send audio.
    pub const SEND_AUDIO: Self = Self(4);
    /// Bit 4: may receive audio.
    pub const RECV_AUDIO: Self = Self(8);
    /// Bit 5: may send video.
    pub const SEND_VIDEO: Self = Self(16);
    /// Bit 6: may receive video.
    pub const RECV_VIDEO: Self = Self(32);
    /// Bit 7: may send sub-stream (screen share) video.
    pub const SEND_SUB_VIDEO: Self = Self(64);
    /// Bit 8: may receive sub-stream (screen share) video.
    pub const RECV_SUB_VIDEO: Self = Self(128);
    /// All eight documented privileges (`255`).
    pub const ALL: Self = Self(255);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for PrivilegeMap {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A decoded `PrivateMapKey` userbuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBuf {
    /// `buffAccount`: the user ID the grant is for.
    pub account: String,
    /// `dwSdkAppid`.
    pub sdkappid: u32,
    /// `dwAuthId`: numeric room; `0` when `room_str` is set.
    pub room_num: u32,
    /// String room ID (version 1 only).
    pub room_str: Option<String>,
    /// `dwExpTime`: absolute expiry, Unix seconds (mod 2^32).
    pub expire_at: u32,
    /// `dwPrivilegeMap`.
    pub privileges: PrivilegeMap,
}

impl UserBuf {
    /// The room this grant names.
    pub fn room(&self) -> RoomRef<'_> {
        match &self.room_str {
            Some(s) => RoomRef::Str(s),
            None => RoomRef::Num(self.room_num),
        }
    }
}

/// Encodes a `PrivateMapKey` userbuf exactly as the official `genUserBuf` does:
///
/// ```text
/// u8 ver (0 numeric room, 1 string room) | u16 len | account | u32 sdkappid | u32 room
/// | u32 expire_at | u32 privileges | u32 account_type (0) | [ver 1: u16 len | room_str]
/// ```
/// all big-endian. Lengths are UTF-8 byte counts (the official libraries count UTF-16
/// units, which agrees for the ASCII user and room IDs Tencent allows).
///
/// # Panics
///
/// If `account` or a string room is longer than 65535 bytes: this is minting-side
/// misuse, and the official libraries would silently emit a corrupt length.
pub fn encode_userbuf(
    account: &str,
    sdkappid: u32,
    room: RoomRef<'_>,
    expire_at: u32,
    privileges: PrivilegeMap,
) -> Vec<u8> {
    let (room_num, room_str) = match room {
        RoomRef::Num(n) => (n, None),
        RoomRef::Str("") => (0, None),
        RoomRef::Str(s) => (0, Some(s)),
    };
    let account_len = u16::try_from(account.len()).expect("account longer than 65535 bytes");
    let mut out = Vec::with_capacity(USERBUF_FIXED_LEN + account.len() + room_str.map_or(0, |s| 2 + s.len()));
    out.push(u8::from(room_str.is_some()));
    out.extend_from_slice(&account_len.to_be_bytes());
    out.extend_from_slice(account.as_bytes());
    for field in [sdkappid, room_num, expire_at, privileges.0, 0] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    if let Some(s) = room_str {
        let len = u16::try_from(s.len()).expect("room string longer than 65535 bytes");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Decodes a `PrivateMapKey` userbuf (layout in [`encode_userbuf`]), strictly: exact
/// length, version 0 or 1, UTF-8 account, account type 0, and for version 1 a non-empty
/// UTF-8 room string.
pub fn decode_userbuf(b: &[u8]) -> Result<UserBuf, Error> {
    let mut r = Reader(b);
    let version = r.u8()?;
    if version > 1 {
        return Err(Error::BadUserBuf("unknown version"));
    }
    let account_len = usize::from(r.u16()?);
    let account =
        std::str::from_utf8(r.take(account_len)?).map_err(|_| Error::BadUserBuf("account is not UTF-8"))?.to_owned();
    let sdkappid = r.u32()?;
    let room_num = r.u32()?;
    let expire_at = r.u32()?;
    let privileges = PrivilegeMap(r.u32()?);
    if r.u32()? != 0 {
        return Err(Error::BadUserBuf("account type is not 0"));
    }
    let room_str = if version == 1 {
        let len = usize::from(r.u16()?);
        if len == 0 {
            return Err(Error::BadUserBuf("empty string room"));
        }
        let s = std::str::from_utf8(r.take(len)?).map_err(|_| Error::BadUserBuf("room is not UTF-8"))?;
        Some(s.to_owned())
    } else {
        None
    };
    if !r.0.is_empty() {
        return Err(Error::BadUserBuf("trailing bytes"));
    }
    Ok(UserBuf { account, sdkappid, room_num, room_str, expire_at, privileges })
}

/// Bounds-checked big-endian cursor over a userbuf.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::BadUserBuf("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }
}

/// Mints a `PrivateMapKey` as the official `genPrivateMapKey` (numeric room) and
/// `genPrivateMapKeyWithStringRoomID` (string room) do: a token whose userbuf has
/// `expire_at = now_unix + expire_secs` (truncated to 32 bits, like theirs) and account
/// type 0.
///
/// # Panics
///
/// As [`encode_userbuf`].
pub fn mint_private_map_key(
    key: &[u8],
    sdkappid: u32,
    identifier: &str,
    expire_secs: u64,
    now_unix: u64,
    room: RoomRef<'_>,
    privileges: PrivilegeMap,
) -> String {
    // Official libraries mask with 0xFFFFFFFF; keep the low 32 bits the same way.
    let expire_at = (now_unix.wrapping_add(expire_secs) & u64::from(u32::MAX)) as u32;
    let userbuf = encode_userbuf(identifier, sdkappid, room, expire_at, privileges);
    mint(key, u64::from(sdkappid), identifier, expire_secs, now_unix, Some(&userbuf))
}

/// Fuzz entry point: runs [`decode`], [`UserSig::verify`], [`decode_userbuf`] and
/// [`UserSig::verify_private_map_key`] on arbitrary bytes. Must never panic.
pub fn fuzz_decode(data: &[u8]) {
    const KEY: &[u8] = b"fuzz-key";
    let _ = decode_userbuf(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sig) = decode(text) else {
        return;
    };
    for now in [0, sig.time, sig.expires_at(), u64::MAX] {
        let _ = sig.verify(KEY, now);
        let _ = sig.verify_private_map_key(KEY, now);
    }
    let _ = sig.check_identity(sig.sdkappid, &sig.identifier);
    if let Some(Ok(ub)) = sig.userbuf.as_deref().map(decode_userbuf) {
        let _ = ub.room();
        let _ = ub.privileges.contains(PrivilegeMap::ENTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret key from the official libraries' examples and tests, used as its
    /// ASCII bytes (the libraries pass `key.getBytes("UTF-8")` / `key.encode()`).
    const KEY: &[u8] = b"5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APP: u64 = 1_400_000_000;
    const T0: u64 = 1_700_000_000;

    /// `json.dumps` output of the Python official generator's document for
    /// (1400000000, "xiaojun", time 1700000000, expire 86400), produced with CPython.
    const PY_JSON: &str = "{\"TLS.ver\": \"2.0\", \"TLS.identifier\": \"xiaojun\", \
        \"TLS.sdkappid\": 1400000000, \"TLS.expire\": 86400, \"TLS.time\": 1700000000, \
        \"TLS.sig\": \"SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVc=\"}";
    /// That document through CPython `zlib.compress` (C zlib 1.2.13, level 6) and the
    /// Tencent base64 variant: the exact token the Python library emits at that instant.
    const PY_TOKEN: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpQJlLMxM4IIlmbkgIUNzNMXFmekg44P93EzccsOcA0qT8yOKnfwLksLcjNPcnNNMzb0Ccg1Sq6IMs1LDPH1ywpJtlWoBk68y0A__";

    fn b64tok(compressed: &[u8]) -> String {
        STANDARD.encode(compressed).replace('+', "*").replace('/', "-").replace('=', "_")
    }

    fn zlib(data: &[u8], level: u32) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::new(level));
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    fn tok(json: &str, level: u32) -> String {
        b64tok(&zlib(json.as_bytes(), level))
    }

    fn inflate(token: &str) -> String {
        String::from_utf8(Decoder::new().inflate(token).unwrap().to_vec()).unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// A decoder kept between tokens (as relayd's registry keeps one) answers exactly as a
    /// fresh one, after good tokens and after every kind of failure.
    #[test]
    fn a_reused_decoder_decodes_as_a_fresh_one() {
        let good = mint(KEY, APP, "xiaojun", 86400, T0, None);
        let pmk = mint(KEY, APP, "xiaojun", 86400, T0, Some(&[1, 2, 3]));
        let bomb = tok(&format!("{{\"a\":\"{}\"}}", "x".repeat(3 * MAX_INFLATED_LEN)), 9);
        let cases =
            [good.as_str(), &good[..good.len() - 6], "*-_", "not base64!", bomb.as_str(), PY_TOKEN, &pmk, "", &good];
        let mut d = Decoder::new();
        for t in cases {
            assert_eq!(d.decode(t), decode(t), "{t:?}");
        }
        assert_eq!(d.decode(&bomb), Err(Error::TooLarge));
        assert!(d.decode(&good).is_ok());
    }

    #[test]
    fn official_vector_sig() {
        let token = mint(KEY, APP, "xiaojun", 86400, T0, None);
        let sig = decode(&token).unwrap();
        assert_eq!(STANDARD.encode(sig.sig), "SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVc=");
        assert_eq!((sig.sdkappid, sig.identifier.as_str(), sig.time, sig.expire), (APP, "xiaojun", T0, 86400));
        assert_eq!(sig.userbuf, None);
        assert_eq!(sig.expires_at(), T0 + 86400);
        assert_eq!(sig.verify(KEY, T0 + 1), Ok(()));
        assert_eq!(sig.verify(KEY, T0 + 86399), Ok(()));
        assert_eq!(sig.verify(KEY, 1_700_086_400), Err(Error::Expired));
        assert_eq!(sig.check_identity(APP, "xiaojun"), Ok(()));
    }

    #[test]
    fn mint_json_matches_python_library_text() {
        assert_eq!(mint_json(KEY, APP, "xiaojun", 86400, T0, None), PY_JSON);
        assert_eq!(inflate(&mint(KEY, APP, "xiaojun", 86400, T0, None)), PY_JSON);
    }

    #[test]
    fn decodes_python_zlib_token() {
        let sig = decode(PY_TOKEN).unwrap();
        assert_eq!(inflate(PY_TOKEN), PY_JSON);
        assert_eq!(sig.verify(KEY, T0 + 1), Ok(()));
        assert_eq!(sig, decode(&mint(KEY, APP, "xiaojun", 86400, T0, None)).unwrap());
    }

    #[test]
    fn python_escaping_of_identifier() {
        // Expected text from CPython `json.dumps`.
        let mut s = String::new();
        push_py_json_str(&mut s, "用户\"x\\\n\t\u{7f}\u{1}😀/");
        assert_eq!(s, r#""\u7528\u6237\"x\\\n\t\u007f\u0001\ud83d\ude00/""#);
        let id = "用户\"x\\\n\t\u{7f}\u{1}😀/";
        let sig = decode(&mint(KEY, APP, id, 60, T0, None)).unwrap();
        assert_eq!(sig.identifier, id);
        assert_eq!(sig.verify(KEY, T0), Ok(()));
    }

    /// Same signature, JSON in other libraries' shapes and zlib levels.
    #[test]
    fn field_order_spacing_and_level_independent() {
        let sig = "SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVc=";
        let docs = [
            // C++ (rapidjson) order, compact.
            format!(
                "{{\"TLS.ver\":\"2.0\",\"TLS.sdkappid\":1400000000,\"TLS.identifier\":\"xiaojun\",\"TLS.time\":1700000000,\"TLS.expire\":86400,\"TLS.sig\":\"{sig}\"}}"
            ),
            // Go: compact plus the trailing newline of json.Encoder.
            format!(
                "{{\"TLS.ver\":\"2.0\",\"TLS.identifier\":\"xiaojun\",\"TLS.sdkappid\":1400000000,\"TLS.expire\":86400,\"TLS.time\":1700000000,\"TLS.sig\":\"{sig}\"}}\n"
            ),
            // PHP escapes '/' and the key order is reversed, with odd whitespace and an
            // unknown field.
            format!(
                " {{\r\n\t\"TLS.sig\" : \"{}\" ,\n \"x-extra\": [1, {{\"a\": null}}],\"TLS.time\":1700000000 , \"TLS.expire\"\t:86400,\"TLS.sdkappid\": 1400000000, \"TLS.identifier\": \"xiao\\u006aun\",  \"TLS.ver\": \"2.0\" }}  ",
                sig.replace('/', "\\/")
            ),
        ];
        for doc in &docs {
            for level in [0, 1, 6, 9] {
                let s = decode(&tok(doc, level)).unwrap();
                assert_eq!(s.verify(KEY, T0 + 1), Ok(()), "{doc} @ {level}");
                assert_eq!(s.identifier, "xiaojun");
            }
        }
        // Padding stripped (Node's decoder re-pads): still accepted.
        let t = tok(&docs[0], 9);
        let unpadded = t.trim_end_matches('_');
        assert_ne!(unpadded.len(), t.len(), "vector should need padding");
        assert_eq!(decode(unpadded).unwrap().verify(KEY, T0 + 1), Ok(()));
    }

    #[test]
    fn real_world_token_with_string_sdkappid() {
        // Published in a public web app's config; produced by Tencent's client-side
        // generator with SDKAppID given as a string. Key unknown: decode only.
        let t = "eJwtjM0KgkAYRd9ltoXO5-yZ0CaiDCwINWipzkwMqehkoUXvnpjLe*4994OSKHZeyqIAeQ5GyykbqerOaDNhoiRAkUshSUGl4CudcQVCaF*zHBM6Ow95z5rGyNEAijETDEDMneobYxUKOKY*xn-WmWokwOm4JJyz*cXcxoPLgiehddtzFQ-hsbV9WZMyja7es3Pf6VZEG*WeLrDbD4c1*v4AXaU4QQ__";
        assert!(inflate(t).contains("\"TLS.sdkappid\":\"1400575117\""));
        let s = decode(t).unwrap();
        assert_eq!((s.sdkappid, s.time, s.expire), (1_400_575_117, 1_645_753_665, 604_800));
        assert_eq!(s.verify(KEY, 1_645_753_666), Err(Error::BadSignature));
    }

    #[test]
    fn numeric_fields_strict() {
        let sig = "SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVc=";
        let doc = |app: &str, time: &str, exp: &str| {
            format!(
                "{{\"TLS.ver\":\"2.0\",\"TLS.identifier\":\"xiaojun\",\"TLS.sdkappid\":{app},\"TLS.time\":{time},\"TLS.expire\":{exp},\"TLS.sig\":\"{sig}\"}}"
            )
        };
        let ok = decode(&tok(&doc("\"1400000000\"", "\"1700000000\"", "\"86400\""), 6)).unwrap();
        assert_eq!(ok.verify(KEY, T0 + 1), Ok(()));
        for (app, err) in [
            ("\"01400000000\"", Error::BadField("TLS.sdkappid")),
            ("\"+1400000000\"", Error::BadField("TLS.sdkappid")),
            ("\" 1400000000\"", Error::BadField("TLS.sdkappid")),
            ("\"\"", Error::BadField("TLS.sdkappid")),
            ("1400000000.0", Error::BadField("TLS.sdkappid")),
            ("1.4e9", Error::BadField("TLS.sdkappid")),
            ("-1", Error::BadField("TLS.sdkappid")),
            ("18446744073709551616", Error::BadField("TLS.sdkappid")),
            ("\"18446744073709551616\"", Error::BadField("TLS.sdkappid")),
            ("null", Error::BadField("TLS.sdkappid")),
            ("true", Error::BadField("TLS.sdkappid")),
        ] {
            assert_eq!(decode(&tok(&doc(app, "1700000000", "86400"), 6)), Err(err), "{app}");
        }
        // time + expire overflowing u64.
        assert_eq!(decode(&tok(&doc("1", "18446744073709551615", "1"), 6)), Err(Error::BadField("TLS.expire")));
    }

    #[test]
    fn missing_duplicate_and_bad_fields() {
        let fields = [
            ("TLS.ver", "\"2.0\""),
            ("TLS.identifier", "\"xiaojun\""),
            ("TLS.sdkappid", "1400000000"),
            ("TLS.time", "1700000000"),
            ("TLS.expire", "86400"),
            ("TLS.sig", "\"SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVc=\""),
        ];
        let build = |skip: Option<&str>, extra: &str| {
            let mut parts: Vec<String> =
                fields.iter().filter(|(k, _)| Some(*k) != skip).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            if !extra.is_empty() {
                parts.push(extra.to_owned());
            }
            format!("{{{}}}", parts.join(","))
        };
        for (k, _) in fields {
            assert_eq!(decode(&tok(&build(Some(k), ""), 6)), Err(Error::MissingField(k)));
        }
        assert_eq!(decode(&tok(&build(None, "\"TLS.time\":1700000001"), 6)), Err(Error::BadJson));
        for (extra_for, value, err) in [
            ("TLS.ver", "\"1.0\"", Error::BadField("TLS.ver")),
            ("TLS.ver", "2.0", Error::BadField("TLS.ver")),
            ("TLS.identifier", "7", Error::BadField("TLS.identifier")),
            ("TLS.sig", "\"c2ln\"", Error::BadField("TLS.sig")),
            ("TLS.sig", "\"SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVc\"", Error::BadField("TLS.sig")),
            ("TLS.sig", "\"SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVd=\"", Error::BadField("TLS.sig")),
            ("TLS.sig", "[]", Error::BadField("TLS.sig")),
        ] {
            let doc = build(Some(extra_for), &format!("\"{extra_for}\":{value}"));
            assert_eq!(decode(&tok(&doc, 6)), Err(err), "{doc}");
        }
        let doc = build(None, "\"TLS.userbuf\":\"***\"");
        assert_eq!(decode(&tok(&doc, 6)), Err(Error::BadField("TLS.userbuf")));
        for not_obj in ["[1]", "\"x\"", "null", "{", "", "\u{feff}{}"] {
            assert_eq!(decode(&tok(not_obj, 6)), Err(Error::BadJson), "{not_obj:?}");
        }
        assert_eq!(decode(&b64tok(&zlib(b"{\"a\":\"\xff\"}", 6))), Err(Error::BadJson));
    }

    #[test]
    fn forged_wrong_key_wrong_identity() {
        let token = mint(KEY, APP, "xiaojun", 86400, T0, None);
        assert_eq!(decode(&token).unwrap().verify(b"wrong", T0 + 1), Err(Error::BadSignature));
        // Every single-character change of the MAC in the JSON.
        let mut changed = 0;
        for i in 0..43 {
            let sig = "SNF4FmVCPucoXsBOpbVF3fFCf57JPm0ezZ1jeVILlVc=";
            let mut b = sig.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let forged = PY_JSON.replace(sig, std::str::from_utf8(&b).unwrap());
            match decode(&tok(&forged, 6)) {
                Ok(s) => {
                    assert_eq!(s.verify(KEY, T0 + 1), Err(Error::BadSignature));
                    changed += 1;
                }
                Err(e) => assert_eq!(e, Error::BadField("TLS.sig")), // non-zero trailing bits
            }
        }
        assert!(changed >= 42);
        // Identifier, sdkappid, time or expire altered, signature kept.
        for (from, to) in [
            ("\"xiaojun\"", "\"xiaojum\""),
            ("1400000000", "1400000001"),
            ("1700000000", "1700000001"),
            ("86400", "86401"),
        ] {
            let s = decode(&tok(&PY_JSON.replace(from, to), 6)).unwrap();
            assert_eq!(s.verify(KEY, T0 + 1), Err(Error::BadSignature), "{to}");
        }
        // Adding a userbuf to a plain UserSig breaks the MAC.
        let with_buf = PY_JSON.replace("\"TLS.sig\"", "\"TLS.userbuf\": \"\", \"TLS.sig\"");
        let s = decode(&tok(&with_buf, 6)).unwrap();
        assert_eq!(s.userbuf.as_deref(), Some(&[][..]));
        assert_eq!(s.verify(KEY, T0 + 1), Err(Error::BadSignature));
        let s = decode(&token).unwrap();
        assert_eq!(s.check_identity(APP + 1, "xiaojun"), Err(Error::SdkAppIdMismatch));
        assert_eq!(s.check_identity(APP, "xiaojuN"), Err(Error::IdentifierMismatch));
        // Forged tokens are rejected before the clock is looked at.
        assert_eq!(s.verify(b"wrong", u64::MAX), Err(Error::BadSignature));
    }

    #[test]
    fn expiry_and_future_time() {
        let s = decode(&mint(KEY, APP, "u", 100, T0, None)).unwrap();
        assert_eq!(s.verify(KEY, T0), Ok(()));
        assert_eq!(s.verify(KEY, T0 + 99), Ok(()));
        assert_eq!(s.verify(KEY, T0 + 100), Err(Error::Expired));
        assert_eq!(s.verify(KEY, T0 - MAX_FUTURE_SKEW_SECS), Ok(()));
        assert_eq!(s.verify(KEY, T0 - MAX_FUTURE_SKEW_SECS - 1), Err(Error::NotYetValid));
        let zero = decode(&mint(KEY, APP, "u", 0, T0, None)).unwrap();
        assert_eq!(zero.verify(KEY, T0), Err(Error::Expired));
        let huge = decode(&mint(KEY, APP, "u", u64::MAX - T0, T0, None)).unwrap();
        assert_eq!(huge.expires_at(), u64::MAX);
        assert_eq!(huge.verify(KEY, u64::MAX - 1), Ok(()));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error() {
        for token in [
            mint(KEY, APP, "xiaojun", 86400, T0, None),
            PY_TOKEN.to_owned(),
            mint_private_map_key(KEY, 1_400_000_000, "xiaojun", 300, T0, RoomRef::Str("r1"), PrivilegeMap::ALL),
        ] {
            for len in 0..token.len() {
                // Only dropping padding leaves a valid token (padding is optional).
                if decode(&token[..len]).is_ok() {
                    assert!(token[len..].bytes().all(|b| b == b'_'), "prefix {len} accepted");
                }
                fuzz_decode(&token.as_bytes()[..len]);
            }
            // Every byte replaced by a few alternatives: never panics.
            let bytes = token.as_bytes();
            for i in 0..bytes.len() {
                for c in [b'A', b'z', b'*', b'-', b'_', b'+', 0xff] {
                    let mut b = bytes.to_vec();
                    b[i] = c;
                    fuzz_decode(&b);
                }
            }
        }
        assert_eq!(decode(""), Err(Error::Empty));
    }

    #[test]
    fn encoding_errors() {
        let good = mint(KEY, APP, "xiaojun", 86400, T0, None);
        for bad in [
            good.replace('*', "+"),
            good.replace('-', "/"),
            good.replace('_', "="),
            format!(" {good}"),
            format!("{good}\n"),
            format!("{good}!"),
            format!("{good}é"),
            format!("{good}_"),
            "A".to_owned(),
            "AB_C".to_owned(),
        ] {
            if bad == good {
                continue;
            }
            assert_eq!(decode(&bad), Err(Error::BadEncoding), "{bad:?}");
        }
        // Valid base64 but not zlib, or zlib followed by junk.
        assert_eq!(decode("AAAA"), Err(Error::Inflate));
        let mut z = zlib(PY_JSON.as_bytes(), 6);
        z.push(0);
        assert_eq!(decode(&b64tok(&z)), Err(Error::Inflate));
        // Raw deflate without the zlib header.
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(6));
        d.write_all(PY_JSON.as_bytes()).unwrap();
        assert_eq!(decode(&b64tok(&d.finish().unwrap())), Err(Error::Inflate));
        // Bad Adler-32.
        let mut z = zlib(PY_JSON.as_bytes(), 6);
        let n = z.len();
        z[n - 1] ^= 1;
        assert_eq!(decode(&b64tok(&z)), Err(Error::Inflate));
    }

    #[test]
    fn size_bounds() {
        assert_eq!(decode(&"A".repeat(MAX_TOKEN_LEN + 1)), Err(Error::TooLong));
        // Zip bomb: 1 MB of spaces compresses to ~1 KB.
        let bomb = b64tok(&zlib(&vec![b' '; 1 << 20], 9));
        assert!(bomb.len() <= MAX_TOKEN_LEN, "{}", bomb.len());
        assert_eq!(decode(&bomb), Err(Error::TooLarge));
        // Exactly at the bound is fine, one byte over is not.
        let pad = MAX_INFLATED_LEN - PY_JSON.len();
        let at = format!("{PY_JSON}{}", " ".repeat(pad));
        assert_eq!(decode(&tok(&at, 9)).unwrap().verify(KEY, T0 + 1), Ok(()));
        let over = format!("{at} ");
        assert_eq!(decode(&tok(&over, 9)), Err(Error::TooLarge));
    }

    /// Userbufs from CPython following the official `_gen_userbuf` layout:
    /// ("xiaojun", 1400000000, room 10000 / "1000000040", expire_at T0+180d, 255).
    const PY_USERBUF_NUM: &str = "0000077869616f6a756e53724e000000271066413f00000000ff00000000";
    const PY_USERBUF_STR: &str = "0100077869616f6a756e53724e000000000066413f00000000ff00000000000a31303030303030303430";

    #[test]
    fn userbuf_layout_matches_official() {
        let exp = (T0 + 86400 * 180) as u32;
        let n = encode_userbuf("xiaojun", 1_400_000_000, RoomRef::Num(10000), exp, PrivilegeMap::ALL);
        assert_eq!(n, hex(PY_USERBUF_NUM));
        let s = encode_userbuf("xiaojun", 1_400_000_000, RoomRef::Str("1000000040"), exp, PrivilegeMap::ALL);
        assert_eq!(s, hex(PY_USERBUF_STR));
        // Empty string room: the official libraries fall back to version 0, room 0.
        let e = encode_userbuf("xiaojun", 1_400_000_000, RoomRef::Str(""), exp, PrivilegeMap::ALL);
        assert_eq!(e, encode_userbuf("xiaojun", 1_400_000_000, RoomRef::Num(0), exp, PrivilegeMap::ALL));

        let d = decode_userbuf(&s).unwrap();
        assert_eq!(
            d,
            UserBuf {
                account: "xiaojun".into(),
                sdkappid: 1_400_000_000,
                room_num: 0,
                room_str: Some("1000000040".into()),
                expire_at: exp,
                privileges: PrivilegeMap::ALL,
            }
        );
        assert_eq!(d.room(), RoomRef::Str("1000000040"));
        assert_eq!(decode_userbuf(&n).unwrap().room(), RoomRef::Num(10000));
    }

    #[test]
    fn private_map_key_json_matches_python_library_text() {
        let exp = 86400 * 180;
        let n = mint_private_map_key(KEY, 1_400_000_000, "xiaojun", exp, T0, RoomRef::Num(10000), PrivilegeMap::ALL);
        assert_eq!(
            inflate(&n),
            "{\"TLS.ver\": \"2.0\", \"TLS.identifier\": \"xiaojun\", \"TLS.sdkappid\": 1400000000, \
             \"TLS.expire\": 15552000, \"TLS.time\": 1700000000, \
             \"TLS.userbuf\": \"AAAHeGlhb2p1blNyTgAAACcQZkE/AAAAAP8AAAAA\", \
             \"TLS.sig\": \"y9Avb5xwHgIgoABbGakLaE0xs+v/dLcIPegbWfcbRLI=\"}"
        );
        let s =
            mint_private_map_key(KEY, 1_400_000_000, "xiaojun", exp, T0, RoomRef::Str("1000000040"), PrivilegeMap::ALL);
        assert_eq!(
            inflate(&s),
            "{\"TLS.ver\": \"2.0\", \"TLS.identifier\": \"xiaojun\", \"TLS.sdkappid\": 1400000000, \
             \"TLS.expire\": 15552000, \"TLS.time\": 1700000000, \
             \"TLS.userbuf\": \"AQAHeGlhb2p1blNyTgAAAAAAZkE/AAAAAP8AAAAAAAoxMDAwMDAwMDQw\", \
             \"TLS.sig\": \"uupaOmIqiVUsVoCDvmakmGU86GEQBV0Ie6Q+9GFbowM=\"}"
        );
        // And the CPython/C-zlib token for the string-room key decodes and verifies.
        let py = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPWlxalFSaVpIFscAx09Ut1zMpKMCgyTcvwqQ9IdwSAq21UfzAiwgAg45lf4ujiWQ3BgOdxZmekgY0pLCxL9cz0LM8NCi8PynV3KchOzc91DLczcXQOdwgw8U80CtS3d3ZLyy31tlWoBcSFKPg__";
        let ub = decode(py).unwrap().verify_private_map_key(KEY, T0 + 1).unwrap();
        assert_eq!(ub.room(), RoomRef::Str("1000000040"));
    }

    #[test]
    fn private_map_key_roundtrip_and_privileges() {
        let privs = PrivilegeMap::ENTER | PrivilegeMap::RECV_AUDIO | PrivilegeMap::RECV_VIDEO;
        assert_eq!(privs.bits(), 42);
        for room in [RoomRef::Num(1234), RoomRef::Str("room-α")] {
            let t = mint_private_map_key(KEY, 1_400_000_000, "alice", 300, T0, room, privs);
            let s = decode(&t).unwrap();
            let ub = s.verify_private_map_key(KEY, T0 + 1).unwrap();
            assert_eq!(ub.room(), room);
            assert_eq!(ub.account, "alice");
            assert_eq!(ub.expire_at, (T0 + 300) as u32);
            assert!(ub.privileges.contains(PrivilegeMap::ENTER));
            assert!(ub.privileges.contains(PrivilegeMap::RECV_AUDIO | PrivilegeMap::RECV_VIDEO));
            assert!(!ub.privileges.contains(PrivilegeMap::SEND_AUDIO));
            assert!(!ub.privileges.contains(PrivilegeMap::SEND_VIDEO));
            assert!(!ub.privileges.contains(PrivilegeMap::CREATE));
            assert!(!ub.privileges.contains(PrivilegeMap::ALL));
            assert!(PrivilegeMap::ALL.contains(privs));
            assert_eq!(s.verify_private_map_key(KEY, T0 + 300), Err(Error::Expired));
            assert_eq!(s.verify_private_map_key(b"k", T0 + 1), Err(Error::BadSignature));
        }
        // A plain UserSig is not a PrivateMapKey.
        let plain = decode(&mint(KEY, APP, "alice", 300, T0, None)).unwrap();
        assert_eq!(plain.verify_private_map_key(KEY, T0 + 1), Err(Error::MissingField("TLS.userbuf")));
        // Userbuf naming someone else, signed correctly, is still refused.
        let other = encode_userbuf("bob", 1_400_000_000, RoomRef::Num(1), (T0 + 300) as u32, privs);
        let s = decode(&mint(KEY, APP, "alice", 300, T0, Some(&other))).unwrap();
        assert_eq!(
            s.verify_private_map_key(KEY, T0 + 1),
            Err(Error::BadUserBuf("account differs from TLS.identifier"))
        );
        let other = encode_userbuf("alice", 1_400_000_001, RoomRef::Num(1), (T0 + 300) as u32, privs);
        let s = decode(&mint(KEY, APP, "alice", 300, T0, Some(&other))).unwrap();
        assert_eq!(s.verify_private_map_key(KEY, T0 + 1), Err(Error::BadUserBuf("sdkappid differs from TLS.sdkappid")));
        // Userbuf expiry shorter than the token's.
        let short = encode_userbuf("alice", 1_400_000_000, RoomRef::Num(1), (T0 + 10) as u32, privs);
        let s = decode(&mint(KEY, APP, "alice", 300, T0, Some(&short))).unwrap();
        assert_eq!(s.verify(KEY, T0 + 10), Ok(()));
        assert_eq!(s.verify_private_map_key(KEY, T0 + 10), Err(Error::Expired));
    }

    #[test]
    fn decode_userbuf_is_strict() {
        let num = hex(PY_USERBUF_NUM);
        let st = hex(PY_USERBUF_STR);
        for b in [&num, &st] {
            for len in 0..b.len() {
                assert!(decode_userbuf(&b[..len]).is_err(), "prefix {len}");
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(decode_userbuf(&long), Err(Error::BadUserBuf("trailing bytes")));
        }
        let mut v = num.clone();
        v[0] = 2;
        assert_eq!(decode_userbuf(&v), Err(Error::BadUserBuf("unknown version")));
        let mut v = num.clone();
        let n = v.len();
        v[n - 1] = 1;
        assert_eq!(decode_userbuf(&v), Err(Error::BadUserBuf("account type is not 0")));
        // Version 1 with an empty room string.
        let mut v = num.clone();
        v[0] = 1;
        v.extend_from_slice(&[0, 0]);
        assert_eq!(decode_userbuf(&v), Err(Error::BadUserBuf("empty string room")));
        let mut v = num.clone();
        v[3] = 0xff;
        assert_eq!(decode_userbuf(&v), Err(Error::BadUserBuf("account is not UTF-8")));
        // Account length pointing past the end.
        let mut v = num.clone();
        v[1] = 0xff;
        assert_eq!(decode_userbuf(&v), Err(Error::BadUserBuf("truncated")));
    }

    #[test]
    fn fuzz_decode_smoke() {
        let seeds: Vec<Vec<u8>> = vec![
            vec![],
            b"\xff\xfe".to_vec(),
            PY_TOKEN.as_bytes().to_vec(),
            hex(PY_USERBUF_STR),
            tok("{\"TLS.ver\":\"2.0\"}", 1).into_bytes(),
            b64tok(&zlib(&vec![b'['; 4000], 9)).into_bytes(),
            b64tok(&zlib(&vec![b' '; 1 << 16], 9)).into_bytes(),
        ];
        // Deterministic xorshift mutations of the seeds.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in &seeds {
            fuzz_decode(seed);
            for _ in 0..300 {
                let mut m = seed.clone();
                if m.is_empty() {
                    m.push(0);
                }
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                fuzz_decode(&m);
            }
        }
        // A syntactically valid token for the fuzz key exercises the success paths.
        let t = mint_private_map_key(b"fuzz-key", 7, "u", 10, T0, RoomRef::Num(1), PrivilegeMap::ALL);
        fuzz_decode(t.as_bytes());
    }
}
