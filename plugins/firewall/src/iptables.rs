//! The iptables backend: batches rendered as `iptables-restore --noflush` input.
//!
//! Rules are rendered in the canonical form `iptables-save` prints (`-s` before `-p`, a
//! `-m tcp` before `--dport`, host addresses with `/32`), so a rule read back from the kernel
//! compares equal to the value that produced it.

use crate::error::{Error, Result};
use crate::executor::{run, run_checked};
use crate::rule::{canonical_net, Family, Match, Rule, Verdict};
use crate::Executor;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Renders a rule to iptables arguments (without `-A CHAIN`), in `iptables-save` order.
pub fn rule_args(rule: &Rule) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let push_net = |out: &mut Vec<String>, flag: &str, net: &IpNet, negate: bool| {
        if negate {
            out.push("!".into());
        }
        out.push(flag.into());
        out.push(canonical_net(net).to_string());
    };
    // iptables-save prints the builtin selectors first, whatever order they were given in.
    for m in &rule.matches {
        if let Match::Source { net, negate } = m {
            push_net(&mut out, "-s", net, *negate);
        }
    }
    for m in &rule.matches {
        if let Match::Destination { net, negate } = m {
            push_net(&mut out, "-d", net, *negate);
        }
    }
    for m in &rule.matches {
        match m {
            Match::InInterface(i) => out.extend(["-i".to_string(), i.clone()]),
            Match::OutInterface(o) => out.extend(["-o".to_string(), o.clone()]),
            _ => {}
        }
    }
    let proto = rule.matches.iter().find_map(|m| match m {
        Match::Protocol(p) => Some(*p),
        _ => None,
    });
    if let Some(p) = proto {
        out.extend(["-p".to_string(), p.as_str().to_string()]);
    }
    for m in &rule.matches {
        match m {
            Match::Source { .. }
            | Match::Destination { .. }
            | Match::InInterface(_)
            | Match::OutInterface(_)
            | Match::Protocol(_) => {}
            Match::DestinationPort(port) => {
                let module = proto.map(|p| p.as_str()).unwrap_or("tcp");
                out.extend([
                    "-m".into(),
                    module.into(),
                    "--dport".into(),
                    port.to_string(),
                ]);
            }
            Match::DestinationPorts(ports) => {
                let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
                out.extend([
                    "-m".into(),
                    "multiport".into(),
                    "--dports".into(),
                    list.join(","),
                ]);
            }
            Match::DestinationLocal => {
                out.extend(["-m", "addrtype", "--dst-type", "LOCAL"].map(String::from));
            }
            Match::MarkBits(bits) => {
                out.extend([
                    "-m".into(),
                    "mark".into(),
                    "--mark".into(),
                    format!("{bits:#x}/{bits:#x}"),
                ]);
            }
            Match::ConntrackState(states) => {
                out.extend([
                    "-m".into(),
                    "conntrack".into(),
                    "--ctstate".into(),
                    states.join(","),
                ]);
            }
            Match::Comment(c) => {
                out.extend(["-m".into(), "comment".into(), "--comment".into(), c.clone()]);
            }
            Match::Raw(words) => out.extend(words.iter().cloned()),
        }
    }
    match &rule.verdict {
        Verdict::Accept => out.extend(["-j", "ACCEPT"].map(String::from)),
        Verdict::Drop => out.extend(["-j", "DROP"].map(String::from)),
        Verdict::Return => out.extend(["-j", "RETURN"].map(String::from)),
        Verdict::Jump(c) => out.extend(["-j".to_string(), c.clone()]),
        Verdict::Goto(c) => out.extend(["-g".to_string(), c.clone()]),
        Verdict::Masquerade => out.extend(["-j", "MASQUERADE"].map(String::from)),
        Verdict::Dnat { addr, port } => {
            out.extend([
                "-j".into(),
                "DNAT".into(),
                "--to-destination".into(),
                addr_port(addr, *port),
            ]);
        }
        Verdict::Snat { addr } => {
            out.extend([
                "-j".into(),
                "SNAT".into(),
                "--to-source".into(),
                addr.to_string(),
            ]);
        }
        Verdict::SetMarkBits(bits) => {
            out.extend([
                "-j".into(),
                "MARK".into(),
                "--set-xmark".into(),
                format!("{bits:#x}/{bits:#x}"),
            ]);
        }
    }
    out
}

/// `10.0.0.5:80`, `[fd00::5]:80`, or the bare address when no port is given.
pub fn addr_port(addr: &IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, None) => a.to_string(),
    }
}

/// Quotes one argument for iptables-restore input (double quotes, `\"` and `\\` escaped).
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '\\' && c != '\'' && c != '#');
    if plain {
        return arg.to_string();
    }
    let mut s = String::with_capacity(arg.len() + 2);
    s.push('"');
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Splits an `iptables-save` line into arguments, undoing [`quote`].
pub fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn join_args(args: &[String]) -> String {
    args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// Changes to one table, applied by one `iptables-restore --noflush` run.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Which tool (`iptables` or `ip6tables`).
    pub family: Family,
    /// The table (`nat`, `filter`, …).
    pub table: String,
    declarations: Vec<String>,
    commands: Vec<String>,
}

impl Batch {
    /// An empty batch for `table`.
    pub fn new(family: Family, table: &str) -> Batch {
        Batch {
            family,
            table: table.to_string(),
            declarations: Vec::new(),
            commands: Vec::new(),
        }
    }

    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.declarations.is_empty() && self.commands.is_empty()
    }

    /// Creates `chain`, or empties it when it exists. Never use on a chain shared with other
    /// attachments: with `--noflush`, declaring an existing user chain flushes it.
    pub fn declare_chain(&mut self, chain: &str) {
        self.declarations.push(format!(":{chain} - [0:0]"));
    }

    /// Creates `chain`; the whole batch fails when it already exists.
    pub fn new_chain(&mut self, chain: &str) {
        self.commands.push(format!("-N {chain}"));
    }

    /// Appends a rule.
    pub fn append(&mut self, chain: &str, rule: &Rule) {
        self.append_args(chain, &rule_args(rule));
    }

    /// Appends a rule given as iptables arguments.
    pub fn append_args(&mut self, chain: &str, args: &[String]) {
        self.commands
            .push(format!("-A {chain} {}", join_args(args)));
    }

    /// Inserts a rule at the top of `chain`.
    pub fn insert(&mut self, chain: &str, rule: &Rule) {
        self.commands
            .push(format!("-I {chain} 1 {}", join_args(&rule_args(rule))));
    }

    /// Fails the whole batch unless a rule equal to `rule` exists (`-C`): lets one
    /// iptables-restore run verify shared rules before it changes anything.
    pub fn check(&mut self, chain: &str, rule: &Rule) {
        self.commands
            .push(format!("-C {chain} {}", join_args(&rule_args(rule))));
    }

    /// The line of [`Batch::render`] output with this 1-based number (to explain a failure
    /// that iptables-restore reports by line).
    pub fn line(&self, number: usize) -> Option<String> {
        self.render()
            .lines()
            .nth(number.checked_sub(1)?)
            .map(String::from)
    }

    /// Deletes the first rule equal to `rule`; the batch fails when there is none.
    pub fn delete(&mut self, chain: &str, rule: &Rule) {
        self.delete_args(chain, &rule_args(rule));
    }

    /// Deletes the first rule with these arguments (as read back by [`Iptables::list_chain`]).
    pub fn delete_args(&mut self, chain: &str, args: &[String]) {
        self.commands
            .push(format!("-D {chain} {}", join_args(args)));
    }

    /// Removes every rule of `chain`.
    pub fn flush_chain(&mut self, chain: &str) {
        self.commands.push(format!("-F {chain}"));
    }

    /// Deletes the (empty, unreferenced) `chain`.
    pub fn delete_chain(&mut self, chain: &str) {
        self.commands.push(format!("-X {chain}"));
    }

    /// The iptables-restore input.
    pub fn render(&self) -> String {
        let mut s = format!("*{}\n", self.table);
        for line in self.declarations.iter().chain(&self.commands) {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// A table as `iptables-save` printed it: chain name → rules (arguments after `-A CHAIN`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Every chain, builtin and user-defined, in name order.
    pub chains: BTreeMap<String, Vec<Vec<String>>>,
}

impl SavedTable {
    /// Parses `iptables-save -t <table>` (or `iptables -S`) output.
    pub fn parse(text: &str) -> SavedTable {
        let mut t = SavedTable::default();
        for line in text.lines() {
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    t.chains.entry(name.to_string()).or_default();
                }
            } else if line.starts_with("-N ") || line.starts_with("-P ") {
                if let Some(name) = line.split_whitespace().nth(1) {
                    t.chains.entry(name.to_string()).or_default();
                }
            } else if line.starts_with("-A ") {
                let mut args = split_args(line);
                if args.len() >= 2 {
                    let chain = args[1].clone();
                    args.drain(..2);
                    t.chains.entry(chain).or_default().push(args);
                }
            }
        }
        t
    }

    /// The rules of `chain`, if it exists.
    pub fn chain(&self, chain: &str) -> Option<&Vec<Vec<String>>> {
        self.chains.get(chain)
    }
}

/// The iptables executor for one family.
#[derive(Debug, Clone, Copy)]
pub struct Iptables {
    /// `iptables` for V4, `ip6tables` for V6.
    pub family: Family,
}

impl Iptables {
    /// The executor for `family`.
    pub fn new(family: Family) -> Iptables {
        Iptables { family }
    }

    fn tool(&self, suffix: &str) -> String {
        match self.family {
            Family::V4 => format!("iptables{suffix}"),
            Family::V6 => format!("ip6tables{suffix}"),
        }
    }

    /// Reads a whole table (`iptables-save -t <table>`): cost grows with the table, so keep it
    /// off per-container hot paths (GC and slow-path repair only).
    pub fn save(&self, table: &str, what: &str) -> Result<SavedTable> {
        let text = run_checked(&self.tool("-save"), &["-t", table], None, what)?;
        Ok(SavedTable::parse(&text))
    }

    /// Reads one chain (`iptables -S <chain>`); `None` when the chain does not exist.
    pub fn list_chain(
        &self,
        table: &str,
        chain: &str,
        what: &str,
    ) -> Result<Option<Vec<Vec<String>>>> {
        let tool = self.tool("");
        let out = run(&tool, &["-w", "-t", table, "-S", chain], None, what)?;
        if out.status != 0 {
            if out.stderr.contains("No chain/target/match by that name")
                || out.stderr.contains("does not exist")
                || out.stderr.contains("Table does not exist")
                // iptables-nft 1.8.9 says this for a chain that does not exist at all.
                || out.stderr.contains("is incompatible, use 'nft' tool")
            {
                return Ok(None);
            }
            return Err(Error::tool(what, &tool, &out.stderr, ""));
        }
        let table = SavedTable::parse(&out.stdout);
        Ok(Some(table.chains.get(chain).cloned().unwrap_or_default()))
    }

    /// True when the tool exists and can read the `nat` table of this family (the reference's
    /// test before touching a family).
    pub fn usable(&self) -> bool {
        run(
            &self.tool(""),
            &["-w", "-t", "nat", "-S", "OUTPUT"],
            None,
            "probing",
        )
        .map(|o| o.status == 0)
        .unwrap_or(false)
    }
}

impl Executor for Iptables {
    type Batch = Batch;

    fn apply(&self, batch: &Batch, what: &str) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        run_checked(
            &self.tool("-restore"),
            &["--noflush", "-w"],
            Some(&batch.render()),
            what,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Protocol;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn dnat_rule_renders_in_iptables_save_order() {
        let rule = Rule::new(
            vec![
                Match::Protocol(Protocol::Tcp),
                Match::DestinationPort(8080),
                Match::Destination {
                    net: net("192.0.2.1/32"),
                    negate: false,
                },
            ],
            Verdict::Dnat {
                addr: "10.0.0.5".parse().unwrap(),
                port: Some(80),
            },
        );
        assert_eq!(
            rule_args(&rule).join(" "),
            "-d 192.0.2.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.5:80"
        );
    }

    #[test]
    fn hairpin_mark_rule_masks_source_network() {
        let rule = Rule::new(
            vec![
                Match::Protocol(Protocol::Udp),
                Match::DestinationPort(53),
                Match::Source {
                    net: net("10.0.0.5/16"),
                    negate: false,
                },
            ],
            Verdict::Jump("CNI-HOSTPORT-SETMARK".into()),
        );
        assert_eq!(
            rule_args(&rule).join(" "),
            "-s 10.0.0.0/16 -p udp -m udp --dport 53 -j CNI-HOSTPORT-SETMARK"
        );
    }

    #[test]
    fn golden_batch_text() {
        let mut b = Batch::new(Family::V6, "nat");
        b.declare_chain("CNI-DN-0123456789abcdef01234");
        b.append(
            "CNI-DN-0123456789abcdef01234",
            &Rule::new(
                vec![Match::Protocol(Protocol::Sctp), Match::DestinationPort(9)],
                Verdict::Dnat {
                    addr: "fd00::5".parse().unwrap(),
                    port: Some(90),
                },
            ),
        );
        b.append(
            "CNI-HOSTPORT-DNAT",
            &Rule::new(
                vec![
                    Match::Comment(r#"dnat name: "net" id: "c1""#.into()),
                    Match::Protocol(Protocol::Sctp),
                    Match::DestinationPorts(vec![9, 10]),
                ],
                Verdict::Jump("CNI-DN-0123456789abcdef01234".into()),
            ),
        );
        b.insert(
            "POSTROUTING",
            &Rule::new(
                vec![Match::Comment("CNI portfwd requiring masquerade".into())],
                Verdict::Jump("CNI-HOSTPORT-MASQ".into()),
            ),
        );
        b.append(
            "CNI-HOSTPORT-MASQ",
            &Rule::new(vec![Match::MarkBits(0x2000)], Verdict::Masquerade),
        );
        b.append(
            "CNI-HOSTPORT-SETMARK",
            &Rule::new(
                vec![Match::Comment("CNI portfwd masquerade mark".into())],
                Verdict::SetMarkBits(0x2000),
            ),
        );
        b.append(
            "CNI-HOSTPORT-DNAT",
            &Rule::new(
                vec![Match::Raw(vec!["!".into(), "-i".into(), "eth9".into()])],
                Verdict::Return,
            ),
        );
        b.delete_args("X", &["-j".into(), "Y".into()]);
        b.flush_chain("X");
        b.delete_chain("X");
        let expected = r#"*nat
:CNI-DN-0123456789abcdef01234 - [0:0]
-A CNI-DN-0123456789abcdef01234 -p sctp -m sctp --dport 9 -j DNAT --to-destination [fd00::5]:90
-A CNI-HOSTPORT-DNAT -p sctp -m comment --comment "dnat name: \"net\" id: \"c1\"" -m multiport --dports 9,10 -j CNI-DN-0123456789abcdef01234
-I POSTROUTING 1 -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
-A CNI-HOSTPORT-DNAT ! -i eth9 -j RETURN
-D X -j Y
-F X
-X X
COMMIT
"#;
        assert_eq!(b.render(), expected);
    }

    #[test]
    fn save_output_parses_back_to_rendered_args() {
        let text = r#"# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"net\" id: \"c1\"" -m multiport --dports 8080 -j CNI-DN-x
COMMIT
"#;
        let t = SavedTable::parse(text);
        let rule = Rule::new(
            vec![
                Match::Comment(r#"dnat name: "net" id: "c1""#.into()),
                Match::Protocol(Protocol::Tcp),
                Match::DestinationPorts(vec![8080]),
            ],
            Verdict::Jump("CNI-DN-x".into()),
        );
        assert_eq!(t.chain("CNI-HOSTPORT-DNAT").unwrap()[0], rule_args(&rule));
        assert_eq!(
            t.chain("PREROUTING").unwrap()[0],
            rule_args(&Rule::new(
                vec![Match::DestinationLocal],
                Verdict::Jump("CNI-HOSTPORT-DNAT".into())
            ))
        );
    }

    #[test]
    fn quoting_round_trips() {
        for s in ["plain", "two words", r#"q"uo\te"#, ""] {
            assert_eq!(split_args(&quote(s)), vec![s.to_string()]);
        }
    }
}
