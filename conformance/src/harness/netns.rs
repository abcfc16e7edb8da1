//! (NS) checks for bridge in real namespaces, and (D) delegation checks with a spy IPAM.
//!
//! The plugin runs in the run's sandbox netns (its "host"); each attachment gets its own
//! container netns `fcf<tag>c<n>`. Everything is inspected with `ip -j`, never assumed.

use super::invocation::main_version;
use super::verbs::reservations;
use super::{result_of, Harness, NetnsGuard};
use crate::exec::{Invocation, Outcome};
use crate::report::{Finding, Level};
use crate::schema::{self, Producer};
use crate::spy::{read_log, SpyRecord};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Runs the netns and delegation items.
pub fn run(h: &Harness) {
    let has_bridge = h.plugins.contains_key("bridge");
    if !has_bridge {
        return;
    }
    if !h.is_root() {
        for id in ["2.1", "2.2", "2.4", "2.7", "2.13", "2.16", "2.19"] {
            h.add(
                id,
                Level::M,
                "bridge",
                "netns / delegation checks",
                Finding::Skip("needs root".into()),
            );
        }
        return;
    }
    if h.plugins.contains_key("host-local") {
        bridge_lifecycle(h);
        bridge_versions(h);
        bridge_existing_interface(h);
        bridge_del_variants(h);
        bridge_check_detects_breakage(h);
        bridge_missing_netns(h);
        bridge_check_tolerates_later_plugins(h);
        bridge_check_right_after_add(h);
        bridge_netns_is_self(h);
        bridge_dual_stack(h);
    }
    delegation(h);
    if h.plugins.contains_key("portmap") {
        portmap_with_mappings(h);
    }
}

/// 2.18: CHECK accepts a MAC changed and a route added by later plugins.
fn bridge_check_tolerates_later_plugins(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    if !schema::version_ge(&v, "0.4.0") {
        return;
    }
    let Ok(a) = Attachment::new(h, &v, None) else {
        return;
    };
    let add = h.call(p, &a.inv(h, "ADD"));
    let Ok(mut r) = result_of(&add) else {
        h.add(
            "2.18",
            Level::M,
            p,
            "CHECK tolerates later plugins' changes",
            Finding::Violated(add.describe()),
        );
        return a.cleanup(h);
    };
    let new_mac = "0a:58:0a:d5:5f:42";
    let gw = r["ips"][0]["gateway"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ns = a.ns_name();
    let mac_ok = ip_cmd(&ns, &["link", "set", "eth0", "address", new_mac]);
    let route_ok = !gw.is_empty() && ip_cmd(&ns, &["route", "add", "10.213.95.0/24", "via", &gw]);
    if let Some(ifs) = r["interfaces"].as_array_mut() {
        for i in ifs.iter_mut().filter(|i| i["name"] == json!("eth0")) {
            i["mac"] = json!(new_mac);
        }
    }
    let mut routes = r["routes"].as_array().cloned().unwrap_or_default();
    routes.push(json!({"dst": "10.213.95.0/24", "gw": gw}));
    r["routes"] = Value::Array(routes);
    let o = h.call(p, &a.with_prev(h, "CHECK", &r));
    h.add(
        "2.18",
        Level::M,
        p,
        "CHECK tolerates a changed MAC and an extra route",
        if mac_ok && route_ok {
            Finding::expect(o.success(), "passes", o.describe())
        } else {
            Finding::Skip("could not change the MAC or add the route".into())
        },
    );
    a.cleanup(h);
}

/// 2.21: ADD, CHECK, DEL back to back (10 rounds; the checklist's 50, scaled for 2 cores).
fn bridge_check_right_after_add(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    if !schema::version_ge(&v, "0.4.0") {
        return;
    }
    let Ok(a) = Attachment::new(h, &v, None) else {
        return;
    };
    let mut problems = Vec::new();
    for round in 0..10 {
        let add = h.call(p, &a.inv(h, "ADD"));
        match result_of(&add) {
            Ok(r) => {
                let c = h.call(p, &a.with_prev(h, "CHECK", &r));
                if !c.success() {
                    problems.push(format!("round {round}: CHECK {}", c.describe()));
                }
                h.call(p, &a.with_prev(h, "DEL", &r));
            }
            Err(e) => problems.push(format!("round {round}: ADD {e}")),
        }
        if !problems.is_empty() {
            break;
        }
    }
    h.add(
        "2.21",
        Level::S,
        p,
        "CHECK right after ADD (10 rounds)",
        Finding::from_problems(&problems, "10 rounds"),
    );
    a.cleanup(h);
}

/// The sandbox's firewall rules as text (iptables and nftables).
fn firewall_text(h: &Harness) -> String {
    let ns = sandbox_name(h);
    let mut out = String::new();
    for cmd in [
        vec!["iptables-save"],
        vec!["ip6tables-save"],
        vec!["nft", "list", "ruleset"],
    ] {
        if let Ok(o) = std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(&cmd)
            .output()
        {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

/// 2.3 (NS), 2.7 and 2.16 for portmap: with mappings the output still equals prevResult,
/// CHECK passes, and DEL removes every rule that names the host port.
fn portmap_with_mappings(h: &Harness) {
    let p = "portmap";
    let v = main_version(h, p);
    let port = 25000 + (h.next() % 500) as u16 + 300;
    let netns = format!("/var/run/netns/fcf{}-pm", h.tag);
    let prev = super::invocation::prev_result(&v, &netns);
    let conf = json!({"cniVersion": v, "name": format!("fcfnet{}", h.next()), "type": "portmap",
                      "capabilities": {"portMappings": true},
                      "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]},
                      "prevResult": prev});
    let id = h.container_id();
    let inv = h
        .env(p, "ADD", &id)
        .var("CNI_NETNS", &netns)
        .stdin_json(&conf);
    let add = h.call(p, &inv);
    let rules_after_add = firewall_text(h).contains(&port.to_string());
    h.add(
        "2.3",
        Level::M,
        p,
        "with mappings: output equals prevResult",
        match result_of(&add) {
            Ok(r) => Finding::expect(schema::json_equal(&r, &prev), "equal", format!("{r}")),
            Err(e) => Finding::Violated(e),
        },
    );
    if schema::version_ge(&v, "0.4.0") {
        let c = h.call(p, &inv.clone().var("CNI_COMMAND", "CHECK"));
        h.add(
            "2.16",
            Level::M,
            p,
            "CHECK of fresh mappings passes",
            Finding::expect(c.success(), "exit 0", c.describe()),
        );
    }
    if schema::version_ge(&v, "0.4.0") {
        let deleted = delete_port_rules(h, port);
        let c = h.call(p, &inv.clone().var("CNI_COMMAND", "CHECK"));
        h.add(
            "2.17",
            Level::S,
            p,
            "CHECK fails after the DNAT rule was deleted",
            if deleted == 0 {
                Finding::Skip(format!(
                    "found no firewall rule naming port {port} to delete"
                ))
            } else {
                Finding::expect(
                    !c.success(),
                    format!("fails after deleting {deleted} rules"),
                    c.describe(),
                )
            },
        );
    }
    let del = h.call(p, &inv.clone().var("CNI_COMMAND", "DEL"));
    let left = firewall_text(h)
        .lines()
        .filter(|l| l.contains(&format!("{port}")))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    h.add(
        "2.7",
        Level::M,
        p,
        "DEL removes the mapping's rules",
        Finding::expect(
            add.success() && rules_after_add && del.success() && left.is_empty(),
            format!("rules for port {port} installed, then gone"),
            format!(
                "ADD ok {}, rules after ADD {rules_after_add}, DEL {}, left {left:?}",
                add.success(),
                del.describe()
            ),
        ),
    );
}

/// `ip -n NS -j ARGS…` parsed (Null on failure).
fn ip_json(netns: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(args)
        .output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn ip_cmd(netns: &str, args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn sandbox_name(h: &Harness) -> String {
    h.sandbox
        .as_ref()
        .map(|(g, _)| g.name.clone())
        .unwrap_or_default()
}

/// Host-side veths in the sandbox.
fn host_veths(h: &Harness) -> Vec<String> {
    ip_json(&sandbox_name(h), &["link", "show", "type", "veth"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

/// One bridge attachment under test.
struct Attachment {
    ns: Option<NetnsGuard>,
    netns_path: PathBuf,
    id: String,
    conf: Value,
    data_dir: PathBuf,
    bridge: String,
}

impl Attachment {
    fn new(h: &Harness, version: &str, ipam: Option<Value>) -> Result<Attachment, String> {
        let n = h.next();
        let ns = NetnsGuard::create(&format!("fcf{}c{n}", h.tag))?;
        let (hl, data_dir) = h.ipam_host_local(n);
        let bridge = format!("fcf{}b{n}", h.tag);
        let conf = json!({"cniVersion": version, "name": format!("fcfnet{n}"), "type": "bridge",
                          "bridge": bridge, "isGateway": true, "ipam": ipam.unwrap_or(hl)});
        Ok(Attachment {
            netns_path: ns.path.clone(),
            ns: Some(ns),
            id: h.container_id(),
            conf,
            data_dir,
            bridge,
        })
    }

    fn inv(&self, h: &Harness, verb: &str) -> Invocation {
        h.env("bridge", verb, &self.id)
            .var("CNI_NETNS", &self.netns_path.display().to_string())
            .stdin_json(&self.conf)
    }

    fn with_prev(&self, h: &Harness, verb: &str, prev: &Value) -> Invocation {
        let mut c = self.conf.clone();
        c["prevResult"] = prev.clone();
        self.inv(h, verb).stdin_json(&c)
    }

    fn ns_name(&self) -> String {
        self.ns.as_ref().map(|g| g.name.clone()).unwrap_or_default()
    }

    fn reservations(&self) -> Vec<String> {
        reservations(
            &self
                .data_dir
                .join(self.conf["name"].as_str().unwrap_or_default()),
        )
    }

    /// DEL (best effort) and remove the bridge from the sandbox.
    fn cleanup(mut self, h: &Harness) {
        h.call("bridge", &self.inv(h, "DEL"));
        ip_cmd(&sandbox_name(h), &["link", "del", &self.bridge]);
        self.ns.take();
    }
}

fn container_link(a: &Attachment) -> Value {
    ip_json(&a.ns_name(), &["addr", "show", "dev", "eth0"])
        .as_array()
        .and_then(|l| l.first().cloned())
        .unwrap_or(Value::Null)
}

/// 2.1, 2.7, 2.8, 2.16, 4.4, 4.5 on one ADD/CHECK/DEL/DEL cycle.
fn bridge_lifecycle(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    let a = match Attachment::new(h, &v, None) {
        Ok(a) => a,
        Err(e) => return h.add("2.1", Level::M, p, "ADD in a netns", Finding::Violated(e)),
    };
    let veths_before = host_veths(h);
    let o = h.call(p, &a.inv(h, "ADD"));
    let r = match result_of(&o) {
        Ok(r) => r,
        Err(e) => {
            h.add(
                "2.1",
                Level::M,
                p,
                "ADD creates the interface and reports it",
                Finding::Violated(e),
            );
            return a.cleanup(h);
        }
    };
    let link = container_link(&a);
    let mut problems = Vec::new();
    if link.is_null() {
        problems.push("no eth0 in the container netns".to_string());
    }
    let mac = link["address"].as_str().unwrap_or_default().to_string();
    let mtu = link["mtu"].as_u64();
    let addrs: Vec<String> = link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ai| {
            Some(format!(
                "{}/{}",
                ai["local"].as_str()?,
                ai["prefixlen"].as_u64()?
            ))
        })
        .collect();
    let ips: Vec<String> = r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str().map(str::to_owned))
        .collect();
    for ip in &ips {
        if !addrs.contains(ip) {
            problems.push(format!("{ip} is not on eth0 ({addrs:?})"));
        }
    }
    let new_veths: Vec<String> = host_veths(h)
        .into_iter()
        .filter(|n| !veths_before.contains(n))
        .collect();
    let links = ip_json(&sandbox_name(h), &["link", "show"]);
    let on_bridge = new_veths.iter().any(|n| {
        links
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["ifname"] == json!(n) && l["master"] == json!(a.bridge))
    });
    if !on_bridge {
        problems.push(format!(
            "no new host veth attached to {} (new veths {new_veths:?})",
            a.bridge
        ));
    }
    h.add(
        "2.1",
        Level::M,
        p,
        "ADD creates eth0 with the reported IP; host veth on the bridge",
        Finding::from_problems(&problems, format!("{ips:?}")),
    );
    let netns = a.netns_path.display().to_string();
    let f = schema::validate_result(&r, &v, Producer::Interface, Some(("eth0", &netns)));
    let item = if schema::version_ge(&v, "1.0.0") {
        "4.1"
    } else {
        "4.2"
    };
    let (index_v, shape_v): (Vec<String>, Vec<String>) = f
        .violations
        .into_iter()
        .partition(|m| m.contains("interface"));
    h.add(
        item,
        Level::M,
        p,
        &format!("{v} result schema"),
        Finding::from_problems(&shape_v, "valid"),
    );
    h.add(
        "4.4",
        Level::M,
        p,
        "ips[].interface points at eth0 in CNI_NETNS",
        Finding::from_problems(&index_v, "ok"),
    );
    if !f.warnings.is_empty() {
        h.add(
            "4.4",
            Level::S,
            p,
            "ips[].interface is present",
            Finding::Warn(f.warnings.join("; ")),
        );
    }
    let ifs = r["interfaces"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let cont = ifs
        .iter()
        .find(|i| i["name"] == json!("eth0") && i["sandbox"] == json!(netns));
    match cont {
        None => problems.push("no interfaces entry for eth0 with sandbox = CNI_NETNS".to_string()),
        Some(c) => {
            if c["mac"].as_str().map(|m| m.eq_ignore_ascii_case(&mac)) != Some(true) {
                problems.push(format!("mac {} but netlink says {mac}", c["mac"]));
            }
            if let Some(m) = c.get("mtu") {
                if m.as_u64() != mtu {
                    problems.push(format!("mtu {m} but netlink says {mtu:?}"));
                }
            }
        }
    }
    let names: Vec<&str> = ifs.iter().filter_map(|i| i["name"].as_str()).collect();
    if names.first() != Some(&a.bridge.as_str()) || ifs.len() != 3 {
        problems.push(format!(
            "interfaces are {names:?}, expected [bridge, host veth, eth0]"
        ));
    }
    for i in ifs.iter().take(2) {
        if i.get("sandbox")
            .and_then(Value::as_str)
            .map(|s| !s.is_empty())
            == Some(true)
        {
            problems.push(format!("host interface {} has a sandbox", i["name"]));
        }
    }
    h.add(
        "4.5",
        Level::S,
        p,
        "interfaces: order, sandbox, MAC/MTU as netlink reports",
        Finding::from_problems(&problems, "ok"),
    );
    // 2.16: CHECK with the ADD result.
    let o = h.call(p, &a.with_prev(h, "CHECK", &r));
    if schema::version_ge(&v, "0.4.0") {
        h.add(
            "2.16",
            Level::M,
            p,
            "CHECK of a healthy attachment passes",
            Finding::expect(
                o.success() && o.json().is_none(),
                "exit 0, empty stdout",
                o.describe(),
            ),
        );
    }
    // 2.7 / 2.8
    let reserved = a.reservations();
    let d1 = h.call(p, &a.with_prev(h, "DEL", &r));
    let mut problems = Vec::new();
    if !d1.success() {
        problems.push(format!("DEL: {}", d1.describe()));
    }
    if !container_link(&a).is_null() {
        problems.push("eth0 still in the container".into());
    }
    let left_veths: Vec<String> = host_veths(h)
        .into_iter()
        .filter(|n| new_veths.contains(n))
        .collect();
    if !left_veths.is_empty() {
        problems.push(format!("host veth left: {left_veths:?}"));
    }
    let left = a.reservations();
    if reserved.is_empty() || !left.is_empty() {
        problems.push(format!(
            "reservations before DEL {reserved:?}, after {left:?}"
        ));
    }
    h.add(
        "2.7",
        Level::M,
        p,
        "DEL removes eth0, the veth and the reservation",
        Finding::from_problems(&problems, "all gone"),
    );
    let d2 = h.call(p, &a.with_prev(h, "DEL", &r));
    h.add(
        "2.8",
        Level::M,
        p,
        "a second DEL succeeds",
        Finding::expect(d2.success(), "exit 0", d2.describe()),
    );
    a.cleanup(h);
}

/// 2.23/3.2 for bridge: ADD at every advertised version ≥ 0.3.0.
fn bridge_versions(h: &Harness) {
    let p = "bridge";
    for v in h.rich_versions(p) {
        let a = match Attachment::new(h, &v, None) {
            Ok(a) => a,
            Err(e) => return h.add("2.23", Level::M, p, "ADD per version", Finding::Violated(e)),
        };
        let o = h.call(p, &a.inv(h, "ADD"));
        let netns = a.netns_path.display().to_string();
        let finding = match result_of(&o) {
            Err(e) => Finding::Violated(e),
            Ok(r) => {
                let f =
                    schema::validate_result(&r, &v, Producer::Interface, Some(("eth0", &netns)));
                Finding::from_problems(&f.violations, "valid, cniVersion matches")
            }
        };
        h.add(
            "2.23",
            Level::M,
            p,
            &format!("ADD at advertised {v}: valid {v} result"),
            finding,
        );
        a.cleanup(h);
    }
}

/// 2.2: ADD fails when the ifname exists; no residue. A second ADD fails too.
fn bridge_existing_interface(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    let Ok(a) = Attachment::new(h, &v, None) else {
        return;
    };
    // No dummy module on every kernel: a veth pair inside the container is as good.
    ip_cmd(
        &a.ns_name(),
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "fcfpeer0",
        ],
    );
    let before = container_link(&a);
    if before.is_null() {
        h.add(
            "2.2",
            Level::M,
            p,
            "ADD over an existing eth0 fails",
            Finding::Skip("could not create eth0 in the netns".into()),
        );
        return a.cleanup(h);
    }
    let veths = host_veths(h);
    let o = h.call(p, &a.inv(h, "ADD"));
    let mut problems = Vec::new();
    if o.success() {
        problems.push("ADD succeeded over an existing eth0".into());
    }
    let after = container_link(&a);
    if after.is_null()
        || after["address"] != before["address"]
        || after["link_type"] != before["link_type"]
    {
        problems.push(format!("the dummy eth0 changed: {after}"));
    }
    if !a.reservations().is_empty() {
        problems.push(format!("reservation left: {:?}", a.reservations()));
    }
    let extra: Vec<String> = host_veths(h)
        .into_iter()
        .filter(|n| !veths.contains(n))
        .collect();
    if !extra.is_empty() {
        problems.push(format!("host veth left: {extra:?}"));
    }
    h.add(
        "2.2",
        Level::M,
        p,
        "ADD over an existing eth0 fails and leaves nothing",
        Finding::from_problems(&problems, o.describe()),
    );
    a.cleanup(h);
    // The second ADD for the same attachment.
    let Ok(a) = Attachment::new(h, &v, None) else {
        return;
    };
    let first = h.call(p, &a.inv(h, "ADD"));
    let second = h.call(p, &a.inv(h, "ADD"));
    let check = match first.json() {
        Some(r) if schema::version_ge(&v, "0.4.0") => Some(h.call(p, &a.with_prev(h, "CHECK", &r))),
        _ => None,
    };
    let ok = first.success()
        && !second.success()
        && check.as_ref().map(Outcome::success).unwrap_or(true);
    h.add(
        "2.2",
        Level::S,
        p,
        "a second ADD fails and the first attachment still CHECKs",
        Finding::expect(
            ok,
            "second ADD failed, CHECK ok",
            format!(
                "first {}; second {}; CHECK {:?}",
                first.describe(),
                second.describe(),
                check.map(|c| c.describe())
            ),
        ),
    );
    a.cleanup(h);
}

/// 2.9, 2.10, 2.11: DEL with state missing, without CNI_NETNS, after the netns is gone.
fn bridge_del_variants(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    // 2.9: host veth removed by hand (then also the bridge).
    for also_bridge in [false, true] {
        let Ok(a) = Attachment::new(h, &v, None) else {
            return;
        };
        let before = host_veths(h);
        let add = h.call(p, &a.inv(h, "ADD"));
        for veth in host_veths(h).into_iter().filter(|n| !before.contains(n)) {
            ip_cmd(&sandbox_name(h), &["link", "del", &veth]);
        }
        if also_bridge {
            ip_cmd(&sandbox_name(h), &["link", "del", &a.bridge]);
        }
        let del = h.call(p, &a.inv(h, "DEL"));
        let left = a.reservations();
        let what = if also_bridge {
            "veth and bridge"
        } else {
            "host veth"
        };
        h.add(
            "2.9",
            Level::S,
            p,
            &format!("DEL after the {what} was deleted by hand"),
            Finding::expect(
                add.success() && del.success() && left.is_empty(),
                "exit 0, IP released",
                format!(
                    "ADD {}; DEL {}; left {left:?}",
                    add.describe(),
                    del.describe()
                ),
            ),
        );
        a.cleanup(h);
    }
    // 2.10
    let Ok(a) = Attachment::new(h, &v, None) else {
        return;
    };
    let add = h.call(p, &a.inv(h, "ADD"));
    let del = h.call(p, &a.inv(h, "DEL").unset("CNI_NETNS"));
    let left = a.reservations();
    h.add(
        "2.10",
        Level::M,
        p,
        "DEL without CNI_NETNS succeeds and releases the IP",
        Finding::expect(
            add.success() && del.success() && left.is_empty(),
            "exit 0, IP released",
            format!(
                "ADD {}; DEL {}; left {left:?}",
                add.describe(),
                del.describe()
            ),
        ),
    );
    a.cleanup(h);
    // 2.11
    let Ok(mut a) = Attachment::new(h, &v, None) else {
        return;
    };
    let before = host_veths(h);
    let add = h.call(p, &a.inv(h, "ADD"));
    a.ns.take(); // ip netns del
    let del = h.call(p, &a.inv(h, "DEL"));
    let left = a.reservations();
    // The kernel destroys a deleted netns (and the veth peer with it) asynchronously.
    let mut veths: Vec<String> = Vec::new();
    for _ in 0..50 {
        veths = host_veths(h)
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        if veths.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    h.add(
        "2.11",
        Level::S,
        p,
        "DEL after the netns was deleted",
        Finding::expect(
            add.success() && del.success() && left.is_empty() && veths.is_empty(),
            "exit 0, IP released, veth gone",
            format!(
                "ADD {}; DEL {}; left {left:?}; veths {veths:?}",
                add.describe(),
                del.describe()
            ),
        ),
    );
    a.cleanup(h);
}

/// 2.17: CHECK notices a deleted interface, a flushed address, a lost reservation.
fn bridge_check_detects_breakage(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    if !schema::version_ge(&v, "0.4.0") {
        return;
    }
    for case in [
        "interface deleted",
        "address flushed",
        "reservation removed",
    ] {
        let Ok(a) = Attachment::new(h, &v, None) else {
            return;
        };
        let add = h.call(p, &a.inv(h, "ADD"));
        let Ok(r) = result_of(&add) else {
            h.add(
                "2.17",
                Level::S,
                p,
                &format!("CHECK fails after {case}"),
                Finding::Violated(add.describe()),
            );
            a.cleanup(h);
            continue;
        };
        match case {
            "interface deleted" => {
                ip_cmd(&a.ns_name(), &["link", "del", "eth0"]);
            }
            "address flushed" => {
                ip_cmd(&a.ns_name(), &["addr", "flush", "dev", "eth0"]);
            }
            _ => {
                let dir = a.data_dir.join(a.conf["name"].as_str().unwrap_or_default());
                for f in a.reservations() {
                    let _ = std::fs::remove_file(dir.join(f));
                }
            }
        }
        let o = h.call(p, &a.with_prev(h, "CHECK", &r));
        h.add(
            "2.17",
            Level::S,
            p,
            &format!("CHECK fails after {case}"),
            Finding::expect(!o.success(), "fails", o.describe()),
        );
        a.cleanup(h);
    }
}

/// 1.6: ADD into a netns that does not exist: an error and no residue.
fn bridge_missing_netns(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    let Ok(mut a) = Attachment::new(h, &v, None) else {
        return;
    };
    a.netns_path = PathBuf::from(format!("/var/run/netns/fcf{}-missing", h.tag));
    let veths = host_veths(h);
    let o = h.call(p, &a.inv(h, "ADD"));
    let extra: Vec<String> = host_veths(h)
        .into_iter()
        .filter(|n| !veths.contains(n))
        .collect();
    let left = a.reservations();
    let ok = !o.success() && o.json().is_some() && extra.is_empty() && left.is_empty();
    h.add(
        "1.6",
        Level::M,
        p,
        "ADD into a missing netns fails and leaves no veth or reservation",
        Finding::expect(
            ok,
            o.describe(),
            format!("{}; veths {extra:?}; reservations {left:?}", o.describe()),
        ),
    );
    a.cleanup(h);
}

// ---------------------------------------------------------------- delegation (D)

fn spy_ipam_result(v: &str, third: u64) -> Value {
    let mut ip =
        json!({"address": format!("10.213.{third}.5/24"), "gateway": format!("10.213.{third}.1")});
    if !schema::version_ge(v, "1.0.0") {
        ip["version"] = json!("4");
    }
    json!({"cniVersion": v, "ips": [ip], "dns": {"nameservers": [format!("10.213.{third}.53")]}})
}

/// A bridge attachment whose IPAM is `spy-ipam`, scripted by `script`.
fn spy_attachment(h: &Harness, v: &str, script: Value) -> Option<(Attachment, PathBuf)> {
    let log = h.scratch("spylog").join("spy.jsonl");
    let mut a = Attachment::new(h, v, Some(json!({"type": "spy-ipam"}))).ok()?;
    let mut spy = script;
    spy["log"] = json!(log);
    a.conf["spy"] = spy;
    Some((a, log))
}

fn calls(log: &std::path::Path, verb: &str) -> Vec<SpyRecord> {
    read_log(log)
        .into_iter()
        .filter(|r| r.command == verb)
        .collect()
}

/// Compares a delegate call with the main call: same stdin, env equal but CNI_COMMAND.
fn same_request(rec: &SpyRecord, main: &Invocation) -> Result<(), String> {
    let main_stdin = match &main.stdin {
        crate::exec::Stdin::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    if rec.stdin != main_stdin {
        let a: Value = serde_json::from_str(&rec.stdin).unwrap_or(Value::Null);
        let b: Value = serde_json::from_str(&main_stdin).unwrap_or(Value::Null);
        if a != b {
            return Err("the delegate got a different config".into());
        }
    }
    for (k, v) in &main.env {
        if k.starts_with("CNI_") && k != "CNI_COMMAND" && rec.env.get(k) != Some(v) {
            return Err(format!("{k} differs: {:?} vs {v:?}", rec.env.get(k)));
        }
    }
    Ok(())
}

/// The main call succeeded and its delegate call (the spy's record) got the same request.
fn delegated_same(
    rec: Option<&SpyRecord>,
    main: &Outcome,
    inv: &Invocation,
    n_calls: usize,
) -> Finding {
    match (rec, main.success()) {
        (Some(rec), true) => match same_request(rec, inv) {
            Ok(()) => Finding::Pass("same".into()),
            Err(e) => Finding::Violated(e),
        },
        _ => Finding::Violated(format!(
            "{} {}; delegate calls seen {n_calls}",
            inv.get("CNI_COMMAND").unwrap_or(""),
            main.describe()
        )),
    }
}

fn delegation(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    let third = 80 + h.next() % 16;
    let good = spy_ipam_result(&v, third);

    // 2.4 (a): IPAM returns no IP.
    if let Some((a, log)) = spy_attachment(
        h,
        &v,
        json!({"ADD": {"stdout": {"cniVersion": v, "ips": []}}}),
    ) {
        let before = host_veths(h);
        let o = h.call(p, &a.inv(h, "ADD"));
        let recs = read_log(&log);
        let order: Vec<&str> = recs.iter().map(|r| r.command.as_str()).collect();
        let extra: Vec<String> = host_veths(h)
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        h.add(
            "2.4",
            Level::M,
            p,
            "ADD fails when IPAM returns no IP",
            Finding::expect(!o.success(), "fails", o.describe()),
        );
        h.add(
            "2.4",
            Level::S,
            p,
            "…and runs the IPAM DEL, leaving no veth",
            Finding::expect(
                order == ["ADD", "DEL"] && extra.is_empty(),
                "ADD, DEL; no veth",
                format!("spy saw {order:?}; new veths {extra:?}"),
            ),
        );
        a.cleanup(h);
    }
    // 2.4 (b): IPAM ADD fails with 11.
    if let Some((a, log)) = spy_attachment(
        h,
        &v,
        json!({"ADD": {"exit": 1, "stdout": {"code": 11, "msg": "spy says try again"}}}),
    ) {
        let o = h.call(p, &a.inv(h, "ADD"));
        let order: Vec<String> = read_log(&log).into_iter().map(|r| r.command).collect();
        h.add(
            "2.4",
            Level::M,
            p,
            "ADD fails when IPAM ADD fails",
            Finding::expect(!o.success(), "fails", o.describe()),
        );
        h.add(
            "2.4",
            Level::S,
            p,
            "…keeps code 11 and runs the IPAM DEL",
            if o.error_code() == Some(11) && order.iter().any(|c| c == "DEL") {
                Finding::Pass("code 11, DEL sent".into())
            } else {
                Finding::Warn(format!("{}; spy saw {order:?}", o.describe()))
            },
        );
        a.cleanup(h);
    }
    // 2.13 / 2.19 / 1.8 / 5.7: a working attachment.
    if let Some((a, log)) = spy_attachment(h, &v, json!({"ADD": {"stdout": good}})) {
        let add_inv = a.inv(h, "ADD");
        let add = h.call(p, &add_inv);
        let adds = calls(&log, "ADD");
        h.add(
            "5.6",
            Level::M,
            p,
            "IPAM ADD gets the same stdin and env",
            delegated_same(adds.first(), &add, &add_inv, adds.len()),
        );
        let marker = String::from_utf8_lossy(&add.stderr).contains("ferry-spy-marker:spy-ipam:ADD");
        h.add(
            "5.6",
            Level::M,
            p,
            "the delegate's stderr reaches the main plugin's stderr",
            Finding::expect(marker, "marker seen", "the spy's stderr marker is missing"),
        );
        if let Ok(r) = result_of(&add) {
            h.add(
                "4.6",
                Level::S,
                p,
                "without a dns key, the result carries IPAM's dns",
                Finding::expect(
                    schema::json_equal(&r["dns"], &good["dns"]),
                    "IPAM dns",
                    format!("dns {}", r["dns"]),
                ),
            );
            let netns = a.netns_path.display().to_string();
            let f = schema::validate_result(&r, &v, Producer::Interface, Some(("eth0", &netns)));
            h.add(
                "5.7",
                Level::M,
                p,
                &format!("a {v} IPAM result becomes a valid {v} result"),
                Finding::from_problems(&f.violations, "valid"),
            );
            if schema::version_ge(&v, "0.4.0") {
                let mut c = a.conf.clone();
                c["prevResult"] = r.clone();
                c["spy"]["CHECK"] =
                    json!({"exit": 1, "stdout": {"code": 11, "msg": "spy check failed"}});
                let o = h.call(p, &a.inv(h, "CHECK").stdin_json(&c));
                h.add(
                    "2.19",
                    Level::M,
                    p,
                    "CHECK fails when the IPAM CHECK fails",
                    Finding::expect(
                        !o.success() && !calls(&log, "CHECK").is_empty(),
                        "fails",
                        o.describe(),
                    ),
                );
            }
            let mut c = a.conf.clone();
            c["spy"]["DEL"] = json!({"exit": 1, "stdout": {"code": 11, "msg": "spy del failed"}});
            let o = h.call(p, &a.inv(h, "DEL").stdin_json(&c));
            h.add(
                "2.13",
                Level::M,
                p,
                "DEL fails when the IPAM DEL fails",
                Finding::expect(!o.success(), "fails", o.describe()),
            );
            h.add(
                "2.13",
                Level::S,
                p,
                "…keeping code 11",
                Finding::expect(o.error_code() == Some(11), "code 11", o.describe()),
            );
        }
        let del_inv = a.inv(h, "DEL");
        let del = h.call(p, &del_inv);
        let dels = calls(&log, "DEL");
        h.add(
            "2.13",
            Level::M,
            p,
            "DEL calls the IPAM DEL with the same stdin and env",
            delegated_same(dels.last(), &del, &del_inv, dels.len()),
        );
        // Netns unset, and netns deleted.
        let n_before = calls(&log, "DEL").len();
        let o = h.call(p, &a.inv(h, "DEL").unset("CNI_NETNS"));
        let unset_ok = o.success() && calls(&log, "DEL").len() > n_before;
        let mut a = a;
        let o2_before = calls(&log, "DEL").len();
        a.ns.take();
        let o2 = h.call(p, &a.inv(h, "DEL"));
        let gone_ok = o2.success() && calls(&log, "DEL").len() > o2_before;
        h.add(
            "2.13",
            Level::M,
            p,
            "DEL reaches IPAM with CNI_NETNS unset and with the netns deleted",
            Finding::expect(
                unset_ok && gone_ok,
                "both",
                format!("unset: {}; deleted: {}", o.describe(), o2.describe()),
            ),
        );
        a.cleanup(h);
    }
    // 4.6: a dns key in the config wins over IPAM's.
    if let Some((mut a, _)) = spy_attachment(h, &v, json!({"ADD": {"stdout": good}})) {
        let dns = json!({"nameservers": ["10.213.80.53"], "search": ["fcf.test"]});
        a.conf["dns"] = dns.clone();
        let o = h.call(p, &a.inv(h, "ADD"));
        h.add(
            "4.6",
            Level::S,
            p,
            "the config's dns becomes the result's dns",
            match result_of(&o) {
                Ok(r) => Finding::expect(
                    schema::json_equal(&r["dns"], &dns),
                    "config dns",
                    format!("dns {}", r["dns"]),
                ),
                Err(e) => Finding::Violated(e),
            },
        );
        a.cleanup(h);
    }
    // 1.8: the first directory in CNI_PATH wins.
    if let Some((a, _)) = spy_attachment(h, &v, json!({"ADD": {"stdout": good}})) {
        let first = h.scratch("spy-first");
        let second = h.scratch("spy-second");
        let ok_install = crate::spy::install(&h.opts.spy_exe, &first, &["spy-ipam"]).is_ok()
            && crate::spy::install(&h.opts.spy_exe, &second, &["spy-ipam"]).is_ok();
        let mut c = a.conf.clone();
        c["spy"].as_object_mut().map(|o| o.remove("log"));
        let path = format!(
            "{}:{}:{}",
            h.opts.plugins_dir.display(),
            first.display(),
            second.display()
        );
        let o = h.call(p, &a.inv(h, "ADD").var("CNI_PATH", &path).stdin_json(&c));
        let in_first = read_log(&first.join(crate::spy::DEFAULT_LOG)).len();
        let in_second = read_log(&second.join(crate::spy::DEFAULT_LOG)).len();
        h.call(p, &a.inv(h, "DEL").var("CNI_PATH", &path).stdin_json(&c));
        h.add(
            "1.8",
            Level::M,
            p,
            "the first CNI_PATH directory with the delegate wins",
            Finding::expect(
                ok_install && o.success() && in_first > 0 && in_second == 0,
                "first dir used",
                format!(
                    "ADD {}; calls in first {in_first}, second {in_second}",
                    o.describe()
                ),
            ),
        );
        a.cleanup(h);
    }
    gc_status_delegation(h, &good);
}

/// 2.27, 2.32, 2.33: GC and STATUS reach the IPAM delegate.
fn gc_status_delegation(h: &Harness, good: &Value) {
    let p = "bridge";
    let Some((a, log)) = spy_attachment(h, "1.1.0", json!({"ADD": {"stdout": good}})) else {
        return;
    };
    let mut gc = a.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    gc["cni.dev/attachments"] = json!([]);
    let inv = h
        .env(p, "GC", "")
        .var("CNI_NETNS", "")
        .var("CNI_IFNAME", "")
        .var("CNI_ARGS", "")
        .stdin_json(&gc);
    let o = h.call(p, &inv);
    let gcs = calls(&log, "GC");
    h.add(
        "2.27",
        Level::M,
        p,
        "GC is passed on to the IPAM delegate",
        match gcs.first() {
            Some(rec) if rec.stdin_json() == gc => Finding::Pass("identical stdin".into()),
            Some(_) => Finding::Violated("the delegate's GC stdin differs".into()),
            None => Finding::Violated(format!(
                "no GC reached the spy; bridge answered {}",
                o.describe()
            )),
        },
    );
    if !h.versions(p).iter().any(|v| v == "1.1.0") {
        for (id, name) in [
            ("2.32", "STATUS is passed on to IPAM"),
            ("2.33", "ADD/DEL work after a failed STATUS"),
        ] {
            h.add(
                id,
                Level::M,
                p,
                name,
                Finding::Skip("does not advertise 1.1.0".into()),
            );
        }
        return a.cleanup(h);
    }
    let mut st = a.conf.clone();
    st["spy"]["STATUS"] = json!({"exit": 1, "stdout": {"code": 50, "msg": "spy cannot serve ADD"}});
    let inv = h
        .env(p, "STATUS", "")
        .var("CNI_NETNS", "")
        .var("CNI_IFNAME", "")
        .var("CNI_ARGS", "")
        .stdin_json(&st);
    let o = h.call(p, &inv);
    let reached = !calls(&log, "STATUS").is_empty();
    h.add(
        "2.32",
        Level::M,
        p,
        "STATUS is passed on to IPAM and fails with it",
        Finding::expect(
            reached && !o.success(),
            "failed after the spy's 50",
            format!("spy reached: {reached}; {}", o.describe()),
        ),
    );
    h.add(
        "2.32",
        Level::S,
        p,
        "…keeping code 50",
        Finding::expect(o.error_code() == Some(50), "code 50", o.describe()),
    );
    let add = h.call(p, &a.inv(h, "ADD"));
    let del = h.call(p, &a.inv(h, "DEL"));
    h.add(
        "2.33",
        Level::M,
        p,
        "ADD and DEL work after a failed STATUS",
        Finding::expect(
            add.success() && del.success(),
            "both ok",
            format!("ADD {}; DEL {}", add.describe(), del.describe()),
        ),
    );
    a.cleanup(h);
}

/// 1.6 (skel HEAD): CNI_NETNS naming the plugin's own netns is refused. Run only with the
/// sandbox as the plugin's netns, never the real host's.
fn bridge_netns_is_self(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    let Ok(mut a) = Attachment::new(h, &v, None) else {
        return;
    };
    let Some((sandbox, _)) = h.sandbox.as_ref() else {
        return;
    };
    a.netns_path = sandbox.path.clone();
    a.conf["ipam"]["ranges"][0][0]["subnet"] = json!("10.213.94.0/24");
    let o = h.call(p, &a.inv(h, "ADD").var("CNI_IFNAME", "fcfself0"));
    let finding = if !o.success() && o.json().is_some() {
        Finding::Pass(o.describe())
    } else {
        Finding::Info(format!(
            "accepted its own netns as the container's (skel HEAD answers code 8): {}",
            o.describe()
        ))
    };
    h.call(p, &a.inv(h, "DEL").var("CNI_IFNAME", "fcfself0"));
    h.add(
        "1.6",
        Level::R,
        p,
        "CNI_NETNS = the plugin's own netns is refused",
        finding,
    );
    a.cleanup(h);
}

fn run_in_sandbox(h: &Harness, args: &[&str], stdin: Option<&str>) -> Option<String> {
    use std::io::Write;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &sandbox_name(h)]).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().ok()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes every firewall rule in the sandbox that names `port` (iptables rules and nft
/// rules; nft map elements are left alone). Returns how many were deleted.
fn delete_port_rules(h: &Harness, port: u16) -> usize {
    let needle = format!("dport {port}");
    let mut deleted = 0;
    for (save, restore) in [
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ] {
        let Some(text) = run_in_sandbox(h, &[save, "-t", "nat"], None) else {
            continue;
        };
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A ") && l.contains(&needle))
            .collect();
        if rules.is_empty() {
            continue;
        }
        let mut batch = String::from("*nat\n");
        for r in &rules {
            batch.push_str(&format!("-D {}\n", &r[3..]));
        }
        batch.push_str("COMMIT\n");
        if run_in_sandbox(h, &[restore, "--noflush"], Some(&batch)).is_some() {
            deleted += rules.len();
        }
    }
    if let Some(text) = run_in_sandbox(h, &["nft", "-a", "list", "ruleset"], None) {
        let (mut table, mut chain) = (String::new(), String::new());
        for line in text.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["table", family, name, "{"] => table = format!("{family} {name}"),
                ["chain", name, "{", ..] => chain = name.to_string(),
                ["map", ..] | ["set", ..] => chain.clear(),
                _ => {
                    if chain.is_empty() || !line.contains(&needle) {
                        continue;
                    }
                    let Some(handle) = line
                        .rsplit("# handle ")
                        .next()
                        .filter(|_| line.contains("# handle "))
                    else {
                        continue;
                    };
                    let mut args: Vec<&str> = vec!["nft", "delete", "rule"];
                    args.extend(table.split(' '));
                    args.extend([chain.as_str(), "handle", handle.trim()]);
                    if run_in_sandbox(h, &args, None).is_some() {
                        deleted += 1;
                    }
                }
            }
        }
    }
    deleted
}

/// 2.1 dual-stack: one IPv4 and one IPv6 range give eth0 both addresses, both reported.
fn bridge_dual_stack(h: &Harness) {
    let p = "bridge";
    let v = main_version(h, p);
    let n = h.next();
    let data_dir = h.scratch("hl-ds");
    let ipam = json!({"type": "host-local", "dataDir": data_dir,
                      "ranges": [[{"subnet": format!("10.213.{}.0/24", 80 + n % 16)}],
                                 [{"subnet": format!("fd00:213:80:{:x}::/64", n % 256)}]]});
    let Ok(a) = Attachment::new(h, &v, Some(ipam)) else {
        return;
    };
    let o = h.call(p, &a.inv(h, "ADD"));
    let finding = match result_of(&o) {
        Err(e) => Finding::Violated(e),
        Ok(r) => {
            let reported: Vec<String> = r["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["address"].as_str().map(str::to_owned))
                .collect();
            let link = container_link(&a);
            let on_link: Vec<String> = link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|ai| {
                    Some(format!(
                        "{}/{}",
                        ai["local"].as_str()?,
                        ai["prefixlen"].as_u64()?
                    ))
                })
                .collect();
            let families = (
                reported.iter().any(|a| !a.contains(':')),
                reported.iter().any(|a| a.contains(':')),
            );
            let missing: Vec<&String> = reported.iter().filter(|a| !on_link.contains(a)).collect();
            Finding::expect(
                families == (true, true) && missing.is_empty(),
                format!("{reported:?}"),
                format!("reported {reported:?}, on eth0 {on_link:?}"),
            )
        }
    };
    h.add(
        "2.1",
        Level::M,
        p,
        "dual-stack ADD: eth0 has the reported IPv4 and IPv6 addresses",
        finding,
    );
    a.cleanup(h);
}
