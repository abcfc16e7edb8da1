//! Who holds which host port: a small index on tmpfs, one per host network namespace.
//!
//! Reading the shared DNAT chain to find conflicts costs time proportional to every mapping
//! on the node. Instead each ADD records its (protocol, port, address) claims as files under
//! `/run/ferry/portmap/ns-<netns cookie>/claims/<proto>-<port>/`, so a conflict check reads
//! one small directory per port. The netns cookie (`SO_NETNS_COOKIE`) is never reused while
//! the system runs, so a deleted namespace's index can never be mistaken for a new one's;
//! `/run` is emptied at boot, as the rules are. The kernel rules stay the truth: a claim
//! whose chain no longer exists is stale and ignored.

use cni::fsutil::{remove_locked, write_atomic_locked, Flock};
use cni::{code, Error, Result};
use firewall::{BackendKind, Family, Protocol};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Root of the per-namespace indexes.
pub const STATE_ROOT: &str = "/run/ferry/portmap";

/// One claimed (protocol, host port, family, address). `addr` `None` = every address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Protocol name.
    pub protocol: ProtocolName,
    /// Host port.
    pub port: u16,
    /// 4 or 6.
    pub family: u8,
    /// The host address, or `None` for all addresses of the family.
    pub addr: Option<IpAddr>,
}

/// Serializable protocol (firewall's `Protocol` is not serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl From<Protocol> for ProtocolName {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => ProtocolName::Tcp,
            Protocol::Udp => ProtocolName::Udp,
            Protocol::Sctp => ProtocolName::Sctp,
        }
    }
}

impl From<ProtocolName> for Protocol {
    fn from(p: ProtocolName) -> Self {
        match p {
            ProtocolName::Tcp => Protocol::Tcp,
            ProtocolName::Udp => Protocol::Udp,
            ProtocolName::Sctp => Protocol::Sctp,
        }
    }
}

impl ProtocolName {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolName::Tcp => "tcp",
            ProtocolName::Udp => "udp",
            ProtocolName::Sctp => "sctp",
        }
    }
}

impl Claim {
    /// The family as the firewall crate names it.
    pub fn family(&self) -> Family {
        if self.family == 6 {
            Family::V6
        } else {
            Family::V4
        }
    }

    fn dir_name(&self) -> String {
        format!("{}-{}", self.protocol.as_str(), self.port)
    }

    fn file_name(&self) -> String {
        match self.addr {
            Some(a) => format!("{}-{a}", self.family),
            None => format!("{}-any", self.family),
        }
    }

    /// True when both claims would catch the same packets (same protocol, port and family,
    /// and one address covers the other).
    pub fn overlaps(&self, other: &Claim) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && self.family == other.family
            && match (self.addr, other.addr) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a == b,
            }
    }
}

/// One attachment's record: what it installed and claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The per-attachment chain (the key of the record).
    pub chain: String,
    /// Network name.
    pub network: String,
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Which backend installed the rules ("iptables" / "nftables").
    pub backend: String,
    /// Families with rules (4, 6).
    pub families: Vec<u8>,
    /// True when found in rules another plugin (the reference) installed.
    #[serde(default)]
    pub foreign: bool,
    /// Claims.
    pub claims: Vec<Claim>,
    /// nftables elements installed (absent in records of the previous nft layout, whose
    /// attachments were chains).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nft: Vec<NftKey>,
}

/// One nftables element an attachment installed: enough to delete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftKey {
    /// 4 or 6 (the `ip` or `ip6` table).
    pub family: u8,
    /// Set or map name.
    pub set: String,
    /// The element's key as nft prints it.
    pub key: String,
}

impl Owner {
    /// `(set, key)` of the recorded nft elements in `family`.
    pub fn nft_keys(&self, family: Family) -> Vec<(String, String)> {
        let n = match family {
            Family::V4 => 4,
            Family::V6 => 6,
        };
        self.nft
            .iter()
            .filter(|k| k.family == n)
            .map(|k| (k.set.clone(), k.key.clone()))
            .collect()
    }

    /// The backend that installed the rules.
    pub fn backend_kind(&self) -> Option<BackendKind> {
        BackendKind::parse(&self.backend)
    }
}

/// The locked index of the current network namespace.
pub struct State {
    dir: PathBuf,
    _lock: Flock,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(code::IO, format!("{what} {}: {e}", path.display()))
}

/// The current network namespace's cookie: unique for the life of the system.
pub fn netns_cookie() -> Result<u64> {
    // SAFETY: plain socket/getsockopt/close calls with a correctly sized out-buffer.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(Error::internal(format!(
                "opening a socket to read the netns cookie: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        const SO_NETNS_COOKIE: libc::c_int = 71;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(Error::internal(format!(
                "reading SO_NETNS_COOKIE (needs Linux 5.14 or later): {err}"
            )));
        }
        Ok(cookie)
    }
}

impl State {
    /// Opens (creating if needed) and locks the index of the current network namespace.
    /// The lock serialises portmap runs in one namespace so two ADDs cannot claim the same
    /// port at once.
    pub fn open() -> Result<State> {
        let dir = Path::new(STATE_ROOT).join(format!("ns-{}", netns_cookie()?));
        for sub in ["claims", "owners"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| io_err("creating", &p, e))?;
        }
        let lock_path = dir.join("lock");
        let lock = Flock::exclusive(&lock_path).map_err(|e| io_err("locking", &lock_path, e))?;
        Ok(State { dir, _lock: lock })
    }

    /// True once the mappings other plugins installed before ferry were imported here.
    pub fn imported(&self) -> bool {
        self.dir.join("imported").exists()
    }

    /// Notes that the import is done (it reads the whole nat table, so it runs once).
    pub fn mark_imported(&self) -> Result<()> {
        let path = self.dir.join("imported");
        write_atomic_locked(&path, b"", 0o644).map_err(|e| io_err("writing", &path, e))
    }

    /// True once the index was found to record every ferry nft attachment of the namespace.
    pub fn nft_complete(&self) -> bool {
        self.dir.join("nft-complete").exists()
    }

    /// Notes that the index records every ferry nft attachment (ADD keeps it so by
    /// recording before it installs).
    pub fn mark_nft_complete(&self) -> Result<()> {
        let path = self.dir.join("nft-complete");
        write_atomic_locked(&path, b"", 0o644).map_err(|e| io_err("writing", &path, e))
    }

    /// What [`crate::plugin`] last saw of other plugins' rules (nf_tables generation and
    /// the use counts of `CNI-HOSTPORT-DNAT`), as it wrote it.
    pub fn foreign_seen(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("foreign-seen")).ok()
    }

    /// Records what was seen right after this run's own commit (or re-scan).
    pub fn set_foreign_seen(&self, seen: &str) -> Result<()> {
        let path = self.dir.join("foreign-seen");
        write_atomic_locked(&path, seen.as_bytes(), 0o644).map_err(|e| io_err("writing", &path, e))
    }

    /// True when the shared layout of `what` (e.g. `iptables-4`) was verified less than
    /// `max_age` ago: verifying lists several chains, so a burst of ADDs does it once.
    pub fn verified_recently(&self, what: &str, max_age: std::time::Duration) -> bool {
        std::fs::metadata(self.dir.join(format!("verified-{what}")))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < max_age)
    }

    /// Records that the shared layout of `what` was just verified (or repaired).
    pub fn mark_verified(&self, what: &str) -> Result<()> {
        let path = self.dir.join(format!("verified-{what}"));
        std::fs::write(&path, b"").map_err(|e| io_err("writing", &path, e))
    }

    /// Claims overlapping `wanted`, with their owners.
    pub fn overlapping(&self, wanted: &Claim) -> Vec<(Claim, Owner)> {
        let dir = self.dir.join("claims").join(wanted.dir_name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(chain) = String::from_utf8(bytes) else {
                continue;
            };
            let Some(owner) = self.owner(chain.trim()) else {
                continue;
            };
            for c in owner.claims.iter().filter(|c| c.overlaps(wanted)) {
                out.push((*c, owner.clone()));
            }
        }
        out
    }

    /// The record of `chain`, if any.
    pub fn owner(&self, chain: &str) -> Option<Owner> {
        let bytes = std::fs::read(self.dir.join("owners").join(chain)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every record.
    pub fn owners(&self) -> Vec<Owner> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("owners")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// Records an attachment and its claims (replacing an older record of the same chain).
    pub fn record(&self, owner: &Owner) -> Result<()> {
        let path = self.dir.join("owners").join(&owner.chain);
        let bytes = serde_json::to_vec(owner)
            .map_err(|e| Error::internal(format!("encoding state: {e}")))?;
        // Writers are serialised by the index lock held in `self`, so fixed temp names are safe
        // and a SIGKILLed writer's temp file is reused or removed, never stranded.
        write_atomic_locked(&path, &bytes, 0o644).map_err(|e| io_err("writing", &path, e))?;
        for c in &owner.claims {
            let dir = self.dir.join("claims").join(c.dir_name());
            std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
            let file = dir.join(format!("{}.{}", c.file_name(), owner.chain));
            write_atomic_locked(&file, owner.chain.as_bytes(), 0o644)
                .map_err(|e| io_err("writing", &file, e))?;
        }
        Ok(())
    }

    /// Removes an attachment's record and claims; nothing to do when there is none.
    pub fn forget(&self, chain: &str) -> Result<()> {
        if let Some(owner) = self.owner(chain) {
            for c in &owner.claims {
                let dir = self.dir.join("claims").join(c.dir_name());
                let _ = remove_locked(&dir.join(format!("{}.{}", c.file_name(), chain)));
                // Removing the port directory fails while other claims remain; that is fine.
                let _ = std::fs::remove_dir(&dir);
            }
        }
        let path = self.dir.join("owners").join(chain);
        remove_locked(&path).map_err(|e| io_err("removing", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(port: u16, family: u8, addr: Option<&str>) -> Claim {
        Claim {
            protocol: ProtocolName::Tcp,
            port,
            family,
            addr: addr.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn wildcard_overlaps_every_address_of_its_family_only() {
        assert!(claim(80, 4, None).overlaps(&claim(80, 4, Some("192.0.2.1"))));
        assert!(!claim(80, 4, None).overlaps(&claim(80, 6, None)));
        assert!(!claim(80, 4, Some("192.0.2.1")).overlaps(&claim(80, 4, Some("192.0.2.2"))));
        assert!(!claim(80, 4, None).overlaps(&claim(81, 4, None)));
    }
}
