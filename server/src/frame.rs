//! Framing helpers for tools and tests (the hosted daemon's guest library and socket client,
//! the e2e suite): a raw header (`message_type` kept as the number on the wire) and a
//! packet-at-a-time reassembler — thin adapters over the `protocol` crate's
//! [`xenstore_protocol::Header`] and [`xenstore_protocol::assembler::Assembler`], which the
//! server core uses directly. No framing logic lives here.
//!
//! Follows xen.git `xen/include/public/io/xs_wire.h` (native little-endian on x86).

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use xenstore_protocol::MessageType;
use xenstore_protocol::limits::HEADER_LEN_BYTES;

/// A decoded message header with the raw type number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Message type number (kept raw so unknown types can be echoed).
    pub message_type: u32,
    /// Client-chosen request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// Decodes a header from exactly [`HEADER_LEN_BYTES`] bytes (no validation).
    pub fn decode(bytes: &[u8; HEADER_LEN_BYTES]) -> Header {
        let word = |index: usize| {
            let mut le = [0u8; 4];
            le.copy_from_slice(&bytes[index * 4..index * 4 + 4]);
            u32::from_le_bytes(le)
        };
        Header {
            message_type: word(0),
            req_id: word(1),
            tx_id: word(2),
            len: word(3),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN_BYTES] {
        xenstore_protocol::Header {
            message_type: MessageType::from_u32(self.message_type),
            req_id: self.req_id,
            tx_id: self.tx_id,
            len: self.len,
        }
        .to_bytes()
    }
}

impl From<&xenstore_protocol::Header> for Header {
    fn from(header: &xenstore_protocol::Header) -> Header {
        Header {
            message_type: header.message_type.as_u32(),
            req_id: header.req_id,
            tx_id: header.tx_id,
            len: header.len,
        }
    }
}

/// Encodes one whole frame (header + payload). Panics if the payload exceeds 4096 bytes
/// (callers build their own frames; a bad-input test wanting an oversized header writes it
/// by hand).
pub fn encode_frame(message_type: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    xenstore_protocol::Message::new(
        MessageType::from_u32(message_type),
        req_id,
        tx_id,
        payload.to_vec(),
    )
    .expect("frame payload over the protocol limit")
    .encode()
}

/// A whole packet taken from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Its header.
    pub header: Header,
    /// Its payload (`header.len` bytes).
    pub payload: Vec<u8>,
}

/// Framing violations. Policy: fatal for the connection (socket closed, ring error PROTO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header announced a payload larger than `XENSTORE_PAYLOAD_MAX`.
    PayloadTooLong,
}

/// Packet-at-a-time reassembler over the protocol crate's assembler.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assembler {
    inner: xenstore_protocol::assembler::Assembler,
}

impl Assembler {
    /// True when no byte of an unfinished packet is held.
    pub fn is_idle(&self) -> bool {
        self.inner.is_idle()
    }

    /// Bytes of the unfinished packet held so far.
    pub fn buffered_len(&self) -> usize {
        self.inner.partial_len()
    }

    /// Feeds bytes; stops at the end of the first completed packet. Returns how many bytes
    /// were consumed and the packet if one completed.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Packet>), FrameError> {
        let fed = self
            .inner
            .feed(input)
            .map_err(|_| FrameError::PayloadTooLong)?;
        let packet = fed.message.map(|message| Packet {
            header: Header::from(message.header()),
            payload: message.into_payload(),
        });
        Ok((fed.consumed, packet))
    }

    /// Checks the invariants of a state read back from storage.
    pub fn is_consistent(&self) -> bool {
        self.inner.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_by_byte_reassembly_matches_the_protocol_encoding() {
        let frame = encode_frame(2, 7, 0, b"/a\0");
        let mut assembler = Assembler::default();
        let mut packets = Vec::new();
        for byte in &frame {
            let (consumed, packet) = assembler.feed(core::slice::from_ref(byte)).unwrap();
            assert_eq!(consumed, 1);
            packets.extend(packet);
        }
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].header.req_id, 7);
        assert_eq!(packets[0].payload, b"/a\0");
        assert!(assembler.is_idle());
    }

    #[test]
    fn oversized_header_is_an_error() {
        let header = Header {
            message_type: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        };
        let mut assembler = Assembler::default();
        assert_eq!(
            assembler.feed(&header.encode()),
            Err(FrameError::PayloadTooLong)
        );
    }
}
