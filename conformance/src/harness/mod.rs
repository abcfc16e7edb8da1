//! The conformance harness: runs checklist items against a plugin directory.
//!
//! Every plugin call goes through [`Harness::call`], which also records the call so that
//! the "every call" items (1.10 stdout, 1.11 stderr, 1.12 exit status, 4.9 error shape)
//! are judged over everything the run provoked, not only over hand-picked cases.
//!
//! When run as root, plugins execute inside a throwaway "host" netns (the sandbox) with a
//! private /sys, so bridges, veths and firewall rules they create never reach the real
//! host, and deleting the sandbox removes whatever a misbehaving plugin left.

mod invocation;
mod netns;
mod verbs;

use crate::exec::{Exit, Invocation, Outcome, Sandbox, Stdout};
use crate::report::{Finding, Level, Profile, Report};
use crate::schema;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The plugins the harness knows how to drive, by type name.
pub const KNOWN_PLUGINS: [&str; 3] = ["bridge", "host-local", "portmap"];

/// Spy names installed in the spy directory.
pub const SPY_NAMES: [&str; 3] = ["spy-ipam", "spy-a", "spy-b"];

/// What the harness should run against, and how to judge it.
#[derive(Debug, Clone)]
pub struct Options {
    pub plugins_dir: PathBuf,
    pub profile: Profile,
    /// The executable that acts as a spy when started under a `spy-*` name.
    pub spy_exe: PathBuf,
    /// Only run checks whose id starts with one of these (empty: all).
    pub only: Vec<String>,
    /// Expected FAILs (`ID` or `ID:plugin`).
    pub known: Vec<String>,
}

/// One recorded plugin call, for the every-call items.
#[derive(Debug, Clone)]
struct Observation {
    plugin: String,
    verb: String,
    request_version: Option<String>,
    outcome: Outcome,
}

/// Removes the named netns when dropped, so a panicking check still cleans up.
#[derive(Debug)]
pub struct NetnsGuard {
    pub name: String,
    pub path: PathBuf,
}

impl NetnsGuard {
    /// `ip netns add NAME` and bring up its loopback.
    pub fn create(name: &str) -> Result<NetnsGuard, String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| format!("running ip netns add: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let _ = std::process::Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .output();
        Ok(NetnsGuard {
            name: name.to_string(),
            path: PathBuf::from(format!("/var/run/netns/{name}")),
        })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        crate::portmap_index::remove_for(&self.path);
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// State of one harness run.
pub struct Harness {
    pub opts: Options,
    pub report: Mutex<Report>,
    /// Scratch space: data dirs, spy dirs, logs. Removed at the end.
    pub tmp: tempfile::TempDir,
    pub spy_dir: PathBuf,
    /// The plugins found, by type name.
    pub plugins: BTreeMap<String, PathBuf>,
    /// What VERSION said, per plugin.
    pub supported: Mutex<BTreeMap<String, Vec<String>>>,
    /// Only when root: the netns plugins run in.
    pub sandbox: Option<(NetnsGuard, Sandbox)>,
    /// Unique per run: used in every name the harness makes.
    pub tag: String,
    counter: AtomicU64,
    observations: Mutex<Vec<Observation>>,
}

impl Harness {
    /// Sets up scratch space, spies and (when root) the sandbox netns.
    pub fn new(mut opts: Options) -> Result<Harness, String> {
        // Plugins get CNI_PATH from this: it must not depend on their working directory.
        opts.plugins_dir = std::fs::canonicalize(&opts.plugins_dir)
            .map_err(|e| format!("plugin directory {}: {e}", opts.plugins_dir.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix("fcf-harness-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir: {e}"))?;
        let spy_dir = tmp.path().join("spies");
        crate::spy::install(&opts.spy_exe, &spy_dir, &SPY_NAMES)
            .map_err(|e| format!("installing spies in {}: {e}", spy_dir.display()))?;
        let mut plugins = BTreeMap::new();
        for name in KNOWN_PLUGINS {
            let p = opts.plugins_dir.join(name);
            if p.is_file() {
                plugins.insert(name.to_string(), p);
            }
        }
        if plugins.is_empty() {
            return Err(format!(
                "none of {} in {}: nothing to check",
                KNOWN_PLUGINS.join(", "),
                opts.plugins_dir.display()
            ));
        }
        let tag = format!(
            "{:x}",
            (std::process::id() as u64 * 7919 + nanos()) % 0xfffff
        );
        let sandbox = if nix::unistd::geteuid().is_root() {
            let guard = NetnsGuard::create(&format!("fcf{tag}h"))?;
            let sb = Sandbox::open(&guard.path)
                .map_err(|e| format!("opening {}: {e}", guard.path.display()))?;
            Some((guard, sb))
        } else {
            None
        };
        let mut report = Report::new(&opts.plugins_dir.display().to_string(), opts.profile);
        report.known = opts.known.clone();
        Ok(Harness {
            opts,
            report: Mutex::new(report),
            tmp,
            spy_dir,
            plugins,
            supported: Mutex::new(BTreeMap::new()),
            sandbox,
            tag,
            counter: AtomicU64::new(0),
            observations: Mutex::new(Vec::new()),
        })
    }

    /// A number unique within this run.
    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    /// A container ID unique within this run.
    pub fn container_id(&self) -> String {
        format!("fcf-{}-{}", self.tag, self.next())
    }

    /// True when the run may create namespaces and links (inside the sandbox).
    pub fn is_root(&self) -> bool {
        self.sandbox.is_some()
    }

    /// Whether a check id was selected with `--only`.
    pub fn wants(&self, id: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|o| id.starts_with(o.as_str()))
    }

    /// Records one check.
    pub fn add(&self, id: &str, level: Level, plugin: &str, name: &str, finding: Finding) {
        if !self.wants(id) {
            return;
        }
        if let Ok(mut r) = self.report.lock() {
            r.add(id, level, plugin, name, finding);
        }
    }

    /// `CNI_PATH` for calls: the plugin directory first, then the spies.
    pub fn cni_path(&self) -> String {
        format!(
            "{}:{}",
            self.opts.plugins_dir.display(),
            self.spy_dir.display()
        )
    }

    /// F-ENV: the baseline environment for a verb.
    pub fn env(&self, plugin: &str, verb: &str, container_id: &str) -> Invocation {
        let bin = self.plugins.get(plugin).cloned().unwrap_or_default();
        Invocation::new(bin)
            .var("CNI_COMMAND", verb)
            .var("CNI_CONTAINERID", container_id)
            .var(
                "CNI_NETNS",
                &format!("/var/run/netns/fcf{}-absent", self.tag),
            )
            .var("CNI_IFNAME", "eth0")
            .var("CNI_PATH", &self.cni_path())
            .var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    }

    /// Runs a call (in the sandbox when there is one) and records it.
    pub fn call(&self, plugin: &str, inv: &Invocation) -> Outcome {
        let sandbox = self.sandbox.as_ref().map(|(_, s)| s);
        let mut outcome = inv.run(sandbox);
        // A binary being rewritten (ETXTBSY, or briefly absent while a build replaces it)
        // cannot be started; libcni retries such execs, and so do we (6.10).
        for _ in 0..10 {
            if outcome.exit != Exit::SpawnFailed {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            outcome = inv.run(sandbox);
        }
        let request_version = match &inv.stdin {
            crate::exec::Stdin::Bytes(b) => serde_json::from_slice::<Value>(b).ok().and_then(|v| {
                v.get("cniVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
            _ => None,
        };
        if let Ok(mut obs) = self.observations.lock() {
            obs.push(Observation {
                plugin: plugin.to_string(),
                verb: inv.get("CNI_COMMAND").unwrap_or("").to_string(),
                request_version,
                outcome: outcome.clone(),
            });
        }
        outcome
    }

    /// A fresh directory under the run's scratch space.
    pub fn scratch(&self, what: &str) -> PathBuf {
        let p = self.tmp.path().join(format!("{what}-{}", self.next()));
        let _ = std::fs::create_dir_all(&p);
        p
    }

    /// Versions a plugin advertised (empty before VERSION ran or when it failed).
    pub fn versions(&self, plugin: &str) -> Vec<String> {
        self.supported
            .lock()
            .map(|s| s.get(plugin).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Advertised versions ≥ 0.3.0 (F-VER positive set).
    pub fn rich_versions(&self, plugin: &str) -> Vec<String> {
        self.versions(plugin)
            .into_iter()
            .filter(|v| schema::version_ge(v, "0.3.0"))
            .collect()
    }

    /// The newest advertised version that is ≥ `min`, if any.
    pub fn newest_at_least(&self, plugin: &str, min: &str) -> Option<String> {
        let mut vs: Vec<String> = self
            .versions(plugin)
            .into_iter()
            .filter(|v| schema::version_ge(v, min))
            .collect();
        vs.sort_by_key(|v| schema::parse_version(v));
        vs.pop()
    }

    /// A host-local IPAM section with its own data dir and a /24 out of our space.
    pub fn ipam_host_local(&self, subnet_index: u64) -> (Value, PathBuf) {
        let data_dir = self.scratch("hl-data");
        let third = 80 + (subnet_index % 16);
        (
            json!({"type": "host-local", "dataDir": data_dir,
                   "ranges": [[{"subnet": format!("10.213.{third}.0/24")}]]}),
            data_dir,
        )
    }

    /// A standalone host-local config.
    pub fn host_local_conf(&self, version: Option<&str>) -> (Value, PathBuf) {
        let n = self.next();
        let (ipam, dir) = self.ipam_host_local(n);
        let mut conf = json!({"name": format!("fcfnet{n}"), "type": "host-local", "ipam": ipam});
        if let (Some(v), Some(o)) = (version, conf.as_object_mut()) {
            o.insert("cniVersion".into(), json!(v));
        }
        (conf, dir)
    }

    /// Runs everything and returns the report.
    pub fn run(self) -> Report {
        for name in KNOWN_PLUGINS {
            if !self.plugins.contains_key(name) {
                self.add(
                    "0",
                    Level::O,
                    name,
                    "plugin present",
                    Finding::Skip(format!("no {name} in {}", self.opts.plugins_dir.display())),
                );
            }
        }
        verbs::version_checks(&self);
        invocation::run(&self);
        verbs::run(&self);
        netns::run(&self);
        self.every_call_checks();
        let report = self
            .report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        report
    }

    /// Items 1.10, 1.11, 1.12 and 4.9 judged over every recorded call.
    fn every_call_checks(&self) {
        let obs = self
            .observations
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        for plugin in self.plugins.keys() {
            let calls: Vec<&Observation> = obs.iter().filter(|o| &o.plugin == plugin).collect();
            if calls.is_empty() {
                continue;
            }
            let mut junk = Vec::new();
            let mut noisy_success = Vec::new();
            let mut exit_fail = Vec::new();
            let mut exit_warn = Vec::new();
            let mut shape_bad = Vec::new();
            let mut shape_warn = 0usize;
            let mut stderr_only = Vec::new();
            for o in &calls {
                let parsed = o.outcome.stdout_parsed();
                let what = format!("{} ({})", o.verb, o.outcome.describe());
                if let Stdout::Junk(why) = &parsed {
                    junk.push(format!("{what}: {why}"));
                }
                let quiet_verb = matches!(o.verb.as_str(), "DEL" | "CHECK" | "GC" | "STATUS");
                if o.outcome.success() && quiet_verb && parsed != Stdout::Empty {
                    noisy_success.push(what.clone());
                }
                match o.outcome.exit {
                    Exit::Signal(_) | Exit::Timeout | Exit::SpawnFailed => {
                        exit_fail.push(what.clone())
                    }
                    Exit::Code(0) => {
                        if let Stdout::Json(v) = &parsed {
                            if v.get("code").is_some() && v.get("msg").is_some() {
                                exit_fail.push(format!("{what}: exit 0 with an error object"));
                            }
                        }
                    }
                    Exit::Code(_) => match &parsed {
                        Stdout::Json(v) => {
                            let f = schema::validate_error(v, o.request_version.as_deref());
                            for p in f.violations {
                                shape_bad.push(format!("{}: {p} in {}", o.verb, v));
                            }
                            if o.request_version.is_some() {
                                shape_warn += f.warnings.len();
                            }
                        }
                        _ => {
                            exit_warn.push(what.clone());
                            let err = String::from_utf8_lossy(&o.outcome.stderr);
                            if err.contains("\"code\"") && err.contains("\"msg\"") {
                                stderr_only.push(what.clone());
                            }
                        }
                    },
                }
            }
            let n = calls.len();
            self.add(
                "1.10",
                Level::M,
                plugin,
                "stdout holds one JSON value at most",
                Finding::from_problems(&junk, format!("{n} calls")),
            );
            self.add(
                "1.10",
                Level::S,
                plugin,
                "DEL/CHECK/GC/STATUS print nothing on success",
                Finding::from_problems(&noisy_success, format!("{n} calls")),
            );
            self.add(
                "1.11",
                Level::S,
                plugin,
                "errors are not printed to stderr only",
                Finding::from_problems(&stderr_only, format!("{n} calls")),
            );
            self.add(
                "1.12",
                Level::M,
                plugin,
                "exit status: no signal, no error object with exit 0",
                Finding::from_problems(&exit_fail, format!("{n} calls")),
            );
            self.add(
                "1.12",
                Level::S,
                plugin,
                "a non-zero exit comes with an error object",
                match exit_warn.is_empty() {
                    true => Finding::Pass(format!("{n} calls")),
                    false => Finding::Warn(
                        exit_warn
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                },
            );
            let errors = calls.iter().filter(|o| !o.outcome.success()).count();
            self.add(
                "4.9",
                Level::M,
                plugin,
                "error object shape (code, msg, details)",
                Finding::from_problems(&shape_bad, format!("{errors} error objects")),
            );
            if shape_warn > 0 {
                self.add(
                    "4.9",
                    Level::S,
                    plugin,
                    "error object carries cniVersion",
                    Finding::Warn(format!(
                        "{shape_warn} of {errors} error objects lack cniVersion"
                    )),
                );
            }
        }
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0)
}

/// Convenience: the result of a call as JSON or a reason why there is none.
pub fn result_of(o: &Outcome) -> Result<Value, String> {
    if !o.success() {
        return Err(o.describe());
    }
    o.json()
        .ok_or_else(|| format!("no JSON result: {}", o.describe()))
}

/// True when `path` exists (any kind of file).
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
