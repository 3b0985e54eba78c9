#!/usr/bin/env bash
# Benchmarks in short mode for CI (called by scripts/test-all.sh, stage "bench"); total well
# under 5 minutes on 2 cores.
#
# 1. xenstore-loadgen against rxenstored in both persistence modes (one invocation: boot-storm,
#    rw and mixed workloads; prints a table with the ratio crash-resilient/none).
# 2. Other crates' benches in their documented short modes, when present:
#    persist: PERSIST_BENCH_SHORT=1; store: STORE_BENCH_SHORT=1 (harmless if unused).
#
# Environment: CARGO_TARGET_DIR (default target), LOADGEN_DOMAINS (default 200),
# LOADGEN_DURATION seconds (default 3), LOADGEN_CLIENTS (default 4), BENCH_TIMEOUT per bench
# in seconds (default 120).
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$top"
target="${CARGO_TARGET_DIR:-$top/target}"
export CARGO_TARGET_DIR="$target"
limit="${BENCH_TIMEOUT:-120}"

echo "== bench-short: building rxenstored and xenstore-loadgen (release)"
cargo build --release -p rxenstored -p xenstore-loadgen

echo "== bench-short: xenstore-loadgen, persistence none vs crash-resilient"
timeout "$limit" "$target/release/xenstore-loadgen" \
    --spawn-rxenstored "$target/release/rxenstored" --persistence both \
    --workload all \
    --domains "${LOADGEN_DOMAINS:-200}" \
    --duration "${LOADGEN_DURATION:-3}" \
    --clients "${LOADGEN_CLIENTS:-4}"

# Compile first, outside the time limit (a cold release build of criterion on 2 cores can take
# longer than the benchmark itself); the limit then bounds only the measurement.
if [ -d persist/benches ]; then
    echo "== bench-short: cargo bench -p xenstore-persist (PERSIST_BENCH_SHORT=1)"
    cargo bench -p xenstore-persist --no-run
    PERSIST_BENCH_SHORT=1 timeout "$limit" cargo bench -p xenstore-persist
fi
if [ -d store/benches ]; then
    echo "== bench-short: cargo bench -p xenstore-store (STORE_BENCH_SHORT=1)"
    cargo bench -p xenstore-store --no-run
    STORE_BENCH_SHORT=1 timeout "$limit" cargo bench -p xenstore-store
fi
echo "== bench-short: done"
