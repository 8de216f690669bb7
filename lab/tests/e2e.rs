//! End to end, as a user runs it (root; real processes in network namespaces built by `vxmesh
//! lab`): two `vxmesh run` nodes with two containers each (one on AF_XDP, one on a TAP), a third
//! node built from the Linux kernel's bridge + VXLAN device as Docker programs it, nginx
//! backends behind a VIP published on 8080, external clients, iperf3, curl and tshark.
//!
//! ```text
//!   n1 (vxmesh)                 n2 (vxmesh)                 n3 (kernel br0 + vxlan0)
//!   c11 afxdp:vc11              c21 afxdp:vc21              c31 on br0
//!   c12 tap:eth0 (nginx)        c22 tap:eth0 (nginx)
//!   ext0 <- x-n1 client         ext0 <- x-n2 client
//!          \__________ underlay 198.18.0.0/24 (bridge in its own namespace) __________/
//! ```
//!
//! One test function, in steps, because the steps share one lab (building it takes seconds).
//! Every namespace carries a per-run prefix; `Running` stops the nodes and removes the lab by
//! name when it is dropped, also when a step fails. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{Running, in_netns, vxmesh_exe};

/// The shared fixture plus the kernel node n3 and its container c31 (no `attach`: vxmesh does
/// not run there).
fn cluster(prefix: &str) -> Fixture {
    let mut f = Fixture::new(prefix);
    f.push("node", "name = \"n3\"\nvtep = \"198.18.0.3\"").push(
        "endpoint",
        "name = \"c31\"\nnode = \"n3\"\nnetwork = \"appnet\"\nip = \"10.0.9.31\"\nnetns = \"{P}c31\"",
    );
    f
}

fn sh(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

fn sh_ok(ns: &str, args: &[&str]) -> String {
    let o = sh(ns, args);
    assert!(
        o.status.success(),
        "in {ns}: {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Processes the test started (nginx, iperf3 servers): killed on drop.
struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Temporary files of this run: removed on drop.
struct Files(Vec<PathBuf>);
impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
            let _ = std::fs::remove_dir_all(f);
        }
    }
}

/// nginx in namespace `ns`, answering every request with `name`.
fn nginx(ns: &str, name: &str, dir: &Path) -> Child {
    let conf = vxmesh_lab::labrun::nginx_conf(dir, name).unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns, "nginx", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx")
}

/// Wait (bounded) until something listens on `port` in `ns`.
fn wait_listening(ns: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pat = format!(":{port} ");
    while Instant::now() < deadline {
        let out = sh_ok(ns, &["ss", "-Htln"]);
        if out.contains(&pat) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port} in {ns}");
}

fn curl(ns: &str, url: &str) -> String {
    let o = sh(ns, &["curl", "-sS", "--max-time", "5", url]);
    assert!(
        o.status.success(),
        "curl {url} from {ns}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn counts(bodies: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for b in bodies {
        *m.entry(b.clone()).or_insert(0) += 1;
    }
    m
}

/// A port's own counter from `vxmesh stats --json`.
fn port_counter(run: &Running, node: &str, port: &str, name: &str) -> u64 {
    let out = run.ctl_ok(node, &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json parses");
    v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .and_then(|p| p["counters"][name].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} on port {port}: {out}"))
}

/// The kernel node n3, as Docker's overlay driver programs it (`lab::build_kernel_node`).
fn build_kernel_node(run: &Running) {
    vxmesh_lab::lab::build_kernel_node(&run.lab, &run.cluster, "n3")
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The lab turned TX offloads off on c31's side; they stay off, as for every container here.
}

#[test]
fn two_vxmesh_nodes_and_a_kernel_node_end_to_end() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    let prefix = format!("vxe{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let mut run = Running::start(&exe, &prefix, &cluster(&prefix).text(), &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    // n1 lets its AF_XDP container keep its TCP offloads (c11's super-frames come in whole
    // beside the ring); n2 runs the default (its AF_XDP container's offloads off).
    run.run_args = vec!["--afxdp-offloads".into()];
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    run.run_args.clear();
    run.start_node("n2").unwrap_or_else(|e| panic!("{e:#}"));
    let dir = std::env::temp_dir().join(format!("{prefix}files"));
    std::fs::create_dir_all(&dir).unwrap();
    let _files = Files(vec![dir.clone()]);
    let ns = |e: &str| run.lab.endpoint_netns(e);
    build_kernel_node(&run);

    // 1. Ping between every pair of the five containers (AF_XDP, TAP, kernel).
    let all = ["c11", "c12", "c21", "c22", "c31"];
    for from in all {
        for to in all.iter().filter(|t| **t != from) {
            let ip = run.cluster.endpoint(to).unwrap().ip.to_string();
            let o = sh(&ns(from), &["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip]);
            assert!(
                o.status.success(),
                "ping {from} -> {to}: {}\n{}",
                String::from_utf8_lossy(&o.stdout),
                run.log_tail()
            );
        }
    }
    // Full-size frames cross the overlay without fragmentation.
    sh_ok(
        &ns("c11"),
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1422",
            "10.0.9.21",
        ],
    );
    sh_ok(
        &ns("c31"),
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1422",
            "10.0.9.12",
        ],
    );

    // 2. nginx backends, and curl straight to each (including from the kernel node).
    let mut procs = Procs(Vec::new());
    for b in ["c12", "c21", "c22"] {
        procs.0.push(nginx(&ns(b), b, &dir));
    }
    for b in ["c12", "c21", "c22"] {
        wait_listening(&ns(b), 80);
    }
    assert_eq!(curl(&ns("c31"), "http://10.0.9.21/"), "c21");
    assert_eq!(curl(&ns("c11"), "http://10.0.9.12/"), "c12");

    // 3. 30 requests to the VIP from a container: round robin, 10/10/10.
    let bodies: Vec<String> = (0..30)
        .map(|_| curl(&ns("c11"), "http://10.0.9.100/"))
        .collect();
    let c = counts(&bodies);
    assert_eq!(
        c.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{c:?}"
    );
    let lb = run.ctl_ok("n1", &["lb", "show"]).unwrap();
    assert!(lb.contains("TCP  10.0.9.100:80 rr"), "{lb}");
    let ct = run.ctl_ok("n1", &["conntrack", "show"]).unwrap();
    assert!(ct.contains("10.0.9.100:80"), "{ct}");

    // 4. The routing mesh: each node's published port from its external client reaches
    //    backends on both nodes, source-NATed to the node's LB address.
    for node in ["n1", "n2"] {
        let ing = run
            .cluster
            .ingresses
            .iter()
            .find(|i| i.node == node)
            .unwrap()
            .ip;
        let bodies: Vec<String> = (0..6)
            .map(|_| curl(&run.lab.client_netns(node), &format!("http://{ing}:8080/")))
            .collect();
        let c = counts(&bodies);
        assert!(
            c.contains_key("c12") && (c.contains_key("c21") || c.contains_key("c22")),
            "published port on {node}: {c:?}"
        );
    }
    let ct = run.ctl_ok("n2", &["conntrack", "show", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ct).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|c| c["snat"]
            .as_str()
            .is_some_and(|s| s.starts_with("10.0.9.253:"))),
        "n2 (second node) SNATs to its LB address 10.0.9.253: {ct}"
    );
    // The ingress drops what is not a published port, under a name.
    let before = run
        .stage_counter("n1", "own-addr", "drop_ingress_not_published")
        .unwrap();
    let o = sh(
        &run.lab.client_netns("n1"),
        &["curl", "-sS", "--max-time", "1", "http://192.0.2.1:9999/"],
    );
    assert!(!o.status.success());
    assert!(
        run.stage_counter("n1", "own-addr", "drop_ingress_not_published")
            .unwrap()
            > before
    );

    // 5. iperf3 TCP across nodes: AF_XDP -> AF_XDP and TAP -> TAP. The TAPs have offloads: c22's
    // super-frames reach n2's underlay whole and are cut as it sends them (`tx_gso_frames`),
    // and merged again by n1 for c12. n2 merges c11's segments for c21 too (its AF_XDP port's
    // packet socket). And on one node, TAP -> AF_XDP: c12's super-frames go to c11 whole.
    // c11 keeps its TCP offloads (n1 runs with --afxdp-offloads): its super-frames reach n1's
    // port whole (`rx_gso_frames`), through the packet socket beside the ring; c21's do not
    // (n2's default).
    let afxdp_rx_before = port_counter(&run, "n1", "c11", "rx_gso_frames");
    let gso_before = port_counter(&run, "n2", "underlay", "tx_gso_frames");
    let gro_before = port_counter(&run, "n1", "c12", "tx_gro_frames");
    let afxdp_gro_before = port_counter(&run, "n2", "c21", "tx_gro_frames");
    let afxdp_whole_before = port_counter(&run, "n1", "c11", "tx_gso_frames");
    for (server, client, ip) in [
        ("c21", "c11", "10.0.9.21"),
        ("c12", "c22", "10.0.9.12"),
        ("c11", "c12", "10.0.9.11"),
    ] {
        let mut srv = Command::new("ip")
            .args(["netns", "exec", &ns(server), "iperf3", "-s", "-1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(&ns(server), 5201);
        let out = sh(
            &ns(client),
            &["timeout", "30", "iperf3", "-c", ip, "-t", "2", "-J"],
        );
        let _ = srv.kill();
        let _ = srv.wait();
        assert!(
            out.status.success(),
            "iperf3 {client} -> {server}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap();
        eprintln!(
            "iperf3 {client} -> {server}: {} MB, {:.2} Gbit/s (information only)",
            bytes / 1_000_000,
            bps / 1e9
        );
        assert!(bytes > 1_000_000, "iperf3 moved only {bytes} bytes");
    }
    assert!(port_counter(&run, "n2", "underlay", "tx_gso_frames") > gso_before);
    assert!(port_counter(&run, "n1", "c12", "tx_gro_frames") > gro_before);
    assert!(port_counter(&run, "n2", "c21", "tx_gro_frames") > afxdp_gro_before);
    assert!(port_counter(&run, "n1", "c11", "tx_gso_frames") > afxdp_whole_before);
    assert!(port_counter(&run, "n1", "c11", "rx_gso_frames") > afxdp_rx_before);
    assert_eq!(port_counter(&run, "n1", "c11", "rx_bad_vnet_hdr"), 0);
    assert_eq!(port_counter(&run, "n2", "c21", "rx_gso_frames"), 0);

    // 6. A long-lived connection keeps its backend while reload drains it; new ones avoid it.
    let vip = SocketAddr::from(([10, 0, 9, 100], 80));
    let (req_tx, req_rx) = std::sync::mpsc::channel::<()>();
    let (resp_tx, resp_rx) = std::sync::mpsc::channel::<String>();
    let conn = in_netns(&ns("c11"), move || {
        let s = TcpStream::connect_timeout(&vip, Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        while req_rx.recv().is_ok() {
            w.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n").unwrap();
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            resp_tx
                .send(String::from_utf8_lossy(&body).trim().to_string())
                .unwrap();
        }
    })
    .unwrap();
    let ask = || {
        req_tx.send(()).unwrap();
        resp_rx.recv_timeout(Duration::from_secs(10)).unwrap()
    };
    let pinned = ask();
    let drained: Vec<String> = run.cluster.services[0]
        .backends
        .iter()
        .map(|(b, _)| {
            if *b == pinned {
                format!("{b}=0")
            } else {
                b.clone()
            }
        })
        .collect();
    let text = cluster(&prefix)
        .set("service", "web", "backends", drained)
        .text();
    std::fs::write(&run.config, text).unwrap();
    for node in ["n1", "n2"] {
        let log = run.ctl_ok(node, &["reload"]).unwrap();
        assert!(
            log.contains(&format!("backend {pinned} weight 1 -> 0")),
            "{log}"
        );
    }
    let lb = run.ctl_ok("n1", &["lb", "show", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&lb).unwrap();
    assert!(
        v[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["weight"] == 0),
        "{lb}"
    );
    for _ in 0..3 {
        assert_eq!(
            ask(),
            pinned,
            "the established connection stays on its backend"
        );
    }
    let after: Vec<String> = (0..6)
        .map(|_| curl(&ns("c11"), "http://10.0.9.100/"))
        .collect();
    assert!(
        !after.contains(&pinned),
        "new connections avoid the drained {pinned}: {after:?}"
    );
    drop(req_tx);
    conn.join().unwrap();

    // A refused reload leaves the running configuration alone.
    std::fs::write(&run.config, "[[node]]\nname = \"n1\"\ncolor = 1\n").unwrap();
    let o = run.ctl("n1", &["reload"]).unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("color"));
    assert_eq!(curl(&ns("c11"), "http://10.0.9.21/"), "c21");

    // SIGHUP re-reads the file as `reload` does (`systemctl reload`): the drained backend's
    // weight comes back on n1, and the node keeps running (without a handler SIGHUP ends it).
    std::fs::write(&run.config, cluster(&prefix).text()).unwrap();
    let pid = run.node_pid("n1").expect("n1 runs") as libc::pid_t;
    // SAFETY: a signal to the node process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let weights = || -> Vec<serde_json::Value> {
        let lb = run.ctl_ok("n1", &["lb", "show", "--json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&lb).unwrap();
        v[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while weights().contains(&0.into()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // (Each look asks n1's control socket: a node that SIGHUP ended would fail it.)
    assert!(!weights().contains(&0.into()), "{:?}", weights());

    // 7. Capture of the underlay while c11 pings c21, decoded by tshark as VXLAN.
    let pcap = dir.join("underlay.pcap");
    let (exe2, ctl, pcap2) = (exe.to_path_buf(), run.control("n1"), pcap.clone());
    let cap = std::thread::spawn(move || {
        Command::new(exe2)
            .arg("--control")
            .arg(ctl)
            .args(["capture", "--port", "underlay", "--count", "4", "-w"])
            .arg(pcap2)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    sh_ok(
        &ns("c11"),
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.9.21"],
    );
    let o = cap.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-e", "vxlan.vni", "-e", "icmp.type"])
        .output()
        .unwrap();
    let decoded = String::from_utf8_lossy(&t.stdout);
    assert!(decoded.lines().count() >= 4, "{decoded}");
    assert!(
        decoded.lines().all(|l| l.starts_with("4097\t")),
        "{decoded}"
    );

    // 8. A trace of a request shows each stage.
    let (exe2, ctl) = (exe.to_path_buf(), run.control("n1"));
    let tr = std::thread::spawn(move || {
        Command::new(exe2)
            .arg("--control")
            .arg(ctl)
            .args([
                "trace",
                "--count",
                "1",
                "--filter",
                "tcp port 80 host 10.0.9.11",
            ])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    curl(&ns("c11"), "http://10.0.9.100/");
    let o = tr.join().unwrap();
    let trace = String::from_utf8_lossy(&o.stdout);
    for stage in ["l2-parse", "l2-learn", "lb-nat", "l2-fwd"] {
        assert!(trace.contains(stage), "{trace}");
    }

    // 9. Spoofed VXLAN from an address that is no VTEP: counted, dropped.
    let ul = run.lab.underlay_netns();
    sh_ok(&ul, &["ip", "addr", "add", "198.18.0.99/24", "dev", "br0"]);
    let before = run
        .stage_counter("n1", "vxlan-decap", "drop_unknown_vtep")
        .unwrap();
    let sent = in_netns(&ul, || {
        let s = UdpSocket::bind("198.18.0.99:0").unwrap();
        let mut pkt = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0];
        pkt.extend(vswitch::frames::arp_request(
            vswitch::Mac::docker_default("10.0.9.21".parse().unwrap()),
            "10.0.9.21".parse().unwrap(),
            "10.0.9.11".parse().unwrap(),
        ));
        for _ in 0..5 {
            s.send_to(&pkt, "198.18.0.1:4789").unwrap();
        }
        5u64
    })
    .unwrap()
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while Instant::now() < deadline {
        got = run
            .stage_counter("n1", "vxlan-decap", "drop_unknown_vtep")
            .unwrap()
            - before;
        if got >= sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(got, sent);

    // 10. The vxmesh nodes hold no bridge, no vxlan device and no nftables rules.
    for node in ["n1", "n2"] {
        let nsn = run.lab.node_netns(node);
        for kind in ["bridge", "vxlan"] {
            let out = sh_ok(&nsn, &["ip", "-d", "link", "show", "type", kind]);
            assert!(out.trim().is_empty(), "{node} has a {kind}: {out}");
        }
        let rules = sh_ok(&nsn, &["nft", "list", "ruleset"]);
        assert!(
            rules.trim().is_empty(),
            "{node} has nftables rules: {rules}"
        );
    }

    // 11. SIGTERM stops a node cleanly: exit 0, XDP detached; the container's TAP stays, with
    // its address (SPEC: a container keeps its interface across a restart).
    let (c12, n1) = (ns("c12"), run.lab.node_netns("n1"));
    let st = run.stop_node("n1").unwrap();
    assert!(st.success(), "{st}\n{}", run.log_tail());
    let link = sh_ok(&n1, &["ip", "-d", "link", "show", "vc11"]);
    assert!(!link.contains("xdp"), "{link}");
    let tap = sh_ok(&c12, &["ip", "addr", "show", "eth0"]);
    assert!(
        tap.contains("10.0.9.12/24"),
        "c12's TAP after its node stopped: {tap}"
    );
    drop(procs);
}
