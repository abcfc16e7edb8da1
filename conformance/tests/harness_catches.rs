//! The harness must catch plugins that break the spec on purpose. Each test puts a spy
//! under the name `host-local` (a wrapper that scripts it through FERRY_SPY_SCRIPT),
//! runs the harness on that directory and asserts the matching check FAILs.

mod common;

use ferry_conformance::harness::{Harness, Options};
use ferry_conformance::report::{Profile, Report, Verdict};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A plugin dir whose `host-local` is a spy following `script`.
fn misbehaving_host_local(dir: &Path, script: &Value) {
    let wrapper = format!(
        "#!/bin/bash\nexport FERRY_SPY_SCRIPT='{}'\nexec -a \"$0\" {} \"$@\"\n",
        script,
        common::FERRY
    );
    let p = dir.join("host-local");
    std::fs::write(&p, wrapper).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run_harness(dir: &Path, only: &[&str]) -> Report {
    let opts = Options {
        plugins_dir: dir.to_path_buf(),
        profile: Profile::Spec,
        spy_exe: common::FERRY.into(),
        only: only.iter().map(|s| s.to_string()).collect(),
        known: vec![],
    };
    Harness::new(opts).unwrap().run()
}

fn verdicts(r: &Report, id: &str) -> Vec<(Verdict, String)> {
    r.checks
        .iter()
        .filter(|c| c.id == id && c.plugin == "host-local")
        .map(|c| (c.verdict, format!("{}: {}", c.name, c.reason)))
        .collect()
}

fn fails(r: &Report, id: &str) -> bool {
    verdicts(r, id).iter().any(|(v, _)| *v == Verdict::Fail)
}

/// A spy that answers like a decent host-local in 1.0.0, apart from what `patch` changes.
fn script(patch: Value) -> Value {
    let mut s = json!({
        "VERSION": {"stdout": {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}},
        "ADD": {"stdout": {"cniVersion": "1.0.0", "ips": [{"address": "10.213.82.5/24"}]}},
    });
    for (k, v) in patch.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

#[test]
fn wrong_error_code_is_a_fail() {
    let dir = tempfile::tempdir().unwrap();
    // Every failure uses code 7, even for env problems (which must be 4).
    misbehaving_host_local(
        dir.path(),
        &script(json!({"FROB": {"exit": 1, "stdout": {"code": 7, "msg": "bad"}}})),
    );
    let r = run_harness(dir.path(), &["1.1"]);
    assert!(fails(&r, "1.1"), "{:?}", verdicts(&r, "1.1"));
    assert!(!r.passed());
}

#[test]
fn extra_stdout_is_a_fail() {
    let dir = tempfile::tempdir().unwrap();
    misbehaving_host_local(
        dir.path(),
        &script(
            json!({"ADD": {"stdout": "{\"cniVersion\":\"1.0.0\",\"ips\":[]}\nallocated 10.213.82.5\n"}}),
        ),
    );
    let r = run_harness(dir.path(), &["1.10"]);
    assert!(fails(&r, "1.10"), "{:?}", verdicts(&r, "1.10"));
}

#[test]
fn non_idempotent_del_is_a_fail() {
    let dir = tempfile::tempdir().unwrap();
    misbehaving_host_local(
        dir.path(),
        &script(json!({"DEL": {"exit": 1, "stdout": {"code": 3, "msg": "no such container"}}})),
    );
    let r = run_harness(dir.path(), &["2.8"]);
    assert!(fails(&r, "2.8"), "{:?}", verdicts(&r, "2.8"));
}

#[test]
fn exit_zero_with_an_error_object_and_bad_error_shape_are_fails() {
    let dir = tempfile::tempdir().unwrap();
    misbehaving_host_local(
        dir.path(),
        &script(
            json!({"DEL": {"exit": 0, "stdout": {"code": 3, "msg": "gone"}},
                       "CHECK": {"exit": 1, "stdout": {"code": "11", "msg": ""}}}),
        ),
    );
    let r = run_harness(dir.path(), &["1.12", "4.9"]);
    assert!(fails(&r, "1.12"), "{:?}", verdicts(&r, "1.12"));
    assert!(fails(&r, "4.9"), "{:?}", verdicts(&r, "4.9"));
}

#[test]
fn wrong_result_version_and_shape_are_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Always answers 1.0.0 (no `version` in ips), even for a 0.4.0 request.
    misbehaving_host_local(dir.path(), &script(json!({})));
    let r = run_harness(dir.path(), &["3.2", "4.2"]);
    assert!(fails(&r, "3.2"), "{:?}", verdicts(&r, "3.2"));
    assert!(fails(&r, "4.2"), "{:?}", verdicts(&r, "4.2"));
}

#[test]
fn version_lies_are_a_fail() {
    let dir = tempfile::tempdir().unwrap();
    misbehaving_host_local(
        dir.path(),
        &script(
            json!({"VERSION": {"stdout": {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.0.0"]}}}),
        ),
    );
    let r = run_harness(dir.path(), &["2.22"]);
    assert!(fails(&r, "2.22"), "{:?}", verdicts(&r, "2.22"));
}
