//! The xenstore service: the portable server core (`xenstore-server`, with the engine it
//! exports) plugged into the Xen platform layer, and the main loop that drives it.
//!
//! Contract:
//! - the server's platform traits are implemented here over [`crate::platform`]: ring memory =
//!   a grant-mapped page ([`GuestRing`]), event channels = 2-level ports, ring mapping = grant
//!   ref 1 (`GNTTAB_RESERVED_XENSTORE`) of the domain into the grant window, clock = Xen system
//!   time, log = the kernel logger (0xE9 + PV console);
//! - only the server's public API is used. Actions that are not requests go through the
//!   server's platform API: dom0 is introduced at start with `Server::introduce_domain` (C
//!   `init_domain`: its ring indices are kept, dom0's first request is already queued), and
//!   domain state changes found after `VIRQ_DOM_EXC` go to `Server::domain_states` (C
//!   `do_check_domains`: first shutdown fires `@releaseDomain`, death releases the domain);
//! - the main loop scans pending ports, reacts to `VIRQ_DOM_EXC`, steps the server and sleeps
//!   (timer + `hlt`) when a step did nothing — it never spins;
//! - PV console input (`xl console <stubdom>`) is the debug shell: each line goes to
//!   `Server::shell`, the answer back to the console ([`ConsoleShell`]);
//! - persistence (`--persistence`, `--log-device`, see [`crate::options`]): the journal is a
//!   `SwitchableJournal` over a [`LogDevice`]. With `ram:<KiB>` the server starts (cold boot)
//!   or recovers (warm boot) with `start_crash_resilient` on the RAM device and warm restarts
//!   are enabled; with `vbd` it serves volatile until [`on_disk_attached`] switches it onto
//!   the disk (`Server::switch_to_log`); in mode `none` it stays volatile. A recovered server
//!   never introduces dom0 again: its connection is in the log.

use alloc::vec::Vec;
use core::fmt;

use log::{error, info, warn};
use xenstore_persist::{BlockDevice, Config as LogConfig, Log};
use xenstore_protocol::Domid;
use xenstore_server::ring::{DataArea, Field};
use xenstore_server::store_engine::{StoreEngine, start_crash_resilient};
use xenstore_server::switch::SwitchableJournal;
use xenstore_server::{
    Config, DomainState, EventChannels, Level, LogSink, PlatformError, RingLocation, RingMapper,
    Server, ServerError,
};

use crate::log_device::{LogDevice, RamDevice};
use crate::options::{LogDeviceChoice, Persistence, PersistenceOptions};
use crate::platform::{self as kernel_platform, Idle, MappedRing, XenPlatform};
use crate::xen::hypercall::HypercallError;
use crate::xen::{abi, domctl, time};
use crate::{arch, heap, logger, stack, xen};

/// Interval between heartbeat log lines.
const HEARTBEAT_INTERVAL_NS: u64 = 30_000_000_000;
/// Longest sleep: the server is stepped at least this often even without events (a safety
/// net for a peer that frees response space without notifying; Linux and Mini-OS notify).
const IDLE_WAIT_MAX_NS: u64 = 5_000_000_000;
/// Steps in a row without sleeping while steps keep finding work (then one idle check).
const BUSY_STEPS_MAX: u32 = 64;
/// Bound on the domains looked up per `VIRQ_DOM_EXC` (domids are < 0x7FF0).
const DOMAINS_SCANNED_MAX: usize = 0x7FF0;
/// Size of one data ring of the xenstore page (`XENSTORE_RING_SIZE`).
const DATA_RING_BYTES: usize = 1024;

/// A guest's xenstore ring as the server sees it: protocol fields and data areas mapped onto
/// the grant-mapped page (atomic index accesses, volatile data copies: see
/// [`kernel_platform::SharedPage`]).
#[derive(Debug)]
pub struct GuestRing {
    ring: MappedRing,
}

impl xenstore_server::RingMemory for GuestRing {
    fn load_acquire(&self, field: Field) -> u32 {
        kernel_platform::RingMemory::load_acquire(&self.ring, field.offset())
    }

    fn store_release(&self, field: Field, value: u32) {
        kernel_platform::RingMemory::store_release(&self.ring, field.offset(), value)
    }

    fn read_data(&self, area: DataArea, offset: usize, out: &mut [u8]) {
        // Clamp to the area (the protocol's contract asks implementations to).
        let start = offset.min(DATA_RING_BYTES);
        let length = out.len().min(DATA_RING_BYTES - start);
        kernel_platform::RingMemory::read_data(
            &self.ring,
            area.offset() + start,
            &mut out[..length],
        )
    }

    fn write_data(&self, area: DataArea, offset: usize, bytes: &[u8]) {
        let start = offset.min(DATA_RING_BYTES);
        let length = bytes.len().min(DATA_RING_BYTES - start);
        kernel_platform::RingMemory::write_data(&self.ring, area.offset() + start, &bytes[..length])
    }

    fn fence(&self) {
        kernel_platform::RingMemory::fence(&self.ring)
    }
}

/// The server's platform on Xen.
#[derive(Debug)]
pub struct ServerPlatform {
    xen: XenPlatform,
}

impl EventChannels for ServerPlatform {
    fn bind_interdomain(&mut self, domid: Domid, remote_port: u32) -> Result<u32, PlatformError> {
        kernel_platform::EventChannels::bind_interdomain(&mut self.xen, domid.0, remote_port)
            .map_err(|error| {
                warn!("bind_interdomain({}, {remote_port}): {error}", domid.0);
                PlatformError::BindFailed { domid, remote_port }
            })
    }

    fn notify(&mut self, local_port: u32) -> Result<(), PlatformError> {
        kernel_platform::EventChannels::notify(&mut self.xen, local_port)
            .map_err(|_| PlatformError::NotifyFailed { local_port })
    }

    fn unbind(&mut self, local_port: u32) {
        kernel_platform::EventChannels::unbind(&mut self.xen, local_port)
    }
}

impl RingMapper for ServerPlatform {
    type Memory = GuestRing;

    /// Maps grant ref 1 of the domain (the gfn in INTRODUCE is not used, as in C xenstored).
    fn map(&mut self, location: &RingLocation) -> Result<GuestRing, PlatformError> {
        let domid = location.domid;
        let ring = kernel_platform::RingMapper::map(&mut self.xen, domid.0).map_err(|error| {
            warn!("mapping grant ref 1 of domain {}: {error}", domid.0);
            PlatformError::MapFailed { domid }
        })?;
        info!(
            "domain {}: ring mapped at gfn {:#x} (grant handle {})",
            domid.0,
            ring.gfn(),
            ring.handle()
        );
        Ok(GuestRing { ring })
    }

    fn unmap(&mut self, location: &RingLocation, memory: GuestRing) {
        let gfn = memory.ring.gfn();
        match kernel_platform::RingMapper::unmap(&mut self.xen, memory.ring) {
            Ok(()) => info!("domain {}: ring at gfn {gfn:#x} unmapped", location.domid.0),
            Err(error) => error!("domain {}: unmap failed: {error}", location.domid.0),
        }
    }
}

impl xenstore_server::Clock for ServerPlatform {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }
}

impl LogSink for ServerPlatform {
    /// The server already filters by its own debug settings (shell `log` / `trace`), so a
    /// trace line that reaches here was asked for: it is logged at `info` to be visible.
    fn log(&mut self, level: Level, message: fmt::Arguments<'_>) {
        let level = match level {
            Level::Error => log::Level::Error,
            Level::Warn => log::Level::Warn,
            Level::Info | Level::Trace => log::Level::Info,
        };
        log::log!(level, "server: {message}");
    }
}

/// The server as the kernel runs it: the store engine and a journal that is volatile until a
/// log device exists (RAM device at start, or dom0's disk later: any `BlockDevice`, boxed in
/// [`LogDevice`]).
pub type KernelServer = Server<ServerPlatform, StoreEngine, SwitchableJournal<LogDevice>>;

/// Settings of the log's device.
fn log_config() -> LogConfig {
    LogConfig {
        // The devices are memory (own RAM, dom0's RAM disk): a large read cache only costs
        // heap in a small domain.
        read_cache_bytes: 128 * 1024,
        ..LogConfig::default()
    }
}

/// The blkfront driver found dom0's RAM disk (the lead wires this from the driver's poll in
/// the main loop): switches the running server onto a log on `device`, writing the whole state
/// durably (as many commits as it takes, the store appearing with the last one), after which
/// every request is persisted before its reply. Ignored in mode `none`, when the server
/// already runs on a log (the RAM device), and when the disk already holds a store (never
/// overwritten; see `switch::device_holds_store`).
/// True when the server switched onto the device.
pub fn on_disk_attached(server: &mut KernelServer, device: impl BlockDevice + 'static) -> bool {
    match server.journal() {
        SwitchableJournal::Disabled => {
            info!("log disk attached, but persistence is none: not used");
            return false;
        }
        SwitchableJournal::Logged(_) => {
            info!("log disk attached, but the server already persists to a log: not used");
            return false;
        }
        SwitchableJournal::Volatile => {}
    }
    let mut device = device;
    if xenstore_server::switch::device_holds_store(&mut device, log_config()) {
        // Never overwrite durable state: this is an earlier run's store (a relaunch after a
        // cold restart must recover from the disk at start instead of serving volatile).
        error!(
            "log disk attached, but it holds a store from an earlier run: not overwritten; \
             still volatile"
        );
        return false;
    }
    let sectors = device.sector_count();
    let started = time::now_ns();
    match server.switch_to_log(LogDevice::new(device), log_config()) {
        Ok(report) => {
            info!(
                "persistence: switched onto the disk ({sectors} sectors) in {} us: commits \
                 {}..={} ({} bytes) hold the store and {} ring connections; the state is \
                 durable from now on",
                time::now_ns().saturating_sub(started) / 1000,
                report.first_seq,
                report.last_seq,
                report.bytes,
                report.connections
            );
            true
        }
        Err(error) => {
            error!("persistence: switching onto the disk failed: {error}; still volatile");
            false
        }
    }
}

/// What a warm boot knows about the restart that caused it.
#[derive(Debug, Clone, Copy)]
pub struct WarmBoot {
    /// Warm restarts since cold boot (this one included).
    pub restarts: u64,
    /// Xen system time of the crash (0: unknown).
    pub crash_time_ns: u64,
}

/// The persistence options and the RAM log region carved at boot.
#[derive(Debug, Clone, Copy)]
pub struct LogSetup {
    /// `--persistence`, `--log-device`.
    pub persistence: PersistenceOptions,
    /// The RAM log device's region (base, size), when `ram:<KiB>` was carved.
    pub ram_log: Option<(u64, u64)>,
}

/// The server [`create_server`] built, and what the main loop must know about how.
struct Created {
    server: KernelServer,
    /// dom0 must be introduced (not after a recovery: dom0's connection is in the log).
    introduce_dom0: bool,
    /// The blkfront connection was resumed to recover from the disk: no handshake to run.
    disk_resumed: bool,
}

/// Builds the server as the options say.
fn create_server(platform: ServerPlatform, startup: &Startup) -> Created {
    let created = |(server, introduce_dom0)| Created {
        server,
        introduce_dom0,
        disk_resumed: false,
    };
    let store_config = xenstore_store::image::Config {
        privileged_domid: Domid::DOM0,
        store_domid: Domid(startup.own_domid),
        ..Default::default()
    };
    let setup = startup.log_setup;
    let crash_resilient = setup.persistence.persistence == Persistence::CrashResilient;
    let volatile = |platform, journal| {
        Server::new(
            platform,
            StoreEngine::new(store_config.clone()),
            journal,
            Config::default(),
        )
    };
    if !crash_resilient {
        info!("persistence: none (a panic halts the domain; nothing survives a restart)");
        return created((volatile(platform, SwitchableJournal::Disabled), true));
    }
    let Some((base, size)) = setup.ram_log else {
        if setup.persistence.log_device != LogDeviceChoice::Vbd {
            error!("persistence: the RAM log device could not be set up");
        } else if startup.warm_boot.is_some() {
            // Warm restarts are enabled only once the server runs on the disk: recover from it.
            let (server, introduce_dom0) = recover_from_disk(platform, store_config);
            return Created {
                server,
                introduce_dom0,
                disk_resumed: true,
            };
        }
        warn!(
            "persistence: crash-resilient, log device vbd: the state is VOLATILE until dom0 \
             attaches the log disk (a panic before that halts the domain and loses the store)"
        );
        return created((volatile(platform, SwitchableJournal::Volatile), true));
    };
    // SAFETY: the region was carved off the heap at cold boot, recorded in `.warm` and is used
    // by nothing else; this is the only `RamDevice` over it in this run.
    let device = LogDevice::new(unsafe { RamDevice::new(base, size) });
    let log = match startup.warm_boot {
        // A fresh domain: whatever the RAM holds is not ours.
        None => Log::create(device, log_config())
            .unwrap_or_else(|error| crate::panic::halt_with(&alloc::format!("RAM log: {error:?}"))),
        Some(_) => match Log::open(device, log_config()) {
            Ok((log, recovery)) => {
                info!("RAM log opened: newest durable commit {:?}", recovery.seq);
                log
            }
            Err(error) => crate::panic::halt_with(&alloc::format!(
                "warm restart: the RAM log does not open: {error:?}"
            )),
        },
    };
    created(start_logged(
        platform,
        store_config,
        log,
        "the RAM log device",
        || {
            info!(
                "persistence: crash-resilient on the RAM log device ({} KiB at {base:#x}): \
                 the initial store is its first commit; panics restart in place",
                size / 1024
            )
        },
    ))
}

/// Warm boot with the log on dom0's disk: the blkfront connection of the previous run is
/// resumed (requests in flight at the crash drained), its port kept, and the server recovered
/// from the newest durable commit on the disk. Halts when the disk cannot be resumed or
/// read: serving an empty store instead would silently lose the host's state.
fn recover_from_disk(
    platform: ServerPlatform,
    store_config: xenstore_store::image::Config,
) -> (KernelServer, bool) {
    let device = match crate::blkfront::Blkfront::resume() {
        Ok(Some(device)) => device,
        Ok(None) => crate::panic::halt_with(
            "warm restart: the server ran on the disk but no blkfront record survived",
        ),
        Err(error) => crate::panic::halt_with(&alloc::format!(
            "warm restart: cannot resume the log disk: {error}"
        )),
    };
    let _ = crate::warm::keep_port(device.port());
    info!(
        "warm restart: log disk {} resumed ({} sectors, port {})",
        device.frontend_path(),
        xenstore_persist::BlockDevice::sector_count(&device),
        device.port()
    );
    let log = match Log::open(LogDevice::new(device), log_config()) {
        Ok((log, recovery)) => {
            info!("disk log opened: newest durable commit {:?}", recovery.seq);
            log
        }
        Err(error) => crate::panic::halt_with(&alloc::format!(
            "warm restart: the disk log does not open: {error:?}"
        )),
    };
    start_logged(platform, store_config, log, "the disk", || {
        error!("warm restart: the disk held no store; started a fresh one")
    })
}

/// Starts (fresh) or recovers the server on an opened log and enables warm restarts; true
/// when dom0 must be introduced (a fresh store).
fn start_logged(
    platform: ServerPlatform,
    store_config: xenstore_store::image::Config,
    log: Log<LogDevice>,
    what: &str,
    on_fresh: impl FnOnce(),
) -> (KernelServer, bool) {
    let (server, started) =
        match start_crash_resilient(platform, Config::default(), store_config, log, |engine| {
            engine
        }) {
            Ok(started) => started,
            Err(error) => crate::panic::halt_with(&alloc::format!(
                "starting the crash-resilient server on {what} failed: {error}"
            )),
        };
    let server = server.map_journal(SwitchableJournal::Logged);
    crate::warm::enable();
    match started {
        xenstore_server::store_engine::Started::Fresh => {
            on_fresh();
            (server, true)
        }
        xenstore_server::store_engine::Started::Recovered(report) => {
            info!(
                "persistence: recovered from {what}: {} rings re-attached, {} lost, {} \
                 broken; {} reply bytes already delivered skipped, {} request bytes republished",
                report.rings_attached,
                report.rings_lost,
                report.rings_broken,
                report.output_bytes_skipped,
                report.request_bytes_republished
            );
            (server, false)
        }
    }
}

/// Domain-state tracking after `VIRQ_DOM_EXC` (C `do_check_domains`): the state of every
/// domain with a ring connection is read with `getdomaininfo` and handed to
/// `Server::domain_states`, which reports a first shutdown once (`@releaseDomain`, nodes
/// stay) and releases dead domains (connection closed, nodes removed, `@releaseDomain`).
#[derive(Debug, Default)]
struct DomainMonitor {
    store_domid: u16,
    /// Domains whose shutdown was already logged.
    shutdown_logged: alloc::collections::BTreeSet<u16>,
}

impl DomainMonitor {
    fn scan(&mut self, server: &mut KernelServer) {
        let introduced: Vec<u16> = server
            .connections()
            .iter()
            .filter(|connection| connection.ring().is_some())
            .map(|connection| connection.domid.0)
            .filter(|&domid| domid != 0 && domid != self.store_domid)
            .take(DOMAINS_SCANNED_MAX)
            .collect();
        self.shutdown_logged
            .retain(|domid| introduced.contains(domid));
        let mut states: Vec<DomainState> = Vec::new();
        for domid in introduced {
            // Up to 4.17 getdomaininfo answers the next domain at or above the id; from 4.18
            // ESRCH. Either way a different domid or ESRCH means this one is gone.
            let (shutdown, dead) = match domctl::getdomaininfo(domid) {
                Ok(found) if found.domid == domid => (found.shutdown(), found.dying()),
                Ok(_) | Err(HypercallError(abi::XEN_ESRCH)) => (false, true),
                Err(error) => {
                    warn!("getdomaininfo({domid}) failed: {error}; state unknown");
                    continue;
                }
            };
            if dead {
                info!("domain {domid} is dying or gone: releasing it");
            } else if shutdown && self.shutdown_logged.insert(domid) {
                info!("domain {domid} shut down: @releaseDomain (nodes kept until it dies)");
            }
            if shutdown || dead {
                states.push(DomainState {
                    domid: Domid(domid),
                    shutdown,
                    dead,
                });
            }
        }
        if let Err(error) = server.domain_states(&states) {
            error!("reporting domain states failed: {error}");
        }
    }
}

/// The debug shell on the PV console: bytes from `xl console` are assembled into lines
/// (bounded, see `xenstore_shell::LineBuffer`), echoed, run by `Server::shell`, answered.
#[derive(Debug, Default)]
struct ConsoleShell {
    line: xenstore_shell::LineBuffer,
}

/// Console input read per loop iteration at most (the rest waits for the next iteration).
const CONSOLE_INPUT_PER_ITERATION_BYTES: usize = 256;

impl ConsoleShell {
    /// Handles pending console input; true when some arrived.
    fn poll(&mut self, server: &mut KernelServer) -> bool {
        let mut buffer = [0u8; CONSOLE_INPUT_PER_ITERATION_BYTES];
        let count = xen::console::read_bytes(&mut buffer);
        for &byte in &buffer[..count] {
            match self.line.push(byte) {
                xenstore_shell::LineEvent::Pending => {
                    if (0x20..0x7f).contains(&byte) {
                        xen::console::write_bytes(&[byte]);
                    } else if byte == 0x08 || byte == 0x7f {
                        xen::console::write_bytes(b"\x08 \x08");
                    }
                }
                xenstore_shell::LineEvent::Line(text) => {
                    xen::console::write_bytes(b"\r\n");
                    if !text.trim().is_empty() {
                        let answer = server.shell(&text);
                        write_console_text(&answer);
                    }
                    xen::console::write_bytes(b"xenstore> ");
                }
                xenstore_shell::LineEvent::Overflow => {
                    xen::console::write_bytes(b"\r\nerror: line too long\r\nxenstore> ")
                }
            }
        }
        count > 0
    }
}

/// Writes shell output to the console with CR LF line ends (the console is a raw terminal).
fn write_console_text(text: &str) {
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(body) => {
                xen::console::write_bytes(body.as_bytes());
                xen::console::write_bytes(b"\r\n");
            }
            None => xen::console::write_bytes(line.as_bytes()),
        }
    }
}

/// What the platform bring-up hands to the service.
#[derive(Debug)]
pub struct Startup {
    /// dom0's event channel port from `--event` (None: not started by init-xenstore-domain).
    pub dom0_remote_port: Option<u32>,
    /// Our own domid.
    pub own_domid: u16,
    /// Port bound to `VIRQ_DOM_EXC`, if we are its handler.
    pub dom_exc_port: Option<u32>,
    /// TSC value at kernel entry (for the boot-time measurement).
    pub entry_tsc: u64,
    /// Persistence options and the RAM log region.
    pub log_setup: LogSetup,
    /// Set on a warm boot.
    pub warm_boot: Option<WarmBoot>,
    /// Whether the blkfront driver runs (`--blkfront=off` disables it).
    pub blkfront_enabled: bool,
}

/// Nanoseconds since kernel entry.
fn since_entry_ns(entry_tsc: u64) -> u64 {
    let time = xen::shared_info::vcpu_time();
    time::scale_delta(
        arch::rdtsc().wrapping_sub(entry_tsc),
        time.tsc_to_system_mul,
        time.tsc_shift,
    )
}

/// Creates the server, introduces dom0 and runs the main loop forever.
pub fn run(xen: XenPlatform, startup: Startup) -> ! {
    let platform = ServerPlatform { xen };
    let Created {
        mut server,
        introduce_dom0,
        disk_resumed,
    } = create_server(platform, &startup);
    let mut monitor = DomainMonitor {
        store_domid: startup.own_domid,
        ..Default::default()
    };
    info!(
        "server core ready (engine: store, journal: {}); {} connections",
        xenstore_server::Journal::<xenstore_server::store_engine::StoreChanges>::mode_name(
            server.journal()
        ),
        server.connections().len()
    );
    match startup.dom0_remote_port {
        _ if !introduce_dom0 => info!("dom0's connection was recovered from the log"),
        Some(port) => {
            // dom0's ring is grant ref 1 (the gfn is not used for mapping, as in C).
            let location = RingLocation {
                domid: Domid::DOM0,
                gfn: u64::from(abi::GNTTAB_RESERVED_XENSTORE),
                remote_port: port,
            };
            match server.introduce_domain(location) {
                Ok(id) => info!("dom0 introduced (event port {port}) as connection {id:?}"),
                Err(error) => error!("introducing dom0 (event port {port}) failed: {error}"),
            }
        }
        None => warn!("no dom0 event port: serving nobody until an INTRODUCE arrives"),
    }

    // A warm boot on the disk resumed the blkfront connection in `create_server` already.
    let mut disk = DiskHook::start(startup.own_domid, startup.blkfront_enabled && !disk_resumed);
    disk.poll(&mut server);

    let mut shell = ConsoleShell::default();
    let mut dom0_served = startup.warm_boot.is_some();
    let mut warm_pending = startup.warm_boot;
    let mut restart_refused = false;
    let mut busy_steps = 0u32;
    let mut wakeups: u64 = 0;
    let mut events: u64 = 0;
    let mut connections_seen = 0usize;
    let mut next_heartbeat = time::now_ns() + HEARTBEAT_INTERVAL_NS;
    // After a warm restart a VIRQ_DOM_EXC may have fired while nobody was bound to it: look
    // at every connected domain once.
    let mut scan_domains_once = startup.warm_boot.is_some();
    loop {
        let mut domain_changed = core::mem::take(&mut scan_domains_once);
        kernel_platform::EventChannels::poll(&mut server.platform_mut().xen, &mut |port| {
            events += 1;
            if Some(port) == startup.dom_exc_port {
                domain_changed = true;
            }
        });
        if domain_changed {
            monitor.scan(&mut server);
        }
        shell.poll(&mut server);
        let report = match server.step() {
            Ok(report) => report,
            // `inject-crash` (shell or XS_CONTROL): crash for real; with a log on a surviving
            // device the panic handler restarts in place.
            Err(ServerError::InjectedCrash(point)) => {
                crate::warm::note_injected_panic();
                panic!("inject-crash: injected crash at {point}")
            }
            // Nothing of the failed step was transmitted: restart and recover (the server's
            // policy); without a log there is nothing to restart from.
            Err(ServerError::Journal(error)) => panic!("journal failure: {error}"),
            Err(error) => {
                error!("server step failed: {error}");
                Default::default()
            }
        };
        disk.poll(&mut server);
        if let Some(warm_boot) = warm_pending.take() {
            let now = time::now_ns();
            let (used, free) = heap::usage();
            if warm_boot.crash_time_ns == 0 {
                info!(
                    "warm restart {}: serving again (crash time unknown; {} ms after the warm \
                     entry); {} connections; heap {} KiB used / {} KiB free",
                    warm_boot.restarts,
                    since_entry_ns(startup.entry_tsc) / 1_000_000,
                    server.connections().len(),
                    used / 1024,
                    free / 1024
                );
            } else {
                let elapsed_us = now.saturating_sub(warm_boot.crash_time_ns) / 1000;
                info!(
                    "warm restart {}: serving again after {}.{:03} ms ({} connections; heap {} \
                     KiB used / {} KiB free)",
                    warm_boot.restarts,
                    elapsed_us / 1000,
                    elapsed_us % 1000,
                    server.connections().len(),
                    used / 1024,
                    free / 1024
                );
            }
        }
        if server.restart_requested() && !restart_refused {
            match crate::warm::check_restart(crate::warm::RestartReason::Requested) {
                Ok(()) => {
                    warn!(
                        "shell asked for a restart: warm restart {} in place, recovering from \
                         the log",
                        crate::warm::restarts() + 1
                    );
                    crate::warm::restart();
                }
                Err(refused) => {
                    restart_refused = true;
                    warn!("shell asked for a restart: refused ({refused}); still serving");
                }
            }
        }

        if !dom0_served
            && let Some(dom0) = server.connections().by_domid(Domid::DOM0)
            && server
                .connections()
                .get(dom0)
                .is_some_and(|connection| connection.requests > 0)
        {
            dom0_served = true;
            let elapsed = since_entry_ns(startup.entry_tsc);
            let (used, free) = heap::usage();
            info!(
                "BOOT: serving dom0: first request answered {} ms after kernel entry \
                 (Xen time {} ms); heap {} KiB used / {} KiB free",
                elapsed / 1_000_000,
                time::now_ns() / 1_000_000,
                used / 1024,
                free / 1024
            );
        }
        let connections = server.connections().len();
        if connections != connections_seen {
            connections_seen = connections;
            let (used, free) = heap::usage();
            info!(
                "connections: {connections}; heap {} KiB used / {} KiB free",
                used / 1024,
                free / 1024
            );
        }

        let now = time::now_ns();
        if now >= next_heartbeat {
            let (used, free) = heap::usage();
            let stats = server.stats();
            // Two short lines: Xen's 0xE9 line buffer splits lines longer than ~200 bytes.
            info!(
                "heartbeat: {} s, {wakeups} wake-ups, {events} events, {} upcalls, {} requests, \
                 {connections} connections",
                now / 1_000_000_000,
                arch::upcall_count(),
                stats.requests,
            );
            info!(
                "heartbeat: heap {} KiB used / {} KiB free, stack {}; console {} bytes written / \
                 {} lost; {} log records dropped",
                used / 1024,
                free / 1024,
                stack::boot_stack_usage(),
                xen::console::written_bytes(),
                xen::console::lost_bytes(),
                logger::records_dropped()
            );
            next_heartbeat = now + HEARTBEAT_INTERVAL_NS;
        }

        if (report.requests > 0 || report.more_work) && busy_steps < BUSY_STEPS_MAX {
            // Work was done: step again at once (new connections are served from the next
            // step; replies may have unblocked peers).
            busy_steps += 1;
            continue;
        }
        busy_steps = 0;
        let deadline = next_heartbeat.min(now + IDLE_WAIT_MAX_NS);
        Idle::wait(&server.platform().xen, Some(deadline));
        wakeups += 1;
    }
}

/// The blkfront integration, kept in one place: resume after a warm restart or run the
/// handshake; [`on_disk_attached`] is called once when a device is ready. Polling is cheap
/// until then (the driver returns at once unless its local xenstore connection has output).
#[derive(Debug)]
struct DiskHook {
    driver: crate::blkfront::BlkfrontDriver,
    resumed: Option<crate::blkfront::Blkfront>,
}

impl DiskHook {
    fn start(own_domid: u16, enabled: bool) -> DiskHook {
        let mut resumed = None;
        let mut run_handshake = enabled;
        if enabled {
            match crate::blkfront::Blkfront::resume() {
                Ok(Some(device)) => {
                    resumed = Some(device);
                    run_handshake = false;
                }
                Ok(None) => {}
                Err(error) => {
                    error!(
                        "blkfront: cannot resume after a warm restart: {error}; disk left alone"
                    );
                    run_handshake = false;
                }
            }
        } else {
            info!("blkfront: no handshake (--blkfront=off, or the disk was resumed at start)");
        }
        DiskHook {
            driver: crate::blkfront::BlkfrontDriver::new(own_domid, run_handshake),
            resumed,
        }
    }

    fn poll(&mut self, server: &mut KernelServer) {
        let device = match self.resumed.take() {
            Some(device) => Some(device),
            None => self.driver.poll(server),
        };
        if let Some(device) = device {
            disk_connected(server, device);
        }
    }
}

/// Called once when the vbd is connected (handshake done, or resumed after a warm restart of
/// a server that did not run on it): the non-destructive self-tests (a scratch range at the end
/// of the disk is written, read back and restored; a request is left in flight and the resume
/// path drains it), then the switch onto the disk. Once the server runs on it, the blkfront
/// port is kept across warm restarts and panics restart in place.
fn disk_connected(server: &mut KernelServer, mut device: crate::blkfront::Blkfront) {
    use xenstore_persist::BlockDevice;
    info!(
        "blkfront: connected {} (backend domain {}, {}): {} sectors ({} MiB), port {}, flush {:?}",
        device.frontend_path(),
        device.backend_domid(),
        device.backend_path(),
        device.sector_count(),
        device.sector_count() / 2048,
        device.port(),
        device.flush_mode()
    );
    info!(
        "blkfront: a warm restart must keep event channel port {:?} bound",
        crate::blkfront::warm_kept_port()
    );
    match crate::blkfront::self_test(&mut device) {
        Ok(summary) => info!("blkfront: self-test passed: {summary}"),
        Err(reason) => error!("blkfront: self-test FAILED: {reason}"),
    }
    let device = match crate::blkfront::resume_self_test(device) {
        Ok(device) => {
            info!("blkfront: resume self-test passed");
            device
        }
        Err(reason) => {
            error!("blkfront: resume self-test FAILED: {reason}; the disk is not used");
            return;
        }
    };
    let port = device.port();
    if on_disk_attached(server, device) {
        if crate::warm::keep_port(port) {
            crate::warm::enable();
            info!("warm restart enabled: the log disk's port {port} stays bound across restarts");
        } else {
            error!("cannot keep port {port} across warm restarts: panics will halt");
        }
    }
}
