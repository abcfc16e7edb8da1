//! Entry point shared by the binary: `ferry-proxy daemon …` runs the daemon, anything else
//! is docker-proxy's command line.

/// Runs the program with the full argv and returns the exit code.
pub fn run(args: Vec<String>) -> i32 {
    if args.get(1).map(String::as_str) == Some("daemon") {
        return crate::daemon::main(&args[2..]);
    }
    crate::compat::main(&args[1..])
}
