//! Out of file descriptors: a proxy process limited to 256 descriptors meets 1,000 clients.
//! The excess must be refused (not left hanging), the connections it holds keep working,
//! and once clients go away it serves new ones again.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

static PORTS: PortPool = PortPool::new(24600);

#[test]
fn nofile_256_with_1000_clients_refuses_excess_keeps_serving_and_recovers() {
    require_root();
    raise_nofile(8192);
    let backend = tcp_echo("127.0.0.1:0");
    let host: SocketAddr = format!("127.0.0.1:{}", PORTS.take()).parse().unwrap();
    let args = [
        "-proto".to_string(),
        "tcp".into(),
        "-host-ip".into(),
        "127.0.0.1".into(),
        "-host-port".into(),
        host.port().to_string(),
        "-container-ip".into(),
        "127.0.0.1".into(),
        "-container-port".into(),
        backend.port().to_string(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proxy = spawn_proxy(&argv, None, Some(256));
    assert_eq!(proxy.read_status(), b"0\n");

    let mut clients = Vec::new();
    let mut refused_at_connect = 0;
    for _ in 0..1000 {
        match TcpStream::connect_timeout(&host, Duration::from_secs(5)) {
            Ok(s) => clients.push(s),
            Err(_) => refused_at_connect += 1,
        }
    }
    let (mut served, mut refused, mut hung) = (0, refused_at_connect, 0);
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if c.write_all(b"ping").is_err() {
            refused += 1;
            continue;
        }
        let mut b = [0u8; 4];
        match c.read_exact(&mut b) {
            Ok(()) if &b == b"ping" => served += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => hung += 1,
            _ => refused += 1,
        }
    }
    eprintln!("1000 clients against RLIMIT_NOFILE=256: {served} served, {refused} refused, {hung} unanswered");
    assert!(served >= 20, "too few served: {served}");
    assert!(refused >= 500, "excess must be refused: {refused}");
    assert_eq!(hung, 0, "no client may be left hanging");
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "proxy must survive"
    );

    drop(clients);
    assert!(
        wait_until(Duration::from_secs(10), || echo_round_trip(
            host,
            b"recovered"
        )
        .is_ok()),
        "proxy must serve again once descriptors are free"
    );
    // And a batch in parallel after recovery.
    for _ in 0..50 {
        assert_eq!(echo_round_trip(host, b"again").unwrap(), b"again");
    }
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_code(), Some(0));
}
