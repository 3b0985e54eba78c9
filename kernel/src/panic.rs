//! The panic handler and power-off paths.
//!
//! A panic prints one line, `PANIC: <message> at <file>:<line>:<column>; boot stack 12 KiB
//! max of 128 KiB` (the boot stack's high-water mark, [`crate::stack`]), straight to port 0xE9
//! (no locks, no allocation — safe even if the logger or heap is what broke, and on the
//! double-fault interrupt stack), then best-effort to the PV console ring, then either
//! restarts in place ([`crate::warm`]: persistence `crash-resilient` with a log on a device
//! that survives, and no panic storm) or stops the domain: `SCHEDOP_shutdown(crash)` under
//! Xen, the QEMU isa-debug-exit device otherwise, and `hlt` forever if neither works.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::debugcon::DebugConsole;

/// I/O port of QEMU's `isa-debug-exit` device as used by scripts/kernel-smoke.sh.
pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xF4;

static PANICKING: AtomicBool = AtomicBool::new(false);

struct ConsoleRingWriter;

impl Write for ConsoleRingWriter {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        crate::xen::console::write_bytes(text.as_bytes());
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::arch::disable_interrupts();
    let nested = PANICKING.swap(true, Ordering::SeqCst);
    let mut port = DebugConsole;
    if nested {
        let _ = writeln!(port, "\nPANIC (nested): {}", info.message());
        crate::arch::halt_forever();
    }
    let (file, line, column) = info
        .location()
        .map(|l| (l.file(), l.line(), l.column()))
        .unwrap_or(("?", 0, 0));
    // One line (the lab counts PANIC lines), with the boot stack's high-water mark.
    let stack = crate::stack::boot_stack_usage();
    let _ = writeln!(
        port,
        "\nPANIC: {} at {file}:{line}:{column}; boot stack {stack}",
        info.message()
    );
    let _ = writeln!(
        ConsoleRingWriter,
        "\nPANIC: {} at {file}:{line}:{column}; boot stack {stack}",
        info.message()
    );
    match crate::warm::check_restart(crate::warm::panic_reason()) {
        Ok(()) => {
            let next = crate::warm::restarts() + 1;
            let _ = writeln!(port, "warm restart {next}: recovering from the log");
            let _ = writeln!(
                ConsoleRingWriter,
                "warm restart {next}: recovering from the log"
            );
            crate::warm::restart();
        }
        Err(crate::warm::RestartRefused::NotEnabled) => {}
        Err(refused) => {
            let _ = writeln!(port, "PANIC: {refused}; halting the domain");
            let _ = writeln!(ConsoleRingWriter, "PANIC: {refused}; halting the domain");
        }
    }
    if crate::xen::hypercall::ready() {
        crate::xen::sched::shutdown(crate::xen::sched::ShutdownReason::Crash);
    }
    qemu_exit(3);
}

/// Stops the domain with a message, without a warm restart (a state in which restarting
/// again cannot help, e.g. a warm boot without its saved boot information).
pub fn halt_with(message: &str) -> ! {
    crate::arch::disable_interrupts();
    let _ = writeln!(DebugConsole, "\nHALT: {message}");
    let _ = writeln!(ConsoleRingWriter, "\nHALT: {message}");
    if crate::xen::hypercall::ready() {
        crate::xen::sched::shutdown(crate::xen::sched::ShutdownReason::Crash);
    }
    qemu_exit(3);
}

/// Ends a run outside Xen: QEMU's isa-debug-exit (exit status `(code << 1) | 1`), else halt.
pub fn qemu_exit(code: u32) -> ! {
    crate::arch::outl(QEMU_DEBUG_EXIT_PORT, code);
    crate::arch::halt_forever()
}

/// Clean stop when no Xen was found.
pub fn power_off_without_xen() -> ! {
    qemu_exit(0)
}
