//! Parsing of the PVH start-of-day structure `struct hvm_start_info` (xen.git
//! `xen/include/public/arch-x86/hvm/start_info.h`) into an owned [`BootInfo`].
//!
//! Everything the loader hands over is copied out at once (command line, memory map, module
//! list) into bounded fixed-size arrays, so later code never touches loader memory again and
//! the heap may reuse it — except module *contents*, whose ranges are kept as reserved.
//! Contract: bad input (wrong magic, absurd counts) yields a [`StartInfoError`], never a panic.

use crate::xen::abi::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE,
};

/// Longest command line kept (init-xenstore-domain caps its own at 511 bytes).
pub const COMMAND_LINE_LENGTH_MAX: usize = 1024;
/// Most memory-map entries kept.
pub const MEMORY_MAP_ENTRIES_MAX: usize = 64;
/// Most modules kept.
pub const MODULES_MAX: usize = 8;

/// e820-style memory type of usable RAM.
pub const MEMORY_TYPE_RAM: u32 = 1;

/// Why the start-info structure was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    /// `ebx` was 0 or pointed above 4 GiB.
    BadAddress(u64),
    /// The magic field was not `XEN_HVM_START_MAGIC_VALUE`.
    BadMagic(u32),
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::BadAddress(a) => write!(f, "start_info address {a:#x} is invalid"),
            StartInfoError::BadMagic(m) => {
                write!(
                    f,
                    "start_info magic {m:#x} != {XEN_HVM_START_MAGIC_VALUE:#x}"
                )
            }
        }
    }
}

/// One RAM / reserved range of the memory map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryRange {
    pub address: u64,
    pub size_bytes: u64,
    pub memory_type: u32,
}

impl MemoryRange {
    /// First address past the range (saturating).
    pub fn end(&self) -> u64 {
        self.address.saturating_add(self.size_bytes)
    }
}

/// One boot module (init-xenstore-domain's `--ramdisk` is module 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Module {
    pub address: u64,
    pub size_bytes: u64,
}

/// Everything we keep from `hvm_start_info` (cloned into `.warm` for warm restarts).
#[derive(Debug, Clone)]
pub struct BootInfo {
    pub start_info_address: u64,
    pub version: u32,
    pub flags: u32,
    command_line: [u8; COMMAND_LINE_LENGTH_MAX],
    command_line_length: usize,
    pub command_line_truncated: bool,
    memory_map: [MemoryRange; MEMORY_MAP_ENTRIES_MAX],
    memory_map_length: usize,
    pub memory_map_truncated: bool,
    modules: [Module; MODULES_MAX],
    modules_length: usize,
    pub modules_truncated: bool,
    pub rsdp_address: u64,
}

/// Reads a `T` from a guest-physical address.
///
/// # Safety
/// `address` must be identity mapped and readable for `size_of::<T>()` bytes.
unsafe fn read_physical<T: Copy>(address: u64) -> T {
    // SAFETY: delegated to the caller; unaligned read since the loader promises no alignment.
    unsafe { core::ptr::read_unaligned(address as *const T) }
}

/// Is `[address, address + length)` non-null and inside the identity-mapped low 4 GiB?
/// (Low addresses are legitimate: QEMU's PVH loader puts the memory map at 0x5a8.)
fn plausible(address: u64, length: u64) -> bool {
    address != 0
        && address
            .checked_add(length)
            .is_some_and(|end| end <= 0x1_0000_0000)
}

impl BootInfo {
    /// Parses the structure at `start_info_address` (the `ebx` value at entry).
    pub fn parse(start_info_address: u64) -> Result<BootInfo, StartInfoError> {
        if !plausible(
            start_info_address,
            core::mem::size_of::<HvmStartInfo>() as u64,
        ) {
            return Err(StartInfoError::BadAddress(start_info_address));
        }
        // SAFETY: the address is within the identity-mapped low 4 GiB (checked above), and the
        // PVH ABI says ebx points at a `hvm_start_info` in our RAM.
        let raw: HvmStartInfo = unsafe { read_physical(start_info_address) };
        if raw.magic != XEN_HVM_START_MAGIC_VALUE {
            return Err(StartInfoError::BadMagic(raw.magic));
        }
        let mut info = BootInfo {
            start_info_address,
            version: raw.version,
            flags: raw.flags,
            command_line: [0; COMMAND_LINE_LENGTH_MAX],
            command_line_length: 0,
            command_line_truncated: false,
            memory_map: [MemoryRange::default(); MEMORY_MAP_ENTRIES_MAX],
            memory_map_length: 0,
            memory_map_truncated: false,
            modules: [Module::default(); MODULES_MAX],
            modules_length: 0,
            modules_truncated: false,
            rsdp_address: raw.rsdp_paddr,
        };

        if raw.cmdline_paddr != 0 && plausible(raw.cmdline_paddr, 1) {
            let mut address = raw.cmdline_paddr;
            while info.command_line_length < COMMAND_LINE_LENGTH_MAX && plausible(address, 1) {
                // SAFETY: `address` is inside the identity map (checked by `plausible`).
                let byte: u8 = unsafe { read_physical(address) };
                if byte == 0 {
                    break;
                }
                info.command_line[info.command_line_length] = byte;
                info.command_line_length += 1;
                address += 1;
            }
            info.command_line_truncated = info.command_line_length == COMMAND_LINE_LENGTH_MAX;
        }

        let entry_size = core::mem::size_of::<HvmMemmapTableEntry>() as u64;
        if raw.version >= 1 && raw.memmap_paddr != 0 {
            let count = raw.memmap_entries as usize;
            let kept = count.min(MEMORY_MAP_ENTRIES_MAX);
            info.memory_map_truncated = count > kept;
            for index in 0..kept {
                let address = raw.memmap_paddr + index as u64 * entry_size;
                if !plausible(address, entry_size) {
                    break;
                }
                // SAFETY: checked to be inside the identity map.
                let entry: HvmMemmapTableEntry = unsafe { read_physical(address) };
                info.memory_map[info.memory_map_length] = MemoryRange {
                    address: entry.addr,
                    size_bytes: entry.size,
                    memory_type: entry.type_,
                };
                info.memory_map_length += 1;
            }
        }

        let module_size = core::mem::size_of::<HvmModlistEntry>() as u64;
        if raw.modlist_paddr != 0 {
            let count = raw.nr_modules as usize;
            let kept = count.min(MODULES_MAX);
            info.modules_truncated = count > kept;
            for index in 0..kept {
                let address = raw.modlist_paddr + index as u64 * module_size;
                if !plausible(address, module_size) {
                    break;
                }
                // SAFETY: checked to be inside the identity map.
                let entry: HvmModlistEntry = unsafe { read_physical(address) };
                info.modules[info.modules_length] = Module {
                    address: entry.paddr,
                    size_bytes: entry.size,
                };
                info.modules_length += 1;
            }
        }
        Ok(info)
    }

    /// The command line (lossy: non-UTF-8 yields the valid prefix).
    pub fn command_line(&self) -> &str {
        let bytes = &self.command_line[..self.command_line_length];
        match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                // The prefix up to the first invalid byte is valid UTF-8 by definition.
                core::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or("")
            }
        }
    }

    /// Replaces the memory map (used when start_info carries none and Xen supplies it by
    /// `XENMEM_memory_map`). Keeps at most [`MEMORY_MAP_ENTRIES_MAX`] ranges.
    pub fn set_memory_map(&mut self, ranges: impl Iterator<Item = MemoryRange>) {
        self.memory_map_length = 0;
        self.memory_map_truncated = false;
        for range in ranges {
            if self.memory_map_length == MEMORY_MAP_ENTRIES_MAX {
                self.memory_map_truncated = true;
                break;
            }
            self.memory_map[self.memory_map_length] = range;
            self.memory_map_length += 1;
        }
    }

    /// The memory map as given by the loader.
    pub fn memory_map(&self) -> &[MemoryRange] {
        &self.memory_map[..self.memory_map_length]
    }

    /// The boot modules.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.modules_length]
    }

    /// Total bytes of RAM in the memory map.
    pub fn ram_bytes(&self) -> u64 {
        self.memory_map()
            .iter()
            .filter(|range| range.memory_type == MEMORY_TYPE_RAM)
            .map(|range| range.size_bytes)
            .sum()
    }

    /// Value of `--name <value>` or `--name=<value>` on the command line, if present.
    pub fn option(&self, name: &str) -> Option<&str> {
        let mut words = self.command_line().split_ascii_whitespace();
        while let Some(word) = words.next() {
            if word == name {
                return words.next();
            }
            if let Some(rest) = word.strip_prefix(name)
                && let Some(value) = rest.strip_prefix('=')
            {
                return Some(value);
            }
        }
        None
    }
}
