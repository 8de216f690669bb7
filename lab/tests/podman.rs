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

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{HttpServer, Running, http_get, vxmesh_exe};
use vxmesh_lab::podman::{self, PodmanLab};

#[test]
fn podman_containers_on_two_nodes_talk_join_a_service_and_free_their_address() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, podman)");
        return;
    }
    let missing = podman::missing();
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
    let dir = std::env::temp_dir().join(format!("{prefix}podman"));
    let scratch = PodmanLab::new(&run, &exe, &["n1", "n2"], "appnet", dir)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rootfs = scratch.rootfs();
    let (p1, p2) = (scratch.nodes[0].clone(), scratch.nodes[1].clone());
    let ok = |p: &podman::Podman, args: &[&str]| p.run(args).unwrap_or_else(|e| panic!("{e:#}"));
    let exec_ok = |p: &podman::Podman, name: &str, script: &str| {
        p.exec(name, script).unwrap_or_else(|e| panic!("{e:#}"))
    };

    // b1 on n1 serves web (the alias), b2 on n2 idles.
    ok(
        &p1,
        &[
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
        ],
    );
    ok(
        &p2,
        &[
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
        ],
    );
    let addr = |p: &podman::Podman, name: &str| p.address(name, "appnet").unwrap();
    // Each node allocates in its own block of 10.0.9.0/24.
    assert_eq!(addr(&p1, "b1"), "10.0.9.2");
    assert_eq!(addr(&p2, "b2"), "10.0.9.128");
    let resolv = exec_ok(&p1, "b1", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.0.9.1"), "{resolv}");

    // Across nodes, both ways; the VIP from n2's container (balanced on n2).
    let servers: Vec<HttpServer> = ["c12", "c21", "c22"]
        .iter()
        .map(|c| HttpServer::start(&run.lab.endpoint_netns(c), 80, c).unwrap())
        .collect();
    exec_ok(
        &p2,
        "b2",
        "ping -c 1 -W 2 10.0.9.2 || ping -c 1 -W 2 10.0.9.2",
    );
    exec_ok(
        &p1,
        "b1",
        "ping -c 1 -W 2 10.0.9.128 && ping -c 1 -W 2 10.0.9.21",
    );
    // busybox-static's wget crashes in a root filesystem without glibc's NSS modules; nc does
    // not resolve anything.
    let got = exec_ok(
        &p2,
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
    ok(&p1, &["rm", "-f", "-t", "0", "b1"]);
    let inspect = run.ctl_ok("n1", &["network", "inspect", "appnet"]).unwrap();
    assert!(!inspect.contains("b1"), "{inspect}");
    let out = ok(
        &p1,
        &[
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
        ],
    );
    assert!(
        out.contains("10.0.9.2/24"),
        "the freed address is reused: {out}"
    );
    ok(&p2, &["rm", "-f", "-t", "0", "b2"]);
    assert!(!run.control("n1").with_extension("cni.json").exists());
    assert!(!run.control("n2").with_extension("cni.json").exists());
    drop(scratch);
}
