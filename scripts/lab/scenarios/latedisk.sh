#!/bin/bash
# scripts/lab/scenarios/latedisk.sh — owns: the lab's late-disk scenario (l): a store larger
# than one log commit moves onto a RAM disk attached late, and survives a crash (runs in dom0).
#
# Needs the stub domain started with `--persistence crash-resilient` and its RAM disk NOT yet
# attached (dom0's /init leaves it out when this scenario is planned). Then:
# - the stub domain reports itself volatile (`xenstore-control stats`);
# - dom0 writes LAB_LATEDISK_NODES (700) nodes of 3000 bytes under /lab-late with the
#   unmodified `xenstore-write` (about 2.1 MB of values: more than persist's 1 MiB commit);
# - `xenstore-ramdisk` attaches the disk; the stub domain must say `persistence: switched onto
#   the disk` with more than one commit, and `stats` must say crash-resilient;
# - `xenstore-control inject-crash 1 random`, then a write that crashes it; the write must
#   complete after the warm restart, and the whole subtree must read back identical
#   (`xenstore-ls -f /lab-late` digest before and after).
# Exit 0 = PASS, 77 = SKIP (no persistence, or the disk was attached already), else FAIL.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../dom0/lib.sh
. /lab/lib.sh

nodes="${LAB_LATEDISK_NODES:-700}"
step() { lab_emit "LAB-STEP latedisk $*"; echo "== $*"; }
fail() {
    echo "--- stub domain console (tail)"
    tail -n 30 "$console_log" 2>/dev/null || true
    echo "FAIL: $*"
    exit 1
}

control="$(lab_xenstore_control)"
console_log="$(lab_stubdom_console_log)"

step "persistence mode before the disk"
stats="$(timeout 20 "$control" stats 2>&1)" || fail "xenstore-control stats failed: $stats"
echo "$stats"
if ! grep -q 'volatile' <<<"$stats"; then
    echo "SKIP: the stub domain is not waiting for its disk (start it with"
    echo "      LAB_STUBDOM_ARGS=\"--persistence crash-resilient\" and plan scenario l)"
    exit 77
fi

step "$nodes nodes of 3000 bytes under /lab-late"
started="$(lab_now)"
batch=()
for index in $(seq 1 "$nodes"); do
    # Distinct values: the log stores values by content, equal ones only once.
    batch+=("/lab-late/n$index" "$(printf '%03000d' "$index")")
    if [ "${#batch[@]}" -ge 80 ] || [ "$index" -eq "$nodes" ]; then
        timeout 120 xenstore-write "${batch[@]}" || fail "xenstore-write of a batch ending at n$index failed"
        batch=()
    fi
done
lab_emit "LAB-INFO latedisk fill-seconds $(lab_since "$started")"
before="$(timeout 120 xenstore-ls -f /lab-late | md5sum | cut -d' ' -f1)"
count="$(timeout 120 xenstore-list /lab-late | wc -l)"
[ "$count" -eq "$nodes" ] || fail "/lab-late has $count children instead of $nodes"
echo "digest before the disk: $before ($count nodes)"

step "attach the RAM disk"
started="$(lab_now)"
timeout 180 /lab/bin/xenstore-ramdisk --wait 60 || fail "xenstore-ramdisk failed"
lab_wait 120 grep -q 'persistence: switched onto the disk' "$console_log" ||
    fail "no 'persistence: switched onto the disk' line within 120 s"
switched="$(grep -a 'persistence: switched onto the disk' "$console_log" | tail -n 1)"
echo "$switched"
lab_emit "LAB-INFO latedisk switch-seconds $(lab_since "$started")"
lab_emit "LAB-INFO latedisk ${switched#*] }"
commits="$(sed -n 's/.*commits \([0-9]*\)\.\.=\([0-9]*\).*/\1 \2/p' <<<"$switched")"
[ -n "$commits" ] || fail "the switch line names no commit range"
read -r first last <<<"$commits"
[ "$last" -gt "$first" ] || fail "the switch took one commit ($first..=$last): the store was meant to need several"
stats="$(timeout 20 "$control" stats 2>&1)" || fail "xenstore-control stats failed: $stats"
if ! grep -q 'crash-resilient' <<<"$stats" || grep -q 'volatile' <<<"$stats"; then
    fail "stats after the switch do not say crash-resilient: $stats"
fi

step "crash and recover"
restarts_before="$(grep -ac 'serving again after' "$console_log" || true)"
timeout 20 "$control" inject-crash 1 random || fail "inject-crash refused"
timeout 120 xenstore-write /lab-late/after-crash yes || fail "the write that crashed the stub domain did not complete"
lab_wait 60 sh -c "[ \"\$(grep -ac 'serving again after' '$console_log')\" -gt $restarts_before ]" ||
    fail "no 'warm restart ... serving again' line after the crash"
grep -a 'serving again after' "$console_log" | tail -n 1
[ "$(timeout 20 xenstore-read /lab-late/after-crash)" = yes ] || fail "/lab-late/after-crash does not read back"
timeout 20 xenstore-rm /lab-late/after-crash || fail "xenstore-rm failed"
after="$(timeout 120 xenstore-ls -f /lab-late | md5sum | cut -d' ' -f1)"
echo "digest after the crash: $after"
[ "$after" = "$before" ] || fail "/lab-late differs after the crash ($before before, $after after)"
timeout 120 xenstore-rm /lab-late || fail "removing /lab-late failed"
echo "PASS: $nodes nodes switched in commits $first..=$last and recovered identical after a crash"
