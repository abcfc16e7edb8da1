//! §2–§4 checks that need no netns: VERSION, version handling, result schemas (on
//! host-local), host-local concurrency and GC/STATUS, portmap chaining.

use super::invocation::{base_conf, main_version, prev_result, runnable};
use super::{result_of, Harness};
use crate::exec::{Invocation, Stdin};
use crate::report::{Finding, Level};
use crate::schema::{self, Producer, ALL_VERSIONS};
use serde_json::{json, Value};

/// 2.22: VERSION, which also fills in the supported versions for everything else.
pub fn version_checks(h: &Harness) {
    for (p, bin) in &h.plugins {
        let mut problems = Vec::new();
        let mut echo_mismatch = Vec::new();
        let mut supported: Option<Vec<String>> = None;
        for stdin in [
            Some(r#"{"cniVersion":"1.1.0"}"#),
            None,
            Some(r#"{"cniVersion":"0.4.0"}"#),
        ] {
            let mut inv = Invocation::new(bin).var("CNI_COMMAND", "VERSION");
            inv.stdin = stdin
                .map(|s| Stdin::Bytes(s.as_bytes().to_vec()))
                .unwrap_or(Stdin::Empty);
            let o = h.call(p, &inv);
            let label = stdin.unwrap_or("empty stdin");
            let Some(v) = o.json().filter(|_| o.success()) else {
                problems.push(format!("{label}: {}", o.describe()));
                continue;
            };
            match schema::validate_version_answer(&v) {
                Ok(list) => {
                    if let Some(input) = stdin.and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                        if input["cniVersion"] != v["cniVersion"] {
                            echo_mismatch.push(format!(
                                "input {} answered {}",
                                input["cniVersion"], v["cniVersion"]
                            ));
                        }
                    }
                    supported.get_or_insert(list);
                }
                Err(e) => problems.push(format!("{label}: {e}")),
            }
        }
        h.add(
            "2.22",
            Level::M,
            p,
            "VERSION answers a valid version object",
            Finding::from_problems(
                &problems,
                format!(
                    "supports {}",
                    supported.clone().unwrap_or_default().join(",")
                ),
            ),
        );
        h.add(
            "2.22",
            Level::S,
            p,
            "VERSION echoes the input cniVersion",
            if echo_mismatch.is_empty() {
                Finding::Pass("echoed".into())
            } else {
                Finding::Warn(echo_mismatch.join("; "))
            },
        );
        if let (Some(list), Ok(mut s)) = (supported, h.supported.lock()) {
            s.insert(p.clone(), list);
        }
    }
}

/// Runs the rest of the plugin-only items.
pub fn run(h: &Harness) {
    let plugins = runnable(h);
    for p in &plugins {
        unsupported_versions(h, p);
        check_gate(h, p);
        gc_status_basics(h, p);
    }
    if h.plugins.contains_key("host-local") {
        host_local_results(h);
        host_local_del(h);
        host_local_concurrency(h);
        host_local_gc(h);
        host_local_status(h);
        host_local_args(h);
    }
    if plugins.iter().any(|p| p == "portmap") {
        portmap_chaining(h);
    } else if h.plugins.contains_key("portmap") {
        h.add(
            "2.3",
            Level::M,
            "portmap",
            "prevResult passthrough",
            Finding::Skip("needs root".into()),
        );
    }
    for p in plugins.iter().filter(|p| p.as_str() != "host-local") {
        let v = main_version(h, p);
        if !schema::version_ge(&v, "0.4.0") {
            continue;
        }
        let mut conf = base_conf(h, p, &v);
        conf.as_object_mut().map(|o| o.remove("prevResult"));
        let o = h.call(p, &h.env(p, "CHECK", &h.container_id()).stdin_json(&conf));
        h.add(
            "2.20",
            Level::R,
            p,
            "CHECK without prevResult fails",
            Finding::expect(!o.success(), "fails", o.describe()),
        );
    }
}

/// 3.3/3.4: versions that are not advertised give code 1 on ADD and DEL.
fn unsupported_versions(h: &Harness, p: &str) {
    let supported = h.versions(p);
    let mut cases: Vec<String> = vec!["9.9.9".into(), "0.5.0".into()];
    cases.extend(
        ALL_VERSIONS
            .iter()
            .filter(|v| schema::version_ge(v, "0.3.0") && !supported.iter().any(|s| s == *v))
            .map(|v| v.to_string()),
    );
    let mut problems = Vec::new();
    let mut unnamed = Vec::new();
    for v in &cases {
        for verb in ["ADD", "DEL"] {
            let conf = base_conf(h, p, v);
            let inv = h.env(p, verb, &h.container_id()).stdin_json(&conf);
            let o = h.call(p, &inv);
            if o.success() || o.error_code() != Some(1) {
                problems.push(format!("{verb} {v}: {}", o.describe()));
                if o.success() && verb == "ADD" {
                    h.call(p, &inv.clone().var("CNI_COMMAND", "DEL"));
                }
            } else if let Some(newest) = supported.last() {
                if !o.error_text().contains(newest.as_str()) {
                    unnamed.push(format!("{verb} {v}"));
                }
            }
        }
    }
    h.add(
        "3.4",
        Level::M,
        p,
        "an unsupported cniVersion gives code 1",
        Finding::from_problems(&problems, cases.join(", ")),
    );
    h.add(
        "3.4",
        Level::S,
        p,
        "the code-1 error names the supported versions",
        Finding::from_problems(&unnamed, "named"),
    );
    let conf = base_conf(h, p, "1.0");
    let o = h.call(p, &h.env(p, "ADD", &h.container_id()).stdin_json(&conf));
    h.add(
        "3.3",
        Level::R,
        p,
        "\"1.0\" is not \"1.0.0\" (exact string match)",
        Finding::expect(o.error_code() == Some(1), "code 1", o.describe()),
    );
}

/// 2.15: CHECK below 0.4.0 gives code 1.
fn check_gate(h: &Harness, p: &str) {
    let conf = base_conf(h, p, "0.3.1");
    let o = h.call(p, &h.env(p, "CHECK", &h.container_id()).stdin_json(&conf));
    h.add(
        "2.15",
        Level::M,
        p,
        "CHECK with cniVersion 0.3.1 gives code 1",
        Finding::expect(o.error_code() == Some(1), "code 1", o.describe()),
    );
}

/// The env libcni builds for GC and STATUS: all six vars, four of them empty.
fn libcni_env(h: &Harness, p: &str, verb: &str) -> Invocation {
    h.env(p, verb, "")
        .var("CNI_NETNS", "")
        .var("CNI_IFNAME", "")
        .var("CNI_ARGS", "")
}

/// 2.25, 2.28, 2.30 and the GC/STATUS part of 1.3.
fn gc_status_basics(h: &Harness, p: &str) {
    let advertises_11 = h.versions(p).iter().any(|v| v == "1.1.0");
    if !advertises_11 {
        for (id, name) in [
            ("2.25", "GC with libcni's env succeeds"),
            ("2.30", "STATUS on a healthy config"),
        ] {
            h.add(
                id,
                Level::M,
                p,
                name,
                Finding::Skip("does not advertise 1.1.0".into()),
            );
        }
        // What the plugin does with GC anyway (the runtime must not send it).
        let conf = base_conf(h, p, "1.0.0");
        let o = h.call(p, &libcni_env(h, p, "GC").stdin_json(&conf));
        h.add(
            "2.28",
            Level::R,
            p,
            "GC to a plugin without 1.1.0 (runtime must not send it)",
            Finding::Info(format!("answered {}", o.describe())),
        );
        return;
    }
    let mut conf = base_conf(h, p, "1.1.0");
    conf.as_object_mut().map(|o| o.remove("prevResult"));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "fcf-keep", "ifname": "eth0"}]);
    gc["cni.dev/attachments"] = gc["cni.dev/valid-attachments"].clone();
    let o = h.call(p, &libcni_env(h, p, "GC").stdin_json(&gc));
    h.add(
        "2.25",
        Level::M,
        p,
        "GC with libcni's env succeeds, prints nothing",
        Finding::expect(o.success() && o.json().is_none(), "exit 0", o.describe()),
    );
    let o = h.call(p, &libcni_env(h, p, "STATUS").stdin_json(&conf));
    h.add(
        "2.30",
        Level::M,
        p,
        "STATUS on a healthy config: exit 0",
        Finding::expect(o.success(), "exit 0", o.describe()),
    );
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    let o = h.call(p, &libcni_env(h, p, "GC").stdin_json(&old));
    h.add(
        "2.28",
        Level::M,
        p,
        "GC with cniVersion 1.0.0 gives code 1",
        Finding::expect(o.error_code() == Some(1), "code 1", o.describe()),
    );
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    let o = h.call(p, &libcni_env(h, p, "STATUS").stdin_json(&old));
    h.add(
        "2.33",
        Level::M,
        p,
        "STATUS with cniVersion 1.0.0 gives code 1",
        Finding::expect(o.error_code() == Some(1), "code 1", o.describe()),
    );
}

/// 2.23, 3.2, 4.1–4.3, 4.7 on host-local, for every advertised version.
fn host_local_results(h: &Harness) {
    let p = "host-local";
    let supported = h.versions(p);
    for v in ALL_VERSIONS
        .iter()
        .filter(|v| supported.iter().any(|s| s == *v))
    {
        let (conf, _) = h.host_local_conf(Some(v));
        let inv = h.env(p, "ADD", &h.container_id()).stdin_json(&conf);
        let o = h.call(p, &inv);
        h.call(p, &inv.clone().var("CNI_COMMAND", "DEL"));
        let item = match schema::shape_of(v) {
            schema::Shape::Legacy => "4.3",
            schema::Shape::V04 => "4.2",
            _ => "4.1",
        };
        match result_of(&o) {
            Err(e) => {
                h.add(
                    "2.23",
                    Level::M,
                    p,
                    &format!("ADD at advertised {v} succeeds"),
                    Finding::Violated(e),
                );
            }
            Ok(r) => {
                h.add(
                    "2.23",
                    Level::M,
                    p,
                    &format!("ADD at advertised {v} succeeds"),
                    Finding::Pass("ok".into()),
                );
                h.add(
                    "3.2",
                    Level::M,
                    p,
                    &format!("result cniVersion equals request {v}"),
                    Finding::expect(
                        r["cniVersion"] == json!(v),
                        "equal",
                        format!("got {}", r["cniVersion"]),
                    ),
                );
                let f = schema::validate_result(&r, v, Producer::Ipam, None);
                let (shape_v, ipam_v): (Vec<String>, Vec<String>) =
                    f.violations.into_iter().partition(|m| !m.contains("(4.7)"));
                h.add(
                    item,
                    Level::M,
                    p,
                    &format!("{v} result schema"),
                    Finding::from_problems(&shape_v, "valid"),
                );
                if !f.notes.is_empty() {
                    h.add(
                        item,
                        Level::O,
                        p,
                        &format!("{v} result: unknown keys"),
                        Finding::Info(f.notes.join("; ")),
                    );
                }
                if item != "4.3" {
                    h.add(
                        "4.7",
                        Level::M,
                        p,
                        &format!("{v} IPAM result is abbreviated"),
                        Finding::from_problems(&ipam_v, "no interfaces, no index"),
                    );
                }
            }
        }
    }
    if supported.iter().any(|s| s == "0.1.0" || s == "0.2.0") {
        let (conf, _) = h.host_local_conf(None);
        let inv = h.env(p, "ADD", &h.container_id()).stdin_json(&conf);
        let o = h.call(p, &inv);
        h.call(p, &inv.clone().var("CNI_COMMAND", "DEL"));
        let finding = match result_of(&o) {
            Err(e) => Finding::Violated(e),
            Ok(r) => {
                let f = schema::validate_result(&r, "0.1.0", Producer::Ipam, None);
                let legacy = r.get("ip4").is_some() || r.get("ip6").is_some();
                let mut probs = f.violations;
                if !legacy {
                    probs.push("no ip4/ip6".into());
                }
                probs.retain(|m| !m.starts_with("cniVersion is"));
                Finding::from_problems(&probs, "ip4/ip6 shape")
            }
        };
        h.add(
            "4.3",
            Level::M,
            p,
            "ADD with no cniVersion returns the ip4/ip6 shape",
            finding,
        );
    }
}

/// 2.8 and 2.10 in their plugin-only form.
fn host_local_del(h: &Harness) {
    let p = "host-local";
    let v = main_version(h, p);
    let (conf, dir) = h.host_local_conf(Some(&v));
    let name = conf["name"].as_str().unwrap_or_default().to_string();
    let id = h.container_id();
    let add = h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
    let d1 = h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
    let d2 = h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
    let never = h.call(p, &h.env(p, "DEL", &h.container_id()).stdin_json(&conf));
    h.add(
        "2.8",
        Level::M,
        p,
        "ADD, DEL, DEL, and DEL of a never-added ID all exit 0",
        Finding::expect(
            add.success() && d1.success() && d2.success() && never.success(),
            "exit 0 each time",
            format!(
                "ADD {}; DEL {}; DEL {}; never-added DEL {}",
                add.describe(),
                d1.describe(),
                d2.describe(),
                never.describe()
            ),
        ),
    );
    let id = h.container_id();
    let add = h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
    let del = h.call(
        p,
        &h.env(p, "DEL", &id).unset("CNI_NETNS").stdin_json(&conf),
    );
    let left = reservations(&dir.join(&name));
    h.add(
        "2.10",
        Level::M,
        p,
        "DEL with CNI_NETNS unset releases the IP",
        Finding::expect(
            add.success() && del.success() && left.is_empty(),
            "released",
            format!(
                "ADD {}; DEL {}; left {left:?}",
                add.describe(),
                del.describe()
            ),
        ),
    );
}

/// Reservation files (IP-named) in a host-local network directory.
pub fn reservations(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// 2.6: parallel ADDs and DELs for different containers (scaled for 2 cores:
/// 16 in parallel, 4 rounds).
fn host_local_concurrency(h: &Harness) {
    let p = "host-local";
    let v = main_version(h, p);
    let (conf, dir) = h.host_local_conf(Some(&v));
    let name = conf["name"].as_str().unwrap_or_default().to_string();
    let mut problems = Vec::new();
    for round in 0..4 {
        let ids: Vec<String> = (0..16).map(|_| h.container_id()).collect();
        let adds: Vec<crate::exec::Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let inv = h.env(p, "ADD", id).stdin_json(&conf);
                    s.spawn(move || h.call(p, &inv))
                })
                .collect();
            handles.into_iter().filter_map(|t| t.join().ok()).collect()
        });
        let mut ips: Vec<String> = Vec::new();
        for o in &adds {
            match result_of(o) {
                Ok(r) => ips.extend(
                    r["ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|i| i["address"].as_str().map(str::to_owned)),
                ),
                Err(e) => problems.push(format!("round {round} ADD: {e}")),
            }
        }
        let n = ips.len();
        ips.sort();
        ips.dedup();
        if ips.len() != n {
            problems.push(format!(
                "round {round}: {} duplicate addresses",
                n - ips.len()
            ));
        }
        let dels: Vec<crate::exec::Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let inv = h.env(p, "DEL", id).stdin_json(&conf);
                    s.spawn(move || h.call(p, &inv))
                })
                .collect();
            handles.into_iter().filter_map(|t| t.join().ok()).collect()
        });
        if let Some(bad) = dels.iter().find(|o| !o.success()) {
            problems.push(format!("round {round} DEL: {}", bad.describe()));
        }
        let left = reservations(&dir.join(&name));
        if !left.is_empty() {
            problems.push(format!("round {round}: reservations left {left:?}"));
        }
        if !problems.is_empty() {
            break;
        }
    }
    h.add(
        "2.6",
        Level::M,
        p,
        "16 parallel ADDs/DELs × 4 rounds: distinct IPs, nothing left",
        Finding::from_problems(&problems, "64 ADDs, 64 DELs"),
    );
}

/// 2.26: host-local GC keeps exactly the valid attachments.
fn host_local_gc(h: &Harness) {
    let p = "host-local";
    if !h.versions(p).iter().any(|v| v == "1.1.0") {
        h.add(
            "2.26",
            Level::S,
            p,
            "GC releases what is not valid",
            Finding::Skip("does not advertise 1.1.0".into()),
        );
        return;
    }
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let (conf, dir) = h.host_local_conf(Some("1.1.0"));
        let net_dir = dir.join(conf["name"].as_str().unwrap_or_default());
        let ids: Vec<String> = (0..3).map(|_| h.container_id()).collect();
        let ifnames = ["eth0", "eth0", "eth1"];
        let mut problems = Vec::new();
        for (id, ifn) in ids.iter().zip(ifnames) {
            let o = h.call(
                p,
                &h.env(p, "ADD", id).var("CNI_IFNAME", ifn).stdin_json(&conf),
            );
            if !o.success() {
                problems.push(format!("ADD {id}: {}", o.describe()));
            }
        }
        let gc = |valid: Value| {
            let mut c = conf.clone();
            c[key] = valid;
            h.call(p, &libcni_env(h, p, "GC").stdin_json(&c))
        };
        let valid = json!([{"containerID": ids[0], "ifname": "eth0"}, {"containerID": ids[2], "ifname": "eth1"}]);
        let o = gc(valid.clone());
        let left = reservations(&net_dir);
        if !o.success() || left.len() != 2 {
            problems.push(format!(
                "GC keeping 2 of 3: {} and {} reservations left",
                o.describe(),
                left.len()
            ));
        }
        let o = gc(valid);
        if !o.success() {
            problems.push(format!("second GC: {}", o.describe()));
        }
        let o = gc(json!([]));
        let left = reservations(&net_dir);
        if !o.success() || !left.is_empty() {
            problems.push(format!("GC with []: {} and {left:?} left", o.describe()));
        }
        h.add(
            "2.26",
            Level::S,
            p,
            &format!("GC with {key} keeps exactly the valid ones"),
            Finding::from_problems(&problems, "c1,c3 kept; c2 released; [] releases all"),
        );
    }
    // Neither key: "no information"; ferry removes nothing.
    let (conf, dir) = h.host_local_conf(Some("1.1.0"));
    let net_dir = dir.join(conf["name"].as_str().unwrap_or_default());
    let id = h.container_id();
    h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
    let o = h.call(p, &libcni_env(h, p, "GC").stdin_json(&conf));
    let left = reservations(&net_dir);
    h.add(
        "2.26",
        Level::O,
        p,
        "GC with no attachment key removes nothing",
        if o.success() && left.len() == 1 {
            Finding::Pass("kept".into())
        } else {
            Finding::Info(format!(
                "{}; {} reservations left",
                o.describe(),
                left.len()
            ))
        },
    );
    h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
}

/// 2.31: STATUS reports an exhausted range with code 50.
fn host_local_status(h: &Harness) {
    let p = "host-local";
    if !h.versions(p).iter().any(|v| v == "1.1.0") {
        h.add(
            "2.31",
            Level::S,
            p,
            "STATUS reports an exhausted range",
            Finding::Skip("does not advertise 1.1.0".into()),
        );
        return;
    }
    let data_dir = h.scratch("hl-status");
    let conf = json!({"cniVersion": "1.1.0", "name": format!("fcfnet{}", h.next()), "type": "host-local",
                      "ipam": {"type": "host-local", "dataDir": data_dir,
                               "ranges": [[{"subnet": "10.213.95.0/24", "rangeStart": "10.213.95.10", "rangeEnd": "10.213.95.10"}]]}});
    let id = h.container_id();
    let add = h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
    let o = h.call(p, &libcni_env(h, p, "STATUS").stdin_json(&conf));
    h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
    h.add(
        "2.31",
        Level::S,
        p,
        "STATUS with no free address gives code 50",
        Finding::expect(
            add.success() && o.error_code() == Some(50),
            "code 50",
            format!("ADD {}; STATUS {}", add.describe(), o.describe()),
        ),
    );
}

/// 2.3, 2.5, 2.12, 3.5 on portmap.
fn portmap_chaining(h: &Harness) {
    let p = "portmap";
    let netns = format!("/var/run/netns/fcf{}-absent", h.tag);
    let mut problems = Vec::new();
    for v in h.rich_versions(p) {
        for mappings in [Some(json!([])), None] {
            let mut conf = base_conf(h, p, &v);
            match &mappings {
                Some(m) => conf["runtimeConfig"]["portMappings"] = m.clone(),
                None => {
                    conf.as_object_mut().map(|o| o.remove("runtimeConfig"));
                }
            }
            let id = h.container_id();
            let o = h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
            match result_of(&o) {
                Ok(r) => {
                    if !schema::json_equal(&r, &prev_result(&v, &netns)) {
                        problems.push(format!("{v}: output {r} differs from prevResult"));
                    }
                }
                Err(e) => problems.push(format!("{v}: {e}")),
            }
            h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
        }
    }
    h.add(
        "2.3",
        Level::M,
        p,
        "no mappings: output equals prevResult",
        Finding::from_problems(&problems, "every advertised version, [] and absent"),
    );
    let v = main_version(h, p);
    let mut conf = base_conf(h, p, &v);
    conf.as_object_mut().map(|o| o.remove("prevResult"));
    let o = h.call(p, &h.env(p, "ADD", &h.container_id()).stdin_json(&conf));
    h.add(
        "2.5",
        Level::R,
        p,
        "ADD without prevResult fails (chained only)",
        Finding::expect(
            !o.success() && o.json().is_some(),
            "fails with an error object",
            o.describe(),
        ),
    );
    let o = h.call(p, &h.env(p, "DEL", &h.container_id()).stdin_json(&conf));
    h.add(
        "2.12",
        Level::S,
        p,
        "DEL without prevResult succeeds",
        Finding::expect(o.success(), "exit 0", o.describe()),
    );
    if h.rich_versions(p).iter().any(|s| s == "1.0.0")
        && h.rich_versions(p).iter().any(|s| s == "0.4.0")
    {
        let mut conf = base_conf(h, p, "1.0.0");
        conf["prevResult"] = prev_result("0.4.0", &netns);
        let id = h.container_id();
        let o = h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
        h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
        let finding = if !o.success() {
            Finding::Pass("rejected like the reference".into())
        } else {
            match o.json() {
                Some(r) if r["cniVersion"] == json!("1.0.0") => Finding::Info(
                    "accepted a 0.4.0 prevResult and answered 1.0.0 (the reference rejects)".into(),
                ),
                other => Finding::Violated(format!("answered {other:?}, not in 1.0.0")),
            }
        };
        h.add(
            "3.5",
            Level::R,
            p,
            "1.0.0 config with a 0.4.0 prevResult",
            finding,
        );
    }
}

/// 5.5, 7.2, 7.3: `args` on host-local.
fn host_local_args(h: &Harness) {
    let p = "host-local";
    let v = main_version(h, p);
    let (mut conf, _) = h.host_local_conf(Some(&v));
    conf["args"] = json!({"cni": {"unknownThing": 1}, "other": {"x": [1]}});
    let id = h.container_id();
    let o = h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
    h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
    h.add(
        "5.5",
        Level::O,
        p,
        "unknown args content is ignored",
        Finding::expect(o.success(), "ADD ok", o.describe()),
    );
    let (mut conf, _) = h.host_local_conf(Some(&v));
    let subnet = conf["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let want = subnet.replace(".0/24", ".77");
    let other = subnet.replace(".0/24", ".78");
    conf["args"] = json!({"cni": {"ips": [want]}});
    let id = h.container_id();
    let o = h.call(p, &h.env(p, "ADD", &id).stdin_json(&conf));
    h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
    let got = o
        .json()
        .map(|r| r["ips"][0]["address"].clone())
        .unwrap_or(Value::Null);
    h.add(
        "7.2",
        Level::O,
        p,
        "args.cni.ips picks the address",
        Finding::expect(
            got.as_str()
                .map(|a| a.starts_with(&format!("{want}/")))
                .unwrap_or(false),
            want.to_string(),
            o.describe(),
        ),
    );
    let id = h.container_id();
    let o = h.call(
        p,
        &h.env(p, "ADD", &id)
            .var("CNI_ARGS", &format!("IP={other}"))
            .stdin_json(&conf),
    );
    h.call(p, &h.env(p, "DEL", &id).stdin_json(&conf));
    let got = o
        .json()
        .map(|r| r["ips"][0]["address"].clone())
        .unwrap_or(Value::Null);
    h.add(
        "7.3",
        Level::O,
        p,
        "CNI_ARGS IP and args.cni.ips together",
        Finding::Info(if o.success() {
            format!(
                "allocated {got} (args wins: {})",
                got.as_str()
                    .map(|a| a.starts_with(&format!("{want}/")))
                    .unwrap_or(false)
            )
        } else {
            format!("error like the reference: {}", o.describe())
        }),
    );
}
