//! ADD / DEL / CHECK / GC / STATUS behaviour, each test named for what a user sees.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::IpAddr;

const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn add_result_has_the_ipam_shape_of_every_version() {
    for v in ALL_VERSIONS {
        let net = Net::new("fhlver");
        let conf = net.conf(
            v,
            json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/64"}]]}),
        );
        let r = run(FERRY, "ADD", "c1", "eth0", &conf).ok();
        assert_eq!(r["cniVersion"], json!(v), "{v}: {r}");
        assert!(
            r.get("interfaces").is_none(),
            "{v}: IPAM results have no interfaces: {r}"
        );
        if v == "0.1.0" || v == "0.2.0" {
            assert_eq!(r["ip4"]["ip"], json!("10.213.64.2/24"), "{v}: {r}");
            assert_eq!(r["ip4"]["gateway"], json!("10.213.64.1"), "{v}: {r}");
            assert_eq!(r["ip6"]["ip"], json!("fd00:213:64::2/64"), "{v}: {r}");
            assert!(r.get("ips").is_none());
        } else {
            let ips = r["ips"].as_array().unwrap();
            assert_eq!(ips.len(), 2);
            assert_eq!(ips[0]["address"], json!("10.213.64.2/24"));
            assert_eq!(ips[1]["address"], json!("fd00:213:64::2/64"));
            for ipc in ips {
                assert!(ipc.get("interface").is_none(), "{v}: {r}");
                let has_version = ipc.get("version").is_some();
                assert_eq!(has_version, v.starts_with("0."), "{v}: {r}");
            }
        }
    }
}

/// Every file the reference contract defines (names exactly as written, and contents);
/// the lock file is compared by name only.
fn files(net: &Net) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(net.net_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != ".ferry-owners")
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = if name == "lock" {
                Vec::new()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn results_equal_the_reference_in_every_version_it_supports() {
    let resolv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        resolv.path(),
        "nameserver 10.213.64.53\nsearch fhl.example\noptions ndots:2\ndomain fhl.example\n",
    )
    .unwrap();
    for v in &ALL_VERSIONS[..6] {
        let ipam = json!({
            "ranges": [[{"subnet": "10.213.64.0/24", "rangeStart": "10.213.64.10", "gateway": "10.213.64.254"}],
                       [{"subnet": "fd00:213:64::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.213.70.0/24", "gw": "10.213.64.254"}],
            "resolvConf": resolv.path()
        });
        let ours = Net::new("fhlcmp");
        let theirs = Net::new("fhlcmp");
        let a = run(FERRY, "ADD", "c1", "eth0", &ours.conf(v, ipam.clone())).ok();
        let b = run(REFERENCE, "ADD", "c1", "eth0", &theirs.conf(v, ipam)).ok();
        assert_eq!(a, b, "version {v}");
        assert_eq!(
            files(&ours),
            files(&theirs),
            "version {v}: same files, same bytes"
        );
    }
}

#[test]
fn dual_stack_hands_out_one_address_per_family() {
    let net = Net::new("fhlds");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/64"}]]}),
    );
    let a = run(FERRY, "ADD", "c1", "eth0", &conf).addresses();
    let b = run(FERRY, "ADD", "c2", "eth0", &conf).addresses();
    assert_eq!(a, ["10.213.64.2/24", "fd00:213:64::2/64"]);
    assert_eq!(b, ["10.213.64.3/24", "fd00:213:64::3/64"]);
    assert_eq!(net.leases()[&ip("fd00:213:64::3")], "c2\r\neth0");
    let last1 = std::fs::read_to_string(net.net_dir().join("last_reserved_ip.1")).unwrap();
    assert_eq!(last1, "fd00:213:64::3");
}

#[test]
fn a_released_address_is_not_reused_at_once() {
    let net = Net::new("fhlrr");
    let conf = net.simple("1.0.0", "10.213.64.0/29");
    assert_eq!(
        run(FERRY, "ADD", "c1", "eth0", &conf).addresses(),
        ["10.213.64.2/29"]
    );
    run(FERRY, "DEL", "c1", "eth0", &conf).ok();
    assert_eq!(
        run(FERRY, "ADD", "c2", "eth0", &conf).addresses(),
        ["10.213.64.3/29"]
    );
    // .4 .5 .6, then wrap to .2 (free) — never the gateway .1.
    for id in ["c3", "c4", "c5"] {
        run(FERRY, "ADD", id, "eth0", &conf).ok();
    }
    assert_eq!(
        run(FERRY, "ADD", "c6", "eth0", &conf).addresses(),
        ["10.213.64.2/29"]
    );
}

#[test]
fn a_repeated_add_returns_the_same_addresses() {
    let net = Net::new("fhlrep");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    let a = run(FERRY, "ADD", "c1", "eth0", &conf).addresses();
    let b = run(FERRY, "ADD", "c1", "eth0", &conf).addresses();
    assert_eq!(a, b);
    assert_eq!(net.leases().len(), 1);
    // Another interface of the same container is another attachment.
    let c = run(FERRY, "ADD", "c1", "net1", &conf).addresses();
    assert_ne!(a, c);
}

#[test]
fn requested_addresses_from_cni_args_args_and_runtime_config_are_honoured() {
    let net = Net::new("fhlreq");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    let r = run_with(
        FERRY,
        "ADD",
        "c1",
        "eth0",
        &conf,
        Some("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.213.64.50"),
    );
    assert_eq!(r.addresses(), ["10.213.64.50/24"]);

    let mut with_args = conf.clone();
    with_args["args"] = json!({"cni": {"ips": ["10.213.64.51/24"]}});
    assert_eq!(
        run(FERRY, "ADD", "c2", "eth0", &with_args).addresses(),
        ["10.213.64.51/24"]
    );

    // Both forms: `args` wins over CNI_ARGS (CONVENTIONS; the reference fails instead).
    let mut both = conf.clone();
    both["args"] = json!({"cni": {"ips": ["10.213.64.53"]}});
    let r = run_with(FERRY, "ADD", "c5", "eth0", &both, Some("IP=10.213.64.54"));
    assert_eq!(r.addresses(), ["10.213.64.53/24"]);

    let mut with_rc = conf.clone();
    with_rc["runtimeConfig"] = json!({"ips": ["10.213.64.52"]});
    assert_eq!(
        run(FERRY, "ADD", "c3", "eth0", &with_rc).addresses(),
        ["10.213.64.52/24"]
    );

    // Taken: refused, naming who holds it; nothing new is written.
    let before = net.leases();
    let (code, msg) = run_with(FERRY, "ADD", "c4", "eth0", &conf, Some("IP=10.213.64.50")).err();
    assert_eq!(code, 103, "{msg}");
    assert!(msg.contains("10.213.64.50") && msg.contains("c1"), "{msg}");
    // Outside every range, and the gateway: refused with code 7.
    let (code, msg) = run_with(FERRY, "ADD", "c4", "eth0", &conf, Some("IP=10.213.99.9")).err();
    assert_eq!(code, 7, "{msg}");
    let (code, _) = run_with(FERRY, "ADD", "c4", "eth0", &conf, Some("IP=10.213.64.1")).err();
    assert_eq!(code, 7);
    assert_eq!(net.leases(), before);
}

#[test]
fn runtime_ip_ranges_are_prepended_to_configured_ranges() {
    let net = Net::new("fhlrc");
    let mut conf = net.simple("1.0.0", "fd00:213:64::/64");
    conf["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.213.65.0/24"}]]});
    let a = run(FERRY, "ADD", "c1", "eth0", &conf).addresses();
    assert_eq!(a, ["10.213.65.2/24", "fd00:213:64::2/64"]);
    let last0 = std::fs::read_to_string(net.net_dir().join("last_reserved_ip.0")).unwrap();
    assert_eq!(last0, "10.213.65.2");
}

#[test]
fn legacy_top_level_subnet_works() {
    let net = Net::new("fhlleg");
    let conf = net.conf(
        "0.3.1",
        json!({"subnet": "10.213.64.0/24", "rangeStart": "10.213.64.100", "rangeEnd": "10.213.64.101", "gateway": "10.213.64.1"}),
    );
    assert_eq!(
        run(FERRY, "ADD", "c1", "eth0", &conf).addresses(),
        ["10.213.64.100/24"]
    );
    assert_eq!(
        run(FERRY, "ADD", "c2", "eth0", &conf).addresses(),
        ["10.213.64.101/24"]
    );
    let (code, _) = run(FERRY, "ADD", "c3", "eth0", &conf).err();
    assert_eq!(code, 102);
}

#[test]
fn del_is_idempotent_and_check_fails_after_del() {
    let net = Net::new("fhldel");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    let r = run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    let mut check = conf.clone();
    check["prevResult"] = r;
    run(FERRY, "CHECK", "c1", "eth0", &check).ok();
    run(FERRY, "DEL", "c1", "eth0", &conf).ok();
    assert!(net.leases().is_empty());
    run(FERRY, "DEL", "c1", "eth0", &conf).ok();
    run(FERRY, "DEL", "never-added", "eth0", &conf).ok();
    let (code, msg) = run(FERRY, "CHECK", "c1", "eth0", &check).err();
    assert_eq!(code, 3);
    assert!(
        msg.contains("host-local: Failed to find address added by container c1"),
        "{msg}"
    );
}

#[test]
fn check_fails_when_prev_result_names_an_address_not_reserved() {
    let net = Net::new("fhlchk");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    let mut check = conf.clone();
    check["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.213.64.77/24"}]});
    let (code, msg) = run(FERRY, "CHECK", "c1", "eth0", &check).err();
    assert_eq!(code, 3);
    assert!(msg.contains("10.213.64.77"), "{msg}");
}

#[test]
fn del_releases_only_its_own_interface() {
    let net = Net::new("fhldel2");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    run(FERRY, "ADD", "c1", "net1", &conf).ok();
    run(FERRY, "DEL", "c1", "net1", &conf).ok();
    let left: Vec<String> = net.leases().into_values().collect();
    assert_eq!(left, ["c1\r\neth0"]);
}

fn gc_conf(net: &Net, key: Option<&str>, valid: &[(&str, &str)]) -> Value {
    let mut conf = net.simple("1.1.0", "10.213.64.0/24");
    if let Some(key) = key {
        let list: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        conf[key] = json!(list);
    }
    conf
}

fn holders(net: &Net) -> Vec<String> {
    let mut v: Vec<String> = net.leases().into_values().collect();
    v.sort();
    v
}

fn gc_releases_only_unlisted_attachments(key: &str) {
    let net = Net::new("fhlgc");
    let conf = net.simple("1.1.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    run(FERRY, "ADD", "c2", "eth0", &conf).ok();
    run(FERRY, "ADD", "c3", "eth1", &conf).ok();
    let r = run(
        FERRY,
        "GC",
        "",
        "",
        &gc_conf(&net, Some(key), &[("c1", "eth0"), ("c3", "eth1")]),
    );
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.trim().is_empty(), "{r:?}");
    assert_eq!(holders(&net), ["c1\r\neth0", "c3\r\neth1"]);
    run(
        FERRY,
        "GC",
        "",
        "",
        &gc_conf(&net, Some(key), &[("c1", "eth0"), ("c3", "eth1")]),
    )
    .ok();
    assert_eq!(holders(&net), ["c1\r\neth0", "c3\r\neth1"]);
    run(FERRY, "GC", "", "", &gc_conf(&net, Some(key), &[])).ok();
    assert!(net.leases().is_empty());
    let dir = net.net_dir();
    assert!(dir.join("lock").exists() && dir.join("last_reserved_ip.0").exists());
    // GC released the hints of the released owners too (the cursor spares stay).
    let hints_left: Vec<String> = std::fs::read_dir(dir.join(".ferry-owners"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("last_reserved_ip."))
        .collect();
    assert!(hints_left.is_empty(), "{hints_left:?}");
}

#[test]
fn gc_releases_only_attachments_not_in_valid_attachments() {
    gc_releases_only_unlisted_attachments("cni.dev/valid-attachments");
}

#[test]
fn gc_reads_the_legacy_attachments_key_too() {
    gc_releases_only_unlisted_attachments("cni.dev/attachments");
}

#[test]
fn gc_without_an_attachment_list_removes_nothing() {
    let net = Net::new("fhlgc0");
    let conf = net.simple("1.1.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    let r = run(FERRY, "GC", "", "", &gc_conf(&net, None, &[]));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(holders(&net), ["c1\r\neth0"]);
}

#[test]
fn gc_treats_id_only_legacy_files_by_container_id() {
    let net = Net::new("fhlgcl");
    let conf = net.simple("1.1.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c0", "eth0", &conf).ok(); // creates the directory
    std::fs::write(net.net_dir().join("10.213.64.40"), "old1").unwrap();
    std::fs::write(net.net_dir().join("10.213.64.41"), "old2\n").unwrap();
    std::fs::write(net.net_dir().join("10.213.64.42"), "").unwrap(); // a crashed writer's
    run(
        FERRY,
        "GC",
        "",
        "",
        &gc_conf(
            &net,
            Some("cni.dev/valid-attachments"),
            &[("old1", "eth0"), ("c0", "eth0")],
        ),
    )
    .ok();
    assert_eq!(holders(&net), ["c0\r\neth0", "old1"]);
}

#[test]
fn gc_needs_cni_version_1_1_0() {
    let net = Net::new("fhlgcv");
    let mut conf = gc_conf(&net, Some("cni.dev/valid-attachments"), &[]);
    conf["cniVersion"] = json!("1.0.0");
    let (code, _) = run(FERRY, "GC", "", "", &conf).err();
    assert_eq!(code, 1);
}

#[test]
fn status_is_50_when_the_range_is_exhausted() {
    let net = Net::new("fhlst");
    let conf = net.conf(
        "1.1.0",
        json!({"ranges": [[{"subnet": "10.213.64.0/24", "rangeStart": "10.213.64.9", "rangeEnd": "10.213.64.9"}]]}),
    );
    let r = run(FERRY, "STATUS", "", "", &conf);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.trim().is_empty());
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    let (code, msg) = run(FERRY, "STATUS", "", "", &conf).err();
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains("fhlst"), "{msg}");
    // STATUS is advisory: DEL and a later ADD still work.
    run(FERRY, "DEL", "c1", "eth0", &conf).ok();
    run(FERRY, "STATUS", "", "", &conf).ok();
    run(FERRY, "ADD", "c2", "eth0", &conf).ok();
}

#[test]
fn verbs_other_than_add_create_nothing_and_del_succeeds_without_a_data_dir() {
    let net = Net::new("fhlnodir");
    let mut conf = net.simple("1.1.0", "10.213.64.0/24");
    // Under a regular file: cannot exist, cannot be created.
    let blocker = net.tmp.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    for data_dir in [net.data_dir(), blocker.join("data")] {
        conf["ipam"]["dataDir"] = json!(data_dir);
        run(FERRY, "DEL", "c1", "eth0", &conf).ok();
        run(FERRY, "STATUS", "", "", &conf).ok();
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        run(FERRY, "GC", "", "", &gc).ok();
        let (code, _) = run(FERRY, "CHECK", "c1", "eth0", &conf).err();
        assert_eq!(code, 3);
        assert!(!data_dir.exists(), "{data_dir:?} must not be created");
    }
}

#[test]
fn gc_attachment_without_ifname_keeps_every_lease_of_that_container() {
    let net = Net::new("fhlgcn");
    let conf = net.simple("1.1.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    run(FERRY, "ADD", "c1", "net1", &conf).ok();
    run(FERRY, "ADD", "c2", "eth0", &conf).ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1"}]);
    run(FERRY, "GC", "", "", &gc).ok();
    assert_eq!(holders(&net), ["c1\r\neth0", "c1\r\nnet1"]);
}
