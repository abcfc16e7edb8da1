//! The IPAM configuration, with the reference plugin's JSON keys, validated into range sets.
//!
//! host-local receives the *whole* network config of the plugin that called it; its own
//! keys sit under `ipam`. Range sets come from three places and are numbered in the order
//! the reference uses — `runtimeConfig.ipRanges`, then the legacy top-level
//! `ipam.subnet`/`rangeStart`/`rangeEnd`/`gateway`, then `ipam.ranges` — because that index
//! names the `last_reserved_ip.<n>` file shared with the reference on a node.

use crate::range::{parse_requested_ip, RangeSet, RangeSpec};
use cni::{Dns, Error, Result, Route, Version};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;

/// Where reservations live when `ipam.dataDir` is not set (the reference's default, so a
/// node keeps its leases when switching plugins).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The `ipam` object as written by users (reference key names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamSection {
    /// Legacy single range: `subnet`, `rangeStart`, `rangeEnd`, `gateway` at top level.
    #[serde(flatten)]
    legacy: RangeSpec,
    #[serde(default)]
    ranges: Option<Vec<Vec<RangeSpec>>>,
    #[serde(default)]
    routes: Option<Vec<Value>>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
}

/// The parts of `runtimeConfig` host-local understands (capabilities `ipRanges`, `ips`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeSection {
    #[serde(default)]
    ip_ranges: Option<Vec<Vec<RangeSpec>>>,
    #[serde(default)]
    ips: Option<Vec<String>>,
}

/// A validated host-local configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// Network name; also the directory under `data_dir`.
    pub network: String,
    /// Range sets, in reference order (see module docs).
    pub sets: Vec<RangeSet>,
    /// Routes to return in the result (`ipam.routes`).
    pub routes: Vec<Route>,
    /// `ipam.dataDir`, or [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
    /// `ipam.resolvConf`: a resolv.conf whose settings become the result's `dns`.
    pub resolv_conf: Option<PathBuf>,
    /// Addresses asked for, in the reference's merge order: CNI_ARGS `IP` (only when
    /// `args.cni.ips` is absent), then `args.cni.ips`, then `runtimeConfig.ips`.
    pub requested: Vec<IpAddr>,
}

/// Refuse a network name that could leave `dataDir` once used as a path component. skel's
/// name rule already rejects `/`; this is checked again right before any path is built,
/// because a path escape here means writing as root wherever the name points.
pub fn check_network_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.contains('/')
        || name.contains('\0')
        || name.contains("..")
        || name == "."
    {
        return Err(Error::invalid_config(format!(
            "network name {name:?} cannot be used as a directory under dataDir: it must not be \
             empty, \".\", or contain '/' or \"..\""
        )));
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value, field: &str) -> Result<T> {
    serde_json::from_value(value.clone())
        .map_err(|e| Error::invalid_config(format!("{field} is not valid: {e}")))
}

fn requested_from(list: &[String], field: &str, out: &mut Vec<IpAddr>) -> Result<()> {
    for (i, text) in list.iter().enumerate() {
        let ip = parse_requested_ip(text).ok_or_else(|| {
            Error::invalid_config(format!(
                "{field}[{i}] {text:?} is not an IP address (want \"10.1.2.3\" or \"10.1.2.3/24\")"
            ))
        })?;
        out.push(ip);
    }
    Ok(())
}

impl IpamConfig {
    /// Validate the whole request config. `cni_args_ip` is CNI_ARGS `IP` (ADD only; other
    /// verbs pass `None` so a stray CNI_ARGS never blocks a DEL).
    pub fn parse(
        raw: &Map<String, Value>,
        network: &str,
        version: Version,
        cni_args_ip: Option<&str>,
    ) -> Result<IpamConfig> {
        check_network_name(network)?;
        let ipam: IpamSection =
            match raw.get("ipam") {
                Some(v @ Value::Object(_)) => decode(v, "ipam")?,
                Some(_) => return Err(Error::invalid_config("ipam must be an object")),
                None => return Err(Error::invalid_config(
                    "IPAM config missing 'ipam' key: host-local reads its settings from \"ipam\"",
                )),
            };
        let runtime: RuntimeSection = match raw.get("runtimeConfig") {
            Some(v @ Value::Object(_)) => decode(v, "runtimeConfig")?,
            _ => RuntimeSection::default(),
        };

        let mut requested = Vec::new();
        let args_ips: Vec<String> = match raw
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
            .filter(|v| !v.is_null())
        {
            Some(ips) => decode(ips, "args.cni.ips")?,
            None => Vec::new(),
        };
        // CONVENTIONS: a plugin that understands the `args` form of a setting ignores its
        // CNI_ARGS form. (The reference merges both and then fails; nobody relies on that.)
        if args_ips.is_empty() {
            if let Some(text) = cni_args_ip.filter(|t| !t.is_empty()) {
                requested_from(&[text.to_string()], "CNI_ARGS IP", &mut requested)?;
            }
        }
        requested_from(&args_ips, "args.cni.ips", &mut requested)?;
        if let Some(ips) = &runtime.ips {
            requested_from(ips, "runtimeConfig.ips", &mut requested)?;
        }

        let mut sets: Vec<RangeSet> = Vec::new();
        for (i, specs) in runtime.ip_ranges.iter().flatten().enumerate() {
            sets.push(RangeSet::from_specs(
                specs,
                &format!("runtimeConfig.ipRanges[{i}]"),
            )?);
        }
        if ipam.legacy.subnet.as_deref().is_some_and(|s| !s.is_empty()) {
            sets.push(RangeSet::single(&ipam.legacy, "ipam")?);
        }
        for (i, specs) in ipam.ranges.iter().flatten().enumerate() {
            sets.push(RangeSet::from_specs(specs, &format!("ipam.ranges[{i}]"))?);
        }
        if sets.is_empty() {
            return Err(Error::invalid_config(
                "no IP ranges specified: set ipam.ranges (e.g. [[{\"subnet\": \"10.88.0.0/16\"}]]) \
                 or ipam.subnet",
            ));
        }
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                if a.overlaps(b) {
                    return Err(Error::invalid_config(format!(
                        "range set {} ({b}) overlaps range set {} ({a}); each address may \
                         belong to one range set only",
                        b.field, a.field
                    )));
                }
            }
        }
        let v4 = sets.iter().filter(|s| s.is_ipv4()).count();
        if (v4 > 1 || sets.len() - v4 > 1) && version < Version::V0_3_0 {
            return Err(Error::invalid_config(format!(
                "cniVersion {version} allows one address per family but {} range sets are \
                 configured; use cniVersion 0.3.0 or later",
                sets.len()
            )));
        }

        let mut routes = Vec::new();
        for (i, r) in ipam.routes.iter().flatten().enumerate() {
            routes.push(decode::<Route>(r, &format!("ipam.routes[{i}]"))?);
        }
        let data_dir = ipam
            .data_dir
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let resolv_conf = ipam
            .resolv_conf
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(IpamConfig {
            network: network.to_string(),
            sets,
            routes,
            data_dir,
            resolv_conf,
            requested,
        })
    }
}

/// Read resolv.conf settings into a result's `dns`, as the reference does: `nameserver`,
/// `domain`, `search`, `options`; comments (`#`, `;`) and unknown lines ignored.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(key), rest) = (fields.next(), fields.collect::<Vec<_>>()) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let rest: Vec<String> = rest.into_iter().map(String::from).collect();
        match key {
            "nameserver" => dns.nameservers.push(rest[0].clone()),
            "domain" => dns.domain = Some(rest[0].clone()),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<IpamConfig> {
        let Value::Object(m) = v else { panic!() };
        IpamConfig::parse(&m, "fhlnet", Version::V1_0_0, None)
    }

    #[test]
    fn ranges_are_numbered_like_the_reference() {
        let c = parse(json!({
            "ipam": {
                "subnet": "10.213.65.0/24",
                "ranges": [[{"subnet": "10.213.66.0/24"}], [{"subnet": "fd00:213:64::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.213.65.1"}],
                "dataDir": "/tmp/x",
                "resolvConf": "/etc/resolv.conf"
            },
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.213.64.0/24"}]]}
        }))
        .unwrap();
        let fields: Vec<&str> = c.sets.iter().map(|s| s.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "runtimeConfig.ipRanges[0]",
                "ipam",
                "ipam.ranges[0]",
                "ipam.ranges[1]"
            ]
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert!(c.resolv_conf.is_some());
    }

    #[test]
    fn defaults_data_dir() {
        let c = parse(json!({"ipam": {"subnet": "10.213.64.0/24"}})).unwrap();
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.requested.is_empty());
    }

    #[test]
    fn requested_ips_merge_in_reference_order() {
        let Value::Object(m) = json!({
            "ipam": {"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/64"}]]},
            "args": {"cni": {"ips": ["fd00:213:64::9/64"]}},
            "runtimeConfig": {"ips": ["10.213.64.8"]}
        }) else {
            panic!()
        };
        // args.cni.ips present: CNI_ARGS IP is ignored (CONVENTIONS: args wins).
        let c = IpamConfig::parse(&m, "n", Version::V1_0_0, Some("10.213.64.7/24")).unwrap();
        let got: Vec<String> = c.requested.iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["fd00:213:64::9", "10.213.64.8"]);
        let mut m = m;
        m.remove("args");
        let c = IpamConfig::parse(&m, "n", Version::V1_0_0, Some("10.213.64.7/24")).unwrap();
        let got: Vec<String> = c.requested.iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["10.213.64.7", "10.213.64.8"]);
    }

    #[test]
    fn overlapping_range_sets_name_both_fields() {
        let e = parse(json!({"ipam": {"ranges": [
            [{"subnet": "10.213.64.0/24"}],
            [{"subnet": "10.213.64.0/25"}]
        ]}}))
        .unwrap_err();
        assert_eq!(e.code, cni::code::INVALID_CONFIG);
        assert!(
            e.msg.contains("ipam.ranges[1]") && e.msg.contains("ipam.ranges[0]"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn bad_input_is_code_7_naming_the_field() {
        for (conf, field) in [
            (
                json!({"ipam": {"ranges": [[{"subnet": "10.213.64.9/24"}]]}}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ipam": {"subnet": "10.213.64.0/24", "rangeEnd": "10.9.9.9"}}),
                "ipam.rangeEnd",
            ),
            (json!({"ipam": {}}), "no IP ranges"),
            (json!({}), "'ipam'"),
            (
                json!({"ipam": {"subnet": "10.213.64.0/24", "routes": [{"dst": "x"}]}}),
                "ipam.routes[0]",
            ),
            (
                json!({"ipam": {"subnet": "10.213.64.0/24"}, "args": {"cni": {"ips": ["bad"]}}}),
                "args.cni.ips[0]",
            ),
        ] {
            let e = parse(conf).unwrap_err();
            assert_eq!(e.code, cni::code::INVALID_CONFIG, "{}", e.msg);
            assert!(e.msg.contains(field), "{field}: {}", e.msg);
        }
    }

    #[test]
    fn two_v4_sets_need_cni_0_3_0() {
        let Value::Object(m) = json!({"ipam": {"ranges": [
            [{"subnet": "10.213.64.0/24"}], [{"subnet": "10.213.65.0/24"}]
        ]}}) else {
            panic!()
        };
        assert!(IpamConfig::parse(&m, "n", Version::V0_2_0, None).is_err());
        assert!(IpamConfig::parse(&m, "n", Version::V0_3_0, None).is_ok());
    }

    #[test]
    fn network_names_that_escape_are_refused() {
        for bad in ["", ".", "..", "a/b", "../etc", "a..b"] {
            assert!(check_network_name(bad).is_err(), "{bad}");
        }
        assert!(check_network_name("podman.net-1").is_ok());
    }

    #[test]
    fn resolv_conf_is_read_like_the_reference() {
        let dns = parse_resolv_conf(
            "# c\nnameserver 10.213.64.53\nnameserver fd00::53\n; x\ndomain example.com\n\
             search a.example b.example\noptions ndots:2 edns0\nbogus\n",
        );
        assert_eq!(dns.nameservers, ["10.213.64.53", "fd00::53"]);
        assert_eq!(dns.domain.as_deref(), Some("example.com"));
        assert_eq!(dns.search, ["a.example", "b.example"]);
        assert_eq!(dns.options, ["ndots:2", "edns0"]);
    }
}
