//! The shared ring page as the server core sees it: everything comes from the `protocol`
//! crate's ring module (one ring type for every shared ring: [`RingMemory`], [`ServerRing`],
//! [`GuestRing`], [`InMemoryPage`], the consistency predicate), re-exported here for the
//! platforms (`kernel/`, `hosted/`) and tests. Crash-resilient mode reads ahead of the
//! published `req_cons` with [`ServerRing::peek_requests`] and publishes it with
//! [`ServerRing::publish_request_consumer`] once the commit covering the bytes is durable.

pub use xenstore_protocol::ring::{
    DataArea, ERROR_COMM, ERROR_PROTO, ERROR_RINGIDX, FEATURE_DOMID_ANY, FEATURE_ERROR,
    FEATURE_WATCHDEPTH, Field, GuestRing, InMemoryPage, RingError, RingMemory, ServerRing,
    indices_are_consistent,
};

/// Server feature bits advertised in `server_features`: ERROR | WATCHDEPTH | DOMID_ANY (as C).
pub const SERVER_FEATURES: u32 = FEATURE_ERROR | FEATURE_WATCHDEPTH | FEATURE_DOMID_ANY;
