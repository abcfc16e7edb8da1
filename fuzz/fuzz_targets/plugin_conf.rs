//! The plugins' own config parsing: bridge's config (with its `ipam` section) and
//! host-local's IPAM config in every spec version, plus host-local's lease-file and
//! resolv.conf readers. Never a panic; an accepted host-local config always names a
//! directory inside `dataDir` (the network name is a path component written as root).
#![no_main]

use cni::version::SUPPORTED;
use ferry_bridge::config::BridgeConf;
use host_local::allocator::Holder;
use host_local::config::{check_network_name, parse_resolv_conf, IpamConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::path::Component;

fuzz_target!(|data: &[u8]| {
    let _ = Holder::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_resolv_conf(text);
    }
    let Ok(Value::Object(raw)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = BridgeConf::parse(&raw, None);
    let _ = BridgeConf::parse(&raw, Some("c2:11:22:33:44:55"));
    let name = raw.get("name").and_then(Value::as_str).unwrap_or("fuzz");
    for version in SUPPORTED {
        for ip in [None, Some("10.213.112.9"), Some("fd00:213:112::9")] {
            let Ok(c) = IpamConfig::parse(&raw, name, version, ip) else {
                continue;
            };
            assert!(check_network_name(&c.network).is_ok());
            let dir = c.data_dir.join(&c.network);
            assert!(
                std::path::Path::new(&c.network)
                    .components()
                    .all(|p| matches!(p, Component::Normal(_))),
                "network {:?} leaves dataDir",
                c.network
            );
            assert!(dir.starts_with(&c.data_dir));
            assert!(!c.sets.is_empty(), "accepted without a range");
        }
    }
});
