//! Crash-safe content-addressed object log on a block device: xenstored's persistent state.
//!
//! Contract: a commit whose sequence number is ≤ the value returned by [`Log::sync`] survives
//! any crash, torn sector or lost unflushed write; recovery never panics on bad disk data and
//! reports damage to durable data as a typed error instead of silently dropping it.
//! `no_std` + `alloc`, no `unsafe`, no hardware access. Format: `docs/persist-format.md`.
//!
//! # Public API in one screen
//!
//! ```text
//! trait BlockDevice { sector_count, read_sectors, write_sectors, flush }   // 512-byte sectors
//!   MemDevice (RAM), FileDevice (feature "std", a file on tmpfs), SimDevice (fault injection)
//!
//! Log::create(device, Config) -> Log                       // format: empty state, seq 0
//! Log::open(device, Config) -> (Log, Recovery)             // recover newest durable state
//! Log::open_salvage(device, Config) -> (Log, Recovery)     // same, accepting damage: returns the
//!                                                          // newest intact state; Recovery says
//!                                                          // what was lost (damage, lost paths)
//! Log::open_read_only(device, Config, salvage) -> (Log, Recovery)  // writes nothing (inspector)
//!
//! log.append(Commit { cause, mutations }) -> Seq           // applied in memory, not yet durable
//! CommitSize::new(&cause).with(mutation.encoded_len())      // exact encoded size, to split
//!                                                          // changes over several commits
//! log.sync() -> Seq                                        // one write + flush for the group;
//!                                                          // commits <= Seq are durable:
//!                                                          // release their replies now
//! log.durable_seq() / log.last_seq()
//!
//! Mutation::PutNode { path, record: NodeRecord { value, permissions, generation } }
//! Mutation::RemoveSubtree { path }    Mutation::PutBlob { key, value }    Mutation::RemoveBlob { key }
//! Cause { connection, domid, request_type, request_id, path, requests_grouped, timestamp }
//!
//! state:   log.node(path), log.children(path), log.for_each_node(|path, record|),
//!          log.blob(key), log.for_each_blob(|key, bytes|), log.snapshot(), log.node_count()
//! upkeep:  log.checkpoint(), log.compact(), log.maintenance()  (sync runs them when due;
//!          with Config::auto_maintenance = false the server can release replies first and
//!          call maintenance() after. Measured with 100k nodes: a checkpoint folding 16k
//!          random writes ~35 ms, a compaction 0.2-0.3 s, both stop-the-world)
//! tools:   scan_records(device) -> (Superblock, Vec<RecordInfo>, chain end)  // raw walk
//! history: log.history_range(), log.commits(from, to), log.commits_touching(path),
//!          log.tree_at(seq) -> TreeAt { node, children, blob, snapshot }, log.diff(a, b)
//! errors:  Error (runtime; Device/other failures poison the Log: re-open), OpenError,
//!          Damage { kind, offset, last_intact_seq, proven_durable_seq }
//! ```
//!
//! Rules the server relies on:
//! * Sequence numbers are dense (1, 2, 3, ...); commits become durable in order; an empty
//!   commit (no mutations) is fine (e.g. to log a cause).
//! * `append` refuses a commit with a bad path or an oversized item (`Error::InvalidPath`,
//!   `Error::Limit`, nothing applied, log still usable); a commit is at most 1 MiB encoded
//!   (`limits::COMMIT_LEN_MAX_BYTES`, `LimitError::CommitTooLarge`: split it; `CommitSize`
//!   measures a commit exactly as `append` does, mutation by mutation).
//! * If `sync` (or anything else) returns `Err`, the log is poisoned; `durable_seq()` still
//!   says which commits are durable. Re-open the device: recovery returns exactly the durable
//!   state (possibly more: commits written but not yet acknowledged may survive).
//!
//! Paths are xenstore paths ("/", "/local/domain/1/name"); a `PutNode` creates missing
//! ancestors as implicit (record-less) directories, which iteration does not report, so the
//! server should put every node it creates. Permissions are opaque bytes (the wire-format
//! permission strings). State blobs are opaque named byte strings ("conn/17", "quota", ...).
//!
//! Typical server loop:
//!
//! ```
//! use xenstore_persist::{Cause, Commit, Config, Log, MemDevice, Mutation, NodeRecord};
//! let mut log = Log::create(MemDevice::new(4096), Config::default()).unwrap();
//! let seq = log
//!     .append(Commit {
//!         cause: Cause { connection: 3, domid: 1, request_type: 11, requests_grouped: 1, ..Cause::default() },
//!         mutations: vec![Mutation::PutNode {
//!             path: "/local/domain/1/name".into(),
//!             record: NodeRecord { value: b"guest".to_vec(), permissions: b"n1\0".to_vec(), generation: 7 },
//!         }],
//!     })
//!     .unwrap();
//! assert!(log.sync().unwrap() >= seq); // now the reply for `seq` may leave
//! let device = log.into_device();
//! let (log, recovery) = Log::open(device, Config::default()).unwrap();
//! assert_eq!(recovery.seq, seq);
//! assert_eq!(log.node("/local/domain/1/name").unwrap().value, b"guest");
//! ```
//!
//! # Space
//!
//! `NoSpace` cannot happen while one region (half the device) holds the live state + the
//! largest commit + 64 KiB; history is dropped before that (the window yields to space). Size
//! the device with [`recommended_device_sectors`] and warn when [`Log::space_report`] says
//! it is not `comfortable`. A commit larger than a region is refused with
//! `LimitError::CommitExceedsRegion`; one that does not fit next to the live state with
//! `Error::NoSpace` (from `append` neither poisons the log). Rule and reasoning:
//! `docs/persist-format.md` §8.1.
//!
//! # Memory
//!
//! The log keeps the whole state in memory (a mirror of the store's tree, with every value,
//! permission string and blob, plus each subtree's cached object name and location) so that a
//! checkpoint can write only what changed and `node()` / `blob()` need no I/O. Measured
//! (`tests/memory.rs`, counting allocator, x86-64): **≈ 486 bytes per node** for 100k nodes at
//! depth 6 in directories of 100 (11-byte values, 6-byte permissions): 48.6 MB for 100k nodes,
//! 4.9 MB for 10k. That is ~470 bytes of structure per node (a `MemNode` with its child
//! index, a 48-byte cached `ObjRef`, the B-tree entry and the name `String`) plus the data.
//! Blobs cost their length + ~100 bytes. **Known limit:** in an 8 MiB stub domain
//! (~6.5 MiB heap) the mirror fits roughly 10k small nodes; a larger store needs a bigger
//! domain. Keeping values on disk only (hash + location in memory) would change `node()` /
//! `blob()` to fallible reads and is not done.
//!
//! Other buffers, all bounded: recovery, compaction and history reads use a read cache of at
//! most `Config::read_cache_bytes` (default 1 MiB, 64 KiB chunks, LRU); the write batch holds
//! up to 1 MiB + one record (≤ 2 MiB); a checkpoint's object pack 256 KiB. Recovery peaks at
//! mirror + read cache (+ one record): 1.05 MB over the mirror for 100k nodes. A compaction
//! with a history window additionally holds the window's base tree (a second mirror, of the
//! state at the window's start) and a hash → location map of the objects written (≈ 100 bytes
//! per object) until it ends; with `history_commits = 0` no base tree is built.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod commit;
mod device;
mod error;
#[cfg(feature = "std")]
mod file;
mod format;
mod history;
pub mod limits;
mod log;
mod sim;
mod tree;

pub use commit::{Cause, Commit, CommitSize, Mutation, Seq, components, validate_path};
pub use device::{BlockDevice, MemDevice};
pub use error::{Damage, DamageKind, DeviceError, Error, LimitError, OpenError, PathError};
#[cfg(feature = "std")]
pub use file::FileDevice;
pub use format::NodeRecord;
pub use format::{RecordKind, Superblock};
pub use history::{CommitEntry, Diff, RecordInfo, TreeAt, diff_snapshots, scan_records};
pub use log::{
    Config, Log, Recovery, SpaceReport, Stats, recommended_device_sectors,
    recommended_region_bytes, required_region_bytes,
};
pub use sim::{CrashMode, SimDevice, SimRng, SimStats};
pub use tree::Snapshot;
