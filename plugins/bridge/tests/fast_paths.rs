//! The two shortcuts that make bridge fast, and that they change nothing a runtime sees:
//! ferry's own host-local runs in process (a host-local found elsewhere on CNI_PATH is
//! still executed), and DEL leaves the kernel's slow part of the veth delete to a detached
//! process (the pair is gone when DEL returns; the process exits by itself).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ferry_bridge::deferred_delete::HANDOFF_ENV;
use serde_json::{json, Value};

fn conf(name: &str, data: &TempDir) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": "fbrbr0",
        "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.213.19.0/24"}]],
                 "routes": [{"dst": "10.213.31.0/24"}]},
    })
}

fn call<'a>(
    cmd: &'a str,
    id: &'a str,
    netns: &'a str,
    cni_path: &'a str,
    args: &'a str,
) -> Call<'a> {
    Call {
        bin: ferry_bridge(),
        cmd,
        id,
        netns: Some(netns),
        ifname: "eth0",
        cni_path,
        args,
    }
}

/// A CNI_PATH directory whose `host-local` is a script that logs each call and then runs
/// ferry's host-local: not beside the bridge binary, so bridge must exec it.
fn logging_host_local(dir: &TempDir) -> std::path::PathBuf {
    let log = dir.0.join("calls.log");
    let real = ferry_bridge().with_file_name("host-local");
    assert!(
        real.exists(),
        "ferry's host-local must be built beside bridge"
    );
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND\" >> {}\nexec {} \"$@\"\n",
        log.display(),
        real.display()
    );
    let p = dir.0.join("host-local");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    log
}

/// The lease file of `ip`: `<container ID>\r\n<ifname>`, the reference's format.
fn lease_of(data: &TempDir, net: &str, ip: &str) -> String {
    std::fs::read_to_string(Path::new(&data.path()).join(net).join(ip)).unwrap_or_default()
}

/// What of a bridge result does not depend on which container it is.
fn shape(r: &Value) -> Value {
    let mut ips = r["ips"].clone();
    for ip in ips.as_array_mut().unwrap() {
        ip.as_object_mut().unwrap().remove("address");
    }
    json!({"cniVersion": r["cniVersion"], "ips": ips, "routes": r["routes"], "dns": r["dns"],
           "interfaces": r["interfaces"].as_array().unwrap().len()})
}

#[test]
fn host_local_in_process_and_executed_give_the_same_result_and_state() {
    let (h, data) = (Host::new(), TempDir::new("d"));
    let ours = CniPath::new(); // symlink to the host-local beside bridge: in process
    let spy_dir = TempDir::new("spy");
    let log = logging_host_local(&spy_dir);
    let c = conf("fbrnet-ipam", &data);
    let (a, b) = (TestNs::new("ia"), TestNs::new("ib"));
    let (a, b) = (a.path(), b.path());

    let ra = run_in(
        Some(h.name()),
        &call(
            "ADD",
            "ipa",
            &a,
            &ours.path(),
            "IgnoreUnknown=1;IP=10.213.19.10",
        ),
        &c,
    )
    .expect_ok()
    .json();
    assert!(
        !log.exists(),
        "the in-process path must not run the logging host-local"
    );
    let rb = run_in(
        Some(h.name()),
        &call(
            "ADD",
            "ipb",
            &b,
            &spy_dir.path(),
            "IgnoreUnknown=1;IP=10.213.19.11",
        ),
        &c,
    )
    .expect_ok()
    .json();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ADD\n");

    assert_eq!(ra["ips"][0]["address"], "10.213.19.10/24");
    assert_eq!(rb["ips"][0]["address"], "10.213.19.11/24");
    assert_eq!(shape(&ra), shape(&rb));
    assert_eq!(
        lease_of(&data, "fbrnet-ipam", "10.213.19.10"),
        "ipa\r\neth0"
    );
    assert_eq!(
        lease_of(&data, "fbrnet-ipam", "10.213.19.11"),
        "ipb\r\neth0"
    );

    // CHECK and DEL through either path, each releasing only its own lease
    for (id, ns, path, prev) in [
        ("ipa", &a, ours.path(), &ra),
        ("ipb", &b, spy_dir.path(), &rb),
    ] {
        let mut cc = c.clone();
        cc["prevResult"] = prev.clone();
        run_in(Some(h.name()), &call("CHECK", id, ns, &path, ""), &cc).expect_ok();
        run_in(Some(h.name()), &call("DEL", id, ns, &path, ""), &c).expect_ok();
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ADD\nCHECK\nDEL\n");
    assert!(leases(&data.path(), "fbrnet-ipam").is_empty());
}

/// PIDs of live veth deleters working in the namespace at `netns` (their environment
/// names the hand-off, their stdin is that namespace).
fn deleters_in(netns: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(netns).unwrap();
    let needle = format!("{HANDOFF_ENV}=");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let handoff = env
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(needle.as_bytes()));
        // stdin is the namespace: the same inode, whichever path it was opened by
        let stdin_is_ns = std::fs::metadata(e.path().join("fd/0"))
            .is_ok_and(|m| m.dev() == ns.dev() && m.ino() == ns.ino());
        if handoff && stdin_is_ns {
            pids.push(pid);
        }
    }
    pids
}

fn wait_no_deleters(netns: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deleters_in(netns);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "veth deleter for {netns} still running after 5 s: pids {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn del_returns_with_the_pair_gone_and_the_ifname_free_and_leaves_no_process() {
    let (h, cp, data) = (Host::new(), CniPath::new(), TempDir::new("d"));
    let c = conf("fbrnet-quickdel", &data);
    let ns_guard = TestNs::new("qd");
    let ns = ns_guard.path();
    let mut ids = vec![];
    let mut handed_off = 0;
    for round in 0..3 {
        // the same ifname and the same address again at once, in the same netns
        let id = format!("qd{round}");
        let r = run_in(
            Some(h.name()),
            &call(
                "ADD",
                &id,
                &ns,
                &cp.path(),
                "IgnoreUnknown=1;IP=10.213.19.20",
            ),
            &c,
        )
        .expect_ok()
        .json();
        let host_veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
        assert!(h.link_exists(&host_veth));
        run_in(Some(h.name()), &call("DEL", &id, &ns, &cp.path(), ""), &c).expect_ok();
        // the kernel's slow part is still going on in a detached deleter (for 10-30 ms)
        handed_off += usize::from(!deleters_in(&ns).is_empty());
        // checked right after DEL returned, no polling
        assert!(
            !h.link_exists(&host_veth),
            "host veth still listed after DEL"
        );
        assert!(
            !ns_guard
                .exec(&["ip", "link", "show", "eth0"])
                .status
                .success(),
            "eth0 still in the container after DEL"
        );
        assert!(h.ports_of("fbrbr0").is_empty());
        assert!(leases(&data.path(), "fbrnet-quickdel").is_empty());
        ids.push(host_veth);
    }
    assert_eq!(ids.len(), 3);
    assert!(
        handed_off > 0,
        "no DEL handed the veth delete off to a deleter"
    );
    wait_no_deleters(&ns);
}

#[test]
fn the_deleter_mode_removes_only_the_veth_it_was_given() {
    let h = Host::new();
    let tag = uniq();
    let (veth, peer) = (format!("fbrv{tag}"), format!("fbrp{tag}"));
    h.ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
    h.ip(&["link", "add", "fbrbr0", "type", "bridge"]);
    let index_of = |name: &str| -> String {
        let v: Value = serde_json::from_str(&h.sh(&["ip", "-j", "link", "show", name])).unwrap();
        v[0]["ifindex"].to_string()
    };
    // The deleter runs in the test's own namespace and works in the one open on its stdin.
    let deleter_with = |value: String, stdin: std::process::Stdio| {
        let out = Command::new(ferry_bridge())
            .env_clear()
            .env(HANDOFF_ENV, value)
            .stdin(stdin)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    };
    let host_ns = || std::process::Stdio::from(std::fs::File::open(h.ns.path()).unwrap());
    let deleter = |value: String| deleter_with(value, host_ns());
    // not a veth: left alone
    deleter(format!("{}:fbrbr0", index_of("fbrbr0")));
    assert!(h.link_exists("fbrbr0"));
    // a veth, but the index names another link: left alone
    deleter(format!("{}:{veth}", index_of(&peer)));
    assert!(h.link_exists(&veth) && h.link_exists(&peer));
    // junk, or no namespace on stdin: nothing happens
    deleter("garbage".into());
    deleter_with(
        format!("{}:{veth}", index_of(&veth)),
        std::process::Stdio::null(),
    );
    assert!(h.link_exists(&veth));
    // the veth it was given: gone, with its peer
    deleter(format!("{}:{veth}", index_of(&veth)));
    assert!(!h.link_exists(&veth) && !h.link_exists(&peer));
}
