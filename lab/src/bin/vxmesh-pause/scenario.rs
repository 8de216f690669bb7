//! The scenarios and one measurement of one: a ping runs from c11 (n1) to c21 (n2), the
//! command runs on n1 in the middle of it, and the requests sent while the command ran are the
//! measurement's window (`ping::window`). Idle has no command: its window is a fixed stretch of
//! the same length every run. A control scenario runs no command either but keeps every CPU
//! busy for a while (one spinning thread per CPU, ordinary priority): what the machine's own
//! contention does to the round trip, for reading the others on a small machine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use vxmesh_lab::labrun::Running;

use crate::cluster::Files;
use crate::ping::{self, Ping, Window};
use crate::sched::Mode;
use crate::{Plan, nap};

/// The node the commands go to, and where the ping enters the dataplane.
pub const NODE: &str = "n1";
/// The ping's source container (on n1) and target (c21 on n2).
pub const PING_FROM: &str = "c11";
const PING_TO: &str = "10.0.9.21";

/// What runs on n1 while the ping does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Nothing (the baseline).
    Idle,
    /// `vxmesh conntrack show --json` of the filled table, its output discarded.
    ConntrackShow,
    /// A reload that adds the remote endpoints.
    AddRemote,
    /// The reload that removes them again.
    RemoveRemote,
    /// A reload that attaches the local containers.
    Attach,
    /// The reload that detaches them again.
    Detach,
    /// No command: every CPU busy (the control).
    CpuLoad,
}

impl Scenario {
    /// In measuring order: each pair of changes leaves the node as it found it.
    pub const ALL: [Scenario; 7] = [
        Scenario::Idle,
        Scenario::ConntrackShow,
        Scenario::AddRemote,
        Scenario::RemoveRemote,
        Scenario::Attach,
        Scenario::Detach,
        Scenario::CpuLoad,
    ];

    /// Short name (JSON keys, file names).
    pub fn key(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::ConntrackShow => "conntrack_show",
            Scenario::AddRemote => "reload_add_remote",
            Scenario::RemoveRemote => "reload_remove_remote",
            Scenario::Attach => "reload_attach",
            Scenario::Detach => "reload_detach",
            Scenario::CpuLoad => "cpu_load",
        }
    }

    /// What the table says it is.
    pub fn label(self, plan: &Plan) -> String {
        let n = |v: u64| crate::report::thousands(v);
        match self {
            Scenario::Idle => "(a) idle: the baseline".into(),
            Scenario::ConntrackShow => {
                format!("(b) `conntrack show --json`, {} connections", n(plan.conns))
            }
            Scenario::AddRemote => {
                format!(
                    "(c) reload: +{} remote endpoints",
                    n(u64::from(plan.remote))
                )
            }
            Scenario::RemoveRemote => {
                format!(
                    "(d) reload: −{} remote endpoints",
                    n(u64::from(plan.remote))
                )
            }
            Scenario::Attach => format!("(e) reload: attach {} AF_XDP containers", plan.attach),
            Scenario::Detach => format!("(f) reload: detach them again ({})", plan.attach),
            Scenario::CpuLoad => format!(
                "(g) control: no command, every CPU busy for {} ms",
                plan.cpu_load.as_millis()
            ),
        }
    }

    /// What the reload must report (a line of its output), if it reloads.
    fn expect(self, plan: &Plan) -> Option<String> {
        let (r, last) = (plan.remote, plan.attach.saturating_sub(1));
        match self {
            Scenario::Idle | Scenario::ConntrackShow | Scenario::CpuLoad => None,
            Scenario::AddRemote => Some(format!("fdb appnet: {r} static entries added, 0 removed")),
            Scenario::RemoveRemote => {
                Some(format!("fdb appnet: 0 static entries added, {r} removed"))
            }
            Scenario::Attach => Some(format!("endpoint b{last}: attached")),
            Scenario::Detach => Some(format!("endpoint b{last}: detached")),
        }
    }

    /// The cluster file the node must read before the command, if it reloads.
    fn file(self, files: &Files) -> Option<&str> {
        match self {
            Scenario::Idle | Scenario::ConntrackShow | Scenario::CpuLoad => None,
            Scenario::AddRemote => Some(&files.remote),
            Scenario::Attach => Some(&files.attached),
            Scenario::RemoveRemote | Scenario::Detach => Some(&files.base),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Sample {
    /// How the nodes were scheduled.
    pub mode: Mode,
    /// Which.
    pub scenario: Scenario,
    /// Run number, from 1.
    pub run: usize,
    /// How long the command took (the window), ms.
    pub command_ms: f64,
    /// The ping's requests in the window.
    pub window: Window,
    /// Everything the ping sent, and got back.
    pub ping_total: (u32, u32),
    /// Which attempt (a measurement disturbed by other programs is redone).
    pub attempt: u32,
    /// How busy the machine was just before (percent of all CPUs, over half a second; the
    /// lab's nodes are idle then, so this is other programs).
    pub busy_before_pct: f64,
    /// ... and just after.
    pub busy_after_pct: f64,
    /// Either was above the plan's "quiet": other programs may have run during it.
    pub disturbed: bool,
}

/// Now, Unix seconds (the clock of ping's `-D`).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Measure `scenario` once: write its file (if it reloads), start the ping, wait `plan.lead`,
/// run the command (bounded by `plan.max_command`), wait `plan.tail`, stop the ping, and read
/// the window. The ping's output and the command's go to `raw`.
pub fn measure(
    run: &Running,
    files: &Files,
    plan: &Plan,
    (mode, scenario, n, attempt): (Mode, Scenario, usize, u32),
    raw: &Path,
) -> Result<Sample> {
    if let Some(text) = scenario.file(files) {
        std::fs::write(&run.config, text)
            .with_context(|| format!("writing {}", run.config.display()))?;
    }
    let busy_before_pct = crate::quiet::wait_quiet(plan.quiet_pct, plan.quiet_max_wait)?;
    if busy_before_pct > plan.quiet_pct {
        crate::log(&format!(
            "the machine is still {busy_before_pct:.0}% busy after {:?}: measuring anyway",
            plan.quiet_max_wait
        ));
    }
    let stem = format!("{}-{}-{n}-try{attempt}", mode.key(), scenario.key());
    let deadline = plan.lead + plan.max_command + plan.tail + Duration::from_secs(5);
    let probe = Ping::start(
        &run.lab.endpoint_netns(PING_FROM),
        PING_TO,
        plan.interval,
        deadline,
        plan.probe_priority,
        &raw.join(format!("ping-{stem}.txt")),
    )?;
    nap(plan.lead)?;
    let t0 = unix_now();
    match scenario {
        Scenario::Idle => nap(plan.idle)?,
        Scenario::CpuLoad => spin_every_cpu(plan.cpu_load),
        Scenario::ConntrackShow => command(
            run,
            &["conntrack", "show", "--json"],
            None,
            plan.max_command,
        )?,
        _ => {
            let out = raw.join(format!("reload-{stem}.txt"));
            command(run, &["reload"], Some(&out), plan.max_command)?
        }
    }
    let t1 = unix_now();
    if let Some(line) = scenario.expect(plan) {
        let log = std::fs::read_to_string(raw.join(format!("reload-{stem}.txt")))?;
        if !log.lines().any(|l| l == line) {
            bail!("{stem}: the reload did not report \"{line}\":\n{log}");
        }
    }
    nap(plan.tail)?;
    let text = probe.stop()?;
    let trace = ping::parse(&text)?;
    let window = ping::window(&trace, t0, t1, plan.interval);
    let busy_after_pct = crate::quiet::busy_pct()?;
    if window.sent == 0 {
        bail!("{stem}: no ping request was sent while the command ran");
    }
    Ok(Sample {
        mode,
        scenario,
        run: n,
        command_ms: (t1 - t0) * 1e3,
        window,
        ping_total: (
            trace.transmitted,
            u32::try_from(trace.replies.len()).unwrap_or(u32::MAX),
        ),
        attempt,
        busy_before_pct,
        busy_after_pct,
        disturbed: busy_before_pct.max(busy_after_pct) > plan.quiet_pct,
    })
}

/// Put n1 back in the state `scenario` starts from (before it is redone): reload the file in
/// force before it, unmeasured.
pub fn restore(run: &Running, files: &Files, scenario: Scenario) -> Result<()> {
    let before = match scenario {
        Scenario::AddRemote | Scenario::Attach => &files.base,
        Scenario::RemoveRemote => &files.remote,
        Scenario::Detach => &files.attached,
        Scenario::Idle | Scenario::ConntrackShow | Scenario::CpuLoad => return Ok(()),
    };
    std::fs::write(&run.config, before)
        .with_context(|| format!("writing {}", run.config.display()))?;
    run.ctl_ok(NODE, &["reload"])?;
    Ok(())
}

/// Run `vxmesh --control <n1's socket> ARGS`, its standard output into `out` (or discarded);
/// it must succeed within `limit` (else it is killed, by its PID).
fn command(run: &Running, args: &[&str], out: Option<&Path>, limit: Duration) -> Result<()> {
    let stdout = match out {
        Some(p) => Stdio::from(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(&run.exe)
        .arg("--control")
        .arg(run.control(NODE))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("vxmesh {}", args.join(" ")))?;
    let exited = exits_within(&child, limit);
    if !matches!(exited, Ok(true)) {
        let _ = child.kill();
        let _ = child.wait();
        exited?;
        bail!(
            "vxmesh {} took longer than {limit:?} (killed)",
            args.join(" ")
        );
    }
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!(
            "vxmesh {} failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `child` exits within `limit`: waits on a pidfd, so the moment it exits is seen at
/// once (no polling). The child is not reaped here.
fn exits_within(child: &std::process::Child, limit: Duration) -> Result<bool> {
    // SAFETY: pidfd_open(2) on our own child's pid, not yet reaped (cannot have been reused).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        bail!("pidfd_open: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: poll(2) on one pollfd we own.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            bail!("poll on a pidfd: {e}");
        }
        // A signal (the user's Ctrl-C sets a flag): wait on; the command is bounded anyway.
        crate::check()?;
    }
}

/// Keep every CPU busy for `d`: one spinning thread per CPU, at ordinary priority.
fn spin_every_cpu(d: Duration) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let end = std::time::Instant::now() + d;
    let spinners: Vec<_> = (0..cpus)
        .map(|_| {
            std::thread::spawn(move || {
                while std::time::Instant::now() < end {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    for t in spinners {
        let _ = t.join();
    }
}
