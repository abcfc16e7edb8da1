//! The bridge config, with the reference's JSON keys, and the pure decisions made from it
//! (validation, MAC precedence, gateways and default routes).

use std::net::IpAddr;

use cni::error::{code, Error, Result};
use cni::result::{CniResult, Dns, Route};
use firewall::BackendKind;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

/// Default bridge name (reference).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// One `vlanTrunk` entry: a single `id`, or a `minID`..`maxID` range.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct VlanTrunk {
    /// First VLAN of a range.
    #[serde(rename = "minID")]
    pub min_id: Option<i64>,
    /// Last VLAN of a range.
    #[serde(rename = "maxID")]
    pub max_id: Option<i64>,
    /// A single VLAN.
    pub id: Option<i64>,
}

/// `ipam`: only its type matters here; the IPAM plugin reads the rest from the whole config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamRef {
    /// IPAM plugin type; empty means a layer-2-only attachment.
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct MacHolder {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ArgsHolder {
    #[serde(default)]
    cni: Option<MacHolder>,
}

/// The config keys of the reference bridge plugin, plus `isolate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawConf {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: i64,
    #[serde(default)]
    vlan_trunk: Option<Vec<VlanTrunk>>,
    #[serde(default)]
    preserve_default_vlan: Option<bool>,
    #[serde(default)]
    port_isolation: bool,
    #[serde(default, rename = "enabledad")]
    enable_dad: bool,
    #[serde(default)]
    disable_container_interface: bool,
    #[serde(default, rename = "macspoofchk")]
    mac_spoof_chk: bool,
    #[serde(default)]
    ipam: Option<IpamRef>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    isolate: bool,
    #[serde(default)]
    args: Option<ArgsHolder>,
    #[serde(default)]
    runtime_config: Option<MacHolder>,
}

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    /// Bridge name.
    pub bridge: String,
    /// Give the bridge the gateway address (implied by `is_default_gateway`).
    pub is_gateway: bool,
    /// Add a default route via the gateway in the container.
    pub is_default_gateway: bool,
    /// Replace a different address already on the bridge.
    pub force_address: bool,
    /// Masquerade traffic leaving the subnet.
    pub ip_masq: bool,
    /// Backend for ipMasq (None: detect).
    pub ip_masq_backend: Option<BackendKind>,
    /// MTU for bridge and veth (None: kernel default).
    pub mtu: Option<u32>,
    /// Hairpin on the host veth.
    pub hairpin_mode: bool,
    /// Promiscuous bridge.
    pub promisc_mode: bool,
    /// Access VLAN (0: none).
    pub vlan: u16,
    /// Trunk VLANs, sorted and unique.
    pub vlans: Vec<u16>,
    /// Keep VLAN 1 on the port when vlan/vlanTrunk is set.
    pub preserve_default_vlan: bool,
    /// Isolated bridge port (ports with it cannot talk to each other).
    pub port_isolation: bool,
    /// Run IPv6 DAD on the container's addresses.
    pub enable_dad: bool,
    /// Leave the container interface down.
    pub disable_container_interface: bool,
    /// Anti-spoofing rules for the container MAC.
    pub mac_spoof_chk: bool,
    /// IPAM type ("" = layer 2 only).
    pub ipam_type: String,
    /// Config-level DNS, used instead of IPAM's when set.
    pub dns: Option<Dns>,
    /// Isolate this network from other isolating networks.
    pub isolate: bool,
    /// Container MAC (runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC).
    pub mac: Option<[u8; 6]>,
}

fn invalid(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(code::INVALID_CONFIG, format!("invalid \"{key}\": {msg}"))
}

/// The reference's vlanTrunk expansion, with its rules, keyed errors instead of generic ones.
pub fn collect_vlan_trunk(trunks: &[VlanTrunk]) -> Result<Vec<u16>> {
    let mut out = std::collections::BTreeSet::new();
    let ok = |v: i64| (1..=4094).contains(&v);
    for t in trunks {
        match (t.min_id, t.max_id) {
            (Some(min), Some(max)) => {
                if !ok(min) {
                    return Err(invalid(
                        "vlanTrunk",
                        format!("minID {min} must be between 1 and 4094"),
                    ));
                }
                if !ok(max) {
                    return Err(invalid(
                        "vlanTrunk",
                        format!("maxID {max} must be between 1 and 4094"),
                    ));
                }
                if max < min {
                    return Err(invalid(
                        "vlanTrunk",
                        format!("minID {min} is greater than maxID {max}"),
                    ));
                }
                out.extend((min..=max).map(|v| v as u16));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "vlanTrunk",
                    "minID and maxID must be given together (minID is missing)",
                ))
            }
            (Some(_), None) => {
                return Err(invalid(
                    "vlanTrunk",
                    "minID and maxID must be given together (maxID is missing)",
                ))
            }
            (None, None) => {}
        }
        if let Some(id) = t.id {
            if !ok(id) {
                return Err(invalid(
                    "vlanTrunk",
                    format!("id {id} must be between 1 and 4094"),
                ));
            }
            out.insert(id as u16);
        }
    }
    Ok(out.into_iter().collect())
}

fn parse_mac_key(key: &str, text: &str) -> Result<[u8; 6]> {
    netops::parse_mac(text).ok_or_else(|| {
        invalid(
            key,
            format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        )
    })
}

impl BridgeConf {
    /// Validates the raw config. `cni_args_mac` is CNI_ARGS `MAC`, the lowest-priority
    /// source of the container MAC.
    pub fn from_raw(raw: RawConf, cni_args_mac: Option<&str>) -> Result<BridgeConf> {
        let bridge = raw
            .bridge
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if bridge.len() > 15
            || bridge.contains('/')
            || bridge.contains(char::is_whitespace)
            || bridge == "."
            || bridge == ".."
        {
            return Err(invalid(
                "bridge",
                format!("{bridge:?} is not a valid interface name (1-15 bytes, no '/' or spaces)"),
            ));
        }
        if !(0..=4094).contains(&raw.vlan) {
            return Err(invalid(
                "vlan",
                format!("VLAN ID {} must be between 0 and 4094", raw.vlan),
            ));
        }
        if raw.mtu != 0 && !(68..=65535).contains(&raw.mtu) {
            return Err(invalid(
                "mtu",
                format!(
                    "{} is out of range (68-65535, or 0 for the default)",
                    raw.mtu
                ),
            ));
        }
        let ip_masq_backend = match raw.ip_masq_backend.as_deref() {
            None | Some("") => None,
            Some(s) => Some(BackendKind::parse(s).ok_or_else(|| {
                invalid(
                    "ipMasqBackend",
                    format!("{s:?} is not a backend (use \"iptables\" or \"nftables\")"),
                )
            })?),
        };
        if raw.hairpin_mode && raw.promisc_mode {
            return Err(invalid(
                "promiscMode",
                "cannot set hairpin mode and promiscuous mode at the same time (set only one of hairpinMode, promiscMode)",
            ));
        }
        let vlans = match &raw.vlan_trunk {
            Some(t) => collect_vlan_trunk(t)?,
            None => Vec::new(),
        };
        if raw.vlan > 0 && !vlans.is_empty() {
            return Err(invalid(
                "vlanTrunk",
                "cannot set vlan and vlanTrunk at the same time",
            ));
        }
        if raw.vlan > 0
            && (raw.is_gateway || raw.is_default_gateway)
            && raw.ipam.as_ref().is_some_and(|i| !i.kind.is_empty())
        {
            return Err(Error::new(
                code::UNSUPPORTED_FIELD,
                "invalid \"vlan\": a gateway on a VLAN (vlan with isGateway) is not supported by ferry's bridge yet; drop isGateway or use the reference plugin for this network",
            ));
        }
        let mut mac = None;
        if let Some(m) = cni_args_mac.filter(|m| !m.is_empty()) {
            mac = Some(parse_mac_key("CNI_ARGS MAC", m)?);
        }
        if let Some(m) = raw
            .args
            .and_then(|a| a.cni)
            .and_then(|c| c.mac)
            .filter(|m| !m.is_empty())
        {
            mac = Some(parse_mac_key("args.cni.mac", &m)?);
        }
        if let Some(m) = raw
            .runtime_config
            .and_then(|r| r.mac)
            .filter(|m| !m.is_empty())
        {
            mac = Some(parse_mac_key("runtimeConfig.mac", &m)?);
        }
        let dns = raw.dns.filter(|d| !d.is_empty());
        Ok(BridgeConf {
            bridge,
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq,
            ip_masq_backend,
            mtu: (raw.mtu != 0).then_some(raw.mtu as u32),
            hairpin_mode: raw.hairpin_mode,
            promisc_mode: raw.promisc_mode,
            vlan: raw.vlan as u16,
            vlans,
            preserve_default_vlan: raw.preserve_default_vlan.unwrap_or(true),
            port_isolation: raw.port_isolation,
            enable_dad: raw.enable_dad,
            disable_container_interface: raw.disable_container_interface,
            mac_spoof_chk: raw.mac_spoof_chk,
            ipam_type: raw.ipam.map(|i| i.kind).unwrap_or_default(),
            dns,
            isolate: raw.isolate,
            mac,
        })
    }

    /// Parses and validates the config object `raw` (the whole stdin).
    pub fn parse(
        raw: &serde_json::Map<String, Value>,
        cni_args_mac: Option<&str>,
    ) -> Result<BridgeConf> {
        let rc: RawConf = serde_json::from_value(Value::Object(raw.clone())).map_err(|e| {
            Error::new(
                code::INVALID_CONFIG,
                format!("invalid bridge configuration: {e}"),
            )
        })?;
        Self::from_raw(rc, cni_args_mac)
    }

    /// True when an IPAM plugin assigns addresses (layer 3).
    pub fn is_layer3(&self) -> bool {
        !self.ipam_type.is_empty()
    }

    /// Whether the bridge needs VLAN filtering.
    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || !self.vlans.is_empty()
    }
}

/// The gateway addresses to put on the bridge, per family, with the prefix of the
/// container address they serve.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Gateways {
    /// IPv4 gateways (e.g. 10.213.16.1/24).
    pub v4: Vec<IpNet>,
    /// IPv6 gateways.
    pub v6: Vec<IpNet>,
}

/// The first host address of `net`'s network: the reference's default gateway.
pub fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    }
}

/// The reference's `calcGateways`: points every IP at interface 2, fills in missing
/// gateways when the bridge is the gateway, adds one default route per family when asked
/// and none with a gateway exists, and lists the addresses the bridge needs.
pub fn calc_gateways(result: &mut CniResult, conf: &BridgeConf) -> Gateways {
    let mut gws = Gateways::default();
    let mut default_found = [false, false];
    for ip in result.ips.iter_mut() {
        let v6 = ip.address.addr().is_ipv6();
        ip.interface = Some(2);
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = Some(first_host(&ip.address));
        }
        if conf.is_default_gateway {
            let fam = v6 as usize;
            if !default_found[fam] {
                default_found[fam] = result.routes.iter().any(|r| {
                    r.gw.is_some() && r.dst.prefix_len() == 0 && r.dst.addr().is_ipv6() == v6
                });
            }
            if !default_found[fam] {
                let dst: IpNet = if v6 {
                    "::/0".parse().unwrap_or(ip.address)
                } else {
                    "0.0.0.0/0".parse().unwrap_or(ip.address)
                };
                result.routes.push(Route {
                    dst,
                    gw: ip.gateway,
                    ..Default::default()
                });
                default_found[fam] = true;
            }
        }
        if conf.is_gateway {
            if let Some(gw) = ip.gateway {
                if let Ok(n) = IpNet::new(gw, ip.address.prefix_len()) {
                    if v6 {
                        gws.v6.push(n);
                    } else {
                        gws.v4.push(n);
                    }
                }
            }
        }
    }
    gws
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::result::IpConfig;
    use serde_json::json;

    fn parse(v: Value) -> Result<BridgeConf> {
        BridgeConf::parse(v.as_object().unwrap(), None)
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = parse(json!({"cniVersion":"1.0.0","name":"n","type":"bridge"})).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && c.preserve_default_vlan);
        assert_eq!(c.mtu, None);
        assert!(!c.is_layer3());
    }

    #[test]
    fn bad_values_are_code_7_naming_the_key() {
        for (conf, key) in [
            (json!({"vlan": 5000}), "\"vlan\""),
            (json!({"mtu": 67}), "\"mtu\""),
            (json!({"ipMasqBackend": "pf"}), "\"ipMasqBackend\""),
            (
                json!({"hairpinMode": true, "promiscMode": true}),
                "promiscMode",
            ),
            (
                json!({"vlan": 3, "vlanTrunk": [{"id": 4}]}),
                "\"vlanTrunk\"",
            ),
            (json!({"vlanTrunk": [{"minID": 5}]}), "\"vlanTrunk\""),
            (
                json!({"vlan": 3, "isGateway": true, "ipam": {"type": "host-local"}}),
                "\"vlan\"",
            ),
            (json!({"bridge": "a-very-long-bridge-name"}), "\"bridge\""),
            (
                json!({"runtimeConfig": {"mac": "nope"}}),
                "runtimeConfig.mac",
            ),
        ] {
            let e = parse(conf.clone()).unwrap_err();
            assert!(e.code == 7 || e.code == 2, "{conf}");
            assert!(e.msg.contains(key), "{conf}: {}", e.msg);
        }
        let e = parse(json!({"mtu": "big"})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("invalid"), "{}", e.msg);
    }

    #[test]
    fn mac_precedence_runtime_config_then_args_then_cni_args() {
        let all = json!({"runtimeConfig":{"mac":"0a:00:00:00:00:03"},"args":{"cni":{"mac":"0a:00:00:00:00:02"}}});
        let c = BridgeConf::parse(all.as_object().unwrap(), Some("0a:00:00:00:00:01")).unwrap();
        assert_eq!(c.mac, Some([10, 0, 0, 0, 0, 3]));
        let two = json!({"args":{"cni":{"mac":"0a:00:00:00:00:02"}}});
        let c = BridgeConf::parse(two.as_object().unwrap(), Some("0a:00:00:00:00:01")).unwrap();
        assert_eq!(c.mac, Some([10, 0, 0, 0, 0, 2]));
        let c =
            BridgeConf::parse(json!({}).as_object().unwrap(), Some("0a:00:00:00:00:01")).unwrap();
        assert_eq!(c.mac, Some([10, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn vlan_trunk_expands_sorted_unique() {
        let v = collect_vlan_trunk(&[
            VlanTrunk {
                min_id: Some(10),
                max_id: Some(12),
                id: None,
            },
            VlanTrunk {
                id: Some(11),
                ..Default::default()
            },
            VlanTrunk {
                id: Some(2),
                ..Default::default()
            },
        ])
        .unwrap();
        assert_eq!(v, vec![2, 10, 11, 12]);
    }

    #[test]
    fn gateways_and_default_routes_per_family() {
        let conf = parse(json!({"isDefaultGateway": true})).unwrap();
        let mut r = CniResult {
            ips: vec![
                IpConfig {
                    address: "10.213.16.5/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                },
                IpConfig {
                    address: "fd00:213:16::5/64".parse().unwrap(),
                    gateway: Some("fd00:213:16::fe".parse().unwrap()),
                    interface: None,
                },
            ],
            ..Default::default()
        };
        let g = calc_gateways(&mut r, &conf);
        assert_eq!(r.ips[0].gateway, Some("10.213.16.1".parse().unwrap()));
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(g.v4, vec!["10.213.16.1/24".parse::<IpNet>().unwrap()]);
        assert_eq!(g.v6, vec!["fd00:213:16::fe/64".parse::<IpNet>().unwrap()]);
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.routes[1].gw, Some("fd00:213:16::fe".parse().unwrap()));
    }

    #[test]
    fn existing_default_route_is_not_duplicated() {
        let conf = parse(json!({"isDefaultGateway": true})).unwrap();
        let mut r = CniResult {
            ips: vec![IpConfig {
                address: "10.213.16.5/24".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.213.16.9".parse().unwrap()),
                ..Default::default()
            }],
            ..Default::default()
        };
        calc_gateways(&mut r, &conf);
        assert_eq!(r.routes.len(), 1);
    }
}
