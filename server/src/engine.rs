//! The seam between the server and the Xenstore state machine (the `store` crate): the server
//! hands each whole request to an [`Engine`] and gets back the reply, the watch events, the
//! change record to persist and any effects on connections.
//!
//! The engine is pure and deterministic: the same requests in the same order give the same
//! outcomes, which is what makes replay-free recovery (rebuild from the newest commit) and
//! seeded simulation possible. The adapter for `xenstore_store::Store` lives in
//! [`crate::store_engine`].

use alloc::vec::Vec;

use xenstore_protocol::{Domid, Header, MessageType};

use crate::connection::ConnectionId;

/// A domain's run state as the platform saw it (shutdown / dead), for
/// [`Engine::domain_states`]: the store's type.
pub use xenstore_store::DomainState;

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The connection.
    pub connection: ConnectionId,
    /// Its domain (socket connections: the privileged domain).
    pub domid: Domid,
    /// True for the privileged domain (dom0 / socket clients).
    pub privileged: bool,
}

/// The reply the engine produced (the server adds `req_id` and `tx_id` from the request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyMessage {
    /// `XS_ERROR` or the request's type.
    pub message_type: MessageType,
    /// The payload, already checked against the 4096-byte limit.
    pub payload: Vec<u8>,
}

impl ReplyMessage {
    /// An `XS_ERROR` reply.
    pub fn error(errno: xenstore_protocol::Errno) -> ReplyMessage {
        ReplyMessage {
            message_type: MessageType::Error,
            payload: errno.payload().collect(),
        }
    }

    /// True when this reply reports success.
    pub fn is_success(&self) -> bool {
        self.message_type != MessageType::Error
    }
}

/// A watch event for one connection (payload `<path>\0<token>\0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMessage {
    /// The watcher.
    pub connection: ConnectionId,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What the server must do to connections as a result of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// INTRODUCE was accepted by the engine: map the ring and bind the event channel, then
    /// call [`Engine::introduce`] (or answer the request with `EINVAL` if that fails). When
    /// the domain already has a connection only the engine call is made.
    Introduce(crate::platform::RingLocation),
    /// The connection must be reset (re-INTRODUCE): drop queues and partial input, zero the
    /// ring indices.
    ResetConnection(ConnectionId),
    /// The domain's connection must be closed (RELEASE, domain death).
    CloseDomain(Domid),
    /// A line for the console / log (CONTROL `print`, `memreport`).
    Print(alloc::string::String),
}

/// Everything one request produced.
#[derive(Debug)]
pub struct Outcome<C> {
    /// The reply (`None` only for requests that produce none).
    pub reply: Option<ReplyMessage>,
    /// Watch events, in order.
    pub events: Vec<EventMessage>,
    /// The change record to persist (empty when nothing changed).
    pub changes: C,
    /// Connection effects.
    pub effects: Vec<Effect>,
}

/// A Xenstore state machine.
pub trait Engine {
    /// The persisted change record of one request.
    type Changes;

    /// Registers a new socket connection before its first request.
    fn connect(&mut self, caller: &Caller) -> Self::Changes;

    /// Second phase of INTRODUCE, after the platform mapped the ring (`connection` is the
    /// new or existing ring connection). The outcome carries the reply.
    fn introduce(
        &mut self,
        connection: ConnectionId,
        location: &crate::platform::RingLocation,
        local_port: u32,
    ) -> Outcome<Self::Changes>;

    /// Applies one request.
    fn apply(&mut self, caller: &Caller, header: &Header, payload: &[u8])
    -> Outcome<Self::Changes>;

    /// Forgets a connection: its watches and transactions go. Returns the change record.
    fn disconnect(&mut self, caller: &Caller) -> Outcome<Self::Changes>;

    /// Domain state changes reported by the platform after `VIRQ_DOM_EXC` (C
    /// `do_check_domains`): a first shutdown fires `@releaseDomain`, a dead domain is
    /// destroyed ([`Effect::CloseDomain`], its nodes removed, `@releaseDomain` fired). The
    /// outcome carries no reply. Engines that know no domains change nothing.
    fn domain_states(&mut self, _states: &[DomainState]) -> Outcome<Self::Changes> {
        Outcome {
            reply: None,
            events: Vec::new(),
            changes: Self::empty_changes(),
            effects: Vec::new(),
        }
    }

    /// Concatenates two change records (first, then second).
    fn merge_changes(first: Self::Changes, second: Self::Changes) -> Self::Changes;

    /// An empty change record (for commits of connection state alone).
    fn empty_changes() -> Self::Changes;

    /// True when a change record holds nothing to persist.
    fn is_empty(changes: &Self::Changes) -> bool;

    /// Connections whose engine-side persisted state (watches, transaction ids) this change
    /// record modified; the server rewrites their connection blobs in the same commit.
    fn changed_connections(_changes: &Self::Changes) -> Vec<ConnectionId> {
        Vec::new()
    }

    /// The engine's persisted state of one connection (embedded in the connection's blob so
    /// that one blob holds everything about a connection). Empty when the engine keeps none.
    fn connection_state(&self, _connection: ConnectionId) -> Vec<u8> {
        Vec::new()
    }

    /// The node path a change record is mostly about (the first node written or removed),
    /// for commit causes of requests that name none themselves (TRANSACTION_END).
    fn primary_path(_changes: &Self::Changes) -> Option<alloc::string::String> {
        None
    }

    /// The Xenstore store behind this engine, for the debug views (`None` for test engines).
    fn store(&self) -> Option<&xenstore_store::Store> {
        None
    }

    /// Message type of a header, as the engine sees it.
    fn message_type(header: &Header) -> MessageType {
        header.message_type
    }
}
