//! A real client: Debian's dockerd 20.10 with `--userland-proxy-path` pointing at
//! ferry-proxy (the docker-proxy drop-in). dockerd runs in a private "host" netns
//! (`nsenter --net`) on a bridge this test makes, with private data/exec roots, pidfile and
//! socket in a temp dir; the image is a `docker import` of a busybox-static rootfs.
//!
//! Checked: `docker run -p 127.0.0.1:P1:80 -p P2:80` is served on 127.0.0.1 (both), ::1
//! and from an outside netns through the host address; dockerd started one ferry-proxy per
//! mapping with docker-proxy's arguments; a localhost connection is held by ferry-proxy
//! (its socket is the one connected to the container); `docker rm -f` stops those proxies.
//! At the end dockerd is stopped by its PID and its leftover chains (DOCKER, DOCKER-USER,
//! DOCKER-ISOLATION-STAGE-*) and the rules naming them or the bridge are removed.

#[path = "common/clients.rs"]
mod clients;

use clients::{assert_served, Netns};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// ferry-proxy from the same target dir as `ferry` (`cargo build --workspace`).
const FERRY_PROXY: &str = concat!(env!("CARGO_BIN_EXE_ferry"), "-proxy");
/// The client from the docker.io package (the `docker` on PATH may be another one).
const DOCKER: &str = "/usr/bin/docker";
/// Fixed paths dockerd (plugin discovery) and containerd's shims (`s/` sockets) create
/// whatever their roots: removed (if empty) when this test's dockerd made them.
const FIXED_DIRS: [(&str, &str); 2] = [("/run/docker", "plugins"), ("/run/containerd", "s")];

/// dockerd in a private netns; stopped by PID, its chains removed, on drop.
struct Dockerd {
    /// The `FIXED_DIRS` that did not exist before this dockerd.
    made_dirs: Vec<(&'static str, &'static str)>,
    child: Option<Child>,
    dir: PathBuf,
    bridge: String,
    host: Netns,
}

impl Dockerd {
    fn start(host: Netns, bridge: &str, dir: &Path) -> Dockerd {
        let made_dirs = FIXED_DIRS
            .into_iter()
            .filter(|(d, _)| !Path::new(d).exists())
            .collect();
        std::fs::write(
            dir.join("daemon.json"),
            serde_json::json!({"deprecated-key-path": dir.join("key.json")}).to_string(),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", host.path()))
            .arg("dockerd")
            .arg("-b")
            .arg(bridge)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--userland-proxy=true")
            .arg(format!("--userland-proxy-path={FERRY_PROXY}"))
            .arg("--iptables=true")
            // A private config file: not /etc/docker/daemon.json, and the trust key in our
            // dir instead of /etc/docker/key.json.
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd: install docker.io");
        let mut d = Dockerd {
            made_dirs,
            child: Some(child),
            dir: dir.to_path_buf(),
            bridge: bridge.to_string(),
            host,
        };
        let start = Instant::now();
        loop {
            if d.docker(&["info"]).status.success() {
                break;
            }
            let exited = d.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && start.elapsed() < Duration::from_secs(30),
                "dockerd cannot run here ({}): its log says:\n{}",
                match exited {
                    Some(s) => format!("it exited: {s}"),
                    None => "no answer on its socket within 30 s".to_string(),
                },
                std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .output()
            .expect("running /usr/bin/docker (docker.io)")
    }

    /// SIGTERM by PID, wait up to 20 s, then SIGKILL; returns whether it stopped on TERM.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Removes what dockerd leaves behind in the netns: its chains and the built-in chains'
    /// rules that jump to them or name our bridge. Returns what is still there.
    fn remove_leftovers(&self) -> Vec<String> {
        for tool in ["iptables", "ip6tables"] {
            for table in ["nat", "filter"] {
                let rules = clients::text(&self.host.exec(&[tool, "-t", table, "-S"]));
                for rule in rules.lines() {
                    let Some(spec) = rule.strip_prefix("-A ") else {
                        continue;
                    };
                    let chain = spec.split(' ').next().unwrap_or("");
                    if chain.starts_with("DOCKER") {
                        continue; // flushed below
                    }
                    if spec.contains("DOCKER") || spec.contains(&self.bridge) {
                        let mut args = vec![tool, "-t", table, "-D"];
                        args.extend(shell_words(spec));
                        self.host.exec(&args);
                    }
                }
                for rule in rules.lines() {
                    if let Some(chain) = rule.strip_prefix("-N ") {
                        if chain.starts_with("DOCKER") {
                            self.host.exec(&[tool, "-t", table, "-F", chain]);
                        }
                    }
                }
                for rule in rules.lines() {
                    if let Some(chain) = rule.strip_prefix("-N ") {
                        if chain.starts_with("DOCKER") {
                            self.host.exec(&[tool, "-t", table, "-X", chain]);
                        }
                    }
                }
            }
        }
        let left = format!(
            "{}{}",
            clients::text(&self.host.exec(&["iptables-save"])),
            clients::text(&self.host.exec(&["ip6tables-save"]))
        );
        left.lines()
            .filter(|l| l.contains("DOCKER") || l.contains(&self.bridge))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        self.remove_leftovers();
        let _ = self.host.exec(&["ip", "link", "del", &self.bridge]);
        // Mounts dockerd may leave under its roots (netns files, overlay) would keep the temp
        // dir busy: unmount only those under our dir.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&*self.dir.to_string_lossy()))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = clients::run("umount", &["-l", m]);
        }
        for (dir, sub) in &self.made_dirs {
            let _ = std::fs::remove_dir(Path::new(dir).join(sub));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Splits an `iptables -S` rule into words, keeping `"…"` comments whole.
fn shell_words(s: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            words.push(&r[..end]);
            rest = r.get(end + 1..).unwrap_or("").trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    words
}

/// `(pid, argv)` of every ferry-proxy process started from this build.
fn ferry_proxies() -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if argv.first().map(String::as_str) == Some(FERRY_PROXY) {
            found.push((pid, argv));
        }
    }
    found
}

/// The ferry-proxy serving `host_ip:host_port`, if any.
fn proxy_for(host_ip: &str, host_port: u16) -> Option<(u32, Vec<String>)> {
    let port = host_port.to_string();
    ferry_proxies().into_iter().find(|(_, argv)| {
        argv.windows(2)
            .any(|w| w[0] == "-host-ip" && w[1] == host_ip)
            && argv
                .windows(2)
                .any(|w| w[0] == "-host-port" && w[1] == port)
    })
}

#[test]
fn dockerd_publishes_ports_through_ferry_proxy() {
    clients::require_root("the dockerd test");
    assert!(
        Path::new(FERRY_PROXY).is_file(),
        "{FERRY_PROXY} missing: build the workspace first (cargo build --workspace)"
    );
    let tag = clients::tag();
    let tmp = tempfile::Builder::new()
        .prefix("fcl-dockerd-")
        .tempdir()
        .unwrap();
    let t = tmp.path();
    let host = Netns::new(&format!("fcl{tag}h"));
    let bridge = format!("fcl{tag}d");
    host.ip(&["link", "add", &bridge, "type", "bridge"]);
    host.ip(&["addr", "add", "10.213.153.1/24", "dev", &bridge]);
    host.ip(&["link", "set", &bridge, "up"]);
    let outside =
        clients::outside_client(&host, &format!("fcl{tag}o"), "10.213.150.5", "10.213.150.6");
    let mut dockerd = Dockerd::start(host, &bridge, t);
    let host = &dockerd.host;

    clients::busybox_rootfs(&t.join("rootfs"), "fcl-docker-hello");
    let o = clients::run(
        "tar",
        &[
            "-C",
            &t.join("rootfs").display().to_string(),
            "-cf",
            &t.join("rootfs.tar").display().to_string(),
            ".",
        ],
    );
    assert!(o.status.success(), "tar: {}", clients::text(&o));
    let image = format!("fcl-busybox-{tag}:1");
    let o = dockerd.docker(&[
        "import",
        &t.join("rootfs.tar").display().to_string(),
        &image,
    ]);
    assert!(o.status.success(), "docker import: {}", clients::text(&o));

    let (p1, p2) = (30100u16, 30101u16);
    let name = format!("fcl{tag}web");
    let o = dockerd.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{p1}:80"),
        "-p",
        &format!("{p2}:80"),
        &image,
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert!(o.status.success(), "docker run: {}", clients::text(&o));
    let o = dockerd.docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &name]);
    let ip = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        ip.starts_with("10.213.153."),
        "container IP {ip:?}: {}",
        clients::text(&o)
    );

    // dockerd started ferry-proxy with docker-proxy's arguments, one per mapping.
    for (host_ip, port) in [("127.0.0.1", p1), ("0.0.0.0", p2)] {
        let (_, argv) = proxy_for(host_ip, port).unwrap_or_else(|| {
            panic!(
                "no ferry-proxy for {host_ip}:{port}; running: {:#?}",
                ferry_proxies()
            )
        });
        let want: Vec<String> = [
            "-proto",
            "tcp",
            "-host-ip",
            host_ip,
            "-host-port",
            &port.to_string(),
            "-container-ip",
            &ip,
            "-container-port",
            "80",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(argv[1..], want[..], "ferry-proxy arguments");
    }

    let want = "fcl-docker-hello";
    let h = Some(host);
    assert_served(
        h,
        &format!("http://127.0.0.1:{p1}/"),
        want,
        "host → 127.0.0.1:P1",
    );
    assert_served(
        h,
        &format!("http://127.0.0.1:{p2}/"),
        want,
        "host → 127.0.0.1:P2",
    );
    assert_served(h, &format!("http://[::1]:{p2}/"), want, "host → [::1]:P2");
    assert_served(
        Some(&outside),
        &format!("http://10.213.150.5:{p2}/"),
        want,
        "outside → host address:P2 (kernel DNAT)",
    );

    // A localhost connection is carried by ferry-proxy: hold one open and find the proxy's
    // socket connected to the container.
    let (proxy_pid, _) = proxy_for("127.0.0.1", p1).unwrap();
    let mut nc = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.0,
            "busybox",
            "nc",
            "127.0.0.1",
            &p1.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut seen;
    let carried = loop {
        let o = host.exec(&[
            "ss",
            "-tnpH",
            "state",
            "established",
            "dst",
            &format!("{ip}:80"),
        ]);
        seen = clients::text(&o);
        if seen.contains(&format!("pid={proxy_pid},")) {
            break true;
        }
        if start.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = nc.kill();
    let _ = nc.wait();
    assert!(
        carried,
        "no connection from ferry-proxy (pid {proxy_pid}) to {ip}:80 while a localhost client was connected; ss: {seen}"
    );

    // docker rm -f stops the proxies.
    let o = dockerd.docker(&["rm", "-f", &name]);
    assert!(o.status.success(), "docker rm -f: {}", clients::text(&o));
    let start = Instant::now();
    while (proxy_for("127.0.0.1", p1).is_some() || proxy_for("0.0.0.0", p2).is_some())
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        proxy_for("127.0.0.1", p1).is_none() && proxy_for("0.0.0.0", p2).is_none(),
        "ferry-proxy still running after docker rm -f: {:#?}",
        ferry_proxies()
    );

    assert!(
        dockerd.stop(),
        "dockerd did not stop on SIGTERM within 20 s"
    );
    let left = dockerd.remove_leftovers();
    assert!(
        left.is_empty(),
        "dockerd's rules left after cleanup: {left:#?}"
    );
}
