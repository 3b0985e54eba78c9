//! Seeded deterministic simulation of the whole server (TigerBeetle VOPR style): several
//! simulated domains on in-memory rings (`InMemoryPage`) and dom0 socket clients drive the
//! real store through `Server::step` in mode crash-resilient on a fault-injecting block device
//! (`SimDevice`), and the server is crashed at random steps.
//!
//! Fault model: a crash either (a) drops the server between two steps, (b) arms the device
//! to fail a few operations into the next step (so the step dies in the middle of its appends
//! or its sync, before anything is transmitted), or (c) kills the step right after its sync
//! returned, before it published ring indices, replies and notifications. Either way the device then loses, keeps or
//! tears (random subset, torn sectors) what was written since the last flush; guests' ring
//! pages survive (they are guest memory); socket clients die with the process.
//!
//! Checked after every recovery and at the end:
//! - every acknowledged write (and remove) is in the recovered store;
//! - every reply arrives exactly once (guests keep one request in flight; any reply whose
//!   req_id is not the one in flight is a violation);
//! - every acknowledged write under a watched path yields its watch event at least once;
//! - a transaction open at a crash answers EAGAIN on its next use;
//! - requests are written into the ring in random pieces, so crashes fall in the middle of
//!   packets: they must complete after the restart (their replies arrive).
//!
//! `seeded_switch_simulation` runs the same workload on a server that starts without a log
//! and is switched onto the device at a random step (`Server::switch_to_log`), then crashes.
//!
//! Reproduce: the seed is printed on failure; `XS_SIM_SEEDS=N` runs N seeds (default 8),
//! `XS_SIM_SEED=0x…` replays one, `XS_SIM_STEPS` sets the steps per seed.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use common::{Shared, SimPlatform, SimServer, TestJournal, add_page};
use xenstore_persist::{Config as LogConfig, CrashMode, Log, SimDevice, SimRng};
use xenstore_protocol::MessageType;
use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::ring::{GuestRing, InMemoryPage};
use xenstore_server::log_journal::LogJournal;
use xenstore_server::server::request_frame;
use xenstore_server::store_engine::{StoreChanges, StoreEngine, start_crash_resilient};
use xenstore_server::switch::SwitchableJournal;
use xenstore_server::{Config, ConnectionId, Journal, Server};

const DEVICE_SECTORS: u64 = 16 * 1024; // 8 MiB

/// The log journal with one extra fault, `TestJournal::die_after_next_sync`: the process dies
/// right after a sync returned (the commit is durable, nothing of the step was published).
type CrashingJournal = TestJournal<LogJournal<SimDevice>>;

/// The server of the crash phase (the volatile phase of `seeded_switch_simulation` runs on a
/// `SwitchableJournal`).
type CrashServer = SimServer<CrashingJournal>;

// ----------------------------------------------------------------------------- clients

/// What a request in flight expects.
#[derive(Clone, Debug)]
enum Expect {
    Write { path: String, value: Vec<u8> },
    Remove { path: String },
    Read { path: String },
    Watch,
    TxStart,
    TxWrite { path: String, value: Vec<u8> },
    TxEnd,
    Plain,
}

#[derive(Clone, Debug)]
struct InFlight {
    req_id: u32,
    expect: Expect,
    /// A crash happened after the request was (partly) sent.
    crashed_since_sent: bool,
    /// Transaction requests: the transaction was already aborted by a crash when this was sent.
    aborted_at_send: bool,
}

#[derive(Clone, Debug, Default)]
struct Transaction {
    id: u32,
    writes: Vec<(String, Vec<u8>)>,
    /// A crash happened after the TRANSACTION_START reply arrived: the transaction is gone.
    crashed_since_reply: bool,
    /// A crash happened while TRANSACTION_START was in flight: either outcome is fine.
    maybe_aborted: bool,
}

struct Guest {
    domid: u16,
    page: Arc<InMemoryPage>,
    unsent: Vec<u8>,
    assembler: Assembler,
    in_flight: Option<InFlight>,
    next_req_id: u32,
    model: BTreeMap<String, Vec<u8>>,
    watching: bool,
    expected_events: BTreeSet<String>,
    transaction: Option<Transaction>,
    replies: u64,
    events: u64,
}

impl Guest {
    /// Domain `domid`, its ring page added to the world, nothing sent yet.
    fn new(world: &Shared, domid: u16) -> Guest {
        Guest {
            domid,
            page: add_page(world, domid),
            unsent: Vec::new(),
            assembler: Assembler::new(),
            in_flight: None,
            next_req_id: 1,
            model: BTreeMap::new(),
            watching: false,
            expected_events: BTreeSet::new(),
            transaction: None,
            replies: 0,
            events: 0,
        }
    }

    fn home(&self) -> String {
        format!("/local/domain/{}", self.domid)
    }
}

struct Violations {
    seed: u64,
    list: Vec<String>,
}

impl Violations {
    fn push(&mut self, text: String) {
        if self.list.len() < 50 {
            self.list.push(text);
        }
    }
}

fn value_of(rng: &mut SimRng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => 0,
        1 => rng.below(16) as usize,
        _ => rng.below(1700) as usize,
    };
    let byte = b'a' + rng.below(26) as u8;
    vec![byte; len]
}

fn error_name(payload: &[u8]) -> Option<String> {
    Some(
        String::from_utf8_lossy(payload)
            .trim_end_matches('\0')
            .to_string(),
    )
}

impl Guest {
    fn start_request(&mut self, rng: &mut SimRng) {
        let home = self.home();
        let key = rng.below(6);
        let req_id = self.next_req_id;
        self.next_req_id += 1;
        let (message_type, tx_id, payload, expect) = if let Some(transaction) = &self.transaction {
            if transaction.writes.len() < 3 && rng.chance(2, 3) {
                let path = format!("{home}/t{key}");
                let value = value_of(rng);
                let mut payload = format!("{path}\0").into_bytes();
                payload.extend_from_slice(&value);
                (
                    MessageType::Write,
                    transaction.id,
                    payload,
                    Expect::TxWrite { path, value },
                )
            } else {
                (
                    MessageType::TransactionEnd,
                    transaction.id,
                    b"T\0".to_vec(),
                    Expect::TxEnd,
                )
            }
        } else {
            match rng.below(10) {
                0..=3 => {
                    let path = if rng.chance(1, 2) {
                        format!("{home}/k{key}")
                    } else {
                        format!("{home}/w/k{key}")
                    };
                    let value = value_of(rng);
                    let mut payload = format!("{path}\0").into_bytes();
                    payload.extend_from_slice(&value);
                    (
                        MessageType::Write,
                        0,
                        payload,
                        Expect::Write { path, value },
                    )
                }
                4 | 5 => match self.model.keys().nth(rng.below(8) as usize).cloned() {
                    Some(path) => (
                        MessageType::Read,
                        0,
                        format!("{path}\0").into_bytes(),
                        Expect::Read { path },
                    ),
                    None => (
                        MessageType::Directory,
                        0,
                        format!("{home}\0").into_bytes(),
                        Expect::Plain,
                    ),
                },
                6 => {
                    let path = format!("{home}/k{key}");
                    (
                        MessageType::Rm,
                        0,
                        format!("{path}\0").into_bytes(),
                        Expect::Remove { path },
                    )
                }
                7 if !self.watching => (
                    MessageType::Watch,
                    0,
                    format!("{home}/w\0tok\0").into_bytes(),
                    Expect::Watch,
                ),
                _ => (
                    MessageType::TransactionStart,
                    0,
                    b"\0".to_vec(),
                    Expect::TxStart,
                ),
            }
        };
        self.unsent = request_frame(message_type, req_id, tx_id, &payload);
        let aborted_at_send = self
            .transaction
            .as_ref()
            .is_some_and(|transaction| transaction.crashed_since_reply);
        self.in_flight = Some(InFlight {
            req_id,
            expect,
            crashed_since_sent: false,
            aborted_at_send,
        });
    }

    /// Writes a random piece of the unsent request into the ring.
    fn push_bytes(&mut self, rng: &mut SimRng) {
        if self.unsent.is_empty() {
            return;
        }
        let piece = (1 + rng.below(self.unsent.len() as u64) as usize).min(self.unsent.len());
        let ring = GuestRing::new(&*self.page);
        if let Ok(transfer) = ring.write_requests(&self.unsent[..piece]) {
            self.unsent.drain(..transfer.bytes);
        }
    }

    fn pull_replies(&mut self, violations: &mut Violations) {
        let page = self.page.clone();
        let ring = GuestRing::new(&*page);
        let mut buffer = [0u8; 1024];
        loop {
            let count = match ring.read_replies(&mut buffer) {
                Ok(transfer) => transfer.bytes,
                Err(error) => {
                    violations.push(format!("dom{}: reply ring: {error:?}", self.domid));
                    return;
                }
            };
            if count == 0 {
                return;
            }
            let mut input = &buffer[..count];
            while !input.is_empty() {
                let fed = match self.assembler.feed(input) {
                    Ok(fed) => fed,
                    Err(error) => {
                        violations.push(format!("dom{}: reply framing: {error}", self.domid));
                        return;
                    }
                };
                input = &input[fed.consumed..];
                if let Some(message) = fed.message {
                    let header = *message.header();
                    self.on_message(
                        header.message_type,
                        header.req_id,
                        message.payload(),
                        violations,
                    );
                }
            }
        }
    }

    fn on_message(
        &mut self,
        message_type: MessageType,
        req_id: u32,
        payload: &[u8],
        violations: &mut Violations,
    ) {
        let domid = self.domid;
        if message_type == MessageType::WatchEvent {
            self.events += 1;
            let path = payload.split(|byte| *byte == 0).next().unwrap_or_default();
            self.expected_events
                .remove(String::from_utf8_lossy(path).as_ref());
            return;
        }
        self.replies += 1;
        let Some(in_flight) = self.in_flight.take() else {
            violations.push(format!(
                "dom{domid}: reply req_id {req_id} with nothing in flight (duplicate?)"
            ));
            return;
        };
        if in_flight.req_id != req_id || !self.unsent.is_empty() {
            violations.push(format!(
                "dom{domid}: reply req_id {req_id}, expected {} (duplicate or stray)",
                in_flight.req_id
            ));
            return;
        }
        let error = (message_type == MessageType::Error)
            .then(|| error_name(payload))
            .flatten();
        let crashed = in_flight.crashed_since_sent;
        match in_flight.expect {
            Expect::Write { path, value } => match error {
                None => {
                    if self.watching && path.contains("/w/") {
                        self.expected_events.insert(path.clone());
                    }
                    self.model.insert(path, value);
                }
                Some(error) => violations.push(format!("dom{domid}: write {path}: {error}")),
            },
            Expect::Remove { path } => match error.as_deref() {
                None | Some("ENOENT") => {
                    self.model.remove(&path);
                }
                Some(error) => violations.push(format!("dom{domid}: rm {path}: {error}")),
            },
            Expect::Read { path } => {
                let expected = self.model.get(&path);
                match (error.as_deref(), expected) {
                    (None, Some(value)) if value.as_slice() == payload => {}
                    (Some("ENOENT"), None) => {}
                    (error, expected) => violations.push(format!(
                        "dom{domid}: read {path}: got {error:?} / {} bytes, model has {:?} bytes",
                        payload.len(),
                        expected.map(Vec::len)
                    )),
                }
            }
            Expect::Watch => match error {
                None => self.watching = true,
                Some(error) => violations.push(format!("dom{domid}: watch: {error}")),
            },
            Expect::TxStart => match error {
                None => {
                    let id = String::from_utf8_lossy(payload)
                        .trim_end_matches('\0')
                        .parse()
                        .unwrap_or(0);
                    self.transaction = Some(Transaction {
                        id,
                        maybe_aborted: crashed,
                        ..Transaction::default()
                    });
                }
                Some(error) => violations.push(format!("dom{domid}: tx start: {error}")),
            },
            Expect::TxWrite { path, value } => {
                let Some(transaction) = &mut self.transaction else {
                    return;
                };
                // Aborted when sent: EAGAIN. Crash while in flight, or TRANSACTION_START in
                // flight at a crash: either outcome. Otherwise: success.
                let may_succeed = !in_flight.aborted_at_send;
                let may_fail = in_flight.aborted_at_send || crashed || transaction.maybe_aborted;
                match error.as_deref() {
                    None if may_succeed => transaction.writes.push((path, value)),
                    Some("EAGAIN") if may_fail => self.transaction = None,
                    other => {
                        violations.push(format!(
                            "dom{domid}: tx {} write {path}: {other:?} (aborted when sent: {})",
                            transaction.id, in_flight.aborted_at_send
                        ));
                        self.transaction = None;
                    }
                }
            }
            Expect::TxEnd => {
                let Some(transaction) = self.transaction.take() else {
                    return;
                };
                let may_succeed = !in_flight.aborted_at_send;
                let may_fail = in_flight.aborted_at_send || crashed || transaction.maybe_aborted;
                match error.as_deref() {
                    None if may_succeed => {
                        for (path, value) in transaction.writes {
                            self.model.insert(path, value);
                        }
                    }
                    Some("EAGAIN") if may_fail => {}
                    other => violations.push(format!(
                        "dom{domid}: tx {} end: {other:?} (aborted when sent: {})",
                        transaction.id, in_flight.aborted_at_send
                    )),
                }
            }
            Expect::Plain => {}
        }
    }

    /// Paths whose stored state is uncertain because a request touching them was in flight.
    fn uncertain(&self) -> Vec<String> {
        let mut paths = Vec::new();
        if let Some(in_flight) = &self.in_flight {
            match &in_flight.expect {
                Expect::Write { path, .. } | Expect::Remove { path } => paths.push(path.clone()),
                Expect::TxEnd => {
                    if let Some(transaction) = &self.transaction {
                        paths.extend(transaction.writes.iter().map(|(path, _)| path.clone()));
                    }
                }
                _ => {}
            }
        }
        paths
    }

    fn on_crash(&mut self) {
        if let Some(in_flight) = &mut self.in_flight {
            in_flight.crashed_since_sent = true;
        }
        if let Some(transaction) = &mut self.transaction {
            transaction.crashed_since_reply = true;
        }
    }
}

/// A dom0 socket client writing fresh keys; dies with the server.
struct SocketClient {
    id: Option<ConnectionId>,
    number: u32,
    sequence: u32,
    in_flight: Option<(u32, String, Vec<u8>)>,
    input: Vec<u8>,
    acked: BTreeMap<String, Vec<u8>>,
}

impl SocketClient {
    /// Socket client `number`, not connected yet.
    fn new(number: u32) -> SocketClient {
        SocketClient {
            id: None,
            number,
            sequence: 0,
            in_flight: None,
            input: Vec::new(),
            acked: BTreeMap::new(),
        }
    }

    fn drive<J: Journal<StoreChanges>>(
        &mut self,
        server: &mut SimServer<J>,
        rng: &mut SimRng,
        violations: &mut Violations,
    ) {
        let id = match self.id {
            Some(id) => id,
            None => match server.socket_open() {
                Ok(id) => {
                    self.id = Some(id);
                    id
                }
                Err(_) => return,
            },
        };
        loop {
            let chunk = server.socket_output(id).to_vec();
            if chunk.is_empty() {
                break;
            }
            server.socket_sent(id, chunk.len());
            self.input.extend_from_slice(&chunk);
        }
        while self.input.len() >= 16 {
            let len = u32::from_le_bytes(self.input[12..16].try_into().unwrap()) as usize;
            if self.input.len() < 16 + len {
                break;
            }
            let req_id = u32::from_le_bytes(self.input[4..8].try_into().unwrap());
            let kind = u32::from_le_bytes(self.input[0..4].try_into().unwrap());
            let frame: Vec<u8> = self.input.drain(..16 + len).collect();
            match self.in_flight.take() {
                Some((expected, path, value)) if expected == req_id => {
                    if kind == MessageType::Error.as_u32() {
                        violations.push(format!(
                            "socket {}: write {path}: {:?}",
                            self.number,
                            error_name(&frame[16..])
                        ));
                    } else {
                        self.acked.insert(path, value);
                    }
                }
                other => violations.push(format!(
                    "socket {}: reply {req_id} while {:?} in flight",
                    self.number,
                    other.map(|(id, ..)| id)
                )),
            }
        }
        if self.in_flight.is_none() && rng.chance(1, 2) {
            self.sequence += 1;
            let path = format!("/sock/c{}/k{}", self.number, self.sequence);
            let value = value_of(rng);
            let mut payload = format!("{path}\0").into_bytes();
            payload.extend_from_slice(&value);
            let frame = request_frame(MessageType::Write, self.sequence, 0, &payload);
            let accepted = server.socket_input(id, &frame);
            assert_eq!(accepted, frame.len());
            self.in_flight = Some((self.sequence, path, value));
        }
    }

    fn on_crash(&mut self) {
        self.id = None;
        self.in_flight = None;
        self.input.clear();
    }
}

// ----------------------------------------------------------------------------- scenario

struct Scenario {
    world: Shared,
    clock: Rc<Cell<u64>>,
    guests: Vec<Guest>,
    sockets: Vec<SocketClient>,
    violations: Violations,
    crashes: u64,
}

impl Scenario {
    /// `guests` domains (1, 2, …) and `sockets` dom0 socket clients on a fresh world;
    /// `seed` names the run in failure messages.
    fn new(seed: u64, guests: u16, sockets: u32) -> Scenario {
        let world = Shared::default();
        Scenario {
            guests: (1..=guests)
                .map(|domid| Guest::new(&world, domid))
                .collect(),
            sockets: (0..sockets).map(SocketClient::new).collect(),
            world,
            clock: Rc::new(Cell::new(0)),
            violations: Violations {
                seed,
                list: Vec::new(),
            },
            crashes: 0,
        }
    }

    fn platform(&self) -> SimPlatform {
        SimPlatform::new(&self.world, &self.clock)
    }

    fn start(&self, device: SimDevice, fresh: bool) -> CrashServer {
        let log = if fresh {
            Log::create(device, LogConfig::default()).expect("create log")
        } else {
            match Log::open(device, LogConfig::default()) {
                Ok((log, _)) => log,
                Err(error) => panic!(
                    "seed {:#x}: recovery failed to open the log: {error:?}",
                    self.violations.seed
                ),
            }
        };
        let (server, _) = start_crash_resilient(
            self.platform(),
            Config::default(),
            xenstore_store::Config::default(),
            log,
            |engine| engine,
        )
        .unwrap_or_else(|error| panic!("seed {:#x}: start: {error}", self.violations.seed));
        server.map_journal(TestJournal::new)
    }

    /// dom0 introduces every guest and creates its home (as a toolstack does).
    fn introduce_all<J: Journal<StoreChanges>>(&mut self, server: &mut SimServer<J>) {
        let id = server.socket_open().expect("socket");
        let mut req_id = 1;
        for guest in &self.guests {
            let domid = guest.domid;
            let home = guest.home();
            for (message_type, payload) in [
                (
                    MessageType::Introduce,
                    format!("{domid}\0{}\0{}\0", 0x1000 + u32::from(domid), 7),
                ),
                (MessageType::Write, format!("{home}\0")),
                (MessageType::SetPerms, format!("{home}\0n{domid}\0")),
            ] {
                let frame = request_frame(message_type, req_id, 0, payload.as_bytes());
                req_id += 1;
                server.socket_input(id, &frame);
            }
        }
        for _ in 0..10 {
            server.step().map_err(|_| ()).expect("step");
        }
        let output = server.socket_output(id).to_vec();
        server.socket_sent(id, output.len());
        assert!(
            !output.windows(6).any(|window| window == b"EINVAL"),
            "introduce failed"
        );
        server.socket_closed(id);
        server.step().map_err(|_| ()).expect("step");
    }

    fn check_store<J: Journal<StoreChanges>>(&mut self, server: &SimServer<J>) {
        let store = &server.engine().store;
        for guest in &self.guests {
            let uncertain = guest.uncertain();
            for (path, value) in &guest.model {
                if uncertain.contains(path) {
                    continue;
                }
                match store.node(path) {
                    Some(record) if record.value == *value => {}
                    Some(record) => self.violations.push(format!(
                        "acknowledged write lost: {path} has {} bytes, expected {}",
                        record.value.len(),
                        value.len()
                    )),
                    None => self
                        .violations
                        .push(format!("acknowledged write lost: {path} is missing")),
                }
            }
        }
        for socket in &self.sockets {
            for (path, value) in &socket.acked {
                if store.node(path).map(|record| &record.value) != Some(value) {
                    self.violations
                        .push(format!("acknowledged socket write lost: {path}"));
                }
            }
        }
    }

    fn crash(&mut self, server: CrashServer, mode_pick: u64) -> CrashServer {
        self.crashes += 1;
        let (_platform, _engine, journal) = server.into_parts();
        let mut device = journal.inner.into_log().into_device();
        device.disarm();
        let mode = match mode_pick % 4 {
            0 => CrashMode::DiscardUnflushed,
            1 => CrashMode::KeepUnflushed,
            2 => CrashMode::RandomSubset,
            _ => CrashMode::RandomSubsetTorn,
        };
        device.crash(mode);
        for guest in &mut self.guests {
            guest.on_crash();
        }
        for socket in &mut self.sockets {
            socket.on_crash();
        }
        let server = self.start(device, false);
        self.check_store(&server);
        server
    }
}

/// One step of client traffic: guests read replies, start requests, write pieces of them;
/// socket clients (unless quiescing) do their part.
fn traffic<J: Journal<StoreChanges>>(
    scenario: &mut Scenario,
    server: &mut SimServer<J>,
    rng: &mut SimRng,
    quiescing: bool,
) {
    for guest in &mut scenario.guests {
        guest.pull_replies(&mut scenario.violations);
        if guest.in_flight.is_none() && !quiescing && rng.chance(2, 3) {
            guest.start_request(rng);
        }
        if !guest.unsent.is_empty() {
            guest.push_bytes(rng);
        }
    }
    if !quiescing {
        for socket in &mut scenario.sockets {
            socket.drive(server, rng, &mut scenario.violations);
        }
    }
}

/// Runs one seed. With `volatile_steps`, the server first serves that many steps without a
/// log (`SwitchableJournal::Volatile`, no crashes: nothing is promised yet), then is switched
/// onto the device mid-stream (`Server::switch_to_log`: replies queued, packets half written,
/// watches and transactions open) and the crash phase runs as usual: everything acknowledged
/// before the switch must survive every later crash too.
fn run_seed(seed: u64, steps: u64, volatile_steps: Option<u64>) -> Violations {
    let mut rng = SimRng::new(seed);
    let mut scenario = Scenario::new(seed, 3, 2);
    let device = SimDevice::new(DEVICE_SECTORS, seed);
    let mut server = match volatile_steps {
        None => {
            let mut server = scenario.start(device, true);
            scenario.introduce_all(&mut server);
            server
        }
        Some(volatile_steps) => {
            let mut volatile: SimServer<SwitchableJournal<SimDevice>> = Server::new(
                scenario.platform(),
                StoreEngine::new(xenstore_store::Config::default()),
                SwitchableJournal::Volatile,
                Config::default(),
            );
            scenario.introduce_all(&mut volatile);
            for _ in 0..volatile_steps {
                traffic(&mut scenario, &mut volatile, &mut rng, false);
                volatile.step().map_err(|_| ()).expect("volatile step");
            }
            traffic(&mut scenario, &mut volatile, &mut rng, false);
            volatile
                .switch_to_log(device, LogConfig::default())
                .unwrap_or_else(|error| panic!("seed {seed:#x}: switch: {error}"));
            volatile.map_journal(|journal| match journal {
                SwitchableJournal::Logged(inner) => TestJournal::new(inner),
                _ => unreachable!("switched"),
            })
        }
    };

    for step in 0..steps + 400 {
        let quiescing = step >= steps;
        traffic(&mut scenario, &mut server, &mut rng, quiescing);
        if !quiescing && rng.chance(1, 25) {
            // Crash between steps, or in the middle of the next step's appends / sync.
            if rng.chance(1, 2) {
                server = scenario.crash(server, rng.next_u64());
                continue;
            }
            if rng.chance(1, 2) {
                // Dies right after a durable sync, before publishing anything.
                server.journal_mut().die_after_next_sync = true;
            } else {
                let operations = rng.below(6);
                server
                    .journal_mut()
                    .inner
                    .log_mut()
                    .device_mut()
                    .arm_crash_after_operations(operations);
            }
            let _ = server.step();
            server = scenario.crash(server, rng.next_u64());
            continue;
        }
        if let Err(error) = server.step() {
            scenario.violations.push(format!(
                "step {step}: journal failed without a crash: {error}"
            ));
            break;
        }
        if quiescing
            && scenario
                .guests
                .iter()
                .all(|guest| guest.in_flight.is_none() && guest.unsent.is_empty())
        {
            break;
        }
    }
    for guest in &mut scenario.guests {
        guest.pull_replies(&mut scenario.violations);
        if let Some(in_flight) = &guest.in_flight {
            scenario.violations.push(format!(
                "dom{}: request {} never answered",
                guest.domid, in_flight.req_id
            ));
        }
        for path in &guest.expected_events {
            scenario.violations.push(format!(
                "dom{}: no watch event for acknowledged write of {path}",
                guest.domid
            ));
        }
    }
    scenario.check_store(&server);
    if !scenario.violations.list.is_empty() && std::env::var_os("XS_SIM_VERBOSE").is_some() {
        for line in &scenario.world.borrow().log_lines {
            eprintln!("  log: {line}");
        }
        eprintln!("{}", server.shell("conns"));
    }
    let replies: u64 = scenario.guests.iter().map(|guest| guest.replies).sum();
    assert!(
        replies > 20,
        "seed {seed:#x}: the workload did almost nothing"
    );
    eprintln!(
        "seed {seed:#x}: {} crashes, {replies} guest replies, {} events, {} violations",
        scenario.crashes,
        scenario
            .guests
            .iter()
            .map(|guest| guest.events)
            .sum::<u64>(),
        scenario.violations.list.len()
    );
    scenario.violations
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The seeds to run: `XS_SIM_SEED` alone, or `XS_SIM_SEEDS` (default `count`) seeds from
/// `XS_SIM_BASE_SEED` (default `base`) on.
fn seeds(count: u64, base: u64) -> Vec<u64> {
    match env_u64("XS_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let count = env_u64("XS_SIM_SEEDS").unwrap_or(count);
            let base = env_u64("XS_SIM_BASE_SEED").unwrap_or(base);
            (0..count).map(|index| base + index).collect()
        }
    }
}

#[test]
fn seeded_crash_simulation() {
    let steps = env_u64("XS_SIM_STEPS").unwrap_or(600);
    for seed in seeds(8, 0x5157_0000) {
        let violations = run_seed(seed, steps, None);
        assert!(
            violations.list.is_empty(),
            "seed {seed:#x} (replay: XS_SIM_SEED={seed:#x}): {} violations:\n  {}",
            violations.list.len(),
            violations.list.join("\n  ")
        );
    }
}

/// The same workload, started volatile and switched onto the log at a random step (see
/// `run_seed`); `XS_SIM_SEEDS` / `XS_SIM_SEED` as above.
#[test]
fn seeded_switch_simulation() {
    let steps = env_u64("XS_SIM_STEPS").unwrap_or(400);
    for seed in seeds(6, 0x5157_1000) {
        let volatile_steps = 20 + SimRng::new(seed).below(200);
        let violations = run_seed(seed, steps, Some(volatile_steps));
        assert!(
            violations.list.is_empty(),
            "seed {seed:#x} (replay: XS_SIM_SEED={seed:#x}, switch after {volatile_steps} \
             steps): {} violations:\n  {}",
            violations.list.len(),
            violations.list.join("\n  ")
        );
    }
}

/// The output queued on each ring connection, in bytes.
fn ring_queues(server: &CrashServer) -> Vec<usize> {
    server
        .connections()
        .iter()
        .filter(|connection| connection.ring().is_some())
        .map(|connection| connection.output.pending_bytes())
        .collect()
}

/// Watchers that never read their rings: their queues are bounded, and a write that queues an
/// event for each of them never produces a commit the log refuses (the watchers' blobs are
/// split into commits of their own); after a crash the queued events are still there.
#[test]
fn slow_watchers_never_break_the_log() {
    let mut scenario = Scenario::new(0, 5, 0);
    let mut server = scenario.start(SimDevice::new(DEVICE_SECTORS * 4, 1), true);
    scenario.introduce_all(&mut server);
    // /w readable by everyone (events are only sent to watchers that may read the node).
    let dom0 = server.socket_open().unwrap();
    for (index, payload) in [&b"/w\0"[..], b"/w\0r0\0"].into_iter().enumerate() {
        let message_type = [MessageType::Write, MessageType::SetPerms][index];
        server.socket_input(dom0, &request_frame(message_type, 900, 0, payload));
        server.step().expect("step");
    }
    // Every guest watches /w, then never reads its ring again.
    for guest in &scenario.guests {
        let frame = request_frame(MessageType::Watch, 1, 0, b"/w\0tok\0");
        let ring = GuestRing::new(&*guest.page);
        assert_eq!(ring.write_requests(&frame).unwrap().bytes, frame.len());
    }
    server.step().expect("step");
    let long_name = "n".repeat(2500);
    let commits_before = server.stats().commits;
    // 36 writes: the five queues pass 384 KiB together, so late writes need split commits.
    // (More would run into the log's NoSpace on blob-heavy commits, reported to persist.)
    for index in 0..36u32 {
        let frame = request_frame(
            MessageType::Write,
            index,
            0,
            format!("/w/{long_name}{index}\0v").as_bytes(),
        );
        server.socket_input(dom0, &frame);
        server
            .step()
            .unwrap_or_else(|error| panic!("write {index}: {error}"));
        let output = server.socket_output(dom0).len();
        server.socket_sent(dom0, output);
    }
    let queued = ring_queues(&server);
    assert_eq!(queued.len(), 5);
    assert!(
        queued.iter().sum::<usize>() > 384 * 1024
            && queued.iter().all(|bytes| *bytes <= 128 * 1024),
        "{queued:?}"
    );
    assert!(
        server.stats().commits > commits_before + 36,
        "watchers' blobs were split into commits of their own"
    );
    // Crash and recover: the queues come back as persisted.
    let server = scenario.crash(server, 0);
    let recovered = ring_queues(&server);
    assert_eq!(recovered, queued);
}
