//! A minimal blocking xenstore wire client, independent of this project's crates so the load
//! generator runs unchanged against C xenstored and oxenstored. Two transports:
//!
//! - a daemon's Unix stream socket (`/run/xenstored/socket`);
//! - a xenbus character device (Linux `/dev/xen/xenbus`, the only way in for dom0 and guests
//!   when the xenstore is a stub domain). Linux's `xenbus_dev_frontend.c` accepts one whole
//!   request packet per `write()` (it buffers partial packets, but this client never relies on
//!   that), forwards it over the shared ring under a request id of its own and hands the reply
//!   back with the caller's `req_id` restored. It answers some requests itself: XS_WATCH and
//!   XS_UNWATCH are registered in the kernel and acknowledged with a synthesized `OK` (the
//!   server sees the kernel's own token; events come back with ours), a request naming a
//!   transaction id the kernel did not see started on this file gets a synthesized `ENOENT`,
//!   and XS_TRANSACTION_END must carry exactly `T\0` or `F\0` (`EINVAL` otherwise).
//!
//! Format: 16-byte header (type, req_id, tx_id, len; little-endian u32) + payload
//! (xen.git `xen/include/public/io/xs_wire.h`). Every reply is checked to carry the request's
//! `req_id` and either the request's type or XS_ERROR: anything else is a
//! [`WireError::Protocol`] (a duplicate or foreign reply); no reply within the timeout is a
//! [`WireError::Timeout`].

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Message types used here (xs_wire.h numbering).
pub mod op {
    /// XS_CONTROL.
    pub const CONTROL: u32 = 0;
    /// XS_DIRECTORY.
    pub const DIRECTORY: u32 = 1;
    /// XS_READ.
    pub const READ: u32 = 2;
    /// XS_GET_PERMS.
    pub const GET_PERMS: u32 = 3;
    /// XS_WATCH.
    pub const WATCH: u32 = 4;
    /// XS_UNWATCH.
    pub const UNWATCH: u32 = 5;
    /// XS_TRANSACTION_START.
    pub const TRANSACTION_START: u32 = 6;
    /// XS_TRANSACTION_END.
    pub const TRANSACTION_END: u32 = 7;
    /// XS_WRITE.
    pub const WRITE: u32 = 11;
    /// XS_MKDIR.
    pub const MKDIR: u32 = 12;
    /// XS_RM.
    pub const RM: u32 = 13;
    /// XS_SET_PERMS.
    pub const SET_PERMS: u32 = 14;
    /// XS_WATCH_EVENT.
    pub const WATCH_EVENT: u32 = 15;
    /// XS_ERROR.
    pub const ERROR: u32 = 16;

    /// The xs_wire.h name of a message type, for error messages.
    pub fn name(message_type: u32) -> &'static str {
        match message_type {
            CONTROL => "CONTROL",
            DIRECTORY => "DIRECTORY",
            READ => "READ",
            GET_PERMS => "GET_PERMS",
            WATCH => "WATCH",
            UNWATCH => "UNWATCH",
            TRANSACTION_START => "TRANSACTION_START",
            TRANSACTION_END => "TRANSACTION_END",
            WRITE => "WRITE",
            MKDIR => "MKDIR",
            RM => "RM",
            SET_PERMS => "SET_PERMS",
            WATCH_EVENT => "WATCH_EVENT",
            ERROR => "ERROR",
            _ => "type?",
        }
    }
}

/// Largest payload in either direction.
pub const PAYLOAD_MAX: usize = 4096;
/// Header size.
const HEADER_LEN: usize = 16;

/// Where the xenstore under test is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A daemon's Unix socket.
    Socket(PathBuf),
    /// A xenbus character device (`/dev/xen/xenbus`).
    Device(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(path) => write!(formatter, "socket {}", path.display()),
            Target::Device(path) => write!(formatter, "device {}", path.display()),
        }
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum WireError {
    /// Transport trouble (including the server closing the connection).
    Io(io::Error),
    /// No (complete) reply within the timeout.
    Timeout {
        /// What was waited for.
        request: String,
        /// How long.
        waited: Duration,
    },
    /// The server (or the xenbus driver) answered with `XS_ERROR`.
    Server {
        /// The errno name, e.g. `ENOENT`.
        errno: String,
        /// The request it answered, e.g. `SET_PERMS /local/domain/1 (tx 3)`.
        request: String,
    },
    /// The reply did not match the protocol (wrong req_id or type, oversized).
    Protocol(String),
}

impl WireError {
    /// The errno name of a server error reply.
    pub fn errno(&self) -> Option<&str> {
        match self {
            WireError::Server { errno, .. } => Some(errno),
            _ => None,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(error) => write!(formatter, "transport: {error}"),
            WireError::Timeout { request, waited } => {
                write!(formatter, "no reply to {request} within {waited:?}")
            }
            WireError::Server { errno, request } => {
                write!(formatter, "server error {errno} on {request}")
            }
            WireError::Protocol(text) => write!(formatter, "protocol: {text}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(error: io::Error) -> WireError {
        WireError::Io(error)
    }
}

/// The byte stream under a client.
#[derive(Debug)]
enum Transport {
    Socket(UnixStream),
    Device(File),
}

impl Transport {
    /// Writes one whole packet: on the device in a single `write()` (the driver's contract).
    fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        match self {
            Transport::Socket(stream) => Ok(stream.write_all(bytes)?),
            Transport::Device(file) => {
                let written = file.write(bytes)?;
                if written != bytes.len() {
                    return Err(WireError::Protocol(format!(
                        "xenbus device took {written} of {} bytes",
                        bytes.len()
                    )));
                }
                Ok(())
            }
        }
    }

    /// Fills `buffer` or fails with `TimedOut` after `deadline`.
    fn read_exact_until(&mut self, buffer: &mut [u8], deadline: Instant) -> io::Result<()> {
        let mut filled = 0;
        while filled < buffer.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let count = match self {
                Transport::Socket(stream) => {
                    stream.set_read_timeout(Some(left))?;
                    stream.read(&mut buffer[filled..])
                }
                Transport::Device(file) => {
                    if !poll_readable(file, left)? {
                        continue;
                    }
                    file.read(&mut buffer[filled..])
                }
            };
            match count {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Waits until `file` is readable or `timeout` passes (false).
fn poll_readable(file: &File, timeout: Duration) -> io::Result<bool> {
    let mut descriptor = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: `descriptor` is a valid pollfd for the duration of the call and nfds is 1; the
    // fd stays open because `file` is borrowed for the call.
    let ready = unsafe { libc::poll(&mut descriptor, 1, millis) };
    match ready {
        -1 => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// A connected client.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    timeout: Duration,
    next_req_id: u32,
    events: VecDeque<(String, String)>,
}

fn frame(message_type: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    for word in [message_type, req_id, tx_id, payload.len() as u32] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

/// `a\0b\0…`.
pub fn strings(parts: &[&str]) -> Vec<u8> {
    let mut payload = Vec::new();
    for part in parts {
        payload.extend_from_slice(part.as_bytes());
        payload.push(0);
    }
    payload
}

/// A one-line description of a request for error messages: type, first string, transaction.
pub fn describe(message_type: u32, tx_id: u32, payload: &[u8]) -> String {
    let first = payload.split(|byte| *byte == 0).next().unwrap_or_default();
    let first = String::from_utf8_lossy(&first[..first.len().min(120)]).into_owned();
    let mut text = format!("{} {first}", op::name(message_type));
    if tx_id != 0 {
        text.push_str(&format!(" (tx {tx_id})"));
    }
    text
}

/// A watch event's `(path, token)`.
fn event_of(payload: &[u8]) -> (String, String) {
    let mut parts = payload.split(|byte| *byte == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    (path, token)
}

impl Client {
    /// Connects to `target`; every reply is waited for at most `timeout`.
    pub fn connect(target: &Target, timeout: Duration) -> io::Result<Client> {
        let transport = match target {
            Target::Socket(path) => Transport::Socket(UnixStream::connect(path)?),
            Target::Device(path) => {
                Transport::Device(OpenOptions::new().read(true).write(true).open(path)?)
            }
        };
        Ok(Client {
            transport,
            timeout,
            next_req_id: 1,
            events: VecDeque::new(),
        })
    }

    /// Reads one packet `(type, req_id, payload)`, waiting at most until `deadline`.
    fn read_packet(
        &mut self,
        deadline: Instant,
        waiting_for: impl Fn() -> String,
    ) -> Result<(u32, u32, Vec<u8>), WireError> {
        let timeout = |error: io::Error, waited: Duration| {
            if error.kind() == io::ErrorKind::TimedOut {
                WireError::Timeout {
                    request: waiting_for(),
                    waited,
                }
            } else {
                WireError::Io(error)
            }
        };
        let mut header = [0u8; HEADER_LEN];
        self.transport
            .read_exact_until(&mut header, deadline)
            .map_err(|error| timeout(error, self.timeout))?;
        let word = |index: usize| {
            u32::from_le_bytes([
                header[index * 4],
                header[index * 4 + 1],
                header[index * 4 + 2],
                header[index * 4 + 3],
            ])
        };
        let len = word(3) as usize;
        if len > PAYLOAD_MAX {
            return Err(WireError::Protocol(format!("reply of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        // The rest of a packet whose header arrived follows at once; the same deadline holds.
        self.transport
            .read_exact_until(&mut payload, deadline.max(Instant::now() + self.timeout))
            .map_err(|error| timeout(error, self.timeout))?;
        Ok((word(0), word(1), payload))
    }

    /// Sends a request and returns the reply payload (errors as [`WireError::Server`]).
    pub fn request(
        &mut self,
        message_type: u32,
        tx_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, WireError> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        self.transport
            .send(&frame(message_type, req_id, tx_id, payload))?;
        let deadline = Instant::now() + self.timeout;
        let what = || describe(message_type, tx_id, payload);
        loop {
            let (reply_type, reply_id, reply) = self.read_packet(deadline, what)?;
            if reply_type == op::WATCH_EVENT {
                self.events.push_back(event_of(&reply));
                continue;
            }
            if reply_id != req_id {
                return Err(WireError::Protocol(format!(
                    "reply {} for req_id {reply_id} while waiting for req_id {req_id} ({}): \
                     a duplicate or foreign reply",
                    op::name(reply_type),
                    what()
                )));
            }
            if reply_type == op::ERROR {
                return Err(WireError::Server {
                    errno: String::from_utf8_lossy(&reply)
                        .trim_end_matches('\0')
                        .to_string(),
                    request: what(),
                });
            }
            if reply_type != message_type {
                return Err(WireError::Protocol(format!(
                    "reply of type {} to {}",
                    op::name(reply_type),
                    what()
                )));
            }
            return Ok(reply);
        }
    }

    /// Waits for the next watch event `(path, token)` (up to the reply timeout). A packet
    /// that is not an event while no request is outstanding is a [`WireError::Protocol`].
    pub fn next_event(&mut self) -> Result<(String, String), WireError> {
        self.next_event_within(self.timeout)
    }

    /// [`Client::next_event`] with its own bound.
    pub fn next_event_within(&mut self, wait: Duration) -> Result<(String, String), WireError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        let deadline = Instant::now() + wait;
        let (reply_type, reply_id, payload) =
            self.read_packet(deadline, || "a watch event".to_string())?;
        if reply_type == op::WATCH_EVENT {
            return Ok(event_of(&payload));
        }
        Err(WireError::Protocol(format!(
            "unsolicited {} reply with req_id {reply_id} (no request outstanding): \
             a duplicate reply",
            op::name(reply_type)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Reads one request; `None` when the client closed the connection.
    fn read_request(stream: &mut UnixStream) -> Option<(u32, u32, u32, Vec<u8>)> {
        let mut header = [0u8; HEADER_LEN];
        stream.read_exact(&mut header).ok()?;
        let word = |i: usize| u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
        let mut payload = vec![0u8; word(3) as usize];
        stream.read_exact(&mut payload).ok()?;
        Some((word(0), word(1), word(2), payload))
    }

    /// A scripted server: answers each request with `replies(type, req_id)` packets.
    fn serve(
        replies: impl Fn(u32, u32) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        let directory = std::env::temp_dir().join(format!(
            "loadgen-wire-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("socket");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            while let Some((message_type, req_id, _, _)) = read_request(&mut stream) {
                for packet in replies(message_type, req_id) {
                    let _ = stream.write_all(&packet);
                }
            }
        });
        (path, handle)
    }

    #[test]
    fn replies_events_and_errors_are_told_apart() {
        let (path, server) = serve(|message_type, req_id| match message_type {
            op::READ => vec![
                frame(op::WATCH_EVENT, 0, 0, &strings(&["/a", "tok"])),
                frame(op::READ, req_id, 0, b"value"),
            ],
            _ => vec![frame(op::ERROR, req_id, 0, b"ENOENT\0")],
        });
        let target = Target::Socket(path);
        let mut client = Client::connect(&target, Duration::from_secs(5)).unwrap();
        assert_eq!(client.request(op::READ, 0, b"/a\0").unwrap(), b"value");
        assert_eq!(
            client.next_event().unwrap(),
            ("/a".to_string(), "tok".to_string())
        );
        let error = client
            .request(op::SET_PERMS, 7, &strings(&["/local/domain/5", "n5"]))
            .unwrap_err();
        assert_eq!(error.errno(), Some("ENOENT"));
        assert_eq!(
            error.to_string(),
            "server error ENOENT on SET_PERMS /local/domain/5 (tx 7)"
        );
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn a_duplicate_reply_is_a_protocol_error() {
        let (path, server) = serve(|message_type, req_id| {
            vec![
                frame(message_type, req_id, 0, b"OK\0"),
                frame(message_type, req_id, 0, b"OK\0"),
            ]
        });
        let mut client = Client::connect(&Target::Socket(path), Duration::from_secs(5)).unwrap();
        client.request(op::WRITE, 0, b"/a\0v").unwrap();
        let error = client.request(op::WRITE, 0, b"/b\0v").unwrap_err();
        assert!(matches!(error, WireError::Protocol(_)), "{error}");
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn a_missing_reply_times_out() {
        let (path, server) = serve(|_, _| Vec::new());
        let mut client =
            Client::connect(&Target::Socket(path), Duration::from_millis(200)).unwrap();
        let error = client.request(op::READ, 0, b"/a\0").unwrap_err();
        assert!(matches!(error, WireError::Timeout { .. }), "{error}");
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn device_transport_reads_through_poll() {
        // A FIFO pair stands in for the character device: one packet per write, replies read
        // back after poll() says readable.
        let directory = std::env::temp_dir().join(format!("loadgen-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("fifo");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path we own; no memory is shared.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let mut client = Client::connect(&Target::Device(path), Duration::from_secs(5)).unwrap();
        // The request lands in the FIFO; the "reply" written next is what the client reads.
        client
            .transport
            .send(&frame(op::READ, 1, 0, b"/x\0"))
            .unwrap();
        let mut echoed = [0u8; HEADER_LEN + 3];
        client
            .transport
            .read_exact_until(&mut echoed, Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(echoed.to_vec(), frame(op::READ, 1, 0, b"/x\0"));
        let _ = std::fs::remove_dir_all(&directory);
    }
}
