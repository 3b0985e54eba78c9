//! `--crash-client`: the workload and witness of the Xen lab's crash scenario (e). It runs in
//! a guest (or dom0) while the xenstore is crashed and restarted again and again, and prints
//! every acknowledged change as a line on stdout (a guest's console, i.e. dom0's xenconsoled
//! log), so that the checker in dom0 holds a record outside the store.
//!
//! With `wait_for` it first polls (READ every 0.5 s) until that node exists, so that the lab
//! can create every guest before any of them starts its load. Then, under `<prefix>`
//! (default `/local/domain/<own domid>/data/crash`), it loops:
//! - a plain WRITE of `k<i>` = `<seq>` (i = seq mod keys), then a READ of it that must return
//!   `<seq>` (nobody else writes there): `CC <label> ack k<i> <seq>`;
//! - every `tx_every` rounds, a transaction writing `tx/a` and `tx/b` = `<seq>`; EAGAIN at any
//!   step (a transaction that was open at a crash) ends it and retries it:
//!   `CC <label> tx-eagain <seq> <attempt>`, then `CC <label> tx-ack <seq>` on commit;
//! - every 8 rounds, a READ of `stop` (written by dom0 when the scenario ends).
//!
//! With `ack_every` > 1 the per-change lines are replaced by a snapshot every `ack_every`
//! rounds and at the end, `CC <label> acks k0=<seq> k1=<seq> … tx=<seq>`: the last acknowledged
//! value of every node, which is all the checker needs, for a fraction of the console output.
//!
//! A second connection watches `<prefix>` and counts the events per node. At the end the
//! client waits (bounded) until every node fired at least as many events as it acknowledged
//! writes to it, does a final write/read round trip, and checks that no reply is left over.
//! Violations, each printed as `CC <label> violation <text>`:
//! - an unexpected error reply, a reply with the wrong req_id or type (duplicate or foreign),
//!   no reply within the bound (the connection is then reopened);
//! - a READ that does not return the value just acknowledged;
//! - fewer watch events for a node than acknowledged writes to it;
//! - a failed final round trip; a packet left over after it.
//!
//! Last line: `CC <label> done rounds=… acks=… tx=… eagain=… events=… timeouts=… violations=…`.
//! The exit status is 0 only without violations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wire::{Client, Target, WireError, op, strings};

/// Options of the crash client.
#[derive(Clone, Debug)]
pub struct CrashParams {
    /// The xenstore.
    pub target: Target,
    /// Name in the output lines.
    pub label: String,
    /// Where to write; `None`: `/local/domain/<domid>/data/crash`.
    pub prefix: Option<String>,
    /// Plain keys written in rotation.
    pub keys: u64,
    /// A transaction every this many rounds (0: none).
    pub tx_every: u64,
    /// Bound on every reply.
    pub reply_timeout: Duration,
    /// Stop after this many rounds even without `stop` (0: only `stop`).
    pub rounds_max: u64,
    /// Pause between rounds.
    pub pace: Duration,
    /// Print acknowledgements as a snapshot every this many rounds (1: one line per change).
    pub ack_every: u64,
    /// How long to wait at the end for watch events to catch up.
    pub event_grace: Duration,
    /// Start only once this node exists (relative paths: below the domain's home).
    pub wait_for: Option<String>,
}

/// What went wrong with the crash client itself (not a violation: the run could not start).
#[derive(Debug)]
pub enum CrashError {
    /// Connecting or the first requests failed.
    Setup(WireError),
}

impl std::fmt::Display for CrashError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrashError::Setup(error) => write!(formatter, "setup: {error}"),
        }
    }
}

impl std::error::Error for CrashError {}

/// Longest wait for the `wait_for` node.
const WAIT_FOR_MAX: Duration = Duration::from_secs(600);

/// Watch token of the watcher connection.
const TOKEN: &str = "crash-check";

/// Counters and the report of one run.
#[derive(Debug, Default)]
struct Tally {
    rounds: u64,
    acks: u64,
    transactions: u64,
    eagain: u64,
    timeouts: u64,
    violations: u64,
    /// Acknowledged writes per node (relative to the prefix).
    acked: BTreeMap<String, u64>,
    /// The last acknowledged value per plain key, and of the transaction pair.
    last_value: BTreeMap<String, u64>,
    last_commit: u64,
}

struct Run<'a> {
    params: &'a CrashParams,
    client: Client,
    tally: Tally,
}

impl Run<'_> {
    fn say(&self, text: &str) {
        println!("CC {} {text}", self.params.label);
    }

    fn violation(&mut self, text: &str) {
        self.tally.violations += 1;
        self.say(&format!("violation {text}"));
    }

    /// A failed request: a timeout or a protocol error is a violation and the connection is
    /// reopened (its reply stream can no longer be trusted).
    fn failed(&mut self, error: WireError) {
        if matches!(error, WireError::Timeout { .. }) {
            self.tally.timeouts += 1;
        }
        let reopen = !matches!(error, WireError::Server { .. });
        self.violation(&error.to_string());
        if reopen {
            match Client::connect(&self.params.target, self.params.reply_timeout) {
                Ok(client) => self.client = client,
                Err(error) => self.violation(&format!("reconnect: {error}")),
            }
        }
    }

    fn write(&mut self, tx: u32, path: &str, value: &str) -> Result<(), WireError> {
        let mut payload = strings(&[path]);
        payload.extend_from_slice(value.as_bytes());
        self.client.request(op::WRITE, tx, &payload).map(drop)
    }

    fn read(&mut self, path: &str) -> Result<String, WireError> {
        let reply = self.client.request(op::READ, 0, &strings(&[path]))?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// `acks k0=.. k1=.. tx=..`: the last acknowledged value of every node.
    fn snapshot(&self) {
        let mut line = String::from("acks");
        for (key, seq) in &self.tally.last_value {
            line.push_str(&format!(" {key}={seq}"));
        }
        line.push_str(&format!(" tx={}", self.tally.last_commit));
        self.say(&line);
    }

    fn plain_round(&mut self, prefix: &str, seq: u64) {
        let key = format!("k{}", seq % self.params.keys.max(1));
        let path = format!("{prefix}/{key}");
        if let Err(error) = self.write(0, &path, &seq.to_string()) {
            return self.failed(error);
        }
        self.tally.acks += 1;
        *self.tally.acked.entry(key.clone()).or_default() += 1;
        self.tally.last_value.insert(key.clone(), seq);
        if self.params.ack_every <= 1 {
            self.say(&format!("ack {key} {seq}"));
        }
        match self.read(&path) {
            Ok(value) if value == seq.to_string() => {}
            Ok(value) => self.violation(&format!(
                "read {key} = {value:?} right after the acknowledged write of {seq}"
            )),
            Err(error) => self.failed(error),
        }
    }

    fn transaction(&mut self, prefix: &str, seq: u64) {
        for attempt in 1..=100u32 {
            let started = match self.client.request(op::TRANSACTION_START, 0, b"\0") {
                Ok(reply) => reply,
                Err(error) if error.errno() == Some("EAGAIN") => {
                    self.tally.eagain += 1;
                    self.say(&format!("tx-eagain {seq} {attempt} start"));
                    continue;
                }
                Err(error) => return self.failed(error),
            };
            let Ok(tx) = String::from_utf8_lossy(&started)
                .trim_end_matches('\0')
                .parse::<u32>()
            else {
                return self.violation(&format!("transaction id {started:?} is not decimal"));
            };
            let value = seq.to_string();
            let body = self
                .write(tx, &format!("{prefix}/tx/a"), &value)
                .and_then(|()| self.write(tx, &format!("{prefix}/tx/b"), &value));
            match body {
                Ok(()) => {}
                Err(error) if error.errno() == Some("EAGAIN") => {
                    self.tally.eagain += 1;
                    self.say(&format!("tx-eagain {seq} {attempt} body"));
                    // Whatever this answers (the transaction may be gone already) is fine.
                    let _ = self.client.request(op::TRANSACTION_END, tx, b"F\0");
                    continue;
                }
                Err(error) => {
                    let _ = self.client.request(op::TRANSACTION_END, tx, b"F\0");
                    return self.failed(error);
                }
            }
            match self.client.request(op::TRANSACTION_END, tx, b"T\0") {
                Ok(_) => {
                    self.tally.transactions += 1;
                    for key in ["tx/a", "tx/b"] {
                        *self.tally.acked.entry(key.to_string()).or_default() += 1;
                    }
                    self.tally.last_commit = seq;
                    if self.params.ack_every <= 1 {
                        self.say(&format!("tx-ack {seq}"));
                    }
                    return;
                }
                Err(error) if error.errno() == Some("EAGAIN") => {
                    self.tally.eagain += 1;
                    self.say(&format!("tx-eagain {seq} {attempt} commit"));
                }
                Err(error) => return self.failed(error),
            }
        }
        self.violation(&format!("transaction {seq}: EAGAIN 100 times in a row"));
    }

    /// True when dom0 wrote `stop`.
    fn stopped(&mut self, prefix: &str) -> bool {
        match self.read(&format!("{prefix}/stop")) {
            Ok(_) => true,
            Err(error) if error.errno() == Some("ENOENT") => false,
            Err(error) => {
                self.failed(error);
                false
            }
        }
    }
}

/// The watcher: counts events per node below `prefix` until `done`.
fn watch(
    target: &Target,
    prefix: &str,
    reply_timeout: Duration,
    counts: &Mutex<BTreeMap<String, u64>>,
    errors: &Mutex<Vec<String>>,
    done: &AtomicBool,
) {
    let record_error = |text: String| errors.lock().expect("watcher errors").push(text);
    let mut client = match Client::connect(target, reply_timeout) {
        Ok(client) => client,
        Err(error) => return record_error(format!("watcher connect: {error}")),
    };
    if let Err(error) = client.request(op::WATCH, 0, &strings(&[prefix, TOKEN])) {
        return record_error(format!("watcher: {error}"));
    }
    let below = format!("{prefix}/");
    while !done.load(Ordering::Relaxed) {
        match client.next_event_within(Duration::from_millis(500)) {
            Ok((path, token)) => {
                if token != TOKEN {
                    record_error(format!("watch event with foreign token {token:?}"));
                } else if let Some(node) = path.strip_prefix(&below) {
                    *counts
                        .lock()
                        .expect("watcher counts")
                        .entry(node.to_string())
                        .or_default() += 1;
                }
            }
            Err(WireError::Timeout { .. }) => {}
            Err(error) => {
                record_error(format!("watcher: {error}"));
                // Keep watching on a fresh connection.
                match Client::connect(target, reply_timeout) {
                    Ok(fresh) => client = fresh,
                    Err(error) => return record_error(format!("watcher reconnect: {error}")),
                }
                if let Err(error) = client.request(op::WATCH, 0, &strings(&[prefix, TOKEN])) {
                    return record_error(format!("watcher: {error}"));
                }
            }
        }
    }
}

/// Runs the crash client; returns the number of violations.
pub fn run(params: &CrashParams) -> Result<u64, CrashError> {
    let mut client = Client::connect(&params.target, params.reply_timeout)
        .map_err(|error| CrashError::Setup(WireError::Io(error)))?;
    let prefix = match &params.prefix {
        Some(prefix) => prefix.clone(),
        None => {
            // Relative to this domain's home: /local/domain/<domid>/domid.
            let domid = client
                .request(op::READ, 0, &strings(&["domid"]))
                .map_err(CrashError::Setup)?;
            format!(
                "/local/domain/{}/data/crash",
                String::from_utf8_lossy(&domid).trim_end_matches('\0')
            )
        }
    };
    if let Some(go) = &params.wait_for {
        println!("CC {} waiting for {go}", params.label);
        let deadline = Instant::now() + WAIT_FOR_MAX;
        loop {
            match client.request(op::READ, 0, &strings(&[go])) {
                Ok(_) => break,
                Err(error) if error.errno() == Some("ENOENT") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(error) => return Err(CrashError::Setup(error)),
            }
        }
    }
    // A clean start: nothing of an earlier run counts (`stop` especially).
    match client.request(op::RM, 0, &strings(&[&prefix])) {
        Ok(_) => {}
        Err(error) if error.errno() == Some("ENOENT") => {}
        Err(error) => return Err(CrashError::Setup(error)),
    }
    let mut run = Run {
        params,
        client,
        tally: Tally::default(),
    };
    run.say(&format!("start prefix={prefix}"));

    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (target, prefix) = (params.target.clone(), prefix.clone());
        let (counts, errors, done) = (counts.clone(), errors.clone(), done.clone());
        let timeout = params.reply_timeout;
        std::thread::spawn(move || watch(&target, &prefix, timeout, &counts, &errors, &done))
    };
    // The watch must be in place before the first write, or that write's event is not owed.
    std::thread::sleep(Duration::from_millis(300));

    let mut seq = 0u64;
    loop {
        seq += 1;
        run.tally.rounds += 1;
        run.plain_round(&prefix, seq);
        if params.tx_every > 0 && seq % params.tx_every == 0 {
            run.transaction(&prefix, seq);
        }
        if seq % 8 == 0 && run.stopped(&prefix) {
            break;
        }
        if params.ack_every > 1 && seq % params.ack_every == 0 {
            run.snapshot();
        }
        if params.rounds_max > 0 && seq >= params.rounds_max {
            break;
        }
        if !params.pace.is_zero() {
            std::thread::sleep(params.pace);
        }
    }

    if params.ack_every > 1 {
        run.snapshot();
    }
    // Watch events: at least one per acknowledged write, allowing them time to arrive.
    let deadline = Instant::now() + params.event_grace;
    let owed = |counts: &BTreeMap<String, u64>| -> Vec<(String, u64, u64)> {
        run.tally
            .acked
            .iter()
            .filter_map(|(node, acked)| {
                let seen = counts.get(node).copied().unwrap_or(0);
                (seen < *acked).then(|| (node.clone(), seen, *acked))
            })
            .collect()
    };
    let missing = loop {
        let missing = owed(&counts.lock().expect("watcher counts"));
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    for (node, seen, acked) in missing {
        run.violation(&format!(
            "watch: {node} fired {seen} events for {acked} acknowledged writes"
        ));
    }
    for error in errors.lock().expect("watcher errors").iter() {
        run.violation(error);
    }
    let events: u64 = counts.lock().expect("watcher counts").values().sum();

    // Final round trip, then nothing may be left on the connection.
    let final_value = format!("final-{seq}");
    let final_path = format!("{prefix}/final");
    match run
        .write(0, &final_path, &final_value)
        .and_then(|()| run.read(&final_path))
    {
        Ok(value) if value == final_value => run.say("final ok"),
        Ok(value) => run.violation(&format!("final read {value:?}, wrote {final_value:?}")),
        Err(error) => run.failed(error),
    }
    match run.client.next_event_within(Duration::from_millis(500)) {
        Err(WireError::Timeout { .. }) => {}
        Ok((path, token)) => run.violation(&format!(
            "watch event {path} {token} on a connection without watches"
        )),
        Err(error) => run.violation(&format!("after the final round trip: {error}")),
    }
    let tally = &run.tally;
    run.say(&format!(
        "done rounds={} acks={} tx={} eagain={} events={events} timeouts={} violations={}",
        tally.rounds,
        tally.acks,
        tally.transactions,
        tally.eagain,
        tally.timeouts,
        tally.violations
    ));
    Ok(run.tally.violations)
}

#[cfg(test)]
mod tests {
    //! The crash client against a small in-process xenstore on a Unix socket: no violation
    //! from a correct one, a violation from one that acknowledges a write it did not apply.
    use super::*;
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;

    type Watches = Arc<Mutex<Vec<(String, String, Arc<Mutex<UnixStream>>)>>>;

    fn packet(message_type: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [message_type, req_id, 0, payload.len() as u32] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Serves one connection; `drop_write` names a value whose WRITE is acknowledged but lost.
    fn connection(
        stream: UnixStream,
        store: Arc<Mutex<HashMap<String, String>>>,
        watches: Watches,
        drop_write: Option<String>,
    ) {
        let mut reader = stream.try_clone().unwrap();
        let writer = Arc::new(Mutex::new(stream));
        loop {
            let mut header = [0u8; 16];
            if reader.read_exact(&mut header).is_err() {
                return;
            }
            let word = |i: usize| u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
            let mut payload = vec![0u8; word(3) as usize];
            reader.read_exact(&mut payload).unwrap();
            let (message_type, req_id) = (word(0), word(1));
            let mut parts = payload.split(|byte| *byte == 0);
            let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let rest = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let mut fired = Vec::new();
            let reply = match message_type {
                op::READ => match store.lock().unwrap().get(&path) {
                    Some(value) => packet(op::READ, req_id, value.as_bytes()),
                    None => packet(op::ERROR, req_id, b"ENOENT\0"),
                },
                op::WRITE => {
                    let value = String::from_utf8_lossy(&payload[path.len() + 1..]).into_owned();
                    if drop_write.as_deref() != Some(value.as_str()) {
                        store.lock().unwrap().insert(path.clone(), value);
                    }
                    fired.push(path);
                    packet(op::WRITE, req_id, b"OK\0")
                }
                op::RM => {
                    store
                        .lock()
                        .unwrap()
                        .retain(|key, _| !key.starts_with(&path));
                    packet(op::RM, req_id, b"OK\0")
                }
                op::TRANSACTION_START => packet(op::TRANSACTION_START, req_id, b"1\0"),
                op::TRANSACTION_END => packet(op::TRANSACTION_END, req_id, b"OK\0"),
                op::WATCH => {
                    watches
                        .lock()
                        .unwrap()
                        .push((path.clone(), rest.clone(), writer.clone()));
                    let ok = packet(op::WATCH, req_id, b"OK\0");
                    writer.lock().unwrap().write_all(&ok).unwrap();
                    let event = packet(op::WATCH_EVENT, 0, &strings(&[&path, &rest]));
                    writer.lock().unwrap().write_all(&event).unwrap();
                    continue;
                }
                _ => packet(op::ERROR, req_id, b"EINVAL\0"),
            };
            writer.lock().unwrap().write_all(&reply).unwrap();
            for written in fired {
                for (watched, token, target) in watches.lock().unwrap().iter() {
                    if written.starts_with(watched.as_str()) {
                        let event = packet(op::WATCH_EVENT, 0, &strings(&[&written, token]));
                        let _ = target.lock().unwrap().write_all(&event);
                    }
                }
            }
        }
    }

    fn serve(name: &str, drop_write: Option<&str>) -> PathBuf {
        let directory =
            std::env::temp_dir().join(format!("loadgen-crash-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("socket");
        let listener = UnixListener::bind(&path).unwrap();
        let store = Arc::new(Mutex::new(HashMap::new()));
        let watches: Watches = Arc::new(Mutex::new(Vec::new()));
        let drop_write = drop_write.map(str::to_string);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (store, watches, drop_write) =
                    (store.clone(), watches.clone(), drop_write.clone());
                std::thread::spawn(move || connection(stream.unwrap(), store, watches, drop_write));
            }
        });
        path
    }

    fn params(socket: PathBuf) -> CrashParams {
        CrashParams {
            target: Target::Socket(socket),
            label: "test".into(),
            prefix: Some("/t/crash".into()),
            keys: 4,
            tx_every: 3,
            reply_timeout: Duration::from_secs(5),
            rounds_max: 24,
            pace: Duration::ZERO,
            ack_every: 1,
            event_grace: Duration::from_secs(5),
            wait_for: None,
        }
    }

    #[test]
    fn a_correct_server_gives_no_violation() {
        assert_eq!(run(&params(serve("clean", None))).unwrap(), 0);
    }

    #[test]
    fn an_acknowledged_but_lost_write_is_a_violation() {
        let violations = run(&params(serve("lossy", Some("13")))).unwrap();
        assert!(violations >= 1, "{violations}");
    }
}
