//! Property tests over arbitrary bytes: parsers never panic, parse∘emit is the identity, the
//! assembler fed in arbitrary splits equals whole-message decoding, and the ring moves an
//! arbitrary byte stream intact from any starting index (including across 2^32).

use proptest::prelude::*;

use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::header::{Header, HeaderView};
use xenstore_protocol::message::Message;
use xenstore_protocol::reply;
use xenstore_protocol::ring::{Field, GuestRing, InMemoryPage, ServerRing};
use xenstore_protocol::{Errno, MessageType, ParseOptions, Request};

fn message_type_number() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..=28, Just(0xffff), any::<u32>()]
}

/// Payloads shaped like requests: short NUL-separated strings of digits, letters and junk.
fn request_like_payload() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "[0-9]{0,6}",
        "-?[0-9]{1,12}",
        "/[a-z]{1,4}(/[a-z0-9]{1,4}){0,3}",
        "[nrwbx][0-9]{0,6}",
        "[TF]",
        ".{0,8}",
    ];
    (proptest::collection::vec(piece, 0..5), any::<bool>()).prop_map(|(pieces, trailing)| {
        let mut bytes = Vec::new();
        for piece in pieces {
            bytes.extend_from_slice(piece.as_bytes());
            bytes.push(0);
        }
        if trailing {
            bytes.extend_from_slice(b"tail");
        }
        bytes
    })
}

fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        request_like_payload()
    ]
}

fn arbitrary_message() -> impl Strategy<Value = Message> {
    (
        message_type_number(),
        any::<u32>(),
        any::<u32>(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 4090..=4096)
        ],
    )
        .prop_map(|(number, req_id, tx_id, payload)| {
            Message::new(MessageType::from_u32(number), req_id, tx_id, payload).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn request_parse_never_panics_and_round_trips(
        number in message_type_number(),
        payload in any_payload(),
        watch_depth in any::<bool>(),
    ) {
        let options = ParseOptions { watch_depth };
        let message_type = MessageType::from_u32(number);
        match Request::parse(message_type, &payload, options) {
            Ok(request) => {
                prop_assert!(message_type.is_client_request());
                prop_assert_eq!(request.message_type(), message_type);
                let emitted = request.to_payload();
                let again = Request::parse(message_type, &emitted, options);
                prop_assert_eq!(again.as_ref(), Ok(&request));
                prop_assert_eq!(again.unwrap().to_payload(), emitted);
            }
            Err(errno) => {
                prop_assert!(errno == Errno::EINVAL || errno == Errno::ENOSYS);
                prop_assert_eq!(errno == Errno::ENOSYS, !message_type.is_client_request());
            }
        }
    }

    #[test]
    fn header_parse_emit_identity(bytes in proptest::array::uniform16(any::<u8>())) {
        let view = HeaderView::new_checked(&bytes[..]).unwrap();
        match Header::parse(&view) {
            Ok(header) => {
                prop_assert!(header.len <= 4096);
                prop_assert_eq!(header.to_bytes(), bytes);
            }
            Err(_) => prop_assert!(view.len() > 4096),
        }
    }

    #[test]
    fn header_emit_parse_identity(
        number in message_type_number(),
        req_id in any::<u32>(),
        tx_id in any::<u32>(),
        len in 0u32..=4096,
    ) {
        let header = Header { message_type: MessageType::from_u32(number), req_id, tx_id, len };
        prop_assert_eq!(Header::parse_bytes(&header.to_bytes()), Ok(header));
    }

    #[test]
    fn assembler_in_arbitrary_splits_equals_whole_decode(
        messages in proptest::collection::vec(arbitrary_message(), 0..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = messages.iter().flat_map(|message| message.encode()).collect();
        // Whole decode.
        let mut whole = Vec::new();
        let mut rest = &stream[..];
        while let Some((message, used)) = Message::decode(rest).unwrap() {
            whole.push(message);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&whole, &messages);
        // Split decode.
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut assembler = Assembler::new();
        let mut split = Vec::new();
        for pair in points.windows(2) {
            assembler.push(&stream[pair[0]..pair[1]], &mut split).unwrap();
        }
        prop_assert!(assembler.is_idle());
        prop_assert_eq!(split, messages);
    }

    #[test]
    fn assembler_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        chunk in 1usize..40,
    ) {
        let mut assembler = Assembler::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            if assembler.push(piece, &mut out).is_err() {
                prop_assert!(assembler.is_idle());
                break;
            }
        }
        for message in &out {
            prop_assert!(message.payload().len() <= 4096);
            prop_assert_eq!(message.header().len as usize, message.payload().len());
        }
    }

    #[test]
    fn ring_moves_streams_intact_from_any_index(
        req_start in any::<u32>(),
        rsp_start in prop_oneof![any::<u32>(), (u32::MAX - 2048)..=u32::MAX],
        data in proptest::collection::vec(any::<u8>(), 0..5000),
        write_sizes in proptest::collection::vec(1usize..1500, 1..20),
        read_sizes in proptest::collection::vec(1usize..1500, 1..20),
    ) {
        let page = InMemoryPage::new();
        page.set_field(Field::ReqCons, req_start);
        page.set_field(Field::ReqProd, req_start);
        page.set_field(Field::RspCons, rsp_start);
        page.set_field(Field::RspProd, rsp_start);
        let guest = GuestRing::new(&page);
        let server = ServerRing::new(&page);
        let (mut sent, mut received) = (0usize, Vec::new());
        let (mut echoed, mut returned) = (0usize, Vec::new());
        let mut step = 0usize;
        while returned.len() < data.len() {
            let write = write_sizes[step % write_sizes.len()];
            let read = read_sizes[step % read_sizes.len()];
            step += 1;
            prop_assert!(step < 100_000);
            let end = (sent + write).min(data.len());
            sent += guest.write_requests(&data[sent..end]).unwrap().bytes;
            let mut buffer = vec![0u8; read];
            let got = server.read_requests(&mut buffer).unwrap().bytes;
            received.extend_from_slice(&buffer[..got]);
            echoed += server.write_replies(&received[echoed..]).unwrap().bytes;
            let mut buffer = vec![0u8; read];
            let got = guest.read_replies(&mut buffer).unwrap().bytes;
            returned.extend_from_slice(&buffer[..got]);
            prop_assert!(server.request_indices().is_ok());
            prop_assert!(server.response_indices().is_ok());
        }
        prop_assert_eq!(&received, &data);
        prop_assert_eq!(&returned, &data);
        prop_assert_eq!(page.field(Field::ReqProd), req_start.wrapping_add(data.len() as u32));
        prop_assert_eq!(page.field(Field::RspCons), rsp_start.wrapping_add(data.len() as u32));
    }

    #[test]
    fn ring_never_panics_on_arbitrary_pages(
        indices in proptest::array::uniform4(any::<u32>()),
        want in 0usize..3000,
    ) {
        let page = InMemoryPage::new();
        page.set_field(Field::ReqCons, indices[0]);
        page.set_field(Field::ReqProd, indices[1]);
        page.set_field(Field::RspCons, indices[2]);
        page.set_field(Field::RspProd, indices[3]);
        let server = ServerRing::new(&page);
        let mut buffer = vec![0u8; want];
        let read = server.read_requests(&mut buffer);
        prop_assert_eq!(read.is_ok(), indices[1].wrapping_sub(indices[0]) <= 1024);
        let write = server.write_replies(&buffer);
        prop_assert_eq!(write.is_ok(), indices[3].wrapping_sub(indices[2]) <= 1024);
    }

    #[test]
    fn reply_builders_respect_the_limit(
        items in proptest::collection::vec("[a-z]{0,700}", 0..12),
        token in proptest::collection::vec(1u8..=255, 0..100),
    ) {
        let total: usize = items.iter().map(|item| item.len() + 1).sum();
        match reply::strings(&items) {
            Ok(payload) => { prop_assert!(total <= 4096); prop_assert_eq!(payload.len(), total); }
            Err(errno) => { prop_assert!(total > 4096); prop_assert_eq!(errno, Errno::E2BIG); }
        }
        let path = items.concat();
        let event = reply::watch_event(&path, &token);
        prop_assert_eq!(event.is_ok(), path.len() + token.len() + 2 <= 4096);
    }
}
