//! Naming who holds a host port, so a conflict says "nginx (pid 1234)" instead of
//! "address in use": /proc/net/{tcp,tcp6,udp,udp6} give the socket inode bound to the port,
//! /proc/<pid>/fd/* give the process holding that inode.

use crate::state::Proto;
use std::collections::BTreeSet;
use std::fs;

/// TCP state LISTEN in /proc/net/tcp (include/net/tcp_states.h).
const TCP_LISTEN: &str = "0A";

/// Finds the socket inodes bound to `port` in one /proc/net table's text. For TCP only
/// listening sockets count (a connection using the port as its local end does not hold
/// it against bind); for UDP any bound socket does.
pub fn inodes_bound_to(table: &str, port: u16, tcp: bool) -> BTreeSet<u64> {
    let mut found = BTreeSet::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 {
            continue;
        }
        let Some((_, port_hex)) = fields[1].rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
            continue;
        }
        if tcp && fields[3] != TCP_LISTEN {
            continue;
        }
        if let Ok(inode) = fields[9].parse::<u64>() {
            if inode != 0 {
                found.insert(inode);
            }
        }
    }
    found
}

/// Finds the socket inodes of SCTP endpoints bound to `port` in /proc/net/sctp/eps
/// (columns ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS; the port is decimal there).
pub fn sctp_inodes_bound_to(table: &str, port: u16) -> BTreeSet<u64> {
    let mut found = BTreeSet::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || fields[5].parse::<u16>().ok() != Some(port) {
            continue;
        }
        if let Ok(inode) = fields[7].parse::<u64>() {
            if inode != 0 {
                found.insert(inode);
            }
        }
    }
    found
}

/// Names the process holding `port` for `proto`: `name (pid N)`. None when the socket or
/// its process cannot be found (another network namespace, a kernel socket, no permission).
pub fn find_port_holder(proto: Proto, port: u16) -> Option<String> {
    let tables: &[&str] = match proto {
        Proto::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => &["/proc/net/udp", "/proc/net/udp6"],
        // One table for both families; absent when the kernel has no SCTP.
        Proto::Sctp => &["/proc/net/sctp/eps"],
    };
    let mut inodes = BTreeSet::new();
    for table in tables {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(match proto {
                Proto::Sctp => sctp_inodes_bound_to(&text, port),
                _ => inodes_bound_to(&text, port, proto == Proto::Tcp),
            });
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: BTreeSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                if target.to_str().is_some_and(|t| wanted.contains(t)) {
                    let comm = fs::read_to_string(entry.path().join("comm"))
                        .map(|c| c.trim().to_string())
                        .unwrap_or_else(|_| "unknown".into());
                    return Some(format!("{comm} (pid {pid})"));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn sctp_endpoint_table() {
        let table = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
                     0000000000000000 0000000000000000 1   10  41   23456     0 98765 127.0.0.1\n\
                     0000000000000000 0000000000000000 1   10  42   2345     0 11111 ::1\n";
        assert_eq!(
            sctp_inodes_bound_to(table, 23456)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![98765]
        );
        assert!(sctp_inodes_bound_to(table, 80).is_empty());
    }

    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 34567 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listeners_on_the_port_count_for_tcp() {
        assert_eq!(inodes_bound_to(TCP, 8080, true), BTreeSet::from([12345]));
        assert_eq!(inodes_bound_to(TCP, 80, true), BTreeSet::from([34567]));
        assert_eq!(
            inodes_bound_to(TCP, 8080, false),
            BTreeSet::from([12345, 23456])
        );
        assert!(inodes_bound_to(TCP, 81, true).is_empty());
    }

    #[test]
    fn finds_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let holder = find_port_holder(Proto::Tcp, port).unwrap();
        assert!(
            holder.contains(&format!("(pid {})", std::process::id())),
            "{holder}"
        );
    }
}
