//! Interop: real ffmpeg SRTP through a real relayd.
//!
//! ffmpeg sends H.264 over SRTP (`AES_CM_128_HMAC_SHA1_80`) into a room with the uplink key
//! of one member's session; a second ffmpeg receives through relayd with the downlink key
//! of another member's session and decodes. Both sessions are set up by `relay-client
//! --print-srtp-params`, which joins from the port ffmpeg then uses, or by `relay-client
//! attach`, which also keeps them alive while ffmpeg runs.

use std::io::BufRead as _;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgerelay_tests::*;

const FRAMES: u32 = 100; // 4 s at 25 fps

fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Two adjacent free UDP ports (ffmpeg binds RTP on p and RTCP on p+1).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_udp_port();
        if p < 65_000 && UdpSocket::bind(("0.0.0.0", p + 1)).is_ok() && UdpSocket::bind(("0.0.0.0", p)).is_ok() {
            return p;
        }
    }
    panic!("no free UDP port pair");
}

/// Joins through relay-client from `port` and returns (srtp_out_params, srtp_in_params).
fn session_keys(relayd: &Relayd, user: &str, port: u16, ssrc: Option<u32>) -> (String, String) {
    let mut cmd = Command::new(bin("relay-client"));
    cmd.args(["run", "--relay", &relayd.addr.to_string(), "--relay-key", &relayd.key.to_string()])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--sdkappid", &APP_A.to_string(), "--secret", SECRET_A, "--user", user, "--room", "77"])
        .arg("--print-srtp-params");
    match ssrc {
        Some(s) => cmd.args(["--ssrc", &s.to_string()]),
        None => cmd.arg("--recv-only"),
    };
    let out = cmd.output().expect("run relay-client");
    assert!(out.status.success(), "relay-client failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from --print-srtp-params");
    (v["srtp_out_params"].as_str().unwrap().to_owned(), v["srtp_in_params"].as_str().unwrap().to_owned())
}

fn wait_bound(port: u16) {
    let hex = format!(":{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&hex)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("ffmpeg receiver never bound UDP port {port}");
}

/// Runs one interop case; returns the number of frames the receiver decoded.
fn run_case(dir: &Path, recv_key: Option<&str>, seq: u16) -> u32 {
    let relayd = Relayd::start(&two_app_config(60, ""));
    let rport = free_port_pair();
    let sport = free_port_pair();
    let (_, recv_in) = session_keys(&relayd, "viewer", rport, None);
    let (send_out, _) = session_keys(&relayd, "camera", sport, Some(12345));
    let key = recv_key.map_or(recv_in.as_str(), |k| if k == "uplink" { send_out.as_str() } else { k }).to_owned();
    stream(dir, &relayd, rport, &key, sport, &send_out, seq)
}

/// ffmpeg sends 4 s of H.264 from `sport` with `send_out`; another ffmpeg receives on
/// `rport` and decodes with `key`. Returns the frames decoded.
fn stream(dir: &Path, relayd: &Relayd, rport: u16, key: &str, sport: u16, send_out: &str, seq: u16) -> u32 {
    let sdp = dir.join(format!("recv-{rport}.sdp"));
    std::fs::write(
        &sdp,
        format!(
            "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=edgerelay\nc=IN IP4 127.0.0.1\nt=0 0\nm=video {rport} RTP/SAVP 96\n\
             a=rtpmap:96 H264/90000\na=fmtp:96 packetization-mode=1\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\n"
        ),
    )
    .unwrap();
    let mut recv = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-listen_timeout", "1"])
        .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg(&sdp)
        .args(["-map", "0:v", "-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1", "-nostats", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg receiver");
    wait_bound(rport);
    // Options must precede the URL, or ffmpeg silently sends plain RTP.
    let send = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "4"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-bf", "0"])
        .args(["-pix_fmt", "yuv420p", "-f", "rtp", "-payload_type", "96", "-ssrc", "12345"])
        .args(["-seq", &seq.to_string()])
        .args(["-srtp_out_suite", "AES_CM_128_HMAC_SHA1_80", "-srtp_out_params", send_out])
        .arg(format!("srtp://{}?localport={sport}", relayd.addr))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run ffmpeg sender");
    assert!(send.status.success(), "ffmpeg sender: {}", String::from_utf8_lossy(&send.stderr));
    // The receiver exits a few seconds after the stream stops; kill it as a backstop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while recv.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = recv.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = recv.wait_with_output().unwrap();
    let progress = String::from_utf8_lossy(&out.stdout);
    let frames =
        progress.lines().filter_map(|l| l.strip_prefix("frame=")).next_back().map_or(0, |n| n.trim().parse().unwrap());
    let s = relayd.stats();
    eprintln!(
        "seq {seq}: {frames}/{FRAMES} frames; relay accepted {} media packets, sent {}, drops {:?}",
        s.media_accepted, s.tx_packets, s.drops
    );
    assert!(s.media_accepted >= 100, "the relay authenticated ffmpeg's SRTP: {s:?}");
    assert_eq!(s.drop_count(relay::stats::DropReason::AuthFailed), 0);
    frames
}

fn skip() -> bool {
    !have_ffmpeg() && skip_or_fail("ffmpeg is not installed (apt-get install ffmpeg)")
}

#[test]
fn ffmpeg_h264_srtp_through_relay_decodes_with_the_receivers_own_key() {
    if skip() {
        return;
    }
    let dir = TempDir::new("interop").expect("create a temp dir");
    let frames = run_case(dir.path(), None, 0);
    assert!(frames * 100 >= FRAMES * 95, "only {frames}/{FRAMES} frames decoded");
}

#[test]
fn ffmpeg_with_a_wrong_receiver_key_decodes_nothing() {
    if skip() {
        return;
    }
    let dir = TempDir::new("interop").expect("create a temp dir");
    // The sender's own uplink key: if the relay forwarded without re-encrypting, this would decode.
    assert_eq!(run_case(dir.path(), Some("uplink"), 0), 0);
}

#[test]
fn ffmpeg_roc_wrap_still_decodes() {
    if skip() {
        return;
    }
    let dir = TempDir::new("interop").expect("create a temp dir");
    let frames = run_case(dir.path(), None, 65_500);
    assert!(frames * 100 >= FRAMES * 95, "only {frames}/{FRAMES} frames decoded across the ROC wrap");
}

/// Starts `relay-client attach` for `user` from `port` and reads its SRTP params line.
fn attach(relayd: &Relayd, user: &str, port: u16, ssrc: Option<u32>) -> (Child, serde_json::Value) {
    let mut cmd = Command::new(bin("relay-client"));
    cmd.args(["attach", "--relay", &relayd.addr.to_string(), "--relay-key", &relayd.key.to_string()])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--sdkappid", &APP_A.to_string(), "--secret", SECRET_A, "--user", user, "--room", "77"]);
    match ssrc {
        Some(s) => cmd.args(["--ssrc", &s.to_string()]),
        None => cmd.arg("--recv-only"),
    };
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn relay-client attach");
    let mut line = String::new();
    // relay-client gives up joining after 5 s, closing stdout: this read ends either way.
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let params = serde_json::from_str(&line).unwrap_or_else(|e| panic!("attach printed {line:?}: {e}"));
    (child, params)
}

#[test]
fn attach_holds_sessions_past_their_timeout_for_ffmpeg_and_they_end_when_it_stops() {
    if skip() {
        return;
    }
    let dir = TempDir::new("interop").expect("create a temp dir");
    let relayd = Relayd::start(&two_app_config(3, ""));
    let (rport, sport) = (free_port_pair(), free_port_pair());
    let (mut viewer, vp) = attach(&relayd, "viewer", rport, None);
    let (mut camera, cp) = attach(&relayd, "camera", sport, Some(12345));
    assert_eq!(vp["local"], format!("127.0.0.1:{rport}"));
    relayd.wait_for(5, "both sessions", |s| s.sessions == 2);
    // Deliberately idle past session_secs (3 s): no media, only attach's holds.
    std::thread::sleep(Duration::from_secs(5));
    let s = relayd.stats();
    assert_eq!(s.sessions, 2, "holds kept both sessions alive: {s:?}");
    assert_eq!(s.media_accepted, 0);
    // ffmpeg now owns both ports; media flows through the held sessions.
    let key = vp["srtp_in_params"].as_str().unwrap();
    let frames = stream(dir.path(), &relayd, rport, key, sport, cp["srtp_out_params"].as_str().unwrap(), 0);
    assert!(frames * 100 >= FRAMES * 95, "only {frames}/{FRAMES} frames decoded");
    assert_eq!(relayd.stats().sessions, 2);
    // SIGTERM: attach leaves at once.
    relay::io::sys::terminate(viewer.id()).unwrap();
    assert!(viewer.wait().unwrap().success());
    relayd.wait_for(2, "the viewer left", |s| s.sessions == 1);
    // SIGKILL: no leave, so the camera's session lives on until session_secs of silence.
    camera.kill().unwrap();
    camera.wait().unwrap();
    let killed = Instant::now();
    relayd.wait_for(8, "the camera's session expired", |s| s.sessions == 0);
    assert!(killed.elapsed() >= Duration::from_secs(2), "expired by the timeout, not at once");
}
