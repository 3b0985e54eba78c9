//! Is a path on a RAM filesystem? (`statfs` `f_type` of tmpfs or ramfs.) The database should
//! live on one (architecture: a RAM disk cleared on host reboot); a disk-backed path gets a
//! warning because every commit then costs a real `fdatasync`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `TMPFS_MAGIC` from `linux/magic.h`.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `RAMFS_MAGIC` from `linux/magic.h`.
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// The `f_type` of the filesystem holding `path` (or its nearest existing ancestor).
pub fn filesystem_type(path: &Path) -> io::Result<i64> {
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
        if probe.as_os_str().is_empty() {
            probe = Path::new(".");
        }
    }
    let name = CString::new(probe.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statfs is plain data and fully written by a successful statfs(2); `name` is a
    // valid NUL-terminated string that outlives the call.
    let mut info: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above; both pointers are valid for the duration of the call.
    let result = unsafe { libc::statfs(name.as_ptr(), &mut info) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.f_type as i64)
}

/// True when `path` is on tmpfs or ramfs.
pub fn is_ram_filesystem(path: &Path) -> io::Result<bool> {
    let kind = filesystem_type(path)?;
    Ok(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_shm_is_ram_when_present() {
        if Path::new("/dev/shm").exists() {
            assert!(is_ram_filesystem(Path::new("/dev/shm/does/not/exist")).unwrap());
        }
    }
}
