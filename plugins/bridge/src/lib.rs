//! ferry's `bridge` plugin: a drop-in for the reference bridge plugin (same config keys,
//! same result shape, same firewall names), built on rtnetlink, plus opt-in isolation
//! between networks.

pub mod config;
pub mod deferred_delete;
pub mod ipam;
pub mod names;
pub mod plugin;
pub mod spoofcheck;

pub use plugin::BridgePlugin;

/// What `bridge` prints when run without CNI_COMMAND.
pub const ABOUT: &str = concat!(
    "CNI bridge plugin (ferry) version ",
    env!("CARGO_PKG_VERSION")
);
