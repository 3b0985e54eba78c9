//! Watches (initial event, subtree, removal, relative paths, permissions, depth, special
//! paths) and domain lifecycle (introduce, release, shutdown, death, targets, features).
// Payloads are NUL-separated strings: in Rust `\0` followed by a digit is always NUL then
// the digit (there are no octal escapes), which is exactly what the wire format needs.
#![allow(clippy::octal_escapes)]
mod common;
use common::*;
use xenstore_protocol::{Errno, MessageType as T};
use xenstore_store::{DomainState, Effect};

fn ev(connection: u32, path: &str, token: &str) -> (u32, String, String) {
    (connection, String::from(path), String::from(token))
}

fn guests() -> Harness {
    let mut h = Harness::new(3);
    for domid in 1..=3 {
        let home = format!("/local/domain/{domid}");
        h.ok(SOCKET, 0, T::Mkdir, &nul(&home));
        h.ok(
            SOCKET,
            0,
            T::SetPerms,
            format!("{home}\0n{domid}\0").as_bytes(),
        );
    }
    h.take_events();
    h
}

#[test]
fn initial_event_and_subtree_matching() {
    let mut h = guests();
    h.ok(SOCKET, 0, T::Watch, b"/local\0all\0");
    h.ok(1, 0, T::Watch, b"device\0rel\0");
    assert_eq!(
        h.take_events(),
        vec![ev(SOCKET, "/local", "all"), ev(1, "device", "rel")]
    );
    h.write(1, 0, "device/vif/0", "x").unwrap();
    assert_eq!(
        h.take_events(),
        vec![
            ev(SOCKET, "/local/domain/1/device/vif/0", "all"),
            ev(1, "device/vif/0", "rel"),
        ]
    );
    // not a component boundary
    h.write(1, 0, "devices", "x").unwrap();
    assert_eq!(
        h.take_events(),
        vec![ev(SOCKET, "/local/domain/1/devices", "all")]
    );
    // MKDIR of an existing node fires nothing
    h.ok(1, 0, T::Mkdir, b"devices\0");
    assert!(h.take_events().is_empty());
}

#[test]
fn removal_fires_for_descendants_and_watches_below() {
    let mut h = guests();
    h.write(1, 0, "a/b/c", "x").unwrap();
    h.ok(1, 0, T::Watch, b"a/b/c\0below\0");
    h.ok(1, 0, T::Watch, b"a/b/zz\0missing\0");
    h.ok(SOCKET, 0, T::Watch, b"/local/domain/1/a\0root\0");
    h.take_events();
    h.ok(1, 0, T::Rm, b"a\0");
    let events = h.take_events();
    assert!(events.contains(&ev(1, "a/b/c", "below")), "{events:?}");
    assert!(events.contains(&ev(SOCKET, "/local/domain/1/a", "root")));
    // descendants match exact watches only (C MATCH_EXACT), the root subtree watches
    assert!(!events.contains(&ev(SOCKET, "/local/domain/1/a/b/c", "root")));
    assert!(!events.iter().any(|event| event.2 == "missing"));
}

#[test]
fn events_only_for_readable_nodes() {
    let mut h = guests();
    h.ok(2, 0, T::Watch, b"/local/domain/1\0spy\0");
    h.take_events();
    h.write(1, 0, "secret", "x").unwrap();
    assert!(h.take_events().is_empty(), "dom2 cannot read dom1's nodes");
    // readable node → event; the old permissions count on SET_PERMS
    h.ok(1, 0, T::SetPerms, b"/local/domain/1/secret\0n1\0r2\0");
    assert_eq!(
        h.take_events(),
        vec![ev(2, "/local/domain/1/secret", "spy")]
    );
    h.ok(1, 0, T::SetPerms, b"/local/domain/1/secret\0n1\0");
    assert_eq!(
        h.take_events(),
        vec![ev(2, "/local/domain/1/secret", "spy")],
        "old permissions still allowed reading"
    );
    h.write(1, 0, "secret", "y").unwrap();
    assert!(h.take_events().is_empty());
}

#[test]
fn depth_argument() {
    let mut h = guests();
    h.ok(SOCKET, 0, T::Watch, b"/local/domain/1\0d1\01\0");
    h.ok(SOCKET, 0, T::Watch, b"/local/domain/1\0d0\00\0");
    h.take_events();
    h.write(1, 0, "x", "1").unwrap();
    h.write(1, 0, "x/y", "1").unwrap();
    h.write(1, 0, "", "1").unwrap_err();
    h.ok(SOCKET, 0, T::Write, b"/local/domain/1\0v");
    assert_eq!(
        h.take_events(),
        vec![
            ev(SOCKET, "/local/domain/1/x", "d1"),
            ev(SOCKET, "/local/domain/1", "d1"),
            ev(SOCKET, "/local/domain/1", "d0"),
        ]
    );
}

#[test]
fn unwatch_reset_and_quota_release() {
    let mut h = guests();
    h.ok(1, 0, T::Watch, b"/local/domain/1\0t\0");
    h.ok(1, 0, T::Unwatch, b"/local/domain/1\0t\0");
    assert_eq!(
        h.send(1, 0, T::Unwatch, b"/local/domain/1\0t\0"),
        Err(Errno::ENOENT)
    );
    h.ok(1, 0, T::Watch, b"/local/domain/1\0t\0");
    let tx = h.start(1);
    h.ok(1, 0, T::ResetWatches, b"\0");
    assert_eq!(
        h.read(1, tx, "name"),
        Err(Errno::ENOENT),
        "transaction dropped"
    );
    h.take_events();
    h.write(1, 0, "x", "1").unwrap();
    assert!(h.take_events().is_empty(), "watch dropped");
}

#[test]
fn special_watches_and_domain_lifecycle() {
    let mut h = guests();
    h.ok(SOCKET, 0, T::Watch, b"@introduceDomain\0intro\0");
    h.ok(SOCKET, 0, T::Watch, b"@releaseDomain\0rel\0");
    h.ok(SOCKET, 0, T::Watch, b"@releaseDomain\0rel-depth\01\0");
    h.ok(SOCKET, 0, T::Watch, b"@releaseDomain/5\0rel5\0");
    h.ok(2, 0, T::Watch, b"@introduceDomain\0guest\0"); // not readable for guests
    h.take_events();
    h.introduce(5);
    assert_eq!(
        h.take_events(),
        vec![ev(SOCKET, "@introduceDomain", "intro")]
    );
    // dom5 owns a node, dom1's node names dom5 in its ACL
    h.ok(SOCKET, 0, T::Mkdir, b"/local/domain/5\0");
    h.ok(SOCKET, 0, T::SetPerms, b"/local/domain/5\0n5\0");
    h.ok(SOCKET, 0, T::Write, b"/local/domain/5/data\0x");
    h.ok(SOCKET, 0, T::Write, b"/shared\0x");
    h.ok(SOCKET, 0, T::SetPerms, b"/shared\0n0\0r5\0r1\0");
    h.ok(5, 0, T::Watch, b"/local/domain/5\0own\0");
    h.take_events();
    // shutdown: depth watchers and the exact watcher, then one plain event
    let outcome = h.store.domain_states(&[DomainState {
        domid: xenstore_protocol::Domid(5),
        shutdown: true,
        dead: false,
    }]);
    let events: Vec<_> = outcome
        .events
        .iter()
        .map(|e| {
            (
                e.connection.0,
                e.path.clone(),
                String::from_utf8_lossy(&e.token).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ev(SOCKET, "@releaseDomain/5", "rel-depth"),
            ev(SOCKET, "@releaseDomain/5", "rel5"),
            ev(SOCKET, "@releaseDomain", "rel"),
        ]
    );
    // reported once until RESUME
    let again = h.store.domain_states(&[DomainState {
        domid: xenstore_protocol::Domid(5),
        shutdown: true,
        dead: false,
    }]);
    assert!(again.events.is_empty());
    h.ok(SOCKET, 0, T::Resume, b"5\0");
    // RELEASE: nodes owned by dom5 go, its ACL entries go, @releaseDomain fires
    h.ok(SOCKET, 0, T::Release, b"5\0");
    let effects = h.last.as_ref().unwrap().effects.clone();
    assert!(matches!(effects[0], Effect::ReleaseDomain { .. }));
    assert_eq!(h.read(SOCKET, 0, "/local/domain/5"), Err(Errno::ENOENT));
    assert_eq!(
        h.ok(SOCKET, 0, T::GetPerms, b"/shared\0"),
        b"n0\0r1\0".to_vec()
    );
    let events = h.take_events();
    assert!(
        events.contains(&ev(SOCKET, "@releaseDomain", "rel")),
        "{events:?}"
    );
    assert!(events.contains(&ev(SOCKET, "@releaseDomain/5", "rel5")));
    assert!(
        !events.iter().any(|event| event.0 == 5),
        "released domain's watches dropped first"
    );
    assert_eq!(
        h.send(5, 0, T::Read, b"/shared\0"),
        Err(Errno::EINVAL),
        "connection gone"
    );
    assert_eq!(
        h.send(SOCKET, 0, T::IsDomainIntroduced, b"5\0"),
        Ok(b"F\0".to_vec())
    );
    assert!(h.store.check().is_empty());
}

#[test]
fn death_of_a_domain_removes_its_nodes() {
    let mut h = guests();
    h.write(2, 0, "data/x", "1").unwrap();
    h.ok(SOCKET, 0, T::Watch, b"/local/domain\0all\0");
    h.take_events();
    let outcome = h.store.domain_states(&[DomainState {
        domid: xenstore_protocol::Domid(2),
        shutdown: true,
        dead: true,
    }]);
    assert_eq!(h.read(SOCKET, 0, "/local/domain/2"), Err(Errno::ENOENT));
    assert!(
        outcome
            .events
            .iter()
            .any(|event| event.path == "/local/domain/2")
    );
    assert!(!outcome.changes.is_empty());
    assert!(
        outcome
            .effects
            .iter()
            .any(|effect| matches!(effect, Effect::ReleaseDomain { .. }))
    );
}

#[test]
fn set_target_grants_the_targets_access() {
    let mut h = guests();
    h.write(1, 0, "private", "p").unwrap();
    assert_eq!(h.read(3, 0, "/local/domain/1/private"), Err(Errno::EACCES));
    h.ok(SOCKET, 0, T::SetTarget, b"3\01\0");
    assert_eq!(h.read(3, 0, "/local/domain/1/private"), Ok(b"p".to_vec()));
}

#[test]
fn features_and_domid_any() {
    let mut h = guests();
    assert_eq!(
        h.send(SOCKET, 0, T::GetFeature, b"1\0"),
        Ok(b"14\0".to_vec())
    );
    h.ok(SOCKET, 0, T::SetFeature, b"7\04\0");
    h.introduce(7);
    assert_eq!(h.send(7, 0, T::GetFeature, b""), Ok(b"4\0".to_vec()));
    h.ok(SOCKET, 0, T::Mkdir, b"/local/domain/7\0");
    h.ok(SOCKET, 0, T::SetPerms, b"/local/domain/7\0n7\0");
    // dom7 lacks DOMID_ANY: its `b32757` entry is stored but ignored
    h.write(7, 0, "open", "o").unwrap();
    h.ok(7, 0, T::SetPerms, b"/local/domain/7/open\0n7\0b32757\0");
    assert_eq!(h.read(1, 0, "/local/domain/7/open"), Err(Errno::EACCES));
    // dom1 has the feature
    h.write(1, 0, "open", "o").unwrap();
    h.ok(1, 0, T::SetPerms, b"/local/domain/1/open\0n1\0r32757\0");
    assert_eq!(h.read(2, 0, "/local/domain/1/open"), Ok(b"o".to_vec()));
    // depth argument needs WATCHDEPTH: dom7 has it (4); without it EINVAL from the parser
    h.ok(7, 0, T::Watch, b"open\0t\01\0");
}

#[test]
fn reintroduce_resets_connection() {
    let mut h = guests();
    h.ok(1, 0, T::Watch, b"/local/domain/1\0t\0");
    let tx = h.start(1);
    h.take_events();
    h.introduce(1);
    assert!(
        h.take_events().is_empty(),
        "no @introduceDomain for a re-introduction"
    );
    assert_eq!(h.read(1, tx, "x"), Err(Errno::ENOENT));
    assert!(
        h.store
            .connection(xenstore_store::ConnectionId(1))
            .unwrap()
            .record
            .watches
            .is_empty()
    );
}

#[test]
fn death_with_interleaved_sibling_names() {
    // `/s/a-b` sorts between `/s/a` and `/s/a/c`: removal must cope.
    let mut h = guests();
    h.ok(SOCKET, 0, T::Mkdir, b"/s\0");
    h.ok(SOCKET, 0, T::SetPerms, b"/s\0b0\0");
    h.write(2, 0, "/s/a/c", "1").unwrap();
    h.write(2, 0, "/s/a-b", "1").unwrap();
    h.write(1, 0, "/s/a-c", "1").unwrap();
    h.ok(SOCKET, 0, T::SetPerms, b"/s/a-c\0n1\0r2\0");
    h.store.domain_states(&[DomainState {
        domid: xenstore_protocol::Domid(2),
        shutdown: false,
        dead: true,
    }]);
    let listing = h.ok(SOCKET, 0, T::Directory, b"/s\0");
    assert_eq!(strings(&listing), vec!["a-c"]);
    assert_eq!(h.ok(SOCKET, 0, T::GetPerms, b"/s/a-c\0"), b"n1\0".to_vec());
    assert!(h.store.check().is_empty());
    assert_eq!(
        h.store.quota_usage(xenstore_protocol::Domid(2)).current[0],
        0
    );
}
