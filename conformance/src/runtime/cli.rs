//! The cnitool-compatible verbs.

use crate::cli::{NetworkArgs, RuntimeArgs};
use std::path::Path;

/// `ferry add`.
pub fn add(_a: &RuntimeArgs) -> i32 {
    eprintln!("ferry add: not implemented yet");
    2
}
/// `ferry del`.
pub fn del(_a: &RuntimeArgs) -> i32 {
    eprintln!("ferry del: not implemented yet");
    2
}
/// `ferry check`.
pub fn check(_a: &RuntimeArgs) -> i32 {
    eprintln!("ferry check: not implemented yet");
    2
}
/// `ferry gc`.
pub fn gc(_a: &NetworkArgs) -> i32 {
    eprintln!("ferry gc: not implemented yet");
    2
}
/// `ferry status`.
pub fn status(_a: &NetworkArgs) -> i32 {
    eprintln!("ferry status: not implemented yet");
    2
}
/// `ferry ports`.
pub fn ports(_c: Option<&str>, _d: &Path) -> i32 {
    eprintln!("ferry ports: not implemented yet");
    2
}
