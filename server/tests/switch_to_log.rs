//! Switching a running, volatile server onto a log (`Server::switch_to_log`), then crashing
//! it: the stub domain serves before its RAM disk exists, so the switch must capture
//! everything recovery reads back, durably and all or nothing — in one commit for a small
//! store, in several (each within persist's 1 MiB commit limit, the root node in the last)
//! for a large one.
//!
//! Fault model: guests' ring pages survive every crash (they are guest memory); the device
//! loses, keeps or tears what was written since its last flush (`SimDevice::crash`); a crash
//! during the switch is a device operation that fails (armed with
//! `SimDevice::arm_crash_after_operations`) followed by a power cut.
//!
//! Checked:
//! - traffic before the switch (nodes, a watch, an open transaction, replies still queued
//!   because the guest does not read, a partial packet in the ring) is all in the recovered
//!   state after a crash following the switch; the open transaction answers EAGAIN, the
//!   partial packet completes, every queued reply arrives exactly once;
//! - nothing acknowledged after the switch is lost;
//! - a crash at every device operation of the switch leaves either no store image (the
//!   volatile window: nothing was promised) or the complete one, never a partial state;
//! - a store of ~3.6 MiB encoded (plus the same watch, queued replies, partial packet and open
//!   transaction) switches in several commits and a crash afterwards recovers exactly that
//!   state; a crash at every write and flush of that switch (at the first, second, middle and
//!   last sector of each write, at and after each flush; every crash mode until the final
//!   commit is durable, one mode per point in the checkpoint after it) leaves either no store
//!   — and a fresh start on it then holds nothing of the interrupted switch — or exactly the
//!   image a completed switch writes, and a switch that failed changed nothing in the server
//!   (the same server, retried after every failure, finally writes that image).

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use common::{Shared, SimPlatform, SimServer, add_page};
use xenstore_persist::limits::COMMIT_LEN_MAX_BYTES;
use xenstore_persist::{
    BlockDevice, Config as LogConfig, CrashMode, DeviceError, Log, MemDevice, Mutation, SimDevice,
    Snapshot,
};
use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::ring::{GuestRing, InMemoryPage};
use xenstore_protocol::{Domid, MessageType};
use xenstore_server::log_journal::LogJournal;
use xenstore_server::platform::RingLocation;
use xenstore_server::server::request_frame;
use xenstore_server::store_engine::{
    Started, StoreEngine, image_mutations_of, start_crash_resilient,
};
use xenstore_server::switch::{SwitchableJournal, device_holds_store};
use xenstore_server::{Config, Server};

const DEVICE_SECTORS: u64 = 8 * 1024; // 4 MiB

/// Device of the large-store tests: 24 MiB, two 12 MiB regions, room for the switch's commits
/// and the checkpoint that follows them.
const BIG_DEVICE_SECTORS: u64 = 48 * 1024;

/// A device call, as the operation counter of `SimDevice` numbers it (each sector written is
/// one operation, a flush is one; reads are none).
#[derive(Clone, Copy, Debug)]
enum Call {
    /// `write_sectors` of `sectors` sectors, its first sector being operation `at`.
    Write { at: u64, sectors: u64 },
    /// `flush`, operation `at`.
    Flush { at: u64 },
}

/// A `SimDevice` the test keeps a handle on (the switch consumes its device, also on error),
/// recording the calls made on it.
#[derive(Clone)]
struct SharedDevice(Rc<RefCell<SimDevice>>, Rc<RefCell<Vec<Call>>>);

impl SharedDevice {
    /// A fresh `DEVICE_SECTORS` device (`seed` drives its random crash modes).
    fn new(seed: u64) -> SharedDevice {
        SharedDevice::with_sectors(DEVICE_SECTORS, seed)
    }

    /// A fresh device of `sectors` sectors.
    fn with_sectors(sectors: u64, seed: u64) -> SharedDevice {
        SharedDevice(
            Rc::new(RefCell::new(SimDevice::new(sectors, seed))),
            Rc::default(),
        )
    }

    fn operations(&self) -> u64 {
        self.0.borrow().stats().operations
    }
}

impl BlockDevice for SharedDevice {
    fn sector_count(&self) -> u64 {
        self.0.borrow().sector_count()
    }
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.0.borrow_mut().read_sectors(first_sector, buf)
    }
    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.1.borrow_mut().push(Call::Write {
            at: self.operations(),
            sectors: (buf.len() / 512) as u64,
        });
        self.0.borrow_mut().write_sectors(first_sector, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.1.borrow_mut().push(Call::Flush {
            at: self.operations(),
        });
        self.0.borrow_mut().flush()
    }
}

type VolatileServer = SimServer<SwitchableJournal<SharedDevice>>;

/// One domain's side of its ring: whole requests written in pieces, replies reassembled.
struct Peer {
    domid: u16,
    page: Arc<InMemoryPage>,
    assembler: Assembler,
    next_req_id: u32,
    /// Replies received: (req_id, type, payload).
    replies: Vec<(u32, MessageType, Vec<u8>)>,
    /// Watch events received: paths.
    events: Vec<String>,
}

impl Peer {
    fn new(world: &Shared, domid: u16) -> Peer {
        Peer {
            domid,
            page: add_page(world, domid),
            assembler: Assembler::new(),
            next_req_id: 1,
            replies: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A request frame with the next req_id.
    fn frame(&mut self, message_type: MessageType, tx_id: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let req_id = self.next_req_id;
        self.next_req_id += 1;
        (req_id, request_frame(message_type, req_id, tx_id, payload))
    }

    fn send_bytes(&self, bytes: &[u8]) {
        let ring = GuestRing::new(&*self.page);
        let transfer = ring.write_requests(bytes).expect("request ring");
        assert_eq!(transfer.bytes, bytes.len(), "request ring full");
    }

    /// Writes a frame larger than the ring in pieces, stepping the server between them.
    fn send_chunked(&self, server: &mut VolatileServer, bytes: &[u8]) {
        let mut sent = 0;
        for _ in 0..64 {
            let ring = GuestRing::new(&*self.page);
            sent += ring
                .write_requests(&bytes[sent..])
                .expect("request ring")
                .bytes;
            if sent == bytes.len() {
                return;
            }
            steps(server, 1);
        }
        panic!(
            "dom{}: the server does not consume the request ring",
            self.domid
        );
    }

    fn send(&mut self, message_type: MessageType, tx_id: u32, payload: &[u8]) -> u32 {
        let (req_id, frame) = self.frame(message_type, tx_id, payload);
        self.send_bytes(&frame);
        req_id
    }

    /// Sends a request, steps the server `count` times, reads the ring and checks that the
    /// request was answered without an error.
    fn request_ok(
        &mut self,
        server: &mut VolatileServer,
        count: usize,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
    ) {
        let req_id = self.send(message_type, tx_id, payload);
        steps(server, count);
        self.pull();
        self.assert_ok(req_id);
    }

    fn pull(&mut self) {
        let ring = GuestRing::new(&*self.page);
        let mut buffer = [0u8; 1024];
        loop {
            let count = ring.read_replies(&mut buffer).expect("reply ring").bytes;
            if count == 0 {
                return;
            }
            let mut input = &buffer[..count];
            while !input.is_empty() {
                let fed = self.assembler.feed(input).expect("reply framing");
                input = &input[fed.consumed..];
                if let Some(message) = fed.message {
                    let header = *message.header();
                    if header.message_type == MessageType::WatchEvent {
                        let path = message.payload().split(|byte| *byte == 0).next().unwrap();
                        self.events.push(String::from_utf8_lossy(path).into_owned());
                    } else {
                        self.replies.push((
                            header.req_id,
                            header.message_type,
                            message.payload().to_vec(),
                        ));
                    }
                }
            }
        }
    }

    fn reply(&self, req_id: u32) -> Option<&(u32, MessageType, Vec<u8>)> {
        self.replies.iter().find(|(id, _, _)| *id == req_id)
    }

    fn assert_ok(&self, req_id: u32) {
        let (_, message_type, payload) = self
            .reply(req_id)
            .unwrap_or_else(|| panic!("dom{}: no reply to {req_id}", self.domid));
        assert_ne!(
            *message_type,
            MessageType::Error,
            "dom{}: request {req_id}: {}",
            self.domid,
            String::from_utf8_lossy(payload)
        );
    }

    fn assert_all_ok(&self, req_ids: &[u32]) {
        for req_id in req_ids {
            self.assert_ok(*req_id);
        }
    }

    /// Asserts that a watch event arrived for a path ending in `suffix`; `what` says why one
    /// must have.
    fn assert_event(&self, suffix: &str, what: &str) {
        assert!(
            self.events.iter().any(|path| path.ends_with(suffix)),
            "{what}: {:?}",
            self.events
        );
    }

    fn assert_each_reply_once(&self) {
        let mut seen = BTreeMap::new();
        for (req_id, _, _) in &self.replies {
            *seen.entry(*req_id).or_insert(0) += 1;
        }
        for (req_id, count) in seen {
            assert_eq!(
                count, 1,
                "dom{}: reply {req_id} arrived {count} times",
                self.domid
            );
        }
    }
}

struct Scenario {
    world: Shared,
    clock: Rc<Cell<u64>>,
    dom0: Peer,
    guest: Peer,
}

fn location(domid: u16) -> RingLocation {
    RingLocation {
        domid: Domid(domid),
        gfn: 0x1000 + u64::from(domid),
        remote_port: 7,
    }
}

fn steps(server: &mut VolatileServer, count: usize) {
    for _ in 0..count {
        server.step().expect("step");
    }
}

/// What the volatile phase left behind, for the checks after recovery.
struct BeforeSwitch {
    /// dom0's reads whose replies were queued (dom0 did not read its ring) at the switch.
    queued_reads: Vec<u32>,
    /// The guest's transaction, open at the switch.
    transaction: u32,
    /// The rest of the guest's half-sent write.
    partial_rest: Vec<u8>,
    /// Its req_id.
    partial_req_id: u32,
}

impl Scenario {
    fn new() -> Scenario {
        let world = Shared::default();
        let dom0 = Peer::new(&world, 0);
        let guest = Peer::new(&world, 5);
        Scenario {
            world,
            clock: Rc::new(Cell::new(0)),
            dom0,
            guest,
        }
    }

    /// Both peers received every reply exactly once.
    fn assert_each_reply_once(&self) {
        self.dom0.assert_each_reply_once();
        self.guest.assert_each_reply_once();
    }

    /// Steps the recovered server `rounds` times, both peers reading their rings after each.
    fn settle(&mut self, server: &mut SimServer<LogJournal<SimDevice>>, rounds: usize) {
        for _ in 0..rounds {
            server.step().expect("step");
            self.dom0.pull();
            self.guest.pull();
        }
    }

    fn volatile_server(&self) -> VolatileServer {
        Server::new(
            SimPlatform::new(&self.world, &self.clock),
            StoreEngine::new(xenstore_store::Config::default()),
            SwitchableJournal::Volatile,
            Config::default(),
        )
    }

    /// Traffic in volatile mode, ending with replies queued, a partial packet, a watch and an
    /// open transaction; with `bulk`, dom0 first writes that many nodes.
    fn volatile_traffic(&mut self, server: &mut VolatileServer, bulk: Bulk) -> BeforeSwitch {
        server.introduce_domain(location(0)).expect("dom0");
        let home = "/local/domain/5";
        let mut acked = Vec::new();
        acked.push(self.dom0.send(MessageType::Write, 0, b"/a\0one"));
        acked.push(self.dom0.send(
            MessageType::Introduce,
            0,
            format!("5\0{}\07\0", 0x1005).as_bytes(),
        ));
        acked.push(
            self.dom0
                .send(MessageType::Write, 0, format!("{home}\0").as_bytes()),
        );
        acked.push(
            self.dom0
                .send(MessageType::SetPerms, 0, format!("{home}\0n5\0").as_bytes()),
        );
        steps(server, 4);
        acked.push(self.dom0.send(
            MessageType::Write,
            0,
            &[b"/big\0".as_slice(), &[b'v'; 900]].concat(),
        ));
        steps(server, 2);
        self.dom0.pull();
        self.dom0.assert_all_ok(&acked);
        self.bulk_writes(server, bulk);
        // The guest: a watch, a write, an open transaction with a write in it.
        let watch = self
            .guest
            .send(MessageType::Watch, 0, format!("{home}/w\0tok\0").as_bytes());
        let write = self.guest.send(
            MessageType::Write,
            0,
            format!("{home}/w/before\0b").as_bytes(),
        );
        let start = self.guest.send(MessageType::TransactionStart, 0, b"\0");
        steps(server, 3);
        self.guest.pull();
        self.guest.assert_all_ok(&[watch, write, start]);
        let transaction: u32 = String::from_utf8_lossy(&self.guest.reply(start).unwrap().2)
            .trim_end_matches('\0')
            .parse()
            .expect("transaction id");
        self.guest.request_ok(
            server,
            2,
            MessageType::Write,
            transaction,
            format!("{home}/w/in-tx\0t").as_bytes(),
        );
        // dom0 stops reading: two 900-byte reads fill its reply ring, the rest queue.
        let queued_reads: Vec<u32> = (0..3)
            .map(|_| self.dom0.send(MessageType::Read, 0, b"/big\0"))
            .collect();
        steps(server, 3);
        // The guest sends half a write.
        let (partial_req_id, frame) = self.guest.frame(
            MessageType::Write,
            0,
            format!("{home}/w/straddling\0s").as_bytes(),
        );
        let half = frame.len() / 2;
        self.guest.send_bytes(&frame[..half]);
        steps(server, 2);
        let queued = server
            .connections()
            .iter()
            .map(|connection| connection.output.pending_bytes())
            .sum::<usize>();
        assert!(queued > 0, "some output must be queued at the switch");
        BeforeSwitch {
            queued_reads,
            transaction,
            partial_rest: frame[half..].to_vec(),
            partial_req_id,
        }
    }
}

/// Nodes dom0 writes before the rest of the volatile traffic (the size of the store).
#[derive(Clone, Copy, Debug)]
struct Bulk {
    nodes: usize,
    value_bytes: usize,
}

impl Bulk {
    /// No extra nodes: the store fits one commit.
    const NONE: Bulk = Bulk {
        nodes: 0,
        value_bytes: 0,
    };
    /// 1200 nodes of 3000 bytes in directories of 64: ~3.6 MiB of values, several commits.
    const LARGE: Bulk = Bulk {
        nodes: 1200,
        value_bytes: 3000,
    };
}

impl Scenario {
    /// dom0 writes `bulk.nodes` distinct values (each request larger than the ring).
    fn bulk_writes(&mut self, server: &mut VolatileServer, bulk: Bulk) {
        for index in 0..bulk.nodes {
            let mut payload = format!("/bulk/{}/{index}\0{index:08}", index / 64).into_bytes();
            payload.resize(
                payload.len() + bulk.value_bytes - 8,
                b'a' + (index % 26) as u8,
            );
            let (req_id, frame) = self.dom0.frame(MessageType::Write, 0, &payload);
            self.dom0.send_chunked(server, &frame);
            steps(server, 1);
            self.dom0.pull();
            self.dom0.assert_ok(req_id);
        }
    }
}

/// Encoded bytes of the store's image as the switch writes it (connections excluded).
fn image_bytes(server: &VolatileServer) -> usize {
    image_mutations_of(&server.engine().store)
        .iter()
        .map(Mutation::encoded_len)
        .sum()
}

/// Asserts that `recovered` holds everything of `expected` that is persisted: nodes with
/// values, permissions and generations, the generation counter, domains, quotas, log
/// settings, and each ring connection's watches; transactions open before are aborted.
fn assert_same_store(
    recovered: &xenstore_store::StoreImage,
    expected: &xenstore_store::StoreImage,
    what: &str,
) {
    let strip = |image: &xenstore_store::StoreImage| -> Vec<(String, Vec<u8>, String, u64)> {
        image
            .nodes
            .iter()
            .map(|(path, record)| {
                (
                    path.clone(),
                    record.value.clone(),
                    format!("{}", record.permissions),
                    record.generation,
                )
            })
            .collect()
    };
    let (recovered_nodes, expected_nodes) = (strip(recovered), strip(expected));
    assert_eq!(
        recovered_nodes.len(),
        expected_nodes.len(),
        "{what}: node count"
    );
    for (got, want) in recovered_nodes.iter().zip(&expected_nodes) {
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(recovered.generation, expected.generation, "{what}");
    assert_eq!(recovered.domains, expected.domains, "{what}");
    assert_eq!(recovered.global_quotas, expected.global_quotas, "{what}");
    assert_eq!(recovered.log, expected.log, "{what}");
    assert_eq!(
        recovered.connections.keys().collect::<Vec<_>>(),
        expected.connections.keys().collect::<Vec<_>>(),
        "{what}: connections"
    );
    for (id, want) in &expected.connections {
        let got = &recovered.connections[id];
        assert_eq!(got.domid, want.domid, "{what}: {id:?}");
        assert_eq!(got.watches, want.watches, "{what}: {id:?}");
        assert_eq!(
            got.aborted_up_to, want.highest_transaction_id,
            "{what}: {id:?}"
        );
    }
}

/// Recovers from the device as the platform would after a crash.
fn recover(scenario: &Scenario, device: SimDevice) -> SimServer<LogJournal<SimDevice>> {
    let (log, _) = Log::open(device, LogConfig::default()).expect("log opens");
    let (server, _) = start_crash_resilient(
        SimPlatform::new(&scenario.world, &scenario.clock),
        Config::default(),
        xenstore_store::Config::default(),
        log,
        |engine| engine,
    )
    .expect("recovery");
    server
}

fn take_device(device: &SharedDevice) -> SimDevice {
    std::mem::replace(&mut *device.0.borrow_mut(), SimDevice::new(8, 0))
}

#[test]
fn switch_mid_stream_then_crash_keeps_everything() {
    let mut scenario = Scenario::new();
    let mut server = scenario.volatile_server();
    let before = scenario.volatile_traffic(&mut server, Bulk::NONE);
    assert_eq!(server.connections().len(), 2);

    let device = SharedDevice::new(1);
    assert!(!device_holds_store(
        &mut device.clone(),
        LogConfig::default()
    ));
    let report = server
        .switch_to_log(device.clone(), LogConfig::default())
        .expect("switch");
    assert_eq!(report.connections, 2);
    assert_eq!(report.commits, 1, "a small store is one commit: {report:?}");
    assert_eq!(report.first_seq, report.last_seq);
    assert!(device_holds_store(
        &mut device.clone(),
        LogConfig::default()
    ));
    assert!(server.journal().is_logged());
    assert!(
        server
            .switch_to_log(device.clone(), LogConfig::default())
            .is_err(),
        "a second switch is refused"
    );

    // After the switch: the partial packet completes (under the watch), a new write.
    let home = "/local/domain/5";
    scenario.guest.send_bytes(&before.partial_rest);
    let after = scenario.dom0.send(MessageType::Write, 0, b"/after\0two");
    steps(&mut server, 3);
    scenario.guest.pull();
    scenario.guest.assert_ok(before.partial_req_id);
    // dom0 reads its queue: replies queued before the switch, then the new one.
    for _ in 0..6 {
        scenario.dom0.pull();
        steps(&mut server, 1);
    }
    scenario.dom0.pull();
    scenario.dom0.assert_ok(after);
    scenario.guest.request_ok(
        &mut server,
        2,
        MessageType::Write,
        0,
        format!("{home}/w/second\0x").as_bytes(),
    );

    // Crash: everything acknowledged was synced; unflushed writes (none expected) are lost.
    drop(server);
    let mut sim = take_device(&device);
    sim.crash(CrashMode::DiscardUnflushed);
    let mut server = recover(&scenario, sim);
    let store = &server.engine().store;
    for (path, value) in [
        ("/a", &b"one"[..]),
        ("/after", b"two"),
        ("/local/domain/5/w/before", b"b"),
        ("/local/domain/5/w/straddling", b"s"),
        ("/local/domain/5/w/second", b"x"),
    ] {
        assert_eq!(
            store.node(path).map(|record| record.value.as_slice()),
            Some(value),
            "{path}"
        );
    }
    assert!(store.node("/local/domain/5/w/in-tx").is_none());
    let watches: Vec<String> = store
        .connections()
        .flat_map(|(_, connection)| {
            connection
                .record
                .watches
                .iter()
                .map(|watch| watch.path.clone())
        })
        .collect();
    assert!(watches.contains(&format!("{home}/w")), "{watches:?}");
    assert_eq!(server.connections().len(), 2, "both rings re-attached");

    // The transaction open at the switch is gone; the guest and dom0 keep being served.
    let tx_use = scenario.guest.send(
        MessageType::Write,
        before.transaction,
        format!("{home}/w/in-tx\0late").as_bytes(),
    );
    let third = scenario.guest.send(
        MessageType::Write,
        0,
        format!("{home}/w/third\0y").as_bytes(),
    );
    scenario.settle(&mut server, 6);
    let (_, message_type, payload) = scenario.guest.reply(tx_use).expect("tx reply");
    assert_eq!(*message_type, MessageType::Error);
    assert_eq!(payload.as_slice(), b"EAGAIN\0");
    scenario.guest.assert_ok(third);
    scenario.dom0.assert_all_ok(&before.queued_reads);
    scenario.assert_each_reply_once();
    scenario.guest.assert_event("/w/third", "watch survives");
}

#[test]
fn crash_at_every_device_operation_of_the_switch() {
    // How many device operations a switch takes.
    let operations = {
        let mut scenario = Scenario::new();
        let mut server = scenario.volatile_server();
        scenario.volatile_traffic(&mut server, Bulk::NONE);
        let device = SharedDevice::new(2);
        server
            .switch_to_log(device.clone(), LogConfig::default())
            .expect("switch");
        device.0.borrow().stats().operations
    };
    assert!(operations > 2);
    for crash_at in 0..=operations {
        for mode in [
            CrashMode::DiscardUnflushed,
            CrashMode::KeepUnflushed,
            CrashMode::RandomSubset,
            CrashMode::RandomSubsetTorn,
        ] {
            let mut scenario = Scenario::new();
            let mut server = scenario.volatile_server();
            scenario.volatile_traffic(&mut server, Bulk::NONE);
            let expected = server.engine().store.export();
            let device = SharedDevice::new(crash_at);
            device.0.borrow_mut().arm_crash_after_operations(crash_at);
            let switched = server
                .switch_to_log(device.clone(), LogConfig::default())
                .is_ok();
            if !switched {
                assert!(
                    !server.journal().is_logged(),
                    "a failed switch stays volatile"
                );
            }
            drop(server);
            let mut sim = take_device(&device);
            sim.disarm();
            sim.crash(mode);
            let log = match Log::open(sim, LogConfig::default()) {
                Ok((log, _)) => log,
                Err(_) => {
                    assert!(
                        !switched,
                        "op {crash_at} {mode:?}: a completed switch must open"
                    );
                    continue;
                }
            };
            if !StoreEngine::log_has_image(&log) {
                assert!(
                    !switched,
                    "op {crash_at} {mode:?}: a completed switch lost its image"
                );
                continue;
            }
            let device = log.into_device();
            let server = recover(&scenario, device);
            let recovered = server.engine().store.export();
            let strip = |image: &xenstore_store::StoreImage| -> Vec<(String, Vec<u8>)> {
                image
                    .nodes
                    .iter()
                    .map(|(path, record)| (path.clone(), record.value.clone()))
                    .collect()
            };
            assert_eq!(
                strip(&recovered),
                strip(&expected),
                "op {crash_at} {mode:?}"
            );
            assert_eq!(recovered.domains.len(), expected.domains.len());
            assert_eq!(server.connections().len(), 2, "op {crash_at} {mode:?}");
        }
    }
}

/// Starts a crash-resilient server on `log`, which must hold no store, and returns what the
/// log holds afterwards. The platform is a world of its own: a fresh start maps no ring.
fn fresh_start<D: BlockDevice>(log: Log<D>, what: &str) -> Snapshot {
    let (server, started) = start_crash_resilient(
        SimPlatform::new(&Shared::default(), &Rc::new(Cell::new(0))),
        Config::default(),
        xenstore_store::Config::default(),
        log,
        |engine| engine,
    )
    .expect(what);
    assert_eq!(started, Started::Fresh, "{what}");
    server.journal().log().snapshot()
}

/// Counts of a snapshot, for messages (a snapshot of a large store is too big to print).
fn summary(snapshot: &Snapshot) -> String {
    format!(
        "{} nodes, {} blobs",
        snapshot.nodes.len(),
        snapshot.blobs.len()
    )
}

#[test]
fn large_store_switches_in_several_commits_and_recovers_exactly() {
    let mut scenario = Scenario::new();
    let mut server = scenario.volatile_server();
    let before = scenario.volatile_traffic(&mut server, Bulk::LARGE);
    let image = image_bytes(&server);
    assert!(image > 3 * 1024 * 1024, "image of {image} bytes");
    let expected = server.engine().store.export();

    let device = SharedDevice::with_sectors(BIG_DEVICE_SECTORS, 6);
    let report = server
        .switch_to_log(device.clone(), LogConfig::default())
        .expect("a store above the commit limit switches");
    assert!(
        report.commits as usize > image / COMMIT_LEN_MAX_BYTES,
        "{report:?}"
    );
    assert_eq!(report.last_seq - report.first_seq + 1, report.commits);
    assert_eq!(report.connections, 2);
    assert!(report.bytes as usize > image, "{report:?}");
    assert!(server.journal().is_logged());
    assert_eq!(
        server.journal().log().map(Log::durable_seq),
        Some(report.last_seq)
    );

    // On the device: every commit within the limit; the root node, both connection blobs
    // and the server blob in the final commit and in no other.
    let (mut log, _) =
        Log::open_read_only(device.clone(), LogConfig::default(), false).expect("the log opens");
    let commits = log
        .commits(report.first_seq, report.last_seq)
        .expect("the switch's commits");
    assert_eq!(commits.len() as u64, report.commits);
    let mut bytes = 0;
    for (index, entry) in commits.iter().enumerate() {
        let len = entry.commit.encoded_len();
        bytes += len as u64;
        assert!(
            len <= COMMIT_LEN_MAX_BYTES,
            "commit {}: {len} bytes",
            entry.seq
        );
        let mut final_items: Vec<&str> = entry
            .commit
            .mutations
            .iter()
            .filter_map(|mutation| match mutation {
                Mutation::PutNode { path, .. } if path == "/" => Some(path.as_str()),
                Mutation::PutBlob { key, .. } if key == "server" || key.starts_with("conn/") => {
                    Some(key.as_str())
                }
                _ => None,
            })
            .collect();
        final_items.sort_unstable();
        if index + 1 == commits.len() {
            assert_eq!(final_items, ["/", "conn/1", "conn/2", "server"]);
        } else {
            assert!(
                final_items.is_empty(),
                "commit {}: {final_items:?}",
                entry.seq
            );
        }
    }
    assert_eq!(bytes, report.bytes);
    drop(log);

    // Crash right after the switch: everything comes back, then traffic goes on.
    drop(server);
    let mut sim = take_device(&device);
    sim.crash(CrashMode::RandomSubsetTorn);
    let mut server = recover(&scenario, sim);
    assert_same_store(
        &server.engine().store.export(),
        &expected,
        "recovered after the switch",
    );
    assert_eq!(server.connections().len(), 2, "both rings re-attached");
    let home = "/local/domain/5";
    scenario.guest.send_bytes(&before.partial_rest);
    let tx_use = scenario.guest.send(
        MessageType::Write,
        before.transaction,
        format!("{home}/w/in-tx\0late").as_bytes(),
    );
    scenario.settle(&mut server, 8);
    scenario.dom0.assert_all_ok(&before.queued_reads);
    scenario.guest.assert_ok(before.partial_req_id);
    let (_, message_type, payload) = scenario.guest.reply(tx_use).expect("tx reply");
    assert_eq!(*message_type, MessageType::Error);
    assert_eq!(payload.as_slice(), b"EAGAIN\0");
    scenario.assert_each_reply_once();
    scenario.guest.assert_event(
        "/w/straddling",
        "the watch fires for the write completed after recovery",
    );
}

/// What a switch interrupted by a crash left on its device.
enum Outcome {
    /// The device does not even open as a log (not formatted yet, or its superblock lost).
    Unformatted,
    /// A log without a store (`device_holds_store` false): `had_leftovers` when commits before
    /// the final one were durable; `after_fresh_start` is what `start_crash_resilient` then
    /// leaves on it.
    Blank {
        had_leftovers: bool,
        after_fresh_start: Snapshot,
    },
    /// A store (`device_holds_store` true): everything the log holds.
    Complete(Snapshot),
}

/// Switches `server` onto a fresh large device that fails at operation `crash_at`, then cuts
/// the power (`mode`) and looks at what is on the device. The switch must fail and leave the
/// server volatile.
fn crash_switch(
    server: &mut VolatileServer,
    crash_at: u64,
    mode: CrashMode,
    what: &str,
) -> Outcome {
    let config = LogConfig::default();
    let device = SharedDevice::with_sectors(BIG_DEVICE_SECTORS, crash_at);
    device.0.borrow_mut().arm_crash_after_operations(crash_at);
    let result = server.switch_to_log(device.clone(), config);
    assert!(result.is_err(), "{what}: the switch must fail");
    assert!(!server.journal().is_logged(), "{what}: still volatile");
    let mut sim = take_device(&device);
    assert!(sim.has_crashed(), "{what}");
    sim.disarm();
    sim.crash(mode);
    if device_holds_store(&mut sim, config) {
        let (log, _) = Log::open(sim, config).expect(what);
        return Outcome::Complete(log.snapshot());
    }
    let Ok((log, _)) = Log::open(sim, config) else {
        return Outcome::Unformatted;
    };
    let held = log.snapshot();
    let had_leftovers =
        !held.nodes.is_empty() || !held.blobs.is_empty() || log.children("/") != Some(vec![]);
    Outcome::Blank {
        had_leftovers,
        after_fresh_start: fresh_start(log, what),
    }
}

#[test]
fn crash_at_every_write_of_a_multi_commit_switch() {
    let config = LogConfig::default();
    // The reference: a completed switch of the large store, what it left on the device, and
    // the device calls it made.
    let (reference, calls, operations) = {
        let mut scenario = Scenario::new();
        let mut server = scenario.volatile_server();
        scenario.volatile_traffic(&mut server, Bulk::LARGE);
        let device = SharedDevice::with_sectors(BIG_DEVICE_SECTORS, 7);
        let report = server
            .switch_to_log(device.clone(), config)
            .expect("switch");
        assert!(report.commits > 3, "{report:?}");
        drop(server);
        let operations = device.operations();
        let calls = device.1.borrow().clone();
        let (log, _) = Log::open(take_device(&device), config).expect("the log opens");
        (log.snapshot(), calls, operations)
    };
    // Crash points: the first, second, middle and last sector of every write, every flush and
    // the operation after it.
    let mut points = std::collections::BTreeSet::new();
    for call in &calls {
        match *call {
            Call::Write { at, sectors } => {
                points.extend([at, at + 1, at + sectors / 2, at + sectors.saturating_sub(1)]);
            }
            Call::Flush { at } => {
                points.extend([at, at + 1]);
            }
        }
    }
    points.retain(|point| *point < operations);
    assert!(points.len() > 20, "{} crash points", points.len());

    // One server with the same traffic, switched at every point in turn: each switch fails
    // (the crash fires within it) and must leave the server as it was.
    let mut scenario = Scenario::new();
    let mut server = scenario.volatile_server();
    scenario.volatile_traffic(&mut server, Bulk::LARGE);
    // What a fresh start writes on a blank device.
    let fresh = fresh_start(
        Log::create(MemDevice::new(DEVICE_SECTORS), config).expect("log"),
        "fresh start",
    );
    let modes = [
        CrashMode::DiscardUnflushed,
        CrashMode::KeepUnflushed,
        CrashMode::RandomSubset,
        CrashMode::RandomSubsetTorn,
    ];
    let (mut blank, mut unformatted, mut leftovers, mut complete) = (0, 0, 0, 0);
    // Every mode at every point until even a crash that discards all unflushed writes finds
    // the complete image: from there on the final commit is durable and the switch is in the
    // log's own checkpoint (persist's crash tests cover that), so one mode per point, in turn.
    let mut final_commit_durable = false;
    for (index, crash_at) in points.iter().enumerate() {
        let runs = if final_commit_durable {
            &modes[index % modes.len()..][..1]
        } else {
            &modes[..]
        };
        for &mode in runs {
            let what = format!("crash at operation {crash_at} of {operations}, {mode:?}");
            match crash_switch(&mut server, *crash_at, mode, &what) {
                Outcome::Complete(snapshot) => {
                    complete += 1;
                    final_commit_durable |= mode == CrashMode::DiscardUnflushed;
                    assert!(
                        snapshot == reference,
                        "{what}: an image other than the switch's: {} instead of {}",
                        summary(&snapshot),
                        summary(&reference)
                    );
                }
                Outcome::Unformatted => {
                    blank += 1;
                    unformatted += 1;
                }
                Outcome::Blank {
                    had_leftovers,
                    after_fresh_start,
                } => {
                    blank += 1;
                    leftovers += usize::from(had_leftovers);
                    assert!(
                        after_fresh_start == fresh,
                        "{what}: a fresh start kept leftovers: {} instead of {}",
                        summary(&after_fresh_start),
                        summary(&fresh)
                    );
                }
            }
        }
    }
    // Every outcome was reached: a blank device, a part of the commits durable without the
    // root (the case the root-last order exists for), and the complete image.
    assert!(
        unformatted > 0 && leftovers > 0 && complete > 0,
        "blank {blank} (unformatted {unformatted}, with leftovers {leftovers}), complete \
         {complete}"
    );
    // After all those failures the server switches and writes exactly the reference image.
    let device = SharedDevice::with_sectors(BIG_DEVICE_SECTORS, 8);
    server
        .switch_to_log(device.clone(), config)
        .expect("the switch succeeds after the failed ones");
    drop(server);
    let (log, _) = Log::open(take_device(&device), config).expect("the log opens");
    assert!(
        log.snapshot() == reference,
        "{} instead of {}",
        summary(&log.snapshot()),
        summary(&reference)
    );
}

#[test]
fn crash_right_after_the_switch_delivers_queued_replies_once() {
    let mut scenario = Scenario::new();
    let mut server = scenario.volatile_server();
    let before = scenario.volatile_traffic(&mut server, Bulk::NONE);
    let device = SharedDevice::new(3);
    server
        .switch_to_log(device.clone(), LogConfig::default())
        .expect("switch");
    drop(server);
    let mut sim = take_device(&device);
    sim.crash(CrashMode::RandomSubsetTorn);
    let mut server = recover(&scenario, sim);
    scenario.guest.send_bytes(&before.partial_rest);
    scenario.settle(&mut server, 8);
    scenario.dom0.assert_all_ok(&before.queued_reads);
    scenario.guest.assert_ok(before.partial_req_id);
    scenario.assert_each_reply_once();
    scenario.guest.assert_event(
        "/w/straddling",
        "the watch fires for the write completed after recovery",
    );
}

/// `inject-crash` through XS_CONTROL: the arming request is answered normally, the crash
/// hits the next request at the chosen point, and recovery keeps every reply exactly once
/// and every acknowledged write.
#[test]
fn injected_crash_at_every_point_recovers_cleanly() {
    use xenstore_server::ServerError;
    use xenstore_server::inject::CrashPoint;
    for (name, point) in [
        ("before-append", CrashPoint::BeforeAppend),
        ("after-append", CrashPoint::AfterAppend),
        ("after-sync", CrashPoint::AfterSync),
        ("after-reply", CrashPoint::AfterReply),
    ] {
        let mut scenario = Scenario::new();
        let mut server = scenario.volatile_server();
        let before = scenario.volatile_traffic(&mut server, Bulk::NONE);
        scenario.guest.send_bytes(&before.partial_rest);
        let device = SharedDevice::new(4);
        server
            .switch_to_log(device.clone(), LogConfig::default())
            .expect("switch");
        // Let dom0 drain what it had queued.
        for _ in 0..6 {
            scenario.dom0.pull();
            steps(&mut server, 1);
        }
        scenario.dom0.pull();
        // An unprivileged caller cannot arm.
        let refused = scenario
            .guest
            .send(MessageType::Control, 0, b"inject-crash\x001\0");
        steps(&mut server, 1);
        scenario.guest.pull();
        assert_eq!(scenario.guest.reply(refused).unwrap().1, MessageType::Error);
        assert!(server.armed_crash().is_none());
        scenario.dom0.request_ok(
            &mut server,
            1,
            MessageType::Control,
            0,
            format!("inject-crash\x001\0{name}\0").as_bytes(),
        );
        assert!(server.armed_crash().is_some(), "{name}");
        let write = scenario
            .dom0
            .send(MessageType::Write, 0, b"/crash/target\0v");
        match server.step() {
            Err(ServerError::InjectedCrash(hit)) => assert_eq!(hit, point),
            other => panic!("{name}: expected the injected crash, got {other:?}"),
        }
        drop(server);
        let mut sim = take_device(&device);
        sim.crash(CrashMode::RandomSubsetTorn);
        let mut server = recover(&scenario, sim);
        assert!(server.armed_crash().is_none(), "arming is not persisted");
        for _ in 0..4 {
            server.step().expect("step");
            scenario.dom0.pull();
        }
        scenario.dom0.assert_ok(write);
        scenario.dom0.assert_each_reply_once();
        assert_eq!(
            server
                .engine()
                .store
                .node("/crash/target")
                .map(|record| record.value.clone()),
            Some(b"v".to_vec()),
            "{name}"
        );
    }
}

#[test]
fn mode_none_never_switches() {
    let scenario = Scenario::new();
    let mut server: VolatileServer = Server::new(
        SimPlatform::new(&scenario.world, &scenario.clock),
        StoreEngine::new(xenstore_store::Config::default()),
        SwitchableJournal::Disabled,
        Config::default(),
    );
    let device = SharedDevice::new(5);
    assert!(matches!(
        server.switch_to_log(device.clone(), LogConfig::default()),
        Err(xenstore_server::switch::SwitchError::PersistenceNone)
    ));
    assert_eq!(
        device.0.borrow().stats().operations,
        0,
        "the device is untouched"
    );
}
