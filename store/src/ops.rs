//! Node operations (READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART, GET_PERMS, SET_PERMS)
//! written once over the [`View`] trait, which is implemented by the committed tree
//! ([`GlobalView`], recording changes and watch triggers) and by a transaction's private view
//! ([`TxView`], recording observations). Commit replays a transaction's operations through the
//! same functions on a [`GlobalView`] with checks off ([`Checks::Replay`]).
//!
//! Semantics follow xen.git `tools/xenstored/core.c` (`do_write`, `do_mkdir`, `do_rm`,
//! `construct_node`, `create_node`, `do_set_perms`, `send_directory_part`,
//! `errno_from_parents`).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use xenstore_protocol::path;
use xenstore_protocol::{Domid, Errno, Permissions};

use crate::access::{Caller, FEATURE_DOMID_ANY, Need};
use crate::changes::{Change, ChangeSet};
use crate::node::{Tree, node_size_bytes};
use crate::quota;
use crate::transaction::{Observation, Transaction, TxChildren, TxEntry, TxNode, TxOperation};

/// What a lookup must record as observed (transactions only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Observe {
    /// The value influences the outcome.
    pub value: bool,
    /// The permissions influence the outcome.
    pub permissions: bool,
}

impl Observe {
    /// Existence only.
    pub const EXISTENCE: Observe = Observe {
        value: false,
        permissions: false,
    };
    /// Existence and permissions.
    pub const PERMISSIONS: Observe = Observe {
        value: false,
        permissions: true,
    };
}

/// A copy of what an operation needs from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Value (empty unless asked for).
    pub value: Vec<u8>,
    /// Permissions.
    pub permissions: Permissions,
    /// `DOMID_ANY` entries ignored.
    pub any_ignored: bool,
    /// Generation to report.
    pub generation: u64,
    /// Length of the value (known even when the value itself is not copied).
    pub value_len: usize,
    /// C's node size.
    pub size_bytes: usize,
}

/// How a watch matches a changed path (C `enum watch_match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The watched path is the changed path or an ancestor (within the watch depth).
    Subtree,
    /// Only a watch on exactly the changed path.
    Exact,
    /// Special plain events: only depth-less watches on exactly the path.
    NoDepth,
    /// Special `@…/<domid>` events: exact, or a watch on the parent with depth ≥ 1.
    Depth,
}

/// A change that may fire watches, with the permissions visible when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Changed path (absolute or special).
    pub path: String,
    /// Match rule.
    pub kind: Match,
    /// The node's permissions at the time (`None`: node not readable by anyone but priv).
    pub node_permissions: Option<(Permissions, bool)>,
    /// The parent's permissions at the time.
    pub parent_permissions: Option<(Permissions, bool)>,
    /// Permissions before a SET_PERMS.
    pub old_permissions: Option<(Permissions, bool)>,
}

/// Whether permission and quota checks apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// A client request.
    Enforce,
    /// Commit-time replay of already validated operations.
    Replay,
}

/// Quota values an operation needs, resolved for the caller's domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `nodes`.
    pub nodes: u32,
    /// `node-size`.
    pub node_size: u32,
    /// `node-permissions`.
    pub node_permissions: u32,
    /// `transaction-nodes`.
    pub transaction_nodes: u32,
    /// `memory` (hard).
    pub memory: u32,
    /// Bytes currently charged to the caller's domain (see `Store::memory_usage`).
    pub memory_used: u64,
}

impl Limits {
    /// C `domain_memory_add`: refused (`ENOMEM`) when the caller's charge after the change
    /// would reach the hard memory quota. Changes of nodes owned by other domains are not
    /// checked (approximation: C charges the owner but compares with the caller's quota).
    pub fn memory_exceeded(&self, delta: i64) -> bool {
        let total = (self.memory_used as i64).saturating_add(delta).max(0) as u64;
        quota::exceeds(self.memory, total)
    }
}

/// Memory charged for a node (same formula as `Node::memory_bytes`).
fn node_memory(node_path: &str, value_len: usize, permissions: usize) -> i64 {
    (node_path.len()
        + value_len
        + permissions * crate::node::PERMISSION_ENTRY_BYTES
        + crate::node::NODE_OVERHEAD_BYTES) as i64
}

/// Access to a tree for the operations below.
pub trait View {
    /// Looks a node up, recording what is observed.
    fn lookup(&mut self, node_path: &str, observe: Observe) -> Result<Option<NodeInfo>, Errno>;
    /// The children of an existing node (records a child-list observation).
    fn children(&mut self, node_path: &str) -> Vec<String>;
    /// The concatenated `<name>\0` list of an existing node's children (C's child list).
    fn child_list(&mut self, node_path: &str) -> Vec<u8> {
        let mut list = Vec::new();
        for child in self.children(node_path) {
            list.extend_from_slice(child.as_bytes());
            list.push(0);
        }
        list
    }
    /// Creates a node whose parent exists.
    fn create(&mut self, node_path: &str, value: &[u8], permissions: Permissions, ignored: bool);
    /// Replaces a value.
    fn set_value(&mut self, node_path: &str, value: &[u8]);
    /// Replaces permissions.
    fn set_permissions(&mut self, node_path: &str, permissions: Permissions, ignored: bool);
    /// Removes an existing node with its subtree.
    fn remove(&mut self, node_path: &str);
    /// Records a watch trigger for a node that exists now (global view only).
    fn trigger(&mut self, node_path: &str, kind: Match, old: Option<(Permissions, bool)>);
    /// Nodes owned by `domid` as this view sees them (for the node quota).
    fn owned_nodes(&self, domid: Domid) -> u32;
    /// Records an operation for replay (transaction view only).
    fn record(&mut self, operation: TxOperation);
    /// A write failed on a quota where C marks the transaction failed (its commit then
    /// answers `ENOMEM`); no-op outside transactions.
    fn fail(&mut self);
}

/// The committed tree as a [`View`]: mutations are applied immediately and recorded.
#[derive(Debug)]
pub struct GlobalView<'a> {
    /// The tree.
    pub tree: &'a mut Tree,
    /// Change records.
    pub changes: &'a mut ChangeSet,
    /// Watch triggers.
    pub triggers: &'a mut Vec<Trigger>,
}

fn info_of(node: &crate::node::Node, with_value: bool) -> NodeInfo {
    NodeInfo {
        value: if with_value {
            node.record.value.clone()
        } else {
            Vec::new()
        },
        permissions: node.record.permissions.clone(),
        any_ignored: node.record.any_ignored,
        generation: node.record.generation,
        value_len: node.record.value.len(),
        size_bytes: node.size_bytes(),
    }
}

impl GlobalView<'_> {
    fn record_node(&mut self, node_path: &str) {
        if let Some(node) = self.tree.get(node_path) {
            self.changes.push(Change::NodeWritten {
                path: String::from(node_path),
                record: node.record.clone(),
            });
        }
    }

    fn permissions_of(&self, node_path: &str) -> Option<(Permissions, bool)> {
        self.tree
            .get(node_path)
            .map(|node| (node.record.permissions.clone(), node.record.any_ignored))
    }

    fn make_trigger(
        &self,
        node_path: &str,
        kind: Match,
        old: Option<(Permissions, bool)>,
    ) -> Trigger {
        let parent_path = path::parent(node_path).unwrap_or("/");
        Trigger {
            path: String::from(node_path),
            kind,
            node_permissions: self.permissions_of(node_path),
            parent_permissions: self.permissions_of(parent_path),
            old_permissions: old,
        }
    }
}

impl View for GlobalView<'_> {
    fn lookup(&mut self, node_path: &str, observe: Observe) -> Result<Option<NodeInfo>, Errno> {
        Ok(self
            .tree
            .get(node_path)
            .map(|node| info_of(node, observe.value)))
    }

    fn children(&mut self, node_path: &str) -> Vec<String> {
        self.tree
            .get(node_path)
            .map(|node| node.children.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn child_list(&mut self, node_path: &str) -> Vec<u8> {
        let Some(node) = self.tree.get(node_path) else {
            return Vec::new();
        };
        let mut list = Vec::with_capacity(node.children_bytes);
        for child in &node.children {
            list.extend_from_slice(child.as_bytes());
            list.push(0);
        }
        list
    }

    fn create(&mut self, node_path: &str, value: &[u8], permissions: Permissions, ignored: bool) {
        self.tree
            .create(node_path, value.to_vec(), permissions, ignored);
        self.record_node(node_path);
        self.record_node(path::parent(node_path).unwrap_or("/"));
    }

    fn set_value(&mut self, node_path: &str, value: &[u8]) {
        self.tree.set_value(node_path, value.to_vec());
        self.record_node(node_path);
    }

    fn set_permissions(&mut self, node_path: &str, permissions: Permissions, ignored: bool) {
        self.tree.set_permissions(node_path, permissions, ignored);
        self.record_node(node_path);
    }

    fn remove(&mut self, node_path: &str) {
        // Fire while permissions are still visible, descendants before their ancestors
        // (C walks the subtree and fires on exit): each descendant matches exact watches,
        // the root of the removal subtree watches (C `delnode_sub`).
        for key in self.tree.subtree_paths(node_path).iter().rev() {
            let kind = if key == node_path {
                Match::Subtree
            } else {
                Match::Exact
            };
            let trigger = self.make_trigger(key, kind, None);
            self.triggers.push(trigger);
        }
        self.tree.remove_subtree(node_path);
        self.changes.push(Change::SubtreeRemoved {
            path: String::from(node_path),
        });
        self.record_node(path::parent(node_path).unwrap_or("/"));
    }

    fn trigger(&mut self, node_path: &str, kind: Match, old: Option<(Permissions, bool)>) {
        let trigger = self.make_trigger(node_path, kind, old);
        self.triggers.push(trigger);
    }

    fn owned_nodes(&self, domid: Domid) -> u32 {
        self.tree.owned_nodes(domid)
    }

    fn record(&mut self, _operation: TxOperation) {}

    fn fail(&mut self) {}
}

/// A transaction's private view over the committed tree.
#[derive(Debug)]
pub struct TxView<'a> {
    /// The committed tree (read only).
    pub tree: &'a Tree,
    /// The transaction.
    pub transaction: &'a mut Transaction,
    /// `transaction-nodes` limit (0 or [`quota::DISABLED`]: none; privileged callers pass 0).
    pub transaction_nodes: u32,
}

impl TxView<'_> {
    fn next_local_generation(&mut self) -> u64 {
        self.transaction.local_generation += 1;
        self.transaction.local_generation
    }

    /// True if an ancestor's state in the view hides the committed tree below it (removed, or
    /// created by the transaction).
    fn hidden_by_ancestor(&self, node_path: &str) -> bool {
        let mut current = node_path;
        while let Some(parent) = path::parent(current) {
            match self.transaction.view.get(parent) {
                Some(TxEntry::Absent) => return true,
                Some(TxEntry::Present(node)) if node.base.is_none() => return true,
                _ => {}
            }
            current = parent;
        }
        false
    }

    fn account_access(&mut self) -> Result<(), Errno> {
        if quota::exceeds(
            self.transaction_nodes,
            u64::from(self.transaction.accessed_nodes) + 1,
        ) {
            self.transaction.failed = true;
            return Err(Errno::ENOSPC);
        }
        self.transaction.accessed_nodes += 1;
        Ok(())
    }

    fn node_mut(&mut self, node_path: &str) -> &mut TxNode {
        match self.transaction.view.get_mut(node_path) {
            Some(TxEntry::Present(node)) => node,
            _ => panic!("transaction view: {node_path} must be present"),
        }
    }

    fn observe(&mut self, node_path: &str, observe: Observe) {
        let (base, value_written, permissions_written) = match self.transaction.view.get(node_path)
        {
            Some(TxEntry::Present(node)) => {
                (node.base, node.value_written, node.permissions_written)
            }
            _ => return,
        };
        let Some(base) = base else { return };
        let observation = self
            .transaction
            .observed
            .entry(String::from(node_path))
            .or_insert_with(|| Observation {
                incarnation: Some(base.incarnation),
                ..Observation::default()
            });
        if observe.value && !value_written && observation.value.is_none() {
            observation.value = Some(base.value);
        }
        if observe.permissions && !permissions_written && observation.permissions.is_none() {
            observation.permissions = Some(base.permissions);
        }
    }

    /// The view of a parent whose child list changes. Absent only when the parent vanished
    /// from the committed tree after the child was first accessed; such a transaction is
    /// doomed (the child's incarnation observation fails), so the list is left alone.
    fn parent_mut(&mut self, parent_path: &str) -> Option<&mut TxNode> {
        match self.transaction.view.get_mut(parent_path) {
            Some(TxEntry::Present(node)) => Some(node),
            _ => None,
        }
    }

    fn child_added(&mut self, parent_path: &str, name: &str) {
        let generation = self.next_local_generation();
        let Some(parent) = self.parent_mut(parent_path) else {
            return;
        };
        match &mut parent.children {
            TxChildren::Live { added, removed } => {
                removed.remove(name);
                added.insert(String::from(name));
            }
            TxChildren::Fixed(set) => {
                set.insert(String::from(name));
            }
        }
        parent.children_bytes += name.len() + 1;
        parent.generation = generation;
    }

    fn child_removed(&mut self, parent_path: &str, name: &str) {
        let generation = self.next_local_generation();
        let Some(parent) = self.parent_mut(parent_path) else {
            return;
        };
        match &mut parent.children {
            TxChildren::Live { added, removed } => {
                added.remove(name);
                removed.insert(String::from(name));
            }
            TxChildren::Fixed(set) => {
                set.remove(name);
            }
        }
        parent.children_bytes = parent.children_bytes.saturating_sub(name.len() + 1);
        parent.generation = generation;
    }
}

/// A committed node copied into a transaction's view.
fn snapshot(node: &crate::node::Node) -> TxEntry {
    TxEntry::Present(TxNode {
        value: node.record.value.clone(),
        permissions: node.record.permissions.clone(),
        any_ignored: node.record.any_ignored,
        generation: node.record.generation,
        base: Some(node.record.generations),
        value_written: false,
        permissions_written: false,
        children: TxChildren::Live {
            added: BTreeSet::new(),
            removed: BTreeSet::new(),
        },
        children_bytes: node.children_bytes,
    })
}

impl View for TxView<'_> {
    fn lookup(&mut self, node_path: &str, observe: Observe) -> Result<Option<NodeInfo>, Errno> {
        if !self.transaction.view.contains_key(node_path) {
            if self.hidden_by_ancestor(node_path) {
                return Ok(None);
            }
            self.account_access()?;
            let entry = match self.tree.get(node_path) {
                None => {
                    self.transaction.observed.insert(
                        String::from(node_path),
                        Observation {
                            incarnation: None,
                            ..Observation::default()
                        },
                    );
                    TxEntry::Absent
                }
                Some(node) => snapshot(node),
            };
            self.transaction.view.insert(String::from(node_path), entry);
        }
        self.observe(node_path, observe);
        Ok(match self.transaction.view.get(node_path) {
            Some(TxEntry::Present(node)) => Some(NodeInfo {
                value: if observe.value {
                    node.value.clone()
                } else {
                    Vec::new()
                },
                permissions: node.permissions.clone(),
                any_ignored: node.any_ignored,
                generation: node.generation,
                value_len: node.value.len(),
                size_bytes: node_size_bytes(
                    node.permissions.len(),
                    node.value.len(),
                    node.children_bytes,
                ),
            }),
            _ => None,
        })
    }

    fn children(&mut self, node_path: &str) -> Vec<String> {
        let (base, live) = match self.transaction.view.get(node_path) {
            Some(TxEntry::Present(node)) => match &node.children {
                TxChildren::Fixed(set) => return set.iter().cloned().collect(),
                TxChildren::Live { added, removed } => {
                    (node.base, (added.clone(), removed.clone()))
                }
            },
            _ => return Vec::new(),
        };
        let mut set: BTreeSet<String> = BTreeSet::new();
        if let Some(base) = base {
            let observation = self
                .transaction
                .observed
                .entry(String::from(node_path))
                .or_insert_with(|| Observation {
                    incarnation: Some(base.incarnation),
                    ..Observation::default()
                });
            if observation.children.is_none() {
                observation.children = Some(base.children);
            }
            if let Some(node) = self.tree.get(node_path) {
                set.extend(node.children.iter().cloned());
            }
        }
        let (added, removed) = live;
        for name in &removed {
            set.remove(name);
        }
        set.extend(added);
        let node = self.node_mut(node_path);
        node.children = TxChildren::Fixed(set.clone());
        set.into_iter().collect()
    }

    fn create(&mut self, node_path: &str, value: &[u8], permissions: Permissions, ignored: bool) {
        let generation = self.next_local_generation();
        if !self.transaction.view.contains_key(node_path) {
            // Created nodes count as accessed (C's `access_node` on write); the node quota
            // bounds them, so this count is not enforced here.
            self.transaction.accessed_nodes += 1;
        }
        self.transaction.view.insert(
            String::from(node_path),
            TxEntry::Present(TxNode {
                value: value.to_vec(),
                permissions,
                any_ignored: ignored,
                generation,
                base: None,
                value_written: true,
                permissions_written: true,
                children: TxChildren::Fixed(BTreeSet::new()),
                children_bytes: 0,
            }),
        );
        self.transaction.created_nodes += 1;
        let parent = path::parent(node_path).unwrap_or("/");
        self.child_added(parent, path::basename(node_path));
    }

    fn set_value(&mut self, node_path: &str, value: &[u8]) {
        let generation = self.next_local_generation();
        let node = self.node_mut(node_path);
        node.value = value.to_vec();
        node.value_written = true;
        node.generation = generation;
    }

    fn set_permissions(&mut self, node_path: &str, permissions: Permissions, ignored: bool) {
        let generation = self.next_local_generation();
        let node = self.node_mut(node_path);
        node.permissions = permissions;
        node.any_ignored = ignored;
        node.permissions_written = true;
        node.generation = generation;
    }

    fn remove(&mut self, node_path: &str) {
        // The parent's child list changes: bring the parent into the view (it exists, as its
        // child does; no observation is needed beyond the child's incarnation).
        let parent = path::parent(node_path).unwrap_or("/");
        if !self.transaction.view.contains_key(parent) {
            if let Some(node) = self.tree.get(parent) {
                self.transaction.accessed_nodes += 1;
                self.transaction
                    .view
                    .insert(String::from(parent), snapshot(node));
            }
        }
        let prefix = alloc::format!("{node_path}/");
        let below: Vec<String> = self
            .transaction
            .view
            .range::<str, _>((
                core::ops::Bound::Excluded(prefix.as_str()),
                core::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix.as_str()))
            .map(|(key, _)| key.clone())
            .collect();
        for key in below {
            self.transaction.view.remove(&key);
        }
        self.transaction
            .view
            .insert(String::from(node_path), TxEntry::Absent);
        let parent = path::parent(node_path).unwrap_or("/");
        self.child_removed(parent, path::basename(node_path));
    }

    fn trigger(&mut self, _node_path: &str, _kind: Match, _old: Option<(Permissions, bool)>) {}

    fn owned_nodes(&self, domid: Domid) -> u32 {
        self.tree
            .owned_nodes(domid)
            .saturating_add(self.transaction.created_nodes)
    }

    fn record(&mut self, operation: TxOperation) {
        self.transaction.operations.push(operation);
    }

    fn fail(&mut self) {
        self.transaction.failed = true;
    }
}

/// Observation needed for permission decisions: only unprivileged callers' decisions depend
/// on permissions.
fn access_observe(caller: &Caller, mut observe: Observe) -> Observe {
    if !caller.privileged {
        observe.permissions = true;
    }
    observe
}

/// C `errno_from_parents`: report `errnum` only if the nearest existing ancestor grants
/// `need`, else `EACCES` (so callers cannot probe for nodes they may not see).
fn errno_from_parents<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    errnum: Errno,
    need: Need,
) -> Errno {
    let mut current = String::from(node_path);
    loop {
        let parent = match path::parent(&current) {
            Some(parent) => String::from(parent),
            None if current != "/" => String::from("/"),
            None => return Errno::EACCES,
        };
        match view.lookup(&parent, access_observe(caller, Observe::EXISTENCE)) {
            Err(errno) => return errno,
            Ok(Some(node)) => {
                return if caller
                    .rights(&node.permissions, node.any_ignored)
                    .overlap(need)
                {
                    errnum
                } else {
                    Errno::EACCES
                };
            }
            Ok(None) => current = parent,
        }
    }
}

/// C `get_node` with a permission check: the node, or the errno the caller may see.
fn get_node<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    need: Need,
    observe: Observe,
) -> Result<NodeInfo, Errno> {
    match view.lookup(node_path, access_observe(caller, observe))? {
        Some(node)
            if caller
                .rights(&node.permissions, node.any_ignored)
                .allow(need) =>
        {
            Ok(node)
        }
        Some(_) => Err(Errno::EACCES),
        None => Err(errno_from_parents(
            view,
            caller,
            node_path,
            Errno::ENOENT,
            need,
        )),
    }
}

/// READ.
pub fn read<V: View>(view: &mut V, caller: &Caller, node_path: &str) -> Result<Vec<u8>, Errno> {
    get_node(
        view,
        caller,
        node_path,
        Need::Read,
        Observe {
            value: true,
            permissions: false,
        },
    )
    .map(|node| node.value)
}

/// DIRECTORY: child names in order.
pub fn directory<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
) -> Result<Vec<String>, Errno> {
    get_node(view, caller, node_path, Need::Read, Observe::EXISTENCE)?;
    Ok(view.children(node_path))
}

/// DIRECTORY_PART: `<generation>\0` then as many whole `<child>\0` as fit from byte `offset`,
/// plus a final `\0` when the list ends (C `send_directory_part`).
pub fn directory_part<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    offset: u64,
) -> Result<Vec<u8>, Errno> {
    // The generation covers value, permissions and children: observe all of them.
    let node = get_node(
        view,
        caller,
        node_path,
        Need::Read,
        Observe {
            value: true,
            permissions: true,
        },
    )?;
    let list = view.child_list(node_path);
    let mut out = alloc::format!("{}", node.generation).into_bytes();
    out.push(0);
    let generation_len = out.len();
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    if offset >= list.len() {
        out.push(0);
        return Ok(out);
    }
    let max_len = xenstore_protocol::limits::PAYLOAD_MAX_BYTES - generation_len - 1;
    let mut len = 0;
    let rest = &list[offset..];
    // Entries start at `offset` even if it points into the middle of a name, as in C.
    while len < rest.len() {
        let name_len = rest[len..]
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(rest.len() - len);
        if len + name_len >= max_len {
            break;
        }
        len += name_len + 1;
    }
    out.extend_from_slice(&rest[..len]);
    if offset + len == list.len() {
        out.push(0);
    }
    Ok(out)
}

/// GET_PERMS.
pub fn get_permissions<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
) -> Result<Permissions, Errno> {
    get_node(view, caller, node_path, Need::Read, Observe::PERMISSIONS).map(|node| node.permissions)
}

/// C's `construct_node` + `create_node`: creates `node_path` and missing ancestors with
/// inherited permissions. The caller has established that `node_path` is missing and that the
/// nearest existing ancestor grants write.
fn create_node<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    value: &[u8],
    checks: Checks,
    limits: &Limits,
) -> Result<(), Errno> {
    // Walk up to the nearest existing ancestor; its permissions are inherited.
    let mut missing: Vec<String> = Vec::new();
    missing.push(String::from(node_path));
    let mut current = String::from(node_path);
    let ancestor = loop {
        let parent = String::from(path::parent(&current).unwrap_or("/"));
        match view.lookup(&parent, Observe::PERMISSIONS)? {
            Some(node) => break (parent, node),
            None => {
                missing.push(parent.clone());
                current = parent;
            }
        }
    };
    let (_, ancestor) = ancestor;
    let mut permissions = ancestor.permissions.clone();
    if !caller.privileged {
        permissions.set_owner(caller.domid);
    }
    let enforce = checks == Checks::Enforce && !caller.privileged;
    if enforce {
        let new_nodes = missing.len() as u64;
        if quota::exceeds(
            limits.nodes,
            u64::from(view.owned_nodes(caller.domid)) + new_nodes,
        ) {
            view.fail();
            return Err(Errno::ENOSPC);
        }
        // Sizes: the existing ancestor gains one child name; each new node has at most one
        // child name (the next level) and the leaf has the value.
        let first_name = path::basename(missing.last().expect("one missing"));
        if quota::exceeds(
            limits.node_size,
            (ancestor.size_bytes + first_name.len() + 1) as u64,
        ) {
            view.fail();
            return Err(Errno::ENOSPC);
        }
        for index in 0..missing.len() {
            let children_bytes = if index == 0 {
                0
            } else {
                path::basename(&missing[index - 1]).len() + 1
            };
            let value_len = if index == 0 { value.len() } else { 0 };
            let size = node_size_bytes(permissions.len(), value_len, children_bytes);
            if quota::exceeds(limits.node_size, size as u64) {
                view.fail();
                return Err(Errno::ENOSPC);
            }
        }
    }
    if enforce {
        let delta: i64 = missing
            .iter()
            .enumerate()
            .map(|(index, missing_path)| {
                let value_len = if index == 0 { value.len() } else { 0 };
                node_memory(missing_path, value_len, permissions.len())
            })
            .sum();
        if limits.memory_exceeded(delta) {
            view.fail();
            return Err(Errno::ENOMEM);
        }
    }
    for (index, missing_path) in missing.iter().enumerate().rev() {
        let node_value: &[u8] = if index == 0 { value } else { &[] };
        view.create(
            missing_path,
            node_value,
            permissions.clone(),
            ancestor.any_ignored,
        );
    }
    Ok(())
}

/// WRITE.
pub fn write<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    value: &[u8],
    checks: Checks,
    limits: &Limits,
) -> Result<(), Errno> {
    match node_for_write(view, caller, node_path, checks)? {
        Some(node) => {
            if checks == Checks::Enforce
                && !caller.privileged
                && quota::exceeds(
                    limits.node_size,
                    (node.size_bytes - node.value_len + value.len()) as u64,
                )
            {
                view.fail();
                return Err(Errno::ENOSPC);
            }
            if checks == Checks::Enforce
                && !caller.privileged
                && node.permissions.owner().domid == caller.domid
                && limits.memory_exceeded(value.len() as i64 - node.value_len as i64)
            {
                view.fail();
                return Err(Errno::ENOMEM);
            }
            view.set_value(node_path, value);
        }
        None => create_node(view, caller, node_path, value, checks, limits)?,
    }
    view.trigger(node_path, Match::Subtree, None);
    view.record(TxOperation::Write {
        path: String::from(node_path),
        value: value.to_vec(),
    });
    Ok(())
}

/// Existing node with write access, or `None` when it is missing and may be created.
fn node_for_write<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    checks: Checks,
) -> Result<Option<NodeInfo>, Errno> {
    if checks == Checks::Replay {
        return view.lookup(node_path, Observe::EXISTENCE);
    }
    match get_node(view, caller, node_path, Need::Write, Observe::EXISTENCE) {
        Ok(node) => Ok(Some(node)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno),
    }
}

/// MKDIR.
pub fn mkdir<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    checks: Checks,
    limits: &Limits,
) -> Result<(), Errno> {
    let existing = if checks == Checks::Replay {
        view.lookup(node_path, Observe::EXISTENCE)?
    } else {
        match get_node(view, caller, node_path, Need::Write, Observe::EXISTENCE) {
            Ok(node) => Some(node),
            Err(Errno::ENOENT) => None,
            Err(errno) => return Err(errno),
        }
    };
    if existing.is_some() {
        return Ok(());
    }
    create_node(view, caller, node_path, &[], checks, limits)?;
    view.trigger(node_path, Match::Subtree, None);
    view.record(TxOperation::Mkdir {
        path: String::from(node_path),
    });
    Ok(())
}

/// RM.
pub fn rm<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    checks: Checks,
) -> Result<(), Errno> {
    let existing = if checks == Checks::Replay {
        view.lookup(node_path, Observe::EXISTENCE)?
    } else {
        match get_node(view, caller, node_path, Need::Write, Observe::EXISTENCE) {
            Ok(node) => Some(node),
            Err(Errno::ENOENT) => {
                // Missing is fine if the parent exists.
                let parent = path::parent(node_path).unwrap_or("/");
                return match view.lookup(parent, Observe::EXISTENCE)? {
                    Some(_) => Ok(()),
                    None => Err(Errno::ENOENT),
                };
            }
            Err(errno) => return Err(errno),
        }
    };
    if node_path == "/" {
        return Err(Errno::EINVAL);
    }
    if existing.is_none() {
        return Ok(());
    }
    view.remove(node_path);
    view.record(TxOperation::Rm {
        path: String::from(node_path),
    });
    Ok(())
}

/// SET_PERMS (`node_path` may be special).
pub fn set_permissions<V: View>(
    view: &mut V,
    caller: &Caller,
    node_path: &str,
    permissions: &Permissions,
    checks: Checks,
    limits: &Limits,
) -> Result<(), Errno> {
    let enforce = checks == Checks::Enforce && !caller.privileged;
    if enforce && quota::exceeds(limits.node_permissions, permissions.len() as u64) {
        return Err(Errno::ENOSPC);
    }
    let has_any = permissions
        .entries()
        .iter()
        .any(|entry| entry.domid == Domid::ANY);
    let ignored = has_any && !caller.has_feature(FEATURE_DOMID_ANY);
    if ignored && permissions.owner().domid == Domid::ANY {
        return Err(Errno::ENOENT);
    }
    let node = if checks == Checks::Replay {
        view.lookup(node_path, Observe::PERMISSIONS)?
            .ok_or(Errno::ENOENT)?
    } else {
        // Unprivileged callers observe the permissions (owner check); a privileged
        // SET_PERMS does not depend on the old list and stays blind.
        get_node(
            view,
            caller,
            node_path,
            Need::WriteOwner,
            Observe::EXISTENCE,
        )?
    };
    if enforce {
        if permissions.owner().domid != node.permissions.owner().domid {
            return Err(Errno::EPERM);
        }
        let size = node.size_bytes - node.permissions.len() * crate::node::PERMISSION_ENTRY_BYTES
            + permissions.len() * crate::node::PERMISSION_ENTRY_BYTES;
        if quota::exceeds(limits.node_size, size as u64) {
            view.fail();
            return Err(Errno::ENOSPC);
        }
        let delta = (permissions.len() as i64 - node.permissions.len() as i64)
            * crate::node::PERMISSION_ENTRY_BYTES as i64;
        if limits.memory_exceeded(delta) {
            view.fail();
            return Err(Errno::ENOMEM);
        }
    }
    view.set_permissions(node_path, permissions.clone(), ignored);
    view.trigger(
        node_path,
        Match::Subtree,
        Some((node.permissions.clone(), node.any_ignored)),
    );
    view.record(TxOperation::SetPermissions {
        path: String::from(node_path),
        permissions: permissions.clone(),
    });
    Ok(())
}

/// Replays one operation of a validated transaction on the committed tree.
pub fn replay(
    view: &mut GlobalView<'_>,
    caller: &Caller,
    operation: &TxOperation,
    limits: &Limits,
) {
    let result = match operation {
        TxOperation::Write { path, value } => {
            write(view, caller, path, value, Checks::Replay, limits)
        }
        TxOperation::Mkdir { path } => mkdir(view, caller, path, Checks::Replay, limits),
        TxOperation::Rm { path } => rm(view, caller, path, Checks::Replay),
        TxOperation::SetPermissions { path, permissions } => {
            set_permissions(view, caller, path, permissions, Checks::Replay, limits)
        }
    };
    debug_assert!(result.is_ok(), "replay of a validated operation failed");
}
