//! Address ranges and range sets: what may be handed out, validated once.
//!
//! A *range* is a pool inside one subnet (`rangeStart`…`rangeEnd`, both inclusive, with a
//! gateway). A *range set* is a list of ranges of one family from which exactly one address
//! is handed out per attachment (dual-stack = two range sets). The rules mirror the reference
//! plugin's, except that mistakes it silently "fixes" (a subnet with host bits set) are
//! refused here with the field named, because a typo there usually means the wrong network.

use cni::{Error, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One range as written in the config (`ranges[i][j]`, the legacy top-level keys, or
/// `runtimeConfig.ipRanges`). Strings, so that errors can quote what the user wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeSpec {
    /// The subnet, CIDR with no host bits (`10.88.0.0/16`).
    #[serde(default)]
    pub subnet: Option<String>,
    /// First address to hand out (inclusive); defaults to the subnet's first host.
    #[serde(default)]
    pub range_start: Option<String>,
    /// Last address to hand out (inclusive); defaults to the last host (IPv4: before
    /// broadcast).
    #[serde(default)]
    pub range_end: Option<String>,
    /// Gateway returned in results and never handed out; defaults to the first host.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// An address as an integer plus its family, so ranges can be walked and sized without
/// caring about IPv4 vs IPv6.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`ip_to_u128`] for the family of `like`.
pub fn u128_to_ip(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Parse an address the way the reference accepts it in `args.cni.ips`, `runtimeConfig.ips`
/// and CNI_ARGS `IP`: bare (`10.1.2.3`) or with a prefix (`10.1.2.3/24`, prefix ignored).
/// IPv4-mapped IPv6 (`::ffff:10.1.2.3`) is taken as the IPv4 address, as Go does.
pub fn parse_requested_ip(text: &str) -> Option<IpAddr> {
    let addr = text.split('/').next()?.trim();
    let ip: IpAddr = addr.parse().ok()?;
    Some(canonical(ip))
}

/// Go's `To4()` canonicalisation: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A validated range: every field is set and consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (no host bits).
    pub subnet: IpNet,
    /// First address handed out (inclusive).
    pub start: IpAddr,
    /// Last address handed out (inclusive).
    pub end: IpAddr,
    /// The gateway: put in results, never handed out.
    pub gateway: IpAddr,
}

impl Range {
    /// Validate one range. `field` says where it came from (`ipam.ranges[0][1]`) so every
    /// error names the exact key to fix; all errors are code 7.
    pub fn from_spec(spec: &RangeSpec, field: &str) -> Result<Range> {
        let subnet_text = spec.subnet.as_deref().unwrap_or("");
        if subnet_text.is_empty() {
            return Err(Error::invalid_config(format!(
                "{field}.subnet is missing: every range needs a subnet such as \"10.88.0.0/16\""
            )));
        }
        let subnet: IpNet = subnet_text.parse().map_err(|_| {
            Error::invalid_config(format!(
                "{field}.subnet {subnet_text:?} is not a CIDR subnet (want e.g. \"10.88.0.0/16\")"
            ))
        })?;
        if canonical(subnet.addr()) != subnet.addr() {
            return Err(Error::invalid_config(format!(
                "{field}.subnet {subnet_text:?} is an IPv4-mapped IPv6 subnet; write it as IPv4"
            )));
        }
        if subnet.addr() != subnet.network() {
            return Err(Error::invalid_config(format!(
                "{field}.subnet {subnet_text:?} has host bits set; did you mean \"{}\"?",
                subnet.trunc()
            )));
        }
        if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
            return Err(Error::invalid_config(format!(
                "{field}.subnet {subnet_text:?} is too small to allocate from (at most /{} for {})",
                subnet.max_prefix_len() - 2,
                family_name(subnet.addr())
            )));
        }
        let network = ip_to_u128(subnet.network());
        let first_host = u128_to_ip(network + 1, subnet.addr());
        let last_host = match subnet {
            IpNet::V4(_) => u128_to_ip(ip_to_u128(subnet.broadcast()) - 1, subnet.addr()),
            IpNet::V6(_) => subnet.broadcast(),
        };

        let in_subnet = |key: &str, text: &Option<String>, default: IpAddr| -> Result<IpAddr> {
            let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else {
                return Ok(default);
            };
            let ip = text.parse::<IpAddr>().map(canonical).map_err(|_| {
                Error::invalid_config(format!("{field}.{key} {text:?} is not an IP address"))
            })?;
            if ip.is_ipv4() != subnet.addr().is_ipv4() {
                return Err(Error::invalid_config(format!(
                    "{field}.{key} {text} is {} but subnet {subnet} is {}",
                    family_name(ip),
                    family_name(subnet.addr())
                )));
            }
            if !subnet.contains(&ip) {
                return Err(Error::invalid_config(format!(
                    "{field}.{key} {text} is outside subnet {subnet}"
                )));
            }
            Ok(ip)
        };
        let gateway = in_subnet("gateway", &spec.gateway, first_host)?;
        let start = in_subnet("rangeStart", &spec.range_start, first_host)?;
        let end = in_subnet("rangeEnd", &spec.range_end, last_host)?;
        if ip_to_u128(start) > ip_to_u128(end) {
            return Err(Error::invalid_config(format!(
                "{field}.rangeStart {start} is after {field}.rangeEnd {end}"
            )));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    /// True when `ip` lies between `start` and `end` (same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && ip_to_u128(self.start) <= ip_to_u128(ip)
            && ip_to_u128(ip) <= ip_to_u128(self.end)
    }

    /// True when the two ranges share at least one address.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && ip_to_u128(self.start) <= ip_to_u128(other.end)
            && ip_to_u128(other.start) <= ip_to_u128(self.end)
    }

    /// Addresses in the range that are never handed out even when inside start…end: the
    /// gateway, the subnet's network address, and for IPv4 its broadcast address.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        if ip == self.gateway || ip == self.subnet.network() {
            return false;
        }
        !(self.subnet.addr().is_ipv4() && ip == self.subnet.broadcast())
    }

    /// How many addresses this range can hand out (saturating for huge IPv6 ranges).
    pub fn capacity(&self) -> u128 {
        let total = (ip_to_u128(self.end) - ip_to_u128(self.start)).saturating_add(1);
        let mut excluded: Vec<IpAddr> = vec![self.gateway, self.subnet.network()];
        if self.subnet.addr().is_ipv4() {
            excluded.push(self.subnet.broadcast());
        }
        excluded.sort();
        excluded.dedup();
        let inside = excluded.iter().filter(|ip| self.contains(**ip)).count() as u128;
        total - inside
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}-{})", self.subnet, self.start, self.end)
    }
}

/// A validated range set: one or more non-overlapping ranges of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// Where the set came from in the config (`ipam.ranges[1]`), for error messages.
    pub field: String,
    /// The ranges, in config order (allocation walks them in this order).
    pub ranges: Vec<Range>,
}

impl RangeSet {
    /// Validate a set: not empty, one family, no overlap inside the set.
    pub fn from_specs(specs: &[RangeSpec], field: &str) -> Result<RangeSet> {
        if specs.is_empty() {
            return Err(Error::invalid_config(format!(
                "{field} is an empty range set: give at least one {{\"subnet\": …}}"
            )));
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(specs.len());
        for (j, spec) in specs.iter().enumerate() {
            let r = Range::from_spec(spec, &format!("{field}[{j}]"))?;
            if let Some(first) = ranges.first() {
                if first.start.is_ipv4() != r.start.is_ipv4() {
                    return Err(Error::invalid_config(format!(
                        "{field} mixes IPv4 and IPv6 ranges ({first} and {r}); put each family \
                         in its own range set"
                    )));
                }
            }
            if let Some((k, other)) = ranges.iter().enumerate().find(|(_, o)| o.overlaps(&r)) {
                return Err(Error::invalid_config(format!(
                    "{field}[{j}] ({r}) overlaps {field}[{k}] ({other})"
                )));
            }
            ranges.push(r);
        }
        Ok(RangeSet {
            field: field.to_string(),
            ranges,
        })
    }

    /// The legacy single-range form (`ipam.subnet`, `ipam.rangeStart`, …): one range whose
    /// keys sit directly in `field`, so errors name `ipam.subnet` rather than `ipam[0]`.
    pub fn single(spec: &RangeSpec, field: &str) -> Result<RangeSet> {
        Ok(RangeSet {
            field: field.to_string(),
            ranges: vec![Range::from_spec(spec, field)?],
        })
    }

    /// True for an IPv4 set.
    pub fn is_ipv4(&self) -> bool {
        self.ranges[0].start.is_ipv4()
    }

    /// The range holding `ip` (between its start and end), if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// True when any range of this set shares an address with any range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// How many addresses the whole set can hand out.
    pub fn capacity(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }

    /// Round-robin candidates: every allocatable address of the set exactly once, starting
    /// right after `last` when `last` is in the set (so a released address is not reused
    /// at once), else at the first range's start, wrapping across ranges.
    pub fn candidates(&self, last: Option<IpAddr>) -> Candidates<'_> {
        let sizes: Vec<u128> = self
            .ranges
            .iter()
            .map(|r| ip_to_u128(r.end) - ip_to_u128(r.start) + 1)
            .collect();
        let total = sizes.iter().fold(0u128, |a, s| a.saturating_add(*s));
        let mut range_idx = 0;
        let mut offset = 0u128;
        if let Some(last) = last {
            if let Some((i, r)) = self
                .ranges
                .iter()
                .enumerate()
                .find(|(_, r)| r.contains(last))
            {
                range_idx = i;
                offset = ip_to_u128(last) - ip_to_u128(r.start) + 1;
                if offset == sizes[i] {
                    range_idx = (i + 1) % self.ranges.len();
                    offset = 0;
                }
            }
        }
        Candidates {
            set: self,
            sizes,
            range_idx,
            offset,
            remaining: total,
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ranges.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Iterator returned by [`RangeSet::candidates`]: lazy, so a /64 costs nothing up front.
pub struct Candidates<'a> {
    set: &'a RangeSet,
    sizes: Vec<u128>,
    range_idx: usize,
    offset: u128,
    remaining: u128,
}

impl<'a> Iterator for Candidates<'a> {
    /// The candidate address and the range it belongs to.
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        while self.remaining > 0 {
            self.remaining -= 1;
            let r = &self.set.ranges[self.range_idx];
            let ip = u128_to_ip(ip_to_u128(r.start) + self.offset, r.start);
            self.offset += 1;
            if self.offset == self.sizes[self.range_idx] {
                self.offset = 0;
                self.range_idx = (self.range_idx + 1) % self.set.ranges.len();
            }
            if r.is_allocatable(ip) {
                return Some((ip, r));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec {
            subnet: Some(subnet.into()),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_follow_the_reference() {
        let r = Range::from_spec(&spec("10.213.64.0/24"), "r").unwrap();
        assert_eq!(r.start, ip("10.213.64.1"));
        assert_eq!(r.end, ip("10.213.64.254"));
        assert_eq!(r.gateway, ip("10.213.64.1"));
        assert_eq!(r.capacity(), 253);
        let r6 = Range::from_spec(&spec("fd00:213:64::/120"), "r").unwrap();
        assert_eq!(r6.end, ip("fd00:213:64::ff"));
        assert_eq!(r6.capacity(), 254);
    }

    #[test]
    fn subnet_with_host_bits_names_the_field() {
        let e = Range::from_spec(&spec("10.213.64.5/24"), "ipam.ranges[0][0]").unwrap_err();
        assert_eq!(e.code, cni::code::INVALID_CONFIG);
        assert!(e.msg.contains("ipam.ranges[0][0].subnet"), "{}", e.msg);
        assert!(e.msg.contains("10.213.64.0/24"), "{}", e.msg);
    }

    #[test]
    fn range_start_and_end_must_be_inside_the_subnet() {
        let mut s = spec("10.213.64.0/24");
        s.range_start = Some("10.213.65.1".into());
        let e = Range::from_spec(&s, "ipam").unwrap_err();
        assert!(e.msg.contains("ipam.rangeStart"), "{}", e.msg);
        let mut s = spec("10.213.64.0/24");
        s.range_end = Some("fd00::1".into());
        let e = Range::from_spec(&s, "ipam").unwrap_err();
        assert!(e.msg.contains("ipam.rangeEnd"), "{}", e.msg);
        let mut s = spec("10.213.64.0/24");
        s.range_start = Some("10.213.64.9".into());
        s.range_end = Some("10.213.64.3".into());
        assert!(Range::from_spec(&s, "x").is_err());
        let mut s = spec("10.213.64.0/24");
        s.gateway = Some("10.213.99.1".into());
        let e = Range::from_spec(&s, "x").unwrap_err();
        assert!(e.msg.contains("x.gateway"), "{}", e.msg);
    }

    #[test]
    fn tiny_or_garbage_subnets_are_refused() {
        assert!(Range::from_spec(&spec("10.213.64.0/31"), "x").is_err());
        assert!(Range::from_spec(&spec("fd00:213:64::/127"), "x").is_err());
        assert!(Range::from_spec(&spec("nonsense"), "x").is_err());
        assert!(Range::from_spec(&RangeSpec::default(), "x").is_err());
        assert!(Range::from_spec(&spec("10.213.64.0/30"), "x").is_ok());
    }

    #[test]
    fn overlap_inside_a_set_and_mixed_families_are_refused() {
        let e = RangeSet::from_specs(&[spec("10.213.64.0/24"), spec("10.213.64.0/25")], "s")
            .unwrap_err();
        assert!(
            e.msg.contains("s[1]") && e.msg.contains("s[0]"),
            "{}",
            e.msg
        );
        assert!(
            RangeSet::from_specs(&[spec("10.213.64.0/24"), spec("fd00:213:64::/64")], "s").is_err()
        );
        assert!(RangeSet::from_specs(&[], "s").is_err());
    }

    #[test]
    fn candidates_round_robin_and_wrap_across_ranges() {
        let mut a = spec("10.213.64.0/29"); // .1 gw, .2-.6
        a.range_start = Some("10.213.64.4".into());
        let b = spec("10.213.65.0/30"); // .1 gw, .2
        let set = RangeSet::from_specs(&[a, b], "s").unwrap();
        let all: Vec<IpAddr> = set.candidates(None).map(|(ip, _)| ip).collect();
        assert_eq!(
            all,
            ["10.213.64.4", "10.213.64.5", "10.213.64.6", "10.213.65.2"]
                .map(ip)
                .to_vec()
        );
        let after: Vec<IpAddr> = set
            .candidates(Some(ip("10.213.64.6")))
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(
            after,
            ["10.213.65.2", "10.213.64.4", "10.213.64.5", "10.213.64.6"]
                .map(ip)
                .to_vec()
        );
        // A last address outside the set (config changed) starts from the beginning.
        let fresh: Vec<IpAddr> = set
            .candidates(Some(ip("10.213.70.1")))
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(fresh, all);
    }

    #[test]
    fn network_broadcast_and_gateway_are_skipped_even_when_inside_the_range() {
        let mut s = spec("10.213.64.0/29");
        s.range_start = Some("10.213.64.0".into());
        s.range_end = Some("10.213.64.7".into());
        s.gateway = Some("10.213.64.3".into());
        let set = RangeSet::from_specs(&[s], "s").unwrap();
        let all: Vec<String> = set.candidates(None).map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(
            all,
            [
                "10.213.64.1",
                "10.213.64.2",
                "10.213.64.4",
                "10.213.64.5",
                "10.213.64.6"
            ]
        );
        assert_eq!(set.capacity(), 5);
    }

    #[test]
    fn huge_ipv6_ranges_are_walked_lazily() {
        let set = RangeSet::from_specs(&[spec("fd00:213:64::/64")], "s").unwrap();
        assert_eq!(set.capacity(), (1u128 << 64) - 2);
        let first: Vec<String> = set
            .candidates(Some(ip("fd00:213:64::ffff:ffff:ffff:fffe")))
            .take(3)
            .map(|(ip, _)| ip.to_string())
            .collect();
        assert_eq!(
            first,
            [
                "fd00:213:64:0:ffff:ffff:ffff:ffff",
                "fd00:213:64::2",
                "fd00:213:64::3"
            ]
        );
        let whole = RangeSet::from_specs(&[spec("::/0")], "s").unwrap();
        assert!(whole.candidates(None).next().is_some());
    }

    #[test]
    fn requested_ip_accepts_prefix_and_mapped_forms() {
        assert_eq!(parse_requested_ip("10.1.2.3/24"), Some(ip("10.1.2.3")));
        assert_eq!(parse_requested_ip("::ffff:10.1.2.3"), Some(ip("10.1.2.3")));
        assert_eq!(parse_requested_ip("fd00::5"), Some(ip("fd00::5")));
        assert_eq!(parse_requested_ip("nope"), None);
    }
}
