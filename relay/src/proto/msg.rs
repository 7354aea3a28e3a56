//! In-room messages (v2 sessions only): the wire formats of message and message-ack, like
//! TRTC's custom messages.
//!
//! ```text
//! frame, either way, version 2, type 9 (message) or 10 (message-ack):
//!   header(4) ‖ u64 session ‖ u64 counter ‖ AES-256-GCM(body) ‖ tag(16)
//!     key:   the session's message key for the direction (`SessionSecrets::msg`)
//!     nonce: 32 zero bits ‖ counter, big-endian (as Noise transport messages)
//!     associated data: the 20 bytes in front of the ciphertext
//! message body:
//!   u8 cmd (1–10) ‖ u8 flags ‖ u32 seq ‖ u8 n ‖ n bytes: the sender's user id ‖ data (0–1024)
//!     client → relay: n = 0 (the relay names the sender); relay → client: 1 ≤ n ≤ 32
//!     flags: bit 0 reliable, bit 1 ordered, the other bits zero
//! ack body:
//!   u8 flags ‖ u32 seq   (the stream and number of the message acknowledged)
//! ```
//!
//! `session` names the session whose keys seal the frame: the sender's on the way in, the
//! receiver's on the way out. The sender counts `counter` up per session and direction;
//! messages and acks share it (one key, one nonce space), so no (key, nonce) pair is ever
//! used twice, and the receiver's replay window over it refuses a replayed datagram before
//! any decryption. A retransmission is sealed again under a fresh counter: it is a new
//! datagram carrying the same message.
//!
//! `seq` numbers a sender's messages per stream: each of the four flag combinations is a
//! stream of its own, counted from 1. The relay delivers each receiver its own numbering
//! per stream (see [`crate::messages`]).
//!
//! Parsing never allocates and never reads out of bounds: [`Frame::new_checked`] checks the
//! header and the minimum length, after which no accessor panics, and the bodies parse from
//! the decrypted bytes with every length checked. Nothing is in clear but the session id
//! and the counter.
#![forbid(unsafe_code)]

use super::{parse_any_header, Error, MsgType, Reader, Writer, HEADER_LEN, MAX_LEN, VERSION_2};
use crate::ids::UserId;
use crate::noise::{self, TAG_LEN};

/// The lowest command id.
pub const MIN_CMD: u8 = 1;
/// The highest command id.
pub const MAX_CMD: u8 = 10;
/// Bound on a message's data.
pub const MAX_DATA_LEN: usize = 1024;
/// Bytes in front of the ciphertext (header, session, counter): the associated data.
pub const FRAME_HEADER_LEN: usize = HEADER_LEN + 8 + 8;
/// A frame's bytes around its body.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + TAG_LEN;
/// The fixed part of a message body.
pub const MESSAGE_FIXED_LEN: usize = 1 + 1 + 4 + 1;
/// The longest message body.
pub const MAX_BODY_LEN: usize = MESSAGE_FIXED_LEN + UserId::MAX_LEN + MAX_DATA_LEN;
/// The longest message frame.
pub const MAX_FRAME_LEN: usize = FRAME_OVERHEAD + MAX_BODY_LEN;
/// An ack body's length.
pub const ACK_BODY_LEN: usize = 1 + 4;
/// A message-ack frame's length.
pub const ACK_LEN: usize = FRAME_OVERHEAD + ACK_BODY_LEN;
const _: () = assert!(MAX_FRAME_LEN <= MAX_LEN);

/// Delivery options of a message. Each combination is a stream of its own ([`Flags::stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    const RELIABLE: u8 = 1;
    const ORDERED: u8 = 2;

    /// The flags for these options.
    pub const fn new(reliable: bool, ordered: bool) -> Self {
        Self(((reliable as u8) * Self::RELIABLE) | ((ordered as u8) * Self::ORDERED))
    }
    /// Checked: only bits 0 and 1 may be set.
    pub fn from_bits(b: u8) -> Result<Self, Error> {
        if b & !(Self::RELIABLE | Self::ORDERED) != 0 {
            return Err(Error::Field("message flags"));
        }
        Ok(Self(b))
    }
    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Retransmitted until acknowledged.
    pub const fn reliable(self) -> bool {
        self.0 & Self::RELIABLE != 0
    }
    /// Delivered in the sender's order.
    pub const fn ordered(self) -> bool {
        self.0 & Self::ORDERED != 0
    }
    /// The stream index, 0–3 (the bits as a number).
    pub const fn stream(self) -> usize {
        self.0 as usize
    }
    /// Every combination, by stream index.
    pub const ALL: [Flags; 4] = [Flags(0), Flags(1), Flags(2), Flags(3)];
}

/// A checked view of a message or message-ack frame: version 2, one of the two types, a
/// matching length field, room for the fixed fields and the tag, and at most
/// [`MAX_FRAME_LEN`] bytes. After [`new_checked`](Self::new_checked) no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    datagram: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks the header and the bounds.
    pub fn new_checked(datagram: &'a [u8]) -> Result<Self, Error> {
        let (version, ty, _) = parse_any_header(datagram)?;
        if version != VERSION_2 || !matches!(ty, MsgType::Message | MsgType::MessageAck) {
            return Err(Error::UnexpectedType);
        }
        let min = if ty == MsgType::Message { FRAME_OVERHEAD + MESSAGE_FIXED_LEN } else { ACK_LEN };
        if datagram.len() < min {
            return Err(Error::Truncated);
        }
        if datagram.len() > MAX_FRAME_LEN || (ty == MsgType::MessageAck && datagram.len() != ACK_LEN) {
            return Err(Error::TooLong);
        }
        Ok(Self { datagram })
    }

    /// Message or message-ack.
    pub fn ty(&self) -> MsgType {
        if self.datagram[1] == MsgType::Message as u8 {
            MsgType::Message
        } else {
            MsgType::MessageAck
        }
    }

    /// The session whose keys seal it.
    pub fn session(&self) -> u64 {
        u64::from_be_bytes(self.datagram[4..12].try_into().expect("8 bytes"))
    }

    /// The nonce counter.
    pub fn counter(&self) -> u64 {
        u64::from_be_bytes(self.datagram[12..20].try_into().expect("8 bytes"))
    }

    /// The body's length once decrypted.
    pub fn body_len(&self) -> usize {
        self.datagram.len() - FRAME_OVERHEAD
    }

    /// Decrypts the body into `out` (which needs [`body_len`](Self::body_len) +
    /// [`TAG_LEN`] bytes); returns the plaintext. `Err` means the frame was not sealed
    /// under `key` with this header, or was altered.
    pub fn open<'b>(&self, key: &[u8; 32], out: &'b mut [u8]) -> Result<&'b [u8], Error> {
        let sealed = &self.datagram[FRAME_HEADER_LEN..];
        let buf = out.get_mut(..sealed.len()).ok_or(Error::BufferTooSmall)?;
        buf.copy_from_slice(sealed);
        let n = noise::open(key, self.counter(), &self.datagram[..FRAME_HEADER_LEN], buf)?;
        Ok(&buf[..n])
    }
}

/// Writes a frame of type `ty` sealing `body` under `key`; returns its length.
pub fn seal(
    ty: MsgType,
    session: u64,
    counter: u64,
    key: &[u8; 32],
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    debug_assert!(matches!(ty, MsgType::Message | MsgType::MessageAck));
    let total = FRAME_OVERHEAD + body.len();
    if total > MAX_FRAME_LEN {
        return Err(Error::TooLong);
    }
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    let mut w = Writer::versioned(out, VERSION_2, ty)?;
    w.put(&session.to_be_bytes())?;
    w.put(&counter.to_be_bytes())?;
    w.put(body)?;
    w.put(&[0; TAG_LEN])?;
    w.finish()?;
    let (ad, rest) = out.split_at_mut(FRAME_HEADER_LEN);
    noise::seal(key, counter, ad, rest, body.len())?;
    Ok(total)
}

/// A message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The command id, [`MIN_CMD`]–[`MAX_CMD`].
    pub cmd: u8,
    /// Delivery options.
    pub flags: Flags,
    /// The number in its stream (see the module docs).
    pub seq: u32,
    /// Who sent it: `None` from a client (the relay knows), the user id from the relay.
    pub from: Option<&'a str>,
    /// The application's bytes.
    pub data: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses a decrypted body.
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader { buf: body };
        let cmd = r.u8()?;
        if !(MIN_CMD..=MAX_CMD).contains(&cmd) {
            return Err(Error::Field("message command id"));
        }
        let flags = Flags::from_bits(r.u8()?)?;
        let seq = r.u32()?;
        let n = r.u8()? as usize;
        let from = match n {
            0 => None,
            n if n > UserId::MAX_LEN => return Err(Error::Field("message sender")),
            n => {
                let s = std::str::from_utf8(r.take(n)?).map_err(|_| Error::Field("message sender"))?;
                UserId::check(s)?;
                Some(s)
            }
        };
        let data = r.buf;
        if data.len() > MAX_DATA_LEN {
            return Err(Error::TooLong);
        }
        Ok(Self { cmd, flags, seq, from, data })
    }

    /// Writes the body; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        if !(MIN_CMD..=MAX_CMD).contains(&self.cmd) {
            return Err(Error::Field("message command id"));
        }
        if self.data.len() > MAX_DATA_LEN {
            return Err(Error::TooLong);
        }
        let from = self.from.unwrap_or("");
        if !from.is_empty() {
            UserId::check(from)?;
        }
        let mut w = Writer::bare(out);
        w.put(&[self.cmd, self.flags.bits()])?;
        w.put(&self.seq.to_be_bytes())?;
        w.put(&[from.len() as u8])?;
        w.put(from.as_bytes())?;
        w.put(self.data)?;
        Ok(w.pos)
    }
}

/// An ack body: the message of stream `flags` numbered `seq` arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The stream.
    pub flags: Flags,
    /// The number acknowledged.
    pub seq: u32,
}

impl Ack {
    /// Parses a decrypted ack body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader { buf: body };
        let a = Self { flags: Flags::from_bits(r.u8()?)?, seq: r.u32()? };
        r.finish()?;
        Ok(a)
    }

    /// The body's bytes.
    pub fn to_bytes(self) -> [u8; ACK_BODY_LEN] {
        let mut b = [0u8; ACK_BODY_LEN];
        b[0] = self.flags.bits();
        b[1..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

/// Runs the frame and body parsers over arbitrary bytes; must never panic (fuzz entry).
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(f) = Frame::new_checked(data) {
        let _ = (f.ty(), f.session(), f.counter(), f.body_len());
        let mut out = [0u8; MAX_LEN];
        let _ = f.open(&[0; 32], &mut out);
    }
    if let Ok(m) = Message::parse(data) {
        let mut out = [0u8; MAX_LEN];
        let n = m.write(&mut out).expect("a parsed message body re-encodes");
        assert_eq!(&out[..n], data, "a message body re-encodes to the same bytes");
    }
    if let Ok(a) = Ack::parse(data) {
        assert_eq!(&a.to_bytes()[..], data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn sealed(m: &Message<'_>) -> Vec<u8> {
        let mut body = [0u8; MAX_BODY_LEN];
        let n = m.write(&mut body).unwrap();
        let mut out = [0u8; MAX_LEN];
        let len = seal(MsgType::Message, 42, 9, &KEY, &body[..n], &mut out).unwrap();
        out[..len].to_vec()
    }

    #[test]
    fn a_message_round_trips_through_seal_and_open() {
        let m = Message { cmd: 3, flags: Flags::new(true, false), seq: 77, from: Some("alice"), data: b"hello room" };
        let wire = sealed(&m);
        assert_eq!(wire.len(), FRAME_OVERHEAD + MESSAGE_FIXED_LEN + 5 + 10);
        let f = Frame::new_checked(&wire).unwrap();
        assert_eq!((f.ty(), f.session(), f.counter()), (MsgType::Message, 42, 9));
        let mut out = [0u8; MAX_LEN];
        let body = f.open(&KEY, &mut out).unwrap();
        assert_eq!(Message::parse(body).unwrap(), m);
        // Only the session and the counter are in clear.
        assert!(!wire.windows(5).any(|w| w == b"alice" || w == b"hello"));
        // The longest message fits a control datagram.
        let long = Message { data: &[1; MAX_DATA_LEN], from: Some("u234567890123456789012345678901x"), ..m };
        assert_eq!(sealed(&long).len(), MAX_FRAME_LEN);
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_fails() {
        let m = Message { cmd: 10, flags: Flags::new(false, true), seq: 1, from: None, data: b"x" };
        let wire = sealed(&m);
        let mut out = [0u8; MAX_LEN];
        for cut in 0..wire.len() {
            let mut v = wire[..cut].to_vec();
            if cut >= HEADER_LEN {
                v[2..4].copy_from_slice(&((cut - HEADER_LEN) as u16).to_be_bytes());
            }
            let ok = Frame::new_checked(&v).is_ok_and(|f| f.open(&KEY, &mut out).is_ok());
            assert!(!ok, "cut at {cut}");
        }
        for i in 0..wire.len() {
            for bit in 0..8 {
                let mut v = wire.clone();
                v[i] ^= 1 << bit;
                let ok = Frame::new_checked(&v).is_ok_and(|f| f.open(&KEY, &mut out).is_ok());
                assert!(!ok, "byte {i} bit {bit}");
            }
        }
        let f = Frame::new_checked(&wire).unwrap();
        assert!(f.open(&[8; 32], &mut out).is_err(), "another key");
        assert_eq!(f.open(&KEY, &mut [0u8; 8]).unwrap_err(), Error::BufferTooSmall);
    }

    #[test]
    fn bodies_are_bounded_and_checked() {
        let ok = Message { cmd: 1, flags: Flags::default(), seq: 0, from: None, data: b"" };
        let mut b = [0u8; 2 * MAX_LEN];
        let n = ok.write(&mut b).unwrap();
        assert_eq!(n, MESSAGE_FIXED_LEN);
        for cut in 0..n {
            assert!(Message::parse(&b[..cut]).is_err());
        }
        for cmd in [0, 11, 255] {
            assert!(Message { cmd, ..ok }.write(&mut b).is_err());
            let mut v = b[..n].to_vec();
            v[0] = cmd;
            assert_eq!(Message::parse(&v), Err(Error::Field("message command id")));
        }
        let mut v = b[..n].to_vec();
        v[1] = 4;
        assert_eq!(Message::parse(&v), Err(Error::Field("message flags")));
        assert_eq!(Message { data: &[0; MAX_DATA_LEN + 1], ..ok }.write(&mut b), Err(Error::TooLong));
        let mut v = b[..n].to_vec();
        v.extend_from_slice(&[0; MAX_DATA_LEN + 1]);
        assert_eq!(Message::parse(&v), Err(Error::TooLong));
        // A sender length past the body, over the bound, or not a user id.
        for (len, name) in [(5u8, &b"ab"[..]), (33, &[b'a'; 33][..]), (2, b"a ")] {
            let mut v = b[..n - 1].to_vec();
            v.push(len);
            v.extend_from_slice(name);
            assert!(Message::parse(&v).is_err(), "sender {len} {name:?}");
        }
        let a = Ack { flags: Flags::new(true, true), seq: 0xdead_beef };
        assert_eq!(Ack::parse(&a.to_bytes()).unwrap(), a);
        assert!(Ack::parse(&a.to_bytes()[..4]).is_err());
        assert!(Ack::parse(&[a.to_bytes().as_slice(), &[0]].concat()).is_err());
    }

    #[test]
    fn frames_are_length_checked_before_any_crypto() {
        let mut out = [0u8; MAX_LEN];
        let n = seal(MsgType::MessageAck, 1, 2, &KEY, &Ack { flags: Flags::default(), seq: 3 }.to_bytes(), &mut out)
            .unwrap();
        assert_eq!(n, ACK_LEN);
        assert!(Frame::new_checked(&out[..n]).is_ok());
        // An ack must be exactly ACK_LEN; a v1 header or another type is refused.
        let mut long = out[..n].to_vec();
        long.push(0);
        long[2..4].copy_from_slice(&((n + 1 - HEADER_LEN) as u16).to_be_bytes());
        assert_eq!(Frame::new_checked(&long).unwrap_err(), Error::TooLong);
        let mut v1 = out[..n].to_vec();
        v1[0] = 1;
        assert_eq!(Frame::new_checked(&v1).unwrap_err(), Error::UnexpectedType);
        let mut ka = out[..n].to_vec();
        ka[1] = MsgType::Keepalive as u8;
        assert_eq!(Frame::new_checked(&ka).unwrap_err(), Error::UnexpectedType);
        assert_eq!(seal(MsgType::Message, 1, 2, &KEY, &[0; MAX_BODY_LEN + 1], &mut out), Err(Error::TooLong));
        fuzz_parse(&out[..n]);
        fuzz_parse(&long);
    }

    #[test]
    fn fuzz_entry_survives_junk() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for len in 0..200 {
            let mut v = vec![0u8; len];
            for b in &mut v {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if len >= 4 {
                v[0] = 2;
                v[1] = 9 + (len % 2) as u8;
                v[2..4].copy_from_slice(&((len - 4) as u16).to_be_bytes());
            }
            fuzz_parse(&v);
            if len > 0 {
                v[0] = 1 + (len % 10) as u8;
                fuzz_parse(&v);
            }
        }
    }
}
