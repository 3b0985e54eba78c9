//! Typed client requests: [`Request::parse`] turns a message type and its payload into a
//! [`Request`] or the errno C xenstored would answer, and [`Request::emit`] writes the payload
//! back (for clients and tests).
//!
//! The interface is fixed by `docs/request-api-contract.md`. Argument strictness mirrors C
//! xenstored (xen.git `tools/xenstored/{core,domain,watch,transaction,control}.c`, checked
//! against commit c447b730):
//!
//! | request | C rule | here |
//! | --- | --- | --- |
//! | DIRECTORY, READ, GET_PERMS, MKDIR, RM, TRANSACTION_END, RELEASE, RESUME, GET_DOMAIN_PATH, IS_DOMAIN_INTRODUCED | `onearg`: exactly one NUL, as the last byte | same, else `EINVAL` |
//! | TRANSACTION_END | argument `T` or `F` | same |
//! | WATCH | exactly 2 strings, or 3 when the connection has WATCHDEPTH; depth `atoi`, negative ⇒ `EINVAL` | same |
//! | UNWATCH, SET_FEATURE | exactly 2 strings | same |
//! | WRITE | at least one NUL; value = everything after the first NUL | same |
//! | SET_PERMS | at least 2 NULs; the NUL-terminated strings after the path are permissions | same (bytes after the last NUL are ignored, as in C) |
//! | INTRODUCE, SET_TARGET | at least 3 / 2 strings, extra strings ignored | same |
//! | DIRECTORY_PART | exactly 2 NULs in the payload; offset `atoi` | same |
//! | GET_FEATURE | 0 or 1 string | same |
//! | GET_QUOTA / SET_QUOTA | 0–2 / 2–3 strings; value `atoi`, `UINT_MAX` (C's "disabled") ⇒ `EINVAL` | same |
//! | TRANSACTION_START, RESET_WATCHES | payload ignored | same |
//! | CONTROL | first string must be NUL-terminated; the rest are arguments | same |
//! | WATCH_EVENT, ERROR, RESTRICT, INVALID, unknown | `ENOSYS` | same |
//!
//! "Strings" above are NUL-terminated: like C's `get_strings`, bytes after the last NUL never
//! form an argument. Numbers that C reads with `atoi` are read with the same leniency
//! ([`c_atoi`]: leading blanks, a sign, digits, junk after the digits ignored) so that every
//! payload C accepts is accepted here. Deliberate differences, all stricter and all on input
//! no real client sends:
//! - domids use [`Domid::parse_decimal`] (digits only); C's `strtoul` also takes `""` (as 0),
//!   leading blanks and a sign;
//! - INTRODUCE rejects a negative event channel; C stores `atoi` in an unsigned port and so
//!   accepts e.g. `-1` as port 4294967295;
//! - permission entries use [`Permission::parse`] (no blanks or sign; domid ≤ 65535).
//!
//! Checks C makes *before* the argument parse are the caller's job and must come first to get
//! the same errno: `EACCES` for privileged types from unprivileged callers, and `ENOENT` for an
//! unknown transaction id (except WATCH/UNWATCH, which ignore it). Semantic checks that need
//! state (path validity, quota names, existence of domains) belong to the store.
//!
//! Nothing here panics on any input.

use alloc::vec::Vec;

use crate::domid::Domid;
use crate::error::Errno;
use crate::message_type::MessageType;
use crate::permissions::{Permission, Permissions};

/// Per-connection facts that change how a payload parses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ParseOptions {
    /// The connection has the WATCHDEPTH feature (`XENSTORE_SERVER_FEATURE_WATCHDEPTH`): a
    /// third WATCH string is a depth; without it a third string is `EINVAL`.
    pub watch_depth: bool,
}

/// A parsed client request. Borrowed strings point into the payload; paths are unresolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// 0 CONTROL: `<command>\0<argument>\0…`.
    Control {
        /// The command name (first string).
        command: &'a str,
        /// The remaining NUL-terminated strings.
        arguments: Vec<&'a [u8]>,
    },
    /// 1 DIRECTORY.
    Directory {
        /// Node path as written by the client.
        path: &'a str,
    },
    /// 2 READ.
    Read {
        /// Node path as written by the client.
        path: &'a str,
    },
    /// 3 GET_PERMS.
    GetPerms {
        /// Node path (may be special `@…`).
        path: &'a str,
    },
    /// 4 WATCH.
    Watch {
        /// Watched path (may be relative or special).
        path: &'a str,
        /// Opaque client token.
        token: &'a [u8],
        /// Depth limit, only with the WATCHDEPTH feature.
        depth: Option<u32>,
    },
    /// 5 UNWATCH.
    Unwatch {
        /// Watched path as given to WATCH.
        path: &'a str,
        /// Token as given to WATCH.
        token: &'a [u8],
    },
    /// 6 TRANSACTION_START.
    TransactionStart,
    /// 7 TRANSACTION_END: `T` commits, `F` aborts.
    TransactionEnd {
        /// True for `T`.
        commit: bool,
    },
    /// 8 INTRODUCE.
    Introduce {
        /// Domain to serve.
        domid: Domid,
        /// Guest frame of the ring page (C ignores it and uses the grant table).
        gfn: i64,
        /// The guest's unbound event channel port (> 0).
        evtchn: u32,
    },
    /// 9 RELEASE.
    Release {
        /// Domain to stop serving.
        domid: Domid,
    },
    /// 10 GET_DOMAIN_PATH.
    GetDomainPath {
        /// Domain whose home path is asked for.
        domid: Domid,
    },
    /// 11 WRITE.
    Write {
        /// Node path as written by the client.
        path: &'a str,
        /// Everything after the first NUL (may be empty, may contain NULs).
        value: &'a [u8],
    },
    /// 12 MKDIR.
    Mkdir {
        /// Node path as written by the client.
        path: &'a str,
    },
    /// 13 RM.
    Rm {
        /// Node path as written by the client.
        path: &'a str,
    },
    /// 14 SET_PERMS.
    SetPerms {
        /// Node path (may be special `@…`).
        path: &'a str,
        /// The new list, owner first.
        permissions: Permissions,
    },
    /// 17 IS_DOMAIN_INTRODUCED.
    IsDomainIntroduced {
        /// Domain asked about.
        domid: Domid,
    },
    /// 18 RESUME.
    Resume {
        /// Domain to re-arm.
        domid: Domid,
    },
    /// 19 SET_TARGET.
    SetTarget {
        /// Domain receiving the privileges.
        domid: Domid,
        /// Domain whose privileges it receives.
        target: Domid,
    },
    /// 21 RESET_WATCHES.
    ResetWatches,
    /// 22 DIRECTORY_PART.
    DirectoryPart {
        /// Node path as written by the client.
        path: &'a str,
        /// Byte offset into the concatenated child list.
        offset: u64,
    },
    /// 23 GET_FEATURE.
    GetFeature {
        /// `None`: the caller's own features.
        domid: Option<Domid>,
    },
    /// 24 SET_FEATURE.
    SetFeature {
        /// Domain (not yet introduced).
        domid: Domid,
        /// Feature bitmap.
        features: u32,
    },
    /// 25 GET_QUOTA.
    GetQuota {
        /// `None`: global defaults.
        domid: Option<Domid>,
        /// `None` (empty payload): list quota names.
        name: Option<&'a str>,
    },
    /// 26 SET_QUOTA.
    SetQuota {
        /// `None`: global defaults.
        domid: Option<Domid>,
        /// Quota name.
        name: &'a str,
        /// New value (never `u32::MAX`, C's "disabled" marker).
        value: u32,
    },
}

/// The NUL-terminated strings of a payload, without their NULs, in order. Bytes after the last
/// NUL are not yielded (C `get_strings`).
pub fn nul_terminated_strings(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let terminated = match payload.iter().rposition(|byte| *byte == 0) {
        Some(last) => &payload[..last],
        None => &[][..],
    };
    // `split` on an empty slice yields one empty item; only yield it if a NUL existed.
    let has_any = payload.contains(&0);
    terminated
        .split(|byte| *byte == 0)
        .take(if has_any { usize::MAX } else { 0 })
}

/// Number of NUL bytes in a payload (C `xenstore_count_strings` / the count `get_strings`
/// returns).
pub fn count_nuls(payload: &[u8]) -> usize {
    payload.iter().filter(|byte| **byte == 0).count()
}

/// C `onearg`: the payload must be one string whose only NUL is the last byte.
fn one_argument(payload: &[u8]) -> Result<&[u8], Errno> {
    match payload.split_last() {
        Some((0, body)) if !body.contains(&0) => Ok(body),
        _ => Err(Errno::EINVAL),
    }
}

/// The first `N` NUL-terminated strings; `EINVAL` if there are fewer.
fn leading_strings<const N: usize>(payload: &[u8]) -> Result<[&[u8]; N], Errno> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut strings = nul_terminated_strings(payload);
    for slot in out.iter_mut() {
        *slot = strings.next().ok_or(Errno::EINVAL)?;
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<&str, Errno> {
    core::str::from_utf8(bytes).map_err(|_| Errno::EINVAL)
}

fn domid(bytes: &[u8]) -> Result<Domid, Errno> {
    Domid::parse_decimal(text(bytes)?).ok_or(Errno::EINVAL)
}

/// glibc `strtol(text, NULL, 10)`: skips leading white space, takes an optional sign and the
/// longest run of decimal digits, ignores the rest, saturates at the `i64` range; no digits
/// gives 0. Never fails.
pub fn c_strtol(bytes: &[u8]) -> i64 {
    let mut rest = bytes;
    while let Some((first, tail)) = rest.split_first() {
        if matches!(*first, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            rest = tail;
        } else {
            break;
        }
    }
    let negative = match rest.first() {
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        _ => false,
    };
    let mut magnitude: u64 = 0;
    let mut saturated = false;
    for digit in rest.iter().take_while(|byte| byte.is_ascii_digit()) {
        match magnitude
            .checked_mul(10)
            .and_then(|value| value.checked_add(u64::from(digit - b'0')))
        {
            Some(value) => magnitude = value,
            None => {
                saturated = true;
                break;
            }
        }
    }
    if negative {
        if saturated || magnitude > i64::MAX as u64 + 1 {
            i64::MIN
        } else {
            0i64.wrapping_sub_unsigned(magnitude)
        }
    } else if saturated || magnitude > i64::MAX as u64 {
        i64::MAX
    } else {
        magnitude as i64
    }
}

/// glibc `atoi` on x86-64: `(int) strtol(text, NULL, 10)`, i.e. [`c_strtol`] truncated to 32
/// bits. Never fails.
pub fn c_atoi(bytes: &[u8]) -> i32 {
    c_strtol(bytes) as i32
}

impl<'a> Request<'a> {
    /// Parses a payload. Errors are the errno C xenstored answers: `EINVAL` for malformed
    /// arguments, `ENOSYS` for 15, 16, 20, `XS_INVALID` and unknown types.
    pub fn parse(
        message_type: MessageType,
        payload: &'a [u8],
        options: ParseOptions,
    ) -> Result<Request<'a>, Errno> {
        let request = match message_type {
            MessageType::Control => {
                let mut strings = nul_terminated_strings(payload);
                let command = text(strings.next().ok_or(Errno::EINVAL)?)?;
                Request::Control {
                    command,
                    arguments: strings.collect(),
                }
            }
            MessageType::Directory => Request::Directory {
                path: text(one_argument(payload)?)?,
            },
            MessageType::Read => Request::Read {
                path: text(one_argument(payload)?)?,
            },
            MessageType::GetPerms => Request::GetPerms {
                path: text(one_argument(payload)?)?,
            },
            MessageType::Watch => {
                let mut strings = nul_terminated_strings(payload);
                let path = strings.next().ok_or(Errno::EINVAL)?;
                let token = strings.next().ok_or(Errno::EINVAL)?;
                let depth = match (strings.next(), strings.next()) {
                    (None, _) => None,
                    (Some(depth), None) if options.watch_depth => {
                        Some(u32::try_from(c_atoi(depth)).map_err(|_| Errno::EINVAL)?)
                    }
                    _ => return Err(Errno::EINVAL),
                };
                Request::Watch {
                    path: text(path)?,
                    token,
                    depth,
                }
            }
            MessageType::Unwatch => {
                if count_nuls(payload) != 2 {
                    return Err(Errno::EINVAL);
                }
                let [path, token] = leading_strings::<2>(payload)?;
                Request::Unwatch {
                    path: text(path)?,
                    token,
                }
            }
            MessageType::TransactionStart => Request::TransactionStart,
            MessageType::TransactionEnd => match one_argument(payload)? {
                b"T" => Request::TransactionEnd { commit: true },
                b"F" => Request::TransactionEnd { commit: false },
                _ => return Err(Errno::EINVAL),
            },
            MessageType::Introduce => {
                let [domain, gfn, evtchn] = leading_strings::<3>(payload)?;
                let domid = domid(domain)?;
                let evtchn = c_atoi(evtchn);
                if evtchn <= 0 {
                    return Err(Errno::EINVAL);
                }
                Request::Introduce {
                    domid,
                    gfn: c_strtol(gfn),
                    evtchn: evtchn as u32,
                }
            }
            MessageType::Release => Request::Release {
                domid: domid(one_argument(payload)?)?,
            },
            MessageType::GetDomainPath => Request::GetDomainPath {
                domid: domid(one_argument(payload)?)?,
            },
            MessageType::Write => {
                let nul = payload
                    .iter()
                    .position(|byte| *byte == 0)
                    .ok_or(Errno::EINVAL)?;
                Request::Write {
                    path: text(&payload[..nul])?,
                    value: &payload[nul + 1..],
                }
            }
            MessageType::Mkdir => Request::Mkdir {
                path: text(one_argument(payload)?)?,
            },
            MessageType::Rm => Request::Rm {
                path: text(one_argument(payload)?)?,
            },
            MessageType::SetPerms => {
                let mut strings = nul_terminated_strings(payload);
                let path = text(strings.next().ok_or(Errno::EINVAL)?)?;
                let mut entries = Vec::new();
                for entry in strings {
                    entries.push(Permission::parse(text(entry)?).map_err(Errno::from)?);
                }
                Request::SetPerms {
                    path,
                    permissions: Permissions::from_entries(entries).map_err(Errno::from)?,
                }
            }
            MessageType::IsDomainIntroduced => Request::IsDomainIntroduced {
                domid: domid(one_argument(payload)?)?,
            },
            MessageType::Resume => Request::Resume {
                domid: domid(one_argument(payload)?)?,
            },
            MessageType::SetTarget => {
                let [domain, target] = leading_strings::<2>(payload)?;
                Request::SetTarget {
                    domid: domid(domain)?,
                    target: domid(target)?,
                }
            }
            MessageType::ResetWatches => Request::ResetWatches,
            MessageType::DirectoryPart => {
                if count_nuls(payload) != 2 {
                    return Err(Errno::EINVAL);
                }
                let [path, offset] = leading_strings::<2>(payload)?;
                Request::DirectoryPart {
                    path: text(path)?,
                    // C: `unsigned int off = atoi(…)`.
                    offset: u64::from(c_atoi(offset) as u32),
                }
            }
            MessageType::GetFeature => {
                let mut strings = nul_terminated_strings(payload);
                match (strings.next(), strings.next()) {
                    (None, _) => Request::GetFeature { domid: None },
                    (Some(domain), None) => Request::GetFeature {
                        domid: Some(domid(domain)?),
                    },
                    _ => return Err(Errno::EINVAL),
                }
            }
            MessageType::SetFeature => {
                if count_nuls(payload) != 2 {
                    return Err(Errno::EINVAL);
                }
                let [domain, features] = leading_strings::<2>(payload)?;
                Request::SetFeature {
                    domid: domid(domain)?,
                    features: c_atoi(features) as u32,
                }
            }
            MessageType::GetQuota => {
                let mut strings = nul_terminated_strings(payload);
                match (strings.next(), strings.next(), strings.next()) {
                    (None, _, _) => Request::GetQuota {
                        domid: None,
                        name: None,
                    },
                    (Some(name), None, _) => Request::GetQuota {
                        domid: None,
                        name: Some(text(name)?),
                    },
                    (Some(domain), Some(name), None) => Request::GetQuota {
                        domid: Some(domid(domain)?),
                        name: Some(text(name)?),
                    },
                    _ => return Err(Errno::EINVAL),
                }
            }
            MessageType::SetQuota => {
                let mut strings = nul_terminated_strings(payload);
                let (domain, name, value) = match (
                    strings.next(),
                    strings.next(),
                    strings.next(),
                    strings.next(),
                ) {
                    (Some(name), Some(value), None, _) => (None, name, value),
                    (Some(domain), Some(name), Some(value), None) => {
                        (Some(domid(domain)?), name, value)
                    }
                    _ => return Err(Errno::EINVAL),
                };
                let value = c_atoi(value) as u32;
                if value == u32::MAX {
                    return Err(Errno::EINVAL);
                }
                Request::SetQuota {
                    domid: domain,
                    name: text(name)?,
                    value,
                }
            }
            MessageType::WatchEvent
            | MessageType::Error
            | MessageType::Restrict
            | MessageType::Invalid
            | MessageType::Unknown(_) => return Err(Errno::ENOSYS),
        };
        Ok(request)
    }

    /// The message type this request travels as.
    pub fn message_type(&self) -> MessageType {
        match self {
            Request::Control { .. } => MessageType::Control,
            Request::Directory { .. } => MessageType::Directory,
            Request::Read { .. } => MessageType::Read,
            Request::GetPerms { .. } => MessageType::GetPerms,
            Request::Watch { .. } => MessageType::Watch,
            Request::Unwatch { .. } => MessageType::Unwatch,
            Request::TransactionStart => MessageType::TransactionStart,
            Request::TransactionEnd { .. } => MessageType::TransactionEnd,
            Request::Introduce { .. } => MessageType::Introduce,
            Request::Release { .. } => MessageType::Release,
            Request::GetDomainPath { .. } => MessageType::GetDomainPath,
            Request::Write { .. } => MessageType::Write,
            Request::Mkdir { .. } => MessageType::Mkdir,
            Request::Rm { .. } => MessageType::Rm,
            Request::SetPerms { .. } => MessageType::SetPerms,
            Request::IsDomainIntroduced { .. } => MessageType::IsDomainIntroduced,
            Request::Resume { .. } => MessageType::Resume,
            Request::SetTarget { .. } => MessageType::SetTarget,
            Request::ResetWatches => MessageType::ResetWatches,
            Request::DirectoryPart { .. } => MessageType::DirectoryPart,
            Request::GetFeature { .. } => MessageType::GetFeature,
            Request::SetFeature { .. } => MessageType::SetFeature,
            Request::GetQuota { .. } => MessageType::GetQuota,
            Request::SetQuota { .. } => MessageType::SetQuota,
        }
    }

    /// The (unresolved) path argument, for logs and commit causes.
    pub fn path(&self) -> Option<&'a str> {
        match self {
            Request::Directory { path }
            | Request::Read { path }
            | Request::GetPerms { path }
            | Request::Watch { path, .. }
            | Request::Unwatch { path, .. }
            | Request::Write { path, .. }
            | Request::Mkdir { path }
            | Request::Rm { path }
            | Request::SetPerms { path, .. }
            | Request::DirectoryPart { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Appends the canonical payload of this request to `out` (what libxenstore sends). For
    /// every request `r` built by [`Request::parse`] from a canonical payload,
    /// `parse(r.message_type(), emit(r))` gives `r` back. Does not check the payload limit;
    /// see [`crate::message`] for framing.
    pub fn emit(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(bytes);
            out.push(0);
        }
        fn number(out: &mut Vec<u8>, value: impl core::fmt::Display) {
            string(out, alloc::format!("{value}").as_bytes());
        }
        match self {
            Request::Control { command, arguments } => {
                string(out, command.as_bytes());
                for argument in arguments {
                    string(out, argument);
                }
            }
            Request::Directory { path }
            | Request::Read { path }
            | Request::GetPerms { path }
            | Request::Mkdir { path }
            | Request::Rm { path } => string(out, path.as_bytes()),
            Request::Watch { path, token, depth } => {
                string(out, path.as_bytes());
                string(out, token);
                if let Some(depth) = depth {
                    number(out, depth);
                }
            }
            Request::Unwatch { path, token } => {
                string(out, path.as_bytes());
                string(out, token);
            }
            // libxenstore sends the empty string for both.
            Request::TransactionStart | Request::ResetWatches => out.push(0),
            Request::TransactionEnd { commit } => {
                string(out, if *commit { b"T" } else { b"F" });
            }
            Request::Introduce { domid, gfn, evtchn } => {
                number(out, domid);
                number(out, gfn);
                number(out, evtchn);
            }
            Request::Release { domid }
            | Request::GetDomainPath { domid }
            | Request::IsDomainIntroduced { domid }
            | Request::Resume { domid } => number(out, domid),
            Request::Write { path, value } => {
                string(out, path.as_bytes());
                out.extend_from_slice(value);
            }
            Request::SetPerms { path, permissions } => {
                string(out, path.as_bytes());
                permissions.emit_wire(out);
            }
            Request::SetTarget { domid, target } => {
                number(out, domid);
                number(out, target);
            }
            Request::DirectoryPart { path, offset } => {
                string(out, path.as_bytes());
                number(out, offset);
            }
            Request::GetFeature { domid } => {
                if let Some(domid) = domid {
                    number(out, domid);
                }
            }
            Request::SetFeature { domid, features } => {
                number(out, domid);
                number(out, features);
            }
            Request::GetQuota { domid, name } => {
                if let Some(domid) = domid {
                    number(out, domid);
                }
                if let Some(name) = name {
                    string(out, name.as_bytes());
                }
            }
            Request::SetQuota { domid, name, value } => {
                if let Some(domid) = domid {
                    number(out, domid);
                }
                string(out, name.as_bytes());
                number(out, value);
            }
        }
    }

    /// The payload of this request as a new vector (see [`Request::emit`]).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }
}
