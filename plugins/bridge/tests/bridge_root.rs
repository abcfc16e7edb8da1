//! The bridge plugin as a runtime runs it: real namespaces, real traffic, real firewall.
//! Each test runs the plugin inside its own throw-away "host" namespace (so bridges,
//! forwarding sysctls and firewall rules never reach the real host) and uses its own
//! subnet inside 10.213.16.0/20 / fd00:213:16::/56; everything goes with the namespaces.

mod common;

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
    json!([[{ "subnet": subnet }]])
}

fn mtu_of(out: String) -> u32 {
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["mtu"].as_u64().unwrap() as u32
}

fn reference(h: &Host, cmd: &str, id: &str, ns: &str, cp: &CniPath, c: &Value) -> Run {
    h.run(
        &Call {
            bin: REFERENCE_BRIDGE.into(),
            cmd,
            id,
            netns: Some(ns),
            ifname: "eth0",
            cni_path: &cp.path(),
            args: "",
        },
        c,
    )
}

#[test]
fn two_containers_reach_each_other_and_the_gateway() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-a",
        "fbrbr0",
        &data,
        v4("10.213.21.0/24"),
        json!({"isGateway": true, "mtu": 1400, "hairpinMode": true}),
    );
    let (a, b) = (TestNs::new("a"), TestNs::new("b"));
    let ra = h
        .ferry("ADD", "ca", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    h.ferry("ADD", "cb", Some(&b.path()), &cp.path(), &c)
        .expect_ok();
    let host_veth = ra["interfaces"][1]["name"].as_str().unwrap().to_string();

    assert!(tcp_echo(&a, &b, "10.213.21.3:21001"), "a -> b");
    assert!(tcp_echo(&b, &a, "10.213.21.2:21002"), "b -> a");
    let ping = a.exec(&["busybox", "ping", "-c1", "-W2", "10.213.21.1"]);
    assert!(ping.status.success(), "ping gateway: {:?}", ping);

    assert_eq!(mtu_of(a.sh(&["ip", "-j", "link", "show", "eth0"])), 1400);
    assert_eq!(
        mtu_of(h.sh(&["ip", "-j", "link", "show", &host_veth])),
        1400
    );
    assert!(
        h.sh(&["ip", "-d", "link", "show", &host_veth])
            .contains("hairpin on"),
        "hairpin flag"
    );

    // CHECK passes with the ADD result as prevResult …
    let mut cc = c.clone();
    cc["prevResult"] = ra.clone();
    h.ferry("CHECK", "ca", Some(&a.path()), &cp.path(), &cc)
        .expect_ok();
    // … and fails once the port's hairpin flag is changed behind our back
    h.ip(&[
        "link",
        "set",
        &host_veth,
        "type",
        "bridge_slave",
        "hairpin",
        "off",
    ]);
    let bad = h.ferry("CHECK", "ca", Some(&a.path()), &cp.path(), &cc);
    assert!(!bad.ok && bad.stdout.contains("hairpin"), "{}", bad.stdout);

    for (id, ns) in [("ca", &a), ("cb", &b)] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), &c)
            .expect_ok();
    }
    assert!(h.ports_of("fbrbr0").is_empty());
    assert!(leases(&data.path(), "fbrnet-a").is_empty());
}

/// Same JSON keys, interface order and ipMasq rules as /usr/lib/cni/bridge for the same
/// input; and each implementation's DEL removes what the other's ADD made.
#[test]
fn result_shape_and_rules_match_the_reference_plugin() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-shape",
        "fbrbr0",
        &data,
        json!([[{"subnet": "10.213.22.0/24"}], [{"subnet": "fd00:213:16:22::/64"}]]),
        json!({"isDefaultGateway": true, "ipMasq": true, "dns": {"nameservers": ["10.213.22.53"]}}),
    );
    let (a, b) = (TestNs::new("sa"), TestNs::new("sb"));
    let ours = h
        .ferry("ADD", "sa", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    let theirs = reference(&h, "ADD", "sb", &b.path(), &cp, &c)
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

    // identical ipMasq rules (chain, comment, matches), v4 and v6
    let rules = h.nat_rules_mentioning("fbrnet-shape");
    let of = |id: &str| {
        let tag = format!("id: \\\"{id}\\\"");
        let mut v: Vec<String> = rules
            .iter()
            .filter(|r| r.contains(&tag))
            .map(|r| {
                r.replace(&tag, "ID")
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
    h.ferry("DEL", "sb", Some(&b.path()), &cp.path(), &c)
        .expect_ok();
    reference(&h, "DEL", "sa", &a.path(), &cp, &c).expect_ok();
    assert!(h.ports_of("fbrbr0").is_empty());
    assert!(leases(&data.path(), "fbrnet-shape").is_empty());
    assert!(
        h.nat_rules_mentioning("fbrnet-shape").is_empty(),
        "each removed the other's rules"
    );
}

#[test]
fn dual_stack_containers_talk_over_ipv6() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-v6",
        "fbrbr0",
        &data,
        json!([[{"subnet": "10.213.23.0/24"}], [{"subnet": "fd00:213:16:23::/64"}]]),
        json!({"isGateway": true}),
    );
    let (a, b) = (TestNs::new("6a"), TestNs::new("6b"));
    let r = h
        .ferry("ADD", "6a", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    assert_eq!(r["ips"].as_array().unwrap().len(), 2);
    h.ferry("ADD", "6b", Some(&b.path()), &cp.path(), &c)
        .expect_ok();
    assert!(tcp_echo(&a, &b, "[fd00:213:16:23::3]:21003"), "v6 a -> b");
    assert!(tcp_echo(&a, &b, "10.213.23.3:21004"), "v4 a -> b");
    assert!(
        h.sh(&["ip", "-6", "addr", "show", "dev", "fbrbr0"])
            .contains("fd00:213:16:23::1/64"),
        "v6 gateway on bridge"
    );
    assert_eq!(
        h.sh(&["cat", "/proc/sys/net/ipv6/conf/all/forwarding"])
            .trim(),
        "1"
    );
    for (id, ns) in [("6a", &a), ("6b", &b)] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), &c)
            .expect_ok();
    }
}

/// A namespace standing in for the outside world sees the host's address as the source.
#[test]
fn ip_masq_hides_the_container_address() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let outside = TestNs::new("out");
    h.ip(&[
        "link",
        "add",
        "fbrup",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &outside.name,
    ]);
    h.ip(&["addr", "add", "10.213.24.1/24", "dev", "fbrup"]);
    h.ip(&["link", "set", "fbrup", "up"]);
    assert!(outside
        .exec(&["ip", "addr", "add", "10.213.24.2/24", "dev", "eth0"])
        .status
        .success());
    assert!(outside
        .exec(&["ip", "link", "set", "eth0", "up"])
        .status
        .success());
    // no route back to the container subnet in `outside`: only masquerading can work

    let c = conf(
        "fbrnet-masq",
        "fbrbr0",
        &data,
        v4("10.213.25.0/24"),
        json!({"isDefaultGateway": true, "ipMasq": true}),
    );
    let mut cont = TestNs::new("mq");
    h.ferry("ADD", "mq1", Some(&cont.path()), &cp.path(), &c)
        .expect_ok();
    assert!(
        !h.nat_rules_mentioning("id: \\\"mq1\\\"").is_empty(),
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
    cont.delete();
    h.ferry("DEL", "mq1", Some(&cont.path()), &cp.path(), &c)
        .expect_ok();
    assert!(
        h.nat_rules_mentioning("id: \\\"mq1\\\"").is_empty(),
        "masq rules removed"
    );
    assert!(leases(&data.path(), "fbrnet-masq").is_empty());
    eventually("host veth gone with the netns", || {
        h.ports_of("fbrbr0").is_empty()
    });
}

/// web on frontend, db on backend, api on both: api reaches both, web cannot reach db.
#[test]
fn isolate_three_tier() {
    let (h, cp) = (Host::new(), CniPath::new());
    let (df, db_) = (TempDir::new("df"), TempDir::new("db"));
    let front = conf(
        "fbrfrontend",
        "fbrfront",
        &df,
        v4("10.213.26.0/24"),
        json!({"isDefaultGateway": true, "isolate": true}),
    );
    let back = conf(
        "fbrbackend",
        "fbrback",
        &db_,
        v4("10.213.27.0/24"),
        json!({"isDefaultGateway": true, "isolate": true}),
    );
    let (web, db, api) = (TestNs::new("web"), TestNs::new("db"), TestNs::new("api"));
    // a control network without isolate, routed like the others
    let dc = TempDir::new("dc");
    let open = conf(
        "fbropen",
        "fbropen",
        &dc,
        v4("10.213.28.0/24"),
        json!({"isDefaultGateway": true}),
    );
    let other = TestNs::new("oth");

    h.ferry("ADD", "web", Some(&web.path()), &cp.path(), &front)
        .expect_ok(); // 10.213.26.2
    h.ferry("ADD", "db", Some(&db.path()), &cp.path(), &back)
        .expect_ok(); // 10.213.27.2
    h.ferry("ADD", "api", Some(&api.path()), &cp.path(), &front)
        .expect_ok(); // 10.213.26.3
    h.ferry("ADD", "oth", Some(&other.path()), &cp.path(), &open)
        .expect_ok(); // 10.213.28.2
                      // api's second interface, on the backend (no second default route: one exists)
    let mut back_api = back.clone();
    back_api["isDefaultGateway"] = json!(false);
    back_api["isGateway"] = json!(true);
    let eth1 = |cmd| Call {
        bin: ferry_bridge(),
        cmd,
        id: "api",
        netns: None,
        ifname: "eth1",
        cni_path: "",
        args: "",
    };
    let api_path = api.path();
    let cpath = cp.path();
    h.run(
        &Call {
            netns: Some(&api_path),
            cni_path: &cpath,
            ..eth1("ADD")
        },
        &back_api,
    )
    .expect_ok(); // 10.213.27.3

    assert!(tcp_echo(&api, &web, "10.213.26.2:21006"), "api -> web");
    assert!(tcp_echo(&api, &db, "10.213.27.2:21007"), "api -> db");
    assert!(
        tcp_echo(&other, &web, "10.213.26.2:21010"),
        "routing between bridges works (control)"
    );
    assert!(
        !tcp_echo(&web, &db, "10.213.27.2:21008"),
        "web must not reach db"
    );
    assert!(
        !tcp_echo(&db, &web, "10.213.26.2:21009"),
        "db must not reach web"
    );

    for (id, ns, c) in [
        ("web", &web, &front),
        ("db", &db, &back),
        ("api", &api, &front),
        ("oth", &other, &open),
    ] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), c)
            .expect_ok();
    }
    h.run(
        &Call {
            netns: Some(&api_path),
            cni_path: &cpath,
            ..eth1("DEL")
        },
        &back_api,
    )
    .expect_ok();

    // the rules stay while the bridges exist; GC removes them once the bridges are gone
    assert!(h
        .sh(&["iptables", "-t", "mangle", "-S", "FERRY-ISOLATION-2"])
        .contains("fbrfront"));
    h.ip(&["link", "del", "fbrfront"]);
    h.ip(&["link", "del", "fbrback"]);
    let mut gc = front.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    h.run(
        &Call {
            bin: ferry_bridge(),
            cmd: "GC",
            id: "",
            netns: None,
            ifname: "",
            cni_path: &cpath,
            args: "",
        },
        &gc,
    )
    .expect_ok();
    for tool in ["iptables", "ip6tables"] {
        assert!(
            !h.sh(&[tool, "-t", "mangle", "-S"])
                .contains("FERRY-ISOLATION"),
            "{tool}: isolation chains removed"
        );
    }
}

#[test]
fn del_after_netns_deleted_leaves_nothing() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-gone",
        "fbrbr0",
        &data,
        v4("10.213.28.0/24"),
        json!({"isGateway": true, "ipMasq": true}),
    );
    let mut ns = TestNs::new("gone");
    h.ferry("ADD", "gone1", Some(&ns.path()), &cp.path(), &c)
        .expect_ok();
    assert_eq!(leases(&data.path(), "fbrnet-gone").len(), 1);
    ns.delete();
    h.ferry("DEL", "gone1", Some(&ns.path()), &cp.path(), &c)
        .expect_ok();
    h.ferry("DEL", "gone1", Some(&ns.path()), &cp.path(), &c)
        .expect_ok(); // idempotent
    h.ferry("DEL", "gone1", None, &cp.path(), &c).expect_ok(); // and without CNI_NETNS
                                                               // a runtime that unmounted the netns but left the empty mount point behind
    std::fs::write(ns.path(), b"").unwrap();
    let r = h.ferry("DEL", "gone1", Some(&ns.path()), &cp.path(), &c);
    let _ = std::fs::remove_file(ns.path());
    r.expect_ok();
    assert!(
        leases(&data.path(), "fbrnet-gone").is_empty(),
        "lease released"
    );
    assert!(
        h.nat_rules_mentioning("id: \\\"gone1\\\"").is_empty(),
        "no masq rule left"
    );
    eventually("no veth left on the bridge", || {
        h.ports_of("fbrbr0").is_empty()
    });
    // DEL for something never added, and with the bridge gone entirely
    h.ip(&["link", "del", "fbrbr0"]);
    let other = TestNs::new("never");
    h.ferry("DEL", "never", Some(&other.path()), &cp.path(), &c)
        .expect_ok();
}

#[test]
fn failed_add_undoes_everything() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    // the bridge already carries another address and forceAddress is off: fails after IPAM
    let c = conf(
        "fbrnet-undo",
        "fbrbr0",
        &data,
        v4("10.213.29.0/24"),
        json!({"isGateway": true, "ipMasq": true}),
    );
    let first = TestNs::new("u1");
    h.ferry("ADD", "u0", Some(&first.path()), &cp.path(), &c)
        .expect_ok();
    h.ferry("DEL", "u0", Some(&first.path()), &cp.path(), &c)
        .expect_ok();
    h.ip(&["addr", "del", "10.213.29.1/24", "dev", "fbrbr0"]);
    h.ip(&["addr", "add", "10.213.29.254/24", "dev", "fbrbr0"]);
    let ns = TestNs::new("u2");
    let r = h.ferry("ADD", "u1", Some(&ns.path()), &cp.path(), &c);
    assert!(!r.ok, "ADD must fail: {}", r.stdout);
    assert!(
        r.stdout.contains("already has an IP address"),
        "{}",
        r.stdout
    );
    assert!(h.ports_of("fbrbr0").is_empty(), "veth removed");
    assert!(
        leases(&data.path(), "fbrnet-undo").is_empty(),
        "lease released"
    );
    assert!(
        h.nat_rules_mentioning("id: \\\"u1\\\"").is_empty(),
        "no masq rule left"
    );
    assert!(
        !ns.sh(&["ip", "-o", "link"]).contains("eth0"),
        "container side removed"
    );

    // ifname already present in the netns: clear error, the existing link untouched
    assert!(ns
        .exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
        .status
        .success());
    let r = h.ferry("ADD", "u2", Some(&ns.path()), &cp.path(), &c);
    assert!(
        !r.ok && r.stdout.contains("already exists in netns"),
        "{}",
        r.stdout
    );
    assert!(
        ns.sh(&["ip", "-o", "link"]).contains("eth0@x0"),
        "existing link kept"
    );
    assert!(h.ports_of("fbrbr0").is_empty());
    assert!(leases(&data.path(), "fbrnet-undo").is_empty());
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let ns = TestNs::new("bad");
    // a non-bridge link already has the bridge's name
    h.ip(&[
        "link",
        "add",
        "fbrnotbr",
        "type",
        "veth",
        "peer",
        "name",
        "fbrnotbr1",
    ]);
    let c = conf(
        "fbrnet-bad",
        "fbrnotbr",
        &data,
        v4("10.213.30.0/24"),
        json!({}),
    );
    let r = h.ferry("ADD", "b1", Some(&ns.path()), &cp.path(), &c);
    assert!(!r.ok);
    let e = r.json();
    assert!(e["msg"].as_str().unwrap().contains("not a bridge"), "{e}");
    assert_eq!(e["code"], 105, "{e}");
    assert!(leases(&data.path(), "fbrnet-bad").is_empty());
    assert!(!ns.sh(&["ip", "-o", "link"]).contains("eth0"));
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
        let e = h
            .ferry("ADD", "b2", Some(&ns.path()), &cp.path(), &c)
            .json();
        assert_eq!(e["code"], 7, "{e}");
        assert!(e["msg"].as_str().unwrap().contains(key), "{e}");
    }
    assert!(!h.link_exists("fbrnever0"));
    // a netns path that does not exist: error naming it, nothing created
    let c = conf(
        "fbrnet-bad",
        "fbrnever1",
        &data,
        v4("10.213.30.0/24"),
        json!({}),
    );
    let e = h
        .ferry(
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
    assert!(!h.link_exists("fbrnever1"));
    assert!(leases(&data.path(), "fbrnet-bad").is_empty());
}

#[test]
fn fifty_parallel_adds_into_one_bridge() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-par",
        "fbrbr0",
        &data,
        v4("10.213.31.0/24"),
        json!({"isGateway": true}),
    );
    let nss: Vec<TestNs> = (0..50).map(|_| TestNs::new("p")).collect();
    for cmd in ["ADD", "DEL"] {
        std::thread::scope(|s| {
            for (i, ns) in nss.iter().enumerate() {
                let (c, cp, h) = (&c, &cp, &h);
                s.spawn(move || {
                    h.ferry(cmd, &format!("p{i}"), Some(&ns.path()), &cp.path(), c)
                        .expect_ok();
                });
            }
        });
        if cmd == "ADD" {
            assert_eq!(h.ports_of("fbrbr0").len(), 50);
            assert_eq!(leases(&data.path(), "fbrnet-par").len(), 50);
        }
    }
    assert!(h.ports_of("fbrbr0").is_empty());
    assert!(leases(&data.path(), "fbrnet-par").is_empty());
}

#[test]
fn sigkill_during_add_then_del_leaves_nothing() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-kill",
        "fbrbr0",
        &data,
        v4("10.213.18.0/24"),
        json!({"isGateway": true, "ipMasq": true}),
    );
    for (i, delay_us) in [0u64, 2000, 5000, 10000, 20000].into_iter().enumerate() {
        let ns = TestNs::new("k");
        let id = format!("k{i}");
        // `ip netns exec` execs the plugin in place: the PID we kill is the plugin's
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", h.name()])
            .arg(ferry_bridge())
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
        let _ = child.kill(); // SIGKILL, to our own child's PID
        let _ = child.wait();
        h.ferry("DEL", &id, Some(&ns.path()), &cp.path(), &c)
            .expect_ok();
        assert!(
            h.ports_of("fbrbr0").is_empty(),
            "veth left after kill at {delay_us}us"
        );
        assert!(
            h.nat_rules_mentioning(&format!("id: \\\"{id}\\\""))
                .is_empty(),
            "rule left after kill at {delay_us}us"
        );
    }
    assert!(leases(&data.path(), "fbrnet-kill").is_empty());
}

#[test]
fn gc_removes_masq_rules_of_attachments_not_listed() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let mut c = conf(
        "fbrnet-gc",
        "fbrbr0",
        &data,
        v4("10.213.17.0/24"),
        json!({"ipMasq": true}),
    );
    c["cniVersion"] = json!("1.1.0");
    let (a, b) = (TestNs::new("ga"), TestNs::new("gb"));
    h.ferry("ADD", "ga", Some(&a.path()), &cp.path(), &c)
        .expect_ok();
    h.ferry("ADD", "gb", Some(&b.path()), &cp.path(), &c)
        .expect_ok();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ga", "ifname": "eth0"}]);
    h.run(
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
        !h.nat_rules_mentioning("id: \\\"ga\\\"").is_empty(),
        "valid attachment kept"
    );
    assert!(
        h.nat_rules_mentioning("id: \\\"gb\\\"").is_empty(),
        "stale attachment removed"
    );
    for (id, ns) in [("ga", &a), ("gb", &b)] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), &c)
            .expect_ok();
    }
    assert!(h.nat_rules_mentioning("fbrnet-gc").is_empty());
}
