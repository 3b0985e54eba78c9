//! Typed errors of the persist crate. No error carries a string; every variant says what the
//! caller should do.
//!
//! Policy: a `DeviceError` or a failed write poisons the [`crate::Log`] (memory is ahead of the
//! disk and nothing more can be promised): the server must re-open the log and recover.
//! A `PathError` / `LimitError` rejects one commit and changes nothing.
//! `Damage` means durable bytes are not what was written: it is never silently dropped.

use core::fmt;

/// Failure reported by a [`crate::BlockDevice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// Access past the end of the device.
    OutOfRange {
        first_sector: u64,
        sector_count: u64,
    },
    /// Buffer length is not a whole number of sectors.
    Misaligned { len: u64 },
    /// Host I/O error (raw OS error code, or -1 when unknown).
    Io { code: i32 },
    /// The simulated device has crashed (fault injection); only `SimDevice::crash` helps.
    Crashed,
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with '/'.
    NotAbsolute,
    /// Empty component ("//" or a trailing '/').
    EmptyComponent,
    /// Longer than `PATH_LEN_MAX_BYTES`.
    TooLong,
    /// More than `PATH_DEPTH_MAX` components.
    TooDeep,
    /// Contains a NUL byte.
    ContainsNul,
}

/// Which bound a caller-supplied item exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    ValueTooLarge {
        len: usize,
    },
    PermissionsTooLarge {
        len: usize,
    },
    BlobKeyInvalid {
        len: usize,
    },
    BlobTooLarge {
        len: usize,
    },
    CommitTooLarge {
        len: usize,
    },
    /// The commit's record (plus 4 KiB for a checkpoint) is larger than one log region: it
    /// can never be written on this device. Nothing is applied; split it or use a bigger
    /// device.
    CommitExceedsRegion {
        len: usize,
        region_bytes: u64,
    },
}

/// Where durable data was found damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A log record failed its checksum or broke the chain, and a later record proves that it
    /// had been durable (its durable watermark covers the missing commit).
    LogRecord,
    /// An object referenced by the tree did not hash to its name, or did not decode.
    Object,
    /// A checkpoint record named by the superblock is unreadable.
    Checkpoint,
    /// No superblock slot is valid, but at least one is not blank.
    Superblock,
    /// A record decoded but broke a structural rule (sequence gap, bad kind, bad geometry).
    Structure,
}

/// Damage found in durable data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub kind: DamageKind,
    /// Byte offset on the device where the damage was found.
    pub offset: u64,
    /// Newest commit that is intact and reachable.
    pub last_intact_seq: u64,
    /// For `LogRecord`: the highest commit proven durable by a later record (≥ the first lost).
    pub proven_durable_seq: u64,
}

/// Errors of `Log::create`, `Log::open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    Device(DeviceError),
    /// The device sector size is not 512.
    UnsupportedSectorSize {
        sector_size: u32,
    },
    /// Too small to hold the superblocks and two log regions.
    DeviceTooSmall {
        sector_count: u64,
        needed: u64,
    },
    /// Neither superblock slot holds a valid superblock (blank or foreign device).
    NotFormatted,
    /// A valid superblock of a format version this code does not read.
    UnsupportedVersion {
        version: u32,
    },
    /// The superblock describes a different device size.
    GeometryMismatch {
        formatted_sectors: u64,
        device_sectors: u64,
    },
    /// Durable data is damaged. With `OpenOptions::salvage`, `open` instead returns the newest
    /// intact state and reports this in `Recovery::damage`.
    Damaged(Damage),
    /// Salvage was asked for, but no intact state could be found at all.
    Unrecoverable(Damage),
    /// Recovery could not compact after a salvage (device too small for the live state).
    NoSpace,
}

/// Errors of operations on an open `Log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Device(DeviceError),
    InvalidPath(PathError),
    Limit(LimitError),
    /// The live state (plus, from `append`, the commit) does not fit in one log region even
    /// after compaction dropped all history. From `append` the commit is refused and the log
    /// stays usable (not poisoned); from `sync`/`checkpoint`/`compact` the log is poisoned.
    /// Avoid it by sizing the device with [`crate::Log::space_report`].
    NoSpace {
        needed_bytes: u64,
        region_bytes: u64,
    },
    /// An earlier device error left memory ahead of the disk: re-open the log.
    Poisoned,
    /// Durable data read back for history or compaction is damaged.
    Damaged(Damage),
    /// The log was opened with `open_read_only`.
    ReadOnly,
    /// The asked-for commit is not in the retained history.
    NotInHistory {
        seq: u64,
        oldest_seq: u64,
        newest_seq: u64,
    },
}

impl From<DeviceError> for Error {
    fn from(e: DeviceError) -> Self {
        Error::Device(e)
    }
}
impl From<PathError> for Error {
    fn from(e: PathError) -> Self {
        Error::InvalidPath(e)
    }
}
impl From<LimitError> for Error {
    fn from(e: LimitError) -> Self {
        Error::Limit(e)
    }
}
impl From<DeviceError> for OpenError {
    fn from(e: DeviceError) -> Self {
        OpenError::Device(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
impl core::error::Error for Error {}
impl core::error::Error for OpenError {}
