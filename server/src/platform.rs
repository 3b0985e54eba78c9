//! The platform traits: everything the portable server core needs from the machine it runs
//! on, defined here by the consumer (smoltcp `phy::Device` style).
//!
//! Implemented by `kernel/` (hypercalls, grant mappings, event channels, blkfront, console) and
//! by `hosted/` (shared-memory files, Unix datagram sockets, a file block device, stderr). The
//! block device is the `persist` crate's `BlockDevice`; the server hands it to the log.
//!
//! Every platform call that can fail because of a peer or the machine returns a
//! [`PlatformError`]; the server's policy for each failure is written where it is handled
//! (usually: reply with an errno, or mark that one connection broken — never panic).

use core::fmt;

use xenstore_protocol::Domid;

pub use crate::ring::RingMemory;

/// Why a platform call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The ring page of a domain could not be mapped (no such domain, bad gfn/grant).
    MapFailed {
        /// The domain.
        domid: Domid,
    },
    /// `EVTCHNOP_bind_interdomain` (or its simulation) failed.
    BindFailed {
        /// The domain.
        domid: Domid,
        /// The remote port.
        remote_port: u32,
    },
    /// Notifying a local port failed.
    NotifyFailed {
        /// The local port.
        local_port: u32,
    },
    /// Any other platform-specific failure, with an errno-like code.
    Other {
        /// Platform-specific code.
        code: i32,
    },
}

impl fmt::Display for PlatformError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::MapFailed { domid } => {
                write!(formatter, "cannot map the ring of domain {domid}")
            }
            PlatformError::BindFailed { domid, remote_port } => {
                write!(
                    formatter,
                    "cannot bind event channel {remote_port} of domain {domid}"
                )
            }
            PlatformError::NotifyFailed { local_port } => {
                write!(formatter, "cannot notify port {local_port}")
            }
            PlatformError::Other { code } => write!(formatter, "platform error {code}"),
        }
    }
}

/// Interdomain event channels (`EVTCHNOP_bind_interdomain`, `EVTCHNOP_send`, `EVTCHNOP_close`).
pub trait EventChannels {
    /// Binds a local port to `remote_port` of `domid`; returns the local port.
    fn bind_interdomain(&mut self, domid: Domid, remote_port: u32) -> Result<u32, PlatformError>;
    /// Sends a notification on a bound local port.
    fn notify(&mut self, local_port: u32) -> Result<(), PlatformError>;
    /// Closes a bound local port.
    fn unbind(&mut self, local_port: u32);
}

/// Where a guest's ring page lives: what INTRODUCE names and what is persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RingLocation {
    /// The guest.
    pub domid: Domid,
    /// Guest frame number given in INTRODUCE (the unikernel maps grant ref 1 instead, as C
    /// xenstored does; hosted uses it to name the shared-memory file).
    pub gfn: u64,
    /// The guest's unbound event channel port given in INTRODUCE.
    pub remote_port: u32,
}

/// Mapping of guests' ring pages.
pub trait RingMapper {
    /// The mapped page.
    type Memory: RingMemory;
    /// Maps the ring page of a domain.
    fn map(&mut self, location: &RingLocation) -> Result<Self::Memory, PlatformError>;
    /// Unmaps a page obtained from [`RingMapper::map`].
    fn unmap(&mut self, location: &RingLocation, memory: Self::Memory);
}

/// Monotonic time.
pub trait Clock {
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn now_ns(&self) -> u64;
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something is broken.
    Error,
    /// A peer misbehaved or a limit was hit.
    Warn,
    /// Lifecycle: connections, recovery.
    Info,
    /// Per-request detail (the trace).
    Trace,
}

/// Console / log sink.
pub trait LogSink {
    /// Writes one line.
    fn log(&mut self, level: Level, message: fmt::Arguments<'_>);
}

/// Everything the server needs, as one bound.
pub trait Platform: EventChannels + RingMapper + Clock + LogSink {}

impl<T: EventChannels + RingMapper + Clock + LogSink> Platform for T {}
