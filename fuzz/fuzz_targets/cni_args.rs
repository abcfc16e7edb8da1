//! CNI_ARGS strings: the parser never panics, and anything it accepts has no `;` in a key and
//! exactly the pairs that were given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = cni::env::parse_cni_args(s, &["IP", "MAC", "K8S_POD_NAME"]) {
        for (k, v) in &m {
            assert!(!k.is_empty() && !k.contains(';') && !k.contains('='));
            assert!(!v.contains(';') && !v.contains('='));
        }
    }
});
