//! The README's demo in its short form (about 10 s of media): `relay-bench demo --seconds 10
//! --no-dashboard` must exit 0 and its summary must report the auto-block. Root (namespaces,
//! XDP); skipped on a laptop, required under `CI=true`.
//!
//! Run `cargo build --workspace --bins` first.

use std::process::Command;

use edgerelay_tests::{bin, skip_or_fail};

#[test]
fn the_demo_passes_in_its_short_form() {
    if !relay::io::sys::is_root() {
        skip_or_fail("relay-bench demo needs root (network namespaces, XDP)");
        return;
    }
    let out = Command::new(bin("relay-bench"))
        .args(["demo", "--seconds", "10", "--no-dashboard", "--no-install"])
        .arg("--relayd")
        .arg(bin("relayd"))
        .arg("--relay-control")
        .arg(bin("relay-control"))
        .output()
        .expect("run relay-bench demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "the demo failed ({})", out.status);
    assert!(stdout.contains("DEMO OK"), "no verdict in the summary");
    let blocked = stdout.lines().find(|l| l.starts_with("attacker auto-blocked by relay-control")).unwrap_or_default();
    assert!(blocked.contains("198.19.0.2/32 source auto"), "the summary does not report the auto-block: {blocked:?}");
    // One line per second of media, not the full-screen view.
    assert!(!stdout.contains("\x1b["), "ANSI escapes with --no-dashboard");
    assert!(stdout.lines().filter(|l| l.starts_with("t=")).count() >= 8, "fewer than 8 progress lines");
}
