//! PROXY protocol headers (HAProxy's spec, v1 text and v2 binary), so a backend behind the
//! proxy can learn the client's address — the thing a userland proxy otherwise loses.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Which PROXY protocol version a mapping sends to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// Text header: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`.
    V1,
    /// Binary header with a 12-byte signature.
    V2,
}

impl ProxyProtocol {
    /// Parses `v1`/`v2` (also `1`/`2`) from a command line.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "v1" | "1" => Some(ProxyProtocol::V1),
            "v2" | "2" => Some(ProxyProtocol::V2),
            _ => None,
        }
    }
}

/// Whether `version` can be sent on a `proto` mapping: both versions on TCP, v2 (its DGRAM
/// form) on UDP, none on SCTP; no header is always fine.
pub fn supported_for(version: Option<ProxyProtocol>, proto: crate::state::Proto) -> bool {
    use crate::state::Proto;
    matches!(
        (version, proto),
        (None, _) | (Some(_), Proto::Tcp) | (Some(ProxyProtocol::V2), Proto::Udp)
    )
}

/// The v2 signature every binary header starts with.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Builds the header for a TCP connection from `client` that arrived at `local` (the
/// address the client targeted). Mixed families are normalised: an IPv4 address meeting
/// an IPv6 one is written as IPv4-mapped IPv6, so the header is always well formed.
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocol::V1 => {
            let fam = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        ProxyProtocol::V2 => v2(TRANSPORT_STREAM, client, local),
    }
}

/// Longest v2 header this proxy writes (IPv6 addresses, no TLVs).
pub const V2_MAX_LEN: usize = 16 + 36;

/// v2 transport nibbles.
const TRANSPORT_STREAM: u8 = 0x1;
const TRANSPORT_DGRAM: u8 = 0x2;

/// The v2 header for a UDP datagram from `client` that arrived at `local` (transport
/// DGRAM). UDP has no connection to carry it once, so the UDP path puts it in front of
/// every datagram to the backend: each datagram then names its client on its own, and a
/// backend that sees a flow's first datagram late (or after a restart) is not confused.
pub fn dgram_header_v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    v2(TRANSPORT_DGRAM, client, local)
}

fn v2(transport: u8, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let mut h = Vec::with_capacity(V2_MAX_LEN);
    h.extend_from_slice(&V2_SIGNATURE);
    h.push(0x21); // version 2, command PROXY
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            h.push(0x10 | transport); // AF_INET
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&l.ip().octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&l.port().to_be_bytes());
        }
        (c, l) => {
            h.push(0x20 | transport); // AF_INET6
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6_octets(c));
            h.extend_from_slice(&v6_octets(l));
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&l.port().to_be_bytes());
        }
    }
    h
}

fn v6_octets(a: SocketAddr) -> [u8; 16] {
    match a {
        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(v6) => v6.ip().octets(),
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let widen = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    (widen(a), widen(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_ipv4_and_ipv6() {
        let h = header(
            ProxyProtocol::V1,
            "192.0.2.1:5000".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 10.0.0.1 5000 80\r\n");
        let h = header(
            ProxyProtocol::V1,
            "[::1]:5000".parse().unwrap(),
            "[::1]:80".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP6 ::1 ::1 5000 80\r\n");
    }

    #[test]
    fn v2_ipv4_layout() {
        let h = header(
            ProxyProtocol::V2,
            "192.0.2.1:5000".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 12);
        assert_eq!(&h[16..20], &[192, 0, 2, 1]);
        assert_eq!(&h[20..24], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 5000);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 80);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn v2_dgram_differs_from_stream_only_in_the_transport() {
        let (c, l) = (
            "192.0.2.1:5000".parse().unwrap(),
            "10.0.0.1:53".parse().unwrap(),
        );
        let stream = header(ProxyProtocol::V2, c, l);
        let dgram = dgram_header_v2(c, l);
        assert_eq!(dgram[13], 0x12, "AF_INET + DGRAM");
        assert_eq!(&dgram[..13], &stream[..13]);
        assert_eq!(&dgram[14..], &stream[14..]);
        let dgram6 = dgram_header_v2("[2001:db8::1]:5000".parse().unwrap(), l);
        assert_eq!(dgram6[13], 0x22, "AF_INET6 + DGRAM");
        assert_eq!(dgram6.len(), V2_MAX_LEN);
    }

    #[test]
    fn v2_mixed_families_become_ipv6() {
        let h = header(
            ProxyProtocol::V2,
            "[::1]:5000".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        assert_eq!(h[13], 0x21);
        assert_eq!(h.len(), 16 + 36);
    }
}
