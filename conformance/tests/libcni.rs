//! Real libcni (Debian's golang-github-appc-cni-dev, built offline by this test) against
//! ferry: the result cache is shared both ways, and every `testdata/*.conflist` goes
//! through libcni with ferry's plugins — ADD, CHECK, DEL, GC — with real connectivity.

mod common;

use common::{err, Setup};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Builds `conformance/libcni-driver` once per test binary.
fn driver() -> PathBuf {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            // Cargo's scratch dir for integration tests: kept between runs, so Go's build
            // cache makes the rebuild quick, and nothing piles up in /tmp.
            let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libcni-driver");
            std::fs::create_dir_all(&out_dir).unwrap();
            let bin = out_dir.join("libcni-driver");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("libcni-driver");
            let o = Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(".")
                .current_dir(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOFLAGS", "")
                .env("GOCACHE", out_dir.join("gocache"))
                .output()
                .expect("running go: install golang-go and golang-github-appc-cni-dev");
            assert!(
                o.status.success(),
                "building the libcni driver: {}",
                err(&o)
            );
            bin
        })
        .clone()
}

fn run_driver(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(driver());
    c.args(args)
        .env("NETCONFPATH", s.net())
        .env("CNI_PATH", s.bin())
        .env("CNI_CACHE_DIR", s.cache())
        .env_remove("CNI_ARGS")
        .env_remove("CAP_ARGS")
        .env_remove("CNI_IFNAME");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

const NS: &str = "/var/run/netns/fcf-libcni-x";

fn spy_list(s: &Setup) {
    s.conf(
        "10-lc.conflist",
        &json!({"cniVersion": "1.0.0", "name": "lc", "plugins": [
            {"type": "spy-a", "capabilities": {"portMappings": true},
             "spy": {"ADD": {"stdout": {"cniVersion": "1.0.0", "ips": [{"address": "10.213.83.5/24"}]}}}},
            {"type": "spy-b"}]}),
    );
}

#[test]
fn ferry_uses_a_cache_written_by_libcni() {
    let s = Setup::new();
    spy_list(&s);
    let caps = r#"{"portMappings":[{"hostPort":25100,"containerPort":80,"protocol":"tcp"}]}"#;
    let o = run_driver(
        &s,
        &["add", "lc", NS],
        &[("CAP_ARGS", caps), ("CNI_ARGS", "IgnoreUnknown=1")],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(s.cached().len(), 1);
    let ports = s.ferry(&["ports"], &[]);
    assert!(String::from_utf8_lossy(&ports.stdout).contains("80/tcp -> 0.0.0.0:25100"));
    s.clear_log();
    let o = s.ferry(&["check", "lc", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let o = s.ferry(&["del", "lc", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    for r in s.log() {
        assert_eq!(
            r.stdin_json()["prevResult"]["ips"][0]["address"],
            "10.213.83.5/24",
            "{}",
            r.stdin
        );
    }
    let del = s.log().into_iter().find(|r| r.command == "DEL").unwrap();
    assert_eq!(
        del.env["CNI_ARGS"], "IgnoreUnknown=1",
        "cached CNI args are used"
    );
    assert!(s.cached().is_empty());
}

#[test]
fn libcni_uses_a_cache_written_by_ferry() {
    let s = Setup::new();
    spy_list(&s);
    let o = s.ferry(&["add", "lc", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let cached = run_driver(&s, &["cached", "lc", NS], &[]);
    assert!(cached.status.success(), "{}", err(&cached));
    let v: Value = serde_json::from_slice(&cached.stdout).unwrap();
    assert_eq!(v["ips"][0]["address"], "10.213.83.5/24");
    s.clear_log();
    let o = run_driver(&s, &["check", "lc", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let o = run_driver(&s, &["del", "lc", NS], &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(s
        .log()
        .iter()
        .all(|r| r.stdin_json()["prevResult"]["ips"][0]["address"] == "10.213.83.5/24"));
    assert!(s.cached().is_empty());
}

// ---------------------------------------------------------------- real plugins

/// Deletes a netns on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let o = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .unwrap();
        assert!(o.status.success(), "ip netns add {name}: {}", err(&o));
        Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .output()
            .unwrap();
        Netns(name.to_string())
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ferry_conformance::portmap_index::remove_for(Path::new(&self.path()));
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Makes a testdata conflist private to this run: unique bridge name, scratch dataDir.
fn privatise(list: &mut Value, tag: &str, data_dir: &Path) {
    for (i, p) in list["plugins"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        if p.get("bridge").is_some() {
            p["bridge"] = json!(format!("fcf{tag}b{i}"));
        }
        if let Some(ipam) = p.get_mut("ipam") {
            if ipam.get("type") == Some(&json!("host-local")) {
                ipam["dataDir"] = json!(data_dir);
            }
        }
    }
}

fn in_ns(ns: &str, cmd: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(cmd).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn every_testdata_conflist_works_under_libcni_with_ferry_plugins() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces)"
    );
    let plugins = common::ferry_plugins();
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let mut lists: Vec<PathBuf> = std::fs::read_dir(&testdata)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|x| x == "conflist").unwrap_or(false))
        .collect();
    lists.sort();
    assert!(!lists.is_empty(), "no testdata/*.conflist");
    for (n, file) in lists.iter().enumerate() {
        let tag = format!("{}{n}", std::process::id() % 10000);
        let host = Netns::new(&format!("fcf{tag}h"));
        let cont = Netns::new(&format!("fcf{tag}c"));
        let scratch = tempfile::Builder::new()
            .prefix("fcf-lc-")
            .tempdir()
            .unwrap();
        let net = scratch.path().join("net");
        std::fs::create_dir_all(&net).unwrap();
        let mut list: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        privatise(&mut list, &tag, &scratch.path().join("ipam"));
        let name = list["name"].as_str().unwrap().to_string();
        std::fs::write(net.join("10.conflist"), list.to_string()).unwrap();
        let env = vec![
            ("NETCONFPATH", net.display().to_string()),
            ("CNI_PATH", format!("{}:/usr/lib/cni", plugins.display())),
            ("CNI_CACHE_DIR", scratch.path().join("cache").display().to_string()),
            ("FERRY_CACHE_DIR", scratch.path().join("cache").display().to_string()),
            ("CAP_ARGS", json!({"portMappings": [{"hostPort": 25200 + n, "containerPort": 80, "protocol": "tcp"}]}).to_string()),
        ];
        let what = file.file_name().unwrap().to_string_lossy().to_string();
        let drv = driver();
        let add = in_ns(&host.0, &drv, &["add", &name, &cont.path()], &env);
        assert!(add.status.success(), "{what}: libcni ADD: {}", err(&add));
        let result: Value = serde_json::from_slice(&add.stdout).unwrap();
        let v4 = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["address"].as_str())
            .find(|a| !a.contains(':'))
            .map(|a| a.split('/').next().unwrap().to_string())
            .unwrap_or_else(|| panic!("{what}: no IPv4 address in {result}"));
        let ping = in_ns(
            &host.0,
            Path::new("/usr/bin/busybox"),
            &["ping", "-c", "1", "-W", "2", &v4],
            &[],
        );
        assert!(
            ping.status.success(),
            "{what}: host cannot reach the container at {v4}: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        let check = in_ns(&host.0, &drv, &["check", &name, &cont.path()], &env);
        assert!(
            check.status.success(),
            "{what}: libcni CHECK: {}",
            err(&check)
        );
        let fcheck = in_ns(
            &host.0,
            Path::new(common::FERRY),
            &["check", &name, &cont.path()],
            &env,
        );
        assert!(
            fcheck.status.success(),
            "{what}: ferry CHECK on libcni's cache: {}",
            err(&fcheck)
        );
        let del = in_ns(&host.0, &drv, &["del", &name, &cont.path()], &env);
        assert!(del.status.success(), "{what}: libcni DEL: {}", err(&del));
        // GC: ADD again, then GC removes the attachment.
        let add = in_ns(&host.0, &drv, &["add", &name, &cont.path()], &env);
        assert!(add.status.success(), "{what}: second ADD: {}", err(&add));
        let gc = in_ns(&host.0, &drv, &["gc", &name, &cont.path()], &env);
        assert!(gc.status.success(), "{what}: libcni GC: {}", err(&gc));
        let left = std::fs::read_dir(scratch.path().join("cache/results"))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{what}: cache entries left after GC");
        let eth0 = Command::new("ip")
            .args(["-n", &cont.0, "link", "show", "eth0"])
            .output()
            .unwrap();
        assert!(
            !eth0.status.success(),
            "{what}: eth0 still in the container after GC"
        );
    }
}
