//! The request config a plugin receives on stdin.
//!
//! Kept twice: typed for the keys the spec defines, and raw (the exact bytes and the whole
//! JSON object) because a main plugin must hand its *whole* config to its IPAM plugin and a
//! chained plugin must not lose keys it does not know.

use crate::env::is_valid_identifier;
use crate::error::{code, Error, Result};
use crate::result::CniResult;
use crate::version::{self, Version};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

/// One (container ID, ifname) pair, as listed in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub struct Attachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name inside the container.
    #[serde(rename = "ifname", default)]
    pub ifname: String,
}

/// A parsed, validated request config.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The version the request asked for (results are printed in it).
    pub cni_version: Version,
    /// The network name (validated: safe as a path component).
    pub name: String,
    /// The plugin `type`.
    pub plugin_type: String,
    /// The whole JSON object, unknown keys included.
    pub raw: Map<String, Value>,
    /// Exactly what came on stdin, for delegation.
    pub bytes: Vec<u8>,
}

/// The part of a request that must parse before anything else: name and version.
/// Separate from [`NetConf::parse`] so the version of a failing request is still known for
/// the error object.
pub fn peek_version(raw: &Map<String, Value>) -> Result<Option<String>> {
    match raw.get("cniVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::new(code::DECODE, "cniVersion must be a string")),
    }
}

/// Parse stdin into a JSON object (code 6 when it is not one).
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::new(
            code::DECODE,
            "error parsing network configuration: expected a JSON object",
        )),
        Err(e) => Err(Error::new(
            code::DECODE,
            format!("error parsing network configuration: {e}"),
        )),
    }
}

impl NetConf {
    /// Validate a request config: JSON object (6), `cniVersion` a string (6) that we support
    /// (1), `name` present and safe (7). A missing `cniVersion` means 0.1.0, as in Go.
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let raw = parse_object(bytes)?;
        let version_str = peek_version(&raw)?;
        let name = match raw.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::Null) => {
                return Err(Error::invalid_config("missing network name"));
            }
            Some(Value::String(_)) => return Err(Error::invalid_config("missing network name")),
            Some(_) => return Err(Error::new(code::DECODE, "network name must be a string")),
        };
        if !is_valid_identifier(&name) || name == "." || name == ".." {
            return Err(
                Error::invalid_config("invalid characters found in network name")
                    .with_details(name),
            );
        }
        let cni_version = match &version_str {
            None => Version::V0_1_0,
            Some(s) => Version::parse_supported(s)?,
        };
        let plugin_type = match raw.get("type") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            raw,
            bytes: bytes.to_vec(),
        })
    }

    /// Deserialize the plugin's own config struct from the whole object. Errors name the key
    /// (serde's message does) and carry code 7.
    pub fn plugin<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(Value::Object(self.raw.clone())).map_err(|e| {
            Error::invalid_config(format!(
                "invalid {} configuration for network {:?}: {e}",
                if self.plugin_type.is_empty() {
                    "plugin"
                } else {
                    &self.plugin_type
                },
                self.name
            ))
        })
    }

    /// The previous plugin's result. A prevResult without `cniVersion` is taken to be in the
    /// config's version; one in another supported version is accepted and converted (the
    /// reference refuses that, which breaks runtimes that cache results across upgrades).
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        match self.raw.get("prevResult") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::from_json(v, self.cni_version)
                .map(Some)
                .map_err(|e| e.context("could not parse prevResult")),
        }
    }

    /// `runtimeConfig`, as injected by the runtime from capabilities.
    pub fn runtime_config(&self) -> Option<&Value> {
        self.raw.get("runtimeConfig").filter(|v| !v.is_null())
    }

    /// `args` (structured runtime metadata, e.g. `args.cni.ips`).
    pub fn args(&self) -> Option<&Value> {
        self.raw.get("args").filter(|v| !v.is_null())
    }

    /// The valid attachments of a GC request: `cni.dev/valid-attachments`, else the older
    /// `cni.dev/attachments`. `None` when neither is present — callers must then remove
    /// nothing (cnitool's gc sends no list; reading it as "none valid" would wipe everything).
    pub fn valid_attachments(&self) -> Result<Option<Vec<Attachment>>> {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            if let Some(v) = self.raw.get(key).filter(|v| !v.is_null()) {
                return serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                    Error::invalid_config(format!(
                        "{key} must be a list of {{containerID, ifname}}: {e}"
                    ))
                });
            }
        }
        Ok(None)
    }

    /// The version as the request spelled it (for error objects).
    pub fn version_str(&self) -> &str {
        self.cni_version.as_str()
    }

    /// True when the request's version is at least `v` (numerically, for gating).
    pub fn at_least(&self, v: Version) -> bool {
        version::numeric(self.cni_version.as_str()) >= version::numeric(v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_skel_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"").unwrap_err().code, 6);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0"}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a b"}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":1,"name":"n"}"#)
                .unwrap_err()
                .code,
            6
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n"}"#)
                .unwrap_err()
                .code,
            1
        );
    }

    #[test]
    fn names_that_escape_paths_are_refused() {
        for n in ["..", "a/b", "../x", "."] {
            let s = format!(r#"{{"cniVersion":"1.0.0","name":"{n}"}}"#);
            assert_eq!(NetConf::parse(s.as_bytes()).unwrap_err().code, 7, "{n}");
        }
    }

    #[test]
    fn unknown_keys_survive() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"x","weird":{"a":[1,null,"\u00e9"]}}"#,
        )
        .unwrap();
        assert_eq!(c.raw["weird"]["a"][2], "é");
        assert_eq!(c.plugin_type, "x");
    }

    #[test]
    fn gc_prefers_new_key_and_none_without_either() {
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[]}"#).unwrap();
        assert_eq!(c.valid_attachments().unwrap().unwrap().len(), 1);
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
        assert!(c.valid_attachments().unwrap().is_none());
    }

    #[test]
    fn prev_result_in_other_version_is_converted() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.213.0.2/24"}]}}"#).unwrap();
        let r = c.prev_result().unwrap().unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.213.0.2/24");
    }
}
