//! The daemon (`vxmesh run`) and its control socket.
//!
//! Two threads. The poll thread owns the [`Node`] (the switch, its ports and tables) and runs it
//! to completion, batch after batch, in `vswitch::worker`'s poll loop: it busy-polls while
//! traffic flows and, after [`BUSY_POLL`] without a frame (`vxmesh run --busy-poll-us`), sleeps
//! in `poll(2)` on every port's descriptor plus an eventfd, so an idle node costs no CPU; an empty
//! round while busy-polling yields the CPU. Every [`HOUSEKEEPING`] it ages the FDB, expires
//! connections and (every [`ESTIMATE_EVERY`]) estimates rates. The control side is a
//! single-threaded tokio runtime serving the control socket (`/run/vxmesh/NODE.sock`): each
//! command becomes a closure sent to the poll thread over a channel (plus a wake-up on the
//! eventfd) and runs there between two batches, so the tables have one owner, need no lock, and
//! traffic never stops for a command.
//!
//! The protocol is one JSON request line ([`Request`]) and a stream of JSON reply lines
//! ([`Reply`]), the last of which is the exit code the client exits with (SPEC.md: 0 success,
//! 1 runtime failure, 2 usage or configuration error).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use vswitch::Time;
use vswitch::trace::TraceFilter;
use vswitch::worker::{self, PollConfig, Waker, Work};

use crate::cni::{self, CniCall};
use crate::config::Cluster;
use crate::node::{Change, Node, STEP_ENTRIES, SystemPorts};
use crate::store::watch::{StoreOpts, StoreStats};
use crate::{control, pcap, show};

/// Default directory of control sockets.
pub const CONTROL_DIR: &str = "/run/vxmesh";
/// Default busy-poll window: keep polling without sleeping for this long after the last frame
/// (`vxmesh run --busy-poll-us`).
pub const BUSY_POLL: Duration = Duration::from_micros(200);
/// Housekeeping period: FDB aging, connection expiry, rate estimation. It is also the longest
/// sleep of an idle poll thread (`vswitch::worker::PollConfig::housekeeping`), so housekeeping
/// runs on an idle node too.
pub const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Rate estimator period (IPVS estimates every 2 s).
pub const ESTIMATE_EVERY: Duration = Duration::from_secs(2);
/// FDB entries examined per housekeeping tick.
pub const FDB_AGE_BUDGET: usize = 4096;
/// Connection-table slots examined per housekeeping tick.
pub const CONN_EXPIRE_BUDGET: usize = 4096;
/// How often a running trace or capture collects what the switch recorded.
pub const COLLECT_EVERY: Duration = Duration::from_millis(50);
/// Longest a `trace` waits for its packets.
pub const TRACE_WAIT: Duration = Duration::from_secs(30);

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// The default control socket of node `name`.
pub fn default_control(name: &str) -> PathBuf {
    Path::new(CONTROL_DIR).join(format!("{name}.sock"))
}

/// A command sent to a running node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// `network inspect NET`.
    NetworkInspect {
        /// The network.
        network: String,
        /// JSON output.
        json: bool,
    },
    /// `fdb show`.
    FdbShow {
        /// Only this network.
        network: Option<String>,
        /// JSON output.
        json: bool,
    },
    /// `lb show`.
    LbShow {
        /// `--stats`.
        stats: bool,
        /// `--rate`.
        rate: bool,
        /// JSON output.
        json: bool,
    },
    /// `conntrack show`.
    ConntrackShow {
        /// JSON output.
        json: bool,
    },
    /// `stats`.
    Stats {
        /// JSON output.
        json: bool,
    },
    /// `trace`.
    Trace {
        /// Packets to trace.
        count: u32,
        /// Filter expression.
        filter: Option<String>,
        /// JSON output.
        json: bool,
    },
    /// `capture`.
    Capture {
        /// Port name.
        port: String,
        /// Absolute path of the pcap file to write.
        file: PathBuf,
        /// Frames to capture (until the client goes away if none).
        count: Option<u64>,
    },
    /// `reload`.
    Reload,
    /// CNI ADD from `vxmesh-cni`.
    CniAdd(CniCall),
    /// CNI DEL.
    CniDel(CniCall),
    /// CNI CHECK.
    CniCheck(CniCall),
    /// CNI STATUS.
    CniStatus(CniCall),
    /// CNI GC.
    CniGc(CniCall),
}

/// One reply line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// Text for standard output.
    Out(String),
    /// Text for standard error.
    Err(String),
    /// The end, with the client's exit code.
    Exit(u8),
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
    next_estimate: Time,
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
        self.node.sw.env.fdb.age(now, FDB_AGE_BUDGET);
        let lb = self.node.lb();
        lb.expire(now, CONN_EXPIRE_BUDGET);
        if now >= self.next_estimate {
            self.next_estimate = Time(now.0 + ESTIMATE_EVERY.as_nanos() as u64);
            lb.estimate(now);
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
        next_estimate: Time::monotonic(),
    };
    if opts.poll_priority > 0 {
        // Checked by run() before this thread is started (see realtime_allowed).
        let _ = set_fifo(opts.poll_priority);
    }
    let cfg = PollConfig {
        busy_poll: opts.busy_poll,
        housekeeping: HOUSEKEEPING,
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
    /// Connection-table entries (IPVS-style conntrack); a full table drops new connections
    /// (`drop_table_full`), never evicts.
    pub max_conns: usize,
    /// `--control-group`: a group (name or gid) whose members may use the control socket.
    pub control_group: Option<String>,
    /// `--poll-priority`: run the poll thread at SCHED_FIFO of this priority (1..=99); 0 keeps
    /// ordinary scheduling.
    pub poll_priority: u8,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            busy_poll: BUSY_POLL,
            max_conns: crate::node::MAX_CONNS,
            control_group: None,
            poll_priority: 0,
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
    let (local, notes) = cni::Local::load(node_name, cluster, cni::state_file(&control));
    for n in notes {
        eprintln!("vxmesh: {n}");
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
    let (jobs_tx, jobs_rx) = mpsc::channel();
    let wake = Arc::new(Waker::new().context("eventfd")?);
    let stop = Arc::new(AtomicBool::new(false));
    let poll = {
        let (wake, stop) = (wake.clone(), stop.clone());
        std::thread::Builder::new()
            .name("vxmesh-poll".into())
            .spawn(move || poll_loop(node, jobs_rx, wake, stop, opts))
            .context("starting the poll thread")?
    };
    eprintln!(
        "vxmesh: node {node_name} running: ports {}; control socket {}{}",
        ports.join(", "),
        control.display(),
        match &source {
            Source::File(p) => format!("; cluster file {}", p.display()),
            Source::Store(o) => format!("; following the store {}", o.url),
        }
    );
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
    ));
    stop.store(true, Ordering::Relaxed);
    wake.wake();
    let joined = poll.join();
    let _ = std::fs::remove_file(&control);
    served?;
    joined.map_err(|_| anyhow!("the poll thread panicked"))?;
    eprintln!("vxmesh: node {node_name} stopped");
    Ok(())
}

/// Make `cluster` (a cluster file's or the store's) the node's desired state, with the node's
/// CNI attachments added ([`cni::Local::desired`]). One change at a time. Returns what changed,
/// or the message of a refusal.
async fn change_to(h: &Handle, cluster: Cluster) -> anyhow::Result<Result<String, String>> {
    let mut local = h.changes.lock().await;
    let desired = match local.desired(&cluster) {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("{}: refused: {e}", cluster.path.display()))),
    };
    let r = apply(h, desired).await?;
    if r.is_ok() {
        local.source = cluster;
    }
    Ok(r)
}

/// Apply a whole desired state, the change lock held: prepared off the poll thread (the plan,
/// the tables, the new ports), committed a bounded step per job (the poll thread forwards a
/// round of batches between two steps, so a change of any size never pauses it long), and what
/// it took out closed off the poll thread.
async fn apply(h: &Handle, cluster: Cluster) -> anyhow::Result<Result<String, String>> {
    let (base, buf_size) = h.call(|n| (n.plan.clone(), n.sw.buf_size())).await?;
    let prepared = tokio::task::spawn_blocking(move || {
        Change::prepare(cluster, base, &mut SystemPorts, buf_size).map_err(|e| format!("{e:#}"))
    })
    .await
    .context("preparing the change")?;
    let change = match prepared {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut c = h.call(move |n| n.begin(change)).await?;
    loop {
        let (back, done) = h
            .call(move |n| {
                let done = n.step(&mut c, STEP_ENTRIES);
                (c, done)
            })
            .await?;
        c = back;
        if done {
            break;
        }
    }
    let (r, left) = c.finish();
    // Ports close (XDP detached, TAPs removed) off the poll thread.
    let _ = tokio::task::spawn_blocking(move || drop(left)).await;
    Ok(r.map_err(|e| format!("{e:#}")))
}

async fn serve(
    gate: control::Gate,
    handle: Handle,
    store: Option<(StoreOpts, crate::store::watch::Session)>,
    stats: Arc<StoreStats>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let local = tokio::task::LocalSet::new();
    let lease = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut leaving = None;
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
            let mut apply = |cluster: Cluster| -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<String, String>> + '_>,
            > {
                let h = h.clone();
                Box::pin(async move {
                    match change_to(&h, cluster).await {
                        Ok(r) => r,
                        Err(e) => Err(format!("{e:#}")),
                    }
                })
            };
            watch::follow(session.client, session.state, o, &st, &mut apply).await;
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

/// Tell a refused client why (best effort: it may not read) and close.
async fn refuse(stream: UnixStream, why: String) {
    let (_, w) = stream.into_split();
    let mut rep = Replies { w };
    if rep.send(&Reply::Err(why)).await.is_ok() {
        let _ = rep.send(&Reply::Exit(EXIT_FAILURE)).await;
    }
}

/// Where replies go: the control connection.
struct Replies {
    w: tokio::net::unix::OwnedWriteHalf,
}

impl Replies {
    async fn send(&mut self, r: &Reply) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        line.push('\n');
        control::send_line(&mut self.w, line.as_bytes()).await
    }
    async fn out(&mut self, s: impl Into<String>) -> std::io::Result<()> {
        self.send(&Reply::Out(s.into())).await
    }
}

async fn session(stream: UnixStream, peer: control::Peer, h: Handle) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let mut rep = Replies { w };
    let line = match control::read_request(r).await {
        Ok(l) => l,
        Err(control::ReadError::Closed) => return Ok(()),
        Err(e) => {
            rep.send(&Reply::Err(format!("bad request: {e}"))).await?;
            return rep.send(&Reply::Exit(EXIT_USAGE)).await;
        }
    };
    let code = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match handle_request(req, &peer, &h, &mut rep).await {
            Ok(code) => code,
            Err(e) => {
                rep.send(&Reply::Err(format!("{e:#}"))).await?;
                EXIT_FAILURE
            }
        },
        Err(e) => {
            rep.send(&Reply::Err(format!("bad request: {e}"))).await?;
            EXIT_USAGE
        }
    };
    rep.send(&Reply::Exit(code)).await
}

async fn handle_request(
    req: Request,
    peer: &control::Peer,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    match req {
        Request::NetworkInspect { network, json } => {
            match h.call(move |n| show::network(n, &network, json)).await? {
                Ok(s) => rep.out(s).await?,
                Err(e) => {
                    rep.send(&Reply::Err(e)).await?;
                    return Ok(EXIT_USAGE);
                }
            }
        }
        Request::FdbShow { network, json } => {
            let s = h
                .call(move |n| {
                    if let Some(net) = &network
                        && n.sw.env.net_by_name(net).is_none()
                    {
                        return Err(format!("no network {net:?} on this node"));
                    }
                    Ok(if json {
                        show::fdb_json(&n.sw, network.as_deref())
                    } else {
                        show::fdb(&n.sw, network.as_deref())
                    })
                })
                .await?;
            match s {
                Ok(s) => rep.out(s).await?,
                Err(e) => {
                    rep.send(&Reply::Err(e)).await?;
                    return Ok(EXIT_USAGE);
                }
            }
        }
        Request::LbShow { stats, rate, json } => {
            let s = h.call(move |n| show::lb(n, stats, rate, json)).await?;
            rep.out(s).await?;
        }
        Request::ConntrackShow { json } => {
            // A slice of the table per job, so the poll thread forwards between slices; the
            // listing is rendered here, off the poll thread. Like `ipvsadm -Lnc` reading /proc,
            // it is not one atomic snapshot of a table that changes while it is read.
            let now = h.call(|n| n.sw.env.now).await?;
            let (mut conns, mut from) = (Vec::new(), Some(0));
            while let Some(start) = from {
                let (slice, next) = h
                    .call(move |n| {
                        n.lb()
                            .conns_slice(now, start, lb::listing::CONNS_SLICE_SLOTS)
                    })
                    .await?;
                conns.extend(slice);
                from = next;
            }
            rep.out(show::conntrack_of(&conns, json)).await?;
        }
        Request::Stats { json } => {
            let mut s = h
                .call(move |n| {
                    if json {
                        show::stats_json(&n.sw)
                    } else {
                        show::stats(&n.sw)
                    }
                })
                .await?;
            if let Some((url, st)) = &h.store {
                s = show::with_store(s, json, url, st);
            }
            rep.out(s).await?;
        }
        Request::Trace {
            count,
            filter,
            json,
        } => return trace(count, filter, json, h, rep).await,
        Request::Capture { port, file, count } => {
            return capture(port, file, count, peer, h, rep).await;
        }
        Request::CniAdd(c) => return serve_cni(cni::Op::Add, c, h, rep).await,
        Request::CniDel(c) => return serve_cni(cni::Op::Del, c, h, rep).await,
        Request::CniCheck(c) => return serve_cni(cni::Op::Check, c, h, rep).await,
        Request::CniStatus(c) => return serve_cni(cni::Op::Status, c, h, rep).await,
        Request::CniGc(c) => return serve_cni(cni::Op::Gc, c, h, rep).await,
        Request::Reload => {
            let r = if let Some((url, _)) = &h.store {
                Err((
                    EXIT_USAGE,
                    format!(
                        "this node follows the store {url}: changes apply as they are written there (`vxmesh --store {url} ...`); there is no file to re-read"
                    ),
                ))
            } else {
                let path = h.call(|n| n.cluster.path.clone()).await?;
                // Reading and checking a large file takes time: on a blocking thread.
                let loaded = tokio::task::spawn_blocking(move || {
                    Cluster::load(&path).map_err(|e| e.to_string())
                })
                .await
                .context("reading the cluster file")?;
                match loaded {
                    Err(e) => Err((EXIT_USAGE, e)),
                    Ok(cluster) => change_to(h, cluster).await?.map_err(|e| (EXIT_USAGE, e)),
                }
            };
            match r {
                Ok(log) => rep.out(log).await?,
                Err((code, e)) => {
                    rep.send(&Reply::Err(e)).await?;
                    return Ok(code);
                }
            }
        }
    }
    Ok(EXIT_OK)
}

/// A CNI call from `vxmesh-cni`: its result (or nothing) on standard output and exit 0, or a
/// CNI error object on standard output and exit 1.
async fn serve_cni(
    op: cni::Op,
    call: CniCall,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    let version = call
        .config
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("1.0.0")
        .to_string();
    let served = {
        let mut local = h.changes.lock().await;
        let mut apply_one = |c: Cluster| -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, String>> + '_>,
        > {
            Box::pin(async move {
                match apply(h, c).await {
                    Ok(r) => r,
                    Err(e) => Err(format!("{e:#}")),
                }
            })
        };
        cni::handle(op, call, &mut local, &mut apply_one).await
    };
    let out = match served {
        Ok(cni::Served::Out(s)) => Ok(s),
        Ok(cni::Served::CheckPort(name)) => {
            let attached = h.call(move |n| n.sw.port_id(&name).is_some()).await?;
            if attached {
                Ok(String::new())
            } else {
                Err(cni::CniError::new(
                    cni::code::FAILED,
                    "CHECK failed: the endpoint's port is not attached to the switch",
                ))
            }
        }
        Err(e) => Err(e),
    };
    match out {
        Ok(s) => {
            rep.out(s).await?;
            Ok(EXIT_OK)
        }
        Err(mut e) => {
            e.cni_version = version;
            rep.out(e.to_json()).await?;
            Ok(EXIT_FAILURE)
        }
    }
}

async fn trace(
    count: u32,
    filter: Option<String>,
    json: bool,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    let filter = match TraceFilter::parse(filter.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => {
            rep.send(&Reply::Err(format!("trace: {e}"))).await?;
            return Ok(EXIT_USAGE);
        }
    };
    let armed = h
        .call(move |n| {
            if n.sw.env.tracer.armed() {
                return false;
            }
            n.sw.env.tracer.drain();
            n.sw.env.tracer.arm(count, filter);
            true
        })
        .await?;
    if !armed {
        rep.send(&Reply::Err(
            "trace: another trace is running on this node; one at a time".into(),
        ))
        .await?;
        return Ok(EXIT_USAGE);
    }
    let deadline = tokio::time::Instant::now() + TRACE_WAIT;
    let mut seen = 0u32;
    let mut ids = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(COLLECT_EVERY).await;
        let (text, n_ids, remaining) = h
            .call(move |n| {
                let recs = n.sw.env.tracer.drain();
                let ids: Vec<u32> = recs.iter().map(|r| r.id).collect();
                let text = if recs.is_empty() {
                    String::new()
                } else if json {
                    show::trace_json(&n.sw, &recs)
                } else {
                    show::trace(&n.sw, &recs)
                };
                (text, ids, n.sw.env.tracer.remaining())
            })
            .await?;
        ids.extend(n_ids);
        seen = seen.max(ids.len() as u32);
        if !text.is_empty() && rep.out(text).await.is_err() {
            break; // the client went away
        }
        if remaining == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    h.call(|n| n.sw.env.tracer.disarm()).await?;
    if seen < count && !json {
        let _ = rep
            .send(&Reply::Err(format!(
                "trace: {seen} of {count} packets seen in {} s",
                TRACE_WAIT.as_secs()
            )))
            .await;
    }
    Ok(EXIT_OK)
}

async fn capture(
    port: String,
    file: PathBuf,
    count: Option<u64>,
    peer: &control::Peer,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    // The file first, with the client's identity and off this runtime (a hung file system must
    // not stall the control side), then the capture.
    let (path, who) = (file.clone(), *peer);
    let opened = tokio::task::spawn_blocking(move || {
        control::create_capture_file(&path, &who).and_then(pcap::Sink::spawn)
    })
    .await
    .context("opening the capture file")?;
    let sink = match opened {
        Ok(s) => s,
        Err(e) => {
            rep.send(&Reply::Err(format!("capture: {}: {e}", file.display())))
                .await?;
            return Ok(EXIT_FAILURE);
        }
    };
    let want = count.unwrap_or(u64::MAX);
    let started = h
        .call(move |n| {
            if n.sw.capturing() {
                return Err(
                    "capture: another capture is running on this node; one at a time".into(),
                );
            }
            match n.sw.port_id(&port) {
                Some(p) => {
                    n.sw.start_capture(p, want);
                    Ok((Time::monotonic(), SystemTime::now()))
                }
                None => {
                    let names: Vec<String> =
                        n.sw.stats().ports.into_iter().map(|p| p.name).collect();
                    Err(format!(
                        "capture: no port {port:?} (ports: {})",
                        names.join(", ")
                    ))
                }
            }
        })
        .await?;
    let (mono0, wall0) = match started {
        Ok(t) => t,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || sink.finish()).await;
            let _ = std::fs::remove_file(&file);
            rep.send(&Reply::Err(e)).await?;
            return Ok(EXIT_USAGE);
        }
    };
    let wall0 = wall0
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut missed = 0u64;
    // Every way out of the loop goes through the stop below: a capture never outlives its
    // session (the switch would keep copying frames for nobody).
    let collected: anyhow::Result<()> = async {
        loop {
            tokio::time::sleep(COLLECT_EVERY).await;
            let (frames, m, running) = h.call(|n| n.sw.take_capture()).await?;
            missed += m;
            for f in frames {
                let t = wall0 + f.time_ns.saturating_sub(mono0.0);
                match sink.offer(t, f.data) {
                    pcap::Offer::Queued => {}
                    pcap::Offer::Full => missed += 1,
                    pcap::Offer::Failed => return Ok(()),
                }
            }
            // An empty progress line each round: a client gone (Ctrl-C) ends the capture.
            if !running || rep.out("").await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    h.call(|n| n.sw.stop_capture()).await?;
    collected?;
    let written = tokio::task::spawn_blocking(move || sink.finish())
        .await
        .context("the capture's writer")?;
    let missed = if missed > 0 {
        format!(" ({missed} missed: the backlog was full)")
    } else {
        String::new()
    };
    match written {
        Ok(n) => {
            let msg = format!("capture: {n} frames written to {}{missed}", file.display());
            let _ = rep.send(&Reply::Err(msg)).await;
            Ok(EXIT_OK)
        }
        Err(e) => {
            let msg = format!("capture: writing {}: {e}{missed}", file.display());
            let _ = rep.send(&Reply::Err(msg)).await;
            Ok(EXIT_FAILURE)
        }
    }
}

/// The client side: send `req` to the node at `control`, print its replies, return the exit
/// code.
pub fn client(control: &Path, req: &Request) -> u8 {
    use std::io::{BufRead, Write};
    // One request and its replies, in order: plain blocking I/O, no runtime needed.
    let stream = match std::os::unix::net::UnixStream::connect(control) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "vxmesh: cannot reach a node at {}: {e} (is `vxmesh run` running with this control socket?)",
                control.display()
            );
            return EXIT_FAILURE;
        }
    };
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    // A node that refuses the connection (too many, not permitted) says why and closes, maybe
    // before the request is written: read its replies even when the write failed.
    let wrote = (&stream).write_all(line.as_bytes());
    for l in std::io::BufReader::new(&stream).lines() {
        let l = match l {
            Ok(l) => l,
            Err(e) => {
                eprintln!("vxmesh: {e}");
                return EXIT_FAILURE;
            }
        };
        match serde_json::from_str::<Reply>(&l) {
            Ok(Reply::Out(s)) => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(s.as_bytes());
                let _ = o.flush();
            }
            Ok(Reply::Err(s)) => eprintln!("vxmesh: {s}"),
            Ok(Reply::Exit(code)) => return code,
            Err(e) => {
                eprintln!("vxmesh: bad reply from the node: {e}");
                return EXIT_FAILURE;
            }
        }
    }
    match wrote {
        Err(e) => eprintln!("vxmesh: {}: {e}", control.display()),
        Ok(()) => eprintln!("vxmesh: the node closed the connection"),
    }
    EXIT_FAILURE
}
