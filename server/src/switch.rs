//! Switching a running server onto a log: persistence mode `crash-resilient` for a server
//! that had to start serving before its block device existed (the stub domain serves dom0
//! before dom0 attaches the RAM disk).
//!
//! [`SwitchableJournal`] is the journal such a server runs with: `Volatile` (nothing is
//! recorded, like `NoJournal`; `Disabled` is mode `none`, which never switches) until
//! [`Server::switch_to_log`] formats the device, writes everything recovery reads back — the
//! engine's whole image, every ring connection's snapshot blob (ring location, consumed index,
//! partial packet, unsent replies and events, the store's record: watches and transaction ids)
//! and the server state blob — and turns it into `Logged`. From the next step on every request
//! is persisted before its reply leaves (the pipeline's rule; nothing else changes).
//!
//! The state is written as as many commits as it needs, each within `persist`'s 1 MiB commit
//! limit (`state_commits`: measured exactly, appended back to back, one `sync` at the end):
//! first the image's nodes and blobs, then a final commit with the root node "/", the
//! connection blobs and the server blob (a connection blob that does not fit beside them goes
//! into an earlier commit). The size of the store is thus bounded by the device and the
//! memory, not by one commit (`SwitchReport` says how many commits it took).
//!
//! Contract of the switch:
//! - call it between steps (it is a `&mut self` method, so it cannot run inside one): all
//!   output of earlier steps is then either transmitted or queued, and queued output is in
//!   the connection blobs;
//! - the live state is authoritative: whatever the device held is replaced (`Log::create`).
//!   A device that may hold an earlier run's store (the RAM disk of a stub domain relaunched
//!   by a cold restart) must be checked with [`device_holds_store`] first: recovering from it
//!   (`start_crash_resilient`) is then the right thing, not overwriting it;
//! - all or nothing: a log holds a store once its root node has a record, and the root node
//!   is only in the final commit (nodes written before it leave "/" an implicit directory,
//!   which has no record). Commits become durable in order, so a crash during the switch
//!   leaves a device without a store image — [`device_holds_store`] says false, recovery finds
//!   nothing (as before the switch), a later switch formats it again and a fresh start removes
//!   the leftovers — or with the complete image, never a partial one;
//! - on `Err` the server keeps running volatile, nothing in it changed, and the switch may be
//!   retried with a (re-)attached device. The device may then hold the complete image (the
//!   final commit became durable but the log's maintenance after it failed): it is the state
//!   of the switch, which the server has since left behind;
//! - afterwards a crash recovers with [`crate::store_engine::start_crash_resilient`] on the
//!   same device: the state at the switch plus every request acknowledged after it.
//!
//! The window before the switch is volatile by design (documented in docs/kernel.md): a crash
//! there loses the state.

use alloc::string::String;
use core::fmt;

use xenstore_persist::{BlockDevice, Cause, Config as LogConfig, Log, Mutation};
use xenstore_shell::{CommitView, DiffView, TargetError};

use crate::engine::Engine;
use crate::journal::{CommitCause, ConnectionUpdate, Journal};
use crate::log_journal::{LogError, LogJournal, SERVER_KEY, connection_key};
use crate::platform::Platform;
use crate::server::Server;
use crate::state_commits::{append_in_commits, final_commit, split_off_root};
use crate::store_engine::{StoreChanges, StoreEngine, image_mutations_of};

/// A journal that starts volatile and can be switched onto a log at run time.
#[allow(
    clippy::large_enum_variant,
    reason = "one per server, never moved in a hot path; boxing would add an indirection per commit"
)]
pub enum SwitchableJournal<D: BlockDevice> {
    /// Persistence mode `none`: nothing is recorded, and [`Server::switch_to_log`] refuses.
    Disabled,
    /// Nothing is recorded yet: mode `crash-resilient` waiting for its device.
    Volatile,
    /// Every commit goes to the log.
    Logged(LogJournal<D>),
}

impl<D: BlockDevice> fmt::Debug for SwitchableJournal<D> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchableJournal::Disabled => formatter.write_str("Disabled"),
            SwitchableJournal::Volatile => formatter.write_str("Volatile"),
            SwitchableJournal::Logged(journal) => journal.fmt(formatter),
        }
    }
}

impl<D: BlockDevice> SwitchableJournal<D> {
    /// True once switched onto a log.
    pub fn is_logged(&self) -> bool {
        matches!(self, SwitchableJournal::Logged(_))
    }

    /// The log, once switched.
    pub fn log(&self) -> Option<&Log<D>> {
        match self {
            SwitchableJournal::Disabled | SwitchableJournal::Volatile => None,
            SwitchableJournal::Logged(journal) => Some(journal.log()),
        }
    }
}

impl<D: BlockDevice> Journal<StoreChanges> for SwitchableJournal<D> {
    type Error = LogError;

    fn is_enabled(&self) -> bool {
        self.is_logged()
    }

    fn append(
        &mut self,
        cause: &CommitCause,
        changes: StoreChanges,
        connections: &[ConnectionUpdate],
        server_state: &[u8],
    ) -> Result<(), LogError> {
        match self {
            SwitchableJournal::Disabled | SwitchableJournal::Volatile => Ok(()),
            SwitchableJournal::Logged(journal) => {
                journal.append(cause, changes, connections, server_state)
            }
        }
    }

    fn sync(&mut self) -> Result<(), LogError> {
        match self {
            SwitchableJournal::Disabled | SwitchableJournal::Volatile => Ok(()),
            SwitchableJournal::Logged(journal) => {
                <LogJournal<D> as Journal<StoreChanges>>::sync(journal)
            }
        }
    }

    fn mode_name(&self) -> &'static str {
        match self {
            SwitchableJournal::Disabled => "none",
            SwitchableJournal::Volatile => "crash-resilient (volatile: waiting for the log device)",
            SwitchableJournal::Logged(_) => "crash-resilient",
        }
    }

    fn log_bytes(&self) -> u64 {
        match self {
            SwitchableJournal::Disabled | SwitchableJournal::Volatile => 0,
            SwitchableJournal::Logged(journal) => {
                <LogJournal<D> as Journal<StoreChanges>>::log_bytes(journal)
            }
        }
    }

    fn history(
        &mut self,
        path: &str,
        limit: usize,
    ) -> Result<alloc::vec::Vec<CommitView>, TargetError> {
        match self {
            SwitchableJournal::Disabled | SwitchableJournal::Volatile => {
                Err(TargetError::NoHistory)
            }
            SwitchableJournal::Logged(journal) => {
                <LogJournal<D> as Journal<StoreChanges>>::history(journal, path, limit)
            }
        }
    }

    fn diff(&mut self, from: u64, to: u64) -> Result<DiffView, TargetError> {
        match self {
            SwitchableJournal::Disabled | SwitchableJournal::Volatile => {
                Err(TargetError::NoHistory)
            }
            SwitchableJournal::Logged(journal) => {
                <LogJournal<D> as Journal<StoreChanges>>::diff(journal, from, to)
            }
        }
    }
}

/// Why [`Server::switch_to_log`] failed. Policy: the server keeps running volatile (nothing
/// changed); the platform logs it and may retry with a new device.
#[derive(Debug)]
pub enum SwitchError {
    /// The server already runs on a log.
    AlreadyLogged,
    /// Persistence mode `none` ([`SwitchableJournal::Disabled`]).
    PersistenceNone,
    /// The device could not be formatted.
    Format(xenstore_persist::OpenError),
    /// The state's commits could not be appended or made durable: a device failure, a device
    /// too small for the state (`Error::NoSpace`, `LimitError::CommitExceedsRegion`), or an
    /// item beyond `persist`'s limits (`Error::Limit`).
    Commit(xenstore_persist::Error),
    /// The engine exposes no store image (engines other than the store cannot switch).
    NoStore,
}

impl fmt::Display for SwitchError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::AlreadyLogged => formatter.write_str("already persisting to a log"),
            SwitchError::PersistenceNone => formatter.write_str("persistence mode is none"),
            SwitchError::Format(error) => write!(formatter, "formatting the device: {error:?}"),
            SwitchError::Commit(error) => write!(formatter, "writing the state: {error:?}"),
            SwitchError::NoStore => formatter.write_str("the engine has no store image"),
        }
    }
}

/// What the switch wrote (all of it durable when the switch returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchReport {
    /// Log mutations written, over all commits.
    pub mutations: usize,
    /// Ring connections persisted.
    pub connections: usize,
    /// Commits the state took (1 for a state that fits one commit).
    pub commits: u64,
    /// Sequence number of the first commit.
    pub first_seq: u64,
    /// Sequence number of the final commit, the one with the root node: the log's durable
    /// sequence number after the switch.
    pub last_seq: u64,
    /// Encoded bytes of all commits (each within `persist`'s commit limit).
    pub bytes: u64,
}

/// True when `device` holds a log with a store image (read-only probe: nothing is written).
/// A blank or unformatted device answers false.
pub fn device_holds_store<D: BlockDevice>(device: &mut D, config: LogConfig) -> bool {
    match Log::open_read_only(device, config, false) {
        Ok((log, _)) => crate::store_engine::StoreEngine::log_has_image(&log),
        Err(_) => false,
    }
}

impl<P, E, D> Server<P, E, SwitchableJournal<D>>
where
    P: Platform,
    E: Engine<Changes = StoreChanges>,
    D: BlockDevice,
{
    /// Switches this (volatile) server onto a log on `device` (see the module doc): formats
    /// the device, writes the whole state as one or more commits (the root node in the last),
    /// syncs once, then persists every request before its reply. On `Err` nothing changed in
    /// the server and the device is dropped.
    pub fn switch_to_log(
        &mut self,
        device: D,
        config: LogConfig,
    ) -> Result<SwitchReport, SwitchError> {
        match self.journal() {
            SwitchableJournal::Logged(_) => return Err(SwitchError::AlreadyLogged),
            SwitchableJournal::Disabled => return Err(SwitchError::PersistenceNone),
            SwitchableJournal::Volatile => {}
        }
        let store = self.engine().store().ok_or(SwitchError::NoStore)?;
        let mut body = image_mutations_of(store);
        let root = split_off_root(&mut body);
        let (connections, server_state) = self.persisted_state();
        let connection_count = connections.len();
        let cause = Cause {
            request_type: u32::MAX,
            path: Some(String::from("/")),
            timestamp: self.platform().now_ns(),
            ..Cause::default()
        };
        // The final commit: the root node, the server blob and every connection blob that
        // fits beside them (in practice all); the others go into the commits before it.
        let server = Mutation::PutBlob {
            key: String::from(SERVER_KEY),
            value: server_state,
        };
        let blobs = connections
            .into_iter()
            .filter_map(|(id, blob)| {
                blob.map(|value| Mutation::PutBlob {
                    key: connection_key(id),
                    value,
                })
            })
            .collect();
        let (last, spilled) = final_commit(&cause, blobs, alloc::vec![server, root]);
        body.extend(spilled);
        let mutation_count = body.len() + last.len();
        let mut log = Log::create(device, config).map_err(SwitchError::Format)?;
        let appended =
            append_in_commits(&mut log, &cause, body, last).map_err(SwitchError::Commit)?;
        let durable = log.sync().map_err(SwitchError::Commit)?;
        assert_eq!(
            durable, appended.last_seq,
            "the switch's commits are all durable"
        );
        assert!(
            StoreEngine::log_has_image(&log),
            "the final commit has the root"
        );
        *self.journal_mut() = SwitchableJournal::Logged(LogJournal::new(log));
        self.state_persisted();
        self.log_event(
            crate::Category::Persist,
            crate::Level::Info,
            format_args!(
                "switched onto the log: commits {}..={} ({} commits, {} bytes) hold the store \
                 and {connection_count} ring connections; every request is persisted from now on",
                appended.first_seq, appended.last_seq, appended.commits, appended.bytes
            ),
        );
        Ok(SwitchReport {
            mutations: mutation_count,
            connections: connection_count,
            commits: appended.commits,
            first_seq: appended.first_seq,
            last_seq: appended.last_seq,
            bytes: appended.bytes,
        })
    }
}
