//! AF_XDP ports on real veths, switched by the real L2 pipeline, in network namespaces: the
//! node's dataplane for two containers on one node, in generic (skb) and native (drv) XDP mode.
//!
//! ```text
//!  c11 (netns)                     node (netns): Switch (l2-parse, l2-learn, arp-proxy, l2-fwd)
//!  eth0 10.0.9.11/24 ══veth══ vc11 ─ XDP ─► AfxdpPort "c11" (1 queue) ──┐
//!                                                                       ├─ polled on a thread
//!  eth0 10.0.9.12/24 ══veth══ vc12 ─ XDP ─► AfxdpPort "c12" (2 queues) ─┘   in the node ns
//!  c12 (netns)
//! ```
//!
//! The c12 veth has two queues each way, so its port binds two sockets behind one epoll fd.
//! A third pass runs native mode with the veths' receive deferred (the kernel's interrupt
//! coalescing; the ports put the veths' settings back when they close).
//!
//! Needs root (CI runs as root); without it the test says why and returns. Needs `ip`
//! (iproute2) and `ping` (iputils-ping). Every namespace carries a per-run prefix (`vxa<pid>-`),
//! nothing is added to the root namespace, all traffic stays between the lab's namespaces, every
//! wait is bounded, no assertion is about time, and a guard deletes exactly the namespaces it
//! created (after stopping the switch and killing what it started), on failure too.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nslab::{has_tool, in_netns, ip, wait_for};
use vswitch::port::afxdp::{AfxdpConfig, AfxdpPort, DEFAULT_RX_RING, NAPI_DEFER_POLLS, XdpMode};
use vswitch::port::ethtool;
use vswitch::port::netns::NetnsSwitch;
use vswitch::worker::{self, PollConfig, Watched};
use vswitch::{Env, FdbConfig, Mac, Network, PortRole, Switch, SwitchStats, Time};

const VNI: u32 = 4097;
const MTU: u16 = 1450;
const PREFIX_LEN: u8 = 24;
const C11_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 11);
const C12_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 12);
const C11_MAC: &str = "02:42:0a:00:09:0b";
const C12_MAC: &str = "02:42:0a:00:09:0c";
/// The containers' interface name.
const CIF: &str = "eth0";
/// The host ends of the veths, in the node namespace.
const VC11: &str = "vc11";
const VC12: &str = "vc12";
/// Queues of each veth (both ends, both directions).
const VC11_QUEUES: usize = 1;
const VC12_QUEUES: usize = 2;
/// The switch thread stops by itself after this, whatever happens to the test.
const SWITCH_LIFETIME: Duration = Duration::from_secs(120);
/// Bound on every wait for something to happen.
const WAIT: Duration = nslab::WAIT;
/// How often the switch thread publishes its counters.
const STATS_EVERY: Duration = Duration::from_millis(20);
/// The switch thread's poll loop: it sleeps at the first empty round, at most 5 ms (its
/// housekeeping period: publishing counters, the lifetime check).
const POLL: PollConfig = PollConfig {
    busy_poll: Duration::ZERO,
    busy_poll_max: Duration::ZERO,
    housekeeping: Duration::from_millis(5),
};
/// Rounds the stopped switch polls at most, until [`QUIET_ROUNDS`] of them receive nothing.
const DRAIN_ROUNDS: usize = 100;
const QUIET_ROUNDS: usize = 3;
/// The receive deferral of the third pass (what `--afxdp-napi-defer-us 200` sets).
const NAPI_DEFER: Duration = Duration::from_micros(200);
/// ICMP echoes per ping check.
const PINGS: u32 = 3;
/// Largest ICMP payload of an IP packet of exactly the overlay MTU (20 IP + 8 ICMP).
const MAX_PING_PAYLOAD: u16 = MTU - 28;
/// Bytes sent each way in the TCP exchange.
const TCP_BYTES: usize = 4 * 1024 * 1024;
const TCP_PORT: u16 = 8080;
/// Environment variable that turns the helper test into the child process of the crash check.
const CHILD_ENV: &str = "VXMESH_AFXDP_CHILD";
/// The helper's name, to run it alone in the child.
const CHILD_TEST: &str = "child_process_holding_a_port";
/// What the child prints once its port is open.
const CHILD_READY: &str = "afxdp-child-ready";
/// The child exits by itself after this, if nobody kills it.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

/// The lab, removed by name when dropped (the switch first).
type Lab = nslab::SwitchLab<SwitchStats>;

fn new_lab() -> Lab {
    Lab::new(format!("vxa{}-", std::process::id()))
}

/// Pings from `from` to `to` that must all be answered.
fn ping(from: &str, to: Ipv4Addr, extra: &[&str]) {
    nslab::ping(from, to, PINGS, extra);
}

/// [`TCP_BYTES`] each way between a server in `server_ns` on `server_ip` and a client in
/// `client_ns`, every byte checked.
fn tcp_exchange(server_ns: &str, server_ip: Ipv4Addr, client_ns: &str) {
    nslab::tcp_exchange(
        server_ns,
        SocketAddrV4::new(server_ip, TCP_PORT),
        client_ns,
        TCP_BYTES,
    );
}

/// Whether an XDP program is attached to `ifname` in `ns`, as `ip -d link` shows it.
fn xdp_attached(ns: &str, ifname: &str) -> bool {
    let link = ip(&["-n", ns, "-d", "link", "show", ifname]);
    link.contains("xdp")
}

/// The node namespace and two containers, each with a veth: host end in the node, `eth0` in
/// the container, offloads off on the container side.
fn build(lab: &mut Lab) -> (String, String, String) {
    let node = lab.ns.add_netns("node");
    let c11 = lab.ns.add_netns("c11");
    let c12 = lab.ns.add_netns("c12");
    let mtu = MTU.to_string();
    for (c, host, addr, m, queues) in [
        (&c11, VC11, C11_IP, C11_MAC, VC11_QUEUES),
        (&c12, VC12, C12_IP, C12_MAC, VC12_QUEUES),
    ] {
        let q = queues.to_string();
        let qs = ["numtxqueues", &q, "numrxqueues", &q];
        let mut add = vec!["-n", &node, "link", "add", host];
        add.extend(qs);
        add.extend(["type", "veth", "peer", "name", CIF]);
        add.extend(qs);
        add.extend(["netns", c]);
        ip(&add);
        ip(&["-n", &node, "link", "set", host, "mtu", &mtu, "up"]);
        ip(&["-n", c, "link", "set", CIF, "address", m, "mtu", &mtu, "up"]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{addr}/{PREFIX_LEN}"),
            "dev",
            CIF,
        ]);
        ethtool::disable_offloads(Some(c), CIF).expect("offloads off on the container side");
        let off = ethtool::offloads(Some(c), CIF).unwrap();
        assert!(!off.tx_checksum && !off.tso && !off.gso, "{off:?}");
    }
    (node, c11, c12)
}

/// The vxmesh node: opens both ports in the node namespace in `mode`, switches until stopped.
fn start_switch(lab: &mut Lab, node: &str, mode: XdpMode, napi_defer: Duration) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let node = node.to_string();
    let worker = nslab::Worker::spawn(move |stop, snap| -> Result<SwitchStats, String> {
        // The node process lives in the node namespace: this thread does, until it ends (the
        // guard is dropped after the switch).
        let mut inside = None;
        let mut setup = || -> Result<Switch, String> {
            inside = Some(NetnsSwitch::enter(&node).map_err(|e| e.to_string())?);
            let cfg = |ifname| AfxdpConfig {
                napi_defer,
                ..AfxdpConfig::new(ifname, mode)
            };
            let p11 = AfxdpPort::open(&cfg(VC11)).map_err(|e| e.to_string())?;
            let p12 = AfxdpPort::open(&cfg(VC12)).map_err(|e| e.to_string())?;
            for (p, queues) in [(&p11, VC11_QUEUES), (&p12, VC12_QUEUES)] {
                // veths refuse zero-copy; drv mode works on them.
                let expect = if mode == XdpMode::Auto {
                    XdpMode::Drv
                } else {
                    mode
                };
                if p.mode() != expect
                    || p.zero_copy()
                    || p.queue_count() != queues
                    || p.napi_deferred() == napi_defer.is_zero()
                {
                    return Err(format!("unexpected port setup: {p:?}"));
                }
            }
            let mut env = Env::new(FdbConfig::default());
            let mut app = Network::new("appnet", VNI, MTU);
            app.arp.insert(C11_IP, mac(C11_MAC));
            app.arp.insert(C12_IP, mac(C12_MAC));
            let net = env.add_network(app);
            let (mut sw, l2) = Switch::with_l2(env);
            sw.add_port(
                "c11",
                Box::new(p11),
                PortRole::Local(net),
                l2.local_path(&[]),
            );
            sw.add_port(
                "c12",
                Box::new(p12),
                PortRole::Local(net),
                l2.local_path(&[]),
            );
            Ok(sw)
        };
        let sw = match setup() {
            Ok(sw) => sw,
            Err(e) => {
                let _ = ready_tx.send(Err(e.clone()));
                return Err(e);
            }
        };
        let _ = ready_tx.send(Ok(()));
        let mut work = Watched::new(sw, stop, snap, STATS_EVERY, SWITCH_LIFETIME);
        worker::run(&mut work, None, stop, POLL);
        let mut sw = work.sw;
        // A few quiet rounds, so frames of the last kicks come back through the completion
        // rings before the frame accounting is read.
        let mut quiet = 0;
        for _ in 0..DRAIN_ROUNDS {
            if sw.poll(Time::monotonic()) == 0 {
                quiet += 1;
                if quiet == QUIET_ROUNDS {
                    break;
                }
            }
        }
        Ok(sw.stats())
        // The switch drops here with its ports: the XDP links close and the programs detach.
    });
    lab.switch = Some(worker);
    match ready_rx.recv_timeout(WAIT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the switch did not start in {mode:?} mode: {e}"),
        Err(e) => panic!("the switch did not start in {mode:?} mode: {e}"),
    }
}

fn counter(stats: &SwitchStats, port: &str, name: &str) -> u64 {
    let p = stats
        .ports
        .iter()
        .find(|p| p.name == port)
        .unwrap_or_else(|| panic!("no port {port}"));
    p.port
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("port {port} has no counter {name}: {:?}", p.port))
}

/// A veth's NAPI deferral in the node namespace: `napi_defer_hard_irqs`, `gro_flush_timeout`.
fn napi_deferral(node: &str, ifname: &str) -> (String, String) {
    let read = |file: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", node, "cat"])
            .arg(format!("/sys/class/net/{ifname}/{file}"))
            .output()
            .expect("ip netns exec cat");
        assert!(out.status.success(), "{ifname} {file}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    (read("napi_defer_hard_irqs"), read("gro_flush_timeout"))
}

/// One mode end to end: ping both ways (small and MTU-sized), TCP both ways, counters, and no
/// program left on the veths once the ports are gone. With `napi_defer`, the veths' receive is
/// deferred while the ports are open (every ping and segment above waited for the kernel's
/// timer whenever it held the veth's NAPI) and put back after.
fn exercise(lab: &mut Lab, node: &str, c11: &str, c12: &str, mode: XdpMode, napi_defer: Duration) {
    let before: Vec<_> = [VC11, VC12]
        .iter()
        .map(|i| napi_deferral(node, i))
        .collect();
    start_switch(lab, node, mode, napi_defer);
    for ifname in [VC11, VC12] {
        assert!(
            xdp_attached(node, ifname),
            "{ifname}: no XDP program while open"
        );
        let want = if napi_defer.is_zero() {
            ("0".to_string(), "0".to_string())
        } else {
            (
                NAPI_DEFER_POLLS.to_string(),
                napi_defer.as_nanos().to_string(),
            )
        };
        assert_eq!(napi_deferral(node, ifname), want, "{ifname} ({mode:?})");
    }
    ping(c11, C12_IP, &[]);
    ping(c12, C11_IP, &[]);
    let size = MAX_PING_PAYLOAD.to_string();
    ping(c11, C12_IP, &["-s", &size, "-M", "do"]);
    tcp_exchange(c12, C12_IP, c11);
    tcp_exchange(c11, C11_IP, c12);
    assert!(lab.stats().port("c11").is_some());
    let st = lab.stop_switch();

    for port in ["c11", "c12"] {
        let sw = st.port(port).unwrap();
        // Each side received the other's 4 MiB in frames of at most one MTU.
        let min_frames = (TCP_BYTES / MTU as usize) as u64;
        assert!(sw.rx_packets > min_frames, "{port} ({mode:?}): {sw:?}");
        assert!(sw.tx_packets > min_frames, "{port} ({mode:?}): {sw:?}");
        let counters = &st.ports.iter().find(|p| p.name == port).unwrap().port;
        assert_eq!(sw.tx_dropped, 0, "{port} ({mode:?}): {sw:?} {counters:?}");
        assert_eq!(counter(&st, port, "rx_packets"), sw.rx_packets);
        assert_eq!(counter(&st, port, "tx_packets"), sw.tx_packets);
        for zero in [
            "rx_oversize",
            "rx_invalid_desc",
            "tx_oversize",
            "tx_ring_full",
            "tx_kick_errors",
            "tx_packet_errors",
            "tx_packet_would_block",
            "rx_invalid_descs_kernel",
            "tx_invalid_descs_kernel",
            "umem_foreign_addrs",
        ] {
            assert_eq!(counter(&st, port, zero), 0, "{port} ({mode:?}) {zero}");
        }
        // Copy mode kicks every transmit batch.
        assert!(counter(&st, port, "tx_kicks") > 0);
        // 4 MiB of TCP: in-order segments of the stream met in a batch and went to the
        // container merged, through the packet socket (afxdp_super.rs checks what arrives).
        assert!(counter(&st, port, "tx_gro_frames") > 0, "{port} ({mode:?})");
        // Every frame is back: the fill rings full again, nothing left lent for transmit.
        let queues = if port == "c11" {
            VC11_QUEUES
        } else {
            VC12_QUEUES
        };
        assert_eq!(counter(&st, port, "umem_frames_tx"), 0, "{port} ({mode:?})");
        assert_eq!(
            counter(&st, port, "umem_frames_rx"),
            u64::from(DEFAULT_RX_RING) * queues as u64,
            "{port} ({mode:?})"
        );
    }
    for s in &st.stages {
        assert_eq!(s.drop_unnamed, 0, "{}", s.name);
    }
    // The switch dropped its ports: the links are closed, no program is left, and the veths'
    // receive is the kernel's again.
    let after: Vec<_> = [VC11, VC12]
        .iter()
        .map(|i| napi_deferral(node, i))
        .collect();
    assert_eq!(after, before, "NAPI deferral put back ({mode:?})");
    for ifname in [VC11, VC12] {
        assert!(
            !xdp_attached(node, ifname),
            "{ifname}: XDP program left after the port closed ({mode:?})"
        );
    }
}

/// A child process opens a port and is killed: the kernel detaches its program, and the next
/// open of the same interface (bind retried while the queue is still busy) works.
fn killed_process_leaves_nothing(lab: &mut Lab, node: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{node}/{VC11}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the child");
    let stdout = child.stdout.take().unwrap();
    let pid = child.id() as libc::pid_t;
    lab.ns.adopt("child", child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(CHILD_READY) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(WAIT).expect("the child opened its port");
    assert!(xdp_attached(node, VC11), "the child's program is attached");
    // SAFETY: kill(2) on our own child, not yet reaped (the lab holds it).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let child = lab.ns.child("child").unwrap();
    let status = child.wait().expect("reaping the child");
    assert!(!status.success());
    // The kernel detaches when it closes the dead process's link fd, before the reap; the
    // bounded wait only keeps the check independent of that detail.
    wait_for("the killed process's XDP program to go", || {
        !xdp_attached(node, VC11)
    });
    // Open again at once, as a restarted node would.
    let node = node.to_string();
    let port = in_netns(&node, || {
        AfxdpPort::open(&AfxdpConfig::new(VC11, XdpMode::Skb)).map(|p| p.stats())
    })
    .join()
    .unwrap()
    .unwrap();
    let st = port.expect("reopening right after the killed process");
    eprintln!(
        "afxdp: reopened {VC11} after a kill with {} busy bind(s)",
        st.bind_busy_retries
    );
}

/// Not a test on its own: the child process of [`killed_process_leaves_nothing`]. Without its
/// environment variable it does nothing.
#[test]
fn child_process_holding_a_port() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (ns, ifname) = spec.split_once('/').expect("NS/IF");
    let _inside = NetnsSwitch::enter(ns).expect("entering the node namespace");
    let _port = AfxdpPort::open(&AfxdpConfig::new(ifname, XdpMode::Drv)).expect("child's port");
    println!("{CHILD_READY}");
    std::io::stdout().flush().unwrap();
    thread::sleep(CHILD_LIFETIME);
}

#[test]
fn two_containers_through_afxdp_ports_in_skb_and_drv_mode() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping afxdp: it builds network namespaces, veths and XDP programs (root)");
        return;
    }
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for tool in ["ip", "ping"] {
        assert!(
            has_tool(tool),
            "the afxdp test needs `{tool}` (Debian packages: iproute2 iputils-ping)"
        );
    }
    let mut lab = new_lab();
    let root_before = ip(&["-o", "link"]);
    let (node, c11, c12) = build(&mut lab);
    for ifname in [VC11, VC12] {
        assert!(!xdp_attached(&node, ifname));
    }
    let off = Duration::ZERO;
    exercise(&mut lab, &node, &c11, &c12, XdpMode::Skb, off);
    exercise(&mut lab, &node, &c11, &c12, XdpMode::Drv, off);
    exercise(&mut lab, &node, &c11, &c12, XdpMode::Drv, NAPI_DEFER);
    killed_process_leaves_nothing(&mut lab, &node);
    let root_after = ip(&["-o", "link"]);
    let ours: Vec<&str> = root_after
        .lines()
        .filter(|l| !root_before.contains(l))
        .filter(|l| [VC11, VC12, &lab.ns.prefix].iter().any(|n| l.contains(n)))
        .collect();
    assert!(ours.is_empty(), "links in the root namespace: {ours:?}");
}

/// Throughput figure, not a check: a 64-byte UDP flood from c11 to c12 through the switch, for
/// each mode, and native mode with the receive deferred. Run with `cargo test --release -p vswitch --test afxdp -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run on demand"]
fn udp_flood_packets_per_second() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root");
        return;
    }
    /// UDP payload of a 64-byte frame (60 without the FCS: 14 + 20 + 8 + 18).
    const PAYLOAD: usize = 18;
    const FLOOD: Duration = Duration::from_secs(3);
    let mut lab = new_lab();
    let (node, c11, c12) = build(&mut lab);
    // Nobody listens in c12: the frames are counted on its eth0 and dropped by its stack.
    for (mode, defer) in [
        (XdpMode::Skb, Duration::ZERO),
        (XdpMode::Drv, Duration::ZERO),
        (XdpMode::Drv, NAPI_DEFER),
    ] {
        start_switch(&mut lab, &node, mode, defer);
        ping(&c11, C12_IP, &[]);
        let before = lab.stats();
        let rx_before = eth0_rx_packets(&c12);
        let sent = in_netns(&c11, move || {
            let s = UdpSocket::bind((C11_IP, 0)).unwrap();
            s.connect((C12_IP, 9)).unwrap();
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < FLOOD {
                for _ in 0..256 {
                    if s.send(&[0u8; PAYLOAD]).is_ok() {
                        n += 1;
                    }
                }
            }
            (n, start.elapsed())
        })
        .join()
        .unwrap()
        .unwrap();
        thread::sleep(Duration::from_millis(200));
        let after = lab.stats();
        let rx_after = eth0_rx_packets(&c12);
        lab.stop_switch();
        let secs = sent.1.as_secs_f64();
        let sw_rx = after.port("c11").unwrap().rx_packets - before.port("c11").unwrap().rx_packets;
        let sw_tx = after.port("c12").unwrap().tx_packets - before.port("c12").unwrap().tx_packets;
        let dropped = |name| counter(&after, "c11", name) - counter(&before, "c11", name);
        eprintln!(
            "afxdp {mode:?}{}: sent {:.0} pps, switch rx {:.0} pps, switch tx {:.0} pps, \
             delivered to c12 eth0 {:.0} pps (over {secs:.1} s); c11 kernel drops: \
             rx_dropped {} rx_ring_full {} fill_ring_empty {}",
            if defer.is_zero() {
                ""
            } else {
                " receive deferred"
            },
            sent.0 as f64 / secs,
            sw_rx as f64 / secs,
            sw_tx as f64 / secs,
            (rx_after - rx_before) as f64 / secs,
            dropped("rx_dropped_kernel"),
            dropped("rx_ring_full_kernel"),
            dropped("fill_ring_empty"),
        );
    }
}

/// Packets received on `eth0` in `ns`.
fn eth0_rx_packets(ns: &str) -> u64 {
    let out = ip(&["-n", ns, "-s", "-o", "link", "show", CIF]);
    // "... RX: bytes packets errors ...\    123 456 ..."
    let after = out.split("RX:").nth(1).expect("RX counters");
    let nums: Vec<u64> = after
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter_map(|w| w.parse().ok())
        .collect();
    nums.get(1).copied().expect("RX packets")
}
