//! Test harness for the edge cluster: a real `redis-server` (an ACL user with a password,
//! append-only file fsynced on every write), and relay-control nodes configured to share it.
//!
//! [`Redis::start`] runs on loopback, or inside a network namespace when given one; `kill`
//! and `restart` drive the outage tests. [`Nodes::start`] brings up N relay-control nodes:
//! node 1 bootstraps the admin key through the cluster (which seeds Redis), the others start
//! on their own state dirs and sync from Redis. Everything is killed and removed on `Drop`.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::{ControlDaemon, Credentials};
use crate::{skip_or_fail, TempDir};

/// The ACL user the nodes use.
pub const REDIS_USER: &str = "edgerelay";

/// A running `redis-server`, killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The ACL user's password (also in `password_file`).
    pub password: String,
    /// File holding the password, for `[cluster] redis_password_file`.
    pub password_file: PathBuf,
    netns: Option<String>,
    /// TLS: the server's certificate and key files (PEM); plain TCP when `None`.
    tls: Option<(PathBuf, PathBuf)>,
    /// With TLS: the CA file the nodes must trust.
    pub ca: Option<PathBuf>,
    /// Its data directory (AOF) and log.
    pub dir: Arc<TempDir>,
}

impl Redis {
    /// `redis-server` when installed; `None` after [`skip_or_fail`] otherwise.
    pub fn available() -> bool {
        if Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success()) {
            return true;
        }
        !skip_or_fail("redis-server not installed (apt-get install redis-server)")
    }

    /// Redis on a free loopback port; `None` after [`skip_or_fail`] when not installed.
    pub fn loopback() -> Option<Redis> {
        if !Self::available() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        Some(Self::start(SocketAddr::from(([127, 0, 0, 1], port)), None))
    }

    /// Starts Redis on `addr` (in namespace `netns` when given).
    pub fn start(addr: SocketAddr, netns: Option<&str>) -> Redis {
        Self::start_with(addr, netns, None)
    }

    /// Starts Redis with TLS only on `addr` (no plaintext port), serving `cert`/`key` (PEM).
    pub fn start_tls(addr: SocketAddr, cert: PathBuf, key: PathBuf, ca: PathBuf) -> Redis {
        let mut r = Self::start_with(addr, None, Some((cert, key)));
        r.ca = Some(ca);
        r
    }

    fn start_with(addr: SocketAddr, netns: Option<&str>, tls: Option<(PathBuf, PathBuf)>) -> Redis {
        let dir = Arc::new(TempDir::new("redis").expect("temp dir"));
        let mut pw = [0u8; 16];
        getrandom_fill(&mut pw);
        let password = hex(&pw);
        let password_file = dir.join("redis.password");
        std::fs::write(&password_file, format!("{password}\n")).expect("write password file");
        let acl = dir.join("users.acl");
        std::fs::write(&acl, format!("user default off\nuser {REDIS_USER} on >{password} ~* &* +@all\n"))
            .expect("write ACL file");
        let mut r =
            Redis { child: None, addr, password, password_file, netns: netns.map(str::to_owned), tls, ca: None, dir };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let d = &self.dir;
        let mut args: Vec<String> = match &self.tls {
            None => vec!["--port".into(), self.addr.port().to_string()],
            Some((cert, key)) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                self.addr.port().to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        };
        args.extend([
            "--bind".into(),
            self.addr.ip().to_string(),
            "--dir".into(),
            d.path().display().to_string(),
            "--aclfile".into(),
            d.join("users.acl").display().to_string(),
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "always".into(),
            "--save".into(),
            String::new(),
            "--daemonize".into(),
            "no".into(),
            "--logfile".into(),
            d.join("redis.log").display().to_string(),
        ]);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "redis-server"]);
                c
            }
            None => Command::new("redis-server"),
        };
        let child = cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn redis-server");
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not come up on {}: {}", self.addr, self.log());
    }

    /// Whether it answers `PING` (after `AUTH`) from this namespace.
    pub fn ping(&self) -> bool {
        match &self.netns {
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "redis-cli", "--no-auth-warning", "-h"])
                .arg(self.addr.ip().to_string())
                .arg("-p")
                .arg(self.addr.port().to_string())
                .args(["--user", REDIS_USER, "--pass", &self.password, "PING"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG"),
            // redis-cli here may lack TLS; the server's own log says when it listens.
            None if self.tls.is_some() => self.log().contains("Ready to accept connections"),
            None => TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
                .is_ok_and(|_| self.cli(&["PING"]).trim() == "PONG"),
        }
    }

    /// Runs `redis-cli` with `args` as the ACL user; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "redis-cli"]);
                c
            }
            None => Command::new("redis-cli"),
        };
        let out = cmd
            .args(["--no-auth-warning", "-h"])
            .arg(self.addr.ip().to_string())
            .arg("-p")
            .arg(self.addr.port().to_string())
            .args(["--user", REDIS_USER, "--pass", &self.password])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILLs it (no shutdown, no final save).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data directory (it reloads its AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    let mut file = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut file, buf).expect("read /dev/urandom");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A cluster key file shared by the nodes of one test.
pub fn cluster_key(dir: &TempDir) -> PathBuf {
    let path = dir.join("cluster.key");
    let out = Command::new(crate::bin("relay-control"))
        .args(["cluster-key", "--out"])
        .arg(&path)
        .output()
        .expect("run relay-control cluster-key");
    assert!(out.status.success(), "cluster-key failed: {}", String::from_utf8_lossy(&out.stderr));
    path
}

/// The `[cluster]` section for node `id`. With `ca` (a PEM file), the nodes speak TLS
/// (`rediss://`) and trust only that CA.
pub fn cluster_toml(redis: &Redis, key: &std::path::Path, id: &str, region: &str, endpoint: SocketAddr) -> String {
    cluster_toml_trusting(redis, redis.ca.as_deref(), key, id, region, endpoint)
}

/// As [`cluster_toml`], trusting the CA in `ca` (TLS) whatever Redis serves.
pub fn cluster_toml_trusting(
    redis: &Redis,
    ca: Option<&std::path::Path>,
    key: &std::path::Path,
    id: &str,
    region: &str,
    endpoint: SocketAddr,
) -> String {
    let (scheme, ca) = match ca {
        Some(ca) => ("rediss", format!("redis_ca_file = \"{}\"\n", ca.display())),
        None => ("redis", String::new()),
    };
    format!(
        "public_endpoint = \"{endpoint}\"\n[cluster]\nredis_url = \"{scheme}://{REDIS_USER}@{}\"\nredis_password_file = \"{}\"\n\
         {ca}node_id = \"{id}\"\nregion = \"{region}\"\nkey_file = \"{}\"\nheartbeat_ms = 250\nnode_ttl_ms = 1500\n",
        redis.addr,
        redis.password_file.display(),
        key.display()
    )
}

/// Relay-control nodes of one cluster, on loopback.
pub struct Nodes {
    /// The nodes, node 1 first.
    pub nodes: Vec<ControlDaemon>,
    /// Directory of the cluster key.
    pub dir: Arc<TempDir>,
    /// The cluster key file.
    pub key: PathBuf,
}

impl Nodes {
    /// `n` nodes on `redis`; node `i` (from 1) is `edge-i` in region `region(i)`. `extra`
    /// is added to every config after `[cluster]` (whole sections).
    pub fn start(redis: &Redis, n: usize, region: impl Fn(usize) -> String, extra: &str) -> Nodes {
        Self::start_with(redis, n, region, extra, |_| String::new())
    }

    /// As [`Nodes::start`], with `top(i)` as node `i`'s top-level config lines (such as its
    /// `relayd_socket`).
    pub fn start_with(
        redis: &Redis,
        n: usize,
        region: impl Fn(usize) -> String,
        extra: &str,
        top: impl Fn(usize) -> String,
    ) -> Nodes {
        let dir = Arc::new(TempDir::new("cluster").expect("temp dir"));
        let key = cluster_key(&dir);
        let mut nodes: Vec<ControlDaemon> = Vec::new();
        for i in 1..=n {
            let endpoint = SocketAddr::from(([198, 18, 0, i as u8], 7000));
            let cluster = cluster_toml(redis, &key, &format!("edge-{i}"), &region(i), endpoint);
            let cfg = format!("{}\n{cluster}\n{extra}", top(i));
            let node = match nodes.first() {
                None => ControlDaemon::start(&cfg),
                Some(first) => ControlDaemon::start_joining(&cfg, first.admin.clone()),
            };
            nodes.push(node);
        }
        Nodes { nodes, dir, key }
    }

    /// Node `i` (from 1).
    pub fn node(&self, i: usize) -> &ControlDaemon {
        &self.nodes[i - 1]
    }

    /// The admin credentials (the same on every node).
    pub fn admin(&self) -> Credentials {
        self.nodes[0].admin.clone()
    }

    /// `relayctl` pointed at node `i` (from 1) as the admin.
    pub fn relayctl(&self, i: usize) -> Command {
        let n = self.node(i);
        let mut c = Command::new(crate::bin("relayctl"));
        for v in ["EDGERELAY_CREDENTIALS", "EDGERELAY_CA_CERT", "EDGERELAY_SERVICE"] {
            c.env_remove(v);
        }
        c.env("EDGERELAY_ENDPOINT", format!("https://{}", n.addr))
            .env("EDGERELAY_SECRET_ID", &n.admin.secret_id)
            .env("EDGERELAY_SECRET_KEY", &n.admin.secret_key)
            .env("EDGERELAY_CERT_SHA256", &n.fingerprint);
        c
    }
}

/// Polls `check` every 10 ms until it holds or `within` passes; returns the time it took.
pub fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within {within:?}");
}
