//! Xenstore semantics as a pure, deterministic state machine: nodes, permissions,
//! transactions, watches, domains, quotas and CONTROL, over the `protocol` crate's types.
//!
//! Contract:
//! - `no_std` + `alloc`, `#![forbid(unsafe_code)]`, no I/O, no clocks, no randomness: the same
//!   calls in the same order give the same outcomes, byte for byte (all maps are `BTreeMap`s).
//! - Semantics follow C xenstored (xen.git `tools/xenstored/{core,transaction,watch,domain,
//!   control}.c`, checked against c447b730), including its errno choices; deliberate
//!   differences are listed under "Differences" below.
//! - Every call that changes state returns a [`ChangeSet`] describing the change completely;
//!   the server persists it before sending the reply or any event. `Store::rebuild(store.export())
//!   == store` for a store without open transactions, and applying the change sets of a run to
//!   the image taken before it gives the image taken after it ([`StoreImage::apply`]).
//!
//! # API for the server core
//!
//! ```text
//! Store::new(Config { privileged_domid, store_domid, quotas })
//! add_connection(id, ConnectionKind::Socket | Ring, domid) -> ChangeSet
//! remove_connection(id) -> ChangeSet                      socket closed
//! precheck(id, MessageType, tx_id) -> Result<(), Errno>   EACCES / ENOENT / EAGAIN before parsing
//! handle(id, tx_id, &Request) -> Outcome { reply, events, changes, effects }
//! introduce_domain(Introduction { domid, connection, gfn, evtchn }) -> Outcome
//! domain_states(&[DomainState { domid, shutdown, dead }]) -> Outcome   after VIRQ_DOM_EXC
//! export() -> StoreImage;  rebuild(StoreImage) -> Store;  recover(StoreImage) -> (Store, ChangeSet)
//! inspection: node, children, connections, connection, domains, quota_usage, memory_usage,
//!             memory_state, quota, caller, check, statistics
//! ```
//!
//! - Connection ids are chosen by the server. A connection's features are those of its
//!   domain (SET_FEATURE before INTRODUCE; default ERROR | WATCHDEPTH | DOMID_ANY); sockets
//!   have all of them and are privileged, as in C.
//! - [`Reply::Payload`] is the payload of a reply with the request's type, [`Reply::Error`]
//!   an `XS_ERROR`, [`Reply::Deferred`] only for INTRODUCE (see below), [`Reply::None`] for
//!   platform notifications. Read-only requests return an empty [`ChangeSet`].
//! - Events are in delivery order, after the reply (WATCH's initial event included). An
//!   event whose payload exceeds 4096 bytes is dropped by the server, as C does.
//! - Flow control stays in the server: [`Store::memory_state`] (hard/soft memory quota) and
//!   [`Store::quota`] for `outstanding`.
//!
//! # Platform steps (INTRODUCE / RELEASE / domain death)
//!
//! INTRODUCE is two-phase so that a failing platform step leaves the store untouched:
//! `handle(Introduce)` only validates (privilege, domid, port) and answers
//! [`Reply::Deferred`] with [`Effect::Introduce`]. The server maps the ring and binds the
//! event channel; on success it calls [`Store::introduce_domain`], whose outcome carries the
//! `OK` reply, the domain/connection records, the `@introduceDomain` events and
//! [`Effect::ResetConnection`]; on failure it answers the request with the errno itself.
//! RELEASE and domain death cannot fail in the store: the store removes the connection,
//! the domain's nodes and permission entries, fires `@releaseDomain`, and returns
//! [`Effect::ReleaseDomain`] for the server to unbind and unmap.
//!
//! # Restart
//!
//! Open transactions are not persisted. [`Store::recover`] rebuilds from the newest image and
//! sets, per connection, `aborted_up_to` = the highest transaction id handed out; a request
//! naming an id that is not open and not above that mark gets `EAGAIN` (upstream would say
//! `ENOENT` for an unknown id; `EAGAIN` makes clients retry the transaction, which is what
//! they must do). Ids keep counting from the persisted `next_transaction_id`.
//!
//! # Differences from C xenstored
//!
//! - Transaction conflicts are finer (see [`transaction`]); never less serializable.
//! - DIRECTORY lists children in byte order (C: creation order).
//! - Permission entries naming domains that do not exist are not marked ignored at SET_PERMS
//!   time (the store cannot ask the hypervisor); instead a domain's entries are removed from
//!   every node when it dies or is released, as C does for known domains.
//! - GET_FEATURE / GET_QUOTA for a domain the store has never heard of answer the defaults
//!   instead of asking the hypervisor; SET_FEATURE / SET_QUOTA create the domain entry.
//! - Memory accounting is approximate ([`node::Node::memory_bytes`],
//!   [`store::WATCH_OVERHEAD_BYTES`]); transactions and output queues are not charged. As in
//!   C, a WRITE / MKDIR / SET_PERMS / WATCH that would take an unprivileged caller to its hard
//!   `memory` quota answers `ENOMEM` (checked for the caller's own nodes only); stalling input
//!   above the quota is the server's job ([`Store::memory_state`]).
//! - Watch events of a committed transaction are fired per replayed operation; identical
//!   events within one outcome are dropped (C drops an event identical to one still queued;
//!   the server applies that rule across outcomes), so a node written twice fires once.
//! - `quota <domid>` shows `outstanding` as 0 (the server owns that account).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod access;
pub mod changes;
mod control;
pub mod image;
pub mod node;
pub mod ops;
pub mod quota;
pub mod store;
pub mod transaction;
pub mod watch;

use serde::{Deserialize, Serialize};

pub use access::Caller;
pub use changes::{Change, ChangeSet, Effect, Outcome, Reply, WatchEvent};
pub use image::{
    Config, ConnectionKind, ConnectionRecord, DomainRecord, LogSettings, RingRecord, StoreImage,
};
pub use node::NodeRecord;
pub use quota::{QuotaKind, QuotaLevel, QuotaSet};
pub use store::{
    Connection, DomainState, Introduction, MemoryState, QuotaUsage, RebuildError, Store,
};

/// A connection as the server numbers it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct ConnectionId(pub u32);
