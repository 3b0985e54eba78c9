//! Crash-consistency simulator: the log is run on a `SimDevice` and the power is cut.
//!
//! # Fault model
//!
//! * The device is a sequence of 512-byte sectors. Each sector written is one operation; each
//!   flush is one operation. A crash is armed at operation k: operation k and everything after
//!   it fail (`DeviceError::Crashed`) and are not performed. Sweeping k over every operation
//!   crashes after every single sector write and before and after every flush.
//! * At the crash, every sector written since the last completed flush independently reaches
//!   the durable image or not (`CrashMode::RandomSubset`), or all do / none do; with
//!   `RandomSubsetTorn` a kept sector may be torn (only a prefix of its new bytes, any length,
//!   the rest keeps the old bytes); with `RandomSubsetTornFlipped` a kept sector may also get
//!   one flipped bit. Flushed sectors are never changed by a crash.
//! * Separately (`bit_flip_at_rest`), one bit of the durable image is flipped after a clean
//!   run: media corruption of acknowledged data.
//! * Not modelled: misdirected writes, reads returning stale data, a device that lies about
//!   flush. A bit flip at rest inside the newest flushed batch cannot be told apart from a torn
//!   write of that batch (nothing durable follows it); the test allows that batch to be lost
//!   and checks that the state is still an exact committed prefix.
//!
//! # What is checked
//!
//! After each crash, `Log::open` must succeed and return exactly the reference model's state
//! (a `BTreeMap` of path → record and of blobs) after some commit r with
//! acknowledged ≤ r ≤ appended, where acknowledged is the last value returned by `sync`. The
//! recovered log is then used further (more commits, more crashes, up to three per run) and
//! reopened cleanly, which checks that recovery left a consistent tail.
//! For bit flips at rest: `open` either returns an exact committed prefix (≥ acknowledged
//! unless the flip hit the newest batch) or a typed `OpenError::Damaged`, after which
//! `open_salvage` returns an exact committed prefix, or, when it had to leave damaged
//! subtrees out (`Recovery::lost`), a subset of one whose every node and blob is right.
//! Never a panic, never a wrong value.
//!
//! Seeds (defaults keep `cargo test` short; raise them for a soak run):
//! * `PERSIST_SWEEP_SEEDS` (6, ~200 crash points each): crash at every operation;
//! * `PERSIST_RANDOM_SEEDS` (1000): random crash points, up to three crashes per run;
//! * `PERSIST_BIG_SEEDS` (20): commits with blobs of hundreds of KiB, so batches are written
//!   early inside `append`, crash at a random point;
//! * `PERSIST_FLIP_SEEDS` (2000): one bit flipped at rest;
//! * `PERSIST_GARBAGE_SEEDS` (300): heavy corruption (up to 40 flips and garbage sectors):
//!   typed results; salvage returns a subset of the model's state and names what it lost.
//!
//! Soak example: `PERSIST_SWEEP_SEEDS=200 PERSIST_RANDOM_SEEDS=50000 cargo test --release -p
//! xenstore-persist --test crash`. Failures print the seed; `PERSIST_DEBUG_SEED=n` dumps the
//! record chain of a bit-flip run.

use std::collections::BTreeMap;

use xenstore_persist::{
    BlockDevice, Cause, Commit, Config, CrashMode, Log, Mutation, NodeRecord, OpenError, SimDevice,
    SimRng, Snapshot,
};

const DEVICE_SECTORS: u64 = 16 + 2 * 160;

thread_local! {
    /// Set by `large_commits_and_early_batches`: bigger device, some commits carry blobs of
    /// hundreds of KiB so batches reach the 1 MiB early write-out inside `append`.
    static BIG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn device_sectors() -> u64 {
    if BIG.with(|b| b.get()) {
        16 + 2 * 16384
    } else {
        DEVICE_SECTORS
    }
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config_for(rng: &mut SimRng) -> Config {
    let checkpoint_interval_bytes = 2048 + rng.below(4096);
    Config {
        checkpoint_interval_bytes,
        checkpoint_interval_commits: 4 + rng.below(12),
        history_commits: rng.below(24),
        compact_at_percent: 40 + rng.below(30) as u8,
        compact_growth_factor: 2 + rng.below(4),
        compact_min_bytes: rng.below(16 * 1024),
        auto_maintenance: true,
        // One to four 64 KiB chunks (no extra draw, so seeds keep their scenarios): recovery
        // and compaction evict cache chunks all the time.
        read_cache_bytes: 64 * 1024 * (1 + checkpoint_interval_bytes % 4),
    }
}

/// Random commit over a small namespace so that paths collide, subtrees get removed, and
/// directories grow and shrink.
fn random_commit(rng: &mut SimRng, n: u64) -> Commit {
    let mut mutations = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let depth = 1 + rng.below(6);
        let mut path = String::new();
        for level in 0..depth {
            path.push('/');
            let fanout = if level == 1 { 12 } else { 3 };
            path.push_str(&format!("c{}", rng.below(fanout)));
        }
        let m = match rng.below(20) {
            0..=12 => Mutation::PutNode {
                path,
                record: NodeRecord {
                    value: format!("v{n}").into_bytes(),
                    permissions: vec![b'n', b'0' + (n % 10) as u8, 0],
                    generation: n,
                },
            },
            13..=14 => Mutation::RemoveSubtree { path },
            15..=18 => Mutation::PutBlob {
                key: format!("conn/{}", rng.below(6)),
                value: if BIG.with(|b| b.get()) && rng.chance(1, 3) {
                    vec![n as u8; 200_000 + rng.below(300_000) as usize]
                } else {
                    vec![n as u8; rng.below(300) as usize]
                },
            },
            _ => Mutation::RemoveBlob {
                key: format!("conn/{}", rng.below(6)),
            },
        };
        mutations.push(m);
    }
    Commit {
        cause: Cause {
            connection: rng.below(4),
            domid: rng.below(3) as u16,
            request_type: 11,
            request_id: n as u32,
            path: None,
            requests_grouped: 1,
            timestamp: n,
        },
        mutations,
    }
}

/// Reference model: the state after every commit.
struct Model {
    states: Vec<Snapshot>,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![Snapshot::default()],
        }
    }
    fn apply(&mut self, c: &Commit) {
        let mut s = self.states.last().unwrap().clone();
        for m in &c.mutations {
            match m {
                Mutation::PutNode { path, record } => {
                    s.nodes.insert(path.clone(), record.clone());
                }
                Mutation::RemoveSubtree { path } => {
                    let prefix = if path == "/" {
                        "/".to_string()
                    } else {
                        format!("{path}/")
                    };
                    s.nodes
                        .retain(|p, _| p != path && !(p.starts_with(&prefix) || path == "/"));
                }
                Mutation::PutBlob { key, value } => {
                    s.blobs.insert(key.clone(), value.clone());
                }
                Mutation::RemoveBlob { key } => {
                    s.blobs.remove(key);
                }
            }
        }
        self.states.push(s);
    }
    fn truncate(&mut self, seq: u64) {
        self.states.truncate(seq as usize + 1);
    }
}

/// Outcome of driving the workload until it ends or the device crashes.
struct Drive {
    acknowledged: u64,
    crashed: bool,
}

fn drive(
    log: &mut Log<SimDevice>,
    model: &mut Model,
    rng: &mut SimRng,
    commits: u64,
    acknowledged: &mut u64,
) -> Drive {
    for _ in 0..commits {
        let n = log.last_seq() + 1;
        let c = random_commit(rng, n);
        // Applied to the model first: an `append` that fails on a device error (while writing
        // a full batch early) leaves its commit possibly durable, like any unacknowledged one.
        model.apply(&c);
        match log.append(c.clone()) {
            Ok(seq) => assert_eq!(seq, n),
            Err(_) => {
                return Drive {
                    acknowledged: *acknowledged,
                    crashed: true,
                };
            }
        }
        let r = match rng.below(12) {
            0..=3 => log.sync().map(Some),
            4 => log.checkpoint().map(|_| None),
            5 if rng.chance(1, 4) => log.compact().map(|_| None),
            _ => Ok(None),
        };
        match r {
            Ok(Some(durable)) => {
                assert!(durable >= *acknowledged);
                assert_eq!(durable, log.last_seq());
                *acknowledged = durable;
            }
            Ok(None) => *acknowledged = log.durable_seq(),
            Err(_) => {
                return Drive {
                    acknowledged: *acknowledged,
                    crashed: true,
                };
            }
        }
    }
    match log.sync() {
        Ok(d) => {
            *acknowledged = d;
            Drive {
                acknowledged: d,
                crashed: false,
            }
        }
        Err(_) => Drive {
            acknowledged: *acknowledged,
            crashed: true,
        },
    }
}

fn check_recovered(seed: u64, log: &Log<SimDevice>, model: &Model, acknowledged: u64) -> u64 {
    let r = log.last_seq();
    let appended = model.states.len() as u64 - 1;
    assert!(
        r >= acknowledged && r <= appended,
        "seed {seed}: recovered {r}, acknowledged {acknowledged}, appended {appended}"
    );
    assert_eq!(
        log.snapshot(),
        model.states[r as usize],
        "seed {seed}: state at {r} differs from the model"
    );
    r
}

fn crash_mode(rng: &mut SimRng) -> CrashMode {
    match rng.below(5) {
        0 => CrashMode::DiscardUnflushed,
        1 => CrashMode::KeepUnflushed,
        2 => CrashMode::RandomSubset,
        3 => CrashMode::RandomSubsetTorn,
        _ => CrashMode::RandomSubsetTornFlipped,
    }
}

/// One run: a workload with a crash armed at `first_crash` operations after format, then up
/// to `crashes - 1` further random crashes, each followed by recovery and checks.
fn run(seed: u64, first_crash: Option<u64>, crashes: u32) -> u64 {
    let mut rng = SimRng::new(seed);
    let config = config_for(&mut rng);
    let device = SimDevice::new(device_sectors(), seed);
    let mut log = Log::create(device, config).unwrap();
    let mut model = Model::new();
    let mut acknowledged = 0u64;
    let mut crash_at = first_crash;
    let mut ops_total = 0;
    for round in 0..crashes {
        let base_ops = log_device_ops(&mut log);
        if let Some(k) = crash_at {
            arm(&mut log, k);
        }
        let d = drive(&mut log, &mut model, &mut rng, 60, &mut acknowledged);
        ops_total = log_device_ops(&mut log) - base_ops;
        if !d.crashed {
            // The armed crash lay beyond this round's operations (or none was armed).
            let mut device = log.into_device();
            device.disarm();
            let (reopened, rec) = Log::open(device, config).unwrap_or_else(|e| {
                panic!("seed {seed}: clean reopen failed: {e:?}");
            });
            assert!(rec.damage.is_none());
            assert_eq!(reopened.last_seq(), d.acknowledged, "seed {seed}");
            check_recovered(seed, &reopened, &model, d.acknowledged);
            return ops_total;
        }
        let mut device = log.into_device();
        let mode = crash_mode(device.rng());
        device.crash(mode);
        let (recovered, rec) = match Log::open(device, config) {
            Ok(x) => x,
            Err(e) => panic!("seed {seed} round {round} mode {mode:?}: open failed: {e:?}"),
        };
        assert!(rec.damage.is_none(), "seed {seed}");
        let r = check_recovered(seed, &recovered, &model, d.acknowledged);
        model.truncate(r);
        acknowledged = r;
        log = recovered;
        crash_at = Some(rng.below(200));
    }
    // Final: use it a bit more, then a clean reopen.
    let mut device_check = {
        let d = drive(&mut log, &mut model, &mut rng, 10, &mut acknowledged);
        assert!(!d.crashed);
        log.into_device()
    };
    device_check.disarm();
    let (reopened, _) = Log::open(device_check, config).unwrap();
    check_recovered(seed, &reopened, &model, acknowledged);
    ops_total
}

fn log_device_ops(log: &mut Log<SimDevice>) -> u64 {
    log.device().stats().operations
}

fn arm(log: &mut Log<SimDevice>, k: u64) {
    log.device_mut().arm_crash_after_operations(k);
}

#[test]
fn crash_at_every_operation() {
    let seeds = env_count("PERSIST_SWEEP_SEEDS", 6);
    let mut runs = 0u64;
    for seed in 0..seeds {
        // Count the operations of an uncrashed first round, then crash at each of them.
        let total = run(1_000_000 + seed, None, 1);
        for k in 0..=total {
            run(1_000_000 + seed, Some(k), 2);
            runs += 1;
        }
    }
    eprintln!("crash_at_every_operation: {runs} crash runs over {seeds} seeds");
}

#[test]
fn random_crash_points_with_repeated_crashes() {
    let seeds = env_count("PERSIST_RANDOM_SEEDS", 1000);
    for seed in 0..seeds {
        let mut rng = SimRng::new(seed ^ 0xabcdef);
        let k = rng.below(400);
        run(seed, Some(k), 3);
    }
    eprintln!("random_crash_points_with_repeated_crashes: {seeds} seeds");
}

#[test]
fn large_commits_and_early_batches() {
    BIG.with(|b| b.set(true));
    let seeds = env_count("PERSIST_BIG_SEEDS", 20);
    for seed in 0..seeds {
        let mut rng = SimRng::new(seed ^ 0xb16);
        let k = rng.below(20_000);
        run(seed, Some(k), 2);
    }
}

#[test]
fn bit_flip_at_rest() {
    let seeds = env_count("PERSIST_FLIP_SEEDS", 2000);
    let (mut exact, mut detected, mut last_batch) = (0, 0, 0);
    for seed in 0..seeds {
        let mut rng = SimRng::new(seed ^ 0x5eed);
        let config = Config {
            auto_maintenance: false,
            ..config_for(&mut rng)
        };
        let mut log = Log::create(SimDevice::new(DEVICE_SECTORS, seed), config).unwrap();
        let mut model = Model::new();
        let mut acknowledged = 0;
        for i in 0..40 + rng.below(40) {
            let c = random_commit(&mut rng, i + 1);
            log.append(c.clone()).unwrap();
            model.apply(&c);
            if rng.chance(1, 3) {
                acknowledged = log.sync().unwrap();
            }
            if rng.chance(1, 10) {
                log.maintenance().unwrap();
            }
        }
        let c = random_commit(&mut rng, log.last_seq() + 1);
        log.append(c.clone()).unwrap();
        model.apply(&c);
        acknowledged = log.sync().unwrap().max(acknowledged);
        let mut device = log.into_device();
        let (last_first, last_count) = device.last_write().unwrap();
        // Flip a bit somewhere in the used part of the device.
        let used_end = (device.high_water_sector() + 1) * 512;
        let offset = rng.below(used_end);
        device.flip_bit(offset, rng.below(8) as u8);
        let in_last_batch = offset >= last_first * 512 && offset < (last_first + last_count) * 512;
        let image = device.durable_image().to_vec();
        if std::env::var("PERSIST_DEBUG_SEED").ok() == Some(seed.to_string()) {
            let mut copy = SimDevice::new(DEVICE_SECTORS, 0);
            copy.write_sectors(0, &image).unwrap();
            let (sb, recs, end) = xenstore_persist::scan_records(&mut copy).unwrap();
            eprintln!("{sb:?} chain end {end} flip at {offset}");
            for r in recs {
                eprintln!("{r:?}");
            }
        }
        match Log::open(device, config) {
            Ok((log, rec)) => {
                assert!(rec.damage.is_none());
                let r = log.last_seq();
                assert_eq!(log.snapshot(), model.states[r as usize], "seed {seed}");
                if r < acknowledged {
                    assert!(
                        in_last_batch,
                        "seed {seed}: lost {r} < {acknowledged} silently; flip at {offset}, last write {last_first}+{last_count}"
                    );
                    last_batch += 1;
                } else {
                    exact += 1;
                }
            }
            Err(OpenError::Damaged(d)) if d.kind == xenstore_persist::DamageKind::Superblock => {
                // Only possible if both slots were hit; one flip cannot do that.
                panic!("seed {seed}: superblock damage from one flip: {d:?}");
            }
            Err(OpenError::Damaged(d)) => {
                detected += 1;
                let mut salvage_device = SimDevice::new(DEVICE_SECTORS, seed);
                salvage_device.write_sectors(0, &image).unwrap();
                salvage_device.flush().unwrap();
                match Log::open_salvage(salvage_device, config) {
                    Ok((log, rec)) => {
                        let r = log.last_seq();
                        assert_eq!(rec.damage.map(|x| x.last_intact_seq), Some(r));
                        if rec.lost.is_empty() {
                            assert_eq!(d.last_intact_seq, r, "seed {seed}");
                        }
                        assert_salvaged(
                            seed,
                            &log.snapshot(),
                            &model.states[r as usize],
                            &rec.lost,
                        );
                    }
                    Err(OpenError::Unrecoverable(_)) => {}
                    Err(e) => panic!("seed {seed}: salvage failed: {e:?}"),
                }
            }
            Err(e) => panic!("seed {seed}: unexpected open error {e:?}"),
        }
    }
    eprintln!(
        "bit_flip_at_rest: {seeds} seeds: {exact} exact, {detected} damage reported, \
         {last_batch} newest batch dropped"
    );
}

/// A salvaged state: exactly the model's when nothing was lost; otherwise every node and blob
/// it has is the model's (lost subtrees are missing, never altered).
fn assert_salvaged(seed: u64, got: &Snapshot, model: &Snapshot, lost: &[String]) {
    if lost.is_empty() {
        assert_eq!(got, model, "seed {seed}");
        return;
    }
    for (path, record) in &got.nodes {
        assert_eq!(model.nodes.get(path), Some(record), "seed {seed}: {path}");
    }
    for (key, value) in &got.blobs {
        assert_eq!(model.blobs.get(key), Some(value), "seed {seed}: blob {key}");
    }
}

#[test]
fn model_self_check() {
    let mut m = Model::new();
    let c = Commit {
        cause: Cause::default(),
        mutations: vec![
            Mutation::PutNode {
                path: "/a/b".into(),
                record: NodeRecord::default(),
            },
            Mutation::PutNode {
                path: "/ab".into(),
                record: NodeRecord::default(),
            },
            Mutation::RemoveSubtree { path: "/a".into() },
        ],
    };
    m.apply(&c);
    let keys: Vec<_> = m.states[1].nodes.keys().cloned().collect();
    assert_eq!(keys, ["/ab"]);
    let _: BTreeMap<String, NodeRecord> = BTreeMap::new();
}

/// Heavy corruption (many flipped bits, random sectors overwritten with garbage) must give a
/// typed result, never a panic; whatever `open` accepts must still be an exact committed
/// prefix or a reported damage.
#[test]
fn heavy_corruption_never_panics() {
    let seeds = env_count("PERSIST_GARBAGE_SEEDS", 300);
    for seed in 0..seeds {
        let mut rng = SimRng::new(seed ^ 0x9a4b);
        let config = config_for(&mut rng);
        let mut log = Log::create(SimDevice::new(DEVICE_SECTORS, seed), config).unwrap();
        let mut model = Model::new();
        for i in 0..30 + rng.below(30) {
            let c = random_commit(&mut rng, i + 1);
            log.append(c.clone()).unwrap();
            model.apply(&c);
            if rng.chance(1, 3) {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
        let mut device = log.into_device();
        let high = device.high_water_sector() + 1;
        for _ in 0..1 + rng.below(40) {
            if rng.chance(1, 4) {
                let sector = rng.below(high);
                let garbage: Vec<u8> = (0..512).map(|_| rng.next_u64() as u8).collect();
                device.write_sectors(sector, &garbage).unwrap();
            } else {
                let offset = rng.below(high * 512);
                device.flip_bit(offset, rng.below(8) as u8);
            }
        }
        device.flush().unwrap();
        let image = device.durable_image().to_vec();
        for salvage in [false, true] {
            let mut d = SimDevice::new(DEVICE_SECTORS, seed);
            d.write_sectors(0, &image).unwrap();
            d.flush().unwrap();
            let result = if salvage {
                Log::open_salvage(d, config)
            } else {
                Log::open(d, config)
            };
            if let Ok((log, rec)) = result {
                if std::env::var("PERSIST_DEBUG_SEED").ok() == Some(seed.to_string()) {
                    eprintln!("seed {seed} salvage {salvage}: {rec:?}");
                }
                let r = log.last_seq() as usize;
                assert!(
                    r < model.states.len(),
                    "seed {seed}: recovered beyond appended"
                );
                assert_salvaged(seed, &log.snapshot(), &model.states[r], &rec.lost);
            }
        }
    }
}

/// A crash while formatting: `open` afterwards gives the empty state, "not formatted", or a
/// typed superblock damage (a torn superblock write) — and `create` works again.
#[test]
fn crash_during_create() {
    for seed in 0..20u64 {
        let mut probe = SimDevice::new(DEVICE_SECTORS, seed);
        let ops = {
            let log = Log::create(&mut probe, Config::default()).unwrap();
            drop(log);
            probe.stats().operations
        };
        for k in 0..ops {
            let mut device = SimDevice::new(DEVICE_SECTORS, seed);
            device.arm_crash_after_operations(k);
            assert!(Log::create(&mut device, Config::default()).is_err());
            let mode = crash_mode(device.rng());
            device.crash(mode);
            match Log::open(&mut device, Config::default()) {
                Ok((log, rec)) => {
                    assert_eq!(rec.seq, 0);
                    assert_eq!(log.snapshot(), Snapshot::default());
                }
                Err(OpenError::NotFormatted) => {}
                Err(OpenError::Damaged(d)) => {
                    assert_eq!(d.kind, xenstore_persist::DamageKind::Superblock, "{d:?}")
                }
                Err(e) => panic!("seed {seed} op {k}: {e:?}"),
            }
            let mut log = Log::create(&mut device, Config::default()).unwrap();
            log.append(random_commit(&mut SimRng::new(seed), 1))
                .unwrap();
            assert_eq!(log.sync().unwrap(), 1);
        }
    }
}
