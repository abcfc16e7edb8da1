//! `make bench`: every figure measured for ferry and for its anchor (the reference plugins,
//! docker-proxy, or the kernel path) in the same run, interleaved, written to
//! `<out>/report.md` with SVG charts for the scaling curves.

mod chain;
mod chart;
mod exec;
mod hostlocal;
mod portmap;
mod proxy;
mod report;
mod sys;

use clap::Parser;
use std::path::{Path, PathBuf};

/// Command line of `ferry-bench`.
#[derive(Parser, Debug)]
#[command(about = "ferry beside the reference plugins and docker-proxy, same run")]
struct Args {
    /// Fewer repetitions and sizes: a few minutes in all.
    #[arg(long)]
    quick: bool,
    /// Where report.md and the charts go.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Directory with ferry's release binaries.
    #[arg(long, default_value = "target/release")]
    ferry_bin: PathBuf,
    /// Directory with the reference plugins (Debian containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_bin: PathBuf,
    /// docker-proxy, the anchor of ferry-proxy.
    #[arg(long, default_value = "/usr/sbin/docker-proxy")]
    docker_proxy: PathBuf,
    /// Run only the benchmarks whose name contains this (see --list).
    #[arg(long)]
    only: Option<String>,
    /// Repetitions per point (default 10 with --quick, 30 without).
    #[arg(long)]
    reps: Option<usize>,
    /// Print the benchmark names and exit.
    #[arg(long)]
    list: bool,
}

/// What every benchmark gets.
pub struct Ctx {
    /// Repetitions per measured point.
    pub reps: usize,
    /// Untimed iterations before the timed ones.
    pub warmup: usize,
    /// Quick mode.
    pub quick: bool,
    /// ferry's binaries (absolute: it goes into CNI_PATH).
    pub ferry_bin: PathBuf,
    /// The reference plugins.
    pub reference_bin: PathBuf,
    /// docker-proxy.
    pub docker_proxy: PathBuf,
}

impl Ctx {
    /// Err naming the first missing binary.
    pub fn need(&self, bins: &[&Path]) -> Result<(), String> {
        for b in bins {
            if !b.is_file() {
                return Err(format!(
                    "{} {NOT_AVAILABLE} (ferry: `make release`; reference: Debian \
                     containernetworking-plugins; docker-proxy: docker.io)",
                    b.display()
                ));
            }
        }
        Ok(())
    }
}

/// How a missing binary is reported (such a figure is skipped without failing the run).
pub const NOT_AVAILABLE: &str = "not available";

/// One benchmark: adds its rows (and charts) to the report.
type BenchFn = fn(&Ctx, &mut report::Report) -> Result<(), String>;

const BENCHES: [(&str, BenchFn); 11] = [
    ("version", chain::run_version),
    ("chain", chain::run_latency),
    ("parallel", chain::run_parallel),
    ("portmap", portmap::run),
    ("host-local", hostlocal::run),
    ("proxy-ready", proxy::run_ready),
    ("proxy-tcp", proxy::run_tcp_throughput),
    ("proxy-udp", proxy::run_udp),
    ("proxy-cps", proxy::run_cps),
    ("proxy-idle", proxy::run_idle_rss),
    ("proxy-mappings", proxy::run_mappings),
];

fn main() {
    let args = Args::parse();
    if args.list {
        for (name, _) in BENCHES {
            println!("{name}");
        }
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "ferry-bench creates network namespaces, bridges and firewall rules: run it as root"
        );
        std::process::exit(2);
    }
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let ctx = Ctx {
        reps: args.reps.unwrap_or(if args.quick { 10 } else { 30 }).max(1),
        warmup: 2,
        quick: args.quick,
        ferry_bin: abs(&args.ferry_bin),
        reference_bin: abs(&args.reference_bin),
        docker_proxy: args.docker_proxy.clone(),
    };
    sys::install_signal_flag();
    sys::sweep_stale_namespaces();
    sys::raise_nofile();
    report::elapsed();
    let mut report = report::Report::default();
    let selected: Vec<_> = BENCHES
        .iter()
        .filter(|(name, _)| args.only.as_deref().is_none_or(|o| name.contains(o)))
        .collect();
    if selected.is_empty() {
        eprintln!("bench: --only matches no benchmark (see --list)");
        std::process::exit(2);
    }
    for (i, (name, f)) in selected.iter().enumerate() {
        sys::settle_deferred_deletes();
        report::progress(&format!("[{}/{}] {name}", i + 1, selected.len()));
        if let Err(e) = f(&ctx, &mut report) {
            report::progress(&format!("{name}: not measured: {e}"));
            report.failed(name, &e);
        }
        if sys::check_interrupted().is_err() {
            break;
        }
    }
    let header =
        format!(
        "`ferry-bench{}` at {} UTC, commit {}, on {} ({} CPUs), {} repetitions per point (+{} warm-up), {:.0} s in all. \
         ferry: {}; reference: {}; docker-proxy: {}.",
        if args.quick { " --quick" } else { "" },
        sys::run("date", &["-u", "+%Y-%m-%d %H:%M"]).unwrap_or_default().trim(),
        sys::run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default().trim(),
        hostname(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        ctx.reps,
        ctx.warmup,
        report::elapsed(),
        ctx.ferry_bin.display(),
        ctx.reference_bin.display(),
        ctx.docker_proxy.display(),
    );
    match report.write(&args.out, &header) {
        Ok(text) => {
            println!("{text}");
            report::progress(&format!(
                "report written to {}",
                args.out.join("report.md").display()
            ));
        }
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
    if report.has_errors() {
        std::process::exit(1);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}
