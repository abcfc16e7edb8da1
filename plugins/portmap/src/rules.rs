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
//! The nftables layout lives in table `cni_hostport` (the reference's), but jumps to the
//! per-attachment chain through verdict maps keyed by protocol and port, so an ADD or DEL
//! touches a fixed number of objects however many mappings exist.

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
/// ferry's verdict map for mappings on every host address: `proto . port : jump CNI-DN-…`.
pub const NFT_ANY_MAP: &str = "ferry_hostports";
/// ferry's verdict map for mappings limited to one host address.
pub const NFT_HOSTIP_MAP: &str = "ferry_hostip_hostports";
/// ferry's base chains (distinct from the reference's `prerouting`/`output`, which its ADD
/// flushes).
pub const NFT_PREROUTING: &str = "ferry_prerouting";
/// See [`NFT_PREROUTING`].
pub const NFT_OUTPUT: &str = "ferry_output";
/// See [`NFT_PREROUTING`].
pub const NFT_MASQUERADING: &str = "ferry_masquerading";
/// Prefix of the comment on an nft DNAT rule that records its map key, so DEL can remove
/// the map element without being told the mappings again.
pub const NFT_KEY_COMMENT: &str = "ferry";

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
        self.chain_rules(Verdict::Jump(self.setmark_target()), |_| None)
    }

    /// The same rules for nftables: the mark is set directly, and each DNAT rule carries its
    /// map key as a comment.
    pub fn nft_chain_rules(&self) -> Vec<Rule> {
        self.chain_rules(Verdict::SetMarkBits(self.conf.mark), |m| {
            Some(nft_key_comment(m))
        })
    }

    fn chain_rules(
        &self,
        mark: Verdict,
        comment: impl Fn(&Mapping) -> Option<String>,
    ) -> Vec<Rule> {
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
            if self.conf.snat {
                let mut hairpin = base.clone();
                if !self.conf.masq_all {
                    hairpin.push(Match::Source {
                        net: self.container.trunc(),
                        negate: false,
                    });
                }
                rules.push(Rule::new(hairpin, mark.clone()));
                let kernel_loopback = self.conf.kernel_serves_loopback(self.family);
                if self.family == Family::V4 && !self.conf.masq_all && kernel_loopback {
                    let mut local = base.clone();
                    local.push(Match::Source {
                        net: "127.0.0.1/32".parse().expect("literal"),
                        negate: false,
                    });
                    rules.push(Rule::new(local, mark.clone()));
                }
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
            if let Some(c) = comment(&m) {
                dnat.push(Match::Comment(c));
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

    /// nft verdict-map elements `(map, element)` that send this attachment's ports to its chain.
    pub fn nft_elements(&self) -> Vec<(&'static str, String)> {
        let chain = self.chain();
        let mut out: Vec<(&'static str, String)> = Vec::new();
        for m in self.mappings() {
            let (map, key) = nft_key(&m);
            let element = format!("{key} : jump {chain}");
            if !out.iter().any(|(mp, e)| *mp == map && *e == element) {
                out.push((map, element));
            }
        }
        out
    }
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

/// The nft map and key of a mapping.
pub fn nft_key(m: &Mapping) -> (&'static str, String) {
    match m.destination() {
        Some(addr) => (
            NFT_HOSTIP_MAP,
            format!("{addr} . {} . {}", m.protocol.as_str(), m.host_port),
        ),
        None => (
            NFT_ANY_MAP,
            format!("{} . {}", m.protocol.as_str(), m.host_port),
        ),
    }
}

/// `ferry tcp 8080` or `ferry tcp 8080 192.0.2.1`.
pub fn nft_key_comment(m: &Mapping) -> String {
    match m.destination() {
        Some(a) => format!(
            "{NFT_KEY_COMMENT} {} {} {a}",
            m.protocol.as_str(),
            m.host_port
        ),
        None => format!("{NFT_KEY_COMMENT} {} {}", m.protocol.as_str(), m.host_port),
    }
}

/// Reads a key comment back into (map, key) for DEL.
pub fn parse_nft_key_comment(comment: &str) -> Option<(&'static str, String)> {
    let mut words = comment.split_whitespace();
    if words.next()? != NFT_KEY_COMMENT {
        return None;
    }
    let protocol = Protocol::parse(words.next()?)?;
    let host_port: u16 = words.next()?.parse().ok()?;
    let host_ip = match words.next() {
        Some(a) => Some(a.parse::<IpAddr>().ok()?),
        None => None,
    };
    Some(nft_key(&Mapping {
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
    use firewall::{nftables, BackendKind};

    fn conf(snat: bool, entries: &[(i64, i64, &str, &str)]) -> PortMapConfig {
        PortMapConfig {
            network: "podman".into(),
            snat,
            masq_all: false,
            mark: 0x2000,
            external_set_mark_chain: None,
            conditions_v4: vec![],
            conditions_v6: vec![],
            backend: BackendKind::Iptables,
            check_port_conflicts: true,
            userland_proxy: None,
            mappings: entries
                .iter()
                .map(|(h, c, p, ip)| {
                    validate_entry(&PortMapEntry {
                        host_port: *h,
                        container_port: *c,
                        protocol: p.to_string(),
                        host_ip: ip.to_string(),
                    })
                    .unwrap()
                })
                .collect(),
        }
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

    #[test]
    fn nft_rules_golden_ipv6() {
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
        let chain = a.chain();
        let text: Vec<String> = a
            .nft_chain_rules()
            .iter()
            .map(|r| nftables::rule_expr(Family::V6, r))
            .collect();
        assert_eq!(
            text,
            [
                "meta l4proto tcp th dport 8080 ip6 saddr fd00:213:32::/64 meta mark set meta mark | 0x00002000",
                "meta l4proto tcp th dport 8080 dnat ip6 to [fd00:213:32::5]:80 comment \"ferry tcp 8080\"",
            ]
        );
        assert_eq!(
            a.nft_elements(),
            vec![(NFT_ANY_MAP, format!("tcp . 8080 : jump {chain}"))]
        );
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
        let text: Vec<String> = a6
            .nft_chain_rules()
            .iter()
            .map(|r| nftables::rule_expr(Family::V6, r))
            .collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[1].contains("ip6 daddr != ::1"), "{text:?}");
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
            parse_nft_key_comment(&nft_key_comment(&m)),
            Some(nft_key(&m))
        );
    }
}
