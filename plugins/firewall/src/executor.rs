//! Running the firewall tools: one process per operation, stdin fed, stderr kept for errors.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Directories searched after `PATH`: runtimes often exec plugins with a minimal `PATH`
/// that lacks the sbin directories where iptables and nft live.
const FALLBACK_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"];

/// Finds an executable by name in `PATH`, then in the usual sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a finished tool run produced.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit code (`-1` when killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `tool args…` with `stdin`; fails only when the tool cannot be started.
pub fn run(tool: &str, args: &[&str], stdin: Option<&str>, what: &str) -> Result<ToolOutput> {
    let path = find_tool(tool).ok_or_else(|| {
        Error::tool(
            what,
            tool,
            &format!("{tool} not found in PATH or /usr/sbin, /sbin: install it or choose the other backend"),
            "",
        )
    })?;
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::tool(
                what,
                tool,
                &format!("cannot start {}: {e}", path.display()),
                "",
            )
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means the tool exited early; its exit status and stderr say why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::tool(what, tool, &format!("waiting for {tool}: {e}"), ""))?;
    Ok(ToolOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a tool and turns a non-zero exit into an [`Error`] carrying its stderr and input.
pub fn run_checked(tool: &str, args: &[&str], stdin: Option<&str>, what: &str) -> Result<String> {
    let out = run(tool, args, stdin, what)?;
    if out.status != 0 {
        let mut stderr = out.stderr;
        if stderr.trim().is_empty() {
            stderr = format!("exit status {}", out.status);
        }
        return Err(Error::tool(what, tool, &stderr, stdin.unwrap_or_default()));
    }
    Ok(out.stdout)
}
