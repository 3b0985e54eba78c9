//! Domain identifiers and the reserved ids of xen.git `xen/include/public/xen.h`.

use core::fmt;

/// A Xen domain id (`domid_t`, 16 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Domid(pub u16);

impl Domid {
    /// dom0, the usual privileged (control) domain.
    pub const DOM0: Domid = Domid(0);
    /// First id reserved by Xen (`DOMID_FIRST_RESERVED`); ids from here on are not real domains.
    pub const FIRST_RESERVED: Domid = Domid(0x7FF0);
    /// `DOMID_SELF`: the calling domain.
    pub const SELF: Domid = Domid(0x7FF0);
    /// `DOMID_INVALID`.
    pub const INVALID: Domid = Domid(0x7FF4);
    /// `DOMID_ANY` as used in xenstore permission entries: matches every domain (honoured only
    /// with the DOMID_ANY server feature).
    pub const ANY: Domid = Domid(0x7FF5);

    /// True for ids that can name a real domain (below `DOMID_FIRST_RESERVED`).
    pub const fn is_real(self) -> bool {
        self.0 < Domid::FIRST_RESERVED.0
    }

    /// Parses a strict decimal domid as C xenstored does for domain arguments: only ASCII
    /// digits, at least one, value at most 65535. Anything else is `None` (→ `EINVAL`).
    pub fn parse_decimal(text: &str) -> Option<Domid> {
        parse_decimal_u64(text, u64::from(u16::MAX)).map(|value| Domid(value as u16))
    }
}

impl fmt::Display for Domid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// Parses a strict unsigned decimal number (digits only, no sign, no blanks) not above `max`.
pub fn parse_decimal_u64(text: &str, max: u64) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let mut value: u64 = 0;
    for digit in text.bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        if value > max {
            return None;
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decimal() {
        assert_eq!(Domid::parse_decimal("0"), Some(Domid(0)));
        assert_eq!(Domid::parse_decimal("65535"), Some(Domid(65535)));
        assert_eq!(Domid::parse_decimal("007"), Some(Domid(7)));
        for bad in [
            "",
            "65536",
            "-1",
            "+1",
            "1 ",
            " 1",
            "0x10",
            "1a",
            "99999999999999999999999",
        ] {
            assert_eq!(Domid::parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reserved_ids() {
        assert!(Domid(0).is_real());
        assert!(Domid(0x7FEF).is_real());
        assert!(!Domid::SELF.is_real());
        assert!(!Domid::INVALID.is_real());
        assert!(!Domid::ANY.is_real());
    }
}
