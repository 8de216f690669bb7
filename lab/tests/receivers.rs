//! Early drop for a receiver that cannot keep up (issue 20, part 3): two `vxmesh run` nodes in
//! a namespace lab; in c21 (AF_XDP, on n2) one UDP socket nobody reads and one that is read.
//! Datagrams from c11 (on n1) fill the first: n2's receiver watcher sees it full and the switch
//! drops the rest at its output step (`drop_receiver_full`), while the read socket, a ping and
//! the other containers are served as before. Once the socket is drained its gate opens again
//! and datagrams to it are delivered.
//!
//! Privileged: without root the test says so and passes. Namespaces carry a per-run prefix
//! (`vxr{pid}-`, `vxw{pid}-`) and are removed by name when `Running` drops, also when a check panics; the
//! sockets are the test's own (made in the containers' namespaces by its threads). Every wait is
//! bounded; nothing is asserted about time.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{Running, in_netns, vxmesh_exe};

const FULL_PORT: u16 = 5001;
const READ_PORT: u16 = 5002;
const C21: &str = "10.0.9.21";

/// A UDP socket bound to `port` in namespace `ns` (the socket stays there when moved out).
fn bind_in(ns: &str, port: u16) -> UdpSocket {
    in_netns(ns, move || UdpSocket::bind(("0.0.0.0", port)))
        .unwrap_or_else(|e| panic!("{e:#}"))
        .join()
        .expect("thread")
        .unwrap_or_else(|e| panic!("bind {port}: {e}"))
}

/// Three pings from namespace `ns` to `dst`, all answered (bounded by ping's own timeouts).
fn ping_ok(ns: &str, dst: &str) {
    let ping = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst,
        ])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
}

/// n2's output-step drops for full receivers (`drop_receiver_full`).
fn receiver_full_drops(run: &Running) -> u64 {
    run.stage_counter("n2", "output", "drop_receiver_full")
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Read what `s` holds now; how many datagrams.
fn drain(s: &UdpSocket) -> usize {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv(&mut buf).is_ok() {
        n += 1;
    }
    s.set_nonblocking(false).expect("blocking");
    n
}

/// Send `count` datagrams to c21:`port`, `pause` between them; then read what `rx` got, up to
/// `count`, each wait bounded.
fn paced(tx: &UdpSocket, rx: &UdpSocket, port: u16, count: usize) -> usize {
    for i in 0..count {
        let _ = tx.send_to(&(i as u32).to_be_bytes(), (C21, port));
        std::thread::sleep(Duration::from_millis(1));
    }
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < count && rx.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

#[test]
fn a_full_socket_is_gated_at_the_switch_and_opens_once_drained() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    let prefix = format!("vxr{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (c11, c21) = (run.lab.endpoint_netns("c11"), run.lab.endpoint_netns("c21"));
    let full = bind_in(&c21, FULL_PORT);
    let read = bind_in(&c21, READ_PORT);
    let tx = bind_in(&c11, 0);
    let gated = || receiver_full_drops(&run);
    assert_eq!(gated(), 0);

    // Fill the socket nobody reads, in bursts (the watcher samples between them), until the
    // switch drops for it; bounded.
    let mut bursts = 0;
    while gated() == 0 {
        assert!(
            bursts < 400,
            "no drop_receiver_full after {bursts} bursts of 500 datagrams\n{}",
            run.log_tail()
        );
        for _ in 0..500 {
            let _ = tx.send_to(&[0u8; 18], (C21, FULL_PORT));
        }
        std::thread::sleep(Duration::from_millis(5));
        bursts += 1;
    }
    eprintln!(
        "gated after {bursts} bursts; drop_receiver_full {}",
        gated()
    );
    // While it is gated: the other socket, a ping and the container itself are served.
    let before = gated();
    let got = paced(&tx, &read, READ_PORT, 100);
    assert!(got >= 90, "the read socket got {got} of 100");
    ping_ok(&c11, C21);
    // Still gated: more datagrams to the full socket are dropped at the switch.
    for _ in 0..200 {
        let _ = tx.send_to(&[0u8; 18], (C21, FULL_PORT));
    }
    wait(|| gated() > before, "drops for the full socket go on");

    // Drained, the gate opens: a datagram every 10 ms until one arrives (bounded), then a
    // paced hundred, all but a few delivered and none dropped at the switch.
    let queued = drain(&full);
    assert!(queued > 0, "the socket held datagrams");
    full.set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let mut tries = 0;
    loop {
        let _ = tx.send_to(&[1u8; 4], (C21, FULL_PORT));
        if full.recv(&mut buf).is_ok() {
            break;
        }
        tries += 1;
        assert!(tries < 300, "the gate never opened\n{}", run.log_tail());
    }
    drain(&full);
    let at_open = gated();
    let got = paced(&tx, &full, FULL_PORT, 100);
    assert!(got >= 90, "after draining the socket got {got} of 100");
    assert_eq!(gated(), at_open, "nothing dropped at the switch once open");

    // The watcher's own counters, on c21's port: it sampled, and closed the gate at least once.
    let counter = |node: &str, port: &str, name: &str| port_counter(&run, node, port, name);
    let samples = counter("n2", "c21", "receiver_samples");
    assert!(samples > 0);
    assert!(counter("n2", "c21", "receiver_gate_closed") >= 1);
    // c21 has two UDP sockets: after a dump, most samples looked them up instead.
    let dumps = counter("n2", "c21", "receiver_dumps");
    assert!(
        dumps >= 1 && dumps < samples,
        "{dumps} dumps in {samples} samples"
    );
    // Nobody sent UDP to c11: its port was never sampled.
    assert_eq!(counter("n1", "c11", "receiver_samples"), 0);
}

/// Port `port`'s driver counter `name` on `node` (`vxmesh stats --json`).
fn port_counter(run: &Running, node: &str, port: &str, name: &str) -> u64 {
    let out = run
        .ctl_ok(node, &["stats", "--json"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json");
    let p = v["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == port))
        .unwrap_or_else(|| panic!("no port {port}: {out}"));
    p["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} on {port}: {out}"))
}

/// A container on two networks has a port (and a gate) on each, and its sockets take datagrams
/// from both: the watcher samples the namespace once and gives both gates its decision. So a
/// socket found full through one network is throttled for datagrams that come through the
/// other at once, before that port's own traffic could have shown the watcher anything.
#[test]
fn a_container_on_two_networks_gets_one_decision_for_both_ports() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    // Not the other test's prefix: the two run at once.
    let prefix = format!("vxw{}-", std::process::id());
    let mut fx = Fixture::new(&prefix);
    fx.push(
        "network",
        r#"name = "net2"
vni = 4099
subnet = "10.0.11.0/24"
mtu = 1450"#,
    );
    for (name, node, ip, ns) in [
        ("c11b", "n1", "10.0.11.11", "c11"),
        ("c21b", "n2", "10.0.11.21", "c21"),
    ] {
        fx.push(
            "endpoint",
            &format!(
                "name = \"{name}\"\nnode = \"{node}\"\nnetwork = \"net2\"\nip = \"{ip}\"\nattach = \"afxdp:v{name}\"\nnetns = \"{{P}}{ns}\""
            ),
        );
    }
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let run = Running::start(&exe, &prefix, &fx.text(), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (c11, c21) = (run.lab.endpoint_netns("c11"), run.lab.endpoint_netns("c21"));
    assert_eq!(
        run.lab.endpoint_netns("c21b"),
        c21,
        "one container, two networks"
    );
    let full = bind_in(&c21, FULL_PORT);
    let tx = bind_in(&c11, 0);
    let gated = || receiver_full_drops(&run);
    // The second network answers (and c11 has c21b's MAC: no datagram waits for ARP below).
    ping_ok(&c11, "10.0.11.21");
    // Fill the socket through appnet only, in bursts, until the switch drops nearly a whole
    // burst for it (the share of a socket nobody reads has come down to nothing); bounded.
    let mut bursts = 0;
    loop {
        assert!(
            bursts < 400,
            "the switch never dropped 450 of a burst of 500 (in all {})\n{}",
            gated(),
            run.log_tail()
        );
        let before = gated();
        for _ in 0..500 {
            let _ = tx.send_to(&[0u8; 18], (C21, FULL_PORT));
        }
        std::thread::sleep(Duration::from_millis(5));
        bursts += 1;
        if gated() - before >= 450 {
            break;
        }
    }
    // Through net2 now, one burst: dropped at the switch by c21b's gate, which saw none of
    // the flood.
    let before = gated();
    for _ in 0..200 {
        let _ = tx.send_to(&[0u8; 18], ("10.0.11.21", FULL_PORT));
    }
    let counter = |port: &str, name: &str| port_counter(&run, "n2", port, name);
    for _ in 0..150 {
        if gated() >= before + 150 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gated() >= before + 150,
        "of 200 datagrams through the second network, {} dropped at the switch; c21b: {} samples, \
         {} closed, {} tx",
        gated() - before,
        counter("c21b", "receiver_samples"),
        counter("c21b", "receiver_gate_closed"),
        counter("c21b", "tx_packets"),
    );
    // Both ports show the namespace's samples, and that throttling began.
    for port in ["c21", "c21b"] {
        assert!(counter(port, "receiver_gate_closed") >= 1, "{port}");
        assert!(counter(port, "receiver_samples") > 0, "{port}");
    }
    drain(&full);
}

/// Wait until `cond` holds, polling every 20 ms, at most 3 s.
fn wait(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..150 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within the bound");
}
