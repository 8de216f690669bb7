//! `vxmesh-pause`: the longest pause of forwarding that control commands cause on a running
//! node, measured end to end (issue 13: under 1 ms). `benches/pause.rs` times the jobs the poll
//! thread runs for a command; this tool watches real traffic while real commands run.
//!
//! Two real `vxmesh run` nodes in a namespace lab (`vxmesh_lab::labrun::Running`, the shared
//! fixture with a wider network and a sink backend: `cluster`). n1's connection table is filled
//! with 100,000 established connections through the VIP from its two containers (`fill`). Then,
//! per run, each scenario (`scenario`): a `ping -D -i 0.001` (real-time priority, so the probe
//! itself sends on time) from c11 on n1 to c21 on n2 runs while n1 is idle, lists its table
//! (`conntrack show --json`), reloads a file that adds 50,000 remote endpoints, removes them
//! again, attaches 10 AF_XDP containers, detaches them again, and, as a control, runs no
//! command while every CPU is kept busy. The pings sent while the command ran give max, p99 and
//! p50 round trip and the lost count (`ping`). Each measurement waits, bounded, for a quiet
//! machine first (`quiet`). A second pass repeats it all with the nodes' poll threads at
//! real-time priority (`sched`): there no other thread can delay forwarding, so what remains is
//! the poll thread's own pause. Medians and the worst of the runs go to the terminal,
//! `results.md` and `results.json` under `target/pause/<UTC timestamp>/` (`report`), the raw
//! ping and reload output under `raw/`. A measuring tool, not a test: nothing here asserts a
//! time.
//!
//! Safety (SPEC.md): every namespace is named `vxp{pid}-...`, removed by name when `Running`
//! drops (also on failure and on Ctrl-C: the handler only sets a flag, and the program unwinds
//! at its next look) and swept once more at exit; every loop and wait is bounded; processes
//! are stopped by the PIDs this program started.

mod cluster;
mod fill;
mod ping;
mod quiet;
mod report;
mod scenario;
mod sched;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use vxmesh_lab::labrun::{Running, vxmesh_exe};

use scenario::{NODE, Sample, Scenario};
use sched::Mode;

/// The workspace's top folder (this crate is `lab/` in it).
const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The lab's nodes (both run `vxmesh run`).
const NODES: [&str; 2] = ["n1", "n2"];

#[derive(Parser)]
#[command(
    name = "vxmesh-pause",
    about = "Measure the longest forwarding pause control commands cause on a running vxmesh node, end to end (root)"
)]
struct Args {
    /// Measurements of each scenario.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Ping interval, seconds.
    #[arg(long, default_value_t = 0.001)]
    interval: f64,
    /// Connections in n1's table for `conntrack show` (half from each of c11 and c12).
    #[arg(long, default_value_t = 100_000)]
    conns: u32,
    /// Remote endpoints the reload adds (on n2).
    #[arg(long, default_value_t = 50_000)]
    remote: u32,
    /// Local AF_XDP containers the reload attaches (on n1).
    #[arg(long, default_value_t = 10)]
    attach: usize,
    /// SCHED_FIFO priority of the ping (`chrt -f`), so that it sends on time on a busy
    /// machine; 0: ordinary scheduling.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=99))]
    probe_priority: u8,
    /// After the ordinary pass, a second with each node's poll thread at SCHED_FIFO of this
    /// priority (below the ping's): what is left is the poll thread's own pause; 0: no second
    /// pass.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u8).range(0..=99))]
    poll_priority: u8,
    /// Before each measurement, wait until the machine is at most this busy (percent of all
    /// CPUs)...
    #[arg(long, default_value_t = 15.0)]
    quiet_pct: f64,
    /// ... for at most this many seconds (then measure anyway, and say so).
    #[arg(long, default_value_t = 120)]
    quiet_wait_secs: u64,
    /// Measure a scenario at most this many times while the machine was busy before or after
    /// (the last attempt is kept, marked disturbed).
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Frames a second while filling the table.
    #[arg(long, default_value_t = 100_000)]
    fill_pps: u32,
    /// Results directory (default: `target/pause/<UTC timestamp>/` in the workspace).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The vxmesh executable (default: `vxmesh` next to this program).
    #[arg(long)]
    vxmesh: Option<PathBuf>,
}

/// What one measurement does, and how long it waits.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs of each scenario.
    pub runs: usize,
    /// Ping interval, seconds.
    pub interval: f64,
    /// Connections in the table.
    pub conns: u64,
    /// Remote endpoints added and removed.
    pub remote: u32,
    /// Containers attached and detached.
    pub attach: usize,
    /// Fill rate, frames a second.
    pub fill_pps: u32,
    /// The ping's SCHED_FIFO priority (0: none).
    pub probe_priority: u8,
    /// The poll threads' SCHED_FIFO priority in the second pass (0: no second pass).
    pub poll_priority: u8,
    /// Ping before the command.
    pub lead: Duration,
    /// Ping after it.
    pub tail: Duration,
    /// The idle scenario's window.
    pub idle: Duration,
    /// The control scenario's busy stretch.
    pub cpu_load: Duration,
    /// Longest a command may take.
    pub max_command: Duration,
    /// "Quiet": the machine at most this busy (%).
    pub quiet_pct: f64,
    /// Longest wait for a quiet machine before a measurement.
    pub quiet_max_wait: Duration,
    /// Attempts at a measurement that other programs disturbed.
    pub max_attempts: u32,
}

impl Plan {
    fn new(a: &Args) -> Result<Plan> {
        if a.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if !(0.0002..=0.1).contains(&a.interval) {
            bail!("--interval must be between 0.0002 and 0.1 s");
        }
        let plan = Plan {
            runs: a.runs,
            interval: a.interval,
            conns: u64::from(a.conns),
            remote: a.remote,
            attach: a.attach,
            fill_pps: a.fill_pps.max(1000),
            probe_priority: a.probe_priority,
            poll_priority: a.poll_priority,
            lead: Duration::from_millis(300),
            tail: Duration::from_millis(300),
            idle: Duration::from_secs(1),
            cpu_load: Duration::from_millis(300),
            max_command: Duration::from_secs(30),
            quiet_pct: a.quiet_pct,
            quiet_max_wait: Duration::from_secs(a.quiet_wait_secs),
            max_attempts: a.max_attempts.max(1),
        };
        let per = u64::from(a.conns).div_ceil(fill::FROM.len() as u64);
        if u64::from(fill::FIRST_PORT) + per > 65_536 {
            bail!(
                "--conns: at most {} per container",
                65_536 - u32::from(fill::FIRST_PORT)
            );
        }
        if !(1..=250).contains(&a.attach) {
            bail!("--attach must be between 1 and 250");
        }
        // ping's icmp_seq wraps at 65536: one ping must not run that many intervals.
        let longest = plan.lead + plan.max_command + plan.tail + Duration::from_secs(5);
        if longest.as_secs_f64() / plan.interval > 65_000.0 {
            bail!(
                "--interval {} is too short for one ping of {longest:?}",
                a.interval
            );
        }
        Ok(plan)
    }

    /// A plan with the defaults, for the unit tests of other modules.
    #[cfg(test)]
    pub fn for_tests() -> Plan {
        Plan::new(&Args::parse_from(["vxmesh-pause"])).expect("the defaults are valid")
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM only set a flag; the program stops at its next look and its guards
/// remove what it built.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction whose handler only stores to an atomic (async-signal
        // safe); empty mask, no SA_RESTART, so sleeps and waits return early.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Fail if the user asked us to stop.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep `d`, looking at the stop flag every 50 ms.
pub fn nap(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// A line of progress on standard error.
pub fn log(msg: &str) {
    eprintln!("[vxmesh-pause] {msg}");
}

/// A command's first line of output, or "unknown".
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "vxmesh-pause needs root: it builds network namespaces, veths and AF_XDP sockets (try scripts/pause.sh as root)"
        );
        return ExitCode::from(2);
    }
    install_signal_handlers();
    let prefix = format!("vxp{}-", std::process::id());
    let res = real_main(&args, &prefix);
    sweep(&prefix);
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vxmesh-pause: {e:#}");
            ExitCode::from(if check().is_err() { 130 } else { 1 })
        }
    }
}

/// Last resort at exit: a namespace still named with this run's prefix (a guard that could not
/// finish) is deleted, by name.
fn sweep(prefix: &str) {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for name in String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
    {
        log(&format!("removing leftover namespace {name}"));
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

fn real_main(args: &Args, prefix: &str) -> Result<()> {
    let plan = Plan::new(args)?;
    let exe = match &args.vxmesh {
        Some(p) => p.clone(),
        None => vxmesh_exe()?,
    };
    if !exe.is_file() {
        bail!("no vxmesh executable at {}", exe.display());
    }
    let stamp = first_line("date", &["-u", "+%Y%m%d-%H%M%S"]);
    let date = first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let out = args.out.clone().unwrap_or_else(|| {
        let top = Path::new(WORKSPACE_DIR);
        let top = top.canonicalize().unwrap_or_else(|_| top.to_path_buf());
        top.join("target/pause").join(&stamp)
    });
    let raw = out.join("raw");
    std::fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
    log(&format!(
        "{} run(s) of {} scenarios, {} pass(es); results in {}",
        plan.runs,
        Scenario::ALL.len(),
        1 + usize::from(plan.poll_priority > 0),
        out.display()
    ));

    let mut modes = vec![Mode::Ordinary];
    if plan.poll_priority > 0 {
        modes.push(Mode::RtPoll(plan.poll_priority));
    }
    let files = cluster::files(prefix, plan.remote, plan.attach);
    let run = Running::start(&exe, prefix, &files.base, &NODES)?;
    let res = measure_all(&run, &files, &plan, &modes, &raw);
    // The nodes' log, kept with the results (the lab's copy goes with the lab).
    let _ = std::fs::copy(&run.logs, raw.join("nodes.log"));
    let (samples, entries) = res?;
    drop(run);

    let commit = first_line(
        "git",
        &["-C", WORKSPACE_DIR, "rev-parse", "--short", "HEAD"],
    );
    let dirty = Command::new("git")
        .args([
            "-C",
            WORKSPACE_DIR,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    let meta = report::Meta {
        date,
        commit: if dirty {
            format!("{commit}+changes")
        } else {
            commit
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: first_line("uname", &["-r"]),
        entries,
    };
    let tables = report::write(&out, &plan, &modes, &samples, &meta)?;
    println!("{tables}");
    log(&format!("results in {}", out.display()));
    Ok(())
}

/// Fill the table, then measure every scenario `plan.runs` times in each of `modes` (the nodes'
/// poll threads put at real-time priority before that pass). Returns the samples and the
/// table's (entries, established) before the first `conntrack show`.
fn measure_all(
    run: &Running,
    files: &cluster::Files,
    plan: &Plan,
    modes: &[Mode],
    raw: &Path,
) -> Result<(Vec<Sample>, (usize, usize))> {
    cluster::silence_sink(run)?;
    cluster::make_veths(&run.lab.node_netns(NODE), plan.attach)?;
    // The path works before anything is measured (and ARP is resolved).
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &run.lab.endpoint_netns(scenario::PING_FROM),
        ])
        .args(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.9.21"])
        .output()?;
    if !o.status.success() {
        bail!(
            "c11 cannot ping c21: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            run.log_tail()
        );
    }
    let entries = fill::fill_table(run, plan)?;
    let mut samples = Vec::new();
    for (mode, n) in modes
        .iter()
        .flat_map(|&m| (1..=plan.runs).map(move |n| (m, n)))
    {
        if let (Mode::RtPoll(p), 1) = (mode, n) {
            sched::realtime_poll(run, &NODES, p)?;
            log(&format!("second pass: {}", mode.label()));
        }
        for sc in Scenario::ALL {
            check()?;
            if sc == Scenario::ConntrackShow && (n, mode) != (1, Mode::Ordinary) {
                // Entries live 15 minutes; refill if some expired.
                fill::fill_table(run, plan)?;
            }
            let mut attempt = 1;
            let s = loop {
                if attempt > 1 {
                    scenario::restore(run, files, sc)?;
                }
                let s = scenario::measure(run, files, plan, (mode, sc, n, attempt), raw)
                    .with_context(|| format!("{} {} run {n}", mode.key(), sc.key()))?;
                log(&format!(
                    "{} run {n}/{}: {:<20} command {:>7.1} ms; pings {:>4} lost {}; max {:.3} p99 {:.3} p50 {:.3} ms; machine {:.0}%/{:.0}% busy before/after",
                    mode.key(),
                    plan.runs,
                    sc.key(),
                    s.command_ms,
                    s.window.sent,
                    s.window.lost,
                    s.window.max_ms.unwrap_or(f64::NAN),
                    s.window.p99_ms.unwrap_or(f64::NAN),
                    s.window.p50_ms.unwrap_or(f64::NAN),
                    s.busy_before_pct,
                    s.busy_after_pct,
                ));
                if !s.disturbed || attempt >= plan.max_attempts {
                    break s;
                }
                log("other programs were busy: measuring it again");
                attempt += 1;
            };
            samples.push(s);
            if sc == Scenario::Attach {
                expect_ports(run, BASE_PORTS + plan.attach, "after attaching")?;
            }
        }
        expect_ports(run, BASE_PORTS, "after a run (every change undone)")?;
    }
    let stats = run.ctl_ok(NODE, &["stats", "--json"])?;
    std::fs::write(raw.join("n1-stats.json"), stats)?;
    Ok((samples, entries))
}

/// n1's ports in the base file: underlay, c11, c12, ext0.
const BASE_PORTS: usize = 4;

/// n1 has `want` ports.
fn expect_ports(run: &Running, want: usize, when: &str) -> Result<()> {
    let s = run.ctl_ok(NODE, &["stats", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&s).context("stats --json")?;
    let ports = v["ports"].as_array().map_or(0, Vec::len);
    if ports != want {
        bail!("{when}: n1 has {ports} ports, not {want}");
    }
    Ok(())
}
