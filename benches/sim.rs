//! The simulator's speed (issue 19): packets per second through a simulated two-node cluster
//! on one thread, against the live pipeline's own cost for the same path, in one run.
//!
//! - `sim/two_nodes/engine`: `Sim::input` of a UDP frame from c11 (node n1) to c21 (node n2)
//!   of the demo cluster, one at a time as a pcap's timestamps bring them: n1's pipeline, the
//!   virtual wire (the datagram as on the wire), n2's pipeline, the frame out of c21's port;
//!   outputs counted, not written.
//! - `sim/two_nodes/pcap_output`: the same, every port's frames written as pcap records (into
//!   memory: the cost of the format, not of a disk).
//! - `sim/live_n1_c11_to_c21/B` and `sim/live_n2_vxlan_to_c21/B`: the two halves of that path
//!   in the nodes `vxmesh run` builds, ports replaying in memory, at bursts of B = 1 and 32
//!   (`Switch::poll` as the poll thread calls it), each node alone.
//! - `sim/live_both_on_one_thread/1`: both halves, one packet through each per iteration, on
//!   one thread as the simulator runs them (the two nodes share a core's caches).
//!
//! At the end it prints the simulator's cost per packet over the live path's (n1 + n2) at
//! burst 1 (the simulator runs each input to the end before the next, so its batches hold one
//! packet) and at 32. `cargo bench --bench sim`; `scripts/bench.sh` runs it with the rest.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vswitch::Time;
use vxmesh::node::Node;
use vxmesh::sim::{CountSink, Sim, Sink};

#[path = "common/sim.rs"]
mod common;
use common::{Ports, as_vxlan, c11_to_c21, cluster};

const BURSTS: [usize; 2] = [1, 32];

/// Writes every frame as a pcap record into memory (emptied now and then).
struct MemPcap(vxmesh::pcap::PcapWriter<Vec<u8>>, u64);

impl Sink for MemPcap {
    fn frame(&mut self, _: usize, _: usize, now: Time, frame: &[u8]) {
        let _ = self.0.frame(now.0, frame);
        self.1 += 1;
        if self.1.is_multiple_of(4096) {
            self.0 = vxmesh::pcap::PcapWriter::new(Vec::with_capacity(1 << 20)).expect("memory");
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    let inner = c11_to_c21();
    g.throughput(Throughput::Elements(1));
    for (id, pcap) in [("engine", false), ("pcap_output", true)] {
        let mut sim = Sim::new(&cluster(), 0).expect("the simulated cluster");
        let (n1, c11) = sim.port("n1", "c11").expect("c11");
        let mut t = Time::from_secs(1_700_000_000);
        let (mut count, mut mem) = (
            CountSink::default(),
            MemPcap(vxmesh::pcap::PcapWriter::new(Vec::new()).unwrap(), 0),
        );
        let mut k = 0;
        g.bench_function(BenchmarkId::new("two_nodes", id), |b| {
            b.iter(|| {
                t = Time(t.0 + 1_000);
                k = (k + 1) % inner.len();
                let sink: &mut dyn Sink = if pcap { &mut mem } else { &mut count };
                sim.input(n1, c11, t, black_box(&inner[k]), sink)
                    .expect("an input");
            })
        });
        // (Nothing ran when a filter left this benchmark out.)
        if sim.stats[0].frames_in > 0 {
            let st = sim.nodes[1].node.sw.stats();
            let out = st.port("c21").map_or(0, |p| p.tx_packets);
            assert!(out > 0, "frames reached c21");
            assert_eq!(sim.stats[0].underlay_no_node, 0);
        }
    }
    // Both halves on this one thread, one packet through each per iteration: the live
    // pipeline's cost for the path when one core runs both nodes, as the simulator does (each
    // node's tables and code then share its caches with the other's).
    {
        let build = |node: &str, port: &'static str, frames: Vec<Vec<u8>>| {
            let mut p = Ports {
                name: port,
                frames: Some((frames, 1)),
            };
            Node::build(cluster(), node, &mut p).expect("a node")
        };
        let mut n1 = build("n1", "c11", inner.clone());
        let mut n2 = build("n2", vxmesh::node::UNDERLAY_PORT, as_vxlan(&inner));
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("live_both_on_one_thread", 1),
            &1,
            |b, _| {
                b.iter(|| {
                    black_box(n1.sw.poll(Time::from_secs(2)));
                    black_box(n2.sw.poll(Time::from_secs(2)))
                })
            },
        );
    }
    for burst in BURSTS {
        g.throughput(Throughput::Elements(burst as u64));
        let mut n = Node::build(
            cluster(),
            "n1",
            &mut Ports {
                name: "c11",
                frames: Some((inner.clone(), burst)),
            },
        )
        .expect("n1");
        g.bench_with_input(
            BenchmarkId::new("live_n1_c11_to_c21", burst),
            &burst,
            |b, _| b.iter(|| black_box(n.sw.poll(Time::from_secs(2)))),
        );
        let st = n.sw.stats();
        assert_eq!(st.stage("vxlan-encap").map(|s| s.dropped()), Some(0));
        let ran = |st: &vswitch::SwitchStats| st.ports.iter().any(|p| p.stats.rx_packets > 0);
        let mut n = Node::build(
            cluster(),
            "n2",
            &mut Ports {
                name: vxmesh::node::UNDERLAY_PORT,
                frames: Some((as_vxlan(&inner), burst)),
            },
        )
        .expect("n2");
        g.bench_with_input(
            BenchmarkId::new("live_n2_vxlan_to_c21", burst),
            &burst,
            |b, _| b.iter(|| black_box(n.sw.poll(Time::from_secs(2)))),
        );
        let st = n.sw.stats();
        if ran(&st) {
            assert!(st.port("c21").is_some_and(|p| p.tx_packets > 0));
            assert_eq!(st.stage("vxlan-decap").map(|s| s.dropped()), Some(0));
        }
    }
    g.finish();
}

/// Nanoseconds per packet of a benchmark, from criterion's estimates of this run.
fn ns_per_packet(id: &str, per_iter: f64) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = Path::new(&dir)
        .join("criterion/sim")
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v["mean"]["point_estimate"].as_f64()? / per_iter)
}

/// The simulator's cost per packet over the live path's.
fn report(_: &mut Criterion) {
    let engine = ns_per_packet("two_nodes/engine", 1.0);
    let pcap = ns_per_packet("two_nodes/pcap_output", 1.0);
    if let (Some(e), Some(p), Some(one)) = (
        engine,
        pcap,
        ns_per_packet("live_both_on_one_thread/1", 1.0),
    ) {
        println!(
            "sim: live pipeline with both nodes on one thread: {one:.0} ns/packet; simulator / live = {:.2} ({:.2} with output)",
            e / one,
            p / one
        );
    }
    for burst in BURSTS {
        let b = burst as f64;
        let n1 = ns_per_packet(&format!("live_n1_c11_to_c21/{burst}"), b);
        let n2 = ns_per_packet(&format!("live_n2_vxlan_to_c21/{burst}"), b);
        let (Some(engine), Some(pcap), Some(n1), Some(n2)) = (engine, pcap, n1, n2) else {
            println!("sim: no estimates to compare (run every benchmark of the group)");
            return;
        };
        let live = n1 + n2;
        println!(
            "sim: {engine:.0} ns/packet through two nodes ({:.2} Mpps), {pcap:.0} with pcap output; \
             live pipeline at burst {burst}: {n1:.0} + {n2:.0} = {live:.0} ns; simulator / live = {:.2} ({:.2} with output)",
            1e3 / engine,
            engine / live,
            pcap / live
        );
    }
}

criterion_group!(benches, bench, report);
criterion_main!(benches);
