//! Every bound the server core enforces on its own behalf, in one place.
//!
//! Quotas that are part of Xenstore semantics (nodes per domain, watches, …) belong to the
//! store; the numbers here bound the server's own work and memory per connection and per step,
//! so that one busy or hostile peer can neither starve the others nor exhaust memory.

/// Requests taken from one connection in one [`crate::Server::step`] before the poller moves on
/// to the next connection (round-robin fairness).
pub const REQUESTS_PER_CONNECTION_PER_STEP_MAX: usize = 8;

/// Default `outstanding` quota: replies a connection may have queued but not yet transmitted
/// before the server stops reading its input (C xenstored's default is 20).
pub const OUTSTANDING_REQUESTS_DEFAULT: usize = 20;

/// Outstanding limit for privileged (socket / dom0) connections: large, but still bounded.
pub const OUTSTANDING_REQUESTS_PRIVILEGED_MAX: usize = 1024;

/// Bytes of socket input the server buffers per connection; the platform must not feed more
/// (see [`crate::Server::socket_input_room`]).
pub const SOCKET_INPUT_BUFFER_MAX_BYTES: usize = 64 * 1024;

/// Watch events queued per connection; further events are dropped with a warning (the
/// watcher is already far behind; C xenstored bounds this through its memory quota).
pub const WATCH_EVENTS_QUEUED_MAX: usize = 4096;

/// Bytes of watch events queued per connection; further events are dropped with a warning.
/// Bounds the connection's persisted state blob well below the log's blob limit
/// (`xenstore_persist::limits::BLOB_LEN_MAX_BYTES`, 512 KiB) together with at most
/// `outstanding` replies of at most 4112 bytes each.
pub const WATCH_EVENT_BYTES_QUEUED_MAX: usize = 128 * 1024;

/// Connection-state bytes one commit carries at most before the server moves other
/// connections' blobs into commits of their own (the log limits a commit record to 1 MiB,
/// `xenstore_persist::limits::RECORD_PAYLOAD_MAX_BYTES`).
pub const COMMIT_CONNECTION_BYTES_MAX: usize = 384 * 1024;

/// Connections the table holds at most (rings + sockets).
pub const CONNECTIONS_MAX: usize = 65536;

/// Largest connection-state blob accepted when recovering (a queue of many full frames).
pub const CONNECTION_STATE_MAX_BYTES: usize = 64 * 1024 * 1024;
