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
//! The protocol is one JSON request line ([`Request`]) and a stream of JSON reply lines
//! ([`Reply`]), the last of which is the exit code the client exits with (SPEC.md: 0 success,
//! 1 runtime failure, 2 usage or configuration error).
//!
//! Under systemd (`packaging/vxmesh@.service`, `Type=notify`) the node says `READY=1` once its
//! ports are open and its control socket listens, keeps the service's watchdog fed from the
//! poll thread's housekeeping (a dataplane that stops polling is restarted), and says
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
use vswitch::worker::{self, PollConfig, Waker, Work};

use change::change_to;
use session::{refuse, session};

use crate::cni;
use crate::config::Cluster;
use crate::control;
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

/// The control side's handle on the poll thread.
#[derive(Clone)]
struct Handle {
    jobs: mpsc::Sender<Job>,
    wake: Arc<Waker>,
    /// Held while a change is prepared and committed: one at a time. It guards the desired
    /// state's parts: the file's or store's cluster and the CNI attachments.
    changes: Arc<tokio::sync::Mutex<cni::Local>>,
    /// The store the node follows (its URL and counters), if it does.
    store: Option<(String, Arc<StoreStats>)>,
}

impl Handle {
    /// Run `f` on the poll thread between two batches and return its result.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |n: &mut Node| {
                let _ = tx.send(f(n));
            }))
            .map_err(|_| anyhow!("the poll thread has stopped"))?;
        self.wake.wake();
        rx.await.map_err(|_| anyhow!("the poll thread has stopped"))
    }
}

/// The node as the poll loop drives it: its switch, the control jobs to apply between batches,
/// and its housekeeping.
struct NodeWork {
    node: Node,
    jobs: mpsc::Receiver<Job>,
    /// systemd's watchdog, fed from housekeeping (a compare per tick, a send per half period).
    watchdog: Option<notify::Watchdog>,
}

impl Work for NodeWork {
    fn poll(&mut self, now: Time) -> usize {
        self.node.sw.poll(now)
    }

    fn between_batches(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            job(&mut self.node);
        }
    }

    fn poll_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.node.sw.poll_fds()
    }

    fn fds_generation(&self) -> u64 {
        self.node.sw.ports_generation()
    }

    fn housekeeping(&mut self, now: Time) {
        self.node.housekeeping(now);
        if let Some(w) = &mut self.watchdog {
            w.tick(now);
        }
    }
}

/// The poll thread: run the switch until `stop`, applying control jobs between batches.
fn poll_loop(
    node: Node,
    jobs: mpsc::Receiver<Job>,
    wake: Arc<Waker>,
    stop: Arc<AtomicBool>,
    opts: RunOptions,
) {
    let mut work = NodeWork {
        node,
        jobs,
        watchdog: notify::Watchdog::from_env(),
    };
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
    /// Connection-table entries (IPVS-style conntrack); a full table drops new connections
    /// (`drop_table_full`), never evicts.
    pub max_conns: usize,
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            busy_poll: BUSY_POLL,
            busy_poll_max: BUSY_POLL_MAX,
            max_conns: crate::node::MAX_CONNS,
            control_group: None,
            poll_priority: 0,
            dns_upstream: Vec::new(),
            metrics: None,
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
    let built = local
        .desired(&local.source)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|d| Node::build_with(d, node_name, &mut SystemPorts, opts.max_conns));
    let node = match built {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&control);
            return Err(e);
        }
    };
    let ports: Vec<String> = node
        .sw
        .stats()
        .ports
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let wake = Arc::new(Waker::new().context("eventfd")?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut node = node;
    // Before the first packet: the connection table moves into its file, taking over what a
    // previous process of this node left there.
    let epoch_file = esp_epoch_file(&control);
    if let Err(e) = node.reserve_esp_epochs(&epoch_file) {
        // Fail closed: without the file a restart within the second could repeat an IV.
        let _ = std::fs::remove_file(&control);
        return Err(e.context("the ESP epoch file"));
    }
    let ct_file = conntrack_file(&control);
    match node
        .lb()
        .persist_conntrack(&ct_file, node_name, Time::monotonic())
    {
        Ok(r) => {
            if let Some(why) = r.file_discarded {
                tracing::warn!(
                    node = node_name,
                    file = %ct_file.display(),
                    reason = %why,
                    "connection table file discarded"
                );
            }
            if r.restored + r.discarded > 0 {
                tracing::info!(
                    node = node_name,
                    file = %ct_file.display(),
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
    let relay = if opts.dns_upstream.is_empty() {
        None
    } else {
        let (tx, rx) = mpsc::sync_channel(dns_relay::QUEUE);
        node.set_dns_upstream(tx);
        let (jobs, wake, stop) = (jobs_tx.clone(), wake.clone(), stop.clone());
        let upstreams = opts.dns_upstream.clone();
        Some(
            std::thread::Builder::new()
                .name("vxmesh-dns-relay".into())
                .spawn(move || {
                    dns_relay::run(upstreams, rx, stop, move |port, client, frame| {
                        let _ = jobs.send(Box::new(move |n: &mut Node| {
                            n.relay_dns(port, client, &frame);
                        }));
                        wake.wake();
                    })
                })
                .context("starting the DNS relay")?,
        )
    };
    let poll = {
        let (wake, stop) = (wake.clone(), stop.clone());
        std::thread::Builder::new()
            .name("vxmesh-poll".into())
            .spawn(move || poll_loop(node, jobs_rx, wake, stop, opts))
            .context("starting the poll thread")?
    };
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
        jobs: jobs_tx,
        wake: wake.clone(),
        changes: Arc::new(tokio::sync::Mutex::new(local)),
        store: session
            .as_ref()
            .map(|(o, _)| (o.url.clone(), stats.clone())),
    };
    let served = rt.block_on(serve(
        control::Gate::new(listener, access),
        handle,
        session,
        stats,
        metrics,
        node_name,
    ));
    notify::notify("STOPPING=1");
    tracing::info!(node = node_name, "node stopping");
    stop.store(true, Ordering::Relaxed);
    wake.wake();
    let joined = poll.join();
    if let Some(r) = relay {
        let _ = r.join();
    }
    let _ = std::fs::remove_file(&control);
    served?;
    joined.map_err(|_| anyhow!("the poll thread panicked"))?;
    tracing::info!(node = node_name, "node stopped");
    Ok(())
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
