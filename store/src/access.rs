//! Access decisions: who may read, write or own a node (xen.git `tools/xenstored/core.c`
//! `perm_for_conn`, `perm_allows_conn`; `domain.c` `domain_alloc_permrefs`).
//!
//! Rules, in order:
//! 1. a privileged caller (the privileged domain, every socket connection) gets everything;
//! 2. a caller matched by entry 0 (the owner) gets read, write and owner;
//! 3. otherwise the first matching entry among 1.. decides, skipping `DOMID_ANY` entries
//!    written by a domain without the DOMID_ANY feature (C's `XS_PERM_IGNORE`);
//! 4. otherwise entry 0's letter applies.
//!
//! An entry matches a caller when it names the caller's domain, the caller's SET_TARGET target,
//! or `DOMID_ANY` (C does not apply the ignore flag to entry 0 either).

use alloc::string::String;
use xenstore_protocol::{Access, Domid, Permissions};

use crate::ConnectionId;

/// `XENSTORE_SERVER_FEATURE_ERROR`.
pub const FEATURE_ERROR: u32 = 2;
/// `XENSTORE_SERVER_FEATURE_WATCHDEPTH`.
pub const FEATURE_WATCHDEPTH: u32 = 4;
/// `XENSTORE_SERVER_FEATURE_DOMID_ANY`.
pub const FEATURE_DOMID_ANY: u32 = 8;
/// Every feature this server supports (C's `XENSTORE_FEATURES`; RECONNECTION is not
/// advertised, as upstream).
pub const SUPPORTED_FEATURES: u32 = FEATURE_ERROR | FEATURE_WATCHDEPTH | FEATURE_DOMID_ANY;

/// The rights a caller has on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights {
    /// May read value, children and permissions.
    pub read: bool,
    /// May write, create below, remove.
    pub write: bool,
    /// May change the permissions.
    pub owner: bool,
}

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Read access.
    Read,
    /// Write access.
    Write,
    /// Write and owner (SET_PERMS).
    WriteOwner,
}

impl Rights {
    /// Everything.
    pub const ALL: Rights = Rights {
        read: true,
        write: true,
        owner: true,
    };

    /// True if these rights grant any part of `need` (C `errno_from_parents` tests
    /// `parent_perm & perm`, so write alone suffices for write+owner).
    pub fn overlap(self, need: Need) -> bool {
        match need {
            Need::Read => self.read,
            Need::Write => self.write,
            Need::WriteOwner => self.write || self.owner,
        }
    }

    /// True if these rights satisfy `need`.
    pub fn allow(self, need: Need) -> bool {
        match need {
            Need::Read => self.read,
            Need::Write => self.write,
            Need::WriteOwner => self.write && self.owner,
        }
    }
}

/// The identity of whoever issues a request, as far as permissions and paths are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The connection.
    pub connection: ConnectionId,
    /// Its domain (socket connections: the privileged domain).
    pub domid: Domid,
    /// Privileged domain or socket: full access, exempt from quotas.
    pub privileged: bool,
    /// SET_TARGET target of the caller's domain.
    pub target: Option<Domid>,
    /// Feature bits enabled for the caller.
    pub features: u32,
    /// `/local/domain/<domid>` for relative paths (sockets: the store domain's home).
    pub home: String,
}

impl Caller {
    fn matches(&self, domid: Domid) -> bool {
        domid == self.domid || Some(domid) == self.target || domid == Domid::ANY
    }

    /// The caller's rights on a node with these permissions (`any_ignored`: the node's
    /// `DOMID_ANY` entries beyond the owner are ignored).
    pub fn rights(&self, permissions: &Permissions, any_ignored: bool) -> Rights {
        if self.privileged || self.matches(permissions.owner().domid) {
            return Rights::ALL;
        }
        for entry in &permissions.entries()[1..] {
            if entry.domid == Domid::ANY && any_ignored {
                continue;
            }
            if self.matches(entry.domid) {
                return access_rights(entry.access);
            }
        }
        access_rights(permissions.owner().access)
    }

    /// True if the caller has the feature bit.
    pub fn has_feature(&self, feature: u32) -> bool {
        self.features & feature != 0
    }
}

fn access_rights(access: Access) -> Rights {
    Rights {
        read: access.can_read(),
        write: access.can_write(),
        owner: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(domid: u16, target: Option<u16>) -> Caller {
        Caller {
            connection: ConnectionId(1),
            domid: Domid(domid),
            privileged: false,
            target: target.map(Domid),
            features: SUPPORTED_FEATURES,
            home: String::new(),
        }
    }

    #[test]
    fn table() {
        let perms = Permissions::parse_wire(b"n5\0r7\0w8\0b32757\0").unwrap();
        let cases: &[(u16, Option<u16>, bool, Rights)] = &[
            (5, None, false, Rights::ALL),
            (6, Some(5), false, Rights::ALL),
            (
                7,
                None,
                false,
                Rights {
                    read: true,
                    write: false,
                    owner: false,
                },
            ),
            (
                8,
                None,
                false,
                Rights {
                    read: false,
                    write: true,
                    owner: false,
                },
            ),
            (
                9,
                None,
                false,
                Rights {
                    read: true,
                    write: true,
                    owner: false,
                },
            ),
            (9, None, true, Rights::default()),
        ];
        for (domid, target, ignored, expected) in cases {
            assert_eq!(
                caller(*domid, *target).rights(&perms, *ignored),
                *expected,
                "dom{domid}"
            );
        }
    }
}
