//! Entry point shared by the binary: `ferry-proxy daemon …` runs the daemon, anything else
//! is docker-proxy's command line.

/// Runs the program with the full argv and returns the exit code.
pub fn run(args: Vec<String>) -> i32 {
    ignore_sigpipe();
    if args.get(1).map(String::as_str) == Some("daemon") {
        return crate::daemon::main(&args[2..]);
    }
    crate::compat::main(&args[1..])
}

/// A peer that closed its end must show up as EPIPE on the write, not kill the process
/// (Rust's normal start-up does this; the binary skips that start-up to report ready sooner).
fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
