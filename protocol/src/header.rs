//! The 16-byte message header (`struct xsd_sockmsg` in xen.git
//! `xen/include/public/io/xs_wire.h`): `type`, `req_id`, `tx_id`, `len`, four `u32` in the
//! machine's native byte order, which is little-endian on every platform this server runs on.
//!
//! Two levels, as in smoltcp's `wire` module:
//! - [`HeaderView`] is a checked view over a byte buffer: [`HeaderView::new_checked`] verifies
//!   the buffer holds 16 bytes, after which no accessor can panic;
//! - [`Header`] is the validated value with [`Header::parse`], [`Header::emit`] and
//!   [`Header::buffer_len`].
//!
//! A header announcing more than [`PAYLOAD_MAX_BYTES`] is a protocol violation
//! ([`HeaderError::PayloadTooLong`]): C xenstored stops talking to the peer — a socket
//! connection is dropped, a ring gets `XENSTORE_ERROR_PROTO` in its `error` field and is
//! ignored from then on. [`HeaderError::violation`] names that policy.
//!
//! Nothing here panics on any input.

use core::fmt;

use crate::limits::{HEADER_LEN_BYTES, PAYLOAD_MAX_BYTES};
use crate::message_type::MessageType;

mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const REQ_ID: Range<usize> = 4..8;
    pub const TX_ID: Range<usize> = 8..12;
    pub const LEN: Range<usize> = 12..16;
}

/// Why a header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HeaderError {
    /// Fewer than 16 bytes (the caller should wait for more; never a violation by itself).
    Truncated,
    /// `len` exceeds 4096 bytes: a protocol violation, see [`HeaderError::violation`].
    PayloadTooLong {
        /// The announced length.
        len: u32,
    },
}

/// What the server must do about a peer whose framing is broken (C xenstored's reaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Socket: close the connection. Ring: write `XENSTORE_ERROR_PROTO` (3) into the `error`
    /// field (see [`crate::ring::ERROR_PROTO`]) and stop processing the ring.
    Protocol,
}

impl Violation {
    /// The value a ring's `error` field gets ([`crate::ring::ERROR_PROTO`]).
    pub const fn ring_error_code(self) -> u32 {
        match self {
            Violation::Protocol => crate::ring::ERROR_PROTO,
        }
    }
}

impl HeaderError {
    /// The connection policy for this error; `None` for [`HeaderError::Truncated`] (wait for
    /// more bytes).
    pub fn violation(self) -> Option<Violation> {
        match self {
            HeaderError::Truncated => None,
            HeaderError::PayloadTooLong { .. } => Some(Violation::Protocol),
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated => formatter.write_str("header shorter than 16 bytes"),
            HeaderError::PayloadTooLong { len } => {
                write!(
                    formatter,
                    "payload length {len} exceeds {PAYLOAD_MAX_BYTES}"
                )
            }
        }
    }
}

fn read_u32(bytes: &[u8], range: core::ops::Range<usize>) -> u32 {
    // The view guarantees 16 bytes; the fallback only keeps this provably panic-free.
    bytes
        .get(range)
        .and_then(|slice| <[u8; 4]>::try_from(slice).ok())
        .map_or(0, u32::from_le_bytes)
}

fn write_u32(bytes: &mut [u8], range: core::ops::Range<usize>, value: u32) {
    if let Some(slice) = bytes.get_mut(range) {
        slice.copy_from_slice(&value.to_le_bytes());
    }
}

/// A view over the first 16 bytes of a buffer, interpreted as a message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderView<T> {
    /// Wraps `buffer` after checking it holds at least 16 bytes (extra bytes, e.g. the
    /// payload, are allowed and ignored).
    pub fn new_checked(buffer: T) -> Result<HeaderView<T>, HeaderError> {
        if buffer.as_ref().len() < HEADER_LEN_BYTES {
            return Err(HeaderError::Truncated);
        }
        Ok(HeaderView { buffer })
    }

    /// The raw `type` field.
    pub fn message_type_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TYPE)
    }

    /// The `type` field decoded (never fails: unknown numbers are kept).
    pub fn message_type(&self) -> MessageType {
        MessageType::from_u32(self.message_type_number())
    }

    /// The `req_id` field.
    pub fn req_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REQ_ID)
    }

    /// The `tx_id` field.
    pub fn tx_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TX_ID)
    }

    /// The `len` field (not yet validated).
    pub fn len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::LEN)
    }

    /// True if `len` is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HeaderView<T> {
    /// Sets the `type` field.
    pub fn set_message_type(&mut self, message_type: MessageType) {
        write_u32(self.buffer.as_mut(), field::TYPE, message_type.as_u32());
    }

    /// Sets the `req_id` field.
    pub fn set_req_id(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REQ_ID, value);
    }

    /// Sets the `tx_id` field.
    pub fn set_tx_id(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::TX_ID, value);
    }

    /// Sets the `len` field.
    pub fn set_len(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::LEN, value);
    }
}

/// A validated header: `len` is at most 4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Header {
    /// Message type.
    pub message_type: MessageType,
    /// Request id chosen by the client, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 for none.
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// Validates a view: `len` must be at most 4096.
    pub fn parse<T: AsRef<[u8]>>(view: &HeaderView<T>) -> Result<Header, HeaderError> {
        let len = view.len();
        if len as usize > PAYLOAD_MAX_BYTES {
            return Err(HeaderError::PayloadTooLong { len });
        }
        Ok(Header {
            message_type: view.message_type(),
            req_id: view.req_id(),
            tx_id: view.tx_id(),
            len,
        })
    }

    /// Checks and parses the first 16 bytes of `bytes`.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Header, HeaderError> {
        Header::parse(&HeaderView::new_checked(bytes)?)
    }

    /// Bytes [`Header::emit`] writes: always 16.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN_BYTES
    }

    /// Writes the header into a view.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, view: &mut HeaderView<T>) {
        view.set_message_type(self.message_type);
        view.set_req_id(self.req_id);
        view.set_tx_id(self.tx_id);
        view.set_len(self.len);
    }

    /// The 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN_BYTES] {
        let mut bytes = [0; HEADER_LEN_BYTES];
        let mut view = HeaderView { buffer: &mut bytes };
        self.emit(&mut view);
        bytes
    }

    /// The payload length as `usize` (at most 4096 for a parsed header).
    pub fn payload_len(&self) -> usize {
        self.len as usize
    }

    /// The header of a reply to this request: same `req_id` and `tx_id`, the given type and
    /// length.
    pub fn reply(&self, message_type: MessageType, len: u32) -> Header {
        Header {
            message_type,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: [u8; 16] = [
        11, 0, 0, 0, // type WRITE
        0x78, 0x56, 0x34, 0x12, // req_id
        5, 0, 0, 0, // tx_id
        0x00, 0x10, 0, 0, // len 4096
    ];

    #[test]
    fn golden_bytes() {
        let header = Header::parse_bytes(&GOLDEN).unwrap();
        assert_eq!(
            header,
            Header {
                message_type: MessageType::Write,
                req_id: 0x1234_5678,
                tx_id: 5,
                len: 4096
            }
        );
        assert_eq!(header.to_bytes(), GOLDEN);
        assert_eq!(header.buffer_len(), 16);
    }

    #[test]
    fn view_accessors_and_setters() {
        let mut bytes = [0u8; 20];
        let mut view = HeaderView::new_checked(&mut bytes[..]).unwrap();
        view.set_message_type(MessageType::Invalid);
        view.set_req_id(u32::MAX);
        view.set_tx_id(1);
        view.set_len(4097);
        assert_eq!(view.message_type(), MessageType::Invalid);
        assert_eq!(view.message_type_number(), 0xffff);
        assert_eq!(view.req_id(), u32::MAX);
        assert_eq!(view.tx_id(), 1);
        assert_eq!(view.len(), 4097);
        assert!(!view.is_empty());
        assert_eq!(
            Header::parse(&view),
            Err(HeaderError::PayloadTooLong { len: 4097 })
        );
        assert_eq!(&bytes[16..], [0; 4]);
    }

    #[test]
    fn errors_and_policy() {
        assert_eq!(
            HeaderView::new_checked(&GOLDEN[..15]),
            Err(HeaderError::Truncated)
        );
        assert_eq!(Header::parse_bytes(&[]), Err(HeaderError::Truncated));
        assert_eq!(HeaderError::Truncated.violation(), None);
        let mut too_long = GOLDEN;
        too_long[12..].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = Header::parse_bytes(&too_long).unwrap_err();
        assert_eq!(error, HeaderError::PayloadTooLong { len: u32::MAX });
        assert_eq!(error.violation(), Some(Violation::Protocol));
        assert_eq!(Violation::Protocol.ring_error_code(), 3);
    }

    #[test]
    fn reply_header_echoes_ids() {
        let request = Header::parse_bytes(&GOLDEN).unwrap();
        let reply = request.reply(MessageType::Error, 7);
        assert_eq!(
            reply,
            Header {
                message_type: MessageType::Error,
                req_id: 0x1234_5678,
                tx_id: 5,
                len: 7
            }
        );
    }
}
