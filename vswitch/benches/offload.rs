//! Offload benches: what the switch does in software for a TAP's TCP super-frames
//! (`vswitch::offload`): finishing a partial checksum, cutting a 64 KB super-frame into
//! MSS-sized segments, and merging a batch of segments back into one (GRO); each also in the
//! form the ports use, headers only with the payload left in place for a gathering system call
//! (`*_headers_only`). Throughput is in bytes of frame. Run: `cargo bench -p vswitch --bench offload`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::net::Ipv4Addr;
use vswitch::offload::{self, Offload, Tcp4Gso};
use vswitch::wire::{checksum, ethernet, ipv4, tcp};

use vswitch::Packet;
use vswitch::frames::{self, TcpFlags};

const MSS: usize = 1398;
/// 46 full segments: what a 64 KB TSO write from the container becomes.
const SUPER_PAYLOAD: usize = 46 * MSS;

/// A TCP/IPv4 frame (20-byte TCP header, no options) with a partial checksum, as a TAP with offloads
/// hands it over.
fn tcp_frame(payload: usize) -> (Vec<u8>, Offload) {
    let data: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
    let mut f = frames::tcp(
        vswitch::Mac([2, 0x42, 10, 0, 9, 12]),
        vswitch::Mac([2, 0x42, 10, 0, 9, 22]),
        Ipv4Addr::new(10, 0, 9, 12),
        Ipv4Addr::new(10, 0, 9, 22),
        40000,
        5201,
        TcpFlags {
            ack: true,
            ..TcpFlags::default()
        },
        1,
        1,
        &data,
    );
    // Partial: the checksum field holds the pseudo-header sum.
    let l4 = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let ip = ipv4::Packet::new_unchecked(&f[ethernet::HEADER_LEN..]);
    let p = checksum::pseudo_sum(ip.addrs(), ipv4::PROTO_TCP, f.len() - l4);
    tcp::Packet::new_unchecked(&mut f[l4..]).set_checksum(p);
    let o = Offload {
        needs_csum: true,
        csum_start: l4 as u16,
        csum_offset: tcp::field::CHECKSUM.start as u16,
        gso_size: 0,
    };
    (f, o)
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    let (frame, o) = tcp_frame(MSS);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("finish_checksum_1452B", |b| {
        let mut f = frame.clone();
        b.iter(|| {
            let mut o = o;
            offload::finish_checksum(black_box(&mut f), &mut o);
        })
    });

    let (big, mut bo) = tcp_frame(SUPER_PAYLOAD);
    bo.gso_size = MSS as u16;
    let gso = Tcp4Gso::new(&big, &bo).expect("a valid super-frame");
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("cut_64KB_into_46_segments", |b| {
        let mut out = vec![0u8; 2048];
        b.iter(|| {
            for k in 0..gso.segments() {
                black_box(gso.write(black_box(&big), k, &mut out));
            }
        })
    });

    // What the UDP underlay does instead (it takes super-frames): only each segment's headers,
    // the checksum reading the payload where it lies, and the payload left for sendmmsg to
    // gather.
    g.bench_function("cut_64KB_headers_only_46_segments", |b| {
        let mut hdr = vec![0u8; gso.hdr_len];
        b.iter(|| {
            for k in 0..gso.segments() {
                gso.write_header(black_box(&big), k, &mut hdr);
                black_box(&big[gso.payload_range(k)]);
            }
        })
    });

    let segs: Vec<Packet> = (0..32)
        .map(|k| {
            let mut out = vec![0u8; 2048];
            let n = gso.write(&big, k, &mut out);
            Packet::from_frame(&out[..n])
        })
        .collect();
    assert_eq!(offload::gro_run(&segs), 32);
    g.throughput(Throughput::Bytes(segs.iter().map(|p| p.len() as u64).sum()));
    g.bench_function("merge_32_segments", |b| {
        let mut out = vec![0u8; offload::GSO_MAX_FRAME];
        b.iter(|| {
            let n = offload::gro_run(black_box(&segs));
            black_box(offload::gro_merge(&segs[..n], &mut out));
        })
    });
    // What the TAP does instead (a writev of the merged headers and the payloads where they
    // lie): the run found, its checksums checked, the headers built.
    g.bench_function("merge_32_segments_headers_only", |b| {
        let mut hdr = [0u8; offload::GRO_MAX_HEADER];
        b.iter(|| {
            let n = offload::gro_run(black_box(&segs));
            black_box(offload::gro_header(&segs[..n], &mut hdr));
            for p in &segs[..n] {
                black_box(offload::gro_payload(p.data(), 54));
            }
        })
    });
    g.finish();
}

criterion_group!(offload_benches, benches);
criterion_main!(offload_benches);
