#!/bin/bash
# scripts/lab/scenarios/bench.sh — owns: the lab's benchmark scenario (d) (runs in dom0).
#
# Against whichever xenstore this boot started:
#   1. boot storm: create $LAB_GUESTS lab guests back to back; time each `xl create`, the time
#      until every guest printed its console marker, and the destroy of all of them
#   2. request loop: $LAB_OPS writes and reads through /dev/xen/xenbus (and the Unix socket for
#      daemons) with bench-xs.py, a raw wire-protocol client
#   3. CLI loop: 50 xenstore-write + xenstore-read invocations (what shell scripts pay)
#   4. the project's load generator (/lab/bin/loadgen = xenstore-loadgen, built by `run` or
#      LAB_LOADGEN on the host) through /dev/xen/xenbus, the path every server offers:
#      boot-storm, rw and mixed with `--lab`; every `LAB-BENCH <metric> <value> <unit>` line it
#      prints is reported as `loadgen-<metric>` of this server. The simulated domains
#      (domid 1000+, never real ones) get dom0-owned nodes (`--node-owner dom0`): C xenstored
#      refuses a non-existent domain as a node's owner (SET_PERMS -> ENOENT); one boot-storm
#      domain with guest-owned nodes is tried first and its outcome reported as LAB-INFO.
# Results are LAB-BENCH lines; the host's report.sh tabulates them across servers.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../dom0/lib.sh
. /lab/lib.sh
server="$LAB_XENSTORE"
guests="${LAB_GUESTS:-3}"
ops="${LAB_OPS:-500}"
bench() { lab_emit "LAB-BENCH $server $*"; }
fail() { echo "FAIL: $*"; exit 1; }

lab_emit "LAB-STEP bench boot storm of $guests guests"
storm_start="$(lab_now)"
for index in $(seq 1 "$guests"); do
    created="$(lab_now)"
    lab_guest_create_retry bench "storm-$index" || fail "xl create storm-$index failed (twice)"
    bench "storm-create-$index $(lab_since "$created") s"
done
bench "storm-create-all $(lab_since "$storm_start") s"
for index in $(seq 1 "$guests"); do
    status=0
    lab_guest_wait_up "storm-$index" 180 || status=$?
    if [ "$status" -eq 2 ]; then
        # A guest kernel crash under TCG (see lab_guest_wait_up): recreate it once; the storm's
        # total then includes the retry, and the LAB-INFO line says so.
        lab_emit "LAB-INFO bench guest-crashed storm-$index: recreating once"
        lab_guest_create_retry bench "storm-$index" || fail "xl create storm-$index (after crash) failed"
        status=0
        lab_guest_wait_up "storm-$index" 180 || status=$?
    fi
    [ "$status" -eq 0 ] || fail "storm-$index printed no marker within 180 s (status $status)"
done
bench "storm-all-up $(lab_since "$storm_start") s"
xl list
destroy_start="$(lab_now)"
for index in $(seq 1 "$guests"); do
    xl destroy "storm-$index" || fail "xl destroy storm-$index failed"
done
bench "storm-destroy-all $(lab_since "$destroy_start") s"
lab_wait 30 sh -c "! xenstore-ls /local/domain | grep -q storm-" || fail "storm guests still in xenstore"

lab_emit "LAB-STEP bench request loop ($ops ops)"
python3 /lab/bench-xs.py "$server" "$ops" | while IFS= read -r line; do lab_emit "$line"; done
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "bench-xs.py failed"

lab_emit "LAB-STEP bench CLI loop"
cli_ops=50
cli_start="$(lab_now)"
for index in $(seq 1 "$cli_ops"); do
    xenstore-write "/lab-bench/cli/k$index" "value-$index"
    xenstore-read "/lab-bench/cli/k$index" >/dev/null
done
bench "cli-write+read $(awk -v t="$(lab_since "$cli_start")" -v n="$cli_ops" 'BEGIN { printf "%.0f", t / n * 1e6 }') us/op"
xenstore-rm /lab-bench/cli

if [ -x /lab/bin/loadgen ]; then
    lab_emit "LAB-STEP bench loadgen"
    loadgen=(/lab/bin/loadgen --device /dev/xen/xenbus --first-domid 1000)
    # The server difference, recorded: guest-owned nodes for a domain that does not exist.
    if probe="$(timeout 60 "${loadgen[@]}" --workload boot-storm --domains 1 --clients 1 --node-owner guest 2>&1)"; then
        lab_emit "LAB-INFO bench loadgen-node-owner-guest accepted"
    else
        lab_emit "LAB-INFO bench loadgen-node-owner-guest refused: $(tail -n 1 <<<"$probe")"
    fi
    timeout 300 "${loadgen[@]}" --lab --node-owner dom0 --workload all \
        --domains 32 --clients 4 --duration 3 \
        >/tmp/loadgen.out 2>&1 || { tail -n 20 /tmp/loadgen.out; fail "loadgen failed"; }
    grep -v '^LAB-' /tmp/loadgen.out
    sed -n 's/^LAB-BENCH \([^ ]*\) /\1 /p' /tmp/loadgen.out | while read -r metric value unit; do
        bench "loadgen-$metric $value $unit"
    done
fi
