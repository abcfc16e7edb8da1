//! The verbs.

use crate::config::{container_addresses, not_chained, Mapping, PortMapConfig};
use crate::rules::{dnat_chain_name, FamilyAttachment};
use crate::state::{Claim, NftKey, Owner, ProtocolName, State};
use crate::userland::{self, Daemon};
use crate::{conntrack, host, ipt, nft, sockets};
use cni::{code, CniResult, Error, Request, Result};
use firewall::{BackendKind, Family};
use ipnet::IpNet;
use std::collections::BTreeSet;

/// How long a verified shared layout is trusted before an ADD checks it again: iptables
/// lists the PREROUTING/OUTPUT/POSTROUTING jumps, nftables re-declares its base chains and
/// maps. Someone flushing them by hand is repaired by the next ADD after this; CHECK always
/// verifies everything.
const SHARED_LAYOUT_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Names what a verified shared layout depends on: backend, family and the config keys
/// that shape the shared chains. A different config re-verifies (iptables) or re-declares
/// (nftables) instead of trusting another config's layout.
fn layout_marker(conf: &PortMapConfig, family: Family) -> String {
    use sha2::{Digest, Sha256};
    let key = format!(
        "{}|{}|{}|{:x}|{:?}|{:?}",
        conf.backend.as_str(),
        fam_num(family),
        conf.snat,
        conf.mark,
        conf.external_set_mark_chain,
        conf.conditions(family)
    );
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{hex}", conf.backend.as_str(), fam_num(family))
}

/// The portmap plugin.
pub struct Portmap;

fn fam_num(f: Family) -> u8 {
    match f {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

fn family_of(n: u8) -> Family {
    if n == 6 {
        Family::V6
    } else {
        Family::V4
    }
}

fn attachments<'a>(
    conf: &'a PortMapConfig,
    container_id: &'a str,
    addrs: &[IpNet],
) -> Vec<FamilyAttachment<'a>> {
    addrs
        .iter()
        .map(|a| FamilyAttachment {
            conf,
            container_id,
            family: match a {
                IpNet::V4(_) => Family::V4,
                IpNet::V6(_) => Family::V6,
            },
            container: *a,
        })
        .filter(|a| !a.mappings().is_empty())
        .collect()
}

fn claims_of(att: &FamilyAttachment) -> Vec<Claim> {
    att.mappings()
        .iter()
        .map(|m: &Mapping| Claim {
            protocol: ProtocolName::from(m.protocol),
            port: m.host_port,
            family: fam_num(att.family),
            addr: m.destination(),
        })
        .collect()
}

/// True when the attachment's rules are still in the kernel (its index record is not stale).
fn still_installed(owner: &Owner, family: Family) -> bool {
    match owner.backend_kind().unwrap_or(BackendKind::Iptables) {
        BackendKind::Iptables => ipt::chain_exists(family, &owner.chain),
        BackendKind::Nftables => {
            nft::attachment_present(family, &owner.chain, owner.nft_keys(family).first())
        }
    }
}

fn describe(c: &Claim) -> String {
    let addr = c
        .addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| if c.family == 6 { "::" } else { "0.0.0.0" }.to_string());
    format!("host port {}/{} on {addr}", c.port, c.protocol.as_str())
}

/// Refuses claims already held by another attachment's live rules or by a host socket.
/// `daemon_holds_sockets`: the proxy daemon has already bound the TCP/UDP ports (and so
/// checked for host processes); its own sockets must not count as a conflict.
fn check_conflicts(
    state: &State,
    my_chain: &str,
    wanted: &[Claim],
    daemon_holds_sockets: bool,
) -> Result<()> {
    for w in wanted {
        for (held, owner) in state.overlapping(w) {
            if owner.chain == my_chain {
                continue;
            }
            if !still_installed(&owner, held.family()) {
                // Stale: the rules are gone (flushed by hand, or the node rebooted).
                state.forget(&owner.chain)?;
                continue;
            }
            return Err(Error::new(
                code::PORT_CONFLICT,
                format!(
                    "{} is already mapped to container {} (network {:?}): remove that mapping first, choose another host port, or set \"checkPortConflicts\": false",
                    describe(w),
                    owner.container_id,
                    owner.network
                ),
            ));
        }
        if daemon_holds_sockets && w.protocol != ProtocolName::Sctp {
            continue;
        }
        if let Some((sock, holder)) = sockets::find_holder(w) {
            let who = match holder {
                Some((pid, name)) => format!("process {name} (pid {pid})"),
                None => "a socket of an unknown process".to_string(),
            };
            return Err(Error::new(
                code::PORT_CONFLICT,
                format!(
                    "{} is already bound by {who} on {}:{}: stop it, choose another host port, or set \"checkPortConflicts\": false",
                    describe(w),
                    sock.addr,
                    sock.port
                ),
            ));
        }
    }
    Ok(())
}

/// Signs of a change to the reference's mappings: the nf_tables generation and the use
/// counts (rules + jumps) of `CNI-HOSTPORT-DNAT` in `ip nat` and `ip6 nat`, as
/// `genid use4 use6`. Three small netlink requests, whatever the ruleset size. `None` when
/// nf_tables cannot be read (iptables-legacy only: changes are then not detected).
fn foreign_signs() -> Option<(u32, String)> {
    use crate::netlink::{nft_chain_use, nft_genid, NFPROTO_IPV4, NFPROTO_IPV6};
    let genid = nft_genid().ok()?;
    let uses: Vec<String> = [NFPROTO_IPV4, NFPROTO_IPV6]
        .iter()
        .map(
            |f| match nft_chain_use(*f, "nat", crate::rules::TOP_DNAT_CHAIN) {
                Ok(Some(n)) => n.to_string(),
                _ => "-".to_string(),
            },
        )
        .collect();
    Some((genid, uses.join(" ")))
}

/// True when the index has seen every change to the reference's mappings so far, so the
/// signs after this run's own commit may be noted (otherwise they stay stale, and the next
/// ADD re-scans).
fn foreign_up_to_date(state: &State) -> bool {
    match foreign_signs() {
        Some(now) => state.imported() && !foreign_changed(state.foreign_seen().as_deref(), &now),
        None => false,
    }
}

/// Notes the current signs after this run's own commit, so only later changes by others
/// trigger a re-scan.
fn note_foreign_signs(state: &State) {
    if let Some((genid, uses)) = foreign_signs() {
        let _ = state.set_foreign_seen(&format!("{genid} {uses}"));
    }
}

/// True when another plugin may have changed the reference's mappings since portmap last
/// looked: the generation moved *and* `CNI-HOSTPORT-DNAT` gained or lost rules. (Other
/// plugins' commits, e.g. a bridge's masquerade rules, move only the generation.)
fn foreign_changed(seen: Option<&str>, now: &(u32, String)) -> bool {
    let Some(seen) = seen else {
        return true;
    };
    let Some((genid, uses)) = seen.trim().split_once(' ') else {
        return true;
    };
    genid != now.0.to_string() && uses != now.1
}

/// Imports the mappings the reference plugin installed: once per namespace, then again
/// whenever [`foreign_changed`] says its chain changed since portmap's own last commit.
fn refresh_foreign(state: &State) -> Result<()> {
    let now = foreign_signs();
    let stale = match &now {
        Some(now) => foreign_changed(state.foreign_seen().as_deref(), now),
        None => false,
    };
    if state.imported() && !stale {
        return Ok(());
    }
    import_foreign(state)?;
    state.mark_imported()?;
    if let Some((genid, uses)) = now {
        state.set_foreign_seen(&format!("{genid} {uses}"))?;
    }
    Ok(())
}

/// Records the claims of the reference's mappings not in the index yet.
fn import_foreign(state: &State) -> Result<()> {
    let known: Vec<String> = state.owners().into_iter().map(|o| o.chain).collect();
    for family in [Family::V4, Family::V6] {
        for owner in ipt::foreign_owners(family, &known).unwrap_or_default() {
            let mut merged = state.owner(&owner.chain).unwrap_or_else(|| Owner {
                claims: vec![],
                families: vec![],
                nft: vec![],
                ..owner.clone()
            });
            merged.claims.extend(owner.claims);
            merged.families.extend(owner.families);
            state.record(&merged)?;
        }
    }
    Ok(())
}

/// Removes the attachment's rules without (trusting) its record. `search_elements`: look
/// for nft elements by their comment (lists the whole table); not needed when the index is
/// known to record every ferry nft attachment ([`nft_index_complete`]).
fn teardown(
    backend: BackendKind,
    family: Family,
    network: &str,
    container_id: &str,
    conditions: &[String],
    search_elements: bool,
) -> Result<bool> {
    let chain = dnat_chain_name(network, container_id);
    match backend {
        BackendKind::Iptables => ipt::del(family, network, container_id, conditions),
        BackendKind::Nftables => nft::del(family, &chain, search_elements),
    }
}

/// True when the index records every ferry nft attachment of this namespace, so an
/// attachment without a record has no nft elements and DEL need not list the table.
/// ADD records before it installs; whatever was there before the index (rules of an index
/// that was wiped) is checked once, by listing both tables, then remembered.
fn nft_index_complete(state: &State) -> bool {
    if state.nft_complete() {
        return true;
    }
    let known: BTreeSet<String> = state.owners().into_iter().map(|o| o.chain).collect();
    for family in [Family::V4, Family::V6] {
        match nft::unrecorded_attachments(family, &known) {
            Ok(missing) if missing.is_empty() => {}
            _ => return false,
        }
    }
    state.mark_nft_complete().is_ok()
}

fn flush_udp(family: Family, ports: impl IntoIterator<Item = u16>) {
    let ports: BTreeSet<u16> = ports.into_iter().collect();
    if ports.is_empty() {
        return;
    }
    let af = match family {
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    } as u8;
    // ctnetlink first (one dump for all ports); the conntrack tool if that is unavailable.
    if let Err(e) = conntrack::delete_udp(af, &ports) {
        for port in &ports {
            if let Err(tool) = host::flush_udp_conntrack(family, *port) {
                eprintln!(
                    "portmap: failed to delete stale UDP conntrack entries for port {port}: netlink: {e}; conntrack tool: {tool}"
                );
            }
        }
    }
}

fn remove_recorded(
    owner: &Owner,
    backend: BackendKind,
    family: Family,
    conditions: &[String],
) -> Result<()> {
    let mappings: Vec<Mapping> = owner
        .claims
        .iter()
        .filter(|c| c.family() == family)
        .map(|c| Mapping {
            protocol: c.protocol.into(),
            host_port: c.port,
            container_port: 1,
            host_ip: c.addr,
        })
        .collect();
    match backend {
        BackendKind::Iptables => {
            let ports: Vec<(firewall::Protocol, u16)> =
                mappings.iter().map(|m| (m.protocol, m.host_port)).collect();
            ipt::del_known(
                family,
                &owner.network,
                &owner.container_id,
                conditions,
                &ports,
            )
        }
        BackendKind::Nftables if !owner.nft.is_empty() => {
            nft::del_elements(family, &owner.nft_keys(family))
        }
        BackendKind::Nftables => {
            // Recorded by the previous layout: a chain reached through verdict maps.
            let mut keys: Vec<(&'static str, String)> = Vec::new();
            for m in &mappings {
                let k = crate::rules::legacy_nft_key(m);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            nft::del_legacy_known(family, &owner.chain, &keys)
        }
    }
}

/// Removes an attachment everywhere it may have rules, flushes its UDP conntrack entries
/// and forgets its claims.
fn remove(state: &State, conf: &PortMapConfig, network: &str, container_id: &str) -> Result<()> {
    let up_to_date = foreign_up_to_date(state);
    let chain = dnat_chain_name(network, container_id);
    let owner = state.owner(&chain);
    let backend = owner
        .as_ref()
        .and_then(|o| o.backend_kind())
        .unwrap_or(conf.backend);
    let families: Vec<Family> = match &owner {
        Some(o) if !o.families.is_empty() => o.families.iter().map(|f| family_of(*f)).collect(),
        _ => vec![Family::V4, Family::V6],
    };
    for family in &families {
        let known = owner
            .as_ref()
            .is_some_and(|o| o.families.contains(&fam_num(*family)));
        if let Some(o) = owner.as_ref().filter(|_| known) {
            // The record says exactly what was installed: one process, no listing.
            if remove_recorded(o, backend, *family, conf.conditions(*family)).is_ok() {
                continue;
            }
        }
        let search = owner.is_some() || !nft_index_complete(state);
        match teardown(
            backend,
            *family,
            network,
            container_id,
            conf.conditions(*family),
            search,
        ) {
            Ok(_) => {}
            // A family without a working nat table cannot hold our rules (reference behaviour).
            Err(_) if !known && *family == Family::V6 => {}
            Err(e) => return Err(e),
        }
        if owner.is_none() {
            // Unknown attachment (made before ferry ran, or under a config with the other
            // backend): look in the other backend too, best effort, and for rules of the
            // reference's nftables backend (their comment is the container ID).
            let other = match backend {
                BackendKind::Iptables => BackendKind::Nftables,
                BackendKind::Nftables => BackendKind::Iptables,
            };
            let _ = teardown(
                other,
                *family,
                network,
                container_id,
                conf.conditions(*family),
                search,
            );
            let _ = nft::del_reference_rules(*family, container_id);
        }
    }
    let mut udp: Vec<(Family, u16)> = conf
        .mappings
        .iter()
        .filter(|m| m.protocol == firewall::Protocol::Udp)
        .flat_map(|m| {
            families
                .iter()
                .filter(|f| m.applies_to(**f))
                .map(|f| (*f, m.host_port))
        })
        .collect();
    if let Some(o) = &owner {
        udp.extend(
            o.claims
                .iter()
                .filter(|c| c.protocol == ProtocolName::Udp)
                .map(|c| (c.family(), c.port)),
        );
    }
    for family in [Family::V4, Family::V6] {
        flush_udp(
            family,
            udp.iter().filter(|(f, _)| *f == family).map(|(_, p)| *p),
        );
    }
    if up_to_date {
        note_foreign_signs(state);
    }
    state.forget(&chain)
}

/// Installs the kernel side of an ADD (conflict check, rules, index record, conntrack).
fn install(
    conf: &PortMapConfig,
    id: &str,
    atts: &[FamilyAttachment],
    daemon_holds_sockets: bool,
) -> Result<()> {
    if atts.is_empty() {
        return Ok(());
    }
    let chain = dnat_chain_name(&conf.network, id);
    let state = State::open()?;
    if state.owner(&chain).is_some() {
        // A repeated ADD: start from a clean slate rather than doubling rules.
        remove(&state, conf, &conf.network, id)?;
    }
    let claims: Vec<Claim> = atts.iter().flat_map(claims_of).collect();
    // After a refresh the index has seen every change of the reference's mappings.
    let up_to_date = if conf.check_port_conflicts {
        refresh_foreign(&state)?;
        check_conflicts(&state, &chain, &claims, daemon_holds_sockets)?;
        true
    } else {
        foreign_up_to_date(&state)
    };
    let mut nft_keys = Vec::new();
    if conf.backend == BackendKind::Nftables {
        for att in atts {
            nft_keys.extend(att.nft_elements().into_iter().map(|e| NftKey {
                family: fam_num(att.family),
                set: e.set,
                key: e.key,
            }));
        }
    }
    // Recorded before anything is installed: the index then knows every ferry attachment
    // (a crash leaves at most a record without rules, which is stale and harmless).
    state.record(&Owner {
        chain: chain.clone(),
        network: conf.network.clone(),
        container_id: id.to_string(),
        backend: conf.backend.as_str().to_string(),
        families: atts.iter().map(|a| fam_num(a.family)).collect(),
        foreign: false,
        claims,
        nft: nft_keys,
    })?;
    let mut done: Vec<Family> = Vec::new();
    for att in atts {
        let mut marker = layout_marker(conf, att.family);
        if conf.backend == BackendKind::Nftables {
            // The fast path also needs this attachment's hairpin sets and rules.
            for p in att.nft_hairpin_prefixes() {
                marker.push_str(&format!("-p{p}"));
            }
        }
        let recent = state.verified_recently(&marker, SHARED_LAYOUT_RECHECK);
        let installed = match conf.backend {
            BackendKind::Iptables => ipt::add(att, !recent),
            BackendKind::Nftables => nft::add(att, recent),
        }
        .and_then(|()| {
            if recent {
                Ok(())
            } else {
                state.mark_verified(&marker)
            }
        });
        if let Err(e) = installed {
            done.push(att.family);
            for f in done {
                let _ = teardown(conf.backend, f, &conf.network, id, conf.conditions(f), true);
            }
            let _ = state.forget(&chain);
            return Err(e.context(format!("container {id}")));
        }
        done.push(att.family);
    }
    if up_to_date {
        note_foreign_signs(&state);
    }
    for att in atts {
        // Not when the userland proxy serves IPv4 loopback.
        if let (true, IpNet::V4(v4)) = (conf.snat, att.container) {
            if conf.kernel_serves_loopback(Family::V4) {
                host::enable_route_localnet(v4.addr())?;
            }
        }
        // After the rules are in place, so new datagrams take them.
        flush_udp(
            att.family,
            att.mappings()
                .iter()
                .filter(|m| m.protocol == firewall::Protocol::Udp)
                .map(|m| m.host_port),
        );
    }
    Ok(())
}

impl cni::Plugin for Portmap {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = PortMapConfig::from_netconf(&req.conf)
            .map_err(|e| e.context("failed to parse config"))?;
        let prev = req.conf.prev_result()?.ok_or_else(not_chained)?;
        if conf.mappings.is_empty() {
            return Ok(prev);
        }
        let id = req.env.container_id.as_str();
        let addrs = container_addresses(&prev, &req.env.ifname);
        let atts = attachments(&conf, id, &addrs);
        let proxy = conf.userland_proxy.as_ref().map(|settings| {
            (
                Daemon::new(settings),
                userland::owner(&conf.network, id),
                userland::specs(&conf, id, &addrs, userland::host_has_ipv6()),
            )
        });
        let proxied = proxy
            .as_ref()
            .is_some_and(|(_, _, specs)| !specs.is_empty());
        if atts.is_empty() && !proxied {
            return Ok(prev);
        }
        // Reservation first: a port someone else holds fails the ADD before any rule exists.
        if let Some((daemon, owner, specs)) = proxy.as_ref().filter(|_| proxied) {
            daemon
                .reserve(owner, specs)
                .map_err(|e| e.context(format!("container {id}")))?;
        }
        let installed = install(&conf, id, &atts, proxied);
        if installed.is_err() {
            if let Some((daemon, owner, _)) = proxy.as_ref().filter(|_| proxied) {
                let _ = daemon.release(owner);
            }
        }
        installed.map(|()| prev)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let conf = PortMapConfig::from_netconf(&req.conf)
            .map_err(|e| e.context("failed to parse config"))?;
        let state = State::open()?;
        let removed = remove(&state, &conf, &conf.network, &req.env.container_id);
        if let Some(settings) = &conf.userland_proxy {
            Daemon::new(settings)
                .release(&userland::owner(&conf.network, &req.env.container_id))?;
        }
        removed
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = PortMapConfig::from_netconf(&req.conf)?;
        let prev = req
            .conf
            .prev_result()?
            .ok_or_else(|| Error::invalid_config("Required prevResult missing"))?;
        let addrs = container_addresses(&prev, &req.env.ifname);
        // Only the families the container has an address in: an IPv4-only network passes.
        for att in attachments(&conf, &req.env.container_id, &addrs) {
            match conf.backend {
                BackendKind::Iptables => ipt::check(&att)?,
                BackendKind::Nftables => nft::check(&att)?,
            }
        }
        if let Some(settings) = &conf.userland_proxy {
            let id = req.env.container_id.as_str();
            let specs = userland::specs(&conf, id, &addrs, userland::host_has_ipv6());
            Daemon::new(settings).verify(&userland::owner(&conf.network, id), &specs)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = PortMapConfig::from_netconf(&req.conf)?;
        let tools: &[&str] = match conf.backend {
            BackendKind::Iptables => &["iptables-restore", "ip6tables-restore"],
            BackendKind::Nftables => &["nft"],
        };
        for tool in tools {
            if firewall::executor::find_tool(tool).is_none() {
                return Err(Error::new(
                    code::STATUS_UNAVAILABLE,
                    format!("{tool} is not installed: install it or set \"backend\" to the other firewall"),
                ));
            }
        }
        if let Some(settings) = &conf.userland_proxy {
            Daemon::new(settings).available()?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let conf = PortMapConfig::from_netconf(&req.conf)?;
        let Some(valid) = req.conf.valid_attachments()? else {
            return Ok(());
        };
        let valid: BTreeSet<String> = valid.into_iter().map(|a| a.container_id).collect();
        let state = State::open()?;
        let mut stale: BTreeSet<String> = state
            .owners()
            .into_iter()
            .filter(|o| o.network == conf.network && !valid.contains(&o.container_id))
            .map(|o| o.container_id)
            .collect();
        if conf.backend == BackendKind::Iptables {
            for family in [Family::V4, Family::V6] {
                for (net, id, _) in ipt::attachments(family).unwrap_or_default() {
                    if net == conf.network && !valid.contains(&id) {
                        stale.insert(id);
                    }
                }
            }
        }
        let mut errors = Vec::new();
        if let Some(settings) = &conf.userland_proxy {
            if let Err(e) = Daemon::new(settings).release_stale(&conf.network, &valid) {
                errors.push(format!("proxy daemon: {}", e.msg));
            }
        }
        for id in stale {
            if let Err(e) = remove(&state, &conf, &conf.network, &id) {
                errors.push(format!("container {id}: {}", e.msg));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                code::FIREWALL,
                format!(
                    "GC could not remove every stale mapping: {}",
                    errors.join("; ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::foreign_changed;

    #[test]
    fn foreign_change_needs_a_new_generation_and_a_changed_chain() {
        let now = (12, "5 -".to_string());
        assert!(foreign_changed(None, &now), "never looked");
        assert!(!foreign_changed(Some("12 5 -"), &now), "nothing happened");
        assert!(
            !foreign_changed(Some("11 5 -"), &now),
            "someone else committed, CNI-HOSTPORT-DNAT untouched"
        );
        assert!(foreign_changed(Some("11 4 -"), &now), "a rule was added");
        assert!(foreign_changed(Some("11 5 3"), &now), "ip6 changed");
        assert!(foreign_changed(Some("garbage"), &now));
    }
}
