//! Helpers shared by the integration tests: root check, unique ports from the proxy's test
//! range, echo backends, spawning the binary the way dockerd does, network namespaces.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails loudly when not root (the brief: never skip).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "ferry-proxy integration tests need root (namespaces, fd passing, rlimits)"
    );
}

/// Hands out host ports from `[base, base+400)`; each test binary has its own base inside
/// the proxy's range 23000–24999, and ports that are busy are skipped.
pub struct PortPool {
    base: u16,
    next: AtomicU16,
}

impl PortPool {
    pub const fn new(base: u16) -> Self {
        PortPool {
            base,
            next: AtomicU16::new(0),
        }
    }

    /// A port free for both TCP and UDP on 127.0.0.1, ::1 and the wildcards.
    pub fn take(&self) -> u16 {
        loop {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            assert!(
                n < 400,
                "test port pool starting at {} exhausted",
                self.base
            );
            let port = self.base + n;
            let free = TcpListener::bind(("0.0.0.0", port)).is_ok()
                && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok();
            if free {
                return port;
            }
        }
    }

    /// `count` consecutive free ports; returns the first.
    pub fn take_range(&self, count: u16) -> u16 {
        'outer: loop {
            let n = self.next.fetch_add(count, Ordering::SeqCst);
            assert!(n + count <= 400, "test port pool exhausted");
            for p in self.base + n..self.base + n + count {
                if TcpListener::bind(("0.0.0.0", p)).is_err() {
                    continue 'outer;
                }
            }
            return self.base + n;
        }
    }
}

/// A TCP echo server on `addr` (port 0 for any); echoes until EOF, then closes.
pub fn tcp_echo(addr: &str) -> SocketAddr {
    serve_echo(TcpListener::bind(addr).unwrap())
}

/// Echoes on every stream `listener` accepts (TCP, or SCTP through the same type) until
/// EOF, then closes it; returns the listener's address.
fn serve_echo(listener: TcpListener) -> SocketAddr {
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    local
}

/// A UDP echo server on `addr`.
pub fn udp_echo(addr: &str) -> SocketAddr {
    let socket = std::net::UdpSocket::bind(addr).unwrap();
    let local = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    local
}

/// Sends `msg`, reads the same number of bytes back.
pub fn echo_round_trip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn proxy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry-proxy")
}

/// A spawned proxy with the read end of its status pipe.
pub struct Spawned {
    pub child: Child,
    pub status: std::fs::File,
}

impl Spawned {
    /// Reads the status pipe to EOF (the proxy closes it after reporting).
    pub fn read_status(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.status.read_to_end(&mut out).unwrap();
        out
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for exit (at most 10 s) and returns the exit code.
    pub fn wait_code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("proxy did not exit within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Only the process this test started, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the binary like dockerd: stdin/stdout on /dev/null, a pipe on fd 3, and
/// optionally a bound socket on fd 4; `nofile` lowers RLIMIT_NOFILE in the child.
pub fn spawn_proxy(args: &[&str], listen_fd: Option<OwnedFd>, nofile: Option<u64>) -> Spawned {
    // CLOEXEC: tests spawn in parallel, and a write end leaking into another child would
    // keep that pipe open (the reader would never see EOF).
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let write_raw = write_end.as_raw_fd();
    let listen_raw = listen_fd.as_ref().map(|f| f.as_raw_fd());
    let mut cmd = Command::new(proxy_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe calls (dup2, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move both out of the way first: either may itself be numbered 3 or 4, and a
            // dup2 onto it would destroy the other.
            let status = libc::fcntl(write_raw, libc::F_DUPFD_CLOEXEC, 100);
            let listen = listen_raw.map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100));
            if status < 0 || listen.is_some_and(|fd| fd < 0) {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(status, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = listen {
                if libc::dup2(fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(n) = nofile {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(write_end);
    drop(listen_fd);
    Spawned {
        child,
        status: std::fs::File::from(read_end),
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit (tests open thousands of sockets).
pub fn raise_nofile(to: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < to {
            let want = libc::rlimit {
                rlim_cur: to,
                rlim_max: lim.rlim_max.max(to),
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &want), 0);
        }
    }
}

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace `fpx<tag><n>` joined to the host by a veth pair, with
/// 10.213.48.x/30 and fd00:213:48:x::/64 on the link. Deleted on drop, even on panic.
pub struct Netns {
    pub name: String,
    pub host_link: String,
    pub host_v4: std::net::Ipv4Addr,
    pub ns_v4: std::net::Ipv4Addr,
    pub ns_v6: std::net::Ipv6Addr,
}

impl Netns {
    /// `slot` (0–63) picks the /30 and must be unique per test in the whole suite.
    pub fn new(tag: &str, slot: u8) -> Netns {
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 10000;
        let name = format!("fpx{tag}{pid}{n}");
        let host_link = format!("fpxh{slot}p{}", pid % 1000);
        let ns_link = format!("fpxc{slot}p{}", pid % 1000);
        assert!(host_link.len() <= 15 && ns_link.len() <= 15);
        let host_v4 = std::net::Ipv4Addr::new(10, 213, 48, slot * 4 + 1);
        let ns_v4 = std::net::Ipv4Addr::new(10, 213, 48, slot * 4 + 2);
        let ns_v6: std::net::Ipv6Addr = format!("fd00:213:48:{slot:x}::2").parse().unwrap();
        let guard = Netns {
            name: name.clone(),
            host_link: host_link.clone(),
            host_v4,
            ns_v4,
            ns_v6,
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &ns_link,
        ]);
        ip(&["link", "set", &ns_link, "netns", &name]);
        ip(&["addr", "add", &format!("{host_v4}/30"), "dev", &host_link]);
        ip(&[
            "addr",
            "add",
            &format!("fd00:213:48:{slot:x}::1/64"),
            "dev",
            &host_link,
            "nodad",
        ]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_v4}/30"),
            "dev",
            &ns_link,
        ]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_v6}/64"),
            "dev",
            &ns_link,
            "nodad",
        ]);
        ip(&["-n", &name, "link", "set", &ns_link, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        guard
    }

    /// Runs `f` on a new thread that has entered the namespace (setns affects only that
    /// thread); sockets it creates belong to the namespace for good.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Whether this kernel can make one-to-one SCTP sockets (CONFIG_IP_SCTP).
#[allow(dead_code)]
pub fn kernel_has_sctp() -> bool {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(libc::IPPROTO_SCTP)),
    )
    .is_ok()
}

/// Says loudly, in the test output, that the SCTP data path was not exercised. Written
/// straight to stderr: the test harness captures `eprintln!` of passing tests.
#[allow(dead_code)]
pub fn warn_sctp_untested(what: &str) {
    let msg = format!(
        "\n!!!!!!!! {what}: the SCTP DATA PATH WAS NOT EXERCISED: this kernel has no SCTP \
         (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails; CONFIG_IP_SCTP is off or the \
         module cannot be loaded). Only the refusal was tested. !!!!!!!!\n"
    );
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

/// An SCTP (one-to-one style) echo server on `addr`; echoes until EOF. Only where
/// [`kernel_has_sctp`].
#[allow(dead_code)]
pub fn sctp_echo(addr: &str) -> SocketAddr {
    let addr: SocketAddr = addr.parse().unwrap();
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(libc::IPPROTO_SCTP)),
    )
    .unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(64).unwrap();
    serve_echo(socket.into())
}

/// An SCTP client association to `addr` as a std stream.
#[allow(dead_code)]
pub fn sctp_connect(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(libc::IPPROTO_SCTP)),
    )
    .unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}
