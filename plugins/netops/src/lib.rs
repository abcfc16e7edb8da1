//! Network plumbing for ferry's plugins: namespaces, links, addresses, routes and sysctls,
//! all through rtnetlink (never by running `ip`).
//!
//! The one rule: only [`Netns::run`] calls setns, on a thread of its own that ends with
//! the closure. Container-side work goes through a [`Netlink`] socket opened inside the
//! container's namespace ([`Netlink::in_netns`]).

pub mod error;
pub mod netlink;
pub mod netns;
pub mod sysctl;

pub use error::{code, Error, Result};
pub use netlink::{format_mac, parse_mac, Addr, Link, LinkKind, Netlink, Route, VethSpec};
pub use netns::Netns;
