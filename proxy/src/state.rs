//! Mappings as data: the JSON the API speaks, validation, and the state file that brings
//! them back after a restart.

use crate::error::{Error, IoContext, Result};
use crate::proxyproto::ProxyProtocol;
use serde::{Deserialize, Deserializer, Serialize};
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP, one-to-one style (SOCK_STREAM sockets), forwarded like TCP; needs kernel SCTP
    /// support (CONFIG_IP_SCTP), refused with a message saying so where it is missing.
    Sctp,
}

impl Proto {
    /// Parses `tcp`/`udp`/`sctp` as dockerd and the CNI portMappings spell them.
    pub fn parse(text: &str) -> Option<Proto> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// `tcp`, `udp` or `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// TCP and SCTP: a listener, and a connection per client.
    pub fn is_stream(self) -> bool {
        self != Proto::Udp
    }
}

/// One mapping as the API receives and returns it (JSON keys mirror CNI's portMappings:
/// `hostIP`, `hostPort`, `containerIP`, `containerPort`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingSpec {
    /// Unique name; derived from owner, proto, host IP and port when empty.
    #[serde(default)]
    pub id: String,
    /// Who the mapping belongs to (a container ID); deleting by owner removes them all.
    #[serde(default)]
    pub owner: String,
    /// `tcp` or `udp`.
    pub proto: Proto,
    /// Host address to listen on; empty or missing means 0.0.0.0.
    #[serde(
        rename = "hostIP",
        default = "unspecified_v4",
        deserialize_with = "ip_or_empty"
    )]
    pub host_ip: IpAddr,
    /// First (or only) host port.
    pub host_port: u16,
    /// Last host port of a range (inclusive); container ports follow with the same offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_end: Option<u16>,
    /// Backend address (IPv4 or IPv6, independent of the host address's family).
    #[serde(rename = "containerIP")]
    pub container_ip: IpAddr,
    /// Backend port for `hostPort`.
    pub container_port: u16,
    /// Send a PROXY protocol header (`v1` or `v2`) to the backend (TCP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

fn unspecified_v4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

fn ip_or_empty<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<IpAddr, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(unspecified_v4());
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| serde::de::Error::custom(format!("hostIP {text:?} is not an IP address")))
}

/// Longest accepted id and owner.
const MAX_NAME: usize = 256;
/// Most ports in one range mapping (one socket each).
pub const MAX_RANGE: u32 = 10_000;

impl MappingSpec {
    /// Number of host ports the mapping covers.
    pub fn port_count(&self) -> u32 {
        match self.host_port_end {
            Some(end) => u32::from(end).saturating_sub(u32::from(self.host_port)) + 1,
            None => 1,
        }
    }

    /// Host port range (inclusive).
    pub fn host_ports(&self) -> (u16, u16) {
        (self.host_port, self.host_port_end.unwrap_or(self.host_port))
    }

    /// (listen address, backend address) for every port of the mapping.
    pub fn port_pairs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        (0..self.port_count())
            .map(|offset| {
                let host = self.host_port + offset as u16;
                let container = self.container_port + offset as u16;
                (
                    SocketAddr::new(self.host_ip, host),
                    SocketAddr::new(self.container_ip, container),
                )
            })
            .collect()
    }

    /// Checks the fields and fills in a missing id. Errors name the field and the fix.
    pub fn normalize(mut self) -> Result<MappingSpec> {
        if self.host_port == 0 {
            return Err(Error::Invalid("hostPort must be 1-65535".into()));
        }
        if self.container_port == 0 {
            return Err(Error::Invalid("containerPort must be 1-65535".into()));
        }
        if self.container_ip.is_unspecified() {
            return Err(Error::Invalid(
                "containerIP must be a concrete address, not 0.0.0.0 or ::".into(),
            ));
        }
        if let Some(end) = self.host_port_end {
            if end < self.host_port {
                return Err(Error::Invalid(format!(
                    "hostPortEnd {end} is below hostPort {}",
                    self.host_port
                )));
            }
            if end == self.host_port {
                self.host_port_end = None;
            }
        }
        let count = self.port_count();
        if count > MAX_RANGE {
            return Err(Error::Invalid(format!(
                "a range may cover at most {MAX_RANGE} ports, this one covers {count}"
            )));
        }
        if u32::from(self.container_port) + count - 1 > 65535 {
            return Err(Error::Invalid(
                "containerPort plus the range length passes 65535".into(),
            ));
        }
        if !crate::proxyproto::supported_for(self.proxy_protocol, self.proto) {
            return Err(Error::Invalid(
                "proxyProtocol: v1 and v2 for tcp mappings, v2 for udp (sent before every \
                 datagram); none for sctp"
                    .into(),
            ));
        }
        if self.owner.len() > MAX_NAME {
            return Err(Error::Invalid(format!(
                "owner is longer than {MAX_NAME} bytes"
            )));
        }
        if self.id.is_empty() {
            self.id = self.default_id();
        }
        if self.id.len() > MAX_NAME || !self.id.chars().all(is_id_char) {
            return Err(Error::Invalid(format!(
                "id {:?} must be 1-{MAX_NAME} characters of A-Z a-z 0-9 . _ -",
                self.id
            )));
        }
        Ok(self)
    }

    /// `<owner>_<proto>_<hostIP>_<hostPort>`, with characters outside the id set replaced,
    /// so re-adding the same mapping is recognised as the same.
    fn default_id(&self) -> String {
        let owner: String = self
            .owner
            .chars()
            .map(|c| if is_id_char(c) { c } else { '-' })
            .collect();
        let ip: String = self
            .host_ip
            .to_string()
            .chars()
            .map(|c| if is_id_char(c) { c } else { '.' })
            .collect();
        let prefix = if owner.is_empty() {
            "mapping".to_string()
        } else {
            owner
        };
        format!("{prefix}_{}_{ip}_{}", self.proto.as_str(), self.host_port)
    }

    /// True when both mappings would need the same host socket: same protocol and family,
    /// overlapping ports, and equal addresses or a wildcard on either side.
    pub fn overlaps(&self, other: &MappingSpec) -> bool {
        if self.proto != other.proto || self.host_ip.is_ipv4() != other.host_ip.is_ipv4() {
            return false;
        }
        let (a0, a1) = self.host_ports();
        let (b0, b1) = other.host_ports();
        if a1 < b0 || b1 < a0 {
            return false;
        }
        self.host_ip == other.host_ip
            || self.host_ip.is_unspecified()
            || other.host_ip.is_unspecified()
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

/// What `GET /v1/mappings` returns for each mapping: the spec plus whether it is serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingStatus {
    /// The mapping as added.
    #[serde(flatten)]
    pub spec: MappingSpec,
    /// True while its sockets are bound and forwarding.
    pub listening: bool,
    /// Why it is not listening (restored after a restart but the port was taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The state file's layout.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    mappings: Vec<MappingSpec>,
}

/// Where the daemon keeps its mappings between restarts.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

/// Name of the state file inside the state directory (kept stable across versions).
pub const STATE_FILE: &str = "mappings.json";

impl StateStore {
    /// Uses (and creates, mode 0700) `dir`.
    pub fn open(dir: &Path) -> Result<StateStore> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ctx(|| format!("creating state directory {}", dir.display()))?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the saved mappings; a missing file means none.
    pub fn load(&self) -> Result<Vec<MappingSpec>> {
        let path = self.path();
        // A previous daemon killed mid-save may have left its temp file; the committed state
        // is `path` alone, so the leftover is garbage (see `write_atomic`).
        if let Some(tmp) = temp_path(&path) {
            let _ = fs::remove_file(tmp);
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!(
                "state file {} is not valid ({e}); move it away to start empty",
                path.display()
            ))
        })?;
        Ok(file.mappings)
    }

    /// Writes all mappings: temp file in the same directory, fsync, rename, fsync the
    /// directory — a crash leaves either the old or the new file, never a torn one.
    pub fn save(&self, mappings: &[MappingSpec]) -> Result<()> {
        let file = StateFile {
            version: 1,
            mappings: mappings.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::Invalid(format!("encoding state: {e}")))?;
        write_atomic(&self.path(), &bytes)
    }
}

/// The fixed temp name `write_atomic` uses for `path`.
fn temp_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    Some(path.with_file_name(format!(".{name}.tmp")))
}

/// Atomically replaces `path` with `bytes` (see [`StateStore::save`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    // A fixed temp name, not a per-process one: saves are serialised (the daemon holds its
    // mappings lock while persisting), and a daemon SIGKILLed between write and rename leaves
    // a file the next save truncates and renames away, instead of litter that accumulates
    // with every crash. O_NOFOLLOW keeps a planted symlink from being written through.
    let tmp = temp_path(path).unwrap_or_else(|| dir.join(".state.tmp"));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path).ctx(|| format!("renaming into {}", path.display()))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> MappingSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_cni_style_keys_and_fills_id() {
        let s = spec(
            r#"{"owner":"abc","proto":"tcp","hostIP":"","hostPort":8080,"containerIP":"10.213.48.2","containerPort":80}"#,
        )
        .normalize()
        .unwrap();
        assert_eq!(s.host_ip, unspecified_v4());
        assert_eq!(s.id, "abc_tcp_0.0.0.0_8080");
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["hostIP"], "0.0.0.0");
        assert_eq!(back["containerIP"], "10.213.48.2");
        assert!(back.get("hostPortEnd").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let bad = spec(
            r#"{"proto":"udp","hostPort":1,"containerIP":"10.0.0.1","containerPort":1,"proxyProtocol":"v1"}"#,
        );
        assert!(bad
            .normalize()
            .unwrap_err()
            .to_string()
            .contains("proxyProtocol"));
        let bad = spec(
            r#"{"proto":"sctp","hostPort":1,"containerIP":"10.0.0.1","containerPort":1,"proxyProtocol":"v2"}"#,
        );
        assert!(bad
            .normalize()
            .unwrap_err()
            .to_string()
            .contains("proxyProtocol"));
        // v2 has a DGRAM form: fine on UDP.
        spec(r#"{"proto":"udp","hostPort":1,"containerIP":"10.0.0.1","containerPort":1,"proxyProtocol":"v2"}"#)
            .normalize()
            .unwrap();
        let bad = spec(
            r#"{"proto":"tcp","hostPort":10,"hostPortEnd":5,"containerIP":"10.0.0.1","containerPort":1}"#,
        );
        assert!(bad
            .normalize()
            .unwrap_err()
            .to_string()
            .contains("hostPortEnd"));
        let bad =
            spec(r#"{"proto":"tcp","hostPort":10,"containerIP":"0.0.0.0","containerPort":1}"#);
        assert!(bad
            .normalize()
            .unwrap_err()
            .to_string()
            .contains("containerIP"));
        let bad = spec(
            r#"{"id":"a/b","proto":"tcp","hostPort":10,"containerIP":"10.0.0.1","containerPort":1}"#,
        );
        assert!(bad.normalize().unwrap_err().to_string().contains("id"));
    }

    #[test]
    fn ranges_pair_ports_with_the_same_offset() {
        let s = spec(r#"{"proto":"tcp","hostIP":"::1","hostPort":23000,"hostPortEnd":23002,"containerIP":"10.0.0.1","containerPort":80}"#)
            .normalize()
            .unwrap();
        let pairs = s.port_pairs();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[2].0, "[::1]:23002".parse().unwrap());
        assert_eq!(pairs[2].1, "10.0.0.1:82".parse().unwrap());
    }

    #[test]
    fn overlap_rules() {
        let a = spec(
            r#"{"proto":"tcp","hostIP":"0.0.0.0","hostPort":80,"containerIP":"10.0.0.1","containerPort":80}"#,
        );
        let b = spec(
            r#"{"proto":"tcp","hostIP":"127.0.0.1","hostPort":80,"containerIP":"10.0.0.2","containerPort":80}"#,
        );
        let c = spec(
            r#"{"proto":"udp","hostIP":"127.0.0.1","hostPort":80,"containerIP":"10.0.0.2","containerPort":80}"#,
        );
        let d = spec(
            r#"{"proto":"tcp","hostIP":"::","hostPort":80,"containerIP":"10.0.0.2","containerPort":80}"#,
        );
        let e = spec(
            r#"{"proto":"tcp","hostIP":"127.0.0.1","hostPort":70,"hostPortEnd":90,"containerIP":"10.0.0.2","containerPort":80}"#,
        );
        assert!(a.overlaps(&b));
        assert!(!b.overlaps(&c));
        assert!(!a.overlaps(&d));
        assert!(e.overlaps(&b));
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("st")).unwrap();
        assert!(store.load().unwrap().is_empty());
        let s = spec(
            r#"{"id":"x","proto":"tcp","hostPort":80,"containerIP":"10.0.0.1","containerPort":80,"proxyProtocol":"v2"}"#,
        );
        store.save(std::slice::from_ref(&s)).unwrap();
        assert_eq!(store.load().unwrap(), vec![s]);
    }
}
