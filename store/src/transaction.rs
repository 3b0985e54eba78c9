//! Transactions: a private view over the committed tree, fine-grained read tracking, and
//! logical write operations replayed at commit.
//!
//! # The conflict rule
//!
//! A transaction records two things:
//! - **observations** of committed state, each tagged with the generation it had when first
//!   seen: that a path is *absent*; that a node *exists* (its incarnation); its *value*; its
//!   *permissions*; its *child list* (only when DIRECTORY / DIRECTORY_PART listed it);
//! - **operations** (WRITE, MKDIR, RM, SET_PERMS with their arguments) that succeeded in the
//!   transaction's view.
//!
//! At TRANSACTION_END `T` every observation is re-checked against the committed tree. If any
//! differs, the commit fails with `EAGAIN` and nothing is applied. Otherwise the operations
//! are replayed, in order, against the committed tree as if the client had sent them outside
//! a transaction at that instant.
//!
//! Why this is serializable: each operation's outcome (reply, which nodes it creates, the
//! permissions they inherit, what it removes) is a function of observed facts only — a write
//! observes the existence of the path and of each missing ancestor up to the nearest existing
//! one, plus that ancestor's permissions (inheritance) and, for unprivileged callers, the
//! permissions of the node deciding access; a read observes the value (and permissions when
//! they decide access); RM observes existence. Replies that reveal data (READ, DIRECTORY,
//! GET_PERMS, DIRECTORY_PART's generation) observe that data. If all observations still hold
//! at commit, running the transaction's requests serially at the commit point yields the same
//! replies, and the replay yields the same effects: the schedule is equivalent to one where
//! the whole transaction ran atomically at commit time.
//!
//! C xenstored's rule (transaction.c) is coarser: any node *read* — and creating a child reads
//! the parent, whose child list is part of the node — is checked by its single generation. So
//! every transaction that adds a child to the same directory conflicts with every other.
//! Here, adding a child records only "child `x` was absent" and "the parent exists with these
//! permissions", so transactions that add *different* children to one directory commit.
//!
//! What a transaction sees (isolation): a node's value and permissions are copied on first
//! access (like C) and later reads return the copy or the transaction's own changes. A child
//! list is fetched when first listed; if it changed since the node was first accessed, the
//! observation (made with the first-access generation) already dooms the commit.
//!
//! # Worked examples (each is a unit test in `tests/transactions.rs`)
//!
//! 1. Boot storm. T1 writes `/local/domain/1/name`, T2 writes `/local/domain/2/name`;
//!    `/local/domain` exists, 1 and 2 do not. T1 observes: `/local/domain/1/name` absent,
//!    `/local/domain/1` absent, `/local/domain` exists + permissions. T2 the same for 2. T1
//!    commits (creates 1 and 1/name, changing `/local/domain`'s child list). T2's
//!    observations are untouched (the child list of `/local/domain` was never observed) → T2
//!    commits. C xenstored: `EAGAIN` for T2.
//! 2. Same child. T1 and T2 both create `/local/domain/0/backend/vbd/5`. T1 commits; T2
//!    observed `…/vbd/5` absent, now present → `EAGAIN` (replaying would silently merge).
//! 3. Directory listing. T1 lists `/local/domain` (observes the child list) and writes
//!    `/count`. T2 creates `/local/domain/7` and commits first → T1 `EAGAIN` (its listing
//!    is stale). Without the listing T1 commits.
//! 4. Read-modify-write. T1 reads `/a` (value generation g), writes `/a`. Outside, `/a` is
//!    written → T1 `EAGAIN` (C also). A blind write (no READ) by T1 commits, last writer
//!    wins: it observed only that `/a` exists (and, if unprivileged, its permissions). C
//!    answers `EAGAIN` here, because its WRITE reads the whole node first (`read_node` records
//!    every first access as a read).
//! 5. Delete vs create below. T1 removes `/d`; T2 creates `/d/x` and commits first. T1
//!    observed only "`/d` exists" (same incarnation) → T1 commits and its replayed RM removes
//!    `/d/x` too, exactly as if T1 ran after T2. If T1 had listed `/d` → `EAGAIN`.
//! 6. Re-creation. T1 reads `/n`; outside, `/n` is removed and re-created with the same
//!    value. The incarnation differs → `EAGAIN` (no ABA).
//!
//! Quotas are checked while the transaction runs (node quota also at commit, as C's
//! `acc_fix_domains`); the replay itself skips permission and quota checks, whose outcome was
//! already fixed by the observations. Domain-table facts (SET_TARGET, features, privilege)
//! are not observed: they are properties of connections, not of the tree.
//!
//! Limits: `transaction-nodes` counts distinct paths touched; exceeding it answers `ENOSPC`
//! and marks the transaction failed, so its commit answers `ENOMEM` (C). Transaction ids are
//! per connection, never 0, skipping ids in use.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use xenstore_protocol::Permissions;

use crate::node::{NodeGenerations, Tree};

/// What a transaction saw of one committed path.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observation {
    /// `None`: absent. `Some(g)`: present with incarnation `g`.
    pub incarnation: Option<u64>,
    /// Value generation, if the value was observed.
    pub value: Option<u64>,
    /// Permissions generation, if the permissions were observed.
    pub permissions: Option<u64>,
    /// Child-list generation, if the child list was observed.
    pub children: Option<u64>,
}

impl Observation {
    /// True if the committed tree still agrees with this observation.
    pub fn holds(&self, tree: &Tree, node_path: &str) -> bool {
        let node = tree.get(node_path);
        match (self.incarnation, node) {
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(incarnation), Some(node)) => {
                let current = &node.record.generations;
                current.incarnation == incarnation
                    && self.value.is_none_or(|value| value == current.value)
                    && self
                        .permissions
                        .is_none_or(|perms| perms == current.permissions)
                    && self
                        .children
                        .is_none_or(|children| children == current.children)
            }
        }
    }
}

/// The child list of a node in a transaction's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxChildren {
    /// Not yet listed: the committed list with these changes applied.
    Live {
        /// Children added by the transaction.
        added: BTreeSet<String>,
        /// Children removed by the transaction.
        removed: BTreeSet<String>,
    },
    /// Fully known (listed, or the node was created by the transaction).
    Fixed(BTreeSet<String>),
}

/// A node in a transaction's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxNode {
    /// Current value in the view.
    pub value: Vec<u8>,
    /// Current permissions in the view.
    pub permissions: Permissions,
    /// `DOMID_ANY` entries ignored.
    pub any_ignored: bool,
    /// Generation reported to the client (committed one, or a transaction-local one after a
    /// change).
    pub generation: u64,
    /// Generations of the committed node when first accessed (`None`: created here).
    pub base: Option<NodeGenerations>,
    /// The transaction replaced the value.
    pub value_written: bool,
    /// The transaction replaced the permissions.
    pub permissions_written: bool,
    /// Child list.
    pub children: TxChildren,
    /// C's `childlen` in the view.
    pub children_bytes: usize,
}

/// A path in a transaction's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxEntry {
    /// Absent in the view.
    Absent,
    /// Present in the view.
    Present(TxNode),
}

/// A logical write, replayed at commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOperation {
    /// WRITE (absolute path).
    Write {
        /// Path.
        path: String,
        /// Value.
        value: Vec<u8>,
    },
    /// MKDIR that created the node.
    Mkdir {
        /// Path.
        path: String,
    },
    /// RM of an existing node.
    Rm {
        /// Path.
        path: String,
    },
    /// SET_PERMS.
    SetPermissions {
        /// Path.
        path: String,
        /// New list.
        permissions: Permissions,
    },
}

/// One open transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The id (never 0).
    pub id: u32,
    /// Observations of committed state, by path.
    pub observed: BTreeMap<String, Observation>,
    /// The private view, by path.
    pub view: BTreeMap<String, TxEntry>,
    /// Operations to replay.
    pub operations: Vec<TxOperation>,
    /// Distinct paths touched (the `transaction-nodes` account).
    pub accessed_nodes: u32,
    /// A quota failure happened: commit answers `ENOMEM`.
    pub failed: bool,
    /// Nodes created by the transaction (for the commit-time node quota check).
    pub created_nodes: u32,
    /// Source of transaction-local generations.
    pub local_generation: u64,
}

impl Transaction {
    /// A new, empty transaction.
    pub fn new(id: u32, start_generation: u64) -> Transaction {
        Transaction {
            id,
            observed: BTreeMap::new(),
            view: BTreeMap::new(),
            operations: Vec::new(),
            accessed_nodes: 0,
            failed: false,
            created_nodes: 0,
            local_generation: start_generation,
        }
    }

    /// True if every observation still holds.
    pub fn validate(&self, tree: &Tree) -> bool {
        self.observed
            .iter()
            .all(|(node_path, observation)| observation.holds(tree, node_path))
    }

    /// Number of observations (for the debug shell).
    pub fn observation_count(&self) -> usize {
        self.observed.len()
    }
}
