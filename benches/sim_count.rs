//! The simulator and the live pipeline outside criterion, for counting instructions, which this
//! VM's noisy timings cannot resolve to a few percent (benches/sim.rs has the timings):
//!
//! ```text
//! cargo bench --bench sim_count --no-run        # then, with the binary it names:
//! for n in 100000 200000; do valgrind --tool=cachegrind --cache-sim=no BIN sim $n; done
//! for n in 100000 200000; do valgrind --tool=cachegrind --cache-sim=no BIN live $n; done
//! ```
//!
//! The difference of two runs' `I refs` over the difference of their counts is the instructions
//! per packet, setup excluded: `sim` sends a 64-byte UDP frame from c11 on n1 to c21 on n2 of the
//! demo cluster through `Sim::input` (outputs counted), `live` polls n1 (c11 replaying the
//! frames) and n2 (its underlay replaying them as n1 sends them) once each, burst 1. Without
//! arguments (as `cargo bench` runs it) it does a short run of each.

use std::hint::black_box;

use vswitch::Time;
use vxmesh::node::Node;
use vxmesh::sim::{CountSink, Sim};

#[path = "common/sim.rs"]
mod common;
use common::{Ports, as_vxlan, c11_to_c21, cluster};

fn sim(n: u64) {
    let f = c11_to_c21();
    let mut sim = Sim::new(&cluster(), 0).expect("the simulated cluster");
    let (n1, c11) = sim.port("n1", "c11").expect("c11");
    let mut sink = CountSink::default();
    for i in 0..n {
        let t = Time(1_700_000_000_000_000_000 + i * 1_000);
        sim.input(n1, c11, t, black_box(&f[i as usize % f.len()]), &mut sink)
            .expect("an input");
    }
    assert_eq!(
        sink.0,
        2 * n,
        "every frame crossed the underlay and reached c21"
    );
}

fn live(n: u64) {
    let f = c11_to_c21();
    let vx = as_vxlan(&f);
    let ports = |name, frames| Ports {
        name,
        frames: Some((frames, 1)),
    };
    let mut n1 = Node::build(cluster(), "n1", &mut ports("c11", f)).expect("n1");
    let mut n2 = Node::build(cluster(), "n2", &mut ports("underlay", vx)).expect("n2");
    for _ in 0..n {
        black_box(n1.sw.poll(Time::from_secs(2)));
        black_box(n2.sw.poll(Time::from_secs(2)));
    }
    let st = n2.sw.stats();
    assert_eq!(st.port("c21").map(|p| p.tx_packets), Some(n));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    match args.first().map(String::as_str) {
        Some("sim") => sim(n),
        Some("live") => live(n),
        _ => {
            sim(1_000);
            live(1_000);
        }
    }
}
