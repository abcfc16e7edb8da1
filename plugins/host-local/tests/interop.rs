//! Switching between ferry and the reference host-local on one node, in both directions,
//! and running both at once: no lease is lost or handed out twice.

mod common;

use common::*;
use serde_json::json;
use std::collections::HashSet;

fn assert_reference_installed() {
    assert!(
        std::path::Path::new(REFERENCE).exists(),
        "{REFERENCE} missing: apt-get install containernetworking-plugins"
    );
}

#[test]
fn reference_add_then_ferry_check_and_del() {
    assert_reference_installed();
    let net = Net::new("fhlio1");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/64"}]]}),
    );
    let r = run(REFERENCE, "ADD", "c1", "eth0", &conf).ok();
    run(REFERENCE, "ADD", "c2", "eth0", &conf).ok();
    let mut check = conf.clone();
    check["prevResult"] = r;
    run(FERRY, "CHECK", "c1", "eth0", &check).ok();
    // ferry continues the reference's round-robin instead of reusing .2/.3.
    assert_eq!(
        run(FERRY, "ADD", "c3", "eth0", &conf).addresses(),
        ["10.213.64.4/24", "fd00:213:64::4/64"]
    );
    run(FERRY, "DEL", "c1", "eth0", &conf).ok();
    let left: HashSet<String> = net.leases().into_values().collect();
    assert_eq!(
        left,
        HashSet::from(["c2\r\neth0".to_string(), "c3\r\neth0".to_string()])
    );
    assert_eq!(net.leases().len(), 4);
    let (code, _) = run(FERRY, "CHECK", "c1", "eth0", &check).err();
    assert_eq!(code, 3);
}

#[test]
fn ferry_add_then_reference_check_and_del() {
    assert_reference_installed();
    let net = Net::new("fhlio2");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/64"}]]}),
    );
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    run(FERRY, "ADD", "c2", "eth0", &conf).ok();
    run(REFERENCE, "CHECK", "c1", "eth0", &conf).ok();
    assert_eq!(
        run(REFERENCE, "ADD", "c3", "eth0", &conf).addresses(),
        ["10.213.64.4/24", "fd00:213:64::4/64"]
    );
    run(REFERENCE, "DEL", "c1", "eth0", &conf).ok();
    assert_eq!(net.leases().len(), 4);
    assert!(net.leases().values().all(|h| h != "c1\r\neth0"));
    // The reference's DEL also removed ferry's hints for c1 (it reads through them), and
    // ferry handles the leftovers of c2 that the reference never touched.
    run(FERRY, "DEL", "c2", "eth0", &conf).ok();
    run(FERRY, "DEL", "c3", "eth0", &conf).ok();
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    let (code, _) = run(REFERENCE, "CHECK", "c2", "eth0", &conf).err();
    assert!(code > 0);
}

#[test]
fn ferry_releases_id_only_leases_of_old_reference_versions() {
    let net = Net::new("fhlio3");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c0", "eth0", &conf).ok();
    std::fs::write(net.net_dir().join("10.213.64.9"), "old").unwrap();
    run(FERRY, "CHECK", "old", "eth0", &conf).ok();
    run(FERRY, "DEL", "old", "eth0", &conf).ok();
    assert!(!net.net_dir().join("10.213.64.9").exists());
    assert_eq!(net.leases().len(), 1);
}

#[test]
fn ferry_and_reference_in_parallel_never_hand_out_an_address_twice() {
    assert_reference_installed();
    let net = Net::new("fhlmix");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let conf = conf.clone();
            let bin = if i % 2 == 0 { FERRY } else { REFERENCE };
            std::thread::spawn(move || run(bin, "ADD", &format!("mix{i}"), "eth0", &conf))
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        let reply = h.join().unwrap();
        for a in reply.addresses() {
            assert!(seen.insert(a.clone()), "{a} handed out twice");
        }
    }
    assert_eq!(seen.len(), 100);
    let leases = net.leases();
    assert_eq!(leases.len(), 100);
    let holders: HashSet<&String> = leases.values().collect();
    assert_eq!(
        holders.len(),
        100,
        "every container holds exactly one lease"
    );
}

#[test]
fn ipv6_lease_names_are_spelled_like_the_reference() {
    assert_reference_installed();
    let ours = Net::new("fhlv6");
    let theirs = Net::new("fhlv6");
    let tricky = [
        "fd00:213:64:0:1::5",
        "fd00:213:64::1:0:5",
        "fd00:213:64:0:a::",
        "fd00:213:64:0:0:ff:0:0",
        "fd00:0213:0064:0000:0000:0000:0000:00AB",
    ];
    for (i, ip) in tricky.iter().enumerate() {
        let id = format!("v6c{i}");
        let args = format!("IP={ip}");
        let a = run_with(
            FERRY,
            "ADD",
            &id,
            "eth0",
            &ours.simple("1.0.0", "fd00:213:64::/64"),
            Some(&args),
        );
        let b = run_with(
            REFERENCE,
            "ADD",
            &id,
            "eth0",
            &theirs.simple("1.0.0", "fd00:213:64::/64"),
            Some(&args),
        );
        assert_eq!(a.ok(), b.ok(), "{ip}");
    }
    let names = |n: &Net| {
        let mut v: Vec<String> = std::fs::read_dir(n.net_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".ferry-owners")
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&ours), names(&theirs));
    assert_eq!(
        std::fs::read(ours.net_dir().join("last_reserved_ip.0")).unwrap(),
        std::fs::read(theirs.net_dir().join("last_reserved_ip.0")).unwrap()
    );
}

#[test]
fn crossed_add_and_del_in_parallel_leave_nothing_behind() {
    assert_reference_installed();
    let net = Net::new("fhlcross");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/64"}]]}),
    );
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let conf = conf.clone();
            // Half are added by ferry and deleted by the reference, half the other way.
            let (add, del) = if i % 2 == 0 {
                (FERRY, REFERENCE)
            } else {
                (REFERENCE, FERRY)
            };
            std::thread::spawn(move || {
                let id = format!("x{i}");
                let got = run(add, "ADD", &id, "eth0", &conf).addresses();
                assert_eq!(got.len(), 2, "{id}");
                run(del, "DEL", &id, "eth0", &conf).ok();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    let hints: Vec<String> = std::fs::read_dir(net.net_dir().join(".ferry-owners"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("last_reserved_ip."))
        .collect();
    assert!(hints.is_empty(), "stale hints: {hints:?}");
}
