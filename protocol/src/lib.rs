//! The Xenstore wire protocol: message framing, typed payloads, errors, paths, permissions and
//! the shared-memory ring of `struct xenstore_domain_interface`.
//!
//! Contract:
//! - `no_std` + `alloc`, no hardware access; the only `unsafe` in this crate would sit behind
//!   the ring-memory trait implemented by the platform (none is needed here).
//! - No function panics on any input from a peer: malformed bytes yield an error value that the
//!   server turns into an `XS_ERROR` reply or, for a header that breaks the framing rules, into
//!   closing (socket) or marking (ring `error` field) the connection, as C xenstored does.
//! - Follows xen.git `xen/include/public/io/xs_wire.h` and `docs/misc/xenstore.txt`,
//!   `docs/misc/xenstore-ring.txt`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod domid;
pub mod error;
pub mod limits;
pub mod message_type;
pub mod path;
pub mod permissions;

pub use domid::Domid;
pub use error::Errno;
pub use message_type::MessageType;
pub use permissions::{Access, Permission, Permissions};
