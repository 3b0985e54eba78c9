#!/usr/bin/env bash
# scripts/lab/boot.sh — owns: one boot of Xen + dom0 under QEMU (TCG) for the lab.
#
# Usage: boot.sh <base-dir> <overlay.cpio> <xenstore> <scenario,...>
#   xenstore: cxenstored | oxenstored | stubdom      (what dom0's /init starts)
# Output in $LAB_OUT/<xenstore>/:
#   serial.log   Xen's serial console (com1): Xen's log, dom0's console (hvc0), `(d<n>)` lines
#   control.log  the control channel (com2 = dom0's ttyS1): LAB-* lines only
#   qemu.log     QEMU's own stdout/stderr
# Stops QEMU after $LAB_TIMEOUT seconds (default 1200) and says so. Exits 0 when QEMU exited
# by itself after LAB-DONE, 1 otherwise; the verdicts are in control.log (see report.sh).
# LAB_INTERACTIVE=1 (scripts/lab/shell): Xen's console on the terminal instead of serial.log.
# Environment: LAB_SMP (QEMU CPUs, default 1: see docs/lab.md), LAB_ACCEL (QEMU -accel, default
# tcg; tcg,thread=single runs several CPUs on one host thread), LAB_MEM (MiB, default 2048),
# LAB_DOM0_MEM (default 700M), LAB_GUESTS, LAB_OPS,
# LAB_STUBDOM_MB, LAB_STUBDOM_WAIT, LAB_TIMEOUT, LAB_XEN_ARGS (extra Xen command line),
# LAB_SCENARIO_TIMEOUT (dom0's watchdog per scenario, default 480 s).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base="$1" overlay="$2" xenstore="$3" scenarios="$4"
out="$LAB_OUT/$xenstore"
rm -rf "$out"
mkdir -p "$out"
timeout_seconds="${LAB_TIMEOUT:-1200}"

# dom0's initramfs is the cached base followed by this run's overlay (later files win).
cat "$base/dom0-base.cpio" "$overlay" >"$out/dom0.cpio"

dom0_mem="${LAB_DOM0_MEM:-700M}"
# spec-ctrl=eager-fpu: Xen's default on this emulated AMD CPU is lazy FPU switching (CR0.TS and
# #NM), and under QEMU's TCG a domain then runs with another domain's vector registers: dom0's
# programs died in libc's AVX2 string code and `xl create` found the guest kernel "corrupt" as
# soon as a guest was busy (docs/lab.md, "Known limits"). Eager switching saves and restores the
# FPU state at every context switch and makes that go away.
xen_args="console=com1 com1=115200,8n1 conring_size=4M loglvl=all guest_loglvl=all dom0_mem=$dom0_mem,,max:$dom0_mem noreboot smap=0 spec-ctrl=eager-fpu ${LAB_XEN_ARGS:-}"
# A comma would end the multiboot module string of -initrd: the scenario list uses "+".
dom0_args="console=hvc0 earlyprintk=xen lab.xenstore=$xenstore lab.scenarios=${scenarios//,/+}"
dom0_args+=" lab.guests=${LAB_GUESTS:-3} lab.ops=${LAB_OPS:-500} lab.stubdom_mb=${LAB_STUBDOM_MB:-8} lab.stubdom_wait=${LAB_STUBDOM_WAIT:-60}"
dom0_args+=" lab.scenario_timeout=${LAB_SCENARIO_TIMEOUT:-480}"
# Extra stub domain kernel words (init-xenstore-domain --param), spaces written as "+".
if [ -n "${LAB_STUBDOM_ARGS:-}" ]; then dom0_args+=" lab.stubdom_args=${LAB_STUBDOM_ARGS// /+}"; fi

# Timings (scenario d) are only comparable when this QEMU has the machine's cores to itself.
others="$(pgrep -x qemu-system-x86 | tr '\n' ' ' || true)"
if [ -n "$others" ]; then
    lab_log "WARNING: other QEMU processes are running (pids $others): timings will be inflated"
    echo "LAB-INFO contention other QEMU pids: $others" >"$out/contention"
fi
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
lab_log "boot [$xenstore] scenarios=$scenarios (timeout ${timeout_seconds} s, logs in $out)"
start="$(lab_now)"
# Live progress: show LAB- lines as they arrive.
touch "$out/control.log"
tail_pid=""
if [ "${LAB_INTERACTIVE:-0}" != 1 ]; then
    tail -n +1 -F "$out/control.log" 2>/dev/null | sed -u "s/^/  [$xenstore] /" >&2 &
    tail_pid=$!
fi
set +e
# -cpu max,-rdtscp and smap=0: see docs/lab.md ("Known limits"); -no-reboot: a Xen crash
# ends QEMU instead of looping.
# shellcheck disable=SC2054 # the commas belong to QEMU options
qemu=(qemu-system-x86_64 -accel "${LAB_ACCEL:-tcg}" -cpu max,-rdtscp -smp "${LAB_SMP:-1}" -m "${LAB_MEM:-2048}"
    -display none -no-reboot -monitor none -nic none
    -kernel "$base/xen.elf" -append "$xen_args"
    -initrd "$base/vmlinuz $dom0_args,$out/dom0.cpio")
if [ "${LAB_INTERACTIVE:-0}" = 1 ]; then
    # scripts/lab/shell: Xen's serial console on this terminal; Ctrl-C goes to the guest.
    timeout -k 10 --foreground "$timeout_seconds" "${qemu[@]}" \
        -chardev stdio,id=console,signal=off -serial chardev:console -serial "file:$out/control.log"
    rc=$?
else
    timeout -k 10 "$timeout_seconds" "${qemu[@]}" \
        -serial "file:$out/serial.log" -serial "file:$out/control.log" >"$out/qemu.log" 2>&1 &
    qemu_pid=$!
    # With `noreboot` Xen halts but QEMU keeps running after a dom0 crash or a Xen panic: stop
    # it at once instead of waiting for the timeout (the evidence is already in serial.log).
    while kill -0 "$qemu_pid" 2>/dev/null; do
        if grep -qE 'Dom0 crashed|Manual reset required' "$out/serial.log" 2>/dev/null; then
            dom0_crashed=1
            sleep 1
            kill "$qemu_pid" 2>/dev/null
            break
        fi
        sleep 1
    done
    wait "$qemu_pid"
    rc=$?
fi
set -e
sleep 0.5
if [ -n "$tail_pid" ]; then
    kill "$tail_pid" 2>/dev/null || true
    wait "$tail_pid" 2>/dev/null || true
fi
rm -f "$out/dom0.cpio"
elapsed="$(lab_since "$start")"
echo "boot-seconds $elapsed" >"$out/timing"
echo "host-loadavg before: $load_before after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/timing"
if [ "${dom0_crashed:-0}" = 1 ]; then
    lab_log "[$xenstore] dom0 crashed or Xen panicked after $elapsed s; QEMU stopped; see $out/serial.log"
    echo "LAB-RESULT boot@$xenstore FAIL rc=$rc time=$elapsed dom0 crashed or Xen panicked" >>"$out/control.log"
    exit 1
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    lab_log "TIMEOUT: [$xenstore] QEMU killed after ${timeout_seconds} s (LAB_TIMEOUT); see $out/serial.log"
    echo "LAB-RESULT boot@$xenstore FAIL rc=$rc time=$elapsed QEMU killed after ${timeout_seconds} s timeout" >>"$out/control.log"
    exit 1
fi
if ! grep -q '^LAB-DONE' "$out/control.log"; then
    lab_log "[$xenstore] QEMU exited (rc=$rc) after $elapsed s without LAB-DONE; see $out/serial.log"
    echo "LAB-RESULT boot@$xenstore FAIL rc=$rc time=$elapsed QEMU exited before dom0 finished" >>"$out/control.log"
    exit 1
fi
lab_log "[$xenstore] boot finished in $elapsed s"
