//! `ferry-proxy`: a docker-proxy compatible forwarder (default) or, with the `daemon`
//! sub-command, one process serving many mappings behind an HTTP API.
fn main() {
    std::process::exit(ferry_proxy::cli::run(std::env::args().collect()));
}
