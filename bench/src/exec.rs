//! Timing one plugin invocation the way a runtime makes it: fork+exec, JSON on stdin, wait —
//! optionally inside a network namespace the bench created (setns between fork and exec, so
//! no `ip netns exec` start-up lands in the numbers).

use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
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
    /// Network namespace (an open `/run/netns/<name>` fd) the plugin runs in; None = ours.
    pub netns: Option<RawFd>,
}

/// Put a command into a network namespace between fork and exec.
pub fn enter_netns(cmd: &mut Command, netns: Option<RawFd>) {
    if let Some(fd) = netns {
        // SAFETY: setns is async-signal-safe; the fd stays open in the parent for the
        // whole call (it belongs to a Netns guard that outlives every child).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Run the call; its wall time from spawn to exit and its stdout, or the plugin's output on
/// failure.
pub fn run_call(call: &Call) -> Result<(Duration, Vec<u8>), String> {
    let mut cmd = Command::new(call.bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .envs(call.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    enter_netns(&mut cmd, call.netns);
    let start = Instant::now();
    let mut child = cmd
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
    Ok((took, out.stdout))
}

/// Run the call; its wall time from spawn to exit.
pub fn time_call(call: &Call) -> Result<Duration, String> {
    run_call(call).map(|(t, _)| t)
}

/// Median and the 10th/90th percentiles of a set of samples, in the figure's unit.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Number of samples.
    pub n: usize,
}

/// Summarise samples (empty gives NaN, reported as "n/a").
pub fn stats(mut s: Vec<f64>) -> Stats {
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return Stats {
            median: f64::NAN,
            p10: f64::NAN,
            p90: f64::NAN,
            n: 0,
        };
    }
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
        n: s.len(),
    }
}

/// Durations summarised in milliseconds.
pub fn stats_ms(s: &[Duration]) -> Stats {
    stats(s.iter().map(|d| d.as_secs_f64() * 1e3).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_ten() {
        let s = stats((1..=10).map(f64::from).collect());
        assert_eq!(s.median, 6.0);
        assert_eq!(s.p10, 2.0);
        assert_eq!(s.p90, 9.0);
        assert!(stats(vec![]).median.is_nan());
    }
}
