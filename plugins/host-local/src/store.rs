//! The disk store: the reference plugin's on-disk contract, made crash-safe and fast.
//!
//! Layout of `<dataDir>/<network>/` (shared with the reference host-local, so a node can
//! switch plugins either way without losing or duplicating a lease):
//! - `<ip>`: one file per reservation holding `<containerID>\r\n<ifname>` (older reference
//!   versions wrote only the ID; we still read those);
//! - `last_reserved_ip.<n>`: the round-robin cursor of range set `n`;
//! - `lock`: taken with `flock(LOCK_EX)` for every verb — the reference does the same for
//!   ADD, DEL and CHECK, so the two never interleave.
//!
//! What ferry adds, without changing what the reference reads:
//! - A reservation appears with its final content or not at all: the content is written to
//!   an unnamed `O_TMPFILE` inode and then `linkat`-ed to `<ip>`, which fails with `EEXIST`
//!   when the name exists (a reference `O_EXCL` create, another ferry, or a symlink). So
//!   SIGKILL never leaves a torn lease, and the name itself is the exclusion — even against
//!   a process that ignores the lock.
//! - `.ferry-owners/<hash(id, ifname)>.<n>`: a hint so ADD (idempotence) and DEL find an
//!   owner's lease without listing the directory: a second hard link to the lease inode,
//!   whose `user.ferry.ip` xattr names the address (a symlink to `../<ip>` where user xattrs
//!   are unsupported). The hint is linked to the unnamed file *before* the lease gets its
//!   name, so a lease made by ferry is never without its hint, even after SIGKILL. Hints are
//!   never trusted alone: the address's file must be that very inode and still name the
//!   owner. DEL trusts hints alone only when every range set has a valid one. The
//!   reference's DEL walks sub-directories and reads these files, so it removes them
//!   together with the lease. Without valid hints (leases written by the reference, a
//!   repeated DEL) DEL and CHECK fall back to a full scan — the cost the reference pays on
//!   every call.
//! - `.ferry-owners/last_reserved_ip.<n>`: a spare copy of the cursor. The cursor is updated
//!   by rewriting the spare and swapping it in with `RENAME_EXCHANGE`: atomic like a
//!   rename, but without creating an inode per ADD (inode creation is the dominant cost of
//!   an ADD on ext4, ~0.2 ms here).
//! - Nothing is ever opened through a symlink (`O_NOFOLLOW` everywhere, `*at` calls relative
//!   to the directory's descriptor); files are replaced by rename, never written in place.
//!
//! Durability matches the reference (no fsync): the guarantees are about process crashes.

use crate::allocator::{Holder, Owner, Store};
use crate::config::check_network_name;
use crate::range::{canonical, RangeSet};
use cni::{code, Attachment, Error, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, Flock, FlockArg, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};
use nix::NixPath;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Name of the lock file (reference contract).
pub const LOCK_FILE: &str = "lock";
/// Prefix of the round-robin cursor files (reference contract: `last_reserved_ip.<n>`).
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// ferry's owner-hint directory; starts with a dot so it can never be an IP or a network.
pub const HINT_DIR: &str = ".ferry-owners";
/// Prefix of ferry's named temp files (only used where `O_TMPFILE` cannot be).
pub const TMP_PREFIX: &str = ".ferry-tmp";

/// Largest lease file we read; real ones are an ID and an ifname. ADD refuses an attachment
/// whose lease would be larger, so no lease is ever written that could not be read back.
pub const MAX_LEASE_BYTES: u64 = 4096;

/// The xattr on a lease inode naming its address, so a hard-linked hint leads back to it.
const IP_XATTR: &std::ffi::CStr = c"user.ferry.ip";

fn set_ip_xattr(fd: &OwnedFd, ip: &str) -> nix::Result<()> {
    // SAFETY: valid fd, NUL-terminated name, buffer pointer and length from a live &str.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            IP_XATTR.as_ptr(),
            ip.as_ptr().cast(),
            ip.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

fn get_ip_xattr(fd: &OwnedFd) -> Option<IpAddr> {
    let mut buf = [0u8; 64];
    // SAFETY: valid fd, NUL-terminated name, writable buffer of the given length.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            IP_XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.parse().ok()
}

fn io_err(what: impl std::fmt::Display, e: Errno) -> Error {
    Error::new(code::IO, format!("{what}: {}", e.desc()))
}

/// What sits at a name in the network directory, read without following links.
enum Entry {
    /// Nothing there.
    Absent,
    /// A symlink, directory, FIFO or other non-regular file: never read or written.
    NotRegular,
    /// A regular file's first bytes.
    Contents(Vec<u8>),
}

/// One entry found by a scan of the network directory.
#[derive(Debug, Clone)]
pub struct ScannedLease {
    /// The address the file name spells.
    pub ip: IpAddr,
    /// Who holds it, per the file's content.
    pub holder: Holder,
    /// False for a symlink, directory or other odd thing sitting on an address name.
    pub regular: bool,
}

/// What a GC did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Addresses released.
    pub released: Vec<IpAddr>,
    /// Entries left alone because they are not regular files (never followed or removed).
    pub skipped: Vec<IpAddr>,
}

/// An unnamed lease file being placed: its content, range-set slot, and the owner hint
/// already linked to it (if any).
struct Spare {
    contents: String,
    slot: usize,
    fd: OwnedFd,
    hint: Option<String>,
}

/// An open, locked network directory. The lock is held until the store is dropped.
pub struct DiskStore {
    dir: OwnedFd,
    path: PathBuf,
    hints: Option<OwnedFd>,
    hint_slots: usize,
    /// An unnamed file that lost a race for one address, kept for the next candidate so a
    /// crowded range costs one `linkat` per address, not a new file.
    spare: Option<Spare>,
    tmpfile_supported: bool,
    /// Hints as hard links tagged with an xattr (false: symlinks; tests use it).
    xattr_hints: bool,
    _lock: Flock<OwnedFd>,
}

impl DiskStore {
    /// Create (if needed) and lock `<data_dir>/<network>`. `hint_slots` is the number of
    /// range sets (one owner hint per set). Errors are code 5 naming the path, except a
    /// network name that would escape `data_dir` (code 7, refused before any path is built).
    pub fn open(data_dir: &Path, network: &str, hint_slots: usize) -> Result<DiskStore> {
        Self::open_inner(data_dir, network, hint_slots, true)?.ok_or_else(|| {
            Error::new(
                code::IO,
                format!(
                    "{} vanished while opening it",
                    data_dir.join(network).display()
                ),
            )
        })
    }

    /// Like [`DiskStore::open`] but creates nothing: `Ok(None)` when the network directory
    /// does not exist (DEL, CHECK, GC, STATUS have nothing to do there — and must not fail
    /// because a read-only or missing dataDir cannot be created).
    pub fn open_existing(
        data_dir: &Path,
        network: &str,
        hint_slots: usize,
    ) -> Result<Option<DiskStore>> {
        Self::open_inner(data_dir, network, hint_slots, false)
    }

    fn open_inner(
        data_dir: &Path,
        network: &str,
        hint_slots: usize,
        create: bool,
    ) -> Result<Option<DiskStore>> {
        check_network_name(network)?;
        let path = data_dir.join(network);
        if create {
            std::fs::create_dir_all(data_dir).map_err(|e| {
                Error::new(
                    code::IO,
                    format!(
                        "creating dataDir {}: {e}; set ipam.dataDir to a writable directory",
                        data_dir.display()
                    ),
                )
            })?;
        }
        let parent = match nix::fcntl::open(
            data_dir,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // ENOTDIR: a path component is a file, so nothing can have been reserved there.
            Err(Errno::ENOENT | Errno::ENOTDIR) if !create => return Ok(None),
            Err(e) => return Err(io_err(format!("opening dataDir {}", data_dir.display()), e)),
        };
        if create {
            match mkdirat(&parent, network, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(io_err(
                        format!(
                            "creating {}; set ipam.dataDir to a writable directory",
                            path.display()
                        ),
                        e,
                    ))
                }
            }
        }
        let dir = match openat(
            &parent,
            network,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Err(Errno::ENOENT) if !create => return Ok(None),
            other => other,
        }
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => Error::new(
                code::IO,
                format!(
                    "{} is not a directory (a symlink is not followed); remove it",
                    path.display()
                ),
            ),
            e => io_err(format!("opening {}", path.display()), e),
        })?;
        let lock_path = path.join(LOCK_FILE);
        let lock_fd = openat(
            &dir,
            LOCK_FILE,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .or_else(|e| match e {
            // A read-only file system still lets us lock an existing lock file for reading
            // verbs; writes fail later with their own path in the message.
            Errno::EROFS | Errno::EACCES => openat(
                &dir,
                LOCK_FILE,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ),
            e => Err(e),
        })
        .map_err(|e| {
            io_err(
                format!(
                    "opening lock file {}; set ipam.dataDir to a writable directory",
                    lock_path.display()
                ),
                e,
            )
        })?;
        let mut lock_fd = lock_fd;
        let lock = loop {
            match Flock::lock(lock_fd, FlockArg::LockExclusive) {
                Ok(l) => break l,
                Err((fd, Errno::EINTR)) => lock_fd = fd,
                Err((_, e)) => return Err(io_err(format!("locking {}", lock_path.display()), e)),
            }
        };
        Ok(Some(DiskStore {
            dir,
            path,
            hints: None,
            hint_slots,
            spare: None,
            tmpfile_supported: true,
            xattr_hints: true,
            _lock: lock,
        }))
    }

    /// The network directory (for messages and tests).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn name_path(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    fn hint_dir(&mut self, create: bool) -> Result<Option<&OwnedFd>> {
        if self.hints.is_none() {
            if create {
                match mkdirat(&self.dir, HINT_DIR, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(io_err(format!("creating {}", self.name_path(HINT_DIR)), e))
                    }
                }
            }
            match openat(
                &self.dir,
                HINT_DIR,
                OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => self.hints = Some(fd),
                Err(Errno::ENOENT) if !create => return Ok(None),
                Err(e) => return Err(io_err(format!("opening {}", self.name_path(HINT_DIR)), e)),
            }
        }
        Ok(self.hints.as_ref())
    }

    /// Read a small file relative to the directory, never following a symlink and never
    /// blocking on a FIFO.
    fn read_entry(&self, name: &str) -> Result<Entry> {
        let fd = match openat(
            &self.dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Entry::Absent),
            Err(Errno::ELOOP) | Err(Errno::ENXIO) | Err(Errno::EISDIR) => {
                return Ok(Entry::NotRegular)
            }
            Err(e) => return Err(io_err(format!("reading {}", self.name_path(name)), e)),
        };
        let st = fstat(&fd).map_err(|e| io_err(format!("stat {}", self.name_path(name)), e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Ok(Entry::NotRegular);
        }
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_LEASE_BYTES)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", self.name_path(name)), e))?;
        Ok(Entry::Contents(buf))
    }

    /// A fresh unnamed file holding `contents`, to be linked into place.
    fn tmpfile_with(&mut self, contents: &[u8]) -> Result<Option<OwnedFd>> {
        if !self.tmpfile_supported {
            return Ok(None);
        }
        let fd = match openat(
            &self.dir,
            ".",
            OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => fd,
            Err(Errno::EOPNOTSUPP) | Err(Errno::EISDIR) | Err(Errno::EINVAL) => {
                self.tmpfile_supported = false;
                return Ok(None);
            }
            Err(e) => {
                return Err(io_err(
                    format!("creating a file in {}", self.path.display()),
                    e,
                ))
            }
        };
        let mut file = std::fs::File::from(fd);
        file.write_all(contents)
            .map_err(|e| Error::io(format!("writing a lease in {}", self.path.display()), e))?;
        Ok(Some(OwnedFd::from(file)))
    }

    /// Link an unnamed file to `name`; `Ok(false)` when `name` exists (never replaced).
    fn link_tmpfile(&self, fd: &OwnedFd, name: &str) -> nix::Result<bool> {
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match linkat(
            AT_FDCWD,
            proc_path.as_str(),
            &self.dir,
            name,
            AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Link an open file under `hint` in the hint directory, replacing a stale hint.
    fn link_fd_as_hint(&mut self, fd: &OwnedFd, hint: &str) -> Result<()> {
        self.hint_dir(true)?;
        let Some(hints) = self.hints.as_ref() else {
            return Err(Error::internal("hint directory vanished"));
        };
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let link = || {
            linkat(
                AT_FDCWD,
                proc_path.as_str(),
                hints,
                hint,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        };
        match link() {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                let _ = unlinkat(hints, hint, UnlinkatFlags::NoRemoveDir);
                link().map_err(|e| io_err(format!("writing hint {hint}"), e))
            }
            Err(e) => Err(io_err(format!("writing hint {hint}"), e)),
        }
    }

    fn unlink_hint(&self, name: &str) {
        if let Some(hints) = self.hints.as_ref() {
            let _ = unlinkat(hints, name, UnlinkatFlags::NoRemoveDir);
        }
    }

    /// Drop an unnamed file that never became a lease, and the hint linked to it.
    fn discard_spare(&mut self, spare: Spare) {
        if let (Some(hint), Some(hints)) = (&spare.hint, self.hints.as_ref()) {
            let same = match (
                fstat(&spare.fd),
                nix::sys::stat::fstatat(hints, hint.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
            ) {
                (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
                _ => false,
            };
            if same {
                let _ = unlinkat(hints, hint.as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }

    /// The fallback when the file system has no `O_TMPFILE`: a complete temp file under a
    /// dot-name, hard-linked (no replace) to `name`, then removed. Only ever one at a time
    /// (we hold the lock), so a fixed name is enough and a crash leftover is reused.
    fn create_via_named_temp(&self, name: &str, contents: &[u8]) -> Result<bool> {
        let tmp = format!("{TMP_PREFIX}.lease");
        self.write_named_temp(&tmp, contents)?;
        let linked = match linkat(&self.dir, tmp.as_str(), &self.dir, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(io_err(format!("creating {}", self.name_path(name)), e)),
        };
        let _ = unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        linked
    }

    fn write_named_temp(&self, tmp: &str, contents: &[u8]) -> Result<()> {
        match unlinkat(&self.dir, tmp, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err(format!("removing {}", self.name_path(tmp)), e)),
        }
        let fd = openat(
            &self.dir,
            tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| io_err(format!("creating {}", self.name_path(tmp)), e))?;
        std::fs::File::from(fd)
            .write_all(contents)
            .map_err(|e| Error::io(format!("writing {}", self.name_path(tmp)), e))
    }

    /// Replace `name` atomically (temp file + rename; a symlink at `name` is replaced,
    /// never written through).
    fn replace_file(&self, name: &str, contents: &[u8]) -> Result<()> {
        let tmp = format!("{TMP_PREFIX}.{name}");
        self.write_named_temp(&tmp, contents)?;
        renameat(&self.dir, tmp.as_str(), &self.dir, name)
            .map_err(|e| io_err(format!("writing {}", self.name_path(name)), e))
    }

    /// Update a cursor file without creating an inode: rewrite a spare copy kept in the
    /// hint directory, then swap it with the visible file (`RENAME_EXCHANGE`, atomic). The
    /// visible file is never written in place, so it is never torn; the spare may be, but
    /// it is fully rewritten before every swap. Any failure: the caller falls back to temp
    /// file + rename.
    fn exchange_cursor(&mut self, name: &str, contents: &[u8]) -> Result<()> {
        self.hint_dir(true)?;
        let (dir, Some(hints)) = (&self.dir, self.hints.as_ref()) else {
            return Err(Error::internal("hint directory vanished"));
        };
        let fail = |e: Errno| io_err(format!("updating {name}"), e);
        let spare = openat(
            hints,
            name,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| {
            // Not a regular file (a planted symlink or FIFO): drop it; next time we start over.
            let _ = unlinkat(hints, name, UnlinkatFlags::NoRemoveDir);
            fail(e)
        })?;
        let st = fstat(&spare).map_err(fail)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            let _ = unlinkat(hints, name, UnlinkatFlags::NoRemoveDir);
            return Err(fail(Errno::EINVAL));
        }
        let written = nix::sys::uio::pwrite(&spare, contents, 0).map_err(fail)?;
        if written != contents.len() {
            return Err(fail(Errno::EIO));
        }
        nix::unistd::ftruncate(&spare, contents.len() as i64).map_err(fail)?;
        match rename_exchange(hints, name, dir, name) {
            Ok(()) => Ok(()),
            // First update: nothing to swap with, so the spare simply becomes the file.
            Err(Errno::ENOENT) => renameat(hints, name, dir, name).map_err(fail),
            Err(e) => Err(fail(e)),
        }
    }

    /// The owner part of a hint name: a hash, because IDs can be long and ifnames may hold
    /// characters that are awkward in file names.
    fn hint_prefix(owner: &Owner) -> String {
        let digest = Sha256::digest(owner.lease_contents().as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hint_name(owner: &Owner, slot: usize) -> String {
        format!("{}.{slot}", Self::hint_prefix(owner))
    }

    /// The addresses named by `owner`'s hints (unverified), with the hint names.
    fn hinted(&mut self, owner: &Owner) -> Result<Vec<(String, Option<IpAddr>)>> {
        let slots = self.hint_slots;
        // Hints only save time: a broken hint directory means "scan", never a failed verb.
        if let Err(e) = self.hint_dir(false) {
            eprintln!("host-local: ignoring owner hints: {}", e.msg);
            return Ok(Vec::new());
        }
        let Some(hints) = self.hints.as_ref() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for slot in 0..slots {
            let name = Self::hint_name(owner, slot);
            match openat(
                hints,
                name.as_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    // A hard link: the xattr names the address; valid only while the
                    // address's file is this very inode.
                    let ip = get_ip_xattr(&fd).filter(|ip| {
                        let lease = nix::sys::stat::fstatat(
                            &self.dir,
                            ip.to_string().as_str(),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        );
                        match (fstat(&fd), lease) {
                            (Ok(h), Ok(l)) => h.st_ino == l.st_ino && h.st_dev == l.st_dev,
                            _ => false,
                        }
                    });
                    out.push((name, ip));
                }
                Err(Errno::ENOENT) => {}
                Err(Errno::ELOOP) => {
                    // The symlink form (file systems without user xattrs).
                    let ip = readlinkat(hints, name.as_str()).ok().and_then(|t| {
                        t.to_str()
                            .and_then(|t| t.strip_prefix("../"))
                            .and_then(|t| t.parse::<IpAddr>().ok())
                    });
                    out.push((name, ip));
                }
                // Anything else is a broken hint: removed on DEL, never trusted.
                Err(_) => out.push((name, None)),
            }
        }
        Ok(out)
    }

    /// Record hints for `owner`'s leases (slot = range-set index). Best effort: a missing
    /// hint only costs a scan later, so failures are reported on stderr, not to the runtime.
    ///
    /// A hint is a second hard link to the lease inode, whose `user.ferry.ip` xattr names
    /// the address: no new inode (creating one costs ~0.2 ms on ext4, more than the rest of
    /// an ADD), and "same inode" is an exact check that the lease is still the one we made.
    /// Where user xattrs are not supported the hint is a symlink to `../<ip>` instead.
    pub fn record_hints(&mut self, owner: &Owner, leases: &[(usize, IpAddr)]) {
        let result = (|| -> Result<()> {
            for (slot, ip) in leases {
                self.record_hint(owner, *slot, *ip)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("host-local: {} (DEL will scan instead)", e.msg);
        }
    }

    fn record_hint(&mut self, owner: &Owner, slot: usize, ip: IpAddr) -> Result<()> {
        let name = Self::hint_name(owner, slot);
        if self
            .hinted(owner)?
            .iter()
            .any(|(n, hinted_ip)| *n == name && *hinted_ip == Some(ip))
        {
            return Ok(()); // placed by `reserve` before the lease appeared
        }
        let lease = ip.to_string();
        let tagged = match openat(
            &self.dir,
            lease.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => self.xattr_hints && set_ip_xattr(&fd, &lease).is_ok(),
            Err(e) => return Err(io_err(format!("opening {}", self.name_path(&lease)), e)),
        };
        self.hint_dir(true)?;
        let (dir, Some(hints)) = (&self.dir, self.hints.as_ref()) else {
            return Err(Error::internal("hint directory vanished"));
        };
        let make = |hints: &OwnedFd| {
            if tagged {
                linkat(dir, lease.as_str(), hints, name.as_str(), AtFlags::empty())
            } else {
                symlinkat(format!("../{lease}").as_str(), hints, name.as_str())
            }
        };
        match make(hints) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                let _ = unlinkat(hints, name.as_str(), UnlinkatFlags::NoRemoveDir);
                make(hints).map_err(|e| io_err(format!("writing hint {name}"), e))
            }
            Err(e) => Err(io_err(format!("writing hint {name}"), e)),
        }
    }

    /// Every entry whose name is an address, with its holder. Used by DEL/CHECK without a
    /// hint, GC and STATUS; names that are not addresses (`lock`, `last_reserved_ip.*`,
    /// ferry's dot-files) are never returned, so callers cannot touch them.
    pub fn scan(&self, read_contents: bool) -> Result<Vec<ScannedLease>> {
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        let listing = std::fs::read_dir(&proc_path)
            .or_else(|_| std::fs::read_dir(&self.path))
            .map_err(|e| Error::io(format!("listing {}", self.path.display()), e))?;
        let mut out = Vec::new();
        for entry in listing {
            let entry =
                entry.map_err(|e| Error::io(format!("listing {}", self.path.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            if !read_contents {
                out.push(ScannedLease {
                    ip: canonical(ip),
                    holder: Holder::Unknown,
                    regular: true,
                });
                continue;
            }
            // One unreadable entry must not stop a DEL or GC of everything else.
            let entry = self.read_entry(name).unwrap_or_else(|e| {
                eprintln!("host-local: skipping {name}: {}", e.msg);
                Entry::NotRegular
            });
            match entry {
                Entry::Absent => {}
                Entry::NotRegular => out.push(ScannedLease {
                    ip: canonical(ip),
                    holder: Holder::Unknown,
                    regular: false,
                }),
                Entry::Contents(bytes) => out.push(ScannedLease {
                    ip: canonical(ip),
                    holder: Holder::parse(&bytes),
                    regular: true,
                }),
            }
        }
        Ok(out)
    }

    /// Pick the owner's leases from a scan with the reference's two passes: exact
    /// (ID, ifname) matches; if there are none, files holding only the ID.
    fn owned_in_scan(scan: &[ScannedLease], owner: &Owner, legacy_too: bool) -> Vec<IpAddr> {
        let exact: Vec<IpAddr> = scan
            .iter()
            .filter(|l| matches!(&l.holder, Holder::Owner(o) if l.holder.is_held_by(owner) && o.ifname == owner.ifname))
            .map(|l| l.ip)
            .collect();
        if !exact.is_empty() || !legacy_too {
            return exact;
        }
        scan.iter()
            .filter(|l| matches!(l.holder, Holder::LegacyId(_)) && l.holder.is_held_by(owner))
            .map(|l| l.ip)
            .collect()
    }

    /// The addresses `owner` holds (CHECK): hints first, a scan when no hint is valid.
    pub fn find_owner(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        let known = self.known_leases_of(owner)?;
        if !known.is_empty() {
            return Ok(known);
        }
        Ok(Self::owned_in_scan(&self.scan(true)?, owner, true))
    }

    /// Release everything `owner` holds (DEL). Idempotent. With a valid hint this touches
    /// only the owner's files; otherwise it scans the directory (leases written by the
    /// reference, or already released).
    pub fn release_owner(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        let hinted = self.hinted(owner)?;
        let mut released = Vec::new();
        for ip in hinted.iter().filter_map(|(_, ip)| *ip) {
            if self.holder(ip)?.is_some_and(|h| h.is_held_by(owner)) && !released.contains(&ip) {
                self.unlink_lease(ip)?;
                released.push(ip);
            }
        }
        // Only a valid hint for every range set proves there is nothing else to find
        // (the ADD finished); otherwise look at every file, as the reference does.
        if released.len() < self.hint_slots {
            let scan = self.scan(true)?;
            let legacy_too = released.is_empty();
            for ip in Self::owned_in_scan(&scan, owner, legacy_too) {
                self.unlink_lease(ip)?;
                released.push(ip);
            }
        }
        for (name, _) in &hinted {
            self.unlink_hint(name);
        }
        Ok(released)
    }

    fn unlink_lease(&self, ip: IpAddr) -> Result<()> {
        let name = ip.to_string();
        match unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_err(format!("removing {}", self.name_path(&name)), e)),
        }
    }

    /// Release every reservation whose holder is not in `valid` (GC). A legacy ID-only file
    /// stays when any valid attachment has that container ID. Never touches `lock`,
    /// `last_reserved_ip.*`, or anything that is not a regular file; carries on past errors
    /// and reports them together.
    pub fn gc(&mut self, valid: &[Attachment]) -> Result<GcReport> {
        let owners: HashSet<Owner> = valid
            .iter()
            .map(|a| Owner::new(a.container_id.trim(), a.ifname.clone()))
            .collect();
        let ids: HashSet<&str> = valid.iter().map(|a| a.container_id.trim()).collect();
        // An attachment without an ifname (not what libcni sends, but seen from hand-made
        // requests) keeps every lease of its container rather than none.
        let any_ifname: HashSet<&str> = valid
            .iter()
            .filter(|a| a.ifname.is_empty())
            .map(|a| a.container_id.trim())
            .collect();
        let mut report = GcReport::default();
        let mut errors = Vec::new();
        for lease in self.scan(true)? {
            if !lease.regular {
                report.skipped.push(lease.ip);
                continue;
            }
            let keep = match &lease.holder {
                Holder::Owner(o) => {
                    owners.contains(o) || any_ifname.contains(o.container_id.as_str())
                }
                Holder::LegacyId(id) => ids.contains(id.as_str()),
                Holder::Unknown => false,
            };
            if !keep {
                match self.unlink_lease(lease.ip) {
                    Ok(()) => report.released.push(lease.ip),
                    Err(e) => errors.push(e.msg),
                }
            }
        }
        // Hints of owners that are gone, and temp files of crashed runs.
        let valid_hint_prefixes: HashSet<String> = owners.iter().map(Self::hint_prefix).collect();
        if let Ok(Some(hints)) = self.hint_dir(false) {
            let hints_path = PathBuf::from(format!("/proc/self/fd/{}", hints.as_raw_fd()));
            if let Ok(listing) = std::fs::read_dir(hints_path) {
                for entry in listing.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let prefix = name.split('.').next().unwrap_or("");
                    if !valid_hint_prefixes.contains(prefix)
                        && !name.starts_with(LAST_RESERVED_PREFIX)
                    {
                        if let Err(e) = unlinkat(hints, name, UnlinkatFlags::NoRemoveDir) {
                            errors.push(format!("removing hint {name}: {}", e.desc()));
                        }
                    }
                }
            }
        }
        if let Ok(listing) = std::fs::read_dir(format!("/proc/self/fd/{}", self.dir.as_raw_fd())) {
            for entry in listing.flatten() {
                let name = entry.file_name();
                if let Some(name) = name.to_str().filter(|n| n.starts_with(TMP_PREFIX)) {
                    let _ = unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir);
                }
            }
        }
        if errors.is_empty() {
            Ok(report)
        } else {
            Err(Error::new(
                code::IO,
                format!(
                    "GC of {} released {} reservation(s) but failed on {}",
                    self.path.display(),
                    report.released.len(),
                    errors.len()
                ),
            )
            .with_details(errors.join("; ")))
        }
    }

    /// The range sets that have no allocatable address left (STATUS). Counts names only.
    pub fn exhausted_sets<'a>(&self, sets: &'a [RangeSet]) -> Result<Vec<&'a RangeSet>> {
        let scan = self.scan(false)?;
        Ok(sets
            .iter()
            .filter(|set| {
                let used = scan
                    .iter()
                    .filter(|l| set.range_for(l.ip).is_some_and(|r| r.is_allocatable(l.ip)))
                    .count() as u128;
                used >= set.capacity()
            })
            .collect())
    }
}

impl Store for DiskStore {
    fn reserve(&mut self, ip: IpAddr, owner: &Owner, slot: usize) -> Result<bool> {
        let name = ip.to_string();
        let contents = owner.lease_contents();
        let mut spare = match self.spare.take() {
            Some(sp) if sp.contents == contents && sp.slot == slot => sp,
            other => {
                if let Some(old) = other {
                    self.discard_spare(old);
                }
                match self.tmpfile_with(contents.as_bytes())? {
                    Some(fd) => Spare {
                        contents,
                        slot,
                        fd,
                        hint: None,
                    },
                    None => return self.create_via_named_temp(&name, contents.as_bytes()),
                }
            }
        };
        // The hint is in place *before* the lease gets its name: a lease made by ferry is
        // never without its hint, even when we are killed right after linking it (the
        // xattr already names this candidate; a hint whose address's file is another inode
        // is simply ignored).
        if self.xattr_hints {
            if set_ip_xattr(&spare.fd, &name).is_err() {
                self.xattr_hints = false;
            } else if spare.hint.is_none() {
                let hint = Self::hint_name(owner, slot);
                if self.link_fd_as_hint(&spare.fd, &hint).is_ok() {
                    spare.hint = Some(hint);
                }
            }
        }
        match self.link_tmpfile(&spare.fd, &name) {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.spare = Some(spare);
                Ok(false)
            }
            Err(Errno::ENOENT) => {
                // No /proc: fall back to a named temp file from now on.
                self.discard_spare(spare);
                self.tmpfile_supported = false;
                self.create_via_named_temp(&name, owner.lease_contents().as_bytes())
            }
            Err(e) => {
                self.discard_spare(spare);
                Err(io_err(format!("creating {}", self.name_path(&name)), e))
            }
        }
    }

    fn release(&mut self, ip: IpAddr, owner: &Owner) -> Result<()> {
        if self.holder(ip)?.is_some_and(|h| h.is_held_by(owner)) {
            for (name, hinted_ip) in self.hinted(owner)? {
                if hinted_ip == Some(ip) {
                    self.unlink_hint(&name);
                }
            }
            self.unlink_lease(ip)?;
        }
        Ok(())
    }

    fn holder(&mut self, ip: IpAddr) -> Result<Option<Holder>> {
        Ok(match self.read_entry(&ip.to_string())? {
            Entry::Absent => None,
            Entry::NotRegular => Some(Holder::Unknown),
            Entry::Contents(bytes) => Some(Holder::parse(&bytes)),
        })
    }

    fn last_reserved(&mut self, set_index: usize) -> Option<IpAddr> {
        let name = format!("{LAST_RESERVED_PREFIX}{set_index}");
        let Ok(Entry::Contents(bytes)) = self.read_entry(&name) else {
            return None;
        };
        // A file torn by a crashed reference write only costs round-robin order once.
        std::str::from_utf8(&bytes)
            .ok()?
            .trim()
            .parse()
            .ok()
            .map(canonical)
    }

    fn set_last_reserved(&mut self, set_index: usize, ip: IpAddr) -> Result<()> {
        let name = format!("{LAST_RESERVED_PREFIX}{set_index}");
        let contents = ip.to_string();
        if self.exchange_cursor(&name, contents.as_bytes()).is_ok() {
            return Ok(());
        }
        self.replace_file(&name, contents.as_bytes())
    }

    fn known_leases_of(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for (_, ip) in self.hinted(owner)? {
            if let Some(ip) = ip {
                if self.holder(ip)?.is_some_and(|h| h.is_held_by(owner)) && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        Ok(out)
    }
}

impl Drop for DiskStore {
    /// An exhausted range leaves an unused unnamed file whose hint must not outlive it.
    /// Runs before the lock field is dropped, so still under the lock.
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            self.discard_spare(spare);
        }
    }
}

impl AsFd for DiskStore {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// renameat2(RENAME_EXCHANGE): swaps two names atomically. A raw system call, because the C
/// libraries differ in whether they wrap it (glibc does, musl does not).
fn rename_exchange<P1: ?Sized + NixPath, P2: ?Sized + NixPath>(
    from_dir: &impl AsFd,
    from: &P1,
    to_dir: &impl AsFd,
    to: &P2,
) -> nix::Result<()> {
    /// `RENAME_EXCHANGE` (linux/fs.h).
    const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
    let rc = from.with_nix_path(|from| {
        to.with_nix_path(|to| {
            // SAFETY: both paths are NUL-terminated and live across the call; the fds are
            // borrowed from live owners.
            unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    from_dir.as_fd().as_raw_fd(),
                    from.as_ptr(),
                    to_dir.as_fd().as_raw_fd(),
                    to.as_ptr(),
                    RENAME_EXCHANGE,
                )
            }
        })
    })??;
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reserve_is_exclusive_and_writes_the_reference_format() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(tmp.path(), "fhlunit", 1).unwrap();
        let o = Owner::new("c1", "eth0");
        assert!(s.reserve(ip("10.213.64.2"), &o, 0).unwrap());
        assert!(!s
            .reserve(ip("10.213.64.2"), &Owner::new("c2", "eth0"), 0)
            .unwrap());
        let content = std::fs::read(tmp.path().join("fhlunit/10.213.64.2")).unwrap();
        assert_eq!(content, b"c1\r\neth0");
        assert_eq!(
            s.holder(ip("10.213.64.2")).unwrap(),
            Some(Holder::Owner(o.clone()))
        );
        drop(s);
        assert_eq!(
            names(&tmp.path().join("fhlunit")),
            [".ferry-owners", "10.213.64.2", "lock"]
        );
        // c1's hint was in place before its lease; c2's, made for an address it lost, is
        // gone with the store.
        assert_eq!(
            names(&tmp.path().join("fhlunit/.ferry-owners")),
            [DiskStore::hint_name(&o, 0)]
        );
    }

    #[test]
    fn named_temp_fallback_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(tmp.path(), "fhlunit", 1).unwrap();
        s.tmpfile_supported = false;
        let o = Owner::new("c1", "eth0");
        assert!(s.reserve(ip("fd00:213:64::2"), &o, 0).unwrap());
        assert!(!s.reserve(ip("fd00:213:64::2"), &o, 0).unwrap());
        s.set_last_reserved(0, ip("fd00:213:64::2")).unwrap();
        assert_eq!(s.last_reserved(0), Some(ip("fd00:213:64::2")));
        assert_eq!(
            names(&tmp.path().join("fhlunit")),
            [
                ".ferry-owners",
                "fd00:213:64::2",
                "last_reserved_ip.0",
                "lock"
            ]
        );
        // Updating the cursor again swaps with the spare: still no temp file anywhere.
        s.set_last_reserved(0, ip("fd00:213:64::3")).unwrap();
        assert_eq!(s.last_reserved(0), Some(ip("fd00:213:64::3")));
        assert_eq!(
            names(&tmp.path().join("fhlunit/.ferry-owners")),
            ["last_reserved_ip.0"]
        );
    }

    #[test]
    fn hints_find_leases_and_are_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(tmp.path(), "fhlunit", 2).unwrap();
        let o = Owner::new("c1", "eth0");
        s.reserve(ip("10.213.64.2"), &o, 0).unwrap();
        s.reserve(ip("fd00:213:64::2"), &o, 1).unwrap();
        s.record_hints(&o, &[(0, ip("10.213.64.2")), (1, ip("fd00:213:64::2"))]);
        assert_eq!(
            s.known_leases_of(&o).unwrap(),
            [ip("10.213.64.2"), ip("fd00:213:64::2")]
        );
        // A lease taken over by someone else (reference DEL + ADD) is not trusted.
        std::fs::write(tmp.path().join("fhlunit/10.213.64.2"), "c9\r\neth0").unwrap();
        assert_eq!(s.known_leases_of(&o).unwrap(), [ip("fd00:213:64::2")]);
        assert_eq!(s.release_owner(&o).unwrap(), [ip("fd00:213:64::2")]);
        assert!(tmp.path().join("fhlunit/10.213.64.2").exists());
        assert_eq!(names(&tmp.path().join("fhlunit/.ferry-owners")).len(), 0);
    }

    #[test]
    fn symlink_hints_work_where_xattrs_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(tmp.path(), "fhlunit", 1).unwrap();
        s.xattr_hints = false;
        let o = Owner::new("c1", "eth0");
        s.reserve(ip("10.213.64.2"), &o, 0).unwrap();
        s.record_hints(&o, &[(0, ip("10.213.64.2"))]);
        let hint = tmp
            .path()
            .join("fhlunit/.ferry-owners")
            .join(DiskStore::hint_name(&o, 0));
        assert!(std::fs::symlink_metadata(&hint)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(s.known_leases_of(&o).unwrap(), [ip("10.213.64.2")]);
        assert_eq!(s.release_owner(&o).unwrap(), [ip("10.213.64.2")]);
        assert!(std::fs::symlink_metadata(&hint).is_err());
    }

    #[test]
    fn cursor_update_falls_back_to_rename_when_the_spare_is_not_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(tmp.path(), "fhlunit", 1).unwrap();
        s.set_last_reserved(0, ip("10.213.64.2")).unwrap();
        let spare = tmp.path().join("fhlunit/.ferry-owners/last_reserved_ip.0");
        let _ = std::fs::remove_file(&spare);
        nix::unistd::mkfifo(&spare, Mode::from_bits_truncate(0o644)).unwrap();
        s.set_last_reserved(0, ip("10.213.64.3")).unwrap();
        assert_eq!(s.last_reserved(0), Some(ip("10.213.64.3")));
        assert_eq!(
            names(&tmp.path().join("fhlunit")),
            [".ferry-owners", "last_reserved_ip.0", "lock"]
        );
    }

    #[test]
    fn release_without_hint_scans_with_the_reference_two_passes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(tmp.path(), "fhlunit", 1).unwrap();
        let dir = tmp.path().join("fhlunit");
        std::fs::write(dir.join("10.213.64.5"), "c1\r\neth0").unwrap();
        std::fs::write(dir.join("10.213.64.6"), "c1").unwrap();
        std::fs::write(dir.join("10.213.64.7"), "c1\r\neth1").unwrap();
        let o = Owner::new("c1", "eth0");
        assert_eq!(s.release_owner(&o).unwrap(), [ip("10.213.64.5")]);
        // Second pass: only the ID-only file remains for eth0.
        assert_eq!(s.release_owner(&o).unwrap(), [ip("10.213.64.6")]);
        assert!(s.release_owner(&o).unwrap().is_empty());
        assert!(dir.join("10.213.64.7").exists());
    }

    #[test]
    fn status_counts_only_allocatable_addresses() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = crate::range::RangeSpec {
            subnet: Some("10.213.64.0/30".into()),
            ..Default::default()
        };
        let sets = [RangeSet::from_specs(&[spec], "s").unwrap()];
        let mut s = DiskStore::open(tmp.path(), "fhlunit", 1).unwrap();
        assert!(s.exhausted_sets(&sets).unwrap().is_empty());
        s.reserve(ip("10.213.64.2"), &Owner::new("c1", "eth0"), 0)
            .unwrap();
        assert_eq!(s.exhausted_sets(&sets).unwrap().len(), 1);
    }
}
