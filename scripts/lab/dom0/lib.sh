# scripts/lab/dom0/lib.sh — owns: helpers for dom0-side lab scenarios (sourced; runs in dom0).
#
# The control channel: every line that matters to the host starts with `LAB-` and is written
# both to the control serial port (fd 3, QEMU's second serial port -> lab-out/<boot>/control.log)
# and to dom0's console (hvc0 -> Xen's serial log). Line formats:
#   LAB-INFO <key> <value...>
#   LAB-STEP <scenario> <text...>
#   LAB-RESULT <scenario>@<xenstore> PASS|FAIL|SKIP rc=<n> time=<s> [reason...]
#   LAB-BENCH <server> <metric> <value> <unit>
#   LAB-LOG <scenario> <text...>          (log tail of a failed step)
#   LAB-DONE
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin

lab_emit() {
    printf '%s\n' "$*" >&3 2>/dev/null || true
    printf '%s\n' "$*" >/dev/console 2>/dev/null || true
}

# Seconds since boot (CLOCK_BOOTTIME via /proc/uptime, 10 ms resolution); lab_since START ->
# elapsed seconds. Not `date`: dom0's wall clock was seen to jump by decades mid-run under TCG.
lab_now() { cut -d' ' -f1 /proc/uptime; }
lab_since() { awk -v start="$1" -v end="$(lab_now)" 'BEGIN { printf "%.3f", end - start }'; }

# lab_wait SECONDS COMMAND... : retry COMMAND every 0.2 s until it succeeds or SECONDS pass.
lab_wait() {
    local seconds="$1"; shift
    local deadline
    deadline=$(awk -v now="$(lab_now)" -v s="$seconds" 'BEGIN { printf "%.3f", now + s }')
    while ! "$@" >/dev/null 2>&1; do
        if awk -v now="$(lab_now)" -v d="$deadline" 'BEGIN { exit !(now > d) }'; then
            return 1
        fi
        sleep 0.2
    done
}

# lab_log_tail SCENARIO FILE [LINES] : send the tail of FILE as LAB-LOG lines.
lab_log_tail() {
    local scenario="$1" file="$2" lines="${3:-20}"
    [ -f "$file" ] || return 0
    tail -n "$lines" "$file" | while IFS= read -r line; do lab_emit "LAB-LOG $scenario $line"; done
}

# The stub domain's tools: xenstore-control (Debian keeps it out of PATH) and the stub
# domain's console log as xenconsoled writes it.
lab_xenstore_control() { command -v xenstore-control || echo /usr/lib/xen-4.17/bin/xenstore-control; }
lab_stubdom_console_log() {
    local found
    found="$(find /var/log/xen/console -maxdepth 1 -name 'guest-Xenstore*.log' 2>/dev/null | head -n 1)"
    echo "${found:-/var/log/xen/console/guest-Xenstore.log}"
}

# Guest helpers. lab_guest_create NAME [xl options...] creates the lab guest NAME.
lab_guest_create() {
    local name="$1"; shift
    xl create /lab/xl/lab-guest-pvh.cfg "name=\"$name\"" "$@"
}
lab_guest_console_log() { echo "/var/log/xen/console/guest-$1.log"; }
lab_guest_is_up() { grep -q LAB-GUEST-UP "$(lab_guest_console_log "$1")" 2>/dev/null; }

# lab_guest_wait_up NAME SECONDS: wait for the guest's console marker.
# Returns 0 when it appeared, 2 when the domain vanished first (it crashed: under TCG the Debian
# guest kernel occasionally triple-faults early in boot when the host is heavily loaded; the
# lab's guests have on_crash="destroy"), 1 on timeout.
lab_guest_wait_up() {
    local name="$1" seconds="$2" waited=0
    while [ "$waited" -lt $((seconds * 5)) ]; do
        if lab_guest_is_up "$name"; then return 0; fi
        if ! xl domid "$name" >/dev/null 2>&1; then
            lab_guest_is_up "$name" && return 0
            return 2
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    return 1
}

# lab_guest_create_retry SCENARIO NAME: `xl create` bounded to 180 s, retried once after
# destroying leftovers. Seen here under heavy host load with Debian's xl 4.17.5: `xl create`
# segfaulting in libc, or not returning, while the previous guest boots. A retry is reported as
# `LAB-INFO <scenario> retry ...` and counted by the host's report, so it never goes unnoticed.
lab_guest_create_retry() {
    local scenario="$1" name="$2" rc=0
    timeout 180 xl create /lab/xl/lab-guest-pvh.cfg "name=\"$name\"" >"/tmp/xl-create-$name.log" 2>&1 && return 0
    rc=$?
    lab_emit "LAB-INFO $scenario retry xl create $name failed rc=$rc: destroying leftovers, retrying once"
    grep -v '^Parsing config' "/tmp/xl-create-$name.log" | tail -n 6 | while IFS= read -r line; do
        lab_emit "LAB-INFO $scenario retry-detail $line"
    done
    xl destroy "$name" >/dev/null 2>&1 || true
    timeout 180 xl create /lab/xl/lab-guest-pvh.cfg "name=\"$name\""
}
