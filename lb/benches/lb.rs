//! Load balancer benches: established-flow NAT at burst 32 (per packet, and through the `lb-nat`
//! stage with 4K and with 1M connections, with the entries on the heap and in a file-backed
//! mapping), new connections (schedule + insert), conntrack
//! lookups at 1K / 100K / 1M entries with bytes per connection, and the memory floor (DRAM
//! latency, random cache lines per burst) that the 1M numbers run into.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lb::conntrack::{Conn, ConnTable, Dir};
use lb::{
    BackendConfig, Balancer, BalancerConfig, LbStage, Protocol, SchedulerKind, ServiceConfig,
    ServiceKey,
};
use vswitch::wire::ethernet::ETHERTYPE_IPV4;
use vswitch::wire::{ipv4, tcp};
use vswitch::{Batch, Env, FdbConfig, Mac, NetId, Stage, Time};

const BURST: usize = 32;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);

fn csum(d: &[u8]) -> u16 {
    vswitch::wire::checksum::checksum(d)
}

/// An Ethernet + IPv4 + TCP frame with valid checksums.
fn frame(src: u32, sport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + 6];
    f[12] = 0x08;
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = ipv4::PROTO_TCP;
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
    pseudo.extend_from_slice(&[0, ipv4::PROTO_TCP, 0, 26]);
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
    let key = ServiceKey {
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
            mac: Mac([2, 0x42, 10, 0, 9, 12 + i]),
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
        lb.process(&mut frame(a, p, tcp::FLAG_SYN), 14, NetId(0), now);
        let mut ack = frame(a, p, tcp::FLAG_ACK);
        lb.process(&mut ack.clone(), 14, NetId(0), now);
        ack.truncate(60);
        pristine.push(frame(a, p, tcp::FLAG_ACK));
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

/// Established flows through the `lb-nat` stage itself (its three passes over each burst of
/// 32), with 4096 connections, and with 1M connections of which 64K, spread over the whole
/// table, are sending: there every packet's bucket and entry come from DRAM.
fn stage_established(c: &mut Criterion) {
    let mut g = c.benchmark_group("lb");
    g.throughput(Throughput::Elements(BURST as u64));
    let cases = [(4096u32, 4096u32, false), (1_000_000, 65536, false)];
    // The same with the table's entries in a file-backed mapping (lb::persist), as a node has
    // them: on tmpfs (/dev/shm here, /run/vxmesh in a node).
    let mapped = [(4096u32, 4096u32, true), (1_000_000, 65536, true)];
    let file =
        std::path::Path::new("/dev/shm").join(format!("lb-bench-{}.conntrack", std::process::id()));
    for (conns, active, in_file) in cases.into_iter().chain(mapped) {
        let (mut lb, _) = balancer(1 << 20);
        let now = Time::from_secs(1);
        if in_file {
            lb.persist_conntrack(&file, "bench", now)
                .expect("mapping the table");
            assert!(lb.conntrack_persisted());
        }
        for i in 0..conns {
            let (a, p) = client(i);
            lb.process(&mut frame(a, p, tcp::FLAG_SYN), 14, NetId(0), now);
            lb.process(&mut frame(a, p, tcp::FLAG_ACK), 14, NetId(0), now);
        }
        assert_eq!(lb.conn_table().len(), conns as usize, "every SYN was taken");
        let pristine: Vec<Vec<u8>> = shuffled(conns as usize, false)
            .iter()
            .take(active as usize)
            .map(|&i| {
                let (a, p) = client(i as u32);
                frame(a, p, tcp::FLAG_ACK)
            })
            .collect();
        let mut stage = LbStage::new(lb);
        let mut env = Env::new(FdbConfig::default());
        env.now = now;
        let mut batch = Batch::new(BURST);
        let mut next = 0usize;
        let mut name = if conns == 4096 {
            "stage_established_burst32".to_string()
        } else {
            format!("stage_established_burst32_{}k_active_of_1M", active / 1024)
        };
        if in_file {
            name.push_str("_mapped");
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                batch.clear();
                for _ in 0..BURST {
                    let p = batch.push_frame(&pristine[next]).unwrap();
                    p.meta.l3_offset = 14;
                    p.meta.ethertype = ETHERTYPE_IPV4;
                    next = (next + 1) % pristine.len();
                }
                stage.process(&mut batch, &mut env);
                black_box(batch.pkts()[0].meta.next)
            })
        });
    }
    let _ = std::fs::remove_file(&file);
    g.finish();
}

fn new_conns(c: &mut Criterion) {
    const N: u32 = 32 * 1024;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let (a, p) = client(i);
            frame(a, p, tcp::FLAG_SYN)
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

/// A shuffled order of `0..n` (xorshift, fixed seed: the same order every run).
fn shuffled(n: usize, cycle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Sattolo's variant (j < i) makes one cycle through all elements, for pointer chasing.
        let bound = if cycle { i } else { i + 1 } as u64;
        order.swap(i, (x % bound) as usize);
    }
    order
}

/// Conntrack lookups as the `lb-nat` stage does them, per burst of 32 keys: hash every key and
/// prefetch its bucket, then probe all the buckets ([`ConnTable::lookup_burst`]): `lookup`.
/// `lookup_entry` then also prefetches each hit's entry and reads it, as the stage does before
/// translating: the table's whole part of a packet. Reported per key; every size runs the same
/// code.
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
                proto: ipv4::PROTO_TCP,
                ..Conn::default()
            };
            t.insert(conn).unwrap();
            keys.push(conn.key(if i % 2 == 0 { Dir::Orig } else { Dir::Reply }));
        }
        eprintln!(
            "conntrack bytes per connection at {n}: {:.1}",
            t.memory_bytes() as f64 / f64::from(n)
        );
        // Random order defeats the cache as real traffic does. The keys themselves are laid out
        // in that order, so reading the next burst's keys is sequential (as reading them from
        // the burst's packet headers is): the bench measures the table's random accesses.
        let keys: Vec<_> = shuffled(keys.len(), false)
            .iter()
            .map(|&i| keys[i])
            .collect();
        // A warm working set: 4096 active connections spread over the table (most of a large
        // table is idle connections waiting to expire).
        let hot: Vec<_> = keys.iter().take(4096.min(keys.len())).copied().collect();
        for (what, keys) in [("uniform", &keys), ("hot4k", &hot)] {
            g.throughput(Throughput::Elements(BURST as u64));
            for entry in [false, true] {
                let name = if entry { "lookup_entry" } else { "lookup" };
                let mut pos = 0usize;
                g.bench_function(format!("{n}_{what}_burst32_{name}"), |b| {
                    b.iter(|| {
                        let ks = &keys[pos..pos + BURST];
                        let mut hs = [0u32; BURST];
                        for (h, k) in hs.iter_mut().zip(ks) {
                            *h = t.hash(k);
                            t.prefetch(*h);
                        }
                        let mut found = [None; BURST];
                        t.lookup_burst(ks, &hs, &mut found);
                        if entry {
                            for &(idx, _) in found.iter().flatten() {
                                t.prefetch_conn(idx);
                            }
                            for &(idx, dir) in found.iter().flatten() {
                                black_box(t.get(idx).key(dir));
                            }
                        } else {
                            black_box(&found);
                        }
                        pos = (pos + BURST) % (keys.len() - BURST);
                    })
                });
            }
        }
    }
    g.finish();
}

/// What the memory allows, for reading the 1M numbers: a 64 MiB table (the size of the bucket
/// array at 1M connections) read at random, one cache line per access. `pointer_chase`: each
/// load's address comes from the previous one (the DRAM latency). `burst32`: 32 independent
/// random lines, all prefetched first and then read, as a lookup burst does; no table can do a
/// one-line-per-key burst faster.
fn memory_floor(c: &mut Criterion) {
    const LINES: usize = (64 << 20) / 64;
    let mut g = c.benchmark_group("memory_floor");
    g.throughput(Throughput::Elements(BURST as u64));
    let next = shuffled(LINES, true);
    let mut mem = vswitch::table::alloc_table(LINES, [0u64; 8]);
    for (i, line) in mem.iter_mut().enumerate() {
        line[0] = next[i] as u64;
    }
    let mut p = 0usize;
    g.bench_function("64MiB_pointer_chase", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                p = mem[p][0] as usize;
            }
            black_box(p)
        })
    });
    let order = shuffled(LINES, false);
    let mut pos = 0usize;
    g.bench_function("64MiB_random_lines_burst32", |b| {
        b.iter(|| {
            let ls = &order[pos..pos + BURST];
            for &l in ls {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: prefetch never faults; `l < LINES` anyway.
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T0>(mem.as_ptr().add(l).cast());
                }
            }
            let mut s = 0u64;
            for &l in ls {
                s = s.wrapping_add(mem[l][1]);
            }
            pos = (pos + BURST) % (LINES - BURST);
            black_box(s)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    established,
    stage_established,
    new_conns,
    lookups,
    memory_floor
);
criterion_main!(benches);
