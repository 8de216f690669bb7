//! One side's run: build the side's lab (vxmesh's nodes, the kernel's bridge + VXLAN +
//! nftables, OVS's userspace datapath + nftables, or the wire: one veth pair), hand it to the
//! measurements ([`crate::suite`]) with the hooks that differ between the sides, and remove it
//! again; plus the optional `perf` pass per side.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use vxmesh_lab::labrun::Running;

use crate::measure::{self, Load, Ours, Servers, check};
use crate::suite::{measure_side, measure_wire, ping_test, tcp_test, udp64_load};
use crate::topo::{self, KernelLab, OvsLab, Side, WireLab, ip_of};
use crate::{Ctx, PerfTest, Test, log};

/// One side's lab, as the measurements see it.
pub struct Env {
    /// Which side.
    pub side: Side,
    /// The run's number (from 1).
    pub run: usize,
    /// c11's namespace (the client).
    pub c11: String,
    /// c21's namespace (the server across the underlay).
    pub c21: String,
    /// Namespaces whose UDP socket drops are read around the UDP test: n1, n2, c21.
    pub udp_ns: Vec<(&'static str, String)>,
    /// This comparison's namespaces, to tell its CPU from other sessions'.
    pub ours: Ours,
    /// raw/r{run}-{side}-
    pub raw: String,
    /// The side's switches keep cores busy whether or not traffic flows (OVS's PMD threads):
    /// the machine is never quiet, so measurements do not wait for it (other sessions' CPU is
    /// still checked during each).
    pub spinning: bool,
}

/// What differs between the sides inside a run's measurements.
pub struct Hooks<'a> {
    /// The namespace of an endpoint.
    pub ns: &'a dyn Fn(&str) -> String,
    /// Install the VIP's rules (kernel side) before the HTTP tests.
    pub lb_up: &'a dyn Fn() -> Result<()>,
    /// Before each wrk (kernel side: conntrack flush).
    pub before_wrk: &'a dyn Fn(),
    /// The switches' counters, flattened (vxmesh side).
    pub dp_stats: &'a dyn Fn() -> Option<HashMap<String, u64>>,
}

/// What one side's run produced.
#[derive(Default)]
pub struct SideOut {
    /// The figures, by metric key.
    pub values: BTreeMap<String, f64>,
    /// Per measurement and attempt: the machine's busy % before, other sessions' CPU during.
    pub contention: Vec<Value>,
    /// What the report shows beside the figures (offload settings, say).
    pub notes: BTreeMap<String, Value>,
    /// Measurements whose kept attempt other processes disturbed (took more than
    /// `other_max_pct` of a core during it).
    pub disturbed: Vec<String>,
}

/// Waits until c11 reaches the other three containers and starts the side's output with a
/// note of c11's `eth0` offloads (what the container's stack hands the switch).
fn start_out(env: &Env) -> Result<SideOut> {
    topo::wait_connectivity(&env.c11, &[ip_of("c12"), ip_of("c21"), ip_of("c22")])?;
    let mut out = SideOut::default();
    let offl = vswitch::port::ethtool::offloads(Some(&env.c11), "eth0")
        .map(|o| format!("{o:?}"))
        .unwrap_or_else(|e| e.to_string());
    out.notes.insert("c11_eth0_offloads".into(), json!(offl));
    Ok(out)
}

/// One side's run on a freshly built lab, removed again at the end (guards).
pub fn side_run(ctx: &Ctx, side: Side, run: usize) -> Result<SideOut> {
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
                let mut out = start_out(&env)?;
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
                // The AF_XDP containers' TCP and ping again with --afxdp-offloads (unless the
                // whole run has it): the containers keep their TCP offloads, at the cost of
                // steering each flow to one CPU (docs/performance.md).
                let offl = "--afxdp-offloads".to_string();
                if !ctx.run_args.contains(&offl) && (ctx.runs(Test::Tcp) || ctx.runs(Test::Ping)) {
                    for n in ["n1", "n2"] {
                        running.stop_node(n)?;
                    }
                    // The receive deferral needs native XDP, the option generic: not both.
                    running.run_args = without_napi_defer(&ctx.run_args);
                    running.run_args.push(offl);
                    for n in ["n1", "n2"] {
                        running.start_node(n)?;
                    }
                    topo::wait_connectivity(&env.c11, &[ip_of("c21")])?;
                    if ctx.runs(Test::Ping) {
                        ping_test(ctx, &env, &mut out, "ping_offl", true)?;
                    }
                    if ctx.runs(Test::Tcp) {
                        let mut servers = Servers::default();
                        servers.start_iperf3(
                            &env.c21,
                            Path::new(&format!("{}iperf3-s-offl.log", env.raw)),
                        )?;
                        measure::wait_listening(&env.c21, 5201)?;
                        tcp_test(
                            ctx,
                            &env,
                            &mut out,
                            (&env.c11, "c11"),
                            "c21",
                            "tcp_offl",
                            "tcp-offl",
                        )?;
                    }
                    for n in ["n1", "n2"] {
                        if let Ok(s) = running.ctl_ok(n, &["stats", "--json"]) {
                            let _ = std::fs::write(format!("{}stats-offl-{n}.json", env.raw), s);
                        }
                    }
                }
                if !ctx.runs(Test::Ping) {
                    return Ok(out);
                }
                // The ping again with both nodes polling all the time (`--busy-poll-us max`,
                // VPP's polling mode): the difference is what the default window's wake-ups
                // cost. Restarted nodes rebuild their tables from the same cluster file.
                for n in ["n1", "n2"] {
                    running.stop_node(n)?;
                }
                // The run's other arguments stay (--workers); the window is replaced.
                let mut args: Vec<String> = Vec::new();
                let mut given = ctx.run_args.iter();
                while let Some(a) = given.next() {
                    if a == "--busy-poll-us" {
                        given.next();
                    } else {
                        args.push(a.clone());
                    }
                }
                args.extend(["--busy-poll-us".into(), "max".into()]);
                running.run_args = args;
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
            let mut out = start_out(&env)?;
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
        Side::Ovs => {
            let o = OvsLab::start(&prefix, ctx.ovs_pmd_maxsleep)?;
            let res = (|| {
                let mut env = env_for(side, run, &o.lab, &ctx.raw);
                env.spinning = ctx.ovs_pmd_maxsleep.is_none();
                let ns = |e: &str| o.lab.endpoint_netns(e);
                let mut out = start_out(&env)?;
                out.notes.insert("ovs_ports".into(), json!(o.port_types()));
                let hooks = Hooks {
                    ns: &ns,
                    lb_up: &|| o.lb_up(),
                    before_wrk: &|| o.flush_conntrack(),
                    dp_stats: &|| None,
                };
                measure_side(ctx, &env, &files.0, &mut out, &hooks)?;
                Ok(out)
            })();
            o.save_logs(&format!("{}/r{run}-ovs-", ctx.raw.display()));
            drop(o);
            res
        }
        Side::Wire => {
            let w = WireLab::start(&prefix)?;
            let env = Env {
                side,
                run,
                c11: w.c11.clone(),
                c21: w.c21.clone(),
                udp_ns: vec![("c21", w.c21.clone())],
                ours: Ours::new(&[w.c11.clone(), w.c21.clone()]),
                raw: format!("{}/r{run}-{}-", ctx.raw.display(), side.name()),
                spinning: false,
            };
            topo::wait_connectivity(&env.c11, &[ip_of("c21")])?;
            let mut out = SideOut::default();
            let hooks = Hooks {
                ns: &|e: &str| format!("{prefix}{e}"),
                lb_up: &|| Ok(()),
                before_wrk: &|| {},
                dp_stats: &|| None,
            };
            measure_wire(ctx, &env, &mut out, &hooks)?;
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
        spinning: side == Side::Ovs,
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

/// The `--perf` pass: one more run of the chosen test (`--perf-test`) per side under
/// `perf record -a -g`, reports in raw/perf-{side}[-{test}].txt.
pub fn perf_pass(ctx: &Ctx, side: Side) -> Result<()> {
    let test = ctx.perf_test;
    log(&format!("perf pass: {} ({test:?})", side.name()));
    let run = 0;
    let prefix = format!("{}{}p-", ctx.prefix, &side.name()[..1]);
    let stem = match test {
        PerfTest::Udp64 => format!("perf-{}", side.name()),
        PerfTest::Tcp => format!("perf-{}-tcp", side.name()),
        PerfTest::TcpTap => format!("perf-{}-tcp-tap", side.name()),
    };
    let data = ctx.raw.join(format!("{stem}.data"));
    let report_path = ctx.raw.join(format!("{stem}.txt"));
    let secs = match test {
        PerfTest::Udp64 => ctx.plan.udp_secs,
        PerfTest::Tcp | PerfTest::TcpTap => ctx.plan.tcp_secs,
    };
    // (client, server) of the test.
    let (client, server) = match test {
        PerfTest::Udp64 | PerfTest::Tcp => ("c11", "c21"),
        PerfTest::TcpTap => ("c12", "c22"),
    };
    let record = |env: &Env, client_ns: &str| -> Result<()> {
        let data_s = data.display().to_string();
        let rec_secs = (secs.saturating_sub(1)).max(1).to_string();
        // perf runs in c21's namespace so that it is not mistaken for another session's work.
        let perf = Load::start(
            &env.c21,
            secs + 30,
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
            &ctx.raw.join(format!("{stem}.record.log")),
        )?;
        let s = secs.to_string();
        let load = match test {
            PerfTest::Udp64 => {
                let f = format!("{}iperf3-udp64.json", env.raw);
                udp64_load(ctx, env, &s, &f)?
            }
            PerfTest::Tcp | PerfTest::TcpTap => {
                let f = format!("{}iperf3-{client}-{server}.json", env.raw);
                let args = ["iperf3", "-c", ip_of(server), "-t", &s, "-J"];
                Load::start(client_ns, secs + 20, &args, Path::new(&f))?
            }
        };
        load.wait()?;
        perf.wait()?;
        let mut text = Vec::new();
        // Self time by process, object and symbol; then time including callees (which system
        // calls and kernel paths it goes to) for the poll threads, or iperf3 on the kernel side.
        let busy = match side {
            Side::Vxmesh => "vxmesh-poll",
            Side::Kernel | Side::Ovs | Side::Wire => "iperf3",
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
    let with_servers = |lab: &vxmesh_lab::lab::Lab| -> Result<()> {
        let mut env = env_for(side, run, lab, &ctx.raw);
        env.raw = format!("{}/{stem}-", ctx.raw.display());
        let (client_ns, server_ns) = (lab.endpoint_netns(client), lab.endpoint_netns(server));
        topo::wait_connectivity(&client_ns, &[ip_of(server)])?;
        let mut servers = Servers::default();
        servers.start_iperf3(&server_ns, Path::new(&format!("{}iperf3-s.log", env.raw)))?;
        measure::wait_listening(&server_ns, 5201)?;
        record(&env, &client_ns)?;
        drop(servers);
        Ok(())
    };
    match side {
        Side::Vxmesh => {
            let text = topo::cluster_text(Side::Vxmesh, &prefix);
            let running =
                Running::start_with(&ctx.exe, &prefix, &text, &["n1", "n2"], &ctx.run_args)?;
            with_servers(&running.lab)
        }
        Side::Kernel => with_servers(&KernelLab::start(&prefix)?.lab),
        Side::Ovs => with_servers(&OvsLab::start(&prefix, ctx.ovs_pmd_maxsleep)?.lab),
        Side::Wire => {
            log("perf pass: none for the wire (nothing of a dataplane to profile)");
            Ok(())
        }
    }
}

/// `args` without `--afxdp-napi-defer-us` and its value.
fn without_napi_defer(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a == "--afxdp-napi-defer-us" {
            skip = true;
            continue;
        }
        out.push(a.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offloads_restart_leaves_the_receive_deferral_out() {
        let args: Vec<String> = [
            "--workers",
            "1",
            "--afxdp-napi-defer-us",
            "200",
            "--cpus",
            "0",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            without_napi_defer(&args),
            ["--workers", "1", "--cpus", "0"].map(String::from).to_vec()
        );
        assert_eq!(without_napi_defer(&args[..2]), args[..2].to_vec());
    }
}
