//! Bad input: each case fails with the right code and a message naming what to fix, and
//! leaves no partial file behind.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::symlink;

/// Nothing but the reference-contract files (or nothing at all) may be left.
fn assert_no_partial_files(net: &Net) {
    let dir = net.net_dir();
    if dir.exists() {
        assert!(net.leases().is_empty(), "leases left: {:?}", net.leases());
        assert!(
            stray_files(&dir).is_empty(),
            "stray: {:?}",
            stray_files(&dir)
        );
    }
}

#[test]
fn non_json_stdin_is_code_6() {
    for input in [&b"{not json"[..], b"", b"[1,2]"] {
        let (code, _) = run_raw(FERRY, "ADD", input).err();
        assert_eq!(code, 6, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn unsupported_cni_version_is_code_1_listing_supported_versions() {
    let net = Net::new("fhlbv");
    let conf = net.simple("9.9.9", "10.213.64.0/24");
    let (code, text) = run(FERRY, "ADD", "c1", "eth0", &conf).err();
    assert_eq!(code, 1);
    for v in ["0.1.0", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(text.contains(v), "{text}");
    }
    assert_no_partial_files(&net);
}

#[test]
fn invalid_ranges_are_code_7_naming_the_field() {
    let cases = [
        (
            json!({"ranges": [[{"subnet": "10.213.64.7/24"}]]}),
            "ipam.ranges[0][0].subnet",
        ),
        (json!({"subnet": "10.213.64.7/24"}), "ipam.subnet"),
        (
            json!({"ranges": [[{"subnet": "10.213.64.0/24", "rangeStart": "10.213.65.1"}]]}),
            "ipam.ranges[0][0].rangeStart",
        ),
        (
            json!({"ranges": [[{"subnet": "10.213.64.0/24", "rangeEnd": "10.213.63.255"}]]}),
            "ipam.ranges[0][0].rangeEnd",
        ),
        (
            json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "10.213.64.128/25"}]]}),
            "ipam.ranges[1]",
        ),
        (
            json!({"ranges": [[{"subnet": "10.213.64.0/24"}, {"subnet": "10.213.64.0/26"}]]}),
            "ipam.ranges[0][1]",
        ),
        (
            json!({"ranges": [[{"subnet": "10.213.64.0/24", "gateway": "10.9.9.9"}]]}),
            "gateway",
        ),
        (json!({}), "no IP ranges"),
    ];
    for (ipam, field) in cases {
        let net = Net::new("fhlbr");
        let (code, text) = run(FERRY, "ADD", "c1", "eth0", &net.conf("1.0.0", ipam.clone())).err();
        assert_eq!(code, 7, "{ipam}: {text}");
        assert!(text.contains(field), "{ipam}: expected {field} in {text}");
        assert!(!net.data_dir().exists(), "{ipam}: nothing may be created");
    }
}

#[test]
fn network_names_that_would_escape_data_dir_are_refused_before_any_path_is_built() {
    for name in ["a..b", "..", "x/../../etc", "fhl/x"] {
        let net = Net::new(name);
        let conf = net.simple("1.0.0", "10.213.64.0/24");
        for cmd in ["ADD", "DEL"] {
            let (code, text) = run(FERRY, cmd, "c1", "eth0", &conf).err();
            assert_eq!(code, 7, "{name} {cmd}: {text}");
        }
        assert!(
            !net.data_dir().exists(),
            "{name}: no directory may be created"
        );
    }
}

#[test]
fn exhausted_range_is_102_naming_network_range_and_the_fix() {
    let net = Net::new("fhlex");
    let conf = net.simple("1.0.0", "10.213.64.0/30"); // one usable address
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    let before = net.leases();
    let (code, text) = run(FERRY, "ADD", "c2", "eth0", &conf).err();
    assert_eq!(code, 102, "{text}");
    for needle in ["fhlex", "10.213.64.0/30", "GC", "larger range"] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }
    assert_eq!(net.leases(), before);
    assert!(stray_files(&net.net_dir()).is_empty());
}

#[test]
fn dual_stack_failure_rolls_back_the_first_family() {
    let net = Net::new("fhlroll");
    let conf = net.conf(
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.213.64.0/24"}], [{"subnet": "fd00:213:64::/126"}]]}),
    );
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    run(FERRY, "ADD", "c2", "eth0", &conf).ok();
    let before = net.leases();
    let (code, _) = run(FERRY, "ADD", "c3", "eth0", &conf).err();
    assert_eq!(code, 102);
    assert_eq!(net.leases(), before, "no IPv4 lease may be left for c3");
}

#[test]
fn unwritable_data_dir_is_code_5_naming_the_path() {
    let net = Net::new("fhlro");
    // A regular file where a directory must be: fails for root too.
    let blocker = net.tmp.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let mut conf = net.simple("1.0.0", "10.213.64.0/24");
    conf["ipam"]["dataDir"] = json!(blocker.join("data"));
    let (code, text) = run(FERRY, "ADD", "c1", "eth0", &conf).err();
    assert_eq!(code, 5, "{text}");
    assert!(text.contains(&blocker.display().to_string()), "{text}");
    // The network directory itself is a file.
    std::fs::create_dir_all(net.data_dir()).unwrap();
    std::fs::write(net.net_dir(), "x").unwrap();
    let (code, text) = run(
        FERRY,
        "ADD",
        "c1",
        "eth0",
        &net.simple("1.0.0", "10.213.64.0/24"),
    )
    .err();
    assert_eq!(code, 5, "{text}");
    assert!(
        text.contains(&net.net_dir().display().to_string()),
        "{text}"
    );
}

#[test]
fn a_reservation_replaced_by_a_symlink_is_never_written_through() {
    let net = Net::new("fhlsym");
    let conf = net.simple("1.1.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c0", "eth0", &conf).ok(); // .2, creates the directory
    let victim = net.tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let dir = net.net_dir();
    symlink(&victim, dir.join("10.213.64.3")).unwrap();
    symlink(&victim, dir.join("10.213.64.4")).unwrap();
    std::fs::remove_file(dir.join("last_reserved_ip.0")).unwrap();
    symlink(&victim, dir.join("last_reserved_ip.0")).unwrap();

    // Allocation skips the symlinked names; the cursor file is replaced, not followed.
    let got = run(FERRY, "ADD", "c1", "eth0", &conf).addresses();
    assert_eq!(got, ["10.213.64.5/24"]);
    // Asking for a symlinked address is refused.
    let (code, _) = run_with(FERRY, "ADD", "c2", "eth0", &conf, Some("IP=10.213.64.3")).err();
    assert_eq!(code, 103);
    // DEL, CHECK and GC neither follow nor remove them.
    run(FERRY, "DEL", "c1", "eth0", &conf).ok();
    run(FERRY, "DEL", "precious", "eth0", &conf).ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    run(FERRY, "GC", "", "", &gc).ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(dir.join("10.213.64.3"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!std::fs::symlink_metadata(dir.join("last_reserved_ip.0"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A symlinked lock file is refused rather than followed.
    std::fs::remove_file(dir.join("lock")).unwrap();
    symlink(&victim, dir.join("lock")).unwrap();
    let (code, text) = run(FERRY, "ADD", "c3", "eth0", &conf).err();
    assert_eq!(code, 5, "{text}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn a_symlinked_network_directory_is_refused() {
    let net = Net::new("fhlsymd");
    let elsewhere = net.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(net.data_dir()).unwrap();
    symlink(&elsewhere, net.net_dir()).unwrap();
    let (code, _) = run(
        FERRY,
        "ADD",
        "c1",
        "eth0",
        &net.simple("1.0.0", "10.213.64.0/24"),
    )
    .err();
    assert_eq!(code, 5);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_hijacked_hint_directory_is_neither_followed_nor_fatal() {
    let net = Net::new("fhlhint");
    let conf = net.simple("1.0.0", "10.213.64.0/24");
    run(FERRY, "ADD", "c0", "eth0", &conf).ok();
    let elsewhere = net.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let hints = net.net_dir().join(".ferry-owners");
    std::fs::remove_dir_all(&hints).unwrap();
    symlink(&elsewhere, &hints).unwrap();
    run(FERRY, "ADD", "c1", "eth0", &conf).ok();
    run(FERRY, "CHECK", "c1", "eth0", &conf).ok();
    run(FERRY, "DEL", "c1", "eth0", &conf).ok();
    run(FERRY, "DEL", "c0", "eth0", &conf).ok();
    assert!(net.leases().is_empty());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}
