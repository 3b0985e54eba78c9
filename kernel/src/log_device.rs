//! Block devices the server's log can live on: the kernel's [`LogDevice`] (any
//! `persist::BlockDevice`, boxed, so the server type does not change with the device) and
//! [`RamDevice`], a region of the stub domain's own RAM.
//!
//! The RAM device (`--log-device=ram:<KiB>`) is carved from the top of the heap range at
//! cold boot, excluded from the heap, and recorded in `.warm`; a warm restart neither zeroes
//! nor reuses it, so the log on it survives panics and the shell's `restart` (not a
//! destruction of the domain). It is the way to test warm restart before blkfront exists and
//! a production option for surviving panics before (or without) dom0's RAM disk.
//!
//! `flush` is a full fence: the memory is the durable medium. Sector size 512 bytes.

use alloc::boxed::Box;
use core::fmt;

use xenstore_persist::{BlockDevice, DeviceError};

/// Sector size of the RAM device.
const SECTOR_BYTES: u64 = 512;

/// The log's device in the kernel: the RAM device now, `crate::blkfront::Blkfront` once dom0
/// attaches its RAM disk (see `service::on_disk_attached`).
pub struct LogDevice(Box<dyn BlockDevice>);

impl LogDevice {
    /// Wraps any block device.
    pub fn new(device: impl BlockDevice + 'static) -> LogDevice {
        LogDevice(Box::new(device))
    }
}

impl fmt::Debug for LogDevice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("LogDevice")
            .field("sectors", &self.0.sector_count())
            .finish_non_exhaustive()
    }
}

impl BlockDevice for LogDevice {
    fn sector_size(&self) -> u32 {
        self.0.sector_size()
    }
    fn sector_count(&self) -> u64 {
        self.0.sector_count()
    }
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.0.read_sectors(first_sector, buf)
    }
    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.0.write_sectors(first_sector, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.0.flush()
    }
}

/// A log device over `[base, base + size)` of our own RAM.
#[derive(Debug)]
pub struct RamDevice {
    base: u64,
    sectors: u64,
}

impl RamDevice {
    /// The device over `size_bytes` at `base` (rounded down to whole sectors).
    ///
    /// # Safety
    /// The range must be populated RAM inside the identity map, excluded from the heap and
    /// from every other use, for the life of the domain (warm restarts included), and only
    /// one `RamDevice` may exist for it at a time.
    pub unsafe fn new(base: u64, size_bytes: u64) -> RamDevice {
        RamDevice {
            base,
            sectors: size_bytes / SECTOR_BYTES,
        }
    }

    fn range(&self, first_sector: u64, length: usize) -> Result<*mut u8, DeviceError> {
        let length = length as u64;
        if !length.is_multiple_of(SECTOR_BYTES) {
            return Err(DeviceError::Misaligned { len: length });
        }
        let sectors = length / SECTOR_BYTES;
        if first_sector
            .checked_add(sectors)
            .is_none_or(|end| end > self.sectors)
        {
            return Err(DeviceError::OutOfRange {
                first_sector,
                sector_count: sectors,
            });
        }
        Ok((self.base + first_sector * SECTOR_BYTES) as *mut u8)
    }
}

impl BlockDevice for RamDevice {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let source = self.range(first_sector, buf.len())?;
        // SAFETY: `range` checked the bytes lie inside the device, which is ours alone
        // (constructor contract) and never overlaps a Rust object such as `buf`.
        unsafe { core::ptr::copy_nonoverlapping(source, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let destination = self.range(first_sector, buf.len())?;
        // SAFETY: as for `read_sectors`.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), destination, buf.len()) };
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}
