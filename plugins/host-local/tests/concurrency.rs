//! Many allocators at once, and allocators killed at random moments.

mod common;

use common::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn hundred_parallel_adds_get_hundred_distinct_addresses() {
    let net = Net::new("fhlpar");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let conf = conf.clone();
            std::thread::spawn(move || run(FERRY, "ADD", &format!("par{i}"), "eth0", &conf))
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        for a in h.join().unwrap().addresses() {
            assert!(seen.insert(a.clone()), "{a} handed out twice");
        }
    }
    assert_eq!(seen.len(), 100);
    assert_eq!(net.leases().len(), 100);
}

#[test]
fn sigkill_during_adds_leaves_only_complete_leases() {
    let net = Net::new("fhlkill");
    let conf = net.conf(
        "1.0.0",
        serde_json::json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/64"}]]}),
    );
    let stdin = serde_json::to_vec(&conf).unwrap();
    let mut completed: Vec<(String, Vec<String>)> = Vec::new();
    for i in 0..120u64 {
        let id = format!("k{i}");
        let mut child = Command::new(FERRY)
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &id)
            .env("CNI_NETNS", "/var/run/netns/fhl-none")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        // Spread the kill over the whole run of the process (start-up … exit).
        std::thread::sleep(Duration::from_micros((i * 97) % 4000));
        let _ = child.kill(); // SIGKILL; an error means it had already exited
        let status = child.wait().unwrap();
        if status.success() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let addrs = v["ips"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ip| {
                    ip["address"]
                        .as_str()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect();
            completed.push((id, addrs));
        }
    }
    let leases = net.leases();
    eprintln!(
        "{} of 120 ADDs completed, {} leases on disk",
        completed.len(),
        leases.len()
    );
    for (ip, holder) in &leases {
        let (id, ifname) = holder
            .split_once("\r\n")
            .unwrap_or_else(|| panic!("torn lease {ip}: {holder:?}"));
        assert!(
            id.starts_with('k') && id[1..].parse::<u32>().is_ok(),
            "{ip}: {holder:?}"
        );
        assert_eq!(ifname, "eth0", "{ip}: {holder:?}");
    }
    // No completed ADD lost its leases.
    for (id, addrs) in &completed {
        for a in addrs {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(
                leases.get(&ip).map(String::as_str),
                Some(format!("{id}\r\neth0").as_str())
            );
        }
    }
    for n in 0..2 {
        let p = net.net_dir().join(format!("last_reserved_ip.{n}"));
        if p.exists() {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.parse::<IpAddr>().is_ok(),
                "torn cursor {p:?}: {text:?}"
            );
        }
    }
    // A killed run may leave its (complete) cursor temp file; the next ADD consumes it.
    run(FERRY, "ADD", "after", "eth0", &conf).ok();
    assert!(
        stray_files(&net.net_dir()).is_empty(),
        "{:?}",
        stray_files(&net.net_dir())
    );
    assert!(
        !completed.is_empty(),
        "no ADD ever completed: the kill timing is off"
    );
    // A runtime retrying the killed ADDs gets the leases already made, never a second one
    // (the hint is in place before a lease becomes visible).
    for i in 0..120u64 {
        run(FERRY, "ADD", &format!("k{i}"), "eth0", &conf).ok();
    }
    let mut per_owner = std::collections::BTreeMap::<String, usize>::new();
    for holder in net.leases().values() {
        *per_owner.entry(holder.clone()).or_default() += 1;
    }
    assert!(per_owner.values().all(|n| *n == 2), "{per_owner:?}");
    assert_eq!(per_owner.len(), 121);
    // Every lease is released by a normal DEL (nothing orphaned by a half-written hint).
    for i in 0..120u64 {
        run(FERRY, "DEL", &format!("k{i}"), "eth0", &conf).ok();
    }
    run(FERRY, "DEL", "after", "eth0", &conf).ok();
    assert!(net.leases().is_empty(), "{:?}", net.leases());
}
