//! podman on a lab's nodes (the podman test and the demo): Debian's podman 4.3 with its CNI
//! backend attaching containers through `vxmesh-cni`, run the way shared/reference/podman-cni
//! found it works on these machines.
//!
//! - `CONTAINERS_CONF`: runc, cgroupfs, file events, explicit ulimits, the CNI backend, and the
//!   folder `vxmesh-cni` is found in;
//! - `nsenter --net=` into the node's namespace (`ip netns exec` remounts /sys and breaks runc);
//! - storage, run state, networks and libpod's own state (`--root`, `--runroot`,
//!   `--network-config-dir`, `--tmpdir`) in a folder of the run; one conflist per node
//!   (`cniVersion` 1.0.0, `"capabilities": {"aliases": true}`, the node's control socket);
//! - a busybox-static root filesystem (`podman run --rootfs`: no registry).
//!
//! Not on any packet path: this is the container runtime the product is proven with.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::have;
use crate::labrun::Running;

/// The programs podman needs here (Debian packages podman, runc, busybox-static,
/// containernetworking-plugins, util-linux).
pub const NEEDED: [&str; 4] = ["podman", "runc", "busybox", "nsenter"];

/// The programs of [`NEEDED`] that are missing.
pub fn missing() -> Vec<&'static str> {
    NEEDED.into_iter().filter(|p| !have(p)).collect()
}

/// The containers.conf of shared/reference/podman-cni, plus the folder the plugin is in.
fn containers_conf(plugins: &Path) -> String {
    format!(
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
         [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n",
        plugins.display()
    )
}

/// A busybox root filesystem in `dir`.
fn rootfs(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox (Debian package busybox-static)")?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for tool in [
        "sh", "ping", "nc", "httpd", "ip", "cat", "sleep", "echo", "mkdir", "tail",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool))?;
    }
    Ok(root)
}

/// podman for one node: its own storage, run state and networks, in the node's namespace.
#[derive(Clone, Debug)]
pub struct Podman {
    netns: String,
    root: PathBuf,
    conf: PathBuf,
}

impl Podman {
    /// `podman ARGS` as this node runs it (bounded: `timeout 120`).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("120")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("podman")
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("runroot"))
            .arg("--network-config-dir")
            .arg(self.root.join("net"))
            // libpod's own state (default /run/libpod) too.
            .arg("--tmpdir")
            .arg(self.root.join("tmp"))
            .args(args);
        c
    }

    /// Run podman with `args`; its standard output, or an error with its output.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = self.cmd(args).output().context("running podman")?;
        if !o.status.success() {
            bail!(
                "podman {} in {}: {}\n{}",
                args.join(" "),
                self.netns,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `podman exec NAME sh -c SCRIPT`.
    pub fn exec(&self, name: &str, script: &str) -> anyhow::Result<String> {
        self.run(&["exec", name, "/bin/sh", "-c", script])
    }

    /// The address podman shows for container `name` on network `net`.
    pub fn address(&self, name: &str, net: &str) -> anyhow::Result<String> {
        let f = format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}");
        Ok(self
            .run(&["inspect", name, "--format", &f])?
            .trim()
            .to_string())
    }
}

/// podman set up for some nodes of a running lab, in a folder of the run; its containers are
/// removed and the folder deleted when dropped.
pub struct PodmanLab {
    dir: PathBuf,
    /// One per node, in the order given.
    pub nodes: Vec<Podman>,
    /// The busybox root filesystem for `podman run --rootfs`.
    pub rootfs: PathBuf,
}

impl PodmanLab {
    /// podman for `nodes` of `run`, with network `net` on each (a conflist naming the node's
    /// control socket); `vxmesh-cni` is taken from next to `exe`.
    pub fn new(
        run: &Running,
        exe: &Path,
        nodes: &[&str],
        net: &str,
        dir: PathBuf,
    ) -> anyhow::Result<PodmanLab> {
        let mut lab = PodmanLab {
            dir,
            nodes: Vec::new(),
            rootfs: PathBuf::new(),
        };
        let plugins = lab.dir.join("cni");
        std::fs::create_dir_all(&plugins)?;
        std::fs::copy(exe.with_file_name("vxmesh-cni"), plugins.join("vxmesh-cni"))
            .context("vxmesh-cni next to vxmesh (build the workspace)")?;
        let conf = lab.dir.join("containers.conf");
        std::fs::write(&conf, containers_conf(&plugins))?;
        lab.rootfs = rootfs(&lab.dir)?;
        for node in nodes {
            let root = lab.dir.join(node);
            std::fs::create_dir_all(root.join("net"))?;
            let conflist = serde_json::json!({
                "cniVersion": "1.0.0",
                "name": net,
                "plugins": [{
                    "type": "vxmesh-cni",
                    "network": net,
                    "control": run.control(node),
                    "capabilities": {"aliases": true},
                }],
            });
            std::fs::write(
                root.join(format!("net/{net}.conflist")),
                conflist.to_string(),
            )?;
            lab.nodes.push(Podman {
                netns: run.lab.node_netns(node),
                root,
                conf: conf.clone(),
            });
        }
        Ok(lab)
    }

    /// The root filesystem's path, for `--rootfs`.
    pub fn rootfs(&self) -> &str {
        self.rootfs.to_str().unwrap_or_default()
    }
}

impl Drop for PodmanLab {
    fn drop(&mut self) {
        for p in &self.nodes {
            let _ = p.cmd(&["rm", "-a", "-f", "-t", "0"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
