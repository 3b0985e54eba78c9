//! `SimDevice`: a deterministic fault-injecting block device for crash tests.
//!
//! It keeps two images: `live` (what reads return) and `durable` (what survives a crash).
//! `flush` copies live to durable. A crash builds a new durable image from the sectors written
//! since the last flush according to a [`CrashMode`]: all lost, all kept, an arbitrary subset,
//! a subset with torn sectors (a prefix of the new bytes over the old ones), or with bit flips.
//! A crash can be armed to fire at the n-th device operation (each sector written counts as one
//! operation, each flush as one), so a test can crash after every single write, and before or
//! after every flush. All randomness comes from a seeded generator: same seed, same faults.

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use crate::device::{BlockDevice, check_range};
use crate::error::DeviceError;
use crate::limits::SECTOR_SIZE_BYTES;

/// Small deterministic PRNG (splitmix64), good enough for fault choice.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// What a crash does to the sectors written since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// None of them reach the durable image.
    DiscardUnflushed,
    /// All of them do (as if the crash came just before the flush completed).
    KeepUnflushed,
    /// Each one independently does or does not.
    RandomSubset,
    /// Random subset, and some kept sectors are torn (a random-length prefix is new).
    RandomSubsetTorn,
    /// Random subset with torn sectors, and some kept sectors get one flipped bit.
    RandomSubsetTornFlipped,
}

/// Counters of what the device was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub sectors_written: u64,
    pub sectors_read: u64,
    pub flushes: u64,
    pub operations: u64,
}

/// The fault-injecting device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    live: Vec<u8>,
    durable: Vec<u8>,
    unflushed: BTreeSet<u64>,
    rng: SimRng,
    crash_at_operation: Option<u64>,
    crashed: bool,
    stats: SimStats,
    last_write: Option<(u64, u64)>,
    high_water_sector: u64,
}

impl SimDevice {
    /// A zeroed device of `sector_count` sectors whose faults are drawn from `seed`.
    pub fn new(sector_count: u64, seed: u64) -> Self {
        let bytes = sector_count as usize * SECTOR_SIZE_BYTES;
        SimDevice {
            live: vec![0; bytes],
            durable: vec![0; bytes],
            unflushed: BTreeSet::new(),
            rng: SimRng::new(seed),
            crash_at_operation: None,
            crashed: false,
            stats: SimStats::default(),
            last_write: None,
            high_water_sector: 0,
        }
    }

    /// Arm a crash: the operation with index `operation` (counting from the current
    /// `stats().operations`, 0 = the very next one) fails with `Crashed` and is not performed;
    /// so are all later ones until [`SimDevice::crash`].
    pub fn arm_crash_after_operations(&mut self, operation: u64) {
        self.crash_at_operation = Some(self.stats.operations + operation);
    }

    /// Disarm a pending crash.
    pub fn disarm(&mut self) {
        self.crash_at_operation = None;
    }

    /// Whether an armed crash has fired.
    pub fn has_crashed(&self) -> bool {
        self.crashed
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Sectors written since the last flush.
    pub fn unflushed_sectors(&self) -> usize {
        self.unflushed.len()
    }

    /// Power cut: build the durable image as `mode` says, then restart with live = durable.
    pub fn crash(&mut self, mode: CrashMode) {
        let sectors: Vec<u64> = self.unflushed.iter().copied().collect();
        for sector in sectors {
            let range =
                sector as usize * SECTOR_SIZE_BYTES..(sector as usize + 1) * SECTOR_SIZE_BYTES;
            let keep = match mode {
                CrashMode::DiscardUnflushed => false,
                CrashMode::KeepUnflushed => true,
                _ => self.rng.chance(1, 2),
            };
            if !keep {
                continue;
            }
            let torn = matches!(
                mode,
                CrashMode::RandomSubsetTorn | CrashMode::RandomSubsetTornFlipped
            ) && self.rng.chance(1, 4);
            let new_len = if torn {
                self.rng.below(SECTOR_SIZE_BYTES as u64) as usize
            } else {
                SECTOR_SIZE_BYTES
            };
            let start = range.start;
            self.durable[start..start + new_len]
                .copy_from_slice(&self.live[start..start + new_len]);
            if mode == CrashMode::RandomSubsetTornFlipped && self.rng.chance(1, 8) {
                let bit = self.rng.below((SECTOR_SIZE_BYTES * 8) as u64) as usize;
                self.durable[start + bit / 8] ^= 1 << (bit % 8);
            }
        }
        self.unflushed.clear();
        self.live.copy_from_slice(&self.durable);
        self.crashed = false;
        self.crash_at_operation = None;
    }

    /// Flip one bit of the durable (and live) image: media corruption at rest.
    pub fn flip_bit(&mut self, byte_offset: u64, bit: u8) {
        let i = byte_offset as usize;
        self.durable[i] ^= 1 << (bit % 8);
        self.live[i] ^= 1 << (bit % 8);
    }

    /// (first sector, sector count) of the most recent `write_sectors` call.
    pub fn last_write(&self) -> Option<(u64, u64)> {
        self.last_write
    }

    /// Highest sector ever written.
    pub fn high_water_sector(&self) -> u64 {
        self.high_water_sector
    }

    /// The durable image.
    pub fn durable_image(&self) -> &[u8] {
        &self.durable
    }

    /// The random generator (tests draw their choices from it too, for one seed per run).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Count one operation; returns `Err(Crashed)` if the armed crash fires now.
    fn operation(&mut self) -> Result<(), DeviceError> {
        if self.crashed {
            return Err(DeviceError::Crashed);
        }
        if self.crash_at_operation == Some(self.stats.operations) {
            self.crashed = true;
            return Err(DeviceError::Crashed);
        }
        self.stats.operations += 1;
        Ok(())
    }
}

impl BlockDevice for SimDevice {
    fn sector_count(&self) -> u64 {
        (self.live.len() / SECTOR_SIZE_BYTES) as u64
    }
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        if self.crashed {
            return Err(DeviceError::Crashed);
        }
        let range = check_range(first_sector, buf.len(), self.sector_count())?;
        buf.copy_from_slice(&self.live[range]);
        self.stats.sectors_read += (buf.len() / SECTOR_SIZE_BYTES) as u64;
        Ok(())
    }
    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        check_range(first_sector, buf.len(), self.sector_count())?;
        let count = (buf.len() / SECTOR_SIZE_BYTES) as u64;
        self.last_write = Some((first_sector, count));
        if count > 0 {
            self.high_water_sector = self.high_water_sector.max(first_sector + count - 1);
        }
        for (i, chunk) in buf.chunks_exact(SECTOR_SIZE_BYTES).enumerate() {
            self.operation()?;
            let sector = first_sector + i as u64;
            let start = sector as usize * SECTOR_SIZE_BYTES;
            self.live[start..start + SECTOR_SIZE_BYTES].copy_from_slice(chunk);
            self.unflushed.insert(sector);
            self.stats.sectors_written += 1;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.operation()?;
        for &sector in &self.unflushed {
            let start = sector as usize * SECTOR_SIZE_BYTES;
            self.durable[start..start + SECTOR_SIZE_BYTES]
                .copy_from_slice(&self.live[start..start + SECTOR_SIZE_BYTES]);
        }
        self.unflushed.clear();
        self.stats.flushes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflushed_writes_are_lost_flushed_kept() {
        let mut d = SimDevice::new(8, 1);
        d.write_sectors(0, &[1u8; 512]).unwrap();
        d.flush().unwrap();
        d.write_sectors(1, &[2u8; 512]).unwrap();
        d.crash(CrashMode::DiscardUnflushed);
        let mut b = [0u8; 1024];
        d.read_sectors(0, &mut b).unwrap();
        assert!(b[..512].iter().all(|&x| x == 1));
        assert!(b[512..].iter().all(|&x| x == 0));
    }

    #[test]
    fn armed_crash_fires_mid_write() {
        let mut d = SimDevice::new(8, 1);
        d.arm_crash_after_operations(2);
        assert_eq!(d.write_sectors(0, &[3u8; 2048]), Err(DeviceError::Crashed));
        assert!(d.has_crashed());
        d.crash(CrashMode::KeepUnflushed);
        let mut b = [0u8; 2048];
        d.read_sectors(0, &mut b).unwrap();
        assert!(b[..1024].iter().all(|&x| x == 3));
        assert!(b[1024..].iter().all(|&x| x == 0));
    }

    #[test]
    fn same_seed_same_faults() {
        let run = |seed| {
            let mut d = SimDevice::new(64, seed);
            d.write_sectors(0, &[9u8; 64 * 512]).unwrap();
            d.crash(CrashMode::RandomSubsetTornFlipped);
            d.durable_image().to_vec()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
