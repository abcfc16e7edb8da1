//! ferry-proxy daemon under load and abuse: 10,000 concurrent TCP connections, 100,000
//! distinct UDP sources (flow table and memory stay bounded), file-descriptor exhaustion
//! (excess refused, service continues and recovers), slow readers (memory stays bounded),
//! and a port that is deleted and re-added at once. Loopback only; host ports 27000–27999.

mod common;
mod reliability_common;

use reliability_common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Raises this process's RLIMIT_NOFILE to `n`, or as far as the hard limit allows when the
/// process may not raise that (no CAP_SYS_RESOURCE); returns the soft limit now in force.
fn raise_nofile(n: u64) -> u64 {
    let want = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: getrlimit/setrlimit with valid structs.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return n;
        }
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur), 0);
        cur.rlim_cur = cur.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &cur), 0);
        cur.rlim_cur
    }
}

fn add_mapping(d: &ProxyDaemon, id: &str, proto: &str, host_port: u16, backend: SocketAddr) {
    let body = json!({"id": id, "owner": "frl-load", "proto": proto, "hostIP": "127.0.0.1",
        "hostPort": host_port, "containerIP": backend.ip().to_string(), "containerPort": backend.port()})
    .to_string();
    let mut last = (0, String::new());
    // A port this suite used a moment ago may still be held briefly: retry, then say who.
    let ok = wait_until(Duration::from_secs(5), || {
        let (s, b) = http(&d.socket, "POST", "/v1/mappings", Some(&body)).expect("API");
        last = (s, b);
        s == 201 || s == 200
    });
    if !ok {
        let ss = std::process::Command::new("ss")
            .args(["-tuanp"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let holders: Vec<&str> = ss
            .lines()
            .filter(|l| l.contains(&format!(":{host_port} ")))
            .collect();
        panic!(
            "add {id}: {} {}; sockets on port {host_port}: {holders:?}",
            last.0, last.1
        );
    }
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// A backend that accepts and keeps every connection (not reading), and can answer probes.
struct HoldingBackend {
    addr: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicU64>,
}

impl HoldingBackend {
    fn start() -> HoldingBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // A deep accept queue (std's is 128), so bursts of proxied connects are not dropped.
        // SAFETY: listen(2) again on our listening socket only changes its backlog.
        unsafe {
            libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 4096);
        }
        let addr = l.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicU64::new(0));
        let (h, a) = (held.clone(), accepted.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(true).unwrap();
                h.lock().unwrap().push(s);
                a.fetch_add(1, Ordering::SeqCst);
            }
        });
        HoldingBackend {
            addr,
            held,
            accepted,
        }
    }
    /// One pass over every held connection: echo whatever arrived.
    fn echo_pass(&self) {
        let mut buf = [0u8; 256];
        for s in self.held.lock().unwrap().iter_mut() {
            if let Ok(n) = s.read(&mut buf) {
                if n > 0 {
                    let _ = s.write_all(&buf[..n]);
                }
            }
        }
    }
    /// One pass as a server does it: a connection whose client finished (EOF, passed on by
    /// the proxy as a half-close) is closed; the others stay held.
    fn close_finished_pass(&self) {
        let mut buf = [0u8; 256];
        self.held
            .lock()
            .unwrap()
            .retain_mut(|s| !matches!(s.read(&mut buf), Ok(0)));
    }
}

#[test]
fn ten_thousand_concurrent_tcp_connections_are_all_forwarded() {
    require_root();
    let wanted = knob("FERRY_RELIABILITY_TCP_CONNS", 10_000) as usize;
    // The test holds both ends (client and backend), the daemon two sockets and a pipe per
    // connection;
    // without CAP_SYS_RESOURCE the hard limit caps how many fit.
    // (It splices through a pipe, so that is four descriptors per connection.)
    // Where the hard limit does not allow that, copy through user space (two per connection).
    let limit = raise_nofile((4 * wanted + 4096) as u64) as usize;
    let splice = limit >= 4 * wanted + 512;
    let n = if splice {
        wanted
    } else {
        wanted.min((limit - 512) / 2)
    };
    if n < wanted {
        eprintln!("proxy 10k: RLIMIT_NOFILE hard limit {limit} (no CAP_SYS_RESOURCE): {n} connections instead of {wanted}");
    }
    if !splice {
        eprintln!("proxy 10k: RLIMIT_NOFILE hard limit {limit}: --no-splice (a pipe per connection does not fit)");
    }
    let dir = tempdir("px10k");
    let backend = HoldingBackend::start();
    let d = ProxyDaemon::start(dir.path(), if splice { &[] } else { &["--no-splice"] });
    let port = 27010;
    add_mapping(&d, "frl-10k", "tcp", port, backend.addr);
    let rss_before = d.rss_kib();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        ) {
            Ok(s) => clients.push(s),
            Err(e) => panic!("connection {i} of {n} failed: {e}"),
        }
    }
    let connected = started.elapsed();
    assert!(
        wait_until(
            Duration::from_secs(60),
            || backend.accepted.load(Ordering::SeqCst) as usize >= n
        ),
        "only {} of {n} connections reached the backend; daemon: active {:?}, total {:?}, refused {:?}, errors {:?}, fds {}",
        backend.accepted.load(Ordering::SeqCst),
        d.metric("ferry_proxy_connections_active"),
        d.metric("ferry_proxy_connections_total"),
        d.metric("ferry_proxy_connections_refused_total"),
        d.metric("ferry_proxy_errors_total"),
        open_fds(d.pid())
    );
    let active = d.metric("ferry_proxy_connections_active").unwrap_or(-1.0);
    let fds = open_fds(d.pid());
    let rss = d.rss_kib();
    // Every connection carries data both ways: probe a spread of them.
    let probes: Vec<usize> = (0..n).step_by((n / 200).max(1)).collect();
    for &i in &probes {
        clients[i].write_all(format!("p{i:06}").as_bytes()).unwrap();
        clients[i]
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    let mut answered = 0;
    let end = Instant::now() + Duration::from_secs(30);
    let mut pending: Vec<usize> = probes.clone();
    while !pending.is_empty() && Instant::now() < end {
        backend.echo_pass();
        pending.retain(|&i| {
            clients[i].set_nonblocking(true).unwrap();
            let mut b = [0u8; 7];
            let done =
                matches!(clients[i].read(&mut b), Ok(7) if b == *format!("p{i:06}").as_bytes());
            if done {
                answered += 1;
            }
            !done
        });
    }
    assert!(
        pending.is_empty(),
        "{} probe connections got no echo: {pending:?}",
        pending.len()
    );
    eprintln!(
        "proxy 10k: {n} concurrent connections (connected in {connected:?}); active metric {active}, daemon fds {fds}, RSS {rss_before} -> {rss} KiB; {answered} probes echoed"
    );
    assert!(active >= n as f64, "connections_active {active} < {n}");
    // Both sides close: the proxy must let go of every connection.
    drop(clients);
    backend.held.lock().unwrap().clear();
    assert!(
        wait_until(Duration::from_secs(30), || d
            .metric("ferry_proxy_connections_active")
            == Some(0.0)),
        "connections not released: active {:?}",
        d.metric("ferry_proxy_connections_active")
    );
    assert!(
        wait_until(Duration::from_secs(10), || open_fds(d.pid()) < 100),
        "daemon still holds {} fds after every client left",
        open_fds(d.pid())
    );
}

#[test]
fn one_hundred_thousand_udp_sources_keep_the_flow_table_and_memory_bounded() {
    require_root();
    let sources = knob("FERRY_RELIABILITY_UDP_SOURCES", 100_000);
    let max_flows = 1024u64;
    let dir = tempdir("pxudp");
    // Backend: counts datagrams, echoes those starting with "echo".
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let baddr = backend.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (received, stop) = (received.clone(), stop.clone());
        backend
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = backend.recv_from(&mut buf) {
                    received.fetch_add(1, Ordering::SeqCst);
                    if buf[..n].starts_with(b"echo") {
                        let _ = backend.send_to(&buf[..n], from);
                    }
                }
            }
        });
    }
    let d = ProxyDaemon::start(dir.path(), &["--udp-max-flows", &max_flows.to_string()]);
    let port = 27020;
    add_mapping(&d, "frl-udp", "udp", port, baddr);
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let rss_before = d.rss_kib();
    let started = Instant::now();
    let budget = Duration::from_secs(knob("FERRY_RELIABILITY_UDP_SECS", 25));
    let (mut sent, mut max_fds, mut max_active) = (0u64, 0usize, 0f64);
    // Distinct sources: one socket per 127.a.b.c address (loopback's /8).
    while sent < sources && started.elapsed() < budget {
        for _ in 0..200 {
            let i = sent;
            let ip = std::net::Ipv4Addr::new(
                127,
                1 + (i / 62_500) as u8,
                ((i / 250) % 250) as u8,
                (i % 250) as u8 + 1,
            );
            let s = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
            let _ = s.send_to(b"x", target);
            sent += 1;
        }
        // Pace on the backend so datagrams are not just dropped by full socket buffers: go on
        // when it has (nearly) everything or nothing more arrives.
        loop {
            let before = received.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            let now = received.load(Ordering::SeqCst);
            if now + 50 >= sent || now == before {
                break;
            }
        }
        max_fds = max_fds.max(open_fds(d.pid()));
        if let Some(a) = d.metric("ferry_proxy_udp_flows_active") {
            max_active = max_active.max(a);
        }
    }
    let elapsed = started.elapsed();
    let rss = d.rss_kib();
    let flows_total = d.metric("ferry_proxy_udp_flows_total").unwrap_or(-1.0);
    let evicted = d
        .metric("ferry_proxy_udp_flows_evicted_total")
        .unwrap_or(-1.0);
    // The service still answers a new source.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut ok = false;
    for _ in 0..10 {
        probe.send_to(b"echo-after", target).unwrap();
        let mut b = [0u8; 32];
        if let Ok((n, _)) = probe.recv_from(&mut b) {
            ok = &b[..n] == b"echo-after";
            if ok {
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    eprintln!(
        "proxy udp: {sent} distinct sources in {elapsed:?}; backend got {}; flows total {flows_total}, evicted {evicted}, max active {max_active} (limit {max_flows}); daemon fds max {max_fds}; RSS {rss_before} -> {rss} KiB",
        received.load(Ordering::SeqCst)
    );
    assert!(ok, "a new UDP source gets no answer after {sent} sources");
    assert!(
        max_active <= max_flows as f64,
        "flow table grew to {max_active} (limit {max_flows})"
    );
    assert!(
        max_fds as u64 <= max_flows + 256,
        "daemon held {max_fds} fds (limit {max_flows} flows)"
    );
    assert!(
        rss < rss_before + 128 * 1024,
        "RSS grew from {rss_before} to {rss} KiB"
    );
    assert!(
        sent >= sources.min(20_000),
        "only {sent} sources sent in the time budget"
    );
}

#[test]
fn fd_exhaustion_refuses_the_excess_and_the_daemon_recovers() {
    require_root();
    let dir = tempdir("pxfd");
    let backend = HoldingBackend::start();
    let echo = echo_server();
    // The daemon gets 256 descriptors; 600 clients want 2 each.
    let socket = dir.path().join("proxy.sock");
    let mut cmd = std::process::Command::new(proxy_bin());
    cmd.arg("daemon")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--state-dir={}",
            dir.path().join("state").display()
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit only, in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let d = ProxyDaemon {
        child,
        socket,
        state_dir: dir.path().join("state"),
        extra: Vec::new(),
    };
    d.wait_healthy();
    add_mapping(&d, "frl-fd-hold", "tcp", 27030, backend.addr);
    add_mapping(&d, "frl-fd-echo", "tcp", 27031, echo);
    let mut held = Vec::new();
    let (mut refused, mut hung) = (0, 0);
    for _ in 0..600 {
        let Ok(mut s) = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], 27030)),
            Duration::from_secs(2),
        ) else {
            refused += 1;
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => refused += 1, // closed by the proxy: refused
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            _ => held.push(s), // still open (forwarded, or waiting)
        }
    }
    // Of the open ones, those that did not reach the backend are hanging.
    wait_until(Duration::from_secs(5), || {
        backend.accepted.load(Ordering::SeqCst) as usize >= held.len()
    });
    let reached = backend.accepted.load(Ordering::SeqCst) as usize;
    if held.len() > reached {
        hung = held.len() - reached;
    }
    // The API still answers while descriptors are exhausted.
    let api_ok = wait_until(Duration::from_secs(10), || {
        matches!(http(&d.socket, "GET", "/v1/health", None), Ok((200, _)))
    });
    let refused_metric = (
        d.metric("ferry_proxy_connections_refused_total"),
        d.metric("ferry_proxy_errors_total"),
    );
    drop(held);
    // Recovery: once clients leave — and the backend, like any server, closes the
    // connections whose client finished — a new connection is forwarded end to end. (A
    // backend that never closes keeps its half of each connection, and the proxy its two
    // sockets: a FIN is a half-close, which the proxy passes on and must not treat as gone.)
    let recovered = wait_until(Duration::from_secs(20), || {
        backend.close_finished_pass();
        echo_through(
            SocketAddr::from(([127, 0, 0, 1], 27031)),
            b"frl-after-exhaustion",
        )
        .is_ok()
    });
    eprintln!(
        "proxy fd: 600 clients at RLIMIT_NOFILE=256: {reached} forwarded, {refused} refused, {hung} left hanging; metrics (refused, errors) {refused_metric:?}; API during exhaustion ok: {api_ok}; recovered: {recovered}"
    );
    assert!(
        refused > 0,
        "nothing was refused at 256 fds with 600 clients"
    );
    assert!(
        hung <= 16,
        "{hung} connections accepted but neither forwarded nor refused"
    );
    assert!(
        recovered,
        "the daemon does not forward again after the clients left"
    );
}

/// Chunks (64 KiB) each slow-reader backend tries to push: more than the kernel alone can
/// buffer on the path backend → proxy → client (the backend's send buffer, the proxy's
/// receive buffer from the backend — autotuned up to tcp_rmem's maximum, 32 MiB on some
/// hosts — the proxy's send buffer and the client's small receive buffer), plus 16 MiB.
/// Otherwise a proxy that holds back perfectly could still see every byte accepted.
fn push_chunks() -> u64 {
    let max_of = |path: &str| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.split_whitespace().last().and_then(|v| v.parse().ok()))
            .unwrap_or(8 << 20)
    };
    let kernel = 2 * max_of("/proc/sys/net/ipv4/tcp_wmem") + max_of("/proc/sys/net/ipv4/tcp_rmem");
    (kernel + (16 << 20)) / (64 * 1024)
}

/// A TCP client with a 16 KiB receive buffer (set before connect, so the window stays small).
fn connect_small_rcvbuf(to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a fresh fd that we own and hand to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 16 * 1024;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let SocketAddr::V4(v4) = to else {
            panic!("IPv4 only")
        };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn slow_readers_cannot_grow_the_daemons_memory() {
    require_root();
    let dir = tempdir("pxslow");
    // Backend: pushes more than the kernel can buffer at every client, as fast as it can.
    let chunks = push_chunks();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let baddr = l.local_addr().unwrap();
    let pushed = Arc::new(AtomicU64::new(0));
    {
        let pushed = pushed.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let pushed = pushed.clone();
                std::thread::spawn(move || {
                    let chunk = vec![0x5au8; 64 * 1024];
                    for _ in 0..chunks {
                        if s.write_all(&chunk).is_err() {
                            return;
                        }
                        pushed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                });
            }
        });
    }
    let echo = echo_server();
    let d = ProxyDaemon::start(dir.path(), &[]);
    add_mapping(&d, "frl-slow", "tcp", 27040, baddr);
    add_mapping(&d, "frl-slow-echo", "tcp", 27041, echo);
    let rss_before = d.rss_kib();
    // Enough slow readers that a daemon buffering in user space would grow by far more
    // than the RSS bound below; few enough that the kernel buffers stay modest.
    let n = 8;
    let mut clients = Vec::new();
    for _ in 0..n {
        // A small receive buffer, and the client reads nothing.
        clients.push(connect_small_rcvbuf(SocketAddr::from((
            [127, 0, 0, 1],
            27040,
        ))));
    }
    // Let the backends push until every path is full (pushed stops growing).
    let mut last = 0;
    let mut stable = 0;
    let end = Instant::now() + Duration::from_secs(20);
    while stable < 5 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let now = pushed.load(Ordering::SeqCst);
        if now == last {
            stable += 1;
        } else {
            stable = 0;
        }
        last = now;
    }
    let rss = d.rss_kib();
    let would_be = n as u64 * chunks * 64;
    let still_serves =
        echo_through(SocketAddr::from(([127, 0, 0, 1], 27041)), b"frl-slow-probe").is_ok();
    eprintln!(
        "proxy slow readers: {n} clients not reading, backends pushed {} KiB of {would_be} KiB; daemon RSS {rss_before} -> {rss} KiB; other mapping serves: {still_serves}",
        last / 1024
    );
    assert!(still_serves, "the daemon stopped serving other clients");
    assert!(
        rss < rss_before + 64 * 1024,
        "daemon RSS grew by {} KiB with {n} slow readers (pushed {} KiB)",
        rss - rss_before,
        last / 1024
    );
    assert!(
        last < would_be * 1024,
        "every byte was accepted: nothing holds back the backends"
    );
    drop(clients);
}

#[test]
fn a_deleted_port_can_be_mapped_again_at_once() {
    require_root();
    let dir = tempdir("pxredo");
    let echo = echo_server();
    let d = ProxyDaemon::start(dir.path(), &[]);
    let rounds = 40;
    let mut failures = Vec::new();
    let body = json!({"id": "frl-redo", "owner": "frl-load", "proto": "tcp", "hostIP": "127.0.0.1",
        "hostPort": 27050, "containerIP": "127.0.0.1", "containerPort": echo.port()})
    .to_string();
    let add = |what: &str, i: usize, failures: &mut Vec<String>| {
        let (s, b) = http(&d.socket, "POST", "/v1/mappings", Some(&body)).unwrap();
        if s != 201 {
            failures.push(format!(
                "round {i}: {what} right after DELETE answered 204: {s} {b}"
            ));
            assert!(
                wait_until(Duration::from_secs(5), || {
                    matches!(
                        http(&d.socket, "POST", "/v1/mappings", Some(&body)),
                        Ok((201, _))
                    )
                }),
                "the port never became free again"
            );
        }
    };
    for i in 0..rounds {
        add("adding the port", i, &mut failures);
        // A connection has been forwarded through the port before it is deleted.
        echo_through(SocketAddr::from(([127, 0, 0, 1], 27050)), b"frl-redo").unwrap();
        let (s, b) = http(&d.socket, "DELETE", "/v1/mappings/frl-redo", None).unwrap();
        assert_eq!(s, 204, "{b}");
        add("re-adding the port", i, &mut failures);
        let (s, _) = http(&d.socket, "DELETE", "/v1/mappings/frl-redo", None).unwrap();
        assert_eq!(s, 204);
    }
    assert!(
        failures.is_empty(),
        "{} of {} adds failed (DELETE answers before the listening socket is closed):\n{}",
        failures.len(),
        2 * rounds,
        failures.join("\n")
    );
}
