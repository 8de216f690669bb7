//! The L2 switch end to end through the real pipeline and in-memory ports: tables of input
//! frames and the frames expected on every port, the counters that must move, and conservation
//! (packets in = sum of outcomes) for every stage after every step.

use std::net::Ipv4Addr;

use vswitch::frames::{self, TcpFlags};
use vswitch::wire::arp::{OP_REPLY, Repr as ArpRepr};
use vswitch::{
    Batch, Env, FdbConfig, FdbDest, Mac, MemHandle, MemPort, NetId, Network, Next, Packet,
    PortRole, Stage, Switch, Time, VtepId,
};

vswitch::drop_table! {
    /// Why `mark-encap` drops a frame.
    enum MarkDrop {
        /// No target VTEP, or no headroom.
        Never => "drop_never",
    }
}

/// Test encapsulation on the underlay's transmit path: prefixes the frame with `VTEP` and the
/// target VTEP id, so the expected output on the "underlay" port is visible byte for byte.
struct MarkEncap;

impl Stage for MarkEncap {
    fn name(&self) -> &'static str {
        "mark-encap"
    }
    fn drop_names(&self) -> &'static [&'static str] {
        MarkDrop::NAMES
    }
    fn process(&mut self, batch: &mut Batch, _env: &mut Env) {
        for (_, p) in batch.active_mut() {
            let vtep = p.meta.to_vtep;
            match (vtep, p.push_front(5)) {
                (Some(v), Some(h)) => {
                    h[..4].copy_from_slice(b"VTEP");
                    h[4] = v.0 as u8;
                }
                _ => p.meta.next = Next::Drop(MarkDrop::Never.into()),
            }
        }
    }
    fn describe(&self, pkt: &Packet, _env: &Env) -> String {
        format!("to vtep {:?}", pkt.meta.to_vtep)
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}
fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}
fn encap(vtep: u8, f: &[u8]) -> Vec<u8> {
    let mut v = b"VTEP".to_vec();
    v.push(vtep);
    v.extend_from_slice(f);
    v
}

/// appnet (VNI 4097): local ports p1, p2, p3; remote endpoints .21 on vtep 0 and .31 on vtep 1.
/// othernet (VNI 4098): local port q1. The underlay port `ul` has `mark-encap` on its transmit
/// path.
struct Lab {
    sw: Switch,
    h: Vec<(&'static str, MemHandle)>,
    now: Time,
}

impl Lab {
    fn new(fdb: FdbConfig) -> Lab {
        let mut env = Env::new(fdb);
        let mut app = Network::new("appnet", 4097, 1450);
        for (i, m) in [
            (11, mac(11)),
            (12, mac(12)),
            (13, mac(13)),
            (21, mac(21)),
            (31, mac(31)),
        ] {
            app.arp.insert(ip(i), m);
        }
        let app = env.add_network(app);
        let other = env.add_network(Network::new("othernet", 4098, 1450));
        let v0 = env.add_vtep(Ipv4Addr::new(198, 18, 0, 2), "n2");
        let v1 = env.add_vtep(Ipv4Addr::new(198, 18, 0, 3), "n3");
        env.nets[app.0 as usize].peers = vec![v0, v1];
        env.fdb
            .add_static(app, mac(21), FdbDest::Remote(v0))
            .unwrap();
        env.fdb
            .add_static(app, mac(31), FdbDest::Remote(v1))
            .unwrap();
        let (mut sw, l2) = Switch::with_l2(env);
        let mark = sw.add_stage(MarkEncap);
        let mut h = Vec::new();
        for (name, net) in [("p1", app), ("p2", app), ("p3", app), ("q1", other)] {
            let (port, handle) = MemPort::new();
            sw.add_port(
                name,
                Box::new(port),
                PortRole::Local(net),
                l2.local_path(&[]),
            );
            h.push((name, handle));
        }
        let (ul, ul_h) = MemPort::new();
        let ul_id = sw.add_port("ul", Box::new(ul), PortRole::Underlay, vec![]);
        h.push(("ul", ul_h));
        sw.set_tx_path(ul_id, vec![mark.idx()]);
        Lab {
            sw,
            h,
            now: Time::from_secs(100),
        }
    }

    fn handle(&self, port: &str) -> &MemHandle {
        &self.h.iter().find(|(n, _)| *n == port).unwrap().1
    }

    /// Inject `frame` on `port`, run the switch, and return what every port transmitted.
    fn send(&mut self, port: &str, frame: &[u8]) -> Vec<(&'static str, Vec<Vec<u8>>)> {
        self.handle(port).inject(frame);
        self.sw.poll(self.now);
        let out = self
            .h
            .iter()
            .map(|(n, h)| (*n, h.take_tx()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        self.assert_conservation();
        out
    }

    fn assert_conservation(&self) {
        for st in self.sw.stats().stages {
            assert_eq!(
                st.rx,
                st.outcomes(),
                "stage {} does not conserve packets: {st:?}",
                st.name
            );
        }
    }

    fn drops(&self, stage: &str, reason: &str) -> u64 {
        self.sw.stats().stage(stage).unwrap().drop_count(reason)
    }
}

#[test]
fn switching_table() {
    let mut lab = Lab::new(FdbConfig::default());
    let arp_unknown = frames::arp_request(mac(11), ip(11), ip(99));
    let u_12_to_11 = frames::udp(mac(12), mac(11), ip(12), ip(11), 5000, 53, b"hi");
    let u_11_to_12 = frames::udp(mac(11), mac(12), ip(11), ip(12), 53, 5000, b"ho");
    let u_11_to_21 = frames::udp(mac(11), mac(21), ip(11), ip(21), 1, 2, b"remote");
    let u_11_to_unknown = frames::udp(mac(11), mac(77), ip(11), ip(77), 1, 2, b"?");
    let tcp_11_to_31 = frames::tcp(
        mac(11),
        mac(31),
        ip(11),
        ip(31),
        40000,
        80,
        TcpFlags::SYN,
        1,
        0,
        b"",
    );
    let grat = frames::arp_request(mac(13), ip(13), ip(13));

    type Case<'a> = (&'a str, &'a str, Vec<u8>, Vec<(&'static str, Vec<Vec<u8>>)>);
    let table: Vec<Case> = vec![
        (
            "broadcast ARP for an unknown IP floods to the other local ports and each remote VTEP",
            "p1",
            arp_unknown.clone(),
            vec![
                ("p2", vec![arp_unknown.clone()]),
                ("p3", vec![arp_unknown.clone()]),
                ("ul", vec![encap(0, &arp_unknown), encap(1, &arp_unknown)]),
            ],
        ),
        (
            "unicast to a learned MAC goes to its port only",
            "p2",
            u_12_to_11.clone(),
            vec![("p1", vec![u_12_to_11.clone()])],
        ),
        (
            "and back, now that .12 is learned on p2",
            "p1",
            u_11_to_12.clone(),
            vec![("p2", vec![u_11_to_12.clone()])],
        ),
        (
            "unicast to a remote endpoint goes to its VTEP only",
            "p1",
            u_11_to_21.clone(),
            vec![("ul", vec![encap(0, &u_11_to_21)])],
        ),
        (
            "TCP to the other remote endpoint goes to its VTEP",
            "p1",
            tcp_11_to_31.clone(),
            vec![("ul", vec![encap(1, &tcp_11_to_31)])],
        ),
        (
            "unknown unicast floods like broadcast",
            "p1",
            u_11_to_unknown.clone(),
            vec![
                ("p2", vec![u_11_to_unknown.clone()]),
                ("p3", vec![u_11_to_unknown.clone()]),
                (
                    "ul",
                    vec![encap(0, &u_11_to_unknown), encap(1, &u_11_to_unknown)],
                ),
            ],
        ),
        (
            "gratuitous ARP for a known address is neither answered nor flooded",
            "p3",
            grat.clone(),
            vec![],
        ),
        (
            "another network is another bridge domain: nothing reaches appnet",
            "q1",
            arp_unknown.clone(),
            vec![],
        ),
    ];
    for (what, port, frame, want) in table {
        let got = lab.send(port, &frame);
        assert_eq!(got, want, "{what}");
    }
    let st = lab.sw.stats();
    assert_eq!(
        st.stage("l2-fwd").unwrap().events,
        vec![("unknown_unicast", 1), ("group_flooded", 2)]
    );
    assert_eq!(st.port("p1").unwrap().rx_packets, 5);
}

#[test]
fn proxy_arp_answers_for_local_and_remote_endpoints_and_never_floods_them() {
    let mut lab = Lab::new(FdbConfig::default());
    for target in [12, 21, 31] {
        let req = frames::arp_request(mac(11), ip(11), ip(target));
        let want = frames::arp(
            mac(11),
            ArpRepr {
                op: OP_REPLY,
                sha: mac(target),
                spa: ip(target),
                tha: mac(11),
                tpa: ip(11),
            },
        );
        assert_eq!(
            lab.send("p1", &req),
            vec![("p1", vec![want])],
            "who-has {}",
            ip(target)
        );
    }
    // the owner probing its own address (RFC 5227) is neither answered (that would look like
    // a conflict) nor flooded: the switch is authoritative for the address
    let probe = frames::arp_request(mac(12), Ipv4Addr::UNSPECIFIED, ip(12));
    assert_eq!(lab.send("p2", &probe), vec![]);
    assert_eq!(lab.drops("arp-proxy", "drop_arp_announce"), 1);
    // malformed ARP is refused by port security, before anything reads it
    let mut bad = frames::arp_request(mac(11), ip(11), ip(12));
    bad[14 + 5] = 16; // protocol address length 16: not IPv4 ARP
    assert_eq!(lab.send("p1", &bad), vec![]);
    assert_eq!(lab.drops("l2-parse", "drop_arp_malformed"), 1);
    let truncated = &frames::arp_request(mac(11), ip(11), ip(12))[..30];
    assert_eq!(lab.send("p1", truncated), vec![]);
    assert_eq!(lab.drops("l2-parse", "drop_arp_malformed"), 2);
    // the table the proxy answers from is unchanged by anything a container sent
    assert_eq!(lab.sw.env.nets[0].arp.get(&ip(12)), Some(&mac(12)));
    assert_eq!(lab.sw.env.nets[0].arp.len(), 5);
}

#[test]
fn bad_frames_are_dropped_by_name() {
    let mut lab = Lab::new(FdbConfig::default());
    for n in 0..14 {
        assert_eq!(lab.send("p1", &vec![0x02; n]), vec![], "{n}-byte frame");
    }
    // an empty frame and a frame too short for its VLAN tag
    let mut vlan = frames::udp(mac(11), mac(12), ip(11), ip(12), 1, 2, b"")[..16].to_vec();
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(lab.send("p1", &vlan), vec![]);
    let oversize = frames::udp(
        mac(11),
        mac(12),
        ip(11),
        ip(12),
        1,
        2,
        &[0u8; 1450 - 28 + 1],
    );
    assert_eq!(oversize.len(), 1450 + 14 + 1);
    assert_eq!(lab.send("p1", &oversize), vec![]);
    let max = frames::udp(mac(11), mac(12), ip(11), ip(12), 1, 2, &[0u8; 1450 - 28]);
    assert_eq!(
        lab.send("p1", &max).len(),
        3,
        "a frame of exactly the MTU is flooded (.12 not yet learned)"
    );
    let spoof_src = frames::udp(mac(21), mac(12), ip(21), ip(12), 1, 2, b"");
    assert_eq!(lab.send("p1", &spoof_src), vec![]);
    let bcast_src = frames::udp(Mac::BROADCAST, mac(12), ip(11), ip(12), 1, 2, b"");
    assert_eq!(lab.send("p1", &bcast_src), vec![]);
    assert_eq!(lab.drops("l2-parse", "drop_runt"), 14);
    assert_eq!(lab.drops("l2-parse", "drop_vlan_truncated"), 1);
    assert_eq!(lab.drops("l2-parse", "drop_oversize"), 1);
    assert_eq!(lab.drops("l2-parse", "drop_invalid_src_mac"), 1);
    assert_eq!(lab.drops("l2-learn", "drop_src_mac_static"), 1);
    // the spoofed frame did not move the remote endpoint's static entry
    assert_eq!(
        lab.sw.env.fdb.lookup(NetId(0), mac(21), lab.now),
        Some(FdbDest::Remote(VtepId(0)))
    );
}

#[test]
fn mac_moves_hairpin_aging_and_a_full_table() {
    let mut lab = Lab::new(FdbConfig {
        max_learned: 2,
        max_static: 16,
        aging_secs: 300,
    });
    let from = |s: u8, d: u8| frames::udp(mac(s), mac(d), ip(s), ip(d), 1, 2, b"x");
    lab.send("p1", &from(11, 12));
    lab.send("p2", &from(12, 11));
    // .11 moves from p1 to p3
    assert_eq!(
        lab.send("p3", &from(11, 12)),
        vec![("p2", vec![from(11, 12)])]
    );
    assert_eq!(lab.sw.stats().fdb.moves, 1);
    assert_eq!(
        lab.send("p2", &from(12, 11)),
        vec![("p3", vec![from(12, 11)])]
    );
    // a frame to a MAC behind its own input port is not sent back
    assert_eq!(lab.send("p3", &from(13, 11)), vec![]);
    assert_eq!(lab.drops("l2-fwd", "drop_hairpin"), 1);
    // the table is full (two learned): .13 was not learned, so frames to it are flooded
    assert_eq!(lab.sw.stats().fdb.full, 1);
    assert_eq!(lab.send("p2", &from(12, 13)).len(), 3);
    // 300 s without traffic from .11 and .12: both age out, frames to them flood again
    lab.now = Time::from_secs(100 + 300);
    assert_eq!(lab.send("p2", &from(13, 11)).len(), 3, "aged out: flood");
    // expired entries hold their slots until the aging sweep (as with the Linux bridge's
    // fdb_max_learned): the sweep frees them and the next new MAC is learned
    assert_eq!(lab.sw.env.fdb.age(lab.now, usize::MAX), 2);
    assert_eq!(lab.sw.stats().fdb.aged, 2);
    lab.send("p2", &from(13, 11));
    assert_eq!(
        lab.sw.env.fdb.learned_len(),
        1,
        "only .13, learned just now"
    );
    assert_eq!(
        lab.send("p1", &from(11, 13)),
        vec![("p2", vec![from(11, 13)])]
    );
}

#[test]
fn frames_from_the_underlay_never_go_back_to_the_underlay() {
    // A frame with from_vtep set (as vxlan-decap would leave it) to a remote MAC is dropped,
    // and a flooded one reaches local ports only: split horizon.
    let mut lab = Lab::new(FdbConfig::default());
    let stage = DecapMark;
    let idx = lab.sw.add_stage(stage).idx();
    let l2 = lab.sw.stage_idx("l2-parse").unwrap();
    let learn = lab.sw.stage_idx("l2-learn").unwrap();
    let fwd = lab.sw.stage_idx("l2-fwd").unwrap();
    let (port, h) = MemPort::new();
    lab.sw.add_port(
        "ul-in",
        Box::new(port),
        PortRole::Underlay,
        vec![idx, l2, learn, fwd],
    );
    lab.h.push(("ul-in", h));
    let to_remote = frames::udp(mac(31), mac(21), ip(31), ip(21), 1, 2, b"");
    assert_eq!(lab.send("ul-in", &to_remote), vec![]);
    assert_eq!(lab.drops("l2-fwd", "drop_remote_to_remote"), 1);
    let bcast = frames::arp_request(mac(31), ip(31), ip(99));
    let out = lab.send("ul-in", &bcast);
    assert_eq!(
        out.iter().map(|o| o.0).collect::<Vec<_>>(),
        vec!["p1", "p2", "p3"]
    );
}

/// Stands in for vxlan-decap: every frame is from VTEP 1, in appnet.
struct DecapMark;
impl vswitch::Stage for DecapMark {
    fn name(&self) -> &'static str {
        "decap-mark"
    }
    fn process(&mut self, batch: &mut vswitch::Batch, _env: &mut Env) {
        for (_, p) in batch.active_mut() {
            p.meta.from_vtep = Some(VtepId(1));
            p.meta.net = NetId(0);
        }
    }
}

#[test]
fn trace_records_every_stage_for_marked_packets_only() {
    let mut lab = Lab::new(FdbConfig::default());
    lab.sw.env.tracer.arm(
        1,
        vswitch::trace::TraceFilter::parse("udp port 53").unwrap(),
    );
    lab.send(
        "p1",
        &frames::udp(mac(11), mac(12), ip(11), ip(12), 1, 2, b""),
    );
    lab.send(
        "p1",
        &frames::udp(mac(11), mac(21), ip(11), ip(21), 1, 53, b""),
    );
    lab.send(
        "p1",
        &frames::udp(mac(11), mac(21), ip(11), ip(21), 1, 53, b""),
    );
    let recs = lab.sw.env.tracer.drain();
    let stages: Vec<&str> = recs.iter().map(|r| r.stage).collect();
    assert_eq!(
        stages,
        vec![
            "rx",
            "l2-parse",
            "l2-learn",
            "arp-proxy",
            "l2-fwd",
            "output",
            "mark-encap"
        ]
    );
    assert!(recs.iter().all(|r| r.id == recs[0].id));
    assert!(recs[4].detail.contains("vtep 198.18.0.2"), "{:?}", recs[4]);
    assert!(
        recs[5].detail.contains("to VTEP 198.18.0.2"),
        "the output step says where: {:?}",
        recs[5]
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any bytes, at any length, on any port: no panic, and every stage conserves packets.
        #[test]
        fn arbitrary_frames_never_panic(frames in proptest::collection::vec((0usize..4, proptest::collection::vec(any::<u8>(), 0..120)), 1..40)) {
            let mut lab = Lab::new(FdbConfig { max_learned: 4, max_static: 8, aging_secs: 300 });
            for (port, f) in frames {
                let name = ["p1", "p2", "p3", "q1"][port];
                for n in [0, 13, 14, 17, 18, 41, 42, f.len()] {
                    if n <= f.len() {
                        lab.send(name, &f[..n]);
                    }
                }
            }
        }
    }
}
