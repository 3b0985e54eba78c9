#!/usr/bin/env bash
# Fuzz smoke test for the parsers of peer and disk input: installs cargo-fuzz if missing, then runs every
# target of fuzz/ for the given number of seconds each (default 60). Exit status is non-zero
# if any target finds a crash. Needs a nightly toolchain (`rustup toolchain install nightly`).
#
# Usage: scripts/fuzz-smoke.sh [seconds-per-target] [target...]
set -euo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

status=0
for target in "${targets[@]}"; do
    echo "fuzz-smoke: $target for ${seconds}s" >&2
    set +e
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" 2>&1 |
        tee "/tmp/fuzz-smoke-$target.log" | grep -E '^(Done|==[0-9]+==|SUMMARY)|panicked' >&2
    run_status="${PIPESTATUS[0]}"
    set -e
    if [ "$run_status" -ne 0 ]; then
        echo "fuzz-smoke: $target FAILED (log: /tmp/fuzz-smoke-$target.log, artifacts in fuzz/artifacts/$target)" >&2
        status=1
    else
        echo "fuzz-smoke: $target ok" >&2
    fi
done
exit "$status"
