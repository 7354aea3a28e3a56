//! `relay-client`: join a room through relayd, send or receive a synthetic SRTP stream and
//! in-room messages, hold a session for an external SRTP tool (`attach`), and mint test
//! credentials.
#![forbid(unsafe_code)]

use relay::time::unix_now;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use relay::client::{
    liveness, write_rtp_header, Client, ClientConfig, Event, Loss, MessageStats, Node, ReceivedMessage, Transmit,
};
use relay::identity::RelayKey;
use relay::ids::{RoomId, Ssrc};
use relay::proto::{DeclaredSsrc, ErrorCode, StreamKind};
use relay::srtp::{self, Profile};
use relay::usersig::{self, PrivilegeMap, RoomRef};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "relay-client",
    version,
    about = "Join an edgerelay room, stream synthetic SRTP, report loss and auth failures; mint test UserSigs",
    after_help = "Examples:\n  \
relay-client usersig --sdkappid 1400000001 --secret $KEY --user alice\n  \
relay-client run --relay 127.0.0.1:7000 --relay-key $(relayd key show -c relayd.toml | awk '/public_key/{print $2}') \\\n      --sdkappid 1400000001 --secret $KEY --user alice --room 42 --send-pps 50 --duration 10\n  \
relay-client run --relay-info token.json --sdkappid 1400000001 --user bob --room 42 --duration 10   # JSON from relay-control\n  \
relay-client run --relay 10.0.0.1:7000=$KEY1 --relay 10.0.0.2:7000=$KEY2 ... --json   # fails over to the second\n  \
relay-client run ... --recv-only --send-message 1:hello --send-message 2:bye --reliable --ordered --duration 3\n  \
relay-client run ... --bind 127.0.0.1:40000 --ssrc 1234 --print-srtp-params   # keys for ffmpeg, then exits\n  \
relay-client attach ... --bind 127.0.0.1:40000 --ssrc 1234   # keys for ffmpeg, held until SIGTERM"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mint a UserSig, or a PrivateMapKey with --room and --privileges (for testing; the
    /// secret belongs on your app server, not in clients).
    Usersig(MintArgs),
    /// Join a room and stream synthetic SRTP and in-room messages. A lost session is joined
    /// again by itself with a fresh SSRC: the same relay after an `unknown_session` answer
    /// (a restart); with several relays (--relay-info's list, or --relay repeated), the
    /// next one in order after no answer in time (--failover-after-ms), wrapping around.
    Run(RunArgs),
    /// Join from --bind, print the SRTP params JSON line (as `run --print-srtp-params`),
    /// free --bind for an external SRTP tool (ffmpeg, GStreamer) and keep the session alive
    /// with authenticated holds from another port until SIGTERM/SIGINT or --duration; then
    /// leave. The tool sends and receives the session's media on --bind. With several
    /// relays the first join moves along them; the session itself does not fail over (its
    /// media and SSRC belong to the tool).
    Attach(AttachArgs),
}

#[derive(Args)]
struct MintArgs {
    /// The app's SdkAppId.
    #[arg(long)]
    sdkappid: u64,
    /// The app's secret key.
    #[arg(long, env = "EDGERELAY_SECRET")]
    secret: String,
    /// The user id (TLS.identifier).
    #[arg(long)]
    user: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86400)]
    expire: u64,
    /// Mint a PrivateMapKey for this room (digits: numeric room, otherwise a string room; `s:` forces string).
    #[arg(long)]
    room: Option<String>,
    /// PrivateMapKey privileges: comma list of create,enter,send-audio,recv-audio,send-video,recv-video,all, or a number.
    #[arg(long, default_value = "all")]
    privileges: String,
}

/// What every joining subcommand takes.
#[derive(Args)]
struct JoinArgs {
    /// relayd's UDP address, as ADDR (its key from --relay-key, or from --relay-info's first
    /// relay) or ADDR=KEY. Repeat it for an ordered list of relays: the first is joined, the
    /// next when the current one stops answering (default: every relay in --relay-info, in
    /// its order).
    #[arg(long, value_name = "ADDR[=KEY]", required_unless_present = "relay_info", value_parser = parse_relay)]
    relay: Vec<(SocketAddr, Option<RelayKey>)>,
    /// The relay's static public key (base64, as `relayd key show` prints it): join v2,
    /// encrypted to it, and accept only answers that prove it. For every --relay without
    /// its own =KEY.
    #[arg(long, conflicts_with = "v1")]
    relay_key: Option<RelayKey>,
    /// The JSON an app back end gets from relay-control's UserSig call (`usersig`, and
    /// `relays`: the ordered `endpoint`/`public_key` list to join and fail over along),
    /// from a file or `-` for stdin.
    #[arg(long, conflicts_with = "v1")]
    relay_info: Option<PathBuf>,
    /// With several relays: move to the next after this many milliseconds without an
    /// authenticated answer (keepalive-acks, media); a client that receives nothing else
    /// probes with keepalives every quarter of it. Default 1200: a dead relay is left in
    /// about a second.
    #[arg(long, value_name = "MS")]
    failover_after_ms: Option<u64>,
    /// Send a cleartext v1 join (relays refuse it unless the app allows v1 joins).
    #[arg(long)]
    v1: bool,
    /// Local address to bind (a fixed port lets an external SRTP tool reuse the session).
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// The app's SdkAppId.
    #[arg(long)]
    sdkappid: u64,
    /// The user id; with --secret, a UserSig is minted locally (default `relay-client`).
    /// With a ready UserSig the relay takes the user from the UserSig, so a --user that
    /// disagrees with it is warned about.
    #[arg(long)]
    user: Option<String>,
    /// App secret to mint the UserSig with (testing only).
    #[arg(long, env = "EDGERELAY_SECRET", conflicts_with = "usersig")]
    secret: Option<String>,
    /// A ready UserSig.
    #[arg(long)]
    usersig: Option<String>,
    /// A PrivateMapKey.
    #[arg(long)]
    private_map_key: Option<String>,
    /// The room (digits: numeric room; `s:NAME` or other text: string room).
    #[arg(long)]
    room: String,
    /// SRTP profile.
    #[arg(long, default_value = "AES_CM_128_HMAC_SHA1_80")]
    profile: Profile,
    /// SSRC to send from (and declare). Default: random.
    #[arg(long)]
    ssrc: Option<u32>,
    /// Declare the stream as audio instead of video.
    #[arg(long)]
    audio: bool,
    /// Declare no stream: receive only.
    #[arg(long)]
    recv_only: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    join: JoinArgs,
    /// Packets per second to send (0: receive only).
    #[arg(long, default_value_t = 0)]
    send_pps: u32,
    /// RTP packet size in bytes (header + payload, before the SRTP tag).
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// How long to run, in seconds (SIGTERM or SIGINT end the run earlier, with the report).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Initial RTP sequence number (e.g. 65500 to exercise ROC wrap).
    #[arg(long, default_value_t = 0)]
    seq: u16,
    /// Join, print the negotiated SRTP keys as ffmpeg `-srtp_out_params`/`-srtp_in_params`
    /// base64 (JSON), and exit without leaving.
    #[arg(long)]
    print_srtp_params: bool,
    /// Print the report as JSON: counts, streams, messages, and the session's history
    /// (`rejoins`, `lost_unknown_session`, `lost_no_answer`, `relay` joined last,
    /// `failover_count`, `failovers: [{from, to, lost_ms, joined_ms}]` in ms since the start).
    #[arg(long)]
    json: bool,
    /// Send an in-room message: command id 1–10, a colon, the text (at most 1024 bytes).
    /// Repeatable; sent in order, 25 a second, from the start of the run.
    #[arg(long, value_name = "CMD:TEXT", value_parser = parse_message)]
    send_message: Vec<(u8, String)>,
    /// Send the messages reliably: retransmitted until the relay acknowledges them (the
    /// run waits up to 3 s past --duration for the last acks).
    #[arg(long)]
    reliable: bool,
    /// Send the messages ordered: every receiver gets them in this order.
    #[arg(long)]
    ordered: bool,
}

#[derive(Args)]
struct AttachArgs {
    #[command(flatten)]
    join: JoinArgs,
    /// Leave after this many seconds (default: run until SIGTERM or SIGINT).
    #[arg(long)]
    duration: Option<f64>,
}

fn parse_relay(s: &str) -> Result<(SocketAddr, Option<RelayKey>), String> {
    let (addr, key) = match s.split_once('=') {
        Some((a, k)) => (a, Some(k.parse::<RelayKey>().map_err(|e| format!("the key after `=`: {e}"))?)),
        None => (s, None),
    };
    let addr = addr.parse().map_err(|e| format!("{addr:?} is not an address (ADDR or ADDR=KEY): {e}"))?;
    Ok((addr, key))
}

fn parse_message(s: &str) -> Result<(u8, String), String> {
    let (cmd, text) = s.split_once(':').ok_or("expected CMD:TEXT, e.g. 1:hello")?;
    let cmd: u8 = cmd.parse().map_err(|_| format!("command id {cmd:?} is not a number"))?;
    if !(relay::proto::msg::MIN_CMD..=relay::proto::msg::MAX_CMD).contains(&cmd) {
        return Err(format!("command id {cmd} is outside 1–10"));
    }
    if text.len() > relay::proto::msg::MAX_DATA_LEN {
        return Err(format!("{} bytes of text; at most 1024", text.len()));
    }
    Ok((cmd, text.to_owned()))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Usersig(a) => mint(a),
        Cmd::Run(a) => run(a),
        Cmd::Attach(a) => attach(a),
    }
}

fn parse_privileges(s: &str) -> Result<PrivilegeMap> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(PrivilegeMap(n));
    }
    let mut bits = 0;
    for p in s.split(',') {
        bits |= match p.trim() {
            "create" => PrivilegeMap::CREATE.0,
            "enter" => PrivilegeMap::ENTER.0,
            "send-audio" => PrivilegeMap::SEND_AUDIO.0,
            "recv-audio" => PrivilegeMap::RECV_AUDIO.0,
            "send-video" => PrivilegeMap::SEND_VIDEO.0,
            "recv-video" => PrivilegeMap::RECV_VIDEO.0,
            "all" => PrivilegeMap::ALL.0,
            other => {
                bail!("unknown privilege {other:?}: use create,enter,send-audio,recv-audio,send-video,recv-video,all")
            }
        };
    }
    Ok(PrivilegeMap(bits))
}

fn mint(a: MintArgs) -> Result<()> {
    let tok = match &a.room {
        None => usersig::mint(a.secret.as_bytes(), a.sdkappid, &a.user, a.expire, unix_now(), None),
        Some(r) => {
            let room = RoomId::parse(r).map_err(|e| anyhow::anyhow!("--room {r:?}: {e}"))?;
            let rr = match &room {
                RoomId::Num(n) => RoomRef::Num(*n),
                RoomId::Str(s) => RoomRef::Str(s),
            };
            usersig::mint_private_map_key(
                a.secret.as_bytes(),
                u32::try_from(a.sdkappid).context("--sdkappid must fit in 32 bits")?,
                &a.user,
                a.expire,
                unix_now(),
                rr,
                parse_privileges(&a.privileges)?,
            )
        }
    };
    println!("{tok}");
    Ok(())
}

#[derive(Default, serde::Serialize)]
struct StreamReport {
    received: u64,
    duplicates: u64,
    first_index: Option<u64>,
    last_index: u64,
    lost: u64,
}

#[derive(Default, serde::Serialize)]
struct Report {
    session: Option<u64>,
    joined: bool,
    refused: Option<String>,
    /// Why the relay ended the session during the run (`room_dismissed: ...`), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<String>,
    sent: u64,
    /// Packets due while the session was lost and being joined again: not sent.
    unsent: u64,
    /// Every SSRC sent from: the first, then the fresh one of each rejoin.
    sent_ssrcs: Vec<u32>,
    /// Sessions lost and joined again (after `unknown_session`, or no answer in time).
    rejoins: u64,
    /// Sessions lost to an `unknown_session` answer (a relay restart, an expiry).
    lost_unknown_session: u64,
    /// Sessions lost to silence past the no-answer deadline.
    lost_no_answer: u64,
    /// The relay joined last.
    relay: Option<SocketAddr>,
    /// Sessions joined at another relay than the one lost (also counted in `rejoins`).
    failover_count: u64,
    /// Each failover, in order.
    failovers: Vec<FailoverReport>,
    received: u64,
    auth_failures: u64,
    replays: u64,
    other_errors: u64,
    streams: BTreeMap<u32, StreamReport>,
    /// In-room messages received, in delivery order.
    messages: Vec<MessageReport>,
    /// What this client did with in-room messages.
    message_stats: MessageStats,
    #[serde(skip)]
    seen: BTreeMap<u32, std::collections::HashSet<u64>>,
}

/// One failover: milliseconds since the start of the run.
#[derive(serde::Serialize)]
struct FailoverReport {
    from: SocketAddr,
    to: SocketAddr,
    /// When the relay `from` was given up (no answer within the failover deadline).
    lost_ms: u64,
    /// When the session at `to` was joined.
    joined_ms: u64,
}

#[derive(serde::Serialize)]
struct MessageReport {
    from: String,
    cmd: u8,
    text: String,
    seq: u32,
    reliable: bool,
    ordered: bool,
}

impl From<ReceivedMessage> for MessageReport {
    fn from(m: ReceivedMessage) -> Self {
        Self {
            from: m.from_user,
            cmd: m.cmd,
            text: String::from_utf8_lossy(&m.data).into_owned(),
            seq: m.seq,
            reliable: m.reliable,
            ordered: m.ordered,
        }
    }
}

/// Points the socket at the client's relay when that changed (a failover).
fn follow(client: &Client, sock: &UdpSocket) -> Result<()> {
    let to = client.relay_addr();
    if sock.peer_addr().ok() != Some(to) {
        sock.connect(to).with_context(|| format!("connecting to {to}"))?;
    }
    Ok(())
}

/// Joins: a fresh join every 250 ms (each v2 attempt is a new handshake; a cookie reply
/// makes the next one carry it at once), for up to 5 s; with several relays, each in turn
/// for the failover deadline, until all were tried for 5 s together.
fn join(client: &mut Client, sock: &UdpSocket, report: &mut Report, buf: &mut [u8]) -> Result<()> {
    let nodes = client.config().nodes.len();
    let per_node = if nodes > 1 {
        Duration::from_millis(liveness::failover_deadline_ms(client.config().failover_after_ms))
    } else {
        Duration::from_secs(5)
    };
    let total = per_node.saturating_mul(nodes as u32).max(Duration::from_secs(5));
    let deadline = Instant::now() + total;
    let mut node_until = Instant::now() + per_node;
    let mut unverified = 0u32;
    report.session = None;
    while report.session.is_none() && report.refused.is_none() {
        let relay = client.relay_addr();
        if Instant::now() > deadline {
            if unverified > 0 {
                bail!(
                    "relay {relay} answered {unverified} time(s), but no answer decrypted under the relay key given: \
                     whoever answers does not hold that key (check --relay-key against `relayd key show`)"
                );
            }
            if nodes > 1 {
                let all: Vec<String> = client.config().nodes.iter().map(|n| n.addr.to_string()).collect();
                bail!(
                    "no answer from any of the {nodes} relays ({}) within {:.1} s",
                    all.join(", "),
                    total.as_secs_f64()
                );
            }
            match client.node().key {
                Some(k) => bail!(
                    "no answer from relay {relay} within 5 s: is it running, and is {k} its key? (a relay drops \
                     joins encrypted to another key without answering; `relayd key show` prints its key)"
                ),
                None => bail!("no answer from relay {relay} within 5 s"),
            }
        }
        if nodes > 1 && Instant::now() > node_until {
            let next = client.try_next_node().expect("not joined yet");
            eprintln!("relay-client: no answer from relay {relay}: trying {}", next.addr);
            follow(client, sock)?;
            node_until = Instant::now() + per_node;
        }
        let n = client.join(buf)?;
        let _ = sock.send(&buf[..n]);
        sock.set_read_timeout(Some(Duration::from_millis(250)))?;
        let until = Instant::now() + Duration::from_millis(250);
        while Instant::now() < until {
            let Ok(n) = sock.recv(buf) else { break };
            match client.handle(&mut buf[..n]) {
                Event::Joined { session } => {
                    report.session = Some(session);
                    report.joined = true;
                    break;
                }
                Event::Refused { code, detail } => {
                    report.refused = Some(format!("{}: {detail}", code.map_or("unknown", |c| c.name())));
                    break;
                }
                Event::Cookie => {
                    let n = client.join(buf)?;
                    let _ = sock.send(&buf[..n]);
                }
                Event::Unverified => unverified += 1,
                _ => {}
            }
        }
    }
    Ok(())
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).expect("OS RNG");
    u32::from_ne_bytes(b)
}

/// What relay-control's UserSig call answers (the fields relay-client reads).
#[derive(serde::Deserialize)]
struct RelayInfo {
    usersig: Option<String>,
    relays: Vec<RelayEntry>,
}

#[derive(serde::Deserialize)]
struct RelayEntry {
    endpoint: SocketAddr,
    public_key: RelayKey,
}

fn read_relay_info(path: &std::path::Path) -> Result<RelayInfo> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading --relay-info from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading --relay-info {}", path.display()))?
    };
    let info: RelayInfo = serde_json::from_str(&text).with_context(|| format!("--relay-info {}", path.display()))?;
    anyhow::ensure!(!info.relays.is_empty(), "--relay-info {}: `relays` is empty", path.display());
    Ok(info)
}

/// A joined session: the client, its socket (connected to the client's relay, which
/// [`follow`] keeps it at) and its SSRC.
struct Session {
    client: Client,
    sock: UdpSocket,
    ssrc: Ssrc,
    report: Report,
}

/// Builds the client from the join options, binds --bind and joins. A refusal is printed
/// (as JSON with `json`) and exits with status 2.
fn connect(a: &JoinArgs, json: bool) -> Result<Session> {
    let info = a.relay_info.as_deref().map(read_relay_info).transpose()?;
    let nodes = match (&a.relay[..], &info) {
        ([], Some(i)) => i.relays.iter().map(|r| Node::new(r.endpoint, Some(r.public_key))).collect(),
        ([], None) => bail!("give --relay, or --relay-info"),
        (relays, _) => {
            let mut nodes = Vec::with_capacity(relays.len());
            for &(addr, key) in relays {
                let key = match (key.or(a.relay_key), &info, a.v1) {
                    (Some(k), _, _) => Some(k),
                    (None, Some(i), _) if relays.len() == 1 => Some(i.relays[0].public_key),
                    (None, _, true) => None,
                    (None, _, false) => bail!(
                        "give relay {addr}'s public key: --relay ADDR=KEY, --relay-key (`relayd key show` prints \
                         it) or --relay-info (relay-control's UserSig answer); --v1 sends a cleartext join, which \
                         relays refuse unless the app allows it"
                    ),
                };
                nodes.push(Node::new(addr, key));
            }
            nodes
        }
    };
    let usersig = match (&a.usersig, &a.secret, info.as_ref().and_then(|i| i.usersig.clone())) {
        (Some(t), _, _) => t.clone(),
        (None, Some(s), _) => {
            let user = a.user.as_deref().unwrap_or("relay-client");
            usersig::mint(s.as_bytes(), a.sdkappid, user, 86400, unix_now(), None)
        }
        (None, None, Some(t)) => t,
        (None, None, None) => {
            bail!("give --usersig, --relay-info with a usersig, or --secret to mint one (testing only)")
        }
    };
    if let Some(w) = user_mismatch(a.user.as_deref(), &usersig) {
        eprintln!("relay-client: warning: {w}");
    }
    let room = RoomId::parse(&a.room).map_err(|e| anyhow::anyhow!("--room {:?}: {e}", a.room))?;
    let ssrc = Ssrc::new(a.ssrc.unwrap_or_else(|| random_u32() | 1)).context("--ssrc")?;
    let kind = if a.audio { StreamKind::Audio } else { StreamKind::Video };
    let ssrcs = if a.recv_only { vec![] } else { vec![DeclaredSsrc { ssrc, kind }] };
    let cfg = ClientConfig {
        sdkappid: u32::try_from(a.sdkappid).context("--sdkappid")?,
        room,
        usersig,
        private_map_key: a.private_map_key.clone(),
        profile: a.profile,
        ssrcs,
        nodes,
        failover_after_ms: a.failover_after_ms,
    };
    let mut client = Client::new(cfg)?;
    let sock = UdpSocket::bind(a.bind).with_context(|| format!("binding {}", a.bind))?;
    follow(&client, &sock)?;
    let mut report = Report::default();
    let mut buf = [0u8; 2048];
    join(&mut client, &sock, &mut report, &mut buf)?;
    report.relay = Some(client.relay_addr());
    if let Some(r) = &report.refused {
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            eprintln!("join refused: {r}");
        }
        std::process::exit(2);
    }
    Ok(Session { client, sock, ssrc, report })
}

/// A warning when `--user` names someone other than the UserSig's identifier (the relay
/// admits the UserSig's user, whatever --user says), or when the UserSig does not decode.
fn user_mismatch(user: Option<&str>, token: &str) -> Option<String> {
    let user = user?;
    match usersig::decode(token) {
        Ok(t) if t.identifier == user => None,
        Ok(t) => Some(format!(
            "--user {user:?} disagrees with the UserSig's identifier {:?}: the relay admits you as {:?}",
            t.identifier, t.identifier
        )),
        Err(e) => Some(format!("cannot read the UserSig to compare it with --user {user:?}: {e}")),
    }
}

/// The SRTP params JSON line (`--print-srtp-params`, `attach`): what an external SRTP tool
/// needs to send and receive as this session.
fn srtp_params(client: &Client, local: SocketAddr, ssrc: Ssrc) -> serde_json::Value {
    let secrets = client.secrets().expect("joined");
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::json!({
        "session": client.session(),
        "profile": client.config().profile.name(),
        "local": local.to_string(),
        "ssrc": ssrc.get(),
        "srtp_out_params": b64.encode(secrets.c2r.key_salt()),
        "srtp_in_params": b64.encode(secrets.r2c.key_salt()),
    })
}

/// `attach`: join from --bind, print the params, free --bind for the tool, hold the
/// session from another port of the same host until a signal or --duration, leave.
///
/// The relay keys a session by its source address, so the tool's media must come from
/// --bind. ffmpeg's SRTP output cannot share a port (it sets no SO_REUSEADDR, and its
/// `reuse` option does not reach the socket under `srtp://`), so attach does not keep
/// --bind: its holds (authenticated keepalives that may come from another address) keep
/// the session alive from a port of its own, and the session stays at --bind.
fn attach(a: AttachArgs) -> Result<()> {
    if a.join.v1 {
        bail!("attach needs a v2 session (holds are v2): drop --v1");
    }
    let shutdown = relay::io::sys::shutdown_flag().context("installing the SIGTERM/SIGINT handler")?;
    let Session { mut client, sock, ssrc, .. } = connect(&a.join, false)?;
    let relay_addr = client.relay_addr();
    let bound = sock.local_addr()?;
    let params = srtp_params(&client, bound, ssrc);
    // Free --bind before the tool learns it may start.
    drop(sock);
    let hold_from = SocketAddr::new(bound.ip(), 0);
    let hold = UdpSocket::bind(hold_from).with_context(|| format!("binding {hold_from} for holds"))?;
    hold.connect(relay_addr).with_context(|| format!("connecting to {relay_addr}"))?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{params}")?;
        out.flush()?;
    }
    let (keepalive_secs, _) = client.timers().expect("joined");
    let every = Duration::from_secs(keepalive_secs.max(1).into());
    let end = a.duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mut buf = [0u8; 2048];
    let mut next = Instant::now();
    let mut unanswered = 0u32;
    hold.set_read_timeout(Some(Duration::from_millis(100)))?;
    while !shutdown.load(std::sync::atomic::Ordering::Relaxed) && end.is_none_or(|e| Instant::now() < e) {
        if Instant::now() >= next {
            let n = client.hold(&mut buf)?;
            let _ = hold.send(&buf[..n]);
            next += every;
            unanswered += 1;
            if unanswered > 5 {
                eprintln!("relay-client attach: no hold answered for {} s; the session may be gone", unanswered - 1);
            }
        }
        if let Ok(n) = hold.recv(&mut buf) {
            match client.handle(&mut buf[..n]) {
                Event::KeepaliveAck => unanswered = 0,
                Event::Refused { code: Some(ErrorCode::RoomDismissed), detail } => {
                    bail!("the room was dismissed (room_dismissed: {detail}); the session has ended")
                }
                Event::Refused { code, detail } => {
                    bail!("the relay ended the session: {}: {detail}", code.map_or("unknown", |c| c.name()))
                }
                _ => {}
            }
        }
    }
    let n = client.leave(&mut buf)?;
    let _ = hold.send(&buf[..n]);
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    // SIGTERM/SIGINT end the run early, with the report.
    let shutdown = relay::io::sys::shutdown_flag().context("installing the SIGTERM/SIGINT handler")?;
    let Session { mut client, sock, ssrc, mut report } = connect(&a.join, a.json)?;
    if a.print_srtp_params {
        println!("{}", srtp_params(&client, sock.local_addr()?, ssrc));
        return Ok(());
    }
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration);
    let interval = if a.send_pps > 0 { Some(Duration::from_secs_f64(1.0 / f64::from(a.send_pps))) } else { None };
    let mut next_send = start;
    let mut seq = a.seq;
    let size = a.size.clamp(12 + 12, 1400);
    let pt = if a.join.audio { 111 } else { 96 };
    let mut rbuf = [0u8; 2048];
    let mut to_send = a.send_message.iter();
    let mut next_message = start;
    // Past --duration, wait a little for the acks of reliable messages.
    let linger = start + Duration::from_secs_f64(a.duration) + Duration::from_secs(3);
    let now_ms = |t: Instant| t.duration_since(start).as_millis() as u64;
    if !a.join.recv_only {
        report.sent_ssrcs.push(ssrc.get());
    }
    while report.ended.is_none()
        && !shutdown.load(std::sync::atomic::Ordering::Relaxed)
        && (Instant::now() < end || (client.pending_messages() > 0 && Instant::now() < linger))
    {
        let now = Instant::now();
        if now >= next_message && client.session().is_some() {
            if let Some((cmd, text)) = to_send.next() {
                let m = client.send_message(now_ms(now), *cmd, text.as_bytes(), a.reliable, a.ordered, &mut buf)?;
                let _ = sock.send(&buf[..m.len]);
                next_message = now + Duration::from_millis(40);
            }
        }
        client.poll_timeouts(now_ms(now));
        while let Some(n) = client.poll_transmit(&mut buf) {
            let _ = sock.send(&buf[..n]);
        }
        // Keepalives, and joining again when the session is lost (a relay restart).
        let was_rejoining = client.is_rejoining();
        let was_at = client.relay_addr();
        if let Some(Transmit::Keepalive(n) | Transmit::Join(n)) =
            client.poll_session(now_ms(now), relay::time::unix_now_ms(), &mut buf)?
        {
            follow(&client, &sock)?;
            let _ = sock.send(&buf[..n]);
        }
        if !was_rejoining && client.is_rejoining() && client.losses(Loss::NoAnswer) > report.lost_no_answer {
            report.lost_no_answer = client.losses(Loss::NoAnswer);
            eprintln!("relay-client: no answer from the relay in time: joining again with a fresh SSRC");
        }
        if client.relay_addr() != was_at {
            eprintln!("relay-client: no answer from relay {was_at}: joining {}", client.relay_addr());
        }
        if let Some(iv) = interval.filter(|_| now < end) {
            if !a.join.recv_only {
                let mut burst = 0;
                while next_send <= now && burst < 64 {
                    next_send += iv;
                    burst += 1;
                    let Some(d) = client.session().and(client.config().ssrcs.first()) else {
                        report.unsent += 1;
                        continue;
                    };
                    let h = write_rtp_header(&mut buf, pt, seq, report.sent as u32 * 3000, d.ssrc.get());
                    let ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                    buf[h..h + 8].copy_from_slice(&ns.to_be_bytes());
                    buf[h + 8..h + 12].copy_from_slice(&(report.sent as u32).to_be_bytes());
                    buf[h + 12..size].fill(0x5a);
                    let n = client.protect_rtp(&mut buf, size)?;
                    let _ = sock.send(&buf[..n]);
                    report.sent += 1;
                    seq = seq.wrapping_add(1);
                }
            }
        }
        let wait = interval.map_or(Duration::from_millis(20), |_| next_send.saturating_duration_since(Instant::now()));
        sock.set_read_timeout(Some(wait.clamp(Duration::from_micros(100), Duration::from_millis(20))))?;
        while let Ok(n) = sock.recv(&mut rbuf) {
            match client.handle_at(now_ms(Instant::now()), &mut rbuf[..n]) {
                Event::Messages { .. } => {
                    report.messages.extend(std::iter::from_fn(|| client.next_message()).map(MessageReport::from));
                    while let Some(n) = client.poll_transmit(&mut buf) {
                        let _ = sock.send(&buf[..n]);
                    }
                }
                Event::Media { ssrc, rtcp: false, index, .. } => {
                    report.received += 1;
                    let s = report.streams.entry(ssrc).or_default();
                    let seen = report.seen.entry(ssrc).or_default();
                    if !seen.insert(index) {
                        s.duplicates += 1;
                    } else {
                        s.received += 1;
                        s.first_index.get_or_insert(index);
                        s.last_index = s.last_index.max(index);
                    }
                }
                Event::Refused { code: Some(code @ ErrorCode::RoomDismissed), detail } => {
                    report.ended = Some(format!("{}: {detail}", code.name()));
                }
                Event::MediaError(srtp::Error::AuthFailed) => report.auth_failures += 1,
                Event::MediaError(srtp::Error::Replayed | srtp::Error::TooOld) => report.replays += 1,
                Event::MediaError(_) => report.other_errors += 1,
                Event::SessionLost => {
                    report.lost_unknown_session = client.losses(Loss::UnknownSession);
                    eprintln!("relay-client: the relay does not know this session (restarted?): joining again");
                }
                ev @ (Event::Rejoined { session } | Event::FailedOver { session, .. }) => {
                    report.rejoins += 1;
                    report.session = Some(session);
                    report.relay = Some(client.relay_addr());
                    if let (false, Some(d)) = (a.join.recv_only, client.config().ssrcs.first()) {
                        report.sent_ssrcs.push(d.ssrc.get());
                    }
                    if let Event::FailedOver { from, to, lost_ms, .. } = ev {
                        report.failover_count += 1;
                        let joined_ms = now_ms(Instant::now());
                        report.failovers.push(FailoverReport { from, to, lost_ms, joined_ms });
                        eprintln!(
                            "relay-client: failed over from {from} to {to} ({} ms after giving {from} up): \
                             session {session:016x}",
                            joined_ms.saturating_sub(lost_ms)
                        );
                    } else {
                        eprintln!("relay-client: joined again: session {session:016x}");
                    }
                }
                Event::Cookie if client.is_rejoining() => {
                    let n = client.join(&mut buf)?;
                    let _ = sock.send(&buf[..n]);
                }
                Event::Refused { code, detail } if client.is_rejoining() => {
                    eprintln!(
                        "relay-client: join refused while joining again ({}: {detail}); retrying",
                        code.map_or("unknown", |c| c.name())
                    );
                }
                _ => {}
            }
            sock.set_read_timeout(Some(Duration::from_micros(100)))?;
        }
    }
    report.message_stats = client.message_stats();
    let leave = if report.ended.is_none() { client.leave(&mut buf).ok() } else { None };
    if let Some(n) = leave {
        let _ = sock.send(&buf[..n]);
    }
    for s in report.streams.values_mut() {
        if let Some(f) = s.first_index {
            s.lost = (s.last_index - f + 1).saturating_sub(s.received);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("session {:016x}: sent {}, received {}", report.session.unwrap_or(0), report.sent, report.received);
        if let Some(why) = &report.ended {
            println!("the relay ended the session: {why}");
        }
        if report.rejoins > 0 {
            println!("  joined again {} time(s); {} packet(s) not sent while rejoining", report.rejoins, report.unsent);
        }
        for f in &report.failovers {
            println!(
                "  failed over from {} to {}: given up at {} ms, joined at {} ms",
                f.from, f.to, f.lost_ms, f.joined_ms
            );
        }
        for (ssrc, s) in &report.streams {
            println!("  from SSRC {ssrc:#010x}: received {}, lost {}, duplicates {}", s.received, s.lost, s.duplicates);
        }
        println!(
            "auth failures {}, replays {}, other errors {}",
            report.auth_failures, report.replays, report.other_errors
        );
        let ms = &report.message_stats;
        if ms.sent + ms.received > 0 {
            println!(
                "messages: sent {}, acked {}, retransmitted {}, given up {}, received {}",
                ms.sent, ms.acked, ms.retransmitted, ms.given_up, ms.received
            );
        }
        for m in &report.messages {
            let mode = match (m.reliable, m.ordered) {
                (false, false) => "",
                (true, false) => " reliable",
                (false, true) => " ordered",
                (true, true) => " reliable ordered",
            };
            println!("  message from {} cmd {} seq {}{mode}: {}", m.from, m.cmd, m.seq, m.text);
        }
    }
    Ok(())
}
