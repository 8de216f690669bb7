//! A VIP load-balancing six TCP connections round robin, no root: client c11 opens six
//! connections to 10.0.9.100:80 (six source ports, a whole handshake each), and the real
//! pipeline's `lb-nat` stage sends them to backends c12, c13 and c14 in turn (DNAT to port 8080;
//! replies leave with the VIP as their source). Prints each connection, the conntrack table (as
//! `vxmesh conntrack show`) and the per-backend counts, asserting them all.

use std::net::Ipv4Addr;

use lb::{BackendConfig, Balancer, BalancerConfig, LbStage, Protocol, SchedulerKind};
use lb::{ServiceConfig, ServiceKey};
use smoltcp::wire::IpAddress::Ipv4 as V4;
use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
use vswitch::frames::{self, TcpFlags};
use vswitch::{Env, FdbConfig, FdbDest, Mac, MemHandle, MemPort, Network, PortRole};
use vswitch::{StageHandle, Switch, Time};

const VIP: Ipv4Addr = ip(100);
const CLIENT: Ipv4Addr = ip(11);
const BACKENDS: [Ipv4Addr; 3] = [ip(12), ip(13), ip(14)];
const TARGET_PORT: u16 = 8080;
const NOW: Time = Time::from_secs(10);

const fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}
fn mac(a: Ipv4Addr) -> Mac {
    Mac::docker_default(a)
}

/// One switch: the client on port 0, the backends on ports 1..=3, `lb-nat` on every port's path.
struct Lab {
    sw: Switch,
    lb: StageHandle<LbStage>,
    ports: Vec<MemHandle>,
}

/// The switch with the service VIP:80 (TCP, round robin) over the three backends.
fn lab() -> Lab {
    let mut env = Env::new(FdbConfig::default());
    let net = Network::new("appnet", 4097, 1450);
    let app = env.add_network(net);
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
    for addr in BACKENDS {
        let b = BackendConfig {
            addr,
            port: TARGET_PORT,
            weight: 1,
            mac: mac(addr),
        };
        balancer.add_backend(&key, b).expect("backend");
    }
    let (mut sw, l2) = Switch::with_l2(env);
    let lb = sw.add_stage(LbStage::new(balancer));
    let mut ports = Vec::new();
    for a in [CLIENT].into_iter().chain(BACKENDS) {
        let (port, handle) = MemPort::new();
        let (name, path) = (format!("c{}", a.octets()[3]), l2.local_path(&[lb.idx()]));
        let id = sw.add_port(name, Box::new(port), PortRole::Local(app), path);
        let dest = FdbDest::Local(id);
        sw.env.fdb.add_static(app, mac(a), dest).expect("fdb");
        ports.push(handle);
    }
    Lab { sw, lb, ports }
}

/// Send `frame` from port `from`; the one frame that comes out, and the port it left on.
fn send(lab: &mut Lab, from: usize, frame: &[u8]) -> (usize, Vec<u8>) {
    lab.ports[from].inject(frame);
    lab.sw.poll(NOW);
    let mut out = Vec::new();
    for (i, h) in lab.ports.iter().enumerate() {
        out.extend(h.take_tx().into_iter().map(|f| (i, f)));
    }
    assert_eq!(out.len(), 1, "exactly one frame out: {out:?}");
    out.remove(0)
}

/// Verify a frame's IPv4 and TCP checksums; its (source, source port, dest, dest port).
fn tcp_of(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let eth = EthernetFrame::new_checked(frame).expect("Ethernet");
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("IPv4");
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    assert!(ip.verify_checksum(), "IPv4 checksum");
    assert!(tcp.verify_checksum(&V4(s), &V4(d)), "TCP checksum");
    (s, tcp.src_port(), d, tcp.dst_port())
}

fn main() {
    let mut lab = lab();
    println!("service tcp {VIP}:80 rr -> {BACKENDS:?} port {TARGET_PORT}; client {CLIENT}\n");
    let (c, v) = (mac(CLIENT), mac(VIP));
    let mut chosen = Vec::new();
    for sport in 40001..=40006 {
        let syn = frames::tcp(c, v, CLIENT, VIP, sport, 80, TcpFlags::SYN, 100, 0, b"");
        let (port, f) = send(&mut lab, 0, &syn);
        let b = BACKENDS[port.checked_sub(1).expect("the SYN went to a backend")];
        assert_eq!(tcp_of(&f), (CLIENT, sport, b, TARGET_PORT), "DNAT");
        assert_eq!(&f[..6], &mac(b).0, "to the backend's MAC");
        let sa = TcpFlags::SYN_ACK;
        let synack = frames::tcp(mac(b), c, b, CLIENT, TARGET_PORT, sport, sa, 500, 101, b"");
        let (to, f) = send(&mut lab, port, &synack);
        assert_eq!(to, 0, "the SYN-ACK goes to the client");
        assert_eq!(tcp_of(&f), (VIP, 80, CLIENT, sport), "from the VIP");
        let ack = frames::tcp(c, v, CLIENT, VIP, sport, 80, TcpFlags::ACK, 101, 501, b"");
        let (to, _) = send(&mut lab, 0, &ack);
        assert_eq!(to, port, "the ACK goes to the same backend");
        println!("{CLIENT}:{sport} -> {VIP}:80 => {b}:{TARGET_PORT}, its replies from the VIP");
        chosen.push(port);
    }
    assert_eq!(chosen, [1, 2, 3, 1, 2, 3], "round robin");

    let lb = &lab.sw.stage(lab.lb).lb;
    let conns = lb.conns(NOW);
    println!(
        "\n$ vxmesh conntrack show\n{}",
        lb::listing::format_conns(&conns)
    );
    assert_eq!(conns.len(), 6);
    assert!(conns.iter().all(|c| c.state == "ESTABLISHED"), "{conns:?}");
    let services = lb.services();
    println!("per backend (ActiveConn: the balancer's own count, as in `vxmesh lb show`):");
    for (k, b) in services[0].backends.iter().enumerate() {
        let seen = chosen.iter().filter(|&&p| p == k + 1).count();
        let (n, addr, port, active) = (b.addr.octets()[3], b.addr, b.port, b.active_conns);
        println!("  c{n} {addr}:{port}  {seen} connections reached it, ActiveConn {active}");
        assert_eq!((b.addr, seen, b.active_conns), (BACKENDS[k], 2, 2));
    }
}
