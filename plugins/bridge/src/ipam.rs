//! Reaching the IPAM plugin: ferry's own host-local runs inside this process, anything
//! else is executed from CNI_PATH as the spec describes.
//!
//! Starting a second process is the largest single cost of a bridge ADD (fork of a
//! multi-threaded process, exec, the delegate's own start-up, a JSON round trip). When the
//! `host-local` that a CNI_PATH lookup would run sits in the same directory as this very
//! `bridge` binary, it is ferry's own build from the same install, so its library is called
//! directly: same code, same on-disk state, same errors, one process less. A `host-local`
//! found anywhere else (the reference plugin, a wrapper, a newer or older build) is
//! executed exactly as before, so the lookup order of CNI_PATH keeps its meaning.

use std::path::{Path, PathBuf};

use cni::error::Result;
use cni::invoke;
use cni::result::CniResult;
use cni::skel::{Plugin, Request};
use host_local::plugin::HostLocal;

/// The IPAM type that may run in process.
const HOST_LOCAL: &str = "host-local";

/// How this request reaches its IPAM plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipam {
    /// ferry's host-local, called as a library.
    InProcess,
    /// Any other plugin (or a host-local that is not ours): exec'd from CNI_PATH.
    Exec(String),
}

impl Ipam {
    /// Decides for `ipam_type` and the request's CNI_PATH. Any doubt (lookup fails, paths
    /// cannot be resolved) means exec, which reports lookup errors as it always did.
    pub fn select(ipam_type: &str, req: &Request) -> Ipam {
        // The kernel's link is already the resolved path of the running binary.
        let own_exe = std::fs::read_link("/proc/self/exe").ok();
        if ipam_type == HOST_LOCAL && is_our_build(ipam_type, &req.env.path, own_exe.as_deref()) {
            Ipam::InProcess
        } else {
            Ipam::Exec(ipam_type.to_string())
        }
    }

    /// IPAM ADD. The in-process result goes through the same JSON rendering and parsing as
    /// an exec'd plugin's stdout, so both paths give the bridge the same result.
    pub fn add(&self, req: &Request) -> Result<CniResult> {
        match self {
            Ipam::InProcess => {
                let result = HostLocal.add(req)?;
                let version = req.conf.cni_version;
                CniResult::from_json(&result.to_json(version)?, version)
            }
            Ipam::Exec(t) => invoke::delegate_add(t, req),
        }
    }

    /// IPAM DEL.
    pub fn del(&self, req: &Request) -> Result<()> {
        match self {
            Ipam::InProcess => HostLocal.del(req),
            Ipam::Exec(t) => invoke::delegate_del(t, req),
        }
    }

    /// IPAM CHECK.
    pub fn check(&self, req: &Request) -> Result<()> {
        match self {
            Ipam::InProcess => HostLocal.check(req),
            Ipam::Exec(t) => invoke::delegate_check(t, req),
        }
    }
}

/// True when the `plugin` that CNI_PATH resolves to is, after resolving symlinks, a file
/// in the directory of `own_exe` (this bridge binary). "The same directory" means the same
/// inode, whatever path leads there; only a symlinked plugin file needs its target
/// resolved (fewer system calls than resolving every path component).
fn is_our_build(plugin: &str, cni_path: &[PathBuf], own_exe: Option<&Path>) -> bool {
    let Some(own_dir) = own_exe.and_then(Path::parent) else {
        return false;
    };
    let Ok(found) = invoke::find_in_path(plugin, cni_path) else {
        return false;
    };
    let real = match std::fs::symlink_metadata(&found) {
        Ok(m) if !m.file_type().is_symlink() => found,
        Ok(_) => match std::fs::canonicalize(&found) {
            Ok(real) => real,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    real.parent().is_some_and(|dir| same_dir(dir, own_dir))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // an empty parent means the current directory
    let a = if a.as_os_str().is_empty() {
        Path::new(".")
    } else {
        a
    };
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        d
    }

    #[test]
    fn host_local_beside_our_binary_runs_in_process() {
        let install = dir_with(&["bridge", "host-local"]);
        let exe = std::fs::canonicalize(install.path().join("bridge")).unwrap();
        assert!(is_our_build(
            "host-local",
            &[install.path().into()],
            Some(&exe)
        ));
        // through a symlink in another CNI_PATH directory: still our build
        let links = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            install.path().join("host-local"),
            links.path().join("host-local"),
        )
        .unwrap();
        assert!(is_our_build(
            "host-local",
            &[links.path().into()],
            Some(&exe)
        ));
        // through a symlinked directory on CNI_PATH: the same directory, so ours too
        let dir_link = links.path().join("bin");
        std::os::unix::fs::symlink(install.path(), &dir_link).unwrap();
        assert!(is_our_build("host-local", &[dir_link], Some(&exe)));
    }

    #[test]
    fn host_local_found_elsewhere_first_is_executed() {
        let install = dir_with(&["bridge", "host-local"]);
        let other = dir_with(&["host-local"]);
        let exe = std::fs::canonicalize(install.path().join("bridge")).unwrap();
        // CNI_PATH order decides: the other directory comes first
        assert!(!is_our_build(
            "host-local",
            &[other.path().into(), install.path().into()],
            Some(&exe)
        ));
        // a symlink beside our binary that points at another host-local: exec
        let beside = dir_with(&["bridge"]);
        std::os::unix::fs::symlink(
            other.path().join("host-local"),
            beside.path().join("host-local"),
        )
        .unwrap();
        let exe2 = std::fs::canonicalize(beside.path().join("bridge")).unwrap();
        assert!(!is_our_build(
            "host-local",
            &[beside.path().into()],
            Some(&exe2)
        ));
        // not on CNI_PATH at all: exec (which reports the lookup error)
        assert!(!is_our_build("host-local", &[], Some(&exe)));
        assert!(!is_our_build("host-local", &[install.path().into()], None));
    }
}
