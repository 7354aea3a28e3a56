//! Identifier newtypes with checked constructors.
//!
//! Everything that names an app, a room, a user or a stream crosses the wire, so each has
//! one constructor that validates it; a constructor that skips the check says so with
//! `_unchecked` (quinn's `VarInt` convention). Bounds follow TRTC: numeric room ids are
//! 1..=4294967294, string room ids and user ids are at most 64 and 32 bytes of printable
//! ASCII.
#![forbid(unsafe_code)]

use std::fmt;

/// Errors from the identifier constructors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// SdkAppId 0 or above `u32::MAX` is not a TRTC app id.
    #[error("SdkAppId must be in 1..=4294967295")]
    BadSdkAppId,
    /// Numeric room ids are 1..=4294967294 in TRTC.
    #[error("numeric room id must be in 1..=4294967294")]
    BadRoomNum,
    /// String room ids are 1..=64 bytes of printable ASCII.
    #[error("string room id must be 1..=64 bytes of printable ASCII")]
    BadRoomStr,
    /// User ids are 1..=32 bytes of printable ASCII.
    #[error("user id must be 1..=32 bytes of printable ASCII")]
    BadUserId,
    /// SSRC 0 is reserved here so that an all-zero header never matches a stream.
    #[error("SSRC 0 is not allowed")]
    BadSsrc,
}

/// A TRTC application id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct SdkAppId(u32);

impl SdkAppId {
    /// Checked constructor.
    pub fn new(v: u64) -> Result<Self, Error> {
        match u32::try_from(v) {
            Ok(v) if v != 0 => Ok(Self(v)),
            _ => Err(Error::BadSdkAppId),
        }
    }
    /// The raw value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SdkAppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn printable(s: &[u8]) -> bool {
    s.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A room id: TRTC has numeric and string rooms, and they are distinct namespaces
/// (room `123` and room `"123"` are different rooms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomId {
    /// A numeric room id.
    Num(u32),
    /// A string room id.
    Str(Box<str>),
}

impl RoomId {
    /// Maximum bytes in a string room id.
    pub const MAX_STR_LEN: usize = 64;

    /// Checked numeric constructor.
    pub fn num(v: u64) -> Result<Self, Error> {
        match u32::try_from(v) {
            Ok(v) if v != 0 && v != u32::MAX => Ok(Self::Num(v)),
            _ => Err(Error::BadRoomNum),
        }
    }

    /// Checked string constructor.
    pub fn str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > Self::MAX_STR_LEN || !printable(s.as_bytes()) {
            return Err(Error::BadRoomStr);
        }
        Ok(Self::Str(s.into()))
    }

    /// Parses the command-line form: digits are a numeric room, `s:NAME` or any other text a
    /// string room.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if let Some(rest) = s.strip_prefix("s:") {
            return Self::str(rest);
        }
        match s.parse::<u64>() {
            Ok(n) => Self::num(n),
            Err(_) => Self::str(s),
        }
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Num(n) => n.fmt(f),
            Self::Str(s) => write!(f, "s:{s}"),
        }
    }
}

/// A user id (the UserSig `TLS.identifier`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Box<str>);

impl UserId {
    /// Maximum bytes in a user id.
    pub const MAX_LEN: usize = 32;

    /// Checked constructor.
    pub fn new(s: &str) -> Result<Self, Error> {
        Self::check(s)?;
        Ok(Self(s.into()))
    }
    /// The constructor's check, without allocating (wire parsers use it).
    pub fn check(s: &str) -> Result<(), Error> {
        if s.is_empty() || s.len() > Self::MAX_LEN || !printable(s.as_bytes()) {
            return Err(Error::BadUserId);
        }
        Ok(())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An RTP synchronisation source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(u32);

impl Ssrc {
    /// Checked constructor (0 is refused).
    pub fn new(v: u32) -> Result<Self, Error> {
        if v == 0 {
            Err(Error::BadSsrc)
        } else {
            Ok(Self(v))
        }
    }
    /// The raw value.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A room is isolated per `(SdkAppId, RoomId)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    /// The app that owns the room.
    pub app: SdkAppId,
    /// The room within the app.
    pub room: RoomId,
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.room)
    }
}

/// A relay-assigned session id; never reused within one relayd lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(SdkAppId::new(0), Err(Error::BadSdkAppId));
        assert_eq!(SdkAppId::new(1 << 32), Err(Error::BadSdkAppId));
        assert_eq!(SdkAppId::new(1_400_000_000).unwrap().get(), 1_400_000_000);
        assert_eq!(RoomId::num(0), Err(Error::BadRoomNum));
        assert_eq!(RoomId::num(u32::MAX as u64), Err(Error::BadRoomNum));
        assert_eq!(RoomId::str(""), Err(Error::BadRoomStr));
        assert_eq!(RoomId::str(&"a".repeat(65)), Err(Error::BadRoomStr));
        assert_eq!(RoomId::str("a b"), Err(Error::BadRoomStr));
        assert_eq!(RoomId::parse("42").unwrap(), RoomId::Num(42));
        assert_eq!(RoomId::parse("s:42").unwrap(), RoomId::Str("42".into()));
        assert_eq!(RoomId::parse("lobby").unwrap(), RoomId::Str("lobby".into()));
        assert_eq!(UserId::new(&"u".repeat(33)), Err(Error::BadUserId));
        assert_eq!(Ssrc::new(0), Err(Error::BadSsrc));
    }
}
