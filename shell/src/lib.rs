//! The debug shell of the xenstore server: one implementation of every debugging command,
//! shared by the stub domain's Xen console (`xl console`), the hosted daemon's debug socket
//! and XS_CONTROL (`xenstore-control`).
//!
//! Contract:
//! - `no_std` + `alloc`, `forbid(unsafe_code)`; the shell only parses command lines and formats
//!   answers. Everything it shows comes from a [`ShellTarget`], which the server core
//!   implements over its store, connections, statistics and log history.
//! - One command line in, text out. A bad command or argument is a one-line `error: …`; the
//!   shell keeps running. No command blocks: history and diff are bounded reads of the log.
//! - Console input arrives byte by byte; [`LineBuffer`] assembles lines (bounded length,
//!   backspace, CR/LF) so a misbehaving console cannot grow memory.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod commands;
pub mod line;
pub mod target;

pub use commands::{Command, CommandError, execute, parse};
pub use line::{LineBuffer, LineEvent};
pub use target::{
    CommitView, ConnectionView, DiffView, NodeView, RingView, ShellTarget, StatisticsView,
    TargetError, TraceTarget, TransactionView, WatchView,
};
