//! Network namespaces, entered without process-wide races.
//!
//! `setns(2)` changes the namespace of the calling *thread* only. A thread that did it and
//! then went on with unrelated work (or went back to a pool) would do that work in the
//! container's namespace. So a thread is only ever in another namespace for the length of
//! one closure: [`Netns::run`] starts a fresh thread, enters the namespace there, runs the
//! closure and lets the thread end; [`Netns::run_here`] enters on the calling thread and
//! puts it back before returning — also when the closure panics — and aborts the process
//! if it cannot (the thread must never run another line in the wrong namespace). The usual
//! closure just opens a netlink socket: a socket stays bound to the namespace it was
//! created in, so everything after that is driven from the caller's thread through it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::{code, Error, Result};

/// An open handle on a network namespace (a file under /var/run/netns, /proc/<pid>/ns/net, …).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens the namespace at `path`. The error names the path, and says when it is
    /// missing (the most common cause: the runtime already deleted the namespace).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            let mut err = Error::new(
                code::NETNS,
                format!("failed to open netns {:?}: {e}", path.display().to_string()),
            );
            err.errno = e.raw_os_error();
            err
        })?;
        // Refuse ordinary files: entering one would fail later with a less clear message.
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| {
            Error::from_errno(code::NETNS, e as i32, format!("statfs {}", path.display()))
        })?;
        let nsfs = nix::sys::statfs::NSFS_MAGIC;
        let procfs = nix::sys::statfs::PROC_SUPER_MAGIC;
        if st.filesystem_type() != nsfs && st.filesystem_type() != procfs {
            // EINVAL marks "there is a file but no namespace behind it" (e.g. the runtime
            // unmounted the namespace and left the empty mount point), which DEL treats as
            // "namespace already gone".
            let mut err = Error::new(
                code::NETNS,
                format!(
                    "{:?} is not a network namespace",
                    path.display().to_string()
                ),
            );
            err.errno = Some(libc::EINVAL);
            return Err(err);
        }
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The namespace of this process (the host, for a plugin).
    pub fn current() -> Result<Self> {
        Self::open("/proc/self/ns/net")
    }

    /// The path the namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new descriptor for the namespace (close-on-exec), e.g. to hand it to a child
    /// process, which keeps the namespace pinned however its path changes.
    pub fn try_clone_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }

    /// The raw fd, e.g. for IFLA_NET_NS_FD when creating a link straight into it.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on the calling thread, entered into this namespace, and returns the thread
    /// to the namespace it was in before. Cheaper than [`Netns::run`] (no thread to start
    /// and schedule): for short closures that cannot block (socket creation, sysctl writes).
    /// The thread's namespace is restored by a drop guard, so also when `f` panics; if that
    /// restore fails the process aborts rather than run on in the wrong namespace.
    pub fn run_here<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R,
    {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| {
            Error::new(
                code::NETNS,
                format!("opening this thread's netns (/proc/thread-self/ns/net): {e}"),
            )
        })?;
        self.enter()?;
        let _back = ReturnTo(home);
        Ok(f())
    }

    /// Moves the calling thread into this namespace (callers arrange the way back).
    fn enter(&self) -> Result<()> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            Error::from_errno(
                code::NETNS,
                e as i32,
                format!("entering netns {}", self.path.display()),
            )
        })
    }

    /// Runs `f` on a dedicated, short-lived thread that has entered this namespace.
    ///
    /// The thread ends with `f`, so no thread of the process is ever left in the wrong
    /// namespace, whatever `f` does or however it fails.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| -> Result<R> {
                self.enter()?;
                Ok(f())
            });
            handle
                .join()
                .map_err(|_| Error::new(code::INTERNAL, "thread running in netns panicked"))?
        })
    }
}

/// Puts the current thread back into the namespace of the file it holds when dropped.
struct ReturnTo(File);

impl Drop for ReturnTo {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Unreachable in practice (we hold the fd of our own namespace); going on would
            // run host work inside a container, which is worse than dying.
            eprintln!("fatal: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}
