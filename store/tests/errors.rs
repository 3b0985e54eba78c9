//! One row per documented error path: (connection, tx, request, payload) → exact errno name a
//! libxenstore client would see. Rows run in order against one store prepared by `setup`.
// Payloads are NUL-separated strings: in Rust `\0` followed by a digit is always NUL then
// the digit (there are no octal escapes), which is exactly what the wire format needs.
#![allow(clippy::octal_escapes)]
mod common;
use common::*;
use xenstore_protocol::{Errno, MessageType as T};

/// Socket; dom1, dom2 (default quotas), dom3 (tiny quotas: nodes 3, watches 2,
/// transactions 2, node-size 100, node-permissions 3, transaction-nodes 4, path-max 20).
fn setup() -> Harness {
    let mut h = Harness::new(3);
    for domid in 1..=3 {
        let home = format!("/local/domain/{domid}");
        h.ok(SOCKET, 0, T::Mkdir, &nul(&home));
        h.ok(
            SOCKET,
            0,
            T::SetPerms,
            format!("{home}\0n{domid}\0").as_bytes(),
        );
    }
    h.ok(SOCKET, 0, T::Write, b"/secret/x\0hidden");
    h.ok(SOCKET, 0, T::Write, b"/open\0");
    h.ok(SOCKET, 0, T::SetPerms, b"/open\0b0\0");
    for (name, value) in [
        ("nodes", "3"),
        ("watches", "2"),
        ("transactions", "2"),
        ("node-size", "100"),
        ("node-permissions", "3"),
        ("transaction-nodes", "4"),
        ("path-max", "20"),
    ] {
        h.ok(
            SOCKET,
            0,
            T::SetQuota,
            format!("3\0{name}\0{value}\0").as_bytes(),
        );
    }
    h
}

type Row = (u32, u32, T, &'static [u8], Result<&'static [u8], Errno>);

fn run(h: &mut Harness, rows: &[Row]) {
    for (index, (connection, tx, kind, payload, expected)) in rows.iter().enumerate() {
        let answer = h.send(*connection, *tx, *kind, payload);
        let expected = expected.map(|bytes| bytes.to_vec());
        assert_eq!(
            answer,
            expected,
            "row {index}: conn {connection} tx {tx} {kind:?} {:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

const OK: Result<&[u8], Errno> = Ok(b"OK\0");

#[test]
fn node_errors() {
    let mut h = setup();
    run(
        &mut h,
        &[
            // READ
            (SOCKET, 0, T::Read, b"/nonexistent\0", Err(Errno::ENOENT)),
            (1, 0, T::Read, b"/secret/x\0", Err(Errno::EACCES)),
            (1, 0, T::Read, b"/secret/y\0", Err(Errno::EACCES)), // hidden: parent unreadable
            (1, 0, T::Read, b"/open/none\0", Err(Errno::ENOENT)), // parent readable
            (1, 0, T::Read, b"/a//b\0", Err(Errno::EINVAL)),
            (1, 0, T::Read, b"/a/\0", Err(Errno::EINVAL)),
            (1, 0, T::Read, b"/a b\0", Err(Errno::EINVAL)),
            (1, 0, T::Read, b"@releaseDomain\0", Err(Errno::EINVAL)),
            (1, 0, T::Read, b"\0", Err(Errno::EINVAL)),
            (1, 0, T::Read, b"/a\0/b\0", Err(Errno::EINVAL)), // two strings
            (3, 0, T::Read, b"abcdefghijklmnopqrst\0", Err(Errno::EINVAL)), // path-max
            (3, 0, T::Read, b"abcdefghijklmnopqrs\0", Err(Errno::ENOENT)),
            // WRITE / MKDIR
            (1, 0, T::Write, b"/secret/x\0v", Err(Errno::EACCES)),
            (1, 0, T::Write, b"/secret/new\0v", Err(Errno::EACCES)),
            (1, 0, T::Mkdir, b"/secret/new\0", Err(Errno::EACCES)),
            (1, 0, T::Mkdir, b"/secret\0", Err(Errno::EACCES)), // exists, no write
            (1, 0, T::Write, b"/open/mine\0v", OK),
            // inherited `b0` with the owner rewritten: `b1`, everyone may write
            (2, 0, T::Write, b"/open/mine\0v", OK),
            // node quota: dom3 owns its home (1); may own at most 2
            (3, 0, T::Write, b"a\0", OK),
            (3, 0, T::Write, b"b\0", Err(Errno::ENOSPC)),
            (3, 0, T::Write, b"a/b/c\0", Err(Errno::ENOSPC)),
            // node-size: 16 + 8 + value >= 100
            (
                3,
                0,
                T::Write,
                b"a\00123456789012345678901234567890123456789012345678901234567890123456789012345",
                Err(Errno::ENOSPC),
            ),
            (
                3,
                0,
                T::Write,
                b"a\0012345678901234567890123456789012345678901234567890123456789012345678901234",
                OK,
            ),
            // RM
            (SOCKET, 0, T::Rm, b"/\0", Err(Errno::EINVAL)),
            (1, 0, T::Rm, b"/\0", Err(Errno::EACCES)),
            (
                SOCKET,
                0,
                T::Rm,
                b"/nonexistent/child\0",
                Err(Errno::ENOENT),
            ),
            (SOCKET, 0, T::Rm, b"/nonexistent\0", OK),
            (1, 0, T::Rm, b"/secret/x\0", Err(Errno::EACCES)),
            (1, 0, T::Rm, b"/secret/y/z\0", Err(Errno::EACCES)),
            // GET_PERMS / SET_PERMS
            (1, 0, T::GetPerms, b"/secret\0", Err(Errno::EACCES)),
            (
                SOCKET,
                0,
                T::GetPerms,
                b"/nonexistent\0",
                Err(Errno::ENOENT),
            ),
            (1, 0, T::SetPerms, b"/secret\0n1\0", Err(Errno::EACCES)),
            (1, 0, T::SetPerms, b"/nonexistent\0n1\0", Err(Errno::EACCES)), // root hides it
            (
                1,
                0,
                T::SetPerms,
                b"/open/nonexistent\0n1\0",
                Err(Errno::ENOENT),
            ),
            (
                SOCKET,
                0,
                T::SetPerms,
                b"/nonexistent\0n1\0",
                Err(Errno::ENOENT),
            ),
            (
                1,
                0,
                T::SetPerms,
                b"/local/domain/1\0\0",
                Err(Errno::EINVAL),
            ),
            (
                1,
                0,
                T::SetPerms,
                b"/local/domain/1\0x1\0",
                Err(Errno::EINVAL),
            ),
            (
                3,
                0,
                T::SetPerms,
                b"/local/domain/3\0n3\0r1\0r2\0",
                Err(Errno::ENOSPC),
            ),
            (3, 0, T::SetPerms, b"/local/domain/3\0n3\0r1\0", OK),
            // DIRECTORY on a missing node
            (
                SOCKET,
                0,
                T::Directory,
                b"/nonexistent\0",
                Err(Errno::ENOENT),
            ),
            (2, 0, T::Directory, b"/local/domain/1\0", Err(Errno::EACCES)),
            (
                SOCKET,
                0,
                T::DirectoryPart,
                b"/nonexistent\0" as &[u8],
                Err(Errno::EINVAL),
            ), // one string
        ],
    );
}

#[test]
fn owner_change_is_eperm_for_unprivileged() {
    let mut h = setup();
    run(
        &mut h,
        &[
            (
                1,
                0,
                T::SetPerms,
                b"/local/domain/1\0n2\0",
                Err(Errno::EPERM),
            ),
            (1, 0, T::SetPerms, b"/local/domain/1\0r1\0", OK),
            (SOCKET, 0, T::SetPerms, b"/local/domain/1\0n2\0", OK),
            (
                1,
                0,
                T::SetPerms,
                b"/local/domain/1\0n1\0",
                Err(Errno::EACCES),
            ),
            // DOMID_ANY as owner from a domain without the feature: ENOENT
            (SOCKET, 0, T::SetFeature, b"9\00\0", OK),
        ],
    );
    h.introduce(9);
    h.ok(SOCKET, 0, T::Write, b"/local/domain/9\0");
    h.ok(SOCKET, 0, T::SetPerms, b"/local/domain/9\0n9\0");
    run(
        &mut h,
        &[(
            9,
            0,
            T::SetPerms,
            b"/local/domain/9\0n32757\0",
            Err(Errno::ENOENT),
        )],
    );
}

#[test]
fn watch_transaction_and_domain_errors() {
    let mut h = setup();
    run(
        &mut h,
        &[
            // WATCH / UNWATCH
            (1, 0, T::Watch, b"/a\0tok\0", OK),
            (1, 0, T::Watch, b"/a\0tok\0", Err(Errno::EEXIST)),
            (1, 0, T::Watch, b"/a//\0tok\0", Err(Errno::EINVAL)),
            (1, 0, T::Unwatch, b"/a\0other\0", Err(Errno::ENOENT)),
            (1, 0, T::Unwatch, b"/a\0tok\0", OK),
            (3, 0, T::Watch, b"/a\0t1\0", OK),
            (3, 0, T::Watch, b"/a\0t2\0", Err(Errno::ENOSPC)),
            (1, 77, T::Watch, b"/b\0tok\0", OK), // tx id ignored
            // transactions
            (1, 0, T::TransactionEnd, b"T\0", Err(Errno::ENOENT)),
            (1, 5, T::Read, b"/open\0", Err(Errno::ENOENT)),
            (1, 5, T::TransactionEnd, b"T\0", Err(Errno::ENOENT)),
            (1, 0, T::TransactionStart, b"\0", Ok(b"1\0")),
            (1, 1, T::TransactionStart, b"\0", Err(Errno::EBUSY)),
            (1, 1, T::TransactionEnd, b"X\0", Err(Errno::EINVAL)),
            (1, 1, T::TransactionEnd, b"F\0", OK),
            (1, 1, T::TransactionEnd, b"F\0", Err(Errno::ENOENT)), // dead after END
            (3, 0, T::TransactionStart, b"\0", Ok(b"1\0")),
            (3, 0, T::TransactionStart, b"\0", Err(Errno::ENOSPC)),
            // privileged-only requests
            (1, 0, T::Control, b"help\0", Err(Errno::EACCES)),
            (1, 0, T::Introduce, b"5\05\05\0", Err(Errno::EACCES)),
            (1, 0, T::Release, b"2\0", Err(Errno::EACCES)),
            (1, 0, T::IsDomainIntroduced, b"2\0", Err(Errno::EACCES)),
            (1, 0, T::Resume, b"2\0", Err(Errno::EACCES)),
            (1, 0, T::SetTarget, b"2\01\0", Err(Errno::EACCES)),
            (1, 0, T::SetFeature, b"2\00\0", Err(Errno::EACCES)),
            (1, 0, T::GetQuota, b"\0", Err(Errno::EACCES)),
            (1, 0, T::SetQuota, b"nodes\05\0", Err(Errno::EACCES)),
            (1, 0, T::GetFeature, b"2\0", Err(Errno::EACCES)),
            (1, 0, T::GetFeature, b"", Ok(b"14\0")),
            // domain requests
            (SOCKET, 0, T::Introduce, b"5\05\00\0", Err(Errno::EINVAL)),
            (
                SOCKET,
                0,
                T::Introduce,
                b"32752\05\05\0",
                Err(Errno::EINVAL),
            ),
            (SOCKET, 0, T::Release, b"0\0", Err(Errno::EINVAL)),
            (SOCKET, 0, T::Release, b"44\0", Err(Errno::ENOENT)),
            (SOCKET, 0, T::Resume, b"44\0", Err(Errno::ENOENT)),
            (SOCKET, 0, T::SetTarget, b"44\01\0", Err(Errno::ENOENT)),
            (SOCKET, 0, T::SetTarget, b"1\044\0", Err(Errno::ENOENT)),
            (SOCKET, 0, T::SetFeature, b"1\00\0", Err(Errno::EBUSY)),
            (SOCKET, 0, T::SetFeature, b"40\016\0", Err(Errno::EINVAL)),
            (SOCKET, 0, T::SetFeature, b"40\02\0", OK),
            // known (features set) but not introduced: C's find_domain_by_domid fails
            (SOCKET, 0, T::Release, b"40\0", Err(Errno::ENOENT)),
            (SOCKET, 0, T::Resume, b"40\0", Err(Errno::ENOENT)),
            (SOCKET, 0, T::SetTarget, b"1\040\0", Err(Errno::ENOENT)),
            (SOCKET, 0, T::IsDomainIntroduced, b"40\0", Ok(b"F\0")),
            (SOCKET, 0, T::IsDomainIntroduced, b"44\0", Ok(b"F\0")),
            (SOCKET, 0, T::IsDomainIntroduced, b"1\0", Ok(b"T\0")),
            (SOCKET, 0, T::IsDomainIntroduced, b"32752\0", Ok(b"T\0")),
            (
                SOCKET,
                0,
                T::GetDomainPath,
                b"7\0",
                Ok(b"/local/domain/7\0"),
            ),
            (SOCKET, 0, T::GetDomainPath, b"x\0", Err(Errno::EINVAL)),
            // quotas
            (SOCKET, 0, T::GetQuota, b"bogus\0", Err(Errno::EINVAL)),
            (SOCKET, 0, T::GetQuota, b"soft-nodes\0", Err(Errno::EINVAL)),
            (SOCKET, 0, T::SetQuota, b"bogus\01\0", Err(Errno::EINVAL)),
            (SOCKET, 0, T::GetQuota, b"nodes\0", Ok(b"1000\0")),
            (SOCKET, 0, T::GetQuota, b"soft-memory\0", Ok(b"2097152\0")),
            (SOCKET, 0, T::GetQuota, b"3\0nodes\0", Ok(b"3\0")),
            (SOCKET, 0, T::GetQuota, b"1\0nodes\0", Ok(b"4294967295\0")),
            // CONTROL
            (SOCKET, 0, T::Control, b"bogus\0", Err(Errno::EINVAL)),
            (SOCKET, 0, T::Control, b"print\0", Err(Errno::EINVAL)),
            (SOCKET, 0, T::Control, b"check\0", OK),
            // unknown / invalid types
            (SOCKET, 0, T::Restrict, b"\0", Err(Errno::ENOSYS)),
            (SOCKET, 0, T::Invalid, b"\0", Err(Errno::ENOSYS)),
        ],
    );
}

#[test]
fn transaction_quota_errors() {
    let mut h = setup();
    // transaction-nodes 4 for dom3: the 4th distinct node fails, and the commit says ENOMEM.
    let tx = h.start(3);
    assert_eq!(h.read(3, tx, "/local/domain/3"), Ok(Vec::new()));
    assert_eq!(h.read(3, tx, "/open"), Ok(Vec::new()));
    assert_eq!(h.read(3, tx, "/open/x"), Err(Errno::ENOENT));
    assert_eq!(h.read(3, tx, "/open/y"), Err(Errno::ENOSPC));
    assert_eq!(h.end(3, tx, true), Err(Errno::ENOMEM));
    // a node quota failure inside a transaction fails it (C `fail_transaction`)
    let tx = h.start(3);
    assert_eq!(h.write(3, tx, "many/nodes/here", ""), Err(Errno::ENOSPC));
    assert_eq!(h.end(3, tx, true), Err(Errno::ENOMEM));
    // a reply larger than 4096 bytes: E2BIG
    for index in 0..300 {
        h.ok(
            SOCKET,
            0,
            T::Mkdir,
            &nul(&format!("/big/child-number-{index:04}")),
        );
    }
    assert_eq!(
        h.send(SOCKET, 0, T::Directory, b"/big\0"),
        Err(Errno::E2BIG)
    );
    // DIRECTORY_PART handles it
    let part = h.ok(SOCKET, 0, T::DirectoryPart, b"/big\00\0");
    assert!(part.len() <= 4096);
}

#[test]
fn memory_quota_is_enomem() {
    let mut h = setup();
    // dom1's charge: its home (path + overhead). Leave room for ~100 bytes more.
    let used = h.store.memory_usage(xenstore_protocol::Domid(1));
    let quota = format!("1\0memory\0{}\0", used + 200);
    h.ok(SOCKET, 0, T::SetQuota, quota.as_bytes());
    assert_eq!(
        h.write(1, 0, "/local/domain/1/a", "small"),
        Ok(b"OK\0".to_vec())
    );
    let big = "x".repeat(300);
    assert_eq!(h.write(1, 0, "/local/domain/1/b", &big), Err(Errno::ENOMEM));
    assert_eq!(h.write(1, 0, "/local/domain/1/a", &big), Err(Errno::ENOMEM));
    let token = "t".repeat(300);
    let mut payload = b"/local/domain/1\0".to_vec();
    payload.extend_from_slice(token.as_bytes());
    payload.push(0);
    assert_eq!(h.send(1, 0, T::Watch, &payload), Err(Errno::ENOMEM));
    // inside a transaction the failure fails the transaction
    let tx = h.start(1);
    assert_eq!(
        h.write(1, tx, "/local/domain/1/b", &big),
        Err(Errno::ENOMEM)
    );
    assert_eq!(h.end(1, tx, true), Err(Errno::ENOMEM));
    // privileged callers are exempt
    assert_eq!(
        h.write(SOCKET, 0, "/local/domain/1/a", &big),
        Ok(b"OK\0".to_vec())
    );
    assert_eq!(
        h.store.memory_state(xenstore_protocol::Domid(1)),
        xenstore_store::MemoryState::AboveHard
    );
}

#[test]
fn restart_aborted_transactions_answer_eagain() {
    let mut h = setup();
    let tx = h.start(1);
    h.write(1, tx, "/local/domain/1/x", "1").unwrap();
    let image = h.store.export();
    let (store, changes) = xenstore_store::Store::recover(image).unwrap();
    assert!(!changes.is_empty());
    h.store = store;
    assert_eq!(h.read(1, tx, "/local/domain/1/x"), Err(Errno::EAGAIN));
    assert_eq!(h.end(1, tx, true), Err(Errno::EAGAIN));
    assert_eq!(h.read(1, tx + 1, "/local/domain/1/x"), Err(Errno::ENOENT));
    // new ids continue above the old ones
    assert_eq!(h.start(1), tx + 1);
}
