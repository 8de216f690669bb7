//! New connections alone, outside criterion: `reps` fresh balancers each take the same 32K
//! checksum-valid SYNs (the `lb/new_conns_schedule_insert` bench's), timed loop by loop. Made for
//! counting instructions, which this VM's noisy timings cannot resolve to a few percent:
//!
//! ```text
//! cargo build --release -p lb --example new_conns
//! for r in 1 3; do valgrind --tool=cachegrind --cache-sim=no target/release/examples/new_conns $r; done
//! ```
//!
//! (the difference of the two `I refs` over 65,536 is the instructions per SYN, setup included).
use lb::{
    BackendConfig, Balancer, BalancerConfig, Protocol, SchedulerKind, ServiceConfig, ServiceKey,
};
use std::hint::black_box;
use std::net::Ipv4Addr;
use vswitch::wire::{ipv4, tcp};
use vswitch::{Mac, NetId, Time};
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);
fn csum(d: &[u8]) -> u16 {
    vswitch::wire::checksum::checksum(d)
}
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
fn balancer(max: usize) -> Balancer {
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
        lb.add_backend(
            &key,
            BackendConfig {
                addr: Ipv4Addr::new(10, 0, 9, 12 + i),
                port: 80,
                weight: 1,
                mac: Mac([2, 0x42, 10, 0, 9, 12 + i]),
            },
        )
        .unwrap();
    }
    lb
}
fn client(i: u32) -> (u32, u16) {
    (
        0x0a00_0000 | (i >> 10 & 0xffff) << 8 | 11,
        1024 + (i & 0x3ff) as u16,
    )
}
fn main() {
    const N: u32 = 32 * 1024;
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(30);
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let (a, p) = client(i);
            frame(a, p, tcp::FLAG_SYN)
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..reps {
        let mut lb = balancer(N as usize * 2);
        let mut fs = frames.clone();
        let t = std::time::Instant::now();
        for f in fs.iter_mut() {
            black_box(lb.process(f, 14, NetId(0), Time::from_secs(1)));
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
        black_box(&lb);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "min {:.3} ms  median {:.3} ms",
        times[0],
        times[times.len() / 2]
    );
}
