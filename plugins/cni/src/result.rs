//! ADD results in every spec version, held in one canonical shape and converted on output.
//!
//! Plugins build a [`CniResult`]; skel renders it in the request's version. prevResults and
//! delegate results arrive in any version and are parsed into the same shape, so nothing in a
//! plugin depends on the wire version.

use crate::error::{code, Error, Result};
use crate::version::Version;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// An interface the plugin created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name (in the sandbox, for container interfaces).
    pub name: String,
    /// `xx:xx:xx:xx:xx:xx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0 only on output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container-side interfaces; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// vhost-user socket (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// PCI address (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with its prefix, host bits kept (`10.213.0.5/24`).
    pub address: IpNet,
    /// The gateway the plugin configured for this address, if any.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; absent in IPAM results.
    pub interface: Option<usize>,
}

/// A route. The last five fields exist from 1.1.0 on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the default gateway of the address family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (0 global, 253 link, 254 host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

/// DNS settings, in the result's spelling (not the `dns` capability's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name server addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set (rendered as `{}` like the reference).
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// The result of an ADD, version-independent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces, in the order indices in `ips` refer to.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

fn decode_err(what: impl std::fmt::Display) -> Error {
    Error::new(code::DECODE, format!("decoding result: {what}"))
}

fn family(a: &IpNet) -> &'static str {
    match a {
        IpNet::V4(_) => "4",
        IpNet::V6(_) => "6",
    }
}

#[derive(Deserialize)]
struct WireIp {
    #[serde(default)]
    version: Option<String>,
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<i64>,
}

#[derive(Deserialize)]
struct WireLegacyIp {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
}

fn field<T: for<'de> Deserialize<'de>>(obj: &Map<String, Value>, key: &str) -> Result<Option<T>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| decode_err(format!("field {key:?}: {e}"))),
    }
}

impl CniResult {
    /// Parse a result in any version. The version is the result's own `cniVersion`, or
    /// `default` when it has none (as Go's `ParsePrevResult`).
    pub fn from_json(value: &Value, default: Version) -> Result<CniResult> {
        let obj = value
            .as_object()
            .ok_or_else(|| decode_err("not a JSON object"))?;
        let version = match obj.get("cniVersion") {
            Some(Value::String(s)) => Version::parse_supported(s)?,
            None | Some(Value::Null) => default,
            Some(_) => return Err(decode_err("cniVersion is not a string")),
        };
        let dns: Dns = field(obj, "dns")?.unwrap_or_default();
        if version.is_legacy() || obj.contains_key("ip4") || obj.contains_key("ip6") {
            let mut r = CniResult {
                dns,
                ..Default::default()
            };
            for key in ["ip4", "ip6"] {
                if let Some(l) = field::<WireLegacyIp>(obj, key)? {
                    r.ips.push(IpConfig {
                        address: l.ip,
                        gateway: l.gateway,
                        interface: None,
                    });
                    r.routes.extend(l.routes);
                }
            }
            return Ok(r);
        }
        let interfaces: Vec<Interface> = field(obj, "interfaces")?.unwrap_or_default();
        let wire_ips: Vec<WireIp> = field(obj, "ips")?.unwrap_or_default();
        let mut ips = Vec::with_capacity(wire_ips.len());
        for w in wire_ips {
            if let Some(v) = &w.version {
                if v != family(&w.address) {
                    return Err(decode_err(format!(
                        "ips entry {} says version {v:?}",
                        w.address
                    )));
                }
            }
            let interface = match w.interface {
                None => None,
                Some(i) if i >= 0 && (i as usize) < interfaces.len() => Some(i as usize),
                // Old runtimes wrote -1 for "none"; the upgrade notes ask us to tolerate it.
                Some(-1) => None,
                Some(i) => {
                    return Err(decode_err(format!(
                        "ips entry {} points at interface {i}, but there are {}",
                        w.address,
                        interfaces.len()
                    )))
                }
            };
            ips.push(IpConfig {
                address: w.address,
                gateway: w.gateway,
                interface,
            });
        }
        Ok(CniResult {
            interfaces,
            ips,
            routes: field(obj, "routes")?.unwrap_or_default(),
            dns,
        })
    }

    /// Render in `version`. Fails only for the legacy shape when there is no address to put
    /// in `ip4`/`ip6` (as Go's converter does).
    pub fn to_json(&self, version: Version) -> Result<Value> {
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::from(version.as_str()));
        if version.is_legacy() {
            self.legacy_into(&mut out)?;
        } else {
            self.rich_into(version, &mut out);
        }
        out.insert("dns".into(), json_of(&self.dns));
        Ok(Value::Object(out))
    }

    fn legacy_into(&self, out: &mut Map<String, Value>) -> Result<()> {
        let v4 = self.ips.iter().find(|i| i.address.addr().is_ipv4());
        let v6 = self.ips.iter().find(|i| i.address.addr().is_ipv6());
        if v4.is_none() && v6.is_none() {
            return Err(Error::new(
                code::DECODE,
                "cannot convert: no valid IP addresses",
            ));
        }
        for (key, ip, want_v4) in [("ip4", v4, true), ("ip6", v6, false)] {
            let Some(ip) = ip else { continue };
            let mut o = Map::new();
            o.insert("ip".into(), Value::from(ip.address.to_string()));
            if let Some(gw) = ip.gateway {
                o.insert("gateway".into(), Value::from(gw.to_string()));
            }
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.addr().is_ipv4() == want_v4)
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("dst".into(), Value::from(r.dst.to_string()));
                    if let Some(gw) = r.gw {
                        m.insert("gw".into(), Value::from(gw.to_string()));
                    }
                    Value::Object(m)
                })
                .collect();
            if !routes.is_empty() {
                o.insert("routes".into(), Value::Array(routes));
            }
            out.insert(key.into(), Value::Object(o));
        }
        Ok(())
    }

    fn rich_into(&self, version: Version, out: &mut Map<String, Value>) {
        let with_ip_version = version < Version::V1_0_0;
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if version < Version::V1_0_0 {
                        // 0.3.x/0.4.0 interfaces have only name, mac and sandbox.
                        i.mtu = None;
                        i.socket_path = None;
                        i.pci_id = None;
                    }
                    json_of(&i)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if with_ip_version {
                        m.insert("version".into(), Value::from(family(&ip.address)));
                    }
                    if let Some(i) = ip.interface {
                        m.insert("interface".into(), Value::from(i));
                    }
                    m.insert("address".into(), Value::from(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), Value::from(gw.to_string()));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list = self
                .routes
                .iter()
                .map(|r| {
                    if version < Version::V1_0_0 {
                        let mut m = Map::new();
                        m.insert("dst".into(), Value::from(r.dst.to_string()));
                        if let Some(gw) = r.gw {
                            m.insert("gw".into(), Value::from(gw.to_string()));
                        }
                        Value::Object(m)
                    } else {
                        json_of(r)
                    }
                })
                .collect();
            out.insert("routes".into(), Value::Array(list));
        }
    }
}

fn json_of<T: Serialize>(v: &T) -> Value {
    // Serialising our own plain structs cannot fail; fall back to null rather than panic.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("0a:58:0a:d5:00:01".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:d5:00:05".into()),
                    mtu: Some(1500),
                    sandbox: Some("/var/run/netns/x".into()),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.213.0.5/24".parse().unwrap(),
                    gateway: Some("10.213.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00:213::5/64".parse().unwrap(),
                    gateway: Some("fd00:213::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: None,
                    mtu: Some(1400),
                    ..Default::default()
                },
                Route {
                    dst: "::/0".parse().unwrap(),
                    ..Default::default()
                },
            ],
            dns: Dns {
                nameservers: vec!["10.213.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn v040_adds_ip_version_and_drops_new_fields() {
        let v = sample().to_json(Version::V0_4_0).unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["routes"][0].get("mtu").is_none());
        assert_eq!(v["cniVersion"], "0.4.0");
    }

    #[test]
    fn v110_keeps_everything_without_ip_version() {
        let v = sample().to_json(Version::V1_1_0).unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][1]["mtu"], 1500);
        assert_eq!(v["routes"][0]["mtu"], 1400);
    }

    #[test]
    fn legacy_takes_first_of_each_family_and_splits_routes() {
        let v = sample().to_json(Version::V0_2_0).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"0.2.0",
                "ip4":{"ip":"10.213.0.5/24","gateway":"10.213.0.1","routes":[{"dst":"0.0.0.0/0"}]},
                "ip6":{"ip":"fd00:213::5/64","gateway":"fd00:213::1","routes":[{"dst":"::/0"}]},
                "dns":{"nameservers":["10.213.0.1"]}})
        );
    }

    #[test]
    fn legacy_without_ips_is_an_error() {
        let e = CniResult::default().to_json(Version::V0_1_0).unwrap_err();
        assert!(e.msg.contains("no valid IP addresses"));
    }

    #[test]
    fn round_trip_every_rich_version() {
        for v in [
            Version::V0_3_0,
            Version::V0_3_1,
            Version::V0_4_0,
            Version::V1_0_0,
            Version::V1_1_0,
        ] {
            let mut want = sample();
            if v < Version::V1_0_0 {
                want.interfaces[1].mtu = None;
                want.routes[0].mtu = None;
            }
            let got = CniResult::from_json(&sample().to_json(v).unwrap(), v).unwrap();
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn mismatched_ip_version_is_rejected() {
        let v = json!({"cniVersion":"0.4.0","ips":[{"version":"6","address":"10.0.0.1/24"}]});
        assert_eq!(
            CniResult::from_json(&v, Version::V0_4_0).unwrap_err().code,
            6
        );
    }

    #[test]
    fn interface_index_out_of_range_is_rejected() {
        let v = json!({"cniVersion":"1.0.0","interfaces":[],"ips":[{"address":"10.0.0.1/24","interface":0}]});
        assert!(CniResult::from_json(&v, Version::V1_0_0).is_err());
    }
}
