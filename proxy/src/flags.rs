//! Command-line parsing with Go's `flag` package rules, because dockerd (a Go program)
//! builds docker-proxy's command line: `-name value`, `-name=value`, `--name` works like
//! `-name`, boolean flags take no separate value (`-v`, `-v=false`), `--` ends the flags.

use std::collections::BTreeMap;
use std::time::Duration;

/// Describes one accepted flag.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    /// Name without dashes, e.g. `host-port`.
    pub name: &'static str,
    /// Boolean flags never consume the next argument (Go semantics).
    pub boolean: bool,
    /// One line for `-h`.
    pub help: &'static str,
}

/// Parsed flags (last occurrence wins, as in Go) and the remaining positional arguments.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedFlags {
    /// Flag name → value (`"true"` for a bare boolean).
    pub values: BTreeMap<String, String>,
    /// Arguments after the flags.
    pub positional: Vec<String>,
}

/// Why parsing stopped: a usage error, or the user asked for help.
#[derive(Debug, PartialEq, Eq)]
pub enum FlagError {
    /// `-h`, `-help` or `--help`.
    Help,
    /// Unknown flag, missing value, bad boolean.
    Usage(String),
}

/// Parses `args` (without the program name) following Go's flag package.
pub fn parse(args: &[String], specs: &[FlagSpec]) -> Result<ParsedFlags, FlagError> {
    let mut out = ParsedFlags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            out.positional.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            out.positional.extend(args[i..].iter().cloned());
            break;
        }
        let body = arg
            .strip_prefix("--")
            .unwrap_or_else(|| &arg[1..])
            .to_string();
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::Usage(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            return Err(FlagError::Help);
        }
        let spec = specs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| FlagError::Usage(format!("flag provided but not defined: -{name}")))?;
        let value = if spec.boolean {
            match inline.as_deref() {
                None => "true".to_string(),
                Some(v) => match parse_go_bool(v) {
                    Some(b) => b.to_string(),
                    None => {
                        return Err(FlagError::Usage(format!(
                            "invalid boolean value {v:?} for -{name}"
                        )))
                    }
                },
            }
        } else if let Some(v) = inline {
            v
        } else {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| FlagError::Usage(format!("flag needs an argument: -{name}")))?
        };
        out.values.insert(name, value);
        i += 1;
    }
    Ok(out)
}

/// Go's strconv.ParseBool.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Renders the flag list for `-h`.
pub fn usage(program: &str, specs: &[FlagSpec]) -> String {
    let mut s = format!("Usage of {program}:\n");
    for spec in specs {
        s.push_str(&format!("  -{}\n    \t{}\n", spec.name, spec.help));
    }
    s
}

/// Parses a Go-style duration (`90s`, `1m30s`, `500ms`, `2h`); a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit (ms, s, m, h)"))?;
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("bad number in duration {text:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        total += Duration::from_secs_f64(number * scale);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[FlagSpec] = &[
        FlagSpec {
            name: "proto",
            boolean: false,
            help: "",
        },
        FlagSpec {
            name: "host-port",
            boolean: false,
            help: "",
        },
        FlagSpec {
            name: "v",
            boolean: true,
            help: "",
        },
    ];

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn go_flag_forms_are_all_accepted() {
        let p = parse(
            &args(&["-proto", "udp", "--host-port=80", "-v", "rest"]),
            SPECS,
        )
        .unwrap();
        assert_eq!(p.values["proto"], "udp");
        assert_eq!(p.values["host-port"], "80");
        assert_eq!(p.values["v"], "true");
        assert_eq!(p.positional, vec!["rest"]);
    }

    #[test]
    fn boolean_never_takes_the_next_argument() {
        let p = parse(&args(&["-v", "false"]), SPECS).unwrap();
        assert_eq!(p.values["v"], "true");
        assert_eq!(p.positional, vec!["false"]);
        let p = parse(&args(&["-v=false"]), SPECS).unwrap();
        assert_eq!(p.values["v"], "false");
    }

    #[test]
    fn unknown_missing_and_help() {
        assert!(matches!(
            parse(&args(&["-nope"]), SPECS),
            Err(FlagError::Usage(_))
        ));
        assert!(matches!(
            parse(&args(&["-proto"]), SPECS),
            Err(FlagError::Usage(_))
        ));
        assert_eq!(parse(&args(&["--help"]), SPECS), Err(FlagError::Help));
        let p = parse(&args(&["--", "-proto"]), SPECS).unwrap();
        assert_eq!(p.positional, vec!["-proto"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
