//! Model-based differential test: a small, obviously-correct reference model (a `BTreeMap`
//! of nodes, serial semantics, no transaction machinery) against the engine, over random
//! multi-connection sequences of node operations, permissions, quotas, watches and
//! transactions.
//!
//! Transactions are checked with a serial-execution oracle:
//! - soundness: when the engine commits, re-executing the transaction's requests one by one
//!   on the model *at the commit point* must give exactly the replies the engine gave inside
//!   the transaction, and the same watch events; the resulting trees must be equal — so every
//!   accepted commit is serializable;
//! - precision: when the engine answers `EAGAIN`, C xenstored's rule must also have failed:
//!   some node C would have accessed (an over-approximation: each operation's path, its
//!   parent and every ancestor) has a different C-style generation than at first access.
// Payloads are NUL-separated strings: in Rust `\0` followed by a digit is always NUL then
// the digit (there are no octal escapes), which is exactly what the wire format needs.
#![allow(clippy::octal_escapes)]
mod common;
use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use xenstore_protocol::{Errno, MessageType as T};

const PATHS: &[&str] = &[
    "/a",
    "/a/b",
    "/a/b/c",
    "/a/d",
    "/e",
    "/local/domain/1/x",
    "/local/domain/1/x/y",
    "/local/domain/2/z",
    "/local/domain/2/z/w",
    "/local/domain/2/q",
    "x",
    "x/y",
];

/// The absolute path a connection means by `PATHS[index]` (relative paths resolve against
/// `/local/domain/<domid>`; sockets use the store domain's home, dom0's).
fn absolute(connection: u32, index: usize) -> String {
    let path = PATHS[index];
    if path.starts_with('/') {
        return path.to_string();
    }
    let domid = match connection {
        0 | 3 => 0,
        domid => domid,
    };
    format!("/local/domain/{domid}/{path}")
}
const PERMS: &[&str] = &[
    "n0", "b0", "r0", "n1", "n1\0r2", "n2", "b1", "n2\0w1", "n1\0b2",
];
/// Connections: 0 and 3 are privileged sockets, 1 and 2 are dom1 and dom2 (dom2 has a node
/// quota of 5 and never uses transactions, so quota checks stay serial).
const CONNECTIONS: &[u32] = &[0, 1, 2, 3];
const TX_CONNECTIONS: &[u32] = &[0, 1, 3];
const DOM2_NODE_QUOTA: u32 = 5;

#[derive(Clone, Debug)]
enum NodeOp {
    Read(usize),
    Directory(usize),
    GetPerms(usize),
    Write(usize, u8),
    Mkdir(usize),
    Rm(usize),
    SetPerms(usize, usize),
}

#[derive(Clone, Debug)]
enum Action {
    Node {
        connection: u32,
        in_tx: bool,
        op: NodeOp,
    },
    Start(u32),
    End(u32, bool),
    Watch(u32, usize, u8),
    Unwatch(u32, usize, u8),
}

fn node_op() -> impl Strategy<Value = NodeOp> {
    let path = 0..PATHS.len();
    prop_oneof![
        3 => path.clone().prop_map(NodeOp::Read),
        1 => path.clone().prop_map(NodeOp::Directory),
        1 => path.clone().prop_map(NodeOp::GetPerms),
        4 => (path.clone(), 0u8..3).prop_map(|(p, v)| NodeOp::Write(p, v)),
        1 => path.clone().prop_map(NodeOp::Mkdir),
        2 => path.clone().prop_map(NodeOp::Rm),
        1 => (path, 0..PERMS.len()).prop_map(|(p, s)| NodeOp::SetPerms(p, s)),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (prop::sample::select(CONNECTIONS), any::<bool>(), node_op()).prop_map(
            |(connection, in_tx, op)| Action::Node { connection, in_tx: in_tx && connection != 2, op }
        ),
        1 => prop::sample::select(TX_CONNECTIONS).prop_map(Action::Start),
        1 => (prop::sample::select(TX_CONNECTIONS), prop::bool::weighted(0.8)).prop_map(|(c, t)| Action::End(c, t)),
        1 => (prop::sample::select(CONNECTIONS), 0..PATHS.len(), 0u8..2).prop_map(|(c, p, t)| Action::Watch(c, p, t)),
        1 => (prop::sample::select(CONNECTIONS), 0..PATHS.len(), 0u8..2).prop_map(|(c, p, t)| Action::Unwatch(c, p, t)),
    ]
}

// ------------------------------------------------------------------ the reference model

#[derive(Clone, Debug, PartialEq)]
struct MNode {
    value: Vec<u8>,
    /// (letter, domid), owner first.
    perms: Vec<(u8, u16)>,
    /// C-style generation: bumped on any change of value, perms or child list.
    generation: u64,
}

type Event = (u32, String, String);

#[derive(Clone, Debug)]
struct Model {
    nodes: BTreeMap<String, MNode>,
    counter: u64,
    /// (connection, absolute path, token, bytes stripped from reported paths)
    watches: Vec<(u32, String, String, usize)>,
}

#[derive(Clone, Copy)]
struct Who {
    domid: u16,
    privileged: bool,
}

fn who(connection: u32) -> Who {
    match connection {
        0 | 3 => Who {
            domid: 0,
            privileged: true,
        },
        domid => Who {
            domid: domid as u16,
            privileged: false,
        },
    }
}

fn parent_of(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let index = path.rfind('/').unwrap();
    Some(if index == 0 {
        String::from("/")
    } else {
        path[..index].to_string()
    })
}

fn is_below_or_same(ancestor: &str, path: &str) -> bool {
    ancestor == path
        || ancestor == "/"
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

/// (read, write, owner)
fn rights(who: Who, perms: &[(u8, u16)]) -> (bool, bool, bool) {
    if who.privileged || perms[0].1 == who.domid {
        return (true, true, true);
    }
    let letter = perms[1..]
        .iter()
        .find(|(_, domid)| *domid == who.domid)
        .map(|(letter, _)| *letter)
        .unwrap_or(perms[0].0);
    (
        letter == b'r' || letter == b'b',
        letter == b'w' || letter == b'b',
        false,
    )
}

fn parse_perms(text: &str) -> Vec<(u8, u16)> {
    text.split('\0')
        .map(|entry| (entry.as_bytes()[0], entry[1..].parse().unwrap()))
        .collect()
}

impl Model {
    fn from_store(h: &Harness) -> Model {
        let nodes = h
            .store
            .export()
            .nodes
            .into_iter()
            .filter(|(path, _)| !path.starts_with('@'))
            .map(|(path, record)| {
                let perms = record
                    .permissions
                    .entries()
                    .iter()
                    .map(|entry| (entry.access.letter() as u8, entry.domid.0))
                    .collect();
                (
                    path,
                    MNode {
                        value: record.value,
                        perms,
                        generation: 0,
                    },
                )
            })
            .collect();
        Model {
            nodes,
            counter: 0,
            watches: Vec::new(),
        }
    }

    fn bump(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn owned(&self, domid: u16) -> u32 {
        self.nodes
            .values()
            .filter(|node| node.perms[0].1 == domid)
            .count() as u32
    }

    fn errno_from_parents(&self, who: Who, path: &str, need_write: bool) -> Errno {
        let mut current = path.to_string();
        while let Some(parent) = parent_of(&current) {
            if let Some(node) = self.nodes.get(&parent) {
                let (read, write, _) = rights(who, &node.perms);
                return if (need_write && write) || (!need_write && read) {
                    Errno::ENOENT
                } else {
                    Errno::EACCES
                };
            }
            current = parent;
        }
        Errno::EACCES
    }

    fn fire(&self, path: &str, exact: bool, old: Option<&[(u8, u16)]>, events: &mut Vec<Event>) {
        let node_perms = self.nodes.get(path).map(|node| node.perms.clone());
        let parent_perms =
            parent_of(path).and_then(|p| self.nodes.get(&p).map(|n| n.perms.clone()));
        for (connection, watched, token, prefix) in &self.watches {
            let matched = if exact {
                watched == path
            } else {
                is_below_or_same(watched, path)
            };
            if !matched {
                continue;
            }
            let w = who(*connection);
            let readable =
                |perms: &Option<Vec<(u8, u16)>>| perms.as_ref().is_some_and(|p| rights(w, p).0);
            let allowed = w.privileged
                || old.is_some_and(|old| rights(w, old).0)
                || (node_perms.is_some() && (readable(&node_perms) || readable(&parent_perms)));
            if allowed {
                events.push((*connection, path[*prefix..].to_string(), token.clone()));
            }
        }
    }

    fn create(&mut self, who: Who, path: &str, value: &[u8]) -> Result<(), Errno> {
        let mut missing = vec![path.to_string()];
        let mut current = path.to_string();
        let inherited = loop {
            let parent = parent_of(&current).unwrap();
            if let Some(node) = self.nodes.get(&parent) {
                break node.perms.clone();
            }
            missing.push(parent.clone());
            current = parent;
        };
        if !who.privileged
            && who.domid == 2
            && self.owned(2) + missing.len() as u32 >= DOM2_NODE_QUOTA
        {
            return Err(Errno::ENOSPC);
        }
        let mut perms = inherited;
        if !who.privileged {
            perms[0].1 = who.domid;
        }
        for (index, node_path) in missing.iter().enumerate().rev() {
            let generation = self.bump();
            self.nodes.insert(
                node_path.clone(),
                MNode {
                    value: if index == 0 {
                        value.to_vec()
                    } else {
                        Vec::new()
                    },
                    perms: perms.clone(),
                    generation,
                },
            );
            let parent = parent_of(node_path).unwrap();
            let generation = self.bump();
            self.nodes.get_mut(&parent).unwrap().generation = generation;
        }
        Ok(())
    }

    /// Executes one node operation serially; returns the reply and the events.
    fn execute(&mut self, connection: u32, op: &NodeOp) -> (Answer, Vec<Event>) {
        let resolve = |index: usize| absolute(connection, index);
        let who = who(connection);
        let mut events = Vec::new();
        let ok = || Ok(b"OK\0".to_vec());
        let answer = match op {
            NodeOp::Read(p) | NodeOp::Directory(p) | NodeOp::GetPerms(p) => {
                let path = &resolve(*p);
                match self.nodes.get(path) {
                    None => Err(self.errno_from_parents(who, path, false)),
                    Some(node) if !rights(who, &node.perms).0 => Err(Errno::EACCES),
                    Some(node) => Ok(match op {
                        NodeOp::Read(_) => node.value.clone(),
                        NodeOp::GetPerms(_) => {
                            let mut out = Vec::new();
                            for (letter, domid) in &node.perms {
                                out.extend_from_slice(
                                    format!("{}{domid}\0", *letter as char).as_bytes(),
                                );
                            }
                            out
                        }
                        _ => {
                            let prefix = if path == "/" {
                                "/".to_string()
                            } else {
                                format!("{path}/")
                            };
                            let mut out = Vec::new();
                            for key in self.nodes.keys() {
                                if let Some(rest) = key.strip_prefix(&prefix) {
                                    if !rest.is_empty() && !rest.contains('/') {
                                        out.extend_from_slice(rest.as_bytes());
                                        out.push(0);
                                    }
                                }
                            }
                            out
                        }
                    }),
                }
            }
            NodeOp::Write(p, _) | NodeOp::Mkdir(p) => {
                let path = &resolve(*p);
                let value = match op {
                    NodeOp::Write(_, v) => vec![b'v', b'0' + v],
                    _ => Vec::new(),
                };
                let is_write = matches!(op, NodeOp::Write(..));
                match self.nodes.get(path) {
                    Some(node) if !rights(who, &node.perms).1 => Err(Errno::EACCES),
                    Some(_) => {
                        if is_write {
                            let generation = self.bump();
                            let node = self.nodes.get_mut(path).unwrap();
                            node.value = value;
                            node.generation = generation;
                            self.fire(path, false, None, &mut events);
                        }
                        ok()
                    }
                    None => match self.errno_from_parents(who, path, true) {
                        Errno::ENOENT => match self.create(who, path, &value) {
                            Ok(()) => {
                                self.fire(path, false, None, &mut events);
                                ok()
                            }
                            Err(errno) => Err(errno),
                        },
                        errno => Err(errno),
                    },
                }
            }
            NodeOp::Rm(p) => {
                let path = &resolve(*p);
                match self.nodes.get(path) {
                    Some(node) if !rights(who, &node.perms).1 => Err(Errno::EACCES),
                    Some(_) => {
                        let doomed: Vec<String> = self
                            .nodes
                            .keys()
                            .filter(|key| is_below_or_same(path, key))
                            .cloned()
                            .collect();
                        for (index, key) in doomed.iter().enumerate() {
                            self.fire(key, index != 0, None, &mut events);
                        }
                        for key in &doomed {
                            self.nodes.remove(key);
                        }
                        let generation = self.bump();
                        self.nodes
                            .get_mut(&parent_of(path).unwrap())
                            .unwrap()
                            .generation = generation;
                        ok()
                    }
                    None => match self.errno_from_parents(who, path, true) {
                        Errno::ENOENT if self.nodes.contains_key(&parent_of(path).unwrap()) => ok(),
                        errno => Err(errno),
                    },
                }
            }
            NodeOp::SetPerms(p, s) => {
                let path = &resolve(*p);
                let perms = parse_perms(PERMS[*s]);
                match self.nodes.get(path) {
                    None => Err(self.errno_from_parents(who, path, true)),
                    Some(node) => {
                        let (_, write, owner) = rights(who, &node.perms);
                        if !(write && owner) {
                            Err(Errno::EACCES)
                        } else if !who.privileged && perms[0].1 != node.perms[0].1 {
                            Err(Errno::EPERM)
                        } else {
                            let old = node.perms.clone();
                            let generation = self.bump();
                            let node = self.nodes.get_mut(path).unwrap();
                            node.perms = perms;
                            node.generation = generation;
                            self.fire(path, false, Some(&old), &mut events);
                            ok()
                        }
                    }
                }
            }
        };
        (answer, events)
    }

    /// Paths C xenstored would access for `op` (over-approximated).
    fn c_accesses(&self, connection: u32, op: &NodeOp) -> Vec<String> {
        let index = match op {
            NodeOp::Read(p)
            | NodeOp::Directory(p)
            | NodeOp::GetPerms(p)
            | NodeOp::Write(p, _)
            | NodeOp::Mkdir(p)
            | NodeOp::Rm(p)
            | NodeOp::SetPerms(p, _) => *p,
        };
        let path = absolute(connection, index);
        let mut out = vec![path.clone()];
        let mut current = path.clone();
        while let Some(parent) = parent_of(&current) {
            out.push(parent.clone());
            current = parent;
        }
        if matches!(op, NodeOp::Rm(_)) {
            out.extend(
                self.nodes
                    .keys()
                    .filter(|key| is_below_or_same(&path, key))
                    .cloned(),
            );
        }
        out
    }
}

fn op_request(op: &NodeOp) -> (T, Vec<u8>) {
    match op {
        NodeOp::Read(p) => (T::Read, nul(PATHS[*p])),
        NodeOp::Directory(p) => (T::Directory, nul(PATHS[*p])),
        NodeOp::GetPerms(p) => (T::GetPerms, nul(PATHS[*p])),
        NodeOp::Write(p, v) => {
            let mut payload = nul(PATHS[*p]);
            payload.extend_from_slice(&[b'v', b'0' + v]);
            (T::Write, payload)
        }
        NodeOp::Mkdir(p) => (T::Mkdir, nul(PATHS[*p])),
        NodeOp::Rm(p) => (T::Rm, nul(PATHS[*p])),
        NodeOp::SetPerms(p, s) => {
            let mut payload = nul(PATHS[*p]);
            payload.extend_from_slice(&nul(PERMS[*s]));
            (T::SetPerms, payload)
        }
    }
}

struct OpenTx {
    id: u32,
    ops: Vec<(NodeOp, Answer)>,
    /// C-style generation (None: absent) of each accessed path at first access.
    first: BTreeMap<String, Option<u64>>,
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort();
    events
}

/// C drops an event identical to one still queued: within one outcome, keep the first.
fn unique(events: Vec<Event>) -> Vec<Event> {
    let mut seen = std::collections::BTreeSet::new();
    events
        .into_iter()
        .filter(|event| seen.insert(event.clone()))
        .collect()
}

fn setup() -> Harness {
    let mut h = Harness::new(2);
    h.store.add_connection(
        xenstore_store::ConnectionId(3),
        xenstore_store::ConnectionKind::Socket,
        xenstore_protocol::Domid(0),
    );
    for domid in 1..=2 {
        let home = format!("/local/domain/{domid}");
        h.ok(SOCKET, 0, T::Mkdir, &nul(&home));
        h.ok(
            SOCKET,
            0,
            T::SetPerms,
            format!("{home}\0n{domid}\0").as_bytes(),
        );
    }
    h.ok(
        SOCKET,
        0,
        T::SetQuota,
        format!("2\0nodes\0{DOM2_NODE_QUOTA}\0").as_bytes(),
    );
    h.take_events();
    h
}

/// Path → (value, permissions).
type Flat = BTreeMap<String, (Vec<u8>, Vec<(u8, u16)>)>;

fn compare_trees(h: &Harness, model: &Model, context: &str) {
    let engine: Flat = h
        .store
        .export()
        .nodes
        .into_iter()
        .filter(|(path, _)| !path.starts_with('@'))
        .map(|(path, record)| {
            let perms = record
                .permissions
                .entries()
                .iter()
                .map(|entry| (entry.access.letter() as u8, entry.domid.0))
                .collect();
            (path, (record.value, perms))
        })
        .collect();
    let expected: Flat = model
        .nodes
        .iter()
        .map(|(path, node)| (path.clone(), (node.value.clone(), node.perms.clone())))
        .collect();
    assert_eq!(engine, expected, "{context}");
}

fn run(actions: &[Action]) -> (usize, usize) {
    let mut h = setup();
    let mut model = Model::from_store(&h);
    let mut open: BTreeMap<u32, OpenTx> = BTreeMap::new();
    let (mut commits, mut conflicts) = (0, 0);
    for (step, action) in actions.iter().enumerate() {
        let context = format!("step {step}: {action:?}");
        match action {
            Action::Node {
                connection,
                in_tx,
                op,
            } => {
                let (kind, payload) = op_request(op);
                if let (true, Some(tx)) = (*in_tx, open.get_mut(connection)) {
                    for path in model.c_accesses(*connection, op) {
                        let generation = model.nodes.get(&path).map(|node| node.generation);
                        tx.first.entry(path).or_insert(generation);
                    }
                    let answer = h.send(*connection, tx.id, kind, &payload);
                    assert!(
                        h.take_events().is_empty(),
                        "{context}: no events inside a transaction"
                    );
                    assert_ne!(answer, Err(Errno::ENOSPC), "{context}");
                    tx.ops.push((op.clone(), answer));
                } else {
                    let answer = h.send(*connection, 0, kind, &payload);
                    let (expected, events) = model.execute(*connection, op);
                    assert_eq!(answer, expected, "{context}");
                    assert_eq!(
                        sorted(h.take_events()),
                        sorted(unique(events)),
                        "{context}: events"
                    );
                }
            }
            Action::Start(connection) => {
                if !open.contains_key(connection) {
                    let id = h.start(*connection);
                    open.insert(
                        *connection,
                        OpenTx {
                            id,
                            ops: Vec::new(),
                            first: BTreeMap::new(),
                        },
                    );
                }
            }
            Action::End(connection, commit) => {
                let Some(tx) = open.remove(connection) else {
                    continue;
                };
                let answer = h.end(*connection, tx.id, *commit);
                let engine_events = h.take_events();
                if !*commit {
                    assert_eq!(answer, Ok(b"OK\0".to_vec()), "{context}");
                    assert!(engine_events.is_empty());
                } else if answer == Ok(b"OK\0".to_vec()) {
                    commits += 1;
                    // Serial execution at the commit point must reproduce every reply.
                    let mut events = Vec::new();
                    for (op, engine_answer) in &tx.ops {
                        let (expected, op_events) = model.execute(*connection, op);
                        assert_eq!(
                            engine_answer, &expected,
                            "{context}: not serializable at {op:?}"
                        );
                        events.extend(op_events);
                    }
                    assert_eq!(
                        sorted(engine_events),
                        sorted(unique(events)),
                        "{context}: commit events"
                    );
                } else {
                    assert_eq!(answer, Err(Errno::EAGAIN), "{context}");
                    conflicts += 1;
                    let c_conflicts = tx.first.iter().any(|(path, generation)| {
                        model.nodes.get(path).map(|node| node.generation) != *generation
                    });
                    assert!(
                        c_conflicts,
                        "{context}: EAGAIN where C xenstored would commit"
                    );
                }
            }
            Action::Watch(connection, p, token) | Action::Unwatch(connection, p, token) => {
                let given = PATHS[*p];
                let path = absolute(*connection, *p);
                let prefix = if given.starts_with('/') {
                    0
                } else {
                    path.len() - given.len()
                };
                let token = format!("t{token}");
                let mut payload = nul(given);
                payload.extend_from_slice(&nul(&token));
                let watch = matches!(action, Action::Watch(..));
                let answer = h.send(
                    *connection,
                    0,
                    if watch { T::Watch } else { T::Unwatch },
                    &payload,
                );
                let exists = model
                    .watches
                    .iter()
                    .position(|w| w.0 == *connection && w.1 == path && w.2 == token);
                let (expected, events) = match (watch, exists) {
                    (true, Some(_)) => (Err(Errno::EEXIST), vec![]),
                    (true, None) => {
                        model
                            .watches
                            .push((*connection, path.clone(), token.clone(), prefix));
                        (
                            Ok(b"OK\0".to_vec()),
                            vec![(*connection, given.to_string(), token.clone())],
                        )
                    }
                    (false, Some(index)) => {
                        model.watches.remove(index);
                        (Ok(b"OK\0".to_vec()), vec![])
                    }
                    (false, None) => (Err(Errno::ENOENT), vec![]),
                };
                assert_eq!(answer, expected, "{context}");
                assert_eq!(h.take_events(), events, "{context}");
            }
        }
        compare_trees(&h, &model, &context);
        assert!(
            h.store.check().is_empty(),
            "{context}: {:?}",
            h.store.check()
        );
    }
    (commits, conflicts)
}

/// Case count: `PROPTEST_CASES` when set (long runs), else the given default.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(actions in prop::collection::vec(action(), 1..80)) {
        run(&actions);
    }
}

#[test]
fn transactions_both_commit_and_conflict_in_generated_runs() {
    // Sanity of the generator: over a fixed seed range, commits and conflicts both happen.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let (mut commits, mut conflicts) = (0, 0);
    for _ in 0..200 {
        let actions = prop::collection::vec(action(), 40..80)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let (c, k) = run(&actions);
        commits += c;
        conflicts += k;
    }
    println!("commits {commits} conflicts {conflicts}");
    assert!(commits > 50, "commits {commits}");
    assert!(conflicts > 5, "conflicts {conflicts}");
}
