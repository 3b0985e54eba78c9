//! A panic in the store must never take the daemon down with data loss: [`GuardedEngine`]
//! runs every call into the engine under `catch_unwind`.
//!
//! Policy on a caught panic: the request gets `EIO`; the panic message and a state summary
//! (node count, connections, the store's own consistency check) go to the console; the engine
//! is marked poisoned. In mode `crash-resilient` the daemon then performs a controlled warm
//! restart from the log (every acknowledged request is durable, so nothing is lost and the
//! half-applied request vanishes with the poisoned store). In mode `none` there is nothing to
//! recover from, so the daemon keeps serving with the store as it is and reports what the
//! consistency check found.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use xenstore_protocol::Errno;
use xenstore_protocol::Header;
use xenstore_server::platform::RingLocation;
use xenstore_server::{Caller, ConnectionId, Engine, Outcome, ReplyMessage};

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs a panic hook that records the message (with its location) for the console, on
/// top of the default report on stderr.
pub fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(info.to_string());
        }
        default(info);
    }));
}

fn last_panic() -> String {
    LAST_PANIC
        .lock()
        .ok()
        .and_then(|mut last| last.take())
        .unwrap_or_else(|| String::from("(no message)"))
}

/// An engine whose panics are caught (see the module doc).
#[derive(Debug)]
pub struct GuardedEngine<E> {
    inner: E,
    poisoned: Option<String>,
}

impl<E: Engine> GuardedEngine<E> {
    /// Wraps an engine.
    pub fn new(inner: E) -> GuardedEngine<E> {
        GuardedEngine {
            inner,
            poisoned: None,
        }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The panic report, once the engine panicked.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Forgets a panic (mode `none` keeps serving after reporting it).
    pub fn clear_poison(&mut self) -> Option<String> {
        self.poisoned.take()
    }

    fn guard<T>(
        &mut self,
        what: &str,
        call: impl FnOnce(&mut E) -> T,
        fallback: impl FnOnce() -> T,
    ) -> T {
        let inner = &mut self.inner;
        match panic::catch_unwind(AssertUnwindSafe(|| call(inner))) {
            Ok(value) => value,
            Err(_) => {
                let message = last_panic();
                let mut report = format!("engine panicked in {what}: {message}");
                if let Some(store) = self.inner.store() {
                    let problems = panic::catch_unwind(AssertUnwindSafe(|| store.check()))
                        .unwrap_or_else(|_| vec![String::from("check itself panicked")]);
                    report.push_str(&format!(
                        "; state: {} nodes, {} connections, check: {}",
                        store.node_count(),
                        store.connections().count(),
                        if problems.is_empty() {
                            String::from("consistent")
                        } else {
                            problems.join("; ")
                        }
                    ));
                }
                eprintln!("rxenstored: PANIC: {report}");
                self.poisoned.get_or_insert(report);
                fallback()
            }
        }
    }
}

fn failed<C>(changes: C) -> Outcome<C> {
    Outcome {
        reply: Some(ReplyMessage::error(Errno::EIO)),
        events: Vec::new(),
        changes,
        effects: Vec::new(),
    }
}

impl<E: Engine> Engine for GuardedEngine<E> {
    type Changes = E::Changes;

    fn connect(&mut self, caller: &Caller) -> E::Changes {
        self.guard("connect", |engine| engine.connect(caller), E::empty_changes)
    }

    fn introduce(
        &mut self,
        connection: ConnectionId,
        location: &RingLocation,
        local_port: u32,
    ) -> Outcome<E::Changes> {
        self.guard(
            "introduce",
            |engine| engine.introduce(connection, location, local_port),
            || failed(E::empty_changes()),
        )
    }

    fn domain_states(&mut self, states: &[xenstore_server::DomainState]) -> Outcome<E::Changes> {
        self.guard(
            "domain_states",
            |engine| engine.domain_states(states),
            || failed(E::empty_changes()),
        )
    }

    fn apply(&mut self, caller: &Caller, header: &Header, payload: &[u8]) -> Outcome<E::Changes> {
        let what = format!(
            "{} from connection {} (domain {}, tx {})",
            header.message_type.name(),
            caller.connection.0,
            caller.domid,
            header.tx_id
        );
        self.guard(
            &what,
            |engine| engine.apply(caller, header, payload),
            || failed(E::empty_changes()),
        )
    }

    fn disconnect(&mut self, caller: &Caller) -> Outcome<E::Changes> {
        self.guard(
            "disconnect",
            |engine| engine.disconnect(caller),
            || Outcome {
                reply: None,
                events: Vec::new(),
                changes: E::empty_changes(),
                effects: Vec::new(),
            },
        )
    }

    fn merge_changes(first: E::Changes, second: E::Changes) -> E::Changes {
        E::merge_changes(first, second)
    }

    fn empty_changes() -> E::Changes {
        E::empty_changes()
    }

    fn is_empty(changes: &E::Changes) -> bool {
        E::is_empty(changes)
    }

    fn changed_connections(changes: &E::Changes) -> Vec<ConnectionId> {
        E::changed_connections(changes)
    }

    fn connection_state(&self, connection: ConnectionId) -> Vec<u8> {
        self.inner.connection_state(connection)
    }

    fn primary_path(changes: &E::Changes) -> Option<String> {
        E::primary_path(changes)
    }

    fn store(&self) -> Option<&xenstore_store::Store> {
        self.inner.store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_protocol::{Domid, MessageType};

    /// An engine whose `apply` always panics (stands in for a store bug).
    #[derive(Debug)]
    struct Panicking;

    impl Engine for Panicking {
        type Changes = ();
        fn connect(&mut self, _: &Caller) {}
        fn introduce(&mut self, _: ConnectionId, _: &RingLocation, _: u32) -> Outcome<()> {
            failed(())
        }
        fn apply(&mut self, _: &Caller, _: &Header, _: &[u8]) -> Outcome<()> {
            panic!("transaction view: /a must be present");
        }
        fn disconnect(&mut self, _: &Caller) -> Outcome<()> {
            failed(())
        }
        fn merge_changes(_: (), _: ()) {}
        fn empty_changes() {}
        fn is_empty(_: &()) -> bool {
            true
        }
    }

    #[test]
    fn a_panicking_engine_answers_eio_and_is_marked_poisoned() {
        install_panic_hook();
        let mut engine = GuardedEngine::new(Panicking);
        let caller = Caller {
            connection: ConnectionId(3),
            domid: Domid(0),
            privileged: true,
        };
        let header = Header {
            message_type: MessageType::Rm,
            req_id: 1,
            tx_id: 5,
            len: 3,
        };
        let outcome = engine.apply(&caller, &header, b"/a\0");
        assert_eq!(outcome.reply, Some(ReplyMessage::error(Errno::EIO)));
        let report = engine.poisoned().expect("poisoned");
        assert!(report.contains("RM from connection 3"), "{report}");
        assert!(report.contains("/a must be present"), "{report}");
        assert!(engine.clear_poison().is_some());
        assert!(engine.poisoned().is_none());
    }
}
