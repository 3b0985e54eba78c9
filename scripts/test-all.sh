#!/usr/bin/env bash
# The one command that runs every test of the project, exactly as CI does (.ci/run calls it).
#
# Stages (each prints a banner; the script stops at the first failure):
#   setup    scripts/setup.sh (idempotent installs)
#   lint     cargo fmt --check, cargo clippy -D warnings (host workspace and kernel)
#   test     cargo test for the whole host workspace (unit, property, simulation and
#            end-to-end tests with real xenstore clients against the hosted daemon)
#   kernel   build the PVH unikernel and boot it under QEMU (smoke test)
#   fuzz     each cargo-fuzz target for FUZZ_SECONDS (default 60)
#   bench    benchmarks in their short mode (they print ratios against in-run baselines)
#   lab      the Xen lab's CI scenarios (real Xen 4.17 under QEMU)
#
# Select stages with STAGES="lint test" (default: all). Set CI=true for CI behaviour.
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$top"
stages="${STAGES:-setup lint test kernel fuzz bench lab}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

banner() { printf '\n==== %s ==== (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
want() { [[ " $stages " == *" $1 "* ]]; }
started=$SECONDS

if want setup; then
    banner "setup"
    scripts/setup.sh
fi

if want lint; then
    banner "lint: rustfmt"
    cargo fmt --all -- --check
    banner "lint: clippy (host workspace)"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    if [ -f kernel/Cargo.toml ]; then
        banner "lint: kernel rustfmt and clippy"
        (cd kernel && cargo +nightly fmt -- --check && cargo +nightly clippy --release --locked -- -D warnings)
    fi
fi

if want test; then
    banner "test: cargo test (host workspace)"
    # The kill -9 crash harness runs on its own below, with its report shown.
    cargo test --workspace --locked -- --skip crash_harness_mixed_workload
    banner "test: kill -9 crash harness (report: kills and violations)"
    cargo test -p xenstore-e2e --locked --test crash_harness -- --nocapture
fi

if want kernel; then
    banner "kernel: build PVH ELF"
    scripts/build-kernel.sh
    if [ -x scripts/kernel-smoke.sh ]; then
        banner "kernel: QEMU smoke test"
        scripts/kernel-smoke.sh
    fi
fi

if want fuzz && [ -x scripts/fuzz-smoke.sh ]; then
    banner "fuzz: ${FUZZ_SECONDS:-60} s per target"
    scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-60}"
fi

if want bench && [ -x scripts/bench-short.sh ]; then
    banner "bench: short mode"
    scripts/bench-short.sh
fi

if want lab && [ -x scripts/lab/ci ]; then
    banner "lab: Xen 4.17 under QEMU"
    scripts/lab/ci
fi

banner "all stages passed in $((SECONDS - started)) s: $stages"
