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
    Batch, Env, FdbConfig, GenPort, Mac, Meta, NetId, Network, PortId, PortRole, SinkPort, Switch,
    Time, Tunnel, VtepId,
};
use vxlan::peer::{PEER_PREFIX_LEN, write_peer};
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

/// What the UDP underlay port hands to decap: peer prefix (n2), VXLAN header, inner frame.
fn from_n2(inner: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; ENCAP_LEN];
    write_peer(&mut d, SocketAddrV4::new(N2, VXLAN_PORT));
    d[PEER_PREFIX_LEN..].copy_from_slice(
        &Repr {
            vni: Vni::new(VNI).unwrap(),
        }
        .to_bytes(),
    );
    d.extend_from_slice(inner);
    d
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan-stage");
    g.throughput(Throughput::Elements(BURST as u64));

    // decap: the stage as the switch runs it (run_stage counts outcomes too); after each run
    // the 16 stripped bytes are pushed back (no copy: they are still in the buffer).
    let (mut env, _, _) = lab_env();
    let mut stage = VxlanDecap::new();
    let mut stats = StageStats::for_stage(&stage);
    let mut batch = Batch::new(BURST);
    for f in inner_frames(21, 11).iter().take(BURST) {
        batch.push_frame(&from_n2(f)).unwrap();
    }
    g.bench_function("decap/burst32", |b| {
        b.iter(|| {
            let live = run_stage(&mut stage, &mut stats, &mut batch, &mut env, mask_of(BURST));
            for p in batch.pkts_mut() {
                p.push_front(ENCAP_LEN);
                p.meta = Meta::default();
            }
            black_box(live)
        })
    });
    assert_eq!(stats.rx, stats.cont, "every frame decapsulated: {stats:?}");

    // encap: the tunnel on each frame of a burst, then the 16 bytes pulled off again.
    let (env, net, n2) = lab_env();
    let mut encap = VxlanEncap::new(PortId(1));
    let mut batch = Batch::new(BURST);
    for f in inner_frames(11, 21).iter().take(BURST) {
        batch.push_frame(f).unwrap().meta.net = net;
    }
    let mut refused = 0u64;
    g.bench_function("encap/burst32", |b| {
        b.iter(|| {
            for p in batch.pkts_mut() {
                refused += u64::from(encap.encap(p, n2, &env).is_err());
            }
            for p in batch.pkts_mut() {
                p.pull_front(ENCAP_LEN);
            }
            black_box(&batch);
        })
    });
    assert_eq!(refused, 0);
    g.finish();
}

/// L2 + encap: generator local port (c11 -> c21, a remote MAC) -> l2 -> vxlan-encap -> sink.
fn l2_encap_switch(burst: usize) -> Switch {
    let (env, net, _) = lab_env();
    let (mut sw, l2) = Switch::with_l2(env);
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
    sw.set_tunnel(Box::new(VxlanEncap::new(ul)));
    sw
}

/// Decap + L2: generator underlay (from n2 to c11) -> vxlan-decap -> l2 -> sink local port.
fn decap_l2_switch(burst: usize) -> Switch {
    let (env, net, _) = lab_env();
    let (mut sw, l2) = Switch::with_l2(env);
    let decap = sw.add_stage(VxlanDecap::new());
    let frames = inner_frames(21, 11).iter().map(|f| from_n2(f)).collect();
    sw.add_port(
        "underlay",
        Box::new(GenPort::new(frames, burst)),
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
    sw.set_tunnel(Box::new(VxlanEncap::new(PortId(0))));
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
