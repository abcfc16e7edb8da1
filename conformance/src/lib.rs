//! ferry's CNI conformance harness and its cnitool-compatible runtime.
//!
//! The harness (`ferry conformance`) checks any plugin directory against the CNI
//! checklist; the runtime (`ferry add|del|check|gc|status|ports`) drives plugins with
//! libcni's semantics. Both live in one crate so the harness's runtime checks exercise the
//! same code users run.

pub mod cli;
pub mod exec;
pub mod harness;
pub mod portmap_index;
pub mod report;
pub mod runtime;
pub mod schema;
pub mod spy;
