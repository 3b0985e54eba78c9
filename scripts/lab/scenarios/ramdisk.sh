#!/bin/bash
# scripts/lab/scenarios/ramdisk.sh — owns: the lab's RAM disk scenario (runs in dom0; stub domain).
#
# The stub domain's blkfront against dom0's blkback over the RAM disk of
# scripts/xenstore-ramdisk (attached by /init before the scenarios; run again here, which must
# be idempotent): backend and frontend reach state 4 (Connected), and the stub domain's log
# shows "blkfront: connected", "blkfront: self-test passed" (write / flush / read back /
# compare at the end of the disk) and "blkfront: resume self-test passed" (the warm-restart
# resume path with a request left in flight). The stub domain's log is read from Xen's console ring
# (`xl dmesg`: its port 0xE9 lines, "(d<n>) ...", with guest_loglvl=all) and from
# xenconsoled's log of its PV console.
# Exit 0 = PASS, 77 = SKIP (not a stub domain boot), anything else = FAIL.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../dom0/lib.sh
. /lab/lib.sh

step() { lab_emit "LAB-STEP ramdisk $*"; echo "== $*"; }
fail() { echo "FAIL: $*"; exit 1; }

if [ "$LAB_XENSTORE" != stubdom ]; then
    echo "SKIP: the RAM disk is for the stub domain only (this boot: $LAB_XENSTORE)"
    exit 77
fi
domid="$(xenstore-read /tool/xenstored/domid)" || fail "no /tool/xenstored/domid"
frontend="/local/domain/$domid/device/vbd/51712"
backend="/local/domain/0/backend/vbd/$domid/51712"

step "attach log of /init"
cat /var/log/xen/xenstore-ramdisk.log 2>/dev/null || echo "(no attach log: /init did not attach)"
grep -a -e 'attached with' -e 'direct attach' -e 'refused' /var/log/xen/xenstore-ramdisk.log 2>/dev/null |
    while IFS= read -r line; do lab_emit "LAB-INFO ramdisk-method $line"; done

step "xenstore-ramdisk (again: idempotent), wait for state 4"
attach_start="$(lab_now)"
/lab/bin/xenstore-ramdisk --wait 120 || fail "xenstore-ramdisk failed (rc=$?)"
lab_emit "LAB-INFO ramdisk-connected-wait-seconds $(lab_since "$attach_start")"

step "backend and frontend nodes"
xenstore-ls -f "$backend" || true
xenstore-ls -f "$frontend" || true
back_state="$(xenstore-read "$backend/state")"
front_state="$(xenstore-read "$frontend/state")"
echo "backend state $back_state, frontend state $front_state"
[ "$back_state" = 4 ] || fail "backend state is $back_state, not 4"
[ "$front_state" = 4 ] || fail "frontend state is $front_state, not 4"
lab_emit "LAB-INFO ramdisk-states backend=$back_state frontend=$front_state"

stub_log() {
    {
        xl dmesg 2>/dev/null | grep -a "(d$domid)" || true
        cat /var/log/xen/console/guest-Xenstore.log 2>/dev/null || true
    } | grep -a 'blkfront' || true
}

step "stub domain log: blkfront connected and self-test"
for _ in $(seq 1 240); do
    if stub_log | grep -q -e 'resume self-test' -e 'self-test FAILED'; then break; fi
    sleep 0.5
done
stub_log | sort -u | tee /tmp/ramdisk-blkfront.log
# (A pipe, not process substitution: dom0 has no /dev/fd.)
stub_log | grep -a -e 'connected' -e 'self-test' -e 'resumed' | sort -u | head -n 10 |
    while IFS= read -r line; do lab_emit "LAB-INFO ramdisk-log $line"; done
grep -q 'blkfront: connected' /tmp/ramdisk-blkfront.log || fail "no 'blkfront: connected' in the stub domain's log"
grep -q 'self-test FAILED' /tmp/ramdisk-blkfront.log && fail "the stub domain's blkfront self-test failed"
grep -q 'blkfront: self-test passed' /tmp/ramdisk-blkfront.log || fail "no 'blkfront: self-test passed' in the stub domain's log"
grep -q 'resume self-test passed' /tmp/ramdisk-blkfront.log || fail "no 'blkfront: resume self-test passed' in the stub domain's log"
echo "PASS: handshake complete (states 4/4), self-test and resume self-test passed"
