//! Two containers on one node, each with a TAP called `eth0` in its own namespace (issue 22):
//! the cluster file is accepted, both TAPs are created, and the containers reach each other and a
//! container on the other node, through real `vxmesh run` nodes in network namespaces.
//!
//! Privileged: without root the test says so and passes. Namespaces carry a per-run prefix
//! (`vxt{pid}-`) and are removed by name when `Running` drops, also when a check panics.

use std::path::Path;
use std::process::Command;

use vxmesh::labrun::Running;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const CLUSTER: &str = r#"
[[node]]
name = "h1"
vtep = "198.18.0.1"

[[node]]
name = "h2"
vtep = "198.18.0.2"

[[network]]
name = "appnet"
vni = 4097
subnet = "10.0.9.0/24"
mtu = 1450

[[endpoint]]
name = "b1"
node = "h1"
network = "appnet"
ip = "10.0.9.11"
attach = "tap:eth0"
netns = "{P}b1"

[[endpoint]]
name = "b2"
node = "h2"
network = "appnet"
ip = "10.0.9.21"
attach = "tap:eth0"
netns = "{P}b2"

[[endpoint]]
name = "b3"
node = "h2"
network = "appnet"
ip = "10.0.9.22"
attach = "tap:eth0"
netns = "{P}b3"
"#;

/// `ip -o link show eth0` in `ns`: the line, if the interface exists.
fn eth0_in(ns: &str) -> Option<String> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "ip", "-o", "link", "show", "eth0"])
        .output()
        .expect("ip netns exec");
    if o.status.success() {
        Some(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        eprintln!("in {ns}: {}", String::from_utf8_lossy(&o.stderr));
        None
    }
}

#[test]
fn two_taps_named_eth0_on_one_node_reach_each_other_and_a_remote_container() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, TAP)");
        return;
    }
    let prefix = format!("vxt{}-", std::process::id());
    let exe = Path::new(env!("CARGO_BIN_EXE_vxmesh"));
    let run = Running::start(
        exe,
        &prefix,
        &CLUSTER.replace("{P}", &prefix),
        &["h1", "h2"],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let ns = |e: &str| run.lab.endpoint_netns(e);

    // Both of h2's containers hold their own eth0, with the endpoint's MAC.
    for (e, mac) in [("b2", "02:42:0a:00:09:15"), ("b3", "02:42:0a:00:09:16")] {
        let link = eth0_in(&ns(e)).unwrap_or_else(|| panic!("no eth0 in {e}'s namespace"));
        assert!(link.contains(mac), "{e}: {link}");
    }
    let pairs = [
        ("b2", "10.0.9.22"),
        ("b3", "10.0.9.21"),
        ("b2", "10.0.9.11"),
        ("b3", "10.0.9.11"),
        ("b1", "10.0.9.21"),
        ("b1", "10.0.9.22"),
    ];
    for (from, to) in pairs {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns(from)])
            .args(["ping", "-c", "2", "-i", "0.2", "-W", "2", to])
            .output()
            .expect("ping");
        assert!(
            o.status.success(),
            "ping {from} -> {to}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            run.log_tail()
        );
    }
    // Each of h2's TAPs carried its own container's frames (at least its pings' requests and
    // replies), so the two eth0s are two ports of the switch, not one.
    let out = run.ctl_ok("h2", &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json parses");
    for port in ["b2", "b3"] {
        let p = v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port)
            .unwrap_or_else(|| panic!("no port {port}: {out}"));
        for dir in ["rx_packets", "tx_packets"] {
            let n = p[dir]
                .as_u64()
                .unwrap_or_else(|| panic!("{port} {dir}: {out}"));
            assert!(n >= 8, "port {port}: {dir} = {n}");
        }
    }
}
