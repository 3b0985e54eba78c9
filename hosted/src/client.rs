//! A minimal blocking socket client speaking the xenstore wire protocol (for tests, the crash
//! harness and the load generator). Watch events that arrive while waiting for a reply are
//! kept in order and returned by [`SocketClient::next_event`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use xenstore_protocol::MessageType;
use xenstore_server::frame::{Header, encode_frame};

/// A reply or error from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Header (type `ERROR` for errors).
    pub header: Header,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Response {
    /// The errno name when this is an error reply.
    pub fn error(&self) -> Option<String> {
        (self.header.message_type == MessageType::Error.as_u32()).then(|| {
            String::from_utf8_lossy(&self.payload)
                .trim_end_matches('\0')
                .to_string()
        })
    }
}

/// A connected client.
#[derive(Debug)]
pub struct SocketClient {
    stream: UnixStream,
    next_req_id: u32,
    events: VecDeque<Vec<u8>>,
}

/// Reads one whole frame from a blocking stream.
pub fn read_frame(stream: &mut impl Read) -> io::Result<(Header, Vec<u8>)> {
    let mut header_bytes = [0u8; 16];
    stream.read_exact(&mut header_bytes)?;
    let header = Header::decode(&header_bytes);
    if header.len > 4096 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply payload over 4096 bytes",
        ));
    }
    let mut payload = vec![0u8; header.len as usize];
    stream.read_exact(&mut payload)?;
    Ok((header, payload))
}

impl SocketClient {
    /// Connects with a read timeout.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<SocketClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(SocketClient {
            stream,
            next_req_id: 1,
            events: VecDeque::new(),
        })
    }

    /// Sends raw bytes (bad-input tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request and waits for its reply.
    pub fn request(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
    ) -> io::Result<Response> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        self.stream
            .write_all(&encode_frame(message_type.as_u32(), req_id, tx_id, payload))?;
        loop {
            let (header, payload) = read_frame(&mut self.stream)?;
            if header.message_type == MessageType::WatchEvent.as_u32() {
                self.events.push_back(payload);
                continue;
            }
            if header.req_id != req_id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply for another request",
                ));
            }
            return Ok(Response { header, payload });
        }
    }

    /// Writes a value.
    pub fn write(&mut self, path: &str, value: &[u8]) -> io::Result<Response> {
        let mut payload = path.as_bytes().to_vec();
        payload.push(0);
        payload.extend_from_slice(value);
        self.request(MessageType::Write, 0, &payload)
    }

    /// Reads a value.
    pub fn read(&mut self, path: &str) -> io::Result<Response> {
        self.request(MessageType::Read, 0, format!("{path}\0").as_bytes())
    }

    /// The next watch event (waits up to the read timeout).
    pub fn next_event(&mut self) -> io::Result<Vec<u8>> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        loop {
            let (header, payload) = read_frame(&mut self.stream)?;
            if header.message_type == MessageType::WatchEvent.as_u32() {
                return Ok(payload);
            }
        }
    }
}
