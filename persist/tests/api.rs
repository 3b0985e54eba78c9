//! API-level tests of the log on a RAM disk and a file on tmpfs: round trips, group commit,
//! checkpoints, compaction, big directories, history.

use std::collections::BTreeMap;

use xenstore_persist::{
    Cause, Commit, Config, Error, FileDevice, Log, MemDevice, Mutation, NodeRecord, OpenError,
    PathError, Snapshot,
};

fn rec(v: &str, generation: u64) -> NodeRecord {
    NodeRecord {
        value: v.as_bytes().to_vec(),
        permissions: b"n0\0".to_vec(),
        generation,
    }
}

fn put(path: &str, v: &str) -> Commit {
    Commit {
        cause: Cause {
            connection: 1,
            domid: 0,
            request_type: 11,
            request_id: 0,
            path: Some(path.into()),
            requests_grouped: 1,
            timestamp: 0,
        },
        mutations: vec![Mutation::PutNode {
            path: path.into(),
            record: rec(v, 1),
        }],
    }
}

fn reopen(log: Log<MemDevice>, config: Config) -> Log<MemDevice> {
    let device = log.into_device();
    let (log, recovery) = Log::open(device, config).unwrap();
    assert!(recovery.damage.is_none());
    log
}

#[test]
fn blank_device_is_not_formatted() {
    assert_eq!(
        Log::open(MemDevice::new(1024), Config::default()).unwrap_err(),
        OpenError::NotFormatted
    );
    assert!(matches!(
        Log::create(MemDevice::new(20), Config::default()).unwrap_err(),
        OpenError::DeviceTooSmall { .. }
    ));
}

#[test]
fn append_sync_reopen() {
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    let a = log.append(put("/local/domain/1/name", "one")).unwrap();
    let b = log
        .append(Commit {
            cause: Cause::default(),
            mutations: vec![
                Mutation::PutBlob {
                    key: "conn/1".into(),
                    value: b"ring".to_vec(),
                },
                Mutation::PutNode {
                    path: "/".into(),
                    record: rec("", 0),
                },
            ],
        })
        .unwrap();
    assert_eq!((a, b), (1, 2));
    assert_eq!(log.durable_seq(), 0);
    assert_eq!(log.sync().unwrap(), 2);
    let before = log.snapshot();
    let log = reopen(log, Config::default());
    assert_eq!(log.snapshot(), before);
    assert_eq!(log.blob("conn/1"), Some(&b"ring"[..]));
    assert_eq!(log.last_seq(), 2);
    assert_eq!(log.node_count(), 2);
}

#[test]
fn unsynced_commits_are_not_durable_but_do_not_break_recovery() {
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    log.append(put("/a", "1")).unwrap();
    log.sync().unwrap();
    log.append(put("/b", "2")).unwrap();
    let log = reopen(log, Config::default());
    assert_eq!(log.last_seq(), 1);
    assert!(log.node("/b").is_none());
}

#[test]
fn invalid_input_is_rejected_without_effect() {
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    assert_eq!(
        log.append(put("relative", "x")),
        Err(Error::InvalidPath(PathError::NotAbsolute))
    );
    let mut c = put("/ok", "x");
    c.mutations.push(Mutation::RemoveSubtree {
        path: "/bad//path".into(),
    });
    assert!(log.append(c).is_err());
    assert!(log.node("/ok").is_none());
    assert!(!log.is_poisoned());
    assert_eq!(log.append(put("/ok", "x")).unwrap(), 1);
}

/// `CommitSize` measures what `append` limits: a commit of exactly
/// `COMMIT_LEN_MAX_BYTES` encoded bytes is accepted, one byte more is refused with
/// `CommitTooLarge` (nothing applied, the log still usable).
#[test]
fn commit_size_predicts_the_commit_limit_exactly() {
    use xenstore_persist::limits::{BLOB_LEN_MAX_BYTES, COMMIT_LEN_MAX_BYTES};
    use xenstore_persist::{CommitSize, LimitError};
    let cause = put("/x", "x").cause;
    // Blobs of at most BLOB_LEN_MAX_BYTES, the last one sized to land exactly on the limit.
    let build = |extra: usize| -> (Commit, CommitSize) {
        let mut size = CommitSize::new(&cause);
        let mut mutations = Vec::new();
        for index in 0.. {
            let probe = Mutation::PutBlob {
                key: format!("b{index}"),
                value: Vec::new(),
            };
            let room = COMMIT_LEN_MAX_BYTES + extra - size.with(probe.encoded_len()).encoded_len();
            // The value's length prefix grows with the value: shrink until it fits exactly.
            let mut len = room.min(BLOB_LEN_MAX_BYTES);
            let blob = loop {
                let blob = Mutation::PutBlob {
                    key: format!("b{index}"),
                    value: vec![index as u8; len],
                };
                if size.with(blob.encoded_len()).encoded_len() <= COMMIT_LEN_MAX_BYTES + extra {
                    break blob;
                }
                len -= 1;
            };
            size.add(blob.encoded_len());
            mutations.push(blob);
            if size.encoded_len() == COMMIT_LEN_MAX_BYTES + extra {
                break;
            }
        }
        let commit = Commit {
            cause: cause.clone(),
            mutations,
        };
        (commit, size)
    };
    let mut log = Log::create(MemDevice::new(16384), Config::default()).unwrap();
    let (at_limit, size) = build(0);
    assert!(size.fits());
    assert_eq!(at_limit.encoded_len(), COMMIT_LEN_MAX_BYTES);
    assert_eq!(log.append(at_limit).unwrap(), 1);
    let (over, size) = build(1);
    assert!(!size.fits());
    assert_eq!(over.encoded_len(), COMMIT_LEN_MAX_BYTES + 1);
    assert_eq!(
        log.append(over),
        Err(Error::Limit(LimitError::CommitTooLarge {
            len: COMMIT_LEN_MAX_BYTES + 1
        }))
    );
    assert!(!log.is_poisoned());
    assert_eq!(log.sync().unwrap(), 1);
    let log = reopen(log, Config::default());
    assert_eq!(log.blob("b0").map(<[u8]>::len), Some(BLOB_LEN_MAX_BYTES));
}

#[test]
fn checkpoints_and_compaction_keep_state_and_bound_the_log() {
    let config = Config {
        checkpoint_interval_commits: 50,
        history_commits: 20,
        ..Config::default()
    };
    let mut log = Log::create(MemDevice::new(2048), config).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..5000u64 {
        let path = format!("/local/domain/{}/data/k{}", i % 7, i % 100);
        let v = format!("v{i}");
        log.append(put(&path, &v)).unwrap();
        model.insert(path, rec(&v, 1));
        if i % 3 == 0 {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    assert!(log.stats().compactions > 0, "{:?}", log.stats());
    assert!(log.stats().checkpoints > 10);
    assert_eq!(log.snapshot().nodes, model);
    let log = reopen(log, config);
    assert_eq!(log.snapshot().nodes, model);
    assert!(log.log_bytes() < log.region_bytes());
}

#[test]
fn big_directory_survives_reopen() {
    let mut log = Log::create(MemDevice::new(64 * 1024), Config::default()).unwrap();
    for i in 0..20_000 {
        log.append(put(&format!("/big/entry{i}"), "x")).unwrap();
    }
    log.sync().unwrap();
    log.checkpoint().unwrap();
    let before = log.stats().object_record_bytes;
    log.append(put("/big/entry77", "changed")).unwrap();
    log.checkpoint().unwrap();
    let cost = log.stats().object_record_bytes - before;
    assert!(
        cost < 16 * 1024,
        "checkpoint after one change wrote {cost} bytes"
    );
    let log = reopen(log, Config::default());
    assert_eq!(log.node_count(), 20_000);
    assert_eq!(log.node("/big/entry77").unwrap().value, b"changed");
    assert_eq!(log.children("/big").unwrap().len(), 20_000);
}

#[test]
fn remove_subtree_and_blobs() {
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    for p in ["/a", "/a/b", "/a/b/c", "/a2", "/x"] {
        log.append(put(p, p)).unwrap();
    }
    log.append(Commit {
        cause: Cause::default(),
        mutations: vec![
            Mutation::RemoveSubtree { path: "/a".into() },
            Mutation::PutBlob {
                key: "quota".into(),
                value: vec![1, 2],
            },
            Mutation::PutBlob {
                key: "gone".into(),
                value: vec![],
            },
            Mutation::RemoveBlob { key: "gone".into() },
        ],
    })
    .unwrap();
    log.sync().unwrap();
    let expect: Vec<String> = vec!["/a2".into(), "/x".into()];
    let mut seen = Vec::new();
    log.for_each_node(|p, _| seen.push(p.to_string()));
    assert_eq!(seen, expect);
    let log = reopen(log, Config::default());
    let s: Snapshot = log.snapshot();
    assert_eq!(s.nodes.keys().cloned().collect::<Vec<_>>(), expect);
    assert_eq!(s.blobs.len(), 1);
}

#[test]
fn history_tree_at_commits_touching_and_diff() {
    let config = Config {
        checkpoint_interval_commits: 4,
        ..Config::default()
    };
    let mut log = Log::create(MemDevice::new(8192), config).unwrap();
    for i in 1..=10u64 {
        log.append(put(&format!("/n{}", i % 3), &format!("{i}")))
            .unwrap();
        log.sync().unwrap();
    }
    log.append(Commit {
        cause: Cause {
            request_type: 13,
            ..Cause::default()
        },
        mutations: vec![Mutation::RemoveSubtree { path: "/n0".into() }],
    })
    .unwrap();
    let (oldest, newest) = log.history_range().unwrap();
    assert_eq!((oldest, newest), (0, 11));
    let t5 = log.tree_at(5).unwrap();
    assert_eq!(t5.node("/n2").unwrap().value, b"5");
    assert_eq!(t5.node("/n1").unwrap().value, b"4");
    assert_eq!(t5.children("/").unwrap(), ["n0", "n1", "n2"]);
    let touching: Vec<u64> = log
        .commits_touching("/n0")
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(touching, [3, 6, 9, 11]);
    let all = log.commits(1, 11).unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].commit.cause.request_type, 13);
    let d = log.diff(5, 11).unwrap();
    assert_eq!(d.removed, ["/n0"]);
    assert_eq!(d.changed, ["/n1", "/n2"]);
    assert!(d.added.is_empty());
    assert!(matches!(
        log.tree_at(12),
        Err(Error::NotInHistory { seq: 12, .. })
    ));
}

#[test]
fn history_window_survives_compaction() {
    let config = Config {
        checkpoint_interval_commits: 10,
        history_commits: 30,
        ..Config::default()
    };
    let mut log = Log::create(MemDevice::new(8192), config).unwrap();
    for i in 1..=100u64 {
        log.append(put("/k", &format!("{i}"))).unwrap();
    }
    log.sync().unwrap();
    log.compact().unwrap();
    let (oldest, newest) = log.history_range().unwrap();
    assert_eq!((oldest, newest), (70, 100));
    assert_eq!(log.tree_at(80).unwrap().node("/k").unwrap().value, b"80");
    assert!(log.tree_at(60).is_err());
    let mut log = reopen(log, config);
    assert_eq!(log.tree_at(71).unwrap().node("/k").unwrap().value, b"71");
    assert_eq!(log.commits(0, 1000).unwrap().len(), 30);
}

#[test]
fn file_device_on_tmpfs() {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("xs-persist-test-{}.img", std::process::id()));
    let device = FileDevice::create(&path, 4096).unwrap();
    let mut log = Log::create(device, Config::default()).unwrap();
    log.append(put("/tool/x", "y")).unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, r) = Log::open(FileDevice::open(&path).unwrap(), Config::default()).unwrap();
    assert_eq!(r.seq, 1);
    assert_eq!(log.node("/tool/x").unwrap().value, b"y");
    std::fs::remove_file(&path).unwrap();
}

/// Flip one bit of the image at `offset`.
fn flipped(device: &MemDevice, offset: u64) -> MemDevice {
    let mut image = device.image().to_vec();
    image[offset as usize] ^= 0x10;
    MemDevice::from_image(&image)
}

#[test]
fn damage_in_the_middle_is_reported_and_salvage_offers_the_intact_prefix() {
    let config = Config {
        auto_maintenance: false,
        ..Config::default()
    };
    let mut log = Log::create(MemDevice::new(8192), config).unwrap();
    let mut states = vec![log.snapshot()];
    for i in 1..=30u64 {
        log.append(put(&format!("/d/k{}", i % 5), &format!("{i}")))
            .unwrap();
        states.push(log.snapshot());
        if i % 3 == 0 {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    let mut device = log.into_device();
    let (_, records, _) = xenstore_persist::scan_records(&mut device).unwrap();
    let victim = records
        .iter()
        .find(|r| r.kind == xenstore_persist::RecordKind::Commit && r.seq == 10)
        .unwrap();
    let bad = flipped(&device, victim.offset + 45);
    let damage = match Log::open(bad.clone(), config) {
        Err(OpenError::Damaged(d)) => d,
        other => panic!("expected damage, got {other:?}"),
    };
    assert_eq!(damage.kind, xenstore_persist::DamageKind::LogRecord);
    assert_eq!(damage.last_intact_seq, 9);
    assert!(damage.proven_durable_seq >= 10);
    let (mut salvaged, recovery) = Log::open_salvage(bad, config).unwrap();
    assert_eq!(recovery.damage, Some(damage));
    assert_eq!(salvaged.last_seq(), 9);
    assert_eq!(salvaged.snapshot(), states[9]);
    // The salvaged log continues normally and reopens cleanly.
    salvaged.append(put("/after", "x")).unwrap();
    salvaged.sync().unwrap();
    let log = reopen(salvaged, config);
    assert_eq!(log.last_seq(), 10);
    assert_eq!(log.node("/after").unwrap().value, b"x");
}

#[test]
fn damaged_newest_superblock_falls_back_without_loss() {
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    for i in 0..20 {
        log.append(put(&format!("/k{i}"), "v")).unwrap();
        log.sync().unwrap();
        if i % 5 == 4 {
            log.checkpoint().unwrap();
        }
    }
    log.compact().unwrap();
    log.append(put("/last", "v")).unwrap();
    log.sync().unwrap();
    let before = log.snapshot();
    let device = log.into_device();
    for slot_offset in [0u64, 8 * 512] {
        let bad = flipped(&device, slot_offset + 20);
        let (log, recovery) = Log::open(bad, Config::default()).unwrap();
        assert!(recovery.damage.is_none());
        assert_eq!(log.snapshot(), before);
        assert_eq!(log.last_seq(), 21);
    }
    // Both slots damaged: a typed error, not "not formatted".
    let bad = flipped(&flipped(&device, 20), 8 * 512 + 20);
    assert!(matches!(
        Log::open(bad, Config::default()),
        Err(OpenError::Damaged(_))
    ));
}

#[test]
fn damaged_object_in_the_live_tree_is_reported() {
    let config = Config {
        history_commits: 0,
        ..Config::default()
    };
    let mut log = Log::create(MemDevice::new(8192), config).unwrap();
    for i in 0..50 {
        // Distinct values: identical leaves would be one shared object.
        log.append(put(&format!("/a/b{i}"), &format!("v{i}")))
            .unwrap();
    }
    log.sync().unwrap();
    log.compact().unwrap();
    // Two more checkpoints: both superblock slots now share the compacted, untouched /a/b*.
    for i in 0..2 {
        log.append(put(&format!("/other{i}"), "v")).unwrap();
        log.checkpoint().unwrap();
    }
    let mut device = log.into_device();
    let (_, records, _) = xenstore_persist::scan_records(&mut device).unwrap();
    let object = records
        .iter()
        .find(|r| r.kind == xenstore_persist::RecordKind::Object)
        .unwrap();
    let bad = flipped(&device, object.offset + 44);
    match Log::open(bad.clone(), config) {
        Err(OpenError::Damaged(d)) => {
            assert!(matches!(
                d.kind,
                xenstore_persist::DamageKind::Object | xenstore_persist::DamageKind::Checkpoint
            ));
        }
        Ok((log, _)) => panic!("damage missed, recovered {}", log.last_seq()),
        Err(e) => panic!("unexpected {e:?}"),
    }
    // Salvage keeps everything but the damaged subtree, says what it lost, and the result is
    // a clean log.
    let (log, recovery) = Log::open_salvage(bad, config).unwrap();
    assert!(recovery.damage.is_some());
    assert_eq!(recovery.lost.len(), 1, "{:?}", recovery.lost);
    let lost = &recovery.lost[0];
    assert!(lost.starts_with("/a/b"), "{lost}");
    assert_eq!(log.last_seq(), 52);
    assert_eq!(log.node_count(), 51);
    assert!(log.node(lost).is_none());
    assert!(log.node("/other1").is_some());
    let log = reopen(log, config);
    assert_eq!(log.node_count(), 51);
}

#[test]
fn read_only_open_writes_nothing() {
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    for i in 0..10 {
        log.append(put(&format!("/k{i}"), "v")).unwrap();
        log.sync().unwrap();
    }
    let device = log.into_device();
    let image = device.image().to_vec();
    let (mut log, recovery) = Log::open_read_only(device, Config::default(), false).unwrap();
    assert_eq!(recovery.seq, 10);
    assert_eq!(log.node_count(), 10);
    assert_eq!(log.commits(1, 10).unwrap().len(), 10);
    assert_eq!(log.tree_at(5).unwrap().snapshot().nodes.len(), 5);
    assert_eq!(log.append(put("/x", "y")), Err(Error::ReadOnly));
    assert_eq!(log.sync(), Err(Error::ReadOnly));
    assert!(!log.is_poisoned());
    assert_eq!(log.into_device().image(), &image[..]);
}

#[test]
fn deepest_path_round_trips() {
    let deep: String = (0..xenstore_persist::limits::PATH_DEPTH_MAX)
        .map(|i| format!("/d{}", i % 10))
        .collect();
    let mut log = Log::create(MemDevice::new(8192), Config::default()).unwrap();
    log.append(put(&deep, "bottom")).unwrap();
    log.sync().unwrap();
    log.checkpoint().unwrap();
    log.compact().unwrap();
    let mut log = reopen(log, Config::default());
    assert_eq!(log.node(&deep).unwrap().value, b"bottom");
    assert_eq!(log.commits_touching("/d0/d1").unwrap().len(), 1);
    assert_eq!(
        log.append(put(&format!("{deep}/one-too-deep"), "x")),
        Err(Error::InvalidPath(PathError::TooDeep))
    );
}
