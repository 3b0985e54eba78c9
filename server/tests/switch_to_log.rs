//! Switching a running, volatile server onto a log (`Server::switch_to_log`), then crashing
//! it: the stub domain serves before its RAM disk exists, so the switch must capture
//! everything recovery reads back in one durable commit.
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
//!   volatile window: nothing was promised) or the complete one, never a partial state.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use common::{Shared, SimPlatform, SimServer, add_page};
use xenstore_persist::{BlockDevice, Config as LogConfig, CrashMode, DeviceError, Log, SimDevice};
use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::ring::{GuestRing, InMemoryPage};
use xenstore_protocol::{Domid, MessageType};
use xenstore_server::log_journal::LogJournal;
use xenstore_server::platform::RingLocation;
use xenstore_server::server::request_frame;
use xenstore_server::store_engine::{StoreEngine, start_crash_resilient};
use xenstore_server::switch::{SwitchableJournal, device_holds_store};
use xenstore_server::{Config, Server};

const DEVICE_SECTORS: u64 = 8 * 1024; // 4 MiB

/// A `SimDevice` the test keeps a handle on (the switch consumes its device, also on error).
#[derive(Clone)]
struct SharedDevice(Rc<RefCell<SimDevice>>);

impl SharedDevice {
    /// A fresh `DEVICE_SECTORS` device (`seed` drives its random crash modes).
    fn new(seed: u64) -> SharedDevice {
        SharedDevice(Rc::new(RefCell::new(SimDevice::new(DEVICE_SECTORS, seed))))
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
        self.0.borrow_mut().write_sectors(first_sector, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
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

    fn volatile_server(&self) -> VolatileServer {
        Server::new(
            SimPlatform::new(&self.world, &self.clock),
            StoreEngine::new(xenstore_store::Config::default()),
            SwitchableJournal::Volatile,
            Config::default(),
        )
    }

    /// Traffic in volatile mode, ending with replies queued, a partial packet, a watch and an
    /// open transaction.
    fn volatile_traffic(&mut self, server: &mut VolatileServer) -> BeforeSwitch {
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
    let before = scenario.volatile_traffic(&mut server);
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
    for _ in 0..6 {
        server.step().expect("step");
        scenario.dom0.pull();
        scenario.guest.pull();
    }
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
        scenario.volatile_traffic(&mut server);
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
            scenario.volatile_traffic(&mut server);
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

#[test]
fn crash_right_after_the_switch_delivers_queued_replies_once() {
    let mut scenario = Scenario::new();
    let mut server = scenario.volatile_server();
    let before = scenario.volatile_traffic(&mut server);
    let device = SharedDevice::new(3);
    server
        .switch_to_log(device.clone(), LogConfig::default())
        .expect("switch");
    drop(server);
    let mut sim = take_device(&device);
    sim.crash(CrashMode::RandomSubsetTorn);
    let mut server = recover(&scenario, sim);
    scenario.guest.send_bytes(&before.partial_rest);
    for _ in 0..8 {
        server.step().expect("step");
        scenario.dom0.pull();
        scenario.guest.pull();
    }
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
        let before = scenario.volatile_traffic(&mut server);
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
