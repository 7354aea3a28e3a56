//! Join protocol v2: a Noise NK handshake ([`crate::noise`]) to the relay's static key,
//! with WireGuard-style MACs in front of it.
//!
//! ```text
//! join (client → relay), version 2, type 1:
//!   header(4) ‖ e(32) ‖ AEAD(join payload)(n + 16) ‖ mac1(16) ‖ mac2(16)
//! join payload (plaintext, inside the AEAD):
//!   u64 unix ms ‖ u32 sdkappid ‖ u16 profile ‖ room ‖ SSRCs ‖ UserSig ‖ PrivateMapKey
//!   (room, SSRCs and tokens encoded as in the v1 join)
//! answer (relay → client), version 2, type 2:
//!   header(4) ‖ e(32) ‖ AEAD(answer payload)(n + 16)
//! answer payload: u16 code (0 = joined) ‖ joined: u64 session ‖ u16 keepalive s ‖ u16 timeout s
//!                                         refused: u8 len ‖ UTF-8 detail
//! cookie (relay → client, under load), version 2, type 7:
//!   header(4) ‖ nonce(12) ‖ AES-256-GCM(cookie key, nonce, ad = the join's mac1, cookie(16))(32)
//! ```
//!
//! Every join field travels encrypted; only the header, the client's ephemeral key and the
//! MACs are in clear. The answer decrypts only under keys that mix the relay's static
//! secret, so it proves the relay's identity, refusals included: nobody on the path can make
//! a client give up with a forged refusal.
//!
//! In front of the public-key work, as in WireGuard (§5.4.4 of its paper):
//! - `mac1` = HMAC-SHA256(SHA-256("edgerelay/v2 mac1" ‖ relay public key), datagram up to
//!   mac1), truncated. It costs one HMAC to check, and only senders that know the relay's
//!   public key can produce it, so junk and spoofed floods cost no Diffie-Hellman.
//! - `mac2` = HMAC-SHA256(cookie, datagram up to mac2), truncated, or zeros. Under load the
//!   relay answers a join without a valid mac2 with a cookie bound to its source address
//!   (no DH, no state), so only a sender that can receive at its address gets further.
//!
//! The answer is never longer than the join (no amplification), and a cookie reply is 52
//! bytes against a join of at least [`MIN_JOIN_LEN`].
#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};

use super::{
    parse_any_header, read_room, read_ssrcs, token, write_room, write_ssrcs, write_tokens, DeclaredSsrc, Error,
    MsgType, Reader, Writer, HEADER_LEN, MAC_LEN, MAX_DETAIL_LEN, MAX_LEN, MAX_SSRCS, VERSION_2,
};
use crate::identity::RelayKey;
use crate::ids::RoomId;
use crate::noise::{self, Initiator, Responder, SharedEphemeral, Split, DH_LEN, TAG_LEN};

/// The Noise prologue: binds the handshake to this protocol and version.
pub const PROLOGUE: &[u8] = b"edgerelay join v2";
/// A cookie's length.
pub const COOKIE_LEN: usize = 16;
/// Bytes of a v2 join around its payload.
pub const JOIN_OVERHEAD: usize = HEADER_LEN + DH_LEN + TAG_LEN + 2 * MAC_LEN;
/// The shortest payload: timestamp, app, profile, a 1-byte string room, no SSRCs, a
/// 1-byte UserSig, no PrivateMapKey.
pub const MIN_PAYLOAD_LEN: usize = 8 + 4 + 2 + 3 + 1 + 3 + 2;
/// The shortest well-formed v2 join.
pub const MIN_JOIN_LEN: usize = JOIN_OVERHEAD + MIN_PAYLOAD_LEN;
/// A cookie reply's length.
pub const COOKIE_REPLY_LEN: usize = HEADER_LEN + 12 + COOKIE_LEN + TAG_LEN;
/// Bytes of an answer around its payload.
pub const ANSWER_OVERHEAD: usize = HEADER_LEN + DH_LEN + TAG_LEN;
/// The payload of an answer saying "joined".
const JOINED_PAYLOAD_LEN: usize = 2 + 8 + 2 + 2;
/// An answer saying "joined". A refusal never has this length.
pub const ANSWER_OK_LEN: usize = ANSWER_OVERHEAD + JOINED_PAYLOAD_LEN;
// An answer is never longer than the shortest join it can answer.
const _: () = assert!(ANSWER_OK_LEN <= MIN_JOIN_LEN);

/// The plaintext of a v2 join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPayload<'a> {
    /// The client's clock, unix milliseconds: the relay refuses joins outside its window.
    pub timestamp_ms: u64,
    /// The app.
    pub sdkappid: u32,
    /// DTLS-SRTP profile id of the SRTP profile wanted.
    pub profile: u16,
    /// The room.
    pub room: RoomId,
    /// Declared SSRCs.
    pub ssrcs: [Option<DeclaredSsrc>; MAX_SSRCS],
    /// The UserSig.
    pub usersig: &'a str,
    /// The PrivateMapKey, if any.
    pub private_map_key: Option<&'a str>,
}

impl<'a> JoinPayload<'a> {
    /// The declared SSRCs.
    pub fn declared(&self) -> impl Iterator<Item = DeclaredSsrc> + Clone + '_ {
        self.ssrcs.iter().flatten().copied()
    }

    /// Parses a decrypted payload.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader { buf };
        let timestamp_ms = r.u64()?;
        let sdkappid = r.u32()?;
        let profile = r.u16()?;
        let room = read_room(&mut r)?;
        let ssrcs = read_ssrcs(&mut r)?;
        let usersig = token(&mut r, false)?.ok_or(Error::Field("usersig"))?;
        let private_map_key = token(&mut r, true)?;
        r.finish()?;
        Ok(Self { timestamp_ms, sdkappid, profile, room, ssrcs, usersig, private_map_key })
    }

    /// Writes the plaintext; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::bare(out);
        w.put(&self.timestamp_ms.to_be_bytes())?;
        w.put(&self.sdkappid.to_be_bytes())?;
        w.put(&self.profile.to_be_bytes())?;
        write_room(&mut w, &self.room)?;
        write_ssrcs(&mut w, self.declared())?;
        write_tokens(&mut w, self.usersig, self.private_map_key)?;
        Ok(w.pos)
    }
}

fn labelled_key(label: &[u8], relay: &RelayKey) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(relay.bytes());
    h.finalize().into()
}

/// The mac1 key of a relay: anyone who knows its public key can compute it.
pub fn mac1_key(relay: &RelayKey) -> [u8; 32] {
    labelled_key(b"edgerelay/v2 mac1", relay)
}

/// The key cookie replies are encrypted under.
pub fn cookie_key(relay: &RelayKey) -> [u8; 32] {
    labelled_key(b"edgerelay/v2 cookie", relay)
}

fn mac16(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    crate::handshake::mac16(key, &[data])
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    crate::handshake::ct_eq(a, b)
}

/// A v2 join datagram's framing, checked for length and header only (no crypto).
#[derive(Debug, Clone, Copy)]
pub struct JoinFrame<'a> {
    datagram: &'a [u8],
}

impl<'a> JoinFrame<'a> {
    /// Checks the header (version 2, type join, length) and the minimum length.
    pub fn new_checked(datagram: &'a [u8]) -> Result<Self, Error> {
        let (version, ty, _) = parse_any_header(datagram)?;
        if version != VERSION_2 || ty != MsgType::Join {
            return Err(Error::UnexpectedType);
        }
        if datagram.len() < MIN_JOIN_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { datagram })
    }

    fn mac1_at(&self) -> usize {
        self.datagram.len() - 2 * MAC_LEN
    }

    /// The join's mac1 (a cookie reply's associated data).
    pub fn mac1(&self) -> [u8; MAC_LEN] {
        let at = self.mac1_at();
        self.datagram[at..at + MAC_LEN].try_into().expect("MAC_LEN bytes")
    }

    /// Whether mac1 verifies under this relay key's [`mac1_key`] (constant time).
    pub fn mac1_ok(&self, mac1_key: &[u8; 32]) -> bool {
        let at = self.mac1_at();
        ct_eq(&mac16(mac1_key, &self.datagram[..at]), &self.datagram[at..at + MAC_LEN])
    }

    /// Whether mac2 verifies under `cookie` (constant time).
    pub fn mac2_ok(&self, cookie: &[u8; COOKIE_LEN]) -> bool {
        let at = self.datagram.len() - MAC_LEN;
        ct_eq(&mac16(cookie, &self.datagram[..at]), &self.datagram[at..])
    }

    /// The Noise message (`e ‖ AEAD(payload)`) as a range of the datagram.
    pub fn noise_range(&self) -> std::ops::Range<usize> {
        HEADER_LEN..self.mac1_at()
    }
}

/// Writes a v2 join to `relay` into `out`, with a fresh ephemeral secret `e` and, if the
/// relay sent one, a cookie for mac2. Returns the handshake state and the datagram length.
pub fn write_join(
    relay: &RelayKey,
    e: [u8; 32],
    payload: &JoinPayload<'_>,
    cookie: Option<&[u8; COOKIE_LEN]>,
    out: &mut [u8],
) -> Result<(Initiator, usize), Error> {
    write_join_shared(relay, &SharedEphemeral::new(e, relay.bytes())?, payload, cookie, out)
}

/// [`write_join`] with a [`SharedEphemeral`] (load generators only: see its docs).
pub fn write_join_shared(
    relay: &RelayKey,
    shared: &SharedEphemeral,
    payload: &JoinPayload<'_>,
    cookie: Option<&[u8; COOKIE_LEN]>,
    out: &mut [u8],
) -> Result<(Initiator, usize), Error> {
    let mut plain = [0u8; MAX_LEN];
    let n = payload.write(&mut plain)?;
    let total = JOIN_OVERHEAD + n;
    if total > MAX_LEN {
        return Err(Error::TooLong);
    }
    if out.len() < total {
        return Err(Error::BufferTooSmall);
    }
    out[..HEADER_LEN].copy_from_slice(&[VERSION_2, MsgType::Join as u8, 0, 0]);
    out[2..4].copy_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
    let (init, m) =
        Initiator::write_first_shared(PROLOGUE, shared, &plain[..n], &mut out[HEADER_LEN..total - 2 * MAC_LEN])?;
    debug_assert_eq!(HEADER_LEN + m, total - 2 * MAC_LEN);
    set_macs(relay, cookie, &mut out[..total]);
    Ok((init, total))
}

/// (Re)computes a join's mac1 and mac2 (zeros without a cookie).
pub fn set_macs(relay: &RelayKey, cookie: Option<&[u8; COOKIE_LEN]>, join: &mut [u8]) {
    let at1 = join.len() - 2 * MAC_LEN;
    let m1 = mac16(&mac1_key(relay), &join[..at1]);
    join[at1..at1 + MAC_LEN].copy_from_slice(&m1);
    let at2 = at1 + MAC_LEN;
    let m2 = cookie.map_or([0; MAC_LEN], |c| mac16(c, &join[..at2]));
    join[at2..].copy_from_slice(&m2);
}

/// What an answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerPayload<'a> {
    /// Joined.
    Joined {
        /// The session id.
        session: u64,
        /// Keepalive interval when idle.
        keepalive_secs: u16,
        /// Silence after which the relay expires the session.
        timeout_secs: u16,
    },
    /// Refused.
    Refused {
        /// The raw [`super::ErrorCode`] value (never 0).
        code: u16,
        /// Detail text.
        detail: &'a str,
    },
}

impl AnswerPayload<'_> {
    fn write(&self, out: &mut [u8], max_len: usize) -> Result<usize, Error> {
        let mut w = Writer::bare(out);
        match *self {
            AnswerPayload::Joined { session, keepalive_secs, timeout_secs } => {
                w.put(&0u16.to_be_bytes())?;
                w.put(&session.to_be_bytes())?;
                w.put(&keepalive_secs.to_be_bytes())?;
                w.put(&timeout_secs.to_be_bytes())?;
            }
            AnswerPayload::Refused { code, detail } => {
                let room = max_len.checked_sub(3).ok_or(Error::BufferTooSmall)?;
                let mut n = detail.len().min(MAX_DETAIL_LEN).min(room);
                // Never the length of a "joined" payload, so a load generator can count
                // answers without decrypting each (it learns nothing an observer of the
                // media that follows would not).
                if 3 + n == JOINED_PAYLOAD_LEN {
                    n -= 1;
                }
                while !detail.is_char_boundary(n) {
                    n -= 1;
                }
                w.put(&code.to_be_bytes())?;
                w.put(&[n as u8])?;
                w.put(&detail.as_bytes()[..n])?;
            }
        }
        Ok(w.pos)
    }

    fn parse(buf: &[u8]) -> Result<AnswerPayload<'_>, Error> {
        let mut r = Reader { buf };
        let code = r.u16()?;
        let a = if code == 0 {
            AnswerPayload::Joined { session: r.u64()?, keepalive_secs: r.u16()?, timeout_secs: r.u16()? }
        } else {
            let n = r.u8()? as usize;
            let detail = std::str::from_utf8(r.take(n)?).map_err(|_| Error::Field("detail"))?;
            AnswerPayload::Refused { code, detail }
        };
        r.finish()?;
        Ok(a)
    }
}

/// Writes the answer to a join read by `responder`, at most `max_len` bytes (the join's
/// length: no amplification; a refusal's detail is shortened to fit). Returns its length
/// and the session's split keys.
pub fn write_answer(
    responder: Responder,
    e: [u8; 32],
    payload: &AnswerPayload<'_>,
    out: &mut [u8],
    max_len: usize,
) -> Result<(usize, Split), Error> {
    let mut plain = [0u8; 64 + MAX_DETAIL_LEN];
    let room = max_len.min(out.len()).checked_sub(ANSWER_OVERHEAD).ok_or(Error::BufferTooSmall)?;
    let n = payload.write(&mut plain, room)?;
    if n > room {
        return Err(Error::BufferTooSmall);
    }
    let total = ANSWER_OVERHEAD + n;
    out[..HEADER_LEN].copy_from_slice(&[VERSION_2, MsgType::JoinOk as u8, 0, 0]);
    out[2..4].copy_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
    let (m, split) = responder.write_second(e, &plain[..n], &mut out[HEADER_LEN..total])?;
    debug_assert_eq!(HEADER_LEN + m, total);
    Ok((total, split))
}

/// Reads an answer in place with the client's handshake state. `Err` means it is not an
/// answer from the holder of the relay key this client joined to.
pub fn read_answer<'b>(init: &Initiator, datagram: &'b mut [u8]) -> Result<(AnswerPayload<'b>, Split), Error> {
    let (version, ty, _) = parse_any_header(datagram)?;
    if version != VERSION_2 || ty != MsgType::JoinOk {
        return Err(Error::UnexpectedType);
    }
    let (n, split) = init.read_second(&mut datagram[HEADER_LEN..])?;
    let plain = &datagram[HEADER_LEN + DH_LEN..HEADER_LEN + DH_LEN + n];
    Ok((AnswerPayload::parse(plain)?, split))
}

/// Writes a cookie reply: `cookie` encrypted for the sender of the join whose mac1 is
/// `join_mac1`, under a random `nonce`. Returns [`COOKIE_REPLY_LEN`].
pub fn write_cookie(
    relay: &RelayKey,
    nonce: [u8; 12],
    cookie: &[u8; COOKIE_LEN],
    join_mac1: &[u8; MAC_LEN],
    out: &mut [u8],
) -> Result<usize, Error> {
    if out.len() < COOKIE_REPLY_LEN {
        return Err(Error::BufferTooSmall);
    }
    out[..HEADER_LEN].copy_from_slice(&[VERSION_2, MsgType::Cookie as u8, 0, (COOKIE_REPLY_LEN - HEADER_LEN) as u8]);
    out[HEADER_LEN..HEADER_LEN + 12].copy_from_slice(&nonce);
    let body = &mut out[HEADER_LEN + 12..COOKIE_REPLY_LEN];
    body[..COOKIE_LEN].copy_from_slice(cookie);
    seal_cookie(&cookie_key(relay), nonce, join_mac1, body)?;
    Ok(COOKIE_REPLY_LEN)
}

fn seal_cookie(key: &[u8; 32], nonce: [u8; 12], ad: &[u8], body: &mut [u8]) -> Result<(), Error> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let (msg, tag) = body.split_at_mut(COOKIE_LEN);
    let t = k
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(ad), msg)
        .map_err(|_| Error::BufferTooSmall)?;
    tag.copy_from_slice(t.as_ref());
    Ok(())
}

/// Reads a cookie reply to the join whose mac1 is `join_mac1`.
pub fn read_cookie(relay: &RelayKey, join_mac1: &[u8; MAC_LEN], datagram: &[u8]) -> Result<[u8; COOKIE_LEN], Error> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let (version, ty, body) = parse_any_header(datagram)?;
    if version != VERSION_2 || ty != MsgType::Cookie {
        return Err(Error::UnexpectedType);
    }
    if body.len() != COOKIE_REPLY_LEN - HEADER_LEN {
        return Err(Error::BadLength);
    }
    let nonce: [u8; 12] = body[..12].try_into().expect("12 bytes");
    let mut sealed = [0u8; COOKIE_LEN + TAG_LEN];
    sealed.copy_from_slice(&body[12..]);
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &cookie_key(relay)).expect("32-byte key"));
    let plain = k
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(join_mac1), &mut sealed)
        .map_err(|_| Error::Noise(noise::Error::Decrypt))?;
    Ok(plain.try_into().expect("COOKIE_LEN bytes"))
}

/// Runs the v2 parsers over arbitrary bytes; must never panic (fuzz entry point).
pub fn fuzz_parse(data: &[u8]) {
    let _ = JoinPayload::parse(data);
    let _ = AnswerPayload::parse(data);
    if let Ok(f) = JoinFrame::new_checked(data) {
        let _ = f.mac1_ok(&[0; 32]);
        let _ = f.mac2_ok(&[0; COOKIE_LEN]);
        let _ = &data[f.noise_range()];
    }
    let _ = read_cookie(&RelayKey([9; 32]), &[0; MAC_LEN], data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::StaticKey;
    use crate::ids::Ssrc;
    use crate::proto::StreamKind;

    fn payload() -> JoinPayload<'static> {
        let mut ssrcs = [None; MAX_SSRCS];
        ssrcs[0] = Some(DeclaredSsrc { ssrc: Ssrc::new(0x1234).unwrap(), kind: StreamKind::Audio });
        JoinPayload {
            timestamp_ms: 1_767_225_600_000,
            sdkappid: 1_400_000_000,
            profile: 1,
            room: RoomId::Str("lobby".into()),
            ssrcs,
            usersig: "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwoYmZhZWxsYGRhYGZiamZpZWJqamSFIFGYlmZpY1AMgBEtQ_",
            private_map_key: Some("a-private-map-key"),
        }
    }

    #[test]
    fn a_join_hides_every_field_and_round_trips_through_the_relay() {
        let relay = StaticKey::from_secret([5; 32]);
        let p = payload();
        let mut out = [0u8; MAX_LEN];
        let (init, n) = write_join(&relay.public(), [1; 32], &p, None, &mut out).unwrap();
        let join = out[..n].to_vec();
        for needle in [p.usersig.as_bytes(), b"a-private-map-key", b"lobby", &0x1234u32.to_be_bytes()] {
            assert!(!join.windows(needle.len()).any(|w| w == needle), "{needle:?} visible in the join");
        }
        let f = JoinFrame::new_checked(&join).unwrap();
        assert!(f.mac1_ok(&mac1_key(&relay.public())));
        assert!(!f.mac1_ok(&mac1_key(&StaticKey::from_secret([6; 32]).public())));
        assert!(!f.mac2_ok(&[3; COOKIE_LEN]));
        let mut noise_msg = join[f.noise_range()].to_vec();
        let (resp, len) = Responder::read_first(PROLOGUE, relay.secret(), &mut noise_msg).unwrap();
        let got = JoinPayload::parse(&noise_msg[DH_LEN..DH_LEN + len]).unwrap();
        assert_eq!(got, p);
        assert_eq!(resp.hash(), init.hash());

        let ok = AnswerPayload::Joined { session: 42, keepalive_secs: 5, timeout_secs: 30 };
        let mut ans = [0u8; MAX_LEN];
        let (m, rsplit) = write_answer(resp, [2; 32], &ok, &mut ans, n).unwrap();
        assert_eq!(m, ANSWER_OK_LEN);
        let (got, isplit) = read_answer(&init, &mut ans[..m]).unwrap();
        assert_eq!(got, ok);
        assert_eq!(isplit, rsplit);
    }

    #[test]
    fn refusals_are_encrypted_and_never_longer_than_the_join() {
        let relay = StaticKey::from_secret([5; 32]);
        let mut p = payload();
        p.private_map_key = None;
        p.usersig = "x";
        p.room = RoomId::Str("r".into());
        p.ssrcs = [None; MAX_SSRCS];
        let mut out = [0u8; MAX_LEN];
        let (init, n) = write_join(&relay.public(), [1; 32], &p, None, &mut out).unwrap();
        assert_eq!(n, MIN_JOIN_LEN);
        let mut msg = out[HEADER_LEN..n - 2 * MAC_LEN].to_vec();
        let (resp, _) = Responder::read_first(PROLOGUE, relay.secret(), &mut msg).unwrap();
        let long = "the UserSig expired an hour ago; mint a new one with a later expiry time, please";
        let no = AnswerPayload::Refused { code: 5, detail: long };
        let mut ans = [0u8; MAX_LEN];
        let (m, _) = write_answer(resp, [2; 32], &no, &mut ans, n).unwrap();
        assert!(m <= n, "answer {m} > join {n}");
        let (got, _) = read_answer(&init, &mut ans[..m]).unwrap();
        let AnswerPayload::Refused { code: 5, detail } = got else { panic!("{got:?}") };
        assert!(long.starts_with(detail) && detail.len() < long.len() && !detail.is_empty(), "{detail:?}");
    }

    #[test]
    fn no_refusal_is_as_long_as_a_joined_answer() {
        let relay = StaticKey::from_secret([5; 32]);
        let mut out = [0u8; MAX_LEN];
        let (init, n) = write_join(&relay.public(), [1; 32], &payload(), None, &mut out).unwrap();
        for len in 0..=MAX_DETAIL_LEN {
            let detail = "d".repeat(len);
            let mut msg = out[HEADER_LEN..n - 2 * MAC_LEN].to_vec();
            let (resp, _) = Responder::read_first(PROLOGUE, relay.secret(), &mut msg).unwrap();
            let mut ans = [0u8; MAX_LEN];
            let (m, _) =
                write_answer(resp, [2; 32], &AnswerPayload::Refused { code: 9, detail: &detail }, &mut ans, n).unwrap();
            assert_ne!(m, ANSWER_OK_LEN, "detail of {len}");
            assert!(matches!(read_answer(&init, &mut ans[..m]).unwrap().0, AnswerPayload::Refused { code: 9, .. }));
        }
    }

    #[test]
    fn cookies_round_trip_and_bind_to_the_join() {
        let relay = StaticKey::from_secret([5; 32]).public();
        let mut out = [0u8; 64];
        let n = write_cookie(&relay, [7; 12], &[9; COOKIE_LEN], &[1; MAC_LEN], &mut out).unwrap();
        assert_eq!(n, COOKIE_REPLY_LEN);
        assert!(n < MIN_JOIN_LEN);
        assert_eq!(read_cookie(&relay, &[1; MAC_LEN], &out[..n]).unwrap(), [9; COOKIE_LEN]);
        assert!(read_cookie(&relay, &[2; MAC_LEN], &out[..n]).is_err(), "another join's mac1");
        assert!(read_cookie(&StaticKey::from_secret([6; 32]).public(), &[1; MAC_LEN], &out[..n]).is_err());
        // With the cookie, the join's mac2 verifies.
        let mut j = [0u8; MAX_LEN];
        let (_, m) = write_join(&relay, [1; 32], &payload(), Some(&[9; COOKIE_LEN]), &mut j).unwrap();
        let f = JoinFrame::new_checked(&j[..m]).unwrap();
        assert!(f.mac2_ok(&[9; COOKIE_LEN]));
        assert!(f.mac1_ok(&mac1_key(&relay)));
    }

    #[test]
    fn framing_rejects_truncation_and_other_types() {
        let relay = StaticKey::from_secret([5; 32]).public();
        let mut out = [0u8; MAX_LEN];
        let (_, n) = write_join(&relay, [1; 32], &payload(), None, &mut out).unwrap();
        for cut in 0..n {
            let mut v = out[..cut].to_vec();
            if cut >= HEADER_LEN {
                v[2..4].copy_from_slice(&((cut - HEADER_LEN) as u16).to_be_bytes());
            }
            let ok = JoinFrame::new_checked(&v).is_ok_and(|f| f.mac1_ok(&mac1_key(&relay)));
            assert!(!ok, "cut at {cut}");
        }
        let mut v = out[..n].to_vec();
        v[0] = 1;
        assert!(JoinFrame::new_checked(&v).is_err());
        fuzz_parse(&out[..n]);
    }
}
