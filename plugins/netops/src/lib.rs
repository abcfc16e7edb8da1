//! Network plumbing for ferry's plugins: namespaces, links, addresses, routes and sysctls,
//! all through rtnetlink (never by running `ip`).
//!
//! The one rule: only [`Netns::run`] and [`Netns::run_here`] call setns, for the length of
//! one closure. Container-side work goes through a [`Netlink`] socket opened inside the
//! container's namespace ([`Netlink::in_netns`]).

pub mod error;
pub mod netlink;
pub mod netns;
pub mod sysctl;

pub use error::{code, Error, Result};
pub use netlink::{format_mac, parse_mac, Addr, Link, LinkKind, Netlink, Route, VethSpec};
pub use netns::Netns;
