//! The commit vocabulary shared with the server: causes, mutations, paths.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::{LimitError, PathError};
use crate::format::NodeRecord;
use crate::limits::{
    BLOB_KEY_LEN_MAX_BYTES, BLOB_LEN_MAX_BYTES, PATH_DEPTH_MAX, PATH_LEN_MAX_BYTES,
    PERMISSIONS_LEN_MAX_BYTES, VALUE_LEN_MAX_BYTES,
};

/// Commit sequence number: 1 for the first commit, 0 for the empty initial state.
pub type Seq = u64;

/// What caused a commit (for the history; the log does not interpret it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cause {
    /// Server connection id.
    pub connection: u64,
    /// Domain of the connection.
    pub domid: u16,
    /// Xenstore request type (`xsd_sockmsg_type`), or a server-internal code.
    pub request_type: u32,
    /// `req_id` of the request.
    pub request_id: u32,
    /// Path the request named, if any.
    pub path: Option<String>,
    /// Number of requests folded into this commit (≥ 1 for requests, 0 for internal commits).
    pub requests_grouped: u32,
    /// Timestamp or counter filled by the server (unit of its choice, e.g. ns since boot).
    pub timestamp: u64,
}

/// One change to the persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Create or replace the node at `path`. Missing ancestors are created as implicit
    /// (record-less) directories; implicit directories are not reported by iteration.
    PutNode { path: String, record: NodeRecord },
    /// Remove the node at `path` and everything below it (no-op if absent).
    RemoveSubtree { path: String },
    /// Create or replace a state blob (connection state, quotas, settings...).
    PutBlob { key: String, value: Vec<u8> },
    /// Remove a state blob (no-op if absent).
    RemoveBlob { key: String },
}

/// One commit: what caused it and what it changed. Applied atomically.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Commit {
    pub cause: Cause,
    pub mutations: Vec<Mutation>,
}

/// Check a xenstore path: absolute, '/'-separated, no empty component, bounded.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.len() > PATH_LEN_MAX_BYTES {
        return Err(PathError::TooLong);
    }
    if path.as_bytes().contains(&0) {
        return Err(PathError::ContainsNul);
    }
    if path == "/" {
        return Ok(());
    }
    let mut depth = 0usize;
    for component in path[1..].split('/') {
        if component.is_empty() {
            return Err(PathError::EmptyComponent);
        }
        depth += 1;
    }
    if depth > PATH_DEPTH_MAX {
        return Err(PathError::TooDeep);
    }
    Ok(())
}

/// Components of a validated path ("/" has none).
pub fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Is `name` acceptable as one path component (as read back from disk)?
pub(crate) fn valid_component(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('\0')
}

pub(crate) fn validate_blob_key(key: &str) -> Result<(), LimitError> {
    if key.is_empty() || key.len() > BLOB_KEY_LEN_MAX_BYTES || key.contains('\0') {
        return Err(LimitError::BlobKeyInvalid { len: key.len() });
    }
    Ok(())
}

/// Validate every mutation of a commit (before anything is applied).
pub(crate) fn validate_commit(commit: &Commit) -> Result<(), crate::Error> {
    for m in &commit.mutations {
        match m {
            Mutation::PutNode { path, record } => {
                validate_path(path)?;
                if record.value.len() > VALUE_LEN_MAX_BYTES {
                    return Err(LimitError::ValueTooLarge {
                        len: record.value.len(),
                    }
                    .into());
                }
                if record.permissions.len() > PERMISSIONS_LEN_MAX_BYTES {
                    return Err(LimitError::PermissionsTooLarge {
                        len: record.permissions.len(),
                    }
                    .into());
                }
            }
            Mutation::RemoveSubtree { path } => validate_path(path)?,
            Mutation::PutBlob { key, value } => {
                validate_blob_key(key)?;
                if value.len() > BLOB_LEN_MAX_BYTES {
                    return Err(LimitError::BlobTooLarge { len: value.len() }.into());
                }
            }
            Mutation::RemoveBlob { key } => validate_blob_key(key)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_table() {
        let table: &[(&str, Result<(), PathError>)] = &[
            ("/", Ok(())),
            ("/local/domain/1/name", Ok(())),
            ("local", Err(PathError::NotAbsolute)),
            ("", Err(PathError::NotAbsolute)),
            ("/a//b", Err(PathError::EmptyComponent)),
            ("/a/", Err(PathError::EmptyComponent)),
            ("/a\0b", Err(PathError::ContainsNul)),
        ];
        for (path, expected) in table {
            assert_eq!(validate_path(path), *expected, "{path:?}");
        }
        let long = alloc::format!("/{}", "a".repeat(PATH_LEN_MAX_BYTES));
        assert_eq!(validate_path(&long), Err(PathError::TooLong));
        let deep = "/a".repeat(PATH_DEPTH_MAX + 1);
        assert_eq!(validate_path(&deep), Err(PathError::TooDeep));
        assert_eq!(components("/").count(), 0);
        assert_eq!(
            components("/local/domain").collect::<Vec<_>>(),
            ["local", "domain"]
        );
    }
}
