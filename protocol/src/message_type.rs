//! Message type numbers (`enum xsd_sockmsg_type` in xen.git `xen/include/public/io/xs_wire.h`).
//!
//! Types 0–26 as of 2026, plus `XS_INVALID` (0xffff). Type 20 (`XS_RESTRICT`) was removed
//! upstream; its number stays reserved and is answered with `ENOSYS`.

use core::fmt;

/// A xenstore message type. Unknown numbers are kept as [`MessageType::Unknown`] so that the
/// server can answer them with `ENOSYS` while echoing the number back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MessageType {
    /// 0: `XS_CONTROL` (formerly `XS_DEBUG`).
    Control,
    /// 1: list children.
    Directory,
    /// 2: read a value.
    Read,
    /// 3: read permissions.
    GetPerms,
    /// 4: register a watch.
    Watch,
    /// 5: remove a watch.
    Unwatch,
    /// 6: start a transaction.
    TransactionStart,
    /// 7: commit or abort a transaction.
    TransactionEnd,
    /// 8: start serving a domain.
    Introduce,
    /// 9: stop serving a domain.
    Release,
    /// 10: `/local/domain/<domid>`.
    GetDomainPath,
    /// 11: write a value.
    Write,
    /// 12: create a node.
    Mkdir,
    /// 13: remove a subtree.
    Rm,
    /// 14: set permissions.
    SetPerms,
    /// 15: server → client watch event.
    WatchEvent,
    /// 16: server → client error reply.
    Error,
    /// 17: is the domain introduced?
    IsDomainIntroduced,
    /// 18: re-arm `@releaseDomain` for a domain.
    Resume,
    /// 19: give a domain the privileges of another.
    SetTarget,
    /// 20: `XS_RESTRICT`, removed upstream; always `ENOSYS`.
    Restrict,
    /// 21: drop all watches and transactions of the caller.
    ResetWatches,
    /// 22: chunked directory listing.
    DirectoryPart,
    /// 23: read the feature bitmap.
    GetFeature,
    /// 24: set a domain's feature bitmap before introduction.
    SetFeature,
    /// 25: read quotas.
    GetQuota,
    /// 26: set quotas.
    SetQuota,
    /// 0xffff: `XS_INVALID`, guaranteed never valid.
    Invalid,
    /// Any other number.
    Unknown(u32),
}

/// Number of defined types (`XS_TYPE_COUNT`).
pub const TYPE_COUNT: u32 = 27;

/// The number of `XS_INVALID`.
pub const INVALID_TYPE_NUMBER: u32 = 0xffff;

impl MessageType {
    /// Every defined type, in numeric order (0..=26), without `Invalid` and `Unknown`.
    pub const DEFINED: [MessageType; 27] = [
        MessageType::Control,
        MessageType::Directory,
        MessageType::Read,
        MessageType::GetPerms,
        MessageType::Watch,
        MessageType::Unwatch,
        MessageType::TransactionStart,
        MessageType::TransactionEnd,
        MessageType::Introduce,
        MessageType::Release,
        MessageType::GetDomainPath,
        MessageType::Write,
        MessageType::Mkdir,
        MessageType::Rm,
        MessageType::SetPerms,
        MessageType::WatchEvent,
        MessageType::Error,
        MessageType::IsDomainIntroduced,
        MessageType::Resume,
        MessageType::SetTarget,
        MessageType::Restrict,
        MessageType::ResetWatches,
        MessageType::DirectoryPart,
        MessageType::GetFeature,
        MessageType::SetFeature,
        MessageType::GetQuota,
        MessageType::SetQuota,
    ];

    /// Decodes a header's type field. Never fails: unknown numbers become `Unknown`.
    pub fn from_u32(number: u32) -> MessageType {
        if number == INVALID_TYPE_NUMBER {
            return MessageType::Invalid;
        }
        match usize::try_from(number) {
            Ok(index) if index < MessageType::DEFINED.len() => MessageType::DEFINED[index],
            _ => MessageType::Unknown(number),
        }
    }

    /// The number carried in the header.
    pub fn as_u32(self) -> u32 {
        match self {
            MessageType::Invalid => INVALID_TYPE_NUMBER,
            MessageType::Unknown(number) => number,
            defined => MessageType::DEFINED
                .iter()
                .position(|candidate| *candidate == defined)
                .map(|index| index as u32)
                .unwrap_or(INVALID_TYPE_NUMBER),
        }
    }

    /// Upstream's name without the `XS_` prefix, e.g. `"TRANSACTION_START"`.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Control => "CONTROL",
            MessageType::Directory => "DIRECTORY",
            MessageType::Read => "READ",
            MessageType::GetPerms => "GET_PERMS",
            MessageType::Watch => "WATCH",
            MessageType::Unwatch => "UNWATCH",
            MessageType::TransactionStart => "TRANSACTION_START",
            MessageType::TransactionEnd => "TRANSACTION_END",
            MessageType::Introduce => "INTRODUCE",
            MessageType::Release => "RELEASE",
            MessageType::GetDomainPath => "GET_DOMAIN_PATH",
            MessageType::Write => "WRITE",
            MessageType::Mkdir => "MKDIR",
            MessageType::Rm => "RM",
            MessageType::SetPerms => "SET_PERMS",
            MessageType::WatchEvent => "WATCH_EVENT",
            MessageType::Error => "ERROR",
            MessageType::IsDomainIntroduced => "IS_DOMAIN_INTRODUCED",
            MessageType::Resume => "RESUME",
            MessageType::SetTarget => "SET_TARGET",
            MessageType::Restrict => "RESTRICT",
            MessageType::ResetWatches => "RESET_WATCHES",
            MessageType::DirectoryPart => "DIRECTORY_PART",
            MessageType::GetFeature => "GET_FEATURE",
            MessageType::SetFeature => "SET_FEATURE",
            MessageType::GetQuota => "GET_QUOTA",
            MessageType::SetQuota => "SET_QUOTA",
            MessageType::Invalid => "INVALID",
            MessageType::Unknown(_) => "UNKNOWN",
        }
    }

    /// True for types a client may send and a server implements (everything but 15, 16, 20,
    /// `Invalid` and unknown numbers, which are answered with `ENOSYS`).
    pub fn is_client_request(self) -> bool {
        !matches!(
            self,
            MessageType::WatchEvent
                | MessageType::Error
                | MessageType::Restrict
                | MessageType::Invalid
                | MessageType::Unknown(_)
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageType::Unknown(number) => write!(formatter, "UNKNOWN({number})"),
            known => formatter.write_str(known.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_xs_wire_h() {
        let expected = [
            (0, "CONTROL"),
            (1, "DIRECTORY"),
            (2, "READ"),
            (3, "GET_PERMS"),
            (4, "WATCH"),
            (5, "UNWATCH"),
            (6, "TRANSACTION_START"),
            (7, "TRANSACTION_END"),
            (8, "INTRODUCE"),
            (9, "RELEASE"),
            (10, "GET_DOMAIN_PATH"),
            (11, "WRITE"),
            (12, "MKDIR"),
            (13, "RM"),
            (14, "SET_PERMS"),
            (15, "WATCH_EVENT"),
            (16, "ERROR"),
            (17, "IS_DOMAIN_INTRODUCED"),
            (18, "RESUME"),
            (19, "SET_TARGET"),
            (20, "RESTRICT"),
            (21, "RESET_WATCHES"),
            (22, "DIRECTORY_PART"),
            (23, "GET_FEATURE"),
            (24, "SET_FEATURE"),
            (25, "GET_QUOTA"),
            (26, "SET_QUOTA"),
            (0xffff, "INVALID"),
        ];
        for (number, name) in expected {
            let message_type = MessageType::from_u32(number);
            assert_eq!(message_type.name(), name, "type {number}");
            assert_eq!(message_type.as_u32(), number);
        }
        assert_eq!(TYPE_COUNT as usize, MessageType::DEFINED.len());
    }

    #[test]
    fn unknown_numbers_are_preserved() {
        for number in [27, 28, 1000, 0xfffe, 0x1_0000, u32::MAX] {
            let message_type = MessageType::from_u32(number);
            assert_eq!(message_type, MessageType::Unknown(number));
            assert_eq!(message_type.as_u32(), number);
            assert!(!message_type.is_client_request());
        }
    }

    #[test]
    fn server_only_and_removed_types_are_not_requests() {
        assert!(!MessageType::WatchEvent.is_client_request());
        assert!(!MessageType::Error.is_client_request());
        assert!(!MessageType::Restrict.is_client_request());
        assert!(!MessageType::Invalid.is_client_request());
        assert!(MessageType::Write.is_client_request());
        assert!(MessageType::SetQuota.is_client_request());
    }
}
