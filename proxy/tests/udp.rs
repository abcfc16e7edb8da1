//! UDP forwarding: flow table, idle timeout, replies from the targeted address, limits.

mod common;

use common::*;
use ferry_proxy::metrics::MappingStats;
use ferry_proxy::sockets;
use ferry_proxy::udp::{self, UdpOptions, UdpShared, MAX_DATAGRAM};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

static PORTS: PortPool = PortPool::new(23800);

struct Proxy {
    port: u16,
    stats: Arc<MappingStats>,
    _close: tokio::sync::watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

fn start_proxy(listen: SocketAddr, backend: SocketAddr, opts: UdpOptions) -> Proxy {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let socket = sockets::udp_socket(listen).unwrap();
    let port = socket.local_addr().unwrap().port();
    let stats = Arc::new(MappingStats::default());
    let (close, closed) = tokio::sync::watch::channel(false);
    let shared = Arc::new(UdpShared {
        opts,
        stats: stats.clone(),
        closed,
    });
    runtime.spawn(async move {
        let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
        udp::serve(socket, backend, shared).await;
    });
    Proxy {
        port,
        stats,
        _close: close,
        _runtime: runtime,
    }
}

fn client(bind: &str) -> UdpSocket {
    let c = UdpSocket::bind(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

#[test]
fn many_clients_get_their_replies_from_the_address_they_targeted() {
    require_root();
    let backend = udp_echo("127.0.0.1:0");
    let proxy = start_proxy(
        format!("0.0.0.0:{}", PORTS.take()).parse().unwrap(),
        backend,
        UdpOptions::default(),
    );
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let target: SocketAddr = if i % 2 == 0 {
                format!("127.0.0.1:{}", proxy.port)
            } else {
                format!("127.0.0.2:{}", proxy.port)
            }
            .parse()
            .unwrap();
            std::thread::spawn(move || {
                let c = client("127.0.0.1:0");
                let mut buf = [0u8; 64];
                for j in 0..10u8 {
                    let msg = [i as u8, j, 0xAB];
                    c.send_to(&msg, target).unwrap();
                    let (n, from) = c.recv_from(&mut buf).unwrap();
                    assert_eq!(&buf[..n], &msg, "client {i} datagram {j}");
                    assert_eq!(from, target, "reply must come from the targeted address");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(MappingStats::get(&proxy.stats.udp_flows_total), 40);
    // The counter is bumped right after the send: give the last ones a moment.
    assert!(wait_until(Duration::from_secs(2), || MappingStats::get(
        &proxy.stats.bytes_to_client
    ) == 40 * 10 * 3));
}

#[test]
fn ipv6_wildcard_replies_from_loopback_to_an_ipv4_backend() {
    require_root();
    let backend = udp_echo("127.0.0.1:0");
    let proxy = start_proxy(
        format!("[::]:{}", PORTS.take()).parse().unwrap(),
        backend,
        UdpOptions::default(),
    );
    let c = client("[::1]:0");
    let target: SocketAddr = format!("[::1]:{}", proxy.port).parse().unwrap();
    c.send_to(b"v6", target).unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"v6"[..], target));
}

#[test]
fn largest_datagram_passes_whole() {
    require_root();
    let backend = udp_echo("127.0.0.1:0");
    let proxy = start_proxy(
        format!("127.0.0.1:{}", PORTS.take()).parse().unwrap(),
        backend,
        UdpOptions::default(),
    );
    let c = client("127.0.0.1:0");
    c.connect(("127.0.0.1", proxy.port)).unwrap();
    let msg: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i % 251) as u8).collect();
    c.send(&msg).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(n, MAX_DATAGRAM);
    assert!(buf[..n] == msg[..]);
}

#[test]
fn idle_flow_is_removed_after_the_timeout() {
    require_root();
    let backend = udp_echo("127.0.0.1:0");
    let proxy = start_proxy(
        format!("127.0.0.1:{}", PORTS.take()).parse().unwrap(),
        backend,
        UdpOptions {
            idle_timeout: Duration::from_millis(300),
            ..UdpOptions::default()
        },
    );
    let c = client("127.0.0.1:0");
    c.connect(("127.0.0.1", proxy.port)).unwrap();
    c.send(b"x").unwrap();
    let mut buf = [0u8; 4];
    c.recv(&mut buf).unwrap();
    assert_eq!(MappingStats::get(&proxy.stats.udp_flows_active), 1);
    assert!(wait_until(Duration::from_secs(5), || MappingStats::get(
        &proxy.stats.udp_flows_active
    ) == 0));
    // The same client comes back: a new flow, still answered.
    c.send(b"y").unwrap();
    c.recv(&mut buf).unwrap();
    assert_eq!(MappingStats::get(&proxy.stats.udp_flows_total), 2);
}

#[test]
fn flow_stays_while_the_client_keeps_writing_without_replies() {
    require_root();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap(); // never answers
    let proxy = start_proxy(
        format!("127.0.0.1:{}", PORTS.take()).parse().unwrap(),
        sink.local_addr().unwrap(),
        UdpOptions {
            idle_timeout: Duration::from_millis(400),
            ..UdpOptions::default()
        },
    );
    let c = client("127.0.0.1:0");
    c.connect(("127.0.0.1", proxy.port)).unwrap();
    for _ in 0..12 {
        c.send(b"tick").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(MappingStats::get(&proxy.stats.udp_flows_active), 1);
    }
    assert_eq!(MappingStats::get(&proxy.stats.udp_flows_total), 1);
    assert!(wait_until(Duration::from_secs(5), || MappingStats::get(
        &proxy.stats.udp_flows_active
    ) == 0));
}

#[test]
fn full_table_evicts_the_flow_idle_longest() {
    require_root();
    let backend = udp_echo("127.0.0.1:0");
    let proxy = start_proxy(
        format!("127.0.0.1:{}", PORTS.take()).parse().unwrap(),
        backend,
        UdpOptions {
            max_flows: 2,
            ..UdpOptions::default()
        },
    );
    let mut buf = [0u8; 8];
    let clients: Vec<UdpSocket> = (0..3).map(|_| client("127.0.0.1:0")).collect();
    for c in &clients {
        c.connect(("127.0.0.1", proxy.port)).unwrap();
        c.send(b"hi").unwrap();
        c.recv(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(MappingStats::get(&proxy.stats.udp_flows_evicted), 1);
    assert_eq!(MappingStats::get(&proxy.stats.udp_flows_active), 2);
    // The evicted (first) client is served again with a fresh flow.
    clients[0].send(b"back").unwrap();
    let n = clients[0].recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"back");
}

/// PROXY protocol v2 on UDP: every datagram reaches the backend behind a DGRAM header that
/// names the client and the address it targeted (here 127.0.0.2 on a wildcard listener),
/// a burst of equal-sized datagrams included (the batched, GSO path); replies come back
/// without any header.
#[test]
fn proxy_protocol_v2_heads_every_datagram_with_the_client_and_target() {
    require_root();
    // Backend: checks nothing itself, hands (header, payload) to the test, echoes the payload.
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = backend.recv_from(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
            let header_len = if n >= 16 && buf[..12] == ferry_proxy::proxyproto::V2_SIGNATURE {
                16 + u16::from_be_bytes([buf[14], buf[15]]) as usize
            } else {
                0
            };
            let _ = backend.send_to(&buf[header_len.min(n)..n], from);
        }
    });
    let proxy = start_proxy(
        format!("0.0.0.0:{}", PORTS.take()).parse().unwrap(),
        backend_addr,
        UdpOptions {
            proxy_protocol: Some(ferry_proxy::proxyproto::ProxyProtocol::V2),
            ..UdpOptions::default()
        },
    );
    let c = client("127.0.0.1:0");
    let target: SocketAddr = format!("127.0.0.2:{}", proxy.port).parse().unwrap();
    let expected_header = ferry_proxy::proxyproto::dgram_header_v2(c.local_addr().unwrap(), target);
    assert_eq!(expected_header[13], 0x12, "AF_INET + DGRAM");
    // One datagram and its reply.
    c.send_to(b"who am i", target).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"who am i"[..], target));
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(&seen[..expected_header.len()], &expected_header[..]);
    assert_eq!(&seen[expected_header.len()..], b"who am i");
    // A burst of equal-sized datagrams: each arrives whole, each behind the header.
    let burst: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1200]).collect();
    for d in &burst {
        c.send_to(d, target).unwrap();
    }
    for d in &burst {
        let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(seen.len(), expected_header.len() + d.len());
        assert_eq!(&seen[..expected_header.len()], &expected_header[..]);
        assert_eq!(&seen[expected_header.len()..], &d[..]);
        let n = c.recv(&mut vec![0u8; 2048]).unwrap();
        assert_eq!(n, d.len(), "replies carry no header");
    }
    // Payload bytes only in the counter.
    assert!(wait_until(Duration::from_secs(2), || MappingStats::get(
        &proxy.stats.bytes_to_backend
    ) == 8 + 20 * 1200));
}
