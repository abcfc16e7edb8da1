//! Delegation: finding another plugin on CNI_PATH and running it (IPAM).

use crate::env::Command;
use crate::error::{code, Error, Result};
use crate::result::CniResult;
use crate::skel::Request;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The first regular file named `plugin` in `paths`, in order (as Go's `FindInPath`).
pub fn find_in_path(plugin: &str, paths: &[PathBuf]) -> Result<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(Error::invalid_config(format!(
            "invalid plugin type {plugin:?}: it must be a plain file name"
        )));
    }
    if paths.is_empty() {
        return Err(Error::new(
            code::INVALID_ENV,
            format!("required env variables [CNI_PATH] missing (needed to find plugin {plugin:?})"),
        ));
    }
    for dir in paths {
        let candidate = dir.join(plugin);
        if std::fs::metadata(&candidate)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            return Ok(candidate);
        }
    }
    let dirs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(Error::invalid_config(format!(
        "failed to find plugin {plugin:?} in path [{}]: install it there or fix CNI_PATH",
        dirs.join(":")
    )))
}

/// Run `path` with `command`, our own environment (CNI_COMMAND replaced) and `stdin`.
/// Success gives its stdout; failure gives its error object with the code it chose (so an
/// IPAM "try again" stays code 11 at the runtime). The delegate's stderr passes through.
pub fn exec(path: &Path, command: Command, stdin: &[u8]) -> Result<Vec<u8>> {
    let name = path.display();
    let mut child = std::process::Command::new(path)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::internal(format!("running plugin {name}: {e}")))?;
    if let Some(mut input) = child.stdin.take() {
        // A delegate that exits without reading gives EPIPE; its exit status tells the story.
        let _ = input.write_all(stdin);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| Error::internal(format!("waiting for plugin {name}: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    match serde_json::from_slice::<Value>(&output.stdout) {
        Ok(v) if v.get("code").and_then(Value::as_u64).is_some() => {
            let code = v["code"].as_u64().unwrap_or(code::INTERNAL as u64) as u32;
            let msg = v
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let details = v
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Err(Error::new(code, msg).with_details(details))
        }
        _ => Err(Error::internal(format!(
            "plugin {name} failed ({}) without an error object: {:?}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim()
        ))),
    }
}

fn run(plugin: &str, command: Command, req: &Request) -> Result<Vec<u8>> {
    let path = find_in_path(plugin, &req.env.path)?;
    exec(&path, command, &req.conf.bytes)
}

/// IPAM ADD with the request's whole config; the result is parsed in the request's version.
pub fn delegate_add(plugin: &str, req: &Request) -> Result<CniResult> {
    let out = run(plugin, Command::Add, req)?;
    let v: Value = serde_json::from_slice(&out).map_err(|e| {
        Error::new(
            code::DECODE,
            format!("decoding the result of IPAM plugin {plugin:?}: {e}"),
        )
    })?;
    CniResult::from_json(&v, req.conf.cni_version)
        .map_err(|e| e.context(format!("IPAM plugin {plugin:?}")))
}

/// IPAM DEL.
pub fn delegate_del(plugin: &str, req: &Request) -> Result<()> {
    run(plugin, Command::Del, req).map(|_| ())
}

/// IPAM CHECK.
pub fn delegate_check(plugin: &str, req: &Request) -> Result<()> {
    run(plugin, Command::Check, req).map(|_| ())
}

/// IPAM GC.
pub fn delegate_gc(plugin: &str, req: &Request) -> Result<()> {
    run(plugin, Command::Gc, req).map(|_| ())
}

/// IPAM STATUS.
pub fn delegate_status(plugin: &str, req: &Request) -> Result<()> {
    run(plugin, Command::Status, req).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_directory_wins_and_must_be_a_file() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir(a.path().join("ipam")).unwrap(); // a directory is not a plugin
        std::fs::write(b.path().join("ipam"), "").unwrap();
        let found = find_in_path("ipam", &[a.path().into(), b.path().into()]).unwrap();
        assert_eq!(found, b.path().join("ipam"));
        assert_eq!(find_in_path("../x", &[]).unwrap_err().code, 7);
        assert_eq!(find_in_path("nope", &[]).unwrap_err().code, 4);
    }

    #[test]
    fn delegate_error_keeps_its_code() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("spy");
        std::fs::write(
            &p,
            "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11,\"msg\":\"busy\"}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = exec(&p, Command::Add, b"{}").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (11, "busy"));
    }
}
