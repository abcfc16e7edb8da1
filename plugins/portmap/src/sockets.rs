//! Host processes holding a port: inet_diag (TCP), `/proc/net/{tcp,udp}{,6}`,
//! `/proc/net/sctp/eps` and `/proc/<pid>/fd`.

use crate::state::{Claim, ProtocolName};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A bound socket from `/proc/net/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSocket {
    /// Local address.
    pub addr: IpAddr,
    /// Local port.
    pub port: u16,
    /// Socket inode (to find the owning process).
    pub inode: u64,
}

/// TCP state LISTEN in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// UDP "state" of a bound, unconnected socket.
const UDP_UNCONNECTED: &str = "07";

/// Parses one `/proc/net/{tcp,udp}{,6}` table, keeping listening TCP sockets or bound UDP
/// sockets.
pub fn parse_proc_net(text: &str, tcp: bool) -> Vec<BoundSocket> {
    let wanted_state = if tcp { TCP_LISTEN } else { UDP_UNCONNECTED };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != wanted_state {
                return None;
            }
            let (addr_hex, port_hex) = f[1].split_once(':')?;
            Some(BoundSocket {
                addr: parse_hex_addr(addr_hex)?,
                port: u16::from_str_radix(port_hex, 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// `/proc/net` prints addresses as native-endian 32-bit words in hex.
fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(hex, 16).ok()?.to_ne_bytes(),
        ))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4-mapped address is an IPv4 socket on a dual-stack listener.
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// True when a socket bound to `addr` would receive traffic the claim redirects.
/// A `::` listener also accepts IPv4 unless it is IPV6_V6ONLY, which /proc does not show,
/// so it counts for both families.
fn socket_overlaps(claim: &Claim, addr: IpAddr) -> bool {
    let same_family = matches!(
        (claim.family, addr),
        (4, IpAddr::V4(_)) | (6, IpAddr::V6(_))
    );
    let dual_stack_any = addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    if !same_family && !dual_stack_any {
        return false;
    }
    match claim.addr {
        None => true,
        Some(want) => addr.is_unspecified() || addr == want,
    }
}

/// A host socket in the way of `claim`: (address, pid and process name when found).
pub fn find_holder(claim: &Claim) -> Option<(BoundSocket, Option<(u32, String)>)> {
    let candidates: Vec<BoundSocket> = match claim.protocol {
        // Listening TCP sockets come from inet_diag, which walks only the listening hash;
        // reading /proc/net/tcp walks every bucket of the (system-wide, large) established
        // hash and costs milliseconds even in an empty namespace.
        ProtocolName::Tcp => match (
            tcp_listeners(libc::AF_INET as u8),
            tcp_listeners(libc::AF_INET6 as u8),
        ) {
            (Ok(mut v4), Ok(v6)) => {
                v4.extend(v6);
                v4
            }
            _ => read_proc(&["/proc/net/tcp", "/proc/net/tcp6"], true),
        },
        ProtocolName::Udp => read_proc(&["/proc/net/udp", "/proc/net/udp6"], false),
        // Absent when the kernel has no SCTP (then no process can hold an SCTP port).
        ProtocolName::Sctp => std::fs::read_to_string(SCTP_EPS)
            .map(|t| parse_sctp_eps(&t))
            .unwrap_or_default(),
    };
    let s = candidates
        .into_iter()
        .find(|s| s.port == claim.port && socket_overlaps(claim, s.addr))?;
    let holder = process_of_inode(s.inode);
    Some((s, holder))
}

/// SCTP endpoints of the current network namespace (only with `CONFIG_IP_SCTP`).
const SCTP_EPS: &str = "/proc/net/sctp/eps";
/// SCTP socket state LISTENING (the kernel uses TCP_LISTEN's value).
const SCTP_LISTENING: &str = "10";

/// Parses `/proc/net/sctp/eps`, keeping listening endpoints: one entry per local address.
/// Columns: `ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS…`, with the port in decimal and
/// the addresses printed like `192.0.2.1` or (IPv6) `fd00:0213:…:0001`, `0.0.0.0` / all
/// zeros for a wildcard bind.
pub fn parse_sctp_eps(text: &str) -> Vec<BoundSocket> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || f[3] != SCTP_LISTENING {
            continue;
        }
        let (Ok(port), Ok(inode)) = (f[5].parse::<u16>(), f[7].parse::<u64>()) else {
            continue;
        };
        for a in &f[8..] {
            if let Ok(addr) = a.trim_start_matches('*').parse::<IpAddr>() {
                let addr = match addr {
                    IpAddr::V6(v6) => v6
                        .to_ipv4_mapped()
                        .map(IpAddr::V4)
                        .unwrap_or(IpAddr::V6(v6)),
                    v4 => v4,
                };
                out.push(BoundSocket { addr, port, inode });
            }
        }
    }
    out
}

fn read_proc(files: &[&str], tcp: bool) -> Vec<BoundSocket> {
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| parse_proc_net(&text, tcp))
        .collect()
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN_STATE: u32 = 10;
const INET_DIAG_MSG_LEN: usize = 72;

/// Listening TCP sockets of `family` (AF_INET / AF_INET6) from inet_diag.
pub fn tcp_listeners(family: u8) -> std::io::Result<Vec<BoundSocket>> {
    use crate::netlink::{Socket, NETLINK_SOCK_DIAG};
    let sock = Socket::open(NETLINK_SOCK_DIAG)?;
    // nlmsghdr + inet_diag_req_v2 (family, protocol, ext, pad, states, 48-byte sockid)
    let mut req = Vec::with_capacity(16 + 56);
    req.extend_from_slice(&((16 + 56) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&(1u32 << TCP_LISTEN_STATE).to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]);
    sock.send(&req)?;
    let mut out = Vec::new();
    sock.read_dump(1 << 16, |_, payload| {
        out.extend(parse_inet_diag_msg(payload))
    })?;
    Ok(out)
}

/// Reads address, port and inode from one `inet_diag_msg`.
pub fn parse_inet_diag_msg(m: &[u8]) -> Option<BoundSocket> {
    if m.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let port = u16::from_be_bytes([m[4], m[5]]);
    let addr = match m[0] as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(m[8], m[9], m[10], m[11])),
        libc::AF_INET6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&m[8..24]);
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    let inode = u32::from_ne_bytes([m[68], m[69], m[70], m[71]]) as u64;
    Some(BoundSocket { addr, port, inode })
}

/// The process with a descriptor on socket `inode` (scans `/proc/*/fd`; only runs when a
/// conflict was found).
pub fn process_of_inode(inode: u64) -> Option<(u32, String)> {
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Some((pid, name));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_tcp_and_v4_mapped() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:55F0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1\n   1: 0100007F:55F1 0100007F:1234 01 00000000:00000000 00:00000000 00000000     0        0 999 1\n";
        let s = parse_proc_net(v4, true);
        assert_eq!(
            s,
            vec![BoundSocket {
                addr: "127.0.0.1".parse().unwrap(),
                port: 22000,
                inode: 12345
            }]
        );
        let v6 = "header\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        let s = parse_proc_net(v6, true);
        assert_eq!(s[0].addr, "::".parse::<IpAddr>().unwrap());
        assert_eq!(s[0].port, 8080);
    }

    #[test]
    fn parses_sctp_endpoints() {
        // A fixture in the kernel's format (net/sctp/proc.c): listening endpoints bound to
        // the IPv4 wildcard, to two addresses, to the IPv6 wildcard and to one IPv6 address;
        // a closed one (SST 7) is skipped.
        let text = include_str!("../../../testdata/portmap/proc-net-sctp-eps.txt");
        let got: Vec<(String, u16, u64)> = parse_sctp_eps(text)
            .into_iter()
            .map(|s| (s.addr.to_string(), s.port, s.inode))
            .collect();
        let want: Vec<(String, u16, u64)> = [
            ("0.0.0.0", 22050, 41877),
            ("192.0.2.10", 22051, 41893),
            ("198.51.100.7", 22051, 41893),
            ("::", 22052, 41901),
            ("fd00:213:32::1", 22053, 41917),
            ("127.0.0.1", 22055, 41933),
        ]
        .iter()
        .map(|(a, p, i)| (a.to_string(), *p, *i))
        .collect();
        assert_eq!(got, want);
        let claim = |port, family, addr: Option<&str>| Claim {
            protocol: ProtocolName::Sctp,
            port,
            family,
            addr: addr.map(|a| a.parse().unwrap()),
        };
        let socks = parse_sctp_eps(text);
        let held = |c: &Claim| {
            socks
                .iter()
                .any(|s| s.port == c.port && socket_overlaps(c, s.addr))
        };
        assert!(held(&claim(22050, 4, Some("192.0.2.99"))), "IPv4 wildcard");
        assert!(held(&claim(22051, 4, Some("198.51.100.7"))));
        assert!(!held(&claim(22051, 4, Some("192.0.2.11"))));
        assert!(held(&claim(22052, 4, None)), ":: also takes IPv4");
        assert!(!held(&claim(22054, 4, None)), "not listening");
        assert!(held(&claim(22053, 6, None)));
        assert!(!held(&claim(22053, 4, None)));
    }

    #[test]
    fn parses_inet_diag_message() {
        let mut m = vec![0u8; INET_DIAG_MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[1] = 10;
        m[4..6].copy_from_slice(&22000u16.to_be_bytes());
        m[8..12].copy_from_slice(&[127, 0, 0, 1]);
        m[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        assert_eq!(
            parse_inet_diag_msg(&m),
            Some(BoundSocket {
                addr: "127.0.0.1".parse().unwrap(),
                port: 22000,
                inode: 4242
            })
        );
    }

    #[test]
    fn overlap_rules() {
        let c = |family, addr: Option<&str>| Claim {
            protocol: ProtocolName::Tcp,
            port: 1,
            family,
            addr: addr.map(|a| a.parse().unwrap()),
        };
        assert!(socket_overlaps(&c(4, None), "127.0.0.1".parse().unwrap()));
        assert!(socket_overlaps(
            &c(4, Some("192.0.2.1")),
            "0.0.0.0".parse().unwrap()
        ));
        assert!(!socket_overlaps(
            &c(4, Some("192.0.2.1")),
            "192.0.2.2".parse().unwrap()
        ));
        assert!(socket_overlaps(&c(4, None), "::".parse().unwrap()));
        assert!(!socket_overlaps(&c(6, None), "0.0.0.0".parse().unwrap()));
    }
}
