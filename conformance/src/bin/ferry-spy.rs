//! `ferry-spy`: the F-SPY fake plugin on its own (the harness uses `ferry` under a
//! `spy-*` name, which does the same).

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    ferry_conformance::spy::main(&argv0)
}
