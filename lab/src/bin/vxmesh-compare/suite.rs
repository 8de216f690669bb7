//! The measurements of one side's run, each behind the quiet gate (wait for a quiet machine,
//! redo when other sessions took the CPU): ping RTT, iperf3 TCP, iperf3 UDP 64 B with the CPU
//! per packet, the round-robin check through the VIP and wrk with and without keep-alive.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use vxmesh_lab::labrun::http_get;

use crate::measure::{self, Load, Servers, Snap, check, nap, sh};
use crate::side::{Env, Hooks, SideOut};
use crate::topo::{BACKENDS, VIP, ip_of};
use crate::{Ctx, Test, log, report};

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
    gated_with(ctx, env, what, out, !env.spinning, f)
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
pub fn measure_side(
    ctx: &Ctx,
    env: &Env,
    files: &Path,
    out: &mut SideOut,
    hooks: &Hooks,
) -> Result<()> {
    let ns = hooks.ns;
    let mut servers = Servers::default();
    // Servers: iperf3 in c21, nginx in each backend.
    servers.start_iperf3(&env.c21, Path::new(&format!("{}iperf3-s.log", env.raw)))?;
    for b in BACKENDS {
        let conf = vxmesh_lab::labrun::nginx_conf(files, b)?;
        let conf_s = conf.display().to_string();
        servers.start(
            &ns(b),
            &["nginx", "-c", &conf_s],
            Path::new(&format!("{}nginx-{b}.log", env.raw)),
        )?;
    }
    servers.start_iperf3(
        &ns("c22"),
        Path::new(&format!("{}iperf3-s-c22.log", env.raw)),
    )?;
    measure::wait_listening(&env.c21, 5201)?;
    measure::wait_listening(&ns("c22"), 5201)?;
    for b in BACKENDS {
        measure::wait_listening(&ns(b), 80)?;
    }
    let tag = format!("r{} {}", env.run, env.side.name());

    // 1. ping RTT (first, while everything is idle).
    if ctx.runs(Test::Ping) {
        ping_test(ctx, env, out, "ping", true)?;
    }

    // 2. TCP throughput: AF_XDP c11 -> c21, then TAPs with offloads (on vxmesh) c12 -> c22.
    for (client, server, key, name, test) in [
        ("c11", "c21", "tcp", "tcp", Test::Tcp),
        ("c12", "c22", "tcp_tap", "tcp-c12-c22", Test::TcpTap),
    ] {
        if ctx.runs(test) {
            tcp_test(ctx, env, out, (&ns(client), client), server, key, name)?;
        }
    }

    // 3. UDP 64 B packets per second, and the CPU they cost.
    if ctx.runs(Test::Udp64) {
        udp_part(ctx, env, out, hooks, &tag)?;
    }

    // 4. HTTP through the VIP.
    if ctx.runs(Test::Http) {
        http_part(ctx, env, out, hooks, &tag)?;
    }
    drop(servers);
    Ok(())
}

/// The measurements of [`crate::topo::Side::Wire`]: those between c11 and c21 (ping, TCP
/// c11 -> c21, the UDP flood), as on the other sides; the wire has no c12, c22 or VIP.
pub fn measure_wire(ctx: &Ctx, env: &Env, out: &mut SideOut, hooks: &Hooks) -> Result<()> {
    let mut servers = Servers::default();
    servers.start_iperf3(&env.c21, Path::new(&format!("{}iperf3-s.log", env.raw)))?;
    measure::wait_listening(&env.c21, 5201)?;
    let tag = format!("r{} {}", env.run, env.side.name());
    if ctx.runs(Test::Ping) {
        ping_test(ctx, env, out, "ping", true)?;
    }
    if ctx.runs(Test::Tcp) {
        tcp_test(ctx, env, out, (&env.c11, "c11"), "c21", "tcp", "tcp")?;
    }
    if ctx.runs(Test::Udp64) {
        udp_part(ctx, env, out, hooks, &tag)?;
    }
    drop(servers);
    Ok(())
}

/// One iperf3 TCP test from `client` (its namespace and name) to `server` (whose iperf3 server
/// listens), as `key` (`KEY_gbps`), iperf3's JSON into `iperf3-NAME.json`.
pub fn tcp_test(
    ctx: &Ctx,
    env: &Env,
    out: &mut SideOut,
    (client_ns, client): (&str, &str),
    server: &str,
    key: &str,
    name: &str,
) -> Result<()> {
    let p = &ctx.plan;
    let gbps = gated(ctx, env, key, out, || {
        let f = format!("{}iperf3-{name}.json", env.raw);
        let secs = p.tcp_secs.to_string();
        let args = ["iperf3", "-c", ip_of(server), "-t", &secs, "-J"];
        Load::start(client_ns, p.tcp_secs + 20, &args, Path::new(&f))?.wait()?;
        measure::parse_iperf_tcp(&std::fs::read_to_string(&f)?)
    })?;
    out.values.insert(format!("{key}_gbps"), gbps);
    log(&format!(
        "  r{} {}: TCP {client} -> {server} {gbps:.2} Gbit/s ({key})",
        env.run,
        env.side.name()
    ));
    Ok(())
}

/// The UDP test of [`measure_side`], its counters and notes.
fn udp_part(ctx: &Ctx, env: &Env, out: &mut SideOut, hooks: &Hooks, tag: &str) -> Result<()> {
    let usecs = ctx.plan.udp_secs.to_string();
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
    Ok(())
}

/// The HTTP tests of [`measure_side`] and the round-robin check.
fn http_part(ctx: &Ctx, env: &Env, out: &mut SideOut, hooks: &Hooks, tag: &str) -> Result<()> {
    let p = &ctx.plan;
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
    Ok(())
}

/// `ping -c N -i 0.002` c11 -> c21 (`-i 0.01` where the faster interval is refused): the p50 and
/// p99 RTT and the reply count as `{key}_p50_us`, `{key}_p99_us`, `{key}_replies`.
pub fn ping_test(
    ctx: &Ctx,
    env: &Env,
    out: &mut SideOut,
    key: &str,
    wait_quiet: bool,
) -> Result<()> {
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
    let (p50, p99, n) = gated_with(ctx, env, key, out, wait_quiet && !env.spinning, || {
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
pub fn udp64_load(ctx: &Ctx, env: &Env, secs: &str, json: &str) -> Result<Load> {
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
