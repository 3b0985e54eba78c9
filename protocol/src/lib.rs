//! The Xenstore wire protocol: message framing, typed payloads, errors, paths, permissions and
//! the shared-memory ring of `struct xenstore_domain_interface`.
//!
//! Contract:
//! - `no_std` + `alloc`, no hardware access, `#![forbid(unsafe_code)]`. The shared ring page
//!   is reached only through the [`ring::RingMemory`] trait; its implementation over real
//!   shared memory (the one place needing `unsafe`) lives in the platform crates.
//! - **No panics on peer input.** No function in this crate panics on any bytes, header, page
//!   contents or deserialized state that a peer (or a corrupted persisted image) can produce:
//!   malformed input yields an error value. The server turns a [`request::Request::parse`]
//!   error into an `XS_ERROR` reply; a header that breaks the framing rules
//!   ([`header::HeaderError::PayloadTooLong`], [`assembler::AssemblerError`]) closes a socket
//!   connection or sets `XENSTORE_ERROR_PROTO` in a ring's `error` field; inconsistent ring
//!   indices ([`ring::RingError`]) set `XENSTORE_ERROR_RINGIDX` — as C xenstored does. This is
//!   checked by property tests (`tests/properties.rs`) and fuzz targets (`fuzz/`).
//! - Follows xen.git `xen/include/public/io/xs_wire.h`, `docs/misc/xenstore.txt`,
//!   `docs/misc/xenstore-ring.txt` and the argument handling of `tools/xenstored/*.c`.
//!
//! Map:
//! - [`header`]: the 16-byte header (checked view + value); [`message`]: header + payload;
//!   [`assembler`]: byte stream → messages, with persistable partial state;
//! - [`request`]: typed client requests (parse/emit); [`reply`]: reply payload builders;
//! - [`ring`]: the shared page layout, the [`ring::RingMemory`] boundary, server and guest
//!   sides, an in-memory page;
//! - [`error`], [`message_type`], [`domid`], [`path`], [`permissions`], [`limits`]: the
//!   vocabulary.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod assembler;
pub mod domid;
pub mod error;
pub mod header;
pub mod limits;
pub mod message;
pub mod message_type;
pub mod path;
pub mod permissions;
pub mod reply;
pub mod request;
pub mod ring;

pub use domid::Domid;
pub use error::Errno;
pub use header::Header;
pub use message::Message;
pub use message_type::MessageType;
pub use permissions::{Access, Permission, Permissions};
pub use request::{ParseOptions, Request};
