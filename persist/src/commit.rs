//! The commit vocabulary shared with the server: causes, mutations, paths.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::{LimitError, PathError};
use crate::format::{NodeRecord, encoded_len};
use crate::limits::{
    BLOB_KEY_LEN_MAX_BYTES, BLOB_LEN_MAX_BYTES, COMMIT_LEN_MAX_BYTES, PATH_DEPTH_MAX,
    PATH_LEN_MAX_BYTES, PERMISSIONS_LEN_MAX_BYTES, VALUE_LEN_MAX_BYTES,
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

impl Mutation {
    /// Bytes this mutation adds to the encoding of any commit that holds it (postcard: the
    /// variant index, then its fields). Feed it to [`CommitSize::add`].
    pub fn encoded_len(&self) -> usize {
        encoded_len(self)
    }
}

impl Commit {
    /// Bytes of this commit's encoding: exactly the length `Log::append` checks against
    /// [`COMMIT_LEN_MAX_BYTES`] (`LimitError::CommitTooLarge`).
    pub fn encoded_len(&self) -> usize {
        encoded_len(self)
    }
}

/// The encoded size of a commit being assembled, kept up to date mutation by mutation, so that
/// a caller with more changes than one commit may hold (the server's switch onto a log writes
/// a whole store) can split them without encoding candidate commits.
///
/// Exact, not an estimate: a commit encodes as its cause, the number of mutations (a varint)
/// and each mutation in turn, so `CommitSize::new(&cause)` plus `add(m.encoded_len())` for
/// every `m` equals `Commit { cause, mutations }.encoded_len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSize {
    cause_bytes: usize,
    mutation_count: usize,
    mutation_bytes: usize,
}

/// Bytes of `value` as a postcard varint (7 bits per byte, at least one byte).
fn varint_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

impl CommitSize {
    /// A commit with `cause` and no mutation yet.
    pub fn new(cause: &Cause) -> CommitSize {
        CommitSize {
            cause_bytes: encoded_len(cause),
            mutation_count: 0,
            mutation_bytes: 0,
        }
    }

    /// Adds one mutation of `mutation_len` encoded bytes ([`Mutation::encoded_len`]).
    pub fn add(&mut self, mutation_len: usize) {
        self.mutation_count += 1;
        self.mutation_bytes += mutation_len;
    }

    /// This size with one more mutation of `mutation_len` encoded bytes.
    pub fn with(mut self, mutation_len: usize) -> CommitSize {
        self.add(mutation_len);
        self
    }

    /// Mutations added so far.
    pub fn mutation_count(&self) -> usize {
        self.mutation_count
    }

    /// Encoded bytes of the commit as it stands.
    pub fn encoded_len(&self) -> usize {
        self.cause_bytes + varint_len(self.mutation_count) + self.mutation_bytes
    }

    /// True when `Log::append` accepts a commit of this size (`encoded_len() <=`
    /// [`COMMIT_LEN_MAX_BYTES`]; the other limits, e.g. the region size, still apply).
    pub fn fits(&self) -> bool {
        self.encoded_len() <= COMMIT_LEN_MAX_BYTES
    }
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
    use crate::sim::SimRng;
    use alloc::vec;

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

    fn random_mutation(rng: &mut SimRng) -> Mutation {
        let text = |rng: &mut SimRng, max: u64| -> String {
            let len = 1 + rng.below(max) as usize;
            (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
        };
        let bytes = |rng: &mut SimRng, max: u64| vec![7u8; rng.below(max) as usize];
        match rng.below(4) {
            0 => Mutation::PutNode {
                path: alloc::format!("/{}", text(rng, 300)),
                record: NodeRecord {
                    value: bytes(rng, 20_000),
                    permissions: bytes(rng, 200),
                    generation: rng.next_u64() >> rng.below(64),
                },
            },
            1 => Mutation::RemoveSubtree {
                path: alloc::format!("/{}", text(rng, 200)),
            },
            2 => Mutation::PutBlob {
                key: text(rng, 255),
                value: bytes(rng, 70_000),
            },
            _ => Mutation::RemoveBlob {
                key: text(rng, 255),
            },
        }
    }

    /// `CommitSize` is exact: for random commits, and across the mutation counts where the
    /// count's varint grows a byte (127 → 128, 16383 → 16384), it equals the encoding's length.
    #[test]
    fn commit_size_equals_the_encoded_length() {
        let mut rng = SimRng::new(11);
        for round in 0..200 {
            let cause = Cause {
                connection: rng.next_u64() >> rng.below(64),
                domid: rng.below(65536) as u16,
                request_type: rng.below(u64::from(u32::MAX)) as u32,
                request_id: rng.below(1000) as u32,
                path: (round % 2 == 0).then(|| String::from("/local/domain/1")),
                requests_grouped: rng.below(3) as u32,
                timestamp: rng.next_u64(),
            };
            let mut size = CommitSize::new(&cause);
            let mut mutations = Vec::new();
            for _ in 0..rng.below(40) {
                let mutation = random_mutation(&mut rng);
                size.add(mutation.encoded_len());
                mutations.push(mutation);
            }
            let commit = Commit { cause, mutations };
            assert_eq!(size.encoded_len(), commit.encoded_len(), "round {round}");
            assert_eq!(commit.encoded_len(), crate::format::to_vec(&commit).len());
            assert_eq!(size.mutation_count(), commit.mutations.len());
        }
        for count in [0usize, 1, 127, 128, 129, 16_383, 16_384] {
            let cause = Cause::default();
            let mutation = Mutation::RemoveBlob {
                key: String::from("k"),
            };
            let mut size = CommitSize::new(&cause);
            for _ in 0..count {
                size = size.with(mutation.encoded_len());
            }
            let commit = Commit {
                cause,
                mutations: vec![mutation; count],
            };
            assert_eq!(
                size.encoded_len(),
                commit.encoded_len(),
                "{count} mutations"
            );
        }
    }
}
