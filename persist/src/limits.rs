//! Every size bound of the persist crate, in one place (units last in the name).
//!
//! Each bound is checked on the write side (a caller handing in something larger gets a typed
//! error) and again on the read side (an on-disk length larger than the bound is corruption).

/// Size of one device sector in bytes. The log requires 512-byte sectors.
pub const SECTOR_SIZE_BYTES: usize = 512;

/// Sectors reserved at the start of the device for the two superblock slots.
/// Slot 0 is sector 0, slot 1 is sector 8 (different 4 KiB pages), data starts at sector 16.
pub const RESERVED_SECTORS: u64 = 16;

/// Sector of superblock slot 0 and slot 1.
pub const SUPERBLOCK_SECTORS: [u64; 2] = [0, 8];

/// Longest xenstore path accepted (bytes), matching XENSTORE_ABS_PATH_MAX in xs_wire.h.
pub const PATH_LEN_MAX_BYTES: usize = 3072;

/// Deepest path accepted (components). Bounds the recursion of tree load, store and visit
/// (one frame per level, well under 1 KiB each: < 256 KiB of stack in the worst case).
pub const PATH_DEPTH_MAX: usize = 256;

/// Largest node value (bytes). Xenstore's payload limit is 4096; leave headroom.
pub const VALUE_LEN_MAX_BYTES: usize = 64 * 1024;

/// Largest permission blob (bytes).
pub const PERMISSIONS_LEN_MAX_BYTES: usize = 64 * 1024;

/// Longest state-blob key (bytes).
pub const BLOB_KEY_LEN_MAX_BYTES: usize = 256;

/// Largest state blob (bytes).
pub const BLOB_LEN_MAX_BYTES: usize = 512 * 1024;

/// Largest record payload on disk (bytes): one commit or one object.
pub const RECORD_PAYLOAD_MAX_BYTES: usize = 1024 * 1024;

/// Largest encoded commit (bytes): a commit is one record, so this is
/// `RECORD_PAYLOAD_MAX_BYTES`. `Log::append` refuses a larger one with
/// `LimitError::CommitTooLarge`; `CommitSize` measures a commit against it exactly.
pub const COMMIT_LEN_MAX_BYTES: usize = RECORD_PAYLOAD_MAX_BYTES;

/// Once this many bytes are buffered, they are written and flushed even without `sync()`.
/// Bounds the distance between two flush points, which bounds the damage probe below.
pub const BATCH_MAX_BYTES: usize = 1024 * 1024;

/// How far past a broken record recovery looks for proof that later records were durable.
/// A batch is at most `BATCH_MAX_BYTES` plus one record, so the next batch starts within this.
pub const PROBE_WINDOW_BYTES: u64 = (BATCH_MAX_BYTES + RECORD_PAYLOAD_MAX_BYTES) as u64 + 4096;

/// Most entries in one leaf of a directory's child index before it splits into 16 buckets.
pub const LEAF_ENTRIES_MAX: usize = 64;

/// A branch whose subtree holds fewer entries than this collapses back into one leaf.
pub const BRANCH_ENTRIES_MIN: usize = LEAF_ENTRIES_MAX / 2;

/// Depth of the child index (4 bits of the 64-bit name hash per level).
pub const INDEX_DEPTH_MAX: usize = 16;

/// Read cache granularity used during recovery, history reads and compaction (bytes).
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Upper bound of the read cache (chunks, 64 MiB): `Config::read_cache_bytes` is clamped to
/// `READ_CHUNK_BYTES ..= READ_CACHE_CHUNKS_MAX * READ_CHUNK_BYTES`. When the cache is full the
/// least recently used chunk is dropped.
pub const READ_CACHE_CHUNKS_MAX: usize = 1024;

/// Default read cache (`Config::read_cache_bytes`): 1 MiB, small enough for a stub domain.
pub const READ_CACHE_BYTES_DEFAULT: u64 = 1024 * 1024;

/// Free bytes a region must keep besides the live state and the largest commit: checkpoint
/// records, pack headers and the sector padding of the batches that hold them (see
/// `docs/persist-format.md` §8.1). (A commit record that does not fit in a region with 4 KiB
/// to spare is refused outright: `LimitError::CommitExceedsRegion`.)
pub const REGION_BOOKKEEPING_BYTES: u64 = 64 * 1024;
