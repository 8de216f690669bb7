//! The lab (`vxmesh_lab::lab`): the namespaces a cluster file describes, built and removed for real.
//!
//! Privileged: without root the tests say so and pass. Everything happens inside namespaces
//! named with a per-run prefix (`vxl{pid}-`); a guard removes them also when a check panics.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use vxmesh::config::Cluster;
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::lab::Lab;

/// The shared fixture as this file's tests build it: c22 without `attach` (a node that does not
/// run vxmesh: the lab leaves its veth for whoever runs the node), and only n1's ingress.
fn fixture(prefix: &str) -> Fixture {
    let mut f = Fixture::new(prefix);
    f.unset("endpoint", "c22", "attach").remove("ingress", "n2");
    f
}

/// Write `text` to a file of its own and load it.
fn load(tag: &str, text: &str) -> (Cluster, TempFile) {
    let path = std::env::temp_dir().join(format!("vxl{}-{tag}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let file = TempFile(path);
    let cluster = Cluster::load(&file.0).unwrap_or_else(|e| panic!("{e}"));
    (cluster, file)
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes the lab when dropped, also on panic.
struct Guard(Lab);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.0.down() {
            eprintln!("cleanup: {e:#}");
        }
    }
}

fn netns_list() -> HashSet<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Names of the root namespace's links.
fn root_links() -> HashSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .collect()
}

/// `ip -n NS ARGS`, which must succeed; its stdout.
fn ip(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_link(ns: &str, ifname: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", "dev", ifname])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// TX checksum, TSO and GSO of `ifname` in `ns`, read back through `SIOCETHTOOL`.
fn offloads(ns: &str, ifname: &str) -> vswitch::port::ethtool::Offloads {
    vswitch::port::ethtool::offloads(Some(ns), ifname).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn names_and_addresses_follow_the_file() {
    let pid = std::process::id();
    let p = format!("vxl{pid}-");
    let (cluster, _f) = load("names", &fixture(&p).text());
    let lab = Lab::new(&cluster, &p);
    assert_eq!(lab.node_netns("n1"), format!("{p}n1"));
    assert_eq!(lab.client_netns("n1"), format!("{p}x-n1"));
    assert_eq!(lab.underlay_netns(), format!("{p}ul"));
    assert_eq!(lab.endpoint_netns("c11"), format!("vxl{pid}-c11"));
    assert_eq!(lab.client_addr("n1"), Some(Ipv4Addr::new(192, 0, 2, 254)));
    assert_eq!(lab.client_addr("n2"), None);
    let want: Vec<String> = ["ul", "n1", "n2", "c11", "c12", "c21", "c22", "x-n1"]
        .iter()
        .map(|s| format!("{p}{s}"))
        .collect();
    assert_eq!(lab.namespaces(), want);
    let d = lab.describe();
    assert!(
        d.contains(&format!(
            "ip netns exec {p}n1 vxmesh run --config {} --node n1",
            cluster.path.display()
        )),
        "{d}"
    );
    assert!(d.contains("192.0.2.254/24"), "{d}");

    // An ingress at the top of the subnet pushes the client below it; the client of a tap
    // ingress does not exist.
    let text = fixture(&p)
        .set("ingress", "n1", "ip", "192.0.2.254/24")
        .push(
            "ingress",
            "node = \"n2\"\nattach = \"tap:ext0\"\nip = \"192.0.2.253/24\"",
        )
        .text();
    let (cluster, _f2) = load("names2", &text);
    let lab = Lab::new(&cluster, &p);
    assert_eq!(lab.client_addr("n1"), Some(Ipv4Addr::new(192, 0, 2, 252)));
    assert_eq!(lab.client_addr("n2"), None);
    assert!(!lab.namespaces().contains(&format!("{p}x-n2")));

    // A TAP endpoint without `netns` lives where the node creates it: in the node's namespace.
    // The lab makes no namespace of its own for it.
    let text = fixture(&p).unset("endpoint", "c12", "netns").text();
    let (cluster, _f3) = load("names3", &text);
    let lab = Lab::new(&cluster, &p);
    assert_eq!(lab.endpoint_netns("c12"), format!("{p}n1"));
    assert!(!lab.namespaces().contains(&format!("{p}c12")));
    let d = lab.describe();
    let line = d.lines().find(|l| l.contains("endpoint c12:")).unwrap();
    assert!(line.trim_start().starts_with(&format!("{p}n1 ")), "{d}");
}

#[test]
fn up_builds_the_topology_and_down_removes_exactly_it() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (network namespaces)");
        return;
    }
    let pid = std::process::id();
    let p = format!("vxl{pid}-");
    let (cluster, _f) = load("lab", &fixture(&p).text());
    let root_before = root_links();
    let lab = Guard(Lab::new(&cluster, &p));
    let lab = &lab.0;
    lab.up().unwrap_or_else(|e| panic!("up: {e:#}"));
    println!("{}", lab.describe());

    let present = netns_list();
    for ns in lab.namespaces() {
        assert!(present.contains(&ns), "namespace {ns} missing");
    }
    let (n1, n2, ul) = (
        lab.node_netns("n1"),
        lab.node_netns("n2"),
        lab.underlay_netns(),
    );

    // The underlay: n1 reaches n2 through the bridge in ul.
    let ping = Command::new("ip")
        .args(["netns", "exec", &n1, "ping", "-c1", "-W1", "198.18.0.2"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert!(ip(&n1, &["-o", "addr", "show", "dev", "ul0"]).contains("198.18.0.1/24"));
    assert!(ip(&n1, &["link", "show", "dev", "ul0"]).contains("mtu 1500"));
    assert!(ip(&ul, &["-d", "link", "show", "type", "bridge"]).contains("br0"));

    // c11: eth0 with its address, Docker's default MAC and the network's MTU; vc11 in n1.
    let c11 = lab.endpoint_netns("c11");
    assert!(ip(&c11, &["-o", "addr", "show", "dev", "eth0"]).contains("10.0.9.11/24"));
    let link = ip(&c11, &["link", "show", "dev", "eth0"]);
    assert!(link.contains("link/ether 02:42:0a:00:09:0b"), "{link}");
    assert!(
        link.contains("mtu 1450") && link.contains("state UP"),
        "{link}"
    );
    let host = ip(&n1, &["link", "show", "dev", "vc11"]);
    assert!(host.contains("mtu 1450"), "{host}");
    assert!(!ip(&n1, &["-o", "addr", "show", "dev", "vc11"]).contains("inet "));
    let off = vswitch::port::ethtool::Offloads::default();
    assert_eq!(offloads(&c11, "eth0"), off, "offloads on c11's eth0");

    // c12 (tap:eth0): only the namespace; the node makes the TAP.
    let c12 = lab.endpoint_netns("c12");
    assert!(!has_link(&c12, "eth0") && !has_link(&n1, "eth0"));
    // c21 (afxdp) and c22 (no attach: host side v{name}).
    assert!(has_link(&n2, "vc21") && has_link(&n2, "vc22"));
    assert!(
        ip(
            &lab.endpoint_netns("c22"),
            &["-o", "addr", "show", "dev", "eth0"]
        )
        .contains("10.0.9.22/24")
    );

    // The ingress: ext0 in n1 without an address, the client at 192.0.2.254 with offloads off.
    let x = lab.client_netns("n1");
    assert!(has_link(&n1, "ext0"));
    assert!(!ip(&n1, &["-o", "addr", "show", "dev", "ext0"]).contains("inet "));
    assert!(ip(&x, &["-o", "addr", "show", "dev", "eth0"]).contains("192.0.2.254/24"));
    assert_eq!(offloads(&x, "eth0"), off, "offloads on the client's eth0");
    assert!(
        offloads(&n1, "ext0").tx_checksum,
        "the node side was left alone"
    );

    // No bridge in the nodes; no IPv6 anywhere; lo up everywhere.
    for n in [&n1, &n2] {
        assert_eq!(
            ip(n, &["-d", "link", "show", "type", "bridge"]).trim(),
            "",
            "bridge in {n}"
        );
    }
    for ns in lab.namespaces() {
        let v6 = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "cat",
                "/proc/sys/net/ipv6/conf/all/disable_ipv6",
            ])
            .output()
            .unwrap();
        if v6.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&v6.stdout).trim(),
                "1",
                "IPv6 on in {ns}"
            );
        }
        assert!(
            !ip(&ns, &["-6", "-o", "addr"]).contains("inet6"),
            "IPv6 address in {ns}"
        );
        assert!(
            ip(&ns, &["link", "show", "dev", "lo"]).contains("UP"),
            "lo down in {ns}"
        );
    }

    // Each container namespace names its network's resolver, seen as /etc/resolv.conf inside.
    for e in ["c11", "c12", "c21", "c22"] {
        let ns = lab.endpoint_netns(e);
        let o = Command::new("ip")
            .args(["netns", "exec", &ns, "cat", "/etc/resolv.conf"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("nameserver 10.0.9.1\n"), "{e}: {text}");
    }
    assert_eq!(lab.resolv_conf(&n1), None);
    let c11_conf = lab.resolv_conf(&c11).unwrap();

    // Nothing of ours in the root namespace.
    let ours = [
        "br0", "ul0", "n0", "n1", "vc11", "vc21", "vc22", "ext0", "eth0",
    ];
    for name in root_links().difference(&root_before) {
        assert!(
            !ours.contains(&name.as_str()),
            "{name} appeared in the root namespace"
        );
    }

    // A second up is refused, naming the namespace, and leaves the lab alone.
    let err = format!("{:#}", lab.up().unwrap_err());
    assert!(
        err.contains(&format!("{p}ul")) && err.contains("already exists"),
        "{err}"
    );
    assert!(netns_list().contains(&n1));

    // down stops what runs inside and removes every namespace; a second down is fine.
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &c11, "sleep", "30"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while Command::new("ip")
        .args(["netns", "pids", &c11])
        .output()
        .unwrap()
        .stdout
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sleep never entered {c11}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    lab.down().unwrap_or_else(|e| panic!("down: {e:#}"));
    let status = wait_child(&mut sleeper, Duration::from_secs(3));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the process in {c11} survived down"
    );
    let present = netns_list();
    for ns in lab.namespaces() {
        assert!(!present.contains(&ns), "namespace {ns} left behind");
    }
    assert!(!c11_conf.exists() && !c11_conf.parent().unwrap().exists());
    lab.down().unwrap_or_else(|e| panic!("second down: {e:#}"));
}

#[test]
fn a_failed_up_removes_what_it_created() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (network namespaces)");
        return;
    }
    let pid = std::process::id();
    // An endpoint attached as "ul0" collides with the node's underlay interface: the file is
    // valid, the lab cannot be built.
    let p = format!("vxl{pid}f-");
    let text = fixture(&p)
        .set("endpoint", "c21", "attach", "afxdp:ul0")
        .text();
    let (cluster, _f) = load("fail", &text);
    let lab = Guard(Lab::new(&cluster, &p));
    let lab = &lab.0;
    let err = format!("{:#}", lab.up().unwrap_err());
    eprintln!("the failed up said: {err}");
    assert!(err.contains("ul0") && err.contains("ip -n"), "{err}");
    let present = netns_list();
    for ns in lab.namespaces() {
        assert!(
            !present.contains(&ns),
            "namespace {ns} left behind after a failed up"
        );
    }
}

fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
