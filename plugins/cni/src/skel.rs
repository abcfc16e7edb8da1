//! The plugin entry point: what happens between `exec` and the plugin's verb function.
//!
//! The order of checks follows the Go reference's skel (checklist §1), because runtimes and
//! people debugging them expect the same error for the same mistake: environment first, then
//! stdin, then version, then the verb's version gate.

use crate::config::{parse_object, peek_version, NetConf};
use crate::env::{Command, Env};
use crate::error::{code, Error, Result};
use crate::result::CniResult;
use crate::version::{self, Version, SUPPORTED};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Largest stdin we accept. Real configs with a prevResult are a few KiB; the bound keeps a
/// hostile or broken runtime from making a root process buffer without limit.
pub const MAX_STDIN: usize = 8 << 20;

/// Everything a verb needs: the validated environment and the parsed config.
#[derive(Debug, Clone)]
pub struct Request {
    /// CNI_* variables.
    pub env: Env,
    /// The config from stdin.
    pub conf: NetConf,
}

/// A CNI plugin: one function per verb. GC and STATUS default to "nothing to do".
pub trait Plugin {
    /// Attach; return the result (skel renders it in the request's version).
    fn add(&self, req: &Request) -> Result<CniResult>;
    /// Detach; must succeed when there is nothing left to remove.
    fn del(&self, req: &Request) -> Result<()>;
    /// Verify the attachment described by prevResult.
    fn check(&self, req: &Request) -> Result<()>;
    /// Release resources of attachments not in the valid list.
    fn gc(&self, _req: &Request) -> Result<()> {
        Ok(())
    }
    /// Report whether ADD can be served.
    fn status(&self, _req: &Request) -> Result<()> {
        Ok(())
    }
}

/// Where skel reads stdin from. The real process polls for VERSION so that a runtime that
/// leaves stdin open without writing cannot hang us.
pub trait Input {
    /// All of stdin, at most `limit + 1` bytes.
    fn read_all(&mut self, limit: usize) -> std::io::Result<Vec<u8>>;
    /// Whatever stdin has right away (for VERSION's echo); empty when nothing is ready.
    fn read_available(&mut self) -> Vec<u8>;
}

/// Any `Read` (tests): both calls just read.
impl<R: Read> Input for R {
    fn read_all(&mut self, limit: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.take(limit as u64 + 1).read_to_end(&mut buf)?;
        Ok(buf)
    }
    fn read_available(&mut self) -> Vec<u8> {
        self.read_all(64 << 10).unwrap_or_default()
    }
}

/// The process's real stdin.
struct ProcessStdin;

impl Input for ProcessStdin {
    fn read_all(&mut self, limit: usize) -> std::io::Result<Vec<u8>> {
        std::io::stdin().lock().read_all(limit)
    }
    fn read_available(&mut self) -> Vec<u8> {
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, 20) };
        if n == 1 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            std::io::stdin()
                .lock()
                .read_all(64 << 10)
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}

/// Run the plugin as a process: read the real environment and stdin, print to stdout, exit.
pub fn run(about: &str, plugin: &impl Plugin) -> ! {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let status = run_with(
        about,
        plugin,
        |k| std::env::var(k).ok(),
        &mut ProcessStdin,
        &mut out,
        &mut err,
    );
    let _ = out.flush();
    std::process::exit(status)
}

/// [`run`] with its inputs and outputs passed in, for tests. Returns the exit status.
pub fn run_with(
    about: &str,
    plugin: &impl Plugin,
    get: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Input,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let command = get("CNI_COMMAND").filter(|c| !c.is_empty());
    let Some(command) = command else {
        // As skel with an "about" string: tell a human what this is, exit 0.
        let _ = writeln!(
            err,
            "{about}\nCNI protocol versions supported: {}",
            SUPPORTED
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return 0;
    };
    if command == "VERSION" {
        let input = stdin.read_available();
        let echo = parse_object(&input)
            .ok()
            .and_then(|m| peek_version(&m).ok().flatten())
            .and_then(|s| Version::parse(&s))
            .unwrap_or(Version::LATEST);
        let body = json!({
            "cniVersion": echo.as_str(),
            "supportedVersions": SUPPORTED.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{body}");
        return 0;
    }
    let mut version_for_error: Option<String> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        dispatch(&command, plugin, &get, stdin, &mut version_for_error)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::internal(format!("plugin bug (panic): {what}")))
    });
    match outcome {
        Ok(Some(result)) => {
            let text = serde_json::to_string_pretty(&result).unwrap_or_default();
            let _ = writeln!(out, "{text}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let obj = e.to_json(version_for_error.as_deref());
            let text = serde_json::to_string_pretty(&obj).unwrap_or_default();
            let _ = writeln!(out, "{text}");
            1
        }
    }
}

fn read_conf(stdin: &mut dyn Input, version_for_error: &mut Option<String>) -> Result<NetConf> {
    let bytes = stdin
        .read_all(MAX_STDIN)
        .map_err(|e| Error::io("error reading from stdin", e))?;
    if bytes.len() > MAX_STDIN {
        return Err(Error::invalid_config(format!(
            "network configuration is larger than {} MiB",
            MAX_STDIN >> 20
        )));
    }
    if let Ok(m) = parse_object(&bytes) {
        *version_for_error = peek_version(&m).ok().flatten();
    }
    NetConf::parse(&bytes)
}

fn dispatch(
    command: &str,
    plugin: &impl Plugin,
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Input,
    version_for_error: &mut Option<String>,
) -> Result<Option<Value>> {
    let Some(cmd) = Command::parse(command) else {
        // skel reports stdin problems before it rejects the verb.
        read_conf(stdin, version_for_error)?;
        return Err(Error::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND: {command}"),
        ));
    };
    let env = match Env::from_lookup(cmd, get) {
        Ok(env) => env,
        Err(e) => {
            // Still name the request's version in the error object (checklist §9.2): peek at
            // whatever stdin already holds, without waiting on a runtime that sends nothing.
            if let Ok(m) = parse_object(&stdin.read_available()) {
                *version_for_error = peek_version(&m).ok().flatten();
            }
            return Err(e);
        }
    };
    let conf = read_conf(stdin, version_for_error)?;
    let gate = |min: Version| -> Result<()> {
        if version::numeric(conf.cni_version.as_str()) < version::numeric(min.as_str()) {
            Err(Error::new(
                code::INCOMPATIBLE_VERSION,
                format!("config version does not allow {command}"),
            )
            .with_details(format!(
                "config is {:?}; {command} needs {} or later",
                conf.cni_version.as_str(),
                min
            )))
        } else {
            Ok(())
        }
    };
    match cmd {
        Command::Check => gate(Version::V0_4_0)?,
        Command::Gc | Command::Status => gate(Version::V1_1_0)?,
        _ => {}
    }
    if matches!(cmd, Command::Add | Command::Check | Command::Del) {
        refuse_own_netns(&env, get)?;
    }
    let req = Request { env, conf };
    match cmd {
        Command::Add => {
            let result = plugin.add(&req)?;
            Ok(Some(result.to_json(req.conf.cni_version)?))
        }
        Command::Del => plugin.del(&req).map(|_| None),
        Command::Check => plugin.check(&req).map(|_| None),
        Command::Gc => plugin.gc(&req).map(|_| None),
        Command::Status => plugin.status(&req).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// A CNI_NETNS that is the plugin's own namespace would make us rename or address the host's
/// interfaces. Checked before any work (skel HEAD checks after, with code 8; we use 4 and name
/// the variable). `CNI_NETNS_OVERRIDE=1` turns it off, as in skel.
fn refuse_own_netns(env: &Env, get: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    if matches!(
        get("CNI_NETNS_OVERRIDE").as_deref(),
        Some("1") | Some("true")
    ) {
        return Ok(());
    }
    let Some(path) = &env.netns else {
        return Ok(());
    };
    let (Ok(target), Ok(own)) = (
        std::fs::metadata(path),
        std::fs::metadata("/proc/self/ns/net"),
    ) else {
        return Ok(());
    };
    if target.dev() == own.dev() && target.ino() == own.ino() {
        return Err(Error::new(
            code::INVALID_ENV,
            format!(
                "CNI_NETNS {} is the plugin's own network namespace; refusing to configure the host",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;
    use std::collections::HashMap;

    struct Fake;
    impl Plugin for Fake {
        fn add(&self, _req: &Request) -> Result<CniResult> {
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.213.96.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, _req: &Request) -> Result<()> {
            Ok(())
        }
        fn check(&self, _req: &Request) -> Result<()> {
            Err(Error::new(code::TRY_AGAIN, "not yet"))
        }
    }

    fn call(vars: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run_with(
            "fake",
            &Fake,
            |k| m.get(k).cloned(),
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        (
            status,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const ADD_ENV: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/fld-none"),
        ("CNI_IFNAME", "eth0"),
    ];

    fn code_of(out: &str) -> u64 {
        serde_json::from_str::<Value>(out).unwrap()["code"]
            .as_u64()
            .unwrap()
    }

    #[test]
    fn no_command_prints_about_to_stderr_and_exits_zero() {
        let (s, out, err) = call(&[], "");
        assert_eq!((s, out.as_str()), (0, ""));
        assert!(err.contains("fake") && err.contains("1.1.0"));
    }

    #[test]
    fn version_echoes_valid_input_else_latest() {
        let (s, out, _) = call(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(s, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
        let (_, out, _) = call(&[("CNI_COMMAND", "VERSION")], "");
        assert!(out.contains("\"cniVersion\":\"1.1.0\""));
    }

    #[test]
    fn add_prints_result_in_request_version() {
        let (s, out, _) = call(&ADD_ENV, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(s, 0, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
    }

    #[test]
    fn unknown_verb_is_code_4_after_stdin_checks() {
        let mut env = ADD_ENV.to_vec();
        env[0] = ("CNI_COMMAND", "FROB");
        let (s, out, _) = call(&env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((s, code_of(&out)), (1, 4));
        assert!(out.contains("unknown CNI_COMMAND: FROB"));
        let (_, out, _) = call(&env, "{not json");
        assert_eq!(code_of(&out), 6);
    }

    #[test]
    fn check_below_040_and_gc_below_110_are_code_1() {
        let mut env = ADD_ENV.to_vec();
        env[0] = ("CNI_COMMAND", "CHECK");
        let (_, out, _) = call(&env, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(code_of(&out), 1);
        assert!(out.contains("does not allow CHECK"));
        let (_, out, _) = call(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(code_of(&out), 1);
    }

    #[test]
    fn plugin_error_keeps_code_and_carries_version() {
        let mut env = ADD_ENV.to_vec();
        env[0] = ("CNI_COMMAND", "CHECK");
        let (s, out, _) = call(&env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(s, 1);
        assert_eq!(v["code"], 11);
        assert_eq!(v["cniVersion"], "1.0.0");
    }

    #[test]
    fn env_errors_still_carry_the_request_version() {
        let (s, out, _) = call(
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"0.4.0","name":"n"}"#,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!((s, v["code"].as_u64()), (1, Some(4)));
        assert_eq!(v["cniVersion"], "0.4.0");
    }

    #[test]
    fn oversized_stdin_is_refused() {
        let big = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","x":"{}"}}"#,
            "a".repeat(MAX_STDIN)
        );
        let (s, out, _) = call(&ADD_ENV, &big);
        assert_eq!((s, code_of(&out)), (1, 7));
    }

    #[test]
    fn own_netns_is_refused() {
        let mut env = ADD_ENV.to_vec();
        env[2] = ("CNI_NETNS", "/proc/self/ns/net");
        let (s, out, _) = call(&env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((s, code_of(&out)), (1, 4));
        assert!(out.contains("CNI_NETNS"));
    }
}
