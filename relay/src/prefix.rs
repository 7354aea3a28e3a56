//! The workspace's one IP prefix (CIDR) type: the blocklist, autoblock exemptions, the API
//! and the CLIs all parse and print prefixes through [`Prefix`].
//!
//! Invariant: a `Prefix` never has bits set beyond its length, and its address is canonical
//! (an IPv4-mapped IPv6 address is stored as IPv4), so two equal prefixes compare equal.
//! [`Prefix::new`] refuses host bits, so what an operator writes in a config file is what
//! matches; [`Prefix::truncating`] clears them, for inputs that historically accepted them
//! (the blocklist API and `relayd ctl block`).
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The text is not `ADDRESS` or `ADDRESS/LEN` with a decimal length.
    #[error("invalid CIDR {0:?}: expected ADDRESS or ADDRESS/PREFIX_LEN")]
    Syntax(String),
    /// The prefix length exceeds the address family's width.
    #[error("invalid CIDR {0:?}: prefix length over 32 (IPv4) or 128 (IPv6)")]
    TooLong(String),
    /// The address has bits set beyond the prefix.
    #[error("invalid CIDR {0:?}: host bits set beyond the prefix")]
    HostBits(String),
}

/// An address prefix, written `198.18.0.0/15` or `2001:db8::/32`; a bare address is a /32
/// or /128. Serialized as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// The width of `ip`'s family: 32 or 128.
pub fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The address as a left-aligned 128-bit number.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(((bits >> 96) as u32).into())
    } else {
        IpAddr::V6(bits.into())
    }
}

fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl Prefix {
    /// A prefix; refuses a length over the family's width, or host bits set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let p = Self::truncating(addr, len)?;
        if p.addr != addr.to_canonical() {
            return Err(PrefixError::HostBits(format!("{addr}/{len}")));
        }
        Ok(p)
    }

    /// A prefix with the bits beyond `len` cleared; refuses only a length over the width.
    pub fn truncating(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let addr = addr.to_canonical();
        if len > width(addr) {
            return Err(PrefixError::TooLong(format!("{addr}/{len}")));
        }
        Ok(Self { addr: from_bits(bits(addr) & mask(len), addr.is_ipv4()), len })
    }

    /// The single address `ip` (/32 or /128).
    pub fn host(ip: IpAddr) -> Self {
        let addr = ip.to_canonical();
        Self { addr, len: width(addr) }
    }

    /// Parses `ADDRESS[/LEN]` like [`FromStr`], but clears host bits instead of refusing them.
    pub fn parse_truncating(s: &str) -> Result<Self, PrefixError> {
        let (addr, len) = split(s)?;
        Self::truncating(addr, len)
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the zero-length prefix (every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && (bits(ip) ^ bits(self.addr)) & mask(self.len) == 0
    }
}

/// `ADDRESS[/LEN]` into its parts; the length must be 1 to 3 decimal digits.
fn split(s: &str) -> Result<(IpAddr, u8), PrefixError> {
    let bad = || PrefixError::Syntax(s.chars().take(64).collect());
    match s.split_once('/') {
        Some((a, l)) => {
            let addr: IpAddr = a.parse().map_err(|_| bad())?;
            // Digits only: `u8::from_str` would also take "+8".
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len = l.parse::<u8>().map_err(|_| PrefixError::TooLong(s.to_owned()))?;
            Ok((addr, len))
        }
        None => {
            let addr: IpAddr = s.parse().map_err(|_| bad())?;
            Ok((addr, width(addr.to_canonical())))
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = split(s)?;
        Self::new(addr, len)
    }
}

impl TryFrom<String> for Prefix {
    type Error = PrefixError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn parses_and_prints() {
        let p: Prefix = "198.18.0.0/15".parse().expect("valid");
        assert_eq!((p.addr(), p.len()), (ip("198.18.0.0"), 15));
        assert_eq!(p.to_string(), "198.18.0.0/15");
        assert_eq!("2001:db8::1".parse::<Prefix>().expect("host").len(), 128);
        assert_eq!("10.0.0.1".parse::<Prefix>().expect("host").to_string(), "10.0.0.1/32");
        assert_eq!("::/0".parse::<Prefix>().expect("all").len(), 0);
    }

    #[test]
    fn refuses_host_bits_unless_truncating() {
        assert!(matches!("198.18.0.1/15".parse::<Prefix>(), Err(PrefixError::HostBits(_))));
        let t = Prefix::parse_truncating("198.19.255.7/15").expect("truncated");
        assert_eq!(t.to_string(), "198.18.0.0/15");
        assert_eq!(Prefix::truncating(ip("2001:db8::ff"), 120).expect("v6").addr(), ip("2001:db8::"));
        assert_eq!(Prefix::truncating(ip("1.2.3.4"), 0).expect("zero").addr(), ip("0.0.0.0"));
    }

    #[test]
    fn refuses_bad_text_and_lengths() {
        for s in ["", "/", "1.2.3.4/", "1.2.3.4/+8", "1.2.3.4/1000", "x/8", "1.2.3/8", " 1.2.3.4"] {
            assert!(s.parse::<Prefix>().is_err(), "{s:?} must be refused");
        }
        assert!(matches!("1.2.3.4/33".parse::<Prefix>(), Err(PrefixError::TooLong(_))));
        assert!(matches!("::/129".parse::<Prefix>(), Err(PrefixError::TooLong(_))));
        assert!(matches!("1.2.3.4/256".parse::<Prefix>(), Err(PrefixError::TooLong(_))));
    }

    #[test]
    fn contains_and_canonical_mapped_addresses() {
        let p: Prefix = "198.18.0.0/15".parse().expect("valid");
        assert!(p.contains(ip("198.19.1.1")));
        assert!(!p.contains(ip("198.20.0.0")));
        assert!(p.contains(ip("::ffff:198.18.3.4")), "a mapped address is its IPv4 address");
        assert!(!p.contains(ip("2001:db8::1")));
        assert_eq!(Prefix::host(ip("::ffff:10.0.0.1")), Prefix::host(ip("10.0.0.1")));
    }

    #[test]
    fn serde_is_the_text() {
        let p: Prefix = serde_json::from_str("\"10.0.0.0/8\"").expect("parses");
        assert_eq!(serde_json::to_string(&p).expect("prints"), "\"10.0.0.0/8\"");
        assert!(serde_json::from_str::<Prefix>("\"10.0.0.1/8\"").is_err());
    }
}
