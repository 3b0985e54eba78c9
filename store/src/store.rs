//! The store: tree, connections, domains, quotas and the request dispatcher.
//!
//! Every public mutating method returns an [`Outcome`]; nothing is ever changed without a
//! matching [`Change`] in it. Watch triggers collected during a call are turned into events at
//! the end of the call, against the watch registrations as they are then.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use xenstore_protocol::path::{self, PathForm, ResolvedPath};
use xenstore_protocol::{Domid, Errno, MessageType, Permissions, Request};

use crate::ConnectionId;
use crate::access::{Caller, SUPPORTED_FEATURES};
use crate::changes::{Change, ChangeSet, Effect, Outcome, Reply, WatchEvent};
use crate::image::{
    Config, ConnectionKind, ConnectionRecord, DomainRecord, LogSettings, RingRecord, StoreImage,
};
use crate::node::{NodeRecord, Tree, TreeError};
use crate::ops::{self, Checks, GlobalView, Limits, Match, Trigger, TxView};
use crate::quota::{self, QuotaKind, QuotaLevel, QuotaSet};
use crate::transaction::Transaction;
use crate::watch::{self, Watch};

/// Fixed memory charged per watch besides its path and token (approximation).
pub const WATCH_OVERHEAD_BYTES: u64 = 32;

/// One connection: persisted record plus open transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Persisted part.
    pub record: ConnectionRecord,
    /// Open transactions by id.
    pub transactions: BTreeMap<u32, Transaction>,
}

/// Largest values seen per domain (CONTROL `quota <domid>` / `quota max`). Statistics only:
/// not persisted and ignored by `PartialEq`.
#[derive(Clone, Debug, Default)]
pub struct Statistics {
    /// Per domain, by [`QuotaKind::index`].
    pub domain_max: BTreeMap<Domid, [u64; quota::QUOTA_KIND_COUNT]>,
    /// Over all domains.
    pub global_max: [u64; quota::QUOTA_KIND_COUNT],
}

impl PartialEq for Statistics {
    fn eq(&self, _other: &Statistics) -> bool {
        true
    }
}

impl Eq for Statistics {}

/// What a domain is doing, as reported by the platform after `VIRQ_DOM_EXC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainState {
    /// The domain.
    pub domid: Domid,
    /// It has shut down (or is shutting down).
    pub shutdown: bool,
    /// It is dead (destroyed / dying and gone).
    pub dead: bool,
}

/// Completion of an INTRODUCE after the platform mapped the ring and bound the event channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Introduction {
    /// The domain.
    pub domid: Domid,
    /// The connection id the server uses for the ring.
    pub connection: ConnectionId,
    /// Guest frame as given.
    pub gfn: i64,
    /// The (local) event channel port after binding.
    pub evtchn: u32,
}

/// Current accounting of one domain (debug shell, CONTROL `quota <domid>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Current values by [`QuotaKind::index`] (0 for pure limits such as `path-max`).
    pub current: [u64; quota::QUOTA_KIND_COUNT],
    /// Effective hard quotas.
    pub hard: [u32; quota::QUOTA_KIND_COUNT],
}

/// Memory account state of a domain, for the server's flow control (C stalls input while a
/// domain is above its hard memory quota).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryState {
    /// Below the soft quota (or privileged).
    Normal,
    /// At or above the soft quota: log a warning.
    AboveSoft,
    /// At or above the hard quota: stop reading requests from this domain.
    AboveHard,
}

/// Why an image could not be rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebuildError {
    /// The nodes do not form a tree.
    Tree(TreeError),
    /// A domain's ring names a connection that does not exist.
    DanglingRing(Domid),
}

/// The Xenstore state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    config: Config,
    tree: Tree,
    global_quotas: QuotaSet,
    domains: BTreeMap<Domid, DomainRecord>,
    connections: BTreeMap<ConnectionId, Connection>,
    /// Derived: watched path → (connection, sequence).
    watch_index: BTreeMap<String, BTreeSet<(ConnectionId, u64)>>,
    /// Derived: ring connections of each domain (quota accounting is per domain).
    ring_connections: BTreeMap<Domid, BTreeSet<ConnectionId>>,
    log: LogSettings,
    statistics: Statistics,
}

/// Accumulates the results of one call.
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) changes: ChangeSet,
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) events: Vec<WatchEvent>,
    pub(crate) effects: Vec<Effect>,
}

/// Runs `$body` with `$view` bound to the transaction's view (`$tx` is `Some`) or to the
/// committed tree.
macro_rules! with_view {
    ($store:expr, $work:expr, $caller:expr, $tx:expr, $limits:expr, |$view:ident| $body:expr) => {{
        match $tx {
            Some(tx_id) => {
                let store: &mut Store = &mut *$store;
                let transaction_nodes = if $caller.privileged {
                    0
                } else {
                    $limits.transaction_nodes
                };
                let transaction = store
                    .connections
                    .get_mut(&$caller.connection)
                    .and_then(|connection| connection.transactions.get_mut(&tx_id))
                    .expect("transaction checked by precheck");
                let mut $view = TxView {
                    tree: &store.tree,
                    transaction,
                    transaction_nodes,
                };
                $body
            }
            None => {
                let mut $view = GlobalView {
                    tree: &mut $store.tree,
                    changes: &mut $work.changes,
                    triggers: &mut $work.triggers,
                };
                $body
            }
        }
    }};
}

fn ok_or_error(result: Result<Vec<u8>, Errno>) -> Reply {
    match result {
        Ok(payload) => Reply::Payload(payload),
        Err(errno) => Reply::Error(errno),
    }
}

fn ack(result: Result<(), Errno>) -> Reply {
    ok_or_error(result.map(|()| xenstore_protocol::reply::ok()))
}

/// True for the request types C xenstored reserves for the privileged domain.
pub fn is_privileged_type(message_type: MessageType) -> bool {
    matches!(
        message_type,
        MessageType::Control
            | MessageType::Introduce
            | MessageType::Release
            | MessageType::IsDomainIntroduced
            | MessageType::Resume
            | MessageType::SetTarget
            | MessageType::SetFeature
            | MessageType::GetQuota
            | MessageType::SetQuota
    )
}

impl Store {
    /// A new store with C's initial tree (`setup_structure`): `/`, `/tool`,
    /// `/tool/xenstored` (owner: privileged domain, `n`), `@releaseDomain`
    /// (`n<priv>`, `r<DOMID_ANY>`), `@introduceDomain` (`n<priv>`).
    pub fn new(config: Config) -> Store {
        let privileged = config.privileged_domid;
        let mut tree = Tree::with_root(privileged);
        let none = Permissions::owned_by(privileged, xenstore_protocol::Access::None);
        tree.create("/tool", Vec::new(), none.clone(), false);
        tree.create("/tool/xenstored", Vec::new(), none.clone(), false);
        let release = Permissions::from_entries(alloc::vec![
            xenstore_protocol::Permission {
                access: xenstore_protocol::Access::None,
                domid: privileged,
            },
            xenstore_protocol::Permission {
                access: xenstore_protocol::Access::Read,
                domid: Domid::ANY,
            },
        ])
        .expect("non-empty");
        tree.create(path::RELEASE_DOMAIN, Vec::new(), release, false);
        tree.create(path::INTRODUCE_DOMAIN, Vec::new(), none, false);
        Store {
            global_quotas: config.quotas.clone(),
            config,
            tree,
            domains: BTreeMap::new(),
            connections: BTreeMap::new(),
            watch_index: BTreeMap::new(),
            ring_connections: BTreeMap::new(),
            log: LogSettings::default(),
            statistics: Statistics::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----------------------------------------------------------------- connections

    /// Registers a connection (sockets; rings are created by [`Store::introduce_domain`], but
    /// a ring connection for a domain introduced by other means may be added here too).
    /// Replaces nothing: an existing id is left as it is.
    pub fn add_connection(
        &mut self,
        id: ConnectionId,
        kind: ConnectionKind,
        domid: Domid,
    ) -> ChangeSet {
        let mut work = Work::default();
        if !self.connections.contains_key(&id) {
            let domid = match kind {
                ConnectionKind::Socket => self.config.privileged_domid,
                ConnectionKind::Ring => domid,
            };
            self.connections.insert(
                id,
                Connection {
                    record: ConnectionRecord::new(kind, domid),
                    transactions: BTreeMap::new(),
                },
            );
            if kind == ConnectionKind::Ring {
                self.ring_connections.entry(domid).or_default().insert(id);
            }
            self.record_connection(&mut work, id);
        }
        work.changes.generation = self.tree.generation();
        work.changes
    }

    /// Forgets a connection (socket closed): its watches and transactions go.
    pub fn remove_connection(&mut self, id: ConnectionId) -> ChangeSet {
        let mut work = Work::default();
        if let Some(connection) = self.connections.remove(&id) {
            self.unindex_watches(id, &connection.record.watches);
            if let Some(set) = self.ring_connections.get_mut(&connection.record.domid) {
                set.remove(&id);
                if set.is_empty() {
                    self.ring_connections.remove(&connection.record.domid);
                }
            }
            work.changes.push(Change::ConnectionRemoved { id });
            // Only the connection's own domain can name it as its ring.
            let domid = connection.record.domid;
            if let Some(record) = self.domains.get_mut(&domid) {
                if record
                    .ring
                    .as_ref()
                    .is_some_and(|ring| ring.connection == id)
                {
                    record.ring = None;
                    self.record_domain(&mut work, domid);
                }
            }
        }
        work.changes.generation = self.tree.generation();
        work.changes
    }

    /// The identity of a connection for permission checks.
    pub fn caller(&self, id: ConnectionId) -> Option<Caller> {
        let connection = self.connections.get(&id)?;
        Some(match connection.record.kind {
            ConnectionKind::Socket => Caller {
                connection: id,
                domid: self.config.privileged_domid,
                privileged: true,
                target: None,
                features: SUPPORTED_FEATURES,
                home: path::domain_home(self.config.store_domid),
            },
            ConnectionKind::Ring => {
                let domid = connection.record.domid;
                let domain = self.domains.get(&domid);
                Caller {
                    connection: id,
                    domid,
                    privileged: domid == self.config.privileged_domid,
                    target: domain.and_then(|domain| domain.target),
                    features: domain.map_or(SUPPORTED_FEATURES, |domain| domain.features),
                    home: path::domain_home(domid),
                }
            }
        })
    }

    /// Checks C makes before parsing a request, in C's order: `EACCES` for privileged types
    /// from unprivileged callers, then `ENOENT` for an unknown transaction id (`EAGAIN` for an
    /// id aborted by a restart). WATCH and UNWATCH ignore the transaction id. `EINVAL` for an
    /// unknown connection (a server bug).
    pub fn precheck(
        &self,
        id: ConnectionId,
        message_type: MessageType,
        tx_id: u32,
    ) -> Result<(), Errno> {
        let caller = self.caller(id).ok_or(Errno::EINVAL)?;
        if is_privileged_type(message_type) && !caller.privileged {
            return Err(Errno::EACCES);
        }
        if tx_id != 0 && !matches!(message_type, MessageType::Watch | MessageType::Unwatch) {
            let connection = &self.connections[&id];
            if !connection.transactions.contains_key(&tx_id) {
                return Err(if tx_id <= connection.record.aborted_up_to {
                    Errno::EAGAIN
                } else {
                    Errno::ENOENT
                });
            }
        }
        Ok(())
    }

    fn limits(&self, domid: Domid) -> Limits {
        let overrides = self.domains.get(&domid).map(|domain| &domain.quotas);
        let get = |kind| quota::effective(&self.global_quotas, overrides, kind);
        Limits {
            nodes: get(QuotaKind::Nodes),
            node_size: get(QuotaKind::NodeSize),
            node_permissions: get(QuotaKind::NodePermissions),
            transaction_nodes: get(QuotaKind::TransactionNodes),
            memory: get(QuotaKind::Memory),
            memory_used: if domid == self.config.privileged_domid {
                0
            } else {
                self.memory_usage(domid)
            },
        }
    }

    /// Effective hard quota of a domain.
    pub fn quota(&self, domid: Domid, kind: QuotaKind) -> u32 {
        let overrides = self.domains.get(&domid).map(|domain| &domain.quotas);
        quota::effective(&self.global_quotas, overrides, kind)
    }

    /// Resolves and validates a path for `caller`; applies `path-max` to unprivileged callers
    /// (C `canonicalize` / `is_valid_nodename`: length below `/local/domain/<id>/`).
    fn resolve(
        &self,
        caller: &Caller,
        raw: &str,
        allow_special: bool,
    ) -> Result<ResolvedPath, Errno> {
        let resolved = path::resolve(raw, &caller.home, allow_special)?;
        if !caller.privileged {
            let local_offset = local_offset(&resolved.absolute);
            let length = (resolved.absolute.len() - local_offset) as u64;
            if quota::exceeds(self.quota(caller.domid, QuotaKind::PathMax), length) {
                return Err(Errno::EINVAL);
            }
        }
        Ok(resolved)
    }

    // ----------------------------------------------------------------- requests

    /// Applies one parsed request from connection `id` with header transaction id `tx_id`.
    pub fn handle(&mut self, id: ConnectionId, tx_id: u32, request: &Request<'_>) -> Outcome {
        if let Err(errno) = self.precheck(id, request.message_type(), tx_id) {
            return Outcome::error(errno, self.tree.generation());
        }
        let caller = self.caller(id).expect("checked by precheck");
        let transaction = match request {
            Request::Watch { .. } | Request::Unwatch { .. } => None,
            _ if tx_id != 0 => Some(tx_id),
            _ => None,
        };
        let mut work = Work::default();
        let reply = self.dispatch(&caller, transaction, request, &mut work);
        self.finish(work, reply, Some(&caller))
    }

    fn dispatch(
        &mut self,
        caller: &Caller,
        tx: Option<u32>,
        request: &Request<'_>,
        work: &mut Work,
    ) -> Reply {
        let limits = self.limits(caller.domid);
        match request {
            Request::Read { path } => {
                let resolved = match self.resolve(caller, path, false) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                ok_or_error(with_view!(self, work, caller, tx, limits, |view| {
                    ops::read(&mut view, caller, &resolved.absolute)
                }))
            }
            Request::Directory { path } => {
                let resolved = match self.resolve(caller, path, false) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                let result = with_view!(self, work, caller, tx, limits, |view| {
                    ops::directory(&mut view, caller, &resolved.absolute)
                });
                ok_or_error(result.and_then(xenstore_protocol::reply::strings))
            }
            Request::DirectoryPart { path, offset } => {
                let resolved = match self.resolve(caller, path, false) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                ok_or_error(with_view!(self, work, caller, tx, limits, |view| {
                    ops::directory_part(&mut view, caller, &resolved.absolute, *offset)
                }))
            }
            Request::GetPerms { path } => {
                let resolved = match self.resolve(caller, path, true) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                let result = with_view!(self, work, caller, tx, limits, |view| {
                    ops::get_permissions(&mut view, caller, &resolved.absolute)
                });
                ok_or_error(result.map(|permissions| permissions.to_wire()))
            }
            Request::Write { path, value } => {
                let resolved = match self.resolve(caller, path, false) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                ack(with_view!(self, work, caller, tx, limits, |view| {
                    ops::write(
                        &mut view,
                        caller,
                        &resolved.absolute,
                        value,
                        Checks::Enforce,
                        &limits,
                    )
                }))
            }
            Request::Mkdir { path } => {
                let resolved = match self.resolve(caller, path, false) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                ack(with_view!(self, work, caller, tx, limits, |view| {
                    ops::mkdir(
                        &mut view,
                        caller,
                        &resolved.absolute,
                        Checks::Enforce,
                        &limits,
                    )
                }))
            }
            Request::Rm { path } => {
                let resolved = match self.resolve(caller, path, false) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                ack(with_view!(self, work, caller, tx, limits, |view| {
                    ops::rm(&mut view, caller, &resolved.absolute, Checks::Enforce)
                }))
            }
            Request::SetPerms { path, permissions } => {
                let resolved = match self.resolve(caller, path, true) {
                    Ok(resolved) => resolved,
                    Err(errno) => return Reply::Error(errno),
                };
                ack(with_view!(self, work, caller, tx, limits, |view| {
                    ops::set_permissions(
                        &mut view,
                        caller,
                        &resolved.absolute,
                        permissions,
                        Checks::Enforce,
                        &limits,
                    )
                }))
            }
            Request::Watch { path, token, depth } => {
                ack(self.watch(caller, path, token, *depth, work))
            }
            Request::Unwatch { path, token } => ack(self.unwatch(caller, path, token, work)),
            Request::ResetWatches => {
                self.reset_connection(caller.connection, work);
                Reply::Payload(xenstore_protocol::reply::ok())
            }
            Request::TransactionStart => ok_or_error(self.transaction_start(caller, tx, work)),
            Request::TransactionEnd { commit } => {
                ack(self.transaction_end(caller, tx, *commit, &limits, work))
            }
            Request::GetDomainPath { domid } => {
                ok_or_error(xenstore_protocol::reply::string(path::domain_home(*domid)))
            }
            Request::IsDomainIntroduced { domid } => {
                let introduced = *domid == Domid::SELF
                    || self
                        .domains
                        .get(domid)
                        .is_some_and(|domain| domain.introduced);
                Reply::Payload(xenstore_protocol::reply::boolean(introduced))
            }
            Request::Introduce { domid, gfn, evtchn } => {
                if *evtchn == 0 || !domid.is_real() {
                    return Reply::Error(Errno::EINVAL);
                }
                let domain = self.domains.get(domid);
                work.effects.push(Effect::Introduce {
                    domid: *domid,
                    gfn: *gfn,
                    evtchn: *evtchn,
                    already_introduced: domain.is_some_and(|domain| domain.introduced),
                    features: domain.map_or(SUPPORTED_FEATURES, |domain| domain.features),
                });
                Reply::Deferred
            }
            Request::Release { domid } => match self.connected_domain(*domid, true) {
                Err(errno) => Reply::Error(errno),
                Ok(()) => {
                    self.destroy_domain(*domid, work);
                    Reply::Payload(xenstore_protocol::reply::ok())
                }
            },
            Request::Resume { domid } => match self.connected_domain(*domid, true) {
                Err(errno) => Reply::Error(errno),
                Ok(()) => {
                    if let Some(domain) = self.domains.get_mut(domid) {
                        domain.shutdown_reported = false;
                    }
                    self.record_domain(work, *domid);
                    Reply::Payload(xenstore_protocol::reply::ok())
                }
            },
            Request::SetTarget { domid, target } => {
                let result = self
                    .connected_domain(*domid, false)
                    .and_then(|()| self.connected_domain(*target, false));
                match result {
                    Err(errno) => Reply::Error(errno),
                    Ok(()) => {
                        if let Some(domain) = self.domains.get_mut(domid) {
                            domain.target = Some(*target);
                        }
                        self.record_domain(work, *domid);
                        Reply::Payload(xenstore_protocol::reply::ok())
                    }
                }
            }
            Request::GetFeature { domid } => match domid {
                None => ok_or_error(xenstore_protocol::reply::decimal(u64::from(
                    caller.features,
                ))),
                Some(_) if !caller.privileged => Reply::Error(Errno::EACCES),
                Some(domid) => {
                    let features = self
                        .domains
                        .get(domid)
                        .map_or(SUPPORTED_FEATURES, |domain| domain.features);
                    ok_or_error(xenstore_protocol::reply::decimal(u64::from(features)))
                }
            },
            Request::SetFeature { domid, features } => {
                // Check before creating the entry: a failed request changes nothing.
                if self
                    .domains
                    .get(domid)
                    .is_some_and(|domain| domain.introduced)
                {
                    return Reply::Error(Errno::EBUSY);
                }
                if features & !SUPPORTED_FEATURES != 0 {
                    return Reply::Error(Errno::EINVAL);
                }
                self.domains.entry(*domid).or_default().features = *features;
                self.record_domain(work, *domid);
                Reply::Payload(xenstore_protocol::reply::ok())
            }
            Request::GetQuota { domid, name } => self.get_quota(*domid, *name),
            Request::SetQuota { domid, name, value } => self.set_quota(*domid, name, *value, work),
            Request::Control { command, arguments } => {
                crate::control::control(self, caller, command, arguments, work)
            }
        }
    }

    /// C `find_connected_domain` (+ `onearg_domain`'s refusal of the privileged and the store
    /// domain when `refuse_special`).
    fn connected_domain(&self, domid: Domid, refuse_special: bool) -> Result<(), Errno> {
        if refuse_special
            && (domid == self.config.store_domid || domid == self.config.privileged_domid)
        {
            return Err(Errno::EINVAL);
        }
        // C `find_domain_by_domid` only finds introduced domains; one without a connection
        // is EINVAL.
        match self.domains.get(&domid) {
            Some(domain) if domain.introduced => match &domain.ring {
                Some(ring) if self.connections.contains_key(&ring.connection) => Ok(()),
                _ => Err(Errno::EINVAL),
            },
            _ => Err(Errno::ENOENT),
        }
    }

    fn get_quota(&self, domid: Option<Domid>, name: Option<&str>) -> Reply {
        match (domid, name) {
            (None, None) => ok_or_error(xenstore_protocol::reply::string(
                self.global_quotas.name_list(),
            )),
            (domid, Some(name)) => {
                let Some((kind, level)) = self.global_quotas.parse_name(name) else {
                    return Reply::Error(Errno::EINVAL);
                };
                let value = match domid {
                    None => self.global_quotas.get(kind, level),
                    Some(domid) => self
                        .domains
                        .get(&domid)
                        .map_or(quota::DISABLED, |domain| domain.quotas.get(kind, level)),
                };
                ok_or_error(xenstore_protocol::reply::decimal(u64::from(value)))
            }
            (Some(_), None) => Reply::Error(Errno::EINVAL),
        }
    }

    fn set_quota(
        &mut self,
        domid: Option<Domid>,
        name: &str,
        value: u32,
        work: &mut Work,
    ) -> Reply {
        let Some((kind, level)) = self.global_quotas.parse_name(name) else {
            return Reply::Error(Errno::EINVAL);
        };
        if value == quota::DISABLED {
            return Reply::Error(Errno::EINVAL);
        }
        match domid {
            None => {
                self.global_quotas.set(kind, level, value);
                work.changes
                    .push(Change::GlobalQuotas(self.global_quotas.clone()));
            }
            Some(domid) => {
                self.domains
                    .entry(domid)
                    .or_default()
                    .quotas
                    .set(kind, level, value);
                self.record_domain(work, domid);
            }
        }
        Reply::Payload(xenstore_protocol::reply::ok())
    }

    // ----------------------------------------------------------------- watches

    /// Ring connections of a domain (sockets are never charged).
    fn domain_connections(&self, domid: Domid) -> impl Iterator<Item = &Connection> {
        self.ring_connections
            .get(&domid)
            .into_iter()
            .flatten()
            .filter_map(|id| self.connections.get(id))
    }

    fn domain_watch_count(&self, domid: Domid) -> u64 {
        self.domain_connections(domid)
            .map(|connection| connection.record.watches.len() as u64)
            .sum()
    }

    fn domain_transaction_count(&self, domid: Domid) -> u64 {
        self.domain_connections(domid)
            .map(|connection| connection.transactions.len() as u64)
            .sum()
    }

    fn watch(
        &mut self,
        caller: &Caller,
        raw: &str,
        token: &[u8],
        depth: Option<u32>,
        work: &mut Work,
    ) -> Result<(), Errno> {
        let resolved = self.resolve(caller, raw, true)?;
        let connection = &self.connections[&caller.connection];
        if connection
            .record
            .watches
            .iter()
            .any(|watch| watch.path == resolved.absolute && watch.token == token)
        {
            return Err(Errno::EEXIST);
        }
        if !caller.privileged
            && quota::exceeds(
                self.quota(caller.domid, QuotaKind::Watches),
                self.domain_watch_count(caller.domid) + 1,
            )
        {
            return Err(Errno::ENOSPC);
        }
        let charge = (resolved.absolute.len() + token.len()) as u64 + WATCH_OVERHEAD_BYTES;
        if !caller.privileged
            && quota::exceeds(
                self.quota(caller.domid, QuotaKind::Memory),
                self.memory_usage(caller.domid) + charge,
            )
        {
            return Err(Errno::ENOMEM);
        }
        let prefix_len = if resolved.form == PathForm::Relative {
            caller.home.len() + 1
        } else {
            0
        };
        let connection = self
            .connections
            .get_mut(&caller.connection)
            .expect("caller exists");
        let sequence = connection.record.next_watch_sequence;
        connection.record.next_watch_sequence += 1;
        let watch = Watch {
            path: resolved.absolute.clone(),
            token: token.to_vec(),
            depth,
            prefix_len,
            sequence,
        };
        let event = WatchEvent {
            connection: caller.connection,
            path: watch.reported_path(&watch.path),
            token: watch.token.clone(),
        };
        connection.record.watches.push(watch);
        self.watch_index
            .entry(resolved.absolute)
            .or_default()
            .insert((caller.connection, sequence));
        self.record_connection(work, caller.connection);
        // C fires once up front, right after the OK.
        work.events.push(event);
        Ok(())
    }

    fn unwatch(
        &mut self,
        caller: &Caller,
        raw: &str,
        token: &[u8],
        work: &mut Work,
    ) -> Result<(), Errno> {
        let resolved = self.resolve(caller, raw, true)?;
        let connection = self
            .connections
            .get_mut(&caller.connection)
            .expect("caller exists");
        let position = connection
            .record
            .watches
            .iter()
            .position(|watch| watch.path == resolved.absolute && watch.token == token)
            .ok_or(Errno::ENOENT)?;
        let watch = connection.record.watches.remove(position);
        self.unindex_watches(caller.connection, core::slice::from_ref(&watch));
        self.record_connection(work, caller.connection);
        Ok(())
    }

    fn unindex_watches(&mut self, id: ConnectionId, watches: &[Watch]) {
        for watch in watches {
            if let Some(set) = self.watch_index.get_mut(&watch.path) {
                set.remove(&(id, watch.sequence));
                if set.is_empty() {
                    self.watch_index.remove(&watch.path);
                }
            }
        }
    }

    /// Drops all watches and transactions of a connection (RESET_WATCHES, re-INTRODUCE).
    fn reset_connection(&mut self, id: ConnectionId, work: &mut Work) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let watches = core::mem::take(&mut connection.record.watches);
        connection.transactions.clear();
        self.unindex_watches(id, &watches);
        self.record_connection(work, id);
    }

    // ----------------------------------------------------------------- transactions

    fn transaction_start(
        &mut self,
        caller: &Caller,
        tx: Option<u32>,
        work: &mut Work,
    ) -> Result<Vec<u8>, Errno> {
        if tx.is_some() {
            return Err(Errno::EBUSY);
        }
        if !caller.privileged
            && self.connections[&caller.connection].record.kind == ConnectionKind::Ring
            && quota::exceeds(
                self.quota(caller.domid, QuotaKind::Transactions),
                self.domain_transaction_count(caller.domid) + 1,
            )
        {
            return Err(Errno::ENOSPC);
        }
        let generation = self.tree.generation();
        let connection = self
            .connections
            .get_mut(&caller.connection)
            .expect("caller exists");
        let mut id = connection.record.next_transaction_id;
        // Never 0, never an id in use (C skips both).
        while id == 0 || connection.transactions.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        connection.record.next_transaction_id = id.wrapping_add(1);
        connection.record.highest_transaction_id = connection.record.highest_transaction_id.max(id);
        connection
            .transactions
            .insert(id, Transaction::new(id, generation));
        self.record_connection(work, caller.connection);
        xenstore_protocol::reply::decimal(u64::from(id))
    }

    fn transaction_end(
        &mut self,
        caller: &Caller,
        tx: Option<u32>,
        commit: bool,
        limits: &Limits,
        work: &mut Work,
    ) -> Result<(), Errno> {
        let tx_id = tx.ok_or(Errno::ENOENT)?;
        let transaction = self
            .connections
            .get_mut(&caller.connection)
            .and_then(|connection| connection.transactions.remove(&tx_id))
            .ok_or(Errno::ENOENT)?;
        if !commit {
            return Ok(());
        }
        if transaction.failed {
            return Err(Errno::ENOMEM);
        }
        if !transaction.validate(&self.tree) {
            return Err(Errno::EAGAIN);
        }
        if !caller.privileged
            && transaction.created_nodes > 0
            && quota::exceeds(
                limits.nodes,
                u64::from(self.tree.owned_nodes(caller.domid))
                    + u64::from(transaction.created_nodes),
            )
        {
            return Err(Errno::ENOSPC);
        }
        let mut view = GlobalView {
            tree: &mut self.tree,
            changes: &mut work.changes,
            triggers: &mut work.triggers,
        };
        for operation in &transaction.operations {
            ops::replay(&mut view, caller, operation, limits);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- domains

    /// Completes an INTRODUCE once the platform mapped the ring and bound the event channel
    /// (also used by the server to introduce dom0 and the store domain at start-up). The
    /// reply in the outcome is the `OK` for the original request.
    pub fn introduce_domain(&mut self, introduction: Introduction) -> Outcome {
        let mut work = Work::default();
        let domid = introduction.domid;
        let connection = introduction.connection;
        let was_introduced = self
            .domains
            .get(&domid)
            .is_some_and(|domain| domain.introduced);
        let old = self
            .domains
            .get(&domid)
            .and_then(|domain| domain.ring.as_ref())
            .map(|ring| ring.connection)
            .filter(|old| *old != connection);
        if let Some(old) = old {
            let changes = self.remove_connection(old);
            work.changes.changes.extend(changes.changes);
        }
        let reusable = self.connections.get(&connection).is_some_and(|existing| {
            existing.record.kind == ConnectionKind::Ring && existing.record.domid == domid
        });
        if !reusable {
            // An id in use by something else is replaced (a server bug, kept consistent).
            let removed = self.remove_connection(connection);
            work.changes.changes.extend(removed.changes);
            let changes = self.add_connection(connection, ConnectionKind::Ring, domid);
            work.changes.changes.extend(changes.changes);
        }
        let domain = self.domains.entry(domid).or_default();
        domain.introduced = true;
        domain.ring = Some(RingRecord {
            connection,
            gfn: introduction.gfn,
            evtchn: introduction.evtchn,
        });
        self.record_domain(&mut work, domid);
        if !was_introduced && domid != self.config.privileged_domid {
            self.fire_special(path::INTRODUCE_DOMAIN, domid, true, true, &mut work);
        }
        self.reset_connection(connection, &mut work);
        work.effects.push(Effect::ResetConnection { connection });
        self.finish(work, Reply::Payload(xenstore_protocol::reply::ok()), None)
    }

    /// Domain state changes reported by the platform after `VIRQ_DOM_EXC` (C
    /// `do_check_domains`): a first shutdown of an introduced domain fires
    /// `@releaseDomain/<domid>` (depth watchers); a dead domain is destroyed (nodes it owns
    /// removed, its permission entries dropped, its connection gone, `@releaseDomain` fired
    /// when it was introduced). One plain `@releaseDomain` event follows any newly reported
    /// shutdown.
    pub fn domain_states(&mut self, states: &[DomainState]) -> Outcome {
        let mut work = Work::default();
        let mut notify = false;
        for state in states {
            if state.domid == self.config.privileged_domid {
                continue;
            }
            let Some(domain) = self.domains.get_mut(&state.domid) else {
                if state.dead {
                    self.destroy_domain(state.domid, &mut work);
                }
                continue;
            };
            if !domain.introduced {
                if state.dead {
                    self.destroy_domain(state.domid, &mut work);
                }
                continue;
            }
            if state.shutdown && !domain.shutdown_reported {
                domain.shutdown_reported = true;
                self.record_domain(&mut work, state.domid);
                self.fire_special(path::RELEASE_DOMAIN, state.domid, false, true, &mut work);
                notify = true;
            }
            if state.dead {
                // Destruction fires the plain `@releaseDomain` itself (C resets its flag).
                self.destroy_domain(state.domid, &mut work);
                notify = false;
            }
        }
        if notify {
            self.fire_special(path::RELEASE_DOMAIN, Domid(0), true, false, &mut work);
        }
        self.finish(work, Reply::None, None)
    }

    /// Removes a domain (RELEASE, death): its connection (watches first, so the removal of
    /// its nodes does not fire its own watches), the nodes it owns (with subtrees; watches of
    /// others fire), its entries in other nodes' permissions; fires `@releaseDomain` if it
    /// was introduced. Never applied to the privileged domain.
    fn destroy_domain(&mut self, domid: Domid, work: &mut Work) {
        if domid == self.config.privileged_domid {
            return;
        }
        let record = self.domains.remove(&domid);
        let connection = record
            .as_ref()
            .and_then(|record| record.ring.as_ref())
            .map(|ring| ring.connection);
        if let Some(id) = connection {
            let changes = self.remove_connection(id);
            work.changes.changes.extend(changes.changes);
        }
        // Walk the tree: owned subtrees go, other nodes lose the domain's entries.
        let mut owned_roots: Vec<String> = Vec::new();
        let mut rewrites: Vec<(String, Permissions, bool)> = Vec::new();
        for (key, node) in self.tree.iter() {
            if owned_roots
                .last()
                .is_some_and(|root| path::is_same_or_ancestor(root, key))
            {
                continue;
            }
            let permissions = &node.record.permissions;
            if permissions.owner().domid == domid && key != "/" && !crate::node::is_special(key) {
                owned_roots.push(key.clone());
                continue;
            }
            if permissions.entries()[1..]
                .iter()
                .any(|entry| entry.domid == domid)
            {
                let mut entries = permissions.entries().to_vec();
                let owner = entries.remove(0);
                entries.retain(|entry| entry.domid != domid);
                entries.insert(0, owner);
                let new = Permissions::from_entries(entries).expect("owner kept");
                rewrites.push((key.clone(), new, node.record.any_ignored));
            }
        }
        let mut view = GlobalView {
            tree: &mut self.tree,
            changes: &mut work.changes,
            triggers: &mut work.triggers,
        };
        // A root listed after a sibling such as `/a-b` may lie inside an earlier root (`/a`):
        // skip whatever an earlier removal already took.
        for root in &owned_roots {
            log::debug!("dom{}: removing orphaned node {root}", domid.0);
            if view.tree.get(root).is_some() {
                ops::View::remove(&mut view, root);
            }
        }
        for (key, permissions, ignored) in rewrites {
            if view.tree.get(&key).is_some() {
                ops::View::set_permissions(&mut view, &key, permissions, ignored);
            }
        }
        if record.is_some() {
            work.changes.push(Change::DomainRemoved { domid });
        }
        if record.as_ref().is_some_and(|record| record.introduced) {
            work.effects
                .push(Effect::ReleaseDomain { domid, connection });
            self.fire_special(path::RELEASE_DOMAIN, domid, true, true, work);
        }
    }

    /// C `fire_special_watches`.
    fn fire_special(
        &self,
        name: &str,
        domid: Domid,
        plain: bool,
        with_domid: bool,
        work: &mut Work,
    ) {
        let Some(node) = self.tree.get(name) else {
            return;
        };
        let permissions = Some((node.record.permissions.clone(), node.record.any_ignored));
        let root = self
            .tree
            .get("/")
            .map(|root| (root.record.permissions.clone(), root.record.any_ignored));
        if plain {
            work.triggers.push(Trigger {
                path: String::from(name),
                kind: Match::NoDepth,
                node_permissions: permissions.clone(),
                parent_permissions: root.clone(),
                old_permissions: None,
            });
        }
        if with_domid {
            work.triggers.push(Trigger {
                path: alloc::format!("{name}/{}", domid.0),
                kind: Match::Depth,
                node_permissions: permissions,
                parent_permissions: root,
                old_permissions: None,
            });
        }
    }

    // ----------------------------------------------------------------- bookkeeping

    pub(crate) fn record_connection(&self, work: &mut Work, id: ConnectionId) {
        if let Some(connection) = self.connections.get(&id) {
            work.changes.push(Change::Connection {
                id,
                record: connection.record.clone(),
            });
        }
    }

    pub(crate) fn record_domain(&self, work: &mut Work, domid: Domid) {
        if let Some(record) = self.domains.get(&domid) {
            work.changes.push(Change::Domain {
                domid,
                record: record.clone(),
            });
        }
    }

    /// Turns triggers into events (C `fire_watches` + `watch_permitted`), updates statistics
    /// and closes the change set.
    pub(crate) fn finish(
        &mut self,
        mut work: Work,
        reply: Reply,
        caller: Option<&Caller>,
    ) -> Outcome {
        let mut callers: BTreeMap<ConnectionId, Option<Caller>> = BTreeMap::new();
        for trigger in &work.triggers {
            let mut hits: BTreeSet<(ConnectionId, u64)> = BTreeSet::new();
            for candidate in watch::candidate_paths(&trigger.path, trigger.kind) {
                if let Some(set) = self.watch_index.get(&candidate) {
                    hits.extend(set.iter().copied());
                }
            }
            for (id, sequence) in hits {
                let Some(connection) = self.connections.get(&id) else {
                    continue;
                };
                let Some(watch) = connection
                    .record
                    .watches
                    .iter()
                    .find(|watch| watch.sequence == sequence)
                else {
                    continue;
                };
                if !watch.matches(&trigger.path, trigger.kind) {
                    continue;
                }
                let watcher = callers.entry(id).or_insert_with(|| self.caller(id));
                let Some(watcher) = watcher.as_ref() else {
                    continue;
                };
                if !watch_permitted(watcher, trigger) {
                    continue;
                }
                work.events.push(WatchEvent {
                    connection: id,
                    path: watch.reported_path(&trigger.path),
                    token: watch.token.clone(),
                });
            }
        }
        // Accounted values only move when something changed.
        if let Some(caller) = caller.filter(|_| !work.changes.is_empty()) {
            self.update_statistics(caller.domid);
        }
        // C drops an event byte-identical to one still queued (not for `@` paths): within
        // one outcome that covers a transaction writing a node twice, or two watches with
        // the same token matching one change. The server applies the rule across outcomes.
        let mut seen: BTreeSet<(ConnectionId, String, Vec<u8>)> = BTreeSet::new();
        work.events.retain(|event| {
            event.path.starts_with('@')
                || seen.insert((event.connection, event.path.clone(), event.token.clone()))
        });
        work.changes.compact();
        work.changes.generation = self.tree.generation();
        Outcome {
            reply,
            events: work.events,
            changes: work.changes,
            effects: work.effects,
        }
    }

    fn update_statistics(&mut self, domid: Domid) {
        let usage = self.quota_usage(domid);
        let entry = self
            .statistics
            .domain_max
            .entry(domid)
            .or_insert([0; quota::QUOTA_KIND_COUNT]);
        for (index, value) in usage.current.iter().enumerate() {
            entry[index] = entry[index].max(*value);
            self.statistics.global_max[index] = self.statistics.global_max[index].max(*value);
        }
    }

    // ----------------------------------------------------------------- export / rebuild

    /// The whole persisted state.
    pub fn export(&self) -> StoreImage {
        StoreImage {
            config: self.config.clone(),
            generation: self.tree.generation(),
            nodes: self.tree.records(),
            connections: self
                .connections
                .iter()
                .map(|(id, connection)| (*id, connection.record.clone()))
                .collect(),
            domains: self.domains.clone(),
            global_quotas: self.global_quotas.clone(),
            log: self.log,
        }
    }

    /// Rebuilds a store from an image (no open transactions).
    pub fn rebuild(image: StoreImage) -> Result<Store, RebuildError> {
        let tree =
            Tree::from_records(image.generation, &image.nodes).map_err(RebuildError::Tree)?;
        for (domid, domain) in &image.domains {
            if let Some(ring) = &domain.ring {
                if !image.connections.contains_key(&ring.connection) {
                    return Err(RebuildError::DanglingRing(*domid));
                }
            }
        }
        let mut watch_index: BTreeMap<String, BTreeSet<(ConnectionId, u64)>> = BTreeMap::new();
        let mut ring_connections: BTreeMap<Domid, BTreeSet<ConnectionId>> = BTreeMap::new();
        for (id, record) in &image.connections {
            if record.kind == ConnectionKind::Ring {
                ring_connections
                    .entry(record.domid)
                    .or_default()
                    .insert(*id);
            }
            for watch in &record.watches {
                watch_index
                    .entry(watch.path.clone())
                    .or_default()
                    .insert((*id, watch.sequence));
            }
        }
        Ok(Store {
            config: image.config,
            tree,
            global_quotas: image.global_quotas,
            domains: image.domains,
            connections: image
                .connections
                .into_iter()
                .map(|(id, record)| {
                    (
                        id,
                        Connection {
                            record,
                            transactions: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            watch_index,
            ring_connections,
            log: image.log,
            statistics: Statistics::default(),
        })
    }

    /// Rebuilds after a restart: like [`Store::rebuild`], and every transaction id handed out
    /// before the restart now answers `EAGAIN` (the transactions open at the crash were
    /// aborted). Returns the change set recording the new marks.
    pub fn recover(image: StoreImage) -> Result<(Store, ChangeSet), RebuildError> {
        let mut store = Store::rebuild(image)?;
        let mut work = Work::default();
        let ids: Vec<ConnectionId> = store.connections.keys().copied().collect();
        for id in ids {
            let connection = store.connections.get_mut(&id).expect("listed");
            if connection.record.aborted_up_to != connection.record.highest_transaction_id {
                connection.record.aborted_up_to = connection.record.highest_transaction_id;
                store.record_connection(&mut work, id);
            }
        }
        work.changes.generation = store.tree.generation();
        Ok((store, work.changes))
    }

    /// The same store with every open transaction aborted (what a rebuild gives).
    pub fn without_transactions(&self) -> Store {
        let mut store = self.clone();
        for connection in store.connections.values_mut() {
            connection.transactions.clear();
        }
        store
    }

    // ----------------------------------------------------------------- inspection

    /// One node's record.
    pub fn node(&self, node_path: &str) -> Option<&NodeRecord> {
        self.tree.get(node_path).map(|node| &node.record)
    }

    /// A node's children in order.
    pub fn children(&self, node_path: &str) -> Option<Vec<String>> {
        self.tree
            .get(node_path)
            .map(|node| node.children.iter().cloned().collect())
    }

    /// Number of nodes (including `@` nodes).
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// The global generation counter.
    pub fn generation(&self) -> u64 {
        self.tree.generation()
    }

    /// Every connection.
    pub fn connections(&self) -> impl Iterator<Item = (ConnectionId, &Connection)> {
        self.connections
            .iter()
            .map(|(id, connection)| (*id, connection))
    }

    /// One connection.
    pub fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.connections.get(&id)
    }

    /// Every known domain.
    pub fn domains(&self) -> impl Iterator<Item = (Domid, &DomainRecord)> {
        self.domains.iter().map(|(domid, record)| (*domid, record))
    }

    /// Global quotas.
    pub fn global_quotas(&self) -> &QuotaSet {
        &self.global_quotas
    }

    /// Log settings.
    pub fn log_settings(&self) -> LogSettings {
        self.log
    }

    pub(crate) fn set_log_settings(&mut self, settings: LogSettings) {
        self.log = settings;
    }

    pub(crate) fn set_global_quotas(&mut self, quotas: QuotaSet) {
        self.global_quotas = quotas;
    }

    pub(crate) fn reset_global_statistics(&mut self) {
        self.statistics.global_max = [0; quota::QUOTA_KIND_COUNT];
    }

    /// Statistics (largest values seen).
    pub fn statistics(&self) -> &Statistics {
        &self.statistics
    }

    /// Bytes charged to a domain: its nodes ([`crate::node::Node::memory_bytes`]) plus its
    /// watches (path + token + [`WATCH_OVERHEAD_BYTES`]). Open transactions and queued output
    /// are not charged (the server accounts output).
    pub fn memory_usage(&self, domid: Domid) -> u64 {
        let watches: u64 = self
            .domain_connections(domid)
            .flat_map(|connection| connection.record.watches.iter())
            .map(|watch| (watch.path.len() + watch.token.len()) as u64 + WATCH_OVERHEAD_BYTES)
            .sum();
        self.tree.memory(domid) + watches
    }

    /// Memory account state (for flow control).
    pub fn memory_state(&self, domid: Domid) -> MemoryState {
        if domid == self.config.privileged_domid {
            return MemoryState::Normal;
        }
        let used = self.memory_usage(domid);
        if quota::exceeds(self.quota(domid, QuotaKind::Memory), used) {
            return MemoryState::AboveHard;
        }
        let overrides = self.domains.get(&domid).map(|domain| &domain.quotas);
        let soft = match overrides {
            Some(set) if set.get(QuotaKind::Memory, QuotaLevel::Soft) != quota::DISABLED => {
                set.get(QuotaKind::Memory, QuotaLevel::Soft)
            }
            _ => self.global_quotas.get(QuotaKind::Memory, QuotaLevel::Soft),
        };
        if quota::exceeds(soft, used) {
            MemoryState::AboveSoft
        } else {
            MemoryState::Normal
        }
    }

    /// Current accounting of a domain.
    pub fn quota_usage(&self, domid: Domid) -> QuotaUsage {
        let mut current = [0u64; quota::QUOTA_KIND_COUNT];
        current[QuotaKind::Nodes.index()] = u64::from(self.tree.owned_nodes(domid));
        current[QuotaKind::Watches.index()] = self.domain_watch_count(domid);
        current[QuotaKind::Memory.index()] = self.memory_usage(domid);
        current[QuotaKind::Transactions.index()] = self.domain_transaction_count(domid);
        let mut hard = [0u32; quota::QUOTA_KIND_COUNT];
        for kind in QuotaKind::ALL {
            hard[kind.index()] = self.quota(domid, kind);
        }
        QuotaUsage { current, hard }
    }

    /// Structural self-check (CONTROL `check`): empty when consistent.
    pub fn check(&self) -> Vec<String> {
        let mut problems = self.tree.check();
        for (id, connection) in &self.connections {
            for watch in &connection.record.watches {
                if !self
                    .watch_index
                    .get(&watch.path)
                    .is_some_and(|set| set.contains(&(*id, watch.sequence)))
                {
                    problems.push(alloc::format!("watch index misses {}", watch.path));
                }
            }
        }
        problems
    }
}

/// C `watch_permitted`: the watcher may read the node (with the old permissions too, for
/// SET_PERMS) or its parent.
fn watch_permitted(watcher: &Caller, trigger: &Trigger) -> bool {
    if watcher.privileged {
        return true;
    }
    let readable = |permissions: &Option<(Permissions, bool)>| {
        permissions
            .as_ref()
            .is_some_and(|(permissions, ignored)| watcher.rights(permissions, *ignored).read)
    };
    readable(&trigger.old_permissions)
        || (trigger.node_permissions.is_some()
            && (readable(&trigger.node_permissions) || readable(&trigger.parent_permissions)))
}

/// Offset of the part of `absolute` below `/local/domain/<id>/` (C: `sscanf` with
/// `"/local/domain/%5u/%n"`), else 0.
fn local_offset(absolute: &str) -> usize {
    const PREFIX: &str = "/local/domain/";
    let Some(rest) = absolute.strip_prefix(PREFIX) else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    PREFIX.len() + digits + 1
}
