//! The emergency output channel: I/O port 0xE9.
//!
//! Under Xen every HVM/PVH domain has a handler for this port (xen.git
//! `xen/arch/x86/hvm/hvm.c`, `hvm_print_line`): bytes are line-buffered and printed on Xen's
//! console as `(d<domid>) ...` when Xen runs with `guest_loglvl=all`. Under plain QEMU,
//! `-debugcon file:...` captures the same bytes. Usable from the first instruction, never
//! blocks, needs no state — which is why the panic handler uses it.

use core::sync::atomic::{AtomicBool, Ordering};

/// The debug console port.
pub const PORT: u16 = 0xE9;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns port-0xE9 output on or off (each byte is a VM exit; `--e9=off` on the command line
/// silences it once the PV console works). Panics always print.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether regular log output goes to port 0xE9.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Writes bytes to port 0xE9 unconditionally.
pub fn write_bytes(bytes: &[u8]) {
    for &byte in bytes {
        crate::arch::outb(PORT, byte);
    }
}

/// `core::fmt::Write` adapter over port 0xE9 (unconditional; used by the panic handler).
#[derive(Debug, Default)]
pub struct DebugConsole;

impl core::fmt::Write for DebugConsole {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        write_bytes(text.as_bytes());
        Ok(())
    }
}
