//! Helpers for the real-client tests (podman, dockerd, containerd): throw-away network
//! namespaces, a busybox root filesystem, an "outside" client namespace wired to a host
//! namespace by a veth, HTTP probes that poll, and the leftovers checks.
//!
//! Included with `#[path = "common/clients.rs"] mod clients;` so `common/mod.rs` stays as
//! its owner wrote it.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails loudly when not root (these tests never skip).
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (network namespaces, firewall rules, a container runtime)"
    );
}

/// A short tag unique to this process and call: `<pid mod 1000><counter>`, so parallel
/// tests (threads) and parallel test binaries never pick the same link or netns name.
pub fn tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id() % 1000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs a command and returns its output (panics only if it cannot be started).
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// stdout + stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A named network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// Creates `name` (deleting a stale one first) with `lo` up.
    pub fn new(name: &str) -> Netns {
        let _ = run("ip", &["netns", "del", name]);
        let o = run("ip", &["netns", "add", name]);
        assert!(o.status.success(), "ip netns add {name}: {}", text(&o));
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
        Netns(name.to_string())
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.0];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `ip ARGS` inside the namespace and asserts success.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.0];
        full.extend_from_slice(args);
        let o = run("ip", &full);
        assert!(o.status.success(), "ip {full:?}: {}", text(&o));
    }

    /// The names of every link in the namespace.
    pub fn links(&self) -> Vec<String> {
        let o = run("ip", &["-n", &self.0, "-o", "link", "show"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Every firewall rule in the namespace: `iptables-save`, `ip6tables-save` and
    /// `nft list ruleset`, one text.
    pub fn rules(&self) -> String {
        let mut all = String::new();
        for args in [
            vec!["iptables-save"],
            vec!["ip6tables-save"],
            vec!["nft", "list", "ruleset"],
        ] {
            all.push_str(&String::from_utf8_lossy(&self.exec(&args).stdout));
        }
        all
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ferry_conformance::portmap_index::remove_for(std::path::Path::new(&format!(
            "/var/run/netns/{}",
            self.0
        )));
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// A namespace acting as a client outside the host, wired to `host` by a veth:
/// `host_addr`/30 on the host side, `client_addr`/30 inside, default route via the host.
pub fn outside_client(host: &Netns, name: &str, host_addr: &str, client_addr: &str) -> Netns {
    let outside = Netns::new(name);
    let host_end = format!("{name}h");
    host.ip(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &outside.0,
    ]);
    host.ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_end]);
    host.ip(&["link", "set", &host_end, "up"]);
    outside.ip(&["addr", "add", &format!("{client_addr}/30"), "dev", "eth0"]);
    outside.ip(&["link", "set", "eth0", "up"]);
    outside.ip(&["route", "add", "default", "via", host_addr]);
    outside
}

/// A busybox-static root filesystem in `dir` whose httpd serves `page` from `/www`.
pub fn busybox_rootfs(dir: &Path, page: &str) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "www"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("copying /bin/busybox: install busybox-static");
    for tool in ["sh", "httpd", "sleep", "wget", "nc", "ip", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(dir.join("www/index.html"), format!("{page}\n")).unwrap();
}

/// `curl URL` from `ns` (or the current namespace), polled until the body contains `want`
/// or `within` passes. Returns the last body and curl's stderr.
pub fn http_poll(ns: Option<&Netns>, url: &str, want: &str, within: Duration) -> (bool, String) {
    let start = Instant::now();
    loop {
        let args = ["curl", "-sS", "-g", "-m", "2", url];
        let o = match ns {
            Some(n) => n.exec(&args),
            None => run(args[0], &args[1..]),
        };
        let body = text(&o);
        if o.status.success() && body.contains(want) {
            return (true, body);
        }
        if start.elapsed() >= within {
            return (false, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts `url` answers with `want` from `ns` within 5 s.
pub fn assert_served(ns: Option<&Netns>, url: &str, want: &str, what: &str) {
    let (ok, body) = http_poll(ns, url, want, Duration::from_secs(5));
    assert!(ok, "{what}: {url} did not answer {want:?}: {body}");
}

/// Asserts `url` does not answer from `ns` (one try, 2 s).
pub fn assert_not_served(ns: Option<&Netns>, url: &str, what: &str) {
    let (ok, body) = http_poll(ns, url, "", Duration::ZERO);
    assert!(!ok, "{what}: {url} answered but must not: {body}");
}

/// Lease files (IP-named) left in a host-local `dataDir/<network>`.
pub fn leases(data_dir: &Path, network: &str) -> Vec<String> {
    std::fs::read_dir(data_dir.join(network))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// libcni result-cache entries (`<cache>/results/*`) that mention `needle`
/// (a container ID).
pub fn cache_entries(cache_dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(cache_dir.join("results"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// Lines of `rules` that mention any of `needles` (container IDs, addresses, ports).
pub fn rules_mentioning(rules: &str, needles: &[&str]) -> Vec<String> {
    rules
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Files under `dir` (recursively) whose name or content mentions `needle`: ferry
/// portmap's claim index (`/run/ferry/portmap`) must forget a removed container.
pub fn files_mentioning(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(needle)
                || (ft.is_file()
                    && std::fs::read(&p)
                        .map(|b| String::from_utf8_lossy(&b).contains(needle))
                        .unwrap_or(false))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}
