//! Export / rebuild / change sets: for random request sequences,
//! - applying every change set, in order, to the image taken at the start gives exactly the
//!   final image (change sets are complete);
//! - `Store::rebuild(store.export()) == store` (modulo open transactions, which are never
//!   persisted) and the image survives a postcard round trip.
// Payloads are NUL-separated strings: in Rust `\0` followed by a digit is always NUL then
// the digit (there are no octal escapes), which is exactly what the wire format needs.
#![allow(clippy::octal_escapes)]
mod common;
use common::*;
use proptest::prelude::*;
use xenstore_protocol::{Domid, MessageType as T};
use xenstore_store::{ChangeSet, DomainState, Store, StoreImage};

#[derive(Clone, Debug)]
enum Step {
    Request(u32, bool, T, Vec<u8>),
    Start(u32),
    End(u32, bool),
    Introduce(u16),
    DomainState(u16, bool, bool),
    Disconnect(u32),
    Connect(u32),
}

fn request() -> impl Strategy<Value = (T, Vec<u8>)> {
    let path = prop::sample::select(vec![
        "/a",
        "/a/b",
        "/a/b/c",
        "x",
        "x/y",
        "/local/domain/1/x",
        "/local/domain/4/k",
        "@releaseDomain",
    ]);
    prop_oneof![
        (path.clone(), "[a-c]{0,3}").prop_map(|(p, v)| {
            let mut payload = nul(p);
            payload.extend_from_slice(v.as_bytes());
            (T::Write, payload)
        }),
        path.clone().prop_map(|p| (T::Mkdir, nul(p))),
        path.clone().prop_map(|p| (T::Rm, nul(p))),
        path.clone().prop_map(|p| (T::Read, nul(p))),
        (
            path.clone(),
            prop::sample::select(vec!["n0", "b0", "n1\0r4", "n4", "r4\0b1"])
        )
            .prop_map(|(p, s)| {
                let mut payload = nul(p);
                payload.extend_from_slice(&nul(s));
                (T::SetPerms, payload)
            }),
        (path.clone(), 0u8..2).prop_map(|(p, t)| {
            let mut payload = nul(p);
            payload.extend_from_slice(&nul(&format!("t{t}")));
            (T::Watch, payload)
        }),
        (path, 0u8..2).prop_map(|(p, t)| {
            let mut payload = nul(p);
            payload.extend_from_slice(&nul(&format!("t{t}")));
            (T::Unwatch, payload)
        }),
        Just((T::ResetWatches, b"\0".to_vec())),
        Just((T::SetQuota, b"4\0nodes\07\0".to_vec())),
        Just((T::SetQuota, b"watches\0100\0".to_vec())),
        Just((T::Control, b"log\0+io\0".to_vec())),
        Just((T::Control, b"log\0on\0".to_vec())),
        Just((T::SetFeature, b"6\06\0".to_vec())),
        Just((T::SetFeature, b"40\016\0".to_vec())),
        Just((T::SetFeature, b"4\02\0".to_vec())),
        Just((T::SetQuota, b"9\0bogus\03\0".to_vec())),
        Just((T::GetQuota, b"9\0nodes\0".to_vec())),
        Just((T::GetFeature, b"9\0".to_vec())),
        Just((T::Control, b"quota\0set\0nodes\0900\0".to_vec())),
        Just((T::Control, b"quota\0max\0-r\0".to_vec())),
        Just((T::SetTarget, b"4\01\0".to_vec())),
        Just((T::Release, b"4\0".to_vec())),
        Just((T::Resume, b"4\0".to_vec())),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let connection = prop::sample::select(vec![0u32, 1, 4, 7]);
    prop_oneof![
        8 => (connection.clone(), any::<bool>(), request()).prop_map(|(c, tx, (t, p))| Step::Request(c, tx, t, p)),
        1 => connection.clone().prop_map(Step::Start),
        1 => (connection, any::<bool>()).prop_map(|(c, commit)| Step::End(c, commit)),
        1 => Just(Step::Introduce(4)),
        1 => prop::sample::select(vec![1u32, 4, 7]).prop_map(Step::Disconnect),
        1 => Just(Step::Connect(7)),
        1 => (prop::sample::select(vec![1u16, 4]), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(d, s, dead)| Step::DomainState(d, s, dead)),
    ]
}

fn run(steps: &[Step]) {
    let mut h = Harness::new(1);
    h.introduce(4);
    let start = h.store.export();
    let mut image: StoreImage = start.clone();
    let mut transactions: std::collections::BTreeMap<u32, u32> = Default::default();
    let record = |image: &mut StoreImage, changes: &ChangeSet| {
        image.apply(changes);
        // change sets serialize too
        let bytes = postcard::to_allocvec(changes).unwrap();
        assert_eq!(&postcard::from_bytes::<ChangeSet>(&bytes).unwrap(), changes);
    };
    for step in steps {
        let mut changes: Vec<ChangeSet> = Vec::new();
        match step {
            Step::Request(connection, in_tx, kind, payload) => {
                let tx = if *in_tx {
                    transactions.get(connection).copied().unwrap_or(0)
                } else {
                    0
                };
                h.last = None;
                let _ = h.send(*connection, tx, *kind, payload);
                if let Some(outcome) = &h.last {
                    changes.push(outcome.changes.clone());
                }
            }
            Step::Start(connection) => {
                if h.store
                    .connection(xenstore_store::ConnectionId(*connection))
                    .is_some()
                    && !transactions.contains_key(connection)
                {
                    h.last = None;
                    if let Ok(reply) = h.send(*connection, 0, T::TransactionStart, b"\0") {
                        let id = String::from_utf8_lossy(&reply[..reply.len() - 1])
                            .parse()
                            .unwrap();
                        transactions.insert(*connection, id);
                    }
                    if let Some(outcome) = &h.last {
                        changes.push(outcome.changes.clone());
                    }
                }
            }
            Step::End(connection, commit) => {
                if let Some(tx) = transactions.remove(connection) {
                    h.last = None;
                    let _ = h.end(*connection, tx, *commit);
                    if let Some(outcome) = &h.last {
                        changes.push(outcome.changes.clone());
                    }
                }
            }
            Step::Introduce(domid) => {
                h.last = None;
                h.introduce(*domid);
                transactions.remove(&u32::from(*domid));
                changes.push(h.last.as_ref().unwrap().changes.clone());
            }
            Step::Disconnect(connection) => {
                transactions.remove(connection);
                changes.push(
                    h.store
                        .remove_connection(xenstore_store::ConnectionId(*connection)),
                );
            }
            Step::Connect(connection) => {
                changes.push(h.store.add_connection(
                    xenstore_store::ConnectionId(*connection),
                    xenstore_store::ConnectionKind::Socket,
                    Domid(0),
                ));
            }
            Step::DomainState(domid, shutdown, dead) => {
                let outcome = h.store.domain_states(&[DomainState {
                    domid: Domid(*domid),
                    shutdown: *shutdown,
                    dead: *dead,
                }]);
                if *dead {
                    transactions.remove(&u32::from(*domid));
                }
                changes.push(outcome.changes);
            }
        }
        for change_set in &changes {
            record(&mut image, change_set);
        }
        // transactions of connections that went away are gone
        transactions.retain(|connection, tx| {
            h.store
                .connection(xenstore_store::ConnectionId(*connection))
                .is_some_and(|c| c.transactions.contains_key(tx))
        });
        let export = h.store.export();
        assert_eq!(image, export, "after {step:?}");
        assert!(h.store.check().is_empty());
    }
    let export = h.store.export();
    let rebuilt = Store::rebuild(export.clone()).unwrap();
    assert_eq!(rebuilt, h.store.without_transactions());
    assert_eq!(rebuilt.export(), export);
    let bytes = postcard::to_allocvec(&export).unwrap();
    let decoded: StoreImage = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(Store::rebuild(decoded).unwrap(), rebuilt);
    let _ = start;
}

/// Case count: `PROPTEST_CASES` when set (long runs), else the given default.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    #[test]
    fn change_sets_rebuild_and_export(steps in prop::collection::vec(step(), 1..60)) {
        run(&steps);
    }
}

#[test]
fn rebuild_equals_without_open_transactions() {
    let mut h = Harness::new(2);
    h.write(SOCKET, 0, "/a/b", "v").unwrap();
    h.ok(1, 0, T::Watch, b"/a\0tok\0");
    assert_eq!(Store::rebuild(h.store.export()).unwrap(), h.store);
    let tx = h.start(1);
    h.write(1, tx, "/local/domain/1/q", "v").unwrap_err();
    assert_ne!(Store::rebuild(h.store.export()).unwrap(), h.store);
    assert_eq!(
        Store::rebuild(h.store.export()).unwrap(),
        h.store.without_transactions()
    );
}

#[test]
fn removing_a_ring_connection_is_recorded() {
    let mut h = Harness::new(2);
    let mut image = h.store.export();
    let changes = h.store.remove_connection(xenstore_store::ConnectionId(1));
    image.apply(&changes);
    assert_eq!(image, h.store.export());
    assert!(Store::rebuild(image).is_ok());
}

#[test]
fn change_set_of_a_deep_creation_is_compact() {
    let mut h = Harness::new(0);
    h.write(SOCKET, 0, "/p/q/r", "v").unwrap();
    let changes = &h.last.as_ref().unwrap().changes.changes;
    let written: Vec<&str> = changes
        .iter()
        .filter_map(|change| match change {
            xenstore_store::Change::NodeWritten { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(written.len(), 4, "{written:?}");
    for path in ["/", "/p", "/p/q", "/p/q/r"] {
        assert!(written.contains(&path), "{path}");
    }
}
