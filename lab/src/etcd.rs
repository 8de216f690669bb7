//! A real etcd cluster for the lab (the store's tests and the demo): members started in one of
//! the lab's namespaces, each on its own client address, data in a directory of its own; every
//! member killed by its PID and the directory removed when the [`Etcd`] is dropped.
//!
//! Not on any packet path: this is the control plane's store, started the way an operator would
//! (Debian's `etcd-server`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The client port of every member.
pub const CLIENT_PORT: u16 = 2379;
/// The first member's peer port (on the namespace's loopback; the next members count up).
const PEER_PORT: u16 = 2380;

/// An etcd cluster of one member per client address.
pub struct Etcd {
    members: Vec<Option<Child>>,
    ips: Vec<String>,
    ns: String,
    dir: PathBuf,
}

/// Whether the `etcd` program is installed (Debian package `etcd-server`).
pub fn installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `etcdctl` (Debian's `etcd-client`) from namespace `netns` against the store at `url`
/// (`etcd://IP:PORT,...`, as [`Etcd::url`] gives it): what tests use to look at, or write
/// around, what vxmesh keeps there. Its standard output.
pub fn etcdctl(netns: &str, url: &str, args: &[&str]) -> anyhow::Result<String> {
    let endpoints = url.trim_start_matches("etcd://");
    let o = Command::new("ip")
        .args(["netns", "exec", netns, "etcdctl", "--endpoints", endpoints])
        .args(args)
        .output()
        .context("running etcdctl (Debian package etcd-client)")?;
    if !o.status.success() {
        bail!(
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Etcd {
    /// Start one member per address of `ips` in namespace `ns` (the addresses must be there),
    /// data under `dir`.
    pub fn start(ns: &str, ips: &[&str], dir: &Path) -> anyhow::Result<Etcd> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut e = Etcd {
            members: ips.iter().map(|_| None).collect(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ns: ns.into(),
            dir: dir.to_path_buf(),
        };
        for k in 0..ips.len() {
            e.run(k)?;
        }
        Ok(e)
    }

    /// The store URL of the cluster: `etcd://IP:2379,...`.
    pub fn url(&self) -> String {
        let m: Vec<String> = self
            .ips
            .iter()
            .map(|a| format!("{a}:{CLIENT_PORT}"))
            .collect();
        format!("etcd://{}", m.join(","))
    }

    /// The PIDs of the members running.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().flatten().map(|c| c.id()).collect()
    }

    /// Start member `k` (again).
    pub fn run(&mut self, k: usize) -> anyhow::Result<()> {
        if self.members[k].is_some() {
            bail!("etcd member {k} is running");
        }
        let client = format!("http://{}:{CLIENT_PORT}", self.ips[k]);
        let peer = |j: usize| format!("http://127.0.0.1:{}", PEER_PORT + j as u16);
        let cluster: Vec<String> = (0..self.ips.len())
            .map(|j| format!("m{j}={}", peer(j)))
            .collect();
        let log = std::fs::File::create(self.dir.join(format!("etcd{k}.log")))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "etcd",
                "--name",
                &format!("m{k}"),
            ])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{k}")))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer(k)])
            .args(["--initial-advertise-peer-urls", &peer(k)])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "vxmesh-lab"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server)")?;
        self.members[k] = Some(child);
        Ok(())
    }

    /// Kill member `k` (by its PID) and reap it.
    pub fn stop(&mut self, k: usize) {
        if let Some(mut c) = self.members[k].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill every member.
    pub fn stop_all(&mut self) {
        for k in 0..self.members.len() {
            self.stop(k);
        }
    }

    /// Start every member that is not running.
    pub fn run_all(&mut self) -> anyhow::Result<()> {
        for k in 0..self.members.len() {
            if self.members[k].is_none() {
                self.run(k)?;
            }
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
