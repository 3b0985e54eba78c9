//! The domain's OWN grant table (xen.git `xen/include/public/grant_table.h`, v1 entries;
//! `xen/include/public/memory.h` `XENMAPSPACE_grant_table`): granting other domains access to
//! our pages (blkfront's ring and data pages), as opposed to [`super::grant`], which maps
//! pages other domains granted to us.
//!
//! Where the table lives: Xen owns the frames; `XENMEM_add_to_physmap(XENMAPSPACE_grant_table,
//! idx = frame)` inserts frame `idx` at a gfn we choose. We use the gfns just above the
//! foreign-mapping slots of the grant window ([`TABLE_GFN_BASE`]): never populated (so no RAM
//! is orphaned), identity mapped by the boot page tables. init-xenstore-domain gives the
//! xenstore domain `max_grant_frames = 4`, grant v1 (512 entries per frame); Xen grows the
//! table on demand when a higher frame is mapped.
//!
//! Warm restart: Xen keeps the table (and every entry in it) across a restart of the kernel in
//! the same domain; [`map_frames`] re-inserts the same frames at the same gfns, which Xen
//! accepts (the frame is moved from its old gfn, here the same one), so entries granted before
//! the restart stay valid and visible.
//!
//! Allocation is stateless: a ref is free when its entry's type is `GTF_invalid` (Xen hands
//! out zeroed frames; [`end_access`] writes the type back to invalid). Refs 0..7 are reserved
//! for the toolstack (console, xenstore) and never handed out. Single-threaded use only (the
//! kernel has one vCPU and no preemption).

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering};

use super::abi::{self, DomainId, GrantRef};
use super::grant::SLOTS_MAX;
use super::hypercall::HypercallError;
use super::memory;
use crate::boot::{GRANT_WINDOW_BASE, GRANT_WINDOW_SIZE_BYTES};

/// Frames mapped at most (init-xenstore-domain's `max_grant_frames`).
pub const FRAMES_MAX: usize = 4;
/// v1 entries per 4 KiB frame.
pub const ENTRIES_PER_FRAME: usize = 4096 / core::mem::size_of::<abi::GrantEntryV1>();
/// First gfn of the table: right above the foreign-mapping slots of the grant window.
pub const TABLE_GFN_BASE: u64 = (GRANT_WINDOW_BASE >> 12) + SLOTS_MAX as u64;
const _: () = assert!(
    (SLOTS_MAX + FRAMES_MAX) as u64 * 4096 <= GRANT_WINDOW_SIZE_BYTES,
    "grant window too small for the foreign slots plus the own grant table"
);

/// Why a grant-table operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantTableError {
    /// `XENMEM_add_to_physmap` of frame 0 failed: no table at all.
    MapFailed(HypercallError),
    /// [`map_frames`] has not succeeded yet.
    NotMapped,
    /// Every entry of the mapped frames is in use.
    NoFreeEntry,
    /// The ref is reserved, outside the mapped frames, or not granted.
    BadRef(GrantRef),
    /// The peer still has the page mapped (`GTF_reading` / `GTF_writing`): access cannot be
    /// ended yet. Policy: the caller keeps the page (leaks it) or retries later.
    InUse(GrantRef),
}

impl core::fmt::Display for GrantTableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantTableError::MapFailed(error) => {
                write!(f, "mapping grant table frame 0 failed: {error}")
            }
            GrantTableError::NotMapped => f.write_str("grant table not mapped"),
            GrantTableError::NoFreeEntry => f.write_str("no free grant entry"),
            GrantTableError::BadRef(grant_ref) => write!(f, "bad grant ref {grant_ref}"),
            GrantTableError::InUse(grant_ref) => {
                write!(f, "grant ref {grant_ref} still mapped by the peer")
            }
        }
    }
}

/// Frames currently mapped (0 = not mapped).
static FRAMES_MAPPED: AtomicUsize = AtomicUsize::new(0);
/// Set once [`map_frames`] has run in this kernel instance.
static MAPPED: AtomicBool = AtomicBool::new(false);

/// Maps up to [`FRAMES_MAX`] frames of our grant table at [`TABLE_GFN_BASE`]. Idempotent
/// (also across warm restarts). Frame 0 must succeed; later frames are optional (a Xen that
/// allows fewer frames just gives fewer entries). Returns the number of frames mapped.
pub fn map_frames() -> Result<usize, GrantTableError> {
    let mut mapped = 0;
    for frame in 0..FRAMES_MAX {
        // SAFETY: the target gfn is in the grant window above every foreign slot (asserted at
        // compile time), never populated with RAM and used for nothing else; re-mapping the
        // same frame at the same gfn is what a warm restart does and only moves Xen's frame.
        let result = unsafe {
            memory::add_to_physmap(
                abi::XENMAPSPACE_GRANT_TABLE,
                frame as u64,
                TABLE_GFN_BASE + frame as u64,
            )
        };
        match result {
            Ok(()) => mapped += 1,
            Err(error) if frame == 0 => return Err(GrantTableError::MapFailed(error)),
            Err(error) => {
                log::info!(
                    "grant table: frame {frame} not mapped ({error}); using {mapped} frame(s)"
                );
                break;
            }
        }
    }
    FRAMES_MAPPED.store(mapped, Ordering::SeqCst);
    MAPPED.store(true, Ordering::SeqCst);
    Ok(mapped)
}

/// Number of usable entries (refs) in the mapped frames.
pub fn entries() -> usize {
    FRAMES_MAPPED.load(Ordering::SeqCst) * ENTRIES_PER_FRAME
}

/// Address of entry `grant_ref` (checked against the mapped frames).
fn entry_address(grant_ref: GrantRef) -> Result<u64, GrantTableError> {
    if !MAPPED.load(Ordering::SeqCst) {
        return Err(GrantTableError::NotMapped);
    }
    if grant_ref < abi::GNTTAB_NR_RESERVED_ENTRIES || grant_ref as usize >= entries() {
        return Err(GrantTableError::BadRef(grant_ref));
    }
    Ok((TABLE_GFN_BASE << 12) + u64::from(grant_ref) * 8)
}

fn flags_of(address: u64) -> &'static AtomicU16 {
    // SAFETY: `address` comes from `entry_address`: inside a mapped grant-table frame in the
    // identity map, 8-aligned (so the u16 `flags` at offset 0 is aligned). Xen updates the
    // flags concurrently (GTF_reading/writing), hence atomic access.
    unsafe { AtomicU16::from_ptr(address as *mut u16) }
}

/// Grants `domid` access to our frame `gfn` (read-only if `readonly`); returns the ref.
/// v1 protocol: `frame` and `domid` first, a write barrier, then `flags`, so Xen never sees a
/// valid entry with stale contents.
pub fn grant_access(
    domid: DomainId,
    gfn: u64,
    readonly: bool,
) -> Result<GrantRef, GrantTableError> {
    let frame = u32::try_from(gfn).map_err(|_| GrantTableError::NoFreeEntry)?;
    for grant_ref in abi::GNTTAB_NR_RESERVED_ENTRIES..entries() as GrantRef {
        let address = entry_address(grant_ref)?;
        let flags = flags_of(address);
        if flags.load(Ordering::SeqCst) & abi::GTF_TYPE_MASK != abi::GTF_INVALID {
            continue;
        }
        // SAFETY: as in `flags_of`; the entry is free (type invalid), so Xen does not use its
        // domid/frame fields until the flags below make it valid.
        unsafe {
            AtomicU16::from_ptr((address + 2) as *mut u16).store(domid, Ordering::Relaxed);
            AtomicU32::from_ptr((address + 4) as *mut u32).store(frame, Ordering::Relaxed);
        }
        core::sync::atomic::fence(Ordering::Release);
        let mut value = abi::GTF_PERMIT_ACCESS;
        if readonly {
            value |= abi::GTF_READONLY;
        }
        flags.store(value, Ordering::SeqCst);
        return Ok(grant_ref);
    }
    Err(GrantTableError::NoFreeEntry)
}

/// Ends the peer's access to `grant_ref`. Refused with [`GrantTableError::InUse`] while the
/// peer has it mapped (Xen sets `GTF_reading`/`GTF_writing` then); the entry is then left as it
/// is. Compare-and-swap, so a mapping that starts concurrently is never missed.
pub fn end_access(grant_ref: GrantRef) -> Result<(), GrantTableError> {
    let flags = flags_of(entry_address(grant_ref)?);
    let mut current = flags.load(Ordering::SeqCst);
    loop {
        if current & abi::GTF_TYPE_MASK == abi::GTF_INVALID {
            return Err(GrantTableError::BadRef(grant_ref));
        }
        if current & (abi::GTF_READING | abi::GTF_WRITING) != 0 {
            return Err(GrantTableError::InUse(grant_ref));
        }
        match flags.compare_exchange(current, 0, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Ok(()),
            Err(now) => current = now,
        }
    }
}

/// Whether `grant_ref` currently grants access to `gfn` for `domid` (validation of a warm
/// record before it is trusted).
pub fn is_granted(grant_ref: GrantRef, domid: DomainId, gfn: u64) -> bool {
    let Ok(address) = entry_address(grant_ref) else {
        return false;
    };
    let flags = flags_of(address).load(Ordering::SeqCst);
    // SAFETY: as in `grant_access`; plain reads of the entry's other fields.
    let (entry_domid, frame) = unsafe {
        (
            AtomicU16::from_ptr((address + 2) as *mut u16).load(Ordering::SeqCst),
            AtomicU32::from_ptr((address + 4) as *mut u32).load(Ordering::SeqCst),
        )
    };
    flags & abi::GTF_TYPE_MASK == abi::GTF_PERMIT_ACCESS
        && entry_domid == domid
        && u64::from(frame) == gfn
}
