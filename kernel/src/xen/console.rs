//! The PV console ring (xen.git `xen/include/public/io/console.h`), whose page and event
//! channel the domain builder publishes in `HVM_PARAM_CONSOLE_PFN` / `HVM_PARAM_CONSOLE_EVTCHN`
//! (the page is a special page, already populated: we only access it through the identity map).
//!
//! Output never blocks: bytes that do not fit into the free part of `out` are dropped and
//! counted ([`lost_bytes`]), because xenconsoled may not be running yet — or ever — while the
//! xenstore domain boots (it is started after xenstore is up). An inconsistent ring (producer
//! more than a ring ahead of the consumer, i.e. a corrupt or hostile backend) is treated as
//! full.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::abi::{self, XENCONS_IN_SIZE, XENCONS_OUT_SIZE, XenconsInterface};
use super::hypercall::HypercallError;
use super::{evtchn, hvm};

static RING: AtomicPtr<XenconsInterface> = AtomicPtr::new(core::ptr::null_mut());
static PORT: AtomicU32 = AtomicU32::new(0);
static LOST_BYTES: AtomicU64 = AtomicU64::new(0);
static WRITTEN_BYTES: AtomicU64 = AtomicU64::new(0);
static WRITING: AtomicBool = AtomicBool::new(false);

/// Where the console lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLocation {
    pub gfn: u64,
    pub port: u32,
}

/// Reads the console location from the HVM params and starts using the ring.
/// Requires shared_info (the port is unmasked for input notifications).
pub fn init() -> Result<ConsoleLocation, HypercallError> {
    let gfn = hvm::get_param(abi::HVM_PARAM_CONSOLE_PFN)?;
    let port = hvm::get_param(abi::HVM_PARAM_CONSOLE_EVTCHN)? as u32;
    if gfn == 0 || gfn >= 0x10_0000 {
        // Not below 4 GiB: outside our identity map. Treat as absent.
        return Err(HypercallError(abi::XEN_ENOENT));
    }
    PORT.store(port, Ordering::SeqCst);
    RING.store((gfn << 12) as *mut XenconsInterface, Ordering::SeqCst);
    Ok(ConsoleLocation { gfn, port })
}

/// Whether output goes to the ring.
pub fn active() -> bool {
    !RING.load(Ordering::Acquire).is_null()
}

/// The console's event channel port (0 before [`init`]).
pub fn port() -> u32 {
    PORT.load(Ordering::Relaxed)
}

/// Bytes dropped because the ring was full.
pub fn lost_bytes() -> u64 {
    LOST_BYTES.load(Ordering::Relaxed)
}

/// Bytes placed into the ring.
pub fn written_bytes() -> u64 {
    WRITTEN_BYTES.load(Ordering::Relaxed)
}

fn index(ring: *mut XenconsInterface, field: usize) -> &'static AtomicU32 {
    // SAFETY: `ring` is the console page (identity mapped, lives forever); `field` is the
    // offset of one of the 4-aligned u32 indices, which the backend updates concurrently.
    unsafe { AtomicU32::from_ptr(ring.wrapping_byte_add(field) as *mut u32) }
}

/// Copies as much of `bytes` as fits into the output ring and notifies the backend; never
/// waits. No-op before [`init`]. Re-entrant calls (from a panic inside a write) are dropped.
pub fn write_bytes(bytes: &[u8]) {
    let ring = RING.load(Ordering::Acquire);
    if ring.is_null() || bytes.is_empty() {
        return;
    }
    if WRITING.swap(true, Ordering::Acquire) {
        LOST_BYTES.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        return;
    }
    let consumer =
        index(ring, core::mem::offset_of!(XenconsInterface, out_cons)).load(Ordering::Acquire);
    let producer_index = index(ring, core::mem::offset_of!(XenconsInterface, out_prod));
    let producer = producer_index.load(Ordering::Relaxed);
    let used = producer.wrapping_sub(consumer);
    // `used` > size means inconsistent indices: treat as full.
    let free = XENCONS_OUT_SIZE.saturating_sub(used);
    let take = (bytes.len() as u32).min(free);
    let out = ring.wrapping_byte_add(core::mem::offset_of!(XenconsInterface, out)) as *mut u8;
    for (offset, &byte) in bytes[..take as usize].iter().enumerate() {
        let slot = producer.wrapping_add(offset as u32) & (XENCONS_OUT_SIZE - 1);
        // SAFETY: `slot` < XENCONS_OUT_SIZE, so the write stays inside `out[]` of the mapped
        // console page; the backend only reads slots between out_cons and out_prod, and these
        // are beyond out_prod until the release store below publishes them.
        unsafe { core::ptr::write_volatile(out.add(slot as usize), byte) };
    }
    if take > 0 {
        producer_index.store(producer.wrapping_add(take), Ordering::Release);
        WRITTEN_BYTES.fetch_add(u64::from(take), Ordering::Relaxed);
        if super::hypercall::ready() {
            let _ = evtchn::send(port());
        }
    }
    if (take as usize) < bytes.len() {
        LOST_BYTES.fetch_add((bytes.len() - take as usize) as u64, Ordering::Relaxed);
    }
    WRITING.store(false, Ordering::Release);
}

/// Reads available input bytes (backend → guest) into `buffer`; returns how many. Never waits.
pub fn read_bytes(buffer: &mut [u8]) -> usize {
    let ring = RING.load(Ordering::Acquire);
    if ring.is_null() {
        return 0;
    }
    let consumer_index = index(ring, core::mem::offset_of!(XenconsInterface, in_cons));
    let producer =
        index(ring, core::mem::offset_of!(XenconsInterface, in_prod)).load(Ordering::Acquire);
    let consumer = consumer_index.load(Ordering::Relaxed);
    let available = producer.wrapping_sub(consumer);
    if available > XENCONS_IN_SIZE {
        // Inconsistent indices from the backend: drop the input and resynchronise.
        consumer_index.store(producer, Ordering::Release);
        return 0;
    }
    let take = available.min(buffer.len() as u32);
    let input = ring.wrapping_byte_add(core::mem::offset_of!(XenconsInterface, in_)) as *const u8;
    for (offset, slot_byte) in buffer[..take as usize].iter_mut().enumerate() {
        let slot = consumer.wrapping_add(offset as u32) & (XENCONS_IN_SIZE - 1);
        // SAFETY: `slot` < XENCONS_IN_SIZE: inside `in[]` of the mapped page; bytes between
        // in_cons and in_prod (acquire-loaded above) are published by the backend.
        *slot_byte = unsafe { core::ptr::read_volatile(input.add(slot as usize)) };
    }
    if take > 0 {
        consumer_index.store(consumer.wrapping_add(take), Ordering::Release);
        let _ = evtchn::send(port());
    }
    take as usize
}

/// Exercises the never-blocking output path on a private zeroed page (no Xen needed; run by
/// the smoke test under plain QEMU): overfill, check drop accounting, consume, check wrap.
/// Must run while no real console is attached. Restores the detached state afterwards.
pub fn self_test_on_private_page() -> Result<(), &'static str> {
    use alloc::alloc::{Layout, alloc_zeroed, dealloc};
    if !RING.load(Ordering::Acquire).is_null() {
        return Err("a real console is attached");
    }
    let layout = Layout::from_size_align(4096, 4096).map_err(|_| "layout")?;
    // SAFETY: non-zero-sized layout.
    let page = unsafe { alloc_zeroed(layout) };
    if page.is_null() {
        return Err("out of memory");
    }
    let ring = page as *mut XenconsInterface;
    RING.store(ring, Ordering::SeqCst);
    let result = (|| {
        let message = [b'x'; 3000];
        write_bytes(&message);
        let out_prod = core::mem::offset_of!(XenconsInterface, out_prod);
        let out_cons = core::mem::offset_of!(XenconsInterface, out_cons);
        if index(ring, out_prod).load(Ordering::Acquire) != XENCONS_OUT_SIZE {
            return Err("producer did not stop at a full ring");
        }
        if lost_bytes() != 3000 - u64::from(XENCONS_OUT_SIZE) {
            return Err("dropped bytes not counted");
        }
        // The backend consumes 1000 bytes; the next write wraps around the ring end.
        index(ring, out_cons).store(1000, Ordering::Release);
        write_bytes(b"wrap-around");
        if index(ring, out_prod).load(Ordering::Acquire) != XENCONS_OUT_SIZE + 11 {
            return Err("producer did not advance after consumption");
        }
        let out = ring.wrapping_byte_add(core::mem::offset_of!(XenconsInterface, out)) as *const u8;
        // SAFETY: offsets 0..11 are inside `out[]` of the private page.
        let wrapped = unsafe { core::slice::from_raw_parts(out, 11) };
        if wrapped != b"wrap-around" {
            return Err("wrapped bytes not at the ring start");
        }
        // A corrupt backend (consumer far behind) must read as full, not as huge free space.
        index(ring, out_cons).store(0, Ordering::Release);
        let before = lost_bytes();
        write_bytes(b"z");
        if lost_bytes() != before + 1 {
            return Err("inconsistent indices not treated as full");
        }
        Ok(())
    })();
    RING.store(core::ptr::null_mut(), Ordering::SeqCst);
    LOST_BYTES.store(0, Ordering::Relaxed);
    WRITTEN_BYTES.store(0, Ordering::Relaxed);
    // SAFETY: `page` came from `alloc_zeroed(layout)` and is no longer referenced (RING reset).
    unsafe { dealloc(page, layout) };
    result
}
