//! `relayctl`: the command-line client of relay-control's HTTPS API.
//!
//! Every request is TC3-signed by [`control::client`]. Output is a human table by default;
//! `--json` prints the server's JSON body verbatim, for scripts. A non-2xx answer prints the
//! server's `code: message (request_id)` to stderr and exits with a code that tells the
//! class of failure (see [`Exit`]), so scripts can tell "retry later" from "fix the input".
//! Commands that need several calls (`limits set`, `apps update`: read, change, write; `xdp
//! status`) print only the final result.
#![forbid(unsafe_code)]

use relay::time::unix_now;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use control::api::{self, Limits, Quotas};
use control::client::{Call, Client, ClientError, Credentials, Method, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const EXAMPLES: &str = "\
Credentials come from --credentials FILE (or $EDGERELAY_CREDENTIALS), else from
$EDGERELAY_ENDPOINT, $EDGERELAY_SECRET_ID, $EDGERELAY_SECRET_KEY and one of
$EDGERELAY_CERT_SHA256 / $EDGERELAY_CA_CERT. A credentials file:

    endpoint    = \"https://127.0.0.1:8443\"
    secret_id   = \"AKID...\"
    secret_key  = \"...\"
    cert_sha256 = \"sha256:AB:CD:...\"   # as relay-control printed it; or ca_cert = \"/path/ca.pem\"

Examples:
    relayctl node status
    relayctl apps create --sdkappid 1400000001 --max-rooms 100 --max-members-per-room 50
    relayctl usersig mint --sdkappid 1400000001 --user alice --room-id 42 --privileges enter,send-audio,recv-audio
    relayctl rooms list --sdkappid 1400000001
    relayctl blocklist add 198.18.5.0/24 --ttl-secs 3600 --reason 'flood from lab'
    relayctl limits set --pps-rate-per-sec 2000
    relayctl keys create --role auditor --label grafana
    relayctl audit query --since 1h --limit 50
    relayctl --json apps list | jq '.apps[].sdkappid'
    relayctl trtc dismiss-room --sdkappid 1400000001 --room-id 42
    relayctl xdp status

Exit codes: 0 ok; 1 other failure (or `node health` degraded); 2 usage or configuration;
3 authentication/authorization (401/403); 4 invalid request (400/405/413/415);
5 not found (404); 6 rate limited (429); 7 unreachable (connect, TLS, certificate pin);
8 conflict (409); 9 server error (5xx).";

/// Manage an edgerelay node through relay-control's signed HTTPS API.
#[derive(Parser, Debug)]
#[command(name = "relayctl", version, after_long_help = EXAMPLES, after_help = "See --help for examples and exit codes.")]
struct Cli {
    /// Credentials file (TOML: endpoint, secret_id, secret_key, and ca_cert or cert_sha256).
    #[arg(long, global = true, env = "EDGERELAY_CREDENTIALS", value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Whole-request timeout.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Apps (SdkAppIds): their secrets, quotas and PrivateMapKey policy.
    #[command(subcommand)]
    Apps(AppsCmd),
    /// Mint UserSigs (and PrivateMapKeys) with an app's current secret.
    #[command(subcommand)]
    Usersig(UsersigCmd),
    /// Live rooms on relayd: list members, remove a user, dismiss a room.
    #[command(subcommand)]
    Rooms(RoomsCmd),
    /// The source blocklist enforced by the XDP program.
    #[command(subcommand)]
    Blocklist(BlocklistCmd),
    /// Per-source rate limits and the relayed port range.
    #[command(subcommand)]
    Limits(LimitsCmd),
    /// The node: control daemon and relayd status, health checks.
    #[command(subcommand)]
    Node(NodeCmd),
    /// The edge cluster (nodes with `[cluster]`): its nodes, their load and lag, and node
    /// selection for a room.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// API keys (admin only): create, list, rotate, revoke.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The audit log of mutating calls.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Print the Prometheus metrics text.
    Metrics,
    /// Print the OpenAPI document of the API.
    Openapi,
    /// Tencent TRTC-compatible actions (POST / with X-TC-Action).
    #[command(subcommand)]
    Trtc(TrtcCmd),
    /// XDP program counters, blocklist and limits, in the style of `xdp-filter status`.
    #[command(subcommand)]
    Xdp(XdpCmd),
}

#[derive(Args, Debug)]
struct QuotaArgs {
    /// Most concurrent rooms of the app.
    #[arg(long, value_name = "N")]
    max_rooms: Option<u32>,
    /// Most members in one room (at least 2).
    #[arg(long, value_name = "N")]
    max_members_per_room: Option<u32>,
    /// Most sessions of the app at once, over all rooms.
    #[arg(long, value_name = "N")]
    max_sessions: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum AppsCmd {
    /// Create an app; prints its secret once.
    Create {
        /// The SdkAppId (1..=4294967295).
        #[arg(long)]
        sdkappid: u64,
        #[command(flatten)]
        quotas: QuotaArgs,
        /// Refuse joins without a PrivateMapKey.
        #[arg(long)]
        require_private_map_key: bool,
        /// Also accept cleartext v1 joins while clients migrate (refused by default).
        #[arg(long)]
        allow_v1_joins: bool,
    },
    /// List apps (never secret values).
    List,
    /// Show one app.
    Show {
        /// The SdkAppId.
        sdkappid: u64,
    },
    /// Change an app's quotas or PrivateMapKey policy (unchanged fields keep their value).
    Update {
        /// The SdkAppId.
        sdkappid: u64,
        #[command(flatten)]
        quotas: QuotaArgs,
        /// Whether joins need a PrivateMapKey.
        #[arg(long, value_name = "BOOL")]
        require_private_map_key: Option<bool>,
        /// Whether cleartext v1 joins are still accepted (a migration window).
        #[arg(long, value_name = "BOOL")]
        allow_v1_joins: Option<bool>,
    },
    /// Issue a new secret; the old one stays valid for the overlap. Prints the new secret once.
    RotateSecret {
        /// The SdkAppId.
        sdkappid: u64,
        /// How long the previous secret keeps working (0..=604800).
        #[arg(long, value_name = "SECS", default_value_t = 86_400)]
        overlap_secs: u64,
    },
    /// Delete an app; its sessions end.
    Delete {
        /// The SdkAppId.
        sdkappid: u64,
    },
}

#[derive(Subcommand, Debug)]
enum UsersigCmd {
    /// Mint a UserSig; with --room-id or --str-room-id also a PrivateMapKey.
    Mint {
        /// The SdkAppId.
        #[arg(long)]
        sdkappid: u64,
        /// The user id (1..=64 characters).
        #[arg(long = "user")]
        user_id: String,
        /// Lifetime (1..=31536000).
        #[arg(long, value_name = "SECS", default_value_t = 86_400)]
        expire_secs: u64,
        /// Numeric room of the PrivateMapKey.
        #[arg(long, conflicts_with = "str_room_id")]
        room_id: Option<u64>,
        /// String room of the PrivateMapKey.
        #[arg(long)]
        str_room_id: Option<String>,
        /// PrivateMapKey privileges: a number 0..=255 or a comma list of
        /// create,enter,send-audio,recv-audio,send-video,recv-video,send-sub-video,recv-sub-video,all.
        #[arg(long, default_value = "all")]
        privileges: String,
    },
}

#[derive(Subcommand, Debug)]
enum RoomsCmd {
    /// List live rooms and their members.
    List {
        /// Only this app's rooms.
        #[arg(long)]
        sdkappid: Option<u64>,
    },
    /// Remove one user from a room (their session ends).
    RemoveUser {
        /// The SdkAppId.
        sdkappid: u64,
        /// The room: digits for a numeric room, otherwise a string room.
        room: String,
        /// The user id.
        user: String,
        /// Also ban the user from the room for this many seconds (0 = no ban).
        #[arg(long, default_value_t = 0)]
        ban_secs: u64,
    },
    /// Dismiss a room: every member's session ends.
    Dismiss {
        /// The SdkAppId.
        sdkappid: u64,
        /// The room: digits for a numeric room, otherwise a string room.
        room: String,
    },
}

#[derive(Subcommand, Debug)]
enum BlocklistCmd {
    /// Block a source prefix.
    Add {
        /// IPv4 or IPv6 prefix, e.g. 198.18.5.0/24 (a bare address means /32 or /128).
        cidr: String,
        /// Lifetime; 0 keeps it until removed (0..=2592000).
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        ttl_secs: u64,
        /// Why (up to 128 characters).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Unblock a prefix.
    Remove {
        /// The prefix as listed, e.g. 198.18.5.0/24.
        cidr: String,
    },
    /// List blocked prefixes.
    List,
}

#[derive(Subcommand, Debug)]
enum LimitsCmd {
    /// Show the limits.
    Show,
    /// Change limits; fields not given keep their current value.
    Set(LimitArgs),
}

#[derive(Args, Debug)]
struct LimitArgs {
    /// Media packets per second per source.
    #[arg(long)]
    pps_rate_per_sec: Option<u32>,
    /// Media burst per source.
    #[arg(long)]
    pps_burst: Option<u32>,
    /// Joins per second per source.
    #[arg(long)]
    join_rate_per_sec: Option<u32>,
    /// Join burst per source.
    #[arg(long)]
    join_burst: Option<u32>,
    /// Lowest relayed UDP port.
    #[arg(long)]
    port_min: Option<u16>,
    /// Highest relayed UDP port.
    #[arg(long)]
    port_max: Option<u16>,
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Every live node: region, endpoints, load, and how far behind its copy is.
    Status,
    /// Where a client of this room should join, best first (hosting node, region, load).
    Select {
        /// The app.
        #[arg(long)]
        sdkappid: u32,
        /// The numeric room.
        #[arg(long, conflicts_with = "str_room_id")]
        room_id: Option<u64>,
        /// The string room.
        #[arg(long)]
        str_room_id: Option<String>,
        /// The client's region.
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Versions, uptime, certificate and relayd counters.
    Status,
    /// Health checks; exits 1 when degraded.
    Health,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Role {
    Admin,
    Operator,
    Auditor,
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Create an API key; prints its SecretKey once.
    Create {
        /// What the key may do.
        #[arg(long, value_enum)]
        role: Role,
        /// A label to recognise it by.
        #[arg(long)]
        label: String,
    },
    /// List API keys (never secrets).
    List,
    /// Replace a key; the old one keeps working for the overlap. Prints the new key once.
    Rotate {
        /// The SecretId.
        secret_id: String,
        /// How long the old key keeps working.
        #[arg(long, value_name = "SECS", default_value_t = 86_400)]
        overlap_secs: u64,
    },
    /// Revoke a key at once.
    Revoke {
        /// The SecretId.
        secret_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Audit entries, oldest first.
    Query {
        /// Only entries at or after: Unix seconds, or an age like 90s, 15m, 2h, 7d.
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Only entries before: Unix seconds, or an age.
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
        /// Most entries.
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Args, Debug)]
struct TrtcCommon {
    /// X-TC-Region header (optional, ignored by edgerelay).
    #[arg(long)]
    region: Option<String>,
}

#[derive(Subcommand, Debug)]
enum TrtcCmd {
    /// DismissRoom: end a numeric room.
    DismissRoom {
        /// The SdkAppId.
        #[arg(long)]
        sdkappid: u64,
        /// The numeric room.
        #[arg(long)]
        room_id: u64,
        #[command(flatten)]
        common: TrtcCommon,
    },
    /// DismissRoomByStrRoomId: end a string room.
    DismissRoomByStrRoomId {
        /// The SdkAppId.
        #[arg(long)]
        sdkappid: u64,
        /// The string room.
        #[arg(long)]
        room_id: String,
        #[command(flatten)]
        common: TrtcCommon,
    },
    /// RemoveUser: remove users (1..=10) from a numeric room.
    RemoveUser {
        /// The SdkAppId.
        #[arg(long)]
        sdkappid: u64,
        /// The numeric room.
        #[arg(long)]
        room_id: u64,
        /// A user to remove (repeat for several).
        #[arg(long = "user-id", required = true)]
        user_ids: Vec<String>,
        /// Also ban them from the room for this many seconds (edgerelay's `BanSeconds`).
        #[arg(long, default_value_t = 0)]
        ban_secs: u64,
        #[command(flatten)]
        common: TrtcCommon,
    },
    /// RemoveUserByStrRoomId: remove users (1..=10) from a string room.
    RemoveUserByStrRoomId {
        /// The SdkAppId.
        #[arg(long)]
        sdkappid: u64,
        /// The string room.
        #[arg(long)]
        room_id: String,
        /// A user to remove (repeat for several).
        #[arg(long = "user-id", required = true)]
        user_ids: Vec<String>,
        /// Also ban them from the room for this many seconds (edgerelay's `BanSeconds`).
        #[arg(long, default_value_t = 0)]
        ban_secs: u64,
        #[command(flatten)]
        common: TrtcCommon,
    },
    /// Any action with a JSON body, e.g. `trtc call DismissRoom '{"SdkAppId":1,"RoomId":2}'`.
    Call {
        /// The X-TC-Action.
        action: String,
        /// The JSON body.
        body: String,
        #[command(flatten)]
        common: TrtcCommon,
    },
}

#[derive(Subcommand, Debug)]
enum XdpCmd {
    /// Per-verdict packet (and byte) counters of the XDP program, blocklist and limits.
    Status,
}

/// Exit codes, one per failure class (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Other = 1,
    Usage = 2,
    Auth = 3,
    Invalid = 4,
    NotFound = 5,
    RateLimited = 6,
    Unreachable = 7,
    Conflict = 8,
    Server = 9,
}

impl Exit {
    fn for_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Auth,
            400 | 405 | 411 | 413 | 414 | 415 | 422 | 431 => Self::Invalid,
            404 => Self::NotFound,
            409 => Self::Conflict,
            429 => Self::RateLimited,
            500..=599 => Self::Server,
            _ => Self::Other,
        }
    }

    /// For a Tencent-envelope error code (which comes with HTTP 200).
    fn for_code(code: &str) -> Self {
        let class = code.split('.').next().unwrap_or(code);
        match class {
            "AuthFailure" | "UnauthorizedOperation" => Self::Auth,
            "InvalidParameter"
            | "InvalidParameterValue"
            | "MissingParameter"
            | "MalformedJson"
            | "InvalidAction"
            | "UnsupportedOperation" => Self::Invalid,
            "ResourceNotFound" => Self::NotFound,
            "RequestLimitExceeded" => Self::RateLimited,
            "ResourceInUse" | "FailedOperation" => Self::Conflict,
            "InternalError" => Self::Server,
            _ => Self::Other,
        }
    }
}

/// A failed command: what to print and how to exit.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into() }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let exit = match e {
            ClientError::Unreachable { .. } | ClientError::PinMismatch { .. } | ClientError::Body(_) => {
                Exit::Unreachable
            }
            _ => Exit::Usage,
        };
        Self::new(exit, e.to_string())
    }
}

type Result<T, E = Failure> = std::result::Result<T, E>;

/// The signed client plus output mode.
struct Api {
    client: Client,
    json: bool,
    out: String,
}

impl Api {
    /// Sends; a non-2xx answer becomes a [`Failure`] carrying the server's error.
    fn send(&self, call: &Call) -> Result<Response> {
        let resp = self.client.send(call)?;
        match resp.api_error() {
            None => Ok(resp),
            Some(e) => {
                let mut message = e.to_string();
                if let Some(after) = &resp.retry_after {
                    let _ = write!(message, "\nretry after {after} s");
                }
                Err(Failure::new(Exit::for_status(e.status), message))
            }
        }
    }

    /// Sends `call` and reads its answer as `T`, the API's type for it.
    fn value<T: DeserializeOwned>(&self, call: &Call) -> Result<(Response, T)> {
        let resp = self.send(call)?;
        let v = serde_json::from_slice(&resp.body)
            .map_err(|e| Failure::new(Exit::Server, format!("the server answered an unexpected body: {e}")))?;
        Ok((resp, v))
    }

    /// Runs `call`; in `--json` mode prints the body verbatim, else hands the answer to `show`.
    fn show<T: DeserializeOwned>(&mut self, call: &Call, show: impl FnOnce(&T, &mut String)) -> Result<()> {
        let (resp, v) = self.value(call)?;
        if self.json {
            self.raw(&resp);
        } else {
            show(&v, &mut self.out);
        }
        Ok(())
    }

    fn raw(&mut self, resp: &Response) {
        let text = resp.text();
        self.out.push_str(&text);
        if !text.is_empty() && !text.ends_with('\n') {
            self.out.push('\n');
        }
    }

    /// Runs a call answered 204; prints `done` (not in `--json` mode).
    fn done(&mut self, call: &Call, done: &str) -> Result<()> {
        let resp = self.send(call)?;
        if self.json {
            self.raw(&resp);
        } else {
            let _ = writeln!(self.out, "{done}");
        }
        Ok(())
    }
}

/// A boolean as a table cell.
fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// A JSON value as a table cell: strings bare, null as `-`, booleans yes/no.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => yes(*b),
        other => other.to_string(),
    }
}

/// A wire enum (role, state, source) as its wire name.
fn name<T: serde::Serialize>(v: &T) -> String {
    cell(&serde_json::to_value(v).unwrap_or(Value::Null))
}

/// Left-aligned columns separated by two spaces.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (c, w) in cells.zip(&widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// `key: value` lines, keys aligned.
fn pairs(out: &mut String, rows: &[(&str, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in rows {
        let _ = writeln!(out, "{:<w$} {v}", format!("{k}:"));
    }
}

/// `yyyy-mm-ddThh:mm:ssZ` for Unix seconds; `-` for none.
fn time_cell(v: Option<u64>) -> String {
    match v {
        Some(t) => {
            let s = t % 86_400;
            format!("{}T{:02}:{:02}:{:02}Z", control::tc3::utc_date(t), s / 3600, s / 60 % 60, s % 60)
        }
        None => "-".into(),
    }
}

/// Unix seconds, or an age (`90s`, `15m`, `2h`, `7d`) before now.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(t) = s.parse::<u64>() {
        return Ok(t);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: expected Unix seconds or an age like 90s, 15m, 2h, 7d")),
    };
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number before {unit:?}"))?;
    Ok(unix_now().saturating_sub(n.saturating_mul(mult)))
}

/// PrivateMapKey privileges from a number or names (bits as in TRTC's PrivateMapKey).
fn parse_privileges(s: &str) -> Result<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut bits = 0;
    for p in s.split(',') {
        bits |= match p.trim() {
            "create" => 1,
            "enter" => 2,
            "send-audio" => 4,
            "recv-audio" => 8,
            "send-video" => 16,
            "recv-video" => 32,
            "send-sub-video" => 64,
            "recv-sub-video" => 128,
            "all" => 255,
            other => return Err(Failure::new(Exit::Usage, format!("--privileges: unknown privilege {other:?}"))),
        };
    }
    Ok(bits)
}

/// Splits `ip/len` (or a bare address: /32, /128) for `DELETE /v1/blocklist/{ip}/{len}`.
fn split_cidr(cidr: &str) -> Result<(String, String)> {
    let (ip, len) = match cidr.split_once('/') {
        Some((ip, len)) => (ip, len.to_owned()),
        None => (cidr, if cidr.contains(':') { "128" } else { "32" }.to_owned()),
    };
    if ip.parse::<std::net::IpAddr>().is_err() || len.parse::<u8>().is_err() {
        return Err(Failure::new(Exit::Usage, format!("{cidr:?} is not an IP prefix like 198.18.5.0/24")));
    }
    Ok((ip.to_owned(), len))
}

fn app_pairs(app: &api::App, secret: Option<&str>, out: &mut String) {
    let secrets: Vec<String> = app
        .secrets
        .iter()
        .map(|s| format!("created {} expires {}", time_cell(Some(s.created_at)), time_cell(s.expires_at)))
        .collect();
    let mut rows = vec![
        ("sdkappid", app.sdkappid.to_string()),
        ("max rooms", app.quotas.max_rooms.to_string()),
        ("max members per room", app.quotas.max_members_per_room.to_string()),
        ("max sessions", app.quotas.max_sessions.to_string()),
        ("require private map key", yes(app.require_private_map_key)),
        ("allow v1 joins", yes(app.allow_v1_joins)),
        ("secrets", secrets.len().to_string()),
    ];
    for s in &secrets {
        rows.push(("  secret", s.clone()));
    }
    if let Some(secret) = secret {
        rows.push(("secret (shown once)", secret.to_owned()));
    }
    pairs(out, &rows);
}

fn app_with_secret(a: &api::AppWithSecret, out: &mut String) {
    app_pairs(&a.app, Some(&a.secret), out);
}

/// The quotas to send: `None` when no quota flag is given; flags not given keep `base`.
fn quotas(q: &QuotaArgs, base: Quotas) -> Option<Quotas> {
    if q.max_rooms.is_none() && q.max_members_per_room.is_none() && q.max_sessions.is_none() {
        return None;
    }
    Some(Quotas {
        max_rooms: q.max_rooms.unwrap_or(base.max_rooms),
        max_members_per_room: q.max_members_per_room.unwrap_or(base.max_members_per_room),
        max_sessions: q.max_sessions.unwrap_or(base.max_sessions),
    })
}

fn body<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("API request types serialize")
}

fn apps(api: &mut Api, cmd: &AppsCmd) -> Result<()> {
    match cmd {
        AppsCmd::Create { sdkappid, quotas: q, require_private_map_key, allow_v1_joins } => {
            let req = api::CreateApp {
                sdkappid: *sdkappid,
                quotas: quotas(q, Quotas::DEFAULT),
                require_private_map_key: Some(*require_private_map_key),
                allow_v1_joins: Some(*allow_v1_joins),
            };
            api.show(&Call::json(Method::Post, &["v1", "apps"], &body(&req)), app_with_secret)
        }
        AppsCmd::List => api.show(&Call::new(Method::Get, &["v1", "apps"]), |v: &api::Apps, out| {
            let rows: Vec<Vec<String>> = v
                .apps
                .iter()
                .map(|a| {
                    vec![
                        a.sdkappid.to_string(),
                        a.quotas.max_rooms.to_string(),
                        a.quotas.max_members_per_room.to_string(),
                        yes(a.require_private_map_key),
                        a.secrets.len().to_string(),
                    ]
                })
                .collect();
            table(out, &["SDKAPPID", "MAX_ROOMS", "MAX_MEMBERS", "PRIVATE_MAP_KEY", "SECRETS"], &rows);
        }),
        AppsCmd::Show { sdkappid } => api
            .show(&Call::new(Method::Get, &["v1", "apps", &sdkappid.to_string()]), |a: &api::App, out| {
                app_pairs(a, None, out)
            }),
        AppsCmd::Update { sdkappid, quotas: q, require_private_map_key, allow_v1_joins } => {
            let id = sdkappid.to_string();
            let all_given = q.max_rooms.is_some() && q.max_members_per_room.is_some() && q.max_sessions.is_some();
            let base = if all_given || quotas(q, Quotas::DEFAULT).is_none() {
                Quotas::DEFAULT
            } else {
                // Fill the quotas not given from the current values, so they are kept.
                let (_, current): (_, api::App) = api.value(&Call::new(Method::Get, &["v1", "apps", &id]))?;
                current.quotas
            };
            let req = api::PatchApp {
                quotas: quotas(q, base),
                require_private_map_key: *require_private_map_key,
                allow_v1_joins: *allow_v1_joins,
            };
            if req == api::PatchApp::default() {
                return Err(Failure::new(
                    Exit::Usage,
                    "nothing to change: give --max-rooms, --max-members-per-room, --max-sessions, \
                     --require-private-map-key or --allow-v1-joins",
                ));
            }
            api.show(&Call::json(Method::Patch, &["v1", "apps", &id], &body(&req)), |a: &api::App, out| {
                app_pairs(a, None, out)
            })
        }
        AppsCmd::RotateSecret { sdkappid, overlap_secs } => {
            let call = Call::json(
                Method::Post,
                &["v1", "apps", &sdkappid.to_string(), "rotate-secret"],
                &body(&api::Overlap { overlap_secs: *overlap_secs }),
            );
            api.show(&call, app_with_secret)
        }
        AppsCmd::Delete { sdkappid } => api.done(
            &Call::new(Method::Delete, &["v1", "apps", &sdkappid.to_string()]),
            &format!("deleted app {sdkappid}"),
        ),
    }
}

fn usersig(api: &mut Api, cmd: &UsersigCmd) -> Result<()> {
    let UsersigCmd::Mint { sdkappid, user_id, expire_secs, room_id, str_room_id, privileges } = cmd;
    let private_map_key = if room_id.is_some() || str_room_id.is_some() {
        Some(api::PrivateMapKeyRequest {
            room_id: *room_id,
            str_room_id: str_room_id.clone(),
            privileges: parse_privileges(privileges)?,
        })
    } else {
        None
    };
    let req = api::MintUserSig {
        user_id: user_id.clone(),
        expire_secs: *expire_secs,
        private_map_key,
        room_id: None,
        str_room_id: None,
        region: None,
    };
    let call = Call::json(Method::Post, &["v1", "apps", &sdkappid.to_string(), "usersig"], &body(&req));
    api.show(&call, |v: &api::UserSig, out| {
        let mut rows = vec![("usersig", v.usersig.clone())];
        if let Some(pmk) = &v.private_map_key {
            rows.push(("private_map_key", pmk.clone()));
        }
        pairs(out, &rows);
    })
}

fn rooms(api: &mut Api, cmd: &RoomsCmd) -> Result<()> {
    match cmd {
        RoomsCmd::List { sdkappid } => {
            let mut call = Call::new(Method::Get, &["v1", "rooms"]);
            if let Some(id) = sdkappid {
                call = call.query("sdkappid", id);
            }
            api.show(&call, |v: &api::Rooms, out| {
                let mut rows = Vec::new();
                for room in &v.rooms {
                    let (app, name) = (room.sdkappid.to_string(), room.room.clone());
                    if room.members.is_empty() {
                        rows.push(vec![app.clone(), name.clone(), "-".into(), "-".into(), "-".into(), "-".into()]);
                    }
                    for m in &room.members {
                        rows.push(vec![
                            app.clone(),
                            name.clone(),
                            m.user.clone(),
                            m.addr.clone(),
                            yes(m.send),
                            yes(m.recv),
                        ]);
                    }
                }
                table(out, &["SDKAPPID", "ROOM", "USER", "ADDR", "SEND", "RECV"], &rows);
                let _ = writeln!(out, "{} rooms", v.rooms.len());
            })
        }
        RoomsCmd::RemoveUser { sdkappid, room, user, ban_secs } => {
            let mut call =
                Call::new(Method::Delete, &["v1", "apps", &sdkappid.to_string(), "rooms", room, "users", user]);
            if *ban_secs > 0 {
                call = call.query("ban_secs", ban_secs);
            }
            let banned = if *ban_secs > 0 { format!(", banned for {ban_secs} s") } else { String::new() };
            api.done(&call, &format!("removed {user} from room {room} of app {sdkappid}{banned}"))
        }
        RoomsCmd::Dismiss { sdkappid, room } => {
            let call = Call::new(Method::Delete, &["v1", "apps", &sdkappid.to_string(), "rooms", room]);
            api.done(&call, &format!("dismissed room {room} of app {sdkappid}"))
        }
    }
}

fn blocklist_rows(v: &api::Blocklist) -> Vec<Vec<String>> {
    v.entries
        .iter()
        .map(|e| {
            let ttl = match e.ttl_secs {
                0 => "permanent".into(),
                n => n.to_string(),
            };
            vec![e.cidr.clone(), name(&e.source), ttl, time_cell(e.expires_at), e.reason.clone()]
        })
        .collect()
}

const BLOCKLIST_HEADER: [&str; 5] = ["CIDR", "SOURCE", "TTL_SECS", "EXPIRES", "REASON"];

fn blocklist(api: &mut Api, cmd: &BlocklistCmd) -> Result<()> {
    match cmd {
        BlocklistCmd::Add { cidr, ttl_secs, reason } => {
            let req = api::AddBlock { cidr: cidr.clone(), ttl_secs: *ttl_secs, reason: reason.clone() };
            let resp = api.send(&Call::json(Method::Post, &["v1", "blocklist"], &body(&req)))?;
            if api.json {
                api.raw(&resp);
            } else {
                let _ = writeln!(api.out, "blocked {cidr}");
            }
            Ok(())
        }
        BlocklistCmd::Remove { cidr } => {
            let (ip, len) = split_cidr(cidr)?;
            api.done(&Call::new(Method::Delete, &["v1", "blocklist", &ip, &len]), &format!("unblocked {ip}/{len}"))
        }
        BlocklistCmd::List => api.show(&Call::new(Method::Get, &["v1", "blocklist"]), |v: &api::Blocklist, out| {
            table(out, &BLOCKLIST_HEADER, &blocklist_rows(v));
        }),
    }
}

fn limit_pairs(l: &Limits, out: &mut String) {
    let rows = [
        ("pps_rate_per_sec", l.pps_rate_per_sec.to_string()),
        ("pps_burst", l.pps_burst.to_string()),
        ("join_rate_per_sec", l.join_rate_per_sec.to_string()),
        ("join_burst", l.join_burst.to_string()),
        ("port_min", l.port_min.to_string()),
        ("port_max", l.port_max.to_string()),
    ];
    pairs(out, &rows);
}

fn limits(api: &mut Api, cmd: &LimitsCmd) -> Result<()> {
    match cmd {
        LimitsCmd::Show => api.show(&Call::new(Method::Get, &["v1", "limits"]), limit_pairs),
        LimitsCmd::Set(a) => {
            let given = [a.pps_rate_per_sec, a.pps_burst, a.join_rate_per_sec, a.join_burst];
            if given.iter().all(Option::is_none) && a.port_min.is_none() && a.port_max.is_none() {
                return Err(Failure::new(Exit::Usage, "nothing to change: give at least one limit"));
            }
            let (_, cur): (_, Limits) = api.value(&Call::new(Method::Get, &["v1", "limits"]))?;
            let l = Limits {
                pps_rate_per_sec: a.pps_rate_per_sec.unwrap_or(cur.pps_rate_per_sec),
                pps_burst: a.pps_burst.unwrap_or(cur.pps_burst),
                join_rate_per_sec: a.join_rate_per_sec.unwrap_or(cur.join_rate_per_sec),
                join_burst: a.join_burst.unwrap_or(cur.join_burst),
                port_min: a.port_min.unwrap_or(cur.port_min),
                port_max: a.port_max.unwrap_or(cur.port_max),
            };
            api.show(&Call::json(Method::Put, &["v1", "limits"], &body(&l)), limit_pairs)
        }
    }
}

fn duration_cell(s: u64) -> String {
    format!("{}d {:02}:{:02}:{:02}", s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60)
}

fn node(api: &mut Api, cmd: &NodeCmd) -> Result<u8> {
    match cmd {
        NodeCmd::Status => {
            api.show(&Call::new(Method::Get, &["v1", "node"]), |v: &api::Node, out| {
                let mut rows = vec![
                    ("control version", v.control.version.clone()),
                    ("control uptime", duration_cell(v.control.uptime_secs)),
                    ("certificate", v.control.cert_sha256.clone()),
                    ("certificate expires", time_cell(Some(v.control.cert_not_after))),
                    ("relayd reachable", yes(v.relayd.reachable)),
                ];
                if let Some(k) = &v.relayd.key {
                    rows.push(("relay key", k.public_key.to_string()));
                    rows.push(("relay key fingerprint", k.fingerprint.clone()));
                    if let (Some(p), Some(u)) = (k.previous_key, k.previous_until) {
                        rows.push(("previous relay key", format!("{p} (until {})", time_cell(Some(u)))));
                    }
                    if let Some(l) = k.listen {
                        rows.push(("relay listen", l.to_string()));
                    }
                }
                if let Some(s) = &v.relayd.stats {
                    rows.extend([
                        ("sessions", s.sessions.to_string()),
                        ("rooms", s.rooms.to_string()),
                        ("rx_packets", s.rx_packets.to_string()),
                        ("tx_packets", s.tx_packets.to_string()),
                        ("media_accepted", s.media_accepted.to_string()),
                        ("control_in", s.control_in.to_string()),
                    ]);
                }
                pairs(out, &rows);
                if let Some(s) = &v.relayd.stats {
                    for (title, counts) in [("drops by reason", &s.drops), ("joins by result", &s.joins)] {
                        let nonzero: Vec<Vec<String>> = counts
                            .iter()
                            .filter(|(_, n)| **n != 0)
                            .map(|(k, n)| vec![format!("  {k}"), n.to_string()])
                            .collect();
                        let _ = writeln!(out, "{title}:{}", if nonzero.is_empty() { " none" } else { "" });
                        if !nonzero.is_empty() {
                            let mut t = String::new();
                            table(&mut t, &["", ""], &nonzero);
                            out.extend(t.lines().skip(1).map(|l| format!("{l}\n")));
                        }
                    }
                }
            })?;
            Ok(0)
        }
        NodeCmd::Health => {
            let (resp, v): (_, api::Health) = api.value(&Call::new(Method::Get, &["v1", "node", "health"]))?;
            if api.json {
                api.raw(&resp);
            } else {
                let _ = writeln!(api.out, "status: {}", name(&v.status));
                let rows: Vec<Vec<String>> = v
                    .checks
                    .iter()
                    .map(|c| vec![c.name.clone(), if c.ok { "ok" } else { "FAIL" }.into(), c.detail.clone()])
                    .collect();
                table(&mut api.out, &["CHECK", "STATE", "DETAIL"], &rows);
            }
            Ok(if v.status == api::HealthStatus::Ok { 0 } else { Exit::Other as u8 })
        }
    }
}

fn cluster(api: &mut Api, cmd: &ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Status => api.show(&Call::new(Method::Get, &["v1", "cluster"]), |v: &api::ClusterStatus, out| {
            let redis = match (&v.redis_reachable, &v.redis_error) {
                (true, _) => "reachable".to_owned(),
                (false, Some(e)) => format!("UNREACHABLE ({e})"),
                (false, None) => "UNREACHABLE".to_owned(),
            };
            pairs(out, &[("this node", v.node_id.clone()), ("redis", redis), ("applied", v.applied.clone())]);
            let rows: Vec<Vec<String>> = v
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node_id.clone(),
                        n.region.clone(),
                        n.relays.iter().map(|r| r.endpoint.clone()).collect::<Vec<_>>().join(","),
                        n.load.sessions.to_string(),
                        n.load.rooms.to_string(),
                        n.load.pps.to_string(),
                        format!("{:.1}", n.load.cpu_percent),
                        if n.relayd_reachable { "up" } else { "DOWN" }.into(),
                        format!("{} ms", n.lag_ms),
                    ]
                })
                .collect();
            out.push('\n');
            table(out, &["NODE", "REGION", "ENDPOINTS", "SESSIONS", "ROOMS", "PPS", "CPU%", "RELAYD", "LAG"], &rows);
            out.push('\n');
            if let Some(e) = &v.legs_error {
                pairs(out, &[("legs", format!("unknown ({e})"))]);
            } else {
                let rows: Vec<Vec<String>> = v
                    .legs
                    .iter()
                    .map(|l| {
                        vec![
                            l.sdkappid.to_string(),
                            l.room.clone(),
                            l.peer.clone(),
                            l.role.clone(),
                            l.state.clone(),
                            format!("{}/{}", l.streams_in, l.streams_out),
                            format!("{} ms", l.age_ms),
                            l.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(out, &["APP", "ROOM", "PEER", "ROLE", "LEG", "STREAMS IN/OUT", "AGE", "LAST ERROR"], &rows);
            }
        }),
        ClusterCmd::Select { sdkappid, room_id, str_room_id, region } => {
            let id = sdkappid.to_string();
            let mut call = Call::new(Method::Get, &["v1", "apps", &id, "nodes"]);
            if let Some(r) = room_id {
                call = call.query("room_id", r);
            }
            if let Some(r) = str_room_id {
                call = call.query("str_room_id", r);
            }
            if let Some(r) = region {
                call = call.query("region", r);
            }
            api.show(&call, |v: &api::NodeSelection, out| {
                let rows: Vec<Vec<String>> =
                    v.relays.iter().map(|r| vec![r.endpoint.clone(), r.public_key.to_string()]).collect();
                pairs(out, &[("nodes", v.nodes.join(", "))]);
                table(out, &["ENDPOINT", "PUBLIC KEY"], &rows);
            })
        }
    }
}

fn key_pairs(secret_id: &str, role: api::Role, label: &str, secret_key: Option<&str>, out: &mut String) {
    let mut rows = vec![("secret_id", secret_id.to_owned()), ("role", name(&role)), ("label", label.to_owned())];
    if let Some(k) = secret_key {
        rows.push(("secret_key (shown once)", k.to_owned()));
    }
    pairs(out, &rows);
}

fn new_key(k: &api::NewKey, out: &mut String) {
    key_pairs(&k.secret_id, k.role, &k.label, Some(&k.secret_key), out);
}

fn keys(api: &mut Api, cmd: &KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::Create { role, label } => {
            let role = match role {
                Role::Admin => api::Role::Admin,
                Role::Operator => api::Role::Operator,
                Role::Auditor => api::Role::Auditor,
            };
            let req = api::CreateKey { role, label: label.clone() };
            api.show(&Call::json(Method::Post, &["v1", "keys"], &body(&req)), new_key)
        }
        KeysCmd::List => api.show(&Call::new(Method::Get, &["v1", "keys"]), |v: &api::Keys, out| {
            let rows: Vec<Vec<String>> = v
                .keys
                .iter()
                .map(|k| {
                    vec![
                        k.secret_id.clone(),
                        name(&k.role),
                        name(&k.state),
                        time_cell(Some(k.created_at)),
                        k.label.clone(),
                    ]
                })
                .collect();
            table(out, &["SECRET_ID", "ROLE", "STATE", "CREATED", "LABEL"], &rows);
        }),
        KeysCmd::Rotate { secret_id, overlap_secs } => {
            let req = api::Overlap { overlap_secs: *overlap_secs };
            api.show(&Call::json(Method::Post, &["v1", "keys", secret_id, "rotate"], &body(&req)), new_key)
        }
        KeysCmd::Revoke { secret_id } => {
            api.done(&Call::new(Method::Delete, &["v1", "keys", secret_id]), &format!("revoked {secret_id}"))
        }
    }
}

fn audit(api: &mut Api, cmd: &AuditCmd) -> Result<()> {
    let AuditCmd::Query { since, until, limit } = cmd;
    let mut call = Call::new(Method::Get, &["v1", "audit"]);
    for (k, v) in [("since", since), ("until", until), ("limit", limit)] {
        if let Some(v) = v {
            call = call.query(k, v);
        }
    }
    api.show(&call, |v: &api::AuditLog, out| {
        let rows: Vec<Vec<String>> = v
            .entries
            .iter()
            .map(|e| {
                vec![time_cell(Some(e.time)), e.who.clone(), e.source_ip.to_string(), e.outcome.clone(), e.what.clone()]
            })
            .collect();
        table(out, &["TIME", "WHO", "SOURCE", "OUTCOME", "WHAT"], &rows);
    })
}

fn trtc(api: &mut Api, cmd: &TrtcCmd) -> Result<()> {
    let (action, body, common) = match cmd {
        TrtcCmd::DismissRoom { sdkappid, room_id, common } => {
            ("DismissRoom", body(&api::TDismissRoom { sdkappid: *sdkappid, room_id: *room_id }), common)
        }
        TrtcCmd::DismissRoomByStrRoomId { sdkappid, room_id, common } => (
            "DismissRoomByStrRoomId",
            body(&api::TDismissStrRoom { sdkappid: *sdkappid, room_id: room_id.clone() }),
            common,
        ),
        TrtcCmd::RemoveUser { sdkappid, room_id, user_ids, ban_secs, common } => (
            "RemoveUser",
            body(&api::TRemoveUser {
                sdkappid: *sdkappid,
                room_id: *room_id,
                user_ids: user_ids.clone(),
                ban_secs: *ban_secs,
            }),
            common,
        ),
        TrtcCmd::RemoveUserByStrRoomId { sdkappid, room_id, user_ids, ban_secs, common } => (
            "RemoveUserByStrRoomId",
            body(&api::TRemoveStrRoomUser {
                sdkappid: *sdkappid,
                room_id: room_id.clone(),
                user_ids: user_ids.clone(),
                ban_secs: *ban_secs,
            }),
            common,
        ),
        TrtcCmd::Call { action, body, common } => {
            let body: Value = serde_json::from_str(body)
                .map_err(|e| Failure::new(Exit::Usage, format!("the body is not JSON: {e}")))?;
            (action.as_str(), body, common)
        }
    };
    let mut call =
        Call::json(Method::Post, &[""], &body).header("X-TC-Action", action).header("X-TC-Version", api::TRTC_VERSION);
    if let Some(region) = &common.region {
        call = call.header("X-TC-Region", region);
    }
    let (resp, v): (_, api::TEnvelope) = api.value(&call)?;
    let request_id = v.response.request_id;
    if let Some(err) = v.response.error {
        if api.json {
            api.raw(&resp);
        }
        return Err(Failure::new(Exit::for_code(&err.code), format!("{}: {} ({request_id})", err.code, err.message)));
    }
    if api.json {
        api.raw(&resp);
    } else {
        let _ = writeln!(api.out, "{action}: ok (RequestId {request_id})");
    }
    Ok(())
}

/// The XDP action a verdict reason ends in (from the reason names of `xdp-prog`).
fn xdp_action(reason: &str) -> &'static str {
    if reason.starts_with("pass_") || reason == "no_socket" {
        "XDP_PASS"
    } else if reason.starts_with("redirect_") {
        "XDP_REDIRECT"
    } else {
        "XDP_DROP"
    }
}

fn xdp_status(api: &mut Api) -> Result<()> {
    let (_, node): (_, api::Node) = api.value(&Call::new(Method::Get, &["v1", "node"]))?;
    let (_, blocks): (_, api::Blocklist) = api.value(&Call::new(Method::Get, &["v1", "blocklist"]))?;
    // Limits need relayd; their absence must not hide the counters.
    let limits = api.value::<Limits>(&Call::new(Method::Get, &["v1", "limits"])).map(|(_, v)| v);
    let stats = node.relayd.stats.unwrap_or_default();
    let (packets, bytes) = (&stats.xdp, &stats.xdp_bytes);
    if api.json {
        let limits = limits.ok();
        let all = json!({"relayd_reachable": node.relayd.reachable, "xdp": packets, "xdp_bytes": bytes,
                         "blocklist": blocks.entries, "limits": limits});
        let _ = writeln!(api.out, "{all:#}");
        return Ok(());
    }
    let out = &mut api.out;
    let _ = writeln!(out, "CURRENT EDGERELAY XDP STATUS:\n");
    if !node.relayd.reachable {
        let _ = writeln!(out, "relayd is unreachable: no counters\n");
    } else if packets.is_empty() {
        let _ = writeln!(out, "No XDP counters: relayd runs the socket backend\n");
    } else {
        let kib = |name: &str| bytes.get(name).map_or("-".into(), |b| (b / 1024).to_string());
        let mut per_action: std::collections::BTreeMap<&str, (u64, Option<u64>)> = Default::default();
        let _ = writeln!(out, "Per-verdict statistics:");
        for (reason, &n) in packets {
            let action = xdp_action(reason);
            let _ = writeln!(out, "  {reason:<22} {action:<13} {n:>14} pkts {:>12} KiB", kib(reason));
            let e = per_action.entry(action).or_insert((0, Some(0)));
            e.0 += n;
            e.1 = e.1.zip(bytes.get(reason).copied()).map(|(a, b)| a + b);
        }
        let _ = writeln!(out, "\nAggregate per-action statistics:");
        for (action, (n, b)) in per_action {
            let b = b.map_or("-".into(), |b| (b / 1024).to_string());
            let _ = writeln!(out, "  {action:<36} {n:>14} pkts {b:>12} KiB");
        }
        let _ = writeln!(out);
    }
    match &limits {
        Ok(l) => {
            let _ = writeln!(
                out,
                "Per-source limits:\n  media {} pps (burst {}), joins {}/s (burst {}), ports {}-{}\n",
                l.pps_rate_per_sec, l.pps_burst, l.join_rate_per_sec, l.join_burst, l.port_min, l.port_max,
            );
        }
        Err(e) => {
            let _ = writeln!(out, "Per-source limits: unavailable ({})\n", e.message);
        }
    }
    let _ = writeln!(out, "Blocked source prefixes:");
    let rows = blocklist_rows(&blocks);
    if rows.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut t = String::new();
        table(&mut t, &BLOCKLIST_HEADER, &rows);
        out.extend(t.lines().map(|l| format!("  {l}\n")));
    }
    Ok(())
}

fn credentials(cli: &Cli) -> Result<Credentials> {
    if let Some(path) = &cli.credentials {
        return Ok(Credentials::from_file(path)?);
    }
    Credentials::from_env()?.ok_or_else(|| {
        Failure::new(
            Exit::Usage,
            "no credentials: pass --credentials FILE or set EDGERELAY_ENDPOINT, EDGERELAY_SECRET_ID, \
             EDGERELAY_SECRET_KEY and EDGERELAY_CERT_SHA256 or EDGERELAY_CA_CERT (see --help)",
        )
    })
}

fn run(cli: &Cli, api: &mut Api) -> Result<u8> {
    match &cli.cmd {
        Cmd::Apps(c) => apps(api, c)?,
        Cmd::Usersig(c) => usersig(api, c)?,
        Cmd::Rooms(c) => rooms(api, c)?,
        Cmd::Blocklist(c) => blocklist(api, c)?,
        Cmd::Limits(c) => limits(api, c)?,
        Cmd::Node(c) => return node(api, c),
        Cmd::Cluster(c) => cluster(api, c)?,
        Cmd::Keys(c) => keys(api, c)?,
        Cmd::Audit(c) => audit(api, c)?,
        Cmd::Metrics => {
            let resp = api.send(&Call::new(Method::Get, &["metrics"]))?;
            api.raw(&resp);
        }
        Cmd::Openapi => {
            let (resp, v): (_, Value) = api.value(&Call::new(Method::Get, &["v1", "openapi.json"]))?;
            if api.json {
                api.raw(&resp);
            } else {
                let _ = writeln!(api.out, "{v:#}");
            }
        }
        Cmd::Trtc(c) => trtc(api, c)?,
        Cmd::Xdp(XdpCmd::Status) => xdp_status(api)?,
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let setup = credentials(&cli).and_then(|c| Ok(Client::new(&c, Duration::from_secs(cli.timeout.max(1)))?));
    let mut api = match setup {
        Ok(client) => Api { client, json: cli.json, out: String::new() },
        Err(f) => {
            eprintln!("relayctl: {}", f.message);
            return ExitCode::from(f.exit as u8);
        }
    };
    let result = run(&cli, &mut api);
    // A closed pipe (`relayctl ... | head`) is not worth a panic.
    let _ = std::io::stdout().write_all(api.out.as_bytes());
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("{}", f.message);
            ExitCode::from(f.exit as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_classes() {
        assert_eq!(Exit::for_status(401), Exit::Auth);
        assert_eq!(Exit::for_status(403), Exit::Auth);
        assert_eq!(Exit::for_status(400), Exit::Invalid);
        assert_eq!(Exit::for_status(413), Exit::Invalid);
        assert_eq!(Exit::for_status(415), Exit::Invalid);
        assert_eq!(Exit::for_status(404), Exit::NotFound);
        assert_eq!(Exit::for_status(429), Exit::RateLimited);
        assert_eq!(Exit::for_status(409), Exit::Conflict);
        assert_eq!(Exit::for_status(503), Exit::Server);
        assert_eq!(Exit::for_code("AuthFailure.SignatureFailure"), Exit::Auth);
        assert_eq!(Exit::for_code("InvalidParameter.RoomId"), Exit::Invalid);
        assert_eq!(Exit::for_code("ResourceNotFound"), Exit::NotFound);
        assert_eq!(Exit::for_code("RequestLimitExceeded"), Exit::RateLimited);
        assert_eq!(Exit::for_code("Whatever"), Exit::Other);
    }

    #[test]
    fn privileges_and_cidrs_and_times() {
        assert_eq!(parse_privileges("255").unwrap(), 255);
        assert_eq!(parse_privileges("enter, send-audio,recv-audio").unwrap(), 2 | 4 | 8);
        assert_eq!(parse_privileges("all").unwrap(), 255);
        assert_eq!(parse_privileges("fly").unwrap_err().exit, Exit::Usage);
        assert_eq!(split_cidr("198.18.5.0/24").unwrap(), ("198.18.5.0".into(), "24".into()));
        assert_eq!(split_cidr("198.18.5.1").unwrap(), ("198.18.5.1".into(), "32".into()));
        assert_eq!(split_cidr("2001:db8::1").unwrap(), ("2001:db8::1".into(), "128".into()));
        assert!(split_cidr("198.18.5.0/x").is_err());
        assert!(split_cidr("host/24").is_err());
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000);
        let now = unix_now();
        let t = parse_time("2h").unwrap();
        assert!(t <= now - 7200 && t + 5 >= now - 7200, "{t} {now}");
        assert!(parse_time("2w").is_err());
        assert!(parse_time("h").is_err());
        assert_eq!(time_cell(Some(1_767_225_600)), "2026-01-01T00:00:00Z");
        assert_eq!(time_cell(Some(1_767_225_599)), "2025-12-31T23:59:59Z");
        assert_eq!(time_cell(None), "-");
    }

    #[test]
    fn tables_align() {
        let mut out = String::new();
        table(&mut out, &["A", "LONGER"], &[vec!["wide value".into(), "x".into()], vec!["y".into(), "-".into()]]);
        assert_eq!(out, "A           LONGER\nwide value  x\ny           -\n");
        let mut out = String::new();
        pairs(&mut out, &[("a", "1".into()), ("bbb", "2".into())]);
        assert_eq!(out, "a:   1\nbbb: 2\n");
        assert_eq!(xdp_action("pass_not_ours"), "XDP_PASS");
        assert_eq!(xdp_action("redirect_media"), "XDP_REDIRECT");
        assert_eq!(xdp_action("blocklisted"), "XDP_DROP");
    }
}
