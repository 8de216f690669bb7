//! Two containers on one node, each with a TAP called `eth0` in its own namespace (issue 22; the
//! shared fixture with c21 on a TAP too, so n2 has c21 and c22 on `tap:eth0`):
//! the cluster file is accepted, both TAPs are created, and the containers reach each other and a
//! container on the other node, through real `vxmesh run` nodes in network namespaces.
//!
//! Privileged: without root the test says so and passes. Namespaces carry a per-run prefix
//! (`vxt{pid}-`) and are removed by name when `Running` drops, also when a check panics.

use std::process::Command;

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{Running, vxmesh_exe};

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
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let text = Fixture::new(&prefix)
        .set("endpoint", "c21", "attach", "tap:eth0")
        .text();
    let run =
        Running::start(&exe, &prefix, &text, &["n1", "n2"]).unwrap_or_else(|e| panic!("{e:#}"));
    let ns = |e: &str| run.lab.endpoint_netns(e);

    // Both of n2's containers hold their own eth0, with the endpoint's MAC.
    for (e, mac) in [("c21", "02:42:0a:00:09:15"), ("c22", "02:42:0a:00:09:16")] {
        let link = eth0_in(&ns(e)).unwrap_or_else(|| panic!("no eth0 in {e}'s namespace"));
        assert!(link.contains(mac), "{e}: {link}");
    }
    let pairs = [
        ("c21", "10.0.9.22"),
        ("c22", "10.0.9.21"),
        ("c21", "10.0.9.11"),
        ("c22", "10.0.9.11"),
        ("c11", "10.0.9.21"),
        ("c11", "10.0.9.22"),
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
    // Each of n2's TAPs carried its own container's frames (at least its pings' requests and
    // replies), so the two eth0s are two ports of the switch, not one.
    let out = run.ctl_ok("n2", &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json parses");
    for port in ["c21", "c22"] {
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
