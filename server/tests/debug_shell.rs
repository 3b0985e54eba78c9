//! The debug hooks on a known state: the shell's commands through `Server::shell` (the
//! `ShellTarget` implementation), the same read-only commands through XS_CONTROL, the trace
//! line format, log switches surviving a restart, and history / diff from the log.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use xenstore_persist::{Config as LogConfig, Log, MemDevice};
use xenstore_protocol::ring::InMemoryPage;
use xenstore_protocol::{Domid, MessageType};
use xenstore_server::platform::{
    Clock, EventChannels, Level, LogSink, PlatformError, RingLocation, RingMapper,
};
use xenstore_server::server::request_frame;
use xenstore_server::store_engine::{StoreEngine, start_crash_resilient};
use xenstore_server::{Config, ConnectionId, Journal, NoJournal, Server};

struct TestPlatform {
    lines: Rc<RefCell<Vec<String>>>,
    clock: Cell<u64>,
}

impl fmt::Debug for TestPlatform {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("TestPlatform")
    }
}

impl EventChannels for TestPlatform {
    fn bind_interdomain(&mut self, _: Domid, _: u32) -> Result<u32, PlatformError> {
        Ok(1)
    }
    fn notify(&mut self, _: u32) -> Result<(), PlatformError> {
        Ok(())
    }
    fn unbind(&mut self, _: u32) {}
}

impl RingMapper for TestPlatform {
    type Memory = Arc<InMemoryPage>;
    fn map(&mut self, _: &RingLocation) -> Result<Arc<InMemoryPage>, PlatformError> {
        Ok(Arc::new(InMemoryPage::new()))
    }
    fn unmap(&mut self, _: &RingLocation, _: Arc<InMemoryPage>) {}
}

impl Clock for TestPlatform {
    fn now_ns(&self) -> u64 {
        self.clock.set(self.clock.get() + 1_000_000);
        self.clock.get()
    }
}

impl LogSink for TestPlatform {
    fn log(&mut self, level: Level, message: fmt::Arguments<'_>) {
        self.lines.borrow_mut().push(format!("{level:?} {message}"));
    }
}

fn platform(lines: &Rc<RefCell<Vec<String>>>) -> TestPlatform {
    TestPlatform {
        lines: lines.clone(),
        clock: Cell::new(0),
    }
}

/// Sends requests on one socket connection, steps, returns the raw replies (type, payload).
fn call<P, E, J>(
    server: &mut Server<P, E, J>,
    id: ConnectionId,
    requests: &[(MessageType, &[u8])],
) -> Vec<(u32, Vec<u8>)>
where
    P: xenstore_server::Platform,
    E: xenstore_server::Engine,
    J: Journal<E::Changes>,
{
    for (index, (message_type, payload)) in requests.iter().enumerate() {
        let frame = request_frame(*message_type, index as u32 + 1, 0, payload);
        assert_eq!(server.socket_input(id, &frame), frame.len());
    }
    for _ in 0..requests.len() + 1 {
        server.step().expect("step");
    }
    let mut bytes = Vec::new();
    loop {
        let chunk = server.socket_output(id).to_vec();
        if chunk.is_empty() {
            break;
        }
        server.socket_sent(id, chunk.len());
        bytes.extend(chunk);
    }
    let mut replies = Vec::new();
    while bytes.len() >= 16 {
        let kind = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        replies.push((kind, bytes[16..16 + len].to_vec()));
        bytes.drain(..16 + len);
    }
    replies
}

fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload)
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn shell_commands_on_a_known_state() {
    let lines = Rc::new(RefCell::new(Vec::new()));
    let engine = StoreEngine::new(xenstore_store::Config::default());
    let mut server = Server::new(platform(&lines), engine, NoJournal, Config::default());
    let id = server.socket_open().unwrap();
    let replies = call(
        &mut server,
        id,
        &[
            (MessageType::Write, b"/vm/name\0guest-one"),
            (MessageType::SetPerms, b"/vm/name\0n0\0r5\0"),
            (MessageType::Watch, b"/vm\0tok\0"),
            (MessageType::TransactionStart, b"\0"),
        ],
    );
    assert!(replies.iter().all(|(kind, _)| *kind != 16), "{replies:?}");

    let read = server.shell("read /vm/name");
    assert!(read.contains("value:       \"guest-one\""), "{read}");
    assert!(read.contains("permissions: n0 r5"), "{read}");
    let listing = server.shell("ls /vm");
    assert!(listing.starts_with("/vm = \"\""), "{listing}");
    assert!(
        listing.contains("  name = \"guest-one\"  (n0 r5; gen "),
        "{listing}"
    );
    let conns = server.shell("conns");
    assert!(
        conns.lines().next().unwrap().contains("req_cons"),
        "{conns}"
    );
    assert!(conns.contains(" socket "), "{conns}");
    let watches = server.shell("watches");
    assert!(watches.contains("/vm / tok"), "{watches}");
    let transactions = server.shell("txns");
    assert_eq!(transactions.lines().count(), 2, "{transactions}");
    let stats = server.shell("stats");
    assert!(stats.contains("persistence:  none"), "{stats}");
    assert!(stats.contains("WRITE"), "{stats}");
    assert!(
        server.shell("history /vm").starts_with("error: no history"),
        "mode none has no history"
    );
    assert!(server.shell("restart").starts_with("error:"));
    assert!(!server.restart_requested());
    assert!(
        server
            .shell("frobnicate")
            .starts_with("error: unknown command")
    );
    assert!(server.shell("read /nope").contains("no such node"));

    // Log switches and the trace.
    assert_eq!(server.shell("log persist off"), "ok\n");
    assert!(server.shell("log").contains("persist=off"));
    assert!(server.shell("log loud").starts_with("error:"));
    assert_eq!(server.shell("trace 0 on"), "ok\n");
    call(&mut server, id, &[(MessageType::Read, b"/vm/name\0")]);
    let trace: Vec<String> = lines
        .borrow()
        .iter()
        .filter(|line| line.starts_with("Trace"))
        .cloned()
        .collect();
    assert_eq!(trace.len(), 1, "{trace:?}");
    assert!(
        trace[0].contains(" dom=0 READ tx=0 req=1 path=/vm/name -> OK"),
        "{trace:?}"
    );
    assert!(trace[0].starts_with("Trace t="), "{trace:?}");
}

#[test]
fn xs_control_reaches_the_read_only_shell_commands() {
    let lines = Rc::new(RefCell::new(Vec::new()));
    let engine = StoreEngine::new(xenstore_store::Config::default());
    let mut server = Server::new(platform(&lines), engine, NoJournal, Config::default());
    let id = server.socket_open().unwrap();
    let replies = call(
        &mut server,
        id,
        &[
            (MessageType::Write, b"/a/b\0v"),
            (MessageType::Control, b"conns\0"),
            (MessageType::Control, b"read\0/a/b\0"),
            (MessageType::Control, b"restart\0"),
            (MessageType::Control, b"print\0hello\0"),
            (MessageType::Control, b"help\0"),
        ],
    );
    assert_eq!(replies.len(), 6);
    assert!(text(&replies[1].1).contains("req_cons"));
    assert!(text(&replies[2].1).contains("value:       \"v\""));
    // `restart` is not a read-only command: the store answers it (EINVAL, as C).
    assert_eq!(replies[3].0, MessageType::Error.as_u32());
    assert_eq!(text(&replies[4].1), "OK");
    assert!(lines.borrow().iter().any(|line| line.contains("hello")));
    assert!(text(&replies[5].1).contains("quota"));
    assert!(!server.restart_requested());
}

#[test]
fn history_diff_and_settings_survive_a_restart() {
    let lines = Rc::new(RefCell::new(Vec::new()));
    let log = Log::create(MemDevice::new(8192), LogConfig::default()).unwrap();
    let (mut server, _) = start_crash_resilient(
        platform(&lines),
        Config::default(),
        xenstore_store::Config::default(),
        log,
        |engine| engine,
    )
    .unwrap();
    let id = server.socket_open().unwrap();
    call(
        &mut server,
        id,
        &[
            (MessageType::Write, b"/a/b\0one"),
            (MessageType::Write, b"/a/b\0two"),
            (MessageType::Rm, b"/a\0"),
        ],
    );
    let history = server.shell("history /a/b");
    let entries: Vec<&str> = history.lines().collect();
    assert_eq!(entries.len(), 3, "{history}");
    assert!(entries[0].contains("WRITE /a/b -> \"one\""), "{history}");
    assert!(entries[1].contains("WRITE /a/b -> \"two\""), "{history}");
    assert!(entries[2].contains("RM /a -> absent"), "{history}");
    let first: u64 = entries[0][1..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let diff = server.shell(&format!("diff {} {}", first - 1, first));
    assert!(diff.contains("+ /a/b"), "{diff}");
    assert!(server.shell("diff 0 999999").starts_with("error: commit"));
    assert!(
        server
            .shell("stats")
            .contains("persistence:  crash-resilient")
    );
    assert_eq!(server.shell("log ring off"), "ok\n");
    assert_eq!(server.shell("trace 7 on"), "ok\n");
    server.step().unwrap();
    assert_eq!(server.shell("restart"), "restarting\n");
    assert!(server.restart_requested());

    // The controlled restart: recover a new server from the same log.
    let (platform, _engine, journal) = server.into_parts();
    let device = journal.into_log().into_device();
    let (log, _) = Log::open(device, LogConfig::default()).unwrap();
    let (mut server, _) = start_crash_resilient(
        platform,
        Config::default(),
        xenstore_store::Config::default(),
        log,
        |engine| engine,
    )
    .unwrap();
    let settings = server.shell("log");
    assert!(settings.contains("ring=off"), "{settings}");
    assert!(settings.contains("trace=7"), "{settings}");
    assert!(server.shell("read /a/b").contains("no such node"));
}

/// Regression (reported against `--engine store`): `xenstore-rm` runs RM inside a transaction;
/// the store panicked with "transaction view: /a must be present". Removals and writes below
/// removed nodes inside transactions must answer, never panic.
#[test]
fn removals_inside_transactions_answer() {
    let lines = Rc::new(RefCell::new(Vec::new()));
    let engine = StoreEngine::new(xenstore_store::Config::default());
    let mut server = Server::new(platform(&lines), engine, NoJournal, Config::default());
    let id = server.socket_open().unwrap();
    call(&mut server, id, &[(MessageType::Write, b"/a/b/c\0x")]);
    let start = call(&mut server, id, &[(MessageType::TransactionStart, b"\0")]);
    let tx: u32 = text(&start[0].1).parse().unwrap();
    let in_tx = |message_type: MessageType, payload: &[u8], req_id: u32| {
        request_frame(message_type, req_id, tx, payload)
    };
    for (index, (message_type, payload)) in [
        (MessageType::Rm, &b"/a/b\0"[..]),
        (MessageType::Rm, b"/a/b/c\0"),
        (MessageType::Write, b"/a/b/c/d\0y"),
        (MessageType::Rm, b"/a\0"),
        (MessageType::Read, b"/a/b/c/d\0"),
        (MessageType::SetPerms, b"/a/b\0n0\0"),
        (MessageType::Rm, b"/a/b/c/d\0"),
        (MessageType::TransactionEnd, b"T\0"),
    ]
    .into_iter()
    .enumerate()
    {
        let frame = in_tx(message_type, payload, 100 + index as u32);
        assert_eq!(server.socket_input(id, &frame), frame.len());
        server.step().expect("step");
    }
    server.step().expect("step");
    let mut replies = 0;
    let mut bytes = server.socket_output(id).to_vec();
    while !server.socket_output(id).is_empty() {
        let count = server.socket_output(id).len();
        server.socket_sent(id, count);
        bytes.extend(server.socket_output(id));
    }
    while bytes.len() >= 16 {
        let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        bytes.drain(..16 + len);
        replies += 1;
    }
    assert_eq!(replies, 8, "every request answered");
    assert!(server.shell("read /a").contains("no such node"));
}
