//! Store benchmark: 100k nodes over 1k domains (100 nodes each under /local/domain/<N>).
//! Measures reads, writes, directory listings and transactions (ops/s), and prints the heap
//! bytes per node measured with a counting allocator.
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xenstore_protocol::{Domid, Request};
use xenstore_store::{Config, ConnectionId, ConnectionKind, Introduction, Reply, Store};

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; the counter is a plain atomic and does not affect allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's (non-zero size layout from GlobalAlloc).
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `pointer` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: `pointer` came from this allocator with `layout`; forwarded unchanged.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DOMAINS: u16 = 1000;
const SOCKET: ConnectionId = ConnectionId(0);

fn expect_ok(reply: &Reply) {
    assert!(matches!(reply, Reply::Payload(_)), "{reply:?}");
}

/// Paths of the 100 nodes of one domain (relative to its home); 10 of them are children of
/// `device/vif`.
fn domain_paths() -> Vec<String> {
    let mut paths = Vec::new();
    for name in [
        "name",
        "domid",
        "vm",
        "memory/target",
        "memory/static-max",
        "cpu/0/availability",
        "control/shutdown",
        "control/platform-feature-multiprocessor-suspend",
        "data/updated",
        "console/ring-ref",
    ] {
        paths.push(String::from(name));
    }
    for device in 0..10 {
        for leaf in [
            "backend",
            "backend-id",
            "state",
            "handle",
            "mac",
            "mtu",
            "tx-ring-ref",
            "rx-ring-ref",
            "event-channel",
        ] {
            paths.push(format!("device/vif/{device}/{leaf}"));
        }
    }
    paths.truncate(100);
    paths
}

fn build() -> (Store, usize) {
    let mut store = Store::new(Config::default());
    store.add_connection(SOCKET, ConnectionKind::Socket, Domid(0));
    let paths = domain_paths();
    // Directories the toolstack creates once at start-up (shared by every domain's entries).
    for shared in ["/vm", "/libxl", "/local/domain/0/backend/vbd"] {
        expect_ok(
            &store
                .handle(SOCKET, 0, &Request::Mkdir { path: shared })
                .reply,
        );
    }
    for domid in 1..=DOMAINS {
        store.introduce_domain(Introduction {
            domid: Domid(domid),
            connection: ConnectionId(u32::from(domid)),
            gfn: 0,
            evtchn: 1,
        });
        let home = format!("/local/domain/{domid}");
        expect_ok(
            &store
                .handle(SOCKET, 0, &Request::Mkdir { path: &home })
                .reply,
        );
        let permissions =
            xenstore_protocol::Permissions::parse_wire(format!("n{domid}\0").as_bytes()).unwrap();
        expect_ok(
            &store
                .handle(
                    SOCKET,
                    0,
                    &Request::SetPerms {
                        path: &home,
                        permissions,
                    },
                )
                .reply,
        );
        for path in &paths {
            let full = format!("{home}/{path}");
            expect_ok(
                &store
                    .handle(
                        SOCKET,
                        0,
                        &Request::Write {
                            path: &full,
                            value: b"some value 12",
                        },
                    )
                    .reply,
            );
        }
    }
    let nodes = store.node_count();
    (store, nodes)
}

fn bench(criterion: &mut Criterion) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let (mut store, nodes) = build();
    let after = ALLOCATED.load(Ordering::Relaxed);
    println!(
        "store: {nodes} nodes, {} heap bytes, {:.0} bytes/node (including paths, values, perms, child sets)",
        after - before,
        (after - before) as f64 / nodes as f64
    );
    println!(
        "boot storm: {} of {STORM} concurrent transactions conflicted",
        boot_storm(&mut store, 0)
    );
    let paths = domain_paths();
    let full_paths: Vec<(u32, String)> = (0..10_000u32)
        .map(|index| {
            let domid = 1 + (index.wrapping_mul(7919) % u32::from(DOMAINS));
            let path = &paths[(index as usize * 31) % paths.len()];
            (domid, format!("/local/domain/{domid}/{path}"))
        })
        .collect();

    let mut group = criterion.benchmark_group("store-100k");
    group.throughput(Throughput::Elements(1));
    let mut index = 0;
    group.bench_function("read (privileged)", |b| {
        b.iter(|| {
            index = (index + 1) % full_paths.len();
            black_box(store.handle(
                SOCKET,
                0,
                &Request::Read {
                    path: &full_paths[index].1,
                },
            ));
        })
    });
    group.bench_function("read (guest, own node)", |b| {
        b.iter(|| {
            index = (index + 1) % full_paths.len();
            let (domid, path) = &full_paths[index];
            black_box(store.handle(ConnectionId(*domid), 0, &Request::Read { path }));
        })
    });
    group.bench_function("write (guest, existing node)", |b| {
        b.iter(|| {
            index = (index + 1) % full_paths.len();
            let (domid, path) = &full_paths[index];
            black_box(store.handle(
                ConnectionId(*domid),
                0,
                &Request::Write {
                    path,
                    value: b"new value",
                },
            ));
        })
    });
    group.bench_function("directory (10 children)", |b| {
        b.iter(|| {
            index = (index + 1) % full_paths.len();
            let domid = full_paths[index].0;
            let path = format!("/local/domain/{domid}/device/vif");
            black_box(store.handle(SOCKET, 0, &Request::Directory { path: &path }));
        })
    });
    group.bench_function("directory_part (/local/domain, 1000 children)", |b| {
        b.iter(|| {
            black_box(store.handle(
                SOCKET,
                0,
                &Request::DirectoryPart {
                    path: "/local/domain",
                    offset: 0,
                },
            ));
        })
    });
    group.bench_function("transaction (start, read, write, commit; guest)", |b| {
        b.iter(|| {
            index = (index + 1) % full_paths.len();
            let (domid, path) = &full_paths[index];
            let connection = ConnectionId(*domid);
            let outcome = store.handle(connection, 0, &Request::TransactionStart);
            let Reply::Payload(id) = outcome.reply else {
                panic!("start")
            };
            let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
                .unwrap()
                .parse()
                .unwrap();
            black_box(store.handle(connection, tx, &Request::Read { path }));
            black_box(store.handle(
                connection,
                tx,
                &Request::Write {
                    path,
                    value: b"tx value",
                },
            ));
            let end = store.handle(connection, tx, &Request::TransactionEnd { commit: true });
            assert!(end.reply.is_ok());
        })
    });
    group.bench_function(
        "transaction boot-storm step (create 4 nodes under shared dirs)",
        |b| {
            let mut counter = 0u32;
            b.iter(|| {
                counter += 1;
                let outcome = store.handle(SOCKET, 0, &Request::TransactionStart);
                let Reply::Payload(id) = outcome.reply else {
                    panic!("start")
                };
                let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
                    .unwrap()
                    .parse()
                    .unwrap();
                for path in [
                    format!("/local/domain/0/backend/vbd/{counter}/51712/state"),
                    format!("/local/domain/0/backend/vbd/{counter}/51712/params"),
                    format!("/vm/{counter}/uuid"),
                    format!("/libxl/{counter}/type"),
                ] {
                    black_box(store.handle(
                        SOCKET,
                        tx,
                        &Request::Write {
                            path: &path,
                            value: b"1",
                        },
                    ));
                }
                let end = store.handle(SOCKET, tx, &Request::TransactionEnd { commit: true });
                assert!(end.reply.is_ok());
            })
        },
    );
    group.throughput(Throughput::Elements(STORM as u64));
    let mut round = 0u32;
    group.bench_function(
        "boot storm: 100 concurrent transactions (4 creations each)",
        |b| {
            b.iter(|| {
                round += 1;
                let conflicts = boot_storm(&mut store, round);
                assert_eq!(conflicts, 0);
            })
        },
    );
    group.finish();
}

const STORM: u32 = 100;

/// `STORM` toolstack connections each open a transaction, create a new domain's nodes and
/// backend entries under shared directories, then all commit. Returns the number of
/// transactions that failed with EAGAIN (C xenstored: all but one per shared directory).
fn boot_storm(store: &mut Store, round: u32) -> u32 {
    let base = 100_000 + round * STORM;
    let mut open = Vec::new();
    for index in 0..STORM {
        let connection = ConnectionId(base + index);
        store.add_connection(connection, ConnectionKind::Socket, Domid(0));
        let outcome = store.handle(connection, 0, &Request::TransactionStart);
        let Reply::Payload(id) = outcome.reply else {
            panic!("start")
        };
        let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        let domid = base + index;
        for path in [
            format!("/local/domain/{domid}/name"),
            format!("/local/domain/0/backend/vbd/{domid}/51712/state"),
            format!("/vm/{domid}/uuid"),
            format!("/libxl/{domid}/type"),
        ] {
            expect_ok(
                &store
                    .handle(
                        connection,
                        tx,
                        &Request::Write {
                            path: &path,
                            value: b"1",
                        },
                    )
                    .reply,
            );
        }
        open.push((connection, tx));
    }
    let mut conflicts = 0;
    for (connection, tx) in open {
        match store
            .handle(connection, tx, &Request::TransactionEnd { commit: true })
            .reply
        {
            Reply::Payload(_) => {}
            Reply::Error(xenstore_protocol::Errno::EAGAIN) => conflicts += 1,
            other => panic!("{other:?}"),
        }
        store.remove_connection(connection);
    }
    conflicts
}

/// Criterion settings: `STORE_BENCH_SHORT=1` (CI) measures each case briefly.
fn criterion_config() -> Criterion {
    let short = std::env::var_os("STORE_BENCH_SHORT").is_some();
    let (measurement, warm_up) = if short { (0.5, 0.2) } else { (3.0, 1.0) };
    Criterion::default()
        .sample_size(if short { 10 } else { 30 })
        .measurement_time(std::time::Duration::from_secs_f64(measurement))
        .warm_up_time(std::time::Duration::from_secs_f64(warm_up))
}

criterion_group! {
    name = benches;
    config = criterion_config();
    targets = bench
}
criterion_main!(benches);
