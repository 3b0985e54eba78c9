//! Reply payload builders: `OK\0`, one string, several strings, a raw value, an error name and
//! the watch-event payload, each checked against the payload limit.
//!
//! Every builder that can exceed [`PAYLOAD_MAX_BYTES`] (4096, `XENSTORE_PAYLOAD_MAX` in xen.git
//! `xen/include/public/io/xs_wire.h`) returns `Err(Errno::E2BIG)` instead; the server then sends
//! `E2BIG` as C xenstored does. The message type of a reply is the request's type (or
//! [`MessageType::Error`] for errors, [`MessageType::WatchEvent`] for events); framing lives in
//! [`crate::message`].
//!
//! Strings are written as given followed by one NUL; they must not contain NUL themselves (the
//! reader would split them). That is a caller bug, not peer input, so it is checked only by a
//! debug assertion. Nothing here panics in release builds.

use alloc::format;
use alloc::vec::Vec;

use crate::error::Errno;
use crate::limits::PAYLOAD_MAX_BYTES;
#[cfg(doc)]
use crate::message_type::MessageType;

/// The acknowledgement payload `OK\0`.
pub const OK: &[u8] = b"OK\0";

fn checked(payload: Vec<u8>) -> Result<Vec<u8>, Errno> {
    if payload.len() > PAYLOAD_MAX_BYTES {
        Err(Errno::E2BIG)
    } else {
        Ok(payload)
    }
}

/// `OK\0`: the reply to WRITE, MKDIR, RM, SET_PERMS, WATCH, UNWATCH, TRANSACTION_END, …
pub fn ok() -> Vec<u8> {
    OK.to_vec()
}

/// One string followed by a NUL (GET_DOMAIN_PATH, TRANSACTION_START, CONTROL, …).
pub fn string(text: impl AsRef<[u8]>) -> Result<Vec<u8>, Errno> {
    strings([text])
}

/// A decimal number followed by a NUL (transaction ids, feature bitmaps, quota values).
pub fn decimal(value: u64) -> Result<Vec<u8>, Errno> {
    string(format!("{value}"))
}

/// `T\0` or `F\0` (IS_DOMAIN_INTRODUCED).
pub fn boolean(value: bool) -> Vec<u8> {
    if value {
        b"T\0".to_vec()
    } else {
        b"F\0".to_vec()
    }
}

/// Each string followed by a NUL, concatenated (DIRECTORY, GET_PERMS). No strings gives the
/// empty payload (an empty directory).
pub fn strings<I>(items: I) -> Result<Vec<u8>, Errno>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut builder = PayloadBuilder::new();
    for item in items {
        builder.push_string(item.as_ref())?;
    }
    Ok(builder.finish())
}

/// A raw value without terminator (READ).
pub fn value(bytes: &[u8]) -> Result<Vec<u8>, Errno> {
    checked(bytes.to_vec())
}

/// The `XS_ERROR` payload: the errno name and a NUL (always fits).
pub fn error(errno: Errno) -> Vec<u8> {
    errno.payload().collect()
}

/// The `XS_WATCH_EVENT` payload `<path>\0<token>\0`. C xenstored silently drops an event that
/// does not fit; the caller does the same on `E2BIG`.
pub fn watch_event(path: &str, token: &[u8]) -> Result<Vec<u8>, Errno> {
    strings([path.as_bytes(), token])
}

/// Client side: the errno of an `XS_ERROR` payload (`"ENOENT\0"`), `None` if it is not one
/// of the known names. A missing NUL is tolerated.
pub fn parse_error(payload: &[u8]) -> Option<Errno> {
    let name = payload.strip_suffix(b"\0").unwrap_or(payload);
    Errno::from_name(core::str::from_utf8(name).ok()?)
}

/// Client side: `(path, token)` of an `XS_WATCH_EVENT` payload; `None` unless it holds at
/// least two NUL-terminated strings.
pub fn parse_watch_event(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut strings = crate::request::nul_terminated_strings(payload);
    Some((strings.next()?, strings.next()?))
}

/// Client side: the strings of a multi-string reply (DIRECTORY, GET_PERMS), without NULs.
pub fn parse_strings(payload: &[u8]) -> Vec<&[u8]> {
    crate::request::nul_terminated_strings(payload).collect()
}

/// Builds a payload piece by piece without ever exceeding the limit: a push that would not fit
/// fails with `E2BIG` and leaves the payload unchanged, so "as many entries as fit"
/// (DIRECTORY_PART) is a loop until the first error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayloadBuilder {
    bytes: Vec<u8>,
    limit_bytes: usize,
}

impl PayloadBuilder {
    /// An empty payload limited to [`PAYLOAD_MAX_BYTES`].
    pub fn new() -> PayloadBuilder {
        PayloadBuilder::with_limit(PAYLOAD_MAX_BYTES)
    }

    /// An empty payload limited to `min(limit_bytes, PAYLOAD_MAX_BYTES)` (e.g. to keep room
    /// for a terminator).
    pub fn with_limit(limit_bytes: usize) -> PayloadBuilder {
        PayloadBuilder {
            bytes: Vec::new(),
            limit_bytes: limit_bytes.min(PAYLOAD_MAX_BYTES),
        }
    }

    /// Bytes that can still be added.
    pub fn remaining_bytes(&self) -> usize {
        self.limit_bytes.saturating_sub(self.bytes.len())
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True if nothing was added.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends raw bytes, or fails with `E2BIG` leaving the payload unchanged.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), Errno> {
        if bytes.len() > self.remaining_bytes() {
            return Err(Errno::E2BIG);
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    /// Appends a string and its NUL, or fails with `E2BIG` leaving the payload unchanged.
    pub fn push_string(&mut self, text: &[u8]) -> Result<(), Errno> {
        debug_assert!(!text.contains(&0), "reply strings must not contain NUL");
        if text.len() >= self.remaining_bytes() {
            return Err(Errno::E2BIG);
        }
        self.bytes.extend_from_slice(text);
        self.bytes.push(0);
        Ok(())
    }

    /// The finished payload.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn golden_payloads() {
        assert_eq!(ok(), b"OK\0");
        assert_eq!(string("/local/domain/3").unwrap(), b"/local/domain/3\0");
        assert_eq!(decimal(17).unwrap(), b"17\0");
        assert_eq!(boolean(true), b"T\0");
        assert_eq!(boolean(false), b"F\0");
        assert_eq!(strings(["a", "bc"]).unwrap(), b"a\0bc\0");
        assert_eq!(strings::<[&str; 0]>([]).unwrap(), b"");
        assert_eq!(value(b"x\0y").unwrap(), b"x\0y");
        assert_eq!(value(b"").unwrap(), b"");
        assert_eq!(error(Errno::ENOENT), b"ENOENT\0");
        assert_eq!(watch_event("a/b", b"tok").unwrap(), b"a/b\0tok\0");
    }

    #[test]
    fn client_side_parsers() {
        for errno in Errno::ALL {
            assert_eq!(parse_error(&error(errno)), Some(errno));
        }
        assert_eq!(parse_error(b"EWHAT\0"), None);
        assert_eq!(parse_error(b"\xff\0"), None);
        assert_eq!(parse_error(b"EIO"), Some(Errno::EIO));
        let event = watch_event("/a", b"tok").unwrap();
        assert_eq!(parse_watch_event(&event), Some((&b"/a"[..], &b"tok"[..])));
        assert_eq!(parse_watch_event(b"/a\0"), None);
        assert_eq!(parse_strings(b"a\0bc\0"), [&b"a"[..], b"bc"]);
        assert!(parse_strings(b"").is_empty());
    }

    #[test]
    fn limit_is_exactly_4096() {
        assert_eq!(value(&vec![b'v'; 4096]).unwrap().len(), 4096);
        assert_eq!(value(&vec![b'v'; 4097]), Err(Errno::E2BIG));
        assert_eq!(string("s".repeat(4095)).unwrap().len(), 4096);
        assert_eq!(string("s".repeat(4096)), Err(Errno::E2BIG));
        assert_eq!(
            watch_event(&"p".repeat(4000), &[b't'; 94]).unwrap().len(),
            4096
        );
        assert_eq!(
            watch_event(&"p".repeat(4000), &[b't'; 95]),
            Err(Errno::E2BIG)
        );
        let many = vec!["abc"; 1024];
        assert_eq!(strings(&many).unwrap().len(), 4096);
        let too_many = vec!["abc"; 1025];
        assert_eq!(strings(&too_many), Err(Errno::E2BIG));
    }

    #[test]
    fn builder_leaves_payload_unchanged_on_overflow() {
        let mut builder = PayloadBuilder::with_limit(8);
        builder.push_string(b"abc").unwrap();
        assert_eq!(builder.remaining_bytes(), 4);
        assert_eq!(builder.push_string(b"defg"), Err(Errno::E2BIG));
        assert_eq!(builder.len(), 4);
        builder.push_string(b"def").unwrap();
        assert_eq!(builder.push_bytes(b"x"), Err(Errno::E2BIG));
        assert_eq!(builder.finish(), b"abc\0def\0");
        assert_eq!(PayloadBuilder::with_limit(10_000).remaining_bytes(), 4096);
    }
}
