//! CNI attachments through the cluster store (issue 15 with issue 14's store): two
//! `vxmesh run --store` nodes in a lab on a real etcd (Debian's etcd-server, one member in the
//! lab's underlay namespace), the fixture imported; `vxmesh-cni` driven as `cnitool` drives it
//! (no runtime).
//!
//! Checked: an ADD on n1 claims an address block of the network (`/vxmesh/v1/block/...`) and
//! writes the endpoint to the store (`endpoint ls`); a container on n2 pings it and resolves its
//! name through n2's resolver; its `--network-alias web` makes it a backend of service web on
//! n2 (`lb show`); an ADD on n2 gets an address of another block; an admin `endpoint add` with an
//! address in n1's block is refused; DEL removes the endpoint from the store and n2 forgets the
//! name; n1 keeps its only block when its last attachment leaves, and gives back one that is
//! empty while it holds another. Every wait is bounded; times are printed, never asserted.
//!
//! Privileged: without root or etcd the test says so and passes. Everything carries a per-run
//! prefix and is removed by name (the lab when `Running` drops, the containers' namespaces by
//! their guard, etcd killed by its PID), also when a check panics.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;
use vxmesh_lab::cnirun::Plugin;
use vxmesh_lab::etcd::{self, Etcd};
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{Running, vxmesh_exe};

const ETCD_IP: &str = "198.18.0.250";
const WAIT: Duration = Duration::from_secs(20);

/// Namespaces this test makes besides the lab's, deleted by name when dropped, and the nodes'
/// CNI state files (left when a check fails with attachments in place).
struct ExtraNetns(Vec<String>, Vec<PathBuf>);

impl Drop for ExtraNetns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for f in &self.1 {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn ping(ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `dig +short NAME` in `ns` against `server`.
fn dig(ns: &str, server: &str, name: &str) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "dig", "+time=1", "+tries=1", "+short"])
        .arg(format!("@{server}"))
        .arg(name)
        .output()
        .expect("dig");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The address (without its prefix length) of a CNI ADD result's first IP.
fn address_of(r: &serde_json::Value) -> String {
    let a = r["ips"][0]["address"].as_str().unwrap_or_default();
    a.split('/').next().unwrap_or_default().to_string()
}

#[test]
fn attachments_go_through_the_store_to_every_node() {
    if !is_root() || !etcd::installed() {
        eprintln!("skipped: needs root and etcd (Debian's etcd-server)");
        return;
    }
    let prefix = format!("vxq{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let plugin = Plugin {
        exe: exe.with_file_name("vxmesh-cni"),
    };
    let mut run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ul = run.lab.underlay_netns();
    let n1 = run.lab.node_netns("n1");
    ip(&[
        "-n",
        &ul,
        "addr",
        "add",
        &format!("{ETCD_IP}/24"),
        "dev",
        "br0",
    ]);
    let dir = std::env::temp_dir().join(format!("{prefix}etcd"));
    let etcd = Etcd::start(&ul, &[ETCD_IP], &dir).unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url();
    let admin = |args: &[&str]| -> Output {
        Command::new("ip")
            .args(["netns", "exec", &n1])
            .arg(&exe)
            .args(["--store", &url])
            .args(args)
            .output()
            .expect("vxmesh --store")
    };
    until("etcd answers", || admin(&["node", "ls"]).status.success());
    let config = run.config.display().to_string();
    assert!(admin(&["import", &config]).status.success());
    run.store = Some(url.clone());
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    run.start_node("n2").unwrap_or_else(|e| panic!("{e:#}"));

    let extra = ExtraNetns(
        vec![format!("{prefix}q1"), format!("{prefix}q2")],
        ["n1", "n2"]
            .iter()
            .map(|n| run.control(n).with_extension("cni.json"))
            .collect(),
    );
    for n in &extra.0 {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    let conf = |node: &str| {
        json!({"cniVersion": "1.0.0", "name": "appnet", "type": "vxmesh-cni",
            "network": "appnet", "control": run.control(node),
            "runtimeConfig": {"aliases": {"appnet": ["web", format!("{node}-alias")]}}})
    };
    let path = |n: &str| format!("/run/netns/{prefix}{n}");

    // ADD on n1: a block claimed, the endpoint in the store, learnt by n2.
    let (code, r) = plugin.call_eth0("ADD", &path("q1"), "cid-q1", "K8S_POD_NAME=q1", &conf("n1"));
    assert_eq!(code, 0, "ADD q1: {r}\n{}", run.log_tail());
    let ip1 = address_of(&r);
    let ls = String::from_utf8_lossy(&admin(&["endpoint", "ls", "--json"]).stdout).into_owned();
    assert!(
        ls.contains("\"q1\"") && ls.contains(&ip1),
        "endpoint ls: {ls}"
    );
    let c21 = run.lab.endpoint_netns("c21");
    let t_ping = until("q1 reachable from c21 on n2", || ping(&c21, &ip1));
    let t_dns = until("q1's name resolvable on n2", || {
        dig(&c21, "10.0.9.1", "q1") == ip1
    });
    assert_eq!(dig(&c21, "10.0.9.1", "n1-alias"), ip1);
    let t_lb = until("q1 a backend of web on n2", || {
        run.ctl_ok("n2", &["lb", "show"])
            .is_ok_and(|s| s.contains(&ip1))
    });

    // The endpoint names q1's namespace (it is under /run/netns), so n1 watches q1's UDP
    // sockets for early drop, as for an endpoint of the file: a datagram to q1 gets them
    // sampled.
    let eps: serde_json::Value =
        serde_json::from_slice(&admin(&["endpoint", "ls", "--json"]).stdout)
            .expect("endpoint ls --json");
    let q1 = eps
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "q1"))
        .unwrap_or_else(|| panic!("no q1: {eps}"));
    assert_eq!(q1["netns"], json!(format!("{prefix}q1")), "{q1}");
    let samples = || -> u64 {
        let out = run
            .ctl_ok("n1", &["stats", "--json"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json");
        v["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "q1"))
            .and_then(|p| p["counters"]["receiver_samples"].as_u64())
            .unwrap_or_else(|| panic!("no receiver_samples on port q1: {out}"))
    };
    until("q1's UDP sockets sampled on n1", || {
        // A DNS query to q1 (nobody answers): UDP the switch delivers to q1's port.
        let _ = dig(&c21, &ip1, "q1");
        samples() > 0
    });

    // ADD on n2: an address of another block.
    let (code, r) = plugin.call_eth0("ADD", &path("q2"), "cid-q2", "K8S_POD_NAME=q2", &conf("n2"));
    assert_eq!(code, 0, "ADD q2: {r}\n{}", run.log_tail());
    let ip2 = address_of(&r);
    let block = |a: &str| {
        a.parse::<std::net::Ipv4Addr>()
            .map(|a| u32::from(a) >> 6)
            .unwrap()
    };
    assert_ne!(block(&ip1), block(&ip2), "{ip1} and {ip2} in one /26 block");
    until("q2 on n2 reachable from q1 on n1", || {
        ping(&format!("{prefix}q1"), &ip2)
    });

    // An admin write into n1's block is refused, for another node and for n1 itself (n1 hands
    // the block's addresses out without asking: an admin endpoint there could be given twice).
    let taken: std::net::Ipv4Addr = ip1.parse().unwrap();
    let next = std::net::Ipv4Addr::from(u32::from(taken) + 1).to_string();
    for node in ["n2", "n1"] {
        let o = admin(&[
            "endpoint",
            "add",
            "x9",
            "--node",
            node,
            "--network",
            "appnet",
            "--ip",
            &next,
        ]);
        assert!(
            !o.status.success(),
            "an address in n1's block was accepted for {node}"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("address block"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // DEL: out of the store, n2 forgets the name; a second DEL succeeds.
    let (code, r) = plugin.call_eth0("DEL", &path("q1"), "cid-q1", "", &conf("n1"));
    assert_eq!(code, 0, "DEL q1: {r}");
    let ls = String::from_utf8_lossy(&admin(&["endpoint", "ls", "--json"]).stdout).into_owned();
    assert!(!ls.contains("\"q1\""), "endpoint ls after DEL: {ls}");
    let t_gone = until("q1's name gone on n2", || {
        dig(&c21, "10.0.9.1", "q1").is_empty()
    });
    let (code, _) = plugin.call_eth0("DEL", &path("q1"), "cid-q1", "", &conf("n1"));
    assert_eq!(code, 0, "second DEL");

    // Blocks: n1's only block of appnet stays with it when its last attachment leaves (a node
    // keeps one per network); a surplus one is given back.
    let etcdctl = |args: &[&str]| {
        vxmesh_lab::etcd::etcdctl(&n1, &url, args).unwrap_or_else(|e| panic!("{e:#}"))
    };
    let key_of = |b: u32| {
        format!(
            "/vxmesh/v1/block/appnet/{}-26",
            std::net::Ipv4Addr::from(b << 6)
        )
    };
    let blocks = || etcdctl(&["get", "--prefix", "/vxmesh/v1/block/appnet/", "--keys-only"]);
    let a = key_of(block(&ip1));
    assert!(
        blocks().contains(&a),
        "n1's only block released: {}",
        blocks()
    );
    // A second block for n1 (one neither node holds), then q1 back in the first and out again:
    // the first, empty now, goes back to the store; the second stays.
    let base = block(&ip1) & !3;
    let spare = (0..4)
        .map(|k| base + k)
        .find(|&b| b != block(&ip1) && b != block(&ip2))
        .unwrap();
    let b = key_of(spare);
    etcdctl(&["put", &b, r#"{"node":"n1"}"#]);
    let (code, r) = plugin.call_eth0("ADD", &path("q1"), "cid-q1", "K8S_POD_NAME=q1", &conf("n1"));
    assert_eq!(code, 0, "ADD q1 again: {r}\n{}", run.log_tail());
    let again = address_of(&r);
    assert_eq!(key_of(block(&again)), a, "q1 again from n1's first block");
    let (code, r) = plugin.call_eth0("DEL", &path("q1"), "cid-q1", "", &conf("n1"));
    assert_eq!(code, 0, "DEL q1 again: {r}");
    let left = blocks();
    assert!(
        !left.contains(&a) && left.contains(&b),
        "blocks after the DEL: {left}"
    );
    // n2 dies with q2 still attached: `node rm` refuses it while it is ready, then takes it
    // with its endpoints (the file's c21, c22 and the CNI's q2) and its address block, which
    // another node can then claim.
    let o = admin(&["node", "rm", "n2"]);
    assert!(!o.status.success(), "node rm of a ready node accepted");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("is ready"), "{err}");
    run.stop_node("n2").unwrap_or_else(|e| panic!("{e:#}"));
    until("n2 down in node ls", || {
        String::from_utf8_lossy(&admin(&["node", "ls"]).stdout)
            .lines()
            .any(|l| l.starts_with("n2 ") && l.contains("down"))
    });
    let o = admin(&["node", "rm", "n2"]);
    assert!(
        o.status.success(),
        "node rm n2: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ls = String::from_utf8_lossy(&admin(&["endpoint", "ls", "--json"]).stdout).into_owned();
    for gone in ["\"q2\"", "\"c21\"", "\"c22\""] {
        assert!(!ls.contains(gone), "{gone} left after node rm: {ls}");
    }
    let nodes = String::from_utf8_lossy(&admin(&["node", "ls"]).stdout).into_owned();
    assert!(!nodes.lines().any(|l| l.starts_with("n2 ")), "{nodes}");
    let left = etcdctl(&["get", "--prefix", "/vxmesh/v1/block/appnet/"]);
    assert!(!left.contains("\"n2\""), "n2's block left: {left}");
    let svcs: serde_json::Value =
        serde_json::from_slice(&admin(&["service", "ls", "--json"]).stdout).expect("service ls");
    let web = svcs
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "web"))
        .unwrap_or_else(|| panic!("no web: {svcs}"));
    assert_eq!(
        web["backends"],
        json!(["c12"]),
        "web keeps its backend on n1"
    );
    eprintln!(
        "cni + store: q1 at {ip1} (n1), q2 at {ip2} (n2); ping from n2 after {t_ping:?}, DNS after {t_dns:?}, backend after {t_lb:?}; name gone after DEL in {t_gone:?}"
    );
    drop(extra);
    drop(run);
    drop(etcd);
}
