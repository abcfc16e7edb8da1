//! The less common config keys, each against the real kernel.

mod common;

use std::process::Command;

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

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nftables_ipmasq_backend_installs_and_removes_its_rule() {
    let (br, cp, data) = (format!("fbro{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let _n = NetGuard("fbrnet-nft".into());
    let c = conf(
        "fbrnet-nft",
        &br,
        &data,
        "10.213.20.0/24",
        json!({"ipMasq": true, "ipMasqBackend": "nftables"}),
    );
    let ns = TestNs::new("nft");
    let r = ferry("ADD", "nft1", Some(&ns.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    let listing = sh(&[
        "nft",
        "list",
        "chain",
        "inet",
        "cni_plugins_masquerade",
        "masq_checks",
    ]);
    assert!(
        listing.contains("net: fbrnet-nft, if: eth0, id: nft1"),
        "{listing}"
    );
    assert!(
        listing.contains("ip saddr 10.213.20.2 ip daddr != 10.213.20.0/24 masquerade"),
        "{listing}"
    );
    assert!(
        nat_rules_mentioning("id: \\\"nft1\\\"").is_empty(),
        "no iptables rules with the nft backend"
    );
    let mut cc = c.clone();
    cc["prevResult"] = r;
    ferry("CHECK", "nft1", Some(&ns.path()), &cp.path(), &cc).expect_ok();
    // ADD again after a DEL that lost its state must not duplicate: DEL then re-ADD
    ferry("DEL", "nft1", Some(&ns.path()), &cp.path(), &c).expect_ok();
    let listing = sh(&[
        "nft",
        "list",
        "chain",
        "inet",
        "cni_plugins_masquerade",
        "masq_checks",
    ]);
    assert!(!listing.contains("id: nft1"), "{listing}");
    let bad = ferry("CHECK", "nft1", Some(&ns.path()), &cp.path(), &cc);
    assert!(!bad.ok);
}

#[test]
fn macspoofchk_drops_frames_with_another_source_mac() {
    let (br, cp, data) = (format!("fbrs{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-spoof",
        &br,
        &data,
        "10.213.21.0/24",
        json!({"macspoofchk": true}),
    );
    let (a, b) = (TestNs::new("sa"), TestNs::new("sb"));
    let ra = ferry("ADD", "spa", Some(&a.path()), &cp.path(), &c)
        .expect_ok()
        .json();
    ferry("ADD", "spb", Some(&b.path()), &cp.path(), &c).expect_ok();
    assert!(tcp_echo(&a, &b, "10.213.21.3:21101"), "real MAC passes");
    let mut cc = c.clone();
    cc["prevResult"] = ra;
    ferry("CHECK", "spa", Some(&a.path()), &cp.path(), &cc).expect_ok();
    assert!(Command::new("ip")
        .args([
            "-n",
            &a.name,
            "link",
            "set",
            "eth0",
            "address",
            "0a:58:0a:d5:15:99"
        ])
        .status()
        .unwrap()
        .success());
    Command::new("ip")
        .args(["-n", &a.name, "neigh", "flush", "all"])
        .status()
        .unwrap();
    Command::new("ip")
        .args(["-n", &b.name, "neigh", "flush", "all"])
        .status()
        .unwrap();
    assert!(
        !tcp_echo(&a, &b, "10.213.21.3:21102"),
        "spoofed MAC must be dropped"
    );
    for (id, ns) in [("spa", &a), ("spb", &b)] {
        ferry("DEL", id, Some(&ns.path()), &cp.path(), &c).expect_ok();
    }
    let listing = sh(&["nft", "list", "table", "bridge", "nat"]);
    assert!(!listing.contains("macspoofchk-spa"), "{listing}");
}

#[test]
fn vlan_access_ports_separate_vlans() {
    let (br, cp, data) = (format!("fbrv{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c10 = conf(
        "fbrnet-vlan",
        &br,
        &data,
        "10.213.22.0/24",
        json!({"vlan": 10, "preserveDefaultVlan": false}),
    );
    let c20 = conf(
        "fbrnet-vlan",
        &br,
        &data,
        "10.213.22.0/24",
        json!({"vlan": 20}),
    );
    let (a, b, x) = (TestNs::new("va"), TestNs::new("vb"), TestNs::new("vx"));
    if !kernel_has_vlan_filtering() {
        // Kernels without CONFIG_BRIDGE_VLAN_FILTERING: a clear error and no residue.
        let r = ferry("ADD", "va", Some(&a.path()), &cp.path(), &c10);
        assert!(!r.ok);
        assert!(r.stdout.contains("VLAN filtering"), "{}", r.stdout);
        assert!(!host_link_exists(&br), "no bridge left");
        assert!(
            leases(&data.path(), "fbrnet-vlan").is_empty(),
            "lease released"
        );
        return;
    }
    let ra = ferry("ADD", "va", Some(&a.path()), &cp.path(), &c10)
        .expect_ok()
        .json();
    ferry("ADD", "vb", Some(&b.path()), &cp.path(), &c10).expect_ok();
    ferry("ADD", "vx", Some(&x.path()), &cp.path(), &c20).expect_ok(); // 10.213.22.4
    let veth = ra["interfaces"][1]["name"].as_str().unwrap();
    let vlans: Value =
        serde_json::from_str(&sh(&["bridge", "-j", "vlan", "show", "dev", veth])).unwrap();
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
        ferry("DEL", id, Some(&ns.path()), &cp.path(), c).expect_ok();
    }
}

#[test]
fn port_isolation_blocks_ports_from_each_other_not_from_the_gateway() {
    let (br, cp, data) = (format!("fbri{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-piso",
        &br,
        &data,
        "10.213.23.0/24",
        json!({"portIsolation": true, "isGateway": true}),
    );
    let (a, b) = (TestNs::new("ia"), TestNs::new("ib"));
    ferry("ADD", "ia", Some(&a.path()), &cp.path(), &c).expect_ok();
    ferry("ADD", "ib", Some(&b.path()), &cp.path(), &c).expect_ok();
    assert!(!tcp_echo(&a, &b, "10.213.23.3:21105"), "isolated ports");
    let ping = a.exec(&["busybox", "ping", "-c1", "-W2", "10.213.23.1"]);
    assert!(ping.status.success(), "gateway reachable");
    for (id, ns) in [("ia", &a), ("ib", &b)] {
        ferry("DEL", id, Some(&ns.path()), &cp.path(), &c).expect_ok();
    }
}

#[test]
fn disabled_container_interface_stays_down_with_its_address() {
    let (br, cp, data) = (format!("fbrd{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-down",
        &br,
        &data,
        "10.213.24.0/24",
        json!({"disableContainerInterface": true}),
    );
    let ns = TestNs::new("dn");
    ferry("ADD", "dn", Some(&ns.path()), &cp.path(), &c).expect_ok();
    let link = sh(&["ip", "-n", &ns.name, "-o", "link", "show", "eth0"]);
    assert!(!link.contains(",UP"), "{link}");
    assert!(sh(&["ip", "-n", &ns.name, "-o", "addr", "show", "eth0"]).contains("10.213.24.2/24"));
    ferry("DEL", "dn", Some(&ns.path()), &cp.path(), &c).expect_ok();
}

#[test]
fn enabledad_runs_duplicate_address_detection_before_returning() {
    let (br, cp, data) = (format!("fbre{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let c = conf(
        "fbrnet-dad",
        &br,
        &data,
        "fd00:213:16:25::/64",
        json!({"enabledad": true}),
    );
    let ns = TestNs::new("dad");
    ferry("ADD", "dad", Some(&ns.path()), &cp.path(), &c).expect_ok();
    let addr = sh(&["ip", "-n", &ns.name, "-6", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("fd00:213:16:25::2/64"), "{addr}");
    assert!(
        !addr.contains("tentative") && !addr.contains("nodad"),
        "{addr}"
    );
    ferry("DEL", "dad", Some(&ns.path()), &cp.path(), &c).expect_ok();
}

#[test]
fn status_and_gc_delegate_to_ipam() {
    let cp = CniPath::new();
    let data = TempDir::new("d");
    let c = conf(
        "fbrnet-status",
        "fbrstatus0",
        &data,
        "10.213.26.0/24",
        json!({}),
    );
    let call = |cmd: &str, conf: &Value| {
        run(
            &Call {
                bin: ferry_bridge(),
                cmd,
                id: "",
                netns: None,
                ifname: "",
                cni_path: &cp.path(),
                args: "",
            },
            conf,
        )
    };
    call("STATUS", &c).expect_ok();
    // an IPAM plugin that is not on CNI_PATH makes STATUS fail: proof it was asked
    let mut missing = c.clone();
    missing["ipam"]["type"] = json!("fbr-no-such-ipam");
    assert!(!call("STATUS", &missing).ok);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(
        !call("GC", &{
            let mut m = gc.clone();
            m["ipam"]["type"] = json!("fbr-no-such-ipam");
            m
        })
        .ok
    );
    call("GC", &gc).expect_ok();
    // layer 2 only: nothing to ask
    let l2 = json!({"cniVersion": "1.1.0", "name": "fbrnet-status", "type": "bridge", "bridge": "fbrstatus0"});
    call("STATUS", &l2).expect_ok();
    assert!(!host_link_exists("fbrstatus0"));
}

/// Probes, in a throw-away namespace, whether bridges can filter VLANs on this kernel.
fn kernel_has_vlan_filtering() -> bool {
    let ns = TestNs::new("vprobe");
    Command::new("ip")
        .args([
            "-n",
            &ns.name,
            "link",
            "add",
            "fbrprobe",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn gc_with_the_nftables_backend_keeps_only_valid_attachments() {
    let (br, cp, data) = (format!("fbrg{}", uniq()), CniPath::new(), TempDir::new("d"));
    let _g = HostLink(br.clone());
    let _n = NetGuard("fbrnet-nftgc".into());
    let c = conf(
        "fbrnet-nftgc",
        &br,
        &data,
        "10.213.27.0/24",
        json!({"ipMasq": true, "ipMasqBackend": "nftables"}),
    );
    let (a, b) = (TestNs::new("na"), TestNs::new("nb"));
    ferry("ADD", "nga", Some(&a.path()), &cp.path(), &c).expect_ok();
    ferry("ADD", "ngb", Some(&b.path()), &cp.path(), &c).expect_ok();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ngb", "ifname": "eth0"}]);
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
    let listing = sh(&[
        "nft",
        "list",
        "chain",
        "inet",
        "cni_plugins_masquerade",
        "masq_checks",
    ]);
    assert!(!listing.contains("id: nga"), "{listing}");
    assert!(listing.contains("id: ngb"), "{listing}");
    for (id, ns) in [("nga", &a), ("ngb", &b)] {
        ferry("DEL", id, Some(&ns.path()), &cp.path(), &c).expect_ok();
    }
    assert!(!sh(&[
        "nft",
        "list",
        "chain",
        "inet",
        "cni_plugins_masquerade",
        "masq_checks"
    ])
    .contains("fbrnet-nftgc"));
}
