//! Integration tests: real namespaces, real rules, real traffic. Run as root.
//!
//! Every test builds its own "host" network namespace, so the CNI-HOSTPORT chains, the
//! `cni_hostport` tables, conntrack and `/proc/net` the plugin sees are the test's alone and
//! tests run in parallel without touching the machine's firewall. Around the host: a
//! container namespace (veth `c0`/`eth0`) and an "outside" client namespace (veth `o0`/`eth0`).

mod common;
use common::{must, netns_cookie, sh};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PORTMAP: &str = env!("CARGO_BIN_EXE_portmap");
const REFERENCE: &str = "/usr/lib/cni/portmap";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces of one test, deleted on drop (also when the test panics).
struct Topo {
    host: String,
    cookie: u64,
    ctr: String,
    out: String,
    servers: Vec<Child>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.ctr, &self.out, &self.host] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        // The plugin's port index for the namespace (see src/state.rs).
        let _ = std::fs::remove_dir_all(format!("/run/ferry/portmap/ns-{}", self.cookie));
    }
}

/// Addresses used inside every test's private namespaces (10.213.32.0/20, fd00:213:32::/56).
const C4: &str = "10.213.32.2";
const HOST_C4: &str = "10.213.32.1";
const HOST_O4: &str = "10.213.33.1";
const O4: &str = "10.213.33.2";
const C6: &str = "fd00:213:32::2";
const HOST_O6: &str = "fd00:213:32:1::1";

impl Topo {
    fn new(tag: &str) -> Topo {
        assert!(
            nix::unistd::geteuid().is_root(),
            "portmap integration tests need root"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{tag}{}-{n}", std::process::id() % 100000);
        let mut t = Topo {
            host: format!("fpm-{id}-h"),
            cookie: 0,
            ctr: format!("fpm-{id}-c"),
            out: format!("fpm-{id}-o"),
            servers: Vec::new(),
        };
        for ns in [&t.host, &t.ctr, &t.out] {
            must(&["ip", "netns", "add", ns]);
        }
        t.cookie = netns_cookie(&t.host);
        let h = t.host.as_str();
        for ns in [&t.host, &t.ctr, &t.out] {
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        must(&[
            "ip",
            "netns",
            "exec",
            h,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        must(&[
            "ip",
            "netns",
            "exec",
            h,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        // container side
        must(&[
            "ip", "-n", h, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns",
            &t.ctr,
        ]);
        must(&[
            "ip",
            "-n",
            h,
            "addr",
            "add",
            &format!("{HOST_C4}/24"),
            "dev",
            "c0",
        ]);
        must(&[
            "ip",
            "-n",
            h,
            "addr",
            "add",
            "fd00:213:32::1/64",
            "dev",
            "c0",
            "nodad",
        ]);
        must(&["ip", "-n", h, "link", "set", "c0", "up"]);
        t.set_container_ip(C4, C6);
        // outside side
        must(&[
            "ip", "-n", h, "link", "add", "o0", "type", "veth", "peer", "name", "eth0", "netns",
            &t.out,
        ]);
        must(&[
            "ip",
            "-n",
            h,
            "addr",
            "add",
            &format!("{HOST_O4}/24"),
            "dev",
            "o0",
        ]);
        must(&[
            "ip",
            "-n",
            h,
            "addr",
            "add",
            &format!("{HOST_O6}/64"),
            "dev",
            "o0",
            "nodad",
        ]);
        must(&["ip", "-n", h, "link", "set", "o0", "up"]);
        must(&[
            "ip",
            "-n",
            &t.out,
            "addr",
            "add",
            &format!("{O4}/24"),
            "dev",
            "eth0",
        ]);
        must(&[
            "ip",
            "-n",
            &t.out,
            "addr",
            "add",
            "fd00:213:32:1::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        must(&["ip", "-n", &t.out, "link", "set", "eth0", "up"]);
        must(&[
            "ip", "-n", &t.out, "route", "add", "default", "via", HOST_O4,
        ]);
        must(&[
            "ip", "-n", &t.out, "-6", "route", "add", "default", "via", HOST_O6,
        ]);
        t
    }

    /// (Re)addresses the container end, as a re-created container would be.
    fn set_container_ip(&self, v4: &str, v6: &str) {
        let c = self.ctr.as_str();
        must(&["ip", "-n", c, "addr", "flush", "dev", "eth0"]);
        must(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            "eth0",
        ]);
        must(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        must(&["ip", "-n", c, "link", "set", "eth0", "up"]);
        let _ = sh(&["ip", "-n", c, "route", "replace", "default", "via", HOST_C4]);
        let _ = sh(&[
            "ip",
            "-n",
            c,
            "-6",
            "route",
            "replace",
            "default",
            "via",
            "fd00:213:32::1",
        ]);
    }

    /// A server in `ns` answering every connection/datagram with `reply`.
    fn serve(&mut self, ns: &str, listen: &str, reply: &str) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "socat",
                listen,
                &format!("SYSTEM:echo {reply}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
    }

    /// Polls a client in `ns` until it receives `want` (servers take a moment to listen).
    fn expect_reply(&self, ns: &str, target: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "socat", "-T1", "-", target])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child.stdin.take().unwrap().write_all(b"ping\n");
            let out = child.wait_with_output().unwrap();
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if last.contains(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{ns} -> {target}: wanted {want:?}, last got {last:?}");
    }

    fn run(&self, plugin: &str, command: &str, id: &str, conf: &Value) -> Result<Value, Value> {
        common::run_plugin(&self.host, &self.ctr, plugin, command, id, conf)
    }

    fn ferry(&self, command: &str, id: &str, conf: &Value) -> Result<Value, Value> {
        self.run(PORTMAP, command, id, conf)
    }

    fn in_host(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.host];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Every trace of per-attachment rules in the host namespace, both backends.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            let text = self.in_host(&[tool, "-t", "nat"]);
            out.extend(
                text.lines()
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
            let text = String::from_utf8_lossy(&r.stdout).into_owned();
            out.extend(
                text.lines()
                    .filter(|l| l.contains("CNI-DN-"))
                    .map(String::from),
            );
        }
        out
    }
}

fn conf(backend: &str, mappings: Value, ips: &[&str], extra: Value) -> Value {
    let ips: Vec<Value> = ips
        .iter()
        .map(|a| json!({"address": a, "interface": 0}))
        .collect();
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "fpmnet",
        "type": "portmap",
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": ips,
        },
    });
    if !backend.is_empty() {
        c["backend"] = json!(backend);
    }
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    c
}

fn tcp(host: u16, ctr: u16) -> Value {
    json!({"hostPort": host, "containerPort": ctr, "protocol": "tcp"})
}

/// prevResult as a 1.0.0 result prints it (the reference also adds an empty `dns`).
fn echoed(c: &Value) -> Value {
    let mut p = c["prevResult"].clone();
    if p.get("dns").is_none() {
        p["dns"] = json!({});
    }
    p
}

fn code_of(err: &Value) -> u64 {
    err["error"]["code"].as_u64().unwrap_or(0)
}

fn forwarding_works(backend: &str) {
    let mut t = Topo::new(&backend[..2]);
    let ctr = t.ctr.clone();
    t.serve(
        &ctr,
        "TCP6-LISTEN:80,fork,reuseaddr,ipv6only=0",
        "hello-from-container",
    );
    let c = conf(
        backend,
        json!([tcp(22001, 80)]),
        &[&format!("{C4}/24"), &format!("{C6}/64")],
        json!({}),
    );
    let res = t.ferry("ADD", "c1", &c).expect("ADD");
    assert_eq!(res, echoed(&c), "ADD must return prevResult unchanged");
    let out = t.out.clone();
    let host = t.host.clone();
    // outside client -> host address -> container
    t.expect_reply(
        &out,
        &format!("TCP:{HOST_O4}:22001"),
        "hello-from-container",
    );
    // IPv6
    t.expect_reply(
        &out,
        &format!("TCP6:[{HOST_O6}]:22001"),
        "hello-from-container",
    );
    // 127.0.0.1 from the host itself (route_localnet + masquerade)
    t.expect_reply(&host, "TCP:127.0.0.1:22001", "hello-from-container");
    // hairpin: the container reaches itself through the host address
    t.expect_reply(
        &ctr,
        &format!("TCP:{HOST_O4}:22001"),
        "hello-from-container",
    );
    t.ferry("CHECK", "c1", &c).expect("CHECK");
    // DEL without the mappings (runtimes do not always resend them)
    let mut del = c.clone();
    del["runtimeConfig"] = json!({});
    t.ferry("DEL", "c1", &del).expect("DEL");
    assert_eq!(t.leftovers(), Vec::<String>::new());
    t.ferry("DEL", "c1", &del)
        .expect("second DEL is idempotent");
}

#[test]
fn iptables_forwards_from_outside_localhost_hairpin_and_ipv6() {
    forwarding_works("iptables");
}

#[test]
fn nftables_forwards_from_outside_localhost_hairpin_and_ipv6() {
    forwarding_works("nftables");
}

fn check_on_ipv4_only_and_detects_missing_rule(backend: &str) {
    let t = Topo::new(&format!("k{}", &backend[..1]));
    let c = conf(
        backend,
        json!([tcp(22002, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    t.ferry("ADD", "c1", &c).expect("ADD");
    t.ferry("CHECK", "c1", &c)
        .expect("CHECK on an IPv4-only network passes");
    // delete the DNAT rule (nftables: the DNAT map element) by hand: CHECK must notice
    if backend == "iptables" {
        let chain = t
            .leftovers()
            .iter()
            .find_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("CNI-DN-"))
                    .map(|s| s.trim_end_matches(',').to_string())
            })
            .unwrap();
        t.in_host(&[
            "iptables",
            "-t",
            "nat",
            "-D",
            &chain,
            "-p",
            "tcp",
            "-m",
            "tcp",
            "--dport",
            "22002",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{C4}:80"),
        ]);
    } else {
        t.in_host(&[
            "nft",
            "delete",
            "element",
            "ip",
            "cni_hostport",
            "ferry_dnat",
            "{ tcp . 22002 }",
        ]);
    }
    let err = t.ferry("CHECK", "c1", &c).expect_err("CHECK must fail");
    assert!(
        err["error"]["msg"].as_str().unwrap_or("").len() > 5,
        "{err}"
    );
    t.ferry("DEL", "c1", &c).expect("DEL");
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

#[test]
fn iptables_check_passes_ipv4_only_and_fails_without_dnat_rule() {
    check_on_ipv4_only_and_detects_missing_rule("iptables");
}

#[test]
fn nftables_check_passes_ipv4_only_and_fails_without_dnat_rule() {
    check_on_ipv4_only_and_detects_missing_rule("nftables");
}

#[test]
fn udp_mapping_follows_recreated_container() {
    for backend in ["iptables", "nftables"] {
        let mut t = Topo::new(&format!("u{}", &backend[..1]));
        let udp = json!([{"hostPort": 22003, "containerPort": 53, "protocol": "udp"}]);
        let ctr = t.ctr.clone();
        let out = t.out.clone();
        t.serve(&ctr, "UDP4-RECVFROM:53,fork,reuseaddr", "one");
        let c1 = conf(backend, udp.clone(), &[&format!("{C4}/24")], json!({}));
        t.ferry("ADD", "c1", &c1).expect("ADD c1");
        let target = format!("UDP4:{HOST_O4}:22003,sourceport=22900,reuseaddr");
        t.expect_reply(&out, &target, "one");
        // the container goes away and comes back with a new address
        t.ferry("DEL", "c1", &c1).expect("DEL c1");
        for s in &mut t.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        t.set_container_ip("10.213.32.3", "fd00:213:32::3");
        t.serve(&ctr, "UDP4-RECVFROM:53,fork,reuseaddr", "two");
        let c2 = conf(backend, udp, &["10.213.32.3/24"], json!({}));
        t.ferry("ADD", "c2", &c2).expect("ADD c2");
        t.expect_reply(&out, &target, "two");
        t.ferry("DEL", "c2", &c2).expect("DEL c2");
        assert_eq!(t.leftovers(), Vec::<String>::new());
    }
}

#[test]
fn conflicts_are_refused_and_nothing_is_installed() {
    let mut t = Topo::new("cf");
    let host = t.host.clone();
    // a host process on the port
    t.serve(&host, "TCP4-LISTEN:22010,fork,reuseaddr", "host");
    std::thread::sleep(Duration::from_millis(300));
    let c = conf(
        "iptables",
        json!([tcp(22010, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    let err = t
        .ferry("ADD", "c1", &c)
        .expect_err("port held by a process");
    assert_eq!(code_of(&err), 101, "{err}");
    let msg = err["error"]["msg"].as_str().unwrap();
    assert!(
        msg.contains("22010/tcp") && msg.contains("process socat (pid"),
        "{msg}"
    );
    assert_eq!(
        t.leftovers(),
        Vec::<String>::new(),
        "nothing installed after a conflict"
    );
    // opt-out keeps the reference behaviour
    let mut optout = c.clone();
    optout["checkPortConflicts"] = json!(false);
    t.ferry("ADD", "c1", &optout)
        .expect("ADD with checkPortConflicts false");
    t.ferry("DEL", "c1", &optout).expect("DEL");

    for backend in ["iptables", "nftables"] {
        // another container on the same port and address family
        let a = conf(
            backend,
            json!([tcp(22011, 80)]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        t.ferry("ADD", "ca", &a).expect("first mapping");
        let err = t
            .ferry("ADD", "cb", &a)
            .expect_err("second container on the same port");
        assert_eq!(code_of(&err), 101, "{err}");
        let msg = err["error"]["msg"].as_str().unwrap();
        assert!(
            msg.contains("22011/tcp on 0.0.0.0") && msg.contains("container ca"),
            "{msg}"
        );
        // different host addresses do not overlap
        let ip1 = conf(
            backend,
            json!([{"hostPort": 22012, "containerPort": 80, "protocol": "tcp", "hostIP": HOST_O4}]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        let ip2 = conf(
            backend,
            json!([{"hostPort": 22012, "containerPort": 80, "protocol": "tcp", "hostIP": HOST_C4}]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        t.ferry("ADD", "cc", &ip1).expect("hostIP 1");
        t.ferry("ADD", "cd", &ip2)
            .expect("hostIP 2 on the same port");
        for id in ["ca", "cc", "cd"] {
            t.ferry("DEL", id, &a).expect("DEL");
        }
        assert_eq!(t.leftovers(), Vec::<String>::new());
    }
}

#[test]
fn reference_mappings_conflict_and_interoperate() {
    let t = Topo::new("rf");
    let c = conf(
        "",
        json!([tcp(22020, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    // reference ADD, then ferry ADD of the same port: conflict naming the reference's container
    t.run(REFERENCE, "ADD", "refc", &c).expect("reference ADD");
    t.ferry("CHECK", "refc", &c)
        .expect("ferry CHECK accepts the reference's rules");
    let err = t
        .ferry("ADD", "c2", &c)
        .expect_err("conflict with reference rules");
    assert_eq!(code_of(&err), 101, "{err}");
    assert!(
        err["error"]["msg"]
            .as_str()
            .unwrap()
            .contains("container refc"),
        "{err}"
    );
    // ferry DEL (without mappings) removes what the reference installed
    let mut del = c.clone();
    del["runtimeConfig"] = json!({});
    t.ferry("DEL", "refc", &del)
        .expect("ferry DEL of reference rules");
    assert_eq!(t.leftovers(), Vec::<String>::new());
    // ferry ADD, reference CHECK and DEL
    t.ferry("ADD", "c3", &c).expect("ferry ADD");
    t.run(REFERENCE, "DEL", "c3", &c)
        .expect("reference DEL of ferry rules");
    assert_eq!(t.leftovers(), Vec::<String>::new());
    // and ferry's ADD after that works again (stale claim is ignored)
    t.ferry("ADD", "c4", &c)
        .expect("ferry ADD after reference DEL");
    t.ferry("DEL", "c4", &c).expect("DEL");
}

#[test]
fn reference_mappings_made_after_the_import_are_conflicts_too() {
    let t = Topo::new("ra");
    let mine = conf(
        "iptables",
        json!([tcp(22070, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    // ferry's first ADD imports the reference's rules (none yet) into its index.
    t.ferry("ADD", "c1", &mine).expect("ferry ADD");
    // Then the reference maps a port, and ferry is asked for the same one.
    let theirs = conf(
        "",
        json!([tcp(22071, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    t.run(REFERENCE, "ADD", "refl", &theirs)
        .expect("reference ADD");
    for backend in ["iptables", "nftables"] {
        let mut again = theirs.clone();
        again["backend"] = json!(backend);
        let err = t
            .ferry("ADD", "c2", &again)
            .expect_err("reference mapping made after the import");
        assert_eq!(code_of(&err), 101, "{err}");
        let msg = err["error"]["msg"].as_str().unwrap_or("");
        assert!(
            msg.contains("22071/tcp") && msg.contains("container refl"),
            "{msg}"
        );
    }
    // Once the reference removed it, the port is free again (the stale claim is ignored).
    t.run(REFERENCE, "DEL", "refl", &theirs)
        .expect("reference DEL");
    t.ferry("ADD", "c2", &theirs)
        .expect("ADD after the reference's DEL");
    t.ferry("DEL", "c2", &theirs).expect("DEL c2");
    t.ferry("DEL", "c1", &mine).expect("DEL c1");
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

#[test]
fn gc_removes_attachments_not_listed() {
    for backend in ["iptables", "nftables"] {
        let t = Topo::new(&format!("g{}", &backend[..1]));
        let keep = conf(
            backend,
            json!([tcp(22030, 80)]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        let gone = conf(
            backend,
            json!([tcp(22031, 80)]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        t.ferry("ADD", "keep", &keep).expect("ADD keep");
        t.ferry("ADD", "gone", &gone).expect("ADD gone");
        let mut gc = conf(backend, json!([]), &[], json!({}));
        gc["cniVersion"] = json!("1.1.0");
        gc.as_object_mut().unwrap().remove("prevResult");
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
        t.ferry("GC", "", &gc).expect("GC");
        let left = t.leftovers().join("\n");
        assert!(
            left.contains("22030") || left.contains("CNI-DN-"),
            "kept mapping must stay: {left}"
        );
        assert!(
            !left.contains("22031"),
            "GC must remove the stale mapping: {left}"
        );
        t.ferry("DEL", "keep", &keep).expect("DEL");
        assert_eq!(t.leftovers(), Vec::<String>::new());
    }
}

#[test]
fn invalid_mappings_and_missing_prev_result() {
    let t = Topo::new("iv");
    for bad in [
        json!([{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]),
        json!([{"hostPort": 65536, "containerPort": 80, "protocol": "tcp"}]),
        json!([{"hostPort": 22040, "containerPort": 80, "protocol": "icmp"}]),
    ] {
        let err = t
            .ferry(
                "ADD",
                "c1",
                &conf("iptables", bad, &[&format!("{C4}/24")], json!({})),
            )
            .expect_err("invalid");
        assert_eq!(code_of(&err), 7, "{err}");
    }
    let mut c = conf("iptables", json!([tcp(22041, 80)]), &[], json!({}));
    c.as_object_mut().unwrap().remove("prevResult");
    let err = t.ferry("ADD", "c1", &c).expect_err("not chained");
    assert!(
        err["error"]["msg"]
            .as_str()
            .unwrap()
            .contains("must be called as chained plugin"),
        "{err}"
    );
    // STATUS: the backend's tools are installed here
    let mut status =
        json!({"cniVersion": "1.1.0", "name": "fpmnet", "type": "portmap", "backend": "nftables"});
    t.ferry("STATUS", "", &status).expect("STATUS");
    status["backend"] = json!("ipchains");
    assert_eq!(
        code_of(&t.ferry("STATUS", "", &status).expect_err("bad backend")),
        7
    );
    // no mappings: prevResult passes through, nothing installed
    let c = conf("iptables", json!([]), &[&format!("{C4}/24")], json!({}));
    assert_eq!(t.ferry("ADD", "c1", &c).unwrap(), echoed(&c));
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

#[test]
fn del_removes_rules_of_the_reference_nftables_backend() {
    let t = Topo::new("rn");
    // What the reference's nftables portmap leaves for two containers.
    let script = format!(
        "add table ip cni_hostport\n\
         add chain ip cni_hostport hostports\n\
         add chain ip cni_hostport hostip_hostports\n\
         add chain ip cni_hostport masquerading {{ type nat hook postrouting priority srcnat ; }}\n\
         add rule ip cni_hostport hostports ip protocol tcp th dport 22050 dnat ip addr . port to {C4} . 80 comment \"refnft\"\n\
         add rule ip cni_hostport hostports ip protocol tcp th dport 22051 dnat ip addr . port to {C4} . 81 comment \"other\"\n\
         add rule ip cni_hostport masquerading ip saddr {C4} ip daddr {C4} masquerade comment \"refnft\"\n"
    );
    let path = std::env::temp_dir().join(format!("fpm-refnft-{}.nft", std::process::id()));
    std::fs::write(&path, script).unwrap();
    t.in_host(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let c = conf("nftables", json!([]), &[&format!("{C4}/24")], json!({}));
    t.ferry("DEL", "refnft", &c).expect("DEL");
    let left = t.in_host(&["nft", "list", "table", "ip", "cni_hostport"]);
    assert!(!left.contains("\"refnft\""), "{left}");
    assert!(
        left.contains("\"other\""),
        "other containers' rules stay: {left}"
    );
}

#[test]
fn host_ip_limits_the_mapping_to_its_address_and_family() {
    let mut t = Topo::new("hi");
    let ctr = t.ctr.clone();
    let out = t.out.clone();
    t.serve(&ctr, "TCP4-LISTEN:80,fork,reuseaddr", "via-host-ip");
    // an IPv6 hostIP with an IPv4-only container installs nothing
    let v6only = conf(
        "iptables",
        json!([{"hostPort": 22060, "containerPort": 80, "protocol": "tcp", "hostIP": "fd00:213:32:1::1"}]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    t.ferry("ADD", "c6", &v6only).expect("ADD");
    assert_eq!(t.leftovers(), Vec::<String>::new());
    for backend in ["iptables", "nftables"] {
        let c = conf(
            backend,
            json!([{"hostPort": 22061, "containerPort": 80, "protocol": "tcp", "hostIP": HOST_O4}]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        t.ferry("ADD", "c1", &c).expect("ADD");
        t.expect_reply(&out, &format!("TCP:{HOST_O4}:22061"), "via-host-ip");
        // another address of the same host is not forwarded (nothing listens there)
        let other = sh(&[
            "ip",
            "netns",
            "exec",
            &out,
            "socat",
            "-T1",
            "-",
            &format!("TCP:{HOST_C4}:22061,connect-timeout=1"),
        ]);
        assert!(!String::from_utf8_lossy(&other.stdout).contains("via-host-ip"));
        t.ferry("CHECK", "c1", &c).expect("CHECK");
        t.ferry("DEL", "c1", &c).expect("DEL");
        assert_eq!(t.leftovers(), Vec::<String>::new());
    }
}

#[test]
fn add_repairs_shared_layout_removed_by_hand() {
    for backend in ["iptables", "nftables"] {
        let t = Topo::new(&format!("r{}", &backend[..1]));
        let a = conf(
            backend,
            json!([tcp(22070, 80)]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        let b = conf(
            backend,
            json!([tcp(22071, 80)]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        t.ferry("ADD", "ca", &a).expect("ADD a");
        t.ferry("DEL", "ca", &a).expect("DEL a");
        // someone wipes the shared layout right after (within the re-check interval)
        if backend == "iptables" {
            t.in_host(&["iptables", "-t", "nat", "-F"]);
            t.in_host(&["iptables", "-t", "nat", "-X"]);
        } else {
            t.in_host(&["nft", "delete", "table", "ip", "cni_hostport"]);
        }
        t.ferry("ADD", "cb", &b).expect("ADD b");
        t.ferry("CHECK", "cb", &b).expect("CHECK after repair");
        t.ferry("DEL", "cb", &b).expect("DEL b");
        assert_eq!(t.leftovers(), Vec::<String>::new());
    }
}

#[test]
fn claims_whose_rules_were_flushed_by_hand_are_stale() {
    for backend in ["iptables", "nftables"] {
        let t = Topo::new(&format!("s{}", &backend[..1]));
        let c = conf(
            backend,
            json!([tcp(22075, 80)]),
            &[&format!("{C4}/24")],
            json!({}),
        );
        t.ferry("ADD", "sa", &c).expect("ADD a");
        let err = t.ferry("ADD", "sb", &c).expect_err("port of sa");
        assert_eq!(code_of(&err), 101, "{err}");
        if backend == "iptables" {
            t.in_host(&["iptables", "-t", "nat", "-F"]);
            t.in_host(&["iptables", "-t", "nat", "-X"]);
        } else {
            t.in_host(&["nft", "delete", "table", "ip", "cni_hostport"]);
        }
        t.ferry("ADD", "sb", &c)
            .expect("the claim of sa is stale once its rules are gone");
        t.ferry("CHECK", "sb", &c).expect("CHECK sb");
        t.ferry("DEL", "sb", &c).expect("DEL sb");
        t.ferry("DEL", "sa", &c).expect("DEL sa (nothing left)");
        assert_eq!(t.leftovers(), Vec::<String>::new());
    }
}

#[test]
fn nftables_del_finds_elements_by_comment_when_the_index_is_lost() {
    let t = Topo::new("il");
    let c = conf(
        "nftables",
        json!([tcp(22076, 80), {"hostPort": 22077, "containerPort": 53, "protocol": "udp", "hostIP": HOST_O4}]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    t.ferry("ADD", "lost", &c).expect("ADD");
    t.ferry(
        "ADD",
        "kept",
        &conf(
            "nftables",
            json!([tcp(22078, 80)]),
            &[&format!("{C4}/24")],
            json!({}),
        ),
    )
    .expect("ADD kept");
    std::fs::remove_dir_all(format!("/run/ferry/portmap/ns-{}", t.cookie)).unwrap();
    let mut bare = c.clone();
    bare["runtimeConfig"] = json!({});
    t.ferry("DEL", "lost", &bare)
        .expect("DEL without index or mappings");
    let left = t.leftovers().join("\n");
    assert!(!left.contains("22076") && !left.contains("22077"), "{left}");
    assert!(left.contains("22078"), "the other attachment stays: {left}");
    t.ferry("DEL", "lost", &bare).expect("second DEL");
    t.ferry("DEL", "kept", &bare).expect("DEL kept");
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

#[test]
fn nftables_attachments_with_different_prefix_lengths_keep_their_hairpin_rules() {
    let t = Topo::new("pl");
    let a = conf(
        "nftables",
        json!([tcp(22079, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    let b = conf(
        "nftables",
        json!([tcp(22080, 80)]),
        &[&format!("{C4}/16")],
        json!({}),
    );
    let all = conf(
        "nftables",
        json!([tcp(22081, 80)]),
        &[&format!("{C4}/24")],
        json!({"masqAll": true}),
    );
    t.ferry("ADD", "p24", &a).expect("ADD /24");
    t.ferry("ADD", "p16", &b)
        .expect("ADD /16 (declares prefix 16)");
    t.ferry("ADD", "pall", &all)
        .expect("ADD masqAll (declares prefix 0)");
    for (id, c) in [("p24", &a), ("p16", &b), ("pall", &all)] {
        t.ferry("CHECK", id, c)
            .expect("CHECK after later prefixes were declared");
    }
    let chain = t.in_host(&[
        "nft",
        "list",
        "chain",
        "ip",
        "cni_hostport",
        "ferry_dnat_prerouting",
    ]);
    for set in [
        "@ferry_hairpin_0 ",
        "@ferry_hairpin_16 ",
        "@ferry_hairpin_24 ",
        "@ferry_hairpin_32 ",
    ] {
        assert!(chain.contains(set), "{set} missing: {chain}");
    }
    for (id, c) in [("p24", &a), ("p16", &b), ("pall", &all)] {
        t.ferry("DEL", id, c).expect("DEL");
    }
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

#[test]
fn parallel_adds_and_dels_of_different_containers() {
    for backend in ["iptables", "nftables"] {
        let t = Topo::new(&format!("p{}", &backend[..1]));
        let confs: Vec<Value> = (0..12)
            .map(|i| conf(backend, json!([tcp(22080 + i, 80), {"hostPort": 22100 + i, "containerPort": 53, "protocol": "udp"}]), &[&format!("{C4}/24")], json!({})))
            .collect();
        std::thread::scope(|s| {
            for (i, c) in confs.iter().enumerate() {
                let t = &t;
                s.spawn(move || t.ferry("ADD", &format!("par{i}"), c).expect("parallel ADD"));
            }
        });
        for (i, c) in confs.iter().enumerate() {
            t.ferry("CHECK", &format!("par{i}"), c)
                .expect("CHECK after parallel ADDs");
        }
        std::thread::scope(|s| {
            for (i, c) in confs.iter().enumerate() {
                let t = &t;
                s.spawn(move || t.ferry("DEL", &format!("par{i}"), c).expect("parallel DEL"));
            }
        });
        assert_eq!(t.leftovers(), Vec::<String>::new());
    }
}

/// The per-attachment chain name (`CNI-DN-` + sha512(network + ID), 28 chars).
fn dn_chain(network: &str, id: &str) -> String {
    use sha2::{Digest, Sha512};
    let hex: String = Sha512::digest(format!("{network}{id}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("CNI-DN-{hex}")[..28].to_string()
}

/// What the previous ferry release's nftables backend installed for one IPv4 attachment
/// (tcp `port` → `C4`:80, snat): a chain reached through the verdict map `ferry_hostports`.
fn previous_layout_attachment(chain: &str, port: u16) -> String {
    format!(
        "add chain ip cni_hostport {chain}\n\
         add rule ip cni_hostport {chain} meta l4proto tcp th dport {port} ip saddr 10.213.32.0/24 meta mark set meta mark | 0x00002000\n\
         add rule ip cni_hostport {chain} meta l4proto tcp th dport {port} ip saddr 127.0.0.1 meta mark set meta mark | 0x00002000\n\
         add rule ip cni_hostport {chain} meta l4proto tcp th dport {port} dnat ip to {C4}:80 comment \"ferry tcp {port}\"\n\
         add element ip cni_hostport ferry_hostports {{ tcp . {port} : jump {chain} }}\n"
    )
}

#[test]
fn nftables_del_and_gc_remove_attachments_of_the_previous_layout() {
    let mut t = Topo::new("up");
    let ctr = t.ctr.clone();
    t.serve(
        &ctr,
        "TCP4-LISTEN:80,fork,reuseaddr",
        "hello-from-container",
    );
    // The previous release's shared layout and three of its attachments.
    let mut script = String::from(
        "add table ip cni_hostport { comment \"CNI portmap plugin\" ; }\n\
         add map ip cni_hostport ferry_hostports { type inet_proto . inet_service : verdict ; }\n\
         add map ip cni_hostport ferry_hostip_hostports { type ipv4_addr . inet_proto . inet_service : verdict ; }\n",
    );
    for (chain, hook, prio) in [
        ("ferry_prerouting", "prerouting", "dstnat"),
        ("ferry_output", "output", "-100"),
    ] {
        script.push_str(&format!(
            "add chain ip cni_hostport {chain} {{ type nat hook {hook} priority {prio} ; }}\n\
             add rule ip cni_hostport {chain} fib daddr type local ip daddr . meta l4proto . th dport vmap @ferry_hostip_hostports\n\
             add rule ip cni_hostport {chain} fib daddr type local meta l4proto . th dport vmap @ferry_hostports\n"
        ));
    }
    script.push_str(
        "add chain ip cni_hostport ferry_masquerading { type nat hook postrouting priority srcnat ; }\n\
         add rule ip cni_hostport ferry_masquerading meta mark & 0x00002000 == 0x00002000 masquerade\n",
    );
    let olds = [("old1", 22061u16), ("old2", 22062), ("old3", 22063)];
    for (id, port) in olds {
        script.push_str(&previous_layout_attachment(&dn_chain("fpmnet", id), port));
    }
    let file = std::env::temp_dir().join(format!("fpm-upgrade-{}.nft", std::process::id()));
    std::fs::write(&file, &script).unwrap();
    t.in_host(&["nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    // The previous release's index records (the record format did not change) for old1 and
    // old3; old2 has none (e.g. the index was lost).
    let index = format!("/run/ferry/portmap/ns-{}", t.cookie);
    for (id, port) in [olds[0], olds[2]] {
        let chain = dn_chain("fpmnet", id);
        let owner = json!({"chain": chain, "network": "fpmnet", "containerID": id,
            "backend": "nftables", "families": [4], "foreign": false,
            "claims": [{"protocol": "tcp", "port": port, "family": 4, "addr": null}]});
        std::fs::create_dir_all(format!("{index}/owners")).unwrap();
        std::fs::write(format!("{index}/owners/{chain}"), owner.to_string()).unwrap();
        let claims = format!("{index}/claims/tcp-{port}");
        std::fs::create_dir_all(&claims).unwrap();
        std::fs::write(format!("{claims}/4-any.{chain}"), &chain).unwrap();
    }
    // A new attachment next to them: the old ones keep working (their chains are untouched).
    let new = conf(
        "nftables",
        json!([tcp(22064, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    t.ferry("ADD", "new1", &new)
        .expect("ADD beside the previous layout");
    let out = t.out.clone();
    t.expect_reply(
        &out,
        &format!("TCP:{HOST_O4}:22061"),
        "hello-from-container",
    );
    t.expect_reply(
        &out,
        &format!("TCP:{HOST_O4}:22064"),
        "hello-from-container",
    );
    // A conflict with a previous-layout attachment is still caught.
    let clash = conf(
        "nftables",
        json!([tcp(22061, 80)]),
        &[&format!("{C4}/24")],
        json!({}),
    );
    let err = t.ferry("ADD", "clash", &clash).expect_err("port of old1");
    assert_eq!(code_of(&err), 101, "{err}");
    // DEL with a record, DEL without one (and without mappings), GC with a record.
    let mut bare = conf("nftables", json!([]), &[&format!("{C4}/24")], json!({}));
    bare["runtimeConfig"] = json!({});
    t.ferry("DEL", "old1", &bare).expect("DEL old1 (recorded)");
    t.ferry("DEL", "old2", &bare).expect("DEL old2 (no record)");
    let mut gc = conf("nftables", json!([]), &[], json!({}));
    gc["cniVersion"] = json!("1.1.0");
    gc.as_object_mut().unwrap().remove("prevResult");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "new1", "ifname": "eth0"}]);
    t.ferry("GC", "", &gc).expect("GC");
    let table = t.in_host(&["nft", "list", "table", "ip", "cni_hostport"]);
    for (id, port) in olds {
        assert!(
            !table.contains(&dn_chain("fpmnet", id)),
            "{id} left: {table}"
        );
        assert!(!table.contains(&port.to_string()), "{id} left: {table}");
    }
    // With the last old attachment gone, the previous layout's chains and maps went too.
    for gone in [
        "ferry_prerouting",
        "ferry_output",
        "ferry_hostports",
        "ferry_hostip_hostports",
    ] {
        assert!(
            !table.contains(&format!(" {gone} ")),
            "{gone} left: {table}"
        );
    }
    t.expect_reply(
        &out,
        &format!("TCP:{HOST_O4}:22064"),
        "hello-from-container",
    );
    t.ferry("DEL", "new1", &new).expect("DEL new1");
    assert_eq!(t.leftovers(), Vec::<String>::new());
}
