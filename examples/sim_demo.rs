//! A simulation of the demo cluster, no root: `vxmesh sim` on `examples/sim/cluster.toml` (the
//! demo's two nodes, four containers and the service `web`) with the frames container c11 sends
//! in `examples/sim/c11.pcap` (an ARP request, pings to the other node, UDP on the node, a DNS
//! query, three connections to the VIP, a spoofed source; made by a test from
//! `vxmesh::sim::workload`). It prints where each port's frames went and checks every output
//! file, byte for byte, against `examples/sim/expected/`: the simulator gives the same bytes
//! on every run and machine.
//!
//! ```text
//! cargo run --example sim_demo                # run and check
//! cargo run --example sim_demo -- --update    # after an intended change: rewrite expected/, review the diff
//! ```
//!
//! The same run from the command line:
//!
//! ```text
//! vxmesh sim --config examples/sim/cluster.toml --input examples/sim/c11.pcap@n1/c11 --out out --pcapng
//! ```

use std::path::{Path, PathBuf};

use vxmesh::sim::cli::{SimOptions, run_with};
use vxmesh::sim::debug::Console;
use vxmesh::sim::io::{InputSpec, read_capture};

fn main() {
    let update = std::env::args().any(|a| a == "--update");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sim");
    let out = std::env::temp_dir().join(format!("vxmesh-sim-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = SimOptions {
        config: here.join("cluster.toml"),
        inputs: vec![InputSpec {
            file: here.join("c11.pcap"),
            node: "n1".into(),
            port: "c11".into(),
        }],
        out: out.clone(),
        seed: 0,
        break_on: None,
        pcapng: true,
        max_conns: vxmesh::node::MAX_CONNS,
    };
    let quiet = Console {
        input: Box::new(std::io::empty()),
        out: Box::new(std::io::sink()),
        interactive: false,
    };
    let summary = run_with(&opts, quiet).expect("the simulation runs");
    println!(
        "{} frames from c11 in, {} frames out of the ports, {} stage records in stages.pcapng",
        summary.frames,
        summary.sent,
        summary.stage_packets.unwrap_or(0)
    );
    let files = listing(&out);
    for (name, path) in &files {
        if name.ends_with(".pcap") {
            let n = read_capture(path).expect("a pcap").len();
            if n > 0 {
                println!("  {name:<28} {n} frames");
            }
        }
    }
    let expected = here.join("expected");
    if update {
        let _ = std::fs::remove_dir_all(&expected);
        std::fs::create_dir_all(&expected).expect("creating expected/");
        for (name, path) in &files {
            std::fs::copy(path, expected.join(name)).expect("copying an output");
        }
        println!("wrote {} files to {}", files.len(), expected.display());
    } else {
        let want = listing(&expected);
        let names = |v: &[(String, PathBuf)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&files), names(&want), "the same output files");
        for ((name, got), (_, exp)) in files.iter().zip(&want) {
            let (g, e) = (std::fs::read(got).unwrap(), std::fs::read(exp).unwrap());
            assert!(
                g == e,
                "{name} differs from examples/sim/expected/{name} (an intended change: `cargo run --example sim_demo -- --update`)"
            );
        }
        println!(
            "all {} output files are byte for byte as expected",
            files.len()
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The files of `dir`, sorted by name.
fn listing(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("a directory entry");
            (e.file_name().to_string_lossy().into_owned(), e.path())
        })
        .collect();
    v.sort();
    v
}
