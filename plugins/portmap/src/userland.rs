//! The `userlandProxy` mode: the ferry-proxy daemon holds every mapped host port and serves
//! what the kernel cannot (loopback, host IPv6 → IPv4-only container), as Docker's
//! docker-proxy does.
//!
//! Pure part: which daemon mappings an attachment needs ([`specs`]) and how they are named
//! ([`owner`]). I/O part: [`Daemon`] reserves, releases, verifies and garbage-collects them
//! through the daemon's API, and starts the daemon when its socket does not answer.
//!
//! A mapping without `hostIP` becomes two daemon mappings, `0.0.0.0:P` and `[::]:P` (V6ONLY):
//! the wildcard sockets reserve the port for the whole host (any later bind of `P` on any
//! address fails with EADDRINUSE), while traffic from outside is DNATed in PREROUTING before
//! it could reach them. What reaches them is what the kernel rules leave alone: loopback, and
//! IPv6 to a container without an IPv6 address.

use crate::config::{Mapping, PortMapConfig, ProxySettings};
use cni::fsutil::{write_atomic, Flock};
use cni::{code, Error, Result};
use ferry_proxy::client::Client;
use ferry_proxy::state::{MappingSpec, Proto, StateStore};
use firewall::Protocol;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Prefix of the owners portmap gives its daemon mappings: `cni:<network>:<container ID>`.
pub const OWNER_PREFIX: &str = "cni:";
/// Lock file (in the state dir) that makes exactly one portmap start the daemon.
pub const LOCK_FILE: &str = "daemon.lock";
/// The pid of the daemon portmap started last (in the state dir).
pub const PID_FILE: &str = "daemon.pid";
/// Where a daemon portmap started writes its stdout and stderr (in the state dir).
pub const LOG_FILE: &str = "daemon.log";
/// How long portmap waits for a daemon it started to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(2);
/// How long DEL waits for the daemon to close the sockets of deleted mappings (it answers
/// before its listener tasks have dropped them).
pub const RELEASE_WAIT: Duration = Duration::from_millis(500);
/// The daemon's limit on owner length.
const MAX_OWNER: usize = 256;

/// The daemon owner of an attachment: `cni:<network>:<container ID>`, so DEL removes one
/// attachment's mappings and GC can tell networks apart. Too long for the daemon (256
/// bytes), the ID part becomes `sha256:<hex>`.
pub fn owner(network: &str, container_id: &str) -> String {
    let plain = format!("{OWNER_PREFIX}{network}:{container_id}");
    if plain.len() <= MAX_OWNER {
        return plain;
    }
    let digest = Sha256::digest(container_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let owner = format!("{OWNER_PREFIX}{network}:sha256:{hex}");
    if owner.len() <= MAX_OWNER {
        return owner;
    }
    let digest = Sha256::digest(plain.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{OWNER_PREFIX}sha256:{hex}")
}

/// (network, container ID) of an owner written by [`owner`].
pub fn parse_owner(owner: &str) -> Option<(&str, &str)> {
    owner.strip_prefix(OWNER_PREFIX)?.split_once(':')
}

/// Short, id-safe prefix of an attachment's mapping ids (the daemon allows 256 bytes of
/// `A-Za-z0-9._-`; container IDs may be longer or use other characters).
fn id_prefix(network: &str, container_id: &str) -> String {
    let digest = Sha256::digest(format!("{network}\0{container_id}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("cni-{hex}")
}

/// The addresses the daemon listens on for a mapping: the `hostIP` itself, or for none both
/// wildcards (the IPv6 one only when the host has IPv6). When the runtime binds the ports
/// itself (`hostIP`, or `0.0.0.0` for none), only what it leaves: `[::]` for no `hostIP`.
fn listen_addresses(m: &Mapping, ipv6: bool, runtime_binds: bool) -> Vec<IpAddr> {
    match m.host_ip {
        _ if runtime_binds && !ipv6 => vec![],
        Some(_) if runtime_binds => vec![],
        None if runtime_binds => vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
        Some(ip) => vec![ip],
        None if ipv6 => vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ],
        None => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
    }
}

/// The daemon mappings of one attachment. IPv6 listeners forward to the container's IPv6
/// address when it has one, else to its IPv4 address (and IPv4 listeners the other way
/// round). SCTP is left to the kernel: the daemon proxies TCP and UDP only.
pub fn specs(
    conf: &PortMapConfig,
    container_id: &str,
    addrs: &[IpNet],
    ipv6: bool,
) -> Vec<MappingSpec> {
    let v4 = addrs.iter().find(|a| a.addr().is_ipv4()).map(IpNet::addr);
    let v6 = addrs.iter().find(|a| a.addr().is_ipv6()).map(IpNet::addr);
    let owner = owner(&conf.network, container_id);
    let prefix = id_prefix(&conf.network, container_id);
    let runtime_binds = conf
        .userland_proxy
        .as_ref()
        .is_some_and(|s| s.runtime_binds_ports);
    let mut out: Vec<MappingSpec> = Vec::new();
    for m in &conf.mappings {
        let proto = match m.protocol {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
            Protocol::Sctp => continue,
        };
        for host_ip in listen_addresses(m, ipv6, runtime_binds) {
            let backend = if host_ip.is_ipv6() {
                v6.or(v4)
            } else {
                v4.or(v6)
            };
            let Some(container_ip) = backend else {
                continue;
            };
            let ip_name: String = host_ip
                .to_string()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '.' })
                .collect();
            let id = format!("{prefix}_{}_{ip_name}_{}", proto.as_str(), m.host_port);
            if out.iter().any(|s| s.id == id) {
                // The same host socket twice (a duplicated mapping): the first one wins.
                continue;
            }
            out.push(MappingSpec {
                id,
                owner: owner.clone(),
                proto,
                host_ip,
                host_port: m.host_port,
                host_port_end: None,
                container_ip,
                container_port: m.container_port,
                proxy_protocol: None,
            });
        }
    }
    out
}

/// Whether this host (network namespace) has IPv6, so `[::]` can be bound.
pub fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|v| v.trim() == "0")
}

/// The ADD error for a port the daemon could not take: the container holding it (from the
/// daemon's holder `mapping <id> (owner cni:<net>:<id>)`) or the daemon's own words (a host
/// process, e.g. `nginx (pid 1234)`).
pub fn conflict_message(spec: &MappingSpec, msg: &str, holder: &str) -> String {
    let what = format!(
        "host port {}/{} on {}",
        spec.host_port,
        spec.proto.as_str(),
        spec.host_ip
    );
    let owner = holder
        .split_once("(owner ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .and_then(parse_owner);
    match owner {
        Some((network, id)) => format!(
            "{what} is already mapped to container {id} (network {network:?}) and held by the ferry-proxy daemon: remove that mapping first or choose another host port"
        ),
        None => format!("{msg}: stop it or choose another host port ({what})"),
    }
}

/// Whether a client error means nobody serves the socket (missing, or refused): the daemon is
/// not running, as opposed to a daemon that answered badly or hangs.
fn not_running(e: &ferry_proxy::Error) -> bool {
    matches!(e, ferry_proxy::Error::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused))
}

fn proxy_error(context: &str, e: ferry_proxy::Error) -> Error {
    let code = match &e {
        ferry_proxy::Error::Conflict { .. } => code::PORT_CONFLICT,
        ferry_proxy::Error::Invalid(_) => code::INVALID_CONFIG,
        _ => code::PROXY,
    };
    Error::new(code, format!("{context}: {e}"))
}

/// The ferry-proxy daemon of one config (`proxySocket`, `proxyStateDir`, `proxyPath`).
pub struct Daemon<'a> {
    settings: &'a ProxySettings,
}

impl<'a> Daemon<'a> {
    /// The daemon these settings name (nothing is contacted yet).
    pub fn new(settings: &'a ProxySettings) -> Daemon<'a> {
        Daemon { settings }
    }

    fn client(&self) -> Client {
        Client::new(&self.settings.socket)
    }

    /// True when the socket answers a health request.
    fn answers(&self) -> bool {
        self.client()
            .with_timeout(Duration::from_secs(1))
            .health()
            .is_ok()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.settings.state_dir.join(name)
    }

    fn create_state_dir(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.settings.state_dir)
            .map_err(|e| {
                Error::new(
                    code::PROXY,
                    format!(
                        "creating the proxy state directory {} (proxyStateDir): {e}",
                        self.settings.state_dir.display()
                    ),
                )
            })
    }

    fn lock(&self) -> Result<Flock> {
        let path = self.path(LOCK_FILE);
        Flock::exclusive(&path).map_err(|e| {
            Error::new(
                code::PROXY,
                format!(
                    "locking {} to start the ferry-proxy daemon: {e}",
                    path.display()
                ),
            )
        })
    }

    /// A client of a daemon that answers: starts one when the socket does not answer.
    pub fn ensure_running(&self) -> Result<Client> {
        if self.answers() {
            return Ok(self.client());
        }
        self.create_state_dir()?;
        let _lock = self.lock()?;
        // Another portmap may have started it while we waited for the lock.
        if !self.answers() {
            self.start()?;
        }
        Ok(self.client())
    }

    /// `proxyPath`, else `ferry-proxy` next to this binary, in `/usr/local/bin`, on `PATH`.
    fn binary(&self) -> Result<PathBuf> {
        if let Some(b) = &self.settings.binary {
            if is_executable(b) {
                return Ok(b.clone());
            }
            return Err(Error::invalid_config(format!(
                "proxyPath {} is not an executable file",
                b.display()
            )));
        }
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            candidates.push(dir.join("ferry-proxy"));
        }
        candidates.push(PathBuf::from("/usr/local/bin/ferry-proxy"));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("ferry-proxy")));
        }
        let searched = candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        candidates
            .into_iter()
            .find(|c| is_executable(c))
            .ok_or_else(|| {
                Error::new(
                    code::PROXY,
                    format!(
                        "userlandProxy needs the ferry-proxy binary: not found in {searched}; install it or set \"proxyPath\""
                    ),
                )
            })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.path(LOG_FILE)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Starts `ferry-proxy daemon` detached (own session, stdin from /dev/null, output to
    /// the log file) and waits until it answers. Called with the start lock held.
    fn start(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::process::CommandExt;
        let binary = self.binary()?;
        let log_path = self.path(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", log_path.display()), e))?;
        let mut command = std::process::Command::new(&binary);
        command
            .arg("daemon")
            .arg("--socket")
            .arg(&self.settings.socket)
            .arg("--state-dir")
            .arg(&self.settings.state_dir)
            .current_dir("/")
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or("/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: setsid and close_range are async-signal-safe; nothing else runs here.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Whatever the runtime left open without CLOEXEC must not stay open in a
                // long-lived daemon (CLOSE_RANGE_CLOEXEC keeps std's exec-error pipe working).
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            Error::new(
                code::PROXY,
                format!("starting {} daemon: {e}", binary.display()),
            )
        })?;
        let pid = child.id();
        let _ = write_atomic(&self.path(PID_FILE), format!("{pid}\n").as_bytes());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.answers() {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::new(
                    code::PROXY,
                    format!(
                        "the ferry-proxy daemon ({}) exited at start ({status}): {}",
                        binary.display(),
                        self.log_tail()
                    ),
                )
                .with_details(format!("log: {}", log_path.display())));
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    code::PROXY,
                    format!(
                        "the ferry-proxy daemon (pid {pid}) did not answer on {} within {:?}: {}",
                        self.settings.socket.display(),
                        START_TIMEOUT,
                        self.log_tail()
                    ),
                )
                .with_details(format!("log: {}", log_path.display())));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Makes the daemon hold exactly `wanted` for `owner` (starting it if needed). On a
    /// conflict nothing of `owner` is left in the daemon and the error (code 101) names the
    /// holder.
    pub fn reserve(&self, owner: &str, wanted: &[MappingSpec]) -> Result<()> {
        let client = self.client();
        let held = match client.list_owner(owner) {
            Err(e) if not_running(&e) => {
                self.ensure_running()?;
                client.list_owner(owner)
            }
            other => other,
        }
        .map_err(|e| proxy_error("listing mappings", e))?;
        for h in held.iter().filter(|h| !wanted.contains(&h.spec)) {
            // A repeated ADD with other mappings: drop what is no longer wanted.
            client
                .delete(&h.spec.id)
                .map_err(|e| proxy_error("removing an outdated mapping", e))?;
        }
        for spec in wanted {
            if let Err(e) = client.add(spec) {
                let err = match e {
                    ferry_proxy::Error::Conflict { msg, holder } => {
                        Error::new(code::PORT_CONFLICT, conflict_message(spec, &msg, &holder))
                    }
                    other => proxy_error(
                        &format!(
                            "asking the ferry-proxy daemon for host port {}/{} on {}",
                            spec.host_port,
                            spec.proto.as_str(),
                            spec.host_ip
                        ),
                        other,
                    ),
                };
                let _ = client.delete_owner(owner);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Removes every mapping of the owners `select` picks. A daemon that is not running is
    /// not started: its state file is edited instead (under the start lock), so a later
    /// start does not bring the mappings back.
    fn release_where(&self, select: impl Fn(&str) -> bool) -> Result<()> {
        if !self.answers() {
            if !self.settings.state_dir.is_dir() {
                return Ok(());
            }
            let _lock = self.lock()?;
            if !self.answers() {
                let store = StateStore::open(&self.settings.state_dir)
                    .map_err(|e| proxy_error("opening the proxy state", e))?;
                let specs = store
                    .load()
                    .map_err(|e| proxy_error("reading the proxy state", e))?;
                let kept: Vec<MappingSpec> = specs
                    .iter()
                    .filter(|s| !select(&s.owner))
                    .cloned()
                    .collect();
                if kept.len() != specs.len() {
                    store
                        .save(&kept)
                        .map_err(|e| proxy_error("writing the proxy state", e))?;
                }
                return Ok(());
            }
        }
        let client = self.client();
        let owners: BTreeSet<String> = client
            .list()
            .map_err(|e| proxy_error("listing mappings", e))?
            .into_iter()
            .map(|m| m.spec.owner)
            .filter(|o| select(o))
            .collect();
        for o in owners {
            client
                .delete_owner(&o)
                .map_err(|e| proxy_error(&format!("removing the mappings of {o}"), e))?;
        }
        Ok(())
    }

    /// DEL: removes `owner`'s mappings (idempotent; never starts the daemon). Returns once
    /// their host sockets are closed, so the port can be bound again right away.
    pub fn release(&self, owner: &str) -> Result<()> {
        let client = self.client();
        let held = match client.list_owner(owner) {
            Ok(held) => held,
            Err(e) if not_running(&e) => return self.release_where(|o| o == owner),
            Err(e) => return Err(proxy_error("listing the proxy mappings", e)),
        };
        if held.is_empty() {
            return Ok(());
        }
        client
            .delete_owner(owner)
            .map_err(|e| proxy_error("removing the proxy mappings", e))?;
        let specs: Vec<MappingSpec> = held.into_iter().map(|h| h.spec).collect();
        wait_closed(&specs, RELEASE_WAIT);
        Ok(())
    }

    /// GC: removes the mappings of `network`'s attachments whose container is not in `valid`.
    pub fn release_stale(&self, network: &str, valid: &BTreeSet<String>) -> Result<()> {
        let valid_owners: BTreeSet<String> = valid.iter().map(|id| owner(network, id)).collect();
        self.release_where(|o| {
            parse_owner(o).is_some_and(|(net, _)| net == network) && !valid_owners.contains(o)
        })
    }

    /// CHECK: the daemon runs and serves every wanted mapping.
    pub fn verify(&self, owner: &str, wanted: &[MappingSpec]) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let held = self.client().list_owner(owner).map_err(|e| {
            Error::new(
                code::PROXY,
                format!("the ferry-proxy daemon does not answer, so the host ports are not held ({e}); ADD again to start it"),
            )
        })?;
        for w in wanted {
            match held.iter().find(|h| h.spec.id == w.id) {
                Some(h) if h.spec == *w && h.listening => {}
                Some(h) => {
                    return Err(Error::new(
                        code::PROXY,
                        format!(
                            "the ferry-proxy daemon does not serve host port {}/{} on {} as configured: {}",
                            w.host_port,
                            w.proto.as_str(),
                            w.host_ip,
                            h.error.clone().unwrap_or_else(|| "different settings".into())
                        ),
                    ))
                }
                None => {
                    return Err(Error::new(
                        code::PROXY,
                        format!(
                            "the ferry-proxy daemon does not hold host port {}/{} on {} for this container",
                            w.host_port,
                            w.proto.as_str(),
                            w.host_ip
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// STATUS: the daemon answers, or can be started.
    pub fn available(&self) -> Result<()> {
        if self.answers() {
            return Ok(());
        }
        self.binary()
            .map(|_| ())
            .map_err(|e| Error::new(code::STATUS_UNAVAILABLE, e.msg))
    }
}

/// Waits (bounded) until every host socket of `specs` could be bound again. The probe binds
/// without listening, so no connection can ever land on it.
fn wait_closed(specs: &[MappingSpec], limit: Duration) {
    let deadline = Instant::now() + limit;
    for spec in specs {
        while !can_bind(spec) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// Whether `spec`'s host address and port can be bound (SO_REUSEADDR, V6ONLY for IPv6, as
/// the daemon binds).
fn can_bind(spec: &MappingSpec) -> bool {
    let (kind, protocol) = match spec.proto {
        Proto::Tcp => (libc::SOCK_STREAM, 0),
        Proto::Udp => (libc::SOCK_DGRAM, 0),
        Proto::Sctp => (libc::SOCK_STREAM, libc::IPPROTO_SCTP),
    };
    let one: libc::c_int = 1;
    let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: plain socket calls on an fd owned here and closed before returning; the
    // sockaddr structs are zero-initialised and fully sized.
    unsafe {
        let (domain, rc_addr) = match spec.host_ip {
            IpAddr::V4(ip) => (libc::AF_INET, {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = spec.host_port.to_be();
                sa.sin_addr.s_addr = u32::from(ip).to_be();
                SockAddr::V4(sa)
            }),
            IpAddr::V6(ip) => (libc::AF_INET6, {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = spec.host_port.to_be();
                sa.sin6_addr.s6_addr = ip.octets();
                SockAddr::V6(sa)
            }),
        };
        let fd = libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol);
        if fd < 0 {
            return true;
        }
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            int_len,
        );
        let rc = match &rc_addr {
            SockAddr::V4(sa) => libc::bind(
                fd,
                (sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SockAddr::V6(sa) => {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_V6ONLY,
                    (&one as *const libc::c_int).cast(),
                    int_len,
                );
                libc::bind(
                    fd,
                    (sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        let in_use =
            rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EADDRINUSE);
        libc::close(fd);
        !in_use
    }
}

enum SockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(entries: &[(i64, i64, &str, &str)]) -> PortMapConfig {
        crate::config::test_config("flhnet", true, entries)
    }

    fn listens(specs: &[MappingSpec]) -> Vec<String> {
        specs
            .iter()
            .map(|s| {
                format!(
                    "{}:{}/{} -> {}:{}",
                    s.host_ip,
                    s.host_port,
                    s.proto.as_str(),
                    s.container_ip,
                    s.container_port
                )
            })
            .collect()
    }

    #[test]
    fn no_host_ip_holds_both_wildcards_and_ipv6_goes_to_ipv4_only_containers() {
        let c = conf(&[(18080, 80, "tcp", ""), (18081, 53, "udp", "")]);
        let v4only: Vec<IpNet> = vec!["10.213.176.2/24".parse().unwrap()];
        assert_eq!(
            listens(&specs(&c, "c1", &v4only, true)),
            [
                "0.0.0.0:18080/tcp -> 10.213.176.2:80",
                ":::18080/tcp -> 10.213.176.2:80",
                "0.0.0.0:18081/udp -> 10.213.176.2:53",
                ":::18081/udp -> 10.213.176.2:53",
            ]
        );
        let dual: Vec<IpNet> = vec![
            "10.213.176.2/24".parse().unwrap(),
            "fd00:213:176::2/64".parse().unwrap(),
        ];
        let s = specs(&c, "c1", &dual, false);
        assert_eq!(listens(&s[..1]), ["0.0.0.0:18080/tcp -> 10.213.176.2:80"]);
        assert_eq!(s.len(), 2, "no [::] listener without IPv6");
        assert_eq!(
            listens(&specs(&c, "c1", &dual, true))[1],
            ":::18080/tcp -> fd00:213:176::2:80"
        );
    }

    #[test]
    fn host_ip_is_the_only_listener_and_sctp_is_left_to_the_kernel() {
        let c = conf(&[
            (18080, 80, "tcp", "127.0.0.1"),
            (18082, 80, "tcp", "::1"),
            (18083, 80, "tcp", "0.0.0.0"),
            (18084, 80, "sctp", ""),
        ]);
        let v4only: Vec<IpNet> = vec!["10.213.176.2/24".parse().unwrap()];
        assert_eq!(
            listens(&specs(&c, "c1", &v4only, true)),
            [
                "127.0.0.1:18080/tcp -> 10.213.176.2:80",
                "::1:18082/tcp -> 10.213.176.2:80",
                "0.0.0.0:18083/tcp -> 10.213.176.2:80",
            ]
        );
        assert!(specs(&c, "c1", &[], true).is_empty());
    }

    #[test]
    fn a_runtime_that_binds_ports_keeps_them_and_the_daemon_takes_ipv6() {
        let mut c = conf(&[
            (18080, 80, "tcp", ""),
            (18081, 80, "tcp", "127.0.0.1"),
            (18082, 80, "tcp", "::1"),
        ]);
        c.userland_proxy = Some(ProxySettings {
            socket: "/s".into(),
            state_dir: "/d".into(),
            binary: None,
            runtime_binds_ports: true,
        });
        let v4only: Vec<IpNet> = vec!["10.213.176.2/24".parse().unwrap()];
        assert_eq!(
            listens(&specs(&c, "c1", &v4only, true)),
            [":::18080/tcp -> 10.213.176.2:80"]
        );
        assert!(specs(&c, "c1", &v4only, false).is_empty());
        assert!(c.kernel_serves_loopback(firewall::Family::V4));
        assert!(!c.kernel_serves_loopback(firewall::Family::V6));
    }

    #[test]
    fn ids_are_valid_for_the_daemon_and_owners_parse_back() {
        let c = conf(&[(18080, 80, "tcp", "")]);
        let long_id = "x".repeat(4096);
        let addrs: Vec<IpNet> = vec!["10.213.176.2/24".parse().unwrap()];
        for id in ["c1", long_id.as_str(), "a/b c"] {
            for s in specs(&c, id, &addrs, true) {
                let normalized = s.clone().normalize().expect("daemon accepts the spec");
                assert_eq!(normalized, s, "already normalized, so CHECK can compare");
            }
        }
        assert_eq!(parse_owner(&owner("flhnet", "c1")), Some(("flhnet", "c1")));
        let long = owner("flhnet", &long_id);
        assert!(long.len() <= 256 && long.starts_with("cni:flhnet:sha256:"));
        assert_ne!(
            specs(&c, "c1", &addrs, true)[0].id,
            specs(&c, "c2", &addrs, true)[0].id
        );
    }

    #[test]
    fn bind_probe_sees_listeners_and_never_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = conf(&[(i64::from(port), 80, "tcp", "127.0.0.1")]);
        let spec = specs(&c, "c1", &["10.213.176.2/24".parse().unwrap()], false).remove(0);
        assert!(!can_bind(&spec));
        drop(listener);
        assert!(can_bind(&spec));
        wait_closed(std::slice::from_ref(&spec), Duration::from_millis(10));
    }

    #[test]
    fn a_missing_socket_means_not_running() {
        let dir = tempfile_dir();
        let client = Client::new(dir.join("none.sock"));
        assert!(not_running(&client.health().unwrap_err()));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flh-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn conflicts_name_the_container_or_the_process() {
        let c = conf(&[(18080, 80, "tcp", "")]);
        let addrs: Vec<IpNet> = vec!["10.213.176.2/24".parse().unwrap()];
        let s = &specs(&c, "c2", &addrs, true)[0];
        let m = conflict_message(
            s,
            "host port 0.0.0.0:18080/tcp is already held by …",
            "mapping cni-1_tcp_0.0.0.0_18080 (owner cni:flhnet:c1)",
        );
        assert!(m.contains("container c1 (network \"flhnet\")"), "{m}");
        let m = conflict_message(
            s,
            "host port 0.0.0.0:18080/tcp is already in use by socat (pid 42)",
            "socat (pid 42)",
        );
        assert!(m.contains("socat (pid 42)"), "{m}");
    }
}
