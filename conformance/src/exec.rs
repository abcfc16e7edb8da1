//! Running one plugin binary exactly once and capturing everything it did.
//!
//! The harness judges plugins only by what a runtime can observe: exit status, stdout,
//! stderr. So this module keeps all three raw, and offers the strict "exactly one JSON
//! value on stdout" parse that the checklist (item 1.10) demands.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the plugin gets on its stdin; a directory fd lets us provoke a failed `read()`.
#[derive(Debug, Clone)]
pub enum Stdin {
    Bytes(Vec<u8>),
    Empty,
    Directory(PathBuf),
}

/// How a plugin process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The harness killed it after the per-call timeout.
    Timeout,
    /// The binary could not be started at all.
    SpawnFailed,
}

/// One plugin call as the runtime would see it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

/// The strict reading of stdout: nothing, one JSON value, or something else.
#[derive(Debug, Clone, PartialEq)]
pub enum Stdout {
    Empty,
    Json(Value),
    /// Not a single JSON value followed only by whitespace; the string says why.
    Junk(String),
}

impl Outcome {
    /// True for exit status 0.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }

    /// stdout parsed strictly (item 1.10): one JSON value and nothing after it but whitespace.
    pub fn stdout_parsed(&self) -> Stdout {
        parse_strict(&self.stdout)
    }

    /// The JSON on stdout, when it parsed strictly.
    pub fn json(&self) -> Option<Value> {
        match self.stdout_parsed() {
            Stdout::Json(v) => Some(v),
            _ => None,
        }
    }

    /// The `code` of the error object on stdout, if there is one.
    pub fn error_code(&self) -> Option<u64> {
        if self.success() {
            return None;
        }
        self.json()?.get("code")?.as_u64()
    }

    /// The error object's `msg` (empty when absent).
    pub fn error_msg(&self) -> String {
        self.json()
            .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }

    /// The error object's `msg` and `details` together, for "names the var" style checks.
    pub fn error_text(&self) -> String {
        let Some(v) = self.json() else {
            return String::from_utf8_lossy(&self.stdout).into_owned();
        };
        let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("");
        let details = v.get("details").and_then(|m| m.as_str()).unwrap_or("");
        format!("{msg} {details}")
    }

    /// A one-line description for reasons in the report.
    pub fn describe(&self) -> String {
        let exit = match self.exit {
            Exit::Code(c) => format!("exit {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::Timeout => "timed out".to_string(),
            Exit::SpawnFailed => "could not be started".to_string(),
        };
        let out = String::from_utf8_lossy(&self.stdout);
        let compact = match self.stdout_parsed() {
            Stdout::Json(v) => v.to_string(),
            Stdout::Empty => "<empty stdout>".to_string(),
            Stdout::Junk(_) => format!("stdout {:?}", truncate(&out, 160)),
        };
        format!("{exit}, {}", truncate(&compact, 240))
    }
}

/// Shortens text for reports, on a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses bytes as exactly one JSON value with only whitespace around it.
pub fn parse_strict(bytes: &[u8]) -> Stdout {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Stdout::Empty;
    }
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    match stream.next() {
        Some(Ok(v)) => {
            let rest = &bytes[stream.byte_offset()..];
            if rest.iter().all(|b| b.is_ascii_whitespace()) {
                Stdout::Json(v)
            } else {
                Stdout::Junk(format!("{} bytes after the JSON value", rest.len()))
            }
        }
        Some(Err(e)) => Stdout::Junk(format!("not JSON: {e}")),
        None => Stdout::Empty,
    }
}

/// Runs plugins inside a given network namespace (and a private mount namespace with a
/// fresh /sys, like `ip netns exec`), so that nothing a plugin does reaches the real host.
#[derive(Debug)]
pub struct Sandbox {
    netns: OwnedFd,
}

impl Sandbox {
    /// Opens a netns file such as `/var/run/netns/NAME`.
    pub fn open(netns_path: &Path) -> std::io::Result<Sandbox> {
        let file = std::fs::File::open(netns_path)?;
        Ok(Sandbox {
            netns: OwnedFd::from(file),
        })
    }
}

/// One call: binary, argv0, environment (exactly this, nothing inherited), stdin.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdin: Stdin,
    pub timeout: Duration,
}

impl Invocation {
    /// A call with an empty environment.
    pub fn new(binary: impl Into<PathBuf>) -> Invocation {
        Invocation {
            binary: binary.into(),
            env: Vec::new(),
            stdin: Stdin::Empty,
            timeout: Duration::from_secs(60),
        }
    }

    /// Sets (or replaces) one variable.
    pub fn var(mut self, key: &str, value: &str) -> Invocation {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Removes one variable.
    pub fn unset(mut self, key: &str) -> Invocation {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Stdin bytes.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Invocation {
        self.stdin = Stdin::Bytes(bytes.into());
        self
    }

    /// Stdin from a JSON value.
    pub fn stdin_json(self, v: &Value) -> Invocation {
        self.stdin(v.to_string().into_bytes())
    }

    /// The value of a variable in this call's environment.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Runs the plugin, optionally inside a sandbox namespace.
    pub fn run(&self, sandbox: Option<&Sandbox>) -> Outcome {
        let started = Instant::now();
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut stdin_bytes = None;
        match &self.stdin {
            Stdin::Bytes(b) => {
                cmd.stdin(Stdio::piped());
                stdin_bytes = Some(b.clone());
            }
            Stdin::Empty => {
                cmd.stdin(Stdio::null());
            }
            Stdin::Directory(dir) => match std::fs::File::open(dir) {
                Ok(f) => {
                    cmd.stdin(Stdio::from(f));
                }
                Err(_) => {
                    cmd.stdin(Stdio::null());
                }
            },
        }
        if let Some(sb) = sandbox {
            let fd = sb.netns.as_raw_fd();
            // SAFETY: only async-signal-safe syscalls between fork and exec; all strings are
            // static C literals, nothing allocates.
            unsafe {
                cmd.pre_exec(move || enter_sandbox(fd));
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome {
                    exit: Exit::SpawnFailed,
                    stdout: Vec::new(),
                    stderr: e.to_string().into_bytes(),
                    elapsed: started.elapsed(),
                }
            }
        };
        if let (Some(bytes), Some(mut pipe)) = (stdin_bytes, child.stdin.take()) {
            std::thread::spawn(move || {
                // A plugin may exit without reading stdin (VERSION): EPIPE is fine.
                let _ = pipe.write_all(&bytes);
            });
        }
        let pid = child.id() as i32;
        let done = Arc::new(AtomicBool::new(false));
        let timed_out = Arc::new(AtomicBool::new(false));
        {
            let done = done.clone();
            let timed_out = timed_out.clone();
            let timeout = self.timeout;
            std::thread::spawn(move || {
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !done.load(Ordering::SeqCst) {
                    timed_out.store(true, Ordering::SeqCst);
                    // SAFETY: kill(2) on the PID of our own unreaped child.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            });
        }
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut out_pipe = child.stdout.take();
        let mut err_pipe = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        });
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut stdout);
        }
        if let Ok(buf) = err_reader.join() {
            stderr = buf;
        }
        let status = child.wait();
        done.store(true, Ordering::SeqCst);
        let exit = match status {
            _ if timed_out.load(Ordering::SeqCst) => Exit::Timeout,
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                _ => Exit::SpawnFailed,
            },
            Err(_) => Exit::SpawnFailed,
        };
        Outcome {
            exit,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }
    }
}

/// Runs in the child between fork and exec: join the sandbox netns and give the child its
/// own mount namespace with a /sys that shows that netns (what `ip netns exec` does).
fn enter_sandbox(netns_fd: i32) -> std::io::Result<()> {
    // SAFETY: plain syscalls on valid arguments; called only in the forked child.
    unsafe {
        if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        // A failure here leaves /sys unmounted; plugins that need it will say so.
        libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            0,
            std::ptr::null(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parse_accepts_one_value_with_whitespace() {
        assert_eq!(parse_strict(b"  \n"), Stdout::Empty);
        assert!(matches!(parse_strict(b"{\"a\":1}\n"), Stdout::Json(_)));
    }

    #[test]
    fn strict_parse_rejects_trailing_junk_and_two_values() {
        assert!(matches!(parse_strict(b"{\"a\":1}x"), Stdout::Junk(_)));
        assert!(matches!(parse_strict(b"{} {}"), Stdout::Junk(_)));
        assert!(matches!(parse_strict(b"log line\n{}"), Stdout::Junk(_)));
    }
}
