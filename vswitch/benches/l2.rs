//! L2 benches: FDB lookups (hit and miss, 1K to 1M entries, one at a time and a batch of 32
//! with prefetch as the stages do it) and the L2 pipeline's packets per second at burst 1, 8
//! and 32 with 64-byte frames, known unicast and flood. Run: `cargo bench -p vswitch --bench l2`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vswitch::fdb::FdbKey;
use vswitch::frames;
use vswitch::{
    Env, Fdb, FdbConfig, Mac, NetId, Network, PortGuard, PortId, PortRole, SinkPort, Switch, Time,
};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const LOOKUP_BATCH: usize = 32;
/// A 64-byte frame on the wire is 60 bytes without the FCS: 42 bytes of headers + 18 of payload.
const PAYLOAD_64B: usize = 18;

/// Deterministic pseudo-random MACs (xorshift), unicast.
fn macs(n: usize, seed: u64) -> Vec<Mac> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_be_bytes();
            Mac([b[2] & 0xfe | 0x02, b[3], b[4], b[5], b[6], b[7]])
        })
        .collect()
}

/// Fisher-Yates with a fixed xorshift sequence: the same order on every run.
fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn fdb_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb");
    let now = Time::from_secs(1);
    for &n in &SIZES {
        let mut fdb = Fdb::new(FdbConfig {
            max_learned: n,
            max_static: 0,
            aging_secs: 300,
        });
        let present = macs(n, 0x9e37_79b9_7f4a_7c15);
        for (i, m) in present.iter().enumerate() {
            fdb.learn(NetId(0), *m, PortId((i % 8) as u16), now);
        }
        eprintln!(
            "fdb: {n} entries, {} bytes of table, {:.1} bytes per entry",
            fdb.memory_bytes(),
            fdb.memory_bytes() as f64 / n as f64
        );
        // Three access patterns: every key of the table in shuffled order (each lookup lands on
        // a random slot: memory-bound once the table outgrows the caches); a warm working set of
        // 4096 active MACs spread over the table (what a switch with many idle entries sees);
        // and absent keys, uniform.
        let mut uniform: Vec<FdbKey> = present.iter().map(|m| FdbKey::new(NetId(0), *m)).collect();
        shuffle(&mut uniform);
        let hot: Vec<FdbKey> = uniform.iter().take(4096).copied().collect();
        let miss: Vec<FdbKey> = macs(n.max(4096), 0x1234_5678_9abc_def1)
            .iter()
            .map(|m| FdbKey::new(NetId(0), *m))
            .collect();
        g.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
        for (what, keys) in [
            ("hit_uniform", &uniform),
            ("hit_hot4k", &hot),
            ("miss_uniform", &miss),
        ] {
            let mut at = 0;
            g.bench_with_input(BenchmarkId::new(format!("lookup_{what}"), n), &n, |b, _| {
                b.iter(|| {
                    let ks = &keys[at..at + LOOKUP_BATCH];
                    at = (at + LOOKUP_BATCH) % (keys.len() - LOOKUP_BATCH);
                    let mut found = 0usize;
                    for k in ks {
                        found += fdb.lookup_hashed(*k, fdb.hash(*k), now).is_some() as usize;
                    }
                    black_box(found)
                })
            });
            let mut at = 0;
            let mut hashes = [0u64; LOOKUP_BATCH];
            g.bench_with_input(
                BenchmarkId::new(format!("lookup_{what}_prefetch"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        let ks = &keys[at..at + LOOKUP_BATCH];
                        at = (at + LOOKUP_BATCH) % (keys.len() - LOOKUP_BATCH);
                        for (h, k) in hashes.iter_mut().zip(ks) {
                            *h = fdb.hash(*k);
                            fdb.prefetch(*h);
                        }
                        let mut found = 0usize;
                        for (h, k) in hashes.iter().zip(ks) {
                            found += fdb.lookup_hashed(*k, *h, now).is_some() as usize;
                        }
                        black_box(found)
                    })
                },
            );
        }
    }
    g.finish();
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

/// A switch with one generator port and two sinks in one network; `dst` decides known unicast
/// (a MAC learned on the first sink) or flood (broadcast).
fn l2_switch(burst: usize, flood: bool) -> Switch {
    let mut env = Env::new(FdbConfig::default());
    let net = env.add_network(Network::new("appnet", 4097, 1450));
    let (mut sw, l2) = Switch::with_l2(env);
    let a = Mac::docker_default(ip(11));
    let b = Mac::docker_default(ip(12));
    let dst = if flood { Mac::BROADCAST } else { b };
    // 64 flows: distinct UDP source ports, as a real mix would have
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            frames::udp(
                a,
                dst,
                ip(11),
                ip(12),
                10_000 + i,
                5001,
                &[0u8; PAYLOAD_64B],
            )
        })
        .collect();
    assert_eq!(frames[0].len(), 60);
    let path = l2.local_path(&[]);
    let gen_port = sw.add_port(
        "gen",
        Box::new(vswitch::GenPort::new(frames, burst)),
        PortRole::Local(net),
        path.clone(),
    );
    // A container's port, as the node sets it up: port security checks every frame.
    sw.set_port_guard(gen_port, PortGuard::Endpoint { mac: a, ip: ip(11) });
    let sink1 = sw.add_port(
        "sink1",
        Box::new(SinkPort::default()),
        PortRole::Local(net),
        path.clone(),
    );
    sw.add_port(
        "sink2",
        Box::new(SinkPort::default()),
        PortRole::Local(net),
        path,
    );
    sw.env.fdb.learn(net, b, sink1, Time::from_secs(1));
    sw
}

fn l2_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2_pipeline");
    for (what, flood) in [("known_unicast", false), ("flood", true)] {
        for burst in [1usize, 8, 32] {
            let mut sw = l2_switch(burst, flood);
            g.throughput(Throughput::Elements(burst as u64));
            g.bench_with_input(BenchmarkId::new(what, burst), &burst, |b, _| {
                b.iter(|| black_box(sw.poll(Time::from_secs(1))))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, fdb_lookup, l2_pipeline);
criterion_main!(benches);
