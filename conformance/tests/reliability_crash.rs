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

/// `ip netns exec HOST ferry ARGS` in its own process group, with the runtime's env.
fn ferry_cmd(
    host: &str,
    net: &Path,
    cache: &Path,
    args: &[&str],
    caps: &Value,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", host, common::FERRY])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NETCONFPATH", net)
        .env("CNI_PATH", plugins())
        .env("FERRY_CACHE_DIR", cache)
        .env("CAP_ARGS", caps.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    c
}

/// Runs `cmd`, SIGKILLs its whole process group after `kill_after` (if given), then waits
/// until no process of the group is left.
fn run_group(mut cmd: std::process::Command, kill_after: Option<Duration>) -> std::process::Output {
    let child = cmd.spawn().expect("spawn ferry");
    let pid = child.id() as i32;
    if let Some(d) = kill_after {
        std::thread::sleep(d);
        // SAFETY: the group is led by our own unreaped child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let out = child.wait_with_output().expect("wait ferry");
    let end = Instant::now() + Duration::from_secs(30);
    while !group_members(pid).is_empty() {
        assert!(Instant::now() < end, "ferry's plugins still running");
        std::thread::sleep(Duration::from_millis(2));
    }
    out
}

/// The runtime's cache: (entries, problems). Every file must parse; temp files are litter.
fn cache_files(cache: &Path) -> (Vec<String>, Vec<String>) {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for f in files_below(&cache.join("results")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            bad.push(format!("runtime cache temp file left: {}", f.display()));
            continue;
        }
        match std::fs::read(&f).map(|b| serde_json::from_slice::<Value>(&b)) {
            Ok(Ok(_)) => entries.push(name),
            _ => bad.push(format!("torn cache entry {}", f.display())),
        }
    }
    (entries, bad)
}

#[test]
fn sigkill_of_the_ferry_runtime_then_del_and_gc_leave_no_cache_entry_and_nothing_else() {
    require_root();
    let host = Netns::new("rh");
    let ctr = Netns::new("rc");
    let dir = tempdir("rtcrash");
    let u = uniq();
    let chain = Chain::new(
        &format!("frl-rt-{u}"),
        &format!("frlrt{u}"),
        "10.213.113.0/24",
        &dir.path().join("ipam"),
    );
    let net = dir.path().join("net");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(net.join("10-frl.conflist"), chain.conflist().to_string()).unwrap();
    let ctrp = ctr.path();
    let id = ferry_conformance::runtime::cli::container_id_for(Path::new(&ctrp));
    let caps =
        json!({"portMappings": [{"hostPort": 27600, "containerPort": 80, "protocol": "tcp"}]});
    let hostn = host.name.as_str();
    let cmd = |verb: &str| ferry_cmd(hostn, &net, &cache, &[verb, &chain.name, &ctrp], &caps);

    // Calibrate one whole ADD and DEL.
    let t0 = Instant::now();
    let o = run_group(cmd("add"), None);
    assert!(
        o.status.success(),
        "ferry add: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let add_ms = t0.elapsed().as_millis() as u64;
    let t0 = Instant::now();
    let o = run_group(cmd("del"), None);
    assert!(
        o.status.success(),
        "ferry del: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let del_ms = t0.elapsed().as_millis() as u64;
    eprintln!("runtime crash: ferry add {add_ms} ms, del {del_ms} ms");

    let budget = Duration::from_secs(knob("FERRY_RELIABILITY_RUNTIME_CRASH_SECS", 25) * scale());
    let max_iters = 150 * scale();
    let mut rng = Rng::new("runtime crash");
    let mut findings = Findings::default();
    let started = Instant::now();
    let (mut iters, mut killed_del) = (0u64, 0u64);
    while iters < max_iters && started.elapsed() < budget {
        let i = iters;
        iters += 1;
        let delay = Duration::from_micros(rng.below((add_ms + add_ms / 5 + 1) * 1000));
        run_group(cmd("add"), Some(delay));
        if rng.below(3) == 0 {
            killed_del += 1;
            let delay = Duration::from_micros(rng.below((del_ms + 1) * 1000));
            run_group(cmd("del"), Some(delay));
        }
        let verb = if rng.below(4) == 0 { "gc" } else { "del" };
        let o = run_group(cmd(verb), None);
        assert!(
            o.status.success(),
            "iteration {i}: ferry {verb} after a killed add: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (entries, bad) = cache_files(&cache);
        let mut problems = bad;
        if verb == "gc" && !entries.is_empty() {
            problems.push(format!("cache entries left after ferry gc: {entries:?}"));
        }
        if verb == "gc" {
            // Without a valid list GC only knows cached attachments: an ADD killed before
            // the cache was written is the runtime's DEL's job. Do it now, as a runtime would.
            let o = run_group(cmd("del"), None);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let (entries, _) = cache_files(&cache);
        if !entries.is_empty() {
            problems.push(format!("cache entries left after ferry del: {entries:?}"));
        }
        problems.extend(leftovers(
            &chain,
            &host,
            Some(&ctr),
            std::slice::from_ref(&id),
        ));
        if !problems.is_empty() {
            for p in &problems {
                findings.add(&format!("iteration {i} ({verb})"), p);
            }
            for f in files_below(&cache.join("results"))
                .into_iter()
                .chain(files_below(&host.portmap_index()))
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
                "iteration {i}: state left that DEL does not remove:\n{}\nall findings:\n{}",
                still.join("\n"),
                findings.report()
            );
        }
    }
    eprintln!(
        "runtime crash: {iters} iterations ({killed_del} with DEL killed too) in {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(host.portmap_index());
    assert!(
        findings.is_empty(),
        "after {iters} iterations:\n{}",
        findings.report()
    );
}

/// What the client saw of one API change before the daemon died.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Acked,
    Unknown,
}

#[test]
fn sigkill_of_the_proxy_daemon_while_mappings_change_keeps_its_state_consistent() {
    require_root();
    let dir = tempdir("pxcrash");
    let backend = echo_server();
    let mut daemon = ProxyDaemon::start(dir.path(), &[]);
    let socket = daemon.socket.clone();
    let state_file = daemon.state_dir.join("mappings.json");
    let u = uniq();
    let budget = Duration::from_secs(knob("FERRY_RELIABILITY_PROXY_CRASH_SECS", 20) * scale());
    let max_rounds = 80 * scale();
    let mut rng = Rng::new("proxy crash");
    let mut findings = Findings::default();
    // The mappings that exist (as far as the last restart showed): id → host port.
    let mut present: std::collections::BTreeMap<String, u16> = Default::default();
    let started = Instant::now();
    let (mut rounds, mut ops_total) = (0u64, 0u64);
    while rounds < max_rounds && started.elapsed() < budget {
        rounds += 1;
        let seed = rng.next();
        let socket2 = socket.clone();
        let before = present.clone();
        let u2 = u.clone();
        // Client: flips random mappings on and off until the daemon dies.
        let client = std::thread::spawn(move || {
            let mut r = seed | 1;
            let mut now = before;
            let mut log: Vec<(String, u16, bool, Seen)> = Vec::new(); // (id, port, add?, seen)
            loop {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                let k = (r % 40) as u16;
                let id = format!("frl-{u2}-{k}");
                let port = 27500 + k;
                let add = !now.contains_key(&id);
                let res = if add {
                    let body = json!({"id": id, "owner": format!("frl-{u2}"), "proto": "tcp",
                        "hostIP": "127.0.0.1", "hostPort": port, "containerIP": "127.0.0.1",
                        "containerPort": backend.port()})
                    .to_string();
                    // A port deleted a moment ago must be free at once; that is checked by
                    // reliability_proxy's a_deleted_port_can_be_mapped_again_at_once, not
                    // here, so a brief 409 is waited out.
                    let mut tries = 0;
                    loop {
                        let r = http(&socket2, "POST", "/v1/mappings", Some(&body));
                        match &r {
                            Ok((409, b)) if b.contains("outside this daemon") && tries < 100 => {
                                tries += 1;
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            _ => break r,
                        }
                    }
                } else {
                    http(&socket2, "DELETE", &format!("/v1/mappings/{id}"), None)
                };
                match res {
                    Ok((s, body)) if (add && (s == 201 || s == 200)) || (!add && s == 204) => {
                        log.push((id.clone(), port, add, Seen::Acked));
                        if add {
                            now.insert(id, port);
                        } else {
                            now.remove(&id);
                        }
                        let _ = body;
                    }
                    Ok((s, body)) => {
                        let ss = std::process::Command::new("ss")
                            .args(["-tanpe", &format!("sport = :{port}")])
                            .output()
                            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                            .unwrap_or_default();
                        panic!(
                            "unexpected answer {s} {body} to {} {id}; sockets on that port:\n{ss}\nops this round: {log:?}\nlisting: {:?}",
                            if add { "add" } else { "delete" },
                            http(&socket2, "GET", "/v1/mappings", None)
                        )
                    }
                    Err(_) => {
                        log.push((id, port, add, Seen::Unknown));
                        return log;
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_micros(rng.below(150_000)));
        daemon.kill();
        let log = client.join().expect("client thread");
        ops_total += log.len() as u64;
        // The state file is whole JSON (or absent). (Stray files are checked after the restart
        // below: a kill may land between write and rename; what counts is that recovery
        // leaves nothing.)
        let saved: Vec<String> = match std::fs::read(&state_file) {
            Err(_) => Vec::new(),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(v) => v["mappings"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| m["id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(e) => {
                    findings.add(&format!("round {rounds}"), &format!("torn state file: {e}"));
                    Vec::new()
                }
            },
        };
        // Acknowledged changes are durable.
        let mut expect = present.clone();
        let mut uncertain = std::collections::BTreeSet::new();
        for (id, port, add, seen) in &log {
            match seen {
                Seen::Acked if *add => {
                    expect.insert(id.clone(), *port);
                }
                Seen::Acked => {
                    expect.remove(id);
                }
                Seen::Unknown => {
                    uncertain.insert(id.clone());
                }
            }
        }
        daemon.restart();
        // After recovery no temp file of the killed daemon may be left beside the state.
        for f in files_below(&daemon.state_dir) {
            if f != state_file {
                findings.add(
                    &format!("round {rounds}"),
                    &format!("file left in the state dir: {}", f.display()),
                );
                let _ = std::fs::remove_file(f);
            }
        }
        let listed = daemon.list();
        let listed_ids: std::collections::BTreeSet<String> = listed
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        let saved_ids: std::collections::BTreeSet<String> = saved.into_iter().collect();
        if listed_ids != saved_ids {
            findings.add(
                &format!("round {rounds}"),
                &format!("after restart the daemon serves {listed_ids:?} but its state file holds {saved_ids:?}"),
            );
        }
        for id in expect.keys() {
            if !uncertain.contains(id) && !listed_ids.contains(id) {
                findings.add(
                    &format!("round {rounds}"),
                    &format!("acknowledged mapping {id} lost by a crash"),
                );
            }
        }
        for id in &listed_ids {
            if !uncertain.contains(id) && !expect.contains_key(id) {
                findings.add(
                    &format!("round {rounds}"),
                    &format!("acknowledged delete of {id} undone by a crash"),
                );
            }
        }
        present.clear();
        for m in &listed {
            let id = m["id"].as_str().unwrap_or("").to_string();
            let port = m["hostPort"].as_u64().unwrap_or(0) as u16;
            if m["listening"] != json!(true) {
                findings.add(
                    &format!("round {rounds}"),
                    &format!("restored mapping not listening: {m}"),
                );
            }
            present.insert(id, port);
        }
        // Every persisted mapping is served (probe a few per round, all in the last one).
        let probe: Vec<u16> = present.values().copied().take(4).collect();
        for port in probe {
            if let Err(e) = echo_through(([127, 0, 0, 1], port).into(), b"frl-crash-probe") {
                findings.add(
                    &format!("round {rounds}"),
                    &format!("restored mapping on port {port} does not forward: {e}"),
                );
            }
        }
    }
    for port in present.values() {
        if let Err(e) = echo_through(([127, 0, 0, 1], *port).into(), b"frl-final-probe") {
            findings.add(
                "final",
                &format!("mapping on port {port} does not forward: {e}"),
            );
        }
    }
    eprintln!(
        "proxy crash: {rounds} SIGKILLs during {ops_total} API changes in {:?}; {} mappings at the end",
        started.elapsed(),
        present.len()
    );
    assert!(
        findings.is_empty(),
        "after {rounds} rounds:\n{}",
        findings.report()
    );
}
