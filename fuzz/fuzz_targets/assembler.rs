//! Fuzz target: the packet assembler fed an arbitrary byte stream in arbitrary pieces must
//! never panic and must yield exactly what one-shot `Message::decode` yields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::message::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_seed, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk_seed % 64) + 1;

    // Reference: one-shot decoding of the whole stream.
    let mut whole = Vec::new();
    let mut rest = stream;
    let mut whole_failed = false;
    loop {
        match Message::decode(rest) {
            Ok(Some((message, used))) => {
                whole.push(message);
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(_) => {
                whole_failed = true;
                break;
            }
        }
    }

    // Assembler, in pieces of `chunk` bytes, bounded by `wanted()` half of the time.
    let mut assembler = Assembler::new();
    let mut split = Vec::new();
    let mut failed = false;
    let mut input = stream;
    'outer: while !input.is_empty() {
        let take = if chunk_seed & 0x80 != 0 {
            chunk.min(assembler.wanted())
        } else {
            chunk
        };
        let (piece, tail) = input.split_at(take.min(input.len()));
        input = tail;
        let mut piece = piece;
        while !piece.is_empty() {
            match assembler.feed(piece) {
                Ok(fed) => {
                    assert!(fed.consumed > 0);
                    piece = &piece[fed.consumed..];
                    if let Some(message) = fed.message {
                        assert!(message.payload().len() <= 4096);
                        split.push(message);
                    }
                }
                Err(_) => {
                    assert!(assembler.is_idle());
                    failed = true;
                    break 'outer;
                }
            }
        }
        assert!(assembler.check().is_ok());
    }
    assert_eq!(failed, whole_failed);
    assert_eq!(split, whole);
    if !failed {
        assert_eq!(assembler.partial_len(), rest.len());
    }
});
