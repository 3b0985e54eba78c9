//! The kernel heap: a `linked_list_allocator` over the largest free RAM range of the memory
//! map, above the kernel image.
//!
//! Free RAM = memory-map RAM ∩ [1 MiB, 4 GiB) (the identity map's RAM part) minus the kernel
//! image and the boot modules, optionally capped at the end of *populated* memory: under Xen
//! the map's RAM range runs up to `--maxmem` but only `--memory` MiB are populated (touching an
//! unpopulated gfn would crash the domain), so the caller passes the populated limit.
//! Everything else from start_info was copied out by [`crate::start_info`] and may be reused.

use linked_list_allocator::LockedHeap;

use crate::start_info::{BootInfo, MEMORY_TYPE_RAM};

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Lowest address the heap may use (below: real-mode area, loader data we do not track).
const LOW_MEMORY_END: u64 = 0x10_0000;
/// Highest address + 1 covered by the RAM part of the identity map.
const IDENTITY_MAP_RAM_END: u64 = 0x1_0000_0000;
/// Smallest heap we accept.
pub const HEAP_SIZE_MIN_BYTES: u64 = 256 * 1024;
/// Most free intervals tracked while carving the memory map.
const INTERVALS_MAX: usize = 32;

/// Why no heap could be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapError {
    /// The largest free range is smaller than [`HEAP_SIZE_MIN_BYTES`].
    TooSmall { largest_bytes: u64 },
}

impl core::fmt::Display for HeapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeapError::TooSmall { largest_bytes } => write!(
                f,
                "largest free RAM range is {largest_bytes} bytes, need {HEAP_SIZE_MIN_BYTES}"
            ),
        }
    }
}

/// The range given to the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapRange {
    pub start: u64,
    pub end: u64,
}

impl HeapRange {
    pub fn size_bytes(&self) -> u64 {
        self.end - self.start
    }
}

/// Subtracts `[cut_start, cut_end)` from every interval in `intervals`.
fn subtract(intervals: &mut [(u64, u64); INTERVALS_MAX], count: &mut usize, cut: (u64, u64)) {
    let mut index = 0;
    while index < *count {
        let (start, end) = intervals[index];
        if cut.1 <= start || cut.0 >= end {
            index += 1;
            continue;
        }
        let left = (start, cut.0.max(start));
        let right = (cut.1.min(end), end);
        // Replace this interval by its non-empty remainders.
        intervals[index] = intervals[*count - 1];
        *count -= 1;
        for piece in [left, right] {
            if piece.1 > piece.0 && *count < INTERVALS_MAX {
                intervals[*count] = piece;
                *count += 1;
            }
        }
        // The swapped-in interval (and the new pieces) are examined in later iterations; the
        // pieces cannot intersect `cut` again, so the loop terminates.
    }
}

/// Chooses the heap range from the memory map. Pure: unit-testable reasoning, no side effects.
pub fn choose_range(
    boot: &BootInfo,
    kernel_image: (u64, u64),
    populated_end: Option<u64>,
) -> Result<HeapRange, HeapError> {
    let mut intervals = [(0u64, 0u64); INTERVALS_MAX];
    let mut count = 0;
    let ceiling = populated_end.unwrap_or(u64::MAX).min(IDENTITY_MAP_RAM_END);
    for range in boot
        .memory_map()
        .iter()
        .filter(|r| r.memory_type == MEMORY_TYPE_RAM)
    {
        let start = range.address.max(LOW_MEMORY_END);
        let end = range.end().min(ceiling);
        if end > start && count < INTERVALS_MAX {
            intervals[count] = (start, end);
            count += 1;
        }
    }
    subtract(&mut intervals, &mut count, kernel_image);
    for module in boot.modules() {
        subtract(
            &mut intervals,
            &mut count,
            (module.address, module.address + module.size_bytes),
        );
    }
    // Page-align and pick the largest.
    let mut best = HeapRange { start: 0, end: 0 };
    for &(start, end) in &intervals[..count] {
        let start = (start + 0xFFF) & !0xFFF;
        let end = end & !0xFFF;
        if end > start && end - start > best.size_bytes() {
            best = HeapRange { start, end };
        }
    }
    if best.size_bytes() < HEAP_SIZE_MIN_BYTES {
        return Err(HeapError::TooSmall {
            largest_bytes: best.size_bytes(),
        });
    }
    Ok(best)
}

/// Hands `range` to the global allocator. Must be called exactly once.
pub fn init(range: HeapRange) {
    let mut heap = ALLOCATOR.lock();
    assert!(heap.size() == 0, "heap initialised twice");
    // SAFETY: `range` is RAM from the memory map, identity mapped, page aligned, disjoint from
    // the kernel image and modules (see `choose_range`) and below the populated limit; nothing
    // else in the kernel uses it, and this runs once (asserted above).
    unsafe { heap.init(range.start as *mut u8, range.size_bytes() as usize) };
}

/// (used, free) bytes of the heap.
pub fn usage() -> (usize, usize) {
    let heap = ALLOCATOR.lock();
    (heap.used(), heap.free())
}

/// A quick self-check: allocate, write, read back, free. Returns the bytes used afterwards.
pub fn self_test() -> Result<usize, &'static str> {
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    let (used_before, _) = usage();
    {
        let mut numbers: Vec<u64> = Vec::with_capacity(4096);
        for index in 0..4096u64 {
            numbers.push(index * 3);
        }
        if numbers
            .iter()
            .enumerate()
            .any(|(index, value)| *value != index as u64 * 3)
        {
            return Err("vector contents corrupted");
        }
        let mut map = BTreeMap::new();
        for index in 0..256u32 {
            map.insert(index, alloc::format!("node-{index}"));
        }
        if map.get(&255).map(|s| s.as_str()) != Some("node-255") {
            return Err("map contents corrupted");
        }
        let big: Vec<u8> = alloc::vec![0xA5; 1 << 20];
        if big.iter().any(|b| *b != 0xA5) {
            return Err("1 MiB block corrupted");
        }
    }
    let (used_after, _) = usage();
    if used_after != used_before {
        return Err("memory leaked by the self-test");
    }
    Ok(used_after)
}
