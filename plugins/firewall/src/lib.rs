//! Firewall rules as data, rendered by one of two backends.
//!
//! Plugins describe *what* they want ([`Rule`]: matches and a verdict) and collect the
//! changes of one operation in a batch; a backend renders the batch to the text its tool
//! reads (`iptables-restore` or `nft -f -`) and applies it in one process, atomically. Nothing
//! here runs one process per rule, so the cost of an operation does not grow with the number
//! of rules other attachments already installed.

pub mod error;
pub mod iptables;
pub mod nftables;
pub mod rule;

pub use error::{Error, Result, FIREWALL_CODE};
pub use rule::{Family, Match, Protocol, Rule, Verdict};

/// Which tool family programs the kernel; chosen per network by the plugin config
/// (`"backend": "iptables" | "nftables"`) or detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `iptables-restore` / `ip6tables-restore` batches (legacy or nf_tables variant).
    Iptables,
    /// `nft -f -` transactions.
    Nftables,
}

impl BackendKind {
    /// Parses the config value used by the reference plugins.
    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "iptables" => Some(BackendKind::Iptables),
            "nftables" => Some(BackendKind::Nftables),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Iptables => "iptables",
            BackendKind::Nftables => "nftables",
        }
    }

    /// The reference's default: iptables when its tools are installed, else nftables, so a
    /// node keeps the rule layout it already has.
    pub fn detect() -> BackendKind {
        if executor::find_tool("iptables-restore").is_some() {
            BackendKind::Iptables
        } else {
            BackendKind::Nftables
        }
    }
}

/// One operation's worth of changes, applied by a backend in a single atomic step.
pub trait Executor {
    /// The batch type this backend renders.
    type Batch;
    /// Applies `batch` in one process; `what` says what the caller was doing, for the error.
    fn apply(&self, batch: &Self::Batch, what: &str) -> Result<()>;
}

pub mod executor;

/// Docker-style isolation between bridges (owned by the bridge plugin).
pub mod isolation;
/// ipMasq rules compatible with the reference plugins (owned by the bridge plugin).
pub mod masq;
