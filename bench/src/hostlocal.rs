//! host-local: ADD, DEL and DEL of an unknown container against a network that already
//! holds N reservations (the method of testdata/host-local/bench.sh: identical data
//! directories per plugin, IPv6 /112 so 5,000 leases fit, ADD and DEL timed separately).
//! The reference lists the whole directory on every ADD; ferry should stay flat.

use crate::exec::{stats_ms, time_call, Call};
use crate::report::{progress, Better, Chart, Report, Row};
use crate::sys::check_interrupted;
use crate::Ctx;
use std::path::Path;
use std::time::Duration;

const NET: &str = "fbnbhl";
const SECTION: &str = "host-local";

fn conf(data_dir: &Path) -> Vec<u8> {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data_dir,
                 "ranges": [[{"subnet": "fd00:213:128::/112"}]]}
    })
    .to_string()
    .into_bytes()
}

/// Reservations in the on-disk format both implementations share, cursor after the last.
fn prefill(data_dir: &Path, from: usize, to: usize) -> Result<(), String> {
    let dir = data_dir.join(NET);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for i in from..to {
        std::fs::write(
            dir.join(format!("fd00:213:128::{:x}", i + 2)),
            format!("prefill{i}\r\neth0"),
        )
        .map_err(|e| e.to_string())?;
    }
    if to > 0 {
        std::fs::write(
            dir.join("last_reserved_ip.0"),
            format!("fd00:213:128::{:x}", to + 1),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// All host-local figures.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    let ferry = ctx.ferry_bin.join("host-local");
    let reference = ctx.reference_bin.join("host-local");
    ctx.need(&[&ferry, &reference])?;
    let sizes: &[usize] = if ctx.quick {
        &[10, 1000, 5000]
    } else {
        &[10, 100, 1000, 2500, 5000]
    };
    let tmp = tempfile::Builder::new()
        .prefix("fbnb-hl")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dirs = [tmp.path().join("ferry"), tmp.path().join("reference")];
    let bins = [&ferry, &reference];
    let stdins = [conf(&dirs[0]), conf(&dirs[1])];
    let mut curves: [Vec<(f64, crate::exec::Stats)>; 2] = [Vec::new(), Vec::new()];
    let mut filled = 0;
    for &n in sizes {
        for d in &dirs {
            prefill(d, filled, n)?;
        }
        filled = n;
        progress(&format!("host-local: {n} existing reservations"));
        // [impl][add, del, del-unknown]
        let mut t: [[Vec<Duration>; 3]; 2] = Default::default();
        for i in 0..ctx.reps + ctx.warmup {
            check_interrupted()?;
            for k in 0..2 {
                let env = |id: &str| {
                    [
                        ("CNI_CONTAINERID", id.to_string()),
                        ("CNI_NETNS", "/var/run/netns/fbnb-none".to_string()),
                        ("CNI_IFNAME", "eth0".to_string()),
                        ("CNI_PATH", ctx.reference_bin.display().to_string()),
                    ]
                };
                let known = env(&format!("fbnb-{i}"));
                let unknown = env("fbnb-nosuch");
                let call = |command, env| Call {
                    bin: bins[k],
                    command,
                    env,
                    stdin: &stdins[k],
                    netns: None,
                };
                let a = time_call(&call("ADD", &known))?;
                let d = time_call(&call("DEL", &known))?;
                let u = time_call(&call("DEL", &unknown))?;
                if i >= ctx.warmup {
                    t[k][0].push(a);
                    t[k][1].push(d);
                    t[k][2].push(u);
                }
            }
        }
        let names = ["ADD", "DEL", "DEL of an unknown container"];
        for (j, name) in names.iter().enumerate() {
            let (f, r) = (stats_ms(&t[0][j]), stats_ms(&t[1][j]));
            if j == 0 {
                curves[0].push((n as f64, f));
                curves[1].push((n as f64, r));
            }
            report.push(Row::pair(
                SECTION,
                format!("{name}, {n} existing reservations"),
                "ms",
                Better::Lower,
                f,
                ("reference host-local", r),
                if j == 0 { "≤ 0.20" } else { "" },
            ));
        }
    }
    if let (Some(first), Some(last)) = (curves[0].first(), curves[0].last()) {
        let growth = last.1.median / first.1.median;
        let mut row = Row::pair(
            SECTION,
            format!(
                "ADD growth {}→{} reservations (ferry; anchor = reference's growth)",
                first.0, last.0
            ),
            "×",
            Better::Lower,
            crate::exec::stats(vec![growth]),
            (
                "reference host-local",
                crate::exec::stats(vec![
                    curves[1].last().map(|l| l.1.median).unwrap_or(f64::NAN)
                        / curves[1].first().map(|f| f.1.median).unwrap_or(f64::NAN),
                ]),
            ),
            "ferry ≤ 1.5×",
        );
        row.note = "ratio of medians".into();
        report.push(row);
    }
    report.chart(Chart {
        section: SECTION.into(),
        file: "host-local-add.svg".into(),
        title: "host-local ADD vs existing reservations".into(),
        x_label: "existing reservations in the network".into(),
        y_label: "ADD wall time (ms)".into(),
        series: vec![
            ("ferry host-local".into(), std::mem::take(&mut curves[0])),
            (
                "reference host-local".into(),
                std::mem::take(&mut curves[1]),
            ),
        ],
    });
    Ok(())
}
