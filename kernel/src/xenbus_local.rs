//! A xenstore client for the xenstore domain itself, over the server's in-memory socket API.
//!
//! The xenstore domain cannot reach "a" xenstore through a ring: it IS the xenstore. Its own
//! device frontends (blkfront) therefore talk to the server in the same address space through
//! a privileged socket connection (`Server::socket_open`): a request is encoded with
//! `xenstore-protocol`, fed with `socket_input`, the server is stepped, and the reply (plus
//! any watch events that arrived meanwhile) is read from `socket_output` / `socket_sent`.
//!
//! Contract: calls are synchronous for the caller but bounded ([`STEPS_PER_CALL_MAX`] server
//! steps); a request that gets no reply is an error, never a hang. Watch events are queued and
//! handed out by [`LocalXenbus::take_events`]. Generic over the server's type parameters, so
//! the journal type can change without touching this file. Stepping the server here also
//! serves every other connection, exactly as the main loop's step would.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use xenstore_protocol::{Errno, Message, MessageType, Request, reply};
use xenstore_server::{ConnectionId, Engine, Journal, Platform, Server};

/// Server steps one request may take before it counts as unanswered.
pub const STEPS_PER_CALL_MAX: usize = 16;
/// Watch events kept at most (older ones are dropped; the driver re-reads state anyway).
pub const EVENTS_QUEUED_MAX: usize = 64;

/// Why a local xenstore call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XenbusError {
    /// The server refused to open the connection (table full).
    Open,
    /// The request could not be encoded (payload too large).
    Encode(Errno),
    /// The server's input buffer refused the request.
    InputFull,
    /// A server step failed (journal failure); the text is the server's error.
    Step(String),
    /// No reply after [`STEPS_PER_CALL_MAX`] steps.
    NoReply,
    /// The server answered with `XS_ERROR` (its errno name).
    Xs(String),
    /// The reply stream broke the framing rules or had an unexpected type.
    Protocol,
}

impl core::fmt::Display for XenbusError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XenbusError::Open => f.write_str("cannot open a local connection"),
            XenbusError::Encode(errno) => write!(f, "request not encodable: {errno}"),
            XenbusError::InputFull => f.write_str("server input buffer full"),
            XenbusError::Step(error) => write!(f, "server step failed: {error}"),
            XenbusError::NoReply => write!(f, "no reply within {STEPS_PER_CALL_MAX} steps"),
            XenbusError::Xs(errno) => write!(f, "xenstore error {errno}"),
            XenbusError::Protocol => f.write_str("malformed reply stream"),
        }
    }
}

/// A watch event: the path that changed and the token given to WATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// The local client.
#[derive(Debug)]
pub struct LocalXenbus {
    id: ConnectionId,
    next_req_id: u32,
    received: Vec<u8>,
    events: VecDeque<WatchEvent>,
}

impl LocalXenbus {
    /// Opens a privileged socket connection on `server`.
    pub fn open<P: Platform, E: Engine, J: Journal<E::Changes>>(
        server: &mut Server<P, E, J>,
    ) -> Result<LocalXenbus, XenbusError> {
        let id = server.socket_open().map_err(|_| XenbusError::Open)?;
        Ok(LocalXenbus {
            id,
            next_req_id: 1,
            received: Vec::new(),
            events: VecDeque::new(),
        })
    }

    /// The server connection this client uses.
    pub fn connection(&self) -> ConnectionId {
        self.id
    }

    /// True when the server has output (a reply or a watch event) waiting for us, or events
    /// are queued: the cheap check the main loop makes before polling a driver.
    pub fn has_input<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &self,
        server: &Server<P, E, J>,
    ) -> bool {
        !self.events.is_empty() || !server.socket_output(self.id).is_empty()
    }

    /// Moves the server's output for us into `received`, then decodes whole messages: watch
    /// events are queued, other messages are returned in order.
    fn drain<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<Vec<Message>, XenbusError> {
        // Bounded: each chunk is consumed; the output queue is finite.
        loop {
            let chunk = server.socket_output(self.id);
            if chunk.is_empty() {
                break;
            }
            let length = chunk.len();
            self.received.extend_from_slice(chunk);
            server.socket_sent(self.id, length);
        }
        let mut replies = Vec::new();
        loop {
            match Message::decode(&self.received) {
                Ok(Some((message, used))) => {
                    self.received.drain(..used);
                    if message.message_type() == MessageType::WatchEvent {
                        self.queue_event(&message);
                    } else {
                        replies.push(message);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.received.clear();
                    return Err(XenbusError::Protocol);
                }
            }
        }
        Ok(replies)
    }

    fn queue_event(&mut self, message: &Message) {
        let Some((path, token)) = reply::parse_watch_event(message.payload()) else {
            log::warn!("xenbus_local: malformed watch event dropped");
            return;
        };
        if self.events.len() >= EVENTS_QUEUED_MAX {
            self.events.pop_front();
        }
        self.events.push_back(WatchEvent {
            path: String::from_utf8_lossy(path).into_owned(),
            token: String::from_utf8_lossy(token).into_owned(),
        });
    }

    /// Watch events received so far (also drains pending server output).
    pub fn take_events<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<Vec<WatchEvent>, XenbusError> {
        let stray = self.drain(server)?;
        if !stray.is_empty() {
            log::warn!(
                "xenbus_local: {} unexpected reply(ies) dropped",
                stray.len()
            );
        }
        Ok(self.events.drain(..).collect())
    }

    /// Sends one request and returns the reply payload (`XS_ERROR` becomes an error).
    fn call<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
        request: &Request<'_>,
    ) -> Result<Vec<u8>, XenbusError> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        let frame = Message::request(request, req_id, 0)
            .map_err(XenbusError::Encode)?
            .encode();
        if server.socket_input_room(self.id) < frame.len() {
            return Err(XenbusError::InputFull);
        }
        if server.socket_input(self.id, &frame) != frame.len() {
            return Err(XenbusError::InputFull);
        }
        for _ in 0..STEPS_PER_CALL_MAX {
            server
                .step()
                .map_err(|error| XenbusError::Step(format!("{error}")))?;
            let mut answer = None;
            for message in self.drain(server)? {
                if message.header().req_id == req_id && answer.is_none() {
                    answer = Some(message);
                } else {
                    log::warn!(
                        "xenbus_local: unexpected reply (req_id {}) dropped",
                        message.header().req_id
                    );
                }
            }
            if let Some(message) = answer {
                if message.message_type() == MessageType::Error {
                    let name = reply::parse_error(message.payload())
                        .map(|errno| String::from(errno.name()))
                        .unwrap_or_else(|| String::from_utf8_lossy(message.payload()).into());
                    return Err(XenbusError::Xs(name));
                }
                if message.message_type() != request.message_type() {
                    return Err(XenbusError::Protocol);
                }
                return Ok(message.into_payload());
            }
        }
        Err(XenbusError::NoReply)
    }

    /// READ; `Ok(None)` when the node does not exist.
    pub fn read<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
        path: &str,
    ) -> Result<Option<Vec<u8>>, XenbusError> {
        match self.call(server, &Request::Read { path }) {
            Ok(value) => Ok(Some(value)),
            Err(XenbusError::Xs(errno)) if errno == Errno::ENOENT.name() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// WRITE.
    pub fn write<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
        path: &str,
        value: &[u8],
    ) -> Result<(), XenbusError> {
        self.call(server, &Request::Write { path, value })
            .map(|_| ())
    }

    /// DIRECTORY; an absent node lists as empty.
    pub fn directory<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
        path: &str,
    ) -> Result<Vec<String>, XenbusError> {
        match self.call(server, &Request::Directory { path }) {
            Ok(payload) => Ok(reply::parse_strings(&payload)
                .into_iter()
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .collect()),
            Err(XenbusError::Xs(errno)) if errno == Errno::ENOENT.name() => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// WATCH (the server fires it once at once, as every xenstored does).
    pub fn watch<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
        path: &str,
        token: &str,
    ) -> Result<(), XenbusError> {
        let request = Request::Watch {
            path,
            token: token.as_bytes(),
            depth: None,
        };
        self.call(server, &request).map(|_| ())
    }

    /// UNWATCH.
    pub fn unwatch<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
        path: &str,
        token: &str,
    ) -> Result<(), XenbusError> {
        let request = Request::Unwatch {
            path,
            token: token.as_bytes(),
        };
        self.call(server, &request).map(|_| ())
    }
}
