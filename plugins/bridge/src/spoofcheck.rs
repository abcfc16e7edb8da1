//! `macspoofchk`: frames entering the bridge from a container's veth must carry the MAC
//! the container was given. Same nftables layout and names as the reference plugins
//! (table `bridge nat`, chains `cni-br-iface-<id>-<ifname>[-mac]`, comments
//! `macspoofchk-<id>-<ifname>`), so either implementation removes the other's rules.

use firewall::executor::{run, run_checked};

use cni::error::{Error, Result};

/// The reference's table, in the `bridge` family.
const TABLE: &str = "bridge nat";
/// The reference's base chain, hooked at bridge prerouting before anything else (-300).
const BASE: &str = "PREROUTING";

/// The rule-set's identity: `<containerID>-<ifname>`.
pub fn ref_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn iface_chain(ref_id: &str) -> String {
    format!("cni-br-iface-{ref_id}")
}

fn comment(ref_id: &str) -> String {
    format!("macspoofchk-{ref_id}")
}

/// One `nft -f -` transaction: ensure table and chains, then (re)write this port's rules.
pub fn render_setup(ref_id: &str, host_veth: &str, mac: &str) -> String {
    let ic = iface_chain(ref_id);
    let mc = format!("{ic}-mac");
    let c = comment(ref_id);
    format!(
        "add table {TABLE}\n\
add chain {TABLE} {BASE} {{ type filter hook prerouting priority -300 ; policy accept ; }}\n\
add chain {TABLE} {ic}\n\
add chain {TABLE} {mc}\n\
flush chain {TABLE} {ic}\n\
flush chain {TABLE} {mc}\n\
add rule {TABLE} {BASE} iifname \"{host_veth}\" jump {ic} comment \"{c}\"\n\
add rule {TABLE} {ic} jump {mc} comment \"{c}\"\n\
add rule {TABLE} {mc} ether saddr {mac} return comment \"{c}\"\n\
add rule {TABLE} {mc} drop comment \"{c}\"\n"
    )
}

/// The teardown transaction for what `listing` (`nft -a list table bridge nat`) shows of
/// this rule-set; `None` when nothing of it is there.
pub fn render_teardown(ref_id: &str, listing: &str) -> Option<String> {
    let ic = iface_chain(ref_id);
    let mc = format!("{ic}-mac");
    let tag = format!("comment \"{}\"", comment(ref_id));
    let mut out = String::new();
    let mut chain = String::new();
    let mut chains = Vec::new();
    for line in listing.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("chain ") {
            chain = rest.split_whitespace().next().unwrap_or("").to_string();
            chains.push(chain.clone());
        } else if chain == BASE && t.contains(&tag) {
            if let Some(h) = t
                .rsplit("# handle ")
                .next()
                .and_then(|h| h.trim().parse::<u64>().ok())
            {
                out.push_str(&format!("delete rule {TABLE} {BASE} handle {h}\n"));
            }
        }
    }
    for c in [&ic, &mc] {
        if chains.iter().any(|x| x == c) {
            out.push_str(&format!("flush chain {TABLE} {c}\n"));
        }
    }
    for c in [&ic, &mc] {
        if chains.iter().any(|x| x == c) {
            out.push_str(&format!("delete chain {TABLE} {c}\n"));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn fw(e: firewall::Error) -> Error {
    Error::new(e.code, e.msg).with_details(e.details)
}

/// Installs the check for `host_veth` allowing only `mac`.
pub fn setup(ref_id: &str, host_veth: &str, mac: &str) -> Result<()> {
    let text = render_setup(ref_id, host_veth, mac);
    run_checked("nft", &["-f", "-"], Some(&text), "setting up macspoofchk")
        .map(|_| ())
        .map_err(fw)
}

/// Removes the check; fine when it is not there.
pub fn teardown(ref_id: &str) -> Result<()> {
    let out = run(
        "nft",
        &["-a", "list", "table", "bridge", "nat"],
        None,
        "listing macspoofchk rules",
    )
    .map_err(fw)?;
    if out.status != 0 {
        return Ok(()); // no table: nothing of ours
    }
    match render_teardown(ref_id, &out.stdout) {
        Some(text) => run_checked("nft", &["-f", "-"], Some(&text), "removing macspoofchk")
            .map(|_| ())
            .map_err(fw),
        None => Ok(()),
    }
}

/// True when the check for `ref_id` is installed (CHECK).
pub fn is_present(ref_id: &str) -> Result<bool> {
    let out = run(
        "nft",
        &["list", "chain", "bridge", "nat", BASE],
        None,
        "listing macspoofchk rules",
    )
    .map_err(fw)?;
    Ok(out.status == 0
        && out
            .stdout
            .contains(&format!("comment \"{}\"", comment(ref_id))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_golden() {
        let t = render_setup("c1-eth0", "veth01020304", "0a:58:0a:d5:10:02");
        assert!(t.contains("add chain bridge nat PREROUTING { type filter hook prerouting priority -300 ; policy accept ; }\n"));
        assert!(t.contains("add rule bridge nat PREROUTING iifname \"veth01020304\" jump cni-br-iface-c1-eth0 comment \"macspoofchk-c1-eth0\"\n"));
        assert!(t.ends_with(
            "add rule bridge nat cni-br-iface-c1-eth0-mac drop comment \"macspoofchk-c1-eth0\"\n"
        ));
    }

    #[test]
    fn teardown_finds_the_jump_and_both_chains() {
        let listing = "table bridge nat { # handle 3\n\tchain PREROUTING { # handle 1\n\t\ttype filter hook prerouting priority -300; policy accept;\n\t\tiifname \"veth01020304\" jump cni-br-iface-c1-eth0 comment \"macspoofchk-c1-eth0\" # handle 5\n\t\tiifname \"vethx\" jump cni-br-iface-c2-eth0 comment \"macspoofchk-c2-eth0\" # handle 9\n\t}\n\tchain cni-br-iface-c1-eth0 { # handle 2\n\t}\n\tchain cni-br-iface-c1-eth0-mac { # handle 4\n\t}\n}\n";
        assert_eq!(
            render_teardown("c1-eth0", listing).unwrap(),
            "delete rule bridge nat PREROUTING handle 5\nflush chain bridge nat cni-br-iface-c1-eth0\nflush chain bridge nat cni-br-iface-c1-eth0-mac\ndelete chain bridge nat cni-br-iface-c1-eth0\ndelete chain bridge nat cni-br-iface-c1-eth0-mac\n"
        );
        assert_eq!(render_teardown("c3-eth0", listing), None);
    }
}
