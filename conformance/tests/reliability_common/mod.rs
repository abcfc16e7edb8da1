//! Shared fixtures of the reliability tests (crash injection, load, hostile input):
//! throw-away namespaces, plugin processes that can be killed at any moment, and the
//! "nothing remains" inspection of every place a plugin keeps state.
//!
//! Every plugin runs inside a private "host" network namespace (`ip netns exec`, which also
//! gives it a private mount namespace with that netns's /sys), so bridges, veths and
//! firewall rules never reach the real host.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails loudly (never skips) when the test is not root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the reliability tests create network namespaces and firewall rules: they need root"
    );
}

/// A suffix unique per process and call (short: link names are ≤ 15 bytes).
pub fn uniq() -> String {
    format!(
        "{}{}",
        std::process::id() % 10000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// An integer knob from the environment (scale the suites up locally).
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Iterations multiplier: FERRY_RELIABILITY_ITERS (default 1).
pub fn scale() -> u64 {
    knob("FERRY_RELIABILITY_ITERS", 1).max(1)
}

/// A small deterministic PRNG (xorshift64*), seeded from FERRY_RELIABILITY_SEED or the clock;
/// the seed is printed so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(what: &str) -> Rng {
        let seed = knob("FERRY_RELIABILITY_SEED", 0);
        let seed = if seed != 0 {
            seed
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        };
        eprintln!("{what}: FERRY_RELIABILITY_SEED={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// A named network namespace with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = format!("frl-{tag}-{}", uniq());
        let out = ip(&["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        let ns = Netns { name };
        let out = ns.exec(&["ip", "link", "set", "lo", "up"]);
        assert!(out.status.success(), "lo up: {out:?}");
        ns
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        ip(&a)
    }
    /// `exec` and stdout as text (stderr appended when it failed).
    pub fn text(&self, args: &[&str]) -> String {
        let o = self.exec(args);
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            s.push_str(&String::from_utf8_lossy(&o.stderr));
        }
        s
    }
    /// Names of every link in the namespace.
    pub fn links(&self) -> Vec<String> {
        let o = ip(&["-n", &self.name, "-o", "link", "show"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
    /// The namespace's `SO_NETNS_COOKIE` (names portmap's index directory).
    pub fn cookie(&self) -> u64 {
        self.try_cookie().expect("reading the netns cookie")
    }
    /// [`Netns::cookie`], None when it cannot be read (never panics: used in `drop`).
    pub fn try_cookie(&self) -> Option<u64> {
        ferry_conformance::portmap_index::cookie_of(std::path::Path::new(&self.path()))
    }
    /// portmap's index directory for this namespace.
    pub fn portmap_index(&self) -> PathBuf {
        ferry_conformance::portmap_index::dir_for_cookie(self.cookie())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // portmap's index of this namespace would outlive it (tmpfs, keyed by the cookie).
        ferry_conformance::portmap_index::remove_for(std::path::Path::new(&self.path()));
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A temp directory with the reliability prefix, removed on drop.
pub fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("frl-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Directory with ferry's `bridge`, `host-local`, `portmap` (and `ferry`).
pub fn plugins() -> PathBuf {
    super::common::ferry_plugins()
}

/// How a plugin process ended.
#[derive(Debug, Clone)]
pub struct Done {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Done {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.stdout).ok()
    }
    /// The error object's code.
    pub fn error_code(&self) -> Option<u64> {
        self.json()?.get("code")?.as_u64()
    }
    pub fn describe(&self) -> String {
        format!(
            "exit {:?} signal {:?} after {:?}; stdout {}; stderr {}",
            self.code,
            self.signal,
            self.elapsed,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// The CNI environment of one call.
#[derive(Debug, Clone)]
pub struct Call {
    pub verb: &'static str,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub cni_path: PathBuf,
}

/// A plugin process started in its own process group inside `host`.
pub struct Running {
    pub child: Child,
    pub started: Instant,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

/// Starts `bin` for `call` in the host namespace `host` with `stdin`.
pub fn spawn(host: &str, bin: &Path, call: &Call, stdin: Vec<u8>) -> Running {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host]).arg(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.verb)
        .env("CNI_CONTAINERID", &call.container_id)
        .env("CNI_IFNAME", &call.ifname)
        .env("CNI_PATH", &call.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(n) = &call.netns {
        cmd.env("CNI_NETNS", n);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn plugin");
    let mut pipe = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    let mut o = child.stdout.take().unwrap();
    let mut e = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = o.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = e.read_to_end(&mut b);
        b
    });
    Running {
        child,
        started,
        out: Some(out),
        err: Some(err),
    }
}

/// Processes (not zombies) whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] != "Z" && f[2].parse::<i32>() == Ok(pgid) {
            v.push(pid);
        }
    }
    v
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// SIGKILL the plugin only (its children, e.g. a delegated IPAM, run on as orphans).
    pub fn kill_leader(&self) {
        // SAFETY: kill(2) on our own child's PID (not yet reaped, so not reused).
        unsafe {
            libc::kill(self.pid(), libc::SIGKILL);
        }
    }
    /// SIGKILL the plugin and everything it started (its process group).
    pub fn kill_group(&self) {
        // SAFETY: the group is led by our own unreaped child, so its id is not reused.
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
    }
    /// Waits for the plugin, then for every process it left behind in its group (bounded).
    pub fn wait(mut self) -> Done {
        let status = self.child.wait().expect("wait plugin");
        let pgid = self.pid();
        let end = Instant::now() + Duration::from_secs(30);
        while !group_members(pgid).is_empty() {
            assert!(
                Instant::now() < end,
                "processes of group {pgid} still running 30 s after the plugin ended"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let stdout = self.out.take().unwrap().join().unwrap_or_default();
        let stderr = self.err.take().unwrap().join().unwrap_or_default();
        Done {
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
            elapsed: self.started.elapsed(),
        }
    }
}

/// Runs a plugin to completion.
pub fn run(host: &str, bin: &Path, call: &Call, stdin: &Value) -> Done {
    spawn(host, bin, call, stdin.to_string().into_bytes()).wait()
}

/// One network: a bridge (+host-local) and portmap chain in a private host namespace.
pub struct Chain {
    pub name: String,
    pub version: &'static str,
    pub bridge: Value,
    pub portmap: Value,
    pub ipam_dir: PathBuf,
    pub plugins: PathBuf,
}

impl Chain {
    /// `subnet` must be inside the reliability range; `bridge_name` ≤ 15 bytes.
    pub fn new(name: &str, bridge_name: &str, subnet: &str, ipam_dir: &Path) -> Chain {
        Chain {
            name: name.to_string(),
            version: "1.1.0",
            bridge: json!({"type": "bridge", "bridge": bridge_name, "isGateway": true,
                "ipMasq": true, "hairpinMode": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                         "dataDir": ipam_dir.display().to_string()}}),
            portmap: json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ipam_dir: ipam_dir.to_path_buf(),
            plugins: plugins(),
        }
    }

    /// The conflist as a runtime would read it.
    pub fn conflist(&self) -> Value {
        json!({"cniVersion": self.version, "name": self.name,
               "plugins": [self.bridge, self.portmap]})
    }

    /// A plugin's request config (what libcni builds).
    pub fn request(
        &self,
        plugin: &Value,
        prev: Option<&Value>,
        port_mappings: Option<&Value>,
    ) -> Value {
        let mut c = plugin.clone();
        c["name"] = json!(self.name);
        c["cniVersion"] = json!(self.version);
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        if let Some(pm) = port_mappings {
            if plugin.get("capabilities").is_some() {
                c["runtimeConfig"] = json!({"portMappings": pm});
            }
        }
        c
    }

    /// GC request for one plugin with the given valid attachments.
    pub fn gc_request(&self, plugin: &Value, valid: &[(String, String)]) -> Value {
        let mut c = self.request(plugin, None, None);
        let atts: Vec<Value> = valid
            .iter()
            .map(|(id, ifn)| json!({"containerID": id, "ifname": ifn}))
            .collect();
        c["cni.dev/valid-attachments"] = json!(atts);
        c["cni.dev/attachments"] = json!(atts);
        c
    }

    pub fn bin(&self, ty: &str) -> PathBuf {
        self.plugins.join(ty)
    }

    pub fn call(&self, verb: &'static str, id: &str, netns: Option<&str>, ifname: &str) -> Call {
        Call {
            verb,
            container_id: id.to_string(),
            netns: netns.map(str::to_string),
            ifname: ifname.to_string(),
            cni_path: self.plugins.clone(),
        }
    }

    /// The host-local directory of this network.
    pub fn lease_dir(&self) -> PathBuf {
        self.ipam_dir.join(&self.name)
    }

    /// DEL of the whole chain in reverse order; every plugin must succeed.
    pub fn del(
        &self,
        host: &str,
        id: &str,
        netns: Option<&str>,
        ifname: &str,
        prev: Option<&Value>,
        pm: &Value,
    ) {
        for p in [&self.portmap, &self.bridge] {
            let d = run(
                host,
                &self.bin(p["type"].as_str().unwrap()),
                &self.call("DEL", id, netns, ifname),
                &self.request(p, prev, Some(pm)),
            );
            assert!(d.ok(), "DEL {} of {id}: {}", p["type"], d.describe());
        }
    }

    /// GC of the whole chain with the given valid attachments.
    pub fn gc(&self, host: &str, valid: &[(String, String)]) {
        for p in [&self.bridge, &self.portmap] {
            let d = run(
                host,
                &self.bin(p["type"].as_str().unwrap()),
                &self.call("GC", "", None, ""),
                &self.gc_request(p, valid),
            );
            assert!(d.ok(), "GC {}: {}", p["type"], d.describe());
        }
    }
}

/// Host-local's files, checked for well-formedness: the leases (and owner hints) as
/// `(name, id, ifname)`, and every torn or unexpected file (a temp file left behind by a
/// killed writer is a leak too).
pub fn host_local_files(dir: &Path) -> (Vec<(String, String, String)>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (out, bad);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if name == "lock" {
            continue;
        }
        if name == ".ferry-owners" && meta.is_dir() {
            for h in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let hn = h.file_name().to_string_lossy().into_owned();
                if hn.starts_with("last_reserved_ip.") {
                    let t = std::fs::read_to_string(h.path()).unwrap_or_default();
                    if !(t.trim().is_empty() || t.trim().parse::<std::net::IpAddr>().is_ok()) {
                        bad.push(format!("torn spare cursor {}: {t:?}", h.path().display()));
                    }
                    continue;
                }
                // An owner hint is a leak once its lease is gone: listed with the leases.
                out.push((format!(".ferry-owners/{hn}"), String::new(), String::new()));
            }
            continue;
        }
        if name.starts_with("last_reserved_ip.") && meta.is_file() {
            let t = std::fs::read_to_string(&path).unwrap_or_default();
            if t.trim().parse::<std::net::IpAddr>().is_err() {
                bad.push(format!("torn cursor {}: {t:?}", path.display()));
            }
            continue;
        }
        if name.parse::<std::net::IpAddr>().is_ok() && meta.is_file() {
            let t = std::fs::read_to_string(&path).unwrap_or_default();
            let mut parts = t.split("\r\n");
            let id = parts.next().unwrap_or("").to_string();
            let ifn = parts.next().unwrap_or("").to_string();
            if id.is_empty() || ifn.is_empty() || parts.next().is_some() {
                bad.push(format!("torn lease {}: {t:?}", path.display()));
            }
            out.push((name, id, ifn));
            continue;
        }
        bad.push(format!(
            "unexpected file in the host-local directory: {} ({:?})",
            path.display(),
            std::fs::read(&path)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        ));
    }
    out.sort();
    (out, bad)
}

/// Host-local's leases; panics on a torn or unexpected file.
pub fn leases(dir: &Path) -> Vec<(String, String, String)> {
    let (l, bad) = host_local_files(dir);
    assert!(bad.is_empty(), "{bad:?}");
    l
}

/// Files (not directories) below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => out.extend(files_below(&p)),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
    out
}

/// Firewall state of the namespace (iptables, ip6tables, nft), as text.
pub fn firewall_text(host: &Netns) -> String {
    let mut s = host.text(&["iptables-save"]);
    s.push_str(&host.text(&["ip6tables-save"]));
    s.push_str(&host.text(&["nft", "list", "ruleset"]));
    s
}

/// Everything that names `ids` or belongs to a per-attachment chain, line by line.
pub fn firewall_leftovers(text: &str, ids: &[String]) -> Vec<String> {
    text.lines()
        .filter(|l| {
            ids.iter()
                .any(|id| !id.is_empty() && l.contains(id.as_str()))
                || l.contains("CNI-DN-")
                || l.contains("-m comment --comment \"name:")
        })
        .map(str::to_string)
        .collect()
}

/// What remains of attachments in the host namespace `host` and container namespace
/// `ctr`: veths, container links, leases, torn files, rules, portmap index entries.
pub fn leftovers(chain: &Chain, host: &Netns, ctr: Option<&Netns>, ids: &[String]) -> Vec<String> {
    let mut p = Vec::new();
    let bridge = chain.bridge["bridge"].as_str().unwrap_or("");
    let host_links: Vec<String> = host
        .links()
        .into_iter()
        .filter(|l| l != "lo" && l != bridge)
        .collect();
    if !host_links.is_empty() {
        p.push(format!("links left on the host: {host_links:?}"));
    }
    if let Some(c) = ctr {
        let links: Vec<String> = c.links().into_iter().filter(|l| l != "lo").collect();
        if !links.is_empty() {
            p.push(format!("links left in the container: {links:?}"));
        }
    }
    let (leases, bad) = host_local_files(&chain.lease_dir());
    if !leases.is_empty() {
        p.push(format!("leases left: {leases:?}"));
    }
    p.extend(bad);
    let fw = firewall_leftovers(&firewall_text(host), ids);
    if !fw.is_empty() {
        p.push(format!("firewall rules left:\n{}", fw.join("\n")));
    }
    let index = host.portmap_index();
    for d in ["owners", "claims"] {
        for f in files_below(&index.join(d)) {
            p.push(format!("portmap index entry left: {}", f.display()));
        }
    }
    p
}

/// Asserts that [`leftovers`] finds nothing.
pub fn assert_clean(what: &str, chain: &Chain, host: &Netns, ctr: Option<&Netns>, ids: &[String]) {
    let p = leftovers(chain, host, ctr, ids);
    assert!(p.is_empty(), "{what}:\n{}", p.join("\n"));
}

/// Collects problems by kind (first example and count) so one run reports every kind.
#[derive(Default, Debug)]
pub struct Findings(pub std::collections::BTreeMap<String, (u64, String)>);

impl Findings {
    /// Records `problem` under a kind derived from its text (digits and hex runs removed).
    pub fn add(&mut self, context: &str, problem: &str) {
        let kind: String = problem
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(60)
            .collect();
        let e = self
            .0
            .entry(kind)
            .or_insert_with(|| (0, format!("{context}: {problem}")));
        e.0 += 1;
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn report(&self) -> String {
        self.0
            .values()
            .map(|(n, ex)| format!("{n}× e.g. {ex}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Polls `f` until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `ferry-proxy` binary next to the plugins.
pub fn proxy_bin() -> PathBuf {
    let p = plugins().join("ferry-proxy");
    assert!(
        p.is_file(),
        "{} missing: build the workspace first",
        p.display()
    );
    p
}

/// One HTTP/1.1 request over the daemon's unix socket: (status, body). Err when the
/// daemon is not there or hung up before answering.
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: ferry-proxy\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no HTTP head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A `ferry-proxy daemon` this test started (killed by PID on drop).
pub struct ProxyDaemon {
    pub child: Child,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub extra: Vec<String>,
}

impl ProxyDaemon {
    /// Starts the daemon with its socket and state under `dir`; waits for /v1/health.
    pub fn start(dir: &Path, extra: &[&str]) -> ProxyDaemon {
        let socket = dir.join("proxy.sock");
        let state_dir = dir.join("state");
        let child = Self::spawn(&socket, &state_dir, extra);
        let d = ProxyDaemon {
            child,
            socket,
            state_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.wait_healthy();
        d
    }
    fn spawn(socket: &Path, state_dir: &Path, extra: &[&str]) -> Child {
        Command::new(proxy_bin())
            .arg("daemon")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--state-dir={}", state_dir.display()))
            .args(["--drain-timeout", "1s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ferry-proxy daemon")
    }
    pub fn wait_healthy(&self) {
        assert!(
            wait_until(Duration::from_secs(15), || matches!(
                http(&self.socket, "GET", "/v1/health", None),
                Ok((200, _))
            )),
            "ferry-proxy daemon did not answer on {}",
            self.socket.display()
        );
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
    /// Starts the daemon again with the same socket and state directory.
    pub fn restart(&mut self) {
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = Self::spawn(&self.socket, &self.state_dir, &extra);
        self.wait_healthy();
    }
    /// The mappings the API lists.
    pub fn list(&self) -> Vec<Value> {
        let (status, body) = http(&self.socket, "GET", "/v1/mappings", None).expect("list");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("list JSON");
        v["mappings"].as_array().cloned().unwrap_or_default()
    }
    /// A Prometheus metric summed over all its samples (every mapping's label set).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http(&self.socket, "GET", "/metrics", None).ok()?;
        let values: Vec<f64> = body
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
    /// Resident memory of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for ProxyDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP echo server on an ephemeral port (threads; lives as long as the test).
pub fn echo_server() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `msg` through `addr` and expects it back.
pub fn echo_through(addr: std::net::SocketAddr, msg: &[u8]) -> std::io::Result<()> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "echo differs",
        ));
    }
    Ok(())
}
