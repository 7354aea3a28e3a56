//! The server side of relayd's management socket ([`crate::mgmt`] has the protocol): the
//! listener and its connections, driven by the control thread's mio poll.
//!
//! Invariants, and why:
//! - **Access**: `SO_PEERCRED` is the authority. A peer must be root, relayd's own
//!   (effective) user, or one of the config's `control_users`; anyone else gets one
//!   `permission_denied` line and the connection is closed. The socket file is mode 0666 so
//!   that those users can connect at all; file permissions are not what protects it.
//! - **Bounds**: a request line is at most [`MAX_REQUEST`] bytes (1 MiB: `set_apps` with many
//!   apps fits); a longer one gets `too_large` and the connection is closed. At most
//!   [`MAX_CONNECTIONS`] clients are served at once; one more gets `too_many_connections`. A
//!   connection holds at most one pending response: its next request is read only once the
//!   previous answer is written, so a client that does not read cannot make relayd buffer.
//! - **Never blocks the control thread**: sockets are non-blocking and driven by the control
//!   thread's mio poll; a partial line or a partial write simply waits for the next event.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use mio::{Interest, Token};

use crate::mgmt::{RefusalCode, Request, Response, MAX_CONNECTIONS, MAX_REQUEST};

/// What to do when the management socket's path may not be created.
pub(crate) const SOCKET_HINT: &str = "; run relayd as root, or set control_socket to a path this user may create \
(a relative path is relative to the config file, e.g. control_socket = \"relayd.sock\"; \
`relayd example-config` run as this user writes such paths)";

/// The listener and its connections, driven by the control thread's poll.
pub(crate) struct Server {
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
        let named = |what: &str, e: io::Error| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied { SOCKET_HINT } else { "" };
            io::Error::new(e.kind(), format!("control_socket {}: {what}: {e}{hint}", path.display()))
        };
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| named(&format!("cannot create {}", dir.display()), e))?;
        }
        let mut listener = mio::net::UnixListener::bind(path).map_err(|e| named("cannot bind", e))?;
        // Anyone may connect; SO_PEERCRED decides who is served (module doc).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| named("cannot make it mode 0666", e))?;
        registry.register(&mut listener, listen_token, Interest::READABLE)?;
        Ok(Self { listener, conns: (0..MAX_CONNECTIONS).map(|_| None).collect(), allowed, listen_token, first_conn })
    }

    /// Replaces the uids allowed besides root and relayd's own (a reload of `control_users`);
    /// open connections stay, new ones are checked against the new list.
    pub fn set_allowed(&mut self, allowed: Vec<u32>) {
        self.allowed = allowed;
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
                refuse(
                    &mut stream,
                    RefusalCode::PermissionDenied,
                    "permission denied: only root, relayd's user and control_users may manage relayd",
                );
                continue;
            }
            let Some(i) = self.conns.iter().position(Option::is_none) else {
                refuse(
                    &mut stream,
                    RefusalCode::TooManyConnections,
                    &format!("too many management connections (at most {MAX_CONNECTIONS})"),
                );
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
fn refuse(stream: &mut mio::net::UnixStream, code: RefusalCode, msg: &str) {
    let _ = stream.write_all(&response_line(&Response::refused(code, msg)));
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
                self.output = response_line(&Response::refused(
                    RefusalCode::TooLarge,
                    format!("request longer than {MAX_REQUEST} bytes"),
                ));
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
        Err(e) => Response::refused(RefusalCode::BadRequest, format!("bad request: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::{request, Answer, Client, RefusalCode, MAX_CONNECTIONS, MAX_REQUEST};
    use std::io::{BufRead, Read};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

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
                            Request::Stats {} => Response::Ok(Answer::Removed(n)),
                            other => Response::refused(RefusalCode::Invalid, format!("{other:?}")),
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
        let first = c.removed(&Request::Stats {}).unwrap();
        for i in 1..=200 {
            assert_eq!(c.removed(&Request::Stats {}).unwrap(), first + i);
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
        assert!(lines[0].is_ok());
        let refusal = |r: &Response| match r {
            Response::Refused(r) => (r.code, r.message.clone()),
            Response::Ok(a) => panic!("refusal expected, got {a:?}"),
        };
        let (code, msg) = refusal(&lines[1]);
        assert!(msg.contains("bad request") && code == RefusalCode::BadRequest, "{:?}", lines[1]);
        assert_eq!(refusal(&lines[2]).1, "Blocklist");
        drop(r);
        // The old one-shot form: a request without a newline, then shutdown.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"{\"op\":\"stats\"}").unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let mut l = String::new();
        raw.read_to_string(&mut l).unwrap();
        assert!(serde_json::from_str::<Response>(&l).unwrap().is_ok(), "{l}");

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
        // Each held connection is answered once, so the server has accepted it.
        let held: Vec<Client> = (0..MAX_CONNECTIONS - 1)
            .map(|_| {
                let mut h = Client::connect(&path, Duration::from_secs(5)).unwrap();
                assert!(h.request(&Request::Stats {}).unwrap().is_ok());
                h
            })
            .collect();
        let mut over = Client::connect(&path, Duration::from_secs(5)).unwrap();
        let r = over.request(&Request::Stats {});
        assert!(
            r.as_ref().is_ok_and(|r| matches!(r, Response::Refused(r)
                if r.message.contains("too many") && r.code == RefusalCode::TooManyConnections)),
            "the 17th connection is refused: {r:?}"
        );
        drop(held);
        drop(c);
        // The server frees a slot when it sees the close: wait for that, with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match request(&path, &Request::Stats {}) {
                Ok(r) if r.is_ok() => break,
                r if std::time::Instant::now() >= deadline => panic!("slots are freed on close: {r:?}"),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }

        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
