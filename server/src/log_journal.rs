//! Persistence mode `crash-resilient`: the [`Journal`] over the `persist` crate's object log.
//!
//! Layout in the log (see `docs/ARCHITECTURE.md` and `hosted/README.md`):
//! - nodes: the engine's change record, turned into `PutNode` / `RemoveSubtree` mutations by
//!   the engine's [`IntoMutations`] (for the store: [`crate::store_engine`], which also writes
//!   the `special/…`, `domain/<domid>`, `quotas`, `log`, `generation` and `any-ignored` blobs);
//! - `server`: the [`ServerSnapshot`] (postcard: next connection id, debug settings),
//!   rewritten with every commit;
//! - `conn/<id>`: one [`ConnectionSnapshot`] (postcard) per ring connection — ring location,
//!   consumed request index, partial packet, unsent output, and the engine's own record of the
//!   connection (the store's watches and transaction ids) — rewritten by every commit that
//!   touched the connection, removed when it closes. Socket connections are not persisted.
//!
//! Every commit carries its cause (connection, domid, request type, req_id, path, time); a
//! commit of connection state alone has request type `u32::MAX`.
//!
//! Recovery reads the newest durable state ([`recover_connections`]); the engine rebuilds
//! itself from the same log.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use xenstore_persist::{BlockDevice, Cause, Commit, Log, Mutation};

use crate::connection::{ConnectionSnapshot, ServerSnapshot};
use xenstore_shell::{CommitView, DiffView, TargetError};

use crate::journal::{CommitCause, ConnectionUpdate, Journal};
use crate::limits;

/// Blob key of the server's own state.
pub const SERVER_KEY: &str = "server";
/// Prefix of connection-state blob keys.
pub const CONNECTION_KEY_PREFIX: &str = "conn/";

/// Blob key of a connection.
pub fn connection_key(id: crate::ConnectionId) -> String {
    format!("{CONNECTION_KEY_PREFIX}{}", id.0)
}

/// An engine change record that can be written to the log.
pub trait IntoMutations {
    /// Appends the mutations of this change record, in order.
    fn into_mutations(self, out: &mut Vec<Mutation>);
}

/// A journal over a `persist` log.
pub struct LogJournal<D: BlockDevice> {
    log: Log<D>,
}

impl<D: BlockDevice> fmt::Debug for LogJournal<D> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("LogJournal")
            .field("last_seq", &self.log.last_seq())
            .finish_non_exhaustive()
    }
}

impl<D: BlockDevice> LogJournal<D> {
    /// Wraps an opened or created log.
    pub fn new(log: Log<D>) -> Self {
        LogJournal { log }
    }

    /// The log (history views, recovery reads).
    pub fn log(&self) -> &Log<D> {
        &self.log
    }

    /// The log, mutably (the first commit of a new database, maintenance).
    pub fn log_mut(&mut self) -> &mut Log<D> {
        &mut self.log
    }

    /// Gives the log back (a controlled restart re-opens the device).
    pub fn into_log(self) -> Log<D> {
        self.log
    }
}

/// Blob keys a request's commit may touch besides connection and server state.
fn path_is_within(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The value of `path` right after a commit, when the commit's mutations decide it.
fn value_after(mutations: &[Mutation], path: &str) -> Option<Option<Vec<u8>>> {
    let mut decided = None;
    for mutation in mutations {
        match mutation {
            Mutation::PutNode {
                path: written,
                record,
            } if written == path => {
                decided = Some(Some(record.value.clone()));
            }
            Mutation::RemoveSubtree { path: removed } if path_is_within(path, removed) => {
                decided = Some(None);
            }
            _ => {}
        }
    }
    decided
}

fn request_name(request_type: u32) -> String {
    if request_type == u32::MAX {
        String::from("(connection state)")
    } else {
        String::from(xenstore_protocol::MessageType::from_u32(request_type).name())
    }
}

/// The log failed. Policy: fatal (see [`Journal::Error`]).
#[derive(Debug)]
pub struct LogError(pub xenstore_persist::Error);

impl fmt::Display for LogError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.0)
    }
}

impl<D: BlockDevice, C: IntoMutations> Journal<C> for LogJournal<D> {
    type Error = LogError;

    fn is_enabled(&self) -> bool {
        true
    }

    fn append(
        &mut self,
        cause: &CommitCause,
        changes: C,
        connections: &[ConnectionUpdate],
        server_state: &[u8],
    ) -> Result<(), LogError> {
        let mut mutations = Vec::new();
        changes.into_mutations(&mut mutations);
        for (id, blob) in connections {
            let key = connection_key(*id);
            match blob {
                Some(bytes) => mutations.push(Mutation::PutBlob {
                    key,
                    value: bytes.clone(),
                }),
                None => mutations.push(Mutation::RemoveBlob { key }),
            }
        }
        mutations.push(Mutation::PutBlob {
            key: String::from(SERVER_KEY),
            value: server_state.to_vec(),
        });
        let commit = Commit {
            cause: Cause {
                connection: u64::from(cause.connection.0),
                domid: cause.domid.0,
                request_type: cause
                    .message_type
                    .map_or(u32::MAX, |message_type| message_type.as_u32()),
                request_id: cause.req_id,
                path: cause.path.clone(),
                requests_grouped: u32::from(cause.message_type.is_some()),
                timestamp: cause.timestamp_ns,
            },
            mutations,
        };
        self.log.append(commit).map(|_| ()).map_err(LogError)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        self.log.sync().map(|_| ()).map_err(LogError)
    }

    fn log_bytes(&self) -> u64 {
        self.log.log_bytes()
    }

    fn history(&mut self, path: &str, limit: usize) -> Result<Vec<CommitView>, TargetError> {
        let entries = self
            .log
            .commits_touching(path)
            .map_err(|error| TargetError::Log(format!("{error:?}")))?;
        let skip = entries.len().saturating_sub(limit);
        let mut views = Vec::new();
        for entry in entries.into_iter().skip(skip) {
            let value_after = match value_after(&entry.commit.mutations, path) {
                Some(value) => value,
                None => self
                    .log
                    .tree_at(entry.seq)
                    .ok()
                    .and_then(|tree| tree.node(path).map(|record| record.value.clone())),
            };
            let cause = &entry.commit.cause;
            views.push(CommitView {
                seq: entry.seq,
                timestamp_ns: cause.timestamp,
                connection: cause.connection,
                domid: cause.domid,
                request: request_name(cause.request_type),
                path: cause.path.clone().unwrap_or_else(|| String::from("-")),
                value_after,
            });
        }
        Ok(views)
    }

    fn diff(&mut self, from: u64, to: u64) -> Result<DiffView, TargetError> {
        let (oldest, newest) = self
            .log
            .history_range()
            .map_err(|error| TargetError::Log(format!("{error:?}")))?;
        for seq in [from, to] {
            if seq < oldest || seq > newest {
                return Err(TargetError::UnknownCommit(seq));
            }
        }
        let diff = self
            .log
            .diff(from, to)
            .map_err(|error| TargetError::Log(format!("{error:?}")))?;
        Ok(DiffView {
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
        })
    }
}

/// Why persisted connection state could not be read (policy: that connection is dropped and
/// the damage reported; the rest of the state is used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoverError {
    /// A blob did not decode.
    Undecodable {
        /// Its key.
        key: String,
    },
}

/// Reads the server state and every ring connection from the newest durable state.
pub fn recover_connections<D: BlockDevice>(
    log: &Log<D>,
) -> (ServerSnapshot, Vec<ConnectionSnapshot>, Vec<RecoverError>) {
    let mut errors = Vec::new();
    let server = match log.blob(SERVER_KEY) {
        Some(bytes) => postcard::from_bytes(bytes).unwrap_or_else(|_| {
            errors.push(RecoverError::Undecodable {
                key: String::from(SERVER_KEY),
            });
            ServerSnapshot::default()
        }),
        None => ServerSnapshot::default(),
    };
    let mut connections = Vec::new();
    log.for_each_blob(|key, bytes| {
        if !key.starts_with(CONNECTION_KEY_PREFIX) {
            return;
        }
        if bytes.len() > limits::CONNECTION_STATE_MAX_BYTES {
            errors.push(RecoverError::Undecodable {
                key: String::from(key),
            });
            return;
        }
        match postcard::from_bytes::<ConnectionSnapshot>(bytes) {
            Ok(snapshot) if connection_key(snapshot.id) == key => connections.push(snapshot),
            _ => errors.push(RecoverError::Undecodable {
                key: String::from(key),
            }),
        }
    });
    // Ids below the allocator (a damaged server blob must not make ids collide).
    let mut server = server;
    let highest = connections
        .iter()
        .map(|snapshot| snapshot.id.0)
        .max()
        .unwrap_or(0);
    server.next_connection_id = server.next_connection_id.max(highest + 1);
    (server, connections, errors)
}
