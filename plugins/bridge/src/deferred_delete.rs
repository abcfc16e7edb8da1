//! DEL without waiting for the kernel's slowest part of deleting a veth.
//!
//! Deleting a network device (RTM_DELLINK) does its visible work under the RTNL lock —
//! the pair leaves the device lists (both names are free again), its addresses and routes
//! go, listeners get the RTM_DELLINK notification — and then, after the lock is released,
//! the request waits in `netdev_run_todo` for RCU callbacks (`rcu_barrier`) and the last
//! references before it frees the devices and returns: 10–30 ms for a veth, most of what a
//! DEL used to cost. Nothing a runtime does next depends on that wait.
//!
//! So DEL hands the delete of the pair — by its container end, identified by ifindex and
//! checked by name and kind, in the container's namespace — to a detached process:
//! `/proc/self/exe` started again with [`HANDOFF_ENV`] set, the namespace as its stdin (an
//! open descriptor: it pins that namespace, whatever happens to the path), stdout/stderr on
//! /dev/null, in its own session, never waited for (the runtime's stdout pipe closes as
//! soon as `bridge` exits). DEL itself waits only until the container end has left the
//! device list, which the kernel does before the slow part (a few milliseconds), so when
//! DEL returns no dump shows either end, the container's ifname can be used by the next ADD
//! at once, and the IP is released: to a runtime nothing differs from a synchronous delete.
//! The detached process sits out the kernel's wait and exits some 10–30 ms later. If the
//! hand-off cannot be done (spawn fails, the interface is not a veth, or it is still listed
//! after [`UNLIST_WAIT`]) DEL deletes the link itself, as before. A DEL killed after the
//! hand-off leaves nothing: the detached process does not depend on it.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netops::{LinkKind, Netlink, Netns};

/// Environment variable that turns a `bridge` process into the veth deleter:
/// `<ifindex>:<name>` of the link in the network namespace open on its stdin. Set only by
/// [`hand_off`]; a `bridge` started with it does nothing else.
pub const HANDOFF_ENV: &str = "FERRY_BRIDGE_DELETE_VETH";

/// How long DEL waits for the link to leave the device list before it deletes it itself
/// (normally a few milliseconds; generous for a loaded host).
pub const UNLIST_WAIT: Duration = Duration::from_secs(2);

/// The value of [`HANDOFF_ENV`] for veth `index` named `name`.
fn handoff_value(index: u32, name: &str) -> String {
    format!("{index}:{name}")
}

fn parse_handoff(value: &str) -> Option<(u32, &str)> {
    let (index, name) = value.split_once(':')?;
    let index = index.parse().ok().filter(|i| *i > 0)?;
    (!name.is_empty() && name.len() <= 15).then_some((index, name))
}

/// In the deleter process (started by [`hand_off`]): deletes the veth if it is still the
/// one named, in the namespace open on stdin, then exits. Returns (and the process goes on
/// as a plugin) only when [`HANDOFF_ENV`] is not set.
pub fn serve_if_requested() {
    let Some(value) = std::env::var_os(HANDOFF_ENV) else {
        return;
    };
    // Our own session, so nothing aimed at the runtime's process group or terminal reaches
    // us. Done here rather than between fork and exec so the spawn can use posix_spawn
    // (vfork-like), which costs DEL less than a fork of the whole process.
    // SAFETY: setsid takes no arguments and touches no memory.
    unsafe { libc::setsid() };
    // Descriptors the runtime let its plugin inherit (anything but stdio) must not stay
    // open for as long as the kernel makes us wait: close all but our stdin (namespace),
    // stdout and stderr (/dev/null).
    // SAFETY: close_range only closes descriptors of this process; none is in use yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if let Some((index, name)) = value.to_str().and_then(parse_handoff) {
        // Anything but a namespace on stdin, a link that is gone, or one that is no longer
        // our veth (the index was reused): nothing to do.
        let nl = Netns::open("/proc/self/fd/0").and_then(|ns| Netlink::in_netns(&ns));
        if let Ok(nl) = nl {
            if let Ok(Some(link)) = nl.link_by_index(index) {
                if link.name == name && link.kind == LinkKind::Veth {
                    let _ = nl.del_link(index);
                }
            }
        }
    }
    std::process::exit(0)
}

/// Starts the detached deleter for veth `index`/`name` in `ns`. Ok once it runs; the
/// caller deletes synchronously when this fails.
fn hand_off(ns: &Netns, index: u32, name: &str) -> std::io::Result<()> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("bridge")
        .env_clear()
        .env(HANDOFF_ENV, handoff_value(index, name))
        .stdin(Stdio::from(ns.try_clone_fd()?))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The child is not waited for: it outlives us and is reaped by init (or the runtime's
    // subreaper) like any orphan.
    cmd.spawn().map(drop)
}

/// A removal of the container interface that has been started: the deleter runs (or
/// could not be started); [`Removal::finish`] waits for the result. Lets DEL do its other
/// work (IPAM) while the deleter starts up.
pub struct Removal<'a> {
    cont: &'a Netlink,
    index: u32,
    name: String,
    handed_off: bool,
}

/// Starts removing the container interface `ifname` of `ns` (reached through `cont`) and
/// with it its peer (see the module docs). None when there is no such interface.
pub fn begin_removal<'a>(
    ns: &Netns,
    cont: &'a Netlink,
    ifname: &str,
) -> netops::Result<Option<Removal<'a>>> {
    let Some(link) = cont.link_by_name(ifname)? else {
        return Ok(None);
    };
    let handed_off = link.kind == LinkKind::Veth && hand_off(ns, link.index, &link.name).is_ok();
    Ok(Some(Removal {
        cont,
        index: link.index,
        name: link.name,
        handed_off,
    }))
}

impl Removal<'_> {
    /// Returns once the interface is no longer listed: the deleter's work, or, when it was
    /// not started or did not get there in [`UNLIST_WAIT`], a delete done here.
    pub fn finish(self) -> netops::Result<()> {
        if self.handed_off && wait_unlisted(self.cont, self.index, &self.name, UNLIST_WAIT) {
            return Ok(());
        }
        self.cont.del_link(self.index).map(|_| ())
    }
}

/// Polls until link `index` named `name` is no longer listed; false on timeout or when
/// the kernel cannot be asked.
fn wait_unlisted(nl: &Netlink, index: u32, name: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match nl.link_by_index(index) {
            Ok(None) => return true,
            Ok(Some(l)) if l.name != name => return true, // the index was reused
            Ok(Some(_)) => {}
            Err(_) => return false,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_value_round_trips_and_rejects_junk() {
        assert_eq!(
            parse_handoff(&handoff_value(42, "veth1a2b3c4d")),
            Some((42, "veth1a2b3c4d"))
        );
        assert_eq!(parse_handoff("0:veth0"), None);
        assert_eq!(parse_handoff("x:veth0"), None);
        assert_eq!(parse_handoff("7:"), None);
        assert_eq!(parse_handoff("7:name-longer-than-15"), None);
        assert_eq!(parse_handoff("7"), None);
    }
}
