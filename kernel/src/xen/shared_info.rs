//! The shared_info page (xen.git `xen/include/public/xen.h`, `struct shared_info`): mapped
//! with `XENMEM_add_to_physmap(XENMAPSPACE_shared_info)` over a page-aligned static page of
//! our own `.boot` section, then accessed only through atomics (Xen writes it concurrently).

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::abi::{self, SharedInfo};
use super::hypercall::HypercallError;
use super::memory;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Backing page donated to Xen; never accessed as a Rust object after mapping. In `.boot`,
/// not `.bss`: a warm restart zeroes `.bss`, and this gfn is Xen's shared_info by then.
#[unsafe(link_section = ".boot.shared_info")]
static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);

static SHARED_INFO: AtomicPtr<SharedInfo> = AtomicPtr::new(core::ptr::null_mut());

/// Maps shared_info over our static page. Idempotent.
pub fn map() -> Result<(), HypercallError> {
    if !SHARED_INFO.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    let address = core::ptr::addr_of_mut!(SHARED_INFO_PAGE) as u64;
    // SAFETY: the page is ours, page aligned, and never used as Rust data: after this call the
    // gfn shows Xen's shared_info instead (the old RAM frame is released by Xen).
    unsafe { memory::add_to_physmap(abi::XENMAPSPACE_SHARED_INFO, 0, address >> 12)? };
    SHARED_INFO.store(address as *mut SharedInfo, Ordering::Release);
    Ok(())
}

/// Whether [`map`] succeeded.
pub fn mapped() -> bool {
    !SHARED_INFO.load(Ordering::Acquire).is_null()
}

fn base() -> *mut SharedInfo {
    let pointer = SHARED_INFO.load(Ordering::Acquire);
    assert!(!pointer.is_null(), "shared_info used before it was mapped");
    pointer
}

/// `evtchn_pending[word]` as an atomic.
pub fn pending_word(word: usize) -> &'static AtomicU64 {
    assert!(word < 64);
    // SAFETY: shared_info is mapped for the rest of the kernel's life; the field is an
    // 8-aligned u64 that Xen updates with atomic operations, so viewing it as AtomicU64 is
    // sound; `word` is in bounds (asserted).
    unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*base()).evtchn_pending[word])) }
}

/// `evtchn_mask[word]` as an atomic.
pub fn mask_word(word: usize) -> &'static AtomicU64 {
    assert!(word < 64);
    // SAFETY: as for `pending_word`.
    unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*base()).evtchn_mask[word])) }
}

/// vCPU 0's `evtchn_upcall_pending` byte.
pub fn upcall_pending() -> &'static AtomicU8 {
    // SAFETY: as for `pending_word`; a u8 field viewed as AtomicU8.
    unsafe {
        AtomicU8::from_ptr(core::ptr::addr_of_mut!(
            (*base()).vcpu_info[0].evtchn_upcall_pending
        ))
    }
}

/// vCPU 0's `evtchn_pending_sel`.
pub fn pending_selector() -> &'static AtomicU64 {
    // SAFETY: as for `pending_word`.
    unsafe {
        AtomicU64::from_ptr(core::ptr::addr_of_mut!(
            (*base()).vcpu_info[0].evtchn_pending_sel
        ))
    }
}

/// Address of vCPU 0's `evtchn_upcall_pending` (for the upcall stub).
pub fn upcall_pending_address() -> u64 {
    upcall_pending() as *const AtomicU8 as u64
}

/// A consistent copy of vCPU 0's `vcpu_time_info` (version seqlock: retried while odd or
/// changed; bounded, since Xen holds it odd only for a few instructions).
pub fn vcpu_time() -> abi::VcpuTimeInfo {
    let time = base().wrapping_byte_add(
        core::mem::offset_of!(SharedInfo, vcpu_info) + core::mem::offset_of!(abi::VcpuInfo, time),
    ) as *mut abi::VcpuTimeInfo;
    // SAFETY: points at the version field (first u32) inside mapped shared_info.
    let version = unsafe { AtomicU32::from_ptr(time as *mut u32) };
    for _ in 0..1_000_000 {
        let before = version.load(Ordering::Acquire);
        if before & 1 == 1 {
            core::hint::spin_loop();
            continue;
        }
        // SAFETY: reading the struct while Xen may write it; torn reads are detected by the
        // version check below and retried. Volatile: the compiler must re-read each time.
        let copy = unsafe { core::ptr::read_volatile(time) };
        core::sync::atomic::fence(Ordering::Acquire);
        if version.load(Ordering::Relaxed) == before {
            return copy;
        }
    }
    panic!("vcpu_time_info version stuck odd");
}

/// Wallclock at system time 0: (seconds, nanoseconds) since the Unix epoch.
pub fn wallclock() -> (u64, u32) {
    let shared = base();
    // SAFETY: fields inside mapped shared_info; same seqlock pattern over `wc_version`.
    let version = unsafe { AtomicU32::from_ptr(core::ptr::addr_of_mut!((*shared).wc_version)) };
    for _ in 0..1_000_000 {
        let before = version.load(Ordering::Acquire);
        if before & 1 == 1 {
            continue;
        }
        // SAFETY: as above; plain volatile reads of u32 fields.
        let (sec, nsec, sec_hi) = unsafe {
            (
                core::ptr::read_volatile(core::ptr::addr_of!((*shared).wc_sec)),
                core::ptr::read_volatile(core::ptr::addr_of!((*shared).wc_nsec)),
                core::ptr::read_volatile(core::ptr::addr_of!((*shared).wc_sec_hi)),
            )
        };
        core::sync::atomic::fence(Ordering::Acquire);
        if version.load(Ordering::Relaxed) == before {
            return ((u64::from(sec_hi) << 32) | u64::from(sec), nsec);
        }
    }
    (0, 0)
}
