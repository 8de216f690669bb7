//! The CNI plugin without a runtime (issue 15): `vxmesh-cni` driven as `cnitool` drives a
//! plugin (the CNI environment, the config on standard input), against two real `vxmesh run`
//! nodes in a lab (the shared fixture plus a tiny /29 network).
//!
//! Checked: VERSION; STATUS (0 with the node up, code 50 with it down); ADD of an AF_XDP
//! container and a TAP container (the result's interfaces, sandbox, address and resolver; the
//! interface's address, MAC and MTU in the container's namespace; TX checksum offload off); the
//! containers ping endpoints on both nodes, an alias naming service `web` makes one a backend
//! (HTTP through the VIP reaches it); CHECK; every bad input (no `network`, an unknown network,
//! a missing, absent or non-namespace CNI_NETNS, an existing CNI_IFNAME, an exhausted subnet, an
//! unsupported `cniVersion`, an ADD twice, a name collision) is a CNI error with its code and
//! leaves no veth, no endpoint and no address behind; the attachments come back after the
//! node restarts (with `--afxdp-offloads`, which gives the AF_XDP container its TSO back) and a
//! DEL then works; DEL is idempotent and frees the address (the next ADD
//! gets it); GC removes what `cni.dev/valid-attachments` does not list.
//!
//! Privileged: without root the test says so and passes. Every namespace carries a per-run
//! prefix and is removed by name (the lab's when `Running` drops, the containers' by a guard).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use vxmesh_lab::cnirun::Plugin;
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{HttpServer, Running, http_get, vxmesh_exe};

/// Namespaces this test makes besides the lab's, deleted by name when dropped.
struct ExtraNetns(Vec<String>);

impl Drop for ExtraNetns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// `ip ARGS`, which must succeed; its standard output.
fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The node side of veths the plugin made in `ns` (`vx` + 12 hex digits).
fn cni_veths(ns: &str) -> Vec<String> {
    ip(&["-n", ns, "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n.len() == 14 && n.starts_with("vx"))
        .collect()
}

/// A folder removed when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The addresses host-local holds in its data folder of one network (a file per address).
fn ipam_addresses(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .collect();
    v.sort();
    v
}

fn ping(ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "2", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ping_ok(ns: &str, to: &str) {
    // The first ping may wait on ARP; three tries, each bounded by -W.
    assert!((0..3).any(|_| ping(ns, to)), "{ns} cannot ping {to}");
}

#[test]
fn the_plugin_attaches_checks_and_detaches_containers_as_a_runtime_drives_it() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    let prefix = format!("vxk{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let plugin = Plugin {
        exe: exe.with_file_name("vxmesh-cni"),
    };
    assert!(
        plugin.exe.is_file(),
        "no {}: build the workspace",
        plugin.exe.display()
    );
    let text = Fixture::new(&prefix)
        .push(
            "network",
            "name = \"tiny\"\nvni = 4100\nsubnet = \"10.0.77.0/29\"",
        )
        .text();
    let mut run =
        Running::start(&exe, &prefix, &text, &["n1", "n2"]).unwrap_or_else(|e| panic!("{e:#}"));
    let ns = |n: &str| format!("{prefix}{n}");
    let path = |n: &str| format!("/run/netns/{prefix}{n}");
    let extra = ExtraNetns(
        ["p1", "p2", "p3", "t1", "t2", "t3"]
            .iter()
            .map(|n| ns(n))
            .collect(),
    );
    for n in &extra.0 {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    let n1 = run.lab.node_netns("n1");
    let control = run.control("n1");
    let state = control.with_extension("cni.json");
    let conf = |extra: Value| {
        let mut c = json!({"cniVersion": "1.0.0", "name": "appnet", "type": "vxmesh-cni",
            "network": "appnet", "control": control});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };

    // VERSION, answered by the plugin; STATUS, answered by the node.
    let (code, v) = plugin.call("VERSION", "", "", "", "", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(code, 0);
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"1.1.0"),
        "{v}"
    );
    plugin.ok("STATUS", "", "", "", &conf(json!({"cniVersion": "1.1.0"})));
    plugin.fails(
        "STATUS",
        "",
        "",
        "",
        &conf(json!({"control": "/run/vxmesh/nobody-here.sock"})),
        50,
    );

    // ADD: an AF_XDP container whose alias joins service web.
    let inspect_before = run.ctl_ok("n1", &["network", "inspect", "appnet"]).unwrap();
    let r = plugin.ok(
        "ADD",
        &path("p1"),
        "cid-p1",
        "IgnoreUnknown=1;K8S_POD_NAME=p1",
        &conf(json!({"runtimeConfig": {"aliases": {"appnet": ["web", "p1-alias"]}}})),
    );
    assert_eq!(r["cniVersion"], "1.0.0", "{r}");
    assert_eq!(r["ips"][0]["address"], "10.0.9.2/24", "{r}");
    assert_eq!(r["ips"][0]["interface"], 1, "{r}");
    assert_eq!(r["interfaces"][1]["name"], "eth0", "{r}");
    assert_eq!(r["interfaces"][1]["mac"], "02:42:0a:00:09:02", "{r}");
    assert_eq!(r["interfaces"][1]["sandbox"], path("p1").as_str(), "{r}");
    assert_eq!(r["dns"]["nameservers"], json!(["10.0.9.1"]), "{r}");
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(cni_veths(&n1), vec![host.clone()]);
    let link = ip(&["-n", &ns("p1"), "-o", "link", "show", "eth0"]);
    assert!(
        link.contains("mtu 1450") && link.contains("02:42:0a:00:09:02"),
        "{link}"
    );
    assert!(ip(&["-n", &ns("p1"), "-o", "-4", "addr", "show", "eth0"]).contains("10.0.9.2/24"));
    // An offload of p1's eth0 (read in its namespace).
    let p1_offload = |o| {
        vswitch::port::ethtool::offloads(Some(&ns("p1")), "eth0")
            .unwrap()
            .get(o)
    };
    use vswitch::port::ethtool::Offload;
    assert!(
        !p1_offload(Offload::TxChecksum),
        "TX checksum offload is still on in p1"
    );
    assert!(
        run.ctl_ok("n1", &["network", "inspect", "appnet"])
            .unwrap()
            .contains("p1")
    );
    ping_ok(&ns("p1"), "10.0.9.11"); // c11, same node
    ping_ok(&ns("p1"), "10.0.9.21"); // c21, on n2
    ping_ok(&run.lab.endpoint_netns("c21"), "10.0.9.2"); // back, from n2
    plugin.ok("CHECK", &path("p1"), "cid-p1", "", &conf(json!({})));

    // A TAP container.
    let r = plugin.ok(
        "ADD",
        &path("p2"),
        "cid-p2",
        "K8S_POD_NAME=p2",
        &conf(json!({"attach": "tap"})),
    );
    assert_eq!(r["ips"][0]["address"], "10.0.9.3/24", "{r}");
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 1, "{r}");
    ping_ok(&ns("p2"), "10.0.9.22");
    ping_ok(&ns("p2"), "10.0.9.2");

    // A reload of the file keeps the attachments (the desired state is the file plus them).
    let log = run.ctl_ok("n1", &["reload"]).unwrap();
    assert!(!log.contains("p1") && !log.contains("p2"), "{log}");
    ping_ok(&ns("p1"), "10.0.9.21");

    // p1 serves web through the VIP (rr over c12, c21, c22 and p1: four gets reach it).
    let servers: Vec<HttpServer> = ["c12", "c21", "c22"]
        .iter()
        .map(|c| HttpServer::start(&run.lab.endpoint_netns(c), 80, c).unwrap())
        .chain([HttpServer::start(&ns("p1"), 80, "p1").unwrap()])
        .collect();
    let vip = SocketAddr::from((Ipv4Addr::new(10, 0, 9, 100), 80));
    let answers: Vec<String> = (0..4)
        .map(|_| http_get(&run.lab.endpoint_netns("c11"), vip).unwrap())
        .collect();
    assert!(
        answers.iter().any(|a| a.contains("served by p1")),
        "{answers:?}"
    );
    assert!(http_get(&ns("p2"), vip).unwrap().contains("served by"));
    drop(servers);

    // Bad inputs: each a CNI error, nothing left behind.
    let inspect = run.ctl_ok("n1", &["network", "inspect", "appnet"]).unwrap();
    let saved = std::fs::read(&state).unwrap();
    let p3 = path("p3");
    let m = plugin.fails(
        "ADD",
        &p3,
        "cid-x",
        "eth0",
        &json!({"cniVersion": "1.0.0", "control": control}),
        7,
    );
    assert!(m.contains("\"network\""), "{m}");
    let m = plugin.fails(
        "ADD",
        &p3,
        "cid-x",
        "eth0",
        &conf(json!({"network": "nonet"})),
        7,
    );
    assert!(m.contains("nonet"), "{m}");
    plugin.fails("ADD", "", "cid-x", "eth0", &conf(json!({})), 4);
    plugin.fails(
        "ADD",
        "/run/netns/vxmesh-no-such-ns",
        "cid-x",
        "eth0",
        &conf(json!({})),
        4,
    );
    let m = plugin.fails(
        "ADD",
        "/proc/self/status",
        "cid-x",
        "eth0",
        &conf(json!({})),
        4,
    );
    assert!(m.contains("not a namespace"), "{m}");
    let m = plugin.fails(
        "ADD",
        "/proc/self/ns/uts",
        "cid-x",
        "eth0",
        &conf(json!({})),
        4,
    );
    assert!(m.contains("not a network namespace"), "{m}");
    let m = plugin.fails("ADD", &path("p1"), "cid-x", "eth0", &conf(json!({})), 101);
    assert!(m.contains("exists already"), "{m}");
    let m = plugin.fails(
        "ADD",
        &p3,
        "cid-x",
        "eth0",
        &conf(json!({"cniVersion": "0.3.1"})),
        1,
    );
    assert!(m.contains("0.3.1"), "{m}");
    plugin.fails("ADD", &path("p1"), "cid-p1", "eth0", &conf(json!({})), 103);
    // An IPAM plugin (host-local) whose range is outside the subnet: refused, and the address
    // given back to it (its data folder holds no address).
    let ipam_dir = std::env::temp_dir().join(format!("{prefix}ipam"));
    let _ipam_dir = RemoveDir(ipam_dir.clone());
    let host_local = |subnet: &str, start: &str, end: &str| {
        json!({"type": "host-local", "subnet": subnet, "rangeStart": start, "rangeEnd": end,
            "dataDir": ipam_dir})
    };
    let m = plugin.fails(
        "ADD",
        &p3,
        "cid-x",
        "eth0",
        &conf(json!({"ipam": host_local("10.0.55.0/24", "10.0.55.5", "10.0.55.6")})),
        7,
    );
    assert!(m.contains("10.0.55.5") && m.contains("subnet"), "{m}");
    assert_eq!(
        ipam_addresses(&ipam_dir.join("appnet")),
        Vec::<String>::new()
    );
    plugin.fails(
        "ADD",
        &p3,
        "cid-x",
        "eth0",
        &conf(json!({"ipam": {"type": "no-such-ipam"}})),
        7,
    );
    // A name that is an endpoint's already: refused before anything is made.
    let (code, v) = plugin.call(
        "ADD",
        &p3,
        "cid-x",
        "eth0",
        "K8S_POD_NAME=c21",
        &conf(json!({})),
    );
    assert_eq!((code, v["code"].as_u64()), (1, Some(100)), "{v}");
    assert_eq!(cni_veths(&n1), vec![host.clone()]);
    assert!(!ip(&["-n", &ns("p3"), "-o", "link"]).contains("eth0"));
    assert_eq!(
        run.ctl_ok("n1", &["network", "inspect", "appnet"]).unwrap(),
        inspect
    );
    assert_eq!(std::fs::read(&state).unwrap(), saved);
    // An exhausted subnet: n1's block of the /29 is .1-.3, .1 is its resolver.
    let tiny = conf(json!({"network": "tiny", "name": "tiny"}));
    let r = plugin.ok("ADD", &path("t1"), "cid-t1", "", &tiny);
    assert_eq!(r["ips"][0]["address"], "10.0.77.2/29");
    assert_eq!(r["dns"]["nameservers"], json!(["10.0.77.1"]));
    plugin.ok("ADD", &path("t2"), "cid-t2", "", &tiny);
    let m = plugin.fails("ADD", &path("t3"), "cid-t3", "eth0", &tiny, 102);
    assert!(m.contains("no free address"), "{m}");
    assert!(!ip(&["-n", &ns("t3"), "-o", "link"]).contains("eth0"));
    assert_eq!(cni_veths(&n1).len(), 3);
    // With an IPAM plugin the address is host-local's (its range: .4 of the /29); DEL gives
    // it back.
    let tiny_ipam = conf(json!({"network": "tiny", "name": "tiny",
        "ipam": host_local("10.0.77.0/29", "10.0.77.4", "10.0.77.4")}));
    let r = plugin.ok("ADD", &path("t3"), "cid-t3", "", &tiny_ipam);
    assert_eq!(r["ips"][0]["address"], "10.0.77.4/29", "{r}");
    assert!(ip(&["-n", &ns("t3"), "-o", "addr"]).contains("10.0.77.4/29"));
    assert_eq!(ipam_addresses(&ipam_dir.join("tiny")), ["10.0.77.4"]);
    ping_ok(&ns("t3"), "10.0.77.2");
    plugin.ok("CHECK", &path("t3"), "cid-t3", "", &tiny_ipam);
    plugin.ok("DEL", &path("t3"), "cid-t3", "", &tiny_ipam);
    assert_eq!(ipam_addresses(&ipam_dir.join("tiny")), Vec::<String>::new());
    assert_eq!(cni_veths(&n1).len(), 3);

    // The node restarts, now with --afxdp-offloads: the attachments come back, and p1 (AF_XDP,
    // its namespace under /run/netns) gets its TCP offloads back as a file endpoint would.
    run.stop_node("n1").unwrap();
    plugin.fails("STATUS", "", "", "", &conf(json!({})), 50);
    run.run_args = vec!["--afxdp-offloads".to_string()];
    run.start_node("n1").unwrap();
    plugin.ok("CHECK", &path("p1"), "cid-p1", "", &conf(json!({})));
    plugin.ok(
        "CHECK",
        &path("p2"),
        "cid-p2",
        "",
        &conf(json!({"attach": "tap"})),
    );
    ping_ok(&ns("p1"), "10.0.9.21");
    ping_ok(&ns("p2"), "10.0.9.21");
    assert!(
        p1_offload(Offload::Tso),
        "TSO not turned on in p1 by --afxdp-offloads"
    );

    // DEL: idempotent, frees the address.
    plugin.ok("DEL", &path("p1"), "cid-p1", "", &conf(json!({})));
    assert!(!cni_veths(&n1).contains(&host));
    assert!(!ip(&["-n", &ns("p1"), "-o", "link"]).contains("eth0"));
    assert!(
        !run.ctl_ok("n1", &["network", "inspect", "appnet"])
            .unwrap()
            .contains("p1-alias")
    );
    plugin.fails("CHECK", &path("p1"), "cid-p1", "eth0", &conf(json!({})), 3);
    plugin.ok("DEL", &path("p1"), "cid-p1", "", &conf(json!({})));
    plugin.ok("DEL", "", "cid-never", "", &conf(json!({})));
    plugin.ok(
        "DEL",
        "",
        "cid-never",
        "",
        &json!({"cniVersion": "1.0.0", "control": control}),
    );
    let r = plugin.ok(
        "ADD",
        &path("p3"),
        "cid-p3",
        "K8S_POD_NAME=p3",
        &conf(json!({})),
    );
    assert_eq!(
        r["ips"][0]["address"], "10.0.9.2/24",
        "the freed address is reused: {r}"
    );

    // GC: p2 is not listed, p3 is; tiny's attachments are another CNI network's.
    // A GC without the list of valid attachments is refused, not a removal of everything.
    plugin.fails("GC", "", "", "", &conf(json!({"cniVersion": "1.1.0"})), 7);
    plugin.ok("CHECK", &path("p2"), "cid-p2", "", &conf(json!({})));
    let gc = conf(json!({"cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": "cid-p3", "ifname": "eth0"}]}));
    plugin.ok("GC", "", "", "", &gc);
    plugin.fails("CHECK", &path("p2"), "cid-p2", "eth0", &conf(json!({})), 3);
    assert!(
        !ip(&["-n", &ns("p2"), "-o", "link"]).contains("eth0"),
        "p2's TAP is gone"
    );
    plugin.ok("CHECK", &path("p3"), "cid-p3", "", &conf(json!({})));
    for (p, cid, c) in [
        ("p3", "cid-p3", conf(json!({}))),
        ("t1", "cid-t1", tiny.clone()),
        ("t2", "cid-t2", tiny.clone()),
    ] {
        plugin.ok("DEL", &path(p), cid, "", &c);
    }
    assert!(cni_veths(&n1).is_empty());
    assert!(!Path::new(&state).exists(), "no attachments, no state file");
    assert_eq!(
        run.ctl_ok("n1", &["network", "inspect", "appnet"]).unwrap(),
        inspect_before
    );
    drop(extra);
}
