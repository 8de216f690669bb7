//! The daemon (`vxmesh run`) and its control socket.
//!
//! Two threads. The poll thread owns the [`Node`] (the switch, its ports and tables) and runs it
//! to completion, batch after batch, in `vswitch::worker`'s poll loop: it busy-polls while
//! traffic flows and, after a window without a frame, sleeps in `poll(2)` on every port's
//! descriptor plus an eventfd, so an idle node costs no CPU; an empty round while busy-polling
//! yields the CPU. The window adapts between [`BUSY_POLL`] and [`BUSY_POLL_MAX`]
//! (`vxmesh run --busy-poll-us`, `--busy-poll-max-us`): a steady flow whose frames come within
//! the longest window of each other is polled through, instead of paying a wake-up per frame. Every [`HOUSEKEEPING`](crate::node::HOUSEKEEPING) it ages the FDB, expires
//! connections and (every [`ESTIMATE_EVERY`](crate::node::ESTIMATE_EVERY)) estimates rates. The control side is a
//! single-threaded tokio runtime serving the control socket (`/run/vxmesh/NODE.sock`): each
//! command becomes a closure sent to the poll thread over a channel (plus a wake-up on the
//! eventfd) and runs there between two batches, so the tables have one owner, need no lock, and
//! traffic never stops for a command.
//!
//! With `--workers N` there are N poll threads (`vxmesh-poll`, `vxmesh-poll-1`, ...), each
//! owning a whole [`Node`] with a share of the ports (`node::workers`), pinned by `--cpus`. The
//! control side then sends a command to worker 0 when it reads what every worker holds alike
//! (the plan, the cluster) and to every worker when each holds its own (counters, connections,
//! the tracer), adding up or merging the answers; a change is prepared per worker and committed
//! on each (`change`).
//!
//! The protocol is one JSON request line ([`Request`]) and a stream of JSON reply lines
//! ([`Reply`]), the last of which is the exit code the client exits with (SPEC.md: 0 success,
//! 1 runtime failure, 2 usage or configuration error).
//!
//! Under systemd (`packaging/vxmesh@.service`, `Type=notify`) the node says `READY=1` once its
//! ports are open and its control socket listens, keeps the service's watchdog fed from the
//! poll thread's housekeeping (a dataplane that stops polling is restarted; with several
//! workers, only while every worker's housekeeping is recent: [`notify::Heartbeats`]), and says
//! `STOPPING=1` when it stops ([`notify`]). Its log is `tracing` events ([`crate::log`]).
//!
//! The module, one concern a file: here the process (`run`, its options, the poll thread, the
//! accept loop); `protocol` the request and reply lines; `client` the client side; `session` one
//! control connection; `change` the change path; `trace` and `capture` those two commands;
//! `monitor` the rate-limited drop warnings and store events; `notify` sd_notify; `metrics` the
//! Prometheus scrape target (`--metrics`).

mod capture;
mod change;
mod client;
pub mod dns_relay;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod options;
mod protocol;
mod session;
mod stages;
mod trace;

pub use client::client;
pub use protocol::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Reply, Request};
pub use trace::TRACE_WAIT;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, anyhow};
use vswitch::Time;
use vswitch::port::handoff::Mesh;
use vswitch::worker::{self, PollConfig, Waker, Work};

use change::change_to;
use session::{refuse, session};

use crate::cni;
use crate::config::Cluster;
use crate::control;
use crate::node::workers::Workers;
use crate::node::{Node, SystemPorts};
use crate::store::watch::{StoreOpts, StoreStats};

/// Default directory of control sockets.
pub const CONTROL_DIR: &str = "/run/vxmesh";
/// Default busy-poll window: keep polling without sleeping for this long after the last frame
/// (`vxmesh run --busy-poll-us`).
pub const BUSY_POLL: Duration = Duration::from_micros(200);
/// Default longest busy-poll window (`vxmesh run --busy-poll-max-us`): frames that keep coming
/// within 5 ms of each other (200 per second and more) are polled through. On the 2-vCPU test
/// machine that halves the ping RTT at 200 to 500 per second against a fixed 200 µs window, and
/// an idle node still uses 0.3% of a core; a steady flow then costs a core per node
/// (`scripts/latency.sh`, docs/performance.md).
pub const BUSY_POLL_MAX: Duration = Duration::from_millis(5);
/// How often a running trace or capture collects what the switch recorded.
pub const COLLECT_EVERY: Duration = Duration::from_millis(50);

/// The default control socket of node `name`.
pub fn default_control(name: &str) -> PathBuf {
    Path::new(CONTROL_DIR).join(format!("{name}.sock"))
}

/// The connection table file of the node whose control socket is `control`
/// (`/run/vxmesh/NODE.conntrack` by default): it outlives the process, so a restarted node
/// takes its connections over (`lb::persist`).
pub fn conntrack_file(control: &Path) -> PathBuf {
    control.with_extension("conntrack")
}

/// The ESP epoch file of the node whose control socket is `control`
/// (`/run/vxmesh/NODE.esp` by default): the last epoch this node's processes reserved, so a
/// restarted one never repeats an IV under a key ([`Node::reserve_esp_epochs`]).
pub fn esp_epoch_file(control: &Path) -> PathBuf {
    control.with_extension("esp")
}

type Job = Box<dyn FnOnce(&mut Node) + Send>;

/// The control side's way to one poll thread: its jobs and its eventfd.
#[derive(Clone)]
struct WorkerLink {
    jobs: mpsc::Sender<Job>,
    wake: Arc<Waker>,
}

/// The control side's handle on the poll threads (one per worker, `--workers`).
#[derive(Clone)]
struct Handle {
    /// Worker 0 first.
    workers: Arc<[WorkerLink]>,
    /// The rings between the workers, when there is more than one.
    mesh: Option<Arc<Mesh>>,
    /// Held while a change is prepared and committed: one at a time. It guards the desired
    /// state's parts: the file's or store's cluster and the CNI attachments.
    changes: Arc<tokio::sync::Mutex<cni::Local>>,
    /// The store the node follows (its URL and counters), if it does.
    store: Option<(String, Arc<StoreStats>)>,
    /// How ports attached later are opened (`--afxdp-offloads`).
    ports: SystemPorts,
}

impl Handle {
    /// Run `f` on worker 0's poll thread between two batches and return its result: for what
    /// every worker holds alike (the plan, the cluster, the ports' names and ids).
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        self.call_on(0, f).await
    }

    /// Run `f` on worker `k`'s poll thread between two batches and return its result.
    async fn call_on<R: Send + 'static>(
        &self,
        k: usize,
        f: impl FnOnce(&mut Node) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let w = &self.workers[k];
        let (tx, rx) = tokio::sync::oneshot::channel();
        w.jobs
            .send(Box::new(move |n: &mut Node| {
                let _ = tx.send(f(n));
            }))
            .map_err(|_| anyhow!("the poll thread has stopped"))?;
        w.wake.wake();
        rx.await.map_err(|_| anyhow!("the poll thread has stopped"))
    }

    /// Run `f` on every worker (each between two of its batches, all at once) and return
    /// the results, worker 0 first: for what each holds of its own (counters, connections).
    async fn call_all<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Node) -> R + Clone + Send + 'static,
    ) -> anyhow::Result<Vec<R>> {
        let mut waiting = Vec::with_capacity(self.workers.len());
        for w in self.workers.iter() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let f = f.clone();
            w.jobs
                .send(Box::new(move |n: &mut Node| {
                    let _ = tx.send(f(n));
                }))
                .map_err(|_| anyhow!("the poll thread has stopped"))?;
            w.wake.wake();
            waiting.push(rx);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(
                rx.await
                    .map_err(|_| anyhow!("the poll thread has stopped"))?,
            );
        }
        Ok(out)
    }

    /// The switch's counters, every worker's added up.
    async fn stats(&self) -> anyhow::Result<vswitch::SwitchStats> {
        let all = self.call_all(|n| n.sw.stats()).await?;
        let mut it = all.into_iter();
        let mut st = it.next().unwrap_or_default();
        for o in it {
            st.add(&o);
        }
        Ok(st)
    }
}

/// The node as the poll loop drives it: its switch, the control jobs to apply between batches,
/// and its housekeeping.
struct NodeWork {
    node: Node,
    jobs: mpsc::Receiver<Job>,
    /// systemd's watchdog, fed from housekeeping (a compare per tick, a send per half period);
    /// worker 0's.
    watchdog: Option<notify::Watchdog>,
    /// With more than one worker: the rings and which worker this is.
    mesh: Option<(Arc<Mesh>, usize)>,
    /// Every worker's last housekeeping: worker 0 feeds the watchdog only while all are recent.
    beats: Arc<notify::Heartbeats>,
}

impl Work for NodeWork {
    fn poll(&mut self, now: Time) -> usize {
        if let Some((m, me)) = &self.mesh {
            m.awake(*me);
        }
        self.node.sw.poll(now)
    }

    fn between_batches(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            job(&mut self.node);
        }
    }

    fn may_sleep(&mut self) -> bool {
        self.mesh.as_ref().is_none_or(|(m, me)| m.may_sleep(*me))
    }

    fn poll_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.node.sw.poll_fds()
    }

    fn fds_generation(&self) -> u64 {
        self.node.sw.ports_generation()
    }

    fn housekeeping(&mut self, now: Time) {
        self.node.housekeeping(now);
        let me = self.mesh.as_ref().map_or(0, |(_, me)| *me);
        self.beats.beat(me, now);
        if let Some(w) = &mut self.watchdog
            && self.beats.all_alive(now)
        {
            w.tick(now);
        }
    }
}

/// One worker's poll thread: run its switch until `stop`, applying control jobs between
/// batches.
fn poll_loop(work: NodeWork, wake: Arc<Waker>, stop: Arc<AtomicBool>, opts: RunOptions) {
    let mut work = work;
    if opts.poll_priority > 0 {
        // Checked by run() before this thread is started (see realtime_allowed).
        let _ = set_fifo(opts.poll_priority);
    }
    let cfg = PollConfig {
        busy_poll: opts.busy_poll,
        busy_poll_max: opts.busy_poll_max,
        housekeeping: crate::node::HOUSEKEEPING,
    };
    worker::run(&mut work, Some(&wake), &stop, cfg);
}

/// Pin the calling thread to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it (cpu is checked
    // against its size first), and sched_setaffinity reads it for the calling thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Parse `--cpus`: CPU numbers and ranges, comma-separated ("0,2", "0-3", "1,4-5").
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("--cpus {s:?}: {x:?} is not a CPU number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a >= 1024 {
                    return Err(format!("--cpus {s:?}: bad range {part:?}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        return Err(format!("--cpus {s:?}: no CPU"));
    }
    Ok(out)
}

/// Put the calling thread under SCHED_FIFO at `priority`.
fn set_fifo(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process may run a thread at SCHED_FIFO `priority` (tried on a throwaway
/// thread, so the caller's own scheduling is untouched).
fn realtime_allowed(priority: u8) -> anyhow::Result<()> {
    std::thread::spawn(move || set_fifo(priority))
        .join()
        .map_err(|_| anyhow!("checking --poll-priority: the thread panicked"))?
        .with_context(|| {
            format!(
                "--poll-priority {priority}: the poll thread cannot run at SCHED_FIFO (it needs root or CAP_SYS_NICE)"
            )
        })
}

/// How the poll thread runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Busy-poll window: after the last received frame, keep polling (no sleep) this long before
    /// sleeping in `poll(2)`. Longer trades idle-ish CPU for latency: every sleep costs a wake-up
    /// (tens to hundreds of µs on a VM) on the next frame. `Duration::MAX` never sleeps (VPP and
    /// DPDK's polling mode).
    pub busy_poll: Duration,
    /// Longest busy-poll window: while frames keep coming back within it, the poll thread
    /// polls through the gaps between them (twice the recent gap) instead of paying a wake-up
    /// per frame (`vswitch::worker`). Equal to `busy_poll`: a fixed window.
    pub busy_poll_max: Duration,
    /// `--max-conns`, `--lb-timeouts`, `--fdb-aging`: the sizes and times of the node's
    /// tables; a full connection table drops new connections (`drop_table_full`), never evicts.
    pub tables: crate::node::TableOpts,
    /// `--control-group`: a group (name or gid) whose members may use the control socket.
    pub control_group: Option<String>,
    /// `--poll-priority`: run the poll thread at SCHED_FIFO of this priority (1..=99); 0 keeps
    /// ordinary scheduling.
    pub poll_priority: u8,
    /// `--dns-upstream`: where queries for names no resolver of the node serves go (none:
    /// they are answered REFUSED).
    pub dns_upstream: Vec<std::net::SocketAddrV4>,
    /// `--metrics`: serve `GET /metrics` (Prometheus text format) on this address (none: off).
    pub metrics: Option<std::net::SocketAddr>,
    /// `--workers`: poll threads, each a whole switch with a share of the ports
    /// (`node::workers`). 1 runs the node as it always ran.
    pub workers: usize,
    /// `--cpus`: pin worker `k` to the `k`-th CPU of the list (wrapping); empty: no pinning.
    pub cpus: Vec<usize>,
    /// `--receiver-watch-us`: the receiver watcher's sampling period while datagrams flow to
    /// a container (`node::receivers`); zero: no watcher, every gate stays open.
    pub receiver_watch: Duration,
    /// `--afxdp-offloads`: AF_XDP containers in named namespaces keep their TCP offloads
    /// ([`SystemPorts::afxdp_offloads`]).
    pub afxdp_offloads: bool,
    /// `--afxdp-napi-defer-us`: AF_XDP ports defer their interfaces' receive by this long
    /// ([`SystemPorts::afxdp_napi_defer`]); zero: not.
    pub afxdp_napi_defer: Duration,
    /// `--vxlan-source-ports`: the underlay sends each inner flow from one of this many source
    /// ports ([`SystemPorts::vxlan_source_ports`]); zero: from 4789.
    pub vxlan_source_ports: usize,
}

impl RunOptions {
    /// The kernel-backed ports these options open.
    fn system_ports(&self) -> SystemPorts {
        SystemPorts {
            afxdp_offloads: self.afxdp_offloads,
            afxdp_napi_defer: self.afxdp_napi_defer,
            vxlan_source_ports: self.vxlan_source_ports,
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            busy_poll: BUSY_POLL,
            busy_poll_max: BUSY_POLL_MAX,
            tables: crate::node::TableOpts::default(),
            control_group: None,
            poll_priority: 0,
            dns_upstream: Vec::new(),
            metrics: None,
            workers: 1,
            cpus: Vec::new(),
            receiver_watch: crate::node::receivers::WATCH_PERIOD,
            afxdp_offloads: false,
            afxdp_napi_defer: Duration::ZERO,
            vxlan_source_ports: crate::node::VXLAN_SOURCE_PORTS,
        }
    }
}

/// Where a node's desired state comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A cluster file (`--config`), re-read by `reload`.
    File(PathBuf),
    /// The cluster store (`--store`), followed as it changes.
    Store(StoreOpts),
}

/// `vxmesh run`: build the node, serve the control socket, stop cleanly on SIGINT/SIGTERM.
/// Errors in the cluster file (or the store's state) come back as
/// [`crate::config::ConfigError`] (exit 2).
pub fn run(
    source: Source,
    node_name: &str,
    control: Option<PathBuf>,
    opts: RunOptions,
) -> anyhow::Result<()> {
    let control = control.unwrap_or_else(|| default_control(node_name));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    // SIGHUP (reload) is caught from here on: its default action would end the node without a
    // clean stop while it sets up; one that comes now is served once the node runs.
    let hup = {
        let _rt = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("SIGHUP handler")?
    };
    // Bind the control socket first: a second node with the same socket must fail before it
    // touches any port.
    let access = control::Access::new(opts.control_group.as_deref())?;
    if opts.poll_priority > 0 {
        realtime_allowed(opts.poll_priority)?;
    }
    let listener = {
        let _rt = rt.enter();
        control::bind(&control, &access)?
    };
    let metrics = match opts.metrics {
        None => None,
        Some(addr) => {
            let bound = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(|l| {
                    let _rt = rt.enter();
                    tokio::net::TcpListener::from_std(l)
                });
            match bound {
                Ok(l) => Some(l),
                Err(e) => {
                    let _ = std::fs::remove_file(&control);
                    return Err(anyhow!("--metrics {addr}: {e}"));
                }
            }
        }
    };
    let stats = Arc::new(StoreStats::default());
    let started = match &source {
        Source::File(config) => Cluster::load(config)
            .map(|c| (c, None))
            .map_err(anyhow::Error::from),
        Source::Store(o) => rt
            .block_on(crate::store::watch::start(o, &stats))
            .map(|(session, c)| (c, Some((o.clone(), session)))),
    };
    let (cluster, session) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&control);
            return Err(e);
        }
    };
    // The desired state: the file's or store's cluster and the CNI attachments kept from an
    // earlier run (those whose interface is gone are dropped).
    let (mut local, notes) = cni::Local::load(node_name, cluster, cni::state_file(&control));
    for n in notes {
        tracing::warn!(node = node_name, note = %n, "cni: attachments of the last run");
    }
    // With the store: attachments are written there (their addresses from this node's blocks).
    if let Some((o, s)) = &session {
        local.store = Some(cni::StoreLink::new(s.client.clone(), o.url.clone()));
        for e in rt.block_on(local.forget_stale()) {
            tracing::warn!(node = node_name, note = %e, "cni: forgetting stale attachments");
        }
    }
    // Before any port opens: what AF_XDP ports of a process of this node that died changed on
    // their interfaces goes back (crate::node::ifsaved).
    for n in crate::node::ifsaved::recover(&crate::node::ifsaved::file_of(&control)) {
        tracing::warn!(node = node_name, note = %n, "interface settings of the last run");
    }
    let built = local
        .desired(&local.source)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|d| build_workers(d, node_name, &opts));
    let (mut nodes, mesh) = match built {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&control);
            return Err(e);
        }
    };
    let ports: Vec<String> = nodes[0]
        .sw
        .stats()
        .ports
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Before the first packet: the connection table moves into its file, taking over what a
    // previous process of this node left there.
    let epoch_file = esp_epoch_file(&control);
    if let Err(e) = nodes[0].reserve_esp_epochs(&epoch_file) {
        // Fail closed: without the file a restart within the second could repeat an IV.
        let _ = std::fs::remove_file(&control);
        return Err(e.context("the ESP epoch file"));
    }
    for (k, node) in nodes.iter_mut().enumerate() {
        persist_conntrack(node, &conntrack_file_of(&control, k), node_name);
    }
    let links: Vec<(WorkerLink, mpsc::Receiver<Job>)> = (0..nodes.len())
        .map(|k| {
            let (tx, rx) = mpsc::channel::<Job>();
            let wake = match &mesh {
                Some(m) => Ok(m.waker(k).clone()),
                None => Waker::new().map(Arc::new),
            };
            wake.map(|wake| (WorkerLink { jobs: tx, wake }, rx))
        })
        .collect::<std::io::Result<_>>()
        .context("eventfd")?;
    let relay = if opts.dns_upstream.is_empty() {
        None
    } else {
        let (tx, rx) = mpsc::sync_channel(dns_relay::QUEUE);
        for n in &mut nodes {
            n.set_dns_upstream(tx.clone());
        }
        // Answers go out through worker 0: a port it does not own hands them to its owner.
        let w0 = links[0].0.clone();
        let stop = stop.clone();
        let upstreams = opts.dns_upstream.clone();
        Some(
            std::thread::Builder::new()
                .name("vxmesh-dns-relay".into())
                .spawn(move || {
                    dns_relay::run(upstreams, rx, stop, move |port, client, frame| {
                        let _ = w0.jobs.send(Box::new(move |n: &mut Node| {
                            n.relay_dns(port, client, &frame);
                        }));
                        w0.wake.wake();
                    })
                })
                .context("starting the DNS relay")?,
        )
    };
    let receivers = if opts.receiver_watch.is_zero() {
        None
    } else {
        let (stop, period) = (stop.clone(), opts.receiver_watch);
        Some(
            std::thread::Builder::new()
                .name("vxmesh-receivers".into())
                .spawn(move || {
                    crate::node::receivers::run(crate::node::receivers::gates(), &stop, period);
                })
                .context("starting the receiver watcher")?,
        )
    };
    let workers: Arc<[WorkerLink]> = links.iter().map(|(l, _)| l.clone()).collect();
    let beats = Arc::new(notify::Heartbeats::new(nodes.len(), Time::monotonic()));
    let mut polls = Vec::with_capacity(nodes.len());
    for (k, (node, (link, jobs))) in nodes.into_iter().zip(links).enumerate() {
        let work = NodeWork {
            node,
            jobs,
            watchdog: if k == 0 {
                notify::Watchdog::from_env()
            } else {
                None
            },
            mesh: mesh.as_ref().map(|m| (m.clone(), k)),
            beats: beats.clone(),
        };
        let (wake, stopper, opts) = (link.wake.clone(), stop.clone(), opts.clone());
        let cpu = (!opts.cpus.is_empty()).then(|| opts.cpus[k % opts.cpus.len()]);
        // Worker 0 keeps the name the poll thread always had (scripts look for it).
        let name = if k == 0 {
            "vxmesh-poll".to_string()
        } else {
            format!("vxmesh-poll-{k}")
        };
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            if let Some(c) = cpu
                && let Err(e) = pin_to(c)
            {
                tracing::warn!(worker = k, cpu = c, error = %e, "--cpus: not pinned");
            }
            poll_loop(work, wake, stopper, opts)
        });
        match spawned {
            Ok(t) => polls.push(t),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for w in workers.iter() {
                    w.wake.wake();
                }
                for t in polls {
                    let _ = t.join();
                }
                let _ = std::fs::remove_file(&control);
                return Err(anyhow!("starting poll thread {k}: {e}"));
            }
        }
    }
    if let Some(m) = &mesh {
        tracing::info!(
            node = node_name,
            workers = m.workers(),
            cpus = ?opts.cpus,
            "poll threads started"
        );
    }
    for p in &ports {
        tracing::info!(node = node_name, port = %p, "port opened");
    }
    let from = match &source {
        Source::File(p) => format!("cluster file {}", p.display()),
        Source::Store(o) => format!("store {}", o.url),
    };
    tracing::info!(
        node = node_name,
        ports = %ports.join(","),
        control = %control.display(),
        source = %from,
        version = env!("CARGO_PKG_VERSION"),
        git = crate::version::GIT_REV,
        "node running"
    );
    notify::notify(&format!(
        "READY=1\nSTATUS=node {node_name} running: {} ports, {from}",
        ports.len()
    ));
    let handle = Handle {
        workers: workers.clone(),
        mesh,
        changes: Arc::new(tokio::sync::Mutex::new(local)),
        store: session
            .as_ref()
            .map(|(o, _)| (o.url.clone(), stats.clone())),
        ports: opts.system_ports(),
    };
    let served = rt.block_on(serve(
        control::Gate::new(listener, access),
        handle,
        session,
        stats,
        metrics,
        node_name,
        hup,
    ));
    notify::notify("STOPPING=1");
    tracing::info!(node = node_name, "node stopping");
    stop.store(true, Ordering::Relaxed);
    for w in workers.iter() {
        w.wake.wake();
    }
    let joined: Vec<_> = polls.into_iter().map(|t| t.join()).collect();
    if let Some(r) = relay {
        let _ = r.join();
    }
    if let Some(r) = receivers {
        let _ = r.join();
    }
    let _ = std::fs::remove_file(&control);
    // The ports closed with their poll threads and put their interfaces' settings back.
    crate::node::ifsaved::clear();
    served?;
    if joined.iter().any(Result::is_err) {
        return Err(anyhow!("a poll thread panicked"));
    }
    tracing::info!(node = node_name, "node stopped");
    Ok(())
}

/// Build the node on `opts.workers` workers (one: as it always ran, no steering ports).
fn build_workers(
    cluster: Cluster,
    node: &str,
    opts: &RunOptions,
) -> anyhow::Result<(Vec<Node>, Option<Arc<Mesh>>)> {
    if opts.workers <= 1 {
        let mut ports = opts.system_ports();
        let n = Node::build_with(cluster, node, &mut ports, opts.tables)?;
        return Ok((vec![n], None));
    }
    let w = Workers::build(
        cluster,
        node,
        opts.workers,
        &mut opts.system_ports(),
        opts.tables,
    )?;
    Ok((w.nodes, Some(w.mesh)))
}

/// Most poll threads a node runs (`vxmesh run --workers`).
pub const MAX_WORKERS: usize = 64;

/// Every file a node keeps beside its control socket `control` and leaves for its next
/// process: the connection tables (one per worker, up to [`MAX_WORKERS`]), the ESP epochs, the
/// CNI attachments and the interface settings its ports changed. For tools and tests that
/// remove a node for good (the lab removes them with its namespaces).
pub fn node_files(control: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (0..MAX_WORKERS)
        .map(|k| conntrack_file_of(control, k))
        .collect();
    files.push(esp_epoch_file(control));
    files.push(crate::cni::state_file(control));
    files.push(crate::node::ifsaved::file_of(control));
    files
}

/// Worker `k`'s connection table file: [`conntrack_file`] for worker 0,
/// `NODE.wK.conntrack` beside it for the others. A restart with the same `--workers` gives each
/// worker its own connections back (the ports keep their workers).
pub fn conntrack_file_of(control: &Path, k: usize) -> PathBuf {
    if k == 0 {
        conntrack_file(control)
    } else {
        control.with_extension(format!("w{k}.conntrack"))
    }
}

/// Move `node`'s connection table into `file`, taking over what a previous process left
/// there, and say what happened.
fn persist_conntrack(node: &mut Node, file: &Path, node_name: &str) {
    match node
        .lb()
        .persist_conntrack(file, node_name, Time::monotonic())
    {
        Ok(r) => {
            if let Some(why) = r.file_discarded {
                tracing::warn!(
                    node = node_name,
                    file = %file.display(),
                    reason = %why,
                    "connection table file discarded"
                );
            }
            if r.restored + r.discarded > 0 {
                tracing::info!(
                    node = node_name,
                    file = %file.display(),
                    restored = r.restored,
                    left_out = r.discarded,
                    "connections taken over from the last run"
                );
            }
        }
        Err(e) => tracing::warn!(
            node = node_name,
            error = %e,
            "connection table kept in memory only (no restart survives it)"
        ),
    }
}

/// The control side: accept connections (each a session), follow the store if the node does,
/// until SIGINT or SIGTERM; then leave the store.
async fn serve(
    gate: control::Gate,
    handle: Handle,
    store: Option<(StoreOpts, crate::store::watch::Session)>,
    stats: Arc<StoreStats>,
    metrics_listener: Option<tokio::net::TcpListener>,
    node: &str,
    // SIGHUP re-reads the cluster file, as `reload` does (and as nginx and dockerd take it;
    // `systemctl reload`).
    mut hup: tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let local = tokio::task::LocalSet::new();
    let lease = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut leaving = None;
    local.spawn_local(monitor::run(
        handle.clone(),
        node.to_string(),
        store.as_ref().map(|_| stats.clone()),
    ));
    if let Some(l) = metrics_listener {
        if let Ok(a) = l.local_addr() {
            tracing::info!(node, addr = %a, "metrics: serving GET /metrics");
        }
        local.spawn_local(metrics::serve(l, handle.clone(), node.to_string()));
    }
    if let Some((o, session)) = store {
        use crate::store::watch;
        lease.store(session.lease, Ordering::Relaxed);
        leaving = Some(session.client.clone());
        let (h, st, ka) = (handle.clone(), stats.clone(), stats.clone());
        let (o2, client2, lease2) = (o.clone(), session.client.clone(), lease.clone());
        local.spawn_local(async move {
            watch::keep_alive(client2, o2, &lease2, &ka).await;
        });
        local.spawn_local(async move {
            let mut apply = |view: &crate::store::view::View,
                             _: Option<&crate::store::view::Delta>|
             -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<String, String>> + '_>,
            > {
                // The node plans the whole cluster (its own ports and tables); the checks
                // before were incremental where they could be.
                let cluster: Cluster = view.cluster();
                let h = h.clone();
                Box::pin(async move {
                    match change_to(&h, cluster).await {
                        Ok(r) => r,
                        Err(e) => Err(format!("{e:#}")),
                    }
                })
            };
            watch::follow(
                session.client,
                session.state,
                session.view,
                o,
                &st,
                &mut apply,
            )
            .await;
        });
    }
    let r = local
        .run_until(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                    _ = hup.recv() => {
                        let h = handle.clone();
                        tokio::task::spawn_local(async move {
                            match session::reload(&h).await {
                                Ok(Ok(log)) => tracing::info!(%log, "SIGHUP: cluster file re-read"),
                                Ok(Err((_, why))) => tracing::error!(%why, "SIGHUP: reload refused, the running configuration stays"),
                                Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload failed"),
                            }
                        });
                    }
                    admit = gate.next() => match admit {
                        control::Admit::Session(stream, peer, guard) => {
                            let h = handle.clone();
                            tokio::task::spawn_local(async move {
                                let _ = session(stream, peer, h).await;
                                drop(guard);
                            });
                        }
                        control::Admit::Refused(stream, why) => {
                            tokio::task::spawn_local(refuse(stream, why));
                        }
                    },
                }
            }
        })
        .await;
    if let Some(mut client) = leaving {
        crate::store::watch::leave(&mut client, lease.load(Ordering::Relaxed)).await;
    }
    r
}
