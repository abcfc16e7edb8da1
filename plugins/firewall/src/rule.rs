//! Backend-neutral rules: a list of matches and one verdict.

use ipnet::IpNet;
use std::net::IpAddr;

/// IP family of a rule set: selects `iptables` vs `ip6tables`, nft `ip` vs `ip6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// nft's family keyword and address selector (`ip` / `ip6`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// Transport protocols a port match can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses a protocol name case-insensitively (runtimes send `TCP` and `tcp`).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower-case name, as both tools spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Source address or network (`-s`, `ip saddr`); `negate` inverts it.
    Source { net: IpNet, negate: bool },
    /// Destination address or network (`-d`, `ip daddr`).
    Destination { net: IpNet, negate: bool },
    /// Incoming interface.
    InInterface(String),
    /// Outgoing interface.
    OutInterface(String),
    /// Transport protocol (`-p`, `meta l4proto`).
    Protocol(Protocol),
    /// One destination port; needs a preceding [`Match::Protocol`].
    DestinationPort(u16),
    /// Several destination ports (`-m multiport --dports`, `th dport { … }`).
    DestinationPorts(Vec<u16>),
    /// Destination is an address of this host (`-m addrtype --dst-type LOCAL`,
    /// `fib daddr type local`).
    DestinationLocal,
    /// Packet mark has these bits set (`-m mark --mark m/m`, `meta mark & m == m`).
    MarkBits(u32),
    /// Conntrack state, e.g. `["RELATED", "ESTABLISHED"]`.
    ConntrackState(Vec<String>),
    /// A comment; iptables renders it as a match, nft as the rule's trailing comment.
    Comment(String),
    /// Backend-native text the user supplied (reference `conditionsV4`/`conditionsV6`):
    /// iptables arguments or nft expression words, passed through unchanged.
    Raw(Vec<String>),
}

/// What happens to a matching packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept.
    Accept,
    /// Drop.
    Drop,
    /// Return to the calling chain.
    Return,
    /// Jump to a chain.
    Jump(String),
    /// Go to a chain (no return).
    Goto(String),
    /// Masquerade to the outgoing interface's address.
    Masquerade,
    /// Rewrite the destination.
    Dnat { addr: IpAddr, port: Option<u16> },
    /// Rewrite the source.
    Snat { addr: IpAddr },
    /// Set these bits in the packet mark (`-j MARK --set-xmark m/m`,
    /// `meta mark set mark or m`).
    SetMarkBits(u32),
}

/// A firewall rule: all matches must hold, then the verdict applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Conditions, rendered in this order (after the address/protocol basics for iptables).
    pub matches: Vec<Match>,
    /// What to do.
    pub verdict: Verdict,
}

impl Rule {
    /// A rule from its parts.
    pub fn new(matches: Vec<Match>, verdict: Verdict) -> Rule {
        Rule { matches, verdict }
    }
}

/// Masks a network to its prefix (what `iptables-save` prints for `-s 10.0.0.5/24`).
pub fn canonical_net(net: &IpNet) -> IpNet {
    net.trunc()
}
