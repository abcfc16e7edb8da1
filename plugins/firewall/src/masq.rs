//! ipMasq: masquerade a container's traffic that leaves its subnet, with the exact chain,
//! table and comment names the reference plugins use, so that ferry removes rules the
//! reference bridge created and the reference removes ferry's (nodes upgrade in place and
//! runtimes may DEL with a different plugin build than the one that did the ADD).
//!
//! Two layouts, both compatible:
//! - iptables (`nat` table): a chain `CNI-<hash>` per (network, container) holding
//!   `-d <subnet> -j ACCEPT` and `! -d <multicast> -j MASQUERADE`, jumped to from
//!   POSTROUTING by `-s <ip> -j CNI-<hash>`; every rule carries the comment
//!   `name: "<net>" id: "<id>"`.
//! - nftables: table `inet cni_plugins_masquerade`, one rule per attachment in chain
//!   `masq_checks`, found again by the hash at the start of its comment.
//!
//! The caller computes the names ([`MasqNames`]); rendering is pure and golden-tested;
//! applying runs one listing and one atomic batch per family.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::error::Result;
use crate::executor::{run, run_checked};
use crate::BackendKind;

/// nftables table of the reference's ipMasq. Must never change: existing nodes have it.
pub const NFT_TABLE: &str = "cni_plugins_masquerade";
/// nftables chain holding one masquerade rule per attachment (reference name).
pub const NFT_CHAIN: &str = "masq_checks";
/// Longest comment nft accepts (the reference truncates to it).
pub const NFT_COMMENT_MAX: usize = 128;

/// The identifiers of one attachment's ipMasq rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqNames {
    /// iptables chain, `CNI-` + 24 hex of sha512(network + containerID).
    pub chain: String,
    /// iptables comment, `name: "<net>" id: "<id>"`.
    pub comment: String,
    /// Network part of the nft comment: 16 hex of sha512(network).
    pub nft_network_hash: String,
    /// Full nft comment: `<nethash>-<insthash>, net: <net>, if: <if>, id: <id>` (≤128).
    pub nft_comment: String,
}

impl MasqNames {
    /// The prefix that identifies this one attachment's nft rule.
    fn nft_instance_prefix(&self) -> &str {
        self.nft_comment
            .split(',')
            .next()
            .unwrap_or(&self.nft_comment)
    }
}

fn multicast(v6: bool) -> &'static str {
    if v6 {
        "ff00::/8"
    } else {
        "224.0.0.0/4"
    }
}

/// Quotes a comment the way iptables-save prints it (and iptables-restore reads it).
fn ipt_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn host_net(addr: &IpNet) -> IpNet {
    IpNet::new(addr.addr(), if addr.addr().is_ipv4() { 32 } else { 128 }).unwrap_or(*addr)
}

/// What `iptables-save -t nat` told us about one chain.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IptState {
    /// The chain exists.
    pub chain_exists: bool,
    /// POSTROUTING rules (without `-A POSTROUTING`) that jump to the chain.
    pub jumps: Vec<String>,
}

/// Reads the chain's state out of `iptables-save -t nat` output.
pub fn ipt_state(save: &str, chain: &str) -> IptState {
    let decl = format!(":{chain} ");
    let jump = format!(" -j {chain}");
    let mut st = IptState::default();
    for line in save.lines() {
        if line.starts_with(&decl) {
            st.chain_exists = true;
        } else if let Some(spec) = line.strip_prefix("-A POSTROUTING ") {
            if spec.ends_with(&jump) {
                st.jumps.push(spec.to_string());
            }
        }
    }
    st
}

/// iptables-restore --noflush input that (re)installs the rules for `addrs` (one family),
/// replacing whatever an earlier ADD of the same attachment left.
pub fn render_ipt_setup(names: &MasqNames, addrs: &[IpNet], state: &IptState) -> String {
    let c = ipt_quote(&names.comment);
    let chain = &names.chain;
    let mut out = String::from("*nat\n");
    // Declaring an existing chain under --noflush flushes it: re-ADD stays idempotent.
    out.push_str(&format!(":{chain} - [0:0]\n"));
    for spec in &state.jumps {
        out.push_str(&format!("-D POSTROUTING {spec}\n"));
    }
    for a in addrs {
        let v6 = a.addr().is_ipv6();
        out.push_str(&format!(
            "-A {chain} -d {} -m comment --comment {c} -j ACCEPT\n",
            a.trunc()
        ));
        out.push_str(&format!(
            "-A {chain} ! -d {} -m comment --comment {c} -j MASQUERADE\n",
            multicast(v6)
        ));
    }
    for a in addrs {
        out.push_str(&format!(
            "-A POSTROUTING -s {} -m comment --comment {c} -j {chain}\n",
            host_net(a)
        ));
    }
    out.push_str("COMMIT\n");
    out
}

/// iptables-restore --noflush input that removes the chain and every POSTROUTING jump to
/// it, whatever source address those jumps match (the netns may be gone, so the
/// container's addresses may be unknown). `None` when there is nothing to remove.
pub fn render_ipt_teardown(chain: &str, state: &IptState) -> Option<String> {
    if !state.chain_exists && state.jumps.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for spec in &state.jumps {
        out.push_str(&format!("-D POSTROUTING {spec}\n"));
    }
    if state.chain_exists {
        out.push_str(&format!(":{chain} - [0:0]\n-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Container IDs of `network` that own ipMasq chains, read from `iptables-save -t nat`:
/// `(chain, containerID)` for each chain whose rules carry this network's comment and
/// masquerade.
pub fn ipt_chains_of_network(save: &str, network: &str) -> Vec<(String, String)> {
    // `--comment "name: \"<net>\" id: \"` as iptables-save escapes it
    let prefix = format!("--comment \"name: \\\"{network}\\\" id: \\\"");
    let mut out = BTreeSet::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix("-A ") else {
            continue;
        };
        let Some((chain, spec)) = rest.split_once(' ') else {
            continue;
        };
        if !chain.starts_with("CNI-") || !spec.ends_with("-j MASQUERADE") {
            continue;
        }
        if let Some(pos) = spec.find(&prefix) {
            let after = &spec[pos + prefix.len()..];
            if let Some(end) = after.find("\\\"") {
                out.insert((chain.to_string(), after[..end].to_string()));
            }
        }
    }
    out.into_iter().collect()
}

/// One rule of the nft `masq_checks` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    /// Rule handle, for deletion.
    pub handle: u64,
    /// The rule's comment.
    pub comment: String,
}

/// Parses `nft -a list chain inet cni_plugins_masquerade masq_checks` output.
pub fn parse_nft_rules(listing: &str) -> Vec<NftRule> {
    let mut out = Vec::new();
    for line in listing.lines() {
        let Some(h) = line.rfind("# handle ") else {
            continue;
        };
        let Ok(handle) = line[h + 9..].trim().parse::<u64>() else {
            continue;
        };
        let Some(c) = line.find("comment \"") else {
            continue;
        };
        let rest = &line[c + 9..];
        let Some(end) = rest.rfind('"') else { continue };
        out.push(NftRule {
            handle,
            comment: rest[..end].to_string(),
        });
    }
    out
}

/// `nft -f -` input that ensures the reference's table layout and (re)installs this
/// attachment's masquerade rules, deleting `stale` handles in the same transaction.
pub fn render_nft_setup(names: &MasqNames, addrs: &[IpNet], stale: &[u64]) -> String {
    let t = format!("inet {NFT_TABLE}");
    let mut out = String::new();
    out.push_str(&format!(
        "add table {t} {{ comment \"Masquerading for plugins from github.com/containernetworking/plugins\" ; }}\n"
    ));
    out.push_str(&format!(
        "add chain {t} {NFT_CHAIN} {{ comment \"Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet\" ; }}\n"
    ));
    out.push_str(&format!(
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat ; }}\n"
    ));
    out.push_str(&format!("flush chain {t} postrouting\n"));
    out.push_str(&format!(
        "add rule {t} postrouting ip daddr == 224.0.0.0/4  return\n"
    ));
    out.push_str(&format!(
        "add rule {t} postrouting ip6 daddr == ff00::/8  return\n"
    ));
    out.push_str(&format!("add rule {t} postrouting goto {NFT_CHAIN}\n"));
    for h in stale {
        out.push_str(&format!("delete rule {t} {NFT_CHAIN} handle {h}\n"));
    }
    for a in addrs {
        let fam = if a.addr().is_ipv6() { "ip6" } else { "ip" };
        out.push_str(&format!(
            "add rule {t} {NFT_CHAIN} {fam} saddr == {} {fam} daddr != {} masquerade comment \"{}\"\n",
            a.addr(),
            a.trunc(),
            names.nft_comment
        ));
    }
    out
}

/// `nft -f -` input deleting `handles`; `None` when there is nothing to delete.
pub fn render_nft_delete(handles: &[u64]) -> Option<String> {
    if handles.is_empty() {
        return None;
    }
    Some(
        handles
            .iter()
            .map(|h| format!("delete rule inet {NFT_TABLE} {NFT_CHAIN} handle {h}\n"))
            .collect(),
    )
}

// ---- applying ----

fn save_tool(v6: bool) -> &'static str {
    if v6 {
        "ip6tables-save"
    } else {
        "iptables-save"
    }
}

fn restore_tool(v6: bool) -> &'static str {
    if v6 {
        "ip6tables-restore"
    } else {
        "iptables-restore"
    }
}

fn ipt_save(v6: bool, what: &str) -> Result<String> {
    run_checked(save_tool(v6), &["-t", "nat"], None, what)
}

fn nft_list() -> Result<Vec<NftRule>> {
    // A missing table or chain is the normal "nothing installed yet" case.
    let out = run(
        "nft",
        &["-a", "list", "chain", "inet", NFT_TABLE, NFT_CHAIN],
        None,
        "listing ipMasq rules",
    )?;
    if out.status != 0 {
        return Ok(Vec::new());
    }
    Ok(parse_nft_rules(&out.stdout))
}

/// Installs masquerading for `addrs` with `backend` (both families as needed).
pub fn setup(backend: BackendKind, names: &MasqNames, addrs: &[IpNet]) -> Result<()> {
    let what = format!("setting up ipMasq chain {}", names.chain);
    match backend {
        BackendKind::Iptables => {
            // The two families are independent tables and tools: do them side by side.
            let one = |v6: bool| -> Result<()> {
                let fam: Vec<IpNet> = addrs
                    .iter()
                    .copied()
                    .filter(|a| a.addr().is_ipv6() == v6)
                    .collect();
                if fam.is_empty() {
                    return Ok(());
                }
                let state = ipt_state(&ipt_save(v6, &what)?, &names.chain);
                let text = render_ipt_setup(names, &fam, &state);
                run_checked(restore_tool(v6), &["--noflush", "-w"], Some(&text), &what).map(|_| ())
            };
            let (r4, r6) = std::thread::scope(|s| {
                let t6 = s.spawn(|| one(true));
                let r4 = one(false);
                (r4, t6.join())
            });
            r4?;
            r6.unwrap_or_else(|_| {
                Err(crate::error::Error::tool(
                    &what,
                    "ip6tables-restore",
                    "worker thread panicked",
                    "",
                ))
            })
        }
        BackendKind::Nftables => {
            let prefix = names.nft_instance_prefix();
            let stale: Vec<u64> = nft_list()?
                .into_iter()
                .filter(|r| r.comment.starts_with(prefix))
                .map(|r| r.handle)
                .collect();
            let text = render_nft_setup(names, addrs, &stale);
            run_checked("nft", &["-f", "-"], Some(&text), &what).map(|_| ())
        }
    }
}

/// True when this attachment's masquerade rules are installed for every address in
/// `addrs` (CHECK).
pub fn is_present(backend: BackendKind, names: &MasqNames, addrs: &[IpNet]) -> Result<bool> {
    let what = format!("checking ipMasq chain {}", names.chain);
    match backend {
        BackendKind::Iptables => {
            for v6 in [false, true] {
                let fam: Vec<&IpNet> = addrs.iter().filter(|a| a.addr().is_ipv6() == v6).collect();
                if fam.is_empty() {
                    continue;
                }
                let state = ipt_state(&ipt_save(v6, &what)?, &names.chain);
                if !state.chain_exists {
                    return Ok(false);
                }
                for a in fam {
                    let src = format!("-s {} ", host_net(a));
                    if !state.jumps.iter().any(|j| j.starts_with(&src)) {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        }
        BackendKind::Nftables => {
            let n = nft_list()?
                .iter()
                .filter(|r| r.comment == names.nft_comment)
                .count();
            Ok(n >= addrs.len())
        }
    }
}

/// Removes this attachment's masquerading from both backends (the rules may have been
/// installed by another plugin build with another backend). Succeeds when nothing is there
/// and when a backend's tool is not installed.
pub fn teardown(names: &MasqNames) -> Result<()> {
    let what = format!("removing ipMasq chain {}", names.chain);
    let ipt = |v6: bool| -> Result<()> {
        if crate::executor::find_tool(save_tool(v6)).is_none() {
            return Ok(());
        }
        let state = ipt_state(&ipt_save(v6, &what)?, &names.chain);
        if let Some(text) = render_ipt_teardown(&names.chain, &state) {
            run_checked(restore_tool(v6), &["--noflush", "-w"], Some(&text), &what)?;
        }
        Ok(())
    };
    let nft = || -> Result<()> {
        if crate::executor::find_tool("nft").is_none() {
            return Ok(());
        }
        let prefix = names.nft_instance_prefix();
        let handles: Vec<u64> = nft_list()?
            .into_iter()
            .filter(|r| r.comment.starts_with(prefix))
            .map(|r| r.handle)
            .collect();
        if let Some(text) = render_nft_delete(&handles) {
            run_checked("nft", &["-f", "-"], Some(&text), &what)?;
        }
        Ok(())
    };
    // Three independent tables, three tools: look and clean in parallel.
    let results = std::thread::scope(|s| {
        let t6 = s.spawn(|| ipt(true));
        let tn = s.spawn(nft);
        let r4 = ipt(false);
        let panicked = || {
            Err(crate::error::Error::tool(
                &what,
                "ipMasq teardown",
                "worker thread panicked",
                "",
            ))
        };
        [
            r4,
            t6.join().unwrap_or_else(|_| panicked()),
            tn.join().unwrap_or_else(|_| panicked()),
        ]
    });
    results.into_iter().collect()
}

/// GC: removes ipMasq rules of `network` whose attachment is not valid. iptables rules are
/// keyed by container ID only (their comment has no ifname); nft rules by their full
/// comment. `names_of(container_id, ifname)` computes an attachment's names.
pub fn gc(
    network: &str,
    nft_network_hash: &str,
    valid: &[(String, String)],
    names_of: impl Fn(&str, &str) -> MasqNames,
) -> Result<()> {
    let what = format!("garbage-collecting ipMasq rules of network {network:?}");
    let valid_ids: BTreeSet<&str> = valid.iter().map(|(id, _)| id.as_str()).collect();
    for v6 in [false, true] {
        if crate::executor::find_tool(save_tool(v6)).is_none() {
            continue;
        }
        let save = ipt_save(v6, &what)?;
        for (chain, id) in ipt_chains_of_network(&save, network) {
            if valid_ids.contains(id.as_str()) {
                continue;
            }
            let state = ipt_state(&save, &chain);
            if let Some(text) = render_ipt_teardown(&chain, &state) {
                run_checked(restore_tool(v6), &["--noflush", "-w"], Some(&text), &what)?;
            }
        }
    }
    if crate::executor::find_tool("nft").is_some() {
        let keep: BTreeSet<String> = valid
            .iter()
            .map(|(id, ifn)| names_of(id, ifn).nft_comment)
            .collect();
        let handles: Vec<u64> = nft_list()?
            .into_iter()
            .filter(|r| r.comment.starts_with(nft_network_hash) && !keep.contains(&r.comment))
            .map(|r| r.handle)
            .collect();
        if let Some(text) = render_nft_delete(&handles) {
            run_checked("nft", &["-f", "-"], Some(&text), &what)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> MasqNames {
        MasqNames {
            chain: "CNI-2bbe0c48b91a7d1b8a6753a8".into(),
            comment: "name: \"test\" id: \"1234\"".into(),
            nft_network_hash: "aaaaaaaaaaaaaaaa".into(),
            nft_comment: "aaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb, net: test, if: eth0, id: 1234".into(),
        }
    }

    #[test]
    fn iptables_setup_golden() {
        let addrs = ["10.213.16.5/24".parse().unwrap()];
        let text = render_ipt_setup(&names(), &addrs, &IptState::default());
        assert_eq!(
            text,
            "*nat\n:CNI-2bbe0c48b91a7d1b8a6753a8 - [0:0]\n\
-A CNI-2bbe0c48b91a7d1b8a6753a8 -d 10.213.16.0/24 -m comment --comment \"name: \\\"test\\\" id: \\\"1234\\\"\" -j ACCEPT\n\
-A CNI-2bbe0c48b91a7d1b8a6753a8 ! -d 224.0.0.0/4 -m comment --comment \"name: \\\"test\\\" id: \\\"1234\\\"\" -j MASQUERADE\n\
-A POSTROUTING -s 10.213.16.5/32 -m comment --comment \"name: \\\"test\\\" id: \\\"1234\\\"\" -j CNI-2bbe0c48b91a7d1b8a6753a8\n\
COMMIT\n"
        );
    }

    #[test]
    fn iptables_teardown_removes_every_jump_whatever_the_source() {
        let save = "*nat\n:POSTROUTING ACCEPT [0:0]\n:CNI-2bbe0c48b91a7d1b8a6753a8 - [0:0]\n\
-A POSTROUTING -s 10.213.16.5/32 -m comment --comment \"name: \\\"test\\\" id: \\\"1234\\\"\" -j CNI-2bbe0c48b91a7d1b8a6753a8\n\
-A POSTROUTING -s 10.213.16.0/24 -m comment --comment \"name: \\\"test\\\" id: \\\"1234\\\"\" -j CNI-2bbe0c48b91a7d1b8a6753a8\n\
-A POSTROUTING -s 10.9.9.9/32 -j CNI-2bbe0c48b91a7d1b8a6753a8x\n\
-A CNI-2bbe0c48b91a7d1b8a6753a8 ! -d 224.0.0.0/4 -m comment --comment \"name: \\\"test\\\" id: \\\"1234\\\"\" -j MASQUERADE\n\
COMMIT\n";
        let st = ipt_state(save, "CNI-2bbe0c48b91a7d1b8a6753a8");
        assert!(st.chain_exists);
        assert_eq!(st.jumps.len(), 2);
        let text = render_ipt_teardown("CNI-2bbe0c48b91a7d1b8a6753a8", &st).unwrap();
        assert!(text.starts_with("*nat\n-D POSTROUTING -s 10.213.16.5/32 "));
        assert!(text.ends_with(
            ":CNI-2bbe0c48b91a7d1b8a6753a8 - [0:0]\n-X CNI-2bbe0c48b91a7d1b8a6753a8\nCOMMIT\n"
        ));
        assert!(render_ipt_teardown("CNI-0", &IptState::default()).is_none());
        assert_eq!(
            ipt_chains_of_network(save, "test"),
            vec![(
                "CNI-2bbe0c48b91a7d1b8a6753a8".to_string(),
                "1234".to_string()
            )]
        );
        assert!(ipt_chains_of_network(save, "tes").is_empty());
    }

    #[test]
    fn nft_setup_golden_and_listing_parse() {
        let addrs = ["fd00:213:16::5/64".parse().unwrap()];
        let text = render_nft_setup(&names(), &addrs, &[7]);
        assert!(text.contains("add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority srcnat ; }\n"));
        assert!(text.contains("delete rule inet cni_plugins_masquerade masq_checks handle 7\n"));
        assert!(text.ends_with(
            "add rule inet cni_plugins_masquerade masq_checks ip6 saddr == fd00:213:16::5 ip6 daddr != fd00:213:16::/64 masquerade comment \"aaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb, net: test, if: eth0, id: 1234\"\n"
        ));
        let listing = "table inet cni_plugins_masquerade {\n\tchain masq_checks { # handle 2\n\t\tip saddr 10.213.16.5 ip daddr != 10.213.16.0/24 masquerade comment \"aaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb, net: test, if: eth0, id: 1234\" # handle 9\n\t}\n}\n";
        assert_eq!(
            parse_nft_rules(listing),
            vec![NftRule {
                handle: 9,
                comment: names().nft_comment
            }]
        );
        assert_eq!(
            names().nft_instance_prefix(),
            "aaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb"
        );
    }
}
