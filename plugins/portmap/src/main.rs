//! `portmap`: forwards host ports to a container (chained CNI plugin, drop-in for the
//! reference `portmap`).

mod config;
mod conntrack;
mod host;
mod ipt;
mod netlink;
mod nft;
mod plugin;
mod rules;
mod sockets;
mod state;
mod userland;

fn main() {
    cni::skel::run(
        "ferry portmap: host port forwarding with iptables or nftables",
        &plugin::Portmap,
    )
}
