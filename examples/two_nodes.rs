//! Two nodes, one overlay, no root: container c11 on node n1 pings container c21 on node n2
//! across VXLAN, through the real pipelines of two in-memory switches whose underlay ports are
//! joined by a small in-memory wire. Prints the path each frame took, the VXLAN header on the
//! wire and the per-stage counters; asserts every step (`cargo run --example two_nodes`).

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{IcmpEchoHeader, Icmpv4Type, NetSlice, PacketBuilder};
use etherparse::{SlicedPacket, TransportSlice};
use vswitch::trace::TraceFilter;
use vswitch::{Env, FdbConfig, FdbDest, Mac, MemHandle, MemPort, Network, PortRole, Switch, Time};
use vxlan::wire::{HEADER_LEN, Packet as VxlanPacket};
use vxlan::{VXLAN_PORT, VxlanDecap, VxlanEncap};

const VNI: u32 = 4097;
const N1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const C11: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 11);
const C21: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 21);

/// One node: its switch, its container's port and its underlay port (both in memory).
struct Node {
    addr: Ipv4Addr,
    sw: Switch,
    container: MemHandle,
    underlay: MemHandle,
}

/// The node at underlay address `addr` with container `local`; `remote` lives on node `peer`.
fn node(addr: Ipv4Addr, local: Ipv4Addr, peer: (&str, Ipv4Addr), remote: Ipv4Addr) -> Node {
    let (local_mac, remote_mac) = (Mac::docker_default(local), Mac::docker_default(remote));
    let mut env = Env::new(FdbConfig::default());
    let mut net = Network::new("appnet", VNI, 1450);
    net.arp.insert(local, local_mac);
    net.arp.insert(remote, remote_mac);
    let app = env.add_network(net);
    let vtep = env.add_vtep(peer.1, peer.0);
    env.nets[app.0 as usize].peers.push(vtep);
    let dest = FdbDest::Remote(vtep);
    env.fdb.add_static(app, remote_mac, dest).expect("fdb");
    let (mut sw, l2) = Switch::with_l2(env);
    let decap = sw.add_stage(VxlanDecap::new());
    let (port, container) = MemPort::new();
    let path = l2.local_path(&[]);
    let c = sw.add_port("container", Box::new(port), PortRole::Local(app), path);
    sw.env
        .fdb
        .add_static(app, local_mac, FdbDest::Local(c))
        .expect("fdb");
    let (port, underlay) = MemPort::new();
    let path = vec![decap.idx(), l2.parse.idx(), l2.learn.idx(), l2.fwd.idx()];
    let ul = sw.add_port("underlay", Box::new(port), PortRole::Underlay, path);
    let encap = sw.add_stage(VxlanEncap::new());
    sw.set_tx_path(ul, vec![encap.idx()]);
    // Trace every frame (one is in flight at a time): `step` prints the stages it went through.
    sw.env.tracer.arm(u32::MAX, TraceFilter::default());
    Node {
        addr,
        sw,
        container,
        underlay,
    }
}

/// The wire: carries what `from` sent on its underlay to `to`'s, as UDP to port 4789 would (to
/// the peer `vxlan-encap` set; the receiving port records the source). Checks that it is one
/// VXLAN datagram to `to` with `inner` inside, and prints its header.
fn wire(from: &Node, to: &Node, inner: &[u8]) {
    let mut sent = from.underlay.take_tx_to();
    assert_eq!(sent.len(), 1, "one datagram on the wire");
    let (dst, d) = &mut sent[0];
    let dst = dst.expect("vxlan-encap names the peer");
    assert_eq!(dst, SocketAddrV4::new(to.addr, VXLAN_PORT), "to the peer");
    let vx = VxlanPacket::new_checked(&d[..]).expect("a valid VXLAN header");
    let (hdr, vni) = (&d[..HEADER_LEN], vx.vni());
    println!(
        "  wire   udp {}:{VXLAN_PORT} > {dst}, VXLAN header {hdr:02x?}",
        from.addr
    );
    let len = vx.payload().len();
    println!(
        "         = flags {:#04x} (I), VNI {vni}; inner frame {len} bytes",
        vx.flags()
    );
    assert!(vx.i_flag() && vni.get() == VNI && vx.payload() == inner);
    to.underlay
        .inject_from(d, SocketAddrV4::new(from.addr, VXLAN_PORT));
}

/// Run `n`'s pipeline once; print and return the stages the frame went through.
fn step(label: &str, n: &mut Node) -> Vec<&'static str> {
    n.sw.poll(Time::from_secs(1));
    let path: Vec<&str> = n.sw.env.tracer.drain().iter().map(|r| r.stage).collect();
    println!("  {label:<6} {}", path.join(" -> "));
    path
}

/// The ICMP echo request in `frame`: its id and sequence, IPv4 source and destination, payload.
fn echo_request(frame: &[u8]) -> (IcmpEchoHeader, [Ipv4Addr; 2], Vec<u8>) {
    let p = SlicedPacket::from_ethernet(frame).expect("an Ethernet frame");
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Icmpv4(i))) = (p.net, p.transport) else {
        panic!("not ICMP over IPv4");
    };
    let Icmpv4Type::EchoRequest(echo) = i.icmp_type() else {
        panic!("not an echo request");
    };
    let h = ip.header();
    let addrs = [h.source_addr(), h.destination_addr()];
    (echo, addrs, i.payload().to_vec())
}

fn main() {
    let mut n1 = node(N1, C11, ("n2", N2), C21);
    let mut n2 = node(N2, C21, ("n1", N1), C11);
    let (m11, m21) = (Mac::docker_default(C11), Mac::docker_default(C21));
    println!("appnet (VNI {VNI}): c11 {C11} on node n1 ({N1}), c21 {C21} on node n2 ({N2})");

    println!("\nc11 pings c21 (ICMP echo request, id 7, seq 1):");
    let req = vswitch::frames::icmp_echo(m11, m21, C11, C21, 7, 1);
    n1.container.inject(&req);
    assert!(step("n1", &mut n1).ends_with(&["l2-fwd", "output", "vxlan-encap"]));
    wire(&n1, &n2, &req);
    assert!(step("n2", &mut n2).starts_with(&["rx", "vxlan-decap"]));
    let got = n2.container.take_tx();
    assert_eq!(got, [&req[..]], "c21 gets it byte for byte");
    let (echo, addrs, payload) = echo_request(&req);
    assert_eq!((addrs, echo.id, echo.seq), ([C11, C21], 7, 1));
    println!("\nc21 answers (ICMP echo reply):");
    let b = PacketBuilder::ethernet2(m21.0, m11.0).ipv4(C21.octets(), C11.octets(), 64);
    let (b, mut reply) = (b.icmpv4_echo_reply(echo.id, echo.seq), Vec::new());
    b.write(&mut reply, &payload).expect("an echo reply"); // from C21 to C11, id 7, seq 1
    n2.container.inject(&reply);
    assert!(step("n2", &mut n2).ends_with(&["l2-fwd", "output", "vxlan-encap"]));
    wire(&n2, &n1, &reply);
    assert!(step("n1", &mut n1).starts_with(&["rx", "vxlan-decap"]));
    assert_eq!(n1.container.take_tx(), [reply], "c11 gets it byte for byte");
    println!("\nc11 got the echo reply from {C21} (id 7, seq 1): a ping across VXLAN");

    for (name, n) in [("n1", &n1), ("n2", &n2)] {
        println!("\n{name} stage            rx   cont output remote   drop");
        for s in n.sw.stats().stages {
            let c = [s.rx, s.cont, s.output, s.remote, s.dropped()].map(|c| format!("{c:>7}"));
            println!("   {:<12}{}", s.name, c.concat());
            assert_eq!(s.rx, s.outcomes(), "stage {} conserves packets", s.name);
            assert_eq!(s.dropped(), 0, "nothing dropped at {}", s.name);
        }
    }
}
