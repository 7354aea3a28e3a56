//! The control protocol: join, join-ok, join-error, leave, keepalive.
//!
//! Control messages share the relay's UDP port with SRTP, so they are told apart by the
//! first byte as in RFC 7983 §7: 0–3 is ours, 128–191 is RTP/RTCP. Every message is
//!
//! ```text
//!  0       1       2       3
//! +-------+-------+-------+-------+
//! |version| type  |  body length  |   body ...
//! +-------+-------+-------+-------+
//! ```
//!
//! `version` is 1 (0 is never sent, so an all-zero datagram is not a message). The body
//! length must equal the datagram length minus 4, and every variable field carries its own
//! bounded length, so a parser never reads past the datagram and never allocates.
//! Replies are never larger than the message that caused them (no amplification).
//!
//! Join body: `u32 sdkappid | u16 profile | u8 room kind (0 num, 1 str) | u8 room len |
//! room | [32] X25519 public key | u8 n | n × (u32 ssrc, u8 kind) | u16 len | UserSig |
//! u16 len | PrivateMapKey (len 0 = none)`.
//!
//! Join-ok: `u64 session id | [32] relay X25519 key | u16 keepalive secs | u16 timeout secs |
//! [16] confirm`. Join-error: `u16 code | u8 len | UTF-8 detail`. Keepalive, keepalive-ack
//! and leave: `u64 session id | u64 counter | [16] MAC`.
//!
//! v2 adds the Noise join ([`v2`]) and in-room messages ([`msg`]).
#![forbid(unsafe_code)]

use crate::ids::{Error as IdError, RoomId, Ssrc};

pub mod leg;
pub mod msg;
pub mod v2;

/// The version byte of v1 messages (cleartext join; see [`v2`] for the current protocol).
pub const VERSION: u8 = 1;
/// The version byte of v2 messages: the Noise NK join ([`v2`]).
pub const VERSION_2: u8 = 2;
/// Header length.
pub const HEADER_LEN: usize = 4;
/// The largest control datagram accepted.
pub const MAX_LEN: usize = 1400;
/// Bound on a UserSig or PrivateMapKey in a join.
pub const MAX_TOKEN_LEN: usize = 600;
/// Bound on the SSRCs one session may declare.
pub const MAX_SSRCS: usize = 8;
/// Length of an X25519 public key.
pub const KEY_LEN: usize = 32;
/// Length of the truncated HMAC-SHA256 tags on join-ok, keepalive and leave.
pub const MAC_LEN: usize = 16;
/// Length of a keepalive, keepalive-ack or leave datagram.
pub const TICKET_LEN: usize = HEADER_LEN + 8 + 8 + MAC_LEN;
/// Length of a join-ok datagram.
pub const JOIN_OK_LEN: usize = HEADER_LEN + 8 + KEY_LEN + 2 + 2 + MAC_LEN;
/// Bound on the detail text of a join-error.
pub const MAX_DETAIL_LEN: usize = 64;

/// What the first byte of a datagram says it is (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demux {
    /// 0–3: a control message.
    Control,
    /// 128–191: RTP or RTCP.
    Media,
    /// Anything else (STUN, DTLS, TURN channels, ZRTP, junk): not relayed.
    Other,
}

/// Classifies a datagram by its first byte.
#[inline]
pub fn demux(datagram: &[u8]) -> Demux {
    match datagram.first() {
        Some(0..=3) => Demux::Control,
        Some(128..=191) => Demux::Media,
        _ => Demux::Other,
    }
}

/// RTCP or RTP: RFC 5761 §4, payload types 64–95 (with the marker bit) are RTCP.
#[inline]
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.get(1), Some(b) if (192..=223).contains(b))
}

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Client → relay: enter a room.
    Join = 1,
    /// Relay → client: joined; carries the relay's key share and key confirmation.
    JoinOk = 2,
    /// Relay → client: refused, with an [`ErrorCode`].
    JoinError = 3,
    /// Client → relay: leave the room (authenticated).
    Leave = 4,
    /// Client → relay: still here (authenticated).
    Keepalive = 5,
    /// Relay → client: keepalive answered (authenticated).
    KeepaliveAck = 6,
    /// Relay → client (v2): under load, a cookie the join must echo ([`v2::Cookie`]).
    Cookie = 7,
    /// Relay → client (v2, authenticated): a keepalive came from another address than the
    /// session's (a NAT rebinding); join again from the new address.
    AddressChanged = 8,
    /// Either way (v2, encrypted): an in-room message ([`msg`]).
    Message = 9,
    /// Either way (v2, encrypted): a reliable message arrived ([`msg`]).
    MessageAck = 10,
    /// Client → relay (v2, authenticated): keep the session alive from another address than
    /// its media's, e.g. `relay-client attach` while an external SRTP tool owns the
    /// session's address. Answered with a keepalive-ack to the sender; the session does not
    /// move.
    Hold = 11,
    /// Relay → relay (v2): open a cascade leg ([`leg`]).
    LegJoin = 12,
    /// Relay → relay (v2): a leg join answered ([`leg`]).
    LegAnswer = 13,
    /// Relay → relay (v2, encrypted): a side's streams, and the leg's keepalive ([`leg`]).
    LegStreams = 14,
}

impl MsgType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Join,
            2 => Self::JoinOk,
            3 => Self::JoinError,
            4 => Self::Leave,
            5 => Self::Keepalive,
            6 => Self::KeepaliveAck,
            7 => Self::Cookie,
            8 => Self::AddressChanged,
            9 => Self::Message,
            10 => Self::MessageAck,
            11 => Self::Hold,
            12 => Self::LegJoin,
            13 => Self::LegAnswer,
            14 => Self::LegStreams,
            _ => return None,
        })
    }
}

/// Join-error reason codes. Each refusal has its own code so clients and operators can
/// tell them apart; the names are also the `joins` counter labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The message did not parse.
    Malformed = 1,
    /// The version byte is not one this relay speaks.
    UnsupportedVersion = 2,
    /// No app with this SdkAppId is configured.
    UnknownApp = 3,
    /// The UserSig or PrivateMapKey signature does not verify (forged or wrong key).
    BadSignature = 4,
    /// The UserSig or PrivateMapKey has expired.
    Expired = 5,
    /// The UserSig was minted for another SdkAppId than the join names.
    WrongApp = 6,
    /// The PrivateMapKey is for another room or user.
    WrongRoom = 7,
    /// The PrivateMapKey lacks a privilege the join needs (enter, create, or send).
    NoPrivilege = 8,
    /// The app's room quota is used up.
    RoomQuota = 9,
    /// The room's member quota is used up.
    MemberQuota = 10,
    /// The app's session quota is used up.
    SessionQuota = 11,
    /// The SRTP profile is not enabled for this app.
    UnsupportedProfile = 12,
    /// An SSRC is already used in this room; pick fresh ones.
    SsrcConflict = 13,
    /// The X25519 key share is invalid (low order).
    BadKeyShare = 14,
    /// The app requires a PrivateMapKey and none was given.
    PrivateMapKeyRequired = 15,
    /// The session named by a keepalive or leave does not exist (re-join).
    UnknownSession = 16,
    /// The relay is shedding load or could not install the session; retry later.
    Overloaded = 17,
    /// The source address holds another user's session (it expires when that client goes
    /// silent).
    AddressInUse = 18,
    /// A v1 (cleartext) join, and the app accepts only v2: update the client.
    V1NotAllowed = 19,
    /// A v2 join this relay has already seen (a replay, or a retransmission: each attempt
    /// must be a fresh handshake).
    Replayed = 20,
    /// A v2 join whose timestamp is outside the relay's window: check the client's clock.
    ClockSkew = 21,
    /// The user is banned from this room for a while (an operator's RemoveUser with a ban).
    Banned = 22,
    /// The answer to a keepalive of a session that ended because an operator dismissed its
    /// room (TRTC `DismissRoom`, `relayd ctl dismiss-room`).
    RoomDismissed = 23,
    /// A cascade leg for a room in which this relay has no local member (or for an app it
    /// does not serve): there is nothing to carry.
    NotHosted = 24,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 24] = [
        Self::Malformed,
        Self::UnsupportedVersion,
        Self::UnknownApp,
        Self::BadSignature,
        Self::Expired,
        Self::WrongApp,
        Self::WrongRoom,
        Self::NoPrivilege,
        Self::RoomQuota,
        Self::MemberQuota,
        Self::SessionQuota,
        Self::UnsupportedProfile,
        Self::SsrcConflict,
        Self::BadKeyShare,
        Self::PrivateMapKeyRequired,
        Self::UnknownSession,
        Self::Overloaded,
        Self::AddressInUse,
        Self::V1NotAllowed,
        Self::Replayed,
        Self::ClockSkew,
        Self::Banned,
        Self::RoomDismissed,
        Self::NotHosted,
    ];

    /// Decodes a wire code.
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u16 == v)
    }

    /// Stable snake-case name (metric label, CLI output).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnknownApp => "unknown_app",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::WrongApp => "wrong_app",
            Self::WrongRoom => "wrong_room",
            Self::NoPrivilege => "no_privilege",
            Self::RoomQuota => "room_quota",
            Self::MemberQuota => "member_quota",
            Self::SessionQuota => "session_quota",
            Self::UnsupportedProfile => "unsupported_profile",
            Self::SsrcConflict => "ssrc_conflict",
            Self::BadKeyShare => "bad_key_share",
            Self::PrivateMapKeyRequired => "private_map_key_required",
            Self::UnknownSession => "unknown_session",
            Self::Overloaded => "overloaded",
            Self::AddressInUse => "address_in_use",
            Self::V1NotAllowed => "v1_not_allowed",
            Self::Replayed => "replayed",
            Self::ClockSkew => "clock_skew",
            Self::Banned => "banned",
            Self::RoomDismissed => "room_dismissed",
            Self::NotHosted => "not_hosted",
        }
    }
}

/// What a declared SSRC will carry; checked against the PrivateMapKey's send bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamKind {
    /// Audio RTP (needs the send-audio privilege).
    Audio = 0,
    /// Video RTP (needs the send-video privilege).
    Video = 1,
    /// RTCP only, e.g. receiver reports of a receive-only client (needs no send bit).
    Rtcp = 2,
}

impl StreamKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Audio,
            1 => Self::Video,
            2 => Self::Rtcp,
            _ => return None,
        })
    }
}

/// Parse errors. Each maps to [`ErrorCode::Malformed`] or
/// [`ErrorCode::UnsupportedVersion`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its header or a field says.
    #[error("message truncated")]
    Truncated,
    /// Longer than [`MAX_LEN`], or bytes left over after the last field.
    #[error("message has trailing bytes or exceeds {MAX_LEN} bytes")]
    TooLong,
    /// The body length field disagrees with the datagram length.
    #[error("body length field does not match the datagram")]
    BadLength,
    /// Version byte other than [`VERSION`].
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    Type(u8),
    /// Another type than the one expected here.
    #[error("unexpected message type")]
    UnexpectedType,
    /// A field value is out of range.
    #[error("invalid field: {0}")]
    Field(&'static str),
    /// An identifier failed its checked constructor.
    #[error("invalid identifier: {0}")]
    Id(#[from] IdError),
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A v2 join's mac1 does not verify under any of this relay's keys: the sender does
    /// not know the relay's public key (or the datagram is junk).
    #[error("mac1 does not verify")]
    BadMac,
    /// The Noise handshake failed (see [`crate::noise::Error`]).
    #[error(transparent)]
    Noise(#[from] crate::noise::Error),
}

impl Error {
    /// The join-error code a relay answers with.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Version(_) => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::Malformed,
        }
    }
}

/// Bounds-checked reader over a body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn finish(&self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TooLong)
        }
    }
}

/// Bounds-checked writer into a caller buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8], ty: MsgType) -> Result<Self, Error> {
        Self::versioned(buf, VERSION, ty)
    }
    fn versioned(buf: &'a mut [u8], version: u8, ty: MsgType) -> Result<Self, Error> {
        let mut w = Self { buf, pos: 0 };
        w.put(&[version, ty as u8, 0, 0])?;
        Ok(w)
    }
    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.pos + b.len();
        self.buf.get_mut(self.pos..end).ok_or(Error::BufferTooSmall)?.copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
    /// A writer with no header (v2's encrypted payloads).
    fn bare(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn finish(self) -> Result<usize, Error> {
        let body = u16::try_from(self.pos - HEADER_LEN).map_err(|_| Error::TooLong)?;
        if self.pos > MAX_LEN {
            return Err(Error::TooLong);
        }
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
        Ok(self.pos)
    }
}

/// Parses a v1 header; returns the type and the body.
pub fn parse_header(datagram: &[u8]) -> Result<(MsgType, &[u8]), Error> {
    match parse_any_header(datagram)? {
        (VERSION, ty, body) => Ok((ty, body)),
        (v, _, _) => Err(Error::Version(v)),
    }
}

/// Whether a datagram has a well-formed header whatever its version: bounded, a known
/// type, and a length field that matches (so an answer to it is not an answer to junk).
pub fn parse_header_len_ok(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram.len() <= MAX_LEN
        && MsgType::from_u8(datagram[1]).is_some()
        && u16::from_be_bytes([datagram[2], datagram[3]]) as usize == datagram.len() - HEADER_LEN
}

/// Parses a v1 or v2 header; returns the version, the type and the body.
pub fn parse_any_header(datagram: &[u8]) -> Result<(u8, MsgType, &[u8]), Error> {
    if datagram.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    if datagram.len() > MAX_LEN {
        return Err(Error::TooLong);
    }
    let version = datagram[0];
    if version != VERSION && version != VERSION_2 {
        return Err(Error::Version(version));
    }
    let ty = MsgType::from_u8(datagram[1]).ok_or(Error::Type(datagram[1]))?;
    let len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    if len != datagram.len() - HEADER_LEN {
        return Err(Error::BadLength);
    }
    Ok((version, ty, &datagram[HEADER_LEN..]))
}

/// A declared stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredSsrc {
    /// The SSRC.
    pub ssrc: Ssrc,
    /// What it carries.
    pub kind: StreamKind,
}

/// A parsed join, borrowing the tokens from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join<'a> {
    /// The app.
    pub sdkappid: u32,
    /// DTLS-SRTP profile id of the SRTP profile wanted.
    pub profile: u16,
    /// The room.
    pub room: RoomId,
    /// The client's X25519 key share.
    pub key_share: [u8; KEY_LEN],
    /// Declared SSRCs (first `n_ssrcs` entries are valid).
    pub ssrcs: [Option<DeclaredSsrc>; MAX_SSRCS],
    /// The UserSig (Tencent base64 text).
    pub usersig: &'a str,
    /// The PrivateMapKey, if any.
    pub private_map_key: Option<&'a str>,
}

impl<'a> Join<'a> {
    /// The declared SSRCs.
    pub fn declared(&self) -> impl Iterator<Item = DeclaredSsrc> + Clone + '_ {
        self.ssrcs.iter().flatten().copied()
    }

    /// Parses a whole join datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, Error> {
        let (ty, body) = parse_header(datagram)?;
        if ty != MsgType::Join {
            return Err(Error::UnexpectedType);
        }
        let mut r = Reader { buf: body };
        let sdkappid = r.u32()?;
        let profile = r.u16()?;
        let room = read_room(&mut r)?;
        let key_share = r.array::<KEY_LEN>()?;
        let ssrcs = read_ssrcs(&mut r)?;
        let usersig = token(&mut r, false)?.ok_or(Error::Field("usersig"))?;
        let private_map_key = token(&mut r, true)?;
        r.finish()?;
        Ok(Self { sdkappid, profile, room, key_share, ssrcs, usersig, private_map_key })
    }

    /// Writes the join into `out`; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(out, MsgType::Join)?;
        w.put(&self.sdkappid.to_be_bytes())?;
        w.put(&self.profile.to_be_bytes())?;
        write_room(&mut w, &self.room)?;
        w.put(&self.key_share)?;
        write_ssrcs(&mut w, self.declared())?;
        write_tokens(&mut w, self.usersig, self.private_map_key)?;
        w.finish()
    }
}

fn read_room(r: &mut Reader<'_>) -> Result<RoomId, Error> {
    let room_kind = r.u8()?;
    let room_len = r.u8()? as usize;
    let room_bytes = r.take(room_len)?;
    Ok(match room_kind {
        0 => {
            if room_len != 4 {
                return Err(Error::Field("numeric room must be 4 bytes"));
            }
            let n = u32::from_be_bytes([room_bytes[0], room_bytes[1], room_bytes[2], room_bytes[3]]);
            RoomId::num(n.into())?
        }
        1 => {
            let s = std::str::from_utf8(room_bytes).map_err(|_| Error::Field("room"))?;
            RoomId::str(s)?
        }
        _ => return Err(Error::Field("room kind")),
    })
}

fn write_room(w: &mut Writer<'_>, room: &RoomId) -> Result<(), Error> {
    match room {
        RoomId::Num(n) => {
            w.put(&[0, 4])?;
            w.put(&n.to_be_bytes())
        }
        RoomId::Str(s) => {
            w.put(&[1, s.len() as u8])?;
            w.put(s.as_bytes())
        }
    }
}

fn read_ssrcs(r: &mut Reader<'_>) -> Result<[Option<DeclaredSsrc>; MAX_SSRCS], Error> {
    let n = r.u8()? as usize;
    if n > MAX_SSRCS {
        return Err(Error::Field("too many SSRCs"));
    }
    let mut ssrcs = [None; MAX_SSRCS];
    for i in 0..n {
        let ssrc = Ssrc::new(r.u32()?)?;
        let kind = StreamKind::from_u8(r.u8()?).ok_or(Error::Field("stream kind"))?;
        if ssrcs[..i].iter().flatten().any(|d: &DeclaredSsrc| d.ssrc == ssrc) {
            return Err(Error::Field("duplicate SSRC"));
        }
        ssrcs[i] = Some(DeclaredSsrc { ssrc, kind });
    }
    Ok(ssrcs)
}

fn write_ssrcs(w: &mut Writer<'_>, declared: impl Iterator<Item = DeclaredSsrc> + Clone) -> Result<(), Error> {
    let n = declared.clone().count();
    if n > MAX_SSRCS {
        return Err(Error::Field("too many SSRCs"));
    }
    w.put(&[n as u8])?;
    for d in declared {
        w.put(&d.ssrc.get().to_be_bytes())?;
        w.put(&[d.kind as u8])?;
    }
    Ok(())
}

fn write_tokens(w: &mut Writer<'_>, usersig: &str, private_map_key: Option<&str>) -> Result<(), Error> {
    for t in [Some(usersig), private_map_key] {
        let t = t.unwrap_or("");
        if t.len() > MAX_TOKEN_LEN {
            return Err(Error::Field("token too long"));
        }
        w.put(&(t.len() as u16).to_be_bytes())?;
        w.put(t.as_bytes())?;
    }
    Ok(())
}

fn token<'a>(r: &mut Reader<'a>, optional: bool) -> Result<Option<&'a str>, Error> {
    let len = r.u16()? as usize;
    if len > MAX_TOKEN_LEN {
        return Err(Error::Field("token too long"));
    }
    if len == 0 {
        return if optional { Ok(None) } else { Err(Error::Field("empty token")) };
    }
    let b = r.take(len)?;
    std::str::from_utf8(b).map(Some).map_err(|_| Error::Field("token is not UTF-8"))
}

/// A parsed join-ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOk {
    /// The session id (names the session in keepalive and leave).
    pub session: u64,
    /// The relay's X25519 key share.
    pub key_share: [u8; KEY_LEN],
    /// How often the client should send keepalives when idle.
    pub keepalive_secs: u16,
    /// Silence after which the relay expires the session.
    pub timeout_secs: u16,
    /// Key confirmation: proves the relay derived the same keys.
    pub confirm: [u8; MAC_LEN],
}

impl JoinOk {
    /// Parses a join-ok datagram.
    pub fn parse(datagram: &[u8]) -> Result<Self, Error> {
        let (ty, body) = parse_header(datagram)?;
        if ty != MsgType::JoinOk {
            return Err(Error::UnexpectedType);
        }
        let mut r = Reader { buf: body };
        let ok = Self {
            session: r.u64()?,
            key_share: r.array()?,
            keepalive_secs: r.u16()?,
            timeout_secs: r.u16()?,
            confirm: r.array()?,
        };
        r.finish()?;
        Ok(ok)
    }

    /// Writes it; returns the length ([`JOIN_OK_LEN`]).
    pub fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(out, MsgType::JoinOk)?;
        w.put(&self.session.to_be_bytes())?;
        w.put(&self.key_share)?;
        w.put(&self.keepalive_secs.to_be_bytes())?;
        w.put(&self.timeout_secs.to_be_bytes())?;
        w.put(&self.confirm)?;
        w.finish()
    }
}

/// A parsed join-error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinError<'a> {
    /// The reason code (unknown codes from newer relays read as `None`).
    pub code: Option<ErrorCode>,
    /// The raw code.
    pub raw_code: u16,
    /// Human-readable detail.
    pub detail: &'a str,
}

impl<'a> JoinError<'a> {
    /// Parses a join-error datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, Error> {
        let (ty, body) = parse_header(datagram)?;
        if ty != MsgType::JoinError {
            return Err(Error::UnexpectedType);
        }
        let mut r = Reader { buf: body };
        let raw_code = r.u16()?;
        let n = r.u8()? as usize;
        let detail = std::str::from_utf8(r.take(n)?).map_err(|_| Error::Field("detail"))?;
        r.finish()?;
        Ok(Self { code: ErrorCode::from_u16(raw_code), raw_code, detail })
    }

    /// Writes a join-error no longer than `max_len` (the triggering datagram's length, so
    /// the relay never amplifies), shortening the detail to fit. Returns `None` when even
    /// the bare code does not fit.
    pub fn write(code: ErrorCode, detail: &str, out: &mut [u8], max_len: usize) -> Option<usize> {
        let room = max_len.min(out.len()).checked_sub(HEADER_LEN + 3)?;
        let mut n = detail.len().min(MAX_DETAIL_LEN).min(room);
        while !detail.is_char_boundary(n) {
            n -= 1;
        }
        let mut w = Writer::new(out, MsgType::JoinError).ok()?;
        w.put(&(code as u16).to_be_bytes()).ok()?;
        w.put(&[n as u8]).ok()?;
        w.put(&detail.as_bytes()[..n]).ok()?;
        w.finish().ok()
    }
}

/// A keepalive, keepalive-ack, leave or (v2) address-changed or hold: names a session and carries
/// a counter and a MAC under the session's control key. The version byte is the session's
/// protocol version and is covered by the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// [`VERSION`] or [`VERSION_2`].
    pub version: u8,
    /// Which of the types it is.
    pub ty: MsgType,
    /// The session.
    pub session: u64,
    /// Strictly increasing per sender: replayed tickets are refused.
    pub counter: u64,
    /// HMAC-SHA256 over header, session and counter, truncated.
    pub mac: [u8; MAC_LEN],
}

impl Ticket {
    /// Parses one of the ticket types.
    pub fn parse(datagram: &[u8]) -> Result<Self, Error> {
        let (version, ty, body) = parse_any_header(datagram)?;
        let allowed = match ty {
            MsgType::Keepalive | MsgType::KeepaliveAck | MsgType::Leave => true,
            MsgType::AddressChanged | MsgType::Hold => version == VERSION_2,
            _ => false,
        };
        if !allowed {
            return Err(Error::UnexpectedType);
        }
        let mut r = Reader { buf: body };
        let t = Self { version, ty, session: r.u64()?, counter: r.u64()?, mac: r.array()? };
        r.finish()?;
        Ok(t)
    }

    /// The bytes the MAC covers.
    pub fn mac_input(version: u8, ty: MsgType, session: u64, counter: u64) -> [u8; 20] {
        let mut m = [0u8; 20];
        m[..4].copy_from_slice(&[version, ty as u8, 0, (TICKET_LEN - HEADER_LEN) as u8]);
        m[4..12].copy_from_slice(&session.to_be_bytes());
        m[12..].copy_from_slice(&counter.to_be_bytes());
        m
    }

    /// Writes it; returns [`TICKET_LEN`].
    pub fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::versioned(out, self.version, self.ty)?;
        w.put(&self.session.to_be_bytes())?;
        w.put(&self.counter.to_be_bytes())?;
        w.put(&self.mac)?;
        w.finish()
    }
}

/// Runs every parser over arbitrary bytes; must never panic (fuzz entry point).
pub fn fuzz_parse(data: &[u8]) {
    v2::fuzz_parse(data);
    leg::fuzz_parse(data);
    msg::fuzz_parse(data);
    let _ = demux(data);
    let _ = is_rtcp(data);
    if let Ok(j) = Join::parse(data) {
        let mut out = [0u8; MAX_LEN];
        let n = j.write(&mut out).expect("a parsed join re-encodes");
        assert_eq!(&out[..n], data, "join re-encodes to the same bytes");
    }
    let _ = JoinOk::parse(data);
    let _ = JoinError::parse(data);
    let _ = Ticket::parse(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_join() -> Join<'static> {
        let mut ssrcs = [None; MAX_SSRCS];
        ssrcs[0] = Some(DeclaredSsrc { ssrc: Ssrc::new(0x1234).unwrap(), kind: StreamKind::Audio });
        ssrcs[1] = Some(DeclaredSsrc { ssrc: Ssrc::new(0x5678).unwrap(), kind: StreamKind::Video });
        Join {
            sdkappid: 1_400_000_000,
            profile: 1,
            room: RoomId::Str("lobby".into()),
            key_share: [7; 32],
            ssrcs,
            usersig: "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwoYmZhZWxsYGRhYGZiamZpZWJqamSFIFGYlmZpY1AMgBEtQ_",
            private_map_key: None,
        }
    }

    #[test]
    fn demux_follows_rfc7983() {
        assert_eq!(demux(&[0]), Demux::Control);
        assert_eq!(demux(&[3]), Demux::Control);
        assert_eq!(demux(&[4]), Demux::Other);
        assert_eq!(demux(&[20]), Demux::Other); // DTLS
        assert_eq!(demux(&[127]), Demux::Other);
        assert_eq!(demux(&[128]), Demux::Media);
        assert_eq!(demux(&[191]), Demux::Media);
        assert_eq!(demux(&[192]), Demux::Other);
        assert_eq!(demux(&[]), Demux::Other);
        assert!(is_rtcp(&[0x80, 200]));
        assert!(!is_rtcp(&[0x80, 96]));
        assert!(!is_rtcp(&[0x80, 0xe0])); // PT 96 with marker
    }

    #[test]
    fn join_round_trip_and_every_truncation_fails() {
        let j = sample_join();
        let mut buf = [0u8; MAX_LEN];
        let n = j.write(&mut buf).unwrap();
        assert_eq!(Join::parse(&buf[..n]).unwrap(), j);
        for cut in 0..n {
            assert!(Join::parse(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // A consistent length field but a short body still fails.
        let mut short = buf[..n - 1].to_vec();
        short[2..4].copy_from_slice(&((n - 1 - HEADER_LEN) as u16).to_be_bytes());
        assert_eq!(Join::parse(&short), Err(Error::Truncated));
        // Trailing bytes are refused.
        let mut long = buf[..n].to_vec();
        long.push(0);
        long[2..4].copy_from_slice(&((n + 1 - HEADER_LEN) as u16).to_be_bytes());
        assert_eq!(Join::parse(&long), Err(Error::TooLong));
    }

    #[test]
    fn join_rejects_bad_fields() {
        let j = sample_join();
        let mut buf = [0u8; MAX_LEN];
        let n = j.write(&mut buf).unwrap();
        let mut v = buf[..n].to_vec();
        v[0] = 2;
        assert_eq!(Join::parse(&v), Err(Error::Version(2)));
        assert_eq!(Join::parse(&v).unwrap_err().code(), ErrorCode::UnsupportedVersion);
        let mut v = buf[..n].to_vec();
        v[1] = 99;
        assert_eq!(Join::parse(&v), Err(Error::Type(99)));
        let mut v = buf[..n].to_vec();
        v[10] = 9; // room kind
        assert_eq!(Join::parse(&v), Err(Error::Field("room kind")));
        let mut dup = sample_join();
        dup.ssrcs[1] = dup.ssrcs[0];
        let n = dup.write(&mut buf).unwrap();
        assert_eq!(Join::parse(&buf[..n]), Err(Error::Field("duplicate SSRC")));
        let mut zero_room = sample_join();
        zero_room.room = RoomId::Num(0);
        let n = zero_room.write(&mut buf).unwrap();
        assert_eq!(Join::parse(&buf[..n]), Err(Error::Id(IdError::BadRoomNum)));
    }

    #[test]
    fn replies_never_amplify() {
        let mut out = [0u8; 256];
        let n = JoinError::write(ErrorCode::Expired, "the UserSig expired an hour ago", &mut out, 20).unwrap();
        assert!(n <= 20);
        let e = JoinError::parse(&out[..n]).unwrap();
        assert_eq!(e.code, Some(ErrorCode::Expired));
        assert_eq!(e.detail, "the UserSig e");
        assert!(JoinError::write(ErrorCode::Expired, "x", &mut out, 6).is_none());
        // Join-ok is only sent for a join with a valid UserSig, and the shortest one (a
        // one-character user, expiry 0) already makes the join longer than join-ok.
        let mut j = sample_join();
        let sig = crate::usersig::mint(b"k", 1, "a", 0, 0, None);
        j.usersig = &sig;
        j.ssrcs = [None; MAX_SSRCS];
        j.room = RoomId::Num(1);
        assert!(JOIN_OK_LEN < j.write(&mut out).unwrap());
    }

    #[test]
    fn join_ok_and_ticket_round_trip() {
        let ok = JoinOk { session: 9, key_share: [3; 32], keepalive_secs: 5, timeout_secs: 30, confirm: [1; 16] };
        let mut buf = [0u8; 128];
        let n = ok.write(&mut buf).unwrap();
        assert_eq!(n, JOIN_OK_LEN);
        assert_eq!(JoinOk::parse(&buf[..n]).unwrap(), ok);
        let t = Ticket { version: VERSION, ty: MsgType::Leave, session: 9, counter: 3, mac: [5; 16] };
        let n = t.write(&mut buf).unwrap();
        assert_eq!(n, TICKET_LEN);
        assert_eq!(Ticket::parse(&buf[..n]).unwrap(), t);
        assert_eq!(&Ticket::mac_input(VERSION, t.ty, 9, 3)[..4], &buf[..4]);
        for cut in 0..n {
            assert!(Ticket::parse(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn fuzz_entry_survives_junk() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let mut v = vec![0u8; len];
            for b in &mut v {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if len >= 4 {
                v[0] = 1;
                v[1] = (len % 7) as u8;
                v[2..4].copy_from_slice(&((len - 4) as u16).to_be_bytes());
            }
            fuzz_parse(&v);
        }
    }
}
