//! The forwarding pause: how long the poll thread stops forwarding for a control command. The
//! control plane's work runs as jobs between two batches, so the longest job is the longest
//! pause a ping sees (issue 13 asks for under 1 ms).
//!
//! - `pause/conntrack_show/*`: `vxmesh conntrack show` of a table of 100,000 connections, as the
//!   daemon runs it: one slice of `CONNS_SLICE_SLOTS` slots per job (the pause), against reading
//!   and rendering the whole table in one job (what it did before).
//! - `pause/reload/*`: the part of a change that runs on the poll thread (the file is read and
//!   planned, the tables built and new ports opened, off it), committed in steps of at most
//!   `STEP_ENTRIES` entries as the daemon does: `longest_step/*` is the pause (the longest
//!   step), `all_steps/*` the whole commit, for a change that attaches or detaches one local
//!   endpoint (a port added or removed), changes nothing, or adds or removes N remote
//!   endpoints.
//!
//! `cargo bench --bench pause`; figures in docs/performance.md.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lb::ServiceKey;
use lb::listing::CONNS_SLICE_SLOTS;
use lb::types::Verdict;
use lb::{BackendConfig, Balancer, BalancerConfig, Protocol, SchedulerKind, ServiceConfig};
use vswitch::wire::ethernet;
use vswitch::{Mac, NetId, Time};
use vxmesh::config::Cluster;
use vxmesh::node::{Change, MemPorts, Node, STEP_ENTRIES};

const CONNS: u32 = 100_000;
const NET: NetId = NetId(0);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);

/// A balancer with one service and `CONNS` connections from distinct clients.
fn full_balancer() -> Balancer {
    let key = ServiceKey {
        net: NET,
        proto: Protocol::Tcp,
        addr: VIP,
        port: 80,
    };
    let mut lb = Balancer::new(BalancerConfig {
        max_conns: 1 << 18,
        ..BalancerConfig::default()
    });
    let cfg = ServiceConfig {
        key,
        scheduler: SchedulerKind::Rr,
        backend_net: NET,
        snat: None,
    };
    lb.add_service(cfg).unwrap();
    for i in 0..3u8 {
        let addr = Ipv4Addr::new(10, 0, 9, 20 + i);
        let b = BackendConfig {
            addr,
            port: 80,
            weight: 1,
            mac: Mac::docker_default(addr),
        };
        lb.add_backend(&key, b).unwrap();
    }
    let now = Time::from_secs(1);
    for c in 0..CONNS {
        let client = Ipv4Addr::from(0x0a01_0000 + c);
        let (cmac, vmac) = (Mac::docker_default(client), Mac::docker_default(VIP));
        let syn = vswitch::frames::TcpFlags::SYN;
        let mut f = vswitch::frames::tcp(cmac, vmac, client, VIP, 40000, 80, syn, 1, 0, b"");
        let v = lb.process(&mut f, ethernet::HEADER_LEN, NET, now);
        assert!(matches!(v, Verdict::ToBackend { .. }), "{v:?}");
    }
    assert_eq!(lb.conns(now).len(), CONNS as usize);
    lb
}

fn conntrack_show(c: &mut Criterion) {
    let lb = full_balancer();
    let now = Time::from_secs(2);
    let mut g = c.benchmark_group("pause/conntrack_show");
    g.bench_function("one_slice_job", |b| {
        b.iter(|| black_box(lb.conns_slice(now, 0, CONNS_SLICE_SLOTS)))
    });
    g.sample_size(10);
    g.bench_function("whole_table_in_one_job", |b| {
        b.iter(|| black_box(lb::listing::format_conns(&lb.conns(now))))
    });
    g.finish();
}

/// The fixture with `n` more endpoints on n2, in a network wide enough for them.
fn with_remote_endpoints(n: u32) -> String {
    let base = include_str!("../tests/fixtures/cluster.toml").replace("{P}", "");
    let mut text = base.replace("subnet = \"10.0.9.0/24\"", "subnet = \"10.0.0.0/14\"");
    for i in 0..n {
        let ip = Ipv4Addr::from(0x0a01_0000 + i);
        text.push_str(&format!(
            "\n[[endpoint]]\nname = \"r{i}\"\nnode = \"n2\"\nnetwork = \"appnet\"\nip = \"{ip}\"\n"
        ));
    }
    text
}

/// Commit `change` a step at a time, as the daemon does; the longest step.
fn longest_step(node: &mut Node, change: Change) -> Duration {
    let mut c = node.begin(change);
    let mut longest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let done = node.step(&mut c, STEP_ENTRIES);
        longest = longest.max(t.elapsed());
        if done {
            break;
        }
    }
    let (r, left) = c.finish();
    r.unwrap();
    drop(left);
    longest
}

fn reload(c: &mut Criterion) {
    let cluster = |t: &str| Cluster::parse(Path::new("bench.toml"), t).unwrap();
    let base = cluster(&with_remote_endpoints(0));
    let mut g = c.benchmark_group("pause/reload");
    g.sample_size(10);
    // Only the commit runs between batches: the change is prepared (planned, tables built,
    // ports opened) off the poll thread, and what the commit takes out is dropped there too.
    let prepared = |from: &Cluster, to: &Cluster| {
        let node = Node::build(from.clone(), "n1", &mut MemPorts).unwrap();
        let change = Change::prepare(
            to.clone(),
            node.plan.clone(),
            &mut MemPorts,
            node.sw.buf_size(),
        )
        .unwrap();
        (node, change)
    };
    let attach = cluster(&format!(
        "{}\n[[endpoint]]\nname = \"c13\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.13\"\nattach = \"afxdp:vc13\"\n",
        with_remote_endpoints(0)
    ));
    let mut cases = vec![
        (
            "attach_one_endpoint".to_string(),
            base.clone(),
            attach.clone(),
        ),
        ("detach_one_endpoint".to_string(), attach, base.clone()),
        ("no_change".to_string(), base.clone(), base.clone()),
    ];
    for n in [1_000u32, 50_000] {
        let big = cluster(&with_remote_endpoints(n));
        cases.push((format!("{n}_new_endpoints"), base.clone(), big.clone()));
        cases.push((format!("{n}_endpoints_removed"), big, base.clone()));
    }
    for (name, from, to) in &cases {
        // The pause: the longest single step (what one job between two batches costs).
        g.bench_function(format!("longest_step/{name}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (mut node, ch) = prepared(from, to);
                        longest_step(&mut node, ch)
                    })
                    .sum()
            })
        });
        // Every step together: the work the poll thread does for the change in all.
        g.bench_function(format!("all_steps/{name}"), |b| {
            b.iter_batched(
                || prepared(from, to),
                |(mut node, ch)| {
                    let (r, left) = node.commit(ch);
                    (node, black_box(r.unwrap()), left)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, conntrack_show, reload);
criterion_main!(benches);
