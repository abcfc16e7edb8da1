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
//! Hot path in batches and without allocation: `recvmmsg` takes up to [`dgram::BATCH`]
//! datagrams per system call into buffers kept per runtime thread, and each run of datagrams
//! of one flow leaves in one `sendmmsg`; control messages and send headers live on the
//! stack; only a new flow allocates. After each batch it sent on, the proxy offers its CPU
//! to the receiver it just woke (see [`let_receivers_run`]).

use crate::dgram::{self, LocalDst, RecvBatch};
use crate::metrics::MappingStats;
use crate::proxyproto::{self, ProxyProtocol};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest UDP payload over IPv4 (65,535 − 8 − 20); the buffers hold a little more.
pub const MAX_DATAGRAM: usize = 65_507;

/// Tunables of a UDP mapping.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// A flow with no datagram in either direction for this long is removed.
    pub idle_timeout: Duration,
    /// Most flows at once; the one idle the longest is evicted to make room.
    pub max_flows: usize,
    /// PROXY protocol v2 (DGRAM) header in front of every datagram to the backend, naming
    /// the client and the address it targeted (v1 has no UDP form). The header takes
    /// 28 bytes (IPv4) or 52 (IPv6) of the datagram's room.
    pub proxy_protocol: Option<ProxyProtocol>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            idle_timeout: Duration::from_secs(90),
            max_flows: 4096,
            proxy_protocol: None,
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

struct Flow {
    socket: Arc<UdpSocket>,
    /// PROXY v2 header sent before each datagram (empty: none).
    header: Prefix,
    /// Runs of equal-sized datagrams go out as one GSO send until the kernel refuses one.
    gso: bool,
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
    /// Receive batch of the listeners served by this runtime thread (used only between
    /// awaits, so never borrowed twice).
    static LISTENER_BATCH: RefCell<Box<RecvBatch>> = RefCell::new(RecvBatch::new());
    /// Receive batch of the flows' reply tasks on this thread.
    static REPLY_BATCH: RefCell<Box<RecvBatch>> = RefCell::new(RecvBatch::new());
}

/// Batches taken per wake-up before the receive loop yields to timers and signals.
const BATCHES_PER_WAKEUP: usize = 8;

/// Called after each batch the proxy sent on: offers this CPU to whatever else is runnable
/// on it (sched_yield), typically the receiver the batch just woke. Running on, the proxy
/// would go on filling that receiver's socket buffer (~208 KiB by default, about 90
/// datagrams) while the receiver waits for a CPU that the proxy and the sender hold, and
/// the kernel would drop the rest: on two cores shared by sender, proxy and backend that
/// was most of the loss (at 3× docker-proxy's rate, about 14% without and 1.5–3.5% with, in
/// runs by hand). One system call per batch; it returns at once when nothing else wants
/// the CPU.
fn let_receivers_run() {
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
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
    let mut closed = shared.closed.clone();
    let fd = listener.as_raw_fd();
    let recv = || LISTENER_BATCH.with(|b| b.borrow_mut().recv(fd, true));
    let mut forwarder = Forwarder {
        backend,
        listener: &listener,
        shared: &shared,
        clock,
    };
    loop {
        tokio::select! {
            received = listener.async_io(Interest::READABLE, recv) => {
                match received {
                    Ok(_) => {
                        LISTENER_BATCH.with(|b| forwarder.forward(&b.borrow(), &mut flows));
                        let_receivers_run();
                        // Drain what else is queued before going back through select!, whose
                        // timer and signal futures cost more than a batch does.
                        for _ in 1..BATCHES_PER_WAKEUP {
                            if listener.try_io(Interest::READABLE, recv).is_err() {
                                break;
                            }
                            LISTENER_BATCH.with(|b| forwarder.forward(&b.borrow(), &mut flows));
                            let_receivers_run();
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

/// What forwarding a received batch needs besides the flow table.
struct Forwarder<'a> {
    backend: SocketAddr,
    listener: &'a Arc<UdpSocket>,
    shared: &'a UdpShared,
    clock: Instant,
}

impl Forwarder<'_> {
    /// Sends every datagram of `batch` to its client's flow (made on first sight), one
    /// `sendmmsg` per run of consecutive datagrams of the same flow.
    fn forward(&mut self, batch: &RecvBatch, flows: &mut HashMap<SocketAddr, Flow>) {
        let stats = &self.shared.stats;
        let now = self.clock.elapsed().as_millis() as u64;
        let mut run = [0usize; dgram::BATCH];
        let mut run_len = 0;
        let mut run_client: Option<SocketAddr> = None;
        let mut run_fd: RawFd = -1;
        let mut run_gso = false;
        let mut run_header = Prefix::default();
        for i in 0..batch.len() {
            let Some(client) = batch.source(i) else {
                MappingStats::add(&stats.errors, 1);
                continue;
            };
            if run_client != Some(client) {
                // Flush before the table changes: making a flow may evict the one whose
                // socket the pending run would be sent on.
                self.flush(
                    batch,
                    &run[..run_len],
                    (run_fd, run_gso, run_header.as_slice()),
                    run_client,
                    flows,
                );
                run_len = 0;
                run_client = None;
                let Some(flow) = self.flow_for(client, batch.destination(i), flows) else {
                    continue;
                };
                flow.last_active.store(now, Ordering::Relaxed);
                run_fd = flow.socket.as_raw_fd();
                run_gso = flow.gso;
                run_header = flow.header;
                run_client = Some(client);
            }
            run[run_len] = i;
            run_len += 1;
        }
        self.flush(
            batch,
            &run[..run_len],
            (run_fd, run_gso, run_header.as_slice()),
            run_client,
            flows,
        );
    }

    /// The client's flow, made if new (evicting the longest idle one when the table is
    /// full); None when a flow cannot be made (counted as an error).
    fn flow_for<'f>(
        &self,
        client: SocketAddr,
        dst: LocalDst,
        flows: &'f mut HashMap<SocketAddr, Flow>,
    ) -> Option<&'f Flow> {
        let stats = &self.shared.stats;
        if !flows.contains_key(&client) {
            if flows.len() >= self.shared.opts.max_flows.max(1) {
                evict_oldest(flows, stats);
            }
            match new_flow(
                self.backend,
                client,
                dst,
                self.listener,
                stats.clone(),
                self.clock,
                &self.shared.opts,
            ) {
                Ok(flow) => {
                    flows.insert(client, flow);
                }
                Err(_) => {
                    MappingStats::add(&stats.errors, 1);
                    return None;
                }
            }
        }
        flows.get(&client)
    }

    /// Sends a run of datagrams of `client`'s flow on its socket `fd`, each behind
    /// `header` (the flow's PROXY header, often empty).
    fn flush(
        &self,
        batch: &RecvBatch,
        run: &[usize],
        (fd, gso, header): (RawFd, bool, &[u8]),
        client: Option<SocketAddr>,
        flows: &mut HashMap<SocketAddr, Flow>,
    ) {
        if run.is_empty() {
            return;
        }
        // A raw send: tokio's try_send reports WouldBlock on a socket it has not yet seen
        // become writable, which would drop every flow's first datagram.
        let sent = dgram::send_batch(
            fd,
            run.iter().map(|&i| batch.payload(i)),
            None,
            LocalDst::Unknown,
            gso,
            header,
        );
        if sent.gso_refused {
            if let Some(flow) = client.and_then(|c| flows.get_mut(&c)) {
                flow.gso = false;
            }
        }
        let stats = &self.shared.stats;
        // Payload bytes: the PROXY headers are ours, not the client's.
        let headers = (sent.datagrams * header.len()) as u64;
        MappingStats::add(&stats.bytes_to_backend, sent.bytes.saturating_sub(headers));
        if sent.dropped > 0 {
            // Full socket buffer or ICMP error from an earlier datagram: UDP may drop.
            MappingStats::add(&stats.errors, sent.dropped as u64);
        }
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

/// A short byte string kept inline (the PROXY header of a flow), so a run of datagrams can
/// carry it without borrowing the flow table.
#[derive(Clone, Copy)]
struct Prefix {
    bytes: [u8; proxyproto::V2_MAX_LEN],
    len: usize,
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix {
            bytes: [0; proxyproto::V2_MAX_LEN],
            len: 0,
        }
    }
}

impl Prefix {
    fn new(bytes: &[u8]) -> Prefix {
        let mut p = Prefix::default();
        p.len = bytes.len().min(p.bytes.len());
        p.bytes[..p.len].copy_from_slice(&bytes[..p.len]);
        p
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The address a client targeted: from packet-info on a wildcard listener, else the
/// listener's own address.
fn local_address(listener: &UdpSocket, dst: LocalDst) -> io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    Ok(match dst {
        LocalDst::Unknown => bound,
        LocalDst::V4(a) => SocketAddr::new(Ipv4Addr::from(a).into(), bound.port()),
        LocalDst::V6(a, _) => SocketAddr::new(Ipv6Addr::from(a).into(), bound.port()),
    })
}

fn new_flow(
    backend: SocketAddr,
    client: SocketAddr,
    dst: LocalDst,
    listener: &Arc<UdpSocket>,
    stats: Arc<MappingStats>,
    clock: Instant,
    opts: &UdpOptions,
) -> io::Result<Flow> {
    let header = match opts.proxy_protocol {
        Some(_) => {
            let local = local_address(listener, dst)?;
            Prefix::new(&proxyproto::dgram_header_v2(client, local))
        }
        None => Prefix::default(),
    };
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
        Arc::downgrade(listener),
        client,
        dst,
        last_active.clone(),
        stats.clone(),
        clock,
    ));
    Ok(Flow {
        socket,
        header,
        gso: true,
        last_active,
        replies,
        stats,
    })
}

/// Relays the backend's replies of one flow to its client through the listener. Holds the
/// listener weakly: once the mapping's receive loop is gone (removed), its socket closes at
/// once and the host port is free, even before this aborted task is dropped.
async fn relay_replies(
    backend: Arc<UdpSocket>,
    listener: Weak<UdpSocket>,
    client: SocketAddr,
    dst: LocalDst,
    last_active: Arc<AtomicU64>,
    stats: Arc<MappingStats>,
    clock: Instant,
) {
    let to = dgram::sockaddr_from(client);
    let fd = backend.as_raw_fd();
    let recv = || REPLY_BATCH.with(|b| b.borrow_mut().recv(fd, false));
    let mut gso = true;
    loop {
        if backend.readable().await.is_err() {
            return;
        }
        let mut drained = false;
        for _ in 0..BATCHES_PER_WAKEUP {
            match backend.try_io(Interest::READABLE, recv) {
                Ok(_) => {
                    last_active.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
                    let Some(listener) = listener.upgrade() else {
                        return;
                    };
                    let sent = REPLY_BATCH.with(|b| {
                        let batch = b.borrow();
                        dgram::send_batch(
                            listener.as_raw_fd(),
                            (0..batch.len()).map(|i| batch.payload(i)),
                            Some(&to),
                            dst,
                            gso,
                            &[],
                        )
                    });
                    gso &= !sent.gso_refused;
                    MappingStats::add(&stats.bytes_to_client, sent.bytes);
                    if sent.dropped > 0 {
                        MappingStats::add(&stats.errors, sent.dropped as u64);
                    }
                    let_receivers_run();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(_) => {
                    // ECONNREFUSED from an ICMP port-unreachable: the backend is not
                    // listening (yet); keep the flow, count it.
                    MappingStats::add(&stats.errors, 1);
                    drained = true;
                    break;
                }
            }
        }
        if !drained {
            // A busy flow: let the other tasks run before the next burst.
            tokio::task::yield_now().await;
        }
    }
}
