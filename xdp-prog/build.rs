//! Builds the XDP program with clang into `OUT_DIR` when clang is present; otherwise copies
//! the committed object there (the bpf2go convention). Whether the committed object is
//! stale is checked by the test `committed_object_is_fresh`, not here.

#[path = "src/bpf_build.rs"]
mod bpf_build;

use std::path::PathBuf;

fn main() {
    for path in [bpf_build::SOURCE, bpf_build::HEADER, bpf_build::COMMITTED] {
        println!("cargo::rerun-if-changed={path}");
    }
    println!("cargo::rerun-if-env-changed={}", bpf_build::CLANG_ENV);
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("edgerelay.bpf.o");
    match bpf_build::find_clang() {
        Some(clang) => bpf_build::compile(&clang, &crate_dir, &out).unwrap_or_else(|e| panic!("{e}")),
        None => {
            println!("cargo::warning=clang not found: using the committed {}", bpf_build::COMMITTED);
            std::fs::copy(crate_dir.join(bpf_build::COMMITTED), &out).expect("copy the committed object");
        }
    }
}
