//! The runtime: libcni's behaviour (config discovery, chaining, result cache) as a library.

pub mod cli;
