//! The second pass's scheduling: each node's poll thread (`vxmesh-poll`) at a real-time
//! priority (SCHED_FIFO), so that no other thread of the machine delays it and what is left of
//! a round-trip spike is the poll thread's own work: the jobs it runs for control commands,
//! the pause `benches/pause.rs` times. Only threads of the node processes this program started
//! (the processes in the lab's node namespaces) are touched.

use std::process::Command;

use anyhow::{Context, Result, bail};
use vxmesh_lab::labrun::Running;

/// How the nodes' threads are scheduled during a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As `vxmesh run` starts them: every thread at ordinary priority.
    Ordinary,
    /// The poll threads at SCHED_FIFO with this priority.
    RtPoll(u8),
}

impl Mode {
    /// Short name (JSON).
    pub fn key(self) -> &'static str {
        match self {
            Mode::Ordinary => "ordinary",
            Mode::RtPoll(_) => "rt_poll",
        }
    }

    /// What the results call it.
    pub fn label(self) -> String {
        match self {
            Mode::Ordinary => "nodes as started (ordinary scheduling)".into(),
            Mode::RtPoll(p) => format!("poll threads at SCHED_FIFO {p}"),
        }
    }
}

/// The name the daemon gives its poll thread.
const POLL_THREAD: &str = "vxmesh-poll";
/// The node program's name.
const NODE_COMM: &str = "vxmesh";

/// Put the poll thread of each of `nodes` at SCHED_FIFO `priority`.
pub fn realtime_poll(run: &Running, nodes: &[&str], priority: u8) -> Result<()> {
    for node in nodes {
        let ns = run.lab.node_netns(node);
        let pid = node_pid(&ns)?;
        let tid = poll_thread(pid)?;
        let param = libc::sched_param {
            sched_priority: i32::from(priority),
        };
        // SAFETY: sched_setscheduler(2) on one thread of a node process we started, with a
        // param we own.
        if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } != 0 {
            bail!(
                "node {node}: SCHED_FIFO for thread {tid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The one `vxmesh` process in namespace `ns` (the node this program started there).
fn node_pid(ns: &str) -> Result<libc::pid_t> {
    let o = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .context("ip netns pids")?;
    let pids: Vec<libc::pid_t> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| comm(&format!("/proc/{p}/comm")).as_deref() == Some(NODE_COMM))
        .collect();
    match pids[..] {
        [pid] => Ok(pid),
        _ => bail!("namespace {ns}: expected one {NODE_COMM} process, found {pids:?}"),
    }
}

/// The thread of `pid` named [`POLL_THREAD`].
fn poll_thread(pid: libc::pid_t) -> Result<libc::pid_t> {
    let dir = format!("/proc/{pid}/task");
    let tids: Vec<libc::pid_t> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|t| comm(&format!("{dir}/{t}/comm")).as_deref() == Some(POLL_THREAD))
        .collect();
    match tids[..] {
        [tid] => Ok(tid),
        _ => bail!("process {pid}: expected one {POLL_THREAD} thread, found {tids:?}"),
    }
}

fn comm(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}
