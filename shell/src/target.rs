//! What the shell needs from the server: read-only views of the state plus the few controls
//! (log switches, tracing, restart). The server core implements [`ShellTarget`].

use alloc::string::String;
use alloc::vec::Vec;

/// A node as the shell shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The value (raw bytes).
    pub value: Vec<u8>,
    /// Permissions in the human form `b0 r5`.
    pub permissions: String,
    /// Generation count.
    pub generation: u64,
}

/// The ring of a domain connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingView {
    /// Request consumer index (ours).
    pub req_cons: u32,
    /// Request producer index (the guest's).
    pub req_prod: u32,
    /// Reply consumer index (the guest's).
    pub rsp_cons: u32,
    /// Reply producer index (ours).
    pub rsp_prod: u32,
    /// Local event channel port.
    pub local_port: u32,
    /// Ring error field.
    pub error: u32,
}

/// One connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    /// Server connection id.
    pub id: u32,
    /// Domain of the connection.
    pub domid: u16,
    /// `socket`, `ring`, …
    pub kind: String,
    /// Ring indices when it is a ring connection.
    pub ring: Option<RingView>,
    /// Requests read whose replies have not been consumed.
    pub outstanding: u32,
    /// Bytes of replies and events queued but not yet written.
    pub queued_output_bytes: u32,
    /// Nodes owned by the connection's domain.
    pub nodes: u32,
    /// Watches registered.
    pub watches: u32,
    /// Transactions open.
    pub transactions: u32,
    /// Memory charged to the domain (bytes).
    pub memory_bytes: u64,
}

/// One watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchView {
    /// Connection that registered it.
    pub connection: u32,
    /// Its domain.
    pub domid: u16,
    /// The path as registered.
    pub path: String,
    /// The token (printable form).
    pub token: String,
    /// Depth limit, if any.
    pub depth: Option<u32>,
}

/// One open transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionView {
    /// Connection that owns it.
    pub connection: u32,
    /// Its domain.
    pub domid: u16,
    /// Transaction id.
    pub id: u32,
    /// Distinct nodes accessed so far.
    pub nodes_accessed: u32,
}

/// Server statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatisticsView {
    /// Seconds the server has been up.
    pub uptime_seconds: u64,
    /// Requests handled, per message type name, in any order.
    pub requests_by_type: Vec<(String, u64)>,
    /// Total requests handled.
    pub requests_total: u64,
    /// Commits made durable.
    pub commits: u64,
    /// Mean latency from append to durable, in microseconds (0 without persistence).
    pub commit_latency_mean_us: u64,
    /// Worst such latency, in microseconds.
    pub commit_latency_max_us: u64,
    /// Bytes of log in use (0 without persistence).
    pub log_bytes: u64,
    /// Persistence mode name.
    pub persistence: String,
    /// Nodes in the store.
    pub nodes: u64,
}

/// One commit from the log's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitView {
    /// Commit sequence number.
    pub seq: u64,
    /// Server timestamp (ns since boot).
    pub timestamp_ns: u64,
    /// Connection and domain that caused it.
    pub connection: u64,
    /// Domain that caused it.
    pub domid: u16,
    /// Request type name.
    pub request: String,
    /// Path the request named.
    pub path: String,
    /// The path's value after the commit (`None`: absent).
    pub value_after: Option<Vec<u8>>,
}

/// Differences between two commits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffView {
    /// Paths that appeared.
    pub added: Vec<String>,
    /// Paths that disappeared.
    pub removed: Vec<String>,
    /// Paths whose value, permissions or generation changed.
    pub changed: Vec<String>,
}

/// What `trace` applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceTarget {
    /// Every connection.
    All,
    /// Connections of one domain.
    Domain(u16),
}

/// Why the target could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// The server runs without persistence, so there is no history.
    NoHistory,
    /// The commit is outside the history window.
    UnknownCommit(u64),
    /// The log could not be read; the text says why.
    Log(String),
    /// Unknown log category or level.
    UnknownLogSetting(String),
}

/// The server as the shell sees it.
pub trait ShellTarget {
    /// A node, if it exists.
    fn node(&self, path: &str) -> Option<NodeView>;
    /// Child names of a node (sorted), if it exists.
    fn children(&self, path: &str) -> Option<Vec<String>>;
    /// Every connection.
    fn connections(&self) -> Vec<ConnectionView>;
    /// Every watch.
    fn watches(&self) -> Vec<WatchView>;
    /// Every open transaction.
    fn transactions(&self) -> Vec<TransactionView>;
    /// Statistics.
    fn statistics(&self) -> StatisticsView;
    /// Commits that touched `path` or its subtree, oldest first, at most `limit` newest ones.
    fn history(&mut self, path: &str, limit: usize) -> Result<Vec<CommitView>, TargetError>;
    /// Differences between two commits.
    fn diff(&mut self, from: u64, to: u64) -> Result<DiffView, TargetError>;
    /// Current log settings, one `name=value` per entry.
    fn log_settings(&self) -> Vec<(String, String)>;
    /// Sets the log level (`error`…`trace`) or switches a category (`name`, on/off).
    fn set_log(&mut self, name: &str, value: &str) -> Result<(), TargetError>;
    /// Switches the decoded request/reply trace.
    fn set_trace(&mut self, target: TraceTarget, on: bool);
    /// Asks for a controlled warm restart after the current step.
    fn request_restart(&mut self) -> Result<(), TargetError>;
}
