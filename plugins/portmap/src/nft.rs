//! Installing, checking and removing one attachment's nftables rules (table `cni_hostport`).
//!
//! ADD is one transaction of a fixed size: it (re)declares ferry's base chains and maps, and
//! adds the attachment's chain plus one verdict-map element per host port. DEL reads only the
//! attachment's own chain, whose DNAT rules carry their map keys as comments.

use crate::rules::{
    masq_rule, parse_nft_key_comment, FamilyAttachment, NFT_ANY_MAP, NFT_HOSTIP_MAP,
    NFT_MASQUERADING, NFT_OUTPUT, NFT_PREROUTING, NFT_TABLE, NFT_TABLE_COMMENT,
};
use cni::{code, Error, Result};
use firewall::nftables::{listed_rules, BaseChain, Batch, Nft};
use firewall::{Executor, Family};

fn addr_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// The two lookups of ferry's base chains: local destination, then the verdict maps (the
/// lookup itself is the verdict; a miss falls through).
fn base_rules(family: Family, conditions: &[String]) -> Vec<String> {
    let prefix = if conditions.is_empty() {
        String::new()
    } else {
        format!("{} ", conditions.join(" "))
    };
    vec![
        format!("{prefix}fib daddr type local {} daddr . meta l4proto . th dport vmap @{NFT_HOSTIP_MAP}", family.nft()),
        format!("{prefix}fib daddr type local meta l4proto . th dport vmap @{NFT_ANY_MAP}"),
    ]
}

/// Installs the attachment in its family.
///
/// With `shared_known_good` (this config's base chains were declared moments ago) only the
/// attachment's own chain and map elements are sent: re-adding existing chains makes the
/// kernel commit cost several milliseconds. If that fails (table or maps gone), the full
/// transaction runs.
pub fn add(att: &FamilyAttachment, shared_known_good: bool) -> Result<()> {
    if shared_known_good {
        let mut b = Batch::new();
        add_own(&mut b, att);
        if Nft
            .apply(
                &b,
                "installing port mappings in nftables table cni_hostport",
            )
            .is_ok()
        {
            return Ok(());
        }
    }
    let f = att.family;
    let t = NFT_TABLE;
    let mut b = Batch::new();
    b.add_table(f, t, Some(NFT_TABLE_COMMENT));
    b.add_map(f, t, NFT_ANY_MAP, "inet_proto . inet_service", "verdict");
    b.add_map(
        f,
        t,
        NFT_HOSTIP_MAP,
        &format!("{} . inet_proto . inet_service", addr_type(f)),
        "verdict",
    );
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
    for (name, base) in &hooks {
        b.add_chain(f, t, name, Some(base));
        b.flush_chain(f, t, name);
        for r in base_rules(f, att.conf.conditions(f)) {
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
    add_own(&mut b, att);
    Nft.apply(
        &b,
        "installing port mappings in nftables table cni_hostport",
    )?;
    Ok(())
}

/// The attachment's chain, rules and verdict-map elements.
fn add_own(b: &mut Batch, att: &FamilyAttachment) {
    let (f, t) = (att.family, NFT_TABLE);
    let chain = att.chain();
    b.add_chain(f, t, &chain, None);
    b.flush_chain(f, t, &chain);
    for r in att.nft_chain_rules() {
        b.add_rule(f, t, &chain, &r);
    }
    for (map, element) in att.nft_elements() {
        b.add_element(f, t, map, &[element]);
    }
}

/// Removes the attachment's chain and map elements in `family`; false when there was none.
pub fn del(family: Family, chain: &str) -> Result<bool> {
    let Some(doc) = Nft.list_json(
        &["chain", family.nft(), NFT_TABLE, chain],
        "reading the attachment's nft chain",
    )?
    else {
        return Ok(false);
    };
    let mut keys: Vec<(&'static str, String)> = Vec::new();
    for r in listed_rules(&doc) {
        if let Some(k) = r.comment.as_deref().and_then(parse_nft_key_comment) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    if del_known(family, chain, &keys).is_ok() {
        return Ok(true);
    }
    // Some element is gone or was never ours: find every element that jumps to the chain.
    let mut b = Batch::new();
    for map in [NFT_ANY_MAP, NFT_HOSTIP_MAP] {
        let text = Nft.list_text(
            &["map", family.nft(), NFT_TABLE, map],
            "reading a cni_hostport map",
        )?;
        let keys = elements_jumping_to(text.as_deref().unwrap_or(""), chain);
        b.delete_element(family, NFT_TABLE, map, &keys);
    }
    b.flush_chain(family, NFT_TABLE, chain);
    b.delete_chain(family, NFT_TABLE, chain);
    Nft.apply(&b, "removing port mappings")?;
    Ok(true)
}

/// Removes the chain and its map elements in one transaction when the keys are known; fails
/// without changing anything when one of them is missing.
pub fn del_known(family: Family, chain: &str, keys: &[(&'static str, String)]) -> Result<()> {
    let mut fast = Batch::new();
    for (map, key) in keys {
        fast.delete_element(family, NFT_TABLE, map, std::slice::from_ref(key));
    }
    fast.flush_chain(family, NFT_TABLE, chain);
    fast.delete_chain(family, NFT_TABLE, chain);
    Nft.apply(&fast, "removing port mappings")?;
    Ok(())
}

/// The reference's nftables portmap chains; its rules carry the container ID as comment.
const REFERENCE_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

/// Removes rules the reference's nftables backend installed for `container_id` (found by
/// their comment). Reads the reference's chains only when its `hostports` chain exists.
pub fn del_reference_rules(family: Family, container_id: &str) -> Result<bool> {
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
    let Some(start) = text.find("elements = {") else {
        return Vec::new();
    };
    let body = &text[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',')
        .filter_map(|e| {
            let (key, verdict) = e.split_once(':')?;
            (verdict.trim() == format!("jump {chain}")).then(|| key.trim().to_string())
        })
        .collect()
}

/// Verifies the attachment's chain, its map elements and ferry's base chains.
pub fn check(att: &FamilyAttachment) -> Result<()> {
    let f = att.family;
    let chain = att.chain();
    let missing = |what: String| {
        Error::new(
            code::FIREWALL,
            format!("port mappings of container {}: {what}", att.container_id),
        )
    };
    let doc = Nft
        .list_json(
            &["chain", f.nft(), NFT_TABLE, &chain],
            "checking port mappings",
        )?
        .ok_or_else(|| {
            missing(format!(
                "nft chain {} {NFT_TABLE} {chain} does not exist",
                f.nft()
            ))
        })?;
    let listed = listed_rules(&doc);
    let expected = att.nft_chain_rules();
    if listed.len() != expected.len() {
        return Err(missing(format!(
            "chain {chain} has {} rules, expected {}",
            listed.len(),
            expected.len()
        )));
    }
    for (map, element) in att.nft_elements() {
        let text = Nft
            .list_text(&["map", f.nft(), NFT_TABLE, map], "checking port mappings")?
            .unwrap_or_default();
        let key = element.split(" : ").next().unwrap_or_default().to_string();
        if !elements_jumping_to(&text, &chain).contains(&key) {
            return Err(missing(format!("map {map} has no element `{element}`")));
        }
    }
    let mut hooks = vec![NFT_PREROUTING, NFT_OUTPUT];
    if att.conf.snat {
        hooks.push(NFT_MASQUERADING);
    }
    for hook in hooks {
        let text = Nft.list_text(
            &["chain", f.nft(), NFT_TABLE, hook],
            "checking port mappings",
        )?;
        if text.as_deref().is_none_or(|t| !t.contains("hook")) {
            return Err(missing(format!(
                "base chain {hook} is missing from table {} {NFT_TABLE}",
                f.nft()
            )));
        }
    }
    Ok(())
}

/// True when the attachment's chain exists.
pub fn chain_exists(family: Family, chain: &str) -> bool {
    matches!(
        Nft.list_text(
            &["chain", family.nft(), NFT_TABLE, chain],
            "reading a chain"
        ),
        Ok(Some(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_elements_by_verdict() {
        let text = "table ip cni_hostport {\n\tmap ferry_hostports {\n\t\ttype inet_proto . inet_service : verdict\n\t\telements = { tcp . 8080 : jump CNI-DN-a,\n\t\t\t     udp . 53 : jump CNI-DN-b, tcp . 1 : jump CNI-DN-a }\n\t}\n}\n";
        assert_eq!(
            elements_jumping_to(text, "CNI-DN-a"),
            vec!["tcp . 8080", "tcp . 1"]
        );
    }

    #[test]
    fn base_rules_render_vmap_lookups() {
        let r = base_rules(Family::V4, &["iifname".into(), "\"eth0\"".into()]);
        assert_eq!(
            r[0],
            "iifname \"eth0\" fib daddr type local ip daddr . meta l4proto . th dport vmap @ferry_hostip_hostports"
        );
    }
}
