//! Deleting UDP conntrack entries over ctnetlink: one dump per family, then one delete per
//! matching entry, in-process (no `conntrack` tool per port).
//!
//! Why: a UDP "connection" to hostIP:hostPort keeps its DNAT target for as long as datagrams
//! flow, so a re-created container with a new address would never see them.

use crate::netlink::{messages, nl_error, Socket, NETLINK_NETFILTER, NLMSG_DONE, NLMSG_ERROR};
use std::collections::BTreeSet;
use std::io;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink attributes of a buffer: (type without flags, payload, whole attribute bytes).
pub fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len], &buf[..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// For one conntrack entry (attributes after the nfgenmsg header): the bytes a delete
/// request needs (original tuple, zone) when it is UDP towards one of `ports`.
pub fn matching_entry(attrs: &[u8], ports: &BTreeSet<u16>) -> Option<Vec<u8>> {
    let all = attributes(attrs);
    let (_, orig, orig_raw) = all.iter().find(|(k, _, _)| *k == CTA_TUPLE_ORIG)?;
    let (_, proto, _) = attributes(orig)
        .into_iter()
        .find(|(k, _, _)| *k == CTA_TUPLE_PROTO)?;
    let proto_attrs = attributes(proto);
    let num = proto_attrs
        .iter()
        .find(|(k, _, _)| *k == CTA_PROTO_NUM)?
        .1
        .first()
        .copied()?;
    let dport = proto_attrs
        .iter()
        .find(|(k, _, _)| *k == CTA_PROTO_DST_PORT)?
        .1;
    if num != IPPROTO_UDP
        || dport.len() < 2
        || !ports.contains(&u16::from_be_bytes([dport[0], dport[1]]))
    {
        return None;
    }
    let mut request = orig_raw.to_vec();
    request.resize(align4(request.len()), 0);
    if let Some((_, _, zone)) = all.iter().find(|(k, _, _)| *k == CTA_ZONE) {
        request.extend_from_slice(zone);
        request.resize(align4(request.len()), 0);
    }
    Some(request)
}

fn message(kind: u16, flags: u16, seq: u32, family: u8, payload: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(payload);
    m
}

/// Deletes the UDP entries of `family` (`libc::AF_INET`/`AF_INET6`) whose original
/// destination port is in `ports`; returns how many were deleted.
pub fn delete_udp(family: u8, ports: &BTreeSet<u16>) -> io::Result<usize> {
    if ports.is_empty() {
        return Ok(0);
    }
    let sock = Socket::open(NETLINK_NETFILTER)?;
    sock.send(&message(
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        family,
        &[],
    ))?;
    let mut doomed = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    'dump: loop {
        let n = sock.recv(&mut buf)?;
        if n == 0 {
            break;
        }
        for (kind, payload) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => {
                    if let Some(errno) = nl_error(payload) {
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                }
                _ => {
                    if let Some(req) = payload
                        .get(4..)
                        .and_then(|attrs| matching_entry(attrs, ports))
                    {
                        doomed.push(req);
                    }
                }
            }
        }
    }
    let mut deleted = 0;
    for (i, req) in doomed.iter().enumerate() {
        sock.send(&message(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            2 + i as u32,
            family,
            req,
        ))?;
        let n = sock.recv(&mut buf)?;
        for (kind, payload) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR {
                match nl_error(payload) {
                    None => deleted += 1,
                    // Gone meanwhile (timed out or deleted by someone else): fine.
                    Some(libc::ENOENT) => {}
                    Some(errno) => return Err(io::Error::from_raw_os_error(errno)),
                }
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align4(a.len()), 0);
        a
    }

    fn entry(proto: u8, dport: u16) -> Vec<u8> {
        let ip = attr(1 | 0x8000, &attr(1, &[10, 0, 0, 1]));
        let mut p = attr(CTA_PROTO_NUM, &[proto]);
        p.extend(attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes()));
        let mut tuple = ip;
        tuple.extend(attr(CTA_TUPLE_PROTO | 0x8000, &p));
        let mut e = attr(CTA_TUPLE_ORIG | 0x8000, &tuple);
        e.extend(attr(3, &[0; 8]));
        e
    }

    #[test]
    fn matches_udp_to_mapped_port_only() {
        let ports: BTreeSet<u16> = [22003].into();
        let req = matching_entry(&entry(IPPROTO_UDP, 22003), &ports).unwrap();
        assert_eq!(attributes(&req)[0].0, CTA_TUPLE_ORIG);
        assert!(matching_entry(&entry(6, 22003), &ports).is_none());
        assert!(matching_entry(&entry(IPPROTO_UDP, 22004), &ports).is_none());
    }
}
