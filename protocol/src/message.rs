//! Whole messages: a [`Header`] plus its payload, with encode/decode helpers and constructors
//! for the messages a server sends (replies, errors, watch events) and a client sends
//! (requests).
//!
//! A [`Message`] always satisfies `header.len == payload.len() <= 4096`; the constructors
//! enforce it (`E2BIG` otherwise), so encoding cannot produce an invalid frame. Decoding a
//! stream is incremental in [`crate::assembler`]; [`Message::decode`] is the one-shot form for
//! a buffer that may hold a whole message.
//!
//! Nothing here panics on any input.

use alloc::vec::Vec;

use crate::error::Errno;
use crate::header::{Header, HeaderError, HeaderView};
use crate::limits::{HEADER_LEN_BYTES, PAYLOAD_MAX_BYTES};
use crate::message_type::MessageType;
use crate::reply;
use crate::request::Request;

/// A complete message: header and payload, `header.len == payload.len()`.
///
/// With the `serde` feature it serializes as its header and payload; deserializing checks the
/// invariant again (a persisted message is peer-influenced data).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "MessageParts", into = "MessageParts")
)]
pub struct Message {
    header: Header,
    payload: Vec<u8>,
}

/// The serialized form of a [`Message`].
#[cfg(feature = "serde")]
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct MessageParts {
    header: Header,
    payload: Vec<u8>,
}

#[cfg(feature = "serde")]
impl TryFrom<MessageParts> for Message {
    type Error = &'static str;

    fn try_from(parts: MessageParts) -> Result<Message, Self::Error> {
        Message::from_parts(parts.header, parts.payload)
            .ok_or("message header length does not match its payload")
    }
}

#[cfg(feature = "serde")]
impl From<Message> for MessageParts {
    fn from(message: Message) -> MessageParts {
        MessageParts {
            header: message.header,
            payload: message.payload,
        }
    }
}

impl Message {
    /// A message with the given fields; `E2BIG` if the payload exceeds 4096 bytes.
    pub fn new(
        message_type: MessageType,
        req_id: u32,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Message, Errno> {
        if payload.len() > PAYLOAD_MAX_BYTES {
            return Err(Errno::E2BIG);
        }
        Ok(Message {
            header: Header {
                message_type,
                req_id,
                tx_id,
                len: payload.len() as u32,
            },
            payload,
        })
    }

    /// The request message a client sends for `request`.
    pub fn request(request: &Request<'_>, req_id: u32, tx_id: u32) -> Result<Message, Errno> {
        Message::new(request.message_type(), req_id, tx_id, request.to_payload())
    }

    /// A successful reply to `request`: the request's type, `req_id` and `tx_id`.
    pub fn reply(request: &Header, payload: Vec<u8>) -> Result<Message, Errno> {
        Message::new(request.message_type, request.req_id, request.tx_id, payload)
    }

    /// An `XS_ERROR` reply to `request` (keeps `req_id` and `tx_id`).
    pub fn error(request: &Header, errno: Errno) -> Message {
        let payload = reply::error(errno);
        Message {
            header: request.reply(MessageType::Error, payload.len() as u32),
            payload,
        }
    }

    /// An unsolicited `XS_WATCH_EVENT` (`req_id` = `tx_id` = 0); `E2BIG` if it does not fit
    /// (C xenstored drops such events).
    pub fn watch_event(path: &str, token: &[u8]) -> Result<Message, Errno> {
        Message::new(
            MessageType::WatchEvent,
            0,
            0,
            reply::watch_event(path, token)?,
        )
    }

    /// The header (its `len` equals the payload length).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        self.header.message_type
    }

    /// Gives the payload back.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Parses the payload as a client request.
    pub fn parse_request(
        &self,
        options: crate::request::ParseOptions,
    ) -> Result<Request<'_>, Errno> {
        Request::parse(self.header.message_type, &self.payload, options)
    }

    /// Bytes [`Message::emit`] writes: 16 + payload length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN_BYTES + self.payload.len()
    }

    /// Appends header and payload to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Header and payload as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buffer_len());
        self.emit(&mut out);
        out
    }

    /// Decodes the message at the start of `bytes`. `Ok(None)`: not enough bytes yet.
    /// `Ok(Some((message, used)))`: the message and the number of bytes it occupied.
    /// `Err(PayloadTooLong)`: the header breaks the framing rules (drop the peer).
    pub fn decode(bytes: &[u8]) -> Result<Option<(Message, usize)>, HeaderError> {
        let view = match HeaderView::new_checked(bytes) {
            Ok(view) => view,
            Err(HeaderError::Truncated) => return Ok(None),
            Err(other) => return Err(other),
        };
        let header = Header::parse(&view)?;
        let end = HEADER_LEN_BYTES + header.payload_len();
        match bytes.get(HEADER_LEN_BYTES..end) {
            Some(payload) => Ok(Some((
                Message {
                    header,
                    payload: payload.to_vec(),
                },
                end,
            ))),
            None => Ok(None),
        }
    }

    /// Builds a message from a validated header and its payload; `None` if the lengths
    /// disagree or the header is invalid.
    pub fn from_parts(header: Header, payload: Vec<u8>) -> Option<Message> {
        (header.payload_len() == payload.len() && payload.len() <= PAYLOAD_MAX_BYTES)
            .then_some(Message { header, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn golden_request_frame() {
        let message = Message::request(&Request::Read { path: "/a" }, 7, 3).unwrap();
        assert_eq!(
            message.encode(),
            [
                2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, b'/', b'a', 0
            ]
        );
        assert_eq!(message.buffer_len(), 19);
    }

    #[test]
    fn golden_error_and_event_frames() {
        let request = Header {
            message_type: MessageType::Read,
            req_id: 9,
            tx_id: 4,
            len: 3,
        };
        let error = Message::error(&request, Errno::ENOENT);
        let mut expected = vec![16, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0];
        expected.extend_from_slice(b"ENOENT\0");
        assert_eq!(error.encode(), expected);

        let event = Message::watch_event("/a", b"t").unwrap();
        let mut expected = vec![15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0];
        expected.extend_from_slice(b"/a\0t\0");
        assert_eq!(event.encode(), expected);

        let ok = Message::reply(&request, reply::ok()).unwrap();
        assert_eq!(ok.header().req_id, 9);
        assert_eq!(ok.message_type(), MessageType::Read);
    }

    #[test]
    fn decode_whole_partial_and_oversized() {
        let message = Message::new(MessageType::Write, 1, 0, b"/a\0v".to_vec()).unwrap();
        let mut bytes = message.encode();
        bytes.extend_from_slice(b"next");
        assert_eq!(Message::decode(&bytes), Ok(Some((message.clone(), 20))));
        for cut in 0..20 {
            assert_eq!(Message::decode(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        let mut oversized = bytes.clone();
        oversized[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(
            Message::decode(&oversized),
            Err(HeaderError::PayloadTooLong { len: 4097 })
        );
    }

    #[test]
    fn payload_limit() {
        assert!(Message::new(MessageType::Read, 0, 0, vec![0; 4096]).is_ok());
        assert_eq!(
            Message::new(MessageType::Read, 0, 0, vec![0; 4097]),
            Err(Errno::E2BIG)
        );
        assert_eq!(
            Message::watch_event(&"a".repeat(4095), b""),
            Err(Errno::E2BIG)
        );
        let header = Header {
            message_type: MessageType::Read,
            req_id: 0,
            tx_id: 0,
            len: 2,
        };
        assert!(Message::from_parts(header, vec![1, 2]).is_some());
        assert!(Message::from_parts(header, vec![1]).is_none());
    }
}
