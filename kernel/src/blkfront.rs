//! blkfront: the xenstore domain's own virtual block device (a vbd that dom0 attaches to it,
//! e.g. the RAM disk of `scripts/xenstore-ramdisk`), the disk the journal is written on.
//!
//! Two parts:
//! - [`BlkfrontDriver`]: the xenbus frontend handshake (xen.git `xen/include/public/io/blkif.h`
//!   "Frontend/backend setup", `io/xenbus.h` states), driven from the server's OWN store
//!   through [`crate::xenbus_local`]: watch `/local/domain/<own>/device/vbd`, pick the lowest
//!   device id, follow the backend's `state`; on InitWait grant the ring page and the data
//!   pages, `alloc_unbound` a port for the backend, write `ring-ref`, `event-channel`,
//!   `protocol` = `x86_64-abi`, `state` = 3; on Connected read `sectors`, `sector-size`,
//!   `info`, `feature-flush-cache` / `feature-barrier`, write `state` = 4 and hand out a
//!   [`Blkfront`]. A bad backend value is logged and leaves the driver disconnected
//!   ([`Phase::Failed`]); nothing panics on what the backend or the store says.
//! - [`Blkfront`]: the connected device, implementing `xenstore_persist::BlockDevice` with
//!   512-byte sectors. A transfer is staged in [`DATA_PAGES`] permanently granted data pages:
//!   each chunk becomes up to `DATA_PAGES / 11` requests of 11 segments, pushed together with
//!   one notification, then all responses are awaited (`SCHEDOP_poll` on the port with a
//!   deadline: a timeout is [`BlkfrontError::Timeout`], never a panic or a blind spin).
//!   `flush` sends `BLKIF_OP_FLUSH_DISKCACHE` or `BLKIF_OP_WRITE_BARRIER`, whichever the
//!   backend advertises.
//!
//! Warm restart: the ring page, the data pages and a [`WarmRecord`] (grant refs, port, backend
//! domid, paths, geometry, flush mode, indices) live in the `.warm` linker section, which the
//! boot code does not zero (only Xen's ELF loader does, at domain build). After a restart of
//! the kernel in the same domain, [`Blkfront::resume`] validates the record (magic, version,
//! checksum, and that the grant entries still grant those pages to that backend), drains the
//! requests that were in flight at the crash (so a stale write can never land after a new
//! one) and returns the device without a new handshake. [`warm_kept_port`] names the event
//! channel port that the restart must keep bound.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

use log::{error, info, warn};
use xenstore_persist::{BlockDevice, DeviceError};
use xenstore_server::{Engine, Journal, Platform, Server};

use crate::xen::abi::{DomainId, EvtchnPort, GrantRef};
use crate::xen::blkif::{
    self, BlkifRequest, BlkifRequestSegment, BlkifResponse, RING_SIZE, SECTOR_BYTES,
    SECTORS_PER_PAGE, XenbusState,
};
use crate::xen::grant_table::{self, GrantTableError};
use crate::xen::{evtchn, sched, time};
use crate::xenbus_local::{LocalXenbus, XenbusError};

/// Data pages shared with the backend (256 KiB): the most one batch transfers.
pub const DATA_PAGES: usize = 64;
/// Sectors one batch transfers at most.
pub const BATCH_SECTORS_MAX: usize = DATA_PAGES * SECTORS_PER_PAGE;
const _: () = assert!(
    DATA_PAGES.div_ceil(blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST) <= RING_SIZE as usize,
    "one batch must fit the ring"
);
/// How long a batch (or the drain on resume) may take before it is a timeout.
pub const IO_TIMEOUT_NS: u64 = 30_000_000_000;
/// Longest xenstore path kept in the warm record.
pub const PATH_BYTES_MAX: usize = 128;
/// Warm record magic ("xsblkfr1") and layout version.
const WARM_MAGIC: u64 = u64::from_le_bytes(*b"xsblkfr1");
const WARM_VERSION: u32 = 1;
/// Token of the watch on the device directory and on the backend's state.
const TOKEN_DEVICES: &str = "blkfront-vbd";
const TOKEN_BACKEND: &str = "blkfront-backend";

/// Why the frontend failed. Policy: handshake errors leave the driver disconnected (logged);
/// I/O errors are returned to the caller (the journal treats them as a device fault) and the
/// device stays usable when the ring is consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkfrontError {
    /// Local xenstore access failed.
    Xenbus(XenbusError),
    /// The own grant table could not be used.
    GrantTable(GrantTableError),
    /// An event-channel operation failed.
    Evtchn(evtchn::EvtchnError),
    /// A backend node is missing or malformed (node, value).
    BadBackendValue(&'static str, String),
    /// The backend offers something we cannot use (reason).
    Unsupported(String),
    /// No response within [`IO_TIMEOUT_NS`] (responses seen / expected).
    Timeout { answered: u32, expected: u32 },
    /// The backend's ring indices or response ids are inconsistent.
    BackendProtocol(&'static str),
    /// The backend answered a request with a non-OKAY status.
    Io { operation: u8, status: i16 },
    /// The warm record is present but unusable (reason).
    WarmRecordInvalid(&'static str),
}

impl core::fmt::Display for BlkfrontError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlkfrontError::Xenbus(error) => write!(f, "xenstore: {error}"),
            BlkfrontError::GrantTable(error) => write!(f, "grant table: {error}"),
            BlkfrontError::Evtchn(error) => write!(f, "event channel: {error}"),
            BlkfrontError::BadBackendValue(node, value) => {
                write!(f, "backend node {node} has a bad value {value:?}")
            }
            BlkfrontError::Unsupported(reason) => write!(f, "unsupported backend: {reason}"),
            BlkfrontError::Timeout { answered, expected } => write!(
                f,
                "timeout after {} s: {answered} of {expected} responses",
                IO_TIMEOUT_NS / 1_000_000_000
            ),
            BlkfrontError::BackendProtocol(what) => write!(f, "backend protocol error: {what}"),
            BlkfrontError::Io { operation, status } => {
                write!(f, "operation {operation} failed with status {status}")
            }
            BlkfrontError::WarmRecordInvalid(reason) => write!(f, "warm record invalid: {reason}"),
        }
    }
}

impl From<XenbusError> for BlkfrontError {
    fn from(error: XenbusError) -> Self {
        BlkfrontError::Xenbus(error)
    }
}

impl From<GrantTableError> for BlkfrontError {
    fn from(error: GrantTableError) -> Self {
        BlkfrontError::GrantTable(error)
    }
}

impl From<evtchn::EvtchnError> for BlkfrontError {
    fn from(error: evtchn::EvtchnError) -> Self {
        BlkfrontError::Evtchn(error)
    }
}

impl BlkfrontError {
    /// The `DeviceError` the journal sees (negative Linux errno as the code).
    fn device_error(&self) -> DeviceError {
        let code = match self {
            BlkfrontError::Timeout { .. } => -110,       // ETIMEDOUT
            BlkfrontError::BackendProtocol(_) => -71,    // EPROTO
            BlkfrontError::Io { status: -2, .. } => -95, // EOPNOTSUPP
            _ => -5,                                     // EIO
        };
        DeviceError::Io { code }
    }
}

/// How `flush` reaches durable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Neither feature advertised: `flush` is a no-op (warned at connect).
    None,
    /// `BLKIF_OP_FLUSH_DISKCACHE` (`feature-flush-cache` = 1).
    FlushDiskCache,
    /// `BLKIF_OP_WRITE_BARRIER` (`feature-barrier` = 1).
    WriteBarrier,
}

impl FlushMode {
    fn to_byte(self) -> u8 {
        match self {
            FlushMode::None => 0,
            FlushMode::FlushDiskCache => 1,
            FlushMode::WriteBarrier => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<FlushMode> {
        match byte {
            0 => Some(FlushMode::None),
            1 => Some(FlushMode::FlushDiskCache),
            2 => Some(FlushMode::WriteBarrier),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FlushMode::None => "none (no flush feature advertised)",
            FlushMode::FlushDiskCache => "BLKIF_OP_FLUSH_DISKCACHE",
            FlushMode::WriteBarrier => "BLKIF_OP_WRITE_BARRIER",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The `.warm` section: ring page, data pages, record.

/// One page of memory shared with the backend.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Everything blkfront needs to resume after a warm restart. Layout version [`WARM_VERSION`];
/// the checksum covers every byte before it; the two indices after it are diagnostics only
/// (resume derives them from the ring page). All padding is explicit.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WarmRecord {
    /// [`WARM_MAGIC`] once the record is complete; 0 = no device (cold boot or invalidated).
    pub magic: u64,
    pub version: u32,
    pub record_bytes: u32,
    pub backend_domid: DomainId,
    /// The vbd handle (device id) put in every request.
    pub handle: u16,
    /// [`FlushMode`] as a byte.
    pub flush_mode: u8,
    pub pad0: [u8; 3],
    /// Our event channel port (bound to the backend).
    pub port: EvtchnPort,
    pub ring_ref: GrantRef,
    pub data_refs: [GrantRef; DATA_PAGES],
    /// Device size in 512-byte sectors.
    pub sector_count: u64,
    pub sector_size: u32,
    pub frontend_path_bytes: u32,
    pub frontend_path: [u8; PATH_BYTES_MAX],
    pub backend_path_bytes: u32,
    pub pad1: u32,
    pub backend_path: [u8; PATH_BYTES_MAX],
    /// FNV-1a 64 of every byte before this field.
    pub checksum: u64,
    /// Our private request producer at the last batch (diagnostics).
    pub req_prod_pvt: u32,
    /// Our response consumer at the last batch (diagnostics).
    pub rsp_cons: u32,
}
const WARM_CHECKSUM_OFFSET: usize = core::mem::offset_of!(WarmRecord, checksum);
const _: () = assert!(WARM_CHECKSUM_OFFSET == 568);
const _: () = assert!(core::mem::size_of::<WarmRecord>() == 584);

impl WarmRecord {
    const ZERO: WarmRecord = WarmRecord {
        magic: 0,
        version: 0,
        record_bytes: 0,
        backend_domid: 0,
        handle: 0,
        flush_mode: 0,
        pad0: [0; 3],
        port: 0,
        ring_ref: 0,
        data_refs: [0; DATA_PAGES],
        sector_count: 0,
        sector_size: 0,
        frontend_path_bytes: 0,
        frontend_path: [0; PATH_BYTES_MAX],
        backend_path_bytes: 0,
        pad1: 0,
        backend_path: [0; PATH_BYTES_MAX],
        checksum: 0,
        req_prod_pvt: 0,
        rsp_cons: 0,
    };

    fn compute_checksum(&self) -> u64 {
        // SAFETY: `WarmRecord` is `repr(C)` with only integer fields and explicit padding
        // (sizes asserted above), so its first WARM_CHECKSUM_OFFSET bytes are initialised.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                self as *const WarmRecord as *const u8,
                WARM_CHECKSUM_OFFSET,
            )
        };
        fnv1a(bytes)
    }

    fn path(bytes: &[u8; PATH_BYTES_MAX], length: u32) -> Option<String> {
        let text = bytes.get(..length as usize)?;
        core::str::from_utf8(text).ok().map(String::from)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[repr(C, align(4096))]
struct WarmArea {
    ring: Page,
    data: [Page; DATA_PAGES],
    record: WarmRecord,
}

/// Interior-mutable holder of the warm area.
struct WarmCell(UnsafeCell<WarmArea>);

// SAFETY: the kernel runs on one vCPU without preemption; the area is only reached through
// raw pointers by this module (the ring and data pages are additionally shared with the
// backend, which is why they are only accessed with atomics / volatile copies).
unsafe impl Sync for WarmCell {}

/// Not zeroed by the boot code (it lies after `__bss_end`, see linker.ld); zero at domain
/// build because Xen's ELF loader clears the image's memory beyond the file contents.
#[unsafe(link_section = ".warm")]
static WARM: WarmCell = WarmCell(UnsafeCell::new(WarmArea {
    ring: Page([0; 4096]),
    data: [const { Page([0; 4096]) }; DATA_PAGES],
    record: WarmRecord::ZERO,
}));

fn warm_area() -> *mut WarmArea {
    WARM.0.get()
}

fn ring_address() -> u64 {
    // SAFETY: only the address is taken (no reference is created).
    unsafe { core::ptr::addr_of_mut!((*warm_area()).ring) as u64 }
}

fn data_page_address(index: usize) -> u64 {
    assert!(index < DATA_PAGES, "data page {index} out of range");
    // SAFETY: only the address is taken; `index` is in bounds (asserted).
    unsafe { core::ptr::addr_of_mut!((*warm_area()).data[index]) as u64 }
}

fn record_pointer() -> *mut WarmRecord {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!((*warm_area()).record) }
}

fn read_record() -> WarmRecord {
    // SAFETY: the record is plain integers, always initialised (zero at build), and nobody
    // else writes it concurrently (single vCPU); volatile so a restart sees memory as is.
    unsafe { core::ptr::read_volatile(record_pointer()) }
}

/// Writes `record` so that a crash at any point leaves either no valid record or this one:
/// magic cleared first, body written, then the magic (checksum computed with the magic set).
fn commit_record(mut record: WarmRecord) {
    record.magic = WARM_MAGIC;
    record.version = WARM_VERSION;
    record.record_bytes = core::mem::size_of::<WarmRecord>() as u32;
    record.checksum = record.compute_checksum();
    let pointer = record_pointer();
    // SAFETY: as in `read_record`; the fences order the three stores for a later reader in
    // the same domain (a restarted kernel), which is all that matters here.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*pointer).magic), 0);
        core::sync::atomic::fence(Ordering::SeqCst);
        let mut body = record;
        body.magic = 0;
        core::ptr::write_volatile(pointer, body);
        core::sync::atomic::fence(Ordering::SeqCst);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*pointer).magic), WARM_MAGIC);
    }
}

/// Updates the diagnostic indices (outside the checksum).
fn record_indices(req_prod_pvt: u32, rsp_cons: u32) {
    let pointer = record_pointer();
    // SAFETY: as in `read_record`; fields outside the checksummed prefix.
    unsafe {
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!((*pointer).req_prod_pvt),
            req_prod_pvt,
        );
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*pointer).rsp_cons), rsp_cons);
    }
}

/// Clears the record (a new handshake starts; the old device is gone).
fn invalidate_record() {
    // SAFETY: as in `commit_record`.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*record_pointer()).magic), 0) };
}

/// The valid warm record, `Ok(None)` when there is none (magic 0), or why it is unusable.
fn valid_record() -> Result<Option<WarmRecord>, BlkfrontError> {
    let record = read_record();
    if record.magic == 0 {
        return Ok(None);
    }
    if record.magic != WARM_MAGIC {
        return Err(BlkfrontError::WarmRecordInvalid("bad magic"));
    }
    if record.version != WARM_VERSION
        || record.record_bytes != core::mem::size_of::<WarmRecord>() as u32
    {
        return Err(BlkfrontError::WarmRecordInvalid("other layout version"));
    }
    if record.compute_checksum() != record.checksum {
        return Err(BlkfrontError::WarmRecordInvalid("checksum mismatch"));
    }
    Ok(Some(record))
}

/// The event channel port a warm restart must keep bound (the connected blkfront's), if any.
pub fn warm_kept_port() -> Option<u32> {
    match valid_record() {
        Ok(Some(record)) => Some(record.port),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The shared ring (front side).

fn ring_word(offset: usize) -> &'static AtomicU32 {
    assert!(offset < blkif::RING_HEADER_BYTES && offset.is_multiple_of(4));
    // SAFETY: the ring page is a static page-aligned page (so the u32 at a 4-aligned header
    // offset is in bounds and aligned); the backend updates these words concurrently, hence
    // atomics.
    unsafe { AtomicU32::from_ptr((ring_address() as usize + offset) as *mut u32) }
}

fn write_request(index: u32, request: &BlkifRequest) {
    let address = ring_address() as usize + blkif::slot_offset(index);
    // SAFETY: `slot_offset` stays inside the page (RING_SIZE slots of SLOT_BYTES after the
    // 64-byte header fit in 4096 bytes, asserted in blkif.rs); the slot is ours until
    // `req_prod` covers it; 8-aligned (64 + k·112).
    unsafe { core::ptr::write_volatile(address as *mut BlkifRequest, *request) };
}

fn read_response(index: u32) -> BlkifResponse {
    let address = ring_address() as usize + blkif::slot_offset(index);
    // SAFETY: as in `write_request`; the backend wrote this slot before publishing `rsp_prod`
    // (read with acquire by the caller).
    unsafe { core::ptr::read_volatile(address as *const BlkifResponse) }
}

/// Resets the ring page (ring.h `SHARED_RING_INIT`): indices 0, event thresholds 1.
fn ring_init() {
    // SAFETY: the ring page is not shared yet (not granted, or a new handshake replaces the
    // old one); plain writes of our own static page.
    unsafe { core::ptr::write_bytes(ring_address() as *mut u8, 0, 4096) };
    ring_word(blkif::OFFSET_REQ_EVENT).store(1, Ordering::SeqCst);
    ring_word(blkif::OFFSET_RSP_EVENT).store(1, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------------
// The connected device.

/// Counters for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkfrontStats {
    pub batches: u64,
    pub requests: u64,
    pub sectors_read: u64,
    pub sectors_written: u64,
    pub flushes: u64,
    pub notifications: u64,
    pub polls: u64,
}

/// A connected vbd.
#[derive(Debug)]
pub struct Blkfront {
    backend_domid: DomainId,
    handle: u16,
    port: EvtchnPort,
    sector_count: u64,
    flush_mode: FlushMode,
    data_refs: [GrantRef; DATA_PAGES],
    req_prod_pvt: u32,
    rsp_cons: u32,
    next_id: u64,
    frontend_path: String,
    backend_path: String,
    stats: BlkfrontStats,
}

impl Blkfront {
    /// Re-attaches the device a previous kernel instance connected (warm restart), without a
    /// new handshake. `Ok(None)`: no warm record (cold boot). Requests that were in flight at
    /// the crash are waited for (their results dropped) before the device is returned, so none
    /// of them can land after a new write. Call it once per kernel instance: two `Blkfront`s
    /// over the same ring would interleave their requests.
    pub fn resume() -> Result<Option<Blkfront>, BlkfrontError> {
        let Some(record) = valid_record()? else {
            return Ok(None);
        };
        let flush_mode = FlushMode::from_byte(record.flush_mode)
            .ok_or(BlkfrontError::WarmRecordInvalid("flush mode"))?;
        let frontend_path = WarmRecord::path(&record.frontend_path, record.frontend_path_bytes)
            .ok_or(BlkfrontError::WarmRecordInvalid("frontend path"))?;
        let backend_path = WarmRecord::path(&record.backend_path, record.backend_path_bytes)
            .ok_or(BlkfrontError::WarmRecordInvalid("backend path"))?;
        if record.port >= evtchn::PORTS_MAX || record.sector_size as usize != SECTOR_BYTES {
            return Err(BlkfrontError::WarmRecordInvalid("port or sector size"));
        }
        grant_table::map_frames()?;
        let domid = record.backend_domid;
        if !grant_table::is_granted(record.ring_ref, domid, ring_address() >> 12) {
            return Err(BlkfrontError::WarmRecordInvalid("ring grant gone"));
        }
        for (index, &grant_ref) in record.data_refs.iter().enumerate() {
            if !grant_table::is_granted(grant_ref, domid, data_page_address(index) >> 12) {
                return Err(BlkfrontError::WarmRecordInvalid("data grant gone"));
            }
        }
        evtchn::unmask(record.port)?;
        // Only published requests exist for the backend: restart from the shared req_prod.
        let req_prod = ring_word(blkif::OFFSET_REQ_PROD).load(Ordering::Acquire);
        let mut device = Blkfront {
            backend_domid: domid,
            handle: record.handle,
            port: record.port,
            sector_count: record.sector_count,
            flush_mode,
            data_refs: record.data_refs,
            req_prod_pvt: req_prod,
            rsp_cons: req_prod,
            next_id: 0,
            frontend_path,
            backend_path,
            stats: BlkfrontStats::default(),
        };
        // Published but not consumed by the previous instance (its rsp_cons is diagnostic).
        let unconsumed = req_prod.wrapping_sub(record.rsp_cons).min(RING_SIZE);
        let unanswered = device.drain_in_flight()?;
        // Two short lines: Xen's port-0xE9 line buffer splits lines longer than ~200 bytes.
        info!(
            "blkfront: resumed {} after a warm restart ({} sectors, port {}, flush {})",
            device.frontend_path,
            device.sector_count,
            device.port,
            device.flush_mode.name()
        );
        info!(
            "blkfront: resume drained the ring: {unconsumed} request(s) unconsumed, \
             {unanswered} still unanswered at resume; results dropped"
        );
        Ok(Some(device))
    }

    /// Waits until the backend has answered every published request (`rsp_prod` reaches the
    /// shared `req_prod`), drops the results and returns how many were still unanswered.
    /// Bounded by [`IO_TIMEOUT_NS`].
    fn drain_in_flight(&mut self) -> Result<u32, BlkfrontError> {
        let req_prod = ring_word(blkif::OFFSET_REQ_PROD).load(Ordering::Acquire);
        let start = ring_word(blkif::OFFSET_RSP_PROD).load(Ordering::Acquire);
        let outstanding = req_prod.wrapping_sub(start);
        if outstanding > RING_SIZE {
            return Err(BlkfrontError::BackendProtocol("rsp_prod ahead of req_prod"));
        }
        let deadline = time::now_ns() + IO_TIMEOUT_NS;
        loop {
            evtchn::clear_pending(self.port);
            ring_word(blkif::OFFSET_RSP_EVENT).store(req_prod, Ordering::SeqCst);
            core::sync::atomic::fence(Ordering::SeqCst);
            let rsp_prod = ring_word(blkif::OFFSET_RSP_PROD).load(Ordering::Acquire);
            if rsp_prod == req_prod {
                break;
            }
            if req_prod.wrapping_sub(rsp_prod) > outstanding {
                return Err(BlkfrontError::BackendProtocol("rsp_prod moved backwards"));
            }
            if time::now_ns() >= deadline {
                return Err(BlkfrontError::Timeout {
                    answered: outstanding - req_prod.wrapping_sub(rsp_prod),
                    expected: outstanding,
                });
            }
            self.stats.polls += 1;
            let _ = sched::poll_port(self.port, deadline);
        }
        self.req_prod_pvt = req_prod;
        self.rsp_cons = req_prod;
        record_indices(self.req_prod_pvt, self.rsp_cons);
        Ok(outstanding)
    }

    /// Device size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sector_count
    }

    /// How `flush` works on this backend.
    pub fn flush_mode(&self) -> FlushMode {
        self.flush_mode
    }

    /// The backend domain.
    pub fn backend_domid(&self) -> DomainId {
        self.backend_domid
    }

    /// `/local/domain/<own>/device/vbd/<id>`.
    pub fn frontend_path(&self) -> &str {
        &self.frontend_path
    }

    /// The backend's xenstore directory.
    pub fn backend_path(&self) -> &str {
        &self.backend_path
    }

    /// Our event channel port.
    pub fn port(&self) -> EvtchnPort {
        self.port
    }

    /// Counters.
    pub fn stats(&self) -> BlkfrontStats {
        self.stats
    }

    /// Writes `requests` into the ring (ids assigned here), publishes `req_prod` and notifies
    /// the backend once if it asked for it. Returns the new `req_prod`.
    fn push(&mut self, requests: &mut [BlkifRequest]) -> Result<u32, BlkfrontError> {
        if blkif::free_slots(self.req_prod_pvt, self.rsp_cons) < requests.len() as u32 {
            return Err(BlkfrontError::BackendProtocol("ring not empty"));
        }
        let old_prod = self.req_prod_pvt;
        for request in requests.iter_mut() {
            request.id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            write_request(self.req_prod_pvt, request);
            self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        }
        let target = self.req_prod_pvt;
        record_indices(target, self.rsp_cons);
        // Requests visible before the index; the index visible before reading req_event.
        core::sync::atomic::fence(Ordering::Release);
        ring_word(blkif::OFFSET_REQ_PROD).store(target, Ordering::Release);
        core::sync::atomic::fence(Ordering::SeqCst);
        let req_event = ring_word(blkif::OFFSET_REQ_EVENT).load(Ordering::Acquire);
        if blkif::push_needs_notify(old_prod, target, req_event) {
            evtchn::send(self.port)?;
            self.stats.notifications += 1;
        }
        self.stats.batches += 1;
        self.stats.requests += requests.len() as u64;
        Ok(target)
    }

    /// A read request of the first page into data page 0.
    fn first_page_read(&self) -> BlkifRequest {
        let mut request = BlkifRequest {
            operation: blkif::BLKIF_OP_READ,
            nr_segments: 1,
            handle: self.handle,
            sector_number: 0,
            ..Default::default()
        };
        request.seg[0] = BlkifRequestSegment {
            gref: self.data_refs[0],
            first_sect: 0,
            last_sect: (SECTORS_PER_PAGE - 1) as u8,
            pad: 0,
        };
        request
    }

    /// Sends the first read without waiting for it (see [`Phase::Probing`]).
    fn start_probe(&mut self) -> Result<(), BlkfrontError> {
        let mut request = [self.first_page_read()];
        self.push(&mut request).map(|_| ())
    }

    /// Non-blocking: consumes the responses that arrived; true once every request pushed so
    /// far is answered (an error status or inconsistent indices are errors).
    fn probe_finished(&mut self) -> Result<bool, BlkfrontError> {
        let rsp_prod = ring_word(blkif::OFFSET_RSP_PROD).load(Ordering::Acquire);
        if !blkif::indices_consistent(self.req_prod_pvt, rsp_prod, self.rsp_cons) {
            return Err(BlkfrontError::BackendProtocol("rsp_prod outside the batch"));
        }
        while self.rsp_cons != rsp_prod {
            let response = read_response(self.rsp_cons);
            self.rsp_cons = self.rsp_cons.wrapping_add(1);
            if response.status != blkif::BLKIF_RSP_OKAY {
                return Err(BlkfrontError::Io {
                    operation: response.operation,
                    status: response.status,
                });
            }
        }
        record_indices(self.req_prod_pvt, self.rsp_cons);
        Ok(self.rsp_cons == self.req_prod_pvt)
    }

    /// Self-test hook for the resume path: leaves a read of the first page in flight and
    /// forgets the device, as a crash right after a push would. [`Blkfront::resume`] must then
    /// wait for that response before handing the device out again.
    pub fn abandon_with_request_in_flight(mut self) -> Result<(), BlkfrontError> {
        let mut request = [self.first_page_read()];
        self.push(&mut request).map(|_| ())
    }

    /// Pushes `requests` (ids assigned here), notifies once, waits for every response.
    fn submit_and_wait(&mut self, requests: &mut [BlkifRequest]) -> Result<(), BlkfrontError> {
        assert!(
            requests.len() <= RING_SIZE as usize,
            "batch larger than the ring"
        );
        if self.rsp_cons != self.req_prod_pvt {
            // A previous batch timed out: its responses must arrive before anything new.
            self.drain_in_flight()?;
        }
        let first_id = self.next_id;
        let target = self.push(requests)?;
        let expected = requests.len() as u32;
        let deadline = time::now_ns() + IO_TIMEOUT_NS;
        let mut failure: Option<BlkfrontError> = None;
        loop {
            let rsp_prod = ring_word(blkif::OFFSET_RSP_PROD).load(Ordering::Acquire);
            if !blkif::indices_consistent(target, rsp_prod, self.rsp_cons) {
                return Err(BlkfrontError::BackendProtocol("rsp_prod outside the batch"));
            }
            while self.rsp_cons != rsp_prod {
                let response = read_response(self.rsp_cons);
                self.rsp_cons = self.rsp_cons.wrapping_add(1);
                let index = response.id.wrapping_sub(first_id);
                if index >= u64::from(expected) {
                    failure.get_or_insert(BlkfrontError::BackendProtocol("unknown response id"));
                } else if response.status != blkif::BLKIF_RSP_OKAY {
                    failure.get_or_insert(BlkfrontError::Io {
                        operation: response.operation,
                        status: response.status,
                    });
                }
            }
            if self.rsp_cons == target {
                break;
            }
            // Ask for a notification when the last response arrives, then re-check so a
            // response published in between is not slept through.
            evtchn::clear_pending(self.port);
            ring_word(blkif::OFFSET_RSP_EVENT).store(target, Ordering::SeqCst);
            core::sync::atomic::fence(Ordering::SeqCst);
            if ring_word(blkif::OFFSET_RSP_PROD).load(Ordering::Acquire) != rsp_prod {
                continue;
            }
            if time::now_ns() >= deadline {
                record_indices(self.req_prod_pvt, self.rsp_cons);
                return Err(BlkfrontError::Timeout {
                    answered: expected - target.wrapping_sub(self.rsp_cons),
                    expected,
                });
            }
            self.stats.polls += 1;
            let _ = sched::poll_port(self.port, deadline);
        }
        record_indices(self.req_prod_pvt, self.rsp_cons);
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Reads or writes `buffer` (whole sectors) from `first_sector`, in batches of at most
    /// [`BATCH_SECTORS_MAX`] sectors.
    fn transfer(
        &mut self,
        operation: u8,
        first_sector: u64,
        buffer_address: *mut u8,
        buffer_bytes: usize,
    ) -> Result<(), BlkfrontError> {
        let total_sectors = buffer_bytes / SECTOR_BYTES;
        let mut done = 0usize;
        while done < total_sectors {
            let count = (total_sectors - done).min(BATCH_SECTORS_MAX);
            let bytes = count * SECTOR_BYTES;
            // SAFETY: (this and both copies below) `buffer_address .. + buffer_bytes` is the caller's live
            // slice (see read_sectors / write_sectors) and `done * 512 + bytes` stays inside
            // it; the data pages are consecutive in the static area (`[Page; DATA_PAGES]`),
            // `bytes` ≤ DATA_PAGES · 4096; the backend touches them only while the batch is
            // in flight, and copies happen before the push / after all responses.
            let source = unsafe { buffer_address.add(done * SECTOR_BYTES) };
            if operation == blkif::BLKIF_OP_WRITE {
                // SAFETY: see above.
                unsafe {
                    core::ptr::copy_nonoverlapping(source, data_page_address(0) as *mut u8, bytes)
                };
            }
            let sector = first_sector + done as u64;
            let mut requests: Vec<BlkifRequest> = Vec::new();
            let handle = self.handle;
            let refs = self.data_refs;
            blkif::split_requests(sector, count, |span| {
                let mut request = BlkifRequest {
                    operation,
                    nr_segments: span.pages() as u8,
                    handle,
                    sector_number: span.sector,
                    ..Default::default()
                };
                for segment in 0..span.pages() {
                    let (first_sect, last_sect) = span.segment_sectors(segment);
                    request.seg[segment] = BlkifRequestSegment {
                        gref: refs[span.first_page + segment],
                        first_sect,
                        last_sect,
                        pad: 0,
                    };
                }
                requests.push(request);
            });
            self.submit_and_wait(&mut requests)?;
            if operation == blkif::BLKIF_OP_READ {
                // SAFETY: see above.
                unsafe {
                    core::ptr::copy_nonoverlapping(data_page_address(0) as *const u8, source, bytes)
                };
            }
            done += count;
        }
        Ok(())
    }

    fn check_range(&self, first_sector: u64, length: usize) -> Result<(), DeviceError> {
        if !length.is_multiple_of(SECTOR_BYTES) {
            return Err(DeviceError::Misaligned { len: length as u64 });
        }
        let count = (length / SECTOR_BYTES) as u64;
        match first_sector.checked_add(count) {
            Some(end) if end <= self.sector_count => Ok(()),
            _ => Err(DeviceError::OutOfRange {
                first_sector,
                sector_count: count,
            }),
        }
    }

    fn log_failure(&self, what: &str, error: &BlkfrontError) {
        error!("blkfront: {what} on {} failed: {error}", self.frontend_path);
    }
}

impl BlockDevice for Blkfront {
    fn sector_count(&self) -> u64 {
        self.sector_count
    }

    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.check_range(first_sector, buf.len())?;
        let result = self.transfer(
            blkif::BLKIF_OP_READ,
            first_sector,
            buf.as_mut_ptr(),
            buf.len(),
        );
        result.map_err(|error| {
            self.log_failure("read", &error);
            error.device_error()
        })?;
        self.stats.sectors_read += (buf.len() / SECTOR_BYTES) as u64;
        Ok(())
    }

    fn write_sectors(&mut self, first_sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.check_range(first_sector, buf.len())?;
        // The pointer is only read from for a write (see `transfer`).
        let result = self.transfer(
            blkif::BLKIF_OP_WRITE,
            first_sector,
            buf.as_ptr() as *mut u8,
            buf.len(),
        );
        result.map_err(|error| {
            self.log_failure("write", &error);
            error.device_error()
        })?;
        self.stats.sectors_written += (buf.len() / SECTOR_BYTES) as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        let operation = match self.flush_mode {
            FlushMode::None => return Ok(()),
            FlushMode::FlushDiskCache => blkif::BLKIF_OP_FLUSH_DISKCACHE,
            FlushMode::WriteBarrier => blkif::BLKIF_OP_WRITE_BARRIER,
        };
        let mut request = [BlkifRequest {
            operation,
            nr_segments: 0,
            handle: self.handle,
            ..Default::default()
        }];
        self.submit_and_wait(&mut request).map_err(|error| {
            self.log_failure("flush", &error);
            error.device_error()
        })?;
        self.stats.flushes += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The handshake.

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started (no local connection yet).
    Start,
    /// Watching `device/vbd` for a device to appear.
    WaitingForDevice,
    /// Device found; waiting for the backend to reach InitWait.
    WaitingForBackendInitWait,
    /// Ring offered (state 3); waiting for the backend to connect.
    WaitingForBackendConnected,
    /// Connected (state 4 written); a first read is in flight and the main loop keeps serving
    /// xenstore until it completes: Linux blkback still reads the store after switching to
    /// Connected and before its I/O thread runs (`blkback_name` reads `<backend>/dev`), so
    /// blocking on I/O right away would deadlock the backend against its own xenstore.
    Probing,
    /// Connected; the device was handed out.
    Connected,
    /// Given up (logged); stays disconnected.
    Failed,
    /// `--blkfront=off`.
    Disabled,
}

/// The device being set up.
#[derive(Debug, Clone)]
struct Candidate {
    handle: u16,
    frontend_path: String,
    backend_path: String,
    backend_domid: DomainId,
    port: Option<EvtchnPort>,
    ring_ref: GrantRef,
    data_refs: [GrantRef; DATA_PAGES],
}

/// The frontend handshake, polled from the service's main loop.
#[derive(Debug)]
pub struct BlkfrontDriver {
    own_domid: DomainId,
    phase: Phase,
    xenbus: Option<LocalXenbus>,
    candidate: Option<Candidate>,
    /// Poll again at this time even without news (waiting for an old backend to let go).
    retry_at: Option<u64>,
    /// The connected device while its first read is in flight, and the deadline for it.
    probing: Option<(Blkfront, u64)>,
}

/// Delay before retrying a step that waits for the old backend.
const RETRY_INTERVAL_NS: u64 = 500_000_000;

/// Steps of the handshake state machine per poll (each advances at most one phase).
const TRANSITIONS_PER_POLL_MAX: usize = 4;

impl BlkfrontDriver {
    /// A driver for the vbd of domain `own_domid`; `enabled = false` makes it inert.
    pub fn new(own_domid: DomainId, enabled: bool) -> BlkfrontDriver {
        BlkfrontDriver {
            own_domid,
            phase: if enabled {
                Phase::Start
            } else {
                Phase::Disabled
            },
            xenbus: None,
            candidate: None,
            retry_at: None,
            probing: None,
        }
    }

    /// Where the handshake is.
    #[allow(dead_code, reason = "diagnostics API (shell, restart branch)")]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn devices_path(&self) -> String {
        format!("/local/domain/{}/device/vbd", self.own_domid)
    }

    /// Advances the handshake when there is news (a watch event on the local connection);
    /// cheap otherwise. Returns the device once the backend is connected (exactly once).
    pub fn poll<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Option<Blkfront> {
        match self.phase {
            Phase::Connected | Phase::Failed | Phase::Disabled => return None,
            Phase::Probing => return self.check_probe(),
            Phase::Start => {
                if let Err(error) = self.start(server) {
                    error!("blkfront: cannot watch {}: {error}", self.devices_path());
                    self.phase = Phase::Failed;
                    return None;
                }
            }
            _ => {}
        }
        let retry_due = self.retry_at.is_some_and(|at| time::now_ns() >= at);
        let xenbus = self.xenbus.as_mut()?;
        if !xenbus.has_input(server) && !retry_due {
            return None;
        }
        self.retry_at = None;
        if let Err(error) = xenbus.take_events(server) {
            warn!("blkfront: reading watch events: {error}");
        }
        match self.advance(server) {
            Ok(Some(mut device)) => {
                self.stop_watching(server);
                match device.start_probe() {
                    Ok(()) => {
                        self.probing = Some((device, time::now_ns() + IO_TIMEOUT_NS));
                        self.phase = Phase::Probing;
                    }
                    Err(error) => {
                        error!("blkfront: first read could not be sent: {error}");
                        self.phase = Phase::Failed;
                    }
                }
                None
            }
            Ok(None) => None,
            Err(error) => {
                error!("blkfront: handshake failed, staying disconnected: {error}");
                self.phase = Phase::Failed;
                self.stop_watching(server);
                None
            }
        }
    }

    /// Probing: hands the device out once its first read completed (never blocks).
    fn check_probe(&mut self) -> Option<Blkfront> {
        let (device, deadline) = self.probing.as_mut()?;
        match device.probe_finished() {
            Ok(true) => {
                info!("blkfront: first read completed: the backend serves I/O");
                self.phase = Phase::Connected;
                self.probing.take().map(|(device, _)| device)
            }
            Ok(false) if time::now_ns() < *deadline => None,
            Ok(false) => {
                error!(
                    "blkfront: first read unanswered after {} s; staying disconnected",
                    IO_TIMEOUT_NS / 1_000_000_000
                );
                self.phase = Phase::Failed;
                None
            }
            Err(error) => {
                error!("blkfront: first read failed: {error}; staying disconnected");
                self.phase = Phase::Failed;
                None
            }
        }
    }

    fn start<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<(), BlkfrontError> {
        invalidate_record();
        let mut xenbus = LocalXenbus::open(server)?;
        xenbus.watch(server, &self.devices_path(), TOKEN_DEVICES)?;
        info!(
            "blkfront: watching {} (local xenstore connection {:?})",
            self.devices_path(),
            xenbus.connection()
        );
        self.xenbus = Some(xenbus);
        self.phase = Phase::WaitingForDevice;
        Ok(())
    }

    fn stop_watching<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) {
        let devices = self.devices_path();
        let Some(xenbus) = self.xenbus.as_mut() else {
            return;
        };
        let _ = xenbus.unwatch(server, &devices, TOKEN_DEVICES);
        if let Some(candidate) = &self.candidate {
            let state = format!("{}/state", candidate.backend_path);
            let _ = xenbus.unwatch(server, &state, TOKEN_BACKEND);
        }
        let _ = xenbus.take_events(server);
    }

    fn advance<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<Option<Blkfront>, BlkfrontError> {
        for _ in 0..TRANSITIONS_PER_POLL_MAX {
            if matches!(
                self.phase,
                Phase::WaitingForBackendInitWait | Phase::WaitingForBackendConnected
            ) && self.device_was_replaced(server)?
            {
                self.forget_candidate(server)?;
            }
            let before = self.phase;
            match self.phase {
                Phase::WaitingForDevice => self.find_device(server)?,
                Phase::WaitingForBackendInitWait => self.offer_ring(server)?,
                Phase::WaitingForBackendConnected => {
                    if let Some(device) = self.connect(server)? {
                        return Ok(Some(device));
                    }
                }
                _ => return Ok(None),
            }
            if self.phase == before {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// True when the toolstack removed or re-created the device we are setting up (its
    /// `backend` node is gone or different, or its `state` went back to Initialising after we
    /// offered the ring): the handshake must start over.
    fn device_was_replaced<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<bool, BlkfrontError> {
        let Some(candidate) = self.candidate.clone() else {
            return Ok(false);
        };
        let front = &candidate.frontend_path;
        let xenbus = self.xenbus();
        let backend = xenbus.read(server, &format!("{front}/backend"))?;
        if backend.as_deref() != Some(candidate.backend_path.as_bytes()) {
            return Ok(true);
        }
        if self.phase == Phase::WaitingForBackendConnected {
            let state = self.xenbus().read(server, &format!("{front}/state"))?;
            let state = state.as_deref().and_then(XenbusState::parse);
            if state != Some(XenbusState::Initialised) && state != Some(XenbusState::Connected) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Drops the device being set up: ends the backend's access to our pages (refusing to
    /// reuse them while the old backend still maps one: then the driver fails), closes the
    /// port, stops watching the old backend, and looks for a device again.
    fn forget_candidate<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<(), BlkfrontError> {
        let Some(candidate) = self.candidate.take() else {
            return Ok(());
        };
        warn!(
            "blkfront: {} was removed or re-created by the toolstack; starting over",
            candidate.frontend_path
        );
        let state = format!("{}/state", candidate.backend_path);
        let _ = self.xenbus().unwatch(server, &state, TOKEN_BACKEND);
        if candidate.port.is_some() {
            let refs = core::iter::once(candidate.ring_ref).chain(candidate.data_refs);
            for grant_ref in refs.clone() {
                if grant_table::end_access(grant_ref) == Err(GrantTableError::InUse(grant_ref)) {
                    // The old backend has not let go yet: our pages must not be reused. Ends
                    // already done are harmless (refs are looked up afresh); retry later.
                    warn!(
                        "blkfront: grant ref {grant_ref} still mapped by the old backend; retrying"
                    );
                    self.retry_at = Some(time::now_ns() + RETRY_INTERVAL_NS);
                    self.candidate = Some(candidate);
                    return Ok(());
                }
            }
            if let Some(port) = candidate.port {
                let _ = evtchn::close(port);
            }
        }
        self.phase = Phase::WaitingForDevice;
        Ok(())
    }

    fn xenbus(&mut self) -> &mut LocalXenbus {
        self.xenbus
            .as_mut()
            .expect("the local connection exists once the driver has started")
    }

    /// WaitingForDevice: the lowest device id under `device/vbd` with a `backend` node.
    fn find_device<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<(), BlkfrontError> {
        let devices_path = self.devices_path();
        let names = self.xenbus().directory(server, &devices_path)?;
        let Some(devid) = names
            .iter()
            .filter_map(|name| name.parse::<u32>().ok())
            .min()
        else {
            return Ok(());
        };
        let frontend_path = format!("{devices_path}/{devid}");
        let xenbus = self.xenbus();
        let Some(backend) = xenbus.read(server, &format!("{frontend_path}/backend"))? else {
            return Ok(()); // the toolstack has not finished writing the device yet
        };
        let Some(backend_id) = xenbus.read(server, &format!("{frontend_path}/backend-id"))? else {
            return Ok(());
        };
        let backend_path = String::from_utf8(backend)
            .ok()
            .filter(|path| path.starts_with('/') && path.len() <= PATH_BYTES_MAX)
            .ok_or_else(|| BlkfrontError::BadBackendValue("backend", String::from("(path)")))?;
        let backend_domid = parse_decimal(&backend_id)
            .and_then(|value| u16::try_from(value).ok())
            .filter(|&domid| domid < crate::xen::abi::DOMID_FIRST_RESERVED)
            .ok_or_else(|| BlkfrontError::BadBackendValue("backend-id", lossy(&backend_id)))?;
        if frontend_path.len() > PATH_BYTES_MAX {
            return Err(BlkfrontError::Unsupported(String::from(
                "frontend path too long",
            )));
        }
        xenbus.watch(server, &format!("{backend_path}/state"), TOKEN_BACKEND)?;
        info!(
            "blkfront: found vbd {devid} at {frontend_path}: backend {backend_path} \
             (domain {backend_domid})"
        );
        self.candidate = Some(Candidate {
            handle: devid as u16,
            frontend_path,
            backend_path,
            backend_domid,
            port: None,
            ring_ref: 0,
            data_refs: [0; DATA_PAGES],
        });
        self.phase = Phase::WaitingForBackendInitWait;
        Ok(())
    }

    fn backend_state<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
        backend_path: &str,
    ) -> Result<Option<XenbusState>, BlkfrontError> {
        let Some(value) = self
            .xenbus()
            .read(server, &format!("{backend_path}/state"))?
        else {
            return Ok(None);
        };
        XenbusState::parse(&value)
            .map(Some)
            .ok_or_else(|| BlkfrontError::BadBackendValue("state", lossy(&value)))
    }

    /// WaitingForBackendInitWait: once the backend waits for us, grant the ring and data
    /// pages, allocate the port and publish them with state Initialised.
    fn offer_ring<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<(), BlkfrontError> {
        let Some(mut candidate) = self.candidate.clone() else {
            return Ok(());
        };
        match self.backend_state(server, &candidate.backend_path)? {
            Some(XenbusState::InitWait) => {}
            Some(state @ (XenbusState::Closing | XenbusState::Closed)) => {
                warn!(
                    "blkfront: backend {} is {state:?}; waiting",
                    candidate.backend_path
                );
                return Ok(());
            }
            _ => return Ok(()),
        }
        let frames = grant_table::map_frames()?;
        let domid = candidate.backend_domid;
        ring_init();
        candidate.ring_ref = grant_table::grant_access(domid, ring_address() >> 12, false)?;
        for index in 0..DATA_PAGES {
            candidate.data_refs[index] =
                grant_table::grant_access(domid, data_page_address(index) >> 12, false)?;
        }
        let port = evtchn::alloc_unbound(domid)?;
        evtchn::unmask(port)?;
        candidate.port = Some(port);
        let front = candidate.frontend_path.clone();
        let xenbus = self.xenbus();
        xenbus.write(
            server,
            &format!("{front}/ring-ref"),
            format!("{}", candidate.ring_ref).as_bytes(),
        )?;
        xenbus.write(
            server,
            &format!("{front}/event-channel"),
            format!("{port}").as_bytes(),
        )?;
        xenbus.write(server, &format!("{front}/protocol"), b"x86_64-abi")?;
        xenbus.write(
            server,
            &format!("{front}/state"),
            XenbusState::Initialised.value().as_bytes(),
        )?;
        info!(
            "blkfront: backend in InitWait; offered ring-ref {} (grant table: {frames} frame(s) \
             at gfn {:#x}), {DATA_PAGES} data pages (refs {}..={}), event-channel {port}; \
             state 3 (Initialised)",
            candidate.ring_ref,
            grant_table::TABLE_GFN_BASE,
            candidate.data_refs[0],
            candidate.data_refs[DATA_PAGES - 1]
        );
        self.candidate = Some(candidate);
        self.phase = Phase::WaitingForBackendConnected;
        Ok(())
    }

    /// WaitingForBackendConnected: read the geometry and features, validate, write state 4.
    fn connect<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        server: &mut Server<P, E, J>,
    ) -> Result<Option<Blkfront>, BlkfrontError> {
        let Some(candidate) = self.candidate.clone() else {
            return Ok(None);
        };
        let back = candidate.backend_path.clone();
        match self.backend_state(server, &back)? {
            Some(XenbusState::Connected) => {}
            Some(state @ (XenbusState::Closing | XenbusState::Closed)) => {
                return Err(BlkfrontError::Unsupported(format!(
                    "backend went to {state:?} instead of Connected"
                )));
            }
            _ => return Ok(None),
        }
        let xenbus = self.xenbus();
        let sectors_value = xenbus
            .read(server, &format!("{back}/sectors"))?
            .unwrap_or_default();
        let sector_count = parse_decimal(&sectors_value)
            .filter(|&sectors| sectors > 0)
            .ok_or_else(|| BlkfrontError::BadBackendValue("sectors", lossy(&sectors_value)))?;
        let sector_size_value = xenbus
            .read(server, &format!("{back}/sector-size"))?
            .unwrap_or_else(|| b"512".to_vec());
        let sector_size = parse_decimal(&sector_size_value).ok_or_else(|| {
            BlkfrontError::BadBackendValue("sector-size", lossy(&sector_size_value))
        })?;
        if sector_size != SECTOR_BYTES as u64 {
            return Err(BlkfrontError::Unsupported(format!(
                "sector-size {sector_size} (the journal needs 512)"
            )));
        }
        let info_value = xenbus
            .read(server, &format!("{back}/info"))?
            .unwrap_or_else(|| b"0".to_vec());
        let info_bits = parse_decimal(&info_value)
            .ok_or_else(|| BlkfrontError::BadBackendValue("info", lossy(&info_value)))?;
        if info_bits & u64::from(blkif::VDISK_READONLY) != 0 {
            return Err(BlkfrontError::Unsupported(String::from("read-only device")));
        }
        let flush_cache = read_flag(xenbus, server, &format!("{back}/feature-flush-cache"))?;
        let barrier = read_flag(xenbus, server, &format!("{back}/feature-barrier"))?;
        let flush_mode = if flush_cache {
            FlushMode::FlushDiskCache
        } else if barrier {
            FlushMode::WriteBarrier
        } else {
            FlushMode::None
        };
        let front = candidate.frontend_path.clone();
        xenbus.write(
            server,
            &format!("{front}/state"),
            XenbusState::Connected.value().as_bytes(),
        )?;
        let port = candidate.port.ok_or(BlkfrontError::BackendProtocol(
            "connected before the ring was offered",
        ))?;
        if flush_mode == FlushMode::None {
            warn!(
                "blkfront: backend advertises neither feature-flush-cache nor feature-barrier: \
                 flush is a no-op, durability depends on the backend"
            );
        }
        info!(
            "blkfront: backend connected: {sector_count} sectors of {sector_size} bytes \
             ({} MiB), info {info_bits:#x}, flush via {}; state 4 (Connected)",
            sector_count / 2048,
            flush_mode.name()
        );
        let mut record = WarmRecord::ZERO;
        record.backend_domid = candidate.backend_domid;
        record.handle = candidate.handle;
        record.flush_mode = flush_mode.to_byte();
        record.port = port;
        record.ring_ref = candidate.ring_ref;
        record.data_refs = candidate.data_refs;
        record.sector_count = sector_count;
        record.sector_size = sector_size as u32;
        record.frontend_path_bytes = front.len() as u32;
        record.frontend_path[..front.len()].copy_from_slice(front.as_bytes());
        record.backend_path_bytes = back.len() as u32;
        record.backend_path[..back.len()].copy_from_slice(back.as_bytes());
        commit_record(record);
        Ok(Some(Blkfront {
            backend_domid: candidate.backend_domid,
            handle: candidate.handle,
            port,
            sector_count,
            flush_mode,
            data_refs: candidate.data_refs,
            req_prod_pvt: 0,
            rsp_cons: 0,
            next_id: 0,
            frontend_path: front,
            backend_path: back,
            stats: BlkfrontStats::default(),
        }))
    }
}

fn read_flag<P: Platform, E: Engine, J: Journal<E::Changes>>(
    xenbus: &mut LocalXenbus,
    server: &mut Server<P, E, J>,
    path: &str,
) -> Result<bool, BlkfrontError> {
    Ok(xenbus
        .read(server, path)?
        .and_then(|value| parse_decimal(&value))
        .is_some_and(|value| value != 0))
}

/// A decimal xenstore value (an optional trailing NUL tolerated).
fn parse_decimal(value: &[u8]) -> Option<u64> {
    let text = core::str::from_utf8(value).ok()?;
    text.trim_end_matches('\0').trim().parse::<u64>().ok()
}

fn lossy(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// Sectors at the end of the disk that the self-test overwrites (and restores).
pub const SELF_TEST_SECTORS: usize = 128;
/// Sectors read by the multi-batch read of the self-test.
pub const SELF_TEST_READ_SECTORS: usize = 2 * BATCH_SECTORS_MAX + 8;

/// The non-destructive self-test run when the disk attaches: saves the last
/// [`SELF_TEST_SECTORS`] sectors, writes a pattern (more than one request per batch), flushes,
/// reads back and compares, restores the saved contents and flushes again; also reads a range
/// larger than one batch. Returns a summary line or the first failure.
pub fn self_test(device: &mut Blkfront) -> Result<String, String> {
    let sectors = device.sectors();
    if sectors < SELF_TEST_READ_SECTORS as u64 {
        return Err(format!(
            "device too small for the self-test ({sectors} sectors)"
        ));
    }
    let first = sectors - SELF_TEST_SECTORS as u64;
    let bytes = SELF_TEST_SECTORS * SECTOR_BYTES;
    let mut saved = alloc::vec![0u8; bytes];
    device
        .read_sectors(first, &mut saved)
        .map_err(|error| format!("read of the scratch range failed: {error:?}"))?;
    let seed = time::now_ns();
    let pattern: Vec<u8> = (0..bytes)
        .map(|index| ((index as u64).wrapping_mul(0x9e37_79b9) ^ seed ^ (index as u64 >> 9)) as u8)
        .collect();
    device
        .write_sectors(first, &pattern)
        .map_err(|error| format!("write failed: {error:?}"))?;
    device
        .flush()
        .map_err(|error| format!("flush failed: {error:?}"))?;
    let mut back = alloc::vec![0u8; bytes];
    device
        .read_sectors(first, &mut back)
        .map_err(|error| format!("read-back failed: {error:?}"))?;
    if back != pattern {
        let at = back
            .iter()
            .zip(&pattern)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "read-back differs from what was written at byte {at}"
        ));
    }
    device
        .write_sectors(first, &saved)
        .map_err(|error| format!("restoring the scratch range failed: {error:?}"))?;
    device
        .flush()
        .map_err(|error| format!("final flush failed: {error:?}"))?;
    let read_first = sectors - SELF_TEST_READ_SECTORS as u64;
    let mut large = alloc::vec![0u8; SELF_TEST_READ_SECTORS * SECTOR_BYTES];
    device
        .read_sectors(read_first, &mut large)
        .map_err(|error| format!("multi-batch read failed: {error:?}"))?;
    if large[large.len() - bytes..] != saved[..] {
        return Err(String::from(
            "multi-batch read disagrees with the restored range",
        ));
    }
    let stats = device.stats();
    // Short: Xen's port-0xE9 line buffer splits lines longer than ~200 bytes.
    Ok(format!(
        "sectors {first}..{sectors} written, flushed, read back, restored; {} sectors read \
         in {} batches; {} requests, {} flushes, {} polls",
        SELF_TEST_READ_SECTORS,
        SELF_TEST_READ_SECTORS.div_ceil(BATCH_SECTORS_MAX),
        stats.requests,
        stats.flushes,
        stats.polls
    ))
}

/// The resume path, exercised without a real restart: the device is abandoned with a request
/// in flight, then [`Blkfront::resume`] must validate the warm record, drain that request and
/// give back a working device (checked with a read of the last sector).
pub fn resume_self_test(device: Blkfront) -> Result<Blkfront, String> {
    device
        .abandon_with_request_in_flight()
        .map_err(|error| format!("could not leave a request in flight: {error}"))?;
    let mut device = match Blkfront::resume() {
        Ok(Some(device)) => device,
        Ok(None) => return Err(String::from("no warm record after connecting")),
        Err(error) => return Err(format!("resume failed: {error}")),
    };
    let last = device.sectors() - 1;
    let mut sector = [0u8; SECTOR_BYTES];
    device
        .read_sectors(last, &mut sector)
        .map_err(|error| format!("read after resume failed: {error:?}"))?;
    Ok(device)
}
