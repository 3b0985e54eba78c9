#!/usr/bin/env bash
# scripts/lab/build-overlay.sh — owns: the small second cpio of the Xen lab (rebuilt every run).
#
# Usage: build-overlay.sh <base-dir> <output.cpio>
# Packs, for concatenation after the cached dom0-base.cpio:
#   /init                      dom0's init (scripts/lab/dom0/init)
#   /lab/lib.sh, /lab/scenarios/, /lab/bench-xs.py   dom0-side scenario code
#   /lab/xl/lab-guest-pvh.cfg  the guest config (xl-configs/)
#   /lab/guest/vmlinuz, /lab/guest/initrd.cpio.gz    the tiny PVH guest
#   /lab/stubdom/kernel        the project's xenstore stub domain kernel, if one is found
#   /lab/bin/rxenstored        the project's hosted daemon, if built
#   /lab/bin/loadgen           the project's load generator, if LAB_LOADGEN names one (also put
#                              into the guest initrd as /bin/xenstore-loadgen for scenario e)
#   /lab/crash.env             scenario e's settings (LAB_CRASH_* from the host environment)
#   /lab/bin/xenstore-ramdisk  the RAM disk attach tool (scripts/xenstore-ramdisk)
# Stub domain kernel: $LAB_STUBDOM_KERNEL, else the default build output (lib.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base="$1"
output="$2"
staging="$(mktemp -d "${TMPDIR:-/tmp}/lab-overlay.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
chmod 0755 "$staging"

mkdir -p "$staging/lab/scenarios" "$staging/lab/xl" "$staging/lab/guest" "$staging/lab/bin" "$staging/lab/stubdom"
install -m 0755 "$LAB_DIR/dom0/init" "$staging/init"
install -m 0644 "$LAB_DIR/dom0/lib.sh" "$staging/lab/lib.sh"
install -m 0755 "$LAB_DIR/dom0/bench-xs.py" "$staging/lab/bench-xs.py"
install -m 0755 "$LAB_DIR"/scenarios/*.sh "$staging/lab/scenarios/"
install -m 0644 "$LAB_REPO/xl-configs/lab-guest-pvh.cfg" "$staging/lab/xl/"
install -m 0755 "$LAB_REPO/scripts/xenstore-ramdisk" "$staging/lab/bin/xenstore-ramdisk"
cp "$base/vmlinuz" "$staging/lab/guest/vmlinuz"

# The guest initrd: busybox and an /init, nothing else (~1 MB compressed).
guest="$staging/guest-root"
mkdir -p "$guest/bin" "$guest/proc" "$guest/dev"
install -m 0755 "$base/busybox" "$guest/bin/busybox"
ln -s busybox "$guest/bin/sh"
install -m 0755 "$LAB_DIR/guest/init" "$guest/init"
if [ -n "${LAB_LOADGEN:-}" ]; then
    [ -f "$LAB_LOADGEN" ] || lab_die "LAB_LOADGEN=$LAB_LOADGEN does not exist"
    strip --strip-debug -o "$guest/bin/xenstore-loadgen" "$LAB_LOADGEN"
    chmod 0755 "$guest/bin/xenstore-loadgen"
fi
(cd "$guest" && find . | cpio -o -H newc --quiet) | gzip -1 >"$staging/lab/guest/initrd.cpio.gz"
rm -rf "$guest"

# The project's binaries go in without debug information: dom0 unpacks its whole initramfs
# into 700 MB of RAM, and the release builds carry debug info (a 16 MB rxenstored pushed the
# image past what dom0 can unpack: "Initramfs unpacking failed: write error").
install_stripped() { # install_stripped MODE SOURCE DESTINATION
    strip --strip-debug -o "$3" "$2"
    chmod "$1" "$3"
}

stubdom="$(lab_stubdom_kernel)"
if [ -n "$stubdom" ]; then
    install_stripped 0644 "$stubdom" "$staging/lab/stubdom/kernel"
    lab_log "stub domain kernel: $stubdom"
fi

hosted="$LAB_REPO/target/release/rxenstored"
if [ -f "$hosted" ]; then install_stripped 0755 "$hosted" "$staging/lab/bin/rxenstored"; fi
if [ -n "${LAB_LOADGEN:-}" ]; then
    [ -f "$LAB_LOADGEN" ] || lab_die "LAB_LOADGEN=$LAB_LOADGEN does not exist"
    install_stripped 0755 "$LAB_LOADGEN" "$staging/lab/bin/loadgen"
fi

# Scenario e's settings travel in the overlay (dom0's kernel command line is boot.sh's).
{
    echo "# written by build-overlay.sh from the host's LAB_CRASH_* environment"
    for name in LAB_CRASH_INJECT LAB_CRASH_GUESTS LAB_CRASH_POINTS LAB_CRASH_COUNT_MAX LAB_CRASH_SEED LAB_CRASH_XL_ARGS \
        LAB_CRASH_PACE_MS LAB_CRASH_ACK_EVERY LAB_CRASH_BUSY; do
        if [ -n "${!name:-}" ]; then printf '%s=%q\n' "$name" "${!name}"; fi
    done
} >"$staging/lab/crash.env"

(cd "$staging" && find . -mindepth 1 | cpio -o -H newc --quiet) >"$output"
