//! Each inspector command on a known log: the output names the right commits, values,
//! permissions and differences; bad input gives a one-line error, never a panic.

use xenstore_inspect::{InspectError, run};
use xenstore_persist::{Cause, Commit, Config, Log, MemDevice, Mutation, NodeRecord};

fn put(path: &str, value: &str, permissions: &[u8], generation: u64) -> Mutation {
    Mutation::PutNode {
        path: path.into(),
        record: NodeRecord {
            value: value.as_bytes().to_vec(),
            permissions: permissions.to_vec(),
            generation,
        },
    }
}

fn cause(domid: u16, request_type: u32, path: &str, timestamp: u64) -> Cause {
    Cause {
        connection: u64::from(domid) + 1,
        domid,
        request_type,
        request_id: 7,
        path: Some(path.into()),
        requests_grouped: 1,
        timestamp,
    }
}

/// Commit 1: dom0 creates /local/domain/3/name; commit 2: dom3 writes its device state;
/// commit 3: dom0 removes the device subtree; commit 4: a connection-state blob.
fn known_image() -> Vec<u8> {
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    log.append(Commit {
        cause: cause(0, 11, "/local/domain/3/name", 100),
        mutations: vec![
            put("/local", "", b"n0\0", 1),
            put("/local/domain", "", b"n0\0", 2),
            put("/local/domain/3", "", b"n0\0r3\0", 3),
            put("/local/domain/3/name", "guest3", b"n0\0r3\0", 4),
        ],
    })
    .unwrap();
    log.append(Commit {
        cause: cause(3, 11, "device/vif/0/state", 200),
        mutations: vec![
            put("/local/domain/3/device", "", b"n3\0", 5),
            put("/local/domain/3/device/vif", "", b"n3\0", 6),
            put("/local/domain/3/device/vif/0", "", b"n3\0", 7),
            put("/local/domain/3/device/vif/0/state", "4", b"n3\0r0\0", 8),
        ],
    })
    .unwrap();
    log.append(Commit {
        cause: cause(0, 13, "/local/domain/3/device", 300),
        mutations: vec![Mutation::RemoveSubtree {
            path: "/local/domain/3/device".into(),
        }],
    })
    .unwrap();
    log.append(Commit {
        cause: Cause {
            requests_grouped: 0,
            timestamp: 400,
            ..Cause::default()
        },
        mutations: vec![Mutation::PutBlob {
            key: "conn/4".into(),
            value: vec![1, 2, 3],
        }],
    })
    .unwrap();
    log.sync().unwrap();
    log.into_device().image().to_vec()
}

fn output(image: &[u8], command: &str, arguments: &[&str]) -> Result<String, InspectError> {
    let arguments: Vec<String> = arguments.iter().map(|a| a.to_string()).collect();
    let mut out = Vec::new();
    run(image, command, &arguments, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn summary_reports_newest_commit_and_node_count() {
    let text = output(&known_image(), "summary", &[]).unwrap();
    assert!(text.contains("newest commit:     4"), "{text}");
    assert!(text.contains("damage:            none"), "{text}");
    assert!(text.contains("state blobs:       1"), "{text}");
}

#[test]
fn log_lists_commits_with_their_cause() {
    let text = output(&known_image(), "log", &[]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("#1 ") && lines[0].contains("dom=0") && lines[0].contains("WRITE")
    );
    assert!(lines[0].contains("/local/domain/3/name"));
    assert!(lines[1].contains("dom=3") && lines[1].contains("device/vif/0/state"));
    assert!(lines[2].contains("RM") && lines[2].contains("/local/domain/3/device"));
    assert!(lines[3].contains("internal"));
    let range = output(&known_image(), "log", &["2", "3"]).unwrap();
    assert_eq!(range.lines().count(), 2, "{range}");
}

#[test]
fn ls_and_cat_at_head_and_at_an_old_commit() {
    let image = known_image();
    let now = output(&image, "ls", &["/local/domain/3"]).unwrap();
    assert!(
        now.contains("/local/domain/3/name = \"guest3\"  (n0 r3; gen 4)"),
        "{now}"
    );
    assert!(
        !now.contains("device"),
        "device was removed at commit 3: {now}"
    );
    let then = output(&image, "ls", &["/local/domain/3", "@2"]).unwrap();
    assert!(
        then.contains("/local/domain/3/device/vif/0/state = \"4\"  (n3 r0; gen 8)"),
        "{then}"
    );
    assert_eq!(
        output(&image, "cat", &["/local/domain/3/name"]).unwrap(),
        "guest3\n"
    );
    assert_eq!(
        output(&image, "cat", &["/local/domain/3/device/vif/0/state", "@2"]).unwrap(),
        "4\n"
    );
    assert!(matches!(
        output(&image, "cat", &["/local/domain/3/device/vif/0/state"]),
        Err(InspectError::NotFound(_))
    ));
}

#[test]
fn history_shows_who_wrote_and_what_followed() {
    let text = output(
        &known_image(),
        "history",
        &["/local/domain/3/device/vif/0/state"],
    )
    .unwrap();
    assert!(text.contains("#2 ") && text.contains("dom=3"), "{text}");
    assert!(
        text.contains("after: /local/domain/3/device/vif/0/state = \"4\""),
        "{text}"
    );
    assert!(text.contains("#3 ") && text.contains("absent"), "{text}");
}

#[test]
fn diff_names_added_removed_and_blobs() {
    let image = known_image();
    let forward = output(&image, "diff", &["1", "2"]).unwrap();
    assert!(
        forward.contains("+ /local/domain/3/device/vif/0/state = \"4\""),
        "{forward}"
    );
    assert!(
        forward.contains("4 added, 0 removed, 0 changed"),
        "{forward}"
    );
    let removal = output(&image, "diff", &["2", "4"]).unwrap();
    assert!(
        removal.contains("- /local/domain/3/device/vif/0/state"),
        "{removal}"
    );
    assert!(removal.contains("+ blob conn/4"), "{removal}");
}

#[test]
fn verify_passes_on_an_intact_image_and_reports_damage() {
    let image = known_image();
    let text = output(&image, "verify", &[]).unwrap();
    assert!(text.contains("verify: ok"), "{text}");
    // Flip one bit in every sector after the superblocks: the log must be reported damaged
    // (or not a log at all) with a clear message, never a panic.
    let mut damaged = image.clone();
    for sector in 8..damaged.len() / 512 {
        damaged[sector * 512 + 100] ^= 0x10;
    }
    let mut out = Vec::new();
    let result = run(&damaged, "verify", &[], &mut out);
    assert!(
        result.is_err(),
        "damage not reported: {}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn bad_commands_and_arguments_are_one_line_errors() {
    let image = known_image();
    assert!(matches!(
        output(&image, "frobnicate", &[]),
        Err(InspectError::Usage(_))
    ));
    assert!(matches!(
        output(&image, "diff", &["1"]),
        Err(InspectError::Usage(_))
    ));
    assert!(matches!(
        output(&image, "cat", &["/x", "@abc"]),
        Err(InspectError::Usage(_))
    ));
    assert!(matches!(
        output(&image, "cat", &[]),
        Err(InspectError::Usage(_))
    ));
    assert!(matches!(
        output(b"not a log at all", "summary", &[]),
        Err(InspectError::Open(_))
    ));
    let error = output(&image, "log", &["5", "2"]).unwrap_err();
    assert!(!error.to_string().contains('\n'), "{error}");
}

/// Reads a migration stream back: (path, value, permissions as (letter, domid)).
type StreamNode = (String, Vec<u8>, Vec<(u8, u16)>);

fn parse_stream(stream: &[u8]) -> Vec<StreamNode> {
    assert_eq!(&stream[..8], b"xenstore");
    assert_eq!(u32::from_be_bytes(stream[8..12].try_into().unwrap()), 1);
    assert_eq!(u32::from_be_bytes(stream[12..16].try_into().unwrap()), 0);
    let mut nodes = Vec::new();
    let mut at = 16;
    loop {
        let record_type = u32::from_le_bytes(stream[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &stream[at + 8..at + 8 + len];
        at += 8 + len.div_ceil(8) * 8;
        if record_type == 0 {
            assert_eq!(len, 0);
            assert_eq!(at, stream.len(), "END is the last record");
            return nodes;
        }
        assert_eq!(record_type, 5, "only NODE_DATA records are written");
        let u16_at =
            |offset: usize| u16::from_le_bytes(body[offset..offset + 2].try_into().unwrap());
        let path_len = u16_at(8) as usize;
        let value_len = u16_at(10) as usize;
        let perm_count = u16_at(14) as usize;
        let permissions: Vec<(u8, u16)> = (0..perm_count)
            .map(|i| (body[16 + 4 * i], u16_at(16 + 4 * i + 2)))
            .collect();
        let path_start = 16 + 4 * perm_count;
        let path = &body[path_start..path_start + path_len];
        assert_eq!(path.last(), Some(&0), "path is NUL-terminated");
        let value = body[path_start + path_len..path_start + path_len + value_len].to_vec();
        nodes.push((
            String::from_utf8(path[..path_len - 1].to_vec()).unwrap(),
            value,
            permissions,
        ));
    }
}

#[test]
fn export_migration_writes_every_node_in_upstream_format() {
    let image = known_image();
    let directory = std::env::temp_dir().join(format!("inspect-export-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("stream.bin");
    let file_name = file.to_str().unwrap();
    let text = output(&image, "export-migration", &[file_name, "@2"]).unwrap();
    assert!(text.contains("wrote 8 nodes"), "{text}");
    let nodes = parse_stream(&std::fs::read(&file).unwrap());
    let paths: Vec<&str> = nodes.iter().map(|node| node.0.as_str()).collect();
    assert_eq!(paths[0], "/local", "parents first: {paths:?}");
    let state = nodes
        .iter()
        .find(|node| node.0 == "/local/domain/3/device/vif/0/state")
        .unwrap();
    assert_eq!(state.1, b"4");
    assert_eq!(state.2, vec![(b'n', 3), (b'r', 0)]);
    let head = output(&image, "export-migration", &[file_name]).unwrap();
    assert!(head.contains("wrote 4 nodes"), "{head}");
    std::fs::remove_dir_all(&directory).unwrap();
}
