//! Results in any version: parsing never panics, and whatever parses renders in every
//! version; rich renderings parse back to the same value.
#![no_main]

use cni::version::SUPPORTED;
use cni::CniResult;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for from in SUPPORTED {
        let Ok(r) = CniResult::from_json(&v, from) else {
            continue;
        };
        for to in SUPPORTED {
            let Ok(out) = r.to_json(to) else {
                assert!(to.is_legacy(), "only legacy rendering may fail");
                continue;
            };
            if !to.is_legacy() {
                let back = CniResult::from_json(&out, to).expect("own rendering parses");
                assert_eq!(back.to_json(to).ok(), Some(out), "render is not stable");
            }
        }
    }
});
