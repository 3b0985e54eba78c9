//! Serde round trips of the values other crates persist (assembler state, messages,
//! permissions), and rejection of persisted values that break an invariant. Runs with the
//! `serde` feature (`cargo test -p xenstore-protocol --all-features`, or the workspace test).
#![cfg(feature = "serde")]

use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::message::Message;
use xenstore_protocol::{Access, Domid, MessageType, Permission, Permissions};

#[test]
fn assembler_state_survives_a_restart() {
    let first = Message::new(MessageType::Write, 1, 2, b"/a\0value".to_vec()).unwrap();
    let second = Message::new(MessageType::Read, 3, 0, b"/a\0".to_vec()).unwrap();
    let mut stream = first.encode();
    stream.extend_from_slice(&second.encode());
    for cut in 0..stream.len() {
        let mut before = Assembler::new();
        let mut out = Vec::new();
        before.push(&stream[..cut], &mut out).unwrap();
        let saved = postcard::to_allocvec(&before).unwrap();
        let mut after: Assembler = postcard::from_bytes(&saved).unwrap();
        assert_eq!(after, before);
        assert!(after.check().is_ok());
        after.push(&stream[cut..], &mut out).unwrap();
        assert_eq!(out, [first.clone(), second.clone()], "cut {cut}");
    }
}

#[test]
fn message_and_permissions_round_trip() {
    let message = Message::new(MessageType::WatchEvent, 0, 0, b"/a\0t\0".to_vec()).unwrap();
    let bytes = postcard::to_allocvec(&message).unwrap();
    assert_eq!(postcard::from_bytes::<Message>(&bytes).unwrap(), message);

    let permissions = Permissions::from_entries(vec![
        Permission {
            access: Access::Write,
            domid: Domid(3),
        },
        Permission {
            access: Access::Read,
            domid: Domid(0),
        },
    ])
    .unwrap();
    let bytes = postcard::to_allocvec(&permissions).unwrap();
    assert_eq!(
        postcard::from_bytes::<Permissions>(&bytes).unwrap(),
        permissions
    );
}

#[test]
fn invariant_breaking_values_are_rejected() {
    // An empty permission list: a one-byte postcard encoding of `entries: []`.
    assert!(postcard::from_bytes::<Permissions>(&[0]).is_err());
    // A message whose header length disagrees with its payload.
    let message = Message::new(MessageType::Read, 0, 0, b"abc".to_vec()).unwrap();
    let mut bytes = postcard::to_allocvec(&message).unwrap();
    // Header is type (enum tag), req_id, tx_id, len as varints: 2, 0, 0, 3, then payload.
    assert_eq!(&bytes[..5], &[2, 0, 0, 3, 3]);
    bytes[3] = 2;
    assert!(postcard::from_bytes::<Message>(&bytes).is_err());
}
