//! The `ferry` runtime's network-config loading (conflists and legacy single configs, as
//! libcni reads them): never panics, rejects with a CNI error code, and whatever it accepts
//! is a list of plugin objects with a usable `type`, the exact file bytes, and a version
//! that the runtime can gate on.
#![no_main]

use ferry_conformance::runtime::config;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match config::list_from_bytes(data, None) {
        Ok(list) => {
            assert_eq!(
                list.bytes, data,
                "the cached config must be the file's bytes"
            );
            for p in &list.plugins {
                let t = p
                    .get("type")
                    .and_then(Value::as_str)
                    .expect("plugin without type");
                assert!(
                    !t.is_empty() && !t.contains('/') && !t.contains('\\'),
                    "type {t:?}"
                );
            }
            let v = list.version_or_default();
            assert!(!v.is_empty());
        }
        Err(e) => assert!(e.code != 0, "error without a CNI code: {e}"),
    }
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(data) {
        // A legacy `.conf` goes through the same loader after wrapping.
        if let Ok(list) = config::wrap_single(&obj) {
            assert_eq!(list.plugins.len(), 1);
        }
        let _ = config::select_version(&obj);
        // Key sorting (what the runtime sends to plugins) keeps every value.
        let sorted = config::sorted(&Value::Object(obj.clone()));
        assert_eq!(sorted, Value::Object(obj));
    }
});
