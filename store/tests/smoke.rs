//! First end-to-end checks of the basic node operations.
// Payloads are NUL-separated strings: in Rust `\0` followed by a digit is always NUL then
// the digit (there are no octal escapes), which is exactly what the wire format needs.
#![allow(clippy::octal_escapes)]
mod common;
use common::*;
use xenstore_protocol::{Errno, MessageType};

#[test]
fn write_read_directory_rm() {
    let mut h = Harness::new(2);
    assert_eq!(h.write(SOCKET, 0, "/a/b/c", "v"), Ok(b"OK\0".to_vec()));
    assert_eq!(h.read(SOCKET, 0, "/a/b/c"), Ok(b"v".to_vec()));
    assert_eq!(h.read(SOCKET, 0, "/a/b"), Ok(b"".to_vec()));
    let listing = h.ok(SOCKET, 0, MessageType::Directory, b"/a\0");
    assert_eq!(strings(&listing), vec!["b"]);
    h.ok(SOCKET, 0, MessageType::Rm, b"/a\0");
    assert_eq!(h.read(SOCKET, 0, "/a/b/c"), Err(Errno::ENOENT));
    assert_eq!(
        h.send(SOCKET, 0, MessageType::Rm, b"/x/y\0"),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        h.send(SOCKET, 0, MessageType::Rm, b"/\0"),
        Err(Errno::EINVAL)
    );
    assert!(h.store.check().is_empty(), "{:?}", h.store.check());
}

#[test]
fn guest_home_and_permissions() {
    let mut h = Harness::new(2);
    h.ok(SOCKET, 0, MessageType::Mkdir, b"/local/domain/1\0");
    h.ok(SOCKET, 0, MessageType::SetPerms, b"/local/domain/1\0n1\0");
    assert_eq!(h.write(1, 0, "name", "guest"), Ok(b"OK\0".to_vec()));
    assert_eq!(h.read(1, 0, "/local/domain/1/name"), Ok(b"guest".to_vec()));
    assert_eq!(h.read(2, 0, "/local/domain/1/name"), Err(Errno::EACCES));
    assert_eq!(h.read(2, 0, "/local/domain/1/none"), Err(Errno::EACCES));
    let perms = h.ok(1, 0, MessageType::GetPerms, b"name\0");
    assert_eq!(perms, b"n1\0");
}

#[test]
fn directory_part_chunks_and_end_marker() {
    let mut h = Harness::new(0);
    let mut expected = Vec::new();
    for index in 0..400 {
        let name = format!("child-with-a-long-name-{index:05}");
        h.ok(
            SOCKET,
            0,
            MessageType::Mkdir,
            &nul(&format!("/many/{name}")),
        );
        expected.push(name);
    }
    expected.sort();
    let generation = h.store.node("/many").unwrap().generation;
    let mut offset = 0usize;
    let mut names = Vec::new();
    loop {
        let reply = h.ok(
            SOCKET,
            0,
            MessageType::DirectoryPart,
            format!("/many\0{offset}\0").as_bytes(),
        );
        assert!(reply.len() <= 4096);
        let first_nul = reply.iter().position(|b| *b == 0).unwrap();
        assert_eq!(
            std::str::from_utf8(&reply[..first_nul]).unwrap(),
            generation.to_string()
        );
        let body = &reply[first_nul + 1..];
        let ended = body.ends_with(b"\0\0") || body == b"\0";
        let chunk = if ended { &body[..body.len() - 1] } else { body };
        offset += chunk.len();
        names.extend(strings(chunk));
        if ended {
            break;
        }
    }
    assert_eq!(names, expected);
    // past the end: generation + empty string
    let reply = h.ok(SOCKET, 0, MessageType::DirectoryPart, b"/many\099999\0");
    assert_eq!(reply, format!("{generation}\0\0").into_bytes());
    // any change of the node changes the generation
    h.ok(SOCKET, 0, MessageType::Mkdir, b"/many/new\0");
    assert!(h.store.node("/many").unwrap().generation > generation);
}

#[test]
fn implicit_creation_inherits_permissions() {
    let mut h = Harness::new(2);
    h.ok(SOCKET, 0, MessageType::Mkdir, b"/local/domain/1\0");
    h.ok(
        SOCKET,
        0,
        MessageType::SetPerms,
        b"/local/domain/1\0n1\0r2\0",
    );
    // (connection, path written, node asked, expected permissions)
    let cases: &[(u32, &str, &str, &[u8])] = &[
        // privileged creator: full copy of the nearest existing parent's list
        (
            SOCKET,
            "/local/domain/1/p/q",
            "/local/domain/1/p",
            b"n1\0r2\0",
        ),
        // unprivileged creator: owner replaced, default letter and ACL kept
        (1, "/local/domain/1/g/h", "/local/domain/1/g", b"n1\0r2\0"),
        (
            2,
            "/local/domain/1/p/q/by2",
            "/local/domain/1/p/q/by2",
            b"n2\0b2\0",
        ),
    ];
    h.write(SOCKET, 0, "/local/domain/1/p/q", "v").unwrap();
    assert_eq!(
        h.ok(SOCKET, 0, MessageType::GetPerms, b"/local/domain/1/p/q\0"),
        b"n1\0r2\0".to_vec()
    );
    h.ok(
        SOCKET,
        0,
        MessageType::SetPerms,
        b"/local/domain/1/p/q\0n1\0b2\0",
    );
    for (connection, written, asked, expected) in cases {
        let _ = h.write(*connection, 0, written, "v");
        assert_eq!(
            h.ok(SOCKET, 0, MessageType::GetPerms, &nul(asked)),
            expected.to_vec(),
            "{asked}"
        );
    }
    // owned-node accounting follows the owner
    let usage = h.store.quota_usage(xenstore_protocol::Domid(2));
    assert_eq!(usage.current[0], 1);
}
