//! `rxenstored`: the hosted Linux xenstored running the portable server core
//! (`xenstore-server`), plus the pieces tests need to play guests against it.
//!
//! - [`cli`]: command-line options (C xenstored-compatible where they overlap);
//! - [`daemon`]: the poll(2) loop, signals, socket;
//! - [`platform`]: the platform traits over shared-memory files and Unix datagram sockets;
//! - [`shm`]: the mmap'd ring page (the crate's only `unsafe` besides libc calls);
//! - [`guest`]: a simulated guest's xenbus (ring + event channel) for tests;
//! - [`client`]: a minimal socket client speaking the wire protocol, for tests.

pub mod cli;
pub mod client;
pub mod console;
pub mod daemon;
pub mod fsinfo;
pub mod guard;
pub mod guest;
pub mod platform;
pub mod shm;
