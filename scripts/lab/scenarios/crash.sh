#!/bin/bash
# scripts/lab/scenarios/crash.sh — owns: the lab's crash scenario (e) and its checker (runs in
# dom0; project issue 10 item 5).
#
# While guests and dom0 write, commit transactions and watch, the xenstore is crashed
# LAB_CRASH_INJECT times (default 30) with the unmodified `xenstore-control inject-crash <n>
# <point>` (n random in 1..LAB_CRASH_COUNT_MAX, point random of LAB_CRASH_POINTS): the stub
# domain panics while handling the n-th later request and warm-restarts from its log. Then the
# checker asserts, from records kept outside the store (the guests' consoles, dom0's files):
#   - no acknowledged write lost: every acknowledged key holds its acknowledged value or a
#     later one; the transaction pair tx/a, tx/b is equal (atomic) and not older than the last
#     acknowledged commit;
#   - exactly one reply per request, watch events at least once per acknowledged write, no
#     unexpected error (the clients' own checks: `CC <label> violation ...` lines);
#   - transactions open at a crash got EAGAIN and were retried (counted, not a violation);
#   - every client finished with a final write/read round trip, and dom0's tools still work.
# Clients: `xenstore-loadgen --crash-client` (loadgen/src/crash.rs) in each guest (its initrd;
# started by lab.crash=<name> on the guest's command line, output on its console) and in dom0,
# plus a dom0 CLI loop (xenstore-write / xenstore-read, one process per request).
# Restart times: dom0-observed (arming -> the first successful request after the restart was
# seen) and the stub domain's own `warm restart N: serving again after X ms` lines, read from
# Xen's console ring (xc_readconsolering: its port 0xE9 debug lines appear there as `(d<n>) ...`).
# Prints `crash: <K> injections, <V> violations`; exit 0 only when V = 0 and K >= requested.
# LAB_CRASH_INJECT=0 runs workload and checker without crashes (any server). When the server
# refuses inject-crash (XS_CONTROL error) that is reported as such and the scenario FAILs.
# Settings (/lab/crash.env, from the host's environment by build-overlay.sh):
#   LAB_CRASH_INJECT (30), LAB_CRASH_GUESTS (2), LAB_CRASH_COUNT_MAX (60),
#   LAB_CRASH_POINTS ("before-append after-append after-sync after-reply random"),
#   LAB_CRASH_SEED (the boot's uptime), LAB_CRASH_XL_ARGS (extra `xl create` options of the
#   guests, e.g. `hap=0`), LAB_CRASH_PACE_MS (20: guests' pause between rounds),
#   LAB_CRASH_ACK_EVERY (1: a console line per acknowledged change; N: a snapshot line every N
#   rounds).
set -uo pipefail
# shellcheck source=SCRIPTDIR/../dom0/lib.sh
. /lab/lib.sh
# shellcheck disable=SC1091 # written by build-overlay.sh
[ -f /lab/crash.env ] && . /lab/crash.env
server="$LAB_XENSTORE"
injections="${LAB_CRASH_INJECT:-30}"
guests="${LAB_CRASH_GUESTS:-2}"
count_max="${LAB_CRASH_COUNT_MAX:-60}"
read -r -a points <<<"${LAB_CRASH_POINTS:-before-append after-append after-sync after-reply random}"
seed="${LAB_CRASH_SEED:-$(awk '{ printf "%d", $1 * 100 }' /proc/uptime)}"
RANDOM="$seed"
# Process substitution (`< <(...)`, used by the checker) needs /dev/fd, which the lab's dom0
# (devtmpfs, no udev) lacks.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
loadgen=/lab/bin/loadgen
work=/tmp/crash
rm -rf "$work"
mkdir -p "$work"
violations=0
injected=0
violation() {
    violations=$((violations + 1))
    echo "VIOLATION: $*"
    lab_emit "LAB-INFO crash violation $*"
}
summary() {
    echo "crash: $injected injections, $violations violations"
    lab_emit "LAB-INFO crash-summary $server crash: $injected injections, $violations violations (requested $injections)"
}
give_up() {
    echo "FAIL: $*"
    summary
    exit 1
}
milliseconds() { awk -v start="$1" -v end="$2" 'BEGIN { printf "%.0f", (end - start) * 1000 }'; }

[ -x "$loadgen" ] || give_up "no /lab/bin/loadgen: the crash client is the project's load generator (LAB_LOADGEN)"
xs_domid="$(xenstore-read /tool/xenstored/domid 2>/dev/null || echo 0)"
scenario_marker="lab-crash-scenario-start-$$"
echo "$scenario_marker" >/dev/kmsg
lab_emit "LAB-INFO crash xenstore $server (domid $xs_domid); $injections injections requested, $guests guests; LAB_CRASH_SEED=$seed"

# Xen's console ring (the stub domain's (d<n>) lines) is drained into a file all along, five
# times a second, with libxenctrl's xc_readconsolering(clear=1) from one python process (`xl
# dmesg` would do the same but waits for the xenstore, which is down while the stub domain
# restarts). boot.sh gives Xen a 4 MiB ring: with the default one, a restart's lines were once
# overwritten before they were read.
xen_console="$work/xen-console.log"
: >"$xen_console"
python3 - "$xen_console" <<'PYTHON' &
import ctypes, sys, time
xc = ctypes.CDLL("libxenctrl.so.4.17")
xc.xc_interface_open.restype = ctypes.c_void_p
handle = ctypes.c_void_p(xc.xc_interface_open(None, None, 0))
size = 1 << 20
buffer = ctypes.create_string_buffer(size)
with open(sys.argv[1], "ab", buffering=0) as log:
    while True:
        count = ctypes.c_uint(size)
        if xc.xc_readconsolering(handle, buffer, ctypes.byref(count), 1, 0, None) == 0:
            log.write(buffer.raw[: count.value])
        time.sleep(0.2)
PYTHON
dmesg_pid=$!
restarts_seen() { grep -a "(d$xs_domid)" "$xen_console" | grep -c "warm restart [0-9]*: serving again"; }
cleanup() {
    kill "$dmesg_pid" 2>/dev/null
    [ -n "${cli_pid:-}" ] && kill "$cli_pid" 2>/dev/null
    for index in $(seq 1 "$guests"); do timeout 20 xl destroy "crash-$index" >/dev/null 2>&1; done
}
trap cleanup EXIT

# Diagnostic (LAB_CRASH_BUSY=1): is the dom0 corruption of docs/lab.md tied to the xenstore?
# One guest writes memory in a loop (no xenstore client); dom0 runs short-lived dynamically
# linked programs for 90 s; the faults are counted. Exit 0 when none.
if [ "${LAB_CRASH_BUSY:-0}" = 1 ]; then
    timeout 180 xl create /lab/xl/lab-guest-pvh.cfg 'name="busy-1"' 'cmdline="console=hvc0 quiet lab.busy=1"' ||
        give_up "xl create busy-1 failed"
    lab_wait 180 grep -q LAB-GUEST-BUSY "$(lab_guest_console_log busy-1)" || give_up "busy-1 did not start"
    busy_start="$(lab_now)" runs=0 failures=0
    while awk -v start="$busy_start" -v now="$(lab_now)" 'BEGIN { exit !(now - start < 90) }'; do
        runs=$((runs + 1))
        if ! cut -d' ' -f1 /proc/uptime >/dev/null 2>&1 || ! awk 'BEGIN { exit 0 }'; then failures=$((failures + 1)); fi
    done
    faults="$(dmesg | sed -n "/$scenario_marker/,\$p" | grep -c -E 'segfault at|general protection fault')"
    lab_emit "LAB-INFO crash busy-diagnostic: guest writing memory (no xenstore client), 90 s: $runs dom0 program pairs, $failures failed, $faults dom0 faults"
    xl destroy busy-1
    [ "$faults" -eq 0 ] && [ "$failures" -eq 0 ]
    exit
fi

# 1. Guests: each runs the crash client from its initrd; its console is the record.
lab_emit "LAB-STEP crash starting $guests guests with the crash client"
for index in $(seq 1 "$guests"); do
    name="crash-$index"
    created="$(lab_now)"
    read -r -a xl_extra <<<"${LAB_CRASH_XL_ARGS:-}"
    create=(xl -v create /lab/xl/lab-guest-pvh.cfg "name=\"$name\"" "${xl_extra[@]}"
        "cmdline=\"console=hvc0 quiet lab.crash=$name lab.crash_args=--wait-for+data/crash-go+--pace-ms+${LAB_CRASH_PACE_MS:-20}+--ack-every+${LAB_CRASH_ACK_EVERY:-1}+--reply-timeout+60\"")
    if ! timeout 180 "${create[@]}" >"$work/create-$name.log" 2>&1; then
        # Seen in this lab: the second create fails in libxenguest's kernel decompression;
        # the evidence (verbose xl, dom0's memory) goes to the log, then one retry.
        grep -E 'XZ|LZMA|decompress|alloc|memory|error' "$work/create-$name.log" | tail -n 12 |
            while IFS= read -r line; do lab_emit "LAB-LOG crash xl create $name: $line"; done
        lab_emit "LAB-INFO crash retry xl create $name failed; dom0 memory: $(free -m | awk '/^Mem/ { print "total " $2 " MB, free " $4 " MB, available " $7 " MB" }')"
        xl destroy "$name" >/dev/null 2>&1
        timeout 180 "${create[@]}" >"$work/create-$name.retry.log" 2>&1 ||
            { tail -n 8 "$work/create-$name.retry.log"; give_up "xl create $name failed twice"; }
    fi
    lab_emit "LAB-STEP crash $name created (domid $(xl domid "$name" 2>/dev/null)) in $(lab_since "$created") s"
done
# Every guest is created before any of them loads the xenstore: their clients wait for
# data/crash-go, written here once all of them are waiting.
wait_console() { # wait_console INDEX TEXT SECONDS
    local log
    log="$(lab_guest_console_log "crash-$1")"
    lab_wait "$3" grep -q "CC crash-$1 $2" "$log" && return 0
    tr -d '\r' <"$log" 2>/dev/null | tail -n 12 | while IFS= read -r line; do lab_emit "LAB-LOG crash crash-$1 console: $line"; done
    give_up "crash-$1: no 'CC crash-$1 $2' on its console within $3 s"
}
for index in $(seq 1 "$guests"); do wait_console "$index" waiting 180; done
for index in $(seq 1 "$guests"); do
    timeout 60 xenstore-write "/local/domain/$(xl domid "crash-$index")/data/crash-go" 1 ||
        give_up "cannot write crash-$index's data/crash-go"
done
for index in $(seq 1 "$guests"); do wait_console "$index" start 60; done
lab_emit "LAB-INFO crash guests up: $(for index in $(seq 1 "$guests"); do printf 'crash-%s=domid%s ' "$index" "$(xl domid "crash-$index")"; done)"

# 2. dom0: the crash client on /dev/xen/xenbus, and a CLI loop recording its own acks.
dom0_prefix=/local/domain/0/data/crash
"$loadgen" --crash-client dom0 --device /dev/xen/xenbus --prefix "$dom0_prefix" --pace-ms 10 \
    --reply-timeout 60 >"$work/dom0.log" 2>"$work/dom0.err" &
dom0_pid=$!
# is_dom0_fault RC OUTPUT: the dom0 program itself broke (the lab's dom0 memory corruption, see
# docs/lab.md): killed by a signal other than timeout's KILL, or ld.so's self-check failed.
is_dom0_fault() {
    if [ "$1" -gt 128 ] && [ "$1" -ne 137 ]; then return 0; fi
    [ "$1" -eq 127 ] && grep -q "Inconsistency detected by ld.so" <<<"$2"
}
dom0_tool_faults=0
cli_prefix=/local/domain/0/data/crash-cli
xenstore-rm "$cli_prefix" 2>/dev/null
(
    echo "CC dom0-cli start prefix=$cli_prefix"
    seq_number=0
    while [ ! -e "$work/stop" ]; do
        seq_number=$((seq_number + 1))
        key="k$((seq_number % 4))"
        if timeout 60 xenstore-write "$cli_prefix/$key" "$seq_number" 2>"$work/dom0-cli.err"; then
            echo "CC dom0-cli ack $key $seq_number"
        else
            rc=$?
            # Killed by a signal (SIGSEGV: the dom0 corruption of docs/lab.md): not the server's
            # doing, and unacknowledged, so nothing to check; counted and shown.
            if is_dom0_fault "$rc" "$(cat "$work/dom0-cli.err")"; then
                echo "CC dom0-cli dom0-fault xenstore-write $key $seq_number: rc=$rc $(tail -n 1 "$work/dom0-cli.err")"
            else
                echo "CC dom0-cli violation xenstore-write $key $seq_number failed (rc=$rc: $(tail -n 1 "$work/dom0-cli.err"))"
            fi
        fi
    done
    if [ "$(timeout 60 xenstore-write "$cli_prefix/final" ok && timeout 60 xenstore-read "$cli_prefix/final")" = ok ]; then
        echo "CC dom0-cli final ok"
    else
        echo "CC dom0-cli violation final round trip failed"
    fi
    echo "CC dom0-cli done rounds=$seq_number"
) >"$work/dom0-cli.log" &
cli_pid=$!
sleep 3

# 3. The injection loop (the first one also tells whether the server supports injection).
restart_ms=()
if [ "$injections" -gt 0 ]; then
    lab_emit "LAB-STEP crash $injections injections"
    for round in $(seq 1 "$injections"); do
        count=$((RANDOM % count_max + 1))
        point="${points[RANDOM % ${#points[@]}]}"
        before="$(restarts_seen)"
        armed="$(lab_now)"
        # A dom0 fault of xenstore-control itself is retried (twice); an arming it may have
        # sent before dying is replaced by the next one.
        for _attempt in 1 2 3; do
            output="$(timeout 30 xenstore-control inject-crash "$count" "$point" 2>&1)"
            rc=$?
            is_dom0_fault "$rc" "$output" || break
            dom0_tool_faults=$((dom0_tool_faults + 1))
            lab_emit "LAB-INFO crash dom0-fault xenstore-control inject-crash (rc=$rc: $(tr '\n' ' ' <<<"$output" | cut -c1-120)): retried"
        done
        if [ "$rc" -eq 124 ]; then
            violation "injection $round: 'xenstore-control inject-crash $count $point' got no answer from $server within 30 s"
            break
        elif [ "$rc" -ne 0 ]; then
            # The server answered XS_CONTROL with an error (C xenstored: "Command not supported").
            violation "inject-crash is not supported by $server: 'xenstore-control inject-crash $count $point' rc=$rc: $(tr '\n' ' ' <<<"$output")"
            break
        fi
        # The crash comes with the count-th later request (the clients keep sending); the
        # restart is seen in the stub domain's log, then the first request that succeeds.
        restarted=0
        deadline="$(awk -v now="$(lab_now)" 'BEGIN { printf "%.2f", now + 60 }')"
        while awk -v now="$(lab_now)" -v end="$deadline" 'BEGIN { exit !(now < end) }'; do
            if [ "$(restarts_seen)" -gt "$before" ]; then restarted=1; break; fi
            sleep 0.1
        done
        if [ "$restarted" -ne 1 ]; then
            panics="$(grep -a "(d$xs_domid)" "$xen_console" | grep -c "PANIC")"
            violation "injection $round (inject-crash $count $point): no 'warm restart ... serving again' from domain $xs_domid within 60 s ($panics PANIC lines from it so far)"
            grep -a "(d$xs_domid)" "$xen_console" | grep -A2 "PANIC" | tail -n 3 | tr -d '\r' |
                while IFS= read -r line; do lab_emit "LAB-INFO crash stub domain: $line"; done
            if ! timeout 10 xenstore-read /tool/xenstored/domid >/dev/null 2>&1; then
                give_up "the xenstore does not answer any more after injection $round: no warm restart"
            fi
            continue
        fi
        if ! timeout 60 xenstore-read /tool/xenstored/domid >/dev/null 2>&1; then
            violation "injection $round: dom0's xenstore-read failed after the restart"
            continue
        fi
        elapsed="$(milliseconds "$armed" "$(lab_now)")"
        injected=$((injected + 1))
        restart_ms+=("$elapsed")
        echo "injection $round: inject-crash $count $point -> restart seen, dom0 served again $elapsed ms after arming"
        sleep "0.$((RANDOM % 9 + 1))"
    done
    lab_emit "LAB-INFO crash $injected restarts observed of $injections requested"
else
    lab_emit "LAB-STEP crash LAB_CRASH_INJECT=0: workload and checker without crashes"
    sleep 20
fi

# 4. Stop the clients and wait for their last lines.
lab_emit "LAB-STEP crash stopping the clients, checking"
touch "$work/stop"
for index in $(seq 1 "$guests"); do
    if ! guest_domid="$(xl domid "crash-$index" 2>/dev/null)"; then
        violation "guest crash-$index is gone"
        # Its console's last lines tell a guest kernel crash from a client that gave up.
        lab_log_tail crash "$(lab_guest_console_log "crash-$index")" 15
        continue
    fi
    timeout 60 xenstore-write "/local/domain/$guest_domid/data/crash/stop" 1 || violation "cannot write crash-$index's stop node"
done
timeout 60 xenstore-write "$dom0_prefix/stop" 1 || violation "cannot write dom0's stop node"
# wait_bounded PID SECONDS NAME: wait for a background client; kill it after SECONDS.
wait_bounded() {
    local pid="$1" seconds="$2" name="$3" waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge $((seconds * 5)) ]; then
            kill "$pid" 2>/dev/null
            violation "$name did not finish within $seconds s after the stop (killed)"
            break
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    wait "$pid"
    echo "$name exit status $?"
}
wait_bounded "$dom0_pid" 120 "dom0 crash client"
wait_bounded "$cli_pid" 120 "dom0 CLI loop"
cli_pid=""
clients=(dom0 dom0-cli)
logs=("$work/dom0.log" "$work/dom0-cli.log")
for index in $(seq 1 "$guests"); do
    log="$(lab_guest_console_log "crash-$index")"
    lab_wait 120 grep -q "CC crash-$index done" "$log" || violation "crash-$index: no 'done' line within 120 s"
    tr -d '\r' <"$log" >"$work/crash-$index.log"
    clients+=("crash-$index")
    logs+=("$work/crash-$index.log")
done

# 5. The checker.
total_acks=0 total_tx=0 total_eagain=0
for position in "${!clients[@]}"; do
    label="${clients[$position]}" log="${logs[$position]}"
    prefix="$(sed -n "s/^CC $label start prefix=//p" "$log" | tail -n 1)"
    [ -n "$prefix" ] || { violation "$label: no start line"; continue; }
    # The clients' own violations (duplicate/missing replies, lost events, errors).
    while IFS= read -r line; do violation "$label: ${line#CC "$label" violation }"; done \
        < <(grep "^CC $label violation " "$log")
    grep "^CC $label dom0-fault " "$log" | head -n 5 | while IFS= read -r line; do
        lab_emit "LAB-INFO crash dom0-fault ${line#CC }"
    done
    grep -q "^CC $label final ok" "$log" || violation "$label: no successful final round trip"
    grep -q "^CC $label done" "$log" || violation "$label: no done line"
    # Every acknowledged key holds its acknowledged value or a later one. The record is per
    # change (`ack k3 57`, `tx-ack 56`) or snapshots (`acks k0=.. k1=.. tx=..`); "tx" stands
    # for the transaction pair.
    tx_acked=0 keys_checked=0
    while read -r key acked; do
        if [ "$key" = tx ]; then tx_acked="$acked"; continue; fi
        keys_checked=$((keys_checked + 1))
        value="$(timeout 60 xenstore-read "$prefix/$key" 2>&1)"
        if ! [[ "$value" =~ ^[0-9]+$ ]] || [ "$value" -lt "$acked" ]; then
            violation "$label: $prefix/$key = '$value' but $acked was acknowledged (lost write)"
        fi
    done < <(awk -v label="$label" '
        $1 != "CC" || $2 != label { next }
        $3 == "ack" && $5 + 0 > last[$4] { last[$4] = $5 + 0 }
        $3 == "tx-ack" && $4 + 0 > tx { tx = $4 + 0 }
        $3 == "acks" {
            for (i = 4; i <= NF; i++) {
                split($i, pair, "=")
                if (pair[1] == "tx") { if (pair[2] + 0 > tx) tx = pair[2] + 0 }
                else if (pair[2] + 0 > last[pair[1]]) last[pair[1]] = pair[2] + 0
            }
        }
        END { for (key in last) print key, last[key]; print "tx", tx + 0 }' "$log")
    done_line="$(grep "^CC $label done" "$log" | tail -n 1)"
    acks="$(sed -n 's/.* acks=\([0-9]*\).*/\1/p' <<<"$done_line")"
    [ -n "$acks" ] || acks="$(grep -c "^CC $label ack " "$log")"
    tx_count="$(sed -n 's/.* tx=\([0-9]*\).*/\1/p' <<<"$done_line")"
    tx_count="${tx_count:-0}"
    eagain="$(grep -c "^CC $label tx-eagain " "$log")"
    if [ "$tx_acked" -gt 0 ]; then
        a="$(timeout 60 xenstore-read "$prefix/tx/a" 2>&1)" b="$(timeout 60 xenstore-read "$prefix/tx/b" 2>&1)"
        if [ "$a" != "$b" ]; then
            violation "$label: transaction pair differs: tx/a=$a tx/b=$b (not atomic)"
        elif ! [[ "$a" =~ ^[0-9]+$ ]] || [ "$a" -lt "$tx_acked" ]; then
            violation "$label: tx/a = '$a' but commit $tx_acked was acknowledged (lost commit)"
        fi
    fi
    total_acks=$((total_acks + acks)) total_tx=$((total_tx + tx_count)) total_eagain=$((total_eagain + eagain))
    line="$label: $acks acknowledged writes, $tx_count commits, $eagain EAGAIN retries, $keys_checked keys checked in the store; ${done_line#CC "$label" }"
    echo "$line"
    lab_emit "LAB-INFO crash client $line"
done

# 6. dom0's tools still work.
if [ "$(timeout 60 xenstore-write /lab-crash/final ok && timeout 60 xenstore-read /lab-crash/final)" != ok ]; then
    violation "dom0: final xenstore-write/xenstore-read round trip failed"
fi
timeout 60 xenstore-rm /lab-crash >/dev/null 2>&1

# 7. Restart times.
if [ "${#restart_ms[@]}" -gt 0 ]; then
    read -r median maximum < <(printf '%s\n' "${restart_ms[@]}" | sort -n |
        awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[NR] }')
    lab_emit "LAB-BENCH $server crash-restart-observed-p50 $median ms"
    lab_emit "LAB-BENCH $server crash-restart-observed-max $maximum ms"
fi
kernel_lines="$(grep -a "(d$xs_domid)" "$xen_console" | grep "warm restart [0-9]*: serving again" | tr -d '\r')"
if [ -n "$kernel_lines" ]; then
    read -r count median maximum < <(sed -n 's/.*serving again after \([0-9.]*\) ms.*/\1/p' <<<"$kernel_lines" |
        sort -n | awk '{ v[NR] = $1 } END { print NR, v[int((NR + 1) / 2)], v[NR] }')
    lab_emit "LAB-INFO crash kernel: $(wc -l <<<"$kernel_lines") warm restarts, $count of them timed (p50 ${median:-?} ms, max ${maximum:-?} ms); last: $(tail -n 1 <<<"$kernel_lines" | sed 's/^.*(d[0-9]*) //')"
    lab_emit "LAB-BENCH $server crash-restart-kernel-p50 ${median:-0} ms"
    lab_emit "LAB-BENCH $server crash-restart-kernel-max ${maximum:-0} ms"
fi
lab_emit "LAB-INFO crash totals: $total_acks acknowledged writes, $total_tx commits, $total_eagain EAGAIN retries"

# dom0 itself: processes that crashed during the scenario point at the lab (emulated Xen), not
# at the xenstore under test; counted and shown, never hidden.
dom0_faults="$(dmesg | sed -n "/$scenario_marker/,\$p" | grep -c -E 'segfault at|general protection fault')"
if [ "$dom0_faults" -gt 0 ]; then
    lab_emit "LAB-INFO crash dom0-faults $dom0_faults dom0 processes died of SIGSEGV/GPF during the scenario (first: $(dmesg | sed -n "/$scenario_marker/,\$p" | grep -m1 -E 'segfault at|general protection fault' | cut -c1-160))"
fi

summary
if [ "$violations" -ne 0 ]; then
    for position in "${!clients[@]}"; do
        echo "-- last lines of ${clients[$position]}'s record:"
        grep -v ' ack ' "${logs[$position]}" | tail -n 6
        tail -n 3 "${logs[$position]}"
    done
    echo "FAIL: $violations violations (see the VIOLATION lines above)"
    exit 1
fi
if [ "$injected" -lt "$injections" ]; then
    echo "FAIL: only $injected of $injections injections were observed"
    exit 1
fi
echo "PASS"
