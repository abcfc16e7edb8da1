//! `make bench`: every figure measured for ferry and for its anchor (the reference plugins,
//! docker-proxy, or the kernel path) in the same run, printed as a table with the ratio and
//! written to `<out>/report.md`.

mod exec;
mod hostlocal;
mod report;

use clap::Parser;
use std::path::PathBuf;

/// Command line of `ferry-bench`.
#[derive(Parser, Debug)]
#[command(about = "ferry beside the reference plugins and docker-proxy, same run")]
struct Args {
    /// Fewer repetitions and sizes: a few minutes in all.
    #[arg(long)]
    quick: bool,
    /// Where report.md goes.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Directory with ferry's release binaries.
    #[arg(long, default_value = "target/release")]
    ferry_bin: PathBuf,
    /// Directory with the reference plugins (Debian containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_bin: PathBuf,
    /// Run only the benchmarks whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

/// What every benchmark gets.
pub struct Ctx {
    /// Repetitions per measured point.
    pub reps: usize,
    /// Quick mode.
    pub quick: bool,
    /// ferry's binaries.
    pub ferry_bin: PathBuf,
    /// The reference plugins.
    pub reference_bin: PathBuf,
}

/// One benchmark: adds its rows to the report.
type BenchFn = fn(&Ctx, &mut report::Report) -> Result<(), String>;

fn main() {
    let args = Args::parse();
    let ctx = Ctx {
        reps: if args.quick { 15 } else { 60 },
        quick: args.quick,
        ferry_bin: args.ferry_bin.clone(),
        reference_bin: args.reference_bin.clone(),
    };
    let mut report = report::Report::default();
    let benches: [(&str, BenchFn); 1] = [("host-local", hostlocal::run)];
    let mut failed = false;
    for (name, f) in benches {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        eprintln!("bench: {name} …");
        if let Err(e) = f(&ctx, &mut report) {
            eprintln!("bench: {name} failed: {e}");
            failed = true;
        }
    }
    let text = report.markdown(&ctx);
    println!("{text}");
    if let Err(e) = std::fs::create_dir_all(&args.out)
        .and_then(|_| std::fs::write(args.out.join("report.md"), &text))
    {
        eprintln!("bench: writing {}: {e}", args.out.display());
        failed = true;
    } else {
        eprintln!(
            "bench: report written to {}",
            args.out.join("report.md").display()
        );
    }
    if failed {
        std::process::exit(1);
    }
}
