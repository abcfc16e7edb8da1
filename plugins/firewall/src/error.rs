//! The firewall crate's error: which tool failed, doing what, and the tool's own words.

use std::fmt;

/// CNI error code for firewall failures (ferry's `cni::code::FIREWALL`).
pub const FIREWALL_CODE: u32 = 106;

/// A failed firewall operation. Rendered by plugins as a CNI error with [`Error::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// CNI code: [`FIREWALL_CODE`] for tool failures, 7 for rules that cannot be expressed.
    pub code: u32,
    /// What was being done and how it failed, including the tool's stderr.
    pub msg: String,
    /// The input the tool rejected, when there is one (helps reproduce by hand).
    pub details: String,
}

impl Error {
    /// A tool failure (`code` 106).
    pub fn tool(what: &str, tool: &str, stderr: &str, input: &str) -> Error {
        let stderr = stderr.trim();
        let stderr = if stderr.is_empty() {
            "no error output"
        } else {
            stderr
        };
        Error {
            code: FIREWALL_CODE,
            msg: format!("{what}: {tool} failed: {stderr}"),
            details: input.to_string(),
        }
    }

    /// A rule that the chosen backend cannot express (code 7, invalid config).
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error {
            code: 7,
            msg: msg.into(),
            details: String::new(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// Result of firewall operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Plugins return `cni::Error`; keep the code, message and the rejected input.
impl From<Error> for cni::Error {
    fn from(e: Error) -> cni::Error {
        cni::Error::new(e.code, e.msg).with_details(e.details)
    }
}
