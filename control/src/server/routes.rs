//! The API's routes and handlers.
//!
//! Every body is parsed strictly: unknown fields are refused, every number and string is
//! bounded, and the message of a refusal names the field and the bound (`MalformedJson` for
//! text that is not JSON, `MissingParameter` for an absent required field, `InvalidParameter`
//! otherwise). Bodies are the types of [`crate::api`], whose constants are the bounds both
//! this module and `openapi.rs` use. Numbers are read as `u64` and range-checked here, so an
//! out-of-range value gets a message with the field's name and range rather than serde's;
//! quotas and limits are relay's types, checked by their own `check()` (relayd's bounds),
//! and their refusals are worded the same way.
//!
//! A change commits to the store first (with its audit entry), then the relayd link is told
//! ([`push::Link::changed`]); relayd actions (dismiss, remove user, rooms) go to relayd
//! directly and answer 503 when the link is down.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use relay::ids::{RoomId, UserId};
use relay::limits::LimitsError;
use relay::mgmt::{Answer, Request as Mgmt};
use relay::prefix::{Prefix, PrefixError};
use relay::usersig::{self, PrivilegeMap, RoomRef};
use serde::de::DeserializeOwned;

use super::auth::{self, AuditNote, AuditedInStore, Ctx};
use super::errors::ApiError;
use super::push::Change;
use super::Server;
use crate::api::{self, Limits, Quotas, MAX_AUDIT_LIMIT, MAX_AUDIT_TIME, MAX_SDKAPPID, TRTC_VERSION};
use crate::keys::{ApiKey, KeyState, SecretKey};
use crate::state::{Ban, Mutation, Output};
use crate::store::{self, App, BlockEntry, BlockSource};

type ApiResult = Result<Response, ApiError>;

/// The router with every route behind the gate.
pub fn router(st: Arc<Server>) -> Router {
    Router::new()
        .route("/", post(tencent_action))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/node", get(node))
        .route("/v1/node/health", get(health))
        .route("/v1/apps", get(list_apps).post(create_app))
        .route("/v1/apps/{sdkappid}", get(get_app).patch(patch_app).delete(delete_app))
        .route("/v1/apps/{sdkappid}/rotate-secret", post(rotate_app_secret))
        .route("/v1/apps/{sdkappid}/usersig", post(mint_usersig))
        .route("/v1/apps/{sdkappid}/nodes", get(select_nodes))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/apps/{sdkappid}/rooms/{room}", delete(dismiss_room))
        .route("/v1/apps/{sdkappid}/rooms/{room}/users/{user}", delete(remove_user))
        .route("/v1/rooms", get(list_rooms))
        .route("/v1/blocklist", get(list_blocks).post(add_block))
        .route("/v1/blocklist/{ip}/{prefix_len}", delete(remove_block))
        .route("/v1/limits", get(get_limits).put(put_limits))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{secret_id}", delete(revoke_key))
        .route("/v1/keys/{secret_id}/rotate", post(rotate_key))
        .route("/v1/audit", get(audit))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(from_fn_with_state(st.clone(), auth::gate))
        .with_state(st)
}

// ---------------------------------------------------------------------------------------
// Parsing helpers

/// Parses a JSON body into `T` (which refuses unknown fields), classifying the error.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde accepts a JSON array for a struct (fields by position); every body here is an object.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            return Err(ApiError::invalid("body must be a JSON object"));
        }
        Some(_) => {}
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::malformed_json(format!("body is not valid JSON: {inner}"))
            }
            _ => {
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                if msg.starts_with("missing field") {
                    let at = if path == "." { String::new() } else { format!(" in {path}") };
                    ApiError::missing(format!("{msg}{at}"))
                } else if path == "." {
                    ApiError::invalid(msg)
                } else {
                    ApiError::invalid(format!("{path}: {msg}"))
                }
            }
        }
    })?;
    de.end().map_err(|e| ApiError::malformed_json(format!("trailing characters after the JSON body: {e}")))?;
    Ok(value)
}

fn in_range(field: &str, v: u64, lo: u64, hi: u64) -> Result<u64, ApiError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::invalid(format!("{field} must be in {lo}..={hi}, got {v}")))
    }
}

fn ascii_text(field: &str, s: &str, min: usize, max: usize, space: bool) -> Result<(), ApiError> {
    let lo = if space { b' ' } else { b'!' };
    if s.len() < min || s.len() > max || !s.bytes().all(|c| (lo..=b'~').contains(&c)) {
        let what = if space { "printable ASCII" } else { "printable ASCII without spaces" };
        return Err(ApiError::invalid(format!("{field} must be {min} to {max} characters of {what}")));
    }
    Ok(())
}

/// An `SdkAppId` path segment: decimal, 1..=[`MAX_SDKAPPID`] (also a fuzz entry point).
pub fn path_sdkappid(s: &str) -> Result<u32, ApiError> {
    let v = parse_decimal("sdkappid", s)?;
    Ok(in_range("sdkappid", v, 1, MAX_SDKAPPID)? as u32)
}

fn parse_decimal(field: &str, s: &str) -> Result<u64, ApiError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::invalid(format!("{field} must be a decimal integer")));
    }
    s.parse().map_err(|_| ApiError::invalid(format!("{field} is out of range")))
}

/// Parses a query string of `name=value` pairs with only `allowed` names, each at most once
/// (also a fuzz entry point, `fuzz/fuzz_targets/api.rs`).
pub fn parse_query<'a>(q: Option<&'a str>, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, ApiError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&k) {
            return Err(ApiError::invalid(format!(
                "unknown query parameter {:?}; allowed: {}",
                k.chars().take(32).collect::<String>(),
                allowed.join(", ")
            )));
        }
        if out.iter().any(|(n, _)| *n == k) {
            return Err(ApiError::invalid(format!("query parameter {k} given twice")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn query_u64(q: &[(&str, &str)], name: &str, lo: u64, hi: u64, default: u64) -> Result<u64, ApiError> {
    match q.iter().find(|(k, _)| *k == name) {
        Some((_, v)) => in_range(name, parse_decimal(name, v)?, lo, hi),
        None => Ok(default),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

fn stored<T: IntoResponse>(r: T) -> Response {
    let mut r = r.into_response();
    r.extensions_mut().insert(AuditedInStore);
    r
}

fn noted<T: IntoResponse>(r: T, note: String) -> Response {
    let mut r = r.into_response();
    r.extensions_mut().insert(AuditNote(note));
    r
}

/// The app an app mutation returned.
fn changed_app(out: Output) -> Result<App, ApiError> {
    match out {
        Output::App(a) => Ok(a),
        other => Err(ApiError::internal(format!("app change answered {other:?}"))),
    }
}

fn app_exists(st: &Server, sdkappid: u32) -> Result<App, ApiError> {
    st.store.get_app(sdkappid)?.ok_or_else(|| ApiError::not_found(format!("app {sdkappid} not found")))
}

// ---------------------------------------------------------------------------------------
// Answers

fn app_view(a: &App, now: u64) -> api::App {
    let secrets = a
        .secrets
        .iter()
        .filter(|s| s.expires_at.is_none_or(|e| now < e))
        .map(|s| api::SecretInfo { created_at: s.created_at, expires_at: s.expires_at })
        .collect();
    api::App {
        sdkappid: a.sdkappid,
        quotas: a.quotas,
        require_private_map_key: a.require_private_map_key,
        allow_v1_joins: a.allow_v1_joins,
        secrets,
    }
}

fn with_secret(app: api::App, secret: &SecretKey) -> api::AppWithSecret {
    api::AppWithSecret { app, secret: secret.expose().to_owned() }
}

fn block_view(e: &BlockEntry, now: u64) -> api::BlockEntry {
    api::BlockEntry {
        cidr: e.cidr(),
        ttl_secs: e.expires_at.map_or(0, |x| x.saturating_sub(now)),
        expires_at: e.expires_at,
        reason: e.reason.clone(),
        source: e.source,
    }
}

fn key_view(k: &ApiKey) -> api::Key {
    let state = match k.state {
        KeyState::Active => api::KeyStatus::Active,
        KeyState::Rotated { .. } => api::KeyStatus::Rotated,
        KeyState::Revoked { .. } => api::KeyStatus::Revoked,
    };
    api::Key { secret_id: k.secret_id.clone(), role: k.role, label: k.label.clone(), state, created_at: k.created_at }
}

fn new_key_view(k: &ApiKey) -> api::NewKey {
    api::NewKey {
        secret_id: k.secret_id.clone(),
        secret_key: k.secret_key.expose().to_owned(),
        role: k.role,
        label: k.label.clone(),
    }
}

/// A refused quota or limit, worded like [`in_range`]'s refusals.
fn limits_error(e: LimitsError) -> ApiError {
    match e {
        LimitsError::OutOfRange { field, value, min, max } => {
            ApiError::invalid(format!("{field} must be in {min}..={max}, got {value}"))
        }
        LimitsError::InvalidPortRange { min: 0, .. } => ApiError::invalid("port_min must be in 1..=65535, got 0"),
        LimitsError::InvalidPortRange { min, max } => {
            ApiError::invalid(format!("port_min ({min}) must not exceed port_max ({max})"))
        }
        other => ApiError::invalid(other.to_string()),
    }
}

fn check_quotas(q: Quotas) -> Result<Quotas, ApiError> {
    q.check().map_err(limits_error)?;
    Ok(q)
}

// ---------------------------------------------------------------------------------------
// Node, OpenAPI, metrics

async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

async fn node(State(st): State<Arc<Server>>) -> Json<api::Node> {
    let cert = st.certs.info();
    let stats = match st.link.reachable() {
        true => match st.link.call(Mgmt::Stats {}).await {
            Ok(Answer::Stats(s)) => Some(*s),
            _ => None,
        },
        false => None,
    };
    let key = relay_key(&st).await;
    Json(api::Node {
        control: api::ControlStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: st.started.elapsed().as_secs(),
            cert_sha256: cert.sha256,
            cert_not_after: cert.not_after,
        },
        relayd: api::RelaydStatus { reachable: stats.is_some(), key, stats },
    })
}

/// relayd's keys, when it answers.
pub(super) async fn relay_key(st: &Server) -> Option<relay::mgmt::KeyInfo> {
    if !st.link.reachable() {
        return None;
    }
    match st.link.call(Mgmt::Key {}).await {
        Ok(Answer::Key(k)) => Some(k),
        _ => None,
    }
}

/// Where clients join this node: `public_endpoint`, else relayd's specific listen address.
async fn relay_endpoints(st: &Server) -> Vec<api::RelayEndpoint> {
    let Some(k) = relay_key(st).await else { return Vec::new() };
    let endpoint = st.cfg.public_endpoint.or(k.listen.filter(|a| !a.ip().is_unspecified()));
    endpoint.map(|e| api::RelayEndpoint { endpoint: e.to_string(), public_key: k.public_key }).into_iter().collect()
}

fn region_name(r: &str) -> Result<(), ApiError> {
    match crate::cluster::valid_name(r) {
        true => Ok(()),
        false => Err(ApiError::invalid("region must be 1-64 of A-Z a-z 0-9 . _ -")),
    }
}

/// Node selection for `room` (relayd's room form) of `sdkappid` from `region`. With Redis
/// unreachable, this node alone (it can still admit the client: fail-static).
async fn selection(
    st: &Arc<Server>,
    sdkappid: u32,
    room: Option<&str>,
    region: Option<&str>,
) -> Result<api::NodeSelection, ApiError> {
    let Some(cluster) = st.cluster.clone() else {
        return Ok(api::NodeSelection { nodes: Vec::new(), relays: relay_endpoints(st).await });
    };
    let room = room.map(|r| crate::cluster::nodes::room_key(u64::from(sdkappid), r));
    let region = region.map(str::to_owned);
    let sel = blocking(move || Ok(cluster.select(room.as_deref(), region.as_deref())?)).await;
    match sel {
        Ok(s) if !s.relays.is_empty() => Ok(s),
        _ => {
            let node = st.cluster.as_ref().map(|c| c.cfg.node_id.clone()).into_iter().collect();
            Ok(api::NodeSelection { nodes: node, relays: relay_endpoints(st).await })
        }
    }
}

async fn select_nodes(State(st): State<Arc<Server>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let sdkappid = path_sdkappid(&id)?;
    app_exists(&st, sdkappid)?;
    let q = parse_query(q.as_deref(), &["room_id", "str_room_id", "region"])?;
    let get = |name: &str| q.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let room = match (get("room_id"), get("str_room_id")) {
        (Some(_), None) => Some(query_u64(&q, "room_id", 1, api::MAX_NUM_ROOM, 1)?.to_string()),
        (None, Some(s)) => {
            ascii_text("str_room_id", s, 1, api::MAX_STR_ROOM_LEN, false)?;
            Some(crate::cluster::nodes::str_room(s))
        }
        (None, None) => None,
        _ => return Err(ApiError::invalid("give at most one of room_id and str_room_id")),
    };
    let region = get("region");
    if let Some(r) = region {
        region_name(r)?;
    }
    Ok(Json(selection(&st, sdkappid, room.as_deref(), region).await?).into_response())
}

async fn cluster_status(State(st): State<Arc<Server>>) -> ApiResult {
    let Some(cluster) = st.cluster.clone() else {
        return Err(ApiError::not_found("this node is not in a cluster (no [cluster] in its config)"));
    };
    let c = cluster.clone();
    let nodes = blocking(move || Ok(c.nodes().unwrap_or_default())).await?;
    let seen = cluster.legs.seen();
    let h = &cluster.health;
    let out = api::ClusterStatus {
        node_id: cluster.cfg.node_id.clone(),
        redis_reachable: h.is_reachable(),
        redis_error: if h.is_reachable() {
            None
        } else {
            h.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
        },
        applied: cluster.applied().last.to_string(),
        nodes,
        legs: seen.legs.unwrap_or_default().into_iter().map(api::ClusterLeg::from).collect(),
        legs_error: seen.error,
    };
    Ok(Json(out).into_response())
}

/// Days before expiry at which the certificate check turns unhealthy.
pub const CERT_WARN_DAYS: u64 = 14;

async fn health(State(st): State<Arc<Server>>) -> Json<api::Health> {
    let now = super::unix_now();
    let store_ok = {
        let s = st.store.clone();
        blocking(move || Ok(s.list_keys().map(|k| k.len()).map_err(|e| e.to_string())))
            .await
            .unwrap_or_else(|e| Err(e.message))
    };
    let relayd_ok = st.link.reachable();
    let relayd_detail = if relayd_ok {
        "connected and synced".to_owned()
    } else {
        st.link
            .status
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "not connected".into())
    };
    let cert = st.certs.info();
    let days_left = cert.not_after.saturating_sub(now) / 86_400;
    let checks = [
        ("store", store_ok.is_ok(), store_ok.map_or_else(|e| e, |n| format!("{n} api keys"))),
        ("relayd", relayd_ok, relayd_detail),
        ("certificate", days_left >= CERT_WARN_DAYS, format!("expires in {days_left} days")),
    ];
    let status = if checks.iter().all(|c| c.1) { api::HealthStatus::Ok } else { api::HealthStatus::Degraded };
    let checks = checks.into_iter().map(|(n, ok, detail)| api::Check { name: n.to_owned(), ok, detail }).collect();
    Json(api::Health { status, checks })
}

async fn metrics(State(st): State<Arc<Server>>) -> Response {
    let text = st.render_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

// ---------------------------------------------------------------------------------------
// Apps

async fn list_apps(State(st): State<Arc<Server>>) -> ApiResult {
    let now = super::unix_now();
    let apps = st.store.list_apps()?.iter().map(|a| app_view(a, now)).collect();
    Ok(Json(api::Apps { apps }).into_response())
}

async fn create_app(State(st): State<Arc<Server>>, Extension(ctx): Extension<Ctx>, body: Bytes) -> ApiResult {
    let req: api::CreateApp = parse_body(&body)?;
    let sdkappid = in_range("sdkappid", req.sdkappid, 1, MAX_SDKAPPID)? as u32;
    let quotas = req.quotas.map(check_quotas).transpose()?.unwrap_or(Quotas::DEFAULT);
    let secret = SecretKey::generate_app_secret().map_err(ApiError::internal)?;
    let mut app = App::new(sdkappid, secret.clone(), quotas, ctx.now);
    app.require_private_map_key = req.require_private_map_key.unwrap_or(false);
    app.allow_v1_joins = req.allow_v1_joins.unwrap_or(false);
    let (s, a) = (st.clone(), app.clone());
    blocking(move || Ok(s.write(&Mutation::CreateApp(a), &ctx.actor())?)).await?;
    st.link.changed(Change::Apps);
    Ok(stored((StatusCode::CREATED, Json(with_secret(app_view(&app, app.created_at), &secret)))))
}

async fn get_app(State(st): State<Arc<Server>>, Path(id): Path<String>) -> ApiResult {
    let app = app_exists(&st, path_sdkappid(&id)?)?;
    Ok(Json(app_view(&app, super::unix_now())).into_response())
}

async fn patch_app(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let sdkappid = path_sdkappid(&id)?;
    let req: api::PatchApp = parse_body(&body)?;
    let quotas = req.quotas.map(check_quotas).transpose()?;
    let (s, now) = (st.clone(), ctx.now);
    let m = Mutation::UpdateApp {
        sdkappid,
        quotas,
        require_private_map_key: req.require_private_map_key,
        allow_v1_joins: req.allow_v1_joins,
    };
    let app = changed_app(blocking(move || Ok(s.write(&m, &ctx.actor())?)).await?)?;
    st.link.changed(Change::Apps);
    Ok(stored(Json(app_view(&app, now))))
}

/// The `overlap_secs` of a rotation body ([`api::Overlap`]), range-checked.
fn parse_overlap(body: &[u8]) -> Result<u64, ApiError> {
    let req: api::Overlap = parse_body(body)?;
    in_range("overlap_secs", req.overlap_secs, 0, api::MAX_OVERLAP_SECS)
}

async fn rotate_app_secret(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let sdkappid = path_sdkappid(&id)?;
    let overlap = parse_overlap(&body)?;
    let secret = SecretKey::generate_app_secret().map_err(ApiError::internal)?;
    let (s, now) = (st.clone(), ctx.now);
    let m = Mutation::RotateAppSecret { sdkappid, secret: secret.clone(), overlap };
    let app = changed_app(blocking(move || Ok(s.write(&m, &ctx.actor())?)).await?)?;
    st.link.changed(Change::Apps);
    Ok(stored(Json(with_secret(app_view(&app, now), &secret))))
}

async fn delete_app(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let sdkappid = path_sdkappid(&id)?;
    let s = st.clone();
    blocking(move || Ok(s.write(&Mutation::DeleteApp(sdkappid), &ctx.actor())?)).await?;
    st.link.changed(Change::Apps);
    Ok(stored(StatusCode::NO_CONTENT))
}

async fn mint_usersig(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let sdkappid = path_sdkappid(&id)?;
    let req: api::MintUserSig = parse_body(&body)?;
    ascii_text("user_id", &req.user_id, 1, api::MAX_USER_ID_LEN, false)?;
    let expire = in_range("expire_secs", req.expire_secs, 1, api::MAX_USERSIG_SECS)?;
    let pmk = match &req.private_map_key {
        None => None,
        Some(p) => {
            let privileges = in_range("private_map_key.privileges", p.privileges, 0, api::MAX_PRIVILEGES)? as u32;
            let room = match (p.room_id, p.str_room_id.as_deref()) {
                (Some(n), None) => RoomRef::Num(in_range("private_map_key.room_id", n, 1, api::MAX_NUM_ROOM)? as u32),
                (None, Some(s)) => {
                    ascii_text("private_map_key.str_room_id", s, 1, api::MAX_STR_ROOM_LEN, false)?;
                    RoomRef::Str(s)
                }
                _ => return Err(ApiError::invalid("private_map_key needs exactly one of room_id and str_room_id")),
            };
            Some((room, PrivilegeMap(privileges)))
        }
    };
    let app = app_exists(&st, sdkappid)?;
    let Some(key) = app.usable_secrets(ctx.now).next() else {
        return Err(ApiError::conflict(format!("app {sdkappid} has no usable secret")));
    };
    let k = key.expose().as_bytes();
    let sig = usersig::mint(k, u64::from(sdkappid), &req.user_id, expire, ctx.now, None);
    let private_map_key = pmk.map(|(room, privileges)| {
        usersig::mint_private_map_key(k, sdkappid, &req.user_id, expire, ctx.now, room, privileges)
    });
    let room = match (req.room_id, req.str_room_id.as_deref(), &req.private_map_key) {
        (Some(n), None, _) => Some(in_range("room_id", n, 1, api::MAX_NUM_ROOM)?.to_string()),
        (None, Some(s), _) => {
            ascii_text("str_room_id", s, 1, api::MAX_STR_ROOM_LEN, false)?;
            Some(crate::cluster::nodes::str_room(s))
        }
        (None, None, Some(p)) => {
            p.room_id.map(|n| n.to_string()).or(p.str_room_id.as_deref().map(crate::cluster::nodes::str_room))
        }
        (None, None, None) => None,
        _ => return Err(ApiError::invalid("give at most one of room_id and str_room_id")),
    };
    if let Some(r) = &req.region {
        region_name(r)?;
    }
    let relays = match &st.cluster {
        Some(_) => selection(&st, sdkappid, room.as_deref(), req.region.as_deref()).await?.relays,
        None => relay_endpoints(&st).await,
    };
    let out = api::UserSig { usersig: sig, private_map_key, relays };
    let note = format!("usersig {sdkappid} {} pmk={}", req.user_id, req.private_map_key.is_some());
    Ok(noted(Json(out), note))
}

// ---------------------------------------------------------------------------------------
// Rooms (relayd)

/// A room path segment: a numeric room or a string room (also a fuzz entry point).
pub fn path_room(s: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(s).map_err(|e| {
        ApiError::invalid(format!(
            "room: {e}; digits 1..=4294967294 for a numeric room, or 1 to 64 printable ASCII characters \
             (prefix s: to force a string room)"
        ))
    })
}

async fn list_rooms(State(st): State<Arc<Server>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = parse_query(q.as_deref(), &["sdkappid", "limit"])?;
    let sdkappid = match q.iter().find(|(k, _)| *k == "sdkappid") {
        Some((_, v)) => Some(in_range("sdkappid", parse_decimal("sdkappid", v)?, 1, MAX_SDKAPPID)?),
        None => None,
    };
    let limit = query_u64(
        &q,
        "limit",
        1,
        u64::from(relay::mgmt::ROOMS_MAX_LIMIT),
        u64::from(relay::mgmt::ROOMS_DEFAULT_LIMIT),
    )? as u32;
    let rooms = match st.link.call(Mgmt::Rooms { sdkappid, limit: Some(limit) }).await? {
        Answer::Rooms(r) => r,
        _ => Vec::new(),
    };
    let rooms = rooms.iter().map(api::Room::from).collect();
    Ok(Json(api::Rooms { rooms }).into_response())
}

async fn dismiss(st: &Server, sdkappid: u32, room: &RoomId) -> Result<u64, ApiError> {
    app_exists(st, sdkappid)?;
    let r = st.link.call(Mgmt::DismissRoom { sdkappid: u64::from(sdkappid), room: room.to_string() }).await?;
    Ok(removed(&r))
}

/// Removes `user` from `room`, banned for `ban_secs`. A ban is stored (so it holds on every
/// node of a cluster, and after a relayd restart); in a cluster a plain removal is stored too,
/// as a ban that ends at once, so every node removes the user. Then this node's relayd is
/// asked directly, for the count.
async fn remove(
    st: &Arc<Server>,
    ctx: &Ctx,
    sdkappid: u32,
    room: &RoomId,
    user: &UserId,
    ban_secs: u64,
) -> Result<u64, ApiError> {
    app_exists(st, sdkappid)?;
    if ban_secs > 0 || st.cluster.is_some() {
        let ban = Ban { sdkappid, room: room.to_string(), user: user.to_string(), until: ctx.now + ban_secs };
        let (s, actor_ctx) = (st.clone(), ctx.clone());
        blocking(move || Ok(s.write(&Mutation::Ban(ban), &actor_ctx.actor())?)).await?;
    }
    let req =
        Mgmt::RemoveUser { sdkappid: u64::from(sdkappid), room: room.to_string(), user: user.to_string(), ban_secs };
    Ok(removed(&st.link.call(req).await?))
}

/// The `removed` count of an answer (0 if relayd reported none).
fn removed(a: &Answer) -> u64 {
    match a {
        Answer::Removed(n) => *n,
        _ => 0,
    }
}

async fn dismiss_room(State(st): State<Arc<Server>>, Path((id, room)): Path<(String, String)>) -> ApiResult {
    let (sdkappid, room) = (path_sdkappid(&id)?, path_room(&room)?);
    let n = dismiss(&st, sdkappid, &room).await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("room {room} of app {sdkappid} has no members")));
    }
    Ok(noted(StatusCode::NO_CONTENT, format!("dismiss_room {sdkappid} {room} removed={n}")))
}

async fn remove_user(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path((id, room, user)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (sdkappid, room) = (path_sdkappid(&id)?, path_room(&room)?);
    let user = UserId::new(&user).map_err(|_| ApiError::invalid("user must be 1 to 32 printable ASCII characters"))?;
    let q = parse_query(q.as_deref(), &["ban_secs"])?;
    let ban_secs = query_u64(&q, "ban_secs", 0, api::MAX_BAN_SECS, 0)?;
    let n = remove(&st, &ctx, sdkappid, &room, &user, ban_secs).await?;
    if n == 0 && ban_secs == 0 {
        return Err(ApiError::not_found(format!("user {user} is not in room {room} of app {sdkappid}")));
    }
    Ok(noted(StatusCode::NO_CONTENT, format!("remove_user {sdkappid} {room} {user} ban_secs={ban_secs}")))
}

// ---------------------------------------------------------------------------------------
// Blocklist

/// Parses `ip/len` (or a bare address, a host prefix) and clears host bits.
pub fn parse_cidr(s: &str) -> Result<Prefix, ApiError> {
    let bad = || ApiError::invalid("cidr must be an IPv4 or IPv6 address with an optional /prefix_len");
    Prefix::parse_truncating(s).map_err(|e| match e {
        PrefixError::TooLong(_) => {
            let (ip, len) = s.split_once('/').unwrap_or((s, ""));
            let max = ip.parse::<std::net::IpAddr>().map_or(128, |ip| relay::prefix::width(ip.to_canonical()));
            match parse_decimal("prefix_len", len) {
                Ok(v) => ApiError::invalid(format!("prefix_len must be in 0..={max}, got {v}")),
                Err(_) => bad(),
            }
        }
        _ => bad(),
    })
}

async fn list_blocks(State(st): State<Arc<Server>>) -> ApiResult {
    let now = super::unix_now();
    let entries = st.store.list_blocks(now)?.iter().map(|e| block_view(e, now)).collect();
    Ok(Json(api::Blocklist { entries }).into_response())
}

async fn add_block(State(st): State<Arc<Server>>, Extension(ctx): Extension<Ctx>, body: Bytes) -> ApiResult {
    let req: api::AddBlock = parse_body(&body)?;
    if req.cidr.len() > api::MAX_CIDR_LEN {
        return Err(ApiError::invalid(format!("cidr must be at most {} characters", api::MAX_CIDR_LEN)));
    }
    let prefix = parse_cidr(&req.cidr)?;
    let ttl = in_range("ttl_secs", req.ttl_secs, 0, api::MAX_BLOCK_TTL_SECS)?;
    let reason = req.reason.unwrap_or_default();
    ascii_text("reason", &reason, 0, api::MAX_BLOCK_REASON_LEN, true)?;
    let entry = BlockEntry {
        ip: prefix.addr(),
        prefix_len: prefix.len(),
        created_at: ctx.now,
        expires_at: (ttl > 0).then(|| ctx.now + ttl),
        reason,
        source: BlockSource::Api,
    };
    let (s, e, now) = (st.clone(), entry.clone(), ctx.now);
    blocking(move || Ok(s.write(&Mutation::AddBlock(e), &ctx.actor())?)).await?;
    st.link.changed(Change::Block(entry.clone()));
    Ok(stored((StatusCode::CREATED, Json(block_view(&entry, now)))))
}

async fn remove_block(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path((ip, len)): Path<(String, String)>,
) -> ApiResult {
    if ip.len() > 45 || len.len() > 3 {
        return Err(ApiError::invalid("ip must be an address of at most 45 characters, prefix_len 0..=128"));
    }
    let prefix = parse_cidr(&format!("{ip}/{len}"))?;
    let (ip, prefix_len) = (prefix.addr(), prefix.len());
    let s = st.clone();
    blocking(move || Ok(s.write(&Mutation::RemoveBlock { ip, prefix_len }, &ctx.actor())?)).await?;
    st.link.changed(Change::Unblock(ip, prefix_len));
    Ok(stored(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------------------------
// Limits

async fn get_limits(State(st): State<Arc<Server>>) -> ApiResult {
    if let Some(l) = st.store.limits()? {
        return Ok(Json(l).into_response());
    }
    let l = st.link.call(Mgmt::GetLimits {}).await?;
    let Answer::Limits(l) = l else {
        return Err(ApiError::relayd_unavailable("relayd answered get_limits without limits"));
    };
    Ok(Json(l).into_response())
}

async fn put_limits(State(st): State<Arc<Server>>, Extension(ctx): Extension<Ctx>, body: Bytes) -> ApiResult {
    let l: Limits = parse_body(&body)?;
    l.check().map_err(limits_error)?;
    // relayd validates against its own ports: ask it first when it is there, so a refused
    // change is never stored. When it is unreachable the change is stored and pushed on
    // reconnect (where a refusal is logged).
    if st.link.reachable() {
        match st.link.call(super::push::limits_request(&l)).await {
            Ok(_) | Err(super::push::LinkError::Unreachable(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let s = st.clone();
    blocking(move || Ok(s.write(&Mutation::SetLimits(l), &ctx.actor())?)).await?;
    Ok(stored(Json(l)))
}

// ---------------------------------------------------------------------------------------
// API keys

async fn list_keys(State(st): State<Arc<Server>>) -> ApiResult {
    let keys = st.store.list_keys()?.iter().map(key_view).collect();
    Ok(Json(api::Keys { keys }).into_response())
}

async fn create_key(State(st): State<Arc<Server>>, Extension(ctx): Extension<Ctx>, body: Bytes) -> ApiResult {
    let req: api::CreateKey = parse_body(&body)?;
    ascii_text("label", &req.label, 0, api::MAX_LABEL_LEN, true)?;
    let key = ApiKey::generate(req.role, &req.label, ctx.now).map_err(|e| ApiError::invalid(e.to_string()))?;
    let (s, k) = (st.clone(), key.clone());
    blocking(move || Ok(s.write(&Mutation::InsertKey(k), &ctx.actor())?)).await?;
    Ok(stored((StatusCode::CREATED, Json(new_key_view(&key)))))
}

fn path_secret_id(s: &str) -> Result<String, ApiError> {
    if !crate::keys::is_secret_id(s) {
        return Err(ApiError::invalid("secret_id must be AKID followed by 32 letters or digits"));
    }
    Ok(s.to_owned())
}

async fn rotate_key(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = path_secret_id(&id)?;
    let overlap = parse_overlap(&body)?;
    let s = st.clone();
    let next =
        match blocking(move || Ok(s.write(&Mutation::RotateKey { secret_id: id, overlap }, &ctx.actor())?)).await? {
            Output::Key(k) => k,
            other => return Err(ApiError::internal(format!("rotate_key answered {other:?}"))),
        };
    Ok(stored((StatusCode::CREATED, Json(new_key_view(&next)))))
}

async fn revoke_key(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = path_secret_id(&id)?;
    let s = st.clone();
    blocking(move || Ok(s.write(&Mutation::RevokeKey(id), &ctx.actor())?)).await?;
    Ok(stored(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------------------------
// Audit

async fn audit(State(st): State<Arc<Server>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = parse_query(q.as_deref(), &["since", "until", "limit"])?;
    let since = query_u64(&q, "since", 0, MAX_AUDIT_TIME, 0)?;
    let until = query_u64(&q, "until", 0, MAX_AUDIT_TIME, MAX_AUDIT_TIME)?;
    let limit = query_u64(&q, "limit", 1, MAX_AUDIT_LIMIT, api::DEFAULT_AUDIT_LIMIT)? as usize;
    let entries = st
        .store
        .audit_range(since, until, limit)?
        .iter()
        .map(|e| {
            let outcome = match &e.outcome {
                store::Outcome::Success => "success".to_owned(),
                store::Outcome::Failure { reason } => format!("failure: {reason}"),
            };
            api::AuditEntry { time: e.at, who: e.who.clone(), what: e.what.clone(), source_ip: e.source_ip, outcome }
        })
        .collect();
    Ok(Json(api::AuditLog { entries }).into_response())
}

// ---------------------------------------------------------------------------------------
// Tencent Cloud API style actions (POST /)

fn t_app(v: u64) -> Result<u32, ApiError> {
    Ok(in_range("SdkAppId", v, 1, MAX_SDKAPPID)? as u32)
}

fn t_num_room(v: u64) -> Result<RoomId, ApiError> {
    RoomId::num(v).map_err(|_| ApiError::invalid(format!("RoomId must be in 1..=4294967294, got {v}")))
}

/// A TRTC action's string `RoomId` (also a fuzz entry point).
pub fn t_str_room(s: &str) -> Result<RoomId, ApiError> {
    ascii_text("RoomId", s, 1, api::MAX_STR_ROOM_LEN, false)?;
    RoomId::str(s).map_err(|e| ApiError::invalid(format!("RoomId: {e}")))
}

/// A TRTC action's `UserIds` (also a fuzz entry point).
pub fn t_users(ids: &[String]) -> Result<Vec<UserId>, ApiError> {
    if ids.is_empty() || ids.len() > api::MAX_USER_IDS {
        return Err(ApiError::invalid(format!("UserIds must hold 1 to {} user ids", api::MAX_USER_IDS)));
    }
    ids.iter()
        .map(|u| {
            UserId::new(u).map_err(|_| ApiError::invalid("UserIds items must be 1 to 32 printable ASCII characters"))
        })
        .collect()
}

async fn tencent_action(
    State(st): State<Arc<Server>>,
    Extension(ctx): Extension<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap_or(""));
    let Some(action) = h("x-tc-action") else {
        return Err(ApiError::missing("missing X-TC-Action header"));
    };
    match h("x-tc-version") {
        Some(TRTC_VERSION) => {}
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "NoSuchVersion", "X-TC-Version must be 2019-07-22")),
    }
    if h("x-tc-region").is_some_and(|r| r.len() > 64) {
        return Err(ApiError::invalid("X-TC-Region must be at most 64 characters"));
    }
    let room_gone = |app: u32, room: &RoomId| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "FailedOperation.RoomNotExist",
            format!("room {room} of app {app} has no members"),
        )
    };
    let note = match action {
        "DismissRoom" | "DismissRoomByStrRoomId" => {
            let (app, room) = if action == "DismissRoom" {
                let r: api::TDismissRoom = parse_body(&body)?;
                (t_app(r.sdkappid)?, t_num_room(r.room_id)?)
            } else {
                let r: api::TDismissStrRoom = parse_body(&body)?;
                (t_app(r.sdkappid)?, t_str_room(&r.room_id)?)
            };
            let n = dismiss(&st, app, &room).await?;
            if n == 0 {
                return Err(room_gone(app, &room));
            }
            format!("{action} {app} {room} removed={n}")
        }
        "RemoveUser" | "RemoveUserByStrRoomId" => {
            let (app, room, users, ban) = if action == "RemoveUser" {
                let r: api::TRemoveUser = parse_body(&body)?;
                (t_app(r.sdkappid)?, t_num_room(r.room_id)?, t_users(&r.user_ids)?, r.ban_secs)
            } else {
                let r: api::TRemoveStrRoomUser = parse_body(&body)?;
                (t_app(r.sdkappid)?, t_str_room(&r.room_id)?, t_users(&r.user_ids)?, r.ban_secs)
            };
            let ban = in_range("BanSeconds", ban, 0, api::MAX_BAN_SECS)?;
            let mut n = 0;
            for u in &users {
                n += remove(&st, &ctx, app, &room, u, ban).await?;
            }
            format!("{action} {app} {room} users={} removed={n}", users.len())
        }
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("unknown action {:?}", other.chars().take(40).collect::<String>()),
            ))
        }
    };
    let ok = api::TEnvelope { response: api::TResponse { error: None, request_id: ctx.request_id } };
    Ok(noted(Json(ok), note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_are_classified_and_name_the_field() {
        let e = parse_body::<api::CreateApp>(b"{").unwrap_err();
        assert_eq!(e.code, "MalformedJson");
        let e = parse_body::<api::CreateApp>(br#"{"sdkappid":1} x"#).unwrap_err();
        assert_eq!(e.code, "MalformedJson");
        let e = parse_body::<api::CreateApp>(b"{}").unwrap_err();
        assert_eq!((e.code.as_str(), e.message.as_str()), ("MissingParameter", "missing field `sdkappid`"));
        let e = parse_body::<api::CreateApp>(br#"{"sdkappid":1,"quotas":{"max_rooms":1}}"#).unwrap_err();
        assert_eq!(e.code, "MissingParameter");
        assert!(e.message.contains("max_members_per_room") && e.message.contains("quotas"), "{}", e.message);
        let e = parse_body::<api::CreateApp>(br#"{"sdkappid":1,"extra":1}"#).unwrap_err();
        assert_eq!(e.code, "InvalidParameter");
        assert!(e.message.contains("extra"), "{}", e.message);
        let e = parse_body::<api::CreateApp>(br#"{"sdkappid":"1"}"#).unwrap_err();
        assert!(e.message.starts_with("sdkappid: invalid type"), "{}", e.message);
        let e = parse_body::<api::CreateApp>(b"[]").unwrap_err();
        assert_eq!(e.code, "InvalidParameter");
        assert_eq!(
            in_range("sdkappid", 0, 1, MAX_SDKAPPID).unwrap_err().message,
            "sdkappid must be in 1..=4294967295, got 0"
        );
    }

    #[test]
    fn cidrs_are_parsed_and_normalized() {
        let parts = |s| parse_cidr(s).map(|p| (p.addr(), p.len())).unwrap();
        assert_eq!(parts("198.18.5.7/24"), ("198.18.5.0".parse().unwrap(), 24));
        assert_eq!(parts("198.18.5.7"), ("198.18.5.7".parse().unwrap(), 32));
        assert_eq!(parts("2001:db8::1/32"), ("2001:db8::".parse().unwrap(), 32));
        for bad in ["198.18.5.0/33", "::/129", "x/1", "1.2.3.4/", "1.2.3.4/+1", "", "1.2.3.4/24/1"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_strict() {
        assert_eq!(parse_query(Some("since=1&limit=5"), &["since", "limit"]).unwrap().len(), 2);
        assert!(parse_query(Some("since=1&since=2"), &["since"]).is_err());
        assert!(parse_query(Some("bogus=1"), &["since"]).is_err());
        let q = parse_query(Some("limit=0"), &["limit"]).unwrap();
        assert!(query_u64(&q, "limit", 1, 1000, 100).is_err());
        let q = parse_query(Some("limit=-1"), &["limit"]).unwrap();
        assert!(query_u64(&q, "limit", 1, 1000, 100).is_err());
        assert_eq!(query_u64(&[], "limit", 1, 1000, 100).unwrap(), 100);
    }
}
