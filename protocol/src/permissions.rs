//! Permission entries and their wire strings (`n`, `r`, `w`, `b` followed by a domid).
//!
//! The first entry names the owner; its letter is the access for every domain not listed in the
//! later entries (xen.git `docs/misc/xenstore.txt`, "Each node has one or multiple permission
//! entries"). Parsing follows `xenstore_strings_to_perms` in
//! `tools/include/xen-tools/xenstore-common.h`: the domid is read like `strtol(…, 0)`, so
//! decimal, `0x` hexadecimal and leading-`0` octal are accepted; output is always decimal.
//! Access *decisions* (owner, privileged domain, targets) belong to the store.

use alloc::vec::Vec;
use core::fmt;

use crate::domid::Domid;
use crate::error::Errno;

/// The access one entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Access {
    /// `n`: no access.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The wire letter.
    pub const fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }

    /// Parses a wire letter.
    pub const fn from_letter(letter: u8) -> Option<Access> {
        match letter {
            b'n' => Some(Access::None),
            b'r' => Some(Access::Read),
            b'w' => Some(Access::Write),
            b'b' => Some(Access::Both),
            _ => None,
        }
    }

    /// True if this access includes reading.
    pub const fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// True if this access includes writing.
    pub const fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }
}

/// One permission entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Permission {
    /// What the entry grants.
    pub access: Access,
    /// Whom it names.
    pub domid: Domid,
}

/// Why a permission string was rejected (reported as `EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionError {
    /// No entries at all.
    Empty,
    /// The first byte is not one of `nrwb`.
    BadLetter,
    /// The domid is missing, not a number, or above 65535.
    BadDomid,
}

impl From<PermissionError> for Errno {
    fn from(_: PermissionError) -> Errno {
        Errno::EINVAL
    }
}

/// Parses a `strtol(…, 0)`-style unsigned number: `0x`/`0X` hex, leading `0` octal, else decimal.
fn parse_c_number(text: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for character in digits.chars() {
        let digit = u64::from(character.to_digit(radix)?);
        value = value.checked_mul(u64::from(radix))?.checked_add(digit)?;
        if value > u64::from(u16::MAX) {
            return None;
        }
    }
    Some(value)
}

impl Permission {
    /// Parses one entry such as `"r5"`.
    pub fn parse(text: &str) -> Result<Permission, PermissionError> {
        let letter = *text.as_bytes().first().ok_or(PermissionError::BadLetter)?;
        let access = Access::from_letter(letter).ok_or(PermissionError::BadLetter)?;
        let domid = parse_c_number(&text[1..]).ok_or(PermissionError::BadDomid)?;
        Ok(Permission {
            access,
            domid: Domid(domid as u16),
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}{}", self.access.letter(), self.domid.0)
    }
}

/// A node's permission list: never empty; entry 0 is the owner.
///
/// With the `serde` feature it serializes as a struct with one field `entries`; deserializing
/// rejects an empty list, so [`Permissions::owner`] cannot panic on persisted data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "PermissionsRepr", into = "PermissionsRepr")
)]
pub struct Permissions {
    entries: Vec<Permission>,
}

/// The serialized form of [`Permissions`] (same shape as the struct itself).
#[cfg(feature = "serde")]
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename = "Permissions")]
struct PermissionsRepr {
    entries: Vec<Permission>,
}

#[cfg(feature = "serde")]
impl TryFrom<PermissionsRepr> for Permissions {
    type Error = &'static str;

    fn try_from(repr: PermissionsRepr) -> Result<Permissions, Self::Error> {
        Permissions::from_entries(repr.entries).map_err(|_| "empty permission list")
    }
}

#[cfg(feature = "serde")]
impl From<Permissions> for PermissionsRepr {
    fn from(permissions: Permissions) -> PermissionsRepr {
        PermissionsRepr {
            entries: permissions.entries,
        }
    }
}

impl Permissions {
    /// A list with only the owner entry.
    pub fn owned_by(owner: Domid, default_access: Access) -> Permissions {
        Permissions {
            entries: alloc::vec![Permission {
                access: default_access,
                domid: owner
            }],
        }
    }

    /// Builds a list from entries; fails if there are none.
    pub fn from_entries(entries: Vec<Permission>) -> Result<Permissions, PermissionError> {
        if entries.is_empty() {
            return Err(PermissionError::Empty);
        }
        Ok(Permissions { entries })
    }

    /// Parses the entries of a SET_PERMS payload (after the path): NUL-terminated strings.
    /// A trailing empty string (from the final NUL) is ignored; any other empty entry is an
    /// error, as is an empty list.
    pub fn parse_wire(payload: &[u8]) -> Result<Permissions, PermissionError> {
        let mut entries = Vec::new();
        let body = payload.strip_suffix(b"\0").unwrap_or(payload);
        if body.is_empty() {
            return Err(PermissionError::Empty);
        }
        for raw in body.split(|byte| *byte == 0) {
            let text = core::str::from_utf8(raw).map_err(|_| PermissionError::BadLetter)?;
            entries.push(Permission::parse(text)?);
        }
        Permissions::from_entries(entries)
    }

    /// Appends the wire form (each entry followed by a NUL) to `out`.
    pub fn emit_wire(&self, out: &mut Vec<u8>) {
        for entry in &self.entries {
            out.extend_from_slice(alloc::format!("{entry}").as_bytes());
            out.push(0);
        }
    }

    /// The wire form as a new vector.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit_wire(&mut out);
        out
    }

    /// The owner entry.
    pub fn owner(&self) -> Permission {
        self.entries[0]
    }

    /// All entries, owner first.
    pub fn entries(&self) -> &[Permission] {
        &self.entries
    }

    /// Mutable access for the store (it may rewrite the owner or drop entries; it must keep
    /// the list non-empty, which [`Permissions::set_entries`] enforces).
    pub fn set_entries(&mut self, entries: Vec<Permission>) -> Result<(), PermissionError> {
        if entries.is_empty() {
            return Err(PermissionError::Empty);
        }
        self.entries = entries;
        Ok(())
    }

    /// Replaces the owner's domid, keeping its default access letter.
    pub fn set_owner(&mut self, owner: Domid) {
        self.entries[0].domid = owner;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false (a list is never empty); provided for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for Permissions {
    /// Human form used in logs and the debug shell: entries separated by blanks (`b0 r5`).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, entry) in self.entries.iter().enumerate() {
            if index > 0 {
                formatter.write_str(" ")?;
            }
            write!(formatter, "{entry}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_letter() {
        assert_eq!(Permission::parse("n0").unwrap().access, Access::None);
        assert_eq!(Permission::parse("r1").unwrap().access, Access::Read);
        assert_eq!(Permission::parse("w2").unwrap().access, Access::Write);
        assert_eq!(
            Permission::parse("b3").unwrap(),
            Permission {
                access: Access::Both,
                domid: Domid(3)
            }
        );
    }

    #[test]
    fn accepts_c_number_forms() {
        assert_eq!(Permission::parse("r0x10").unwrap().domid, Domid(16));
        assert_eq!(Permission::parse("r010").unwrap().domid, Domid(8));
        assert_eq!(Permission::parse("r0").unwrap().domid, Domid(0));
        assert_eq!(Permission::parse("r65535").unwrap().domid, Domid(65535));
    }

    #[test]
    fn rejects_bad_entries() {
        assert_eq!(Permission::parse(""), Err(PermissionError::BadLetter));
        assert_eq!(Permission::parse("x1"), Err(PermissionError::BadLetter));
        assert_eq!(Permission::parse("r"), Err(PermissionError::BadDomid));
        assert_eq!(Permission::parse("r-1"), Err(PermissionError::BadDomid));
        assert_eq!(Permission::parse("r65536"), Err(PermissionError::BadDomid));
        assert_eq!(Permission::parse("r1x"), Err(PermissionError::BadDomid));
        assert_eq!(Permission::parse("r09"), Err(PermissionError::BadDomid));
    }

    #[test]
    fn wire_round_trip() {
        let permissions = Permissions::parse_wire(b"b0\0r5\0n7\0").unwrap();
        assert_eq!(
            permissions.owner(),
            Permission {
                access: Access::Both,
                domid: Domid(0)
            }
        );
        assert_eq!(permissions.len(), 3);
        assert_eq!(permissions.to_wire(), b"b0\0r5\0n7\0");
        assert_eq!(alloc::format!("{permissions}"), "b0 r5 n7");
        // Without the final NUL too (the last string of a payload).
        assert_eq!(Permissions::parse_wire(b"r3").unwrap().to_wire(), b"r3\0");
    }

    #[test]
    fn wire_rejects_empty_lists_and_entries() {
        assert_eq!(Permissions::parse_wire(b""), Err(PermissionError::Empty));
        assert_eq!(Permissions::parse_wire(b"\0"), Err(PermissionError::Empty));
        assert_eq!(
            Permissions::parse_wire(b"r1\0\0r2\0"),
            Err(PermissionError::BadLetter)
        );
        assert_eq!(
            Permissions::from_entries(Vec::new()),
            Err(PermissionError::Empty)
        );
    }
}
