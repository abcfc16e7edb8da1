//! rtnetlink over netlink-sys's blocking socket: one socket per namespace, every call sends one
//! request and reads the kernel's answer before it returns.
//!
//! A plugin makes a few dozen requests and exits, so there is nothing for an async runtime
//! to overlap: a blocking `send` + `recv` costs a few microseconds, where building a runtime
//! and routing each reply through a connection task cost tens. Messages are built and
//! parsed with netlink-packet-route; we read every reply's netlink header ourselves, which
//! is where the kernel reports NLM_F_DUMP_INTR (the table changed while it was being
//! dumped, so the dump may be inconsistent). Dumps that report it are retried.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort, InfoData,
    InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{code, Error, Result};
use crate::netns::Netns;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

/// How often a dump interrupted by a concurrent change is retried before giving up.
const DUMP_RETRIES: usize = 10;

/// Receive buffer size. The kernel sizes dump datagrams by the receive buffers it has seen
/// on the socket (and the first at about a page), and single replies (one link without VF
/// data, one address or route) are far smaller; a datagram larger than this is reported,
/// never silently cut (MSG_TRUNC). Small on purpose: every page of it is a page fault the
/// first time the kernel writes into it, a real cost for a process that lives 2 ms.
const RECV_BUF: usize = 8 << 10;

thread_local! {
    /// The receive buffer of this thread, shared by all its sockets (requests on one thread
    /// never overlap).
    static RECV: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What kind of link this is, as far as we care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// Anything else, with the kernel's kind string when it gave one.
    Other(String),
}

/// A link as the kernel reports it (only the attributes ferry uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link type.
    pub kind: LinkKind,
    /// MTU.
    pub mtu: u32,
    /// Hardware address bytes (empty when none).
    pub mac: Vec<u8>,
    /// ifindex of the bridge this link is a port of.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// IFF_PROMISC set.
    pub promisc: bool,
    /// Operational state is UP.
    pub oper_up: bool,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// Bridge-port hairpin flag, when this is a bridge port.
    pub hairpin: Option<bool>,
    /// Bridge-port isolation flag, when this is a bridge port.
    pub isolated: Option<bool>,
}

impl Link {
    /// The MAC as `aa:bb:cc:dd:ee:ff`, the text form CNI results use.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

/// Formats hardware address bytes the way CNI results spell them.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (6 octets, hex, any case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for slot in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *slot = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// ifindex it sits on.
    pub index: u32,
    /// Address with prefix length.
    pub net: IpNet,
    /// Still doing duplicate address detection (IPv6).
    pub tentative: bool,
}

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network (0.0.0.0/0 or ::/0 for a default route).
    pub dst: IpNet,
    /// Next hop, when the route has one.
    pub gw: Option<IpAddr>,
    /// Outgoing ifindex.
    pub oif: Option<u32>,
}

/// Options for creating a veth pair whose peer lands straight in another namespace.
#[derive(Debug, Clone, Default)]
pub struct VethSpec<'a> {
    /// Name of the end that stays in this socket's namespace.
    pub host_name: &'a str,
    /// Name of the end created in `peer_netns`.
    pub peer_name: &'a str,
    /// MTU of both ends (kernel default when None).
    pub mtu: Option<u32>,
    /// MAC of the peer end (random when None).
    pub peer_mac: Option<[u8; 6]>,
    /// Bridge to enslave the host end to.
    pub master: Option<u32>,
}

/// A netlink route socket bound to one namespace, with blocking helpers.
pub struct Netlink {
    sock: Socket,
    seq: AtomicU32,
}

/// A netlink route socket in the calling thread's namespace (a netlink socket stays bound
/// to the namespace it was created in, whichever thread uses it later). netlink-sys's
/// blocking socket: the same socket layer rtnetlink's connection runs on, without the async
/// runtime that a process living a few milliseconds would have to start first.
fn open_route_socket() -> Result<Socket> {
    Socket::new(NETLINK_ROUTE).map_err(|e| {
        Error::from_errno(
            code::INTERNAL,
            e.raw_os_error().unwrap_or(0),
            "opening netlink socket",
        )
    })
}

/// One parsed reply of a request or dump, with the header flags that matter.
struct Reply {
    flags: u16,
    payload: NetlinkPayload<RouteNetlinkMessage>,
}

impl Netlink {
    /// A socket in the caller's own namespace (the host, for a plugin).
    pub fn current() -> Result<Self> {
        Ok(Self::from_socket(open_route_socket()?))
    }

    /// A socket inside `ns`. Only the socket's creation happens in the namespace (the
    /// calling thread enters it just for that, see [`Netns::run_here`]); all requests are
    /// then sent from the caller's thread.
    pub fn in_netns(ns: &Netns) -> Result<Self> {
        let sock = ns.run_here(open_route_socket)??;
        Ok(Self::from_socket(sock))
    }

    fn from_socket(sock: Socket) -> Self {
        Netlink {
            sock,
            seq: AtomicU32::new(1),
        }
    }

    /// Sends `msg` with `flags` and calls `on_reply` for every reply that belongs to it,
    /// until `on_reply` says the exchange is over (true).
    fn exchange(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut on_reply: impl FnMut(Reply) -> Result<bool>,
    ) -> Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = seq;
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        loop {
            let err = match self.sock.send(&out, 0) {
                Ok(_) => break,
                Err(e) => e,
            };
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::from_errno(
                    code::INTERNAL,
                    err.raw_os_error().unwrap_or(0),
                    "sending netlink request",
                ));
            }
        }
        RECV.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < RECV_BUF {
                buf.resize(RECV_BUF, 0);
            }
            Self::read_replies(&self.sock, seq, &mut buf, &mut on_reply)
        })
    }

    /// Reads datagrams from `sock` into `buf` and hands every message answering `seq` to
    /// `on_reply` until it says the exchange is over.
    fn read_replies(
        sock: &Socket,
        seq: u32,
        buf: &mut [u8],
        on_reply: &mut impl FnMut(Reply) -> Result<bool>,
    ) -> Result<()> {
        loop {
            // MSG_TRUNC: the datagram's full length comes back even when it did not fit.
            let n = match sock.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::from_errno(
                        code::INTERNAL,
                        e.raw_os_error().unwrap_or(0),
                        "reading netlink reply",
                    ))
                }
            };
            if n > buf.len() {
                return Err(Error::new(
                    code::INTERNAL,
                    format!("netlink reply of {n} bytes does not fit the {RECV_BUF}-byte buffer"),
                ));
            }
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                if len < 16 || off + len > n {
                    return Err(Error::new(
                        code::INTERNAL,
                        format!("malformed netlink reply (message length {len})"),
                    ));
                }
                let bytes = &buf[off..off + len];
                off += (len + 3) & !3;
                let msg_seq = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                if msg_seq != seq {
                    continue; // a late answer to an earlier request
                }
                let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
                let payload = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                    Ok(m) => m.payload,
                    // An attribute this library cannot decode: skip the message, as the
                    // async connection did, rather than fail the whole exchange.
                    Err(_) => continue,
                };
                if on_reply(Reply { flags, payload })? {
                    return Ok(());
                }
            }
        }
    }

    /// Sends one request and waits for its ACK (or error). Returns the inner messages the
    /// kernel sent back (for GET requests without DUMP).
    fn request(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        self.exchange(
            msg,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            |reply| match reply.payload {
                NetlinkPayload::Error(err) => match err.code {
                    Some(c) => Err(Error::from_errno(code::INTERNAL, -c.get(), "netlink")),
                    None => Ok(true),
                },
                NetlinkPayload::Done(_) => Ok(true),
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    Ok(false)
                }
                _ => Ok(false),
            },
        )?;
        Ok(out)
    }

    /// Dumps, retrying while the kernel flags the dump as interrupted.
    fn dump(&self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_RETRIES {
            let mut out = Vec::new();
            let mut interrupted = false;
            self.exchange(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, |reply| {
                let (errno, last) = match &reply.payload {
                    NetlinkPayload::Error(err) => (err.code.map(|c| -c.get()), true),
                    NetlinkPayload::Done(d) if d.code < 0 => (Some(-d.code), true),
                    NetlinkPayload::Done(_) => (None, true),
                    _ => (None, false),
                };
                match dump_step(reply.flags, errno) {
                    DumpStep::Keep => {}
                    DumpStep::KeepInterrupted => interrupted = true,
                    DumpStep::Retry => {
                        interrupted = true;
                        return Ok(true);
                    }
                    DumpStep::Fail(e) => {
                        return Err(Error::from_errno(code::INTERNAL, e, "netlink dump"))
                    }
                }
                if let NetlinkPayload::InnerMessage(m) = reply.payload {
                    out.push(m);
                }
                Ok(last)
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::new(
            code::INTERNAL,
            format!(
                "netlink dump kept being interrupted (NLM_F_DUMP_INTR) after {DUMP_RETRIES} tries"
            ),
        ))
    }

    // ---- links ----

    /// Looks a link up by name; `None` when there is no such link.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg)
            .map_err(|e| e.context(format!("looking up link {name:?}")))
    }

    /// Looks a link up by ifindex; `None` when there is no such link.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg)
            .map_err(|e| e.context(format!("looking up link #{index}")))
    }

    fn get_link(&self, msg: LinkMessage) -> Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All links of the namespace.
    pub fn links(&self) -> Result<Vec<Link>> {
        let replies = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })
            .collect())
    }

    /// Creates the bridge `name` unless it exists, and returns it up.
    ///
    /// A link of that name that is not a bridge is an error (LINK_EXISTS): taking over,
    /// say, a physical NIC would cut the host off. Concurrent callers racing to create the
    /// same bridge all succeed (EEXIST is the normal outcome for all but one).
    pub fn ensure_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        promisc: bool,
        vlan_filtering: bool,
    ) -> Result<Link> {
        let existing = self.link_by_name(name)?;
        let link = match existing {
            Some(l) => l,
            None => {
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(name.to_string()));
                if let Some(m) = mtu {
                    msg.attributes.push(LinkAttribute::Mtu(m));
                }
                let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
                if vlan_filtering {
                    info.push(LinkInfo::Data(InfoData::Bridge(vec![
                        InfoBridge::VlanFiltering(true),
                    ])));
                }
                msg.attributes.push(LinkAttribute::LinkInfo(info));
                match self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
                    Ok(_) => {}
                    Err(e) if e.is_exists() => {}
                    Err(e) => return Err(e.context(format!("could not add bridge {name:?}"))),
                }
                let created = self.link_by_name(name)?.ok_or_else(|| {
                    Error::new(
                        code::INTERNAL,
                        format!("bridge {name:?} vanished right after creation"),
                    )
                })?;
                if created.kind == LinkKind::Bridge && !created.mac.is_empty() {
                    // Pin the bridge's MAC: otherwise it follows the lowest port MAC and
                    // changes as containers come and go (neighbours' ARP caches go stale).
                    let _ = self.set_mac(created.index, &created.mac);
                }
                created
            }
        };
        if link.kind != LinkKind::Bridge {
            return Err(Error::new(
                code::LINK_EXISTS,
                format!(
                    "{name:?} already exists but is not a bridge (it is a {}); choose another \"bridge\" name or remove that link",
                    match &link.kind {
                        LinkKind::Other(k) if !k.is_empty() => k.clone(),
                        LinkKind::Veth => "veth".into(),
                        _ => "device".into(),
                    }
                ),
            ));
        }
        let mut changed = false;
        if promisc && !link.promisc {
            self.set_flags(link.index, LinkFlags::Promisc, true)
                .map_err(|e| e.context(format!("could not set promiscuous mode on {name:?}")))?;
            changed = true;
        }
        if !link.up {
            self.set_up(link.index)
                .map_err(|e| e.context(format!("could not set {name:?} up")))?;
            changed = true;
        }
        if !changed {
            return Ok(link); // the common case: an existing bridge as it should be
        }
        Ok(self.link_by_name(name)?.unwrap_or(link))
    }

    /// Creates a veth pair with one end here and the other straight inside `peer_netns`,
    /// under its final name. Creating it there directly means the container-side name
    /// can never collide with a host link, and there is no window where a half-moved
    /// pair exists. The host end is enslaved and set up in the same request.
    pub fn create_veth(&self, spec: &VethSpec<'_>, peer_netns: &Netns) -> Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(peer_netns.fd()));
        if let Some(m) = spec.mtu {
            peer.attributes.push(LinkAttribute::Mtu(m));
        }
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        // One queue each way, said explicitly: without it the kernel allocates one per CPU,
        // then cuts the active count back to one on the registered device, which waits for
        // an expedited RCU grace period (synchronize_net) and doubles the cost of creating
        // the pair. The active queues are the same (one), only the ceiling for a later
        // `ethtool -L` is lower.
        let one_queue_each_way = [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)];
        peer.attributes.extend(one_queue_each_way.clone());
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(spec.host_name.to_string()));
        msg.attributes.extend(one_queue_each_way);
        if let Some(m) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        if let Some(master) = spec.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
            .map_err(|e| {
                e.context(format!(
                    "creating veth pair {} / {} (in {})",
                    spec.host_name,
                    spec.peer_name,
                    peer_netns.path().display()
                ))
            })
    }

    fn set_link(&self, msg: LinkMessage) -> Result<()> {
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(|_| ())
    }

    /// Sets or clears link flags (IFF_UP, IFF_PROMISC, …) without touching the others.
    pub fn set_flags(&self, index: u32, flags: LinkFlags, on: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = flags;
        if on {
            msg.header.flags = flags;
        }
        self.set_link(msg)
    }

    /// Sets the link administratively up.
    pub fn set_up(&self, index: u32) -> Result<()> {
        self.set_flags(index, LinkFlags::Up, true)
    }

    /// Sets the link administratively down.
    pub fn set_down(&self, index: u32) -> Result<()> {
        self.set_flags(index, LinkFlags::Up, false)
    }

    /// Renames link `index` to `name`. The kernel refuses (EBUSY) while the link is up.
    pub fn rename(&self, index: u32, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(msg)
            .map_err(|e| e.context(format!("renaming link #{index} to {name:?}")))
    }

    /// Sets the MTU.
    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(msg)
    }

    /// Sets the hardware address.
    pub fn set_mac(&self, index: u32, mac: &[u8]) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set_link(msg)
    }

    /// Makes the link a port of `master` (a bridge).
    pub fn set_master(&self, index: u32, master: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(master));
        self.set_link(msg)
    }

    /// Sets bridge-port options on a port: hairpin (reflect frames back out of the port
    /// they came in, so a container reaches itself through a NATed service address) and
    /// isolated (isolated ports cannot talk to each other, only to non-isolated ones).
    pub fn set_bridge_port(
        &self,
        index: u32,
        hairpin: Option<bool>,
        isolated: Option<bool>,
    ) -> Result<()> {
        let mut opts = Vec::new();
        if let Some(h) = hairpin {
            opts.push(InfoBridgePort::HairpinMode(h));
        }
        if let Some(i) = isolated {
            opts.push(InfoBridgePort::Isolated(i));
        }
        if opts.is_empty() {
            return Ok(());
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(opts)),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), 0)
            .map(|_| ())
    }

    /// Adds VLAN `vid` to bridge port `index`; `pvid_untagged` makes it the access VLAN
    /// (ingress untagged frames land in it, egress frames leave untagged).
    pub fn bridge_vlan_add(&self, index: u32, vid: u16, pvid_untagged: bool) -> Result<()> {
        self.bridge_vlan(index, vid, pvid_untagged, true)
    }

    /// Removes VLAN `vid` from bridge port `index`.
    pub fn bridge_vlan_del(&self, index: u32, vid: u16) -> Result<()> {
        self.bridge_vlan(index, vid, false, false)
    }

    fn bridge_vlan(&self, index: u32, vid: u16, pvid_untagged: bool, add: bool) -> Result<()> {
        let mut flags = BridgeVlanInfoFlags::empty();
        if pvid_untagged {
            flags |= BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
        }
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
                BridgeVlanInfo { flags, vid },
            )]));
        let req = if add {
            RouteNetlinkMessage::SetLink(msg)
        } else {
            RouteNetlinkMessage::DelLink(msg)
        };
        self.request(req, 0).map(|_| ()).map_err(|e| {
            e.context(format!(
                "{} vlan {vid} on link #{index}",
                if add { "adding" } else { "removing" }
            ))
        })
    }

    /// Deletes the link with ifindex `index`. Ok(false) when it was already gone.
    pub fn del_link(&self, index: u32) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.context(format!("deleting link #{index}"))),
        }
    }

    /// Deletes the link called `name`. Ok(false) when there was none.
    pub fn del_link_by_name(&self, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.context(format!("deleting link {name:?}"))),
        }
    }

    // ---- addresses ----

    /// Addresses on link `index` (all links when 0) of one family (both when None).
    pub fn addresses(&self, index: u32, v6: Option<bool>) -> Result<Vec<Addr>> {
        let mut msg = AddressMessage::default();
        msg.header.family = match v6 {
            Some(true) => AddressFamily::Inet6,
            Some(false) => AddressFamily::Inet,
            None => AddressFamily::Unspec,
        };
        let replies = self.dump(RouteNetlinkMessage::GetAddress(msg))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr(&a),
                _ => None,
            })
            .filter(|a| index == 0 || a.index == index)
            .collect())
    }

    /// Adds `net` (host bits kept: that is the address) to link `index`. `nodad` skips
    /// IPv6 duplicate address detection so the address is usable at once.
    pub fn add_address(&self, index: u32, net: IpNet, nodad: bool) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = net.prefix_len();
        match net {
            IpNet::V4(n) => {
                msg.header.family = AddressFamily::Inet;
                msg.attributes
                    .push(AddressAttribute::Local(IpAddr::V4(n.addr())));
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V4(n.addr())));
                if n.prefix_len() < 31 {
                    msg.attributes
                        .push(AddressAttribute::Broadcast(n.broadcast()));
                }
            }
            IpNet::V6(n) => {
                msg.header.family = AddressFamily::Inet6;
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V6(n.addr())));
                if nodad {
                    msg.header.flags = AddressHeaderFlags::Nodad;
                }
            }
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(|_| ())
        .map_err(|e| e.context(format!("adding address {net} to link #{index}")))
    }

    /// Removes `net` from link `index`. Ok(false) when it was not there.
    pub fn del_address(&self, index: u32, net: IpNet) -> Result<bool> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = net.prefix_len();
        msg.header.family = if net.addr().is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        if let IpNet::V4(n) = net {
            msg.attributes
                .push(AddressAttribute::Local(IpAddr::V4(n.addr())));
        }
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        match self.request(RouteNetlinkMessage::DelAddress(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.context(format!("removing address {net} from link #{index}"))),
        }
    }

    /// Waits until no address on `index` is tentative (IPv6 DAD finished), polling, up to
    /// `timeout`. An address that failed DAD stays tentative-free but useless; the caller
    /// decides what to do with a timeout error.
    pub fn wait_addresses_settled(&self, index: u32, timeout: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let addrs = self.addresses(index, Some(true))?;
            if !addrs.iter().any(|a| a.tentative) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::new(
                    code::INTERNAL,
                    format!(
                        "IPv6 addresses on link #{index} still tentative (DAD) after {timeout:?}"
                    ),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    // ---- routes ----

    /// Adds a route in the main table. Without a gateway the route is link-scoped.
    pub fn add_route(&self, route: &Route) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: if route.dst.addr().is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            },
            destination_prefix_length: route.dst.prefix_len(),
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: if route.gw.is_some() {
                RouteScope::Universe
            } else {
                RouteScope::Link
            },
            kind: RouteType::Unicast,
            ..msg.header
        };
        if route.dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(ip_to_route_addr(
                    route.dst.network(),
                )));
        }
        if let Some(gw) = route.gw {
            msg.attributes
                .push(RouteAttribute::Gateway(ip_to_route_addr(gw)));
        }
        if let Some(oif) = route.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(|_| ())
        .map_err(|e| {
            e.context(format!(
                "adding route {} via {}",
                route.dst,
                route
                    .gw
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "link".into())
            ))
        })
    }

    /// Routes of the main table, one family (both when None).
    pub fn routes(&self, v6: Option<bool>) -> Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match v6 {
            Some(true) => AddressFamily::Inet6,
            Some(false) => AddressFamily::Inet,
            None => AddressFamily::Unspec,
        };
        let replies = self.dump(RouteNetlinkMessage::GetRoute(msg))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(&r),
                _ => None,
            })
            .collect())
    }
}

/// What one reply of a dump means for the dump as a whole.
#[derive(Debug, PartialEq, Eq)]
enum DumpStep {
    /// A consistent part of the dump.
    Keep,
    /// Data, but the kernel flagged the dump NLM_F_DUMP_INTR: the table changed while it
    /// was being walked, so the whole dump must be redone.
    KeepInterrupted,
    /// The kernel aborted the dump because of a concurrent change (EINTR, newer kernels):
    /// redo it.
    Retry,
    /// A real error (errno).
    Fail(i32),
}

fn dump_step(flags: u16, errno: Option<i32>) -> DumpStep {
    match errno {
        Some(e) if e == libc::EINTR => DumpStep::Retry,
        Some(e) => DumpStep::Fail(e),
        None if flags & NLM_F_DUMP_INTR != 0 => DumpStep::KeepInterrupted,
        None => DumpStep::Keep,
    }
}

fn ip_to_route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        kind: LinkKind::Other(String::new()),
        mtu: 0,
        mac: Vec::new(),
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
        promisc: m.header.flags.contains(LinkFlags::Promisc),
        oper_up: false,
        peer_index: None,
        hairpin: None,
        isolated: None,
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(v) => link.mtu = *v,
            LinkAttribute::Address(a) => link.mac = a.clone(),
            LinkAttribute::Controller(c) => link.master = Some(*c),
            LinkAttribute::Link(l) => link.peer_index = Some(*l),
            LinkAttribute::OperState(s) => link.oper_up = *s == State::Up,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Bridge) => link.kind = LinkKind::Bridge,
                        LinkInfo::Kind(InfoKind::Veth) => link.kind = LinkKind::Veth,
                        LinkInfo::Kind(other) => link.kind = LinkKind::Other(other.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(opts)) => {
                            for o in opts {
                                match o {
                                    InfoBridgePort::HairpinMode(h) => link.hairpin = Some(*h),
                                    InfoBridgePort::Isolated(i) => link.isolated = Some(*i),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_addr(m: &AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut flags_ext = None;
    for attr in &m.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags_ext = Some(f.bits()),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let net = IpNet::new(ip, m.header.prefix_len).ok()?;
    let tentative_bit = libc::IFA_F_TENTATIVE;
    let tentative = match flags_ext {
        Some(bits) => bits & tentative_bit != 0,
        None => m.header.flags.contains(AddressHeaderFlags::Tentative),
    };
    Some(Addr {
        index: m.header.index,
        net,
        tentative,
    })
}

fn parse_route(m: &RouteMessage) -> Option<Route> {
    if m.header.table != RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let mut dst = None;
    let mut gw = None;
    let mut oif = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gw = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(o) => oif = Some(*o),
            _ => {}
        }
    }
    let dst = match dst {
        Some(d) => IpNet::new(d, m.header.destination_prefix_length).ok()?,
        None => match m.header.address_family {
            AddressFamily::Inet6 => {
                IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0).ok()?
            }
            _ => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).ok()?,
        },
    };
    Some(Route { dst, gw, oif })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_dumps_are_redone_and_errors_reported() {
        assert_eq!(dump_step(0, None), DumpStep::Keep);
        assert_eq!(dump_step(NLM_F_DUMP_INTR, None), DumpStep::KeepInterrupted);
        assert_eq!(
            dump_step(NLM_F_DUMP_INTR | 2, None),
            DumpStep::KeepInterrupted
        );
        assert_eq!(dump_step(0, Some(libc::EINTR)), DumpStep::Retry);
        assert_eq!(dump_step(0, Some(libc::EPERM)), DumpStep::Fail(libc::EPERM));
    }

    #[test]
    fn mac_text_round_trips() {
        let mac = parse_mac("0A:58:0a:d5:10:02").unwrap();
        assert_eq!(format_mac(&mac), "0a:58:0a:d5:10:02");
        assert!(parse_mac("0a:58:0a:d5:10").is_none());
        assert!(parse_mac("0a:58:0a:d5:10:02:03").is_none());
        assert!(parse_mac("zz:58:0a:d5:10:02").is_none());
    }
}
