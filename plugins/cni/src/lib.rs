//! The CNI specification (0.1.0 … 1.1.0) as types and one entry point.
//!
//! Every ferry plugin goes through this crate so that they all parse configs, negotiate
//! versions, validate the environment and render results and errors the same way — and the
//! same way as the Go reference plugins' `skel`, which runtimes have been written against.

pub mod config;
pub mod env;
pub mod error;
pub mod fsutil;
pub mod invoke;
pub mod result;
pub mod skel;
pub mod version;

pub use config::{Attachment, NetConf};
pub use env::{Command, Env};
pub use error::{code, Error, Result};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Plugin, Request};
pub use version::Version;
