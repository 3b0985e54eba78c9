//! The crash-survival harness: a mixed workload from several simulated guests (rings) and
//! socket clients runs while `rxenstored --persistence crash-resilient` is killed with SIGKILL
//! at random (seeded) moments and restarted; a checker records every violation of the
//! mission's guarantees:
//!
//! - **no acknowledged write lost**: every write whose OK reply arrived is readable afterwards
//!   unless later overwritten by an acknowledged write (socket clients: a write whose reply was
//!   lost with the connection may or may not have happened; both are accepted);
//! - **every reply exactly once** (ring guests): each req_id is answered once — no duplicate,
//!   none missing after a restart (socket clients lose their connection on a kill instead);
//! - **every watch event at least once**: after an acknowledged write below a watched path,
//!   the watching guest eventually sees an event for exactly that path (duplicates allowed);
//! - **transactions open at a crash end with EAGAIN**, never ENOENT, and are atomic; a
//!   transaction with no crash in its lifetime (its keys have a single writer) commits;
//! - **partial packets are completed after restart**: requests are split across ring wraps
//!   (values up to ~4000 bytes) and in time (half a packet, a pause that a kill may hit, then
//!   the rest); the reply checks above cover them.
//!
//! Every violation names the seed, the kill number at which it was seen, the actor and the
//! operation. [`run`] returns a [`Report`]; the integration test prints
//! `crash harness: N kills, M violations` and fails when M > 0.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rxenstored::client::SocketClient;
use rxenstored::guest::{GuestError, SimulatedGuest};
use xenstore_protocol::{Domid, MessageType};
use xenstore_server::frame::Packet;

use crate::daemon::{Daemon, Mode};
use crate::rng::Rng;
use crate::wire::{error_name, parse_event, path_payload, show, strings_payload, write_payload};

/// How long any single reply may take (a restart included) before it counts as missing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long watch events may take to arrive after the workload stopped.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Protocol payload limit.
const PAYLOAD_MAX: usize = 4096;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// PRNG seed (printed; set `XS_CRASH_SEED` to replay).
    pub seed: u64,
    /// SIGKILLs during the workload (one more happens before the final check).
    pub kills: u32,
    /// Simulated guests (domids 1..=guests).
    pub guests: u16,
    /// Socket (dom0) clients.
    pub socket_clients: u32,
    /// Guests watch their `watched/` subtree and expect events.
    pub watches: bool,
    /// Guests and socket clients run transactions.
    pub transactions: bool,
    /// Largest value written (bytes).
    pub max_value: usize,
    /// Uptime before each kill, uniformly in this range (milliseconds).
    pub uptime_ms: (u64, u64),
    /// Wall-clock budget for the kill loop; the run stops early (and says so) beyond it.
    pub budget: Duration,
    /// Extra daemon arguments (quotas).
    pub daemon_args: Vec<String>,
}

impl Config {
    /// The full mixed workload with `default_kills`, overridable by `XS_CRASH_KILLS`; seed from
    /// `XS_CRASH_SEED` or the clock.
    pub fn from_env(default_kills: u32) -> Config {
        let kills = std::env::var("XS_CRASH_KILLS")
            .ok()
            .map(|text| {
                text.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("XS_CRASH_KILLS={text:?} is not a number"))
            })
            .unwrap_or(default_kills);
        Config {
            seed: Rng::seed_from_env("XS_CRASH_SEED"),
            kills,
            guests: 3,
            socket_clients: 2,
            watches: true,
            transactions: true,
            max_value: 4000,
            uptime_ms: (5, 450),
            budget: Duration::from_secs(
                std::env::var("XS_CRASH_BUDGET_SECS")
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or(600),
            ),
            // The workload is deliberately heavier than a real guest: ~4000-byte values, a
            // directory that keeps growing (its child list counts towards node-size), thousands
            // of nodes. Quota refusals are not what this harness tests (tests/bad_input.rs
            // does), so the guests get quotas far above C xenstored's defaults (node-size
            // 2048, nodes 1000, memory 2.5 MB).
            daemon_args: [
                "-S",
                "1000000",
                "-E",
                "1000000",
                "-W",
                "1000",
                "-Q",
                "memory=1000000000",
            ]
            .iter()
            .map(|text| text.to_string())
            .collect(),
        }
    }
}

/// Counters for the summary line.
#[derive(Debug, Default)]
pub struct Stats {
    /// Ring requests answered.
    pub ring_replies: AtomicU64,
    /// Acknowledged ring writes.
    pub ring_writes: AtomicU64,
    /// Requests sent split in time.
    pub split_requests: AtomicU64,
    /// Transactions committed / ended with EAGAIN.
    pub tx_committed: AtomicU64,
    /// Transactions that ended with EAGAIN.
    pub tx_eagain: AtomicU64,
    /// Watch events received.
    pub events: AtomicU64,
    /// Acknowledged socket writes.
    pub socket_writes: AtomicU64,
    /// Socket reconnects after a kill.
    pub reconnects: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// SIGKILLs performed (including the final one).
    pub kills: u32,
    /// Every violation, in order seen.
    pub violations: Vec<String>,
    /// Counters.
    pub stats: Stats,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl Report {
    /// The summary printed by the test.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "seed {:#x}: {:.1}s, ring replies {}, ring writes acked {}, split requests {}, \
             transactions committed {} / EAGAIN {}, watch events {}, socket writes acked {}, \
             socket reconnects {}",
            self.seed,
            self.elapsed.as_secs_f64(),
            s.ring_replies.load(Ordering::Relaxed),
            s.ring_writes.load(Ordering::Relaxed),
            s.split_requests.load(Ordering::Relaxed),
            s.tx_committed.load(Ordering::Relaxed),
            s.tx_eagain.load(Ordering::Relaxed),
            s.events.load(Ordering::Relaxed),
            s.socket_writes.load(Ordering::Relaxed),
            s.reconnects.load(Ordering::Relaxed),
        )
    }
}

/// State shared by the killer, the guests and the socket clients.
#[derive(Debug)]
struct Shared {
    seed: u64,
    socket: PathBuf,
    /// Kills started so far (incremented just before each SIGKILL).
    epoch: AtomicU32,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
    /// Paths below a guest's `watched/` written by socket clients and acknowledged.
    expected_events: Mutex<HashMap<u16, Vec<String>>>,
    stats: Stats,
}

impl Shared {
    fn violation(&self, who: &str, operation: &str, detail: impl std::fmt::Display) {
        let text = format!(
            "seed {:#x}, kill #{}, {who}, {operation}: {detail}",
            self.seed,
            self.epoch.load(Ordering::SeqCst)
        );
        eprintln!("VIOLATION: {text}");
        self.violations
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(text);
    }

    fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// A value tagged with its writer and sequence number, padded to `len` bytes.
fn make_value(tag: &str, len: usize) -> Vec<u8> {
    let mut value = tag.as_bytes().to_vec();
    let fill = b'a' + (tag.len() % 26) as u8;
    while value.len() < len {
        value.push(fill.wrapping_add((value.len() % 7) as u8));
    }
    value
}

fn value_len(rng: &mut Rng, max: usize, path: &str) -> usize {
    let limit = max.min(PAYLOAD_MAX - path.len() - 1);
    if rng.chance(30) {
        rng.range((limit / 2) as u64, limit as u64) as usize
    } else {
        rng.range(1, 200.min(limit as u64)) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Ring guests
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Expect {
    /// `OK\0` of the request's own type; on success `key` now holds `value`.
    Ack {
        key: String,
        value: Vec<u8>,
        watched: bool,
    },
    /// READ: the value, or ENOENT for `None`.
    Value { key: String, value: Option<Vec<u8>> },
    /// Handed back to the caller.
    Return,
}

/// One request inside a transaction: operation name, type, payload, expected read value
/// (`None` = expect `OK`).
type TxStep = (&'static str, MessageType, Vec<u8>, Option<Vec<u8>>);

#[derive(Debug)]
struct Pending {
    operation: &'static str,
    expect: Expect,
}

struct GuestWorker {
    guest: SimulatedGuest,
    who: String,
    rng: Rng,
    shared: Arc<Shared>,
    config: Config,
    outstanding: BTreeMap<u32, Pending>,
    answered: HashSet<u32>,
    returned: HashMap<u32, Packet>,
    /// Value of the last write *sent* per key (what a read sent now must see).
    sent: HashMap<String, Vec<u8>>,
    /// Acknowledged values per key (durability).
    acked: HashMap<String, Vec<u8>>,
    awaiting_events: HashSet<String>,
    seen_events: HashSet<String>,
    token: String,
    seq: u64,
    dead: bool,
}

/// What a guest leaves for the final check.
#[derive(Debug)]
struct GuestResult {
    who: String,
    acked: HashMap<String, Vec<u8>>,
}

impl GuestWorker {
    fn home(&self) -> String {
        self.guest.home()
    }

    fn fatal(&mut self, operation: &str, error: GuestError) {
        if !self.dead {
            self.shared.violation(&self.who, operation, error);
            self.dead = true;
        }
    }

    fn absorb(&mut self, packet: Packet) {
        if packet.header.message_type == MessageType::WatchEvent.as_u32() {
            Stats::add(&self.shared.stats.events);
            match parse_event(&packet.payload) {
                Some((path, token)) if token == self.token => {
                    self.awaiting_events.remove(&path);
                    self.seen_events.insert(path);
                }
                _ => self.shared.violation(
                    &self.who,
                    "watch event",
                    format!("unexpected event {}", show(&packet.payload)),
                ),
            }
            return;
        }
        let req_id = packet.header.req_id;
        if !self.answered.insert(req_id) {
            self.shared.violation(
                &self.who,
                "reply",
                format!(
                    "duplicate reply for req_id {req_id} (type {}, {})",
                    packet.header.message_type,
                    show(&packet.payload)
                ),
            );
            return;
        }
        let Some(pending) = self.outstanding.remove(&req_id) else {
            self.shared.violation(
                &self.who,
                "reply",
                format!("reply for req_id {req_id} that was never sent"),
            );
            return;
        };
        Stats::add(&self.shared.stats.ring_replies);
        self.check(req_id, pending, packet);
    }

    fn check(&mut self, req_id: u32, pending: Pending, packet: Packet) {
        let error = error_name(packet.header.message_type, &packet.payload);
        match pending.expect {
            Expect::Return => {
                self.returned.insert(req_id, packet);
            }
            Expect::Ack {
                key,
                value,
                watched,
            } => {
                if error.is_some() || packet.payload != b"OK\0" {
                    self.shared.violation(
                        &self.who,
                        pending.operation,
                        format!(
                            "{key}: expected OK, got {} (req_id {req_id})",
                            error.unwrap_or_else(|| show(&packet.payload))
                        ),
                    );
                    return;
                }
                Stats::add(&self.shared.stats.ring_writes);
                if watched && !self.seen_events.contains(&key) {
                    self.awaiting_events.insert(key.clone());
                }
                self.acked.insert(key, value);
            }
            Expect::Value { key, value } => {
                let ok = match (&value, &error) {
                    (None, Some(name)) => name == "ENOENT",
                    (Some(expected), None) => packet.payload == *expected,
                    _ => false,
                };
                if !ok {
                    self.shared.violation(
                        &self.who,
                        pending.operation,
                        format!(
                            "{key}: expected {}, got {} (req_id {req_id})",
                            value.as_deref().map(show).unwrap_or("ENOENT".into()),
                            error.unwrap_or_else(|| show(&packet.payload))
                        ),
                    );
                }
            }
        }
    }

    fn pump(&mut self) -> bool {
        if let Err(error) = self.guest.pump() {
            self.fatal("pump", error);
            return false;
        }
        for packet in self.guest.take_received() {
            self.absorb(packet);
        }
        true
    }

    /// Waits until every outstanding request is answered (bounded).
    fn wait_all(&mut self) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !self.outstanding.is_empty() && !self.dead {
            if !self.pump() {
                return;
            }
            if self.outstanding.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<String> = self
                    .outstanding
                    .iter()
                    .map(|(req_id, pending)| format!("req_id {req_id} ({})", pending.operation))
                    .collect();
                self.shared.violation(
                    &self.who,
                    "reply",
                    format!(
                        "no reply within {REPLY_TIMEOUT:?} for {}",
                        missing.join(", ")
                    ),
                );
                for req_id in self.outstanding.keys() {
                    self.answered.insert(*req_id);
                }
                self.outstanding.clear();
                return;
            }
            self.guest.wait_notification(Duration::from_millis(20));
        }
    }

    /// Sends a frame, optionally in two parts separated by a pause.
    fn send(
        &mut self,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
        pending: Pending,
        split: bool,
    ) -> Option<u32> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let (req_id, frame) = self.guest.frame(message_type, tx_id, payload);
        let operation = pending.operation;
        self.outstanding.insert(req_id, pending);
        let result = if split {
            Stats::add(&self.shared.stats.split_requests);
            let cut = self.rng.range(1, frame.len() as u64 - 1) as usize;
            let pause = Duration::from_millis(self.rng.range(0, 40));
            self.guest.send_raw(&frame[..cut], deadline).and_then(|()| {
                std::thread::sleep(pause);
                self.guest.send_raw(&frame[cut..], deadline)
            })
        } else {
            self.guest.send_raw(&frame, deadline)
        };
        match result {
            Ok(()) => Some(req_id),
            Err(error) => {
                self.fatal(operation, error);
                None
            }
        }
    }

    /// Sends one request and returns its reply (other packets are checked meanwhile).
    fn call(
        &mut self,
        operation: &'static str,
        message_type: MessageType,
        tx_id: u32,
        payload: &[u8],
    ) -> Option<Packet> {
        let pending = Pending {
            operation,
            expect: Expect::Return,
        };
        let req_id = self.send(message_type, tx_id, payload, pending, false)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if !self.pump() {
                return None;
            }
            if let Some(packet) = self.returned.remove(&req_id) {
                return Some(packet);
            }
            if Instant::now() > deadline {
                self.shared.violation(
                    &self.who,
                    operation,
                    format!("no reply within {REPLY_TIMEOUT:?} for req_id {req_id}"),
                );
                self.outstanding.remove(&req_id);
                self.answered.insert(req_id);
                return None;
            }
            self.guest.wait_notification(Duration::from_millis(20));
        }
    }

    fn op_write(&mut self) {
        self.seq += 1;
        let key = format!("{}/k{}", self.home(), self.rng.range(0, 7));
        let len = value_len(&mut self.rng, self.config.max_value, &key);
        let value = make_value(&format!("{}:{}:", self.who, self.seq), len);
        let split = self.rng.chance(30);
        self.sent.insert(key.clone(), value.clone());
        let pending = Pending {
            operation: if split { "split write" } else { "write" },
            expect: Expect::Ack {
                key: key.clone(),
                value: value.clone(),
                watched: false,
            },
        };
        self.send(
            MessageType::Write,
            0,
            &write_payload(&key, &value),
            pending,
            split,
        );
    }

    fn op_read(&mut self) {
        let key = format!("{}/k{}", self.home(), self.rng.range(0, 7));
        let split = self.rng.chance(20);
        let pending = Pending {
            operation: if split { "split read" } else { "read" },
            expect: Expect::Value {
                key: key.clone(),
                value: self.sent.get(&key).cloned(),
            },
        };
        self.send(MessageType::Read, 0, &path_payload(&key), pending, split);
    }

    fn op_watched_write(&mut self) {
        self.seq += 1;
        let key = format!("{}/watched/g{}", self.home(), self.seq);
        let value = make_value(&format!("{}:{}:", self.who, self.seq), 8);
        let pending = Pending {
            operation: "watched write",
            expect: Expect::Ack {
                key: key.clone(),
                value: value.clone(),
                watched: true,
            },
        };
        self.sent.insert(key.clone(), value.clone());
        self.send(
            MessageType::Write,
            0,
            &write_payload(&key, &value),
            pending,
            false,
        );
    }

    fn op_transaction(&mut self) {
        self.seq += 1;
        let start_epoch = self.shared.epoch();
        let Some(reply) = self.call("transaction start", MessageType::TransactionStart, 0, b"\0")
        else {
            return;
        };
        if let Some(error) = error_name(reply.header.message_type, &reply.payload) {
            self.shared
                .violation(&self.who, "transaction start", format!("got {error}"));
            return;
        }
        let text = String::from_utf8_lossy(&reply.payload);
        let Ok(tx) = text.trim_end_matches('\0').parse::<u32>() else {
            self.shared.violation(
                &self.who,
                "transaction start",
                format!("bad id {}", show(&reply.payload)),
            );
            return;
        };
        let tag = format!("{}:tx{}", self.who, self.seq);
        let keys = [
            format!("{}/tx/a", self.home()),
            format!("{}/tx/b", self.home()),
        ];
        let mut eagain = false;
        let steps: Vec<TxStep> = vec![
            (
                "transaction write a",
                MessageType::Write,
                write_payload(&keys[0], tag.as_bytes()),
                None,
            ),
            (
                "transaction write b",
                MessageType::Write,
                write_payload(&keys[1], tag.as_bytes()),
                None,
            ),
            (
                "transaction read a",
                MessageType::Read,
                path_payload(&keys[0]),
                Some(tag.as_bytes().to_vec()),
            ),
        ];
        for (operation, message_type, payload, expect) in steps {
            if self.rng.chance(10) {
                // A pause inside the transaction widens the window a kill can hit.
                std::thread::sleep(Duration::from_millis(self.rng.range(1, 60)));
            }
            let Some(reply) = self.call(operation, message_type, tx, &payload) else {
                return;
            };
            match error_name(reply.header.message_type, &reply.payload) {
                Some(name) if name == "EAGAIN" => {
                    eagain = true;
                    break;
                }
                Some(name) => {
                    self.shared.violation(
                        &self.who,
                        operation,
                        format!(
                            "tx {tx}: got {name}{}",
                            if name == "ENOENT" {
                                " (a transaction aborted by a crash must answer EAGAIN)"
                            } else {
                                ""
                            }
                        ),
                    );
                    eagain = true;
                    break;
                }
                None => {
                    let good = match &expect {
                        None => reply.payload == b"OK\0",
                        Some(value) => reply.payload == *value,
                    };
                    if !good {
                        self.shared.violation(
                            &self.who,
                            operation,
                            format!("tx {tx}: unexpected reply {}", show(&reply.payload)),
                        );
                    }
                }
            }
        }
        let Some(reply) = self.call("transaction end", MessageType::TransactionEnd, tx, b"T\0")
        else {
            return;
        };
        let end_epoch = self.shared.epoch();
        match error_name(reply.header.message_type, &reply.payload) {
            None if reply.payload == b"OK\0" => {
                if eagain {
                    self.shared.violation(
                        &self.who,
                        "transaction end",
                        format!("tx {tx} committed although an operation in it failed"),
                    );
                }
                Stats::add(&self.shared.stats.tx_committed);
                for key in &keys {
                    self.acked.insert(key.clone(), tag.as_bytes().to_vec());
                    self.sent.insert(key.clone(), tag.as_bytes().to_vec());
                }
            }
            Some(name) if name == "EAGAIN" => {
                Stats::add(&self.shared.stats.tx_eagain);
                if end_epoch == start_epoch {
                    self.shared.violation(
                        &self.who,
                        "transaction end",
                        format!("tx {tx}: EAGAIN although no kill happened and nobody else writes its keys"),
                    );
                }
            }
            other => self.shared.violation(
                &self.who,
                "transaction end",
                format!(
                    "tx {tx} (kills during it: {}): expected OK or EAGAIN, got {}",
                    end_epoch - start_epoch,
                    other.unwrap_or_else(|| show(&reply.payload))
                ),
            ),
        }
    }

    fn run(mut self) -> GuestResult {
        while !self.shared.stop.load(Ordering::SeqCst) && !self.dead {
            let choice = self.rng.range(0, 99);
            if self.config.transactions && choice < 12 {
                self.wait_all();
                self.op_transaction();
                continue;
            }
            let batch = self.rng.range(1, 4);
            for _ in 0..batch {
                match self.rng.range(0, 99) {
                    0..=49 => self.op_write(),
                    50..=79 => self.op_read(),
                    _ if self.config.watches => self.op_watched_write(),
                    _ => self.op_write(),
                }
                if self.dead {
                    break;
                }
            }
            self.wait_all();
            if self.rng.chance(5) {
                std::thread::sleep(Duration::from_millis(self.rng.range(1, 30)));
            }
        }
        self.wait_all();
        self.finish_events();
        self.quiet_window();
        GuestResult {
            who: self.who,
            acked: self.acked,
        }
    }

    /// Waits (bounded) for every expected watch event.
    fn finish_events(&mut self) {
        if !self.config.watches || self.dead {
            return;
        }
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let expected_from_sockets: Vec<String> = self
            .shared
            .expected_events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&self.guest.domid().0)
            .cloned()
            .unwrap_or_default();
        for path in expected_from_sockets {
            if !self.seen_events.contains(&path) {
                self.awaiting_events.insert(path);
            }
        }
        while !self.awaiting_events.is_empty() {
            if !self.pump() {
                return;
            }
            if Instant::now() > deadline {
                let mut missing: Vec<&String> = self.awaiting_events.iter().collect();
                missing.sort();
                let count = missing.len();
                missing.truncate(10);
                self.shared.violation(
                    &self.who,
                    "watch",
                    format!(
                        "{count} acknowledged writes never produced a watch event within {EVENT_TIMEOUT:?}, e.g. {missing:?}"
                    ),
                );
                return;
            }
            self.guest.wait_notification(Duration::from_millis(20));
        }
    }

    /// With nothing outstanding, any reply that still arrives is a duplicate.
    fn quiet_window(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline && !self.dead {
            if !self.pump() {
                return;
            }
            self.guest.wait_notification(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Socket clients
// ---------------------------------------------------------------------------------------------

/// Possible values of a key written by a socket client: the last acknowledged value
/// (`None` = absent) followed by values whose reply was lost with the connection.
type Candidates = Vec<Option<Vec<u8>>>;

struct SocketWorker {
    who: String,
    index: u32,
    rng: Rng,
    shared: Arc<Shared>,
    config: Config,
    client: Option<SocketClient>,
    candidates: HashMap<String, Candidates>,
    seq: u64,
}

/// What a socket client leaves for the final check.
#[derive(Debug)]
struct SocketResult {
    who: String,
    candidates: HashMap<String, Candidates>,
    tx_keys: (String, String),
}

fn connect_bounded(socket: &Path, deadline: Instant) -> Option<SocketClient> {
    loop {
        if let Ok(client) = SocketClient::connect(socket, REPLY_TIMEOUT) {
            return Some(client);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl SocketWorker {
    fn key(&self, name: &str) -> String {
        format!("/sock/c{}/{name}", self.index)
    }

    fn tx_keys(&self) -> (String, String) {
        (self.key("ta"), self.key("tb"))
    }

    /// (Re)connects and settles keys whose last write's outcome is unknown; retries (bounded)
    /// when the daemon is killed again meanwhile. False only when the socket stays dead.
    fn ensure_connected(&mut self) -> bool {
        for _ in 0..100 {
            if self.client.is_some() {
                return true;
            }
            if !self.try_connect() {
                return false;
            }
        }
        self.client.is_some()
    }

    /// One connection attempt; true unless the socket never accepted (the client may still be
    /// `None` when a kill interrupted the settling reads).
    fn try_connect(&mut self) -> bool {
        let Some(mut client) = connect_bounded(&self.shared.socket, Instant::now() + REPLY_TIMEOUT)
        else {
            self.shared.violation(
                &self.who,
                "connect",
                format!("socket not accepting within {REPLY_TIMEOUT:?}"),
            );
            return false;
        };
        Stats::add(&self.shared.stats.reconnects);
        let unsettled: Vec<String> = self
            .candidates
            .iter()
            .filter(|(_, values)| values.len() > 1)
            .map(|(key, _)| key.clone())
            .collect();
        for key in unsettled {
            let Ok(reply) = client.read(&key) else {
                return true; // killed again: not connected, settle on the next attempt
            };
            let value = match reply.error() {
                None => Some(reply.payload.clone()),
                Some(name) if name == "ENOENT" => None,
                Some(name) => {
                    self.shared.violation(
                        &self.who,
                        "read after reconnect",
                        format!("{key}: {name}"),
                    );
                    continue;
                }
            };
            let values = self.candidates.get_mut(&key).expect("key listed");
            if values.contains(&value) {
                *values = vec![value];
            } else {
                self.shared.violation(
                    &self.who,
                    "read after reconnect",
                    format!(
                        "{key}: acknowledged write lost: read {}, expected one of {} candidates (last acknowledged {})",
                        value.as_deref().map(show).unwrap_or("ENOENT".into()),
                        values.len(),
                        values[0].as_deref().map(show).unwrap_or("ENOENT".into())
                    ),
                );
                *values = vec![value];
            }
        }
        self.client = Some(client);
        true
    }

    fn lost_connection(&mut self) {
        self.client = None;
    }

    /// A request failed at the socket level: a kill closes the connection (EOF/reset), but a
    /// read timeout means the daemon kept the connection and never answered.
    fn failed(&mut self, operation: &str, error: &std::io::Error) {
        if matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            self.shared.violation(
                &self.who,
                operation,
                format!("no reply within {REPLY_TIMEOUT:?} on a live connection"),
            );
        }
        self.lost_connection();
    }

    fn note_attempt(&mut self, key: &str, value: Option<Vec<u8>>) {
        self.candidates
            .entry(key.to_string())
            .or_insert_with(|| vec![None])
            .push(value);
    }

    fn note_ack(&mut self, key: &str, value: Option<Vec<u8>>) {
        self.candidates.insert(key.to_string(), vec![value]);
    }

    fn op_write(&mut self) {
        self.seq += 1;
        let slot = self.rng.range(0, 5);
        let key = self.key(&format!("k{slot}"));
        let len = value_len(&mut self.rng, self.config.max_value, &key);
        let value = make_value(&format!("{}:{}:", self.who, self.seq), len);
        self.note_attempt(&key, Some(value.clone()));
        let client = self.client.as_mut().expect("connected");
        match client.write(&key, &value) {
            Ok(reply) if reply.error().is_none() => {
                Stats::add(&self.shared.stats.socket_writes);
                self.note_ack(&key, Some(value));
            }
            Ok(reply) => self.shared.violation(
                &self.who,
                "write",
                format!("{key}: {}", reply.error().unwrap_or_default()),
            ),
            Err(error) => self.failed("write", &error),
        }
    }

    fn op_watched_write(&mut self) {
        self.seq += 1;
        let domid = self.rng.range(1, u64::from(self.config.guests)) as u16;
        let key = format!("/local/domain/{domid}/watched/s{}-{}", self.index, self.seq);
        let client = self.client.as_mut().expect("connected");
        match client.write(&key, b"x") {
            Ok(reply) if reply.error().is_none() => {
                Stats::add(&self.shared.stats.socket_writes);
                self.shared
                    .expected_events
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .entry(domid)
                    .or_default()
                    .push(key);
            }
            Ok(reply) => self.shared.violation(
                &self.who,
                "watched write",
                format!("{key}: {}", reply.error().unwrap_or_default()),
            ),
            Err(error) => self.failed("watched write", &error),
        }
    }

    fn op_transaction(&mut self) {
        self.seq += 1;
        let (a, b) = self.tx_keys();
        let tag = format!("{}:tx{}", self.who, self.seq).into_bytes();
        let start_epoch = self.shared.epoch();
        let client = self.client.as_mut().expect("connected");
        let Ok(reply) = client.request(MessageType::TransactionStart, 0, b"\0") else {
            return self.lost_connection();
        };
        if let Some(name) = reply.error() {
            return self.shared.violation(&self.who, "transaction start", name);
        }
        let Ok(tx) = String::from_utf8_lossy(&reply.payload)
            .trim_end_matches('\0')
            .parse::<u32>()
        else {
            return self.shared.violation(
                &self.who,
                "transaction start",
                format!("bad id {}", show(&reply.payload)),
            );
        };
        for key in [&a, &b] {
            match client.request(MessageType::Write, tx, &write_payload(key, &tag)) {
                Ok(reply) if reply.error().is_none() => {}
                Ok(reply) => {
                    return self.shared.violation(
                        &self.who,
                        "transaction write",
                        format!("{key}: {}", reply.error().unwrap_or_default()),
                    );
                }
                Err(_) => return self.lost_connection(),
            }
        }
        // The commit may be applied even if its reply is lost with the connection.
        self.note_attempt(&a, Some(tag.clone()));
        self.note_attempt(&b, Some(tag.clone()));
        let client = self.client.as_mut().expect("connected");
        match client.request(MessageType::TransactionEnd, tx, b"T\0") {
            Ok(reply) => match reply.error() {
                None => {
                    Stats::add(&self.shared.stats.tx_committed);
                    self.note_ack(&a, Some(tag.clone()));
                    self.note_ack(&b, Some(tag));
                }
                Some(name) if name == "EAGAIN" && self.shared.epoch() != start_epoch => {
                    // Impossible on the same connection (a kill closes it), but harmless.
                    Stats::add(&self.shared.stats.tx_eagain);
                }
                Some(name) => self.shared.violation(
                    &self.who,
                    "transaction end",
                    format!(
                        "tx {tx}: {name} although no kill happened and nobody else writes its keys"
                    ),
                ),
            },
            Err(_) => self.lost_connection(),
        }
    }

    fn run(mut self) -> SocketResult {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if !self.ensure_connected() {
                break;
            }
            match self.rng.range(0, 99) {
                0..=59 => self.op_write(),
                60..=79 if self.config.watches && self.config.guests > 0 => self.op_watched_write(),
                80..=99 if self.config.transactions => self.op_transaction(),
                _ => self.op_write(),
            }
        }
        SocketResult {
            tx_keys: self.tx_keys(),
            who: self.who,
            candidates: self.candidates,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup, killer, final check
// ---------------------------------------------------------------------------------------------

fn expect_ok(reply: std::io::Result<rxenstored::client::Response>, what: &str) {
    match reply {
        Ok(reply) if reply.error().is_none() => {}
        Ok(reply) => panic!("setup: {what}: {}", reply.error().unwrap_or_default()),
        Err(error) => panic!("setup: {what}: {error}"),
    }
}

fn setup_guest(
    dom0: &mut SocketClient,
    sim_dir: &Path,
    domid: u16,
    config: &Config,
) -> (SimulatedGuest, String) {
    let mut guest = SimulatedGuest::create(sim_dir, Domid(domid), 0x1000 + u64::from(domid), 10)
        .unwrap_or_else(|error| panic!("setup: guest {domid}: {error}"));
    expect_ok(
        dom0.request(MessageType::Introduce, 0, &guest.introduce_payload()),
        "INTRODUCE",
    );
    let home = guest.home();
    expect_ok(dom0.write(&home, b""), "write home");
    // The toolstack gives a domain its home: owner = the domain, others no access.
    expect_ok(
        dom0.request(
            MessageType::SetPerms,
            0,
            &strings_payload(&[&home, &format!("n{domid}")]),
        ),
        "SET_PERMS home",
    );
    expect_ok(dom0.write(&format!("{home}/watched"), b""), "write watched");
    let token = format!("tok{domid}");
    if config.watches {
        let watched = format!("{home}/watched");
        let reply = guest
            .request(
                MessageType::Watch,
                0,
                &strings_payload(&[&watched, &token]),
                REPLY_TIMEOUT,
            )
            .unwrap_or_else(|error| panic!("setup: guest {domid} WATCH: {error}"));
        assert_eq!(
            reply.payload,
            b"OK\0",
            "setup: guest {domid} WATCH: {}",
            show(&reply.payload)
        );
        let (path, got) = guest
            .next_event(REPLY_TIMEOUT)
            .unwrap_or_else(|error| panic!("setup: guest {domid} initial watch event: {error}"));
        assert_eq!(
            (path.as_str(), got.as_str()),
            (watched.as_str(), token.as_str())
        );
    }
    (guest, token)
}

/// Runs the harness and returns its report (the caller prints and asserts).
pub fn run(config: Config) -> Report {
    let started = Instant::now();
    eprintln!(
        "crash harness: seed {:#x} (replay with XS_CRASH_SEED={:#x}), {} kills planned, {} guests, {} socket clients",
        config.seed, config.seed, config.kills, config.guests, config.socket_clients
    );
    let mut rng = Rng::new(config.seed);
    let extra: Vec<&str> = config.daemon_args.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start("crash", Mode::CrashResilient, &extra);
    let shared = Arc::new(Shared {
        seed: config.seed,
        socket: daemon.socket().to_path_buf(),
        epoch: AtomicU32::new(0),
        stop: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
        expected_events: Mutex::new(HashMap::new()),
        stats: Stats::default(),
    });

    // Each guest thread owns its ring mapping (not Send): it introduces itself through its own
    // dom0 connection, registers its watch, then reports ready before the first kill.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<u16>();
    let mut guest_threads = Vec::new();
    for domid in 1..=config.guests {
        let mut guest_rng = rng.fork();
        let shared_for_guest = Arc::clone(&shared);
        let config_for_guest = config.clone();
        let socket = daemon.socket().to_path_buf();
        let sim_dir = daemon.sim_dir().to_path_buf();
        let ready = ready_tx.clone();
        guest_threads.push(
            std::thread::Builder::new()
                .name(format!("guest{domid}"))
                .spawn(move || {
                    let mut dom0 =
                        SocketClient::connect(&socket, REPLY_TIMEOUT).expect("setup: connect");
                    let (guest, token) = setup_guest(&mut dom0, &sim_dir, domid, &config_for_guest);
                    drop(dom0);
                    let worker = GuestWorker {
                        who: format!("guest dom{domid}"),
                        guest,
                        rng: guest_rng.fork(),
                        shared: shared_for_guest,
                        config: config_for_guest,
                        outstanding: BTreeMap::new(),
                        answered: HashSet::new(),
                        returned: HashMap::new(),
                        sent: HashMap::new(),
                        acked: HashMap::new(),
                        awaiting_events: HashSet::new(),
                        seen_events: HashSet::new(),
                        token,
                        seq: 0,
                        dead: false,
                    };
                    let _ = ready.send(domid);
                    worker.run()
                })
                .expect("spawn guest thread"),
        );
    }
    drop(ready_tx);
    for _ in 1..=config.guests {
        if ready_rx.recv_timeout(REPLY_TIMEOUT).is_err() {
            panic!(
                "setup: a guest did not get ready (see its panic above); daemon log:\n{}",
                daemon.log_tail(30)
            );
        }
    }
    // Each socket client's prefix exists before the workload: otherwise the first
    // transactions of two clients both create `/sock` implicitly, and one of them gets a
    // legitimate EAGAIN that the checker (which assumes disjoint keys) would call a violation.
    if config.socket_clients > 0 {
        let mut dom0 =
            SocketClient::connect(daemon.socket(), REPLY_TIMEOUT).expect("setup: connect");
        for index in 0..config.socket_clients {
            expect_ok(
                dom0.write(&format!("/sock/c{index}"), b""),
                "write socket prefix",
            );
        }
    }
    let mut socket_threads = Vec::new();
    for index in 0..config.socket_clients {
        let worker = SocketWorker {
            who: format!("socket client {index}"),
            index,
            rng: rng.fork(),
            shared: Arc::clone(&shared),
            config: config.clone(),
            client: None,
            candidates: HashMap::new(),
            seq: 0,
        };
        socket_threads.push(
            std::thread::Builder::new()
                .name(format!("socket{index}"))
                .spawn(move || worker.run())
                .expect("spawn socket thread"),
        );
    }

    // The killer.
    let mut kills = 0;
    for number in 1..=config.kills {
        if started.elapsed() > config.budget {
            eprintln!(
                "crash harness: time budget {:?} reached after {kills} kills",
                config.budget
            );
            break;
        }
        let uptime = rng.range(config.uptime_ms.0, config.uptime_ms.1);
        std::thread::sleep(Duration::from_millis(uptime));
        if let Err(status) = daemon.check_alive() {
            shared.violation(
                "daemon",
                "run",
                format!(
                    "exited by itself ({status}) before kill {number}; log tail:\n{}",
                    daemon.log_tail(30)
                ),
            );
        }
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        daemon.kill9();
        kills += 1;
        // Sometimes stay down a little: guests keep producing into their rings meanwhile.
        if rng.chance(20) {
            std::thread::sleep(Duration::from_millis(rng.range(1, 50)));
        }
        if let Err(message) = daemon.try_spawn() {
            shared.violation(
                "daemon",
                "restart",
                format!("after kill {number}: {message}"),
            );
            break;
        }
        if number % 25 == 0 {
            eprintln!(
                "crash harness: {number} kills, {:.0}s, {} violations so far",
                started.elapsed().as_secs_f64(),
                shared.violations.lock().map(|v| v.len()).unwrap_or(0)
            );
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let guests: Vec<GuestResult> = guest_threads
        .into_iter()
        .map(|handle| handle.join().expect("guest thread panicked"))
        .collect();
    let sockets: Vec<SocketResult> = socket_threads
        .into_iter()
        .map(|handle| handle.join().expect("socket thread panicked"))
        .collect();

    // One last kill with everything quiet, then check the durable state.
    if daemon.check_alive().is_ok() {
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        daemon.kill9();
        kills += 1;
    }
    match daemon.try_spawn() {
        Ok(()) => final_check(&shared, &daemon, &guests, &sockets),
        Err(message) => shared.violation("daemon", "final restart", message),
    }
    let violations = std::mem::take(
        &mut *shared
            .violations
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()),
    );
    let shared = Arc::try_unwrap(shared).expect("all workers joined");
    Report {
        seed: config.seed,
        kills,
        violations,
        stats: shared.stats,
        elapsed: started.elapsed(),
    }
}

fn final_check(shared: &Shared, daemon: &Daemon, guests: &[GuestResult], sockets: &[SocketResult]) {
    let Some(mut dom0) = connect_bounded(daemon.socket(), Instant::now() + REPLY_TIMEOUT) else {
        return shared.violation(
            "checker",
            "connect",
            "socket not accepting after final restart",
        );
    };
    let mut read = |key: &str| -> Option<Option<Vec<u8>>> {
        match dom0.read(key) {
            Ok(reply) => match reply.error() {
                None => Some(Some(reply.payload)),
                Some(name) if name == "ENOENT" => Some(None),
                Some(name) => {
                    shared.violation("checker", "read", format!("{key}: {name}"));
                    None
                }
            },
            Err(error) => {
                shared.violation("checker", "read", format!("{key}: {error}"));
                None
            }
        }
    };
    for guest in guests {
        let mut keys: Vec<&String> = guest.acked.keys().collect();
        keys.sort();
        for key in keys {
            let expected = &guest.acked[key];
            match read(key) {
                Some(Some(value)) if value == *expected => {}
                Some(got) => shared.violation(
                    "checker",
                    "final read",
                    format!(
                        "{key} (written by {}): acknowledged write lost: expected {}, read {}",
                        guest.who,
                        show(expected),
                        got.as_deref().map(show).unwrap_or("ENOENT".into())
                    ),
                ),
                None => {}
            }
        }
    }
    for socket in sockets {
        for (key, candidates) in &socket.candidates {
            if let Some(value) = read(key)
                && !candidates.contains(&value)
            {
                shared.violation(
                    "checker",
                    "final read",
                    format!(
                        "{key} (written by {}): acknowledged write lost: read {}, last acknowledged {}",
                        socket.who,
                        value.as_deref().map(show).unwrap_or("ENOENT".into()),
                        candidates[0].as_deref().map(show).unwrap_or("ENOENT".into())
                    ),
                );
            }
        }
        let (a, b) = &socket.tx_keys;
        if let (Some(first), Some(second)) = (read(a), read(b))
            && first != second
        {
            shared.violation(
                "checker",
                "transaction atomicity",
                format!(
                    "{a} = {} but {b} = {}",
                    first.as_deref().map(show).unwrap_or("ENOENT".into()),
                    second.as_deref().map(show).unwrap_or("ENOENT".into())
                ),
            );
        }
    }
}
