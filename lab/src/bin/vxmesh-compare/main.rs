//! `vxmesh-compare`: one command that measures vxmesh against the Linux kernel's own overlay
//! parts and against Open vSwitch's userspace datapath, on the same namespace topology
//! (docs/compare.md).
//!
//! Two nodes, two containers each, an underlay between the nodes (`vxmesh_lab::lab::Lab`). Side
//! "vxmesh": a `vxmesh run` per node (c11/c21 on AF_XDP, c12/c22 on TAPs; its load balancer for
//! the VIP). Side "kernel": the same file without `attach`, switched by a bridge + VXLAN device
//! per node (nolearning, static FDB, as Docker's overlay driver), the VIP by a kube-proxy-style
//! nftables `numgen inc` DNAT in c11's own namespace (Docker's per-sandbox LB; this kernel has
//! no IPVS). Side "ovs": the same file, switched by an `ovsdb-server` + `ovs-vswitchd` of its
//! own per node inside the node's namespace (`datapath_type=netdev`, AF_XDP ports on the
//! containers' veths and on the underlay, a VXLAN port per peer, static OpenFlow rules), the VIP
//! by the kernel side's nftables DNAT in c11. Side "wire", the floor: c11 and c21 on one veth
//! pair, nothing between their stacks (only the tests between those two). Runs alternate the
//! order of the sides, each on a freshly built lab, never two carrying traffic at once. Per run: ping RTT, iperf3 TCP, iperf3 UDP 64 B with the machine's CPU use,
//! and wrk through the VIP with keep-alive and with a new connection per request. Medians,
//! spreads and vxmesh/kernel and vxmesh/OVS ratios go to the terminal, `results.json`,
//! `results.md`, `ratios.svg` and `ratios-ovs.svg` in the results directory.
//!
//! Safety (SPEC.md): everything runs in namespaces named `vxc{pid}-...`, removed by name when
//! each side's run ends, on failure and on Ctrl-C (the handler only sets a flag; guards do the
//! removing), and swept once more at exit. Every load runs under `timeout`.
//!
//! Here: the command line, the plan and the run loop. [`side`] builds one side's lab and runs
//! [`suite`]'s measurements on it, [`measure`] runs and reads the tools, [`topo`] is the shared
//! topology and the kernel side's parts, [`report`] the statistics and [`results`] the files.

mod measure;
mod report;
mod results;
mod side;
mod suite;
mod topo;

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

use results::write_results;
use side::{SideOut, perf_pass, side_run};
use topo::Side;

/// The workspace's top folder (this crate is `lab/` in it).
const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Parser)]
#[command(
    name = "vxmesh-compare",
    about = "Compare vxmesh with the kernel's bridge + VXLAN + nftables LB and with Open vSwitch's userspace datapath on the same namespace topology (root)"
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
    /// Measure only one side (`wire`: only the floor).
    #[arg(long, value_enum)]
    only: Option<Side>,
    /// Leave out the wire (c11 and c21 on one veth pair, no switch: the floor every side's
    /// ping, TCP c11 -> c21 and UDP figures sit above), measured in each run by default.
    #[arg(long)]
    no_wire: bool,
    /// The vxmesh executable (default: `vxmesh` next to this program).
    #[arg(long)]
    vxmesh: Option<PathBuf>,
    /// After the runs, profile one more UDP test per side with `perf record -a` (cpu-clock),
    /// reports in raw/perf-*.txt (not part of the figures).
    #[arg(long)]
    perf: bool,
    /// Run only these tests (comma-separated; default all): `ping` (both pings), `tcp`
    /// (c11 -> c21, AF_XDP), `tcp-tap` (c12 -> c22, TAPs), `udp64`, `http` (both wrk tests and
    /// the round-robin check). The others show as "—" in the tables.
    #[arg(long, value_enum, value_delimiter = ',')]
    tests: Vec<Test>,
    /// Which test `--perf` profiles: `udp64` (the 64-byte UDP flood c11 -> c21, the default),
    /// `tcp` (iperf3 c11 -> c21, AF_XDP containers) or `tcp-tap` (iperf3 c12 -> c22, TAPs).
    #[arg(long, value_enum, default_value = "udp64")]
    perf_test: PerfTest,
    /// Passed to each `vxmesh run` (microseconds, or "max"; default: vxmesh's own default).
    #[arg(long, value_name = "MICROS")]
    busy_poll_us: Option<String>,
    /// Passed to each `vxmesh run`: poll threads per node (default: vxmesh's own, 1).
    #[arg(long, value_name = "N")]
    workers: Option<u16>,
    /// Passed to each `vxmesh run`: the CPUs its poll threads are pinned to (both nodes get
    /// the same list; default: not pinned).
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    /// Passed to each `vxmesh run`: the receiver watcher's period (0: off; default: vxmesh's
    /// own, 1000).
    #[arg(long, value_name = "MICROS")]
    receiver_watch_us: Option<u64>,
    /// Whether each `vxmesh run` gets `--afxdp-offloads` for the whole run (the AF_XDP
    /// containers c11 and c21 keep their TCP offloads, as the kernel side's keep theirs). Off
    /// (vxmesh's default): the run measures the option apart, in the rows "vxmesh
    /// --afxdp-offloads" (TCP c11 -> c21 and ping, after the other tests, nodes restarted).
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = ["on", "off"])]
    afxdp_offloads: String,
    /// Passed to each `vxmesh run`: the AF_XDP containers' veths' receive deferral (default:
    /// vxmesh's own, none). The "--afxdp-offloads" rows run without it: the two options
    /// exclude each other.
    #[arg(long, value_name = "MICROS")]
    afxdp_napi_defer_us: Option<u64>,
    /// OVS side: let its PMD threads sleep up to this long under low load
    /// (`other_config:pmd-maxsleep`, experimental in OVS 3.1; default: OVS's, always polling).
    #[arg(long, value_name = "MICROS")]
    ovs_pmd_maxsleep: Option<u32>,
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

/// A test of the suite (`--tests`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Test {
    /// The ping RTT, default window and always polling.
    Ping,
    /// iperf3 TCP c11 -> c21 (AF_XDP containers).
    Tcp,
    /// iperf3 TCP c12 -> c22 (TAP containers).
    TcpTap,
    /// The 64-byte UDP flood and its CPU.
    Udp64,
    /// HTTP through the VIP.
    Http,
}

/// The test a `--perf` pass profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PerfTest {
    /// The 64-byte UDP flood, c11 -> c21.
    Udp64,
    /// iperf3 TCP c11 -> c21 (AF_XDP containers).
    Tcp,
    /// iperf3 TCP c12 -> c22 (TAP containers with offloads).
    TcpTap,
}

struct Ctx {
    plan: Plan,
    /// The tests to run (`--tests`; empty: all).
    tests: Vec<Test>,
    /// What `--perf` profiles.
    perf_test: PerfTest,
    exe: PathBuf,
    raw: PathBuf,
    /// `vxc{pid}-`: every namespace of this program starts with it.
    prefix: String,
    started: Instant,
    ping_interval: OnceCell<&'static str>,
    /// Extra `vxmesh run` arguments.
    run_args: Vec<String>,
    /// OVS's `pmd-maxsleep` (None: always polling).
    ovs_pmd_maxsleep: Option<u32>,
}

impl Ctx {
    /// Whether `--tests` asks for `t` (all do without it).
    fn runs(&self, t: Test) -> bool {
        self.tests.is_empty() || self.tests.contains(&t)
    }

    fn past_budget(&self) -> bool {
        self.started.elapsed() > self.plan.budget
    }
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

/// The order of the sides in run `run` (from 1): rotated by one place per run, and reversed on
/// even runs, so that with three sides each goes first, in the middle and last equally often
/// over six runs, and each pair meets in both orders (two sides: alternating).
fn run_order(sides: &[Side], run: usize) -> Vec<Side> {
    let n = sides.len().max(1);
    let mut order: Vec<Side> = (0..sides.len())
        .map(|i| sides[(i + (run - 1) / 2) % n])
        .collect();
    if run.is_multiple_of(2) {
        order.reverse();
    }
    order
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
    if matches!(args.only, None | Some(Side::Vxmesh)) && !exe.is_file() {
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
        tests: args.tests.clone(),
        perf_test: args.perf_test,
        exe,
        raw,
        prefix: prefix.to_string(),
        started: Instant::now(),
        ping_interval: OnceCell::new(),
        ovs_pmd_maxsleep: args.ovs_pmd_maxsleep,
        run_args: args
            .busy_poll_us
            .iter()
            .flat_map(|v| ["--busy-poll-us".to_string(), v.clone()])
            .chain(
                args.workers
                    .iter()
                    .flat_map(|w| ["--workers".to_string(), w.to_string()]),
            )
            .chain(
                args.cpus
                    .iter()
                    .flat_map(|c| ["--cpus".to_string(), c.clone()]),
            )
            .chain(
                args.receiver_watch_us
                    .iter()
                    .flat_map(|w| ["--receiver-watch-us".to_string(), w.to_string()]),
            )
            .chain((args.afxdp_offloads == "on").then(|| "--afxdp-offloads".to_string()))
            .chain(
                args.afxdp_napi_defer_us
                    .iter()
                    .flat_map(|d| ["--afxdp-napi-defer-us".to_string(), d.to_string()]),
            )
            .collect(),
    };
    let mut sides: Vec<Side> = match args.only {
        Some(s) => vec![s],
        None if args.no_wire => vec![Side::Vxmesh, Side::Kernel, Side::Ovs],
        None => vec![Side::Vxmesh, Side::Kernel, Side::Ovs, Side::Wire],
    };
    if sides.contains(&Side::Ovs) && !measure::have("ovs-vswitchd") {
        let why = "no ovs-vswitchd on the PATH for the OVS side (scripts/compare.sh installs it: apt-get install openvswitch-switch)";
        if sides.len() == 1 {
            bail!("{why}");
        }
        // The other two sides still run; the OVS columns stay empty.
        log(&format!("{why}; measuring without it"));
        sides.retain(|s| *s != Side::Ovs);
    }
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
        // Alternate the order, so a drift in the machine's load spreads evenly over the sides.
        let order = run_order(&sides, run);
        for side in order {
            if measure::interrupted() {
                interrupted = true;
                break 'runs;
            }
            log(&format!("run {run}/{}: {}", ctx.plan.runs, side.name()));
            if let Some(kb) = measure::flush_dirty().filter(|kb| *kb >= 10_000) {
                log(&format!(
                    "  wrote out {kb} kB of dirty page cache first (sync), so that its writeback does not land in a measurement"
                ));
            }
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
        for side in sides.iter().filter(|s| **s != Side::Wire) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_alternates_and_rotates() {
        use Side::{Kernel as K, Ovs as O, Vxmesh as V};
        let two = [V, K];
        assert_eq!(run_order(&two, 1), [V, K]);
        assert_eq!(run_order(&two, 2), [K, V]);
        assert_eq!(run_order(&two, 3), [K, V]);
        assert_eq!(run_order(&two, 4), [V, K]);
        let three = [V, K, O];
        let runs: Vec<Vec<Side>> = (1..=6).map(|r| run_order(&three, r)).collect();
        for side in three {
            for place in 0..3 {
                let n = runs.iter().filter(|o| o[place] == side).count();
                assert_eq!(n, 2, "{side:?} at {place}");
            }
        }
        assert_eq!(run_order(&[O], 2), [O]);
    }
}
