//! docker-proxy compatible mode: one mapping per process, driven the way dockerd drives
//! `docker-proxy`.
//!
//! Contract (dockerd 20.10 … 28):
//! - flags `-proto -host-ip -host-port -container-ip -container-port -use-listen-fd -v`
//!   in Go flag syntax (see [`crate::flags`]);
//! - fd 3 is a pipe: write `0\n` once listening, or `1\n<message>` and exit 1 on failure;
//! - with `-use-listen-fd`, fd 4 is the host socket dockerd already bound;
//! - SIGINT/SIGTERM close everything and exit 0.
//!
//! Start-up is kept minimal so the ready signal comes fast: bind with plain std sockets,
//! report ready as soon as the socket listens (SIGINT/SIGTERM blocked until their handlers
//! exist, so an early stop is still a clean exit 0), then build a current-thread runtime
//! (no worker threads to spawn).
//!
//! Unlike docker-proxy, a missing fd 3 is not fatal: errors then go to stderr only, which
//! makes the mode usable by hand.

use crate::flags::{self, FlagError, FlagSpec};
use crate::proxyproto::ProxyProtocol;
use crate::sockets::{self, InheritedSocket};
use crate::state::Proto;
use crate::tcp::{self, TcpOptions, TcpShared};
use crate::udp::{self, UdpOptions, UdpShared};
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::FromRawFd;
use std::sync::Arc;

/// The status pipe's fd number, fixed by dockerd.
pub const STATUS_FD: i32 = 3;
/// The inherited listener's fd number with `-use-listen-fd`, fixed by dockerd.
pub const LISTEN_FD: i32 = 4;

/// docker-proxy's flags plus ferry's extensions (all optional).
pub const FLAGS: &[FlagSpec] = &[
    FlagSpec {
        name: "proto",
        boolean: false,
        help: "proxy protocol: tcp, udp or sctp (default \"tcp\")",
    },
    FlagSpec {
        name: "host-ip",
        boolean: false,
        help: "host ip to listen on",
    },
    FlagSpec {
        name: "host-port",
        boolean: false,
        help: "host port to listen on",
    },
    FlagSpec {
        name: "container-ip",
        boolean: false,
        help: "container ip to forward to",
    },
    FlagSpec {
        name: "container-port",
        boolean: false,
        help: "container port to forward to",
    },
    FlagSpec {
        name: "use-listen-fd",
        boolean: true,
        help: "use the socket dockerd bound, passed as fd 4",
    },
    FlagSpec {
        name: "v",
        boolean: true,
        help: "print version information and exit",
    },
    FlagSpec {
        name: "connect-timeout",
        boolean: false,
        help: "ferry: backend connect timeout (default 10s)",
    },
    FlagSpec {
        name: "max-connections",
        boolean: false,
        help: "ferry: most concurrent TCP connections (default 16384)",
    },
    FlagSpec {
        name: "udp-idle-timeout",
        boolean: false,
        help: "ferry: drop a UDP flow after this much silence (default 90s)",
    },
    FlagSpec {
        name: "udp-max-flows",
        boolean: false,
        help: "ferry: most UDP flows; the longest idle is evicted (default 4096)",
    },
    FlagSpec {
        name: "proxy-protocol",
        boolean: false,
        help: "ferry: send a PROXY protocol header to the backend: v1 or v2 (tcp), v2 (udp, before every datagram)",
    },
    FlagSpec {
        name: "no-splice",
        boolean: true,
        help: "ferry: copy through user space instead of splice(2)",
    },
];

/// A parsed command line.
#[derive(Debug, Clone)]
pub enum Command {
    /// Forward one mapping.
    Run(CompatConfig),
    /// `-v`.
    Version,
    /// `-h`.
    Help,
}

/// One mapping as docker-proxy's flags describe it.
#[derive(Debug, Clone)]
pub struct CompatConfig {
    /// tcp or udp.
    pub proto: Proto,
    /// Where to listen (ignored with `use_listen_fd`, but still used in messages).
    pub host: SocketAddr,
    /// Where to forward.
    pub backend: SocketAddr,
    /// Take the listener from fd 4.
    pub use_listen_fd: bool,
    /// TCP tunables.
    pub connect_timeout: std::time::Duration,
    /// Most concurrent TCP connections.
    pub max_connections: usize,
    /// UDP tunables.
    pub udp: UdpOptions,
    /// PROXY protocol header to send, if any.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// splice(2) on (default) or off.
    pub splice: bool,
}

fn parse_ip(flag: &str, text: &str) -> Result<IpAddr, String> {
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("invalid -{flag} {text:?}: not an IP address"))
}

fn parse_port(flag: &str, text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid -{flag} {text:?}: want a port 1-65535")),
    }
}

/// Turns the command line (without argv[0]) into a [`Command`]; errors are the message
/// that goes after `1\n` on the status pipe.
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let parsed = match flags::parse(args, FLAGS) {
        Ok(p) => p,
        Err(FlagError::Help) => return Ok(Command::Help),
        Err(FlagError::Usage(m)) => return Err(m),
    };
    let v = &parsed.values;
    let get = |k: &str| v.get(k).map(String::as_str);
    if get("v") == Some("true") {
        return Ok(Command::Version);
    }
    let proto_text = get("proto").unwrap_or("tcp");
    let proto =
        Proto::parse(proto_text).ok_or_else(|| format!("unsupported protocol {proto_text:?}"))?;
    let use_listen_fd = get("use-listen-fd") == Some("true");
    let host_ip = match get("host-ip") {
        Some(t) if !t.is_empty() => parse_ip("host-ip", t)?,
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    let host_port = match get("host-port") {
        Some(t) => parse_port("host-port", t)?,
        None if use_listen_fd => 0,
        None => return Err("-host-port is required".into()),
    };
    let container_ip = parse_ip(
        "container-ip",
        get("container-ip").ok_or("-container-ip is required")?,
    )?;
    let container_port = parse_port(
        "container-port",
        get("container-port").ok_or("-container-port is required")?,
    )?;
    let duration = |k: &str, default: std::time::Duration| -> Result<_, String> {
        match get(k) {
            Some(t) => flags::parse_duration(t).map_err(|e| format!("invalid -{k}: {e}")),
            None => Ok(default),
        }
    };
    let number = |k: &str, default: usize| -> Result<usize, String> {
        match get(k) {
            Some(t) => t
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("invalid -{k} {t:?}: want a positive number")),
            None => Ok(default),
        }
    };
    let tcp_defaults = TcpOptions::default();
    let udp_defaults = UdpOptions::default();
    let proxy_protocol = match get("proxy-protocol") {
        None | Some("") => None,
        Some(t) => Some(
            ProxyProtocol::parse(t)
                .ok_or_else(|| format!("invalid -proxy-protocol {t:?}: want v1 or v2"))?,
        ),
    };
    if !crate::proxyproto::supported_for(proxy_protocol, proto) {
        return Err(
            "-proxy-protocol: v1 and v2 with -proto tcp, v2 with -proto udp, none with sctp".into(),
        );
    }
    Ok(Command::Run(CompatConfig {
        proto,
        host: SocketAddr::new(host_ip, host_port),
        backend: SocketAddr::new(container_ip, container_port),
        use_listen_fd,
        connect_timeout: duration("connect-timeout", tcp_defaults.connect_timeout)?,
        max_connections: number("max-connections", tcp_defaults.max_connections)?,
        udp: UdpOptions {
            idle_timeout: duration("udp-idle-timeout", udp_defaults.idle_timeout)?,
            max_flows: number("udp-max-flows", udp_defaults.max_flows)?,
            proxy_protocol,
        },
        proxy_protocol,
        splice: get("no-splice") != Some("true"),
    }))
}

/// The status pipe on fd 3, if the parent gave us one.
struct StatusPipe(Option<File>);

impl StatusPipe {
    /// Takes fd 3 if it is open. Must run before anything else opens a descriptor, or we
    /// could mistake our own file for dockerd's pipe.
    fn take() -> StatusPipe {
        // SAFETY: F_GETFD only asks whether the descriptor exists.
        if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } < 0 {
            return StatusPipe(None);
        }
        // SAFETY: fd 3 is open and handed to us by the parent for exactly this purpose.
        let file = unsafe { File::from_raw_fd(STATUS_FD) };
        // Keep it away from any child we might exec (none today, but be tidy).
        // SAFETY: setting FD_CLOEXEC on our own fd.
        unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        StatusPipe(Some(file))
    }

    fn ready(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"0\n");
        }
    }

    fn fail(&mut self, msg: &str) -> i32 {
        eprintln!("ferry-proxy: {msg}");
        if let Some(mut f) = self.0.take() {
            let _ = write!(f, "1\n{msg}");
        }
        1
    }
}

/// Runs docker-proxy compatible mode; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let mut status = StatusPipe::take();
    let config = match parse_args(args) {
        Ok(Command::Run(c)) => c,
        Ok(Command::Version) => {
            println!(
                "ferry-proxy {} (docker-proxy compatible)",
                env!("CARGO_PKG_VERSION")
            );
            return 0;
        }
        Ok(Command::Help) => {
            eprint!("{}", flags::usage("ferry-proxy", FLAGS));
            eprintln!("  (or: ferry-proxy daemon --help)");
            return 0;
        }
        Err(msg) => return status.fail(&msg),
    };
    let socket = if config.use_listen_fd {
        sockets::adopt_fd(LISTEN_FD, config.proto)
    } else {
        match config.proto {
            Proto::Tcp => sockets::tcp_listener(config.host).map(InheritedSocket::Tcp),
            Proto::Udp => sockets::udp_socket(config.host).map(InheritedSocket::Udp),
            Proto::Sctp => sockets::sctp_listener(config.host).map(InheritedSocket::Tcp),
        }
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            let what = if config.use_listen_fd {
                format!("using the listener on fd {LISTEN_FD}")
            } else {
                format!("listen {}/{}", config.host, config.proto.as_str())
            };
            return status.fail(&format!("{what}: {e}"));
        }
    };
    // The socket is listening: connections queue in its backlog from here on, so report
    // ready now, before the runtime exists. SIGINT/SIGTERM are held pending until their
    // handlers are installed, so an early stop still ends in a clean exit 0.
    let previous_mask = block_stop_signals();
    status.ready();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return status.fail(&format!("starting the runtime: {e}")),
    };
    let result = runtime.block_on(serve(config, socket, previous_mask));
    match result {
        Ok(()) => 0,
        Err(msg) => status.fail(&msg),
    }
}

/// Blocks SIGINT and SIGTERM on this thread (they stay pending); returns the old mask.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on local values; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Restores the signal mask saved by [`block_stop_signals`]; pending signals arrive now.
fn restore_signal_mask(old: &libc::sigset_t) {
    // SAFETY: restoring a mask obtained from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

async fn serve(
    config: CompatConfig,
    socket: InheritedSocket,
    previous_mask: libc::sigset_t,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("installing SIGTERM handler: {e}"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| format!("installing SIGINT handler: {e}"))?;
    let (_closed_tx, closed_rx) = tokio::sync::watch::channel(false);
    let stats = Arc::new(crate::metrics::MappingStats::default());
    let forwarding = match socket {
        InheritedSocket::Tcp(l) => {
            let listener = tokio::net::TcpListener::from_std(l)
                .map_err(|e| format!("registering the listener: {e}"))?;
            let opts = TcpOptions {
                connect_timeout: config.connect_timeout,
                max_connections: config.max_connections,
                proxy_protocol: config.proxy_protocol,
                splice: config.splice,
                sctp: config.proto == Proto::Sctp,
                ..TcpOptions::default()
            };
            let shared = Arc::new(TcpShared::new(opts, stats, closed_rx));
            tokio::spawn(tcp::serve(listener, config.backend, shared))
        }
        InheritedSocket::Udp(u) => {
            let socket = tokio::net::UdpSocket::from_std(u)
                .map_err(|e| format!("registering the socket: {e}"))?;
            let shared = Arc::new(UdpShared {
                opts: config.udp.clone(),
                stats,
                closed: closed_rx,
            });
            tokio::spawn(udp::serve(socket, config.backend, shared))
        }
    };
    restore_signal_mask(&previous_mask);
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
        _ = forwarding => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn dockerd_command_line() {
        let Command::Run(c) = parse_args(&args(
            "-proto tcp -host-ip 127.0.0.1 -host-port 8080 -container-ip 172.17.0.2 -container-port 80",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.proto, Proto::Tcp);
        assert_eq!(c.host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.backend, "172.17.0.2:80".parse().unwrap());
        assert!(!c.use_listen_fd);
        assert!(c.splice);
    }

    #[test]
    fn double_dash_equals_and_listen_fd() {
        let Command::Run(c) = parse_args(&args(
            "--proto=udp --host-ip=:: --container-ip=fd00:213:48::2 --container-port=53 -use-listen-fd",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.proto, Proto::Udp);
        assert!(c.use_listen_fd);
        assert_eq!(c.backend, "[fd00:213:48::2]:53".parse().unwrap());
    }

    #[test]
    fn errors_and_version() {
        assert!(matches!(parse_args(&args("-v")).unwrap(), Command::Version));
        let Command::Run(c) = parse_args(&args(
            "-proto sctp -host-port 1 -container-ip 10.0.0.1 -container-port 1",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.proto, Proto::Sctp);
        assert!(parse_args(&args(
            "-proto dccp -host-port 1 -container-ip 10.0.0.1 -container-port 1"
        ))
        .unwrap_err()
        .contains("dccp"));
        assert!(parse_args(&args("-host-port 1 -container-port 1"))
            .unwrap_err()
            .contains("-container-ip"));
        assert!(parse_args(&args(
            "-host-port 0 -container-ip 10.0.0.1 -container-port 1"
        ))
        .unwrap_err()
        .contains("host-port"));
        assert!(parse_args(&args("-bogus 1")).unwrap_err().contains("bogus"));
    }
}
