#!/usr/bin/env bash
# Smoke test of the PVH unikernel WITHOUT Xen: boots kernel/ in plain QEMU through QEMU's PVH
# loader (which honours the XEN_ELFNOTE_PHYS32_ENTRY note) and checks port-0xE9 output.
#
#   scripts/kernel-smoke.sh          # builds the kernel first (scripts/build-kernel.sh)
#   KERNEL_ELF=path scripts/kernel-smoke.sh   # test an existing ELF
#
# Boots: a normal one (banner, start_info parsed, heap ok, "not running on Xen", clean
# power-off); two deliberate failures (--selftest=page-fault, --selftest=panic) that must print
# a PANIC line with location; and the warm-restart self-tests (restart in place, panic-storm
# stop, injected crashes not counted as a storm). Exit status 0 when every check passes.
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v qemu-system-x86_64 >/dev/null; then
    echo "kernel-smoke: installing qemu-system-x86" >&2
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
    fi
fi

elf="${KERNEL_ELF:-}"
if [[ -z "$elf" ]]; then
    elf="$("$repo_dir/scripts/build-kernel.sh" | tail -n 1)"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0

# boot NAME CMDLINE EXPECTED_QEMU_STATUS -> writes $work/NAME.log
boot() {
    local name="$1" cmdline="$2" expected="$3" status=0
    timeout 120 qemu-system-x86_64 -accel tcg -m 64 -display none -no-reboot -nodefaults \
        -serial none -monitor none \
        -kernel "$elf" -append "$cmdline" \
        -debugcon "file:$work/$name.log" \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 </dev/null >"$work/$name.qemu" 2>&1 || status=$?
    # isa-debug-exit: status = (value << 1) | 1; 1 = clean power-off (0), 7 = panic (3).
    if [[ "$status" != "$expected" ]]; then
        echo "FAIL [$name]: QEMU exit status $status, expected $expected" >&2
        failures=$((failures + 1))
    fi
    echo "---- [$name] 0xE9 output ----"
    cat "$work/$name.log"
}

expect() {
    local name="$1" pattern="$2"
    if grep -Eq -- "$pattern" "$work/$name.log"; then
        echo "ok   [$name] $pattern"
    else
        echo "FAIL [$name] missing: $pattern" >&2
        failures=$((failures + 1))
    fi
}

boot normal "--loglevel=info --event 7" 1
expect normal 'xenstore-stubdom [0-9.]+: PVH boot, start_info at 0x'
expect normal 'start_info parsed: magic ok, at 0x[0-9a-f]+, version 1, .*cmdline "--loglevel=info --event 7"'
expect normal 'memory map: [1-9][0-9]* entries, [1-9][0-9]* KiB RAM'
expect normal 'no Xen CPUID signature found'
expect normal 'heap ok: 0x[0-9a-f]+-0x[0-9a-f]+ \([1-9][0-9]* KiB'
expect normal 'console ring self-test ok'
expect normal 'not running on Xen: nothing to serve, powering off'
if grep -q PANIC "$work/normal.log"; then
    echo "FAIL [normal] unexpected PANIC" >&2
    failures=$((failures + 1))
fi

boot page-fault "--selftest=page-fault" 7
expect page-fault 'PANIC: CPU exception 14 \(page fault\) .*cr2=0x200000000 .* at src/arch.rs:[0-9]+:[0-9]+'

boot panic "--selftest=panic" 7
expect panic 'PANIC: selftest: deliberate panic at src/main.rs:[0-9]+:[0-9]+'

# Warm restart in place (kernel/src/warm.rs): statics fresh after the jump, a storm of real
# panics stops, injected crashes (inject-crash) back to back do not count as a storm.
boot warm-restart "--selftest=warm-restart" 1
expect warm-restart 'warm restart 1: recovering from the log'
expect warm-restart 'selftest: warm restart 1 ok: .bss zeroed, .data restored, heap fresh'

boot warm-panic-storm "--selftest=warm-panic-storm" 7
expect warm-panic-storm 'PANIC: 6 panics within 10 s while warm-restarting: giving up instead of looping'

boot warm-injected-crashes "--selftest=warm-injected-crashes" 1
expect warm-injected-crashes 'warm restart 10: recovering from the log'
expect warm-injected-crashes 'selftest: 10 injected crashes back to back restarted in place \(no panic-storm stop\)'

if [[ "$failures" -ne 0 ]]; then
    echo "kernel-smoke: $failures check(s) FAILED" >&2
    exit 1
fi
echo "kernel-smoke: all checks passed ($elf)"
