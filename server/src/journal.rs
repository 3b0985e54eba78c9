//! The seam between the server and durable storage (the `persist` crate's object log).
//!
//! Contract the server relies on: [`Journal::append`] records one commit (the store changes of
//! one request plus the new state of every connection that request touched); nothing appended
//! is durable until [`Journal::sync`] returns `Ok`. The server calls `sync` once per step (group
//! commit) and transmits nothing produced by the step before it returns.
//!
//! `NoJournal` is persistence mode `none`: nothing is recorded and the server skips building
//! connection-state blobs entirely.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use xenstore_protocol::{Domid, MessageType};

use xenstore_shell::{CommitView, DiffView, TargetError};

use crate::connection::ConnectionId;

/// Why a commit exists (for the log's history view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCause {
    /// The connection whose request (or input) caused the commit.
    pub connection: ConnectionId,
    /// Its domain.
    pub domid: Domid,
    /// The request type, `None` for commits of connection state alone (partial packets,
    /// connection set-up and tear-down).
    pub message_type: Option<MessageType>,
    /// The request's id.
    pub req_id: u32,
    /// The request's transaction id.
    pub tx_id: u32,
    /// The request's path argument, if any.
    pub path: Option<String>,
    /// Platform clock when the request was applied (ns).
    pub timestamp_ns: u64,
}

impl CommitCause {
    /// The cause of a commit that no request caused (connection set-up and tear-down, partial
    /// packets, platform-discovered domains): no request id, transaction or path.
    pub fn internal(
        connection: ConnectionId,
        domid: Domid,
        message_type: Option<MessageType>,
        timestamp_ns: u64,
    ) -> CommitCause {
        CommitCause {
            connection,
            domid,
            message_type,
            req_id: 0,
            tx_id: 0,
            path: None,
            timestamp_ns,
        }
    }
}

/// New state of one connection in a commit: `Some(blob)` to store, `None` to delete.
pub type ConnectionUpdate = (ConnectionId, Option<Vec<u8>>);

/// A durable log of commits.
pub trait Journal<C> {
    /// Device or log failure. Policy: fatal for the server (nothing after it may be
    /// transmitted); the platform restarts and recovers from the last durable commit.
    type Error: fmt::Debug + fmt::Display;

    /// False for mode `none`: the server then skips appends and syncs altogether.
    fn is_enabled(&self) -> bool;

    /// Records one commit: store changes, connection updates and the server's own state.
    fn append(
        &mut self,
        cause: &CommitCause,
        changes: C,
        connections: &[ConnectionUpdate],
        server_state: &[u8],
    ) -> Result<(), Self::Error>;

    /// Makes every earlier append durable.
    fn sync(&mut self) -> Result<(), Self::Error>;

    /// Persistence mode name for debug views.
    fn mode_name(&self) -> &'static str {
        if self.is_enabled() {
            "crash-resilient"
        } else {
            "none"
        }
    }

    /// Bytes of log in use (0 without persistence).
    fn log_bytes(&self) -> u64 {
        0
    }

    /// Commits that touched `path` or its subtree, oldest first, at most `limit` newest ones
    /// (the debug shell's `history`).
    fn history(&mut self, _path: &str, _limit: usize) -> Result<Vec<CommitView>, TargetError> {
        Err(TargetError::NoHistory)
    }

    /// Differences between the states after two commits (the debug shell's `diff`).
    fn diff(&mut self, _from: u64, _to: u64) -> Result<DiffView, TargetError> {
        Err(TargetError::NoHistory)
    }
}

/// Persistence mode `none`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoJournal;

/// `NoJournal` never fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeverFails {}

impl fmt::Display for NeverFails {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl<C> Journal<C> for NoJournal {
    type Error = NeverFails;
    fn is_enabled(&self) -> bool {
        false
    }
    fn append(
        &mut self,
        _: &CommitCause,
        _: C,
        _: &[ConnectionUpdate],
        _: &[u8],
    ) -> Result<(), NeverFails> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), NeverFails> {
        Ok(())
    }
}
