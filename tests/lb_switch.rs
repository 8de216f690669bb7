//! The load balancer inside the real switch, through in-memory ports: a container ARPs for the
//! VIP (answered by the switch), opens connections to VIP:80, and the `lb-nat` stage sends them
//! round robin to backends on local ports and behind a remote VTEP, with every checksum right;
//! replies come back with the VIP as their source.

use std::net::Ipv4Addr;

use lb::{
    BackendConfig, Balancer, BalancerConfig, LbStage, Protocol, SchedulerKind, ServiceConfig,
    ServiceKey, Timeouts,
};
use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, TcpPacket};
use vswitch::frames::{self, TcpFlags};
use vswitch::wire::arp::{OP_REPLY, Repr as ArpRepr};
use vswitch::{
    Batch, Env, FdbConfig, FdbDest, Mac, MemHandle, MemPort, NetId, Network, PortRole, Stage,
    StageHandle, Switch, Time,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}
fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}

/// Records the target VTEP in front of the frame, on the underlay's transmit path, as in
/// tests/l2_switch.rs.
struct MarkEncap;
impl Stage for MarkEncap {
    fn name(&self) -> &'static str {
        "mark-encap"
    }
    fn process(&mut self, batch: &mut Batch, _env: &mut Env) {
        for (_, p) in batch.active_mut() {
            let vtep = p.meta.to_vtep.map_or(u8::MAX, |v| v.0 as u8);
            if let Some(h) = p.push_front(1) {
                h[0] = vtep;
            }
        }
    }
}

struct Lab {
    sw: Switch,
    lb: StageHandle<LbStage>,
    ports: Vec<(&'static str, MemHandle)>,
    now: Time,
}

impl Lab {
    /// appnet with c11 (client), c12 and c13 (backends) on local ports, c21 (backend) behind VTEP 0.
    fn new() -> Lab {
        let mut env = Env::new(FdbConfig::default());
        let mut net = Network::new("appnet", 4097, 1450);
        for i in [11, 12, 13, 21] {
            net.arp.insert(ip(i), mac(i));
        }
        net.arp.insert(VIP, Mac::docker_default(VIP));
        let appnet = env.add_network(net);
        let v = env.add_vtep(Ipv4Addr::new(198, 18, 0, 2), "n2");
        env.nets[0].peers.push(v);
        env.fdb
            .add_static(appnet, mac(21), FdbDest::Remote(v))
            .unwrap();
        let mut lb = Balancer::new(BalancerConfig {
            max_conns: 1024,
            seed: 7,
            timeouts: Timeouts::default(),
        });
        let key = ServiceKey {
            net: appnet,
            proto: Protocol::Tcp,
            addr: VIP,
            port: 80,
        };
        lb.add_service(ServiceConfig {
            key,
            scheduler: SchedulerKind::Rr,
            backend_net: appnet,
            snat: None,
        })
        .unwrap();
        for i in [12, 13, 21] {
            lb.add_backend(
                &key,
                BackendConfig {
                    addr: ip(i),
                    port: 8080,
                    weight: 1,
                    mac: mac(i),
                },
            )
            .unwrap();
        }
        let (mut sw, l2) = Switch::with_l2(env);
        let lb_stage = sw.add_stage(LbStage::new(lb));
        let mark = sw.add_stage(MarkEncap);
        let mut ports = Vec::new();
        for name in ["c11", "c12", "c13"] {
            let (p, h) = MemPort::new();
            sw.add_port(
                name,
                Box::new(p),
                PortRole::Local(appnet),
                l2.local_path(&[lb_stage.idx()]),
            );
            ports.push((name, h));
        }
        let (p, h) = MemPort::new();
        let ul = sw.add_port("ul", Box::new(p), PortRole::Underlay, vec![]);
        ports.push(("ul", h));
        sw.set_tx_path(ul, vec![mark.idx()]);
        assert_eq!(NetId(0), appnet);
        Lab {
            sw,
            lb: lb_stage,
            ports,
            now: Time::from_secs(10),
        }
    }

    fn send(&mut self, port: &str, frame: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        self.ports
            .iter()
            .find(|p| p.0 == port)
            .unwrap()
            .1
            .inject(frame);
        self.sw.poll(self.now);
        let mut out = Vec::new();
        for (n, h) in &self.ports {
            for f in h.take_tx() {
                out.push((*n, f));
            }
        }
        for st in self.sw.stats().stages {
            assert_eq!(
                st.rx,
                st.outcomes(),
                "stage {} does not conserve packets",
                st.name
            );
        }
        out
    }
}

/// Check the IPv4 and TCP checksums of a frame and return (src, sport, dst, dport).
fn tcp_of(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let ipp = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ipp.verify_checksum(), "IPv4 checksum");
    let tcp = TcpPacket::new_checked(ipp.payload()).unwrap();
    let (s, d) = (ipp.src_addr(), ipp.dst_addr());
    assert!(
        tcp.verify_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d)),
        "TCP checksum"
    );
    (s, tcp.src_port(), d, tcp.dst_port())
}

#[test]
fn the_switch_answers_arp_for_the_vip() {
    let mut lab = Lab::new();
    let out = lab.send("c11", &frames::arp_request(mac(11), ip(11), VIP));
    let want = frames::arp(
        mac(11),
        ArpRepr {
            op: OP_REPLY,
            sha: Mac::docker_default(VIP),
            spa: VIP,
            tha: mac(11),
            tpa: ip(11),
        },
    );
    assert_eq!(out, vec![("c11", want)]);
}

#[test]
fn connections_to_the_vip_go_round_robin_to_backends_on_any_node_and_replies_come_from_the_vip() {
    let mut lab = Lab::new();
    // The local backends announce themselves (a gratuitous ARP, as a container does when its
    // interface comes up), so the switch has learned their ports.
    for (i, port) in [(12, "c12"), (13, "c13")] {
        lab.send(port, &frames::arp_request(mac(i), ip(i), ip(i)));
    }
    let vmac = Mac::docker_default(VIP);
    let mut per_backend = std::collections::BTreeMap::new();
    for i in 0..30u16 {
        let sport = 40_000 + i;
        let syn = frames::tcp(
            mac(11),
            vmac,
            ip(11),
            VIP,
            sport,
            80,
            TcpFlags::SYN,
            1000,
            0,
            b"",
        );
        let out = lab.send("c11", &syn);
        assert_eq!(out.len(), 1, "one copy out: {out:?}");
        let (port, frame) = &out[0];
        let frame = if *port == "ul" {
            &frame[1..]
        } else {
            &frame[..]
        };
        let (s, sp, d, dp) = tcp_of(frame);
        assert_eq!(
            (s, sp, dp),
            (ip(11), sport, 8080),
            "DNAT to the target port, source untouched"
        );
        assert_eq!(
            &frame[0..6],
            &Mac::docker_default(d).0,
            "destination MAC is the backend's"
        );
        *per_backend.entry(d).or_insert(0) += 1;
        // The backend answers the client; the reply leaves with the VIP as its source.
        if *port != "ul" {
            let synack = frames::tcp(
                Mac::docker_default(d),
                mac(11),
                d,
                ip(11),
                8080,
                sport,
                TcpFlags::SYN_ACK,
                5000,
                1001,
                b"",
            );
            let out = lab.send(port, &synack);
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0].0, "c11");
            assert_eq!(tcp_of(&out[0].1), (VIP, 80, ip(11), sport));
            assert_eq!(&out[0].1[6..12], &vmac.0, "source MAC is the VIP's");
        }
    }
    assert_eq!(
        per_backend.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{per_backend:?}"
    );
    let lb = lab.sw.stage_mut(lab.lb);
    assert_eq!(lb.lb.conns(lab.now).len(), 30);
    let listing = lb::format_services(&lb.lb.services(), lb::ListMode::Plain);
    assert!(listing.contains("10.0.9.100:80 rr"), "{listing}");
}
