//! Test fixtures: namespaces, bridges and plugin runs that clean up after themselves.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "bridge integration tests need root"
    );
}

/// A unique suffix per test run and call.
pub fn uniq() -> String {
    format!(
        "{}{}",
        std::process::id() % 10000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// A named netns, deleted on drop.
pub struct TestNs {
    pub name: String,
    deleted: bool,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        require_root();
        let name = format!("fbr-{tag}-{}", uniq());
        let out = ip(&["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {:?}", out);
        TestNs {
            name,
            deleted: false,
        }
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
    pub fn delete(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        self.deleted = true;
    }
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        ip(&a)
    }
    pub fn netns(&self) -> netops::Netns {
        netops::Netns::open(self.path()).unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = ip(&["netns", "del", &self.name]);
        }
    }
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("fbr-{tag}-{}", uniq()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn ferry_bridge() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
}

pub const REFERENCE_BRIDGE: &str = "/usr/lib/cni/bridge";

/// A CNI_PATH directory holding one `host-local`: ferry's when it has been built next to
/// our binary, else the reference's (FERRY_TEST_IPAM=reference forces the reference).
pub struct CniPath(TempDir);

impl CniPath {
    pub fn new() -> CniPath {
        let d = TempDir::new("cnipath");
        let ours = ferry_bridge().with_file_name("host-local");
        let use_ours =
            ours.exists() && std::env::var("FERRY_TEST_IPAM").as_deref() != Ok("reference");
        let src = if use_ours {
            ours
        } else {
            PathBuf::from("/usr/lib/cni/host-local")
        };
        std::os::unix::fs::symlink(src, d.0.join("host-local")).unwrap();
        CniPath(d)
    }
    pub fn path(&self) -> String {
        self.0.path()
    }
}

/// One plugin invocation's outcome.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout not JSON ({e}): {}", self.stdout))
    }
    pub fn expect_ok(self) -> Run {
        assert!(self.ok, "plugin failed: {}\n{}", self.stdout, self.stderr);
        self
    }
}

pub struct Call<'a> {
    pub bin: PathBuf,
    pub cmd: &'a str,
    pub id: &'a str,
    pub netns: Option<&'a str>,
    pub ifname: &'a str,
    pub cni_path: &'a str,
    pub args: &'a str,
}

/// Runs a plugin in the netns `host` (when given) the way a runtime runs it.
pub fn run_in(host: Option<&str>, c: &Call<'_>, conf: &Value) -> Run {
    let mut cmd = match host {
        Some(h) => {
            let mut c2 = Command::new("ip");
            c2.args(["netns", "exec", h]).arg(&c.bin);
            c2
        }
        None => Command::new(&c.bin),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", c.cmd)
        .env("CNI_CONTAINERID", c.id)
        .env("CNI_IFNAME", c.ifname)
        .env("CNI_PATH", c.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = c.netns {
        cmd.env("CNI_NETNS", n);
    }
    if !c.args.is_empty() {
        cmd.env("CNI_ARGS", c.args);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `f` until true or 5 s pass.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files in the host-local store of `net` other than its bookkeeping.
pub fn leases(data_dir: &str, net: &str) -> Vec<String> {
    std::fs::read_dir(format!("{data_dir}/{net}"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n != "lock" && !n.starts_with("last_reserved_ip") && !n.starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default()
}

/// TCP echo from `from` to `addr` (a listener made inside `to`); true when bytes came back.
pub fn tcp_echo(from: &TestNs, to: &TestNs, addr: &str) -> bool {
    let listener = to
        .netns()
        .run(|| std::net::TcpListener::bind(addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", to.name));
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 5];
                    if s.read_exact(&mut buf).is_ok() {
                        let _ = s.write_all(&buf);
                    }
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let client = from
        .netns()
        .run(move || std::net::TcpStream::connect_timeout(&target, Duration::from_millis(1500)))
        .unwrap();
    let ok = match client {
        Ok(mut c) => {
            use std::io::{Read, Write};
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut back = [0u8; 5];
            c.write_all(b"ferry").is_ok() && c.read_exact(&mut back).is_ok() && &back == b"ferry"
        }
        Err(_) => false,
    };
    let _ = server.join();
    ok
}

/// The "host" of a test: a throw-away namespace in which the plugin runs, so its bridges,
/// sysctls (forwarding), iptables and nft rules never touch the real host and all vanish
/// with the namespace, even when the test panics.
pub struct Host {
    pub ns: TestNs,
}

impl Host {
    pub fn new() -> Host {
        let ns = TestNs::new("h");
        let out = ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        assert!(out.status.success());
        Host { ns }
    }
    pub fn name(&self) -> &str {
        &self.ns.name
    }
    /// A plugin call inside this host.
    pub fn run(&self, c: &Call<'_>, conf: &Value) -> Run {
        run_in(Some(&self.ns.name), c, conf)
    }
    /// Shorthand: ferry bridge `cmd` for container `id` in `netns` as eth0.
    pub fn ferry(
        &self,
        cmd: &str,
        id: &str,
        netns: Option<&str>,
        cni_path: &str,
        conf: &Value,
    ) -> Run {
        self.run(
            &Call {
                bin: ferry_bridge(),
                cmd,
                id,
                netns,
                ifname: "eth0",
                cni_path,
                args: "",
            },
            conf,
        )
    }
    /// A command inside this host; its stdout.
    pub fn sh(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(args).stdout).into_owned()
    }
    /// A command inside this host.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.ns.exec(args)
    }
    /// `ip` inside this host must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name()];
        a.extend_from_slice(args);
        let out = ip(&a);
        assert!(out.status.success(), "ip {a:?}: {out:?}");
    }
    pub fn link_exists(&self, name: &str) -> bool {
        ip(&["-n", self.name(), "link", "show", name])
            .status
            .success()
    }
    /// Veths enslaved to `bridge`.
    pub fn ports_of(&self, bridge: &str) -> Vec<String> {
        let out = ip(&["-n", self.name(), "-o", "link", "show", "master", bridge]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }
    /// nat rules (both families) whose text contains `text`.
    pub fn nat_rules_mentioning(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for tool in ["iptables", "ip6tables"] {
            out.extend(
                self.sh(&[tool, "-t", "nat", "-S"])
                    .lines()
                    .filter(|l| l.contains(text))
                    .map(String::from),
            );
        }
        out
    }
}

impl TestNs {
    /// A command inside this namespace; its stdout.
    pub fn sh(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(args).stdout).into_owned()
    }
}
