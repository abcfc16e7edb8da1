//! ferry-proxy: the userland port forwarder of ferry.
//!
//! Two ways to run it:
//! - [`compat`]: a drop-in for Docker's `docker-proxy` (one mapping per process, status on
//!   fd 3, optional pre-bound listener on fd 4), so `dockerd --userland-proxy-path` works;
//! - [`daemon`]: one process serving many mappings, managed through an HTTP API on a unix
//!   socket ([`api`]), persisted in a state directory ([`state`]), observed through
//!   Prometheus metrics ([`metrics`]). [`client`] is the synchronous client the portmap
//!   plugin uses.
//!
//! The data paths live in [`tcp`] (splice(2) zero-copy on Linux, buffered fallback) and
//! [`udp`] (flow table, IP_PKTINFO replies).

pub mod api;
pub mod cli;
pub mod client;
pub mod compat;
pub mod daemon;
pub mod dgram;
pub mod error;
pub mod flags;
pub mod holder;
pub mod metrics;
pub mod proxyproto;
pub mod sockets;
pub mod state;
pub mod tcp;
pub mod udp;

pub use error::{Error, Result};
