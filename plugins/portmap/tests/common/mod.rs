//! Helpers shared by portmap's root integration tests (portmap.rs, userland.rs).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Run a command, whatever its outcome.
pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

/// Run a command that must succeed; its stdout.
pub fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `SO_NETNS_COOKIE` of a named netns (names portmap's index directory).
pub fn netns_cookie(ns: &str) -> u64 {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // SAFETY: socket/getsockopt/close with a correctly sized buffer.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
            let mut cookie: u64 = 0;
            let mut len = 8 as libc::socklen_t;
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            );
            libc::close(fd);
            cookie
        }
    })
    .join()
    .unwrap()
}

/// Exec `plugin` inside the test's "host" netns for the container netns `ctr`, as a runtime
/// would: the result on success, `{"error", "stderr"}` on failure.
pub fn run_plugin(
    host: &str,
    ctr: &str,
    plugin: &str,
    command: &str,
    id: &str,
    conf: &Value,
) -> Result<Value, Value> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", host, plugin])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/var/run/netns/{ctr}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(json!({"error": stdout, "stderr": String::from_utf8_lossy(&out.stderr)}))
    }
}
