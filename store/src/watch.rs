//! Watches: registration records, matching rules and the path reported in events (xen.git
//! `tools/xenstored/watch.c`: `is_child`, `fire_watches`, `watch_permitted`,
//! `get_watch_path`).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use xenstore_protocol::path;

use crate::ops::Match;

/// One registered watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// Canonical watched path (absolute or special).
    pub path: String,
    /// Client token (opaque bytes).
    pub token: Vec<u8>,
    /// Depth limit (`None`: unlimited; C's -1).
    pub depth: Option<u32>,
    /// Bytes stripped from event paths (home + `/` for relative watches, else 0).
    pub prefix_len: usize,
    /// Registration order within the connection.
    pub sequence: u64,
}

impl Watch {
    /// True if a change to `changed` matched with `kind` fires this watch.
    pub fn matches(&self, changed: &str, kind: Match) -> bool {
        match kind {
            Match::Exact => self.path == changed,
            Match::NoDepth => self.path == changed && self.depth.is_none(),
            Match::Subtree => match path::depth_below(&self.path, changed) {
                Some(levels) => self.depth.is_none_or(|depth| levels <= depth as usize),
                None => false,
            },
            Match::Depth => {
                self.path == changed
                    || match (self.depth, path::depth_below(&self.path, changed)) {
                        (Some(depth), Some(levels)) => depth > 0 && levels <= depth as usize,
                        _ => false,
                    }
            }
        }
    }

    /// The path reported in an event for `changed`.
    pub fn reported_path(&self, changed: &str) -> String {
        String::from(changed.get(self.prefix_len..).unwrap_or(changed))
    }
}

/// Watch paths that can match a change of `changed` with `kind`: the only keys of the watch
/// index worth looking at.
pub fn candidate_paths(changed: &str, kind: Match) -> Vec<String> {
    let mut out = Vec::new();
    out.push(String::from(changed));
    match kind {
        Match::Exact | Match::NoDepth => {}
        Match::Depth => {
            if let Some(parent) = path::parent(changed) {
                out.push(String::from(parent));
            }
        }
        Match::Subtree => {
            let mut current = changed;
            while let Some(parent) = path::parent(current) {
                out.push(String::from(parent));
                current = parent;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(path: &str, depth: Option<u32>) -> Watch {
        Watch {
            path: String::from(path),
            token: Vec::new(),
            depth,
            prefix_len: 0,
            sequence: 0,
        }
    }

    #[test]
    fn matching_table() {
        let cases: &[(&str, Option<u32>, &str, Match, bool)] = &[
            ("/a", None, "/a", Match::Subtree, true),
            ("/a", None, "/a/b/c", Match::Subtree, true),
            ("/a", None, "/ab", Match::Subtree, false),
            ("/a", Some(0), "/a/b", Match::Subtree, false),
            ("/a", Some(1), "/a/b", Match::Subtree, true),
            ("/a", Some(1), "/a/b/c", Match::Subtree, false),
            ("/", None, "/x", Match::Subtree, true),
            ("/", Some(1), "/x", Match::Subtree, true),
            ("/", Some(1), "/x/y", Match::Subtree, false),
            ("/a", None, "/a/b", Match::Exact, false),
            ("/a/b", None, "/a/b", Match::Exact, true),
            (
                "@releaseDomain",
                None,
                "@releaseDomain",
                Match::NoDepth,
                true,
            ),
            (
                "@releaseDomain",
                Some(1),
                "@releaseDomain",
                Match::NoDepth,
                false,
            ),
            (
                "@releaseDomain",
                None,
                "@releaseDomain/3",
                Match::Depth,
                false,
            ),
            (
                "@releaseDomain",
                Some(1),
                "@releaseDomain/3",
                Match::Depth,
                true,
            ),
            (
                "@releaseDomain",
                Some(0),
                "@releaseDomain/3",
                Match::Depth,
                false,
            ),
            (
                "@releaseDomain/3",
                None,
                "@releaseDomain/3",
                Match::Depth,
                true,
            ),
            (
                "@releaseDomain/4",
                None,
                "@releaseDomain/3",
                Match::Depth,
                false,
            ),
        ];
        for (watched, depth, changed, kind, expected) in cases {
            assert_eq!(
                watch(watched, *depth).matches(changed, *kind),
                *expected,
                "{watched} {depth:?} {changed} {kind:?}"
            );
        }
        let relative = Watch {
            prefix_len: "/local/domain/5/".len(),
            ..watch("/local/domain/5/foo", None)
        };
        assert_eq!(relative.reported_path("/local/domain/5/foo/x"), "foo/x");
    }
}
