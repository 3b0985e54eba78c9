//! Debugging hooks of the server core (issue 11, parts 1-3): log level and category switches,
//! the per-domain request/reply trace, statistics, and the debug shell's [`ShellTarget`]
//! implementation shared by the unikernel console, the hosted daemon's stdin / debug socket
//! and XS_CONTROL.
//!
//! The settings ([`DebugSettings`]) are persisted with the server's own state, so a level or a
//! trace switched on before a crash is still on after recovery.
//!
//! The trace is one line per request through the platform's [`crate::LogSink`] at
//! [`Level::Trace`]:
//!
//! ```text
//! t=12.000345678 conn=3 dom=0 WRITE tx=0 req=7 path=/a/b -> OK
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use xenstore_protocol::{Domid, MessageType};
use xenstore_shell::{
    CommitView, ConnectionView, DiffView, NodeView, RingView, ShellTarget, StatisticsView,
    TargetError, TraceTarget, TransactionView, WatchView,
};
use xenstore_store::QuotaKind;

use crate::connection::Transport;
use crate::engine::Engine;
use crate::journal::Journal;
use crate::platform::{Level, Platform};
use crate::ring::{Field, RingMemory};
use crate::server::Server;

/// Log categories that can be switched on and off (`log CATEGORY on|off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// Connections: introduce, release, close, broken peers.
    Connection,
    /// Ring index problems and notifications.
    Ring,
    /// Commits and syncs.
    Persist,
    /// Recovery after a restart.
    Recovery,
    /// CONTROL `print` / `memreport` output.
    Control,
}

impl Category {
    /// Every category with its shell name.
    pub const ALL: [(Category, &'static str); 5] = [
        (Category::Connection, "conn"),
        (Category::Ring, "ring"),
        (Category::Persist, "persist"),
        (Category::Recovery, "recovery"),
        (Category::Control, "control"),
    ];

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Level names as the shell spells them.
const LEVELS: [(Level, &str); 4] = [
    (Level::Error, "error"),
    (Level::Warn, "warn"),
    (Level::Info, "info"),
    (Level::Trace, "trace"),
];

/// Log level, categories and trace switches (persisted with the server state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugSettings {
    /// Most verbose level written (index into error, warn, info, trace).
    pub level: u8,
    /// Enabled categories (bit = [`Category`] discriminant).
    pub categories: u32,
    /// Trace every connection.
    pub trace_all: bool,
    /// Trace these domains.
    pub trace_domids: Vec<u16>,
}

impl Default for DebugSettings {
    fn default() -> DebugSettings {
        DebugSettings {
            level: 2,
            categories: u32::MAX,
            trace_all: false,
            trace_domids: Vec::new(),
        }
    }
}

impl DebugSettings {
    /// True when a line of this level and category is written.
    pub fn enabled(&self, category: Category, level: Level) -> bool {
        (level as u8) <= self.level && self.categories & category.bit() != 0
    }

    /// True when requests of this domain are traced.
    pub fn traces(&self, domid: Domid) -> bool {
        self.trace_all || self.trace_domids.contains(&domid.0)
    }

    /// Switches the trace.
    pub fn set_trace(&mut self, target: TraceTarget, on: bool) {
        match target {
            TraceTarget::All => {
                self.trace_all = on;
                if !on {
                    self.trace_domids.clear();
                }
            }
            TraceTarget::Domain(domid) => {
                self.trace_domids.retain(|traced| *traced != domid);
                if on {
                    self.trace_domids.push(domid);
                    self.trace_domids.sort_unstable();
                }
            }
        }
    }

    /// `log LEVEL` or `log CATEGORY on|off`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), TargetError> {
        if value.is_empty() {
            let (level, _) = LEVELS
                .iter()
                .find(|(_, level_name)| *level_name == name)
                .ok_or_else(|| TargetError::UnknownLogSetting(String::from(name)))?;
            self.level = *level as u8;
            return Ok(());
        }
        let (category, _) = Category::ALL
            .iter()
            .find(|(_, category_name)| *category_name == name)
            .ok_or_else(|| TargetError::UnknownLogSetting(String::from(name)))?;
        match value {
            "on" => self.categories |= category.bit(),
            "off" => self.categories &= !category.bit(),
            _ => return Err(TargetError::UnknownLogSetting(String::from(value))),
        }
        Ok(())
    }

    /// `name=value` lines for `log`.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        let level = LEVELS
            .iter()
            .find(|(level, _)| *level as u8 == self.level)
            .map_or("?", |(_, name)| name);
        lines.push((String::from("level"), String::from(level)));
        for (category, name) in Category::ALL {
            let on = self.categories & category.bit() != 0;
            lines.push((
                String::from(name),
                String::from(if on { "on" } else { "off" }),
            ));
        }
        let trace = if self.trace_all {
            String::from("all")
        } else if self.trace_domids.is_empty() {
            String::from("off")
        } else {
            let domids: Vec<String> = self
                .trace_domids
                .iter()
                .map(|domid| format!("{domid}"))
                .collect();
            domids.join(",")
        };
        lines.push((String::from("trace"), trace));
        lines
    }
}

/// Running totals for `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests per message type number (unknown types in the last slot).
    pub requests_by_type: [u64; 32],
    /// Syncs measured.
    pub syncs: u64,
    /// Sum of append-to-durable latencies (ns).
    pub commit_latency_total_ns: u64,
    /// Worst append-to-durable latency (ns).
    pub commit_latency_max_ns: u64,
}

impl Counters {
    /// Counts one request.
    pub fn count(&mut self, message_type: MessageType) {
        let index = (message_type.as_u32() as usize).min(self.requests_by_type.len() - 1);
        self.requests_by_type[index] += 1;
    }

    /// Records one group commit's latency.
    pub fn commit_latency(&mut self, nanoseconds: u64) {
        self.syncs += 1;
        self.commit_latency_total_ns = self.commit_latency_total_ns.saturating_add(nanoseconds);
        self.commit_latency_max_ns = self.commit_latency_max_ns.max(nanoseconds);
    }
}

/// Shell commands answered through XS_CONTROL: the read-only ones (a dom0 tool must not
/// change the server's logging behind the console's back; `log` stays the store's
/// upstream-compatible command) ...
pub const CONTROL_SHELL_COMMANDS: [&str; 8] = [
    "ls", "read", "conns", "watches", "txns", "stats", "history", "diff",
];

/// ... and the crash-testing actions, so the lab can drive them from dom0 with the
/// unmodified `xenstore-control`: `restart` (controlled warm restart after the step) and
/// `inject-crash` (see [`crate::inject`]). Like every XS_CONTROL shell command, only
/// privileged callers reach them; the request that asks is answered normally first.
pub const CONTROL_PRIVILEGED_ACTIONS: [&str; 2] = ["restart", "inject-crash"];

fn permissions_text(permissions: &xenstore_protocol::Permissions) -> String {
    let entries: Vec<String> = permissions
        .entries()
        .iter()
        .map(|entry| format!("{entry}"))
        .collect();
    entries.join(" ")
}

fn printable_token(token: &[u8]) -> String {
    xenstore_shell::commands::printable(token, 64)
}

impl<P: Platform, E: Engine, J: Journal<E::Changes>> ShellTarget for Server<P, E, J> {
    fn node(&self, path: &str) -> Option<NodeView> {
        let record = self.engine().store()?.node(path)?;
        Some(NodeView {
            value: record.value.clone(),
            permissions: permissions_text(&record.permissions),
            generation: record.generation,
        })
    }

    fn children(&self, path: &str) -> Option<Vec<String>> {
        self.engine().store()?.children(path)
    }

    fn connections(&self) -> Vec<ConnectionView> {
        let store = self.engine().store();
        let mut views = Vec::new();
        for connection in self.connections().iter() {
            let ring = match &connection.transport {
                Transport::Ring(ring) => Some(RingView {
                    req_cons: ring.published_cons,
                    req_prod: ring.memory.load_acquire(Field::ReqProd),
                    rsp_cons: ring.memory.load_acquire(Field::RspCons),
                    rsp_prod: ring.memory.load_acquire(Field::RspProd),
                    local_port: ring.local_port,
                    error: ring.memory.load_acquire(Field::Error),
                }),
                Transport::Socket(_) => None,
            };
            let store_id = xenstore_store::ConnectionId(connection.id.0);
            let (watches, transactions) = store
                .and_then(|store| store.connection(store_id))
                .map_or((0, 0), |state| {
                    (
                        state.record.watches.len() as u32,
                        state.transactions.len() as u32,
                    )
                });
            let (nodes, memory_bytes) = match store {
                Some(store) => {
                    let usage = store.quota_usage(connection.domid);
                    (
                        usage.current[QuotaKind::Nodes as usize] as u32,
                        store.memory_usage(connection.domid),
                    )
                }
                None => (0, 0),
            };
            views.push(ConnectionView {
                id: connection.id.0,
                domid: connection.domid.0,
                kind: String::from(match (&connection.transport, connection.broken) {
                    (_, Some(_)) => "broken",
                    (Transport::Ring(_), None) => "ring",
                    (Transport::Socket(_), None) => "socket",
                }),
                ring,
                outstanding: connection.output.replies_pending() as u32,
                queued_output_bytes: connection.output.pending_bytes() as u32,
                nodes,
                watches,
                transactions,
                memory_bytes,
            });
        }
        views
    }

    fn watches(&self) -> Vec<WatchView> {
        let Some(store) = self.engine().store() else {
            return Vec::new();
        };
        let mut views = Vec::new();
        for (id, connection) in store.connections() {
            for watch in &connection.record.watches {
                views.push(WatchView {
                    connection: id.0,
                    domid: connection.record.domid.0,
                    path: watch.path.clone(),
                    token: printable_token(&watch.token),
                    depth: watch.depth,
                });
            }
        }
        views
    }

    fn transactions(&self) -> Vec<TransactionView> {
        let Some(store) = self.engine().store() else {
            return Vec::new();
        };
        let mut views = Vec::new();
        for (id, connection) in store.connections() {
            for transaction in connection.transactions.values() {
                views.push(TransactionView {
                    connection: id.0,
                    domid: connection.record.domid.0,
                    id: transaction.id,
                    nodes_accessed: transaction.accessed_nodes,
                });
            }
        }
        views
    }

    fn statistics(&self) -> StatisticsView {
        let counters = self.counters();
        let stats = self.stats();
        let requests_by_type = counters
            .requests_by_type
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(number, count)| {
                (
                    String::from(MessageType::from_u32(number as u32).name()),
                    *count,
                )
            })
            .collect();
        StatisticsView {
            uptime_seconds: self.uptime_ns() / 1_000_000_000,
            requests_by_type,
            requests_total: stats.requests,
            commits: stats.commits,
            commit_latency_mean_us: counters
                .commit_latency_total_ns
                .checked_div(counters.syncs)
                .unwrap_or(0)
                / 1000,
            commit_latency_max_us: counters.commit_latency_max_ns / 1000,
            log_bytes: self.journal().log_bytes(),
            persistence: String::from(self.journal().mode_name()),
            nodes: self
                .engine()
                .store()
                .map_or(0, |store| store.node_count() as u64),
        }
    }

    fn history(&mut self, path: &str, limit: usize) -> Result<Vec<CommitView>, TargetError> {
        self.journal_mut().history(path, limit)
    }

    fn diff(&mut self, from: u64, to: u64) -> Result<DiffView, TargetError> {
        self.journal_mut().diff(from, to)
    }

    fn log_settings(&self) -> Vec<(String, String)> {
        let mut lines = self.debug_settings().describe();
        if let Some(store) = self.engine().store() {
            let settings = store.log_settings();
            lines.push((
                String::from("control-log"),
                String::from(if settings.enabled { "on" } else { "off" }),
            ));
        }
        lines
    }

    fn set_log(&mut self, name: &str, value: &str) -> Result<(), TargetError> {
        let mut settings = self.debug_settings().clone();
        settings.set(name, value)?;
        self.set_debug_settings(settings);
        Ok(())
    }

    fn set_trace(&mut self, target: TraceTarget, on: bool) {
        let mut settings = self.debug_settings().clone();
        settings.set_trace(target, on);
        self.set_debug_settings(settings);
    }

    fn request_restart(&mut self) -> Result<(), TargetError> {
        if !self.journal().is_enabled() {
            return Err(TargetError::Log(String::from(
                "restart needs persistence crash-resilient (nothing to recover from)",
            )));
        }
        self.request_restart_after_step();
        Ok(())
    }
}
