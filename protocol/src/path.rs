//! Node path rules: validation, relative-path resolution and special `@` paths.
//!
//! Follows C xenstored (xen.git `tools/xenstored/core.c`: `canonicalize`, `is_valid_nodename`)
//! and `docs/misc/xenstore.txt`:
//! - absolute paths start with `/`; `/` alone is the root;
//! - relative paths (not starting with `/` or `@`) are resolved against the caller's home
//!   `/local/domain/<domid>`;
//! - special paths start with `@` (`@introduceDomain`, `@releaseDomain`, optionally with a
//!   `/<domid>` suffix) and are accepted only where the caller allows them (watches, perms);
//! - allowed characters are ASCII letters, digits and `-/_@`; no empty component (`//`), no
//!   trailing `/` except the root;
//! - length limits: relative input at most 2048 bytes, absolute result at most 3072 bytes. The
//!   per-domain `path-max` quota is applied by the store, not here.
//!
//! Nothing here panics on any input; every failure is a [`PathError`], which maps to `EINVAL`.

use alloc::format;
use alloc::string::String;

use crate::domid::Domid;
use crate::error::Errno;
use crate::limits::{ABSOLUTE_PATH_MAX_BYTES, RELATIVE_PATH_MAX_BYTES};

/// Why a path was rejected. Every variant is reported to clients as `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// The path is empty.
    Empty,
    /// A byte outside `[A-Za-z0-9-/_@]`.
    InvalidCharacter,
    /// Two consecutive `/`.
    EmptyComponent,
    /// A trailing `/` on a path other than the root.
    TrailingSlash,
    /// Longer than the applicable limit.
    TooLong,
    /// A special `@` path where only node paths are allowed.
    SpecialNotAllowed,
}

impl From<PathError> for Errno {
    fn from(_: PathError) -> Errno {
        Errno::EINVAL
    }
}

/// Name of the special node that fires when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Name of the special node that fires when a domain is released, shuts down or dies.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// How a client wrote a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PathForm {
    /// Starts with `/`.
    Absolute,
    /// Resolved against the caller's home directory.
    Relative,
    /// Starts with `@`.
    Special,
}

/// A path after validation and resolution: absolute (or special) and canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPath {
    /// The absolute (or `@`) path.
    pub absolute: String,
    /// How the client wrote it (relative paths are reported back relative in watch events).
    pub form: PathForm,
}

/// `/local/domain/<domid>`, the home directory relative paths resolve against.
pub fn domain_home(domid: Domid) -> String {
    format!("/local/domain/{}", domid.0)
}

fn valid_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'/' | b'_' | b'@')
}

/// Checks the character set and slash structure of an absolute or special path.
fn check_structure(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if !path.bytes().all(valid_byte) {
        return Err(PathError::InvalidCharacter);
    }
    if path.contains("//") {
        return Err(PathError::EmptyComponent);
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err(PathError::TrailingSlash);
    }
    Ok(())
}

/// Validates `raw` and resolves a relative path against `home` (see [`domain_home`]).
/// `allow_special` admits `@` paths (WATCH, UNWATCH, GET_PERMS, SET_PERMS).
pub fn resolve(raw: &str, home: &str, allow_special: bool) -> Result<ResolvedPath, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    let (absolute, form) = if raw.starts_with('/') {
        (String::from(raw), PathForm::Absolute)
    } else if raw.starts_with('@') {
        if !allow_special {
            return Err(PathError::SpecialNotAllowed);
        }
        (String::from(raw), PathForm::Special)
    } else {
        if raw.len() > RELATIVE_PATH_MAX_BYTES {
            return Err(PathError::TooLong);
        }
        // Validate the relative part on its own first so that e.g. "a/" is a trailing slash.
        check_structure(raw)?;
        (format!("{home}/{raw}"), PathForm::Relative)
    };
    if absolute.len() > ABSOLUTE_PATH_MAX_BYTES {
        return Err(PathError::TooLong);
    }
    check_structure(&absolute)?;
    Ok(ResolvedPath { absolute, form })
}

/// Converts an absolute path back to the form the client used: relative paths lose the home
/// prefix (and the separating `/`), others are returned unchanged.
pub fn unresolve<'a>(absolute: &'a str, home: &str, form: PathForm) -> &'a str {
    if form != PathForm::Relative {
        return absolute;
    }
    absolute
        .strip_prefix(home)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(absolute)
}

/// The parent of an absolute path (`None` for the root and for special paths without `/`).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let slash = path.rfind('/')?;
    if slash == 0 {
        if path.starts_with('/') {
            Some("/")
        } else {
            None
        }
    } else {
        Some(&path[..slash])
    }
}

/// The last component of a path (`""` for the root).
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(slash) => &path[slash + 1..],
        None => path,
    }
}

/// Joins a directory path and a child name.
pub fn join(directory: &str, child: &str) -> String {
    if directory == "/" {
        format!("/{child}")
    } else {
        format!("{directory}/{child}")
    }
}

/// True if `ancestor` is `path` itself or one of its ancestors, on component boundaries
/// (`/a` contains `/a/b` but not `/ab`; `/` contains every absolute path).
pub fn is_same_or_ancestor(ancestor: &str, path: &str) -> bool {
    if ancestor == path {
        return true;
    }
    if ancestor == "/" {
        return path.starts_with('/');
    }
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && path.as_bytes()[ancestor.len()] == b'/'
}

/// Number of components of `path` below `ancestor`, when `ancestor` is the same or an
/// ancestor (0 for the same path).
pub fn depth_below(ancestor: &str, path: &str) -> Option<usize> {
    if !is_same_or_ancestor(ancestor, path) {
        return None;
    }
    if ancestor == path {
        return Some(0);
    }
    let rest = if ancestor == "/" {
        &path[1..]
    } else {
        &path[ancestor.len() + 1..]
    };
    Some(rest.split('/').count())
}

/// Number of components of an absolute path (0 for the root).
pub fn depth(path: &str) -> usize {
    depth_below("/", path).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const HOME: &str = "/local/domain/5";

    #[test]
    fn absolute_paths() {
        let resolved = resolve("/local/domain/5/device", HOME, false).unwrap();
        assert_eq!(resolved.absolute, "/local/domain/5/device");
        assert_eq!(resolved.form, PathForm::Absolute);
        assert_eq!(resolve("/", HOME, false).unwrap().absolute, "/");
    }

    #[test]
    fn relative_paths_resolve_against_home() {
        let resolved = resolve("device/vif/0", HOME, false).unwrap();
        assert_eq!(resolved.absolute, "/local/domain/5/device/vif/0");
        assert_eq!(resolved.form, PathForm::Relative);
        assert_eq!(
            unresolve(&resolved.absolute, HOME, resolved.form),
            "device/vif/0"
        );
    }

    #[test]
    fn special_paths_only_where_allowed() {
        assert_eq!(
            resolve("@releaseDomain", HOME, false),
            Err(PathError::SpecialNotAllowed)
        );
        let resolved = resolve("@releaseDomain/7", HOME, true).unwrap();
        assert_eq!(resolved.form, PathForm::Special);
        assert_eq!(resolved.absolute, "@releaseDomain/7");
    }

    #[test]
    fn rejects_bad_paths() {
        let cases = [
            ("", PathError::Empty),
            ("/a//b", PathError::EmptyComponent),
            ("/a/", PathError::TrailingSlash),
            ("a/", PathError::TrailingSlash),
            ("/a b", PathError::InvalidCharacter),
            ("/a.b", PathError::InvalidCharacter),
            ("/a\0", PathError::InvalidCharacter),
            ("/ä", PathError::InvalidCharacter),
        ];
        for (path, error) in cases {
            assert_eq!(resolve(path, HOME, true), Err(error), "{path:?}");
        }
    }

    #[test]
    fn length_limits() {
        let relative_max = "a".repeat(RELATIVE_PATH_MAX_BYTES);
        assert!(resolve(&relative_max, HOME, false).is_ok());
        let relative_over = "a".repeat(RELATIVE_PATH_MAX_BYTES + 1);
        assert_eq!(
            resolve(&relative_over, HOME, false),
            Err(PathError::TooLong)
        );
        let absolute_max = format!("/{}", "a".repeat(ABSOLUTE_PATH_MAX_BYTES - 1));
        assert!(resolve(&absolute_max, HOME, false).is_ok());
        let absolute_over = format!("/{}", "a".repeat(ABSOLUTE_PATH_MAX_BYTES));
        assert_eq!(
            resolve(&absolute_over, HOME, false),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn tree_helpers() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("@releaseDomain"), None);
        assert_eq!(parent("@releaseDomain/3"), Some("@releaseDomain"));
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(basename("/"), "");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_same_or_ancestor("/", "/a"));
        assert!(is_same_or_ancestor("/a", "/a/b"));
        assert!(!is_same_or_ancestor("/a", "/ab"));
        assert!(!is_same_or_ancestor("/a/b", "/a"));
        assert_eq!(depth_below("/a", "/a/b/c"), Some(2));
        assert_eq!(depth_below("/", "/a/b"), Some(2));
        assert_eq!(depth_below("/a", "/a"), Some(0));
        assert_eq!(depth_below("/b", "/a"), None);
        assert_eq!(depth("/"), 0);
        assert_eq!(depth("/local/domain/1"), 3);
        assert_eq!(domain_home(Domid(12)), "/local/domain/12".to_string());
    }
}
