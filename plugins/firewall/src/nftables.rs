//! The nftables backend: batches rendered as one `nft -f -` transaction.

use crate::error::{Error, Result};
use crate::executor::{run, run_checked};
use crate::rule::{canonical_net, Family, Match, Rule, Verdict};
use crate::Executor;
use serde_json::Value;
use std::net::IpAddr;

/// nft's address selector for an address family (`ip` / `ip6`).
fn sel(family: Family) -> &'static str {
    family.nft()
}

/// Quotes a string for nft input (`"…"`; nft has no escape for `"`, so it is replaced).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "'"))
}

/// Renders a rule's expression (without `add rule … chain`) for a table of `family`.
pub fn rule_expr(family: Family, rule: &Rule) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut comment = None;
    for m in &rule.matches {
        match m {
            Match::Source { net, negate } => {
                words.push(format!(
                    "{} saddr {}{}",
                    sel(family),
                    neg(*negate),
                    fmt_net(net)
                ));
            }
            Match::Destination { net, negate } => {
                words.push(format!(
                    "{} daddr {}{}",
                    sel(family),
                    neg(*negate),
                    fmt_net(net)
                ));
            }
            Match::InInterface(i) => words.push(format!("iifname {}", quote(i))),
            Match::OutInterface(o) => words.push(format!("oifname {}", quote(o))),
            Match::Protocol(p) => words.push(format!("meta l4proto {}", p.as_str())),
            Match::DestinationPort(p) => words.push(format!("th dport {p}")),
            Match::DestinationPorts(ps) => {
                let list: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
                words.push(format!("th dport {{ {} }}", list.join(", ")));
            }
            Match::DestinationLocal => words.push("fib daddr type local".into()),
            Match::MarkBits(b) => words.push(format!("meta mark & {b:#010x} == {b:#010x}")),
            Match::ConntrackState(states) => {
                let list: Vec<String> = states.iter().map(|s| s.to_ascii_lowercase()).collect();
                words.push(format!("ct state {{ {} }}", list.join(", ")));
            }
            Match::Comment(c) => comment = Some(c.clone()),
            Match::Raw(w) => words.push(w.join(" ")),
        }
    }
    words.push(match &rule.verdict {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Masquerade => "masquerade".into(),
        Verdict::Dnat { addr, port } => {
            format!("dnat {} to {}", sel(family), addr_port(addr, *port))
        }
        Verdict::Snat { addr } => format!("snat {} to {}", sel(family), addr),
        Verdict::SetMarkBits(b) => format!("meta mark set meta mark | {b:#010x}"),
    });
    if let Some(c) = comment {
        words.push(format!("comment {}", quote(&c)));
    }
    words.join(" ")
}

fn neg(negate: bool) -> &'static str {
    if negate {
        "!= "
    } else {
        ""
    }
}

fn fmt_net(net: &ipnet::IpNet) -> String {
    let net = canonical_net(net);
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// `10.0.0.5:80`, `[fd00::5]:80`, or the bare address.
pub fn addr_port(addr: &IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, None) => a.to_string(),
    }
}

/// A base chain's hook: `type nat hook prerouting priority dstnat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `nat`, `filter`, `route`.
    pub kind: &'static str,
    /// `prerouting`, `output`, `postrouting`, `input`, `forward`.
    pub hook: &'static str,
    /// A number or a standard name (`dstnat`, `srcnat`, `filter`).
    pub priority: &'static str,
}

/// Commands of one nft transaction: all apply or none does.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    lines: Vec<String>,
}

impl Batch {
    /// An empty transaction.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Creates the table when missing (`add` is idempotent).
    pub fn add_table(&mut self, family: Family, table: &str, comment: Option<&str>) {
        match comment {
            Some(c) => self.lines.push(format!(
                "add table {} {table} {{ comment {} ; }}",
                family.nft(),
                quote(c)
            )),
            None => self
                .lines
                .push(format!("add table {} {table}", family.nft())),
        }
    }

    /// Deletes the table with everything in it.
    pub fn delete_table(&mut self, family: Family, table: &str) {
        self.lines
            .push(format!("delete table {} {table}", family.nft()));
    }

    /// Creates the chain when missing, keeping its rules.
    pub fn add_chain(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        base: Option<&BaseChain>,
    ) {
        match base {
            Some(b) => self.lines.push(format!(
                "add chain {} {table} {chain} {{ type {} hook {} priority {} ; }}",
                family.nft(),
                b.kind,
                b.hook,
                b.priority
            )),
            None => self
                .lines
                .push(format!("add chain {} {table} {chain}", family.nft())),
        }
    }

    /// Removes every rule of the chain (which must exist, e.g. added earlier in this batch).
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.lines
            .push(format!("flush chain {} {table} {chain}", family.nft()));
    }

    /// Deletes the chain (empty and unreferenced by the end of the transaction).
    pub fn delete_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.lines
            .push(format!("delete chain {} {table} {chain}", family.nft()));
    }

    /// Appends a rule.
    pub fn add_rule(&mut self, family: Family, table: &str, chain: &str, rule: &Rule) {
        self.lines.push(format!(
            "add rule {} {table} {chain} {}",
            family.nft(),
            rule_expr(family, rule)
        ));
    }

    /// Inserts a rule at the top of the chain.
    pub fn insert_rule(&mut self, family: Family, table: &str, chain: &str, rule: &Rule) {
        self.lines.push(format!(
            "insert rule {} {table} {chain} {}",
            family.nft(),
            rule_expr(family, rule)
        ));
    }

    /// Deletes a rule by the handle nft reported for it.
    pub fn delete_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        self.lines.push(format!(
            "delete rule {} {table} {chain} handle {handle}",
            family.nft()
        ));
    }

    /// Creates a map when missing: `key_type` like `inet_proto . inet_service`, `data_type`
    /// like `verdict`.
    pub fn add_map(
        &mut self,
        family: Family,
        table: &str,
        map: &str,
        key_type: &str,
        data_type: &str,
    ) {
        self.lines.push(format!(
            "add map {} {table} {map} {{ type {key_type} : {data_type} ; }}",
            family.nft()
        ));
    }

    /// Adds map or set elements, e.g. `tcp . 8080 : jump CNI-DN-x`.
    pub fn add_element(&mut self, family: Family, table: &str, set: &str, elements: &[String]) {
        if !elements.is_empty() {
            self.lines.push(format!(
                "add element {} {table} {set} {{ {} }}",
                family.nft(),
                elements.join(", ")
            ));
        }
    }

    /// Deletes elements by key; the transaction fails when one is missing.
    pub fn delete_element(&mut self, family: Family, table: &str, set: &str, keys: &[String]) {
        if !keys.is_empty() {
            self.lines.push(format!(
                "delete element {} {table} {set} {{ {} }}",
                family.nft(),
                keys.join(", ")
            ));
        }
    }

    /// A raw nft command line, for what the helpers above do not cover.
    pub fn raw(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// The `nft -f -` input.
    pub fn render(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }
}

/// A rule as `nft -j list` reports it: where it is, its handle and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    /// Chain name.
    pub chain: String,
    /// Handle, for `delete rule … handle N`.
    pub handle: u64,
    /// The rule's comment, if any.
    pub comment: Option<String>,
    /// The rule's JSON expression list, for callers that inspect matches.
    pub expr: Value,
}

/// Extracts the rules from `nft -j list …` output.
pub fn listed_rules(doc: &Value) -> Vec<ListedRule> {
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter_map(|r| {
            Some(ListedRule {
                chain: r.get("chain")?.as_str()?.to_string(),
                handle: r.get("handle")?.as_u64()?,
                comment: r.get("comment").and_then(Value::as_str).map(String::from),
                expr: r.get("expr").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// Names of the chains in `nft -j list …` output.
pub fn listed_chains(doc: &Value) -> Vec<String> {
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i.get("chain")?.get("name")?.as_str().map(String::from))
        .collect()
}

/// The nft executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nft;

impl Nft {
    /// Runs `nft -j list <what…>`; `None` when the object does not exist.
    pub fn list_json(&self, object: &[&str], what: &str) -> Result<Option<Value>> {
        self.list(&["-j", "list"], object, what)
    }

    /// Runs `nft -t -j list <what…>`: the terse listing leaves out set and map elements,
    /// so its cost does not grow with them. `None` when the object does not exist.
    pub fn list_json_terse(&self, object: &[&str], what: &str) -> Result<Option<Value>> {
        self.list(&["-t", "-j", "list"], object, what)
    }

    /// `nft <flags…> <object…>` parsed as JSON; `None` when the object does not exist.
    fn list(&self, flags: &[&str], object: &[&str], what: &str) -> Result<Option<Value>> {
        let mut args = flags.to_vec();
        args.extend_from_slice(object);
        let out = run("nft", &args, None, what)?;
        if out.status != 0 {
            if out.stderr.contains("No such file or directory")
                || out.stderr.contains("does not exist")
            {
                return Ok(None);
            }
            return Err(Error::tool(what, "nft", &out.stderr, &args.join(" ")));
        }
        serde_json::from_str(&out.stdout).map(Some).map_err(|e| {
            Error::tool(
                what,
                "nft",
                &format!("unreadable JSON from nft -j: {e}"),
                "",
            )
        })
    }

    /// Runs `nft get element <family> <table> <set> { <key> }`: the element as nft prints
    /// it (with data and comment), or `None` when it (or the set) does not exist.
    pub fn get_element_text(
        &self,
        family: Family,
        table: &str,
        set: &str,
        key: &str,
        what: &str,
    ) -> Result<Option<String>> {
        let key = format!("{{ {key} }}");
        self.list_text_args(&["get", "element", family.nft(), table, set, &key], what)
    }

    /// Runs `nft list <what…>` and returns its text; `None` when the object does not exist.
    pub fn list_text(&self, object: &[&str], what: &str) -> Result<Option<String>> {
        let mut args = vec!["list"];
        args.extend_from_slice(object);
        self.list_text_args(&args, what)
    }

    fn list_text_args(&self, args: &[&str], what: &str) -> Result<Option<String>> {
        let out = run("nft", args, None, what)?;
        if out.status != 0 {
            if out.stderr.contains("No such file or directory")
                || out.stderr.contains("does not exist")
            {
                return Ok(None);
            }
            return Err(Error::tool(what, "nft", &out.stderr, &args.join(" ")));
        }
        Ok(Some(out.stdout))
    }
}

impl Executor for Nft {
    type Batch = Batch;

    fn apply(&self, batch: &Batch, what: &str) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        run_checked("nft", &["-f", "-"], Some(&batch.render()), what)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Protocol;

    #[test]
    fn golden_transaction_text() {
        let f = Family::V4;
        let mut b = Batch::new();
        b.add_table(f, "cni_hostport", Some("CNI portmap plugin"));
        b.add_map(
            f,
            "cni_hostport",
            "ferry_hostports",
            "inet_proto . inet_service",
            "verdict",
        );
        b.add_chain(
            f,
            "cni_hostport",
            "ferry_prerouting",
            Some(&BaseChain {
                kind: "nat",
                hook: "prerouting",
                priority: "dstnat",
            }),
        );
        b.flush_chain(f, "cni_hostport", "ferry_prerouting");
        b.add_chain(f, "cni_hostport", "CNI-DN-abc", None);
        b.add_rule(
            f,
            "cni_hostport",
            "CNI-DN-abc",
            &Rule::new(
                vec![
                    Match::Source {
                        net: "10.0.0.5/16".parse().unwrap(),
                        negate: false,
                    },
                    Match::Destination {
                        net: "192.0.2.1/32".parse().unwrap(),
                        negate: false,
                    },
                    Match::Protocol(Protocol::Tcp),
                    Match::DestinationPort(8080),
                ],
                Verdict::SetMarkBits(0x2000),
            ),
        );
        b.add_rule(
            f,
            "cni_hostport",
            "CNI-DN-abc",
            &Rule::new(
                vec![
                    Match::Protocol(Protocol::Udp),
                    Match::DestinationPort(53),
                    Match::Comment("c1 udp 53".into()),
                ],
                Verdict::Dnat {
                    addr: "10.0.0.5".parse().unwrap(),
                    port: Some(5353),
                },
            ),
        );
        b.add_rule(
            f,
            "cni_hostport",
            "ferry_masquerading",
            &Rule::new(vec![Match::MarkBits(0x2000)], Verdict::Masquerade),
        );
        b.add_rule(
            f,
            "cni_hostport",
            "ferry_output",
            &Rule::new(
                vec![
                    Match::DestinationLocal,
                    Match::Raw(vec!["meta l4proto . th dport vmap @ferry_hostports".into()]),
                ],
                Verdict::Return,
            ),
        );
        b.add_element(
            f,
            "cni_hostport",
            "ferry_hostports",
            &["udp . 53 : jump CNI-DN-abc".into()],
        );
        b.delete_element(f, "cni_hostport", "ferry_hostports", &["udp . 53".into()]);
        b.delete_rule(f, "cni_hostport", "hostports", 7);
        b.delete_chain(f, "cni_hostport", "CNI-DN-abc");
        let expected = r#"add table ip cni_hostport { comment "CNI portmap plugin" ; }
add map ip cni_hostport ferry_hostports { type inet_proto . inet_service : verdict ; }
add chain ip cni_hostport ferry_prerouting { type nat hook prerouting priority dstnat ; }
flush chain ip cni_hostport ferry_prerouting
add chain ip cni_hostport CNI-DN-abc
add rule ip cni_hostport CNI-DN-abc ip saddr 10.0.0.0/16 ip daddr 192.0.2.1 meta l4proto tcp th dport 8080 meta mark set meta mark | 0x00002000
add rule ip cni_hostport CNI-DN-abc meta l4proto udp th dport 53 dnat ip to 10.0.0.5:5353 comment "c1 udp 53"
add rule ip cni_hostport ferry_masquerading meta mark & 0x00002000 == 0x00002000 masquerade
add rule ip cni_hostport ferry_output fib daddr type local meta l4proto . th dport vmap @ferry_hostports return
add element ip cni_hostport ferry_hostports { udp . 53 : jump CNI-DN-abc }
delete element ip cni_hostport ferry_hostports { udp . 53 }
delete rule ip cni_hostport hostports handle 7
delete chain ip cni_hostport CNI-DN-abc
"#;
        assert_eq!(b.render(), expected);
    }

    #[test]
    fn ipv6_dnat_brackets_the_address() {
        let r = Rule::new(
            vec![
                Match::Protocol(Protocol::Sctp),
                Match::DestinationPorts(vec![1, 2]),
            ],
            Verdict::Dnat {
                addr: "fd00::5".parse().unwrap(),
                port: Some(80),
            },
        );
        assert_eq!(
            rule_expr(Family::V6, &r),
            "meta l4proto sctp th dport { 1, 2 } dnat ip6 to [fd00::5]:80"
        );
    }

    #[test]
    fn listed_rules_reads_handles_and_comments() {
        let doc: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},{"chain":{"family":"ip","table":"t","name":"c","handle":1}},
            {"rule":{"family":"ip","table":"t","chain":"c","handle":4,"comment":"id1","expr":[]}},
            {"rule":{"family":"ip","table":"t","chain":"c","handle":5,"expr":[]}}]}"#,
        )
        .unwrap();
        let rules = listed_rules(&doc);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].handle, 4);
        assert_eq!(rules[0].comment.as_deref(), Some("id1"));
        assert_eq!(listed_chains(&doc), vec!["c".to_string()]);
    }
}
