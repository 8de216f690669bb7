//! The criterion suite of the node's packet path, at bursts 1, 8 and 32 (packets per second and,
//! from criterion's time per iteration, ns per packet):
//!
//! - `stage/*`: each stage alone over a batch (`l2-parse` with port security, `l2-learn`, `arp-proxy`, `l2-fwd`,
//!   `vxlan-decap`, `vxlan-encap`, `lb-nat` on established flows, `dns` on frames that are not
//!   queries and on queries it answers). Each iteration refills the batch
//!   from template frames first (stages rewrite packets); `stage/refill` measures that refill
//!   alone, so a stage's own cost is its time minus refill's.
//! - `node/*`: the whole pipeline of a node built by `Node::build` from a cluster file, with
//!   in-memory ports instead of AF_XDP/TAP/UDP: a container to the VIP with its backends on the
//!   other node (parse, port security, learn, ARP, DNAT, own-addr, forward, VXLAN encap), VXLAN from the other
//!   node to a container (decap, learn, un-NAT, forward), plain L2 between two containers, and
//!   DNS queries from a container answered by the switch (the per-query cost).
//!
//! Run everything (this, the L2/FDB, VXLAN and load-balancer benches with conntrack at 1K/100K/1M)
//! with `scripts/bench.sh`; HTML reports land in `target/criterion/report/index.html`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vswitch::frames::{self, TcpFlags};
use vswitch::stage::mask_of;
use vswitch::{Batch, Mac, Meta, Port, SinkPort, Switch, Time, VtepId};
use vxmesh::config::Cluster;
use vxmesh::node::{Node, PortOpener, PortPlan};

const BURSTS: [usize; 3] = [1, 8, 32];
const FLOWS: u16 = 64;
/// n2's underlay address: where its datagrams come from (`meta.peer`).
const N2_PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 4789);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}
fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}

/// The shared cluster fixture as the benches need it: the service's backends on n2 only (every
/// connection to the VIP is encapsulated) and without the routing mesh (no published port, no
/// ingress port to poll; the fixture keeps its ingresses last).
fn cluster_text() -> String {
    const FIXTURE: &str = include_str!("../tests/fixtures/cluster.toml");
    let edits = [
        (
            r#"backends = ["c12", "c21", "c22"]"#,
            r#"backends = ["c21", "c22"]"#,
        ),
        (", published = 8080", ""),
    ];
    let (base, _ingresses) = FIXTURE
        .split_once("[[ingress]]")
        .expect("the fixture's ingresses");
    let mut text = base.replace("{P}", "");
    for (from, to) in edits {
        assert!(text.contains(from), "the fixture changed: {from}");
        text = text.replace(from, to);
    }
    text
}

/// A port that first delivers `prime` once, then replays `steady` forever, `burst` at a time;
/// as the UDP underlay, from `peer`.
struct Replay {
    prime: Vec<Vec<u8>>,
    steady: Vec<Vec<u8>>,
    next: usize,
    burst: usize,
    peer: Option<SocketAddrV4>,
}

impl Port for Replay {
    fn rx_burst(&mut self, batch: &mut Batch) -> usize {
        let spare = batch.spare_mut();
        let want = self.burst.min(spare.len());
        let mut n = 0;
        while n < want {
            let f = if let Some(f) = self.prime.pop() {
                f
            } else {
                let i = self.next;
                self.next = (self.next + 1) % self.steady.len();
                if spare[n].set_frame(&self.steady[i]).is_ok() {
                    spare[n].meta.peer = self.peer;
                    n += 1;
                }
                continue;
            };
            if spare[n].set_frame(&f).is_ok() {
                spare[n].meta.peer = self.peer;
                n += 1;
            }
        }
        batch.grow(n);
        n
    }
    fn tx_burst(&mut self, batch: &mut Batch) -> usize {
        batch.len()
    }
}

/// DNS queries from c11 to appnet's resolver (10.0.9.1) for the service's name, one per flow.
fn dns_queries() -> Vec<Vec<u8>> {
    let resolver = ip(1);
    (0..FLOWS)
        .map(|i| {
            let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            q[..2].copy_from_slice(&i.to_be_bytes());
            vswitch::wire::dns::encode_name("web", &mut q).expect("a name");
            q.extend_from_slice(&[0, 1, 0, 1]);
            frames::udp(
                mac(11),
                Mac::docker_default(resolver),
                ip(11),
                resolver,
                40000 + i,
                53,
                &q,
            )
        })
        .collect()
}

/// TCP from c11 to the VIP, one frame per flow.
fn to_vip(flags: TcpFlags) -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| {
            frames::tcp(
                mac(11),
                Mac::docker_default(ip(100)),
                ip(11),
                ip(100),
                40000 + i,
                80,
                flags,
                1,
                1,
                b"",
            )
        })
        .collect()
}

/// VXLAN datagrams (VNI 4097) carrying `inner`, as n2 sends them (the sender, [`N2_PEER`], is
/// in `meta.peer`).
fn from_n2(inner: &[Vec<u8>]) -> Vec<Vec<u8>> {
    inner
        .iter()
        .map(|f| {
            let mut d = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0];
            d.extend_from_slice(f);
            d
        })
        .collect()
}

struct BenchPorts {
    c11: Option<Replay>,
    underlay: Option<Replay>,
}

impl PortOpener for BenchPorts {
    fn open(&mut self, p: &PortPlan, _: bool) -> anyhow::Result<Box<dyn Port>> {
        Ok(match (p.name.as_str(), self.c11.take()) {
            ("c11", Some(r)) => Box::new(r),
            _ => Box::new(SinkPort::default()),
        })
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        Ok(match self.underlay.take() {
            Some(r) => Box::new(r),
            None => Box::new(SinkPort::default()),
        })
    }
}

fn node(ports: BenchPorts) -> Node {
    let cluster = Cluster::parse(Path::new("bench.toml"), &cluster_text()).expect("bench cluster");
    let mut ports = ports;
    Node::build(cluster, "n1", &mut ports).expect("bench node")
}

fn replay(prime: Vec<Vec<u8>>, steady: Vec<Vec<u8>>, burst: usize) -> Replay {
    Replay {
        prime,
        steady,
        next: 0,
        burst,
        peer: None,
    }
}

fn node_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("node");
    for burst in BURSTS {
        g.throughput(Throughput::Elements(burst as u64));
        // Container -> VIP -> backend on n2: every stage of the local path plus encap.
        let mut n = node(BenchPorts {
            c11: Some(replay(to_vip(TcpFlags::SYN), to_vip(TcpFlags::ACK), burst)),
            underlay: None,
        });
        for _ in 0..FLOWS {
            n.sw.poll(Time::from_secs(1)); // prime: one SYN per flow creates the connections
        }
        g.bench_with_input(
            BenchmarkId::new("c11_to_vip_to_n2", burst),
            &burst,
            |b, _| b.iter(|| black_box(n.sw.poll(Time::from_secs(2)))),
        );
        assert!(
            n.sw.stats()
                .stage("lb-nat")
                .is_some_and(|s| s.dropped() == 0)
        );

        // VXLAN from n2 to c11: plain L2 replies from c21 (no connection: lb-nat passes).
        let inner: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| frames::udp(mac(21), mac(11), ip(21), ip(11), 7, 40000 + i, b"x"))
            .collect();
        let mut n = node(BenchPorts {
            c11: None,
            underlay: Some(Replay {
                peer: Some(N2_PEER),
                ..replay(Vec::new(), from_n2(&inner), burst)
            }),
        });
        g.bench_with_input(
            BenchmarkId::new("n2_to_c11_decap", burst),
            &burst,
            |b, _| b.iter(|| black_box(n.sw.poll(Time::from_secs(2)))),
        );
        let st = n.sw.stats();
        assert_eq!(st.stage("vxlan-decap").map(|s| s.dropped()), Some(0));

        // Plain L2 between two containers of n1.
        let l2: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| frames::udp(mac(11), mac(12), ip(11), ip(12), 40000 + i, 7, b"x"))
            .collect();
        let mut n = node(BenchPorts {
            c11: Some(replay(Vec::new(), l2, burst)),
            underlay: None,
        });
        g.bench_with_input(BenchmarkId::new("c11_to_c12_l2", burst), &burst, |b, _| {
            b.iter(|| black_box(n.sw.poll(Time::from_secs(2))))
        });

        // DNS queries from c11, answered by the switch back to c11.
        let mut n = node(BenchPorts {
            c11: Some(replay(Vec::new(), dns_queries(), burst)),
            underlay: None,
        });
        g.bench_with_input(BenchmarkId::new("c11_dns_query", burst), &burst, |b, _| {
            b.iter(|| black_box(n.sw.poll(Time::from_secs(2))))
        });
        let st = n.sw.stats();
        let dns = st.stage("dns").expect("dns stage");
        assert_eq!(
            (dns.output, dns.dropped()),
            (dns.rx, 0),
            "every query answered"
        );
    }
    g.finish();
}

/// A batch of `burst` packets refilled from `frames`, every packet with metadata `meta`.
fn refill(b: &mut Batch, frames: &[Vec<u8>], burst: usize, meta: Meta, k: &mut usize) {
    b.clear();
    for _ in 0..burst {
        let f = &frames[*k % frames.len()];
        *k += 1;
        let slot = &mut b.spare_mut()[0];
        slot.set_frame(f).expect("bench frame fits");
        slot.meta = meta;
        b.grow(1);
    }
}

/// Time `stages` (in order) over a refilled batch of `frames` with metadata `meta`.
fn bench_stages(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    sw: &mut Switch,
    stages: &[&str],
    frames: &[Vec<u8>],
    meta: Meta,
) {
    for burst in BURSTS {
        g.throughput(Throughput::Elements(burst as u64));
        let mut b = Batch::with_buf_size(32, 2176);
        let mut k = 0;
        let idx: Vec<usize> = stages
            .iter()
            .map(|s| sw.stage_idx(s).expect("stage"))
            .collect();
        g.bench_with_input(BenchmarkId::new(name, burst), &burst, |bch, _| {
            bch.iter(|| {
                refill(&mut b, frames, burst, meta, &mut k);
                let mut live = mask_of(burst);
                for &i in &idx {
                    live = sw.run_stage_on(i, &mut b, live);
                }
                black_box(live)
            })
        });
    }
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("stage");
    let l2: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| frames::udp(mac(11), mac(12), ip(11), ip(12), 40000 + i, 7, b"x"))
        .collect();
    let mut n = node(BenchPorts {
        c11: None,
        underlay: None,
    });
    let c11 = Meta {
        in_port: n.sw.port_id("c11").expect("c11"),
        ..Meta::default()
    };
    bench_stages(&mut g, "refill", &mut n.sw, &[], &l2, c11);
    bench_stages(&mut g, "l2-parse", &mut n.sw, &["l2-parse"], &l2, c11);
    bench_stages(
        &mut g,
        "l2-parse+l2-learn",
        &mut n.sw,
        &["l2-parse", "l2-learn"],
        &l2,
        c11,
    );
    bench_stages(
        &mut g,
        "l2-parse+arp-proxy",
        &mut n.sw,
        &["l2-parse", "arp-proxy"],
        &l2,
        c11,
    );
    bench_stages(
        &mut g,
        "l2-parse+dns",
        &mut n.sw,
        &["l2-parse", "dns"],
        &l2,
        c11,
    );
    bench_stages(
        &mut g,
        "l2-parse+dns_query",
        &mut n.sw,
        &["l2-parse", "dns"],
        &dns_queries(),
        c11,
    );
    bench_stages(
        &mut g,
        "l2-parse+l2-fwd",
        &mut n.sw,
        &["l2-parse", "l2-fwd"],
        &l2,
        c11,
    );
    // lb-nat on established flows: prime one SYN per flow, then ACKs.
    let syn = to_vip(TcpFlags::SYN);
    let mut b = Batch::with_buf_size(32, 2176);
    let mut k = 0;
    let (parse, lb) = (
        n.sw.stage_idx("l2-parse").unwrap(),
        n.sw.stage_idx("lb-nat").unwrap(),
    );
    for _ in 0..(FLOWS as usize).div_ceil(32) {
        refill(&mut b, &syn, 32, c11, &mut k);
        let live = n.sw.run_stage_on(parse, &mut b, mask_of(32));
        n.sw.run_stage_on(lb, &mut b, live);
    }
    bench_stages(
        &mut g,
        "l2-parse+lb-nat_established",
        &mut n.sw,
        &["l2-parse", "lb-nat"],
        &to_vip(TcpFlags::ACK),
        c11,
    );
    // vxlan-decap on datagrams from n2.
    let ul = Meta {
        in_port: n.sw.port_id("underlay").expect("underlay"),
        peer: Some(N2_PEER),
        ..Meta::default()
    };
    bench_stages(
        &mut g,
        "vxlan-decap",
        &mut n.sw,
        &["vxlan-decap"],
        &from_n2(&l2),
        ul,
    );
    // vxlan-encap on the underlay's transmit batch: frames toward n2's VTEP.
    let to_n2 = Meta {
        to_vtep: Some(VtepId(0)),
        ..c11
    };
    bench_stages(
        &mut g,
        "vxlan-encap",
        &mut n.sw,
        &["vxlan-encap"],
        &l2,
        to_n2,
    );
    g.finish();
}

criterion_group!(benches, stages, node_pipeline);
criterion_main!(benches);
