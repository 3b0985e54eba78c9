//! The log: append, group commit, checkpoints, recovery, compaction.
//!
//! Write path: `append` checks and encodes a commit, adds it as a checksummed record to an
//! in-memory batch and applies it to the in-memory tree. `sync` writes the batch (padded to
//! whole sectors, so a durable sector is never rewritten) and flushes: every commit up to the
//! returned sequence number is durable. Periodically a checkpoint writes the changed objects of
//! the Merkle tree and a checkpoint record, flushes, and then points the superblock at it.
//! Recovery loads the checkpoint's tree (walking only the live tree) and replays the commit
//! records after it (bounded by the checkpoint interval). Compaction copies the live state and
//! the history window into the other region and switches the superblock.

use alloc::vec;
use alloc::vec::Vec;
use hashbrown::HashMap;

use crate::commit::{Commit, Seq, validate_commit};
use crate::device::BlockDevice;
use crate::error::{Damage, DamageKind, DeviceError, Error, OpenError};
use crate::format::{
    CheckpointWire, Hash, Loc, NodeRecord, ObjRef, RECORD_HEADER_BYTES, RecordHeader, RecordKind,
    Superblock, decode_header, encode_object_payload, encode_record, from_bytes_exact,
    record_checksum, to_vec,
};
use crate::history::CheckpointMark;
use crate::limits::{
    BATCH_MAX_BYTES, COMMIT_LEN_MAX_BYTES, PROBE_WINDOW_BYTES, READ_CACHE_BYTES_DEFAULT,
    READ_CACHE_CHUNKS_MAX, READ_CHUNK_BYTES, RECORD_PAYLOAD_MAX_BYTES, REGION_BOOKKEEPING_BYTES,
    RESERVED_SECTORS, SECTOR_SIZE_BYTES, SUPERBLOCK_SECTORS,
};
use crate::tree::{ObjectSink, ObjectSource, Snapshot, Tree};

const SECTOR: u64 = SECTOR_SIZE_BYTES as u64;
const HEADER: u64 = RECORD_HEADER_BYTES as u64;
/// A commit record must leave at least this much of a region for a checkpoint of the
/// smallest state, or it can never be written (`LimitError::CommitExceedsRegion`).
const COMMIT_REGION_MARGIN: u64 = 4096;
/// Smallest region accepted by `create` (sectors).
const REGION_SECTORS_MIN: u64 = 64;

fn round_up(x: u64) -> u64 {
    x.div_ceil(SECTOR) * SECTOR
}

/// Tuning of a `Log`. `Default` suits a xenstored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Write a checkpoint after this many commit bytes (bounds recovery replay).
    pub checkpoint_interval_bytes: u64,
    /// ... or after this many commits, whichever comes first.
    pub checkpoint_interval_commits: u64,
    /// Compaction keeps at least this many newest commits readable by the history API.
    pub history_commits: u64,
    /// Compact when the active region is this full (percent).
    pub compact_at_percent: u8,
    /// ... or when the active region holds more than this many times the bytes it held right
    /// after the last compaction (live state + history), and at least `compact_min_bytes`.
    /// Keeps the live tree dense so recovery reads little.
    pub compact_growth_factor: u64,
    pub compact_min_bytes: u64,
    /// Let `sync` run checkpoints and compaction when due. If false, call `maintenance`.
    pub auto_maintenance: bool,
    /// Bytes of the read cache used by recovery, compaction and history reads (rounded down
    /// to 64 KiB chunks; at least one chunk, at most 64 MiB). Each reader is dropped when its
    /// operation ends. Default 1 MiB (`limits::READ_CACHE_BYTES_DEFAULT`).
    pub read_cache_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checkpoint_interval_bytes: 2 * 1024 * 1024,
            checkpoint_interval_commits: 16384,
            history_commits: 1024,
            compact_at_percent: 50,
            compact_growth_factor: 8,
            compact_min_bytes: 16 * 1024 * 1024,
            auto_maintenance: true,
            read_cache_bytes: READ_CACHE_BYTES_DEFAULT,
        }
    }
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Newest recovered commit; everything up to it is durable.
    pub seq: Seq,
    /// Commit the checkpoint recovery started from captured.
    pub checkpoint_seq: Seq,
    /// Commit records replayed after that checkpoint.
    pub replayed_commits: u64,
    /// The newest superblock's checkpoint was unusable; an older one was used.
    pub used_fallback_superblock: bool,
    /// Only with `open_salvage`: damage found; the state returned is the newest intact one.
    pub damage: Option<Damage>,
    /// Only with `open_salvage`, when no checkpoint tree was intact: what was left out of the
    /// newest one ("/path" subtrees, "/dir/*" parts of a directory, "blob:key", "blobs:*").
    pub lost: Vec<alloc::string::String>,
}

/// Counters (cumulative since create/open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes handed to the device (including padding and superblocks).
    pub bytes_written: u64,
    pub flushes: u64,
    /// Bytes of commit records (header + payload).
    pub commit_record_bytes: u64,
    /// Bytes of object records.
    pub object_record_bytes: u64,
    pub objects_written: u64,
    pub checkpoints: u64,
    pub compactions: u64,
    /// Bytes written by compactions (included in `bytes_written`).
    pub compaction_bytes_written: u64,
}

/// How the device size compares with what the state needs (`Log::space_report`). The space
/// rule (docs/persist-format.md §8.1): `NoSpace` cannot happen while
/// `required_region_bytes <= region_bytes`; below `recommended_region_bytes` compaction runs
/// often (it rewrites the live state each time) and history shrinks. Warn when not
/// `comfortable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceReport {
    /// Size of one log region (half the device, less the superblocks).
    pub region_bytes: u64,
    /// Bytes of the active region in use now.
    pub used_bytes: u64,
    /// Estimate (slightly high) of the live state as compaction writes it.
    pub live_bytes: u64,
    /// Largest commit record (header + payload) appended or replayed since create/open.
    pub largest_commit_bytes: u64,
    /// `required_region_bytes(live_bytes, largest_commit_bytes)`.
    pub required_region_bytes: u64,
    /// `recommended_region_bytes(live_bytes, largest_commit_bytes)`.
    pub recommended_region_bytes: u64,
    /// `required_region_bytes <= region_bytes`: no `NoSpace` for commits up to that size.
    pub fits: bool,
    /// `recommended_region_bytes <= region_bytes`.
    pub comfortable: bool,
}

/// Smallest region that holds a live state of `live_bytes` (as compaction writes it, see
/// `SpaceReport::live_bytes`) plus one commit record of `commit_bytes` and the bookkeeping:
/// below it `append` can fail with `NoSpace`.
pub const fn required_region_bytes(live_bytes: u64, commit_bytes: u64) -> u64 {
    live_bytes + commit_bytes.div_ceil(SECTOR) * SECTOR + REGION_BOOKKEEPING_BYTES
}

/// Region size at which compaction (at half the region) still leaves room for two maximal
/// commits beside the live state: `2 × (live + 2 × commit + bookkeeping)`.
pub const fn recommended_region_bytes(live_bytes: u64, commit_bytes: u64) -> u64 {
    2 * (live_bytes + 2 * (commit_bytes.div_ceil(SECTOR) * SECTOR) + REGION_BOOKKEEPING_BYTES)
}

/// Device size (512-byte sectors) giving two regions of `recommended_region_bytes`.
pub const fn recommended_device_sectors(live_bytes: u64, commit_bytes: u64) -> u64 {
    RESERVED_SECTORS + 2 * recommended_region_bytes(live_bytes, commit_bytes).div_ceil(SECTOR)
}

/// Byte bounds of region `index`.
fn region_bounds(region_sectors: u64, index: u32) -> (u64, u64) {
    let start = (RESERVED_SECTORS + u64::from(index) * region_sectors) * SECTOR;
    (start, start + region_sectors * SECTOR)
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Writer {
    generation: u64,
    region: u32,
    region_start: u64,
    region_end: u64,
    /// Next byte offset to write on the device; sector aligned. `pending` starts here.
    tail: u64,
    pending: Vec<u8>,
    /// Checksum of the last record pushed.
    chain: u64,
    last_seq: Seq,
    durable_seq: Seq,
}

impl Writer {
    fn new(generation: u64, region: u32, region_sectors: u64, tail: Option<u64>) -> Self {
        let (start, end) = region_bounds(region_sectors, region);
        Writer {
            generation,
            region,
            region_start: start,
            region_end: end,
            tail: tail.unwrap_or(start),
            pending: Vec::new(),
            chain: 0,
            last_seq: 0,
            durable_seq: 0,
        }
    }

    fn next_offset(&self) -> u64 {
        self.tail + self.pending.len() as u64
    }

    fn fits(&self, payload_len: usize) -> bool {
        round_up(self.next_offset() + HEADER + payload_len as u64) <= self.region_end
    }

    fn used_bytes(&self) -> u64 {
        self.next_offset() - self.region_start
    }

    /// Add a record to the batch; returns the payload location and the record checksum.
    fn push<D: BlockDevice>(
        &mut self,
        device: &mut D,
        stats: &mut Stats,
        kind: RecordKind,
        seq: Seq,
        payload: &[u8],
    ) -> Result<(Loc, u64), Error> {
        if !self.fits(payload.len()) {
            return Err(Error::NoSpace {
                needed_bytes: HEADER + payload.len() as u64,
                region_bytes: self.region_end - self.region_start,
            });
        }
        let offset = self.next_offset();
        self.chain = encode_record(
            &mut self.pending,
            self.generation,
            kind,
            seq,
            self.durable_seq,
            self.chain,
            payload,
        );
        let bytes = HEADER + payload.len() as u64;
        match kind {
            RecordKind::Commit => stats.commit_record_bytes += bytes,
            RecordKind::Object => stats.object_record_bytes += bytes,
            RecordKind::Checkpoint => {}
        }
        let loc = Loc {
            offset: offset + HEADER,
            len: payload.len() as u32,
        };
        if self.pending.len() >= BATCH_MAX_BYTES {
            self.write_out(device, stats)?;
        }
        Ok((loc, self.chain))
    }

    /// Write the batch (padded to whole sectors) and flush. Afterwards `durable_seq ==
    /// last_seq`.
    fn write_out<D: BlockDevice>(
        &mut self,
        device: &mut D,
        stats: &mut Stats,
    ) -> Result<(), Error> {
        if self.pending.is_empty() {
            self.durable_seq = self.last_seq;
            return Ok(());
        }
        let padded = round_up(self.pending.len() as u64) as usize;
        self.pending.resize(padded, 0);
        assert!(self.tail % SECTOR == 0);
        assert!(self.tail + padded as u64 <= self.region_end);
        device.write_sectors(self.tail / SECTOR, &self.pending)?;
        device.flush()?;
        stats.bytes_written += padded as u64;
        stats.flushes += 1;
        self.tail += padded as u64;
        self.pending.clear();
        self.durable_seq = self.last_seq;
        Ok(())
    }
}

/// Objects are collected into packs of up to this many bytes: one record (one header, one
/// checksum) per pack instead of per object. Objects are still addressed individually.
const PACK_MAX_BYTES: usize = 256 * 1024;

/// Incremental checkpoint sink: objects go, packed, to the end of the active region.
/// `finish` must be called before any other record is pushed.
struct AppendSink<'a, D> {
    writer: &'a mut Writer,
    device: &'a mut D,
    stats: &'a mut Stats,
    pack: Vec<u8>,
    /// Device offset of `pack[0]` (payload start of the pack record to be pushed).
    pack_start: u64,
}

impl<'a, D: BlockDevice> AppendSink<'a, D> {
    fn new(writer: &'a mut Writer, device: &'a mut D, stats: &'a mut Stats) -> Self {
        AppendSink {
            writer,
            device,
            stats,
            pack: Vec::new(),
            pack_start: 0,
        }
    }

    /// Push the open pack, if any, as one record.
    fn finish(&mut self) -> Result<(), Error> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let seq = self.writer.last_seq;
        let (loc, _) =
            self.writer
                .push(self.device, self.stats, RecordKind::Object, seq, &self.pack)?;
        // Every location handed out for this pack is relative to where it really went.
        assert_eq!(loc.offset, self.pack_start);
        self.pack.clear();
        Ok(())
    }
}

impl<D: BlockDevice> ObjectSink for AppendSink<'_, D> {
    fn store(&mut self, _hash: &Hash, content: &[u8], locs: &[Loc]) -> Result<Loc, Error> {
        let payload = encode_object_payload(content, locs);
        // Limits keep every object far below a record's maximum.
        assert!(payload.len() <= RECORD_PAYLOAD_MAX_BYTES);
        if !self.pack.is_empty() && self.pack.len() + payload.len() > PACK_MAX_BYTES {
            self.finish()?;
        }
        if self.pack.is_empty() {
            self.pack_start = self.writer.next_offset() + HEADER;
        }
        let loc = Loc {
            offset: self.pack_start + self.pack.len() as u64,
            len: payload.len() as u32,
        };
        self.pack.extend_from_slice(&payload);
        self.stats.objects_written += 1;
        Ok(loc)
    }
    fn relocating(&self) -> bool {
        false
    }
    fn lookup(&self, _hash: &Hash) -> Option<Loc> {
        None
    }
}

/// Compaction sink: every object is written once into the new region, deduplicated by hash.
struct RelocateSink<'a, D> {
    inner: AppendSink<'a, D>,
    written: HashMap<Hash, Loc>,
}

impl<D: BlockDevice> ObjectSink for RelocateSink<'_, D> {
    fn store(&mut self, hash: &Hash, content: &[u8], locs: &[Loc]) -> Result<Loc, Error> {
        let loc = self.inner.store(hash, content, locs)?;
        self.written.insert(*hash, loc);
        Ok(loc)
    }
    fn relocating(&self) -> bool {
        true
    }
    fn lookup(&self, hash: &Hash) -> Option<Loc> {
        self.written.get(hash).copied()
    }
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// Cached reads of the log region, in `READ_CHUNK_BYTES` chunks, at most `max_chunks` of
/// them (least recently used dropped first).
#[derive(Debug)]
pub(crate) struct Reader {
    start: u64,
    end: u64,
    /// Chunk index -> (last use, bytes).
    chunks: HashMap<u64, (u64, Vec<u8>)>,
    max_chunks: usize,
    clock: u64,
}

/// Chunks of a read cache of `bytes` bytes (clamped to the bounds in `limits`).
fn cache_chunks(bytes: u64) -> usize {
    let chunks = bytes / READ_CHUNK_BYTES as u64;
    (chunks.clamp(1, READ_CACHE_CHUNKS_MAX as u64)) as usize
}

impl Reader {
    /// A reader with the default cache size (`READ_CACHE_BYTES_DEFAULT`).
    pub(crate) fn new(start: u64, end: u64) -> Self {
        Self::with_cache(start, end, READ_CACHE_BYTES_DEFAULT)
    }

    /// A reader whose cache holds at most `cache_bytes` (rounded down to whole chunks, at
    /// least one).
    pub(crate) fn with_cache(start: u64, end: u64, cache_bytes: u64) -> Self {
        Reader {
            start,
            end,
            chunks: HashMap::new(),
            max_chunks: cache_chunks(cache_bytes),
            clock: 0,
        }
    }

    /// `len` bytes at `offset`, or `None` if outside the region.
    pub(crate) fn read<D: BlockDevice>(
        &mut self,
        device: &mut D,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>, DeviceError> {
        let Some(end) = offset.checked_add(len as u64) else {
            return Ok(None);
        };
        if offset < self.start || end > self.end {
            return Ok(None);
        }
        let chunk = READ_CHUNK_BYTES as u64;
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while at < end {
            let index = at / chunk;
            self.clock += 1;
            if let Some((used, _)) = self.chunks.get_mut(&index) {
                *used = self.clock;
            } else {
                while self.chunks.len() >= self.max_chunks {
                    // Linear scan: at most READ_CACHE_CHUNKS_MAX entries, once per miss.
                    let Some(oldest) = self
                        .chunks
                        .iter()
                        .min_by_key(|(_, (u, _))| *u)
                        .map(|(k, _)| *k)
                    else {
                        break;
                    };
                    self.chunks.remove(&oldest);
                }
                let chunk_start = index * chunk;
                let device_end = device.sector_count().saturating_mul(SECTOR);
                if chunk_start >= device_end || end > device_end {
                    return Ok(None);
                }
                let chunk_len = chunk.min(device_end - chunk_start) as usize;
                let mut buf = vec![0u8; chunk_len];
                device.read_sectors(chunk_start / SECTOR, &mut buf)?;
                self.chunks.insert(index, (self.clock, buf));
            }
            let data = &self.chunks[&index].1;
            let from = (at - index * chunk) as usize;
            let take = ((end - at) as usize).min(data.len() - from);
            out.extend_from_slice(&data[from..from + take]);
            at += take as u64;
        }
        Ok(Some(out))
    }

    /// The record at `pos` if it is whole and its checksum holds.
    pub(crate) fn record<D: BlockDevice>(
        &mut self,
        device: &mut D,
        generation: u64,
        pos: u64,
    ) -> Result<Option<(RecordHeader, Vec<u8>)>, DeviceError> {
        let Some(header_bytes) = self.read(device, pos, RECORD_HEADER_BYTES)? else {
            return Ok(None);
        };
        let Some(header) = decode_header(&header_bytes) else {
            return Ok(None);
        };
        let Some(payload) = self.read(device, pos + HEADER, header.payload_len as usize)? else {
            return Ok(None);
        };
        if record_checksum(generation, &header_bytes[..32], &payload) != header.checksum {
            return Ok(None);
        }
        Ok(Some((header, payload)))
    }
}

struct Source<'a, D> {
    device: &'a mut D,
    reader: &'a mut Reader,
}

impl<D: BlockDevice> ObjectSource for Source<'_, D> {
    fn read(&mut self, loc: Loc) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .reader
            .read(self.device, loc.offset, loc.len as usize)?)
    }
}

/// Called for each record of a chain scan with (offset, header, payload); `Ok(false)` stops.
pub(crate) type RecordVisitor<'a> =
    dyn FnMut(u64, &RecordHeader, &[u8]) -> Result<bool, Error> + 'a;

/// End of a chain scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanEnd {
    /// Byte just after the last valid record.
    pub(crate) end: u64,
    /// Checksum of the last valid record.
    pub(crate) chain: u64,
}

/// Follow the record chain from `start` (whose predecessor checksum is `prev`) until a record
/// is missing, fails its checksum or does not chain. Padding: if the position is not sector
/// aligned and holds no valid record, the next record may start at the next sector boundary.
/// `visit` may stop the scan early by returning `Ok(false)`.
pub(crate) fn scan_chain<D: BlockDevice>(
    device: &mut D,
    reader: &mut Reader,
    generation: u64,
    start: u64,
    prev: u64,
    visit: &mut RecordVisitor<'_>,
) -> Result<ScanEnd, Error> {
    let mut pos = start;
    let mut chain = prev;
    loop {
        let mut found = reader
            .record(device, generation, pos)?
            .filter(|(h, _)| h.prev == chain)
            .map(|r| (pos, r));
        if found.is_none() && pos % SECTOR != 0 {
            let aligned = round_up(pos);
            found = reader
                .record(device, generation, aligned)?
                .filter(|(h, _)| h.prev == chain)
                .map(|r| (aligned, r));
        }
        let Some((at, (header, payload))) = found else {
            break;
        };
        if !visit(at, &header, &payload)? {
            break;
        }
        chain = header.checksum;
        pos = at + HEADER + payload.len() as u64;
    }
    Ok(ScanEnd { end: pos, chain })
}

/// Look past a chain break for a record proving that commit `next_seq` had been durable.
fn probe_for_durable_evidence<D: BlockDevice>(
    device: &mut D,
    reader: &mut Reader,
    generation: u64,
    from: u64,
    next_seq: Seq,
) -> Result<Option<u64>, Error> {
    let mut q = round_up(from + 1);
    let limit = (from + PROBE_WINDOW_BYTES).min(reader.end);
    while q + HEADER <= limit {
        if let Some(bytes) = reader.read(device, q, RECORD_HEADER_BYTES)? {
            if let Some(h) = decode_header(&bytes) {
                if h.durable_seq >= next_seq && reader.record(device, generation, q)?.is_some() {
                    return Ok(Some(h.durable_seq));
                }
            }
        }
        q += SECTOR;
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Log
// ---------------------------------------------------------------------------------------------

/// A crash-safe log of commits over a block device, with the current state in memory.
#[derive(Debug)]
pub struct Log<D: BlockDevice> {
    device: D,
    config: Config,
    superblock: Superblock,
    writer: Writer,
    tree: Tree,
    poisoned: bool,
    stats: Stats,
    commits_since_checkpoint: u64,
    commit_bytes_since_checkpoint: u64,
    /// Region bytes in use right after the last compaction.
    compact_floor: u64,
    /// Checkpoints known to be in the active region, oldest first.
    checkpoint_marks: Vec<CheckpointMark>,
    /// Opened with `open_read_only`: every change is refused.
    read_only: bool,
    /// Largest commit record (header + payload) appended or replayed since create/open.
    largest_commit_bytes: u64,
}

struct Recovered {
    tree: Tree,
    last_seq: Seq,
    tail: u64,
    chain: u64,
    checkpoint_seq: Seq,
    replayed: u64,
    commit_bytes: u64,
    largest_commit: u64,
    damage: Option<Damage>,
    /// Region and generation the tail lies in.
    region: u32,
    generation: u64,
}

/// What `open` settled on.
struct Chosen {
    sb: Superblock,
    recovered: Recovered,
    fallback: bool,
    used_orphan: bool,
    found: Option<Damage>,
    lost: Vec<alloc::string::String>,
}

enum RecoverFail {
    Device(DeviceError),
    Damage(Damage),
}

fn damage(kind: DamageKind, offset: u64, last_intact_seq: Seq) -> Damage {
    Damage {
        kind,
        offset,
        last_intact_seq,
        proven_durable_seq: 0,
    }
}

impl From<Error> for RecoverFail {
    fn from(e: Error) -> Self {
        match e {
            Error::Device(d) => RecoverFail::Device(d),
            Error::Damaged(d) => RecoverFail::Damage(d),
            // Loading and replaying produce only device errors and damage.
            _ => RecoverFail::Damage(damage(DamageKind::Structure, 0, 0)),
        }
    }
}

/// Valid superblocks (newest first), a version seen in a valid superblock of another format,
/// and whether some slot held non-zero bytes that are not a valid superblock.
fn read_superblocks<D: BlockDevice>(
    device: &mut D,
) -> Result<(Vec<Superblock>, Option<u32>, bool), OpenError> {
    let mut found = Vec::new();
    let mut other_version = None;
    let mut garbage = false;
    for sector in SUPERBLOCK_SECTORS {
        let mut b = [0u8; SECTOR_SIZE_BYTES];
        device.read_sectors(sector, &mut b)?;
        match Superblock::decode(&b) {
            Ok(sb) => found.push(sb),
            Err(Some(v)) => other_version = Some(v),
            Err(None) => garbage |= b.iter().any(|&x| x != 0),
        }
    }
    found.sort_by_key(|sb| core::cmp::Reverse(sb.sb_seq));
    Ok((found, other_version, garbage))
}

fn write_superblock<D: BlockDevice>(
    device: &mut D,
    stats: &mut Stats,
    sb: &Superblock,
) -> Result<(), DeviceError> {
    let slot = SUPERBLOCK_SECTORS[(sb.sb_seq % 2) as usize];
    device.write_sectors(slot, &sb.encode())?;
    device.flush()?;
    stats.bytes_written += SECTOR;
    stats.flushes += 1;
    Ok(())
}

/// A superblock for the inactive region if it holds a chain of generation `top.generation + 1`
/// (what compaction writes) with at least one checkpoint record: the newest such checkpoint.
fn orphan_superblock<D: BlockDevice>(
    device: &mut D,
    top: &Superblock,
    cache_bytes: u64,
) -> Result<Option<Superblock>, OpenError> {
    let region = 1 - top.active_region;
    let generation = top.generation + 1;
    let (start, end) = region_bounds(top.region_sectors, region);
    let mut reader = Reader::with_cache(start, end, cache_bytes);
    match reader.record(device, generation, start)? {
        Some((h, _)) if h.prev == 0 => {}
        _ => return Ok(None),
    }
    let mut last = None;
    let scanned = scan_chain(
        device,
        &mut reader,
        generation,
        start,
        0,
        &mut |at, h, _| {
            if h.kind == RecordKind::Checkpoint {
                last = Some((at, h.seq, h.checksum));
            }
            Ok(true)
        },
    );
    if let Err(Error::Device(e)) = scanned {
        return Err(OpenError::Device(e));
    }
    Ok(last.map(|(offset, seq, checksum)| Superblock {
        active_region: region,
        generation,
        checkpoint_offset: offset,
        checkpoint_seq: seq,
        checkpoint_checksum: checksum,
        ..*top
    }))
}

/// Where the records after checkpoint `n` start: just after its record if that is intact;
/// otherwise the record at one of the next sector boundaries that chains to it (a checkpoint
/// record is always the last of its batch, so the next batch starts on a boundary).
fn find_resume_start<D: BlockDevice>(
    device: &mut D,
    reader: &mut Reader,
    n: &Superblock,
) -> Result<Option<u64>, DeviceError> {
    if let Some((h, p)) = reader.record(device, n.generation, n.checkpoint_offset)? {
        if h.checksum == n.checkpoint_checksum && h.kind == RecordKind::Checkpoint {
            return Ok(Some(n.checkpoint_offset + HEADER + p.len() as u64));
        }
    }
    let mut b = round_up(n.checkpoint_offset + HEADER + 1);
    let limit = n.checkpoint_offset + HEADER + 4 * SECTOR;
    while b <= limit {
        if let Some((h, _)) = reader.record(device, n.generation, b)? {
            if h.prev == n.checkpoint_checksum {
                return Ok(Some(b));
            }
        }
        b += SECTOR;
    }
    Ok(None)
}

/// Replays commit records onto a tree during recovery.
struct Replay {
    tree: Tree,
    next: Seq,
    replayed: u64,
    commit_bytes: u64,
    largest_commit: u64,
    structure: Option<Damage>,
}

impl Replay {
    fn visit(&mut self, at: u64, h: &RecordHeader, payload: &[u8]) -> Result<bool, Error> {
        if h.kind != RecordKind::Commit {
            return Ok(true);
        }
        let commit = (h.seq == self.next)
            .then(|| from_bytes_exact::<Commit>(payload))
            .flatten()
            .filter(|c| validate_commit(c).is_ok());
        let Some(commit) = commit else {
            self.structure = Some(damage(DamageKind::Structure, at, self.next - 1));
            return Ok(false);
        };
        for m in commit.mutations {
            self.tree.apply(m);
        }
        self.next += 1;
        self.replayed += 1;
        self.commit_bytes += HEADER + payload.len() as u64;
        self.largest_commit = self.largest_commit.max(HEADER + payload.len() as u64);
        Ok(true)
    }
}

/// Recover the state named by one superblock.
fn recover_from<D: BlockDevice>(
    device: &mut D,
    sb: &Superblock,
    resume: Option<&Superblock>,
    lenient: Option<&mut Vec<alloc::string::String>>,
    cache_bytes: u64,
) -> Result<Recovered, RecoverFail> {
    let (start, end) = region_bounds(sb.region_sectors, sb.active_region);
    let mut reader = Reader::with_cache(start, end, cache_bytes);
    let ckpt_damage = damage(DamageKind::Checkpoint, sb.checkpoint_offset, 0);
    let (header, payload) = reader
        .record(device, sb.generation, sb.checkpoint_offset)
        .map_err(RecoverFail::Device)?
        .ok_or(RecoverFail::Damage(ckpt_damage))?;
    if header.kind != RecordKind::Checkpoint
        || header.checksum != sb.checkpoint_checksum
        || header.seq != sb.checkpoint_seq
    {
        return Err(RecoverFail::Damage(ckpt_damage));
    }
    let wire: CheckpointWire =
        from_bytes_exact(&payload).ok_or(RecoverFail::Damage(ckpt_damage))?;
    let mut source = Source {
        device: &mut *device,
        reader: &mut reader,
    };
    let tree = match lenient {
        Some(lost) => Tree::load_lenient(&mut source, wire.tree, wire.blobs, lost)?,
        None => {
            let tree = Tree::load(&mut source, wire.tree, wire.blobs)?;
            if tree.node_count != wire.node_count || tree.blobs.len() as u64 != wire.blob_count {
                return Err(RecoverFail::Damage(ckpt_damage));
            }
            tree
        }
    };
    let mut replay = Replay {
        tree,
        next: sb.checkpoint_seq + 1,
        replayed: 0,
        commit_bytes: 0,
        largest_commit: 0,
        structure: None,
    };
    let scan_start = sb.checkpoint_offset + HEADER + payload.len() as u64;
    let mut scan = scan_chain(
        device,
        &mut reader,
        sb.generation,
        scan_start,
        header.checksum,
        &mut |at, h, p| replay.visit(at, h, p),
    )?;
    // Falling back from a newer checkpoint whose objects are damaged: the chain may break in
    // those objects. Commits are all that matters for the state, so once every commit up to
    // the newer checkpoint is replayed, continue after that checkpoint's (intact) record.
    let mut tail_region = (sb.active_region, sb.generation);
    let mut extra_probe: Option<(Reader, u64)> = None;
    if let Some(n) = resume {
        if replay.next == n.checkpoint_seq + 1 {
            let same = n.active_region == sb.active_region && n.generation == sb.generation;
            let mut r = if same {
                core::mem::replace(&mut reader, Reader::new(0, 0))
            } else {
                let (start, end) = region_bounds(n.region_sectors, n.active_region);
                Reader::with_cache(start, end, cache_bytes)
            };
            match find_resume_start(device, &mut r, n).map_err(RecoverFail::Device)? {
                Some(start) => {
                    scan = scan_chain(
                        device,
                        &mut r,
                        n.generation,
                        start,
                        n.checkpoint_checksum,
                        &mut |at, h, p| replay.visit(at, h, p),
                    )?;
                    tail_region = (n.active_region, n.generation);
                    reader = r;
                }
                None if same => reader = r,
                None => extra_probe = Some((r, n.checkpoint_offset)),
            }
        }
    }
    let Replay {
        tree,
        next,
        replayed,
        commit_bytes,
        largest_commit,
        structure,
    } = replay;
    let last_seq = next - 1;
    let mut found_damage = structure;
    if found_damage.is_none() {
        if let Some(proven) =
            probe_for_durable_evidence(device, &mut reader, tail_region.1, scan.end, next)?
        {
            found_damage = Some(Damage {
                kind: DamageKind::LogRecord,
                offset: scan.end,
                last_intact_seq: last_seq,
                proven_durable_seq: proven,
            });
        }
    }
    if let (None, Some((mut r, from))) = (found_damage, extra_probe) {
        let generation = resume.map_or(0, |n| n.generation);
        if let Some(proven) = probe_for_durable_evidence(device, &mut r, generation, from, next)? {
            found_damage = Some(Damage {
                kind: DamageKind::Checkpoint,
                offset: from,
                last_intact_seq: last_seq,
                proven_durable_seq: proven,
            });
        }
    }
    Ok(Recovered {
        tree,
        last_seq,
        tail: round_up(scan.end),
        chain: scan.chain,
        checkpoint_seq: sb.checkpoint_seq,
        replayed,
        commit_bytes,
        largest_commit,
        damage: found_damage,
        region: tail_region.0,
        generation: tail_region.1,
    })
}

impl<D: BlockDevice> Log<D> {
    /// Format `device` with an empty state (commit 0) and open it.
    pub fn create(mut device: D, config: Config) -> Result<Self, OpenError> {
        let (region_sectors, sector_count) = check_geometry(&device)?;
        let (old, _, _) = read_superblocks(&mut device)?;
        let generation = old.iter().map(|s| s.generation).max().unwrap_or(0) + 1;
        let sb_seq = old.iter().map(|s| s.sb_seq).max().unwrap_or(0) + 1;
        let mut log = Log {
            device,
            config,
            superblock: Superblock {
                sb_seq: sb_seq - 1,
                sector_count,
                region_sectors,
                active_region: 0,
                generation,
                checkpoint_offset: 0,
                checkpoint_seq: 0,
                checkpoint_checksum: 0,
            },
            writer: Writer::new(generation, 0, region_sectors, None),
            tree: Tree::new(),
            poisoned: false,
            stats: Stats::default(),
            commits_since_checkpoint: 0,
            commit_bytes_since_checkpoint: 0,
            compact_floor: 0,
            checkpoint_marks: Vec::new(),
            read_only: false,
            largest_commit_bytes: 0,
        };
        // Invalidate the other slot first so no superblock of an older format survives.
        let other = SUPERBLOCK_SECTORS[((sb_seq + 1) % 2) as usize];
        log.device.write_sectors(other, &[0u8; SECTOR_SIZE_BYTES])?;
        let to_open_error = |e: Error| match e {
            Error::Device(d) => OpenError::Device(d),
            _ => OpenError::NoSpace,
        };
        log.checkpoint().map_err(to_open_error)?;
        // Write the same state to the other slot too, so that from the start one damaged
        // superblock always leaves a valid one.
        let sb = log.superblock;
        log.switch_superblock(
            sb.active_region,
            sb.generation,
            sb.checkpoint_offset,
            sb.checkpoint_checksum,
        )
        .map_err(to_open_error)?;
        Ok(log)
    }

    /// Open a formatted device and recover the newest durable state. Damage that loses durable
    /// commits is an error (`OpenError::Damaged`); a torn or missing tail is not.
    pub fn open(device: D, config: Config) -> Result<(Self, Recovery), OpenError> {
        Self::open_with(device, config, false, false)
    }

    /// Recover without writing anything (for the offline inspector): no repair compaction, no
    /// checkpoint; the returned log serves state and history but refuses every change
    /// (`Error::ReadOnly`). With `salvage`, damage is reported in `Recovery` as by
    /// `open_salvage`, but nothing is rewritten.
    pub fn open_read_only(
        device: D,
        config: Config,
        salvage: bool,
    ) -> Result<(Self, Recovery), OpenError> {
        Self::open_with(device, config, salvage, true)
    }

    /// Like `open`, but on damage return the newest intact state (reported in
    /// `Recovery::damage`) and compact it into the other region, discarding the rest.
    pub fn open_salvage(device: D, config: Config) -> Result<(Self, Recovery), OpenError> {
        Self::open_with(device, config, true, false)
    }

    fn open_with(
        mut device: D,
        config: Config,
        salvage: bool,
        read_only: bool,
    ) -> Result<(Self, Recovery), OpenError> {
        let (region_sectors, sector_count) = check_geometry(&device)?;
        let (candidates, other_version, garbage) = read_superblocks(&mut device)?;
        let Some(newest) = candidates.first().copied() else {
            return Err(match (other_version, garbage) {
                (Some(version), _) => OpenError::UnsupportedVersion { version },
                (None, true) => OpenError::Damaged(damage(DamageKind::Superblock, 0, 0)),
                (None, false) => OpenError::NotFormatted,
            });
        };
        for sb in &candidates {
            if sb.sector_count != sector_count || sb.region_sectors != region_sectors {
                return Err(OpenError::GeometryMismatch {
                    formatted_sectors: sb.sector_count,
                    device_sectors: sector_count,
                });
            }
        }
        // A complete compaction output that the newest valid superblock does not name (the
        // switch was lost to a crash, or that superblock is damaged) holds the same or a newer
        // state: use it when it recovers further.
        let mut orphan = match orphan_superblock(&mut device, &newest, config.read_cache_bytes)? {
            Some(v) => match recover_from(&mut device, &v, None, None, config.read_cache_bytes) {
                Ok(r) if r.damage.is_none() => Some((v, r)),
                Ok(_) | Err(RecoverFail::Damage(_)) => None,
                Err(RecoverFail::Device(e)) => return Err(OpenError::Device(e)),
            },
            None => None,
        };
        let mut first_damage: Option<Damage> = None;
        let last_index = candidates.len() - 1;
        let mut chosen: Option<Chosen> = None;
        for (i, candidate) in candidates.iter().enumerate() {
            let resume = (i > 0).then_some(&newest);
            let mut sb = *candidate;
            let mut recovered =
                match recover_from(&mut device, &sb, resume, None, config.read_cache_bytes) {
                    Ok(r) => r,
                    Err(RecoverFail::Device(e)) => return Err(OpenError::Device(e)),
                    Err(RecoverFail::Damage(d)) => {
                        log::warn!("persist: superblock {} unusable: {:?}", sb.sb_seq, d);
                        first_damage.get_or_insert(d);
                        match orphan.take() {
                            Some((v, r)) if i == last_index => {
                                // Nothing else left: the orphan region is all there is.
                                sb = v;
                                r
                            }
                            other => {
                                orphan = other;
                                continue;
                            }
                        }
                    }
                };
            let mut used_orphan = sb.generation != candidate.generation;
            if let Some((v, r)) = orphan.take() {
                if r.last_seq > recovered.last_seq {
                    log::warn!("persist: recovering from the unswitched compaction output");
                    sb = v;
                    recovered = r;
                    used_orphan = true;
                }
            }
            let fallback = i > 0 && !used_orphan;
            let mut found = recovered.damage;
            if fallback && recovered.last_seq < newest.checkpoint_seq && found.is_none() {
                // The newest checkpoint was durable, and we could not get back to it.
                let mut d = first_damage.unwrap_or(damage(DamageKind::Checkpoint, 0, 0));
                d.proven_durable_seq = newest.checkpoint_seq;
                found = Some(d);
            }
            chosen = Some(Chosen {
                sb,
                recovered,
                fallback,
                used_orphan,
                found,
                lost: Vec::new(),
            });
            break;
        }
        if chosen.is_none() && salvage {
            // No checkpoint loads intact: take the newest one whose record is readable, leaving
            // out the damaged subtrees.
            for candidate in &candidates {
                let mut lost = Vec::new();
                match recover_from(
                    &mut device,
                    candidate,
                    None,
                    Some(&mut lost),
                    config.read_cache_bytes,
                ) {
                    Ok(recovered) => {
                        let found = first_damage.or(recovered.damage);
                        chosen = Some(Chosen {
                            sb: *candidate,
                            recovered,
                            fallback: true,
                            used_orphan: false,
                            found,
                            lost,
                        });
                        break;
                    }
                    Err(RecoverFail::Device(e)) => return Err(OpenError::Device(e)),
                    Err(RecoverFail::Damage(_)) => {}
                }
            }
        }
        let Some(Chosen {
            sb,
            recovered,
            fallback,
            used_orphan,
            mut found,
            lost,
        }) = chosen
        else {
            let d = first_damage.unwrap_or(damage(DamageKind::Checkpoint, 0, 0));
            return Err(if salvage {
                OpenError::Unrecoverable(d)
            } else {
                OpenError::Damaged(d)
            });
        };
        if let Some(d) = found.as_mut() {
            d.last_intact_seq = recovered.last_seq;
            if !salvage {
                return Err(OpenError::Damaged(*d));
            }
            log::error!("persist: salvaging after damage {:?}, lost {:?}", d, lost);
        }
        let mut writer = Writer::new(
            recovered.generation,
            recovered.region,
            region_sectors,
            Some(recovered.tail),
        );
        writer.chain = recovered.chain;
        writer.last_seq = recovered.last_seq;
        writer.durable_seq = recovered.last_seq;
        let mut log = Log {
            device,
            config,
            superblock: Superblock {
                sb_seq: newest.sb_seq,
                ..sb
            },
            writer,
            tree: recovered.tree,
            poisoned: false,
            stats: Stats::default(),
            commits_since_checkpoint: recovered.replayed,
            commit_bytes_since_checkpoint: recovered.commit_bytes,
            compact_floor: 0,
            checkpoint_marks: Vec::new(),
            read_only,
            largest_commit_bytes: recovered.largest_commit,
        };
        if !fallback && found.is_none() {
            log.checkpoint_marks.push(CheckpointMark {
                seq: sb.checkpoint_seq,
                offset: sb.checkpoint_offset,
                checksum: sb.checkpoint_checksum,
            });
        }
        let to_open_error = |e: Error| match e {
            Error::Device(d) => OpenError::Device(d),
            _ => OpenError::NoSpace,
        };
        if read_only {
            // Nothing is written.
        } else if found.is_some() || fallback {
            // Leave the damaged region (or the damaged checkpoint) behind for good. With
            // lost subtrees the log cannot hold history that refers to them: keep none.
            if !lost.is_empty() {
                log.config.history_commits = 0;
            }
            let compacted = log.compact();
            log.config = config;
            compacted.map_err(to_open_error)?;
        } else if used_orphan {
            // Name the recovered region in a superblock now.
            log.checkpoint().map_err(to_open_error)?;
        }
        let recovery = Recovery {
            seq: recovered.last_seq,
            checkpoint_seq: recovered.checkpoint_seq,
            replayed_commits: recovered.replayed,
            used_fallback_superblock: fallback,
            damage: found,
            lost,
        };
        Ok((log, recovery))
    }

    fn check_poisoned(&self) -> Result<(), Error> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Run `f`; any error other than a rejected input poisons the log.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        self.check_poisoned()?;
        let r = f(self);
        if let Err(e) = &r {
            if !matches!(
                e,
                Error::InvalidPath(_)
                    | Error::Limit(_)
                    | Error::NotInHistory { .. }
                    | Error::ReadOnly
            ) {
                self.poisoned = true;
            }
        }
        r
    }

    /// Add a commit: it is applied to the in-memory state at once and becomes durable at the
    /// next `sync` (or earlier). Returns its sequence number. Nothing is applied on `Err`.
    pub fn append(&mut self, commit: Commit) -> Result<Seq, Error> {
        self.check_poisoned()?;
        validate_commit(&commit)?;
        let payload = to_vec(&commit);
        // `Commit::encoded_len` / `CommitSize` promise callers exactly this length.
        debug_assert_eq!(payload.len(), commit.encoded_len());
        if payload.len() > COMMIT_LEN_MAX_BYTES {
            return Err(Error::Limit(crate::error::LimitError::CommitTooLarge {
                len: payload.len(),
            }));
        }
        let record_bytes = HEADER + payload.len() as u64;
        let region_bytes = self.region_bytes();
        if round_up(record_bytes) + COMMIT_REGION_MARGIN > region_bytes {
            return Err(Error::Limit(
                crate::error::LimitError::CommitExceedsRegion {
                    len: payload.len(),
                    region_bytes,
                },
            ));
        }
        self.largest_commit_bytes = self.largest_commit_bytes.max(record_bytes);
        if !self.writer.fits(payload.len()) {
            // Make room: compaction drops history before giving up.
            self.compact()?;
            if !self.writer.fits(payload.len()) {
                // Everything is durable and consistent: refuse this commit only.
                return Err(Error::NoSpace {
                    needed_bytes: record_bytes,
                    region_bytes,
                });
            }
        }
        self.guarded(|log| {
            let seq = log.writer.last_seq + 1;
            assert!(log.writer.durable_seq < seq);
            log.writer.last_seq = seq;
            log.writer.push(
                &mut log.device,
                &mut log.stats,
                RecordKind::Commit,
                seq,
                &payload,
            )?;
            for m in commit.mutations {
                log.tree.apply(m);
            }
            log.commits_since_checkpoint += 1;
            log.commit_bytes_since_checkpoint += HEADER + payload.len() as u64;
            Ok(seq)
        })
    }

    /// Make every appended commit durable (one write and one flush for the whole group).
    /// Returns the durable sequence number: replies for commits ≤ it may be released.
    pub fn sync(&mut self) -> Result<Seq, Error> {
        self.guarded(|log| {
            log.writer.write_out(&mut log.device, &mut log.stats)?;
            if log.config.auto_maintenance {
                log.maintenance()?;
            }
            Ok(log.writer.durable_seq)
        })
    }

    /// Run a checkpoint and/or compaction if due. (Called by `sync` with `auto_maintenance`.)
    pub fn maintenance(&mut self) -> Result<(), Error> {
        self.guarded(|log| {
            if log.compaction_due() {
                log.compact()
            } else if log.commits_since_checkpoint >= log.config.checkpoint_interval_commits
                || log.commit_bytes_since_checkpoint >= log.config.checkpoint_interval_bytes
            {
                log.checkpoint()
            } else {
                Ok(())
            }
        })
    }

    fn compaction_due(&self) -> bool {
        let region = self.writer.region_end - self.writer.region_start;
        let threshold = region * u64::from(self.config.compact_at_percent.min(90)) / 100;
        let grown = (self
            .compact_floor
            .saturating_mul(self.config.compact_growth_factor.max(2)))
        .max(self.config.compact_min_bytes);
        // Let the log grow by at least 1/16 of the free space between compactions, so a live
        // state close to the threshold does not compact at every sync.
        let floor = self.compact_floor.min(region);
        let target = threshold.min(grown).max(floor + (region - floor) / 16);
        let used = self.writer.used_bytes();
        // Keep room for the next big commits so that `append` rarely has to compact on the
        // request path; pointless if a compaction could not make that room.
        let reserve = self.commit_reserve();
        let short_of_room = used + reserve > region
            && self.tree.stored_bytes_estimate() + 2 * reserve <= region
            && used > floor;
        used > target || short_of_room
    }

    /// Write the changed part of the tree and a checkpoint record, flush, and point the
    /// superblock at it. Makes all appended commits durable.
    pub fn checkpoint(&mut self) -> Result<(), Error> {
        self.guarded(|log| {
            let attempt = log.checkpoint_in_place();
            match attempt {
                Err(Error::NoSpace { .. }) => log.compact(),
                other => other,
            }
        })
    }

    fn checkpoint_in_place(&mut self) -> Result<(), Error> {
        let mut sink = AppendSink::new(&mut self.writer, &mut self.device, &mut self.stats);
        let (tree, blobs) = self.tree.store(&mut sink)?;
        sink.finish()?;
        let (offset, checksum) = self.push_checkpoint(tree, blobs)?;
        self.writer.write_out(&mut self.device, &mut self.stats)?;
        self.switch_superblock(self.writer.region, self.writer.generation, offset, checksum)?;
        self.checkpoint_marks.push(CheckpointMark {
            seq: self.writer.last_seq,
            offset,
            checksum,
        });
        self.stats.checkpoints += 1;
        self.commits_since_checkpoint = 0;
        self.commit_bytes_since_checkpoint = 0;
        Ok(())
    }

    fn push_checkpoint(&mut self, tree: ObjRef, blobs: ObjRef) -> Result<(u64, u64), Error> {
        let wire = CheckpointWire {
            tree,
            blobs,
            node_count: self.tree.node_count,
            blob_count: self.tree.blobs.len() as u64,
        };
        let payload = to_vec(&wire);
        let offset = self.writer.next_offset();
        let seq = self.writer.last_seq;
        let (_, checksum) = self.writer.push(
            &mut self.device,
            &mut self.stats,
            RecordKind::Checkpoint,
            seq,
            &payload,
        )?;
        Ok((offset, checksum))
    }

    fn switch_superblock(
        &mut self,
        region: u32,
        generation: u64,
        checkpoint_offset: u64,
        checkpoint_checksum: u64,
    ) -> Result<(), Error> {
        let sb = Superblock {
            sb_seq: self.superblock.sb_seq + 1,
            active_region: region,
            generation,
            checkpoint_offset,
            checkpoint_seq: self.writer.last_seq,
            checkpoint_checksum,
            ..self.superblock
        };
        write_superblock(&mut self.device, &mut self.stats, &sb)?;
        self.superblock = sb;
        Ok(())
    }

    /// Copy the live state and the history window into the other region, then switch the
    /// superblock to it. Crash-safe: until the superblock write is durable, recovery uses the
    /// old region, which compaction never writes.
    pub fn compact(&mut self) -> Result<(), Error> {
        self.guarded(|log| log.compact_inner())
    }

    fn compact_inner(&mut self) -> Result<(), Error> {
        self.writer.write_out(&mut self.device, &mut self.stats)?;
        let written_before = self.stats.bytes_written;
        let region = self.region_bytes();
        // The history window yields to space: its commit records may take at most a quarter
        // of what the compaction threshold leaves beside the live state and the reserve for
        // the next commits, so a compaction always leaves room to work in.
        let live = self.tree.stored_bytes_estimate();
        let threshold = region * u64::from(self.config.compact_at_percent.clamp(1, 90)) / 100;
        let budget = threshold.saturating_sub(live + self.commit_reserve()) / 4;
        let attempt = match self.compact_attempt(budget) {
            Err(Error::NoSpace { .. }) if budget > 0 => {
                // The window (or the base tree it needs) did not fit after all: keep none.
                log::warn!("persist: compaction without history (live state ~{live} bytes)");
                self.compact_attempt(0)
            }
            other => other,
        };
        attempt?;
        self.stats.compactions += 1;
        self.stats.compaction_bytes_written += self.stats.bytes_written - written_before;
        self.stats.checkpoints += 1;
        self.commits_since_checkpoint = 0;
        self.commit_bytes_since_checkpoint = 0;
        self.compact_floor = self.writer.used_bytes();
        Ok(())
    }

    /// Bytes the active region should keep free for the next commits: two of the largest
    /// commit records seen, plus bookkeeping.
    fn commit_reserve(&self) -> u64 {
        2 * round_up(self.largest_commit_bytes) + REGION_BOOKKEEPING_BYTES
    }

    /// One compaction into the inactive region with a history window of at most
    /// `window_bytes_max` bytes of commit records. Changes nothing but the inactive region
    /// (and the tree's cached object locations) unless it succeeds.
    fn compact_attempt(&mut self, window_bytes_max: u64) -> Result<(), Error> {
        let head = self.writer.last_seq;
        let old = (
            self.writer.region_start,
            self.writer.region_end,
            self.writer.generation,
        );
        let mut reader = Reader::with_cache(old.0, old.1, self.config.read_cache_bytes);

        // The history window: commit records after `base`, and the tree at `base`.
        let wanted_base = head.saturating_sub(self.config.history_commits);
        let plan = if window_bytes_max == 0 {
            None
        } else {
            crate::history::plan_window(
                &mut self.device,
                &mut reader,
                old.2,
                old.0,
                &self.checkpoint_marks,
                wanted_base,
                head,
                window_bytes_max,
            )?
        };

        let new_region = 1 - self.writer.region;
        let new_generation = self.writer.generation + 1;
        let mut writer = Writer::new(
            new_generation,
            new_region,
            self.superblock.region_sectors,
            None,
        );
        writer.last_seq = head;
        writer.durable_seq = head;
        let mut new_marks = Vec::new();
        let mut sink = RelocateSink {
            inner: AppendSink::new(&mut writer, &mut self.device, &mut self.stats),
            written: HashMap::new(),
        };
        if let Some(mut plan) = plan {
            // Base checkpoint, then the window's commits, copied byte for byte.
            let (t, b) = plan.base_tree.store(&mut sink)?;
            sink.inner.finish()?;
            let wire = CheckpointWire {
                tree: t,
                blobs: b,
                node_count: plan.base_tree.node_count,
                blob_count: plan.base_tree.blobs.len() as u64,
            };
            drop(plan.base_tree);
            let w = &mut *sink.inner.writer;
            let offset = w.next_offset();
            let (_, checksum) = w.push(
                sink.inner.device,
                sink.inner.stats,
                RecordKind::Checkpoint,
                plan.base_seq,
                &to_vec(&wire),
            )?;
            new_marks.push(CheckpointMark {
                seq: plan.base_seq,
                offset,
                checksum,
            });
            for (seq, at) in plan.commits.drain(..) {
                let (_, payload) = reader
                    .record(sink.inner.device, old.2, at)?
                    .filter(|(h, _)| h.seq == seq && h.kind == RecordKind::Commit)
                    .ok_or(Error::Damaged(damage(DamageKind::LogRecord, at, seq - 1)))?;
                sink.inner.writer.push(
                    sink.inner.device,
                    sink.inner.stats,
                    RecordKind::Commit,
                    seq,
                    &payload,
                )?;
            }
        }
        drop(reader);
        let (tree, blobs) = self.tree.store(&mut sink)?;
        sink.inner.finish()?;
        drop(sink);
        // The head checkpoint record, still in the new writer: on NoSpace nothing is switched.
        let wire = CheckpointWire {
            tree,
            blobs,
            node_count: self.tree.node_count,
            blob_count: self.tree.blobs.len() as u64,
        };
        let offset = writer.next_offset();
        let (_, checksum) = writer.push(
            &mut self.device,
            &mut self.stats,
            RecordKind::Checkpoint,
            head,
            &to_vec(&wire),
        )?;
        writer.write_out(&mut self.device, &mut self.stats)?;
        core::mem::swap(&mut self.writer, &mut writer);
        self.switch_superblock(new_region, new_generation, offset, checksum)?;
        new_marks.push(CheckpointMark {
            seq: head,
            offset,
            checksum,
        });
        self.checkpoint_marks = new_marks;
        Ok(())
    }

    // ---- state access ------------------------------------------------------------------

    /// Newest appended commit (durable or not).
    pub fn last_seq(&self) -> Seq {
        self.writer.last_seq
    }
    /// Newest durable commit.
    pub fn durable_seq(&self) -> Seq {
        self.writer.durable_seq
    }
    /// The record of the node at `path` in the current state.
    pub fn node(&self, path: &str) -> Option<&NodeRecord> {
        self.tree.node(path)
    }
    /// Sorted child names of `path` (including implicit directories).
    pub fn children(&self, path: &str) -> Option<Vec<alloc::string::String>> {
        self.tree.children(path)
    }
    /// Number of nodes with a record.
    pub fn node_count(&self) -> u64 {
        self.tree.node_count
    }
    /// Visit every node (path, record) in sorted path order.
    pub fn for_each_node(&self, mut f: impl FnMut(&str, &NodeRecord)) {
        self.tree.visit(&mut f)
    }
    /// A state blob.
    pub fn blob(&self, key: &str) -> Option<&[u8]> {
        self.tree.blob(key)
    }
    /// Visit every state blob in key order.
    pub fn for_each_blob(&self, mut f: impl FnMut(&str, &[u8])) {
        self.tree.visit_blobs(&mut f)
    }
    /// A plain copy of the whole state.
    pub fn snapshot(&self) -> Snapshot {
        self.tree.snapshot()
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Bytes of the active region in use (including unwritten batch).
    pub fn log_bytes(&self) -> u64 {
        self.writer.used_bytes()
    }
    /// Size of one region in bytes.
    pub fn region_bytes(&self) -> u64 {
        self.writer.region_end - self.writer.region_start
    }
    /// How the device size compares with the live state and the largest commit seen (the
    /// space rule). O(nodes): call it now and then (e.g. after a compaction), not per request.
    pub fn space_report(&self) -> SpaceReport {
        let region_bytes = self.region_bytes();
        let live_bytes = self.tree.stored_bytes_estimate();
        let largest_commit_bytes = self.largest_commit_bytes;
        let required = required_region_bytes(live_bytes, largest_commit_bytes);
        let recommended = recommended_region_bytes(live_bytes, largest_commit_bytes);
        SpaceReport {
            region_bytes,
            used_bytes: self.writer.used_bytes(),
            live_bytes,
            largest_commit_bytes,
            required_region_bytes: required,
            recommended_region_bytes: recommended,
            fits: required <= region_bytes,
            comfortable: recommended <= region_bytes,
        }
    }
    /// Commits appended since the last checkpoint (recovery replays at most this many).
    pub fn commits_since_checkpoint(&self) -> u64 {
        self.commits_since_checkpoint
    }
    /// Whether an earlier failure requires re-opening.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
    /// The device (read-only access, e.g. counters of a `SimDevice`).
    pub fn device(&self) -> &D {
        &self.device
    }
    /// The device, mutably (fault injection in tests). Writing to it corrupts the log.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }
    /// The device (e.g. to crash a `SimDevice` in tests). Unsynced commits are not written.
    pub fn into_device(self) -> D {
        self.device
    }
    pub(crate) fn history_parts(&mut self) -> (&mut D, Reader, u64, u64) {
        let reader = Reader::with_cache(
            self.writer.region_start,
            self.writer.region_end,
            self.config.read_cache_bytes,
        );
        (
            &mut self.device,
            reader,
            self.writer.generation,
            self.writer.region_start,
        )
    }
    pub(crate) fn flush_pending(&mut self) -> Result<(), Error> {
        if self.read_only {
            // Nothing can be pending.
            return if self.poisoned {
                Err(Error::Poisoned)
            } else {
                Ok(())
            };
        }
        self.guarded(|log| log.writer.write_out(&mut log.device, &mut log.stats))
    }
}

fn check_geometry<D: BlockDevice>(device: &D) -> Result<(u64, u64), OpenError> {
    if device.sector_size() as usize != SECTOR_SIZE_BYTES {
        return Err(OpenError::UnsupportedSectorSize {
            sector_size: device.sector_size(),
        });
    }
    let count = device.sector_count();
    let needed = RESERVED_SECTORS + 2 * REGION_SECTORS_MIN;
    if count < needed {
        return Err(OpenError::DeviceTooSmall {
            sector_count: count,
            needed,
        });
    }
    Ok(((count - RESERVED_SECTORS) / 2, count))
}
