#!/usr/bin/env bash
# scripts/lab/build-base.sh — owns: the cached dom0 base image of the Xen lab.
#
# Builds, from Debian packages only:
#   xen.elf          Xen 4.17 hypervisor (xen-hypervisor-4.17-amd64), gunzipped: a multiboot ELF
#                    that QEMU's -kernel loads directly
#   vmlinuz          Debian's Linux kernel (linux-image-amd64): dom0's kernel and the lab guests'
#   dom0-base.cpio   dom0's root filesystem (debootstrap minbase + Xen tools + the kernel's Xen
#                    modules) as an uncompressed newc cpio, used as dom0's initramfs
#   busybox          busybox-static, for the tiny guest initrd built by build-overlay.sh
#   versions.txt     package versions that went in
# into $LAB_CACHE/base-<key>/, where <key> hashes this script and the package list; a finished
# build is never redone (delete the directory to force it). Prints the directory on stdout.
# Needs root (debootstrap, chroot) and the host tools of install-host-deps.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# dom0 userland. xen-utils-4.17 brings xl, init-xenstore-domain, C xenstored and oxenstored
# (and depends on python3, which the benchmark client uses).
DOM0_PACKAGES="xen-utils-4.17,xenstore-utils,kmod,iproute2,procps,busybox-static,python3-minimal"
# Kernel modules dom0 needs (their dependencies are added automatically).
# loop: the RAM disk for the stub domain (scripts/xenstore-ramdisk) is a file on a loop device.
DOM0_MODULES="xenfs xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xen-blkback xen-netback xen-pciback loop"

key="$( { cat "${BASH_SOURCE[0]}"; echo "$LAB_SUITE $LAB_MIRROR"; } | sha256sum | cut -c1-16)"
out="$LAB_CACHE/base-$key"
if [ -f "$out/done" ]; then
    lab_log "dom0 base image cached: $out"
    echo "$out"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || lab_die "building the dom0 base image needs root (debootstrap)"
command -v debootstrap >/dev/null || lab_die "debootstrap missing: run scripts/lab/install-host-deps.sh"

start="$(lab_now)"
work="$LAB_CACHE/build-$key.tmp"
rm -rf "$work"
mkdir -p "$work/debs"
rootfs="$work/rootfs"

lab_log "debootstrap $LAB_SUITE minbase + $DOM0_PACKAGES (about 1 min)"
debootstrap --variant=minbase --include="$DOM0_PACKAGES" "$LAB_SUITE" "$rootfs" "$LAB_MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; lab_die "debootstrap failed"; }
lab_log "debootstrap done after $(lab_since "$start") s"

# The hypervisor must match the tools debootstrap installed (same Xen point release), so it is
# downloaded at exactly that version. The kernel is whatever linux-image-amd64 points at.
xen_version="$(chroot "$rootfs" dpkg-query -W -f='${Version}' xen-utils-4.17)"
if ! apt-cache show "xen-hypervisor-4.17-amd64=$xen_version" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
fi
kernel_package="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')"
[ -n "$kernel_package" ] || lab_die "cannot resolve linux-image-amd64 with the host's apt"
(cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "xen-hypervisor-4.17-amd64=$xen_version" "$kernel_package" >/dev/null)
# Unpacked inside the rootfs so that the chroot's kmod (depmod, modprobe) can read it: the
# host needs no kmod of its own.
extract="$rootfs/tmp/lab-extract"
mkdir -p "$extract"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$extract"; done

xen_gz="$(ls "$extract"/boot/xen-4.17-amd64.gz)"
gunzip -c "$xen_gz" >"$work/xen.elf"
vmlinuz="$(ls "$extract"/boot/vmlinuz-*)"
cp "$vmlinuz" "$work/vmlinuz"
kernel_release="${vmlinuz##*/vmlinuz-}"

# Kernel modules: only the closure of DOM0_MODULES (the full tree is ~400 MB).
modules_src="$extract/lib/modules/$kernel_release"
chroot "$rootfs" depmod -b /tmp/lab-extract "$kernel_release"
modules_dst="$rootfs/lib/modules/$kernel_release"
mkdir -p "$modules_dst"
cp "$modules_src"/modules.order "$modules_src"/modules.builtin* "$modules_dst"/
# shellcheck disable=SC2086 # word splitting of the module list is intended
for module in $DOM0_MODULES; do
    chroot "$rootfs" modprobe -d /tmp/lab-extract -S "$kernel_release" --show-depends "$module" |
        awk '$1 == "insmod" { print $2 }'
done | sort -u | while read -r file; do
    file="$rootfs$file"
    relative="${file#"$modules_src"/}"
    mkdir -p "$modules_dst/$(dirname "$relative")"
    cp "$file" "$modules_dst/$relative"
done
chroot "$rootfs" depmod "$kernel_release"
rm -rf "$extract"

cp "$rootfs/bin/busybox" "$work/busybox"

# Slim the image: documentation, locales, apt's caches.
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/debconf/*-old

{
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "suite: $LAB_SUITE ($LAB_MIRROR)"
    echo "xen: xen-hypervisor-4.17-amd64 $xen_version"
    echo "kernel: $kernel_package $kernel_release"
    chroot "$rootfs" dpkg-query -W xen-utils-4.17 xenstore-utils python3-minimal busybox-static
} >"$work/versions.txt"

lab_log "packing dom0-base.cpio"
(cd "$rootfs" && find . -print0 | cpio --null -o -H newc --quiet) >"$work/dom0-base.cpio"

mkdir -p "$out"
mv "$work/xen.elf" "$work/vmlinuz" "$work/busybox" "$work/versions.txt" "$work/dom0-base.cpio" "$out"/
rm -rf "$work"
touch "$out/done"
lab_log "dom0 base image built in $(lab_since "$start") s: $out ($(du -sh "$out/dom0-base.cpio" | cut -f1) cpio)"
echo "$out"
