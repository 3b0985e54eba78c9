//! Ring tests: golden page images, wrap-around at the 1024-byte boundary, free-running index
//! overflow at 2^32, index corruption, the reconnection handshake and a full request/reply
//! exchange through the assembler.

use std::sync::Arc;

use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::message::Message;
use xenstore_protocol::reply;
use xenstore_protocol::ring::{
    ERROR_RINGIDX, FEATURE_DOMID_ANY, FEATURE_ERROR, FEATURE_WATCHDEPTH, Field, GuestRing,
    InMemoryPage, Reconnect, RingError, ServerRing, Transfer,
};
use xenstore_protocol::{MessageType, ParseOptions, Request};

fn page_with_indices(req_cons: u32, req_prod: u32, rsp_cons: u32, rsp_prod: u32) -> InMemoryPage {
    let page = InMemoryPage::new();
    page.set_field(Field::ReqCons, req_cons);
    page.set_field(Field::ReqProd, req_prod);
    page.set_field(Field::RspCons, rsp_cons);
    page.set_field(Field::RspProd, rsp_prod);
    page
}

fn le(value: u32) -> [u8; 4] {
    value.to_le_bytes()
}

#[test]
fn golden_page_image_after_one_exchange() {
    let page = InMemoryPage::new();
    let server = ServerRing::new(&page);
    let guest = GuestRing::new(&page);
    server.set_server_features(FEATURE_ERROR | FEATURE_WATCHDEPTH | FEATURE_DOMID_ANY);
    guest.set_evtchn_port(7);

    let request = Message::request(&Request::Read { path: "/a" }, 1, 0)
        .unwrap()
        .encode();
    assert_eq!(
        guest.write_requests(&request).unwrap(),
        Transfer {
            bytes: 19,
            notify: true
        }
    );
    let mut buffer = [0u8; 64];
    let read = server.read_requests(&mut buffer).unwrap();
    assert_eq!(read.bytes, 19);
    let reply = Message::new(MessageType::Read, 1, 0, b"xyz".to_vec())
        .unwrap()
        .encode();
    assert_eq!(server.write_replies(&reply).unwrap().bytes, 19);

    let mut expected = [0u8; 4096];
    expected[..19].copy_from_slice(&request);
    expected[1024..1024 + 19].copy_from_slice(&reply);
    expected[2048..2052].copy_from_slice(&le(19)); // req_cons
    expected[2052..2056].copy_from_slice(&le(19)); // req_prod
    expected[2056..2060].copy_from_slice(&le(0)); // rsp_cons
    expected[2060..2064].copy_from_slice(&le(19)); // rsp_prod
    expected[2064..2068].copy_from_slice(&le(14)); // server_features
    expected[2076..2080].copy_from_slice(&le(7)); // evtchn_port
    assert_eq!(page.to_bytes(), expected);
    // And a page built from the image reads the same.
    let copy = InMemoryPage::from_bytes(&expected);
    assert_eq!(copy.to_bytes(), expected);
    assert_eq!(copy.field(Field::RspProd), 19);
    assert_eq!(ServerRing::new(&copy).evtchn_port(), 7);
}

#[test]
fn request_wraps_around_the_ring_end() {
    // cons = prod = 1020: a 10-byte write lands at 1020..1024 and 0..6.
    let page = page_with_indices(1020, 1020, 0, 0);
    let guest = GuestRing::new(&page);
    let server = ServerRing::new(&page);
    assert_eq!(guest.write_requests(b"0123456789").unwrap().bytes, 10);
    let image = page.to_bytes();
    assert_eq!(&image[1020..1024], b"0123");
    assert_eq!(&image[0..6], b"456789");
    assert_eq!(page.field(Field::ReqProd), 1030);
    let mut out = [0u8; 10];
    assert_eq!(server.read_requests(&mut out).unwrap().bytes, 10);
    assert_eq!(&out, b"0123456789");
    assert_eq!(page.field(Field::ReqCons), 1030);
}

#[test]
fn reply_wraps_around_the_ring_end() {
    let page = page_with_indices(0, 0, 1000, 1000);
    let server = ServerRing::new(&page);
    let guest = GuestRing::new(&page);
    let data: Vec<u8> = (0..100u8).collect();
    assert_eq!(server.write_replies(&data).unwrap().bytes, 100);
    let image = page.to_bytes();
    assert_eq!(&image[1024 + 1000..2048], &data[..24]);
    assert_eq!(&image[1024..1024 + 76], &data[24..]);
    let mut out = [0u8; 200];
    assert_eq!(guest.read_replies(&mut out).unwrap().bytes, 100);
    assert_eq!(&out[..100], &data[..]);
}

#[test]
fn indices_overflow_at_2_pow_32() {
    for start in [
        u32::MAX - 5,
        u32::MAX,
        u32::MAX - 1023,
        u32::MAX - 1024,
        0u32.wrapping_sub(512),
    ] {
        let page = page_with_indices(start, start, start, start);
        let guest = GuestRing::new(&page);
        let server = ServerRing::new(&page);
        let data: Vec<u8> = (0..1024u32).map(|index| (index * 7) as u8).collect();
        // Fill the request ring completely across the 2^32 boundary.
        assert_eq!(guest.write_requests(&data).unwrap().bytes, 1024);
        assert_eq!(page.field(Field::ReqProd), start.wrapping_add(1024));
        assert_eq!(guest.request_space_available().unwrap(), 0);
        assert_eq!(
            guest.write_requests(b"x").unwrap(),
            Transfer {
                bytes: 0,
                notify: false
            }
        );
        assert_eq!(server.request_bytes_available().unwrap(), 1024);
        // Read in odd pieces.
        let mut collected = Vec::new();
        let mut piece = [0u8; 333];
        loop {
            let transfer = server.read_requests(&mut piece).unwrap();
            if transfer.bytes == 0 {
                assert!(!transfer.notify);
                break;
            }
            collected.extend_from_slice(&piece[..transfer.bytes]);
        }
        assert_eq!(collected, data, "start {start:#x}");
        assert_eq!(page.field(Field::ReqCons), start.wrapping_add(1024));
        // Replies the same way.
        assert_eq!(server.write_replies(&data).unwrap().bytes, 1024);
        assert_eq!(server.reply_space_available().unwrap(), 0);
        let mut out = vec![0u8; 2048];
        assert_eq!(guest.read_replies(&mut out).unwrap().bytes, 1024);
        assert_eq!(&out[..1024], &data[..]);
        assert_eq!(page.field(Field::RspCons), start.wrapping_add(1024));
    }
}

#[test]
fn partial_write_when_ring_nearly_full() {
    let page = page_with_indices(0, 0, 5, 5 + 1000);
    let server = ServerRing::new(&page);
    assert_eq!(server.reply_space_available().unwrap(), 24);
    assert_eq!(server.write_replies(&[1u8; 100]).unwrap().bytes, 24);
    assert_eq!(
        server.write_replies(&[1u8; 100]).unwrap(),
        Transfer {
            bytes: 0,
            notify: false
        }
    );
}

#[test]
fn corrupt_indices_are_detected() {
    let cases = [
        // (req_cons, req_prod, rsp_cons, rsp_prod, request side bad, response side bad)
        (0, 1025, 0, 0, true, false),
        (10, 9, 0, 0, true, false),
        (u32::MAX, 1024, 0, 0, true, false), // prod - cons = 1025 across the wrap
        (u32::MAX, 1023, 0, 0, false, false), // exactly full across the wrap
        (0, 0, 0, 2000, false, true),
        (0, 0, 1, 0, false, true),
    ];
    for (req_cons, req_prod, rsp_cons, rsp_prod, request_bad, response_bad) in cases {
        let page = page_with_indices(req_cons, req_prod, rsp_cons, rsp_prod);
        let before = page.to_bytes();
        let server = ServerRing::new(&page);
        let mut out = [0u8; 16];
        let read = server.read_requests(&mut out);
        let write = server.write_replies(b"x");
        assert_eq!(read.is_err(), request_bad, "{req_cons} {req_prod}");
        assert_eq!(write.is_err(), response_bad, "{rsp_cons} {rsp_prod}");
        if let Err(error) = read {
            assert_eq!(
                error,
                RingError::IndexCorrupt {
                    request_queue: true,
                    prod: req_prod,
                    cons: req_cons
                }
            );
            assert_eq!(error.error_code(), ERROR_RINGIDX);
            server.set_error(error.error_code());
            assert_eq!(server.error(), 2);
        }
        if request_bad && response_bad {
            // A failed operation never touches the page.
            assert_eq!(page.to_bytes(), before);
        }
    }
}

#[test]
fn reconnection_handshake() {
    let page = page_with_indices(100, 150, 200, 230);
    let server = ServerRing::new(&page);
    let guest = GuestRing::new(&page);
    assert!(guest.is_connected());
    assert_eq!(server.complete_reconnect(), Reconnect::NotRequested);
    assert_eq!(page.field(Field::ReqProd), 150);

    guest.request_reconnect();
    assert!(!guest.is_connected());
    assert!(server.reconnect_requested());
    assert_eq!(server.complete_reconnect(), Reconnect::Completed);
    assert!(guest.is_connected());
    for field in [
        Field::ReqCons,
        Field::ReqProd,
        Field::RspCons,
        Field::RspProd,
    ] {
        assert_eq!(page.field(field), 0, "{field:?}");
    }
    // The ring works from zero again.
    assert_eq!(guest.write_requests(b"abc").unwrap().bytes, 3);
    assert_eq!(server.request_bytes_available().unwrap(), 3);
}

#[test]
fn full_exchange_through_the_assembler_across_threads() {
    let page = Arc::new(InMemoryPage::new());
    let guest_page = Arc::clone(&page);
    // 40 WRITE requests of ~100 bytes: more than the 1024-byte ring holds at once.
    let requests: Vec<Message> = (0..40)
        .map(|index| {
            let path = format!("/data/{index}");
            let value = vec![b'a' + (index % 26) as u8; 90];
            Message::request(
                &Request::Write {
                    path: &path,
                    value: &value,
                },
                index,
                0,
            )
            .unwrap()
        })
        .collect();
    let expected = requests.clone();
    let guest = std::thread::spawn(move || {
        let ring = GuestRing::new(guest_page);
        let mut stream: Vec<u8> = requests.iter().flat_map(|m| m.encode()).collect();
        let mut replies = Assembler::new();
        let mut received = Vec::new();
        while received.len() < requests.len() {
            if !stream.is_empty() {
                let sent = ring.write_requests(&stream).unwrap().bytes;
                stream.drain(..sent);
            }
            let mut buffer = [0u8; 256];
            let got = ring.read_replies(&mut buffer).unwrap().bytes;
            replies.push(&buffer[..got], &mut received).unwrap();
            std::thread::yield_now();
        }
        received
    });
    let server = ServerRing::new(&page);
    let mut assembler = Assembler::new();
    let mut pending_output: Vec<u8> = Vec::new();
    let mut served = 0;
    while served < expected.len() || !pending_output.is_empty() {
        let mut buffer = vec![0u8; assembler.wanted()];
        let got = server.read_requests(&mut buffer).unwrap().bytes;
        let fed = assembler.feed(&buffer[..got]).unwrap();
        assert_eq!(fed.consumed, got);
        if let Some(message) = fed.message {
            assert_eq!(message, expected[served]);
            let request = message.parse_request(ParseOptions::default()).unwrap();
            assert_eq!(request.path(), Some(format!("/data/{served}").as_str()));
            let reply = Message::reply(message.header(), reply::ok()).unwrap();
            pending_output.extend_from_slice(&reply.encode());
            served += 1;
        }
        let written = server.write_replies(&pending_output).unwrap().bytes;
        pending_output.drain(..written);
        std::thread::yield_now();
    }
    let received = guest.join().unwrap();
    assert_eq!(received.len(), expected.len());
    for (index, reply) in received.iter().enumerate() {
        assert_eq!(reply.header().req_id, index as u32);
        assert_eq!(reply.message_type(), MessageType::Write);
        assert_eq!(reply.payload(), b"OK\0");
    }
}
