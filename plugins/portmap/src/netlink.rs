//! Minimal netlink plumbing for the in-process queries portmap makes (conntrack, socket
//! diagnostics, and two O(1) nf_tables reads): a bound socket and a message splitter.

use std::io;

/// `NETLINK_NETFILTER` (ctnetlink).
pub const NETLINK_NETFILTER: libc::c_int = 12;
/// `NETLINK_SOCK_DIAG` (inet_diag).
pub const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// Error or acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// End of a dump.
pub const NLMSG_DONE: u16 = 3;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A bound netlink socket (netlink-sys's blocking socket), closed on drop.
pub struct Socket(netlink_sys::Socket);

impl Socket {
    /// Opens a netlink socket of `protocol` and binds it to a kernel-chosen port id.
    pub fn open(protocol: libc::c_int) -> io::Result<Socket> {
        let mut sock = netlink_sys::Socket::new(protocol as isize)?;
        sock.bind_auto()?;
        Ok(Socket(sock))
    }

    /// Sends one message.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.0.send(msg, 0).map(drop)
    }

    /// Receives one datagram (possibly several messages).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(&mut &mut buf[..], 0)
    }

    /// Reads the replies of a dump request already sent, handing each message (type,
    /// payload) to `each`, until NLMSG_DONE, an acknowledgement or the end of the stream.
    /// An NLMSG_ERROR with an errno ends it with that error. `buf_len` is the receive
    /// buffer: a dump datagram larger than it is cut.
    pub fn read_dump(&self, buf_len: usize, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; buf_len];
        loop {
            let n = self.recv(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            for (kind, payload) in messages(&buf[..n]) {
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        return match nl_error(payload) {
                            None => Ok(()),
                            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
                        }
                    }
                    _ => each(kind, payload),
                }
            }
        }
    }
}

/// Netlink messages in a received buffer: (type, flags-free payload).
pub fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[16..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The errno of an NLMSG_ERROR payload; `None` for an acknowledgement.
pub fn nl_error(payload: &[u8]) -> Option<i32> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    (code != 0).then_some(-code)
}

/// nf_tables' netlink subsystem (`NFNL_SUBSYS_NFTABLES`).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NFTA_GEN_ID: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_USE: u16 = 6;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSET: u16 = 9;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NLM_F_DUMP: u16 = 0x300;

/// `NFPROTO_IPV4` / `NFPROTO_IPV6` for [`nft_chain_use`].
pub const NFPROTO_IPV4: u8 = 2;
/// See [`NFPROTO_IPV4`].
pub const NFPROTO_IPV6: u8 = 10;

/// An nfnetlink request: header, `nfgenmsg` for `family`, then string attributes.
fn nfnl_request(kind: u16, family: u8, attrs: &[(u16, &str)]) -> Vec<u8> {
    nfnl_message(kind, NLM_F_REQUEST, family, attrs)
}

fn nfnl_message(kind: u16, flags: u16, family: u8, attrs: &[(u16, &str)]) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0];
    for (t, s) in attrs {
        let len = 4 + s.len() + 1;
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&t.to_ne_bytes());
        body.extend_from_slice(s.as_bytes());
        body.push(0);
        body.resize(align4(body.len()), 0);
    }
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&[0u8; 8]);
    msg.extend_from_slice(&body);
    msg
}

/// The value of attribute `want` of an nfnetlink reply payload (after `nfgenmsg`).
fn nfnl_attr(payload: &[u8], want: u16) -> Option<&[u8]> {
    let mut rest = payload.get(4..)?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == want {
            return Some(&rest[4..len]);
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    None
}

/// The big-endian u32 attribute `want` of an nfnetlink reply payload (after `nfgenmsg`).
pub fn nfnl_u32_attr(payload: &[u8], want: u16) -> Option<u32> {
    Some(u32::from_be_bytes(
        nfnl_attr(payload, want)?.get(..4)?.try_into().ok()?,
    ))
}

/// Sends one nf_tables GET and returns the payload of the reply of type `reply`; `None`
/// when the object does not exist.
fn nft_get(request: &[u8], reply: u16) -> io::Result<Option<Vec<u8>>> {
    let sock = Socket::open(NETLINK_NETFILTER)?;
    sock.send(request)?;
    let mut buf = vec![0u8; 8192];
    let n = sock.recv(&mut buf)?;
    for (kind, payload) in messages(&buf[..n]) {
        if kind == NLMSG_ERROR {
            return match nl_error(payload) {
                Some(libc::ENOENT) => Ok(None),
                Some(errno) => Err(io::Error::from_raw_os_error(errno)),
                None => Ok(None),
            };
        }
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | reply {
            return Ok(Some(payload.to_vec()));
        }
    }
    Err(io::Error::other("no reply from nf_tables"))
}

/// The string attribute `want` of an nfnetlink reply payload (after `nfgenmsg`).
pub fn nfnl_str_attr(payload: &[u8], want: u16) -> Option<String> {
    let raw = nfnl_attr(payload, want)?;
    let raw = raw.split(|b| *b == 0).next().unwrap_or(raw);
    String::from_utf8(raw.to_vec()).ok()
}

/// Names of the sets and maps of one nf_tables table, without their elements (a dump of
/// set declarations only: its cost does not grow with the number of elements). Empty when
/// the table does not exist.
pub fn nft_set_names(family: u8, table: &str) -> io::Result<Vec<String>> {
    let sock = Socket::open(NETLINK_NETFILTER)?;
    sock.send(&nfnl_message(
        NFT_MSG_GETSET,
        NLM_F_REQUEST | NLM_F_DUMP,
        family,
        &[(NFTA_SET_TABLE, table)],
    ))?;
    let mut names = Vec::new();
    let read = sock.read_dump(32768, |kind, payload| {
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET {
            names.extend(nfnl_str_attr(payload, NFTA_SET_NAME));
        }
    });
    match read {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(names),
        Err(e) => Err(e),
        Ok(()) => Ok(names),
    }
}

/// The nf_tables generation of the current network namespace: it changes with every
/// committed transaction (nft, iptables-nft), whoever made it.
pub fn nft_genid() -> io::Result<u32> {
    let payload = nft_get(&nfnl_request(NFT_MSG_GETGEN, 0, &[]), NFT_MSG_NEWGEN)?
        .ok_or_else(|| io::Error::other("nf_tables has no generation"))?;
    nfnl_u32_attr(&payload, NFTA_GEN_ID)
        .ok_or_else(|| io::Error::other("nf_tables generation reply without an ID"))
}

/// The use count of an nf_tables chain (its rules plus the jumps to it), or `None` when the
/// chain does not exist. One small request, whatever the size of the ruleset.
pub fn nft_chain_use(family: u8, table: &str, chain: &str) -> io::Result<Option<u32>> {
    let req = nfnl_request(
        NFT_MSG_GETCHAIN,
        family,
        &[(NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, chain)],
    );
    Ok(nft_get(&req, NFT_MSG_NEWCHAIN)?.and_then(|p| nfnl_u32_attr(&p, NFTA_CHAIN_USE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfnetlink_request_and_reply_attributes() {
        let req = nfnl_request(
            NFT_MSG_GETCHAIN,
            NFPROTO_IPV4,
            &[
                (NFTA_CHAIN_TABLE, "nat"),
                (NFTA_CHAIN_NAME, "CNI-HOSTPORT-DNAT"),
            ],
        );
        // header 16 + nfgenmsg 4 + "nat\0" (8) + "CNI-HOSTPORT-DNAT\0" (4 + 18 → 24)
        assert_eq!(req.len(), 16 + 4 + 8 + 24);
        assert_eq!(
            u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize,
            req.len()
        );
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), (10 << 8) | 4);
        assert_eq!(req[16], NFPROTO_IPV4);
        // a NEWCHAIN payload: nfgenmsg, NFTA_CHAIN_TABLE "nat", NFTA_CHAIN_USE 1002
        let mut p = vec![2, 0, 0, 10];
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&NFTA_CHAIN_TABLE.to_ne_bytes());
        p.extend_from_slice(b"nat\0");
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&NFTA_CHAIN_USE.to_ne_bytes());
        p.extend_from_slice(&1002u32.to_be_bytes());
        assert_eq!(nfnl_u32_attr(&p, NFTA_CHAIN_USE), Some(1002));
        assert_eq!(nfnl_str_attr(&p, NFTA_CHAIN_TABLE).as_deref(), Some("nat"));
        assert_eq!(nfnl_u32_attr(&p, NFTA_CHAIN_NAME), None);
    }
}
