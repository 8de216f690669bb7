//! A node on two poll threads (`vxmesh run --workers 2 --cpus 0,1`, issue 20 part 5), against
//! real peers: two nodes in a namespace lab, both on two workers, nginx in a backend that sits on
//! the other worker than the client (the owner of a port is a hash of its name; the test picks
//! the name). Every connection's reply arrives on a worker that did not create its entry (the
//! backend's port, or the underlay socket the kernel chose) and must be handed to the one that
//! did; the test checks that every request is answered and that the hand-offs happened:
//!
//! - c11 -> VIP on n1, backend on n1's other worker (curl, 20 requests);
//! - c21 -> VIP from n2, backend on n1 (underlay both ways, 20 requests);
//! - an external client -> the published port on n1's ingress (routing mesh, 20 requests);
//! - ping c11 -> c21 across the underlay;
//! - `stats`, `conntrack show` and `trace` see every worker; each poll thread runs on the CPU
//!   `--cpus` gave it;
//! - the change path on every worker: a reload detaches the backend (the service moves to c21
//!   on n2) and a second attaches it again, each applied on both workers (the port gone from
//!   both, then back with its steering), the VIP served by the right backend after each.
//!
//! Privileged: without root (or nginx and curl) the test says so and passes. Namespaces carry a
//! per-run prefix (`vxw{pid}-`) and are removed by name when `Running` drops, also when a check
//! panics; nginx is killed by its PID.

use std::process::Command;

use vswitch::port::handoff::owner_of;
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Nginx, Running, vxmesh_exe};
use vxmesh_lab::{have, is_root};

const REQUESTS: usize = 20;

fn curl(ns: &str, url: &str) -> Result<String, String> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "5", url])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// Sum of the port counter `name` over every port of `node` (`stats --json`).
fn port_counter(run: &Running, node: &str, name: &str) -> u64 {
    let out = run.ctl_ok(node, &["stats", "--json"]).expect("stats");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json");
    v["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["counters"][name].as_u64())
        .sum()
}

/// The CPUs thread `name` of process `pid` may run on (`Cpus_allowed_list`).
fn thread_cpus(pid: u32, name: &str) -> Option<String> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = t.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() == name {
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|s| s.trim().to_string());
        }
    }
    None
}

#[test]
fn two_workers_serve_every_connection_whichever_worker_sees_its_reply() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    for tool in ["nginx", "curl", "ping"] {
        if !have(tool) {
            eprintln!("skipped: no {tool} (scripts/test.sh installs it)");
            return;
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A backend on n1 whose port is on the other worker than c11's.
    let backend = (3..40)
        .map(|i| format!("c1{i}"))
        .find(|n| owner_of(n, 2) != owner_of("c11", 2))
        .expect("a name on the other worker");
    let prefix = format!("vxw{}-", std::process::id());
    let mut fx = Fixture::new(&prefix);
    fx.push(
        "endpoint",
        &format!(
            "name = \"{backend}\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.13\"\nattach = \"afxdp:v{backend}\"\nnetns = \"{{P}}{backend}\""
        ),
    );
    fx.set(
        "service",
        "web",
        "backends",
        toml::Value::Array(vec![toml::Value::String(backend.clone())]),
    );
    let mut args = vec!["--workers".to_string(), "2".to_string()];
    if cpus >= 2 {
        args.extend(["--cpus".to_string(), "0,1".to_string()]);
    }
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let run = Running::start_with(&exe, &prefix, &fx.text(), &["n1", "n2"], &args)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = std::env::temp_dir().join(format!("{prefix}nginx"));
    let _nginx = Nginx::start(&run, &[&backend, "c21"], &dir).unwrap_or_else(|e| panic!("{e:#}"));

    let ns = |e: &str| run.lab.endpoint_netns(e);
    let ing = run.lab.client_netns("n1");
    let calls: [(&str, String, &str); 3] = [
        (
            "c11 -> VIP (n1, other worker)",
            ns("c11"),
            "http://10.0.9.100/",
        ),
        ("c21 -> VIP (from n2)", ns("c21"), "http://10.0.9.100/"),
        (
            "client -> 192.0.2.1:8080 (ingress)",
            ing,
            "http://192.0.2.1:8080/",
        ),
    ];
    for (what, netns, url) in &calls {
        let mut failed = Vec::new();
        for i in 0..REQUESTS {
            match curl(netns, url) {
                Ok(body) => assert_eq!(body, backend, "{what}: served by"),
                Err(e) => failed.push(format!("{i}: {e}")),
            }
        }
        eprintln!("{what}: {REQUESTS} requests, failed {failed:?}");
        assert!(failed.is_empty(), "{what}: {failed:?}\n{}", run.log_tail());
    }
    let o = Command::new("ip")
        .args(["netns", "exec", &ns("c11")])
        .args(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.9.21"])
        .output()
        .expect("ping");
    assert!(o.status.success(), "ping c11 -> c21\n{}", run.log_tail());

    // The replies crossed between n1's workers: handed out by one, taken in by the other.
    let (out, inn) = (
        port_counter(&run, "n1", "handoff_rx_out"),
        port_counter(&run, "n1", "handoff_rx_in"),
    );
    let tx_out = port_counter(&run, "n1", "handoff_tx_out");
    eprintln!("n1: handoff_rx_out {out}, handoff_rx_in {inn}, handoff_tx_out {tx_out}");
    assert!(out >= REQUESTS as u64, "replies steered: {out}");
    assert_eq!(out, inn, "every frame handed out was taken in");
    assert_eq!(port_counter(&run, "n1", "handoff_ring_full"), 0);
    assert_eq!(port_counter(&run, "n1", "handoff_no_buffer"), 0);

    // Both workers' connection tables are listed: c11's and the ingress's entries.
    let conns = run.ctl_ok("n1", &["conntrack", "show"]).unwrap();
    assert!(
        conns.contains("10.0.9.11") && conns.contains("10.0.9.13"),
        "{conns}"
    );

    // trace follows a packet on whichever worker processes it.
    let tracer = {
        let ctl = run.control("n1");
        let exe = exe.clone();
        std::thread::spawn(move || {
            Command::new(&exe)
                .arg("--control")
                .arg(&ctl)
                .args(["trace", "--count", "1", "--filter", "tcp port 80"])
                .output()
                .expect("trace")
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    curl(&ns("c11"), "http://10.0.9.100/").expect("a traced request");
    let t = tracer.join().unwrap();
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(
        t.status.success() && text.contains("lb-nat"),
        "{text}\n{}",
        String::from_utf8_lossy(&t.stderr)
    );

    // Reloads go through every worker: detach the backend, then attach it again.
    let reload = |f: &Fixture, what: &str| {
        run.reload("n1", &f.text())
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    };
    let attached = fx.clone();
    fx.remove("endpoint", &backend);
    fx.set(
        "service",
        "web",
        "backends",
        toml::Value::Array(vec![toml::Value::String("c21".into())]),
    );
    reload(&fx, "detach");
    let st = run.ctl_ok("n1", &["stats", "--json"]).unwrap();
    assert!(
        !st.contains(&format!("\"{backend}\"")),
        "{backend} still a port: {st}"
    );
    assert_eq!(curl(&ns("c11"), "http://10.0.9.100/").as_deref(), Ok("c21"));
    reload(&attached, "attach again");
    for _ in 0..5 {
        assert_eq!(
            curl(&ns("c11"), "http://10.0.9.100/").as_deref(),
            Ok(backend.as_str()),
            "{}",
            run.log_tail()
        );
    }

    // Each poll thread on its CPU.
    if cpus >= 2 {
        let pid = run.node_pid("n1").expect("n1's pid");
        assert_eq!(thread_cpus(pid, "vxmesh-poll").as_deref(), Some("0"));
        assert_eq!(thread_cpus(pid, "vxmesh-poll-1").as_deref(), Some("1"));
    }
}
