//! Starting `relay-control` for a scenario: bootstrap an admin key, run `serve`, read the
//! address and certificate fingerprint it prints, and hand back a signing client pinned to
//! that certificate; and calling it from inside the namespace it listens in. The demo and
//! the cluster scenario share it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::client::{Call, Client, Credentials, Endpoint, Response, Trust, DEFAULT_SERVICE, DEFAULT_TIMEOUT};
use control::keys::SecretKey;

use crate::procs::{check_interrupted, Guard};

/// An admin key's SecretId and SecretKey.
pub type Admin = (String, String);

/// Runs `relay-control bootstrap-admin --config CONFIG` and returns the key it printed.
pub fn bootstrap(bin: &Path, config: &Path) -> Result<Admin> {
    let out = Command::new(bin).args(["bootstrap-admin", "--config"]).arg(config).output().context("relay-control")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("relay-control bootstrap-admin failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("no {name} in bootstrap-admin's output"))
    };
    Ok((field("SecretId:")?, field("SecretKey:")?))
}

/// Spawns `cmd` (a `relay-control` command line, to which `serve --config CONFIG` is added;
/// stderr to `log`), waits until it listens, and returns it with a client signing as
/// `admin`.
pub fn serve(mut cmd: Command, config: &Path, log: &Path, admin: &Admin) -> Result<(Guard, Client)> {
    let log_file = std::fs::File::create(log)?;
    cmd.args(["serve", "--config"]).arg(config).stdout(Stdio::piped()).stderr(log_file);
    let mut guard = Guard::spawn(cmd, "relay-control")?;
    let stdout = guard.child_mut().stdout.take().context("relay-control's stdout")?;
    // Read the start-up lines on a thread (a read cannot time out), then keep draining.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The receiver is gone once start-up is over; later lines are discarded.
            let _ = tx.send(line);
        }
    });
    let (mut fingerprint, mut endpoint) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while endpoint.is_none() {
        check_interrupted()?;
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(f) = line.trim().strip_prefix("relay-control: certificate ") {
                    fingerprint = Some(f.to_owned());
                }
                if let Some(a) = line.trim().strip_prefix("relay-control: listening on ") {
                    endpoint = Some(a.to_owned());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                bail!("relay-control did not start:\n{text}");
            }
        }
    }
    let fingerprint = fingerprint.context("relay-control printed no certificate fingerprint")?;
    let creds = Credentials {
        endpoint: Endpoint::parse(endpoint.as_deref().unwrap_or_default())?,
        secret_id: admin.0.clone(),
        secret_key: SecretKey::from_exposed(admin.1.clone()),
        trust: Trust::Pin(control::client::parse_fingerprint(&fingerprint)?),
        service: DEFAULT_SERVICE.into(),
    };
    Ok((guard, Client::new(&creds, DEFAULT_TIMEOUT)?))
}

/// Sends `call` from inside network namespace `ns` (relay-control listens on loopback
/// there; the calling thread enters it for the call).
pub fn send_in(ns: &str, client: &Client, call: &Call) -> Result<Response> {
    let _g = relay::io::netns::NetNsGuard::enter(&format!("/run/netns/{ns}"))?;
    Ok(client.send(call)?)
}

/// As [`send_in`], failing unless the answer is 2xx; returns the body as the
/// [`control::api`] type `T`.
pub fn send_in_ok<T: serde::de::DeserializeOwned>(ns: &str, client: &Client, call: &Call) -> Result<T> {
    let r = send_in(ns, client, call)?;
    let path = || call.path(client.endpoint()).unwrap_or_default();
    if let Some(e) = r.api_error() {
        bail!("relay-control refused {}: {e}", path());
    }
    r.parse().with_context(|| format!("relay-control's answer to {}", path()))
}
