//! TCP forwarding through the library's data path (in-process proxies on loopback, and
//! backends inside a namespace the test creates).

mod common;

use common::*;
use ferry_proxy::metrics::MappingStats;
use ferry_proxy::proxyproto::ProxyProtocol;
use ferry_proxy::sockets;
use ferry_proxy::tcp::{self, TcpOptions, TcpShared};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

static PORTS: PortPool = PortPool::new(23400);

/// A running in-process proxy; dropping it stops the runtime (and every connection).
struct Proxy {
    addr: SocketAddr,
    stats: Arc<MappingStats>,
    _close: tokio::sync::watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

fn start_proxy(listen: SocketAddr, backend: SocketAddr, opts: TcpOptions) -> Proxy {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let std_listener = sockets::tcp_listener(listen).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let stats = Arc::new(MappingStats::default());
    let (close, closed) = tokio::sync::watch::channel(false);
    let shared = Arc::new(TcpShared::new(opts, stats.clone(), closed));
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        tcp::serve(listener, backend, shared).await;
    });
    Proxy {
        addr,
        stats,
        _close: close,
        _runtime: runtime,
    }
}

fn loopback(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Backend that reads the request until EOF, then answers with `reply_len` bytes derived
/// from what it read and closes.
fn reply_after_eof_backend(reply_len: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut req = Vec::new();
                c.read_to_end(&mut req).unwrap();
                let seed = req.len() as u8;
                let reply: Vec<u8> = (0..reply_len)
                    .map(|i| (i as u8).wrapping_add(seed))
                    .collect();
                c.write_all(&reply).unwrap();
            });
        }
    });
    addr
}

fn half_close_case(splice: bool) {
    require_root();
    let backend = reply_after_eof_backend(3 * 1024 * 1024 + 7);
    let proxy = start_proxy(
        loopback(PORTS.take()),
        backend,
        TcpOptions {
            splice,
            ..TcpOptions::default()
        },
    );
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(&[1u8; 1000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply.len(), 3 * 1024 * 1024 + 7);
    let seed = 1000usize as u8;
    assert!(reply
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i as u8).wrapping_add(seed)));
}

#[test]
fn client_shuts_write_and_still_gets_the_whole_reply_splice() {
    half_close_case(true);
}

#[test]
fn client_shuts_write_and_still_gets_the_whole_reply_buffered() {
    half_close_case(false);
}

#[test]
fn backend_shuts_write_and_client_can_still_send() {
    require_root();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"banner").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        rest
    });
    let proxy = start_proxy(loopback(PORTS.take()), backend, TcpOptions::default());
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"banner");
    c.write_all(b"late words").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), b"late words");
}

/// Counts sockets in CLOSE_WAIT (state 08) with `port` on either end.
fn close_wait_on(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port_of = |a: &str| u16::from_str_radix(a.rsplit_once(':').unwrap().1, 16).unwrap();
            if f.len() > 3 && f[3] == "08" && (port_of(f[1]) == port || port_of(f[2]) == port) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn no_socket_left_in_close_wait_after_both_sides_finish() {
    require_root();
    let backend = tcp_echo("127.0.0.1:0");
    let proxy = start_proxy(loopback(PORTS.take()), backend, TcpOptions::default());
    for _ in 0..20 {
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.write_all(b"abc").unwrap();
        let mut b = [0u8; 3];
        c.read_exact(&mut b).unwrap();
        drop(c); // full close by the client; the echo backend closes on EOF
    }
    assert!(
        wait_until(Duration::from_secs(10), || close_wait_on(proxy.addr.port())
            == 0
            && close_wait_on(backend.port()) == 0
            && MappingStats::get(&proxy.stats.active_connections) == 0),
        "CLOSE_WAIT sockets remain: {} on the listener side, {} on the backend side",
        close_wait_on(proxy.addr.port()),
        close_wait_on(backend.port())
    );
}

#[test]
fn ipv6_loopback_forwards_to_ipv4_backend_and_back() {
    require_root();
    let backend4 = tcp_echo("127.0.0.1:0");
    let proxy6 = start_proxy(
        format!("[::1]:{}", PORTS.take()).parse().unwrap(),
        backend4,
        TcpOptions::default(),
    );
    assert_eq!(
        echo_round_trip(proxy6.addr, b"six to four").unwrap(),
        b"six to four"
    );
    let backend6 = tcp_echo("[::1]:0");
    let proxy4 = start_proxy(loopback(PORTS.take()), backend6, TcpOptions::default());
    assert_eq!(
        echo_round_trip(proxy4.addr, b"four to six").unwrap(),
        b"four to six"
    );
}

#[test]
fn connection_cap_refuses_the_excess_and_recovers() {
    require_root();
    let backend = tcp_echo("127.0.0.1:0");
    let proxy = start_proxy(
        loopback(PORTS.take()),
        backend,
        TcpOptions {
            max_connections: 2,
            ..TcpOptions::default()
        },
    );
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.write_all(b"1").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        held.push(c);
    }
    let mut third = TcpStream::connect(proxy.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.write_all(b"1");
    let mut b = [0u8; 1];
    assert!(
        matches!(third.read(&mut b), Ok(0) | Err(_)),
        "third connection must be refused"
    );
    assert!(MappingStats::get(&proxy.stats.refused_connections) >= 1);
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || echo_round_trip(
        proxy.addr, b"again"
    )
    .is_ok()));
}

#[test]
fn unreachable_backend_closes_the_client_and_counts_an_error() {
    require_root();
    // A port nothing listens on: bind, note, close.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(
        loopback(PORTS.take()),
        dead,
        TcpOptions {
            connect_timeout: Duration::from_millis(500),
            ..TcpOptions::default()
        },
    );
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    assert!(wait_until(Duration::from_secs(2), || MappingStats::get(
        &proxy.stats.errors
    ) >= 1));
}

#[test]
fn proxy_protocol_headers_reach_the_backend() {
    require_root();
    for (version, expect_prefix) in [
        (
            ProxyProtocol::V1,
            b"PROXY TCP4 127.0.0.1 127.0.0.1 ".to_vec(),
        ),
        (
            ProxyProtocol::V2,
            ferry_proxy::proxyproto::V2_SIGNATURE.to_vec(),
        ),
    ] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut all = Vec::new();
            c.read_to_end(&mut all).unwrap();
            all
        });
        let proxy = start_proxy(
            loopback(PORTS.take()),
            backend,
            TcpOptions {
                proxy_protocol: Some(version),
                ..TcpOptions::default()
            },
        );
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        let client_port = c.local_addr().unwrap().port();
        c.write_all(b"payload").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let got = server.join().unwrap();
        assert!(
            got.starts_with(&expect_prefix),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(got.ends_with(b"payload"));
        if version == ProxyProtocol::V1 {
            let line = String::from_utf8_lossy(&got);
            assert!(
                line.contains(&format!(" {client_port} {}\r\n", proxy.addr.port())),
                "{line}"
            );
        }
    }
}

/// Writes `total` bytes of a fixed pseudo-random block pattern and checks every byte read
/// back against the same pattern (memcmp: fast even in a debug build).
fn pattern_block() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    Arc::new(
        (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect(),
    )
}

fn send_pattern(mut s: TcpStream, block: Arc<Vec<u8>>, total: u64) {
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(block.len() as u64) as usize;
        s.write_all(&block[..n]).unwrap();
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
}

fn check_pattern(mut s: TcpStream, block: Arc<Vec<u8>>) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return got;
        }
        let mut off = 0;
        while off < n {
            let pos = ((got + off as u64) % block.len() as u64) as usize;
            let len = (n - off).min(block.len() - pos);
            assert!(
                buf[off..off + len] == block[pos..pos + len],
                "byte mismatch near offset {}",
                got + off as u64
            );
            off += len;
        }
        got += n as u64;
    }
}

/// 1 GiB each way between the host loopback listener and a backend in a namespace behind a
/// veth, compared byte for byte. The bytes never enter user space in the proxy (splice), so
/// the debug build is fast enough.
#[test]
fn one_gib_each_way_is_byte_exact_through_a_namespace_backend() {
    require_root();
    const TOTAL: u64 = 1 << 30;
    let ns = Netns::new("big", 1);
    let listener = ns.run(|| TcpListener::bind("0.0.0.0:5001").unwrap());
    let backend: SocketAddr = SocketAddr::new(ns.ns_v4.into(), 5001);
    let block = pattern_block();
    let b2 = block.clone();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let reader = conn.try_clone().unwrap();
        let b3 = b2.clone();
        let sender = std::thread::spawn(move || send_pattern(conn, b3, TOTAL));
        let got = check_pattern(reader, b2);
        sender.join().unwrap();
        got
    });
    let proxy = start_proxy(loopback(PORTS.take()), backend, TcpOptions::default());
    let client = TcpStream::connect(proxy.addr).unwrap();
    let reader = client.try_clone().unwrap();
    let b4 = block.clone();
    let sender = std::thread::spawn(move || send_pattern(client, b4, TOTAL));
    let received = check_pattern(reader, block);
    sender.join().unwrap();
    assert_eq!(received, TOTAL, "client received");
    assert_eq!(server.join().unwrap(), TOTAL, "backend received");
    assert!(MappingStats::get(&proxy.stats.bytes_to_backend) == TOTAL);
    assert!(MappingStats::get(&proxy.stats.bytes_to_client) == TOTAL);
}

#[test]
fn ipv6_host_address_forwards_to_ipv4_backend_in_a_namespace() {
    require_root();
    let ns = Netns::new("v6", 2);
    let listener = ns.run(|| TcpListener::bind("0.0.0.0:5002").unwrap());
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        c.write_all(&buf).unwrap();
    });
    let proxy = start_proxy(
        format!("[::1]:{}", PORTS.take()).parse().unwrap(),
        SocketAddr::new(ns.ns_v4.into(), 5002),
        TcpOptions::default(),
    );
    assert_eq!(echo_round_trip(proxy.addr, b"hello").unwrap(), b"hello");
}

#[test]
fn late_reading_backend_gets_every_byte_under_backpressure() {
    require_root();
    const TOTAL: u64 = 48 << 20;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let block = pattern_block();
    let b2 = block.clone();
    let server = std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        // Let every buffer on the way fill up before reading anything.
        std::thread::sleep(Duration::from_millis(300));
        check_pattern(c, b2)
    });
    let proxy = start_proxy(loopback(PORTS.take()), backend, TcpOptions::default());
    let client = TcpStream::connect(proxy.addr).unwrap();
    send_pattern(client, block, TOTAL);
    assert_eq!(server.join().unwrap(), TOTAL);
}
