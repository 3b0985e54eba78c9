//! The connection table: ring connections (introduced domains) and socket connections (hosted
//! daemon clients), each with its partial input packet, its output queue and its transport
//! state, plus the persisted form of a ring connection ([`ConnectionSnapshot`]).
//!
//! Ring connections keep two consumer indices: `shadow_cons`, the next request byte the server
//! will read, and `published_cons`, the `req_cons` value the guest sees. The server publishes
//! `shadow_cons` only after the commit covering those bytes is durable, so a crash never loses
//! request bytes the guest believes consumed (see `docs/ARCHITECTURE.md`, recovery).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use xenstore_protocol::Domid;

use crate::output::OutputQueue;
use crate::platform::RingLocation;
use xenstore_protocol::assembler::Assembler;

/// Server-wide connection identifier; never reused within one log's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnectionId(pub u32);

/// Why a connection stopped being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broken {
    /// Framing violation (payload over 4096): ring `error` = PROTO, socket closed.
    Protocol,
    /// Inconsistent ring indices: ring `error` = RINGIDX.
    RingIndices,
    /// The persisted state could not be reconciled with the ring after a restart.
    Reconcile,
}

/// Transport-specific state of a ring connection.
#[derive(Debug)]
pub struct RingTransport<M> {
    /// Where the ring is (persisted).
    pub location: RingLocation,
    /// Our bound event channel port.
    pub local_port: u32,
    /// The mapped page.
    pub memory: M,
    /// Next request byte to read.
    pub shadow_cons: u32,
    /// `req_cons` as last published to the guest.
    pub published_cons: u32,
    /// `shadow_cons` as of the last commit that recorded this connection.
    pub persisted_cons: u32,
    /// Indices must be zeroed (INTRODUCE) at the next publish.
    pub reset_pending: bool,
    /// A notification must be sent at the next publish.
    pub notify_pending: bool,
}

/// Transport-specific state of a socket connection.
#[derive(Debug, Default)]
pub struct SocketTransport {
    /// Bytes received and not yet reassembled.
    pub input: VecDeque<u8>,
    /// The peer hung up (or we decided to close): remove at the next step.
    pub closed: bool,
}

/// The transport of a connection.
#[derive(Debug)]
pub enum Transport<M> {
    /// A shared ring with an event channel.
    Ring(RingTransport<M>),
    /// A byte stream fed by the platform.
    Socket(SocketTransport),
}

/// One client connection.
#[derive(Debug)]
pub struct Connection<M> {
    /// Its id.
    pub id: ConnectionId,
    /// Its domain.
    pub domid: Domid,
    /// True for dom0 / socket clients.
    pub privileged: bool,
    /// Ring or socket.
    pub transport: Transport<M>,
    /// Partial input packet.
    pub assembler: Assembler,
    /// Untransmitted replies and events.
    pub output: OutputQueue,
    /// Set when the connection is no longer served.
    pub broken: Option<Broken>,
    /// Replies queued beyond which input is not read (the `outstanding` quota).
    pub outstanding_max: usize,
    /// Watch events dropped because the queue was full.
    pub events_dropped: u64,
    /// Requests served.
    pub requests: u64,
}

impl<M> Connection<M> {
    /// The ring transport, if this is a ring connection.
    pub fn ring(&self) -> Option<&RingTransport<M>> {
        match &self.transport {
            Transport::Ring(ring) => Some(ring),
            Transport::Socket(_) => None,
        }
    }

    /// True when the connection is persisted (ring connections; sockets die with the process).
    pub fn is_durable(&self) -> bool {
        matches!(self.transport, Transport::Ring(_))
    }

    /// The persisted form (ring connections only).
    pub fn snapshot(&self) -> Option<ConnectionSnapshot> {
        let ring = self.ring()?;
        Some(ConnectionSnapshot {
            id: self.id,
            domid: self.domid,
            privileged: self.privileged,
            location: ring.location,
            req_cons: ring.shadow_cons,
            // The reset is published right after the sync of the commit that carries this
            // snapshot, so the durable state records it as done: re-doing it at recovery
            // would zero the indices under a guest that already wrote new requests. (A crash
            // in the window between that sync and the publish leaves the old indices, which
            // recovery's reconciliation then judges like any others.)
            reset_pending: false,
            assembler: self.assembler.clone(),
            output: self.output.clone(),
            broken: self.broken,
            outstanding_max: self.outstanding_max as u32,
            engine_state: Vec::new(),
        })
    }
}

/// Persisted state of a ring connection (postcard-encoded into the log as a named blob).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSnapshot {
    /// Its id.
    pub id: ConnectionId,
    /// Its domain.
    pub domid: Domid,
    /// Privileged domain?
    pub privileged: bool,
    /// The ring location (re-mapped on recovery).
    pub location: RingLocation,
    /// Request bytes consumed and applied (the `req_cons` to publish).
    pub req_cons: u32,
    /// INTRODUCE asked for an index reset that may not have been published.
    pub reset_pending: bool,
    /// Partial packet.
    pub assembler: Assembler,
    /// Untransmitted output with its stream position.
    pub output: OutputQueue,
    /// Broken?
    pub broken: Option<Broken>,
    /// Outstanding limit.
    pub outstanding_max: u32,
    /// The engine's own persisted state of this connection (the store's `ConnectionRecord`:
    /// watches, next / highest transaction id), postcard; filled in by the server.
    pub engine_state: Vec<u8>,
}

impl ConnectionSnapshot {
    /// Checks the invariants of a snapshot read back from the log.
    pub fn is_consistent(&self) -> bool {
        self.assembler.check().is_ok()
            && self.output.is_consistent()
            && self.location.domid == self.domid
    }
}

/// State of the server itself that is persisted with every commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    /// Next connection id to hand out.
    pub next_connection_id: u32,
    /// Log level, categories and trace switches.
    pub debug: crate::debug::DebugSettings,
}

/// All connections, in id order (round-robin polls them in this order).
#[derive(Debug)]
pub struct ConnectionTable<M> {
    connections: BTreeMap<ConnectionId, Connection<M>>,
    by_domid: BTreeMap<Domid, ConnectionId>,
}

impl<M> Default for ConnectionTable<M> {
    fn default() -> Self {
        ConnectionTable {
            connections: BTreeMap::new(),
            by_domid: BTreeMap::new(),
        }
    }
}

impl<M> ConnectionTable<M> {
    /// Number of connections.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Adds a connection; ring connections are indexed by domid (one per domain).
    pub fn insert(&mut self, connection: Connection<M>) {
        if connection.ring().is_some() {
            let previous = self.by_domid.insert(connection.domid, connection.id);
            assert!(previous.is_none(), "two ring connections for one domain");
        }
        let previous = self.connections.insert(connection.id, connection);
        assert!(previous.is_none(), "connection id reused");
    }

    /// Removes a connection.
    pub fn remove(&mut self, id: ConnectionId) -> Option<Connection<M>> {
        let connection = self.connections.remove(&id)?;
        if connection.ring().is_some() {
            self.by_domid.remove(&connection.domid);
        }
        Some(connection)
    }

    /// Looks a connection up.
    pub fn get(&self, id: ConnectionId) -> Option<&Connection<M>> {
        self.connections.get(&id)
    }

    /// Looks a connection up for change.
    pub fn get_mut(&mut self, id: ConnectionId) -> Option<&mut Connection<M>> {
        self.connections.get_mut(&id)
    }

    /// The ring connection of a domain.
    pub fn by_domid(&self, domid: Domid) -> Option<ConnectionId> {
        self.by_domid.get(&domid).copied()
    }

    /// The ring connection bound to a local event channel port.
    pub fn by_local_port(&self, port: u32) -> Option<ConnectionId> {
        self.connections
            .values()
            .find(|connection| {
                connection
                    .ring()
                    .is_some_and(|ring| ring.local_port == port)
            })
            .map(|connection| connection.id)
    }

    /// Ids in round-robin order starting after `after` (wrapping).
    pub fn round_robin_from(&self, after: Option<ConnectionId>) -> Vec<ConnectionId> {
        let mut ids: Vec<ConnectionId> = Vec::with_capacity(self.connections.len());
        match after {
            Some(after) => {
                ids.extend(
                    self.connections
                        .range((
                            core::ops::Bound::Excluded(after),
                            core::ops::Bound::Unbounded,
                        ))
                        .map(|(id, _)| *id),
                );
                ids.extend(self.connections.range(..=after).map(|(id, _)| *id));
            }
            None => ids.extend(self.connections.keys().copied()),
        }
        ids
    }

    /// Iterates over all connections.
    pub fn iter(&self) -> impl Iterator<Item = &Connection<M>> {
        self.connections.values()
    }

    /// Iterates over all connections for change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Connection<M>> {
        self.connections.values_mut()
    }
}
