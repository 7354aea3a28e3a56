//! relayd's local management socket: counters and operator actions.
//!
//! The control thread serves one request per connection on the Unix socket named by
//! `control_socket`: a JSON line in, a JSON line out. Only root or relayd's own user may
//! connect (checked with `SO_PEERCRED`); requests are bounded to 4 KiB and parsed with
//! unknown fields refused. `relayd stats` and `relayd ctl` are its clients; relay-control
//! will be the next one.

use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::stats::Snapshot;

/// Largest request accepted.
pub const MAX_REQUEST: usize = 4096;

/// A management request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Counters.
    Stats {},
    /// End every session of a room (TRTC `DismissRoom`).
    DismissRoom {
        /// The app.
        sdkappid: u64,
        /// The room: digits for a numeric room, `s:NAME` or other text for a string room.
        room: String,
    },
    /// End one user's session in a room (TRTC `RemoveUser`).
    RemoveUser {
        /// The app.
        sdkappid: u64,
        /// The room, as in `DismissRoom`.
        room: String,
        /// The user id.
        user: String,
    },
    /// Replace the app set (relay-control's push). Sessions of apps that remain keep
    /// running (a secret rotation keeps live sessions); sessions of removed apps end.
    SetApps {
        /// Every app relayd should serve.
        apps: Vec<AppSpec>,
    },
    /// Drop a source prefix in the kernel (XDP backend) for `ttl_secs` (0 = until removed).
    Block {
        /// The address.
        ip: IpAddr,
        /// The prefix length.
        prefix_len: u32,
        /// Lifetime in seconds.
        ttl_secs: u64,
    },
}

/// One app in a [`Request::SetApps`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The SdkAppId.
    pub sdkappid: u64,
    /// UserSig secrets, newest first (two during a rotation's overlap).
    pub secrets: Vec<String>,
    /// Refuse joins without a PrivateMapKey.
    #[serde(default)]
    pub require_private_map_key: bool,
    /// Allowed SRTP profiles (default: all).
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
    /// Quotas.
    #[serde(default)]
    pub quotas: crate::config::Quotas,
}

/// A management response.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sessions ended (dismiss and remove).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// Counters (stats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Snapshot>,
}

impl Response {
    /// A failure.
    pub fn error(msg: impl Into<String>) -> Self {
        Self { ok: false, error: Some(msg.into()), ..Self::default() }
    }
}

/// Sends one request to a running relayd and reads its answer.
pub fn request(path: &Path, req: &Request) -> io::Result<Response> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    io::BufReader::new(s).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one bounded request line from a connected client.
pub(super) fn read_request(s: &mut UnixStream) -> Result<Request, String> {
    s.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut r = io::BufReader::new(io::Read::take(&mut *s, MAX_REQUEST as u64 + 1));
    r.read_until(b'\n', &mut buf).map_err(|e| format!("reading the request: {e}"))?;
    if buf.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    serde_json::from_slice(&buf).map_err(|e| format!("bad request: {e}"))
}

/// Writes a response line (best effort: the client may be gone).
pub(super) fn write_response(s: &mut UnixStream, r: &Response) {
    let mut line = serde_json::to_vec(r).expect("responses serialize");
    line.push(b'\n');
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = s.write_all(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let r = Request::RemoveUser { sdkappid: 1, room: "s:a".into(), user: "u".into() };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"op":"remove_user","sdkappid":1,"room":"s:a","user":"u"}"#);
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"stats","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }
}
