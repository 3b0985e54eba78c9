//! The error table of the wire protocol: errno names sent as text in `XS_ERROR` replies.
//!
//! Mirrors `xsd_errors[]` in xen.git `xen/include/public/io/xs_wire.h`, in upstream order (new
//! entries are only ever appended upstream). Errors travel as their ASCII name plus a NUL, never
//! as numbers, so the numeric values here are the Linux errno values for convenience only.

use core::fmt;

/// An error a xenstore server reports to a client. The name on the wire is [`Errno::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Errno {
    /// Invalid argument: bad path, bad arguments, malformed payload.
    EINVAL,
    /// Permission denied.
    EACCES,
    /// Already exists (e.g. a duplicate watch).
    EEXIST,
    /// Is a directory (not produced by this server; kept for table completeness).
    EISDIR,
    /// No such node, transaction or watch.
    ENOENT,
    /// Out of memory, memory quota exceeded, or commit of a failed transaction.
    ENOMEM,
    /// A quota is exhausted.
    ENOSPC,
    /// I/O error (e.g. the persistence device failed).
    EIO,
    /// Directory not empty (kept for table completeness).
    ENOTEMPTY,
    /// Unknown or unsupported message type.
    ENOSYS,
    /// Read-only (kept for table completeness).
    EROFS,
    /// Busy: nested transaction start, SET_FEATURE after INTRODUCE.
    EBUSY,
    /// Transaction conflict: retry.
    EAGAIN,
    /// Already connected (kept for table completeness).
    EISCONN,
    /// The reply would exceed the payload limit.
    E2BIG,
    /// Operation not permitted (e.g. an unprivileged owner change).
    EPERM,
}

impl Errno {
    /// Every error in upstream table order.
    pub const ALL: [Errno; 16] = [
        Errno::EINVAL,
        Errno::EACCES,
        Errno::EEXIST,
        Errno::EISDIR,
        Errno::ENOENT,
        Errno::ENOMEM,
        Errno::ENOSPC,
        Errno::EIO,
        Errno::ENOTEMPTY,
        Errno::ENOSYS,
        Errno::EROFS,
        Errno::EBUSY,
        Errno::EAGAIN,
        Errno::EISCONN,
        Errno::E2BIG,
        Errno::EPERM,
    ];

    /// The name sent on the wire (without the terminating NUL).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EINVAL => "EINVAL",
            Errno::EACCES => "EACCES",
            Errno::EEXIST => "EEXIST",
            Errno::EISDIR => "EISDIR",
            Errno::ENOENT => "ENOENT",
            Errno::ENOMEM => "ENOMEM",
            Errno::ENOSPC => "ENOSPC",
            Errno::EIO => "EIO",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::ENOSYS => "ENOSYS",
            Errno::EROFS => "EROFS",
            Errno::EBUSY => "EBUSY",
            Errno::EAGAIN => "EAGAIN",
            Errno::EISCONN => "EISCONN",
            Errno::E2BIG => "E2BIG",
            Errno::EPERM => "EPERM",
        }
    }

    /// The Linux errno number with this name (what libxenstore turns the name back into).
    pub const fn linux_number(self) -> i32 {
        match self {
            Errno::EINVAL => 22,
            Errno::EACCES => 13,
            Errno::EEXIST => 17,
            Errno::EISDIR => 21,
            Errno::ENOENT => 2,
            Errno::ENOMEM => 12,
            Errno::ENOSPC => 28,
            Errno::EIO => 5,
            Errno::ENOTEMPTY => 39,
            Errno::ENOSYS => 38,
            Errno::EROFS => 30,
            Errno::EBUSY => 16,
            Errno::EAGAIN => 11,
            Errno::EISCONN => 106,
            Errno::E2BIG => 7,
            Errno::EPERM => 1,
        }
    }

    /// Looks an error up by its wire name (without NUL). Unknown names give `None`.
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL
            .iter()
            .copied()
            .find(|errno| errno.name() == name)
    }

    /// The `XS_ERROR` reply payload: the name followed by one NUL.
    pub fn payload(self) -> impl Iterator<Item = u8> {
        self.name().bytes().chain(core::iter::once(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_order_matches_upstream() {
        let names: alloc::vec::Vec<&str> = Errno::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [
                "EINVAL",
                "EACCES",
                "EEXIST",
                "EISDIR",
                "ENOENT",
                "ENOMEM",
                "ENOSPC",
                "EIO",
                "ENOTEMPTY",
                "ENOSYS",
                "EROFS",
                "EBUSY",
                "EAGAIN",
                "EISCONN",
                "E2BIG",
                "EPERM"
            ]
        );
    }

    #[test]
    fn names_round_trip() {
        for errno in Errno::ALL {
            assert_eq!(Errno::from_name(errno.name()), Some(errno));
        }
        assert_eq!(Errno::from_name("EWHATEVER"), None);
        assert_eq!(Errno::from_name(""), None);
    }

    #[test]
    fn payload_is_name_and_nul() {
        let bytes: alloc::vec::Vec<u8> = Errno::EAGAIN.payload().collect();
        assert_eq!(bytes, b"EAGAIN\0");
    }
}
