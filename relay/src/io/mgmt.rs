//! relayd's local management socket: its protocol, its blocking client, and the
//! non-blocking connection handling the control thread runs.
//!
//! The wire format is JSON lines on the Unix socket named by `control_socket`: a client sends
//! one [`Request`] per line and gets one [`Response`] line per request, in order, on the same
//! connection for as long as it likes (relay-control keeps one open: a full sync on connect,
//! then incremental updates). `relayd stats`, `relayd ctl` and relay-control are its clients.
//!
//! Invariants, and why:
//! - **Access**: `SO_PEERCRED` is the authority. A peer must be root, relayd's own
//!   (effective) user, or one of the config's `control_users`; anyone else gets one error
//!   line and the connection is closed. The socket file is mode 0666 so that those users can
//!   connect at all; file permissions are not what protects it.
//! - **Bounds**: a request line is at most [`MAX_REQUEST`] bytes (1 MiB: `set_apps` with many
//!   apps fits); a longer one gets an error and the connection is closed. At most
//!   [`MAX_CONNECTIONS`] clients are served at once; one more gets an error line. A
//!   connection holds at most one pending response: its next request is read only once the
//!   previous answer is written, so a client that does not read cannot make relayd buffer.
//! - **Never blocks the control thread**: sockets are non-blocking and driven by the control
//!   thread's mio poll; a partial line or a partial write simply waits for the next event.
//! - **Strict parsing**: requests are tagged by `op`, snake_case, with unknown fields refused.
//!   Responses are parsed leniently by [`Client`], so an older client reads a newer relayd.

use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use mio::{Interest, Token};

use crate::stats::Snapshot;

/// Largest request line accepted, in bytes (without the newline).
pub const MAX_REQUEST: usize = 1 << 20;
/// Most management connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Rooms listed when a `rooms` request gives no `limit`.
pub const ROOMS_DEFAULT_LIMIT: u32 = 1000;
/// Largest `limit` a `rooms` request may give.
pub const ROOMS_MAX_LIMIT: u32 = 10_000;
/// Offenders listed when an `offenders` request gives no `limit`.
pub const OFFENDERS_DEFAULT_LIMIT: u32 = 256;
/// Largest response line [`Client`] reads (a full room or blocklist listing fits).
pub const MAX_RESPONSE: usize = 256 << 20;

/// A management request: `{"op": "<name>", ...fields}`.
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
        /// The address (bits past the prefix are ignored).
        ip: IpAddr,
        /// The prefix length: at most 32 for IPv4, 128 for IPv6.
        prefix_len: u32,
        /// Lifetime in seconds.
        ttl_secs: u64,
    },
    /// Remove a blocklist entry (XDP backend). Answers `removed`: 1, or 0 if there was none.
    Unblock {
        /// The address, as given to `Block`.
        ip: IpAddr,
        /// The prefix length, as given to `Block`.
        prefix_len: u32,
    },
    /// The live blocklist entries (answer: `blocks`; empty on the socket backend).
    Blocklist {},
    /// Rooms and their members, sorted by app and room (answer: `rooms`).
    Rooms {
        /// Only this app's rooms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdkappid: Option<u64>,
        /// At most this many rooms: default [`ROOMS_DEFAULT_LIMIT`], at most [`ROOMS_MAX_LIMIT`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The per-source limits and relay port range (answer: `limits`).
    GetLimits {},
    /// Replace the per-source limits and port range in the kernel at run time (XDP backend).
    /// The range must contain relayd's listen port.
    SetLimits(Limits),
    /// Sources the kernel dropped most packets from, highest first (answer: `offenders`;
    /// empty on the socket backend).
    Offenders {
        /// At most this many: default [`OFFENDERS_DEFAULT_LIMIT`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
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
    /// Checks the port range: non-empty, no port 0, and containing `listen_port`.
    pub fn check(&self, listen_port: u16) -> Result<(), String> {
        if self.port_min == 0 || self.port_min > self.port_max {
            return Err(format!(
                "port range {}..={} is invalid: need 1 <= port_min <= port_max",
                self.port_min, self.port_max
            ));
        }
        if !(self.port_min..=self.port_max).contains(&listen_port) {
            return Err(format!(
                "port range {}..={} does not contain relayd's listen port {listen_port}",
                self.port_min, self.port_max
            ));
        }
        Ok(())
    }
}

/// A room in a `rooms` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomInfo {
    /// The app.
    pub sdkappid: u64,
    /// The room in the form `dismiss_room` takes: digits for a numeric room; a string room
    /// by its name, prefixed with `s:` only when the name alone would read as a number or
    /// starts with `s:`.
    pub room: String,
    /// The members, by user id.
    pub members: Vec<MemberInfo>,
}

/// A member in a [`RoomInfo`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    /// The user id.
    pub user: String,
    /// The client's address as relayd sees it (`SocketAddr` text).
    pub addr: String,
    /// The member may publish (holds a send privilege: audio or video).
    pub send: bool,
    /// The member may receive (holds a receive privilege: audio or video).
    pub recv: bool,
}

/// A blocklist entry in a `blocklist` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockInfo {
    /// The prefix's address (bits past the prefix are zero).
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix_len: u32,
    /// Seconds until the entry expires (rounded up); `None` = until removed.
    pub expires_in_secs: Option<u64>,
}

/// A source in an `offenders` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offender {
    /// The source address.
    pub ip: IpAddr,
    /// Packets from it the kernel dropped (any drop reason), since it entered the table.
    pub dropped_packets: u64,
}

/// A management response.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sessions ended (dismiss, remove, set_apps), or blocklist entries removed (unblock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// Counters (stats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Snapshot>,
    /// Rooms (rooms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<RoomInfo>>,
    /// Blocklist entries (blocklist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<BlockInfo>>,
    /// Limits (get_limits, and set_limits: the limits now in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Offenders (offenders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offenders: Option<Vec<Offender>>,
}

impl Response {
    /// A success with nothing else to say.
    pub fn ok() -> Self {
        Self { ok: true, ..Self::default() }
    }

    /// A failure.
    pub fn error(msg: impl Into<String>) -> Self {
        Self { ok: false, error: Some(msg.into()), ..Self::default() }
    }
}

/// A blocking client on one persistent connection: requests are answered in order.
pub struct Client {
    reader: io::BufReader<UnixStream>,
    writer: UnixStream,
    line: Vec<u8>,
}

impl Client {
    /// Connects; `timeout` bounds every later read and write.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Self> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let writer = s.try_clone()?;
        Ok(Self { reader: io::BufReader::new(s), writer, line: Vec::new() })
    }

    /// Sends one request and reads its answer. An error leaves the connection unusable
    /// (a late answer could be read as the next one's): reconnect.
    pub fn request(&mut self, req: &Request) -> io::Result<Response> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, req).map_err(io::Error::other)?;
        self.line.push(b'\n');
        let sent = self.writer.write_all(&self.line);
        self.line.clear();
        let read = (&mut self.reader).take(MAX_RESPONSE as u64 + 1).read_until(b'\n', &mut self.line);
        // A refused connection (permission, too many clients) is closed after one error
        // line, maybe before the request went out: that line is the answer.
        let n = match (sent, read) {
            (_, Ok(n)) if n > 0 => n,
            (Err(e), _) => return Err(e),
            (Ok(()), r) => r?,
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "relayd closed the management connection"));
        }
        if self.line.last() != Some(&b'\n') {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated or oversized answer from relayd"));
        }
        serde_json::from_slice(&self.line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Sends one request to a running relayd on a new connection and reads its answer.
pub fn request(path: &Path, req: &Request) -> io::Result<Response> {
    Client::connect(path, Duration::from_secs(5))?.request(req)
}

/// The listener and its connections, driven by the control thread's poll.
pub(super) struct Server {
    listener: mio::net::UnixListener,
    conns: Vec<Option<Conn>>,
    /// Uids allowed besides root and relayd's effective uid.
    allowed: Vec<u32>,
    /// The listener's token; connection `i` has token `first_conn + i`.
    listen_token: Token,
    first_conn: usize,
}

struct Conn {
    stream: mio::net::UnixStream,
    /// Bytes read and not yet parsed (at most one partial line beyond the next complete one).
    input: Vec<u8>,
    /// The pending response and how much of it is written.
    output: Vec<u8>,
    written: usize,
    /// The peer shut down its side: answer what is complete, then close.
    eof: bool,
    /// Close once `output` is written (after an error that ends the connection).
    close_after_output: bool,
}

impl Server {
    /// Binds `path` (refusing if a live relayd serves it), sets mode 0666 and registers
    /// the listener with `listen_token`; connections get tokens from `first_conn` on.
    pub fn bind(
        path: &Path,
        allowed: Vec<u32>,
        registry: &mio::Registry,
        listen_token: Token,
        first_conn: usize,
    ) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running relayd", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut listener = mio::net::UnixListener::bind(path)?;
        // Anyone may connect; SO_PEERCRED decides who is served (module doc).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        registry.register(&mut listener, listen_token, Interest::READABLE)?;
        Ok(Self { listener, conns: (0..MAX_CONNECTIONS).map(|_| None).collect(), allowed, listen_token, first_conn })
    }

    /// Whether `token` belongs to this server.
    pub fn owns(&self, token: Token) -> bool {
        token == self.listen_token || (self.first_conn..self.first_conn + MAX_CONNECTIONS).contains(&token.0)
    }

    /// Handles a readiness event for `token`; `execute` answers each request.
    pub fn handle(&mut self, registry: &mio::Registry, token: Token, execute: &mut dyn FnMut(Request) -> Response) {
        if token == self.listen_token {
            self.accept(registry, execute);
            return;
        }
        let Some(i) = token.0.checked_sub(self.first_conn) else { return };
        let Some(slot) = self.conns.get_mut(i) else { return };
        let Some(conn) = slot.as_mut() else { return };
        if !conn.pump(execute) {
            let mut conn = slot.take().expect("checked above");
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    fn accept(&mut self, registry: &mio::Registry, execute: &mut dyn FnMut(Request) -> Response) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "management accept failed");
                    return;
                }
            };
            let uid = super::sys::peer_uid(&stream);
            let allowed = uid.as_ref().is_ok_and(|u| *u == 0 || *u == super::sys::euid() || self.allowed.contains(u));
            if !allowed {
                tracing::warn!(uid = ?uid.ok(), "management connection refused: uid not allowed");
                refuse(&mut stream, "permission denied: only root, relayd's user and control_users may manage relayd");
                continue;
            }
            let Some(i) = self.conns.iter().position(Option::is_none) else {
                refuse(&mut stream, &format!("too many management connections (at most {MAX_CONNECTIONS})"));
                continue;
            };
            let token = Token(self.first_conn + i);
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                tracing::warn!(error = %e, "cannot register a management connection");
                continue;
            }
            let mut conn = Conn {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                eof: false,
                close_after_output: false,
            };
            // Edge-triggered: data may already be waiting.
            if conn.pump(execute) {
                self.conns[i] = Some(conn);
            } else {
                let _ = registry.deregister(&mut conn.stream);
            }
        }
    }
}

/// Best effort: one error line on a fresh (empty-buffered) socket, then close.
fn refuse(stream: &mut mio::net::UnixStream, msg: &str) {
    let _ = stream.write_all(&response_line(&Response::error(msg)));
}

fn response_line(r: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(r).expect("responses serialize: string keys, no failing Serialize impls");
    line.push(b'\n');
    line
}

impl Conn {
    /// Makes all the progress possible without blocking: writes the pending answer, answers
    /// the next complete line, reads more. Returns false when the connection is done.
    fn pump(&mut self, execute: &mut dyn FnMut(Request) -> Response) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.written < self.output.len() {
                match self.stream.write(&self.output[self.written..]) {
                    Ok(0) => return false,
                    Ok(n) => {
                        self.written += n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
            self.output.clear();
            self.written = 0;
            if self.close_after_output {
                return false;
            }
            if let Some(end) = self.input.iter().position(|b| *b == b'\n') {
                let resp = answer(&self.input[..end], execute);
                self.input.drain(..=end);
                self.output = response_line(&resp);
                continue;
            }
            if self.input.len() > MAX_REQUEST {
                self.output = response_line(&Response::error(format!("request longer than {MAX_REQUEST} bytes")));
                self.close_after_output = true;
                continue;
            }
            if self.eof {
                if self.input.iter().all(u8::is_ascii_whitespace) {
                    return false;
                }
                // A last request without its newline.
                let resp = answer(&self.input, execute);
                self.input.clear();
                self.output = response_line(&resp);
                self.close_after_output = true;
                continue;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

fn answer(line: &[u8], execute: &mut dyn FnMut(Request) -> Response) -> Response {
    match serde_json::from_slice::<Request>(line) {
        Ok(req) => execute(req),
        Err(e) => Response::error(format!("bad request: {e}")),
    }
}

/// The text form of a room in [`RoomInfo::room`]: what [`crate::ids::RoomId::parse`] (and so
/// `dismiss_room`) reads back as the same room.
pub fn room_text(room: &crate::ids::RoomId) -> String {
    use crate::ids::RoomId;
    match room {
        RoomId::Num(n) => n.to_string(),
        RoomId::Str(s) if s.starts_with("s:") || s.parse::<u64>().is_ok() => format!("s:{s}"),
        RoomId::Str(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoomId;

    fn round_trip(r: &Request, json: &str) {
        assert_eq!(serde_json::to_string(r).unwrap(), json);
        assert_eq!(&serde_json::from_str::<Request>(json).unwrap(), r);
    }

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        round_trip(
            &Request::RemoveUser { sdkappid: 1, room: "s:a".into(), user: "u".into() },
            r#"{"op":"remove_user","sdkappid":1,"room":"s:a","user":"u"}"#,
        );
        round_trip(&Request::Rooms { sdkappid: None, limit: None }, r#"{"op":"rooms"}"#);
        round_trip(&Request::Rooms { sdkappid: Some(7), limit: Some(3) }, r#"{"op":"rooms","sdkappid":7,"limit":3}"#);
        round_trip(
            &Request::Unblock { ip: "198.18.0.0".parse().unwrap(), prefix_len: 15 },
            r#"{"op":"unblock","ip":"198.18.0.0","prefix_len":15}"#,
        );
        round_trip(&Request::Blocklist {}, r#"{"op":"blocklist"}"#);
        round_trip(&Request::GetLimits {}, r#"{"op":"get_limits"}"#);
        round_trip(&Request::Offenders { limit: None }, r#"{"op":"offenders"}"#);
        round_trip(&Request::Offenders { limit: Some(10) }, r#"{"op":"offenders","limit":10}"#);
        let limits = Limits {
            pps_rate_per_sec: 100,
            pps_burst: 200,
            join_rate_per_sec: 5,
            join_burst: 10,
            port_min: 7000,
            port_max: 7001,
        };
        round_trip(
            &Request::SetLimits(limits),
            r#"{"op":"set_limits","pps_rate_per_sec":100,"pps_burst":200,"join_rate_per_sec":5,"join_burst":10,"port_min":7000,"port_max":7001}"#,
        );
        for bad in [
            r#"{"op":"stats","x":1}"#,
            r#"{"op":"reboot"}"#,
            r#"{"op":"rooms","sdkappid":1,"extra":true}"#,
            r#"{"op":"blocklist","all":true}"#,
            r#"{"op":"unblock","ip":"198.18.0.1"}"#,
            r#"{"op":"unblock","ip":"not an ip","prefix_len":32}"#,
            // set_limits: every field required, none unknown, each within its type.
            r#"{"op":"set_limits","pps_rate_per_sec":1,"pps_burst":1,"join_rate_per_sec":1,"join_burst":1,"port_min":1}"#,
            r#"{"op":"set_limits","pps_rate_per_sec":1,"pps_burst":1,"join_rate_per_sec":1,"join_burst":1,"port_min":1,"port_max":2,"x":0}"#,
            r#"{"op":"set_limits","pps_rate_per_sec":1,"pps_burst":1,"join_rate_per_sec":1,"join_burst":1,"port_min":1,"port_max":70000}"#,
            r#"{"op":"rooms","limit":-1}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn responses_round_trip_and_omit_what_is_absent() {
        assert_eq!(serde_json::to_string(&Response::ok()).unwrap(), r#"{"ok":true}"#);
        let r = Response {
            ok: true,
            rooms: Some(vec![RoomInfo {
                sdkappid: 1_400_000_001,
                room: "lobby".into(),
                members: vec![MemberInfo { user: "u".into(), addr: "198.18.0.2:4000".into(), send: true, recv: false }],
            }]),
            blocks: Some(vec![BlockInfo { ip: "2001:2::".parse().unwrap(), prefix_len: 48, expires_in_secs: None }]),
            limits: Some(Limits {
                pps_rate_per_sec: 1,
                pps_burst: 2,
                join_rate_per_sec: 3,
                join_burst: 4,
                port_min: 5,
                port_max: 6,
            }),
            offenders: Some(vec![Offender { ip: "198.19.0.2".parse().unwrap(), dropped_packets: 9 }]),
            ..Response::default()
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains(r#""members":[{"user":"u","addr":"198.18.0.2:4000","send":true,"recv":false}]"#), "{j}");
        assert!(j.contains(r#""blocks":[{"ip":"2001:2::","prefix_len":48,"expires_in_secs":null}]"#), "{j}");
        assert!(j.contains(r#""offenders":[{"ip":"198.19.0.2","dropped_packets":9}]"#), "{j}");
        assert_eq!(serde_json::from_str::<Response>(&j).unwrap(), r);
        // A newer relayd's extra fields do not break an older client.
        let newer: Response = serde_json::from_str(r#"{"ok":false,"error":"x","future":[1]}"#).unwrap();
        assert_eq!(newer, Response::error("x"));
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
        assert!(l.check(7000).is_ok() && l.check(7010).is_ok());
        assert!(l.check(6999).unwrap_err().contains("does not contain relayd's listen port 6999"));
        assert!(Limits { port_min: 7011, ..l }.check(7011).unwrap_err().contains("invalid"));
        assert!(Limits { port_min: 0, ..l }.check(7000).unwrap_err().contains("invalid"));
    }

    #[test]
    fn room_text_reads_back_as_the_same_room() {
        for (room, text) in [
            (RoomId::Num(42), "42"),
            (RoomId::Str("lobby".into()), "lobby"),
            (RoomId::Str("42".into()), "s:42"),
            (RoomId::Str("s:x".into()), "s:s:x"),
        ] {
            assert_eq!(room_text(&room), text);
            assert_eq!(RoomId::parse(text).unwrap(), room);
        }
    }

    /// A server on a temporary socket, with an echoing executor, driven by its own poll.
    fn serve(path: &Path, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<()> {
        let mut poll = mio::Poll::new().unwrap();
        let mut server = Server::bind(path, Vec::new(), poll.registry(), Token(0), 10).unwrap();
        std::thread::spawn(move || {
            let mut events = mio::Events::with_capacity(8);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(20))).unwrap();
                for e in &events {
                    server.handle(poll.registry(), e.token(), &mut |req| {
                        n += 1;
                        match req {
                            Request::Stats {} => Response { removed: Some(n), ..Response::ok() },
                            other => Response::error(format!("{other:?}")),
                        }
                    });
                }
            }
        })
    }

    #[test]
    fn persistent_connections_answer_in_order_and_bounds_hold() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("edgerelay-mgmt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("m.sock");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = serve(&path, stop.clone());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666);
        assert!(Server::bind(&path, Vec::new(), mio::Poll::new().unwrap().registry(), Token(0), 1).is_err());

        // Many requests on one connection, each answered in order.
        let mut c = Client::connect(&path, Duration::from_secs(5)).unwrap();
        let first = c.request(&Request::Stats {}).unwrap().removed.unwrap();
        for i in 1..=200 {
            assert_eq!(c.request(&Request::Stats {}).unwrap().removed, Some(first + i));
        }
        // Pipelined: three lines in one write, three answers in order.
        let mut pipelined = UnixStream::connect(&path).unwrap();
        pipelined.write_all(b"{\"op\":\"stats\"}\n{\"op\":\"nope\"}\n{\"op\":\"blocklist\"}\n").unwrap();
        let mut r = io::BufReader::new(pipelined);
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            lines.push(serde_json::from_str::<Response>(&l).unwrap());
        }
        assert!(lines[0].ok);
        assert!(lines[1].error.as_deref().unwrap().contains("bad request"), "{:?}", lines[1]);
        assert_eq!(lines[2].error.as_deref(), Some("Blocklist"));
        drop(r);
        // The old one-shot form: a request without a newline, then shutdown.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"{\"op\":\"stats\"}").unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let mut l = String::new();
        raw.read_to_string(&mut l).unwrap();
        assert!(serde_json::from_str::<Response>(&l).unwrap().ok, "{l}");

        // An oversized line: an error, then the connection is closed. 1 MiB itself fits.
        let mut big = UnixStream::connect(&path).unwrap();
        big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut fits = br#"{"op":"stats","pad":""#.to_vec();
        fits.resize(MAX_REQUEST - 2, b'x');
        fits.extend_from_slice(b"\"}\n");
        big.write_all(&fits).unwrap();
        let mut r = io::BufReader::new(big.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert!(l.contains("unknown field `pad`"), "a 1 MiB request is parsed: {l}");
        let w = std::thread::spawn(move || {
            let _ = big.write_all(&vec![b' '; MAX_REQUEST + 64 * 1024]);
        });
        l.clear();
        r.read_line(&mut l).unwrap();
        assert!(l.contains("request longer than 1048576 bytes"), "{l}");
        l.clear();
        // Closed: EOF, or a reset because the rest of the oversized line was never read.
        let end = r.read_line(&mut l);
        assert!(
            matches!(&end, Ok(0)) || end.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
            "closed after an oversized request: {end:?}"
        );
        w.join().unwrap();

        // At most MAX_CONNECTIONS at once; the next gets an error line.
        let held: Vec<Client> =
            (0..MAX_CONNECTIONS - 1).map(|_| Client::connect(&path, Duration::from_secs(5)).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut over = Client::connect(&path, Duration::from_secs(5)).unwrap();
        let r = over.request(&Request::Stats {});
        assert!(
            r.as_ref().is_ok_and(|r| r.error.as_deref().is_some_and(|e| e.contains("too many"))),
            "the 17th connection is refused: {r:?}"
        );
        drop(held);
        drop(c);
        std::thread::sleep(Duration::from_millis(100));
        assert!(request(&path, &Request::Stats {}).unwrap().ok, "slots are freed on close");

        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
