//! TCP forwarding: an accept loop per listener and one task per connection that pumps both
//! directions independently.
//!
//! Half-close: when one side sends FIN, the pump for that direction ends and shuts down
//! writing on the other side; the opposite direction keeps running until its own FIN. Both
//! sockets are dropped (closed) only when both directions are done or either fails, so no
//! socket lingers in CLOSE_WAIT after its peer finished.
//!
//! Data path: small pieces (under 64 KiB per read) go through one buffer per runtime thread,
//! read and sent in one round without awaiting; once a read fills that buffer the direction
//! is bulk and on Linux moves socket → pipe → socket with splice(2), never copying into user
//! space (a direction whose pipe cannot be created, or with splicing switched off, keeps
//! copying). Idle and chatty connections own no pipe and no buffer: two sockets and a task.

use crate::metrics::{GaugeGuard, MappingStats};
use crate::proxyproto::{self, ProxyProtocol};
use crate::sockets;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Tunables of a TCP mapping.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// Give up on the backend after this long (the client is then closed).
    pub connect_timeout: Duration,
    /// Most connections forwarded at once for the mapping; more are refused with RST.
    pub max_connections: usize,
    /// TCP keepalive idle time on both sockets (None: off).
    pub keepalive: Option<Duration>,
    /// Send a PROXY protocol header to the backend first.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Use splice(2); false forces the buffered copy (tests, odd kernels).
    pub splice: bool,
    /// The mapping is SCTP (one-to-one style): the backend is connected over SCTP, the
    /// bytes are copied (SCTP sockets cannot splice), TCP options are not applied (SCTP
    /// finds dead peers with its own heartbeats).
    pub sctp: bool,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            connect_timeout: Duration::from_secs(10),
            max_connections: 16384,
            keepalive: Some(Duration::from_secs(60)),
            proxy_protocol: None,
            splice: true,
            sctp: false,
        }
    }
}

/// What every listener of one mapping shares: options, counters, the connection cap and the
/// signal that closes the mapping's connections.
pub struct TcpShared {
    /// Options of the mapping.
    pub opts: TcpOptions,
    /// Counters of the mapping.
    pub stats: Arc<MappingStats>,
    /// One permit per forwarded connection.
    pub limiter: Arc<Semaphore>,
    /// Becomes true when the mapping is removed: every connection closes.
    pub closed: watch::Receiver<bool>,
}

impl TcpShared {
    /// Builds the shared part; `closed` is the receiver of the mapping's close signal.
    pub fn new(opts: TcpOptions, stats: Arc<MappingStats>, closed: watch::Receiver<bool>) -> Self {
        let permits = opts.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        TcpShared {
            opts,
            stats,
            limiter: Arc::new(Semaphore::new(permits)),
            closed,
        }
    }
}

/// How long the accept loop sleeps after running out of file descriptors.
const EXHAUSTION_BACKOFF: Duration = Duration::from_millis(10);

/// Accepts connections on `listener` forever and forwards each to `backend`.
pub async fn serve(listener: TcpListener, backend: SocketAddr, shared: Arc<TcpShared>) {
    sockets::ensure_reserve_fd();
    // Accepted sockets inherit TCP_NODELAY and the keepalive settings of their listener:
    // set once here instead of on every client socket.
    let inherited =
        shared.opts.sctp || sockets::set_stream_options(&listener, shared.opts.keepalive).is_ok();
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let permit = match shared.limiter.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        MappingStats::add(&shared.stats.refused_connections, 1);
                        sockets::reset_on_close(&client);
                        continue;
                    }
                };
                let shared = shared.clone();
                if !inherited {
                    let _ = sockets::set_stream_options(&client, shared.opts.keepalive);
                }
                tokio::spawn(async move {
                    let _permit = permit;
                    handle(client, peer, backend, &shared).await;
                });
            }
            Err(e) if sockets::is_resource_exhaustion(&e) => {
                MappingStats::add(&shared.stats.errors, 1);
                // Refuse what is waiting with the spare descriptor, then back off so the
                // loop does not spin while descriptors stay exhausted.
                let refused = sockets::with_reserve_released(|| refuse_pending(&listener));
                MappingStats::add(&shared.stats.refused_connections, refused.unwrap_or(0));
                tokio::time::sleep(EXHAUSTION_BACKOFF).await;
            }
            Err(e) => {
                MappingStats::add(&shared.stats.errors, 1);
                // ECONNABORTED: the client gave up before we accepted; try the next one at
                // once. Anything else may repeat: pause so the loop cannot spin.
                if e.raw_os_error() != Some(libc::ECONNABORTED) {
                    tokio::time::sleep(EXHAUSTION_BACKOFF).await;
                }
            }
        }
    }
}

/// Accepts and immediately resets queued connections (at most a batch), using the one
/// descriptor that was just freed.
fn refuse_pending(listener: &TcpListener) -> u64 {
    let mut refused = 0;
    for _ in 0..256 {
        // SAFETY: accept4 on our listening fd; a returned fd is closed right away.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            break;
        }
        // SAFETY: fd was just returned by accept4 and is owned here.
        let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let _ = socket.set_linger(Some(Duration::ZERO));
        refused += 1;
    }
    refused
}

/// Forwards one accepted connection until both directions are done or the mapping closes.
async fn handle(client: TcpStream, peer: SocketAddr, backend: SocketAddr, shared: &TcpShared) {
    let stats = &shared.stats;
    // Declared before the sockets so it drops after them: "no active connection" then
    // means both sockets are closed (a removal waits for that before the port is reused).
    let _active = GaugeGuard::new(&stats.active_connections);
    let client = client;
    MappingStats::add(&stats.total_connections, 1);
    let mut closed = shared.closed.clone();
    let work = async {
        let connect = async {
            if shared.opts.sctp {
                sockets::sctp_connect(backend).await
            } else {
                TcpStream::connect(backend).await
            }
        };
        let server = match tokio::time::timeout(shared.opts.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                MappingStats::add(&stats.errors, 1);
                sockets::reset_on_close(&client);
                return;
            }
        };
        if !shared.opts.sctp {
            let _ = sockets::set_stream_options(&server, shared.opts.keepalive);
        }
        let splice = shared.opts.splice && !shared.opts.sctp;
        if let Some(version) = shared.opts.proxy_protocol {
            let local = client.local_addr().unwrap_or(peer);
            let header = proxyproto::header(version, peer, local);
            let mut server = server;
            if server.write_all(&header).await.is_err() {
                MappingStats::add(&stats.errors, 1);
                return;
            }
            if forward(&client, &server, stats, splice).await.is_err() {
                MappingStats::add(&stats.errors, 1);
            }
        } else if forward(&client, &server, stats, splice).await.is_err() {
            MappingStats::add(&stats.errors, 1);
        }
    };
    tokio::select! {
        _ = work => {}
        _ = crate::metrics::closed(&mut closed) => {}
    }
}

/// Pumps both directions until each has seen EOF; the first error ends both.
pub async fn forward(
    client: &TcpStream,
    server: &TcpStream,
    stats: &MappingStats,
    splice: bool,
) -> io::Result<()> {
    let up = pump(client, server, &stats.bytes_to_backend, splice);
    let down = pump(server, client, &stats.bytes_to_client, splice);
    tokio::try_join!(up, down)?;
    Ok(())
}

/// Bytes one read-and-send round moves through user space.
const COPY_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The copy buffer of every connection served by this runtime thread: a round fills
    /// and empties it without awaiting, so one buffer per thread is enough and idle or
    /// chatty connections own none.
    static COPY_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; COPY_CHUNK].into_boxed_slice());
}

/// What one read-and-send round did.
struct Round {
    /// Bytes read from the source (0: EOF).
    read: usize,
    /// What the destination did not take yet (its buffer was full).
    rest: Option<Vec<u8>>,
    /// The destination failed.
    send_error: Option<io::Error>,
}

/// Reads what the source has (up to [`COPY_CHUNK`]) and sends it on at once. Err only
/// for the read, so the caller's readiness bookkeeping concerns the source alone.
fn read_and_send(src_fd: RawFd, dst_fd: RawFd) -> io::Result<Round> {
    COPY_BUFFER.with(|cell| {
        let mut buf = cell.borrow_mut();
        let n = read_fd(src_fd, &mut buf)?;
        let mut off = 0;
        while off < n {
            match send_fd(dst_fd, &buf[off..n]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Round {
                        read: n,
                        rest: Some(buf[off..n].to_vec()),
                        send_error: None,
                    })
                }
                Err(e) => {
                    return Ok(Round {
                        read: n,
                        rest: None,
                        send_error: Some(e),
                    })
                }
            }
        }
        Ok(Round {
            read: n,
            rest: None,
            send_error: None,
        })
    })
}

/// One direction until EOF, then the half-close is passed on.
///
/// Small exchanges (requests, answers, anything that arrives in pieces under 64 KiB) are
/// read and sent through a per-thread buffer: two system calls per piece and no pipe. A
/// read that fills the whole buffer means bulk data; from then on the direction splices
/// socket → pipe → socket (when allowed and a pipe can be had) and the bytes stay in the
/// kernel.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &AtomicU64,
    splice: bool,
) -> io::Result<()> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        let round = src
            .async_io(Interest::READABLE, || read_and_send(src_fd, dst_fd))
            .await?;
        if round.read == 0 {
            shutdown_write(dst);
            return Ok(());
        }
        if let Some(e) = round.send_error {
            return Err(e);
        }
        if let Some(rest) = round.rest {
            let mut off = 0;
            while off < rest.len() {
                off += dst
                    .async_io(Interest::WRITABLE, || send_fd(dst_fd, &rest[off..]))
                    .await?;
            }
        }
        MappingStats::add(counter, round.read as u64);
        #[cfg(target_os = "linux")]
        if splice && round.read == COPY_CHUNK {
            if let Ok(pipe) = Pipe::new() {
                return splice_until_eof(src, dst, &pipe, counter).await;
            }
        }
        let _ = splice;
    }
}

/// Ends our writing half so the peer sees EOF, keeping its reading half open.
fn shutdown_write(stream: &TcpStream) {
    // ENOTCONN when the peer is already gone: nothing left to tell it.
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable slice for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn send_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable slice; MSG_NOSIGNAL turns SIGPIPE into EPIPE.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking pipe used as the in-kernel buffer between two sockets.
#[cfg(target_os = "linux")]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

#[cfg(target_os = "linux")]
impl Pipe {
    /// Bigger pipes mean fewer splice calls per byte; the kernel may refuse (pipe-max-size,
    /// per-user pipe quota), then the default 64 KiB stays.
    const WANTED_CAPACITY: libc::c_int = 1 << 20;

    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds is a valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh fds that we now own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ/F_GETPIPE_SZ on our own pipe.
        let capacity = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, Self::WANTED_CAPACITY);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        Ok(Pipe {
            read,
            write,
            capacity: if capacity > 0 {
                capacity as usize
            } else {
                65536
            },
        })
    }
}

#[cfg(target_os = "linux")]
fn splice_fds(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain splice between two fds we own; null offsets (sockets and pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Busy directions give the runtime back after this many rounds without waiting.
#[cfg(target_os = "linux")]
const YIELD_EVERY: u32 = 64;

/// socket → pipe → socket, pipelined: while the destination accepts data, fills and
/// drains alternate, so the pipe acts as a buffer between the two sockets instead of moving
/// one batch at a time.
///
/// Readiness rules (tokio's readiness is edge-triggered and cleared by a WouldBlock seen
/// through `try_io`): a fill is only done through `try_io` — and the source only awaited —
/// when the pipe is empty, because only then does EAGAIN certainly mean "socket empty"
/// (with data in the pipe it may mean "pipe full", and clearing the source's readiness then
/// could stall the connection). Fills into a non-empty pipe are raw syscalls that leave
/// readiness alone. The destination is awaited only after a drain of a non-empty pipe hit
/// EAGAIN, which always means "socket full".
#[cfg(target_os = "linux")]
async fn splice_until_eof(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    counter: &AtomicU64,
) -> io::Result<()> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pipe_r, pipe_w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let mut in_pipe = 0usize;
    let mut eof = false;
    let mut until_yield = YIELD_EVERY;
    loop {
        let mut progressed = false;
        if !eof && in_pipe < pipe.capacity {
            let room = pipe.capacity - in_pipe;
            let filled = if in_pipe == 0 {
                src.try_io(Interest::READABLE, || splice_fds(src_fd, pipe_w, room))
            } else {
                splice_fds(src_fd, pipe_w, room)
            };
            match filled {
                Ok(0) => {
                    eof = true;
                    progressed = true;
                }
                Ok(n) => {
                    in_pipe += n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let mut dst_full = false;
        if in_pipe > 0 {
            match dst.try_io(Interest::WRITABLE, || splice_fds(pipe_r, dst_fd, in_pipe)) {
                Ok(n) => {
                    in_pipe -= n;
                    MappingStats::add(counter, n as u64);
                    progressed = n > 0 || progressed;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst_full = true,
                Err(e) => return Err(e),
            }
        }
        if eof && in_pipe == 0 {
            shutdown_write(dst);
            return Ok(());
        }
        if progressed {
            // Let other connections run now and then on a busy runtime.
            until_yield -= 1;
            if until_yield == 0 {
                until_yield = YIELD_EVERY;
                tokio::task::yield_now().await;
            }
            continue;
        }
        if in_pipe == 0 {
            src.readable().await?;
        } else if dst_full {
            dst.writable().await?;
        } else {
            // Data in the pipe, destination not known to be full, nothing moved: its
            // readiness is not known yet (fresh socket); wait for it.
            dst.writable().await?;
        }
    }
}
