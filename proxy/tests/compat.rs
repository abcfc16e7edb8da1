//! docker-proxy compatible mode, driven the way dockerd drives docker-proxy: a pipe on
//! fd 3 for the status, optionally a bound socket on fd 4, signals to stop.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Duration;

static PORTS: PortPool = PortPool::new(23000);

fn compat_args(proto: &str, host: SocketAddr, backend: SocketAddr) -> Vec<String> {
    vec![
        "-proto".into(),
        proto.into(),
        "-host-ip".into(),
        host.ip().to_string(),
        "-host-port".into(),
        host.port().to_string(),
        "-container-ip".into(),
        backend.ip().to_string(),
        "-container-port".into(),
        backend.port().to_string(),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn ready_signal_then_forwarding_then_sigterm_exits_zero() {
    require_root();
    let backend = tcp_echo("127.0.0.1:0");
    let host: SocketAddr = format!("127.0.0.1:{}", PORTS.take()).parse().unwrap();
    let args = compat_args("tcp", host, backend);
    let mut p = spawn_proxy(&refs(&args), None, None);
    assert_eq!(p.read_status(), b"0\n");
    assert_eq!(echo_round_trip(host, b"hello").unwrap(), b"hello");
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_code(), Some(0));
    assert!(
        std::net::TcpStream::connect(host).is_err(),
        "listener must be closed after SIGTERM"
    );
}

#[test]
fn sigint_exits_zero_and_go_flag_forms_work() {
    require_root();
    let backend = tcp_echo("127.0.0.1:0");
    let port = PORTS.take();
    let host_port = format!("--host-port={port}");
    let container_port = format!("-container-port={}", backend.port());
    let args = [
        "--proto=tcp",
        "-host-ip=127.0.0.1",
        &host_port,
        "--container-ip",
        "127.0.0.1",
        &container_port,
    ];
    let mut p = spawn_proxy(&args, None, None);
    assert_eq!(p.read_status(), b"0\n");
    let host: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(echo_round_trip(host, b"x").unwrap(), b"x");
    p.signal(Signal::SIGINT);
    assert_eq!(p.wait_code(), Some(0));
}

#[test]
fn taken_port_reports_one_and_the_error_then_exits_one() {
    require_root();
    let port = PORTS.take();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let host: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args = compat_args("tcp", host, "127.0.0.1:9".parse().unwrap());
    let mut p = spawn_proxy(&refs(&args), None, None);
    let status = String::from_utf8(p.read_status()).unwrap();
    assert!(status.starts_with("1\n"), "{status:?}");
    assert!(status.contains("in use"), "{status:?}");
    assert_eq!(p.wait_code(), Some(1));
}

#[test]
fn bad_flags_report_one_on_the_status_pipe() {
    require_root();
    let mut p = spawn_proxy(&["-proto", "tcp", "-bogus", "1"], None, None);
    let status = String::from_utf8(p.read_status()).unwrap();
    assert!(
        status.starts_with("1\n") && status.contains("bogus"),
        "{status:?}"
    );
    assert_eq!(p.wait_code(), Some(1));
    let mut p = spawn_proxy(
        &[
            "-proto",
            "dccp",
            "-host-port",
            "1",
            "-container-ip",
            "10.213.48.2",
            "-container-port",
            "1",
        ],
        None,
        None,
    );
    let status = String::from_utf8(p.read_status()).unwrap();
    assert!(
        status.starts_with("1\n") && status.contains("dccp"),
        "{status:?}"
    );
    assert_eq!(p.wait_code(), Some(1));
}

/// `-proto sctp`: forwarded like TCP where the kernel has SCTP; where it has not, fd 3 gets
/// `1\n` and a message naming the missing kernel support, and the test says loudly that
/// the data path went untested.
#[test]
fn sctp_forwards_where_the_kernel_has_it_and_is_refused_by_name_where_not() {
    require_root();
    let host: SocketAddr = format!("127.0.0.1:{}", PORTS.take()).parse().unwrap();
    if !kernel_has_sctp() {
        let args = compat_args("sctp", host, "127.0.0.1:9".parse().unwrap());
        let mut p = spawn_proxy(&refs(&args), None, None);
        let status = String::from_utf8(p.read_status()).unwrap();
        assert!(status.starts_with("1\n"), "{status:?}");
        assert!(
            status.contains("SCTP") && status.contains("kernel") && status.contains("/sctp"),
            "the refusal must name the missing kernel SCTP support: {status:?}"
        );
        assert_eq!(p.wait_code(), Some(1));
        warn_sctp_untested("compat -proto sctp");
        return;
    }
    let backend = sctp_echo("127.0.0.1:0");
    let args = compat_args("sctp", host, backend);
    let mut p = spawn_proxy(&refs(&args), None, None);
    assert_eq!(p.read_status(), b"0\n");
    let mut s = sctp_connect(host);
    // Small messages, then one large enough to fill the copy buffer several times.
    for msg in [
        b"hello sctp".to_vec(),
        (0..300_000u32).map(|i| i as u8).collect(),
    ] {
        use std::io::{Read, Write};
        s.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert!(back == msg, "SCTP echo through the proxy changed the bytes");
    }
    drop(s);
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_code(), Some(0));
}

#[test]
fn use_listen_fd_serves_the_inherited_tcp_socket() {
    require_root();
    let backend = tcp_echo("127.0.0.1:0");
    let port = PORTS.take();
    // dockerd binds (it may or may not listen); the proxy must cope with a bound-only one.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let bound: SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
    let _ = port;
    let container_port = backend.port().to_string();
    let args = [
        "-proto",
        "tcp",
        "-host-ip",
        "127.0.0.1",
        "-host-port",
        &bound.port().to_string(),
        "-container-ip",
        "127.0.0.1",
        "-container-port",
        &container_port,
        "-use-listen-fd",
    ]
    .map(String::from);
    let mut p = spawn_proxy(&refs(&args), Some(OwnedFd::from(socket)), None);
    assert_eq!(p.read_status(), b"0\n");
    assert_eq!(echo_round_trip(bound, b"via fd 4").unwrap(), b"via fd 4");
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_code(), Some(0));
}

#[test]
fn use_listen_fd_without_fd_four_fails_on_the_status_pipe() {
    require_root();
    let args = [
        "-proto",
        "tcp",
        "-container-ip",
        "127.0.0.1",
        "-container-port",
        "80",
        "-use-listen-fd",
    ];
    let mut p = spawn_proxy(&args, None, None);
    let status = String::from_utf8(p.read_status()).unwrap();
    assert!(
        status.starts_with("1\n") && status.contains("fd 4"),
        "{status:?}"
    );
    assert_eq!(p.wait_code(), Some(1));
}

#[test]
fn udp_mode_and_udp_listen_fd_forward_datagrams() {
    require_root();
    let backend = udp_echo("127.0.0.1:0");
    let host: SocketAddr = format!("127.0.0.1:{}", PORTS.take()).parse().unwrap();
    let args = compat_args("udp", host, backend);
    let mut p = spawn_proxy(&refs(&args), None, None);
    assert_eq!(p.read_status(), b"0\n");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.connect(host).unwrap();
    client.send(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_code(), Some(0));

    let inherited = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bound = inherited.local_addr().unwrap();
    let mut args = compat_args("udp", bound, backend);
    args.push("-use-listen-fd".into());
    let mut p = spawn_proxy(&refs(&args), Some(OwnedFd::from(inherited)), None);
    assert_eq!(p.read_status(), b"0\n");
    client.connect(bound).unwrap();
    client.send(b"pong").unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
}

#[test]
fn version_flag_prints_and_exits_zero() {
    require_root();
    let out = std::process::Command::new(proxy_bin())
        .arg("-v")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ferry-proxy"));
}

#[test]
fn sigterm_right_after_the_ready_byte_still_exits_zero() {
    require_root();
    for _ in 0..5 {
        let host: SocketAddr = format!("127.0.0.1:{}", PORTS.take()).parse().unwrap();
        let args = compat_args("tcp", host, "127.0.0.1:9".parse().unwrap());
        let mut p = spawn_proxy(&refs(&args), None, None);
        assert_eq!(p.read_status(), b"0\n");
        p.signal(Signal::SIGTERM);
        assert_eq!(p.wait_code(), Some(0));
    }
}

/// A parent that starts the proxy with stdin, stdout and stderr closed must not have the
/// proxy's sockets take those numbers (a diagnostic for stderr would then land in a client's
/// stream): the proxy puts /dev/null there first, and still reports ready and forwards.
#[test]
fn closed_stdio_descriptors_are_filled_with_dev_null_before_any_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    require_root();
    let backend = tcp_echo("127.0.0.1:0");
    let host: SocketAddr = format!("127.0.0.1:{}", PORTS.take()).parse().unwrap();
    let args = compat_args("tcp", host, backend);
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let write_raw = write_end.as_raw_fd();
    let mut cmd = std::process::Command::new(proxy_bin());
    cmd.args(&args);
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let status = libc::fcntl(write_raw, libc::F_DUPFD_CLOEXEC, 100);
            if status < 0 || libc::dup2(status, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 0..=2 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(write_end);
    let mut p = Spawned {
        child,
        status: std::fs::File::from(read_end),
    };
    assert_eq!(p.read_status(), b"0\n");
    for fd in 0..=2 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", p.child.id())).unwrap();
        assert_eq!(
            target,
            std::path::Path::new("/dev/null"),
            "fd {fd} of the proxy should be /dev/null, not a socket"
        );
    }
    assert_eq!(echo_round_trip(host, b"hello").unwrap(), b"hello");
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_code(), Some(0));
}
