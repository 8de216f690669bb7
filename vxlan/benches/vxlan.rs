//! Criterion benches for the VXLAN pieces: header parse/emit, outer header build (precomputed
//! template and from scratch) for 64-byte inner frames at burst 32, and the flow hash.

use core::net::Ipv4Addr;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vxlan::outer::{self, OUTER_HEADER_LEN, OuterConfig, OuterTemplate};
use vxlan::wire::{self, HEADER_LEN, Packet, Repr, Vni};

/// Burst size, as the poll loop processes it.
const BURST: usize = 32;
/// Inner frame size: the minimum Ethernet frame.
const INNER_LEN: usize = 64;
/// Docker's first overlay VNI.
const VNI: u32 = 4097;

/// A burst of 64-byte inner IPv4/UDP frames, one flow each, behind room for the outer header.
fn burst() -> Vec<[u8; OUTER_HEADER_LEN + INNER_LEN]> {
    (0..BURST)
        .map(|i| {
            let mut buf = [0u8; OUTER_HEADER_LEN + INNER_LEN];
            let inner = &mut buf[OUTER_HEADER_LEN..];
            inner[..6].copy_from_slice(&[0x02, 0x42, 0x0a, 0x00, 0x09, 0x15]);
            inner[6..12].copy_from_slice(&[0x02, 0x42, 0x0a, 0x00, 0x09, 0x0b]);
            inner[12..14].copy_from_slice(&[0x08, 0x00]);
            inner[14] = 0x45;
            inner[23] = 17;
            inner[26..30].copy_from_slice(&[10, 0, 9, 11]);
            inner[30..34].copy_from_slice(&[10, 0, 9, 21]);
            inner[34..36].copy_from_slice(&(40000 + i as u16).to_be_bytes());
            inner[36..38].copy_from_slice(&80u16.to_be_bytes());
            buf
        })
        .collect()
}

fn config(udp_checksum: bool) -> OuterConfig {
    let mut config = OuterConfig::new(
        [0x02, 0, 0xc6, 0x12, 0, 1],
        [0x02, 0, 0xc6, 0x12, 0, 2],
        Ipv4Addr::new(198, 18, 0, 1),
        Ipv4Addr::new(198, 18, 0, 2),
        Vni::new(VNI).unwrap(),
    );
    config.udp_checksum = udp_checksum;
    config
}

fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("vxlan-header");
    group.throughput(Throughput::Elements(BURST as u64));
    let repr = Repr {
        vni: Vni::new(VNI).unwrap(),
    };
    let mut headers = vec![[0u8; HEADER_LEN + INNER_LEN]; BURST];
    for h in &mut headers {
        repr.emit(&mut Packet::new_unchecked(&mut h[..]));
    }
    group.bench_function("parse/burst32", |b| {
        b.iter(|| {
            let mut sum = 0u32;
            for h in &headers {
                let packet = Packet::new_checked(black_box(&h[..])).unwrap();
                sum = sum.wrapping_add(Repr::parse(&packet).unwrap().vni.get());
            }
            sum
        })
    });
    group.bench_function("emit/burst32", |b| {
        b.iter(|| {
            for h in &mut headers {
                black_box(repr).emit(&mut Packet::new_unchecked(&mut h[..wire::HEADER_LEN]));
            }
        })
    });
    group.finish();
}

fn outer_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("vxlan-outer");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut frames = burst();
    for udp_checksum in [false, true] {
        let config = config(udp_checksum);
        let csum = if udp_checksum { "udpcsum" } else { "nocsum" };
        let mut template = OuterTemplate::new(&config, 0);
        group.bench_function(BenchmarkId::new("template/burst32", csum), |b| {
            b.iter(|| {
                for f in &mut frames {
                    let (hdr, inner) = outer::split_outer(&mut f[..]).unwrap();
                    black_box(template.emit(hdr, inner).unwrap());
                }
            })
        });
        group.bench_function(BenchmarkId::new("full/burst32", csum), |b| {
            b.iter(|| {
                for (i, f) in frames.iter_mut().enumerate() {
                    let (hdr, inner) = outer::split_outer(&mut f[..]).unwrap();
                    outer::emit_outer(hdr, inner, black_box(&config), i as u16).unwrap();
                }
            })
        });
    }
    group.bench_function("flow-hash/burst32", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for f in &frames {
                acc ^= outer::flow_hash(black_box(&f[OUTER_HEADER_LEN..]), 0);
            }
            acc
        })
    });
    group.finish();
}

fn underlay(c: &mut Criterion) {
    use core::net::SocketAddrV4;
    use vxlan::underlay::{DEFAULT_BUF_SIZE, PacketBufs, UdpUnderlay};
    let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let mut rx = UdpUnderlay::bind(any, BURST).unwrap();
    let mut tx = UdpUnderlay::bind(any, BURST).unwrap();
    let dst = rx.local_addr();
    let datagrams: Vec<Vec<u8>> = burst()
        .iter()
        .map(|f| f[OUTER_HEADER_LEN - HEADER_LEN..].to_vec())
        .collect();
    let mut bufs = PacketBufs::new(BURST, DEFAULT_BUF_SIZE).unwrap();
    let mut group = c.benchmark_group("vxlan-underlay");
    group.throughput(Throughput::Elements(BURST as u64));
    // One sendmmsg and one recvmmsg per burst over loopback: the syscall cost per packet.
    group.bench_function("loopback-send-recv/burst32", |b| {
        b.iter(|| {
            let sent = tx.send_slices(datagrams.iter().map(|d| (dst, &d[..]))).sent;
            let mut got = 0;
            while got < sent {
                got += rx.recv(&mut bufs).unwrap().received;
            }
            got
        })
    });
    group.finish();
}

criterion_group!(benches, header, outer_header, underlay);
criterion_main!(benches);
