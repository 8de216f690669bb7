//! The probe: a fast `ping -D` from a container on n1 to one on n2 (through n1's dataplane,
//! VXLAN and n2's), its output read back into one round-trip time per echo request, and the
//! statistics of the requests sent while a command ran. A forwarding pause on n1 holds every
//! request and reply in flight behind it, so the longest round trip of the window is the pause
//! plus an ordinary round trip; a request whose reply never came is counted lost.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long `ping` may take to print its summary and exit after SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// A running `ping`, its standard output going to a file; killed (by its PID) if dropped
/// before [`Ping::stop`].
pub struct Ping {
    child: Option<Child>,
    out: PathBuf,
}

impl Ping {
    /// Start `ping -D -n -i INTERVAL -w DEADLINE ADDR` in namespace `netns`, writing to `out`;
    /// `-w` bounds its life whatever happens to this program. With `rt_priority` > 0 it runs
    /// under `chrt -f` (SCHED_FIFO), so it sends on time however busy the machine is: the
    /// probe measures the dataplane, not its own wait for a CPU.
    pub fn start(
        netns: &str,
        addr: &str,
        interval: f64,
        deadline: Duration,
        rt_priority: u8,
        out: &Path,
    ) -> Result<Ping> {
        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let err = File::create(out.with_extension("err"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]);
        if rt_priority > 0 {
            cmd.args(["chrt", "-f", &rt_priority.to_string()]);
        }
        let child = cmd
            .args(["ping", "-D", "-n", "-i"])
            .arg(format!("{interval}"))
            .arg("-w")
            .arg(deadline.as_secs().max(1).to_string())
            .arg(addr)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting ping in {netns}"))?;
        Ok(Ping {
            child: Some(child),
            out: out.to_path_buf(),
        })
    }

    /// Stop the ping with SIGINT (it prints its summary) and return what it printed.
    pub fn stop(mut self) -> Result<String> {
        let mut child = self.child.take().expect("a ping runs until stopped");
        // `ip netns exec` and `chrt` exec, so the child's pid is ping's.
        // SAFETY: kill(2) on our own child, not yet reaped (its pid cannot have been reused).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let end = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                bail!("ping did not exit within {STOP_TIMEOUT:?} of SIGINT (killed)");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // ping's standard error is kept only when it said something.
        let err = self.out.with_extension("err");
        if std::fs::metadata(&err).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&err);
        }
        std::fs::read_to_string(&self.out)
            .with_context(|| format!("reading {}", self.out.display()))
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One answered echo request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reply {
    /// `icmp_seq` (ping counts from 1).
    pub seq: u32,
    /// When the request left: the reply's `-D` timestamp less its round trip (Unix seconds).
    pub sent: f64,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
}

/// What one ping printed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// The first reply to each request, by sequence number.
    pub replies: Vec<Reply>,
    /// Requests sent (the summary's "N packets transmitted").
    pub transmitted: u32,
}

/// Read `ping -D` output: `[1733475000.123456] 64 bytes from 10.0.9.21: icmp_seq=7 ttl=64
/// time=0.045 ms` lines (duplicates skipped) and the summary.
pub fn parse(text: &str) -> Result<Trace> {
    let mut t = Trace::default();
    for line in text.lines() {
        if let Some(n) = line
            .split_once(" packets transmitted")
            .and_then(|(n, _)| n.trim().parse().ok())
        {
            t.transmitted = n;
            continue;
        }
        if line.contains("(DUP!)") {
            continue;
        }
        let (Some(ts), Some(seq), Some(rtt)) = (
            line.strip_prefix('[')
                .and_then(|l| l.split_once(']'))
                .and_then(|(ts, _)| ts.parse::<f64>().ok()),
            field(line, "icmp_seq=").and_then(|s| s.parse::<u32>().ok()),
            field(line, "time=").and_then(|s| s.parse::<f64>().ok()),
        ) else {
            continue;
        };
        t.replies.push(Reply {
            seq,
            sent: ts - rtt / 1e3,
            rtt_ms: rtt,
        });
    }
    if t.transmitted == 0 {
        bail!("no ping summary (was it stopped before it printed one?)");
    }
    t.replies.sort_by_key(|r| r.seq);
    t.replies.dedup_by_key(|r| r.seq);
    Ok(t)
}

/// The value after `key` up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(key)?;
    rest.split_whitespace().next()
}

/// The requests sent in a window of time, and their round trips.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// Requests sent in it.
    pub sent: u32,
    /// Of them, answered.
    pub received: u32,
    /// Of them, never answered.
    pub lost: u32,
    /// Longest round trip, ms (None: nothing answered).
    pub max_ms: Option<f64>,
    /// 99th percentile (nearest rank), ms.
    pub p99_ms: Option<f64>,
    /// Median (nearest rank), ms.
    pub p50_ms: Option<f64>,
}

/// The requests of `trace` sent between `t0` and `t1` (Unix seconds). A request without a reply
/// left about `interval` seconds per sequence number after the nearest answered one before it
/// (or before the nearest after it).
pub fn window(trace: &Trace, t0: f64, t1: f64, interval: f64) -> Window {
    let mut rtts = Vec::new();
    let mut w = Window::default();
    let mut next = 0; // index of the first reply with seq >= the current one
    for seq in 1..=trace.transmitted {
        while next < trace.replies.len() && trace.replies[next].seq < seq {
            next += 1;
        }
        let answered = trace.replies.get(next).filter(|r| r.seq == seq);
        let sent = match answered {
            Some(r) => r.sent,
            None => {
                let before = next.checked_sub(1).map(|i| trace.replies[i]);
                let after = trace.replies.get(next);
                match (before, after) {
                    (Some(b), _) => b.sent + f64::from(seq - b.seq) * interval,
                    (None, Some(a)) => a.sent - f64::from(a.seq - seq) * interval,
                    // Nothing answered at all: every request counts as in the window.
                    (None, None) => t0,
                }
            }
        };
        if sent < t0 || sent > t1 {
            continue;
        }
        w.sent += 1;
        match answered {
            Some(r) => {
                w.received += 1;
                rtts.push(r.rtt_ms);
            }
            None => w.lost += 1,
        }
    }
    rtts.sort_by(f64::total_cmp);
    w.max_ms = rtts.last().copied();
    w.p99_ms = rank(&rtts, 0.99);
    w.p50_ms = rank(&rtts, 0.50);
    w
}

/// Nearest-rank percentile `q` of sorted `v`.
pub fn rank(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[i - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "PING 10.0.9.21 (10.0.9.21) 56(84) bytes of data.
[1000.001000] 64 bytes from 10.0.9.21: icmp_seq=1 ttl=64 time=0.050 ms
[1000.002000] 64 bytes from 10.0.9.21: icmp_seq=2 ttl=64 time=0.040 ms
[1000.010000] 64 bytes from 10.0.9.21: icmp_seq=3 ttl=64 time=7.00 ms
[1000.010100] 64 bytes from 10.0.9.21: icmp_seq=3 ttl=64 time=7.10 ms (DUP!)
[1000.005050] 64 bytes from 10.0.9.21: icmp_seq=5 ttl=64 time=0.050 ms

--- 10.0.9.21 ping statistics ---
6 packets transmitted, 4 received, +1 duplicates, 33.3333% packet loss, time 5ms
";

    #[test]
    fn replies_and_the_summary_are_read() {
        let t = parse(OUT).unwrap();
        assert_eq!(t.transmitted, 6);
        let seqs: Vec<u32> = t.replies.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 5]);
        assert!((t.replies[2].sent - 1000.003).abs() < 1e-9);
        assert_eq!(t.replies[2].rtt_ms, 7.0);
        assert!(parse("PING x\n").is_err());
    }

    #[test]
    fn a_window_counts_what_was_sent_in_it() {
        let t = parse(OUT).unwrap();
        // Seq 4 (unanswered) left about 1 ms after seq 3; seq 6 after seq 5.
        let w = window(&t, 1000.0025, 1000.0045, 0.001);
        assert_eq!((w.sent, w.received, w.lost), (2, 1, 1));
        assert_eq!(w.max_ms, Some(7.0));
        let all = window(&t, 0.0, 2000.0, 0.001);
        assert_eq!((all.sent, all.received, all.lost), (6, 4, 2));
        assert_eq!(all.p50_ms, Some(0.05));
        assert_eq!(all.p99_ms, Some(7.0));
        let none = window(&t, 0.0, 1.0, 0.001);
        assert_eq!((none.sent, none.max_ms), (0, None));
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(rank(&v, 0.5), Some(50.0));
        assert_eq!(rank(&v, 0.99), Some(99.0));
        assert_eq!(rank(&v[..1], 0.99), Some(1.0));
        assert_eq!(rank(&[], 0.5), None);
    }
}
