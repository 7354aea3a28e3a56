//! A blocking HTTPS client for the relay-control API, signing every request with
//! TC3-HMAC-SHA256.
//!
//! Used by `relayctl` and the integration tests. Invariants:
//! - Every request is signed with [`crate::tc3::sign`] over exactly the bytes sent: the
//!   path and query are taken from the [`url::Url`] handed to the transport (so percent
//!   encoding cannot differ between what is signed and what is sent), the `Host` header is
//!   set explicitly to the endpoint's `host:port`, and `Content-Type` is always sent and
//!   signed. A fresh `X-TC-Timestamp` is taken per request, and a random [`NONCE_HEADER`] is
//!   signed too, so repeating a request within the same second is not taken for a replay.
//! - Trust is explicit: either a CA certificate file (webpki verification of name and chain)
//!   or a SHA-256 pin of the daemon's self-signed certificate (the pin is the authority; the
//!   name is not checked, as the certificate was generated for the node, not a DNS name).
//!   There is no "insecure" mode and no plaintext.
//! - Redirects are never followed (a signature is bound to its host and path), and response
//!   bodies are read up to [`MAX_RESPONSE_BYTES`].
//! - Any HTTP status is a [`Response`]; [`Response::api_error`] turns a non-2xx answer into
//!   the server's `{code, message, request_id}`.
//!
//! Credentials come from a TOML file ([`CredentialsFile`]) or the `EDGERELAY_*` environment
//! variables ([`Credentials::from_env`]).

use relay::time::unix_now;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keys::SecretKey;
use crate::tc3::{self, Tc3Error};

/// The service name in the credential scope unless configured otherwise.
pub const DEFAULT_SERVICE: &str = "trtc";
/// Environment variable naming the endpoint, e.g. `https://127.0.0.1:8443`.
pub const ENV_ENDPOINT: &str = "EDGERELAY_ENDPOINT";
/// Environment variable holding the SecretId.
pub const ENV_SECRET_ID: &str = "EDGERELAY_SECRET_ID";
/// Environment variable holding the SecretKey.
pub const ENV_SECRET_KEY: &str = "EDGERELAY_SECRET_KEY";
/// Environment variable naming a PEM file of trusted certificates.
pub const ENV_CA_CERT: &str = "EDGERELAY_CA_CERT";
/// Environment variable holding the daemon certificate's SHA-256 pin.
pub const ENV_CERT_SHA256: &str = "EDGERELAY_CERT_SHA256";
/// Environment variable overriding the credential scope's service.
pub const ENV_SERVICE: &str = "EDGERELAY_SERVICE";
/// The content type sent with every request.
pub const JSON: &str = "application/json";
/// A random value signed with every request, so that two identical requests within one
/// second (one timestamp) still differ and the server's replay cache does not refuse the
/// second. TC3 allows signing any header; the Tencent SDKs sign only the required pair.
/// (Not a Tencent header: edgerelay's own convention, shared with the test harness.)
pub const NONCE_HEADER: &str = "X-TC-Nonce";
/// The headers the client signs (sorted, lowercase, `;`-separated).
const SIGNED_HEADERS: &str = "content-type;host;x-tc-nonce";
/// Largest response body read; larger bodies are an error, not a truncation.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default whole-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a client could not be built or a request not be completed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The credentials file could not be read.
    #[error("reading credentials {path}: {source}")]
    ReadCredentials {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The credentials file is not valid TOML of the expected shape.
    #[error("parsing credentials {path}: {source}")]
    ParseCredentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: toml::de::Error,
    },
    /// A required setting is missing (from the file or the environment).
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// Both or neither of `ca_cert` and `cert_sha256` are set.
    #[error("set exactly one of ca_cert (EDGERELAY_CA_CERT) and cert_sha256 (EDGERELAY_CERT_SHA256)")]
    Trust,
    /// The endpoint is not `https://host[:port]` (an optional trailing `/` is allowed).
    #[error("bad endpoint {0:?}: expected https://host[:port]")]
    Endpoint(String),
    /// The pin is not a SHA-256 fingerprint (`sha256:AB:CD:...` or 64 hex digits).
    #[error("bad certificate pin {0:?}: expected sha256:AB:CD:... (32 bytes) or 64 hex digits")]
    Pin(String),
    /// The SecretId or SecretKey is empty or contains characters a header cannot carry.
    #[error("bad {0}: must be non-empty printable ASCII without spaces")]
    Secret(&'static str),
    /// The CA certificate file could not be read or holds no certificate.
    #[error("reading CA certificate {path}: {detail}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// A path segment or query could not form a URL.
    #[error("bad request path: {0}")]
    Path(String),
    /// The request could not be signed (a header is missing or repeated).
    #[error("signing: {0}")]
    Sign(#[from] Tc3Error),
    /// The system's random number generator failed (for the request nonce).
    #[error("random nonce: {0}")]
    Nonce(String),
    /// The server could not be reached, the TLS handshake failed (including a pin mismatch),
    /// or the connection broke.
    #[error("{endpoint} unreachable: {detail}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The transport's error, with its causes.
        detail: String,
    },
    /// The server's certificate is not the pinned one (nothing was sent).
    #[error("{endpoint}: server certificate {seen} does not match the pinned {pinned}")]
    PinMismatch {
        /// The endpoint.
        endpoint: String,
        /// The fingerprint the server presented.
        seen: String,
        /// The pinned fingerprint.
        pinned: String,
    },
    /// The response body could not be read, or exceeds [`MAX_RESPONSE_BYTES`].
    #[error("reading the response: {0}")]
    Body(String),
}

/// The credentials file (TOML). Exactly one of `ca_cert` and `cert_sha256` must be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    /// `https://host[:port]` of relay-control.
    pub endpoint: String,
    /// The API key's SecretId.
    pub secret_id: String,
    /// The API key's SecretKey.
    pub secret_key: SecretKey,
    /// PEM file of certificates to trust (a CA, or the daemon's own certificate).
    pub ca_cert: Option<PathBuf>,
    /// SHA-256 fingerprint of the daemon's certificate, as relay-control prints it.
    pub cert_sha256: Option<String>,
    /// Credential scope service; [`DEFAULT_SERVICE`] when absent.
    pub service: Option<String>,
}

/// How the server's certificate is trusted.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// Verify the chain against the certificates in this PEM file, and the name.
    CaCert(PathBuf),
    /// Accept exactly the certificate whose DER has this SHA-256.
    Pin([u8; 32]),
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaCert(p) => f.debug_tuple("CaCert").field(p).finish(),
            Self::Pin(pin) => f.debug_tuple("Pin").field(&format_fingerprint(pin)).finish(),
        }
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The SecretId.
    pub secret_id: String,
    /// The SecretKey.
    pub secret_key: SecretKey,
    /// Certificate trust.
    pub trust: Trust,
    /// The credential scope's service.
    pub service: String,
}

/// A parsed `https://host[:port]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The base URL, path `/`.
    url: url::Url,
    /// `host:port` as sent in the `Host` header (IPv6 in brackets).
    authority: String,
}

impl Endpoint {
    /// Parses `https://host[:port]`; the port defaults to 443.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Endpoint(text.to_owned());
        let url = url::Url::parse(text).map_err(|_| bad())?;
        let plain = url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none();
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            None => return Err(bad()),
        };
        if !plain {
            return Err(bad());
        }
        let port = url.port_or_known_default().ok_or_else(bad)?;
        Ok(Self { authority: format!("{host}:{port}"), url })
    }

    /// `host:port`, as sent in `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority)
    }
}

/// Parses a certificate pin: `sha256:AB:CD:...`, `AB:CD:...` or 64 hex digits, any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let t = text.trim();
    let t = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("SHA256:")).unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    let colons_ok = !t.contains(':') || t.split(':').all(|p| p.len() == 2);
    let mut out = [0; 32];
    match hex::decode_to_slice(&digits, &mut out) {
        Ok(()) if colons_ok => Ok(out),
        _ => Err(ClientError::Pin(text.to_owned())),
    }
}

/// Formats a fingerprint the way relay-control prints it: `sha256:AB:CD:...`.
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    let hex: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

fn check_secret(value: &str, what: &'static str) -> Result<(), ClientError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::Secret(what));
    }
    Ok(())
}

fn trust(ca_cert: Option<PathBuf>, pin: Option<&str>) -> Result<Trust, ClientError> {
    match (ca_cert, pin) {
        (Some(path), None) => Ok(Trust::CaCert(path)),
        (None, Some(pin)) => Ok(Trust::Pin(parse_fingerprint(pin)?)),
        _ => Err(ClientError::Trust),
    }
}

impl Credentials {
    /// Validates a parsed credentials file.
    pub fn from_file_contents(file: CredentialsFile) -> Result<Self, ClientError> {
        check_secret(&file.secret_id, "secret_id")?;
        check_secret(file.secret_key.expose(), "secret_key")?;
        Ok(Self {
            endpoint: Endpoint::parse(&file.endpoint)?,
            trust: trust(file.ca_cert, file.cert_sha256.as_deref())?,
            secret_id: file.secret_id,
            secret_key: file.secret_key,
            service: file.service.unwrap_or_else(|| DEFAULT_SERVICE.to_owned()),
        })
    }

    /// Reads and validates a credentials file.
    pub fn from_file(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ClientError::ReadCredentials { path: path.to_owned(), source })?;
        let file =
            toml::from_str(&text).map_err(|source| ClientError::ParseCredentials { path: path.to_owned(), source })?;
        Self::from_file_contents(file)
    }

    /// Credentials from `EDGERELAY_*` variables as returned by `var`; `Ok(None)` when
    /// [`ENV_ENDPOINT`] is unset (so a caller can fall back to a file).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ClientError> {
        let Some(endpoint) = var(ENV_ENDPOINT) else {
            return Ok(None);
        };
        let file = CredentialsFile {
            endpoint,
            secret_id: var(ENV_SECRET_ID).ok_or(ClientError::Missing(ENV_SECRET_ID))?,
            secret_key: SecretKey::from_exposed(var(ENV_SECRET_KEY).ok_or(ClientError::Missing(ENV_SECRET_KEY))?),
            ca_cert: var(ENV_CA_CERT).map(PathBuf::from),
            cert_sha256: var(ENV_CERT_SHA256),
            service: var(ENV_SERVICE),
        };
        Self::from_file_contents(file).map(Some)
    }

    /// Credentials from the process environment (see [`Credentials::from_vars`]).
    pub fn from_env() -> Result<Option<Self>, ClientError> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }
}

/// The workspace's one cert-pinning verifier: accepts exactly one certificate, by the
/// SHA-256 of its DER; signatures are still verified with the provider's algorithms, so the
/// peer must hold the pinned certificate's key. Every certificate presented is recorded
/// ([`PinVerifier::seen`]), so a client can report a mismatch plainly (through the
/// transport it arrives as a nested, debug-formatted rustls error) and a test can tell
/// which certificate a server serves.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
    seen: Arc<Mutex<Option<[u8; 32]>>>,
}

impl PinVerifier {
    /// Accepts only the certificate whose SHA-256 is `pin`.
    pub fn new(pin: [u8; 32], provider: Arc<CryptoProvider>) -> Self {
        Self { pin: Some(pin), provider, seen: Arc::default() }
    }

    /// Accepts any certificate and only records it: for test harnesses that watch which
    /// certificate a server presents (a reload). It authenticates nothing.
    pub fn recording_any(provider: Arc<CryptoProvider>) -> Self {
        Self { pin: None, provider, seen: Arc::default() }
    }

    /// The SHA-256 of the last certificate presented, pinned or not.
    pub fn seen(&self) -> Arc<Mutex<Option<[u8; 32]>>> {
        self.seen.clone()
    }
}

/// The server presented a certificate other than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("server certificate {seen} does not match the pinned {pinned}")]
struct PinMismatch {
    seen: String,
    pinned: String,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if let Ok(mut slot) = self.seen.lock() {
            *slot = Some(seen);
        }
        let Some(pin) = &self.pin else { return Ok(ServerCertVerified::assertion()) };
        if bool::from(seen.ct_eq(pin)) {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch { seen: format_fingerprint(&seen), pinned: format_fingerprint(pin) };
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration for `trust`, on the ring provider.
pub fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    tls_config_recording(trust, &Arc::default())
}

/// [`tls_config`], recording the certificate a pinned server presents in `seen`.
fn tls_config_recording(
    trust: &Trust,
    seen: &Arc<Mutex<Option<[u8; 32]>>>,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin: Some(*pin), provider, seen: seen.clone() }))
            .with_no_client_auth(),
        Trust::CaCert(path) => {
            let ca_err = |detail: String| ClientError::CaCert { path: path.clone(), detail };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))? {
                roots.add(cert.map_err(|e| ca_err(e.to_string()))?).map_err(|e| ca_err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_err("no certificate in the file".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// One request: method, path segments (percent-encoded when sent), query, body, headers.
#[derive(Debug, Clone)]
pub struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Vec<u8>,
    content_type: String,
    headers: Vec<(String, String)>,
}

impl Call {
    /// A request with no body to the path made of `segments` (each is one path segment, so
    /// `/` inside one is encoded, not a separator).
    pub fn new(method: Method, segments: &[&str]) -> Self {
        Self {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: Vec::new(),
            content_type: JSON.to_owned(),
            headers: Vec::new(),
        }
    }

    /// A request carrying `body` serialized as JSON: one of the [`crate::api`] request types
    /// (a `serde_json::Value` too, for tests that send what no type would).
    pub fn json(method: Method, segments: &[&str], body: &impl serde::Serialize) -> Self {
        let bytes = serde_json::to_vec(body).expect("API bodies serialize: string keys, no failing Serialize impls");
        Self::new(method, segments).raw_body(bytes, JSON)
    }

    /// Adds a query parameter (percent-encoded when sent).
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_owned(), value.to_string()));
        self
    }

    /// Sets the body and its content type verbatim (for tests of malformed requests).
    pub fn raw_body(mut self, body: Vec<u8>, content_type: &str) -> Self {
        self.body = body;
        self.content_type = content_type.to_owned();
        self
    }

    /// Adds a header (not signed; TC3 signs `content-type;host`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The path as it will be sent, e.g. `/v1/apps/1400000001`.
    pub fn path(&self, base: &Endpoint) -> Result<String, ClientError> {
        Ok(self.url(base)?.path().to_owned())
    }

    fn url(&self, base: &Endpoint) -> Result<url::Url, ClientError> {
        let mut url = base.url.clone();
        {
            let mut segs =
                url.path_segments_mut().map_err(|()| ClientError::Path("endpoint cannot be a base".into()))?;
            segs.clear();
            // `push("")` adds a trailing slash: `/` itself is the segment list `[""]`.
            segs.extend(&self.segments);
        }
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        Ok(url)
    }
}

/// An HTTP answer of any status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `X-Request-Id`, if sent.
    pub request_id: Option<String>,
    /// `Retry-After`, if sent.
    pub retry_after: Option<String>,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// A non-2xx answer, as the API describes it: `{code, message, request_id}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} ({request_id})")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The error code, e.g. `InvalidParameter` or `AuthFailure.SignatureFailure`.
    pub code: String,
    /// The server's explanation.
    pub message: String,
    /// The request id (from the body, else the `X-Request-Id` header, else `-`).
    pub request_id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    request_id: Option<String>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`null` for an empty body).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body)
    }

    /// The body as one of the [`crate::api`] response types.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `None` for a 2xx answer; otherwise the error the server described. A body that is not
    /// the documented error shape is reported verbatim (truncated) with code `HTTP <status>`.
    pub fn api_error(&self) -> Option<ApiError> {
        if self.is_success() {
            return None;
        }
        let header_id = self.request_id.clone().unwrap_or_else(|| "-".into());
        Some(match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => ApiError {
                status: self.status,
                code: e.code,
                message: e.message,
                request_id: e.request_id.unwrap_or(header_id),
            },
            Err(_) => {
                let text: String = self.text().chars().take(200).collect();
                ApiError {
                    status: self.status,
                    code: format!("HTTP {}", self.status),
                    message: text,
                    request_id: header_id,
                }
            }
        })
    }
}

/// A connected-on-demand, signing API client.
pub struct Client {
    agent: ureq::Agent,
    endpoint: Endpoint,
    secret_id: String,
    secret_key: SecretKey,
    service: String,
    trust: Trust,
    /// The certificate the server last presented (pinned trust only).
    seen: Arc<Mutex<Option<[u8; 32]>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("endpoint", &self.endpoint).field("secret_id", &self.secret_id).finish()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Client {
    /// A client for `creds` with the given whole-request timeout.
    pub fn new(creds: &Credentials, timeout: Duration) -> Result<Self, ClientError> {
        let seen = Arc::default();
        let tls = tls_config_recording(&creds.trust, &seen)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(timeout)
            .redirects(0)
            .user_agent(concat!("relayctl/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            agent,
            endpoint: creds.endpoint.clone(),
            secret_id: creds.secret_id.clone(),
            secret_key: creds.secret_key.clone(),
            service: creds.service.clone(),
            trust: creds.trust.clone(),
            seen,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Signs `call` at `timestamp`: the headers to send (`Host`, `Content-Type`,
    /// `X-TC-Timestamp`, `Authorization`).
    fn signed_headers(
        &self,
        call: &Call,
        url: &url::Url,
        timestamp: u64,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let mut nonce = [0; 8];
        getrandom::getrandom(&mut nonce).map_err(|e| ClientError::Nonce(e.to_string()))?;
        let nonce = hex::encode(nonce);
        let headers = [
            ("Content-Type", call.content_type.as_str()),
            ("Host", self.endpoint.authority()),
            (NONCE_HEADER, nonce.as_str()),
        ];
        let req = tc3::Request {
            method: call.method.as_str(),
            uri: url.path(),
            query: url.query().unwrap_or(""),
            headers: &headers,
            payload: &call.body,
        };
        let scope = tc3::Scope { timestamp, service: &self.service };
        let signed =
            tc3::sign_headers(&self.secret_id, self.secret_key.expose().as_bytes(), &scope, &req, SIGNED_HEADERS)?;
        Ok(vec![
            ("Host".into(), self.endpoint.authority().to_owned()),
            ("Content-Type".into(), call.content_type.clone()),
            (NONCE_HEADER.into(), nonce),
            ("X-TC-Timestamp".into(), timestamp.to_string()),
            ("Authorization".into(), signed.authorization),
        ])
    }

    /// Sends `call`, signed now. Any HTTP status is `Ok`; only transport failures are errors.
    pub fn send(&self, call: &Call) -> Result<Response, ClientError> {
        self.send_at(call, unix_now())
    }

    /// Sends `call` signed with `timestamp` (tests use this for clock-skew checks).
    pub fn send_at(&self, call: &Call, timestamp: u64) -> Result<Response, ClientError> {
        let url = call.url(&self.endpoint)?;
        let mut req = self.agent.request_url(call.method.as_str(), &url);
        for (name, value) in self.signed_headers(call, &url, timestamp)?.iter().chain(&call.headers) {
            req = req.set(name, value);
        }
        let result = if call.body.is_empty() && call.method != Method::Post && call.method != Method::Put {
            req.call()
        } else {
            req.send_bytes(&call.body)
        };
        let resp = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                let endpoint = self.endpoint.to_string();
                let seen = self.seen.lock().ok().and_then(|mut m| m.take());
                return Err(match (seen, &self.trust) {
                    (Some(seen), Trust::Pin(pin)) if seen != *pin => ClientError::PinMismatch {
                        endpoint,
                        seen: format_fingerprint(&seen),
                        pinned: format_fingerprint(pin),
                    },
                    _ => ClientError::Unreachable { endpoint, detail: error_chain(&t) },
                });
            }
        };
        let header = |name: &str| resp.header(name).map(str::to_owned);
        let (status, request_id, retry_after, content_type) =
            (resp.status(), header("x-request-id"), header("retry-after"), header("content-type"));
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Body(e.to_string()))?;
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(ClientError::Body(format!("larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        Ok(Response { status, request_id, retry_after, content_type, body })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::tc3::{ReplayCache, Verifier};

    const ID: &str = "AKIDtest0123456789";
    const KEY: &str = "test-secret-key-0123456789";

    fn self_signed() -> rcgen::CertifiedKey {
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap()
    }

    fn fingerprint(cert: &rcgen::CertifiedKey) -> [u8; 32] {
        Sha256::digest(cert.cert.der().as_ref()).into()
    }

    /// What the test server saw of one request.
    #[derive(Debug)]
    struct Seen {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> &str {
            let mut it = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
            let (Some((_, v)), None) = (it.next(), it.next()) else {
                panic!("header {name} not exactly once: {self:?}")
            };
            v
        }
    }

    /// A one-request HTTPS server on loopback answering `status` with `body`; the thread
    /// returns what it received, or `None` when the handshake or request failed.
    fn serve_once(
        cert: &rcgen::CertifiedKey,
        status: &'static str,
        body: &'static str,
    ) -> (u16, std::thread::JoinHandle<Option<Seen>>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pair.serialize_pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
            let mut line = String::new();
            tls.read_line(&mut line).ok()?;
            let mut parts = line.split_whitespace();
            let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                tls.read_line(&mut h).ok()?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':')?;
                headers.push((n.to_owned(), v.trim().to_owned()));
            }
            let len = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
            let mut request_body = vec![0; len];
            tls.read_exact(&mut request_body).ok()?;
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-request-id: req-1\r\n\
                 retry-after: 7\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let stream = tls.get_mut();
            stream.write_all(answer.as_bytes()).ok()?;
            stream.flush().ok()?;
            stream.conn.send_close_notify();
            let _ = stream.flush();
            Some(Seen { method, target, headers, body: request_body })
        });
        (port, handle)
    }

    fn creds(port: u16, trust: Trust) -> Credentials {
        Credentials {
            endpoint: Endpoint::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
            secret_id: ID.into(),
            secret_key: SecretKey::from_exposed(KEY.into()),
            trust,
            service: DEFAULT_SERVICE.into(),
        }
    }

    /// Verifies what the server saw with the daemon's verifier, as the daemon would.
    fn verify(seen: &Seen, now: u64) -> Result<tc3::Verified, Tc3Error> {
        let (path, query) = seen.target.split_once('?').unwrap_or((&seen.target, ""));
        let headers: Vec<(&str, &str)> = seen.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let req = tc3::Request { method: &seen.method, uri: path, query, headers: &headers, payload: &seen.body };
        Verifier::new(DEFAULT_SERVICE).verify(
            seen.header("authorization"),
            seen.header("x-tc-timestamp"),
            &req,
            now,
            &mut ReplayCache::new(8),
            |id| (id == ID).then_some(KEY),
        )
    }

    #[test]
    fn pinned_request_is_signed_over_what_is_sent() {
        let cert = self_signed();
        let (port, server) = serve_once(&cert, "201 Created", r#"{"ok":true}"#);
        let client = Client::new(&creds(port, Trust::Pin(fingerprint(&cert))), DEFAULT_TIMEOUT).unwrap();
        let call = Call::json(Method::Post, &["v1", "apps", "a b/c"], &serde_json::json!({"sdkappid": 1}))
            .query("since", "1 2&3")
            .header("X-TC-Action", "DismissRoom");
        let resp = client.send(&call).unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(resp.json().unwrap(), serde_json::json!({"ok": true}));
        assert_eq!(resp.request_id.as_deref(), Some("req-1"));
        assert_eq!(resp.retry_after.as_deref(), Some("7"));
        assert_eq!(resp.api_error(), None);

        let seen = server.join().unwrap().expect("request received");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.target, "/v1/apps/a%20b%2Fc?since=1+2%263");
        assert_eq!(seen.header("host"), format!("127.0.0.1:{port}"));
        assert_eq!(seen.header("content-type"), JSON);
        assert_eq!(seen.header("x-tc-action"), "DismissRoom");
        assert_eq!(seen.body, br#"{"sdkappid":1}"#);
        let v = verify(&seen, unix_now()).expect("the daemon's verifier accepts the request");
        assert_eq!(v.secret_id, ID);
    }

    #[test]
    fn get_without_body_is_signed_and_a_tampered_copy_is_not() {
        let cert = self_signed();
        let (port, server) = serve_once(&cert, "200 OK", "{}");
        let client = Client::new(&creds(port, Trust::Pin(fingerprint(&cert))), DEFAULT_TIMEOUT).unwrap();
        client.send(&Call::new(Method::Get, &["v1", "audit"]).query("limit", 5)).unwrap();
        let mut seen = server.join().unwrap().expect("request received");
        assert_eq!(seen.target, "/v1/audit?limit=5");
        assert!(seen.body.is_empty());
        verify(&seen, unix_now()).unwrap();
        seen.target = "/v1/audit?limit=6".into();
        assert_eq!(verify(&seen, unix_now()).unwrap_err(), Tc3Error::SignatureMismatch);
    }

    #[test]
    fn identical_requests_in_one_second_are_not_replays() {
        let client = Client::new(&creds(8443, Trust::Pin([0; 32])), DEFAULT_TIMEOUT).unwrap();
        let call = Call::new(Method::Get, &["v1", "apps"]);
        let url = call.url(client.endpoint()).unwrap();
        let mut cache = ReplayCache::new(8);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let headers = client.signed_headers(&call, &url, 1_700_000_000).unwrap();
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let value = |name: &str| pairs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).unwrap().1;
            let req = tc3::Request { method: "GET", uri: "/v1/apps", query: "", headers: &pairs, payload: b"" };
            Verifier::new(DEFAULT_SERVICE)
                .verify(value("authorization"), value("x-tc-timestamp"), &req, 1_700_000_000, &mut cache, |id| {
                    (id == ID).then_some(KEY)
                })
                .expect("the second identical request is not a replay");
            seen.push(value("authorization").to_owned());
        }
        assert_ne!(seen[0], seen[1]);
    }

    #[test]
    fn pin_mismatch_is_refused_before_anything_is_sent() {
        let cert = self_signed();
        let other = self_signed();
        let (port, server) = serve_once(&cert, "200 OK", "{}");
        let client = Client::new(&creds(port, Trust::Pin(fingerprint(&other))), DEFAULT_TIMEOUT).unwrap();
        let err = client.send(&Call::new(Method::Get, &["v1", "node"])).unwrap_err();
        let ClientError::PinMismatch { seen, pinned, .. } = &err else { panic!("{err:?}") };
        assert_eq!(seen, &format_fingerprint(&fingerprint(&cert)));
        assert_eq!(pinned, &format_fingerprint(&fingerprint(&other)));
        assert!(err.to_string().contains("does not match the pinned"), "{err}");
        assert!(server.join().unwrap().is_none(), "the server must not have read a request");
    }

    #[test]
    fn ca_cert_file_verifies_chain_and_name() {
        let cert = self_signed();
        let dir = std::env::temp_dir().join(format!("relayctl-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.cert.pem()).unwrap();

        let (port, server) =
            serve_once(&cert, "404 Not Found", r#"{"code":"ResourceNotFound","message":"no app 7","request_id":"r9"}"#);
        let client = Client::new(&creds(port, Trust::CaCert(pem.clone())), DEFAULT_TIMEOUT).unwrap();
        let resp = client.send(&Call::new(Method::Get, &["v1", "apps", "7"])).unwrap();
        let e = resp.api_error().unwrap();
        assert_eq!(
            (e.status, e.code.as_str(), e.message.as_str(), e.request_id.as_str()),
            (404, "ResourceNotFound", "no app 7", "r9")
        );
        assert_eq!(e.to_string(), "ResourceNotFound: no app 7 (r9)");
        server.join().unwrap().expect("request received");

        // Another certificate in the file: the chain does not verify.
        let other = self_signed();
        std::fs::write(&pem, other.cert.pem()).unwrap();
        let (port, server) = serve_once(&cert, "200 OK", "{}");
        let client = Client::new(&creds(port, Trust::CaCert(pem.clone())), DEFAULT_TIMEOUT).unwrap();
        let err = client.send(&Call::new(Method::Get, &["v1", "node"])).unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert!(server.join().unwrap().is_none());

        // The right certificate for another name: the name check refuses it.
        let misnamed = rcgen::generate_simple_self_signed(vec!["relay.example".into()]).unwrap();
        std::fs::write(&pem, misnamed.cert.pem()).unwrap();
        let (port, server) = serve_once(&misnamed, "200 OK", "{}");
        let client = Client::new(&creds(port, Trust::CaCert(pem.clone())), DEFAULT_TIMEOUT).unwrap();
        let err = client.send(&Call::new(Method::Get, &["v1", "node"])).unwrap_err();
        assert!(
            matches!(&err, ClientError::Unreachable { detail, .. } if detail.contains("not valid for name")),
            "{err:?}"
        );
        assert!(server.join().unwrap().is_none());

        std::fs::write(&pem, "not a certificate").unwrap();
        let err = Client::new(&creds(1, Trust::CaCert(pem)), DEFAULT_TIMEOUT).map(|_| ());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(err, Err(ClientError::CaCert { .. })), "{err:?}");
    }

    #[test]
    fn unreachable_endpoint() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = Client::new(&creds(port, Trust::Pin([0; 32])), DEFAULT_TIMEOUT).unwrap();
        let err = client.send(&Call::new(Method::Get, &["v1", "node"])).unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    }

    #[test]
    fn non_json_error_body_is_reported_verbatim() {
        let r = Response {
            status: 502,
            request_id: None,
            retry_after: None,
            content_type: None,
            body: b"bad gateway".to_vec(),
        };
        let e = r.api_error().unwrap();
        assert_eq!((e.code.as_str(), e.message.as_str(), e.request_id.as_str()), ("HTTP 502", "bad gateway", "-"));
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(e.authority(), "127.0.0.1:8443");
        assert_eq!(Endpoint::parse("https://relay.example/").unwrap().authority(), "relay.example:443");
        assert_eq!(Endpoint::parse("https://[::1]:9443").unwrap().authority(), "[::1]:9443");
        assert_eq!(e.to_string(), "https://127.0.0.1:8443");
        for bad in ["http://127.0.0.1:8443", "https://u:p@h", "https://h/v1", "https://h?x=1", "127.0.0.1:8443", ""] {
            assert!(matches!(Endpoint::parse(bad), Err(ClientError::Endpoint(_))), "{bad}");
        }
    }

    #[test]
    fn fingerprints() {
        let fp: [u8; 32] = core::array::from_fn(|i| (i * 7) as u8);
        let text = format_fingerprint(&fp);
        assert!(text.starts_with("sha256:00:07:0E:"), "{text}");
        assert_eq!(parse_fingerprint(&text).unwrap(), fp);
        assert_eq!(parse_fingerprint(&text.to_lowercase()).unwrap(), fp);
        assert_eq!(parse_fingerprint(&hex::encode(fp)).unwrap(), fp);
        for bad in ["", "sha256:", &text[..text.len() - 3], &format!("{text}:00"), "sha256:0:07", &"g".repeat(64)] {
            assert!(matches!(parse_fingerprint(bad), Err(ClientError::Pin(_))), "{bad}");
        }
    }

    #[test]
    fn credentials_from_file_and_env() {
        let file: CredentialsFile = toml::from_str(
            "endpoint = \"https://127.0.0.1:8443\"\nsecret_id = \"AKIDx\"\nsecret_key = \"k\"\n\
             cert_sha256 = \"00000000000000000000000000000000000000000000000000000000000000ff\"\n",
        )
        .unwrap();
        let c = Credentials::from_file_contents(file).unwrap();
        assert_eq!(c.service, "trtc");
        let mut pin = [0; 32];
        pin[31] = 0xff;
        assert_eq!(c.trust, Trust::Pin(pin));
        assert!(!format!("{c:?}").contains("secret_key: \"k\""), "the key is redacted: {c:?}");

        let unknown =
            toml::from_str::<CredentialsFile>("endpoint=\"https://h\"\nsecret_id=\"a\"\nsecret_key=\"b\"\nsecrt=1\n");
        assert!(unknown.is_err());

        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert!(Credentials::from_vars(vars(&[])).unwrap().is_none());
        let c = Credentials::from_vars(vars(&[
            (ENV_ENDPOINT, "https://localhost:9000"),
            (ENV_SECRET_ID, "AKIDy"),
            (ENV_SECRET_KEY, "s"),
            (ENV_CA_CERT, "/etc/ca.pem"),
            (ENV_SERVICE, "edge"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.endpoint.authority(), c.secret_id.as_str(), c.service.as_str()),
            ("localhost:9000", "AKIDy", "edge")
        );
        assert_eq!(c.trust, Trust::CaCert("/etc/ca.pem".into()));

        let missing = Credentials::from_vars(vars(&[(ENV_ENDPOINT, "https://h"), (ENV_SECRET_ID, "a")]));
        assert!(matches!(missing, Err(ClientError::Missing(ENV_SECRET_KEY))), "{missing:?}");
        let both = Credentials::from_vars(vars(&[
            (ENV_ENDPOINT, "https://h"),
            (ENV_SECRET_ID, "a"),
            (ENV_SECRET_KEY, "b"),
            (ENV_CA_CERT, "/x"),
            (ENV_CERT_SHA256, "00"),
        ]));
        assert!(matches!(both, Err(ClientError::Trust)), "{both:?}");
        let neither =
            Credentials::from_vars(vars(&[(ENV_ENDPOINT, "https://h"), (ENV_SECRET_ID, "a"), (ENV_SECRET_KEY, "b")]));
        assert!(matches!(neither, Err(ClientError::Trust)), "{neither:?}");
        let spaced = Credentials::from_vars(vars(&[
            (ENV_ENDPOINT, "https://h"),
            (ENV_SECRET_ID, "a b"),
            (ENV_SECRET_KEY, "b"),
            (ENV_CA_CERT, "/x"),
        ]));
        assert!(matches!(spaced, Err(ClientError::Secret("secret_id"))), "{spaced:?}");
    }
}
