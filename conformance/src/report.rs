//! Checks, verdicts and the three renderings of a harness run (table, JSON, Markdown).
//!
//! A check's verdict depends on the checklist level of the item and on the profile: the
//! same observation ("the plugin did not do what skel does") is INFO under `spec` and a
//! FAIL under `reference`. Keeping that mapping here means the checks themselves only say
//! what they saw.

use serde::Serialize;
use std::fmt::Write as _;

/// The checklist level of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Level {
    /// MUST.
    M,
    /// SHOULD.
    S,
    /// MAY.
    O,
    /// Not in the spec, but what the Go reference does.
    R,
}

/// What a finished check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Info,
    Skip,
    Warn,
    Fail,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Warn => "WARN",
            Verdict::Info => "INFO",
            Verdict::Skip => "SKIP",
        }
    }
}

/// Which plugins the run must match: the spec alone, or the Go reference bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Spec,
    Reference,
}

/// What a check observed, before the level and profile turn it into a verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Pass(String),
    /// The item was not met; the level decides how bad that is.
    Violated(String),
    /// Reported as WARN whatever the level (the checklist says so for this case).
    Warn(String),
    /// Reported as INFO whatever the level.
    Info(String),
    Skip(String),
}

impl Finding {
    /// Passes when `ok`, else a violation with `why`.
    pub fn expect(ok: bool, pass: impl Into<String>, why: impl Into<String>) -> Finding {
        if ok {
            Finding::Pass(pass.into())
        } else {
            Finding::Violated(why.into())
        }
    }

    /// Folds a list of problems: pass when there are none, else a violation listing them.
    pub fn from_problems(problems: &[String], pass: impl Into<String>) -> Finding {
        if problems.is_empty() {
            Finding::Pass(pass.into())
        } else {
            let shown: Vec<&str> = problems.iter().take(4).map(String::as_str).collect();
            let more = if problems.len() > 4 {
                format!(" (+{} more)", problems.len() - 4)
            } else {
                String::new()
            };
            Finding::Violated(format!("{}{more}", shown.join("; ")))
        }
    }
}

/// One named check in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Checklist item, e.g. `1.4`.
    pub id: String,
    pub level: Level,
    /// The plugin under test (or `runtime`).
    pub plugin: String,
    /// Short description of what was checked.
    pub name: String,
    pub verdict: Verdict,
    pub reason: String,
    /// A FAIL the caller declared as a known deviation (`--known-deviation`): reported,
    /// but it does not make the run fail.
    pub known_deviation: bool,
}

impl Check {
    /// The verdict as printed: a known deviation is marked `FAIL*`.
    pub fn verdict_text(&self) -> &'static str {
        if self.known_deviation {
            "FAIL*"
        } else {
            self.verdict.as_str()
        }
    }
}

/// Turns a finding into a verdict for the given level and profile.
pub fn verdict_for(level: Level, finding: &Finding, profile: Profile) -> (Verdict, String) {
    match finding {
        Finding::Pass(r) => (Verdict::Pass, r.clone()),
        Finding::Warn(r) => (Verdict::Warn, r.clone()),
        Finding::Info(r) => (Verdict::Info, r.clone()),
        Finding::Skip(r) => (Verdict::Skip, r.clone()),
        Finding::Violated(r) => {
            let v = match (level, profile) {
                (Level::M, _) => Verdict::Fail,
                (Level::S, _) => Verdict::Warn,
                (Level::R, Profile::Reference) => Verdict::Fail,
                (Level::R, Profile::Spec) | (Level::O, _) => Verdict::Info,
            };
            (v, r.clone())
        }
    }
}

/// All checks of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plugins_dir: String,
    pub profile: Profile,
    pub checks: Vec<Check>,
    /// `ID` or `ID:plugin` entries whose FAILs are expected.
    #[serde(skip)]
    pub known: Vec<String>,
}

impl Report {
    /// An empty report.
    pub fn new(plugins_dir: &str, profile: Profile) -> Report {
        Report {
            plugins_dir: plugins_dir.to_string(),
            profile,
            checks: Vec::new(),
            known: Vec::new(),
        }
    }

    /// Records one check.
    pub fn add(&mut self, id: &str, level: Level, plugin: &str, name: &str, finding: Finding) {
        let (verdict, reason) = verdict_for(level, &finding, self.profile);
        let known_deviation = verdict == Verdict::Fail
            && self
                .known
                .iter()
                .any(|k| k == id || *k == format!("{id}:{plugin}"));
        self.checks.push(Check {
            known_deviation,
            id: id.to_string(),
            level,
            plugin: plugin.to_string(),
            name: name.to_string(),
            verdict,
            reason,
        });
    }

    /// True when nothing FAILed: the harness exits 0 then.
    pub fn passed(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| c.verdict == Verdict::Fail && !c.known_deviation)
    }

    /// Checks with the given verdict.
    pub fn with_verdict(&self, v: Verdict) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.verdict == v).collect()
    }

    /// Counts per verdict, in a fixed order.
    pub fn counts(&self) -> [(Verdict, usize); 5] {
        let n = |v| self.checks.iter().filter(|c| c.verdict == v).count();
        [
            (Verdict::Pass, n(Verdict::Pass)),
            (Verdict::Fail, n(Verdict::Fail)),
            (Verdict::Warn, n(Verdict::Warn)),
            (Verdict::Info, n(Verdict::Info)),
            (Verdict::Skip, n(Verdict::Skip)),
        ]
    }

    fn summary_line(&self) -> String {
        let parts: Vec<String> = self
            .counts()
            .iter()
            .map(|(v, n)| format!("{n} {}", v.as_str()))
            .collect();
        format!(
            "{} checks: {} (profile {:?}, plugins {})",
            self.checks.len(),
            parts.join(", "),
            self.profile,
            self.plugins_dir
        )
    }

    /// A terminal table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let w_id = 5;
        let w_plugin = self
            .checks
            .iter()
            .map(|c| c.plugin.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let w_name = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(5)
            .clamp(5, 60);
        let _ = writeln!(
            out,
            "{:<w_id$} {:<3} {:<w_plugin$} {:<w_name$} {:<7} REASON",
            "ID", "LVL", "PLUGIN", "CHECK", "VERDICT"
        );
        for c in &self.checks {
            let name = crate::exec::truncate(&c.name, w_name);
            let _ = writeln!(
                out,
                "{:<w_id$} {:<3} {:<w_plugin$} {:<w_name$} {:<7} {}",
                c.id,
                format!("{:?}", c.level),
                c.plugin,
                name,
                c.verdict_text(),
                crate::exec::truncate(&c.reason.replace('\n', " "), 200)
            );
        }
        let _ = writeln!(out, "\n{}", self.summary_line());
        out
    }

    /// JSON (one object with every check).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A Markdown table, for the README and CI logs.
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = String::new();
        let _ = writeln!(out, "| id | level | plugin | check | verdict | reason |");
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "| {} | {:?} | {} | {} | {} | {} |",
                c.id,
                c.level,
                esc(&c.plugin),
                esc(&c.name),
                c.verdict_text(),
                esc(&crate::exec::truncate(&c.reason, 300))
            );
        }
        let _ = writeln!(out, "\n{}", self.summary_line());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violated_r_is_info_for_spec_and_fail_for_reference() {
        let f = Finding::Violated("x".into());
        assert_eq!(verdict_for(Level::R, &f, Profile::Spec).0, Verdict::Info);
        assert_eq!(
            verdict_for(Level::R, &f, Profile::Reference).0,
            Verdict::Fail
        );
        assert_eq!(verdict_for(Level::M, &f, Profile::Spec).0, Verdict::Fail);
        assert_eq!(
            verdict_for(Level::S, &f, Profile::Reference).0,
            Verdict::Warn
        );
        assert_eq!(
            verdict_for(Level::O, &f, Profile::Reference).0,
            Verdict::Info
        );
    }

    #[test]
    fn known_deviation_is_reported_but_does_not_fail_the_run() {
        let mut r = Report::new("/x", Profile::Spec);
        r.known = vec!["2.27:bridge".into()];
        r.add(
            "2.27",
            Level::M,
            "bridge",
            "n",
            Finding::Violated("no GC".into()),
        );
        assert!(r.passed());
        assert_eq!(r.checks[0].verdict_text(), "FAIL*");
        r.add(
            "2.27",
            Level::M,
            "host-local",
            "n",
            Finding::Violated("no GC".into()),
        );
        assert!(!r.passed());
    }

    #[test]
    fn report_fails_only_on_fail() {
        let mut r = Report::new("/x", Profile::Spec);
        r.add("1.1", Level::S, "p", "n", Finding::Violated("w".into()));
        assert!(r.passed());
        r.add("1.1", Level::M, "p", "n", Finding::Violated("f".into()));
        assert!(!r.passed());
        assert!(r.to_markdown().contains("| 1.1 | M | p | n | FAIL | f |"));
    }
}
