//! Foreign grant mapping (xen.git `xen/include/public/grant_table.h`, `GNTTABOP_map_grant_ref`
//! / `GNTTABOP_unmap_grant_ref`) into a reserved, never-populated guest-physical window.
//!
//! For an HVM/PVH caller `host_addr` is a guest-physical address where Xen inserts the foreign
//! frame. Xen orphans RAM at that gfn and crashes the domain if the gfn already holds a
//! foreign mapping, so the window ([`crate::boot::GRANT_WINDOW_BASE`], above all RAM and
//! identity mapped by the boot page tables) is managed by a slot bitmap: a slot is reused only
//! after a successful unmap.
//!
//! Every live mapping is also recorded in the `.warm` section ([`crate::warm`]): after a warm
//! restart the mappings are still in place in Xen while the bitmap is fresh, so the warm boot
//! unmaps them all ([`unmap_raw`]) before the server maps rings again. Slots are therefore
//! allocated below [`crate::warm::GRANT_RECORDS_MAX`] only.

use alloc::boxed::Box;

use super::abi::{self, DomainId, GnttabMapGrantRef, GnttabUnmapGrantRef, GrantHandle, GrantRef};
use super::hypercall::{self, HypercallError};
use crate::boot::{GRANT_WINDOW_BASE, GRANT_WINDOW_SIZE_BYTES};

/// Mapping slots managed (init-xenstore-domain grants 128 maptrack frames = 32768 entries).
pub const SLOTS_MAX: usize = 32768;
const _: () = assert!((SLOTS_MAX as u64) * 4096 <= GRANT_WINDOW_SIZE_BYTES);

/// Why a grant could not be mapped or unmapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// Every slot of the window is in use.
    WindowFull,
    /// The hypercall itself failed.
    Hypercall(HypercallError),
    /// Xen reported a `GNTST_*` status for this entry (policy: the peer's grant is bad; the
    /// server refuses the connection — e.g. INTRODUCE fails — rather than retrying blindly).
    Status(i16),
}

impl core::fmt::Display for GrantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantError::WindowFull => write!(f, "grant window full ({SLOTS_MAX} mappings)"),
            GrantError::Hypercall(error) => write!(f, "grant_table_op failed: {error}"),
            GrantError::Status(status) => {
                write!(
                    f,
                    "grant status {status} ({})",
                    abi::grant_status_name(*status)
                )
            }
        }
    }
}

/// A live foreign mapping of one page.
#[derive(Debug, PartialEq, Eq)]
pub struct GrantMapping {
    pub domain: DomainId,
    pub grant_ref: GrantRef,
    pub handle: GrantHandle,
    slot: usize,
}

impl GrantMapping {
    /// Guest-physical (= linear, identity map) address of the mapped page.
    pub fn address(&self) -> u64 {
        GRANT_WINDOW_BASE + self.slot as u64 * 4096
    }

    /// Guest frame number of the mapped page.
    pub fn gfn(&self) -> u64 {
        self.address() >> 12
    }
}

/// Owner of the grant window.
#[derive(Debug)]
pub struct GrantMapper {
    used: Box<[u64; SLOTS_MAX / 64]>,
    in_use: usize,
}

impl Default for GrantMapper {
    fn default() -> Self {
        Self::new()
    }
}

impl GrantMapper {
    pub fn new() -> Self {
        GrantMapper {
            used: Box::new([0; SLOTS_MAX / 64]),
            in_use: 0,
        }
    }

    /// Number of live mappings.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Marks `slot` as in use for good (a mapping left by the previous run that could not be
    /// unmapped: reusing its slot could crash the domain).
    pub fn reserve(&mut self, slot: usize) {
        let (word, bit) = (slot / 64, slot % 64);
        if self.used[word] & (1 << bit) == 0 {
            self.used[word] |= 1 << bit;
            self.in_use += 1;
        }
    }

    fn allocate_slot(&mut self) -> Option<usize> {
        let recorded_words = crate::warm::GRANT_RECORDS_MAX.min(SLOTS_MAX) / 64;
        for (word_index, word) in self.used.iter_mut().take(recorded_words).enumerate() {
            if *word != u64::MAX {
                let bit = (!*word).trailing_zeros() as usize;
                *word |= 1 << bit;
                self.in_use += 1;
                return Some(word_index * 64 + bit);
            }
        }
        None
    }

    fn free_slot(&mut self, slot: usize) {
        let (word, bit) = (slot / 64, slot % 64);
        assert!(
            self.used[word] & (1 << bit) != 0,
            "grant slot {slot} freed twice"
        );
        self.used[word] &= !(1 << bit);
        self.in_use -= 1;
    }

    /// Maps `grant_ref` of `domain` (normally [`abi::GNTTAB_RESERVED_XENSTORE`]) read-write.
    pub fn map(
        &mut self,
        domain: DomainId,
        grant_ref: GrantRef,
    ) -> Result<GrantMapping, GrantError> {
        let slot = self.allocate_slot().ok_or(GrantError::WindowFull)?;
        let mut argument = GnttabMapGrantRef {
            host_addr: GRANT_WINDOW_BASE + slot as u64 * 4096,
            flags: abi::GNTMAP_HOST_MAP,
            ref_: grant_ref,
            dom: domain,
            status: 0,
            handle: 0,
            dev_bus_addr: 0,
        };
        // SAFETY: one live `gnttab_map_grant_ref`, count 1; `host_addr` is a window slot that
        // holds nothing (never populated, and slots are only reused after a successful unmap).
        let result = unsafe {
            hypercall::call3(
                abi::HYPERVISOR_GRANT_TABLE_OP,
                u64::from(abi::GNTTABOP_MAP_GRANT_REF),
                &mut argument as *mut GnttabMapGrantRef as u64,
                1,
            )
        };
        if let Err(error) = hypercall::check(result) {
            self.free_slot(slot);
            return Err(GrantError::Hypercall(error));
        }
        if argument.status != abi::GNTST_OKAY {
            self.free_slot(slot);
            return Err(GrantError::Status(argument.status));
        }
        crate::warm::note_grant_mapped(slot, domain, grant_ref, argument.handle);
        Ok(GrantMapping {
            domain,
            grant_ref,
            handle: argument.handle,
            slot,
        })
    }

    /// Unmaps `mapping`. On failure the slot stays reserved (reusing it could crash the domain)
    /// and the mapping is returned with the error.
    pub fn unmap(&mut self, mapping: GrantMapping) -> Result<(), (GrantMapping, GrantError)> {
        if let Err(error) = unmap_raw(mapping.slot, mapping.handle) {
            return Err((mapping, error));
        }
        crate::warm::note_grant_unmapped(mapping.slot);
        self.free_slot(mapping.slot);
        Ok(())
    }
}

/// `GNTTABOP_unmap_grant_ref` of the mapping in window slot `slot` with `handle` (also used by
/// the warm boot for mappings of the previous run, which no `GrantMapping` describes).
pub fn unmap_raw(slot: usize, handle: GrantHandle) -> Result<(), GrantError> {
    assert!(slot < SLOTS_MAX, "grant slot {slot} outside the window");
    let mut argument = GnttabUnmapGrantRef {
        host_addr: GRANT_WINDOW_BASE + slot as u64 * 4096,
        dev_bus_addr: 0,
        handle,
        status: 0,
        pad: 0,
    };
    // SAFETY: one live `gnttab_unmap_grant_ref` naming a mapping we made (this run's, or the
    // previous run's recorded in `.warm`); after success nobody accesses the page: a
    // `GrantMapping` is consumed by value, and after a warm restart no Rust value refers to
    // the previous run's mappings.
    let result = unsafe {
        hypercall::call3(
            abi::HYPERVISOR_GRANT_TABLE_OP,
            u64::from(abi::GNTTABOP_UNMAP_GRANT_REF),
            &mut argument as *mut GnttabUnmapGrantRef as u64,
            1,
        )
    };
    hypercall::check(result).map_err(GrantError::Hypercall)?;
    if argument.status != abi::GNTST_OKAY {
        return Err(GrantError::Status(argument.status));
    }
    Ok(())
}
