//! Timing one plugin invocation the way a runtime makes it: fork+exec, JSON on stdin, wait.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One CNI call: binary, verb, env and stdin.
pub struct Call<'a> {
    /// The plugin binary.
    pub bin: &'a Path,
    /// CNI_COMMAND.
    pub command: &'a str,
    /// Extra environment (CNI_CONTAINERID, …).
    pub env: &'a [(&'a str, String)],
    /// Config on stdin.
    pub stdin: &'a [u8],
}

/// Run the call; its wall time from spawn to exit, or the plugin's output on failure.
pub fn time_call(call: &Call) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = Command::new(call.bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .envs(call.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", call.bin.display()))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(call.stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", call.bin.display()))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} {} failed: {}{}",
            call.bin.display(),
            call.command,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}

/// Median and the 10th/90th percentiles of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub median: Duration,
    /// 10th percentile.
    pub p10: Duration,
    /// 90th percentile.
    pub p90: Duration,
}

/// Summarise samples (must be non-empty).
pub fn stats(mut s: Vec<Duration>) -> Stats {
    s.sort();
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
    }
}
