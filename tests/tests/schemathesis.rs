//! Property-based API testing of relay-control with Schemathesis (`scripts/schemathesis`):
//! generated requests to every documented operation, each TC3-signed by the hook in
//! `scripts/schemathesis_hooks.py`, must never get a 5xx and must get answers that conform
//! to the OpenAPI document.

use std::path::Path;
use std::process::Command;

use edgerelay_tests::*;

/// `scripts/schemathesis` exits 77 when Schemathesis cannot be installed from PyPI.
const INSTALL_FAILED: i32 = 77;

#[test]
fn schemathesis_finds_no_server_error_or_nonconforming_answer() {
    let bin_dir = bin("relayctl").parent().unwrap().to_owned();
    for b in ["relay-control", "relayd"] {
        assert!(bin_dir.join(b).exists(), "{b} is missing: run `cargo build --workspace --bins` first");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/schemathesis");
    let out = Command::new(&script).env("RELAYCTL_BIN_DIR", &bin_dir).output().expect("run scripts/schemathesis");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(INSTALL_FAILED)
        && skip_or_fail(&format!("Schemathesis could not be installed from PyPI: {text}"))
    {
        return;
    }
    assert!(out.status.success(), "scripts/schemathesis failed ({:?}):\n{text}", out.status.code());
}
