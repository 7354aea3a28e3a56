//! The workspace's one `Limits` and one `Quotas`: what relayd enforces per source and per
//! app, as relayd's config, its management socket, relay-control's store and API, and the
//! CLIs all read and write them.
//!
//! The bounds live here too, so a value the API accepts is a value relayd accepts: a push
//! from relay-control is all or nothing, and a quota relayd would refuse must be refused
//! at the API instead.
#![forbid(unsafe_code)]

/// Largest rate or burst in [`Limits`].
pub const MAX_RATE: u32 = 100_000_000;
/// Largest value of any quota in [`Quotas`].
pub const MAX_QUOTA: u32 = 1_000_000;
/// Smallest `max_members_per_room`: a room of one member relays nothing.
pub const MIN_MEMBERS_PER_ROOM: u32 = 2;

/// Why a [`Limits`] or [`Quotas`] value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A field is outside its allowed range.
    #[error("{field} = {value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The field, as it is named on the wire (`quotas.max_rooms`, `pps_burst`).
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// `port_min` is 0 or above `port_max`.
    #[error("port range {min}..={max} is invalid: need 1 <= port_min <= port_max")]
    InvalidPortRange {
        /// `port_min`.
        min: u16,
        /// `port_max`.
        max: u16,
    },
    /// The port range does not contain relayd's listen port.
    #[error("port range {min}..={max} does not contain relayd's listen port {listen}")]
    ListenPortOutside {
        /// `port_min`.
        min: u16,
        /// `port_max`.
        max: u16,
        /// relayd's listen port.
        listen: u16,
    },
}

fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), LimitsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LimitsError::OutOfRange { field, value, min, max })
    }
}

/// Per-source limits in the kernel and the UDP port range the XDP program treats as the
/// relay's. Rates are per second per source address; a rate of 0 means unlimited, a burst
/// of 0 is taken as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// SRTP/SRTCP packets per second per source.
    pub pps_rate_per_sec: u32,
    /// Packet bucket size.
    pub pps_burst: u32,
    /// Control messages (joins) per second per source.
    pub join_rate_per_sec: u32,
    /// Join bucket size.
    pub join_burst: u32,
    /// Lowest relay UDP port, inclusive.
    pub port_min: u16,
    /// Highest relay UDP port, inclusive.
    pub port_max: u16,
}

impl Limits {
    /// Checks every bound that does not depend on a relayd: rates and bursts at most
    /// [`MAX_RATE`], and `1 <= port_min <= port_max`.
    pub fn check(&self) -> Result<(), LimitsError> {
        let rate = |field, v: u32| in_range(field, v.into(), 0, MAX_RATE.into());
        rate("pps_rate_per_sec", self.pps_rate_per_sec)?;
        rate("pps_burst", self.pps_burst)?;
        rate("join_rate_per_sec", self.join_rate_per_sec)?;
        rate("join_burst", self.join_burst)?;
        if self.port_min == 0 || self.port_min > self.port_max {
            return Err(LimitsError::InvalidPortRange { min: self.port_min, max: self.port_max });
        }
        Ok(())
    }

    /// [`Limits::check`], and the port range contains `listen_port`.
    pub fn check_for(&self, listen_port: u16) -> Result<(), LimitsError> {
        self.check()?;
        if !(self.port_min..=self.port_max).contains(&listen_port) {
            return Err(LimitsError::ListenPortOutside { min: self.port_min, max: self.port_max, listen: listen_port });
        }
        Ok(())
    }
}

/// Per-app quotas, enforced by relayd at join time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Rooms alive at once.
    pub max_rooms: u32,
    /// Members in one room.
    pub max_members_per_room: u32,
    /// Sessions alive at once, over all rooms (default [`Quotas::DEFAULT`]'s when absent).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
}

fn default_max_sessions() -> u32 {
    Quotas::DEFAULT.max_sessions
}

impl Quotas {
    /// The quotas of an app that names none.
    pub const DEFAULT: Self = Self { max_rooms: 1000, max_members_per_room: 50, max_sessions: 10_000 };

    /// Checks the bounds: every quota at most [`MAX_QUOTA`], at least one room and session,
    /// and at least [`MIN_MEMBERS_PER_ROOM`] members per room.
    pub fn check(&self) -> Result<(), LimitsError> {
        let max = u64::from(MAX_QUOTA);
        in_range("quotas.max_rooms", self.max_rooms.into(), 1, max)?;
        in_range("quotas.max_members_per_room", self.max_members_per_room.into(), MIN_MEMBERS_PER_ROOM.into(), max)?;
        in_range("quotas.max_sessions", self.max_sessions.into(), 1, max)
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        pps_rate_per_sec: 1000,
        pps_burst: 2000,
        join_rate_per_sec: 5,
        join_burst: 10,
        port_min: 7000,
        port_max: 7010,
    };

    #[test]
    fn limits_bounds() {
        assert_eq!(L.check(), Ok(()));
        assert_eq!(L.check_for(7005), Ok(()));
        assert!(matches!(L.check_for(7011), Err(LimitsError::ListenPortOutside { listen: 7011, .. })));
        let over = Limits { pps_burst: MAX_RATE + 1, ..L };
        assert!(matches!(over.check(), Err(LimitsError::OutOfRange { field: "pps_burst", .. })));
        assert!(matches!(Limits { port_min: 0, ..L }.check(), Err(LimitsError::InvalidPortRange { .. })));
        assert!(matches!(Limits { port_min: 7011, ..L }.check(), Err(LimitsError::InvalidPortRange { .. })));
        let unlimited = Limits { pps_rate_per_sec: 0, join_rate_per_sec: 0, ..L };
        assert_eq!(unlimited.check(), Ok(()), "0 means unlimited");
    }

    #[test]
    fn limits_must_cover_the_listen_port() {
        let l = Limits {
            pps_rate_per_sec: 0,
            pps_burst: 0,
            join_rate_per_sec: 0,
            join_burst: 0,
            port_min: 7000,
            port_max: 7010,
        };
        assert!(l.check_for(7000).is_ok() && l.check_for(7010).is_ok());
        assert!(l.check_for(6999).unwrap_err().to_string().contains("does not contain relayd's listen port 6999"));
        assert!(Limits { port_min: 7011, ..l }.check_for(7011).unwrap_err().to_string().contains("invalid"));
        assert!(Limits { port_min: 0, ..l }.check_for(7000).unwrap_err().to_string().contains("invalid"));
    }

    #[test]
    fn quotas_bounds_and_default_sessions() {
        assert_eq!(Quotas::DEFAULT.check(), Ok(()));
        let q = |r, m, s| Quotas { max_rooms: r, max_members_per_room: m, max_sessions: s };
        assert!(q(0, 2, 1).check().is_err());
        assert!(q(1, 1, 1).check().is_err(), "a room of one relays nothing");
        assert!(q(1, 2, 0).check().is_err());
        assert!(q(MAX_QUOTA + 1, 2, 1).check().is_err());
        assert_eq!(q(1, 2, 1).check(), Ok(()));
        let parsed: Quotas = serde_json::from_str(r#"{"max_rooms":3,"max_members_per_room":4}"#).expect("parses");
        assert_eq!(parsed, q(3, 4, Quotas::DEFAULT.max_sessions));
        assert!(serde_json::from_str::<Quotas>(r#"{"max_rooms":3,"max_members_per_room":4,"x":1}"#).is_err());
    }
}
