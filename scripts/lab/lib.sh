# scripts/lab/lib.sh — owns: settings and helpers shared by the Xen lab scripts (sourced, not run).
#
# Environment (all optional):
#   LAB_CACHE   cache of the dom0 base image, keyed on its inputs   (default <repo>/lab-cache)
#   LAB_OUT     logs, per-boot images and results of the last run   (default <repo>/lab-out)
#   LAB_MIRROR  Debian mirror for debootstrap                         (default http://deb.debian.org/debian)
#   LAB_SUITE   Debian suite                                          (default bookworm)

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAB_REPO="$(cd "$LAB_DIR/../.." && pwd)"
LAB_CACHE="${LAB_CACHE:-$LAB_REPO/lab-cache}"
LAB_OUT="${LAB_OUT:-$LAB_REPO/lab-out}"
LAB_MIRROR="${LAB_MIRROR:-http://deb.debian.org/debian}"
LAB_SUITE="${LAB_SUITE:-bookworm}"

lab_log() { printf 'lab: %s\n' "$*" >&2; }
lab_die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# Seconds since the epoch with millisecond precision, for timings.
lab_now() { date +%s.%N | cut -c1-14; }
# Elapsed seconds (one decimal) since a lab_now value.
lab_since() { awk -v start="$1" -v end="$(lab_now)" 'BEGIN { printf "%.1f", end - start }'; }

# The project's stub domain kernel: $LAB_STUBDOM_KERNEL, else the first existing default build
# output. Prints the path, or nothing when there is none.
lab_stubdom_kernel() {
    if [ -n "${LAB_STUBDOM_KERNEL:-}" ]; then
        [ -f "$LAB_STUBDOM_KERNEL" ] || lab_die "LAB_STUBDOM_KERNEL=$LAB_STUBDOM_KERNEL does not exist"
        echo "$LAB_STUBDOM_KERNEL"
        return 0
    fi
    local candidate
    for candidate in \
        "$LAB_REPO/kernel/target/x86_64-xen-pvh/release/xenstore-stubdom" \
        "$LAB_REPO/target/x86_64-xen-pvh/release/xenstore-stubdom"; do
        if [ -f "$candidate" ]; then echo "$candidate"; return 0; fi
    done
}
