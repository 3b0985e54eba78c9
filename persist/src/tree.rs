//! The in-memory mirror of the persisted state: the node tree and the blob map, with each
//! subtree's stored object reference cached so a checkpoint writes only what changed.
//!
//! Children of a directory live in a `ChildMap`: a leaf of up to `LEAF_ENTRIES_MAX` entries
//! sorted by name, split into 16 buckets by the next 4 bits of the name's hash when it grows
//! past that (a hash trie, HAMT-like, at most `INDEX_DEPTH_MAX` levels). The same structure is
//! stored on disk as page objects, so changing one child of a 100k-child directory rewrites
//! the child, its leaf page and the branch pages above it: O(log n) objects.
//! Loading from disk checks every structural rule again (names, ordering, hash prefixes).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::commit::{Mutation, components, valid_component};
use crate::error::{Damage, DamageKind, Error};
use crate::format::{
    ChildrenIn, ChildrenOut, ContentIn, ContentOut, Hash, Loc, NodeRecord, ObjRef, PageIn, PageOut,
    RecordOut, decode_object_payload, hash_bytes, to_vec,
};
use crate::limits::{BRANCH_ENTRIES_MIN, INDEX_DEPTH_MAX, LEAF_ENTRIES_MAX, PATH_DEPTH_MAX};

/// 64-bit name hash used to place a child in the index (first 8 bytes of blake3(name)).
pub(crate) fn name_hash(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

fn nibble(hash: u64, depth: usize) -> usize {
    debug_assert!(depth < INDEX_DEPTH_MAX);
    ((hash >> (60 - 4 * depth)) & 0xf) as usize
}

/// One level of a child index.
#[derive(Debug)]
pub(crate) enum Bucket<V> {
    Leaf {
        entries: BTreeMap<String, V>,
        cached: Option<ObjRef>,
    },
    Branch {
        /// Exactly 16 buckets.
        slots: Vec<Bucket<V>>,
        count: usize,
        cached: Option<ObjRef>,
    },
}

impl<V> Bucket<V> {
    fn empty_leaf() -> Self {
        Bucket::Leaf {
            entries: BTreeMap::new(),
            cached: None,
        }
    }
    fn len(&self) -> usize {
        match self {
            Bucket::Leaf { entries, .. } => entries.len(),
            Bucket::Branch { count, .. } => *count,
        }
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn invalidate(&mut self) {
        match self {
            Bucket::Leaf { cached, .. } | Bucket::Branch { cached, .. } => *cached = None,
        }
    }

    fn get(&self, depth: usize, hash: u64, name: &str) -> Option<&V> {
        match self {
            Bucket::Leaf { entries, .. } => entries.get(name),
            Bucket::Branch { slots, .. } => slots[nibble(hash, depth)].get(depth + 1, hash, name),
        }
    }

    fn get_mut_dirty(&mut self, depth: usize, hash: u64, name: &str) -> Option<&mut V> {
        match self {
            Bucket::Leaf { entries, cached } => {
                let v = entries.get_mut(name)?;
                *cached = None;
                Some(v)
            }
            Bucket::Branch { slots, cached, .. } => {
                let v = slots[nibble(hash, depth)].get_mut_dirty(depth + 1, hash, name)?;
                *cached = None;
                Some(v)
            }
        }
    }

    /// Mutable access to `name`, inserting `make()` if absent; marks the path changed.
    /// Returns whether it was inserted. `hash` is `name_hash(name)`, computed by the caller
    /// only when some level is a branch (`None` for a leaf root: no hashing needed).
    fn get_or_insert_dirty<F: FnMut() -> V>(
        &mut self,
        depth: usize,
        hash: Option<u64>,
        name: &str,
        make: &mut F,
    ) -> (&mut V, bool) {
        let full_leaf = match self {
            Bucket::Leaf { entries, .. } => {
                entries.len() >= LEAF_ENTRIES_MAX
                    && depth < INDEX_DEPTH_MAX
                    && !entries.contains_key(name)
            }
            Bucket::Branch { .. } => false,
        };
        if full_leaf {
            self.split(depth);
        }
        match self {
            Bucket::Leaf { entries, cached } => {
                *cached = None;
                let inserted = !entries.contains_key(name);
                if inserted {
                    entries.insert(name.to_string(), make());
                }
                match entries.get_mut(name) {
                    Some(v) => (v, inserted),
                    None => unreachable!("present or inserted above"),
                }
            }
            Bucket::Branch {
                slots,
                count,
                cached,
            } => {
                *cached = None;
                let h = hash.unwrap_or_else(|| name_hash(name));
                let (v, inserted) =
                    slots[nibble(h, depth)].get_or_insert_dirty(depth + 1, Some(h), name, make);
                if inserted {
                    *count += 1;
                }
                (v, inserted)
            }
        }
    }

    fn insert(&mut self, depth: usize, hash: u64, name: String, value: V) -> Option<V> {
        self.invalidate();
        match self {
            Bucket::Leaf { entries, .. } => {
                let old = entries.insert(name, value);
                if old.is_none() && entries.len() > LEAF_ENTRIES_MAX && depth < INDEX_DEPTH_MAX {
                    self.split(depth);
                }
                old
            }
            Bucket::Branch { slots, count, .. } => {
                let old = slots[nibble(hash, depth)].insert(depth + 1, hash, name, value);
                if old.is_none() {
                    *count += 1;
                }
                old
            }
        }
    }

    fn split(&mut self, depth: usize) {
        let Bucket::Leaf { entries, .. } = self else {
            return;
        };
        let entries = core::mem::take(entries);
        let count = entries.len();
        let mut slots: Vec<Bucket<V>> = (0..16).map(|_| Bucket::empty_leaf()).collect();
        for (name, value) in entries {
            let h = name_hash(&name);
            slots[nibble(h, depth)].insert(depth + 1, h, name, value);
        }
        *self = Bucket::Branch {
            slots,
            count,
            cached: None,
        };
    }

    fn remove(&mut self, depth: usize, hash: u64, name: &str) -> Option<V> {
        let removed = match self {
            Bucket::Leaf { entries, .. } => entries.remove(name),
            Bucket::Branch { slots, count, .. } => {
                let r = slots[nibble(hash, depth)].remove(depth + 1, hash, name);
                if r.is_some() {
                    *count -= 1;
                }
                r
            }
        };
        if removed.is_some() {
            self.invalidate();
            if let Bucket::Branch { count, .. } = self {
                if *count < BRANCH_ENTRIES_MIN {
                    self.collapse();
                }
            }
        }
        removed
    }

    fn collapse(&mut self) {
        let mut entries = BTreeMap::new();
        self.drain_into(&mut entries);
        *self = Bucket::Leaf {
            entries,
            cached: None,
        };
    }

    fn drain_into(&mut self, out: &mut BTreeMap<String, V>) {
        match self {
            Bucket::Leaf { entries, .. } => out.append(entries),
            Bucket::Branch { slots, .. } => {
                for s in slots {
                    s.drain_into(out);
                }
            }
        }
    }

    fn for_each<'a>(&'a self, f: &mut impl FnMut(&'a String, &'a V)) {
        match self {
            Bucket::Leaf { entries, .. } => entries.iter().for_each(|(k, v)| f(k, v)),
            Bucket::Branch { slots, .. } => slots.iter().for_each(|s| s.for_each(f)),
        }
    }
}

/// A directory's children (or the blob map), keyed by name.
#[derive(Debug)]
pub(crate) struct ChildMap<V> {
    pub(crate) root: Bucket<V>,
}

impl<V> ChildMap<V> {
    pub(crate) fn new() -> Self {
        ChildMap {
            root: Bucket::empty_leaf(),
        }
    }
    pub(crate) fn len(&self) -> usize {
        self.root.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
    fn hash_for(&self, name: &str) -> u64 {
        match self.root {
            Bucket::Leaf { .. } => 0,
            Bucket::Branch { .. } => name_hash(name),
        }
    }
    pub(crate) fn get(&self, name: &str) -> Option<&V> {
        self.root.get(0, self.hash_for(name), name)
    }
    /// Mutable access that marks the index path to `name` as changed.
    pub(crate) fn get_mut_dirty(&mut self, name: &str) -> Option<&mut V> {
        let h = self.hash_for(name);
        self.root.get_mut_dirty(0, h, name)
    }
    /// Mutable access to `name`, created with `make()` if absent; marks the path changed.
    pub(crate) fn get_or_insert_dirty(
        &mut self,
        name: &str,
        mut make: impl FnMut() -> V,
    ) -> &mut V {
        let h = match self.root {
            Bucket::Leaf { .. } => None,
            Bucket::Branch { .. } => Some(name_hash(name)),
        };
        self.root.get_or_insert_dirty(0, h, name, &mut make).0
    }
    pub(crate) fn insert(&mut self, name: String, value: V) -> Option<V> {
        // A leaf root may split during this insert; the split hashes every name itself.
        let h = self.hash_for(&name);
        self.root.insert(0, h, name, value)
    }
    pub(crate) fn remove(&mut self, name: &str) -> Option<V> {
        let h = self.hash_for(name);
        self.root.remove(0, h, name)
    }
    /// Entries sorted by name.
    pub(crate) fn sorted(&self) -> Vec<(&String, &V)> {
        let mut v = Vec::with_capacity(self.len());
        self.root.for_each(&mut |k, val| v.push((k, val)));
        if matches!(self.root, Bucket::Branch { .. }) {
            v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        v
    }
}

/// One node of the in-memory tree.
#[derive(Debug)]
pub(crate) struct MemNode {
    /// `None` for an implicit directory (created as an ancestor, never written itself).
    pub(crate) record: Option<NodeRecord>,
    pub(crate) children: ChildMap<MemNode>,
    /// The stored object of this subtree, if unchanged since it was stored/loaded.
    pub(crate) cached: Option<ObjRef>,
}

impl MemNode {
    fn implicit() -> Self {
        MemNode {
            record: None,
            children: ChildMap::new(),
            cached: None,
        }
    }
    fn count_records(&self) -> u64 {
        let mut n = u64::from(self.record.is_some());
        self.children
            .root
            .for_each(&mut |_, c| n += c.count_records());
        n
    }
}

/// A state blob.
#[derive(Debug)]
pub(crate) struct BlobSlot {
    pub(crate) value: Vec<u8>,
    pub(crate) cached: Option<ObjRef>,
}

/// The whole persisted state.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) root: MemNode,
    pub(crate) blobs: ChildMap<BlobSlot>,
    /// Number of nodes with a record.
    pub(crate) node_count: u64,
}

impl Tree {
    pub(crate) fn new() -> Self {
        Tree {
            root: MemNode::implicit(),
            blobs: ChildMap::new(),
            node_count: 0,
        }
    }

    /// Apply one validated mutation.
    pub(crate) fn apply(&mut self, m: Mutation) {
        match m {
            Mutation::PutNode { path, record } => self.put_node(&path, record),
            Mutation::RemoveSubtree { path } => self.remove_subtree(&path),
            Mutation::PutBlob { key, value } => {
                self.blobs.insert(
                    key,
                    BlobSlot {
                        value,
                        cached: None,
                    },
                );
            }
            Mutation::RemoveBlob { key } => {
                self.blobs.remove(&key);
            }
        }
    }

    fn put_node(&mut self, path: &str, record: NodeRecord) {
        let mut node = &mut self.root;
        node.cached = None;
        for name in components(path) {
            node = node.children.get_or_insert_dirty(name, MemNode::implicit);
            node.cached = None;
        }
        if node.record.is_none() {
            self.node_count += 1;
        }
        node.record = Some(record);
    }

    fn remove_subtree(&mut self, path: &str) {
        let names: Vec<&str> = components(path).collect();
        if names.is_empty() {
            self.node_count = 0;
            self.root = MemNode::implicit();
            return;
        }
        if self.lookup(path).is_none() {
            return;
        }
        let removed = remove_below(&mut self.root, &names);
        assert!(removed <= self.node_count);
        self.node_count -= removed;
    }

    pub(crate) fn lookup(&self, path: &str) -> Option<&MemNode> {
        let mut node = &self.root;
        for name in components(path) {
            node = node.children.get(name)?;
        }
        Some(node)
    }

    /// Record of the node at `path` (implicit directories have none).
    pub(crate) fn node(&self, path: &str) -> Option<&NodeRecord> {
        self.lookup(path)?.record.as_ref()
    }

    /// Sorted child names of `path`.
    pub(crate) fn children(&self, path: &str) -> Option<Vec<String>> {
        let node = self.lookup(path)?;
        Some(
            node.children
                .sorted()
                .into_iter()
                .map(|(k, _)| k.clone())
                .collect(),
        )
    }

    /// Visit every node with a record, in sorted path order.
    pub(crate) fn visit(&self, f: &mut dyn FnMut(&str, &NodeRecord)) {
        let mut path = String::from("/");
        visit_node(&self.root, &mut path, f);
    }

    pub(crate) fn blob(&self, key: &str) -> Option<&[u8]> {
        self.blobs.get(key).map(|b| b.value.as_slice())
    }

    /// Visit every blob in key order.
    pub(crate) fn visit_blobs(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (k, v) in self.blobs.sorted() {
            f(k, &v.value);
        }
    }

    /// Estimate (from above, within a few percent) of the bytes a compaction writes for this
    /// tree: every object payload plus pack headers and padding. O(nodes + blobs), no I/O.
    pub(crate) fn stored_bytes_estimate(&self) -> u64 {
        let objects =
            node_bytes(&self.root) + bucket_bytes(&self.blobs.root, &mut |b| blob_bytes(b));
        // One 40-byte header per 256 KiB pack, padding of each 1 MiB batch, the checkpoint.
        objects + objects / 1024 + 4096
    }

    /// Store every changed object through `sink`; returns (root node ref, blob map ref).
    /// With a relocating sink every object is written (or found) again.
    pub(crate) fn store<S: ObjectSink>(&mut self, sink: &mut S) -> Result<(ObjRef, ObjRef), Error> {
        let tree = store_node(&mut self.root, sink, 0)?;
        let blobs = store_bucket(&mut self.blobs.root, sink, &mut store_blob)?;
        Ok((tree, blobs))
    }

    /// Load a tree from its root objects.
    pub(crate) fn load<S: ObjectSource>(
        source: &mut S,
        tree: ObjRef,
        blobs: ObjRef,
    ) -> Result<Tree, Error> {
        let root = load_node(source, tree, 0)?;
        let (blob_root, _) = load_bucket(source, blobs, 0, 0, &mut load_blob)?;
        let mut t = Tree {
            root,
            blobs: ChildMap { root: blob_root },
            node_count: 0,
        };
        t.node_count = t.root.count_records();
        Ok(t)
    }
}

fn remove_below(node: &mut MemNode, names: &[&str]) -> u64 {
    let Some((first, rest)) = names.split_first() else {
        return 0;
    };
    node.cached = None;
    if rest.is_empty() {
        return node.children.remove(first).map_or(0, |c| c.count_records());
    }
    let Some(child) = node.children.get_mut_dirty(first) else {
        return 0;
    };
    let removed = remove_below(child, rest);
    if child.record.is_none() && child.children.is_empty() {
        node.children.remove(first);
    }
    removed
}

/// Encoded size of one index entry (name, hash, location) with its varints, from above.
fn entry_bytes(name: &str) -> u64 {
    name.len() as u64 + 3 + 32 + 15
}

/// Bytes of the subtree at `node`: its object, its child index pages, its descendants.
fn node_bytes(node: &MemNode) -> u64 {
    let own = 32
        + node.record.as_ref().map_or(0, |r| {
            r.value.len() as u64 + r.permissions.len() as u64 + 16
        });
    match &node.children.root {
        Bucket::Leaf { entries, .. } => {
            own + entries
                .iter()
                .map(|(name, child)| entry_bytes(name) + node_bytes(child))
                .sum::<u64>()
        }
        bucket @ Bucket::Branch { .. } => own + 50 + bucket_bytes(bucket, &mut node_bytes),
    }
}

fn blob_bytes(blob: &BlobSlot) -> u64 {
    blob.value.len() as u64 + 16
}

/// Bytes of the index pages of `bucket` plus what `child` says each entry's object takes.
fn bucket_bytes<V>(bucket: &Bucket<V>, child: &mut impl FnMut(&V) -> u64) -> u64 {
    match bucket {
        Bucket::Leaf { entries, .. } => {
            16 + entries
                .iter()
                .map(|(name, v)| entry_bytes(name) + child(v))
                .sum::<u64>()
        }
        Bucket::Branch { slots, .. } => {
            16 + slots
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| 48 + bucket_bytes(s, child))
                .sum::<u64>()
        }
    }
}

fn visit_node(node: &MemNode, path: &mut String, f: &mut dyn FnMut(&str, &NodeRecord)) {
    if let Some(r) = &node.record {
        f(path, r);
    }
    let base = path.len();
    for (name, child) in node.children.sorted() {
        if path.len() > 1 {
            path.push('/');
        }
        path.push_str(name);
        visit_node(child, path, f);
        path.truncate(base);
    }
}

// ---------------------------------------------------------------------------------------------
// Storing
// ---------------------------------------------------------------------------------------------

/// Where a checkpoint's objects go.
pub(crate) trait ObjectSink {
    /// Write an object whose content bytes hash to `hash`; returns where its payload is.
    fn store(&mut self, hash: &Hash, content: &[u8], locs: &[Loc]) -> Result<Loc, Error>;
    /// When relocating (compaction), every object must be rewritten into the new region, and
    /// objects already written there are found by hash.
    fn relocating(&self) -> bool;
    fn lookup(&self, hash: &Hash) -> Option<Loc>;
}

fn finish<S: ObjectSink>(
    sink: &mut S,
    previous: Option<ObjRef>,
    content: &[u8],
    locs: &[Loc],
) -> Result<ObjRef, Error> {
    let hash = hash_bytes(content);
    if let Some(prev) = previous {
        // A clean object being relocated must keep its name.
        assert_eq!(prev.hash, hash, "clean object changed content");
    }
    let loc = match sink.lookup(&hash) {
        Some(loc) => loc,
        None => sink.store(&hash, content, locs)?,
    };
    Ok(ObjRef { hash, loc })
}

fn store_node<S: ObjectSink>(
    node: &mut MemNode,
    sink: &mut S,
    depth: usize,
) -> Result<ObjRef, Error> {
    assert!(depth <= PATH_DEPTH_MAX);
    if let Some(r) = node.cached {
        if !sink.relocating() {
            return Ok(r);
        }
    }
    let mut locs = Vec::new();
    let children = match &mut node.children.root {
        Bucket::Leaf { entries, .. } => {
            let mut out = Vec::with_capacity(entries.len());
            for (name, child) in entries.iter_mut() {
                let r = store_node(child, sink, depth + 1)?;
                out.push((name.as_str(), r.hash));
                locs.push(r.loc);
            }
            ChildrenOut::Inline(out)
        }
        bucket @ Bucket::Branch { .. } => {
            let r = store_bucket(bucket, sink, &mut |c: &mut MemNode, s: &mut S| {
                store_node(c, s, depth + 1)
            })?;
            locs.push(r.loc);
            ChildrenOut::Paged(r.hash)
        }
    };
    if let Some(prev) = node.cached {
        // Relocating a clean node whose object is already in the new region (shared with the
        // base tree): its children were just relocated above, nothing to encode.
        if let Some(loc) = sink.lookup(&prev.hash) {
            let r = ObjRef {
                hash: prev.hash,
                loc,
            };
            node.cached = Some(r);
            return Ok(r);
        }
    }
    let record = node.record.as_ref().map(|r| RecordOut {
        value: &r.value,
        permissions: &r.permissions,
        generation: r.generation,
    });
    let content = to_vec(&ContentOut::Node { record, children });
    let r = finish(sink, node.cached, &content, &locs)?;
    node.cached = Some(r);
    Ok(r)
}

fn store_blob<S: ObjectSink>(blob: &mut BlobSlot, sink: &mut S) -> Result<ObjRef, Error> {
    if let Some(r) = blob.cached {
        if !sink.relocating() {
            return Ok(r);
        }
    }
    if let Some(prev) = blob.cached {
        if let Some(loc) = sink.lookup(&prev.hash) {
            let r = ObjRef {
                hash: prev.hash,
                loc,
            };
            blob.cached = Some(r);
            return Ok(r);
        }
    }
    let content = to_vec(&ContentOut::Blob(&blob.value));
    let r = finish(sink, blob.cached, &content, &[])?;
    blob.cached = Some(r);
    Ok(r)
}

fn store_bucket<V, S: ObjectSink>(
    bucket: &mut Bucket<V>,
    sink: &mut S,
    store_child: &mut impl FnMut(&mut V, &mut S) -> Result<ObjRef, Error>,
) -> Result<ObjRef, Error> {
    let previous = match bucket {
        Bucket::Leaf { cached, .. } | Bucket::Branch { cached, .. } => *cached,
    };
    if let Some(r) = previous {
        if !sink.relocating() {
            return Ok(r);
        }
    }
    let mut locs = Vec::new();
    let content = match bucket {
        Bucket::Leaf { entries, .. } => {
            let mut out = Vec::with_capacity(entries.len());
            for (name, child) in entries.iter_mut() {
                let r = store_child(child, sink)?;
                out.push((name.as_str(), r.hash));
                locs.push(r.loc);
            }
            to_vec(&ContentOut::Page(PageOut::Leaf(out)))
        }
        Bucket::Branch { slots, .. } => {
            let mut out = Vec::new();
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.is_empty() {
                    continue;
                }
                let r = store_bucket(slot, sink, store_child)?;
                out.push((i as u8, r.hash));
                locs.push(r.loc);
            }
            to_vec(&ContentOut::Page(PageOut::Branch(out)))
        }
    };
    let r = finish(sink, previous, &content, &locs)?;
    match bucket {
        Bucket::Leaf { cached, .. } | Bucket::Branch { cached, .. } => *cached = Some(r),
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Where objects are read from.
pub(crate) trait ObjectSource {
    /// The payload bytes at `loc` (`None` if `loc` is outside the log region).
    fn read(&mut self, loc: Loc) -> Result<Option<Vec<u8>>, Error>;
}

fn damaged(loc: Loc) -> Error {
    Error::Damaged(Damage {
        kind: DamageKind::Object,
        offset: loc.offset,
        last_intact_seq: 0,
        proven_durable_seq: 0,
    })
}

fn load_object<S: ObjectSource>(source: &mut S, r: ObjRef) -> Result<(ContentIn, Vec<Loc>), Error> {
    let payload = source.read(r.loc)?.ok_or_else(|| damaged(r.loc))?;
    decode_object_payload(&payload, &r.hash).ok_or_else(|| damaged(r.loc))
}

fn load_node<S: ObjectSource>(source: &mut S, r: ObjRef, depth: usize) -> Result<MemNode, Error> {
    if depth > PATH_DEPTH_MAX {
        return Err(damaged(r.loc));
    }
    let (content, locs) = load_object(source, r)?;
    let ContentIn::Node { record, children } = content else {
        return Err(damaged(r.loc));
    };
    let root = match children {
        ChildrenIn::Inline(entries) => {
            let mut map = BTreeMap::new();
            let mut previous: Option<&str> = None;
            for ((name, hash), loc) in entries.iter().zip(locs.iter()) {
                if !valid_component(name) || previous.is_some_and(|p| p >= name.as_str()) {
                    return Err(damaged(r.loc));
                }
                previous = Some(name);
                let child = load_node(
                    source,
                    ObjRef {
                        hash: *hash,
                        loc: *loc,
                    },
                    depth + 1,
                )?;
                map.insert(name.clone(), child);
            }
            Bucket::Leaf {
                entries: map,
                cached: None,
            }
        }
        ChildrenIn::Paged(hash) => {
            let page = ObjRef { hash, loc: locs[0] };
            let (bucket, _) = load_bucket(source, page, 0, 0, &mut |s: &mut S, c| {
                load_node(s, c, depth + 1)
            })?;
            if !matches!(bucket, Bucket::Branch { .. }) {
                // A paged child index is always a branch (a leaf would have been inline).
                return Err(damaged(page.loc));
            }
            bucket
        }
    };
    Ok(MemNode {
        record,
        children: ChildMap { root },
        cached: Some(r),
    })
}

fn load_blob<S: ObjectSource>(source: &mut S, r: ObjRef) -> Result<BlobSlot, Error> {
    match load_object(source, r)? {
        (ContentIn::Blob(value), _) => Ok(BlobSlot {
            value,
            cached: Some(r),
        }),
        _ => Err(damaged(r.loc)),
    }
}

/// Load one index page; `prefix` holds the nibbles chosen above (in the top `4*depth` bits).
fn load_bucket<V, S: ObjectSource>(
    source: &mut S,
    r: ObjRef,
    depth: usize,
    prefix: u64,
    load_child: &mut impl FnMut(&mut S, ObjRef) -> Result<V, Error>,
) -> Result<(Bucket<V>, usize), Error> {
    let (content, locs) = load_object(source, r)?;
    let ContentIn::Page(page) = content else {
        return Err(damaged(r.loc));
    };
    let prefix_mask = if depth == 0 {
        0
    } else {
        !0u64 << (64 - 4 * depth)
    };
    match page {
        PageIn::Leaf(entries) => {
            let mut map = BTreeMap::new();
            let mut previous: Option<&str> = None;
            for ((name, hash), loc) in entries.iter().zip(locs.iter()) {
                if name.is_empty()
                    || previous.is_some_and(|p| p >= name.as_str())
                    || (depth > 0 && name_hash(name) & prefix_mask != prefix)
                {
                    return Err(damaged(r.loc));
                }
                previous = Some(name);
                let child = load_child(
                    source,
                    ObjRef {
                        hash: *hash,
                        loc: *loc,
                    },
                )?;
                map.insert(name.clone(), child);
            }
            let n = map.len();
            Ok((
                Bucket::Leaf {
                    entries: map,
                    cached: Some(r),
                },
                n,
            ))
        }
        PageIn::Branch(slots_in) => {
            if depth >= INDEX_DEPTH_MAX {
                return Err(damaged(r.loc));
            }
            let mut slots: Vec<Bucket<V>> = (0..16).map(|_| Bucket::empty_leaf()).collect();
            let mut count = 0usize;
            let mut previous: Option<u8> = None;
            for ((index, hash), loc) in slots_in.iter().zip(locs.iter()) {
                if *index >= 16 || previous.is_some_and(|p| p >= *index) {
                    return Err(damaged(r.loc));
                }
                previous = Some(*index);
                let child_prefix = prefix | (u64::from(*index) << (60 - 4 * depth));
                let (b, n) = load_bucket(
                    source,
                    ObjRef {
                        hash: *hash,
                        loc: *loc,
                    },
                    depth + 1,
                    child_prefix,
                    load_child,
                )?;
                if n == 0 {
                    // The writer never stores an empty bucket: re-encoding would differ.
                    return Err(damaged(r.loc));
                }
                slots[*index as usize] = b;
                count += n;
            }
            Ok((
                Bucket::Branch {
                    slots,
                    count,
                    cached: Some(r),
                },
                count,
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Salvage loading
// ---------------------------------------------------------------------------------------------

impl Tree {
    /// Salvage: load whatever is intact. A damaged object drops its subtree (or, for an index
    /// page, the children it indexed); each loss is named in `lost` ("/path", "/dir/*",
    /// "blob:key", "blobs:*"). Only device errors fail. Nothing is marked clean: the caller
    /// rewrites everything (compaction).
    pub(crate) fn load_lenient<S: ObjectSource>(
        source: &mut S,
        tree: ObjRef,
        blobs: ObjRef,
        lost: &mut Vec<String>,
    ) -> Result<Tree, Error> {
        let mut path = String::from("/");
        let root =
            lenient_node(source, tree, 0, &mut path, lost)?.unwrap_or_else(MemNode::implicit);
        let mut entries = Vec::new();
        let mut blob_map: ChildMap<BlobSlot> = ChildMap::new();
        if !lenient_pages(source, blobs, 0, &mut entries)? {
            lost.push(String::from("blobs:*"));
        }
        for (key, r) in entries {
            match load_blob(source, r) {
                Ok(mut b) if !key.is_empty() && blob_map.get(&key).is_none() => {
                    b.cached = None;
                    blob_map.insert(key, b);
                }
                Ok(_) => {}
                Err(Error::Damaged(_)) => lost.push(alloc::format!("blob:{key}")),
                Err(e) => return Err(e),
            }
        }
        let mut t = Tree {
            root,
            blobs: blob_map,
            node_count: 0,
        };
        t.node_count = t.root.count_records();
        Ok(t)
    }
}

/// Collect the (name, child) entries of an index page tree; `Ok(false)` if part was damaged.
fn lenient_pages<S: ObjectSource>(
    source: &mut S,
    r: ObjRef,
    depth: usize,
    out: &mut Vec<(String, ObjRef)>,
) -> Result<bool, Error> {
    let (content, locs) = match load_object(source, r) {
        Ok(x) => x,
        Err(Error::Damaged(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    match content {
        ContentIn::Page(PageIn::Leaf(entries)) => {
            for ((name, hash), loc) in entries.into_iter().zip(locs) {
                out.push((name, ObjRef { hash, loc }));
            }
            Ok(true)
        }
        ContentIn::Page(PageIn::Branch(slots)) if depth < INDEX_DEPTH_MAX => {
            let mut intact = true;
            for ((_, hash), loc) in slots.into_iter().zip(locs) {
                intact &= lenient_pages(source, ObjRef { hash, loc }, depth + 1, out)?;
            }
            Ok(intact)
        }
        _ => Ok(false),
    }
}

fn lenient_node<S: ObjectSource>(
    source: &mut S,
    r: ObjRef,
    depth: usize,
    path: &mut String,
    lost: &mut Vec<String>,
) -> Result<Option<MemNode>, Error> {
    let loaded = if depth > PATH_DEPTH_MAX {
        Err(damaged(r.loc))
    } else {
        load_object(source, r)
    };
    let (record, children, locs) = match loaded {
        Ok((ContentIn::Node { record, children }, locs)) => (record, children, locs),
        Ok(_) | Err(Error::Damaged(_)) => {
            lost.push(path.clone());
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    match children {
        ChildrenIn::Inline(list) => {
            for ((name, hash), loc) in list.into_iter().zip(locs) {
                entries.push((name, ObjRef { hash, loc }));
            }
        }
        ChildrenIn::Paged(hash) => {
            let page = ObjRef { hash, loc: locs[0] };
            if !lenient_pages(source, page, 0, &mut entries)? {
                lost.push(alloc::format!(
                    "{}{}*",
                    path,
                    if path.len() > 1 { "/" } else { "" }
                ));
            }
        }
    }
    let mut node = MemNode {
        record,
        children: ChildMap::new(),
        cached: None,
    };
    let base = path.len();
    for (name, child) in entries {
        if !valid_component(&name) || node.children.get(&name).is_some() {
            continue;
        }
        if path.len() > 1 {
            path.push('/');
        }
        path.push_str(&name);
        let loaded = lenient_node(source, child, depth + 1, path, lost)?;
        path.truncate(base);
        if let Some(c) = loaded {
            node.children.insert(name, c);
        }
    }
    Ok(Some(node))
}

/// Plain copy of the state, for tests, history and diffs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl Tree {
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        self.visit(&mut |p, r| {
            s.nodes.insert(p.to_string(), r.clone());
        });
        self.visit_blobs(&mut |k, v| {
            s.blobs.insert(k.to_string(), v.to_vec());
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    /// A sink/source over a Vec, for round trips without a device.
    struct VecStore {
        bytes: Vec<u8>,
        relocate: bool,
        written: usize,
    }
    impl ObjectSink for VecStore {
        fn store(&mut self, _hash: &Hash, content: &[u8], locs: &[Loc]) -> Result<Loc, Error> {
            let payload = crate::format::encode_object_payload(content, locs);
            let loc = Loc {
                offset: self.bytes.len() as u64,
                len: payload.len() as u32,
            };
            self.bytes.extend_from_slice(&payload);
            self.written += 1;
            Ok(loc)
        }
        fn relocating(&self) -> bool {
            self.relocate
        }
        fn lookup(&self, _hash: &Hash) -> Option<Loc> {
            None
        }
    }
    impl ObjectSource for VecStore {
        fn read(&mut self, loc: Loc) -> Result<Option<Vec<u8>>, Error> {
            let start = loc.offset as usize;
            Ok(self
                .bytes
                .get(start..start + loc.len as usize)
                .map(|b| b.to_vec()))
        }
    }

    fn rec(v: &str) -> NodeRecord {
        NodeRecord {
            value: v.as_bytes().to_vec(),
            permissions: b"n0\0".to_vec(),
            generation: 1,
        }
    }

    #[test]
    fn put_remove_and_implicit_parents() {
        let mut t = Tree::new();
        t.apply(Mutation::PutNode {
            path: "/a/b/c".into(),
            record: rec("x"),
        });
        assert_eq!(t.node_count, 1);
        assert!(t.node("/a").is_none(), "implicit parent has no record");
        assert_eq!(t.children("/a").unwrap(), ["b"]);
        t.apply(Mutation::RemoveSubtree {
            path: "/a/b/c".into(),
        });
        assert_eq!(t.node_count, 0);
        assert!(
            t.lookup("/a").is_none(),
            "empty implicit parents are pruned"
        );
        t.apply(Mutation::PutNode {
            path: "/".into(),
            record: rec("root"),
        });
        assert_eq!(t.snapshot().nodes.len(), 1);
    }

    #[test]
    fn big_directory_splits_and_collapses() {
        let mut t = Tree::new();
        for i in 0..5000 {
            t.apply(Mutation::PutNode {
                path: format!("/big/{i}"),
                record: rec("v"),
            });
        }
        let big = t.lookup("/big").unwrap();
        assert!(matches!(big.children.root, Bucket::Branch { .. }));
        assert_eq!(big.children.len(), 5000);
        assert_eq!(t.node("/big/4321").unwrap().value, b"v");
        for i in 0..4990 {
            t.apply(Mutation::RemoveSubtree {
                path: format!("/big/{i}"),
            });
        }
        let big = t.lookup("/big").unwrap();
        assert!(matches!(big.children.root, Bucket::Leaf { .. }));
        assert_eq!(t.children("/big").unwrap().len(), 10);
    }

    #[test]
    fn store_load_round_trip_and_incremental_cost() {
        let mut t = Tree::new();
        for i in 0..3000 {
            t.apply(Mutation::PutNode {
                path: format!("/local/domain/{}/device/vif/0/k{}", i % 3, i),
                record: rec(&format!("{i}")),
            });
            t.apply(Mutation::PutNode {
                path: format!("/big/n{i}"),
                record: rec("b"),
            });
        }
        t.apply(Mutation::PutBlob {
            key: "conn/1".into(),
            value: b"state".to_vec(),
        });
        let mut store = VecStore {
            bytes: Vec::new(),
            relocate: false,
            written: 0,
        };
        let (tr, br) = t.store(&mut store).unwrap();
        let loaded = Tree::load(&mut store, tr, br).unwrap();
        assert_eq!(loaded.snapshot(), t.snapshot());
        assert_eq!(loaded.node_count, t.node_count);

        // Changing one child of the 3000-entry directory rewrites O(log n) objects.
        store.written = 0;
        t.apply(Mutation::PutNode {
            path: "/big/n17".into(),
            record: rec("changed"),
        });
        let (tr2, _) = t.store(&mut store).unwrap();
        assert_ne!(tr2.hash, tr.hash);
        assert!(store.written <= 6, "wrote {} objects", store.written);

        // Relocation rewrites everything under the same names.
        let mut other = VecStore {
            bytes: Vec::new(),
            relocate: true,
            written: 0,
        };
        let (tr3, br3) = t.store(&mut other).unwrap();
        assert_eq!(tr3.hash, tr2.hash);
        assert_eq!(
            Tree::load(&mut other, tr3, br3).unwrap().snapshot(),
            t.snapshot()
        );
    }

    #[test]
    fn corrupted_object_is_a_typed_error() {
        let mut t = Tree::new();
        t.apply(Mutation::PutNode {
            path: "/a".into(),
            record: rec("x"),
        });
        let mut store = VecStore {
            bytes: Vec::new(),
            relocate: false,
            written: 0,
        };
        let (tr, br) = t.store(&mut store).unwrap();
        for i in 0..store.bytes.len() {
            let mut s = VecStore {
                bytes: store.bytes.clone(),
                relocate: false,
                written: 0,
            };
            s.bytes[i] ^= 0x04;
            match Tree::load(&mut s, tr, br) {
                Ok(l) => assert_eq!(l.snapshot(), t.snapshot(), "byte {i}"),
                Err(Error::Damaged(d)) => assert_eq!(d.kind, DamageKind::Object),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
}
