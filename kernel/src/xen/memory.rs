//! Memory ops (xen.git `xen/include/public/memory.h`): reservation queries and
//! `XENMEM_add_to_physmap`.

use super::abi::{self, E820Entry, XenAddToPhysmap, XenMemoryMap};
use super::hypercall::{self, HypercallError};

/// `XENMEM_current_reservation` for this domain: pages currently allocated to it.
pub fn current_reservation_pages() -> Result<u64, HypercallError> {
    let domid: abi::DomainId = abi::DOMID_SELF;
    // SAFETY: the argument is a pointer to a live `domid_t`, read by Xen.
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_MEMORY_OP,
            u64::from(abi::XENMEM_CURRENT_RESERVATION),
            &domid as *const abi::DomainId as u64,
        )
    };
    hypercall::check(result).map(|pages| pages as u64)
}

/// `XENMEM_maximum_reservation` for this domain.
pub fn maximum_reservation_pages() -> Result<u64, HypercallError> {
    let domid: abi::DomainId = abi::DOMID_SELF;
    // SAFETY: as above.
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_MEMORY_OP,
            u64::from(abi::XENMEM_MAXIMUM_RESERVATION),
            &domid as *const abi::DomainId as u64,
        )
    };
    hypercall::check(result).map(|pages| pages as u64)
}

/// `XENMEM_add_to_physmap`: places frame `index` of `space` at guest frame `gfn`.
///
/// # Safety
/// Whatever was at `gfn` is replaced: the caller must own that page and no longer rely on
/// its contents (or it must be unpopulated).
pub unsafe fn add_to_physmap(space: u32, index: u64, gfn: u64) -> Result<(), HypercallError> {
    let mut argument = XenAddToPhysmap {
        domid: abi::DOMID_SELF,
        size: 0,
        space,
        idx: index,
        gpfn: gfn,
    };
    // SAFETY: `argument` is a live, identity-mapped struct; the physmap effect is the
    // caller's obligation (see # Safety).
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_MEMORY_OP,
            u64::from(abi::XENMEM_ADD_TO_PHYSMAP),
            &mut argument as *mut XenAddToPhysmap as u64,
        )
    };
    hypercall::check(result).map(|_| ())
}

/// Most entries fetched by [`memory_map`].
pub const MEMORY_MAP_ENTRIES_MAX: usize = 64;

/// `XENMEM_memory_map`: the e820 map the toolstack set for this domain
/// (init-xenstore-domain sets it with `xc_domain_set_memory_map` but Xen 4.17's PVH builder
/// does not copy it into start_info). Returns the entries and how many are valid.
pub fn memory_map() -> Result<([E820Entry; MEMORY_MAP_ENTRIES_MAX], usize), HypercallError> {
    let mut entries = [E820Entry::default(); MEMORY_MAP_ENTRIES_MAX];
    let mut argument = XenMemoryMap {
        nr_entries: MEMORY_MAP_ENTRIES_MAX as u32,
        pad: 0,
        buffer: entries.as_mut_ptr() as u64,
    };
    // SAFETY: `argument` and the `entries` buffer it points at (capacity as declared) are live
    // and identity mapped; Xen writes at most `nr_entries` entries.
    let result = unsafe {
        hypercall::call2(
            abi::HYPERVISOR_MEMORY_OP,
            u64::from(abi::XENMEM_MEMORY_MAP),
            &mut argument as *mut XenMemoryMap as u64,
        )
    };
    hypercall::check(result)?;
    let count = (argument.nr_entries as usize).min(MEMORY_MAP_ENTRIES_MAX);
    Ok((entries, count))
}
