//! `relay-client`: join a room through relayd, send or receive a synthetic SRTP stream, and
//! mint test credentials.
#![forbid(unsafe_code)]

use relay::time::unix_now;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use relay::client::{write_rtp_header, Client, ClientConfig, Event};
use relay::identity::RelayKey;
use relay::ids::{RoomId, Ssrc};
use relay::proto::{DeclaredSsrc, StreamKind};
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
relay-client run ... --bind 127.0.0.1:40000 --ssrc 1234 --print-srtp-params   # keys for ffmpeg"
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
    /// Join a room and stream.
    Run(RunArgs),
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

#[derive(Args)]
struct RunArgs {
    /// relayd's UDP address (default: the endpoint in --relay-info).
    #[arg(long, required_unless_present = "relay_info")]
    relay: Option<SocketAddr>,
    /// The relay's static public key (base64, as `relayd key show` prints it): join v2,
    /// encrypted to it, and accept only answers that prove it.
    #[arg(long, conflicts_with = "v1")]
    relay_key: Option<RelayKey>,
    /// The JSON an app back end gets from relay-control's UserSig call (`usersig` and
    /// `relays[0].endpoint`/`public_key`), from a file or `-` for stdin.
    #[arg(long, conflicts_with = "v1")]
    relay_info: Option<PathBuf>,
    /// Send a cleartext v1 join (relays refuse it unless the app allows v1 joins).
    #[arg(long)]
    v1: bool,
    /// Local address to bind (a fixed port lets an external SRTP tool reuse the session).
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// The app's SdkAppId.
    #[arg(long)]
    sdkappid: u64,
    /// The user id; with --secret, a UserSig is minted locally.
    #[arg(long, default_value = "relay-client")]
    user: String,
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
    /// Packets per second to send (0: receive only).
    #[arg(long, default_value_t = 0)]
    send_pps: u32,
    /// RTP packet size in bytes (header + payload, before the SRTP tag).
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Initial RTP sequence number (e.g. 65500 to exercise ROC wrap).
    #[arg(long, default_value_t = 0)]
    seq: u16,
    /// Join, print the negotiated SRTP keys as ffmpeg `-srtp_out_params`/`-srtp_in_params`
    /// base64 (JSON), and exit without leaving.
    #[arg(long)]
    print_srtp_params: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Usersig(a) => mint(a),
        Cmd::Run(a) => run(a),
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
    sent: u64,
    received: u64,
    auth_failures: u64,
    replays: u64,
    other_errors: u64,
    streams: BTreeMap<u32, StreamReport>,
    #[serde(skip)]
    seen: BTreeMap<u32, std::collections::HashSet<u64>>,
}

/// Joins: a fresh join every 250 ms (each v2 attempt is a new handshake; a cookie reply
/// makes the next one carry it at once), for up to 5 s.
fn join(client: &mut Client, sock: &UdpSocket, relay: SocketAddr, report: &mut Report, buf: &mut [u8]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut unverified = 0u32;
    report.session = None;
    while report.session.is_none() && report.refused.is_none() {
        if Instant::now() > deadline {
            if unverified > 0 {
                bail!(
                    "relay {relay} answered {unverified} time(s), but no answer decrypted under the relay key given: \
                     whoever answers does not hold that key (check --relay-key against `relayd key show`)"
                );
            }
            match client.config().relay_key {
                Some(k) => bail!(
                    "no answer from relay {relay} within 5 s: is it running, and is {k} its key? (a relay drops \
                     joins encrypted to another key without answering; `relayd key show` prints its key)"
                ),
                None => bail!("no answer from relay {relay} within 5 s"),
            }
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

fn run(a: RunArgs) -> Result<()> {
    let info = a.relay_info.as_deref().map(read_relay_info).transpose()?;
    let relay_addr = match (a.relay, &info) {
        (Some(r), _) => r,
        (None, Some(i)) => i.relays[0].endpoint,
        (None, None) => bail!("give --relay, or --relay-info"),
    };
    let relay_key = match (a.relay_key, &info, a.v1) {
        (Some(k), _, _) => Some(k),
        (None, Some(i), _) => Some(i.relays[0].public_key),
        (None, None, true) => None,
        (None, None, false) => bail!(
            "give the relay's public key: --relay-key (`relayd key show` prints it) or --relay-info \
             (relay-control's UserSig answer); --v1 sends a cleartext join, which relays refuse unless the app allows it"
        ),
    };
    let usersig = match (&a.usersig, &a.secret, info.as_ref().and_then(|i| i.usersig.clone())) {
        (Some(t), _, _) => t.clone(),
        (None, Some(s), _) => usersig::mint(s.as_bytes(), a.sdkappid, &a.user, 86400, unix_now(), None),
        (None, None, Some(t)) => t,
        (None, None, None) => {
            bail!("give --usersig, --relay-info with a usersig, or --secret to mint one (testing only)")
        }
    };
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
        relay_key,
    };
    let mut client = Client::new(cfg)?;
    let sock = UdpSocket::bind(a.bind).with_context(|| format!("binding {}", a.bind))?;
    sock.connect(relay_addr).with_context(|| format!("connecting to {relay_addr}"))?;
    let mut report = Report::default();
    let mut buf = [0u8; 2048];
    join(&mut client, &sock, relay_addr, &mut report, &mut buf)?;
    if let Some(r) = &report.refused {
        if a.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            eprintln!("join refused: {r}");
        }
        std::process::exit(2);
    }
    let secrets = client.secrets().expect("joined");
    if a.print_srtp_params {
        let b64 = base64::engine::general_purpose::STANDARD;
        let out = serde_json::json!({
            "session": report.session,
            "profile": a.profile.name(),
            "local": sock.local_addr()?.to_string(),
            "ssrc": ssrc.get(),
            "srtp_out_params": b64.encode(secrets.c2r.key_salt()),
            "srtp_in_params": b64.encode(secrets.r2c.key_salt()),
        });
        println!("{out}");
        return Ok(());
    }
    let (keepalive_secs, _) = client.timers().expect("joined");
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration);
    let interval = if a.send_pps > 0 { Some(Duration::from_secs_f64(1.0 / f64::from(a.send_pps))) } else { None };
    let mut next_send = start;
    let mut next_keepalive = start + Duration::from_secs(keepalive_secs.into());
    let mut seq = a.seq;
    let size = a.size.clamp(12 + 12, 1400);
    let pt = if a.audio { 111 } else { 96 };
    let mut rbuf = [0u8; 2048];
    while Instant::now() < end {
        let now = Instant::now();
        if let Some(iv) = interval {
            if !a.recv_only {
                let mut burst = 0;
                while next_send <= now && burst < 64 {
                    let h = write_rtp_header(&mut buf, pt, seq, report.sent as u32 * 3000, ssrc.get());
                    let ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                    buf[h..h + 8].copy_from_slice(&ns.to_be_bytes());
                    buf[h + 8..h + 12].copy_from_slice(&(report.sent as u32).to_be_bytes());
                    buf[h + 12..size].fill(0x5a);
                    let n = client.protect_rtp(&mut buf, size)?;
                    let _ = sock.send(&buf[..n]);
                    report.sent += 1;
                    seq = seq.wrapping_add(1);
                    next_send += iv;
                    burst += 1;
                }
            }
        }
        if now >= next_keepalive {
            let n = client.keepalive(&mut buf)?;
            let _ = sock.send(&buf[..n]);
            next_keepalive += Duration::from_secs(keepalive_secs.into());
        }
        let wait = interval.map_or(Duration::from_millis(20), |_| next_send.saturating_duration_since(Instant::now()));
        sock.set_read_timeout(Some(wait.clamp(Duration::from_micros(100), Duration::from_millis(20))))?;
        while let Ok(n) = sock.recv(&mut rbuf) {
            match client.handle(&mut rbuf[..n]) {
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
                Event::MediaError(srtp::Error::AuthFailed) => report.auth_failures += 1,
                Event::MediaError(srtp::Error::Replayed | srtp::Error::TooOld) => report.replays += 1,
                Event::MediaError(_) => report.other_errors += 1,
                _ => {}
            }
            sock.set_read_timeout(Some(Duration::from_micros(100)))?;
        }
    }
    let n = client.leave(&mut buf)?;
    let _ = sock.send(&buf[..n]);
    for s in report.streams.values_mut() {
        if let Some(f) = s.first_index {
            s.lost = (s.last_index - f + 1).saturating_sub(s.received);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("session {:016x}: sent {}, received {}", report.session.unwrap_or(0), report.sent, report.received);
        for (ssrc, s) in &report.streams {
            println!("  from SSRC {ssrc:#010x}: received {}, lost {}, duplicates {}", s.received, s.lost, s.duplicates);
        }
        println!(
            "auth failures {}, replays {}, other errors {}",
            report.auth_failures, report.replays, report.other_errors
        );
    }
    Ok(())
}
