//! The report: one table per section, ferry beside its anchor with the ratio and the issue's
//! target, plus SVG charts for the scaling curves.

use crate::exec::Stats;
use std::fmt::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

/// Whether a smaller or a larger number is the good direction (for reading the ratio).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Latency, memory.
    Lower,
    /// Throughput, rates.
    Higher,
}

/// One measured figure.
pub struct Row {
    /// Section (e.g. "portmap").
    pub section: String,
    /// What was measured.
    pub figure: String,
    /// Unit of every number in the row ("ms", "Gbit/s", …).
    pub unit: &'static str,
    /// Good direction.
    pub better: Better,
    /// ferry's numbers; None when ferry's piece is not available (see `note`).
    pub ferry: Option<Stats>,
    /// The anchor's name and numbers.
    pub anchor: Option<(String, Stats)>,
    /// The physical limit (kernel path) where one exists.
    pub limit: Option<Stats>,
    /// The target, as text.
    pub target: String,
    /// Anything the reader needs (what was not available, how it was measured).
    pub note: String,
}

impl Row {
    /// A row with ferry and anchor, no limit, no note.
    pub fn pair(
        section: &str,
        figure: impl Into<String>,
        unit: &'static str,
        better: Better,
        ferry: Stats,
        anchor: (&str, Stats),
        target: &str,
    ) -> Row {
        Row {
            section: section.into(),
            figure: figure.into(),
            unit,
            better,
            ferry: Some(ferry),
            anchor: Some((anchor.0.into(), anchor.1)),
            limit: None,
            target: target.into(),
            note: String::new(),
        }
    }

    /// ferry ÷ anchor of the medians.
    pub fn ratio(&self) -> Option<f64> {
        let f = self.ferry?;
        let a = self.anchor.as_ref()?.1;
        (a.median.abs() > 1e-12 && f.median.is_finite()).then(|| f.median / a.median)
    }
}

/// One scaling curve per implementation: x = a count, y = median with a p10–p90 bar.
pub struct Chart {
    /// Section the chart belongs under.
    pub section: String,
    /// File name under the output directory (…svg).
    pub file: String,
    /// Title.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// (implementation, points).
    pub series: Vec<(String, Vec<(f64, Stats)>)>,
}

/// All rows and charts of a run.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    charts: Vec<Chart>,
    notes: Vec<(String, String)>,
    failures: Vec<String>,
    errors: usize,
}

/// Seconds since the bench started, for progress lines.
pub fn elapsed() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// A progress line on stderr.
pub fn progress(msg: &str) {
    eprintln!("[{:7.1}s] {msg}", elapsed());
}

/// Numbers with as many decimals as they need.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn spread(st: &Stats, unit: &str) -> String {
    if st.n <= 1 {
        return format!("{} {unit}", num(st.median));
    }
    format!(
        "{} {unit} ({}–{})",
        num(st.median),
        num(st.p10),
        num(st.p90)
    )
}

impl Report {
    /// Add a row and print a progress line.
    pub fn push(&mut self, row: Row) {
        let f = row
            .ferry
            .map(|s| format!("{} {}", num(s.median), row.unit))
            .unwrap_or_else(|| "not available".into());
        let a = row
            .anchor
            .as_ref()
            .map(|(n, s)| format!(", {n} {} {}", num(s.median), row.unit))
            .unwrap_or_default();
        let r = row
            .ratio()
            .map(|r| format!(", ratio {r:.3}"))
            .unwrap_or_default();
        progress(&format!(
            "  {} / {}: ferry {f}{a}{r}",
            row.section, row.figure
        ));
        self.rows.push(row);
    }

    /// Add a chart (written with the report).
    pub fn chart(&mut self, chart: Chart) {
        self.charts.push(chart);
    }

    /// A paragraph under a section's table (how something was set up).
    pub fn note(&mut self, section: &str, text: String) {
        progress(&format!("  {section}: {text}"));
        self.notes.push((section.into(), text));
    }

    /// Note a benchmark that failed (it shows in the report).
    pub fn failed(&mut self, name: &str, err: &str) {
        if !err.contains(crate::NOT_AVAILABLE) {
            self.errors += 1;
        }
        self.failures.push(format!("{name}: {err}"));
    }

    /// Whether a benchmark failed for another reason than a missing piece (a piece that is
    /// not built or not installed is reported as not available, not as a failure).
    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }

    /// Write report.md and the charts into `out`.
    pub fn write(&self, out: &Path, header: &str) -> Result<String, String> {
        std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
        let mut chart_errors = Vec::new();
        for c in &self.charts {
            if let Err(e) = crate::chart::draw(&out.join(&c.file), c) {
                chart_errors.push(format!("{}: {e}", c.file));
            }
        }
        let text = self.markdown(header, &chart_errors);
        std::fs::write(out.join("report.md"), &text)
            .map_err(|e| format!("writing report.md: {e}"))?;
        std::fs::write(out.join("report.json"), self.json(header).to_string())
            .map_err(|e| format!("writing report.json: {e}"))?;
        Ok(text)
    }

    /// The same rows for scripts (README updates, comparisons between runs).
    fn json(&self, header: &str) -> serde_json::Value {
        let st = |s: &Stats| serde_json::json!({"median": s.median, "p10": s.p10, "p90": s.p90, "n": s.n});
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "section": r.section, "figure": r.figure, "unit": r.unit,
                    "ferry": r.ferry.as_ref().map(st),
                    "anchor": r.anchor.as_ref().map(|(n, s)| serde_json::json!({"name": n, "stats": st(s)})),
                    "kernel_path": r.limit.as_ref().map(st),
                    "ratio": r.ratio(), "target": r.target, "note": r.note,
                })
            })
            .collect();
        serde_json::json!({"header": header, "rows": rows, "not_measured": self.failures})
    }

    fn markdown(&self, header: &str, chart_errors: &[String]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# ferry benchmark report\n\n{header}\n");
        let _ = writeln!(
            s,
            "Every figure: median (p10–p90) over the repetitions; ferry and its anchor measured \
             in the same run, interleaved. Ratio = ferry ÷ anchor (for times and memory below 1 \
             is better, for rates above 1 is better).\n"
        );
        let mut sections: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !sections.contains(&r.section.as_str()) {
                sections.push(&r.section);
            }
        }
        for section in sections {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.section == section).collect();
            let with_limit = rows.iter().any(|r| r.limit.is_some());
            let _ = writeln!(s, "\n## {section}\n");
            let _ = writeln!(
                s,
                "| figure | ferry | anchor | anchor's figure | ratio |{} target | note |",
                if with_limit { " kernel path |" } else { "" }
            );
            let _ = writeln!(
                s,
                "|---|---|---|---|---|{}---|---|",
                if with_limit { "---|" } else { "" }
            );
            for r in rows {
                let f = r
                    .ferry
                    .map(|st| spread(&st, r.unit))
                    .unwrap_or_else(|| "not available".into());
                let (an, av) = match &r.anchor {
                    Some((n, st)) => (n.clone(), spread(st, r.unit)),
                    None => ("—".into(), "—".into()),
                };
                let ratio = r
                    .ratio()
                    .map(|x| {
                        let good = match r.better {
                            Better::Lower => x < 1.0,
                            Better::Higher => x > 1.0,
                        };
                        format!("{}{}", num(x), if good { "" } else { " ⚠" })
                    })
                    .unwrap_or_else(|| "—".into());
                let limit = if with_limit {
                    format!(
                        " {} |",
                        r.limit
                            .map(|st| spread(&st, r.unit))
                            .unwrap_or_else(|| "—".into())
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "| {} | {f} | {an} | {av} | {ratio} |{limit} {} | {} |",
                    r.figure, r.target, r.note
                );
            }
            for (_, text) in self.notes.iter().filter(|(sec, _)| sec == section) {
                let _ = writeln!(s, "\n{text}");
            }
            for c in self.charts.iter().filter(|c| c.section == section) {
                let _ = writeln!(s, "\n![{}]({})", c.title, c.file);
            }
        }
        if !self.failures.is_empty() || !chart_errors.is_empty() {
            let _ = writeln!(s, "\n## Not measured\n");
            for f in self.failures.iter().chain(chart_errors) {
                let _ = writeln!(s, "- {}", f.replace('\n', " "));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::stats;

    #[test]
    fn numbers_keep_significant_digits() {
        assert_eq!(num(12345.6), "12346");
        assert_eq!(num(123.45), "123.5");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.01234), "0.012");
        assert_eq!(num(f64::NAN), "n/a");
    }

    #[test]
    fn table_marks_the_wrong_direction_and_missing_pieces() {
        let mut r = Report::default();
        r.push(Row::pair(
            "s",
            "fast",
            "ms",
            Better::Lower,
            stats(vec![1.0]),
            ("ref", stats(vec![4.0])),
            "≤ 0.25",
        ));
        r.push(Row::pair(
            "s",
            "rate",
            "x/s",
            Better::Higher,
            stats(vec![1.0]),
            ("ref", stats(vec![2.0])),
            "",
        ));
        let mut missing = Row::pair(
            "s",
            "gone",
            "MiB",
            Better::Lower,
            stats(vec![1.0]),
            ("ref", stats(vec![2.0])),
            "",
        );
        missing.ferry = None;
        r.push(missing);
        r.failed("proxy-udp", "x not available (…)");
        let md = r.markdown("h", &[]);
        assert!(
            md.contains("| fast | 1.00 ms | ref | 4.00 ms | 0.250 | ≤ 0.25 |  |"),
            "{md}"
        );
        assert!(
            md.contains("| rate | 1.00 x/s | ref | 2.00 x/s | 0.500 ⚠ |"),
            "{md}"
        );
        assert!(md.contains("| gone | not available | ref |"), "{md}");
        assert!(md.contains("## Not measured"));
        assert!(!r.has_errors(), "a missing binary is not an error");
        r.failed("chain", "bridge ADD failed");
        assert!(r.has_errors());
    }
}
