//! Scaffolding shared by the server's integration tests: the simulated platform
//! (`SimPlatform`: event channels, ring mapping over the in-memory ring pages of a `World`, a
//! clock and a log sink), the `World` it records into, and `TestJournal`, the journal the
//! tests put under a server (a wrapper that can record its appends and syncs into the world
//! and die right after a sync).

#![allow(
    dead_code,
    reason = "each test binary compiles this module on its own and uses only part of it"
)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use xenstore_protocol::Domid;
use xenstore_protocol::MessageType;
use xenstore_protocol::ring::InMemoryPage;
use xenstore_server::platform::{
    Clock, EventChannels, Level, LogSink, PlatformError, RingLocation, RingMapper,
};
use xenstore_server::ring::Field;
use xenstore_server::store_engine::{StoreChanges, StoreEngine};
use xenstore_server::{CommitCause, ConnectionUpdate, Journal, Server};

/// Log lines a `World` keeps at most (the simulation runs long).
const LOG_LINES_KEPT: usize = 10_000;

/// What the platform (and a recording journal) saw, in order, and the guests' ring pages.
#[derive(Default)]
pub struct World {
    /// Each domain's ring page (guest memory: it survives a server crash).
    pub pages: BTreeMap<u16, Arc<InMemoryPage>>,
    /// "bind <domid>", "unbind <port>", "unmap <domid>"; from a recording `TestJournal`
    /// also "append <type>" and "sync".
    pub calls: Vec<String>,
    /// `rsp_prod` of dom0's ring at each sync of a recording `TestJournal` (nothing may be
    /// transmitted before it).
    pub rsp_prod_at_sync: Vec<u32>,
    /// What the server logged ("<level>: <message>"), the first `LOG_LINES_KEPT` lines.
    pub log_lines: Vec<String>,
}

/// The world as the platform, the journal and the test share it.
pub type Shared = Rc<RefCell<World>>;

/// A fresh ring page for `domid`, mapped by the platform from now on.
pub fn add_page(world: &Shared, domid: u16) -> Arc<InMemoryPage> {
    let page = Arc::new(InMemoryPage::new());
    world.borrow_mut().pages.insert(domid, page.clone());
    page
}

/// The simulated platform: maps the world's ring pages, binds ports counting up from
/// `next_port`, records its calls and log lines in the world.
pub struct SimPlatform {
    pub world: Shared,
    /// The time; each reading first advances it by `tick_ns` (0: a clock that stands still).
    pub clock: Rc<Cell<u64>>,
    pub tick_ns: u64,
    /// The last port handed out.
    pub next_port: u32,
}

impl SimPlatform {
    /// A platform on `world` whose clock (shared, so it survives a restart) advances 1 µs at
    /// each reading; ports from 1.
    pub fn new(world: &Shared, clock: &Rc<Cell<u64>>) -> SimPlatform {
        SimPlatform {
            world: world.clone(),
            clock: clock.clone(),
            tick_ns: 1000,
            next_port: 0,
        }
    }
}

impl fmt::Debug for SimPlatform {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SimPlatform")
    }
}

impl EventChannels for SimPlatform {
    fn bind_interdomain(&mut self, domid: Domid, _remote_port: u32) -> Result<u32, PlatformError> {
        self.next_port += 1;
        self.world
            .borrow_mut()
            .calls
            .push(format!("bind {}", domid.0));
        Ok(self.next_port)
    }
    fn notify(&mut self, _local_port: u32) -> Result<(), PlatformError> {
        Ok(())
    }
    fn unbind(&mut self, local_port: u32) {
        self.world
            .borrow_mut()
            .calls
            .push(format!("unbind {local_port}"));
    }
}

impl RingMapper for SimPlatform {
    type Memory = Arc<InMemoryPage>;
    fn map(&mut self, location: &RingLocation) -> Result<Arc<InMemoryPage>, PlatformError> {
        self.world
            .borrow()
            .pages
            .get(&location.domid.0)
            .cloned()
            .ok_or(PlatformError::MapFailed {
                domid: location.domid,
            })
    }
    fn unmap(&mut self, location: &RingLocation, _memory: Arc<InMemoryPage>) {
        self.world
            .borrow_mut()
            .calls
            .push(format!("unmap {}", location.domid.0));
    }
}

impl Clock for SimPlatform {
    fn now_ns(&self) -> u64 {
        let now = self.clock.get() + self.tick_ns;
        self.clock.set(now);
        now
    }
}

impl LogSink for SimPlatform {
    fn log(&mut self, level: Level, message: fmt::Arguments<'_>) {
        let mut world = self.world.borrow_mut();
        if world.log_lines.len() < LOG_LINES_KEPT {
            world.log_lines.push(format!("{level:?}: {message}"));
        }
    }
}

/// The server on the simulated platform, over any journal.
pub type SimServer<J> = Server<SimPlatform, StoreEngine, J>;

/// The journal the tests put under a server: always enabled, errors as text, forwarding to
/// `inner` (a `LogJournal`, or `NoJournal` to keep nothing). Two test hooks:
/// - `recording`: each append ("append <type>") and sync ("sync", with dom0's `rsp_prod`) is
///   recorded in that world;
/// - `die_after_next_sync`: "the process dies right after a sync returned", i.e. the commit is
///   durable but nothing of the step was published (ring indices, replies, notifications).
///   Modelled as a sync that reports failure after succeeding, which stops the step before
///   its publish phase exactly as a crash would.
pub struct TestJournal<J> {
    pub inner: J,
    pub recording: Option<Shared>,
    pub die_after_next_sync: bool,
}

impl<J> TestJournal<J> {
    /// Forwards to `inner`, no hook armed.
    pub fn new(inner: J) -> TestJournal<J> {
        TestJournal {
            inner,
            recording: None,
            die_after_next_sync: false,
        }
    }

    /// Forwards to `inner` and records every append and sync in `world`.
    pub fn recording(inner: J, world: &Shared) -> TestJournal<J> {
        TestJournal {
            recording: Some(world.clone()),
            ..TestJournal::new(inner)
        }
    }
}

impl<J> fmt::Debug for TestJournal<J> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("TestJournal")
    }
}

impl<J: Journal<StoreChanges>> Journal<StoreChanges> for TestJournal<J> {
    type Error = String;
    fn is_enabled(&self) -> bool {
        true
    }
    fn append(
        &mut self,
        cause: &CommitCause,
        changes: StoreChanges,
        connections: &[ConnectionUpdate],
        server_state: &[u8],
    ) -> Result<(), String> {
        self.inner
            .append(cause, changes, connections, server_state)
            .map_err(|error| error.to_string())?;
        if let Some(world) = &self.recording {
            let name = cause.message_type.map_or("state", MessageType::name);
            world.borrow_mut().calls.push(format!("append {name}"));
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), String> {
        self.inner.sync().map_err(|error| error.to_string())?;
        if let Some(world) = &self.recording {
            let mut world = world.borrow_mut();
            world.calls.push(String::from("sync"));
            let rsp_prod = world
                .pages
                .get(&0)
                .map_or(0, |page| page.field(Field::RspProd));
            world.rsp_prod_at_sync.push(rsp_prod);
        }
        if self.die_after_next_sync {
            return Err(String::from("died after a durable sync, before publishing"));
        }
        Ok(())
    }
}
