//! The packet assembler: turns a byte stream (ring or socket, in arbitrary pieces) into
//! complete [`Message`]s.
//!
//! Its partial state — header bytes received so far, payload bytes received so far — is a plain
//! value ([`Assembler`], serde-serializable with the `serde` feature) because the server
//! persists it for crash recovery: after a restart the assembler continues exactly where the
//! old process stopped, and bytes already consumed from a ring are not lost.
//!
//! Like C xenstored (`handle_input` in xen.git `tools/xenstored/core.c`) it reads the header
//! first and then exactly `len` payload bytes; [`Assembler::wanted`] tells the transport how
//! many bytes to take next so that nothing beyond the current message needs to be read (flow
//! control leaves unread requests in the ring). A header announcing more than 4096 bytes is
//! [`AssemblerError::Header`]: drop the socket / set `XENSTORE_ERROR_PROTO` on the ring.
//!
//! Nothing here panics on any input, including a corrupt deserialized state (reported as
//! [`AssemblerError::CorruptState`]).

use alloc::vec::Vec;
use core::fmt;

use crate::header::{Header, HeaderError, Violation};
use crate::limits::{HEADER_LEN_BYTES, PAYLOAD_MAX_BYTES, RING_SIZE_BYTES};
use crate::message::Message;
use crate::ring::{ERROR_PROTO, RingError, RingMemory, ServerRing};

/// Why the assembler stopped. After an error the assembler is reset; the connection should be
/// dropped as [`AssemblerError::violation`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AssemblerError {
    /// The header breaks the framing rules (`len` > 4096).
    Header(HeaderError),
    /// The (deserialized) state violates the assembler's invariants.
    CorruptState,
}

impl AssemblerError {
    /// What to do with the connection: always a protocol violation.
    pub fn violation(self) -> Violation {
        Violation::Protocol
    }
}

impl From<HeaderError> for AssemblerError {
    fn from(error: HeaderError) -> AssemblerError {
        AssemblerError::Header(error)
    }
}

impl fmt::Display for AssemblerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssemblerError::Header(error) => write!(formatter, "bad header: {error}"),
            AssemblerError::CorruptState => formatter.write_str("corrupt assembler state"),
        }
    }
}

/// The result of one [`Assembler::feed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fed {
    /// Bytes taken from the input (the rest belongs to later messages).
    pub consumed: usize,
    /// The message completed by these bytes, if any.
    pub message: Option<Message>,
}

/// Partial-message state. Invariants: `header_filled <= 16`; `payload` is empty until the
/// header is complete, and then shorter than the header's `len` (a complete message is handed
/// out and the state cleared at once).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Assembler {
    header: [u8; HEADER_LEN_BYTES],
    header_filled: u8,
    payload: Vec<u8>,
}

impl Assembler {
    /// An assembler at a message boundary.
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// True at a message boundary (no partial bytes held).
    pub fn is_idle(&self) -> bool {
        self.header_filled == 0 && self.payload.is_empty()
    }

    /// Drops any partial message (reconnect, reset).
    pub fn reset(&mut self) {
        *self = Assembler::default();
    }

    /// Bytes held for the current partial message.
    pub fn partial_len(&self) -> usize {
        usize::from(self.header_filled) + self.payload.len()
    }

    /// The header of the message being assembled, once all 16 bytes are in.
    pub fn pending_header(&self) -> Option<Header> {
        if usize::from(self.header_filled) == HEADER_LEN_BYTES {
            Header::parse_bytes(&self.header).ok()
        } else {
            None
        }
    }

    /// Bytes needed to finish the current part: the rest of the header, or the rest of the
    /// payload. Never 0 (at least 1 to make progress); a corrupt state reports 1 so that the
    /// next [`Assembler::feed`] surfaces the error.
    pub fn wanted(&self) -> usize {
        let filled = usize::from(self.header_filled);
        if filled < HEADER_LEN_BYTES {
            return HEADER_LEN_BYTES - filled;
        }
        match self.pending_header() {
            Some(header) => header
                .payload_len()
                .saturating_sub(self.payload.len())
                .max(1),
            None => 1,
        }
    }

    /// Checks the invariants (for a state just deserialized).
    pub fn check(&self) -> Result<(), AssemblerError> {
        let filled = usize::from(self.header_filled);
        if filled > HEADER_LEN_BYTES {
            return Err(AssemblerError::CorruptState);
        }
        if filled < HEADER_LEN_BYTES {
            return if self.payload.is_empty() {
                Ok(())
            } else {
                Err(AssemblerError::CorruptState)
            };
        }
        let header = Header::parse_bytes(&self.header).map_err(|_| AssemblerError::CorruptState)?;
        if self.payload.len() >= header.payload_len() && header.payload_len() > 0 {
            return Err(AssemblerError::CorruptState);
        }
        if header.payload_len() == 0 && !self.payload.is_empty() {
            return Err(AssemblerError::CorruptState);
        }
        Ok(())
    }

    /// Takes bytes from `input` up to the end of the current message. Returns how many were
    /// consumed and the message if it is now complete. Call again with the unconsumed rest.
    /// On error the assembler is reset and the connection must be dropped.
    pub fn feed(&mut self, input: &[u8]) -> Result<Fed, AssemblerError> {
        let result = self.feed_inner(input);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<Fed, AssemblerError> {
        self.check()?;
        let mut consumed = 0;
        let filled = usize::from(self.header_filled);
        if filled < HEADER_LEN_BYTES {
            let take = (HEADER_LEN_BYTES - filled).min(input.len());
            self.header[filled..filled + take].copy_from_slice(&input[..take]);
            self.header_filled = (filled + take) as u8;
            consumed = take;
            if usize::from(self.header_filled) < HEADER_LEN_BYTES {
                return Ok(Fed {
                    consumed,
                    message: None,
                });
            }
        }
        // Header complete: validate it (again, cheaply) before taking payload.
        let header = Header::parse_bytes(&self.header)?;
        let rest = &input[consumed..];
        let take = (header.payload_len() - self.payload.len()).min(rest.len());
        if self.payload.capacity() == 0 {
            self.payload
                .reserve_exact(header.payload_len().min(PAYLOAD_MAX_BYTES));
        }
        self.payload.extend_from_slice(&rest[..take]);
        consumed += take;
        if self.payload.len() < header.payload_len() {
            return Ok(Fed {
                consumed,
                message: None,
            });
        }
        let payload = core::mem::take(&mut self.payload);
        self.reset();
        let message = Message::from_parts(header, payload).ok_or(AssemblerError::CorruptState)?;
        Ok(Fed {
            consumed,
            message: Some(message),
        })
    }

    /// Feeds all of `input`, appending every completed message to `out`. On error the messages
    /// completed before the bad header are still in `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<Message>) -> Result<(), AssemblerError> {
        while !input.is_empty() {
            let fed = self.feed(input)?;
            input = &input[fed.consumed..];
            if let Some(message) = fed.message {
                out.push(message);
            }
        }
        Ok(())
    }
}

/// Why reading requests from a ring stopped; fatal for that ring. Policy: write
/// [`RingInputError::error_code`] into the page's `error` field and stop serving the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingInputError {
    /// Inconsistent indices (`XENSTORE_ERROR_RINGIDX`).
    Ring(RingError),
    /// Broken framing (`XENSTORE_ERROR_PROTO`).
    Framing(AssemblerError),
}

impl RingInputError {
    /// The value for the ring's `error` field.
    pub fn error_code(self) -> u32 {
        match self {
            RingInputError::Ring(error) => error.error_code(),
            RingInputError::Framing(_) => ERROR_PROTO,
        }
    }
}

impl fmt::Display for RingInputError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingInputError::Ring(error) => error.fmt(formatter),
            RingInputError::Framing(error) => error.fmt(formatter),
        }
    }
}

/// The result of [`Assembler::read_ring`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "the guest must be notified when `notify` is true"]
pub struct RingRead {
    /// The message completed, if any (at most one per call).
    pub message: Option<Message>,
    /// Bytes consumed from the ring.
    pub bytes: usize,
    /// True if `req_cons` moved: notify the guest (it may be waiting for space).
    pub notify: bool,
}

impl Assembler {
    /// Reads from the request ring until one message is complete or the ring is empty, never
    /// taking bytes beyond the end of that message (they stay in the ring for later, which is
    /// how the server applies flow control).
    pub fn read_ring<M: RingMemory>(
        &mut self,
        ring: &ServerRing<M>,
    ) -> Result<RingRead, RingInputError> {
        let mut buffer = [0u8; RING_SIZE_BYTES];
        let mut total = 0;
        // Each round either completes a part or empties the ring; bounded by the largest
        // message (16 + 4096 bytes) divided into at most 1024-byte reads, plus one.
        for _ in 0..=(HEADER_LEN_BYTES + PAYLOAD_MAX_BYTES) / RING_SIZE_BYTES + 2 {
            let want = self.wanted().min(RING_SIZE_BYTES);
            let transfer = ring
                .read_requests(&mut buffer[..want])
                .map_err(RingInputError::Ring)?;
            if transfer.bytes == 0 {
                break;
            }
            total += transfer.bytes;
            let fed = self
                .feed(&buffer[..transfer.bytes])
                .map_err(RingInputError::Framing)?;
            if fed.message.is_some() {
                return Ok(RingRead {
                    message: fed.message,
                    bytes: total,
                    notify: true,
                });
            }
        }
        Ok(RingRead {
            message: None,
            bytes: total,
            notify: total > 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message_type::MessageType;
    use alloc::vec;

    fn write_message() -> Message {
        Message::new(MessageType::Write, 3, 0, b"/a\0value".to_vec()).unwrap()
    }

    #[test]
    fn byte_by_byte() {
        let message = write_message();
        let bytes = message.encode();
        let mut assembler = Assembler::new();
        for (index, byte) in bytes.iter().enumerate() {
            assert!(assembler.wanted() >= 1);
            let fed = assembler.feed(core::slice::from_ref(byte)).unwrap();
            assert_eq!(fed.consumed, 1);
            if index + 1 == bytes.len() {
                assert_eq!(fed.message, Some(message.clone()));
                assert!(assembler.is_idle());
            } else {
                assert_eq!(fed.message, None);
                assert_eq!(assembler.partial_len(), index + 1);
            }
        }
    }

    #[test]
    fn wanted_reads_exactly_one_message() {
        let message = write_message();
        let mut bytes = message.encode();
        bytes.extend_from_slice(&message.encode());
        let mut assembler = Assembler::new();
        assert_eq!(assembler.wanted(), 16);
        let fed = assembler.feed(&bytes[..16]).unwrap();
        assert_eq!(fed.consumed, 16);
        assert_eq!(assembler.wanted(), 8);
        assert_eq!(assembler.pending_header(), Some(*message.header()));
        let fed = assembler.feed(&bytes[16..]).unwrap();
        assert_eq!(fed.consumed, 8);
        assert_eq!(fed.message, Some(message));
    }

    #[test]
    fn empty_payload_completes_with_header() {
        let message = Message::new(MessageType::GetFeature, 1, 0, vec![]).unwrap();
        let mut assembler = Assembler::new();
        let fed = assembler.feed(&message.encode()).unwrap();
        assert_eq!(fed.consumed, 16);
        assert_eq!(fed.message, Some(message));
        assert_eq!(assembler.feed(&[]).unwrap().consumed, 0);
    }

    #[test]
    fn oversized_header_is_an_error_and_resets() {
        let mut bytes = write_message().encode();
        bytes[12..16].copy_from_slice(&4097u32.to_le_bytes());
        let mut assembler = Assembler::new();
        assert_eq!(assembler.feed(&bytes[..10]).unwrap().consumed, 10);
        assert_eq!(
            assembler.feed(&bytes[10..]),
            Err(AssemblerError::Header(HeaderError::PayloadTooLong {
                len: 4097
            }))
        );
        assert!(assembler.is_idle());
    }

    #[test]
    fn corrupt_states_are_errors_not_panics() {
        let corrupt = [
            Assembler {
                header: [0; 16],
                header_filled: 17,
                payload: vec![],
            },
            Assembler {
                header: [0; 16],
                header_filled: 3,
                payload: vec![1],
            },
            Assembler {
                header: [0; 16],
                header_filled: 16,
                payload: vec![1],
            },
            Assembler {
                header: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0],
                header_filled: 16,
                payload: vec![1, 2],
            },
            Assembler {
                header: [0xff; 16],
                header_filled: 16,
                payload: vec![],
            },
        ];
        for mut state in corrupt {
            assert!(state.wanted() >= 1);
            assert_eq!(state.check(), Err(AssemblerError::CorruptState));
            assert_eq!(state.feed(b"x"), Err(AssemblerError::CorruptState));
            assert!(state.is_idle());
        }
    }

    #[test]
    fn read_ring_takes_one_message_at_a_time() {
        use crate::ring::{GuestRing, InMemoryPage};
        let page = InMemoryPage::new();
        let guest = GuestRing::new(&page);
        let server = ServerRing::new(&page);
        let first = write_message();
        let big = Message::new(MessageType::Write, 5, 0, vec![b'x'; 3000]).unwrap();
        let mut stream = first.encode();
        stream.extend_from_slice(&big.encode());
        let mut assembler = Assembler::new();
        let mut sent = guest.write_requests(&stream).unwrap().bytes;
        let read = assembler.read_ring(&server).unwrap();
        assert_eq!(read.message, Some(first.clone()));
        assert_eq!(read.bytes, first.buffer_len());
        // The rest of the big message stays in the ring until asked for.
        assert_eq!(server.request_bytes_available().unwrap(), sent - read.bytes);
        let mut got = None;
        while got.is_none() {
            sent += guest.write_requests(&stream[sent..]).unwrap().bytes;
            let read = assembler.read_ring(&server).unwrap();
            assert!(read.notify || read.bytes == 0);
            got = read.message;
        }
        assert_eq!(got, Some(big));
        let empty = assembler.read_ring(&server).unwrap();
        assert_eq!((empty.bytes, empty.notify, empty.message), (0, false, None));

        let mut bad = write_message().encode();
        bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
        let _ = guest.write_requests(&bad).unwrap();
        let error = assembler.read_ring(&server).unwrap_err();
        assert_eq!(error.error_code(), ERROR_PROTO);
        page.set_field(crate::ring::Field::ReqProd, 99_999);
        let error = assembler.read_ring(&server).unwrap_err();
        assert_eq!(error.error_code(), crate::ring::ERROR_RINGIDX);
    }

    #[test]
    fn push_collects_all_messages() {
        let first = write_message();
        let second = Message::new(MessageType::Read, 4, 9, b"/b\0".to_vec()).unwrap();
        let mut bytes = first.encode();
        bytes.extend_from_slice(&second.encode());
        bytes.extend_from_slice(&first.encode()[..5]);
        let mut assembler = Assembler::new();
        let mut out = Vec::new();
        assembler.push(&bytes, &mut out).unwrap();
        assert_eq!(out, [first, second]);
        assert_eq!(assembler.partial_len(), 5);
    }
}
