//! The report: one row per figure, ferry beside its anchor, with the ratio.

use crate::exec::Stats;
use crate::Ctx;
use std::fmt::Write;

/// One measured figure.
pub struct Row {
    /// Section (e.g. "host-local").
    pub section: String,
    /// What was measured.
    pub figure: String,
    /// ferry's numbers.
    pub ferry: Stats,
    /// The anchor's numbers, with its name.
    pub anchor: Option<(String, Stats)>,
    /// The target, as text (e.g. "≤ 0.20").
    pub target: String,
}

/// All rows of a run.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

impl Report {
    /// Add a row and print a progress line.
    pub fn push(&mut self, row: Row) {
        let ratio = row
            .anchor
            .as_ref()
            .map(|(_, a)| format!(" ratio {:.3}", ratio(&row.ferry, a)))
            .unwrap_or_default();
        eprintln!(
            "bench:   {} / {}: ferry {}{}",
            row.section,
            row.figure,
            ms(row.ferry.median),
            ratio
        );
        self.rows.push(row);
    }

    /// The Markdown report.
    pub fn markdown(&self, ctx: &Ctx) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# ferry benchmark report\n\n{} repetitions per point{}; median (p10–p90). \
             Ratio = ferry ÷ anchor: below 1 means ferry is faster.\n",
            ctx.reps,
            if ctx.quick { " (--quick)" } else { "" }
        );
        let mut section = "";
        for r in &self.rows {
            if r.section != section {
                section = &r.section;
                let _ = writeln!(
                    s,
                    "\n## {section}\n\n| figure | ferry | anchor | anchor time | ratio | target |\n|---|---|---|---|---|---|"
                );
            }
            let (name, at, ratio_s) = match &r.anchor {
                Some((n, a)) => (n.as_str(), spread(a), format!("{:.3}", ratio(&r.ferry, a))),
                None => ("—", "—".into(), "—".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r.figure,
                spread(&r.ferry),
                name,
                at,
                ratio_s,
                r.target
            );
        }
        s
    }
}

fn spread(st: &Stats) -> String {
    format!(
        "{} ({:.2}–{:.2})",
        ms(st.median),
        st.p10.as_secs_f64() * 1e3,
        st.p90.as_secs_f64() * 1e3
    )
}

fn ratio(f: &Stats, a: &Stats) -> f64 {
    f.median.as_secs_f64() / a.median.as_secs_f64().max(1e-9)
}
