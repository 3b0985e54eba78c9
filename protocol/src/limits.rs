//! Every size bound of the wire protocol, in one place (xen.git `xen/include/public/io/xs_wire.h`).
//!
//! Units are last in each name. Quotas that a server may configure (nodes per domain, watches, …)
//! are not protocol limits and live in the store crate.

/// Size of the fixed message header (`struct xsd_sockmsg`: four `u32`).
pub const HEADER_LEN_BYTES: usize = 16;

/// Largest payload either side may send (`XENSTORE_PAYLOAD_MAX`). A header announcing more is a
/// protocol violation; a reply that would exceed it is replaced by `E2BIG`.
pub const PAYLOAD_MAX_BYTES: usize = 4096;

/// Longest absolute path accepted anywhere (`XENSTORE_ABS_PATH_MAX`).
pub const ABSOLUTE_PATH_MAX_BYTES: usize = 3072;

/// Longest relative path accepted (`XENSTORE_REL_PATH_MAX`); also the default per-domain
/// `path-max` quota of C xenstored.
pub const RELATIVE_PATH_MAX_BYTES: usize = 2048;

/// Size of each of the two byte rings in the shared page (`XENSTORE_RING_SIZE`).
pub const RING_SIZE_BYTES: usize = 1024;

/// Size of the whole shared page holding `struct xenstore_domain_interface`.
pub const RING_PAGE_BYTES: usize = 4096;
