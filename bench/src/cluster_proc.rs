//! The processes of a cluster benchmark run, shared by its loopback part
//! ([`crate::cluster`]) and its XDP part ([`crate::cluster_net`], [`crate::cluster_xdp`]): a
//! `redis-server` with an ACL user and an fsynced AOF, the cluster key, node configs, signed
//! calls, and the quantile the reports use.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::client::{Call, Client};
use relay::io::netns::NetNs;

use crate::procs::Guard;

const USER: &str = "edgerelay";
/// Rate limits no polling loop of the scenario reaches.
pub(crate) const LIMITS: &str =
    "[rate_limits]\nper_ip_per_sec = 100000\nper_ip_burst = 100000\nper_key_per_sec = 100000\nper_key_burst = 100000\n";

/// A `redis-server`, killed on drop.
pub(crate) struct Redis {
    _guard: Guard,
    addr: SocketAddr,
    password_file: PathBuf,
}

impl Redis {
    /// On a free loopback port.
    pub(crate) fn start(dir: &Path) -> Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::start_at(dir, SocketAddr::from(([127, 0, 0, 1], port)), None)
    }

    /// On `addr`, inside `ns` if given (`ip netns exec`; the readiness check connects from
    /// there too).
    pub(crate) fn start_at(dir: &Path, addr: SocketAddr, ns: Option<&NetNs>) -> Result<Redis> {
        let mut pw = [0u8; 16];
        getrandom::getrandom(&mut pw).map_err(|e| anyhow::anyhow!("random: {e}"))?;
        let password: String = pw.iter().map(|b| format!("{b:02x}")).collect();
        let password_file = dir.join("redis.password");
        std::fs::write(&password_file, format!("{password}\n"))?;
        std::fs::write(dir.join("users.acl"), format!("user default off\nuser {USER} on >{password} ~* &* +@all\n"))?;
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name(), "redis-server"]);
                c
            }
            None => Command::new("redis-server"),
        };
        cmd.args(["--bind", &addr.ip().to_string(), "--port", &addr.port().to_string(), "--dir"])
            .arg(dir)
            .arg("--aclfile")
            .arg(dir.join("users.acl"))
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = Guard::spawn(cmd, "redis-server").context("redis-server (apt-get install redis-server)")?;
        let _in_ns = ns.map(NetNs::enter).transpose()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(addr, &password) {
                break;
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Redis { _guard: guard, addr, password_file })
    }
}

/// `AUTH` then `PING` in RESP.
fn ping(addr: SocketAddr, password: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let cmd = format!(
        "*3\r\n$4\r\nAUTH\r\n${}\r\n{USER}\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
        USER.len(),
        password.len()
    );
    if s.write_all(cmd.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && !got.windows(5).any(|w| w == b"+PONG") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.windows(5).any(|w| w == b"+PONG")
}

/// Writes `DIR/NAME.toml`: relay-control on 127.0.0.1, serving `endpoint` as its relay's,
/// with `top` (top-level keys) and `sections` (whole tables) added.
pub(crate) fn node_config(
    dir: &Path,
    name: &str,
    cluster: Option<(&Redis, &Path)>,
    endpoint: SocketAddr,
    top: &str,
    sections: &str,
) -> Result<PathBuf> {
    let state = dir.join(format!("{name}-state"));
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\npublic_endpoint = \"{endpoint}\"\n{top}",
        state.display()
    );
    if let Some((redis, key)) = cluster {
        cfg.push_str(&format!(
            "[cluster]\nredis_url = \"redis://{USER}@{}\"\nredis_password_file = \"{}\"\nnode_id = \"{name}\"\n\
             region = \"bench\"\nkey_file = \"{}\"\n",
            redis.addr,
            redis.password_file.display(),
            key.display()
        ));
    }
    cfg.push_str(LIMITS);
    cfg.push_str(sections);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, cfg)?;
    Ok(path)
}

/// `relay-control cluster-key --out DIR/cluster.key`.
pub(crate) fn cluster_key(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let key = dir.join("cluster.key");
    let out = Command::new(bin).args(["cluster-key", "--out"]).arg(&key).output()?;
    if !out.status.success() {
        bail!("relay-control cluster-key: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(key)
}

/// Sends `call`; fails unless the answer is 2xx or 404.
pub(crate) fn send(c: &Client, call: &Call) -> Result<control::client::Response> {
    let r = c.send(call)?;
    if !(200..300).contains(&r.status) && r.status != 404 {
        bail!("{} answered {}: {}", call.path(c.endpoint()).unwrap_or_default(), r.status, r.text());
    }
    Ok(r)
}

/// The `p` quantile (0..=1) of `sorted`, nearest rank; NaN when empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
