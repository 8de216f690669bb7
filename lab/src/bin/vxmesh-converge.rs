//! vxmesh-converge: how long a write to the cluster store takes to reach every node, at 10, 100
//! and 1,000 nodes (issue 14's convergence at scale).
//!
//! A real etcd (Debian's `etcd-server`, started in a namespace this tool makes, on its
//! loopback) holds a cluster of N nodes with 50 endpoints each. N simulated nodes follow it in
//! this one process, each with its own etcd client and watch and the node's own follower
//! (`store::watch::follow`: the state folded, the view checked incrementally or whole, the
//! coalescing and retries), handing each change to the node's own plan code
//! (`Plan::apply_delta`, or `Plan::next` when a change needs the whole plan) instead of a
//! dataplane. A writer then adds endpoints one at a time; each simulated node notes when it has
//! applied each. Reported per N: the time from a write to every node having applied it
//! (p50/p99/max over the writes), the per-node times, the CPU the watchers and etcd spent per
//! change, etcd's memory and this process's, and etcd's watch bytes per change and node.
//!
//! Networks hold 500 endpoints each (a /21: Docker's overlays are /24 by default, so a cluster
//! of 50,000 containers has many networks), each node's 50 endpoints in 5 of them: a node
//! plans the 2,500 endpoints of its networks and checks all 50,000. `--one-network` puts them
//! all in one network instead (every node plans every endpoint).
//!
//! Run as root: `cargo run --release -p vxmesh-lab --bin vxmesh-converge -- --nodes 10,100,1000`
//! (scripts/converge.sh). Everything it makes (the namespace, etcd and its data) is removed
//! when it ends, also on an error.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use etcd_client::{Client, Txn, TxnOp};
use vxmesh::node::Plan;
use vxmesh::store::state::State;
use vxmesh::store::view::{Delta, View};
use vxmesh::store::watch::{StoreOpts, StoreStats, follow};
use vxmesh_lab::etcd::Etcd;

#[derive(Parser)]
#[command(about = "Time from a store write to every simulated node having applied it")]
struct Args {
    /// Cluster sizes to run, in nodes.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    nodes: Vec<usize>,
    /// Endpoints per node.
    #[arg(long, default_value_t = 50)]
    endpoints: usize,
    /// Writes measured per size.
    #[arg(long, default_value_t = 40)]
    writes: usize,
    /// Every endpoint in one network (every node plans all of them).
    #[arg(long)]
    one_network: bool,
    /// Where the results go (results.md and results.json).
    #[arg(long, default_value = "target/converge")]
    out: std::path::PathBuf,
}

/// Endpoints per network (a /21 holds them, the nodes' load-balancer addresses and a VIP).
const PER_NETWORK: usize = 500;
/// Threads the simulated nodes run on (one per core of the 2-vCPU machine).
const THREADS: usize = 2;
/// Give up waiting for one write after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The namespace this tool made, deleted by name when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The first address of network `k` (a /21 each, from 10.0.0.0 up).
fn net_base(k: usize) -> u32 {
    u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (k as u32) * 2048
}

/// The cluster's objects: (key, JSON value).
fn objects(nodes: usize, per_node: usize, one_network: bool) -> Vec<(String, String)> {
    let vip = match one_network {
        true => Ipv4Addr::new(10, 200, 0, 1),
        false => Ipv4Addr::from(net_base(0) + 600),
    };
    let nets = if one_network {
        1
    } else {
        (nodes * per_node).div_ceil(PER_NETWORK).max(1)
    };
    let mut out = Vec::new();
    let mut put = |k: String, v: serde_json::Value| out.push((k, v.to_string()));
    for k in 0..nets {
        let subnet = if one_network {
            "10.0.0.0/8".to_string()
        } else {
            format!("{}/21", Ipv4Addr::from(net_base(k)))
        };
        put(
            format!("/vxmesh/v1/network/net{k}"),
            serde_json::json!({"name": format!("net{k}"), "vni": 4096 + k, "subnet": subnet}),
        );
    }
    let mut used = vec![0u32; nets];
    for n in 0..nodes {
        let name = format!("n{n}");
        put(
            format!("/vxmesh/v1/node/{name}"),
            serde_json::json!({"name": name,
                               "vtep": format!("198.18.{}.{}", n / 250, n % 250 + 1)}),
        );
        // Five networks of ten endpoints each (one network: all fifty there).
        let groups = if one_network { 1 } else { 5 };
        for g in 0..groups {
            let net = (n * groups + g) % nets;
            for _ in 0..per_node / groups {
                let ip = Ipv4Addr::from(net_base(net) + 2 + used[net]);
                let ep = format!("e{net}-{}", used[net]);
                used[net] += 1;
                put(
                    format!("/vxmesh/v1/endpoint/{ep}"),
                    serde_json::json!({"name": ep, "node": name, "network": format!("net{net}"),
                                       "ip": ip.to_string(), "attach": format!("afxdp:v{ep}")}),
                );
            }
        }
    }
    put(
        "/vxmesh/v1/service/web".into(),
        serde_json::json!({"name": "web", "network": "net0",
                           "vip": vip.to_string(),
                           "backends": ["e0-0", "e0-1", "e0-2"],
                           "ports": [{"protocol": "tcp", "port": 80}]}),
    );
    out
}

/// Write the objects in transactions of 100 (under etcd's default 128 operations).
async fn populate(client: &mut Client, objs: &[(String, String)]) -> anyhow::Result<()> {
    for chunk in objs.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

/// The probe endpoint of write `k`: on node n0 (a peer of net0 already), in net0, above the
/// `used` endpoints net0 has.
fn probe(k: usize, used: usize) -> (String, String) {
    let name = format!("probe-{k}");
    let ip = Ipv4Addr::from(net_base(0) + 2 + (used + k) as u32);
    let v = serde_json::json!({"name": name, "node": "n0", "network": "net0",
                               "ip": ip.to_string(), "attach": format!("afxdp:p{k}")});
    (format!("/vxmesh/v1/endpoint/{name}"), v.to_string())
}

/// What the simulated nodes note: when node `i` applied write `k` (ns since `t0`, 0: not yet).
struct Board {
    t0: Instant,
    applied: Vec<Vec<AtomicU64>>,
    /// CPU spent in the plan code, ns, all nodes.
    plan_ns: AtomicU64,
    /// Changes planned whole (not incrementally), all nodes.
    whole: AtomicU64,
    /// Every simulated node's store counters.
    stats: std::sync::Mutex<Vec<Arc<StoreStats>>>,
}

impl Board {
    /// Watch connections lost, all nodes.
    fn disconnects(&self) -> u64 {
        let s = self.stats.lock().expect("not poisoned");
        s.iter()
            .map(|s| s.disconnects.load(Ordering::Relaxed))
            .sum()
    }

    fn done(&self, k: usize) -> usize {
        self.applied[k]
            .iter()
            .filter(|a| a.load(Ordering::Relaxed) > 0)
            .count()
    }
}

/// This process's resident memory, in MB.
fn rss_mb(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) of a process so far.
fn cpu_s(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit_once(')')
        .map_or(vec![], |(_, r)| r.split_whitespace().collect());
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
    (t(11) + t(12)) / 100.0
}

/// etcd's gRPC bytes sent so far (its /metrics, on the client port).
async fn grpc_sent_bytes() -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect("127.0.0.1:2379").await else {
        return 0.0;
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.lines()
        .filter(|l| l.starts_with("etcd_network_client_grpc_sent_bytes_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One size's results.
struct Row {
    nodes: usize,
    endpoints: usize,
    networks: usize,
    writes: usize,
    all_p50_ms: f64,
    all_p99_ms: f64,
    all_max_ms: f64,
    node_p50_ms: f64,
    node_p99_ms: f64,
    watchers_cpu_ms_per_change: f64,
    plan_us_per_node_change: f64,
    whole_plans: u64,
    setup_disconnects: u64,
    disconnects: u64,
    etcd_cpu_ms_per_change: f64,
    etcd_rss_mb: f64,
    harness_rss_mb: f64,
    harness_rss_one_node_mb: f64,
    watch_bytes_per_node_change: f64,
    setup_s: f64,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes, "endpoints": self.endpoints, "networks": self.networks,
            "writes": self.writes, "all_p50_ms": self.all_p50_ms, "all_p99_ms": self.all_p99_ms,
            "all_max_ms": self.all_max_ms, "node_p50_ms": self.node_p50_ms,
            "node_p99_ms": self.node_p99_ms,
            "watchers_cpu_ms_per_change": self.watchers_cpu_ms_per_change,
            "plan_us_per_node_change": self.plan_us_per_node_change,
            "whole_plans": self.whole_plans,
            "setup_disconnects": self.setup_disconnects, "disconnects": self.disconnects,
            "etcd_cpu_ms_per_change": self.etcd_cpu_ms_per_change,
            "etcd_rss_mb": self.etcd_rss_mb, "harness_rss_mb": self.harness_rss_mb,
            "harness_rss_one_node_mb": self.harness_rss_one_node_mb,
            "watch_bytes_per_node_change": self.watch_bytes_per_node_change,
            "setup_s": self.setup_s,
        })
    }
}

async fn run_size(args: &Args, n: usize, etcd_pid: &str) -> anyhow::Result<Row> {
    let setup = Instant::now();
    let url = "etcd://127.0.0.1:2379".to_string();
    let mut writer = vxmesh::store::etcd::connect(&url).await?;
    writer
        .delete(
            "/vxmesh/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    let objs = objects(n, args.endpoints, args.one_network);
    populate(&mut writer, &objs).await?;
    let me = std::process::id().to_string();
    let rss0 = rss_mb(&me);
    // One read, one full check, one cluster: shared by every simulated node (each then has
    // its own client, watch, state, view and plan).
    let state: State = vxmesh::store::etcd::read_all(&mut writer).await?;
    let base = View::full(&state, &url, Some("n0"))?;
    let cluster = base.cluster();
    let nets = cluster.networks.len();
    let plan0 = Plan::of(&cluster, "n0")?;
    let rss_one = rss_mb(&me) - rss0;
    drop(plan0);
    let board = Arc::new(Board {
        t0: Instant::now(),
        applied: (0..=args.writes)
            .map(|_| (0..n).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        plan_ns: AtomicU64::new(0),
        whole: AtomicU64::new(0),
        stats: std::sync::Mutex::new(Vec::new()),
    });
    let shared = Arc::new((state, base, cluster));
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let ids: Vec<usize> = (t..n).step_by(THREADS).collect();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (shared, board, url) = (shared.clone(), board.clone(), url.clone());
        let h = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                // Every plan first (the CPU-bound part), then the clients and watches: a watch
                // already up is never starved of its keep-alives by the set-up of the others.
                let mut plans = Vec::new();
                for &i in &ids {
                    match Plan::of(&shared.2, &format!("n{i}")) {
                        Ok(p) => plans.push(p),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("node n{i}: {e:#}")));
                            return;
                        }
                    }
                }
                for (i, plan) in ids.into_iter().zip(plans) {
                    if let Err(e) = watcher(i, plan, &shared, &board, &url).await {
                        let _ = ready_tx.send(Err(format!("node n{i}: {e:#}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
            });
        });
        let ready = tokio::task::spawn_blocking(move || ready_rx.recv()).await?;
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("a watcher thread ended"),
        }
        threads.push((stop_tx, h));
    }
    let rss_all = rss_mb(&me) - rss0;
    // Warm-up: write 0 reaches every node (every watch is up).
    let used = if args.one_network {
        n * args.endpoints
    } else {
        PER_NETWORK
    };
    let (k0, v0) = probe(0, used);
    writer.put(k0, v0, None).await?;
    wait(&board, 0, n, Duration::from_secs(120)).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let (cpu0, ecpu0, bytes0) = (cpu_s(&me), cpu_s(etcd_pid), grpc_sent_bytes().await);
    let plan0 = board.plan_ns.load(Ordering::Relaxed);
    let whole0 = board.whole.load(Ordering::Relaxed);
    let lost0 = board.disconnects();
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for k in 1..=args.writes {
        let (key, v) = probe(k, used);
        let t = board.t0.elapsed().as_nanos() as u64;
        writer.put(key, v, None).await?;
        wait(&board, k, n, WRITE_TIMEOUT).await?;
        let times: Vec<f64> = board.applied[k]
            .iter()
            .map(|a| (a.load(Ordering::Relaxed).saturating_sub(t)) as f64 / 1e6)
            .collect();
        all.push(times.iter().cloned().fold(0.0, f64::max));
        per_node.extend(times);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let changes = (args.writes * n) as f64;
    let cpu = cpu_s(&me) - cpu0;
    let ecpu = cpu_s(etcd_pid) - ecpu0;
    let bytes = grpc_sent_bytes().await - bytes0;
    let plan_ns = board.plan_ns.load(Ordering::Relaxed) - plan0;
    for (stop, h) in threads {
        let _ = stop.send(());
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    let mut all2 = all.clone();
    Ok(Row {
        nodes: n,
        endpoints: n * args.endpoints,
        networks: nets,
        writes: args.writes,
        all_p50_ms: pct(&mut all, 0.5),
        all_p99_ms: pct(&mut all, 0.99),
        all_max_ms: pct(&mut all2, 1.0),
        node_p50_ms: pct(&mut per_node, 0.5),
        node_p99_ms: pct(&mut per_node, 0.99),
        watchers_cpu_ms_per_change: cpu * 1e3 / args.writes as f64,
        plan_us_per_node_change: plan_ns as f64 / 1e3 / changes,
        whole_plans: board.whole.load(Ordering::Relaxed) - whole0,
        setup_disconnects: lost0,
        disconnects: board.disconnects() - lost0,
        etcd_cpu_ms_per_change: ecpu * 1e3 / args.writes as f64,
        etcd_rss_mb: rss_mb(etcd_pid),
        harness_rss_mb: rss_all,
        harness_rss_one_node_mb: rss_one,
        watch_bytes_per_node_change: bytes / changes,
        setup_s,
    })
}

/// Start simulated node `i` on this thread's local task set: its own client, watch, state,
/// view and plan, following the store with the node's follower.
async fn watcher(
    i: usize,
    mut plan: Plan,
    shared: &Arc<(State, View, vxmesh::config::Cluster)>,
    board: &Arc<Board>,
    url: &str,
) -> anyhow::Result<()> {
    let (state, base, _) = &**shared;
    let me = format!("n{i}");
    let view = base
        .seen_by(state, &me)
        .context("a simulated node sees other nodes down")?;
    let client = vxmesh::store::etcd::connect(url).await?;
    let state = state.clone();
    let board = board.clone();
    let o = StoreOpts {
        url: url.to_string(),
        node: me.clone(),
        vtep: Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8),
        ttl: Duration::from_secs(5),
    };
    let stats = Arc::new(StoreStats::default());
    stats.connected.store(true, Ordering::Relaxed);
    board
        .stats
        .lock()
        .expect("not poisoned")
        .push(stats.clone());
    tokio::task::spawn_local(async move {
        let mut apply = |view: &View,
                         delta: Option<&Delta>|
         -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, String>> + '_>,
        > {
            let t = Instant::now();
            let planned = match delta.and_then(|d| plan.apply_delta(view, d)) {
                Some(_) => Ok(()),
                None => {
                    board.whole.fetch_add(1, Ordering::Relaxed);
                    Plan::next(&view.cluster(), &me, Some(&plan)).map(|p| plan = p)
                }
            };
            board
                .plan_ns
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let now = board.t0.elapsed().as_nanos() as u64;
            // Note the probes this change brought: an incremental change names them; after a
            // whole one, the probes not noted yet are looked up.
            let mut note = |k: usize| {
                if let Some(row) = board.applied.get(k) {
                    let _ = row[i].compare_exchange(
                        0,
                        now.max(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            };
            match delta {
                Some(d) => d
                    .added
                    .iter()
                    .filter_map(|e| e.name.strip_prefix("probe-")?.parse().ok())
                    .for_each(&mut note),
                None => (0..board.applied.len())
                    .filter(|k| board.applied[*k][i].load(Ordering::Relaxed) == 0)
                    .filter(|k| view.endpoints.contains_key(&format!("probe-{k}")))
                    .for_each(&mut note),
            }
            let r = planned.map(|_| String::new()).map_err(|e| format!("{e:#}"));
            Box::pin(async move { r })
        };
        follow(client, state, view, o.clone(), &stats, &mut apply).await;
    });
    Ok(())
}

/// Wait until all `n` nodes applied write `k`.
async fn wait(board: &Board, k: usize, n: usize, limit: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    while board.done(k) < n {
        if Instant::now() > until {
            bail!(
                "write {k}: {} of {n} nodes applied it within {limit:?}",
                board.done(k)
            );
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !vxmesh_lab::etcd::installed() {
        bail!("etcd is not installed (Debian: apt-get install etcd-server)");
    }
    // A thousand clients and their connections: raise the descriptor limit (etcd inherits it).
    // SAFETY: getrlimit/setrlimit write and read the struct given.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    let ns = Netns(format!("vxconv{}", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0])?;
    sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"])?;
    // This process joins the namespace before any thread exists: every thread is in it.
    let f = std::fs::File::open(format!("/run/netns/{}", ns.0))?;
    // SAFETY: setns on a namespace file descriptor this process holds open.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    let dir = std::env::temp_dir().join(format!("vxconv{}", std::process::id()));
    let etcd = Etcd::start(&ns.0, &["127.0.0.1"], &dir)?;
    let pid = etcd
        .pids()
        .first()
        .context("etcd did not start")?
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        // Interrupted: the namespace and etcd go as on any other end.
        use tokio::signal::unix::{SignalKind, signal};
        let (mut int, mut term) = (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        );
        tokio::select! {
            r = run_all(&args, &pid) => r,
            _ = int.recv() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(etcd);
    let rows = rows?;
    report(&args, &rows)?;
    drop(ns);
    Ok(())
}

/// Every size, in turn.
async fn run_all(args: &Args, pid: &str) -> anyhow::Result<Vec<Row>> {
    {
        // etcd up?
        let mut ok = false;
        for _ in 0..100 {
            if vxmesh::store::etcd::connect("etcd://127.0.0.1:2379")
                .await
                .is_ok()
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ok {
            bail!("etcd did not answer on 127.0.0.1:2379");
        }
        let mut rows = Vec::new();
        for &n in &args.nodes {
            eprintln!(
                "vxmesh-converge: {n} nodes x {} endpoints ...",
                args.endpoints
            );
            let row = run_size(args, n, pid).await?;
            eprintln!(
                "  all nodes: p50 {:.1} ms p99 {:.1} ms max {:.1} ms; per node p50 {:.1} ms; watches lost {} in set-up, {} while measuring",
                row.all_p50_ms,
                row.all_p99_ms,
                row.all_max_ms,
                row.node_p50_ms,
                row.setup_disconnects,
                row.disconnects
            );
            rows.push(row);
        }
        Ok::<_, anyhow::Error>(rows)
    }
}

/// Write results.md and results.json, and print the table.
fn report(args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let json: Vec<serde_json::Value> = rows.iter().map(Row::json).collect();
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut md = String::from(
        "| nodes | endpoints | networks | write → all nodes p50 / p99 / max | per node p50 / p99 | watchers' CPU per change | plan per node and change | whole plans | etcd CPU per change | etcd RSS | harness RSS (one node's state) | watch bytes per node and change |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} / {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} ms | {:.1} µs | {} | {:.1} ms | {:.0} MB | {:.0} MB ({:.0} MB) | {:.0} B |\n",
            r.nodes, r.endpoints, r.networks, r.all_p50_ms, r.all_p99_ms, r.all_max_ms,
            r.node_p50_ms, r.node_p99_ms, r.watchers_cpu_ms_per_change, r.plan_us_per_node_change,
            r.whole_plans, r.etcd_cpu_ms_per_change, r.etcd_rss_mb, r.harness_rss_mb,
            r.harness_rss_one_node_mb, r.watch_bytes_per_node_change
        ));
    }
    std::fs::write(args.out.join("results.md"), &md)?;
    print!("{md}");
    Ok(())
}
