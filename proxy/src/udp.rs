//! UDP forwarding with a flow table.
//!
//! Each client address gets a flow: a socket connected to the backend, so the backend's
//! replies can be told apart per client. A flow lives while either side keeps sending and is
//! dropped after `idle_timeout` of silence (90 s by default, like docker-proxy's conntrack
//! timeout). The table is bounded; when full, the flow idle the longest is evicted.
//!
//! On a wildcard listener the destination address of each datagram is read from
//! IP_PKTINFO / IPV6_PKTINFO and the replies are sent with that address as their source, so
//! a client on a multi-homed host gets its answer from the address it spoke to.
//!
//! Hot path without allocation: one receive buffer per listener, one reply buffer per
//! runtime thread, control-message buffers on the stack; only a new flow allocates.

use crate::metrics::MappingStats;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest UDP payload over IPv4 (65,535 − 8 − 20); the buffers hold a little more.
pub const MAX_DATAGRAM: usize = 65_507;
const BUFFER_SIZE: usize = 65_536;
/// Datagrams handled per wake-up before the receive loop yields to timers and signals.
const BATCH: usize = 64;

/// Tunables of a UDP mapping.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// A flow with no datagram in either direction for this long is removed.
    pub idle_timeout: Duration,
    /// Most flows at once; the one idle the longest is evicted to make room.
    pub max_flows: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            idle_timeout: Duration::from_secs(90),
            max_flows: 4096,
        }
    }
}

/// What the listeners of one UDP mapping share.
pub struct UdpShared {
    /// Options of the mapping.
    pub opts: UdpOptions,
    /// Counters of the mapping.
    pub stats: Arc<MappingStats>,
    /// Becomes true when the mapping is removed.
    pub closed: watch::Receiver<bool>,
}

/// The address a datagram was sent to, as read from its packet-info control message.
#[derive(Clone, Copy)]
enum LocalDst {
    /// Listener bound to a specific address: the kernel picks the right source itself.
    Unknown,
    V4(libc::in_addr),
    V6(libc::in6_addr, u32),
}

struct Flow {
    socket: Arc<UdpSocket>,
    last_active: Arc<AtomicU64>,
    replies: JoinHandle<()>,
    stats: Arc<MappingStats>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.replies.abort();
        self.stats.udp_flows_active.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// Reply buffer shared by every flow task running on this thread (used only between
    /// awaits, so never borrowed twice).
    static REPLY_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0u8; BUFFER_SIZE]);
}

/// Receives datagrams on `socket` forever and forwards each client's flow to `backend`.
pub async fn serve(socket: UdpSocket, backend: SocketAddr, shared: Arc<UdpShared>) {
    let listener = Arc::new(socket);
    let clock = Instant::now();
    let idle_ms = shared.opts.idle_timeout.as_millis().max(1) as u64;
    let sweep_every =
        (shared.opts.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut closed = shared.closed.clone();
    let fd = listener.as_raw_fd();
    loop {
        tokio::select! {
            received = listener.async_io(Interest::READABLE, || recv_with_dst(fd, &mut buf)) => {
                match received {
                    Ok((n, client, dst)) => {
                        let now = clock.elapsed().as_millis() as u64;
                        on_datagram(&buf[..n], client, dst, now, backend, &listener, &mut flows, &shared, clock);
                        // Drain what else is queued before going back through select!, whose
                        // timer and signal futures cost more than a datagram does.
                        for _ in 0..BATCH {
                            match listener.try_io(Interest::READABLE, || recv_with_dst(fd, &mut buf)) {
                                Ok((n, client, dst)) => on_datagram(&buf[..n], client, dst, now, backend, &listener, &mut flows, &shared, clock),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => {
                        MappingStats::add(&shared.stats.errors, 1);
                        if crate::sockets::is_resource_exhaustion(&e) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            _ = sweep.tick() => {
                let now = clock.elapsed().as_millis() as u64;
                flows.retain(|_, f| now.saturating_sub(f.last_active.load(Ordering::Relaxed)) < idle_ms);
            }
            _ = crate::metrics::closed(&mut closed) => return,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn on_datagram(
    payload: &[u8],
    client: SocketAddr,
    dst: LocalDst,
    now: u64,
    backend: SocketAddr,
    listener: &Arc<UdpSocket>,
    flows: &mut HashMap<SocketAddr, Flow>,
    shared: &UdpShared,
    clock: Instant,
) {
    let stats = &shared.stats;
    if !flows.contains_key(&client) {
        if flows.len() >= shared.opts.max_flows.max(1) {
            evict_oldest(flows, stats);
        }
        match new_flow(backend, client, dst, listener.clone(), stats.clone(), clock) {
            Ok(flow) => {
                flows.insert(client, flow);
            }
            Err(_) => {
                MappingStats::add(&stats.errors, 1);
                return;
            }
        }
    }
    let Some(flow) = flows.get(&client) else {
        return;
    };
    flow.last_active.store(now, Ordering::Relaxed);
    // A raw send: tokio's try_send reports WouldBlock on a socket it has not yet seen
    // become writable, which would drop every flow's first datagram.
    match send_connected(flow.socket.as_raw_fd(), payload) {
        Ok(n) => MappingStats::add(&stats.bytes_to_backend, n as u64),
        // Full socket buffer or ICMP error from an earlier datagram: UDP may drop.
        Err(_) => MappingStats::add(&stats.errors, 1),
    }
}

fn evict_oldest(flows: &mut HashMap<SocketAddr, Flow>, stats: &MappingStats) {
    let oldest = flows
        .iter()
        .min_by_key(|(_, f)| f.last_active.load(Ordering::Relaxed))
        .map(|(k, _)| *k);
    if let Some(key) = oldest {
        flows.remove(&key);
        MappingStats::add(&stats.udp_flows_evicted, 1);
    }
}

fn new_flow(
    backend: SocketAddr,
    client: SocketAddr,
    dst: LocalDst,
    listener: Arc<UdpSocket>,
    stats: Arc<MappingStats>,
    clock: Instant,
) -> io::Result<Flow> {
    let unspecified: SocketAddr = if backend.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let std_socket = std::net::UdpSocket::bind(unspecified)?;
    std_socket.connect(backend)?;
    std_socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(std_socket)?);
    let last_active = Arc::new(AtomicU64::new(clock.elapsed().as_millis() as u64));
    stats.udp_flows_active.fetch_add(1, Ordering::Relaxed);
    MappingStats::add(&stats.udp_flows_total, 1);
    let replies = tokio::spawn(relay_replies(
        socket.clone(),
        listener,
        client,
        dst,
        last_active.clone(),
        stats.clone(),
        clock,
    ));
    Ok(Flow {
        socket,
        last_active,
        replies,
        stats,
    })
}

async fn relay_replies(
    backend: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    dst: LocalDst,
    last_active: Arc<AtomicU64>,
    stats: Arc<MappingStats>,
    clock: Instant,
) {
    let (client_raw, client_len) = sockaddr_from(client);
    loop {
        if backend.readable().await.is_err() {
            return;
        }
        REPLY_BUFFER.with(|cell| {
            let mut buf = cell.borrow_mut();
            loop {
                match backend.try_recv(&mut buf[..]) {
                    Ok(n) => {
                        last_active.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
                        match send_with_src(
                            listener.as_raw_fd(),
                            &buf[..n],
                            &client_raw,
                            client_len,
                            dst,
                        ) {
                            Ok(_) => MappingStats::add(&stats.bytes_to_client, n as u64),
                            Err(_) => MappingStats::add(&stats.errors, 1),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        // ECONNREFUSED from an ICMP port-unreachable: the backend is not
                        // listening (yet); keep the flow, count it.
                        MappingStats::add(&stats.errors, 1);
                        break;
                    }
                }
            }
        });
    }
}

fn send_connected(fd: RawFd, payload: &[u8]) -> io::Result<usize> {
    // SAFETY: payload is a valid slice; the socket is connected.
    let n = unsafe {
        libc::send(
            fd,
            payload.as_ptr() as *const libc::c_void,
            payload.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Control-message space for one in6_pktinfo (the larger of the two), 8-byte aligned.
type CmsgBuffer = [u64; 8];

fn recv_with_dst(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, LocalDst)> {
    // SAFETY: all structures are plain C data, zero-initialised, sized for recvmsg.
    unsafe {
        let mut addr: libc::sockaddr_storage = zeroed();
        let mut control: CmsgBuffer = [0; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = size_of::<CmsgBuffer>() as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let client = sockaddr_to(&addr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
        })?;
        let mut dst = LocalDst::Unknown;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                dst = LocalDst::V4(info.ipi_addr);
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                dst = LocalDst::V6(info.ipi6_addr, info.ipi6_ifindex);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, client, dst))
    }
}

fn send_with_src(
    fd: RawFd,
    payload: &[u8],
    to: &libc::sockaddr_storage,
    to_len: libc::socklen_t,
    src: LocalDst,
) -> io::Result<usize> {
    // SAFETY: as in recv_with_dst; the control buffer is large enough for one pktinfo.
    unsafe {
        let mut control: CmsgBuffer = [0; 8];
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = to as *const _ as *mut libc::c_void;
        msg.msg_namelen = to_len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        match src {
            LocalDst::Unknown => {}
            LocalDst::V4(addr) => {
                msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as _;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: addr,
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
            }
            LocalDst::V6(addr, ifindex) => {
                msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as _;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                // The interface matters only for link-local sources; elsewhere leave routing
                // free to pick it.
                let link_local = addr.s6_addr[0] == 0xfe && (addr.s6_addr[1] & 0xc0) == 0x80;
                let info = libc::in6_pktinfo {
                    ipi6_addr: addr,
                    ipi6_ifindex: if link_local { ifindex } else { 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
            }
        }
        let n = libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

fn sockaddr_to(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn sockaddr_from(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we write the matching variant into it.
    unsafe {
        let mut storage: libc::sockaddr_storage = zeroed();
        let len = match addr {
            SocketAddr::V4(v4) => {
                let a = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in);
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = v4.port().to_be();
                a.sin_addr = libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let a = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6);
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = v6.port().to_be();
                a.sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                a.sin6_flowinfo = v6.flowinfo();
                a.sin6_scope_id = v6.scope_id();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for text in ["127.0.0.1:5353", "[::1]:53", "[fe80::1%2]:9"] {
            let a: SocketAddr = text.parse().unwrap();
            let (raw, _) = sockaddr_from(a);
            assert_eq!(sockaddr_to(&raw), Some(a));
        }
    }
}
