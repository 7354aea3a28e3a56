//! The one clang command line that builds `bpf/edgerelay.bpf.o`, shared by `build.rs` and the
//! staleness test so that both produce the same bytes.
//!
//! The build is reproducible: paths are relative to the crate directory and the DWARF
//! compilation directory is `.`, so the object does not depend on where the checkout lives.
//! ELF objects carry no timestamp. The compiler version is recorded (DWARF producer), so the
//! committed object is built with `clang-19`, the first compiler tried.

use std::path::Path;
use std::process::Command;

/// The C source, relative to the crate directory.
pub const SOURCE: &str = "src/edgerelay.bpf.c";
/// The shared header, relative to the crate directory.
pub const HEADER: &str = "include/edgerelay.h";
/// The committed object, relative to the crate directory.
pub const COMMITTED: &str = "bpf/edgerelay.bpf.o";
/// Environment variable naming the compiler to use instead of the defaults.
pub const CLANG_ENV: &str = "CLANG";
/// Compilers tried in order when `CLANG` is not set.
pub const CLANGS: [&str; 2] = ["clang-19", "clang"];

/// The first compiler that runs, if any.
pub fn find_clang() -> Option<String> {
    let candidates: Vec<String> = match std::env::var(CLANG_ENV) {
        Ok(c) if !c.is_empty() => vec![c],
        _ => CLANGS.iter().map(|c| (*c).to_owned()).collect(),
    };
    candidates.into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Compiles the program with `clang` into `out`, running in `crate_dir`.
pub fn compile(clang: &str, crate_dir: &Path, out: &Path) -> Result<(), String> {
    // <linux/types.h> needs <asm/types.h>, which Debian keeps under the multiarch directory.
    let multiarch = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let output = Command::new(clang)
        .current_dir(crate_dir)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Werror", "-Iinclude"])
        .arg(multiarch)
        .arg("-fdebug-compilation-dir=.")
        .args(["-c", SOURCE, "-o"])
        .arg(out)
        .output()
        .map_err(|e| format!("running {clang}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{clang} failed:\n{}", String::from_utf8_lossy(&output.stderr)))
    }
}
