//! The results: per scenario the median of the runs and the worst run, as a markdown table for
//! the terminal and `results.md`, and every number in `results.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use serde_json::{Value, json};

use crate::Plan;
use crate::ping::rank;
use crate::scenario::{Sample, Scenario};
use crate::sched::Mode;

/// `1234567` as `1,234,567`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Median and largest of `v` (None if empty).
fn median_worst(v: &[f64]) -> Option<(f64, f64)> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    Some((rank(&v, 0.5)?, *v.last()?))
}

/// A time in ms, to a precision that suits it.
fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// What one column reads from a sample.
type Get = fn(&Sample) -> Option<f64>;

/// The table's figures: key, heading, value of a sample, whether it is a time.
const COLUMNS: [(&str, &str, Get, bool); 6] = [
    ("max_ms", "max RTT (ms)", |s| s.window.max_ms, true),
    ("p99_ms", "p99 RTT (ms)", |s| s.window.p99_ms, true),
    ("p50_ms", "p50 RTT (ms)", |s| s.window.p50_ms, true),
    ("lost", "lost", |s| Some(f64::from(s.window.lost)), false),
    (
        "sent",
        "pings in window",
        |s| Some(f64::from(s.window.sent)),
        false,
    ),
    (
        "command_ms",
        "command took (ms)",
        |s| Some(s.command_ms),
        true,
    ),
];

/// How many samples of `mode` and `sc` other programs may have disturbed.
fn disturbed(samples: &[Sample], mode: Mode, sc: Scenario) -> usize {
    samples
        .iter()
        .filter(|s| s.mode == mode && s.scenario == sc && s.disturbed)
        .count()
}

/// The figures `get` reads from the samples of `mode` and `sc`.
fn of(samples: &[Sample], mode: Mode, sc: Scenario, get: Get) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.mode == mode && s.scenario == sc)
        .filter_map(get)
        .collect()
}

fn cell(v: &[f64], time: bool) -> String {
    match median_worst(v) {
        None => "—".into(),
        Some((m, w)) if time => format!("{} ({})", ms(m), ms(w)),
        Some((m, w)) => format!("{m:.0} ({w:.0})"),
    }
}

/// The markdown table of the samples of `mode`: a row per scenario, each cell "median (worst)"
/// over the runs.
pub fn table(plan: &Plan, mode: Mode, samples: &[Sample]) -> String {
    let mut t = String::from("| scenario (on n1) |");
    for (_, head, _, _) in COLUMNS {
        let _ = write!(t, " {head} |");
    }
    t.push_str(" disturbed runs |\n|---|");
    t.push_str(&"---|".repeat(COLUMNS.len() + 1));
    t.push('\n');
    for sc in Scenario::ALL {
        if !samples.iter().any(|s| s.mode == mode && s.scenario == sc) {
            continue;
        }
        let _ = write!(t, "| {} |", sc.label(plan));
        for (_, _, get, time) in COLUMNS {
            let _ = write!(t, " {} |", cell(&of(samples, mode, sc, get), time));
        }
        let _ = writeln!(t, " {} |", disturbed(samples, mode, sc));
    }
    t
}

/// Every measurement, one row each.
pub fn runs_table(samples: &[Sample]) -> String {
    let mut t = String::from(
        "| scheduling | scenario | run | command ms | pings sent | lost | max ms | p99 ms | p50 ms | ping total sent/received | attempt | machine busy before/after (%) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let o = |v: Option<f64>| v.map_or("—".into(), ms);
    for s in samples {
        let w = &s.window;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {:.0}/{:.0}{} |",
            s.mode.key(),
            s.scenario.key(),
            s.run,
            ms(s.command_ms),
            w.sent,
            w.lost,
            o(w.max_ms),
            o(w.p99_ms),
            o(w.p50_ms),
            s.ping_total.0,
            s.ping_total.1,
            s.attempt,
            s.busy_before_pct,
            s.busy_after_pct,
            if s.disturbed { " (disturbed)" } else { "" }
        );
    }
    t
}

/// The summary (per mode, per scenario) and every sample, as JSON.
pub fn json(plan: &Plan, modes: &[Mode], samples: &[Sample]) -> Value {
    let pairs = modes
        .iter()
        .flat_map(|&m| Scenario::ALL.iter().map(move |&sc| (m, sc)));
    let summary: Vec<Value> = pairs
        .filter(|&(m, sc)| samples.iter().any(|s| s.mode == m && s.scenario == sc))
        .map(|(m, sc)| {
            let mut o = serde_json::Map::new();
            o.insert("mode".into(), json!(m.label()));
            o.insert("scenario".into(), json!(sc.key()));
            o.insert("disturbed_runs".into(), json!(disturbed(samples, m, sc)));
            o.insert("label".into(), json!(sc.label(plan)));
            for (key, _, get, _) in COLUMNS {
                let v = median_worst(&of(samples, m, sc, get));
                o.insert(
                    key.into(),
                    json!({"median": v.map(|x| x.0), "worst": v.map(|x| x.1)}),
                );
            }
            Value::Object(o)
        })
        .collect();
    let raw: Vec<Value> = samples
        .iter()
        .map(|s| {
            let w = &s.window;
            json!({
                "mode": s.mode.key(),
                "scenario": s.scenario.key(),
                "run": s.run,
                "command_ms": s.command_ms,
                "sent": w.sent,
                "received": w.received,
                "lost": w.lost,
                "max_ms": w.max_ms,
                "p99_ms": w.p99_ms,
                "p50_ms": w.p50_ms,
                "ping_total_sent": s.ping_total.0,
                "ping_total_received": s.ping_total.1,
                "attempt": s.attempt,
                "busy_before_pct": s.busy_before_pct,
                "busy_after_pct": s.busy_after_pct,
                "disturbed": s.disturbed,
            })
        })
        .collect();
    json!({"summary": summary, "samples": raw})
}

/// Where and on what the figures were measured.
pub struct Meta {
    /// UTC, RFC 3339.
    pub date: String,
    /// `git rev-parse --short HEAD`, `+changes` if the tree differed.
    pub commit: String,
    /// This program's command line.
    pub command: String,
    /// CPUs of the machine.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// n1's table before the first `conntrack show`: (entries, established).
    pub entries: (usize, usize),
}

/// Write `results.md` and `results.json` into `out`; the tables, for the terminal.
pub fn write(
    out: &Path,
    plan: &Plan,
    modes: &[Mode],
    samples: &[Sample],
    meta: &Meta,
) -> Result<String> {
    let mut tables = String::new();
    for &m in modes {
        let _ = write!(tables, "### {}\n\n{}\n", m.label(), table(plan, m, samples));
    }
    let probe = if plan.probe_priority > 0 {
        format!(" (under `chrt -f {}`)", plan.probe_priority)
    } else {
        String::new()
    };
    let md = format!(
        "# The forwarding pause, end to end\n\n\
         `{}` on {}, commit {}; {} CPUs, kernel {}.\n\n\
         Two `vxmesh run` nodes in a namespace lab; `ping -D -i {}`{probe} from c11 (n1, \
         AF_XDP) to c21 (n2) while the command runs on n1; figures over the pings sent while it \
         ran (idle: a {} ms stretch). n1's table held {} connections ({} established) before \
         the first `conntrack show`. Each cell: median of {} runs (worst run). A measurement \
         is redone (at most {} attempts) when the machine was more than {}% busy just before or \
         after it (other programs); \"disturbed runs\" counts those kept anyway.\n\n{tables}\
         ## Every run\n\n{}",
        meta.command,
        meta.date,
        meta.commit,
        meta.cpus,
        meta.kernel,
        plan.interval,
        plan.idle.as_millis(),
        thousands(meta.entries.0 as u64),
        thousands(meta.entries.1 as u64),
        plan.runs,
        plan.max_attempts,
        plan.quiet_pct,
        runs_table(samples),
    );
    let path = out.join("results.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    let mut j = json(plan, modes, samples);
    j["meta"] = json!({
        "date": meta.date,
        "commit": meta.commit,
        "command": meta.command,
        "cpus": meta.cpus,
        "kernel": meta.kernel,
        "interval_s": plan.interval,
        "probe_priority": plan.probe_priority,
        "poll_priority": plan.poll_priority,
        "runs": plan.runs,
        "conns_target": plan.conns,
        "conns_in_table": meta.entries.0,
        "conns_established": meta.entries.1,
        "remote_endpoints": plan.remote,
        "attached_containers": plan.attach,
        "lead_ms": plan.lead.as_millis() as u64,
        "tail_ms": plan.tail.as_millis() as u64,
        "idle_ms": plan.idle.as_millis() as u64,
        "cpu_load_ms": plan.cpu_load.as_millis() as u64,
        "quiet_pct": plan.quiet_pct,
        "quiet_max_wait_s": plan.quiet_max_wait.as_secs(),
        "max_attempts": plan.max_attempts,
    });
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&j)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ping::Window;

    fn sample(scenario: Scenario, run: usize, max: f64, lost: u32) -> Sample {
        Sample {
            mode: Mode::Ordinary,
            scenario,
            run,
            command_ms: 100.0,
            window: Window {
                sent: 100,
                received: 100 - lost,
                lost,
                max_ms: Some(max),
                p99_ms: Some(max / 2.0),
                p50_ms: Some(0.05),
            },
            ping_total: (500, 500 - lost),
            attempt: 1,
            busy_before_pct: 3.0,
            busy_after_pct: 2.0,
            disturbed: false,
        }
    }

    #[test]
    fn medians_and_worst_runs() {
        let plan = Plan::for_tests();
        let s = vec![
            sample(Scenario::Idle, 1, 0.2, 0),
            sample(Scenario::Idle, 2, 0.4, 0),
            sample(Scenario::Idle, 3, 0.3, 1),
            sample(Scenario::ConntrackShow, 1, 12.0, 2),
        ];
        assert_eq!(table(&plan, Mode::RtPoll(40), &s).lines().count(), 2);
        let t = table(&plan, Mode::Ordinary, &s);
        let idle = t.lines().find(|l| l.contains("idle")).unwrap();
        assert!(idle.contains("| 0.300 (0.400) |"), "{idle}");
        assert!(idle.contains("| 0 (1) |"), "{idle}");
        let ct = t.lines().find(|l| l.contains("conntrack")).unwrap();
        assert!(ct.contains("| 12.0 (12.0) | 6.00 (6.00) |"), "{ct}");
        assert_eq!(t.lines().count(), 4, "{t}");
        let j = json(&plan, &[Mode::Ordinary, Mode::RtPoll(40)], &s);
        assert_eq!(j["summary"][0]["max_ms"]["worst"], 0.4);
        assert_eq!(j["samples"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(ms(0.0251), "0.025");
        assert_eq!(ms(2.345), "2.35");
        assert_eq!(ms(143.0), "143.0");
    }
}
