//! Golden vectors for `Request::parse` / `Request::emit`: one accepted payload per message type
//! (and the canonical bytes it emits), and every `EINVAL` / `ENOSYS` path, as tables.

use xenstore_protocol::request::{c_atoi, c_strtol, nul_terminated_strings};
use xenstore_protocol::{
    Access, Domid, Errno, MessageType, ParseOptions, Permission, Permissions, Request,
};

const PLAIN: ParseOptions = ParseOptions { watch_depth: false };
const DEPTH: ParseOptions = ParseOptions { watch_depth: true };

fn perms(entries: &[(Access, u16)]) -> Permissions {
    Permissions::from_entries(
        entries
            .iter()
            .map(|(access, domid)| Permission {
                access: *access,
                domid: Domid(*domid),
            })
            .collect(),
    )
    .unwrap()
}

/// (type number, options, payload, expected request): canonical payloads, so emit gives the
/// same bytes back.
fn canonical_cases() -> Vec<(u32, ParseOptions, &'static [u8], Request<'static>)> {
    vec![
        (
            0,
            PLAIN,
            b"log\0on\0",
            Request::Control {
                command: "log",
                arguments: vec![b"on"],
            },
        ),
        (
            0,
            PLAIN,
            b"help\0",
            Request::Control {
                command: "help",
                arguments: vec![],
            },
        ),
        (1, PLAIN, b"/local\0", Request::Directory { path: "/local" }),
        (
            2,
            PLAIN,
            b"device/vif\0",
            Request::Read { path: "device/vif" },
        ),
        (
            3,
            PLAIN,
            b"@releaseDomain\0",
            Request::GetPerms {
                path: "@releaseDomain",
            },
        ),
        (
            4,
            PLAIN,
            b"/a\0tok\0",
            Request::Watch {
                path: "/a",
                token: b"tok",
                depth: None,
            },
        ),
        (
            4,
            DEPTH,
            b"/a\0tok\0",
            Request::Watch {
                path: "/a",
                token: b"tok",
                depth: None,
            },
        ),
        (
            4,
            DEPTH,
            b"@introduceDomain\0t\x01\xff\x002\0",
            Request::Watch {
                path: "@introduceDomain",
                token: b"t\x01\xff",
                depth: Some(2),
            },
        ),
        (
            5,
            PLAIN,
            b"/a\0tok\0",
            Request::Unwatch {
                path: "/a",
                token: b"tok",
            },
        ),
        (6, PLAIN, b"\0", Request::TransactionStart),
        (7, PLAIN, b"T\0", Request::TransactionEnd { commit: true }),
        (7, PLAIN, b"F\0", Request::TransactionEnd { commit: false }),
        (
            8,
            PLAIN,
            b"5\0-1\x0012\0",
            Request::Introduce {
                domid: Domid(5),
                gfn: -1,
                evtchn: 12,
            },
        ),
        (
            8,
            PLAIN,
            b"1\0987654321\x001\0",
            Request::Introduce {
                domid: Domid(1),
                gfn: 987_654_321,
                evtchn: 1,
            },
        ),
        (9, PLAIN, b"7\0", Request::Release { domid: Domid(7) }),
        (
            10,
            PLAIN,
            b"65535\0",
            Request::GetDomainPath {
                domid: Domid(65535),
            },
        ),
        (
            11,
            PLAIN,
            b"/a/b\0va\0lue",
            Request::Write {
                path: "/a/b",
                value: b"va\0lue",
            },
        ),
        (
            11,
            PLAIN,
            b"/a/b\0",
            Request::Write {
                path: "/a/b",
                value: b"",
            },
        ),
        (12, PLAIN, b"x\0", Request::Mkdir { path: "x" }),
        (13, PLAIN, b"/x/y\0", Request::Rm { path: "/x/y" }),
        (
            14,
            PLAIN,
            b"/x\0b0\0r5\0n7\0",
            Request::SetPerms {
                path: "/x",
                permissions: perms(&[(Access::Both, 0), (Access::Read, 5), (Access::None, 7)]),
            },
        ),
        (
            17,
            PLAIN,
            b"32752\0",
            Request::IsDomainIntroduced { domid: Domid::SELF },
        ),
        (18, PLAIN, b"3\0", Request::Resume { domid: Domid(3) }),
        (
            19,
            PLAIN,
            b"3\x004\0",
            Request::SetTarget {
                domid: Domid(3),
                target: Domid(4),
            },
        ),
        (21, PLAIN, b"\0", Request::ResetWatches),
        (
            22,
            PLAIN,
            b"/local/domain\x004096\0",
            Request::DirectoryPart {
                path: "/local/domain",
                offset: 4096,
            },
        ),
        (23, PLAIN, b"", Request::GetFeature { domid: None }),
        (
            23,
            PLAIN,
            b"4\0",
            Request::GetFeature {
                domid: Some(Domid(4)),
            },
        ),
        (
            24,
            PLAIN,
            b"4\x0014\0",
            Request::SetFeature {
                domid: Domid(4),
                features: 14,
            },
        ),
        (
            25,
            PLAIN,
            b"",
            Request::GetQuota {
                domid: None,
                name: None,
            },
        ),
        (
            25,
            PLAIN,
            b"nodes\0",
            Request::GetQuota {
                domid: None,
                name: Some("nodes"),
            },
        ),
        (
            25,
            PLAIN,
            b"3\0soft-memory\0",
            Request::GetQuota {
                domid: Some(Domid(3)),
                name: Some("soft-memory"),
            },
        ),
        (
            26,
            PLAIN,
            b"nodes\x002000\0",
            Request::SetQuota {
                domid: None,
                name: "nodes",
                value: 2000,
            },
        ),
        (
            26,
            PLAIN,
            b"3\0watches\x000\0",
            Request::SetQuota {
                domid: Some(Domid(3)),
                name: "watches",
                value: 0,
            },
        ),
    ]
}

#[test]
fn every_request_type_parses_and_emits_golden_bytes() {
    let mut covered = std::collections::BTreeSet::new();
    for (number, options, payload, expected) in canonical_cases() {
        let message_type = MessageType::from_u32(number);
        let parsed = Request::parse(message_type, payload, options)
            .unwrap_or_else(|error| panic!("{message_type} {payload:?}: {error}"));
        assert_eq!(parsed, expected, "{message_type} {payload:?}");
        assert_eq!(parsed.message_type(), message_type);
        assert_eq!(parsed.to_payload(), payload, "emit {message_type}");
        covered.insert(number);
    }
    let requests: Vec<u32> = MessageType::DEFINED
        .iter()
        .filter(|message_type| message_type.is_client_request())
        .map(|message_type| message_type.as_u32())
        .collect();
    assert_eq!(covered.into_iter().collect::<Vec<_>>(), requests);
}

/// Payloads C accepts that are not in canonical form: (type, options, payload, expected).
#[test]
fn lenient_forms_accepted_like_c() {
    let cases: Vec<(u32, ParseOptions, &[u8], Request<'static>)> = vec![
        // TRANSACTION_START and RESET_WATCHES ignore the payload entirely.
        (6, PLAIN, b"", Request::TransactionStart),
        (6, PLAIN, b"junk", Request::TransactionStart),
        (6, PLAIN, b"a\0b\0", Request::TransactionStart),
        (21, PLAIN, b"", Request::ResetWatches),
        (21, PLAIN, b"x\0y", Request::ResetWatches),
        // Bytes after the last NUL are not an argument.
        (
            5,
            PLAIN,
            b"/a\0tok\0",
            Request::Unwatch {
                path: "/a",
                token: b"tok",
            },
        ),
        (
            4,
            PLAIN,
            b"/a\0tok\0trailing",
            Request::Watch {
                path: "/a",
                token: b"tok",
                depth: None,
            },
        ),
        (
            0,
            PLAIN,
            b"print\0hello\0tail",
            Request::Control {
                command: "print",
                arguments: vec![b"hello"],
            },
        ),
        (
            14,
            PLAIN,
            b"/x\0b0\0r5",
            Request::SetPerms {
                path: "/x",
                permissions: perms(&[(Access::Both, 0)]),
            },
        ),
        // Extra strings after INTRODUCE's and SET_TARGET's arguments are ignored.
        (
            8,
            PLAIN,
            b"5\x000\x003\0/local/domain/5\0",
            Request::Introduce {
                domid: Domid(5),
                gfn: 0,
                evtchn: 3,
            },
        ),
        (
            19,
            PLAIN,
            b"3\x004\x005\0",
            Request::SetTarget {
                domid: Domid(3),
                target: Domid(4),
            },
        ),
        // atoi leniency: blanks, signs, junk after the digits; gfn is never rejected.
        (
            8,
            PLAIN,
            b"5\0garbage\0 +7xyz\0",
            Request::Introduce {
                domid: Domid(5),
                gfn: 0,
                evtchn: 7,
            },
        ),
        (
            8,
            PLAIN,
            b"5\x0099999999999999999999\x001\0",
            Request::Introduce {
                domid: Domid(5),
                gfn: i64::MAX,
                evtchn: 1,
            },
        ),
        (
            4,
            DEPTH,
            b"/a\0t\0x\0",
            Request::Watch {
                path: "/a",
                token: b"t",
                depth: Some(0),
            },
        ),
        (
            22,
            PLAIN,
            b"/a\0abc\0",
            Request::DirectoryPart {
                path: "/a",
                offset: 0,
            },
        ),
        // C stores atoi("-1") in an unsigned offset: behind any list.
        (
            22,
            PLAIN,
            b"/a\0-1\0",
            Request::DirectoryPart {
                path: "/a",
                offset: u64::from(u32::MAX),
            },
        ),
        (
            24,
            PLAIN,
            b"4\x0014abc\0",
            Request::SetFeature {
                domid: Domid(4),
                features: 14,
            },
        ),
        (
            26,
            PLAIN,
            b"nodes\x00-2\0",
            Request::SetQuota {
                domid: None,
                name: "nodes",
                value: u32::MAX - 1,
            },
        ),
        // Leading zeros in domids are decimal.
        (9, PLAIN, b"007\0", Request::Release { domid: Domid(7) }),
    ];
    for (number, options, payload, expected) in cases {
        let message_type = MessageType::from_u32(number);
        assert_eq!(
            Request::parse(message_type, payload, options),
            Ok(expected),
            "{message_type} {payload:?}"
        );
    }
}

#[test]
fn every_error_path() {
    use Errno::{EINVAL, ENOSYS};
    let cases: Vec<(u32, ParseOptions, &[u8], Errno)> = vec![
        // Single-argument requests: no NUL, NUL not last, two NULs, empty payload.
        (1, PLAIN, b"/a", EINVAL),
        (1, PLAIN, b"", EINVAL),
        (1, PLAIN, b"/a\0b", EINVAL),
        (1, PLAIN, b"/a\0\0", EINVAL),
        (2, PLAIN, b"/a\0/b\0", EINVAL),
        (2, PLAIN, b"", EINVAL),
        (3, PLAIN, b"/a", EINVAL),
        (12, PLAIN, b"/a\0x", EINVAL),
        (13, PLAIN, b"", EINVAL),
        (7, PLAIN, b"T", EINVAL),
        (7, PLAIN, b"", EINVAL),
        (7, PLAIN, b"T\0\0", EINVAL),
        (7, PLAIN, b"X\0", EINVAL),
        (7, PLAIN, b"t\0", EINVAL),
        (7, PLAIN, b"TRUE\0", EINVAL),
        (7, PLAIN, b"\0", EINVAL),
        (9, PLAIN, b"1", EINVAL),
        (9, PLAIN, b"1\x002\0", EINVAL),
        (10, PLAIN, b"", EINVAL),
        (17, PLAIN, b"1\0x", EINVAL),
        (18, PLAIN, b"\0\0", EINVAL),
        // Non-UTF-8 paths cannot be valid (the store's path check would say EINVAL too).
        (2, PLAIN, b"/\xff\0", EINVAL),
        (11, PLAIN, b"/\xff\0v", EINVAL),
        // Domids: strict decimal, at most 65535.
        (9, PLAIN, b"65536\0", EINVAL),
        (9, PLAIN, b"-1\0", EINVAL),
        (9, PLAIN, b"\0", EINVAL),
        (9, PLAIN, b" 1\0", EINVAL),
        (9, PLAIN, b"0x1\0", EINVAL),
        (10, PLAIN, b"1a\0", EINVAL),
        (17, PLAIN, b"99999999999999999999999\0", EINVAL),
        (18, PLAIN, b"+3\0", EINVAL),
        (19, PLAIN, b"3\0x\0", EINVAL),
        (19, PLAIN, b"x\x003\0", EINVAL),
        (19, PLAIN, b"3\0", EINVAL),
        (19, PLAIN, b"3\x004", EINVAL),
        // WATCH: two strings, or three with WATCHDEPTH; depth not negative.
        (4, PLAIN, b"/a\0", EINVAL),
        (4, PLAIN, b"/a\0tok", EINVAL),
        (4, PLAIN, b"", EINVAL),
        (4, PLAIN, b"/a\0tok\x001\0", EINVAL),
        (4, DEPTH, b"/a\0tok\x001\x002\0", EINVAL),
        (4, DEPTH, b"/a\0tok\0-1\0", EINVAL),
        (4, PLAIN, b"/\xff\0tok\0", EINVAL),
        // UNWATCH: exactly two NULs.
        (5, PLAIN, b"/a\0", EINVAL),
        (5, PLAIN, b"/a\0tok", EINVAL),
        (5, PLAIN, b"/a\0tok\0\0", EINVAL),
        (5, DEPTH, b"/a\0tok\x001\0", EINVAL),
        // INTRODUCE: three strings, valid domid, evtchn > 0.
        (8, PLAIN, b"5\x000\0", EINVAL),
        (8, PLAIN, b"5\x000\x003", EINVAL),
        (8, PLAIN, b"5\x000\x000\0", EINVAL),
        (8, PLAIN, b"5\x000\0-3\0", EINVAL),
        (8, PLAIN, b"5\x000\0abc\0", EINVAL),
        (8, PLAIN, b"70000\x000\x003\0", EINVAL),
        // WRITE: a NUL is required.
        (11, PLAIN, b"/a", EINVAL),
        (11, PLAIN, b"", EINVAL),
        // SET_PERMS: at least one permission, each valid.
        (14, PLAIN, b"/a\0", EINVAL),
        (14, PLAIN, b"/a", EINVAL),
        (14, PLAIN, b"", EINVAL),
        (14, PLAIN, b"/a\0x1\0", EINVAL),
        (14, PLAIN, b"/a\0r\0", EINVAL),
        (14, PLAIN, b"/a\0\0", EINVAL),
        (14, PLAIN, b"/a\0r1\0\0", EINVAL),
        (14, PLAIN, b"/a\0r70000\0", EINVAL),
        (14, PLAIN, b"/a\0r\xff\0", EINVAL),
        // DIRECTORY_PART: exactly two NULs.
        (22, PLAIN, b"/a\0", EINVAL),
        (22, PLAIN, b"/a\x000", EINVAL),
        (22, PLAIN, b"/a\x000\0\0", EINVAL),
        (22, PLAIN, b"", EINVAL),
        // GET_FEATURE: at most one domid.
        (23, PLAIN, b"1\x002\0", EINVAL),
        (23, PLAIN, b"x\0", EINVAL),
        // SET_FEATURE: exactly two strings.
        (24, PLAIN, b"1\0", EINVAL),
        (24, PLAIN, b"1\x002\x003\0", EINVAL),
        (24, PLAIN, b"x\x002\0", EINVAL),
        // GET_QUOTA: at most two strings, domid first.
        (25, PLAIN, b"1\0nodes\0x\0", EINVAL),
        (25, PLAIN, b"x\0nodes\0", EINVAL),
        // SET_QUOTA: two or three strings; UINT_MAX is C's "disabled" marker.
        (26, PLAIN, b"nodes\0", EINVAL),
        (26, PLAIN, b"", EINVAL),
        (26, PLAIN, b"1\0nodes\x001\x002\0", EINVAL),
        (26, PLAIN, b"x\0nodes\x001\0", EINVAL),
        (26, PLAIN, b"nodes\0-1\0", EINVAL),
        (26, PLAIN, b"nodes\x004294967295\0", EINVAL),
        // CONTROL: the command must be NUL-terminated UTF-8.
        (0, PLAIN, b"", EINVAL),
        (0, PLAIN, b"help", EINVAL),
        (0, PLAIN, b"\xff\0", EINVAL),
        // Server-only, removed, invalid and unknown types.
        (15, PLAIN, b"/a\0tok\0", ENOSYS),
        (16, PLAIN, b"EINVAL\0", ENOSYS),
        (20, PLAIN, b"1\0", ENOSYS),
        (27, PLAIN, b"", ENOSYS),
        (0xfffe, PLAIN, b"", ENOSYS),
        (0xffff, PLAIN, b"", ENOSYS),
        (u32::MAX, PLAIN, b"\0", ENOSYS),
    ];
    for (number, options, payload, errno) in cases {
        let message_type = MessageType::from_u32(number);
        assert_eq!(
            Request::parse(message_type, payload, options),
            Err(errno),
            "{message_type} {payload:?}"
        );
    }
}

#[test]
fn path_accessor() {
    for (number, options, payload, _) in canonical_cases() {
        let message_type = MessageType::from_u32(number);
        let request = Request::parse(message_type, payload, options).unwrap();
        let has_path = matches!(
            message_type,
            MessageType::Directory
                | MessageType::Read
                | MessageType::GetPerms
                | MessageType::Watch
                | MessageType::Unwatch
                | MessageType::Write
                | MessageType::Mkdir
                | MessageType::Rm
                | MessageType::SetPerms
                | MessageType::DirectoryPart
        );
        assert_eq!(request.path().is_some(), has_path, "{message_type}");
        if has_path {
            let first = payload.split(|byte| *byte == 0).next().unwrap();
            assert_eq!(request.path().unwrap().as_bytes(), first);
        }
    }
}

#[test]
fn c_number_helpers() {
    assert_eq!(c_strtol(b""), 0);
    assert_eq!(c_strtol(b"abc"), 0);
    assert_eq!(c_strtol(b"  \t-42x"), -42);
    assert_eq!(c_strtol(b"+7"), 7);
    assert_eq!(c_strtol(b"-"), 0);
    assert_eq!(c_strtol(b"9223372036854775807"), i64::MAX);
    assert_eq!(c_strtol(b"9223372036854775808"), i64::MAX);
    assert_eq!(c_strtol(b"-9223372036854775808"), i64::MIN);
    assert_eq!(c_strtol(b"-99999999999999999999999"), i64::MIN);
    assert_eq!(c_atoi(b"4294967296"), 0);
    assert_eq!(c_atoi(b"2147483648"), i32::MIN);
    assert_eq!(c_atoi(b"-1"), -1);
    let strings: Vec<&[u8]> = nul_terminated_strings(b"a\0\0bc\0tail").collect();
    assert_eq!(strings, [&b"a"[..], b"", b"bc"]);
    assert_eq!(nul_terminated_strings(b"no nul").count(), 0);
    assert_eq!(nul_terminated_strings(b"").count(), 0);
    assert_eq!(nul_terminated_strings(b"\0").count(), 1);
}
