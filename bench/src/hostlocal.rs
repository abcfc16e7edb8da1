//! host-local: ADD and DEL against a network that already holds N reservations, and VERSION
//! (pure process start-up). The reference lists the whole directory on every ADD; ferry should
//! stay flat.

use crate::exec::{stats, time_call, Call, Stats};
use crate::report::{Report, Row};
use crate::Ctx;
use std::net::Ipv4Addr;
use std::path::Path;

const NET: &str = "benchnet";

fn conf(data_dir: &Path) -> Vec<u8> {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": "10.213.0.0/16"}]]}
    })
    .to_string()
    .into_bytes()
}

/// Reservations in the on-disk format both implementations share.
fn prefill(data_dir: &Path, n: usize) -> Result<(), String> {
    let dir = data_dir.join(NET);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let base = u32::from(Ipv4Addr::new(10, 213, 0, 2));
    for i in 0..n {
        let ip = Ipv4Addr::from(base + i as u32);
        std::fs::write(dir.join(ip.to_string()), format!("prefill-{i}\r\neth0"))
            .map_err(|e| e.to_string())?;
    }
    if n > 0 {
        let last = Ipv4Addr::from(base + n as u32 - 1);
        std::fs::write(dir.join("last_reserved_ip.0"), last.to_string())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// (ADD, DEL) timings for one binary at `existing` reservations.
fn add_del(ctx: &Ctx, bin: &Path, existing: usize) -> Result<(Stats, Stats), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    prefill(tmp.path(), existing)?;
    let stdin = conf(tmp.path());
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..ctx.reps + 3 {
        let env = [
            ("CNI_CONTAINERID", format!("bench-{i}")),
            ("CNI_NETNS", "/var/run/netns/bench".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            (
                "CNI_PATH",
                bin.parent().unwrap_or(Path::new("/")).display().to_string(),
            ),
        ];
        let call = |command| Call {
            bin,
            command,
            env: &env,
            stdin: &stdin,
        };
        let a = time_call(&call("ADD"))?;
        let d = time_call(&call("DEL"))?;
        if i >= 3 {
            adds.push(a);
            dels.push(d);
        }
    }
    Ok((stats(adds), stats(dels)))
}

/// All host-local figures.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    let ferry = ctx.ferry_bin.join("host-local");
    let reference = ctx.reference_bin.join("host-local");
    for bin in [&ferry, &reference] {
        if !bin.is_file() {
            return Err(format!(
                "{} not found (run `make release`; apt-get install containernetworking-plugins)",
                bin.display()
            ));
        }
    }
    let sizes: &[usize] = if ctx.quick {
        &[10, 1000]
    } else {
        &[10, 1000, 5000]
    };
    for &n in sizes {
        let (fa, fd) = add_del(ctx, &ferry, n)?;
        let (ra, rd) = add_del(ctx, &reference, n)?;
        report.push(Row {
            section: "host-local".into(),
            figure: format!("ADD, {n} existing reservations"),
            ferry: fa,
            anchor: Some(("reference host-local".into(), ra)),
            target: "≤ 0.20; flat in N (≤ 1.5× from 10 to 5,000)".into(),
        });
        report.push(Row {
            section: "host-local".into(),
            figure: format!("DEL, {n} existing reservations"),
            ferry: fd,
            anchor: Some(("reference host-local".into(), rd)),
            target: String::new(),
        });
    }
    let version = |bin: &Path| -> Result<Stats, String> {
        let mut v = Vec::new();
        for i in 0..ctx.reps * 2 + 3 {
            let t = time_call(&Call {
                bin,
                command: "VERSION",
                env: &[],
                stdin: b"",
            })?;
            if i >= 3 {
                v.push(t);
            }
        }
        Ok(stats(v))
    };
    report.push(Row {
        section: "host-local".into(),
        figure: "VERSION (process start-up)".into(),
        ferry: version(&ferry)?,
        anchor: Some(("reference host-local".into(), version(&reference)?)),
        target: "≤ 1 ms".into(),
    });
    Ok(())
}
