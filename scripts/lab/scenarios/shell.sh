#!/bin/bash
# scripts/lab/scenarios/shell.sh — owns: the lab's interactive dom0 shell (runs in dom0).
#
# Used by scripts/lab/shell: gives a root shell on dom0's console (hvc0, which Xen multiplexes on
# its serial port; QEMU connects that to the terminal). The boot powers off when the shell exits.
# shellcheck source=SCRIPTDIR/../dom0/lib.sh
. /lab/lib.sh
lab_emit "LAB-STEP shell interactive shell on hvc0; exit it to power off"
cat >/dev/hvc0 <<'TEXT'

=== Xen lab dom0 shell ===
Try: xl list; xenstore-ls; xl create /lab/xl/lab-guest-pvh.cfg; xl console lab-guest
     (leave a guest console with Ctrl-]); xl destroy lab-guest.
Ctrl-a three times switches the serial input between dom0 and Xen's debug keys.
`exit` powers the machine off.
TEXT
cd /root 2>/dev/null || cd /
PS1='dom0# ' setsid -c bash --norc -i </dev/hvc0 >/dev/hvc0 2>&1
