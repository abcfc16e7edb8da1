//! The portmap config, with the reference plugin's keys, validated into [`PortMapConfig`].

use cni::{code, CniResult, Error, Result};
use firewall::{BackendKind, Family, Protocol};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// The reference's default mark bit (Kubernetes uses 14 and 15, Calico 20–31).
pub const DEFAULT_MARK_BIT: i64 = 13;

/// One entry of `runtimeConfig.portMappings`, as the runtime sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapEntry {
    /// Port on the host.
    pub host_port: i64,
    /// Port in the container.
    pub container_port: i64,
    /// `tcp`, `udp` or `sctp`, any case.
    #[serde(default)]
    pub protocol: String,
    /// Host address the mapping is limited to; empty means every address.
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    port_mappings: Option<Vec<PortMapEntry>>,
}

/// The JSON keys portmap reads, spelled as in the reference plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    snat: Option<bool>,
    conditions_v4: Option<Vec<String>>,
    conditions_v6: Option<Vec<String>>,
    #[serde(default)]
    masq_all: bool,
    mark_masq_bit: Option<i64>,
    external_set_mark_chain: Option<String>,
    backend: Option<String>,
    check_port_conflicts: Option<bool>,
    userland_proxy: Option<bool>,
    proxy_socket: Option<String>,
    proxy_state_dir: Option<String>,
    proxy_path: Option<String>,
    runtime_binds_ports: Option<bool>,
    runtime_config: Option<RuntimeConfig>,
}

/// Default API socket of the ferry-proxy daemon (the daemon's own default).
pub const DEFAULT_PROXY_SOCKET: &str = "/run/ferry/proxy.sock";
/// Default state directory of the ferry-proxy daemon (the daemon's own default).
pub const DEFAULT_PROXY_STATE_DIR: &str = "/var/lib/ferry/proxy";

/// Where the ferry-proxy daemon of the `userlandProxy` mode lives and how to start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// The daemon's API socket (`proxySocket`).
    pub socket: PathBuf,
    /// The daemon's state directory (`proxyStateDir`); also holds the start lock, the pid
    /// file and the log of a daemon portmap started.
    pub state_dir: PathBuf,
    /// The `ferry-proxy` binary (`proxyPath`); `None` searches next to portmap, then
    /// `/usr/local/bin`, then `PATH`.
    pub binary: Option<PathBuf>,
    /// `runtimeBindsPorts`: the runtime binds the host ports itself after ADD (podman with
    /// CNI, as root, keeps `hostIP:hostPort` — `0.0.0.0` when empty — open in conmon). The
    /// daemon then leaves those addresses to it, and IPv4 loopback stays on the reference's
    /// DNAT (`route_localnet`): a connection to the runtime's never-accepting socket would
    /// hang. The daemon still serves IPv6 (`::1`, host IPv6 → IPv4-only container).
    pub runtime_binds_ports: bool,
}

/// A validated port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mapping {
    /// Protocol.
    pub protocol: Protocol,
    /// Port on the host, 1–65535.
    pub host_port: u16,
    /// Port in the container, 1–65535.
    pub container_port: u16,
    /// The host address, when the mapping is limited to one family or one address.
    pub host_ip: Option<IpAddr>,
}

impl Mapping {
    /// Whether this mapping applies to `family` (a `hostIP` of the other family does not).
    pub fn applies_to(&self, family: Family) -> bool {
        self.host_ip.is_none_or(|ip| Family::of(&ip) == family)
    }

    /// The destination address to match: `None` for every address (`hostIP` empty or
    /// unspecified, as the reference treats `0.0.0.0` and `::`).
    pub fn destination(&self) -> Option<IpAddr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }
}

/// The whole, validated configuration of one request.
#[derive(Debug, Clone)]
pub struct PortMapConfig {
    /// Network name (part of the chain-name hash and the rule comments).
    pub network: String,
    /// Add the mark-and-masquerade rules for hairpin and localhost traffic.
    pub snat: bool,
    /// Masquerade hairpin traffic from every source, not only the container's network.
    pub masq_all: bool,
    /// The mark bit value (`1 << markMasqBit`).
    pub mark: u32,
    /// A chain the user manages that sets the masquerade mark (iptables only).
    pub external_set_mark_chain: Option<String>,
    /// Extra match words for the entry rules, per family (backend-native syntax).
    pub conditions_v4: Vec<String>,
    /// See `conditions_v4`.
    pub conditions_v6: Vec<String>,
    /// The firewall backend.
    pub backend: BackendKind,
    /// Refuse mappings whose host port is already taken (ferry's extension, default true).
    pub check_port_conflicts: bool,
    /// The mappings.
    pub mappings: Vec<Mapping>,
    /// `"userlandProxy": true`: Docker's model. Loopback destinations are not DNATed (no
    /// `route_localnet`); the ferry-proxy daemon holds every mapped host port and serves
    /// loopback and host-IPv6 → IPv4-only containers. `None` = off (the reference's model).
    pub userland_proxy: Option<ProxySettings>,
}

impl PortMapConfig {
    /// Parses and validates the request's config (code 7 on anything invalid).
    pub fn from_netconf(conf: &cni::NetConf) -> Result<PortMapConfig> {
        let raw: RawConfig = conf.plugin()?;
        if raw.mark_masq_bit.is_some() && raw.external_set_mark_chain.is_some() {
            return Err(Error::invalid_config(
                "Cannot specify externalSetMarkChain and markMasqBit: use one of them",
            ));
        }
        let bit = raw.mark_masq_bit.unwrap_or(DEFAULT_MARK_BIT);
        if !(0..=31).contains(&bit) {
            return Err(Error::invalid_config(format!(
                "MasqMarkBit must be between 0 and 31, got {bit}"
            )));
        }
        let backend = match raw.backend.as_deref() {
            None | Some("") => BackendKind::detect(),
            Some(b) => BackendKind::parse(b).ok_or_else(|| {
                Error::invalid_config(format!(
                    "unrecognized backend {b:?}: use \"iptables\" or \"nftables\""
                ))
            })?,
        };
        if backend == BackendKind::Nftables && raw.external_set_mark_chain.is_some() {
            return Err(Error::invalid_config(
                "externalSetMarkChain works only with the iptables backend",
            ));
        }
        let entries = raw
            .runtime_config
            .and_then(|r| r.port_mappings)
            .unwrap_or_default();
        let mappings = entries
            .iter()
            .map(validate_entry)
            .collect::<Result<Vec<_>>>()?;
        Ok(PortMapConfig {
            network: conf.name.clone(),
            snat: raw.snat.unwrap_or(true),
            masq_all: raw.masq_all,
            mark: 1u32 << bit,
            external_set_mark_chain: raw.external_set_mark_chain,
            conditions_v4: raw.conditions_v4.unwrap_or_default(),
            conditions_v6: raw.conditions_v6.unwrap_or_default(),
            backend,
            check_port_conflicts: raw.check_port_conflicts.unwrap_or(true),
            mappings,
            userland_proxy: proxy_settings(
                raw.userland_proxy,
                raw.proxy_socket,
                raw.proxy_state_dir,
                raw.proxy_path,
            )?
            .map(|s| ProxySettings {
                runtime_binds_ports: raw
                    .runtime_binds_ports
                    .unwrap_or_else(crate::host::parent_is_podman),
                ..s
            }),
        })
    }

    /// Whether the kernel DNATs loopback destinations of `family` (the reference's model:
    /// 127.0.0.1 through `route_localnet`). With `userlandProxy` the daemon serves loopback
    /// instead, except IPv4 loopback when the runtime binds the ports itself.
    pub fn kernel_serves_loopback(&self, family: Family) -> bool {
        match &self.userland_proxy {
            None => true,
            Some(s) => family == Family::V4 && s.runtime_binds_ports,
        }
    }

    /// The entry conditions for `family`.
    pub fn conditions(&self, family: Family) -> &[String] {
        match family {
            Family::V4 => &self.conditions_v4,
            Family::V6 => &self.conditions_v6,
        }
    }
}

fn proxy_settings(
    on: Option<bool>,
    socket: Option<String>,
    state_dir: Option<String>,
    binary: Option<String>,
) -> Result<Option<ProxySettings>> {
    if on != Some(true) {
        return Ok(None);
    }
    let absolute = |key: &str, value: Option<String>, default: &str| -> Result<PathBuf> {
        let path = PathBuf::from(value.filter(|v| !v.is_empty()).unwrap_or(default.into()));
        if !path.is_absolute() {
            return Err(Error::invalid_config(format!(
                "{key} must be an absolute path, got {:?}",
                path.display()
            )));
        }
        Ok(path)
    };
    let binary = match binary.filter(|b| !b.is_empty()) {
        Some(b) => Some(absolute("proxyPath", Some(b), "")?),
        None => None,
    };
    Ok(Some(ProxySettings {
        socket: absolute("proxySocket", socket, DEFAULT_PROXY_SOCKET)?,
        state_dir: absolute("proxyStateDir", state_dir, DEFAULT_PROXY_STATE_DIR)?,
        binary,
        runtime_binds_ports: false,
    }))
}

fn port(value: i64, which: &str) -> Result<u16> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            Error::invalid_config(format!(
                "Invalid {which} port number: {value} (must be 1-65535)"
            ))
        })
}

/// Validates one runtime mapping: ports 1–65535, tcp/udp/sctp, a parseable `hostIP`.
pub fn validate_entry(e: &PortMapEntry) -> Result<Mapping> {
    let container_port = port(e.container_port, "container")?;
    let host_port = port(e.host_port, "host")?;
    let protocol = Protocol::parse(&e.protocol).ok_or_else(|| {
        Error::invalid_config(format!(
            "unsupported protocol {:?} for host port {}: use tcp, udp or sctp",
            e.protocol, e.host_port
        ))
    })?;
    let host_ip = match e.host_ip.trim() {
        "" => None,
        s => Some(s.parse::<IpAddr>().map_err(|_| {
            Error::invalid_config(format!(
                "invalid hostIP {s:?} for host port {}",
                e.host_port
            ))
        })?),
    };
    Ok(Mapping {
        protocol,
        host_port,
        container_port,
        host_ip,
    })
}

/// The container's addresses portmap forwards to: the first IPv4 and the first IPv6 address
/// of prevResult that belong to the sandbox interface `ifname` (or to no known interface), as
/// the reference chooses them.
pub fn container_addresses(result: &CniResult, ifname: &str) -> Vec<IpNet> {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &result.ips {
        if let Some(idx) = ip.interface {
            if let Some(iface) = result.interfaces.get(idx) {
                let in_sandbox = iface.sandbox.as_deref().is_some_and(|s| !s.is_empty());
                if iface.name != ifname || !in_sandbox {
                    continue;
                }
            }
        }
        let slot = match ip.address {
            IpNet::V4(_) => &mut v4,
            IpNet::V6(_) => &mut v6,
        };
        if slot.is_none() {
            *slot = Some(ip.address);
        }
    }
    v4.into_iter().chain(v6).collect()
}

/// Error for ADD without prevResult, worded as the reference's.
pub fn not_chained() -> Error {
    Error::new(code::INVALID_CONFIG, "must be called as chained plugin").with_details(
        "portmap needs the previous plugin's result (prevResult) to know the container's addresses",
    )
}

/// A config for unit tests: network `network`, iptables backend, the reference's defaults
/// otherwise, and the mappings `(hostPort, containerPort, protocol, hostIP)`.
#[cfg(test)]
pub(crate) fn test_config(
    network: &str,
    snat: bool,
    entries: &[(i64, i64, &str, &str)],
) -> PortMapConfig {
    PortMapConfig {
        network: network.into(),
        snat,
        masq_all: false,
        mark: 0x2000,
        external_set_mark_chain: None,
        conditions_v4: vec![],
        conditions_v6: vec![],
        backend: firewall::BackendKind::Iptables,
        check_port_conflicts: true,
        userland_proxy: None,
        mappings: entries
            .iter()
            .map(|(h, c, p, ip)| {
                validate_entry(&PortMapEntry {
                    host_port: *h,
                    container_port: *c,
                    protocol: p.to_string(),
                    host_ip: ip.to_string(),
                })
                .unwrap()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(h: i64, c: i64, p: &str, ip: &str) -> PortMapEntry {
        PortMapEntry {
            host_port: h,
            container_port: c,
            protocol: p.into(),
            host_ip: ip.into(),
        }
    }

    #[test]
    fn ports_outside_range_are_invalid_config() {
        for (h, c) in [(0, 80), (65536, 80), (-1, 80), (80, 0), (80, 70000)] {
            let e = validate_entry(&entry(h, c, "tcp", "")).unwrap_err();
            assert_eq!(e.code, 7, "{h}->{c}");
        }
    }

    #[test]
    fn unknown_protocol_is_invalid_config_and_case_is_ignored() {
        assert_eq!(
            validate_entry(&entry(80, 80, "icmp", "")).unwrap_err().code,
            7
        );
        assert_eq!(validate_entry(&entry(80, 80, "", "")).unwrap_err().code, 7);
        assert_eq!(
            validate_entry(&entry(80, 80, "UDP", "")).unwrap().protocol,
            Protocol::Udp
        );
    }

    #[test]
    fn userland_proxy_keys_have_defaults_and_must_be_absolute() {
        assert_eq!(proxy_settings(None, None, None, None).unwrap(), None);
        assert_eq!(proxy_settings(Some(false), None, None, None).unwrap(), None);
        let s = proxy_settings(Some(true), None, None, None)
            .unwrap()
            .unwrap();
        assert_eq!(s.socket, PathBuf::from(DEFAULT_PROXY_SOCKET));
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_PROXY_STATE_DIR));
        assert_eq!(s.binary, None);
        let e = proxy_settings(Some(true), Some("rel.sock".into()), None, None).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("proxySocket"), "{}", e.msg);
        assert_eq!(
            proxy_settings(Some(true), None, None, Some("bin/x".into()))
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn userland_conflists_in_testdata_switch_the_mode_on() {
        for text in [
            include_str!("../../../testdata/portmap/podman-userland.conflist"),
            include_str!("../../../testdata/portmap/containerd-userland.conflist"),
        ] {
            let list: serde_json::Value = serde_json::from_str(text).unwrap();
            let portmap = list["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["type"] == "portmap")
                .unwrap();
            let raw: RawConfig = serde_json::from_value(portmap.clone()).unwrap();
            let settings = proxy_settings(
                raw.userland_proxy,
                raw.proxy_socket,
                raw.proxy_state_dir,
                raw.proxy_path,
            )
            .unwrap()
            .expect("userlandProxy on");
            assert_eq!(settings.socket, PathBuf::from(DEFAULT_PROXY_SOCKET));
        }
    }

    #[test]
    fn host_ip_selects_family_and_unspecified_means_any_address() {
        let m = validate_entry(&entry(80, 80, "tcp", "::")).unwrap();
        assert!(m.applies_to(Family::V6) && !m.applies_to(Family::V4));
        assert_eq!(m.destination(), None);
        let m = validate_entry(&entry(80, 80, "tcp", "192.0.2.1")).unwrap();
        assert_eq!(m.destination(), Some("192.0.2.1".parse().unwrap()));
        assert!(validate_entry(&entry(80, 80, "tcp", ""))
            .unwrap()
            .applies_to(Family::V6));
    }
}
