//! What one sample of the receiver watcher costs: a `sock_diag` dump of the UDP sockets of the
//! namespace the bench runs in, IPv4 and IPv6 (`UdpDiag::dump`), against a lookup of one socket
//! the dump found (`UdpDiag::lookup`, the kernel's `udp_dump_one`). The kernel walks its whole
//! UDP hash table for each family of a dump, so its cost is mostly the table's size, not the
//! sockets'; a lookup is one hash lookup. Binds one UDP socket on the loopback (port chosen by
//! the kernel) to look up; sends nothing. `cargo bench -p vswitch --bench sockdiag`.

use std::net::UdpSocket;

use criterion::{Criterion, criterion_group, criterion_main};
use vswitch::port::sockdiag::UdpDiag;

fn dump(c: &mut Criterion) {
    let mut diag = UdpDiag::open().expect("a sock_diag socket");
    let mut socks = Vec::new();
    c.bench_function("sockdiag/udp_dump_v4_v6", |b| {
        b.iter(|| diag.dump(&mut socks).expect("dump"))
    });
}

fn lookup(c: &mut Criterion) {
    let mut diag = UdpDiag::open().expect("a sock_diag socket");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("a loopback UDP socket");
    let port = sock.local_addr().expect("its address").port();
    let mut socks = Vec::new();
    diag.dump(&mut socks).expect("dump");
    let ours = *socks
        .iter()
        .find(|s| s.port == port)
        .expect("the bench's socket in the dump");
    c.bench_function("sockdiag/udp_lookup_one", |b| {
        b.iter(|| diag.lookup(&ours).expect("lookup").expect("still there"))
    });
}

criterion_group!(benches, dump, lookup);
criterion_main!(benches);
