//! Two workers of n1 (the shared fixture) driven one round at a time on the test's thread, with
//! in-memory ports: every connection's two directions meet its entry, wherever they arrive.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use vswitch::frames::{self, TcpFlags};
use vswitch::{Mac, MemHandle, MemPort, Port};

use super::*;
use crate::node::tests::cluster;

/// A small connection table, the rest as `vxmesh run` has it by default.
fn tables() -> crate::node::TableOpts {
    crate::node::TableOpts {
        max_conns: 1024,
        ..Default::default()
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}
fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}
const VIP: u8 = 100;
const N2: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 4789);

/// The fixture with c12 renamed c13, so that c11 and the local backend sit on different
/// workers (the owner is a hash of the name), and `backends` as the service's.
fn file(backends: &str) -> String {
    let f = crate::node::tests::file().replace("\"c12\"", "\"c13\"");
    let all = r#"backends = ["c13", "c21", "c22"]"#;
    assert!(f.contains(all));
    f.replace(all, &format!("backends = {backends}"))
}

/// In-memory ports whose other ends the test keeps: one per owned port by name, one underlay
/// per worker.
#[derive(Default)]
struct Handles {
    ports: HashMap<String, MemHandle>,
    underlays: Vec<MemHandle>,
}

impl PortOpener for Handles {
    fn open(&mut self, p: &PortPlan, _: bool) -> anyhow::Result<Box<dyn Port>> {
        let (port, h) = MemPort::new();
        assert!(
            self.ports.insert(p.name.clone(), h).is_none(),
            "{} opened twice",
            p.name
        );
        Ok(Box::new(port))
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let (port, h) = MemPort::new();
        self.underlays.push(h);
        Ok(Box::new(port))
    }
}

struct Two {
    w: Workers,
    h: Handles,
}

impl Two {
    fn new(backends: &str) -> Two {
        let mut h = Handles::default();
        let w = Workers::build(cluster(&file(backends)), "n1", 2, &mut h, tables()).unwrap();
        assert_eq!(h.underlays.len(), 2, "an underlay per worker");
        assert_eq!(h.ports.len(), 3, "each port opened once, by its owner");
        Two { w, h }
    }

    /// Poll both workers, a few rounds each in turn (hand-offs take a round to cross).
    fn run(&mut self) {
        for round in 0..4 {
            for n in &mut self.w.nodes {
                n.sw.poll(vswitch::Time(1_000_000 + round));
            }
        }
    }

    fn conns(&self, worker: usize) -> usize {
        self.w.nodes[worker].lb_stage_conns()
    }
}

impl Node {
    /// Entries in this node's connection table.
    fn lb_stage_conns(&self) -> usize {
        self.sw.stage(self.lb).lb.conn_table().len()
    }
}

/// (source, destination) of the TCP segments among `frames`.
fn tcp_ends(frames: &[Vec<u8>]) -> Vec<(SocketAddrV4, SocketAddrV4)> {
    frames
        .iter()
        .filter_map(|f| {
            let s = SlicedPacket::from_ethernet(f).ok()?;
            let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (s.net, s.transport)
            else {
                return None;
            };
            let h = ip.header();
            Some((
                SocketAddrV4::new(h.source_addr(), t.source_port()),
                SocketAddrV4::new(h.destination_addr(), t.destination_port()),
            ))
        })
        .collect()
}

/// A SYN from c11's port `sport` to the VIP's port 80.
fn syn_to_vip(sport: u16) -> Vec<u8> {
    frames::tcp(
        mac(11),
        mac(VIP),
        ip(11),
        ip(VIP),
        sport,
        80,
        TcpFlags::SYN,
        1,
        0,
        b"",
    )
}

/// The SYN-ACK of backend 10.0.9.`backend` (port 80) to c11's port `dport`.
fn syn_ack_to_c11(backend: u8, dport: u16) -> Vec<u8> {
    frames::tcp(
        mac(backend),
        mac(11),
        ip(backend),
        ip(11),
        80,
        dport,
        TcpFlags::SYN_ACK,
        9,
        2,
        b"",
    )
}

fn sa(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip(last), port)
}

fn owner(name: &str) -> usize {
    handoff::owner_of(name, 2)
}

#[test]
fn a_connection_to_a_backend_on_the_other_worker_is_translated_both_ways() {
    assert_ne!(owner("c11"), owner("c13"), "the test needs them apart");
    let mut t = Two::new(r#"["c13"]"#);
    let (client, backend) = (owner("c11"), owner("c13"));
    let syn = syn_to_vip(40000);
    t.h.ports["c11"].inject(&syn);
    t.run();
    // The client's worker chose the backend and handed the frame to the backend's owner.
    assert_eq!(
        tcp_ends(&t.h.ports["c13"].take_tx()),
        [(sa(11, 40000), sa(12, 80))]
    );
    assert_eq!((t.conns(client), t.conns(backend)), (1, 0));

    let syn_ack = syn_ack_to_c11(12, 40000);
    t.h.ports["c13"].inject(&syn_ack);
    t.run();
    // The reply arrived on the backend's worker and was steered to the entry's: un-NATed.
    assert_eq!(
        tcp_ends(&t.h.ports["c11"].take_tx()),
        [(sa(VIP, 80), sa(11, 40000))]
    );
    assert_eq!((t.conns(client), t.conns(backend)), (1, 0));
    let c13 = t.w.nodes[backend].sw.stats();
    let c13 = c13.ports.iter().find(|p| p.name == "c13").unwrap();
    assert!(c13.port.contains(&("handoff_rx_out", 1)), "{:?}", c13.port);
}

/// Without the steering map the same reply is processed where it arrives, misses the entry and
/// reaches the client from the backend's address: what steering prevents.
#[test]
fn without_steering_the_reply_misses_its_entry() {
    let mut t = Two::new(r#"["c13"]"#);
    for n in &mut t.w.nodes {
        set_steer(n, &Arc::new(SteerMap::default()));
    }
    let syn = syn_to_vip(40000);
    t.h.ports["c11"].inject(&syn);
    t.run();
    assert_eq!(t.h.ports["c13"].take_tx().len(), 1);
    let syn_ack = syn_ack_to_c11(12, 40000);
    t.h.ports["c13"].inject(&syn_ack);
    t.run();
    assert_eq!(
        tcp_ends(&t.h.ports["c11"].take_tx()),
        [(sa(12, 80), sa(11, 40000))]
    );
}

/// A remote backend's reply comes in on whichever worker's underlay socket the kernel chose:
/// the other worker's here. It is steered to the client's worker and un-NATed there.
#[test]
fn a_reply_from_the_underlay_reaches_the_entry_on_any_worker() {
    let mut t = Two::new(r#"["c21"]"#);
    let client = owner("c11");
    let syn = syn_to_vip(40001);
    t.h.ports["c11"].inject(&syn);
    t.run();
    let out = t.h.underlays[client].take_tx_to();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0,
        Some(N2),
        "encapsulated to n2 by the client's worker"
    );
    assert_eq!(
        tcp_ends(&[out[0].1[8..].to_vec()]),
        [(sa(11, 40001), sa(21, 80))]
    );

    let syn_ack = syn_ack_to_c11(21, 40001);
    let mut vx = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0];
    vx.extend_from_slice(&syn_ack);
    t.h.underlays[1 - client].inject_from(&vx, N2);
    t.run();
    assert_eq!(
        tcp_ends(&t.h.ports["c11"].take_tx()),
        [(sa(VIP, 80), sa(11, 40001))]
    );
    assert_eq!((t.conns(client), t.conns(1 - client)), (1, 0));
}

/// The routing mesh: a published port's connection is made on the ingress's worker, source-NATed
/// to the node's load-balancer address; the backend's reply to that address arrives on the
/// backend's worker and is steered by address to the ingress's worker.
#[test]
fn a_published_port_reply_returns_to_the_ingress_worker() {
    assert_ne!(owner("ext0"), owner("c13"), "the test needs them apart");
    let mut t = Two::new(r#"["c13"]"#);
    let (ing, backend) = (owner("ext0"), owner("c13"));
    let (outside, node) = (Ipv4Addr::new(192, 0, 2, 50), Ipv4Addr::new(192, 0, 2, 1));
    let (mac_out, mac_node) = (Mac([2, 0, 0, 0, 0, 0x50]), Mac::docker_default(node));
    let syn = frames::tcp(
        mac_out,
        mac_node,
        outside,
        node,
        50000,
        8080,
        TcpFlags::SYN,
        1,
        0,
        b"",
    );
    t.h.ports["ext0"].inject(&syn);
    t.run();
    let to_backend = t.h.ports["c13"].take_tx();
    let ends = tcp_ends(&to_backend);
    assert_eq!(ends.len(), 1, "{:?}", t.w.nodes[ing].sw.stats().stages);
    let (lb, backend_end) = ends[0];
    assert_eq!(backend_end, sa(12, 80));
    assert_eq!((t.conns(ing), t.conns(backend)), (1, 0));

    // c13 answers the load-balancer address (at its MAC, the frame's source).
    let lb_mac = Mac(to_backend[0][6..12].try_into().unwrap());
    let syn_ack = frames::tcp(
        mac(12),
        lb_mac,
        ip(12),
        *lb.ip(),
        80,
        lb.port(),
        TcpFlags::SYN_ACK,
        9,
        2,
        b"",
    );
    t.h.ports["c13"].inject(&syn_ack);
    t.run();
    assert_eq!(
        tcp_ends(&t.h.ports["ext0"].take_tx()),
        [(
            SocketAddrV4::new(node, 8080),
            SocketAddrV4::new(outside, 50000)
        )]
    );
}

/// An encrypted network cannot run on two workers (one security association's sequence
/// numbers come from one thread): the node says so and how to run it.
#[test]
fn an_encrypted_network_needs_one_worker() {
    let text = file(r#"["c13"]"#).replace("mtu = 1450", "mtu = 1450\nencrypted = true");
    let text = format!("{text}\n[encryption]\nkeys = [\"AAECAwQFBgcICQoLDA0ODxAREhM=\"]\n");
    let err = Workers::build(cluster(&text), "n1", 2, &mut Handles::default(), tables())
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("--workers 1"), "{err}");
}
