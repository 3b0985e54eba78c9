//! Space regression tests: the log must not run out of room while the live state plus the
//! largest commit fits comfortably in a region (the history window yields to space), and a
//! commit that can never fit gets a typed error that leaves the log usable.

use xenstore_persist::{
    Cause, Commit, Config, Error, LimitError, Log, MemDevice, Mutation, NodeRecord,
};

fn blobs(round: u32, keys: u32, len: usize) -> Commit {
    Commit {
        cause: Cause::default(),
        mutations: (0..keys)
            .map(|key| Mutation::PutBlob {
                key: format!("conn/{key}"),
                value: vec![(round % 251) as u8; len],
            })
            .collect(),
    }
}

fn check_blobs(log: &Log<MemDevice>, round: u32, keys: u32, len: usize) {
    for key in 0..keys {
        let value = log.blob(&format!("conn/{key}")).expect("blob present");
        assert_eq!(value.len(), len);
        assert!(value.iter().all(|&b| b == (round % 251) as u8));
    }
}

/// The server's shape: one commit per request rewriting five 128 KiB connection blobs (live
/// state ~640 KiB) on a 32 MiB device. Used to fail with `NoSpace` at round ~25 because the
/// 1,024-commit history window was copied whole by every compaction.
#[test]
fn blob_rewrites_never_run_out_of_space() {
    let mut log = Log::create(MemDevice::new(65536), Config::default()).unwrap();
    for round in 0..400u32 {
        log.append(blobs(round, 5, 128 * 1024))
            .unwrap_or_else(|e| panic!("round {round}: append: {e:?}"));
        log.sync()
            .unwrap_or_else(|e| panic!("round {round}: sync: {e:?}"));
    }
    assert!(log.stats().compactions > 0);
    let report = log.space_report();
    assert!(report.fits, "{report:?}");
    assert!(report.largest_commit_bytes >= 5 * 128 * 1024);
    let (log, recovery) = Log::open(log.into_device(), Config::default()).unwrap();
    assert_eq!(recovery.seq, 400);
    check_blobs(&log, 399, 5, 128 * 1024);
}

/// Worst case: maximal commits (~1 MiB) back to back, without syncs in between and with no
/// maintenance, on a device whose region holds the live state plus a few such commits only.
#[test]
fn maximal_commits_back_to_back_fit() {
    for auto_maintenance in [true, false] {
        let config = Config {
            auto_maintenance,
            ..Config::default()
        };
        // Region of 6 MiB; live state 2 blobs of 500 KiB (~1 MiB); commits ~1 MiB.
        let mut log = Log::create(MemDevice::new(16 + 2 * 12 * 1024), config).unwrap();
        for round in 0..60u32 {
            log.append(blobs(round, 2, 500 * 1024))
                .unwrap_or_else(|e| panic!("round {round}: append: {e:?}"));
            if round % 7 == 6 {
                log.sync()
                    .unwrap_or_else(|e| panic!("round {round}: sync: {e:?}"));
            }
        }
        log.sync().unwrap();
        let report = log.space_report();
        assert!(report.fits, "{report:?}");
        let (log, recovery) = Log::open(log.into_device(), config).unwrap();
        assert_eq!(recovery.seq, 60);
        check_blobs(&log, 59, 2, 500 * 1024);
    }
}

/// Mixed: many small node writes keep a large history window wanted, while big blob commits
/// arrive; history must shrink instead of failing.
#[test]
fn history_window_yields_to_space() {
    let mut log = Log::create(MemDevice::new(16 + 2 * 8 * 1024), Config::default()).unwrap();
    for round in 0..3000u32 {
        let commit = if round % 10 == 0 {
            blobs(round, 3, 200 * 1024)
        } else {
            Commit {
                cause: Cause::default(),
                mutations: vec![Mutation::PutNode {
                    path: format!("/local/domain/{}/data/x", round % 50),
                    record: NodeRecord {
                        value: vec![b'v'; 100],
                        permissions: b"n0\0".to_vec(),
                        generation: u64::from(round),
                    },
                }],
            }
        };
        log.append(commit)
            .unwrap_or_else(|e| panic!("round {round}: append: {e:?}"));
        log.sync()
            .unwrap_or_else(|e| panic!("round {round}: sync: {e:?}"));
    }
    let (oldest, newest) = log.history_range().unwrap();
    assert_eq!(newest, 3000);
    assert!(oldest <= newest);
    let (log, recovery) = Log::open(log.into_device(), Config::default()).unwrap();
    assert_eq!(recovery.seq, 3000);
    check_blobs(&log, 2990, 3, 200 * 1024);
}

/// A commit that cannot fit in a region at all is refused with a typed limit error, nothing
/// is applied and the log stays usable; so is one that does not fit next to the live state.
#[test]
fn commit_larger_than_region_is_refused_cleanly() {
    // 64-sector regions (32 KiB).
    let mut log = Log::create(MemDevice::new(16 + 2 * 64), Config::default()).unwrap();
    let err = log.append(blobs(1, 1, 40 * 1024)).unwrap_err();
    assert!(
        matches!(err, Error::Limit(LimitError::CommitExceedsRegion { .. })),
        "{err:?}"
    );
    assert!(!log.is_poisoned());
    assert_eq!(log.last_seq(), 0);
    // Fill the live state, then a commit that fits a region but not next to the live state.
    log.append(blobs(2, 1, 20 * 1024)).unwrap();
    log.sync().unwrap();
    let err = log
        .append(Commit {
            cause: Cause::default(),
            mutations: vec![Mutation::PutBlob {
                key: "other".into(),
                value: vec![7; 20 * 1024],
            }],
        })
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert!(
        !log.is_poisoned(),
        "a refused commit must not poison the log"
    );
    assert_eq!(log.last_seq(), 1);
    log.append(blobs(3, 1, 1024)).unwrap();
    log.sync().unwrap();
    let (log, recovery) = Log::open(log.into_device(), Config::default()).unwrap();
    assert_eq!(recovery.seq, 2);
    check_blobs(&log, 3, 1, 1024);
    assert!(log.blob("other").is_none());
}

/// The space report the server can warn on.
#[test]
fn space_report_warns_when_device_is_too_small() {
    let mut log = Log::create(MemDevice::new(16 + 2 * 4096), Config::default()).unwrap();
    let report = log.space_report();
    assert!(report.fits && report.comfortable, "{report:?}");
    assert_eq!(report.region_bytes, 4096 * 512);
    for round in 0..6u32 {
        log.append(blobs(round, 3, 300 * 1024))
            .unwrap_or_else(|e| panic!("round {round}: append: {e:?}"));
        log.sync().unwrap();
    }
    // Live ~900 KiB + commits of ~900 KiB in a 2 MiB region: fits, but not comfortably.
    let report = log.space_report();
    assert!(report.fits, "{report:?}");
    assert!(!report.comfortable, "{report:?}");
    assert!(report.live_bytes >= 3 * 300 * 1024, "{report:?}");
    assert!(report.largest_commit_bytes >= 3 * 300 * 1024, "{report:?}");
    assert!(report.recommended_region_bytes > report.region_bytes);
    assert!(report.required_region_bytes <= report.region_bytes);
    let sectors = xenstore_persist::recommended_device_sectors(
        report.live_bytes,
        report.largest_commit_bytes,
    );
    assert!(sectors >= 16 + 2 * report.recommended_region_bytes / 512);
}
