//! The one error type of netops: a CNI code, a message that says what failed and on what,
//! and the kernel errno when there was one, so callers can tell "already exists" apart
//! from real failures without parsing text.

use std::fmt;

/// CNI codes netops uses. They mirror `cni::code` (netops does not depend on the cni
/// crate so it stays usable by non-plugin tools); the numbers must never drift.
pub mod code {
    /// Generic I/O failure (spec code 5).
    pub const IO: u32 = 5;
    /// A value in the request is unusable (spec code 7).
    pub const INVALID_CONFIG: u32 = 7;
    /// Netlink or exec failure (ferry's own).
    pub const INTERNAL: u32 = 100;
    /// A network namespace could not be opened or entered (ferry's own).
    pub const NETNS: u32 = 104;
    /// A link exists with a name we need, and it is not ours to reuse (ferry's own).
    pub const LINK_EXISTS: u32 = 105;
}

/// An error from a namespace, netlink or sysctl operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The CNI error code (see [`code`]).
    pub code: u32,
    /// What failed, with the object it failed on.
    pub msg: String,
    /// The kernel's errno (positive), when the kernel refused.
    pub errno: Option<i32>,
}

/// netops results.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an error with a code and message, no errno.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            errno: None,
        }
    }

    /// Builds an error from a kernel errno, keeping it for callers to match on.
    pub fn from_errno(code: u32, errno: i32, what: impl fmt::Display) -> Self {
        let text = std::io::Error::from_raw_os_error(errno);
        Error {
            code,
            msg: format!("{what}: {text}"),
            errno: Some(errno),
        }
    }

    /// Prefixes the message with what we were doing.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    /// True when the kernel said the object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }

    /// True when the kernel said the object is not there (ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}
