//! Batched datagram I/O for the UDP data path: `recvmmsg(2)` fills up to [`BATCH`]
//! datagrams per system call, `sendmmsg(2)` sends a run of them in one, with the packet-info
//! control messages (IP_PKTINFO / IPV6_PKTINFO) that let replies leave from the address the
//! client targeted.
//!
//! Nothing here allocates per datagram: a [`RecvBatch`] is made once per runtime thread and
//! reused; send headers live on the stack.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per batched system call. 32 takes most of the per-call saving (measured:
/// the syscall share of the forwarding CPU is small beyond that).
pub const BATCH: usize = 32;
/// One slot holds the largest UDP payload (65,507 over IPv4, 65,527 over IPv6).
pub const SLOT: usize = 65_536;

/// Control-message space for one in6_pktinfo (the larger of the two), 8-byte aligned.
type CmsgBuffer = [u64; 8];

/// The address a datagram was sent to, as read from its packet-info control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalDst {
    /// Listener bound to a specific address: the kernel picks the right source itself.
    Unknown,
    /// IPv4 destination (IP_PKTINFO).
    V4([u8; 4]),
    /// IPv6 destination and the interface it arrived on (IPV6_PKTINFO).
    V6([u8; 16], u32),
}

/// Receive buffers and headers for one `recvmmsg` call. The data area is allocated zeroed
/// (so the kernel maps it lazily): only the pages datagrams actually touch become resident.
pub struct RecvBatch {
    data: Vec<u8>,
    names: [libc::sockaddr_storage; BATCH],
    controls: [CmsgBuffer; BATCH],
    iovs: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    len: usize,
}

impl RecvBatch {
    /// An empty batch (heap: ~2 MiB of address space, little of it resident).
    pub fn new() -> Box<RecvBatch> {
        // SAFETY: all of these are plain C structures for which all-zero is valid.
        unsafe {
            Box::new(RecvBatch {
                data: vec![0u8; BATCH * SLOT],
                names: zeroed(),
                controls: zeroed(),
                iovs: zeroed(),
                hdrs: zeroed(),
                len: 0,
            })
        }
    }

    /// Receives up to [`BATCH`] queued datagrams without blocking; with `with_source` also
    /// their source addresses and packet-info. Err(WouldBlock) when none is queued.
    pub fn recv(&mut self, fd: RawFd, with_source: bool) -> io::Result<usize> {
        self.len = 0;
        let base = self.data.as_mut_ptr();
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * SLOT + SLOT <= data.len().
                iov_base: unsafe { base.add(i * SLOT) } as *mut libc::c_void,
                iov_len: SLOT,
            };
            // SAFETY: zero is a valid msghdr.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            if with_source {
                hdr.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
                hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_control = self.controls[i].as_mut_ptr() as *mut libc::c_void;
                hdr.msg_controllen = size_of::<CmsgBuffer>() as _;
            }
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        // SAFETY: every header points into buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.len = n as usize;
        Ok(self.len)
    }

    /// Datagrams in the last receive.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the last receive got nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Payload of datagram `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let n = (self.hdrs[i].msg_len as usize).min(SLOT);
        &self.data[i * SLOT..i * SLOT + n]
    }

    /// Source address of datagram `i` (None for a non-IP source or without `with_source`).
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        if self.hdrs[i].msg_hdr.msg_namelen == 0 {
            return None;
        }
        sockaddr_to(&self.names[i])
    }

    /// Destination address of datagram `i` from its packet-info, if the socket asked for it.
    pub fn destination(&self, i: usize) -> LocalDst {
        let hdr = &self.hdrs[i].msg_hdr;
        if hdr.msg_control.is_null() || hdr.msg_controllen == 0 {
            return LocalDst::Unknown;
        }
        let mut dst = LocalDst::Unknown;
        // SAFETY: the kernel wrote msg_controllen bytes of well-formed cmsgs into our buffer.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                    let info =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                    dst = LocalDst::V4(info.ipi_addr.s_addr.to_ne_bytes());
                } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                    let info =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                    dst = LocalDst::V6(info.ipi6_addr.s6_addr, info.ipi6_ifindex);
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        dst
    }
}

/// What a batched send achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub datagrams: usize,
    /// Their payload bytes.
    pub bytes: u64,
    /// Datagrams dropped (full buffer, ICMP error pending from an earlier one, …).
    pub dropped: usize,
    /// A segmentation-offload send was refused (old kernel, path MTU below the datagram
    /// size, …) and its datagrams went out one by one: the caller should stop asking.
    pub gso_refused: bool,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.dropped += other.dropped;
        self.gso_refused |= other.gso_refused;
    }
}

/// `UDP_SEGMENT` (linux/udp.h): the segment size of a UDP GSO send.
const UDP_SEGMENT: libc::c_int = 103;
/// Most segments in one GSO send (the kernel's UDP_MAX_SEGMENTS is 64 before 5.7).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload in one GSO send: what one IPv4 UDP datagram could carry.
const GSO_MAX_BYTES: usize = 65_507;

/// Splits `lens` into runs that one UDP GSO send can carry: every datagram of a run has
/// the run's first size, except the last, which may be shorter. Returns the run ends.
fn gso_runs(lens: &[usize], ends: &mut [usize; BATCH]) -> usize {
    let mut runs = 0;
    let mut i = 0;
    while i < lens.len() {
        let size = lens[i];
        let mut total = size;
        let mut j = i + 1;
        if size > 0 {
            while j < lens.len()
                && j - i < GSO_MAX_SEGMENTS
                && lens[j] > 0
                && lens[j] <= size
                && total + lens[j] <= GSO_MAX_BYTES
            {
                total += lens[j];
                j += 1;
                if lens[j - 1] < size {
                    break;
                }
            }
        }
        ends[runs] = j;
        runs += 1;
        i = j;
    }
    runs
}

/// Sends `payloads` (at most [`BATCH`]), each behind `prefix` (empty for none), to `to`
/// (None on a connected socket) with `src` as the source address when known, with as few
/// system calls as the kernel allows: one `sendmmsg`, and with `gso` each run of
/// equal-sized datagrams as one segmentation-offload send (UDP_SEGMENT), so the run crosses
/// the IP stack, netfilter and the link once.
pub fn send_batch<'a>(
    fd: RawFd,
    payloads: impl Iterator<Item = &'a [u8]>,
    to: Option<&(libc::sockaddr_storage, libc::socklen_t)>,
    src: LocalDst,
    gso: bool,
    prefix: &[u8],
) -> Sent {
    // SAFETY: zero is a valid iovec.
    let mut iovs: [libc::iovec; 2 * BATCH] = unsafe { zeroed() };
    let mut lens = [0usize; BATCH];
    let per = if prefix.is_empty() { 1 } else { 2 };
    let mut count = 0;
    for p in payloads.take(BATCH) {
        if per == 2 {
            iovs[count * 2] = libc::iovec {
                iov_base: prefix.as_ptr() as *mut libc::c_void,
                iov_len: prefix.len(),
            };
        }
        iovs[count * per + per - 1] = libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
        lens[count] = prefix.len() + p.len();
        count += 1;
    }
    send_iovs(
        fd,
        &mut iovs[..count * per],
        per,
        &lens[..count],
        to,
        src,
        gso,
    )
}

/// [`send_batch`] on datagrams already described by `iovs`, `per` iovecs each (lengths
/// in `lens`).
fn send_iovs(
    fd: RawFd,
    iovs: &mut [libc::iovec],
    per: usize,
    lens: &[usize],
    to: Option<&(libc::sockaddr_storage, libc::socklen_t)>,
    src: LocalDst,
    gso: bool,
) -> Sent {
    let count = lens.len();
    // SAFETY: zeroed C structures; headers point at stack data and at the caller's
    // payloads, which outlive the calls.
    unsafe {
        let mut ends = [0usize; BATCH];
        let runs = if gso {
            gso_runs(lens, &mut ends)
        } else {
            for (i, end) in ends.iter_mut().enumerate().take(count) {
                *end = i + 1;
            }
            count
        };
        let mut controls: [CmsgBuffer; BATCH] = zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
        let mut start = 0;
        for r in 0..runs {
            let h = &mut hdrs[r].msg_hdr;
            if let Some((addr, len)) = to {
                h.msg_name = addr as *const _ as *mut libc::c_void;
                h.msg_namelen = *len;
            }
            h.msg_iov = &mut iovs[start * per];
            h.msg_iovlen = ((ends[r] - start) * per) as _;
            let segment = (ends[r] - start > 1).then_some(lens[start] as u16);
            write_control(h, &mut controls[r], src, segment);
            start = ends[r];
        }
        let mut sent = Sent::default();
        let mut r = 0;
        while r < runs {
            let first = if r == 0 { 0 } else { ends[r - 1] };
            let n = libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr().add(r),
                (runs - r) as libc::c_uint,
                (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as _,
            );
            if n > 0 {
                let n = n as usize;
                let last = ends[r + n - 1];
                sent.datagrams += last - first;
                sent.bytes += lens[first..last].iter().map(|l| *l as u64).sum::<u64>();
                r += n;
                continue;
            }
            let errno = io::Error::last_os_error().raw_os_error();
            let datagrams = ends[r] - first;
            match errno {
                // Buffers full: UDP may drop, and the rest would fail the same way.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    sent.dropped += count - first;
                    break;
                }
                Some(libc::EINTR) => continue,
                // A GSO send the kernel or the route cannot take: these datagrams one by
                // one, and tell the caller.
                Some(libc::EINVAL)
                | Some(libc::EIO)
                | Some(libc::ENOPROTOOPT)
                | Some(libc::EMSGSIZE)
                    if datagrams > 1 =>
                {
                    let one_by_one = send_iovs(
                        fd,
                        &mut iovs[first * per..ends[r] * per],
                        per,
                        &lens[first..ends[r]],
                        to,
                        src,
                        false,
                    );
                    sent.add(one_by_one);
                    sent.gso_refused = true;
                }
                // An error belonging to this datagram (or an ICMP error reported late):
                // drop it and go on with the rest.
                _ => sent.dropped += datagrams,
            }
            r += 1;
        }
        sent
    }
}

/// Fills `msg`'s control area: a packet-info message naming `src` as the source (when
/// known) and a UDP_SEGMENT message (with `segment`).
///
/// # Safety
/// `control` must outlive every use of `msg`.
unsafe fn write_control(
    msg: &mut libc::msghdr,
    control: &mut CmsgBuffer,
    src: LocalDst,
    segment: Option<u16>,
) {
    let pktinfo_len = match src {
        LocalDst::Unknown => 0,
        LocalDst::V4(_) => size_of::<libc::in_pktinfo>(),
        LocalDst::V6(..) => size_of::<libc::in6_pktinfo>(),
    };
    let mut total = 0;
    if pktinfo_len > 0 {
        total += libc::CMSG_SPACE(pktinfo_len as u32) as usize;
    }
    if segment.is_some() {
        total += libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
    }
    if total == 0 {
        return;
    }
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = total as _;
    let mut cmsg = libc::CMSG_FIRSTHDR(msg);
    match src {
        LocalDst::Unknown => {}
        LocalDst::V4(addr) => {
            (*cmsg).cmsg_level = libc::IPPROTO_IP;
            (*cmsg).cmsg_type = libc::IP_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(pktinfo_len as u32) as _;
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
        LocalDst::V6(addr, ifindex) => {
            (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
            (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(pktinfo_len as u32) as _;
            // The interface matters only for link-local sources; elsewhere leave routing
            // free to pick it.
            let link_local = addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80;
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr { s6_addr: addr },
                ipi6_ifindex: if link_local { ifindex } else { 0 },
            };
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    if let Some(size) = segment {
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, size);
    }
}

/// A kernel socket address as a std one (None for non-IP families).
pub fn sockaddr_to(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A std socket address in the kernel's form, with its length.
pub fn sockaddr_from(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we write the matching variant into it.
    unsafe {
        let mut storage: libc::sockaddr_storage = zeroed();
        let len = match addr {
            SocketAddr::V4(v4) => {
                let a = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in);
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = v4.port().to_be();
                a.sin_addr = libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let a = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6);
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = v6.port().to_be();
                a.sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                a.sin6_flowinfo = v6.flowinfo();
                a.sin6_scope_id = v6.scope_id();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn sockaddr_round_trip() {
        for text in ["127.0.0.1:5353", "[::1]:53", "[fe80::1%2]:9"] {
            let a: SocketAddr = text.parse().unwrap();
            let (raw, _) = sockaddr_from(a);
            assert_eq!(sockaddr_to(&raw), Some(a));
        }
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_in_order_with_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sockaddr_from(rx.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + i as usize * 100]).collect();
        // 40 datagrams: the first call sends BATCH, the second the rest.
        let first = send_batch(
            tx.as_raw_fd(),
            payloads.iter().map(|p| p.as_slice()),
            Some(&to),
            LocalDst::Unknown,
            false,
            &[],
        );
        assert_eq!(first.datagrams, BATCH);
        assert_eq!(first.dropped, 0);
        let rest = send_batch(
            tx.as_raw_fd(),
            payloads[BATCH..].iter().map(|p| p.as_slice()),
            Some(&to),
            LocalDst::Unknown,
            false,
            &[],
        );
        assert_eq!(rest.datagrams, 40 - BATCH);
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 40 {
            let n = batch.recv(rx.as_raw_fd(), true).unwrap();
            for i in 0..n {
                assert_eq!(batch.source(i), Some(tx.local_addr().unwrap()));
                assert_eq!(batch.destination(i), LocalDst::Unknown);
                got.push(batch.payload(i).to_vec());
            }
        }
        assert_eq!(got, payloads);
        let err = batch.recv(rx.as_raw_fd(), true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn gso_runs_keep_every_datagram_boundary() {
        let mut ends = [0; BATCH];
        // Equal sizes, a shorter one closing the run, then a new size.
        let n = gso_runs(&[1400, 1400, 1400, 700, 1400, 1400, 0, 5], &mut ends);
        assert_eq!(&ends[..n], &[4, 6, 7, 8]);
        // A bigger datagram cannot join a run of smaller ones.
        let n = gso_runs(&[100, 200, 200], &mut ends);
        assert_eq!(&ends[..n], &[1, 3]);
        // The byte limit splits runs of large datagrams.
        let n = gso_runs(&[30_000, 30_000, 30_000], &mut ends);
        assert_eq!(&ends[..n], &[2, 3]);
        // The segment limit.
        let lens = [10; BATCH];
        let n = gso_runs(&lens, &mut ends);
        assert_eq!(&ends[..n], &[BATCH]);
    }

    #[test]
    fn gso_batches_arrive_as_the_original_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1400]).collect();
        payloads.push(vec![99; 300]);
        payloads.extend((0..5u8).map(|i| vec![i; 9000]));
        let sent = send_batch(
            tx.as_raw_fd(),
            payloads.iter().map(|p| p.as_slice()),
            None,
            LocalDst::Unknown,
            true,
            &[],
        );
        assert_eq!(sent.datagrams, payloads.len(), "{sent:?}");
        assert_eq!(sent.dropped, 0);
        assert!(!sent.gso_refused, "this kernel has UDP GSO on loopback");
        assert_eq!(received(&rx, payloads.len()), payloads);
    }

    #[test]
    fn a_prefix_goes_before_every_datagram_of_a_gso_run() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let payloads: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 1000]).collect();
        let prefix = b"HEADER:";
        let sent = send_batch(
            tx.as_raw_fd(),
            payloads.iter().map(|p| p.as_slice()),
            None,
            LocalDst::Unknown,
            true,
            prefix,
        );
        assert_eq!(sent.datagrams, 12, "{sent:?}");
        assert!(!sent.gso_refused);
        let want: Vec<Vec<u8>> = payloads.iter().map(|p| [&prefix[..], p].concat()).collect();
        assert_eq!(received(&rx, want.len()), want);
    }

    #[test]
    fn a_refused_gso_send_falls_back_to_single_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        // Without UDP checksums the kernel refuses GSO (EINVAL): a stand-in for an old
        // kernel or a path MTU below the datagram size.
        let one: libc::c_int = 1;
        // SAFETY: valid fd and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                &one as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000]).collect();
        let sent = send_batch(
            tx.as_raw_fd(),
            payloads.iter().map(|p| p.as_slice()),
            None,
            LocalDst::Unknown,
            true,
            &[],
        );
        assert!(sent.gso_refused, "{sent:?}");
        assert_eq!(sent.datagrams, 10);
        assert_eq!(sent.dropped, 0);
        assert_eq!(received(&rx, payloads.len()), payloads);
    }

    /// Reads `n` datagrams from a non-blocking-by-flag socket, in order.
    fn received(rx: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < n {
            match batch.recv(rx.as_raw_fd(), false) {
                Ok(k) => got.extend((0..k).map(|i| batch.payload(i).to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn the_largest_datagram_fits_a_slot() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let big = vec![7u8; 65_507];
        let sent = send_batch(
            tx.as_raw_fd(),
            std::iter::once(big.as_slice()),
            None,
            LocalDst::Unknown,
            true,
            &[],
        );
        assert_eq!(sent.bytes, 65_507);
        let mut batch = RecvBatch::new();
        rx.set_nonblocking(false).unwrap();
        // Blocking socket but MSG_DONTWAIT: poll until it is there.
        loop {
            match batch.recv(rx.as_raw_fd(), false) {
                Ok(1) => break,
                Ok(_) => unreachable!(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(batch.payload(0), big.as_slice());
    }
}
