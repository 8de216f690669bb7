//! Criterion benches for ESP: sealing and opening one packet (64 B and 1450 B payloads:
//! AES-128-GCM with the ESP framing, in place), and the two stages over a burst of 32 VXLAN
//! datagrams with 64-byte inner frames; and what a key change costs for 100 peers and two keys:
//! deriving the SAs (done when a change is prepared, off the poll thread) against swapping the
//! derived ones in (what the poll thread does). Run: `cargo bench -p esp`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use esp::wire::packet_len_for;
use esp::{EspSas, Gcm, Key, OutboundSa, SaPlan, derive, open_packet, stages};
use vswitch::stage::{StageStats, mask_of, run_stage};
use vswitch::wire::ipv4;
use vswitch::{Batch, Env, FdbConfig};

const N1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BURST: usize = 32;
/// A VXLAN datagram around a 64-byte inner frame (60 without the FCS).
const VXLAN_64B: usize = 8 + 60;

fn key() -> Key {
    Key::from_bytes([0x5a; 20])
}

fn seal_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("esp");
    for size in [64usize, 1450] {
        g.throughput(Throughput::Bytes(size as u64));
        let mut sa = OutboundSa::new(&key(), N1, N2, 1);
        let mut buf = vec![0u8; packet_len_for(size)];
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, &size| {
            b.iter(|| black_box(sa.seal(black_box(&mut buf), size, 17)).unwrap())
        });
        let m = derive(&key(), N1, N2);
        let gcm = Gcm::for_sa(&m);
        let mut sealed = vec![0u8; packet_len_for(size)];
        sa.seal(&mut sealed, size, 17).unwrap();
        // (the copy back into place is outside the measurement)
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |p| black_box(open_packet(&gcm, black_box(p))).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn stage_burst(c: &mut Criterion) {
    let mut sas1 = EspSas::new(N1);
    sas1.set(&[key()], &[N1, N2], 1);
    let (mut enc1, _) = stages(sas1);
    let mut sas2 = EspSas::new(N2);
    sas2.set(&[key()], &[N1, N2], 1);
    let (_, mut dec2) = stages(sas2);
    let mut env = Env::new(FdbConfig::default());
    let vx = {
        let mut v = vec![0u8; VXLAN_64B];
        v[0] = 0x08;
        v
    };
    let plain_batch = || {
        let mut b = Batch::new(BURST);
        for _ in 0..BURST {
            b.push_frame(&vx).unwrap().meta.peer = Some(SocketAddrV4::new(N2, 4789));
        }
        b
    };

    let mut g = c.benchmark_group("esp-stages");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut st = StageStats::for_stage(&enc1);
    g.bench_function("esp-encrypt/burst32", |b| {
        b.iter_batched_ref(
            plain_batch,
            |batch| run_stage(&mut enc1, &mut st, batch, &mut env, mask_of(BURST)),
            BatchSize::LargeInput,
        )
    });
    // each iteration decrypts fresh packets (new sequence numbers), sealed outside the
    // measurement and put behind the outer IPv4 header a raw socket shows
    let mut enc_src = {
        let mut s = EspSas::new(N1);
        s.set(&[key()], &[N1, N2], 2);
        stages(s).0
    };
    let mut st_src = StageStats::for_stage(&enc_src);
    let mut env_src = Env::new(FdbConfig::default());
    let mut st = StageStats::for_stage(&dec2);
    g.bench_function("esp-decrypt/burst32", |b| {
        b.iter_batched_ref(
            || {
                let mut sealed = plain_batch();
                run_stage(
                    &mut enc_src,
                    &mut st_src,
                    &mut sealed,
                    &mut env_src,
                    mask_of(BURST),
                );
                let mut rx = Batch::new(BURST);
                for p in sealed.pkts() {
                    let mut f = vec![0u8; ipv4::HEADER_LEN + p.len()];
                    let mut ip = ipv4::Packet::new_unchecked(&mut f[..]);
                    ip.set_version(4);
                    ip.set_header_len(ipv4::HEADER_LEN);
                    ip.set_total_len((ipv4::HEADER_LEN + p.len()) as u16);
                    ip.set_protocol(esp::wire::PROTO_ESP);
                    ip.set_src_addr(N1);
                    ip.set_dst_addr(N2);
                    f[ipv4::HEADER_LEN..].copy_from_slice(p.data());
                    rx.push_frame(&f).unwrap();
                }
                rx
            },
            |rx| run_stage(&mut dec2, &mut st, rx, &mut env, mask_of(BURST)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
    assert_eq!(st.dropped(), 0, "{:?}", st.drops);
}

fn key_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("esp-key-change-100-peers-2-keys");
    let keys = [key(), Key::from_bytes([0x33; 20])];
    let peers: Vec<Ipv4Addr> = (2..102).map(|i| Ipv4Addr::new(198, 18, 0, i)).collect();
    g.bench_function("derive (change prepared, control thread)", |b| {
        b.iter(|| black_box(SaPlan::new(N1, black_box(&keys), &peers, 0)))
    });
    let (mut out, mut inb) = EspSas::new(N1).into_halves();
    g.bench_function("swap in (commit, poll thread)", |b| {
        b.iter_batched(
            || SaPlan::new(N1, &keys, &peers, 0),
            |mut plan| {
                plan.renumber(7);
                out.apply(plan.outbound);
                inb.apply(plan.inbound);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, seal_open, stage_burst, key_change);
criterion_main!(benches);
