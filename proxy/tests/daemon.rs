//! Daemon mode end to end: the real binary, its unix-socket API through the library's
//! synchronous client, state across restarts, conflicts, metrics, draining.

mod common;

use common::*;
use ferry_proxy::client::Client;
use ferry_proxy::state::{MappingSpec, Proto};
use ferry_proxy::Error;
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

static PORTS: PortPool = PortPool::new(24200);

/// A daemon process this test started; killed by PID on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let socket = dir.join("run/proxy.sock");
        let child = Command::new(proxy_bin())
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .arg(format!("--state-dir={}", dir.join("state").display()))
            .args(["--drain-timeout", "5s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let d = Daemon { child, socket };
        assert!(
            wait_until(Duration::from_secs(10), || d.client().health().is_ok()),
            "daemon did not answer on {}",
            d.socket.display()
        );
        d
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    fn stop(mut self) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        )
        .unwrap();
        let mut code = None;
        assert!(
            wait_until(Duration::from_secs(10), || {
                if let Some(st) = self.child.try_wait().unwrap() {
                    code = st.code();
                    true
                } else {
                    false
                }
            }),
            "daemon did not exit after SIGTERM"
        );
        code
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tcp_spec(owner: &str, host_ip: &str, port: u16, backend: SocketAddr) -> MappingSpec {
    MappingSpec {
        id: String::new(),
        owner: owner.into(),
        proto: Proto::Tcp,
        host_ip: host_ip.parse().unwrap(),
        host_port: port,
        host_port_end: None,
        container_ip: backend.ip(),
        container_port: backend.port(),
        proxy_protocol: None,
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
fn add_list_forward_delete_through_the_client() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "API socket must be root-only");
    let c = d.client();
    let backend = tcp_echo("127.0.0.1:0");
    let port = PORTS.take();
    let status = c
        .add(&tcp_spec("ctr1", "127.0.0.1", port, backend))
        .unwrap();
    assert!(status.listening);
    assert_eq!(status.spec.id, format!("ctr1_tcp_127.0.0.1_{port}"));
    // Adding the identical mapping again is fine (retries).
    assert_eq!(
        c.add(&tcp_spec("ctr1", "127.0.0.1", port, backend))
            .unwrap(),
        status
    );
    assert_eq!(
        echo_round_trip(addr("127.0.0.1", port), b"daemon").unwrap(),
        b"daemon"
    );
    let listed = c.list().unwrap();
    assert_eq!(listed, vec![status.clone()]);
    assert!(c.delete(&status.spec.id).unwrap());
    assert!(
        !c.delete(&status.spec.id).unwrap(),
        "second delete reports already gone"
    );
    // DELETE answers only once the port is closed: connecting fails, re-adding succeeds.
    assert!(TcpStream::connect(addr("127.0.0.1", port)).is_err());
    assert!(c.list().unwrap().is_empty());
    c.add(&tcp_spec("ctr1-again", "127.0.0.1", port, backend))
        .unwrap();
    assert_eq!(c.delete_owner("ctr1-again").unwrap(), 1);
    assert!(TcpStream::connect(addr("127.0.0.1", port)).is_err());
}

#[test]
fn port_range_udp_and_delete_by_owner() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let c = d.client();
    let first = PORTS.take_range(3);
    // Three echo backends on consecutive ports are hard to get; one listener per port.
    let backends: Vec<SocketAddr> = (0..3).map(|_| tcp_echo("127.0.0.1:0")).collect();
    let mut spec = tcp_spec("ctr2", "127.0.0.1", first, backends[0]);
    spec.host_port_end = Some(first + 2);
    // containerPort + offset must reach each backend: only the first is checked for data,
    // the others must at least be bound.
    c.add(&spec).unwrap();
    assert_eq!(
        echo_round_trip(addr("127.0.0.1", first), b"r").unwrap(),
        b"r"
    );
    for p in first..=first + 2 {
        assert!(
            TcpStream::connect(addr("127.0.0.1", p)).is_ok(),
            "port {p} bound"
        );
    }
    let udp_backend = udp_echo("127.0.0.1:0");
    let udp_port = PORTS.take();
    let mut uspec = tcp_spec("ctr2", "127.0.0.1", udp_port, udp_backend);
    uspec.proto = Proto::Udp;
    c.add(&uspec).unwrap();
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.connect(addr("127.0.0.1", udp_port)).unwrap();
    u.send(b"dgram").unwrap();
    let mut buf = [0u8; 16];
    let n = u.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"dgram");
    let other = c
        .add(&tcp_spec("other", "127.0.0.1", PORTS.take(), backends[1]))
        .unwrap();
    assert_eq!(c.list_owner("ctr2").unwrap().len(), 2);
    assert_eq!(c.delete_owner("ctr2").unwrap(), 2);
    assert_eq!(c.list().unwrap(), vec![other]);
    assert!(TcpStream::connect(addr("127.0.0.1", first + 1)).is_err());
    // The UDP mapping had a live flow (its reply task held on to the listener): the port is
    // free as soon as the delete has answered.
    std::net::UdpSocket::bind(addr("127.0.0.1", udp_port))
        .expect("the UDP host port is free right after the delete");
}

#[test]
fn conflicts_name_the_holder() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let c = d.client();
    let backend = tcp_echo("127.0.0.1:0");
    let port = PORTS.take();
    c.add(&tcp_spec("owner-a", "0.0.0.0", port, backend))
        .unwrap();
    // Another owner wants an overlapping address: the holder is the first mapping.
    match c.add(&tcp_spec("owner-b", "127.0.0.1", port, backend)) {
        Err(Error::Conflict { holder, msg }) => {
            assert!(holder.contains("owner-a"), "{holder}");
            assert!(msg.contains(&port.to_string()), "{msg}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A port held by a host process: the holder is that process, by name and pid.
    let busy = PORTS.take();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", busy)).unwrap();
    match c.add(&tcp_spec("owner-c", "127.0.0.1", busy, backend)) {
        Err(Error::Conflict { holder, .. }) => {
            assert!(
                holder.contains(&format!("(pid {})", std::process::id())),
                "holder should be this test process: {holder}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The raw HTTP answer is 409 with error and holder fields.
    let body = serde_json::to_vec(&tcp_spec("owner-c", "127.0.0.1", busy, backend)).unwrap();
    let raw = c.request("POST", "/v1/mappings", Some(&body)).unwrap();
    assert_eq!(raw.status, 409);
    let v: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("in use"));
    assert!(v["holder"].as_str().is_some());
    // Bad input is a 400 naming the field.
    let raw = c
        .request(
            "POST",
            "/v1/mappings",
            Some(br#"{"proto":"tcp","hostPort":0,"containerIP":"10.213.48.2","containerPort":80}"#),
        )
        .unwrap();
    assert_eq!(raw.status, 400);
    assert!(String::from_utf8_lossy(&raw.body).contains("hostPort"));
}

#[test]
fn restart_restores_mappings_from_the_state_dir() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let backend = tcp_echo("127.0.0.1:0");
    let port = PORTS.take();
    let d = Daemon::start(dir.path());
    let added = d
        .client()
        .add(&tcp_spec("persist", "127.0.0.1", port, backend))
        .unwrap();
    assert_eq!(d.stop(), Some(0));
    assert!(dir.path().join("state/mappings.json").exists());
    assert!(TcpStream::connect(addr("127.0.0.1", port)).is_err());
    let d = Daemon::start(dir.path());
    assert_eq!(d.client().list().unwrap(), vec![added]);
    assert_eq!(
        echo_round_trip(addr("127.0.0.1", port), b"back").unwrap(),
        b"back"
    );
}

#[test]
fn metrics_count_connections_and_bytes_per_mapping() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let c = d.client();
    let backend = tcp_echo("127.0.0.1:0");
    let port = PORTS.take();
    let id = c
        .add(&tcp_spec("m", "127.0.0.1", port, backend))
        .unwrap()
        .spec
        .id;
    echo_round_trip(addr("127.0.0.1", port), &[7u8; 1000]).unwrap();
    let labels = format!("{{mapping=\"{id}\",owner=\"m\",proto=\"tcp\"}}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let text = c.metrics().unwrap();
            text.contains(&format!("ferry_proxy_connections_total{labels} 1"))
                && text.contains(&format!("ferry_proxy_bytes_to_backend_total{labels} 1000"))
                && text.contains(&format!("ferry_proxy_bytes_to_client_total{labels} 1000"))
        }),
        "{}",
        c.metrics().unwrap()
    );
    let text = c.metrics().unwrap();
    assert!(text.contains("# TYPE ferry_proxy_connections_active gauge"));
    assert!(text.contains("ferry_proxy_udp_flows_active"));
    assert!(text.contains("ferry_proxy_errors_total"));
}

#[test]
fn sigterm_stops_listening_but_drains_open_connections() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let backend = tcp_echo("127.0.0.1:0");
    let port = PORTS.take();
    d.client()
        .add(&tcp_spec("drain", "127.0.0.1", port, backend))
        .unwrap();
    let mut open = TcpStream::connect(addr("127.0.0.1", port)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    open.write_all(b"1").unwrap();
    let mut b = [0u8; 1];
    open.read_exact(&mut b).unwrap();
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || TcpStream::connect(
        addr("127.0.0.1", port)
    )
    .is_err()));
    // The open connection still works while draining.
    open.write_all(b"2").unwrap();
    open.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"2");
    drop(open);
    assert_eq!(d.stop_after_signal(), Some(0));
}

impl Daemon {
    fn stop_after_signal(mut self) -> Option<i32> {
        let mut code = None;
        assert!(wait_until(Duration::from_secs(10), || {
            match self.child.try_wait().unwrap() {
                Some(st) => {
                    code = st.code();
                    true
                }
                None => false,
            }
        }));
        code
    }
}

/// An SCTP mapping over the API: forwarded where the kernel has SCTP; where it has not, a
/// 400 (Invalid) whose message names the missing kernel support, nothing listed, nothing persisted
/// (and the test says loudly that the data path went untested).
#[test]
fn sctp_mapping_forwards_where_the_kernel_has_it_and_is_refused_by_name_where_not() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let c = d.client();
    let port = PORTS.take();
    if !kernel_has_sctp() {
        let mut spec = tcp_spec("ctr-sctp", "127.0.0.1", port, addr("127.0.0.1", 9));
        spec.proto = Proto::Sctp;
        match c.add(&spec) {
            // The client turns the API's 400 into Invalid.
            Err(Error::Invalid(msg)) => {
                assert!(
                    msg.contains("SCTP") && msg.contains("kernel") && msg.contains("sctp"),
                    "the refusal must name the missing kernel SCTP support: {msg}"
                );
            }
            other => panic!("SCTP mapping on a kernel without SCTP: {other:?}"),
        }
        assert!(c.list().unwrap().is_empty());
        warn_sctp_untested("daemon sctp mapping");
        return;
    }
    let backend = sctp_echo("127.0.0.1:0");
    let mut spec = tcp_spec("ctr-sctp", "127.0.0.1", port, backend);
    spec.proto = Proto::Sctp;
    let status = c.add(&spec).unwrap();
    assert!(status.listening);
    let mut s = sctp_connect(addr("127.0.0.1", port));
    s.write_all(b"sctp through the daemon").unwrap();
    let mut back = [0u8; 23];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"sctp through the daemon");
    assert!(c.delete(&status.spec.id).unwrap());
}
