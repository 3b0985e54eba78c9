#!/bin/bash
# scripts/lab/scenarios/coldrestart.sh — owns: the cold-restart probe of the stub domain
# (issue #10 item 4). Runs in dom0; stub domain boots only; must be the LAST scenario of a boot,
# because it destroys the xenstore domain.
#
# Question: can the host survive the xenstore domain being destroyed and launched again?
# The probe records, as LAB-INFO coldrestart lines, what each step does on Xen 4.17 + the Debian
# dom0 kernel:
#   1. a guest is running and connected (its ring and event channel point at the xenstore domid);
#   2. `xl destroy <xenstore domid>` (bounded: libxl reads xenstore while destroying);
#   3. the hypercall-only destroy (xc_domain_destroy through python ctypes) if xl did not finish;
#   4. whether the old domid is gone or lingers as a dying domain (Xen's 'q' debug key);
#   5. whether dom0's xenstore clients hang (bounded xenstore-read);
#   5b. whether stopping xenconsoled (console page mapping) releases the dying domain;
#   6. a relaunch with the unmodified init-xenstore-domain (new domid, IOCTL_XENBUS_BACKEND_SETUP).
# Exit 0 once the evidence is recorded (the verdict is in docs/cold-restart.md);
# 77 (SKIP) on other xenstores.
set -uo pipefail
# shellcheck source=SCRIPTDIR/../dom0/lib.sh
. /lab/lib.sh

evidence() { lab_emit "LAB-INFO coldrestart $*"; echo "== $*"; }

[ "${LAB_XENSTORE:-}" = stubdom ] || { echo "stub domain boots only"; exit 77; }
domid="$(xenstore-read /tool/xenstored/domid)" || { echo "no /tool/xenstored/domid"; exit 1; }
evidence "xenstore domain is domid $domid"

name=lab-cold
if lab_guest_create "$name" >/tmp/cold-create.log 2>&1; then
    guest="$(xl domid "$name")"
    evidence "guest $name running as domid $guest; its store evtchn $(xenstore-read "/local/domain/$guest/store/port" 2>/dev/null || echo '?')"
else
    evidence "guest create failed (continuing without a guest)"
fi

# Xen's domain list without xenstore: debug key 'q' dumps every domain to the Xen console.
domain_list() {
    xl dmesg -c >/dev/null 2>&1
    xl debug-keys q >/dev/null 2>&1
    sleep 1
    xl dmesg 2>/dev/null | grep -E "General information for domain|dying" | sed 's/^(XEN) //' | head -20
}
evidence "domains before: $(domain_list | tr '\n' ';')"

start="$(lab_now)"
timeout 30 xl destroy "$domid" >/tmp/cold-destroy.log 2>&1
rc=$?
evidence "xl destroy $domid: rc=$rc after $(lab_since "$start") s ($(tail -n 2 /tmp/cold-destroy.log | tr '\n' ' '))"

still_there() { domain_list | grep -q "for domain $domid:"; }
if still_there; then
    rc="$(python3 -c "
import ctypes
xc = ctypes.CDLL('libxenctrl.so.4.17')
xc.xc_interface_open.restype = ctypes.c_void_p
handle = xc.xc_interface_open(None, None, 0)
print(xc.xc_domain_destroy(ctypes.c_void_p(handle), $domid))
" 2>&1)"
    evidence "xc_domain_destroy($domid) returned $rc"
    sleep 2
fi
evidence "domains after destroy: $(domain_list | tr '\n' ';')"
if still_there; then
    evidence "domid $domid still exists after destroy (dying: pages still referenced, e.g. by xenconsoled's console mapping)"
else
    evidence "domid $domid is gone"
fi

start="$(lab_now)"
timeout 5 xenstore-read /tool/xenstored/domid >/dev/null 2>&1
rc=$?
evidence "xenstore-read from dom0 after destroy: rc=$rc after $(lab_since "$start") s (124 = hung until the timeout)"

if still_there; then
    # Who keeps it? xenconsoled maps the console page of every domain it serves.
    pkill -x xenconsoled
    sleep 2
    if still_there; then
        evidence "domid $domid still exists after stopping xenconsoled: $(domain_list | grep -A1 "for domain $domid:" | tr '\n' ' ')"
    else
        evidence "domid $domid is gone once xenconsoled stopped (it held the last reference)"
    fi
fi

# The relaunch may block in dom0's kernel (uninterruptible: `timeout` cannot end it), so it runs
# in the background and is looked at after 45 s.
start="$(lab_now)"
init-xenstore-domain -v --kernel /lab/stubdom/kernel --memory "${LAB_STUBDOM_MB:-8}" \
    >/tmp/cold-relaunch.log 2>&1 &
relaunch=$!
for _ in $(seq 45); do kill -0 "$relaunch" 2>/dev/null || break; sleep 1; done
if kill -0 "$relaunch" 2>/dev/null; then
    evidence "relaunch with init-xenstore-domain: still running after $(lab_since "$start") s, state $(cut -d' ' -f3 "/proc/$relaunch/stat"), kernel stack: $(head -n 6 "/proc/$relaunch/stack" 2>/dev/null | tr '\n' ' ')"
else
    wait "$relaunch"
    evidence "relaunch with init-xenstore-domain: rc=$? after $(lab_since "$start") s"
fi
evidence "relaunch output: $(grep -v '^domainbuilder' /tmp/cold-relaunch.log | tail -n 4 | tr '\n' ' ')"
evidence "domains after relaunch: $(domain_list | tr '\n' ';')"
exit 0
