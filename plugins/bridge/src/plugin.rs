//! The verbs. ADD is all-or-nothing: every step registers its undo before the next step
//! runs, and the undo list runs (newest first) unless the whole ADD succeeded. DEL is
//! best-effort and idempotent: each part runs even when an earlier one found nothing.

use std::net::IpAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cni::error::{code, Error, Result};
use cni::invoke;
use cni::result::{CniResult, Interface};
use cni::skel::{Plugin, Request};
use firewall::{isolation, masq, BackendKind};
use ipnet::IpNet;
use netops::{sysctl, Link, LinkKind, Netlink, Netns, VethSpec};

use crate::config::{calc_gateways, BridgeConf};
use crate::deferred_delete;
use crate::ipam::Ipam;
use crate::names::{masq_names, random_veth_name};
use crate::spoofcheck;

/// The plugin (stateless; everything comes from the request).
pub struct BridgePlugin;

fn nl_err(e: netops::Error) -> Error {
    Error::new(e.code, e.msg)
}

fn fw_err(e: firewall::Error) -> Error {
    Error::new(e.code, e.msg).with_details(e.details)
}

/// What the host side of ADD created.
struct Links {
    br: Link,
    host_veth: String,
    hv: Option<Link>,
    cv: Link,
}

/// Undo steps of a half-done ADD, run newest first on drop unless disarmed.
struct Undo<'a> {
    steps: Vec<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Undo<'a> {
    fn new() -> Self {
        Undo { steps: Vec::new() }
    }
    fn push(&mut self, f: impl FnOnce() + 'a) {
        self.steps.push(Box::new(f));
    }
    fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some(step) = self.steps.pop() {
            step();
        }
    }
}

fn load(req: &Request) -> Result<BridgeConf> {
    let args = req.env.cni_args(&["MAC"])?;
    BridgeConf::parse(&req.conf.raw, args.get("MAC").map(String::as_str))
}

/// DEL must work with configs an ADD would refuse (a runtime may DEL after the config
/// changed): CNI_ARGS and value checks are not allowed to block it.
fn load_lenient(req: &Request) -> Result<BridgeConf> {
    match load(req) {
        Ok(c) => Ok(c),
        Err(_) => {
            let mut raw = req.conf.raw.clone();
            for k in [
                "vlan",
                "vlanTrunk",
                "mtu",
                "hairpinMode",
                "promiscMode",
                "args",
                "runtimeConfig",
            ] {
                raw.remove(k);
            }
            if raw
                .get("ipMasqBackend")
                .and_then(|v| v.as_str())
                .and_then(BackendKind::parse)
                .is_none()
            {
                raw.remove("ipMasqBackend");
            }
            BridgeConf::parse(&raw, None)
        }
    }
}

fn netns_path(req: &Request) -> Result<&std::path::Path> {
    req.env.netns.as_deref().ok_or_else(|| {
        Error::new(
            code::INVALID_ENV,
            "required env variables [CNI_NETNS] missing",
        )
    })
}

/// Creates the veth pair with a fresh host name, retrying the (unlikely) name collision.
fn create_veth(
    host: &Netlink,
    ns: &Netns,
    ifname: &str,
    conf: &BridgeConf,
    master: u32,
) -> Result<String> {
    let mut last = None;
    for _ in 0..4 {
        let name = random_veth_name();
        let spec = VethSpec {
            host_name: &name,
            peer_name: ifname,
            mtu: conf.mtu,
            peer_mac: conf.mac,
            master: Some(master),
        };
        match host.create_veth(&spec, ns) {
            Ok(()) => return Ok(name),
            Err(e) if e.is_exists() && host.link_by_name(&name).ok().flatten().is_some() => {
                last = Some(e);
            }
            Err(e) => return Err(nl_err(e)),
        }
    }
    Err(last
        .map(nl_err)
        .unwrap_or_else(|| Error::internal("could not pick a free veth name")))
}

/// Puts `gw` on the bridge (reference `ensureAddr`): fine if present; a different IPv4
/// address, or an overlapping IPv6 one, is an error unless forceAddress replaces it.
fn ensure_bridge_addr(host: &Netlink, br: &Link, gw: IpNet, force: bool) -> Result<()> {
    let v6 = gw.addr().is_ipv6();
    let addrs = host.addresses(br.index, Some(v6)).map_err(nl_err)?;
    for a in &addrs {
        if a.net == gw {
            return Ok(());
        }
        if v6 && matches!(a.net.addr(), IpAddr::V6(x) if x.segments()[0] & 0xffc0 == 0xfe80) {
            continue; // link-local, always there
        }
        if !v6 || a.net.contains(&gw.addr()) || gw.contains(&a.net.addr()) {
            if force {
                host.del_address(br.index, a.net).map_err(nl_err)?;
            } else {
                return Err(Error::new(
                    code::INVALID_CONFIG,
                    format!(
                        "{:?} already has an IP address different from {gw}",
                        br.name
                    ),
                )
                .with_details("set \"forceAddress\": true to replace it, or use another bridge"));
            }
        }
    }
    match host.add_address(br.index, gw, true) {
        Ok(()) => Ok(()),
        Err(e) if e.is_exists() => Ok(()),
        Err(e) => Err(nl_err(e).context(format!("could not add IP address to {:?}", br.name))),
    }
}

fn masq_backend(conf: &BridgeConf) -> BackendKind {
    conf.ip_masq_backend.unwrap_or_else(BackendKind::detect)
}

impl BridgePlugin {
    fn add_inner(&self, req: &Request, conf: &BridgeConf) -> Result<CniResult> {
        let ifname = req.env.ifname.as_str();
        let netns_path = netns_path(req)?;
        // Open the container's namespace before touching anything: a missing netns must
        // leave no bridge, veth or lease behind.
        let ns = Netns::open(netns_path).map_err(nl_err)?;
        let cont = Netlink::in_netns(&ns).map_err(nl_err)?;
        if cont.link_by_name(ifname).map_err(nl_err)?.is_some() {
            return Err(Error::new(
                code::LINK_EXISTS,
                format!(
                    "interface {ifname:?} already exists in netns {}; choose another CNI_IFNAME or DEL the old attachment",
                    netns_path.display()
                ),
            ));
        }
        let host = Netlink::current().map_err(nl_err)?;
        let mut undo = Undo::new();
        // IPAM does not depend on the links: an exec'd plugin runs on its own thread while
        // they are made (ADD costs max(IPAM, netlink), not their sum), ferry's host-local
        // right here (see start_ipam_add). An exec'd plugin's result comes back over a
        // channel the moment it is ready, rather than when its thread has been scheduled
        // again to exit (a join); nothing after the send matters, so the thread is not
        // waited for.
        let ipam_rx = conf
            .is_layer3()
            .then(|| start_ipam_add(req, &conf.ipam_type));
        let links = self.add_links(&host, &ns, &cont, ifname, conf, &mut undo);
        // Wait for IPAM before anything else, also before giving up on a failed link
        // step: the rollback's IPAM DEL must come after the IPAM ADD.
        let ipam = ipam_rx.map(|rx| {
            rx.recv().unwrap_or_else(|_| {
                let plugin = Ipam::select(&conf.ipam_type, req);
                (
                    plugin,
                    Err(Error::internal("IPAM thread ended without a result")),
                )
            })
        });
        // A failed IPAM ADD may still have reserved something before failing: DEL it too
        // (the spec asks a main plugin to clean up its delegate either way).
        let ipam = ipam.map(|(plugin, result)| {
            undo.push(move || {
                let _ = plugin.del(req);
            });
            result
        });
        let Links {
            br,
            host_veth,
            hv,
            cv,
        } = links?;
        let ipam = ipam.transpose()?;
        if conf.mac_spoof_chk {
            let rid = spoofcheck::ref_id(&req.env.container_id, ifname);
            undo.push(move || {
                let _ = spoofcheck::teardown(&rid);
            });
            spoofcheck::setup(
                &spoofcheck::ref_id(&req.env.container_id, ifname),
                &host_veth,
                &cv.mac_string(),
            )?;
        }

        let mut result = CniResult {
            interfaces: vec![
                Interface {
                    name: br.name.clone(),
                    mac: Some(br.mac_string()),
                    ..Default::default()
                },
                Interface {
                    name: host_veth.clone(),
                    mac: hv.as_ref().map(Link::mac_string),
                    ..Default::default()
                },
                Interface {
                    name: ifname.to_string(),
                    mac: Some(cv.mac_string()),
                    sandbox: Some(netns_path.display().to_string()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };

        if let Some(ipam) = ipam {
            result.ips = ipam.ips;
            result.routes = ipam.routes;
            result.dns = ipam.dns;
            if result.ips.is_empty() {
                return Err(Error::new(
                    code::INVALID_CONFIG,
                    "IPAM plugin returned missing IP config",
                )
                .with_details(format!("IPAM type {:?}", conf.ipam_type)));
            }
            let gws = calc_gateways(&mut result, conf);
            // (hashed names: computed only when used)
            let names = conf
                .ip_masq
                .then(|| masq_names(&req.conf.name, ifname, &req.env.container_id));
            if let Some(names) = names.clone() {
                undo.push(move || {
                    let _ = masq::teardown(&names);
                });
            }
            // The firewall tools are separate processes: install ipMasq while the
            // container and the bridge are configured over netlink.
            let addrs: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
            let (netlink_done, masq_done) = std::thread::scope(|s| {
                let masq = names.as_ref().map(|names| {
                    s.spawn(|| masq::setup(masq_backend(conf), names, &addrs).map_err(fw_err))
                });
                let netlink_done = self
                    .configure_container(&ns, &cont, &cv, conf, &result)
                    .and_then(|()| self.configure_gateway(&host, &br, conf, &gws));
                let masq_done = masq.map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(Error::internal("ipMasq thread panicked")))
                });
                (netlink_done, masq_done)
            });
            netlink_done?;
            masq_done.transpose()?;
        } else if !conf.disable_container_interface && !cv.up {
            cont.set_up(cv.index)
                .map_err(|e| nl_err(e).context(format!("failed to set {ifname:?} up")))?;
        }
        if conf.isolate {
            isolation::ensure(&conf.bridge, &req.conf.name).map_err(fw_err)?;
        }

        // The host end reports operational UP once the container end is up; the MACs can
        // change while the bridge adopts its first port, so read them last.
        let hv = if conf.disable_container_interface {
            host.link_by_name(&host_veth).map_err(nl_err)?
        } else {
            wait_oper_up(&host, &host_veth)?
        };
        if let Some(hv) = hv {
            result.interfaces[1].mac = Some(hv.mac_string());
        }
        if let Some(b) = host.link_by_name(&conf.bridge).map_err(nl_err)? {
            result.interfaces[0].mac = Some(b.mac_string());
        }
        if let Some(d) = &conf.dns {
            result.dns = d.clone();
        }
        undo.disarm();
        Ok(result)
    }

    /// The bridge as the gateway: its addresses, and forwarding for their families.
    fn configure_gateway(
        &self,
        host: &Netlink,
        br: &Link,
        conf: &BridgeConf,
        gws: &crate::config::Gateways,
    ) -> Result<()> {
        if !conf.is_gateway {
            return Ok(());
        }
        for gw in gws.v4.iter().chain(gws.v6.iter()) {
            ensure_bridge_addr(host, br, *gw, conf.force_address)
                .map_err(|e| e.context("failed to set bridge addr"))?;
        }
        if !gws.v4.is_empty() {
            sysctl::ensure("net/ipv4/ip_forward", "1")
                .map_err(|e| nl_err(e).context("failed to enable forwarding"))?;
        }
        if !gws.v6.is_empty() {
            sysctl::ensure("net/ipv6/conf/all/forwarding", "1")
                .map_err(|e| nl_err(e).context("failed to enable forwarding"))?;
        }
        Ok(())
    }

    /// Host side of ADD: bridge, veth pair (container end created in the netns), port
    /// options. Registers the veth's removal in `undo` as soon as it exists.
    fn add_links<'a>(
        &self,
        host: &'a Netlink,
        ns: &Netns,
        cont: &Netlink,
        ifname: &str,
        conf: &BridgeConf,
        undo: &mut Undo<'a>,
    ) -> Result<Links> {
        let br = host
            .ensure_bridge(
                &conf.bridge,
                conf.mtu,
                conf.promisc_mode,
                conf.vlan_filtering(),
            )
            .map_err(|e| {
                let vlan_unsupported = e.errno == Some(libc::EOPNOTSUPP) && conf.vlan_filtering();
                let err = nl_err(e).context(format!("failed to create bridge {:?}", conf.bridge));
                if vlan_unsupported {
                    err.with_details(
                        "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING), which \"vlan\"/\"vlanTrunk\" need",
                    )
                } else {
                    err
                }
            })?;
        // The reference disables router advertisements on its bridges: it owns their routes.
        let _ = sysctl::ensure(&format!("net/ipv6/conf/{}/accept_ra", conf.bridge), "0");

        let host_veth = create_veth(host, ns, ifname, conf, br.index)?;
        {
            let name = host_veth.clone();
            undo.push(move || {
                let _ = host.del_link_by_name(&name);
            });
        }
        // The host end is looked up only when a port option needs its index: its MAC goes
        // into the result at the end of ADD, read once it is final.
        let port_options = conf.hairpin_mode || conf.port_isolation || conf.vlan_filtering();
        let hv = if port_options {
            let hv = host
                .link_by_name(&host_veth)
                .map_err(nl_err)?
                .ok_or_else(|| {
                    Error::internal(format!("veth {host_veth} vanished after creation"))
                })?;
            self.set_port_options(host, &hv, &host_veth, conf)?;
            Some(hv)
        } else {
            None
        };
        let cv = cont.link_by_name(ifname).map_err(nl_err)?.ok_or_else(|| {
            Error::internal(format!("{ifname} missing in the netns after creation"))
        })?;
        Ok(Links {
            br,
            host_veth,
            hv,
            cv,
        })
    }

    /// Bridge-port options of the host veth: hairpin, isolation, VLANs.
    fn set_port_options(
        &self,
        host: &Netlink,
        hv: &Link,
        host_veth: &str,
        conf: &BridgeConf,
    ) -> Result<()> {
        if conf.hairpin_mode || conf.port_isolation {
            host.set_bridge_port(
                hv.index,
                conf.hairpin_mode.then_some(true),
                conf.port_isolation.then_some(true),
            )
            .map_err(|e| {
                nl_err(e).context(format!("failed to set bridge port options on {host_veth}"))
            })?;
        }
        if conf.vlan_filtering() {
            if !conf.preserve_default_vlan {
                let _ = host.bridge_vlan_del(hv.index, 1);
            }
            if conf.vlan != 0 {
                host.bridge_vlan_add(hv.index, conf.vlan, true)
                    .map_err(nl_err)?;
            }
            for v in &conf.vlans {
                host.bridge_vlan_add(hv.index, *v, false).map_err(nl_err)?;
            }
        }
        Ok(())
    }

    /// Container side of a layer-3 ADD: sysctls, link up, addresses, routes.
    fn configure_container(
        &self,
        ns: &Netns,
        cont: &Netlink,
        cv: &Link,
        conf: &BridgeConf,
        result: &CniResult,
    ) -> Result<()> {
        let ifname = cv.name.clone();
        let dad = conf.enable_dad;
        ns.run_here(move || {
            // Best effort, as the reference: the keys may be absent (IPv6 disabled).
            if dad {
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
            } else {
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
            }
            let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
        })
        .map_err(nl_err)?;
        // normally already up: created that way
        if !conf.disable_container_interface && !cv.up {
            cont.set_up(cv.index)
                .map_err(|e| nl_err(e).context(format!("failed to set {:?} up", cv.name)))?;
        }
        for ip in &result.ips {
            cont.add_address(cv.index, ip.address, !conf.enable_dad)
                .map_err(|e| {
                    nl_err(e).context(format!("failed to add IP addr to {:?}", cv.name))
                })?;
        }
        if conf.enable_dad
            && result.ips.iter().any(|i| i.address.addr().is_ipv6())
            && !conf.disable_container_interface
        {
            cont.wait_addresses_settled(cv.index, Duration::from_secs(10))
                .map_err(nl_err)?;
        }
        if conf.disable_container_interface {
            return Ok(());
        }
        for r in &result.routes {
            let v6 = r.dst.addr().is_ipv6();
            let gw = r.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .filter(|i| i.address.addr().is_ipv6() == v6)
                    .find_map(|i| i.gateway)
            });
            let route = netops::Route {
                dst: r.dst,
                gw,
                oif: Some(cv.index),
            };
            match cont.add_route(&route) {
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(nl_err(e).context(format!("failed to add route {}", r.dst))),
            }
        }
        Ok(())
    }
}

/// Starts IPAM ADD; the plugin used and its result arrive on the returned channel.
/// ferry's own host-local runs right here: its few hundred microseconds of file work cost
/// less than starting a thread, which on a small VM waits for another CPU to wake up. An
/// exec'd plugin (a whole process start) runs on a thread while the links are made.
fn start_ipam_add(req: &Request, ipam_type: &str) -> mpsc::Receiver<(Ipam, Result<CniResult>)> {
    let (tx, rx) = mpsc::sync_channel(1);
    let plugin = Ipam::select(ipam_type, req);
    if plugin == Ipam::InProcess {
        let result = plugin.add(req);
        let _ = tx.send((plugin, result));
        return rx;
    }
    let run = {
        let (req, plugin, tx) = (req.clone(), plugin.clone(), tx.clone());
        move || {
            let result = plugin.add(&req);
            let _ = tx.send((plugin, result));
        }
    };
    if std::thread::Builder::new()
        .name("ipam".into())
        .spawn(run)
        .is_err()
    {
        let result = plugin.add(req);
        let _ = tx.send((plugin, result));
    }
    rx
}

/// Polls the host veth until operationally up (normally at once), as the reference does,
/// up to ~2.5 s. The kernel sets the operstate from a work item shortly after the
/// container end comes up, so the polls are short: a long sleep would be all of ADD.
fn wait_oper_up(host: &Netlink, name: &str) -> Result<Option<Link>> {
    let deadline = Instant::now() + Duration::from_millis(2500);
    loop {
        let link = host.link_by_name(name).map_err(nl_err)?;
        match &link {
            Some(l) if l.oper_up => return Ok(link),
            None => return Err(Error::internal(format!("host veth {name} disappeared"))),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::internal(format!(
                "bridge port {name} did not come up (operstate not UP)"
            )));
        }
        std::thread::sleep(Duration::from_micros(250));
    }
}

fn join_errors(errs: Vec<Error>) -> Result<()> {
    let mut it = errs.into_iter();
    match it.next() {
        None => Ok(()),
        Some(first) => {
            let rest: Vec<String> = it.map(|e| e.msg).collect();
            if rest.is_empty() {
                Err(first)
            } else {
                Err(first.with_details(rest.join("; ")))
            }
        }
    }
}

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = load(req)?;
        self.add_inner(req, &conf)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let conf = load_lenient(req)?;
        let ifname = req.env.ifname.as_str();
        // IPAM always, whatever happens to the links.
        let ipam = conf.is_layer3().then(|| Ipam::select(&conf.ipam_type, req));
        // The container interface (its peer goes with it); the kernel's slow part of the
        // delete is left to a detached process (see deferred_delete). A netns that no
        // longer exists means the kernel already removed both ends.
        let mut errs = Vec::new();
        let netns = match req.env.netns.as_deref().map(|p| (p, Netns::open(p))) {
            Some((path, Ok(ns))) => Some((path, ns)),
            Some((_, Err(e))) if matches!(e.errno, Some(libc::ENOENT) | Some(libc::EINVAL)) => None,
            Some((_, Err(e))) => {
                errs.push(nl_err(e));
                None
            }
            None => None,
        };
        let cont = match &netns {
            Some((path, ns)) => match Netlink::in_netns(ns) {
                Ok(c) => Some((*path, ns, c)),
                Err(e) => {
                    errs.push(
                        nl_err(e).context(format!("removing {ifname} from {}", path.display())),
                    );
                    None
                }
            },
            None => None,
        };
        // The parts are independent: exec'd helpers (an IPAM plugin, the firewall tools) run
        // on threads side by side; in-process IPAM runs here while the deleter starts up.
        let thread_errs: Vec<Error> = std::thread::scope(|s| {
            let ipam_thread = match &ipam {
                Some(plugin @ Ipam::Exec(_)) => Some(s.spawn(move || plugin.del(req))),
                _ => None,
            };
            // ipMasq by name, so it goes even when the netns (and thus the addresses) are
            // gone — the reference leaks the rules in that case.
            let masq = (conf.is_layer3() && conf.ip_masq).then(|| {
                s.spawn(|| {
                    let names = masq_names(&req.conf.name, ifname, &req.env.container_id);
                    masq::teardown(&names).map_err(fw_err)
                })
            });
            let spoof = conf.mac_spoof_chk.then(|| {
                s.spawn(|| spoofcheck::teardown(&spoofcheck::ref_id(&req.env.container_id, ifname)))
            });
            let mut errs = Vec::new();
            let removal = cont
                .as_ref()
                .map(|(path, ns, c)| (path, deferred_delete::begin_removal(ns, c, ifname)));
            if let Some(plugin @ Ipam::InProcess) = &ipam {
                if let Err(e) = plugin.del(req) {
                    errs.push(e);
                }
            }
            if let Some((path, removal)) = removal {
                if let Err(e) = removal.and_then(|r| r.map_or(Ok(()), |r| r.finish())) {
                    errs.push(
                        nl_err(e).context(format!("removing {ifname} from {}", path.display())),
                    );
                }
            }
            for t in [ipam_thread, masq, spoof].into_iter().flatten() {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errs.push(e),
                    Err(_) => errs.push(Error::internal("DEL worker thread panicked")),
                }
            }
            errs
        });
        errs.extend(thread_errs);
        join_errors(errs)
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = load(req)?;
        let ifname = req.env.ifname.as_str();
        let netns_path = netns_path(req)?;
        let ns = Netns::open(netns_path).map_err(nl_err)?;
        if conf.is_layer3() {
            Ipam::select(&conf.ipam_type, req).check(req)?;
        }
        let prev = req
            .conf
            .prev_result()?
            .ok_or_else(|| Error::invalid_config("Required prevResult missing"))?;
        let sandbox = netns_path.display().to_string();
        let br_if = prev.interfaces.iter().find(|i| i.name == conf.bridge);
        let cont_if = prev
            .interfaces
            .iter()
            .find(|i| i.name == ifname && i.sandbox.as_deref() == Some(sandbox.as_str()))
            .ok_or_else(|| {
                Error::invalid_config(format!(
                    "Sandbox in prevResult doesn't match configured netns: {sandbox}"
                ))
            })?;
        let host = Netlink::current().map_err(nl_err)?;
        let br = host
            .link_by_name(&conf.bridge)
            .map_err(nl_err)?
            .filter(|l| l.kind == LinkKind::Bridge)
            .ok_or_else(|| {
                Error::internal(format!(
                    "CNI created bridge {} in host namespace was not found",
                    conf.bridge
                ))
            })?;
        if let Some(mac) = br_if.and_then(|b| b.mac.as_deref()) {
            if mac != br.mac_string() {
                return Err(Error::internal(format!(
                    "Bridge interface {} Mac doesn't match: {mac}",
                    br.name
                )));
            }
        }
        if br.promisc != conf.promisc_mode {
            return Err(Error::internal(format!(
                "Bridge interface {} configured Promisc Mode {} doesn't match current state: {}",
                br.name, conf.promisc_mode, br.promisc
            )));
        }
        let cont = Netlink::in_netns(&ns).map_err(nl_err)?;
        let cv = cont
            .link_by_name(ifname)
            .map_err(nl_err)?
            .ok_or_else(|| Error::internal(format!("Interface name {ifname} not found")))?;
        if cv.kind != LinkKind::Veth {
            return Err(Error::internal(format!(
                "Error: Container interface {ifname} not of type veth"
            )));
        }
        if let Some(mac) = cont_if.mac.as_deref() {
            if mac != cv.mac_string() {
                return Err(Error::internal(format!(
                    "Interface {ifname} Mac {mac} doesn't match container Mac: {}",
                    cv.mac_string()
                )));
            }
        }
        // the host veth: peer of the container interface, port of the bridge
        let hv = prev
            .interfaces
            .iter()
            .filter(|i| i.name != conf.bridge && i.sandbox.is_none())
            .filter_map(|i| host.link_by_name(&i.name).ok().flatten())
            .find(|l| {
                l.kind == LinkKind::Veth
                    && Some(l.index) == cv.peer_index
                    && l.master == Some(br.index)
            })
            .ok_or_else(|| {
                Error::internal(format!(
                    "CNI veth created for bridge {} was not found",
                    conf.bridge
                ))
            })?;
        if let Some(m) = conf.mtu {
            if hv.mtu != m || cv.mtu != m {
                return Err(Error::internal(format!(
                    "MTU mismatch: configured {m}, host veth {} has {}, {ifname} has {}",
                    hv.name, hv.mtu, cv.mtu
                )));
            }
        }
        if hv.hairpin.unwrap_or(false) != conf.hairpin_mode {
            return Err(Error::internal(format!(
                "hairpin mode on {} is {}, configured {}",
                hv.name,
                hv.hairpin.unwrap_or(false),
                conf.hairpin_mode
            )));
        }
        // addresses and routes
        let addrs = cont.addresses(cv.index, None).map_err(nl_err)?;
        for ip in &prev.ips {
            if !addrs.iter().any(|a| a.net == ip.address) {
                return Err(Error::internal(format!(
                    "Failed to match addr {} on interface {ifname}",
                    ip.address
                )));
            }
        }
        let routes = cont.routes(None).map_err(nl_err)?;
        for r in &prev.routes {
            let found = routes
                .iter()
                .any(|x| x.dst == r.dst.trunc() && (r.gw.is_none() || x.gw == r.gw));
            if !found {
                return Err(Error::internal(format!(
                    "Failed to match route {} via {:?} in the container",
                    r.dst, r.gw
                )));
            }
        }
        if conf.mac_spoof_chk
            && !spoofcheck::is_present(&spoofcheck::ref_id(&req.env.container_id, ifname))?
        {
            return Err(Error::new(
                code::FIREWALL,
                format!("macspoofchk rules for {} are missing", req.env.container_id),
            ));
        }
        if conf.is_layer3() && conf.ip_masq {
            let names = masq_names(&req.conf.name, ifname, &req.env.container_id);
            let present = masq::is_present(
                masq_backend(&conf),
                &names,
                &prev.ips.iter().map(|i| i.address).collect::<Vec<_>>(),
            )
            .map_err(fw_err)?;
            if !present {
                return Err(Error::new(
                    code::FIREWALL,
                    format!(
                        "ipMasq rules for {} ({}) are missing",
                        req.env.container_id, names.chain
                    ),
                ));
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let conf = load_lenient(req)?;
        let mut errs = Vec::new();
        match req.conf.valid_attachments()? {
            Some(valid) => {
                if conf.ip_masq {
                    let pairs: Vec<(String, String)> = valid
                        .iter()
                        .map(|a| (a.container_id.clone(), a.ifname.clone()))
                        .collect();
                    let net = req.conf.name.clone();
                    let net_hash = masq_names(&net, "", "").nft_network_hash;
                    if let Err(e) =
                        masq::gc(&net, &net_hash, &pairs, |id, ifn| masq_names(&net, ifn, id))
                    {
                        errs.push(fw_err(e));
                    }
                }
            }
            None => eprintln!(
                "bridge GC: no cni.dev/valid-attachments in the request; removing no ipMasq rules"
            ),
        }
        if conf.isolate {
            // isolation rules of bridges that no longer exist protect nothing
            match (isolation::list(), Netlink::current()) {
                (Ok(bridges), Ok(host)) => {
                    for b in bridges {
                        if matches!(host.link_by_name(&b), Ok(None)) {
                            if let Err(e) = isolation::remove(&b) {
                                errs.push(fw_err(e));
                            }
                        }
                    }
                }
                (Err(e), _) => errs.push(fw_err(e)),
                (_, Err(e)) => errs.push(nl_err(e)),
            }
        }
        if conf.is_layer3() {
            if let Err(e) = invoke::delegate_gc(&conf.ipam_type, req) {
                errs.push(e);
            }
        }
        join_errors(errs)
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = load_lenient(req)?;
        if conf.is_layer3() {
            invoke::delegate_status(&conf.ipam_type, req)?;
        }
        Ok(())
    }
}
