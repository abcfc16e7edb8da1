//! Host settings portmap touches besides the firewall: `route_localnet` and conntrack.

use firewall::executor::run;
use firewall::Family;
use std::net::Ipv4Addr;

/// The interface the main routing table uses to reach `dst` (longest prefix in
/// `/proc/net/route`, which lists the main table with little-endian hex fields).
pub fn route_interface(routes: &str, dst: Ipv4Addr) -> Option<String> {
    let dst = u32::from(dst);
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let net = u32::from_be(u32::from_str_radix(f[1], 16).ok()?);
            let mask = u32::from_be(u32::from_str_radix(f[7], 16).ok()?);
            (dst & mask == net).then(|| (mask.count_ones(), f[0].to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, iface)| iface)
}

/// Lets 127.0.0.1 cross a routing boundary on the interface towards the container, so
/// `127.0.0.1:hostPort` from the host reaches it (the reference does the same).
pub fn enable_route_localnet(container: Ipv4Addr) -> cni::Result<()> {
    let Ok(routes) = std::fs::read_to_string("/proc/net/route") else {
        return Ok(());
    };
    let Some(iface) = route_interface(&routes, container) else {
        return Ok(());
    };
    if iface.contains('/') || iface.contains("..") {
        return Ok(());
    }
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&path, "1").map_err(|e| {
        cni::Error::new(
            cni::code::INTERNAL,
            format!("unable to enable route_localnet: writing {path}: {e}"),
        )
    })
}

/// Whether the process that ran this plugin is podman (its CNI backend binds every published
/// port itself after ADD, when run as root). Used only when `runtimeBindsPorts` is not set.
pub fn parent_is_podman() -> bool {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    std::fs::read_to_string(format!("/proc/{ppid}/comm")).is_ok_and(|c| c.trim() == "podman")
}

/// Deletes UDP conntrack entries towards `port`, so datagrams keep going to the current
/// container instead of an entry naming an old one. Best effort: "0 flow entries" is not a
/// failure, and a missing `conntrack` tool only costs the flush.
pub fn flush_udp_conntrack(family: Family, port: u16) -> Result<(), String> {
    let fam = match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    };
    let port = port.to_string();
    let out = run(
        "conntrack",
        &["-D", "-f", fam, "-p", "udp", "--dport", &port],
        None,
        "flushing UDP conntrack",
    )
    .map_err(|e| e.msg)?;
    if out.status == 0 || out.stderr.contains("0 flow entries") {
        return Ok(());
    }
    Err(out.stderr.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\nfpmbr0\t0020D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            route_interface(routes, "10.213.32.5".parse().unwrap()).as_deref(),
            Some("fpmbr0")
        );
        assert_eq!(
            route_interface(routes, "8.8.8.8".parse().unwrap()).as_deref(),
            Some("eth0")
        );
    }
}
