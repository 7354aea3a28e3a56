//! Cascade legs: the relay-to-relay session that carries one room between two nodes of a
//! cluster. A Noise IK handshake ([`crate::noise`]) authenticates both relays by their static
//! keys (the ones the cluster's node registry publishes), then each side announces the streams
//! of its local members, sealed under the leg's keys.
//!
//! ```text
//! leg join (initiator → responder), version 2, type 12:
//!   header(4) ‖ Noise IK message 1: e(32) ‖ AEAD(s)(32 + 16) ‖ AEAD(join payload)(n + 16)
//! join payload: u64 unix ms ‖ u64 initiator's leg id ‖ u32 sdkappid ‖ room ‖ u8 n ‖ node id (n)
//! leg answer (responder → initiator), version 2, type 13:
//!   header(4) ‖ u64 initiator's leg id ‖ Noise IK message 2: e(32) ‖ AEAD(answer payload)(n + 16)
//! answer payload: u16 code (0 = up) ‖ up: u64 responder's leg id
//!                                    refused: u8 len ‖ UTF-8 detail
//! leg streams (either way), version 2, type 14:
//!   header(4) ‖ u64 receiver's leg id ‖ u64 counter ‖ AES-256-GCM(body)(n + 16)
//!   key: the sender's direction of the leg's message keys; nonce: the counter; associated
//!   data: the 20 bytes in front
//! body: u8 flags (1 = closing) ‖ u32 version ‖ u16 n ‖ n × (u32 ssrc, u8 kind)
//! ```
//!
//! Only the header, the ephemeral key, the leg ids and the streams counter travel in clear:
//! app, room and node id are encrypted to the responder's static key, and the initiator's
//! static key is encrypted too. The answer decrypts only under keys that mix both static
//! keys (`ss`, `se`) and both ephemerals, so each side has proven it holds its registered
//! key, and the leg's SRTP keys are forward-secret.
//!
//! A streams message is the sender's whole set, numbered (`version`), so a lost or reordered
//! one is repaired by the next; it doubles as the leg's keepalive. Its counter increases per
//! message and the receiver accepts only a counter above the last, so a replay is dropped
//! unread.
#![forbid(unsafe_code)]

use super::{parse_any_header, StreamKind, VERSION_2};
use super::{read_room, write_room, DeclaredSsrc, Error, MsgType, Reader, Writer, HEADER_LEN, MAX_DETAIL_LEN, MAX_LEN};
use crate::ids::{RoomId, Ssrc};
use crate::noise::{self, DhSecret, IkInitiator, IkResponder, Split, DH_LEN, TAG_LEN};

/// The Noise prologue: binds the handshake to legs (a client's join can never pass as one).
pub const PROLOGUE: &[u8] = b"edgerelay leg v1";
/// Most streams one side of a leg announces (a streams message stays within [`MAX_LEN`]).
pub const MAX_LEG_STREAMS: usize = 256;
/// Longest node id.
pub const MAX_NODE_LEN: usize = 64;
/// Bytes of a leg join around its payload.
pub const JOIN_OVERHEAD: usize = HEADER_LEN + DH_LEN + DH_LEN + TAG_LEN + TAG_LEN;
/// Bytes of a leg answer around its payload.
pub const ANSWER_OVERHEAD: usize = HEADER_LEN + 8 + DH_LEN + TAG_LEN;
/// Bytes of a streams message around its body.
pub const STREAMS_OVERHEAD: usize = HEADER_LEN + 8 + 8 + TAG_LEN;
/// Streams flag: the sender closes the leg.
pub const CLOSING: u8 = 1;

const _: () = assert!(STREAMS_OVERHEAD + 7 + 5 * MAX_LEG_STREAMS <= MAX_LEN);

/// The plaintext of a leg join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPayload<'a> {
    /// The initiator's clock, unix milliseconds (the responder's replay window).
    pub timestamp_ms: u64,
    /// The initiator's id for this leg (the responder's streams messages name it).
    pub leg: u64,
    /// The app.
    pub sdkappid: u32,
    /// The room.
    pub room: RoomId,
    /// The initiator's node id.
    pub node: &'a str,
}

impl<'a> JoinPayload<'a> {
    /// Parses a decrypted payload.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader { buf };
        let timestamp_ms = r.u64()?;
        let leg = r.u64()?;
        let sdkappid = r.u32()?;
        let room = read_room(&mut r)?;
        let n = r.u8()? as usize;
        if n == 0 || n > MAX_NODE_LEN {
            return Err(Error::Field("node id"));
        }
        let node = std::str::from_utf8(r.take(n)?).map_err(|_| Error::Field("node id"))?;
        r.finish()?;
        Ok(Self { timestamp_ms, leg, sdkappid, room, node })
    }

    fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        if self.node.is_empty() || self.node.len() > MAX_NODE_LEN {
            return Err(Error::Field("node id"));
        }
        let mut w = Writer::bare(out);
        w.put(&self.timestamp_ms.to_be_bytes())?;
        w.put(&self.leg.to_be_bytes())?;
        w.put(&self.sdkappid.to_be_bytes())?;
        write_room(&mut w, &self.room)?;
        w.put(&[self.node.len() as u8])?;
        w.put(self.node.as_bytes())?;
        Ok(w.pos)
    }
}

/// The plaintext of a leg answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerPayload<'a> {
    /// The leg is up.
    Up {
        /// The responder's id for this leg.
        leg: u64,
    },
    /// Refused.
    Refused {
        /// The raw [`super::ErrorCode`] value (never 0).
        code: u16,
        /// Detail text.
        detail: &'a str,
    },
}

impl<'a> AnswerPayload<'a> {
    fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::bare(out);
        match *self {
            Self::Up { leg } => {
                w.put(&0u16.to_be_bytes())?;
                w.put(&leg.to_be_bytes())?;
            }
            Self::Refused { code, detail } => {
                let mut n = detail.len().min(MAX_DETAIL_LEN);
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

    fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader { buf };
        let code = r.u16()?;
        let a = if code == 0 {
            Self::Up { leg: r.u64()? }
        } else {
            let n = r.u8()? as usize;
            let detail = std::str::from_utf8(r.take(n)?).map_err(|_| Error::Field("detail"))?;
            Self::Refused { code, detail }
        };
        r.finish()?;
        Ok(a)
    }
}

fn header(out: &mut [u8], ty: MsgType, total: usize) -> Result<(), Error> {
    if total > MAX_LEN {
        return Err(Error::TooLong);
    }
    let h = out.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
    h.copy_from_slice(&[VERSION_2, ty as u8, 0, 0]);
    h[2..4].copy_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
    Ok(())
}

fn checked(datagram: &[u8], ty: MsgType, min: usize) -> Result<(), Error> {
    let (version, t, _) = parse_any_header(datagram)?;
    if version != VERSION_2 || t != ty {
        return Err(Error::UnexpectedType);
    }
    if datagram.len() < min {
        return Err(Error::Truncated);
    }
    Ok(())
}

/// Writes a leg join from the node holding `s` to the relay whose static key is `responder`,
/// with the fresh ephemeral secret `e`. Returns the handshake state and the length.
pub fn write_join(
    s: &DhSecret,
    responder: &[u8; DH_LEN],
    e: [u8; 32],
    payload: &JoinPayload<'_>,
    out: &mut [u8],
) -> Result<(IkInitiator, usize), Error> {
    let mut plain = [0u8; MAX_LEN];
    let n = payload.write(&mut plain)?;
    let total = JOIN_OVERHEAD + n;
    if out.len() < total {
        return Err(Error::BufferTooSmall);
    }
    header(out, MsgType::LegJoin, total)?;
    let (init, m) = IkInitiator::write_first(PROLOGUE, s, responder, e, &plain[..n], &mut out[HEADER_LEN..total])?;
    debug_assert_eq!(HEADER_LEN + m, total);
    Ok((init, total))
}

/// A leg join read by the responder holding `s`: the handshake state, the initiator's static
/// key (which the caller must find in its peer set) and the payload. `scratch` holds the
/// decrypted message; the payload borrows it.
pub fn read_join<'b>(
    s: &DhSecret,
    datagram: &[u8],
    scratch: &'b mut [u8; MAX_LEN],
) -> Result<(IkResponder, [u8; DH_LEN], JoinPayload<'b>), Error> {
    checked(datagram, MsgType::LegJoin, JOIN_OVERHEAD)?;
    let msg = &mut scratch[..datagram.len() - HEADER_LEN];
    msg.copy_from_slice(&datagram[HEADER_LEN..]);
    let (resp, initiator_static, n) = IkResponder::read_first(PROLOGUE, s, msg)?;
    let at = DH_LEN + DH_LEN + TAG_LEN;
    let payload = JoinPayload::parse(&scratch[at..at + n])?;
    Ok((resp, initiator_static, payload))
}

/// The initiator's leg id a leg answer names in clear, so the initiator knows which of its
/// handshakes to read it with.
pub fn answer_leg(datagram: &[u8]) -> Result<u64, Error> {
    checked(datagram, MsgType::LegAnswer, ANSWER_OVERHEAD)?;
    Ok(u64::from_be_bytes(datagram[HEADER_LEN..HEADER_LEN + 8].try_into().expect("8 bytes")))
}

/// Writes the answer to the leg join of `initiator_leg`, with the fresh ephemeral secret `e`,
/// and splits the handshake. Never longer than the join it answers.
pub fn write_answer(
    responder: IkResponder,
    initiator_leg: u64,
    e: [u8; 32],
    payload: &AnswerPayload<'_>,
    out: &mut [u8],
) -> Result<(usize, Split), Error> {
    let mut plain = [0u8; 3 + MAX_DETAIL_LEN + 8];
    let n = payload.write(&mut plain)?;
    let total = ANSWER_OVERHEAD + n;
    if out.len() < total {
        return Err(Error::BufferTooSmall);
    }
    header(out, MsgType::LegAnswer, total)?;
    out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&initiator_leg.to_be_bytes());
    let (m, split) = responder.write_second(e, &plain[..n], &mut out[HEADER_LEN + 8..total])?;
    debug_assert_eq!(HEADER_LEN + 8 + m, total);
    Ok((total, split))
}

/// Reads a leg answer in place with the initiator's handshake state and static key. `Err` means it is not
/// from the holder of the responder key the leg was opened to.
pub fn read_answer<'b>(
    init: &IkInitiator,
    s: &DhSecret,
    datagram: &'b mut [u8],
) -> Result<(AnswerPayload<'b>, Split), Error> {
    answer_leg(datagram)?;
    let (n, split) = init.read_second(s, &mut datagram[HEADER_LEN + 8..])?;
    let at = HEADER_LEN + 8 + DH_LEN;
    Ok((AnswerPayload::parse(&datagram[at..at + n])?, split))
}

/// One side's announced streams, as a streams message carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streams {
    /// The sender closes the leg (its room has no local member left).
    pub closing: bool,
    /// Numbers the sender's sets: a receiver applies a set only when this differs from the
    /// last one it applied.
    pub version: u32,
    /// The streams, at most [`MAX_LEG_STREAMS`].
    pub ssrcs: Vec<DeclaredSsrc>,
}

/// The receiver's leg id and the counter of a streams message (both in clear).
pub fn streams_ids(datagram: &[u8]) -> Result<(u64, u64), Error> {
    checked(datagram, MsgType::LegStreams, STREAMS_OVERHEAD)?;
    let id = u64::from_be_bytes(datagram[HEADER_LEN..HEADER_LEN + 8].try_into().expect("8 bytes"));
    let counter = u64::from_be_bytes(datagram[HEADER_LEN + 8..HEADER_LEN + 16].try_into().expect("8 bytes"));
    Ok((id, counter))
}

/// Writes a streams message for the peer's leg `leg` under the sending direction's key.
pub fn write_streams(key: &[u8; 32], leg: u64, counter: u64, s: &Streams, out: &mut [u8]) -> Result<usize, Error> {
    if s.ssrcs.len() > MAX_LEG_STREAMS {
        return Err(Error::Field("too many streams"));
    }
    let body = 1 + 4 + 2 + 5 * s.ssrcs.len();
    let total = STREAMS_OVERHEAD + body;
    if out.len() < total {
        return Err(Error::BufferTooSmall);
    }
    header(out, MsgType::LegStreams, total)?;
    out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&leg.to_be_bytes());
    out[HEADER_LEN + 8..HEADER_LEN + 16].copy_from_slice(&counter.to_be_bytes());
    let start = HEADER_LEN + 16;
    {
        let mut w = Writer::bare(&mut out[start..start + body]);
        w.put(&[if s.closing { CLOSING } else { 0 }])?;
        w.put(&s.version.to_be_bytes())?;
        w.put(&(s.ssrcs.len() as u16).to_be_bytes())?;
        for d in &s.ssrcs {
            w.put(&d.ssrc.get().to_be_bytes())?;
            w.put(&[d.kind as u8])?;
        }
    }
    let (ad, rest) = out.split_at_mut(start);
    let n = noise::seal(key, counter, ad, rest, body)?;
    debug_assert_eq!(start + n, total);
    Ok(total)
}

/// Opens a streams message in place under the receiving direction's key.
pub fn read_streams(key: &[u8; 32], datagram: &mut [u8]) -> Result<Streams, Error> {
    let (_, counter) = streams_ids(datagram)?;
    let start = HEADER_LEN + 16;
    let (ad, rest) = datagram.split_at_mut(start);
    let n = noise::open(key, counter, ad, rest)?;
    Streams::parse_body(&rest[..n])
}

impl Streams {
    /// Parses a decrypted streams body.
    pub fn parse_body(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader { buf };
        let flags = r.u8()?;
        if flags & !CLOSING != 0 {
            return Err(Error::Field("streams flags"));
        }
        let version = r.u32()?;
        let count = r.u16()? as usize;
        if count > MAX_LEG_STREAMS {
            return Err(Error::Field("too many streams"));
        }
        let mut ssrcs = Vec::with_capacity(count);
        for _ in 0..count {
            let ssrc = Ssrc::new(r.u32()?)?;
            let kind = StreamKind::from_u8(r.u8()?).ok_or(Error::Field("stream kind"))?;
            if ssrcs.iter().any(|d: &DeclaredSsrc| d.ssrc == ssrc) {
                return Err(Error::Field("duplicate SSRC"));
            }
            ssrcs.push(DeclaredSsrc { ssrc, kind });
        }
        r.finish()?;
        Ok(Streams { closing: flags & CLOSING != 0, version, ssrcs })
    }
}

/// Runs every leg parser on `data` (the `proto` fuzz target): the frames as they arrive, under
/// fixed keys, and the plaintext parsers behind the AEADs, which a fuzzer could not reach
/// through them.
pub fn fuzz_parse(data: &[u8]) {
    let s = DhSecret::new([5; 32]);
    let mut scratch = [0u8; MAX_LEN];
    let _ = read_join(&s, data, &mut scratch);
    let _ = answer_leg(data);
    let _ = streams_ids(data);
    let mut buf = [0u8; MAX_LEN];
    if data.len() <= MAX_LEN {
        buf[..data.len()].copy_from_slice(data);
        let _ = read_streams(&[9; 32], &mut buf[..data.len()]);
    }
    let _ = JoinPayload::parse(data);
    let _ = AnswerPayload::parse(data);
    let _ = Streams::parse_body(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> DhSecret {
        DhSecret::new([b; 32])
    }

    /// A leg forms between two static keys: the responder learns the initiator's key and
    /// payload, both sides split to the same keys, and streams round-trip under them.
    #[test]
    fn a_leg_handshake_and_streams_round_trip() {
        let (a, b) = (secret(1), secret(2));
        let join = JoinPayload { timestamp_ms: 7, leg: 41, sdkappid: 1_400_000_001, room: RoomId::Num(9), node: "n1" };
        let mut out = [0u8; MAX_LEN];
        let (init, n) = write_join(&a, b.public(), [3; 32], &join, &mut out).unwrap();
        let mut scratch = [0u8; MAX_LEN];
        let (resp, who, got) = read_join(&b, &out[..n], &mut scratch).unwrap();
        assert_eq!(&who, a.public());
        assert_eq!(got, join);
        let mut ans = [0u8; MAX_LEN];
        let (m, split_b) = write_answer(resp, 41, [4; 32], &AnswerPayload::Up { leg: 77 }, &mut ans).unwrap();
        assert!(m <= n, "no amplification: {m} > {n}");
        assert_eq!(answer_leg(&ans[..m]).unwrap(), 41);
        let (payload, split_a) = read_answer(&init, &a, &mut ans[..m]).unwrap();
        assert_eq!(payload, AnswerPayload::Up { leg: 77 });
        assert!(split_a == split_b);

        let s = Streams {
            closing: false,
            version: 3,
            ssrcs: vec![DeclaredSsrc { ssrc: Ssrc::new(5).unwrap(), kind: StreamKind::Video }],
        };
        let key = [9u8; 32];
        let mut buf = [0u8; MAX_LEN];
        let len = write_streams(&key, 77, 12, &s, &mut buf).unwrap();
        assert_eq!(streams_ids(&buf[..len]).unwrap(), (77, 12));
        assert_eq!(read_streams(&key, &mut { buf }[..len]).unwrap(), s);
        // Tampering with what travels in clear (the counter is the nonce and in the AD).
        buf[HEADER_LEN + 15] ^= 1;
        assert!(read_streams(&key, &mut buf[..len]).is_err());
    }

    /// A join to another key, or a client's join, is refused; an answer under another
    /// handshake does not read.
    #[test]
    fn wrong_keys_and_types_are_refused() {
        let (a, b, c) = (secret(1), secret(2), secret(5));
        let join = JoinPayload { timestamp_ms: 7, leg: 1, sdkappid: 1_400_000_001, room: RoomId::Num(9), node: "n1" };
        let mut out = [0u8; MAX_LEN];
        let (_, n) = write_join(&a, b.public(), [3; 32], &join, &mut out).unwrap();
        let mut scratch = [0u8; MAX_LEN];
        assert!(read_join(&c, &out[..n], &mut scratch).is_err(), "encrypted to b, read with c");
        let mut truncated = out;
        assert!(read_join(&b, &truncated[..HEADER_LEN + 10], &mut scratch).is_err());
        truncated[1] = MsgType::Join as u8;
        assert!(read_join(&b, &truncated[..n], &mut scratch).is_err(), "a client's join type");
        let (init_other, _) = write_join(&a, b.public(), [8; 32], &join, &mut [0u8; MAX_LEN]).unwrap();
        let (resp, _, _) = read_join(&b, &out[..n], &mut scratch).unwrap();
        let mut ans = [0u8; MAX_LEN];
        let (m, _) = write_answer(resp, 1, [4; 32], &AnswerPayload::Up { leg: 2 }, &mut ans).unwrap();
        assert!(read_answer(&init_other, &a, &mut ans[..m]).is_err());
    }
}
