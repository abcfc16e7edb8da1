//! A real client: podman 4.3 (Debian's `podman`, `--runtime runc`, CNI backend chosen by a
//! private `containers.conf`) runs busybox containers (`--rootfs`, no registry) on ferry's
//! plugins — a ferry-only chain and the chain `podman network create` writes (ferry
//! bridge/host-local/portmap, then the reference `firewall` and `tuning`).
//!
//! Every test runs podman under `nsenter --net` in a private "host" netns (`fcl<tag>h`), so
//! bridges, veths and firewall rules never reach the real host; an "outside" netns wired to
//! it by a veth plays a remote client. Storage (`--root`, `--runroot`) lives in a temp dir.
//! podman's libcni cache is the default `/var/lib/cni` (the test checks only its own
//! container IDs there).

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::{assert_not_served, assert_served, Netns};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// podman's default libcni cache.
const PODMAN_CNI_CACHE: &str = "/var/lib/cni";
/// ferry portmap's claim index.
const PORTMAP_STATE: &str = "/run/ferry/portmap";

/// Which plugins follow ferry's bridge in the conflist.
#[derive(Clone, Copy)]
enum Chain {
    /// bridge (+ host-local) → portmap, all ferry.
    FerryOnly,
    /// What podman writes: bridge → portmap → reference firewall → reference tuning.
    PodmanWrites,
}

/// One private podman installation: temp dir (conflists, storage, leases, rootfs), a
/// private host netns, the containers it started (removed on drop, before the netns goes).
struct Podman {
    host: Netns,
    tmp: tempfile::TempDir,
    started: RefCell<Vec<String>>,
    tag: String,
}

impl Podman {
    fn new() -> Podman {
        clients::require_root("the podman tests");
        let plugins = common::ferry_plugins();
        let tag = clients::tag();
        let tmp = tempfile::Builder::new()
            .prefix("fcl-podman-")
            .tempdir()
            .unwrap();
        let t = tmp.path();
        clients::busybox_rootfs(&t.join("rootfs"), "fcl-hello");
        std::fs::create_dir_all(t.join("net")).unwrap();
        std::fs::write(
            t.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n\
                 [containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
                plugins.display(),
                t.join("net").display()
            ),
        )
        .unwrap();
        let host = Netns::new(&format!("fcl{tag}h"));
        Podman {
            host,
            tmp,
            started: RefCell::new(Vec::new()),
            tag,
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir().join("ipam")
    }

    /// `podman ARGS` in the private host netns with the private config and storage.
    fn podman(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.host.path()))
            .arg("podman")
            .arg("--runtime")
            .arg("runc")
            .arg("--root")
            .arg(self.dir().join("root"))
            .arg("--runroot")
            .arg(self.dir().join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir().join("containers.conf"))
            .output()
            .unwrap()
    }

    /// Writes a conflist for network `name` from `testdata/podman` (the README quotes those
    /// files), made private: bridge `fcl<tag><suffix>`, subnet `<net24>.0/24`, scratch
    /// `dataDir`, `isolate` as asked.
    fn network(&self, name: &str, suffix: &str, net24: &str, chain: Chain, isolate: bool) {
        let file = match chain {
            Chain::FerryOnly => "88-ferry-only.conflist",
            Chain::PodmanWrites => "87-podman-bridge.conflist",
        };
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/podman")
            .join(file);
        let mut list: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        list["name"] = json!(name);
        let bridge = &mut list["plugins"][0];
        assert_eq!(bridge["type"], "bridge", "{file}: first plugin");
        bridge["bridge"] = json!(format!("fcl{}{suffix}", self.tag));
        bridge["ipam"]["dataDir"] = json!(self.ipam_dir());
        bridge["ipam"]["ranges"] =
            json!([[{"subnet": format!("{net24}.0/24"), "gateway": format!("{net24}.1")}]]);
        bridge["isolate"] = json!(isolate);
        std::fs::write(
            self.dir().join("net").join(format!("{name}.conflist")),
            serde_json::to_string_pretty(&list).unwrap(),
        )
        .unwrap();
    }

    /// `podman run -d` of busybox httpd on `networks` with `publish` (`-p` values);
    /// returns the container ID.
    fn run_httpd(&self, name: &str, networks: &str, publish: &[String]) -> String {
        let rootfs = self.dir().join("rootfs").display().to_string();
        let mut args = vec!["run", "-d", "--name", name, "--network", networks];
        for p in publish {
            args.push("-p");
            args.push(p);
        }
        args.extend_from_slice(&[
            "--rootfs",
            &rootfs,
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
        self.started.borrow_mut().push(name.to_string());
        let o = self.podman(&args);
        let out = clients::text(&o);
        assert!(
            o.status.success(),
            "podman run {name}: {out}{}",
            if out.contains("address already in use") {
                "\n(podman binds every published port in conmon *after* the CNI ADD; a host \
                 socket portmap left on that port — e.g. a userland-proxy listener on \
                 127.0.0.1:P — makes that bind fail)"
            } else {
                ""
            }
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The container's IPv4 address on `network`.
    fn ip(&self, name: &str, network: &str) -> String {
        let o = self.podman(&[
            "inspect",
            name,
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        ]);
        let ip = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            ip.parse::<std::net::Ipv4Addr>().is_ok(),
            "IP of {name} on {network}: {:?} {}",
            ip,
            clients::text(&o)
        );
        ip
    }

    /// Whether `from` fetches the page of the httpd at `ip` (busybox wget under a 2 s timeout); the error
    /// text when not.
    fn fetch(&self, from: &str, ip: &str) -> Result<(), String> {
        let url = format!("http://{ip}/");
        let mut last = String::new();
        for _ in 0..20 {
            // busybox-static's `wget -T` crashes (SIGSEGV): bound it with `timeout` instead.
            let o = self.podman(&[
                "exec",
                from,
                "/bin/busybox",
                "timeout",
                "2",
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "-",
                &url,
            ]);
            if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("fcl-hello") {
                return Ok(());
            }
            last = clients::text(&o);
            // A fresh container may not have its httpd up yet: only retry on refusal.
            if !last.contains("refused") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(last)
    }

    fn fetches(&self, from: &str, ip: &str) -> bool {
        match self.fetch(from, ip) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("{from} -> {ip}: {e}");
                false
            }
        }
    }

    /// `podman rm -f -t 0 NAME`, asserting success.
    fn rm(&self, name: &str) {
        let o = self.podman(&["rm", "-f", "-t", "0", name]);
        assert!(
            o.status.success(),
            "podman rm {name}: {}",
            clients::text(&o)
        );
        self.started.borrow_mut().retain(|n| n != name);
    }

    /// After `podman rm`: no veth in the host netns (but `keep`), no rule naming the
    /// container's ID, addresses or host ports, no lease, no libcni cache entry, nothing in
    /// ferry portmap's claim index.
    fn assert_nothing_left(
        &self,
        id: &str,
        ips: &[String],
        ports: &[u16],
        nets: &[&str],
        keep: &[&str],
    ) {
        let veths = clients::run(
            "ip",
            &["-n", &self.host.0, "-o", "link", "show", "type", "veth"],
        );
        let veths: Vec<String> = String::from_utf8_lossy(&veths.stdout)
            .lines()
            .filter(|l| !keep.iter().any(|k| l.contains(&format!(": {k}@"))))
            .map(str::to_string)
            .collect();
        assert!(veths.is_empty(), "veths left after podman rm: {veths:#?}");
        let mut needles: Vec<String> = vec![id.to_string(), id[..12].to_string()];
        for ip in ips {
            needles.push(format!("{ip}/"));
            needles.push(format!("{ip}:"));
            needles.push(format!("{ip} "));
        }
        for p in ports {
            needles.push(format!("dport {p} "));
            needles.push(format!("dport {p}\n"));
            needles.push(format!("--dport {p} "));
        }
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let rules = self.host.rules();
        let left = clients::rules_mentioning(&format!("{rules}\n"), &needles);
        assert!(left.is_empty(), "rules left after podman rm: {left:#?}");
        for net in nets {
            let leases = clients::leases(&self.ipam_dir(), net);
            assert!(leases.is_empty(), "leases left on {net}: {leases:?}");
        }
        let cached = clients::cache_entries(Path::new(PODMAN_CNI_CACHE), id);
        assert!(cached.is_empty(), "libcni cache entries left: {cached:?}");
        let claims = clients::files_mentioning(Path::new(PORTMAP_STATE), id);
        assert!(claims.is_empty(), "portmap claims left: {claims:?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in self.started.borrow().iter() {
            let _ = self.podman(&["rm", "-f", "-t", "0", name]);
        }
        // A userland-proxy daemon portmap may have started on the test's private socket.
        stop_daemon_by_socket(&self.dir().join("proxy.sock").display().to_string());
    }
}

/// Two containers on one network reach each other; `-p 127.0.0.1:P1:80` answers on
/// 127.0.0.1 only, `-p P2:80` on 127.0.0.1 and from outside through the host address;
/// `podman rm` leaves nothing.
fn published_ports(chain: Chain, net24: &str, p1: u16, p2: u16) {
    let pm = Podman::new();
    let net = format!("fcl{}n", pm.tag);
    pm.network(&net, "b", net24, chain, false);
    let outside = clients::outside_client(
        &pm.host,
        &format!("fcl{}o", pm.tag),
        "10.213.150.1",
        "10.213.150.2",
    );
    let a = format!("fcl{}a", pm.tag);
    let b = format!("fcl{}b", pm.tag);
    let id_a = pm.run_httpd(&a, &net, &[format!("127.0.0.1:{p1}:80")]);
    let id_b = pm.run_httpd(&b, &net, &[format!("{p2}:80")]);
    let (ip_a, ip_b) = (pm.ip(&a, &net), pm.ip(&b, &net));
    assert!(pm.fetches(&b, &ip_a), "{b} cannot reach {a} at {ip_a}");
    assert!(pm.fetches(&a, &ip_b), "{a} cannot reach {b} at {ip_b}");

    let host = Some(&pm.host);
    assert_served(
        host,
        &format!("http://127.0.0.1:{p1}/"),
        "fcl-hello",
        "host → 127.0.0.1:P1",
    );
    assert_served(
        host,
        &format!("http://127.0.0.1:{p2}/"),
        "fcl-hello",
        "host → 127.0.0.1:P2",
    );
    assert_served(
        Some(&outside),
        &format!("http://10.213.150.1:{p2}/"),
        "fcl-hello",
        "outside → host address:P2",
    );
    assert_not_served(
        Some(&outside),
        &format!("http://10.213.150.1:{p1}/"),
        "outside → host address:P1 (mapped on 127.0.0.1 only)",
    );

    // podman's libcni cache, read by ferry.
    let o = Command::new(common::FERRY)
        .args(["ports", &id_b, "--cache-dir", PODMAN_CNI_CACHE])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("80/tcp -> 0.0.0.0:{p2}"),
        "ferry ports on podman's cache: {}",
        clients::text(&o)
    );

    pm.rm(&a);
    pm.rm(&b);
    pm.assert_nothing_left(
        &id_a,
        &[ip_a],
        &[p1],
        &[&net],
        &[&format!("fcl{}oh", pm.tag)],
    );
    pm.assert_nothing_left(
        &id_b,
        &[ip_b],
        &[p2],
        &[&net],
        &[&format!("fcl{}oh", pm.tag)],
    );
}

#[test]
fn ferry_only_chain_serves_containers_and_published_ports() {
    published_ports(Chain::FerryOnly, "10.213.145", 30010, 30011);
}

#[test]
fn podman_written_chain_with_reference_firewall_and_tuning() {
    published_ports(Chain::PodmanWrites, "10.213.146", 30020, 30021);
}

/// Two networks with `"isolate": true`: a container on one cannot reach one on the other;
/// a container on both reaches each. `podman rm` leaves nothing.
fn isolation(chain: Chain, net24: [&str; 2]) {
    let pm = Podman::new();
    let (n1, n2) = (format!("fcl{}i", pm.tag), format!("fcl{}j", pm.tag));
    pm.network(&n1, "x", net24[0], chain, true);
    pm.network(&n2, "y", net24[1], chain, true);
    let (a, b, c) = (
        format!("fcl{}a", pm.tag),
        format!("fcl{}b", pm.tag),
        format!("fcl{}c", pm.tag),
    );
    let id_a = pm.run_httpd(&a, &n1, &[]);
    let id_b = pm.run_httpd(&b, &n2, &[]);
    let id_c = pm.run_httpd(&c, &format!("{n1},{n2}"), &[]);
    let ip_a = pm.ip(&a, &n1);
    let ip_b = pm.ip(&b, &n2);
    let (ip_c1, ip_c2) = (pm.ip(&c, &n1), pm.ip(&c, &n2));
    assert!(pm.fetches(&c, &ip_a), "{c} (on both) cannot reach {a}");
    assert!(pm.fetches(&c, &ip_b), "{c} (on both) cannot reach {b}");
    assert!(pm.fetches(&a, &ip_c1), "{a} cannot reach {c} on {n1}");
    assert!(pm.fetches(&b, &ip_c2), "{b} cannot reach {c} on {n2}");
    let forward = || {
        ["filter", "mangle"]
            .map(|t| clients::text(&pm.host.exec(&["iptables", "-t", t, "-S", "FORWARD"])))
            .join("")
    };
    assert!(
        !pm.fetches(&a, &ip_b),
        "{a} on {n1} reached {b} on {n2}: isolation does not hold; FORWARD:\n{}",
        forward()
    );
    assert!(!pm.fetches(&b, &ip_a), "{b} on {n2} reached {a} on {n1}");
    for n in [&a, &b, &c] {
        pm.rm(n);
    }
    pm.assert_nothing_left(&id_a, &[ip_a], &[], &[&n1], &[]);
    pm.assert_nothing_left(&id_b, &[ip_b], &[], &[&n2], &[]);
    pm.assert_nothing_left(&id_c, &[ip_c1, ip_c2], &[], &[&n1, &n2], &[]);
}

#[test]
fn isolated_networks_ferry_only_chain() {
    isolation(Chain::FerryOnly, ["10.213.147", "10.213.148"]);
}

#[test]
fn isolated_networks_podman_written_chain() {
    isolation(Chain::PodmanWrites, ["10.213.151", "10.213.152"]);
}

/// The keys this test sets on portmap for the userland-proxy mode (issue 6): the mode
/// itself, and a daemon socket and state dir private to the test (the daemon must live in
/// the test's host netns, not share `/run/ferry/proxy.sock` with the real host's daemon).
const USERLAND_KEYS: [&str; 3] = ["userlandProxy", "proxySocket", "proxyStateDir"];

/// `-p 127.0.0.1:P1:80` and `-p P2:80` with portmap's `"userlandProxy": true`: 127.0.0.1
/// (both), `::1` (P2) and outside (P2, kernel DNAT) answer; `podman rm` leaves nothing and
/// frees the ports. Fails (never skips) while portmap lacks the mode — and, as checked with
/// podman 4.3, fails at `podman run` while the mode reserves the port in the daemon: conmon
/// binds every published port itself right after the CNI ADD (`0.0.0.0:P`, or
/// `127.0.0.1:P`), and that bind meets the daemon's listener ("address already in use").
#[test]
fn userland_proxy_mode_serves_ipv6_loopback_under_podman() {
    let pm = Podman::new();
    let portmap = std::fs::read(common::ferry_plugins().join("portmap")).unwrap();
    let knows = |key: &str| portmap.windows(key.len()).any(|w| w == key.as_bytes());
    let unknown: Vec<&str> = USERLAND_KEYS.into_iter().filter(|k| !knows(k)).collect();
    assert!(
        unknown.is_empty(),
        "portmap does not know {unknown:?}: the userlandProxy mode (issue 6) is not in this build, \
         so ::1 cannot be served (the kernel cannot NAT IPv6 loopback); if it landed under other \
         key names, update USERLAND_KEYS"
    );
    let net = format!("fcl{}u", pm.tag);
    pm.network(&net, "u", "10.213.149", Chain::FerryOnly, false);
    let path = pm.dir().join("net").join(format!("{net}.conflist"));
    let mut list: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let portmap_conf = &mut list["plugins"][1];
    portmap_conf["userlandProxy"] = json!(true);
    portmap_conf["proxySocket"] = json!(pm.dir().join("proxy.sock"));
    portmap_conf["proxyStateDir"] = json!(pm.dir().join("proxy-state"));
    std::fs::write(&path, list.to_string()).unwrap();
    let outside = clients::outside_client(
        &pm.host,
        &format!("fcl{}o", pm.tag),
        "10.213.150.1",
        "10.213.150.2",
    );
    let (p1, p2) = (30030u16, 30031u16);
    let a = format!("fcl{}a", pm.tag);
    let id = pm.run_httpd(
        &a,
        &net,
        &[format!("127.0.0.1:{p1}:80"), format!("{p2}:80")],
    );
    let ip = pm.ip(&a, &net);
    let host = Some(&pm.host);
    let want = "fcl-hello";
    assert_served(
        host,
        &format!("http://127.0.0.1:{p1}/"),
        want,
        "host → 127.0.0.1:P1",
    );
    assert_served(
        host,
        &format!("http://127.0.0.1:{p2}/"),
        want,
        "host → 127.0.0.1:P2",
    );
    assert_served(
        host,
        &format!("http://[::1]:{p2}/"),
        want,
        "host → [::1]:P2",
    );
    assert_served(
        Some(&outside),
        &format!("http://10.213.150.1:{p2}/"),
        want,
        "outside → host address:P2",
    );
    pm.rm(&a);
    pm.assert_nothing_left(
        &id,
        &[ip],
        &[p1, p2],
        &[&net],
        &[&format!("fcl{}oh", pm.tag)],
    );
    for p in [p1, p2] {
        let o = pm.host.exec(&["ss", "-ltnH", &format!("sport = :{p}")]);
        let held = clients::text(&o);
        assert!(
            held.trim().is_empty(),
            "port {p} still held after podman rm: {held}"
        );
    }
}

/// Stops (SIGTERM, by PID) the proxy daemon portmap started for one test, found by the
/// test's private socket path in its command line.
fn stop_daemon_by_socket(socket: &str) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains(socket) {
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
