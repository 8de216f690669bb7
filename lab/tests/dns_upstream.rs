//! The resolvers' upstream relay (issue 16, `vxmesh run --dns-upstream`), end to end: two real
//! nodes in a lab, a dnsmasq (Debian's dnsmasq-base) as the upstream in the lab's underlay
//! namespace serving a name the cluster does not have, and real `dig` in a container.
//!
//! Checked: a name the switch does not serve is answered by the upstream through the node
//! (`example.test` → 192.0.2.77), the cluster's own names are still answered by the switch
//! (`web` → the VIP), the node counts the relayed query (`dns_forwarded`), and a node without
//! upstreams still answers REFUSED.
//!
//! Privileged: without root, dig or dnsmasq the test says so and passes. Everything carries a
//! per-run prefix and is removed by name (the lab when `Running` drops); dnsmasq is killed by
//! its PID.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Running, vxmesh_exe};
use vxmesh_lab::{have, is_root};

/// The upstream's address, on the lab's underlay bridge.
const UPSTREAM: &str = "198.18.0.253";

/// A child killed by its PID when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dig` in namespace `ns` for `name`'s A record at `server`; its output (status and answers).
fn dig(ns: &str, server: &str, name: &str) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "dig", "+time=2", "+tries=2"])
        .arg(format!("@{server}"))
        .args([name, "A"])
        .output()
        .expect("dig");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn names_the_switch_does_not_serve_are_answered_by_the_upstream_through_the_node() {
    if !is_root() || !have("dig") || !have("dnsmasq") {
        eprintln!("skipped: needs root, dig (dnsutils) and dnsmasq (dnsmasq-base)");
        return;
    }
    let prefix = format!("vxu{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let mut run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &["n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ul = run.lab.underlay_netns();
    let ok = Command::new("ip")
        .args([
            "-n",
            &ul,
            "addr",
            "add",
            &format!("{UPSTREAM}/24"),
            "dev",
            "br0",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let _dnsmasq = Killed(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ul,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
            ])
            .args([
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file",
                "--bind-interfaces",
            ])
            .arg(format!("--listen-address={UPSTREAM}"))
            .arg("--address=/example.test/192.0.2.77")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq"),
    );
    run.run_args = vec!["--dns-upstream".into(), UPSTREAM.into()];
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    let c11 = run.lab.endpoint_netns("c11");
    // dnsmasq may take a moment to listen: bounded retries.
    let start = Instant::now();
    let mut got = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        got = dig(&c11, "10.0.9.1", "example.test");
        if got.contains("192.0.2.77") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        got.contains("status: NOERROR") && got.contains("192.0.2.77"),
        "{got}\n{}",
        run.log_tail()
    );
    let web = dig(&c11, "10.0.9.1", "web");
    assert!(web.contains("10.0.9.100"), "the switch's own name: {web}");
    let stats = run.ctl_ok("n1", &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let forwarded = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "dns")
        .and_then(|s| s["events"]["dns_forwarded"].as_u64())
        .unwrap_or(0);
    assert!(forwarded >= 1, "dns_forwarded: {stats}");
    // n2 runs without upstreams: the same name is REFUSED there.
    let c21 = run.lab.endpoint_netns("c21");
    let refused = dig(&c21, "10.0.9.1", "example.test");
    assert!(refused.contains("status: REFUSED"), "{refused}");
}
