//! The less common config keys, each against the real kernel, each in its own throw-away
//! "host" namespace.

mod common;

use common::*;
use serde_json::{json, Value};

fn conf(name: &str, bridge: &str, data: &TempDir, subnet: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": subnet}]]},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn gc_call(cni_path: &str) -> Call<'_> {
    Call {
        bin: ferry_bridge(),
        cmd: "GC",
        id: "",
        netns: None,
        ifname: "",
        cni_path,
        args: "",
    }
}

const MASQ_CHAIN: [&str; 6] = [
    "nft",
    "list",
    "chain",
    "inet",
    "cni_plugins_masquerade",
    "masq_checks",
];

#[test]
fn nftables_ipmasq_backend_installs_and_removes_its_rule() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-nft",
        "fbrbr0",
        &data,
        "10.213.20.0/24",
        json!({"ipMasq": true, "ipMasqBackend": "nftables"}),
    );
    let ns = TestNs::new("nft");
    let r = h
        .ferry("ADD", "nft1", Some(&ns.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    let listing = h.sh(&MASQ_CHAIN);
    assert!(
        listing.contains("net: fbrnet-nft, if: eth0, id: nft1"),
        "{listing}"
    );
    assert!(
        listing.contains("ip saddr 10.213.20.2 ip daddr != 10.213.20.0/24 masquerade"),
        "{listing}"
    );
    assert!(
        h.nat_rules_mentioning("id: \\\"nft1\\\"").is_empty(),
        "no iptables rules with the nft backend"
    );
    let mut cc = c.clone();
    cc["prevResult"] = r;
    h.ferry("CHECK", "nft1", Some(&ns.path()), &cp.path(), &cc)
        .expect_ok();
    h.ferry("DEL", "nft1", Some(&ns.path()), &cp.path(), &c)
        .expect_ok();
    assert!(!h.sh(&MASQ_CHAIN).contains("id: nft1"));
    assert!(
        !h.ferry("CHECK", "nft1", Some(&ns.path()), &cp.path(), &cc)
            .ok
    );
}

#[test]
fn gc_with_the_nftables_backend_keeps_only_valid_attachments() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-nftgc",
        "fbrbr0",
        &data,
        "10.213.27.0/24",
        json!({"ipMasq": true, "ipMasqBackend": "nftables"}),
    );
    let (a, b) = (TestNs::new("na"), TestNs::new("nb"));
    h.ferry("ADD", "nga", Some(&a.path()), &cp.path(), &c)
        .expect_ok();
    h.ferry("ADD", "ngb", Some(&b.path()), &cp.path(), &c)
        .expect_ok();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ngb", "ifname": "eth0"}]);
    h.run(&gc_call(&cp.path()), &gc).expect_ok();
    let listing = h.sh(&MASQ_CHAIN);
    assert!(!listing.contains("id: nga"), "{listing}");
    assert!(listing.contains("id: ngb"), "{listing}");
    for (id, ns) in [("nga", &a), ("ngb", &b)] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), &c)
            .expect_ok();
    }
    assert!(!h.sh(&MASQ_CHAIN).contains("fbrnet-nftgc"));
}

#[test]
fn macspoofchk_drops_frames_with_another_source_mac() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-spoof",
        "fbrbr0",
        &data,
        "10.213.21.0/24",
        json!({"macspoofchk": true}),
    );
    let (a, b) = (TestNs::new("sa"), TestNs::new("sb"));
    let ra = h
        .ferry("ADD", "spa", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    h.ferry("ADD", "spb", Some(&b.path()), &cp.path(), &c)
        .expect_ok();
    assert!(tcp_echo(&a, &b, "10.213.21.3:21101"), "real MAC passes");
    let mut cc = c.clone();
    cc["prevResult"] = ra;
    h.ferry("CHECK", "spa", Some(&a.path()), &cp.path(), &cc)
        .expect_ok();
    assert!(a
        .exec(&["ip", "link", "set", "eth0", "address", "0a:58:0a:d5:15:99"])
        .status
        .success());
    a.exec(&["ip", "neigh", "flush", "all"]);
    b.exec(&["ip", "neigh", "flush", "all"]);
    assert!(
        !tcp_echo(&a, &b, "10.213.21.3:21102"),
        "spoofed MAC must be dropped"
    );
    for (id, ns) in [("spa", &a), ("spb", &b)] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), &c)
            .expect_ok();
    }
    let listing = h.sh(&["nft", "list", "table", "bridge", "nat"]);
    assert!(!listing.contains("macspoofchk-sp"), "{listing}");
}

#[test]
fn vlan_access_ports_separate_vlans() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c10 = conf(
        "fbrnet-vlan",
        "fbrbr0",
        &data,
        "10.213.22.0/24",
        json!({"vlan": 10, "preserveDefaultVlan": false}),
    );
    let c20 = conf(
        "fbrnet-vlan",
        "fbrbr0",
        &data,
        "10.213.22.0/24",
        json!({"vlan": 20}),
    );
    let (a, b, x) = (TestNs::new("va"), TestNs::new("vb"), TestNs::new("vx"));
    if !kernel_has_vlan_filtering() {
        // Kernels without CONFIG_BRIDGE_VLAN_FILTERING: a clear error and no residue.
        let r = h.ferry("ADD", "va", Some(&a.path()), &cp.path(), &c10);
        assert!(!r.ok);
        assert!(r.stdout.contains("VLAN filtering"), "{}", r.stdout);
        assert!(!h.link_exists("fbrbr0"), "no bridge left");
        assert!(
            leases(&data.path(), "fbrnet-vlan").is_empty(),
            "lease released"
        );
        return;
    }
    let ra = h
        .ferry("ADD", "va", Some(&a.path()), &cp.path(), &c10)
        .expect_ok()
        .json();
    h.ferry("ADD", "vb", Some(&b.path()), &cp.path(), &c10)
        .expect_ok();
    h.ferry("ADD", "vx", Some(&x.path()), &cp.path(), &c20)
        .expect_ok(); // 10.213.22.4
    let veth = ra["interfaces"][1]["name"].as_str().unwrap();
    let vlans: Value =
        serde_json::from_str(&h.sh(&["bridge", "-j", "vlan", "show", "dev", veth])).unwrap();
    let entries = vlans[0]["vlans"].as_array().unwrap();
    assert_eq!(
        entries.len(),
        1,
        "only vlan 10 (default vlan removed): {vlans}"
    );
    assert_eq!(entries[0]["vlan"], 10);
    assert!(entries[0]["flags"].to_string().contains("PVID"), "{vlans}");
    assert!(tcp_echo(&a, &b, "10.213.22.3:21103"), "same vlan");
    assert!(!tcp_echo(&a, &x, "10.213.22.4:21104"), "other vlan");
    for (id, ns, c) in [("va", &a, &c10), ("vb", &b, &c10), ("vx", &x, &c20)] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), c)
            .expect_ok();
    }
}

#[test]
fn port_isolation_blocks_ports_from_each_other_not_from_the_gateway() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-piso",
        "fbrbr0",
        &data,
        "10.213.23.0/24",
        json!({"portIsolation": true, "isGateway": true}),
    );
    let (a, b) = (TestNs::new("ia"), TestNs::new("ib"));
    h.ferry("ADD", "ia", Some(&a.path()), &cp.path(), &c)
        .expect_ok();
    h.ferry("ADD", "ib", Some(&b.path()), &cp.path(), &c)
        .expect_ok();
    assert!(!tcp_echo(&a, &b, "10.213.23.3:21105"), "isolated ports");
    let ping = a.exec(&["busybox", "ping", "-c1", "-W2", "10.213.23.1"]);
    assert!(ping.status.success(), "gateway reachable");
    for (id, ns) in [("ia", &a), ("ib", &b)] {
        h.ferry("DEL", id, Some(&ns.path()), &cp.path(), &c)
            .expect_ok();
    }
}

#[test]
fn disabled_container_interface_stays_down_with_its_address() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-down",
        "fbrbr0",
        &data,
        "10.213.24.0/24",
        json!({"disableContainerInterface": true}),
    );
    let ns = TestNs::new("dn");
    h.ferry("ADD", "dn", Some(&ns.path()), &cp.path(), &c)
        .expect_ok();
    let link = ns.sh(&["ip", "-o", "link", "show", "eth0"]);
    assert!(!link.contains(",UP"), "{link}");
    assert!(ns
        .sh(&["ip", "-o", "addr", "show", "eth0"])
        .contains("10.213.24.2/24"));
    h.ferry("DEL", "dn", Some(&ns.path()), &cp.path(), &c)
        .expect_ok();
}

#[test]
fn enabledad_runs_duplicate_address_detection_before_returning() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-dad",
        "fbrbr0",
        &data,
        "fd00:213:16:25::/64",
        json!({"enabledad": true}),
    );
    let ns = TestNs::new("dad");
    h.ferry("ADD", "dad", Some(&ns.path()), &cp.path(), &c)
        .expect_ok();
    let addr = ns.sh(&["ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("fd00:213:16:25::2/64"), "{addr}");
    assert!(
        !addr.contains("tentative") && !addr.contains("nodad"),
        "{addr}"
    );
    h.ferry("DEL", "dad", Some(&ns.path()), &cp.path(), &c)
        .expect_ok();
}

#[test]
fn status_and_gc_delegate_to_ipam() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf(
        "fbrnet-status",
        "fbrbr0",
        &data,
        "10.213.26.0/24",
        json!({}),
    );
    let call = |cmd: &str, conf: &Value| {
        h.run(
            &Call {
                cmd,
                ..gc_call(&cp.path())
            },
            conf,
        )
    };
    call("STATUS", &c).expect_ok();
    // an IPAM plugin that is not on CNI_PATH makes STATUS and GC fail: proof they asked it
    let mut missing = c.clone();
    missing["ipam"]["type"] = json!("fbr-no-such-ipam");
    assert!(!call("STATUS", &missing).ok);
    missing["cni.dev/valid-attachments"] = json!([]);
    assert!(!call("GC", &missing).ok);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    call("GC", &gc).expect_ok();
    // layer 2 only: nothing to ask
    let l2 = json!({"cniVersion": "1.1.0", "name": "fbrnet-status", "type": "bridge", "bridge": "fbrbr0"});
    call("STATUS", &l2).expect_ok();
    assert!(!h.link_exists("fbrbr0"));
}

/// Probes, in a throw-away namespace, whether bridges can filter VLANs on this kernel.
fn kernel_has_vlan_filtering() -> bool {
    let ns = TestNs::new("vprobe");
    ns.exec(&[
        "ip",
        "link",
        "add",
        "fbrprobe",
        "type",
        "bridge",
        "vlan_filtering",
        "1",
    ])
    .status
    .success()
}

#[test]
fn container_mac_from_runtime_config_then_args_then_cni_args() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let mut c = conf("fbrnet-mac", "fbrbr0", &data, "10.213.29.0/24", json!({}));
    let (a, b) = (TestNs::new("ma"), TestNs::new("mb"));
    // CNI_ARGS alone
    let (ap, bp, cpp) = (a.path(), b.path(), cp.path());
    let with_args = |cmd, id, netns| Call {
        bin: ferry_bridge(),
        cmd,
        id,
        netns: Some(netns),
        ifname: "eth0",
        cni_path: &cpp,
        args: "IgnoreUnknown=1;MAC=0a:58:0a:d5:1d:01;K8S_POD_NAME=x",
    };
    let r = h.run(&with_args("ADD", "ma", &ap), &c).expect_ok().json();
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:d5:1d:01");
    assert!(a
        .sh(&["ip", "link", "show", "eth0"])
        .contains("0a:58:0a:d5:1d:01"));
    // runtimeConfig.mac wins over args.cni.mac and CNI_ARGS
    c["args"] = json!({"cni": {"mac": "0a:58:0a:d5:1d:02"}});
    c["runtimeConfig"] = json!({"mac": "0a:58:0a:d5:1d:03"});
    let r = h.run(&with_args("ADD", "mb", &bp), &c).expect_ok().json();
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:d5:1d:03");
    assert!(b
        .sh(&["ip", "link", "show", "eth0"])
        .contains("0a:58:0a:d5:1d:03"));
    // an unknown CNI_ARGS key without IgnoreUnknown is refused before anything is made
    let ns = TestNs::new("mc");
    let ncp = ns.path();
    let bad = h.run(
        &Call {
            args: "FOO=bar",
            ..with_args("ADD", "mc", &ncp)
        },
        &c,
    );
    assert!(!bad.ok);
    assert!(!ns.sh(&["ip", "-o", "link"]).contains("eth0"));
    h.run(&with_args("DEL", "ma", &ap), &c).expect_ok();
    h.run(&with_args("DEL", "mb", &bp), &c).expect_ok();
    assert!(leases(&data.path(), "fbrnet-mac").is_empty());
}
