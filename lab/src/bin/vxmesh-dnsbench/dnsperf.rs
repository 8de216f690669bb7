//! One `dnsperf` run from the benchmark's container against one resolver, with the CPU the
//! resolver's thread used meanwhile (from `/proc`), and what dnsperf printed, parsed. Off the
//! packet path: benchmark harness.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// How one run loads the resolver.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Open loop: as fast as `clients` with `outstanding` queries in flight get answers.
    Max,
    /// At most this many queries per second (`-Q`), each query's latency kept (`-v`) for the
    /// percentiles.
    Rate(u32),
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Queries sent.
    pub sent: u64,
    /// Queries answered.
    pub completed: u64,
    /// Queries lost (no answer within the timeout).
    pub lost: u64,
    /// Answers per second.
    pub qps: f64,
    /// Average latency, µs (dnsperf's figure).
    pub avg_us: f64,
    /// Median and 99th percentile of the answered queries' latencies, µs (rate runs only).
    pub p50_us: Option<f64>,
    /// See `p50_us`.
    pub p99_us: Option<f64>,
    /// Answers that were not NOERROR.
    pub not_noerror: u64,
    /// CPU seconds the resolver's thread used during the run.
    pub server_cpu_s: f64,
    /// CPU seconds dnsperf used.
    pub client_cpu_s: f64,
    /// CPU seconds the whole machine was busy (all cores, every process and the kernel).
    pub machine_cpu_s: f64,
    /// Of which in softirq (where the kernel's network receive runs, veth and XDP included).
    pub softirq_cpu_s: f64,
    /// Wall seconds of the run (dnsperf's).
    pub secs: f64,
}

impl Run {
    /// Resolver CPU per second of the run, in % of one core.
    pub fn server_cpu_pct(&self) -> f64 {
        100.0 * self.server_cpu_s / self.secs.max(1e-9)
    }

    /// Machine CPU per second of the run, in % of one core (all cores summed).
    pub fn machine_pct(&self) -> f64 {
        100.0 * self.machine_cpu_s / self.secs.max(1e-9)
    }

    /// Softirq CPU per second of the run, in % of one core.
    pub fn softirq_pct(&self) -> f64 {
        100.0 * self.softirq_cpu_s / self.secs.max(1e-9)
    }

    /// Answers per resolver CPU second.
    pub fn per_cpu_s(&self) -> f64 {
        self.completed as f64 / self.server_cpu_s.max(1e-9)
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        json!({"sent": self.sent, "completed": self.completed, "lost": self.lost,
               "qps": self.qps, "avg_us": self.avg_us, "p50_us": self.p50_us,
               "p99_us": self.p99_us, "not_noerror": self.not_noerror,
               "server_cpu_s": self.server_cpu_s, "server_cpu_pct": self.server_cpu_pct(),
               "answers_per_server_cpu_s": self.per_cpu_s(),
               "client_cpu_s": self.client_cpu_s, "machine_cpu_s": self.machine_cpu_s,
               "softirq_cpu_s": self.softirq_cpu_s, "secs": self.secs})
    }
}

/// dnsperf's options for one run.
pub struct Options<'a> {
    /// The container's namespace.
    pub netns: &'a str,
    /// The query file.
    pub queries: &'a Path,
    /// Seconds (`-l`).
    pub secs: u32,
    /// Clients (`-c`).
    pub clients: u32,
    /// Queries in flight (`-q`).
    pub outstanding: u32,
}

/// Run dnsperf against `server`, reading `server_stat` (a `/proc/.../stat` file) around it;
/// dnsperf's output is saved to `raw`.
pub fn run(o: &Options, server: &str, load: Load, server_stat: &str, raw: &Path) -> Result<Run> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", o.netns, "dnsperf", "-s", server, "-d"])
        .arg(o.queries)
        .args(["-l", &o.secs.to_string(), "-c", &o.clients.to_string()])
        .args(["-q", &o.outstanding.to_string(), "-t", "1"]);
    if let Load::Rate(q) = load {
        cmd.args(["-Q", &q.to_string(), "-v"]);
    }
    let m0 = machine_cpu()?;
    let cpu0 = cpu_seconds(server_stat)?;
    let kids0 = children_cpu();
    let out = cmd
        .output()
        .context("running dnsperf (Debian package dnsperf)")?;
    let kids1 = children_cpu();
    let cpu1 = cpu_seconds(server_stat)?;
    let m1 = machine_cpu()?;
    std::fs::write(raw, &out.stdout)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r = parse(&text)?;
    r.server_cpu_s = cpu1 - cpu0;
    r.client_cpu_s = kids1 - kids0;
    r.machine_cpu_s = m1.0 - m0.0;
    r.softirq_cpu_s = m1.1 - m0.1;
    Ok(r)
}

/// dnsperf's statistics and (with `-v`) each answer's latency.
pub fn parse(text: &str) -> Result<Run> {
    let mut r = Run::default();
    let mut lat = Vec::new();
    let first = |s: &str| -> f64 {
        s.split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0.0)
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("> ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            if let Some(s) = w.last().and_then(|s| s.parse::<f64>().ok()) {
                lat.push(s * 1e6);
            }
            if w.first() != Some(&"NOERROR") {
                r.not_noerror += 1;
            }
        } else if let Some(v) = l.strip_prefix("Queries sent:") {
            r.sent = first(v) as u64;
        } else if let Some(v) = l.strip_prefix("Queries completed:") {
            r.completed = first(v) as u64;
        } else if let Some(v) = l.strip_prefix("Queries lost:") {
            r.lost = first(v) as u64;
        } else if let Some(v) = l.strip_prefix("Queries per second:") {
            r.qps = first(v);
        } else if let Some(v) = l.strip_prefix("Average Latency (s):") {
            r.avg_us = first(v) * 1e6;
        } else if let Some(v) = l.strip_prefix("Run time (s):") {
            r.secs = first(v);
        } else if let Some(v) = l.strip_prefix("Response codes:") {
            // "NOERROR 123 (100.00%), REFUSED 4 (..)" without -v.
            if lat.is_empty() {
                let w: Vec<&str> = v.split_whitespace().collect();
                for pair in w.chunks(3) {
                    if pair.first() != Some(&"NOERROR") {
                        r.not_noerror += pair.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                    }
                }
            }
        }
    }
    if r.secs == 0.0 {
        bail!("no statistics in dnsperf's output:\n{text}");
    }
    if !lat.is_empty() {
        lat.sort_by(f64::total_cmp);
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        r.p50_us = Some(at(0.5));
        r.p99_us = Some(at(0.99));
    }
    Ok(r)
}

/// utime + stime of a `/proc/PID[/task/TID]/stat` file, in seconds.
pub fn cpu_seconds(stat: &str) -> Result<f64> {
    let s = std::fs::read_to_string(stat).with_context(|| format!("reading {stat}"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = s.rsplit_once(')').map(|x| x.1).context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let sticks: u64 = f.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks + sticks) as f64 / hz)
}

/// Seconds the machine's cores were busy (not idle or iowait), and of them in softirq, from
/// `/proc/stat`'s first line.
fn machine_cpu() -> Result<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 7 {
        bail!("/proc/stat: short cpu line");
    }
    // user nice system idle iowait irq softirq steal...; guest is counted in user already.
    let busy: u64 = f.iter().take(8).sum::<u64>() - f[3] - f[4];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((busy as f64 / hz, f[6] as f64 / hz))
}

/// CPU seconds of this program's waited-for children (dnsperf, once it has exited).
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnsperf_output() {
        let text = "> NOERROR web A 0.000039\n> REFUSED x A 0.000100\n\nStatistics:\n\n  Queries sent:         2000\n  Queries completed:    2000 (100.00%)\n  Queries lost:         0 (0.00%)\n\n  Response codes:       NOERROR 2000 (100.00%)\n  Run time (s):         2.000195\n  Queries per second:   999.902510\n\n  Average Latency (s):  0.000244 (min 0.000018, max 0.016218)\n";
        let r = parse(text).unwrap();
        assert_eq!(
            (r.sent, r.completed, r.lost, r.not_noerror),
            (2000, 2000, 0, 1)
        );
        assert!((r.qps - 999.9025).abs() < 1e-3 && (r.avg_us - 244.0).abs() < 1e-6);
        assert_eq!(r.p99_us, Some(100.0));
    }
}
