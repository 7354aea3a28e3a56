//! `relay-bench`: measures edgerelay, and the relays its users would run instead, on this
//! machine, side by side in one run.
//!
//! - `demo` builds a virtual edge in network namespaces and shows relayd, relay-control and
//!   the autoblock at work under a flood, with a live dashboard (see `demo/mod.rs`).
//! - `throughput` runs the same relay scenario over the socket backend and the XDP backend: a
//!   namespace for relayd (one worker) and one for the clients, joined by a veth pair with
//!   addresses from 198.18.0.0/15. A sender streams pre-protected SRTP into a room with
//!   `fanout` receivers as fast as it can; an XDP sink counts what arrives.
//! - `baseline rtpengine|coturn|crypto` and `compare` measure the baselines of issue 5:
//!   rtpengine re-encrypting SRTP, coturn forwarding TURN, the raw crypto ceiling, and relayd
//!   under the same load (see `baseline.rs`).
//! - `scale` and `join-storm` measure joins: relayd's memory with 100k sessions, and the join
//!   rate it sustains (see `scale.rs`).
//!
//! Each figure is the median of `--runs` runs, with min and max. Everything the bench starts
//! (processes, namespaces) is torn down on exit and on failure.
#![forbid(unsafe_code)]

mod baseline;
mod cluster;
mod cluster_net;
mod cluster_proc;
mod cluster_xdp;
mod control_proc;
mod coturn;
mod crypto;
mod demo;
mod edgerelay;
mod flood;
mod joins;
mod latency;
mod load;
mod machine;
mod ng;
mod plots;
mod procs;
mod progress;
mod relayd;
mod report;
mod rig;
mod rtpengine;
mod scale;
mod sdp;
mod stats;
mod throughput;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "relay-bench", version, about = "Benchmarks for edgerelay, run side by side in one run (needs root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The demo: a virtual edge in network namespaces (relayd on XDP, relay-control, two apps,
    /// an attacker) with a live dashboard; exits 0 only if every room got its media and the
    /// flood was contained and auto-blocked. Needs root.
    Demo(demo::Args),
    /// Forwarded packets per second, socket backend vs XDP backend.
    Throughput(throughput::Args),
    /// Legitimate goodput and latency while a flood hits relayd, per backend.
    ///
    /// A sender streams paced SRTP to a verifying receiver for --seconds: a third quiet, a
    /// third under a flood of spoofed-source frames (unknown-source SRTP, junk, bogus joins)
    /// from an AF_XDP generator at its maximum rate, a third quiet again. Reports flood
    /// goodput as a share of quiet goodput, latency p50/p99, and where the flood was dropped
    /// (relayd's userspace counters, the XDP verdicts).
    Flood(flood::Args),
    /// One-way latency p50/p99/p99.9 at fractions of the maximum loss-free rate, per backend.
    ///
    /// The throughput scenario's rig at fan-out 1: every relayed packet is captured and its
    /// SRTP tag verified, and its latency is the time from handing it to the generator to
    /// taking it off the receivers' ring. The maximum rate is --max-pps or found by the
    /// throughput search (loss ≤ 0.1%; a generator that cannot keep up makes it a floor, and
    /// says so).
    Latency(latency::Args),
    /// SVG figures from the scenarios' JSON reports in --dir (baselines.json,
    /// throughput.json, latency.json, flood.json): throughput by fan-out, every system at
    /// fan-out 1, latency CDFs, goodput under flood over time.
    Plot(plots::Args),
    /// One baseline, measured beside edgerelay where that applies.
    #[command(subcommand)]
    Baseline(Baseline),
    /// Every baseline and edgerelay side by side (default 5 runs each); writes report.json
    /// and report.md to --out.
    ///
    /// Needs root for the XDP backend; installs rtpengine and coturn with --install.
    Compare(baseline::CompareArgs),
    /// Many sessions at once (default 100k in 25k rooms): join time and relayd's memory,
    /// against the goal of at most 512 MiB.
    Scale(scale::ScaleArgs),
    /// Joins at a rising rate until the first refusal or timeout: the join rate relayd
    /// sustains, and what stopped it.
    JoinStorm(scale::StormArgs),
    /// The edge cluster's control plane on a real Redis (installed with apt-get install
    /// redis-server): time until a change is served by every node, until a killed node leaves
    /// the registry, and the API's p50/p99 with and without cluster mode.
    Cluster(cluster::Args),
}

#[derive(Subcommand)]
enum Baseline {
    /// rtpengine (userspace, really re-encrypting SRTP) vs relayd at fan-out 1.
    ///
    /// Starts `rtpengine --table=-1` on loopback, sets up a fresh call per probe over its ng
    /// protocol with a different SRTP suite on each leg (so it must decrypt and re-encrypt;
    /// checked at the receiver), sends paced SRTP and searches for the maximum loss-free
    /// rate; then the same for relayd's backends. Reports pps and each relay's CPU µs per
    /// packet. If rtpengine is missing: apt-get install -y --no-install-recommends
    /// rtpengine-daemon (or pass --install as root).
    Rtpengine {
        #[command(flatten)]
        args: baseline::RelayArgs,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// coturn relaying through a TURN allocation, loaded by turnutils_uclient.
    ///
    /// coturn does no re-encryption. Reports relayed pps (sent + echoed) from the client's
    /// per-second progress and turnserver's CPU µs per packet. If coturn is missing:
    /// apt-get install -y --no-install-recommends coturn (or pass --install as root).
    Coturn {
        #[command(flatten)]
        args: baseline::CoturnArgs,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The raw per-packet crypto cost: RustCrypto primitives, edgerelay's SRTP code and
    /// `openssl speed`, for a decrypt + re-encrypt at each size.
    Crypto {
        #[command(flatten)]
        args: baseline::CryptoArgs,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    procs::catch_interrupts()?;
    match cli.cmd {
        Cmd::Demo(a) => demo::run(a),
        Cmd::Throughput(a) => throughput::run(a),
        Cmd::Flood(a) => flood::run(a),
        Cmd::Latency(a) => latency::run(a),
        Cmd::Plot(a) => plots::run(a),
        Cmd::Baseline(Baseline::Rtpengine { args, json }) => baseline::run_rtpengine(args, json),
        Cmd::Baseline(Baseline::Coturn { args, json }) => baseline::run_coturn(args, json),
        Cmd::Baseline(Baseline::Crypto { args, json }) => baseline::run_crypto(args, json),
        Cmd::Compare(a) => baseline::run_compare(a),
        Cmd::Scale(a) => scale::run_scale(a),
        Cmd::JoinStorm(a) => scale::run_storm(a),
        Cmd::Cluster(a) => cluster::run(a),
    }
}
