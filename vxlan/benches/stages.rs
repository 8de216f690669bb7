//! Criterion benches for the VXLAN stages: `vxlan-decap` and `vxlan-encap` alone at burst 32
//! with 64-byte inner frames, and end to end through a [`Switch`]: L2 + encap (generator local
//! port -> l2 stages -> remote MAC -> vxlan-encap -> sink underlay) and decap + L2 (generator
//! underlay -> vxlan-decap -> l2 stages -> sink local port), at burst 1, 8 and 32.
//! Run: `cargo bench -p vxlan --bench stages`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vswitch::fdb::FdbDest;
use vswitch::stage::{StageStats, mask_of, run_stage};
use vswitch::{
    Batch, Env, FdbConfig, GenPort, Mac, Meta, NetId, Network, PortRole, SinkPort, Switch, Time,
    VtepId,
};
use vxlan::{ENCAP_LEN, Repr, VXLAN_PORT, Vni, VxlanDecap, VxlanEncap};

/// Burst size of the per-stage benches.
const BURST: usize = 32;
/// A 64-byte frame on the wire is 60 bytes without the FCS: 42 bytes of headers + 18 of payload.
const PAYLOAD_64B: usize = 18;
/// Docker's first overlay VNI.
const VNI: u32 = 4097;
const MTU: u16 = 1450;
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Flows in the generated traffic (distinct UDP source ports).
const FLOWS: u16 = 64;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}

/// appnet with peer n2, c21 (remote, static on n2) and c11 (static on local port 0).
fn lab_env() -> (Env, NetId, VtepId) {
    let mut env = Env::new(FdbConfig::default());
    let net = env.add_network(Network::new("appnet", VNI, MTU));
    let n2 = env.add_vtep(N2, "n2");
    env.nets[net.0 as usize].peers = vec![n2];
    env.fdb
        .add_static(net, mac(21), FdbDest::Remote(n2))
        .unwrap();
    env.now = Time::from_secs(1);
    (env, net, n2)
}

/// 64-byte inner frames between `src` and `dst`, one flow each.
fn inner_frames(src: u8, dst: u8) -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| {
            let f = vswitch::frames::udp(
                mac(src),
                mac(dst),
                ip(src),
                ip(dst),
                10_000 + i,
                5001,
                &[0u8; PAYLOAD_64B],
            );
            assert_eq!(f.len(), 60);
            f
        })
        .collect()
}

/// n2's underlay address, what the UDP underlay port records in `meta.peer`.
const N2_PEER: SocketAddrV4 = SocketAddrV4::new(N2, VXLAN_PORT);

/// What the UDP underlay port hands to decap (from n2, in `meta.peer`): VXLAN header, inner
/// frame.
fn from_n2(inner: &[u8]) -> Vec<u8> {
    let mut d = Repr {
        vni: Vni::new(VNI).unwrap(),
    }
    .to_bytes()
    .to_vec();
    d.extend_from_slice(inner);
    d
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan-stage");
    g.throughput(Throughput::Elements(BURST as u64));

    // decap: the stage as the switch runs it (run_stage counts outcomes too); after each run
    // the 8 stripped bytes are pushed back (no copy: they are still in the buffer).
    let (mut env, _, _) = lab_env();
    let mut stage = VxlanDecap::new();
    let mut stats = StageStats::for_stage(&stage);
    let mut batch = Batch::new(BURST);
    for f in inner_frames(21, 11).iter().take(BURST) {
        batch.push_frame(&from_n2(f)).unwrap().meta.peer = Some(N2_PEER);
    }
    g.bench_function("decap/burst32", |b| {
        b.iter(|| {
            let live = run_stage(&mut stage, &mut stats, &mut batch, &mut env, mask_of(BURST));
            for p in batch.pkts_mut() {
                p.push_front(ENCAP_LEN);
                p.meta = Meta {
                    peer: Some(N2_PEER),
                    ..Meta::default()
                };
            }
            black_box(live)
        })
    });
    assert_eq!(stats.rx, stats.cont, "every frame decapsulated: {stats:?}");

    // encap: the stage as the underlay's transmit path runs it, then the 8 bytes pulled off
    // again.
    let (mut env, net, n2) = lab_env();
    let mut encap = VxlanEncap::new();
    let mut stats = StageStats::for_stage(&encap);
    let mut batch = Batch::new(BURST);
    for f in inner_frames(11, 21).iter().take(BURST) {
        let m = &mut batch.push_frame(f).unwrap().meta;
        m.net = net;
        m.to_vtep = Some(n2);
    }
    g.bench_function("encap/burst32", |b| {
        b.iter(|| {
            let live = run_stage(&mut encap, &mut stats, &mut batch, &mut env, mask_of(BURST));
            for p in batch.pkts_mut() {
                p.pull_front(ENCAP_LEN);
            }
            black_box(live)
        })
    });
    assert_eq!(stats.rx, stats.cont, "every frame encapsulated: {stats:?}");
    g.finish();
}

/// L2 + encap: generator local port (c11 -> c21, a remote MAC) -> l2 -> vxlan-encap -> sink.
fn l2_encap_switch(burst: usize) -> Switch {
    let (env, net, _) = lab_env();
    let (mut sw, l2) = Switch::with_l2(env);
    let encap = sw.add_stage(VxlanEncap::new());
    sw.add_port(
        "c11",
        Box::new(GenPort::new(inner_frames(11, 21), burst)),
        PortRole::Local(net),
        l2.local_path(&[]),
    );
    let ul = sw.add_port(
        "underlay",
        Box::new(SinkPort::default()),
        PortRole::Underlay,
        vec![],
    );
    sw.set_tx_path(ul, vec![encap.idx()]);
    sw
}

/// Decap + L2: generator underlay (from n2 to c11) -> vxlan-decap -> l2 -> sink local port.
fn decap_l2_switch(burst: usize) -> Switch {
    let (env, net, _) = lab_env();
    let (mut sw, l2) = Switch::with_l2(env);
    let decap = sw.add_stage(VxlanDecap::new());
    let encap = sw.add_stage(VxlanEncap::new());
    let frames = inner_frames(21, 11).iter().map(|f| from_n2(f)).collect();
    let ul = sw.add_port(
        "underlay",
        Box::new({
            let mut g = GenPort::new(frames, burst);
            g.peer = Some(N2_PEER);
            g
        }),
        PortRole::Underlay,
        vec![decap.idx(), l2.parse.idx(), l2.learn.idx(), l2.fwd.idx()],
    );
    let c11 = sw.add_port(
        "c11",
        Box::new(SinkPort::default()),
        PortRole::Local(net),
        l2.local_path(&[]),
    );
    sw.env
        .fdb
        .add_static(net, mac(11), FdbDest::Local(c11))
        .unwrap();
    sw.set_tx_path(ul, vec![encap.idx()]);
    sw
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan-pipeline");
    for (what, make, outcome) in [
        (
            "l2_encap",
            l2_encap_switch as fn(usize) -> Switch,
            "vxlan-encap",
        ),
        ("decap_l2", decap_l2_switch, "vxlan-decap"),
    ] {
        for burst in [1usize, 8, BURST] {
            let mut sw = make(burst);
            g.throughput(Throughput::Elements(burst as u64));
            g.bench_with_input(BenchmarkId::new(what, burst), &burst, |b, _| {
                b.iter(|| black_box(sw.poll(Time::from_secs(1))))
            });
            let st = sw.stats();
            for s in &st.stages {
                assert_eq!(s.rx, s.outcomes(), "{s:?}");
                assert_eq!(s.dropped(), 0, "nothing dropped on the benched path: {s:?}");
            }
            let s = st.stage(outcome).unwrap();
            assert!(s.output + s.cont > 0, "{s:?}");
        }
    }
    g.finish();
}

criterion_group!(benches, stages, pipeline);
criterion_main!(benches);
