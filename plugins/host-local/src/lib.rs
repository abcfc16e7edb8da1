//! ferry's host-local IPAM plugin: hands out addresses from configured ranges and keeps
//! them in the same files as the reference plugin (`<dataDir>/<network>/<ip>`), so a node
//! can switch between the two in either direction.
//!
//! [`config`] and [`range`] validate the configuration, [`allocator`] chooses addresses
//! (pure, over a [`allocator::Store`]), [`store`] is the disk, [`plugin`] wires the verbs.

pub mod allocator;
pub mod config;
pub mod plugin;
pub mod range;
pub mod store;
