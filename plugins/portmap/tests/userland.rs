//! Integration tests of the `userlandProxy` mode (issue 6). Run as root.
//!
//! Same shape as tests/portmap.rs: each test builds a private "host" network namespace with
//! a container namespace (veth `c0`/`eth0`) and an "outside" namespace (veth `o0`/`eth0`)
//! around it. portmap runs inside the host namespace (`ip netns exec`), so the ferry-proxy
//! daemon it auto-starts lives there too, on a socket and state dir in the test's tempdir.
//! The guard kills that daemon by PID (found by its private socket path in its command line),
//! then deletes the namespaces. Names: prefix `flh`, addresses 10.213.176.0/20 and
//! fd00:213:176::/56, host ports 18080–18099 (private to each test's namespace).

mod common;
use common::{must, netns_cookie, sh};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PORTMAP: &str = env!("CARGO_BIN_EXE_portmap");
static COUNTER: AtomicU32 = AtomicU32::new(0);

const C4: &str = "10.213.176.2";
const HOST_C4: &str = "10.213.176.1";
const C6: &str = "fd00:213:176::2";
const HOST_C6: &str = "fd00:213:176::1";
const HOST_O4: &str = "10.213.177.1";
const O4: &str = "10.213.177.2";
const HOST_O6: &str = "fd00:213:176:1::1";
const O6: &str = "fd00:213:176:1::2";
const PORT: u16 = 18080;

/// portmap finds `ferry-proxy` next to itself; `make test` builds every binary first, a
/// lone `cargo test -p portmap` may not have, so build it once.
fn ensure_proxy_binary() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = Path::new(PORTMAP).with_file_name("ferry-proxy");
        if bin.exists() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "ferry-proxy", "--bin", "ferry-proxy"])
            .status()
            .unwrap();
        assert!(status.success(), "building ferry-proxy failed");
        assert!(bin.exists(), "{} missing after the build", bin.display());
    });
}

/// PIDs of processes whose command line contains `needle` (our private socket path).
fn pids_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    // A killed daemon (reparented to init) is gone once /proc/<pid> is, or is a zombie.
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(s) if s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    panic!("pid {pid} still alive after SIGKILL");
}

/// Runs `f` on a thread inside the network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// One test's namespaces, daemon and files, all removed on drop.
struct Topo {
    host: String,
    ctr: String,
    out: String,
    cookie: u64,
    dir: tempfile::TempDir,
    servers: Vec<Child>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The daemon(s) portmap started for this test: their command line names our socket.
        for pid in pids_with(&self.socket().display().to_string()) {
            kill(pid);
        }
        for ns in [&self.ctr, &self.out, &self.host] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.host));
        let _ = std::fs::remove_dir_all(format!("/run/ferry/portmap/ns-{}", self.cookie));
    }
}

impl Topo {
    fn new(tag: &str) -> Topo {
        assert!(
            nix::unistd::geteuid().is_root(),
            "portmap userlandProxy integration tests need root"
        );
        ensure_proxy_binary();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{tag}{}-{n}", std::process::id() % 100000);
        let mut t = Topo {
            host: format!("flh-{id}-h"),
            ctr: format!("flh-{id}-c"),
            out: format!("flh-{id}-o"),
            cookie: 0,
            dir: tempfile::tempdir().unwrap(),
            servers: Vec::new(),
        };
        for ns in [&t.host, &t.ctr, &t.out] {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        t.cookie = netns_cookie(&t.host);
        // `localhost` resolves to ::1 and 127.0.0.1 inside the host namespace (ip netns exec
        // bind-mounts /etc/netns/<ns>/hosts over /etc/hosts).
        std::fs::create_dir_all(format!("/etc/netns/{}", t.host)).unwrap();
        std::fs::write(
            format!("/etc/netns/{}/hosts", t.host),
            "::1 localhost\n127.0.0.1 localhost\n",
        )
        .unwrap();
        let (h, c, o) = (t.host.clone(), t.ctr.clone(), t.out.clone());
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            must(&["ip", "netns", "exec", &h, "sysctl", "-qw", sysctl]);
        }
        for (dev, peer_ns, host_addrs, peer_addrs, gw4, gw6) in [
            (
                "c0",
                &c,
                [format!("{HOST_C4}/24"), format!("{HOST_C6}/64")],
                [format!("{C4}/24"), format!("{C6}/64")],
                HOST_C4,
                HOST_C6,
            ),
            (
                "o0",
                &o,
                [format!("{HOST_O4}/24"), format!("{HOST_O6}/64")],
                [format!("{O4}/24"), format!("{O6}/64")],
                HOST_O4,
                HOST_O6,
            ),
        ] {
            must(&[
                "ip", "-n", &h, "link", "add", dev, "type", "veth", "peer", "name", "eth0",
                "netns", peer_ns,
            ]);
            for a in &host_addrs {
                must(&["ip", "-n", &h, "addr", "add", a, "dev", dev, "nodad"]);
            }
            for a in &peer_addrs {
                must(&[
                    "ip", "-n", peer_ns, "addr", "add", a, "dev", "eth0", "nodad",
                ]);
            }
            must(&["ip", "-n", &h, "link", "set", dev, "up"]);
            must(&["ip", "-n", peer_ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", peer_ns, "route", "add", "default", "via", gw4]);
            must(&[
                "ip", "-n", peer_ns, "-6", "route", "add", "default", "via", gw6,
            ]);
        }
        t
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("proxy.sock")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("proxy-state")
    }

    fn daemon_pid(&self) -> i32 {
        std::fs::read_to_string(self.state_dir().join("daemon.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn client(&self) -> ferry_proxy::client::Client {
        ferry_proxy::client::Client::new(self.socket())
    }

    /// A portmap config in userlandProxy mode for a container with `ips`.
    fn conf(&self, backend: &str, mappings: Value, ips: &[&str]) -> Value {
        let ips: Vec<Value> = ips
            .iter()
            .map(|a| json!({"address": a, "interface": 0}))
            .collect();
        json!({
            "cniVersion": "1.0.0",
            "name": "flhnet",
            "type": "portmap",
            "backend": backend,
            "userlandProxy": true,
            "proxySocket": self.socket(),
            "proxyStateDir": self.state_dir(),
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                "ips": ips,
            },
        })
    }

    /// A TCP server in the container that answers with its peer's address.
    fn serve_in_container(&mut self, port: u16) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ctr,
                "socat",
                &format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0"),
                "SYSTEM:echo hello-from-container peer=$SOCAT_PEERADDR",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
    }

    /// One client attempt from `ns` (socat address `target`); what it received.
    fn ask(&self, ns: &str, target: &str) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "socat", "-T2", "-", target])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"ping\n");
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Polls until a reply contains `want` (the container's server takes a moment).
    fn expect_reply(&self, ns: &str, target: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.ask(ns, target);
            if last.contains(want) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{ns} -> {target}: wanted {want:?}, last got {last:?}");
    }

    fn run(&self, command: &str, id: &str, conf: &Value) -> Result<Value, Value> {
        common::run_plugin(&self.host, &self.ctr, PORTMAP, command, id, conf)
    }

    fn in_host(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.host];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Rules of one container in the host namespace (both backends, both families).
    fn rules_of(&self, id: &str) -> Vec<String> {
        let needle = format!("id: \"{id}\"");
        let mut out = Vec::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            out.extend(
                self.in_host(&[tool, "-t", "nat"])
                    .lines()
                    .filter(|l| l.contains(&needle))
                    .map(String::from),
            );
        }
        out
    }

    /// Every per-attachment chain or rule left in the host namespace.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            out.extend(
                self.in_host(&[tool, "-t", "nat"])
                    .lines()
                    .filter(|l| l.contains("CNI-DN-"))
                    .map(String::from),
            );
        }
        for fam in ["ip", "ip6"] {
            let r = sh(&[
                "ip",
                "netns",
                "exec",
                &self.host,
                "nft",
                "list",
                "table",
                fam,
                "cni_hostport",
            ]);
            out.extend(
                String::from_utf8_lossy(&r.stdout)
                    .lines()
                    .filter(|l| l.contains("CNI-DN-"))
                    .map(String::from),
            );
        }
        out
    }

    /// Owners the daemon holds mappings for.
    fn daemon_owners(&self) -> Vec<String> {
        let mut owners: Vec<String> = self
            .client()
            .list()
            .unwrap()
            .into_iter()
            .map(|m| m.spec.owner)
            .collect();
        owners.dedup();
        owners
    }
}

fn tcp(host: u16, ctr: u16) -> Value {
    json!({"hostPort": host, "containerPort": ctr, "protocol": "tcp"})
}

fn code_of(err: &Value) -> u64 {
    err["error"]["code"].as_u64().unwrap_or(0)
}

fn msg_of(err: &Value) -> String {
    err["error"]["msg"].as_str().unwrap_or_default().to_string()
}

/// Whether a fresh listener can bind `addr` inside the host namespace (std sets SO_REUSEADDR,
/// as servers do, so TIME_WAIT leftovers of proxied connections do not count).
fn can_bind(ns: &str, addr: &str) -> Result<(), String> {
    let addr = addr.to_string();
    in_netns(ns, move || {
        std::net::TcpListener::bind(&addr)
            .map(drop)
            .map_err(|e| format!("{addr}: {e}"))
    })
}

/// socat prints an IPv4 peer of an IPv6 listener as `[0000:…:ffff:0ad5:b102]`.
fn v4_mapped_as_socat_prints(v4: &str) -> String {
    let o = v4.parse::<std::net::Ipv4Addr>().unwrap().octets();
    format!("ffff:{:02x}{:02x}:{:02x}{:02x}]", o[0], o[1], o[2], o[3])
}

fn serves_loopback_outside_and_hairpin(backend: &str) {
    let mut t = Topo::new(&format!("s{}", &backend[..1]));
    t.serve_in_container(80);
    // An IPv4-only container: IPv6 (loopback and the host's address) reaches it through the
    // daemon.
    let c = t.conf(backend, json!([tcp(PORT, 80)]), &[&format!("{C4}/24")]);
    t.run("ADD", "c1", &c).expect("ADD starts the daemon");
    let (host, out, ctr) = (t.host.clone(), t.out.clone(), t.ctr.clone());
    let hello = "hello-from-container";
    t.expect_reply(&host, &format!("TCP4:127.0.0.1:{PORT}"), hello);
    t.expect_reply(&host, &format!("TCP6:[::1]:{PORT}"), hello);
    t.expect_reply(&host, &format!("TCP6:localhost:{PORT}"), hello);
    t.expect_reply(&host, &format!("TCP4:localhost:{PORT}"), hello);
    // Outside → host address: kernel DNAT, the container sees the real client address.
    let reply = t.expect_reply(&out, &format!("TCP4:{HOST_O4}:{PORT}"), hello);
    assert!(
        reply.contains(&v4_mapped_as_socat_prints(O4)),
        "DNAT path must keep the client address {O4}: {reply}"
    );
    // Outside → host IPv6 address → IPv4-only container: the daemon.
    t.expect_reply(&out, &format!("TCP6:[{HOST_O6}]:{PORT}"), hello);
    // Hairpin: the container reaches itself through the host address.
    t.expect_reply(&ctr, &format!("TCP4:{HOST_O4}:{PORT}"), hello);
    // Loopback is not DNATed and route_localnet stays off.
    let rules = t.rules_of("c1").join("\n");
    let saved = t.in_host(&["iptables-save", "-t", "nat"]);
    if backend == "iptables" {
        assert!(saved.contains("! -d 127.0.0.0/8"), "{saved}");
        assert!(!saved.contains("-s 127.0.0.1/32"), "{saved}");
    } else {
        let nft = t.in_host(&["nft", "list", "table", "ip", "cni_hostport"]);
        assert!(nft.contains("ip daddr != 127.0.0.0/8"), "{nft}");
        assert!(!nft.contains("ip saddr 127.0.0.1"), "{nft}");
        assert!(rules.is_empty(), "{rules}");
    }
    let localnet = t.in_host(&["sysctl", "-n", "net.ipv4.conf.c0.route_localnet"]);
    assert_eq!(localnet.trim(), "0");
    t.run("CHECK", "c1", &c).expect("CHECK");
    // The daemon holds both wildcards: the port is reserved host-wide.
    assert!(can_bind(&host, &format!("0.0.0.0:{PORT}")).is_err());
    assert!(can_bind(&host, &format!("{HOST_O4}:{PORT}")).is_err());
    assert!(can_bind(&host, &format!("[::]:{PORT}")).is_err());

    // CHECK notices a reservation the daemon lost; a repeated ADD puts it back.
    let v6 = t
        .client()
        .list_owner("cni:flhnet:c1")
        .unwrap()
        .into_iter()
        .find(|m| m.spec.host_ip.is_ipv6())
        .expect("a [::] mapping for an IPv4-only container");
    t.client().delete(&v6.spec.id).unwrap();
    let err = t.run("CHECK", "c1", &c).expect_err("CHECK without [::]");
    assert!(msg_of(&err).contains("does not hold"), "{err}");
    t.run("ADD", "c1", &c).expect("repeated ADD");
    t.run("CHECK", "c1", &c)
        .expect("CHECK after the repeated ADD");
    t.expect_reply(&host, &format!("TCP6:[::1]:{PORT}"), hello);

    // A second container asking for the same port: refused, naming the first; nothing of it
    // is installed, in the kernel or in the daemon.
    let c2 = t.conf(backend, json!([tcp(PORT, 81)]), &["10.213.176.3/24"]);
    let err = t.run("ADD", "c2", &c2).expect_err("port held by c1");
    assert_eq!(code_of(&err), 101, "{err}");
    let msg = msg_of(&err);
    assert!(
        msg.contains("container c1") && msg.contains(&format!("{PORT}/tcp")),
        "{msg}"
    );
    assert_eq!(t.rules_of("c2"), Vec::<String>::new());
    assert_eq!(t.daemon_owners(), ["cni:flhnet:c1"]);

    // DEL (without the mappings, as runtimes may send it) frees the port at once.
    let mut del = c.clone();
    del["runtimeConfig"] = json!({});
    t.run("DEL", "c1", &del).expect("DEL");
    for addr in [format!("0.0.0.0:{PORT}"), format!("[::]:{PORT}")] {
        can_bind(&host, &addr).expect("the port is free right after DEL");
    }
    assert_eq!(t.leftovers(), Vec::<String>::new());
    assert!(t.daemon_owners().is_empty());
    t.run("DEL", "c1", &del).expect("second DEL is idempotent");
    t.run("CHECK", "c1", &c).expect_err("CHECK after DEL");
}

#[test]
fn iptables_userland_proxy_serves_loopback_ipv6_outside_and_hairpin() {
    serves_loopback_outside_and_hairpin("iptables");
}

#[test]
fn nftables_userland_proxy_serves_loopback_ipv6_outside_and_hairpin() {
    serves_loopback_outside_and_hairpin("nftables");
}

#[test]
fn userland_proxy_refuses_a_port_a_host_process_holds() {
    let mut t = Topo::new("hp");
    let host = t.host.clone();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host,
            "socat",
            &format!("TCP4-LISTEN:{PORT},fork,reuseaddr"),
            "SYSTEM:echo host-process",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    t.servers.push(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while can_bind(&host, &format!("0.0.0.0:{PORT}")).is_ok() {
        assert!(Instant::now() < deadline, "socat never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = t.conf("iptables", json!([tcp(PORT, 80)]), &[&format!("{C4}/24")]);
    let err = t.run("ADD", "c1", &c).expect_err("port held by socat");
    assert_eq!(code_of(&err), 101, "{err}");
    let msg = msg_of(&err);
    assert!(msg.contains("socat") && msg.contains("pid"), "{msg}");
    assert_eq!(
        t.leftovers(),
        Vec::<String>::new(),
        "no rules after a conflict"
    );
    assert!(
        t.daemon_owners().is_empty(),
        "no mapping kept after a conflict"
    );
    // The host process is untouched.
    t.expect_reply(&host, &format!("TCP4:127.0.0.1:{PORT}"), "host-process");
    // hostIP 127.0.0.1 only needs 127.0.0.1: also held by socat's wildcard.
    let lo = t.conf(
        "iptables",
        json!([{"hostPort": PORT, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]),
        &[&format!("{C4}/24")],
    );
    assert_eq!(code_of(&t.run("ADD", "c1", &lo).unwrap_err()), 101);
}

#[test]
fn userland_proxy_daemon_restarts_once_and_restores_mappings() {
    let mut t = Topo::new("rs");
    t.serve_in_container(80);
    let host = t.host.clone();
    let hello = "hello-from-container";
    // hostIP 127.0.0.1: served by the daemon only, on 127.0.0.1 only.
    let c1 = t.conf(
        "nftables",
        json!([tcp(PORT, 80), {"hostPort": PORT + 1, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]),
        &[&format!("{C4}/24"), &format!("{C6}/64")],
    );
    t.run("ADD", "c1", &c1).expect("ADD");
    t.expect_reply(&host, &format!("TCP6:[::1]:{PORT}"), hello);
    t.expect_reply(&host, &format!("TCP4:127.0.0.1:{}", PORT + 1), hello);
    assert!(
        t.ask(&host, &format!("TCP6:[::1]:{}", PORT + 1))
            .contains("refused"),
        "hostIP 127.0.0.1 must not listen on ::1"
    );
    let first = t.daemon_pid();
    assert_eq!(pids_with(&t.socket().display().to_string()), [first]);
    kill(first);
    wait_gone(first);
    assert!(
        !t.ask(&host, &format!("TCP4:127.0.0.1:{PORT}"))
            .contains(hello),
        "nothing serves loopback while the daemon is down"
    );
    // Three ADDs at once find the daemon gone: exactly one of them starts it, all succeed,
    // and it restores c1's mappings from its state.
    let adds: Vec<(String, Value)> = (2..5u16)
        .map(|i| {
            let c = t.conf("nftables", json!([tcp(PORT + i, 80)]), &["10.213.176.9/24"]);
            (format!("c{i}"), c)
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = adds
            .iter()
            .map(|(id, c)| s.spawn(|| t.run("ADD", id, c)))
            .collect();
        for h in handles {
            h.join().unwrap().expect("ADD while the daemon is down");
        }
    });
    let daemons = pids_with(&t.socket().display().to_string());
    assert_eq!(daemons.len(), 1, "exactly one daemon: {daemons:?}");
    assert_ne!(daemons[0], first);
    assert_eq!(t.daemon_pid(), daemons[0]);
    t.expect_reply(&host, &format!("TCP4:127.0.0.1:{PORT}"), hello);
    t.expect_reply(&host, &format!("TCP6:[::1]:{PORT}"), hello);
    t.expect_reply(&host, &format!("TCP4:127.0.0.1:{}", PORT + 1), hello);
    t.run("CHECK", "c1", &c1).expect("CHECK after the restart");
    // GC keeps c1 and c3 only.
    let mut gc = c1.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc.as_object_mut().unwrap().remove("prevResult");
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c3", "ifname": "eth0"}]);
    t.run("GC", "", &gc).expect("GC");
    let mut owners = t.daemon_owners();
    owners.sort();
    assert_eq!(owners, ["cni:flhnet:c1", "cni:flhnet:c3"]);
    // DEL while the daemon is down does not start it, and a later start does not bring the
    // deleted mappings back.
    let pid = t.daemon_pid();
    kill(pid);
    wait_gone(pid);
    t.run("DEL", "c3", &c1).expect("DEL with the daemon down");
    assert!(pids_with(&t.socket().display().to_string()).is_empty());
    t.run("DEL", "c1", &c1).expect("DEL with the daemon down");
    let c9 = t.conf("nftables", json!([tcp(PORT + 9, 80)]), &["10.213.176.9/24"]);
    t.run("ADD", "c9", &c9).expect("ADD restarts the daemon");
    assert_eq!(t.daemon_owners(), ["cni:flhnet:c9"]);
    can_bind(&host, &format!("0.0.0.0:{PORT}")).expect("c1's port stays free");
    t.run("DEL", "c9", &c9).expect("DEL");
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

#[test]
fn userland_proxy_serves_udp_over_both_loopbacks() {
    let mut t = Topo::new("ud");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ctr,
            "socat",
            "UDP6-RECVFROM:53,fork,ipv6only=0",
            "SYSTEM:echo udp-from-container",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    t.servers.push(child);
    let c = t.conf(
        "iptables",
        json!([{"hostPort": PORT, "containerPort": 53, "protocol": "udp"}]),
        &[&format!("{C4}/24")],
    );
    t.run("ADD", "c1", &c).expect("ADD");
    let (host, out) = (t.host.clone(), t.out.clone());
    let want = "udp-from-container";
    t.expect_reply(&host, &format!("UDP4:127.0.0.1:{PORT}"), want);
    t.expect_reply(&host, &format!("UDP6:[::1]:{PORT}"), want);
    t.expect_reply(&out, &format!("UDP4:{HOST_O4}:{PORT}"), want);
    t.run("DEL", "c1", &c).expect("DEL");
    assert!(t.daemon_owners().is_empty());
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

/// podman (CNI backend, as root) binds every published port itself after ADD and never
/// accepts on it: with `runtimeBindsPorts` the daemon leaves IPv4 to it (127.0.0.1 stays on
/// the kernel's DNAT) and serves ::1.
#[test]
fn userland_proxy_leaves_ipv4_to_a_runtime_that_binds_ports() {
    let mut t = Topo::new("rb");
    t.serve_in_container(80);
    let mut c = t.conf("iptables", json!([tcp(PORT, 80)]), &[&format!("{C4}/24")]);
    c["runtimeBindsPorts"] = json!(true);
    t.run("ADD", "c1", &c).expect("ADD");
    let host = t.host.clone();
    // What podman does after ADD: listen on 0.0.0.0:P and never accept.
    let runtime_socket = in_netns(&host, move || {
        std::net::TcpListener::bind(format!("0.0.0.0:{PORT}")).expect("the runtime's bind")
    });
    let hello = "hello-from-container";
    t.expect_reply(&host, &format!("TCP4:127.0.0.1:{PORT}"), hello);
    t.expect_reply(&host, &format!("TCP6:[::1]:{PORT}"), hello);
    t.expect_reply(&t.out.clone(), &format!("TCP4:{HOST_O4}:{PORT}"), hello);
    t.run("CHECK", "c1", &c).expect("CHECK");
    drop(runtime_socket);
    t.run("DEL", "c1", &c).expect("DEL");
    assert!(t.daemon_owners().is_empty());
    assert_eq!(t.leftovers(), Vec::<String>::new());
}
