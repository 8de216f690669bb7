//! `vxmesh-dnsbench`: queries per second answered by one node's switch (the `dns` stage, at the
//! network's resolver address) against dnsmasq serving the same names, in the same run on the
//! same machine, measured with `dnsperf` from a container (issue 16's measurement; a tool, not a
//! test).
//!
//! A two-node lab with real `vxmesh run` nodes (the shared fixture). dnsperf runs in container
//! `c11`'s namespace (AF_XDP on n1 by default) and queries the network's resolver (10.0.9.1,
//! answered by n1's poll thread) or dnsmasq, which runs in a namespace of its own reached over a
//! second veth from the same container, with the same records and TTL. Runs alternate between
//! the two resolvers (the order swapped every round). Each round has an open-loop run (as many
//! answers per second as dnsperf gets) and a fixed-rate run (`-Q`, every answer's latency kept
//! for p50/p99). The CPU of n1's poll thread and of dnsmasq comes from `/proc/.../stat`
//! (utime + stime) around each run. Results: `results.md`, `results.json` and dnsperf's raw
//! output under `target/dnsbench/<timestamp>/`.
//!
//! Everything in namespaces the tool made (per-run prefix), removed by name at the end and on
//! failure; processes are its own children, stopped by PID.

mod dnsmasq;
mod dnsperf;
mod report;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Running, vxmesh_exe};

use dnsmasq::Dnsmasq;
use dnsperf::{Load, Options};

/// The TTL the switch gives its answers (dnsmasq is given the same).
const TTL: u32 = 2;

#[derive(Parser)]
#[command(
    name = "vxmesh-dnsbench",
    about = "DNS queries per second: the switch's resolver against dnsmasq, with dnsperf (root)"
)]
struct Args {
    /// Rounds; each runs every resolver once per load.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per dnsperf run (`-l`).
    #[arg(long, default_value_t = 10)]
    secs: u32,
    /// dnsperf clients (`-c`).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Queries in flight (`-q`) in the open-loop runs.
    #[arg(long, default_value_t = 100)]
    outstanding: u32,
    /// Queries per second of the fixed-rate runs (`-Q`); 0: no fixed-rate runs.
    #[arg(long, default_value_t = 20000)]
    rate: u32,
    /// The container dnsperf runs in (an endpoint of the fixture on n1).
    #[arg(long, default_value = "c11")]
    container: String,
    /// The nodes' `--busy-poll-us` (default: the node's own default, 200).
    #[arg(long, value_name = "MICROS")]
    busy_poll_us: Option<String>,
    /// Results directory (default `target/dnsbench/<UTC timestamp>/`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One measured run.
pub struct Sample {
    /// Round (from 1).
    pub round: usize,
    /// "vxmesh" or "dnsmasq".
    pub server: &'static str,
    /// Its load.
    pub load: Load,
    /// What it measured.
    pub run: dnsperf::Run,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("vxmesh-dnsbench: needs root (namespaces, veths, AF_XDP)");
        std::process::exit(2);
    }
    let prefix = format!("vxd{}-", std::process::id());
    let exe = vxmesh_exe()?;
    let node_args: Vec<String> = match &args.busy_poll_us {
        Some(us) => vec!["--busy-poll-us".into(), us.clone()],
        None => vec![],
    };
    let run = Running::start_with(
        &exe,
        &prefix,
        &Fixture::new(&prefix).text(),
        &["n1", "n2"],
        &node_args,
    )?;
    let ep = run
        .cluster
        .endpoints
        .iter()
        .find(|e| e.name == args.container)
        .with_context(|| format!("no endpoint {} in the fixture", args.container))?
        .clone();
    if ep.node != "n1" {
        bail!("endpoint {} is on {}, not n1", ep.name, ep.node);
    }
    let net = run
        .cluster
        .networks
        .iter()
        .find(|n| n.name == ep.network)
        .context("the endpoint's network")?;
    let resolver = net.dns.to_string();
    let dir = std::env::temp_dir().join(format!("{prefix}dnsbench"));
    std::fs::create_dir_all(&dir)?;
    let netns = ep.netns.clone().context("the container has no namespace")?;
    let result = bench(&args, &run, &prefix, &netns, &ep.network, &resolver, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    drop(run);
    result
}

fn bench(
    args: &Args,
    run: &Running,
    prefix: &str,
    netns: &str,
    network: &str,
    resolver: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let records = dnsmasq::records(&run.cluster, network)?;
    let mut names: Vec<&str> = records.iter().map(|r| r.0.as_str()).collect();
    names.dedup();
    let queries = dir.join("queries.txt");
    std::fs::write(
        &queries,
        names.iter().map(|n| format!("{n} A\n")).collect::<String>(),
    )?;
    let dm = Dnsmasq::start(prefix, netns, &run.cluster, network, TTL)?;
    let node_pid = node_pid(&run.lab.node_netns("n1"))?;
    let poll = format!("/proc/{node_pid}/task/{}/stat", poll_thread(node_pid)?);
    let dm_stat = format!("/proc/{}/stat", dm.pid());
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/dnsbench").join(sh("date", &["-u", "+%Y%m%d-%H%M%S"]))
    });
    std::fs::create_dir_all(out.join("raw"))?;
    let o = Options {
        netns,
        queries: &queries,
        secs: args.secs.max(1),
        clients: args.clients.max(1),
        outstanding: args.outstanding.max(1),
    };
    let mut loads = vec![Load::Max];
    if args.rate > 0 {
        loads.push(Load::Rate(args.rate));
    }
    let mut samples = Vec::new();
    for round in 1..=args.runs.max(1) {
        let order: [(&'static str, &str, &str); 2] = [
            ("vxmesh", resolver, poll.as_str()),
            ("dnsmasq", dnsmasq::SERVER_ADDR, dm_stat.as_str()),
        ];
        let order = if round % 2 == 1 {
            order
        } else {
            [order[1], order[0]]
        };
        for &load in &loads {
            for (server, addr, stat) in order {
                let tag = match load {
                    Load::Max => "max".to_string(),
                    Load::Rate(q) => format!("rate{q}"),
                };
                let raw = out.join("raw").join(format!("{round}-{tag}-{server}.txt"));
                let r = dnsperf::run(&o, addr, load, stat, &raw)?;
                eprintln!(
                    "round {round} {tag:>9} {server:>7}: {:>9.0} qps, avg {:>6.0} us, p99 {:>6} us, lost {}, cpu {:.0}%, machine {:.0}% (softirq {:.0}%)",
                    r.qps,
                    r.avg_us,
                    r.p99_us.map_or("-".into(), |p| format!("{p:.0}")),
                    r.lost,
                    r.server_cpu_pct(),
                    r.machine_pct(),
                    r.softirq_pct()
                );
                samples.push(Sample {
                    round,
                    server,
                    load,
                    run: r,
                });
            }
        }
    }
    let meta = report::Meta {
        commit: sh("git", &["rev-parse", "--short", "HEAD"]),
        date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        busy_poll_us: args
            .busy_poll_us
            .clone()
            .unwrap_or_else(|| "200 (default)".into()),
        secs: o.secs,
        clients: o.clients,
        outstanding: o.outstanding,
        container: args.container.clone(),
        resolver: resolver.to_string(),
        names: names.iter().map(|s| s.to_string()).collect(),
    };
    let (md, json) = report::write(&meta, &samples);
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(out.join("results.json"), json.to_string())?;
    print!("{md}");
    println!("results in {}", out.display());
    drop(dm);
    Ok(())
}

/// A command's trimmed standard output ("" if it fails).
fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The one `vxmesh` process in namespace `ns` (the node this program started there).
fn node_pid(ns: &str) -> anyhow::Result<u32> {
    let pids: Vec<u32> = sh("ip", &["netns", "pids", ns])
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| comm(&format!("/proc/{p}/comm")).as_deref() == Some("vxmesh"))
        .collect();
    match pids[..] {
        [pid] => Ok(pid),
        _ => bail!("namespace {ns}: expected one vxmesh process, found {pids:?}"),
    }
}

/// The thread of `pid` named `vxmesh-poll`.
fn poll_thread(pid: u32) -> anyhow::Result<u32> {
    let dir = format!("/proc/{pid}/task");
    let tids: Vec<u32> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|t| comm(&format!("{dir}/{t}/comm")).as_deref() == Some("vxmesh-poll"))
        .collect();
    match tids[..] {
        [tid] => Ok(tid),
        _ => bail!("process {pid}: expected one vxmesh-poll thread, found {tids:?}"),
    }
}

fn comm(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}
