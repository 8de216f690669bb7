//! The VXLAN stages in the real pipeline, through in-memory ports: a table of input frames (on a
//! container's port or on the underlay) and the frames expected on every port, with the
//! counters that must move, and conservation (packets in = sum of outcomes) for every stage
//! after every step.

use std::net::{Ipv4Addr, SocketAddrV4};

use vswitch::fdb::FdbDest;
use vswitch::frames;
use vswitch::{Env, FdbConfig, Mac, MemHandle, MemPort, Network, PortRole, Switch, Time};
use vxlan::{Repr, VXLAN_PORT, Vni, VxlanDecap, VxlanEncap};

const VNI: u32 = 4097;
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const N3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}
fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}

/// Bytes of the peer's address in front of an underlay frame in the tables.
const PEER_LEN: usize = 6;

/// A frame on the underlay port as the tables write it: the peer's address (IPv4 and UDP port,
/// what `meta.peer` carries beside the frame) in front of the VXLAN header (`vni`) and `inner`.
fn wrapped(peer: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut d = peer.octets().to_vec();
    d.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    d.extend_from_slice(
        &Repr {
            vni: Vni::new(vni).unwrap(),
        }
        .to_bytes(),
    );
    d.extend_from_slice(inner);
    d
}

/// A table's underlay frame as the port sees it: `meta.peer` and the datagram.
fn unwrap_peer(frame: &[u8]) -> (SocketAddrV4, &[u8]) {
    let ip = Ipv4Addr::new(frame[0], frame[1], frame[2], frame[3]);
    let port = u16::from_be_bytes([frame[4], frame[5]]);
    (SocketAddrV4::new(ip, port), &frame[PEER_LEN..])
}

/// A transmitted underlay frame as the tables write it.
fn with_peer((peer, frame): (Option<SocketAddrV4>, Vec<u8>)) -> Vec<u8> {
    let peer = peer.expect("every underlay frame goes to a peer");
    let mut d = peer.ip().octets().to_vec();
    d.extend_from_slice(&peer.port().to_be_bytes());
    d.extend_from_slice(&frame);
    d
}

/// Node n1: containers c11 on p1 and c12 on p2 in appnet (4097), whose other endpoints are c21
/// on n2 and c31 on n3; the underlay port `ul` with vxlan-decap on its receive path and
/// vxlan-encap on its transmit path.
struct Lab {
    sw: Switch,
    h: Vec<(&'static str, MemHandle)>,
}

impl Lab {
    fn new() -> Lab {
        let mut env = Env::new(FdbConfig::default());
        let mut app = Network::new("appnet", VNI, 1450);
        for i in [11, 12, 21, 31] {
            app.arp.insert(ip(i), mac(i));
        }
        let app = env.add_network(app);
        let n2 = env.add_vtep(N2, "n2");
        let n3 = env.add_vtep(N3, "n3");
        env.nets[app.0 as usize].peers = vec![n2, n3];
        env.fdb
            .add_static(app, mac(21), FdbDest::Remote(n2))
            .unwrap();
        env.fdb
            .add_static(app, mac(31), FdbDest::Remote(n3))
            .unwrap();
        let (mut sw, l2) = Switch::with_l2(env);
        let decap = sw.add_stage(VxlanDecap::new());
        let encap = sw.add_stage(VxlanEncap::new());
        let mut h = Vec::new();
        for (name, i) in [("p1", 11), ("p2", 12)] {
            let (port, handle) = MemPort::new();
            let id = sw.add_port(
                name,
                Box::new(port),
                PortRole::Local(app),
                l2.local_path(&[]),
            );
            sw.env
                .fdb
                .add_static(app, mac(i), FdbDest::Local(id))
                .unwrap();
            h.push((name, handle));
        }
        let (ul, ul_h) = MemPort::new();
        let ul = sw.add_port(
            "ul",
            Box::new(ul),
            PortRole::Underlay,
            vec![decap.idx(), l2.parse.idx(), l2.learn.idx(), l2.fwd.idx()],
        );
        h.push(("ul", ul_h));
        sw.set_tx_path(ul, vec![encap.idx()]);
        Lab { sw, h }
    }

    fn send(&mut self, port: &str, frame: &[u8]) -> Vec<(&'static str, Vec<Vec<u8>>)> {
        let h = &self.h.iter().find(|(n, _)| *n == port).unwrap().1;
        if port == "ul" {
            let (peer, d) = unwrap_peer(frame);
            h.inject_from(d, peer);
        } else {
            h.inject(frame);
        }
        self.sw.poll(Time::from_secs(1));
        let out = self
            .h
            .iter()
            .map(|(n, h)| match *n {
                "ul" => (*n, h.take_tx_to().into_iter().map(with_peer).collect()),
                _ => (*n, h.take_tx()),
            })
            .filter(|(_, v): &(_, Vec<_>)| !v.is_empty())
            .collect();
        for st in self.sw.stats().stages {
            assert_eq!(st.rx, st.outcomes(), "stage {} conserves: {st:?}", st.name);
        }
        out
    }

    fn drops(&self, stage: &str, reason: &str) -> u64 {
        self.sw.stats().stage(stage).unwrap().drop_count(reason)
    }
}

#[test]
fn vxlan_switching_table() {
    let mut lab = Lab::new();
    let to_21 = frames::udp(mac(11), mac(21), ip(11), ip(21), 1, 2, b"to n2");
    let to_31 = frames::tcp(
        mac(11),
        mac(31),
        ip(11),
        ip(31),
        40000,
        80,
        frames::TcpFlags {
            syn: true,
            ..Default::default()
        },
        1,
        0,
        b"",
    );
    let bcast = frames::arp_request(mac(11), ip(11), ip(99));
    let from_21 = frames::udp(mac(21), mac(11), ip(21), ip(11), 2, 1, b"from n2");
    let bcast_21 = frames::arp_request(mac(21), ip(21), ip(99));
    let from_31_to_21 = frames::udp(mac(31), mac(21), ip(31), ip(21), 2, 1, b"");
    let big = frames::udp(mac(21), mac(11), ip(21), ip(11), 2, 1, &[0; 1450 - 28 + 1]);

    type Case<'a> = (&'a str, &'a str, Vec<u8>, Vec<(&'static str, Vec<Vec<u8>>)>);
    let table: Vec<Case> = vec![
        (
            "unicast to a remote endpoint: encapsulated to its VTEP only",
            "p1",
            to_21.clone(),
            vec![("ul", vec![wrapped(N2, VNI, &to_21)])],
        ),
        (
            "TCP to the other node's endpoint",
            "p1",
            to_31.clone(),
            vec![("ul", vec![wrapped(N3, VNI, &to_31)])],
        ),
        (
            "broadcast: the other local port, and once to each peer VTEP",
            "p1",
            bcast.clone(),
            vec![
                ("p2", vec![bcast.clone()]),
                (
                    "ul",
                    vec![wrapped(N2, VNI, &bcast), wrapped(N3, VNI, &bcast)],
                ),
            ],
        ),
        (
            "from n2 to c11: decapsulated to c11's port, byte for byte",
            "ul",
            wrapped(N2, VNI, &from_21),
            vec![("p1", vec![from_21.clone()])],
        ),
        (
            "broadcast from n2: local ports only, never back out to a VTEP",
            "ul",
            wrapped(N2, VNI, &bcast_21),
            vec![
                ("p1", vec![bcast_21.clone()]),
                ("p2", vec![bcast_21.clone()]),
            ],
        ),
        (
            "from a stranger: dropped",
            "ul",
            wrapped(STRANGER, VNI, &from_21),
            vec![],
        ),
        (
            "for an unknown VNI: dropped",
            "ul",
            wrapped(N2, VNI + 1, &from_21),
            vec![],
        ),
        (
            "n3 speaking for n2's endpoint: dropped",
            "ul",
            wrapped(N3, VNI, &from_21),
            vec![],
        ),
        (
            "n3 to n2's endpoint through us: split horizon",
            "ul",
            wrapped(N3, VNI, &from_31_to_21),
            vec![],
        ),
        (
            "inner frame over the MTU: dropped",
            "ul",
            wrapped(N2, VNI, &big),
            vec![],
        ),
    ];
    for (what, port, frame, want) in table {
        assert_eq!(lab.send(port, &frame), want, "{what}");
    }
    assert_eq!(lab.drops("vxlan-decap", "drop_unknown_vtep"), 1);
    assert_eq!(lab.drops("vxlan-decap", "drop_unknown_vni"), 1);
    assert_eq!(lab.drops("vxlan-decap", "drop_inner_src_spoofed"), 1);
    assert_eq!(lab.drops("vxlan-decap", "drop_inner_oversize"), 1);
    assert_eq!(lab.drops("l2-fwd", "drop_remote_to_remote"), 1);
    let st = lab.sw.stats();
    let encap = st.stage("vxlan-encap").unwrap();
    assert_eq!((encap.rx, encap.cont), (4, 4));
}
