//! Creating and adopting sockets with the options the data paths rely on.

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

/// Listen backlog: large, because a burst of clients must queue rather than be dropped
/// while the accept loop is busy (the kernel caps it at net.core.somaxconn).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds a TCP listener. IPv6 listeners are V6ONLY so that `0.0.0.0:p` and `[::]:p` can be
/// separate mappings (as dockerd publishes them); SO_REUSEADDR lets a restarted proxy bind
/// while old connections sit in TIME_WAIT.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    listen_stream(socket, addr)
}

/// Binds and listens on a stream socket (TCP or SCTP) with the listener options above.
fn listen_stream(socket: Socket, addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The start of every message about SCTP on a kernel without it.
pub const SCTP_UNSUPPORTED: &str = "SCTP is not available: this kernel has no SCTP support \
     (CONFIG_IP_SCTP is off or the sctp module cannot be loaded)";

/// A one-to-one style SCTP socket (SOCK_STREAM, IPPROTO_SCTP) for `addr`'s family. On a
/// kernel without SCTP the error is ErrorKind::Unsupported and says so
/// ([`SCTP_UNSUPPORTED`]).
pub fn sctp_socket(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(Protocol::from(libc::IPPROTO_SCTP)),
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT) | Some(libc::ESOCKTNOSUPPORT) | Some(libc::EAFNOSUPPORT) => {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{SCTP_UNSUPPORTED}; socket(SOCK_STREAM, IPPROTO_SCTP) failed: {e}"),
            )
        }
        _ => e,
    })
}

/// Binds an SCTP listener (one-to-one style): the same options as [`tcp_listener`]. The
/// std TcpListener type only carries the descriptor; accept, read, write and shutdown
/// work on it as on TCP.
pub fn sctp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    listen_stream(sctp_socket(addr)?, addr)
}

/// Connects an SCTP association to `addr` without blocking the runtime; the stream type is
/// tokio's TcpStream (readiness and I/O are the same for a stream socket).
pub async fn sctp_connect(addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = sctp_socket(addr)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(OwnedFd::from(socket)))?;
    stream.writable().await?;
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// Binds a UDP socket; on a wildcard address it also asks for the destination address of
/// each datagram (IP_PKTINFO / IPV6_RECVPKTINFO) so replies leave from the address the client
/// targeted. No SO_REUSEADDR: on UDP it would let two sockets share the port.
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let udp: UdpSocket = socket.into();
    enlarge_receive_buffer(udp.as_raw_fd());
    if addr.ip().is_unspecified() {
        enable_pktinfo(&udp, addr.is_ipv6())?;
    }
    Ok(udp)
}

/// Receive buffer of a UDP listener. The default (~208 KiB, ~90 full-size Ethernet
/// datagrams) overflows whenever the proxy is off the CPU for a few hundred microseconds
/// at high rates; 4 MiB rides that out. Memory is only charged while datagrams wait.
pub const UDP_RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// Sets the receive buffer to [`UDP_RECEIVE_BUFFER`]: SO_RCVBUFFORCE when allowed
/// (CAP_NET_ADMIN, as under dockerd), else SO_RCVBUF (capped at net.core.rmem_max).
/// Best effort: a smaller buffer still works, it only drops sooner.
pub fn enlarge_receive_buffer(fd: RawFd) {
    let size = UDP_RECEIVE_BUFFER;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: valid fd, option value is a c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Turns on reception of the datagram's destination address.
pub fn enable_pktinfo(socket: &UdpSocket, ipv6: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: valid fd, option value is a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What an inherited socket turned out to be.
pub enum InheritedSocket {
    /// A TCP socket, now listening.
    Tcp(TcpListener),
    /// A bound UDP socket.
    Udp(UdpSocket),
}

/// Adopts the socket dockerd passes on `fd` with `-use-listen-fd`: checks that it is a
/// socket of the expected type, makes it non-blocking, and for TCP and SCTP calls listen()
/// (harmless if the daemon already did, required if it only bound it).
pub fn adopt_fd(fd: RawFd, proto: crate::state::Proto) -> io::Result<InheritedSocket> {
    let want_stream = proto.is_stream();
    // SAFETY: fcntl on an arbitrary fd number only reports whether it is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("-use-listen-fd given but fd {fd} is not open"),
        ));
    }
    // SAFETY: fd is open and from here on owned by us (dockerd hands it over).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let socket = Socket::from(owned);
    let ty = socket
        .r#type()
        .map_err(|e| io::Error::new(e.kind(), format!("fd {fd} is not a socket: {e}")))?;
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    if want_stream {
        if ty != Type::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {fd} is not a stream socket but -proto is {}",
                    proto.as_str()
                ),
            ));
        }
        let is_sctp = socket.protocol()? == Some(Protocol::from(libc::IPPROTO_SCTP));
        if is_sctp != (proto == crate::state::Proto::Sctp) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {fd} is {} socket but -proto is {}",
                    if is_sctp { "an SCTP" } else { "a TCP" },
                    proto.as_str()
                ),
            ));
        }
        socket.listen(LISTEN_BACKLOG)?;
        Ok(InheritedSocket::Tcp(socket.into()))
    } else {
        if ty != Type::DGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} is not a datagram socket but -proto is udp"),
            ));
        }
        let udp: UdpSocket = socket.into();
        enlarge_receive_buffer(udp.as_raw_fd());
        if let Ok(local) = udp.local_addr() {
            if local.ip().is_unspecified() {
                enable_pktinfo(&udp, local.is_ipv6())?;
            }
        }
        Ok(InheritedSocket::Udp(udp))
    }
}

/// Keepalive on forwarded connections: finds dead peers (a client that vanished without
/// FIN) so their slots and file descriptors come back.
pub fn set_keepalive(socket: &impl std::os::fd::AsFd, idle: Duration) -> io::Result<()> {
    let ka = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    SockRef::from(socket).set_tcp_keepalive(&ka)
}

/// The options of a forwarded TCP socket: TCP_NODELAY (a proxy must not add Nagle delays
/// to what the ends chose to send) and keepalive (None: off). On a listener they are
/// inherited by every accepted socket.
pub fn set_stream_options(
    socket: &impl std::os::fd::AsFd,
    keepalive: Option<Duration>,
) -> io::Result<()> {
    SockRef::from(socket).set_tcp_nodelay(true)?;
    if let Some(idle) = keepalive {
        set_keepalive(socket, idle)?;
    }
    Ok(())
}

/// Closes a connection with RST instead of FIN: a refused client learns at once.
pub fn reset_on_close(stream: &tokio::net::TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// True for errors that mean "out of file descriptors or kernel memory": the accept loop
/// must back off instead of spinning.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// One spare file descriptor kept open so that, when the process runs out, it can be closed
/// to accept-and-refuse the waiting connections (otherwise they would sit in the backlog
/// with no answer while accept keeps failing).
static RESERVE_FD: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Opens the spare descriptor (idempotent).
pub fn ensure_reserve_fd() {
    if let Ok(mut guard) = RESERVE_FD.lock() {
        if guard.is_none() {
            *guard = std::fs::File::open("/dev/null").ok();
        }
    }
}

/// Runs `f` with the spare descriptor closed, then reopens it. Returns None when there was
/// no spare (another task is using it).
pub fn with_reserve_released<R>(f: impl FnOnce() -> R) -> Option<R> {
    let mut guard = RESERVE_FD.lock().ok()?;
    let spare = guard.take()?;
    drop(spare);
    let r = f();
    *guard = std::fs::File::open("/dev/null").ok();
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_the_listener_options() {
        let listener = tcp_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        set_stream_options(&listener, Some(Duration::from_secs(77))).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let s = SockRef::from(&accepted);
        assert!(s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(77));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 6);
    }
}
