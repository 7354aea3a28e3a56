#!/usr/bin/env bash
# Interleaved repetitions of every GCM candidate: this crate built with the default flags (what
# the product ships: no RUSTFLAGS) and with `-C target-cpu=native`, then `openssl speed` at the
# same size. Each repetition rotates the candidates' order. Results go to results.txt (one
# `label/name µs` line per run); `gcm-candidates summarize results.txt` makes the table.
#
# Usage: bench/gcm-candidates/run.sh [REPS] [SECS]   (defaults 7 and 0.3)
set -euo pipefail
cd "$(dirname "$0")"
reps=${1:-7}
secs=${2:-0.3}
cargo build --release --quiet
RUSTFLAGS="-C target-cpu=native" cargo build --release --quiet --target-dir target/native
out=results.txt
: >"$out"
for rep in $(seq 0 $((reps - 1))); do
    target/release/gcm-candidates run --secs "$secs" --rep "$rep" --label default >>"$out"
    target/native/release/gcm-candidates run --secs "$secs" --rep "$rep" --label native >>"$out"
    # openssl speed -mr: "+R:COUNT:ALG:SECONDS" (user CPU seconds); decrypt + re-encrypt is
    # two passes.
    openssl speed -mr -seconds 1 -bytes 1200 -evp aes-128-gcm 2>&1 |
        awk -F: '/^\+R:/ { printf "openssl/%s %.4f\n", "evp-aes-128-gcm-x2", 2 * $4 * 1e6 / $2 }' >>"$out"
done
target/release/gcm-candidates summarize "$out"
uptime
