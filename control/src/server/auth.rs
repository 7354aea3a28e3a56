//! The gate every request passes: request id, rate limits, body bound, TC3 authentication,
//! roles, content type, then (after the handler) audit and error rendering.
//!
//! Order, and why:
//! 1. **Per-source rate limit** first, before any work or storage: a flood from one address
//!    costs a hash lookup. Refusals here are counted but not audited, so a flood cannot grow
//!    the audit log; everything past this step that mutates is audited.
//! 2. **Body bound** (64 KiB, `413`) before reading more: the signature covers the body, so it
//!    must be read, and never without a bound.
//! 3. **TC3-HMAC-SHA256** (`401 AuthFailure.<Reason>`): `control::tc3` does the checks; the key
//!    must be usable now (not revoked, not past its rotation overlap), looked up in the store
//!    on every request, so a revocation applies to the very next request. `/metrics` also
//!    takes `Authorization: Bearer <metrics_token>` (compared in constant time).
//! 4. **Per-SecretId rate limit** (`429`).
//! 5. **Role**: auditors may only read; `/v1/keys` mutations need admin (`403`).
//! 6. **Content type**: bodies must be `application/json` (`415`).
//!
//! After the handler: every mutating call (any method but GET/HEAD) that got past step 1 is
//! audited with who (SecretId or `anonymous`), what (`METHOD path` and a detail), source and
//! outcome. A successful change whose store transaction already wrote its entry is marked
//! [`AuditedInStore`] and not written twice.
//!
//! Every refused call is logged once, as `API call refused`, with the structured fields
//! `code`, `status`, `source`, `via`, `who`, `request_id`, and `app` and `room` when the
//! path (`/v1/apps/{app}/rooms/{room}`) or a Tencent-style body (`SdkAppId`, `RoomId`) names
//! them: never a header, a signature, a token or a body (429s go to debug, so a flood cannot
//! flood the log).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use subtle::ConstantTimeEq;

use super::errors::{ApiError, ErrorMark};
use super::Server;
use crate::api;
use crate::keys::{Action, Role};
use crate::store::{Actor, Outcome};
use crate::tc3::{self, Tc3Error};

/// Largest request body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest path quoted in an audit entry.
const MAX_AUDIT_PATH: usize = 160;

/// The peer address of a connection, inserted by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What the gate learned about a request; handlers read it as an extension.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `X-Request-Id` of the response.
    pub request_id: String,
    /// The SecretId, or `anonymous` before authentication.
    pub who: String,
    /// The caller's role once authenticated.
    pub role: Option<Role>,
    /// The caller's address.
    pub source_ip: IpAddr,
    /// `METHOD path`, for audit entries.
    pub via: String,
    /// Unix seconds at arrival.
    pub now: u64,
    /// The app the call names (path or body), for the log.
    pub app: Option<String>,
    /// The room the call names (path or body), for the log.
    pub room: Option<String>,
}

/// Longest app or room quoted in a log line.
const MAX_LOGGED_ID: usize = 64;

/// The app and room a REST path names: `/v1/apps/{app}[/rooms/{room}...]`.
fn subject_of_path(path: &str) -> (Option<String>, Option<String>) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let after = |key: &str| segs.windows(2).find(|w| w[0] == key).map(|w| bounded(w[1], MAX_LOGGED_ID).to_owned());
    match segs.as_slice() {
        ["v1", "apps", ..] => (after("apps"), after("rooms")),
        _ => (None, None),
    }
}

/// The app and room a JSON body names (`SdkAppId`/`sdkappid`, `RoomId`/`room`): only these
/// two values are read, never anything else of the body.
fn subject_of_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let text = |keys: &[&str]| {
        keys.iter().find_map(|k| match m.get(*k)? {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(bounded(s, MAX_LOGGED_ID).to_owned()),
            _ => None,
        })
    };
    (text(&["SdkAppId", "sdkappid"]), text(&["RoomId", "room"]))
}

impl Ctx {
    /// The store actor for this request.
    pub fn actor(&self) -> Actor<'_> {
        Actor { who: &self.who, source_ip: self.source_ip, now: self.now, via: &self.via }
    }
}

/// Response marker: the store wrote this change's audit entry in its own transaction.
#[derive(Debug, Clone, Copy)]
pub struct AuditedInStore;

/// Response marker: the detail to audit for a successful change the store did not record
/// (relayd actions, UserSig minting).
#[derive(Debug, Clone)]
pub struct AuditNote(pub String);

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// Token buckets per source address and per SecretId.
pub struct RateLimits {
    per_ip: Keyed<IpAddr>,
    per_key: Keyed<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

fn quota(rate: u32, burst: u32) -> Quota {
    let one = NonZeroU32::MIN;
    Quota::per_second(NonZeroU32::new(rate).unwrap_or(one)).allow_burst(NonZeroU32::new(burst).unwrap_or(one))
}

impl RateLimits {
    /// Buckets as configured.
    pub fn new(cfg: &super::config::RateLimits) -> Self {
        RateLimits {
            per_ip: RateLimiter::keyed(quota(cfg.per_ip_per_sec, cfg.per_ip_burst)),
            per_key: RateLimiter::keyed(quota(cfg.per_key_per_sec, cfg.per_key_burst)),
            clock: DefaultClock::default(),
        }
    }

    fn retry_after(&self, until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
        let wait: Duration = until.wait_time_from(self.clock.now());
        (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
    }

    /// Takes a token for `ip`, or the seconds to wait.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), u64> {
        self.per_ip.check_key(&ip).map_err(|u| self.retry_after(u))
    }

    /// Takes a token for `secret_id`, or the seconds to wait.
    pub fn check_key(&self, secret_id: &str) -> Result<(), u64> {
        self.per_key.check_key(&secret_id.to_owned()).map_err(|u| self.retry_after(u))
    }

    /// Forgets buckets that are full again, bounding memory.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_key.retain_recent();
        self.per_key.shrink_to_fit();
    }
}

fn new_request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        b = n.to_le_bytes();
    }
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The `AuthFailure.<Reason>` of a TC3 rejection.
pub fn auth_reason(e: &Tc3Error) -> &'static str {
    match e {
        Tc3Error::ClockSkew => "SignatureExpire",
        Tc3Error::UnknownSecretId => "SecretIdNotFound",
        Tc3Error::SignatureMismatch => "SignatureFailure",
        Tc3Error::Replayed => "Replayed",
        Tc3Error::ReplayCacheFull => "ReplayCacheFull",
        Tc3Error::ScopeDate | Tc3Error::ScopeService => "InvalidScope",
        Tc3Error::AuthorizationTooLong
        | Tc3Error::WrongAlgorithm
        | Tc3Error::MalformedFields
        | Tc3Error::MalformedCredential
        | Tc3Error::MalformedSignedHeaders
        | Tc3Error::MalformedSignature
        | Tc3Error::MalformedTimestamp
        | Tc3Error::RequiredHeaderUnsigned
        | Tc3Error::SignedHeaderNotInRequest => "InvalidAuthorization",
    }
}

fn bounded(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn is_json(ct: Option<&HeaderValue>) -> bool {
    ct.and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The gate middleware; see the module docs.
pub async fn gate(State(st): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let source_ip = req.extensions().get::<Peer>().map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut ctx = Ctx {
        request_id: new_request_id(),
        who: "anonymous".into(),
        role: None,
        source_ip,
        via: format!("{method} {}", bounded(&path, MAX_AUDIT_PATH)),
        now: super::unix_now(),
        app: None,
        room: None,
    };
    (ctx.app, ctx.room) = subject_of_path(&path);
    let mutating = !matches!(method, Method::GET | Method::HEAD);
    let envelope = path == "/" && method == Method::POST;
    let (resp, audited) = match admit(&st, req, &mut ctx).await {
        Ok(req) => (next.run(req).await, true),
        Err(e) => {
            let audit = e.status != StatusCode::TOO_MANY_REQUESTS;
            (e.into_response(), audit)
        }
    };
    finish(&st, &ctx, mutating && audited, envelope, resp).await
}

async fn admit(st: &Arc<Server>, req: Request, ctx: &mut Ctx) -> Result<Request, ApiError> {
    st.limits.check_ip(ctx.source_ip).map_err(ApiError::rate_limited)?;
    let (mut parts, body) = req.into_parts();
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestSizeLimitExceeded", "body larger than 64 KiB");
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            ApiError::invalid(format!("reading the body: {e}"))
        }
    })?;
    if ctx.app.is_none() {
        (ctx.app, ctx.room) = subject_of_body(&bytes);
    }

    let auth_value = parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    if let (Some(bearer), "/metrics") = (auth_value.and_then(|v| v.strip_prefix("Bearer ")), parts.uri.path()) {
        let ok = st.cfg.metrics_token.as_deref().is_some_and(|t| bool::from(t.as_bytes().ct_eq(bearer.as_bytes())));
        if !ok {
            st.counters.count_auth_failure("InvalidToken");
            return Err(ApiError::auth("InvalidToken", "metrics bearer token not accepted"));
        }
        ctx.who = "metrics-token".into();
        ctx.role = Some(Role::Auditor);
    } else {
        let (secret_id, role) = authenticate(st, &parts, &bytes, ctx.now).inspect_err(|e| {
            st.counters.count_auth_failure(e.code.trim_start_matches("AuthFailure."));
        })?;
        claim_cluster_wide(st, auth_value.unwrap_or("")).await.inspect_err(|e| {
            st.counters.count_auth_failure(e.code.trim_start_matches("AuthFailure."));
        })?;
        ctx.who = secret_id;
        ctx.role = Some(role);
        st.limits.check_key(&ctx.who).map_err(ApiError::rate_limited)?;
    }

    let role = ctx.role.unwrap_or(Role::Auditor);
    let mutating = !matches!(parts.method, Method::GET | Method::HEAD);
    if mutating && !role.may(Action::Mutate) {
        return Err(ApiError::forbidden("this key's role may only read"));
    }
    if mutating && parts.uri.path().starts_with("/v1/keys") && !role.manages_keys() {
        return Err(ApiError::forbidden("only admin keys manage API keys"));
    }
    let has_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if has_body && !is_json(parts.headers.get(header::CONTENT_TYPE)) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "content-type must be application/json",
        ));
    }
    parts.extensions.insert(ctx.clone());
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn authenticate(
    st: &Server,
    parts: &axum::http::request::Parts,
    body: &[u8],
    now: u64,
) -> Result<(String, Role), ApiError> {
    let header_str = |name: &str| parts.headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let Some(authorization) = header_str("authorization") else {
        return Err(ApiError::auth("InvalidAuthorization", "missing Authorization header"));
    };
    let Some(timestamp) = header_str("x-tc-timestamp") else {
        return Err(ApiError::auth("InvalidAuthorization", "missing X-TC-Timestamp header"));
    };
    let headers: Vec<(&str, &str)> =
        parts.headers.iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))).collect();
    let req = tc3::Request {
        method: parts.method.as_str(),
        uri: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        payload: body,
    };
    let mut found = None;
    let verified = {
        let mut replay = st.replay.lock().unwrap_or_else(|p| p.into_inner());
        st.verifier.verify(authorization, timestamp, &req, now, &mut replay, |id| {
            found = st.store.usable_key(id, now).ok().flatten();
            found.as_ref().map(|k| k.secret_key.expose().as_bytes().to_vec())
        })
    };
    match (verified, found) {
        (Ok(v), Some(key)) => Ok((v.secret_id, key.role)),
        (Ok(_), None) => Err(ApiError::auth("SecretIdNotFound", "unknown secret id")),
        (Err(e), _) => Err(ApiError::auth(auth_reason(&e), e.to_string())),
    }
}

/// In a cluster, a signature this node accepted must not have been accepted by any other
/// node: claimed once in Redis for twice the skew window. With Redis unreachable the node's
/// own cache is the only check (counted: `replay_local_only`), and no write can pass anyway.
async fn claim_cluster_wide(st: &Arc<Server>, authorization: &str) -> Result<(), ApiError> {
    let Some(cluster) = st.cluster.clone() else { return Ok(()) };
    let Some((_, sig)) = authorization.rsplit_once("Signature=") else { return Ok(()) };
    let sig = sig.trim().to_owned();
    let claimed = tokio::task::spawn_blocking(move || cluster.claim_signature(&sig, 2 * tc3::MAX_SKEW_SECS)).await;
    match claimed {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => {
            Err(ApiError::auth("Replayed", "this signed request was already accepted by a node of the cluster"))
        }
        Ok(Err(_)) | Err(_) => {
            if let Some(c) = &st.cluster {
                c.health.replay_local_only.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
    }
}

async fn finish(st: &Arc<Server>, ctx: &Ctx, audit: bool, envelope: bool, mut resp: Response) -> Response {
    let status = resp.status();
    let error = match resp.extensions_mut().remove::<ErrorMark>() {
        Some(ErrorMark(e)) => Some(e),
        None if status.is_client_error() || status.is_server_error() => Some(ApiError::from_status(status)),
        None => None,
    };
    if let Some(e) = &error {
        log_refusal(ctx, e);
    }
    if audit {
        let in_store = resp.extensions().get::<AuditedInStore>().is_some();
        let note = resp.extensions_mut().remove::<AuditNote>();
        let entry = match &error {
            Some(e) => Some((e.code.clone(), Outcome::Failure { reason: bounded(&e.message, 200).to_owned() })),
            None if in_store => None,
            None => Some((note.map_or_else(|| "ok".to_owned(), |n| n.0), Outcome::Success)),
        };
        if let Some((what, outcome)) = entry {
            let (store, ctx2) = (st.store.clone(), ctx.clone());
            let written = tokio::task::spawn_blocking(move || {
                let what = bounded(&what, 90).to_owned();
                store.append_audit(&ctx2.actor(), &what, outcome)
            })
            .await;
            if !matches!(written, Ok(Ok(_))) {
                tracing::error!(via = %ctx.via, "could not write an audit entry");
            }
        }
    }
    let mut resp = match error {
        Some(e) => render_error(&e, &ctx.request_id, envelope),
        None => resp,
    };
    if st.maybe_stale() {
        resp.headers_mut()
            .insert("x-edgerelay-stale", HeaderValue::from_static("redis unreachable; this node's copy may be behind"));
    }
    st.counters.count_request(resp.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The one log line of a refused call (module doc): structured fields, no secrets.
fn log_refusal(ctx: &Ctx, e: &ApiError) {
    let (app, room) = (ctx.app.as_deref(), ctx.room.as_deref());
    let status = e.status.as_u16();
    if e.status == StatusCode::TOO_MANY_REQUESTS {
        tracing::debug!(code = %e.code, status, source = %ctx.source_ip, via = %ctx.via, who = %ctx.who,
            request_id = %ctx.request_id, app, room, "API call refused");
    } else {
        tracing::warn!(code = %e.code, status, source = %ctx.source_ip, via = %ctx.via, who = %ctx.who,
            request_id = %ctx.request_id, app, room, reason = %bounded(&e.message, 200), "API call refused");
    }
}

fn render_error(e: &ApiError, request_id: &str, envelope: bool) -> Response {
    let mut r = if envelope {
        let error = Some(api::TError { code: e.code.clone(), message: e.message.clone() });
        let body = api::TEnvelope { response: api::TResponse { error, request_id: request_id.to_owned() } };
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let body =
            api::ErrorBody { code: e.code.clone(), message: e.message.clone(), request_id: request_id.to_owned() };
        (e.status, axum::Json(body)).into_response()
    };
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// Whether a usable admin key exists (for `bootstrap-admin`).
pub fn has_admin(store: &crate::store::Store, now: u64) -> Result<bool, crate::store::StoreError> {
    Ok(store.list_keys()?.iter().any(|k| k.role == Role::Admin && k.is_usable(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_uuids() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn rate_limit_refuses_past_the_burst_with_a_whole_second_wait() {
        let cfg = super::super::config::RateLimits {
            per_ip_per_sec: 1,
            per_ip_burst: 2,
            per_key_per_sec: 1,
            per_key_burst: 1,
        };
        let l = RateLimits::new(&cfg);
        let ip = IpAddr::from([198, 18, 0, 9]);
        assert!(l.check_ip(ip).is_ok() && l.check_ip(ip).is_ok());
        assert_eq!(l.check_ip(ip), Err(1));
        assert!(l.check_ip(IpAddr::from([198, 18, 0, 10])).is_ok());
        assert!(l.check_key("AKIDa").is_ok());
        assert_eq!(l.check_key("AKIDa"), Err(1));
    }

    #[test]
    fn subjects_come_from_the_path_or_the_two_body_fields_only() {
        assert_eq!(
            subject_of_path("/v1/apps/1400000001/rooms/s:lobby/users/bob"),
            (Some("1400000001".into()), Some("s:lobby".into()))
        );
        assert_eq!(subject_of_path("/v1/apps/7"), (Some("7".into()), None));
        assert_eq!(subject_of_path("/v1/blocklist/198.18.0.1/32"), (None, None));
        let body = br#"{"SdkAppId":1400000001,"RoomId":42,"UserSig":"eJw-secret","SecretKey":"k"}"#;
        assert_eq!(subject_of_body(body), (Some("1400000001".into()), Some("42".into())));
        assert_eq!(subject_of_body(b"not json"), (None, None));
        let long = format!(r#"{{"sdkappid":"{}"}}"#, "9".repeat(500));
        assert_eq!(subject_of_body(long.as_bytes()).0.map(|a| a.len()), Some(MAX_LOGGED_ID));
    }

    #[test]
    fn json_content_types() {
        let v = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(is_json(v("application/json").as_ref()));
        assert!(is_json(v("Application/JSON; charset=utf-8").as_ref()));
        assert!(!is_json(v("text/plain").as_ref()));
        assert!(!is_json(v("application/jsonx").as_ref()));
        assert!(!is_json(None));
    }
}
