//! A simulated guest's xenbus with full control, for the crash harness and the bad-input suite.
//!
//! Unlike `rxenstored::guest::SimulatedGuest` (a convenient xenbus), this one exposes every
//! packet it receives, in order, so callers can check that each reply arrives exactly once,
//! and it can write raw bytes, half packets and corrupt ring indices. It never gives up
//! because the daemon is down: its ring file and event-channel socket survive restarts, and
//! every wait is bounded by a caller-supplied deadline.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rxenstored::platform::{guest_port_path, ring_path, server_port_path};
use rxenstored::shm::SharedRingFile;
use xenstore_protocol::{Domid, MessageType};
use xenstore_server::frame::{Assembler, Packet, encode_frame};
use xenstore_server::ring::{Field, GuestRing, RingMemory};

/// Why a ring operation failed.
#[derive(Debug)]
pub enum RingGuestError {
    /// Creating the ring file or the socket.
    Io(io::Error),
    /// The server set the ring's `error` field (1 COMM, 2 RINGIDX, 3 PROTO).
    ServerError(u32),
    /// Our view of the indices is inconsistent, or the reply stream does not parse.
    Corrupt(String),
    /// The deadline passed.
    Timeout,
}

impl std::fmt::Display for RingGuestError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingGuestError::Io(error) => write!(formatter, "io: {error}"),
            RingGuestError::ServerError(code) => write!(formatter, "server set ring error {code}"),
            RingGuestError::Corrupt(text) => write!(formatter, "corrupt: {text}"),
            RingGuestError::Timeout => formatter.write_str("timed out"),
        }
    }
}

impl From<io::Error> for RingGuestError {
    fn from(error: io::Error) -> RingGuestError {
        RingGuestError::Io(error)
    }
}

/// One simulated guest.
#[derive(Debug)]
pub struct RingGuest {
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

impl RingGuest {
    /// Creates the zeroed ring file `dom<domid>.gfn<gfn>.ring` and binds the guest end of the
    /// event channel `port` in `directory` (the daemon's `--sim-dir`).
    pub fn create(
        directory: &Path,
        domid: u16,
        gfn: u64,
        port: u32,
    ) -> Result<RingGuest, RingGuestError> {
        std::fs::create_dir_all(directory)?;
        let domid = Domid(domid);
        let ring = ring_path(directory, domid, gfn);
        let _ = std::fs::remove_file(&ring);
        let memory = SharedRingFile::map(&ring, true)?;
        let guest_path = guest_port_path(directory, domid, port);
        let _ = std::fs::remove_file(&guest_path);
        let socket = UnixDatagram::bind(&guest_path)?;
        socket.set_nonblocking(true)?;
        Ok(RingGuest {
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
    pub fn domid(&self) -> u16 {
        self.domid.0
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

    /// Sends an event-channel notification (ignored while the daemon is down).
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

    fn check_error(&self) -> Result<(), RingGuestError> {
        match self.ring_error() {
            0 => Ok(()),
            code => Err(RingGuestError::ServerError(code)),
        }
    }

    /// Moves every complete packet from the reply ring into the received queue.
    pub fn pump(&mut self) -> Result<(), RingGuestError> {
        let ring = GuestRing::new(&self.memory);
        let mut buffer = [0u8; 1024];
        loop {
            let transfer = ring
                .read_replies(&mut buffer)
                .map_err(|error| RingGuestError::Corrupt(format!("{error:?}")))?;
            if transfer.notify {
                let _ = self.socket.send_to(
                    b"!",
                    server_port_path(&self.directory, self.domid, self.port),
                );
            }
            if transfer.bytes == 0 {
                break;
            }
            let mut input = &buffer[..transfer.bytes];
            while !input.is_empty() {
                let (consumed, packet) = self
                    .assembler
                    .feed(input)
                    .map_err(|error| RingGuestError::Corrupt(format!("reply stream: {error:?}")))?;
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
    /// pumping replies meanwhile (they stay queued for [`RingGuest::take_received`]).
    pub fn send_raw(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), RingGuestError> {
        let mut sent = 0;
        while sent < bytes.len() {
            self.check_error()?;
            let transfer = GuestRing::new(&self.memory)
                .write_requests(&bytes[sent..])
                .map_err(|error| RingGuestError::Corrupt(format!("{error:?}")))?;
            sent += transfer.bytes;
            if transfer.notify {
                self.notify();
            }
            if sent < bytes.len() {
                self.pump()?;
                if Instant::now() > deadline {
                    return Err(RingGuestError::Timeout);
                }
                self.wait_notification(Duration::from_millis(20));
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
    ) -> Result<u32, RingGuestError> {
        let (req_id, frame) = self.frame(message_type, tx_id, payload);
        self.send_raw(&frame, deadline)?;
        Ok(req_id)
    }

    /// Waits for the reply to `req_id` (watch events and other replies stay queued).
    pub fn wait_reply(&mut self, req_id: u32, deadline: Instant) -> Result<Packet, RingGuestError> {
        loop {
            self.pump()?;
            if let Some(index) = self.received.iter().position(|packet| {
                packet.header.req_id == req_id
                    && packet.header.message_type != MessageType::WatchEvent.as_u32()
            }) {
                return Ok(self
                    .received
                    .remove(index)
                    .expect("index from position is valid"));
            }
            if Instant::now() > deadline {
                return Err(RingGuestError::Timeout);
            }
            self.wait_notification(Duration::from_millis(20));
        }
    }

    /// Sends a request and waits for its reply (for simple, non-pipelined use).
    pub fn request(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Packet, RingGuestError> {
        let deadline = Instant::now() + timeout;
        let req_id = self.send(message_type, tx_id, payload, deadline)?;
        self.wait_reply(req_id, deadline)
    }

    /// Waits for the next watch event `(path, token)`; other packets stay queued.
    pub fn next_event(&mut self, timeout: Duration) -> Result<(String, String), RingGuestError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump()?;
            if let Some(index) = self
                .received
                .iter()
                .position(|packet| packet.header.message_type == MessageType::WatchEvent.as_u32())
            {
                let packet = self.received.remove(index).expect("valid index");
                return crate::wire::parse_event(&packet.payload).ok_or_else(|| {
                    RingGuestError::Corrupt(format!(
                        "bad watch event {}",
                        crate::wire::show(&packet.payload)
                    ))
                });
            }
            if Instant::now() > deadline {
                return Err(RingGuestError::Timeout);
            }
            self.wait_notification(Duration::from_millis(20));
        }
    }
}
