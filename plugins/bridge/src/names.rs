//! Names that must match the reference plugins byte for byte (firewall chains and
//! comments), and the host-side veth name.

use firewall::masq::{MasqNames, NFT_COMMENT_MAX};
use sha2::{Digest, Sha512};

fn sha512_hex(s: &str) -> String {
    Sha512::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The reference's `FormatChainName`: `CNI-` + the first 24 hex digits of
/// sha512(network + containerID) (28 characters, under iptables' 29-character limit).
pub fn chain_name(network: &str, container_id: &str) -> String {
    let mut h = sha512_hex(&format!("{network}{container_id}"));
    h.truncate(24);
    format!("CNI-{h}")
}

/// The reference's `FormatComment`: Go's `%q` of both values. Network names and container
/// IDs are restricted to `[A-Za-z0-9_.-]`, so quoting never needs escapes.
pub fn iptables_comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

/// 16 hex digits of sha512(s) (the reference's `MustFormatHashWithPrefix(16, "", s)`).
fn hash16(s: &str) -> String {
    let mut h = sha512_hex(s);
    h.truncate(16);
    h
}

/// All ipMasq names of one attachment.
pub fn masq_names(network: &str, ifname: &str, container_id: &str) -> MasqNames {
    let net_hash = hash16(network);
    let instance = format!("{net_hash}-{}", hash16(&format!("{ifname}:{container_id}")));
    let mut nft_comment = format!(
        "{instance}, net: {}, if: {}, id: {}",
        network.replace('"', ""),
        ifname.replace('"', ""),
        container_id.replace('"', "")
    );
    nft_comment.truncate(NFT_COMMENT_MAX);
    MasqNames {
        chain: chain_name(network, container_id),
        comment: iptables_comment(network, container_id),
        nft_network_hash: net_hash,
        nft_comment,
    }
}

/// A fresh host-side veth name like the reference's: `veth` + 8 random hex digits.
pub fn random_veth_name() -> String {
    let mut buf = [0u8; 4];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Fall back to time and pid: uniqueness is re-checked by the kernel (EEXIST) anyway.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        buf = (t ^ std::process::id().rotate_left(16)).to_be_bytes();
    }
    format!(
        "veth{:02x}{:02x}{:02x}{:02x}",
        buf[0], buf[1], buf[2], buf[3]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_match_the_reference() {
        // values from the reference's own tests (pkg/utils)
        assert_eq!(chain_name("test", "1234"), "CNI-2bbe0c48b91a7d1b8a6753a8");
        assert_eq!(
            chain_name("testalongnamethatdoesnotmakesense", "1234"),
            "CNI-374f33fe84ab0ed84dcdebe3"
        );
        assert_eq!(
            iptables_comment("podman", "abc"),
            "name: \"podman\" id: \"abc\""
        );
    }

    #[test]
    fn nft_comment_starts_with_network_then_instance_hash() {
        let n = masq_names("net1", "eth0", "c1");
        assert!(n.nft_comment.starts_with(&n.nft_network_hash));
        assert!(n.nft_comment.ends_with(", net: net1, if: eth0, id: c1"));
        assert_eq!(n.nft_comment.split(',').next().unwrap().len(), 33);
        let long = masq_names("n", "eth0", &"a".repeat(300));
        assert_eq!(long.nft_comment.len(), NFT_COMMENT_MAX);
    }

    #[test]
    fn veth_names_look_like_the_reference() {
        let v = random_veth_name();
        assert_eq!(v.len(), 12);
        assert!(v.starts_with("veth"));
        assert!(v[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
