//! ferry-proxy beside docker-proxy (placeholder until the proxy figures land).
use crate::report::Report;
use crate::Ctx;
pub fn run_ready(_: &Ctx, _: &mut Report) -> Result<(), String> {
    Err("todo".into())
}
pub fn run_tcp_throughput(_: &Ctx, _: &mut Report) -> Result<(), String> {
    Err("todo".into())
}
pub fn run_udp(_: &Ctx, _: &mut Report) -> Result<(), String> {
    Err("todo".into())
}
pub fn run_cps(_: &Ctx, _: &mut Report) -> Result<(), String> {
    Err("todo".into())
}
pub fn run_idle_rss(_: &Ctx, _: &mut Report) -> Result<(), String> {
    Err("todo".into())
}
pub fn run_mappings(_: &Ctx, _: &mut Report) -> Result<(), String> {
    Err("todo".into())
}
