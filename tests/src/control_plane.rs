//! `control::client` and `relayctl` pointed at a [`ControlDaemon`]: for the CLI, validation
//! and Schemathesis tests, which exercise the product client rather than the harness's own.

use std::ops::Deref;
use std::process::Command;

use control::client::{Client, Credentials, Endpoint, Trust, DEFAULT_SERVICE, DEFAULT_TIMEOUT};
use control::keys::SecretKey;

use crate::bin;
use crate::control::ControlDaemon;

/// A running relay-control (see [`ControlDaemon`]) with product-client helpers.
pub struct RelayControl {
    /// The daemon.
    pub daemon: ControlDaemon,
    /// `https://127.0.0.1:port`.
    pub endpoint: String,
}

impl Deref for RelayControl {
    type Target = ControlDaemon;
    fn deref(&self) -> &ControlDaemon {
        &self.daemon
    }
}

impl RelayControl {
    /// Starts relay-control with `extra` appended to the harness's minimal config.
    pub fn start(extra: &str) -> Self {
        let daemon = ControlDaemon::start(extra);
        let endpoint = format!("https://{}", daemon.addr);
        Self { daemon, endpoint }
    }

    /// Credentials of the bootstrap admin, pinning the daemon's certificate.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            endpoint: Endpoint::parse(&self.endpoint).expect("loopback endpoint"),
            secret_id: self.admin.secret_id.clone(),
            secret_key: SecretKey::from_exposed(self.admin.secret_key.clone()),
            trust: Trust::Pin(control::client::parse_fingerprint(&self.fingerprint).expect("printed fingerprint")),
            service: DEFAULT_SERVICE.into(),
        }
    }

    /// A signing product client as the bootstrap admin.
    pub fn client(&self) -> Client {
        Client::new(&self.credentials(), DEFAULT_TIMEOUT).expect("client")
    }

    /// `relayctl` with the admin's credentials in its environment and no other `EDGERELAY_*`.
    pub fn relayctl(&self) -> Command {
        let mut c = Command::new(bin("relayctl"));
        for v in ["EDGERELAY_CREDENTIALS", "EDGERELAY_CA_CERT", "EDGERELAY_SERVICE"] {
            c.env_remove(v);
        }
        c.env("EDGERELAY_ENDPOINT", &self.endpoint)
            .env("EDGERELAY_SECRET_ID", &self.admin.secret_id)
            .env("EDGERELAY_SECRET_KEY", &self.admin.secret_key)
            .env("EDGERELAY_CERT_SHA256", &self.fingerprint);
        c
    }
}
