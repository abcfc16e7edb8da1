//! §1: how a plugin is invoked — verbs, env vars, container ID, ifname, CNI_ARGS, stdin.

use super::{result_of, Harness};
use crate::exec::{Invocation, Stdin};
use crate::report::{Finding, Level};
use serde_json::{json, Value};

/// A config for `plugin` in version `v` that gets past validation without touching the
/// network (host-local with a scratch data dir; portmap with no mappings; bridge in the
/// sandbox).
pub fn base_conf(h: &Harness, plugin: &str, v: &str) -> Value {
    let n = h.next();
    let (ipam, _) = h.ipam_host_local(n);
    match plugin {
        "host-local" => json!({"cniVersion": v, "name": format!("fcfnet{n}"),
                               "type": "host-local", "ipam": ipam}),
        "portmap" => json!({"cniVersion": v, "name": format!("fcfnet{n}"), "type": "portmap",
                            "capabilities": {"portMappings": true},
                            "runtimeConfig": {"portMappings": []},
                            "prevResult": prev_result(v, &format!("/var/run/netns/fcf{}-absent", h.tag))}),
        _ => json!({"cniVersion": v, "name": format!("fcfnet{n}"), "type": plugin,
                    "bridge": format!("fcf{}b{n}", h.tag), "ipam": ipam}),
    }
}

/// A hand-made interface-plugin result in version `v` (for chained plugins).
pub fn prev_result(v: &str, netns: &str) -> Value {
    let mut ip = json!({"address": "10.213.80.5/24", "gateway": "10.213.80.1", "interface": 1});
    if !crate::schema::version_ge(v, "1.0.0") {
        ip["version"] = json!("4");
    }
    json!({"cniVersion": v,
           "interfaces": [{"name": "fcfbr0", "mac": "0a:58:0a:d5:50:01"},
                          {"name": "eth0", "mac": "0a:58:0a:d5:50:05", "sandbox": netns}],
           "ips": [ip],
           "routes": [{"dst": "0.0.0.0/0", "gw": "10.213.80.1"}],
           "dns": {"nameservers": ["10.213.80.1"]}})
}

/// The version to use for generic tests: the newest advertised (1.0.0 if VERSION failed).
pub fn main_version(h: &Harness, plugin: &str) -> String {
    h.newest_at_least(plugin, "0.3.0")
        .unwrap_or_else(|| "1.0.0".to_string())
}

/// Plugins whose generic tests can run here: host-local always, the others only in the
/// sandbox (they touch links or firewall rules even when they fail late).
pub fn runnable(h: &Harness) -> Vec<String> {
    h.plugins
        .keys()
        .filter(|p| p.as_str() == "host-local" || h.is_root())
        .cloned()
        .collect()
}

fn skip_unrunnable(h: &Harness, id: &str, name: &str) {
    for p in h.plugins.keys() {
        if p != "host-local" && !h.is_root() {
            h.add(
                id,
                Level::M,
                p,
                name,
                Finding::Skip("needs root (runs in a sandbox netns)".into()),
            );
        }
    }
}

/// "Gets past env validation": anything but an error with code 4.
fn not_code4(o: &crate::exec::Outcome) -> bool {
    o.success() || o.error_code() != Some(4)
}

/// Runs an ADD that is expected to succeed, then the matching DEL (cleanup).
fn add_then_del(h: &Harness, plugin: &str, inv: &Invocation) -> crate::exec::Outcome {
    let o = h.call(plugin, inv);
    if o.success() {
        let del = inv.clone().var("CNI_COMMAND", "DEL");
        h.call(plugin, &del);
    }
    o
}

/// Runs §1.
pub fn run(h: &Harness) {
    let plugins = runnable(h);
    for p in &plugins {
        let v = main_version(h, p);
        verb_values(h, p, &v);
        required_env(h, p, &v);
        container_ids(h, p, &v);
        ifnames(h, p, &v);
        stdin_rules(h, p, &v);
    }
    for id in ["1.1", "1.3", "1.4", "1.5", "1.9"] {
        skip_unrunnable(h, id, "invocation checks");
    }
    if plugins.iter().any(|p| p == "host-local") {
        cni_args(h);
        unrelated_env(h);
    }
}

fn verb_values(h: &Harness, p: &str, v: &str) {
    // 1.1: an unknown verb.
    let inv = h
        .env(p, "FROB", &h.container_id())
        .stdin_json(&base_conf(h, p, v));
    let o = h.call(p, &inv);
    h.add(
        "1.1",
        Level::M,
        p,
        "unknown CNI_COMMAND fails with code 4",
        Finding::expect(
            !o.success() && o.error_code() == Some(4),
            "code 4",
            o.describe(),
        ),
    );
    h.add(
        "1.1",
        Level::R,
        p,
        "the msg is `unknown CNI_COMMAND: FROB` (libcni matches this text)",
        Finding::expect(
            o.error_msg() == "unknown CNI_COMMAND: FROB",
            "same text",
            o.error_msg(),
        ),
    );
    // 1.2: no env at all.
    let bin = h.plugins.get(p).cloned().unwrap_or_default();
    let o = h.call(p, &Invocation::new(bin));
    let quiet_ok = o.success() && o.stdout.iter().all(u8::is_ascii_whitespace);
    let code4 = !o.success() && o.error_code() == Some(4);
    h.add(
        "1.2",
        Level::R,
        p,
        "CNI_COMMAND unset: about text (exit 0) or code 4",
        Finding::expect(
            quiet_ok || code4,
            if quiet_ok {
                "exit 0, empty stdout"
            } else {
                "code 4"
            },
            o.describe(),
        ),
    );
}

fn required_env(h: &Harness, p: &str, v: &str) {
    let mut problems = Vec::new();
    let check_allowed = crate::schema::version_ge(v, "0.4.0");
    for verb in ["ADD", "DEL", "CHECK"] {
        if verb == "CHECK" && !check_allowed {
            continue;
        }
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            if verb == "DEL" && var == "CNI_NETNS" {
                continue;
            }
            for empty in [false, true] {
                let id = h.container_id();
                let mut inv = h.env(p, verb, &id).stdin_json(&base_conf(h, p, v));
                inv = if empty {
                    inv.var(var, "")
                } else {
                    inv.unset(var)
                };
                let o = if verb == "ADD" {
                    add_then_del(h, p, &inv)
                } else {
                    h.call(p, &inv)
                };
                let how = if empty { "empty" } else { "unset" };
                if o.success() || o.error_code() != Some(4) {
                    problems.push(format!("{verb} with {var} {how}: {}", o.describe()));
                } else if !o.error_text().contains(var) {
                    problems.push(format!(
                        "{verb} with {var} {how}: msg does not name {var}: {}",
                        o.error_msg()
                    ));
                }
            }
        }
    }
    h.add(
        "1.3",
        Level::M,
        p,
        "a missing required var gives code 4 naming it",
        Finding::from_problems(&problems, "ADD/DEL/CHECK × CONTAINERID/NETNS/IFNAME"),
    );
    // Optional vars: CNI_PATH on ADD/DEL (spec-optional, skel requires it).
    if p != "bridge" {
        let mut strict = Vec::new();
        for verb in ["ADD", "DEL"] {
            let inv = h
                .env(p, verb, &h.container_id())
                .stdin_json(&base_conf(h, p, v))
                .unset("CNI_PATH");
            let o = if verb == "ADD" {
                add_then_del(h, p, &inv)
            } else {
                h.call(p, &inv)
            };
            if o.error_code() == Some(4) {
                strict.push(verb);
            }
        }
        h.add(
            "1.3",
            Level::O,
            p,
            "CNI_PATH unset on ADD/DEL (spec: optional)",
            if strict.is_empty() {
                Finding::Pass("not required".into())
            } else {
                Finding::Info(format!("code 4 on {} like skel", strict.join("/")))
            },
        );
    }
    // DEL without CNI_NETNS must not fail because of it.
    let inv = h
        .env(p, "DEL", &h.container_id())
        .stdin_json(&base_conf(h, p, v))
        .unset("CNI_NETNS");
    let o = h.call(p, &inv);
    h.add(
        "1.3",
        Level::M,
        p,
        "DEL with CNI_NETNS unset is accepted",
        Finding::expect(o.success(), "exit 0", o.describe()),
    );
}

const GOOD_IDS: [&str; 4] = ["a", "0", "A_b.c-d", "cnitool-0123abcd4567ef890123"];
const BAD_IDS: [&str; 10] = [
    "-a", "_a", ".a", "a/b", "a b", "a:b", "a@b", "ä", "a;b", "abc\n",
];

fn container_ids(h: &Harness, p: &str, v: &str) {
    let mut good: Vec<String> = GOOD_IDS.iter().map(|s| s.to_string()).collect();
    good.push("f".repeat(64));
    good.push("a".repeat(300));
    let mut problems = Vec::new();
    for id in &good {
        // Unique per run so concurrent runs do not share reservations.
        let id = if id.len() < 40 {
            format!("{id}{}", h.tag)
        } else {
            id.clone()
        };
        let verb = if p == "bridge" { "DEL" } else { "ADD" };
        let inv = h.env(p, verb, &id).stdin_json(&base_conf(h, p, v));
        let o = if verb == "ADD" {
            add_then_del(h, p, &inv)
        } else {
            h.call(p, &inv)
        };
        if !not_code4(&o) {
            problems.push(format!(
                "{verb} {:?}: {}",
                crate::exec::truncate(&id, 20),
                o.describe()
            ));
        }
    }
    h.add(
        "1.4",
        Level::M,
        p,
        "valid container IDs are accepted",
        Finding::from_problems(&problems, "6 IDs incl. 64-hex and 300 chars"),
    );
    let mut problems = Vec::new();
    for verb in verbs_for(v) {
        for id in BAD_IDS {
            let inv = h.env(p, verb, id).stdin_json(&base_conf(h, p, v));
            let o = if verb == "ADD" {
                add_then_del(h, p, &inv)
            } else {
                h.call(p, &inv)
            };
            if o.success() || o.error_code() != Some(4) {
                problems.push(format!("{verb} {id:?}: {}", o.describe()));
            }
        }
    }
    h.add(
        "1.4",
        Level::M,
        p,
        "invalid container IDs give code 4",
        Finding::from_problems(&problems, "10 IDs × ADD/DEL/CHECK"),
    );
}

fn verbs_for(v: &str) -> Vec<&'static str> {
    if crate::schema::version_ge(v, "0.4.0") {
        vec!["ADD", "DEL", "CHECK"]
    } else {
        vec!["ADD", "DEL"]
    }
}

fn ifnames(h: &Harness, p: &str, v: &str) {
    let verb = if p == "bridge" { "DEL" } else { "ADD" };
    let inv = h
        .env(p, verb, &h.container_id())
        .var("CNI_IFNAME", "abcdefghijklmno")
        .stdin_json(&base_conf(h, p, v));
    let o = if verb == "ADD" {
        add_then_del(h, p, &inv)
    } else {
        h.call(p, &inv)
    };
    h.add(
        "1.5",
        Level::M,
        p,
        "a 15-byte ifname is accepted",
        Finding::expect(not_code4(&o), "accepted", o.describe()),
    );
    let bad = [
        "abcdefghijklmnop",
        "éééééééé",
        ".",
        "..",
        "eth0:1",
        "a/b",
        "a b",
        "a\tb",
    ];
    let mut problems = Vec::new();
    for verb in verbs_for(v) {
        for name in bad {
            let inv = h
                .env(p, verb, &h.container_id())
                .var("CNI_IFNAME", name)
                .stdin_json(&base_conf(h, p, v));
            let o = if verb == "ADD" {
                add_then_del(h, p, &inv)
            } else {
                h.call(p, &inv)
            };
            if o.success() || o.error_code() != Some(4) {
                problems.push(format!("{verb} {name:?}: {}", o.describe()));
            }
        }
    }
    h.add(
        "1.5",
        Level::M,
        p,
        "invalid ifnames give code 4",
        Finding::from_problems(&problems, "8 names × ADD/DEL/CHECK"),
    );
}

fn stdin_rules(h: &Harness, p: &str, v: &str) {
    let name_missing = {
        let mut c = base_conf(h, p, v);
        c.as_object_mut().map(|o| o.remove("name"));
        c.to_string()
    };
    let name_bad = {
        let mut c = base_conf(h, p, v);
        c["name"] = json!("a b");
        c.to_string()
    };
    let version_number = {
        let mut c = base_conf(h, p, v);
        c["cniVersion"] = json!(1);
        c.to_string()
    };
    let cases: Vec<(&str, Stdin, u64)> = vec![
        ("{not json", Stdin::Bytes(b"{not json".to_vec()), 6),
        ("empty stdin", Stdin::Empty, 6),
        ("no name", Stdin::Bytes(name_missing.into_bytes()), 7),
        ("name \"a b\"", Stdin::Bytes(name_bad.into_bytes()), 7),
        ("cniVersion 1", Stdin::Bytes(version_number.into_bytes()), 6),
        (
            "stdin is a directory",
            Stdin::Directory(h.tmp.path().to_path_buf()),
            5,
        ),
    ];
    let mut problems = Vec::new();
    for verb in verbs_for(v) {
        for (what, stdin, code) in &cases {
            let mut inv = h.env(p, verb, &h.container_id());
            inv.stdin = stdin.clone();
            let o = h.call(p, &inv);
            if o.success() || o.error_code() != Some(*code) {
                problems.push(format!(
                    "{verb} {what}: want code {code}, got {}",
                    o.describe()
                ));
            }
        }
    }
    h.add(
        "1.9",
        Level::M,
        p,
        "bad stdin gives codes 5/6/7",
        Finding::from_problems(&problems, "6 cases × ADD/DEL/CHECK"),
    );
}

/// 1.7: the reference CNI_ARGS grammar, on host-local (which reads `IP`).
fn cni_args(h: &Harness) {
    let p = "host-local";
    let v = main_version(h, p);
    let cases: [(&str, bool); 8] = [
        ("FOO=bar", false),
        ("IgnoreUnknown=1;FOO=bar", true),
        ("IgnoreUnknown=TRUE;FOO=bar", true),
        ("IgnoreUnknown=yes;FOO=bar", false),
        ("ignoreunknown=1;FOO=bar", false),
        ("FOO", false),
        ("IgnoreUnknown=1;", false),
        ("", true),
    ];
    let mut problems = Vec::new();
    for (args, ok) in cases {
        let (conf, _) = h.host_local_conf(Some(&v));
        let inv = h
            .env(p, "ADD", &h.container_id())
            .var("CNI_ARGS", args)
            .stdin_json(&conf);
        let o = add_then_del(h, p, &inv);
        if o.success() != ok {
            problems.push(format!(
                "{args:?}: want {}, got {}",
                if ok { "success" } else { "an error" },
                o.describe()
            ));
        }
    }
    h.add(
        "1.7",
        Level::R,
        p,
        "CNI_ARGS parsed like types.LoadArgs",
        Finding::from_problems(&problems, "8 cases"),
    );
}

/// 1.13: the runtime's whole env plus junk changes nothing.
fn unrelated_env(h: &Harness) {
    let p = "host-local";
    let v = main_version(h, p);
    let (conf, _) = h.host_local_conf(Some(&v));
    let id = h.container_id();
    let plain = h.env(p, "ADD", &id).stdin_json(&conf);
    let first = h.call(p, &plain);
    h.call(p, &plain.clone().var("CNI_COMMAND", "DEL"));
    let mut noisy = plain.clone();
    for (k, val) in std::env::vars() {
        if !k.starts_with("CNI_") {
            noisy = noisy.var(&k, &val);
        }
    }
    noisy = noisy.var("CNI_FOO", "1").var("FOO", "bar");
    let second = h.call(p, &noisy);
    let del = h.call(p, &noisy.clone().var("CNI_COMMAND", "DEL"));
    let finding = match (result_of(&first), result_of(&second)) {
        (Ok(a), Ok(b)) => {
            let same = mask_addresses(&a) == mask_addresses(&b);
            Finding::expect(
                same && del.success(),
                "same result shape, DEL ok",
                format!("{a} vs {b}; DEL {}", del.describe()),
            )
        }
        (a, b) => Finding::Violated(format!(
            "plain: {:?}; with junk env: {:?}",
            a.err(),
            b.err()
        )),
    };
    h.add(
        "1.13",
        Level::R,
        p,
        "unrelated env vars are ignored",
        finding,
    );
}

/// Replaces host addresses by their network, so two allocations compare equal.
fn mask_addresses(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let nv = if k == "address" {
                        val.as_str()
                            .and_then(|s| s.parse::<ipnet::IpNet>().ok())
                            .map(|n| json!(n.trunc().to_string()))
                            .unwrap_or_else(|| val.clone())
                    } else {
                        mask_addresses(val)
                    };
                    (k.clone(), nv)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(mask_addresses).collect()),
        _ => v.clone(),
    }
}
