//! A real `relay-control` for the API and CLI tests: temp state dir, self-signed certificate,
//! a bootstrap admin key, a free loopback port; killed and cleaned up on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::client::{Client, Credentials, Endpoint, Trust, DEFAULT_SERVICE, DEFAULT_TIMEOUT};
use control::keys::SecretKey;

use crate::{bin, TempDir};

/// A running relay-control.
pub struct RelayControl {
    child: Child,
    /// `https://127.0.0.1:port`.
    pub endpoint: String,
    /// The certificate fingerprint it printed (`sha256:AB:...`).
    pub fingerprint: String,
    /// The bootstrap admin key's SecretId.
    pub secret_id: String,
    /// The bootstrap admin key's SecretKey.
    pub secret_key: String,
    /// Its config file.
    pub config: PathBuf,
    dir: TempDir,
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value after `label` on the line that has it (`SecretId: AKID...`, `SecretId = ...`).
fn labelled(text: &str, label: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(label)?;
        let v = rest.trim_start_matches([':', '=', ' ', '\t']).trim().trim_matches('"');
        (!v.is_empty()).then(|| v.to_owned())
    })
}

impl RelayControl {
    /// Starts relay-control with `extra` appended to a minimal config (listen, state_dir).
    pub fn start(extra: &str) -> Self {
        let dir = TempDir::new("control");
        let port = free_tcp_port();
        let config = dir.0.join("control.toml");
        let state = dir.0.join("state");
        std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n{extra}", state.display()))
            .unwrap();
        let out = Command::new(bin("relay-control"))
            .args(["bootstrap-admin", "--config"])
            .arg(&config)
            .args(["--label", "test-admin"])
            .output()
            .expect("run relay-control bootstrap-admin");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "bootstrap-admin failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        let secret_id = labelled(&text, "SecretId").unwrap_or_else(|| panic!("no SecretId in {text:?}"));
        let secret_key = labelled(&text, "SecretKey").unwrap_or_else(|| panic!("no SecretKey in {text:?}"));

        let log = dir.0.join("control.log");
        let child = Command::new(bin("relay-control"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(std::fs::OpenOptions::new().append(true).open(&log).unwrap()))
            .spawn()
            .expect("spawn relay-control");
        let mut rc = Self {
            child,
            endpoint: format!("https://127.0.0.1:{port}"),
            fingerprint: String::new(),
            secret_id,
            secret_key,
            config,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = rc.log();
            if let Some(at) = log.find("sha256:") {
                let fp: String = log[at..].chars().take(7 + 95).collect();
                if fp.len() == 102 && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    rc.fingerprint = fp;
                    return rc;
                }
            }
            if let Ok(Some(st)) = rc.child.try_wait() {
                panic!("relay-control exited with {st}: {log}");
            }
            assert!(Instant::now() < deadline, "relay-control did not come up: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("control.log")).unwrap_or_default()
    }

    /// Credentials of the bootstrap admin, pinning the certificate.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            endpoint: Endpoint::parse(&self.endpoint).unwrap(),
            secret_id: self.secret_id.clone(),
            secret_key: SecretKey::from_exposed(self.secret_key.clone()),
            trust: Trust::Pin(control::client::parse_fingerprint(&self.fingerprint).unwrap()),
            service: DEFAULT_SERVICE.into(),
        }
    }

    /// A signing client as the bootstrap admin.
    pub fn client(&self) -> Client {
        Client::new(&self.credentials(), DEFAULT_TIMEOUT).unwrap()
    }

    /// `relayctl` with the admin's credentials in its environment (and nothing else of ours).
    pub fn relayctl(&self) -> Command {
        let mut c = Command::new(bin("relayctl"));
        for v in ["EDGERELAY_CREDENTIALS", "EDGERELAY_CA_CERT", "EDGERELAY_SERVICE"] {
            c.env_remove(v);
        }
        c.env("EDGERELAY_ENDPOINT", &self.endpoint)
            .env("EDGERELAY_SECRET_ID", &self.secret_id)
            .env("EDGERELAY_SECRET_KEY", &self.secret_key)
            .env("EDGERELAY_CERT_SHA256", &self.fingerprint);
        c
    }
}

impl Drop for RelayControl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
