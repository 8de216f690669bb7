//! Running things in the lab's namespaces, bounded, and reading what they print: iperf3 JSON,
//! wrk text, ping lines, `/proc/stat`, per-process CPU ticks, interface counters.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Set by SIGINT/SIGTERM; checked between steps and while waiting.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT and SIGTERM: they only set [`INTERRUPTED`], and the program unwinds at the
/// next check, so its guards remove what it built.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic (async-signal
        // safe); sa_mask empty, no SA_RESTART so sleeps return early.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether the user asked us to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fail if the user asked us to stop.
pub fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep, waking every 50 ms to see whether the user asked us to stop.
pub fn nap(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// `ip netns exec NS ARGS...`.
pub fn ns_command(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// A short command in `ns` (configuration, listings); its standard output, or an error with
/// its standard error.
pub fn sh(ns: &str, args: &[&str]) -> Result<String> {
    let o = ns_command(ns, args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("ip netns exec {ns} {}", args.join(" ")))?;
    if !o.status.success() {
        bail!(
            "in {ns}: `{}` failed ({}): {}{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A command in the root namespace (only for `ip -n NS ...`, `bridge -n NS ...` and tool
/// versions); its standard output.
pub fn host(args: &[&str]) -> Result<String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("`{}`: cannot run {}", args.join(" "), args[0]))?;
    if !o.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub use vxmesh_lab::have;

/// A load started in `ns` as `timeout -k 5 SECS ARGS...`, standard output into `out` and
/// standard error into `out` + `.err`.
pub struct Load {
    child: Child,
    what: String,
    deadline: Instant,
    err_path: String,
}

impl Load {
    /// Start it.
    pub fn start(ns: &str, secs: u64, args: &[&str], out: &Path) -> Result<Load> {
        let secs_s = secs.to_string();
        let mut argv = vec!["timeout", "-k", "5", secs_s.as_str()];
        argv.extend_from_slice(args);
        let stdout = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let err_path = format!("{}.err", out.display());
        let stderr = File::create(&err_path).with_context(|| format!("creating {err_path}"))?;
        let child = ns_command(ns, &argv)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting `{}` in {ns}", args.join(" ")))?;
        Ok(Load {
            child,
            what: format!("{} (in {ns})", args.join(" ")),
            deadline: Instant::now() + Duration::from_secs(secs + 10),
            err_path,
        })
    }

    /// Wait for it (bounded by its timeout, plus a margin); stops it if the user interrupts.
    pub fn wait(mut self) -> Result<ExitStatus> {
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if interrupted() || Instant::now() > self.deadline {
                stop_child(&mut self.child);
                if interrupted() {
                    bail!("interrupted");
                }
                bail!("`{}` did not end within its time bound", self.what);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            stop_child(&mut self.child);
        }
        // Keep standard error only when it says something.
        if std::fs::metadata(&self.err_path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.err_path);
        }
    }
}

/// SIGTERM (which `timeout` passes on), then SIGKILL after two seconds; reaps the child.
pub fn stop_child(child: &mut Child) {
    // SAFETY: kill(2) on the pid of our own, not yet reaped, child: one process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Servers started for one side's run (nginx, iperf3 -s): stopped when dropped.
#[derive(Default)]
pub struct Servers(Vec<Child>);

impl Servers {
    /// Start `args` in `ns` as a server, its output into `log`.
    pub fn start(&mut self, ns: &str, args: &[&str], log: &Path) -> Result<()> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = ns_command(ns, args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting `{}` in {ns}", args.join(" ")))?;
        self.0.push(child);
        Ok(())
    }

    /// Start `iperf3 -s` (port 5201) in `ns`, its output into `log`.
    pub fn start_iperf3(&mut self, ns: &str, log: &Path) -> Result<()> {
        self.start(ns, &["iperf3", "-s"], log)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            stop_child(c);
        }
    }
}

/// Wait (bounded) until something listens on TCP `port` in `ns`.
pub fn wait_listening(ns: &str, port: u16) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    let pat = format!(":{port} ");
    loop {
        if sh(ns, &["ss", "-Htln"])?.contains(&pat) {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("nothing listens on port {port} in {ns} after 10 s");
        }
        nap(Duration::from_millis(50))?;
    }
}

// ---------------------------------------------------------------- CPU accounting

/// The first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuTicks {
    /// user + nice + system + irq + softirq, all CPUs.
    pub busy: u64,
    /// Every field but guest (already in user): busy + idle + iowait + steal.
    pub total: u64,
}

/// Read `/proc/stat`'s `cpu` line.
pub fn cpu_ticks() -> Result<CpuTicks> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let line = s.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if f.len() < 8 {
        bail!("unexpected /proc/stat line: {line}");
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    let total = busy + f[3] + f[4] + f[7];
    Ok(CpuTicks { busy, total })
}

/// The machine's dirty page cache (`Dirty:` of `/proc/meminfo`), in kB.
pub fn dirty_kb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Dirty:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Write the dirty page cache out now (`sync(2)`) and return how much there was (kB), so that
/// its writeback, which the kernel starts 30 s after a page was dirtied (a build just before
/// the comparison dirties a hundred MB or more), does not land inside a measurement: on this
/// 2-vCPU machine a writeback during a ping test gave a p99 of 1.4 ms against 0.1-0.3 ms in
/// the runs around it (2026-12-07).
pub fn flush_dirty() -> Option<u64> {
    let before = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| dirty_kb(&m));
    // SAFETY: sync has no preconditions and cannot fail.
    unsafe { libc::sync() };
    before
}

/// Clock ticks per second.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Number of online CPUs.
pub fn ncpu() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whole-machine busy percentage (100 = every CPU busy) over `d`.
pub fn busy_pct(d: Duration) -> Result<f64> {
    let a = cpu_ticks()?;
    nap(d)?;
    let b = cpu_ticks()?;
    let tot = b.total.saturating_sub(a.total);
    Ok(if tot == 0 {
        0.0
    } else {
        100.0 * b.busy.saturating_sub(a.busy) as f64 / tot as f64
    })
}

/// The network namespaces whose processes are "ours" (identified by their nsfs inode).
#[derive(Clone, Debug, Default)]
pub struct Ours(HashSet<(u64, u64)>);

impl Ours {
    /// The named namespaces `names` (under /run/netns).
    pub fn new(names: &[String]) -> Ours {
        Ours(
            names
                .iter()
                .filter_map(|n| std::fs::metadata(format!("/run/netns/{n}")).ok())
                .map(|m| (m.dev(), m.ino()))
                .collect(),
        )
    }
}

/// CPU ticks (utime + stime) of every user-space process outside our namespaces and other
/// than this program: the other sessions' work on the machine. Kernel threads are left out
/// (they may be doing our softirq work). Keyed by pid, with the start time against pid reuse.
pub fn other_ticks(ours: &Ours) -> HashMap<i32, (u64, u64)> {
    let me = std::process::id() as i32;
    let mut res = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return res;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || pid == 2 {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // f[0] = state (field 3), so field n is f[n - 3].
        if f.len() < 20 {
            continue;
        }
        let ppid: i32 = f[1].parse().unwrap_or(0);
        if ppid == 2 {
            continue;
        }
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            && ours.0.contains(&(m.dev(), m.ino()))
        {
            continue;
        }
        let utime: u64 = f[11].parse().unwrap_or(0);
        let stime: u64 = f[12].parse().unwrap_or(0);
        let start: u64 = f[19].parse().unwrap_or(0);
        res.insert(pid, (start, utime + stime));
    }
    res
}

/// The CPU each thread named one of `comms` last ran on, over the processes in our
/// namespaces, as "comm:cpu" words sorted by name (`/proc/PID/task/TID/stat` field 39). Shows
/// how the scheduler placed the poll threads and the load generators.
pub fn thread_cpus(ours: &Ours, comms: &[&str]) -> String {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return String::new();
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        match std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            Ok(m) if ours.0.contains(&(m.dev(), m.ino())) => {}
            _ => continue,
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            if let Some(w) = comm_cpu(&stat)
                && comms.iter().any(|c| w.starts_with(&format!("{c}:")))
            {
                found.push(w);
            }
        }
    }
    found.sort();
    found.join(" ")
}

/// "comm:cpu" of one `/proc/.../stat` line.
fn comm_cpu(stat: &str) -> Option<String> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // f[0] = state (field 3), so field 39 (processor) is f[36].
    Some(format!("{}:{}", stat.get(open + 1..close)?, f.get(36)?))
}

/// Ticks the other processes used between two [`other_ticks`] snapshots (processes that
/// started and ended in between are missed: a lower bound).
pub fn other_delta(a: &HashMap<i32, (u64, u64)>, b: &HashMap<i32, (u64, u64)>) -> u64 {
    b.iter()
        .map(|(pid, (start, t))| match a.get(pid) {
            Some((s0, t0)) if s0 == start => t.saturating_sub(*t0),
            _ => *t,
        })
        .sum()
}

/// A point-in-time reading for a measurement window.
pub struct Snap {
    /// When.
    pub at: Instant,
    /// `/proc/stat`.
    pub cpu: CpuTicks,
    /// The other sessions' processes.
    pub other: HashMap<i32, (u64, u64)>,
}

impl Snap {
    /// Take one.
    pub fn take(ours: &Ours) -> Result<Snap> {
        Ok(Snap {
            other: other_ticks(ours),
            cpu: cpu_ticks()?,
            at: Instant::now(),
        })
    }

    /// CPU seconds the whole machine was busy since `self` (user+nice+system+irq+softirq).
    pub fn busy_s(&self, later: &Snap) -> f64 {
        later.cpu.busy.saturating_sub(self.cpu.busy) as f64 / clk_tck()
    }

    /// CPU seconds the other sessions' processes used since `self`.
    pub fn other_s(&self, later: &Snap) -> f64 {
        other_delta(&self.other, &later.other) as f64 / clk_tck()
    }

    /// Seconds since `self`.
    pub fn secs(&self, later: &Snap) -> f64 {
        later.at.duration_since(self.at).as_secs_f64()
    }
}

/// Received packets of `ifname` in `ns` (`ip -s -j link show`).
pub fn rx_packets(ns: &str, ifname: &str) -> Result<u64> {
    let out = host(&["ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("no rx packet counter for {ifname} in {ns}: {out}"))
}

// ---------------------------------------------------------------- vxmesh counters

/// Every numeric leaf of a `vxmesh stats --json` document, by path (array elements named by
/// their `name` field).
pub fn flatten_counters(prefix: &str, v: &serde_json::Value, out: &mut HashMap<String, u64>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                flatten_counters(&format!("{prefix}{k}."), x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let name = x["name"]
                    .as_str()
                    .map_or_else(|| i.to_string(), str::to_string);
                flatten_counters(&format!("{prefix}{name}."), x, out);
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.insert(prefix.trim_end_matches('.').to_string(), n);
            }
        }
        _ => {}
    }
}

/// The counters that grew between two flattened snapshots, largest first, at most `max`.
pub fn counter_deltas(
    a: &HashMap<String, u64>,
    b: &HashMap<String, u64>,
    max: usize,
) -> Vec<(String, u64)> {
    let mut d: Vec<(String, u64)> = b
        .iter()
        .filter_map(|(k, v)| {
            let dv = v.saturating_sub(a.get(k).copied().unwrap_or(0));
            (dv > 0 && !k.contains("bytes") && !k.contains("umem_frames")).then(|| (k.clone(), dv))
        })
        .collect();
    d.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    d.truncate(max);
    d
}

/// The `Udp:` counters of a `/proc/net/snmp` text (InDatagrams, InErrors, RcvbufErrors...).
pub fn snmp_udp(text: &str) -> Vec<(String, u64)> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return Vec::new();
    };
    h.split_whitespace()
        .skip(1)
        .zip(v.split_whitespace().skip(1))
        .filter_map(|(k, x)| Some((k.to_string(), x.parse().ok()?)))
        .collect()
}

// ---------------------------------------------------------------- parsers

/// Received throughput of an iperf3 TCP test (`-J`), in Gbit/s.
pub fn parse_iperf_tcp(json: &str) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON: no end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// An iperf3 UDP test's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Udp {
    /// Packets per second the client sent.
    pub tx_pps: f64,
    /// Packets per second the server received (packets - lost, server-counted).
    pub rx_pps: f64,
    /// Packets the server received.
    pub rx_packets: f64,
    /// Loss in percent.
    pub loss_pct: f64,
}

/// An iperf3 UDP test (`-J`): tx/rx pps and loss, as the reference's kbtool.py computes them.
pub fn parse_iperf_udp(json: &str) -> Result<Udp> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let s = &v["end"]["sum_sent"];
    let r = &v["end"]["sum_received"];
    let f = |x: &serde_json::Value, k: &str| {
        x[k].as_f64()
            .with_context(|| format!("iperf3 JSON: no {k} in the UDP summary"))
    };
    let (sp, ss) = (f(s, "packets")?, f(s, "seconds")?);
    let (rp, rl, rs) = (f(r, "packets")?, f(r, "lost_packets")?, f(r, "seconds")?);
    let got = rp - rl;
    Ok(Udp {
        tx_pps: if ss > 0.0 { sp / ss } else { 0.0 },
        rx_pps: if rs > 0.0 { got / rs } else { 0.0 },
        rx_packets: got,
        loss_pct: if rp > 0.0 { 100.0 * rl / rp } else { 100.0 },
    })
}

/// Percentile of sorted values: the value of rank round(p·N + 0.5), which is one rank above
/// nearest-rank when p·N is whole (the tests pin this; the published figures used it).
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((p / 100.0 * sorted.len() as f64 + 0.5).round() as isize - 1)
        .clamp(0, sorted.len() as isize - 1) as usize;
    sorted[k]
}

/// Ping RTTs in microseconds, from `time=X ms` lines.
pub fn parse_ping(text: &str) -> Vec<f64> {
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let i = l.find("time=")?;
            let rest = &l[i + 5..];
            let end = rest.find(' ').unwrap_or(rest.len());
            let ms: f64 = rest[..end].parse().ok()?;
            Some(ms * 1000.0)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// A wrk run's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: f64,
}

fn wrk_time_us(tok: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = tok.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = tok.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = tok.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = tok.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mul)
}

/// wrk's `--latency` text.
pub fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0.0;
    for l in text.lines() {
        let t = l.trim();
        if let Some(r) = t.strip_prefix("Requests/sec:") {
            rps = r.trim().parse::<f64>().ok();
        } else if let Some(r) = t.strip_prefix("50%") {
            p50 = wrk_time_us(r.trim());
        } else if let Some(r) = t.strip_prefix("99%") {
            p99 = wrk_time_us(r.trim());
        } else if let Some(r) = t.strip_prefix("Socket errors:") {
            errors += r
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>();
        } else if let Some(r) = t.strip_prefix("Non-2xx or 3xx responses:") {
            errors += r.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(Wrk {
        rps: rps.context("wrk: no Requests/sec line")?,
        p50_us: p50.context("wrk: no 50% latency line (--latency)")?,
        p99_us: p99.context("wrk: no 99% latency line (--latency)")?,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_and_cpu_come_from_the_stat_line() {
        // A comm with a space and a parenthesis, as the kernel allows.
        let stat = "4242 (vxmesh-poll) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 1 0 0";
        assert_eq!(comm_cpu(stat).as_deref(), Some("vxmesh-poll:1"));
        let odd = "7 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 0";
        assert_eq!(comm_cpu(odd).as_deref(), Some("a) b:0"));
        assert_eq!(comm_cpu("1 (x) S 1"), None);
    }

    #[test]
    fn wrk_text() {
        let t = "Running 5s test @ http://10.0.9.100/\n  1 threads and 32 connections\n  Latency Distribution\n     50%  201.00us\n     75%  300.00us\n     90%    1.00ms\n     99%    1.89ms\n  437700 requests in 5.00s, 60MB read\n  Socket errors: connect 0, read 3, write 0, timeout 1\nRequests/sec:  87540.12\nTransfer/sec:     12.00MB\n";
        let w = parse_wrk(t).unwrap();
        assert_eq!(w.rps, 87540.12);
        assert_eq!(w.p50_us, 201.0);
        assert!((w.p99_us - 1890.0).abs() < 1e-6);
        assert_eq!(w.errors, 4.0);
    }

    #[test]
    fn ping_text() {
        let t = "64 bytes from 10.0.9.21: icmp_seq=1 ttl=64 time=0.031 ms\n64 bytes from 10.0.9.21: icmp_seq=2 ttl=64 time=0.012 ms\n";
        let v = parse_ping(t);
        assert_eq!(v.len(), 2);
        assert!((v[0] - 12.0).abs() < 1e-9);
        assert_eq!(pct(&v, 50.0), v[1]);
        assert_eq!(pct(&[1.0, 2.0, 3.0], 50.0), 2.0);
        assert_eq!(pct(&v, 99.0), v[1]);
    }

    #[test]
    fn dirty_pages_are_read_from_meminfo() {
        let m = "MemTotal:       24000000 kB\nDirty:            101936 kB\nWriteback:   0 kB\n";
        assert_eq!(dirty_kb(m), Some(101_936));
        assert_eq!(dirty_kb("MemTotal: 1 kB\n"), None);
        assert_eq!(dirty_kb("Dirty: lots kB\n"), None);
    }
}
