//! The block-device interface (xen.git `xen/include/public/io/blkif.h`) and its one-page shared
//! ring (`xen/include/public/io/ring.h`, `DEFINE_RING_TYPES(blkif, ...)`), x86_64 layout, plus
//! the frontend's pure index arithmetic and segment splitting (no memory access here).
//!
//! Ring page: header of 64 bytes (`req_prod`, `req_event`, `rsp_prod`, `rsp_event` as u32 at
//! 0, 4, 8, 12, then padding), followed by [`RING_SIZE`] slots of the union of request and
//! response (112 bytes: the request is the larger). Indices are free-running u32; slot =
//! index mod [`RING_SIZE`]. Addressing is always in 512-byte units whatever `sector-size`
//! the backend announces.

use core::mem::size_of;

use super::abi::GrantRef;

pub const BLKIF_OP_READ: u8 = 0;
pub const BLKIF_OP_WRITE: u8 = 1;
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Segments in one direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
pub const BLKIF_RSP_ERROR: i16 = -1;
pub const BLKIF_RSP_OKAY: i16 = 0;
/// `info` bit: read-only device (blkif.h `VDISK_READONLY`).
pub const VDISK_READONLY: u32 = 1 << 2;
/// Bytes per blkif sector (the unit of `sector_number`, `first_sect`, `last_sect`, `sectors`).
pub const SECTOR_BYTES: usize = 512;
/// Sectors in one 4 KiB page.
pub const SECTORS_PER_PAGE: usize = 4096 / SECTOR_BYTES;

/// `struct blkif_request_segment` (blkif.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkifRequestSegment {
    pub gref: GrantRef,
    pub first_sect: u8,
    pub last_sect: u8,
    pub pad: u16,
}
const _: () = assert!(size_of::<BlkifRequestSegment>() == 8);

/// `struct blkif_request` (blkif.h), x86_64: 4 bytes of padding after `handle`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkifRequest {
    pub operation: u8,
    pub nr_segments: u8,
    pub handle: u16,
    pub pad: u32,
    pub id: u64,
    pub sector_number: u64,
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}
const _: () = assert!(size_of::<BlkifRequest>() == 112);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, id) == 8);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, seg) == 24);

/// `struct blkif_response` (blkif.h), x86_64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkifResponse {
    pub id: u64,
    pub operation: u8,
    pub pad: u8,
    pub status: i16,
    pub pad2: u32,
}
const _: () = assert!(size_of::<BlkifResponse>() == 16);
const _: () = assert!(core::mem::offset_of!(BlkifResponse, status) == 10);

/// Byte offsets of the shared ring header (ring.h `struct blkif_sring`).
pub const OFFSET_REQ_PROD: usize = 0;
pub const OFFSET_REQ_EVENT: usize = 4;
pub const OFFSET_RSP_PROD: usize = 8;
pub const OFFSET_RSP_EVENT: usize = 12;
/// Offset of slot 0.
pub const RING_HEADER_BYTES: usize = 64;
/// Bytes per slot (the union of request and response).
pub const SLOT_BYTES: usize = size_of::<BlkifRequest>();
/// Slots in a one-page ring: the largest power of two that fits (ring.h `__RING_SIZE`).
pub const RING_SIZE: u32 = {
    let fit = ((4096 - RING_HEADER_BYTES) / SLOT_BYTES) as u32;
    1 << (31 - fit.leading_zeros())
};
const _: () = assert!(RING_SIZE == 32);

/// Byte offset of the slot for free-running index `index`.
pub const fn slot_offset(index: u32) -> usize {
    RING_HEADER_BYTES + (index % RING_SIZE) as usize * SLOT_BYTES
}

/// The frontend's view of ring occupancy is consistent: the backend has not answered more
/// than was requested, and no more than a ring's worth is outstanding. Everything is modular
/// (free-running u32 indices).
pub const fn indices_consistent(req_prod: u32, rsp_prod: u32, rsp_cons: u32) -> bool {
    let requested = req_prod.wrapping_sub(rsp_cons);
    let answered = rsp_prod.wrapping_sub(rsp_cons);
    requested <= RING_SIZE && answered <= requested
}

/// Free request slots given our private producer and our response consumer.
pub const fn free_slots(req_prod_pvt: u32, rsp_cons: u32) -> u32 {
    RING_SIZE.saturating_sub(req_prod_pvt.wrapping_sub(rsp_cons))
}

/// Whether the backend must be notified after moving `req_prod` from `old` to `new` given its
/// `req_event` (ring.h `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
pub const fn push_needs_notify(old: u32, new: u32, req_event: u32) -> bool {
    new.wrapping_sub(req_event) < new.wrapping_sub(old)
}

/// One request of a batch: a run of consecutive data pages starting at `first_page`, covering
/// `sector_count` sectors from `sector` (the last page may be partly used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSpan {
    pub sector: u64,
    pub first_page: usize,
    pub sector_count: usize,
}

impl RequestSpan {
    /// Pages (= segments) of this request.
    pub const fn pages(&self) -> usize {
        self.sector_count.div_ceil(SECTORS_PER_PAGE)
    }

    /// `(first_sect, last_sect)` of segment `index` (every segment starts at offset 0 of its
    /// page; only the last may end early).
    pub const fn segment_sectors(&self, index: usize) -> (u8, u8) {
        let before = index * SECTORS_PER_PAGE;
        let remaining = self.sector_count - before;
        let in_page = if remaining < SECTORS_PER_PAGE {
            remaining
        } else {
            SECTORS_PER_PAGE
        };
        (0, (in_page - 1) as u8)
    }
}

/// Splits a transfer of `sector_count` sectors from `sector`, staged in data pages starting at
/// page 0, into requests of at most [`BLKIF_MAX_SEGMENTS_PER_REQUEST`] pages each. Pure; the
/// caller bounds `sector_count` by its data pages and the ring.
pub fn split_requests(
    sector: u64,
    sector_count: usize,
    mut emit: impl FnMut(RequestSpan),
) -> usize {
    const REQUEST_SECTORS_MAX: usize = BLKIF_MAX_SEGMENTS_PER_REQUEST * SECTORS_PER_PAGE;
    let mut done = 0;
    let mut requests = 0;
    while done < sector_count {
        let count = (sector_count - done).min(REQUEST_SECTORS_MAX);
        emit(RequestSpan {
            sector: sector + done as u64,
            first_page: done / SECTORS_PER_PAGE,
            sector_count: count,
        });
        done += count;
        requests += 1;
    }
    requests
}

/// xenbus device states (xen.git `xen/include/public/io/xenbus.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XenbusState {
    Unknown,
    Initialising,
    InitWait,
    Initialised,
    Connected,
    Closing,
    Closed,
    Reconfiguring,
    Reconfigured,
}

impl XenbusState {
    /// Parses the decimal value of a `state` node; `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<XenbusState> {
        let text = core::str::from_utf8(value)
            .ok()?
            .trim_end_matches('\0')
            .trim();
        Some(match text.parse::<u32>().ok()? {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }

    /// The decimal value written to a `state` node.
    pub const fn value(self) -> &'static str {
        match self {
            XenbusState::Unknown => "0",
            XenbusState::Initialising => "1",
            XenbusState::InitWait => "2",
            XenbusState::Initialised => "3",
            XenbusState::Connected => "4",
            XenbusState::Closing => "5",
            XenbusState::Closed => "6",
            XenbusState::Reconfiguring => "7",
            XenbusState::Reconfigured => "8",
        }
    }
}

// Compile-time checks of the pure arithmetic (the kernel crate has no host test harness).
const _: () = assert!(indices_consistent(5, 3, 3));
const _: () = assert!(indices_consistent(
    u32::MAX.wrapping_add(3),
    1,
    u32::MAX - 1
));
const _: () = assert!(!indices_consistent(3, 5, 3));
const _: () = assert!(!indices_consistent(40, 0, 0));
const _: () = assert!(free_slots(10, 10) == 32 && free_slots(42, 10) == 0);
const _: () = assert!(push_needs_notify(0, 3, 1) && !push_needs_notify(0, 3, 4));
const _: () = assert!(slot_offset(33) == 64 + 112);
const _: () = {
    let span = RequestSpan {
        sector: 0,
        first_page: 0,
        sector_count: 13,
    };
    assert!(span.pages() == 2);
    assert!(span.segment_sectors(0).1 == 7 && span.segment_sectors(1).1 == 4);
};
