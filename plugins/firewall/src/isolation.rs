//! Network isolation between bridges, the way Docker isolates user-defined networks:
//! a container on one isolating network cannot reach a container on another, while a
//! container attached to both (one interface on each bridge) reaches each, because its
//! traffic to either stays on that bridge and is never forwarded between bridges.
//!
//! Layout (mangle table, IPv4 and IPv6 alike), two stages so that the cost per packet and
//! per network stays constant however many networks isolate:
//! - `FORWARD`: `-j FERRY-ISOLATION-1` first;
//! - `FERRY-ISOLATION-1`: per isolating bridge B, `-i B ! -o B -j FERRY-ISOLATION-2`
//!   (traffic leaving B for somewhere else);
//! - `FERRY-ISOLATION-2`: per isolating bridge B, `-o B -j DROP` (… and that somewhere is
//!   another isolating bridge).
//!
//! Traffic to the outside world or to non-isolating bridges is untouched. Each rule carries
//! the comment `ferry isolate net: <network>` so an operator sees who put it there.
//!
//! Why mangle and not filter (where Docker keeps DOCKER-ISOLATION): in a mixed chain the
//! reference `firewall` plugin inserts `-j CNI-FORWARD` at the top of filter FORWARD after
//! our ADD, and CNI-FORWARD accepts the container subnets, so a drop further down is never
//! reached (podman's own chain, bridge → portmap → firewall, broke isolation that way).
//! mangle FORWARD runs before filter FORWARD for every packet, so no ACCEPT in filter —
//! CNI-FORWARD, DOCKER, a user's rules — can pre-empt isolation, whatever order tools insert.

use crate::error::Result;
use crate::executor::{find_tool, run_checked};

/// First stage chain: selects traffic leaving an isolating bridge.
pub const STAGE1: &str = "FERRY-ISOLATION-1";
/// Second stage chain: drops it when it would enter another isolating bridge.
pub const STAGE2: &str = "FERRY-ISOLATION-2";
/// The table the chains live in (see the module comment for why not filter).
pub const TABLE: &str = "mangle";

/// What `iptables-save -t mangle` says about the isolation chains.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IsolationState {
    /// FERRY-ISOLATION-1 exists.
    pub stage1: bool,
    /// FERRY-ISOLATION-2 exists.
    pub stage2: bool,
    /// FORWARD jumps to stage 1.
    pub forward_jump: bool,
    /// Existing rules as (chain, spec without `-A chain`).
    pub rules: Vec<(String, String)>,
}

/// Reads the isolation chains out of `iptables-save -t filter` output.
pub fn parse_state(save: &str) -> IsolationState {
    let mut st = IsolationState::default();
    for line in save.lines() {
        if line.starts_with(&format!(":{STAGE1} ")) {
            st.stage1 = true;
        } else if line.starts_with(&format!(":{STAGE2} ")) {
            st.stage2 = true;
        } else if let Some(rest) = line.strip_prefix("-A ") {
            if let Some((chain, spec)) = rest.split_once(' ') {
                if chain == "FORWARD" && spec == format!("-j {STAGE1}") {
                    st.forward_jump = true;
                } else if chain == STAGE1 || chain == STAGE2 {
                    st.rules.push((chain.to_string(), spec.to_string()));
                }
            }
        }
    }
    st
}

fn comment(network: &str) -> String {
    format!("\"ferry isolate net: {}\"", network.replace('"', ""))
}

/// The two rules for `bridge`, as iptables-save prints them.
pub fn bridge_rules(bridge: &str, network: &str) -> [(String, String); 2] {
    let c = comment(network);
    [
        (
            STAGE1.to_string(),
            format!("-i {bridge} ! -o {bridge} -m comment --comment {c} -j {STAGE2}"),
        ),
        (
            STAGE2.to_string(),
            format!("-o {bridge} -m comment --comment {c} -j DROP"),
        ),
    ]
}

fn mentions_bridge(spec: &str, bridge: &str) -> bool {
    let words: Vec<&str> = spec.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| (w[0] == "-i" || w[0] == "-o") && w[1] == bridge)
}

/// iptables-restore --noflush input adding whatever is missing for `bridge`; `None` when
/// everything is in place. Never declares existing chains (that would flush them).
pub fn render_ensure(bridge: &str, network: &str, st: &IsolationState) -> Option<String> {
    let mut body = String::new();
    if !st.stage1 {
        body.push_str(&format!("-N {STAGE1}\n"));
    }
    if !st.stage2 {
        body.push_str(&format!("-N {STAGE2}\n"));
    }
    for (chain, spec) in bridge_rules(bridge, network) {
        if !st
            .rules
            .iter()
            .any(|(c, s)| *c == chain && mentions_bridge(s, bridge))
        {
            body.push_str(&format!("-A {chain} {spec}\n"));
        }
    }
    if !st.forward_jump {
        body.push_str(&format!("-I FORWARD 1 -j {STAGE1}\n"));
    }
    if body.is_empty() {
        None
    } else {
        Some(format!("*{TABLE}\n{body}COMMIT\n"))
    }
}

/// iptables-restore --noflush input removing `bridge`'s rules, and the chains and the
/// FORWARD jump too when no other bridge still isolates; `None` when nothing is there.
pub fn render_remove(bridge: &str, st: &IsolationState) -> Option<String> {
    let (mine, others): (Vec<_>, Vec<_>) = st
        .rules
        .iter()
        .partition(|(_, s)| mentions_bridge(s, bridge));
    let mut body: String = mine.iter().map(|(c, s)| format!("-D {c} {s}\n")).collect();
    if others.is_empty() && (st.stage1 || st.stage2 || st.forward_jump) {
        if st.forward_jump {
            body.push_str(&format!("-D FORWARD -j {STAGE1}\n"));
        }
        if st.stage1 {
            body.push_str(&format!("-X {STAGE1}\n"));
        }
        if st.stage2 {
            body.push_str(&format!("-X {STAGE2}\n"));
        }
    }
    if body.is_empty() {
        None
    } else {
        Some(format!("*{TABLE}\n{body}COMMIT\n"))
    }
}

/// Bridges that currently have isolation rules.
pub fn isolated_bridges(st: &IsolationState) -> Vec<String> {
    let mut out: Vec<String> = st
        .rules
        .iter()
        .filter(|(c, _)| c == STAGE2)
        .filter_map(|(_, s)| {
            let w: Vec<&str> = s.split_whitespace().collect();
            w.windows(2)
                .find(|p| p[0] == "-o")
                .map(|p| p[1].to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn families() -> Vec<(&'static str, &'static str)> {
    [
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ]
    .into_iter()
    .filter(|(s, r)| find_tool(s).is_some() && find_tool(r).is_some())
    .collect()
}

/// Makes `bridge` an isolating bridge (idempotent, both families). A concurrent ADD may
/// create a chain between our read and our write; the batch then fails as a whole and is
/// recomputed once.
pub fn ensure(bridge: &str, network: &str) -> Result<()> {
    let what = format!("isolating bridge {bridge} (network {network:?})");
    let fams = families();
    if fams.is_empty() {
        // Never report success for a security feature we could not install.
        return Err(crate::error::Error::tool(
            &what,
            "iptables-restore",
            "iptables-save/iptables-restore not found in PATH or /usr/sbin: \"isolate\" needs them",
            "",
        ));
    }
    for (save, restore) in fams {
        let mut attempt = 0;
        loop {
            let st = parse_state(&run_checked(save, &["-t", TABLE], None, &what)?);
            let Some(text) = render_ensure(bridge, network, &st) else {
                break;
            };
            match run_checked(restore, &["--noflush", "-w"], Some(&text), &what) {
                Ok(_) => break,
                Err(e) if attempt >= 2 => return Err(e),
                Err(_) => attempt += 1,
            }
        }
    }
    Ok(())
}

/// Removes `bridge`'s isolation rules (both families); Ok when there are none.
pub fn remove(bridge: &str) -> Result<()> {
    let what = format!("removing isolation of bridge {bridge}");
    for (save, restore) in families() {
        let st = parse_state(&run_checked(save, &["-t", TABLE], None, &what)?);
        if let Some(text) = render_remove(bridge, &st) {
            run_checked(restore, &["--noflush", "-w"], Some(&text), &what)?;
        }
    }
    Ok(())
}

/// Bridges with isolation rules in the IPv4 table (for GC of bridges that no longer exist).
pub fn list() -> Result<Vec<String>> {
    let st = parse_state(&run_checked(
        "iptables-save",
        &["-t", TABLE],
        None,
        "listing isolated bridges",
    )?);
    Ok(isolated_bridges(&st))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bridge_creates_chains_rules_and_forward_jump() {
        let text = render_ensure("fbrfront", "frontend", &IsolationState::default()).unwrap();
        assert_eq!(
            text,
            "*mangle\n-N FERRY-ISOLATION-1\n-N FERRY-ISOLATION-2\n\
-A FERRY-ISOLATION-1 -i fbrfront ! -o fbrfront -m comment --comment \"ferry isolate net: frontend\" -j FERRY-ISOLATION-2\n\
-A FERRY-ISOLATION-2 -o fbrfront -m comment --comment \"ferry isolate net: frontend\" -j DROP\n\
-I FORWARD 1 -j FERRY-ISOLATION-1\nCOMMIT\n"
        );
    }

    #[test]
    fn ensure_is_idempotent_and_remove_takes_only_that_bridge() {
        let save = "*mangle\n:FORWARD ACCEPT [0:0]\n:FERRY-ISOLATION-1 - [0:0]\n:FERRY-ISOLATION-2 - [0:0]\n\
-A FORWARD -j FERRY-ISOLATION-1\n\
-A FERRY-ISOLATION-1 -i fbrfront ! -o fbrfront -m comment --comment \"ferry isolate net: frontend\" -j FERRY-ISOLATION-2\n\
-A FERRY-ISOLATION-1 -i fbrback ! -o fbrback -m comment --comment \"ferry isolate net: backend\" -j FERRY-ISOLATION-2\n\
-A FERRY-ISOLATION-2 -o fbrfront -m comment --comment \"ferry isolate net: frontend\" -j DROP\n\
-A FERRY-ISOLATION-2 -o fbrback -m comment --comment \"ferry isolate net: backend\" -j DROP\nCOMMIT\n";
        let st = parse_state(save);
        assert!(st.stage1 && st.stage2 && st.forward_jump);
        assert_eq!(render_ensure("fbrfront", "frontend", &st), None);
        assert_eq!(
            isolated_bridges(&st),
            vec!["fbrback".to_string(), "fbrfront".to_string()]
        );
        let rm = render_remove("fbrback", &st).unwrap();
        assert_eq!(rm.lines().filter(|l| l.starts_with("-D ")).count(), 2);
        assert!(!rm.contains("fbrfront"));
        assert_eq!(render_remove("fbrother", &st), None);
        let last = parse_state(
            "*mangle\n:FERRY-ISOLATION-1 - [0:0]\n:FERRY-ISOLATION-2 - [0:0]\n-A FORWARD -j FERRY-ISOLATION-1\n\
-A FERRY-ISOLATION-2 -o fbrback -m comment --comment \"ferry isolate net: backend\" -j DROP\nCOMMIT\n",
        );
        assert_eq!(
            render_remove("fbrback", &last).unwrap(),
            "*mangle\n-D FERRY-ISOLATION-2 -o fbrback -m comment --comment \"ferry isolate net: backend\" -j DROP\n\
-D FORWARD -j FERRY-ISOLATION-1\n-X FERRY-ISOLATION-1\n-X FERRY-ISOLATION-2\nCOMMIT\n"
        );
    }
}
