//! Service discovery with real clients (issue 16): two `vxmesh run` nodes in a namespace lab, and
//! `dig` (Debian's dnsutils), `getent` and `curl` in the containers asking the switch: A for a
//! service (its VIP), `tasks.web` (every backend), an endpoint's name and an alias, PTR, AAAA
//! (NOERROR without answer), a name of another network (REFUSED: invisible), from an AF_XDP
//! container on one node and a TAP container on the other; `getent hosts` and `curl http://web/`
//! through the `resolv.conf` the lab writes.
//!
//! Privileged: without root (or without `dig`) the test says so and passes. Namespaces carry a
//! per-run prefix (`vxd{pid}-`) and are removed by name with the lab's `resolv.conf` files when
//! `Running` drops, also when a check panics.

use std::process::Command;

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{HttpServer, Running, vxmesh_exe};

/// Run `argv` in namespace `ns`; its standard output (and the whole story if it failed).
fn in_ns(ns: &str, argv: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .expect("ip netns exec");
    assert!(
        o.status.success(),
        "{argv:?} in {ns} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `dig` in `ns` against `server` (bounded: 2 s a try, 2 tries), with `args`.
fn dig(ns: &str, server: &str, args: &[&str]) -> String {
    let at = format!("@{server}");
    let mut argv = vec!["dig", "+time=2", "+tries=2", at.as_str()];
    argv.extend_from_slice(args);
    in_ns(ns, &argv)
}

/// `dig +short` answers, sorted.
fn short(ns: &str, server: &str, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    let mut lines: Vec<String> = dig(ns, server, &a).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn containers_resolve_services_tasks_endpoints_and_aliases_through_the_switch() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    if Command::new("dig").arg("-v").output().is_err() {
        eprintln!("skipped: no dig (Debian package dnsutils; scripts/test.sh installs it)");
        return;
    }
    let prefix = format!("vxd{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let text = Fixture::new(&prefix)
        .set("endpoint", "c21", "aliases", vec!["api"])
        .push(
            "network",
            "name = \"db\"\nvni = 4098\nsubnet = \"10.0.10.0/24\"",
        )
        .push(
            "endpoint",
            &format!(
                "name = \"d1\"\nnode = \"n1\"\nnetwork = \"db\"\nip = \"10.0.10.5\"\nattach = \"afxdp:vd1\"\nnetns = \"{prefix}d1\""
            ),
        )
        .text();
    let run =
        Running::start(&exe, &prefix, &text, &["n1", "n2"]).unwrap_or_else(|e| panic!("{e:#}"));
    let ns = |e: &str| run.lab.endpoint_netns(e);
    let (c11, c22, d1) = (ns("c11"), ns("c22"), ns("d1"));
    let resolver = "10.0.9.1";

    // From c11 (AF_XDP on n1) and c22 (TAP on n2): every node's switch answers its own.
    for from in [&c11, &c22] {
        let s = |args: &[&str]| short(from, resolver, args);
        assert_eq!(s(&["web"]), ["10.0.9.100"], "from {from}");
        assert_eq!(
            s(&["tasks.web"]),
            ["10.0.9.12", "10.0.9.21", "10.0.9.22"],
            "from {from}"
        );
        assert_eq!(s(&["c12"]), ["10.0.9.12"], "from {from}");
        assert_eq!(s(&["API"]), ["10.0.9.21"], "from {from}");
        assert_eq!(s(&["-x", "10.0.9.21"]), ["c21."], "from {from}");
        assert_eq!(s(&["-x", "10.0.9.100"]), ["web."], "from {from}");
    }
    // AAAA of a known name: NOERROR, no answer; another network's name: REFUSED.
    let aaaa = dig(&c11, resolver, &["web", "AAAA"]);
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );
    for name in ["d1", "example.com"] {
        let out = dig(&c11, resolver, &[name]);
        assert!(out.contains("status: REFUSED"), "{name}: {out}");
    }
    // And the other way round: db's resolver knows d1, not appnet's names.
    assert_eq!(short(&d1, "10.0.10.1", &["d1"]), ["10.0.10.5"]);
    let out = dig(&d1, "10.0.10.1", &["web"]);
    assert!(out.contains("status: REFUSED"), "{out}");

    // The lab's resolv.conf: glibc's resolver asks the switch, curl reaches the VIP by name.
    let hosts = in_ns(&c11, &["getent", "hosts", "web"]);
    assert!(hosts.starts_with("10.0.9.100 "), "{hosts}");
    let hosts = in_ns(&c22, &["getent", "hosts", "api"]);
    assert!(hosts.starts_with("10.0.9.21 "), "{hosts}");
    let _servers: Vec<HttpServer> = ["c12", "c21", "c22"]
        .iter()
        .map(|b| HttpServer::start(&ns(b), 80, b).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let body = in_ns(&c11, &["curl", "-s", "--max-time", "5", "http://web/"]);
    assert!(body.starts_with("served by c"), "{body}");

    // Every answer came from the stage, nothing was dropped by it.
    let out = run.ctl_ok("n1", &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json parses");
    let dns = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "dns")
        .unwrap_or_else(|| panic!("no dns stage: {out}"));
    assert!(dns["output"].as_u64().unwrap() >= 12, "{dns}");
}
