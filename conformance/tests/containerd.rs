//! containerd's CRI as a client: the conflists in `testdata/containerd/` (what containerd's
//! CRI writes/reads from `/etc/cni/net.d`) run through real libcni (the libcni driver, the
//! library under containerd's go-cni) with a `bin_dir` holding ferry's plugins, the
//! `CNI_ARGS` the CRI sends, and the capabilities it fills in: `portMappings` and
//! `ipRanges`. Checked: the address comes from `ipRanges`, the pod answers directly, on
//! 127.0.0.1:hostPort and from an outside netns through the host address; libcni's cache
//! entry is there and ferry reads it (`ferry ports`); CHECK passes; DEL leaves no veth,
//! rule, lease or cache entry.
//!
//! Everything happens in a private "host" netns; the conf dir, bin dir, cache and leases
//! live in a temp dir laid out like `/etc/cni/net.d`, `/opt/cni/bin`, `/var/lib/cni`.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::{assert_served, Netns};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;

/// Builds `conformance/libcni-driver` once per test binary (as `tests/libcni.rs` does).
fn driver() -> PathBuf {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libcni-driver-clients");
            std::fs::create_dir_all(&out_dir).unwrap();
            let bin = out_dir.join("libcni-driver");
            let o = Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(".")
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("libcni-driver"))
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOFLAGS", "")
                .env("GOCACHE", out_dir.join("gocache"))
                .output()
                .expect("running go: install golang-go and golang-github-appc-cni-dev");
            assert!(
                o.status.success(),
                "building the libcni driver: {}",
                clients::text(&o)
            );
            bin
        })
        .clone()
}

/// A busybox httpd in a netns, killed (by PID) on drop.
struct Httpd(Child);

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CRI's layout in a temp dir: `etc/cni/net.d`, `opt/cni/bin` (ferry's plugins),
/// `var/lib/cni` (cache), `ipam` (leases).
struct Cri {
    tmp: tempfile::TempDir,
}

impl Cri {
    fn new() -> Cri {
        let tmp = tempfile::Builder::new()
            .prefix("fcl-containerd-")
            .tempdir()
            .unwrap();
        let plugins = common::ferry_plugins();
        let bin = tmp.path().join("opt/cni/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(tmp.path().join("etc/cni/net.d")).unwrap();
        for p in ["bridge", "host-local", "portmap"] {
            std::os::unix::fs::symlink(plugins.join(p), bin.join(p)).unwrap();
        }
        Cri { tmp }
    }
    fn conf_dir(&self) -> PathBuf {
        self.tmp.path().join("etc/cni/net.d")
    }
    fn bin_dir(&self) -> PathBuf {
        self.tmp.path().join("opt/cni/bin")
    }
    fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("var/lib/cni")
    }
    fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }

    /// libcni (the driver) in the host netns, with the CRI's environment.
    fn libcni(&self, host: &Netns, verb: &str, net: &str, pod: &Netns, caps: &Value) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &host.0])
            .arg(driver())
            .args([verb, net, &pod.path()])
            .env("NETCONFPATH", self.conf_dir())
            .env("CNI_PATH", self.bin_dir())
            .env("CNI_CACHE_DIR", self.cache_dir())
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=fcl-web;\
                 K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=fcl-uid-1",
            )
            .env("CAP_ARGS", caps.to_string())
            .output()
            .unwrap()
    }
}

/// Where the pod's addresses come from.
enum Addressing {
    /// The conflist's own `ranges` (made private: 10.213.154.0/24, fd00:213:144:1::/64).
    ConfigRanges,
    /// The runtime's `ipRanges` capability (10.213.155.0/24, fd00:213:144:2::/64).
    IpRanges,
}

/// ADD (portMappings, maybe ipRanges) → served directly, on 127.0.0.1 and from outside;
/// cache read by libcni and ferry; CHECK; DEL leaves nothing.
fn scenario(file: &str, addressing: Addressing, host_port: u16) {
    clients::require_root("the containerd tests");
    let cri = Cri::new();
    let tag = clients::tag();
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/containerd")
        .join(file);
    let mut list: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let net = list["name"].as_str().unwrap().to_string();
    let bridge_name = format!("fcl{tag}c");
    {
        let bridge = &mut list["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        bridge["bridge"] = json!(bridge_name);
        bridge["ipam"]["dataDir"] = json!(cri.ipam_dir());
        if bridge["ipam"].get("ranges").is_some() {
            bridge["ipam"]["ranges"] =
                json!([[{"subnet": "10.213.154.0/24"}], [{"subnet": "fd00:213:144:1::/64"}]]);
        }
    }
    // portmap's userlandProxy mode: a daemon private to this test (socket, state), stopped
    // by PID at the end.
    let userland = list["plugins"][1]["userlandProxy"] == json!(true);
    let socket = cri.tmp.path().join("proxy.sock");
    let _daemon = userland.then(|| DaemonBySocket(socket.display().to_string()));
    if userland {
        list["plugins"][1]["proxySocket"] = json!(socket);
        list["plugins"][1]["proxyStateDir"] = json!(cri.tmp.path().join("proxy-state"));
    }
    std::fs::write(
        cri.conf_dir().join(file.file_name().unwrap()),
        list.to_string(),
    )
    .unwrap();

    let host = Netns::new(&format!("fcl{tag}h"));
    let pod = Netns::new(&format!("fcl{tag}p"));
    let outside = clients::outside_client(
        &host,
        &format!("fcl{tag}o"),
        "10.213.150.9",
        "10.213.150.10",
    );
    let mut caps = json!({
        "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}],
    });
    let (want_v4, want_v6) = match addressing {
        Addressing::ConfigRanges => ("10.213.154.", "fd00:213:144:1:"),
        Addressing::IpRanges => {
            caps["ipRanges"] =
                json!([[{"subnet": "10.213.155.0/24"}], [{"subnet": "fd00:213:144:2::/64"}]]);
            ("10.213.155.", "fd00:213:144:2:")
        }
    };
    let add = cri.libcni(&host, "add", &net, &pod, &caps);
    assert!(add.status.success(), "libcni ADD: {}", clients::text(&add));
    let result: Value = serde_json::from_slice(&add.stdout).unwrap();
    let addrs: Vec<String> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["address"].as_str().map(str::to_string))
        .collect();
    let v4 = addrs
        .iter()
        .find(|a| a.starts_with(want_v4))
        .unwrap_or_else(|| panic!("no IPv4 address in {want_v4}0/24: {result}"))
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        addrs.iter().any(|a| a.starts_with(want_v6)),
        "no IPv6 address in {want_v6}:/64: {result}"
    );

    // A web server in the pod.
    let www = cri.tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "fcl-containerd-hello\n").unwrap();
    let _httpd = Httpd(
        // nsenter execs busybox itself: the child is the server, killed by its PID.
        Command::new("nsenter")
            .arg(format!("--net={}", pod.path()))
            .args(["busybox", "httpd", "-f", "-p", "80", "-h"])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let want = "fcl-containerd-hello";
    assert_served(Some(&host), &format!("http://{v4}/"), want, "host → pod");
    assert_served(
        Some(&host),
        &format!("http://127.0.0.1:{host_port}/"),
        want,
        "host → 127.0.0.1:hostPort",
    );
    assert_served(
        Some(&outside),
        &format!("http://10.213.150.9:{host_port}/"),
        want,
        "outside → host address:hostPort",
    );
    if userland {
        assert_served(
            Some(&host),
            &format!("http://[::1]:{host_port}/"),
            want,
            "host → [::1]:hostPort (userlandProxy)",
        );
    }

    // libcni's cache: one entry, read by libcni and by ferry.
    let entries: Vec<String> = std::fs::read_dir(cri.cache_dir().join("results"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 1, "cache entries: {entries:?}");
    assert!(entries[0].starts_with(&format!("{net}-")), "{entries:?}");
    let cached = cri.libcni(&host, "cached", &net, &pod, &caps);
    assert!(
        cached.status.success(),
        "libcni cached: {}",
        clients::text(&cached)
    );
    let ports = Command::new(common::FERRY)
        .args(["ports", &pod.path(), "--cache-dir"])
        .arg(cri.cache_dir())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ports.stdout).trim(),
        format!("80/tcp -> 0.0.0.0:{host_port}"),
        "ferry ports on libcni's cache: {}",
        clients::text(&ports)
    );
    let check = cri.libcni(&host, "check", &net, &pod, &caps);
    assert!(
        check.status.success(),
        "libcni CHECK: {}",
        clients::text(&check)
    );

    let del = cri.libcni(&host, "del", &net, &pod, &caps);
    assert!(del.status.success(), "libcni DEL: {}", clients::text(&del));
    let left = std::fs::read_dir(cri.cache_dir().join("results"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "cache entries left after DEL");
    let leases = clients::leases(&cri.ipam_dir(), &net);
    assert!(leases.is_empty(), "leases left after DEL: {leases:?}");
    let veths = clients::text(&host.exec(&["ip", "-o", "link", "show", "type", "veth"]));
    let veths: Vec<&str> = veths
        .lines()
        .filter(|l| !l.contains(&format!("fcl{tag}oh@")))
        .collect();
    assert!(veths.is_empty(), "veths left after DEL: {veths:#?}");
    let rules = host.rules();
    let left = clients::rules_mentioning(
        &rules,
        &[
            &format!("{v4}/"),
            &format!("{v4}:"),
            &format!("{v4} "),
            &format!("dport {host_port}"),
            want_v6,
        ],
    );
    assert!(left.is_empty(), "rules left after DEL: {left:#?}");
    let held = clients::text(&host.exec(&["ss", "-ltnH", &format!("sport = :{host_port}")]));
    assert!(
        held.trim().is_empty(),
        "host port still held after DEL: {held}"
    );
}

/// Stops (SIGTERM, by PID) the proxy daemon portmap started on this test's private socket.
struct DaemonBySocket(String);

impl Drop for DaemonBySocket {
    fn drop(&mut self) {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            if !String::from_utf8_lossy(&cmd).contains(&self.0) {
                continue;
            }
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

#[test]
fn containerd_net_conflist_with_port_mappings_and_cache() {
    scenario(
        "10-containerd-net.conflist",
        Addressing::ConfigRanges,
        30200,
    );
}

#[test]
fn containerd_ip_ranges_conflist_with_port_mappings_and_cache() {
    scenario(
        "20-containerd-ipranges.conflist",
        Addressing::IpRanges,
        30201,
    );
}

#[test]
fn containerd_userland_proxy_conflist_serves_ipv6_loopback() {
    scenario(
        "30-containerd-userland.conflist",
        Addressing::ConfigRanges,
        30202,
    );
}
