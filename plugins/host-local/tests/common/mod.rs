//! Shared test helpers: run ferry's or the reference's host-local binary against a data
//! directory inside a temp dir. Nothing here touches the network: host-local only writes
//! files, so these tests need neither root nor a netns.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// ferry's binary, built by cargo for this test run.
pub const FERRY: &str = env!("CARGO_BIN_EXE_host-local");
/// The reference binary (Debian containernetworking-plugins 1.1.1).
pub const REFERENCE: &str = "/usr/lib/cni/host-local";

/// A plugin run's outcome.
#[derive(Debug)]
pub struct Reply {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// stdout as JSON (panics with the whole reply when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout not JSON ({e}): {self:?}"))
    }

    /// Assert success and return stdout's JSON (Null when empty).
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "expected success: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Assert failure with an error object and return (code, msg + details).
    pub fn err(&self) -> (u64, String) {
        assert_ne!(self.status, 0, "expected failure: {self:?}");
        let v = self.json();
        let code = v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code: {self:?}"));
        let text = format!(
            "{} {}",
            v["msg"].as_str().unwrap_or(""),
            v["details"].as_str().unwrap_or("")
        );
        (code, text)
    }

    /// The addresses of an ADD result (any version's shape).
    pub fn addresses(&self) -> Vec<String> {
        let v = self.ok();
        let mut out = Vec::new();
        if let Some(ips) = v["ips"].as_array() {
            for ip in ips {
                out.push(ip["address"].as_str().unwrap().to_string());
            }
        }
        for k in ["ip4", "ip6"] {
            if let Some(ip) = v[k]["ip"].as_str() {
                out.push(ip.to_string());
            }
        }
        out
    }
}

/// Run `bin` with `command` for (id, ifname), `conf` on stdin, and optional CNI_ARGS.
pub fn run_with(
    bin: &str,
    command: &str,
    id: &str,
    ifname: &str,
    conf: &Value,
    cni_args: Option<&str>,
) -> Reply {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/var/run/netns/fhl-none")
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a) = cni_args {
        cmd.env("CNI_ARGS", a);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
    let bytes = serde_json::to_vec(conf).unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    Reply {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run_with`] without CNI_ARGS.
pub fn run(bin: &str, command: &str, id: &str, ifname: &str, conf: &Value) -> Reply {
    run_with(bin, command, id, ifname, conf, None)
}

/// Run `bin` with raw stdin bytes (for malformed input).
pub fn run_raw(bin: &str, command: &str, stdin: &[u8]) -> Reply {
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", "/var/run/netns/fhl-none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    Reply {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A network whose data directory lives in its own temp dir.
pub struct Net {
    pub tmp: tempfile::TempDir,
    pub name: String,
}

impl Net {
    /// A fresh network named `name` (names are per test, the temp dir makes them unique).
    pub fn new(name: &str) -> Net {
        Net {
            tmp: tempfile::Builder::new().prefix("fhl-").tempdir().unwrap(),
            name: name.to_string(),
        }
    }

    /// `ipam.dataDir`.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// `<dataDir>/<network>`.
    pub fn net_dir(&self) -> PathBuf {
        self.data_dir().join(&self.name)
    }

    /// A config of `version` whose `ipam` is `ipam` plus `type` and `dataDir`.
    pub fn conf(&self, version: &str, ipam: Value) -> Value {
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(self.data_dir());
        json!({"cniVersion": version, "name": self.name, "type": "host-local", "ipam": ipam})
    }

    /// A single-range config of `version` over `subnet`.
    pub fn simple(&self, version: &str, subnet: &str) -> Value {
        self.conf(version, json!({"ranges": [[{"subnet": subnet}]]}))
    }

    /// Every entry whose name is an address, with its content (lossy).
    pub fn leases(&self) -> BTreeMap<IpAddr, String> {
        leases_in(&self.net_dir())
    }
}

/// Every entry of `dir` whose name is an address, with its content.
pub fn leases_in(dir: &Path) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    let Ok(listing) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in listing {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(ip) = name.parse::<IpAddr>() {
            let content = std::fs::read(e.path()).unwrap_or_default();
            out.insert(ip, String::from_utf8_lossy(&content).into_owned());
        }
    }
    out
}

/// Names in `dir` that are neither leases nor the files the reference contract defines
/// (`lock`, `last_reserved_ip.*`) nor ferry's hint directory: leftovers of a crash.
pub fn stray_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.parse::<IpAddr>().is_err()
                && n != "lock"
                && !n.starts_with("last_reserved_ip.")
                && n != ".ferry-owners"
        })
        .collect()
}
