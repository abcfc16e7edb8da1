//! The harness against ferry's own plugins (no FAIL at M or R) and against the installed
//! reference plugins (Debian containernetworking-plugins
//! in /usr/lib/cni): everything passes apart from the reference's known deviations, under
//! both profiles. Needs root (netns checks run in a sandbox netns).

mod common;

use ferry_conformance::harness::{Harness, Options};
use ferry_conformance::report::{Profile, Verdict};

/// The reference's known deviations (README "Known deviations of the reference").
const REFERENCE_DEVIATIONS: [&str; 2] = ["2.27:bridge", "2.16:portmap"];

#[test]
fn reference_plugins_fail_only_their_known_deviations() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces)"
    );
    assert!(
        std::path::Path::new("/usr/lib/cni/bridge").is_file(),
        "install containernetworking-plugins"
    );
    for profile in [Profile::Spec, Profile::Reference] {
        let opts = Options {
            plugins_dir: "/usr/lib/cni".into(),
            profile,
            spy_exe: env!("CARGO_BIN_EXE_ferry").into(),
            only: vec![],
            known: REFERENCE_DEVIATIONS.iter().map(|s| s.to_string()).collect(),
        };
        let report = Harness::new(opts).unwrap().run();
        let fails: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| format!("{}:{} {} — {}", c.id, c.plugin, c.name, c.reason))
            .collect();
        assert!(report.passed(), "{profile:?}: unexpected FAILs: {fails:#?}");
        assert_eq!(
            fails.len(),
            REFERENCE_DEVIATIONS.len(),
            "{profile:?}: a known deviation went away: {fails:#?}"
        );
        assert!(report.checks.len() > 100);
    }
}

#[test]
fn ferry_plugins_have_no_fail_at_m_or_r() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces)"
    );
    let opts = Options {
        plugins_dir: common::ferry_plugins(),
        profile: Profile::Reference,
        spy_exe: env!("CARGO_BIN_EXE_ferry").into(),
        only: vec![],
        known: vec![],
    };
    let report = Harness::new(opts).unwrap().run();
    let bad: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail || c.verdict == Verdict::Skip)
        .map(|c| {
            format!(
                "{:?} {}:{} {} — {}",
                c.verdict, c.id, c.plugin, c.name, c.reason
            )
        })
        .collect();
    assert!(bad.is_empty(), "ferry's plugins: {bad:#?}");
}
