//! The reference `bridge` plugin delegating to ferry's host-local: the IPAM result must be
//! one the Go code accepts and configures, in a network namespace this test creates.
//! Needs root (netns, bridge); everything it makes is named `fhl…` and removed on drop.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

struct Cleanup {
    netns: String,
    bridge: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reference_bridge_configures_addresses_from_ferry_host_local() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (netns, bridge)"
    );
    assert!(
        std::path::Path::new("/usr/lib/cni/bridge").exists(),
        "reference bridge missing"
    );
    let tag = std::process::id() % 100_000;
    let guard = Cleanup {
        netns: format!("fhl-brns-{tag}"),
        bridge: format!("fhlbr{tag}"),
    };
    ip(&["netns", "add", &guard.netns]);

    let net = Net::new("fhlbrnet");
    let plugins = net.tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/bridge", plugins.join("bridge")).unwrap();
    std::os::unix::fs::symlink(FERRY, plugins.join("host-local")).unwrap();
    let conf = json!({
        "cniVersion": "1.0.0", "name": net.name, "type": "bridge", "bridge": guard.bridge,
        "ipam": {"type": "host-local", "dataDir": net.data_dir(),
                 "ranges": [[{"subnet": "10.213.70.0/24"}], [{"subnet": "fd00:213:64:70::/64"}]],
                 "routes": [{"dst": "10.213.71.0/24", "gw": "10.213.70.1"}]}
    });
    let call = |command: &str, conf: &serde_json::Value| {
        let mut child = Command::new(plugins.join("bridge"))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "fhlbrctr")
            .env("CNI_NETNS", format!("/var/run/netns/{}", guard.netns))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &plugins)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(conf).unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Reply {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };

    let result = call("ADD", &conf).ok();
    let addrs: Vec<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["10.213.70.2/24", "fd00:213:64:70::2/64"]);
    let inside = ip(&["-n", &guard.netns, "addr", "show", "dev", "eth0"]);
    assert!(inside.contains("10.213.70.2/24"), "{inside}");
    assert!(inside.contains("fd00:213:64:70::2/64"), "{inside}");
    let routes = ip(&["-n", &guard.netns, "route", "show"]);
    assert!(
        routes.contains("10.213.71.0/24 via 10.213.70.1"),
        "{routes}"
    );
    assert_eq!(net.leases().len(), 2);

    let mut check = conf.clone();
    check["prevResult"] = result;
    call("CHECK", &check).ok();
    call("DEL", &conf).ok();
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    call("DEL", &conf).ok();
    drop(guard);
}
