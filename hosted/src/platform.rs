//! The hosted implementation of the server's platform traits.
//!
//! Simulated domains (documented in `hosted/README.md` too) live in a directory (`--sim-dir`):
//! - ring page: the file `dom<domid>.gfn<gfn>.ring` (4096 bytes, mmap'd by both sides); the
//!   `gfn` of XS_INTRODUCE names the file, so the location persisted is exactly what a real
//!   domain would have (domid, gfn, event channel);
//! - event channel: a pair of Unix datagram sockets `dom<domid>.evtchn<port>.guest` (bound by
//!   the guest) and `dom<domid>.evtchn<port>.server` (bound by the daemon at
//!   `bind_interdomain`); a notification is one datagram to the other side's path. Sends to an
//!   absent peer are ignored: notifications are hints and both sides re-scan the ring.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Instant;

use xenstore_protocol::Domid;
use xenstore_server::platform::{
    Clock, EventChannels, Level, LogSink, PlatformError, RingLocation, RingMapper,
};

use crate::shm::SharedRingFile;

/// Path of a simulated domain's ring file.
pub fn ring_path(directory: &Path, domid: Domid, gfn: u64) -> PathBuf {
    directory.join(format!("dom{}.gfn{gfn}.ring", domid.0))
}

/// Path of the guest end of a simulated event channel.
pub fn guest_port_path(directory: &Path, domid: Domid, port: u32) -> PathBuf {
    directory.join(format!("dom{}.evtchn{port}.guest", domid.0))
}

/// Path of the server end of a simulated event channel.
pub fn server_port_path(directory: &Path, domid: Domid, port: u32) -> PathBuf {
    directory.join(format!("dom{}.evtchn{port}.server", domid.0))
}

/// One bound simulated event channel.
#[derive(Debug)]
pub struct BoundPort {
    /// Our socket (receives the guest's notifications).
    pub socket: UnixDatagram,
    /// Where the guest listens.
    pub guest_path: PathBuf,
    /// Our socket's path (removed on unbind).
    pub server_path: PathBuf,
}

/// The hosted platform.
#[derive(Debug)]
pub struct HostedPlatform {
    sim_dir: PathBuf,
    ports: BTreeMap<u32, BoundPort>,
    next_port: u32,
    origin: Instant,
    verbose: bool,
    trace: Option<File>,
    last_ns: std::cell::Cell<u64>,
}

impl HostedPlatform {
    /// A platform serving simulated domains from `sim_dir`.
    pub fn new(sim_dir: PathBuf, verbose: bool, trace: Option<File>) -> HostedPlatform {
        HostedPlatform {
            sim_dir,
            ports: BTreeMap::new(),
            next_port: 1,
            origin: Instant::now(),
            verbose,
            trace,
            last_ns: std::cell::Cell::new(0),
        }
    }

    /// The bound ports (the poll loop waits on their sockets).
    pub fn ports(&self) -> &BTreeMap<u32, BoundPort> {
        &self.ports
    }

    /// Drains pending notifications of a port; returns how many arrived.
    pub fn drain(&self, port: u32) -> usize {
        let Some(bound) = self.ports.get(&port) else {
            return 0;
        };
        let mut buffer = [0u8; 16];
        let mut count = 0;
        while bound.socket.recv(&mut buffer).is_ok() {
            count += 1;
        }
        count
    }
}

impl EventChannels for HostedPlatform {
    fn bind_interdomain(&mut self, domid: Domid, remote_port: u32) -> Result<u32, PlatformError> {
        let server_path = server_port_path(&self.sim_dir, domid, remote_port);
        let _ = std::fs::remove_file(&server_path);
        let socket = UnixDatagram::bind(&server_path)
            .map_err(|_| PlatformError::BindFailed { domid, remote_port })?;
        socket
            .set_nonblocking(true)
            .map_err(|_| PlatformError::BindFailed { domid, remote_port })?;
        let local_port = self.next_port;
        self.next_port += 1;
        let guest_path = guest_port_path(&self.sim_dir, domid, remote_port);
        self.ports.insert(
            local_port,
            BoundPort {
                socket,
                guest_path,
                server_path,
            },
        );
        Ok(local_port)
    }

    fn notify(&mut self, local_port: u32) -> Result<(), PlatformError> {
        let bound = self
            .ports
            .get(&local_port)
            .ok_or(PlatformError::NotifyFailed { local_port })?;
        // The guest may be gone or busy: a lost notification is harmless (hint semantics).
        let _ = bound.socket.send_to(b"!", &bound.guest_path);
        Ok(())
    }

    fn unbind(&mut self, local_port: u32) {
        if let Some(bound) = self.ports.remove(&local_port) {
            let _ = std::fs::remove_file(&bound.server_path);
        }
    }
}

impl RingMapper for HostedPlatform {
    type Memory = SharedRingFile;

    fn map(&mut self, location: &RingLocation) -> Result<SharedRingFile, PlatformError> {
        let path = ring_path(&self.sim_dir, location.domid, location.gfn);
        SharedRingFile::map(&path, false).map_err(|_| PlatformError::MapFailed {
            domid: location.domid,
        })
    }

    fn unmap(&mut self, _location: &RingLocation, memory: SharedRingFile) {
        drop(memory);
    }
}

impl Clock for HostedPlatform {
    /// Wall-clock time (ns since the Unix epoch), so that commit timestamps in the log's
    /// history stay comparable across restarts and with other logs; never below the previous
    /// reading of this process.
    fn now_ns(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        let now = wall.max(self.last_ns.get());
        self.last_ns.set(now);
        now
    }
}

impl LogSink for HostedPlatform {
    fn log(&mut self, level: Level, message: fmt::Arguments<'_>) {
        let seconds = self.origin.elapsed().as_secs_f64();
        // The server core decides what is traced (trace switches per domain); trace lines
        // go to the trace file when there is one, else to stderr.
        if level == Level::Trace {
            if let Some(trace) = &mut self.trace {
                let _ = writeln!(trace, "{message}");
                if !self.verbose {
                    return;
                }
            }
        }
        let tag = match level {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Trace => "trace",
        };
        eprintln!("rxenstored: {seconds:.6} {tag}: {message}");
    }
}
