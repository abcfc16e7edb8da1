//! Crash injection: SIGKILL ferry's plugins (and the `ferry` runtime) at random moments
//! of ADD and DEL, then DEL and GC as a runtime would, and check that nothing remains — no
//! veth, no lease, no firewall rule, no portmap index entry, no cache entry, no torn file.
//!
//! Bounded in time (FERRY_RELIABILITY_CRASH_SECS, default 45 s per test) and iterations
//! (300 × FERRY_RELIABILITY_ITERS). Replay a run with FERRY_RELIABILITY_SEED.

mod common;
mod reliability_common;

use reliability_common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// One plugin call that may be killed after `kill_after` (None: runs to completion).
fn call_maybe_killed(
    host: &str,
    bin: &Path,
    call: &Call,
    stdin: &Value,
    kill_after: Option<(Duration, bool)>,
) -> Done {
    let r = spawn(host, bin, call, stdin.to_string().into_bytes());
    if let Some((delay, whole_group)) = kill_after {
        std::thread::sleep(delay);
        if whole_group {
            r.kill_group();
        } else {
            r.kill_leader();
        }
    }
    r.wait()
}

/// Counters for the report table.
#[derive(Default, Debug)]
struct Tally {
    iterations: u64,
    killed_add: u64,
    killed_del: u64,
    completed_add: u64,
    gc_only: u64,
}

#[test]
fn sigkill_during_add_or_del_then_del_and_gc_leave_nothing() {
    require_root();
    let host = Netns::new("ch");
    let ctr = Netns::new("cc");
    let dir = tempdir("crash");
    let u = uniq();
    let chain = Chain::new(
        &format!("frl-crash-{u}"),
        &format!("frlcr{u}"),
        "10.213.112.0/24",
        &dir.path().join("ipam"),
    );
    let budget = Duration::from_secs(knob("FERRY_RELIABILITY_CRASH_SECS", 45) * scale());
    let max_iters = 300 * scale();
    let mut rng = Rng::new("crash");
    let hostn = host.name.as_str();
    let ctrp = ctr.path();
    let started = Instant::now();

    // Calibrate: how long each step takes here, so kill delays cover the whole step.
    let mut step_ms = [0u64; 4]; // bridge ADD, portmap ADD, portmap DEL, bridge DEL
    {
        let id = format!("frl-cal-{u}");
        let pm = json!([{"hostPort": 27000, "containerPort": 80, "protocol": "tcp"}]);
        let d = run(
            hostn,
            &chain.bin("bridge"),
            &chain.call("ADD", &id, Some(&ctrp), "eth0"),
            &chain.request(&chain.bridge, None, None),
        );
        assert!(d.ok(), "calibration bridge ADD: {}", d.describe());
        step_ms[0] = d.elapsed.as_millis() as u64;
        let prev = d.json().unwrap();
        let d = run(
            hostn,
            &chain.bin("portmap"),
            &chain.call("ADD", &id, Some(&ctrp), "eth0"),
            &chain.request(&chain.portmap, Some(&prev), Some(&pm)),
        );
        assert!(d.ok(), "calibration portmap ADD: {}", d.describe());
        step_ms[1] = d.elapsed.as_millis() as u64;
        let prev = d.json().unwrap();
        for (i, p) in [(2, &chain.portmap), (3, &chain.bridge)] {
            let d = run(
                hostn,
                &chain.bin(p["type"].as_str().unwrap()),
                &chain.call("DEL", &id, Some(&ctrp), "eth0"),
                &chain.request(p, Some(&prev), Some(&pm)),
            );
            assert!(d.ok(), "calibration DEL: {}", d.describe());
            step_ms[i] = d.elapsed.as_millis() as u64;
        }
        assert_clean(
            "after the calibration run",
            &chain,
            &host,
            Some(&ctr),
            &[id],
        );
        eprintln!("crash: step durations (ms) bridge ADD, portmap ADD, portmap DEL, bridge DEL: {step_ms:?}");
    }

    let mut t = Tally::default();
    let mut findings = Findings::default();
    while t.iterations < max_iters && started.elapsed() < budget {
        let i = t.iterations;
        t.iterations += 1;
        let id = format!("frl-crash-{i}-{u}");
        let port = 27000 + (i % 500);
        let pm = json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"},
                        {"hostPort": port, "containerPort": 53, "protocol": "udp"}]);
        let add = chain.call("ADD", &id, Some(&ctrp), "eth0");
        // 0: kill bridge ADD, 1: kill portmap ADD, 2: ADD completes.
        let target = rng.below(3);
        let kill = |rng: &mut Rng, ms: u64| -> Option<(Duration, bool)> {
            let span = ms + ms / 5 + 1;
            Some((
                Duration::from_micros(rng.below(span * 1000)),
                rng.below(2) == 0,
            ))
        };
        let mut prev: Option<Value> = None;
        let k = if target == 0 {
            kill(&mut rng, step_ms[0])
        } else {
            None
        };
        let d = call_maybe_killed(
            hostn,
            &chain.bin("bridge"),
            &add,
            &chain.request(&chain.bridge, None, None),
            k,
        );
        if k.is_none() {
            assert!(d.ok(), "iteration {i}: bridge ADD: {}", d.describe());
            prev = d.json();
            let k = if target == 1 {
                kill(&mut rng, step_ms[1])
            } else {
                None
            };
            let d = call_maybe_killed(
                hostn,
                &chain.bin("portmap"),
                &add,
                &chain.request(&chain.portmap, prev.as_ref(), Some(&pm)),
                k,
            );
            if k.is_none() {
                assert!(d.ok(), "iteration {i}: portmap ADD: {}", d.describe());
                prev = d.json();
                t.completed_add += 1;
            } else {
                // A killed ADD has no result: the runtime DELs without prevResult.
                prev = None;
                t.killed_add += 1;
            }
        } else {
            t.killed_add += 1;
        }

        // GC alone (no DEL) must release the lease and the rules of a lost attachment.
        if rng.below(6) == 0 {
            t.gc_only += 1;
            chain.gc(hostn, &[]);
            let (leases, bad) = host_local_files(&chain.lease_dir());
            if !leases.is_empty() {
                findings.add(
                    &format!("iteration {i}"),
                    &format!("GC left leases {leases:?}"),
                );
            }
            for b in bad {
                findings.add(&format!("iteration {i} after GC"), &b);
            }
            let fw = firewall_leftovers(&firewall_text(&host), std::slice::from_ref(&id));
            if !fw.is_empty() {
                findings.add(
                    &format!("iteration {i}"),
                    &format!("GC left rules: {}", fw.join(" | ")),
                );
            }
        }

        // Half the time, kill one DEL step too, then DEL again from the start.
        let del = chain.call("DEL", &id, Some(&ctrp), "eth0");
        let del_killed = rng.below(2) == 0;
        if del_killed {
            t.killed_del += 1;
            let which = rng.below(2);
            for (n, p) in [(0u64, &chain.portmap), (1, &chain.bridge)] {
                let k = if n == which {
                    kill(&mut rng, step_ms[2 + n as usize])
                } else {
                    None
                };
                let d = call_maybe_killed(
                    hostn,
                    &chain.bin(p["type"].as_str().unwrap()),
                    &del,
                    &chain.request(p, prev.as_ref(), Some(&pm)),
                    k,
                );
                if k.is_some() {
                    break;
                }
                assert!(d.ok(), "iteration {i}: DEL {}: {}", p["type"], d.describe());
            }
        }
        chain.del(hostn, &id, Some(&ctrp), "eth0", prev.as_ref(), &pm);
        let mut problems = leftovers(&chain, &host, Some(&ctr), std::slice::from_ref(&id));
        if i % 10 == 0 && problems.is_empty() {
            chain.gc(hostn, &[]);
            problems = leftovers(&chain, &host, Some(&ctr), std::slice::from_ref(&id));
        }
        if !problems.is_empty() {
            let ctx = format!("iteration {i} (kill target {target}, DEL killed too: {del_killed})");
            for p in &problems {
                findings.add(&ctx, p);
            }
            // Clear what we can (GC, DEL, stray temp files) so later iterations start clean;
            // stop if that does not help.
            chain.gc(hostn, &[]);
            chain.del(hostn, &id, Some(&ctrp), "eth0", None, &pm);
            for f in files_below(&host.portmap_index())
                .into_iter()
                .chain(files_below(&chain.lease_dir()))
            {
                if f.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
                {
                    let _ = std::fs::remove_file(f);
                }
            }
            let still = leftovers(&chain, &host, Some(&ctr), std::slice::from_ref(&id));
            assert!(
                still.is_empty(),
                "{ctx}: state left that neither DEL nor GC removes:\n{}\nall findings:\n{}",
                still.join("\n"),
                findings.report()
            );
        }
    }
    eprintln!(
        "crash: {t:?} in {:?} (plugins killed with SIGKILL during ADD {} times, during DEL {} times; nothing left)",
        started.elapsed(),
        t.killed_add,
        t.killed_del
    );
    let _ = std::fs::remove_dir_all(host.portmap_index());
    assert!(
        findings.is_empty(),
        "state left after crashes ({} iterations):\n{}",
        t.iterations,
        findings.report()
    );
    assert!(
        t.iterations >= 20,
        "too few iterations in the time budget: {t:?}"
    );
}
