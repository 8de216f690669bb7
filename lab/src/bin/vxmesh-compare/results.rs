//! The results of all runs: `results.md`, `results.json`, `ratios.svg` (and `.png`) in the
//! results directory, the headline tables on the terminal, with the machine and tool versions
//! they were measured on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::Ctx;
use crate::measure::{self};
use crate::side::SideOut;
use crate::topo::Side;
use crate::{WORKSPACE_DIR, report};

/// The measurement a metric comes from (as `gated` names it).
fn measurement_of(key: &str) -> &'static str {
    // Longer names first where one is a prefix of another.
    [
        "ping_poll",
        "ping_offl",
        "ping",
        "tcp_tap",
        "tcp_offl",
        "tcp",
        "udp64",
        "http_ka",
        "http_close",
    ]
    .into_iter()
    .find(|m| key.starts_with(m))
    .unwrap_or("")
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
    "Same topology on all sides (vxmesh_lab::lab::Lab from one cluster file; the kernel and OVS sides' file has no `attach`): 2 node namespaces joined through an underlay bridge namespace, 2 container namespaces per node, MTU 1450 in the overlay, 1500 underlay.",
    "vxmesh side: c11 and c21 on AF_XDP (veth), c12 and c22 on TAPs with offloads (vnet_hdr, TX checksum and TSO: 64 KB TCP super-frames in, GRO-merged super-frames out); the VIP by vxmesh's load balancer (rr, conntrack). Kernel side: bridge + VXLAN device per node (nolearning, static FDB), VIP by a kube-proxy-style nftables ruleset with `numgen inc mod 3` DNAT + conntrack in c11's own namespace (Docker's per-sandbox LB; no IPVS in this kernel), installed just before the HTTP tests, as the reference did.",
    "Offloads: the kernel side leaves the containers' TX checksum/TSO/GSO at the veth defaults (on, as Docker does). vxmesh at its default (as the spec says) turns its AF_XDP containers' offloads off, so c11 hands vxmesh 1450-byte frames while the kernel moves 64 KB GSO super-packets through its bridge and VXLAN device; toward c21, n2 merges in-order segments back into super-frames and sends them through a packet socket beside the AF_XDP TX ring. The rows 'vxmesh --afxdp-offloads' (after the other tests, both nodes restarted with the option; or every row, when the comparison was given --afxdp-offloads on) let the AF_XDP containers keep TX checksum and TSO for TCP/IPv4: the port's XDP program runs in generic mode and passes c11's 64 KB TCP super-frames to a packet socket beside the ring, and each flow is steered to one CPU's backlog (RPS) to stay in order. vxmesh's TAPs (c12, c22) take offloads: a super-frame crosses the pipeline once, is cut into segments in software at the underlay, which sends them as one UDP GSO message; the receiving node gets them with UDP GRO and merges them back into a super-frame for the TAP.",
    "Both vxmesh nodes' poll threads busy-poll while traffic flows, yielding the CPU on empty rounds (they sleep in poll(2) after the busy-poll window: by default twice the recent gap between frames when frames come within 5 ms of each other, so a ping every 2 ms is polled through, else 200 µs; --busy-poll-us and --busy-poll-max-us set it), so under load vxmesh spends up to two cores of this machine on polling, next to iperf3/nginx/wrk; the CPU-per-packet figure includes them. Idle, it sleeps after 200 µs. The \"always polling\" ping rows come from the same run, after its other tests, with both nodes restarted with --busy-poll-us max: no wake-ups, at the cost of two cores spinning whether or not traffic flows.",
    "CPU per million packets: /proc/stat user+nice+system+irq+softirq over all CPUs, in a steady window (0.5 s after iperf3 starts to 0.5 s before its end), divided by the frames that entered c21's eth0 in that window. It is system-wide: the vxmesh poll threads, iperf3 client and server, softirq, and anything else the machine ran (the 'other sessions' column of the contention record; a variant with it subtracted is in the supporting table).",
    "iperf3 UDP 64 B is sender-limited on the kernel side (one iperf3 thread), as the reference notes; the figure is the overlay's delivered rate for that sender.",
    "OVS side: Open vSwitch's userspace datapath (Debian's openvswitch-switch), an ovsdb-server and ovs-vswitchd --disable-system of its own per node inside the node's namespace. br-int (datapath_type=netdev, fail_mode=secure): every container veth's node side as an AF_XDP port (type=afxdp; a port OVS cannot open so falls back to type=system, recorded per run as ovs_ports), one VXLAN port per peer (key 4097, remote_ip/local_ip the VTEPs), static OpenFlow rules like Docker's static FDB (one per known MAC, broadcast to local ports and peers, nothing learned). br-phy (netdev, NORMAL): ul0 as an AF_XDP port, the node's VTEP address moved to br-phy's internal port (OVS's native tunnelling routes and ARPs through it). One PMD thread per node, pinned (pmd-cpu-mask: n1 CPU 0, n2 CPU 1); PMDs poll all the time, so the OVS side keeps both cores busy and its measurements do not wait for a quiet machine (other sessions' CPU is still checked). Container offloads off (OVS's AF_XDP ports carry raw frames). The VIP: the kernel side's nftables DNAT in c11 (independent of the switch).",
    "The wire (the floor): two namespaces, c11 and c21, joined by one veth pair with the overlay's MTU (1450) and addresses, offloads at the veth defaults (as the kernel side's containers). The same ping, iperf3 TCP and UDP 64 B tests and CPU accounting between the two, in the same rotation as the sides; nothing between the two stacks but the veth, so no overlay dataplane's figure can beat it. `--no-wire` leaves it out.",
];

pub fn write_results(
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
    let n_o = samples.iter().filter(|s| s.0 == Side::Ovs).count();
    let n_w = samples.iter().filter(|s| s.0 == Side::Wire).count();
    let all: Vec<&report::Metric> = report::METRICS.iter().collect();
    let wire_rows: Vec<report::Row> = report::rows(&flat, &all)
        .into_iter()
        .filter(|r| r.wire.1.is_some())
        .collect();
    let subtitle = format!(
        "{iso} · {} × {} · kernel {} · {n_vx} vxmesh / {n_k} kernel / {n_o} OVS runs",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?")
    );

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# vxmesh vs the kernel's overlay dataplane and Open vSwitch's userspace datapath\n"
    );
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
        "Runs: {n_vx} vxmesh, {n_k} kernel, {n_o} OVS userspace, {n_w} wire (order alternating); iperf3 TCP {} s, UDP {} s; ping {} at -i {}; wrk {} s{}\n",
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
    if let Some(us) = ctx.ovs_pmd_maxsleep {
        let _ = writeln!(
            md,
            "OVS side with `other_config:pmd-maxsleep={us}` (PMDs sleep under low load; not OVS's default).\n"
        );
    }
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
    if n_w > 0 {
        md += "\nThe floor: c11 and c21 on one veth pair, no switch and no overlay (the wire; only the tests between those two). Each side's figure as a multiple of the wire's, in the direction where more is worse (a time or CPU over the wire's, the wire's throughput over the side's): what the dataplane adds to the two containers' own stacks.\n\n";
        md += &report::wire_table(&wire_rows);
    }
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
            "ovs_pmd_maxsleep_us": ctx.ovs_pmd_maxsleep,
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
        "wire": report::rows_json(&wire_rows),
        "runs": runs,
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&j)?)?;
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(
        out.join("ratios.svg"),
        report::svg(
            &head_rows,
            Side::Kernel,
            "vxmesh / kernel (same namespace topology)",
            &subtitle,
        ),
    )?;
    std::fs::write(
        out.join("ratios-ovs.svg"),
        report::svg(
            &head_rows,
            Side::Ovs,
            "vxmesh / OVS userspace datapath (same namespace topology)",
            &subtitle,
        ),
    )?;

    // PNG too, when an SVG renderer is at hand (optional: apt-get install librsvg2-bin).
    if measure::have("rsvg-convert") {
        for name in ["ratios", "ratios-ovs"] {
            let _ = measure::host(&[
                "rsvg-convert",
                "-o",
                &out.join(format!("{name}.png")).display().to_string(),
                &out.join(format!("{name}.svg")).display().to_string(),
            ]);
        }
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
    if n_w > 0 {
        println!(
            "The floor (c11 and c21 on one veth pair), each side as a multiple of it:\n\n{}",
            report::wire_table(&wire_rows)
        );
    }
    println!(
        "Note: container offloads (kernel: TSO/GSO/TX checksum on, as Docker; vxmesh: on for TAPs, off on AF_XDP containers but in the --afxdp-offloads rows; OVS: off, AF_XDP everywhere); see results.md."
    );
    println!(
        "Results: {}/results.json, results.md, ratios.svg, ratios-ovs.svg (.png), raw/",
        out.display()
    );
    Ok(())
}
