//! The `ferry` command line: `conformance`, the cnitool-style verbs, and `ports`.

use crate::harness::{Harness, Options};
use crate::report::Profile;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Output format of a harness run.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    about = "CNI conformance harness and cnitool-compatible runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check the plugins in a directory against the CNI checklist.
    Conformance {
        /// Directory holding bridge, host-local and portmap.
        #[arg(long)]
        plugins: PathBuf,
        #[arg(long, value_enum, default_value = "spec")]
        profile: Profile,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Only run checks whose id starts with this (repeatable), e.g. `--only 2.6`.
        #[arg(long)]
        only: Vec<String>,
        /// A FAIL that is expected (`ID` or `ID:plugin`, repeatable): still reported, as
        /// `FAIL*`, but it does not make the exit status non-zero.
        #[arg(long = "known-deviation")]
        known_deviation: Vec<String>,
        /// Also write the report in this format to a file (e.g. for the README).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Add the container in NETNS to the network (like `cnitool add`).
    Add(RuntimeArgs),
    /// Remove the container from the network.
    Del(RuntimeArgs),
    /// Check the container's attachment.
    Check(RuntimeArgs),
    /// Garbage-collect the network: DEL every cached attachment, then GC each plugin.
    Gc(NetworkArgs),
    /// Ask every plugin of the network whether it can serve ADD.
    Status(NetworkArgs),
    /// Check that every plugin of the network exists and supports the list's version
    /// (libcni's ValidateNetworkList); prints each plugin's supported versions.
    Validate { network: String },
    /// List the port mappings of cached attachments (all, or one container's).
    Ports {
        /// A container ID, a netns path, or a network name.
        container: Option<String>,
        #[arg(long, env = "FERRY_CACHE_DIR", default_value = "/var/lib/cni")]
        cache_dir: PathBuf,
    },
}

/// Arguments of add/del/check.
#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    pub network: String,
    pub netns: PathBuf,
    /// Container interface name (default: CNI_IFNAME, then eth0).
    #[arg(short = 'i', long = "ifname")]
    pub ifname: Option<String>,
    /// Result cache directory (libcni's cacheDir).
    #[arg(long, env = "FERRY_CACHE_DIR", default_value = "/var/lib/cni")]
    pub cache_dir: PathBuf,
}

/// Arguments of gc/status (cnitool accepts a netns argument there too; it is ignored).
#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
    pub network: String,
    pub netns: Option<PathBuf>,
    #[arg(long, env = "FERRY_CACHE_DIR", default_value = "/var/lib/cni")]
    pub cache_dir: PathBuf,
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    let argv0 = std::env::args().next().unwrap_or_default();
    let base = std::path::Path::new(&argv0)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let scripted = base != "ferry" && std::env::var_os(crate::spy::SCRIPT_ENV).is_some();
    if base.starts_with("spy-") || scripted {
        crate::spy::main(&argv0);
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Conformance {
            plugins,
            profile,
            format,
            only,
            output,
            known_deviation,
        } => {
            let spy_exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("ferry: cannot find my own executable for the spies: {e}");
                    return 2;
                }
            };
            let opts = Options {
                plugins_dir: plugins,
                profile,
                spy_exe,
                only,
                known: known_deviation,
            };
            let harness = match Harness::new(opts) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("ferry conformance: {e}");
                    return 2;
                }
            };
            let report = harness.run();
            let text = match format {
                Format::Table => report.to_table(),
                Format::Json => report.to_json(),
                Format::Markdown => report.to_markdown(),
            };
            print!("{text}");
            if let Some(path) = output {
                if let Err(e) = std::fs::write(&path, &text) {
                    eprintln!("ferry conformance: writing {}: {e}", path.display());
                    return 2;
                }
            }
            if report.passed() {
                0
            } else {
                1
            }
        }
        Cmd::Add(a) => crate::runtime::cli::add(&a),
        Cmd::Del(a) => crate::runtime::cli::del(&a),
        Cmd::Check(a) => crate::runtime::cli::check(&a),
        Cmd::Gc(a) => crate::runtime::cli::gc(&a),
        Cmd::Status(a) => crate::runtime::cli::status(&a),
        Cmd::Validate { network } => crate::runtime::cli::validate(&network),
        Cmd::Ports {
            container,
            cache_dir,
        } => crate::runtime::cli::ports(container.as_deref(), &cache_dir),
    }
}
