//! `vxmesh-compare`: one command that measures vxmesh against the Linux kernel's own overlay
//! parts, on the same namespace topology (docs/compare.md).
//!
//! Two nodes, two containers each, an underlay between the nodes (`vxmesh_lab::lab::Lab`). Side
//! "vxmesh": a `vxmesh run` per node (c11/c21 on AF_XDP, c12/c22 on TAPs; its load balancer for
//! the VIP). Side "kernel": the same file without `attach`, switched by a bridge + VXLAN device
//! per node (nolearning, static FDB, as Docker's overlay driver), the VIP by a kube-proxy-style
//! nftables `numgen inc` DNAT in c11's own namespace (Docker's per-sandbox LB; this kernel has
//! no IPVS). Runs alternate between the sides, each on a freshly built lab, never both carrying
//! traffic at once. Per run: ping RTT, iperf3 TCP, iperf3 UDP 64 B with the machine's CPU use,
//! and wrk through the VIP with keep-alive and with a new connection per request. Medians,
//! spreads and vxmesh/kernel ratios go to the terminal, `results.json`, `results.md` and
//! `ratios.svg` in the results directory.
//!
//! Safety (SPEC.md): everything runs in namespaces named `vxc{pid}-...`, removed by name when
//! each side's run ends, on failure and on Ctrl-C (the handler only sets a flag; guards do the
//! removing), and swept once more at exit. Every load runs under `timeout`.

mod measure;
mod report;
mod topo;

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use vxmesh_lab::labrun::{Running, http_get};

use measure::{Load, Ours, Servers, Snap, check, nap, sh};
use topo::{BACKENDS, KernelLab, Side, VIP, ip_of};

/// The workspace's top folder (this crate is `lab/` in it).
const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Parser)]
#[command(
    name = "vxmesh-compare",
    about = "Compare vxmesh with the kernel's bridge + VXLAN + nftables LB on the same namespace topology (root)"
)]
struct Args {
    /// Runs per side (default 5; 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Short durations and one run: a smoke test.
    #[arg(long)]
    quick: bool,
    /// Results directory (default: `target/compare/<UTC timestamp>/` in the workspace).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure only one side.
    #[arg(long, value_enum)]
    only: Option<Side>,
    /// The vxmesh executable (default: `vxmesh` next to this program).
    #[arg(long)]
    vxmesh: Option<PathBuf>,
    /// After the runs, profile one more UDP test per side with `perf record -a` (cpu-clock),
    /// reports in raw/perf-*.txt (not part of the figures).
    #[arg(long)]
    perf: bool,
    /// Passed to each `vxmesh run` (microseconds, or "max"; default: vxmesh's own default).
    #[arg(long, value_name = "MICROS")]
    busy_poll_us: Option<String>,
}

/// Durations and counts.
#[derive(Clone, Debug)]
struct Plan {
    runs: usize,
    tcp_secs: u64,
    udp_secs: u64,
    ping_count: u32,
    wrk_secs: u64,
    /// Wait at most this long for the machine to be quiet before a measurement.
    quiet_max_wait: Duration,
    /// ... and before redoing one that other processes disturbed.
    quiet_max_wait_redo: Duration,
    /// "Quiet": at most this busy (% of the whole machine).
    quiet_pct: f64,
    /// Redo a measurement when other processes used more than this (% of one core).
    other_max_pct: f64,
    max_attempts: u32,
    /// Stop waiting and redoing after this long.
    budget: Duration,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        if args.quick {
            Plan {
                runs: args.runs.unwrap_or(1),
                tcp_secs: 2,
                udp_secs: 2,
                ping_count: 100,
                wrk_secs: 2,
                quiet_max_wait: Duration::from_secs(2),
                quiet_max_wait_redo: Duration::from_secs(2),
                quiet_pct: 25.0,
                other_max_pct: 25.0,
                max_attempts: 1,
                budget: Duration::from_secs(600),
            }
        } else {
            Plan {
                runs: args.runs.unwrap_or(5),
                tcp_secs: 5,
                udp_secs: 5,
                ping_count: 500,
                wrk_secs: 5,
                quiet_max_wait: Duration::from_secs(15),
                quiet_max_wait_redo: Duration::from_secs(60),
                quiet_pct: 25.0,
                other_max_pct: 25.0,
                max_attempts: 2,
                budget: Duration::from_secs(1800),
            }
        }
    }
}

struct Ctx {
    plan: Plan,
    exe: PathBuf,
    raw: PathBuf,
    /// `vxc{pid}-`: every namespace of this program starts with it.
    prefix: String,
    started: Instant,
    ping_interval: OnceCell<&'static str>,
    /// Extra `vxmesh run` arguments.
    run_args: Vec<String>,
}

impl Ctx {
    fn past_budget(&self) -> bool {
        self.started.elapsed() > self.plan.budget
    }
}

/// One side's lab, as the measurements see it.
struct Env {
    side: Side,
    run: usize,
    c11: String,
    c21: String,
    /// Namespaces whose UDP socket drops are read around the UDP test: n1, n2, c21.
    udp_ns: Vec<(&'static str, String)>,
    ours: Ours,
    /// raw/r{run}-{side}-
    raw: String,
}

/// What differs between the sides inside a run's measurements.
struct Hooks<'a> {
    /// The namespace of an endpoint.
    ns: &'a dyn Fn(&str) -> String,
    /// Install the VIP's rules (kernel side) before the HTTP tests.
    lb_up: &'a dyn Fn() -> Result<()>,
    /// Before each wrk (kernel side: conntrack flush).
    before_wrk: &'a dyn Fn(),
    /// The switches' counters, flattened (vxmesh side).
    dp_stats: &'a dyn Fn() -> Option<HashMap<String, u64>>,
}

/// What one side's run produced.
#[derive(Default)]
struct SideOut {
    values: BTreeMap<String, f64>,
    contention: Vec<Value>,
    notes: BTreeMap<String, Value>,
    /// Measurements whose kept attempt other processes disturbed (took more than
    /// `other_max_pct` of a core during it).
    disturbed: Vec<String>,
}

/// The measurement a metric comes from (as `gated` names it).
fn measurement_of(key: &str) -> &'static str {
    // Longer names first where one is a prefix of another.
    [
        "ping_poll",
        "ping",
        "tcp_tap",
        "tcp",
        "udp64",
        "http_ka",
        "http_close",
    ]
    .into_iter()
    .find(|m| key.starts_with(m))
    .unwrap_or("")
}

fn log(msg: &str) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    eprintln!(
        "[{:02}:{:02}:{:02}] {msg}",
        t / 3600 % 24,
        t / 60 % 60,
        t % 60
    );
}

/// (YYYYmmdd-HHMMSS, RFC 3339) of now, UTC.
fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let (h, mi, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    (
        format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "vxmesh-compare needs root: it builds network namespaces, veths, AF_XDP sockets (try scripts/compare.sh as root)"
        );
        return ExitCode::from(2);
    }
    measure::install_signal_handlers();
    let prefix = format!("vxc{}-", std::process::id());
    let res = real_main(&args, &prefix);
    sweep(&prefix);
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vxmesh-compare: {e:#}");
            if measure::interrupted() {
                ExitCode::from(130)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Last resort at exit: any namespace still named with this run's prefix (a guard that could
/// not finish) is emptied and deleted, by name.
fn sweep(prefix: &str) {
    let Ok(list) = measure::host(&["ip", "netns", "list"]) else {
        return;
    };
    for name in list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
    {
        eprintln!("vxmesh-compare: removing leftover namespace {name}");
        if let Ok(pids) = measure::host(&["ip", "netns", "pids", name]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if pid > 0 && pid != std::process::id() as i32 {
                    // SAFETY: kill(2) on one pid listed as inside our own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = measure::host(&["ip", "netns", "del", name]);
    }
}

fn tools_missing() -> Vec<&'static str> {
    [
        "ip", "bridge", "iperf3", "nginx", "wrk", "nft", "ping", "ss", "timeout",
    ]
    .into_iter()
    .filter(|t| !measure::have(t))
    .collect()
}

/// Ok(true): every side's run succeeded.
fn real_main(args: &Args, prefix: &str) -> Result<bool> {
    let missing = tools_missing();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (scripts/compare.sh installs them: apt-get install iperf3 nginx-light wrk nftables iproute2 iputils-ping)",
            missing.join(", ")
        );
    }
    let exe = match &args.vxmesh {
        Some(p) => p.clone(),
        // Not there: the check below says where it was looked for (unless it is not needed).
        None => vxmesh_lab::labrun::vxmesh_exe().or_else(|_| {
            std::env::current_exe()
                .context("locating this program")
                .map(|me| me.with_file_name("vxmesh"))
        })?,
    };
    if args.only != Some(Side::Kernel) && !exe.is_file() {
        bail!(
            "no vxmesh executable at {} (build it with `cargo build --release --workspace`, or pass --vxmesh PATH)",
            exe.display()
        );
    }
    let plan = Plan::new(args);
    if plan.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let (ts, iso) = utc_now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new(WORKSPACE_DIR).join("target/compare").join(&ts));
    let raw = out.join("raw");
    std::fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
    let ctx = Ctx {
        plan,
        exe,
        raw,
        prefix: prefix.to_string(),
        started: Instant::now(),
        ping_interval: OnceCell::new(),
        run_args: match &args.busy_poll_us {
            Some(v) => vec!["--busy-poll-us".into(), v.clone()],
            None => Vec::new(),
        },
    };
    let sides: Vec<Side> = match args.only {
        Some(s) => vec![s],
        None => vec![Side::Vxmesh, Side::Kernel],
    };
    log(&format!(
        "vxmesh-compare: {} run(s) of {}; results in {}",
        ctx.plan.runs,
        sides
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" + "),
        out.display()
    ));

    let mut samples: Vec<(Side, usize, SideOut)> = Vec::new();
    let mut failures: Vec<Value> = Vec::new();
    let mut interrupted = false;
    'runs: for run in 1..=ctx.plan.runs {
        // Alternate which side goes first, so a drift in the machine's load spreads evenly.
        let mut order = sides.clone();
        if run % 2 == 0 {
            order.reverse();
        }
        for side in order {
            if measure::interrupted() {
                interrupted = true;
                break 'runs;
            }
            log(&format!("run {run}/{}: {}", ctx.plan.runs, side.name()));
            match side_run(&ctx, side, run) {
                Ok(o) => samples.push((side, run, o)),
                Err(e) => {
                    if measure::interrupted() {
                        interrupted = true;
                        break 'runs;
                    }
                    log(&format!("run {run} {} FAILED: {e:#}", side.name()));
                    failures
                        .push(json!({"run": run, "side": side.name(), "error": format!("{e:#}")}));
                }
            }
        }
    }
    if args.perf && !interrupted && measure::have("perf") {
        for side in &sides {
            if let Err(e) = perf_pass(&ctx, *side) {
                if measure::interrupted() {
                    interrupted = true;
                    break;
                }
                log(&format!("perf pass {} failed: {e:#}", side.name()));
            }
        }
    } else if args.perf && !measure::have("perf") {
        log("--perf: no perf on the PATH (apt-get install linux-perf); skipped");
    }

    write_results(&ctx, &out, &iso, &samples, &failures, interrupted)?;
    if interrupted {
        bail!("interrupted; partial results in {}", out.display());
    }
    Ok(failures.is_empty())
}

/// One side's run on a freshly built lab, removed again at the end (guards).
fn side_run(ctx: &Ctx, side: Side, run: usize) -> Result<SideOut> {
    check()?;
    let prefix = format!("{}{}{run}-", ctx.prefix, &side.name()[..1]);
    let files = TempDir(std::env::temp_dir().join(format!("{prefix}files")));
    std::fs::create_dir_all(&files.0)?;
    match side {
        Side::Vxmesh => {
            let text = topo::cluster_text(Side::Vxmesh, &prefix);
            let mut running =
                Running::start_with(&ctx.exe, &prefix, &text, &["n1", "n2"], &ctx.run_args)?;
            let logs = running.logs.clone();
            let res = (|| {
                let env = env_for(side, run, &running.lab, &ctx.raw);
                let ns = |e: &str| running.lab.endpoint_netns(e);
                topo::wait_connectivity(&env.c11, &[ip_of("c12"), ip_of("c21"), ip_of("c22")])?;
                let mut out = SideOut::default();
                let offl = vswitch::port::ethtool::offloads(Some(&env.c11), "eth0")
                    .map(|o| format!("{o:?}"))
                    .unwrap_or_else(|e| e.to_string());
                out.notes.insert("c11_eth0_offloads".into(), json!(offl));
                let dp_stats = || {
                    let mut m = HashMap::new();
                    for n in ["n1", "n2"] {
                        let s = running.ctl_ok(n, &["stats", "--json"]).ok()?;
                        let v: Value = serde_json::from_str(&s).ok()?;
                        measure::flatten_counters(&format!("{n}."), &v, &mut m);
                    }
                    Some(m)
                };
                let hooks = Hooks {
                    ns: &ns,
                    lb_up: &|| Ok(()),
                    before_wrk: &|| {},
                    dp_stats: &dp_stats,
                };
                measure_side(ctx, &env, &files.0, &mut out, &hooks)?;
                for n in ["n1", "n2"] {
                    if let Ok(s) = running.ctl_ok(n, &["stats", "--json"]) {
                        let _ = std::fs::write(format!("{}stats-{n}.json", env.raw), s);
                    }
                }
                // The ping again with both nodes polling all the time (`--busy-poll-us max`,
                // VPP's polling mode): the difference is what the default window's wake-ups
                // cost. Restarted nodes rebuild their tables from the same cluster file.
                for n in ["n1", "n2"] {
                    running.stop_node(n)?;
                }
                running.run_args = vec!["--busy-poll-us".into(), "max".into()];
                for n in ["n1", "n2"] {
                    running.start_node(n)?;
                }
                topo::wait_connectivity(&env.c11, &[ip_of("c21")])?;
                // Both nodes spin now: the machine is never quiet, so no waiting for it.
                ping_test(ctx, &env, &mut out, "ping_poll", false)?;
                Ok(out)
            })();
            let _ = std::fs::copy(
                &logs,
                format!("{}/r{run}-vxmesh-nodes.log", ctx.raw.display()),
            );
            drop(running);
            res
        }
        Side::Kernel => {
            let k = KernelLab::start(&prefix)?;
            let env = env_for(side, run, &k.lab, &ctx.raw);
            let ns = |e: &str| k.lab.endpoint_netns(e);
            topo::wait_connectivity(&env.c11, &[ip_of("c12"), ip_of("c21"), ip_of("c22")])?;
            let mut out = SideOut::default();
            let offl = vswitch::port::ethtool::offloads(Some(&env.c11), "eth0")
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|e| e.to_string());
            out.notes.insert("c11_eth0_offloads".into(), json!(offl));
            out.notes.insert(
                "bridge_nf_call_iptables".into(),
                json!(k.br_nf().unwrap_or_else(|| "absent".into())),
            );
            let hooks = Hooks {
                ns: &ns,
                lb_up: &|| k.lb_up(),
                before_wrk: &|| k.flush_conntrack(),
                dp_stats: &|| None,
            };
            measure_side(ctx, &env, &files.0, &mut out, &hooks)?;
            Ok(out)
        }
    }
}

fn env_for(side: Side, run: usize, lab: &vxmesh_lab::lab::Lab, raw: &Path) -> Env {
    Env {
        side,
        run,
        c11: lab.endpoint_netns("c11"),
        c21: lab.endpoint_netns("c21"),
        udp_ns: vec![
            ("n1", lab.node_netns("n1")),
            ("n2", lab.node_netns("n2")),
            ("c21", lab.endpoint_netns("c21")),
        ],
        ours: Ours::new(&lab.namespaces()),
        raw: format!("{}/r{run}-{}-", raw.display(), side.name()),
    }
}

/// A file or directory removed when dropped.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Wait (bounded) for the machine to be quiet; the busy % seen last.
fn quiet_gate(ctx: &Ctx, redo: bool) -> Result<f64> {
    let max = if ctx.past_budget() {
        Duration::ZERO
    } else if redo {
        ctx.plan.quiet_max_wait_redo
    } else {
        ctx.plan.quiet_max_wait
    };
    let end = Instant::now() + max;
    loop {
        let busy = measure::busy_pct(Duration::from_millis(500))?;
        if busy <= ctx.plan.quiet_pct {
            return Ok(busy);
        }
        if Instant::now() >= end {
            log(&format!(
                "  machine still {busy:.0}% busy after {max:?}; measuring anyway"
            ));
            return Ok(busy);
        }
        nap(Duration::from_secs(1))?;
    }
}

/// Run measurement `f` behind the quiet gate; redo it (bounded) if other sessions' processes
/// took more than `other_max_pct` of a core while it ran. Contention is recorded either way.
fn gated<T>(
    ctx: &Ctx,
    env: &Env,
    what: &str,
    out: &mut SideOut,
    f: impl FnMut() -> Result<T>,
) -> Result<T> {
    gated_with(ctx, env, what, out, true, f)
}

/// [`gated`], optionally without waiting for a quiet machine first: when the measured side
/// itself keeps the cores busy (nodes that never stop polling), quiet never comes; other
/// sessions' CPU is still checked during the measurement.
fn gated_with<T>(
    ctx: &Ctx,
    env: &Env,
    what: &str,
    out: &mut SideOut,
    wait_quiet: bool,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut attempt = 1;
    loop {
        check()?;
        let busy_pre = if wait_quiet {
            quiet_gate(ctx, attempt > 1)?
        } else {
            measure::busy_pct(Duration::from_millis(500))?
        };
        let a = Snap::take(&env.ours)?;
        let v = f()?;
        let b = Snap::take(&env.ours)?;
        let other_pct = 100.0 * a.other_s(&b) / a.secs(&b).max(1e-3);
        out.contention.push(json!({
            "measurement": what, "attempt": attempt,
            "busy_before_pct": (busy_pre * 10.0).round() / 10.0,
            "other_pct_of_a_core": (other_pct * 10.0).round() / 10.0,
        }));
        if other_pct <= ctx.plan.other_max_pct
            || attempt >= ctx.plan.max_attempts
            || ctx.past_budget()
        {
            if other_pct > ctx.plan.other_max_pct {
                out.disturbed.push(what.to_string());
                log(&format!(
                    "  {what}: other processes used {other_pct:.0}% of a core during it (kept)"
                ));
            }
            return Ok(v);
        }
        log(&format!(
            "  {what}: other processes used {other_pct:.0}% of a core during it; redoing ({}/{})",
            attempt + 1,
            ctx.plan.max_attempts
        ));
        attempt += 1;
    }
}

/// Every measurement of one side's run. `lb_up` installs the VIP's rules (kernel side) before
/// the HTTP tests; `before_wrk` runs before each wrk (kernel: conntrack flush).
fn measure_side(
    ctx: &Ctx,
    env: &Env,
    files: &Path,
    out: &mut SideOut,
    hooks: &Hooks,
) -> Result<()> {
    let p = &ctx.plan;
    let ns = hooks.ns;
    let mut servers = Servers::default();
    // Servers: iperf3 in c21, nginx in each backend.
    servers.start(
        &env.c21,
        &["iperf3", "-s"],
        Path::new(&format!("{}iperf3-s.log", env.raw)),
    )?;
    for b in BACKENDS {
        let conf = vxmesh_lab::labrun::nginx_conf(files, b)?;
        let conf_s = conf.display().to_string();
        servers.start(
            &ns(b),
            &["nginx", "-c", &conf_s],
            Path::new(&format!("{}nginx-{b}.log", env.raw)),
        )?;
    }
    servers.start(
        &ns("c22"),
        &["iperf3", "-s"],
        Path::new(&format!("{}iperf3-s-c22.log", env.raw)),
    )?;
    measure::wait_listening(&env.c21, 5201)?;
    measure::wait_listening(&ns("c22"), 5201)?;
    for b in BACKENDS {
        measure::wait_listening(&ns(b), 80)?;
    }
    let tag = format!("r{} {}", env.run, env.side.name());

    // 1. ping RTT (first, while everything is idle).
    ping_test(ctx, env, out, "ping", true)?;

    // 2. TCP throughput: AF_XDP c11 -> c21, then TAPs with offloads (on vxmesh) c12 -> c22.
    for (client, server, key, name) in [
        ("c11", "c21", "tcp", "tcp"),
        ("c12", "c22", "tcp_tap", "tcp-c12-c22"),
    ] {
        let gbps = gated(ctx, env, key, out, || {
            let f = format!("{}iperf3-{name}.json", env.raw);
            let secs = p.tcp_secs.to_string();
            let args = ["iperf3", "-c", ip_of(server), "-t", &secs, "-J"];
            Load::start(&ns(client), p.tcp_secs + 20, &args, Path::new(&f))?.wait()?;
            measure::parse_iperf_tcp(&std::fs::read_to_string(&f)?)
        })?;
        out.values.insert(format!("{key}_gbps"), gbps);
        log(&format!(
            "  {tag}: TCP {client} -> {server} {gbps:.2} Gbit/s"
        ));
    }

    // 3. UDP 64 B packets per second, and the CPU they cost.
    let usecs = p.udp_secs.to_string();
    let UdpOut {
        values: udp_vals,
        deltas,
        sock_drops,
        placement,
    } = gated(ctx, env, "udp64", out, || {
        udp_test(ctx, env, &usecs, hooks.dp_stats)
    })?;
    log(&format!(
        "  {tag}: threads on CPUs during the UDP test: {}",
        placement.join(" | ")
    ));
    out.notes
        .insert("udp64_thread_cpus".into(), json!(placement));
    if !sock_drops.is_empty() {
        log(&format!(
            "  {tag}: UDP socket drops during the UDP test: {}",
            sock_drops
                .iter()
                .map(|(k, v)| format!("{k} +{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.notes.insert(
        "udp64_udp_socket_drops".into(),
        Value::Object(sock_drops.into_iter().map(|(k, v)| (k, json!(v))).collect()),
    );
    if let Some(d) = deltas {
        let drops: Vec<String> = d
            .iter()
            .filter(|(k, _)| {
                ["drop", "full", "empty", "would_block", "error"]
                    .iter()
                    .any(|w| k.contains(w))
            })
            .take(6)
            .map(|(k, v)| format!("{k} +{v}"))
            .collect();
        if !drops.is_empty() {
            log(&format!(
                "  {tag}: vxmesh losses during the UDP test: {}",
                drops.join(", ")
            ));
        }
        out.notes.insert(
            "udp64_vxmesh_counter_deltas".into(),
            Value::Object(d.into_iter().map(|(k, v)| (k, json!(v))).collect()),
        );
    }
    log(&format!(
        "  {tag}: UDP 64 B rx {} pkt/s (tx {}, loss {:.2}%), {:.2} CPU s per Mpkt ({:.2} cores busy)",
        report::fmt_num(udp_vals["udp64_rx_pps"]),
        report::fmt_num(udp_vals["udp64_tx_pps"]),
        udp_vals["udp64_loss_pct"],
        udp_vals["udp64_cpu_s_per_mpkt"],
        udp_vals["udp64_cpu_cores"],
    ));
    out.values.extend(udp_vals);

    // 4. HTTP through the VIP.
    (hooks.lb_up)()?;
    let dist = rr_check(&env.c11)?;
    let even = dist.values().all(|&n| n == 10) && dist.len() == 3;
    if !even {
        log(&format!(
            "  {tag}: WARNING: 30 requests to the VIP gave {dist:?}, not 10/10/10"
        ));
    }
    out.notes.insert("rr_30_requests".into(), json!(dist));
    let wsecs = format!("{}s", p.wrk_secs);
    let url = format!("http://{VIP}/");
    for (close, key) in [(false, "http_ka"), (true, "http_close")] {
        let w = gated(ctx, env, key, out, || {
            (hooks.before_wrk)();
            let f = format!(
                "{}wrk-{}.txt",
                env.raw,
                if close { "close" } else { "keepalive" }
            );
            let mut a = vec!["wrk", "-t1", "-c32", "-d", &wsecs, "--latency"];
            if close {
                a.extend(["-H", "Connection: close"]);
            }
            a.push(&url);
            Load::start(&env.c11, p.wrk_secs + 30, &a, Path::new(&f))?.wait()?;
            measure::parse_wrk(&std::fs::read_to_string(&f)?)
        })?;
        out.values.insert(format!("{key}_rps"), w.rps);
        out.values.insert(format!("{key}_p50_us"), w.p50_us);
        out.values.insert(format!("{key}_p99_us"), w.p99_us);
        out.values.insert(format!("{key}_errors"), w.errors);
        log(&format!(
            "  {tag}: HTTP {}: {} req/s, p50 {:.0} us, p99 {:.0} us{}",
            if close {
                "new connection"
            } else {
                "keep-alive"
            },
            report::fmt_num(w.rps),
            w.p50_us,
            w.p99_us,
            if w.errors > 0.0 {
                format!(", {} errors", w.errors)
            } else {
                String::new()
            }
        ));
    }
    drop(servers);
    Ok(())
}

/// `ping -c N -i 0.002` c11 -> c21 (`-i 0.01` where the faster interval is refused): the p50 and
/// p99 RTT and the reply count as `{key}_p50_us`, `{key}_p99_us`, `{key}_replies`.
fn ping_test(ctx: &Ctx, env: &Env, out: &mut SideOut, key: &str, wait_quiet: bool) -> Result<()> {
    let c21_ip = ip_of("c21");
    let ivl = *ctx.ping_interval.get_or_init(|| {
        if sh(
            &env.c11,
            &["ping", "-c", "3", "-i", "0.002", "-W", "1", c21_ip],
        )
        .is_ok()
        {
            "0.002"
        } else {
            log("ping -i 0.002 refused; using -i 0.01");
            "0.01"
        }
    });
    let count = ctx.plan.ping_count.to_string();
    let ping_secs =
        (f64::from(ctx.plan.ping_count) * ivl.parse::<f64>().unwrap_or(0.01)).ceil() as u64 + 15;
    let (p50, p99, n) = gated_with(ctx, env, key, out, wait_quiet, || {
        let f = format!("{}{key}.txt", env.raw);
        let st = Load::start(
            &env.c11,
            ping_secs,
            &["ping", "-c", &count, "-i", ivl, "-W", "1", c21_ip],
            Path::new(&f),
        )?
        .wait()?;
        let rtts = measure::parse_ping(&std::fs::read_to_string(&f)?);
        if rtts.is_empty() {
            bail!("ping c11 -> c21: no replies ({st})");
        }
        Ok((
            measure::pct(&rtts, 50.0),
            measure::pct(&rtts, 99.0),
            rtts.len() as f64,
        ))
    })?;
    out.values.insert(format!("{key}_p50_us"), p50);
    out.values.insert(format!("{key}_p99_us"), p99);
    out.values.insert(format!("{key}_replies"), n);
    log(&format!(
        "  r{} {}: {key}: p50 {p50:.0} us, p99 {p99:.0} us ({n} replies)",
        env.run,
        env.side.name()
    ));
    Ok(())
}

/// The UDP test: iperf3 `-u -b 0 -l 64` from c11 to c21. CPU from `/proc/stat` (user + nice +
/// system + irq + softirq, all CPUs) over a steady window (0.5 s after the start to 0.5 s
/// before the end), divided by the frames that entered c21's eth0 in that window; plus the
/// same over the whole iperf3 run divided by iperf3's server-counted packets.
struct UdpOut {
    values: BTreeMap<String, f64>,
    /// vxmesh's counters that moved (vxmesh side).
    deltas: Option<Vec<(String, u64)>>,
    /// UDP socket errors that moved in n1, n2, c21.
    sock_drops: Vec<(String, u64)>,
    /// Which CPU each poll thread and iperf3 ran on, sampled at a third and two thirds of the
    /// steady window ("comm:cpu ...").
    placement: Vec<String>,
}

fn udp_test(
    ctx: &Ctx,
    env: &Env,
    secs: &str,
    dp_stats: &dyn Fn() -> Option<HashMap<String, u64>>,
) -> Result<UdpOut> {
    let d = ctx.plan.udp_secs as f64;
    let c0 = dp_stats();
    let snmp = || -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for (name, ns) in &env.udp_ns {
            if let Ok(t) = sh(ns, &["cat", "/proc/net/snmp"]) {
                for (k, v) in measure::snmp_udp(&t) {
                    m.insert(format!("{name} Udp.{k}"), v);
                }
            }
        }
        m
    };
    let u0 = snmp();
    let f = format!("{}iperf3-udp64.json", env.raw);
    let s0 = Snap::take(&env.ours)?;
    let load = udp64_load(ctx, env, secs, &f)?;
    let t0 = Instant::now();
    nap(Duration::from_millis(500))?;
    let rx0 = measure::rx_packets(&env.c21, "eth0")?;
    let w0 = Snap::take(&env.ours)?;
    let until = t0 + Duration::from_secs_f64(d - 0.5);
    let mut placement = Vec::new();
    for k in 1..=2 {
        let at = t0 + Duration::from_secs_f64(0.5 + (d - 1.0) * f64::from(k) / 3.0);
        nap(at.saturating_duration_since(Instant::now()))?;
        placement.push(measure::thread_cpus(&env.ours, &["vxmesh-poll", "iperf3"]));
    }
    nap(until.saturating_duration_since(Instant::now()))?;
    let w1 = Snap::take(&env.ours)?;
    let rx1 = measure::rx_packets(&env.c21, "eth0")?;
    load.wait()?;
    let s1 = Snap::take(&env.ours)?;
    let c1 = dp_stats();
    let u1 = snmp();
    let sock_drops: Vec<(String, u64)> = measure::counter_deltas(&u0, &u1, 40)
        .into_iter()
        .filter(|(k, _)| k.contains("Errors"))
        .collect();
    let deltas = c0
        .zip(c1)
        .map(|(a, b)| measure::counter_deltas(&a, &b, 100));
    let udp = measure::parse_iperf_udp(&std::fs::read_to_string(&f)?)?;
    let frames = rx1.saturating_sub(rx0) as f64;
    let wsecs = w0.secs(&w1);
    let busy = w0.busy_s(&w1);
    let other = w0.other_s(&w1);
    let mut v = BTreeMap::new();
    v.insert("udp64_rx_pps".into(), udp.rx_pps);
    v.insert("udp64_tx_pps".into(), udp.tx_pps);
    v.insert("udp64_loss_pct".into(), udp.loss_pct);
    v.insert("udp64_window_rx_pps".into(), frames / wsecs);
    v.insert("udp64_cpu_cores".into(), busy / wsecs);
    let per_m = |cpu: f64, pk: f64| if pk > 0.0 { cpu / (pk / 1e6) } else { f64::NAN };
    v.insert("udp64_cpu_s_per_mpkt".into(), per_m(busy, frames));
    v.insert(
        "udp64_cpu_s_per_mpkt_excl_other".into(),
        per_m((busy - other).max(0.0), frames),
    );
    v.insert(
        "udp64_cpu_s_per_mpkt_iperf".into(),
        per_m(s0.busy_s(&s1), udp.rx_packets),
    );
    Ok(UdpOut {
        values: v,
        deltas,
        sock_drops,
        placement,
    })
}

/// The 64-byte UDP flood, c11 -> c21, unlimited rate, for `secs`, iperf3's JSON into `json`.
fn udp64_load(ctx: &Ctx, env: &Env, secs: &str, json: &str) -> Result<Load> {
    let args = [
        "iperf3",
        "-c",
        ip_of("c21"),
        "-u",
        "-b",
        "0",
        "-l",
        "64",
        "-t",
        secs,
        "-J",
    ];
    Load::start(&env.c11, ctx.plan.udp_secs + 20, &args, Path::new(json))
}

/// 30 requests to the VIP from c11, each on a new connection: how many each backend answered.
fn rr_check(c11: &str) -> Result<BTreeMap<String, u32>> {
    let mut m = BTreeMap::new();
    let vip: std::net::SocketAddr = format!("{VIP}:80").parse().expect("VIP");
    for _ in 0..30 {
        check()?;
        let body = http_get(c11, vip).unwrap_or_else(|e| format!("error: {e:#}"));
        *m.entry(body).or_insert(0) += 1;
    }
    Ok(m)
}

/// One more UDP test per side with `perf record -a -g` (cpu-clock: this VM has no PMU), for the
/// report's "where the time goes"; not part of the figures.
fn perf_pass(ctx: &Ctx, side: Side) -> Result<()> {
    log(&format!("perf pass: {}", side.name()));
    let run = 0;
    let prefix = format!("{}{}p-", ctx.prefix, &side.name()[..1]);
    let data = ctx.raw.join(format!("perf-{}.data", side.name()));
    let report_path = ctx.raw.join(format!("perf-{}.txt", side.name()));
    let secs = ctx.plan.udp_secs.to_string();
    let record = |env: &Env| -> Result<()> {
        let data_s = data.display().to_string();
        let rec_secs = (ctx.plan.udp_secs.saturating_sub(1)).max(1).to_string();
        // perf runs in c21's namespace so that it is not mistaken for another session's work.
        let perf = Load::start(
            &env.c21,
            ctx.plan.udp_secs + 30,
            &[
                "perf",
                "record",
                "-a",
                "-g",
                "-e",
                "cpu-clock",
                "-F",
                "499",
                "-o",
                &data_s,
                "--",
                "sleep",
                &rec_secs,
            ],
            &ctx.raw.join(format!("perf-{}.record.log", side.name())),
        )?;
        let f = format!("{}iperf3-udp64.json", env.raw);
        let load = udp64_load(ctx, env, &secs, &f)?;
        load.wait()?;
        perf.wait()?;
        let mut text = Vec::new();
        // Self time by process, object and symbol; then time including callees (which system
        // calls and kernel paths it goes to) for the poll threads, or iperf3 on the kernel side.
        let busy = match side {
            Side::Vxmesh => "vxmesh-poll",
            Side::Kernel => "iperf3",
        };
        let reports: [&[&str]; 4] = [
            &["--no-children", "--sort", "comm"],
            &["--no-children", "--sort", "comm,dso"],
            &["--no-children", "--sort", "comm,dso,symbol"],
            &["--children", "--comm", busy, "--sort", "symbol"],
        ];
        for args in reports {
            let rep = std::process::Command::new("perf")
                .args(["report", "--stdio"])
                .args(args)
                .args(["--percent-limit", "0.5", "-g", "none", "-i"])
                .arg(&data)
                .output()
                .context("perf report")?;
            text.extend_from_slice(&rep.stdout);
        }
        std::fs::write(&report_path, &text)?;
        let _ = std::fs::remove_file(&data);
        let _ = std::fs::remove_file(format!("{}.old", data.display()));
        Ok(())
    };
    let files = TempDir(std::env::temp_dir().join(format!("{prefix}files")));
    std::fs::create_dir_all(&files.0)?;
    let with_servers = |env: &Env| -> Result<()> {
        let mut servers = Servers::default();
        servers.start(
            &env.c21,
            &["iperf3", "-s"],
            Path::new(&format!("{}iperf3-s.log", env.raw)),
        )?;
        measure::wait_listening(&env.c21, 5201)?;
        record(env)?;
        drop(servers);
        Ok(())
    };
    match side {
        Side::Vxmesh => {
            let text = topo::cluster_text(Side::Vxmesh, &prefix);
            let running =
                Running::start_with(&ctx.exe, &prefix, &text, &["n1", "n2"], &ctx.run_args)?;
            let mut env = env_for(side, run, &running.lab, &ctx.raw);
            env.raw = format!("{}/perf-{}-", ctx.raw.display(), side.name());
            topo::wait_connectivity(&env.c11, &[ip_of("c21")])?;
            with_servers(&env)
        }
        Side::Kernel => {
            let k = KernelLab::start(&prefix)?;
            let mut env = env_for(side, run, &k.lab, &ctx.raw);
            env.raw = format!("{}/perf-{}-", ctx.raw.display(), side.name());
            topo::wait_connectivity(&env.c11, &[ip_of("c21")])?;
            with_servers(&env)
        }
    }
}

fn first_line(args: &[&str]) -> String {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "absent".into())
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or("unknown".into(), |v| v.trim_matches('"').to_string());
    let hv = cpuinfo.contains(" hypervisor");
    json!({
        "cpu": model,
        "cpus": measure::ncpu(),
        "virtualized": hv,
        "kernel": first_line(&["uname", "-r"]),
        "os": os,
        "tools": {
            "iperf3": first_line(&["iperf3", "--version"]),
            "wrk": first_line(&["wrk", "-v"]),
            "nginx": first_line(&["nginx", "-v"]),
            "nft": first_line(&["nft", "--version"]),
            "ping": first_line(&["ping", "-V"]),
        },
    })
}

fn git_rev() -> String {
    let dir = WORKSPACE_DIR;
    let rev = first_line(&["git", "-C", dir, "rev-parse", "--short", "HEAD"]);
    let dirty = std::process::Command::new("git")
        .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if dirty { format!("{rev}+changes") } else { rev }
}

const NOTES: &[&str] = &[
    "Same topology on both sides (vxmesh_lab::lab::Lab from one cluster file; the kernel side's file has no `attach`): 2 node namespaces joined through an underlay bridge namespace, 2 container namespaces per node, MTU 1450 in the overlay, 1500 underlay.",
    "vxmesh side: c11 and c21 on AF_XDP (veth), c12 and c22 on TAPs with offloads (vnet_hdr, TX checksum and TSO: 64 KB TCP super-frames in, GRO-merged super-frames out); the VIP by vxmesh's load balancer (rr, conntrack). Kernel side: bridge + VXLAN device per node (nolearning, static FDB), VIP by a kube-proxy-style nftables ruleset with `numgen inc mod 3` DNAT + conntrack in c11's own namespace (Docker's per-sandbox LB; no IPVS in this kernel), installed just before the HTTP tests, as the reference did.",
    "Offloads differ, on purpose: the kernel side leaves the containers' TX checksum/TSO/GSO at the veth defaults (on, as Docker does); vxmesh needs them off on its AF_XDP containers (AF_XDP carries raw frames: no partial checksums, no 64 KB super-frames), so c11 -> c21 moves 1450-byte frames through vxmesh while the kernel moves 64 KB GSO super-packets through its bridge and VXLAN device. vxmesh's TAPs (c12, c22) take offloads: a super-frame crosses the pipeline once, is cut into segments in software at the underlay, which sends them as one UDP GSO message; the receiving node gets them with UDP GRO and merges them back into a super-frame for the TAP.",
    "Both vxmesh nodes' poll threads busy-poll while traffic flows, yielding the CPU on empty rounds (they sleep in poll(2) after the busy-poll window, 200 µs unless --busy-poll-us says otherwise), so under load vxmesh spends up to two cores of this machine on polling, next to iperf3/nginx/wrk; the CPU-per-packet figure includes them. Idle, it sleeps: the ping RTT includes the wake-up (a sleeping node wakes twice per round trip: n1 for the request, n2 when it arrives; both are still polling for the reply). The \"always polling\" ping rows come from the same run, after its other tests, with both nodes restarted with --busy-poll-us max: no wake-ups, at the cost of two cores spinning whether or not traffic flows.",
    "CPU per million packets: /proc/stat user+nice+system+irq+softirq over all CPUs, in a steady window (0.5 s after iperf3 starts to 0.5 s before its end), divided by the frames that entered c21's eth0 in that window. It is system-wide: the vxmesh poll threads, iperf3 client and server, softirq, and anything else the machine ran (the 'other sessions' column of the contention record; a variant with it subtracted is in the supporting table).",
    "iperf3 UDP 64 B is sender-limited on the kernel side (one iperf3 thread), as the reference notes; the figure is the overlay's delivered rate for that sender.",
];

fn write_results(
    ctx: &Ctx,
    out: &Path,
    iso: &str,
    samples: &[(Side, usize, SideOut)],
    failures: &[Value],
    interrupted: bool,
) -> Result<()> {
    let flat: Vec<(Side, BTreeMap<String, f64>)> = samples
        .iter()
        .map(|(s, _, o)| (*s, o.values.clone()))
        .collect();
    let head: Vec<&report::Metric> = report::METRICS.iter().filter(|m| m.headline).collect();
    let rest: Vec<&report::Metric> = report::METRICS.iter().filter(|m| !m.headline).collect();
    let head_rows = report::rows(&flat, &head);
    let rest_rows = report::rows(&flat, &rest);
    // The same over the measurements no other session disturbed.
    let undisturbed: Vec<(Side, BTreeMap<String, f64>)> = samples
        .iter()
        .map(|(s, _, o)| {
            let v = o
                .values
                .iter()
                .filter(|(k, _)| !o.disturbed.iter().any(|d| d == measurement_of(k)))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            (*s, v)
        })
        .collect();
    let clean_rows = report::rows(&undisturbed, &head);
    let n_disturbed: usize = samples.iter().map(|s| s.2.disturbed.len()).sum();
    let n_meas: usize = samples
        .iter()
        .map(|s| {
            s.2.values
                .keys()
                .map(|k| measurement_of(k))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        })
        .sum();
    let machine = machine();
    let cmdline: Vec<String> = std::env::args().collect();
    let n_vx = samples.iter().filter(|s| s.0 == Side::Vxmesh).count();
    let n_k = samples.iter().filter(|s| s.0 == Side::Kernel).count();
    let subtitle = format!(
        "{iso} · {} × {} · kernel {} · {n_vx} vxmesh / {n_k} kernel runs",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?")
    );

    let mut md = String::new();
    let _ = writeln!(md, "# vxmesh vs the kernel's overlay dataplane\n");
    let _ = writeln!(md, "Command: `{}`  ", cmdline.join(" "));
    let _ = writeln!(md, "Date: {iso}  ");
    let _ = writeln!(
        md,
        "Machine: {} × {} ({}), {}, kernel {}  ",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or("?"),
        if machine["virtualized"] == true {
            "virtualized"
        } else {
            "bare metal"
        },
        machine["os"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(md, "vxmesh: {}  ", git_rev());
    let _ = writeln!(
        md,
        "Runs: {n_vx} vxmesh, {n_k} kernel (alternating); iperf3 TCP {} s, UDP {} s; ping {} at -i {}; wrk {} s{}\n",
        ctx.plan.tcp_secs,
        ctx.plan.udp_secs,
        ctx.plan.ping_count,
        ctx.ping_interval.get().copied().unwrap_or("?"),
        ctx.plan.wrk_secs,
        if interrupted {
            " — INTERRUPTED, partial"
        } else {
            ""
        }
    );
    md += &report::table(&head_rows);
    if n_disturbed > 0 {
        let _ = writeln!(
            md,
            "\n{n_disturbed} of {n_meas} measurements were disturbed by other sessions (they used more than {:.0}% of a core during it, also on the second try; see Contention below). The same table over the undisturbed measurements only:\n",
            ctx.plan.other_max_pct
        );
        md += &report::table(&clean_rows);
    }
    md += "\nSupporting figures:\n\n";
    md += &report::table(&rest_rows);
    md += "\nNotes:\n\n";
    for n in NOTES {
        let _ = writeln!(md, "- {n}");
    }
    md += "\nContention (other sessions share this machine): per measurement, the whole machine's busy % just before it, and the CPU that processes outside this comparison's namespaces used during it, in % of one core (a lower bound; a measurement above the limit was redone once):\n\n";
    md += "| run | side | measurement: busy before % / others % of a core |\n|---|---|---|\n";
    for (side, run, o) in samples {
        let cells: Vec<String> = o
            .contention
            .iter()
            .map(|c| {
                format!(
                    "{}{}: {} / {}",
                    c["measurement"].as_str().unwrap_or("?"),
                    if c["attempt"] == 1 {
                        String::new()
                    } else {
                        format!(" (try {})", c["attempt"])
                    },
                    c["busy_before_pct"],
                    c["other_pct_of_a_core"]
                )
            })
            .collect();
        let _ = writeln!(md, "| {run} | {} | {} |", side.name(), cells.join("; "));
    }
    if !failures.is_empty() {
        md += "\nFailed runs:\n\n";
        for f in failures {
            let _ = writeln!(md, "- {f}");
        }
    }

    let runs: Vec<Value> = samples
        .iter()
        .map(|(s, r, o)| {
            json!({"side": s.name(), "run": r, "values": o.values, "notes": o.notes, "contention": o.contention, "disturbed": o.disturbed})
        })
        .collect();
    let j = json!({
        "command": cmdline,
        "date": iso,
        "machine": machine,
        "vxmesh_rev": git_rev(),
        "plan": {
            "runs": ctx.plan.runs, "tcp_secs": ctx.plan.tcp_secs, "udp_secs": ctx.plan.udp_secs,
            "ping_count": ctx.plan.ping_count, "ping_interval_s": ctx.ping_interval.get().copied(),
            "wrk_secs": ctx.plan.wrk_secs, "wrk": "wrk -t1 -c32 --latency [-H 'Connection: close'] http://10.0.9.100/",
            "quiet_pct": ctx.plan.quiet_pct, "other_max_pct_of_a_core": ctx.plan.other_max_pct,
            "max_attempts": ctx.plan.max_attempts,
            "quiet_max_wait_s": ctx.plan.quiet_max_wait.as_secs(),
            "quiet_max_wait_redo_s": ctx.plan.quiet_max_wait_redo.as_secs(),
        },
        "interrupted": interrupted,
        "failures": failures,
        "notes": NOTES,
        "metrics": report::rows_json(&head_rows),
        "metrics_undisturbed": report::rows_json(&clean_rows),
        "disturbed_measurements": n_disturbed,
        "supporting": report::rows_json(&rest_rows),
        "runs": runs,
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&j)?)?;
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(
        out.join("ratios.svg"),
        report::svg(
            &head_rows,
            "vxmesh / kernel (same namespace topology)",
            &subtitle,
        ),
    )?;

    // PNG too, when an SVG renderer is at hand (optional: apt-get install librsvg2-bin).
    if measure::have("rsvg-convert") {
        let _ = measure::host(&[
            "rsvg-convert",
            "-o",
            &out.join("ratios.png").display().to_string(),
            &out.join("ratios.svg").display().to_string(),
        ]);
    }
    println!();
    println!("{}", report::table(&head_rows));
    if n_disturbed > 0 {
        println!(
            "{n_disturbed} of {n_meas} measurements were disturbed by other sessions; over the undisturbed ones only:\n\n{}",
            report::table(&clean_rows)
        );
    }
    println!("Supporting figures:\n\n{}", report::table(&rest_rows));
    println!(
        "Note: container offloads differ (kernel: TSO/GSO/TX checksum on, as Docker; vxmesh: off on AF_XDP containers, on for TAPs); see results.md."
    );
    println!(
        "Results: {}/results.json, results.md, ratios.svg (ratios.png), raw/",
        out.display()
    );
    Ok(())
}
