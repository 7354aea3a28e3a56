//! Test harness for `relay-control`: start the real daemon binary on loopback with a temp
//! state dir, and talk to it over TLS with a small TC3-signing HTTP/1.1 client.
//!
//! - [`ControlDaemon::start`] writes a config (`listen = "127.0.0.1:0"`, a temp `state_dir`,
//!   plus the caller's extra TOML), runs `relay-control bootstrap-admin` (admin credentials in
//!   [`ControlDaemon::admin`]), then `relay-control serve`, and reads the bound address and
//!   certificate fingerprint from its stdout.
//! - [`ApiClient`] pins that fingerprint (no CA), signs every request with TC3-HMAC-SHA256
//!   (`content-type;host`), and can also send unsigned, mis-signed or replayed requests
//!   ([`Call`]) for the negative tests.
//!
//! Everything is cleaned up on `Drop` (the daemon is killed, the state dir removed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::client::{format_fingerprint, parse_fingerprint, PinVerifier};
use control::tc3;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::{bin, unix_now, TempDir};

/// An API key's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The SecretId.
    pub secret_id: String,
    /// The SecretKey.
    pub secret_key: String,
}

impl Credentials {
    /// Credentials from a `POST /v1/keys` (or rotate) answer.
    pub fn from_json(v: &Value) -> Self {
        Credentials {
            secret_id: v["secret_id"].as_str().expect("secret_id").to_owned(),
            secret_key: v["secret_key"].as_str().expect("secret_key").to_owned(),
        }
    }
}

/// A running `relay-control serve`, killed on drop.
pub struct ControlDaemon {
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
    /// The HTTPS address it serves.
    pub addr: SocketAddr,
    /// The fingerprint it printed (`sha256:AB:...`).
    pub fingerprint: String,
    /// The bootstrap admin key.
    pub admin: Credentials,
    /// The config file.
    pub config: PathBuf,
    /// Directory holding the config, the state dir (`state/`) and the log (`control.log`).
    pub dir: Arc<TempDir>,
}

impl ControlDaemon {
    /// Starts a daemon with a fresh state dir; `extra` is appended to the config.
    pub fn start(extra: &str) -> Self {
        let dir = Arc::new(TempDir::new("control").expect("create a temp dir"));
        let config = dir.join("control.toml");
        let cfg = format!("listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n{extra}\n", dir.join("state").display());
        std::fs::write(&config, cfg).expect("write control config");
        let out = Command::new(bin("relay-control"))
            .args(["bootstrap-admin", "--config"])
            .arg(&config)
            .output()
            .expect("run relay-control bootstrap-admin");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "bootstrap-admin failed: {text} {}", String::from_utf8_lossy(&out.stderr));
        let field = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).expect("bootstrap output")
        };
        let admin = Credentials { secret_id: field("SecretId:"), secret_key: field("SecretKey:") };
        Self::serve(dir, config, admin)
    }

    /// Starts a daemon with a fresh state dir that takes its keys from elsewhere (a cluster
    /// node joining; `admin` was bootstrapped on another node).
    pub fn start_joining(extra: &str, admin: Credentials) -> Self {
        let dir = Arc::new(TempDir::new("control").expect("create a temp dir"));
        let config = dir.join("control.toml");
        let cfg = format!("listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n{extra}\n", dir.join("state").display());
        std::fs::write(&config, cfg).expect("write control config");
        Self::serve(dir, config, admin)
    }

    /// Starts `relay-control serve` on an existing config and state (a restart).
    pub fn serve(dir: Arc<TempDir>, config: PathBuf, admin: Credentials) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("control.log"))
            .expect("open control log");
        let mut child = Command::new(bin("relay-control"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "control=debug,relay_control=debug,info")
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn relay-control");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut d = ControlDaemon {
            child: Some(child),
            stdout: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            fingerprint: String::new(),
            admin,
            config,
            dir,
        };
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("relay-control exited before serving: {}", d.log());
            }
            if let Some(f) = line.trim().strip_prefix("relay-control: certificate ") {
                d.fingerprint = f.to_owned();
            }
            if let Some(a) = line.trim().strip_prefix("relay-control: listening on https://") {
                d.addr = a.parse().expect("listen address");
                break;
            }
        }
        assert!(d.addr.port() != 0 && !d.fingerprint.is_empty(), "relay-control did not come up: {}", d.log());
        d.stdout = Some(stdout);
        d
    }

    /// Stops this daemon (SIGTERM, then SIGKILL) and starts a new one on the same state.
    pub fn restart(mut self) -> Self {
        self.stop();
        let (dir, config, admin) = (self.dir.clone(), self.config.clone(), self.admin.clone());
        drop(self);
        Self::serve(dir, config, admin)
    }

    /// SIGKILLs the daemon (a crash) and starts a new one on the same state.
    pub fn crash_and_restart(mut self) -> Self {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (dir, config, admin) = (self.dir.clone(), self.config.clone(), self.admin.clone());
        drop(self);
        Self::serve(dir, config, admin)
    }

    /// SIGTERM, and a wait of up to 5 s; then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = relay::io::sys::terminate(c.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Reads the next stdout line (e.g. `relay-control: certificate ...` after a reload),
    /// waiting up to `timeout`. `None` when nothing came.
    pub fn next_stdout_line(&mut self, timeout: Duration) -> Option<String> {
        let mut stdout = self.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).unwrap_or(0);
            let _ = tx.send((stdout, (n > 0).then_some(line)));
        });
        match rx.recv_timeout(timeout) {
            Ok((s, line)) => {
                self.stdout = Some(s);
                line.map(|l| l.trim().to_owned())
            }
            Err(_) => None,
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default()
    }

    /// A client signing with `creds`, pinned to this daemon's certificate.
    pub fn client(&self, creds: &Credentials) -> ApiClient {
        ApiClient::new(self.addr, Some(self.fingerprint.clone()), creds.clone())
    }

    /// A client signing with the bootstrap admin key.
    pub fn admin_client(&self) -> ApiClient {
        self.client(&self.admin)
    }
}

impl Drop for ControlDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Fingerprint of the certificate the server presented.
    pub cert_sha256: String,
}

impl ApiResponse {
    /// The body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The JSON error `code` (REST form).
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// How a [`Call`] is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// Properly, at the current time.
    Now,
    /// Properly, with this `X-TC-Timestamp`.
    At(u64),
    /// No `Authorization` and no `X-TC-Timestamp`.
    None,
    /// With this exact `Authorization` value and timestamp (e.g. a replay).
    Raw(String, u64),
}

/// One request, with every knob the negative tests need.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query string without `?` (empty for none).
    pub query: String,
    /// Body bytes.
    pub body: Vec<u8>,
    /// `Content-Type` (signed).
    pub content_type: String,
    /// Extra headers (not signed).
    pub headers: Vec<(String, String)>,
    /// How to sign.
    pub signing: Signing,
    /// The `X-TC-Nonce` to send (a fresh one when `None`); set it to replay a request.
    pub nonce: Option<String>,
}

impl Call {
    /// A JSON call (`body` may be `Value::Null` for none).
    pub fn json(method: &str, path_and_query: &str, body: &Value) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
        Call {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body,
            content_type: "application/json".into(),
            headers: Vec::new(),
            signing: Signing::Now,
            nonce: None,
        }
    }
}

/// A signed response plus what was sent, so a test can replay it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The answer.
    pub response: ApiResponse,
    /// The `Authorization` header sent, if any.
    pub authorization: Option<String>,
    /// The `X-TC-Timestamp` sent, if any.
    pub timestamp: Option<u64>,
    /// The `X-TC-Nonce` sent.
    pub nonce: String,
}

static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A TC3-signing HTTPS client for the daemon. It signs `content-type;host;x-tc-nonce`, the
/// nonce differing per request.
#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    host: String,
    pin: Option<String>,
    /// The key it signs with.
    pub creds: Credentials,
    /// The TC3 service (the daemon's default `trtc`).
    pub service: String,
}

impl ApiClient {
    /// A client for `addr` pinned to `pin` (any certificate when `None`).
    pub fn new(addr: SocketAddr, pin: Option<String>, creds: Credentials) -> Self {
        ApiClient { addr, host: format!("127.0.0.1:{}", addr.port()), pin, creds, service: "trtc".into() }
    }

    /// The same client (same `Host` header, same key) aimed at another daemon: what an
    /// attacker replaying a captured request to another node sends.
    pub fn redirected(&self, addr: SocketAddr, pin: Option<String>) -> Self {
        ApiClient { addr, pin, ..self.clone() }
    }

    /// The `Host` header value.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// `method path[?query]` with a JSON body (`Value::Null` for none), signed now.
    pub fn call(&self, method: &str, path_and_query: &str, body: &Value) -> ApiResponse {
        self.send(&Call::json(method, path_and_query, body)).response
    }

    /// `GET` and expect 200; returns the JSON.
    pub fn get_ok(&self, path_and_query: &str) -> Value {
        let r = self.call("GET", path_and_query, &Value::Null);
        assert_eq!(r.status, 200, "GET {path_and_query}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// Sends a [`Call`].
    pub fn send(&self, call: &Call) -> Sent {
        let host = self.host();
        // Signed, so two identical requests in one second are not taken for a replay.
        let nonce = call
            .nonce
            .clone()
            .unwrap_or_else(|| format!("{:016x}", NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let (authorization, timestamp) = match &call.signing {
            Signing::None => (None, None),
            Signing::Raw(a, ts) => (Some(a.clone()), Some(*ts)),
            Signing::Now | Signing::At(_) => {
                let ts = if let Signing::At(t) = call.signing { t } else { unix_now() };
                let headers = [
                    ("content-type", call.content_type.as_str()),
                    ("host", host.as_str()),
                    ("x-tc-nonce", nonce.as_str()),
                ];
                let req = tc3::Request {
                    method: &call.method,
                    uri: &call.path,
                    query: &call.query,
                    headers: &headers,
                    payload: &call.body,
                };
                let scope = tc3::Scope { timestamp: ts, service: &self.service };
                let (id, key) = (&self.creds.secret_id, self.creds.secret_key.as_bytes());
                let signed = tc3::sign_headers(id, key, &scope, &req, "content-type;host;x-tc-nonce").expect("sign");
                (Some(signed.authorization), Some(ts))
            }
        };
        let mut head = format!(
            "{} {}{}{} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            call.method,
            call.path,
            if call.query.is_empty() { "" } else { "?" },
            call.query,
            call.content_type,
            call.body.len()
        );
        if let Some(a) = &authorization {
            head.push_str(&format!("Authorization: {a}\r\n"));
        }
        if let Some(t) = timestamp {
            head.push_str(&format!("X-TC-Timestamp: {t}\r\nX-TC-Nonce: {nonce}\r\n"));
        }
        for (n, v) in &call.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&call.body);
        let response = self.exchange(&raw).unwrap_or_else(|e| panic!("{} {}: {e}", call.method, call.path));
        Sent { response, authorization, timestamp, nonce }
    }

    /// Sends raw bytes over TLS and parses one HTTP response.
    pub fn exchange(&self, raw: &[u8]) -> std::io::Result<ApiResponse> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = match &self.pin {
            Some(pin) => {
                let pin = parse_fingerprint(pin).map_err(std::io::Error::other)?;
                PinVerifier::new(pin, provider.clone())
            }
            None => PinVerifier::recording_any(provider.clone()),
        };
        let seen = verifier.seen();
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("server name");
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(self.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(raw)?;
        tls.flush()?;
        let mut buf = Vec::new();
        match tls.read_to_end(&mut buf) {
            Ok(_) => {}
            // The server may close without close_notify after a complete response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
            Err(e) => return Err(e),
        }
        let mut r = parse_response(&buf)?;
        r.cert_sha256 = seen.lock().unwrap().as_ref().map(format_fingerprint).unwrap_or_default();
        Ok(r)
    }
}

fn parse_response(buf: &[u8]) -> std::io::Result<ApiResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let nl = rest[at..].windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("chunk size"))?;
            let size_text = std::str::from_utf8(&rest[at..at + nl]).map_err(|_| bad("chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            at += nl + 2;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(at..at + size).ok_or_else(|| bad("short chunk"))?);
            at += size + 2;
        }
        out
    } else {
        match headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok()) {
            Some(n) => rest.get(..n).ok_or_else(|| bad("short body"))?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(ApiResponse { status, headers, body, cert_sha256: String::new() })
}
