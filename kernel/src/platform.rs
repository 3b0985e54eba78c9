//! The platform API the portable server core (`server/`, `no_std`) is plugged into.
//!
//! The server crate defines its own platform traits (`server/src/platform.rs`:
//! `EventChannels { bind_interdomain, notify, unbind }`, `RingMapper { map, unmap }`, `Clock`,
//! `LogSink`, and protocol's `RingMemory { load_acquire, store_release, read_data, write_data,
//! fence }`). The traits here mirror those names and shapes one-to-one on raw offsets and Xen
//! types; the mechanical adapter onto the server's traits is [`crate::service`] (see
//! docs/kernel.md, "The server in the kernel"), plus what only the kernel's main loop needs:
//! polling pending ports, waiting without spinning, and the console.
//!
//! Nothing here knows the xenstore protocol: ring layout and index arithmetic belong to
//! `protocol/`; this only gives bounded, volatile/atomic access to shared pages.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::xen::abi::{self, DomainId, EvtchnPort};
use crate::xen::evtchn::{self, EvtchnError};
use crate::xen::grant::{GrantError, GrantMapper, GrantMapping};
use crate::xen::{console, time};

/// Size of one shared ring page.
pub const PAGE_SIZE_BYTES: usize = 4096;

/// Why a platform call failed. Policy (the server's): a failure names one peer; that
/// connection is refused or marked broken, the server keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformError {
    /// Event-channel operation failed.
    Evtchn(EvtchnError),
    /// Grant mapping/unmapping failed.
    Grant(GrantError),
}

impl From<EvtchnError> for PlatformError {
    fn from(error: EvtchnError) -> Self {
        PlatformError::Evtchn(error)
    }
}

impl From<GrantError> for PlatformError {
    fn from(error: GrantError) -> Self {
        PlatformError::Grant(error)
    }
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlatformError::Evtchn(error) => write!(f, "event channel: {error}"),
            PlatformError::Grant(error) => write!(f, "grant: {error}"),
        }
    }
}

/// Access to one page of memory shared with another domain. Offsets are byte offsets in the
/// page; out-of-range access is a caller bug (assert). Never cached by the compiler.
pub trait RingMemory {
    /// Loads the 4-aligned u32 at `offset` with acquire ordering (a peer's index).
    fn load_acquire(&self, offset: usize) -> u32;
    /// Stores the 4-aligned u32 at `offset` with release ordering (publishing our index).
    fn store_release(&self, offset: usize, value: u32);
    /// Copies `out.len()` bytes starting at `offset` out of the page.
    fn read_data(&self, offset: usize, out: &mut [u8]);
    /// Copies `bytes` into the page at `offset`.
    fn write_data(&self, offset: usize, bytes: &[u8]);
    /// Full memory barrier (`mfence`).
    fn fence(&self);
}

/// Interdomain event channels plus the polling the main loop needs.
pub trait EventChannels {
    /// Binds a local port to `remote_port` of `domid` (unmasked); returns the local port.
    fn bind_interdomain(&mut self, domid: DomainId, remote_port: u32)
    -> Result<u32, PlatformError>;
    /// Signals the remote end of a bound local port.
    fn notify(&mut self, local_port: u32) -> Result<(), PlatformError>;
    /// Closes a bound local port.
    fn unbind(&mut self, local_port: u32);
    /// Hands every pending port to `handler` (each pending bit cleared first). Never blocks.
    fn poll(&mut self, handler: &mut dyn FnMut(EvtchnPort)) -> usize;
}

/// Mapping of guests' xenstore ring pages (grant ref 1, `GNTTAB_RESERVED_XENSTORE`).
pub trait RingMapper {
    /// The mapped page.
    type Memory: RingMemory;
    /// Maps the xenstore ring page that `domid` granted us.
    fn map(&mut self, domid: DomainId) -> Result<Self::Memory, PlatformError>;
    /// Unmaps a page obtained from [`RingMapper::map`].
    fn unmap(&mut self, memory: Self::Memory) -> Result<(), PlatformError>;
}

/// The operator console (PV console under Xen).
pub trait Console {
    /// Writes output; never blocks (drops and counts what does not fit).
    fn write(&self, bytes: &[u8]);
    /// Reads pending input; never blocks.
    fn read(&self, buffer: &mut [u8]) -> usize;
}

/// Monotonic time.
pub trait Clock {
    /// Nanoseconds on a monotonic clock (Xen system time: since host boot).
    fn now_ns(&self) -> u64;
}

/// Sleeping until there is work.
pub trait Idle {
    /// Blocks until an event channel is pending or `deadline_ns` (absolute, [`Clock`] time)
    /// passes. Returns at once if something is already pending. No busy waiting.
    fn wait(&self, deadline_ns: Option<u64>);
}

/// One 4 KiB page at a fixed identity-mapped address: a foreign ring mapped through the grant
/// window, or the domain's own `HVM_PARAM_STORE_PFN` page.
#[derive(Debug)]
pub struct SharedPage {
    address: u64,
}

impl SharedPage {
    /// The page at guest frame `gfn`.
    ///
    /// # Safety
    /// `gfn` must be populated (RAM, special page or live grant mapping), inside the identity
    /// map, not used as Rust data elsewhere, and stay so for the life of the returned value.
    pub unsafe fn from_gfn(gfn: u64) -> SharedPage {
        assert!(gfn < 0x14_0000, "gfn {gfn:#x} outside the identity map");
        SharedPage { address: gfn << 12 }
    }

    fn pointer(&self, offset: usize, length: usize) -> *mut u8 {
        assert!(
            offset
                .checked_add(length)
                .is_some_and(|end| end <= PAGE_SIZE_BYTES),
            "shared page access {offset}+{length} out of bounds"
        );
        (self.address as usize + offset) as *mut u8
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4), "unaligned index offset {offset}");
        // SAFETY: in bounds (checked by `pointer`) and 4-aligned; the page is mapped for the
        // life of `self` (constructor contract). Concurrently-updated ring indices must be
        // accessed atomically.
        unsafe { AtomicU32::from_ptr(self.pointer(offset, 4) as *mut u32) }
    }
}

impl RingMemory for SharedPage {
    fn load_acquire(&self, offset: usize) -> u32 {
        self.word(offset).load(Ordering::Acquire)
    }

    fn store_release(&self, offset: usize, value: u32) {
        self.word(offset).store(value, Ordering::Release)
    }

    fn read_data(&self, offset: usize, out: &mut [u8]) {
        let source = self.pointer(offset, out.len());
        for (index, byte) in out.iter_mut().enumerate() {
            // SAFETY: in bounds of the page (checked by `pointer`), which is mapped for the life
            // of `self`. Volatile: the peer writes concurrently.
            *byte = unsafe { core::ptr::read_volatile(source.add(index)) };
        }
    }

    fn write_data(&self, offset: usize, bytes: &[u8]) {
        let destination = self.pointer(offset, bytes.len());
        for (index, byte) in bytes.iter().enumerate() {
            // SAFETY: as for `read_data`.
            unsafe { core::ptr::write_volatile(destination.add(index), *byte) };
        }
    }

    fn fence(&self) {
        core::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// A guest's ring page mapped through the grant window.
#[derive(Debug)]
pub struct MappedRing {
    mapping: GrantMapping,
    page: SharedPage,
}

impl MappedRing {
    /// Guest frame where the page is mapped in our physmap.
    pub fn gfn(&self) -> u64 {
        self.mapping.gfn()
    }

    /// The grant handle (for diagnostics).
    pub fn handle(&self) -> u32 {
        self.mapping.handle
    }
}

impl RingMemory for MappedRing {
    fn load_acquire(&self, offset: usize) -> u32 {
        self.page.load_acquire(offset)
    }
    fn store_release(&self, offset: usize, value: u32) {
        self.page.store_release(offset, value)
    }
    fn read_data(&self, offset: usize, out: &mut [u8]) {
        self.page.read_data(offset, out)
    }
    fn write_data(&self, offset: usize, bytes: &[u8]) {
        self.page.write_data(offset, bytes)
    }
    fn fence(&self) {
        self.page.fence()
    }
}

/// The Xen implementation of every platform trait.
#[derive(Debug, Default)]
pub struct XenPlatform {
    grants: GrantMapper,
}

impl XenPlatform {
    pub fn new() -> Self {
        XenPlatform {
            grants: GrantMapper::new(),
        }
    }

    /// Keeps a grant-window slot reserved for good (a mapping of the previous run before a
    /// warm restart that could not be unmapped).
    pub fn reserve_grant_slot(&mut self, slot: usize) {
        self.grants.reserve(slot);
    }

    /// Live grant mappings.
    pub fn mapped_rings(&self) -> usize {
        self.grants.in_use()
    }
}

impl EventChannels for XenPlatform {
    fn bind_interdomain(
        &mut self,
        domid: DomainId,
        remote_port: u32,
    ) -> Result<u32, PlatformError> {
        let local = evtchn::bind_interdomain(domid, remote_port)?;
        evtchn::unmask(local)?;
        Ok(local)
    }

    fn notify(&mut self, local_port: u32) -> Result<(), PlatformError> {
        Ok(evtchn::send(local_port)?)
    }

    fn unbind(&mut self, local_port: u32) {
        if let Err(error) = evtchn::close(local_port) {
            log::warn!("closing event channel {local_port} failed: {error}");
        }
    }

    fn poll(&mut self, handler: &mut dyn FnMut(EvtchnPort)) -> usize {
        evtchn::take_pending(handler)
    }
}

impl RingMapper for XenPlatform {
    type Memory = MappedRing;

    fn map(&mut self, domid: DomainId) -> Result<MappedRing, PlatformError> {
        let mapping = self.grants.map(domid, abi::GNTTAB_RESERVED_XENSTORE)?;
        let page = SharedPage {
            address: mapping.address(),
        };
        Ok(MappedRing { mapping, page })
    }

    fn unmap(&mut self, memory: MappedRing) -> Result<(), PlatformError> {
        // The page view dies with `memory`; only the mapping is needed to unmap.
        let MappedRing { mapping, page: _ } = memory;
        match self.grants.unmap(mapping) {
            Ok(()) => Ok(()),
            Err((mapping, error)) => {
                // The slot stays reserved (reusing it could crash the domain): leak it.
                log::error!("unmap of {mapping:?} failed: {error}; window slot leaked");
                Err(error.into())
            }
        }
    }
}

impl Console for XenPlatform {
    fn write(&self, bytes: &[u8]) {
        console::write_bytes(bytes)
    }

    fn read(&self, buffer: &mut [u8]) -> usize {
        console::read_bytes(buffer)
    }
}

impl Clock for XenPlatform {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }
}

impl Idle for XenPlatform {
    fn wait(&self, deadline_ns: Option<u64>) {
        // The timer only bounds the sleep; VIRQ_TIMER must be bound for it to wake us.
        if let Some(deadline) = deadline_ns {
            let _ = time::set_timer(deadline);
        }
        // IF=0 here: an event arriving after this check leaves the upcall vector pending and
        // the `sti; hlt` pair returns at once.
        if !evtchn::any_pending() {
            crate::arch::wait_for_interrupt();
        }
    }
}
