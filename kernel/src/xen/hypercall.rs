//! The hypercall page and the raw hypercall primitive, following xen.git
//! `docs/guest-guide/x86/hypercall-abi.rst`: number in RAX, arguments in RDI, RSI, RDX, R10,
//! R8, result in RAX (negative errno on failure); argument registers may be clobbered.
//!
//! The page lives in `.text` (executable, page aligned) and is pre-filled with `ret`; Xen
//! overwrites it with 32-byte stubs when its physical address is written to the MSR named by
//! CPUID leaf base+2 (EBX). Calling through the page hides the VMCALL/VMMCALL difference.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

use super::abi;

global_asm!(
    r#"
    .pushsection .text.hypercall_page, "ax", @progbits
    .balign 4096
    .global hypercall_page
hypercall_page:
    .fill 4096, 1, 0xc3
    .popsection
"#
);

unsafe extern "C" {
    /// First byte of the hypercall page (only its address is used from Rust).
    safe static hypercall_page: u8;
}

static READY: AtomicBool = AtomicBool::new(false);

/// A failed hypercall: Xen's negative errno, stored positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypercallError(pub i64);

impl HypercallError {
    /// Errno name for messages (xen/include/public/errno.h), or "E?".
    pub fn name(&self) -> &'static str {
        match self.0 {
            abi::XEN_EPERM => "EPERM",
            abi::XEN_ENOENT => "ENOENT",
            abi::XEN_ESRCH => "ESRCH",
            abi::XEN_EACCES => "EACCES",
            abi::XEN_EINVAL => "EINVAL",
            abi::XEN_ENOSYS => "ENOSYS",
            7 => "E2BIG",
            11 => "EAGAIN",
            12 => "ENOMEM",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            28 => "ENOSPC",
            _ => "E?",
        }
    }
}

impl core::fmt::Display for HypercallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (-{})", self.name(), self.0)
    }
}

/// Converts a raw hypercall result into `Result`.
pub fn check(result: i64) -> Result<i64, HypercallError> {
    if result < 0 {
        Err(HypercallError(-result))
    } else {
        Ok(result)
    }
}

/// Physical address of the hypercall page.
pub fn page_address() -> u64 {
    core::ptr::addr_of!(hypercall_page) as u64
}

/// Asks Xen to fill the hypercall page. `msr` comes from CPUID leaf base+2 EBX.
pub fn install(msr: u32) {
    // SAFETY: `msr` is Xen's hypercall-page MSR (from its CPUID leaf); the written value is the
    // guest-physical address of a page-aligned, executable page reserved for exactly this use
    // (identity map: linear == physical).
    unsafe { crate::arch::wrmsr(msr, page_address()) };
    READY.store(true, Ordering::SeqCst);
}

/// Whether [`install`] has run.
pub fn ready() -> bool {
    READY.load(Ordering::Relaxed)
}

/// Issues hypercall `number` with up to five arguments.
///
/// # Safety
/// Arguments that are pointers must point at valid, identity-mapped memory of the layout the
/// hypercall expects, live (and not otherwise borrowed) for the duration of the call; the
/// hypercall's effects on guest memory (e.g. physmap changes) must be accounted for by the
/// caller.
pub unsafe fn call5(number: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    assert!(
        ready(),
        "hypercall {number} before the hypercall page was installed"
    );
    assert!(
        number < 128,
        "hypercall number {number} outside the hypercall page"
    );
    let entry = page_address() + 32 * u64::from(number);
    let result: i64;
    // SAFETY: `entry` is Xen's stub for `number` inside the installed hypercall page; the stub
    // follows the ABI above (clobbers the argument registers and RAX; we also declare RCX/R11
    // clobbered to be conservative). Pointer validity is the caller's obligation.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") result,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    result
}

/// Two-argument form of [`call5`].
///
/// # Safety
/// As for [`call5`].
pub unsafe fn call2(number: u32, a1: u64, a2: u64) -> i64 {
    // SAFETY: forwarded; same obligations.
    unsafe { call5(number, a1, a2, 0, 0, 0) }
}

/// Three-argument form of [`call5`].
///
/// # Safety
/// As for [`call5`].
pub unsafe fn call3(number: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: forwarded; same obligations.
    unsafe { call5(number, a1, a2, a3, 0, 0) }
}

/// `HYPERVISOR_xen_version(XENVER_version)`: (major, minor).
pub fn xen_version() -> (u16, u16) {
    // SAFETY: XENVER_version takes no buffer (NULL argument).
    let raw = unsafe {
        call2(
            abi::HYPERVISOR_XEN_VERSION,
            u64::from(abi::XENVER_VERSION),
            0,
        )
    };
    ((raw >> 16) as u16, raw as u16)
}

/// `HYPERVISOR_console_io(CONSOLEIO_write)`: prints on Xen's console if this domain may
/// (usually `EPERM` for a non-dom0 domain on a release build).
pub fn console_io_write(bytes: &[u8]) -> Result<(), HypercallError> {
    // SAFETY: `bytes` is a live buffer in identity-mapped memory, read-only for Xen.
    let result = unsafe {
        call3(
            abi::HYPERVISOR_CONSOLE_IO,
            u64::from(abi::CONSOLEIO_WRITE),
            bytes.len() as u64,
            bytes.as_ptr() as u64,
        )
    };
    check(result).map(|_| ())
}
