//! Crash-safe, symlink-safe file operations for state that must survive (leases, caches,
//! proxy mappings). A reader never sees a half-written file, and a planted symlink is never
//! followed for writing.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp-file name beside `path`, unique per process and call.
fn temp_beside(path: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    let tmp = temp_beside(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let res = f.write_all(bytes).and_then(|_| f.sync_all());
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Replace `path` with `bytes` atomically: temp file in the same directory, fsync, rename.
/// `rename` replaces a symlink at `path` rather than writing through it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with explicit permissions (0600 for root-only state).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Create `path` with `bytes` only if nothing (not even a dangling symlink) is there yet,
/// atomically: the complete file appears at once or not at all. `Ok(false)` when it exists.
/// This is the reservation primitive: two writers can never both win, and a crash leaves no
/// torn reservation — and, where the file system has `O_TMPFILE`, no temp file either (the
/// data is written to an unnamed inode that gets its only name from `linkat`).
pub fn create_new_atomic(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let linked = match unnamed_temp(path, bytes, 0o644) {
        Ok(f) => link_fd(&f, path),
        Err(e) if tmpfile_unsupported(&e) => {
            let tmp = write_temp(path, bytes, 0o644)?;
            let res = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            res
        }
        Err(e) => return Err(e),
    };
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replace `path` atomically, for callers whose own lock already serialises every writer of
/// `path`. The temp file has a fixed name, `.<name>.tmp`: one left by a writer killed before
/// its rename is truncated by the next write and deleted by [`remove_locked`], so SIGKILLs
/// never accumulate litter (with per-process temp names nothing would ever remove it).
/// A symlink planted at either name is never written through (`O_NOFOLLOW`; `rename`
/// replaces a link at `path` rather than following it).
pub fn write_atomic_locked(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = fixed_temp(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Remove `path` and the temp file [`write_atomic_locked`] may have left beside it. Absent
/// files are fine (removal is idempotent).
pub fn remove_locked(path: &Path) -> io::Result<()> {
    for p in [fixed_temp(path), path.to_path_buf()] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// True for names [`write_atomic_locked`] uses as temp files, for a GC that runs while no
/// writer can be active.
pub fn is_locked_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && name.len() > 5
}

fn fixed_temp(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn tmpfile_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
    )
}

/// An unnamed file in `path`'s directory holding `bytes`, synced.
fn unnamed_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(f)
}

/// Give an unnamed file its name; fails with `AlreadyExists` rather than replacing.
fn link_fd(f: &File, path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let src = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dst = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: two valid NUL-terminated paths; AT_SYMLINK_FOLLOW resolves the /proc magic link
    // to the unnamed inode (the destination is never followed: linkat fails on any existing
    // name, symlink or not).
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Open for reading without following a final symlink.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// An exclusive `flock(2)` on a lock file, released on drop (and by the kernel if we die).
/// flock, not fcntl locks, because that is what the reference plugins take on the same files.
#[derive(Debug)]
pub struct Flock {
    file: File,
}

impl Flock {
    /// Create (if needed) and lock `path`, waiting for other holders.
    pub fn exclusive(path: &Path) -> io::Result<Flock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        loop {
            // SAFETY: valid fd owned by `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Flock { file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// The locked file (e.g. to read a pid written into it).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: valid fd; closing would unlock too, this just makes it explicit.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_refuses_existing_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("10.213.96.2");
        assert!(create_new_atomic(&p, b"c1\r\neth0").unwrap());
        assert!(!create_new_atomic(&p, b"c2\r\neth0").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"c1\r\neth0");
        let target = d.path().join("victim");
        let link = d.path().join("10.213.96.3");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(!create_new_atomic(&link, b"x").unwrap());
        assert!(!target.exists(), "wrote through a symlink");
        // no temp files left behind
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn locked_writes_reuse_one_temp_name_and_remove_cleans_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("owner");
        // a writer killed before its rename left this behind
        std::fs::write(d.path().join(".owner.tmp"), b"half").unwrap();
        write_atomic_locked(&p, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        std::fs::write(d.path().join(".owner.tmp"), b"half").unwrap();
        remove_locked(&p).unwrap();
        remove_locked(&p).unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        assert!(is_locked_temp_name(".owner.tmp") && !is_locked_temp_name("owner"));
    }

    #[test]
    fn locked_write_never_follows_a_planted_temp_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(".state.tmp")).unwrap();
        assert!(write_atomic_locked(&d.path().join("state"), b"x", 0o600).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn write_atomic_replaces_symlink_instead_of_following() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.path().join("state");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        assert!(open_nofollow(&link).is_ok());
    }

    #[test]
    fn open_nofollow_refuses_symlink() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("l");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(open_nofollow(&link).is_err());
    }
}
