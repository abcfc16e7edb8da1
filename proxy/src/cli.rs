//! Entry point shared by the binary: `ferry-proxy daemon …` runs the daemon, anything else
//! is docker-proxy's command line.

/// Runs the program with the full argv and returns the exit code.
pub fn run(args: Vec<String>) -> i32 {
    ignore_sigpipe();
    ensure_stdio_open();
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

/// A parent that starts us with fd 0, 1 or 2 closed would otherwise see the next socket we
/// open take that number, and a diagnostic line meant for stderr land in a client's stream.
/// Rust's normal start-up guards against this; the binary skips that start-up, so do it here:
/// one `fcntl` per descriptor, `/dev/null` opened only for a closed one.
fn ensure_stdio_open() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: open(2) with a static C string; the lowest free number is `fd` itself,
            // which is where the descriptor is meant to stay (never closed by us).
            unsafe {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}
