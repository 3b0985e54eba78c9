#!/usr/bin/env bash
# Build the PVH unikernel (kernel/) for the custom target x86_64-xen-pvh.json.
#
# One command: scripts/build-kernel.sh [--debug]
# Result:      kernel/target/xenstore-stubdom.elf (a PVH ELF with the XEN_ELFNOTE_PHYS32_ENTRY
#              note), also gzip-compressed as kernel/target/xenstore-stubdom.elf.gz for
#              init-xenstore-domain / XENSTORE_DOMAIN_KERNEL.
# Environment: CARGO_TARGET_DIR (default kernel/target) is honoured; KERNEL_OUT_DIR overrides
#              where the .elf copy goes (default kernel/target).
# Idempotent: ensures the nightly toolchain has rust-src (needed by -Zbuild-std).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernel_dir="$repo_dir/kernel"
profile=release
cargo_profile_flag=(--release)
if [[ "${1:-}" == "--debug" ]]; then
    profile=debug
    cargo_profile_flag=()
fi

if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    rustup toolchain install nightly --profile minimal --component rust-src
    rustup component add rust-src --toolchain nightly
fi

target_dir="${CARGO_TARGET_DIR:-$kernel_dir/target}"
out_dir="${KERNEL_OUT_DIR:-$kernel_dir/target}"

# Settings (target JSON, build-std, json-target-spec) live in kernel/.cargo/config.toml;
# running from kernel/ picks them up together with kernel/rust-toolchain.toml.
(cd "$kernel_dir" && CARGO_TARGET_DIR="$target_dir" cargo +nightly build "${cargo_profile_flag[@]}" --locked)

elf="$target_dir/x86_64-xen-pvh/$profile/xenstore-stubdom"
mkdir -p "$out_dir"
cp "$elf" "$out_dir/xenstore-stubdom.elf"
gzip -9 -n -c "$elf" > "$out_dir/xenstore-stubdom.elf.gz"

if command -v readelf >/dev/null; then
    if ! readelf -n "$out_dir/xenstore-stubdom.elf" | grep -q 'Xen.*0x00000004.*(0x00000012)'; then
        echo "build-kernel: PVH note (Xen, type 18) missing from $out_dir/xenstore-stubdom.elf" >&2
        exit 1
    fi
fi
echo "$out_dir/xenstore-stubdom.elf"
