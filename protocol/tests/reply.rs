//! Golden reply frames: for every message type, the bytes a server sends back (header with the
//! request's type, `req_id` and `tx_id`, then the payload), plus `XS_ERROR` for every errno and
//! `XS_WATCH_EVENT`. Header bytes are written out by hand here, independent of `header.rs`.

use xenstore_protocol::header::Header;
use xenstore_protocol::message::Message;
use xenstore_protocol::reply;
use xenstore_protocol::{Access, Domid, Errno, MessageType, Permission, Permissions};

const REQ_ID: u32 = 0x0102_0304;
const TX_ID: u32 = 5;

fn golden_frame(type_number: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in [type_number, req_id, tx_id, payload.len() as u32] {
        bytes.push(word as u8);
        bytes.push((word >> 8) as u8);
        bytes.push((word >> 16) as u8);
        bytes.push((word >> 24) as u8);
    }
    bytes.extend_from_slice(payload);
    bytes
}

fn request_header(type_number: u32) -> Header {
    Header {
        message_type: MessageType::from_u32(type_number),
        req_id: REQ_ID,
        tx_id: TX_ID,
        len: 0,
    }
}

#[test]
fn success_reply_for_every_request_type() {
    let permissions = Permissions::from_entries(vec![
        Permission {
            access: Access::None,
            domid: Domid(0),
        },
        Permission {
            access: Access::Read,
            domid: Domid(5),
        },
    ])
    .unwrap();
    // DIRECTORY_PART: generation, children, and the extra NUL that ends the list.
    let mut directory_part = reply::PayloadBuilder::new();
    directory_part.push_string(b"42").unwrap();
    directory_part.push_string(b"0").unwrap();
    directory_part.push_string(b"1").unwrap();
    directory_part.push_bytes(b"\0").unwrap();

    let cases: Vec<(u32, Vec<u8>, &[u8])> = vec![
        (
            0,
            reply::string("Supported commands: check").unwrap(),
            b"Supported commands: check\0",
        ),
        (
            1,
            reply::strings(["backend", "device"]).unwrap(),
            b"backend\0device\0",
        ),
        (1, reply::strings::<[&str; 0]>([]).unwrap(), b""),
        (2, reply::value(b"raw\0value").unwrap(), b"raw\0value"),
        (3, permissions.to_wire(), b"n0\0r5\0"),
        (4, reply::ok(), b"OK\0"),
        (5, reply::ok(), b"OK\0"),
        (6, reply::decimal(1).unwrap(), b"1\0"),
        (7, reply::ok(), b"OK\0"),
        (8, reply::ok(), b"OK\0"),
        (9, reply::ok(), b"OK\0"),
        (
            10,
            reply::string("/local/domain/7").unwrap(),
            b"/local/domain/7\0",
        ),
        (11, reply::ok(), b"OK\0"),
        (12, reply::ok(), b"OK\0"),
        (13, reply::ok(), b"OK\0"),
        (14, reply::ok(), b"OK\0"),
        (17, reply::boolean(true), b"T\0"),
        (17, reply::boolean(false), b"F\0"),
        (18, reply::ok(), b"OK\0"),
        (19, reply::ok(), b"OK\0"),
        (21, reply::ok(), b"OK\0"),
        (22, directory_part.finish(), b"42\x000\x001\0\0"),
        (23, reply::decimal(14).unwrap(), b"14\0"),
        (24, reply::ok(), b"OK\0"),
        (
            25,
            reply::string("nodes watches soft-memory").unwrap(),
            b"nodes watches soft-memory\0",
        ),
        (25, reply::decimal(1000).unwrap(), b"1000\0"),
        (26, reply::ok(), b"OK\0"),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (type_number, payload, expected_payload) in cases {
        assert_eq!(payload, expected_payload, "type {type_number}");
        let message = Message::reply(&request_header(type_number), payload).unwrap();
        assert_eq!(
            message.encode(),
            golden_frame(type_number, REQ_ID, TX_ID, expected_payload),
            "type {type_number}"
        );
        // And it decodes back.
        let (decoded, used) = Message::decode(&message.encode()).unwrap().unwrap();
        assert_eq!(decoded, message);
        assert_eq!(used, 16 + expected_payload.len());
        covered.insert(type_number);
    }
    let requests: std::collections::BTreeSet<u32> = MessageType::DEFINED
        .iter()
        .filter(|message_type| message_type.is_client_request())
        .map(|message_type| message_type.as_u32())
        .collect();
    assert_eq!(covered, requests);
}

#[test]
fn error_reply_for_every_errno() {
    for (errno, name) in Errno::ALL.iter().zip([
        "EINVAL",
        "EACCES",
        "EEXIST",
        "EISDIR",
        "ENOENT",
        "ENOMEM",
        "ENOSPC",
        "EIO",
        "ENOTEMPTY",
        "ENOSYS",
        "EROFS",
        "EBUSY",
        "EAGAIN",
        "EISCONN",
        "E2BIG",
        "EPERM",
    ]) {
        let message = Message::error(&request_header(2), *errno);
        let mut payload = name.as_bytes().to_vec();
        payload.push(0);
        assert_eq!(message.encode(), golden_frame(16, REQ_ID, TX_ID, &payload));
        assert_eq!(reply::parse_error(message.payload()), Some(*errno));
    }
    // Unknown types are answered with ENOSYS under their own ids.
    let message = Message::error(&request_header(99), Errno::ENOSYS);
    assert_eq!(
        message.encode(),
        golden_frame(16, REQ_ID, TX_ID, b"ENOSYS\0")
    );
}

#[test]
fn watch_event_frame() {
    let message = Message::watch_event("device/vif", b"token-1").unwrap();
    assert_eq!(
        message.encode(),
        golden_frame(15, 0, 0, b"device/vif\0token-1\0")
    );
    assert_eq!(
        reply::parse_watch_event(message.payload()),
        Some((&b"device/vif"[..], &b"token-1"[..]))
    );
}

#[test]
fn oversized_replies_become_e2big() {
    let big = vec![b'v'; 4097];
    assert_eq!(reply::value(&big), Err(Errno::E2BIG));
    assert_eq!(Message::reply(&request_header(2), big), Err(Errno::E2BIG));
    let names: Vec<String> = (0..1000).map(|index| format!("child{index}")).collect();
    assert_eq!(reply::strings(&names), Err(Errno::E2BIG));
}
