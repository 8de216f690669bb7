//! How busy the machine is (`/proc/stat`), and waiting, bounded, for it to be quiet before a
//! measurement: on a small shared machine another program's build would otherwise be measured
//! as a pause. The share measured is kept with each sample.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Over how long one look at the machine is taken.
const LOOK: Duration = Duration::from_millis(500);

/// (busy, total) jiffies of all CPUs so far.
fn jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The share of the whole machine busy over the next [`LOOK`], percent.
pub fn busy_pct() -> Result<f64> {
    let (b0, t0) = jiffies()?;
    crate::nap(LOOK)?;
    let (b1, t1) = jiffies()?;
    Ok(if t1 > t0 {
        100.0 * (b1 - b0) as f64 / (t1 - t0) as f64
    } else {
        0.0
    })
}

/// Wait until the machine is at most `pct` busy, looking for at most `max_wait`; the last share
/// seen (above `pct` if it never got quiet: the caller measures anyway and says so).
pub fn wait_quiet(pct: f64, max_wait: Duration) -> Result<f64> {
    let end = Instant::now() + max_wait;
    loop {
        let b = busy_pct()?;
        if b <= pct || Instant::now() >= end {
            return Ok(b);
        }
    }
}
