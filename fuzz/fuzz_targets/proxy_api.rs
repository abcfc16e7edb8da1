//! Bodies of the ferry-proxy daemon's HTTP API (`POST /v1/mappings`), its query and path
//! decoding, and the client's response parser: never a panic (the daemon serves every
//! mapping from one process), and every mapping that passes `normalize` is safe to bind:
//! ports in range, no overflow, bounded socket count, stable id.
#![no_main]

use ferry_proxy::state::{MappingSpec, MAX_RANGE};
use ferry_proxy::{api, client};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<MappingSpec>(data) {
        let text = serde_json::to_vec(&spec).expect("a parsed mapping serializes");
        let again: MappingSpec = serde_json::from_slice(&text).expect("own encoding parses");
        assert_eq!(again, spec);
        if let Ok(n) = spec.normalize() {
            let count = n.port_count();
            assert!((1..=MAX_RANGE).contains(&count));
            let (first, last) = n.host_ports();
            assert!(first >= 1 && first <= last);
            let pairs = n.port_pairs();
            assert_eq!(pairs.len() as u32, count);
            assert!(pairs.iter().all(|(h, c)| h.port() != 0 && c.port() != 0));
            assert!(n.overlaps(&n));
            assert!(!n.id.is_empty());
            // What the state file holds restores to the same mapping.
            let saved = serde_json::to_vec(&n).expect("serializes");
            let restored: MappingSpec = serde_json::from_slice(&saved).expect("restores");
            assert_eq!(restored.clone().normalize().ok(), Some(n));
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(api::percent_decode(&api::percent_encode(s)), s);
        let _ = api::query_value(s, "owner");
        let _ = api::percent_decode(s);
    }
    let _ = client::parse_response(data);
});
