//! Fixtures for the runtime tests: a config dir, a spy plugin dir, a cache dir, and a way
//! to run `ferry` against them.

#![allow(dead_code)]

use ferry_conformance::spy::{read_log, SpyRecord};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One isolated runtime setup.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

impl Setup {
    /// Config dir `net/`, spies `spy-a`, `spy-b`, `spy-c` in `bin/`, cache in `cache/`.
    pub fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("fcf-rt-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        ferry_conformance::spy::install(
            Path::new(FERRY),
            &dir.path().join("bin"),
            &["spy-a", "spy-b", "spy-c"],
        )
        .unwrap();
        Setup { dir }
    }

    pub fn net(&self) -> PathBuf {
        self.dir.path().join("net")
    }
    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Writes a file under `net/`.
    pub fn conf(&self, name: &str, v: &Value) {
        let p = self.net().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v.to_string()).unwrap();
    }

    /// Runs `ferry ARGS` with NETCONFPATH, CNI_PATH and the cache dir set.
    pub fn ferry(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(FERRY);
        c.args(args)
            .env("NETCONFPATH", self.net())
            .env("CNI_PATH", self.bin())
            .env("FERRY_CACHE_DIR", self.cache())
            .env_remove("CNI_ARGS")
            .env_remove("CAP_ARGS")
            .env_remove("CNI_IFNAME");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Every spy call so far.
    pub fn log(&self) -> Vec<SpyRecord> {
        read_log(&self.bin().join("spy.jsonl"))
    }

    /// `(command, spy name)` of every call so far.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.log()
            .iter()
            .map(|r| (r.command.clone(), r.name()))
            .collect()
    }

    pub fn clear_log(&self) {
        let _ = std::fs::remove_file(self.bin().join("spy.jsonl"));
    }

    /// Files in the cache's results dir.
    pub fn cached(&self) -> Vec<String> {
        std::fs::read_dir(self.cache().join("results"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `(verb, name)` pairs, for terse assertions.
pub fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// stderr as text, for assertion messages.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The directory with ferry's own plugins: `FERRY_PLUGINS`, else the target dir
/// that holds `ferry` (built by `cargo build --workspace` / `cargo test --workspace`).
pub fn ferry_plugins() -> PathBuf {
    let dir = std::env::var_os("FERRY_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(FERRY).parent().unwrap().to_path_buf());
    for p in ["bridge", "host-local", "portmap"] {
        assert!(
            dir.join(p).is_file(),
            "{} missing: build the workspace first (cargo build --workspace) or set FERRY_PLUGINS",
            dir.join(p).display()
        );
    }
    dir
}
