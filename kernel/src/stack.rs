//! The boot stack's high-water mark: how deep the one stack of the kernel has ever been.
//!
//! Both entries (kernel/src/boot.rs) paint the boot stack with [`PAINT`] right after they
//! set RSP to its top: every 8-byte word from the bottom up to [`PAINT_MARGIN_BYTES`] below
//! RSP (the words just below RSP are left alone, so the paint never touches a live frame).
//! A word the kernel has used since no longer holds the pattern (the chance that a stack slot
//! holds exactly this value is negligible), so the lowest changed word is the deepest point
//! reached. [`boot_stack_usage`] finds it by scanning up from the bottom: cheap enough for the
//! heartbeat and the panic handler, never done on a hot path. A warm restart paints again, so
//! the mark covers the current run only; the panic message reports the previous one.

use core::fmt;

/// The pattern the entries write over the unused boot stack (top bit clear: the assembler
/// takes it as a plain positive immediate).
pub const PAINT: u64 = 0x5A17_C0DE_5A17_C0DE;
/// Bytes right below the entry's RSP that are not painted.
pub const PAINT_MARGIN_BYTES: usize = 256;
/// Less than this much of the stack never used counts as exhausted: a frame that ran into the
/// guard page need not have written the lowest words of the stack.
const HEADROOM_MIN_BYTES: u64 = 1024;

/// Deepest use of the boot stack so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackUsage {
    /// Bytes from the top down to the lowest word that no longer holds the paint.
    pub used_bytes: u64,
    /// Size of the boot stack.
    pub size_bytes: u64,
}

impl StackUsage {
    /// (Nearly) the whole stack was used: less than 1 KiB was never touched. The sign of an
    /// overflow into the guard page (or of paint destroyed by a stray write).
    pub fn exhausted(&self) -> bool {
        self.size_bytes.saturating_sub(self.used_bytes) < HEADROOM_MIN_BYTES
    }
}

impl fmt::Display for StackUsage {
    /// `12 KiB max of 128 KiB` (the used size rounded up to whole KiB).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} KiB max of {} KiB",
            self.used_bytes.div_ceil(1024),
            self.size_bytes / 1024
        )?;
        if self.exhausted() {
            formatter.write_str(" (exhausted)")?;
        }
        Ok(())
    }
}

/// Scans the boot stack for its high-water mark (at most 16384 reads of 8 bytes).
pub fn boot_stack_usage() -> StackUsage {
    let (bottom, top) = crate::boot::stack_range();
    let mut address = bottom;
    while address < top {
        // SAFETY: `address` lies in the boot stack (`[bottom, top)`, 8-byte aligned: the
        // stack bounds are page aligned), which is mapped and always readable. Words below
        // the deepest use belong to no frame; the first word that differs may belong to a
        // live frame and is only read (volatile: its value may be the CPU's, not Rust's).
        let word = unsafe { (address as *const u64).read_volatile() };
        if word != PAINT {
            break;
        }
        address += 8;
    }
    StackUsage {
        used_bytes: top - address,
        size_bytes: top - bottom,
    }
}
