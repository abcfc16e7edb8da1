//! Concurrency under load: 200 ADD/DEL cycles of bridge+host-local+portmap on one network
//! from 16 threads at once, with GC calls (carrying the live attachments) in between.
//! No duplicate address, no lost lease, no leftover. Locking as libcni does it: ADD and DEL
//! share a lock, GC takes it exclusively (so the valid list is exact while GC runs).
//!
//! FERRY_RELIABILITY_ITERS multiplies the cycle count.

mod common;
mod reliability_common;

use reliability_common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The live attachments: container ID → (address, host port).
type Live = BTreeMap<String, (String, u16)>;

#[test]
fn parallel_add_del_cycles_with_gc_keep_every_lease_and_leave_nothing() {
    require_root();
    let host = Arc::new(Netns::new("lh"));
    let dir = tempdir("load");
    let u = uniq();
    let chain = Arc::new(Chain::new(
        &format!("frl-load-{u}"),
        &format!("frlld{u}"),
        "10.213.114.0/24",
        &dir.path().join("ipam"),
    ));
    let workers = knob("FERRY_RELIABILITY_THREADS", 16) as usize;
    let cycles = 200 * scale();
    let ctrs: Vec<Arc<Netns>> = (0..workers).map(|_| Arc::new(Netns::new("lc"))).collect();
    let gate = Arc::new(RwLock::new(()));
    let live: Arc<Mutex<Live>> = Arc::new(Mutex::new(Live::new()));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();

    let mut handles = Vec::new();
    for ctr in &ctrs {
        let ctr = ctr.clone();
        let (host, chain, gate, live, next, done, errors) = (
            host.clone(),
            chain.clone(),
            gate.clone(),
            live.clone(),
            next.clone(),
            done.clone(),
            errors.clone(),
        );
        let u = u.clone();
        handles.push(std::thread::spawn(move || loop {
            let j = next.fetch_add(1, Ordering::SeqCst);
            if j >= cycles {
                return;
            }
            let id = format!("frl-load-{j}-{u}");
            let port = 27100 + (j % 800) as u16;
            let pm = json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]);
            let ctrp = ctr.path();
            let add = chain.call("ADD", &id, Some(&ctrp), "eth0");
            let result = {
                let _shared = gate.read().unwrap();
                let d = run(
                    &host.name,
                    &chain.bin("bridge"),
                    &add,
                    &chain.request(&chain.bridge, None, None),
                );
                if !d.ok() {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("{id}: bridge ADD: {}", d.describe()));
                    return;
                }
                let prev = d.json().unwrap();
                let d = run(
                    &host.name,
                    &chain.bin("portmap"),
                    &add,
                    &chain.request(&chain.portmap, Some(&prev), Some(&pm)),
                );
                if !d.ok() {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("{id}: portmap ADD: {}", d.describe()));
                    return;
                }
                let result = d.json().unwrap();
                let ip = result["ips"][0]["address"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let mut l = live.lock().unwrap();
                if let Some((other, _)) = l.iter().find(|(_, (a, _))| *a == ip) {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("duplicate address {ip}: {id} and {other}"));
                }
                l.insert(id.clone(), (ip, port));
                result
            };
            std::thread::sleep(Duration::from_millis(j % 7 * 5));
            {
                let _shared = gate.read().unwrap();
                live.lock().unwrap().remove(&id);
                for p in [&chain.portmap, &chain.bridge] {
                    let d = run(
                        &host.name,
                        &chain.bin(p["type"].as_str().unwrap()),
                        &chain.call("DEL", &id, Some(&ctrp), "eth0"),
                        &chain.request(p, Some(&result), Some(&pm)),
                    );
                    if !d.ok() {
                        errors.lock().unwrap().push(format!(
                            "{id}: DEL {}: {}",
                            p["type"],
                            d.describe()
                        ));
                    }
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }

    // GC with the exact live list, checking that every live lease survives it.
    let mut gcs = 0u64;
    let mut max_live = 0usize;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(150));
        let _exclusive = gate.write().unwrap();
        let snapshot = live.lock().unwrap().clone();
        max_live = max_live.max(snapshot.len());
        let valid: Vec<(String, String)> = snapshot
            .keys()
            .map(|id| (id.clone(), "eth0".to_string()))
            .collect();
        chain.gc(&host.name, &valid);
        gcs += 1;
        let leases = leases(&chain.lease_dir());
        let held: BTreeMap<String, String> = leases
            .iter()
            .filter(|(name, _, _)| !name.starts_with('.'))
            .map(|(ip, id, _)| (id.clone(), ip.clone()))
            .collect();
        for (id, (ip, _)) in &snapshot {
            let addr = ip.split('/').next().unwrap_or("");
            if held.get(id).map(String::as_str) != Some(addr) {
                errors.lock().unwrap().push(format!(
                    "GC #{gcs} lost the lease of live {id} ({ip}); leases: {held:?}"
                ));
            }
        }
        for id in held.keys() {
            if !snapshot.contains_key(id) {
                errors
                    .lock()
                    .unwrap()
                    .push(format!("after GC #{gcs}: lease of {id} which is not live"));
            }
        }
        let fw = firewall_text(&host);
        for (id, (_, port)) in &snapshot {
            if !fw.contains(&format!("--dport {port}")) && !fw.contains(&format!("dport {port}")) {
                errors.lock().unwrap().push(format!(
                    "after GC #{gcs}: the port mapping of live {id} (:{port}) is gone"
                ));
            }
        }
    }
    for h in handles {
        h.join().expect("worker panicked");
    }
    let elapsed = started.elapsed();
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(done.load(Ordering::SeqCst), cycles);
    chain.gc(&host.name, &[]);
    let ids: Vec<String> = (0..cycles).map(|j| format!("frl-load-{j}-{u}")).collect();
    for c in &ctrs {
        assert_clean("after all cycles", &chain, &host, Some(c), &ids);
    }
    eprintln!(
        "load: {cycles} ADD/DEL cycles on {workers} threads with {gcs} GCs in {elapsed:?} (at most {max_live} live at a GC); no duplicate, no lost lease, nothing left"
    );
    let _ = std::fs::remove_dir_all(host.portmap_index());
}
