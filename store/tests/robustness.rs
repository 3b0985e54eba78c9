//! No input from a peer may panic the store or break its invariants: random message types and
//! payloads (built from path characters, digits, NULs and permission letters) from privileged
//! and unprivileged connections, with random transaction ids, interleaved with domain-state
//! notifications. After every step the tree passes `check()`; at the end the image rebuilds.
// Payloads are NUL-separated strings: in Rust `\0` followed by a digit is always NUL then
// the digit (there are no octal escapes), which is exactly what the wire format needs.
#![allow(clippy::octal_escapes)]
mod common;
use common::*;
use proptest::prelude::*;
use xenstore_protocol::{Domid, MessageType};
use xenstore_store::{DomainState, Store};

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop::sample::select(b"/\0\0\0abx12305-_@lrwbnTF".to_vec());
    prop_oneof![
        prop::collection::vec(byte, 0..24),
        prop::sample::select(vec![
            b"/a\0".to_vec(),
            b"/a/b\0v".to_vec(),
            b"a\0".to_vec(),
            b"/a\0n1\0r2\0".to_vec(),
            b"/a\0tok\0".to_vec(),
            b"/a\0tok\01\0".to_vec(),
            b"1\0".to_vec(),
            b"2\01\0".to_vec(),
            b"T\0".to_vec(),
            b"\0".to_vec(),
            b"/\00\0".to_vec(),
            b"@releaseDomain\0t\0".to_vec(),
        ]),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Message(u32, u32, u32, Vec<u8>),
    State(u16, bool, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        9 => (prop::sample::select(vec![0u32, 1, 2, 100]), 0u32..28, 0u32..3, payload())
            .prop_map(|(c, t, tx, p)| Step::Message(c, t, tx, p)),
        1 => (1u16..3, any::<bool>(), prop::bool::weighted(0.1)).prop_map(|(d, s, x)| Step::State(d, s, x)),
    ]
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(500), ..ProptestConfig::default() })]

    #[test]
    fn random_requests_never_panic(steps in prop::collection::vec(step(), 1..60)) {
        let mut h = Harness::new(2);
        h.ok(SOCKET, 0, MessageType::Mkdir, b"/local/domain/1\0");
        h.ok(SOCKET, 0, MessageType::SetPerms, b"/local/domain/1\0n1\0");
        for step in &steps {
            match step {
                Step::Message(connection, kind, tx, payload) => {
                    let kind = MessageType::from_u32(*kind);
                    if kind == MessageType::Introduce {
                        continue; // the harness plays the platform for INTRODUCE
                    }
                    let _ = h.send(*connection, *tx, kind, payload);
                }
                Step::State(domid, shutdown, dead) => {
                    h.store.domain_states(&[DomainState { domid: Domid(*domid), shutdown: *shutdown, dead: *dead }]);
                }
            }
            prop_assert!(h.store.check().is_empty(), "{:?}", h.store.check());
        }
        let rebuilt = Store::rebuild(h.store.export()).unwrap();
        prop_assert_eq!(rebuilt, h.store.without_transactions());
    }
}
