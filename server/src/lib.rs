//! The portable Xenstore server core: connection table, fair polling, the request pipeline
//! and recovery — shared by the PVH unikernel (`kernel/`) and the hosted daemon (`hosted/`).
//!
//! Contract:
//! - `no_std` + `alloc`, `forbid(unsafe_code)`; the machine is reached only through the traits
//!   in [`platform`] (ring memory, event channels, ring mapping, clock, log sink) and the
//!   block device of the `persist` crate;
//! - the pipeline rule of `docs/ARCHITECTURE.md`: reassemble → apply → append one commit per
//!   request → sync once per step → only then transmit replies and watch events → notify;
//! - [`Server::step`] is deterministic given the platform's behaviour, so whole multi-domain
//!   scenarios run as seeded simulations on the host;
//! - no peer input panics the server: framing violations and ring index violations break
//!   only the connection concerned (ring `error` field set, socket closed).
//!
//! Map: [`server`] (the step pipeline, platform-initiated introductions and domain state
//! changes, recovery of ring connections), [`connection`] (the
//! table and the persisted connection snapshot), [`output`] (queued replies / events with
//! their ring stream position), [`store_engine`] (the store as the engine, its mapping onto
//! log mutations, and [`store_engine::start_crash_resilient`], the one start-up / recovery
//! entry point), [`switch`] (a volatile server moving onto a log at run time; with
//! `state_commits` it writes a whole store image as several commits, the root node last),
//! [`log_journal`] / [`journal`] (persistence modes), [`debug`] (log switches,
//! trace, statistics and the debug shell's `ShellTarget`), [`platform`] (what the machine
//! provides), [`ring`] / [`frame`] (re-exports of and thin adapters over `protocol`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod connection;
pub mod debug;
pub mod engine;
pub mod frame;
pub mod inject;
pub mod journal;
pub mod limits;
pub mod log_journal;
pub mod output;
pub mod platform;
pub mod ring;
pub mod server;
mod state_commits;
pub mod store_engine;
pub mod switch;

pub use connection::{ConnectionId, ConnectionSnapshot, ServerSnapshot};
pub use debug::{Category, DebugSettings};
pub use engine::{Caller, DomainState, Effect, Engine, EventMessage, Outcome, ReplyMessage};
pub use journal::{CommitCause, ConnectionUpdate, Journal, NoJournal};
pub use platform::{
    Clock, EventChannels, Level, LogSink, Platform, PlatformError, RingLocation, RingMapper,
};
pub use ring::RingMemory;
pub use server::{Config, IntroduceError, RecoveryReport, Server, ServerError, StepReport};
