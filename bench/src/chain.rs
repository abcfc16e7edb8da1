//! The bridge → portmap chain (host-local as bridge's IPAM) the way a runtime runs a
//! conflist: each plugin gets `cniVersion`/`name`, its own keys and the previous plugin's
//! result as `prevResult`; CHECK and DEL get the final result. Each implementation runs in its
//! own throw-away "host" namespace (its own bridge, sysctls, iptables), containers are
//! namespaces made here, reused with a new container ID each iteration.
//!
//! Figures: chain ADD / CHECK / DEL latency, parallel ADDs (wall time), VERSION.

use crate::exec::{run_call, stats_ms, time_call, Call};
use crate::report::{progress, Better, Chart, Report, Row};
use crate::sys::{check_interrupted, Netns};
use crate::Ctx;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const SECTION: &str = "chain (bridge + host-local + portmap)";

/// One implementation's chain and its private host namespace.
pub struct Chain {
    /// "ferry" or "reference".
    pub label: &'static str,
    bridge: PathBuf,
    portmap: PathBuf,
    cni_path: String,
    host: Netns,
    net: String,
    bridge_conf: Value,
    portmap_backend: Option<&'static str>,
    _data: tempfile::TempDir,
}

/// The result of a chain ADD, needed by CHECK and DEL.
pub struct Attachment {
    id: String,
    netns: String,
    port: u16,
    result: Value,
}

impl Chain {
    /// Build one implementation's chain in a new host namespace `fbnb-h<tag>`.
    pub fn new(ctx: &Ctx, ferry: bool, tag: &str, subnet: &str) -> Result<Chain, String> {
        let dir = if ferry {
            &ctx.ferry_bin
        } else {
            &ctx.reference_bin
        };
        let (bridge, portmap) = (dir.join("bridge"), dir.join("portmap"));
        ctx.need(&[&bridge, &portmap, &dir.join("host-local")])?;
        let data = tempfile::Builder::new()
            .prefix("fbnb-ipam")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let host = Netns::create(&format!("h{tag}"))?;
        let bridge_conf = json!({
            "type": "bridge", "bridge": format!("fbnbr{tag}"), "isGateway": true,
            "ipMasq": false,
            "ipam": {"type": "host-local", "dataDir": data.path(),
                     "ranges": [[{"subnet": subnet}]]}
        });
        Ok(Chain {
            label: if ferry { "ferry" } else { "reference" },
            bridge,
            portmap,
            cni_path: dir.display().to_string(),
            host,
            net: format!("fbnbnet{tag}"),
            bridge_conf,
            portmap_backend: None,
            _data: data,
        })
    }

    fn conf(&self, plugin: &Value, prev: Option<&Value>, port: u16) -> Vec<u8> {
        let mut c = plugin.clone();
        if let Some(o) = c.as_object_mut() {
            o.insert("cniVersion".into(), json!("1.0.0"));
            o.insert("name".into(), json!(self.net));
            if let Some(p) = prev {
                o.insert("prevResult".into(), p.clone());
            }
            if o.get("type") == Some(&json!("portmap")) {
                o.insert(
                    "runtimeConfig".into(),
                    json!({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}),
                );
            }
        }
        c.to_string().into_bytes()
    }

    fn portmap_conf(&self) -> Value {
        let mut v = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        if let Some(b) = self.portmap_backend {
            v["backend"] = json!(b);
        }
        v
    }

    fn env(&self, id: &str, netns: &str) -> [(&'static str, String); 4] {
        [
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", self.cni_path.clone()),
        ]
    }

    /// bridge ADD then portmap ADD with bridge's result; total plugin time.
    pub fn add(&self, id: &str, netns: &str, port: u16) -> Result<(Duration, Attachment), String> {
        self.add_split(id, netns, port).map(|(b, p, a)| (b + p, a))
    }

    /// Like `add`, with bridge's and portmap's times apart.
    pub fn add_split(
        &self,
        id: &str,
        netns: &str,
        port: u16,
    ) -> Result<(Duration, Duration, Attachment), String> {
        let env = self.env(id, netns);
        let b = self.conf(&self.bridge_conf, None, port);
        let (t1, out) = run_call(&Call {
            bin: &self.bridge,
            command: "ADD",
            env: &env,
            stdin: &b,
            netns: Some(self.host.fd()),
        })?;
        let prev: Value = serde_json::from_slice(&out)
            .map_err(|e| format!("{} bridge ADD printed no JSON result: {e}", self.label))?;
        let p = self.conf(&self.portmap_conf(), Some(&prev), port);
        let (t2, out) = run_call(&Call {
            bin: &self.portmap,
            command: "ADD",
            env: &env,
            stdin: &p,
            netns: Some(self.host.fd()),
        })?;
        let result: Value = serde_json::from_slice(&out)
            .map_err(|e| format!("{} portmap ADD printed no JSON result: {e}", self.label))?;
        Ok((
            t1,
            t2,
            Attachment {
                id: id.into(),
                netns: netns.into(),
                port,
                result,
            },
        ))
    }

    /// CHECK (bridge, portmap) or DEL (portmap, bridge) with the final result.
    pub fn verb(&self, command: &str, a: &Attachment) -> Result<Duration, String> {
        self.verb_split(command, a)
            .map(|(b, p)| b + p.unwrap_or_default())
    }

    /// Like `verb`, but bridge's and portmap's times apart; portmap's is None when it failed
    /// on CHECK (the reference 1.1.1 portmap fails CHECK of every IPv4-only attachment:
    /// "could not check ipv6 dnat").
    pub fn verb_split(
        &self,
        command: &str,
        a: &Attachment,
    ) -> Result<(Duration, Option<Duration>), String> {
        let env = self.env(&a.id, &a.netns);
        let order = [
            (&self.bridge, self.bridge_conf.clone()),
            (&self.portmap, self.portmap_conf()),
        ];
        let mut times = [None, None];
        let idx: [usize; 2] = if command == "DEL" { [1, 0] } else { [0, 1] };
        for i in idx {
            let (bin, plugin) = &order[i];
            let stdin = self.conf(plugin, Some(&a.result), a.port);
            let r = time_call(&Call {
                bin,
                command,
                env: &env,
                stdin: &stdin,
                netns: Some(self.host.fd()),
            });
            times[i] = match r {
                Ok(t) => Some(t),
                Err(e) if command == "CHECK" && i == 1 && e.contains("ipv6") => None,
                Err(e) => return Err(e),
            };
        }
        Ok((times[0].unwrap_or_default(), times[1]))
    }
}

/// Sequential chain ADD / CHECK / DEL, ferry and reference interleaved.
pub fn run_latency(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    let chains = [
        Chain::new(ctx, true, "f", "10.213.129.0/24")?,
        Chain::new(ctx, false, "r", "10.213.130.0/24")?,
    ];
    let containers = [Netns::create("cf")?, Netns::create("cr")?];
    // [impl][add, bridge CHECK, DEL, portmap CHECK, bridge ADD, portmap ADD, bridge DEL,
    // portmap DEL]
    let mut t: [[Vec<Duration>; 8]; 2] = Default::default();
    for i in 0..ctx.reps + ctx.warmup {
        check_interrupted()?;
        if i % 5 == 0 {
            progress(&format!("chain: iteration {i}/{}", ctx.reps + ctx.warmup));
        }
        for k in 0..2 {
            let id = format!("fbnb-seq-{i}");
            let (ab, ap, att) = chains[k].add_split(&id, &containers[k].path(), 28500)?;
            let (cb, cp) = chains[k].verb_split("CHECK", &att)?;
            let (db, dp) = chains[k].verb_split("DEL", &att)?;
            // ferry's bridge DEL returns before the kernel's slow part of the veth delete,
            // which a detached process sits out: let it finish so it is charged to no other
            // measurement (the time above is what the runtime waits for).
            crate::sys::settle_deferred_deletes();
            let dp = dp.unwrap_or_default();
            if i >= ctx.warmup {
                t[k][0].push(ab + ap);
                t[k][1].push(cb);
                t[k][2].push(db + dp);
                t[k][3].extend(cp);
                t[k][4].push(ab);
                t[k][5].push(ap);
                t[k][6].push(db);
                t[k][7].push(dp);
            }
        }
    }
    let targets = ["", "", "", "", "≤ 0.25", "≤ 0.20", "≤ 0.25", "≤ 0.20"];
    let figures = [
        "chain ADD",
        "bridge (+host-local) CHECK",
        "chain DEL",
        "",
        "… of which bridge (+host-local) ADD",
        "… of which portmap ADD",
        "… of which bridge (+host-local) DEL",
        "… of which portmap DEL",
    ];
    for (j, figure) in figures.iter().enumerate() {
        if figure.is_empty() {
            continue;
        }
        report.push(Row::pair(
            SECTION,
            *figure,
            "ms",
            Better::Lower,
            stats_ms(&t[0][j]),
            ("reference chain", stats_ms(&t[1][j])),
            targets[j],
        ));
    }
    let mut row = Row::pair(
        SECTION,
        "portmap CHECK",
        "ms",
        Better::Lower,
        stats_ms(&t[0][3]),
        ("reference portmap", stats_ms(&t[1][3])),
        "",
    );
    if t[1][3].is_empty() {
        row.anchor = None;
        row.note = "the reference 1.1.1 portmap fails CHECK of IPv4-only attachments \
                    (\"could not check ipv6 dnat\"): nothing to compare"
            .into();
    }
    report.push(row);
    Ok(())
}

/// N chain ADDs at once into one bridge (wall time until the last returns), then N DELs.
pub fn run_parallel(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    let sizes: &[usize] = if ctx.quick { &[20, 50] } else { &[20, 50, 200] };
    let rounds = (if ctx.quick { 3 } else { 5 }).min(ctx.reps);
    let max = sizes.iter().copied().max().unwrap_or(0);
    let chains = [
        Arc::new(Chain::new(ctx, true, "pf", "10.213.131.0/24")?),
        Arc::new(Chain::new(ctx, false, "pr", "10.213.132.0/24")?),
    ];
    progress(&format!("parallel: creating {max} container namespaces"));
    let mut containers = Vec::new();
    for i in 0..max {
        containers.push(Netns::create(&format!("p{i}"))?);
    }
    let paths: Arc<Vec<String>> = Arc::new(containers.iter().map(|c| c.path()).collect());
    let mut curves: [Vec<(f64, crate::exec::Stats)>; 2] = Default::default();
    for &n in sizes {
        // 200 at once takes ~50 s per round for both on 2 cores: fewer rounds there.
        let rounds = if n >= 200 { rounds.min(3) } else { rounds };
        let mut t: [[Vec<Duration>; 2]; 2] = Default::default();
        for round in 0..rounds {
            check_interrupted()?;
            progress(&format!("parallel: {n} ADDs, round {}/{rounds}", round + 1));
            for k in 0..2 {
                let (add, atts) = parallel(n, |i| {
                    let c = chains[k].clone();
                    let p = paths.clone();
                    move || {
                        c.add(
                            &format!("fbnb-par-{n}-{round}-{i}"),
                            &p[i],
                            28000 + i as u16,
                        )
                        .map(|(_, a)| a)
                    }
                });
                let atts = Arc::new(atts);
                let (del, _) = parallel(atts.len(), |i| {
                    let c = chains[k].clone();
                    let a = atts.clone();
                    move || c.verb("DEL", &a[i]).map(|_| ())
                });
                crate::sys::settle_deferred_deletes();
                t[k][0].push(add);
                t[k][1].push(del);
                if let Some(e) = ERRORS.with(|e| e.borrow_mut().pop()) {
                    return Err(format!("{} parallel chain: {e}", chains[k].label));
                }
            }
        }
        curves[0].push((n as f64, stats_ms(&t[0][0])));
        curves[1].push((n as f64, stats_ms(&t[1][0])));
        let target = if n == 50 { "≤ 0.25" } else { "" };
        for (j, verb) in ["ADDs", "DELs"].iter().enumerate() {
            let mut row = Row::pair(
                SECTION,
                format!("{n} parallel chain {verb} (wall time)"),
                "ms",
                Better::Lower,
                stats_ms(&t[0][j]),
                ("reference chain", stats_ms(&t[1][j])),
                if j == 0 { target } else { "" },
            );
            row.note = format!("{rounds} rounds");
            report.push(row);
        }
    }
    let [f, r] = curves;
    report.chart(Chart {
        section: SECTION.into(),
        file: "parallel-add.svg".into(),
        title: "N chain ADDs at once: wall time until the last returns".into(),
        x_label: "parallel ADDs".into(),
        y_label: "wall time (ms)".into(),
        series: vec![("ferry chain".into(), f), ("reference chain".into(), r)],
    });
    Ok(())
}

thread_local! {
    static ERRORS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `n` jobs at once (released together by a barrier); wall time and successful outputs.
/// The first failure is left in ERRORS for the caller.
fn parallel<T: Send + 'static, F, J>(n: usize, make: F) -> (Duration, Vec<T>)
where
    F: Fn(usize) -> J,
    J: FnOnce() -> Result<T, String> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let job = make(i);
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                job()
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert("a worker thread panicked".into());
            }
        }
    }
    let took = start.elapsed();
    if let Some(e) = first_err {
        ERRORS.with(|x| x.borrow_mut().push(e));
    }
    (took, out)
}

/// VERSION of each plugin: pure process start-up, ferry and reference interleaved, with
/// `/bin/true` as the exec floor.
pub fn run_version(ctx: &Ctx, report: &mut Report) -> Result<(), String> {
    let stdin = br#"{"cniVersion":"1.0.0"}"#;
    let n = ctx.reps * 2 + ctx.warmup;
    let floor = {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(time_call(&Call {
                bin: std::path::Path::new("/bin/true"),
                command: "VERSION",
                env: &[],
                stdin,
                netns: None,
            })?);
        }
        stats_ms(&v[ctx.warmup..])
    };
    for plugin in ["bridge", "host-local", "portmap"] {
        let bins = [ctx.ferry_bin.join(plugin), ctx.reference_bin.join(plugin)];
        ctx.need(&[&bins[0], &bins[1]])?;
        let mut t: [Vec<Duration>; 2] = Default::default();
        for i in 0..n {
            check_interrupted()?;
            for k in 0..2 {
                let d = time_call(&Call {
                    bin: &bins[k],
                    command: "VERSION",
                    env: &[],
                    stdin,
                    netns: None,
                })?;
                if i >= ctx.warmup {
                    t[k].push(d);
                }
            }
        }
        let mut row = Row::pair(
            "VERSION (process start-up)",
            format!("{plugin} VERSION"),
            "ms",
            Better::Lower,
            stats_ms(&t[0]),
            (&format!("reference {plugin}"), stats_ms(&t[1])),
            "ferry ≤ 1 ms",
        );
        row.note = format!(
            "exec floor (/bin/true) {} ms",
            crate::report::num(floor.median)
        );
        report.push(row);
    }
    Ok(())
}
