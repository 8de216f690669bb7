//! What one sample of the receiver watcher costs: a `sock_diag` dump of the UDP sockets of the
//! namespace the bench runs in, IPv4 and IPv6 (`UdpDiag::dump`). The kernel walks its whole UDP
//! hash table for each family, so the cost is mostly the table's size, not the sockets'.
//! Reads only; binds nothing. `cargo bench -p vswitch --bench sockdiag`.

use criterion::{Criterion, criterion_group, criterion_main};
use vswitch::port::sockdiag::UdpDiag;

fn dump(c: &mut Criterion) {
    let mut diag = UdpDiag::open().expect("a sock_diag socket");
    let mut socks = Vec::new();
    c.bench_function("sockdiag/udp_dump_v4_v6", |b| {
        b.iter(|| diag.dump(&mut socks).expect("dump"))
    });
}

criterion_group!(benches, dump);
criterion_main!(benches);
