//! What one node pays per store change (issue 14's convergence at scale), at 10, 100 and 1,000
//! nodes with 50 endpoints each, all in one network (the worst case: every node plans every
//! endpoint): the incremental path (`View::apply` checks the endpoint against the indexes,
//! `Plan::apply_delta` moves the plan) against the whole path (the state checked as a cluster
//! file, then `Plan::next`), which is what every change cost before and what a change of
//! another kind (a network, a service, a node going down) still costs.
//!
//! `cargo bench --bench store`; figures in docs/store.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use vxmesh::node::Plan;
use vxmesh::store::state::State;

/// A state of `nodes` nodes with `per_node` endpoints each, in one network, and a service.
fn state(nodes: usize, per_node: usize) -> State {
    let mut s = State::default();
    let put = |s: &mut State, key: String, v: serde_json::Value| {
        s.put(&key, v.to_string().as_bytes(), 1);
    };
    put(
        &mut s,
        "/vxmesh/v1/network/appnet".into(),
        serde_json::json!({"name": "appnet", "vni": 4097, "subnet": "10.0.0.0/8"}),
    );
    for n in 0..nodes {
        let name = format!("n{n}");
        put(
            &mut s,
            format!("/vxmesh/v1/node/{name}"),
            serde_json::json!({"name": name, "vtep": format!("198.18.{}.{}", n / 250, n % 250 + 1),
                               "lb": {"appnet": format!("10.255.{}.{}", n / 250, n % 250 + 1)}}),
        );
        for e in 0..per_node {
            let k = n * per_node + e;
            let ep = format!("e{k}");
            let ip = format!("10.{}.{}.{}", 1 + k / 62500, (k / 250) % 250, k % 250 + 1);
            put(
                &mut s,
                format!("/vxmesh/v1/endpoint/{ep}"),
                serde_json::json!({"name": ep, "node": name, "network": "appnet", "ip": ip,
                                   "attach": format!("afxdp:v{e}")}),
            );
        }
    }
    put(
        &mut s,
        "/vxmesh/v1/service/web".into(),
        serde_json::json!({"name": "web", "network": "appnet", "vip": "10.254.0.1",
                           "backends": ["e0", "e1", "e2"],
                           "ports": [{"protocol": "tcp", "port": 80}]}),
    );
    s
}

fn per_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("store/per_change");
    g.sample_size(10);
    for nodes in [10usize, 100, 1000] {
        let base = state(nodes, 50);
        let url = "etcd://bench:2379";
        let (cluster, skipped) = base.cluster(url, Some("n0")).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let plan = Plan::of(&cluster, "n0").unwrap();
        // One change: an endpoint added on another node.
        g.bench_function(format!("{nodes}_nodes_x50_endpoints"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    s.put(
                        "/vxmesh/v1/endpoint/probe",
                        br#"{"name":"probe","node":"n1","network":"appnet","ip":"10.250.0.1","attach":"afxdp:probe"}"#,
                        2,
                    );
                    let (cluster, _) = s.cluster(url, Some("n0")).unwrap();
                    black_box(Plan::next(&cluster, "n0", Some(&plan)).unwrap())
                },
                BatchSize::LargeInput,
            )
        });
        // The incremental path: the same change through the view and the plan's delta.
        let view = vxmesh::store::view::View::full(&base, url, Some("n0")).unwrap();
        g.bench_function(format!("{nodes}_nodes_x50_endpoints/incremental"), |b| {
            b.iter_batched(
                || (base.clone(), view.clone(), plan.clone()),
                |(mut s, mut v, mut p)| {
                    let key = "/vxmesh/v1/endpoint/probe";
                    s.put(
                        key,
                        br#"{"name":"probe","node":"n1","network":"appnet","ip":"10.250.0.1","attach":"afxdp:probe"}"#,
                        2,
                    );
                    let touched = [vxmesh::store::layout::Key::parse(key).unwrap()];
                    let delta = v.apply(&s, &touched).expect("incremental");
                    let diff = p.apply_delta(&v, &delta).expect("incremental");
                    // Returned, so that freeing the copies is not timed.
                    (s, v, p, diff)
                },
                BatchSize::LargeInput,
            )
        });
        // Where the time goes: the checks (state -> cluster) and the plan, apart.
        g.bench_function(format!("{nodes}_nodes_x50_endpoints/checks_only"), |b| {
            b.iter(|| black_box(base.cluster(url, Some("n0")).unwrap()))
        });
        g.bench_function(format!("{nodes}_nodes_x50_endpoints/plan_only"), |b| {
            b.iter(|| black_box(Plan::next(&cluster, "n0", Some(&plan)).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, per_change);
criterion_main!(benches);
