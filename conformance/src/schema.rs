//! Validators for what plugins print: results per spec version (§4), the error object
//! (4.9) and the VERSION answer (2.22/3.10). They work on raw JSON on purpose: the harness
//! must judge the bytes a plugin printed, not what a lenient parser made of them.

use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Every spec version, oldest first.
pub const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// Parses `MAJOR[.MINOR[.PATCH]]` the way Go's `version.ParseVersion` does.
pub fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut nums = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nums[i] = p.parse().ok()?;
    }
    Some((nums[0], nums[1], nums[2]))
}

/// `a >= b` numerically; false when either does not parse.
pub fn version_ge(a: &str, b: &str) -> bool {
    match (parse_version(a), parse_version(b)) {
        (Some(x), Some(y)) => x >= y,
        _ => false,
    }
}

/// A result shape family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 0.1.0 / 0.2.0: `ip4`/`ip6`.
    Legacy,
    /// 0.3.0, 0.3.1, 0.4.0: `ips[].version` required.
    V04,
    /// 1.0.0: no `version`.
    V10,
    /// 1.1.0: adds interface/route extras.
    V11,
}

/// Which shape a version's results have.
pub fn shape_of(version: &str) -> Shape {
    if !version_ge(version, "0.3.0") {
        Shape::Legacy
    } else if !version_ge(version, "1.0.0") {
        Shape::V04
    } else if !version_ge(version, "1.1.0") {
        Shape::V10
    } else {
        Shape::V11
    }
}

/// Who produced a result: an IPAM plugin prints the abbreviated form (4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    Ipam,
    Interface,
}

/// Problems found in a document: `violations` break the spec, `notes` are INFO material
/// (unknown keys and the like).
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub violations: Vec<String>,
    pub notes: Vec<String>,
    /// Warn-level problems (e.g. a missing `interface` index in a main plugin's result).
    pub warnings: Vec<String>,
}

impl Findings {
    fn bad(&mut self, s: impl Into<String>) {
        self.violations.push(s.into());
    }
    fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
}

fn cidr(v: &Value) -> Option<IpNet> {
    v.as_str()?.parse().ok()
}

fn ip(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}

fn is_uint(v: &Value) -> bool {
    v.as_u64().is_some()
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn string_list(v: &Value) -> bool {
    v.as_array()
        .map(|a| a.iter().all(|x| x.is_string()))
        .unwrap_or(false)
}

fn check_dns(dns: &Value, f: &mut Findings) {
    let Some(obj) = dns.as_object() else {
        f.bad("dns is not an object");
        return;
    };
    for (k, v) in obj {
        match k.as_str() {
            "nameservers" => {
                if !v
                    .as_array()
                    .map(|a| a.iter().all(|x| ip(x).is_some()))
                    .unwrap_or(false)
                {
                    f.bad("dns.nameservers is not a list of IP addresses");
                }
            }
            "domain" => {
                if !v.is_string() {
                    f.bad("dns.domain is not a string");
                }
            }
            "search" | "options" => {
                if !string_list(v) {
                    f.bad(format!("dns.{k} is not a list of strings"));
                }
            }
            other => f.note(format!("unknown key dns.{other}")),
        }
    }
}

fn check_route(r: &Value, shape: Shape, ctx: &str, f: &mut Findings) {
    let Some(obj) = r.as_object() else {
        f.bad(format!("{ctx} is not an object"));
        return;
    };
    let dst = obj.get("dst").and_then(cidr);
    if dst.is_none() {
        f.bad(format!("{ctx}.dst is missing or not a CIDR"));
    }
    for (k, v) in obj {
        match k.as_str() {
            "dst" => {}
            "gw" => match ip(v) {
                None => f.bad(format!("{ctx}.gw is not an IP address")),
                Some(gw) => {
                    if let Some(d) = dst {
                        if d.addr().is_ipv4() != gw.is_ipv4() {
                            f.bad(format!("{ctx}.gw {gw} is not of the family of dst {d}"));
                        }
                    }
                }
            },
            "mtu" | "advmss" | "priority" | "table" | "scope" if shape == Shape::V11 => {
                if !is_uint(v) {
                    f.bad(format!("{ctx}.{k} is not an unsigned integer"));
                } else if k == "scope" && v.as_u64().unwrap_or(0) > 255 {
                    f.bad(format!("{ctx}.scope is above 255"));
                }
            }
            other => f.note(format!("unknown key {ctx}.{other} for this version")),
        }
    }
}

/// Validates an ADD result against the schema of `version` (items 4.1–4.4, 4.7).
/// `ifname`/`netns` are the request's, for the interface-index rule of main plugins.
pub fn validate_result(
    v: &Value,
    version: &str,
    producer: Producer,
    request: Option<(&str, &str)>,
) -> Findings {
    let mut f = Findings::default();
    let Some(obj) = v.as_object() else {
        f.bad("result is not a JSON object");
        return f;
    };
    match obj.get("cniVersion").and_then(Value::as_str) {
        None => f.bad("cniVersion is missing"),
        Some(got) if got != version => f.bad(format!(
            "cniVersion is {got:?}, the request asked for {version:?}"
        )),
        _ => {}
    }
    let shape = shape_of(version);
    if shape == Shape::Legacy {
        validate_legacy(obj, &mut f);
        return f;
    }
    let mut n_interfaces = 0usize;
    let mut interfaces: Vec<&Map<String, Value>> = Vec::new();
    if let Some(ifs) = obj.get("interfaces") {
        match ifs.as_array() {
            None => f.bad("interfaces is not a list"),
            Some(list) => {
                if producer == Producer::Ipam && !list.is_empty() {
                    f.bad("an IPAM result must not list interfaces (4.7)");
                }
                n_interfaces = list.len();
                for (i, it) in list.iter().enumerate() {
                    let ctx = format!("interfaces[{i}]");
                    let Some(io) = it.as_object() else {
                        f.bad(format!("{ctx} is not an object"));
                        continue;
                    };
                    interfaces.push(io);
                    if !io.get("name").map(Value::is_string).unwrap_or(false) {
                        f.bad(format!("{ctx}.name is missing"));
                    }
                    for (k, val) in io {
                        match k.as_str() {
                            "name" => {}
                            "mac" => {
                                if !val.as_str().map(is_mac).unwrap_or(false) {
                                    f.bad(format!("{ctx}.mac {val} is not xx:xx:xx:xx:xx:xx"))
                                }
                            }
                            "sandbox" => {
                                if !val.is_string() {
                                    f.bad(format!("{ctx}.sandbox is not a string"))
                                }
                            }
                            "mtu" if shape == Shape::V11 => {
                                if !is_uint(val) {
                                    f.bad(format!("{ctx}.mtu is not an unsigned integer"))
                                }
                            }
                            "socketPath" | "pciID" if shape == Shape::V11 => {
                                if !val.is_string() {
                                    f.bad(format!("{ctx}.{k} is not a string"))
                                }
                            }
                            other => f.note(format!("unknown key {ctx}.{other} for {version}")),
                        }
                    }
                }
            }
        }
    }
    if let Some(ips) = obj.get("ips") {
        match ips.as_array() {
            None => f.bad("ips is not a list"),
            Some(list) => {
                for (i, it) in list.iter().enumerate() {
                    let ctx = format!("ips[{i}]");
                    let Some(io) = it.as_object() else {
                        f.bad(format!("{ctx} is not an object"));
                        continue;
                    };
                    let addr = io.get("address").and_then(cidr);
                    if addr.is_none() {
                        f.bad(format!("{ctx}.address is missing or not a CIDR"));
                    }
                    match (shape, io.get("version")) {
                        (Shape::V04, None) => {
                            f.bad(format!("{ctx}.version is required in {version}"))
                        }
                        (Shape::V04, Some(ver)) => {
                            let want = addr.map(|a| if a.addr().is_ipv4() { "4" } else { "6" });
                            if ver.as_str() != want && want.is_some() {
                                f.bad(format!(
                                    "{ctx}.version is {ver}, the address family says {:?}",
                                    want.unwrap_or("?")
                                ));
                            }
                        }
                        (_, Some(_)) => {
                            f.note(format!("{ctx}.version is not part of {version} results"))
                        }
                        _ => {}
                    }
                    if let Some(gw) = io.get("gateway") {
                        match ip(gw) {
                            None => f.bad(format!("{ctx}.gateway is not an IP address")),
                            Some(g) => {
                                if let Some(a) = addr {
                                    if a.addr().is_ipv4() != g.is_ipv4() {
                                        f.bad(format!(
                                            "{ctx}.gateway {g} is not of the family of {a}"
                                        ));
                                    }
                                }
                            }
                        }
                    }
                    match (producer, io.get("interface")) {
                        (Producer::Ipam, Some(_)) => {
                            f.bad(format!("{ctx}.interface must not be set by IPAM (4.7)"))
                        }
                        (Producer::Interface, None) => {
                            f.warnings.push(format!("{ctx}.interface is missing"))
                        }
                        (Producer::Interface, Some(idx)) => match idx.as_u64() {
                            Some(n) if (n as usize) < n_interfaces => {
                                if let (Some((ifname, netns)), Some(a)) = (request, addr) {
                                    let it = interfaces[n as usize];
                                    let name_ok = it.get("name").and_then(Value::as_str)
                                        == Some(ifname);
                                    let sb_ok = it.get("sandbox").and_then(Value::as_str)
                                        == Some(netns);
                                    if !(name_ok && sb_ok) {
                                        f.bad(format!(
                                            "{ctx} ({a}) points at interface {n}, which is not {ifname} in {netns}"
                                        ));
                                    }
                                }
                            }
                            _ => f.bad(format!(
                                "{ctx}.interface {idx} is not an index into the {n_interfaces} interfaces"
                            )),
                        },
                        _ => {}
                    }
                    for k in io.keys() {
                        if !["address", "gateway", "interface", "version"].contains(&k.as_str()) {
                            f.note(format!("unknown key {ctx}.{k}"));
                        }
                    }
                }
            }
        }
    }
    if let Some(routes) = obj.get("routes") {
        match routes.as_array() {
            None => f.bad("routes is not a list"),
            Some(list) => {
                for (i, r) in list.iter().enumerate() {
                    check_route(r, shape, &format!("routes[{i}]"), &mut f);
                }
            }
        }
    }
    if let Some(dns) = obj.get("dns") {
        check_dns(dns, &mut f);
    }
    for k in obj.keys() {
        if !["cniVersion", "interfaces", "ips", "routes", "dns"].contains(&k.as_str()) {
            f.note(format!("unknown top-level key {k:?}"));
        }
    }
    f
}

fn validate_legacy(obj: &Map<String, Value>, f: &mut Findings) {
    for (key, v4) in [("ip4", true), ("ip6", false)] {
        let Some(section) = obj.get(key) else {
            continue;
        };
        let Some(so) = section.as_object() else {
            f.bad(format!("{key} is not an object"));
            continue;
        };
        match so.get("ip").and_then(cidr) {
            None => f.bad(format!("{key}.ip is missing or not a CIDR")),
            Some(a) if a.addr().is_ipv4() != v4 => {
                f.bad(format!("{key}.ip {a} is of the wrong family"))
            }
            _ => {}
        }
        if let Some(gw) = so.get("gateway") {
            match ip(gw) {
                Some(g) if g.is_ipv4() == v4 => {}
                _ => f.bad(format!("{key}.gateway is not an IP of the right family")),
            }
        }
        if let Some(routes) = so.get("routes") {
            match routes.as_array() {
                None => f.bad(format!("{key}.routes is not a list")),
                Some(list) => {
                    for (i, r) in list.iter().enumerate() {
                        check_route(r, Shape::V04, &format!("{key}.routes[{i}]"), f);
                    }
                }
            }
        }
    }
    for k in ["interfaces", "ips"] {
        if obj.contains_key(k) {
            f.bad(format!("{k} is not part of the 0.1.0/0.2.0 result shape"));
        }
    }
    if let Some(dns) = obj.get("dns") {
        check_dns(dns, f);
    }
}

/// Validates an error object (item 4.9). `request_version` is what the request said.
pub fn validate_error(v: &Value, request_version: Option<&str>) -> Findings {
    let mut f = Findings::default();
    let Some(obj) = v.as_object() else {
        f.bad("the error is not a JSON object");
        return f;
    };
    match obj.get("code") {
        Some(c) if c.as_u64().is_some() => {}
        Some(c) => f.bad(format!("code {c} is not a non-negative integer")),
        None => f.bad("code is missing"),
    }
    match obj.get("msg").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => {}
        _ => f.bad("msg is missing or empty"),
    }
    if let Some(d) = obj.get("details") {
        if !d.is_string() {
            f.bad("details is not a string");
        }
    }
    match (obj.get("cniVersion"), request_version) {
        (None, _) => f.warnings.push("cniVersion is missing".into()),
        (Some(got), Some(want)) if got.as_str() != Some(want) => f.bad(format!(
            "cniVersion {got} differs from the request's {want:?}"
        )),
        _ => {}
    }
    f
}

/// Validates a VERSION answer (item 2.22); returns the supported list when valid.
pub fn validate_version_answer(v: &Value) -> Result<Vec<String>, String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    match obj.get("cniVersion").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => {}
        _ => return Err("cniVersion is missing or not a non-empty string".into()),
    }
    let list = obj
        .get("supportedVersions")
        .and_then(Value::as_array)
        .ok_or("supportedVersions is missing or not a list")?;
    if list.is_empty() {
        return Err("supportedVersions is empty".into());
    }
    let mut out: Vec<String> = Vec::new();
    for item in list {
        let s = item
            .as_str()
            .ok_or_else(|| format!("supportedVersions entry {item} is not a string"))?;
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 3 || parse_version(s).is_none() {
            return Err(format!("supportedVersions entry {s:?} is not X.Y.Z"));
        }
        if out.iter().any(|o| o == s) {
            return Err(format!("supportedVersions lists {s:?} twice"));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

/// Normalises a result for F-JSON equality: drops empty lists and empty `dns`, and
/// rewrites IP text as parsed addresses. Key order is already irrelevant for `Value`.
pub fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                let n = normalise(val);
                let empty = match &n {
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty() && k == "dns",
                    Value::Null => true,
                    _ => false,
                };
                if !empty {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::String(s) => {
            if let Ok(n) = s.parse::<IpNet>() {
                Value::String(n.to_string())
            } else if let Ok(a) = s.parse::<IpAddr>() {
                Value::String(a.to_string())
            } else {
                v.clone()
            }
        }
        _ => v.clone(),
    }
}

/// F-JSON equality (see the checklist's fixtures).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    normalise(a) == normalise(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_local_04_result_is_valid_and_10_with_version_is_noted() {
        let r = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/16","gateway":"10.1.0.1"}],"dns":{}});
        let f = validate_result(&r, "0.4.0", Producer::Ipam, None);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        let r = json!({"cniVersion":"1.0.0","ips":[{"version":"4","address":"10.1.0.5/16"}]});
        let f = validate_result(&r, "1.0.0", Producer::Ipam, None);
        assert!(f.violations.is_empty());
        assert_eq!(f.notes.len(), 1);
    }

    #[test]
    fn wrong_version_family_and_bad_index_are_violations() {
        let r = json!({"cniVersion":"0.4.0","ips":[{"version":"6","address":"10.1.0.5/16"}]});
        assert!(!validate_result(&r, "0.4.0", Producer::Ipam, None)
            .violations
            .is_empty());
        let r = json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.1.0.5/16","interface":1}]});
        assert!(!validate_result(&r, "1.0.0", Producer::Interface, None)
            .violations
            .is_empty());
        let r = json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/16"}]});
        assert!(!validate_result(&r, "0.4.0", Producer::Ipam, None)
            .violations
            .is_empty());
    }

    #[test]
    fn legacy_shape() {
        let r =
            json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1"},"dns":{}});
        assert!(validate_result(&r, "0.2.0", Producer::Ipam, None)
            .violations
            .is_empty());
        let r = json!({"cniVersion":"0.2.0","ip4":{"ip":"fd00::1/64"}});
        assert!(!validate_result(&r, "0.2.0", Producer::Ipam, None)
            .violations
            .is_empty());
    }

    #[test]
    fn error_object_rules() {
        assert!(validate_error(&json!({"code":4,"msg":"x"}), Some("1.0.0"))
            .violations
            .is_empty());
        assert_eq!(
            validate_error(&json!({"code":4,"msg":"x"}), None)
                .warnings
                .len(),
            1
        );
        assert!(!validate_error(&json!({"code":"4","msg":"x"}), None)
            .violations
            .is_empty());
        assert!(!validate_error(&json!({"code":4,"msg":""}), None)
            .violations
            .is_empty());
        assert!(!validate_error(
            &json!({"code":4,"msg":"m","cniVersion":"0.4.0"}),
            Some("1.0.0")
        )
        .violations
        .is_empty());
    }

    #[test]
    fn version_answer_rules() {
        assert!(validate_version_answer(
            &json!({"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]})
        )
        .is_ok());
        assert!(validate_version_answer(&json!({"cniVersion":"1.0.0"})).is_err());
        assert!(validate_version_answer(
            &json!({"cniVersion":"1.0.0","supportedVersions":["1.0"]})
        )
        .is_err());
        assert!(validate_version_answer(
            &json!({"cniVersion":"1.0.0","supportedVersions":["1.0.0","1.0.0"]})
        )
        .is_err());
    }

    #[test]
    fn fjson_equality_ignores_empty_dns_and_ip_spelling() {
        let a =
            json!({"cniVersion":"1.0.0","ips":[{"address":"fd00:0::1/64"}],"dns":{},"routes":[]});
        let b = json!({"ips":[{"address":"fd00::1/64"}],"cniVersion":"1.0.0"});
        assert!(json_equal(&a, &b));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_ge("0.10.0", "0.4.0"));
        assert!(!version_ge("0.3.1", "0.4.0"));
        assert!(parse_version("1.0.0.0").is_none());
        assert_eq!(parse_version("1"), Some((1, 0, 0)));
    }
}
