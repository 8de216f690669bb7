//! Hot-plug (issue 13), as a container runtime drives it: containers attach and detach on a
//! running node by reloads of the cluster file, and the traffic the changes do not touch does
//! not notice.
//!
//! Two real `vxmesh run` nodes in a `vxmesh lab` (the shared fixture). While a ping runs from
//! c11 (n1, AF_XDP) to c21 (n2) and a keep-alive HTTP connection from c11 to the VIP stays
//! open, n1 takes 20 reloads: ten that attach ten containers each (five AF_XDP veths and five
//! TAPs; the first also two real containers, c13 on AF_XDP and c14 on a TAP in their own
//! namespaces, c14 joining the service as a backend), then ten that detach them all again.
//! Checked: every reload applies (exit 0, the ports named in its log), the new containers talk
//! (c13 and c14 ping containers on n2; new connections to the VIP reach c14), detached ports
//! are gone (c14's TAP removed, no XDP program left on c13's veth), the ping lost nothing but
//! the request in flight when it was stopped, and the keep-alive connection answered every
//! request from the same backend. Then three changes that fail halfway (a missing interface, a
//! missing namespace, a TAP the kernel refuses) are refused whole: exit 2, and `fdb show`, `lb show` and `network
//! inspect` byte for byte as before. Last, n1 stops and starts again: c12's TAP stays with its
//! address while n1 is down, and c12 talks again once n1 is back.
//!
//! Privileged: without root the test says so and passes. Every namespace carries a per-run
//! prefix and is removed by name (the lab's when `Running` drops, the two containers' by their
//! guard), also when a check panics; the ping is killed by its PID.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{HttpServer, Running, http_get, in_netns, vxmesh_exe};

/// Containers attached per reload, and reloads that attach (as many detach again).
const PER_RELOAD: usize = 10;
const ROUNDS: usize = 10;
/// The VIP and its port.
const VIP: ([u8; 4], u16) = ([10, 0, 9, 100], 80);
/// Longest the keep-alive client runs, whatever the test does (a bound, not a measurement).
const CLIENT_LIFETIME: Duration = Duration::from_secs(240);

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Namespaces this test makes besides the lab's, deleted by name when dropped.
struct ExtraNetns(Vec<String>);

impl Drop for ExtraNetns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A child process killed (by its PID) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bulk container `i`: name, `[[endpoint]]` body. Even ones on AF_XDP (veth `hx{i}`, made by
/// the test in the node's namespace), odd ones on a TAP `tb{i}` the node creates in its own.
fn bulk(i: usize) -> (String, String) {
    let attach = if i.is_multiple_of(2) {
        format!("afxdp:hx{i}")
    } else {
        format!("tap:tb{i}")
    };
    let name = format!("b{i}");
    let body = format!(
        "name = \"{name}\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.{}\"\nattach = \"{attach}\"",
        101 + i
    );
    (name, body)
}

/// What the keep-alive client saw.
#[derive(Debug, Default)]
struct KeepAlive {
    answered: usize,
    errors: Vec<String>,
    backends: BTreeSet<String>,
}

/// One request on an open connection; the backend that answered.
fn request(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        resp.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&resp);
        if let Some((_, body)) = text.split_once("\r\n\r\n")
            && body.ends_with('\n')
        {
            return Ok(body.trim().trim_start_matches("served by ").to_string());
        }
    }
}

/// A client in `netns` that keeps one connection to the VIP and sends a request every 20 ms
/// until `stop` (or its lifetime ends).
fn keep_alive(netns: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<KeepAlive> {
    in_netns(netns, move || {
        let mut seen = KeepAlive::default();
        let addr = SocketAddr::from(VIP);
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(s) => s,
            Err(e) => {
                seen.errors.push(format!("connect: {e}"));
                return seen;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < CLIENT_LIFETIME {
            match request(&mut s) {
                Ok(b) => {
                    seen.answered += 1;
                    seen.backends.insert(b);
                }
                Err(e) => {
                    seen.errors
                        .push(format!("request {}: {e}", seen.answered + 1));
                    if seen.errors.len() > 5 {
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
    .expect("client thread in c11's namespace")
}

/// `N packets transmitted, M received` from ping's summary.
fn ping_counts(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    Some((*nums.first()?, *nums.get(1)?))
}

#[test]
fn a_hundred_containers_attach_and_detach_while_a_ping_and_a_keep_alive_connection_run() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    let prefix = format!("vxh{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let mut fixture = Fixture::new(&prefix);
    let run = Running::start(&exe, &prefix, &fixture.text(), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ns = |e: &str| run.lab.endpoint_netns(e);
    let n1 = run.lab.node_netns("n1");
    let (c13_ns, c14_ns) = (format!("{prefix}c13"), format!("{prefix}c14"));
    let _extra = ExtraNetns(vec![c13_ns.clone(), c14_ns.clone()]);
    ip(&["netns", "add", &c13_ns]);
    ip(&["netns", "add", &c14_ns]);
    // c13's veth as a runtime makes it: the node's side in the node's namespace, the
    // container's side as eth0 with the endpoint's MAC and address.
    ip(&[
        "-n", &n1, "link", "add", "vc13", "type", "veth", "peer", "name", "eth0", "netns", &c13_ns,
    ]);
    ip(&["-n", &n1, "link", "set", "vc13", "mtu", "1450", "up"]);
    let c13 = ["-n", &c13_ns, "link", "set", "eth0"];
    ip(&[
        &c13[..],
        &["address", "02:42:0a:00:09:0d", "mtu", "1450", "up"],
    ]
    .concat());
    ip(&["-n", &c13_ns, "addr", "add", "10.0.9.13/24", "dev", "eth0"]);
    ip(&["-n", &c13_ns, "link", "set", "lo", "up"]);
    ip(&["-n", &c14_ns, "link", "set", "lo", "up"]);
    // The bulk containers' veths (both ends in the node's namespace), in one `ip -batch`.
    let mut batch = String::new();
    for i in (0..PER_RELOAD * ROUNDS).step_by(2) {
        batch.push_str(&format!(
            "link add hx{i} mtu 1450 type veth peer name hy{i}\nlink set hx{i} up\nlink set hy{i} up\n"
        ));
    }
    let mut b = Command::new("ip")
        .args(["-n", &n1, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    b.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
    assert!(b.wait().unwrap().success(), "ip -batch of the bulk veths");

    let _web: Vec<HttpServer> = ["c12", "c21", "c22"]
        .iter()
        .map(|e| HttpServer::start(&ns(e), 80, e).unwrap_or_else(|err| panic!("{err:#}")))
        .collect();
    let _web14 = HttpServer::start(&c14_ns, 80, "c14");

    let stop = Arc::new(AtomicBool::new(false));
    let client = keep_alive(&ns("c11"), stop.clone());
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns("c11"),
            "ping",
            "-i",
            "0.01",
            "10.0.9.21",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ping");
    let mut ping = Killed(ping);

    let reload = |f: &Fixture, what: &str| -> String {
        run.reload("n1", &f.text())
            .unwrap_or_else(|e| panic!("{what}: {e:#}"))
    };

    let started = Instant::now();
    for r in 0..ROUNDS {
        let mut names = Vec::new();
        for i in r * PER_RELOAD..(r + 1) * PER_RELOAD {
            let (name, body) = bulk(i);
            fixture.push("endpoint", &body);
            names.push(name);
        }
        if r == 0 {
            fixture
                .push(
                    "endpoint",
                    "name = \"c13\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.13\"\nattach = \"afxdp:vc13\"\nnetns = \"{P}c13\"",
                )
                .push(
                    "endpoint",
                    "name = \"c14\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.14\"\nattach = \"tap:eth0\"\nnetns = \"{P}c14\"",
                )
                .set(
                    "service",
                    "web",
                    "backends",
                    vec!["c12", "c21", "c22", "c14"],
                );
            names.extend(["c13".to_string(), "c14".to_string()]);
        }
        let log = reload(&fixture, &format!("attach round {r}"));
        for n in &names {
            assert!(
                log.contains(&format!("endpoint {n}: attached")),
                "{n}: {log}"
            );
        }
        if r == 0 {
            // The new containers work: across nodes, and c14 as a backend of the VIP.
            for (from, to) in [(&c13_ns, "10.0.9.21"), (&c14_ns, "10.0.9.22")] {
                let o = Command::new("ip")
                    .args([
                        "netns", "exec", from, "ping", "-c", "2", "-i", "0.2", "-W", "2", to,
                    ])
                    .output()
                    .expect("ping");
                assert!(
                    o.status.success(),
                    "{from} -> {to}: {}",
                    String::from_utf8_lossy(&o.stdout)
                );
            }
            let reached: BTreeSet<String> = (0..8)
                .filter_map(|_| http_get(&c13_ns, SocketAddr::from(VIP)).ok())
                .collect();
            assert!(reached.contains("served by c14"), "{reached:?}");
        }
    }
    let attached = run.ctl_ok("n1", &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&attached).unwrap();
    assert_eq!(
        v["ports"].as_array().unwrap().len(),
        6 + PER_RELOAD * ROUNDS + 2,
        "underlay, underlay-esp, underlay-esp-udp, c11, c12, ext0, the bulk containers, c13, c14"
    );
    for r in 0..ROUNDS {
        let mut names = Vec::new();
        for i in r * PER_RELOAD..(r + 1) * PER_RELOAD {
            let (name, _) = bulk(i);
            fixture.remove("endpoint", &name);
            names.push(name);
        }
        if r == ROUNDS - 1 {
            fixture
                .set("service", "web", "backends", vec!["c12", "c21", "c22"])
                .remove("endpoint", "c13")
                .remove("endpoint", "c14");
            names.extend(["c13".to_string(), "c14".to_string()]);
        }
        let log = reload(&fixture, &format!("detach round {r}"));
        for n in &names {
            assert!(
                log.contains(&format!("endpoint {n}: detached")),
                "{n}: {log}"
            );
        }
    }
    let churn = started.elapsed();

    // Detached ports are really gone: c14's TAP removed, no XDP program on c13's veth.
    let o = Command::new("ip")
        .args(["-n", &c14_ns, "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "c14's TAP is still there");
    let link = Command::new("ip")
        .args(["-n", &n1, "-d", "link", "show", "vc13"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("xdp"),
        "an XDP program is left on vc13: {link}"
    );
    let stats = run.ctl_ok("n1", &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let ports: Vec<&str> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        ports,
        [
            "underlay",
            "underlay-esp",
            "underlay-esp-udp",
            "c11",
            "c12",
            "ext0"
        ]
    );

    // A change that fails halfway (its second new port cannot open: the interface is missing,
    // the TAP's namespace is, or the kernel refuses the TAP) is refused whole: exit 2, the item named, and `fdb show`,
    // `lb show` and `network inspect` exactly as before.
    let views = || {
        [
            vec!["fdb", "show"],
            vec!["lb", "show"],
            vec!["network", "inspect", "appnet"],
        ]
        .map(|a| run.ctl_ok("n1", &a).unwrap())
    };
    let before = views();
    for bad in [
        "name = \"c16\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.16\"\nattach = \"afxdp:nosuch0\"",
        "name = \"c16\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.16\"\nattach = \"tap:eth0\"\nnetns = \"{P}nosuch\"",
        // The kernel refuses it: ul0 is the node's underlay veth, not a TAP.
        "name = \"c16\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.16\"\nattach = \"tap:ul0\"",
    ] {
        let mut f = fixture.clone();
        f.push("endpoint", &bulk(1).1).push("endpoint", bad).set(
            "service",
            "web",
            "backends",
            vec!["c12=0", "c21", "c22"],
        );
        std::fs::write(&run.config, f.text()).unwrap();
        let o = run.ctl("n1", &["reload"]).unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("endpoint c16") && err.contains("nothing of the change"),
            "{err}"
        );
        assert_eq!(views(), before, "after: {err}");
    }
    std::fs::write(&run.config, fixture.text()).unwrap();
    assert_eq!(run.ctl_ok("n1", &["reload"]).unwrap(), "no changes\n");

    // SAFETY: SIGINT to the ping this test started (its own child, by PID): ping prints its
    // summary and exits.
    unsafe { libc::kill(ping.0.id() as libc::pid_t, libc::SIGINT) };
    let mut out = String::new();
    ping.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().expect("client thread");
    let (sent, got) = ping_counts(&out).unwrap_or_else(|| panic!("no ping summary: {out}"));
    eprintln!(
        "hot-plug: {} containers attached and detached in {} reloads over {churn:?}; ping c11 -> c21: {sent} sent, {got} received; keep-alive: {} requests answered by {:?}",
        PER_RELOAD * ROUNDS + 2,
        2 * ROUNDS,
        seen.answered,
        seen.backends
    );
    assert!(sent > 10, "the ping ran: {out}");
    // The one request in flight when ping is interrupted may not have its reply yet.
    assert!(
        sent - got <= 1,
        "ping lost {} of {sent}:\n{out}",
        sent - got
    );
    assert!(seen.errors.is_empty(), "keep-alive: {:?}", seen.errors);
    assert!(seen.answered > 10, "{seen:?}");
    assert_eq!(
        seen.backends.len(),
        1,
        "one connection, one backend: {seen:?}"
    );

    // A node that stops leaves its containers' TAPs (a restart does not take their interface
    // away); the next run takes them over.
    let mut run = run;
    let st = run.stop_node("n1").unwrap();
    assert!(st.success(), "n1 exit: {st}");
    let addr = Command::new("ip")
        .args(["-n", &run.lab.endpoint_netns("c12"), "addr", "show", "eth0"])
        .output()
        .unwrap();
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(
        addr.contains("10.0.9.12/24"),
        "c12's TAP after n1 stopped: {addr}"
    );
    run.start_node("n1").unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", &run.lab.endpoint_netns("c12")])
        .args(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.9.21"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "c12 -> c21 after the restart: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}
