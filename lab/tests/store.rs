//! The cluster store on a real etcd (issue 14), end to end: two `vxmesh run --store` nodes in a
//! `vxmesh lab`, a three-member etcd cluster (Debian's etcd-server) started by the test in the
//! lab's underlay namespace on private addresses, the state imported from the shared fixture.
//!
//! Checked, in order: pings across the nodes and round robin through the VIP; an endpoint added
//! with `endpoint add` (a container the test makes) answers from the other node; a weight-0
//! `service update` drains on the nodes; SIGKILL of n2 → `node ls` says down and n1's `lb show`
//! loses n2's backends (and `tasks.web` its containers) while requests through the VIP keep
//! succeeding, and n2 back → ready with
//! its backends; one etcd member killed → changes still propagate; all of etcd stopped → traffic
//! goes on and the nodes count the disconnection, etcd back → a new change propagates; eight concurrent `endpoint add`s all land; `export` → `run
//! --config` gives the same static FDB and services on n1.
//!
//! Privileged: without root the test says so and passes. Everything carries a per-run prefix
//! and is removed by name (the lab when `Running` drops, the extra namespace by its guard, etcd
//! killed by its PID and its data directory removed), also when a check panics. Every wait is
//! bounded; the times it took are printed, never asserted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vxmesh_lab::etcd::Etcd;
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{HttpServer, Running, http_get, vxmesh_exe};

/// The etcd members' client addresses, on the lab's underlay bridge.
const ETCD_IPS: [&str; 3] = ["198.18.0.250", "198.18.0.251", "198.18.0.252"];
/// The nodes' lease in this test (the default is 5 s).
const TTL_SECS: u64 = 2;
/// Longest wait for anything the store should make happen.
const WAIT: Duration = Duration::from_secs(20);
const VIP: ([u8; 4], u16) = ([10, 0, 9, 100], 80);

/// A namespace this test makes besides the lab's, deleted by name when dropped.
struct ExtraNetns(String);

impl Drop for ExtraNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
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

fn ping(ns: &str, to: &str, count: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", count, "-i", "0.2", "-W", "1", to,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Poll `f` until it holds or `WAIT` passes; how long it took.
fn until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn nodes_follow_the_store_through_changes_node_failures_and_an_etcd_outage() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    let prefix = format!("vxs{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let fixture = Fixture::new(&prefix);
    let mut run =
        Running::start(&exe, &prefix, &fixture.text(), &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let ns = |run: &Running, e: &str| run.lab.endpoint_netns(e);
    let ul = run.lab.underlay_netns();
    let n1 = run.lab.node_netns("n1");
    for a in ETCD_IPS {
        ip(&["-n", &ul, "addr", "add", &format!("{a}/24"), "dev", "br0"]);
    }
    let dir = std::env::temp_dir().join(format!("{prefix}etcd"));
    let mut etcd = Etcd::start(&ul, &ETCD_IPS, &dir).unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url();
    // The admin commands, run from n1's namespace (it reaches etcd over the underlay).
    let admin = |args: &[&str]| -> Output {
        Command::new("ip")
            .args(["netns", "exec", &n1])
            .arg(&exe)
            .args(["--store", &url])
            .args(args)
            .output()
            .expect("vxmesh --store")
    };
    let admin_ok = |args: &[&str]| -> String {
        let o = admin(args);
        assert!(
            o.status.success(),
            "vxmesh --store {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    until("etcd answers", || admin(&["node", "ls"]).status.success());
    let config = run.config.display().to_string();
    admin_ok(&["import", &config]);

    run.store = Some(url.clone());
    run.run_args = vec!["--node-ttl".into(), TTL_SECS.to_string()];
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    run.start_node("n2").unwrap_or_else(|e| panic!("{e:#}"));
    let _web: Vec<HttpServer> = ["c12", "c21", "c22"]
        .iter()
        .map(|e| HttpServer::start(&ns(&run, e), 80, e).unwrap())
        .collect();
    for (from, to) in [
        ("c11", "10.0.9.21"),
        ("c12", "10.0.9.22"),
        ("c21", "10.0.9.12"),
    ] {
        assert!(
            ping(&ns(&run, from), to, "2"),
            "{from} -> {to}\n{}",
            run.log_tail()
        );
    }
    let vip = SocketAddr::from(VIP);
    let backends: BTreeSet<String> = (0..6)
        .map(|_| http_get(&ns(&run, "c11"), vip).unwrap())
        .collect();
    assert!(backends.len() >= 2, "round robin: {backends:?}");

    // A container attached through the store answers from the other node.
    let c13 = format!("{prefix}c13");
    let _c13 = ExtraNetns(c13.clone());
    ip(&["netns", "add", &c13]);
    ip(&["-n", &c13, "link", "set", "lo", "up"]);
    ip(&[
        "-n", &n1, "link", "add", "vc13", "type", "veth", "peer", "name", "eth0", "netns", &c13,
    ]);
    ip(&["-n", &n1, "link", "set", "vc13", "mtu", "1450", "up"]);
    ip(&[
        "-n",
        &c13,
        "link",
        "set",
        "eth0",
        "address",
        "02:42:0a:00:09:0d",
        "mtu",
        "1450",
        "up",
    ]);
    ip(&["-n", &c13, "addr", "add", "10.0.9.13/24", "dev", "eth0"]);
    admin_ok(&[
        "endpoint",
        "add",
        "c13",
        "--node",
        "n1",
        "--network",
        "appnet",
        "--ip",
        "10.0.9.13",
        "--attach",
        "afxdp:vc13",
        "--netns",
        &c13,
    ]);
    let t_add = until("c13 reachable from c21", || {
        ping(&ns(&run, "c21"), "10.0.9.13", "1")
    });

    // A weight-0 update drains on the nodes.
    let lb = |run: &Running, node: &str| run.ctl_ok(node, &["lb", "show"]).unwrap();
    admin_ok(&[
        "service",
        "update",
        "web",
        "--backend",
        "c12=0",
        "--backend",
        "c21",
        "--backend",
        "c22",
    ]);
    // Whether n1's `lb show` has `backend` at `weight`.
    let weighs = |run: &Running, backend: &str, weight: &str| {
        lb(run, "n1")
            .lines()
            .any(|l| l.contains(backend) && l.split_whitespace().nth(3) == Some(weight))
    };
    until("c12 drained on n1", || weighs(&run, "10.0.9.12:80", "0"));
    admin_ok(&[
        "service",
        "update",
        "web",
        "--backend",
        "c12",
        "--backend",
        "c21",
        "--backend",
        "c22",
    ]);

    // n2 crashes: down, its backends leave n1's services, the VIP still answers (c12).
    run.kill_node("n2").unwrap();
    let killed = Instant::now();
    // Whether `node ls` shows `node` with `status`.
    let shows = |node: &str, status: &str| {
        admin_ok(&["node", "ls"])
            .lines()
            .any(|l| l.starts_with(&format!("{node} ")) && l.contains(status))
    };
    until("n2 down in node ls", || shows("n2", "down"));
    until("n2's backends gone from n1", || {
        let s = lb(&run, "n1");
        !s.contains("10.0.9.21:80") && !s.contains("10.0.9.22:80")
    });
    let t_down = killed.elapsed();
    // Names follow the liveness too: tasks.web answers only what is up (dig, from dnsutils).
    let tasks = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns(&run, "c11"),
            "dig",
            "+short",
            "+time=2",
        ])
        .args(["@10.0.9.1", "tasks.web", "A"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !tasks.is_empty() || Command::new("dig").arg("-v").output().is_ok() {
        let got: BTreeSet<&str> = tasks.split_whitespace().collect();
        assert_eq!(got, BTreeSet::from(["10.0.9.12"]), "tasks.web with n2 down");
    }
    for _ in 0..4 {
        let b =
            http_get(&ns(&run, "c11"), vip).unwrap_or_else(|e| panic!("VIP with n2 down: {e:#}"));
        assert_eq!(b, "served by c12");
    }
    run.start_node("n2").unwrap_or_else(|e| panic!("{e:#}"));
    until("n2 ready", || shows("n2", "ready"));
    until("n2's backends back on n1", || {
        lb(&run, "n1").contains("10.0.9.21:80")
    });

    // One member of three killed: the cluster keeps its quorum and changes still propagate.
    etcd.stop(0);
    admin_ok(&[
        "service",
        "update",
        "web",
        "--backend",
        "c12",
        "--backend",
        "c21",
        "--backend",
        "c22=2",
    ]);
    let t_member = until("a change with one member down reaches n1", || {
        weighs(&run, "10.0.9.22:80", "2")
    });
    etcd.run(0).unwrap();

    // All of etcd away: forwarding goes on, the nodes count it; back: a change propagates.
    etcd.stop_all();
    assert!(
        ping(&ns(&run, "c11"), "10.0.9.21", "5"),
        "traffic with etcd stopped"
    );
    until("n1 counts the disconnection", || {
        let s = run.ctl_ok("n1", &["stats", "--json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["store"]["store_disconnects"].as_i64().unwrap_or(0) >= 1
    });
    etcd.run_all().unwrap();
    until("etcd back", || admin(&["node", "ls"]).status.success());
    admin_ok(&[
        "service",
        "update",
        "web",
        "--backend",
        "c12",
        "--backend",
        "c21",
    ]);
    let t_back = until("the change after the outage reaches n1", || {
        !lb(&run, "n1").contains("10.0.9.22:80")
    });

    // Concurrent writers lose nothing: eight `endpoint add`s at once (on a node without
    // vxmesh, imported from a second file) all land, each after the others' writes.
    let peer = std::env::temp_dir().join(format!("{prefix}peer.toml"));
    std::fs::write(&peer, "[[node]]\nname = \"n9\"\nvtep = \"198.18.0.9\"\n").unwrap();
    admin_ok(&["import", &peer.display().to_string()]);
    let _ = std::fs::remove_file(&peer);
    let writers: Vec<Child> = (0..8)
        .map(|k| {
            Command::new("ip")
                .args(["netns", "exec", &n1])
                .arg(&exe)
                .args([
                    "--store",
                    &url,
                    "endpoint",
                    "add",
                    &format!("e{k}"),
                    "--node",
                    "n9",
                ])
                .args([
                    "--network",
                    "appnet",
                    "--ip",
                    &format!("10.0.9.{}", 200 + k),
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in writers {
        assert!(
            w.wait().unwrap().success(),
            "a concurrent endpoint add failed"
        );
    }
    let listed = admin_ok(&["endpoint", "ls"]);
    for k in 0..8 {
        assert!(
            listed.contains(&format!("10.0.9.{}", 200 + k)),
            "e{k} lost:\n{listed}"
        );
    }
    until("the eight reach n1's FDB", || {
        let fdb = run.ctl_ok("n1", &["fdb", "show"]).unwrap();
        (0..8).all(|k| {
            let mac = format!("02:42:0a:00:09:{:02x}", 200 + k);
            fdb.lines()
                .any(|l| l.starts_with(&mac) && l.contains("198.18.0.9"))
        })
    });

    // The export runs as a cluster file with the same static FDB and services on n1.
    let statics = |run: &Running| -> BTreeSet<String> {
        run.ctl_ok("n1", &["fdb", "show"])
            .unwrap()
            .lines()
            .filter(|l| l.contains("static"))
            .map(str::to_string)
            .collect()
    };
    let services = |run: &Running| -> BTreeSet<String> {
        // Without the connection counts (the restart empties the table).
        lb(run, "n1")
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                if l.trim_start().starts_with("->") && w.len() > 4 {
                    w[..4].join(" ")
                } else {
                    w.join(" ")
                }
            })
            .collect()
    };
    // Encryption through the store: an encrypted network needs keys; with them the nodes
    // follow (key ids only, never key bytes), and export writes them back as [encryption].
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhM=";
    let create = [
        "network",
        "create",
        "secnet",
        "--subnet",
        "10.0.31.0/24",
        "--encrypted",
    ];
    let o = admin(&create);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lists no key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = admin(&["encryption", "set", "not-a-key"]);
    assert_eq!(o.status.code(), Some(2));
    admin_ok(&["encryption", "set", KEY]);
    admin_ok(&create);
    let ls = admin_ok(&["encryption", "ls"]);
    assert!(ls.contains("sends") && !ls.contains(KEY), "{ls}");
    assert!(ls.contains("transport: esp"), "{ls}");
    // The transport is set with the keys, and kept by a later set without it.
    admin_ok(&["encryption", "set", KEY, "--transport", "udp"]);
    admin_ok(&["encryption", "set", KEY]);
    let ls = admin_ok(&["encryption", "ls", "--json"]);
    assert!(ls.contains(r#""transport":"udp""#), "{ls}");
    let o = admin(&["encryption", "set", "--transport", "udp"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "--transport without keys is a usage error"
    );
    let o = admin(&["encryption", "set", KEY, "--transport", "gre"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown transport is a usage error"
    );
    admin_ok(&["encryption", "set", KEY, "--transport", "esp"]);
    until("n1 follows the encrypted network and its key", || {
        run.ctl("n1", &["network", "inspect", "secnet"])
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .is_some_and(|t| t.contains("encrypted") && t.contains("encryption: keys"))
    });
    // A network's CNI address blocks go with it (here one written by hand for n1).
    admin_ok(&["network", "create", "tmpnet", "--subnet", "10.0.32.0/24"]);
    let etcdctl = |args: &[&str]| {
        vxmesh_lab::etcd::etcdctl(&n1, &url, args).unwrap_or_else(|e| panic!("{e:#}"))
    };
    let tmp_blocks = "/vxmesh/v1/block/tmpnet/";
    etcdctl(&[
        "put",
        &format!("{tmp_blocks}10.0.32.0-26"),
        r#"{"node":"n1"}"#,
    ]);
    assert!(
        !etcdctl(&["get", "--prefix", tmp_blocks, "--keys-only"])
            .trim()
            .is_empty()
    );
    admin_ok(&["network", "rm", "tmpnet"]);
    let left = etcdctl(&["get", "--prefix", tmp_blocks, "--keys-only"]);
    assert!(
        left.trim().is_empty(),
        "blocks left after network rm: {left}"
    );
    let (fdb_store, lb_store) = (statics(&run), services(&run));
    let exported = admin_ok(&["export"]);
    assert!(
        exported.contains("[encryption]") && exported.contains(KEY),
        "{exported}"
    );
    std::fs::write(&run.config, &exported).unwrap();
    run.stop_node("n1").unwrap();
    run.store = None;
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(statics(&run), fdb_store, "exported:\n{exported}");
    assert_eq!(services(&run), lb_store);
    eprintln!(
        "store: endpoint add reachable after {t_add:?}; n2 killed -> down and its backends gone on n1 after {t_down:?} (TTL {TTL_SECS} s); a change with one etcd member of three down applied after {t_member:?}; after the whole etcd outage {t_back:?}"
    );
}
