//! The `BlockDevice` trait the log is written on, and the in-memory device.
//!
//! Contract: `write_sectors` may be reordered, lost, or torn by a crash until `flush` returns;
//! after `flush` returns `Ok`, every earlier write is durable. Reads see the latest writes.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::DeviceError;
use crate::limits::SECTOR_SIZE_BYTES;

/// A device of fixed-size sectors with a durability barrier.
pub trait BlockDevice {
    /// Bytes per sector. The log accepts only 512.
    fn sector_size(&self) -> u32 {
        SECTOR_SIZE_BYTES as u32
    }
    /// Number of sectors.
    fn sector_count(&self) -> u64;
    /// Read `buf.len() / 512` sectors starting at `first_sector`.
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Write `buf.len() / 512` sectors starting at `first_sector` (not durable until `flush`).
    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError>;
    /// Durability barrier: every write issued before is durable when this returns `Ok`.
    fn flush(&mut self) -> Result<(), DeviceError>;
}

impl<D: BlockDevice + ?Sized> BlockDevice for &mut D {
    fn sector_size(&self) -> u32 {
        (**self).sector_size()
    }
    fn sector_count(&self) -> u64 {
        (**self).sector_count()
    }
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        (**self).read_sectors(first_sector, buf)
    }
    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        (**self).write_sectors(first_sector, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        (**self).flush()
    }
}

/// Check that `len` bytes at `first_sector` fit a device of `sector_count` sectors; returns the
/// byte range.
pub(crate) fn check_range(
    first_sector: u64,
    len: usize,
    sector_count: u64,
) -> Result<core::ops::Range<usize>, DeviceError> {
    if len % SECTOR_SIZE_BYTES != 0 {
        return Err(DeviceError::Misaligned { len: len as u64 });
    }
    let count = (len / SECTOR_SIZE_BYTES) as u64;
    match first_sector.checked_add(count) {
        Some(end) if end <= sector_count => {}
        _ => {
            return Err(DeviceError::OutOfRange {
                first_sector,
                sector_count: count,
            });
        }
    }
    let start = first_sector as usize * SECTOR_SIZE_BYTES;
    Ok(start..start + len)
}

/// A RAM disk: writes are durable immediately (mode "RAM disk, no crash model").
#[derive(Debug, Clone)]
pub struct MemDevice {
    bytes: Vec<u8>,
}

impl MemDevice {
    /// A zero-filled device of `sector_count` sectors.
    pub fn new(sector_count: u64) -> Self {
        MemDevice {
            bytes: vec![0; sector_count as usize * SECTOR_SIZE_BYTES],
        }
    }
    /// The raw image (for inspection tools and tests).
    pub fn image(&self) -> &[u8] {
        &self.bytes
    }
    /// A device holding a copy of `image` (length rounded down to whole sectors).
    pub fn from_image(image: &[u8]) -> Self {
        let len = image.len() / SECTOR_SIZE_BYTES * SECTOR_SIZE_BYTES;
        MemDevice {
            bytes: image[..len].to_vec(),
        }
    }
}

impl BlockDevice for MemDevice {
    fn sector_count(&self) -> u64 {
        (self.bytes.len() / SECTOR_SIZE_BYTES) as u64
    }
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let range = check_range(first_sector, buf.len(), self.sector_count())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }
    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let range = check_range(first_sector, buf.len(), self.sector_count())?;
        self.bytes[range].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_device_round_trip_and_bounds() {
        let mut d = MemDevice::new(4);
        d.write_sectors(1, &[7u8; 1024]).unwrap();
        let mut buf = [0u8; 512];
        d.read_sectors(2, &mut buf).unwrap();
        assert_eq!(buf, [7u8; 512]);
        assert_eq!(
            d.write_sectors(3, &[0u8; 1024]),
            Err(DeviceError::OutOfRange {
                first_sector: 3,
                sector_count: 2
            })
        );
        assert_eq!(
            d.read_sectors(0, &mut [0u8; 100]),
            Err(DeviceError::Misaligned { len: 100 })
        );
    }
}
