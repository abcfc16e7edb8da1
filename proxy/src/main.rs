//! `ferry-proxy`: a docker-proxy compatible forwarder (default) or, with the `daemon`
//! sub-command, one process serving many mappings behind an HTTP API.
//!
//! `no_main`: dockerd waits for the ready byte on fd 3 before it publishes the next port, so
//! start-up is on its critical path. The C entry point skips Rust's runtime set-up (stdio
//! poll, stack-guard lookup through /proc/self/maps, sigaltstack), ~0.1 ms per spawn;
//! [`ferry_proxy::cli::run`] ignores SIGPIPE itself, the one part of that set-up it needs.
// (Not under `cargo test`: the test harness brings its own `main`.)
#![cfg_attr(not(test), no_main)]

/// The C entry point. argv is read from main's own arguments: std captures it for
/// `std::env::args` only on glibc (musl does not pass it to initialisers), and this way the
/// binary behaves the same on either.
///
/// # Safety
/// Called by the C runtime only, with `argc` valid NUL-terminated strings in `argv`.
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn main(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    let args = (0..usize::try_from(argc).unwrap_or(0))
        .filter_map(|i| {
            // SAFETY: the C runtime passes argc valid, NUL-terminated strings in argv.
            let arg = unsafe { *argv.add(i) };
            (!arg.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(arg) })
        })
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    // process::exit runs std's clean-up (flushes stdout) before leaving.
    std::process::exit(ferry_proxy::cli::run(args))
}
