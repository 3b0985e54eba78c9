//! What one call into the store produced: the reply, watch events, the change record to
//! persist before anything is transmitted, and effects the server must carry out.
//!
//! A [`ChangeSet`] is a list of [`Change`]s in the order they happened; applying them in order
//! to the previous [`crate::StoreImage`] (with [`crate::StoreImage::apply`]) yields the new
//! image. Node changes carry full records; connection and domain changes carry the full
//! persisted record of that connection / domain (small, and it makes applying trivial).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use xenstore_protocol::{Domid, Errno};

use crate::ConnectionId;
use crate::image::{ConnectionRecord, DomainRecord, LogSettings};
use crate::node::NodeRecord;
use crate::quota::QuotaSet;

/// One persisted change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A node was created or modified (full record).
    NodeWritten {
        /// Absolute (or special) path.
        path: String,
        /// The record after the change.
        record: NodeRecord,
    },
    /// A node and its whole subtree were removed.
    SubtreeRemoved {
        /// Root of the removed subtree.
        path: String,
    },
    /// A connection was created or its persisted state changed (watches, transaction ids).
    Connection {
        /// Which.
        id: ConnectionId,
        /// Full record after the change.
        record: ConnectionRecord,
    },
    /// A connection is gone.
    ConnectionRemoved {
        /// Which.
        id: ConnectionId,
    },
    /// A domain entry was created or changed.
    Domain {
        /// Which.
        domid: Domid,
        /// Full record after the change.
        record: DomainRecord,
    },
    /// A domain entry is gone.
    DomainRemoved {
        /// Which.
        domid: Domid,
    },
    /// Global quota values changed.
    GlobalQuotas(QuotaSet),
    /// Log settings changed (CONTROL `log`).
    Log(LogSettings),
}

/// The ordered change record of one call.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Changes in order.
    pub changes: Vec<Change>,
    /// The global generation counter after the call.
    pub generation: u64,
}

impl ChangeSet {
    /// True when nothing needs persisting.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Appends a change.
    pub fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Drops node records made obsolete later in the same set: a `NodeWritten` followed by
    /// another `NodeWritten` of the same path, or by the removal of a subtree containing it.
    /// Applying the compacted set gives the same image (a multi-level creation otherwise
    /// records each parent once per new child).
    pub fn compact(&mut self) {
        let mut written_later: BTreeSet<String> = BTreeSet::new();
        let mut removed_later: Vec<String> = Vec::new();
        let mut keep = Vec::with_capacity(self.changes.len());
        for change in self.changes.drain(..).rev() {
            match &change {
                Change::NodeWritten { path, .. } => {
                    let obsolete = written_later.contains(path)
                        || removed_later
                            .iter()
                            .any(|root| xenstore_protocol::path::is_same_or_ancestor(root, path));
                    if obsolete {
                        continue;
                    }
                    written_later.insert(path.clone());
                }
                Change::SubtreeRemoved { path } => removed_later.push(path.clone()),
                _ => {}
            }
            keep.push(change);
        }
        keep.reverse();
        self.changes = keep;
    }
}

/// A watch event to queue for a connection (payload `<path>\0<token>\0`, req_id 0, tx_id 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The watcher.
    pub connection: ConnectionId,
    /// Path as reported (relative for relative watches).
    pub path: String,
    /// The watch token.
    pub token: Vec<u8>,
}

impl WatchEvent {
    /// The wire payload (`E2BIG` when it would not fit; C drops such events silently).
    pub fn payload(&self) -> Result<Vec<u8>, Errno> {
        xenstore_protocol::reply::watch_event(&self.path, &self.token)
    }
}

/// The reply to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Success: payload of a reply with the request's type.
    Payload(Vec<u8>),
    /// `XS_ERROR` with this errno.
    Error(Errno),
    /// No reply yet: the server must carry out the effect (INTRODUCE) and then call the
    /// store's completion method, whose outcome carries the reply.
    Deferred,
    /// Not a request (platform notification): nothing to send.
    None,
}

impl Reply {
    /// True for a success payload.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Payload(_))
    }
}

/// Something the server must do outside the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// INTRODUCE accepted: map the ring of `domid` (grant `GNTTAB_RESERVED_XENSTORE`; `gfn`
    /// as given), bind `evtchn`, write `features` into `server_features` (first
    /// introduction), then call [`crate::Store::introduce_domain`] — or, on failure, reply
    /// with the errno and leave the store alone. `already_introduced`: only re-bind the event
    /// channel (the store then resets the connection).
    Introduce {
        /// Domain.
        domid: Domid,
        /// Guest frame number as given.
        gfn: i64,
        /// Guest's unbound port.
        evtchn: u32,
        /// True if the domain is already introduced.
        already_introduced: bool,
        /// Feature bits for `server_features`.
        features: u32,
    },
    /// The domain is no longer served: unbind its event channel, unmap its ring, drop its
    /// connection's queues. The store already removed the connection.
    ReleaseDomain {
        /// Domain.
        domid: Domid,
        /// Its connection, if it had one.
        connection: Option<ConnectionId>,
    },
    /// The connection was reset (INTRODUCE of an introduced domain): drop pending output and
    /// partial input; for rings set the four indices to 0 and complete a reconnect request.
    ResetConnection {
        /// Which.
        connection: ConnectionId,
    },
    /// CONTROL `log`: logging switched on/off or a trace switch changed.
    Log(LogSettings),
    /// CONTROL `print`: write this line to the log / console.
    Print(String),
    /// CONTROL `memreport`: write this report to the log (or the named file).
    MemoryReport {
        /// Target file (`None`: the log).
        file: Option<String>,
        /// Report text.
        text: String,
    },
}

/// Everything one call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The reply.
    pub reply: Reply,
    /// Watch events, in delivery order (the server may drop byte-identical unsent duplicates,
    /// as C does).
    pub events: Vec<WatchEvent>,
    /// Changes to persist before transmitting the reply or the events.
    pub changes: ChangeSet,
    /// Effects.
    pub effects: Vec<Effect>,
}

impl Outcome {
    /// An error reply with nothing else.
    pub fn error(errno: Errno, generation: u64) -> Outcome {
        Outcome {
            reply: Reply::Error(errno),
            events: Vec::new(),
            changes: ChangeSet {
                changes: Vec::new(),
                generation,
            },
            effects: Vec::new(),
        }
    }
}
