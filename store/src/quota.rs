//! Quotas: the names, defaults and comparison rule of C xenstored (xen.git
//! `tools/xenstored/domain.c`, `quota_adm[]` and `quotas[]`).
//!
//! Every quota has a hard and a soft value. [`DISABLED`] (`Q_VAL_DISABLED`, `UINT_MAX`) marks a
//! value that does not exist (only `memory` has a soft value by default) or, in a per-domain
//! override, "use the global value". A value of 0 means "unlimited". Quotas bind only
//! unprivileged domains.
//!
//! The comparison is C's `domain_quota_val_exceeds`: a new value `v` is refused when
//! `v >= quota`. Because C compares the value *after* the addition (`current + 1`), a domain can
//! own at most `nodes - 1` nodes, hold `watches - 1` watches, `transactions - 1` open
//! transactions; a node may carry at most `node-permissions - 1` entries and a path below the
//! domain home may be at most `path-max - 1` bytes. This is upstream's behaviour (checked
//! against xen.git c447b730) and is mirrored exactly.

use serde::{Deserialize, Serialize};

/// `Q_VAL_DISABLED`: no such value / no per-domain override.
pub const DISABLED: u32 = u32::MAX;

/// Number of quota kinds.
pub const QUOTA_KIND_COUNT: usize = 9;

/// One accounted item (C `enum accitem`, same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuotaKind {
    /// `nodes`: nodes owned per domain.
    Nodes,
    /// `watches`: watches per domain.
    Watches,
    /// `outstanding`: requests in flight per domain (enforced by the server).
    Outstanding,
    /// `memory`: bytes charged per domain (enforced by the server by stalling input).
    Memory,
    /// `transactions`: open transactions per domain.
    Transactions,
    /// `transaction-nodes`: distinct nodes accessed by one transaction.
    TransactionNodes,
    /// `node-permissions`: entries per permission list.
    NodePermissions,
    /// `path-max`: path length below `/local/domain/<domid>/`.
    PathMax,
    /// `node-size`: header + permissions + value + child names of one node.
    NodeSize,
}

impl QuotaKind {
    /// Every kind in C's order.
    pub const ALL: [QuotaKind; QUOTA_KIND_COUNT] = [
        QuotaKind::Nodes,
        QuotaKind::Watches,
        QuotaKind::Outstanding,
        QuotaKind::Memory,
        QuotaKind::Transactions,
        QuotaKind::TransactionNodes,
        QuotaKind::NodePermissions,
        QuotaKind::PathMax,
        QuotaKind::NodeSize,
    ];

    /// Index into quota arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// C's name (GET_QUOTA / SET_QUOTA / `xenstore-control quota`).
    pub const fn name(self) -> &'static str {
        match self {
            QuotaKind::Nodes => "nodes",
            QuotaKind::Watches => "watches",
            QuotaKind::Outstanding => "outstanding",
            QuotaKind::Memory => "memory",
            QuotaKind::Transactions => "transactions",
            QuotaKind::TransactionNodes => "transaction-nodes",
            QuotaKind::NodePermissions => "node-permissions",
            QuotaKind::PathMax => "path-max",
            QuotaKind::NodeSize => "node-size",
        }
    }

    /// C's description (CONTROL `quota`).
    pub const fn description(self) -> &'static str {
        match self {
            QuotaKind::Nodes => "Nodes per domain",
            QuotaKind::Watches => "Watches per domain",
            QuotaKind::Outstanding => "Outstanding requests per domain",
            QuotaKind::Memory => "Total Xenstore memory per domain",
            QuotaKind::Transactions => "Active transactions per domain",
            QuotaKind::TransactionNodes => "Max. number of accessed nodes per transaction",
            QuotaKind::NodePermissions => "Max. number of permissions per node",
            QuotaKind::PathMax => "Max. length of a node path",
            QuotaKind::NodeSize => "Max. size of a node",
        }
    }

    /// Looks a name up (without `soft-` prefix).
    pub fn from_name(name: &str) -> Option<QuotaKind> {
        QuotaKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Which of the two values of a quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaLevel {
    /// Enforced.
    Hard,
    /// Warning only (`soft-` prefix).
    Soft,
}

/// A full set of hard and soft values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSet {
    /// Hard values by [`QuotaKind::index`].
    pub hard: [u32; QUOTA_KIND_COUNT],
    /// Soft values by [`QuotaKind::index`].
    pub soft: [u32; QUOTA_KIND_COUNT],
}

impl Default for QuotaSet {
    /// C xenstored's global defaults.
    fn default() -> QuotaSet {
        QuotaSet::c_defaults()
    }
}

impl QuotaSet {
    /// C xenstored's global defaults: nodes 1000, watches 128, outstanding 20, memory 2.5 MiB
    /// (soft 2 MiB), transactions 10, transaction-nodes 1024, node-permissions 5, path-max
    /// 2048, node-size 2048.
    pub const fn c_defaults() -> QuotaSet {
        QuotaSet {
            hard: [
                1000,
                128,
                20,
                2 * 1024 * 1024 + 512 * 1024,
                10,
                1024,
                5,
                2048,
                2048,
            ],
            soft: [
                DISABLED,
                DISABLED,
                DISABLED,
                2 * 1024 * 1024,
                DISABLED,
                DISABLED,
                DISABLED,
                DISABLED,
                DISABLED,
            ],
        }
    }

    /// A per-domain set with no overrides.
    pub const fn no_overrides() -> QuotaSet {
        QuotaSet {
            hard: [DISABLED; QUOTA_KIND_COUNT],
            soft: [DISABLED; QUOTA_KIND_COUNT],
        }
    }

    /// One value.
    pub fn get(&self, kind: QuotaKind, level: QuotaLevel) -> u32 {
        match level {
            QuotaLevel::Hard => self.hard[kind.index()],
            QuotaLevel::Soft => self.soft[kind.index()],
        }
    }

    /// Sets one value.
    pub fn set(&mut self, kind: QuotaKind, level: QuotaLevel, value: u32) {
        match level {
            QuotaLevel::Hard => self.hard[kind.index()] = value,
            QuotaLevel::Soft => self.soft[kind.index()] = value,
        }
    }

    /// Parses a quota name as C's `parse_quota_name`: optional `soft-` prefix; the name must
    /// exist and its *global* value at that level must not be [`DISABLED`] (`self` is the
    /// global set).
    pub fn parse_name(&self, name: &str) -> Option<(QuotaKind, QuotaLevel)> {
        let (base, level) = match name.strip_prefix("soft-") {
            Some(base) => (base, QuotaLevel::Soft),
            None => (name, QuotaLevel::Hard),
        };
        let kind = QuotaKind::from_name(base)?;
        if self.get(kind, level) == DISABLED {
            return None;
        }
        Some((kind, level))
    }

    /// The GET_QUOTA name list: every existing hard and soft name, blank separated.
    pub fn name_list(&self) -> alloc::string::String {
        let mut out = alloc::string::String::new();
        for kind in QuotaKind::ALL {
            if self.get(kind, QuotaLevel::Hard) != DISABLED {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(kind.name());
            }
            if self.get(kind, QuotaLevel::Soft) != DISABLED {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str("soft-");
                out.push_str(kind.name());
            }
        }
        out
    }
}

/// The effective hard quota for a domain: its override, else the global value.
pub fn effective(global: &QuotaSet, overrides: Option<&QuotaSet>, kind: QuotaKind) -> u32 {
    match overrides {
        Some(set) if set.get(kind, QuotaLevel::Hard) != DISABLED => set.get(kind, QuotaLevel::Hard),
        _ => global.get(kind, QuotaLevel::Hard),
    }
}

/// C's `domain_quota_val_exceeds` for an unprivileged domain: refused when `value >= quota`
/// unless the quota is 0 (unlimited).
pub fn exceeds(quota: u32, value: u64) -> bool {
    quota != 0 && quota != DISABLED && value >= u64::from(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults() {
        let set = QuotaSet::c_defaults();
        assert_eq!(
            set.name_list(),
            "nodes watches outstanding memory soft-memory transactions transaction-nodes \
             node-permissions path-max node-size"
        );
        assert_eq!(
            set.parse_name("soft-memory"),
            Some((QuotaKind::Memory, QuotaLevel::Soft))
        );
        assert_eq!(set.parse_name("soft-nodes"), None);
        assert_eq!(set.parse_name("permissions"), None);
        assert!(exceeds(10, 10));
        assert!(!exceeds(10, 9));
        assert!(!exceeds(0, 1_000_000));
    }
}
