//! One frame traced stage by stage through the real pipeline, no root, the way `vxmesh trace`
//! does it: arm the tracer in `Env` with a filter, let the frame through, drain the records and
//! print them as the command prints them (`vxmesh::show::trace`). The frame is a TCP SYN from
//! container c11 to a VIP whose backend lives on another node, so it meets every kind of stage:
//! the L2 stages, `lb-nat` (DNAT to the backend), `l2-fwd` (a remote VTEP) and `vxlan-encap`.

use std::net::Ipv4Addr;

use lb::{BackendConfig, Balancer, BalancerConfig, LbStage, Protocol, SchedulerKind};
use lb::{ServiceConfig, ServiceKey};
use vswitch::frames::{self, TcpFlags};
use vswitch::trace::{Summary, TraceFilter};
use vswitch::{Env, FdbConfig, FdbDest, Mac, MemHandle, MemPort, Network, Next, PortRole};
use vswitch::{Switch, Time};
use vxlan::{ENCAP_LEN, VxlanDecap, VxlanEncap};

const VIP: Ipv4Addr = ip(100);
const C11: Ipv4Addr = ip(11);
const C21: Ipv4Addr = ip(21);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const FILTER: &str = "tcp port 80";

const fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

/// Node n1: c11 on a local port; the service VIP:80 whose one backend, c21:8080, is on node n2
/// behind the underlay port. Returns the switch and the handles of c11's and the underlay's port.
fn node() -> (Switch, MemHandle, MemHandle) {
    let mut env = Env::new(FdbConfig::default());
    let mut net = Network::new("appnet", 4097, 1450);
    for a in [C11, C21, VIP] {
        net.arp.insert(a, Mac::docker_default(a));
    }
    let app = env.add_network(net);
    let n2 = env.add_vtep(N2, "n2");
    env.nets[app.0 as usize].peers.push(n2);
    let c21 = Mac::docker_default(C21);
    env.fdb
        .add_static(app, c21, FdbDest::Remote(n2))
        .expect("fdb");
    let mut balancer = Balancer::new(BalancerConfig::default());
    let key = ServiceKey {
        net: app,
        proto: Protocol::Tcp,
        addr: VIP,
        port: 80,
    };
    let svc = ServiceConfig {
        key,
        scheduler: SchedulerKind::Rr,
        backend_net: app,
        snat: None,
    };
    balancer.add_service(svc).expect("service");
    let backend = BackendConfig {
        addr: C21,
        port: 8080,
        weight: 1,
        mac: c21,
    };
    balancer.add_backend(&key, backend).expect("backend");
    let (mut sw, l2) = Switch::with_l2(env);
    let lb = sw.add_stage(LbStage::new(balancer));
    let decap = sw.add_stage(VxlanDecap::new());
    let (port, c11) = MemPort::new();
    let path = l2.local_path(&[lb.idx()]);
    sw.add_port("c11", Box::new(port), PortRole::Local(app), path);
    let (port, underlay) = MemPort::new();
    let path = vec![
        decap.idx(),
        l2.parse.idx(),
        l2.learn.idx(),
        lb.idx(),
        l2.fwd.idx(),
    ];
    let ul = sw.add_port("underlay", Box::new(port), PortRole::Underlay, path);
    let encap = sw.add_stage(VxlanEncap::new());
    sw.set_tx_path(ul, vec![encap.idx()]);
    (sw, c11, underlay)
}

fn main() {
    let (mut sw, c11, underlay) = node();
    let (m11, vmac) = (Mac::docker_default(C11), Mac::docker_default(VIP));
    let syn = frames::tcp(m11, vmac, C11, VIP, 40000, 80, TcpFlags::SYN, 1, 0, b"");
    c11.inject(&syn);
    sw.env
        .tracer
        .arm(1, TraceFilter::parse(FILTER).expect("filter"));
    sw.poll(Time::from_secs(1));
    let recs = sw.env.tracer.drain();

    println!(
        "c11 ({C11}) sends a SYN to the VIP {VIP}:80; its one backend is c21 ({C21}:8080) on n2"
    );
    println!("\n$ vxmesh trace --count 1 --filter '{FILTER}'");
    print!("{}", vxmesh::show::trace(&sw, &recs));

    let stages: Vec<&str> = recs.iter().map(|r| r.stage).collect();
    let want = [
        "rx",
        "l2-parse",
        "l2-learn",
        "arp-proxy",
        "lb-nat",
        "l2-fwd",
        "output",
        "vxlan-encap",
    ];
    assert_eq!(
        stages, want,
        "one packet, every stage of its path, in order"
    );
    assert!(
        recs.iter().all(|r| r.id == recs[0].id && r.drop.is_none()),
        "{recs:?}"
    );
    let at = |stage: &str| recs.iter().find(|r| r.stage == stage).expect("a record");
    assert!(
        at("lb-nat").detail.contains("10.0.9.21:8080"),
        "lb-nat chose c21"
    );
    let remote =
        matches!(at("l2-fwd").next, Next::Remote(v) if sw.env.vteps[v.0 as usize].addr == N2);
    assert!(remote, "l2-fwd sends it to n2's VTEP");
    // On the underlay's transmit path, vxlan-encap leaves the packet undecided for the stages
    // after it (the port sends what is left), and says where it encapsulated it to.
    let encap = at("vxlan-encap");
    assert!(
        encap.next == Next::Continue && encap.detail.contains("to vtep 198.18.0.2"),
        "and it is encapsulated to n2"
    );

    // What the trace says is what happened: one datagram on the underlay, the SYN inside it
    // rewritten to the backend.
    let sent = underlay.take_tx();
    assert_eq!(sent.len(), 1, "one frame on the underlay");
    let inner = Summary::of(&sent[0][ENCAP_LEN..]);
    println!("\non the underlay, inside VXLAN to {N2}: {inner}");
    assert_eq!(
        (inner.dst_ip, inner.ports),
        (Some(C21), Some((40000, 8080)))
    );
    assert!(c11.take_tx().is_empty(), "nothing back to c11");
}
