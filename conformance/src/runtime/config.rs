//! Network configuration as libcni loads it: discovery by name in a directory, legacy
//! `.conf` wrapping, plugin sub-folders, list version selection and the 1.1 flags.

use super::RuntimeError;
use crate::schema::parse_version;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The newest spec version this runtime implements (what libcni HEAD calls `Current()`).
pub const RUNTIME_VERSION: &str = "1.1.0";

/// A loaded network configuration list.
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    /// The selected version (3.7); "" means 0.1.0.
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Plugin objects in chain order (inline, then the sub-folder's).
    pub plugins: Vec<Map<String, Value>>,
    /// The exact bytes of the file (cached as `config`).
    pub bytes: Vec<u8>,
}

impl NetworkList {
    /// The version used for gating, with "" read as 0.1.0.
    pub fn version_or_default(&self) -> &str {
        if self.cni_version.is_empty() {
            "0.1.0"
        } else {
            &self.cni_version
        }
    }
}

fn load_err(msg: String) -> RuntimeError {
    RuntimeError::new(7, msg)
}

/// libcni's boolean flags accept `true`/`false` and the strings "true"/"false" in any case.
fn flag(obj: &Map<String, Value>, key: &str) -> Result<bool, RuntimeError> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(load_err(format!(
            "error parsing configuration list: invalid {key} value {other}"
        ))),
    }
}

/// 3.7: the highest of `cniVersion` ∪ `cniVersions`, as libcni picks it.
pub fn select_version(obj: &Map<String, Value>) -> Result<String, RuntimeError> {
    let single = match obj.get("cniVersion") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(load_err(format!(
                "error parsing configuration list: invalid cniVersion type {other}"
            )))
        }
    };
    let Some(list) = obj.get("cniVersions") else {
        return Ok(single);
    };
    let list = list.as_array().ok_or_else(|| {
        load_err("error parsing configuration list: cniVersions is not a list".into())
    })?;
    let current = parse_version(RUNTIME_VERSION).unwrap_or((1, 1, 0));
    let mut best: Option<((u64, u64, u64), String)> = None;
    let mut consider = |s: &str| -> Result<(), RuntimeError> {
        let v = parse_version(s).ok_or_else(|| {
            load_err(format!(
                "error parsing configuration list: invalid version {s:?}"
            ))
        })?;
        if v <= current && best.as_ref().map(|(b, _)| v > *b).unwrap_or(true) {
            best = Some((v, s.to_string()));
        }
        Ok(())
    };
    for item in list {
        let s = item.as_str().ok_or_else(|| {
            load_err(format!(
                "error parsing configuration list: invalid version {item}"
            ))
        })?;
        consider(s)?;
    }
    if !single.is_empty() {
        consider(&single)?;
    }
    Ok(best.map(|(_, s)| s).unwrap_or_default())
}

/// Parses a plugin object: it must be an object with a non-empty `type` without slashes.
fn plugin_object(v: &Value, what: &str) -> Result<Map<String, Value>, RuntimeError> {
    let obj = v.as_object().ok_or_else(|| {
        load_err(format!(
            "failed to parse plugin config {what}: not an object"
        ))
    })?;
    // 9.21: keys the runtime makes should not be written in files; they pass through
    // (as in libcni) but the user should know.
    for k in obj.keys() {
        if k == "runtimeConfig" || k == "args" || k == "prevResult" || k.starts_with("cni.dev/") {
            eprintln!("ferry: warning: plugin config {what} sets {k:?}, which the runtime normally provides");
        }
    }
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() && !t.contains('/') && !t.contains('\\') => Ok(obj.clone()),
        _ => Err(load_err(format!(
            "failed to parse plugin config {what}: missing or invalid 'type'"
        ))),
    }
}

/// Parses a conflist; `dir` is where to look for the `<name>/*.conf` sub-folder.
pub fn list_from_bytes(bytes: &[u8], dir: Option<&Path>) -> Result<NetworkList, RuntimeError> {
    let raw: Value = serde_json::from_slice(bytes)
        .map_err(|e| load_err(format!("error parsing configuration list: {e}")))?;
    let obj = raw
        .as_object()
        .ok_or_else(|| load_err("error parsing configuration list: not an object".into()))?;
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(load_err(format!(
                "error parsing configuration list: invalid name type {other}"
            )))
        }
        None => return Err(load_err("error parsing configuration list: no name".into())),
    };
    let cni_version = select_version(obj)?;
    let disable_check = flag(obj, "disableCheck")?;
    let disable_gc = flag(obj, "disableGC")?;
    let only_inlined = flag(obj, "loadOnlyInlinedPlugins")?;
    let mut plugins = Vec::new();
    match obj.get("plugins") {
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(load_err(
                    "error parsing configuration list: no plugins in list".into(),
                ));
            }
            for (i, p) in list.iter().enumerate() {
                plugins.push(plugin_object(p, &i.to_string())?);
            }
        }
        Some(other) => {
            return Err(load_err(format!(
                "error parsing configuration list: invalid 'plugins' type {other}"
            )))
        }
        None if only_inlined => {
            return Err(load_err(
                "error parsing configuration list: no 'plugins' key".into(),
            ))
        }
        None => {}
    }
    if !only_inlined {
        if let Some(dir) = dir {
            for file in files_with_ext(&dir.join(&name), &[".conf"])? {
                let b = std::fs::read(&file).map_err(|e| {
                    RuntimeError::new(5, format!("error reading {}: {e}", file.display()))
                })?;
                let v: Value = serde_json::from_slice(&b)
                    .map_err(|e| load_err(format!("error parsing {}: {e}", file.display())))?;
                plugins.push(plugin_object(&v, &file.display().to_string())?);
            }
        }
    }
    if plugins.is_empty() {
        return Err(load_err(format!(
            "no plugin configs found for network {name:?}"
        )));
    }
    Ok(NetworkList {
        name,
        cni_version,
        disable_check,
        disable_gc,
        plugins,
        bytes: bytes.to_vec(),
    })
}

/// Files directly in `dir` with one of the exact extensions, in byte-wise order.
pub fn files_with_ext(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, RuntimeError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuntimeError::new(
                5,
                format!("reading {}: {e}", dir.display()),
            ))
        }
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .map(|x| exts.contains(&format!(".{}", x.to_string_lossy()).as_str()))
                .unwrap_or(false)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// 6.1: finds network `name` in `dir` the way libcni's `LoadConfList` does.
pub fn load(dir: &Path, name: &str) -> Result<NetworkList, RuntimeError> {
    let lists = files_with_ext(dir, &[".conflist"])?;
    for file in &lists {
        let bytes = std::fs::read(file)
            .map_err(|e| RuntimeError::new(5, format!("error reading {}: {e}", file.display())))?;
        let list = list_from_bytes(&bytes, Some(dir))
            .map_err(|e| e.context(&format!("loading {}", file.display())))?;
        if list.name == name {
            return Ok(list);
        }
    }
    let singles = files_with_ext(dir, &[".conf", ".json"])?;
    if singles.is_empty() {
        if lists.is_empty() {
            return Err(load_err(format!(
                "no net configurations found in {}",
                dir.display()
            )));
        }
        return Err(load_err(format!(
            "no net configuration with name \"{name}\" in {}",
            dir.display()
        )));
    }
    for file in &singles {
        let bytes = std::fs::read(file)
            .map_err(|e| RuntimeError::new(5, format!("error reading {}: {e}", file.display())))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            load_err(format!(
                "error parsing configuration {}: {e}",
                file.display()
            ))
        })?;
        let obj = plugin_object(&v, &file.display().to_string())?;
        if obj.get("name").and_then(Value::as_str) == Some(name) {
            return wrap_single(&obj);
        }
    }
    Err(load_err(format!(
        "no net configuration with name \"{name}\" in {}",
        dir.display()
    )))
}

/// 5.3: a legacy single-plugin config becomes `{name, cniVersion, plugins: [obj]}`.
pub fn wrap_single(obj: &Map<String, Value>) -> Result<NetworkList, RuntimeError> {
    let mut list = Map::new();
    list.insert(
        "cniVersion".into(),
        obj.get("cniVersion")
            .cloned()
            .unwrap_or(Value::String(String::new())),
    );
    list.insert(
        "name".into(),
        obj.get("name").cloned().unwrap_or(Value::Null),
    );
    list.insert(
        "plugins".into(),
        Value::Array(vec![Value::Object(obj.clone())]),
    );
    let bytes = serde_json::to_vec(&sorted(&Value::Object(list)))
        .map_err(|e| RuntimeError::new(6, format!("encoding a wrapped config: {e}")))?;
    list_from_bytes(&bytes, None)
}

/// A copy with every object's keys in byte order: Go's `json.Marshal` of a map does
/// this, so configs re-encoded by libcni look exactly like ours.
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: Value) -> Result<String, RuntimeError> {
        select_version(v.as_object().unwrap())
    }

    #[test]
    fn version_selection_follows_libcni() {
        assert_eq!(
            sel(json!({"cniVersions": ["0.4.0", "1.0.0", "1.1.0", "99.0.0"]})).unwrap(),
            "1.1.0"
        );
        assert_eq!(
            sel(json!({"cniVersion": "1.0.0", "cniVersions": ["0.4.0"]})).unwrap(),
            "1.0.0"
        );
        assert!(sel(json!({"cniVersions": ["1.0.f"]})).is_err());
        assert_eq!(sel(json!({"cniVersion": "1.2.3"})).unwrap(), "1.2.3");
        assert_eq!(
            sel(json!({"cniVersion": "1.2.3", "cniVersions": ["0.4.0"]})).unwrap(),
            "0.4.0"
        );
        assert_eq!(sel(json!({"cniVersions": []})).unwrap(), "");
    }

    #[test]
    fn flags_accept_bools_and_strings() {
        let l = list_from_bytes(
            br#"{"name":"n","disableCheck":"TRUE","disableGC":false,"plugins":[{"type":"a"}]}"#,
            None,
        )
        .unwrap();
        assert!(l.disable_check && !l.disable_gc);
        assert!(list_from_bytes(
            br#"{"name":"n","disableCheck":"yes","plugins":[{"type":"a"}]}"#,
            None
        )
        .is_err());
        assert!(list_from_bytes(br#"{"name":"n","plugins":[]}"#, None).is_err());
        assert!(list_from_bytes(br#"{"name":"n","plugins":{}}"#, None).is_err());
        assert!(list_from_bytes(br#"{"name":"n"}"#, None).is_err());
    }
}
