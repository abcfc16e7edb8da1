//! `ferry-proxy`: a docker-proxy compatible forwarder (default) or, with the `daemon`
//! sub-command, one process serving many mappings behind an HTTP API.
//!
//! `no_main`: dockerd waits for the ready byte on fd 3 before it publishes the next port, so
//! start-up is on its critical path. The C entry point skips Rust's runtime set-up (stdio
//! poll, stack-guard lookup through /proc/self/maps, sigaltstack), ~0.1 ms per spawn;
//! [`ferry_proxy::cli::run`] ignores SIGPIPE itself, the one part of that set-up it needs.
// (Not under `cargo test`: the test harness brings its own `main`.)
#![cfg_attr(not(test), no_main)]

/// The C entry point (argv is read through `std::env::args`, which std captures on Linux).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // process::exit runs std's clean-up (flushes stdout) before leaving.
    std::process::exit(ferry_proxy::cli::run(std::env::args().collect()))
}
