//! The CNI error object and its codes.

use serde_json::{json, Value};
use std::fmt;

/// Error codes. 1–99 are the spec's (only those listed are defined; never give the reserved
/// ones a meaning of our own); 100+ are ferry's, documented in the README so users can match
/// on them.
pub mod code {
    /// The request's cniVersion is not supported, or the verb needs a newer version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A config field is not supported; the message names the key and the value.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown or gone: tells the runtime it may skip clean-up.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Bad or missing CNI_* environment variables; the message names them.
    pub const INVALID_ENV: u32 = 4;
    /// An I/O failure, e.g. stdin cannot be read or a state file cannot be written.
    pub const IO: u32 = 5;
    /// Something did not decode: config JSON, a version string, a delegate's reply.
    pub const DECODE: u32 = 6;
    /// The network configuration is invalid; the message names the field.
    pub const INVALID_CONFIG: u32 = 7;
    /// A temporary condition (lock timeout, EBUSY): the runtime may retry.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const STATUS_UNAVAILABLE: u32 = 50;
    /// STATUS: cannot serve ADD, and existing containers may have reduced connectivity.
    pub const STATUS_DEGRADED: u32 = 51;
    /// ferry: an unexpected failure of the kernel or of a program we exec (netlink, nft).
    pub const INTERNAL: u32 = 100;
    /// ferry: a host port is already mapped or bound; the message names the holder.
    pub const PORT_CONFLICT: u32 = 101;
    /// ferry: no free address is left in the range set.
    pub const RANGE_EXHAUSTED: u32 = 102;
    /// ferry: a requested address is already reserved by another container.
    pub const ADDRESS_IN_USE: u32 = 103;
    /// ferry: the network namespace path is missing, not a netns, or the host's own.
    pub const NETNS: u32 = 104;
    /// ferry: a link with the wanted name exists and is not what we need.
    pub const LINK_EXISTS: u32 = 105;
    /// ferry: the firewall backend (iptables-restore, nft) refused a change.
    pub const FIREWALL: u32 = 106;
    /// ferry: the ferry-proxy daemon could not be reached or refused a request.
    pub const PROXY: u32 = 107;
}

/// A failure as the runtime will see it: a CNI code, a message saying what went wrong and
/// what to change, and optional details. Rendered as the spec's error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The CNI error code (see [`code`]).
    pub code: u32,
    /// One line for the user: what failed and, where we know it, what to change.
    pub msg: String,
    /// Extra context (the offending value, a tool's stderr); may be empty.
    pub details: String,
}

/// The result type of everything that can end in a CNI error object.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with a code and a message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Shorthand for a [`code::INVALID_CONFIG`] error.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// Shorthand for a [`code::INTERNAL`] error.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// Shorthand for a [`code::IO`] error built from an `io::Error` and what we were doing.
    pub fn io(what: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self::new(code::IO, format!("{what}: {err}"))
    }

    /// Attach details (the offending value, a tool's stderr).
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefix the message with what we were doing, keeping the code: errors read
    /// outside-in ("adding veth for c1: creating link: File exists").
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The spec's error object. `cniVersion` is included when known so a runtime can match
    /// the error to its request; `details` only when non-empty (as skel does).
    pub fn to_json(&self, cni_version: Option<&str>) -> Value {
        let mut obj = serde_json::Map::new();
        if let Some(v) = cni_version {
            obj.insert("cniVersion".into(), json!(v));
        }
        obj.insert("code".into(), json!(self.code));
        obj.insert("msg".into(), json!(self.msg));
        if !self.details.is_empty() {
            obj.insert("details".into(), json!(self.details));
        }
        Value::Object(obj)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (code {})", self.msg, self.code)
        } else {
            write!(f, "{}: {} (code {})", self.msg, self.details, self.code)
        }
    }
}

impl std::error::Error for Error {}

/// Add context to any fallible result, turning foreign errors into CNI errors with a code.
pub trait ResultExt<T> {
    /// Map the error to `code` with `what` as the context of the message.
    fn or_code(self, code: u32, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> ResultExt<T> for std::result::Result<T, E> {
    fn or_code(self, code: u32, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(code, format!("{what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_has_spec_shape() {
        let e = Error::new(code::INVALID_CONFIG, "bad subnet").with_details("10.0.0.1/8");
        let v = e.to_json(Some("1.0.0"));
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","code":7,"msg":"bad subnet","details":"10.0.0.1/8"})
        );
        let v = Error::new(4, "x").to_json(None);
        assert_eq!(v, json!({"code":4,"msg":"x"}));
    }

    #[test]
    fn context_prefixes_and_keeps_code() {
        let e = Error::new(code::IO, "permission denied").context("writing /var/lib/x");
        assert_eq!(e.msg, "writing /var/lib/x: permission denied");
        assert_eq!(e.code, code::IO);
    }
}
