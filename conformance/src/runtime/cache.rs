//! libcni's result cache (`cniCacheV1`), so ferry and containerd/podman can share a node:
//! `<cacheDir>/results/<network>-<containerID>-<ifname>`, dir 0700, file 0600.

use super::RuntimeError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The `kind` libcni writes and insists on when reading.
pub const KIND: &str = "cniCacheV1";

/// One cache file, field for field as libcni's `cachedInfo`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheEntry {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The raw network config bytes (Go encodes `[]byte` as base64).
    #[serde(with = "base64_bytes")]
    pub config: Vec<u8>,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<(String, String)>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Where the cache file of one attachment lives.
pub fn path(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{container_id}-{ifname}"))
}

/// Writes an entry atomically (temp file + rename; libcni itself does not, we do).
pub fn write(cache_dir: &Path, entry: &CacheEntry) -> Result<PathBuf, RuntimeError> {
    let file = path(
        cache_dir,
        &entry.network_name,
        &entry.container_id,
        &entry.if_name,
    );
    let name_len = file.file_name().map(|n| n.len()).unwrap_or(0);
    if name_len > 255 {
        return Err(RuntimeError::new(
            7,
            format!(
                "the cache file name for network {:?}, container {:?}, ifname {:?} is {name_len} bytes, more than NAME_MAX (255): use a shorter container ID",
                entry.network_name, entry.container_id, entry.if_name
            ),
        ));
    }
    let dir = cache_dir.join("results");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| RuntimeError::new(5, format!("creating {}: {e}", dir.display())))?;
    let bytes = serde_json::to_vec(entry)
        .map_err(|e| RuntimeError::new(6, format!("encoding the cache entry: {e}")))?;
    // Writers of one attachment are serialised by the runtime's per-attachment lock, so the
    // fixed temp name of write_atomic_locked is safe: a killed writer's temp is reused by the
    // next write or removed by DEL, and a symlink planted there is never written through.
    cni::fsutil::write_atomic_locked(&file, &bytes, 0o600)
        .map_err(|e| RuntimeError::new(5, format!("writing {}: {e}", file.display())))?;
    Ok(file)
}

/// What reading a cache file gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// No file, or it could not be read at all (libcni: "no cache").
    None,
    Entry(Box<CacheEntry>),
    /// An old libcni's bare result JSON.
    LegacyResult(Value),
    /// Contents that parse as neither.
    Corrupt(String),
}

/// Reads one attachment's cache file.
pub fn read(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> Cached {
    read_file(&path(cache_dir, network, container_id, ifname))
}

/// Reads a cache file by path.
pub fn read_file(file: &Path) -> Cached {
    let Ok(bytes) = std::fs::read(file) else {
        return Cached::None;
    };
    match serde_json::from_slice::<CacheEntry>(&bytes) {
        Ok(e) if e.kind == KIND => Cached::Entry(Box::new(e)),
        _ => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.get("cniVersion").is_some() => Cached::LegacyResult(v),
            Ok(v) => Cached::Corrupt(format!("not a cniCacheV1 entry: {v}")),
            Err(e) => Cached::Corrupt(e.to_string()),
        },
    }
}

/// Removes one attachment's cache file and the temp file a killed writer may have left
/// (absent is fine).
pub fn remove(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) {
    let _ = cni::fsutil::remove_locked(&path(cache_dir, network, container_id, ifname));
}

/// Deletes every temp file left by killed writers. Only for GC, which runs alone (it holds the
/// runtime's global lock), so no temp file can belong to a live writer.
pub fn sweep_all_stale_temps(cache_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(cache_dir.join("results")) else {
        return;
    };
    for entry in rd.filter_map(|e| e.ok()) {
        if entry
            .file_name()
            .to_str()
            .is_some_and(cni::fsutil::is_locked_temp_name)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Every valid `cniCacheV1` entry in the cache (for GC and `ports`). The file name is
/// never parsed: network names may contain `-`.
pub fn all(cache_dir: &Path) -> Vec<(PathBuf, CacheEntry)> {
    let Ok(rd) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, CacheEntry)> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|p| match read_file(&p) {
            Cached::Entry(e) if !e.if_name.is_empty() && !e.network_name.is_empty() => {
                Some((p, *e))
            }
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim_end_matches('=');
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let mut acc: u32 = 0;
        let mut bits = 0;
        for c in s.bytes() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => {
                decode(&s).ok_or_else(|| serde::de::Error::custom("invalid base64 in config"))
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips() {
            for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
                let e = super::encode(s.as_bytes());
                assert_eq!(super::decode(&e).unwrap(), s.as_bytes());
            }
            assert_eq!(super::encode(b"foobar"), "Zm9vYmFy");
            assert_eq!(super::encode(b"fo"), "Zm8=");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn del_removes_a_killed_writers_temp_and_gc_sweeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("results");
        std::fs::create_dir_all(&results).unwrap();
        let mine = results.join(".net-c1-eth0.tmp");
        let other = results.join(".net-c2-eth0.tmp");
        for f in [&mine, &other] {
            std::fs::write(f, b"{").unwrap();
        }
        remove(d.path(), "net", "c1", "eth0");
        assert!(!mine.exists(), "DEL removes its attachment's temp");
        assert!(other.exists(), "DEL leaves other attachments alone");
        sweep_all_stale_temps(d.path());
        assert!(!other.exists(), "GC sweeps every temp");
    }

    #[test]
    fn a_symlink_planted_at_the_temp_name_is_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("results");
        std::fs::create_dir_all(&results).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, results.join(".net-c1-eth0.tmp")).unwrap();
        let e = CacheEntry {
            kind: KIND.into(),
            container_id: "c1".into(),
            config: b"{}".to_vec(),
            if_name: "eth0".into(),
            network_name: "net".into(),
            netns: String::new(),
            cni_args: vec![],
            capability_args: Map::new(),
            result: None,
        };
        assert!(write(d.path(), &e).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn entry_matches_libcni_field_names_and_omissions() {
        let e = CacheEntry {
            kind: KIND.into(),
            container_id: "c1".into(),
            config: b"{}".to_vec(),
            if_name: "eth0".into(),
            network_name: "net".into(),
            netns: String::new(),
            cni_args: vec![],
            capability_args: Map::new(),
            result: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"kind":"cniCacheV1","containerId":"c1","config":"e30=","ifName":"eth0","networkName":"net"})
        );
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let e = CacheEntry {
            kind: KIND.into(),
            container_id: "c1".into(),
            config: b"{\"name\":\"a-b\"}".to_vec(),
            if_name: "eth0".into(),
            network_name: "a-b".into(),
            netns: "/var/run/netns/x".into(),
            cni_args: vec![("K".into(), "V".into())],
            capability_args: json!({"portMappings": []}).as_object().unwrap().clone(),
            result: Some(json!({"cniVersion": "1.0.0"})),
        };
        write(dir.path(), &e).unwrap();
        assert_eq!(
            read(dir.path(), "a-b", "c1", "eth0"),
            Cached::Entry(Box::new(e.clone()))
        );
        assert_eq!(all(dir.path()).len(), 1);
        remove(dir.path(), "a-b", "c1", "eth0");
        assert_eq!(read(dir.path(), "a-b", "c1", "eth0"), Cached::None);
    }
}
