//! `vxmesh-cnibench`: how fast `vxmesh-cni` attaches and detaches containers, against the
//! reference `bridge` + `host-local` plugins (Debian's containernetworking-plugins) in the same
//! run on the same machine (issue 15's measurement; a tool, not a test).
//!
//! A two-node lab with real `vxmesh run` nodes (the shared fixture). For each of `--containers`
//! containers (a fresh named namespace each), ADD then DEL through `vxmesh-cni` to n1 (AF_XDP,
//! the default attach), and through `bridge` (in a namespace of its own, holding the bridge)
//! with `host-local` (its data in the run's folder), alternating one container of each, as a
//! runtime calls a plugin: a process per call, the config on standard input. Reports p50/p99
//! of ADD and DEL and the containers attached per second (ADDs back to back), as a table and
//! JSON under `target/cnibench/<timestamp>/`.
//!
//! Everything in namespaces the tool made (per-run prefix), removed by name at the end and on
//! failure; processes are its own children.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Running, vxmesh_exe};

/// Where Debian installs the reference plugins.
const CNI_PATH: &str = "/usr/lib/cni";

#[derive(Parser)]
#[command(
    name = "vxmesh-cnibench",
    about = "ADD/DEL latency of vxmesh-cni against bridge + host-local, in one run (root)"
)]
struct Args {
    /// Containers attached and detached by each plugin.
    #[arg(long, default_value_t = 200)]
    containers: usize,
    /// Results directory (default `target/cnibench/<UTC timestamp>/`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Namespaces made here, deleted by name when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let o = Command::new("ip").args(args).output()?;
    if !o.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// One plugin call as a runtime makes it: its duration, or the plugin's error.
fn call(
    plugin: &Path,
    in_netns: Option<&str>,
    cmd: &str,
    netns: &str,
    cid: &str,
    config: &Value,
) -> anyhow::Result<Duration> {
    let mut c = match in_netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(plugin);
            c
        }
        None => Command::new(plugin),
    };
    let start = Instant::now();
    let mut child = c
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME={cid}"))
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", plugin.display()))?;
    let _ = child
        .stdin
        .take()
        .context("stdin")?
        .write_all(config.to_string().as_bytes());
    let o = child.wait_with_output()?;
    let took = start.elapsed();
    if !o.status.success() {
        bail!(
            "{} {cmd} {cid}: {}{}",
            plugin.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(took)
}

/// p50 and p99 of `v`, in ms.
fn pct(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("vxmesh-cnibench: needs root (namespaces, veths, AF_XDP)");
        std::process::exit(2);
    }
    for p in ["bridge", "host-local"] {
        if !Path::new(CNI_PATH).join(p).exists() {
            bail!("{CNI_PATH}/{p} missing (Debian package containernetworking-plugins)");
        }
    }
    let n = args.containers.max(1);
    let prefix = format!("vxc{}-", std::process::id());
    let exe = vxmesh_exe()?;
    let plugin = exe.with_file_name("vxmesh-cni");
    let run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &["n1", "n2"])?;
    let dir = std::env::temp_dir().join(format!("{prefix}cnibench"));
    std::fs::create_dir_all(&dir)?;
    let kernel_ns = format!("{prefix}kb");
    let mut nss = Namespaces(vec![kernel_ns.clone()]);
    ip(&["netns", "add", &kernel_ns])?;
    let vx_conf = json!({"cniVersion": "1.0.0", "name": "appnet", "type": "vxmesh-cni",
                         "network": "appnet", "control": run.control("n1")});
    let br_conf = json!({"cniVersion": "1.0.0", "name": "kbnet", "type": "bridge",
                         "bridge": "cni0", "isGateway": false,
                         "ipam": {"type": "host-local", "subnet": "10.99.0.0/16",
                                  "dataDir": dir.join("host-local")}});
    let bridge = Path::new(CNI_PATH).join("bridge");
    let (mut vx_add, mut vx_del, mut br_add, mut br_del) = (vec![], vec![], vec![], vec![]);
    // One container of each plugin in turn: the machine's state drifts alike for both.
    for i in 0..n {
        for (kind, adds, dels) in [
            ("vx", &mut vx_add, &mut vx_del),
            ("br", &mut br_add, &mut br_del),
        ] {
            let ns = format!("{prefix}{kind}{i}");
            ip(&["netns", "add", &ns])?;
            nss.0.push(ns.clone());
            let cid = format!("{kind}{i}");
            let (p, inside, conf) = if kind == "vx" {
                (&plugin, None, &vx_conf)
            } else {
                (&bridge, Some(kernel_ns.as_str()), &br_conf)
            };
            adds.push(call(p, inside, "ADD", &ns, &cid, conf)?);
            dels.push(call(p, inside, "DEL", &ns, &cid, conf)?);
            ip(&["netns", "del", &ns])?;
            nss.0.pop();
        }
    }
    // Attach rate: ADDs back to back (then DEL them all).
    let burst = n.min(50);
    let mut rate = vec![];
    for (kind, p, inside, conf) in [
        ("vx", &plugin, None, &vx_conf),
        ("br", &bridge, Some(kernel_ns.as_str()), &br_conf),
    ] {
        let names: Vec<String> = (0..burst).map(|i| format!("{prefix}r{kind}{i}")).collect();
        for ns in &names {
            ip(&["netns", "add", ns])?;
            nss.0.push(ns.clone());
        }
        let start = Instant::now();
        for (i, ns) in names.iter().enumerate() {
            call(p, inside, "ADD", ns, &format!("r{kind}{i}"), conf)?;
        }
        rate.push(burst as f64 / start.elapsed().as_secs_f64());
        for (i, ns) in names.iter().enumerate() {
            call(p, inside, "DEL", ns, &format!("r{kind}{i}"), conf)?;
        }
    }
    let (va, vd, ba, bd) = (
        pct(&mut vx_add),
        pct(&mut vx_del),
        pct(&mut br_add),
        pct(&mut br_del),
    );
    let table = format!(
        "| plugin | ADD p50 / p99 (ms) | DEL p50 / p99 (ms) | ADDs per second ({burst} back to back) |\n|---|---|---|---|\n\
         | vxmesh-cni (AF_XDP, node n1) | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} |\n\
         | bridge + host-local | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} |\n\n\
         ADD p50 ratio vxmesh-cni / bridge: {:.2}\n",
        va.0,
        va.1,
        vd.0,
        vd.1,
        rate[0],
        ba.0,
        ba.1,
        bd.0,
        bd.1,
        rate[1],
        va.0 / ba.0
    );
    let out = args.out.unwrap_or_else(|| {
        let ts = Command::new("date")
            .args(["-u", "+%Y%m%d-%H%M%S"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        PathBuf::from("target/cnibench").join(ts)
    });
    std::fs::create_dir_all(&out)?;
    let header = format!(
        "# vxmesh-cni against bridge + host-local\n\n`vxmesh-cnibench --containers {n}`: each plugin attached and detached {n} containers (a process per call, as a runtime runs a plugin), alternating.\n\n"
    );
    std::fs::write(out.join("results.md"), format!("{header}{table}"))?;
    std::fs::write(
        out.join("results.json"),
        json!({"containers": n, "vxmesh_cni": {"add_p50_ms": va.0, "add_p99_ms": va.1,
               "del_p50_ms": vd.0, "del_p99_ms": vd.1, "adds_per_s": rate[0]},
               "bridge_host_local": {"add_p50_ms": ba.0, "add_p99_ms": ba.1,
               "del_p50_ms": bd.0, "del_p99_ms": bd.1, "adds_per_s": rate[1]}})
        .to_string(),
    )?;
    print!("{table}");
    println!("results in {}", out.display());
    drop(nss);
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
