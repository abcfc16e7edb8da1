//! The bridge plugin as a runtime runs it: real namespaces, real traffic, real firewall.
//! Every test uses its own bridge, subnet (inside 10.213.16.0/20, fd00:213:16::/56) and
//! namespaces, all removed by guards on drop.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn conf(name: &str, bridge: &str, data: &TempDir, ranges: Value, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": ranges},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn v4(subnet: &str) -> Value {
    json!([[{"subnet": subnet}]])
}

fn mtu_of(ns: Option<&TestNs>, dev: &str) -> u32 {
    let mut args = vec![];
    if let Some(n) = ns {
        args.extend(["-n", n.name.as_str()]);
    }
    args.extend(["-j", "link", "show", dev]);
    let out = Command::new("ip").args(&args).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["mtu"].as_u64().unwrap() as u32
}

#[test]
fn two_containers_reach_each_other_and_the_gateway() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-a",
        &br,
        &data,
        v4("10.213.21.0/24"),
        json!({"isGateway": true, "mtu": 1400, "hairpinMode": true}),
    );
    let (a, b) = (TestNs::new("a"), TestNs::new("b"));
    let ra = ferry("ADD", "ca", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    ferry("ADD", "cb", Some(&b.path()), &cp.path(), &c).expect_ok();
    let host_veth = ra["interfaces"][1]["name"].as_str().unwrap().to_string();

    assert!(tcp_echo(&a, &b, "10.213.21.3:21001"), "a -> b");
    assert!(tcp_echo(&b, &a, "10.213.21.2:21002"), "b -> a");
    let ping = a.exec(&["busybox", "ping", "-c1", "-W2", "10.213.21.1"]);
    assert!(ping.status.success(), "ping gateway: {:?}", ping);

    assert_eq!(mtu_of(Some(&a), "eth0"), 1400);
    assert_eq!(mtu_of(None, &host_veth), 1400);
    let d = Command::new("ip")
        .args(["-d", "link", "show", &host_veth])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&d.stdout).contains("hairpin on"),
        "hairpin flag"
    );

    // CHECK passes with the ADD result as prevResult
    let mut cc = c.clone();
    cc["prevResult"] = ra.clone();
    ferry("CHECK", "ca", Some(&a.path()), &cp.path(), &cc).expect_ok();
    // … and fails once the port's hairpin flag is changed behind our back
    Command::new("ip")
        .args([
            "link",
            "set",
            &host_veth,
            "type",
            "bridge_slave",
            "hairpin",
            "off",
        ])
        .status()
        .unwrap();
    let bad = ferry("CHECK", "ca", Some(&a.path()), &cp.path(), &cc);
    assert!(!bad.ok && bad.stdout.contains("hairpin"), "{}", bad.stdout);

    for (id, ns) in [("ca", &a), ("cb", &b)] {
        ferry("DEL", id, Some(&ns.path()), &cp.path(), &c).expect_ok();
    }
    assert!(ports_of(&br).is_empty());
    assert!(leases(&data.path(), "fbrnet-a").is_empty());
}

/// Same JSON keys and interface order as /usr/lib/cni/bridge for the same input.
#[test]
fn result_shape_matches_the_reference_plugin() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-shape",
        &br,
        &data,
        json!([[{"subnet": "10.213.22.0/24"}], [{"subnet": "fd00:213:16:22::/64"}]]),
        json!({"isDefaultGateway": true, "ipMasq": true, "dns": {"nameservers": ["10.213.22.53"]}}),
    );
    let _n = NetGuard("fbrnet-shape".into());
    let (a, b) = (TestNs::new("sa"), TestNs::new("sb"));
    let ours = ferry("ADD", "sa", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    let theirs = run(
        &Call {
            bin: REFERENCE_BRIDGE.into(),
            cmd: "ADD",
            id: "sb",
            netns: Some(&b.path()),
            ifname: "eth0",
            cni_path: &cp.path(),
            args: "",
        },
        &c,
    )
    .expect_ok()
    .json();
    fn shape(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
            _ => Value::Null,
        }
    }
    assert_eq!(
        shape(&ours),
        shape(&theirs),
        "ours: {ours}\ntheirs: {theirs}"
    );
    assert_eq!(
        ours["interfaces"][0]["name"],
        theirs["interfaces"][0]["name"]
    );
    assert_eq!(ours["interfaces"][2]["sandbox"], json!(a.path()));
    assert_eq!(ours["routes"], theirs["routes"]);
    assert_eq!(ours["dns"], theirs["dns"]);
    assert!(ours["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .starts_with("veth"));
    // identical ipMasq rules from both (chain, comment, matches), v4 and v6
    let rules = nat_rules_mentioning("fbrnet-shape");
    let of = |id: &str| {
        let mut v: Vec<String> = rules
            .iter()
            .filter(|r| r.contains(&format!("id: \\\"{id}\\\"")))
            .map(|r| {
                r.replace(&format!("id: \\\"{id}\\\""), "ID")
                    .split_whitespace()
                    .filter(|w| {
                        !w.starts_with("CNI-") && !w.starts_with("10.") && !w.starts_with("fd00")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(of("sa"), of("sb"), "{rules:#?}");
    assert_eq!(of("sa").len(), 6, "3 rules per family: {rules:#?}");
    // ADD with the reference, DEL with ferry, and the reverse
    ferry("DEL", "sb", Some(&b.path()), &cp.path(), &c).expect_ok();
    run(
        &Call {
            bin: REFERENCE_BRIDGE.into(),
            cmd: "DEL",
            id: "sa",
            netns: Some(&a.path()),
            ifname: "eth0",
            cni_path: &cp.path(),
            args: "",
        },
        &c,
    )
    .expect_ok();
    assert!(ports_of(&br).is_empty());
    assert!(leases(&data.path(), "fbrnet-shape").is_empty());
    assert!(
        nat_rules_mentioning("fbrnet-shape").is_empty(),
        "each removed the other's ipMasq rules"
    );
}

#[test]
fn dual_stack_containers_talk_over_ipv6() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-v6",
        &br,
        &data,
        json!([[{"subnet": "10.213.23.0/24"}], [{"subnet": "fd00:213:16:23::/64"}]]),
        json!({"isGateway": true}),
    );
    let (a, b) = (TestNs::new("6a"), TestNs::new("6b"));
    let r = ferry("ADD", "6a", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    assert_eq!(r["ips"].as_array().unwrap().len(), 2);
    ferry("ADD", "6b", Some(&b.path()), &cp.path(), &c).expect_ok();
    assert!(tcp_echo(&a, &b, "[fd00:213:16:23::3]:21003"), "v6 a -> b");
    assert!(tcp_echo(&a, &b, "10.213.23.3:21004"), "v4 a -> b");
    let addrs = Command::new("ip")
        .args(["-6", "addr", "show", "dev", &br])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addrs.stdout).contains("fd00:213:16:23::1/64"),
        "v6 gateway on bridge"
    );
    for (id, ns) in [("6a", &a), ("6b", &b)] {
        ferry("DEL", id, Some(&ns.path()), &cp.path(), &c).expect_ok();
    }
}

/// A namespace standing in for the outside world sees the host's address as the source.
#[test]
fn ip_masq_hides_the_container_address() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let outside = TestNs::new("out");
    let host_if = format!("fbro{}", uniq());
    let _o = HostLink(host_if.clone());
    let sh = |args: &[&str]| {
        assert!(
            Command::new("ip").args(args).status().unwrap().success(),
            "ip {args:?}"
        )
    };
    sh(&[
        "link",
        "add",
        &host_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &outside.name,
    ]);
    sh(&["addr", "add", "10.213.24.1/24", "dev", &host_if]);
    sh(&["link", "set", &host_if, "up"]);
    sh(&[
        "-n",
        &outside.name,
        "addr",
        "add",
        "10.213.24.2/24",
        "dev",
        "eth0",
    ]);
    sh(&["-n", &outside.name, "link", "set", "eth0", "up"]);
    // no route back to the container subnet in `outside`: only masquerading can work

    let c = conf(
        "fbrnet-masq",
        &br,
        &data,
        v4("10.213.25.0/24"),
        json!({"isDefaultGateway": true, "ipMasq": true}),
    );
    let _n = NetGuard("fbrnet-masq".into());
    let cont = TestNs::new("mq");
    ferry("ADD", "mq1", Some(&cont.path()), &cp.path(), &c).expect_ok();
    assert!(
        !nat_rules_mentioning("id: \\\"mq1\\\"").is_empty(),
        "masq rules installed"
    );

    let listener = outside
        .netns()
        .run(|| std::net::TcpListener::bind("10.213.24.2:21005"))
        .unwrap()
        .unwrap();
    let seen = std::thread::spawn(move || listener.accept().map(|(_, peer)| peer.ip().to_string()));
    let target = "10.213.24.2:21005".parse().unwrap();
    let conn = cont
        .netns()
        .run(move || std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)))
        .unwrap();
    assert!(conn.is_ok(), "container reaches the outside: {conn:?}");
    assert_eq!(seen.join().unwrap().unwrap(), "10.213.24.1");
    drop(conn);

    // DEL after the netns is gone still removes the rules (the reference leaks them)
    let mut cont = cont;
    cont.delete();
    ferry("DEL", "mq1", Some(&cont.path()), &cp.path(), &c).expect_ok();
    assert!(
        nat_rules_mentioning("id: \\\"mq1\\\"").is_empty(),
        "masq rules removed"
    );
    assert!(leases(&data.path(), "fbrnet-masq").is_empty());
    eventually("host veth gone with the netns", || ports_of(&br).is_empty());
}

/// web on frontend, db on backend, api on both: api reaches both, web cannot reach db.
#[test]
fn isolate_three_tier() {
    let cp = CniPath::new();
    let (fb, bb) = (format!("fbrf{}", uniq()), format!("fbrb{}", uniq()));
    let (_gf, _gb) = (HostLink(fb.clone()), HostLink(bb.clone()));
    let (df, db_) = (TempDir::new("df"), TempDir::new("db"));
    let front = conf(
        "fbrfrontend",
        &fb,
        &df,
        v4("10.213.26.0/24"),
        json!({"isDefaultGateway": true, "isolate": true}),
    );
    let back = conf(
        "fbrbackend",
        &bb,
        &db_,
        v4("10.213.27.0/24"),
        json!({"isDefaultGateway": true, "isolate": true}),
    );
    let (web, db, api) = (TestNs::new("web"), TestNs::new("db"), TestNs::new("api"));
    ferry("ADD", "web", Some(&web.path()), &cp.path(), &front).expect_ok(); // 10.213.26.2
    ferry("ADD", "db", Some(&db.path()), &cp.path(), &back).expect_ok(); // 10.213.27.2
    ferry("ADD", "api", Some(&api.path()), &cp.path(), &front).expect_ok(); // 10.213.26.3
                                                                            // api's second interface, on the backend (no second default route: one exists)
    let mut back_api = back.clone();
    back_api["isDefaultGateway"] = json!(false);
    back_api["isGateway"] = json!(true);
    run(
        &Call {
            bin: ferry_bridge(),
            cmd: "ADD",
            id: "api",
            netns: Some(&api.path()),
            ifname: "eth1",
            cni_path: &cp.path(),
            args: "",
        },
        &back_api,
    )
    .expect_ok(); // 10.213.27.3

    assert!(tcp_echo(&api, &web, "10.213.26.2:21006"), "api -> web");
    assert!(tcp_echo(&api, &db, "10.213.27.2:21007"), "api -> db");
    assert!(
        !tcp_echo(&web, &db, "10.213.27.2:21008"),
        "web must not reach db"
    );
    assert!(
        !tcp_echo(&db, &web, "10.213.26.2:21009"),
        "db must not reach web"
    );

    for (id, ns, c, ifn) in [
        ("web", &web, &front, "eth0"),
        ("db", &db, &back, "eth0"),
        ("api", &api, &front, "eth0"),
        ("api", &api, &back_api, "eth1"),
    ] {
        run(
            &Call {
                bin: ferry_bridge(),
                cmd: "DEL",
                id,
                netns: Some(&ns.path()),
                ifname: ifn,
                cni_path: &cp.path(),
                args: "",
            },
            c,
        )
        .expect_ok();
    }
}

#[test]
fn del_after_netns_deleted_leaves_nothing() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-gone",
        &br,
        &data,
        v4("10.213.28.0/24"),
        json!({"isGateway": true, "ipMasq": true}),
    );
    let _n = NetGuard("fbrnet-gone".into());
    let mut ns = TestNs::new("gone");
    ferry("ADD", "gone1", Some(&ns.path()), &cp.path(), &c).expect_ok();
    assert_eq!(leases(&data.path(), "fbrnet-gone").len(), 1);
    ns.delete();
    ferry("DEL", "gone1", Some(&ns.path()), &cp.path(), &c).expect_ok();
    ferry("DEL", "gone1", Some(&ns.path()), &cp.path(), &c).expect_ok(); // idempotent
    ferry("DEL", "gone1", None, &cp.path(), &c).expect_ok(); // and without CNI_NETNS
                                                             // a runtime that unmounted the netns but left the empty mount point behind
    std::fs::write(ns.path(), b"").unwrap();
    let r = ferry("DEL", "gone1", Some(&ns.path()), &cp.path(), &c);
    let _ = std::fs::remove_file(ns.path());
    r.expect_ok();
    assert!(
        leases(&data.path(), "fbrnet-gone").is_empty(),
        "lease released"
    );
    assert!(
        nat_rules_mentioning("id: \\\"gone1\\\"").is_empty(),
        "no masq rule left"
    );
    eventually("no veth left on the bridge", || ports_of(&br).is_empty());
    // DEL for something never added, and with the bridge gone entirely
    Command::new("ip")
        .args(["link", "del", &br])
        .status()
        .unwrap();
    let other = TestNs::new("never");
    ferry("DEL", "never", Some(&other.path()), &cp.path(), &c).expect_ok();
}

#[test]
fn failed_add_undoes_everything() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    // the bridge already carries another address and forceAddress is off: fails after IPAM
    let c = conf(
        "fbrnet-undo",
        &br,
        &data,
        v4("10.213.29.0/24"),
        json!({"isGateway": true, "ipMasq": true}),
    );
    let _n = NetGuard("fbrnet-undo".into());
    let first = TestNs::new("u1");
    ferry("ADD", "u0", Some(&first.path()), &cp.path(), &c).expect_ok();
    ferry("DEL", "u0", Some(&first.path()), &cp.path(), &c).expect_ok();
    Command::new("ip")
        .args(["addr", "del", "10.213.29.1/24", "dev", &br])
        .status()
        .unwrap();
    assert!(Command::new("ip")
        .args(["addr", "add", "10.213.29.254/24", "dev", &br])
        .status()
        .unwrap()
        .success());
    let ns = TestNs::new("u2");
    let r = ferry("ADD", "u1", Some(&ns.path()), &cp.path(), &c);
    assert!(!r.ok, "ADD must fail: {}", r.stdout);
    assert!(
        r.stdout.contains("already has an IP address"),
        "{}",
        r.stdout
    );
    assert!(ports_of(&br).is_empty(), "veth removed");
    assert!(
        leases(&data.path(), "fbrnet-undo").is_empty(),
        "lease released"
    );
    assert!(
        nat_rules_mentioning("id: \\\"u1\\\"").is_empty(),
        "no masq rule left"
    );
    let links = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("eth0"),
        "container side removed"
    );

    // ifname already present in the netns: clear error, the existing link untouched
    Command::new("ip")
        .args([
            "-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "x0",
        ])
        .status()
        .unwrap();
    let r = ferry("ADD", "u2", Some(&ns.path()), &cp.path(), &c);
    assert!(
        !r.ok && r.stdout.contains("already exists in netns"),
        "{}",
        r.stdout
    );
    assert!(ports_of(&br).is_empty());
    assert!(leases(&data.path(), "fbrnet-undo").is_empty());
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    let (cp, data) = (CniPath::new(), TempDir::new("d"));
    let ns = TestNs::new("bad");
    // a non-bridge link already has the bridge's name
    let name = format!("fbrn{}", uniq());
    let _g = HostLink(name.clone());
    assert!(Command::new("ip")
        .args([
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p")
        ])
        .status()
        .unwrap()
        .success());
    let c = conf("fbrnet-bad", &name, &data, v4("10.213.30.0/24"), json!({}));
    let r = ferry("ADD", "b1", Some(&ns.path()), &cp.path(), &c);
    assert!(!r.ok);
    let e = r.json();
    assert!(e["msg"].as_str().unwrap().contains("not a bridge"), "{e}");
    assert!(leases(&data.path(), "fbrnet-bad").is_empty());
    // code 7 naming the key
    for (extra, key) in [
        (json!({"vlan": 5000}), "vlan"),
        (json!({"mtu": 40}), "mtu"),
        (json!({"ipMasqBackend": "ipfw"}), "ipMasqBackend"),
    ] {
        let c = conf(
            "fbrnet-bad",
            "fbrnever0",
            &data,
            v4("10.213.30.0/24"),
            extra,
        );
        let e = ferry("ADD", "b2", Some(&ns.path()), &cp.path(), &c).json();
        assert_eq!(e["code"], 7, "{e}");
        assert!(e["msg"].as_str().unwrap().contains(key), "{e}");
    }
    assert!(!host_link_exists("fbrnever0"));
    // a netns path that does not exist: error naming it, nothing created
    let c = conf(
        "fbrnet-bad",
        "fbrnever1",
        &data,
        v4("10.213.30.0/24"),
        json!({}),
    );
    let e = ferry(
        "ADD",
        "b3",
        Some("/var/run/netns/fbr-missing-ns"),
        &cp.path(),
        &c,
    )
    .json();
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("/var/run/netns/fbr-missing-ns"),
        "{e}"
    );
    assert!(!host_link_exists("fbrnever1"));
    assert!(leases(&data.path(), "fbrnet-bad").is_empty());
}

#[test]
fn fifty_parallel_adds_into_one_bridge() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-par",
        &br,
        &data,
        v4("10.213.31.0/24"),
        json!({"isGateway": true}),
    );
    let nss: Vec<TestNs> = (0..50).map(|_| TestNs::new("p")).collect();
    std::thread::scope(|s| {
        for (i, ns) in nss.iter().enumerate() {
            let (c, cp) = (&c, &cp);
            s.spawn(move || {
                ferry("ADD", &format!("p{i}"), Some(&ns.path()), &cp.path(), c).expect_ok();
            });
        }
    });
    assert_eq!(ports_of(&br).len(), 50);
    assert_eq!(leases(&data.path(), "fbrnet-par").len(), 50);
    std::thread::scope(|s| {
        for (i, ns) in nss.iter().enumerate() {
            let (c, cp) = (&c, &cp);
            s.spawn(move || {
                ferry("DEL", &format!("p{i}"), Some(&ns.path()), &cp.path(), c).expect_ok();
            });
        }
    });
    assert!(ports_of(&br).is_empty());
    assert!(leases(&data.path(), "fbrnet-par").is_empty());
}

#[test]
fn sigkill_during_add_then_del_leaves_nothing() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-kill",
        &br,
        &data,
        v4("10.213.18.0/24"),
        json!({"isGateway": true, "ipMasq": true}),
    );
    let _n = NetGuard("fbrnet-kill".into());
    for (i, delay_us) in [0u64, 2000, 5000, 10000, 20000].into_iter().enumerate() {
        let ns = TestNs::new("k");
        let id = format!("k{i}");
        let mut child = Command::new(ferry_bridge())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &id)
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(c.to_string().as_bytes())
                .unwrap();
        }
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill(); // SIGKILL, by our own child's PID
        let _ = child.wait();
        ferry("DEL", &id, Some(&ns.path()), &cp.path(), &c).expect_ok();
        assert!(
            ports_of(&br).is_empty(),
            "veth left after kill at {delay_us}us"
        );
        assert!(
            nat_rules_mentioning(&format!("id: \\\"{id}\\\"")).is_empty(),
            "rule left after kill at {delay_us}us"
        );
    }
    // a killed IPAM exec may leave its reservation only if host-local itself was killed
    // mid-write; DEL released everything it was told about
    assert!(leases(&data.path(), "fbrnet-kill").is_empty());
}

#[test]
fn gc_removes_masq_rules_of_attachments_not_listed() {
    let (br, cp, data) = (format!("fbrt{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let mut c = conf(
        "fbrnet-gc",
        &br,
        &data,
        v4("10.213.17.0/24"),
        json!({"ipMasq": true}),
    );
    let _n = NetGuard("fbrnet-gc".into());
    c["cniVersion"] = json!("1.1.0");
    let (a, b) = (TestNs::new("ga"), TestNs::new("gb"));
    ferry("ADD", "ga", Some(&a.path()), &cp.path(), &c).expect_ok();
    ferry("ADD", "gb", Some(&b.path()), &cp.path(), &c).expect_ok();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ga", "ifname": "eth0"}]);
    run(
        &Call {
            bin: ferry_bridge(),
            cmd: "GC",
            id: "",
            netns: None,
            ifname: "",
            cni_path: &cp.path(),
            args: "",
        },
        &gc,
    )
    .expect_ok();
    assert!(
        !nat_rules_mentioning("id: \\\"ga\\\"").is_empty(),
        "valid attachment kept"
    );
    assert!(
        nat_rules_mentioning("id: \\\"gb\\\"").is_empty(),
        "stale attachment removed"
    );
    for (id, ns) in [("ga", &a), ("gb", &b)] {
        ferry("DEL", id, Some(&ns.path()), &cp.path(), &c).expect_ok();
    }
    assert!(nat_rules_mentioning("fbrnet-gc").is_empty());
}
