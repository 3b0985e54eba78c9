//! Fuzz target: `Request::parse` on an arbitrary type, options and payload must never panic,
//! must answer only EINVAL/ENOSYS, and every accepted request must survive emit → parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_protocol::{Errno, MessageType, ParseOptions, Request};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // Type: one byte mapped mostly onto 0..=28 so the payload parsers get the attention.
    let number = match data[0] {
        255 => 0xffff,
        254 => u32::MAX,
        byte => u32::from(byte % 29),
    };
    let options = ParseOptions {
        watch_depth: data[1] & 1 == 1,
    };
    let payload = &data[2..];
    let message_type = MessageType::from_u32(number);
    match Request::parse(message_type, payload, options) {
        Ok(request) => {
            assert_eq!(request.message_type(), message_type);
            let _ = request.path();
            let emitted = request.to_payload();
            let again =
                Request::parse(message_type, &emitted, options).expect("an emitted request parses");
            assert_eq!(again, request);
            assert_eq!(again.to_payload(), emitted);
        }
        Err(errno) => assert!(matches!(errno, Errno::EINVAL | Errno::ENOSYS)),
    }
});
