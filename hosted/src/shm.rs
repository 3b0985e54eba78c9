//! A ring page in a shared-memory file (`mmap(MAP_SHARED)`), the hosted stand-in for a guest's
//! granted xenstore page. The simulated guest ([`crate::guest`]) creates and maps the file; the
//! daemon maps the same file when the domain is introduced.
//!
//! This is the one place in the hosted crate with `unsafe` for memory: every access goes through
//! a pointer into a live 4096-byte mapping owned by [`SharedRingFile`].

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use xenstore_protocol::limits::{RING_PAGE_BYTES, RING_SIZE_BYTES};
use xenstore_server::ring::{DataArea, Field, RingMemory};

/// A mapped 4096-byte ring file.
#[derive(Debug)]
pub struct SharedRingFile {
    base: NonNull<u8>,
}

impl SharedRingFile {
    /// Maps `path`, creating it (zero-filled, 4096 bytes) when `create` is set.
    pub fn map(path: &Path, create: bool) -> io::Result<SharedRingFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < RING_PAGE_BYTES as u64 {
            if !create {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ring file shorter than a page",
                ));
            }
            file.set_len(RING_PAGE_BYTES as u64)?;
        }
        // SAFETY: mapping a regular file we hold open, length 4096 (checked/extended above),
        // with a null hint; the kernel picks the address. The result is checked for MAP_FAILED.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RING_PAGE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(pointer.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedRingFile { base })
    }

    fn word(&self, field: Field) -> &AtomicU32 {
        let offset = field.offset();
        assert!(offset % 4 == 0 && offset + 4 <= RING_PAGE_BYTES);
        // SAFETY: `base` points to a live, page-aligned 4096-byte mapping for the lifetime of
        // `self`; `offset` is 4-aligned and in bounds (asserted). AtomicU32 has the layout of
        // u32, and all concurrent access from the peer process is through 32-bit atomic or
        // plain aligned accesses, which x86 performs untorn.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn area_range(area: DataArea, offset: usize, len: usize) -> (usize, usize) {
        let offset = offset.min(RING_SIZE_BYTES);
        let len = len.min(RING_SIZE_BYTES - offset);
        (area.offset() + offset, len)
    }
}

impl Drop for SharedRingFile {
    fn drop(&mut self) {
        // SAFETY: `base` came from a successful mmap of RING_PAGE_BYTES and is unmapped once;
        // no reference derived from it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), RING_PAGE_BYTES);
        }
    }
}

impl RingMemory for SharedRingFile {
    fn load_acquire(&self, field: Field) -> u32 {
        self.word(field).load(Ordering::Acquire)
    }
    fn store_release(&self, field: Field, value: u32) {
        self.word(field).store(value, Ordering::Release);
    }
    fn read_data(&self, area: DataArea, offset: usize, out: &mut [u8]) {
        let (start, len) = Self::area_range(area, offset, out.len());
        for (index, byte) in out[..len].iter_mut().enumerate() {
            // SAFETY: start + len <= 2048 <= 4096 (clamped by area_range), inside the live
            // mapping; volatile because the peer writes concurrently.
            *byte = unsafe { std::ptr::read_volatile(self.base.as_ptr().add(start + index)) };
        }
    }
    fn write_data(&self, area: DataArea, offset: usize, bytes: &[u8]) {
        let (start, len) = Self::area_range(area, offset, bytes.len());
        for (index, byte) in bytes[..len].iter().enumerate() {
            // SAFETY: as in read_data: in bounds of the live mapping; volatile for the peer.
            unsafe { std::ptr::write_volatile(self.base.as_ptr().add(start + index), *byte) };
        }
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}
