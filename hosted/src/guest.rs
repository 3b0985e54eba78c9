//! A simulated guest's xenbus: creates the shared ring file and the guest end of the
//! simulated event channel in the daemon's `--sim-dir`, then speaks the wire protocol over the
//! ring like a guest kernel would (requests split across ring wraps, notifications after each
//! index move, replies matched by `req_id`).
//!
//! It also gives tests full control: every received packet (replies and watch events) is kept
//! in arrival order and can be taken for exactly-once checks ([`SimulatedGuest::take_received`]),
//! raw bytes and half packets can be written ([`SimulatedGuest::send_raw`]), and the ring page
//! itself is reachable for corrupting indices or reading the `error` field
//! ([`SimulatedGuest::memory`]). Waits are bounded by a caller-supplied deadline or timeout.
//!
//! The guest survives daemon restarts: its ring file and socket stay; after a restart the
//! daemon re-maps the same file and re-binds its end of the channel (see
//! `crate::platform`). A guest is introduced by a dom0 client with
//! `INTRODUCE <domid> <gfn> <port>` ([`SimulatedGuest::introduce_payload`]).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xenstore_protocol::{Domid, MessageType};
use xenstore_server::frame::{Assembler, Packet, encode_frame};
use xenstore_server::ring::{Field, GuestRing, RingMemory};

use crate::platform::{guest_port_path, ring_path, server_port_path};
use crate::shm::SharedRingFile;

/// How long a wait sleeps between looks at the ring when no notification arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Why a guest operation failed.
#[derive(Debug)]
pub enum GuestError {
    /// Creating the ring file or the socket.
    Io(io::Error),
    /// The server set the ring's `error` field (1 COMM, 2 RINGIDX, 3 PROTO).
    ServerError(u32),
    /// Our view of the indices is inconsistent, or the reply stream does not parse.
    Corrupt(String),
    /// The deadline passed.
    Timeout,
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestError::Io(error) => write!(formatter, "io: {error}"),
            GuestError::ServerError(code) => write!(formatter, "server set ring error {code}"),
            GuestError::Corrupt(text) => write!(formatter, "corrupt: {text}"),
            GuestError::Timeout => formatter.write_str("timed out"),
        }
    }
}

impl std::error::Error for GuestError {}

impl From<io::Error> for GuestError {
    fn from(error: io::Error) -> GuestError {
        GuestError::Io(error)
    }
}

/// Splits a `<path>\0<token>\0` watch event payload.
pub fn parse_event(payload: &[u8]) -> Option<(String, String)> {
    let mut parts = payload.split(|byte| *byte == 0);
    let path = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let token = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((path, token))
}

/// A short printable rendering of a payload for failure messages.
pub fn show(payload: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(&payload[..payload.len().min(60)])
        .chars()
        .map(|c| if c == '\0' { '|' } else { c })
        .collect();
    if payload.len() > 60 {
        format!("{text}...({} bytes)", payload.len())
    } else {
        text
    }
}

/// One simulated guest.
#[derive(Debug)]
pub struct SimulatedGuest {
    domid: Domid,
    gfn: u64,
    port: u32,
    directory: PathBuf,
    memory: SharedRingFile,
    socket: UnixDatagram,
    assembler: Assembler,
    received: VecDeque<Packet>,
    next_req_id: u32,
}

impl SimulatedGuest {
    /// Creates the zeroed ring file `dom<domid>.gfn<gfn>.ring` and binds the guest end of the
    /// event channel `port` in `directory` (the daemon's `--sim-dir`).
    pub fn create(
        directory: &Path,
        domid: Domid,
        gfn: u64,
        port: u32,
    ) -> Result<SimulatedGuest, GuestError> {
        std::fs::create_dir_all(directory)?;
        let ring = ring_path(directory, domid, gfn);
        let _ = std::fs::remove_file(&ring);
        let memory = SharedRingFile::map(&ring, true)?;
        let guest_path = guest_port_path(directory, domid, port);
        let _ = std::fs::remove_file(&guest_path);
        let socket = UnixDatagram::bind(&guest_path)?;
        socket.set_nonblocking(true)?;
        Ok(SimulatedGuest {
            domid,
            gfn,
            port,
            directory: directory.to_path_buf(),
            memory,
            socket,
            assembler: Assembler::default(),
            received: VecDeque::new(),
            next_req_id: 1,
        })
    }

    /// The domain id.
    pub fn domid(&self) -> Domid {
        self.domid
    }

    /// `/local/domain/<domid>`.
    pub fn home(&self) -> String {
        format!("/local/domain/{}", self.domid.0)
    }

    /// Payload of the XS_INTRODUCE a dom0 client sends for this guest.
    pub fn introduce_payload(&self) -> Vec<u8> {
        format!("{}\0{}\0{}\0", self.domid.0, self.gfn, self.port).into_bytes()
    }

    /// Raw access to the ring page (corrupting indices, reading `error`).
    pub fn memory(&self) -> &SharedRingFile {
        &self.memory
    }

    /// The ring's `error` field.
    pub fn ring_error(&self) -> u32 {
        self.memory.load_acquire(Field::Error)
    }

    fn ring(&self) -> GuestRing<&SharedRingFile> {
        GuestRing::new(&self.memory)
    }

    /// Sends an event-channel notification (ignored while the daemon is down: it re-scans on
    /// start).
    pub fn notify(&self) {
        let _ = self.socket.send_to(
            b"!",
            server_port_path(&self.directory, self.domid, self.port),
        );
    }

    /// Waits up to `duration` for a notification from the server (drains them all).
    pub fn wait_notification(&self, duration: Duration) {
        let mut fds = [libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid, exclusively borrowed pollfd for the duration of the call.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 1, duration.as_millis().max(1) as i32);
        }
        let mut buffer = [0u8; 64];
        while self.socket.recv(&mut buffer).is_ok() {}
    }

    fn check_error(&self) -> Result<(), GuestError> {
        match self.ring_error() {
            0 => Ok(()),
            code => Err(GuestError::ServerError(code)),
        }
    }

    /// Moves every complete packet from the reply ring into the received queue, then reports
    /// a server-set `error` field.
    pub fn pump(&mut self) -> Result<(), GuestError> {
        let mut buffer = [0u8; 1024];
        loop {
            let transfer = self
                .ring()
                .read_replies(&mut buffer)
                .map_err(|error| GuestError::Corrupt(format!("{error:?}")))?;
            if transfer.notify {
                self.notify();
            }
            if transfer.bytes == 0 {
                break;
            }
            let mut input = &buffer[..transfer.bytes];
            while !input.is_empty() {
                let (consumed, packet) = self
                    .assembler
                    .feed(input)
                    .map_err(|error| GuestError::Corrupt(format!("reply stream: {error:?}")))?;
                input = &input[consumed..];
                if let Some(packet) = packet {
                    self.received.push_back(packet);
                }
            }
        }
        self.check_error()
    }

    /// Takes every packet received so far (replies and watch events, in arrival order).
    pub fn take_received(&mut self) -> Vec<Packet> {
        self.received.drain(..).collect()
    }

    /// Writes raw bytes into the request ring, waiting (bounded by `deadline`) for space and
    /// pumping replies meanwhile (they stay queued). Bad-input and split-packet tests use this
    /// directly.
    pub fn send_raw(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), GuestError> {
        let mut sent = 0;
        while sent < bytes.len() {
            self.check_error()?;
            let transfer = self
                .ring()
                .write_requests(&bytes[sent..])
                .map_err(|error| GuestError::Corrupt(format!("{error:?}")))?;
            sent += transfer.bytes;
            if transfer.notify {
                self.notify();
            }
            if sent < bytes.len() {
                self.pump()?;
                if Instant::now() > deadline {
                    return Err(GuestError::Timeout);
                }
                self.wait_notification(POLL_INTERVAL);
            }
        }
        Ok(())
    }

    /// The next request id this guest will use.
    pub fn next_req_id(&self) -> u32 {
        self.next_req_id
    }

    /// Encodes a request with a fresh req_id; returns `(req_id, frame bytes)`.
    pub fn frame(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
    ) -> (u32, Vec<u8>) {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        (
            req_id,
            encode_frame(message_type.as_u32(), req_id, tx_id, payload),
        )
    }

    /// Sends a request; returns its req_id.
    pub fn send(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<u32, GuestError> {
        let (req_id, frame) = self.frame(message_type, tx_id, payload);
        self.send_raw(&frame, deadline)?;
        Ok(req_id)
    }

    /// Pumps until the first queued packet matching `wanted` can be removed, or `deadline`.
    fn wait_for(
        &mut self,
        deadline: Instant,
        wanted: impl Fn(&Packet) -> bool,
    ) -> Result<Packet, GuestError> {
        loop {
            self.pump()?;
            if let Some(index) = self.received.iter().position(&wanted) {
                return Ok(self
                    .received
                    .remove(index)
                    .expect("index from position is valid"));
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout);
            }
            self.wait_notification(POLL_INTERVAL);
        }
    }

    /// Waits for the reply to `req_id` (watch events and other replies stay queued).
    pub fn wait_reply(&mut self, req_id: u32, deadline: Instant) -> Result<Packet, GuestError> {
        self.wait_for(deadline, |packet| {
            packet.header.req_id == req_id
                && packet.header.message_type != MessageType::WatchEvent.as_u32()
        })
    }

    /// Sends a request and waits for its reply (for simple, non-pipelined use).
    pub fn request(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Packet, GuestError> {
        let deadline = Instant::now() + timeout;
        let req_id = self.send(message_type, tx_id, payload, deadline)?;
        self.wait_reply(req_id, deadline)
    }

    /// Waits for the next watch event `(path, token)`; other packets stay queued.
    pub fn next_event(&mut self, timeout: Duration) -> Result<(String, String), GuestError> {
        let deadline = Instant::now() + timeout;
        let packet = self.wait_for(deadline, |packet| {
            packet.header.message_type == MessageType::WatchEvent.as_u32()
        })?;
        parse_event(&packet.payload).ok_or_else(|| {
            GuestError::Corrupt(format!("bad watch event {}", show(&packet.payload)))
        })
    }
}
