//! Real containers from a real runtime (issue 15): Debian's podman 4.3 (CNI backend) attaches
//! containers to two running nodes through `vxmesh-cni`.
//!
//! Two real `vxmesh run` nodes in a lab (the shared fixture). On each node's namespace, podman
//! runs as the notes in shared/reference/podman-cni say it works here: `CONTAINERS_CONF` (runc,
//! cgroupfs, file events, ulimits, the CNI backend, the plugin's folder), `nsenter --net=` into
//! the node's namespace (`ip netns exec` remounts /sys and breaks runc), storage, run state and
//! the conflist (cniVersion 1.0.0, `"capabilities": {"aliases": true}`) and libpod's state
//! (`--root`, `--runroot`, `--network-config-dir`, `--tmpdir`) in a temporary folder,
//! and a busybox-static root filesystem (`podman run --rootfs`, no registry).
//!
//! Checked: a container on n1 started with `--network-alias web` serves HTTP and becomes a
//! backend of service `web` (a lab container's requests to the VIP reach it); a container on
//! n2 pings it and reaches the VIP; it pings back; `podman rm` runs DEL (the endpoint leaves
//! the node) and the next container gets the freed address.
//!
//! Without root, podman, runc or busybox the test says so and passes. Cleanup by name: the
//! containers (`podman rm -f`) and the temporary folder (a guard), the lab when `Running`
//! drops.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{HttpServer, Running, http_get, vxmesh_exe};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The containers.conf of shared/reference/podman-cni (verified on these machines), plus the
/// folder the plugin is found in.
fn containers_conf(plugins: &Path) -> String {
    format!(
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
         [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n",
        plugins.display()
    )
}

/// The temporary folder of the run; podman's containers are removed and the folder deleted
/// when dropped.
struct Scratch {
    dir: PathBuf,
    podmen: Vec<Podman>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.podmen {
            let _ = p.cmd(&["rm", "-a", "-f", "-t", "0"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// podman for one node: its own storage, run state and networks, in the node's namespace.
#[derive(Clone)]
struct Podman {
    netns: String,
    root: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
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

    /// Run podman with `args`, which must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args).output().expect("podman");
        assert!(
            o.status.success(),
            "podman {} in {}: {}\n{}",
            args.join(" "),
            self.netns,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `podman exec NAME sh -c SCRIPT` succeeds.
    fn exec_ok(&self, name: &str, script: &str) -> String {
        self.ok(&["exec", name, "/bin/sh", "-c", script])
    }
}

/// A busybox root filesystem in `dir`.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "ping", "nc", "httpd", "ip", "cat", "sleep", "echo", "mkdir", "tail",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    root
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn podman_containers_on_two_nodes_talk_join_a_service_and_free_their_address() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, podman)");
        return;
    }
    let missing: Vec<&str> = ["podman", "runc", "busybox", "nsenter"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: missing {} (Debian packages podman, runc, busybox-static, containernetworking-plugins; scripts/test.sh installs them)",
            missing.join(", ")
        );
        return;
    }
    let prefix = format!("vxq{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut scratch = Scratch {
        dir: std::env::temp_dir().join(format!("{prefix}podman")),
        podmen: Vec::new(),
    };
    let plugins = scratch.dir.join("cni");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(exe.with_file_name("vxmesh-cni"), plugins.join("vxmesh-cni"))
        .expect("vxmesh-cni next to vxmesh: build the workspace");
    let conf = scratch.dir.join("containers.conf");
    std::fs::write(&conf, containers_conf(&plugins)).unwrap();
    let rootfs = rootfs(&scratch.dir);
    let rootfs = rootfs.to_str().unwrap();
    for node in ["n1", "n2"] {
        let root = scratch.dir.join(node);
        std::fs::create_dir_all(root.join("net")).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "appnet",
            "plugins": [{
                "type": "vxmesh-cni",
                "network": "appnet",
                "control": run.control(node),
                "capabilities": {"aliases": true},
            }],
        });
        std::fs::write(root.join("net/appnet.conflist"), conflist.to_string()).unwrap();
        scratch.podmen.push(Podman {
            netns: run.lab.node_netns(node),
            root,
            conf: conf.clone(),
        });
    }
    let (p1, p2) = (scratch.podmen[0].clone(), scratch.podmen[1].clone());

    // b1 on n1 serves web (the alias), b2 on n2 idles.
    p1.ok(&[
        "run",
        "-d",
        "--network",
        "appnet",
        "--network-alias",
        "web",
        "--name",
        "b1",
        "--rootfs",
        rootfs,
        "/bin/sh",
        "-c",
        "mkdir -p /tmp/b1 && echo served by b1 > /tmp/b1/index.html && exec httpd -f -p 80 -h /tmp/b1",
    ]);
    p2.ok(&[
        "run",
        "-d",
        "--network",
        "appnet",
        "--name",
        "b2",
        "--rootfs",
        rootfs,
        "/bin/sleep",
        "600",
    ]);
    let addr = |p: &Podman, name: &str| {
        p.ok(&[
            "inspect",
            name,
            "--format",
            "{{.NetworkSettings.Networks.appnet.IPAddress}}",
        ])
        .trim()
        .to_string()
    };
    // Each node allocates in its own block of 10.0.9.0/24.
    assert_eq!(addr(&p1, "b1"), "10.0.9.2");
    assert_eq!(addr(&p2, "b2"), "10.0.9.128");
    let resolv = p1.exec_ok("b1", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.0.9.1"), "{resolv}");

    // Across nodes, both ways; the VIP from n2's container (balanced on n2).
    let servers: Vec<HttpServer> = ["c12", "c21", "c22"]
        .iter()
        .map(|c| HttpServer::start(&run.lab.endpoint_netns(c), 80, c).unwrap())
        .collect();
    p2.exec_ok("b2", "ping -c 1 -W 2 10.0.9.2 || ping -c 1 -W 2 10.0.9.2");
    p1.exec_ok(
        "b1",
        "ping -c 1 -W 2 10.0.9.128 && ping -c 1 -W 2 10.0.9.21",
    );
    // busybox-static's wget crashes in a root filesystem without glibc's NSS modules; nc does
    // not resolve anything.
    let got = p2.exec_ok(
        "b2",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 10.0.9.100 80",
    );
    assert!(got.contains("served by"), "{got}");
    // `--network-alias web`: b1 is a backend of web on n1 (rr over c12, c21, c22, b1).
    let vip = SocketAddr::from((Ipv4Addr::new(10, 0, 9, 100), 80));
    let answers: Vec<String> = (0..4)
        .map(|_| http_get(&run.lab.endpoint_netns("c11"), vip).unwrap())
        .collect();
    assert!(
        answers.iter().any(|a| a.contains("served by b1")),
        "{answers:?}"
    );
    drop(servers);

    // podman rm runs DEL: the endpoint leaves n1, and its address goes to the next container.
    assert!(
        run.ctl_ok("n1", &["network", "inspect", "appnet"])
            .unwrap()
            .contains("b1")
    );
    p1.ok(&["rm", "-f", "-t", "0", "b1"]);
    let inspect = run.ctl_ok("n1", &["network", "inspect", "appnet"]).unwrap();
    assert!(!inspect.contains("b1"), "{inspect}");
    let out = p1.ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "--name",
        "b3",
        "--rootfs",
        rootfs,
        "/bin/ip",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(
        out.contains("10.0.9.2/24"),
        "the freed address is reused: {out}"
    );
    p2.ok(&["rm", "-f", "-t", "0", "b2"]);
    assert!(!run.control("n1").with_extension("cni.json").exists());
    assert!(!run.control("n2").with_extension("cni.json").exists());
    drop(scratch);
}
