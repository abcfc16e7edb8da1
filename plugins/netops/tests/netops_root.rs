//! netops against the real kernel, as root, entirely inside namespaces the tests create
//! (the "host" side of each test is a namespace too, so the real host is never touched).

use std::io::{Read, Write};
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;
use netops::{sysctl, LinkKind, Netlink, Netns, Route, VethSpec};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named netns that is deleted on drop, even when the test panics.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(tag: &str) -> Self {
        assert!(nix::unistd::geteuid().is_root(), "netops tests need root");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("fbr-no-{tag}-{}-{n}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        TestNs { name }
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
    fn open(&self) -> Netns {
        Netns::open(self.path()).unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn open_missing_netns_names_the_path() {
    let err = Netns::open("/var/run/netns/fbr-does-not-exist").unwrap_err();
    assert_eq!(err.code, netops::code::NETNS);
    assert!(
        err.msg.contains("/var/run/netns/fbr-does-not-exist"),
        "{}",
        err.msg
    );
}

#[test]
fn run_enters_the_namespace_and_leaves_the_caller_alone() {
    let ns = TestNs::new("run");
    let inside = ns
        .open()
        .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .unwrap();
    let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(inside, mine);
    assert_eq!(mine, host);
}

#[test]
fn run_here_enters_on_this_thread_and_comes_back_even_after_a_panic() {
    let ns = TestNs::new("here");
    let netns = ns.open();
    let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside = netns
        .run_here(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .unwrap();
    assert_ne!(inside, mine);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        mine
    );
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        netns.run_here(|| panic!("inside the namespace")).unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        mine,
        "the thread must be back home after a panic inside run_here"
    );
}

#[test]
fn bridge_and_veth_pair_straight_into_netns() {
    let host = TestNs::new("h");
    let cont = TestNs::new("c");
    let hnl = Netlink::in_netns(&host.open()).unwrap();
    let br = hnl
        .ensure_bridge("fbrbr0", Some(1400), false, false)
        .unwrap();
    assert_eq!(br.kind, LinkKind::Bridge);
    assert!(br.up);
    // create-or-get: a second call returns the same bridge
    assert_eq!(
        hnl.ensure_bridge("fbrbr0", None, false, false)
            .unwrap()
            .index,
        br.index
    );

    let cns = cont.open();
    let mac = [0x0a, 0x58, 0x0a, 0xd5, 0x10, 0x09];
    hnl.create_veth(
        &VethSpec {
            host_name: "fbrveth0",
            peer_name: "eth0",
            mtu: Some(1400),
            peer_mac: Some(mac),
            master: Some(br.index),
        },
        &cns,
    )
    .unwrap();
    hnl.set_bridge_port(
        hnl.link_by_name("fbrveth0").unwrap().unwrap().index,
        Some(true),
        None,
    )
    .unwrap();
    let hv = hnl.link_by_name("fbrveth0").unwrap().unwrap();
    assert_eq!(hv.kind, LinkKind::Veth);
    assert_eq!(hv.mtu, 1400);
    assert_eq!(hv.master, Some(br.index));
    assert_eq!(hv.hairpin, Some(true));
    assert!(hv.up);

    let cnl = Netlink::in_netns(&cns).unwrap();
    let cv = cnl.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(cv.mtu, 1400);
    assert_eq!(cv.mac, mac.to_vec());
    assert_eq!(cv.peer_index, Some(hv.index));
    // one queue each way on both ends (the kernel's per-CPU default costs an RCU wait)
    for (ns, dev) in [(&host.name, "fbrveth0"), (&cont.name, "eth0")] {
        let out = Command::new("ip")
            .args(["-n", ns, "-d", "link", "show", dev])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("numtxqueues 1 numrxqueues 1"),
            "{dev}: {text}"
        );
    }
    assert!(
        hnl.link_by_name("eth0").unwrap().is_none(),
        "peer must not appear on the host side"
    );

    // same ifname again: the kernel refuses, nothing new on the host side
    let err = hnl
        .create_veth(
            &VethSpec {
                host_name: "fbrveth1",
                peer_name: "eth0",
                ..Default::default()
            },
            &cns,
        )
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(hnl.link_by_name("fbrveth1").unwrap().is_none());

    assert!(hnl.del_link(hv.index).unwrap());
    assert!(
        !hnl.del_link(hv.index).unwrap(),
        "second delete reports already gone"
    );
    assert!(
        cnl.link_by_name("eth0").unwrap().is_none(),
        "deleting one end removes the peer"
    );
}

#[test]
fn ensure_bridge_refuses_a_non_bridge_link() {
    let host = TestNs::new("nb");
    let st = Command::new("ip")
        .args([
            "-n",
            &host.name,
            "link",
            "add",
            "fbrnotbr",
            "type",
            "veth",
            "peer",
            "name",
            "fbrnotbr1",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let hnl = Netlink::in_netns(&host.open()).unwrap();
    let err = hnl
        .ensure_bridge("fbrnotbr", None, false, false)
        .unwrap_err();
    assert_eq!(err.code, netops::code::LINK_EXISTS);
    assert!(err.msg.contains("not a bridge"), "{}", err.msg);
    assert_eq!(
        hnl.link_by_name("fbrnotbr").unwrap().unwrap().kind,
        LinkKind::Veth
    );
}

#[test]
fn addresses_routes_and_sysctl_inside_a_netns() {
    let ns = TestNs::new("ar");
    let n = ns.open();
    let nl = Netlink::in_netns(&n).unwrap();
    let lo = nl.link_by_name("lo").unwrap().unwrap();
    nl.set_up(lo.index).unwrap();
    let br = nl.ensure_bridge("fbrbr1", None, true, false).unwrap();
    assert!(br.promisc);
    nl.add_address(br.index, net("10.213.17.1/24"), false)
        .unwrap();
    assert!(nl
        .add_address(br.index, net("10.213.17.1/24"), false)
        .unwrap_err()
        .is_exists());
    nl.add_address(br.index, net("fd00:213:16:17::1/64"), true)
        .unwrap();
    let addrs = nl.addresses(br.index, None).unwrap();
    assert!(addrs.iter().any(|a| a.net == net("10.213.17.1/24")));
    assert!(addrs
        .iter()
        .any(|a| a.net == net("fd00:213:16:17::1/64") && !a.tentative));

    let gw: IpAddr = "10.213.17.254".parse().unwrap();
    nl.add_route(&Route {
        dst: net("10.213.18.0/24"),
        gw: Some(gw),
        oif: Some(br.index),
    })
    .unwrap();
    let routes = nl.routes(Some(false)).unwrap();
    assert!(routes
        .iter()
        .any(|r| r.dst == net("10.213.18.0/24") && r.gw == Some(gw)));

    assert!(nl.del_address(br.index, net("10.213.17.1/24")).unwrap());
    assert!(!nl.del_address(br.index, net("10.213.17.1/24")).unwrap());

    // sysctl through the netns thread: visible inside, host untouched
    let host_before = sysctl::read("net/ipv4/conf/all/arp_notify").unwrap();
    n.run(|| sysctl::write("net/ipv4/conf/fbrbr1/arp_notify", "1"))
        .unwrap()
        .unwrap();
    let inside = n
        .run(|| sysctl::read("net/ipv4/conf/fbrbr1/arp_notify"))
        .unwrap()
        .unwrap();
    assert_eq!(inside, "1");
    assert_eq!(
        sysctl::read("net/ipv4/conf/all/arp_notify").unwrap(),
        host_before
    );
}

#[test]
fn two_namespaces_on_one_bridge_exchange_traffic() {
    let host = TestNs::new("th");
    let a = TestNs::new("ta");
    let b = TestNs::new("tb");
    let hnl = Netlink::in_netns(&host.open()).unwrap();
    let br = hnl.ensure_bridge("fbrbr2", None, false, false).unwrap();
    hnl.add_address(br.index, net("10.213.19.1/24"), false)
        .unwrap();
    for (ns, host_if, ip) in [
        (&a, "fbrva", "10.213.19.2/24"),
        (&b, "fbrvb", "10.213.19.3/24"),
    ] {
        let n = ns.open();
        hnl.create_veth(
            &VethSpec {
                host_name: host_if,
                peer_name: "eth0",
                master: Some(br.index),
                ..Default::default()
            },
            &n,
        )
        .unwrap();
        let cnl = Netlink::in_netns(&n).unwrap();
        let eth0 = cnl.link_by_name("eth0").unwrap().unwrap();
        cnl.set_up(eth0.index).unwrap();
        cnl.add_address(eth0.index, net(ip), false).unwrap();
    }
    // TCP echo: listener created inside b, client socket created inside a; the sockets
    // stay in their namespaces, the bytes are moved from this thread.
    let listener = b
        .open()
        .run(|| std::net::TcpListener::bind("10.213.19.3:21001"))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let mut c = a
        .open()
        .run(|| std::net::TcpStream::connect("10.213.19.3:21001"))
        .unwrap()
        .unwrap();
    c.write_all(b"ferry").unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ferry");
    server.join().unwrap();
    // and the gateway answers ICMP
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.name,
            "busybox",
            "ping",
            "-c1",
            "-W2",
            "10.213.19.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping gateway: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
