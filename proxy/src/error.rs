//! One error type for the proxy library; the CLI prints it, the API maps it to a status code,
//! the portmap plugin maps it to CNI code 107 (PROXY) or 101 (PORT_CONFLICT).

use std::io;

/// What went wrong, sorted by who must act: the caller (Invalid, Conflict, NotFound), the
/// host (Io), or the daemon across the socket (Api).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or command line is wrong; the message says which field.
    #[error("{0}")]
    Invalid(String),
    /// The host port is taken; `holder` names who holds it (a mapping or a host process).
    #[error("{msg}")]
    Conflict {
        /// Full human-readable message, including the holder.
        msg: String,
        /// Who holds the port, e.g. `mapping web-1 (owner abc123)` or `nginx (pid 1234)`.
        holder: String,
    },
    /// No mapping with that id.
    #[error("{0}")]
    NotFound(String),
    /// A system call failed; `context` says what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What the proxy was doing, e.g. `binding 0.0.0.0:8080/tcp`.
        context: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The daemon answered a client request with an error status.
    #[error("ferry-proxy daemon answered {status}: {msg}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The daemon's `error` field (or the raw body).
        msg: String,
    },
}

/// Result alias for the proxy library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an io::Error with what we were doing when it happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to io results, so every error says what the proxy was doing.
pub trait IoContext<T> {
    /// Converts an io error into [`Error::Io`] with `context`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
