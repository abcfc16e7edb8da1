//! The rules of one attachment, as data. Pure: no I/O, unit-tested against golden text.
//!
//! The iptables layout is the reference plugin's, name for name, so either plugin can tear
//! down what the other installed:
//!
//! ```text
//! PREROUTING, OUTPUT:  -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! CNI-HOSTPORT-DNAT:   -p tcp -m comment --comment "dnat name: …" -m multiport --dports 8080 -j CNI-DN-<hash>
//! CNI-DN-<hash>:       hairpin/localhost → CNI-HOSTPORT-SETMARK, then DNAT
//! POSTROUTING (top):   -j CNI-HOSTPORT-MASQ  (mark 0x2000 → MASQUERADE)
//! ```
//!
//! The nftables layout lives in table `cni_hostport` (the reference's) and has no
//! per-attachment chain: a few fixed base-chain rules look the packet up in data maps and
//! sets, and an attachment is only elements (each commented with its `CNI-DN-<hash>` name):
//!
//! ```text
//! ferry_dnat_prerouting, ferry_dnat_output (nat, fib daddr type local):
//!   ip saddr & <mask P> . ip daddr . meta l4proto . th dport @ferry_hostip_hairpin_<P>  mark
//!   ip saddr & <mask P> . meta l4proto . th dport @ferry_hairpin_<P>                    mark
//!   dnat ip to ip daddr . meta l4proto . th dport map @ferry_hostip_dnat
//!   dnat ip to meta l4proto . th dport map @ferry_dnat
//!   ip daddr != 127.0.0.0/8 dnat ip to meta l4proto . th dport map @ferry_dnat_nonloopback
//! ferry_masquerading (postrouting): meta mark & 0x2000 == 0x2000 masquerade
//! ```
//!
//! One pair of hairpin rules exists per source prefix length in use (the container subnet's,
//! 32 or 128 for `127.0.0.1`, 0 for `masqAll`), declared when first needed. An ADD adds
//! elements to hash maps and sets only: no chain, no jump, so neither nft's cache nor the
//! kernel's commit (which re-validates every chain reachable through a jump) grows with the
//! number of mappings. (Interval sets would avoid the per-prefix rules, but the kernel's
//! concatenated-range set copies itself on every change: ~40 ms per ADD at 1,000 mappings.)

use crate::config::{Mapping, PortMapConfig};
use firewall::{Family, Match, Protocol, Rule, Verdict};
use ipnet::IpNet;
use sha2::{Digest, Sha512};
use std::net::IpAddr;

/// Shared DNAT chain. Never rename: nodes upgraded from the reference have it.
pub const TOP_DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// Shared chain that sets the masquerade mark (reference name).
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
/// Shared chain that masquerades marked packets (reference name).
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// The reference's comments on the shared rules, kept so both plugins see the same rules.
pub const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";
/// See [`SETMARK_COMMENT`].
pub const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";

/// nftables table (the reference's name, one per family: `ip` and `ip6`).
pub const NFT_TABLE: &str = "cni_hostport";
/// The reference's table comment.
pub const NFT_TABLE_COMMENT: &str = "CNI portmap plugin";
/// ferry's DNAT map for mappings on every host address: `proto . port : addr . port`.
pub const NFT_DNAT_MAP: &str = "ferry_dnat";
/// The same for attachments whose loopback the userland proxy serves: its rule skips
/// loopback destinations.
pub const NFT_DNAT_NONLOOPBACK_MAP: &str = "ferry_dnat_nonloopback";
/// ferry's DNAT map for mappings limited to one host address: `addr . proto . port : addr . port`.
pub const NFT_HOSTIP_DNAT_MAP: &str = "ferry_hostip_dnat";
/// ferry's base chains (distinct from the reference's `prerouting`/`output`, which its ADD
/// flushes, and from the previous ferry layout's `ferry_prerouting`/`ferry_output`, which
/// keep serving attachments made before an upgrade until they are deleted).
pub const NFT_PREROUTING: &str = "ferry_dnat_prerouting";
/// See [`NFT_PREROUTING`].
pub const NFT_OUTPUT: &str = "ferry_dnat_output";
/// ferry's masquerading chain (the same name and rule in the previous layout).
pub const NFT_MASQUERADING: &str = "ferry_masquerading";

/// The previous ferry nft layout (verdict maps jumping to per-attachment chains): still
/// recognised, so DEL and GC remove attachments made before an upgrade.
pub mod legacy {
    /// Verdict map for mappings on every host address: `proto . port : jump CNI-DN-…`.
    pub const ANY_MAP: &str = "ferry_hostports";
    /// Verdict map for mappings limited to one host address.
    pub const HOSTIP_MAP: &str = "ferry_hostip_hostports";
    /// Its base chains.
    pub const PREROUTING: &str = "ferry_prerouting";
    /// See [`PREROUTING`].
    pub const OUTPUT: &str = "ferry_output";
    /// Prefix of the comment on its DNAT rules that recorded the map key.
    pub const KEY_COMMENT: &str = "ferry";
}

/// Longest iptables chain name the reference generates.
const MAX_CHAIN_LEN: usize = 28;

/// The per-attachment chain: `CNI-DN-` + sha512(network + containerID) in hex, 28 chars —
/// the reference's `MustFormatChainNameWithPrefix(name, id, "DN-")`.
pub fn dnat_chain_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut name = format!("CNI-DN-{hex}");
    name.truncate(MAX_CHAIN_LEN);
    name
}

/// The comment on the entry rules, as the reference writes it (trimmed to iptables' 255).
pub fn dnat_comment(network: &str, container_id: &str) -> String {
    let c = format!("dnat name: \"{network}\" id: \"{container_id}\"");
    if c.len() <= 255 {
        return c;
    }
    let mut end = 253;
    while !c.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &c[..end])
}

/// Parses an entry comment back into (network, container ID).
pub fn parse_dnat_comment(comment: &str) -> Option<(String, String)> {
    let rest = comment.strip_prefix("dnat name: \"")?;
    let (name, rest) = rest.split_once("\" id: \"")?;
    let id = rest.strip_suffix('"')?;
    Some((name.to_string(), id.to_string()))
}

/// One attachment in one family: what the rules are built from.
#[derive(Debug, Clone)]
pub struct FamilyAttachment<'a> {
    /// The config.
    pub conf: &'a PortMapConfig,
    /// Container ID.
    pub container_id: &'a str,
    /// The family of `container`.
    pub family: Family,
    /// The container's address with its prefix length (from prevResult).
    pub container: IpNet,
}

impl FamilyAttachment<'_> {
    /// The mappings that apply in this family (a `hostIP` of the other family is skipped).
    /// With `userlandProxy` a mapping limited to a loopback address has no kernel rules:
    /// the proxy daemon alone serves it.
    pub fn mappings(&self) -> Vec<Mapping> {
        let kernel_loopback = self.conf.kernel_serves_loopback(self.family);
        self.conf
            .mappings
            .iter()
            .copied()
            .filter(|m| m.applies_to(self.family))
            .filter(|m| kernel_loopback || !m.destination().is_some_and(|d| d.is_loopback()))
            .collect()
    }

    /// The per-attachment chain name.
    pub fn chain(&self) -> String {
        dnat_chain_name(&self.conf.network, self.container_id)
    }

    fn setmark_target(&self) -> String {
        self.conf
            .external_set_mark_chain
            .clone()
            .unwrap_or_else(|| SETMARK_CHAIN.to_string())
    }

    /// Rules of `CNI-HOSTPORT-DNAT` that jump to this attachment's chain.
    pub fn iptables_entry_rules(&self) -> Vec<Rule> {
        let ports: Vec<(Protocol, u16)> = self
            .mappings()
            .iter()
            .map(|m| (m.protocol, m.host_port))
            .collect();
        entry_rules(
            &dnat_comment(&self.conf.network, self.container_id),
            self.conf.conditions(self.family),
            &ports,
            &self.chain(),
        )
    }

    /// Rules of the per-attachment chain: for each mapping the hairpin and localhost mark
    /// rules (mark rules must come first), then the DNAT.
    pub fn iptables_chain_rules(&self) -> Vec<Rule> {
        let mark = Verdict::Jump(self.setmark_target());
        let mut rules = Vec::new();
        for m in self.mappings() {
            let mut base = vec![
                Match::Protocol(m.protocol),
                Match::DestinationPort(m.host_port),
            ];
            if let Some(dst) = m.destination() {
                base.push(Match::Destination {
                    net: IpNet::from(dst),
                    negate: false,
                });
            }
            for source in self.hairpin_sources() {
                let mut hairpin = base.clone();
                if let Some(net) = source {
                    hairpin.push(Match::Source { net, negate: false });
                }
                rules.push(Rule::new(hairpin, mark.clone()));
            }
            let mut dnat = base;
            if !self.conf.kernel_serves_loopback(self.family) {
                // Docker's model: loopback is the proxy daemon's (the kernel cannot NAT ::1,
                // and 127.0.0.1 would need route_localnet).
                dnat.push(Match::Destination {
                    net: loopback_net(self.family),
                    negate: true,
                });
            }
            rules.push(Rule::new(
                dnat,
                Verdict::Dnat {
                    addr: self.container.addr(),
                    port: Some(m.container_port),
                },
            ));
        }
        rules
    }

    /// Sources whose traffic to a mapped port must be masqueraded (`None` = any source):
    /// the container's subnet (hairpin), and `127.0.0.1` when the kernel serves IPv4
    /// loopback; nothing without `snat`.
    fn hairpin_sources(&self) -> Vec<Option<IpNet>> {
        if !self.conf.snat {
            return Vec::new();
        }
        if self.conf.masq_all {
            return vec![None];
        }
        let mut out = vec![Some(self.container.trunc())];
        if self.family == Family::V4 && self.conf.kernel_serves_loopback(Family::V4) {
            out.push(Some("127.0.0.1/32".parse().expect("literal")));
        }
        out
    }

    /// Source prefix lengths whose hairpin rules this attachment needs (0 = any source).
    pub fn nft_hairpin_prefixes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self
            .hairpin_sources()
            .iter()
            .map(|s| s.map_or(0, |n| n.prefix_len()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The attachment's elements in ferry's nft maps and sets, in install order.
    pub fn nft_elements(&self) -> Vec<NftElement> {
        let addr = self.container.addr();
        let mut out: Vec<NftElement> = Vec::new();
        let mut push = |e: NftElement| {
            if !out.iter().any(|o| o.set == e.set && o.key == e.key) {
                out.push(e);
            }
        };
        for m in self.mappings() {
            let proto_port = format!("{} . {}", m.protocol.as_str(), m.host_port);
            let (map, key) = match m.destination() {
                Some(d) => (NFT_HOSTIP_DNAT_MAP, format!("{d} . {proto_port}")),
                None if self.conf.kernel_serves_loopback(self.family) => {
                    (NFT_DNAT_MAP, proto_port.clone())
                }
                None => (NFT_DNAT_NONLOOPBACK_MAP, proto_port.clone()),
            };
            push(NftElement {
                set: map.to_string(),
                key,
                data: Some(format!("{addr} . {}", m.container_port)),
            });
            for source in self.hairpin_sources() {
                let (prefix, net_addr) = match source {
                    Some(n) => (n.prefix_len(), n.trunc().addr()),
                    None => (0, unspecified(self.family)),
                };
                let key = match m.destination() {
                    Some(d) => format!("{net_addr} . {d} . {proto_port}"),
                    None => format!("{net_addr} . {proto_port}"),
                };
                push(NftElement {
                    set: nft_hairpin_set(m.destination().is_some(), prefix),
                    key,
                    data: None,
                });
            }
        }
        out
    }
}

/// One element of ferry's nft layout: the set or map, its key, and for maps its data
/// (`10.0.0.5 . 80`), all as nft prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftElement {
    /// Set or map name.
    pub set: String,
    /// Key, e.g. `tcp . 8080`.
    pub key: String,
    /// Map data, e.g. `10.0.0.5 . 80`; `None` in a set.
    pub data: Option<String>,
}

impl NftElement {
    /// The element as `add element` takes it, carrying the attachment's chain name as
    /// comment so DEL can find it by listing when the index has no record.
    pub fn render(&self, comment: &str) -> String {
        match &self.data {
            Some(d) => format!("{} comment \"{comment}\" : {d}", self.key),
            None => format!("{} comment \"{comment}\"", self.key),
        }
    }
}

/// The hairpin set for a source prefix length, for mappings with or without `hostIP`.
pub fn nft_hairpin_set(hostip: bool, prefix: u8) -> String {
    if hostip {
        format!("ferry_hostip_hairpin_{prefix}")
    } else {
        format!("ferry_hairpin_{prefix}")
    }
}

/// Reads a hairpin set name back into (hostIP variant, prefix length).
pub fn parse_nft_hairpin_set(name: &str) -> Option<(bool, u8)> {
    let (hostip, rest) = match name.strip_prefix("ferry_hostip_hairpin_") {
        Some(r) => (true, r),
        None => (false, name.strip_prefix("ferry_hairpin_")?),
    };
    Some((hostip, rest.parse().ok()?))
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

fn nft_addr_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// `(name, "set" | "map", type)` of every map and set of ferry's layout for these hairpin
/// prefix lengths, as `add set`/`add map` take them.
pub fn nft_declarations(family: Family, prefixes: &[u8]) -> Vec<(String, &'static str, String)> {
    let a = nft_addr_type(family);
    let mut out = vec![
        (
            NFT_HOSTIP_DNAT_MAP.to_string(),
            "map",
            format!("{a} . inet_proto . inet_service : {a} . inet_service"),
        ),
        (
            NFT_DNAT_MAP.to_string(),
            "map",
            format!("inet_proto . inet_service : {a} . inet_service"),
        ),
        (
            NFT_DNAT_NONLOOPBACK_MAP.to_string(),
            "map",
            format!("inet_proto . inet_service : {a} . inet_service"),
        ),
    ];
    for p in prefixes {
        out.push((
            nft_hairpin_set(true, *p),
            "set",
            format!("{a} . {a} . inet_proto . inet_service"),
        ));
        out.push((
            nft_hairpin_set(false, *p),
            "set",
            format!("{a} . inet_proto . inet_service"),
        ));
    }
    out
}

/// The masked source address expression for a prefix length: `ip saddr & 255.255.255.0`,
/// or the bare `ip saddr` for a host prefix.
fn masked_source(family: Family, prefix: u8) -> String {
    let sel = family.nft();
    let full = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    if prefix >= full {
        return format!("{sel} saddr");
    }
    let mask = match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::from(
            u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0),
        )),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0),
        )),
    };
    format!("{sel} saddr & {mask}")
}

/// The rules of ferry's nft base chains (prerouting and output alike): hairpin marks per
/// prefix length first, then the DNAT lookups, most specific first. A lookup miss falls
/// through; a DNAT ends the chain.
pub fn nft_base_rules(
    family: Family,
    conditions: &[String],
    mark: u32,
    prefixes: &[u8],
) -> Vec<String> {
    let sel = family.nft();
    let mut pre = conditions.join(" ");
    if !pre.is_empty() {
        pre.push(' ');
    }
    pre.push_str("fib daddr type local");
    let set_mark = format!("meta mark set meta mark | {mark:#010x}");
    let mut rules = Vec::new();
    for p in prefixes {
        let src = masked_source(family, *p);
        rules.push(format!(
            "{pre} {src} . {sel} daddr . meta l4proto . th dport @{} {set_mark}",
            nft_hairpin_set(true, *p)
        ));
        rules.push(format!(
            "{pre} {src} . meta l4proto . th dport @{} {set_mark}",
            nft_hairpin_set(false, *p)
        ));
    }
    rules.push(format!(
        "{pre} dnat {sel} to {sel} daddr . meta l4proto . th dport map @{NFT_HOSTIP_DNAT_MAP}"
    ));
    rules.push(format!(
        "{pre} dnat {sel} to meta l4proto . th dport map @{NFT_DNAT_MAP}"
    ));
    let lo = loopback_net(family).trunc();
    let lo = if lo.prefix_len() == lo.max_prefix_len() {
        lo.addr().to_string()
    } else {
        lo.to_string()
    };
    rules.push(format!(
        "{pre} {sel} daddr != {lo} dnat {sel} to meta l4proto . th dport map @{NFT_DNAT_NONLOOPBACK_MAP}"
    ));
    rules
}

/// The loopback network of a family: `127.0.0.0/8` or `::1/128`.
pub fn loopback_net(family: Family) -> IpNet {
    match family {
        Family::V4 => {
            IpNet::from(ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).expect("/8"))
        }
        Family::V6 => IpNet::from(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
    }
}

/// The entry rules for a list of (protocol, host port): grouped by protocol in name order,
/// at most 15 ports per multiport match, as the reference builds them.
pub fn entry_rules(
    comment: &str,
    conditions: &[String],
    ports: &[(Protocol, u16)],
    chain: &str,
) -> Vec<Rule> {
    let mut protos: Vec<Protocol> = ports.iter().map(|(p, _)| *p).collect();
    protos.sort_by_key(|p| p.as_str());
    protos.dedup();
    let mut rules = Vec::new();
    for proto in protos {
        let list: Vec<u16> = ports
            .iter()
            .filter(|(p, _)| *p == proto)
            .map(|(_, port)| *port)
            .collect();
        for chunk in list.chunks(15) {
            let mut matches = vec![
                Match::Comment(comment.to_string()),
                Match::Protocol(proto),
                Match::DestinationPorts(chunk.to_vec()),
            ];
            if !conditions.is_empty() {
                matches.push(Match::Raw(conditions.to_vec()));
            }
            rules.push(Rule::new(matches, Verdict::Jump(chain.to_string())));
        }
    }
    rules
}

/// `PREROUTING`/`OUTPUT` → `CNI-HOSTPORT-DNAT` for local destinations only, so forwarded
/// traffic is never hijacked.
pub fn top_jump_rule() -> Rule {
    Rule::new(
        vec![Match::DestinationLocal],
        Verdict::Jump(TOP_DNAT_CHAIN.to_string()),
    )
}

/// The single rule of `CNI-HOSTPORT-SETMARK`.
pub fn setmark_rule(mark: u32) -> Rule {
    Rule::new(
        vec![Match::Comment(SETMARK_COMMENT.into())],
        Verdict::SetMarkBits(mark),
    )
}

/// The `POSTROUTING` rule that sends everything through `CNI-HOSTPORT-MASQ`.
pub fn masq_jump_rule() -> Rule {
    Rule::new(
        vec![Match::Comment(MASQ_COMMENT.into())],
        Verdict::Jump(MASQ_CHAIN.to_string()),
    )
}

/// The single rule of `CNI-HOSTPORT-MASQ` (and of ferry's nft masquerading chain).
pub fn masq_rule(mark: u32) -> Rule {
    Rule::new(vec![Match::MarkBits(mark)], Verdict::Masquerade)
}

/// The previous layout's verdict map and key of a mapping (DEL of attachments made before
/// an upgrade, from their index record).
pub fn legacy_nft_key(m: &Mapping) -> (&'static str, String) {
    match m.destination() {
        Some(addr) => (
            legacy::HOSTIP_MAP,
            format!("{addr} . {} . {}", m.protocol.as_str(), m.host_port),
        ),
        None => (
            legacy::ANY_MAP,
            format!("{} . {}", m.protocol.as_str(), m.host_port),
        ),
    }
}

/// Reads the previous layout's DNAT rule comment (`ferry tcp 8080 [addr]`) back into its
/// (map, key), for DEL of attachments made before an upgrade.
pub fn parse_legacy_nft_key_comment(comment: &str) -> Option<(&'static str, String)> {
    let mut words = comment.split_whitespace();
    if words.next()? != legacy::KEY_COMMENT {
        return None;
    }
    let protocol = Protocol::parse(words.next()?)?;
    let host_port: u16 = words.next()?.parse().ok()?;
    let host_ip = match words.next() {
        Some(a) => Some(a.parse::<IpAddr>().ok()?),
        None => None,
    };
    Some(legacy_nft_key(&Mapping {
        protocol,
        host_port,
        container_port: 1,
        host_ip,
    }))
}

/// Reads the (protocol, host port) of the DNAT rules of a saved per-attachment chain, in
/// chain order: enough to rebuild its entry rules when DEL is not given the mappings.
pub fn ports_of_saved_chain(rules: &[Vec<String>]) -> Vec<(Protocol, u16)> {
    let mut out = Vec::new();
    for args in rules {
        if !args.windows(2).any(|w| w[0] == "-j" && w[1] == "DNAT") {
            continue;
        }
        let value = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
        let proto = value("-p").and_then(|p| Protocol::parse(&p));
        let port = value("--dport").and_then(|p| p.parse::<u16>().ok());
        if let (Some(proto), Some(port)) = (proto, port) {
            out.push((proto, port));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate_entry;
    use crate::config::PortMapEntry;
    use firewall::iptables::rule_args;

    fn conf(snat: bool, entries: &[(i64, i64, &str, &str)]) -> PortMapConfig {
        crate::config::test_config("podman", snat, entries)
    }

    #[test]
    fn chain_name_is_the_reference_hash() {
        // Value computed with the reference's utils.MustFormatChainNameWithPrefix.
        let name = dnat_chain_name("podman", "c1");
        assert_eq!(name, "CNI-DN-e66d029a8054f32421007");
        assert!(name.starts_with("CNI-DN-"));
        assert_eq!(name, dnat_chain_name("podman", "c1"));
        assert_ne!(name, dnat_chain_name("podman", "c2"));
    }

    #[test]
    fn iptables_rules_golden() {
        let c = conf(
            true,
            &[
                (8080, 80, "tcp", ""),
                (8053, 53, "udp", "192.0.2.1"),
                (9, 9, "tcp", "fd00::1"),
            ],
        );
        let a = FamilyAttachment {
            conf: &c,
            container_id: "c1",
            family: Family::V4,
            container: "10.213.32.5/24".parse().unwrap(),
        };
        let chain = a.chain();
        let text: Vec<String> = a
            .iptables_entry_rules()
            .iter()
            .chain(a.iptables_chain_rules().iter())
            .map(|r| rule_args(r).join(" "))
            .collect();
        let expected = [
            format!("-p tcp -m comment --comment dnat name: \"podman\" id: \"c1\" -m multiport --dports 8080 -j {chain}"),
            format!("-p udp -m comment --comment dnat name: \"podman\" id: \"c1\" -m multiport --dports 8053 -j {chain}"),
            "-s 10.213.32.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK".to_string(),
            "-s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK".to_string(),
            "-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.213.32.5:80".to_string(),
            "-s 10.213.32.0/24 -d 192.0.2.1/32 -p udp -m udp --dport 8053 -j CNI-HOSTPORT-SETMARK".to_string(),
            "-s 127.0.0.1/32 -d 192.0.2.1/32 -p udp -m udp --dport 8053 -j CNI-HOSTPORT-SETMARK".to_string(),
            "-d 192.0.2.1/32 -p udp -m udp --dport 8053 -j DNAT --to-destination 10.213.32.5:53".to_string(),
        ];
        assert_eq!(text, expected);
    }

    fn elements_text(a: &FamilyAttachment) -> Vec<String> {
        a.nft_elements()
            .iter()
            .map(|e| format!("{} {}", e.set, e.render("C")))
            .collect()
    }

    #[test]
    fn nft_elements_golden_ipv4() {
        let c = conf(
            true,
            &[
                (8080, 80, "tcp", ""),
                (8053, 53, "udp", "192.0.2.1"),
                (9, 9, "sctp", "fd00::1"),
            ],
        );
        let a = FamilyAttachment {
            conf: &c,
            container_id: "c1",
            family: Family::V4,
            container: "10.213.32.5/24".parse().unwrap(),
        };
        assert_eq!(
            elements_text(&a),
            [
                "ferry_dnat tcp . 8080 comment \"C\" : 10.213.32.5 . 80",
                "ferry_hairpin_24 10.213.32.0 . tcp . 8080 comment \"C\"",
                "ferry_hairpin_32 127.0.0.1 . tcp . 8080 comment \"C\"",
                "ferry_hostip_dnat 192.0.2.1 . udp . 8053 comment \"C\" : 10.213.32.5 . 53",
                "ferry_hostip_hairpin_24 10.213.32.0 . 192.0.2.1 . udp . 8053 comment \"C\"",
                "ferry_hostip_hairpin_32 127.0.0.1 . 192.0.2.1 . udp . 8053 comment \"C\"",
            ]
        );
        assert_eq!(a.nft_hairpin_prefixes(), vec![24, 32]);
        // masqAll: any source (prefix 0); no snat: no hairpin at all
        let mut all = c.clone();
        all.masq_all = true;
        let a_all = FamilyAttachment {
            conf: &all,
            ..a.clone()
        };
        assert_eq!(a_all.nft_hairpin_prefixes(), vec![0]);
        assert!(elements_text(&a_all)
            .contains(&"ferry_hairpin_0 0.0.0.0 . tcp . 8080 comment \"C\"".to_string()));
        let no_snat = conf(false, &[(8080, 80, "tcp", "")]);
        let a_none = FamilyAttachment {
            conf: &no_snat,
            ..a
        };
        assert_eq!(
            elements_text(&a_none),
            ["ferry_dnat tcp . 8080 comment \"C\" : 10.213.32.5 . 80"]
        );
        assert!(a_none.nft_hairpin_prefixes().is_empty());
    }

    #[test]
    fn nft_elements_golden_ipv6() {
        let c = conf(
            true,
            &[(8080, 80, "tcp", ""), (8053, 53, "udp", "10.0.0.1")],
        );
        let a = FamilyAttachment {
            conf: &c,
            container_id: "c1",
            family: Family::V6,
            container: "fd00:213:32::5/64".parse().unwrap(),
        };
        assert_eq!(
            elements_text(&a),
            [
                "ferry_dnat tcp . 8080 comment \"C\" : fd00:213:32::5 . 80",
                "ferry_hairpin_64 fd00:213:32:: . tcp . 8080 comment \"C\"",
            ]
        );
    }

    #[test]
    fn nft_base_rules_golden() {
        let v4 = nft_base_rules(
            Family::V4,
            &["iifname".into(), "\"eth0\"".into()],
            0x2000,
            &[24, 32],
        );
        assert_eq!(
            v4,
            [
                "iifname \"eth0\" fib daddr type local ip saddr & 255.255.255.0 . ip daddr . meta l4proto . th dport @ferry_hostip_hairpin_24 meta mark set meta mark | 0x00002000",
                "iifname \"eth0\" fib daddr type local ip saddr & 255.255.255.0 . meta l4proto . th dport @ferry_hairpin_24 meta mark set meta mark | 0x00002000",
                "iifname \"eth0\" fib daddr type local ip saddr . ip daddr . meta l4proto . th dport @ferry_hostip_hairpin_32 meta mark set meta mark | 0x00002000",
                "iifname \"eth0\" fib daddr type local ip saddr . meta l4proto . th dport @ferry_hairpin_32 meta mark set meta mark | 0x00002000",
                "iifname \"eth0\" fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @ferry_hostip_dnat",
                "iifname \"eth0\" fib daddr type local dnat ip to meta l4proto . th dport map @ferry_dnat",
                "iifname \"eth0\" fib daddr type local ip daddr != 127.0.0.0/8 dnat ip to meta l4proto . th dport map @ferry_dnat_nonloopback",
            ]
        );
        let v6 = nft_base_rules(Family::V6, &[], 0x4000, &[0, 64]);
        assert_eq!(
            v6,
            [
                "fib daddr type local ip6 saddr & :: . ip6 daddr . meta l4proto . th dport @ferry_hostip_hairpin_0 meta mark set meta mark | 0x00004000",
                "fib daddr type local ip6 saddr & :: . meta l4proto . th dport @ferry_hairpin_0 meta mark set meta mark | 0x00004000",
                "fib daddr type local ip6 saddr & ffff:ffff:ffff:ffff:: . ip6 daddr . meta l4proto . th dport @ferry_hostip_hairpin_64 meta mark set meta mark | 0x00004000",
                "fib daddr type local ip6 saddr & ffff:ffff:ffff:ffff:: . meta l4proto . th dport @ferry_hairpin_64 meta mark set meta mark | 0x00004000",
                "fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @ferry_hostip_dnat",
                "fib daddr type local dnat ip6 to meta l4proto . th dport map @ferry_dnat",
                "fib daddr type local ip6 daddr != ::1 dnat ip6 to meta l4proto . th dport map @ferry_dnat_nonloopback",
            ]
        );
        assert_eq!(
            nft_declarations(Family::V6, &[64]),
            [
                (
                    "ferry_hostip_dnat".to_string(),
                    "map",
                    "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service".to_string()
                ),
                (
                    "ferry_dnat".to_string(),
                    "map",
                    "inet_proto . inet_service : ipv6_addr . inet_service".to_string()
                ),
                (
                    "ferry_dnat_nonloopback".to_string(),
                    "map",
                    "inet_proto . inet_service : ipv6_addr . inet_service".to_string()
                ),
                (
                    "ferry_hostip_hairpin_64".to_string(),
                    "set",
                    "ipv6_addr . ipv6_addr . inet_proto . inet_service".to_string()
                ),
                (
                    "ferry_hairpin_64".to_string(),
                    "set",
                    "ipv6_addr . inet_proto . inet_service".to_string()
                ),
            ]
        );
        assert_eq!(
            parse_nft_hairpin_set("ferry_hostip_hairpin_24"),
            Some((true, 24))
        );
        assert_eq!(parse_nft_hairpin_set("ferry_hairpin_0"), Some((false, 0)));
        assert_eq!(parse_nft_hairpin_set("ferry_dnat"), None);
    }

    #[test]
    fn userland_proxy_rules_leave_loopback_alone() {
        let mut c = conf(
            true,
            &[
                (18080, 80, "tcp", ""),
                (18081, 81, "tcp", "127.0.0.1"),
                (18082, 82, "tcp", "::1"),
            ],
        );
        c.userland_proxy = Some(crate::config::ProxySettings {
            socket: "/s".into(),
            state_dir: "/d".into(),
            binary: None,
            runtime_binds_ports: false,
        });
        let a = FamilyAttachment {
            conf: &c,
            container_id: "c1",
            family: Family::V4,
            container: "10.213.176.5/24".parse().unwrap(),
        };
        let text: Vec<String> = a
            .iptables_entry_rules()
            .iter()
            .chain(a.iptables_chain_rules().iter())
            .map(|r| rule_args(r).join(" "))
            .collect();
        let chain = a.chain();
        assert_eq!(
            text,
            [
                format!("-p tcp -m comment --comment dnat name: \"podman\" id: \"c1\" -m multiport --dports 18080 -j {chain}"),
                "-s 10.213.176.0/24 -p tcp -m tcp --dport 18080 -j CNI-HOSTPORT-SETMARK".to_string(),
                "! -d 127.0.0.0/8 -p tcp -m tcp --dport 18080 -j DNAT --to-destination 10.213.176.5:80".to_string(),
            ]
        );
        let a6 = FamilyAttachment {
            family: Family::V6,
            container: "fd00:213:176::5/64".parse().unwrap(),
            ..a
        };
        // IPv6: the DNAT goes to the map whose rule skips ::1; the ::1 mapping has no rules.
        assert_eq!(
            elements_text(&a6),
            [
                "ferry_dnat_nonloopback tcp . 18080 comment \"C\" : fd00:213:176::5 . 80",
                "ferry_hairpin_64 fd00:213:176:: . tcp . 18080 comment \"C\"",
            ]
        );
        // IPv4 with the proxy serving loopback: no 127.0.0.1 hairpin element either.
        assert_eq!(
            elements_text(&a),
            [
                "ferry_dnat_nonloopback tcp . 18080 comment \"C\" : 10.213.176.5 . 80",
                "ferry_hairpin_24 10.213.176.0 . tcp . 18080 comment \"C\"",
            ]
        );
    }

    #[test]
    fn more_than_fifteen_ports_split_like_the_reference() {
        let ports: Vec<(Protocol, u16)> = (1..=16).map(|p| (Protocol::Tcp, p)).collect();
        let rules = entry_rules("c", &[], &ports, "X");
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn saved_chain_ports_rebuild_entry_rules() {
        let c = conf(true, &[(8080, 80, "tcp", ""), (8081, 81, "sctp", "")]);
        let a = FamilyAttachment {
            conf: &c,
            container_id: "c1",
            family: Family::V4,
            container: "10.0.0.5/16".parse().unwrap(),
        };
        let saved: Vec<Vec<String>> = a.iptables_chain_rules().iter().map(rule_args).collect();
        let ports = ports_of_saved_chain(&saved);
        assert_eq!(
            entry_rules(&dnat_comment("podman", "c1"), &[], &ports, &a.chain()),
            a.iptables_entry_rules()
        );
    }

    #[test]
    fn comments_parse_back() {
        assert_eq!(
            parse_dnat_comment(&dnat_comment("n", "id")),
            Some(("n".into(), "id".into()))
        );
        let m = validate_entry(&PortMapEntry {
            host_port: 1,
            container_port: 2,
            protocol: "udp".into(),
            host_ip: "192.0.2.1".into(),
        })
        .unwrap();
        assert_eq!(
            parse_legacy_nft_key_comment("ferry udp 1 192.0.2.1"),
            Some(legacy_nft_key(&m))
        );
        assert_eq!(
            parse_legacy_nft_key_comment("ferry tcp 8080"),
            Some((legacy::ANY_MAP, "tcp . 8080".to_string()))
        );
    }
}
