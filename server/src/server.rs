//! The server: connection table + the request pipeline, driven by a deterministic
//! [`Server::step`].
//!
//! One step:
//! 1. visit every connection in round-robin order (starting after the one that went first
//!    last time), taking at most `requests_per_step` whole requests from each and none from a
//!    connection whose untransmitted replies reached its `outstanding` limit;
//! 2. apply each request to the engine; queue its reply and watch events; append ONE commit
//!    per request (store changes + the new state of every ring connection it touched); a
//!    connection that consumed request bytes without completing a packet gets a commit of its
//!    own state (the partial packet is state);
//! 3. sync the journal once (group commit);
//! 4. only then publish: advance each ring's `req_cons`, transmit queued output to rings,
//!    notify event channels. Socket output becomes visible to the platform (which pulls it
//!    with [`Server::socket_output`]) only after `step` returns, i.e. after the sync.
//!
//! Platform I/O failures and guest misbehaviour affect only the connection concerned; a
//! journal failure stops the step before anything is transmitted ([`ServerError::Journal`]).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use xenstore_protocol::assembler::Assembler;
use xenstore_protocol::{Domid, Errno, Header, Message, MessageType, ParseOptions, Request};

use crate::connection::{
    Broken, Connection, ConnectionId, ConnectionSnapshot, ConnectionTable, RingTransport,
    ServerSnapshot, SocketTransport, Transport,
};
use crate::debug::{
    CONTROL_PRIVILEGED_ACTIONS, CONTROL_SHELL_COMMANDS, Category, Counters, DebugSettings,
};
use crate::engine::{Caller, Effect, Engine, Outcome, ReplyMessage};
use crate::inject::{CrashInjector, CrashPoint};
use crate::journal::{CommitCause, ConnectionUpdate, Journal};
use crate::limits;
use crate::output::{FrameKind, OutputQueue};
use crate::platform::{Level, Platform, PlatformError, RingLocation};
use crate::ring::{self, Field, RingMemory, ServerRing};

/// Tunables of one server instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The privileged domain (dom0).
    pub privileged_domid: Domid,
    /// `outstanding` quota for unprivileged connections.
    pub outstanding_max: usize,
    /// Requests per connection per step.
    pub requests_per_step: usize,
    /// Log a trace line per request.
    pub trace: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            privileged_domid: Domid::DOM0,
            outstanding_max: limits::OUTSTANDING_REQUESTS_DEFAULT,
            requests_per_step: limits::REQUESTS_PER_CONNECTION_PER_STEP_MAX,
            trace: false,
        }
    }
}

/// Errors that stop the server.
#[derive(Debug)]
pub enum ServerError<J> {
    /// The journal failed; nothing from the failed step was transmitted. Policy: restart and
    /// recover from the last durable commit.
    Journal(J),
    /// The connection table is full (socket accept refused).
    TooManyConnections,
    /// A crash armed with `inject-crash` is due at this point of the pipeline (see
    /// [`crate::inject`]): the step stopped there. Policy: the platform crashes for real
    /// (unikernel: panic → warm restart; hosted: restart from the database).
    InjectedCrash(CrashPoint),
}

impl<J: core::fmt::Display> core::fmt::Display for ServerError<J> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServerError::Journal(error) => write!(formatter, "journal failure: {error}"),
            ServerError::TooManyConnections => formatter.write_str("too many connections"),
            ServerError::InjectedCrash(point) => write!(formatter, "injected crash ({point})"),
        }
    }
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Requests applied.
    pub requests: usize,
    /// Commits appended.
    pub commits: usize,
    /// Whether the journal was synced.
    pub synced: bool,
    /// True when some connection still has complete input waiting (step again soon).
    pub more_work: bool,
}

/// Running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests applied.
    pub requests: u64,
    /// Commits appended.
    pub commits: u64,
    /// Syncs.
    pub syncs: u64,
    /// Steps.
    pub steps: u64,
}

/// Why [`Server::introduce_domain`] failed (nothing was committed or published).
#[derive(Debug)]
pub enum IntroduceError<J> {
    /// The domain already has a connection.
    AlreadyConnected(ConnectionId),
    /// The ring could not be mapped.
    Map(PlatformError),
    /// The event channel could not be bound.
    Bind(PlatformError),
    /// The connection table is full.
    TooManyConnections,
    /// The engine refused the domain (its errno name).
    Refused(String),
    /// The journal failed; policy as for [`ServerError::Journal`].
    Journal(J),
}

impl<J: core::fmt::Display> core::fmt::Display for IntroduceError<J> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IntroduceError::AlreadyConnected(id) => {
                write!(formatter, "domain already connected as {id:?}")
            }
            IntroduceError::Map(error) | IntroduceError::Bind(error) => {
                write!(formatter, "{error}")
            }
            IntroduceError::TooManyConnections => formatter.write_str("too many connections"),
            IntroduceError::Refused(errno) => write!(formatter, "refused by the store: {errno}"),
            IntroduceError::Journal(error) => write!(formatter, "journal failure: {error}"),
        }
    }
}

/// Result of recovery, for logging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Ring connections re-attached.
    pub rings_attached: usize,
    /// Ring connections that could not be mapped or bound (dropped).
    pub rings_lost: usize,
    /// Ring connections whose indices could not be reconciled (marked broken).
    pub rings_broken: usize,
    /// Output bytes skipped because they were transmitted before the crash.
    pub output_bytes_skipped: u64,
    /// Request bytes applied before the crash whose consumption was not yet published.
    pub request_bytes_republished: u64,
}

/// The portable server.
pub struct Server<P: Platform, E: Engine, J: Journal<E::Changes>> {
    platform: P,
    engine: E,
    journal: J,
    config: Config,
    table: ConnectionTable<P::Memory>,
    next_connection_id: u32,
    cursor: Option<ConnectionId>,
    stats: Stats,
    removed_durable: Vec<ConnectionId>,
    debug: DebugSettings,
    counters: Counters,
    started_ns: u64,
    /// Clock reading at the first append of the current step (group-commit latency).
    first_append_ns: Option<u64>,
    server_state_dirty: bool,
    restart_requested: bool,
    injector: CrashInjector,
}

impl<P: Platform, E: Engine, J: Journal<E::Changes>> core::fmt::Debug for Server<P, E, J> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("connections", &self.table.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn ring_error_code(broken: Broken) -> u32 {
    match broken {
        Broken::Protocol => ring::ERROR_PROTO,
        Broken::RingIndices => ring::ERROR_RINGIDX,
        Broken::Reconcile => ring::ERROR_COMM,
    }
}

impl<P: Platform, E: Engine, J: Journal<E::Changes>> Server<P, E, J> {
    /// A server with no connections (fresh start, or recovery without ring connections).
    pub fn new(platform: P, engine: E, journal: J, config: Config) -> Self {
        let started_ns = platform.now_ns();
        let debug = DebugSettings {
            trace_all: config.trace,
            ..DebugSettings::default()
        };
        Server {
            debug,
            counters: Counters::default(),
            started_ns,
            first_append_ns: None,
            server_state_dirty: false,
            restart_requested: false,
            injector: CrashInjector::default(),
            platform,
            engine,
            journal,
            config,
            table: ConnectionTable::default(),
            next_connection_id: 1,
            cursor: None,
            stats: Stats::default(),
            removed_durable: Vec::new(),
        }
    }

    /// Rebuilds a server from the newest durable commit: the engine has already been rebuilt
    /// by the caller; `snapshots` are the persisted ring connections. Rings are re-mapped,
    /// event channels re-bound and indices reconciled (see [`OutputQueue::skip_transmitted`]).
    pub fn recover(
        platform: P,
        engine: E,
        journal: J,
        config: Config,
        server_state: ServerSnapshot,
        snapshots: Vec<ConnectionSnapshot>,
    ) -> (Self, RecoveryReport) {
        let mut server = Server::new(platform, engine, journal, config);
        server.next_connection_id = server_state.next_connection_id.max(1);
        if server_state.next_connection_id != 0 {
            // A persisted state (not a fresh log): its debug settings survive the restart;
            // a trace asked for on the command line stays on.
            let trace_all = server.debug.trace_all;
            server.debug = server_state.debug;
            server.debug.trace_all |= trace_all;
        }
        let mut report = RecoveryReport::default();
        for snapshot in snapshots {
            assert!(
                snapshot.id.0 < server.next_connection_id,
                "persisted id beyond the allocator"
            );
            if !snapshot.is_consistent() || server.table.by_domid(snapshot.domid).is_some() {
                server.log(
                    Category::Recovery,
                    Level::Error,
                    format_args!(
                        "recovery: connection {:?} state is damaged; dropped",
                        snapshot.id
                    ),
                );
                report.rings_lost += 1;
                continue;
            }
            match server.attach(snapshot, &mut report) {
                Ok(()) => report.rings_attached += 1,
                Err(id) => {
                    report.rings_lost += 1;
                    server.log(
                        Category::Recovery,
                        Level::Warn,
                        format_args!(
                            "recovery: ring of connection {id:?} could not be re-attached"
                        ),
                    );
                }
            }
        }
        server.log(
            Category::Recovery,
            Level::Info,
            format_args!("recovered: {report:?}"),
        );
        (server, report)
    }

    fn attach(
        &mut self,
        snapshot: ConnectionSnapshot,
        report: &mut RecoveryReport,
    ) -> Result<(), ConnectionId> {
        let location = snapshot.location;
        let memory = self.platform.map(&location).map_err(|_| snapshot.id)?;
        let local_port = match self
            .platform
            .bind_interdomain(location.domid, location.remote_port)
        {
            Ok(port) => port,
            Err(_) => {
                self.platform.unmap(&location, memory);
                return Err(snapshot.id);
            }
        };
        let mut output = snapshot.output;
        let mut broken = snapshot.broken;
        let ring_cons = memory.load_acquire(Field::ReqCons);
        let ring_prod = memory.load_acquire(Field::ReqProd);
        let rsp_prod = memory.load_acquire(Field::RspProd);
        if !snapshot.reset_pending && broken.is_none() {
            // Requests: everything up to the persisted req_cons was applied; the ring's own
            // req_cons may lag (crash between sync and publish) but can never be ahead.
            let lag = snapshot.req_cons.wrapping_sub(ring_cons);
            if lag as usize > xenstore_protocol::limits::RING_SIZE_BYTES
                || !ring::indices_are_consistent(ring_prod, snapshot.req_cons)
            {
                broken = Some(Broken::Reconcile);
            } else {
                report.request_bytes_republished += u64::from(lag);
            }
            // Replies: bytes between the persisted stream position and the ring's rsp_prod
            // were written before the crash; never write them again.
            match output.skip_transmitted(rsp_prod) {
                Ok(skipped) => report.output_bytes_skipped += u64::from(skipped),
                Err(_) => broken = Some(Broken::Reconcile),
            }
            if broken.is_some() {
                report.rings_broken += 1;
            }
        }
        let connection = Connection {
            id: snapshot.id,
            domid: snapshot.domid,
            privileged: snapshot.privileged,
            transport: Transport::Ring(RingTransport {
                location,
                local_port,
                memory,
                shadow_cons: snapshot.req_cons,
                published_cons: ring_cons,
                persisted_cons: snapshot.req_cons,
                reset_pending: snapshot.reset_pending,
                notify_pending: true,
            }),
            assembler: snapshot.assembler,
            output,
            broken,
            outstanding_max: snapshot.outstanding_max as usize,
            events_dropped: 0,
            requests: 0,
        };
        self.table.insert(connection);
        if let Some(broken) = broken {
            self.mark_broken_memory(snapshot.id, broken);
        }
        Ok(())
    }

    /// Logs damage found while reading persisted state (recovery helpers).
    pub fn report_recovery_damage(&mut self, what: &str) {
        self.log(
            Category::Recovery,
            Level::Error,
            format_args!("recovery: {what}"),
        );
    }

    /// The platform (for the hosted loop's own I/O).
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The platform, mutably.
    pub fn platform_mut(&mut self) -> &mut P {
        &mut self.platform
    }

    /// The engine (read-only: debug views).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The engine, mutably (platform supervision, e.g. the hosted daemon's panic guard). Do
    /// not apply requests through it: they would bypass the pipeline and the journal.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// The connection table (read-only: debug views).
    pub fn connections(&self) -> &ConnectionTable<P::Memory> {
        &self.table
    }

    /// Running totals.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Per-type request counts and commit latencies.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Nanoseconds since this server instance started.
    pub fn uptime_ns(&self) -> u64 {
        self.platform.now_ns().saturating_sub(self.started_ns)
    }

    /// The journal (debug views).
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// The journal, mutably (history reads).
    pub fn journal_mut(&mut self) -> &mut J {
        &mut self.journal
    }

    /// The same server over a wrapped (or replaced) journal: connections, engine and settings
    /// are kept. For platforms that decorate the journal (fault injection in simulations,
    /// metrics) after [`crate::store_engine::start_crash_resilient`] built the server.
    pub fn map_journal<J2: Journal<E::Changes>>(
        self,
        wrap: impl FnOnce(J) -> J2,
    ) -> Server<P, E, J2> {
        Server {
            platform: self.platform,
            engine: self.engine,
            journal: wrap(self.journal),
            config: self.config,
            table: self.table,
            next_connection_id: self.next_connection_id,
            cursor: self.cursor,
            stats: self.stats,
            removed_durable: self.removed_durable,
            debug: self.debug,
            counters: self.counters,
            started_ns: self.started_ns,
            first_append_ns: self.first_append_ns,
            server_state_dirty: self.server_state_dirty,
            restart_requested: self.restart_requested,
            injector: self.injector,
        }
    }

    /// Takes the server apart (a controlled restart re-opens the journal's device).
    pub fn into_parts(self) -> (P, E, J) {
        (self.platform, self.engine, self.journal)
    }

    /// Log level, categories and trace switches.
    pub fn debug_settings(&self) -> &DebugSettings {
        &self.debug
    }

    /// Changes the debug settings; they are persisted by the next step.
    pub fn set_debug_settings(&mut self, settings: DebugSettings) {
        if settings != self.debug {
            self.debug = settings;
            self.server_state_dirty = true;
        }
    }

    /// Asks the platform for a controlled warm restart once the current step is over
    /// (debug shell `restart`); see [`Server::restart_requested`].
    pub fn request_restart_after_step(&mut self) {
        self.restart_requested = true;
    }

    /// True when a controlled restart was asked for: the platform drops this server after the
    /// step and recovers a new one from the journal (as after a crash).
    pub fn restart_requested(&self) -> bool {
        self.restart_requested
    }

    /// Runs one debug shell command line (console, debug socket) and returns its output.
    /// `inject-crash` is the server's own command (see [`crate::inject`]); everything else is
    /// the shell crate's.
    pub fn shell(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        if words.first() == Some(&"inject-crash") {
            return match crate::inject::parse_arguments(&words[1..]) {
                Ok(armed) => {
                    self.arm_crash(armed);
                    alloc::format!(
                        "crash armed: during request {} from the next step, at {}{}\n",
                        armed.countdown,
                        armed.point,
                        if self.journal.is_enabled() {
                            ""
                        } else {
                            " (no log: the crash loses the store)"
                        }
                    )
                }
                Err(error) => alloc::format!("error: {error}\n"),
            };
        }
        let mut out = String::new();
        let _ = xenstore_shell::execute(line, self, &mut out);
        out
    }

    /// Arms an injected crash (see [`crate::inject`]); replaces an earlier arming.
    pub fn arm_crash(&mut self, armed: crate::inject::Armed) {
        self.injector.arm(armed);
        self.log(
            Category::Control,
            Level::Warn,
            format_args!(
                "inject-crash armed: request {} from the next step, at {}",
                armed.countdown, armed.point
            ),
        );
    }

    /// The armed injected crash, if any.
    pub fn armed_crash(&self) -> Option<crate::inject::Armed> {
        self.injector.armed()
    }

    /// Everything recovery reads back besides the engine's image, as of now: the snapshot
    /// blob of every ring connection (with the engine's record of it) and the server state
    /// blob. Used to switch a running server onto a log ([`crate::switch`]).
    pub(crate) fn persisted_state(&self) -> (Vec<ConnectionUpdate>, Vec<u8>) {
        let mut updates = Vec::new();
        for connection in self.table.iter() {
            if let Some(mut snapshot) = connection.snapshot() {
                snapshot.engine_state = self.engine.connection_state(connection.id);
                let blob =
                    postcard::to_allocvec(&snapshot).expect("connection snapshots always encode");
                updates.push((connection.id, Some(blob)));
            }
        }
        let state = postcard::to_allocvec(&ServerSnapshot {
            next_connection_id: self.next_connection_id,
            debug: self.debug.clone(),
        })
        .expect("server state always encodes");
        (updates, state)
    }

    /// Marks the server's own state persisted (after a switch wrote it in full).
    pub(crate) fn state_persisted(&mut self) {
        self.server_state_dirty = false;
        self.removed_durable.clear();
        for connection in self.table.iter_mut() {
            if let Transport::Ring(ring) = &mut connection.transport {
                ring.persisted_cons = ring.shadow_cons;
            }
        }
    }

    /// Logs a line under the debug settings (for the server's other modules).
    pub(crate) fn log_event(
        &mut self,
        category: Category,
        level: Level,
        message: core::fmt::Arguments<'_>,
    ) {
        self.log(category, level, message);
    }

    fn log(&mut self, category: Category, level: Level, message: core::fmt::Arguments<'_>) {
        if self.debug.enabled(category, level) {
            self.platform.log(level, message);
        }
    }

    fn allocate_id(&mut self) -> Result<ConnectionId, ServerError<J::Error>> {
        if self.table.len() >= limits::CONNECTIONS_MAX || self.next_connection_id == u32::MAX {
            return Err(ServerError::TooManyConnections);
        }
        let id = ConnectionId(self.next_connection_id);
        self.next_connection_id += 1;
        Ok(id)
    }

    fn caller_of(connection: &Connection<P::Memory>) -> Caller {
        Caller {
            connection: connection.id,
            domid: connection.domid,
            privileged: connection.privileged,
        }
    }

    // ----- socket connections (hosted platform) -----

    /// Accepts a socket connection (a privileged dom0 client, as in C xenstored).
    pub fn socket_open(&mut self) -> Result<ConnectionId, ServerError<J::Error>> {
        let id = self.allocate_id()?;
        let connection = Connection {
            id,
            domid: self.config.privileged_domid,
            privileged: true,
            transport: Transport::Socket(SocketTransport::default()),
            assembler: Assembler::default(),
            output: OutputQueue::default(),
            broken: None,
            outstanding_max: limits::OUTSTANDING_REQUESTS_PRIVILEGED_MAX,
            events_dropped: 0,
            requests: 0,
        };
        // Socket connections die with the process, so their registration is not persisted.
        let _ = self.engine.connect(&Self::caller_of(&connection));
        self.table.insert(connection);
        Ok(id)
    }

    /// How many more input bytes the socket connection may be fed now.
    pub fn socket_input_room(&self, id: ConnectionId) -> usize {
        match self.table.get(id).map(|connection| &connection.transport) {
            Some(Transport::Socket(socket)) if !socket.closed => {
                limits::SOCKET_INPUT_BUFFER_MAX_BYTES.saturating_sub(socket.input.len())
            }
            _ => 0,
        }
    }

    /// Feeds received bytes (at most [`Server::socket_input_room`]; the rest is refused and
    /// the count accepted is returned).
    pub fn socket_input(&mut self, id: ConnectionId, bytes: &[u8]) -> usize {
        let room = self.socket_input_room(id);
        let accepted = room.min(bytes.len());
        if let Some(Transport::Socket(socket)) = self
            .table
            .get_mut(id)
            .map(|connection| &mut connection.transport)
        {
            socket.input.extend(&bytes[..accepted]);
        }
        accepted
    }

    /// Output ready for a socket (already durable). Empty when nothing waits.
    pub fn socket_output(&self, id: ConnectionId) -> &[u8] {
        match self.table.get(id) {
            Some(connection) if matches!(connection.transport, Transport::Socket(_)) => {
                connection.output.front_chunk()
            }
            _ => &[],
        }
    }

    /// Records that `count` bytes of [`Server::socket_output`] were sent.
    pub fn socket_sent(&mut self, id: ConnectionId, count: usize) {
        if let Some(connection) = self.table.get_mut(id) {
            assert!(count <= connection.output.front_chunk().len());
            connection.output.consume(count);
        }
    }

    /// True when the server wants the socket closed (protocol violation) once its output is
    /// flushed, or the connection is gone.
    pub fn socket_should_close(&self, id: ConnectionId) -> bool {
        match self.table.get(id) {
            Some(connection) => connection.broken.is_some() && connection.output.is_empty(),
            None => true,
        }
    }

    /// The peer hung up: the connection is dropped at the next step.
    pub fn socket_closed(&mut self, id: ConnectionId) {
        if let Some(Transport::Socket(socket)) = self
            .table
            .get_mut(id)
            .map(|connection| &mut connection.transport)
        {
            socket.closed = true;
        }
    }

    /// A notification arrived on a local event channel port. Notifications are hints: every
    /// step polls every ring anyway, so this only exists for platforms that want to log.
    pub fn event(&mut self, local_port: u32) -> Option<ConnectionId> {
        self.table.by_local_port(local_port)
    }

    // ----- platform-initiated domain changes -----

    /// Introduces a domain on the platform's initiative (C `init_domain`: dom0 from the
    /// launcher's `--event` at start-up, later dom0less domains), outside any request: maps
    /// the ring, binds the event channel, registers the domain with the engine (second phase
    /// of the store's INTRODUCE, `@introduceDomain` fired for unprivileged domains), commits
    /// and syncs, then publishes (`server_features`, `connection = CONNECTED`, queued events,
    /// a notification).
    ///
    /// Unlike XS_INTRODUCE (which resets the ring as C `domain_conn_reset` does), the ring's
    /// indices are taken as they are: the peer may already have queued requests before the
    /// server started, and they are served by the next step. Only indices that violate the
    /// ring invariants get the reset instead.
    pub fn introduce_domain(
        &mut self,
        location: RingLocation,
    ) -> Result<ConnectionId, IntroduceError<J::Error>> {
        if let Some(existing) = self.table.by_domid(location.domid) {
            return Err(IntroduceError::AlreadyConnected(existing));
        }
        let memory = self.platform.map(&location).map_err(IntroduceError::Map)?;
        let local_port = match self
            .platform
            .bind_interdomain(location.domid, location.remote_port)
        {
            Ok(port) => port,
            Err(error) => {
                self.platform.unmap(&location, memory);
                return Err(IntroduceError::Bind(error));
            }
        };
        let id = match self.allocate_id() {
            Ok(id) => id,
            Err(_) => {
                self.platform.unbind(local_port);
                self.platform.unmap(&location, memory);
                return Err(IntroduceError::TooManyConnections);
            }
        };
        let req_cons = memory.load_acquire(Field::ReqCons);
        let req_prod = memory.load_acquire(Field::ReqProd);
        let rsp_cons = memory.load_acquire(Field::RspCons);
        let rsp_prod = memory.load_acquire(Field::RspProd);
        let keep = ring::indices_are_consistent(req_prod, req_cons)
            && ring::indices_are_consistent(rsp_prod, rsp_cons);
        let (start_cons, start_rsp) = if keep { (req_cons, rsp_prod) } else { (0, 0) };
        let connection = Connection {
            id,
            domid: location.domid,
            privileged: location.domid == self.config.privileged_domid,
            transport: Transport::Ring(RingTransport {
                location,
                local_port,
                memory,
                shadow_cons: start_cons,
                published_cons: start_cons,
                persisted_cons: start_cons,
                reset_pending: !keep,
                notify_pending: true,
            }),
            assembler: Assembler::default(),
            output: OutputQueue::starting_at(start_rsp),
            broken: None,
            outstanding_max: self.config.outstanding_max,
            events_dropped: 0,
            requests: 0,
        };
        self.table.insert(connection);
        let outcome = self.engine.introduce(id, &location, local_port);
        if !outcome.reply.as_ref().is_some_and(ReplyMessage::is_success) {
            let errno = outcome
                .reply
                .map(|reply| {
                    String::from_utf8_lossy(&reply.payload)
                        .trim_end_matches('\0')
                        .into()
                })
                .unwrap_or_default();
            self.close_ring(id);
            return Err(IntroduceError::Refused(errno));
        }
        self.log(
            Category::Connection,
            Level::Info,
            format_args!(
                "domain {} introduced by the platform as connection {id:?} ({})",
                location.domid,
                if keep {
                    "ring indices kept"
                } else {
                    "inconsistent ring indices: ring reset"
                }
            ),
        );
        // The ring is fresh to the server: the engine's reset concerns its own state only
        // (nothing to drop); the ring's indices stay as the peer left them.
        let effects = outcome
            .effects
            .into_iter()
            .filter(|effect| *effect != Effect::ResetConnection(id))
            .collect();
        let cause = CommitCause::internal(
            id,
            location.domid,
            Some(MessageType::Introduce),
            self.platform.now_ns(),
        );
        let outcome = Outcome {
            reply: None,
            events: outcome.events,
            changes: Some(outcome.changes),
            effects,
        };
        self.finish_platform_change(&cause, vec![id], outcome)
            .map_err(|error| match error {
                ServerError::Journal(error) => IntroduceError::Journal(error),
                ServerError::TooManyConnections => IntroduceError::TooManyConnections,
                ServerError::InjectedCrash(point) => {
                    unreachable!("no crash point outside requests ({point})")
                }
            })?;
        if let Some(Transport::Ring(ring)) = self
            .table
            .get_mut(id)
            .map(|connection| &mut connection.transport)
            && keep
        {
            // C `init_domain`: advertise the features and mark the ring connected.
            let features = ring.memory.load_acquire(Field::ServerFeatures);
            ring.memory
                .store_release(Field::ServerFeatures, features | ring::SERVER_FEATURES);
            ring.memory
                .store_release(Field::Connection, xenstore_protocol::ring::CONNECTED);
        }
        self.publish();
        Ok(id)
    }

    /// Domain state changes seen by the platform after `VIRQ_DOM_EXC` (C
    /// `do_check_domains`), forwarded to the engine: a first shutdown of an introduced domain
    /// fires `@releaseDomain` (its nodes stay); a dead domain's connection is closed (event
    /// channel unbound, ring unmapped), its nodes go and `@releaseDomain` fires. The change is
    /// committed and synced before any resulting watch event is transmitted.
    pub fn domain_states(
        &mut self,
        states: &[crate::engine::DomainState],
    ) -> Result<(), ServerError<J::Error>> {
        if states.is_empty() {
            return Ok(());
        }
        let outcome = self.engine.domain_states(states);
        let cause = CommitCause::internal(
            ConnectionId(0),
            self.config.privileged_domid,
            None,
            self.platform.now_ns(),
        );
        let outcome = Outcome {
            reply: None,
            events: outcome.events,
            changes: Some(outcome.changes),
            effects: outcome.effects,
        };
        self.finish_platform_change(&cause, Vec::new(), outcome)?;
        self.publish();
        Ok(())
    }

    /// Queues the events and effects of a change made outside a step, commits and syncs it.
    fn finish_platform_change(
        &mut self,
        cause: &CommitCause,
        mut touched: Vec<ConnectionId>,
        outcome: Outcome<Option<E::Changes>>,
    ) -> Result<(), ServerError<J::Error>> {
        let mut report = StepReport::default();
        self.finish_outcome_inner(cause, &mut touched, outcome, &mut report)?;
        if report.commits > 0 && self.journal.is_enabled() {
            self.journal.sync().map_err(ServerError::Journal)?;
            self.stats.syncs += 1;
            if let Some(first) = self.first_append_ns.take() {
                let latency = self.platform.now_ns().saturating_sub(first);
                self.counters.commit_latency(latency);
            }
        }
        Ok(())
    }

    // ----- the pipeline -----

    /// Runs one deterministic step of the pipeline (see the module doc).
    pub fn step(&mut self) -> Result<StepReport, ServerError<J::Error>> {
        let mut report = StepReport::default();
        self.stats.steps += 1;
        self.injector.step_started();
        self.close_hung_up_sockets(&mut report)?;
        let order = self.table.round_robin_from(self.cursor);
        self.cursor = order.first().copied();
        for id in order {
            self.serve_connection(id, &mut report)?;
        }
        if self.server_state_dirty && self.journal.is_enabled() {
            // Debug settings changed from the shell: persist them on their own.
            let cause = CommitCause::internal(
                ConnectionId(0),
                self.config.privileged_domid,
                None,
                self.platform.now_ns(),
            );
            self.commit(&cause, None, &[], &mut report)?;
        }
        if report.commits > 0 && self.journal.is_enabled() {
            self.journal.sync().map_err(ServerError::Journal)?;
            self.stats.syncs += 1;
            report.synced = true;
            if let Some(first) = self.first_append_ns.take() {
                let latency = self.platform.now_ns().saturating_sub(first);
                self.counters.commit_latency(latency);
            }
        }
        if self.injector.take_if_due(CrashPoint::AfterSync) {
            return Err(ServerError::InjectedCrash(CrashPoint::AfterSync));
        }
        self.publish();
        if self.injector.take_if_due(CrashPoint::AfterReply) {
            return Err(ServerError::InjectedCrash(CrashPoint::AfterReply));
        }
        Ok(report)
    }

    fn close_hung_up_sockets(
        &mut self,
        report: &mut StepReport,
    ) -> Result<(), ServerError<J::Error>> {
        let closed: Vec<ConnectionId> = self
            .table
            .iter()
            .filter(|connection| matches!(&connection.transport, Transport::Socket(socket) if socket.closed))
            .map(|connection| connection.id)
            .collect();
        for id in closed {
            let Some(connection) = self.table.remove(id) else {
                continue;
            };
            let caller = Self::caller_of(&connection);
            let outcome = self.engine.disconnect(&caller);
            let cause = CommitCause::internal(id, caller.domid, None, self.platform.now_ns());
            self.finish_outcome(&cause, id, None, outcome, report)?;
        }
        Ok(())
    }

    fn serve_connection(
        &mut self,
        id: ConnectionId,
        report: &mut StepReport,
    ) -> Result<(), ServerError<J::Error>> {
        let mut served = 0;
        loop {
            let Some(connection) = self.table.get_mut(id) else {
                return Ok(());
            };
            if connection.broken.is_some() {
                break;
            }
            if matches!(&connection.transport, Transport::Socket(socket) if socket.closed) {
                break;
            }
            if connection.output.replies_pending() >= connection.outstanding_max {
                break;
            }
            if served >= self.config.requests_per_step {
                report.more_work = true;
                break;
            }
            match next_packet(connection) {
                Ok(None) => break,
                Ok(Some(packet)) => {
                    served += 1;
                    self.process(id, packet, report)?;
                }
                Err(broken) => {
                    self.mark_broken(id, broken);
                    break;
                }
            }
        }
        // Input consumed into a partial packet (or a broken mark) is state of its own.
        let needs_state_commit = match self.table.get(id) {
            Some(connection) => match &connection.transport {
                Transport::Ring(ring) => {
                    ring.shadow_cons != ring.persisted_cons
                        || connection.broken.is_some() && served == 0
                }
                Transport::Socket(_) => false,
            },
            None => false,
        };
        if needs_state_commit {
            let Some(connection) = self.table.get(id) else {
                return Ok(());
            };
            if let Transport::Ring(ring) = &connection.transport
                && (ring.shadow_cons != ring.persisted_cons || connection.broken.is_some())
            {
                let cause =
                    CommitCause::internal(id, connection.domid, None, self.platform.now_ns());
                self.commit(&cause, None, &[id], report)?;
            }
        }
        Ok(())
    }

    fn mark_broken_memory(&mut self, id: ConnectionId, broken: Broken) {
        if let Some(Transport::Ring(ring)) = self
            .table
            .get_mut(id)
            .map(|connection| &mut connection.transport)
        {
            ring.memory
                .store_release(Field::Error, ring_error_code(broken));
        }
    }

    fn mark_broken(&mut self, id: ConnectionId, broken: Broken) {
        let Some(connection) = self.table.get_mut(id) else {
            return;
        };
        if connection.broken.is_some() {
            return;
        }
        connection.broken = Some(broken);
        let domid = connection.domid;
        match &mut connection.transport {
            Transport::Ring(ring) => {
                // Policy (C xenstored): the ring's `error` field says why; the connection is
                // kept (for RELEASE / @releaseDomain) but no longer served.
                ring.memory
                    .store_release(Field::Error, ring_error_code(broken));
                ring.notify_pending = true;
            }
            Transport::Socket(socket) => socket.input.clear(),
        }
        self.log(
            Category::Connection,
            Level::Warn,
            format_args!("connection {id:?} (domain {domid}) broken: {broken:?}"),
        );
    }

    /// XS_CONTROL commands the store does not implement but the debug shell does (its
    /// read-only commands): answered here with the shell's text, so `xenstore-control conns`
    /// works from dom0. `None`: the store handles the request.
    fn control_shell_command(
        &mut self,
        caller: &Caller,
        message_type: MessageType,
        payload: &[u8],
    ) -> Option<ReplyMessage> {
        if message_type != MessageType::Control || !caller.privileged {
            return None;
        }
        let words: Vec<&str> = payload
            .split(|byte| *byte == 0)
            .filter(|word| !word.is_empty())
            .map(|word| core::str::from_utf8(word).unwrap_or("\u{fffd}"))
            .collect();
        let command = *words.first()?;
        if !CONTROL_SHELL_COMMANDS.contains(&command)
            && !CONTROL_PRIVILEGED_ACTIONS.contains(&command)
        {
            return None;
        }
        let line = words.join(" ");
        let mut text = self.shell(&line);
        // The reply must fit one message: cut long answers with a marker.
        let limit = xenstore_protocol::limits::PAYLOAD_MAX_BYTES - 32;
        if text.len() > limit {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n... (truncated)\n");
        }
        let mut payload = text.into_bytes();
        payload.push(0);
        Some(ReplyMessage {
            message_type: MessageType::Control,
            payload,
        })
    }

    fn process(
        &mut self,
        id: ConnectionId,
        packet: Message,
        report: &mut StepReport,
    ) -> Result<(), ServerError<J::Error>> {
        let Some(connection) = self.table.get_mut(id) else {
            return Ok(());
        };
        connection.requests += 1;
        let caller = Self::caller_of(connection);
        let header = *packet.header();
        let message_type = header.message_type;
        report.requests += 1;
        self.stats.requests += 1;
        self.counters.count(message_type);
        let timestamp_ns = self.platform.now_ns();
        if self.injector.request_started(timestamp_ns) {
            self.log(
                Category::Control,
                Level::Warn,
                format_args!(
                    "inject-crash: request {} of connection {id:?} is the chosen one",
                    message_type.name()
                ),
            );
        }

        let outcome = match self.control_shell_command(&caller, message_type, packet.payload()) {
            Some(reply) => Outcome {
                reply: Some(reply),
                events: Vec::new(),
                changes: E::empty_changes(),
                effects: Vec::new(),
            },
            None => self.engine.apply(&caller, &header, packet.payload()),
        };
        let mut touched: Vec<ConnectionId> = vec![id];
        let mut changes = outcome.changes;
        let mut effects = Vec::new();
        let mut events = outcome.events;
        let mut reply = outcome.reply;
        for effect in outcome.effects {
            let Effect::Introduce(location) = effect else {
                effects.push(effect);
                continue;
            };
            // Two-phase INTRODUCE: the ring must be mapped before the engine accepts it.
            let second = match self.table.by_domid(location.domid) {
                Some(existing) => {
                    let local_port = self.local_port(existing);
                    touched.push(existing);
                    Some(self.engine.introduce(existing, &location, local_port))
                }
                None => match self.attach_new_ring(&location) {
                    Ok(new_id) => {
                        touched.push(new_id);
                        let local_port = self.local_port(new_id);
                        let second = self.engine.introduce(new_id, &location, local_port);
                        if !second.reply.as_ref().is_some_and(ReplyMessage::is_success) {
                            self.close_ring(new_id);
                        }
                        Some(second)
                    }
                    Err(()) => {
                        reply = Some(ReplyMessage::error(Errno::EINVAL));
                        None
                    }
                },
            };
            if let Some(second) = second {
                reply = second.reply;
                events.extend(second.events);
                effects.extend(second.effects);
                changes = E::merge_changes(changes, second.changes);
            }
        }
        let outcome = Outcome {
            reply,
            events,
            changes: Some(changes),
            effects,
        };

        let path = Request::parse(
            message_type,
            packet.payload(),
            ParseOptions { watch_depth: true },
        )
        .ok()
        .and_then(|request| request.path().map(String::from))
        .or_else(|| {
            outcome
                .changes
                .as_ref()
                .and_then(|changes| E::primary_path(changes))
        });
        if self.debug.traces(caller.domid) {
            let result = match &outcome.reply {
                Some(reply) if !reply.is_success() => String::from_utf8_lossy(&reply.payload)
                    .trim_end_matches('\0')
                    .into(),
                Some(_) => String::from("OK"),
                None => String::from("-"),
            };
            self.platform.log(
                Level::Trace,
                format_args!(
                    "t={}.{:09} conn={} dom={} {} tx={} req={} path={} -> {}",
                    timestamp_ns / 1_000_000_000,
                    timestamp_ns % 1_000_000_000,
                    id.0,
                    caller.domid,
                    message_type.name(),
                    header.tx_id,
                    header.req_id,
                    path.as_deref().unwrap_or("-"),
                    result
                ),
            );
        }
        if let Some(reply) = &outcome.reply
            && let Some(connection) = self.table.get_mut(id)
        {
            let frame = encode_frame(
                reply.message_type,
                header.req_id,
                header.tx_id,
                &reply.payload,
            );
            connection.output.push(FrameKind::Reply, frame);
        }
        let cause = CommitCause {
            connection: id,
            domid: caller.domid,
            message_type: Some(message_type),
            req_id: header.req_id,
            tx_id: header.tx_id,
            path,
            timestamp_ns,
        };
        let outcome = Outcome {
            reply: None,
            events: outcome.events,
            changes: outcome.changes,
            effects: outcome.effects,
        };
        if self.injector.take_if_due(CrashPoint::BeforeAppend) {
            return Err(ServerError::InjectedCrash(CrashPoint::BeforeAppend));
        }
        self.finish_outcome_inner(&cause, &mut touched, outcome, report)?;
        if self.injector.take_if_due(CrashPoint::AfterAppend) {
            return Err(ServerError::InjectedCrash(CrashPoint::AfterAppend));
        }
        Ok(())
    }

    fn local_port(&self, id: ConnectionId) -> u32 {
        self.table
            .get(id)
            .and_then(|connection| connection.ring())
            .map_or(0, |ring| ring.local_port)
    }

    /// Maps and binds a newly introduced domain's ring and adds its connection.
    fn attach_new_ring(&mut self, location: &RingLocation) -> Result<ConnectionId, ()> {
        let memory = match self.platform.map(location) {
            Ok(memory) => memory,
            Err(error) => {
                self.log(
                    Category::Connection,
                    Level::Warn,
                    format_args!("INTRODUCE {}: {error}", location.domid),
                );
                return Err(());
            }
        };
        let local_port = match self
            .platform
            .bind_interdomain(location.domid, location.remote_port)
        {
            Ok(port) => port,
            Err(error) => {
                self.log(
                    Category::Connection,
                    Level::Warn,
                    format_args!("INTRODUCE {}: {error}", location.domid),
                );
                self.platform.unmap(location, memory);
                return Err(());
            }
        };
        let Ok(new_id) = self.allocate_id() else {
            self.platform.unbind(local_port);
            self.platform.unmap(location, memory);
            return Err(());
        };
        let connection = Connection {
            id: new_id,
            domid: location.domid,
            privileged: location.domid == self.config.privileged_domid,
            transport: Transport::Ring(RingTransport {
                location: *location,
                local_port,
                memory,
                shadow_cons: 0,
                published_cons: 0,
                persisted_cons: 0,
                reset_pending: true,
                notify_pending: true,
            }),
            assembler: Assembler::default(),
            output: OutputQueue::starting_at(0),
            broken: None,
            outstanding_max: self.config.outstanding_max,
            events_dropped: 0,
            requests: 0,
        };
        self.table.insert(connection);
        self.log(
            Category::Connection,
            Level::Info,
            format_args!(
                "domain {} introduced as connection {new_id:?}",
                location.domid
            ),
        );
        Ok(new_id)
    }

    fn finish_outcome(
        &mut self,
        cause: &CommitCause,
        id: ConnectionId,
        removed: Option<ConnectionId>,
        outcome: Outcome<E::Changes>,
        report: &mut StepReport,
    ) -> Result<(), ServerError<J::Error>> {
        let mut touched = vec![id];
        touched.extend(removed);
        let outcome = Outcome {
            reply: outcome.reply,
            events: outcome.events,
            changes: Some(outcome.changes),
            effects: outcome.effects,
        };
        self.finish_outcome_inner(cause, &mut touched, outcome, report)
    }

    fn finish_outcome_inner(
        &mut self,
        cause: &CommitCause,
        touched: &mut Vec<ConnectionId>,
        outcome: Outcome<Option<E::Changes>>,
        report: &mut StepReport,
    ) -> Result<(), ServerError<J::Error>> {
        for event in outcome.events {
            let Some(connection) = self.table.get_mut(event.connection) else {
                continue;
            };
            if connection.output.events_pending() >= limits::WATCH_EVENTS_QUEUED_MAX
                || connection.output.pending_bytes() + event.payload.len()
                    > limits::WATCH_EVENT_BYTES_QUEUED_MAX
            {
                // The watcher is far behind (C bounds this through its memory quota).
                connection.events_dropped += 1;
                if connection.events_dropped.is_power_of_two() {
                    let (id, domid, dropped) =
                        (connection.id, connection.domid, connection.events_dropped);
                    self.log(
                        Category::Connection,
                        Level::Warn,
                        format_args!(
                            "connection {id:?} (domain {domid}) is not reading: {dropped} watch events dropped"
                        ),
                    );
                }
                continue;
            }
            if event.payload.len() > xenstore_protocol::limits::PAYLOAD_MAX_BYTES {
                continue;
            }
            let frame = encode_frame(MessageType::WatchEvent, 0, 0, &event.payload);
            connection.output.push(FrameKind::WatchEvent, frame);
            touched.push(event.connection);
            let domid = connection.domid;
            if self.debug.traces(domid) {
                let now = self.platform.now_ns();
                let mut fields = event.payload.split(|byte| *byte == 0);
                let path = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
                let token = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
                self.platform.log(
                    Level::Trace,
                    format_args!(
                        "t={}.{:09} conn={} dom={} WATCH_EVENT tx=0 req=0 path={path} -> token={token}",
                        now / 1_000_000_000,
                        now % 1_000_000_000,
                        event.connection.0,
                        domid,
                    ),
                );
            }
        }
        for effect in outcome.effects {
            match effect {
                Effect::CloseDomain(domid) => {
                    if let Some(closing) = self.table.by_domid(domid) {
                        self.close_ring(closing);
                        touched.push(closing);
                    }
                }
                Effect::ResetConnection(reset) => {
                    if let Some(connection) = self.table.get_mut(reset) {
                        connection.assembler = Assembler::default();
                        connection.output.reset(0);
                        connection.broken = None;
                        if let Transport::Ring(ring) = &mut connection.transport {
                            ring.shadow_cons = 0;
                            ring.reset_pending = true;
                            ring.notify_pending = true;
                        }
                        touched.push(reset);
                    }
                }
                Effect::Print(line) => {
                    self.log(Category::Control, Level::Info, format_args!("{line}"));
                }
                Effect::Introduce(location) => {
                    let domid = location.domid;
                    self.log(
                        Category::Connection,
                        Level::Warn,
                        format_args!("nested INTRODUCE of {domid} ignored"),
                    );
                }
            }
        }
        self.commit(cause, outcome.changes, touched, report)
    }

    fn close_ring(&mut self, id: ConnectionId) {
        let Some(connection) = self.table.remove(id) else {
            return;
        };
        let caller = Self::caller_of(&connection);
        if let Transport::Ring(ring) = connection.transport {
            self.platform.unbind(ring.local_port);
            self.platform.unmap(&ring.location, ring.memory);
        }
        // The engine already forgot the domain (it asked for the close); drop leftovers.
        let _ = self.engine.disconnect(&caller);
        self.removed_durable.push(id);
        self.log(
            Category::Connection,
            Level::Info,
            format_args!("connection {id:?} of domain {} closed", caller.domid),
        );
    }

    fn commit(
        &mut self,
        cause: &CommitCause,
        changes: Option<E::Changes>,
        touched: &[ConnectionId],
        report: &mut StepReport,
    ) -> Result<(), ServerError<J::Error>> {
        let mut ids: Vec<ConnectionId> = touched.to_vec();
        if let Some(changes) = &changes {
            ids.extend(E::changed_connections(changes));
        }
        ids.sort_unstable();
        ids.dedup();
        let enabled = self.journal.is_enabled();
        let mut updates: Vec<ConnectionUpdate> = Vec::new();
        for id in ids {
            let Some(connection) = self.table.get_mut(id) else {
                continue;
            };
            if let Transport::Ring(ring) = &mut connection.transport {
                ring.persisted_cons = ring.shadow_cons;
            }
            if enabled && let Some(mut snapshot) = connection.snapshot() {
                snapshot.engine_state = self.engine.connection_state(id);
                let blob = postcard::to_allocvec(&snapshot).unwrap_or_default();
                assert!(!blob.is_empty(), "connection snapshot failed to encode");
                updates.push((id, Some(blob)));
            }
        }
        // Ring connections closed by this request: delete their persisted state.
        updates.extend(self.removed_durable.drain(..).map(|id| (id, None)));
        if !enabled {
            return Ok(());
        }
        let store_changed = changes
            .as_ref()
            .is_some_and(|changes| !E::is_empty(changes));
        if !store_changed && updates.is_empty() && !self.server_state_dirty {
            return Ok(());
        }
        let changes = changes.unwrap_or_else(E::empty_changes);
        let state = postcard::to_allocvec(&ServerSnapshot {
            next_connection_id: self.next_connection_id,
            debug: self.debug.clone(),
        })
        .expect("server state always encodes");
        // One request's commit must stay below the log's record limit even when it queues
        // events for many watchers with long queues: the watchers' blobs then go into
        // commits of their own, appended first and made durable by the same sync. A crash
        // that keeps those but not the main commit yields at worst a spurious watch event
        // (clients re-read on events); it never loses one.
        let mut main_updates: Vec<ConnectionUpdate> = Vec::new();
        let mut batch: Vec<ConnectionUpdate> = Vec::new();
        let mut batch_bytes = 0usize;
        let total: usize = updates
            .iter()
            .map(|(_, blob)| blob.as_ref().map_or(0, Vec::len))
            .sum();
        for update in updates {
            let size = update.1.as_ref().map_or(0, Vec::len);
            if total <= limits::COMMIT_CONNECTION_BYTES_MAX
                || update.0 == cause.connection
                || update.1.is_none()
            {
                main_updates.push(update);
                continue;
            }
            if batch_bytes + size > limits::COMMIT_CONNECTION_BYTES_MAX && !batch.is_empty() {
                self.append_connection_batch(cause, &mut batch, &state, report)?;
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(update);
        }
        if !batch.is_empty() {
            self.append_connection_batch(cause, &mut batch, &state, report)?;
        }
        self.journal
            .append(cause, changes, &main_updates, &state)
            .map_err(ServerError::Journal)?;
        self.server_state_dirty = false;
        if self.first_append_ns.is_none() {
            self.first_append_ns = Some(self.platform.now_ns());
        }
        report.commits += 1;
        self.stats.commits += 1;
        Ok(())
    }

    /// Appends a commit of connection state alone (see the splitting rule in `commit`).
    fn append_connection_batch(
        &mut self,
        cause: &CommitCause,
        batch: &mut Vec<ConnectionUpdate>,
        state: &[u8],
        report: &mut StepReport,
    ) -> Result<(), ServerError<J::Error>> {
        let side_cause = CommitCause {
            message_type: None,
            ..cause.clone()
        };
        self.journal
            .append(&side_cause, E::empty_changes(), batch, state)
            .map_err(ServerError::Journal)?;
        batch.clear();
        if self.first_append_ns.is_none() {
            self.first_append_ns = Some(self.platform.now_ns());
        }
        report.commits += 1;
        self.stats.commits += 1;
        Ok(())
    }

    /// Publishes everything the step made durable: ring indices, output, notifications.
    fn publish(&mut self) {
        let mut notifications: Vec<u32> = Vec::new();
        for connection in self.table.iter_mut() {
            let Transport::Ring(ring) = &mut connection.transport else {
                continue;
            };
            if ring.reset_pending {
                ring.memory.store_release(Field::ReqCons, 0);
                ring.memory.store_release(Field::ReqProd, 0);
                ring.memory.store_release(Field::RspCons, 0);
                ring.memory.store_release(Field::RspProd, 0);
                let features = ring.memory.load_acquire(Field::ServerFeatures);
                ring.memory
                    .store_release(Field::ServerFeatures, features | ring::SERVER_FEATURES);
                ring.memory.store_release(Field::Error, 0);
                ring.memory.fence();
                ring.memory.store_release(Field::Connection, 0);
                ring.published_cons = 0;
                ring.reset_pending = false;
                ring.notify_pending = true;
            }
            if connection.broken.is_none() {
                let server_ring = ServerRing::new(&ring.memory);
                let mut indices_ok = true;
                if ring.shadow_cons != ring.published_cons {
                    if server_ring
                        .publish_request_consumer(ring.shadow_cons)
                        .is_ok()
                    {
                        ring.published_cons = ring.shadow_cons;
                        ring.notify_pending = true;
                    } else {
                        indices_ok = false;
                    }
                }
                while indices_ok {
                    let chunk = connection.output.front_chunk();
                    if chunk.is_empty() {
                        break;
                    }
                    // `rsp_prod` is ours: a guest that moved it is misbehaving.
                    if ring.memory.load_acquire(Field::RspProd)
                        != connection.output.stream_position()
                    {
                        indices_ok = false;
                        break;
                    }
                    match server_ring.write_replies(chunk) {
                        Ok(transfer) if transfer.bytes == 0 => break,
                        Ok(transfer) => {
                            connection.output.consume(transfer.bytes);
                            ring.notify_pending = true;
                        }
                        Err(_) => indices_ok = false,
                    }
                }
                if !indices_ok {
                    connection.broken = Some(Broken::RingIndices);
                    ring.memory.store_release(Field::Error, ring::ERROR_RINGIDX);
                    ring.notify_pending = true;
                }
            }
            if ring.notify_pending {
                ring.notify_pending = false;
                notifications.push(ring.local_port);
            }
        }
        for port in notifications {
            if let Err(error) = self.platform.notify(port) {
                self.platform.log(Level::Warn, format_args!("{error}"));
            }
        }
    }
}

/// Takes the next whole packet from a connection's input, if one is complete. Ring input is
/// read ahead of the published `req_cons` (the shadow index), exactly as many bytes as the
/// assembler wants, so nothing beyond the current message leaves the ring.
fn next_packet<M: RingMemory>(connection: &mut Connection<M>) -> Result<Option<Message>, Broken> {
    match &mut connection.transport {
        Transport::Ring(ring) => {
            let server_ring = ServerRing::new(&ring.memory);
            let mut buffer = [0u8; xenstore_protocol::limits::RING_SIZE_BYTES];
            // Each round completes a part or empties the ring: bounded by the largest message.
            for _ in 0..=(xenstore_protocol::limits::HEADER_LEN_BYTES
                + xenstore_protocol::limits::PAYLOAD_MAX_BYTES)
                / xenstore_protocol::limits::RING_SIZE_BYTES
                + 2
            {
                let want = connection.assembler.wanted().min(buffer.len());
                let count = server_ring
                    .peek_requests(ring.shadow_cons, &mut buffer[..want])
                    .map_err(|_| Broken::RingIndices)?;
                if count == 0 {
                    return Ok(None);
                }
                let fed = connection
                    .assembler
                    .feed(&buffer[..count])
                    .map_err(|_| Broken::Protocol)?;
                ring.shadow_cons = ring.shadow_cons.wrapping_add(fed.consumed as u32);
                assert_eq!(fed.consumed, count, "assembler took less than it wanted");
                if fed.message.is_some() {
                    return Ok(fed.message);
                }
            }
            Ok(None)
        }
        Transport::Socket(socket) => loop {
            let (front, _) = socket.input.as_slices();
            if front.is_empty() {
                return Ok(None);
            }
            let fed = connection
                .assembler
                .feed(front)
                .map_err(|_| Broken::Protocol)?;
            socket.input.drain(..fed.consumed);
            if fed.message.is_some() {
                return Ok(fed.message);
            }
        },
    }
}

/// Encodes one whole frame. The caller guarantees the payload limit (replies and events are
/// checked against it before they are queued).
fn encode_frame(message_type: MessageType, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    Message::new(message_type, req_id, tx_id, payload.to_vec())
        .expect("frame payload checked against the protocol limit")
        .encode()
}

/// Helper for tests and tools: a request frame.
pub fn request_frame(
    message_type: MessageType,
    req_id: u32,
    tx_id: u32,
    payload: &[u8],
) -> Vec<u8> {
    encode_frame(message_type, req_id, tx_id, payload)
}

/// Helper: parse a header from a frame (tests and tools).
pub fn frame_header(frame: &[u8]) -> Option<Header> {
    Header::parse_bytes(frame.get(..16)?).ok()
}
