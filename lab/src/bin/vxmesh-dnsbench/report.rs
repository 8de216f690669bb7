//! The results: medians of the rounds per resolver and load, the ratios the issue asks about
//! (answers per second, answers per CPU second, p99), and every run, as markdown and JSON.
//! Off the packet path: benchmark harness.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::Sample;
use crate::dnsperf::{Load, Run};

/// What the run was.
pub struct Meta {
    /// Commit of the build.
    pub commit: String,
    /// When.
    pub date: String,
    /// CPUs of the machine.
    pub cpus: usize,
    /// The command line.
    pub command: String,
    /// Seconds per run.
    pub secs: u32,
    /// The nodes' `--busy-poll-us`.
    pub busy_poll_us: String,
    /// dnsperf clients.
    pub clients: u32,
    /// Queries in flight.
    pub outstanding: u32,
    /// The container dnsperf ran in.
    pub container: String,
    /// The switch's resolver address.
    pub resolver: String,
    /// The names queried (type A, in turn).
    pub names: Vec<String>,
}

fn load_name(l: Load) -> String {
    match l {
        Load::Max => "open loop".into(),
        Load::Rate(q) => format!("{q} q/s offered"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Medians of one resolver's runs at one load.
struct Med {
    qps: f64,
    avg: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    lost: f64,
    cpu: f64,
    per_cpu: f64,
    client: f64,
    machine: f64,
    softirq: f64,
}

fn med(runs: &[&Run]) -> Med {
    let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(|r| f(r)).collect());
    let opt = |f: &dyn Fn(&Run) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| median(v))
    };
    Med {
        qps: m(&|r| r.qps),
        avg: m(&|r| r.avg_us),
        p50: opt(&|r| r.p50_us),
        p99: opt(&|r| r.p99_us),
        lost: m(&|r| r.lost as f64),
        cpu: m(&|r| r.server_cpu_pct()),
        per_cpu: m(&|r| r.per_cpu_s()),
        client: m(&|r| 100.0 * r.client_cpu_s / r.secs.max(1e-9)),
        machine: m(&|r| r.machine_pct()),
        softirq: m(&|r| r.softirq_pct()),
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

/// The markdown report and the JSON.
pub fn write(meta: &Meta, samples: &[Sample]) -> (String, Value) {
    let mut md = String::new();
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "# DNS: the switch's resolver against dnsmasq\n\n\
         `{}` — {}, commit {}, {} CPUs, nodes' `--busy-poll-us` {}.\n\n\
         dnsperf in container `{}`'s namespace (on node n1) queries the switch's resolver {} \
         (answered by n1's poll thread) or dnsmasq 2.90 (its own namespace, over a second veth \
         from the same container; the same records, TTL 2 s), alternating, {} rounds of {} s \
         per run, {} clients, {} queries in flight. Names (A, in turn): {}. Medians of the \
         rounds; CPU is utime+stime of n1's `vxmesh-poll` thread or of the dnsmasq process \
         over the run, in % of one core (the kernel's share of a packet's path, softirq, is mostly \
         charged to whichever thread it interrupts, so the machine's busy CPU, all cores and \
         processes, and its softirq part are shown too); p50/p99 from every answer's latency (`dnsperf -v`, \
         fixed-rate runs only).\n",
        meta.command,
        meta.date,
        meta.commit,
        meta.cpus,
        meta.busy_poll_us,
        meta.container,
        meta.resolver,
        rounds,
        meta.secs,
        meta.clients,
        meta.outstanding,
        meta.names.join(", ")
    );
    md.push_str("| load | resolver | answers/s | avg latency (µs) | p50 (µs) | p99 (µs) | lost | resolver CPU (% core) | answers per resolver CPU-second | dnsperf CPU (% core) | machine CPU (% core) | of it softirq |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut loads: Vec<Load> = Vec::new();
    for s in samples {
        if !loads.iter().any(|l| load_name(*l) == load_name(s.load)) {
            loads.push(s.load);
        }
    }
    let mut jmed = serde_json::Map::new();
    let mut ratios = String::new();
    for &load in &loads {
        let mut by = Vec::new();
        for server in ["vxmesh", "dnsmasq"] {
            let runs: Vec<&Run> = samples
                .iter()
                .filter(|s| s.server == server && load_name(s.load) == load_name(load))
                .map(|s| &s.run)
                .collect();
            let m = med(&runs);
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                load_name(load),
                server,
                m.qps,
                m.avg,
                us(m.p50),
                us(m.p99),
                m.lost,
                m.cpu,
                m.per_cpu,
                m.client,
                m.machine,
                m.softirq
            );
            jmed.insert(
                format!("{}/{server}", load_name(load)),
                json!({"qps": m.qps, "avg_us": m.avg, "p50_us": m.p50, "p99_us": m.p99,
                       "lost": m.lost, "server_cpu_pct": m.cpu,
                       "answers_per_server_cpu_s": m.per_cpu, "client_cpu_pct": m.client,
                       "machine_cpu_pct": m.machine, "softirq_cpu_pct": m.softirq}),
            );
            by.push(m);
        }
        let (v, d) = (&by[0], &by[1]);
        let _ = write!(
            ratios,
            "- {}: answers/s vxmesh/dnsmasq {:.2}, answers per CPU-second {:.2}",
            load_name(load),
            v.qps / d.qps,
            v.per_cpu / d.per_cpu
        );
        if let (Some(a), Some(b)) = (v.p99, d.p99) {
            let _ = write!(ratios, ", p99 {:.0} µs against {:.0} µs", a, b);
        }
        ratios.push('\n');
    }
    let _ = writeln!(md, "\nRatios (medians):\n\n{ratios}");
    md.push_str("Every run (in the order run):\n\n| round | load | resolver | answers/s | avg (µs) | p99 (µs) | lost | resolver CPU (% core) |\n|---|---|---|---|---|---|---|---|\n");
    for s in samples {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {:.0} |",
            s.round,
            load_name(s.load),
            s.server,
            s.run.qps,
            s.run.avg_us,
            us(s.run.p99_us),
            s.run.lost,
            s.run.server_cpu_pct()
        );
    }
    let json = json!({
        "commit": meta.commit, "date": meta.date, "busy_poll_us": meta.busy_poll_us, "cpus": meta.cpus, "command": meta.command,
        "secs": meta.secs, "clients": meta.clients, "outstanding": meta.outstanding,
        "container": meta.container, "resolver": meta.resolver, "names": meta.names,
        "medians": Value::Object(jmed),
        "runs": samples.iter().map(|s| json!({"round": s.round, "load": load_name(s.load),
                 "server": s.server, "result": s.run.json()})).collect::<Vec<_>>(),
    });
    (md, json)
}
