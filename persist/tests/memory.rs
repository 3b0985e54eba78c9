//! Memory regression test for small (stub-domain) heaps: the read cache that recovery uses is
//! bounded by `Config::read_cache_bytes`, and the in-memory mirror's cost per node is
//! measured (a counting global allocator; one test per binary so the counts are not shared).
//!
//! `PERSIST_MEMORY_NODES=100000 cargo test --release -p xenstore-persist --test memory --
//! --nocapture` prints the numbers quoted in the crate doc.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use xenstore_persist::{Cause, Commit, Config, Log, MemDevice, Mutation, NodeRecord};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Depth-6 paths as in the bench: 1,000 directories of 100 children.
fn path(i: u64) -> String {
    let (d, rest) = (i / 10_000, i % 10_000);
    let (v, k) = (rest / 100, rest % 100);
    format!("/local/domain/{d}/device/vif{v}/k{k}")
}

#[test]
fn recovery_memory_is_bounded_by_config() {
    let nodes: u64 = std::env::var("PERSIST_MEMORY_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let config = Config::default();
    assert_eq!(config.read_cache_bytes, 1024 * 1024);
    let mut log = Log::create(MemDevice::new(256 * 1024), config).unwrap();
    for chunk in 0..nodes.div_ceil(256) {
        let mutations = (chunk * 256..((chunk + 1) * 256).min(nodes))
            .map(|i| Mutation::PutNode {
                path: path(i),
                record: NodeRecord {
                    value: format!("value-{i}").into_bytes(),
                    permissions: b"n0\0r1\0".to_vec(),
                    generation: i,
                },
            })
            .collect();
        log.append(Commit {
            cause: Cause::default(),
            mutations,
        })
        .unwrap();
    }
    log.sync().unwrap();
    // Rewrite a random-ish tenth so live objects are spread over several checkpoints.
    for i in 0..nodes / 10 {
        let n = (i * 7919) % nodes;
        log.append(Commit {
            cause: Cause::default(),
            mutations: vec![Mutation::PutNode {
                path: path(n),
                record: NodeRecord {
                    value: format!("again-{i}").into_bytes(),
                    permissions: b"n0\0r1\0".to_vec(),
                    generation: i,
                },
            }],
        })
        .unwrap();
        if i % 64 == 0 {
            log.sync().unwrap();
        }
    }
    log.checkpoint().unwrap();
    let device = log.into_device();
    let region_used = {
        // Reopen once to learn how much of the region recovery may read.
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let (log, _) = Log::open(device.clone(), config).unwrap();
        let used = log.log_bytes();
        drop(log);
        used
    };

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let (log, recovery) = Log::open(device, config).unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed);
    let mirror = after - before;
    let transient = peak - after;
    println!(
        "{nodes} nodes: mirror {mirror} bytes ({:.1} per node), open peak over mirror {transient} \
         bytes, region used {region_used} bytes, replayed {}",
        mirror as f64 / nodes as f64,
        recovery.replayed_commits
    );
    assert_eq!(log.node_count(), nodes);
    // The region holds more than the cache: an unbounded cache would grow past the bound.
    assert!(region_used > 2 * config.read_cache_bytes + 512 * 1024);
    // Transient memory: the read cache plus one record being decoded (here small). Before
    // the cache was bounded by `Config::read_cache_bytes` it grew to every chunk touched.
    let bound = config.read_cache_bytes as usize + 512 * 1024;
    assert!(
        transient <= bound,
        "open used {transient} bytes beyond the mirror (bound {bound})"
    );
}
