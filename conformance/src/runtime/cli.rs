//! The cnitool-compatible verbs: same arguments, same environment, same container ID.

use super::{cache, config, Runtime, RuntimeConf, RuntimeError};
use crate::cli::{NetworkArgs, RuntimeArgs};
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// cnitool's container ID: "cnitool-" + hex of the first 10 bytes of sha512(abs path).
pub fn container_id_for(netns: &Path) -> String {
    let abs = if netns.is_absolute() {
        netns.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(netns))
            .unwrap_or_else(|_| netns.to_path_buf())
    };
    let digest = Sha512::digest(abs.to_string_lossy().as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

/// CNI_ARGS as cnitool parses it: `k=v;…`, exactly one `=` with text on both sides.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, RuntimeError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(';')
        .map(|pair| {
            let parts: Vec<&str> = pair.split('=').collect();
            match parts.as_slice() {
                [k, v] if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(RuntimeError::new(
                    4,
                    format!("invalid CNI_ARGS pair {pair:?}: want KEY=VALUE"),
                )),
            }
        })
        .collect()
}

fn runtime(cache_dir: &Path) -> Runtime {
    let cni_path = std::env::var("CNI_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    Runtime {
        cni_path,
        cache_dir: cache_dir.to_path_buf(),
        timeout: Duration::from_secs(300),
    }
}

fn netconf_dir() -> PathBuf {
    std::env::var_os("NETCONFPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/cni/net.d"))
}

fn fail(verb: &str, e: &RuntimeError) -> i32 {
    eprintln!("ferry {verb}: {e}");
    1
}

fn runtime_conf(a: &RuntimeArgs) -> Result<RuntimeConf, RuntimeError> {
    let ifname = a
        .ifname
        .clone()
        .or_else(|| std::env::var("CNI_IFNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "eth0".to_string());
    let args = parse_cni_args(&std::env::var("CNI_ARGS").unwrap_or_default())?;
    let capability_args: Map<String, Value> = match std::env::var("CAP_ARGS") {
        Ok(s) if !s.is_empty() => serde_json::from_str(&s)
            .map_err(|e| RuntimeError::new(6, format!("CAP_ARGS is not a JSON object: {e}")))?,
        _ => Map::new(),
    };
    let netns = if a.netns.is_absolute() {
        a.netns.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(&a.netns))
            .unwrap_or_else(|_| a.netns.clone())
    };
    Ok(RuntimeConf {
        container_id: container_id_for(&a.netns),
        netns: netns.display().to_string(),
        ifname,
        args,
        capability_args,
    })
}

fn with_list<T>(
    verb: &str,
    network: &str,
    f: impl FnOnce(&config::NetworkList) -> Result<T, RuntimeError>,
) -> Result<T, i32> {
    let list = config::load(&netconf_dir(), network).map_err(|e| fail(verb, &e))?;
    f(&list).map_err(|e| fail(verb, &e))
}

/// `ferry add`: runs ADD and prints the result. On failure, it DELs the chain (the caller's
/// duty in libcni, 2.14) and says so.
pub fn add(a: &RuntimeArgs) -> i32 {
    let rt = match runtime_conf(a) {
        Ok(rt) => rt,
        Err(e) => return fail("add", &e),
    };
    let r = runtime(&a.cache_dir);
    let out = with_list("add", &a.network, |list| match r.add(list, &rt) {
        Ok(v) => Ok(v),
        Err(e) => {
            match r.del(list, &rt) {
                Ok(()) => eprintln!("ferry add: cleaned up with DEL after the failure"),
                Err(d) => eprintln!("ferry add: the clean-up DEL failed too: {d}"),
            }
            Err(e)
        }
    });
    match out {
        Ok(v) => {
            println!("{}", go_indent(&v));
            0
        }
        Err(code) => code,
    }
}

/// JSON indented with four spaces, as Go's `types.PrintResult` (cnitool) prints results.
pub fn go_indent(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    match serde::Serialize::serialize(v, &mut ser) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => v.to_string(),
    }
}

/// `ferry del`.
pub fn del(a: &RuntimeArgs) -> i32 {
    let rt = match runtime_conf(a) {
        Ok(rt) => rt,
        Err(e) => return fail("del", &e),
    };
    let r = runtime(&a.cache_dir);
    with_list("del", &a.network, |l| r.del(l, &rt))
        .map(|_| 0)
        .unwrap_or_else(|c| c)
}

/// `ferry check`.
pub fn check(a: &RuntimeArgs) -> i32 {
    let rt = match runtime_conf(a) {
        Ok(rt) => rt,
        Err(e) => return fail("check", &e),
    };
    let r = runtime(&a.cache_dir);
    with_list("check", &a.network, |l| r.check(l, &rt))
        .map(|_| 0)
        .unwrap_or_else(|c| c)
}

/// `ferry gc`: like cnitool, no valid list: every cached attachment of the network is DELed.
pub fn gc(a: &NetworkArgs) -> i32 {
    let r = runtime(&a.cache_dir);
    with_list("gc", &a.network, |l| r.gc(l, None))
        .map(|_| 0)
        .unwrap_or_else(|c| c)
}

/// `ferry status`.
pub fn status(a: &NetworkArgs) -> i32 {
    let r = runtime(&a.cache_dir);
    with_list("status", &a.network, |l| r.status(l))
        .map(|_| 0)
        .unwrap_or_else(|c| c)
}

/// `ferry validate`.
pub fn validate(network: &str) -> i32 {
    let r = runtime(Path::new("/var/lib/cni"));
    match with_list("validate", network, |l| r.validate(l)) {
        Ok(plugins) => {
            for (ty, versions) in plugins {
                println!("{ty}: {}", versions.join(" "));
            }
            0
        }
        Err(code) => code,
    }
}

/// One line of `ferry ports`: `80/tcp -> 0.0.0.0:8080`.
pub fn port_lines(entry: &cache::CacheEntry) -> Vec<String> {
    entry
        .capability_args
        .get("portMappings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let cport = m.get("containerPort").and_then(Value::as_u64).unwrap_or(0);
            let hport = m.get("hostPort").and_then(Value::as_u64).unwrap_or(0);
            let proto = m
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("tcp")
                .to_ascii_lowercase();
            let host_ip = match m.get("hostIP").and_then(Value::as_str) {
                Some(ip) if !ip.is_empty() => ip.to_string(),
                _ => "0.0.0.0".to_string(),
            };
            let host = if host_ip.contains(':') {
                format!("[{host_ip}]:{hport}")
            } else {
                format!("{host_ip}:{hport}")
            };
            format!("{cport}/{proto} -> {host}")
        })
        .collect()
}

/// `ferry ports [container]`: port mappings of cached attachments, like `docker port`.
/// The filter matches a container ID (or its prefix), a netns path, or a network name.
pub fn ports(filter: Option<&str>, cache_dir: &Path) -> i32 {
    let entries = cache::all(cache_dir);
    let selected: Vec<&cache::CacheEntry> = entries
        .iter()
        .map(|(_, e)| e)
        .filter(|e| match filter {
            None => true,
            Some(f) => {
                e.container_id.starts_with(f)
                    || e.netns == f
                    || container_id_for(Path::new(f)) == e.container_id
                    || e.network_name == f
            }
        })
        .collect();
    if filter.is_some() && selected.is_empty() {
        eprintln!(
            "ferry ports: no cached attachment matches {:?} in {}",
            filter.unwrap_or(""),
            cache_dir.display()
        );
        return 1;
    }
    let single = filter.is_some() && selected.len() == 1;
    for e in selected {
        let lines = port_lines(e);
        if single {
            for l in lines {
                println!("{l}");
            }
        } else if !lines.is_empty() {
            println!("{} {} {}", e.network_name, e.container_id, e.if_name);
            for l in lines {
                println!("  {l}");
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnitool_container_id() {
        // sha512("/var/run/netns/x")[..10], computed independently with sha512sum.
        let id = container_id_for(Path::new("/var/run/netns/x"));
        assert_eq!(id, "cnitool-4acf487154af9777be71");
    }

    #[test]
    fn cni_args_grammar() {
        assert_eq!(parse_cni_args("A=1;B=2").unwrap().len(), 2);
        assert!(parse_cni_args("A=1=2").is_err());
        assert!(parse_cni_args("A=").is_err());
        assert!(parse_cni_args("A=1;").is_err());
        assert!(parse_cni_args("").unwrap().is_empty());
    }
}
