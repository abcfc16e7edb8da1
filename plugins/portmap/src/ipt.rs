//! Installing, checking and removing one attachment's iptables rules.
//!
//! ADD is one `iptables-restore` run whatever the number of existing mappings: it `-C`hecks
//! the shared rules (so a broken shared layout fails the batch instead of being trusted),
//! creates the attachment's chain and appends its rules. Only when that fails does it read
//! the whole `nat` table once and repair the shared layout (first ADD on a node).

use crate::rules::{
    self, dnat_comment, entry_rules, masq_jump_rule, masq_rule, ports_of_saved_chain, setmark_rule,
    top_jump_rule, FamilyAttachment, MASQ_CHAIN, SETMARK_CHAIN, TOP_DNAT_CHAIN,
};
use crate::state::{Claim, Owner, ProtocolName};
use cni::Result;
use firewall::iptables::{rule_args, Batch, Iptables, SavedTable};
use firewall::{Executor, Family, Rule};

const NAT: &str = "nat";

fn uses_own_masq(att: &FamilyAttachment) -> bool {
    att.conf.snat && att.conf.external_set_mark_chain.is_none()
}

fn add_own(batch: &mut Batch, att: &FamilyAttachment) {
    let chain = att.chain();
    batch.declare_chain(&chain);
    for r in att.iptables_chain_rules() {
        batch.append(&chain, &r);
    }
    for r in att.iptables_entry_rules() {
        batch.append(TOP_DNAT_CHAIN, &r);
    }
}

/// Installs the attachment's rules in its family.
pub fn add(att: &FamilyAttachment, verify_shared: bool) -> Result<()> {
    let ipt = Iptables::new(att.family);
    // `-C`/`-D` make iptables-nft fetch every rule of the table, so the fast path uses only
    // declarations and appends (their cost does not depend on other attachments). The
    // shared jumps are verified by listing just those small chains, when asked to.
    if !verify_shared || shared_layout_present(att)? {
        let mut fast = Batch::new(att.family, NAT);
        add_own(&mut fast, att);
        if ipt.apply(&fast, "installing port mappings").is_ok() {
            return Ok(());
        }
    }
    // Slow path: the shared chains or their jumps are missing (or something else is wrong,
    // in which case this batch fails again with the tool's own explanation).
    let saved = ipt.save(
        NAT,
        "reading the nat table to set up the shared CNI-HOSTPORT chains",
    )?;
    let mut batch = Batch::new(att.family, NAT);
    let has_rule = |chain: &str, rule: &Rule| {
        let args = rule_args(rule);
        saved
            .chain(chain)
            .is_some_and(|rules| rules.contains(&args))
    };
    let ensure_chain = |batch: &mut Batch, chain: &str| {
        if saved.chain(chain).is_none() {
            batch.declare_chain(chain);
        }
    };
    ensure_chain(&mut batch, TOP_DNAT_CHAIN);
    if uses_own_masq(att) {
        ensure_chain(&mut batch, SETMARK_CHAIN);
        ensure_chain(&mut batch, MASQ_CHAIN);
        if !has_rule(SETMARK_CHAIN, &setmark_rule(att.conf.mark)) {
            batch.append(SETMARK_CHAIN, &setmark_rule(att.conf.mark));
        }
        if !has_rule(MASQ_CHAIN, &masq_rule(att.conf.mark)) {
            batch.append(MASQ_CHAIN, &masq_rule(att.conf.mark));
        }
        if !has_rule("POSTROUTING", &masq_jump_rule()) {
            // First in POSTROUTING: the bridge/ptp masquerade rules would catch it otherwise.
            batch.insert("POSTROUTING", &masq_jump_rule());
        }
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        if !has_rule(hook, &top_jump_rule()) {
            batch.append(hook, &top_jump_rule());
        }
    }
    // A stale chain of the same attachment (a repeated ADD): drop its entry jumps first.
    let chain = att.chain();
    if saved.chain(&chain).is_some() {
        for args in jumps_to(&saved, &chain) {
            batch.delete_args(TOP_DNAT_CHAIN, &args);
        }
    }
    add_own(&mut batch, att);
    ipt.apply(
        &batch,
        "installing port mappings and the shared CNI-HOSTPORT chains",
    )?;
    Ok(())
}

/// True when the shared jumps and mark/masquerade rules this attachment relies on exist.
/// Lists only `PREROUTING`, `OUTPUT`, `POSTROUTING` and the two one-rule chains.
pub fn shared_layout_present(att: &FamilyAttachment) -> Result<bool> {
    let ipt = Iptables::new(att.family);
    let mut wanted = vec![("PREROUTING", top_jump_rule()), ("OUTPUT", top_jump_rule())];
    if uses_own_masq(att) {
        wanted.push(("POSTROUTING", masq_jump_rule()));
        wanted.push((SETMARK_CHAIN, setmark_rule(att.conf.mark)));
        wanted.push((MASQ_CHAIN, masq_rule(att.conf.mark)));
    }
    for (chain, rule) in wanted {
        let rules = ipt.list_chain(NAT, chain, "reading a shared nat chain")?;
        if !rules.is_some_and(|r| r.contains(&rule_args(&rule))) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn jumps_to(saved: &SavedTable, chain: &str) -> Vec<Vec<String>> {
    saved
        .chain(TOP_DNAT_CHAIN)
        .map(|rules| {
            rules
                .iter()
                .filter(|a| a.ends_with(&["-j".to_string(), chain.to_string()]))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the rules of (network, container) in `family`. Does not need the mappings: the
/// entry rules are rebuilt from the chain's own DNAT rules, and if they do not match (rules
/// written by another version), every jump to the chain is found in `CNI-HOSTPORT-DNAT`.
/// Returns false when there was nothing to remove.
pub fn del(
    family: Family,
    network: &str,
    container_id: &str,
    conditions: &[String],
) -> Result<bool> {
    let ipt = Iptables::new(family);
    let chain = rules::dnat_chain_name(network, container_id);
    let Some(own) = ipt.list_chain(NAT, &chain, "reading the attachment's DNAT chain")? else {
        return Ok(false);
    };
    let ports = ports_of_saved_chain(&own);
    if del_known(family, network, container_id, conditions, &ports).is_ok() {
        return Ok(true);
    }
    let top = ipt
        .list_chain(NAT, TOP_DNAT_CHAIN, "reading CNI-HOSTPORT-DNAT")?
        .unwrap_or_default();
    let mut batch = Batch::new(family, NAT);
    for args in top
        .iter()
        .filter(|a| a.ends_with(&["-j".to_string(), chain.clone()]))
    {
        batch.delete_args(TOP_DNAT_CHAIN, args);
    }
    batch.flush_chain(&chain);
    batch.delete_chain(&chain);
    ipt.apply(&batch, "removing port mappings")?;
    Ok(true)
}

/// Removes the attachment in one iptables-restore run when its ports (in mapping order) are
/// known; fails without changing anything when the rules are not exactly as expected.
pub fn del_known(
    family: Family,
    network: &str,
    container_id: &str,
    conditions: &[String],
    ports: &[(firewall::Protocol, u16)],
) -> Result<()> {
    let chain = rules::dnat_chain_name(network, container_id);
    let mut fast = Batch::new(family, NAT);
    for r in entry_rules(
        &dnat_comment(network, container_id),
        conditions,
        ports,
        &chain,
    ) {
        fast.delete(TOP_DNAT_CHAIN, &r);
    }
    fast.flush_chain(&chain);
    fast.delete_chain(&chain);
    Iptables::new(family).apply(&fast, "removing port mappings")?;
    Ok(())
}

/// Verifies every rule of the attachment and the shared rules it depends on, in one
/// iptables-restore run that only checks (`-C`) and therefore changes nothing.
pub fn check(att: &FamilyAttachment) -> Result<()> {
    let ipt = Iptables::new(att.family);
    let mut batch = Batch::new(att.family, NAT);
    batch.check("PREROUTING", &top_jump_rule());
    batch.check("OUTPUT", &top_jump_rule());
    if uses_own_masq(att) {
        batch.check("POSTROUTING", &masq_jump_rule());
        batch.check(SETMARK_CHAIN, &setmark_rule(att.conf.mark));
        batch.check(MASQ_CHAIN, &masq_rule(att.conf.mark));
    }
    for r in att.iptables_entry_rules() {
        batch.check(TOP_DNAT_CHAIN, &r);
    }
    let chain = att.chain();
    for r in att.iptables_chain_rules() {
        batch.check(&chain, &r);
    }
    ipt.apply(&batch, "checking port mappings").map_err(|e| {
        let line = e
            .msg
            .split("line")
            .nth(1)
            .and_then(|s| {
                s.trim_start_matches([':', ' '])
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
            })
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| batch.line(n));
        let mut err: cni::Error = e.into();
        if let Some(l) = line {
            err.msg = format!(
                "missing {} rule `{}` ({})",
                family_tool(att.family),
                l.trim_start_matches("-C "),
                err.msg
            );
        }
        err
    })
}

fn family_tool(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// Attachments whose rules are in `CNI-HOSTPORT-DNAT`: (network, container ID, chain), from
/// the reference's entry comments. Reads one chain (GC and first-use import only).
pub fn attachments(family: Family) -> Result<Vec<(String, String, String)>> {
    let ipt = Iptables::new(family);
    if !ipt.usable() {
        return Ok(Vec::new());
    }
    let top = ipt
        .list_chain(NAT, TOP_DNAT_CHAIN, "reading CNI-HOSTPORT-DNAT")?
        .unwrap_or_default();
    let mut saved = SavedTable::default();
    saved.chains.insert(TOP_DNAT_CHAIN.to_string(), top);
    Ok(attachments_in(&saved))
}

/// Claims of mappings other plugins (the reference) installed, read once per namespace from
/// the whole `nat` table so later conflict checks can use the index.
pub fn foreign_owners(family: Family, known: &[String]) -> Result<Vec<Owner>> {
    let ipt = Iptables::new(family);
    if !ipt.usable() {
        return Ok(Vec::new());
    }
    let saved = ipt.save(
        NAT,
        "reading the nat table for mappings installed by other plugins",
    )?;
    let fam = if family == Family::V6 { 6 } else { 4 };
    let mut owners = Vec::new();
    for (net, id, chain) in attachments_in(&saved) {
        if known.contains(&chain) {
            continue;
        }
        let mut claims = Vec::new();
        for args in saved.chain(&chain).cloned().unwrap_or_default() {
            if !args.windows(2).any(|w| w[0] == "-j" && w[1] == "DNAT") {
                continue;
            }
            let value = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
            let protocol = value("-p").and_then(|p| firewall::Protocol::parse(&p));
            let port = value("--dport").and_then(|p| p.parse::<u16>().ok());
            let addr = value("-d").and_then(|d| d.split('/').next().and_then(|a| a.parse().ok()));
            if let (Some(protocol), Some(port)) = (protocol, port) {
                claims.push(Claim {
                    protocol: ProtocolName::from(protocol),
                    port,
                    family: fam,
                    addr,
                });
            }
        }
        owners.push(Owner {
            chain,
            network: net,
            container_id: id,
            backend: "iptables".into(),
            families: vec![fam],
            foreign: true,
            claims,
            nft: Vec::new(),
        });
    }
    Ok(owners)
}

fn attachments_in(saved: &SavedTable) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for args in saved.chain(TOP_DNAT_CHAIN).cloned().unwrap_or_default() {
        let comment = args
            .windows(2)
            .find(|w| w[0] == "--comment")
            .map(|w| w[1].clone());
        let target = args
            .windows(2)
            .rev()
            .find(|w| w[0] == "-j")
            .map(|w| w[1].clone());
        if let (Some((net, id)), Some(chain)) = (
            comment.as_deref().and_then(rules::parse_dnat_comment),
            target,
        ) {
            if !out.iter().any(|(_, _, c)| *c == chain) {
                out.push((net, id, chain));
            }
        }
    }
    out
}

/// True when the chain exists in `family` (to tell a live claim from a stale one).
pub fn chain_exists(family: Family, chain: &str) -> bool {
    matches!(
        Iptables::new(family).list_chain(NAT, chain, "reading a DNAT chain"),
        Ok(Some(_))
    )
}
