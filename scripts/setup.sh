#!/usr/bin/env bash
# Installs everything the build, the tests and the Xen lab need on a fresh Debian bookworm
# machine (run as root). Idempotent: a second run only checks.
#
# What it installs:
# - Debian packages: real Xenstore clients (xenstore-utils = libxenstore's xenstore-* tools,
#   python3-pyxs), valgrind and the Xen lab's host tools (QEMU, debootstrap, cpio, busybox);
# - rustup pieces: rustfmt and clippy for stable, the nightly toolchain with `rust-src`
#   (the kernel is built with -Zbuild-std for the custom target x86_64-xen-pvh.json).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

apt_packages=(
    xenstore-utils python3-pyxs
    qemu-system-x86 debootstrap cpio busybox-static zstd
    libxen-dev
    pkg-config
)

missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v rustup >/dev/null; then
    echo "setup: rustup is required (the machine's Rust toolchain is managed by rustup)" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "setup: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal --component rust-src
fi
rustup component add rust-src --toolchain nightly >/dev/null

# Unmodified upstream clients that Debian ships only inside xen-utils-4.17 (whose installation
# would also bring init scripts for a Xen host): xenstore-control and xen.git's conformance
# test test-xenstore. They need only libxenstore at run time; extract the package's files.
xen_utils_dir=/opt/xen-utils-4.17
if [ ! -x "$xen_utils_dir/usr/lib/xen-4.17/bin/xenstore-control" ]; then
    echo "setup: extracting xenstore-control and test-xenstore from xen-utils-4.17"
    scratch="$(mktemp -d)"
    (cd "$scratch" && apt-get download -qq xen-utils-4.17)
    rm -rf "$xen_utils_dir"
    mkdir -p "$xen_utils_dir"
    dpkg -x "$scratch"/xen-utils-4.17_*.deb "$xen_utils_dir"
    rm -rf "$scratch"
fi

# The Xen lab's own host requirements (kept with the lab).
if [ -x "$here/lab/install-host-deps.sh" ]; then
    "$here/lab/install-host-deps.sh"
fi
echo "setup: done"
