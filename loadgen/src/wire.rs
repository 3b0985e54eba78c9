//! A minimal blocking xenstore wire client over a Unix stream socket, independent of this
//! project's crates so the load generator runs unchanged against C xenstored and oxenstored.
//! Format: 16-byte header (type, req_id, tx_id, len; little-endian u32) + payload
//! (xen.git `xen/include/public/io/xs_wire.h`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Message types used here (xs_wire.h numbering).
pub mod op {
    /// XS_READ.
    pub const READ: u32 = 2;
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
}

/// Largest payload in either direction.
pub const PAYLOAD_MAX: usize = 4096;

/// Why a request failed.
#[derive(Debug)]
pub enum WireError {
    /// Socket trouble (including the server closing the connection).
    Io(io::Error),
    /// The server answered with `XS_ERROR` and this errno name.
    Server(String),
    /// The reply did not match the protocol (wrong req_id, oversized).
    Protocol(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(error) => write!(formatter, "socket: {error}"),
            WireError::Server(name) => write!(formatter, "server error {name}"),
            WireError::Protocol(text) => write!(formatter, "protocol: {text}"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(error: io::Error) -> WireError {
        WireError::Io(error)
    }
}

/// A connected client.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    next_req_id: u32,
    events: VecDeque<(String, String)>,
}

fn frame(message_type: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + payload.len());
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

impl Client {
    /// Connects with a reply timeout.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Client> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(Client {
            stream,
            next_req_id: 1,
            events: VecDeque::new(),
        })
    }

    fn read_packet(&mut self) -> Result<(u32, u32, Vec<u8>), WireError> {
        let mut header = [0u8; 16];
        self.stream.read_exact(&mut header)?;
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
        self.stream.read_exact(&mut payload)?;
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
        self.stream
            .write_all(&frame(message_type, req_id, tx_id, payload))?;
        loop {
            let (reply_type, reply_id, payload) = self.read_packet()?;
            if reply_type == op::WATCH_EVENT {
                let mut parts = payload.split(|byte| *byte == 0);
                let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                self.events.push_back((path, token));
                continue;
            }
            if reply_id != req_id {
                return Err(WireError::Protocol(format!(
                    "reply for req_id {reply_id}, expected {req_id}"
                )));
            }
            if reply_type == op::ERROR {
                return Err(WireError::Server(
                    String::from_utf8_lossy(&payload)
                        .trim_end_matches('\0')
                        .to_string(),
                ));
            }
            return Ok(payload);
        }
    }

    /// Waits for the next watch event `(path, token)` (up to the read timeout).
    pub fn next_event(&mut self) -> Result<(String, String), WireError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            let (reply_type, _, payload) = self.read_packet()?;
            if reply_type == op::WATCH_EVENT {
                let mut parts = payload.split(|byte| *byte == 0);
                let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                self.events.push_back((path, token));
            }
        }
    }
}
