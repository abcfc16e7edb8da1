//! portmap's per-namespace port index, seen from code that creates throwaway namespaces.
//!
//! ferry's portmap keeps its index at `/run/ferry/portmap/ns-<netns cookie>/` (a tmpfs,
//! keyed by the namespace's `SO_NETNS_COOKIE`). A namespace that the harness or a test makes
//! and deletes would leave that directory behind, so every guard that deletes such a
//! namespace removes its index first.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where portmap keeps the index of the namespace with this cookie (portmap's own layout).
pub fn dir_for_cookie(cookie: u64) -> PathBuf {
    PathBuf::from(format!("/run/ferry/portmap/ns-{cookie}"))
}

/// The `SO_NETNS_COOKIE` of the namespace at `netns_path`; `None` when it cannot be read.
/// A short-lived thread enters the namespace only to open one socket, so no other code ever
/// runs in it.
pub fn cookie_of(netns_path: &Path) -> Option<u64> {
    let path = netns_path.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).ok()?;
        // SAFETY: setns/socket/getsockopt/close on fds we own, in a thread that exits next.
        unsafe {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return None;
            }
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                return None;
            }
            let mut cookie: u64 = 0;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            let r = libc::getsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            );
            libc::close(s);
            (r == 0).then_some(cookie)
        }
    })
    .join()
    .ok()
    .flatten()
}

/// Remove portmap's index of the namespace at `netns_path` (call before deleting the
/// namespace). Best effort: nothing to do when portmap never ran there.
pub fn remove_for(netns_path: &Path) {
    if let Some(c) = cookie_of(netns_path) {
        let _ = std::fs::remove_dir_all(dir_for_cookie(c));
    }
}
