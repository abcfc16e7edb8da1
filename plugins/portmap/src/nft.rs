//! Installing, checking and removing one attachment's nftables rules (table `cni_hostport`).
//!
//! An attachment is only elements of ferry's maps and sets (see [`crate::rules`]): ADD adds
//! them, DEL deletes them by key (from the port index) or, when the index has no record, by
//! their comment (the attachment's `CNI-DN-<hash>` name). Attachments of the previous layout
//! (a `CNI-DN-…` chain reached through verdict maps) are still removed, and that layout's
//! base chains and maps go once the last of them is gone.

use crate::rules::{
    legacy, masq_rule, nft_base_rules, nft_declarations, parse_legacy_nft_key_comment,
    parse_nft_hairpin_set, FamilyAttachment, NftElement, NFT_MASQUERADING, NFT_OUTPUT,
    NFT_PREROUTING, NFT_TABLE, NFT_TABLE_COMMENT,
};
use cni::{code, Error, Result};
use firewall::nftables::{listed_rules, BaseChain, Batch, Nft};
use firewall::{Executor, Family};
use serde_json::Value;

const WHAT_ADD: &str = "installing port mappings in nftables table cni_hostport";

/// Installs the attachment in its family.
///
/// With `shared_known_good` (the base chains, maps and this attachment's hairpin sets were
/// declared moments ago) only the elements are sent. Otherwise, or if that fails (table or
/// sets gone), the full layout is declared again: base chains rebuilt with the hairpin
/// prefixes already in the table plus this attachment's.
pub fn add(att: &FamilyAttachment, shared_known_good: bool) -> Result<()> {
    let elements = att.nft_elements();
    let chain = att.chain();
    if shared_known_good {
        let mut b = Batch::new();
        add_elements(&mut b, att.family, &elements, &chain);
        if Nft.apply(&b, WHAT_ADD).is_ok() {
            return Ok(());
        }
    }
    let mut prefixes = declared_prefixes(att.family)?;
    prefixes.extend(att.nft_hairpin_prefixes());
    prefixes.sort_unstable();
    prefixes.dedup();
    Nft.apply(&full_batch(att, &prefixes), WHAT_ADD)?;
    Ok(())
}

/// The full ADD transaction: table, maps and sets for `prefixes`, base chains rebuilt, the
/// masquerading chain (with `snat`), then the attachment's elements.
fn full_batch(att: &FamilyAttachment, prefixes: &[u8]) -> Batch {
    let f = att.family;
    let t = NFT_TABLE;
    let mut b = Batch::new();
    b.add_table(f, t, Some(NFT_TABLE_COMMENT));
    for (name, kind, ty) in nft_declarations(f, prefixes) {
        b.raw(format!(
            "add {kind} {} {t} {name} {{ type {ty} ; }}",
            f.nft()
        ));
    }
    let hooks = [
        (
            NFT_PREROUTING,
            BaseChain {
                kind: "nat",
                hook: "prerouting",
                priority: "dstnat",
            },
        ),
        // "dstnat" is not accepted on the output hook; -100 is its value.
        (
            NFT_OUTPUT,
            BaseChain {
                kind: "nat",
                hook: "output",
                priority: "-100",
            },
        ),
    ];
    let rules = nft_base_rules(f, att.conf.conditions(f), att.conf.mark, prefixes);
    for (name, base) in &hooks {
        b.add_chain(f, t, name, Some(base));
        b.flush_chain(f, t, name);
        for r in &rules {
            b.raw(format!("add rule {} {t} {name} {r}", f.nft()));
        }
    }
    if att.conf.snat {
        let base = BaseChain {
            kind: "nat",
            hook: "postrouting",
            priority: "srcnat",
        };
        b.add_chain(f, t, NFT_MASQUERADING, Some(&base));
        b.flush_chain(f, t, NFT_MASQUERADING);
        b.add_rule(f, t, NFT_MASQUERADING, &masq_rule(att.conf.mark));
    }
    add_elements(&mut b, f, &att.nft_elements(), &att.chain());
    b
}

fn add_elements(b: &mut Batch, family: Family, elements: &[NftElement], comment: &str) {
    for e in elements {
        b.add_element(family, NFT_TABLE, &e.set, &[e.render(comment)]);
    }
}

/// Hairpin prefix lengths whose sets exist in the family's table (read from the set
/// declarations only, so this does not grow with the number of mappings).
fn declared_prefixes(family: Family) -> Result<Vec<u8>> {
    let names = match crate::netlink::nft_set_names(nfproto(family), NFT_TABLE) {
        Ok(names) => names,
        // nft's terse listing as a fallback (it still fetches the elements).
        Err(_) => Nft
            .list_json_terse(
                &["table", family.nft(), NFT_TABLE],
                "reading the sets of nftables table cni_hostport",
            )?
            .map(|doc| set_names(&doc))
            .unwrap_or_default(),
    };
    Ok(names
        .iter()
        .filter_map(|n| parse_nft_hairpin_set(n))
        .map(|(_, p)| p)
        .collect())
}

/// Names of the sets and maps in `nft -j list …` output.
fn set_names(doc: &Value) -> Vec<String> {
    doc.get("nftables")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    i.get("set")
                        .or_else(|| i.get("map"))?
                        .get("name")?
                        .as_str()
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes recorded elements `(set, key)` in one transaction; fails without changing
/// anything when one of them is missing.
pub fn del_elements(family: Family, keys: &[(String, String)]) -> Result<()> {
    let mut b = Batch::new();
    for (set, key) in keys {
        b.delete_element(family, NFT_TABLE, set, std::slice::from_ref(key));
    }
    Nft.apply(&b, "removing port mappings")?;
    Ok(())
}

fn nfproto(family: Family) -> u8 {
    match family {
        Family::V4 => crate::netlink::NFPROTO_IPV4,
        Family::V6 => crate::netlink::NFPROTO_IPV6,
    }
}

/// True when `chain` exists in the family's `cni_hostport` (one small netlink request; an
/// `nft` listing only if nf_tables cannot be asked directly).
fn chain_present(family: Family, chain: &str) -> Result<bool> {
    match crate::netlink::nft_chain_use(nfproto(family), NFT_TABLE, chain) {
        Ok(found) => Ok(found.is_some()),
        Err(_) => Ok(Nft
            .list_text(
                &["chain", family.nft(), NFT_TABLE, chain],
                "reading a chain",
            )?
            .is_some()),
    }
}

/// Removes everything of the attachment named `chain` in `family` without a record of it:
/// a chain of the previous layout and, with `search_elements`, elements found by their
/// comment (this lists the whole table). False when there was nothing.
pub fn del(family: Family, chain: &str, search_elements: bool) -> Result<bool> {
    let mut found = false;
    if search_elements {
        if let Some(text) = Nft.list_text(
            &["table", family.nft(), NFT_TABLE],
            "reading nftables table cni_hostport",
        )? {
            let owned = elements_commented(&text, chain);
            if !owned.is_empty() {
                del_elements(family, &owned)?;
                found = true;
            }
        }
    }
    if chain_present(family, chain)? {
        del_legacy(family, chain)?;
        found = true;
    }
    Ok(found)
}

/// Names (`CNI-DN-…`) of ferry attachments in the family's table that are not in `known`:
/// element comments and previous-layout chains. Lists the whole table (once per namespace).
pub fn unrecorded_attachments(
    family: Family,
    known: &std::collections::BTreeSet<String>,
) -> Result<Vec<String>> {
    let Some(text) = Nft.list_text(
        &["table", family.nft(), NFT_TABLE],
        "reading nftables table cni_hostport",
    )?
    else {
        return Ok(Vec::new());
    };
    Ok(unrecorded_in(&text, known))
}

/// See [`unrecorded_attachments`]: the names in `nft list table` text not in `known`.
fn unrecorded_in(text: &str, known: &std::collections::BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, elements) in listed_elements(text) {
        for e in elements {
            if let Some(rest) = e.split(" comment \"").nth(1) {
                let name = rest.split('"').next().unwrap_or_default();
                if name.starts_with("CNI-DN-") && !known.contains(name) {
                    out.push(name.to_string());
                }
            }
        }
    }
    for line in text.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("chain ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            if name.starts_with("CNI-DN-") && !known.contains(name) {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `(set, key)` of every element in `nft list table` text whose comment is `comment`.
pub fn elements_commented(table_text: &str, comment: &str) -> Vec<(String, String)> {
    let needle = format!(" comment \"{comment}\"");
    let mut out = Vec::new();
    for (set, elements) in listed_elements(table_text) {
        for e in elements {
            if let Some((key, rest)) = e.split_once(&needle) {
                if rest.is_empty() || rest.starts_with(" :") {
                    out.push((set.clone(), key.trim().to_string()));
                }
            }
        }
    }
    out
}

/// The elements of each set and map in `nft list` text: `(name, ["key comment \"c\" : data", …])`.
pub fn listed_elements(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut collecting: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(buf) = collecting.as_mut() {
            buf.push(' ');
            buf.push_str(l);
        } else if let Some(name) = l
            .strip_prefix("set ")
            .or_else(|| l.strip_prefix("map "))
            .and_then(|r| r.strip_suffix(" {"))
        {
            current = Some(name.to_string());
            continue;
        } else if let Some(rest) = l.strip_prefix("elements = {") {
            collecting = Some(rest.to_string());
        } else {
            continue;
        }
        let done = collecting
            .as_deref()
            .is_some_and(|b| b.trim_end().ends_with('}'));
        if done {
            let body = collecting.take().unwrap_or_default();
            let body = body.trim_end().trim_end_matches('}');
            let elements = split_elements(body);
            if let Some(name) = current.clone() {
                out.push((name, elements));
            }
        }
    }
    out
}

/// Splits an element list at commas outside quoted comments.
fn split_elements(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in body.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out.into_iter().filter(|e| !e.is_empty()).collect()
}

/// Removes an attachment of the previous layout (its chain and the verdict-map elements
/// that jump to it), then that layout's base chains and maps once no element is left.
pub fn del_legacy(family: Family, chain: &str) -> Result<()> {
    let doc = Nft.list_json(
        &["chain", family.nft(), NFT_TABLE, chain],
        "reading the attachment's nft chain",
    )?;
    // (Only for attachments of the previous layout, which are few and go away.)
    let mut keys: Vec<(&'static str, String)> = Vec::new();
    for r in doc.as_ref().map(listed_rules).unwrap_or_default() {
        if let Some(k) = r.comment.as_deref().and_then(parse_legacy_nft_key_comment) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    if doc.is_none() || del_legacy_known(family, chain, &keys).is_err() {
        // Some element is gone or was never ours: find every element that jumps to the chain.
        let mut b = Batch::new();
        for map in [legacy::ANY_MAP, legacy::HOSTIP_MAP] {
            let text = Nft.list_text(
                &["map", family.nft(), NFT_TABLE, map],
                "reading a cni_hostport map",
            )?;
            let keys = elements_jumping_to(text.as_deref().unwrap_or(""), chain);
            b.delete_element(family, NFT_TABLE, map, &keys);
        }
        if doc.is_some() {
            b.flush_chain(family, NFT_TABLE, chain);
            b.delete_chain(family, NFT_TABLE, chain);
        }
        Nft.apply(&b, "removing port mappings")?;
    }
    drop_unused_legacy_layout(family)
}

/// Removes a previous-layout chain and its map elements in one transaction when the keys
/// are known (from the index record); fails without changing anything when one is missing.
pub fn del_legacy_known(
    family: Family,
    chain: &str,
    keys: &[(&'static str, String)],
) -> Result<()> {
    let mut fast = Batch::new();
    for (map, key) in keys {
        fast.delete_element(family, NFT_TABLE, map, std::slice::from_ref(key));
    }
    fast.flush_chain(family, NFT_TABLE, chain);
    fast.delete_chain(family, NFT_TABLE, chain);
    Nft.apply(&fast, "removing port mappings")?;
    drop_unused_legacy_layout(family)
}

/// Deletes the previous layout's base chains and verdict maps when neither map has an
/// element left (the new layout never uses them).
fn drop_unused_legacy_layout(family: Family) -> Result<()> {
    let mut b = Batch::new();
    for map in [legacy::ANY_MAP, legacy::HOSTIP_MAP] {
        let text = Nft.list_text(
            &["map", family.nft(), NFT_TABLE, map],
            "reading a cni_hostport map",
        )?;
        match text {
            Some(t) if t.contains("elements = {") => return Ok(()),
            Some(_) => {}
            None => continue,
        }
    }
    for chain in [legacy::PREROUTING, legacy::OUTPUT] {
        if Nft
            .list_text(
                &["chain", family.nft(), NFT_TABLE, chain],
                "reading a chain",
            )?
            .is_some()
        {
            b.delete_chain(family, NFT_TABLE, chain);
        }
    }
    for map in [legacy::ANY_MAP, legacy::HOSTIP_MAP] {
        if Nft
            .list_text(&["map", family.nft(), NFT_TABLE, map], "reading a map")?
            .is_some()
        {
            b.raw(format!("delete map {} {NFT_TABLE} {map}", family.nft()));
        }
    }
    Nft.apply(&b, "removing the previous ferry nftables layout")?;
    Ok(())
}

/// The reference's nftables portmap chains; its rules carry the container ID as comment.
const REFERENCE_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

/// Removes rules the reference's nftables backend installed for `container_id` (found by
/// their comment). Reads the reference's chains only when its `hostports` chain exists.
pub fn del_reference_rules(family: Family, container_id: &str) -> Result<bool> {
    if !chain_present(family, "hostports")? {
        return Ok(false);
    }
    let mut batch = Batch::new();
    for chain in REFERENCE_CHAINS {
        let Some(doc) = Nft.list_json(
            &["chain", family.nft(), NFT_TABLE, chain],
            "reading the reference's nft chain",
        )?
        else {
            if chain == "hostports" {
                return Ok(false);
            }
            continue;
        };
        for r in listed_rules(&doc) {
            if r.comment.as_deref() == Some(container_id) {
                batch.delete_rule(family, NFT_TABLE, chain, r.handle);
            }
        }
    }
    if batch.is_empty() {
        return Ok(false);
    }
    Nft.apply(
        &batch,
        "removing port mappings the reference plugin installed",
    )?;
    Ok(true)
}

/// Keys of the map elements in `nft list map` text whose verdict is `jump <chain>`.
pub fn elements_jumping_to(text: &str, chain: &str) -> Vec<String> {
    listed_elements(text)
        .into_iter()
        .flat_map(|(_, es)| es)
        .filter_map(|e| {
            let (key, verdict) = e.split_once(':')?;
            (verdict.trim() == format!("jump {chain}")).then(|| key.trim().to_string())
        })
        .collect()
}

/// Verifies the attachment's elements (key, data and comment) and that ferry's base chains
/// look them up.
pub fn check(att: &FamilyAttachment) -> Result<()> {
    let f = att.family;
    let chain = att.chain();
    let missing = |what: String| {
        Error::new(
            code::FIREWALL,
            format!("port mappings of container {}: {what}", att.container_id),
        )
    };
    let text = Nft
        .list_text(&["table", f.nft(), NFT_TABLE], "checking port mappings")?
        .ok_or_else(|| missing(format!("nft table {} {NFT_TABLE} does not exist", f.nft())))?;
    let listed = listed_elements(&text);
    for e in att.nft_elements() {
        let want = e.render(&chain);
        let present = listed
            .iter()
            .find(|(name, _)| *name == e.set)
            .is_some_and(|(_, es)| es.contains(&want));
        if !present {
            return Err(missing(format!(
                "{} {NFT_TABLE} {} has no element `{want}`",
                f.nft(),
                e.set
            )));
        }
    }
    let mut hooks = vec![NFT_PREROUTING, NFT_OUTPUT];
    if att.conf.snat {
        hooks.push(NFT_MASQUERADING);
    }
    for hook in hooks {
        let body = chain_body(&text, hook).ok_or_else(|| {
            missing(format!(
                "base chain {hook} is missing from table {} {NFT_TABLE}",
                f.nft()
            ))
        })?;
        let wanted: Vec<String> = if hook == NFT_MASQUERADING {
            vec!["masquerade".into()]
        } else {
            att.nft_elements()
                .iter()
                .map(|e| format!("@{}", e.set))
                .collect()
        };
        for w in wanted {
            if !body.contains(&format!("{w} ")) && !body.contains(&format!("{w}\n")) {
                return Err(missing(format!(
                    "base chain {hook} of table {} {NFT_TABLE} has no rule using {w}",
                    f.nft()
                )));
            }
        }
    }
    Ok(())
}

/// The text of `chain NAME { … }` in an `nft list table` listing, each line ending in `\n`.
fn chain_body(text: &str, chain: &str) -> Option<String> {
    let start = text.find(&format!("\tchain {chain} {{\n"))?;
    let rest = &text[start..];
    let end = rest.find("\n\t}").unwrap_or(rest.len());
    Some(format!("{}\n", &rest[..end]))
}

/// True when the attachment still has rules: its first recorded element carries its
/// comment, or (previous layout) its chain exists. Used to ignore stale index records.
pub fn attachment_present(family: Family, chain: &str, first: Option<&(String, String)>) -> bool {
    match first {
        Some((set, key)) => matches!(
            Nft.get_element_text(family, NFT_TABLE, set, key, "reading an element"),
            Ok(Some(t)) if t.contains(&format!("comment \"{chain}\""))
        ),
        None => matches!(
            Nft.list_text(
                &["chain", family.nft(), NFT_TABLE, chain],
                "reading a chain"
            ),
            Ok(Some(_))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft list table ip cni_hostport` as nft 1.0.6 prints ferry's layout (elements of two
    /// attachments, one of them long enough to wrap) beside a previous-layout verdict map.
    const TABLE: &str = "table ip cni_hostport {
\tcomment \"CNI portmap plugin\"
\tmap ferry_hostports {
\t\ttype inet_proto . inet_service : verdict
\t\telements = { tcp . 8080 : jump CNI-DN-a,
\t\t\t     udp . 53 : jump CNI-DN-b, tcp . 1 : jump CNI-DN-a }
\t}

\tmap ferry_dnat {
\t\ttype inet_proto . inet_service : ipv4_addr . inet_service
\t\telements = { tcp . 22060 comment \"CNI-DN-x\" : 10.213.32.5 . 80,
\t\t\t     udp . 22061 comment \"CNI-DN-y\" : 10.213.32.6 . 53 }
\t}

\tset ferry_hairpin_24 {
\t\ttype ipv4_addr . inet_proto . inet_service
\t\telements = { 10.213.32.0 . tcp . 22060 comment \"CNI-DN-x\" }
\t}

\tset ferry_hairpin_32 {
\t\ttype ipv4_addr . inet_proto . inet_service
\t}

\tchain ferry_dnat_prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local ip saddr & 255.255.255.0 . meta l4proto . th dport @ferry_hairpin_24 meta mark set meta mark | 0x00002000
\t\tfib daddr type local dnat ip to meta l4proto . th dport map @ferry_dnat
\t}
}
";

    #[test]
    fn finds_elements_by_comment_and_by_verdict() {
        assert_eq!(
            elements_commented(TABLE, "CNI-DN-x"),
            vec![
                ("ferry_dnat".to_string(), "tcp . 22060".to_string()),
                (
                    "ferry_hairpin_24".to_string(),
                    "10.213.32.0 . tcp . 22060".to_string()
                ),
            ]
        );
        assert_eq!(
            elements_commented(TABLE, "CNI-DN-y"),
            vec![("ferry_dnat".to_string(), "udp . 22061".to_string())]
        );
        assert!(elements_commented(TABLE, "CNI-DN-").is_empty());
        assert_eq!(
            elements_jumping_to(TABLE, "CNI-DN-a"),
            vec!["tcp . 8080", "tcp . 1"]
        );
        let listed = listed_elements(TABLE);
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert_eq!(
            listed[1].1,
            [
                "tcp . 22060 comment \"CNI-DN-x\" : 10.213.32.5 . 80",
                "udp . 22061 comment \"CNI-DN-y\" : 10.213.32.6 . 53"
            ]
        );
    }

    #[test]
    fn unrecorded_attachments_are_comments_and_chains_not_in_the_index() {
        let known: std::collections::BTreeSet<String> = ["CNI-DN-x".to_string()].into();
        assert_eq!(unrecorded_in(TABLE, &known), ["CNI-DN-y"]);
        let with_chain = TABLE.replace(
            "\tchain ferry_dnat_prerouting {",
            "\tchain CNI-DN-old {\n\t}\n\tchain ferry_dnat_prerouting {",
        );
        assert_eq!(
            unrecorded_in(&with_chain, &known),
            ["CNI-DN-old", "CNI-DN-y"]
        );
    }

    #[test]
    fn full_add_transaction_golden() {
        use crate::config::{validate_entry, PortMapConfig, PortMapEntry};
        let conf = PortMapConfig {
            network: "podman".into(),
            snat: true,
            masq_all: false,
            mark: 0x2000,
            external_set_mark_chain: None,
            conditions_v4: vec![],
            conditions_v6: vec![],
            backend: firewall::BackendKind::Nftables,
            check_port_conflicts: true,
            userland_proxy: None,
            mappings: vec![validate_entry(&PortMapEntry {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            })
            .unwrap()],
        };
        let att = FamilyAttachment {
            conf: &conf,
            container_id: "c1",
            family: Family::V4,
            container: "10.213.32.5/24".parse().unwrap(),
        };
        let c = att.chain();
        let want = format!(
            r#"add table ip cni_hostport {{ comment "CNI portmap plugin" ; }}
add map ip cni_hostport ferry_hostip_dnat {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service ; }}
add map ip cni_hostport ferry_dnat {{ type inet_proto . inet_service : ipv4_addr . inet_service ; }}
add map ip cni_hostport ferry_dnat_nonloopback {{ type inet_proto . inet_service : ipv4_addr . inet_service ; }}
add set ip cni_hostport ferry_hostip_hairpin_24 {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service ; }}
add set ip cni_hostport ferry_hairpin_24 {{ type ipv4_addr . inet_proto . inet_service ; }}
add set ip cni_hostport ferry_hostip_hairpin_32 {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service ; }}
add set ip cni_hostport ferry_hairpin_32 {{ type ipv4_addr . inet_proto . inet_service ; }}
add chain ip cni_hostport ferry_dnat_prerouting {{ type nat hook prerouting priority dstnat ; }}
flush chain ip cni_hostport ferry_dnat_prerouting
add rule ip cni_hostport ferry_dnat_prerouting fib daddr type local ip saddr & 255.255.255.0 . ip daddr . meta l4proto . th dport @ferry_hostip_hairpin_24 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_prerouting fib daddr type local ip saddr & 255.255.255.0 . meta l4proto . th dport @ferry_hairpin_24 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_prerouting fib daddr type local ip saddr . ip daddr . meta l4proto . th dport @ferry_hostip_hairpin_32 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_prerouting fib daddr type local ip saddr . meta l4proto . th dport @ferry_hairpin_32 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_prerouting fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @ferry_hostip_dnat
add rule ip cni_hostport ferry_dnat_prerouting fib daddr type local dnat ip to meta l4proto . th dport map @ferry_dnat
add rule ip cni_hostport ferry_dnat_prerouting fib daddr type local ip daddr != 127.0.0.0/8 dnat ip to meta l4proto . th dport map @ferry_dnat_nonloopback
add chain ip cni_hostport ferry_dnat_output {{ type nat hook output priority -100 ; }}
flush chain ip cni_hostport ferry_dnat_output
add rule ip cni_hostport ferry_dnat_output fib daddr type local ip saddr & 255.255.255.0 . ip daddr . meta l4proto . th dport @ferry_hostip_hairpin_24 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_output fib daddr type local ip saddr & 255.255.255.0 . meta l4proto . th dport @ferry_hairpin_24 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_output fib daddr type local ip saddr . ip daddr . meta l4proto . th dport @ferry_hostip_hairpin_32 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_output fib daddr type local ip saddr . meta l4proto . th dport @ferry_hairpin_32 meta mark set meta mark | 0x00002000
add rule ip cni_hostport ferry_dnat_output fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @ferry_hostip_dnat
add rule ip cni_hostport ferry_dnat_output fib daddr type local dnat ip to meta l4proto . th dport map @ferry_dnat
add rule ip cni_hostport ferry_dnat_output fib daddr type local ip daddr != 127.0.0.0/8 dnat ip to meta l4proto . th dport map @ferry_dnat_nonloopback
add chain ip cni_hostport ferry_masquerading {{ type nat hook postrouting priority srcnat ; }}
flush chain ip cni_hostport ferry_masquerading
add rule ip cni_hostport ferry_masquerading meta mark & 0x00002000 == 0x00002000 masquerade
add element ip cni_hostport ferry_dnat {{ tcp . 8080 comment "{c}" : 10.213.32.5 . 80 }}
add element ip cni_hostport ferry_hairpin_24 {{ 10.213.32.0 . tcp . 8080 comment "{c}" }}
add element ip cni_hostport ferry_hairpin_32 {{ 127.0.0.1 . tcp . 8080 comment "{c}" }}
"#
        );
        assert_eq!(full_batch(&att, &att.nft_hairpin_prefixes()).render(), want);
        // The fast path is the element lines alone.
        let mut fast = Batch::new();
        add_elements(&mut fast, Family::V4, &att.nft_elements(), &c);
        assert_eq!(
            fast.render(),
            want.lines()
                .skip(29)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
    }

    #[test]
    fn chain_body_is_the_named_chain_only() {
        let body = chain_body(TABLE, "ferry_dnat_prerouting").unwrap();
        assert!(body.contains("@ferry_hairpin_24 "));
        assert!(body.contains("@ferry_dnat\n"));
        assert!(chain_body(TABLE, "ferry_dnat_output").is_none());
    }

    #[test]
    fn set_names_from_terse_json() {
        let doc: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},{"table":{"family":"ip","name":"cni_hostport"}},
            {"map":{"family":"ip","name":"ferry_dnat","table":"cni_hostport"}},
            {"set":{"family":"ip","name":"ferry_hairpin_24","table":"cni_hostport"}},
            {"set":{"family":"ip","name":"ferry_hostip_hairpin_32","table":"cni_hostport"}}]}"#,
        )
        .unwrap();
        let names = set_names(&doc);
        assert_eq!(
            names,
            ["ferry_dnat", "ferry_hairpin_24", "ferry_hostip_hairpin_32"]
        );
    }
}
