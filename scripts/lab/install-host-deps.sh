#!/usr/bin/env bash
# scripts/lab/install-host-deps.sh — owns: installing the host packages the Xen lab needs.
#
# Idempotent: installs only what is missing, runs `apt-get update` only when something
# has to be installed. Needs root (CI and the dev machines run as root).
# Packages (Debian bookworm):
#   qemu-system-x86  runs Xen under TCG (software emulation; there is no usable KVM)
#   debootstrap      builds dom0's root filesystem from bookworm packages
#   cpio gzip zstd   pack dom0's initramfs and the guest initrd
#   binutils         strip: project binaries go into the overlay without debug information
#   busybox-static   shell and tools of the tiny lab guest's initrd (the host copy is a fallback;
#                    the dom0 image brings its own)
#   ca-certificates  so that apt/debootstrap can use https mirrors if configured
set -euo pipefail

packages=(qemu-system-x86 debootstrap cpio gzip zstd binutils busybox-static ca-certificates)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "lab: host dependencies present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "lab: need root to install: ${missing[*]}" >&2
    exit 1
fi

echo "lab: installing host packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# No recommends: qemu-system-x86 would otherwise pull a GUI stack the lab never uses.
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "lab: host dependencies installed"
