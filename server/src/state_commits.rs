//! Writing a whole store image into a log as several commits, with the root node last: the
//! switch of a running server onto a log ([`crate::switch`]) and the first commit of a new
//! database ([`crate::store_engine::start_crash_resilient`]).
//!
//! Contract:
//! - every commit stays within `persist`'s commit limit (`limits::COMMIT_LEN_MAX_BYTES`,
//!   1 MiB encoded), measured exactly with `persist::CommitSize`; the commits are appended
//!   back to back and the caller makes them durable with one `sync` (the log makes commits
//!   durable in order, so the final commit being durable means all of them are);
//! - a log holds a store once its root node "/" has a record
//!   ([`crate::store_engine::StoreEngine::log_has_image`]). A `PutNode` of a deeper node
//!   creates "/" only as an implicit directory, which has no record and does not count. The
//!   root node is written in the final commit and nowhere else, so the store appears with the
//!   final commit, all at once: a crash part-way leaves a log that holds no store, only
//!   leftovers (nodes and blobs of the earlier commits). A switch formats such a device again;
//!   a fresh start removes them first ([`leftover_removals`]);
//! - the caller's `last` mutations go into the final commit together with as much of the end
//!   of the body as fits beside them, so a state that fits one commit is still written as one;
//!   [`final_commit`] chooses them for a switch: the root node and the server blob always,
//!   the connection blobs that fit beside them (the rest join the body).
//!
//! Why not one commit: a store with many guests exceeds 1 MiB encoded, and the stub domain
//! would then stay volatile forever. Why not a special "image complete" marker: the root node
//! is already what every reader checks, and every store has one.

use alloc::string::String;
use alloc::vec::Vec;

use xenstore_persist::{BlockDevice, Cause, Commit, CommitSize, Log, Mutation, Seq};

/// What [`append_in_commits`] appended (not yet durable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Commits appended.
    pub commits: u64,
    /// Sequence number of the first one.
    pub first_seq: Seq,
    /// Sequence number of the last one (the one with `last`).
    pub last_seq: Seq,
    /// Encoded bytes of all of them.
    pub bytes: u64,
}

/// True for the mutation that writes the root node.
fn is_root(mutation: &Mutation) -> bool {
    matches!(mutation, Mutation::PutNode { path, .. } if path == "/")
}

/// Removes the root node's `PutNode` from a store image's mutations and returns it.
///
/// Panics when the image has none: every store has a root node (`xenstore_store` refuses an
/// image without one), so that is a broken invariant, not bad input.
pub(crate) fn split_off_root(image: &mut Vec<Mutation>) -> Mutation {
    let index = image
        .iter()
        .position(is_root)
        .expect("a store image always writes its root node");
    let root = image.remove(index);
    assert!(!image.iter().any(is_root), "the root node is written once");
    root
}

/// Mutations that remove everything `log` holds: what an interrupted image write left behind
/// (nodes below an implicit root, blobs). Empty for an empty log.
pub(crate) fn leftover_removals<D: BlockDevice>(log: &Log<D>) -> Vec<Mutation> {
    let mut removals = Vec::new();
    let has_nodes = log.node("/").is_some()
        || log
            .children("/")
            .is_some_and(|children| !children.is_empty());
    if has_nodes {
        removals.push(Mutation::RemoveSubtree {
            path: String::from("/"),
        });
    }
    log.for_each_blob(|key, _| {
        removals.push(Mutation::RemoveBlob {
            key: String::from(key),
        })
    });
    removals
}

/// The final commit of a switch: every mutation of `required` (the server blob and the root
/// node), preceded by each of `preferred` (the connection blobs) that still fits beside them
/// in one commit with `cause`. Returns the final commit's mutations and the `preferred` ones
/// left over, for the commits before it (in practice none: connection blobs are small).
pub(crate) fn final_commit(
    cause: &Cause,
    preferred: Vec<Mutation>,
    required: Vec<Mutation>,
) -> (Vec<Mutation>, Vec<Mutation>) {
    let mut size = required
        .iter()
        .fold(CommitSize::new(cause), |size, mutation| {
            size.with(mutation.encoded_len())
        });
    let mut last = Vec::with_capacity(preferred.len() + required.len());
    let mut spilled = Vec::new();
    for mutation in preferred {
        let len = mutation.encoded_len();
        if size.with(len).fits() {
            size.add(len);
            last.push(mutation);
        } else {
            spilled.push(mutation);
        }
    }
    last.extend(required);
    (last, spilled)
}

/// Appends `body` and then `last` to `log` as back-to-back commits with `cause`, each within
/// the commit limit: `body` in order, filling each commit, and `last` whole in the final
/// commit (joined by the end of `body` when it fits). Nothing is synced.
///
/// A single mutation too large for a commit of its own (impossible within `persist`'s item
/// limits) or a `last` too large for one commit is refused by the log (`Error::Limit`), like
/// any other append error; commits appended before the error stay appended.
pub(crate) fn append_in_commits<D: BlockDevice>(
    log: &mut Log<D>,
    cause: &Cause,
    body: Vec<Mutation>,
    last: Vec<Mutation>,
) -> Result<Appended, xenstore_persist::Error> {
    let mut appended = Appended {
        commits: 0,
        first_seq: 0,
        last_seq: 0,
        bytes: 0,
    };
    let mut append = |log: &mut Log<D>, mutations: Vec<Mutation>, size: CommitSize| {
        let commit = Commit {
            cause: cause.clone(),
            mutations,
        };
        // Pair the running measure with the commit itself before the log checks it.
        debug_assert_eq!(size.encoded_len(), commit.encoded_len());
        let seq = log.append(commit)?;
        if appended.commits == 0 {
            appended.first_seq = seq;
        } else {
            assert_eq!(seq, appended.last_seq + 1, "commits are dense");
        }
        appended.commits += 1;
        appended.last_seq = seq;
        appended.bytes += size.encoded_len() as u64;
        Ok::<(), xenstore_persist::Error>(())
    };
    let mut chunk = Vec::new();
    let mut chunk_size = CommitSize::new(cause);
    for mutation in body {
        let len = mutation.encoded_len();
        if chunk_size.mutation_count() > 0 && !chunk_size.with(len).fits() {
            append(log, core::mem::take(&mut chunk), chunk_size)?;
            chunk_size = CommitSize::new(cause);
        }
        chunk.push(mutation);
        chunk_size.add(len);
    }
    let last_lens: Vec<usize> = last.iter().map(Mutation::encoded_len).collect();
    let joined = last_lens
        .iter()
        .fold(chunk_size, |size, len| size.with(*len));
    let final_size = if chunk_size.mutation_count() > 0 && !joined.fits() {
        append(log, core::mem::take(&mut chunk), chunk_size)?;
        last_lens
            .iter()
            .fold(CommitSize::new(cause), |size, len| size.with(*len))
    } else {
        joined
    };
    chunk.extend(last);
    append(log, chunk, final_size)?;
    Ok(appended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;
    use xenstore_persist::limits::COMMIT_LEN_MAX_BYTES;
    use xenstore_persist::{Config, MemDevice, NodeRecord};

    fn node(path: &str, value_len: usize) -> Mutation {
        Mutation::PutNode {
            path: String::from(path),
            record: NodeRecord {
                value: vec![b'v'; value_len],
                permissions: b"n0\0".to_vec(),
                generation: 1,
            },
        }
    }

    fn log() -> Log<MemDevice> {
        Log::create(MemDevice::new(32 * 1024), Config::default()).unwrap()
    }

    /// Appends a body of `count` nodes of `value_len` bytes, then the root; returns the log,
    /// what was appended and the commits as read back from the history.
    fn run(count: usize, value_len: usize) -> (Log<MemDevice>, Appended, Vec<Commit>) {
        let mut log = log();
        let body: Vec<Mutation> = (0..count)
            .map(|index| node(&format!("/data/{index}"), value_len))
            .collect();
        let appended = append_in_commits(
            &mut log,
            &Cause::default(),
            body,
            vec![
                node("/", 0),
                Mutation::PutBlob {
                    key: String::from("server"),
                    value: b"s".to_vec(),
                },
            ],
        )
        .unwrap();
        log.sync().unwrap();
        let commits = log
            .commits(appended.first_seq, appended.last_seq)
            .unwrap()
            .into_iter()
            .map(|entry| entry.commit)
            .collect();
        (log, appended, commits)
    }

    #[test]
    fn a_small_state_is_one_commit() {
        let (log, appended, commits) = run(10, 100);
        assert_eq!(appended.commits, 1);
        assert_eq!((appended.first_seq, appended.last_seq), (1, 1));
        assert_eq!(commits[0].mutations.len(), 12);
        assert!(log.node("/").is_some());
    }

    /// 3 MiB of values: several commits, each within the limit and all but the last filled
    /// (the next mutation would not have fitted), the root only in the last one, everything
    /// applied in order.
    #[test]
    fn a_large_state_is_split_with_the_root_last() {
        let value_len = 30_000;
        let count = 100;
        let (log, appended, commits) = run(count, value_len);
        assert!(appended.commits >= 3, "{appended:?}");
        assert_eq!(commits.len() as u64, appended.commits);
        assert_eq!(appended.last_seq - appended.first_seq + 1, appended.commits);
        let mut total = 0;
        for (index, commit) in commits.iter().enumerate() {
            let len = commit.encoded_len();
            total += len as u64;
            assert!(len <= COMMIT_LEN_MAX_BYTES, "commit {index}: {len}");
            let is_last = index + 1 == commits.len();
            assert_eq!(
                commit.mutations.iter().any(is_root),
                is_last,
                "commit {index}"
            );
            if !is_last {
                let next = &commits[index + 1].mutations[0];
                assert!(
                    len + next.encoded_len() > COMMIT_LEN_MAX_BYTES,
                    "commit {index} could have taken the next mutation"
                );
            }
        }
        assert_eq!(total, appended.bytes);
        let paths: Vec<String> = commits
            .iter()
            .flat_map(|commit| commit.mutations.iter())
            .filter_map(|mutation| match mutation {
                Mutation::PutNode { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let mut expected: Vec<String> = (0..count).map(|index| format!("/data/{index}")).collect();
        expected.push(String::from("/"));
        assert_eq!(paths, expected);
        assert_eq!(log.node_count(), count as u64 + 1);
        assert_eq!(log.blob("server"), Some(&b"s"[..]));
    }

    /// The premise of the contract: nodes below "/" written without "/" itself leave "/" an
    /// implicit directory, which has no record, so the log holds no store.
    #[test]
    fn an_implicit_root_is_not_a_store() {
        let mut log = log();
        log.append(Commit {
            cause: Cause::default(),
            mutations: vec![node("/local/domain/1/name", 3)],
        })
        .unwrap();
        assert!(log.node("/").is_none());
        assert!(!crate::store_engine::StoreEngine::log_has_image(&log));
        assert_eq!(log.children("/"), Some(vec![String::from("local")]));
        // The leftovers are found and removed.
        log.append(Commit {
            cause: Cause::default(),
            mutations: vec![Mutation::PutBlob {
                key: String::from("domain/1"),
                value: b"d".to_vec(),
            }],
        })
        .unwrap();
        let removals = leftover_removals(&log);
        assert_eq!(removals.len(), 2, "{removals:?}");
        log.append(Commit {
            cause: Cause::default(),
            mutations: removals,
        })
        .unwrap();
        assert_eq!(log.children("/"), Some(Vec::new()));
        assert_eq!(log.blob("domain/1"), None);
        assert!(leftover_removals(&log).is_empty());
    }

    /// Connection blobs that do not all fit beside the root node go into earlier commits; the
    /// final commit still has the root, the server blob and as many of them as fit.
    #[test]
    fn connection_blobs_beyond_one_commit_spill_into_earlier_commits() {
        let blob = |index: usize| Mutation::PutBlob {
            key: format!("conn/{index}"),
            value: vec![index as u8; 400 * 1024],
        };
        let cause = Cause::default();
        let server = Mutation::PutBlob {
            key: String::from("server"),
            value: b"s".to_vec(),
        };
        let (last, spilled) = final_commit(
            &cause,
            (0..4).map(blob).collect(),
            vec![server, node("/", 0)],
        );
        assert_eq!(last.len(), 4, "two blobs, the server blob and the root");
        assert!(is_root(&last[3]));
        assert_eq!(spilled.len(), 2);
        let mut log = log();
        let mut body = vec![node("/data", 10)];
        body.extend(spilled);
        let appended = append_in_commits(&mut log, &cause, body, last).unwrap();
        log.sync().unwrap();
        assert_eq!(appended.commits, 2);
        let commits = log.commits(1, 2).unwrap();
        assert!(commits[0].commit.mutations.iter().all(|m| !is_root(m)));
        assert!(commits[1].commit.mutations.iter().any(is_root));
        for index in 0..4 {
            assert_eq!(
                log.blob(&format!("conn/{index}")).map(<[u8]>::len),
                Some(400 * 1024)
            );
        }
        // Nothing preferred fits: the final commit is just what is required.
        let (last, spilled) = final_commit(
            &cause,
            vec![blob(0)],
            vec![Mutation::PutBlob {
                key: String::from("big"),
                value: vec![0; COMMIT_LEN_MAX_BYTES - 1000],
            }],
        );
        assert_eq!((last.len(), spilled.len()), (1, 1));
    }

    #[test]
    fn split_off_root_takes_the_root_node() {
        let mut image = vec![
            node("/", 0),
            node("/a", 1),
            Mutation::RemoveBlob {
                key: String::from("x"),
            },
        ];
        let root = split_off_root(&mut image);
        assert!(is_root(&root));
        assert_eq!(image.len(), 2);
        assert!(!image.iter().any(is_root));
    }
}
