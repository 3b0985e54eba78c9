//! Fuzz target: the server ring over an arbitrary page image and an arbitrary sequence of
//! guest/server operations must never panic, must keep consistent indices consistent, and
//! must report corruption exactly when the consistency predicate fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_protocol::ring::{
    Field, GuestRing, InMemoryPage, Reconnect, ServerRing, indices_are_consistent,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let word = |index: usize| {
        u32::from_le_bytes([
            data[index * 4],
            data[index * 4 + 1],
            data[index * 4 + 2],
            data[index * 4 + 3],
        ])
    };
    let page = InMemoryPage::new();
    page.set_field(Field::ReqCons, word(0));
    page.set_field(Field::ReqProd, word(1));
    page.set_field(Field::RspCons, word(2));
    page.set_field(Field::RspProd, word(3));
    let server = ServerRing::new(&page);
    let guest = GuestRing::new(&page);
    let mut buffer = [0u8; 2048];
    for operation in data[16..].chunks(2) {
        let size = usize::from(*operation.get(1).unwrap_or(&0)) * 8;
        let request_ok =
            indices_are_consistent(page.field(Field::ReqProd), page.field(Field::ReqCons));
        let response_ok =
            indices_are_consistent(page.field(Field::RspProd), page.field(Field::RspCons));
        match operation[0] % 6 {
            0 => assert_eq!(guest.write_requests(&buffer[..size]).is_ok(), request_ok),
            1 => assert_eq!(
                server.read_requests(&mut buffer[..size]).is_ok(),
                request_ok
            ),
            2 => assert_eq!(server.write_replies(&buffer[..size]).is_ok(), response_ok),
            3 => assert_eq!(guest.read_replies(&mut buffer[..size]).is_ok(), response_ok),
            4 => guest.request_reconnect(),
            _ => {
                if server.complete_reconnect() == Reconnect::Completed {
                    assert!(guest.is_connected());
                    assert_eq!(server.request_bytes_available(), Ok(0));
                }
            }
        }
        // Operations never turn a consistent queue inconsistent.
        if request_ok {
            assert!(server.request_indices().is_ok());
        }
        if response_ok {
            assert!(server.response_indices().is_ok());
        }
    }
});
