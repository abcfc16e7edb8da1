//! portmap ADD and DEL against N existing mappings, for ferry's two firewall backends beside
//! the reference plugin (Debian 1.1.1 has only iptables, so it is the anchor of both). Each
//! implementation gets its own throw-away network namespace, so rules never meet.
//!
//! Existing mappings are added cumulatively (0 → 100 → 500 → …) while the sizes grow:
//! - ferry: through ferry's own portmap in a loop (what a runtime would do; ferry's ADD is
//!   flat, so even 5,000 costs only seconds, and its port index stays consistent);
//! - reference: one real reference ADD (it creates the shared chains), then the rest in one
//!   `iptables-restore --noflush` batch written in exactly the reference's layout (its chain
//!   names, comments and rule order), because looping the reference itself would take
//!   minutes (its ADD grows with the rule count).
//!
//! Existing mappings use host ports 30000+i: rules inside the private namespace only,
//! nothing binds them. The measured mapping uses host port 29999.

use crate::exec::{stats, stats_ms, time_call, Call, Stats};
use crate::report::{progress, Better, Chart, Report, Row};
use crate::sys::{check_interrupted, Netns};
use crate::Ctx;
use serde_json::json;
use sha2::{Digest, Sha512};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECTION: &str = "portmap";
const NET: &str = "fbnbpm";
const CONTAINER_IP: &str = "10.213.133.5";

struct Impl {
    label: &'static str,
    bin: PathBuf,
    backend: Option<&'static str>,
    ns: Netns,
    existing: usize,
}

fn conf(backend: Option<&str>, port: u16) -> Vec<u8> {
    let mut v = json!({
        "cniVersion": "1.0.0", "name": NET, "type": "portmap",
        "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/fbnb-none"}],
            "ips": [{"address": format!("{CONTAINER_IP}/24"), "interface": 0}]}
    });
    if let Some(b) = backend {
        v["backend"] = json!(b);
    }
    v.to_string().into_bytes()
}

impl Impl {
    fn call(&self, command: &str, id: &str, port: u16) -> Result<Duration, String> {
        let env = [
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_NETNS", "/var/run/netns/fbnb-none".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
        ];
        let stdin = conf(self.backend, port);
        time_call(&Call {
            bin: &self.bin,
            command,
            env: &env,
            stdin: &stdin,
            netns: Some(self.ns.fd()),
        })
        .map_err(|e| format!("{}: {e}", self.label))
    }

    /// Bring the namespace to `n` existing mappings.
    fn populate(&mut self, n: usize) -> Result<(), String> {
        if self.existing >= n {
            return Ok(());
        }
        if self.backend.is_some() {
            for i in self.existing..n {
                if i % 500 == 0 {
                    check_interrupted()?;
                }
                self.call("ADD", &format!("fbnb-pop{i}"), 30000 + i as u16)?;
            }
        } else {
            let mut from = self.existing;
            if from == 0 {
                self.call("ADD", "fbnb-pop0", 30000)?;
                from = 1;
            }
            if from < n {
                reference_rules_restore(&self.ns, from, n)?;
            }
        }
        self.existing = n;
        Ok(())
    }
}

/// The reference's chain name for an attachment: `CNI-DN-` + sha512(name+id), 21 hex digits.
fn dn_chain(id: &str) -> String {
    let h = Sha512::digest(format!("{NET}{id}").as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("CNI-DN-{}", &hex[..21])
}

/// iptables-restore input for mappings `from..to` in the reference plugin's exact layout.
fn reference_rules_text(from: usize, to: usize) -> String {
    let mut decl = String::from("*nat\n");
    let mut rules = String::new();
    for i in from..to {
        let id = format!("fbnb-pop{i}");
        let chain = dn_chain(&id);
        let port = 30000 + i;
        decl.push_str(&format!(":{chain} - [0:0]\n"));
        rules.push_str(&format!(
            "-A {chain} -s 10.213.133.0/24 -p tcp -m tcp --dport {port} -j CNI-HOSTPORT-SETMARK\n\
             -A {chain} -s 127.0.0.1/32 -p tcp -m tcp --dport {port} -j CNI-HOSTPORT-SETMARK\n\
             -A {chain} -p tcp -m tcp --dport {port} -j DNAT --to-destination {CONTAINER_IP}:80\n\
             -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"{NET}\\\" id: \\\"{id}\\\"\" -m multiport --dports {port} -j {chain}\n"
        ));
    }
    format!("{decl}{rules}COMMIT\n")
}

/// Mappings `from..to` in the reference plugin's exact iptables layout, in one batch.
fn reference_rules_restore(ns: &Netns, from: usize, to: usize) -> Result<(), String> {
    let input = reference_rules_text(from, to);
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "iptables-restore",
            "--noflush",
            "-w",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.as_bytes())
            .map_err(|e| format!("iptables-restore stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-restore of the reference's mappings: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// All portmap figures.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    let ferry = ctx.ferry_bin.join("portmap");
    let reference = ctx.reference_bin.join("portmap");
    ctx.need(&[&ferry, &reference])?;
    let sizes: &[usize] = if ctx.quick {
        &[0, 100, 1000]
    } else {
        &[0, 100, 500, 1000, 5000]
    };
    let mut impls = [
        Impl {
            label: "ferry iptables",
            bin: ferry.clone(),
            backend: Some("iptables"),
            ns: Netns::create("pmi")?,
            existing: 0,
        },
        Impl {
            label: "ferry nftables",
            bin: ferry,
            backend: Some("nftables"),
            ns: Netns::create("pmn")?,
            existing: 0,
        },
        Impl {
            label: "reference (iptables)",
            bin: reference,
            backend: None,
            ns: Netns::create("pmr")?,
            existing: 0,
        },
    ];
    // [impl] -> (n, add, del)
    let mut curves: Vec<Vec<(f64, Stats, Stats)>> = vec![Vec::new(); impls.len()];
    let mut populate_notes = Vec::new();
    for &n in sizes {
        // The three namespaces are independent: fill them at the same time.
        check_interrupted()?;
        progress(&format!("portmap: installing up to {n} existing mappings"));
        let filled: Vec<Result<Option<String>, String>> = std::thread::scope(|scope| {
            let jobs: Vec<_> = impls
                .iter_mut()
                .map(|imp| {
                    scope.spawn(move || {
                        let start = Instant::now();
                        let before = imp.existing;
                        imp.populate(n)?;
                        Ok((n > before).then(|| {
                            format!(
                                "{} {}→{}: {:.1} s",
                                imp.label,
                                before,
                                n,
                                start.elapsed().as_secs_f64()
                            )
                        }))
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| {
                    j.join()
                        .unwrap_or_else(|_| Err("populate thread panicked".into()))
                })
                .collect()
        });
        for f in filled {
            populate_notes.extend(f?);
        }
        let reps = if n >= 1000 {
            ctx.reps.min(10)
        } else {
            ctx.reps
        };
        progress(&format!(
            "portmap: measuring at {n} existing mappings ({reps} reps)"
        ));
        let mut t: Vec<[Vec<Duration>; 2]> = vec![Default::default(); impls.len()];
        for r in 0..reps + ctx.warmup {
            check_interrupted()?;
            for (k, imp) in impls.iter().enumerate() {
                let id = format!("fbnb-m{r}");
                let a = imp.call("ADD", &id, 29999)?;
                let d = imp.call("DEL", &id, 29999)?;
                if r >= ctx.warmup {
                    t[k][0].push(a);
                    t[k][1].push(d);
                }
            }
        }
        let s: Vec<[Stats; 2]> = t
            .iter()
            .map(|x| [stats_ms(&x[0]), stats_ms(&x[1])])
            .collect();
        for (k, c) in curves.iter_mut().enumerate() {
            c.push((n as f64, s[k][0], s[k][1]));
        }
        let refs = s[impls.len() - 1];
        for (k, imp) in impls.iter().enumerate().take(impls.len() - 1) {
            for (j, verb) in ["ADD", "DEL"].iter().enumerate() {
                let target = if n == 0 { "≤ 0.20" } else { "" };
                report.push(Row::pair(
                    SECTION,
                    format!("{verb}, {n} existing — {}", imp.label),
                    "ms",
                    Better::Lower,
                    s[k][j],
                    ("reference (iptables)", refs[j]),
                    target,
                ));
            }
        }
    }
    // Growth: ADD at 1,000 (or the largest size) ÷ ADD at 0.
    let at = |c: &Vec<(f64, Stats, Stats)>, n: f64| c.iter().find(|p| p.0 == n).map(|p| p.1.median);
    let big = if sizes.contains(&1000) {
        1000.0
    } else {
        *sizes.last().unwrap_or(&0) as f64
    };
    let ref_growth = at(&curves[impls.len() - 1], big).unwrap_or(f64::NAN)
        / at(&curves[impls.len() - 1], 0.0).unwrap_or(f64::NAN);
    for (k, imp) in impls.iter().enumerate().take(impls.len() - 1) {
        let g = at(&curves[k], big).unwrap_or(f64::NAN) / at(&curves[k], 0.0).unwrap_or(f64::NAN);
        let mut row = Row::pair(
            SECTION,
            format!("ADD growth 0→{big} existing — {}", imp.label),
            "×",
            Better::Lower,
            stats(vec![g]),
            ("reference (iptables)", stats(vec![ref_growth])),
            "ferry ≤ 1.5×",
        );
        row.note = "ratio of medians".into();
        report.push(row);
    }
    report.note(
        SECTION,
        format!(
            "Existing mappings: ferry's through ferry's own plugin in a loop; the reference's \
             with one real reference ADD and the rest as one iptables-restore batch in its exact \
             layout (chain names, comments, rule order); the three namespaces filled at the \
             same time. Installing them took: {}.",
            populate_notes.join("; ")
        ),
    );
    for (j, verb) in ["ADD", "DEL"].iter().enumerate() {
        report.chart(Chart {
            section: SECTION.into(),
            file: format!("portmap-{}.svg", verb.to_lowercase()),
            title: format!("portmap {verb} vs existing mappings"),
            x_label: "existing mappings in the namespace".into(),
            y_label: format!("{verb} wall time (ms)"),
            series: impls
                .iter()
                .zip(&curves)
                .map(|(imp, c)| {
                    (
                        imp.label.to_string(),
                        c.iter()
                            .map(|p| (p.0, if j == 0 { p.1 } else { p.2 }))
                            .collect(),
                    )
                })
                .collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines the reference portmap 1.1.1 itself wrote for `fbnb-pop1` on port 30001
    /// (`iptables-save -t nat` after a real ADD).
    #[test]
    fn synthetic_rules_are_the_references() {
        let text = reference_rules_text(1, 2);
        let expected = [
            ":CNI-DN-db113f9741b791f67de86 - [0:0]",
            "-A CNI-DN-db113f9741b791f67de86 -s 10.213.133.0/24 -p tcp -m tcp --dport 30001 -j CNI-HOSTPORT-SETMARK",
            "-A CNI-DN-db113f9741b791f67de86 -s 127.0.0.1/32 -p tcp -m tcp --dport 30001 -j CNI-HOSTPORT-SETMARK",
            "-A CNI-DN-db113f9741b791f67de86 -p tcp -m tcp --dport 30001 -j DNAT --to-destination 10.213.133.5:80",
            r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"fbnbpm\" id: \"fbnb-pop1\"" -m multiport --dports 30001 -j CNI-DN-db113f9741b791f67de86"#,
        ];
        let lines: Vec<&str> = text.lines().collect();
        for e in expected {
            assert!(lines.contains(&e), "missing {e}\nin\n{text}");
        }
        assert_eq!(lines.first(), Some(&"*nat"));
        assert_eq!(lines.last(), Some(&"COMMIT"));
    }
}
