#!/usr/bin/env bash
# Smoke test of the PVH unikernel WITHOUT Xen: boots kernel/ in plain QEMU through QEMU's PVH
# loader (which honours the XEN_ELFNOTE_PHYS32_ENTRY note) and checks port-0xE9 output.
#
#   scripts/kernel-smoke.sh          # builds the kernel first (scripts/build-kernel.sh)
#   KERNEL_ELF=path scripts/kernel-smoke.sh   # test an existing ELF
#
# Boots: a normal one (banner, start_info parsed, heap ok, guard page, TSS, stack high-water,
# "not running on Xen", clean power-off); deliberate failures that must print a PANIC line
# with location (--selftest=page-fault, --selftest=panic) or the double-fault report of a
# stack overflow (--selftest=stack-overflow; a triple fault would end QEMU silently with status
# 0); and the warm-restart self-tests (restart in place, panic-storm stop, injected crashes
# not counted as a storm, and warm-stack-overflow: two overflows, each reported and followed
# by a warm restart from the double-fault stack, and damaged boot tables found by the warm
# entry check). Exit status 0 when every check passes.
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

# expect_count NAME COUNT PATTERN: exactly COUNT lines match
expect_count() {
    local name="$1" count="$2" pattern="$3" found
    found="$(grep -Ec -- "$pattern" "$work/$name.log" || true)"
    if [[ "$found" == "$count" ]]; then
        echo "ok   [$name] $count x $pattern"
    else
        echo "FAIL [$name] $found lines (expected $count): $pattern" >&2
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
expect normal 'stack 0x[0-9a-f]+-0x[0-9a-f]+ \(guard page 0x[0-9a-f]+-0x[0-9a-f]+ not present\)'
expect normal 'TSS loaded \(selector 0x20\): #DF, NMI and #MC run on interrupt stacks'
expect normal 'boot stack [1-9][0-9]* KiB max of 128 KiB$'
expect normal 'not running on Xen: nothing to serve, powering off'
if grep -q PANIC "$work/normal.log"; then
    echo "FAIL [normal] unexpected PANIC" >&2
    failures=$((failures + 1))
fi

boot page-fault "--selftest=page-fault" 7
expect page-fault 'PANIC: CPU exception 14 \(page fault\) .*cr2=0x200000000 .* at src/arch.rs:[0-9]+:[0-9]+'

boot panic "--selftest=panic" 7
expect panic 'PANIC: selftest: deliberate panic at src/main.rs:[0-9]+:[0-9]+'
expect panic 'PANIC: selftest: deliberate panic at .*; boot stack [1-9][0-9]* KiB max of 128 KiB$'

# The stack overflow must be reported by the double-fault handler on its own stack, not end
# in a triple fault (QEMU would exit 0 with no PANIC line).
stack_overflow_report='PANIC: double fault: kernel stack overflow\? rsp=0x[0-9a-f]+ cr2=0x[0-9a-f]+ \(guard page 0x[0-9a-f]+-0x[0-9a-f]+ below the boot stack'
boot stack-overflow "--selftest=stack-overflow" 7
expect stack-overflow 'selftest: overflowing the boot stack into its guard page'
expect stack-overflow "$stack_overflow_report"
expect stack-overflow 'PANIC: double fault: .*; boot stack 128 KiB max of 128 KiB \(exhausted\)$'
expect_count stack-overflow 0 'PANIC \(nested\)'

# Warm restart in place (kernel/src/warm.rs): statics fresh after the jump, a storm of real
# panics stops, injected crashes (inject-crash) back to back do not count as a storm.
boot warm-restart "--selftest=warm-restart" 1
expect warm-restart 'warm restart 1: recovering from the log'
expect warm-restart 'warm entry check: boot page tables and IDT as built'
expect warm-restart 'selftest: warm restart 1 ok: .bss zeroed, .data restored, heap fresh'

boot warm-panic-storm "--selftest=warm-panic-storm" 7
expect warm-panic-storm 'PANIC: 6 panics within 10 s while warm-restarting: giving up instead of looping'

boot warm-injected-crashes "--selftest=warm-injected-crashes" 1
expect warm-injected-crashes 'warm restart 10: recovering from the log'
expect warm-injected-crashes 'selftest: 10 injected crashes back to back restarted in place \(no panic-storm stop\)'

# Two stack overflows, each reported on the double-fault stack and followed by a warm restart
# from it; between them a page-directory entry and an IDT gate are damaged, which the second
# warm entry must report (and repair).
boot warm-stack-overflow "--selftest=warm-stack-overflow" 1
expect_count warm-stack-overflow 2 "$stack_overflow_report"
expect warm-stack-overflow 'warm restart 2: recovering from the log'
expect warm-stack-overflow 'WARM ENTRY CHECK FAILED: 1 boot page-table entries differed .*; 1 IDT words differed'
expect warm-stack-overflow '  PD\[2559\] \(maps 0x13fe00000\) = 0x000000013fe00081, expected 0x000000013fe00083'
expect warm-stack-overflow '  IDT\[0x80\] low half = 0xbad0bad0bad0bad0'
expect warm-stack-overflow 'selftest: warm stack overflow ok: 2 overflows reported'
expect_count warm-stack-overflow 0 'PANIC \(nested\)'

if [[ "$failures" -ne 0 ]]; then
    echo "kernel-smoke: $failures check(s) FAILED" >&2
    exit 1
fi
echo "kernel-smoke: all checks passed ($elf)"
