//! Load balancer benches: established-flow NAT at burst 32, new connections (schedule +
//! insert), conntrack lookups at 1K / 100K / 1M entries, and bytes per entry at 1M.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lb::conntrack::{Conn, ConnTable, Dir};
use lb::packet::{PROTO_TCP, TCP_ACK, TCP_SYN};
use lb::{
    BackendConfig, Balancer, BalancerConfig, Protocol, SchedulerKind, ServiceConfig, ServiceKey,
};
use vswitch::{NetId, Time};

const BURST: usize = 32;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);

fn csum(d: &[u8]) -> u16 {
    !lb::checksum::fold(lb::checksum::sum(d))
}

/// An Ethernet + IPv4 + TCP frame with valid checksums.
fn frame(src: u32, sport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + 6];
    f[12] = 0x08;
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = PROTO_TCP;
    ip[12..16].copy_from_slice(&src.to_be_bytes());
    ip[16..20].copy_from_slice(&u32::from(VIP).to_be_bytes());
    let c = csum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&80u16.to_be_bytes());
    ip[32] = 0x50;
    ip[33] = flags;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, PROTO_TCP, 0, 26]);
    pseudo.extend_from_slice(&ip[20..46]);
    let c = csum(&pseudo);
    ip[36..38].copy_from_slice(&c.to_be_bytes());
    f
}

fn balancer(max: usize) -> (Balancer, ServiceKey) {
    let mut lb = Balancer::new(BalancerConfig {
        max_conns: max,
        ..BalancerConfig::default()
    });
    let key = ServiceKey::Addr {
        net: NetId(0),
        proto: Protocol::Tcp,
        addr: VIP,
        port: 80,
    };
    lb.add_service(ServiceConfig {
        key,
        scheduler: SchedulerKind::Rr,
        backend_net: NetId(0),
        snat: None,
    })
    .unwrap();
    for i in 0..3u8 {
        let b = BackendConfig {
            addr: Ipv4Addr::new(10, 0, 9, 12 + i),
            port: 80,
            weight: 1,
            mac: [2, 0x42, 10, 0, 9, 12 + i],
        };
        lb.add_backend(&key, b).unwrap();
    }
    (lb, key)
}

fn client(i: u32) -> (u32, u16) {
    (
        0x0a00_0000 | (i >> 10 & 0xffff) << 8 | 11,
        1024 + (i & 0x3ff) as u16,
    )
}

fn established(c: &mut Criterion) {
    const FLOWS: u32 = 4096;
    let (mut lb, _) = balancer(1 << 16);
    let now = Time::from_secs(1);
    let mut pristine = Vec::new();
    for i in 0..FLOWS {
        let (a, p) = client(i);
        lb.process(&mut frame(a, p, TCP_SYN), 14, NetId(0), now);
        let mut ack = frame(a, p, TCP_ACK);
        lb.process(&mut ack.clone(), 14, NetId(0), now);
        ack.truncate(60);
        pristine.push(frame(a, p, TCP_ACK));
    }
    let mut work: Vec<Vec<u8>> = (0..BURST).map(|i| pristine[i].clone()).collect();
    let mut g = c.benchmark_group("lb");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut next = 0usize;
    g.bench_function("established_nat_burst32", |b| {
        b.iter(|| {
            for w in work.iter_mut() {
                w.copy_from_slice(&pristine[next]);
                next = (next + 1) % FLOWS as usize;
            }
            for w in work.iter_mut() {
                black_box(lb.process(w, 14, NetId(0), now));
            }
        })
    });
    g.finish();
}

fn new_conns(c: &mut Criterion) {
    const N: u32 = 32 * 1024;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let (a, p) = client(i);
            frame(a, p, TCP_SYN)
        })
        .collect();
    let mut g = c.benchmark_group("lb");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.sample_size(10);
    g.bench_function("new_conns_schedule_insert", |b| {
        b.iter_batched(
            || (balancer(N as usize * 2).0, frames.clone()),
            |(mut lb, mut fs)| {
                for f in fs.iter_mut() {
                    black_box(lb.process(f, 14, NetId(0), Time::from_secs(1)));
                }
                lb
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack_lookup");
    for n in [1_000u32, 100_000, 1_000_000] {
        let mut t = ConnTable::new(n as usize, 42);
        let mut keys = Vec::new();
        for i in 0..n {
            let (a, p) = client(i);
            let conn = Conn {
                caddr: a,
                vaddr: u32::from(VIP),
                daddr: 0x0a00_090c + i % 3,
                laddr: a,
                cport: p,
                vport: 80,
                dport: 80,
                lport: p,
                proto: PROTO_TCP,
                ..Conn::default()
            };
            t.insert(conn).unwrap();
            keys.push(conn.key(if i % 2 == 0 { Dir::Orig } else { Dir::Reply }));
        }
        if n == 1_000_000 {
            eprintln!(
                "conntrack bytes per entry at 1M: {:.1}",
                t.memory_bytes() as f64 / f64::from(n)
            );
        }
        // Random order defeats the cache as real traffic does.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        // The keys themselves are laid out in that order, so reading the next burst's keys is
        // sequential: the bench measures the table's random accesses, not its own.
        let keys: Vec<_> = order.iter().map(|&i| keys[i]).collect();
        // A warm working set: 4096 active connections spread over the table (most of a large
        // table is idle connections waiting to expire).
        let hot: Vec<_> = keys.iter().take(4096.min(keys.len())).copied().collect();
        for (what, keys) in [("uniform", &keys), ("hot4k", &hot)] {
            let mut pos = 0usize;
            g.throughput(Throughput::Elements(BURST as u64));
            g.bench_function(format!("{n}_{what}_burst32_prefetch"), |b| {
                b.iter(|| {
                    let ks = &keys[pos..pos + BURST];
                    let mut hs = [0u32; BURST];
                    for (h, k) in hs.iter_mut().zip(ks) {
                        *h = t.hash(k);
                        t.prefetch(*h);
                    }
                    for h in hs.iter() {
                        t.prefetch_entry(*h);
                    }
                    for (h, k) in hs.iter().zip(ks) {
                        black_box(t.lookup_hashed(k, *h));
                    }
                    pos = (pos + BURST) % (keys.len() - BURST);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, established, new_conns, lookups);
criterion_main!(benches);
