//! The committed node tree: values, permissions, children, generation counts, and the
//! per-domain accounting derived from them (owned nodes, charged memory).
//!
//! Keys are absolute paths in a `BTreeMap`, so a subtree is one contiguous key range
//! (`path`, then everything starting with `path/`) and iteration order is deterministic.
//! The special nodes `@introduceDomain` and `@releaseDomain` live in the same map with no
//! parent; they only ever change permissions.
//!
//! Generations: one global counter, incremented before every use, so every value is unique
//! (xen.git `tools/xenstored/transaction.c` header comment). Each node keeps the C-visible
//! `generation` (any change: value, permissions, child list, creation) plus the finer
//! [`NodeGenerations`] the transaction conflict rule uses.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use xenstore_protocol::path;
use xenstore_protocol::{Domid, Permissions};

/// Bytes of C's `struct node_hdr` counted by `calc_node_acc_size`.
pub const NODE_HEADER_BYTES: usize = 16;
/// Bytes per permission entry counted by `calc_node_acc_size` (`struct xs_permissions`).
pub const PERMISSION_ENTRY_BYTES: usize = 8;
/// Fixed per-node overhead charged to the owner's memory account (approximation of the map
/// entry and allocation headers; see [`Node::memory_bytes`]).
pub const NODE_OVERHEAD_BYTES: usize = 64;

/// When each aspect of a node last changed (global generation values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGenerations {
    /// When this incarnation of the node was created (a re-created node gets a new one).
    pub incarnation: u64,
    /// Last change of the value.
    pub value: u64,
    /// Last change of the permissions.
    pub permissions: u64,
    /// Last change of the child list.
    pub children: u64,
}

impl NodeGenerations {
    /// All aspects created at `generation`.
    pub const fn created(generation: u64) -> NodeGenerations {
        NodeGenerations {
            incarnation: generation,
            value: generation,
            permissions: generation,
            children: generation,
        }
    }
}

/// Everything persisted about one node (children are implied by the paths).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The value (raw bytes).
    pub value: Vec<u8>,
    /// Owner first.
    pub permissions: Permissions,
    /// `DOMID_ANY` entries beyond the owner are ignored (written without the feature).
    pub any_ignored: bool,
    /// C-visible generation: last change of anything.
    pub generation: u64,
    /// Fine-grained generations.
    pub generations: NodeGenerations,
}

/// One node in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Persisted part.
    pub record: NodeRecord,
    /// Child names (sorted: DIRECTORY lists children in byte order).
    pub children: BTreeSet<String>,
    /// Sum over children of `name.len() + 1` (C's `childlen`).
    pub children_bytes: usize,
}

impl Node {
    /// C's `calc_node_acc_size`: header + permissions + value + child names.
    pub fn size_bytes(&self) -> usize {
        node_size_bytes(
            self.record.permissions.len(),
            self.record.value.len(),
            self.children_bytes,
        )
    }

    /// Memory charged to the owner: path + value + permissions + fixed overhead. Child names
    /// are not charged (they are charged as the children's paths). Deterministic, approximate.
    pub fn memory_bytes(path: &str, record: &NodeRecord) -> u64 {
        (path.len()
            + record.value.len()
            + record.permissions.len() * PERMISSION_ENTRY_BYTES
            + NODE_OVERHEAD_BYTES) as u64
    }
}

/// C's node size formula.
pub fn node_size_bytes(permissions: usize, value: usize, children_bytes: usize) -> usize {
    NODE_HEADER_BYTES + permissions * PERMISSION_ENTRY_BYTES + value + children_bytes
}

/// True for `@…` paths.
pub fn is_special(path: &str) -> bool {
    path.starts_with('@')
}

/// The committed tree plus accounting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    generation: u64,
    owned_nodes: BTreeMap<Domid, u32>,
    memory: BTreeMap<Domid, u64>,
}

/// Why a set of records does not form a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// A node's parent is missing.
    MissingParent(String),
    /// The root is missing.
    MissingRoot,
    /// A path is not canonical.
    InvalidPath(String),
    /// A node's generation is above the global counter.
    GenerationAhead(String),
}

impl Tree {
    /// An empty tree with only `/` (owned by `owner`, `n` for everyone else).
    pub fn with_root(owner: Domid) -> Tree {
        let mut tree = Tree {
            nodes: BTreeMap::new(),
            generation: 0,
            owned_nodes: BTreeMap::new(),
            memory: BTreeMap::new(),
        };
        let generation = tree.next_generation();
        let record = NodeRecord {
            value: Vec::new(),
            permissions: Permissions::owned_by(owner, xenstore_protocol::Access::None),
            any_ignored: false,
            generation,
            generations: NodeGenerations::created(generation),
        };
        tree.insert_raw(String::from("/"), record);
        tree
    }

    /// Rebuilds from records (any order of paths; parents must be present).
    pub fn from_records(
        generation: u64,
        records: &BTreeMap<String, NodeRecord>,
    ) -> Result<Tree, TreeError> {
        let mut tree = Tree {
            nodes: BTreeMap::new(),
            generation,
            owned_nodes: BTreeMap::new(),
            memory: BTreeMap::new(),
        };
        if !records.contains_key("/") {
            return Err(TreeError::MissingRoot);
        }
        // A parent is a prefix of each of its children, so BTreeMap order visits it first.
        for (node_path, record) in records {
            if record.generation > generation {
                return Err(TreeError::GenerationAhead(node_path.clone()));
            }
            if node_path != "/" && !is_special(node_path) {
                let parent = path::parent(node_path)
                    .ok_or_else(|| TreeError::InvalidPath(node_path.clone()))?;
                if !tree.nodes.contains_key(parent) {
                    return Err(TreeError::MissingParent(node_path.clone()));
                }
            }
            tree.insert_raw(node_path.clone(), record.clone());
        }
        Ok(tree)
    }

    /// Inserts a node and links it to its parent without touching generations.
    fn insert_raw(&mut self, node_path: String, record: NodeRecord) {
        self.charge(&node_path, &record, true);
        if node_path != "/" && !is_special(&node_path) {
            let parent_path = path::parent(&node_path).unwrap_or("/");
            let name = String::from(path::basename(&node_path));
            let parent = self
                .nodes
                .get_mut(parent_path)
                .expect("insert_raw: parent exists");
            parent.children_bytes += name.len() + 1;
            parent.children.insert(name);
        }
        self.nodes.insert(
            node_path,
            Node {
                record,
                children: BTreeSet::new(),
                children_bytes: 0,
            },
        );
    }

    fn charge(&mut self, node_path: &str, record: &NodeRecord, add: bool) {
        if is_special(node_path) {
            return;
        }
        let owner = record.permissions.owner().domid;
        let bytes = Node::memory_bytes(node_path, record);
        let count = self.owned_nodes.entry(owner).or_insert(0);
        let memory = self.memory.entry(owner).or_insert(0);
        if add {
            *count += 1;
            *memory += bytes;
        } else {
            *count -= 1;
            *memory -= bytes;
            if *count == 0 {
                self.owned_nodes.remove(&owner);
                self.memory.remove(&owner);
            }
        }
    }

    /// The global generation counter (last value handed out).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Hands out a fresh generation.
    pub fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// One node.
    pub fn get(&self, node_path: &str) -> Option<&Node> {
        self.nodes.get(node_path)
    }

    /// Number of nodes (including the special ones).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true (the root always exists).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Nodes owned by `domid` (special nodes not counted).
    pub fn owned_nodes(&self, domid: Domid) -> u32 {
        self.owned_nodes.get(&domid).copied().unwrap_or(0)
    }

    /// Memory charged to `domid` for nodes.
    pub fn memory(&self, domid: Domid) -> u64 {
        self.memory.get(&domid).copied().unwrap_or(0)
    }

    /// Domains that own nodes, with counts.
    pub fn owners(&self) -> impl Iterator<Item = (Domid, u32)> + '_ {
        self.owned_nodes
            .iter()
            .map(|(domid, count)| (*domid, *count))
    }

    /// Creates a node under an existing parent; bumps the parent's child-list generation.
    /// Returns the generation used.
    pub fn create(
        &mut self,
        node_path: &str,
        value: Vec<u8>,
        permissions: Permissions,
        any_ignored: bool,
    ) -> u64 {
        assert!(!self.nodes.contains_key(node_path), "create: exists");
        let generation = self.next_generation();
        let record = NodeRecord {
            value,
            permissions,
            any_ignored,
            generation,
            generations: NodeGenerations::created(generation),
        };
        self.insert_raw(String::from(node_path), record);
        let parent_path = path::parent(node_path).unwrap_or("/");
        let parent = self.nodes.get_mut(parent_path).expect("create: parent");
        parent.record.generation = generation;
        parent.record.generations.children = generation;
        generation
    }

    /// Replaces a value.
    pub fn set_value(&mut self, node_path: &str, value: Vec<u8>) {
        let generation = self.next_generation();
        let node = self.nodes.get_mut(node_path).expect("set_value: exists");
        let owner = node.record.permissions.owner().domid;
        let old_len = node.record.value.len() as u64;
        node.record.value = value;
        let new_len = node.record.value.len() as u64;
        node.record.generation = generation;
        node.record.generations.value = generation;
        if !is_special(node_path) {
            let memory = self.memory.entry(owner).or_insert(0);
            *memory = *memory + new_len - old_len;
        }
    }

    /// Replaces the permissions (re-charging the owner's accounts).
    pub fn set_permissions(&mut self, node_path: &str, permissions: Permissions, ignored: bool) {
        let generation = self.next_generation();
        let old = self.nodes.get(node_path).expect("set_permissions: exists");
        let old_record = old.record.clone();
        self.charge(node_path, &old_record, false);
        let node = self
            .nodes
            .get_mut(node_path)
            .expect("set_permissions: exists");
        node.record.permissions = permissions;
        node.record.any_ignored = ignored;
        node.record.generation = generation;
        node.record.generations.permissions = generation;
        let new_record = node.record.clone();
        self.charge(node_path, &new_record, true);
    }

    /// Paths of `node_path` and all its descendants, in path order (root of the subtree first).
    pub fn subtree_paths(&self, node_path: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !self.nodes.contains_key(node_path) {
            return out;
        }
        out.push(String::from(node_path));
        let prefix = if node_path == "/" {
            String::from("/")
        } else {
            alloc::format!("{node_path}/")
        };
        for (key, _) in self.nodes.range::<str, _>((
            core::ops::Bound::Excluded(prefix.as_str()),
            core::ops::Bound::Unbounded,
        )) {
            if !key.starts_with(prefix.as_str()) {
                break;
            }
            out.push(key.clone());
        }
        if node_path == "/" {
            // The prefix scan above does not include '/'-prefixed keys equal to the prefix.
            out.retain(|key| !is_special(key));
        }
        out
    }

    /// Removes a node and its subtree; returns the removed (path, node) pairs, subtree root
    /// first. Bumps the parent's child-list generation.
    pub fn remove_subtree(&mut self, node_path: &str) -> Vec<(String, Node)> {
        assert!(node_path != "/", "remove_subtree: root");
        let paths = self.subtree_paths(node_path);
        let mut removed = Vec::with_capacity(paths.len());
        for key in paths {
            let node = self.nodes.remove(&key).expect("remove_subtree: listed");
            self.charge(&key, &node.record, false);
            removed.push((key, node));
        }
        if !removed.is_empty() && !is_special(node_path) {
            let generation = self.next_generation();
            let parent_path = path::parent(node_path).unwrap_or("/");
            let name = path::basename(node_path);
            let parent = self.nodes.get_mut(parent_path).expect("remove: parent");
            if parent.children.remove(name) {
                parent.children_bytes -= name.len() + 1;
            }
            parent.record.generation = generation;
            parent.record.generations.children = generation;
        }
        removed
    }

    /// Every record, for export.
    pub fn records(&self) -> BTreeMap<String, NodeRecord> {
        self.nodes
            .iter()
            .map(|(key, node)| (key.clone(), node.record.clone()))
            .collect()
    }

    /// Structural self-check (CONTROL `check`): parents and child lists agree, accounting
    /// matches. Returns a description of every problem found.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut owned: BTreeMap<Domid, u32> = BTreeMap::new();
        for (key, node) in &self.nodes {
            if node.record.generation > self.generation {
                problems.push(alloc::format!("{key}: generation ahead of counter"));
            }
            let mut bytes = 0;
            for child in &node.children {
                bytes += child.len() + 1;
                if !self.nodes.contains_key(&path::join(key, child)) {
                    problems.push(alloc::format!("{key}: missing child {child}"));
                }
            }
            if bytes != node.children_bytes {
                problems.push(alloc::format!("{key}: child byte count"));
            }
            if key != "/" && !is_special(key) {
                *owned
                    .entry(node.record.permissions.owner().domid)
                    .or_insert(0) += 1;
                let parent = path::parent(key).unwrap_or("/");
                match self.nodes.get(parent) {
                    Some(parent_node) if parent_node.children.contains(path::basename(key)) => {}
                    _ => problems.push(alloc::format!("{key}: not linked from parent")),
                }
            } else if key == "/" {
                *owned
                    .entry(node.record.permissions.owner().domid)
                    .or_insert(0) += 1;
            }
        }
        if owned != self.owned_nodes {
            problems.push(String::from("owned node counts differ"));
        }
        problems
    }
}
