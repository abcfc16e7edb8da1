//! `ferry`: the conformance harness and a cnitool-compatible CNI runtime.

fn main() {
    std::process::exit(ferry_conformance::cli::main());
}
