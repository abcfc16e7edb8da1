//! The CNI_* environment: which variables each verb needs, and their syntax rules.

use crate::error::{code, Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The operation the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach; must succeed when already detached.
    Del,
    /// Verify an attachment (0.4.0+).
    Check,
    /// Report supported versions.
    Version,
    /// Release resources of attachments not in the valid list (1.1.0+).
    Gc,
    /// Can the plugin serve ADD now? (1.1.0+)
    Status,
}

impl Command {
    /// Parse `CNI_COMMAND`; `None` for anything the spec does not define.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }

    /// The wire name, for exec'ing delegates.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// Verbs that act on one attachment and therefore need the container ID and ifname.
    fn per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID`; empty for GC, STATUS and VERSION.
    pub container_id: String,
    /// `CNI_NETNS`; `None` when unset or empty (allowed for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`; empty for GC, STATUS and VERSION.
    pub ifname: String,
    /// `CNI_ARGS` as given; parse it with [`Env::cni_args`] (only plugins that read it do).
    pub args_raw: String,
    /// `CNI_PATH`, split on `:`, empty entries dropped.
    pub path: Vec<PathBuf>,
}

/// Variables in the order skel lists them in its "missing" message.
const ORDER: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

impl Env {
    /// Read and validate the environment for `command`. `get` returns a variable's value; an
    /// empty value counts as unset, as in skel.
    ///
    /// CNI_PATH is required only where a plugin may need a delegate (checklist §9.4: the spec
    /// calls it optional), so plugins check it themselves when they delegate.
    pub fn from_lookup(command: Command, get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let val = |k: &str| get(k).filter(|v| !v.is_empty());
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Version | Command::Gc | Command::Status => &[],
        };
        let missing: Vec<&str> = ORDER
            .iter()
            .copied()
            .filter(|k| required.contains(k) && val(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(Error::new(
                code::INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let container_id = val("CNI_CONTAINERID").unwrap_or_default();
        let ifname = val("CNI_IFNAME").unwrap_or_default();
        if command.per_attachment() {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname)?;
        }
        Ok(Env {
            command,
            container_id,
            netns: val("CNI_NETNS").map(PathBuf::from),
            ifname,
            args_raw: val("CNI_ARGS").unwrap_or_default(),
            path: val("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Read the process environment.
    pub fn from_process(command: Command) -> Result<Env> {
        Env::from_lookup(command, |k| std::env::var(k).ok())
    }

    /// Parse `CNI_ARGS` with the reference's rules: `K=V` pairs split on `;`, exactly one `=`
    /// each; a key not in `known` is an error unless `IgnoreUnknown` is `1`/`true` (any case).
    pub fn cni_args(&self, known: &[&str]) -> Result<BTreeMap<String, String>> {
        parse_cni_args(&self.args_raw, known)
    }
}

/// See [`Env::cni_args`].
pub fn parse_cni_args(raw: &str, known: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if raw.is_empty() {
        return Ok(out);
    }
    for pair in raw.split(';') {
        let mut kv = pair.split('=');
        match (kv.next(), kv.next(), kv.next()) {
            (Some(k), Some(v), None) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(Error::new(
                    code::INVALID_ENV,
                    format!("CNI_ARGS: invalid pair {pair:?}: each entry must be KEY=VALUE, separated by ';'"),
                ))
            }
        }
    }
    let ignore_unknown = match out.get("IgnoreUnknown") {
        None => false,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => {
                return Err(Error::new(
                    code::INVALID_ENV,
                    format!("CNI_ARGS: IgnoreUnknown={v:?} is not a boolean (use 1 or true)"),
                ))
            }
        },
    };
    if !ignore_unknown {
        let unknown: Vec<&str> = out
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "IgnoreUnknown" && !known.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::new(
                code::INVALID_ENV,
                format!(
                    "CNI_ARGS: unknown args [{}] (this plugin knows [{}]; add IgnoreUnknown=1 to ignore others)",
                    unknown.join(","),
                    known.join(",")
                ),
            ));
        }
    }
    Ok(out)
}

/// `^[A-Za-z0-9][A-Za-z0-9_.\-]*$`: the spec's rule for container IDs and network names. Both
/// end up in file names and firewall comments, so this is also our injection guard.
pub fn is_valid_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Container ID rule (checklist 1.4); code 4 as skel.
pub fn validate_container_id(id: &str) -> Result<()> {
    if is_valid_identifier(id) {
        Ok(())
    } else {
        Err(Error::new(code::INVALID_ENV, "invalid characters in containerID").with_details(id))
    }
}

/// Interface name rule (checklist 1.5): 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::new(
            code::INVALID_ENV,
            "required env variables [CNI_IFNAME] missing",
        ));
    }
    if name.len() > 15 {
        return Err(Error::new(code::INVALID_ENV, "interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(Error::new(code::INVALID_ENV, "interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(Error::new(
            code::INVALID_ENV,
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(cmd: Command, vars: &[(&str, &str)]) -> Result<Env> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(cmd, |k| m.get(k).cloned())
    }

    #[test]
    fn missing_vars_are_named_in_skel_order() {
        let e = env(Command::Add, &[]).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing"
        );
        let e = env(Command::Del, &[("CNI_CONTAINERID", "c1")]).unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME") && !e.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn gc_and_status_accept_libcni_empty_vars() {
        let vars = [
            ("CNI_CONTAINERID", ""),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", ""),
            ("CNI_ARGS", ""),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        assert!(env(Command::Gc, &vars).is_ok());
        assert!(env(Command::Status, &vars).is_ok());
    }

    #[test]
    fn container_id_rules() {
        for ok in ["a", "0", "A_b.c-d", &"f".repeat(300)] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "-a", "_a", ".a", "a/b", "a b", "a:b", "a@b", "ä", "a;b", "a\n",
        ] {
            let e = validate_container_id(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad}");
        }
    }

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        for bad in [
            "abcdefghijklmnop",
            "éééééééé",
            ".",
            "..",
            "eth0:1",
            "a/b",
            "a b",
            "a\tb",
        ] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, 4, "{bad}");
        }
    }

    #[test]
    fn cni_args_reference_table() {
        let known = ["IP"];
        assert!(parse_cni_args("FOO=bar", &known).is_err());
        assert!(parse_cni_args("IgnoreUnknown=1;FOO=bar", &known).is_ok());
        assert!(parse_cni_args("IgnoreUnknown=TRUE;FOO=bar", &known).is_ok());
        assert!(parse_cni_args("IgnoreUnknown=yes;FOO=bar", &known).is_err());
        assert!(parse_cni_args("ignoreunknown=1;FOO=bar", &known).is_err());
        assert!(parse_cni_args("FOO", &known).is_err());
        assert!(parse_cni_args("IgnoreUnknown=1;", &known).is_err());
        assert!(parse_cni_args("K=a=b", &["K"]).is_err());
        assert!(parse_cni_args("", &known).unwrap().is_empty());
        let m = parse_cni_args("IP=10.213.0.5", &known).unwrap();
        assert_eq!(m["IP"], "10.213.0.5");
    }
}
