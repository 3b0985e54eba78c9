//! Persist benchmarks (a bench binary: `cargo bench -p xenstore-persist`).
//!
//! Prints, each next to its target: acknowledged single-key writes per second on a file on
//! tmpfs with and without group commit, recovery time of a 100k-node store with a long
//! history, bytes written per single-key write at depth 6, and log size after compaction.
//! `PERSIST_BENCH_SHORT=1` runs a reduced version for CI (same code paths, smaller numbers).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use xenstore_persist::{Cause, Commit, Config, FileDevice, Log, Mutation, NodeRecord, SimRng};

const VIFS: u64 = 10;
const KEYS: u64 = 100;

/// CPU time this thread has run, from /proc/thread-self/schedstat (ns), if available.
/// Reported next to wall time because this machine is shared: wall time includes waiting for
/// a core, CPU time does not.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu()? - start?)
}

fn tmpfs_dir() -> PathBuf {
    for d in ["/dev/shm", "/run"] {
        let p = PathBuf::from(d);
        if p.is_dir()
            && std::fs::metadata(&p)
                .map(|m| !m.permissions().readonly())
                .unwrap_or(false)
        {
            return p;
        }
    }
    std::env::temp_dir()
}

/// Depth-6 path of node `i` (0 ≤ i < 100k): /local/domain/D/device/vifV/kK.
fn path(i: u64) -> String {
    let k = i % KEYS;
    let v = (i / KEYS) % VIFS;
    let d = i / (KEYS * VIFS);
    format!("/local/domain/{d}/device/vif{v}/k{k}")
}

fn write(path: String, n: u64) -> Commit {
    Commit {
        cause: Cause {
            connection: n % 7,
            domid: (n % 100) as u16,
            request_type: 11,
            request_id: n as u32,
            path: None,
            requests_grouped: 1,
            timestamp: n,
        },
        mutations: vec![Mutation::PutNode {
            path,
            record: NodeRecord {
                value: format!("value-{n}").into_bytes(),
                permissions: b"n0\0r1\0".to_vec(),
                generation: n,
            },
        }],
    }
}

struct Bench {
    file: PathBuf,
}

impl Bench {
    fn device(&self, sectors: u64) -> FileDevice {
        let _ = std::fs::remove_file(&self.file);
        FileDevice::create(&self.file, sectors).expect("create tmpfs file")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Populate `nodes` nodes in groups of 256.
fn populate(log: &mut Log<FileDevice>, nodes: u64) {
    for i in 0..nodes {
        log.append(write(path(i), i)).unwrap();
        if i % 256 == 255 {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
}

/// Default config, with optional overrides for tuning experiments.
fn config() -> Config {
    let get = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let d = Config::default();
    Config {
        checkpoint_interval_commits: get(
            "PERSIST_CHECKPOINT_COMMITS",
            d.checkpoint_interval_commits,
        ),
        checkpoint_interval_bytes: get("PERSIST_CHECKPOINT_BYTES", d.checkpoint_interval_bytes),
        ..d
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let short = std::env::var("PERSIST_BENCH_SHORT").is_ok_and(|v| v != "0");
    let dir = tmpfs_dir();
    let bench = Bench {
        file: dir.join(format!("xs-persist-bench-{}.img", std::process::id())),
    };
    println!(
        "persist benchmarks ({} mode), device file in {}",
        if short { "short" } else { "full" },
        dir.display()
    );
    let sectors = 2 * 1024 * 1024; // 1 GiB device (two 512 MiB regions), sparse on tmpfs
    let live_nodes = if short { 10_000 } else { 100_000 };

    let mut log = Log::create(bench.device(sectors), config()).unwrap();
    populate(&mut log, live_nodes);
    let mut rng = SimRng::new(1);
    let mut n = 0;

    // 1. Group commit of 64 (also brings the log to steady state: checkpoints, compactions).
    let n_group = if short { 64_000 } else { 640_000 };
    let before = log.stats();
    let start = Instant::now();
    let cpu_start = thread_cpu();
    while n < n_group {
        let mut last = 0;
        for _ in 0..64 {
            last = log.append(write(path(rng.below(live_nodes)), n)).unwrap();
            n += 1;
        }
        assert!(log.sync().unwrap() >= last);
    }
    let t_group = start.elapsed();
    let cpu_group = cpu_since(cpu_start);
    let after = log.stats();
    let group_rate = n_group as f64 / t_group.as_secs_f64();
    let bytes_per_group = (after.bytes_written - before.bytes_written) as f64 / n_group as f64;

    // 2. Acknowledged single-key writes, no group commit (append + sync each).
    let n_single = if short { 20_000 } else { 200_000 };
    let before = log.stats();
    let start = Instant::now();
    let cpu_start = thread_cpu();
    for _ in 0..n_single {
        let seq = log.append(write(path(rng.below(live_nodes)), n)).unwrap();
        n += 1;
        assert!(log.sync().unwrap() >= seq);
    }
    let t_single = start.elapsed();
    let cpu_single = cpu_since(cpu_start);
    let after = log.stats();
    let single_rate = n_single as f64 / t_single.as_secs_f64();
    let per = |a: u64, b: u64| (a - b) as f64 / n_single as f64;
    let bytes_per_single = per(after.bytes_written, before.bytes_written);
    let record_per_single = per(after.commit_record_bytes, before.commit_record_bytes);
    let compaction_per_single = per(
        after.compaction_bytes_written,
        before.compaction_bytes_written,
    );
    let checkpoint_per_single =
        per(after.object_record_bytes, before.object_record_bytes) - compaction_per_single;

    // 3. Recovery with a long history: top up to the commit target, then reopen.
    let history_target = if short { 100_000 } else { 1_000_000 };
    let start = Instant::now();
    while log.last_seq() < history_target {
        for _ in 0..64 {
            log.append(write(path(rng.below(live_nodes)), n)).unwrap();
            n += 1;
        }
        log.sync().unwrap();
    }
    // Worst case for recovery: stop just before the next checkpoint is due, so recovery
    // replays (almost) a whole checkpoint interval of commits.
    let cfg = config();
    let interval = cfg
        .checkpoint_interval_commits
        .min(cfg.checkpoint_interval_bytes / 110);
    while log.commits_since_checkpoint() + 64 < interval {
        for _ in 0..64 {
            log.append(write(path(rng.below(live_nodes)), n)).unwrap();
            n += 1;
        }
        log.sync().unwrap();
    }
    if std::env::var("PERSIST_BENCH_NO_REPLAY").is_ok() {
        log.checkpoint().unwrap();
    }
    let t_fill = start.elapsed();
    let commits = log.last_seq();
    let nodes = log.node_count();
    let stats = log.stats();
    let log_bytes_before_reopen = log.log_bytes();
    drop(log);
    let mut recoveries = Vec::new();
    let mut recovery_cpu = Vec::new();
    let mut recovered = None;
    let reopens = std::env::var("PERSIST_BENCH_REOPENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    for _ in 0..reopens {
        let device = FileDevice::open(&bench.file).unwrap();
        let start = Instant::now();
        let cpu_start = thread_cpu();
        let (log, rec) = Log::open(device, config()).unwrap();
        recoveries.push(start.elapsed());
        if let Some(c) = cpu_since(cpu_start) {
            recovery_cpu.push(c);
        }
        assert_eq!(rec.seq, commits);
        assert_eq!(log.node_count(), nodes);
        recovered = Some((log, rec));
    }
    let (mut log, rec) = recovered.unwrap();
    let mut sorted = recoveries.clone();
    sorted.sort();
    let t_recover = sorted[sorted.len() / 2];
    let t_recover_min = sorted[0];
    recovery_cpu.sort();
    let cpu_recover = recovery_cpu.get(recovery_cpu.len() / 2).copied();

    // The reopened log holds one checkpoint interval of replayed, not yet checkpointed
    // commits: time the checkpoint that folds them in.
    let start = Instant::now();
    log.checkpoint().unwrap();
    let t_checkpoint = start.elapsed();

    // 4. Log size after compaction.
    let start = Instant::now();
    log.compact().unwrap();
    let t_compact = start.elapsed();
    let compacted = log.log_bytes();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!(
        "{:<58} {:>14}  {:<16} verdict",
        "metric", "measured", "target"
    );
    println!(
        "{:<58} {:>14.0}  {:<16} -",
        "acknowledged writes/s, append+sync each (no group)", single_rate, "(info)"
    );
    println!(
        "{:<58} {:>14.0}  {:<16} {} ({:.1}x)",
        "acknowledged writes/s, group commit of 64",
        group_rate,
        ">= 50000",
        verdict(group_rate >= 50_000.0),
        group_rate / 50_000.0
    );
    println!(
        "{:<58} {:>14.1}  {:<16} {} ({:.2}x of budget)",
        format!("recovery ms (median), {nodes} nodes, {commits} commits"),
        ms(t_recover),
        "< 200 ms",
        verdict(ms(t_recover) < 200.0),
        ms(t_recover) / 200.0
    );
    if let Some(c) = cpu_recover {
        println!(
            "{:<58} {:>14.1}  {:<16} {} ({:.2}x of budget)",
            "recovery CPU ms (median; excludes waiting for a core)",
            ms(c),
            "< 200 ms",
            verdict(ms(c) < 200.0),
            ms(c) / 200.0
        );
    }
    if let (Some(cg), Some(cs)) = (cpu_group, cpu_single) {
        let rate_group = n_group as f64 / cg.as_secs_f64();
        println!(
            "{:<58} {:>14.0}  {:<16} {} ({:.1}x)",
            "acknowledged writes per CPU-second, group commit of 64",
            rate_group,
            ">= 50000",
            verdict(rate_group >= 50_000.0),
            rate_group / 50_000.0
        );
        println!(
            "{:<58} {:>14.0}  {:<16} -",
            "acknowledged writes per CPU-second, no group",
            n_single as f64 / cs.as_secs_f64(),
            "(info)"
        );
    }
    println!(
        "{:<58} {:>14.1}  {:<16} {}",
        "recovery ms (best of runs)",
        ms(t_recover_min),
        "< 200 ms",
        verdict(ms(t_recover_min) < 200.0),
    );
    println!(
        "{:<58} {:>14.0}  {:<16} {} ({:.2}x of budget)",
        "bytes written per single-key write at depth 6 (no group)",
        bytes_per_single,
        "< 1024 B",
        verdict(bytes_per_single < 1024.0),
        bytes_per_single / 1024.0
    );
    println!(
        "{:<58} {:>14.0}  {:<16} -",
        "  commit record (header + postcard payload)", record_per_single, "(info)"
    );
    println!(
        "{:<58} {:>14.0}  {:<16} -",
        "  sector padding of the synced batch",
        512.0 - record_per_single,
        "(info)"
    );
    println!(
        "{:<58} {:>14.0}  {:<16} -",
        "  checkpoint objects, amortized (approx.)", checkpoint_per_single, "(info)"
    );
    println!(
        "{:<58} {:>14.0}  {:<16} -",
        "  compaction, amortized", compaction_per_single, "(info)"
    );
    println!(
        "{:<58} {:>14.0}  {:<16} -",
        "bytes written per write with group commit of 64", bytes_per_group, "(info)"
    );
    println!(
        "{:<58} {:>14.1}  {:<16} -",
        "log size after compaction (MiB), history 1024 commits",
        compacted as f64 / (1024.0 * 1024.0),
        "(info)"
    );
    println!();
    println!(
        "details: objects written {} (avg {:.0} B each incl. pack record headers); fill {:.1}s; recoveries (ms) {:?}; replayed {} commits from checkpoint {}; \
         log before reopen {:.1} MiB; checkpoint of {} commits {:.0} ms; compaction {:.0} ms; checkpoints {}, compactions {}",
        stats.objects_written,
        stats.object_record_bytes as f64 / stats.objects_written.max(1) as f64,
        t_fill.as_secs_f64(),
        recoveries
            .iter()
            .map(|d| (ms(*d) * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        rec.replayed_commits,
        rec.checkpoint_seq,
        log_bytes_before_reopen as f64 / (1024.0 * 1024.0),
        rec.replayed_commits,
        ms(t_checkpoint),
        ms(t_compact),
        stats.checkpoints,
        stats.compactions,
    );
}
