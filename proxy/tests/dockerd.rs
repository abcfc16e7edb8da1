//! The real client: dockerd 20.10 (Debian docker.io) with
//! `--userland-proxy-path=<ferry-proxy>` publishes a port through ferry-proxy in
//! docker-proxy compatible mode. dockerd runs with private roots, a bridge this test creates,
//! and `--iptables=false --ip-forward=false --ip-masq=false`, so it changes nothing on the
//! host's firewall or sysctls; everything is removed on drop.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

static PORTS: PortPool = PortPool::new(24590);

const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";

/// dockerd with its own roots and bridge; stopped, unmounted and deleted on drop.
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    bridge: String,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let bridge = format!("fpxdk{}", std::process::id() % 100_000);
        let run = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        run(&["link", "add", &bridge, "type", "bridge"]);
        let guard_bridge = bridge.clone();
        // From here on a panic must still remove the bridge: build the guard first.
        let mut d = Dockerd {
            child: Command::new("true").spawn().unwrap(),
            dir,
            bridge: guard_bridge,
        };
        let _ = d.child.wait();
        run(&["addr", "add", "10.213.48.193/26", "dev", &bridge]);
        run(&["link", "set", &bridge, "up"]);
        let p = d.dir.path();
        let log = std::fs::File::create(p.join("dockerd.log")).unwrap();
        d.child = Command::new(DOCKERD)
            .args(["-b", &bridge])
            .arg(format!("--data-root={}", p.join("data").display()))
            .arg(format!("--exec-root={}", p.join("exec").display()))
            .arg(format!("--pidfile={}", p.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", p.join("docker.sock").display()))
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false"])
            .args(["--userland-proxy=true"])
            .arg(format!("--userland-proxy-path={}", proxy_bin()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(30), || d.docker(&["version"]).is_ok()),
            "dockerd did not come up; log: {}",
            std::fs::read_to_string(p.join("dockerd.log")).unwrap_or_default()
        );
        d
    }

    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(DOCKER)
            .arg(format!(
                "--host=unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A busybox root filesystem with a page to serve, imported as image `fpxbox`.
    fn import_busybox(&self) {
        let root = self.dir.path().join("rootfs");
        for d in ["bin", "www", "etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/httpd")).unwrap();
        std::fs::write(root.join("www/index.html"), "hello from ferry\n").unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        self.docker(&["import", tar.to_str().unwrap(), "fpxbox"])
            .unwrap();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "-f", "fpxweb"]);
        // Only the dockerd this test started, by PID; it stops its own containerd.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if !wait_until(Duration::from_secs(15), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        unmount_below(self.dir.path());
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Lazily unmounts anything dockerd left mounted below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// PIDs of ferry-proxy processes whose command line contains `needle`.
fn ferry_proxies_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.starts_with(proxy_bin()) && text.contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn dockerd_publishes_a_port_through_ferry_proxy() {
    require_root();
    let port = PORTS.take();
    let d = Dockerd::start();
    d.import_busybox();
    let publish = format!("127.0.0.1:{port}:80");
    d.docker(&[
        "run",
        "-d",
        "--name",
        "fpxweb",
        "-p",
        &publish,
        "fpxbox",
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ])
    .unwrap();
    let needle = format!("-host-port {port} ");
    assert_eq!(
        ferry_proxies_with(&needle).len(),
        1,
        "dockerd must have started ferry-proxy for port {port}"
    );
    let mut page = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            page.clear();
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_string(&mut page).is_ok()
                && page.contains("hello from ferry")
        }),
        "page through the published port: {page:?}"
    );
    d.docker(&["rm", "-f", "fpxweb"]).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || ferry_proxies_with(&needle)
            .is_empty()),
        "dockerd must stop ferry-proxy when the container goes"
    );
}
