//! A whole plugin invocation with hostile stdin: skel must answer with exactly one JSON
//! value on stdout — a result (exit 0) or an error object with a code (exit 1) — and never
//! panic, whatever the config, prevResult or GC list holds.
#![no_main]

use cni::{CniResult, Plugin, Request, Result};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Exercises every parser a real plugin would: its own config struct, prevResult (converted
/// and echoed back in the request's version), runtimeConfig and GC attachments.
struct Echo;

impl Plugin for Echo {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let _: Value = req.conf.plugin()?;
        let _ = req.conf.runtime_config();
        let _ = req.conf.valid_attachments()?;
        let _ = req.env.cni_args(&["IP", "MAC"]);
        Ok(req.conf.prev_result()?.unwrap_or_default())
    }
    fn del(&self, req: &Request) -> Result<()> {
        req.conf.prev_result().map(|_| ())
    }
    fn check(&self, req: &Request) -> Result<()> {
        req.conf.prev_result().map(|_| ())
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the verb, the rest is stdin.
    let (verb, stdin) = match data.split_first() {
        Some((b, rest)) => (
            ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"][*b as usize % 6],
            rest,
        ),
        None => ("ADD", data),
    };
    let env = |k: &str| -> Option<String> {
        Some(match k {
            "CNI_COMMAND" => verb.into(),
            "CNI_CONTAINERID" => "fuzz".into(),
            "CNI_NETNS" => "/var/run/netns/fuzz-none".into(),
            "CNI_IFNAME" => "eth0".into(),
            "CNI_PATH" => "/nonexistent".into(),
            "CNI_ARGS" => "IgnoreUnknown=1;IP=10.213.0.9".into(),
            _ => return None,
        })
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = cni::skel::run_with("fuzz", &Echo, env, &mut &stdin[..], &mut out, &mut err);
    assert!(status == 0 || status == 1);
    if out.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(status, 0, "failure without an error object");
        return;
    }
    let v: Value = serde_json::from_slice(&out).expect("stdout is one JSON value");
    if status == 1 {
        assert!(
            v["code"].is_u64() && v["msg"].is_string(),
            "bad error object {v}"
        );
    }
});
