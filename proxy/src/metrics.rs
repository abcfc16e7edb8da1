//! Per-mapping counters, updated lock-free on the data path and rendered in Prometheus text
//! format by `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for one mapping (all ports of a range share one set).
#[derive(Debug, Default)]
pub struct MappingStats {
    /// TCP connections currently being forwarded.
    pub active_connections: AtomicU64,
    /// TCP connections accepted and forwarded since the mapping was added.
    pub total_connections: AtomicU64,
    /// Connections refused: per-mapping cap reached or out of file descriptors.
    pub refused_connections: AtomicU64,
    /// Bytes from clients to the backend (TCP and UDP).
    pub bytes_to_backend: AtomicU64,
    /// Bytes from the backend to clients (TCP and UDP).
    pub bytes_to_client: AtomicU64,
    /// UDP flows currently in the flow table.
    pub udp_flows_active: AtomicU64,
    /// UDP flows created since the mapping was added.
    pub udp_flows_total: AtomicU64,
    /// UDP flows evicted because the table was full.
    pub udp_flows_evicted: AtomicU64,
    /// Errors: backend connect failures, resets, dropped datagrams, accept failures.
    pub errors: AtomicU64,
}

impl MappingStats {
    /// Adds `n` to a counter (relaxed: these are statistics, not synchronisation).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Decrements a gauge when dropped, so a gauge stays right even when a task is aborted.
pub struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    /// Increments `gauge` now and decrements it on drop.
    pub fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once a mapping's close signal is true (or its sender is gone).
pub async fn closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

/// Labels that identify a mapping in the metrics.
#[derive(Debug, Clone)]
pub struct MappingLabels {
    /// Mapping id.
    pub id: String,
    /// Owner (container ID).
    pub owner: String,
    /// `tcp` or `udp`.
    pub proto: String,
}

/// Escapes a label value per the Prometheus text format.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every mapping's counters, one metric family at a time (as the format requires).
pub fn render(mappings: &[(MappingLabels, &MappingStats)]) -> String {
    type Field = fn(&MappingStats) -> &AtomicU64;
    let families: [(&str, &str, &str, Field); 9] = [
        (
            "ferry_proxy_connections_active",
            "gauge",
            "TCP connections being forwarded",
            |s| &s.active_connections,
        ),
        (
            "ferry_proxy_connections_total",
            "counter",
            "TCP connections accepted and forwarded",
            |s| &s.total_connections,
        ),
        (
            "ferry_proxy_connections_refused_total",
            "counter",
            "TCP connections refused (cap reached or out of file descriptors)",
            |s| &s.refused_connections,
        ),
        (
            "ferry_proxy_bytes_to_backend_total",
            "counter",
            "bytes forwarded from clients to the backend",
            |s| &s.bytes_to_backend,
        ),
        (
            "ferry_proxy_bytes_to_client_total",
            "counter",
            "bytes forwarded from the backend to clients",
            |s| &s.bytes_to_client,
        ),
        (
            "ferry_proxy_udp_flows_active",
            "gauge",
            "UDP flows in the flow table",
            |s| &s.udp_flows_active,
        ),
        (
            "ferry_proxy_udp_flows_total",
            "counter",
            "UDP flows created",
            |s| &s.udp_flows_total,
        ),
        (
            "ferry_proxy_udp_flows_evicted_total",
            "counter",
            "UDP flows evicted because the flow table was full",
            |s| &s.udp_flows_evicted,
        ),
        (
            "ferry_proxy_errors_total",
            "counter",
            "errors (backend connect failures, resets, dropped datagrams, accept failures)",
            |s| &s.errors,
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ferry_proxy_mappings mappings served by this process\n# TYPE ferry_proxy_mappings gauge\nferry_proxy_mappings {}",
        mappings.len()
    );
    for (name, kind, help, field) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, stats) in mappings {
            let _ = writeln!(
                out,
                "{name}{{mapping=\"{}\",owner=\"{}\",proto=\"{}\"}} {}",
                escape_label(&labels.id),
                escape_label(&labels.owner),
                escape_label(&labels.proto),
                field(stats).load(Ordering::Relaxed)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_labels() {
        let stats = MappingStats::default();
        MappingStats::add(&stats.bytes_to_backend, 42);
        {
            let _g = GaugeGuard::new(&stats.active_connections);
            assert_eq!(MappingStats::get(&stats.active_connections), 1);
        }
        let labels = MappingLabels {
            id: "web".into(),
            owner: "c\"1".into(),
            proto: "tcp".into(),
        };
        let text = render(&[(labels, &stats)]);
        assert!(text.contains("# TYPE ferry_proxy_bytes_to_backend_total counter"));
        assert!(text.contains(
            "ferry_proxy_bytes_to_backend_total{mapping=\"web\",owner=\"c\\\"1\",proto=\"tcp\"} 42"
        ));
        assert!(text.contains("ferry_proxy_connections_active{mapping=\"web\""));
        assert!(text.contains("ferry_proxy_mappings 1"));
    }
}
