//! The runtime: libcni's behaviour as a library — running a network list's plugins for
//! ADD, DEL, CHECK, GC and STATUS with the result cache, the way containerd's go-cni and
//! podman's CNI backend do (checklist §6).

pub mod cache;
pub mod cli;
pub mod config;

use crate::exec::{Exit, Invocation, Stdout};
use crate::schema::version_ge;
use cache::{CacheEntry, Cached};
use config::{sorted, NetworkList};
use serde_json::{Map, Value};
use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An error as libcni reports it: a CNI code, a message, and the plugin's raw output.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeError {
    pub code: u64,
    pub msg: String,
    pub details: String,
}

impl RuntimeError {
    /// An error with a code and message.
    pub fn new(code: u64, msg: impl Into<String>) -> RuntimeError {
        RuntimeError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Prefixes the message (keeps the code, like Go's `%w`).
    pub fn context(mut self, what: &str) -> RuntimeError {
        self.msg = format!("{what}: {}", self.msg);
        self
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

/// The per-attachment arguments of one call (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
}

/// How to run plugins: where to find them, where the cache is.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub cni_path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// Per-call timeout; the spec has none, so it is generous.
    pub timeout: Duration,
}

fn valid_id(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// 1.5: libcni's interface-name rules.
pub fn validate_ifname(name: &str) -> Result<(), RuntimeError> {
    if name.is_empty() {
        return Err(RuntimeError::new(4, "interface name is empty"));
    }
    if name.len() > 15 {
        return Err(RuntimeError::new(4, "interface name is too long"));
    }
    if name == "." || name == ".." {
        return Err(RuntimeError::new(4, "interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(RuntimeError::new(
            4,
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

/// Finds a plugin binary in the path (first directory wins; must be a regular file).
pub fn find_in_path(plugin: &str, paths: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(RuntimeError::new(
            7,
            format!("invalid plugin name {plugin:?}"),
        ));
    }
    for dir in paths {
        let p = dir.join(plugin);
        if std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
            return Ok(p);
        }
    }
    Err(RuntimeError::new(
        7,
        format!(
            "failed to find plugin {plugin:?} in path {:?}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        ),
    ))
}

/// An exclusive or shared `flock(2)` held until drop (6.12).
struct Lock {
    _file: std::fs::File,
}

impl Lock {
    fn take(path: &Path, exclusive: bool) -> Result<Lock, RuntimeError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // O_NOFOLLOW: a symlink planted at a lock's name must not make us create its target.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| RuntimeError::new(5, format!("opening lock {}: {e}", path.display())))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
            return Err(RuntimeError::new(
                5,
                format!(
                    "locking {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(Lock { _file: file })
    }
}

impl Runtime {
    /// Global lock: shared for ADD/DEL/CHECK, exclusive for GC; plus one per attachment.
    fn locks(&self, list: &str, rt: Option<&RuntimeConf>) -> Result<Vec<Lock>, RuntimeError> {
        let dir = self.cache_dir.join("ferry-locks");
        let mut locks = vec![Lock::take(&dir.join("global"), rt.is_none())?];
        if let Some(rt) = rt {
            locks.push(Lock::take(
                &dir.join(format!("{list}-{}-{}", rt.container_id, rt.ifname)),
                true,
            )?);
        }
        Ok(locks)
    }

    /// 6.9: the runtime's own env plus all six CNI vars.
    fn invocation(&self, bin: &Path, verb: &str, rt: &RuntimeConf, stdin: Vec<u8>) -> Invocation {
        let mut inv = Invocation::new(bin);
        for (k, v) in std::env::vars() {
            inv = inv.var(&k, &v);
        }
        let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path: Vec<String> = self
            .cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        inv = inv
            .var("CNI_COMMAND", verb)
            .var("CNI_CONTAINERID", &rt.container_id)
            .var("CNI_NETNS", &rt.netns)
            .var("CNI_ARGS", &args.join(";"))
            .var("CNI_IFNAME", &rt.ifname)
            .var("CNI_PATH", &path.join(":"));
        inv.stdin = crate::exec::Stdin::Bytes(stdin);
        inv.timeout = self.timeout;
        inv
    }

    /// Runs one plugin and applies 6.10/6.11: retry ETXTBSY, read the error the libcni way.
    fn exec(
        &self,
        plugin: &Map<String, Value>,
        verb: &str,
        rt: &RuntimeConf,
        stdin: Vec<u8>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let ty = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let bin = find_in_path(ty, &self.cni_path)?;
        let inv = self.invocation(&bin, verb, rt, stdin);
        let mut attempt = 0;
        let outcome = loop {
            let o = inv.run(None);
            let busy = o.exit == Exit::SpawnFailed
                && String::from_utf8_lossy(&o.stderr).contains("Text file busy");
            if busy && attempt < 5 {
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            break o;
        };
        // The plugin's stderr goes to ours, as libcni does.
        if !outcome.stderr.is_empty() {
            eprint!("{}", String::from_utf8_lossy(&outcome.stderr));
        }
        if outcome.success() {
            return Ok(outcome.stdout);
        }
        Err(plugin_error(&outcome))
    }

    /// Builds one plugin's request config (5.4).
    fn plugin_config(
        &self,
        list: &NetworkList,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        rt: Option<&RuntimeConf>,
        extra: &[(&str, Value)],
    ) -> Vec<u8> {
        let mut conf = plugin.clone();
        conf.insert("name".into(), Value::String(list.name.clone()));
        conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        if let Some(rt) = rt {
            let mut rc = Map::new();
            if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
                for (cap, on) in caps {
                    if on.as_bool() == Some(true) {
                        if let Some(v) = rt.capability_args.get(cap) {
                            rc.insert(cap.clone(), v.clone());
                        }
                    }
                }
            }
            if !rc.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(rc));
            }
        }
        for (k, v) in extra {
            conf.insert((*k).to_string(), v.clone());
        }
        serde_json::to_vec(&sorted(&Value::Object(conf))).unwrap_or_default()
    }

    /// 6.3: ADD over the chain; on success the cache is written and the last result returned.
    pub fn add(&self, list: &NetworkList, rt: &RuntimeConf) -> Result<Value, RuntimeError> {
        if !valid_id(&rt.container_id) {
            return Err(RuntimeError::new(4, "invalid characters in containerID")
                .with_details(&rt.container_id));
        }
        if !valid_id(&list.name) {
            return Err(RuntimeError::new(
                7,
                "invalid characters found in network name",
            ));
        }
        validate_ifname(&rt.ifname)?;
        // 6.4: fail before any plugin runs if the cache file name cannot exist.
        let file_name_len = list.name.len() + rt.container_id.len() + rt.ifname.len() + 2;
        if file_name_len > 255 {
            return Err(RuntimeError::new(
                7,
                format!(
                    "the cache file name for network {:?}, container ID of {} bytes, ifname {:?} would be {file_name_len} bytes, more than NAME_MAX (255): use a shorter container ID",
                    list.name,
                    rt.container_id.len(),
                    rt.ifname
                ),
            ));
        }
        let _locks = self.locks(&list.name, Some(rt))?;
        let mut result: Option<Value> = None;
        for plugin in &list.plugins {
            let stdin = self.plugin_config(list, plugin, result.as_ref(), Some(rt), &[]);
            let out = self
                .exec(plugin, "ADD", rt, stdin)
                .map_err(|e| e.context(&format!("plugin {} failed (add)", describe(plugin))))?;
            let r = parse_result(&out, list.version_or_default())
                .map_err(|e| e.context(&format!("plugin {} failed (add)", describe(plugin))))?;
            result = Some(r);
        }
        let result = result.unwrap_or(Value::Null);
        let entry = CacheEntry {
            kind: cache::KIND.into(),
            container_id: rt.container_id.clone(),
            config: list.bytes.clone(),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.clone(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.clone()),
        };
        cache::write(&self.cache_dir, &entry).map_err(|e| {
            e.context(&format!(
                "failed to set network {:?} cached result",
                list.name
            ))
        })?;
        Ok(result)
    }

    /// The cached result converted to the list's version (None: no usable cache).
    fn cached_prev(&self, list: &NetworkList, rt: &RuntimeConf) -> Option<Value> {
        let raw = match cache::read(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname) {
            Cached::Entry(e) => e.result.clone(),
            Cached::LegacyResult(v) => Some(v),
            Cached::None => None,
            Cached::Corrupt(why) => {
                eprintln!(
                    "ferry: removing unreadable cache entry of {}/{}: {why}",
                    list.name, rt.container_id
                );
                cache::remove(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname);
                None
            }
        }?;
        match convert(&raw, list.version_or_default()) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!(
                    "ferry: cached result of {}/{} cannot be converted, ignoring it: {e}",
                    list.name, rt.container_id
                );
                cache::remove(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname);
                None
            }
        }
    }

    /// 6.5: DEL in reverse order with the cached result; the cache goes once all succeed.
    pub fn del(&self, list: &NetworkList, rt: &RuntimeConf) -> Result<(), RuntimeError> {
        let _locks = self.locks(&list.name, Some(rt))?;
        let rt = self.with_cached_params(list, rt);
        self.del_unlocked(list, &rt)
    }

    /// DEL and CHECK must see the attachment parameters the ADD used: CNI args and
    /// capability args the caller did not give again come from the cache (as containerd
    /// does with `GetNetworkListCachedConfig`), and so does a missing netns.
    pub fn with_cached_params(&self, list: &NetworkList, rt: &RuntimeConf) -> RuntimeConf {
        let mut out = rt.clone();
        if let Cached::Entry(e) =
            cache::read(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname)
        {
            if out.args.is_empty() {
                out.args = e.cni_args.clone();
            }
            if out.capability_args.is_empty() {
                out.capability_args = e.capability_args.clone();
            }
            if out.netns.is_empty() {
                out.netns = e.netns.clone();
            }
        }
        out
    }

    fn del_unlocked(&self, list: &NetworkList, rt: &RuntimeConf) -> Result<(), RuntimeError> {
        let prev = if version_ge(list.version_or_default(), "0.4.0") {
            self.cached_prev(list, rt)
        } else {
            None
        };
        for plugin in list.plugins.iter().rev() {
            let stdin = self.plugin_config(list, plugin, prev.as_ref(), Some(rt), &[]);
            self.exec(plugin, "DEL", rt, stdin)
                .map_err(|e| e.context(&format!("plugin {} failed (delete)", describe(plugin))))?;
        }
        cache::remove(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname);
        Ok(())
    }

    /// 6.6: CHECK in forward order with the cached result.
    pub fn check(&self, list: &NetworkList, rt: &RuntimeConf) -> Result<(), RuntimeError> {
        if !version_ge(list.version_or_default(), "0.4.0") {
            return Err(RuntimeError::new(
                1,
                format!(
                    "configuration version {:?} does not support the CHECK command",
                    list.cni_version
                ),
            ));
        }
        if list.disable_check {
            return Ok(());
        }
        let _locks = self.locks(&list.name, Some(rt))?;
        let rt = &self.with_cached_params(list, rt);
        let prev = self.cached_prev(list, rt).ok_or_else(|| {
            RuntimeError::new(
                3,
                format!(
                    "no cached result for network {:?}, container {:?}, ifname {:?}: it was never added (or was deleted)",
                    list.name, rt.container_id, rt.ifname
                ),
            )
        })?;
        for plugin in &list.plugins {
            let stdin = self.plugin_config(list, plugin, Some(&prev), Some(rt), &[]);
            self.exec(plugin, "CHECK", rt, stdin)
                .map_err(|e| e.context(&format!("plugin {} failed (check)", describe(plugin))))?;
        }
        Ok(())
    }

    /// 6.7: DEL every stale cached attachment, then GC each plugin (≥ 1.1.0). `valid`
    /// None means "no list given" (cnitool): every cached attachment is stale, and the
    /// plugins get no attachment key.
    pub fn gc(
        &self,
        list: &NetworkList,
        valid: Option<&[(String, String)]>,
    ) -> Result<(), RuntimeError> {
        if list.disable_gc {
            return Ok(());
        }
        let _locks = self.locks(&list.name, None)?;
        cache::sweep_all_stale_temps(&self.cache_dir);
        let mut errors: Vec<RuntimeError> = Vec::new();
        for (_, entry) in cache::all(&self.cache_dir) {
            if entry.network_name != list.name {
                continue;
            }
            let keep = valid
                .map(|v| {
                    v.iter()
                        .any(|(id, ifn)| *id == entry.container_id && *ifn == entry.if_name)
                })
                .unwrap_or(false);
            if keep {
                continue;
            }
            let rt = RuntimeConf {
                container_id: entry.container_id.clone(),
                netns: entry.netns.clone(),
                ifname: entry.if_name.clone(),
                args: entry.cni_args.clone(),
                capability_args: entry.capability_args.clone(),
            };
            if let Err(e) = self.del_unlocked(list, &rt) {
                errors.push(e.context(&format!(
                    "deleting stale attachment {}/{}",
                    entry.container_id, entry.if_name
                )));
            }
        }
        if version_ge(list.version_or_default(), "1.1.0") {
            let mut extra = Vec::new();
            if let Some(v) = valid {
                let atts: Vec<Value> = v
                    .iter()
                    .map(|(id, ifn)| serde_json::json!({"containerID": id, "ifname": ifn}))
                    .collect();
                extra.push(("cni.dev/valid-attachments", Value::Array(atts.clone())));
                extra.push(("cni.dev/attachments", Value::Array(atts)));
            }
            let rt = RuntimeConf::default();
            for plugin in &list.plugins {
                let stdin = self.plugin_config(list, plugin, None, None, &extra);
                if let Err(e) = self.exec(plugin, "GC", &rt, stdin) {
                    errors.push(e.context(&format!("plugin {} failed (gc)", describe(plugin))));
                }
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                let code = errors[0].code;
                let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                Err(RuntimeError::new(code, msgs.join("; ")))
            }
        }
    }

    /// 6.8: STATUS of each plugin in order; the first error is returned as it is.
    pub fn status(&self, list: &NetworkList) -> Result<(), RuntimeError> {
        if !version_ge(list.version_or_default(), "1.1.0") {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for plugin in &list.plugins {
            let stdin = self.plugin_config(list, plugin, None, None, &[]);
            self.exec(plugin, "STATUS", &rt, stdin)?;
        }
        Ok(())
    }
}

/// 3.10: decodes a VERSION answer as libcni's `PluginDecoder` does: `cniVersion` is
/// required, and `supportedVersions` too, except that a bare "0.2.0" means 0.1.0 and 0.2.0.
pub fn decode_version_answer(bytes: &[u8]) -> Result<Vec<String>, RuntimeError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| RuntimeError::new(6, format!("decoding version info: {e}")))?;
    let version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RuntimeError::new(6, "decoding version info: missing field cniVersion"))?;
    match v.get("supportedVersions").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Ok(list
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()),
        _ if version == "0.2.0" => Ok(vec!["0.1.0".into(), "0.2.0".into()]),
        _ => Err(RuntimeError::new(
            6,
            "decoding version info: missing field supportedVersions",
        )),
    }
}

impl Runtime {
    /// Asks a plugin which versions it supports (VERSION, with the dummy env libcni
    /// sends). 2.24: a plugin that answers `unknown CNI_COMMAND: VERSION` predates VERSION
    /// and supports only 0.1.0.
    pub fn plugin_versions(&self, plugin_type: &str) -> Result<Vec<String>, RuntimeError> {
        let bin = find_in_path(plugin_type, &self.cni_path)?;
        let mut inv = Invocation::new(&bin);
        for (k, v) in std::env::vars() {
            inv = inv.var(&k, &v);
        }
        inv = inv
            .var("CNI_COMMAND", "VERSION")
            .var("CNI_NETNS", "dummy")
            .var("CNI_IFNAME", "dummy")
            .var("CNI_PATH", "dummy")
            .stdin(format!("{{\"cniVersion\":\"{}\"}}", config::RUNTIME_VERSION).into_bytes());
        inv.timeout = self.timeout;
        let o = inv.run(None);
        if o.success() {
            return decode_version_answer(&o.stdout);
        }
        let e = plugin_error(&o);
        if e.msg == "unknown CNI_COMMAND: VERSION" {
            return Ok(vec!["0.1.0".into()]);
        }
        Err(e)
    }

    /// libcni's `ValidateNetworkList`: every plugin exists and lists the list's version
    /// (exact string). Returns each plugin's versions.
    pub fn validate(&self, list: &NetworkList) -> Result<Vec<(String, Vec<String>)>, RuntimeError> {
        let want = list.version_or_default();
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for p in &list.plugins {
            let ty = p
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match self.plugin_versions(&ty) {
                Ok(vs) => {
                    if !vs.iter().any(|v| v == want) {
                        problems.push(format!(
                            "plugin {ty} does not support config version {want:?}"
                        ));
                    }
                    out.push((ty, vs));
                }
                Err(e) => problems.push(format!("plugin {ty}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(RuntimeError::new(1, problems.join("; ")))
        }
    }
}

impl RuntimeError {
    /// Sets details.
    pub fn with_details(mut self, d: &str) -> RuntimeError {
        self.details = d.to_string();
        self
    }
}

/// `type="T" name="N"`, as libcni describes a plugin in errors.
fn describe(plugin: &Map<String, Value>) -> String {
    let ty = plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match plugin.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => format!("type={ty:?} name={n:?}"),
        _ => format!("type={ty:?}"),
    }
}

/// 6.11: a failed plugin's error, read as libcni reads it.
fn plugin_error(o: &crate::exec::Outcome) -> RuntimeError {
    let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
    match o.stdout_parsed() {
        Stdout::Json(v) if v.get("code").is_some() || v.get("msg").is_some() => RuntimeError {
            code: v.get("code").and_then(Value::as_u64).unwrap_or(0),
            msg: v
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            details: v
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        },
        Stdout::Empty => RuntimeError::new(0, format!("netplugin failed: {stderr:?}")),
        _ => RuntimeError::new(
            0,
            format!(
                "netplugin failed but error parsing its diagnostic message {:?}",
                String::from_utf8_lossy(&o.stdout).trim()
            ),
        )
        .with_details(&stderr),
    }
}

/// Parses a plugin's ADD output as a result (re-encoded through the typed result, so
/// unknown keys are dropped as libcni drops them; 4.8). No `cniVersion` = the list's.
fn parse_result(out: &[u8], list_version: &str) -> Result<Value, RuntimeError> {
    let v = match crate::exec::parse_strict(out) {
        Stdout::Json(v) => v,
        Stdout::Empty => return Err(RuntimeError::new(6, "the plugin printed no result")),
        Stdout::Junk(why) => {
            return Err(RuntimeError::new(
                6,
                format!("decoding the plugin's result: {why}"),
            ))
        }
    };
    let version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(list_version)
        .to_string();
    convert(&v, &version)
}

/// Converts a result to `version` through the spec library.
pub fn convert(v: &Value, version: &str) -> Result<Value, RuntimeError> {
    let err = |e: cni::Error| RuntimeError {
        code: u64::from(e.code),
        msg: e.msg,
        details: e.details,
    };
    let target = cni::Version::parse(version)
        .ok_or_else(|| RuntimeError::new(1, format!("unknown result version {version:?}")))?;
    let parsed = cni::CniResult::from_json(v, target).map_err(err)?;
    parsed.to_json(target).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_answers_decode_like_libcni() {
        assert_eq!(
            decode_version_answer(br#"{"cniVersion":"0.2.0"}"#).unwrap(),
            ["0.1.0", "0.2.0"]
        );
        assert!(decode_version_answer(br#"{"cniVersion":"1.0.0"}"#).is_err());
        assert!(decode_version_answer(br#"{}"#).is_err());
        assert_eq!(
            decode_version_answer(
                br#"{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}"#
            )
            .unwrap(),
            ["0.4.0", "1.0.0"]
        );
    }

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        for bad in [
            "",
            "abcdefghijklmnop",
            "éééééééé",
            ".",
            "..",
            "eth0:1",
            "a/b",
            "a b",
            "a\tb",
        ] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, 4, "{bad:?}");
        }
    }
}
