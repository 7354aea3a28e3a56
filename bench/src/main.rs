//! `relay-bench`: measures edgerelay in network namespaces it builds and tears down.
//!
//! `throughput` runs the same relay scenario over the socket backend and the XDP backend,
//! side by side in one run: a namespace for relayd (one worker, pinned) and one for the
//! clients, joined by a veth pair with addresses from 198.18.0.0/15. A sender streams
//! pre-protected SRTP into a room with `fanout` receivers as fast as it can; the receivers
//! count what arrives. Each figure is the median of `--runs` runs, with min and max.
#![forbid(unsafe_code)]

mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "relay-bench", version, about = "Benchmarks for edgerelay, run side by side in one run (needs root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Forwarded packets per second, socket backend vs XDP backend.
    Throughput(throughput::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Throughput(a) => throughput::run(a),
    }
}
