//! Criterion bench of the UDP underlay's socket (`port::udp::socket`): one `sendmmsg` + one
//! `recvmmsg` of a burst of 32 VXLAN datagrams (64-byte inner frames) over loopback, the
//! syscall cost per packet. Run: `cargo bench -p vswitch --bench underlay`.

use core::net::{Ipv4Addr, SocketAddrV4};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vswitch::Mac;
use vswitch::frames;
use vswitch::port::udp::UdpUnderlay;
use vswitch::port::udp::socket::DEFAULT_BUF_SIZE;
use vswitch::wire::vxlan::{Repr, Vni};

/// Burst size, as the poll loop processes it.
const BURST: usize = 32;
/// Inner frame size: the minimum Ethernet frame.
const INNER_LEN: usize = 64;
/// Docker's first overlay VNI.
const VNI: u32 = 4097;
/// UDP payload of a 64-byte inner IPv4/UDP frame (14 + 20 + 8 + 22).
const INNER_PAYLOAD: usize = 22;

/// A burst of VXLAN datagrams carrying 64-byte inner IPv4/UDP frames, one flow each.
fn burst() -> Vec<Vec<u8>> {
    let repr = Repr {
        vni: Vni::new(VNI).unwrap(),
    };
    (0..BURST)
        .map(|i| {
            let inner = frames::udp(
                Mac([0x02, 0x42, 0x0a, 0x00, 0x09, 0x0b]),
                Mac([0x02, 0x42, 0x0a, 0x00, 0x09, 0x15]),
                Ipv4Addr::new(10, 0, 9, 11),
                Ipv4Addr::new(10, 0, 9, 21),
                40000 + i as u16,
                80,
                &[0u8; INNER_PAYLOAD],
            );
            assert_eq!(inner.len(), INNER_LEN);
            let mut d = repr.to_bytes().to_vec();
            d.extend_from_slice(&inner);
            d
        })
        .collect()
}

fn underlay(c: &mut Criterion) {
    let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let mut rx = UdpUnderlay::bind(any, BURST).unwrap();
    let mut tx = UdpUnderlay::bind(any, BURST).unwrap();
    let dst = rx.local_addr();
    let datagrams = burst();
    let mut slots = vec![vec![0u8; DEFAULT_BUF_SIZE]; BURST];
    let mut group = c.benchmark_group("vxlan-underlay");
    group.throughput(Throughput::Elements(BURST as u64));
    // One sendmmsg and one recvmmsg per burst over loopback: the syscall cost per packet.
    group.bench_function("loopback-send-recv/burst32", |b| {
        b.iter(|| {
            let sent = tx.send_slices(datagrams.iter().map(|d| (dst, &d[..]))).sent;
            let mut got = 0;
            while got < sent {
                got += rx.recv_slots(slots.iter_mut().map(|s| &mut s[..])).unwrap();
            }
            got
        })
    });
    group.finish();
}

criterion_group!(benches, underlay);
criterion_main!(benches);
