//! The persisted state of the store ([`StoreImage`]) and the records it is made of.
//!
//! `Store::rebuild(store.export()) == store` holds for every store without open
//! transactions (open transactions are never persisted: after a restart they are aborted and
//! their ids answer `EAGAIN`, see [`ConnectionRecord::aborted_up_to`]). Applying the change
//! sets of a run, in order, to the image taken before it gives the image taken after it
//! ([`StoreImage::apply`]); both properties are tested.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use xenstore_protocol::Domid;

use crate::ConnectionId;
use crate::changes::{Change, ChangeSet};
use crate::node::NodeRecord;
use crate::quota::QuotaSet;
use crate::watch::Watch;

/// Store configuration (fixed for the life of the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The privileged (control) domain: full access, exempt from quotas.
    pub privileged_domid: Domid,
    /// The domain running the store; socket connections resolve relative paths against its
    /// home (C: `get_implicit_path`).
    pub store_domid: Domid,
    /// Initial global quotas.
    pub quotas: QuotaSet,
}

impl Default for Config {
    /// dom0 privileged, store in dom0 (hosted daemon), C default quotas.
    fn default() -> Config {
        Config {
            privileged_domid: Domid(0),
            store_domid: Domid(0),
            quotas: QuotaSet::c_defaults(),
        }
    }
}

/// Transport of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionKind {
    /// Unix socket (hosted mode): privileged, all features.
    Socket,
    /// Shared ring of an introduced domain.
    Ring,
}

/// Persisted state of one connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// Transport.
    pub kind: ConnectionKind,
    /// Domain (sockets: the privileged domain).
    pub domid: Domid,
    /// Watches in registration order.
    pub watches: Vec<Watch>,
    /// Next watch sequence number.
    pub next_watch_sequence: u64,
    /// Next transaction id to try (C `next_transaction_id`, starts at 1).
    pub next_transaction_id: u32,
    /// Highest transaction id handed out so far.
    pub highest_transaction_id: u32,
    /// After a restart: every id up to this one that is not open was aborted by the restart
    /// and answers `EAGAIN` instead of `ENOENT`.
    pub aborted_up_to: u32,
}

impl ConnectionRecord {
    /// A fresh connection.
    pub fn new(kind: ConnectionKind, domid: Domid) -> ConnectionRecord {
        ConnectionRecord {
            kind,
            domid,
            watches: Vec::new(),
            next_watch_sequence: 0,
            next_transaction_id: 1,
            highest_transaction_id: 0,
            aborted_up_to: 0,
        }
    }
}

/// Where an introduced domain's ring is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRecord {
    /// The connection serving it.
    pub connection: ConnectionId,
    /// Guest frame as given to INTRODUCE.
    pub gfn: i64,
    /// Event channel as reported by the platform after binding.
    pub evtchn: u32,
}

/// Persisted state of one domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// INTRODUCE completed and no RELEASE / death since.
    pub introduced: bool,
    /// Feature bits (written to the ring at introduction).
    pub features: u32,
    /// Shutdown already reported via `@releaseDomain` (cleared by RESUME).
    pub shutdown_reported: bool,
    /// SET_TARGET target.
    pub target: Option<Domid>,
    /// Per-domain quota overrides ([`crate::quota::DISABLED`]: use the global value).
    pub quotas: QuotaSet,
    /// Ring location.
    pub ring: Option<RingRecord>,
}

impl DomainRecord {
    /// A domain the store knows nothing about yet.
    pub fn new() -> DomainRecord {
        DomainRecord {
            introduced: false,
            features: crate::access::SUPPORTED_FEATURES,
            shutdown_reported: false,
            target: None,
            quotas: QuotaSet::no_overrides(),
            ring: None,
        }
    }
}

impl Default for DomainRecord {
    fn default() -> DomainRecord {
        DomainRecord::new()
    }
}

/// Trace switches of C xenstored (`trace_switches[]`), bit `i` = entry `i`.
pub const LOG_SWITCHES: [&str; 5] = ["obj", "io", "wrl", "acc", "tdb"];

/// CONTROL `log` state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogSettings {
    /// `log on` / `log off`.
    pub enabled: bool,
    /// Trace switch bits ([`LOG_SWITCHES`]).
    pub switches: u8,
}

/// Everything needed to rebuild a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreImage {
    /// Configuration.
    pub config: Config,
    /// Global generation counter.
    pub generation: u64,
    /// Every node, by path.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Every connection.
    pub connections: BTreeMap<ConnectionId, ConnectionRecord>,
    /// Every known domain.
    pub domains: BTreeMap<Domid, DomainRecord>,
    /// Global quotas.
    pub global_quotas: QuotaSet,
    /// Log settings.
    pub log: LogSettings,
}

impl StoreImage {
    /// Applies a change set (the persistence layer's view of a commit).
    pub fn apply(&mut self, changes: &ChangeSet) {
        for change in &changes.changes {
            match change {
                Change::NodeWritten { path, record } => {
                    self.nodes.insert(path.clone(), record.clone());
                }
                Change::SubtreeRemoved { path } => {
                    let prefix = alloc::format!("{path}/");
                    self.nodes
                        .retain(|key, _| key != path && !key.starts_with(prefix.as_str()));
                }
                Change::Connection { id, record } => {
                    self.connections.insert(*id, record.clone());
                }
                Change::ConnectionRemoved { id } => {
                    self.connections.remove(id);
                }
                Change::Domain { domid, record } => {
                    self.domains.insert(*domid, record.clone());
                }
                Change::DomainRemoved { domid } => {
                    self.domains.remove(domid);
                }
                Change::GlobalQuotas(quotas) => self.global_quotas = quotas.clone(),
                Change::Log(settings) => self.log = *settings,
            }
        }
        self.generation = changes.generation;
    }
}
