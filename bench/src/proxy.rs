//! ferry-proxy beside docker-proxy (Debian docker.io) and the kernel path (the same traffic
//! sent straight to the backend namespace: the physical limit).
//!
//! Topology, new for every figure: a throw-away "host" namespace (clients and proxies, on its
//! loopback) and a backend namespace behind a veth (10.213.134.1 ↔ 10.213.134.2). Every
//! measured path has its own backend port (and, for connection rates, its own per round);
//! both namespaces' conntrack tables are flushed between runs (see the benchmark pitfall in
//! shared/notes/real-clients.md). Proxies run in compat mode (docker-proxy's command line,
//! ready signal on fd 3) except the 1,000-mapping figure, which uses one ferry-proxy daemon.

use crate::exec::{enter_netns, stats, stats_ms, Stats};
use crate::report::{num, progress, Better, Report, Row};
use crate::sys::{
    check_interrupted, cpu_seconds, enter_thread_netns, pss_kib, rss_kib, run, spawn_like_dockerd,
    CpuTimes, Netns, Proc,
};
use crate::Ctx;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SECTION: &str = "proxy";
const BACKEND_IP: &str = "10.213.134.2";
const HOST_IP: &str = "10.213.134.1";

/// Host namespace + backend namespace joined by a veth.
struct Topo {
    host: Netns,
    backend: Netns,
}

impl Topo {
    fn new(tag: &str) -> Result<Topo, String> {
        let host = Netns::create(&format!("x{tag}h"))?;
        let backend = Netns::create(&format!("x{tag}b"))?;
        let (hv, bv) = (format!("fbnbx{tag}h"), format!("fbnbx{tag}b"));
        run(
            "ip",
            &[
                "-n",
                &host.name,
                "link",
                "add",
                &hv,
                "type",
                "veth",
                "peer",
                "name",
                &bv,
                "netns",
                &backend.name,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &host.name,
                "addr",
                "add",
                &format!("{HOST_IP}/30"),
                "dev",
                &hv,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &backend.name,
                "addr",
                "add",
                &format!("{BACKEND_IP}/30"),
                "dev",
                &bv,
            ],
        )?;
        run("ip", &["-n", &host.name, "link", "set", &hv, "up"])?;
        run("ip", &["-n", &backend.name, "link", "set", &bv, "up"])?;
        Ok(Topo { host, backend })
    }

    fn flush_conntrack(&self) {
        self.host.flush_conntrack();
        self.backend.flush_conntrack();
    }
}

/// The two proxies, same command line.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ferry,
    Docker,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Ferry => "ferry-proxy",
            Kind::Docker => "docker-proxy",
        }
    }
    fn bin(self, ctx: &Ctx) -> std::path::PathBuf {
        match self {
            Kind::Ferry => ctx.ferry_bin.join("ferry-proxy"),
            Kind::Docker => ctx.docker_proxy.clone(),
        }
    }
}

fn need_proxies(ctx: &Ctx) -> Result<(), String> {
    ctx.need(&[&Kind::Ferry.bin(ctx), &Kind::Docker.bin(ctx)])
}

/// Start a proxy the way dockerd does (see [`spawn_like_dockerd`]: a pipe on fd 3, stdio
/// on /dev/null) inside `ns`; the process and the time from its start until it wrote `0\n`
/// on fd 3.
fn spawn_proxy(
    ctx: &Ctx,
    kind: Kind,
    ns: RawFd,
    proto: &str,
    host_port: u16,
    backend_port: u16,
) -> Result<(Proc, Duration), String> {
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // posix_spawn's dup2 onto the same number would leave close-on-exec set: keep the
    // write end off fd 3.
    let wr = if wr.as_raw_fd() == 3 {
        wr.try_clone().map_err(|e| format!("dup: {e}"))?
    } else {
        wr
    };
    let (host_port, backend_port) = (host_port.to_string(), backend_port.to_string());
    let args = [
        "-proto",
        proto,
        "-host-ip",
        "127.0.0.1",
        "-host-port",
        &host_port,
        "-container-ip",
        BACKEND_IP,
        "-container-port",
        &backend_port,
    ];
    let mut file = std::fs::File::from(rd);
    let (proc_, read) = spawn_like_dockerd(ns, &kind.bin(ctx), &args, Some(wr), |start| {
        let mut buf = Vec::new();
        let mut byte = [0u8; 256];
        loop {
            match file.read(&mut byte) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&byte[..n]),
                Err(e) => return Err(format!("reading {}'s fd 3: {e}", kind.label())),
            }
            if buf.starts_with(b"0\n") || (buf.starts_with(b"1\n") && buf.len() > 2) {
                break;
            }
        }
        Ok((buf, start.elapsed()))
    })?;
    let (buf, took) = read?;
    if !buf.starts_with(b"0\n") {
        return Err(format!(
            "{} on 127.0.0.1:{host_port}/{proto} did not report ready: {:?}",
            kind.label(),
            String::from_utf8_lossy(&buf)
        ));
    }
    Ok((proc_, took))
}

/// Start a helper program inside a namespace (stdio null).
fn spawn_in(ns: RawFd, prog: &str, args: &[&str]) -> Result<Proc, String> {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    enter_netns(&mut cmd, Some(ns));
    let child = cmd.spawn().map_err(|e| format!("starting {prog}: {e}"))?;
    Ok(Proc::from_child(child))
}

/// Wait until something listens on `port` in `ns` (TCP, or UDP when `udp`).
fn wait_listening(ns: &Netns, port: u16, udp: bool) -> Result<(), String> {
    let flag = if udp { "-Hlun" } else { "-Hltn" };
    for _ in 0..100 {
        let out = crate::sys::run_in(ns, "ss", &[flag, &format!("sport = :{port}")])?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    Err(format!(
        "nothing listens on port {port} in {} after 3 s",
        ns.name
    ))
}

/// Run a client program in `ns` and parse its JSON output (iperf3 -J).
fn json_client(ns: RawFd, prog: &str, args: &[&str]) -> Result<Value, String> {
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null());
    enter_netns(&mut cmd, Some(ns));
    let out = cmd.output().map_err(|e| format!("running {prog}: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{prog} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v.get("error") {
        return Err(format!("{prog} {}: {err}", args.join(" ")));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// In-process servers and clients (threads that entered a namespace).

/// Threads serving a listener in the backend namespace; stopped and joined on drop.
struct Server {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a server does with each accepted connection.
#[derive(Clone, Copy)]
enum Serve {
    /// Read the request, answer a tiny HTTP/1.0 response, close (connection-rate figure).
    HttpClose,
    /// Keep the connection open and idle until the server stops.
    Hold,
}

fn start_server(ns: RawFd, port: u16, threads: usize, mode: Serve) -> Result<Server, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let first = {
        let stop = stop.clone();
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let listener = enter_thread_netns(ns).and_then(|_| {
                let l = TcpListener::bind(("0.0.0.0", port))
                    .map_err(|e| format!("backend listen on port {port}: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                // A deep accept queue: a proxy that forwards 1,000 connects in a burst must
                // not find the backend's queue (std's default) full — a dropped handshake is
                // retried only after seconds, which would measure the backend, not the proxy.
                // SAFETY: listen(2) again on our own listening socket only changes its backlog.
                unsafe {
                    libc::listen(l.as_raw_fd(), 4096);
                }
                Ok(l)
            });
            match listener {
                Ok(l) => {
                    let clones: Vec<TcpListener> =
                        (1..threads).filter_map(|_| l.try_clone().ok()).collect();
                    let _ = tx.send(Ok(clones));
                    serve_loop(l, &stop, &accepted, mode);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
    };
    let clones = rx
        .recv()
        .map_err(|_| "backend server thread died".to_string())??;
    let mut server = Server {
        stop: stop.clone(),
        accepted: accepted.clone(),
        threads: vec![first],
    };
    for l in clones {
        let (stop, accepted) = (stop.clone(), accepted.clone());
        server.threads.push(std::thread::spawn(move || {
            serve_loop(l, &stop, &accepted, mode)
        }));
    }
    Ok(server)
}

fn serve_loop(l: TcpListener, stop: &AtomicBool, accepted: &AtomicUsize, mode: Serve) {
    let mut held = Vec::new();
    let mut pfd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r <= 0 {
            continue;
        }
        while let Ok((mut s, _)) = l.accept() {
            accepted.fetch_add(1, Ordering::Relaxed);
            match mode {
                Serve::Hold => held.push(s),
                Serve::HttpClose => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(
                        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            }
        }
    }
}

/// Short connections with wrk (the method behind the figures) at its default load
/// (2 threads, 10 connections), `Connection: close` on every request so each request is a
/// new TCP connection: requests (= connections) per second. A socket error or a bad
/// response fails the figure.
fn connection_rate(ns: RawFd, addr: SocketAddr, secs: f64) -> Result<f64, String> {
    let url = format!("http://{addr}/");
    let duration = format!("-d{}s", secs.round() as u64);
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        "-c10",
        duration.as_str(),
        "-H",
        "Connection: close",
        url.as_str(),
    ])
    .stdin(Stdio::null());
    enter_netns(&mut cmd, Some(ns));
    let out = cmd.output().map_err(|e| format!("running wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let rate: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "wrk printed no rate: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    if let Some(errors) = field("Socket errors:") {
        return Err(format!("wrk against {addr}: socket errors: {errors}"));
    }
    if let Some(bad) = field("Non-2xx or 3xx responses:") {
        return Err(format!("wrk against {addr}: {bad} bad responses"));
    }
    Ok(rate)
}

// ---------------------------------------------------------------------------------------
// Figures.

/// fd-3 ready time: from spawn until the proxy wrote `0\n` (it has bound its socket). The
/// floor (spawning /bin/true the same way, until it exited) is measured in the same loop,
/// interleaved, so machine load moves all three alike.
pub fn run_ready(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    need_proxies(ctx)?;
    let ns = Netns::create("xrh")?;
    let n = ctx.reps * 2 + ctx.warmup;
    let mut t: [Vec<Duration>; 2] = Default::default();
    let mut floor = Vec::new();
    for i in 0..n {
        check_interrupted()?;
        for (k, kind) in [Kind::Ferry, Kind::Docker].into_iter().enumerate() {
            let port = 28600 + (i * 2 + k) as u16 % 300;
            let (p, took) = spawn_proxy(ctx, kind, ns.fd(), "tcp", port, 80)?;
            drop(p);
            if i >= ctx.warmup {
                t[k].push(took);
            }
        }
        let (p, took) =
            spawn_like_dockerd(ns.fd(), Path::new("/bin/true"), &[], None, |start| start)?;
        let pid = p.pid() as libc::pid_t;
        // SAFETY: our own unreaped child; reaping it here makes its guard's kill a no-op.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let took = took.elapsed();
        std::mem::forget(p);
        if i >= ctx.warmup {
            floor.push(took);
        }
    }
    let ferry = stats_ms(&t[0]);
    let floor = stats_ms(&floor);
    let mut row = Row::pair(
        SECTION,
        "ready signal on fd 3 (spawn → `0\\n`)",
        "ms",
        Better::Lower,
        ferry,
        ("docker-proxy", stats_ms(&t[1])),
        "ferry ≤ 1 ms",
    );
    row.note = format!(
        "spawned as dockerd spawns it (clone with CLONE_VM|CLONE_VFORK, exec), timed from \
         the spawn call; /bin/true takes {} ms from the same call to its exit (same loop); \
         ferry minus that: {} ms",
        num(floor.median),
        num(ferry.median - floor.median)
    );
    report.push(row);
    Ok(())
}

/// "machine idle during the runs: …" for a note: median idle and steal share per path
/// (kernel path, ferry, docker-proxy).
fn idle_note(idle: &[Vec<(f64, f64)>; 3]) -> String {
    let part = |i: usize, label: &str| {
        let (idle, steal): (Vec<f64>, Vec<f64>) = idle[i].iter().copied().unzip();
        format!(
            "{label} {}% (steal {}%)",
            num(stats(idle).median),
            num(stats(steal).median)
        )
    };
    format!(
        "CPU idle during the runs (both cores): {}, {}, {}",
        part(0, "kernel path"),
        part(1, "ferry"),
        part(2, "docker-proxy")
    )
}

fn rounds(ctx: &Ctx) -> usize {
    (if ctx.quick { 3 } else { 5 }).min(ctx.reps)
}

fn seconds(ctx: &Ctx) -> u32 {
    if ctx.quick {
        3
    } else {
        5
    }
}

/// TCP bulk throughput with iperf3 through each proxy and straight to the backend; and the
/// proxy's CPU time per GB moved.
pub fn run_tcp_throughput(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    need_proxies(ctx)?;
    let topo = Topo::new("t")?;
    // Path p: 0 kernel, 1 ferry, 2 docker; backend ports 28101.., proxy ports 28201..
    let mut servers = Vec::new();
    for p in 0..3u16 {
        servers.push(spawn_in(
            topo.backend.fd(),
            "iperf3",
            &["-s", "-p", &(28101 + p).to_string()],
        )?);
        wait_listening(&topo.backend, 28101 + p, false)?;
    }
    let kinds = [Kind::Ferry, Kind::Docker];
    let mut proxies = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        let (p, _) = spawn_proxy(
            ctx,
            *kind,
            topo.host.fd(),
            "tcp",
            28201 + k as u16,
            28102 + k as u16,
        )?;
        proxies.push(p);
    }
    let secs = seconds(ctx).to_string();
    let mut gbps: [Vec<f64>; 3] = Default::default();
    let mut cpu_per_gb: [Vec<f64>; 2] = Default::default();
    let mut idle: [Vec<(f64, f64)>; 3] = Default::default();
    for r in 0..rounds(ctx) {
        check_interrupted()?;
        progress(&format!(
            "proxy TCP throughput: round {}/{}",
            r + 1,
            rounds(ctx)
        ));
        for p in 0..3 {
            let (addr, port) = if p == 0 {
                (BACKEND_IP.to_string(), 28101)
            } else {
                ("127.0.0.1".to_string(), 28200 + p as u16)
            };
            let pid = (p > 0).then(|| proxies[p - 1].pid());
            let cpu0 = pid.and_then(cpu_seconds);
            let machine0 = CpuTimes::now();
            let v = json_client(
                topo.host.fd(),
                "iperf3",
                &["-c", &addr, "-p", &port.to_string(), "-t", &secs, "-J"],
            )?;
            idle[p].push(CpuTimes::now().since(&machine0));
            let cpu1 = pid.and_then(cpu_seconds);
            let sum = &v["end"]["sum_received"];
            let bps = sum["bits_per_second"].as_f64().unwrap_or(f64::NAN);
            let bytes = sum["bytes"].as_f64().unwrap_or(f64::NAN);
            gbps[p].push(bps / 1e9);
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                cpu_per_gb[p - 1].push((b - a) / (bytes / 1e9));
            }
            topo.flush_conntrack();
        }
    }
    let s: Vec<Stats> = gbps.into_iter().map(stats).collect();
    let mut row = Row::pair(
        SECTION,
        "TCP bulk throughput (iperf3, 1 stream)",
        "Gbit/s",
        Better::Higher,
        s[1],
        ("docker-proxy", s[2]),
        "ferry ≥ 95% of kernel path",
    );
    row.limit = Some(s[0]);
    row.note = format!(
        "ferry {}% / docker-proxy {}% of the kernel path; {} rounds × {} s; {}",
        num(100.0 * s[1].median / s[0].median),
        num(100.0 * s[2].median / s[0].median),
        rounds(ctx),
        seconds(ctx),
        idle_note(&idle)
    );
    report.push(row);
    let [cf, cd] = cpu_per_gb;
    report.push(Row::pair(
        SECTION,
        "TCP bulk: proxy CPU time per GB moved",
        "core·s/GB",
        Better::Lower,
        stats(cf),
        ("docker-proxy", stats(cd)),
        "≤ 0.5",
    ));
    Ok(())
}

/// UDP datagrams the namespace's kernel dropped because a socket's receive buffer was full
/// (`RcvbufErrors` in /proc/net/snmp): in the host namespace that is the proxy's listener,
/// in the backend namespace the iperf3 server's socket.
fn udp_rcvbuf_errors(ns: &Netns) -> Result<u64, String> {
    let text = crate::sys::run_in(ns, "cat", &["/proc/net/snmp"])?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .and_then(|i| values.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Udp RcvbufErrors in {}'s /proc/net/snmp", ns.name))
}

/// What one iperf3 -u run saw.
struct UdpRun {
    /// Datagrams received per second.
    rate: f64,
    /// Lost, in percent of sent (iperf3's figure).
    loss: f64,
    /// Dropped at the proxy's listener (host namespace), in percent of sent.
    at_listener: f64,
    /// Dropped at the backend server's socket, in percent of sent.
    at_backend: f64,
    /// Machine idle and steal share during the run.
    idle: (f64, f64),
}

/// One iperf3 -u run (1400-byte datagrams) from the host namespace at `bitrate` ("0" = as
/// fast as the client can); `window` is iperf3's -w (the socket buffers of client and
/// server), None for the kernel's defaults.
fn udp_run(
    topo: &Topo,
    (addr, port): (&str, u16),
    bitrate: &str,
    secs: &str,
    window: Option<&str>,
) -> Result<UdpRun, String> {
    let port = port.to_string();
    let mut args = vec![
        "-c", addr, "-p", &port, "-u", "-b", bitrate, "-l", "1400", "-t", secs, "-J",
    ];
    if let Some(w) = window {
        args.extend(["-w", w]);
    }
    let drops0 = (
        udp_rcvbuf_errors(&topo.host)?,
        udp_rcvbuf_errors(&topo.backend)?,
    );
    let machine0 = CpuTimes::now();
    let v = json_client(topo.host.fd(), "iperf3", &args)?;
    let idle = CpuTimes::now().since(&machine0);
    let drops1 = (
        udp_rcvbuf_errors(&topo.host)?,
        udp_rcvbuf_errors(&topo.backend)?,
    );
    let sum = &v["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(f64::NAN);
    let lost = sum["lost_packets"].as_f64().unwrap_or(f64::NAN);
    let secs_run = sum["seconds"].as_f64().unwrap_or(f64::NAN);
    let share = |a: u64, b: u64| 100.0 * b.saturating_sub(a) as f64 / packets;
    Ok(UdpRun {
        rate: (packets - lost) / secs_run,
        loss: sum["lost_percent"].as_f64().unwrap_or(f64::NAN),
        at_listener: share(drops0.0, drops1.0),
        at_backend: share(drops0.1, drops1.1),
        idle,
    })
}

/// Medians of a series of runs of one path.
struct UdpSeries {
    rate: Stats,
    loss: Stats,
    at_listener: Stats,
    at_backend: Stats,
    idle: Vec<(f64, f64)>,
}

impl UdpSeries {
    fn of(runs: Vec<UdpRun>) -> UdpSeries {
        let pick = |f: fn(&UdpRun) -> f64| stats(runs.iter().map(f).collect());
        UdpSeries {
            rate: pick(|r| r.rate),
            loss: pick(|r| r.loss),
            at_listener: pick(|r| r.at_listener),
            at_backend: pick(|r| r.at_backend),
            idle: runs.iter().map(|r| r.idle).collect(),
        }
    }

    /// Where a path's loss happened, for a note (`proxied`: a proxy's listener was on the
    /// way).
    fn drops_note(&self, who: &str, proxied: bool) -> String {
        let listener = if proxied {
            format!(
                ", {}% by the proxy's listener",
                num(self.at_listener.median)
            )
        } else {
            String::new()
        };
        format!(
            "{who}'s loss {}%: {}% dropped by the backend server's full socket buffer{listener}",
            num(self.loss.median),
            num(self.at_backend.median),
        )
    }
}

/// UDP with iperf3 -u, 1400-byte datagrams:
/// 1. saturation: every path offered as much as the client can send (`-b 0`); received
///    datagrams per second and loss of the kernel path, ferry and docker-proxy, interleaved;
/// 2. the target point: ferry (and the kernel path, for reference) offered 3× the rate
///    docker-proxy delivered at saturation; ferry's received rate and loss there;
/// 3. steps 1 and 2 again with 4 MiB socket buffers on client and server (iperf3 -w 4M):
///    on two cores the backend server shares the CPUs with client and proxy, and with the
///    default ~208 KiB buffer its socket overflows whenever it waits a few hundred
///    microseconds for a CPU; this step shows what the proxy itself carries.
///
/// Every run also counts where datagrams were dropped (the proxy's listener or the
/// backend server's socket). iperf3 also needs its TCP control connection, so each path
/// has a tcp and a udp proxy on the same port.
pub fn run_udp(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    need_proxies(ctx)?;
    let topo = Topo::new("u")?;
    let mut servers = Vec::new();
    for p in 0..3u16 {
        servers.push(spawn_in(
            topo.backend.fd(),
            "iperf3",
            &["-s", "-p", &(28111 + p).to_string()],
        )?);
        wait_listening(&topo.backend, 28111 + p, false)?;
    }
    let mut proxies = Vec::new();
    for (k, kind) in [Kind::Ferry, Kind::Docker].into_iter().enumerate() {
        for proto in ["tcp", "udp"] {
            let (p, _) = spawn_proxy(
                ctx,
                kind,
                topo.host.fd(),
                proto,
                28211 + k as u16,
                28112 + k as u16,
            )?;
            proxies.push(p);
        }
    }
    let target = |p: usize| -> (&'static str, u16) {
        if p == 0 {
            (BACKEND_IP, 28111)
        } else {
            ("127.0.0.1", 28210 + p as u16)
        }
    };
    let secs = seconds(ctx).to_string();
    // Rounds of interleaved runs over `paths`; one series per path.
    let series = |what: &str, paths: &[usize], bitrate: &str, window: Option<&str>| {
        let mut runs: Vec<Vec<UdpRun>> = paths.iter().map(|_| Vec::new()).collect();
        for r in 0..rounds(ctx) {
            check_interrupted()?;
            progress(&format!(
                "proxy UDP {what}: round {}/{}",
                r + 1,
                rounds(ctx)
            ));
            for (slot, &p) in paths.iter().enumerate() {
                runs[slot].push(udp_run(&topo, target(p), bitrate, &secs, window)?);
                topo.flush_conntrack();
            }
        }
        Ok::<_, String>(runs.into_iter().map(UdpSeries::of).collect::<Vec<_>>())
    };
    let idle_of = |s: &[UdpSeries]| -> [Vec<(f64, f64)>; 3] {
        [s[0].idle.clone(), s[1].idle.clone(), s[2].idle.clone()]
    };

    // A saturation row: ferry beside docker-proxy, the kernel path as the limit.
    let saturation_row = |label: &str, s: &[UdpSeries]| {
        let mut row = Row::pair(
            SECTION,
            label,
            "dgram/s",
            Better::Higher,
            s[1].rate,
            ("docker-proxy", s[2].rate),
            "≥ 3× docker-proxy",
        );
        row.limit = Some(s[0].rate);
        row
    };

    // Step 1: saturation.
    let sat = series("saturation", &[0, 1, 2], "0", None)?;
    let mut row = saturation_row(
        "UDP at saturation: datagrams received per second (iperf3 -u -b 0 -l 1400)",
        &sat,
    );
    row.note = format!(
        "client sends as fast as it can; loss at that point: ferry {}%, docker-proxy {}%, \
         kernel path {}%; {}; {} rounds × {} s; {}",
        num(sat[1].loss.median),
        num(sat[2].loss.median),
        num(sat[0].loss.median),
        sat[1].drops_note("ferry", true),
        rounds(ctx),
        seconds(ctx),
        idle_note(&idle_of(&sat))
    );
    report.push(row);

    // Step 2: 3× what docker-proxy delivered, offered to the kernel path and ferry.
    let docker_rate = sat[2].rate.median;
    let offered = 3.0 * docker_rate;
    if !offered.is_finite() || offered <= 0.0 {
        return Err("docker-proxy delivered no UDP datagrams at saturation".into());
    }
    let bitrate = format!("{}", (offered * 1400.0 * 8.0).round() as u64);
    let at3 = series(
        &format!("at 3× docker-proxy ({} dgram/s)", num(offered)),
        &[0, 1],
        &bitrate,
        None,
    )?;
    let single = |label: String, unit: &'static str, better, f: Stats, k: Stats, target: &str| {
        let mut row = Row::pair(
            SECTION,
            label,
            unit,
            better,
            f,
            ("docker-proxy", sat[2].rate),
            target,
        );
        row.anchor = None;
        row.limit = Some(k);
        row
    };
    let mut row = single(
        format!(
            "UDP offered 3× docker-proxy's saturated rate ({} dgram/s): received",
            num(offered)
        ),
        "dgram/s",
        Better::Higher,
        at3[1].rate,
        at3[0].rate,
        "≈ offered",
    );
    row.note = format!(
        "docker-proxy's saturated rate from step 1: {} dgram/s",
        num(docker_rate)
    );
    report.push(row);
    // A loss row at the target point; `buffers` says which socket buffers were used.
    let loss_row = |buffers: &str, s: &[UdpSeries]| {
        single(
            format!(
                "UDP offered 3× docker-proxy's saturated rate ({} dgram/s){buffers}: loss",
                num(offered)
            ),
            "%",
            Better::Lower,
            s[1].loss,
            s[0].loss,
            "ferry < 5%",
        )
    };
    let mut row = loss_row("", &at3);
    row.note = format!(
        "{}; {}",
        at3[1].drops_note("ferry", true),
        at3[0].drops_note("kernel path", false)
    );
    report.push(row);

    // Step 3: the same with 4 MiB socket buffers (what the proxy carries when the backend
    // server does not overflow while it waits for a CPU).
    let wide = series("saturation, 4 MiB buffers", &[0, 1, 2], "0", Some("4M"))?;
    let mut row = saturation_row(
        "UDP at saturation, 4 MiB socket buffers (iperf3 -w 4M): datagrams received per second",
        &wide,
    );
    row.note = format!(
        "{}; docker-proxy's loss {}%; {}",
        wide[1].drops_note("ferry", true),
        num(wide[2].loss.median),
        idle_note(&idle_of(&wide))
    );
    report.push(row);
    let at3w = series(
        "at 3× docker-proxy, 4 MiB buffers",
        &[0, 1],
        &bitrate,
        Some("4M"),
    )?;
    let mut row = loss_row(", 4 MiB socket buffers", &at3w);
    row.note = format!(
        "{}; received {} dgram/s",
        at3w[1].drops_note("ferry", true),
        num(at3w[1].rate.median)
    );
    report.push(row);
    Ok(())
}

/// Short TCP connections per second: wrk's requests with `Connection: close`, a tiny answer
/// and a close each; every path and round has its own backend and proxy port.
pub fn run_cps(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    need_proxies(ctx)?;
    let topo = Topo::new("c")?;
    let secs = seconds(ctx) as f64;
    let mut rate: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 2] = Default::default();
    let mut idle: [Vec<(f64, f64)>; 3] = Default::default();
    for r in 0..rounds(ctx) {
        check_interrupted()?;
        progress(&format!(
            "proxy connections/s: round {}/{}",
            r + 1,
            rounds(ctx)
        ));
        for p in 0..3 {
            let backend_port = 28300 + (r * 3 + p) as u16;
            let host_port = 28400 + (r * 3 + p) as u16;
            let _server = start_server(topo.backend.fd(), backend_port, 2, Serve::HttpClose)?;
            let (proxy, addr) = if p == 0 {
                (None, SocketAddr::from(([10, 213, 134, 2], backend_port)))
            } else {
                let kind = if p == 1 { Kind::Ferry } else { Kind::Docker };
                let (pr, _) =
                    spawn_proxy(ctx, kind, topo.host.fd(), "tcp", host_port, backend_port)?;
                (Some(pr), SocketAddr::from(([127, 0, 0, 1], host_port)))
            };
            let cpu0 = proxy.as_ref().and_then(|p| cpu_seconds(p.pid()));
            let machine0 = CpuTimes::now();
            let v = connection_rate(topo.host.fd(), addr, secs)?;
            idle[p].push(CpuTimes::now().since(&machine0));
            let cpu1 = proxy.as_ref().and_then(|p| cpu_seconds(p.pid()));
            rate[p].push(v);
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                cpu[p - 1].push((b - a) / secs);
            }
            drop(proxy);
            topo.flush_conntrack();
        }
    }
    let s: Vec<Stats> = rate.into_iter().map(stats).collect();
    let mut row = Row::pair(
        SECTION,
        "short TCP connections per second (wrk -t2 -c10, Connection: close)",
        "conn/s",
        Better::Higher,
        s[1],
        ("docker-proxy", s[2]),
        "≥ 1.8×",
    );
    row.limit = Some(s[0]);
    row.note = format!(
        "client, proxy and server share the CPUs; {} rounds × {} s; {}",
        rounds(ctx),
        seconds(ctx),
        idle_note(&idle)
    );
    report.push(row);
    let [cf, cd] = cpu;
    report.push(Row::pair(
        SECTION,
        "short TCP connections: proxy CPU (cores busy)",
        "cores",
        Better::Lower,
        stats(cf),
        ("docker-proxy", stats(cd)),
        "",
    ));
    Ok(())
}

/// RSS of one proxy holding 1,000 idle connections (backend holds them open), and after they
/// are closed again.
pub fn run_idle_rss(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    need_proxies(ctx)?;
    let topo = Topo::new("i")?;
    let conns = 1000;
    let reps = if ctx.quick { 1 } else { 3 };
    let mut held: [Vec<f64>; 2] = Default::default();
    let mut after: [Vec<f64>; 2] = Default::default();
    let mut idle: [Vec<f64>; 2] = Default::default();
    for r in 0..reps {
        for (k, kind) in [Kind::Ferry, Kind::Docker].into_iter().enumerate() {
            check_interrupted()?;
            progress(&format!(
                "proxy idle RSS: {} round {}/{reps}",
                kind.label(),
                r + 1
            ));
            let backend_port = 28500 + (r * 2 + k) as u16;
            let host_port = 28550 + (r * 2 + k) as u16;
            let server = start_server(topo.backend.fd(), backend_port, 1, Serve::Hold)?;
            let (proxy, _) =
                spawn_proxy(ctx, kind, topo.host.fd(), "tcp", host_port, backend_port)?;
            let pid = proxy.pid();
            idle[k].push(rss_kib(pid).unwrap_or(0) as f64 / 1024.0);
            let host_fd = topo.host.fd();
            let clients = std::thread::spawn(move || -> Result<Vec<TcpStream>, String> {
                enter_thread_netns(host_fd)?;
                (0..conns)
                    .map(|_| {
                        TcpStream::connect(("127.0.0.1", host_port))
                            .map_err(|e| format!("idle connection to the proxy: {e}"))
                    })
                    .collect()
            })
            .join()
            .map_err(|_| "client thread panicked".to_string())??;
            let t0 = Instant::now();
            while server.accepted.load(Ordering::Relaxed) < conns {
                if t0.elapsed() > Duration::from_secs(20) {
                    return Err(format!(
                        "{}: only {} of {conns} connections reached the backend",
                        kind.label(),
                        server.accepted.load(Ordering::Relaxed)
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(300));
            held[k].push(rss_kib(pid).unwrap_or(0) as f64 / 1024.0);
            drop(clients);
            drop(server);
            std::thread::sleep(Duration::from_millis(1500));
            after[k].push(rss_kib(pid).unwrap_or(0) as f64 / 1024.0);
            drop(proxy);
            topo.flush_conntrack();
        }
    }
    let rows = [
        ("RSS before any connection", idle, ""),
        (
            "RSS with 1,000 idle connections",
            held,
            "≤ 1/3 of docker-proxy",
        ),
        ("RSS 1.5 s after those 1,000 closed", after, ""),
    ];
    for (figure, v, target) in rows {
        let [f, d] = v;
        report.push(Row::pair(
            SECTION,
            figure,
            "MiB",
            Better::Lower,
            stats(f),
            ("docker-proxy", stats(d)),
            target,
        ));
    }
    Ok(())
}

/// Memory for 1,000 TCP mappings: one ferry-proxy daemon (mappings added over its API) vs
/// 1,000 docker-proxy processes (sum of RSS, and of PSS, which splits shared pages).
pub fn run_mappings(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    need_proxies(ctx)?;
    let n = 1000usize;
    let ns = Netns::create("xmh")?;
    let tmp = tempfile::Builder::new()
        .prefix("fbnb-proxyd")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let sock = tmp.path().join("proxy.sock");
    let state = tmp.path().join("state");
    progress("proxy mappings: ferry-proxy daemon with 1,000 mappings");
    let ferry = (|| -> Result<(f64, f64), String> {
        let daemon = spawn_in(
            ns.fd(),
            &Kind::Ferry.bin(ctx).display().to_string(),
            &[
                "daemon",
                "--socket",
                &sock.display().to_string(),
                "--state-dir",
                &state.display().to_string(),
            ],
        )?;
        let t0 = Instant::now();
        while !sock.exists() {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err("ferry-proxy daemon: no API socket after 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for i in 0..n {
            if i % 200 == 0 {
                check_interrupted()?;
            }
            let body = serde_json::json!({
                "owner": "fbnb", "proto": "tcp", "hostIP": "127.0.0.1",
                "hostPort": 28000 + i, "containerIP": BACKEND_IP, "containerPort": 80
            })
            .to_string();
            api_post(&sock, "/v1/mappings", &body)?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let pid = daemon.pid();
        Ok((
            rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
            pss_kib(pid).unwrap_or(0) as f64 / 1024.0,
        ))
    })();
    progress("proxy mappings: 1,000 docker-proxy processes");
    let docker = (|| -> Result<(f64, f64), String> {
        let mut procs = Vec::with_capacity(n);
        for i in 0..n {
            if i % 200 == 0 {
                check_interrupted()?;
            }
            let (p, _) = spawn_proxy(
                ctx,
                Kind::Docker,
                ns.fd(),
                "tcp",
                29000 + (i % 1000) as u16,
                80,
            )?;
            procs.push(p);
        }
        std::thread::sleep(Duration::from_millis(300));
        let rss: u64 = procs.iter().filter_map(|p| rss_kib(p.pid())).sum();
        let pss: u64 = procs.iter().filter_map(|p| pss_kib(p.pid())).sum();
        Ok((rss as f64 / 1024.0, pss as f64 / 1024.0))
    })();
    let docker = docker?;
    // The daemon may not be there (older ferry-proxy): report docker-proxy's side anyway.
    let (ferry, note) = match ferry {
        Ok((rss, pss)) => ((Some(rss), Some(pss)), String::new()),
        Err(e) => (
            (None, None),
            format!("ferry-proxy daemon not available: {e}"),
        ),
    };
    let one = |v: f64| stats(vec![v]);
    let rows = [
        (
            "memory for 1,000 TCP mappings: RSS (daemon vs sum over 1,000 processes)",
            ferry.0,
            docker.0,
            "≤ 1/50 (0.02)",
        ),
        (
            "memory for 1,000 TCP mappings: PSS (shared pages split)",
            ferry.1,
            docker.1,
            "",
        ),
    ];
    for (figure, f, d, target) in rows {
        let mut row = Row::pair(
            SECTION,
            figure,
            "MiB",
            Better::Lower,
            one(f.unwrap_or(f64::NAN)),
            ("1,000 × docker-proxy", one(d)),
            target,
        );
        if f.is_none() {
            row.ferry = None;
            row.note = note.clone();
        }
        report.push(row);
    }
    Ok(())
}

/// One HTTP/1.1 POST over the daemon's unix socket; Err unless 200/201.
fn api_post(sock: &Path, path: &str, body: &str) -> Result<(), String> {
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| format!("connecting to {}: {e}", sock.display()))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("API request: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("API response: {e}"))?;
    let status = resp.split_whitespace().nth(1).unwrap_or("");
    if status != "200" && status != "201" {
        return Err(format!("ferry-proxy daemon POST {path}: {resp}"));
    }
    Ok(())
}
