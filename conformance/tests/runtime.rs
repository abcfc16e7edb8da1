//! (RT) checks of ferry's runtime against the checklist's §6, with spy plugins.

mod common;

use common::{err, pairs, Setup};
use serde_json::{json, Value};

const NS: &str = "/var/run/netns/fcf-rt-x";

fn ip_result(v: &str) -> Value {
    json!({"cniVersion": v, "ips": [{"address": "10.213.81.5/24", "gateway": "10.213.81.1"}], "foo": "dropped"})
}

fn three_spies(s: &Setup, version: &str, b_add: Option<Value>) -> Value {
    let mut b = json!({"type": "spy-b"});
    if let Some(add) = b_add {
        b["spy"] = json!({"ADD": add});
    }
    let list = json!({"cniVersion": version, "name": "rt", "plugins": [
        {"type": "spy-a", "spy": {"ADD": {"stdout": ip_result(version)}}}, b, {"type": "spy-c"}]});
    s.conf("10-rt.conflist", &list);
    list
}

#[test]
fn add_then_del_runs_chain_forward_then_reverse_with_the_final_result() {
    let s = Setup::new();
    three_spies(&s, "1.0.0", None);
    let o = s.ferry(&["add", "rt", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        printed.get("foo").is_none(),
        "unknown result keys are dropped (4.8)"
    );
    assert_eq!(
        s.calls(),
        pairs(&[("ADD", "spy-a"), ("ADD", "spy-b"), ("ADD", "spy-c")])
    );
    let log = s.log();
    assert!(log[0].stdin_json().get("prevResult").is_none());
    assert_eq!(
        log[1].stdin_json()["prevResult"]["ips"][0]["address"],
        "10.213.81.5/24"
    );
    assert!(log[1].stdin_json()["prevResult"].get("foo").is_none());
    assert_eq!(s.cached().len(), 1);
    s.clear_log();
    let o = s.ferry(&["del", "rt", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        s.calls(),
        pairs(&[("DEL", "spy-c"), ("DEL", "spy-b"), ("DEL", "spy-a")])
    );
    let prevs: Vec<Value> = s
        .log()
        .iter()
        .map(|r| r.stdin_json()["prevResult"].clone())
        .collect();
    assert!(
        prevs.iter().all(|p| *p == prevs[0] && !p.is_null()),
        "same final prevResult: {prevs:?}"
    );
    assert!(s.cached().is_empty(), "cache removed after DEL");
    s.clear_log();
    let o = s.ferry(&["del", "rt", NS], &[]);
    assert!(o.status.success());
    assert!(s
        .log()
        .iter()
        .all(|r| r.stdin_json().get("prevResult").is_none()));
}

#[test]
fn failed_add_writes_no_cache_and_dels_the_whole_chain() {
    let s = Setup::new();
    three_spies(
        &s,
        "1.0.0",
        Some(json!({"exit": 1, "stdout": {"code": 11, "msg": "b failed"}})),
    );
    let o = s.ferry(&["add", "rt", NS], &[]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("b failed") && err(&o).contains("code 11"),
        "{}",
        err(&o)
    );
    assert!(
        err(&o).contains(r#"plugin type="spy-b" failed (add)"#),
        "{}",
        err(&o)
    );
    assert_eq!(
        s.calls(),
        pairs(&[
            ("ADD", "spy-a"),
            ("ADD", "spy-b"),
            ("DEL", "spy-c"),
            ("DEL", "spy-b"),
            ("DEL", "spy-a")
        ])
    );
    assert!(s.cached().is_empty());
    assert!(s.log()[2..]
        .iter()
        .all(|r| r.stdin_json().get("prevResult").is_none()));
}

#[test]
fn env_name_and_version_are_injected_for_every_plugin() {
    let s = Setup::new();
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersions": ["0.4.0", "1.0.0", "1.1.0", "99.0.0"], "name": "rt", "plugins": [
            {"type": "spy-a", "name": "other", "cniVersion": "0.3.1", "nested": {"u": "é", "big": 12345678901234567u64, "n": null}},
            {"type": "spy-b"}]}),
    );
    let o = s.ferry(
        &["add", "rt", NS],
        &[("CNI_ARGS", "K=V;IgnoreUnknown=1"), ("CNI_IFNAME", "net1")],
    );
    assert!(o.status.success(), "{}", err(&o));
    for r in s.log() {
        let c = r.stdin_json();
        assert_eq!(c["name"], "rt");
        assert_eq!(c["cniVersion"], "1.1.0");
        assert_eq!(r.env["CNI_ARGS"], "K=V;IgnoreUnknown=1");
        assert_eq!(r.env["CNI_IFNAME"], "net1");
        assert_eq!(r.env["CNI_NETNS"], NS);
        assert_eq!(
            r.env["CNI_CONTAINERID"],
            ferry_conformance::runtime::cli::container_id_for(std::path::Path::new(NS))
        );
        assert_eq!(r.env["CNI_PATH"], s.bin().display().to_string());
        // 1.14: the plugin runs in the runtime's netns.
        assert_eq!(
            r.netns,
            std::fs::read_link("/proc/self/ns/net")
                .unwrap()
                .display()
                .to_string()
        );
    }
    assert_eq!(
        s.log()[0].stdin_json()["nested"],
        json!({"u": "é", "big": 12345678901234567u64, "n": null})
    );
}

#[test]
fn capabilities_become_runtime_config_only_where_declared() {
    let s = Setup::new();
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [
            {"type": "spy-a", "capabilities": {"portMappings": true, "mac": false}},
            {"type": "spy-b", "capabilities": {"portMappings": true}},
            {"type": "spy-c", "runtimeConfig": {"kept": 1}}]}),
    );
    let caps = json!({"portMappings": [{"hostPort": 25001, "containerPort": 80, "protocol": "tcp"}],
                      "mac": "c2:11:22:33:44:55", "bandwidth": {"ingressRate": 1}});
    let o = s.ferry(&["add", "rt", NS], &[("CAP_ARGS", &caps.to_string())]);
    assert!(o.status.success(), "{}", err(&o));
    let log = s.log();
    for r in &log[..2] {
        assert_eq!(
            r.stdin_json()["runtimeConfig"],
            json!({"portMappings": caps["portMappings"]})
        );
    }
    assert_eq!(
        log[2].stdin_json()["runtimeConfig"],
        json!({"kept": 1}),
        "file value passes when nothing matches"
    );
    let ports = s.ferry(&["ports"], &[]);
    assert!(String::from_utf8_lossy(&ports.stdout).contains("80/tcp -> 0.0.0.0:25001"));
}

#[test]
fn check_respects_disable_check_and_the_version_gate() {
    let s = Setup::new();
    for flag in [json!(true), json!("TRUE")] {
        s.conf("10-rt.conflist", &json!({"cniVersion": "1.0.0", "name": "rt", "disableCheck": flag, "plugins": [{"type": "spy-a"}]}));
        let o = s.ferry(&["check", "rt", NS], &[]);
        assert!(o.status.success(), "{}", err(&o));
        assert!(s.log().is_empty());
    }
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "0.3.1", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    let o = s.ferry(&["check", "rt", NS], &[]);
    assert!(!o.status.success() && err(&o).contains("does not support the CHECK command"));
    assert!(s.log().is_empty());
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    let o = s.ferry(&["check", "rt", NS], &[]);
    assert!(
        !o.status.success() && err(&o).contains("never added"),
        "{}",
        err(&o)
    );
}

#[test]
fn gc_dels_every_cached_attachment_then_gcs_each_plugin() {
    let s = Setup::new();
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.1.0", "name": "rt", "plugins": [
        {"type": "spy-a", "spy": {"ADD": {"stdout": ip_result("1.1.0")}, "GC": {"exit": 1, "stdout": {"code": 11, "msg": "a gc failed"}}}},
        {"type": "spy-b"}]}));
    for ns in ["/run/netns/fcf-rt-1", "/run/netns/fcf-rt-2"] {
        assert!(s.ferry(&["add", "rt", ns], &[]).status.success());
    }
    s.clear_log();
    let o = s.ferry(&["gc", "rt"], &[]);
    assert!(!o.status.success(), "spy-a's GC error is reported");
    assert!(err(&o).contains("a gc failed"));
    let calls = s.calls();
    assert_eq!(
        calls.iter().filter(|c| c.0 == "DEL").count(),
        4,
        "{calls:?}"
    );
    assert_eq!(
        &calls[4..],
        &pairs(&[("GC", "spy-a"), ("GC", "spy-b")])[..],
        "a failing GC does not stop the others"
    );
    assert!(
        s.log()[4]
            .stdin_json()
            .get("cni.dev/valid-attachments")
            .is_none(),
        "cnitool-style gc sends no list"
    );
    assert!(s.cached().is_empty());
    // The library API with a valid list.
    let list = ferry_conformance::runtime::config::load(&s.net(), "rt").unwrap();
    let rt = ferry_conformance::runtime::Runtime {
        cni_path: vec![s.bin()],
        cache_dir: s.cache(),
        timeout: std::time::Duration::from_secs(30),
    };
    for ns in [
        "/run/netns/fcf-rt-1",
        "/run/netns/fcf-rt-2",
        "/run/netns/fcf-rt-3",
    ] {
        assert!(s.ferry(&["add", "rt", ns], &[]).status.success());
    }
    s.clear_log();
    let keep = ferry_conformance::runtime::cli::container_id_for(std::path::Path::new(
        "/run/netns/fcf-rt-2",
    ));
    let _ = rt.gc(&list, Some(&[(keep.clone(), "eth0".to_string())]));
    let gc = s
        .log()
        .into_iter()
        .find(|r| r.command == "GC")
        .unwrap()
        .stdin_json();
    assert_eq!(
        gc["cni.dev/valid-attachments"],
        json!([{"containerID": keep, "ifname": "eth0"}])
    );
    assert_eq!(gc["cni.dev/attachments"], gc["cni.dev/valid-attachments"]);
    assert_eq!(s.cached().len(), 1);
    // disableGC: nothing runs.
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.1.0", "name": "rt", "disableGC": true, "plugins": [{"type": "spy-a"}]}));
    s.clear_log();
    assert!(s.ferry(&["gc", "rt"], &[]).status.success());
    assert!(s.log().is_empty());
}

#[test]
fn status_stops_at_the_first_failure_and_is_skipped_below_1_1() {
    let s = Setup::new();
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.1.0", "name": "rt", "plugins": [
        {"type": "spy-a"}, {"type": "spy-b", "spy": {"STATUS": {"exit": 1, "stdout": {"code": 50, "msg": "no addresses"}}}}, {"type": "spy-c"}]}));
    let o = s.ferry(&["status", "rt"], &[]);
    assert!(!o.status.success());
    assert!(err(&o).contains("code 50"), "{}", err(&o));
    assert_eq!(
        s.calls(),
        pairs(&[("STATUS", "spy-a"), ("STATUS", "spy-b")])
    );
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    s.clear_log();
    assert!(s.ferry(&["status", "rt"], &[]).status.success());
    assert!(s.log().is_empty());
}

#[test]
fn plugin_errors_are_read_like_libcni() {
    let s = Setup::new();
    let cases = [
        (json!({"exit": 1, "stderr": "boom"}), "boom"),
        (json!({"exit": 1, "stdout": "not json"}), "not json"),
        (
            json!({"exit": 1, "stdout": {"code": 7, "msg": "bad config", "details": "d"}}),
            "bad config (code 7); d",
        ),
    ];
    for (answer, want) in cases {
        s.conf("10-rt.conflist", &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-a", "spy": {"ADD": answer}}]}));
        let o = s.ferry(&["add", "rt", NS], &[]);
        assert!(!o.status.success());
        assert!(err(&o).contains(want), "want {want:?} in {}", err(&o));
    }
}

#[test]
fn config_discovery_follows_libcni_order() {
    let s = Setup::new();
    s.conf(
        "10-a.conflist",
        &json!({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "spy-b"}]}),
    );
    s.conf(
        "20-b.conflist",
        &json!({"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "spy-a"}]}),
    );
    s.conf(
        "05-x.conf",
        &json!({"cniVersion": "1.0.0", "name": "a", "type": "spy-c"}),
    );
    s.conf(
        "30-y.CONFLIST",
        &json!({"cniVersion": "1.0.0", "name": "y", "plugins": [{"type": "spy-c"}]}),
    );
    s.conf(
        "40-z.conf",
        &json!({"cniVersion": "0.4.0", "name": "z", "type": "spy-c"}),
    );
    assert!(s.ferry(&["add", "a", NS], &[]).status.success());
    assert!(s.ferry(&["add", "b", NS], &[]).status.success());
    assert_eq!(
        s.calls(),
        pairs(&[("ADD", "spy-a"), ("ADD", "spy-b")]),
        ".conflist wins over .conf"
    );
    let o = s.ferry(&["add", "y", NS], &[]);
    assert!(
        !o.status.success() && err(&o).contains("no net configuration with name \"y\""),
        "{}",
        err(&o)
    );
    s.clear_log();
    assert!(
        s.ferry(&["add", "z", NS], &[]).status.success(),
        "legacy .conf is wrapped"
    );
    let z = &s.log()[0];
    assert_eq!(
        (z.name().as_str(), z.stdin_json()["cniVersion"].as_str()),
        ("spy-c", Some("0.4.0"))
    );
    std::fs::write(s.net().join("05-broken.conflist"), "{not json").unwrap();
    let o = s.ferry(&["add", "a", NS], &[]);
    assert!(
        !o.status.success() && err(&o).contains("05-broken"),
        "a broken file stops the look-up"
    );
}

#[test]
fn subfolder_plugins_follow_inline_ones_unless_only_inlined() {
    let s = Setup::new();
    s.conf("rt/2.conf", &json!({"type": "spy-c"}));
    s.conf("rt/1.conf", &json!({"type": "spy-b"}));
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.1.0", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    assert!(s.ferry(&["add", "rt", NS], &[]).status.success());
    assert_eq!(
        s.calls(),
        pairs(&[("ADD", "spy-a"), ("ADD", "spy-b"), ("ADD", "spy-c")])
    );
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.1.0", "name": "rt", "loadOnlyInlinedPlugins": "true", "plugins": [{"type": "spy-a"}]}));
    s.clear_log();
    assert!(s
        .ferry(&["add", "rt", "/run/netns/fcf-rt-other"], &[])
        .status
        .success());
    assert_eq!(s.calls(), pairs(&[("ADD", "spy-a")]));
}

#[test]
fn del_converts_the_cached_result_to_the_list_version() {
    let s = Setup::new();
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.1.0", "name": "rt", "plugins": [{"type": "spy-a", "spy": {"ADD": {"stdout": ip_result("1.1.0")}}}]}));
    assert!(s.ferry(&["add", "rt", NS], &[]).status.success());
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "0.4.0", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    s.clear_log();
    assert!(s.ferry(&["del", "rt", NS], &[]).status.success());
    let prev = s.log()[0].stdin_json()["prevResult"].clone();
    assert_eq!(prev["cniVersion"], "0.4.0");
    assert_eq!(prev["ips"][0]["version"], "4");
}

#[test]
fn concurrent_adds_for_one_container_do_not_overlap() {
    let s = Setup::new();
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-a", "spy": {"ADD": {"sleepMs": 300, "stdout": ip_result("1.0.0")}}}]}));
    std::thread::scope(|sc| {
        let a = sc.spawn(|| s.ferry(&["add", "rt", NS], &[]));
        let b = sc.spawn(|| s.ferry(&["add", "rt", NS], &[]));
        assert!(a.join().unwrap().status.success());
        assert!(b.join().unwrap().status.success());
    });
    let log = s.log();
    assert_eq!(log.len(), 2);
    let (x, y) = (&log[0], &log[1]);
    assert!(
        x.end_ns <= y.start_ns || y.end_ns <= x.start_ns,
        "calls overlapped"
    );
}

#[test]
fn gc_waits_for_a_running_add() {
    let s = Setup::new();
    let started = s.dir.path().join("add-started");
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.1.0", "name": "rt", "plugins": [
        {"type": "spy-a", "spy": {"ADD": {"sleepMs": 700, "touch": started, "stdout": ip_result("1.1.0")}}}]}));
    std::thread::scope(|sc| {
        let add = sc.spawn(|| s.ferry(&["add", "rt", NS], &[]));
        wait_for(&started);
        let gc = s.ferry(&["gc", "rt"], &[]);
        assert!(gc.status.success(), "{}", err(&gc));
        assert!(add.join().unwrap().status.success());
    });
    let log = s.log();
    let add = log.iter().find(|r| r.command == "ADD").unwrap();
    let gc = log.iter().find(|r| r.command == "GC").unwrap();
    assert!(
        gc.start_ns >= add.end_ns,
        "GC started while ADD was running"
    );
}

#[test]
fn a_container_id_too_long_for_the_cache_fails_before_any_plugin_runs() {
    let s = Setup::new();
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    let list = ferry_conformance::runtime::config::load(&s.net(), "rt").unwrap();
    let rt = ferry_conformance::runtime::Runtime {
        cni_path: vec![s.bin()],
        cache_dir: s.cache(),
        timeout: std::time::Duration::from_secs(30),
    };
    let conf = ferry_conformance::runtime::RuntimeConf {
        container_id: "a".repeat(300),
        netns: NS.into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let e = rt.add(&list, &conf).unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("NAME_MAX"), "{e}");
    assert!(s.log().is_empty());
}

#[test]
fn exec_is_retried_while_the_binary_is_busy() {
    let s = Setup::new();
    let busy = s.bin().join("spy-busy");
    std::fs::copy(common::FERRY, &busy).unwrap();
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-busy"}]}),
    );
    let writer = std::fs::OpenOptions::new().write(true).open(&busy).unwrap();
    std::thread::scope(|sc| {
        let add = sc.spawn(|| s.ferry(&["add", "rt", NS], &[]));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(writer);
        let o = add.join().unwrap();
        assert!(o.status.success(), "{}", err(&o));
    });
    assert_eq!(s.calls(), pairs(&[("ADD", "spy-busy")]));
}

#[test]
fn add_waits_for_a_running_gc() {
    let s = Setup::new();
    let started = s.dir.path().join("gc-started");
    s.conf("10-rt.conflist", &json!({"cniVersion": "1.1.0", "name": "rt", "plugins": [
        {"type": "spy-a", "spy": {"GC": {"sleepMs": 700, "touch": started}, "ADD": {"stdout": ip_result("1.1.0")}}}]}));
    std::thread::scope(|sc| {
        let gc = sc.spawn(|| s.ferry(&["gc", "rt"], &[]));
        wait_for(&started);
        let add = s.ferry(&["add", "rt", NS], &[]);
        assert!(add.status.success(), "{}", err(&add));
        assert!(gc.join().unwrap().status.success());
    });
    let log = s.log();
    let add = log.iter().find(|r| r.command == "ADD").unwrap();
    let gc = log.iter().find(|r| r.command == "GC").unwrap();
    assert!(
        add.start_ns >= gc.end_ns,
        "ADD started while GC was running"
    );
}

fn cache_file(s: &Setup) -> std::path::PathBuf {
    let id = ferry_conformance::runtime::cli::container_id_for(std::path::Path::new(NS));
    ferry_conformance::runtime::cache::path(&s.cache(), "rt", &id, "eth0")
}

#[test]
fn an_unreadable_cache_entry_is_dropped_and_del_goes_on_without_prev_result() {
    let s = Setup::new();
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    let file = cache_file(&s);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "{garbage").unwrap();
    let o = s.ferry(&["del", "rt", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(s.log()[0].stdin_json().get("prevResult").is_none());
    assert!(!file.exists());
}

#[test]
fn a_bare_result_left_by_an_old_libcni_is_still_used() {
    let s = Setup::new();
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "0.4.0", "name": "rt", "plugins": [{"type": "spy-a"}]}),
    );
    let file = cache_file(&s);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.213.81.9/24"}]})
            .to_string(),
    )
    .unwrap();
    let o = s.ferry(&["del", "rt", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        s.log()[0].stdin_json()["prevResult"]["ips"][0]["address"],
        "10.213.81.9/24"
    );
}

/// Polls until `path` exists (a spy's "touch"), at most 30 s.
fn wait_for(path: &std::path::Path) {
    for _ in 0..3000 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn validate_probes_versions_and_treats_pre_version_plugins_as_0_1_0() {
    let s = Setup::new();
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [
        {"type": "spy-a"}, {"type": "spy-b"}]}),
    );
    let o = s.ferry(&["validate", "rt"], &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("spy-a: 0.1.0 0.2.0 0.3.0 0.3.1 0.4.0 1.0.0 1.1.0"));
    let version_probe = &s.log()[0];
    assert_eq!(
        (
            version_probe.env["CNI_NETNS"].as_str(),
            version_probe.env["CNI_PATH"].as_str()
        ),
        ("dummy", "dummy")
    );
    // 2.24: a plugin from before VERSION.
    let rt = ferry_conformance::runtime::Runtime {
        cni_path: vec![s.bin()],
        cache_dir: s.cache(),
        timeout: std::time::Duration::from_secs(30),
    };
    let old = s.bin().join("spy-old");
    std::fs::write(
        &old,
        format!(
            "#!/bin/bash\nexport FERRY_SPY_SCRIPT='{}'\nexec -a \"$0\" {} \"$@\"\n",
            json!({"VERSION": {"exit": 1, "stdout": {"code": 4, "msg": "unknown CNI_COMMAND: VERSION"}}}),
            common::FERRY
        ),
    )
    .unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(rt.plugin_versions("spy-old").unwrap(), ["0.1.0"]);
    s.conf(
        "10-rt.conflist",
        &json!({"cniVersion": "1.0.0", "name": "rt", "plugins": [{"type": "spy-old"}]}),
    );
    let o = s.ferry(&["validate", "rt"], &[]);
    assert!(
        !o.status.success() && err(&o).contains("does not support config version \"1.0.0\""),
        "{}",
        err(&o)
    );
}
