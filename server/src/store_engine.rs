//! The [`Engine`] over the real Xenstore state machine, `xenstore_store::Store` — the only
//! engine of the daemon and the unikernel — and its mapping onto the object log.
//!
//! Mapping of requests: the server's connection ids are the store's; `precheck` (EACCES /
//! ENOENT / EAGAIN in C's order) runs before `Request::parse`, as the request contract
//! requires; the store's two-phase INTRODUCE (`Reply::Deferred` + `Effect::Introduce`) becomes
//! the server's [`Effect::Introduce`] followed by [`Engine::introduce`]; `ReleaseDomain`
//! becomes [`Effect::CloseDomain`]; CONTROL `print` / `memreport` become [`Effect::Print`].
//!
//! Mapping of a [`ChangeSet`] onto log mutations (mode `crash-resilient`, see
//! [`IntoMutations`] for [`StoreChanges`]):
//!
//! | change | mutation |
//! | --- | --- |
//! | `NodeWritten` (absolute path) | `PutNode { value, permissions: wire bytes, generation }` |
//! | `NodeWritten` (`@introduceDomain`, `@releaseDomain`) | blob `special/<name>`: postcard store `NodeRecord` |
//! | `SubtreeRemoved` | `RemoveSubtree` |
//! | `Domain` / `DomainRemoved` | blob `domain/<domid>`: postcard `DomainRecord` / removed |
//! | `GlobalQuotas` | blob `quotas`: postcard `QuotaSet` |
//! | `Log` | blob `log`: postcard `LogSettings` |
//! | any non-empty change set | blob `generation`: postcard `u64` (global generation counter) |
//! | a node's `any_ignored` flag changed | blob `any-ignored`: postcard list of paths |
//! | `Connection` / `ConnectionRemoved` | the server rewrites / removes blob `conn/<id>`, which embeds the store's `ConnectionRecord` (watches, transaction ids) next to the ring state |
//!
//! Recovery ([`StoreEngine::recover`]) rebuilds a `StoreImage` from those nodes and blobs and
//! calls `Store::recover`, which marks every transaction id handed out before the crash as
//! aborted (`EAGAIN` on next use). Per-node fine-grained generations are not persisted: they
//! only serve conflict detection between open transactions, and none survives a restart.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use xenstore_persist::{BlockDevice, Log, Mutation};
use xenstore_protocol::{Domid, Errno, Header, MessageType, ParseOptions, Permissions, Request};
use xenstore_store::node::NodeGenerations;
use xenstore_store::{
    self as store, Change, ChangeSet, ConnectionKind, ConnectionRecord, DomainRecord, Introduction,
    LogSettings, NodeRecord, QuotaSet, Reply, Store, StoreImage,
};

use crate::connection::{ConnectionId, ConnectionSnapshot};
use crate::engine::{Caller, Effect, Engine, EventMessage, Outcome, ReplyMessage};
use crate::log_journal::IntoMutations;
use crate::platform::RingLocation;

/// Blob key: global generation counter.
pub const GENERATION_KEY: &str = "generation";
/// Blob key: global quotas.
pub const QUOTAS_KEY: &str = "quotas";
/// Blob key: CONTROL `log` settings.
pub const LOG_KEY: &str = "log";
/// Blob key: paths of nodes whose `DOMID_ANY` entries are ignored.
pub const ANY_IGNORED_KEY: &str = "any-ignored";
/// Blob key prefix: domain records.
pub const DOMAIN_KEY_PREFIX: &str = "domain/";
/// Blob key prefix: special (`@…`) nodes.
pub const SPECIAL_KEY_PREFIX: &str = "special/";

/// The change record of one request, as the server persists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreChanges {
    /// The store's change set.
    pub set: ChangeSet,
    /// New contents of the `any-ignored` blob, when the set of such nodes changed.
    pub any_ignored: Option<Vec<String>>,
}

/// The store as an engine.
#[derive(Debug)]
pub struct StoreEngine {
    /// The state machine.
    pub store: Store,
    /// Paths whose record has `any_ignored` set (persisted as one blob, rarely non-empty).
    any_ignored: BTreeSet<String>,
}

fn postcard_blob<T: serde::Serialize>(key: String, value: &T) -> Mutation {
    let value = postcard::to_allocvec(value).expect("store records always encode");
    Mutation::PutBlob { key, value }
}

fn domain_key(domid: Domid) -> String {
    format!("{DOMAIN_KEY_PREFIX}{}", domid.0)
}

/// Mutations that write the whole current state of `store`: every node (special nodes as
/// blobs), domains, global quotas, log settings, the generation counter and the
/// `any-ignored` list (connection records excluded: they travel in the connection blobs).
/// The first commit of a new database, and the image part of switching a running server onto
/// a log ([`crate::switch`]).
pub fn image_mutations_of(store: &Store) -> Vec<Mutation> {
    let image = store.export();
    let any_ignored: Vec<String> = image
        .nodes
        .iter()
        .filter(|(_, record)| record.any_ignored)
        .map(|(path, _)| path.clone())
        .collect();
    let mut set = ChangeSet {
        changes: Vec::new(),
        generation: image.generation,
    };
    for (path, record) in image.nodes {
        set.push(Change::NodeWritten { path, record });
    }
    for (domid, record) in image.domains {
        set.push(Change::Domain { domid, record });
    }
    set.push(Change::GlobalQuotas(image.global_quotas));
    set.push(Change::Log(image.log));
    let mut mutations = Vec::new();
    StoreChanges {
        set,
        any_ignored: (!any_ignored.is_empty()).then_some(any_ignored),
    }
    .into_mutations(&mut mutations);
    mutations
}

/// Why the store could not be rebuilt from the log (policy: the daemon refuses to start and
/// says why; the inspector can look at the damaged database).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreRecoverError {
    /// A node's permissions did not parse.
    BadPermissions {
        /// The node.
        path: String,
    },
    /// A blob did not decode.
    BadBlob {
        /// Its key.
        key: String,
    },
    /// The store rejected the image.
    Rebuild(String),
}

impl core::fmt::Display for StoreRecoverError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StoreRecoverError::BadPermissions { path } => {
                write!(formatter, "node {path}: permissions do not parse")
            }
            StoreRecoverError::BadBlob { key } => write!(formatter, "blob {key} does not decode"),
            StoreRecoverError::Rebuild(text) => write!(formatter, "store rebuild: {text}"),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreRecoverError> {
    postcard::from_bytes(bytes).map_err(|_| StoreRecoverError::BadBlob {
        key: String::from(key),
    })
}

impl StoreEngine {
    /// A fresh store with the given configuration.
    pub fn new(config: store::Config) -> StoreEngine {
        StoreEngine {
            store: Store::new(config),
            any_ignored: BTreeSet::new(),
        }
    }

    /// True when the log holds a store image (the root node was ever written).
    pub fn log_has_image<D: BlockDevice>(log: &Log<D>) -> bool {
        log.node("/").is_some()
    }

    /// Mutations that write the whole current state of the store (the first commit of a new
    /// database; connections are excluded: a fresh store has none worth keeping).
    pub fn image_mutations(&self) -> Vec<Mutation> {
        image_mutations_of(&self.store)
    }

    /// Rebuilds the store from the newest durable state of the log: nodes, the blobs of the
    /// table in the module doc, and the store records embedded in the recovered ring
    /// connections' snapshots. Returns the engine and the change set of the recovery (the
    /// `aborted_up_to` marks; persisted with the connections' next commits).
    pub fn recover<D: BlockDevice>(
        config: store::Config,
        log: &Log<D>,
        snapshots: &[ConnectionSnapshot],
    ) -> Result<(StoreEngine, ChangeSet), StoreRecoverError> {
        let mut any_ignored: BTreeSet<String> = BTreeSet::new();
        if let Some(bytes) = log.blob(ANY_IGNORED_KEY) {
            let paths: Vec<String> = decode(ANY_IGNORED_KEY, bytes)?;
            any_ignored.extend(paths);
        }
        let mut nodes: BTreeMap<String, NodeRecord> = BTreeMap::new();
        let mut bad_permissions: Option<String> = None;
        let mut highest_generation = 0;
        log.for_each_node(|path, record| {
            let Ok(permissions) = Permissions::parse_wire(&record.permissions) else {
                bad_permissions.get_or_insert_with(|| String::from(path));
                return;
            };
            highest_generation = highest_generation.max(record.generation);
            nodes.insert(
                String::from(path),
                NodeRecord {
                    value: record.value.clone(),
                    permissions,
                    any_ignored: any_ignored.contains(path),
                    generation: record.generation,
                    generations: NodeGenerations::created(record.generation),
                },
            );
        });
        if let Some(path) = bad_permissions {
            return Err(StoreRecoverError::BadPermissions { path });
        }
        let mut domains: BTreeMap<Domid, DomainRecord> = BTreeMap::new();
        let mut blob_error: Option<StoreRecoverError> = None;
        log.for_each_blob(|key, bytes| {
            let result = if let Some(name) = key.strip_prefix(SPECIAL_KEY_PREFIX) {
                decode::<NodeRecord>(key, bytes).map(|record| {
                    highest_generation = highest_generation.max(record.generation);
                    nodes.insert(String::from(name), record);
                })
            } else if let Some(domid) = key.strip_prefix(DOMAIN_KEY_PREFIX) {
                match domid.parse::<u16>() {
                    Ok(domid) => decode::<DomainRecord>(key, bytes).map(|record| {
                        domains.insert(Domid(domid), record);
                    }),
                    Err(_) => Err(StoreRecoverError::BadBlob {
                        key: String::from(key),
                    }),
                }
            } else {
                Ok(())
            };
            if let Err(error) = result {
                blob_error.get_or_insert(error);
            }
        });
        if let Some(error) = blob_error {
            return Err(error);
        }
        let generation = match log.blob(GENERATION_KEY) {
            Some(bytes) => decode::<u64>(GENERATION_KEY, bytes)?.max(highest_generation),
            None => highest_generation,
        };
        let global_quotas = match log.blob(QUOTAS_KEY) {
            Some(bytes) => decode::<QuotaSet>(QUOTAS_KEY, bytes)?,
            None => config.quotas.clone(),
        };
        let log_settings = match log.blob(LOG_KEY) {
            Some(bytes) => decode::<LogSettings>(LOG_KEY, bytes)?,
            None => LogSettings::default(),
        };
        let mut connections: BTreeMap<store::ConnectionId, ConnectionRecord> = BTreeMap::new();
        for snapshot in snapshots {
            let record = if snapshot.engine_state.is_empty() {
                ConnectionRecord::new(ConnectionKind::Ring, snapshot.domid)
            } else {
                decode::<ConnectionRecord>("conn", &snapshot.engine_state)?
            };
            connections.insert(store::ConnectionId(snapshot.id.0), record);
        }
        // A domain whose connection blob was lost (damage) keeps its nodes but loses its ring:
        // the toolstack must introduce it again.
        for record in domains.values_mut() {
            if record
                .ring
                .as_ref()
                .is_some_and(|ring| !connections.contains_key(&ring.connection))
            {
                record.ring = None;
                record.introduced = false;
            }
        }
        let image = StoreImage {
            config,
            generation,
            nodes,
            connections,
            domains,
            global_quotas,
            log: log_settings,
        };
        let (store, changes) = Store::recover(image)
            .map_err(|error| StoreRecoverError::Rebuild(format!("{error:?}")))?;
        Ok((StoreEngine { store, any_ignored }, changes))
    }

    fn track_any_ignored(&mut self, set: &ChangeSet) -> Option<Vec<String>> {
        let mut changed = false;
        for change in &set.changes {
            match change {
                Change::NodeWritten { path, record } => {
                    changed |= if record.any_ignored {
                        self.any_ignored.insert(path.clone())
                    } else {
                        self.any_ignored.remove(path)
                    };
                }
                Change::SubtreeRemoved { path } if !self.any_ignored.is_empty() => {
                    let prefix = format!("{path}/");
                    let before = self.any_ignored.len();
                    self.any_ignored
                        .retain(|node| node != path && !node.starts_with(prefix.as_str()));
                    changed |= before != self.any_ignored.len();
                }
                _ => {}
            }
        }
        changed.then(|| self.any_ignored.iter().cloned().collect())
    }

    fn convert(
        &mut self,
        message_type: MessageType,
        outcome: store::Outcome,
    ) -> Outcome<StoreChanges> {
        let reply = match outcome.reply {
            Reply::Payload(payload) => Some(ReplyMessage {
                message_type,
                payload,
            }),
            Reply::Error(errno) => Some(ReplyMessage::error(errno)),
            Reply::Deferred | Reply::None => None,
        };
        let events = outcome
            .events
            .iter()
            .filter_map(|event| {
                let payload = event.payload().ok()?;
                Some(EventMessage {
                    connection: ConnectionId(event.connection.0),
                    payload,
                })
            })
            .collect();
        let mut effects = Vec::new();
        for effect in outcome.effects {
            match effect {
                store::Effect::Introduce {
                    domid, gfn, evtchn, ..
                } => effects.push(Effect::Introduce(RingLocation {
                    domid,
                    gfn: gfn as u64,
                    remote_port: evtchn,
                })),
                store::Effect::ReleaseDomain { domid, .. } => {
                    effects.push(Effect::CloseDomain(domid))
                }
                store::Effect::ResetConnection { connection } => {
                    effects.push(Effect::ResetConnection(ConnectionId(connection.0)))
                }
                store::Effect::Print(line) => effects.push(Effect::Print(line)),
                store::Effect::MemoryReport { text, .. } => effects.push(Effect::Print(text)),
                store::Effect::Log(_) => {}
            }
        }
        let any_ignored = self.track_any_ignored(&outcome.changes);
        Outcome {
            reply,
            events,
            changes: StoreChanges {
                set: outcome.changes,
                any_ignored,
            },
            effects,
        }
    }

    fn only_changes(set: ChangeSet) -> Outcome<StoreChanges> {
        Outcome {
            reply: None,
            events: Vec::new(),
            changes: StoreChanges {
                set,
                any_ignored: None,
            },
            effects: Vec::new(),
        }
    }
}

impl StoreChanges {
    /// True when the change set holds more than connection records (which travel in the
    /// connection blobs, and are not persisted at all for socket connections).
    fn touches_global_state(&self) -> bool {
        self.set.changes.iter().any(|change| {
            !matches!(
                change,
                Change::Connection { .. } | Change::ConnectionRemoved { .. }
            )
        })
    }
}

impl IntoMutations for StoreChanges {
    fn into_mutations(self, out: &mut Vec<Mutation>) {
        let touched_store = self.touches_global_state();
        for change in self.set.changes {
            match change {
                Change::NodeWritten { path, record } => {
                    if path.starts_with('/') {
                        out.push(Mutation::PutNode {
                            path,
                            record: xenstore_persist::NodeRecord {
                                value: record.value,
                                permissions: record.permissions.to_wire(),
                                generation: record.generation,
                            },
                        });
                    } else {
                        out.push(postcard_blob(
                            format!("{SPECIAL_KEY_PREFIX}{path}"),
                            &record,
                        ));
                    }
                }
                Change::SubtreeRemoved { path } => {
                    if path.starts_with('/') {
                        out.push(Mutation::RemoveSubtree { path });
                    } else {
                        out.push(Mutation::RemoveBlob {
                            key: format!("{SPECIAL_KEY_PREFIX}{path}"),
                        });
                    }
                }
                Change::Domain { domid, record } => {
                    out.push(postcard_blob(domain_key(domid), &record))
                }
                Change::DomainRemoved { domid } => out.push(Mutation::RemoveBlob {
                    key: domain_key(domid),
                }),
                Change::GlobalQuotas(quotas) => {
                    out.push(postcard_blob(String::from(QUOTAS_KEY), &quotas))
                }
                Change::Log(settings) => out.push(postcard_blob(String::from(LOG_KEY), &settings)),
                // Connection records travel inside the connection blobs (see the module doc).
                Change::Connection { .. } | Change::ConnectionRemoved { .. } => {}
            }
        }
        if touched_store {
            out.push(postcard_blob(
                String::from(GENERATION_KEY),
                &self.set.generation,
            ));
        }
        if let Some(paths) = self.any_ignored {
            out.push(postcard_blob(String::from(ANY_IGNORED_KEY), &paths));
        }
    }
}

impl Engine for StoreEngine {
    type Changes = StoreChanges;

    fn connect(&mut self, caller: &Caller) -> StoreChanges {
        StoreChanges {
            set: self.store.add_connection(
                store::ConnectionId(caller.connection.0),
                ConnectionKind::Socket,
                caller.domid,
            ),
            any_ignored: None,
        }
    }

    fn introduce(
        &mut self,
        connection: ConnectionId,
        location: &RingLocation,
        local_port: u32,
    ) -> Outcome<StoreChanges> {
        let outcome = self.store.introduce_domain(Introduction {
            domid: location.domid,
            connection: store::ConnectionId(connection.0),
            gfn: location.gfn as i64,
            evtchn: local_port,
        });
        self.convert(MessageType::Introduce, outcome)
    }

    fn apply(&mut self, caller: &Caller, header: &Header, payload: &[u8]) -> Outcome<StoreChanges> {
        let id = store::ConnectionId(caller.connection.0);
        let message_type = header.message_type;
        let generation = self.store.generation();
        let error = |errno: Errno| Outcome {
            reply: Some(ReplyMessage::error(errno)),
            events: Vec::new(),
            changes: StoreChanges {
                set: ChangeSet {
                    changes: Vec::new(),
                    generation,
                },
                any_ignored: None,
            },
            effects: Vec::new(),
        };
        if let Err(errno) = self.store.precheck(id, message_type, header.tx_id) {
            return error(errno);
        }
        let watch_depth = self.store.caller(id).is_some_and(|caller| {
            caller.features & xenstore_protocol::ring::FEATURE_WATCHDEPTH != 0
        });
        let request = match Request::parse(message_type, payload, ParseOptions { watch_depth }) {
            Ok(request) => request,
            Err(errno) => return error(errno),
        };
        let outcome = self.store.handle(id, header.tx_id, &request);
        self.convert(message_type, outcome)
    }

    fn disconnect(&mut self, caller: &Caller) -> Outcome<StoreChanges> {
        let set = self
            .store
            .remove_connection(store::ConnectionId(caller.connection.0));
        Self::only_changes(set)
    }

    fn domain_states(&mut self, states: &[crate::engine::DomainState]) -> Outcome<StoreChanges> {
        let outcome = self.store.domain_states(states);
        self.convert(MessageType::Release, outcome)
    }

    fn merge_changes(mut first: StoreChanges, second: StoreChanges) -> StoreChanges {
        first.set.changes.extend(second.set.changes);
        first.set.generation = first.set.generation.max(second.set.generation);
        if second.any_ignored.is_some() {
            first.any_ignored = second.any_ignored;
        }
        first
    }

    fn empty_changes() -> StoreChanges {
        StoreChanges::default()
    }

    fn is_empty(changes: &StoreChanges) -> bool {
        // Connection records alone: the server writes them with the connection's blob (ring
        // connections are "touched" through `changed_connections`); sockets need nothing.
        !changes.touches_global_state() && changes.any_ignored.is_none()
    }

    fn changed_connections(changes: &StoreChanges) -> Vec<ConnectionId> {
        changes
            .set
            .changes
            .iter()
            .filter_map(|change| match change {
                Change::Connection { id, .. } => Some(ConnectionId(id.0)),
                _ => None,
            })
            .collect()
    }

    fn primary_path(changes: &StoreChanges) -> Option<String> {
        changes.set.changes.iter().find_map(|change| match change {
            Change::NodeWritten { path, .. } | Change::SubtreeRemoved { path }
                if path.starts_with('/') =>
            {
                Some(path.clone())
            }
            _ => None,
        })
    }

    fn store(&self) -> Option<&Store> {
        Some(&self.store)
    }

    fn connection_state(&self, connection: ConnectionId) -> Vec<u8> {
        match self.store.connection(store::ConnectionId(connection.0)) {
            Some(state) => {
                postcard::to_allocvec(&state.record).expect("connection records always encode")
            }
            None => Vec::new(),
        }
    }
}

/// Why a crash-resilient server could not be started.
#[derive(Debug)]
pub enum StartError {
    /// Writing the initial image into a new log failed.
    Log(xenstore_persist::Error),
    /// The store could not be rebuilt from the log.
    Recover(StoreRecoverError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Log(error) => write!(formatter, "log: {error:?}"),
            StartError::Recover(error) => write!(formatter, "{error}"),
        }
    }
}

/// What [`start_crash_resilient`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// The log held no store: the fresh store's image was written as its first commit.
    Fresh,
    /// The store and the ring connections were recovered.
    Recovered(crate::RecoveryReport),
}

/// A server persisting through a `persist` log.
pub type LoggedServer<P, E, D> = crate::Server<P, E, crate::log_journal::LogJournal<D>>;

/// Starts a crash-resilient server on an opened (or created) log — the one entry point the
/// hosted daemon, the unikernel and the simulation tests share: a log without a store image
/// gets the fresh store's image, made durable (the first commit of a new log; on a log that an
/// interrupted switch left without a store, after removing its leftovers: see
/// `state_commits`); otherwise the store and every ring
/// connection are recovered (transactions open at the crash answer `EAGAIN`, rings are
/// re-attached and their indices reconciled). `wrap` lets the platform put the engine in a
/// guard (the hosted daemon's panic guard); pass `|engine| engine` otherwise.
pub fn start_crash_resilient<P, D, E>(
    platform: P,
    config: crate::Config,
    store_config: store::Config,
    mut log: Log<D>,
    wrap: impl FnOnce(StoreEngine) -> E,
) -> Result<(LoggedServer<P, E, D>, Started), StartError>
where
    P: crate::Platform,
    D: BlockDevice,
    E: Engine<Changes = StoreChanges>,
{
    use crate::log_journal::{LogJournal, recover_connections};
    if !StoreEngine::log_has_image(&log) {
        use crate::state_commits::{append_in_commits, leftover_removals, split_off_root};
        let engine = StoreEngine::new(store_config);
        // A log without a store may still hold what an interrupted switch wrote before its
        // final commit: remove it, so the fresh store is all there is.
        let mut body = leftover_removals(&log);
        let mut image = engine.image_mutations();
        let root = split_off_root(&mut image);
        body.extend(image);
        let cause = xenstore_persist::Cause {
            request_type: u32::MAX,
            path: Some(String::from("/")),
            ..xenstore_persist::Cause::default()
        };
        append_in_commits(&mut log, &cause, body, alloc::vec![root]).map_err(StartError::Log)?;
        log.sync().map_err(StartError::Log)?;
        assert!(StoreEngine::log_has_image(&log));
        let server = crate::Server::new(platform, wrap(engine), LogJournal::new(log), config);
        return Ok((server, Started::Fresh));
    }
    let (server_state, snapshots, errors) = recover_connections(&log);
    let (engine, _marks) =
        StoreEngine::recover(store_config, &log, &snapshots).map_err(StartError::Recover)?;
    let (mut server, report) = crate::Server::recover(
        platform,
        wrap(engine),
        LogJournal::new(log),
        config,
        server_state,
        snapshots,
    );
    for error in errors {
        server.report_recovery_damage(&format!("{error:?}"));
    }
    Ok((server, Started::Recovered(report)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use xenstore_persist::{Cause, Commit, Config as LogConfig, MemDevice};
    use xenstore_protocol::{Domid, ParseOptions, Request};

    fn persist(log: &mut Log<MemDevice>, changes: StoreChanges) {
        let mut mutations = Vec::new();
        changes.into_mutations(&mut mutations);
        if !mutations.is_empty() {
            log.append(Commit {
                cause: Cause::default(),
                mutations,
            })
            .unwrap();
        }
    }

    fn run(
        engine: &mut StoreEngine,
        log: &mut Log<MemDevice>,
        connection: u32,
        tx_id: u32,
        message_type: MessageType,
        payload: &[u8],
    ) -> Reply {
        let request = Request::parse(message_type, payload, ParseOptions { watch_depth: true })
            .expect("valid request");
        let outcome = engine
            .store
            .handle(store::ConnectionId(connection), tx_id, &request);
        let reply = outcome.reply.clone();
        let converted = engine.convert(message_type, outcome);
        persist(log, converted.changes);
        reply
    }

    /// Everything the store persists goes through `IntoMutations` and comes back through
    /// `StoreEngine::recover`: nodes with permissions and generations, special nodes, domains
    /// with their quotas and ring records, global quotas, log settings, the generation counter,
    /// and (through the connection snapshot) watches and transaction ids; a transaction open
    /// at the "crash" answers EAGAIN afterwards.
    #[test]
    fn persisted_state_round_trips_through_the_log() {
        let mut log = Log::create(MemDevice::new(8192), LogConfig::default()).unwrap();
        let mut engine = StoreEngine::new(store::Config::default());
        log.append(Commit {
            cause: Cause::default(),
            mutations: engine.image_mutations(),
        })
        .unwrap();
        let dom0 = 1;
        let guest = 2;
        persist(
            &mut log,
            StoreChanges {
                set: engine.store.add_connection(
                    store::ConnectionId(dom0),
                    ConnectionKind::Socket,
                    Domid(0),
                ),
                any_ignored: None,
            },
        );
        let reply = run(
            &mut engine,
            &mut log,
            dom0,
            0,
            MessageType::Introduce,
            b"5\x00100\x007\x00",
        );
        assert_eq!(reply, Reply::Deferred);
        let outcome = engine.store.introduce_domain(Introduction {
            domid: Domid(5),
            connection: store::ConnectionId(guest),
            gfn: 100,
            evtchn: 9,
        });
        let converted = engine.convert(MessageType::Introduce, outcome);
        persist(&mut log, converted.changes);
        for (message_type, payload) in [
            (MessageType::Write, &b"/local/domain/5\0"[..]),
            (MessageType::SetPerms, b"/local/domain/5\0n5\0r0\0"),
            (MessageType::Write, b"/a/b\0value"),
            (MessageType::SetPerms, b"/a/b\0n0\0r5\0"),
            (MessageType::Write, b"/a/gone\0x"),
            (MessageType::Rm, b"/a/gone\0"),
            (MessageType::SetPerms, b"@releaseDomain\0n0\0r5\0"),
            (MessageType::Control, b"quota\0set\0nodes\x00777\0"),
            (MessageType::Control, b"log\0on\0"),
            (MessageType::SetQuota, b"5\0watches\x009\0"),
        ] {
            let reply = run(&mut engine, &mut log, dom0, 0, message_type, payload);
            assert!(reply.is_ok(), "{message_type:?}: {reply:?}");
        }
        for (message_type, payload) in [
            (MessageType::Watch, &b"/a\0tok\0"[..]),
            (MessageType::Write, b"/local/domain/5/k\0v"),
            (MessageType::TransactionStart, b"\0"),
        ] {
            let reply = run(&mut engine, &mut log, guest, 0, message_type, payload);
            assert!(reply.is_ok(), "{message_type:?}: {reply:?}");
        }
        log.sync().unwrap();

        // "Crash": reopen the log; the guest's connection blob carries the store record.
        let snapshot = ConnectionSnapshot {
            id: ConnectionId(guest),
            domid: Domid(5),
            privileged: false,
            location: RingLocation {
                domid: Domid(5),
                gfn: 100,
                remote_port: 7,
            },
            req_cons: 0,
            reset_pending: false,
            assembler: Default::default(),
            output: Default::default(),
            broken: None,
            outstanding_max: 20,
            engine_state: engine.connection_state(ConnectionId(guest)),
        };
        let (log, _) = Log::open(log.into_device(), LogConfig::default()).unwrap();
        let (recovered, _marks) =
            StoreEngine::recover(store::Config::default(), &log, &[snapshot]).unwrap();
        let before = engine.store.export();
        let after = recovered.store.export();
        assert_eq!(after.generation, before.generation);
        assert_eq!(after.domains, before.domains);
        assert_eq!(after.global_quotas, before.global_quotas);
        assert_eq!(after.log, before.log);
        let strip = |image: &StoreImage| -> Vec<(String, Vec<u8>, String, u64)> {
            image
                .nodes
                .iter()
                .map(|(path, record)| {
                    (
                        path.clone(),
                        record.value.clone(),
                        format!("{}", record.permissions),
                        record.generation,
                    )
                })
                .collect()
        };
        assert_eq!(strip(&after), strip(&before));
        let guest_id = store::ConnectionId(guest);
        let before_record = &before.connections[&guest_id];
        let after_record = &after.connections[&guest_id];
        assert_eq!(after_record.watches, before_record.watches);
        assert_eq!(
            after_record.next_transaction_id,
            before_record.next_transaction_id
        );
        assert_eq!(
            after_record.aborted_up_to,
            before_record.highest_transaction_id
        );
        assert!(!after.connections.contains_key(&store::ConnectionId(dom0)));
        // The transaction open at the crash is gone: its id answers EAGAIN.
        let open_tx = before_record.highest_transaction_id;
        assert_eq!(
            recovered
                .store
                .precheck(guest_id, MessageType::Write, open_tx),
            Err(Errno::EAGAIN)
        );
        assert!(
            recovered.store.check().is_empty(),
            "{:?}",
            vec![recovered.store.check()]
        );
    }
}
