//! The shared xenstore ring page (`struct xenstore_domain_interface`, xen.git
//! `xen/include/public/io/xs_wire.h`; protocol in `docs/misc/xenstore-ring.txt`): layout,
//! constants, the platform boundary [`RingMemory`], the server side [`ServerRing`], the guest
//! side [`GuestRing`] (for tests and the hosted test client) and a safe in-memory page
//! [`InMemoryPage`].
//!
//! Page layout (all fields little-endian `u32`):
//!
//! | offset | field | written by |
//! | --- | --- | --- |
//! | 0 | `req[1024]` guest → server bytes | guest |
//! | 1024 | `rsp[1024]` server → guest bytes | server |
//! | 2048 | `req_cons` | server |
//! | 2052 | `req_prod` | guest |
//! | 2056 | `rsp_cons` | guest |
//! | 2060 | `rsp_prod` | server |
//! | 2064 | `server_features` | server |
//! | 2068 | `connection` | guest sets RECONNECT, server sets CONNECTED |
//! | 2072 | `error` | server |
//! | 2076 | `evtchn_port` | toolstack / hypervisor |
//!
//! Index arithmetic: indices are free-running `u32` byte counters that wrap at 2^32; the byte
//! at stream position `x` lives at `x & 1023`. The only consistent states are those with
//! `prod.wrapping_sub(cons) <= 1024` ([`indices_are_consistent`]); anything else means the
//! guest scribbled on the page, and the server marks the ring with `XENSTORE_ERROR_RINGIDX`
//! and stops serving it ([`RingError::error_code`]), as C xenstored does.
//!
//! Memory ordering follows C xenstored's `readchn`/`writechn`: indices are loaded with acquire
//! and stored with release semantics, and a full fence separates reading the indices from
//! touching the data and the data from publishing the new index.
//!
//! Nothing here panics on any page contents; this module has no `unsafe`. The platform's
//! [`RingMemory`] implementation (volatile access to the granted page) is the one place where
//! `unsafe` is needed, and it lives in the platform crates.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering, fence};

use crate::limits::{RING_PAGE_BYTES, RING_SIZE_BYTES};

/// Size of each data ring (`XENSTORE_RING_SIZE`) as a `u32` for index arithmetic.
pub const RING_SIZE: u32 = RING_SIZE_BYTES as u32;

/// Mask turning a free-running index into an offset in a data ring (`MASK_XENSTORE_IDX`).
pub const RING_INDEX_MASK: u32 = RING_SIZE - 1;

/// Server feature bit: the server supports the reconnection handshake.
pub const FEATURE_RECONNECTION: u32 = 1;
/// Server feature bit: the server reports fatal ring problems in the `error` field.
pub const FEATURE_ERROR: u32 = 2;
/// Server feature bit: WATCH accepts a depth argument.
pub const FEATURE_WATCHDEPTH: u32 = 4;
/// Server feature bit: permission entries may name `DOMID_ANY`.
pub const FEATURE_DOMID_ANY: u32 = 8;

/// `connection` value: the ring is in normal use (`XENSTORE_CONNECTED`).
pub const CONNECTED: u32 = 0;
/// `connection` value: the guest asks for a reconnect (`XENSTORE_RECONNECT`).
pub const RECONNECT: u32 = 1;

/// `error` value: no error (`XENSTORE_ERROR_NONE`).
pub const ERROR_NONE: u32 = 0;
/// `error` value: communication problem (`XENSTORE_ERROR_COMM`).
pub const ERROR_COMM: u32 = 1;
/// `error` value: inconsistent producer or consumer index (`XENSTORE_ERROR_RINGIDX`).
pub const ERROR_RINGIDX: u32 = 2;
/// `error` value: protocol violation, e.g. an oversized header (`XENSTORE_ERROR_PROTO`).
pub const ERROR_PROTO: u32 = 3;

/// A `u32` field of the page, named as in `struct xenstore_domain_interface`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `req_cons` (offset 2048).
    ReqCons,
    /// `req_prod` (offset 2052).
    ReqProd,
    /// `rsp_cons` (offset 2056).
    RspCons,
    /// `rsp_prod` (offset 2060).
    RspProd,
    /// `server_features` (offset 2064).
    ServerFeatures,
    /// `connection` (offset 2068).
    Connection,
    /// `error` (offset 2072).
    Error,
    /// `evtchn_port` (offset 2076).
    EvtchnPort,
}

impl Field {
    /// Every field, in page order.
    pub const ALL: [Field; 8] = [
        Field::ReqCons,
        Field::ReqProd,
        Field::RspCons,
        Field::RspProd,
        Field::ServerFeatures,
        Field::Connection,
        Field::Error,
        Field::EvtchnPort,
    ];

    /// Byte offset of the field in the page.
    pub const fn offset(self) -> usize {
        match self {
            Field::ReqCons => 2048,
            Field::ReqProd => 2052,
            Field::RspCons => 2056,
            Field::RspProd => 2060,
            Field::ServerFeatures => 2064,
            Field::Connection => 2068,
            Field::Error => 2072,
            Field::EvtchnPort => 2076,
        }
    }
}

/// One of the two 1024-byte data rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataArea {
    /// `req[]`: guest → server.
    Request,
    /// `rsp[]`: server → guest.
    Response,
}

impl DataArea {
    /// Byte offset of the area in the page.
    pub const fn offset(self) -> usize {
        match self {
            DataArea::Request => 0,
            DataArea::Response => RING_SIZE_BYTES,
        }
    }
}

/// Bytes of the page covered by `struct xenstore_domain_interface` (the rest is unused).
pub const INTERFACE_BYTES: usize = 2080;
const _: () = assert!(Field::EvtchnPort.offset() + 4 == INTERFACE_BYTES);
const _: () = assert!(INTERFACE_BYTES <= RING_PAGE_BYTES);

/// Access to one shared ring page: the single boundary between this crate and the platform.
///
/// Implementations for real shared memory use volatile/atomic accesses on the granted page (and
/// contain the `unsafe`); [`InMemoryPage`] is a safe one for tests and simulation. The peer may
/// change any field at any time; implementations must never assume otherwise.
///
/// Contract for callers (upheld by [`ServerRing`] and [`GuestRing`]): `offset + len <= 1024`
/// for data accesses. Implementations should still clamp rather than go out of bounds.
pub trait RingMemory {
    /// Loads a field with acquire semantics (later data reads see what the peer wrote before
    /// its matching release store).
    fn load_acquire(&self, field: Field) -> u32;
    /// Stores a field with release semantics (earlier data writes are visible to a peer that
    /// loads this value with acquire).
    fn store_release(&self, field: Field, value: u32);
    /// Copies `out.len()` bytes from `area` starting at `offset` (no wrap-around).
    fn read_data(&self, area: DataArea, offset: usize, out: &mut [u8]);
    /// Copies `bytes` into `area` starting at `offset` (no wrap-around).
    fn write_data(&self, area: DataArea, offset: usize, bytes: &[u8]);
    /// A full memory barrier (`xen_mb`, `mfence` on x86).
    fn fence(&self);
}

impl<M: RingMemory + ?Sized> RingMemory for &M {
    fn load_acquire(&self, field: Field) -> u32 {
        (**self).load_acquire(field)
    }
    fn store_release(&self, field: Field, value: u32) {
        (**self).store_release(field, value);
    }
    fn read_data(&self, area: DataArea, offset: usize, out: &mut [u8]) {
        (**self).read_data(area, offset, out);
    }
    fn write_data(&self, area: DataArea, offset: usize, bytes: &[u8]) {
        (**self).write_data(area, offset, bytes);
    }
    fn fence(&self) {
        (**self).fence();
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<M: RingMemory + ?Sized> RingMemory for alloc::sync::Arc<M> {
    fn load_acquire(&self, field: Field) -> u32 {
        (**self).load_acquire(field)
    }
    fn store_release(&self, field: Field, value: u32) {
        (**self).store_release(field, value);
    }
    fn read_data(&self, area: DataArea, offset: usize, out: &mut [u8]) {
        (**self).read_data(area, offset, out);
    }
    fn write_data(&self, area: DataArea, offset: usize, bytes: &[u8]) {
        (**self).write_data(area, offset, bytes);
    }
    fn fence(&self) {
        (**self).fence();
    }
}

/// True when a producer/consumer pair describes between 0 and 1024 unread bytes — the only
/// states a well-behaved peer can create.
pub const fn indices_are_consistent(prod: u32, cons: u32) -> bool {
    prod.wrapping_sub(cons) <= RING_SIZE
}

/// Which direction of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// `req[]` with `req_cons` / `req_prod`.
    Request,
    /// `rsp[]` with `rsp_cons` / `rsp_prod`.
    Response,
}

impl Queue {
    const fn area(self) -> DataArea {
        match self {
            Queue::Request => DataArea::Request,
            Queue::Response => DataArea::Response,
        }
    }
    const fn cons(self) -> Field {
        match self {
            Queue::Request => Field::ReqCons,
            Queue::Response => Field::RspCons,
        }
    }
    const fn prod(self) -> Field {
        match self {
            Queue::Request => Field::ReqProd,
            Queue::Response => Field::RspProd,
        }
    }
}

/// A consistent snapshot of one queue's indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indices {
    /// Consumer index.
    pub cons: u32,
    /// Producer index.
    pub prod: u32,
}

impl Indices {
    /// Bytes written and not yet consumed (at most 1024).
    pub const fn unread(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }

    /// Bytes the producer may still write (at most 1024).
    pub const fn free(&self) -> u32 {
        RING_SIZE - self.unread()
    }
}

/// A fatal ring problem. Policy: write [`RingError::error_code`] into the page's `error`
/// field (when the ERROR feature is advertised; C writes it regardless) and stop processing
/// this ring until the domain is reintroduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RingError {
    /// `prod - cons > 1024` on the named queue.
    IndexCorrupt {
        /// True for the request queue, false for the response queue.
        request_queue: bool,
        /// Producer index seen.
        prod: u32,
        /// Consumer index seen.
        cons: u32,
    },
}

impl RingError {
    /// The value for the page's `error` field ([`ERROR_RINGIDX`]).
    pub const fn error_code(self) -> u32 {
        match self {
            RingError::IndexCorrupt { .. } => ERROR_RINGIDX,
        }
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::IndexCorrupt {
                request_queue,
                prod,
                cons,
            } => write!(
                formatter,
                "inconsistent {} ring indices: prod {prod:#x}, cons {cons:#x}",
                if *request_queue {
                    "request"
                } else {
                    "response"
                }
            ),
        }
    }
}

/// The outcome of moving bytes through a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the peer must be notified when `notify` is true"]
pub struct Transfer {
    /// Bytes copied.
    pub bytes: usize,
    /// True if an index moved: send an event-channel notification to the peer.
    pub notify: bool,
}

/// Result of the reconnection step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "after `Completed` the peer must be notified and connection state dropped"]
pub enum Reconnect {
    /// `connection` is not RECONNECT: nothing to do.
    NotRequested,
    /// Indices were reset and `connection` set to CONNECTED. The server must have dropped (or
    /// now drops) partial input, queued output, watches and transactions of the connection,
    /// and must notify the guest.
    Completed,
}

fn snapshot<M: RingMemory + ?Sized>(memory: &M, queue: Queue) -> Result<Indices, RingError> {
    let cons = memory.load_acquire(queue.cons());
    let prod = memory.load_acquire(queue.prod());
    memory.fence();
    if indices_are_consistent(prod, cons) {
        Ok(Indices { cons, prod })
    } else {
        Err(RingError::IndexCorrupt {
            request_queue: queue == Queue::Request,
            prod,
            cons,
        })
    }
}

/// Consumer side of a queue: copies up to `out.len()` unread bytes, advances `cons`.
fn consume<M: RingMemory + ?Sized>(
    memory: &M,
    queue: Queue,
    out: &mut [u8],
) -> Result<Transfer, RingError> {
    let indices = snapshot(memory, queue)?;
    let count = out.len().min(indices.unread() as usize);
    if count == 0 {
        return Ok(Transfer {
            bytes: 0,
            notify: false,
        });
    }
    let offset = (indices.cons & RING_INDEX_MASK) as usize;
    let first = count.min(RING_SIZE_BYTES - offset);
    let (head, tail) = out[..count].split_at_mut(first);
    memory.read_data(queue.area(), offset, head);
    memory.read_data(queue.area(), 0, tail);
    memory.fence();
    memory.store_release(queue.cons(), indices.cons.wrapping_add(count as u32));
    Ok(Transfer {
        bytes: count,
        notify: true,
    })
}

/// Producer side of a queue: copies as much of `bytes` as fits, advances `prod`.
fn produce<M: RingMemory + ?Sized>(
    memory: &M,
    queue: Queue,
    bytes: &[u8],
) -> Result<Transfer, RingError> {
    let indices = snapshot(memory, queue)?;
    let count = bytes.len().min(indices.free() as usize);
    if count == 0 {
        return Ok(Transfer {
            bytes: 0,
            notify: false,
        });
    }
    let offset = (indices.prod & RING_INDEX_MASK) as usize;
    let first = count.min(RING_SIZE_BYTES - offset);
    let (head, tail) = bytes[..count].split_at(first);
    memory.write_data(queue.area(), offset, head);
    memory.write_data(queue.area(), 0, tail);
    memory.fence();
    memory.store_release(queue.prod(), indices.prod.wrapping_add(count as u32));
    Ok(Transfer {
        bytes: count,
        notify: true,
    })
}

/// The server's side of a ring page: reads requests, writes replies, owns `req_cons`,
/// `rsp_prod`, `server_features`, `error` and the server half of the reconnect handshake.
/// Holds no state of its own: everything is re-read from the page, as C xenstored does.
#[derive(Clone, Debug)]
pub struct ServerRing<M: RingMemory> {
    memory: M,
}

impl<M: RingMemory> ServerRing<M> {
    /// Serves the ring in `memory`.
    pub fn new(memory: M) -> ServerRing<M> {
        ServerRing { memory }
    }

    /// The page.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Gives the page back.
    pub fn into_inner(self) -> M {
        self.memory
    }

    /// Consistent request-queue indices, or the error to report.
    pub fn request_indices(&self) -> Result<Indices, RingError> {
        snapshot(&self.memory, Queue::Request)
    }

    /// Consistent response-queue indices, or the error to report.
    pub fn response_indices(&self) -> Result<Indices, RingError> {
        snapshot(&self.memory, Queue::Response)
    }

    /// Request bytes waiting to be read.
    pub fn request_bytes_available(&self) -> Result<usize, RingError> {
        Ok(self.request_indices()?.unread() as usize)
    }

    /// Bytes of reply space free.
    pub fn reply_space_available(&self) -> Result<usize, RingError> {
        Ok(self.response_indices()?.free() as usize)
    }

    /// Reads up to `out.len()` request bytes (across the wrap) and advances `req_cons`.
    pub fn read_requests(&self, out: &mut [u8]) -> Result<Transfer, RingError> {
        consume(&self.memory, Queue::Request, out)
    }

    /// Read-ahead for a server that publishes `req_cons` only once the requests it read are
    /// durably applied (crash-resilient mode): copies up to `out.len()` request bytes starting
    /// at stream position `from` — its own "shadow" consumer index, at or ahead of the
    /// published `req_cons` — and leaves `req_cons` alone. Returns the bytes copied.
    /// `IndexCorrupt` if the guest's indices are inconsistent or `from` lies outside
    /// `req_cons ..= req_prod`.
    pub fn peek_requests(&self, from: u32, out: &mut [u8]) -> Result<usize, RingError> {
        let indices = self.request_indices()?;
        let ahead = from.wrapping_sub(indices.cons);
        if ahead > indices.unread() {
            return Err(RingError::IndexCorrupt {
                request_queue: true,
                prod: indices.prod,
                cons: from,
            });
        }
        let count = out.len().min((indices.unread() - ahead) as usize);
        if count == 0 {
            return Ok(0);
        }
        let offset = (from & RING_INDEX_MASK) as usize;
        let first = count.min(RING_SIZE_BYTES - offset);
        let (head, tail) = out[..count].split_at_mut(first);
        self.memory.read_data(Queue::Request.area(), offset, head);
        self.memory.read_data(Queue::Request.area(), 0, tail);
        self.memory.fence();
        Ok(count)
    }

    /// Publishes `req_cons = cons` after [`ServerRing::peek_requests`] read up to `cons`
    /// (frees the guest's ring space; the caller notifies the guest). `IndexCorrupt` if `cons`
    /// is not within `req_cons ..= req_prod` (nothing is written then).
    pub fn publish_request_consumer(&self, cons: u32) -> Result<(), RingError> {
        let indices = self.request_indices()?;
        if cons.wrapping_sub(indices.cons) > indices.unread() {
            return Err(RingError::IndexCorrupt {
                request_queue: true,
                prod: indices.prod,
                cons,
            });
        }
        self.memory.fence();
        self.memory.store_release(Field::ReqCons, cons);
        Ok(())
    }

    /// Writes as much of `bytes` as fits into the reply ring (across the wrap) and advances
    /// `rsp_prod`. The caller keeps the rest for later.
    pub fn write_replies(&self, bytes: &[u8]) -> Result<Transfer, RingError> {
        produce(&self.memory, Queue::Response, bytes)
    }

    /// Writes the advertised feature bits (C: at first INTRODUCE, before touching the queues).
    pub fn set_server_features(&self, features: u32) {
        self.memory.store_release(Field::ServerFeatures, features);
    }

    /// The advertised feature bits.
    pub fn server_features(&self) -> u32 {
        self.memory.load_acquire(Field::ServerFeatures)
    }

    /// Marks the ring broken with one of the `ERROR_*` codes.
    pub fn set_error(&self, code: u32) {
        self.memory.store_release(Field::Error, code);
    }

    /// The `error` field.
    pub fn error(&self) -> u32 {
        self.memory.load_acquire(Field::Error)
    }

    /// The `evtchn_port` field (non-zero: the port to bind instead of INTRODUCE's argument).
    pub fn evtchn_port(&self) -> u32 {
        self.memory.load_acquire(Field::EvtchnPort)
    }

    /// True if the guest has asked for a reconnect (`connection == RECONNECT`).
    pub fn reconnect_requested(&self) -> bool {
        self.memory.load_acquire(Field::Connection) == RECONNECT
    }

    /// Zeroes all four indices (C `domain_conn_reset`, done at every INTRODUCE). Indices are
    /// published before anything else can follow (release stores after a fence).
    pub fn reset_indices(&self) {
        self.memory.fence();
        for field in [
            Field::ReqCons,
            Field::ReqProd,
            Field::RspCons,
            Field::RspProd,
        ] {
            self.memory.store_release(field, 0);
        }
        self.memory.fence();
    }

    /// The server step of the reconnection handshake: if the guest set `connection` to
    /// RECONNECT, reset the indices, set CONNECTED and report [`Reconnect::Completed`] (drop
    /// the connection's state and notify). Called when the event channel fires, and at
    /// INTRODUCE after [`ServerRing::reset_indices`].
    pub fn complete_reconnect(&self) -> Reconnect {
        if !self.reconnect_requested() {
            return Reconnect::NotRequested;
        }
        self.reset_indices();
        self.memory.store_release(Field::Connection, CONNECTED);
        Reconnect::Completed
    }
}

/// The guest's side of a ring page (what a frontend driver does): writes requests, reads
/// replies and asks for reconnects. Used by tests and by the hosted simulated guests.
#[derive(Clone, Debug)]
pub struct GuestRing<M: RingMemory> {
    memory: M,
}

impl<M: RingMemory> GuestRing<M> {
    /// Drives the guest side of the ring in `memory`.
    pub fn new(memory: M) -> GuestRing<M> {
        GuestRing { memory }
    }

    /// The page.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Gives the page back.
    pub fn into_inner(self) -> M {
        self.memory
    }

    /// Writes as much of `bytes` as fits into the request ring, advancing `req_prod`.
    pub fn write_requests(&self, bytes: &[u8]) -> Result<Transfer, RingError> {
        produce(&self.memory, Queue::Request, bytes)
    }

    /// Reads up to `out.len()` reply bytes, advancing `rsp_cons`.
    pub fn read_replies(&self, out: &mut [u8]) -> Result<Transfer, RingError> {
        consume(&self.memory, Queue::Response, out)
    }

    /// Reply bytes waiting.
    pub fn reply_bytes_available(&self) -> Result<usize, RingError> {
        Ok(snapshot(&self.memory, Queue::Response)?.unread() as usize)
    }

    /// Free request space.
    pub fn request_space_available(&self) -> Result<usize, RingError> {
        Ok(snapshot(&self.memory, Queue::Request)?.free() as usize)
    }

    /// Asks the server to reset the connection (`connection = RECONNECT`); notify afterwards.
    pub fn request_reconnect(&self) {
        self.memory.store_release(Field::Connection, RECONNECT);
    }

    /// True once the server has completed a reconnect (or none was requested).
    pub fn is_connected(&self) -> bool {
        self.memory.load_acquire(Field::Connection) == CONNECTED
    }

    /// The server's advertised features.
    pub fn server_features(&self) -> u32 {
        self.memory.load_acquire(Field::ServerFeatures)
    }

    /// The `error` field.
    pub fn error(&self) -> u32 {
        self.memory.load_acquire(Field::Error)
    }

    /// Sets `evtchn_port` (what the toolstack does for dom0less guests).
    pub fn set_evtchn_port(&self, port: u32) {
        self.memory.store_release(Field::EvtchnPort, port);
    }
}

/// A ring page in ordinary memory, in safe code: 1024 little-endian `AtomicU32` words, so it
/// is `Sync` and one `Arc<InMemoryPage>` can be shared by a server and a guest on different
/// threads (the hosted daemon's simulated rings). Byte-level access goes through the words.
pub struct InMemoryPage {
    words: [AtomicU32; RING_PAGE_BYTES / 4],
}

impl InMemoryPage {
    /// A zeroed page.
    pub fn new() -> InMemoryPage {
        InMemoryPage {
            words: core::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// A page with the given contents (golden images).
    pub fn from_bytes(bytes: &[u8; RING_PAGE_BYTES]) -> InMemoryPage {
        let page = InMemoryPage::new();
        for (word, chunk) in page.words.iter().zip(bytes.chunks_exact(4)) {
            let mut le = [0u8; 4];
            le.copy_from_slice(chunk);
            word.store(u32::from_le_bytes(le), Ordering::Relaxed);
        }
        page
    }

    /// The current contents.
    pub fn to_bytes(&self) -> [u8; RING_PAGE_BYTES] {
        let mut bytes = [0u8; RING_PAGE_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(self.words.iter()) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        bytes
    }

    /// Raw field access for tests that play a misbehaving peer.
    pub fn set_field(&self, field: Field, value: u32) {
        self.store_release(field, value);
    }

    /// Raw field read.
    pub fn field(&self, field: Field) -> u32 {
        self.load_acquire(field)
    }

    fn byte(&self, index: usize) -> u8 {
        self.words.get(index / 4).map_or(0, |word| {
            (word.load(Ordering::Relaxed) >> (8 * (index % 4))) as u8
        })
    }

    fn set_byte(&self, index: usize, value: u8) {
        if let Some(word) = self.words.get(index / 4) {
            let shift = 8 * (index % 4);
            let mask = !(0xffu32 << shift);
            // Single writer per area; the RMW keeps the other three bytes intact.
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old & mask) | (u32::from(value) << shift))
            });
        }
    }

    fn clamp(area: DataArea, offset: usize, len: usize) -> (usize, usize) {
        let offset = offset.min(RING_SIZE_BYTES);
        let len = len.min(RING_SIZE_BYTES - offset);
        (area.offset() + offset, len)
    }
}

impl Default for InMemoryPage {
    fn default() -> InMemoryPage {
        InMemoryPage::new()
    }
}

impl Clone for InMemoryPage {
    fn clone(&self) -> InMemoryPage {
        InMemoryPage::from_bytes(&self.to_bytes())
    }
}

impl fmt::Debug for InMemoryPage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = formatter.debug_struct("InMemoryPage");
        for field in Field::ALL {
            debug.field(field_name(field), &self.load_acquire(field));
        }
        debug.finish_non_exhaustive()
    }
}

fn field_name(field: Field) -> &'static str {
    match field {
        Field::ReqCons => "req_cons",
        Field::ReqProd => "req_prod",
        Field::RspCons => "rsp_cons",
        Field::RspProd => "rsp_prod",
        Field::ServerFeatures => "server_features",
        Field::Connection => "connection",
        Field::Error => "error",
        Field::EvtchnPort => "evtchn_port",
    }
}

impl RingMemory for InMemoryPage {
    fn load_acquire(&self, field: Field) -> u32 {
        self.words
            .get(field.offset() / 4)
            .map_or(0, |word| word.load(Ordering::Acquire))
    }

    fn store_release(&self, field: Field, value: u32) {
        if let Some(word) = self.words.get(field.offset() / 4) {
            word.store(value, Ordering::Release);
        }
    }

    fn read_data(&self, area: DataArea, offset: usize, out: &mut [u8]) {
        let (start, len) = InMemoryPage::clamp(area, offset, out.len());
        for (index, byte) in out.iter_mut().take(len).enumerate() {
            *byte = self.byte(start + index);
        }
    }

    fn write_data(&self, area: DataArea, offset: usize, bytes: &[u8]) {
        let (start, len) = InMemoryPage::clamp(area, offset, bytes.len());
        for (index, byte) in bytes.iter().take(len).enumerate() {
            self.set_byte(start + index, *byte);
        }
    }

    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_ahead_without_publishing_then_publish_frees_space() {
        let page = InMemoryPage::new();
        let start = u32::MAX - 3; // the stream wraps the 32-bit index space
        page.set_field(Field::ReqCons, start);
        page.set_field(Field::ReqProd, start);
        let guest = GuestRing::new(&page);
        let server = ServerRing::new(&page);
        assert_eq!(guest.write_requests(b"0123456789").map(|t| t.bytes), Ok(10));
        let mut out = [0u8; 6];
        assert_eq!(server.peek_requests(start, &mut out), Ok(6));
        assert_eq!(&out, b"012345");
        let mut rest = [0u8; 16];
        assert_eq!(
            server.peek_requests(start.wrapping_add(6), &mut rest),
            Ok(4)
        );
        assert_eq!(&rest[..4], b"6789");
        assert_eq!(page.field(Field::ReqCons), start, "peeking never publishes");
        assert_eq!(
            server.peek_requests(start.wrapping_add(10), &mut rest),
            Ok(0)
        );
        // Outside req_cons ..= req_prod: behind the published index or beyond the producer.
        assert!(
            server
                .peek_requests(start.wrapping_sub(1), &mut rest)
                .is_err()
        );
        assert!(
            server
                .peek_requests(start.wrapping_add(11), &mut rest)
                .is_err()
        );
        assert!(
            server
                .publish_request_consumer(start.wrapping_add(11))
                .is_err()
        );
        assert_eq!(page.field(Field::ReqCons), start);
        assert_eq!(
            server.publish_request_consumer(start.wrapping_add(6)),
            Ok(())
        );
        assert_eq!(page.field(Field::ReqCons), start.wrapping_add(6));
        assert_eq!(server.request_bytes_available(), Ok(4));
    }

    #[test]
    fn peek_reports_corrupt_guest_indices() {
        let page = InMemoryPage::new();
        page.set_field(Field::ReqProd, 2000);
        let server = ServerRing::new(&page);
        assert!(matches!(
            server.peek_requests(0, &mut [0u8; 4]),
            Err(RingError::IndexCorrupt { .. })
        ));
    }

    #[test]
    fn layout_matches_xs_wire_h() {
        let offsets: alloc::vec::Vec<usize> = Field::ALL.iter().map(|f| f.offset()).collect();
        assert_eq!(offsets, [2048, 2052, 2056, 2060, 2064, 2068, 2072, 2076]);
        assert_eq!(DataArea::Request.offset(), 0);
        assert_eq!(DataArea::Response.offset(), 1024);
        assert_eq!(
            [
                FEATURE_RECONNECTION,
                FEATURE_ERROR,
                FEATURE_WATCHDEPTH,
                FEATURE_DOMID_ANY
            ],
            [1, 2, 4, 8]
        );
        assert_eq!([CONNECTED, RECONNECT], [0, 1]);
        assert_eq!(
            [ERROR_NONE, ERROR_COMM, ERROR_RINGIDX, ERROR_PROTO],
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn consistency_predicate() {
        assert!(indices_are_consistent(0, 0));
        assert!(indices_are_consistent(1024, 0));
        assert!(!indices_are_consistent(1025, 0));
        assert!(!indices_are_consistent(0, 1));
        assert!(indices_are_consistent(3, u32::MAX - 1020));
        assert!(!indices_are_consistent(4, u32::MAX - 1020));
    }
}
