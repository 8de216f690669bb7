//! `vxmesh demo`: the tour of SPEC.md on a real lab. It builds two nodes and four containers in
//! network namespaces (per node one container on AF_XDP and one on a TAP), starts a `vxmesh run`
//! per node, starts three small HTTP backends behind a service VIP published on 8080, and shows
//! what an operator would look at: `network inspect`, `fdb show` on each node, pings across
//! nodes, six requests to the VIP answered round robin, requests through the published port
//! from clients outside the overlay, `lb show`, `conntrack show` and the per-stage trace of one
//! request. Every line comes from the running nodes; nothing is canned. The lab is removed at
//! the end, also on failure and on Ctrl-C.
//!
//! `vxmesh demo --memory` is the same switch in memory (no root needed): learning, flooding,
//! proxy ARP, a trace and the counters, frame by frame.

use anyhow::Context;
use std::fmt::Write;
use std::net::Ipv4Addr;

use vswitch::frames;
use vswitch::trace::{Summary, TraceFilter};
use vswitch::{Env, FdbConfig, FdbDest, Mac, MemHandle, MemPort, Network, PortRole, Switch, Time};

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::labrun::{HttpServer, Running, http_get};
use vxmesh::show;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

struct Tour {
    sw: Switch,
    ports: Vec<(&'static str, MemHandle)>,
    now: Time,
    out: String,
}

impl Tour {
    /// Send `frame` in on `port`, run one round of the switch, and describe what came out.
    fn step(&mut self, what: &str, port: &str, frame: &[u8]) {
        let _ = writeln!(
            self.out,
            "\n> {what}\n  in  {port:<4} {}",
            Summary::of(frame)
        );
        let h = &self
            .ports
            .iter()
            .find(|p| p.0 == port)
            .expect("tour port")
            .1;
        h.inject(frame);
        self.sw.poll(self.now);
        let mut any = false;
        for (name, h) in &self.ports {
            for f in h.take_tx() {
                any = true;
                let _ = writeln!(self.out, "  out {name:<4} {}", Summary::of(&f));
            }
        }
        if !any {
            let _ = writeln!(self.out, "  (nothing transmitted)");
        }
    }
}

/// Set by SIGINT/SIGTERM during the demo: stop after the current step and clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// `vxmesh demo`: the tour on a real lab (root), or in memory with `memory`; the exit code.
pub fn run(memory: bool) -> u8 {
    if memory {
        print!("{}", memory_tour());
        return 0;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "vxmesh demo: needs root (it builds network namespaces, veths, TAPs and AF_XDP sockets); run it as root, or `vxmesh demo --memory` for the in-memory tour"
        );
        return 2;
    }
    // SAFETY: installs an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    match lab_tour() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vxmesh demo: {e:#}");
            1
        }
    }
}

fn step(title: &str) -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted; the lab was removed");
    }
    println!("\n=== {title}");
    Ok(())
}

fn shell(cmd: &str, out: &str) {
    println!("$ {cmd}");
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
}

fn lab_tour() -> anyhow::Result<()> {
    let prefix = format!("vxd{}-", std::process::id());
    let text = crate::fixture::cluster(&prefix);
    let exe = crate::labrun::vxmesh_exe()?;
    step("building the lab: 2 nodes, 4 containers, 2 external clients, in network namespaces")?;
    let mut run = Running::start(&exe, &prefix, &text, &["n1", "n2"])?;
    run.keep_logs = true;
    print!("{}", run.lab.describe());
    println!(
        "nodes running: `vxmesh run --node n1` in {}, `--node n2` in {} (logs: {})",
        run.lab.node_netns("n1"),
        run.lab.node_netns("n2"),
        run.logs.display()
    );
    let ns = |e: &str| run.lab.endpoint_netns(e);
    let mut servers = Vec::new();
    for b in ["c12", "c21", "c22"] {
        servers.push(HttpServer::start(&ns(b), 80, b)?);
    }
    println!("HTTP backends listening on port 80 in c12, c21 and c22");

    step("network inspect (on n1)")?;
    shell(
        "vxmesh --node n1 network inspect appnet",
        &run.ctl_ok("n1", &["network", "inspect", "appnet"])?,
    );
    for n in ["n1", "n2"] {
        step(&format!("fdb show on {n}"))?;
        shell(
            &format!("vxmesh --node {n} fdb show"),
            &run.ctl_ok(n, &["fdb", "show"])?,
        );
    }

    step("pings across nodes (AF_XDP and TAP containers, VXLAN between the nodes)")?;
    for (from, to) in [
        ("c11", "10.0.9.21"),
        ("c12", "10.0.9.22"),
        ("c21", "10.0.9.12"),
    ] {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns(from),
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                to,
            ])
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let summary: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("packets transmitted") || l.starts_with("rtt"))
            .collect();
        println!("{from} -> {to}: {}", summary.join("; "));
    }

    step("service discovery: c11 asks its network's resolver (answered by the switch)")?;
    let mut resolved = None;
    for name in ["web", "c21"] {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns("c11"), "getent", "hosts", name])
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        shell(&format!("ip netns exec c11 getent hosts {name}"), &text);
        if name == "web" {
            resolved = text
                .split_whitespace()
                .next()
                .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok());
        }
    }
    let vip_ip = resolved.context("c11 could not resolve `web`")?;

    step(&format!(
        "six requests from c11 to web = {vip_ip}:80, the VIP (round robin over c12, c21, c22)"
    ))?;
    let vip = SocketAddr::from((vip_ip, 80));
    for i in 1..=6 {
        let body = http_get(&ns("c11"), vip)?;
        println!("request {i}: {body}");
    }

    step("the routing mesh: the published port 8080 from clients outside the overlay")?;
    for n in ["n1", "n2"] {
        let client = run.lab.client_netns(n);
        let ing = run
            .cluster
            .ingresses
            .iter()
            .find(|i| i.node == n)
            .map(|i| i.ip)
            .expect("demo ingress");
        for i in 1..=3 {
            let body = http_get(&client, SocketAddr::from((ing, 8080)))?;
            println!("external client of {n} -> {ing}:8080, request {i}: {body}");
        }
    }

    step("lb show on n1 (like ipvsadm -Ln)")?;
    shell(
        "vxmesh --node n1 lb show",
        &run.ctl_ok("n1", &["lb", "show"])?,
    );
    shell(
        "vxmesh --node n1 lb show --stats",
        &run.ctl_ok("n1", &["lb", "show", "--stats"])?,
    );
    step("conntrack show on n1 (like ipvsadm -Lnc)")?;
    shell(
        "vxmesh --node n1 conntrack show",
        &run.ctl_ok("n1", &["conntrack", "show"])?,
    );

    step("the per-stage trace of one request (c11 -> VIP, on n1)")?;
    let (exe2, ctl) = (exe.clone(), run.control("n1"));
    let tracer = std::thread::spawn(move || {
        Command::new(exe2)
            .arg("--control")
            .arg(ctl)
            .args([
                "trace",
                "--count",
                "2",
                "--filter",
                "tcp port 80 host 10.0.9.11",
            ])
            .output()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let body = http_get(&ns("c11"), vip)?;
    let out = tracer
        .join()
        .map_err(|_| anyhow::anyhow!("trace thread panicked"))??;
    shell(
        "vxmesh --node n1 trace --count 2 --filter 'tcp port 80 host 10.0.9.11'",
        &String::from_utf8_lossy(&out.stdout),
    );
    println!("(the request was answered: {body})");

    step("stats on n1: every port and stage, every drop by name")?;
    shell("vxmesh --node n1 stats", &run.ctl_ok("n1", &["stats"])?);

    let missing = crate::podman::missing();
    if missing.is_empty() {
        podman_tour(&run, &exe, &prefix)?;
    } else {
        step(&format!(
            "containers from podman: skipped (missing {}: `apt-get install podman runc busybox-static containernetworking-plugins`)",
            missing.join(", ")
        ))?;
    }

    if crate::etcd::installed() {
        store_tour(&mut run, &exe)?;
    } else {
        step(
            "the cluster store: skipped (etcd is not installed: `apt-get install etcd-server`, or run ./scripts/demo.sh)",
        )?;
    }

    step("tearing down: nodes stopped with SIGTERM, namespaces removed")?;
    drop(servers);
    drop(run);
    println!("done");
    Ok(())
}

/// Poll `f` every 100 ms until it holds, for at most `limit`; how long it took.
fn until(
    limit: std::time::Duration,
    mut f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<std::time::Duration> {
    let start = std::time::Instant::now();
    while !f()? {
        if start.elapsed() > limit {
            anyhow::bail!("not within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(start.elapsed())
}

/// Containers from a real runtime: podman on both nodes, attached by `vxmesh-cni`.
fn podman_tour(run: &Running, exe: &std::path::Path, prefix: &str) -> anyhow::Result<()> {
    step("containers from a real runtime: podman on n1 and n2, attached through vxmesh-cni")?;
    let dir = std::env::temp_dir().join(format!("{prefix}podman"));
    let pods = crate::podman::PodmanLab::new(run, exe, &["n1", "n2"], "appnet", dir)?;
    let (p1, p2) = (&pods.nodes[0], &pods.nodes[1]);
    let rootfs = pods.rootfs();
    println!(
        "$ podman run -d --network appnet --network-alias web --name pweb ...   (on n1: httpd, an alias of service web)"
    );
    p1.run(&[
        "run", "-d", "--network", "appnet", "--network-alias", "web", "--name", "pweb",
        "--rootfs", rootfs, "/bin/sh", "-c",
        "mkdir -p /tmp/w && echo served by pweb, a podman container > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w",
    ])?;
    println!("$ podman run -d --network appnet --name pidle ...                      (on n2)");
    p2.run(&[
        "run",
        "-d",
        "--network",
        "appnet",
        "--name",
        "pidle",
        "--rootfs",
        rootfs,
        "/bin/sleep",
        "300",
    ])?;
    let (a1, a2) = (
        p1.address("pweb", "appnet")?,
        p2.address("pidle", "appnet")?,
    );
    println!(
        "addresses given by the nodes (each from its own block of the subnet): pweb {a1}, pidle {a2}"
    );
    let inspect = run.ctl_ok("n1", &["network", "inspect", "appnet"])?;
    let line = inspect.lines().find(|l| l.contains("pweb")).unwrap_or("");
    println!("n1's network inspect shows it: {}", line.trim());
    let ping = p2.exec("pidle", &format!("ping -c 2 -W 2 {a1} | tail -2"))?;
    println!(
        "pidle (n2) -> pweb (n1):
{}",
        ping.trim_end()
    );
    let vip = SocketAddr::from(([10, 0, 9, 100], 80));
    let answers: Vec<String> = (0..4)
        .map(|_| http_get(&run.lab.endpoint_netns("c11"), vip))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "four requests from c11 to the VIP (pweb is a backend by its alias): {}",
        answers.join(" | ")
    );
    println!("$ podman rm -f pweb pidle    (CNI DEL: the endpoints leave the nodes)");
    p1.run(&["rm", "-f", "-t", "0", "pweb"])?;
    p2.run(&["rm", "-f", "-t", "0", "pidle"])?;
    drop(pods);
    Ok(())
}

/// The second part: the same cluster in etcd, the nodes following it, a node failure and its
/// recovery.
fn store_tour(run: &mut Running, exe: &std::path::Path) -> anyhow::Result<()> {
    use std::time::Duration;
    const ETCD_IP: &str = "198.18.0.250";
    step("the same cluster on a store: etcd on the underlay, the nodes following it")?;
    let ul = run.lab.underlay_netns();
    let ok = Command::new("ip")
        .args([
            "-n",
            &ul,
            "addr",
            "add",
            &format!("{ETCD_IP}/24"),
            "dev",
            "br0",
        ])
        .status()?;
    anyhow::ensure!(ok.success(), "adding etcd's address on the underlay");
    let dir = std::env::temp_dir().join(format!("{}etcd", run.lab.underlay_netns()));
    let etcd = crate::etcd::Etcd::start(&ul, &[ETCD_IP], &dir)?;
    let url = etcd.url();
    let n1 = run.lab.node_netns("n1");
    let admin = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let o = Command::new("ip")
            .args(["netns", "exec", &n1])
            .arg(exe)
            .args(["--store", &url])
            .args(args)
            .output()?;
        let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&o.stderr));
        Ok((o.status.success(), text))
    };
    until(Duration::from_secs(20), || Ok(admin(&["node", "ls"])?.0))?;
    let file = run.config.display().to_string();
    shell(
        &format!("vxmesh --store {url} import {file}"),
        &admin(&["import", &file])?.1,
    );
    for n in ["n1", "n2"] {
        run.stop_node(n)?;
    }
    run.store = Some(url.clone());
    run.run_args = vec!["--node-ttl".into(), "2".into()];
    for n in ["n1", "n2"] {
        run.start_node(n)?;
    }
    println!(
        "nodes restarted as `vxmesh run --store {url} --node N --vtep IP --node-ttl 2` (their TAPs stayed)"
    );
    shell(
        &format!("vxmesh --store {url} node ls"),
        &admin(&["node", "ls"])?.1,
    );
    let vip = SocketAddr::from(([10, 0, 9, 100], 80));
    let c11 = run.lab.endpoint_netns("c11");
    let answers: Vec<String> = (0..3)
        .map(|_| http_get(&c11, vip))
        .collect::<anyhow::Result<_>>()?;
    println!("three requests from c11 to the VIP: {}", answers.join(", "));

    step("a node fails: n2 killed with SIGKILL")?;
    run.kill_node("n2")?;
    let took = until(Duration::from_secs(20), || {
        let (_, ls) = admin(&["node", "ls"])?;
        let lb = run.ctl_ok("n1", &["lb", "show"])?;
        Ok(ls
            .lines()
            .any(|l| l.starts_with("n2 ") && l.contains("down"))
            && !lb.contains("10.0.9.21:80"))
    })?;
    println!(
        "n2's lease expired; {took:.1?} after the kill n2 is down and n1 sends it nothing new:"
    );
    shell(
        &format!("vxmesh --store {url} node ls"),
        &admin(&["node", "ls"])?.1,
    );
    shell(
        "vxmesh --node n1 lb show",
        &run.ctl_ok("n1", &["lb", "show"])?,
    );
    let answers: Vec<String> = (0..3)
        .map(|_| http_get(&c11, vip))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "three requests from c11 to the VIP meanwhile: {}",
        answers.join(", ")
    );

    step("n2 comes back")?;
    let started = std::time::Instant::now();
    run.start_node("n2")?;
    until(Duration::from_secs(20), || {
        Ok(run.ctl_ok("n1", &["lb", "show"])?.contains("10.0.9.21:80"))
    })?;
    println!(
        "n2 started and registered again; its backends are back on n1 {:.1?} after the start:",
        started.elapsed()
    );
    shell(
        &format!("vxmesh --store {url} node ls"),
        &admin(&["node", "ls"])?.1,
    );
    drop(etcd);
    Ok(())
}

/// Run the in-memory tour and return its transcript.
pub fn memory_tour() -> String {
    let c11 = Mac::docker_default(ip(11));
    let c12 = Mac::docker_default(ip(12));
    let c21 = Mac::docker_default(ip(21));
    let mut env = Env::new(FdbConfig::default());
    let mut net = Network::new("appnet", 4097, 1450);
    net.arp.insert(ip(11), c11);
    net.arp.insert(ip(12), c12);
    net.arp.insert(ip(21), c21);
    let appnet = env.add_network(net);
    let n2 = env.add_vtep(Ipv4Addr::new(198, 18, 0, 2), "n2");
    env.fdb
        .add_static(appnet, c21, FdbDest::Remote(n2))
        .expect("static entry");
    let (mut sw, l2) = Switch::with_l2(env);
    let mut ports = Vec::new();
    for name in ["c11", "c12"] {
        let (p, h) = MemPort::new();
        sw.add_port(
            name,
            Box::new(p),
            PortRole::Local(appnet),
            l2.local_path(&[]),
        );
        ports.push((name, h));
    }
    let mut t = Tour {
        sw,
        ports,
        now: Time::from_secs(1),
        out: String::new(),
    };
    let _ = writeln!(
        t.out,
        "vxmesh demo: an in-memory tour of the switch (network appnet, VNI 4097, MTU 1450; \
         containers c11 and c12 on local ports; c21 is a remote endpoint on node n2, 198.18.0.2)"
    );

    let req = frames::arp_request(c11, ip(11), ip(12));
    t.step(
        "c11 asks who-has 10.0.9.12: the switch answers (proxy ARP), nothing is flooded",
        "c11",
        &req,
    );
    let req = frames::arp_request(c11, ip(11), ip(21));
    t.step(
        "c11 asks for the remote endpoint 10.0.9.21: answered locally too",
        "c11",
        &req,
    );
    let req = frames::arp_request(c11, ip(11), ip(99));
    t.step(
        "c11 asks for an unknown address: flooded to the network's other ports",
        "c11",
        &req,
    );
    let f = frames::udp(c11, c12, ip(11), ip(12), 40000, 7, b"hello");
    t.step(
        "c11 sends to c12, whose MAC is not learned yet: unknown unicast, flooded",
        "c11",
        &f,
    );
    let f = frames::udp(c12, c11, ip(12), ip(11), 7, 40000, b"hello");
    t.step(
        "c12 answers: c11 was learned on port c11, so it is forwarded there only",
        "c12",
        &f,
    );
    t.sw.env
        .tracer
        .arm(1, TraceFilter::parse("udp port 7").expect("filter"));
    let f = frames::udp(c11, c12, ip(11), ip(12), 40000, 7, b"again");
    t.step(
        "c11 sends to c12 again, traced: both MACs are known now",
        "c11",
        &f,
    );
    let mut runt = frames::udp(c11, c12, ip(11), ip(12), 1, 2, b"");
    runt.truncate(10);
    t.step(
        "a 10-byte runt frame: dropped and counted by name",
        "c11",
        &runt,
    );

    let _ = writeln!(
        t.out,
        "\n$ vxmesh fdb show\n{}",
        show::fdb(&t.sw, None).trim_end()
    );
    let recs = t.sw.env.tracer.drain();
    let _ = writeln!(
        t.out,
        "\n$ vxmesh trace --count 1 --filter 'udp port 7'\n{}",
        show::trace(&t.sw, &recs).trim_end()
    );
    let _ = writeln!(t.out, "\n$ vxmesh stats\n{}", show::stats(&t.sw).trim_end());
    let _ = writeln!(
        t.out,
        "\nThe namespace lab (containers on AF_XDP and TAP ports, VXLAN between two nodes, the \
         load balancer, nginx backends) is `vxmesh demo`, as root."
    );
    t.out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tour_shows_what_the_switch_did() {
        let t = super::memory_tour();
        // proxy ARP answered on the asking port, for a local and a remote endpoint
        assert!(
            t.contains(
                "out c11  02:42:0a:00:09:0c > 02:42:0a:00:09:0b arp 10.0.9.12 asks/tells 10.0.9.11"
            ),
            "{t}"
        );
        assert!(
            t.contains("out c11  02:42:0a:00:09:15 > 02:42:0a:00:09:0b arp 10.0.9.21"),
            "{t}"
        );
        assert!(
            t.contains("02:42:0a:00:09:0b port c11 network appnet vni 4097 learned"),
            "{t}"
        );
        assert!(
            t.contains("02:42:0a:00:09:15 dst 198.18.0.2 (n2) network appnet vni 4097 static"),
            "{t}"
        );
        assert!(t.contains("drop_runt 1"), "{t}");
        assert!(t.contains("l2-fwd       output c12"), "{t}");
    }
}
