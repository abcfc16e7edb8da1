//! `host-local`: ferry's drop-in for the reference host-local IPAM plugin.

fn main() {
    cni::skel::run(
        "CNI host-local IPAM plugin (ferry)",
        &host_local::plugin::HostLocal,
    )
}
