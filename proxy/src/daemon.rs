//! Daemon mode: one process serving many mappings, managed over the HTTP API in [`crate::api`].
//!
//! Adding a mapping binds its host sockets before answering, so the caller learns about a
//! conflict at once (that is how ferry reserves host ports). Every change is written to the
//! state directory before it is acknowledged; on start the saved mappings are bound again.
//! SIGTERM/SIGINT: stop accepting API requests and new connections, let open connections
//! finish for up to the drain timeout, then exit 0 (the state file keeps the mappings).

use crate::error::{Error, IoContext, Result};
use crate::flags::{self, FlagError, FlagSpec};
use crate::holder;
use crate::metrics::{self, MappingLabels, MappingStats};
use crate::sockets;
use crate::state::{MappingSpec, MappingStatus, Proto, StateStore};
use crate::tcp::{self, TcpOptions, TcpShared};
use crate::udp::{self, UdpOptions, UdpShared};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default API socket path.
pub const DEFAULT_SOCKET: &str = "/run/ferry/proxy.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferry/proxy";

/// Daemon flags (`--name value` or `--name=value`).
pub const FLAGS: &[FlagSpec] = &[
    FlagSpec {
        name: "socket",
        boolean: false,
        help: "API unix socket (default /run/ferry/proxy.sock)",
    },
    FlagSpec {
        name: "state-dir",
        boolean: false,
        help: "where mappings are saved (default /var/lib/ferry/proxy)",
    },
    FlagSpec {
        name: "drain-timeout",
        boolean: false,
        help: "on SIGTERM, wait this long for open connections (default 10s)",
    },
    FlagSpec {
        name: "connect-timeout",
        boolean: false,
        help: "backend connect timeout (default 10s)",
    },
    FlagSpec {
        name: "max-connections",
        boolean: false,
        help: "most concurrent TCP connections per mapping (default 16384)",
    },
    FlagSpec {
        name: "udp-idle-timeout",
        boolean: false,
        help: "drop a UDP flow after this much silence (default 90s)",
    },
    FlagSpec {
        name: "udp-max-flows",
        boolean: false,
        help: "most UDP flows per mapping (default 4096)",
    },
    FlagSpec {
        name: "no-splice",
        boolean: true,
        help: "copy through user space instead of splice(2)",
    },
];

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// API socket path.
    pub socket: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Grace period for open connections on SIGTERM.
    pub drain_timeout: Duration,
    /// TCP defaults for every mapping (proxyProtocol comes from the mapping).
    pub tcp: TcpOptions,
    /// UDP defaults for every mapping.
    pub udp: UdpOptions,
}

/// Parses the daemon's flags (after the `daemon` word).
pub fn parse_args(args: &[String]) -> std::result::Result<Option<DaemonConfig>, String> {
    let parsed = match flags::parse(args, FLAGS) {
        Ok(p) => p,
        Err(FlagError::Help) => return Ok(None),
        Err(FlagError::Usage(m)) => return Err(m),
    };
    if let Some(extra) = parsed.positional.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let get = |k: &str| parsed.values.get(k).map(String::as_str);
    let duration = |k: &str, d: Duration| match get(k) {
        Some(t) => flags::parse_duration(t).map_err(|e| format!("invalid --{k}: {e}")),
        None => Ok(d),
    };
    let number = |k: &str, d: usize| match get(k) {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid --{k} {t:?}: want a positive number")),
        None => Ok(d),
    };
    let tcp_defaults = TcpOptions::default();
    let udp_defaults = UdpOptions::default();
    Ok(Some(DaemonConfig {
        socket: PathBuf::from(get("socket").unwrap_or(DEFAULT_SOCKET)),
        state_dir: PathBuf::from(get("state-dir").unwrap_or(DEFAULT_STATE_DIR)),
        drain_timeout: duration("drain-timeout", Duration::from_secs(10))?,
        tcp: TcpOptions {
            connect_timeout: duration("connect-timeout", tcp_defaults.connect_timeout)?,
            max_connections: number("max-connections", tcp_defaults.max_connections)?,
            splice: get("no-splice") != Some("true"),
            ..tcp_defaults
        },
        udp: UdpOptions {
            idle_timeout: duration("udp-idle-timeout", udp_defaults.idle_timeout)?,
            max_flows: number("udp-max-flows", udp_defaults.max_flows)?,
            ..UdpOptions::default()
        },
    }))
}

/// `ferry-proxy daemon …`: returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let config = match parse_args(args) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprint!("{}", flags::usage("ferry-proxy daemon", FLAGS));
            return 0;
        }
        Err(msg) => {
            eprintln!("ferry-proxy daemon: {msg}");
            return 2;
        }
    };
    match run(config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferry-proxy daemon: {e}");
            1
        }
    }
}

/// Builds the runtime and serves until SIGTERM/SIGINT.
pub fn run(config: DaemonConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ctx(|| "starting the tokio runtime".into())?;
    runtime.block_on(serve(config))
}

async fn serve(config: DaemonConfig) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm =
        signal(SignalKind::terminate()).ctx(|| "installing SIGTERM handler".into())?;
    let mut sigint = signal(SignalKind::interrupt()).ctx(|| "installing SIGINT handler".into())?;
    let store = StateStore::open(&config.state_dir)?;
    let registry = Arc::new(Registry::new(store, config.tcp.clone(), config.udp.clone()));
    let restored = registry.restore()?;
    let listener = bind_api_socket(&config.socket)?;
    eprintln!(
        "ferry-proxy daemon: serving {} on {} ({} mappings restored)",
        config.state_dir.display(),
        config.socket.display(),
        restored
    );
    let api = tokio::spawn(crate::api::serve(listener, registry.clone()));
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    api.abort();
    let _ = std::fs::remove_file(&config.socket);
    registry.stop_listening();
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    while registry.active_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Binds the API socket with mode 0600 (root only): the umask is tightened around bind so
/// the socket never exists with wider permissions. A stale socket file is replaced.
fn bind_api_socket(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .ctx(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::Invalid(format!(
                "{} exists and is not a socket; remove it or choose --socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Invalid(format!(
                "another daemon is serving {}; stop it first",
                path.display()
            )));
        }
        std::fs::remove_file(path).ctx(|| format!("removing stale {}", path.display()))?;
    }
    // SAFETY: umask is process-wide; the daemon is still single-purpose at this point and
    // restores it right after bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.ctx(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .ctx(|| format!("chmod 0600 {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .ctx(|| "making the API socket non-blocking".into())?;
    tokio::net::UnixListener::from_std(listener).ctx(|| "registering the API socket".into())
}

/// A mapping being served (or restored but failing to bind).
struct ActiveMapping {
    spec: MappingSpec,
    stats: Arc<MappingStats>,
    listeners: Vec<JoinHandle<()>>,
    close: watch::Sender<bool>,
    error: Option<String>,
}

impl ActiveMapping {
    fn status(&self) -> MappingStatus {
        MappingStatus {
            spec: self.spec.clone(),
            listening: self.error.is_none(),
            error: self.error.clone(),
        }
    }
}

impl Drop for ActiveMapping {
    fn drop(&mut self) {
        for task in &self.listeners {
            task.abort();
        }
        let _ = self.close.send(true);
    }
}

/// All mappings of the daemon, behind one lock (held only for synchronous work: binding,
/// spawning, writing the state file — never across an await).
pub struct Registry {
    mappings: Mutex<BTreeMap<String, ActiveMapping>>,
    store: StateStore,
    tcp: TcpOptions,
    udp: UdpOptions,
}

/// A bound but not yet registered host socket.
enum BoundSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Registry {
    /// An empty registry saving to `store`.
    pub fn new(store: StateStore, tcp: TcpOptions, udp: UdpOptions) -> Registry {
        Registry {
            mappings: Mutex::new(BTreeMap::new()),
            store,
            tcp,
            udp,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ActiveMapping>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.mappings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a mapping (binding its sockets now). Returns its status and whether it is new:
    /// re-adding an identical mapping is not an error, so callers can retry.
    pub fn add(&self, spec: MappingSpec) -> Result<(MappingStatus, bool)> {
        let spec = spec.normalize()?;
        let mut map = self.lock();
        if let Some(existing) = map.get(&spec.id) {
            if existing.spec != spec {
                return Err(Error::Conflict {
                    msg: format!(
                        "mapping {} already exists with different settings; delete it first",
                        spec.id
                    ),
                    holder: describe_mapping(&existing.spec),
                });
            }
            if existing.error.is_none() {
                return Ok((existing.status(), false));
            }
            map.remove(&spec.id);
        }
        if let Some(other) = map.values().find(|m| m.spec.overlaps(&spec)) {
            let holder = describe_mapping(&other.spec);
            return Err(conflict(&spec, &holder));
        }
        let active = self.start(spec.clone())?;
        let status = active.status();
        map.insert(spec.id.clone(), active);
        if let Err(e) = self.persist(&map) {
            map.remove(&spec.id);
            return Err(e);
        }
        Ok((status, true))
    }

    /// Binds every port of `spec` and spawns its forwarders (all or nothing).
    fn start(&self, spec: MappingSpec) -> Result<ActiveMapping> {
        let mut bound = Vec::new();
        for (host, backend) in spec.port_pairs() {
            let socket = match spec.proto {
                Proto::Tcp => sockets::tcp_listener(host).map(BoundSocket::Tcp),
                Proto::Udp => sockets::udp_socket(host).map(BoundSocket::Udp),
                Proto::Sctp => sockets::sctp_listener(host).map(BoundSocket::Tcp),
            };
            match socket {
                Ok(s) => bound.push((s, backend)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    let holder = holder::find_port_holder(spec.proto, host.port())
                        .unwrap_or_else(|| {
                            "a socket outside this daemon's view (another network namespace or a kernel user)".into()
                        });
                    return Err(Error::Conflict {
                        msg: format!(
                            "host port {host}/{} is already in use by {holder}",
                            spec.proto.as_str()
                        ),
                        holder,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    return Err(Error::Invalid(format!(
                        "proto {} on {host}: {e}",
                        spec.proto.as_str()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                    return Err(Error::Invalid(format!(
                        "hostIP {} is not an address of this host: {e}",
                        host.ip()
                    )));
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("binding {host}/{}", spec.proto.as_str()),
                        e,
                    ))
                }
            }
        }
        let stats = Arc::new(MappingStats::default());
        let (close, closed) = watch::channel(false);
        let mut listeners = Vec::new();
        let tcp_shared = Arc::new(TcpShared::new(
            TcpOptions {
                proxy_protocol: spec.proxy_protocol,
                sctp: spec.proto == Proto::Sctp,
                ..self.tcp.clone()
            },
            stats.clone(),
            closed.clone(),
        ));
        let udp_shared = Arc::new(UdpShared {
            opts: UdpOptions {
                proxy_protocol: spec.proxy_protocol,
                ..self.udp.clone()
            },
            stats: stats.clone(),
            closed,
        });
        for (socket, backend) in bound {
            match socket {
                BoundSocket::Tcp(l) => {
                    let l = tokio::net::TcpListener::from_std(l)
                        .ctx(|| "registering a listener".into())?;
                    listeners.push(tokio::spawn(tcp::serve(l, backend, tcp_shared.clone())));
                }
                BoundSocket::Udp(u) => {
                    let u = tokio::net::UdpSocket::from_std(u)
                        .ctx(|| "registering a UDP socket".into())?;
                    listeners.push(tokio::spawn(udp::serve(u, backend, udp_shared.clone())));
                }
            }
        }
        Ok(ActiveMapping {
            spec,
            stats,
            listeners,
            close,
            error: None,
        })
    }

    fn persist(&self, map: &BTreeMap<String, ActiveMapping>) -> Result<()> {
        let specs: Vec<MappingSpec> = map.values().map(|m| m.spec.clone()).collect();
        self.store.save(&specs)
    }

    /// Binds the saved mappings again. One that cannot bind stays listed with its error
    /// (and is retried when added again) rather than being forgotten.
    pub fn restore(&self) -> Result<usize> {
        let specs = self.store.load()?;
        let mut map = self.lock();
        for spec in specs {
            let id = spec.id.clone();
            let active = match self.start(spec.clone()) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("ferry-proxy daemon: restoring mapping {id}: {e}");
                    let (close, _) = watch::channel(false);
                    ActiveMapping {
                        spec,
                        stats: Arc::new(MappingStats::default()),
                        listeners: Vec::new(),
                        close,
                        error: Some(e.to_string()),
                    }
                }
            };
            map.insert(id, active);
        }
        Ok(map.len())
    }

    /// Removes one mapping, closing its connections. Returns the listener tasks, already
    /// aborted: await them (see [`Closing::finish`]) before answering, so the host port is
    /// free when the caller hears back.
    pub fn remove(&self, id: &str) -> Result<Closing> {
        let mut map = self.lock();
        let removed = map
            .remove(id)
            .ok_or_else(|| Error::NotFound(format!("no mapping with id {id:?}")))?;
        if let Err(e) = self.persist(&map) {
            map.insert(id.to_string(), removed);
            return Err(e);
        }
        Ok(Closing::of(vec![removed]))
    }

    /// Removes every mapping of `owner`; returns how many, and their closing listeners.
    pub fn remove_owner(&self, owner: &str) -> Result<(usize, Closing)> {
        let mut map = self.lock();
        let ids: Vec<String> = map
            .values()
            .filter(|m| m.spec.owner == owner)
            .map(|m| m.spec.id.clone())
            .collect();
        let mut removed = Vec::new();
        for id in &ids {
            if let Some(m) = map.remove(id) {
                removed.push(m);
            }
        }
        if let Err(e) = self.persist(&map) {
            for m in removed {
                map.insert(m.spec.id.clone(), m);
            }
            return Err(e);
        }
        Ok((ids.len(), Closing::of(removed)))
    }

    /// Mappings, optionally only `owner`'s, ordered by id.
    pub fn list(&self, owner: Option<&str>) -> Vec<MappingStatus> {
        self.lock()
            .values()
            .filter(|m| owner.is_none_or(|o| m.spec.owner == o))
            .map(ActiveMapping::status)
            .collect()
    }

    /// One mapping.
    pub fn get(&self, id: &str) -> Result<MappingStatus> {
        self.lock()
            .get(id)
            .map(ActiveMapping::status)
            .ok_or_else(|| Error::NotFound(format!("no mapping with id {id:?}")))
    }

    /// Prometheus text for every mapping.
    pub fn metrics(&self) -> String {
        let map = self.lock();
        let rows: Vec<(MappingLabels, &MappingStats)> = map
            .values()
            .map(|m| {
                (
                    MappingLabels {
                        id: m.spec.id.clone(),
                        owner: m.spec.owner.clone(),
                        proto: m.spec.proto.as_str().into(),
                    },
                    m.stats.as_ref(),
                )
            })
            .collect();
        metrics::render(&rows)
    }

    /// Closes every listener (new connections are refused) but leaves open connections.
    pub fn stop_listening(&self) {
        for m in self.lock().values_mut() {
            for task in m.listeners.drain(..) {
                task.abort();
            }
        }
    }

    /// Open TCP connections over all mappings (drain waits for zero).
    pub fn active_connections(&self) -> u64 {
        self.lock()
            .values()
            .map(|m| MappingStats::get(&m.stats.active_connections))
            .sum()
    }
}

/// Listener tasks of removed mappings, aborted but maybe not yet dropped, and the mappings'
/// counters (their open connections close asynchronously once signalled).
pub struct Closing(Vec<JoinHandle<()>>, Vec<Arc<MappingStats>>);

/// How long a removal waits for the removed mappings' connections to close: an accepted
/// connection also holds the host port, and the caller (portmap's DEL) promises the port is
/// free when it returns. Connections close at their next poll, normally within microseconds.
const CONNECTIONS_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Closing {
    fn of(mappings: Vec<ActiveMapping>) -> Closing {
        let mut tasks = Vec::new();
        let mut stats = Vec::new();
        for mut m in mappings {
            for task in m.listeners.drain(..) {
                task.abort();
                tasks.push(task);
            }
            stats.push(m.stats.clone());
            // Dropping the mapping signals its connections to close.
        }
        Closing(tasks, stats)
    }

    /// Waits until every listener socket is closed (an aborted task's future is dropped
    /// before its JoinHandle resolves) and the mappings' TCP connections are gone (bounded
    /// by [`CONNECTIONS_CLOSE_WAIT`]), so the ports can be bound again at once.
    pub async fn finish(self) {
        for task in self.0 {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + CONNECTIONS_CLOSE_WAIT;
        while self
            .1
            .iter()
            .any(|s| MappingStats::get(&s.active_connections) > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

fn describe_mapping(spec: &MappingSpec) -> String {
    if spec.owner.is_empty() {
        format!("mapping {}", spec.id)
    } else {
        format!("mapping {} (owner {})", spec.id, spec.owner)
    }
}

fn conflict(spec: &MappingSpec, holder: &str) -> Error {
    let (first, last) = spec.host_ports();
    let ports = if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    };
    Error::Conflict {
        msg: format!(
            "host port {}:{ports}/{} is already held by {holder}",
            spec.host_ip,
            spec.proto.as_str()
        ),
        holder: holder.to_string(),
    }
}
