//! F-SPY: a scriptable fake plugin that records how it was called.
//!
//! The harness installs the `ferry` binary under names such as `spy-ipam` (a symlink);
//! when `ferry` starts under a name beginning with `spy-` it behaves as this spy. It
//! appends one JSON line per call to a log (argv0, every `CNI_*` variable, stdin, its
//! netns and timestamps) and answers as the `"spy"` key of its stdin config says:
//!
//! ```json
//! {"spy": {"log": "/tmp/x/spy.jsonl",
//!          "ADD":   {"exit": 0, "stdout": {"cniVersion": "1.0.0", "ips": []}},
//!          "CHECK": {"exit": 1, "stdout": {"code": 11, "msg": "x"}, "sleepMs": 10,
//!                    "touch": "/tmp/x/check-started"},
//!          "byName": {"spy-b": {"ADD": {"exit": 1, "stdout": "not json"}}}}}
//! ```
//!
//! A delegate receives its main plugin's whole config, so an IPAM spy is scripted through
//! the main plugin's config.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable that names the log when the config does not.
pub const LOG_ENV: &str = "FERRY_SPY_LOG";
/// A script (the `"spy"` object) in the environment, for spies that stand in for a real
/// plugin name: a wrapper script sets it and execs `ferry` (which then acts as a spy).
pub const SCRIPT_ENV: &str = "FERRY_SPY_SCRIPT";
/// The file name of the default log, beside the spy's own path.
pub const DEFAULT_LOG: &str = "spy.jsonl";

/// One logged call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpyRecord {
    /// The path the spy was started as.
    pub argv0: String,
    /// `CNI_COMMAND` (empty when unset).
    pub command: String,
    /// Every `CNI_*` variable, plus the non-CNI variables' names under `other`.
    pub env: BTreeMap<String, String>,
    /// Names of the non-`CNI_` variables present.
    pub other_env: Vec<String>,
    /// Raw stdin as text (lossy UTF-8).
    pub stdin: String,
    /// `readlink /proc/self/ns/net`.
    pub netns: String,
    /// Unix time in nanoseconds when the call started and ended.
    pub start_ns: u128,
    pub end_ns: u128,
}

impl SpyRecord {
    /// The basename the spy was started as, e.g. `spy-ipam`.
    pub fn name(&self) -> String {
        Path::new(&self.argv0)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// stdin parsed as JSON (Null when it does not parse).
    pub fn stdin_json(&self) -> Value {
        serde_json::from_str(&self.stdin).unwrap_or(Value::Null)
    }
}

/// Reads every record of a spy log (missing log = no calls).
pub fn read_log(path: &Path) -> Vec<SpyRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The spy's answer to one verb.
#[derive(Debug, Clone, Default)]
struct Answer {
    exit: i32,
    stdout: Option<String>,
    stderr: Option<String>,
    sleep: Duration,
}

fn answer_from(v: &Value) -> Answer {
    let stdout = match v.get("stdout") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Answer {
        exit: v.get("exit").and_then(Value::as_i64).unwrap_or(0) as i32,
        stdout,
        stderr: v.get("stderr").and_then(Value::as_str).map(str::to_owned),
        sleep: Duration::from_millis(v.get("sleepMs").and_then(Value::as_u64).unwrap_or(0)),
    }
}

fn default_answer(command: &str, conf: &Map<String, Value>) -> Answer {
    let version = conf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.1.0")
        .to_string();
    match command {
        "VERSION" => Answer {
            stdout: Some(
                json!({"cniVersion": "1.1.0", "supportedVersions": crate::schema::ALL_VERSIONS})
                    .to_string(),
            ),
            ..Answer::default()
        },
        "ADD" => {
            // A chained spy passes its prevResult on; a first or IPAM spy answers an empty result.
            let mut result = conf.get("prevResult").cloned().unwrap_or_else(|| json!({}));
            if let Some(o) = result.as_object_mut() {
                o.insert("cniVersion".into(), Value::String(version));
            }
            Answer {
                stdout: Some(result.to_string()),
                ..Answer::default()
            }
        }
        _ => Answer::default(),
    }
}

/// Runs the spy: never returns.
pub fn main(argv0: &str) -> ! {
    let start_ns = now_ns();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let name = Path::new(argv0)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let conf: Map<String, Value> = serde_json::from_slice(&stdin).unwrap_or_default();
    let spy = conf
        .get("spy")
        .cloned()
        .or_else(|| {
            std::env::var(SCRIPT_ENV)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
        })
        .unwrap_or(Value::Null);
    let script = spy
        .get("byName")
        .and_then(|b| b.get(&name))
        .and_then(|s| s.get(&command))
        .or_else(|| spy.get(&command));
    let answer = match script {
        Some(v) => answer_from(v),
        None => default_answer(&command, &conf),
    };
    // `"touch": PATH` (per verb) creates PATH as soon as the call starts, so a test can
    // wait until a slow call is surely running.
    if let Some(path) = script.and_then(|v| v.get("touch")).and_then(Value::as_str) {
        let _ = std::fs::write(path, b"");
    }
    if !answer.sleep.is_zero() {
        std::thread::sleep(answer.sleep);
    }
    let mut env = BTreeMap::new();
    let mut other_env = Vec::new();
    for (k, v) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CNI_") {
            env.insert(k, v.to_string_lossy().into_owned());
        } else {
            other_env.push(k);
        }
    }
    other_env.sort();
    let record = SpyRecord {
        argv0: argv0.to_string(),
        command: command.clone(),
        env,
        other_env,
        stdin: String::from_utf8_lossy(&stdin).into_owned(),
        netns: std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        start_ns,
        end_ns: now_ns(),
    };
    let log: PathBuf = spy
        .get("log")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os(LOG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| {
            Path::new(argv0)
                .parent()
                .unwrap_or(Path::new("."))
                .join(DEFAULT_LOG)
        });
    if let Ok(line) = serde_json::to_string(&record) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            // One write per record: O_APPEND keeps concurrent spies' lines whole.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
    eprintln!("ferry-spy-marker:{name}:{command}");
    if let Some(err) = &answer.stderr {
        eprint!("{err}");
    }
    if let Some(out) = &answer.stdout {
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
    std::process::exit(answer.exit)
}

/// Installs spy names as symlinks to `exe` in `dir`.
pub fn install(exe: &Path, dir: &Path, names: &[&str]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for n in names {
        let link = dir.join(n);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(exe, &link)?;
    }
    Ok(())
}
