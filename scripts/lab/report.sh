#!/usr/bin/env bash
# scripts/lab/report.sh — owns: the lab's summary (verdicts, boot timings, benchmark table).
#
# Usage: report.sh          (reads $LAB_OUT/plan and $LAB_OUT/<xenstore>/control.log)
# plan lines:  expect <label> <xenstore> <scenario>   a verdict LAB-RESULT <scenario>@<xenstore> is due
#              skip <label> <reason...>               reported as SKIP without a boot
# Prints per-boot timings, one verdict per expected result, the benchmark table (LAB-BENCH lines,
# with each server's ratio to C xenstored), and for every boot with a failure the evidence: its
# LAB-LOG lines, the stub domain's `(d<n>)` debug lines and the tail of Xen's serial log (which
# also carries dom0's console). LAB_EXPECT_FAIL="c bench@stubdom" lists labels or results whose
# FAIL is expected (e.g. c while the stub domain cannot serve yet): shown, counted as skipped.
# Ends with `lab: N passed, N failed, N skipped`; exits 1 on FAIL.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

plan="$LAB_OUT/plan"
[ -f "$plan" ] || lab_die "no $plan: run scripts/lab/run first"
passed=0 failed=0 skipped=0
failed_boots=""

echo
echo "== Xen lab: boots =="
printf '%-12s %10s %18s %16s  %s\n' boot wall-s dom0-ready-uptime xenstore-ready-s host-load
for xenstore in $(awk '$1 == "expect" { print $3 }' "$plan" | uniq); do
    control="$LAB_OUT/$xenstore/control.log"
    wall="$(awk '$1 == "boot-seconds" { print $2 }' "$LAB_OUT/$xenstore/timing" 2>/dev/null || true)"
    ready="$(awk '$2 == "dom0-ready-uptime" { print $3 }' "$control" 2>/dev/null)"
    xs_ready="$(awk '$1 == "LAB-RESULT" && $2 == "xenstore-start" { sub("time=", "", $5); print $5 }' "$control" 2>/dev/null)"
    load="$(sed -n 's/^host-loadavg //p' "$LAB_OUT/$xenstore/timing" 2>/dev/null)"
    printf '%-12s %10s %18s %16s  %s\n' "$xenstore" "${wall:--}" "${ready:--}" "${xs_ready:--}" "${load:--}"
done

echo
echo "== Xen lab: results =="
while read -r kind label rest; do
    case "$kind" in
    skip)
        printf '%-4s %-24s SKIP  %s\n' "$label" "-" "$rest"
        skipped=$((skipped + 1))
        ;;
    expect)
        read -r xenstore scenario <<<"$rest"
        control="$LAB_OUT/$xenstore/control.log"
        line="$(grep -s "^LAB-RESULT $scenario@$xenstore " "$control" | tail -n 1 || true)"
        if [ -n "$line" ]; then
            verdict="$(awk '{ print $3 }' <<<"$line")"
            detail="$(cut -d' ' -f4- <<<"$line")"
        else
            # No verdict: the xenstore did not start, the boot failed or timed out.
            verdict=FAIL
            detail="$(grep -s -E '^LAB-RESULT (xenstore-start|boot)@?[a-z]* (FAIL|SKIP)' "$control" | tail -n 1 | cut -d' ' -f2- || true)"
            detail="no verdict; ${detail:-no LAB-RESULT at all}"
            if grep -sq '^LAB-RESULT xenstore-start SKIP' "$control"; then verdict=SKIP; fi
        fi
        printf '%-4s %-24s %-5s %s\n' "$label" "$scenario@$xenstore" "$verdict" "$detail"
        # Retries of toolstack flakes (dom0/lib.sh) and guest crashes are shown, never hidden;
        # so are the load generator's server difference (d) and the crash verdict (e).
        grep -s -E "^LAB-INFO $scenario (retry|guest-crashed|loadgen-node-owner)" "$control" | sed 's/^LAB-INFO /     note: /' || true
        grep -s -E "^LAB-INFO crash-summary $xenstore " "$control" | sed "s/^LAB-INFO crash-summary $xenstore /     /" || true
        case "$verdict" in
        PASS) passed=$((passed + 1)) ;;
        SKIP) skipped=$((skipped + 1)) ;;
        *)
            if [[ " ${LAB_EXPECT_FAIL:-} " == *" $label "* || " ${LAB_EXPECT_FAIL:-} " == *" $scenario@$xenstore "* ]]; then
                echo "     (expected failure: '$label' is in LAB_EXPECT_FAIL; counted as skipped)"
                skipped=$((skipped + 1))
                continue
            fi
            failed=$((failed + 1))
            case " $failed_boots " in *" $xenstore "*) ;; *) failed_boots="$failed_boots $xenstore" ;; esac
            ;;
        esac
        ;;
    esac
done <"$plan"

# Benchmark table: metric x server, ratio to cxenstored (for times: >1 means slower).
bench_files=()
for xenstore in $(awk '$1 == "expect" { print $3 }' "$plan" | uniq); do
    [ -f "$LAB_OUT/$xenstore/control.log" ] && bench_files+=("$LAB_OUT/$xenstore/control.log")
done
if [ "${#bench_files[@]}" -gt 0 ] && grep -qs '^LAB-BENCH ' "${bench_files[@]}"; then
    echo
    echo "== Xen lab: benchmark (d); (xN) = ratio to C xenstored, for times >1 is slower =="
    for xenstore in $(awk '$1 == "expect" { print $3 }' "$plan" | uniq); do
        if [ -f "$LAB_OUT/$xenstore/contention" ]; then
            echo "WARNING: [$xenstore] ran while other QEMU processes competed for the CPUs; its numbers are inflated"
        fi
    done
    grep -hs '^LAB-BENCH ' "${bench_files[@]}" | awk '
        {
            server = $2; metric = $3 " (" $5 ")"; value[metric, server] = $4
            if (!(server in seen_server)) { seen_server[server] = 1; servers[++server_count] = server }
            if (!(metric in seen_metric)) { seen_metric[metric] = 1; metrics[++metric_count] = metric }
        }
        END {
            printf "%-28s", "metric"
            for (s = 1; s <= server_count; s++) printf " %20s", servers[s]
            printf "\n"
            for (m = 1; m <= metric_count; m++) {
                metric = metrics[m]; printf "%-28s", metric
                reference = value[metric, "cxenstored"]
                for (s = 1; s <= server_count; s++) {
                    cell = "-"
                    if ((metric, servers[s]) in value) {
                        v = value[metric, servers[s]]; cell = v
                        if (servers[s] != "cxenstored" && reference + 0 > 0)
                            cell = sprintf("%s (x%.2f)", v, v / reference)
                    }
                    printf " %20s", cell
                }
                printf "\n"
            }
        }'
fi

# Scenario e: the crash record of each boot that ran it (dom0's view and Xen's serial log).
for xenstore in $(awk '$1 == "expect" && $4 == "crash" { print $3 }' "$plan" | uniq); do
    control="$LAB_OUT/$xenstore/control.log"
    echo
    echo "== Xen lab: crash (e) [$xenstore] =="
    grep -s -E '^LAB-INFO crash(-summary)? ' "$control" | grep -v ' crash violation ' | sed 's/^LAB-INFO //' || true
    violation_lines="$(grep -s -c '^LAB-INFO crash violation ' "$control" || true)"
    if [ "${violation_lines:-0}" -gt 0 ]; then
        echo "violations ($violation_lines, first 20):"
        grep -s '^LAB-INFO crash violation ' "$control" | head -n 20 | sed 's/^LAB-INFO crash violation /  /'
    fi
    serial_restarts="$(grep -a -c 'warm restart [0-9]*: serving again' "$LAB_OUT/$xenstore/serial.log" 2>/dev/null || true)"
    echo "stub domain 'warm restart N: serving again' lines in $LAB_OUT/$xenstore/serial.log: ${serial_restarts:-0}"
    grep -a 'warm restart [0-9]*: serving again' "$LAB_OUT/$xenstore/serial.log" 2>/dev/null | tail -n 3 | tr -d '\r' | sed 's/^/  /' || true
done

for xenstore in $failed_boots; do
    out="$LAB_OUT/$xenstore"
    echo
    echo "== Evidence for the failed boot [$xenstore] (full logs: $out/) =="
    echo "-- control channel (last 60 lines of $out/control.log):"
    tail -n 60 "$out/control.log" 2>/dev/null || echo "(none)"
    if [ -s "$out/qemu.log" ]; then echo "-- QEMU's own output ($out/qemu.log):"; tail -n 20 "$out/qemu.log"; fi
    echo "-- crashes in Xen's serial log:"
    grep -a -E 'Triple fault|domain_crash|crashed|Panic|BUG|Kernel panic' "$out/serial.log" 2>/dev/null | tail -n 10 || echo "(none)"
    echo "-- guest debug output, (d<n>) lines of Xen's serial log (last 40):"
    grep -a '^(d[0-9]' "$out/serial.log" 2>/dev/null | tail -n 40 || echo "(none)"
    echo "-- Xen serial log incl. dom0's console (last 80 lines of $out/serial.log):"
    tail -n 80 "$out/serial.log" 2>/dev/null | tr -d '\r' || echo "(none)"
done

echo
echo "lab: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
