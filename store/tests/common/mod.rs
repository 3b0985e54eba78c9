//! Shared test harness: a store with a privileged socket (connection 0), dom0's ring
//! (connection 100) and guests dom1..dom3 introduced on connections 1..3; requests are sent as
//! wire payloads through `Request::parse`, exactly as the server would.
#![allow(dead_code)]

use xenstore_protocol::{Domid, Errno, MessageType, ParseOptions, Request};
use xenstore_store::{
    Config, ConnectionId, ConnectionKind, Introduction, Outcome, Reply, Store, WatchEvent,
};

pub const SOCKET: u32 = 0;
pub const DOM0: u32 = 100;

pub struct Harness {
    pub store: Store,
    pub events: Vec<WatchEvent>,
    pub last: Option<Outcome>,
}

pub type Answer = Result<Vec<u8>, Errno>;

impl Harness {
    /// Store with a socket (0), dom0 ring (100), guests 1..=guests on connections 1..=guests.
    pub fn new(guests: u16) -> Harness {
        Harness::with_config(Config::default(), guests)
    }

    pub fn with_config(config: Config, guests: u16) -> Harness {
        let mut store = Store::new(config);
        store.add_connection(ConnectionId(SOCKET), ConnectionKind::Socket, Domid(0));
        store.introduce_domain(Introduction {
            domid: Domid(0),
            connection: ConnectionId(DOM0),
            gfn: 0,
            evtchn: 1,
        });
        let mut harness = Harness {
            store,
            events: Vec::new(),
            last: None,
        };
        harness.ok(SOCKET, 0, MessageType::Mkdir, b"/local/domain\0");
        for domid in 1..=guests {
            harness.introduce(domid);
        }
        harness.events.clear();
        harness
    }

    /// Full INTRODUCE sequence (request, platform step, completion) from the socket.
    pub fn introduce(&mut self, domid: u16) {
        let payload = format!("{domid}\0{domid}\0{}\0", 10 + domid);
        let answer = self.send(SOCKET, 0, MessageType::Introduce, payload.as_bytes());
        assert_eq!(answer, Ok(b"OK\0".to_vec()), "introduce dom{domid}");
    }

    pub fn send(&mut self, connection: u32, tx: u32, kind: MessageType, payload: &[u8]) -> Answer {
        let id = ConnectionId(connection);
        self.store.precheck(id, kind, tx)?;
        let options = ParseOptions {
            watch_depth: self
                .store
                .caller(id)
                .map(|caller| caller.has_feature(4))
                .unwrap_or(false),
        };
        let request = Request::parse(kind, payload, options)?;
        let outcome = self.store.handle(id, tx, &request);
        self.events.extend(outcome.events.iter().cloned());
        let reply = outcome.reply.clone();
        let effects = outcome.effects.clone();
        self.last = Some(outcome);
        match reply {
            Reply::Payload(payload) => Ok(payload),
            Reply::Error(errno) => Err(errno),
            Reply::None => Ok(Vec::new()),
            Reply::Deferred => {
                // Play the platform: INTRODUCE succeeds with connection id = domid.
                for effect in effects {
                    if let xenstore_store::Effect::Introduce {
                        domid, gfn, evtchn, ..
                    } = effect
                    {
                        let connection = if domid.0 == 0 {
                            DOM0
                        } else {
                            u32::from(domid.0)
                        };
                        let outcome = self.store.introduce_domain(Introduction {
                            domid,
                            connection: ConnectionId(connection),
                            gfn,
                            evtchn,
                        });
                        self.events.extend(outcome.events.iter().cloned());
                        let reply = outcome.reply.clone();
                        self.last = Some(outcome);
                        return match reply {
                            Reply::Payload(payload) => Ok(payload),
                            Reply::Error(errno) => Err(errno),
                            _ => panic!("introduce_domain reply"),
                        };
                    }
                }
                panic!("deferred without effect")
            }
        }
    }

    pub fn ok(&mut self, connection: u32, tx: u32, kind: MessageType, payload: &[u8]) -> Vec<u8> {
        match self.send(connection, tx, kind, payload) {
            Ok(reply) => reply,
            Err(errno) => panic!(
                "{kind:?} {:?} from {connection} tx {tx}: {errno:?}",
                String::from_utf8_lossy(payload)
            ),
        }
    }

    pub fn write(&mut self, connection: u32, tx: u32, path: &str, value: &str) -> Answer {
        let mut payload = path.as_bytes().to_vec();
        payload.push(0);
        payload.extend_from_slice(value.as_bytes());
        self.send(connection, tx, MessageType::Write, &payload)
    }

    pub fn read(&mut self, connection: u32, tx: u32, path: &str) -> Answer {
        self.send(connection, tx, MessageType::Read, &nul(path))
    }

    pub fn start(&mut self, connection: u32) -> u32 {
        let reply = self.ok(connection, 0, MessageType::TransactionStart, b"\0");
        std::str::from_utf8(&reply[..reply.len() - 1])
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn end(&mut self, connection: u32, tx: u32, commit: bool) -> Answer {
        self.send(
            connection,
            tx,
            MessageType::TransactionEnd,
            if commit { b"T\0" } else { b"F\0" },
        )
    }

    pub fn take_events(&mut self) -> Vec<(u32, String, String)> {
        self.events
            .drain(..)
            .map(|event| {
                (
                    event.connection.0,
                    event.path,
                    String::from_utf8_lossy(&event.token).into_owned(),
                )
            })
            .collect()
    }
}

pub fn nul(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    out
}

/// Splits a multi-string reply.
pub fn strings(reply: &[u8]) -> Vec<String> {
    reply
        .split(|byte| *byte == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}
