//! History reading for debugging tools: the tree at a commit, the list of commits with their
//! causes, the commits touching a path, the difference between two commits.
//!
//! History covers the active log region: from its first checkpoint (the base written by the
//! last compaction, `Config::history_commits` behind the head at that time) to the newest
//! commit. Reading scans the region; it is meant for tools, not for the request path.

use alloc::string::String;
use alloc::vec::Vec;

use crate::commit::{Commit, Mutation, Seq, validate_commit};
use crate::device::BlockDevice;
use crate::error::{Damage, DamageKind, Error};
use crate::format::{CheckpointWire, NodeRecord, RecordKind, from_bytes_exact};
use crate::log::{Log, Reader, scan_chain};
use crate::tree::{ObjectSource, Snapshot, Tree};

/// One commit read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEntry {
    pub seq: Seq,
    pub commit: Commit,
}

/// The state as of one commit (read-only).
#[derive(Debug)]
pub struct TreeAt {
    pub seq: Seq,
    tree: Tree,
}

impl TreeAt {
    pub fn node(&self, path: &str) -> Option<&NodeRecord> {
        self.tree.node(path)
    }
    pub fn children(&self, path: &str) -> Option<Vec<String>> {
        self.tree.children(path)
    }
    pub fn blob(&self, key: &str) -> Option<&[u8]> {
        self.tree.blob(key)
    }
    pub fn for_each_node(&self, mut f: impl FnMut(&str, &NodeRecord)) {
        self.tree.visit(&mut f)
    }
    pub fn snapshot(&self) -> Snapshot {
        self.tree.snapshot()
    }
}

/// Differences between two states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub blobs_added: Vec<String>,
    pub blobs_removed: Vec<String>,
    pub blobs_changed: Vec<String>,
}

#[derive(Debug)]
enum Entry {
    Checkpoint {
        seq: Seq,
        wire: CheckpointWire,
    },
    /// `len`: record bytes (header + payload).
    Commit {
        seq: Seq,
        offset: u64,
        len: u64,
    },
}

/// Every checkpoint and commit record of the region, in log order.
fn index_region<D: BlockDevice>(
    device: &mut D,
    reader: &mut Reader,
    generation: u64,
    region_start: u64,
) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    scan_chain(
        device,
        reader,
        generation,
        region_start,
        0,
        &mut |at, h, payload| {
            match h.kind {
                RecordKind::Commit => entries.push(Entry::Commit {
                    seq: h.seq,
                    offset: at,
                    len: crate::format::RECORD_HEADER_BYTES as u64 + payload.len() as u64,
                }),
                RecordKind::Checkpoint => {
                    if let Some(wire) = from_bytes_exact::<CheckpointWire>(payload) {
                        entries.push(Entry::Checkpoint { seq: h.seq, wire });
                    }
                }
                RecordKind::Object => {}
            }
            Ok(true)
        },
    )?;
    Ok(entries)
}

struct Src<'a, D> {
    device: &'a mut D,
    reader: &'a mut Reader,
}
impl<D: BlockDevice> ObjectSource for Src<'_, D> {
    fn read(&mut self, loc: crate::format::Loc) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .reader
            .read(self.device, loc.offset, loc.len as usize)?)
    }
}

fn read_commit<D: BlockDevice>(
    device: &mut D,
    reader: &mut Reader,
    generation: u64,
    seq: Seq,
    offset: u64,
) -> Result<Commit, Error> {
    let bad = Error::Damaged(Damage {
        kind: DamageKind::LogRecord,
        offset,
        last_intact_seq: seq.saturating_sub(1),
        proven_durable_seq: 0,
    });
    let (h, payload) = reader
        .record(device, generation, offset)?
        .ok_or(bad.clone())?;
    if h.kind != RecordKind::Commit || h.seq != seq {
        return Err(bad);
    }
    let commit: Commit = from_bytes_exact(&payload).ok_or(bad.clone())?;
    validate_commit(&commit).map_err(|_| bad)?;
    Ok(commit)
}

/// Materialize the tree at `target` from the index: latest checkpoint ≤ target, then replay.
fn tree_at_index<D: BlockDevice>(
    device: &mut D,
    reader: &mut Reader,
    generation: u64,
    entries: &[Entry],
    target: Seq,
) -> Result<Option<Tree>, Error> {
    let mut start = None;
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Checkpoint { seq, .. } = e {
            if *seq <= target {
                start = Some(i);
            }
        }
    }
    let Some(start) = start else {
        return Ok(None);
    };
    let Entry::Checkpoint { seq: base, wire } = &entries[start] else {
        return Ok(None);
    };
    let mut tree = Tree::load(
        &mut Src {
            device: &mut *device,
            reader: &mut *reader,
        },
        wire.tree,
        wire.blobs,
    )?;
    let mut next = *base + 1;
    for e in &entries[start + 1..] {
        if let Entry::Commit { seq, offset, .. } = e {
            if *seq > target {
                break;
            }
            if *seq != next {
                return Ok(None);
            }
            let commit = read_commit(device, reader, generation, *seq, *offset)?;
            for m in commit.mutations {
                tree.apply(m);
            }
            next += 1;
        }
    }
    Ok((next - 1 == target).then_some(tree))
}

/// What compaction copies: the tree at `base_seq` and the commit records after it.
pub(crate) struct WindowPlan {
    pub(crate) base_seq: Seq,
    pub(crate) base_tree: Tree,
    /// (seq, record offset) of every commit after `base_seq`, ascending.
    pub(crate) commits: Vec<(Seq, u64)>,
}

/// A checkpoint written in the active region during this session: lets compaction start from
/// it instead of scanning the whole region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointMark {
    pub(crate) seq: Seq,
    pub(crate) offset: u64,
    pub(crate) checksum: u64,
}

/// Plan a history window starting at `wanted_base` (or the oldest checkpoint if later), then
/// moved forward until the window's commit records take at most `window_bytes_max` bytes.
/// `None` when there is no window to keep or the old region cannot provide one intact
/// (history is best effort: compaction then keeps only the live state).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_window<D: BlockDevice>(
    device: &mut D,
    reader: &mut Reader,
    generation: u64,
    region_start: u64,
    marks: &[CheckpointMark],
    wanted_base: Seq,
    head: Seq,
    window_bytes_max: u64,
) -> Result<Option<WindowPlan>, Error> {
    if wanted_base >= head {
        return Ok(None);
    }
    // The checkpoint to start from and every commit after it, in order.
    let mark = marks.iter().rev().find(|m| m.seq <= wanted_base);
    let fast = match mark {
        Some(m) => match reader.record(device, generation, m.offset)? {
            Some((h, payload)) if h.checksum == m.checksum && h.kind == RecordKind::Checkpoint => {
                from_bytes_exact::<CheckpointWire>(&payload).map(|wire| (m, wire, payload.len()))
            }
            _ => None,
        },
        None => None,
    };
    let (start_seq, wire, commits) = match fast {
        Some((m, wire, len)) => {
            let mut commits = Vec::new();
            let start = m.offset + crate::format::RECORD_HEADER_BYTES as u64 + len as u64;
            scan_chain(
                device,
                reader,
                generation,
                start,
                m.checksum,
                &mut |at, h, p| {
                    if h.kind == RecordKind::Commit {
                        let len = crate::format::RECORD_HEADER_BYTES as u64 + p.len() as u64;
                        commits.push((h.seq, at, len));
                    }
                    Ok(true)
                },
            )?;
            (m.seq, wire, commits)
        }
        None => {
            // No usable mark (e.g. first compaction after open): scan the whole region.
            let entries = index_region(device, reader, generation, region_start)?;
            let oldest = entries.iter().find_map(|e| match e {
                Entry::Checkpoint { seq, .. } => Some(*seq),
                Entry::Commit { .. } => None,
            });
            let Some(oldest) = oldest else {
                return Ok(None);
            };
            let target = wanted_base.max(oldest);
            let mut start = None;
            for (i, e) in entries.iter().enumerate() {
                if let Entry::Checkpoint { seq, .. } = e {
                    if *seq <= target {
                        start = Some(i);
                    }
                }
            }
            let Some(i) = start else {
                return Ok(None);
            };
            let Entry::Checkpoint { seq, wire } = &entries[i] else {
                return Ok(None);
            };
            let commits = entries[i + 1..]
                .iter()
                .filter_map(|e| match e {
                    Entry::Commit { seq, offset, len } => Some((*seq, *offset, *len)),
                    Entry::Checkpoint { .. } => None,
                })
                .collect();
            (*seq, *wire, commits)
        }
    };
    // Commits after the start checkpoint must be exactly start+1 ..= head.
    let contiguous = commits
        .iter()
        .enumerate()
        .all(|(i, (s, _, _))| *s == start_seq + 1 + i as u64);
    if !contiguous || start_seq + commits.len() as u64 != head {
        return Ok(None);
    }
    // The newest commits whose records fit in `window_bytes_max`: the window yields to space.
    let mut window_bytes = 0u64;
    let mut space_base = head;
    for (seq, _, len) in commits.iter().rev() {
        window_bytes += len;
        if window_bytes > window_bytes_max {
            break;
        }
        space_base = seq - 1;
    }
    let base = wanted_base.max(start_seq).max(space_base);
    if base >= head {
        return Ok(None);
    }
    let loaded = Tree::load(
        &mut Src {
            device: &mut *device,
            reader: &mut *reader,
        },
        wire.tree,
        wire.blobs,
    );
    let mut tree = match loaded {
        Ok(t) => t,
        Err(Error::Damaged(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    for (seq, offset, _) in commits.iter().take_while(|(s, _, _)| *s <= base) {
        match read_commit(device, reader, generation, *seq, *offset) {
            Ok(c) => c.mutations.into_iter().for_each(|m| tree.apply(m)),
            Err(Error::Damaged(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(WindowPlan {
        base_seq: base,
        base_tree: tree,
        commits: commits
            .into_iter()
            .filter(|(s, _, _)| *s > base)
            .map(|(s, at, _)| (s, at))
            .collect(),
    }))
}

/// Does mutation `m` affect `path` or anything below it?
fn touches(m: &Mutation, path: &str) -> bool {
    let is_under = |p: &str, ancestor: &str| {
        ancestor == "/"
            || p == ancestor
            || (p.starts_with(ancestor) && p.as_bytes().get(ancestor.len()) == Some(&b'/'))
    };
    match m {
        Mutation::PutNode { path: p, .. } => is_under(p, path),
        Mutation::RemoveSubtree { path: p } => is_under(p, path) || is_under(path, p),
        Mutation::PutBlob { .. } | Mutation::RemoveBlob { .. } => false,
    }
}

impl<D: BlockDevice> Log<D> {
    fn history_index(&mut self) -> Result<(Vec<Entry>, Reader, u64), Error> {
        self.flush_pending()?;
        let (device, mut reader, generation, start) = self.history_parts();
        let entries = index_region(device, &mut reader, generation, start)?;
        Ok((entries, reader, generation))
    }

    /// (oldest, newest) commit whose tree can be read.
    pub fn history_range(&mut self) -> Result<(Seq, Seq), Error> {
        let (entries, _, _) = self.history_index()?;
        let oldest = entries
            .iter()
            .find_map(|e| match e {
                Entry::Checkpoint { seq, .. } => Some(*seq),
                Entry::Commit { .. } => None,
            })
            .unwrap_or(self.last_seq());
        Ok((oldest, self.last_seq()))
    }

    /// Commits with `from <= seq <= to` still in the log, with causes and mutations.
    pub fn commits(&mut self, from: Seq, to: Seq) -> Result<Vec<CommitEntry>, Error> {
        self.commits_filtered(from, to, |_| true)
    }

    /// Commits in the log that changed `path` or anything below it.
    pub fn commits_touching(&mut self, path: &str) -> Result<Vec<CommitEntry>, Error> {
        crate::commit::validate_path(path)?;
        let p = String::from(path);
        self.commits_filtered(0, Seq::MAX, move |c| {
            c.mutations.iter().any(|m| touches(m, &p))
        })
    }

    fn commits_filtered(
        &mut self,
        from: Seq,
        to: Seq,
        keep: impl Fn(&Commit) -> bool,
    ) -> Result<Vec<CommitEntry>, Error> {
        let (entries, mut reader, generation) = self.history_index()?;
        let (device, _, _, _) = self.history_parts();
        let mut out = Vec::new();
        let mut last = 0;
        for e in &entries {
            if let Entry::Commit { seq, offset, .. } = e {
                // A commit copied by compaction appears once; skip anything not ascending.
                if *seq <= last || *seq < from || *seq > to {
                    continue;
                }
                last = *seq;
                let commit = read_commit(device, &mut reader, generation, *seq, *offset)?;
                if keep(&commit) {
                    out.push(CommitEntry { seq: *seq, commit });
                }
            }
        }
        Ok(out)
    }

    /// The state as of commit `seq`.
    pub fn tree_at(&mut self, seq: Seq) -> Result<TreeAt, Error> {
        let (entries, mut reader, generation) = self.history_index()?;
        let newest = self.last_seq();
        let oldest = entries
            .iter()
            .find_map(|e| match e {
                Entry::Checkpoint { seq, .. } => Some(*seq),
                Entry::Commit { .. } => None,
            })
            .unwrap_or(newest);
        let not_in = Error::NotInHistory {
            seq,
            oldest_seq: oldest,
            newest_seq: newest,
        };
        if seq > newest {
            return Err(not_in);
        }
        let (device, _, _, _) = self.history_parts();
        match tree_at_index(device, &mut reader, generation, &entries, seq)? {
            Some(tree) => Ok(TreeAt { seq, tree }),
            None => Err(not_in),
        }
    }

    /// What changed between commit `a` and commit `b`.
    pub fn diff(&mut self, a: Seq, b: Seq) -> Result<Diff, Error> {
        let before = self.tree_at(a)?.snapshot();
        let after = self.tree_at(b)?.snapshot();
        Ok(diff_snapshots(&before, &after))
    }
}

/// Differences between two snapshots.
pub fn diff_snapshots(before: &Snapshot, after: &Snapshot) -> Diff {
    let mut d = Diff::default();
    for (k, v) in &after.nodes {
        match before.nodes.get(k) {
            None => d.added.push(k.clone()),
            Some(old) if old != v => d.changed.push(k.clone()),
            Some(_) => {}
        }
    }
    for k in before.nodes.keys() {
        if !after.nodes.contains_key(k) {
            d.removed.push(k.clone());
        }
    }
    for (k, v) in &after.blobs {
        match before.blobs.get(k) {
            None => d.blobs_added.push(k.clone()),
            Some(old) if old != v => d.blobs_changed.push(k.clone()),
            Some(_) => {}
        }
    }
    for k in before.blobs.keys() {
        if !after.blobs.contains_key(k) {
            d.blobs_removed.push(k.clone());
        }
    }
    d
}

/// One record as seen by [`scan_records`] (for the offline inspector's verify/dump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    pub offset: u64,
    pub kind: RecordKind,
    pub seq: Seq,
    pub durable_seq: Seq,
    pub payload_len: u32,
}

/// Walk the record chain of the active region named by the newest valid superblock, from the
/// region start, without interpreting the records. Returns the superblock, the records, and
/// the byte offset where the chain ends.
pub fn scan_records<D: BlockDevice>(
    device: &mut D,
) -> Result<(crate::format::Superblock, Vec<RecordInfo>, u64), crate::error::OpenError> {
    let mut best: Option<crate::format::Superblock> = None;
    for sector in crate::limits::SUPERBLOCK_SECTORS {
        let mut b = [0u8; crate::limits::SECTOR_SIZE_BYTES];
        device.read_sectors(sector, &mut b)?;
        if let Ok(sb) = crate::format::Superblock::decode(&b) {
            if best.is_none_or(|x| x.sb_seq < sb.sb_seq) {
                best = Some(sb);
            }
        }
    }
    let sb = best.ok_or(crate::error::OpenError::NotFormatted)?;
    let device_sectors = device.sector_count();
    if sb.sector_count != device_sectors
        || sb.region_sectors != device_sectors.saturating_sub(crate::limits::RESERVED_SECTORS) / 2
    {
        return Err(crate::error::OpenError::GeometryMismatch {
            formatted_sectors: sb.sector_count,
            device_sectors,
        });
    }
    let start = (crate::limits::RESERVED_SECTORS + u64::from(sb.active_region) * sb.region_sectors)
        * crate::limits::SECTOR_SIZE_BYTES as u64;
    let end = start + sb.region_sectors * crate::limits::SECTOR_SIZE_BYTES as u64;
    let mut reader = Reader::new(start, end);
    let mut out = Vec::new();
    let scan = scan_chain(
        device,
        &mut reader,
        sb.generation,
        start,
        0,
        &mut |at, h, _| {
            out.push(RecordInfo {
                offset: at,
                kind: h.kind,
                seq: h.seq,
                durable_seq: h.durable_seq,
                payload_len: h.payload_len,
            });
            Ok(true)
        },
    )
    .map_err(|e| match e {
        Error::Device(d) => crate::error::OpenError::Device(d),
        _ => crate::error::OpenError::NotFormatted,
    })?;
    Ok((sb, out, scan.end))
}
