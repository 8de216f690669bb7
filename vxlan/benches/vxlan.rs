//! Criterion benches for the VXLAN header: parse/emit for 64-byte inner frames at burst 32 (the
//! UDP underlay's loopback bench is `vswitch/benches/underlay.rs`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vxlan::wire::{self, HEADER_LEN, Packet, Repr, Vni};

/// Burst size, as the poll loop processes it.
const BURST: usize = 32;
/// Inner frame size: the minimum Ethernet frame.
const INNER_LEN: usize = 64;
/// Docker's first overlay VNI.
const VNI: u32 = 4097;
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

criterion_group!(benches, header);
criterion_main!(benches);
