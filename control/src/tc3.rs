//! TC3-HMAC-SHA256: Tencent Cloud API v3 request signing and verification.
//!
//! The management API authenticates every request the way Tencent Cloud API v3 does, so the
//! official SDKs and existing TRTC back-end code can sign requests for edgerelay unchanged.
//! The algorithm (Tencent Cloud "Signature v3"):
//!
//! 1. Canonical request: `method \n uri \n query \n canonical_headers \n signed_headers \n
//!    hex(sha256(body))`, where `canonical_headers` is `name:value\n` for each signed header,
//!    names and values lowercased and trimmed, names sorted (the SDKs sign
//!    `content-type;host`).
//! 2. String to sign: `TC3-HMAC-SHA256 \n timestamp \n date/service/tc3_request \n
//!    hex(sha256(canonical_request))`, `date` being the UTC `yyyy-mm-dd` of `timestamp`.
//! 3. Key: `HMAC(HMAC(HMAC("TC3" + SecretKey, date), service), "tc3_request")`; the signature
//!    is the hex HMAC-SHA256 of the string to sign under that key.
//! 4. Header: `Authorization: TC3-HMAC-SHA256 Credential=SecretId/date/service/tc3_request,
//!    SignedHeaders=content-type;host, Signature=hex`.
//!
//! Verification invariants:
//! - The `Authorization` header is parsed strictly and never panics: bounded total length and
//!   field lengths, the exact algorithm name, the fields in the order every SDK emits them
//!   (`Credential`, `SignedHeaders`, `Signature`; a comma, then optional spaces, between them).
//!   A field out of order, repeated, missing or unknown is rejected, not tolerated: there is
//!   one accepted spelling, so there is nothing to confuse.
//! - The credential scope must name the request's date (derived from `X-TC-Timestamp`) and
//!   this service; the signed headers must include `content-type` and `host`, be lowercase,
//!   sorted and unique, and each must occur exactly once in the request.
//! - The timestamp may be at most [`MAX_SKEW_SECS`] away from `now`.
//! - The signature is compared in constant time, and only then recorded in the
//!   [`ReplayCache`], so forged requests cannot fill the cache.
//!
//! Everything is sans-IO: `now` is always a parameter.

use std::collections::{BTreeSet, HashSet};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The algorithm name, both in the string to sign and in the `Authorization` header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// Largest accepted distance between the request's timestamp and `now`, in seconds.
pub const MAX_SKEW_SECS: u64 = 300;
/// Longest `Authorization` header accepted, in bytes.
pub const MAX_AUTHORIZATION_LEN: usize = 1024;
/// Longest SecretId accepted in a credential.
pub const MAX_SECRET_ID_LEN: usize = 128;
/// Longest service name accepted in a credential scope.
pub const MAX_SERVICE_LEN: usize = 64;
/// Most signed headers accepted.
pub const MAX_SIGNED_HEADERS: usize = 16;
/// Longest signed header name accepted.
pub const MAX_HEADER_NAME_LEN: usize = 64;
/// The headers every request must sign.
pub const REQUIRED_SIGNED_HEADERS: [&str; 2] = ["content-type", "host"];

const SCOPE_TERMINATOR: &str = "tc3_request";
const TIMESTAMP_MAX_DIGITS: usize = 12;

/// Why a signed request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tc3Error {
    /// The `Authorization` header exceeds [`MAX_AUTHORIZATION_LEN`] bytes.
    #[error("authorization header too long")]
    AuthorizationTooLong,
    /// The header does not start with `TC3-HMAC-SHA256 ` exactly.
    #[error("authorization algorithm is not TC3-HMAC-SHA256")]
    WrongAlgorithm,
    /// A field is missing, repeated, unknown or out of the order
    /// `Credential, SignedHeaders, Signature`, or a separator is wrong.
    #[error("authorization fields malformed or out of order")]
    MalformedFields,
    /// `Credential` is not `SecretId/yyyy-mm-dd/service/tc3_request` within bounds.
    #[error("malformed credential")]
    MalformedCredential,
    /// `SignedHeaders` is empty, too long, not lowercase, not sorted or has duplicates.
    #[error("malformed signed headers")]
    MalformedSignedHeaders,
    /// `Signature` is not 64 lowercase hex digits.
    #[error("malformed signature")]
    MalformedSignature,
    /// The `X-TC-Timestamp` value is not a decimal number of seconds.
    #[error("malformed timestamp")]
    MalformedTimestamp,
    /// The timestamp is more than [`MAX_SKEW_SECS`] away from the server's clock.
    #[error("request timestamp outside the allowed clock skew")]
    ClockSkew,
    /// The credential scope's date is not the UTC date of the request's timestamp.
    #[error("credential scope date does not match the timestamp")]
    ScopeDate,
    /// The credential scope names another service.
    #[error("credential scope service does not match")]
    ScopeService,
    /// `content-type` or `host` is not among the signed headers.
    #[error("required header not signed")]
    RequiredHeaderUnsigned,
    /// A signed header is absent from the request, or occurs more than once.
    #[error("signed header absent or repeated in the request")]
    SignedHeaderNotInRequest,
    /// No usable key has this SecretId (unknown, revoked or expired).
    #[error("unknown secret id")]
    UnknownSecretId,
    /// The signature does not match the request.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// This signature was already accepted within the skew window.
    #[error("replayed signature")]
    Replayed,
    /// The replay cache is full of unexpired entries; the request is refused (fail closed).
    #[error("replay cache full")]
    ReplayCacheFull,
}

/// The parts of an HTTP request that TC3 signs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method, e.g. `POST`, as sent.
    pub method: &'a str,
    /// Canonical URI; `/` for Tencent-style APIs.
    pub uri: &'a str,
    /// Canonical query string: empty for POST, the URL's query for GET.
    pub query: &'a str,
    /// All request headers as `(name, value)`; names are matched case-insensitively.
    pub headers: &'a [(&'a str, &'a str)],
    /// The request body.
    pub payload: &'a [u8],
}

/// A credential scope and timestamp identifying one signing key and time.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Seconds since the Unix epoch, as sent in `X-TC-Timestamp`.
    pub timestamp: u64,
    /// The service name, e.g. `cvm`.
    pub service: &'a str,
}

/// A signature computed by [`sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Lowercase hex HMAC-SHA256.
    pub signature: String,
    /// The complete `Authorization` header value.
    pub authorization: String,
}

/// A request that passed [`Verifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The SecretId that signed the request.
    pub secret_id: String,
    /// The request's timestamp.
    pub timestamp: u64,
}

/// UTC `yyyy-mm-dd` of a Unix timestamp (proleptic Gregorian, Hinnant's civil-from-days).
pub fn utc_date(timestamp: u64) -> String {
    let days = (timestamp / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC-SHA256 takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The canonical request for `signed_headers` (lowercase, sorted, `;`-separated).
/// Fails when a signed header is absent from the request or repeated in it.
pub fn canonical_request(req: &Request<'_>, signed_headers: &str) -> Result<String, Tc3Error> {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(req.uri);
    out.push('\n');
    out.push_str(req.query);
    out.push('\n');
    for name in signed_headers.split(';') {
        let mut values = req.headers.iter().filter(|(n, _)| n.trim().eq_ignore_ascii_case(name));
        let (Some((_, value)), None) = (values.next(), values.next()) else {
            return Err(Tc3Error::SignedHeaderNotInRequest);
        };
        out.push_str(name);
        out.push(':');
        out.push_str(&value.trim().to_ascii_lowercase());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(&sha256_hex(req.payload));
    Ok(out)
}

/// The string to sign for a canonical request.
pub fn string_to_sign(scope: &Scope<'_>, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}/{}/{SCOPE_TERMINATOR}\n{}",
        scope.timestamp,
        utc_date(scope.timestamp),
        scope.service,
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The raw HMAC-SHA256 signature of `string_to_sign` under the derived key.
fn signature_bytes(secret_key: &[u8], scope: &Scope<'_>, string_to_sign: &str) -> [u8; 32] {
    let mut k = Vec::with_capacity(3 + secret_key.len());
    k.extend_from_slice(b"TC3");
    k.extend_from_slice(secret_key);
    let k_date = hmac(&k, utc_date(scope.timestamp).as_bytes());
    let k_service = hmac(&k_date, scope.service.as_bytes());
    let k_signing = hmac(&k_service, SCOPE_TERMINATOR.as_bytes());
    hmac(&k_signing, string_to_sign.as_bytes())
}

/// Signs `req` with `content-type;host`, as the Tencent SDKs do.
/// Fails only when the request lacks exactly one `content-type` and one `host` header.
pub fn sign(secret_id: &str, secret_key: &[u8], scope: &Scope<'_>, req: &Request<'_>) -> Result<Signed, Tc3Error> {
    sign_headers(secret_id, secret_key, scope, req, &REQUIRED_SIGNED_HEADERS.join(";"))
}

/// Signs `req` with the given signed headers (lowercase, sorted, unique, `;`-separated,
/// including `content-type` and `host`; else [`Tc3Error::MalformedSignedHeaders`] or
/// [`Tc3Error::RequiredHeaderUnsigned`], so a client cannot sign what the verifier refuses). Signing a per-request nonce header (e.g. `x-tc-nonce`) lets a
/// client send the same request twice within a second without it being taken for a replay.
pub fn sign_headers(
    secret_id: &str,
    secret_key: &[u8],
    scope: &Scope<'_>,
    req: &Request<'_>,
    signed_headers: &str,
) -> Result<Signed, Tc3Error> {
    let names: Vec<&str> = signed_headers.split(';').collect();
    let well_formed = names.len() <= MAX_SIGNED_HEADERS
        && names.windows(2).all(|w| w[0] < w[1])
        && names.iter().all(|n| {
            !n.is_empty()
                && n.len() <= MAX_HEADER_NAME_LEN
                && n.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        });
    if !well_formed {
        return Err(Tc3Error::MalformedSignedHeaders);
    }
    if !REQUIRED_SIGNED_HEADERS.iter().all(|r| names.contains(r)) {
        return Err(Tc3Error::RequiredHeaderUnsigned);
    }
    let canonical = canonical_request(req, signed_headers)?;
    let signature = hex::encode(signature_bytes(secret_key, scope, &string_to_sign(scope, &canonical)));
    let authorization = format!(
        "{ALGORITHM} Credential={secret_id}/{}/{}/{SCOPE_TERMINATOR}, SignedHeaders={signed_headers}, Signature={signature}",
        utc_date(scope.timestamp),
        scope.service
    );
    Ok(Signed { signature, authorization })
}

/// A parsed `Authorization` header. Borrowed from the header; bounded by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The SecretId of the credential.
    pub secret_id: &'a str,
    /// The credential scope's date, `yyyy-mm-dd` (format checked, not the calendar).
    pub date: &'a str,
    /// The credential scope's service.
    pub service: &'a str,
    /// Signed header names, lowercase, sorted, unique, `;`-separated.
    pub signed_headers: &'a str,
    /// The signature.
    pub signature: [u8; 32],
}

fn take_field<'a>(rest: &'a str, name: &str, last: bool) -> Result<(&'a str, &'a str), Tc3Error> {
    let value_and_rest = rest.strip_prefix(name).and_then(|r| r.strip_prefix('=')).ok_or(Tc3Error::MalformedFields)?;
    if last {
        if value_and_rest.contains(',') {
            return Err(Tc3Error::MalformedFields);
        }
        return Ok((value_and_rest, ""));
    }
    let (value, rest) = value_and_rest.split_once(',').ok_or(Tc3Error::MalformedFields)?;
    Ok((value, rest.trim_start_matches(' ')))
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn is_date_shape(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

impl<'a> Authorization<'a> {
    /// Parses an `Authorization` header value strictly (see the module docs).
    pub fn parse(header: &'a str) -> Result<Self, Tc3Error> {
        if header.len() > MAX_AUTHORIZATION_LEN {
            return Err(Tc3Error::AuthorizationTooLong);
        }
        let rest = header
            .strip_prefix(ALGORITHM)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(Tc3Error::WrongAlgorithm)?
            .trim_start_matches(' ');
        let (credential, rest) = take_field(rest, "Credential", false)?;
        let (signed_headers, rest) = take_field(rest, "SignedHeaders", false)?;
        let (signature, _) = take_field(rest, "Signature", true)?;

        let mut parts = credential.split('/');
        let (Some(secret_id), Some(date), Some(service), Some(terminator), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Tc3Error::MalformedCredential);
        };
        let id_ok = !secret_id.is_empty() && secret_id.len() <= MAX_SECRET_ID_LEN && secret_id.bytes().all(is_id_char);
        let service_ok = !service.is_empty()
            && service.len() <= MAX_SERVICE_LEN
            && service.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !id_ok || !service_ok || !is_date_shape(date) || terminator != SCOPE_TERMINATOR {
            return Err(Tc3Error::MalformedCredential);
        }

        let mut count = 0;
        let mut previous: Option<&str> = None;
        for name in signed_headers.split(';') {
            count += 1;
            let name_ok = !name.is_empty()
                && name.len() <= MAX_HEADER_NAME_LEN
                && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
            if !name_ok || count > MAX_SIGNED_HEADERS || previous.is_some_and(|p| p >= name) {
                return Err(Tc3Error::MalformedSignedHeaders);
            }
            previous = Some(name);
        }

        let sig = signature.as_bytes();
        if sig.len() != 64 || !sig.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
            return Err(Tc3Error::MalformedSignature);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(sig, &mut bytes).map_err(|_| Tc3Error::MalformedSignature)?;

        Ok(Authorization { secret_id, date, service, signed_headers, signature: bytes })
    }
}

/// Parses an `X-TC-Timestamp` value: 1 to 12 decimal digits, no sign or spaces.
pub fn parse_timestamp(value: &str) -> Result<u64, Tc3Error> {
    if value.is_empty() || value.len() > TIMESTAMP_MAX_DIGITS || !value.bytes().all(|c| c.is_ascii_digit()) {
        return Err(Tc3Error::MalformedTimestamp);
    }
    value.parse().map_err(|_| Tc3Error::MalformedTimestamp)
}

/// Verifies TC3-signed requests for one service.
#[derive(Debug, Clone)]
pub struct Verifier {
    service: String,
    max_skew: u64,
}

impl Verifier {
    /// A verifier for `service` with the [`MAX_SKEW_SECS`] window.
    pub fn new(service: impl Into<String>) -> Self {
        Verifier { service: service.into(), max_skew: MAX_SKEW_SECS }
    }

    /// The accepted clock skew in seconds; also how long the replay cache keeps an entry.
    pub fn max_skew(&self) -> u64 {
        self.max_skew
    }

    /// Verifies `req` against its `Authorization` and `X-TC-Timestamp` header values.
    ///
    /// `secret_key_for` returns the SecretKey of a usable (not revoked, not expired) key.
    /// A verified signature is recorded in `replay`; seeing it again fails with
    /// [`Tc3Error::Replayed`]. Checks run cheapest first; the HMAC runs only for a known key.
    pub fn verify<K: AsRef<[u8]>>(
        &self,
        authorization: &str,
        timestamp: &str,
        req: &Request<'_>,
        now: u64,
        replay: &mut ReplayCache,
        secret_key_for: impl FnOnce(&str) -> Option<K>,
    ) -> Result<Verified, Tc3Error> {
        let auth = Authorization::parse(authorization)?;
        let timestamp = parse_timestamp(timestamp)?;
        if timestamp.abs_diff(now) > self.max_skew {
            return Err(Tc3Error::ClockSkew);
        }
        if auth.date != utc_date(timestamp) {
            return Err(Tc3Error::ScopeDate);
        }
        if auth.service != self.service {
            return Err(Tc3Error::ScopeService);
        }
        if !REQUIRED_SIGNED_HEADERS.iter().all(|h| auth.signed_headers.split(';').any(|s| s == *h)) {
            return Err(Tc3Error::RequiredHeaderUnsigned);
        }
        let canonical = canonical_request(req, auth.signed_headers)?;
        let key = secret_key_for(auth.secret_id).ok_or(Tc3Error::UnknownSecretId)?;
        let scope = Scope { timestamp, service: &self.service };
        let expected = signature_bytes(key.as_ref(), &scope, &string_to_sign(&scope, &canonical));
        if !bool::from(expected.ct_eq(&auth.signature)) {
            return Err(Tc3Error::SignatureMismatch);
        }
        replay.check_and_insert(auth.signature, timestamp.saturating_add(self.max_skew), now)?;
        Ok(Verified { secret_id: auth.secret_id.to_owned(), timestamp })
    }
}

/// Signatures accepted within the skew window, so each is accepted once.
///
/// Bounded: at most `capacity` entries. Each entry expires at its request's timestamp plus the
/// skew window, after which the timestamp check alone rejects the request. When the cache is
/// full of unexpired entries, new requests are refused rather than risking a replay.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    seen: HashSet<[u8; 32]>,
    by_expiry: BTreeSet<(u64, [u8; 32])>,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` signatures.
    pub fn new(capacity: usize) -> Self {
        ReplayCache { capacity, seen: HashSet::new(), by_expiry: BTreeSet::new() }
    }

    /// Number of signatures held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the cache holds no signature.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Drops entries whose expiry is before `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some(&(expires, sig)) = self.by_expiry.first() {
            if expires >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&sig);
        }
    }

    /// Records `signature` until `expires`, failing if it is already held or the cache is full.
    pub fn check_and_insert(&mut self, signature: [u8; 32], expires: u64, now: u64) -> Result<(), Tc3Error> {
        self.prune(now);
        if self.seen.contains(&signature) {
            return Err(Tc3Error::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Tc3Error::ReplayCacheFull);
        }
        self.seen.insert(signature);
        self.by_expiry.insert((expires, signature));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const TS: u64 = 1_551_113_065;
    const BODY: &str = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    const VECTOR: &str = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168";
    const HEADERS: [(&str, &str); 3] = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Host", "cvm.tencentcloudapi.com"),
        ("X-TC-Action", "DescribeInstances"),
    ];

    fn request(headers: &'static [(&'static str, &'static str)]) -> Request<'static> {
        Request { method: "POST", uri: "/", query: "", headers, payload: BODY.as_bytes() }
    }

    fn scope() -> Scope<'static> {
        Scope { timestamp: TS, service: "cvm" }
    }

    fn verify_at(
        auth: &str,
        ts: &str,
        req: &Request<'_>,
        now: u64,
        cache: &mut ReplayCache,
    ) -> Result<Verified, Tc3Error> {
        Verifier::new("cvm").verify(auth, ts, req, now, cache, |id| (id == ID).then_some(KEY))
    }

    fn signed() -> Signed {
        sign(ID, KEY.as_bytes(), &scope(), &request(&HEADERS)).expect("request has both headers")
    }

    #[test]
    fn tencent_example_vector() {
        let req = request(&HEADERS);
        let canonical = canonical_request(&req, "content-type;host").unwrap();
        assert_eq!(
            canonical,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n\
             content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let s = signed();
        assert_eq!(s.signature, VECTOR);
        assert_eq!(
            s.authorization,
            format!(
                "TC3-HMAC-SHA256 Credential={ID}/2019-02-25/cvm/tc3_request, \
                 SignedHeaders=content-type;host, Signature={VECTOR}"
            )
        );
        let v = verify_at(&s.authorization, "1551113065", &req, TS + 10, &mut ReplayCache::new(8)).unwrap();
        assert_eq!(v, Verified { secret_id: ID.into(), timestamp: TS });
    }

    #[test]
    fn extra_signed_headers_verify() {
        static WITH_NONCE: [(&str, &str); 3] =
            [("content-type", "application/json"), ("host", "h"), ("x-tc-nonce", "0123456789abcdef")];
        let req = request(&WITH_NONCE);
        let s = sign_headers(ID, KEY.as_bytes(), &scope(), &req, "content-type;host;x-tc-nonce").unwrap();
        assert!(s.authorization.contains("SignedHeaders=content-type;host;x-tc-nonce,"));
        assert_ne!(s.signature, sign(ID, KEY.as_bytes(), &scope(), &req).unwrap().signature);
        let v = verify_at(&s.authorization, "1551113065", &req, TS, &mut ReplayCache::new(8)).unwrap();
        assert_eq!(v.secret_id, ID);
    }

    #[test]
    fn signed_header_sets_are_checked_when_signing() {
        static WITH_NONCE: [(&str, &str); 3] = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Host", "cvm.tencentcloudapi.com"),
            ("X-TC-Nonce", "0123456789abcdef"),
        ];
        let req = request(&WITH_NONCE);
        // The required pair alone gives the SDKs' signature.
        assert_eq!(sign_headers(ID, KEY.as_bytes(), &scope(), &req, "content-type;host").unwrap().signature, VECTOR);
        let bad = [
            ("host;content-type", Tc3Error::MalformedSignedHeaders),
            ("content-type;host;X-TC-Nonce", Tc3Error::MalformedSignedHeaders),
            ("content-type;host;host", Tc3Error::MalformedSignedHeaders),
            ("", Tc3Error::MalformedSignedHeaders),
            ("content-type;x-tc-nonce", Tc3Error::RequiredHeaderUnsigned),
        ];
        for (names, want) in bad {
            assert_eq!(sign_headers(ID, KEY.as_bytes(), &scope(), &req, names), Err(want), "{names:?}");
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(TS), "2019-02-25");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(4_107_542_399), "2100-02-28");
        assert_eq!(utc_date(1_767_225_599), "2025-12-31");
        assert_eq!(utc_date(1_767_225_600), "2026-01-01");
    }

    #[test]
    fn replay_is_rejected_and_expires() {
        let s = signed();
        let req = request(&HEADERS);
        let mut cache = ReplayCache::new(8);
        verify_at(&s.authorization, "1551113065", &req, TS, &mut cache).unwrap();
        assert_eq!(verify_at(&s.authorization, "1551113065", &req, TS + 300, &mut cache), Err(Tc3Error::Replayed));
        // Past the window the timestamp check rejects it, and the cache entry is dropped.
        assert_eq!(verify_at(&s.authorization, "1551113065", &req, TS + 301, &mut cache), Err(Tc3Error::ClockSkew));
        cache.prune(TS + 301);
        assert!(cache.is_empty());
    }

    #[test]
    fn replay_cache_is_bounded() {
        let mut cache = ReplayCache::new(2);
        cache.check_and_insert([1; 32], 100, 0).unwrap();
        cache.check_and_insert([2; 32], 200, 0).unwrap();
        assert_eq!(cache.check_and_insert([3; 32], 300, 0), Err(Tc3Error::ReplayCacheFull));
        assert_eq!(cache.check_and_insert([1; 32], 300, 50), Err(Tc3Error::Replayed));
        cache.check_and_insert([3; 32], 300, 101).unwrap();
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn each_rejection() {
        let s = signed();
        let req = request(&HEADERS);
        let ok = s.authorization.as_str();
        let check = |auth: &str, ts: &str, now: u64| verify_at(auth, ts, &req, now, &mut ReplayCache::new(8));
        let cases: Vec<(String, &str, u64, Tc3Error)> = vec![
            ("x".repeat(MAX_AUTHORIZATION_LEN + 1), "1551113065", TS, Tc3Error::AuthorizationTooLong),
            (ok.replace("TC3-HMAC-SHA256", "TC3-HMAC-SHA1"), "1551113065", TS, Tc3Error::WrongAlgorithm),
            (ok.replacen("TC3-HMAC-SHA256 ", "tc3-hmac-sha256 ", 1), "1551113065", TS, Tc3Error::WrongAlgorithm),
            (ok.to_owned(), "1551113065x", TS, Tc3Error::MalformedTimestamp),
            (ok.to_owned(), "", TS, Tc3Error::MalformedTimestamp),
            (ok.to_owned(), "-1", TS, Tc3Error::MalformedTimestamp),
            (ok.to_owned(), "1551113065", TS + 301, Tc3Error::ClockSkew),
            (ok.to_owned(), "1551113065", TS - 301, Tc3Error::ClockSkew),
            (ok.replace("2019-02-25", "2019-02-24"), "1551113065", TS, Tc3Error::ScopeDate),
            (ok.replace("/cvm/", "/cdn/"), "1551113065", TS, Tc3Error::ScopeService),
            (ok.replace("content-type;host", "host"), "1551113065", TS, Tc3Error::RequiredHeaderUnsigned),
            (
                ok.replace("content-type;host", "content-type;host;x-tc-region"),
                "1551113065",
                TS,
                Tc3Error::SignedHeaderNotInRequest,
            ),
            (ok.replace(ID, "AKIDother"), "1551113065", TS, Tc3Error::UnknownSecretId),
            (ok.replace("5168", "5169"), "1551113065", TS, Tc3Error::SignatureMismatch),
            // Signed at another time: date and scope fine, signature wrong.
            (ok.to_owned(), "1551113066", TS, Tc3Error::SignatureMismatch),
            // Signing an extra header changes the canonical request.
            (
                ok.replace("content-type;host", "content-type;host;x-tc-action"),
                "1551113065",
                TS,
                Tc3Error::SignatureMismatch,
            ),
        ];
        for (auth, ts, now, want) in cases {
            assert_eq!(check(&auth, ts, now), Err(want.clone()), "{auth:?} {ts:?}");
        }
    }

    #[test]
    fn duplicate_request_header_is_rejected() {
        static DUP: [(&str, &str); 3] =
            [("content-type", "application/json; charset=utf-8"), ("host", "a"), ("HOST", "cvm.tencentcloudapi.com")];
        let s = signed();
        assert_eq!(
            verify_at(&s.authorization, "1551113065", &request(&DUP), TS, &mut ReplayCache::new(8)),
            Err(Tc3Error::SignedHeaderNotInRequest)
        );
        assert_eq!(sign(ID, KEY.as_bytes(), &scope(), &request(&DUP)), Err(Tc3Error::SignedHeaderNotInRequest));
    }

    #[test]
    fn header_values_are_trimmed_and_lowercased() {
        static MESSY: [(&str, &str); 2] =
            [(" HOST", " CVM.tencentcloudapi.com "), ("content-TYPE", "Application/JSON; charset=utf-8")];
        let s = sign(ID, KEY.as_bytes(), &scope(), &request(&MESSY)).unwrap();
        assert_eq!(s.signature, VECTOR);
    }

    #[test]
    fn header_parsing_edge_cases() {
        let ok = signed().authorization;
        assert!(Authorization::parse(&ok).is_ok());
        // Separators: a bare comma and several spaces are tolerated.
        assert!(Authorization::parse(&ok.replace(", ", ",")).is_ok());
        assert!(Authorization::parse(&ok.replace(", ", ",   ")).is_ok());
        let cred = format!("Credential={ID}/2019-02-25/cvm/tc3_request");
        let sh = "SignedHeaders=content-type;host";
        let sig = format!("Signature={VECTOR}");
        let bad: Vec<(String, Tc3Error)> = vec![
            (String::new(), Tc3Error::WrongAlgorithm),
            ("TC3-HMAC-SHA256".into(), Tc3Error::WrongAlgorithm),
            ("TC3-HMAC-SHA256 ".into(), Tc3Error::MalformedFields),
            (ok[..ok.len() - 1].to_owned(), Tc3Error::MalformedSignature),
            (ok[..ok.find(", Signature").unwrap()].to_owned(), Tc3Error::MalformedFields),
            (format!("TC3-HMAC-SHA256 {sh}, {cred}, {sig}"), Tc3Error::MalformedFields),
            (format!("TC3-HMAC-SHA256 {cred}, {sig}, {sh}"), Tc3Error::MalformedFields),
            (format!("TC3-HMAC-SHA256 {cred}, {cred}, {sh}, {sig}"), Tc3Error::MalformedFields),
            (format!("TC3-HMAC-SHA256 {cred}, {sh}, {sig}, {sig}"), Tc3Error::MalformedFields),
            (format!("TC3-HMAC-SHA256 {cred}, {sh}, {sig}, Timestamp=1"), Tc3Error::MalformedFields),
            (
                format!("TC3-HMAC-SHA256 credential={ID}/2019-02-25/cvm/tc3_request, {sh}, {sig}"),
                Tc3Error::MalformedFields,
            ),
            (ok.replace("/tc3_request", "/tc3_request/x"), Tc3Error::MalformedCredential),
            (ok.replace("/tc3_request", "/aws4_request"), Tc3Error::MalformedCredential),
            (ok.replace("2019-02-25", "2019-2-25"), Tc3Error::MalformedCredential),
            (ok.replace(ID, ""), Tc3Error::MalformedCredential),
            (ok.replace(ID, "AKID x"), Tc3Error::MalformedCredential),
            (ok.replace(ID, &"A".repeat(MAX_SECRET_ID_LEN + 1)), Tc3Error::MalformedCredential),
            (ok.replace("/cvm/", "/CVM/"), Tc3Error::MalformedCredential),
            (ok.replace("content-type;host", "host;content-type"), Tc3Error::MalformedSignedHeaders),
            (ok.replace("content-type;host", "content-type;host;host"), Tc3Error::MalformedSignedHeaders),
            (ok.replace("content-type;host", "Content-Type;host"), Tc3Error::MalformedSignedHeaders),
            (ok.replace("content-type;host", "content-type;;host"), Tc3Error::MalformedSignedHeaders),
            (ok.replace("content-type;host", ""), Tc3Error::MalformedSignedHeaders),
            (ok.replace(VECTOR, &VECTOR.to_uppercase()), Tc3Error::MalformedSignature),
            (ok.replace(VECTOR, &VECTOR[..62]), Tc3Error::MalformedSignature),
            (ok.replace(VECTOR, &format!("{}zz", &VECTOR[..62])), Tc3Error::MalformedSignature),
        ];
        for (header, want) in bad {
            assert_eq!(Authorization::parse(&header), Err(want), "{header:?}");
        }
        let many: Vec<String> = (0..=MAX_SIGNED_HEADERS).map(|i| format!("h{i:02}")).collect();
        let too_many = ok.replace("content-type;host", &many.join(";"));
        assert_eq!(Authorization::parse(&too_many), Err(Tc3Error::MalformedSignedHeaders));
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_headers_never_panic_or_verify() {
        let ok = signed().authorization;
        let req = request(&HEADERS);
        let alphabet: &[u8] = b"TC3-HMAC-SHA256 Credential=/,;= SignedHeaders Signature0123456789abcdef\x00\xff\t";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut cache = ReplayCache::new(8);
        for i in 0..20_000 {
            let mut bytes = ok.clone().into_bytes();
            if i % 4 == 0 {
                let len = rng.below(MAX_AUTHORIZATION_LEN + 64);
                bytes = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            } else {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len() + 1);
                    match rng.below(3) {
                        0 if at < bytes.len() => bytes[at] = alphabet[rng.below(alphabet.len())],
                        1 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
                    }
                }
            }
            let header = String::from_utf8_lossy(&bytes);
            if header == ok {
                continue;
            }
            let _ = Authorization::parse(&header);
            // A mutated header can still be equivalent (e.g. an added space after a comma);
            // it must then carry the genuine signature.
            if verify_at(&header, "1551113065", &req, TS, &mut cache).is_ok() {
                assert!(header.ends_with(VECTOR), "{header:?} verified");
                cache = ReplayCache::new(8);
            }
        }
    }
}
