//! A simulated guest's xenbus: creates the shared ring file and the guest end of the
//! simulated event channel in the daemon's `--sim-dir`, then speaks the wire protocol over the
//! ring like a guest kernel would (requests split across ring wraps, notifications after each
//! index move, replies matched by `req_id`, watch events queued).
//!
//! The guest survives daemon restarts: its ring file and socket stay; after a restart the
//! daemon re-maps the same file and re-binds its end of the channel (see
//! `crate::platform`). A guest is introduced by a dom0 client with
//! `INTRODUCE <domid> <gfn> <port>` ([`SimulatedGuest::introduce_payload`]).

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xenstore_protocol::{Domid, MessageType};
use xenstore_server::frame::{Assembler, Header, encode_frame};
use xenstore_server::ring::GuestRing;

use crate::platform::{guest_port_path, ring_path, server_port_path};
use crate::shm::SharedRingFile;

/// A reply seen by the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestReply {
    /// Its header.
    pub header: Header,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Why a guest operation failed.
#[derive(Debug)]
pub enum GuestError {
    /// Files or sockets.
    Io(io::Error),
    /// The ring indices were inconsistent, or the server set the `error` field.
    Ring(String),
    /// No reply in time.
    Timeout,
}

impl From<io::Error> for GuestError {
    fn from(error: io::Error) -> GuestError {
        GuestError::Io(error)
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
    next_req_id: u32,
    events: VecDeque<Vec<u8>>,
    replies: VecDeque<GuestReply>,
}

impl SimulatedGuest {
    /// Creates the ring file (zeroed) and binds the guest end of event channel `port`.
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
            next_req_id: 1,
            events: VecDeque::new(),
            replies: VecDeque::new(),
        })
    }

    /// The domain id.
    pub fn domid(&self) -> Domid {
        self.domid
    }

    /// Payload of the XS_INTRODUCE a dom0 client sends for this guest.
    pub fn introduce_payload(&self) -> Vec<u8> {
        format!("{}\0{}\0{}\0", self.domid.0, self.gfn, self.port).into_bytes()
    }

    /// Notifies the server (ignored when the daemon is down: it re-scans on start).
    pub fn notify(&self) {
        let _ = self.socket.send_to(
            b"!",
            server_port_path(&self.directory, self.domid, self.port),
        );
    }

    fn ring(&self) -> GuestRing<&SharedRingFile> {
        GuestRing::new(&self.memory)
    }

    /// Writes raw bytes into the request ring, waiting for space (bad-input and split-packet
    /// tests use this directly).
    pub fn send_raw(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), GuestError> {
        let deadline = Instant::now() + timeout;
        let mut sent = 0;
        while sent < bytes.len() {
            let transfer = self
                .ring()
                .write_requests(&bytes[sent..])
                .map_err(|error| GuestError::Ring(format!("{error:?}")))?;
            sent += transfer.bytes;
            if transfer.notify {
                self.notify();
            }
            if sent < bytes.len() {
                self.pump()?;
                if Instant::now() > deadline {
                    return Err(GuestError::Timeout);
                }
                self.wait(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// Sends a request; returns its req_id.
    pub fn send(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<u32, GuestError> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        self.send_raw(
            &encode_frame(message_type.as_u32(), req_id, tx_id, payload),
            timeout,
        )?;
        Ok(req_id)
    }

    fn wait(&self, duration: Duration) {
        let mut fds = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.socket),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, exclusively borrowed for the call.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 1, duration.as_millis() as i32);
        }
        let mut buffer = [0u8; 16];
        while self.socket.recv(&mut buffer).is_ok() {}
    }

    /// Moves reply bytes from the ring into the reply/event queues.
    pub fn pump(&mut self) -> Result<(), GuestError> {
        let error = self.memory_error();
        if error != 0 {
            return Err(GuestError::Ring(format!("server set error {error}")));
        }
        let mut buffer = [0u8; 1024];
        loop {
            let transfer = self
                .ring()
                .read_replies(&mut buffer)
                .map_err(|error| GuestError::Ring(format!("{error:?}")))?;
            if transfer.notify {
                self.notify();
            }
            if transfer.bytes == 0 {
                return Ok(());
            }
            let mut input = &buffer[..transfer.bytes];
            while !input.is_empty() {
                let (consumed, packet) = self
                    .assembler
                    .feed(input)
                    .map_err(|error| GuestError::Ring(format!("{error:?}")))?;
                input = &input[consumed..];
                if let Some(packet) = packet {
                    if packet.header.message_type == MessageType::WatchEvent.as_u32() {
                        self.events.push_back(packet.payload);
                    } else {
                        self.replies.push_back(GuestReply {
                            header: packet.header,
                            payload: packet.payload,
                        });
                    }
                }
            }
        }
    }

    /// The ring's `error` field.
    pub fn memory_error(&self) -> u32 {
        use xenstore_server::ring::{Field, RingMemory};
        self.memory.load_acquire(Field::Error)
    }

    /// Waits for the reply to `req_id`.
    pub fn wait_reply(&mut self, req_id: u32, timeout: Duration) -> Result<GuestReply, GuestError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump()?;
            if let Some(index) = self
                .replies
                .iter()
                .position(|reply| reply.header.req_id == req_id)
            {
                return Ok(self.replies.remove(index).unwrap_or_else(|| unreachable!()));
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout);
            }
            self.wait(Duration::from_millis(10));
        }
    }

    /// Sends a request and waits for its reply.
    pub fn request(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<GuestReply, GuestError> {
        let req_id = self.send(message_type, tx_id, payload, timeout)?;
        self.wait_reply(req_id, timeout)
    }

    /// Waits for the next watch event.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Vec<u8>, GuestError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump()?;
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout);
            }
            self.wait(Duration::from_millis(10));
        }
    }
}
