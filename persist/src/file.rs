//! `FileDevice`: the hosted block device, a file (normally on tmpfs such as /dev/shm) accessed
//! with positioned reads and writes; `flush` is `fdatasync`. Compiled only with feature `std`.

extern crate std;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::device::{BlockDevice, check_range};
use crate::error::DeviceError;
use crate::limits::SECTOR_SIZE_BYTES;

/// A file used as a block device of a fixed number of sectors.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    sector_count: u64,
}

fn io(e: std::io::Error) -> DeviceError {
    DeviceError::Io {
        code: e.raw_os_error().unwrap_or(-1),
    }
}

impl FileDevice {
    /// Open (creating if needed) `path` and size it to `sector_count` sectors.
    pub fn create(path: &Path, sector_count: u64) -> Result<Self, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        file.set_len(sector_count * SECTOR_SIZE_BYTES as u64)
            .map_err(io)?;
        Ok(FileDevice { file, sector_count })
    }

    /// Open an existing file; its size (rounded down to sectors) is the device size.
    pub fn open(path: &Path) -> Result<Self, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(FileDevice {
            file,
            sector_count: len / SECTOR_SIZE_BYTES as u64,
        })
    }
}

impl BlockDevice for FileDevice {
    fn sector_count(&self) -> u64 {
        self.sector_count
    }
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let range = check_range(first_sector, buf.len(), self.sector_count)?;
        self.file.read_exact_at(buf, range.start as u64).map_err(io)
    }
    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        let range = check_range(first_sector, buf.len(), self.sector_count)?;
        self.file.write_all_at(buf, range.start as u64).map_err(io)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.file.sync_data().map_err(io)
    }
}
