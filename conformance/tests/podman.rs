//! A real client: podman 4 (CNI backend, Debian's `podman` + `runc`) runs a busybox httpd
//! container on a ferry bridge + portmap chain (with the reference firewall and tuning,
//! as `podman network create` writes it). Everything network-side happens in a private
//! "host" netns (podman is started under `nsenter --net`), storage in a temp dir.
//! Then `ferry ports` reads podman's libcni cache.

mod common;

use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};

/// Removes the container, then the netns, when dropped.
struct PodmanRun {
    conf: std::path::PathBuf,
    base: Vec<String>,
    netns: String,
    name: String,
}

impl PodmanRun {
    fn podman(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args(&self.base)
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .unwrap()
    }
    fn in_host(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for PodmanRun {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-t", "0", &self.name]);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

fn rootfs(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "www"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("install busybox-static");
    for tool in ["sh", "httpd", "sleep"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(dir.join("www/index.html"), "fcf-hello\n").unwrap();
}

#[test]
fn podman_runs_a_container_on_ferry_plugins() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (podman, network namespaces)"
    );
    let plugins = common::ferry_plugins();
    let tmp = tempfile::Builder::new()
        .prefix("fcf-podman-")
        .tempdir()
        .unwrap();
    let t = tmp.path();
    rootfs(&t.join("rootfs"));
    let tag = std::process::id() % 10000;
    let net_name = format!("fcfpod{tag}");
    std::fs::create_dir_all(t.join("net")).unwrap();
    let list = json!({"cniVersion": "0.4.0", "name": net_name, "plugins": [
        {"type": "bridge", "bridge": format!("fcf{tag}pd"), "isGateway": true, "ipMasq": true, "hairpinMode": true,
         "ipam": {"type": "host-local", "dataDir": t.join("ipam"), "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": "10.213.90.0/24", "gateway": "10.213.90.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "firewall"},
        {"type": "tuning"}]});
    std::fs::write(t.join("net/fcfpod.conflist"), list.to_string()).unwrap();
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
    let netns = format!("fcf{tag}pdh");
    let _ = Command::new("ip").args(["netns", "del", &netns]).output();
    let o = Command::new("ip")
        .args(["netns", "add", &netns])
        .output()
        .unwrap();
    assert!(o.status.success(), "ip netns add: {}", common::err(&o));
    Command::new("ip")
        .args(["-n", &netns, "link", "set", "lo", "up"])
        .output()
        .unwrap();
    let run = PodmanRun {
        conf: t.join("containers.conf"),
        base: vec![
            "podman".into(),
            "--root".into(),
            t.join("root").display().to_string(),
            "--runroot".into(),
            t.join("runroot").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ],
        netns,
        name: format!("fcf{tag}pdc"),
    };
    let port = (25400 + tag % 100).to_string();
    let rootfs = t.join("rootfs").display().to_string();
    let o = run.podman(&[
        "run",
        "-d",
        "--name",
        &run.name,
        "--network",
        &net_name,
        "-p",
        &format!("{port}:80"),
        "--rootfs",
        &rootfs,
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert!(o.status.success(), "podman run: {}", common::err(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let ip = run.podman(&[
        "inspect",
        &run.name,
        "--format",
        &format!("{{{{.NetworkSettings.Networks.{net_name}.IPAddress}}}}"),
    ]);
    let ip = String::from_utf8_lossy(&ip.stdout).trim().to_string();
    assert!(ip.starts_with("10.213.90."), "container IP {ip:?}");
    let mut body = String::new();
    for _ in 0..50 {
        let o = run.in_host(&["curl", "-s", "-m", "2", &format!("http://{ip}/")]);
        body = String::from_utf8_lossy(&o.stdout).into_owned();
        if body.contains("fcf-hello") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(body.contains("fcf-hello"), "direct: {body:?}");
    let o = run.in_host(&[
        "curl",
        "-s",
        "-m",
        "3",
        &format!("http://10.213.90.1:{port}/"),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("fcf-hello"),
        "through the published port: {}",
        common::err(&o)
    );
    // podman's libcni cache, read by ferry.
    let o = Command::new(common::FERRY)
        .args(["ports", &id, "--cache-dir", "/var/lib/cni"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("80/tcp -> 0.0.0.0:{port}"),
        "{}",
        common::err(&o)
    );
    let o = run.podman(&["rm", "-f", "-t", "0", &run.name]);
    assert!(o.status.success(), "podman rm: {}", common::err(&o));
    let left: Vec<String> = std::fs::read_dir(t.join("ipam").join(&net_name))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "reservations left after podman rm: {left:?}"
    );
}
