//! CNI spec versions, and which verbs and result shapes each one allows.

use crate::error::{code, Error, Result};
use std::fmt;

/// A CNI spec version ferry speaks. Ordered, so gates read `v >= Version::V0_4_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// The first version: `ip4`/`ip6` results.
    V0_1_0,
    /// Adds VERSION.
    V0_2_0,
    /// Rich results (`interfaces`, `ips`), chaining.
    V0_3_0,
    /// `ips` field-name fix.
    V0_3_1,
    /// CHECK, prevResult on DEL.
    V0_4_0,
    /// Drops `ips[].version`.
    V1_0_0,
    /// GC, STATUS, new result fields.
    V1_1_0,
}

/// Every version ferry accepts, in the order VERSION lists them. The same set the reference
/// plugins accept, plus 1.1.0.
pub const SUPPORTED: [Version; 7] = [
    Version::V0_1_0,
    Version::V0_2_0,
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest version; what VERSION answers when the input names none we know.
    pub const LATEST: Version = Version::V1_1_0;

    /// Exact-string match, as skel does: "1.0" is not "1.0.0".
    pub fn parse(s: &str) -> Option<Version> {
        SUPPORTED.iter().copied().find(|v| v.as_str() == s)
    }

    /// Parse, or the spec's code-1 error listing what is supported.
    pub fn parse_supported(s: &str) -> Result<Version> {
        Version::parse(s).ok_or_else(|| {
            Error::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                format!("config is {s:?}, plugin supports {}", supported_list_text()),
            )
        })
    }

    /// The version string as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Results in this version use the `ip4`/`ip6` shape.
    pub fn is_legacy(self) -> bool {
        self < Version::V0_3_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `["0.1.0", …, "1.1.0"]` as text, for error details.
pub fn supported_list_text() -> String {
    let items: Vec<String> = SUPPORTED
        .iter()
        .map(|v| format!("{:?}", v.as_str()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Numeric `MAJOR[.MINOR[.PATCH]]` comparison key, used to gate verbs the way skel does for
/// versions we do not otherwise know (so "0.3.5" is still "below 0.4.0").
pub fn numeric(s: &str) -> Option<(u64, u64, u64)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_string_match_only() {
        assert_eq!(Version::parse("1.0.0"), Some(Version::V1_0_0));
        assert_eq!(Version::parse("1.0"), None);
        assert_eq!(Version::parse("9.9.9"), None);
    }

    #[test]
    fn unsupported_version_lists_supported() {
        let e = Version::parse_supported("0.5.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.details.contains("\"1.1.0\"") && e.details.contains("\"0.1.0\""));
    }

    #[test]
    fn numeric_parse() {
        assert_eq!(numeric("0.3.1"), Some((0, 3, 1)));
        assert_eq!(numeric("1"), Some((1, 0, 0)));
        assert_eq!(numeric("1.2.3.4"), None);
        assert_eq!(numeric("1.x"), None);
    }
}
