//! Guards for everything the bench creates (network namespaces, processes), so each is
//! removed on every path — success, error, panic, or Ctrl-C (the signal only sets a flag;
//! loops stop at the next check and the guards drop as usual).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// Prefix of every namespace the bench creates (the bench's own prefix is `fbn`).
pub const NS_PREFIX: &str = "fbnb-";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag instead of killing the bench, so guards still clean up.
pub fn install_signal_flag() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Err once the user asked to stop.
pub fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Run a command to completion; its stdout, or an error with its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command inside a namespace (for setup only: `ip netns exec` start-up is not timed).
pub fn run_in(ns: &Netns, prog: &str, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["netns", "exec", ns.name.as_str(), prog];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// A network namespace the bench created; deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
    file: Option<File>,
    cookie: Option<u64>,
}

impl Netns {
    /// Create `fbnb-<suffix>` (removing a stale one of the same name), loopback up.
    pub fn create(suffix: &str) -> Result<Netns, String> {
        let name = format!("{NS_PREFIX}{suffix}");
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let mut ns = Netns {
            name,
            file: None,
            cookie: None,
        };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"])?;
        ns.file = Some(File::open(ns.path()).map_err(|e| format!("opening {}: {e}", ns.path()))?);
        let fd = ns.fd();
        ns.cookie = std::thread::spawn(move || {
            enter_thread_netns(fd).ok()?;
            netns_cookie()
        })
        .join()
        .ok()
        .flatten();
        Ok(ns)
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// An fd for setns (valid while the guard lives).
    pub fn fd(&self) -> RawFd {
        self.file.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1)
    }

    /// Forget this namespace's conntrack entries (only ours: the table is per namespace).
    pub fn flush_conntrack(&self) {
        let _ = run_in(self, "conntrack", &["-F"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.file = None;
        let _ = run("ip", &["netns", "del", &self.name]);
        // ferry portmap's per-namespace port index (tmpfs), keyed by the netns cookie.
        if let Some(c) = self.cookie {
            let _ = std::fs::remove_dir_all(format!("/run/ferry/portmap/ns-{c}"));
        }
    }
}

/// The calling thread's network namespace cookie (SO_NETNS_COOKIE).
fn netns_cookie() -> Option<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a fresh socket, a local u64 and its length; the fd is closed before return.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        libc::close(fd);
        (rc == 0).then_some(cookie)
    }
}

/// Remove namespaces a previous, killed run left behind (only the bench's own prefix).
pub fn sweep_stale_namespaces() {
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for line in list.lines() {
            if let Some(name) = line.split_whitespace().next() {
                if name.starts_with(NS_PREFIX) {
                    let _ = run("ip", &["netns", "del", name]);
                }
            }
        }
    }
}

/// Move the calling thread into a namespace (threads that act as clients or servers).
pub fn enter_thread_netns(fd: RawFd) -> Result<(), String> {
    // SAFETY: plain syscall on an fd owned by a live Netns guard.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A process the bench started; killed (by its PID) and reaped on drop.
pub struct Proc {
    handle: ProcHandle,
}

enum ProcHandle {
    Child(Child),
    Spawned(libc::pid_t),
}

impl Proc {
    /// Wraps a child started with `std::process::Command`.
    pub fn from_child(child: Child) -> Proc {
        Proc {
            handle: ProcHandle::Child(child),
        }
    }

    /// PID.
    pub fn pid(&self) -> u32 {
        match &self.handle {
            ProcHandle::Child(c) => c.id(),
            ProcHandle::Spawned(pid) => *pid as u32,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        match &mut self.handle {
            ProcHandle::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            ProcHandle::Spawned(pid) => {
                // SAFETY: our own child, not yet reaped, so the PID cannot be reused.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                    libc::waitpid(*pid, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// Starts `prog` inside the namespace `ns` the way dockerd starts docker-proxy: Go's
/// os/exec clones with CLONE_VM|CLONE_VFORK (no copy of the parent's page tables), puts
/// the ExtraFiles on fds 3.., and execs. glibc's posix_spawn does the same clone, so this
/// is posix_spawn from a thread that already entered `ns` (the child inherits the
/// thread's namespace); stdio on /dev/null, `fd3` (when given) on fd 3.
///
/// `then` runs on the same thread right after the spawn, given the instant just before
/// posix_spawn was called (vfork semantics: posix_spawn returns once the child has
/// exec'd), so a caller can time the child from its start without the thread's own
/// start-up in the figure. `fd3` is closed in this process before `then` runs.
pub fn spawn_like_dockerd<T: Send>(
    ns: RawFd,
    prog: &std::path::Path,
    args: &[&str],
    fd3: Option<std::os::fd::OwnedFd>,
    then: impl FnOnce(std::time::Instant) -> T + Send,
) -> Result<(Proc, T), String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(prog.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut owned = vec![path.clone()];
    for a in args {
        owned.push(CString::new(*a).map_err(|e| e.to_string())?);
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(Proc, T), String> {
                enter_thread_netns(ns)?;
                let mut argv: Vec<*mut libc::c_char> =
                    owned.iter().map(|a| a.as_ptr() as *mut _).collect();
                argv.push(std::ptr::null_mut());
                let envp: Vec<CString> = std::env::vars_os()
                    .filter_map(|(k, v)| {
                        let mut kv = k.as_bytes().to_vec();
                        kv.push(b'=');
                        kv.extend_from_slice(v.as_bytes());
                        CString::new(kv).ok()
                    })
                    .collect();
                let mut envp_ptrs: Vec<*mut libc::c_char> =
                    envp.iter().map(|e| e.as_ptr() as *mut _).collect();
                envp_ptrs.push(std::ptr::null_mut());
                let null = c"/dev/null";
                // SAFETY: file actions are initialised before use and destroyed after;
                // every pointer handed to posix_spawn lives until it returns.
                unsafe {
                    let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
                    libc::posix_spawn_file_actions_init(&mut actions);
                    libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        0,
                        null.as_ptr(),
                        libc::O_RDONLY,
                        0,
                    );
                    libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        1,
                        null.as_ptr(),
                        libc::O_WRONLY,
                        0,
                    );
                    libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        2,
                        null.as_ptr(),
                        libc::O_WRONLY,
                        0,
                    );
                    if let Some(fd) = &fd3 {
                        libc::posix_spawn_file_actions_adddup2(&mut actions, fd.as_raw_fd(), 3);
                    }
                    let mut pid: libc::pid_t = 0;
                    let start = std::time::Instant::now();
                    let rc = libc::posix_spawn(
                        &mut pid,
                        path.as_ptr(),
                        &actions,
                        std::ptr::null(),
                        argv.as_ptr(),
                        envp_ptrs.as_ptr(),
                    );
                    libc::posix_spawn_file_actions_destroy(&mut actions);
                    drop(fd3);
                    if rc != 0 {
                        return Err(format!(
                            "starting {}: {}",
                            prog.display(),
                            std::io::Error::from_raw_os_error(rc)
                        ));
                    }
                    let proc_ = Proc {
                        handle: ProcHandle::Spawned(pid),
                    };
                    let out = then(start);
                    Ok((proc_, out))
                }
            })
            .join()
            .map_err(|_| "spawning thread panicked".to_string())?
    })
}

/// Resident set size of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// Proportional set size in KiB (shared pages split between sharers).
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) of a process in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// The machine's CPU time counters (/proc/stat, all CPUs), to tell whether a run had CPU
/// left over: a proxy figure on a machine with no idle time is bound by the CPUs that
/// client, proxy and server share, not by the proxy's waiting.
#[derive(Clone, Copy)]
pub struct CpuTimes {
    idle: u64,
    steal: u64,
    total: u64,
}

impl CpuTimes {
    /// The counters now (zeros if /proc/stat cannot be read).
    pub fn now() -> CpuTimes {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        CpuTimes {
            // idle + iowait
            idle: at(3) + at(4),
            steal: at(7),
            // user..steal (guest time is already inside user)
            total: (0..8).map(at).sum(),
        }
    }

    /// Since `earlier`: the share of CPU time that was idle, and the share the hypervisor
    /// took (steal), each in percent.
    pub fn since(&self, earlier: &CpuTimes) -> (f64, f64) {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        (
            100.0 * self.idle.saturating_sub(earlier.idle) as f64 / total,
            100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total,
        )
    }
}

/// Raise our soft fd limit to the hard one (the idle-connection and 1,000-mapping figures
/// hold thousands of sockets; children inherit it).
pub fn raise_nofile() {
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Waits (up to 10 s) until no detached bridge veth deleter is running. ferry's bridge DEL
/// returns before the kernel has finished freeing the veth and leaves that wait to a
/// detached process; after a figure with many DELs those processes would otherwise still be
/// busy in the kernel while the next figure is measured, charging ferry's deferred cost to
/// whatever runs next (ferry or its anchor).
pub fn settle_deferred_deletes() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline && deferred_deleters() > 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Processes whose environment names a veth to delete (`FERRY_BRIDGE_DELETE_VETH`).
fn deferred_deleters() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|kv| kv.starts_with(b"FERRY_BRIDGE_DELETE_VETH="))
            })
        })
        .count()
}
