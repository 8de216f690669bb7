//! The simulator against the real thing (issue 19): the same workload (`vxmesh::sim::workload`,
//! what examples/sim/c11.pcap holds) through `vxmesh sim` and through two live `vxmesh run`
//! nodes in a lab gives the same forwarding decisions: every frame that reaches a container in
//! the lab (captured on its interface with an AF_PACKET socket, the kernel's own capture) is, byte
//! for byte and in order, what the simulator wrote to that container's port, and nothing else
//! of the workload arrives anywhere (the spoofed frame is dropped by both).
//!
//! Frames the containers' kernels send on their own (echo replies, resets from the backends,
//! port-unreachable errors, their ARP requests) are not the workload's and are left out of the
//! comparison by what they are: at c11 only the ARP answer for c21 (what the workload asked)
//! and DNS answers (UDP from port 53) are decisions on c11's frames; at the others only IPv4
//! from c11's address (or the spoofed one).
//!
//! On the way, `vxmesh capture --stages` on n1 follows the three connections to the VIP: tshark
//! reads the pcapng and sees each one's destination before (`rx`: the VIP) and after
//! (`lb-nat`: the backend, round robin), and the VXLAN header `vxlan-encap` put around two.
//!
//! Privileged: without root the test says so and passes. Namespaces carry a per-run prefix
//! (`vxs{pid}-`) and are removed by name when `Running` drops, also when a check panics; the
//! capture client is killed by its PID if it outlives its wait. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vswitch::trace::Summary;
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Running, in_netns, vxmesh_exe};
use vxmesh_lab::rawsock::PacketSocket;
use vxmesh_lab::{have, is_root};

/// The containers that may receive the workload's frames, with their nodes.
const PORTS: [(&str, &str); 4] = [("c11", "n1"), ("c12", "n1"), ("c21", "n2"), ("c22", "n2")];
/// Time between two frames of the workload.
const GAP: Duration = Duration::from_millis(50);
/// Longest any wait of the test lasts.
const WAIT: Duration = Duration::from_secs(20);

/// A directory removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed by its PID on drop (if still running).
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Whether a frame a container received was a decision on the workload (see the module doc).
fn of_workload(container: &str, f: &[u8]) -> bool {
    let s = Summary::of(f);
    let from_c11 = matches!(s.src_ip, Some(ip) if ip.octets() == [10, 0, 9, 11] || ip.octets() == [10, 0, 9, 99]);
    match container {
        // The answer to the workload's ARP request (for c21), not those to c11's kernel's own
        // (it asks for the resolver's address to send a port unreachable for the DNS answer).
        "c11" => {
            (s.ethertype == 0x0806 && s.src_ip.is_some_and(|ip| ip.octets() == [10, 0, 9, 21]))
                || (s.proto == Some(17) && s.ports.is_some_and(|p| p.0 == 53))
        }
        _ => s.ethertype == 0x0800 && from_c11,
    }
}

fn lines(frames: &[Vec<u8>]) -> String {
    frames
        .iter()
        .map(|f| format!("  {}, {} bytes\n", Summary::of(f), f.len()))
        .collect()
}

#[test]
fn the_simulator_forwards_the_workload_as_the_live_nodes_do() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    let prefix = format!("vxs{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let dir = Dir(std::env::temp_dir().join(format!("{prefix}sim")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let text = Fixture::new(&prefix).text();
    let workload = vxmesh::sim::workload::demo_c11();

    // The simulation, by the real command line.
    let pcap = dir.0.join("c11.pcap");
    let mut w = vxmesh::pcap::PcapWriter::new(std::fs::File::create(&pcap).unwrap()).unwrap();
    for (t, _, f) in &workload {
        w.frame(*t, f).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let config = dir.0.join("cluster.toml");
    std::fs::write(&config, &text).unwrap();
    let out = dir.0.join("out");
    let sim = Command::new(&exe)
        .arg("sim")
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(format!("{}@n1/c11", pcap.display()))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "vxmesh sim: {}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let simulated = |node: &str, port: &str| -> Vec<Vec<u8>> {
        vxmesh::sim::io::read_capture(&out.join(format!("{node}-{port}.pcap")))
            .unwrap()
            .into_iter()
            .map(|(_, f)| f)
            .collect()
    };

    // The same frames from c11's namespace into two live nodes.
    let run =
        Running::start(&exe, &prefix, &text, &["n1", "n2"]).unwrap_or_else(|e| panic!("{e:#}"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut captures = Vec::new();
    for (c, _) in PORTS {
        let (stop, ready) = (stop.clone(), ready_tx.clone());
        let h = in_netns(&run.lab.endpoint_netns(c), move || {
            let sock = PacketSocket::capture("eth0", Duration::from_millis(100));
            let _ = ready.send(sock.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
            let (sock, start) = (sock.ok()?, Instant::now());
            let mut got = Vec::new();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < WAIT * 3 {
                if let Ok(Some(f)) = sock.recv() {
                    got.push(f);
                }
            }
            Some(got)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        captures.push((c, h));
    }
    for _ in PORTS {
        let r = ready_rx.recv_timeout(WAIT).expect("a capture socket");
        r.unwrap_or_else(|e| panic!("capture socket: {e}"));
    }

    // The per-stage capture on n1, armed before the first frame goes out.
    let stages = dir.0.join("stages.pcapng");
    let mut cap = Kill(
        Command::new(&exe)
            .arg("--control")
            .arg(run.control("n1"))
            .args([
                "capture",
                "--stages",
                "--count",
                "3",
                "--filter",
                "tcp port 80 host 10.0.9.100",
                "-w",
            ])
            .arg(&stages)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = cap.0.stderr.take().unwrap();
    let (armed_tx, armed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = armed_tx.send(l);
        }
    });
    let first = armed_rx
        .recv_timeout(WAIT)
        .expect("capture --stages says it is armed");
    assert!(first.contains("following 3 packet(s)"), "{first}");

    let c11 = run.lab.endpoint_netns("c11");
    let frames: Vec<Vec<u8>> = workload.iter().map(|w| w.2.clone()).collect();
    in_netns(&c11, move || -> anyhow::Result<()> {
        let sock = PacketSocket::open("eth0")?;
        for f in &frames {
            sock.send(f)?;
            std::thread::sleep(GAP);
        }
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("sending the workload: {e:#}"));
    std::thread::sleep(GAP * 10);
    stop.store(true, Ordering::Relaxed);

    // Every container received exactly what the simulator says its port sent.
    for (c, h) in captures {
        let live: Vec<Vec<u8>> = h
            .join()
            .unwrap()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| of_workload(c, f))
            .collect();
        let node = PORTS.iter().find(|p| p.0 == c).unwrap().1;
        let sim = simulated(node, c);
        assert!(!sim.is_empty(), "the workload reaches {c}");
        assert!(
            live == sim,
            "{c}: live\n{}simulated\n{}{}",
            lines(&live),
            lines(&sim),
            run.log_tail()
        );
    }

    // The per-stage capture: the VIP before lb-nat, the backends after, round robin.
    let deadline = Instant::now() + WAIT;
    while cap.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = cap.0.try_wait().unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "capture --stages: {status:?}"
    );
    check_stages(&stages);
}

/// tshark's view of the per-stage capture of the three connections to the VIP.
fn check_stages(file: &Path) {
    if !have("tshark") {
        eprintln!("tshark not installed: the per-stage capture is not read back");
        return;
    }
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.dst",
            "-e",
            "frame.comment",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = |iface: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.split('\t').next() == Some(iface))
            .map(|l| l.split('\t').nth(1).unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(at("rx"), ["10.0.9.100"; 3], "{text}");
    assert_eq!(
        at("lb-nat"),
        ["10.0.9.12", "10.0.9.21", "10.0.9.22"],
        "{text}"
    );
    // tshark lists the outer destination, then the inner one.
    assert_eq!(
        at("vxlan-encap"),
        ["198.18.0.2,10.0.9.21", "198.18.0.2,10.0.9.22"],
        "{text}"
    );
    assert!(
        text.contains("DNAT 10.0.9.100:80 -> backend 10.0.9.12:80"),
        "{text}"
    );
}
