//! Hostile input: container IDs and network names built to escape paths or inject into
//! rule comments, a 100 MB stdin, symlinks planted where plugins and the runtime write, a
//! CNI_NETNS that is the plugin's own ("host") namespace, and the proxy API used by a
//! non-root user. Everything runs inside throw-away namespaces.

mod common;
mod reliability_common;

use reliability_common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every file below `dir` (recursively), for "nothing was created" checks.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut v = files_below(dir);
    v.sort();
    v
}

/// Runs the whole chain's ADD for one (id, network, ifname); returns each plugin's outcome.
fn chain_add(
    host: &Netns,
    chain: &Chain,
    id: &str,
    ctr: &str,
    ifname: &str,
) -> Vec<(String, Done)> {
    let mut out = Vec::new();
    let d = run(
        &host.name,
        &chain.bin("bridge"),
        &chain.call("ADD", id, Some(ctr), ifname),
        &chain.request(&chain.bridge, None, None),
    );
    let prev = d.json().filter(|_| d.ok()).unwrap_or_else(|| {
        json!({"cniVersion": chain.version, "interfaces": [{"name": ifname, "sandbox": ctr}],
               "ips": [{"address": "10.213.115.9/24", "interface": 0}]})
    });
    out.push(("bridge".to_string(), d));
    let pm = json!([{"hostPort": 27800, "containerPort": 80, "protocol": "tcp"}]);
    let d = run(
        &host.name,
        &chain.bin("portmap"),
        &chain.call("ADD", id, Some(ctr), ifname),
        &chain.request(&chain.portmap, Some(&prev), Some(&pm)),
    );
    out.push(("portmap".to_string(), d));
    let mut ipam = chain.bridge.clone();
    ipam["type"] = json!("host-local");
    let d = run(
        &host.name,
        &chain.bin("host-local"),
        &chain.call("ADD", id, Some(ctr), ifname),
        &chain.request(&ipam, None, None),
    );
    out.push(("host-local".to_string(), d));
    out
}

#[test]
fn hostile_container_ids_network_names_and_ifnames_are_refused_and_create_nothing() {
    require_root();
    let host = Netns::new("hh");
    let ctr = Netns::new("hc");
    let dir = tempdir("hostile");
    let ipam = dir.path().join("data").join("ipam");
    std::fs::create_dir_all(&ipam).unwrap();
    let u = uniq();
    let bridge = format!("frlho{u}");
    let good_net = format!("frl-hostile-{u}");
    let long = "a".repeat(300);
    let hostile_ids = [
        "../../../../tmp/frl-escape",
        "..",
        "a/b",
        "a\"b",
        "a'b",
        "a\nb",
        "a\rb",
        "a b",
        "a;b",
        "a$(touch /tmp/frl-pwned)",
        "a`id`",
        "a\\b",
        "-rf",
        ".hidden",
        "a\u{0}b",
        "é",
        "",
    ];
    let hostile_nets = [
        "../../../frl-escape",
        "..",
        ".",
        "a/b",
        "x\" -j ACCEPT -m comment --comment \"",
        "x\ny",
        "a b",
        "a'b",
        "$(id)",
    ];
    let hostile_ifnames = ["../../x", "a/b", "a b", "eth0:1", "abcdefghijklmnop", ".."];
    let mut tried = 0;
    let mut bad: Vec<String> = Vec::new();
    let check_nothing = |what: &str| {
        let files = tree(&dir.path().join("data"));
        assert!(files.is_empty(), "{what}: files created: {files:?}");
        assert!(!Path::new("/tmp/frl-escape").exists() && !Path::new("/tmp/frl-pwned").exists());
        let links: Vec<String> = host
            .links()
            .into_iter()
            .filter(|l| l != "lo" && *l != bridge)
            .collect();
        assert!(
            links.is_empty(),
            "{what}: links created on the host: {links:?}"
        );
        let cl: Vec<String> = ctr.links().into_iter().filter(|l| l != "lo").collect();
        assert!(
            cl.is_empty(),
            "{what}: links created in the container: {cl:?}"
        );
        let fw = firewall_leftovers(&firewall_text(&host), &[]);
        assert!(fw.is_empty(), "{what}: rules created:\n{}", fw.join("\n"));
    };
    let ctrp = ctr.path();
    for id in hostile_ids {
        if id.contains('\0') {
            continue; // cannot be passed through the environment at all
        }
        let chain = Chain::new(&good_net, &bridge, "10.213.115.0/24", &ipam);
        for (plugin, d) in chain_add(&host, &chain, id, &ctrp, "eth0") {
            tried += 1;
            if d.ok() || d.error_code() != Some(4) {
                bad.push(format!(
                    "{plugin} with container ID {id:?}: want code 4, got {}",
                    d.describe()
                ));
            }
        }
        check_nothing(&format!("container ID {id:?}"));
    }
    for net in hostile_nets {
        let chain = Chain::new(net, &bridge, "10.213.115.0/24", &ipam);
        for (plugin, d) in chain_add(&host, &chain, &format!("frl-h-{u}"), &ctrp, "eth0") {
            tried += 1;
            if d.ok() || !matches!(d.error_code(), Some(4) | Some(7)) {
                bad.push(format!(
                    "{plugin} with network name {net:?}: want code 7 (or 4), got {}",
                    d.describe()
                ));
            }
        }
        check_nothing(&format!("network name {net:?}"));
    }
    for ifname in hostile_ifnames {
        let chain = Chain::new(&good_net, &bridge, "10.213.115.0/24", &ipam);
        for (plugin, d) in chain_add(&host, &chain, &format!("frl-h-{u}"), &ctrp, ifname) {
            tried += 1;
            if d.ok() || d.error_code() != Some(4) {
                bad.push(format!(
                    "{plugin} with ifname {ifname:?}: want code 4, got {}",
                    d.describe()
                ));
            }
        }
        check_nothing(&format!("ifname {ifname:?}"));
    }
    // A very long but well-formed network name (the spec sets no limit): refused with an
    // error object, or accepted; after DEL nothing remains.
    {
        let chain = Chain::new(&long, &bridge, "10.213.115.0/24", &ipam);
        let id = format!("frl-h-{u}");
        for (plugin, d) in chain_add(&host, &chain, &id, &ctrp, "eth0") {
            tried += 1;
            if !d.ok() && d.error_code().is_none() {
                bad.push(format!(
                    "{plugin} with a 300-byte network name: no error object: {}",
                    d.describe()
                ));
            }
            eprintln!(
                "hostile: {plugin} with a 300-byte network name: {}",
                if d.ok() {
                    "accepted".to_string()
                } else {
                    format!("refused with code {:?}", d.error_code())
                }
            );
        }
        let pm = json!([{"hostPort": 27800, "containerPort": 80, "protocol": "tcp"}]);
        let mut ipam_only = chain.bridge.clone();
        ipam_only["type"] = json!("host-local");
        for p in [&chain.portmap, &chain.bridge, &ipam_only] {
            let d = run(
                &host.name,
                &chain.bin(p["type"].as_str().unwrap()),
                &chain.call("DEL", &id, Some(&ctrp), "eth0"),
                &chain.request(p, None, Some(&pm)),
            );
            if !d.ok() && d.error_code().is_none() {
                bad.push(format!(
                    "DEL {} with a 300-byte network name: {}",
                    p["type"],
                    d.describe()
                ));
            }
        }
        check_nothing("a 300-byte network name, after DEL");
    }
    // A very long but well-formed ID: refused with an error object, or accepted and then
    // removed completely by DEL.
    let id = format!("frl{}", "0123456789abcdef".repeat(256));
    let chain = Chain::new(&good_net, &bridge, "10.213.115.0/24", &ipam);
    let d = run(
        &host.name,
        &chain.bin("bridge"),
        &chain.call("ADD", &id, Some(&ctrp), "eth0"),
        &chain.request(&chain.bridge, None, None),
    );
    let prev = d.json();
    if d.ok() {
        let pm = json!([{"hostPort": 27801, "containerPort": 80, "protocol": "tcp"}]);
        let p = run(
            &host.name,
            &chain.bin("portmap"),
            &chain.call("ADD", &id, Some(&ctrp), "eth0"),
            &chain.request(&chain.portmap, prev.as_ref(), Some(&pm)),
        );
        assert!(
            p.ok() || p.error_code().is_some(),
            "portmap, 4 KiB ID: {}",
            p.describe()
        );
        chain.del(&host.name, &id, Some(&ctrp), "eth0", prev.as_ref(), &pm);
    } else {
        assert!(
            d.error_code().is_some(),
            "bridge, 4 KiB ID: {}",
            d.describe()
        );
    }
    for p in leftovers(&chain, &host, Some(&ctr), std::slice::from_ref(&id)) {
        bad.push(format!("a 4 KiB container ID, after DEL: {p}"));
    }
    chain.gc(&host.name, &[]);
    let _ = std::fs::remove_dir_all(host.portmap_index());
    eprintln!("hostile: {tried} plugin calls with hostile IDs, network names and ifnames; {} not refused as wanted; nothing created", bad.len());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Runs `bin` with `stdin_len` bytes of `fill` after `prefix` on stdin; returns the outcome
/// and the child's peak RSS in KiB (from wait4).
fn run_with_huge_stdin(host: &Netns, bin: &Path, prefix: &[u8], stdin_len: usize) -> (Done, i64) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.name])
        .arg(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "frl-huge")
        .env("CNI_NETNS", host.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugins())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let prefix = prefix.to_vec();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        if pipe.write_all(&prefix).is_err() {
            return 0;
        }
        while sent < stdin_len {
            if pipe.write_all(&chunk).is_err() {
                break; // the plugin stopped reading: that is the point
            }
            sent += chunk.len();
        }
        sent
    });
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child; `status` and `usage` are valid out-parameters.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let elapsed = started.elapsed();
    drop(child);
    let stdout = reader.join().unwrap();
    let sent = writer.join().unwrap();
    eprintln!(
        "huge stdin: plugin {} stopped after reading at most {sent} bytes written, in {elapsed:?}, peak RSS {} KiB",
        bin.display(),
        usage.ru_maxrss
    );
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    (
        Done {
            code,
            signal,
            stdout,
            stderr: Vec::new(),
            elapsed,
        },
        usage.ru_maxrss,
    )
}

#[test]
fn a_100_mb_stdin_is_refused_with_a_decode_or_config_error_in_bounded_memory() {
    require_root();
    let host = Netns::new("hs");
    let size = 100 << 20;
    for ty in ["bridge", "host-local", "portmap"] {
        for prefix in [
            &b""[..],
            &br#"{"cniVersion":"1.0.0","name":"frl-huge","type":"TYPE","pad":""#[..],
        ] {
            let prefix = String::from_utf8_lossy(prefix).replace("TYPE", ty);
            let (d, rss_kib) =
                run_with_huge_stdin(&host, &plugins().join(ty), prefix.as_bytes(), size);
            assert!(
                !d.ok() && matches!(d.error_code(), Some(6) | Some(7)),
                "{ty} with a 100 MB stdin: want an error object with code 6 or 7, got {}",
                d.describe()
            );
            assert!(
                rss_kib < 64 * 1024,
                "{ty} with a 100 MB stdin: peak RSS {rss_kib} KiB (the read is not bounded)"
            );
        }
    }
    let links: Vec<String> = host.links().into_iter().filter(|l| l != "lo").collect();
    assert!(links.is_empty(), "{links:?}");
}

#[test]
fn symlinks_planted_in_the_host_local_directory_are_never_followed_for_writing() {
    require_root();
    let host = Netns::new("hy");
    let ctr = Netns::new("hz");
    let dir = tempdir("symlink");
    let u = uniq();
    let chain = Chain::new(
        &format!("frl-sym-{u}"),
        &format!("frlsy{u}"),
        "10.213.116.0/29",
        &dir.path().join("ipam"),
    );
    let victim_dir = dir.path().join("victim");
    std::fs::create_dir_all(&victim_dir).unwrap();
    let victim = victim_dir.join("precious");
    std::fs::write(&victim, "precious\n").unwrap();
    let net_dir = chain.lease_dir();
    std::fs::create_dir_all(&net_dir).unwrap();
    // Every address of the /29 (2..6 are handed out) and the cursors point at the victim.
    for host_part in 1..8 {
        std::os::unix::fs::symlink(&victim, net_dir.join(format!("10.213.116.{host_part}")))
            .unwrap();
    }
    std::os::unix::fs::symlink(&victim, net_dir.join("last_reserved_ip.0")).unwrap();
    std::fs::create_dir_all(net_dir.join(".ferry-owners")).unwrap();
    std::os::unix::fs::symlink(&victim, net_dir.join(".ferry-owners/last_reserved_ip.0")).unwrap();
    let ctrp = ctr.path();
    let mut attempts = 0;
    for i in 0..8 {
        let id = format!("frl-sym-{i}-{u}");
        let d = run(
            &host.name,
            &chain.bin("bridge"),
            &chain.call("ADD", &id, Some(&ctrp), "eth0"),
            &chain.request(&chain.bridge, None, None),
        );
        attempts += 1;
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "ADD {i} wrote through a symlink: {}",
            d.describe()
        );
        let d2 = run(
            &host.name,
            &chain.bin("bridge"),
            &chain.call("DEL", &id, Some(&ctrp), "eth0"),
            &chain.request(&chain.bridge, d.json().filter(|_| d.ok()).as_ref(), None),
        );
        assert!(d2.ok(), "DEL: {}", d2.describe());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(victim.exists(), "DEL removed the symlink's target");
    }
    // A symlinked lock file and a symlinked network directory are refused.
    let _ = std::fs::remove_dir_all(&net_dir);
    std::fs::create_dir_all(&net_dir).unwrap();
    std::os::unix::fs::symlink(&victim, net_dir.join("lock")).unwrap();
    let d = run(
        &host.name,
        &chain.bin("bridge"),
        &chain.call("ADD", &format!("frl-sym-lock-{u}"), Some(&ctrp), "eth0"),
        &chain.request(&chain.bridge, None, None),
    );
    assert!(!d.ok(), "ADD with a symlinked lock file: {}", d.describe());
    std::fs::remove_dir_all(&net_dir).unwrap();
    std::os::unix::fs::symlink(&victim_dir, &net_dir).unwrap();
    let d = run(
        &host.name,
        &chain.bin("bridge"),
        &chain.call("ADD", &format!("frl-sym-dir-{u}"), Some(&ctrp), "eth0"),
        &chain.request(&chain.bridge, None, None),
    );
    assert!(
        !d.ok(),
        "ADD with a symlinked network directory: {}",
        d.describe()
    );
    let in_victim: Vec<PathBuf> = tree(&victim_dir);
    assert_eq!(
        in_victim,
        vec![victim.clone()],
        "files written into the symlinked directory"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let links: Vec<String> = ctr.links().into_iter().filter(|l| l != "lo").collect();
    assert!(links.is_empty(), "{links:?}");
    eprintln!("symlinks: {attempts} ADD/DEL with every lease and cursor name planted as a symlink; nothing written through");
}

#[test]
fn symlinks_planted_in_the_result_cache_are_never_followed_for_writing() {
    require_root();
    let host = Netns::new("hr");
    let ctr = Netns::new("hq");
    let dir = tempdir("cachesym");
    let u = uniq();
    let chain = Chain::new(
        &format!("frl-cs-{u}"),
        &format!("frlcs{u}"),
        "10.213.116.16/28",
        &dir.path().join("ipam"),
    );
    let net = dir.path().join("net");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::create_dir_all(cache.join("results")).unwrap();
    std::fs::write(net.join("10-frl.conflist"), chain.conflist().to_string()).unwrap();
    let victim = dir.path().join("precious");
    std::fs::write(&victim, "precious\n").unwrap();
    let ctrp = ctr.path();
    let id = ferry_conformance::runtime::cli::container_id_for(Path::new(&ctrp));
    // The entry's final name, and the temp name the runtime will use (it contains the
    // runtime's PID: planted from inside the child, after fork, before exec).
    let final_name = cache
        .join("results")
        .join(format!("{}-{id}-eth0", chain.name));

    let tmp_prefix = cache.join("results").join(format!(".{id}.tmp"));
    let run_ferry = |verb: &str, plant_tmp: bool| {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &host.name,
            common::FERRY,
            verb,
            &chain.name,
            &ctrp,
        ])
        .env("NETCONFPATH", &net)
        .env("CNI_PATH", plugins())
        .env("FERRY_CACHE_DIR", &cache)
        .env_remove("CNI_ARGS")
        .env_remove("CAP_ARGS");
        let prefix = std::ffi::CString::new(tmp_prefix.as_os_str().as_encoded_bytes()).unwrap();
        let target = std::ffi::CString::new(victim.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: only getpid, symlink and a stack buffer between fork and exec; `ip netns
        // exec` execs ferry in place, so the PID is ferry's.
        unsafe {
            c.pre_exec(move || {
                if !plant_tmp {
                    return Ok(());
                }
                let mut buf = [0u8; 4200];
                let p = prefix.as_bytes();
                if p.len() + 12 > buf.len() {
                    return Ok(());
                }
                buf[..p.len()].copy_from_slice(p);
                let mut n = libc::getpid() as u32;
                let mut digits = [0u8; 10];
                let mut k = 0;
                loop {
                    digits[k] = b'0' + (n % 10) as u8;
                    k += 1;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                for i in 0..k {
                    buf[p.len() + i] = digits[k - 1 - i];
                }
                buf[p.len() + k] = 0;
                libc::symlink(target.as_ptr(), buf.as_ptr().cast());
                Ok(())
            });
        }
        c.output().unwrap()
    };
    let mut bad = Vec::new();
    for (planted, plant_tmp) in [("the entry's name", false), ("the entry's temp name", true)] {
        if !plant_tmp {
            std::os::unix::fs::symlink(&victim, &final_name).unwrap();
        }
        let o = run_ferry("add", plant_tmp);
        let after_add = std::fs::read_to_string(&victim).unwrap_or_default();
        let o2 = run_ferry("del", false);
        assert!(
            o2.status.success(),
            "ferry del: {}",
            String::from_utf8_lossy(&o2.stderr)
        );
        let after_del = std::fs::read_to_string(&victim).unwrap_or_default();
        if after_add != "precious\n" || after_del != "precious\n" {
            bad.push(format!(
                "ferry add followed a symlink planted at {planted}: the victim file now holds {:?} (add ok: {})",
                ferry_conformance::exec::truncate(&after_add, 60),
                o.status.success()
            ));
        }
        std::fs::write(&victim, "precious\n").unwrap();
        for f in files_below(&cache.join("results")) {
            let _ = std::fs::remove_file(f);
        }
        assert_clean(
            "after ferry del",
            &chain,
            &host,
            Some(&ctr),
            std::slice::from_ref(&id),
        );
    }
    let _ = std::fs::remove_dir_all(host.portmap_index());
    // The runtime's lock files: a symlink planted there must not create its target.
    let locks = cache.join("ferry-locks");
    std::fs::create_dir_all(&locks).unwrap();
    let created = dir.path().join("created-through-a-lock-symlink");
    let _ = std::fs::remove_file(locks.join("global"));
    std::os::unix::fs::symlink(&created, locks.join("global")).unwrap();
    let o = run_ferry("add", false);
    let o2 = run_ferry("del", false);
    if created.exists() {
        bad.push(format!(
            "ferry followed a symlink planted at {}: it created {} (add ok: {}, del ok: {})",
            locks.join("global").display(),
            created.display(),
            o.status.success(),
            o2.status.success()
        ));
    }
    for f in files_below(&cache.join("results")) {
        let _ = std::fs::remove_file(f);
    }
    let _ = run_ferry("del", false);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn a_netns_that_is_the_plugins_own_namespace_is_refused_with_code_4() {
    require_root();
    let host = Netns::new("hn");
    let dir = tempdir("ownns");
    let u = uniq();
    let chain = Chain::new(
        &format!("frl-own-{u}"),
        &format!("frlow{u}"),
        "10.213.116.32/28",
        &dir.path().join("ipam"),
    );
    let id = format!("frl-own-{u}");
    for netns in [host.path(), "/proc/self/ns/net".to_string()] {
        let d = run(
            &host.name,
            &chain.bin("bridge"),
            &chain.call("ADD", &id, Some(&netns), "frl0"),
            &chain.request(&chain.bridge, None, None),
        );
        assert!(
            !d.ok() && d.error_code() == Some(4),
            "bridge ADD with CNI_NETNS={netns} (the plugin's own namespace): want code 4, got {}",
            d.describe()
        );
        let links: Vec<String> = host
            .links()
            .into_iter()
            .filter(|l| l != "lo" && Some(l.as_str()) != chain.bridge["bridge"].as_str())
            .collect();
        assert!(links.is_empty(), "links created: {links:?}");
        let leases = leases(&chain.lease_dir());
        assert!(leases.is_empty(), "lease taken: {leases:?}");
        let _ = run(
            &host.name,
            &chain.bin("bridge"),
            &chain.call("DEL", &id, Some(&netns), "frl0"),
            &chain.request(&chain.bridge, None, None),
        );
    }
}

#[test]
fn the_proxy_api_refuses_users_other_than_root() {
    require_root();
    let dir = tempdir("pxuser");
    let daemon = ProxyDaemon::start(dir.path(), &[]);
    let sock = daemon.socket.display().to_string();
    let body = json!({"id": "frl-nobody", "proto": "tcp", "hostIP": "127.0.0.1", "hostPort": 27900,
                      "containerIP": "127.0.0.1", "containerPort": 9})
    .to_string();
    let as_nobody = || {
        Command::new("curl")
            .args([
                "-sS",
                "-m",
                "5",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
                &sock,
            ])
            .args([
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data",
                &body,
            ])
            .arg("http://ferry-proxy/v1/mappings")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    // 1. As installed: the socket is not even reachable for nobody.
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o077,
        0,
        "the API socket is {mode:o}: others may connect"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_nobody();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        !text.trim_end().ends_with("201") && !text.trim_end().ends_with("200"),
        "nobody added a mapping: {text}"
    );
    // 2. Even with the socket opened to everyone, the peer's credentials are refused.
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = as_nobody();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.trim_end().ends_with("403"),
        "nobody on a 0777 socket: {text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed: Vec<Value> = daemon.list();
    assert!(
        listed.is_empty(),
        "a mapping was created for nobody: {listed:?}"
    );
    assert!(std::net::TcpStream::connect_timeout(
        &"127.0.0.1:27900".parse().unwrap(),
        Duration::from_millis(300)
    )
    .is_err());
}
