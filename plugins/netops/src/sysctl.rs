//! sysctl reads and writes through /proc/sys.
//!
//! Net sysctls under /proc/sys/net resolve against the network namespace of the *thread*
//! that opens the file, so writing a container's sysctl means calling these from inside
//! [`crate::Netns::run`].

use std::io::Write;

use crate::error::{code, Error, Result};

fn path_of(key: &str) -> String {
    format!(
        "/proc/sys/{}",
        key.trim_start_matches('/').replace('.', "/")
    )
}

/// Writes `value` to the sysctl `key` (e.g. `net/ipv4/ip_forward` or `net.ipv4.ip_forward`).
/// Interface names containing dots must use the slash form.
pub fn write(key: &str, value: &str) -> Result<()> {
    let path = if key.contains('/') {
        format!("/proc/sys/{}", key.trim_start_matches('/'))
    } else {
        path_of(key)
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::new(code::IO, format!("opening sysctl {path}: {e}")))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::new(code::IO, format!("writing {value:?} to sysctl {path}: {e}")))
}

/// Reads the sysctl `key` (slash form), trimmed.
pub fn read(key: &str) -> Result<String> {
    let path = format!("/proc/sys/{}", key.trim_start_matches('/'));
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::new(code::IO, format!("reading sysctl {path}: {e}")))
}

/// Writes `value` only when the current value differs, so the common case (already set)
/// costs one read and no write (writes to some keys have side effects, e.g. `forwarding`).
pub fn ensure(key: &str, value: &str) -> Result<()> {
    match read(key) {
        Ok(v) if v == value => Ok(()),
        _ => write(key, value),
    }
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn dotted_keys_map_to_proc_paths() {
        assert_eq!(
            path_of("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
    }
}
